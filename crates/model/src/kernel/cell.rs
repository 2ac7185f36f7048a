//! One LSTM cell step for every row of a batch: the gate non-linearities
//! and the state update, forward and backward. The forward has hand-written
//! AVX-512 and AVX2+FMA variants (one macro body); the rest is compiled for
//! the baseline, AVX2+FMA and AVX-512 (`dispatch!` in `kernel/mod.rs`), the
//! widest picked at run time.

#[cfg(target_arch = "x86_64")]
use super::cpu::{Isa, isa};
#[cfg(target_arch = "x86_64")]
use super::gemm::elems;
use super::math::{sigmoid, tanh};
use std::mem::MaybeUninit;

/// Where a cell step writes, `[rows, H]` each: the new cell state, its
/// `tanh` and the output. The step writes every value and reads none, so
/// they may be a buffer's spare capacity ([`CellOut::uninit`]): the
/// sequence's buffers grow by a step's rows without zeros written first.
#[derive(Debug)]
pub struct CellOut<'a> {
    // private: only the cell steps write through them, initialized values
    // only (which makes [`CellOut::over`] sound)
    c: &'a mut [MaybeUninit<f32>],
    tc: &'a mut [MaybeUninit<f32>],
    h: &'a mut [MaybeUninit<f32>],
}

impl<'a> CellOut<'a> {
    /// Into uninitialized memory.
    pub fn uninit(
        c: &'a mut [MaybeUninit<f32>],
        tc: &'a mut [MaybeUninit<f32>],
        h: &'a mut [MaybeUninit<f32>],
    ) -> Self {
        CellOut { c, tc, h }
    }

    /// Over initialized buffers.
    pub fn over(c: &'a mut [f32], tc: &'a mut [f32], h: &'a mut [f32]) -> Self {
        fn as_uninit(x: &mut [f32]) -> &mut [MaybeUninit<f32>] {
            // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; through a
            // `CellOut` only initialized values are written (see its fields)
            unsafe { &mut *(x as *mut [f32] as *mut [MaybeUninit<f32>]) }
        }
        CellOut {
            c: as_uninit(c),
            tc: as_uninit(tc),
            h: as_uninit(h),
        }
    }

    /// # Panics
    /// Unless each holds `state` values.
    fn check(&self, state: usize) {
        assert!(
            self.c.len() >= state && self.tc.len() >= state && self.h.len() >= state,
            "cell state sizes"
        );
    }
}

/// The rows added to a step's pre-activations before the non-linearities:
/// one `[4H]` row per batch row (the step's input projections, read where
/// they lie), or none (empty: already in the pre-activations).
pub type InputRows<'a> = &'a [&'a [f32]];

/// # Panics
/// Unless `inputs` is empty or holds a row of `4 * hidden` values or more
/// for each of `rows`.
fn check_inputs(inputs: InputRows, rows: usize, hidden: usize) {
    assert!(
        inputs.is_empty() || (inputs.len() == rows && inputs.iter().all(|x| x.len() >= 4 * hidden)),
        "input rows: one of the gates' width per row"
    );
}

/// Gate non-linearities and the state update of one step, for every row:
/// `g` holds the pre-activations `[batch, 4H]` (to which `inputs` are added)
/// and is overwritten by the activations.
#[inline(always)]
fn cell_forward_rows(
    g: &mut [f32],
    inputs: InputRows,
    c_prev: &[f32],
    out: CellOut,
    hidden: usize,
) {
    let CellOut { c, tc, h } = out;
    for (r, row) in g.chunks_exact_mut(4 * hidden).enumerate() {
        if let Some(x) = inputs.get(r) {
            for (v, x) in row.iter_mut().zip(*x) {
                *v += x;
            }
        }
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
            cr[j].write(cj);
            tr[j].write(t);
            hr[j].write(o[j] * t);
        }
    }
}

