//! Matrix products for the LSTM kernels: register-blocked kernels for
//! AVX-512 (6 rows x 64 columns in 24 registers) and AVX2+FMA (6 rows x 16
//! columns in 12 registers) that read the right operand in place or from a
//! packed copy ([`PackedB`]), and the `gemm` crate (the one Burn's flex
//! backend uses, built with its AVX-512 kernels) for every other shape and CPU.

#[cfg(target_arch = "x86_64")]
use super::cpu::{Isa, isa};
use super::lines::Lines;
use super::pool::{parallel_for_each_mut, written_row_blocks};
#[cfg(target_arch = "x86_64")]
use super::prefetch::{self, Prefetch};
use std::mem::MaybeUninit;

/// `c (+)= a · b` for row-major matrices: `a` is `[m, k]` (or `[k, m]` when
/// `a_t`), `b` is `[k, n]` (or `[n, k]` when `b_t`), `c` is `[m, n]`.
///
/// Shapes whose rows come in fours and columns in sixteens, with `b` not
/// transposed (every product of the LSTM kernels), go to a register-blocked
/// kernel (AVX-512 or AVX2+FMA, as [`isa`] says) that reads `b` in place; anything else to the
/// `gemm` crate.
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
    check_operands(c.len(), a, b, (m, n, k));
    // SAFETY: `c` holds `m x n` initialized values (checked above)
    unsafe { matmul_raw(c.as_mut_ptr(), a, b, (m, n, k), (a_t, b_t, accumulate)) }
}

/// [`matmul`] not accumulating, into `c` as yet unwritten (a block of a
/// buffer's spare capacity): returns `c`, every value written.
///
/// # Panics
/// Unless `c` holds exactly `m x n` values and `a`, `b` their operands.
#[allow(clippy::too_many_arguments)]
pub fn matmul_uninit<'c>(
    c: &'c mut [MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
) -> &'c mut [f32] {
    assert_eq!(c.len(), elems(m, n), "matmul result size");
    check_operands(c.len(), a, b, (m, n, k));
    // SAFETY: `c` has room for `m x n` values (checked above); not
    // accumulating, every path writes each of them and reads none
    unsafe { matmul_raw(c.as_mut_ptr().cast(), a, b, (m, n, k), (a_t, b_t, false)) };
    // SAFETY: written just above
    unsafe { c.assume_init_mut() }
}

/// [`matmul`] into `c` as a pointer.
///
/// # Safety
/// `c` is valid for writes of `m x n` values (and reads, initialized, when
/// accumulating); `a` and `b` hold their operands.
unsafe fn matmul_raw(
    c: *mut f32,
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    (a_t, b_t, accumulate): (bool, bool, bool),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: `c` has room for the `m x n` values (the caller's promise)
            unsafe { std::ptr::write_bytes(c, 0, m * n) };
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if !b_t
        && blocked_rows(m)
        && n.is_multiple_of(16)
        && n * k <= BLOCKED_MAX_B
        && let Some(kernel) = blocked_kernel()
    {
        let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
        // SAFETY: the kernel is one this CPU runs; the sizes are the
        // caller's and every index the kernel forms stays inside them; not
        // accumulating, it writes each value of `c` before it reads any.
        unsafe {
            kernel(
                m,
                n,
                k,
                a.as_ptr(),
                a_rs,
                a_cs,
                b.as_ptr(),
                n,
                16,
                c,
                n,
                accumulate,
                Prefetch::NONE,
            )
        };
        return;
    }
    // SAFETY: the caller's promise
    unsafe {
        gemm_crate_raw(
            c,
            a,
            b,
            (m, n, k),
            (a_t, b_t, accumulate),
            gemm::Parallelism::None,
        )
    };
}

/// `c (+)= a · b` by the `gemm` crate, as [`matmul`] (sizes checked there).
fn gemm_crate(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: (usize, usize, usize),
    transposes_accumulate: (bool, bool, bool),
    parallelism: gemm::Parallelism,
) {
    // SAFETY: `c` holds `m x n` initialized values (checked by the callers)
    unsafe {
        gemm_crate_raw(
            c.as_mut_ptr(),
            a,
            b,
            dims,
            transposes_accumulate,
            parallelism,
        )
    }
}

/// [`gemm_crate`] into `c` as a pointer: not accumulating, the crate
/// writes every value of `c` without reading any (its `read_dst = false`
/// zeroes `alpha`, and every path stores `beta * a b`; in 0.19, whose
/// `experimental-apple-amx` kernel, off here, would copy `c` first), so `c`
/// may be a buffer's spare capacity.
///
/// # Safety
/// `c` is valid for writes of `m x n` values (and reads, initialized, when
/// accumulating); `a` and `b` hold their operands (as in [`matmul`]).
unsafe fn gemm_crate_raw(
    c: *mut f32,
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    (a_t, b_t, accumulate): (bool, bool, bool),
    parallelism: gemm::Parallelism,
) {
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
    // SAFETY: the caller's promise; strides describe the row-major layouts.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
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
            parallelism,
        );
    }
}

/// `a^T · b` `[m, n]` for `a` `[k, m]`, `b` `[k, n]` by the `gemm` crate
/// on the kernel pool's threads (which split the result, so every value
/// is summed on one thread, in the same order whatever their count): a
/// weight gradient over many rows, whose one call would otherwise leave
/// the other threads idle.
pub fn matmul_at_threaded(a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    // SAFETY: the product writes every value of its one block, all `m` rows
    unsafe {
        written_row_blocks(m, n, m, 0, |_, c| {
            matmul_at_threaded_into(c, a, b, (m, n, k));
        })
    }
}

/// [`matmul_at_threaded`] into `c` as yet unwritten (exactly `m x n`
/// values): returns `c`, every value written.
pub fn matmul_at_threaded_into<'c>(
    c: &'c mut [MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    dims: (usize, usize, usize),
) -> &'c mut [f32] {
    product_threaded_into(c, a, b, dims, (true, false))
}

