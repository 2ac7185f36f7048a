//! One LSTM cell step for every row of a batch: the gate non-linearities
//! and the state update, forward and backward. The forward has a hand-written
//! AVX2+FMA variant; the rest is compiled for the baseline and for AVX2+FMA
//! (`dispatch!` in `kernel/mod.rs`), the better picked at run time.

#[cfg(target_arch = "x86_64")]
use super::gemm::{elems, has_avx2_fma};
use super::math::{sigmoid, tanh};

/// Gate non-linearities and the state update of one step, for every row:
/// `g` holds the pre-activations `[batch, 4H]` and is overwritten by the activations.
#[inline(always)]
fn cell_forward_rows(
    g: &mut [f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    for (r, row) in g.chunks_exact_mut(4 * hidden).enumerate() {
        let (ifu, o) = row.split_at_mut(3 * hidden);
        let (if_, u) = ifu.split_at_mut(2 * hidden);
        for v in if_.iter_mut() {
            *v = sigmoid(*v);
        }
        for v in u.iter_mut() {
            *v = tanh(*v);
        }
        for v in o.iter_mut() {
            *v = sigmoid(*v);
        }
        let (i, f) = if_.split_at(hidden);
        let span = r * hidden..(r + 1) * hidden;
        let cp = &c_prev[span.clone()];
        let cr = &mut c[span.clone()];
        let tr = &mut tc[span.clone()];
        let hr = &mut h[span];
        for j in 0..hidden {
            let cj = f[j] * cp[j] + i[j] * u[j];
            let t = tanh(cj);
            cr[j] = cj;
            tr[j] = t;
            hr[j] = o[j] * t;
        }
    }
}

/// The cell step of [`cell_forward_rows`] in 8-lane AVX2+FMA, one pass over
/// each row: `e^x` as [`exp`], and the divisions of the sigmoid and tanh as a
/// hardware reciprocal estimate refined by one Newton step (relative error
/// about 3e-7; a division is several times slower on this class of CPU).
///
/// # Safety
/// AVX2 and FMA must be available and `hidden` a multiple of 8; the slices
/// must hold whole rows (`g` `[rows, 4H]`, the others `[rows, H]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cell_forward_avx2(
    g: &mut [f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    use std::arch::x86_64::*;
    assert!(hidden > 0, "hidden must be at least 1");
    let rows = g.len() / elems(4, hidden);
    let state = elems(rows, hidden);
    assert!(
        c_prev.len() >= state && c.len() >= state && tc.len() >= state && h.len() >= state,
        "cell state sizes"
    );
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        const ROUND: f32 = 12_582_912.0;
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let t = _mm256_add_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _mm256_set1_ps(ROUND),
        );
        let n = _mm256_sub_ps(t, _mm256_set1_ps(ROUND));
        let r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693_145_75)));
        let r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(1.428_606_8e-6)));
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for coef in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(coef));
        }
        let k = _mm256_slli_epi32(
            _mm256_sub_epi32(
                _mm256_castps_si256(t),
                _mm256_set1_epi32(ROUND.to_bits() as i32),
            ),
            23,
        );
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), k))
    }
    /// `1 / d` for `d >= 1`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn recip8(d: __m256) -> __m256 {
        let r = _mm256_rcp_ps(d);
        _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0)))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sigmoid8(x: __m256) -> __m256 {
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        recip8(_mm256_add_ps(_mm256_set1_ps(1.0), e))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn tanh8(x: __m256) -> __m256 {
        let e = exp8(_mm256_add_ps(x, x));
        let r = recip8(_mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_fnmadd_ps(_mm256_set1_ps(2.0), r, _mm256_set1_ps(1.0))
    }
    for r in 0..rows {
        // SAFETY: every offset is below (r + 1) * 4H in g and (r + 1) * H in
        // the state slices, whose sizes were checked above.
        unsafe {
            let gp = g.as_mut_ptr().add(r * 4 * hidden);
            let cpp = c_prev.as_ptr().add(r * hidden);
            let (cp, tp, hp) = (
                c.as_mut_ptr().add(r * hidden),
                tc.as_mut_ptr().add(r * hidden),
                h.as_mut_ptr().add(r * hidden),
            );
            for j in (0..hidden).step_by(8) {
                let i = sigmoid8(_mm256_loadu_ps(gp.add(j)));
                let f = sigmoid8(_mm256_loadu_ps(gp.add(hidden + j)));
                let u = tanh8(_mm256_loadu_ps(gp.add(2 * hidden + j)));
                let o = sigmoid8(_mm256_loadu_ps(gp.add(3 * hidden + j)));
                _mm256_storeu_ps(gp.add(j), i);
                _mm256_storeu_ps(gp.add(hidden + j), f);
                _mm256_storeu_ps(gp.add(2 * hidden + j), u);
                _mm256_storeu_ps(gp.add(3 * hidden + j), o);
                let cj = _mm256_fmadd_ps(f, _mm256_loadu_ps(cpp.add(j)), _mm256_mul_ps(i, u));
                let t = tanh8(cj);
                _mm256_storeu_ps(cp.add(j), cj);
                _mm256_storeu_ps(tp.add(j), t);
                _mm256_storeu_ps(hp.add(j), _mm256_mul_ps(o, t));
            }
        }
    }
}

/// One step of the cell for every row: `g` holds the pre-activations
/// `[rows, 4H]` (overwritten by the activations); writes the new cell state,
/// its tanh and the output `[rows, H]`.
pub fn cell_step(
    g: &mut [f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    // the AVX2 pass where it applies, else the portable loops
    #[cfg(target_arch = "x86_64")]
    if hidden > 0 && hidden.is_multiple_of(8) && has_avx2_fma() {
        // SAFETY: the features were detected and hidden is a multiple of 8;
        // the function checks the slice sizes.
        unsafe { cell_forward_avx2(g, c_prev, c, tc, h, hidden) };
        return;
    }
    dispatch!(cell_forward_rows(g, c_prev, c, tc, h, hidden));
}

/// Gradients of one step's pre-activations from `dh` and `dc` (which becomes
/// the gradient flowing to the previous cell state).
#[inline(always)]
pub(super) fn cell_backward_rows(
    acts: &[f32],
    c_prev: &[f32],
    tc: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    dg: &mut [f32],
    hidden: usize,
) {
    for (r, (a, d)) in acts
        .chunks_exact(4 * hidden)
        .zip(dg.chunks_exact_mut(4 * hidden))
        .enumerate()
    {
        let span = r * hidden..(r + 1) * hidden;
        let (cp, t, dhr) = (&c_prev[span.clone()], &tc[span.clone()], &dh[span.clone()]);
        let dcr = &mut dc[span];
        let (i, rest) = a.split_at(hidden);
        let (f, rest) = rest.split_at(hidden);
        let (u, o) = rest.split_at(hidden);
        let (di, rest) = d.split_at_mut(hidden);
        let (df, rest) = rest.split_at_mut(hidden);
        let (du, do_) = rest.split_at_mut(hidden);
        for j in 0..hidden {
            let dcj = dcr[j] + dhr[j] * o[j] * (1.0 - t[j] * t[j]);
            do_[j] = dhr[j] * t[j] * o[j] * (1.0 - o[j]);
            di[j] = dcj * u[j] * i[j] * (1.0 - i[j]);
            df[j] = dcj * cp[j] * f[j] * (1.0 - f[j]);
            du[j] = dcj * i[j] * (1.0 - u[j] * u[j]);
            dcr[j] = dcj * f[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cell step (the AVX2 one where the CPU has it) against the
    /// definition in f64, over pre-activations from -30 to 30, and the
    /// portable loops against it.
    #[test]
    fn cell_step_matches_the_definition() {
        let hidden = 16;
        let rows = 40;
        let g0: Vec<f32> = (0..rows * 4 * hidden)
            .map(|i| ((i * 37 % 601) as f32 - 300.0) / 10.0)
            .collect();
        let c_prev: Vec<f32> = (0..rows * hidden)
            .map(|i| ((i * 11 % 41) as f32 - 20.0) / 4.0)
            .collect();
        let run = |portable: bool| {
            let mut g = g0.clone();
            let (mut c, mut tc, mut h) = (
                vec![0.0f32; rows * hidden],
                vec![0.0f32; rows * hidden],
                vec![0.0f32; rows * hidden],
            );
            if portable {
                cell_forward_rows(&mut g, &c_prev, &mut c, &mut tc, &mut h, hidden);
            } else {
                cell_step(&mut g, &c_prev, &mut c, &mut tc, &mut h, hidden);
            }
            (g, c, h)
        };
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        for portable in [false, true] {
            let (g, c, h) = run(portable);
            for r in 0..rows {
                for j in 0..hidden {
                    let pre = |q: usize| g0[r * 4 * hidden + q * hidden + j] as f64;
                    let (i, f, u, o) = (sig(pre(0)), sig(pre(1)), pre(2).tanh(), sig(pre(3)));
                    let want_c = f * c_prev[r * hidden + j] as f64 + i * u;
                    let want_h = o * want_c.tanh();
                    let got = |q: usize| g[r * 4 * hidden + q * hidden + j] as f64;
                    for (q, want) in [i, f, u, o].into_iter().enumerate() {
                        assert!(
                            (got(q) - want).abs() < 1e-6,
                            "gate {q} ({r},{j}) portable {portable}"
                        );
                    }
                    assert!(
                        (c[r * hidden + j] as f64 - want_c).abs() < 1e-5,
                        "c ({r},{j})"
                    );
                    assert!(
                        (h[r * hidden + j] as f64 - want_h).abs() < 1e-6,
                        "h ({r},{j})"
                    );
                }
            }
        }
    }
}