/// Defines `$name`, the cell step of [`cell_forward_rows`] in `$lanes`-lane
/// SIMD, one pass over each row, units in fours of vectors: `e^x` as
/// [`exp`](super::math::exp) (its polynomial in FMAs; `round` and `pow2` are
/// its rounding to an integer and its `p 2^n`, in each width's instructions,
/// the same values in both), and the divisions of the
/// sigmoid and tanh as a hardware reciprocal estimate refined by one Newton
/// step (relative error below 3e-7; a division is several times slower on
/// these CPUs). One body for AVX2 and AVX-512: the arguments name each
/// width's vector type and intrinsics.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_cell_forward {
    ($name:ident, $features:literal, $lanes:literal, $v:ty,
     load $load:ident, store $store:ident, set1 $set1:ident, zero $zero:ident,
     add $add:ident, sub $sub:ident, mul $mul:ident, min $min:ident, max $max:ident,
     fmadd $fmadd:ident, fnmadd $fnmadd:ident, rcp $rcp:ident,
     round |$y:ident| $round:expr, pow2 |$p:ident, $n:ident| $pow2:expr) => {
        /// The cell step of [`cell_forward_rows`] in SIMD (see `simd_cell_forward!`).
        ///
        /// # Safety
        /// The CPU must have the function's target features and `hidden` must
        /// be a multiple of its lanes; the slices must hold whole rows (`g`
        /// `[rows, 4H]`, the others `[rows, H]`).
        #[target_feature(enable = $features)]
        unsafe fn $name(
            g: &mut [f32],
            inputs: InputRows,
            c_prev: &[f32],
            out: CellOut,
            hidden: usize,
        ) {
            use std::arch::x86_64::*;
            assert!(hidden > 0, "hidden must be at least 1");
            let rows = g.len() / elems(4, hidden);
            let state = elems(rows, hidden);
            assert!(c_prev.len() >= state, "previous cell state size");
            out.check(state);
            check_inputs(inputs, rows, hidden);
            #[inline]
            #[target_feature(enable = $features)]
            fn exp_v(x: $v) -> $v {
                let x = $min($max(x, $set1(-87.0)), $set1(88.0));
                let n = {
                    let $y = $mul(x, $set1(std::f32::consts::LOG2_E));
                    $round
                };
                let r = $sub(x, $mul(n, $set1(super::math::LN2_HI)));
                let r = $sub(r, $mul(n, $set1(super::math::LN2_LO)));
                let mut p = $set1(1.0 / 720.0);
                for coef in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
                    p = $fmadd(p, r, $set1(coef));
                }
                let ($p, $n) = (p, n);
                $pow2
            }
            /// `1 / d` for `d >= 1`.
            #[inline]
            #[target_feature(enable = $features)]
            fn recip_v(d: $v) -> $v {
                let r = $rcp(d);
                $mul(r, $fnmadd(d, r, $set1(2.0)))
            }
            #[inline]
            #[target_feature(enable = $features)]
            fn sigmoid_v(x: $v) -> $v {
                let e = exp_v($sub($zero(), x));
                recip_v($add($set1(1.0), e))
            }
            #[inline]
            #[target_feature(enable = $features)]
            fn tanh_v(x: $v) -> $v {
                let e = exp_v($add(x, x));
                let r = recip_v($add($set1(1.0), e));
                $fnmadd($set1(2.0), r, $set1(1.0))
            }
            /// The pre-activation at `q` of the row at `gp`, the input row's
            /// value at `q` added if there is one.
            ///
            /// # Safety
            /// `q + $lanes` values lie at `gp` and `xp`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn pre_v(gp: *const f32, xp: Option<*const f32>, q: usize) -> $v {
                // SAFETY: as the caller promises
                unsafe {
                    match xp {
                        Some(xp) => $add($load(gp.add(q)), $load(xp.add(q))),
                        None => $load(gp.add(q)),
                    }
                }
            }
            /// The `U` vectors of units from `j` of one row, each step done
            /// for all `U` before the next: a unit's gates, new state and
            /// output are one long chain of dependent operations, which the
            /// core overlaps only with work close to it in the program.
            /// `cargo bench -p model --bench kernel -- cell`, 64 x 512, one
            /// vector at a time against fours: 51 -> 46 us a step in
            /// AVX-512, 80 -> 69 in AVX2 (`CHARLSTM_KERNELS=avx2+fma`; in
            /// twos 74), though four units' gates take all 16 AVX2
            /// registers and spill.
            ///
            /// # Safety
            /// `j + U * $lanes <= hidden`; the pointers hold a row each:
            /// `4H` values at `gp` (and `xp`), `H` at the others.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn units<const U: usize>(
                j: usize,
                hidden: usize,
                (gp, xp, cpp): (*mut f32, Option<*const f32>, *const f32),
                (cp, tp, hp): (*mut f32, *mut f32, *mut f32),
            ) {
                let at = |v: usize| j + v * $lanes;
                // SAFETY (whole body): offsets below 4H in the gate rows, H in
                // the others, as the caller promises
                unsafe {
                    let (mut i, mut f, mut o, mut cand) =
                        ([$zero(); U], [$zero(); U], [$zero(); U], [$zero(); U]);
                    for v in 0..U {
                        i[v] = sigmoid_v(pre_v(gp, xp, at(v)));
                    }
                    for v in 0..U {
                        f[v] = sigmoid_v(pre_v(gp, xp, hidden + at(v)));
                    }
                    for v in 0..U {
                        cand[v] = tanh_v(pre_v(gp, xp, 2 * hidden + at(v)));
                    }
                    for v in 0..U {
                        o[v] = sigmoid_v(pre_v(gp, xp, 3 * hidden + at(v)));
                    }
                    let mut c = [$zero(); U];
                    for v in 0..U {
                        let q = at(v);
                        $store(gp.add(q), i[v]);
                        $store(gp.add(hidden + q), f[v]);
                        $store(gp.add(2 * hidden + q), cand[v]);
                        $store(gp.add(3 * hidden + q), o[v]);
                        c[v] = $fmadd(f[v], $load(cpp.add(q)), $mul(i[v], cand[v]));
                    }
                    let mut t = [$zero(); U];
                    for v in 0..U {
                        t[v] = tanh_v(c[v]);
                    }
                    for v in 0..U {
                        let q = at(v);
                        $store(cp.add(q), c[v]);
                        $store(tp.add(q), t[v]);
                        $store(hp.add(q), $mul(o[v], t[v]));
                    }
                }
            }
            // units in fours of vectors, the rest one vector at a time
            let in_fours = hidden - hidden % (4 * $lanes);
            for r in 0..rows {
                // SAFETY: every offset is below (r + 1) * 4H in g and (r + 1) * H in
                // the state slices, whose sizes were checked above; `units`
                // reads and writes a row's values from j, within the row
                // (`hidden` is a multiple of $lanes, the caller's promise:
                // the single vectors end at the row's end).
                unsafe {
                    let row = (
                        g.as_mut_ptr().add(r * 4 * hidden),
                        inputs.get(r).map(|x| x.as_ptr()),
                        c_prev.as_ptr().add(r * hidden),
                    );
                    let new_state = (
                        out.c.as_mut_ptr().cast::<f32>().add(r * hidden),
                        out.tc.as_mut_ptr().cast::<f32>().add(r * hidden),
                        out.h.as_mut_ptr().cast::<f32>().add(r * hidden),
                    );
                    for j in (0..in_fours).step_by(4 * $lanes) {
                        units::<4>(j, hidden, row, new_state);
                    }
                    for j in (in_fours..hidden).step_by($lanes) {
                        units::<1>(j, hidden, row, new_state);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
// (rustfmt would take the arguments' indentation away)
#[rustfmt::skip]
simd_cell_forward!(cell_forward_avx2, "avx2,fma", 8, __m256,
    load _mm256_loadu_ps, store _mm256_storeu_ps, set1 _mm256_set1_ps, zero _mm256_setzero_ps,
    add _mm256_add_ps, sub _mm256_sub_ps, mul _mm256_mul_ps, min _mm256_min_ps, max _mm256_max_ps,
    fmadd _mm256_fmadd_ps, fnmadd _mm256_fnmadd_ps, rcp _mm256_rcp_ps,
    // adding 1.5 * 2^23 rounds to an integer, as math::exp does
    round |y| _mm256_sub_ps(
        _mm256_add_ps(y, _mm256_set1_ps(super::math::ROUND)),
        _mm256_set1_ps(super::math::ROUND),
    ),
    // n added to p's exponent: integer arithmetic, exact for normal results
    pow2 |p, n| _mm256_castsi256_ps(_mm256_add_epi32(
        _mm256_castps_si256(p),
        _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23),
    )));

#[cfg(target_arch = "x86_64")]
simd_cell_forward!(cell_forward_avx512, "avx512f,fma", 16, __m512,
    load _mm512_loadu_ps, store _mm512_storeu_ps, set1 _mm512_set1_ps, zero _mm512_setzero_ps,
    add _mm512_add_ps, sub _mm512_sub_ps, mul _mm512_mul_ps, min _mm512_min_ps, max _mm512_max_ps,
    fmadd _mm512_fmadd_ps, fnmadd _mm512_fnmadd_ps, rcp _mm512_rcp14_ps,
    // one instruction each where AVX2 takes two and three (the same
    // values: round to nearest even, then p 2^n exactly for normal results)
    round |y| _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y),
    pow2 |p, n| _mm512_scalef_ps(p, n));

/// A SIMD cell step, with the arguments of [`cell_forward_rows`].
#[cfg(target_arch = "x86_64")]
type SimdCell = unsafe fn(&mut [f32], InputRows, &[f32], CellOut, usize);

/// The SIMD cell step for `hidden` units on this CPU: the widest within
/// [`isa`] whose lanes divide `hidden` (16 for AVX-512, 8 for AVX2), if any.
#[cfg(target_arch = "x86_64")]
fn simd_cell(hidden: usize) -> Option<SimdCell> {
    let ok = |lanes: usize| hidden > 0 && hidden.is_multiple_of(lanes);
    match isa() {
        i if i.avx512() && ok(16) => Some(cell_forward_avx512),
        Isa::Avx512 | Isa::Avx512Amx | Isa::Avx2 if ok(8) => Some(cell_forward_avx2),
        _ => None,
    }
}

/// One step of the cell for every row: `g` holds the pre-activations
/// `[rows, 4H]` but for `inputs` (added first; none if empty) and is
/// overwritten by the activations; writes the new cell state, its tanh and
/// the output, the first `[rows, H]` values of each of `out`.
///
/// # Panics
/// On `inputs` neither empty nor a row of `4H` values for each row.
pub fn cell_step(g: &mut [f32], inputs: InputRows, c_prev: &[f32], out: CellOut, hidden: usize) {
    check_inputs(inputs, g.len() / (4 * hidden).max(1), hidden);
    // the SIMD pass where it applies, else the portable loops
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd_cell(hidden) {
        // SAFETY: `simd_cell` picked a pass this CPU runs whose lanes divide
        // hidden; the function checks the slice sizes.
        unsafe { simd(g, inputs, c_prev, out, hidden) };
        return;
    }
    dispatch!(cell_forward_rows(g, inputs, c_prev, out, hidden));
}

/// Gradients of one step's pre-activations from `dh` and `dc` (which becomes
/// the gradient flowing to the previous cell state), written over the gate
/// activations `g` they are computed from: `g` holds a row's `sigmoid(i),
/// sigmoid(f), tanh(u), sigmoid(o)` on entry and their gradients on return
/// (the backward pass needs no second buffer of the activations' size).
#[inline(always)]
pub(super) fn cell_backward_rows(
    g: &mut [f32],
    c_prev: &[f32],
    tc: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    hidden: usize,
) {
    for (r, row) in g.chunks_exact_mut(4 * hidden).enumerate() {
        let span = r * hidden..(r + 1) * hidden;
        let (cp, t, dhr) = (&c_prev[span.clone()], &tc[span.clone()], &dh[span.clone()]);
        let dcr = &mut dc[span];
        let (i, rest) = row.split_at_mut(hidden);
        let (f, rest) = rest.split_at_mut(hidden);
        let (u, o) = rest.split_at_mut(hidden);
        for j in 0..hidden {
            let (ij, fj, uj, oj) = (i[j], f[j], u[j], o[j]);
            let dcj = dcr[j] + dhr[j] * oj * (1.0 - t[j] * t[j]);
            o[j] = dhr[j] * t[j] * oj * (1.0 - oj);
            i[j] = dcj * uj * ij * (1.0 - ij);
            f[j] = dcj * cp[j] * fj * (1.0 - fj);
            u[j] = dcj * ij * (1.0 - uj * uj);
            dcr[j] = dcj * fj;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell step pass under test, with the arguments of [`cell_forward_rows`].
    type Pass = fn(&mut [f32], InputRows, &[f32], CellOut, usize);

    /// Every cell step this CPU has (AVX-512, AVX2, portable) against the
    /// definition in f64, over pre-activations from -30 to 30 and a few of
    /// +-100 (past `e^x`'s clamps), at widths each SIMD pass takes: rows in
    /// fours of vectors only, in single vectors only, and both.
    #[test]
    #[allow(clippy::print_stderr)] // says which passes this CPU could not run
    fn cell_step_matches_the_definition() {
        let mut passes: Vec<(&str, Pass)> = vec![("portable", |g, x, cp, out, hd| {
            cell_forward_rows(g, x, cp, out, hd)
        })];
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernel::cpu::detected_isa;
            if detected_isa() >= Isa::Avx2 {
                // SAFETY: the CPU has AVX2+FMA; the widths below are multiples of 8
                passes.push(("avx2", |g, x, cp, out, hd| unsafe {
                    cell_forward_avx2(g, x, cp, out, hd)
                }));
            } else {
                eprintln!("cell_step_matches_the_definition: no AVX2+FMA here: AVX2 pass not run");
            }
            if detected_isa() >= Isa::Avx512 {
                // SAFETY: the CPU has AVX-512F; the widths it is run at are multiples of 16
                passes.push(("avx512", |g, x, cp, out, hd| unsafe {
                    cell_forward_avx512(g, x, cp, out, hd)
                }));
            } else {
                eprintln!(
                    "cell_step_matches_the_definition: no AVX-512 here: AVX-512 pass not run"
                );
            }
        }
        // AVX-512 (16 lanes): 64 in fours only, 16 and 48 singles only, 80
        // and 96 both; AVX2 (8 lanes): 64 and 96 fours only, 16 and 24
        // singles only, 48 and 80 both
        for hidden in [16usize, 24, 48, 64, 80, 96] {
            for &(name, pass) in &passes {
                if name == "avx512" && !hidden.is_multiple_of(16) {
                    continue;
                }
                check_cell_pass(name, pass, hidden, false);
                check_cell_pass(name, pass, hidden, true);
            }
        }
    }

    /// One pass against the definition; `with_inputs`: the pre-activations
    /// given as the gates' values plus input rows (one per row, apart).
    fn check_cell_pass(name: &str, pass: Pass, hidden: usize, with_inputs: bool) {
        let rows = 40;
        let width = 4 * hidden;
        let g0: Vec<f32> = (0..rows * width)
            .map(|i| match i % 97 {
                0 => 100.0,
                1 => -100.0,
                _ => ((i * 37 % 601) as f32 - 300.0) / 10.0,
            })
            .collect();
        let c_prev: Vec<f32> = (0..rows * hidden)
            .map(|i| ((i * 11 % 41) as f32 - 20.0) / 4.0)
            .collect();
        let x: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let rows_of_x: Vec<&[f32]> = x.chunks_exact(width).collect();
        let (mut g, inputs, pre_activations): (Vec<f32>, InputRows, Vec<f32>) = if with_inputs {
            let g: Vec<f32> = g0.iter().zip(&x).map(|(a, b)| a - b).collect();
            // what the pass adds, in f32
            let pre = g.iter().zip(&x).map(|(a, b)| a + b).collect();
            (g, &rows_of_x, pre)
        } else {
            (g0.clone(), &[], g0.clone())
        };
        // NaN before: a value the pass did not write stays NaN
        let (mut c, mut tc, mut h) = (
            vec![f32::NAN; rows * hidden],
            vec![f32::NAN; rows * hidden],
            vec![f32::NAN; rows * hidden],
        );
        pass(
            &mut g,
            inputs,
            &c_prev,
            CellOut::over(&mut c, &mut tc, &mut h),
            hidden,
        );
        let name = format!("{name} (inputs apart: {with_inputs})");
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        for r in 0..rows {
            for j in 0..hidden {
                let pre = |q: usize| pre_activations[r * width + q * hidden + j] as f64;
                let (i, f, u, o) = (sig(pre(0)), sig(pre(1)), pre(2).tanh(), sig(pre(3)));
                let want_c = f * c_prev[r * hidden + j] as f64 + i * u;
                let want_h = o * want_c.tanh();
                let got = |q: usize| g[r * 4 * hidden + q * hidden + j] as f64;
                for (q, want) in [i, f, u, o].into_iter().enumerate() {
                    assert!(
                        (got(q) - want).abs() < 1e-6,
                        "{name} H={hidden}: gate {q} ({r},{j})"
                    );
                }
                assert!(
                    (c[r * hidden + j] as f64 - want_c).abs() < 1e-5,
                    "{name} H={hidden}: c ({r},{j})"
                );
                assert!(
                    (h[r * hidden + j] as f64 - want_h).abs() < 1e-6,
                    "{name} H={hidden}: h ({r},{j})"
                );
                assert!(
                    (tc[r * hidden + j] as f64 - want_c.tanh()).abs() < 1e-6,
                    "{name} H={hidden}: tanh(c) ({r},{j})"
                );
            }
        }
    }
}