/// `c (+)= a · b` (`a` `[m, k]`; `b` `[k, n]`, or `[n, k]` when `b_t`) by
/// the `gemm` crate on the kernel pool's threads, as
/// [`matmul_at_threaded`]: a product over many rows by weights too large
/// for the blocked kernels' cache-resident operands.
pub fn matmul_threaded(
    c: &mut [f32],
    a: &[f32],
    (b, b_t): (&[f32], bool),
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    check_operands(c.len(), a, b, (m, n, k));
    on_threads(|parallelism| gemm_crate(c, a, b, (m, n, k), (false, b_t, accumulate), parallelism));
}

/// [`matmul_threaded`] into a new vector `[m, n]`, each value written once
/// (a zeroed one first is a `memset` of all of them).
pub fn matmul_threaded_new(
    a: &[f32],
    (b, b_t): (&[f32], bool),
    (m, n, k): (usize, usize, usize),
) -> Vec<f32> {
    // SAFETY: the product writes every value of its one block, all `m` rows
    unsafe {
        written_row_blocks(m, n, m, 0, |_, c| {
            product_threaded_into(c, a, b, (m, n, k), (false, b_t));
        })
    }
}

/// `a · b` (either transposed, as [`matmul`]) into `c` as yet unwritten
/// (exactly `m x n` values) by the `gemm` crate on the kernel pool's
/// threads: returns `c`, every value written.
fn product_threaded_into<'c>(
    c: &'c mut [MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    (a_t, b_t): (bool, bool),
) -> &'c mut [f32] {
    assert_eq!(c.len(), elems(m, n), "matmul result size");
    check_operands(c.len(), a, b, (m, n, k));
    if k == 0 {
        c.fill(MaybeUninit::new(0.0));
    } else if !c.is_empty() {
        on_threads(|parallelism| {
            // SAFETY: `c` has room for `m x n` values; not accumulating,
            // the crate (0.19, without its `experimental-apple-amx`
            // feature) writes each of them and reads none
            unsafe {
                gemm_crate_raw(
                    c.as_mut_ptr().cast(),
                    a,
                    b,
                    (m, n, k),
                    (a_t, b_t, false),
                    parallelism,
                )
            }
        });
    }
    // SAFETY: written above, by the fill or the product
    unsafe { c.assume_init_mut() }
}

/// `product(parallelism)` on the kernel pool, split over its threads.
fn on_threads(product: impl FnOnce(gemm::Parallelism) + Send) {
    let threads = super::pool::threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    super::pool::on_pool(|| product(parallelism));
}

/// # Panics
/// Unless `c` (of `c_len` values), `a` and `b` hold `[m, n]`, `[m, k]` and
/// `[k, n]` (in either order of their axes): the check that guards the
/// unsafe products.
fn check_operands(c_len: usize, a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize)) {
    assert!(
        c_len >= elems(m, n) && a.len() >= elems(m, k) && b.len() >= elems(k, n),
        "matmul operand sizes"
    );
}

/// `a * b` elements, for the size checks that guard unsafe code: a product
/// that overflows is a caller's bug, never a wrapped (small) bound.
pub(super) fn elems(a: usize, b: usize) -> usize {
    a.checked_mul(b).expect("matrix size overflows usize")
}

/// Largest right operand (elements) the blocked kernel takes: it reads `b` in
/// place, without packing, which pays only while `b` stays in cache.
pub const BLOCKED_MAX_B: usize = 64 * 1024;

/// A right operand packed once for many products with different left
/// operands (the recurrent weights, used at every time step): strips of 16
/// columns, each `[k, 16]` contiguous, so that the blocked kernel streams it
/// through the cache instead of striding across rows of a large matrix.
///
/// **Invariant:** a `PackedB` exists only where a blocked kernel (AVX-512 or AVX2+FMA) does:
/// its only constructor, [`PackedB::new`], returns `None` elsewhere, and
/// [`PackedB::matmul`] calls that kernel without further checks. Its
/// `data` holds `n / 16` strips of `k * 16` values (`n` a multiple of 16).
#[derive(Debug, Clone)]
pub struct PackedB {
    data: Lines<f32>,
    k: usize,
    n: usize,
}

/// Rows of a packed strip one pass of the blocked kernel covers, chosen so
/// that the strips one row block reads stay in the L1 cache (48 KiB here)
/// while every row block reads them: the AVX2 kernel's one strip of 256
/// rows is 16 KiB, the AVX-512 kernel's four strips of 128 rows 32 KiB.
fn packed_kc() -> usize {
    match isa() {
        Isa::Avx512 | Isa::Avx512Amx => 128,
        _ => 256,
    }
}

/// Columns of a panel of a packed product in several passes over the
/// depth (either blocked kernel): four strips of 16, one block of the
/// AVX-512 kernel's columns; its block of `c`, `m x 64` values (16 KiB at
/// the 64 rows of a batch), stays in L1 from pass to pass.
const PANEL: usize = 64;
// panels start on a strip: the packed operand's offsets count in strips
const _: () = assert!(PANEL.is_multiple_of(16));

/// Packed operands from this many elements up (1 MiB) are fetched into L2
/// a pass ahead of the kernel (`prefetch`); smaller ones stay there from
/// one product to the next.
#[cfg(target_arch = "x86_64")]
const PREFETCH_FROM: usize = 1 << 18;

/// Operands from this many elements up are packed by all threads.
const PARALLEL_PACK: usize = 1 << 18;

