//! The unrolled LSTM sequence as plain Rust on `f32` slices: forward and
//! backward of all time steps in one call, with no allocation per step.
//! Matrix products go to the `gemm` crate (the one Burn's flex backend uses);
//! the element-wise gate arithmetic is written so that it vectorises, and is
//! compiled twice (baseline and AVX2+FMA) with the better one picked at run time.
//!
//! Layout (row-major, time-major): the input projections `p` are
//! `[steps * batch, 4 * d_hidden]` with the gates `i, f, u, o` side by side
//! (bias included); `wh` is `[d_hidden, 4 * d_hidden]`; states are `[batch, d_hidden]`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

static THREADS: AtomicUsize = AtomicUsize::new(1);
static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// Sets how many threads the sequence kernels may use (at least 1).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// How many threads the sequence kernels may use.
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// The kernels' thread pool, of [`threads`] threads (kept across calls: a
/// step spends tens of microseconds per part, too little to start threads for).
fn pool() -> Arc<rayon::ThreadPool> {
    let n = threads();
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    match &*guard {
        Some((k, p)) if *k == n => p.clone(),
        _ => {
            let p = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("charlstm-kernel-{i}"))
                    .build()
                    .expect("kernel thread pool"),
            );
            *guard = Some((n, p.clone()));
            p
        }
    }
}

/// Runs `f` on the kernel threads: Burn's global pool when it has the asked
/// size (which Burn's flex backend uses for its own threaded operations: two
/// pools on the same cores would have their idle workers spinning against
/// each other), else the kernels' own pool.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if threads() == rayon::current_num_threads() {
        f()
    } else {
        pool().install(f)
    }
}

/// Runs `f` on every item on the kernel pool, results in order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    on_pool(|| items.par_iter().map(&f).collect())
}

/// Runs `f` on every item, mutably, on the kernel pool (as [`parallel_map`]).
pub fn parallel_for_each_mut<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync + Send) {
    use rayon::prelude::*;
    if items.len() <= 1 || threads() == 1 {
        items.iter_mut().for_each(f);
    } else {
        on_pool(|| items.par_iter_mut().for_each(&f));
    }
}

/// Sizes of one sequence call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqDims {
    /// Time steps.
    pub steps: usize,
    /// Sequences.
    pub batch: usize,
    /// Units.
    pub hidden: usize,
}

impl SeqDims {
    fn rows(&self) -> usize {
        self.steps * self.batch
    }
    fn gates(&self) -> usize {
        4 * self.hidden
    }
}

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Clone, Default)]
pub struct SeqCache {
    /// Gate activations `[rows, 4H]`: `sigmoid(i), sigmoid(f), tanh(u), sigmoid(o)`.
    pub acts: Vec<f32>,
    /// Cell states `c_t`, `[rows, H]`.
    pub cells: Vec<f32>,
    /// `tanh(c_t)`, `[rows, H]`.
    pub tanh_c: Vec<f32>,
    /// Outputs `h_t`, `[rows, H]`.
    pub hs: Vec<f32>,
}