impl PackedB {
    /// Packs `b` (`[k, n]` row-major, or `[n, k]` when `b_t`), or returns
    /// `None` where the blocked kernel does not apply (no AVX2+FMA, or `n`
    /// not a multiple of 16): callers then use [`matmul`].
    pub fn new(b: &[f32], k: usize, n: usize, b_t: bool) -> Option<Self> {
        assert!(b.len() >= elems(k, n), "packed operand size");
        #[cfg(target_arch = "x86_64")]
        if n.is_multiple_of(16) && n > 0 && k > 0 && blocked_kernel().is_some() {
            // SAFETY: the strips are every value of the operand
            let data =
                unsafe { Lines::written(k * n, |strips| pack_strips(b, (k, n), b_t, strips)) };
            return Some(PackedB { data, k, n });
        }
        None
    }

    /// The operand's `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `c (+)= a · B` for `a` `[m, k]` row-major and `c` `[m, n]`.
    pub fn matmul(&self, c: &mut [f32], a: &[f32], m: usize, accumulate: bool) {
        let (k, n) = (self.k, self.n);
        assert!(
            c.len() >= elems(m, n) && a.len() >= elems(m, k),
            "matmul operand sizes"
        );
        let m4 = blocked_prefix(m);
        // SAFETY: c holds m x n values (checked above), m4 <= m of them rows
        unsafe { self.rows_in_fours(c.as_mut_ptr(), a, m4, accumulate) };
        for i in m4..m {
            for (s, strip) in self.data.as_slice().chunks_exact(16 * k).enumerate() {
                let out = &mut c[i * n + s * 16..i * n + s * 16 + 16];
                if !accumulate {
                    out.fill(0.0);
                }
                for p in 0..k {
                    let x = a[i * k + p];
                    for (o, w) in out.iter_mut().zip(&strip[p * 16..p * 16 + 16]) {
                        *o += x * w;
                    }
                }
            }
        }
    }

    /// `c = a · B` for `m` rows in fours (the blocked kernel's), into `c`
    /// (exactly `m x n` values), initialized or not (a buffer's spare capacity).
    ///
    /// # Panics
    /// On `m` not a multiple of 4, or operands of other sizes.
    pub fn matmul_uninit(&self, c: &mut [MaybeUninit<f32>], a: &[f32], m: usize) {
        // exactly m x n: the caller counts all of `c` as written
        assert!(
            blocked_rows(m) && c.len() == elems(m, self.n) && a.len() >= elems(m, self.k),
            "matmul operand sizes"
        );
        // SAFETY: c holds m x n values (checked above); not accumulating,
        // the kernel writes each before it reads any
        unsafe { self.rows_in_fours(c.as_mut_ptr().cast(), a, m, false) };
    }

    /// `c (+)= a · B` for rows `0..m4` (a multiple of 4) on the blocked
    /// kernel, in passes over the depth ([`packed_kc`]; their order is
    /// [`PackedB::passes`]): the first pass stores every value (adding it
    /// to `c`'s when `accumulate`), the later ones add to what it stored.
    /// From [`PREFETCH_FROM`] values up, each pass fetches the next one's
    /// block into L2 (`prefetch`).
    ///
    /// # Safety
    /// `c` is valid for reads and writes of `m4 x n` values, initialized
    /// unless not `accumulate`; `a` holds `m4 x k`.
    unsafe fn rows_in_fours(&self, c: *mut f32, a: &[f32], m4: usize, accumulate: bool) {
        let (k, n) = (self.k, self.n);
        debug_assert!(blocked_rows(m4) && a.len() >= elems(m4, k));
        if m4 == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let kernel =
                blocked_kernel().expect("a PackedB exists only where a blocked kernel does");
            let mut passes = self.passes(packed_kc()).peekable();
            while let Some(pass) = passes.next() {
                let next = self.prefetch(passes.peek().copied());
                // SAFETY: the kernel is one this CPU runs; rows 0..m4 by
                // the pass's columns j0..j0+nc (strips of 16 columns, 16 *
                // k apart: nc and j0 are multiples of 16) and depths
                // k0..k0+kc lie inside a, the strips and c (the caller's
                // promise); a pass reads c only after the first wrote it,
                // or where the caller says it is initialized.
                unsafe {
                    kernel(
                        m4,
                        pass.nc,
                        pass.kc,
                        a.as_ptr().add(pass.k0),
                        k,
                        1,
                        self.data.as_slice().as_ptr().add(self.block_offset(pass)),
                        16,
                        16 * k,
                        c.add(pass.j0),
                        n,
                        accumulate || pass.k0 > 0,
                        next,
                    )
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("packed operands are made only on x86_64");
    }

    /// The kernel calls of a product, in the order they run, each `depth`
    /// deep at most. With more than one pass over the depth: panels of
    /// [`PANEL`] columns, each finished over all its passes before the
    /// next, so that its block of `c` stays in L1 between passes (all of
    /// `c` passed through L2 once a pass, and the next operand's strips
    /// with it).
    #[cfg(target_arch = "x86_64")]
    fn passes(&self, depth: usize) -> impl Iterator<Item = Pass> + use<> {
        let (k, n) = (self.k, self.n);
        let panel = if k > depth { PANEL } else { n };
        (0..n).step_by(panel).flat_map(move |j0| {
            (0..k).step_by(depth).map(move |k0| Pass {
                j0,
                nc: panel.min(n - j0),
                k0,
                kc: depth.min(k - k0),
            })
        })
    }

    /// Where a pass's block starts in `data`: row `k0` of strip `j0 / 16`.
    #[cfg(target_arch = "x86_64")]
    fn block_offset(&self, pass: Pass) -> usize {
        pass.j0 * self.k + pass.k0 * 16
    }

    /// What a pass fetches for the `next` one: its block, where the
    /// operand is past [`PREFETCH_FROM`].
    #[cfg(target_arch = "x86_64")]
    fn prefetch(&self, next: Option<Pass>) -> Prefetch<f32> {
        match next {
            Some(pass) if self.data.as_slice().len() >= PREFETCH_FROM => Prefetch {
                b: self
                    .data
                    .as_slice()
                    .as_ptr()
                    .wrapping_add(self.block_offset(pass)),
                rows: pass.kc,
                strips: pass.nc / 16,
                b_strip: 16 * self.k,
            },
            _ => Prefetch::NONE,
        }
    }
}

/// One kernel call of a packed product: columns `j0..j0 + nc` (whole
/// strips) by depths `k0..k0 + kc`.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    j0: usize,
    nc: usize,
    k0: usize,
    kc: usize,
}

/// `b` (`[k, n]` row-major, or `[n, k]` when `b_t`) into `strips`: `n / 16`
/// strips of `[k, 16]`, each contiguous (the layout of [`PackedB`], and of
/// [`PackedHalf`](super::half::PackedHalf) in pairs), every value of
/// `strips` written; operands from [`PARALLEL_PACK`] values up on every
/// thread (`large`'s 4 MiB).
///
/// # Panics
/// Unless `n` is a multiple of 16, `b` holds `k x n` values and `strips`
/// exactly as many.
pub(super) fn pack_strips<T: Copy + Send + Sync>(
    b: &[T],
    (k, n): (usize, usize),
    b_t: bool,
    strips: &mut [MaybeUninit<T>],
) {
    let len = elems(k, n);
    assert!(
        n.is_multiple_of(16) && b.len() >= len && strips.len() == len,
        "packed operand sizes"
    );
    if len == 0 {
        return;
    }
    let pack = |(s, strip): &mut (usize, &mut [MaybeUninit<T>])| {
        let j0 = *s * 16;
        if b_t {
            // the strip's 16 rows of `b`, read along in tiles of 16 x 16:
            // a row at a time across the 16 would read 16 lines `k` apart,
            // which share a set of the L1 cache when `k` is a power of two
            // (`large`'s 2048)
            for p0 in (0..k).step_by(16) {
                let depth = 16.min(k - p0);
                for q in 0..16 {
                    let src = &b[(j0 + q) * k + p0..][..depth];
                    for (dp, x) in src.iter().enumerate() {
                        strip[(p0 + dp) * 16 + q].write(*x);
                    }
                }
            }
        } else {
            for (p, row) in strip.chunks_exact_mut(16).enumerate() {
                row.write_copy_of_slice(&b[p * n + j0..][..16]);
            }
        }
    };
    let mut parts: Vec<(usize, &mut [MaybeUninit<T>])> =
        strips.chunks_exact_mut(16 * k).enumerate().collect();
    if len >= PARALLEL_PACK {
        parallel_for_each_mut(&mut parts, pack);
    } else {
        parts.iter_mut().for_each(pack);
    }
}

/// `c (+)= a · b` for `a` `[m, k]` where `b` (`[k, n]`, or `[n, k]` when
/// `b_t`) may have been packed: the packed kernel when it was and the rows
/// come in fours (its row blocks), else [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_maybe_packed(
    c: &mut [f32],
    a: &[f32],
    (b, b_t): (&[f32], bool),
    packed: Option<&PackedB>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    match packed {
        Some(pb) if blocked_rows(m) => pb.matmul(c, a, m, accumulate),
        _ => matmul(c, a, b, m, n, k, false, b_t, accumulate),
    }
}

/// [`matmul_maybe_packed`] not accumulating, into `c` as yet unwritten (a
/// block of a buffer's spare capacity, [`written_row_blocks`]): returns
/// `c`, every value written.
///
/// # Panics
/// Unless `c` holds exactly `m x n` values.
#[allow(clippy::too_many_arguments)]
pub fn matmul_maybe_packed_uninit<'c>(
    c: &'c mut [MaybeUninit<f32>],
    a: &[f32],
    (b, b_t): (&[f32], bool),
    packed: Option<&PackedB>,
    m: usize,
    n: usize,
    k: usize,
) -> &'c mut [f32] {
    assert_eq!(c.len(), elems(m, n), "matmul result size");
    match packed {
        Some(pb) if blocked_rows(m) => {
            pb.matmul_uninit(c, a, m);
            // SAFETY: the product wrote every one of the `m x n` values
            unsafe { c.assume_init_mut() }
        }
        _ => matmul_uninit(c, a, b, m, n, k, false, b_t),
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
    check_operands(c.len(), a, b, (m, n, k));
    gemm_crate(
        c,
        a,
        b,
        (m, n, k),
        (a_t, false, accumulate),
        gemm::Parallelism::None,
    );
}

/// A register-blocked product kernel: `C (+)= A B` for `m % 4 == 0`,
/// `n % 16 == 0`, with the arguments of [`gemm_avx2`].
#[cfg(target_arch = "x86_64")]
type BlockedKernel = unsafe fn(
    usize,
    usize,
    usize,
    *const f32,
    usize,
    usize,
    *const f32,
    usize,
    usize,
    *mut f32,
    usize,
    bool,
    Prefetch<f32>,
);

/// The blocked kernel of the instruction set the kernels use ([`isa`]):
/// AVX-512 or AVX2+FMA; `None` on a CPU with neither.
#[cfg(target_arch = "x86_64")]
fn blocked_kernel() -> Option<BlockedKernel> {
    match isa() {
        Isa::Avx512 | Isa::Avx512Amx => Some(gemm_avx512),
        Isa::Avx2 => Some(gemm_avx2),
        Isa::Portable => None,
    }
}

/// Whether the blocked kernels take `m` rows whole: their row blocks are
/// of 6 and 4 rows (`row_blocks`), so any multiple of 4. The one test of
/// which product runs, for every caller that chooses between them.
pub fn blocked_rows(m: usize) -> bool {
    m.is_multiple_of(4)
}

/// The most rows of `m` that the blocked kernels take whole ([`blocked_rows`]):
/// the rest go one at a time.
pub fn blocked_prefix(m: usize) -> usize {
    m - m % 4
}