/// `c (+)= a · b` for row-major matrices: `a` is `[m, k]` (or `[k, m]` when
/// `a_t`), `b` is `[k, n]` (or `[n, k]` when `b_t`), `c` is `[m, n]`.
///
/// Shapes whose rows come in fours and columns in sixteens, with `b` not
/// transposed (every product of the LSTM kernels), go to a register-blocked
/// AVX2+FMA kernel that reads `b` in place; anything else to the `gemm` crate.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    accumulate: bool,
) {
    assert!(
        c.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matmul operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if !b_t
        && m.is_multiple_of(4)
        && n.is_multiple_of(16)
        && n * k <= BLOCKED_MAX_B
        && has_avx2_fma()
    {
        let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
        // SAFETY: the CPU has AVX2 and FMA; the sizes were checked above and
        // every index the kernel forms stays inside them.
        unsafe {
            gemm_4x16(
                m,
                n,
                k,
                a.as_ptr(),
                a_rs,
                a_cs,
                b.as_ptr(),
                n,
                c.as_mut_ptr(),
                n,
                accumulate,
            )
        };
        return;
    }
    let (a_cs, a_rs) = if a_t {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    let (b_cs, b_rs) = if b_t {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    // SAFETY: the sizes were checked above; strides describe the row-major layouts.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Largest right operand (elements) the blocked kernel takes: it reads `b` in
/// place, without packing, which pays only while `b` stays in cache.
pub const BLOCKED_MAX_B: usize = 64 * 1024;

/// A right operand packed once for many products with different left
/// operands (the recurrent weights, used at every time step): strips of 16
/// columns, each `[k, 16]` contiguous, so that the blocked kernel streams it
/// through the cache instead of striding across rows of a large matrix.
#[derive(Debug, Clone)]
pub struct PackedB {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

/// Rows of a packed strip one pass of the blocked kernel covers (16 KiB of
/// the strip, which stays in the L1 cache while every row block reads it).
const PACKED_KC: usize = 256;

/// Operands from this many elements up are packed by all threads.
const PARALLEL_PACK: usize = 1 << 18;

impl PackedB {
    /// Packs `b` (`[k, n]` row-major, or `[n, k]` when `b_t`), or returns
    /// `None` where the blocked kernel does not apply (no AVX2+FMA, or `n`
    /// not a multiple of 16): callers then use [`matmul`].
    pub fn new(b: &[f32], k: usize, n: usize, b_t: bool) -> Option<Self> {
        assert!(b.len() >= k * n, "packed operand size");
        #[cfg(target_arch = "x86_64")]
        if n.is_multiple_of(16) && n > 0 && k > 0 && has_avx2_fma() {
            let mut data = vec![0.0f32; k * n];
            let pack = |(s, strip): &mut (usize, &mut [f32])| {
                for (p, row) in strip.chunks_exact_mut(16).enumerate() {
                    for (q, x) in row.iter_mut().enumerate() {
                        let j = *s * 16 + q;
                        *x = if b_t { b[j * k + p] } else { b[p * n + j] };
                    }
                }
            };
            let mut strips: Vec<(usize, &mut [f32])> =
                data.chunks_exact_mut(16 * k).enumerate().collect();
            if k * n >= PARALLEL_PACK {
                // large weights (`large`'s 4 MiB) are packed on every thread
                parallel_for_each_mut(&mut strips, pack);
            } else {
                strips.iter_mut().for_each(pack);
            }
            return Some(PackedB { data, k, n });
        }
        None
    }

    /// `c (+)= a · B` for `a` `[m, k]` row-major and `c` `[m, n]`.
    pub fn matmul(&self, c: &mut [f32], a: &[f32], m: usize, accumulate: bool) {
        let (k, n) = (self.k, self.n);
        assert!(c.len() >= m * n && a.len() >= m * k, "matmul operand sizes");
        let m4 = m - m % 4;
        #[cfg(target_arch = "x86_64")]
        for (s, strip) in self.data.chunks_exact(16 * k).enumerate() {
            for k0 in (0..k).step_by(PACKED_KC) {
                let kc = PACKED_KC.min(k - k0);
                if m4 > 0 {
                    // SAFETY: a packed operand exists only where AVX2 and FMA
                    // do; rows 0..m4 (a multiple of 4) by the strip's 16
                    // columns, k0..k0+kc, lie inside a, the strip and c.
                    unsafe {
                        gemm_4x16(
                            m4,
                            16,
                            kc,
                            a.as_ptr().add(k0),
                            k,
                            1,
                            strip.as_ptr().add(k0 * 16),
                            16,
                            c.as_mut_ptr().add(s * 16),
                            n,
                            accumulate || k0 > 0,
                        )
                    };
                }
                for i in m4..m {
                    let out = &mut c[i * n + s * 16..i * n + s * 16 + 16];
                    if !(accumulate || k0 > 0) {
                        out.fill(0.0);
                    }
                    for p in k0..k0 + kc {
                        let x = a[i * k + p];
                        for (o, w) in out.iter_mut().zip(&strip[p * 16..p * 16 + 16]) {
                            *o += x * w;
                        }
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("packed operands are made only on x86_64");
    }
}

/// `c (+)= a · b` for `a` `[m, k]` where `b` may have been packed: the packed
/// kernel when it was and the rows come in fours (its row blocks), else [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_maybe_packed(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    packed: Option<&PackedB>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    match packed {
        Some(pb) if m.is_multiple_of(4) => pb.matmul(c, a, m, accumulate),
        _ => matmul(c, a, b, m, n, k, false, false, accumulate),
    }
}

/// `c (+)= a · b` through the `gemm` crate only (for comparisons).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gemm_crate(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    accumulate: bool,
) {
    let (a_cs, a_rs) = if a_t {
        (m as isize, 1)
    } else {
        (1, k as isize)
    };
    assert!(
        c.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matmul operand sizes"
    );
    // SAFETY: sizes checked; strides describe row-major layouts.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Whether this CPU runs the AVX2+FMA code paths.
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// `C (+)= A B` in blocks of 4 rows by 16 columns held in 8 registers.
/// `A[i][p]` is at `a[i * a_rs + p * a_cs]`; `B` is row-major with row stride
/// `ldb`, read where it lies (each block's 16 columns of a row are contiguous).
///
/// # Safety
/// AVX2 and FMA must be available; `m % 4 == 0`, `n % 16 == 0`, and the
/// pointers must cover every element the strides address.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_4x16(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    for j in (0..n).step_by(16) {
        for i in (0..m).step_by(4) {
            // SAFETY (whole block): indices stay below m x n, m x k and k x n as documented.
            unsafe {
                let cp = c.add(i * ldc + j);
                let mut acc = if accumulate {
                    [
                        _mm256_loadu_ps(cp),
                        _mm256_loadu_ps(cp.add(8)),
                        _mm256_loadu_ps(cp.add(ldc)),
                        _mm256_loadu_ps(cp.add(ldc + 8)),
                        _mm256_loadu_ps(cp.add(2 * ldc)),
                        _mm256_loadu_ps(cp.add(2 * ldc + 8)),
                        _mm256_loadu_ps(cp.add(3 * ldc)),
                        _mm256_loadu_ps(cp.add(3 * ldc + 8)),
                    ]
                } else {
                    [_mm256_setzero_ps(); 8]
                };
                let a0 = a.add(i * a_rs);
                let (a1, a2, a3) = (a0.add(a_rs), a0.add(2 * a_rs), a0.add(3 * a_rs));
                let mut bp = b.add(j);
                for p in 0..k {
                    let b0 = _mm256_loadu_ps(bp);
                    let b1 = _mm256_loadu_ps(bp.add(8));
                    let off = p * a_cs;
                    let x0 = _mm256_broadcast_ss(&*a0.add(off));
                    acc[0] = _mm256_fmadd_ps(x0, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x0, b1, acc[1]);
                    let x1 = _mm256_broadcast_ss(&*a1.add(off));
                    acc[2] = _mm256_fmadd_ps(x1, b0, acc[2]);
                    acc[3] = _mm256_fmadd_ps(x1, b1, acc[3]);
                    let x2 = _mm256_broadcast_ss(&*a2.add(off));
                    acc[4] = _mm256_fmadd_ps(x2, b0, acc[4]);
                    acc[5] = _mm256_fmadd_ps(x2, b1, acc[5]);
                    let x3 = _mm256_broadcast_ss(&*a3.add(off));
                    acc[6] = _mm256_fmadd_ps(x3, b0, acc[6]);
                    acc[7] = _mm256_fmadd_ps(x3, b1, acc[7]);
                    bp = bp.add(ldb);
                }
                for r in 0..4 {
                    _mm256_storeu_ps(cp.add(r * ldc), acc[2 * r]);
                    _mm256_storeu_ps(cp.add(r * ldc + 8), acc[2 * r + 1]);
                }
            }
        }
    }
}

/// `e^x`, relative error below 2e-7, branch-free so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    // max/min rather than clamp: NaN handling aside, they map to single instructions
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    // t holds round(x / ln 2) in its low mantissa bits
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor to degree 6 on |r| <= ln2/2
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the integer in t's mantissa: integer arithmetic only, so it vectorises
    let k = t.to_bits().wrapping_sub(ROUND.to_bits());
    f32::from_bits(p.to_bits().wrapping_add(k << 23))
}

/// Logistic sigmoid.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Hyperbolic tangent, absolute error below 3e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + exp(2.0 * x))
}

/// Runs `f` compiled for AVX2+FMA when the CPU has them, else for the baseline.
macro_rules! dispatch {
    ($generic:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast(f: impl FnOnce()) { f() }
                // SAFETY: the CPU supports the features just detected.
                unsafe { fast(|| $generic($($arg),*)) };
            } else {
                $generic($($arg),*);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $generic($($arg),*);
        }
    }};
}

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
    let rows = g.len() / (4 * hidden);
    assert!(
        c_prev.len() >= rows * hidden
            && c.len() >= rows * hidden
            && tc.len() >= rows * hidden
            && h.len() >= rows * hidden,
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
    if hidden.is_multiple_of(8) && has_avx2_fma() {
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
fn cell_backward_rows(
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

/// Forward pass over all steps. Returns the outputs `[rows, H]` and the final
/// cell state `[batch, H]`; `cache` (reused across calls) keeps what the
/// backward pass needs (its `hs` holds the outputs).
///
/// `p` (the input projections) becomes the cache's activation buffer: the
/// pre-activations are overwritten in place, no copy is made.
pub fn forward(
    dims: SeqDims,
    p: Vec<f32>,
    wh: &[f32],
    h0: &[f32],
    c0: &[f32],
    cache: &mut SeqCache,
) -> Vec<f32> {
    // packed once for all steps: faster than reading `wh` in place (small
    // models) and than the `gemm` crate, which packs it at every call (large ones)
    // (batches in fours: the packed kernel's row blocks; others read `wh` in place)
    let packed = dims
        .batch
        .is_multiple_of(4)
        .then(|| PackedB::new(wh, dims.hidden, dims.gates(), false))
        .flatten();
    forward_packed(dims, p, wh, packed.as_ref(), h0, c0, cache)
}

/// [`forward`] with `wh` already packed (`PackedB::new(wh, H, 4H, false)`),
/// shared by the threads of [`forward_split`].
pub fn forward_packed(
    dims: SeqDims,
    p: Vec<f32>,
    wh: &[f32],
    packed: Option<&PackedB>,
    h0: &[f32],
    c0: &[f32],
    cache: &mut SeqCache,
) -> Vec<f32> {
    let (rows, g4, hd, b) = (dims.rows(), dims.gates(), dims.hidden, dims.batch);
    assert_eq!(p.len(), rows * g4, "input projections");
    assert_eq!(wh.len(), hd * g4, "recurrent weights");
    assert_eq!(h0.len(), b * hd, "initial output");
    assert_eq!(c0.len(), b * hd, "initial cell");
    cache.acts = p;
    cache.cells.resize(rows * hd, 0.0);
    cache.tanh_c.resize(rows * hd, 0.0);
    cache.hs.resize(rows * hd, 0.0);
    for s in 0..dims.steps {
        let (g_span, h_span) = (s * b * g4..(s + 1) * b * g4, s * b * hd..(s + 1) * b * hd);
        {
            let (done, _) = cache.hs.split_at(s * b * hd);
            let h_prev = if s == 0 {
                h0
            } else {
                &done[(s - 1) * b * hd..]
            };
            matmul_maybe_packed(
                &mut cache.acts[g_span.clone()],
                h_prev,
                wh,
                packed,
                b,
                g4,
                hd,
                true,
            );
        }
        let (cells_done, cells_now) = cache.cells.split_at_mut(s * b * hd);
        let c_prev = if s == 0 {
            c0
        } else {
            &cells_done[(s - 1) * b * hd..]
        };
        let c = &mut cells_now[..b * hd];
        let g = &mut cache.acts[g_span];
        let tc = &mut cache.tanh_c[h_span.clone()];
        let h = &mut cache.hs[h_span];
        cell_step(g, c_prev, c, tc, h, hd);
    }
    cache.cells[(rows - b) * hd..].to_vec()
}

/// Gradients of the sequence.
#[derive(Debug, Clone)]
pub struct SeqGrads {
    /// Of the input projections `[rows, 4H]`.
    pub dp: Vec<f32>,
    /// Of the recurrent weights `[H, 4H]`.
    pub dwh: Vec<f32>,
    /// Of the initial output `[batch, H]`.
    pub dh0: Vec<f32>,
    /// Of the initial cell state `[batch, H]`.
    pub dc0: Vec<f32>,
}

/// Backward pass from the gradients of the outputs `dhs` `[rows, H]` and of the
/// final cell state `dc_last` `[batch, H]`.
pub fn backward(
    dims: SeqDims,
    cache: &SeqCache,
    wh: &[f32],
    h0: &[f32],
    c0: &[f32],
    dhs: &[f32],
    dc_last: &[f32],
) -> SeqGrads {
    // Wh^T [4H, H], once: packed straight from `wh` where the packed kernel
    // applies (batches in fours)
    let packed = dims
        .batch
        .is_multiple_of(4)
        .then(|| PackedB::new(wh, dims.gates(), dims.hidden, true))
        .flatten();
    backward_packed(dims, cache, wh, packed.as_ref(), h0, c0, dhs, dc_last)
}

/// [`backward`] with `Wh^T` already packed (`PackedB::new(wh, 4H, H, true)`),
/// shared by the threads of [`backward_split`].
#[allow(clippy::too_many_arguments)]
pub fn backward_packed(
    dims: SeqDims,
    cache: &SeqCache,
    wh: &[f32],
    packed_t: Option<&PackedB>,
    h0: &[f32],
    c0: &[f32],
    dhs: &[f32],
    dc_last: &[f32],
) -> SeqGrads {
    let (rows, g4, hd, b) = (dims.rows(), dims.gates(), dims.hidden, dims.batch);
    assert_eq!(dhs.len(), rows * hd, "output gradients");
    assert_eq!(dc_last.len(), b * hd, "final cell gradient");
    let mut dp = vec![0.0f32; rows * g4];
    let mut dc = dc_last.to_vec();
    let mut dh_next = vec![0.0f32; b * hd];
    let mut dh = vec![0.0f32; b * hd];
    // where the packed kernel does not apply, Wh^T transposed so that dG Wh^T reads it row by row
    let packed = packed_t.filter(|_| b.is_multiple_of(4));
    let mut wh_t = Vec::new();
    if packed.is_none() {
        wh_t = vec![0.0f32; g4 * hd];
        for r in 0..hd {
            for c in 0..g4 {
                wh_t[c * hd + r] = wh[r * g4 + c];
            }
        }
    }
    for s in (0..dims.steps).rev() {
        let h_span = s * b * hd..(s + 1) * b * hd;
        for (d, (x, y)) in dh.iter_mut().zip(dhs[h_span.clone()].iter().zip(&dh_next)) {
            *d = x + y;
        }
        let c_prev = if s == 0 {
            c0
        } else {
            &cache.cells[(s - 1) * b * hd..s * b * hd]
        };
        let acts = &cache.acts[s * b * g4..(s + 1) * b * g4];
        let tc = &cache.tanh_c[h_span];
        let dg = &mut dp[s * b * g4..(s + 1) * b * g4];
        dispatch!(cell_backward_rows(acts, c_prev, tc, &dh, &mut dc, dg, hd));
        // dh_prev = dG · Wh^T
        matmul_maybe_packed(&mut dh_next, dg, &wh_t, packed, b, hd, g4, false);
    }
    // dWh = h0^T dG_0 + H_{0..T-1}^T dG_{1..T}
    let mut dwh = vec![0.0f32; hd * g4];
    matmul(&mut dwh, h0, &dp[..b * g4], hd, g4, b, true, false, false);
    if dims.steps > 1 {
        matmul(
            &mut dwh,
            &cache.hs[..(rows - b) * hd],
            &dp[b * g4..],
            hd,
            g4,
            rows - b,
            true,
            false,
            true,
        );
    }
    SeqGrads {
        dp,
        dwh,
        dh0: dh_next,
        dc0: dc,
    }
}

/// Rows per work item of the classifier: the rows split evenly over the
/// threads, in blocks of at least 256 (fewer rows are not worth a thread).
fn xent_rows(n: usize) -> usize {
    n.div_ceil(threads()).max(256)
}

/// Mean softmax cross-entropy of the logits `h w + b` (`h` `[n, d]`, `w`
/// `[d, v]`, `b` `[v]`) against `labels`; also returns the softmax `[n, v]`
/// for the backward pass. Rows are split over the threads; the mean is
/// summed in row order whatever the split.
#[allow(clippy::too_many_arguments)]
pub fn linear_xent(
    h: &[f32],
    w: &[f32],
    b: &[f32],
    labels: &[i64],
    n: usize,
    d: usize,
    v: usize,
) -> (f64, Vec<f32>) {
    assert_eq!(labels.len(), n, "one label per row");
    assert!(
        h.len() >= n * d && w.len() >= d * v && b.len() >= v,
        "classifier operand sizes"
    );
    let mut probs = vec![0.0f32; n * v];
    let mut losses = vec![0.0f64; n];
    let per = xent_rows(n);
    let mut work: Vec<_> = probs
        .chunks_mut((per * v).max(1))
        .zip(losses.chunks_mut(per))
        .enumerate()
        .collect();
    parallel_for_each_mut(&mut work, |(c, (probs, losses))| {
        let (lo, rows) = (*c * per, losses.len());
        for row in probs.chunks_exact_mut(v) {
            row.copy_from_slice(&b[..v]);
        }
        matmul(
            probs,
            &h[lo * d..(lo + rows) * d],
            w,
            rows,
            v,
            d,
            false,
            false,
            true,
        );
        let rows = probs.chunks_exact_mut(v).zip(&labels[lo..lo + rows]);
        for ((row, &label), loss) in rows.zip(losses.iter_mut()) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let target = (row[label as usize] - max) as f64;
            let mut z = 0.0f64;
            for x in row.iter_mut() {
                let e = ((*x - max) as f64).exp();
                z += e;
                *x = e as f32;
            }
            let inv = (1.0 / z) as f32;
            // log-sum-exp minus the target's logit: exact for any logits (no
            // clamped log of a tiny probability), and NaN once they overflow
            *loss = z.ln() - target;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    });
    (losses.iter().sum::<f64>() / n as f64, probs)
}

/// Gradients of [`linear_xent`] scaled by `dloss`: `(dh [n, d], dw [d, v], db [v])`.
#[allow(clippy::too_many_arguments)]
pub fn linear_xent_backward(
    h: &[f32],
    w: &[f32],
    mut probs: Vec<f32>,
    labels: &[i64],
    n: usize,
    d: usize,
    v: usize,
    dloss: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let scale = dloss / n as f32;
    let mut db = vec![0.0f32; v];
    for (row, &label) in probs.chunks_exact_mut(v).zip(labels) {
        row[label as usize] -= 1.0;
        for (x, acc) in row.iter_mut().zip(db.iter_mut()) {
            *x *= scale;
            *acc += *x;
        }
    }
    // per row block: its rows of dh = dlogits w^T and its share of dw = h^T dlogits
    let per = xent_rows(n);
    let mut dh = vec![0.0f32; n * d];
    let mut work: Vec<_> = dh
        .chunks_mut((per * d).max(1))
        .enumerate()
        .map(|(c, dh)| (c, dh, Vec::new()))
        .collect();
    parallel_for_each_mut(&mut work, |(c, dh, dw)| {
        let lo = *c * per;
        let rows = dh.len() / d;
        let p = &probs[lo * v..(lo + rows) * v];
        matmul(dh, p, w, rows, d, v, false, true, false);
        *dw = vec![0.0f32; d * v];
        matmul(
            dw,
            &h[lo * d..(lo + rows) * d],
            p,
            d,
            v,
            rows,
            true,
            false,
            false,
        );
    });
    let mut dw = vec![0.0f32; d * v];
    for (_, _, part) in &work {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    (dh, dw, db)
}

/// The batch split for `parts` threads: `(first sequence, sequences)` of each part.
pub fn split_batch(batch: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, batch.max(1));
    (0..parts)
        .map(|k| {
            let lo = batch * k / parts;
            let hi = batch * (k + 1) / parts;
            (lo, hi - lo)
        })
        .collect()
}

/// Rows `[lo, lo + n)` of every step of time-major `x` (`width` values a row).
fn gather(x: &[f32], dims: SeqDims, lo: usize, n: usize, width: usize, steps: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(steps * n * width);
    for t in 0..steps {
        let start = (t * dims.batch + lo) * width;
        out.extend_from_slice(&x[start..start + n * width]);
    }
    out
}

/// Time-major `[steps * batch, width]` from the parts' rows (`(first
/// sequence, sequences, rows [steps * sequences, width])` each), copied by
/// all threads, a run of steps each.
fn scatter_all<'a>(
    parts: impl Iterator<Item = (usize, usize, &'a [f32])>,
    dims: SeqDims,
    width: usize,
) -> Vec<f32> {
    let parts: Vec<(usize, usize, &[f32])> = parts.collect();
    let len = dims.rows() * width;
    let mut covered = 0;
    for &(lo, n, part) in &parts {
        assert_eq!(lo, covered, "parts are consecutive sequence ranges");
        assert!(part.len() >= dims.steps * n * width, "part size");
        covered += n;
    }
    assert_eq!(covered, dims.batch, "the parts cover the batch");
    // written once, by the copies below: not zeroed first
    let mut x: Vec<f32> = Vec::with_capacity(len);
    let step = dims.batch * width;
    let per = dims.steps.div_ceil(threads().max(1)).max(1);
    let mut runs: Vec<(usize, &mut [std::mem::MaybeUninit<f32>])> = x.spare_capacity_mut()[..len]
        .chunks_mut(per * step)
        .enumerate()
        .collect();
    parallel_for_each_mut(&mut runs, |(r, run)| {
        for (k, out) in run.chunks_exact_mut(step).enumerate() {
            let t = *r * per + k;
            for &(lo, n, part) in &parts {
                out[lo * width..(lo + n) * width]
                    .write_copy_of_slice(&part[t * n * width..(t + 1) * n * width]);
            }
        }
    });
    // SAFETY: every element was written: the parts are consecutive,
    // disjoint sequence ranges covering the batch (checked above).
    unsafe { x.set_len(len) };
    x
}

/// Caches of a forward pass split over threads.
#[derive(Debug, Clone, Default)]
pub struct SplitCache {
    /// `(first sequence, sequences, cache)` of every part.
    pub parts: Vec<(usize, usize, SeqCache)>,
}

/// [`forward`] with the batch split over up to [`threads`] threads (each
/// sequence is independent of the others). Returns the outputs `[rows, H]`
/// and the final cell state `[batch, H]`.
pub fn forward_split(
    dims: SeqDims,
    p: Vec<f32>,
    wh: &[f32],
    h0: &[f32],
    c0: &[f32],
    cache: &mut SplitCache,
) -> (Vec<f32>, Vec<f32>) {
    let parts = split_batch(dims.batch, if dims.batch >= 16 { threads() } else { 1 });
    if parts.len() == 1 {
        let mut c = SeqCache::default();
        let c_last = forward(dims, p, wh, h0, c0, &mut c);
        let hs = c.hs.clone();
        cache.parts = vec![(0, dims.batch, c)];
        return (hs, c_last);
    }
    let (g4, hd) = (dims.gates(), dims.hidden);
    // one packed copy for all threads (two copies of a 4 MiB `wh` would fill the L3 cache)
    let packed = PackedB::new(wh, hd, g4, false);
    let results: Vec<(usize, usize, SeqCache, Vec<f32>)> = parallel_map(&parts, |&(lo, n)| {
        let pk = gather(&p, dims, lo, n, g4, dims.steps);
        let h0k = &h0[lo * hd..(lo + n) * hd];
        let c0k = &c0[lo * hd..(lo + n) * hd];
        let d = SeqDims {
            steps: dims.steps,
            batch: n,
            hidden: hd,
        };
        let mut c = SeqCache::default();
        let last = forward_packed(d, pk, wh, packed.as_ref(), h0k, c0k, &mut c);
        (lo, n, c, last)
    });
    let hs = scatter_all(
        results.iter().map(|(lo, n, c, _)| (*lo, *n, &c.hs[..])),
        dims,
        hd,
    );
    let mut c_last = vec![0.0f32; dims.batch * hd];
    cache.parts.clear();
    for (lo, n, c, last) in results {
        c_last[lo * hd..(lo + n) * hd].copy_from_slice(&last);
        cache.parts.push((lo, n, c));
    }
    (hs, c_last)
}

/// [`backward`] of a [`forward_split`] pass, on the same split.
pub fn backward_split(
    dims: SeqDims,
    cache: &SplitCache,
    wh: &[f32],
    h0: &[f32],
    c0: &[f32],
    dhs: &[f32],
    dc_last: &[f32],
) -> SeqGrads {
    if cache.parts.len() == 1 {
        return backward(dims, &cache.parts[0].2, wh, h0, c0, dhs, dc_last);
    }
    let (g4, hd) = (dims.gates(), dims.hidden);
    let packed_t = PackedB::new(wh, g4, hd, true);
    let results: Vec<(usize, usize, SeqGrads)> = parallel_map(&cache.parts, |(lo, n, c)| {
        let (lo, n) = (*lo, *n);
        let dh = gather(dhs, dims, lo, n, hd, dims.steps);
        let dc = &dc_last[lo * hd..(lo + n) * hd];
        let d = SeqDims {
            steps: dims.steps,
            batch: n,
            hidden: hd,
        };
        (
            lo,
            n,
            backward_packed(
                d,
                c,
                wh,
                packed_t.as_ref(),
                &h0[lo * hd..(lo + n) * hd],
                &c0[lo * hd..(lo + n) * hd],
                &dh,
                dc,
            ),
        )
    });
    let mut out = SeqGrads {
        dp: scatter_all(
            results.iter().map(|(lo, n, g)| (*lo, *n, &g.dp[..])),
            dims,
            g4,
        ),
        dwh: vec![0.0; hd * g4],
        dh0: vec![0.0; dims.batch * hd],
        dc0: vec![0.0; dims.batch * hd],
    };
    for (lo, n, g) in results {
        for (a, b) in out.dwh.iter_mut().zip(&g.dwh) {
            *a += b;
        }
        out.dh0[lo * hd..(lo + n) * hd].copy_from_slice(&g.dh0);
        out.dc0[lo * hd..(lo + n) * hd].copy_from_slice(&g.dc0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the tests that change the thread count.
    static THREAD_COUNT: Mutex<()> = Mutex::new(());

    #[test]
    fn fast_math_is_accurate() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut worst_sig = 0.0f64;
        for k in -20000..=20000 {
            let x = k as f32 / 1000.0;
            let e = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64 - e) / e).abs());
            worst_tanh = worst_tanh.max((tanh(x) as f64 - (x as f64).tanh()).abs());
            worst_sig = worst_sig.max((sigmoid(x) as f64 - 1.0 / (1.0 + (-x as f64).exp())).abs());
        }
        assert!(worst_exp < 3e-7, "exp {worst_exp}");
        assert!(worst_tanh < 5e-7, "tanh {worst_tanh}");
        assert!(worst_sig < 3e-7, "sigmoid {worst_sig}");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
    }

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

    #[test]
    fn blocked_kernel_matches_a_naive_product() {
        let (m, n, k) = (8, 32, 7);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let c0: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
        for (a_t, accumulate) in [(false, false), (false, true), (true, true)] {
            // a as stored: [m, k], or [k, m] when transposed
            let stored: Vec<f32> = if a_t {
                (0..k * m).map(|x| a[(x % m) * k + x / m]).collect()
            } else {
                a.clone()
            };
            let mut c = c0.clone();
            matmul(&mut c, &stored, &b, m, n, k, a_t, false, accumulate);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>()
                        + if accumulate { c0[i * n + j] } else { 0.0 };
                    assert!(
                        (c[i * n + j] - want).abs() < 1e-4,
                        "({i},{j}) {a_t} {accumulate}"
                    );
                }
            }
        }
    }

    /// The packed kernel against a naive product: row counts that are and
    /// are not multiples of 4, depths across the packing's k-chunks, both
    /// storage orders of the operand, accumulating or not.
    #[test]
    fn packed_kernel_matches_a_naive_product() {
        // the last operand is large enough to be packed on all threads
        let _threads = THREAD_COUNT.lock().unwrap_or_else(|e| e.into_inner());
        set_threads(2);
        for (m, n, k) in [
            (4, 16, 3),
            (7, 32, 300),
            (1, 48, 600),
            (12, 16, 256),
            (5, 512, 520),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 30.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 40.0)
                .collect();
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
            for (b_t, accumulate) in [(false, false), (false, true), (true, true)] {
                let Some(packed) = PackedB::new(if b_t { &bt } else { &b }, k, n, b_t) else {
                    return; // no AVX2+FMA here: nothing to compare
                };
                let mut c = c0.clone();
                packed.matmul(&mut c, &a, m, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>()
                            + if accumulate { c0[i * n + j] } else { 0.0 };
                        assert!(
                            (c[i * n + j] - want).abs() < 1e-4,
                            "{m}x{n}x{k} ({i},{j}) {b_t} {accumulate}: {} vs {want}",
                            c[i * n + j]
                        );
                    }
                }
            }
        }
        set_threads(1);
        assert!(
            PackedB::new(&[0.0; 24], 2, 12, false).is_none(),
            "12 columns: not packable"
        );
    }

    /// The classifier split over threads (600 rows: two blocks of 300)
    /// gives what one block gives.
    #[test]
    fn linear_xent_split_over_threads_equals_one_block() {
        let (n, d, v) = (600, 24, 27);
        let h: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0)
            .collect();
        let w: Vec<f32> = (0..d * v)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 9.0)
            .collect();
        let b: Vec<f32> = (0..v).map(|i| i as f32 / 30.0).collect();
        let labels: Vec<i64> = (0..n).map(|i| (i * 11 % v) as i64).collect();
        let run = |threads: usize| {
            let _guard = THREAD_COUNT.lock().unwrap_or_else(|e| e.into_inner());
            set_threads(threads);
            let (loss, probs) = linear_xent(&h, &w, &b, &labels, n, d, v);
            let g = linear_xent_backward(&h, &w, probs.clone(), &labels, n, d, v, 0.7);
            set_threads(1);
            (loss, probs, g)
        };
        let (l1, p1, (dh1, dw1, db1)) = run(1);
        let (l2, p2, (dh2, dw2, db2)) = run(2);
        assert!((l1 - l2).abs() < 1e-9, "loss {l1} vs {l2}");
        for (what, a, b) in [
            ("probs", &p1, &p2),
            ("dh", &dh1, &dh2),
            ("dw", &dw1, &dw2),
            ("db", &db1, &db2),
        ] {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                assert!((x - y).abs() < 1e-5, "{what}[{i}]: {x} vs {y}");
            }
        }
    }

    #[test]
    fn linear_xent_gradients_match_finite_differences() {
        let (n, d, v) = (3, 4, 5);
        let h: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..d * v)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 9.0)
            .collect();
        let b: Vec<f32> = (0..v).map(|i| i as f32 / 10.0).collect();
        let labels = [1i64, 4, 0];
        let (loss, probs) = linear_xent(&h, &w, &b, &labels, n, d, v);
        assert!(loss > 0.0);
        let (dh, dw, db) = linear_xent_backward(&h, &w, probs, &labels, n, d, v, 1.0);
        let eps = 1e-2f32;
        let f = |h: &[f32], w: &[f32], b: &[f32]| linear_xent(h, w, b, &labels, n, d, v).0;
        for (x, g, which) in [(&h, &dh, 0), (&w, &dw, 1), (&b, &db, 2)] {
            for k in 0..x.len() {
                let (mut p, mut m) = (x.to_vec(), x.to_vec());
                p[k] += eps;
                m[k] -= eps;
                let num = match which {
                    0 => (f(&p, &w, &b) - f(&m, &w, &b)) / (2.0 * eps as f64),
                    1 => (f(&h, &p, &b) - f(&h, &m, &b)) / (2.0 * eps as f64),
                    _ => (f(&h, &w, &p) - f(&h, &w, &m)) / (2.0 * eps as f64),
                };
                assert!(
                    (num - g[k] as f64).abs() < 1e-3,
                    "operand {which}[{k}]: {num} vs {}",
                    g[k]
                );
            }
        }
    }

    /// Far-off logits give the exact (huge) loss, not a clamped one, and
    /// overflowed ones give NaN, so a diverging run is seen as diverging.
    #[test]
    fn linear_xent_is_exact_for_large_logits_and_nan_on_overflow() {
        // logits [1e30, 0]: the loss of label 1 is 1e30
        let (loss, _) = linear_xent(&[1.0], &[1e30, 0.0], &[0.0, 0.0], &[1], 1, 1, 2);
        assert!((loss / 1e30 - 1.0).abs() < 1e-6, "{loss}");
        let (loss, _) = linear_xent(&[1.0], &[f32::INFINITY, 0.0], &[0.0, 0.0], &[1], 1, 1, 2);
        assert!(loss.is_nan(), "{loss}");
        // an ordinary case: logits [0, 0] give ln 2
        let (loss, _) = linear_xent(&[1.0], &[0.0, 0.0], &[0.0, 0.0], &[0], 1, 1, 2);
        assert!((loss - std::f64::consts::LN_2).abs() < 1e-9, "{loss}");
    }

    /// Splitting the batch over threads changes nothing but rounding: with
    /// unpacked weights (12 gate columns), with weights packed once for all
    /// threads (16 columns, parts of 8) and with packed weights that some
    /// parts cannot use (parts of 6 and 7 rows: not the kernel's fours).
    #[test]
    fn split_passes_equal_the_single_pass() {
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((x - y).abs() < 1e-5, "{what}[{i}]: {x} vs {y}");
            }
        };
        for (batch, hidden) in [(20, 3), (24, 4), (20, 4)] {
            let dims = SeqDims {
                steps: 4,
                batch,
                hidden,
            };
            let n = |k: usize, m: usize| -> Vec<f32> {
                (0..k)
                    .map(|i| (((i * m) % 17) as f32 - 8.0) / 10.0)
                    .collect()
            };
            let (rows, g4) = (dims.rows(), dims.gates());
            let (p, wh) = (n(rows * g4, 7), n(hidden * g4, 5));
            let (h0, c0) = (n(batch * hidden, 3), n(batch * hidden, 11));
            let (dh, dc) = (n(rows * hidden, 13), n(batch * hidden, 2));
            let mut one = SeqCache::default();
            let c1 = forward(dims, p.clone(), &wh, &h0, &c0, &mut one);
            let g1 = backward(dims, &one, &wh, &h0, &c0, &dh, &dc);
            let threads = THREAD_COUNT.lock().unwrap_or_else(|e| e.into_inner());
            set_threads(3);
            let mut split = SplitCache::default();
            let (hs, c2) = forward_split(dims, p, &wh, &h0, &c0, &mut split);
            let g2 = backward_split(dims, &split, &wh, &h0, &c0, &dh, &dc);
            set_threads(1);
            drop(threads);
            assert_eq!(split.parts.len(), 3);
            close(&hs, &one.hs, "outputs");
            close(&c1, &c2, "final cell");
            close(&g1.dp, &g2.dp, "dp");
            close(&g1.dh0, &g2.dh0, "dh0");
            close(&g1.dc0, &g2.dc0, "dc0");
            close(&g1.dwh, &g2.dwh, "dwh");
        }
    }

    #[test]
    fn matmul_handles_transposes() {
        // a = [[1,2,3],[4,5,6]] (2x3), b = [[1,0],[0,1],[1,1]] (3x2): a b = [[4,5],[10,11]]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut c = [0.0f32; 4];
        matmul(&mut c, &a, &b, 2, 2, 3, false, false, false);
        assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
        let at = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let bt = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        matmul(&mut c, &at, &bt, 2, 2, 3, true, true, true);
        assert_eq!(c, [8.0, 10.0, 20.0, 22.0]);
    }

    /// Finite differences of a scalar function of every input.
    #[test]
    fn backward_matches_finite_differences() {
        let dims = SeqDims {
            steps: 3,
            batch: 2,
            hidden: 3,
        };
        let mut seed = 1u32;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let p = rnd(dims.rows() * 12);
        let wh = rnd(3 * 12);
        let h0 = rnd(6);
        let c0 = rnd(6);
        let wy = rnd(dims.rows() * 3);
        let wc = rnd(6);
        // loss = sum(wy * hs) + sum(wc * c_last), in f64 for the differences
        let loss = |p: &[f32], wh: &[f32], h0: &[f32], c0: &[f32]| -> f64 {
            let mut cache = SeqCache::default();
            let c_last = forward(dims, p.to_vec(), wh, h0, c0, &mut cache);
            cache
                .hs
                .iter()
                .zip(&wy)
                .map(|(a, b)| (a * b) as f64)
                .sum::<f64>()
                + c_last
                    .iter()
                    .zip(&wc)
                    .map(|(a, b)| (a * b) as f64)
                    .sum::<f64>()
        };
        let mut cache = SeqCache::default();
        forward(dims, p.clone(), &wh, &h0, &c0, &mut cache);
        let g = backward(dims, &cache, &wh, &h0, &c0, &wy, &wc);
        let eps = 1e-2f32;
        let check = |name: &str, x: &[f32], grad: &[f32], f: &dyn Fn(&[f32]) -> f64| {
            for k in 0..x.len() {
                let mut plus = x.to_vec();
                plus[k] += eps;
                let mut minus = x.to_vec();
                minus[k] -= eps;
                let num = (f(&plus) - f(&minus)) / (2.0 * eps as f64);
                assert!(
                    (num - grad[k] as f64).abs() < 2e-3,
                    "{name}[{k}]: numeric {num} vs {}",
                    grad[k]
                );
            }
        };
        check("p", &p, &g.dp, &|x| loss(x, &wh, &h0, &c0));
        check("wh", &wh, &g.dwh, &|x| loss(&p, x, &h0, &c0));
        check("h0", &h0, &g.dh0, &|x| loss(&p, &wh, x, &c0));
        check("c0", &c0, &g.dc0, &|x| loss(&p, &wh, &h0, x));
    }
}