/// The row blocks `(first row, rows)` of the blocked kernels for `m` rows
/// (a multiple of 4): blocks of 6, then of 4 for the rest (`m = 6 q + 4 r`).
#[cfg(target_arch = "x86_64")]
fn row_blocks(m: usize) -> impl Iterator<Item = (usize, usize)> {
    // guards the kernels' indices: other counts would wrap `six` below
    assert!(blocked_rows(m), "rows in fours");
    let mut six = m / 6;
    while !(m - 6 * six).is_multiple_of(4) {
        six -= 1;
    }
    let fours = (m - 6 * six) / 4;
    (0..six)
        .map(|q| (6 * q, 6))
        .chain((0..fours).map(move |r| (6 * six + 4 * r, 4)))
}

/// The AVX-512 kernel's groups of strips: fours, then a two and a one for
/// what is left (three as two and one).
#[cfg(target_arch = "x86_64")]
fn strip_groups(strips: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut s = 0;
    std::iter::from_fn(move || {
        let take = match strips.checked_sub(s)? {
            0 => return None,
            1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        s += take;
        Some(s - take..s)
    })
}

/// Defines an AVX-512 register-blocked kernel with the arguments of
/// [`gemm_avx2`] (element type `$t` for `A` and `B`, `f32` for `C`): blocks
/// of 6 rows by 64 columns (four strips; then 32 or 16 for the last
/// columns), 24 accumulators, so that a step reads 4 vectors of `B` and
/// broadcasts 6 values of `A` for 24 multiply-adds (an 8 x 16 block needs 9
/// loads for 8 and is bound by the loads; 4 x 64 blocks, 8 loads for 16,
/// ran at 162 GFLOP/s where 6 x 64 runs at 200: 64 x 512 x 128 packed).
/// Rows past the last six go in blocks of 4: `m` (a multiple of 4) is
/// `6 q + 4 r`. `$load` reads the vector of `B`
/// at `$bp`, `$splat` broadcasts the element of `A` at `$ap`, `$fma` is
/// `$acc + $x * $w` lane by lane: the f32 kernel and the bf16 one
/// ([`gemm_bf16`]) share the blocking.
macro_rules! avx512_blocked_kernel {
    (
        $(#[$doc:meta])*
        $name:ident, $features:literal, $t:ty, $zero_b:expr,
        |$bp:ident| $load:expr, |$ap:ident| $splat:expr, |$acc:ident, $x:ident, $w:ident| $fma:expr
    ) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            a: *const $t,
            a_rs: usize,
            a_cs: usize,
            b: *const $t,
            ldb: usize,
            b_strip: usize,
            c: *mut f32,
            ldc: usize,
            accumulate: bool,
            next: Prefetch<$t>,
        ) {
            /// One block of `R` rows by `S` strips of 16 columns, fetching
            /// the first `head.1` lines from `head.0` into L2, one a step of
            /// the depth ([`prefetch::Fetch::head`]).
            ///
            /// # Safety
            /// The kernel's features; `R` rows of `A` from `a`, `k` rows of `S`
            /// strips of `B` from `b` and `R` rows of `S * 16` columns of `C`
            /// from `c` lie inside the operands. (A prefetch of any address is
            /// safe: it never faults.)
            #[inline]
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn block<const R: usize, const S: usize>(
                k: usize,
                a: *const $t,
                (a_rs, a_cs): (usize, usize),
                b: *const $t,
                (ldb, b_strip): (usize, usize),
                c: *mut f32,
                ldc: usize,
                accumulate: bool,
                head: (*const $t, usize),
            ) {
                use std::arch::x86_64::*;
                // SAFETY (whole block): indices stay inside the operands as documented.
                unsafe {
                    let mut acc = [[_mm512_setzero_ps(); S]; R];
                    if accumulate {
                        for (r, row) in acc.iter_mut().enumerate() {
                            for (q, v) in row.iter_mut().enumerate() {
                                *v = _mm512_loadu_ps(c.add(r * ldc + 16 * q));
                            }
                        }
                    }
                    // one step of the depth at `ap` (row 0 of A) and `bp`
                    // (strip 0 of B), the pointers moved along, not indexed;
                    // after the last step they may point past the operands
                    // (a transposed A, the strips of a row-major B), never
                    // read there: hence wrapping steps
                    let (mut ap, mut bp) = (a, b);
                    prefetch::steps(k, head, || {
                        let mut bv = [$zero_b; S];
                        for (q, v) in bv.iter_mut().enumerate() {
                            let $bp = bp.add(q * b_strip);
                            *v = $load;
                        }
                        for (r, row) in acc.iter_mut().enumerate() {
                            let $ap = ap.add(r * a_rs);
                            let $x = $splat;
                            for (v, w) in row.iter_mut().zip(&bv) {
                                let ($acc, $w) = (*v, *w);
                                *v = $fma;
                            }
                        }
                        ap = ap.wrapping_add(a_cs);
                        bp = bp.wrapping_add(ldb);
                    });
                    for (r, row) in acc.iter().enumerate() {
                        for (q, v) in row.iter().enumerate() {
                            _mm512_storeu_ps(c.add(r * ldc + 16 * q), *v);
                        }
                    }
                }
            }
            let blocks = row_blocks(m).count();
            for group in strip_groups(n / 16) {
                let (s, take) = (group.start, group.len());
                for (bi, (i, rows)) in row_blocks(m).enumerate() {
                    let fetch = next.for_block(group.clone(), bi, blocks);
                    let head = fetch.head();
                    // SAFETY: rows i..i + rows <= m, strips s..s + take <= n / 16, as documented.
                    unsafe {
                        let (ai, bs, ci) =
                            (a.add(i * a_rs), b.add(s * b_strip), c.add(i * ldc + 16 * s));
                        let (ad, bd) = ((a_rs, a_cs), (ldb, b_strip));
                        match (rows, take) {
                            (6, 4) => block::<6, 4>(k, ai, ad, bs, bd, ci, ldc, accumulate, head),
                            (6, 2) => block::<6, 2>(k, ai, ad, bs, bd, ci, ldc, accumulate, head),
                            (6, _) => block::<6, 1>(k, ai, ad, bs, bd, ci, ldc, accumulate, head),
                            (_, 4) => block::<4, 4>(k, ai, ad, bs, bd, ci, ldc, accumulate, head),
                            (_, 2) => block::<4, 2>(k, ai, ad, bs, bd, ci, ldc, accumulate, head),
                            _ => block::<4, 1>(k, ai, ad, bs, bd, ci, ldc, accumulate, head),
                        }
                    }
                    // what the steps left: the rest of a longer strip, more strips
                    fetch.finish(k);
                }
            }
        }
    };
}

avx512_blocked_kernel!(
    /// [`gemm_avx2`] in 16-lane AVX-512 (blocks of 6 x 64, see the macro).
    ///
    /// # Safety
    /// As [`gemm_avx2`], with AVX-512F in place of AVX2.
    gemm_avx512, "avx512f,fma", f32, _mm512_setzero_ps(),
    |bp| _mm512_loadu_ps(bp),
    |ap| _mm512_set1_ps(*ap),
    |acc, x, w| _mm512_fmadd_ps(x, w, acc)
);

avx512_blocked_kernel!(
    /// `C (+)= A B` with `A` and `B` in pairs of bf16 (`u32`: the element of
    /// depth `2p` in the low half, `2p + 1` in the high half), `C` in f32:
    /// `vdpbf16ps` multiplies both pairs and adds them to the f32 lane, so
    /// one instruction does the work of two FMAs. `k` counts pairs; `B` is
    /// read as by [`gemm_avx2`], a strip's row being 16 pairs.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16; otherwise as [`gemm_avx2`].
    gemm_bf16, "avx512f,avx512bf16", u32,
    std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()),
    |bp| std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.cast())),
    |ap| std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*ap as i32)),
    |acc, x, w| _mm512_dpbf16_ps(acc, x, w)
);

/// `C (+)= A B` in blocks of 6 rows by 16 columns held in 12 registers
/// (2 loads of `B` and 6 broadcasts per 12 FMAs; rows past the last six in
/// blocks of 4, as [`row_blocks`] says).
/// `A[i][p]` is at `a[i * a_rs + p * a_cs]`; `B` is read where it lies, in
/// strips of 16 columns: column `16 s + q` of row `p` at `b[s * b_strip + p *
/// ldb + q]` (`b_strip` = 16 for a row-major matrix, `16 k` for a [`PackedB`]).
/// `next` is the block of a packed `B` the following call will read, fetched
/// into L2 meanwhile ([`Prefetch`]; [`Prefetch::NONE`] for none).
///
/// # Safety
/// AVX2 and FMA must be available; `m % 4 == 0`, `n % 16 == 0`, and the
/// pointers must cover every element the strides address.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_avx2(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    b_strip: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    next: Prefetch<f32>,
) {
    /// One block of `R` rows by 16 columns, fetching the first `head.1`
    /// lines from `head.0` into L2, one a step of the depth ([`prefetch::Fetch::head`]).
    ///
    /// # Safety
    /// AVX2 and FMA; `R` rows of `A` from `a`, `k` rows of a strip of `B`
    /// from `b` and `R` rows of 16 columns of `C` from `c` lie inside the
    /// operands. (A prefetch of any address is safe: it never faults.)
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize>(
        k: usize,
        a: *const f32,
        (a_rs, a_cs): (usize, usize),
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        head: (*const f32, usize),
    ) {
        use std::arch::x86_64::*;
        // SAFETY (whole block): indices stay inside the operands as documented.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if accumulate {
                for (r, row) in acc.iter_mut().enumerate() {
                    *row = [
                        _mm256_loadu_ps(c.add(r * ldc)),
                        _mm256_loadu_ps(c.add(r * ldc + 8)),
                    ];
                }
            }
            // as the AVX-512 kernel's block: pointers moved along (by
            // wrapping steps: past the operands after the last)
            let (mut ap, mut bp) = (a, b);
            prefetch::steps(k, head, || {
                let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*ap.add(r * a_rs));
                    row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(x, b1, row[1]);
                }
                ap = ap.wrapping_add(a_cs);
                bp = bp.wrapping_add(ldb);
            });
            for (r, row) in acc.iter().enumerate() {
                _mm256_storeu_ps(c.add(r * ldc), row[0]);
                _mm256_storeu_ps(c.add(r * ldc + 8), row[1]);
            }
        }
    }
    let blocks = row_blocks(m).count();
    for j in (0..n).step_by(16) {
        for (bi, (i, rows)) in row_blocks(m).enumerate() {
            let fetch = next.for_block(j / 16..j / 16 + 1, bi, blocks);
            // SAFETY: rows i..i + rows <= m, columns j..j + 16 <= n, as documented.
            unsafe {
                let (ai, bj, cij) = (a.add(i * a_rs), b.add(j / 16 * b_strip), c.add(i * ldc + j));
                let ad = (a_rs, a_cs);
                if rows == 6 {
                    block::<6>(k, ai, ad, bj, ldb, cij, ldc, accumulate, fetch.head());
                } else {
                    block::<4>(k, ai, ad, bj, ldb, cij, ldc, accumulate, fetch.head());
                }
            }
            fetch.finish(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::pool::{TestThreads, set_threads};

    /// `A` `[m, k]` and `B` `[k, n]`, row-major, small values of varied signs.
    fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 30.0)
            .collect();
        let b = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 40.0)
            .collect();
        (a, b)
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

    /// The products into unwritten buffers write every value: over a
    /// buffer of NaNs, on the blocked kernel in place (rows in fours, `b`
    /// as stored), the packed one, the `gemm` crate (`b` transposed, odd
    /// rows) and a product of no depth, against [`matmul`] over zeros.
    #[test]
    fn products_into_unwritten_buffers_write_every_value() {
        for (m, n, k, b_t) in [
            (8, 32, 7, false),
            (12, 48, 5, true),
            (7, 20, 9, true),
            (4, 16, 0, false),
            (1, 20, 9, false),
            (5, 20, 2, false),
        ] {
            let (a, b) = operands(m, n, k);
            let mut want = vec![0.0f32; m * n];
            matmul(&mut want, &a, &b, m, n, k, false, b_t, false);
            let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
            let got = matmul_uninit(&mut c, &a, &b, m, n, k, false, b_t).to_vec();
            assert_eq!(got, want, "{m} x {n} x {k}, b_t {b_t}");
            let packed = PackedB::new(&b, k, n, b_t);
            let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
            let got = matmul_maybe_packed_uninit(&mut c, &a, (&b, b_t), packed.as_ref(), m, n, k);
            assert!(
                got.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-5),
                "{m} x {n} x {k} packed ({}), b_t {b_t}",
                packed.is_some()
            );
        }
    }

    /// `a^T b` on the pool's threads against a naive product, and the same
    /// to the last bit on one thread and two, at a size the `gemm` crate
    /// splits, written over NaNs (every value written, none read) and into
    /// a new vector alike.
    #[test]
    fn threaded_transposed_product_matches_a_naive_one() {
        let (m, n, k) = (96, 80, 300);
        let a: Vec<f32> = (0..k * m)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let _threads = TestThreads::lock();
        let mut results = vec![];
        for threads in [1, 2] {
            set_threads(threads);
            // over NaNs: the crate's threaded path writes every value and reads none
            let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
            results.push(matmul_at_threaded_into(&mut c, &a, &b, (m, n, k)).to_vec());
            assert_eq!(
                matmul_at_threaded(&a, &b, (m, n, k)),
                results[results.len() - 1]
            );
        }
        assert_eq!(results[0], results[1], "1 and 2 threads");
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| a[p * m + i] as f64 * b[p * n + j] as f64)
                    .sum();
                let got = results[0][i * n + j] as f64;
                assert!(
                    (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "({i},{j}): {got} vs {want}"
                );
            }
        }
    }

    /// The packed kernel against a naive product: row counts that are and
    /// are not multiples of 4, depths across the packing's k-chunks (and so
    /// in panels of 64 columns: 512 = 8 x 64, 112 = 64 + 48), both storage
    /// orders of the operand, accumulating or not.
    #[test]
    fn packed_kernel_matches_a_naive_product() {
        // the last operand is large enough to be packed on all threads
        let _threads = TestThreads::lock();
        set_threads(2);
        for (m, n, k) in [
            (4, 16, 3),
            (7, 32, 300),
            (1, 48, 600),
            (12, 16, 256),
            (5, 512, 520),
            // whole row blocks over 3 and 7 strips (the AVX-512 kernel's
            // 2 + 1 and 4 + 2 + 1 blocks) across two depth chunks
            (8, 48, 300),
            (8, 112, 300),
            // past PREFETCH_FROM (each pass fetches the next's block):
            // more row blocks than strips, then fewer; a last panel of one
            // strip, a last pass of 44
            (40, 912, 300),
            (12, 912, 300),
        ] {
            let (a, b) = operands(m, n, k);
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
        assert!(
            PackedB::new(&[0.0; 24], 2, 12, false).is_none(),
            "12 columns: not packable"
        );
    }

    /// The passes of a packed product cover each strip at each depth once,
    /// in panels (several passes) or whole (one); and the lines the
    /// kernels' row blocks fetch during a pass (`Prefetch::for_block` over
    /// the AVX-512 kernel's groups of strips, or the AVX2 kernel's single
    /// strips, with its depth) are the next pass's block, each once:
    /// however many row blocks (1, 2, 7, 11), across a last panel of one
    /// strip and a last pass of 44 rows; the last pass, and an operand
    /// under `PREFETCH_FROM`, fetch nothing.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_pass_fetches_the_next_ones_block() {
        for (k, n) in [(512, 2048), (300, 912), (128, 2048), (40, 32)] {
            let b = vec![0.5f32; k * n];
            let Some(packed) = PackedB::new(&b, k, n, false) else {
                return; // no AVX2+FMA here: no packed products
            };
            let base = packed.data.as_slice().as_ptr() as usize;
            type Groups = fn(usize) -> Vec<std::ops::Range<usize>>;
            let kernels: [(usize, Groups); 2] = [
                (128, |strips| strip_groups(strips).collect()),
                (256, |strips| (0..strips).map(|s| s..s + 1).collect()),
            ];
            for (depth, groups) in kernels {
                let passes: Vec<Pass> = packed.passes(depth).collect();
                let mut covered = vec![0u8; (n / 16) * k];
                for (i, pass) in passes.iter().enumerate() {
                    for s in pass.j0 / 16..(pass.j0 + pass.nc) / 16 {
                        for p in pass.k0..pass.k0 + pass.kc {
                            covered[s * k + p] += 1;
                        }
                    }
                    let next = passes.get(i + 1).filter(|_| k * n >= PREFETCH_FROM);
                    let want: Vec<usize> = next.map_or(vec![], |next| {
                        (0..next.nc / 16)
                            .flat_map(|s| (0..next.kc).map(move |r| (s, r)))
                            .map(|(s, r)| packed.block_offset(*next) + s * 16 * k + r * 16)
                            .collect()
                    });
                    let fetch = packed.prefetch(passes.get(i + 1).copied());
                    for rows in [4, 12, 40, 64] {
                        let blocks = row_blocks(rows).count();
                        let mut got: Vec<usize> = groups(pass.nc / 16)
                            .into_iter()
                            .flat_map(|g| {
                                (0..blocks).flat_map(move |bi| {
                                    fetch.for_block(g.clone(), bi, blocks).lines(pass.kc)
                                })
                            })
                            .map(|at| (at as usize - base) / 4)
                            .collect();
                        got.sort_unstable();
                        assert_eq!(got, want, "{k}x{n}, depth {depth}, pass {i}, {rows} rows");
                    }
                }
                assert!(
                    covered.iter().all(|&c| c == 1),
                    "{k}x{n}: every strip row once"
                );
                let panels = passes.iter().filter(|p| p.k0 == 0).count();
                assert_eq!(panels, if k > depth { n.div_ceil(PANEL) } else { 1 });
            }
        }
    }

    /// Packing writes every value of the strips (NaN before) where the
    /// layout puts it: both storage orders, a depth in no multiple of the
    /// transposed copy's tiles of 16 (37), three strips, and an operand
    /// packed on all threads ([`PARALLEL_PACK`]).
    #[test]
    fn packing_writes_every_value_in_place() {
        let _threads = TestThreads::lock();
        set_threads(2);
        for (k, n) in [(37, 48), (PARALLEL_PACK / 64, 64)] {
            let (_, b) = operands(1, n, k);
            for b_t in [false, true] {
                // `b` as stored: [k, n], or [n, k] when transposed
                let stored: Vec<f32> = if b_t {
                    (0..n * k).map(|x| b[(x % k) * n + x / k]).collect()
                } else {
                    b.clone()
                };
                let mut strips = vec![MaybeUninit::new(f32::NAN); k * n];
                pack_strips(&stored, (k, n), b_t, &mut strips);
                for (i, x) in strips.iter().enumerate() {
                    let (s, p, q) = (i / (16 * k), i / 16 % k, i % 16);
                    // SAFETY: every value was initialized (NaN) before the call
                    let got = unsafe { x.assume_init() };
                    assert_eq!(
                        got,
                        b[p * n + s * 16 + q],
                        "{k} x {n} b_t {b_t}: strip {s} ({p}, {q})"
                    );
                }
            }
        }
        set_threads(1);
    }

    /// The product written into memory it does not read (NaN before):
    /// every value written, at 6-row and 4-row blocks, across the packing's
    /// depth passes in two panels (64 columns, then 48: 2 + 1 strips); and
    /// a buffer not of `m x n` values refused.
    #[test]
    fn packed_product_into_unwritten_memory_writes_every_value() {
        let (m, n, k) = (16, 112, 300);
        let (a, b) = operands(m, n, k);
        let Some(packed) = PackedB::new(&b, k, n, false) else {
            return; // no blocked kernel here: nothing to compare
        };
        let mut c = vec![MaybeUninit::new(f32::NAN); m * n];
        packed.matmul_uninit(&mut c, &a, m);
        for i in 0..m {
            for j in 0..n {
                // SAFETY: every value was initialized (NaN) before the call
                let got = unsafe { c[i * n + j].assume_init() };
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((got - want).abs() < 1e-4, "({i},{j}): {got} vs {want}");
            }
        }
        let refused = std::panic::catch_unwind(|| {
            let mut longer = vec![MaybeUninit::new(0.0f32); m * n + 1];
            packed.matmul_uninit(&mut longer, &a, m);
        });
        assert!(refused.is_err(), "a buffer longer than m x n");
    }

    /// Every blocked kernel this CPU has, called directly (not through the
    /// run-time choice) on the same operands at the LSTM's shapes (64 rows
    /// by 256 columns), and 16, 48 and 112 columns (every block width of the
    /// AVX-512 kernel: 4, 2 and 1 strips) at row counts of sixes and fours
    /// (68 = 6 x 10 + 4 x 2, 20 = 6 x 2 + 4 x 2, 12, 8, 4), a transposed
    /// left operand, accumulating or not.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(clippy::print_stderr)] // says which kernels this CPU could not run
    fn every_blocked_kernel_matches_a_naive_product() {
        use crate::kernel::cpu::detected_isa;
        let mut kernels: Vec<(&str, BlockedKernel)> = vec![];
        if detected_isa() >= Isa::Avx2 {
            kernels.push(("avx2", gemm_avx2));
        }
        if detected_isa() >= Isa::Avx512 {
            kernels.push(("avx512", gemm_avx512));
        } else {
            eprintln!("every_blocked_kernel_matches_a_naive_product: no AVX-512 here: not run");
        }
        for (m, n, k) in [
            (64, 256, 64),
            (68, 16, 33),
            (8, 48, 1),
            (4, 112, 130),
            (12, 48, 5),
            (20, 112, 9),
        ] {
            let (a, b) = operands(m, n, k);
            let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
            for &(name, kernel) in &kernels {
                for (a_t, accumulate) in [(false, false), (false, true), (true, false)] {
                    let mut c = c0.clone();
                    let (ap, a_rs, a_cs) = if a_t { (&at, 1, m) } else { (&a, k, 1) };
                    // SAFETY: the CPU has the kernel's features; m % 4 == 0,
                    // n % 16 == 0 and the operands hold m x k, k x n, m x n.
                    unsafe {
                        kernel(
                            m,
                            n,
                            k,
                            ap.as_ptr(),
                            a_rs,
                            a_cs,
                            b.as_ptr(),
                            n,
                            16,
                            c.as_mut_ptr(),
                            n,
                            accumulate,
                            Prefetch::NONE,
                        )
                    };
                    for i in 0..m {
                        for j in 0..n {
                            let want: f32 =
                                (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>()
                                    + if accumulate { c0[i * n + j] } else { 0.0 };
                            assert!(
                                (c[i * n + j] - want).abs() < 1e-4,
                                "{name} {m}x{n}x{k} ({i},{j}) a_t {a_t} acc {accumulate}"
                            );
                        }
                    }
                }
            }
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
}
