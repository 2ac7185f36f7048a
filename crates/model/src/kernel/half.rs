//! The LSTM's products with 16-bit operands, an opt-in precision for large
//! models ([`Precision`]): bf16 or fp16 values in, f32 sums out, for the
//! recurrent products and a dense input's two products by its weights
//! ([`super::linear`]), and on the AMX tiles the dense input's weight
//! gradient too.
//!
//! - **bf16** ([`Half::Bf16`]): AVX512-BF16's `vdpbf16ps` multiplies pairs
//!   of bf16 values and adds both products to an f32 lane, twice the
//!   multiply-adds of an f32 FMA per instruction. Where the CPU has the AMX
//!   tiles the products run on them instead ([`super::amx`], `tdpbf16ps`):
//!   the same operands summed in f32 (in another order, so the last bits
//!   may differ).
//! - **fp16** ([`Half::F16`]): AVX512-FP16's `vfmadd231ph`, 32 lanes an
//!   instruction, on operands scaled by powers of two and sums taken to f32
//!   every few products ([`super::f16`] says why and how).
//!
//! Which is faster than f32 depends on the CPU, so the setting is opt-in
//! and measured per CPU in docs/PERFORMANCE-LOG.md: on AMD Zen 5 (EPYC, family
//! 26) `vdpbf16ps` runs at about twice the f32 FMA rate; on the Intel Xeons
//! here it runs at half that rate, but their AMX tiles, where the
//! hypervisor exposes them, make the `large` recipe's training step
//! 2.2-2.6x faster than f32 (model 167), and where it does not (model 207),
//! fp16 makes it 1.2-1.3x faster.
//!
//! The operands of these products (the weights, the outputs `h`, the gate
//! gradients `dG`, a dense input and its gradient) are rounded to the 16-bit format (to nearest even) as
//! they enter them; the products' sums (fp16 ones every
//! [`FLUSH`](super::f16::FLUSH) products), and every stored state, gate and
//! gradient, stay f32. Layout: a "pair" is a `u32` holding the value of
//! depth `2p` in its low half and of `2p + 1` in its high half, so a
//! row-major `[m, k]` matrix converted is already `[m, k / 2]` pairs.

use super::f16;
#[cfg(target_arch = "x86_64")]
use super::gemm::gemm_bf16;
use super::gemm::{blocked_prefix, blocked_rows, elems, pack_strips};
use super::lines::Lines;
use super::pool::{parallel_for_each_mut, threads, written_row_blocks, zeroed};
#[cfg(target_arch = "x86_64")]
use super::prefetch::Prefetch;

/// Precision of the products of the fused LSTM kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout (the default; the notebook recipes and the golden test).
    #[default]
    F32,
    /// bf16 operands with f32 accumulation where it applies
    /// ([`Half::applies`]); f32 elsewhere.
    Bf16,
    /// fp16 operands, scaled, with f32 accumulation every
    /// [`FLUSH`](super::f16::FLUSH) products, where it applies
    /// ([`Half::applies`]); f32 elsewhere.
    F16,
}

impl Precision {
    /// Its name in recipes (`train.precision`) and JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The 16-bit format of the operands, `None` for f32.
    pub fn half(self) -> Option<Half> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(Half::Bf16),
            Precision::F16 => Some(Half::F16),
        }
    }

    /// The precision a layer of `hidden` units runs in for products of
    /// `rows` rows each (one count per thread's part of the batch): this
    /// one where its format [`applies`](Half::applies) to every part, else
    /// f32. Its recurrent products and a dense input's take the same.
    pub fn for_parts(self, rows: &[usize], hidden: usize) -> Precision {
        match self.half() {
            Some(half) if rows.iter().all(|&r| half.applies(r, hidden)) => self,
            _ => Precision::F32,
        }
    }
}

/// A 16-bit format of the products' operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// bf16 (8 bits of mantissa, f32's exponent), AVX512-BF16 or AMX.
    Bf16,
    /// fp16 (11 bits of mantissa, 5 of exponent), AVX512-FP16.
    F16,
}

/// Why a [`Half`] precision does not run for some rows and units
/// ([`Half::refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The CPU has not the instructions ([`Half::available`]), or the
    /// AVX-512 kernels are not selected.
    Cpu,
    /// Fewer than 4 rows a product.
    Rows,
    /// Units not a positive multiple of 16.
    Units,
}

impl Half {
    /// The instructions the format needs, as a note names them.
    pub fn instructions(self) -> &'static str {
        match self {
            Half::Bf16 => "AVX512-BF16",
            Half::F16 => "AVX512-FP16",
        }
    }

    /// The precision of products in this format.
    pub fn precision(self) -> Precision {
        match self {
            Half::Bf16 => Precision::Bf16,
            Half::F16 => Precision::F16,
        }
    }

    /// Whether this format's products run on the AMX tiles
    /// ([`super::amx`]), those of 16 rows or more: bf16 only, where it is
    /// [`available`](Self::available), the CPU has the tiles and
    /// `CHARLSTM_KERNELS` does not cap the kernels below `avx512+amx`.
    pub fn on_tiles(self) -> bool {
        self == Half::Bf16 && self.available() && super::cpu::isa() == super::cpu::Isa::Avx512Amx
    }

    /// Whether the products run in this format here: the AVX-512 kernels
    /// are selected (so `CHARLSTM_KERNELS=avx2+fma` turns it off) and the
    /// CPU has AVX512-BF16 (bf16) or AVX512-FP16 (fp16).
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            super::cpu::isa().avx512()
                && match self {
                    Half::Bf16 => std::is_x86_feature_detected!("avx512bf16"),
                    Half::F16 => std::is_x86_feature_detected!("avx512fp16"),
                }
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Whether the products run in this format for sequences of `rows` per
    /// product (a thread's part of the batch) and `hidden` units: the CPU
    /// has it ([`available`](Self::available)), the rows fill the kernels'
    /// blocks of four (fewer would go value by value), and both the forward
    /// operand `[H, 4H]` and the backward one `[4H, H]` are whole strips of
    /// 16 columns, so that forward and backward run in the same precision.
    pub fn applies(self, rows: usize, hidden: usize) -> bool {
        self.refusal(rows, hidden).is_none()
    }

    /// The reason [`applies`](Self::applies) says no, the first of these in
    /// this order; `None` where it says yes.
    pub fn refusal(self, rows: usize, hidden: usize) -> Option<Refusal> {
        if !self.available() {
            Some(Refusal::Cpu)
        } else if rows < 4 {
            Some(Refusal::Rows)
        } else if hidden == 0 || !hidden.is_multiple_of(16) {
            Some(Refusal::Units)
        } else {
            None
        }
    }

    /// The factor (a power of two) an operand whose largest magnitude is
    /// `max_abs` is multiplied by before rounding: 1 for bf16, which has
    /// f32's range; for fp16 [`f16::scale_for`].
    fn scale(self, max_abs: impl FnOnce() -> f32) -> f32 {
        match self {
            Half::Bf16 => 1.0,
            Half::F16 => f16::scale_for(max_abs()),
        }
    }

    /// `x` rounded to this format, to nearest even.
    fn round(self, x: f32) -> u16 {
        match self {
            Half::Bf16 => to_bf16(x),
            Half::F16 => f16::to_f16(x),
        }
    }

    /// The f32 value of `x` in this format.
    fn value(self, x: u16) -> f32 {
        match self {
            Half::Bf16 => from_bf16(x),
            Half::F16 => f16::from_f16(x),
        }
    }

    /// The two products of a pair of pairs, summed (f32).
    fn dot_pair(self, x: u32, w: u32) -> f32 {
        self.value(x as u16) * self.value(w as u16)
            + self.value((x >> 16) as u16) * self.value((w >> 16) as u16)
    }

    /// The pair of `lo` and `hi` times `scale`, rounded.
    fn pair(self, lo: f32, hi: f32, scale: f32) -> u32 {
        self.round(lo * scale) as u32 | (self.round(hi * scale) as u32) << 16
    }
}

/// `x` rounded to bf16, to nearest even (NaN stays NaN), as the vector
/// conversion does for normal values.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of a bf16.
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// Pairs of depth of consecutive rows: `rows` rows of `cols` values (row `i`
/// given by `row(i)`) times `scale`, rounded to `half`, become
/// `[rows.div_ceil(2), cols]` pairs, pair `(p, j)` holding rows `2p` and
/// `2p + 1` of column `j` (a missing last row is zero). This is the layout
/// of `B` for the kernels when the depth runs down the rows, and of `A`
/// (read transposed) for `A^T B`. On the kernel pool's threads, blocks of
/// [`PAIR_ROWS`] each, where `parallel` (not from inside a thread's part).
fn pairs_of_rows<'a>(
    half: Half,
    scale: f32,
    (rows, cols): (usize, usize),
    row: impl Fn(usize) -> &'a [f32] + Sync,
    parallel: bool,
) -> Vec<u32> {
    let mut out = vec![0u32; elems(rows.div_ceil(2), cols)];
    let width = cols.max(1);
    #[cfg(target_arch = "x86_64")]
    let vector = half.available();
    #[cfg(not(target_arch = "x86_64"))]
    let vector = false;
    if parallel {
        let mut blocks: Vec<(usize, &mut [u32])> =
            out.chunks_mut(PAIR_ROWS * width).enumerate().collect();
        parallel_for_each_mut(&mut blocks, |(b, block)| {
            for (q, dst) in block.chunks_exact_mut(width).enumerate() {
                pair_row(
                    (half, vector),
                    scale,
                    (rows, cols),
                    &row,
                    *b * PAIR_ROWS + q,
                    dst,
                );
            }
        });
    } else {
        for (p, dst) in out.chunks_exact_mut(width).enumerate() {
            pair_row((half, vector), scale, (rows, cols), &row, p, dst);
        }
    }
    out
}

/// Pair rows a job of [`pairs_of_rows`] takes: `large`'s `dy` is 1600 of
/// 2048 pairs.
const PAIR_ROWS: usize = 64;

/// Pair row `p` of [`pairs_of_rows`] into `dst` (`cols` pairs), by the
/// format's instructions where `vector` (they are available).
fn pair_row<'a>(
    (half, vector): (Half, bool),
    scale: f32,
    (rows, cols): (usize, usize),
    row: &impl Fn(usize) -> &'a [f32],
    p: usize,
    dst: &mut [u32],
) {
    let lo = row(2 * p);
    let hi = (2 * p + 1 < rows).then(|| row(2 * p + 1));
    assert!(
        lo.len() >= cols && hi.is_none_or(|h| h.len() >= cols),
        "row size"
    );
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: the format's instructions are available; the rows
        // hold `cols` values (checked above) and `dst` holds `cols` pairs.
        done = unsafe {
            match half {
                Half::Bf16 => interleave_bf16(dst, lo, hi, cols, scale),
                Half::F16 => interleave_f16(dst, lo, hi, cols, scale),
            }
        };
    }
    for j in done..cols {
        dst[j] = half.pair(lo[j], hi.map_or(0.0, |h| h[j]), scale);
    }
}

/// Rows `[m, k]` (`k` even) times `scale` as `[m, k / 2]` pairs: each
/// value rounded to `half` in place order.
fn rows_to_pairs(half: Half, scale: f32, a: &[f32], m: usize, k: usize) -> Vec<u32> {
    debug_assert!(k.is_multiple_of(2));
    let n = elems(m, k);
    let mut out = vec![0u32; n / 2];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if half.available() {
        // SAFETY: the format's instructions are available; `a` holds `n`
        // values and `out` `n / 2` pairs.
        done = unsafe {
            match half {
                Half::Bf16 => convert_bf16(&mut out, &a[..n], scale),
                Half::F16 => convert_f16(&mut out, &a[..n], scale),
            }
        };
    }
    for (i, pair) in out.iter_mut().enumerate().skip(done / 2) {
        *pair = half.pair(a[2 * i], a[2 * i + 1], scale);
    }
    out
}

/// Defines the vector parts of [`pairs_of_rows`] (`$interleave`: whole
/// groups of 16 columns of a pair of rows) and of [`rows_to_pairs`]
/// (`$convert`: whole groups of 32 values) for one format, whose `$halves`
/// rounds two vectors `l` and `h` of 16 values, times the `scale` vector
/// `s`, to 32 halves, `l`'s first: both return how many values they did.
macro_rules! half_conversions {
    ($interleave:ident, $convert:ident, $features:literal, |$l:ident, $h:ident, $s:ident| $halves:expr) => {
        /// The vector part of [`pairs_of_rows`] for one pair of rows.
        ///
        /// # Safety
        /// The format's features; `lo` (and `hi`) hold at least `cols`
        /// values, `dst` at least `cols` pairs.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $interleave(
            dst: &mut [u32],
            lo: &[f32],
            hi: Option<&[f32]>,
            cols: usize,
            scale: f32,
        ) -> usize {
            use std::arch::x86_64::*;
            // lanes 0..16 of the conversion are `lo`, 16..32 `hi`: interleave them
            let order: [i16; 32] = std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as i16);
            let cols16 = cols - cols % 16;
            // SAFETY (whole block): the indices stay below `cols` (see above).
            unsafe {
                let idx = _mm512_loadu_si512(order.as_ptr().cast());
                let $s = _mm512_set1_ps(scale);
                for j in (0..cols16).step_by(16) {
                    let $l = _mm512_loadu_ps(lo.as_ptr().add(j));
                    let $h = match hi {
                        Some(h) => _mm512_loadu_ps(h.as_ptr().add(j)),
                        None => _mm512_setzero_ps(),
                    };
                    let both: __m512i = $halves;
                    let pairs = _mm512_permutexvar_epi16(idx, both);
                    _mm512_storeu_si512(dst.as_mut_ptr().add(j).cast(), pairs);
                }
            }
            cols16
        }

        /// The vector part of [`rows_to_pairs`].
        ///
        /// # Safety
        /// The format's features; `out` holds `a.len() / 2` pairs.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $convert(out: &mut [u32], a: &[f32], scale: f32) -> usize {
            use std::arch::x86_64::*;
            let n32 = a.len() - a.len() % 32;
            // SAFETY: indices below `n32 <= a.len()`, pairs below `n32 / 2`.
            unsafe {
                let $s = _mm512_set1_ps(scale);
                for i in (0..n32).step_by(32) {
                    let $l = _mm512_loadu_ps(a.as_ptr().add(i));
                    let $h = _mm512_loadu_ps(a.as_ptr().add(i + 16));
                    // low half of the result from `l`: values i..i+16 in order
                    let v: __m512i = $halves;
                    _mm512_storeu_si512(out.as_mut_ptr().add(i / 2).cast(), v);
                }
            }
            n32
        }
    };
}

// bf16 has f32's range: its scale is always 1, not applied
half_conversions!(
    interleave_bf16,
    convert_bf16,
    "avx512f,avx512bw,avx512bf16",
    |l, h, _s| { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(h, l)) }
);

half_conversions!(
    interleave_f16,
    convert_f16,
    "avx512f,avx512bw,avx512fp16",
    |l, h, s| {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let lo = _mm512_cvtps_ph::<NEAREST>(_mm512_mul_ps(l, s));
        let hi = _mm512_cvtps_ph::<NEAREST>(_mm512_mul_ps(h, s));
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }
);

/// Depth (pairs) of one pass of the 16-bit kernels: four strips of 128
/// pairs of 16 columns are 32 KiB and stay in the L1 cache (48 KiB on the
/// CPUs with AVX-512 here) while every row block reads them. The passes
/// run over all columns, not in the f32 kernel's panels (`gemm::PANEL`):
/// that order was measured in f32 only, and on CPUs with AMX the rows from
/// 16 up take the tiles instead.
const KC_PAIRS: usize = 128;

/// Columns of a panel of [`matmul_at`]'s result: `large`'s 512 rows by 256
/// columns are 512 KiB, in L2 (2 MiB a core here) beside a pass's operands.
const AT_PANEL: usize = 256;

/// A right operand in 16-bit pairs, packed once for many products (the
/// recurrent weights, used at every step): strips of 16 columns, each
/// `[depth, 16]` pairs contiguous, as [`PackedB`](super::gemm::PackedB) in
/// f32, times its `scale`. The depth is `k / 2` pairs, padded with zero
/// pairs to whole tiles (16) where the products run
/// [`on_tiles`](Half::on_tiles): `model.d_hidden` 400 is 200 pairs, and
/// without the padding its forward product ran on `vdpbf16ps` (`large`
/// at 400 units trained at 14.4k chars/s in bf16, 27.7-30.6k with it).
///
/// **Invariant:** exists only where its format is
/// [`available`](Half::available) (its constructor returns `None`
/// elsewhere), with `k` even, `n` a multiple of 16 and `depth >= k / 2`
/// (a multiple of 16 on the tiles).
#[derive(Debug, Clone)]
pub struct PackedHalf {
    data: Lines<u32>,
    k: usize,
    depth: usize,
    n: usize,
    half: Half,
    scale: f32,
}

impl PackedHalf {
    /// Packs `b` (`[k, n]` row-major, or `[n, k]` when `b_t`) in `half`, or
    /// `None` where that format does not run (not available, `k` odd, `n`
    /// not a multiple of 16).
    pub fn new(half: Half, b: &[f32], k: usize, n: usize, b_t: bool) -> Option<Self> {
        assert!(b.len() >= elems(k, n), "packed operand size");
        if !half.available() || k == 0 || !k.is_multiple_of(2) || n == 0 || !n.is_multiple_of(16) {
            return None;
        }
        let k2 = k / 2;
        let depth = if half.on_tiles() {
            k2.next_multiple_of(16)
        } else {
            k2
        };
        let scale = half.scale(|| f16::max_abs([&b[..k * n]]));
        // pairs in `b`'s own order first (vectorised), then moved into strips
        let pairs = if b_t {
            // [n, depth]: column j of B is row j
            pad_rows(rows_to_pairs(half, scale, b, n, k), n, k2, depth)
        } else {
            let mut pairs = pairs_of_rows(half, scale, (k, n), |i| &b[i * n..(i + 1) * n], false);
            pairs.resize(elems(depth, n), 0); // [depth, n]
            pairs
        };
        // SAFETY: the strips are every value of the operand
        let data = unsafe {
            Lines::written(depth * n, |strips| {
                pack_strips(&pairs, (depth, n), b_t, strips)
            })
        };
        Some(PackedHalf {
            data,
            k,
            depth,
            n,
            half,
            scale,
        })
    }

    /// The format of the operand.
    pub fn half(&self) -> Half {
        self.half
    }

    /// `c (+)= a · B` for `a` `[m, k]` row-major (rounded to the format) and `c` `[m, n]`.
    pub fn matmul(&self, c: &mut [f32], a: &[f32], m: usize, accumulate: bool) {
        let (k, depth, n, half) = (self.k, self.depth, self.n, self.half);
        assert!(
            c.len() >= elems(m, n) && a.len() >= elems(m, k),
            "matmul operand sizes"
        );
        let scale = half.scale(|| f16::max_abs([&a[..m * k]]));
        // [m, depth]: the depth padded as the strips' are
        let pairs = pad_rows(rows_to_pairs(half, scale, a, m, k), m, k / 2, depth);
        let inv = (1.0 / scale, 1.0 / self.scale);
        // bf16 rows in sixteens on the tiles over the whole depth, where they exist
        let m16 = if half.on_tiles() && depth.is_multiple_of(16) {
            m - m % 16
        } else {
            0
        };
        #[cfg(target_arch = "x86_64")]
        if m16 > 0 {
            // SAFETY: the tiles are usable (`Half::on_tiles`); rows 0..m16 of `a`'s
            // pairs (`[m, depth]`), the strips (`[depth, 16]` pairs each, `n` a
            // multiple of 16) and rows 0..m16 of `c` lie inside the buffers.
            unsafe {
                super::amx::gemm_amx(
                    m16,
                    n,
                    depth,
                    pairs.as_ptr(),
                    depth,
                    self.data.as_slice().as_ptr(),
                    16,
                    16 * depth,
                    c.as_mut_ptr(),
                    n,
                    accumulate,
                )
            };
        }
        let m4 = blocked_prefix(m);
        for k0 in (0..depth).step_by(KC_PAIRS) {
            let kc = KC_PAIRS.min(depth - k0);
            let first = !(accumulate || k0 > 0);
            #[cfg(target_arch = "x86_64")]
            if m4 > m16 {
                // SAFETY: a PackedHalf exists only where its kernel runs;
                // rows m16..m4 by every strip's 16 columns (strips 16 * depth
                // apart), pairs k0..k0 + kc, lie inside the pairs of `a`,
                // the strips and `c`.
                unsafe {
                    let (a, b) = (
                        pairs.as_ptr().add(m16 * depth + k0),
                        self.data.as_slice().as_ptr().add(k0 * 16),
                    );
                    let c = c.as_mut_ptr().add(m16 * n);
                    let rows = m4 - m16;
                    match half {
                        Half::Bf16 => gemm_bf16(
                            rows,
                            n,
                            kc,
                            a,
                            depth,
                            1,
                            b,
                            16,
                            16 * depth,
                            c,
                            n,
                            !first,
                            Prefetch::NONE,
                        ),
                        Half::F16 => f16::gemm_f16(
                            rows,
                            n,
                            kc,
                            a,
                            (depth, 1),
                            b,
                            (16, 16 * depth),
                            c,
                            n,
                            !first,
                            inv,
                        ),
                    }
                };
            }
            // the rows past the last four, one value at a time
            for i in m4..m {
                for (s, strip) in self.data.as_slice().chunks_exact(16 * depth).enumerate() {
                    let out = &mut c[i * n + s * 16..i * n + s * 16 + 16];
                    if first {
                        out.fill(0.0);
                    }
                    for p in k0..k0 + kc {
                        let x = pairs[i * depth + p];
                        for (o, w) in out.iter_mut().zip(&strip[p * 16..p * 16 + 16]) {
                            *o += half.dot_pair(x, *w) * inv.0 * inv.1;
                        }
                    }
                }
            }
        }
    }
}

/// `c = a^T b` in `half` with f32 accumulation, for `a` `[k, m]` and `b`
/// `[k, n]` row-major, each given as two row ranges one after the other
/// (`a0` then `a1`, `b0` then `b1`: the weight gradient `H^T dG` sums the
/// initial state's step and the others'). Returns `false` (and leaves `c`)
/// where the format does not run (not available, `m` not a multiple of 4
/// or `n` of 16).
pub fn matmul_at(
    half: Half,
    c: &mut [f32],
    a: (&[f32], &[f32]),
    b: (&[f32], &[f32]),
    (m, n, k): (usize, usize, usize),
) -> bool {
    let Some(operands) = TransposedOperands::new(half, a, b, (m, n, k), false) else {
        return false;
    };
    assert!(c.len() >= elems(m, n), "matmul_at result size");
    operands.rows_into(&mut c[..m * n], 0);
    true
}

/// [`matmul_at`] of `a` and `b` (one range each) as a new `[m, n]`, the
/// operands rounded and laid out once (split over the kernel pool's
/// threads where there are two or more: on two, `large`'s `dW` took 13.1
/// ms instead of 16.4, `cargo bench -p model --bench kernel -- dense`)
/// and the result's rows split over them, a block each (rounded up to
/// whole tiles of 16 rows):
/// each value is summed on one thread in the same order whatever their
/// count. `None` where the format does not run.
pub fn matmul_at_threaded(
    half: Half,
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
) -> Option<Vec<f32>> {
    let operands = TransposedOperands::new(half, (a, &[]), (b, &[]), (m, n, k), threads() > 1)?;
    let block = m.div_ceil(threads()).next_multiple_of(16);
    // SAFETY: each block written whole (zeroed)
    Some(unsafe {
        written_row_blocks(m, n, block, 0, |first, out| {
            operands.rows_into(zeroed(out), first);
        })
    })
}

/// The operands of `A^T B` rounded to a format and laid out for its
/// kernels, once for products over any rows of the result.
struct TransposedOperands {
    half: Half,
    /// A^T's pairs: `[m, depth]` on the tiles (they read a row's pairs side
    /// by side), else `[depth, m]` (A^T's row `i` is column `i`)
    a: Vec<u32>,
    /// B's pairs, `[depth, n]`
    b: Vec<u32>,
    /// Pairs of depth, padded with zero pairs to whole tiles on them
    depth: usize,
    /// Whether the products run on the AMX tiles (bf16 there, `m` in sixteens)
    tiles: bool,
    /// The inverse scales of `a` and `b`
    inv: (f32, f32),
    m: usize,
    n: usize,
}

impl TransposedOperands {
    /// `None` where the format does not run (see [`matmul_at`]). Rounded
    /// and laid out on the kernel pool's threads where `parallel` (not
    /// from inside a thread's part: [`matmul_at`] runs in one).
    fn new(
        half: Half,
        (a0, a1): (&[f32], &[f32]),
        (b0, b1): (&[f32], &[f32]),
        (m, n, k): (usize, usize, usize),
        parallel: bool,
    ) -> Option<Self> {
        if !half.available() || m == 0 || !blocked_rows(m) || n == 0 || !n.is_multiple_of(16) {
            return None;
        }
        let (ka, kb) = (a0.len() / m, b0.len() / n);
        assert!(
            ka == kb
                && elems(ka, m) == a0.len()
                && elems(kb, n) == b0.len()
                && a1.len().checked_add(a0.len()) == Some(elems(k, m))
                && b1.len().checked_add(b0.len()) == Some(elems(k, n)),
            "matmul_at operand sizes"
        );
        let a_row = |i: usize| {
            if i < ka {
                &a0[i * m..(i + 1) * m]
            } else {
                &a1[(i - ka) * m..(i - ka + 1) * m]
            }
        };
        let b_row = |i: usize| {
            if i < kb {
                &b0[i * n..(i + 1) * n]
            } else {
                &b1[(i - kb) * n..(i - kb + 1) * n]
            }
        };
        let (sa, sb) = (
            half.scale(|| f16::max_abs([a0, a1])),
            half.scale(|| f16::max_abs([b0, b1])),
        );
        let mut a = pairs_of_rows(half, sa, (k, m), a_row, parallel); // [k2, m]
        let mut b = pairs_of_rows(half, sb, (k, n), b_row, parallel); // [k2, n]
        let k2 = k.div_ceil(2);
        let tiles = cfg!(target_arch = "x86_64") && half.on_tiles() && m.is_multiple_of(16);
        let depth = if tiles { k2.next_multiple_of(16) } else { k2 };
        if tiles {
            a = transpose_pairs(&a, (k2, m), depth, parallel);
            b.resize(elems(depth, n), 0);
        }
        Some(TransposedOperands {
            half,
            a,
            b,
            depth,
            tiles,
            inv: (1.0 / sa, 1.0 / sb),
            m,
            n,
        })
    }

    /// Rows `first..` of `A^T B` into `c` (`[rows, n]`, `rows` a multiple
    /// of 16 on the tiles, else of 4, `first + rows <= m`).
    fn rows_into(&self, c: &mut [f32], first: usize) {
        let (n, depth, half) = (self.n, self.depth, self.half);
        let rows = c.len() / n;
        assert!(
            c.len() == elems(rows, n)
                && first + rows <= self.m
                && rows.is_multiple_of(if self.tiles { 16 } else { 4 }),
            "matmul_at rows"
        );
        if rows == 0 {
            return;
        }
        if depth == 0 {
            c.fill(0.0);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.tiles {
            // SAFETY: the tiles are usable (`Half::on_tiles`); `rows`, `n`
            // and `depth` are multiples of 16; rows `first..first + rows`
            // of `a` (`[m, depth]`), `b` (`[depth, n]`, strips of 16
            // columns 16 apart) and `c` (`[rows, n]`) lie inside them.
            unsafe {
                super::amx::gemm_amx(
                    rows,
                    n,
                    depth,
                    self.a.as_ptr().add(first * depth),
                    depth,
                    self.b.as_ptr(),
                    n,
                    16,
                    c.as_mut_ptr(),
                    n,
                    false,
                )
            };
            return;
        }
        // panels of columns, each finished over the whole depth before the
        // next: `c` (`large`'s 512 x 2048, 4 MiB) past L2 was read and
        // written again from memory at every pass over the depth, a
        // panel's stays in L2
        for j0 in (0..n).step_by(AT_PANEL) {
            let panel = AT_PANEL.min(n - j0);
            for k0 in (0..depth).step_by(KC_PAIRS) {
                let kc = KC_PAIRS.min(depth - k0);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the format's instructions are available (checked
                // in `new`); rows `first..first + rows` (a multiple of 4)
                // of A^T at stride 1 / m per pair, pairs k0..k0 + kc of B's
                // columns j0..j0 + panel (a multiple of 16, as `n`) and `c`
                // `[rows, n]` lie inside the buffers.
                unsafe {
                    let (a, b) = (
                        self.a.as_ptr().add(k0 * self.m + first),
                        self.b.as_ptr().add(k0 * n + j0),
                    );
                    let c = c.as_mut_ptr().add(j0);
                    match half {
                        Half::Bf16 => gemm_bf16(
                            rows,
                            panel,
                            kc,
                            a,
                            1,
                            self.m,
                            b,
                            n,
                            16,
                            c,
                            n,
                            k0 > 0,
                            Prefetch::NONE,
                        ),
                        Half::F16 => f16::gemm_f16(
                            rows,
                            panel,
                            kc,
                            a,
                            (1, self.m),
                            b,
                            (n, 16),
                            c,
                            n,
                            k0 > 0,
                            self.inv,
                        ),
                    }
                };
            }
        }
    }
}

/// `[rows, cols]` pairs as `[rows, width]` (`width >= cols`), each row
/// padded with zero pairs; `x` itself where `width` is `cols`.
fn pad_rows(x: Vec<u32>, rows: usize, cols: usize, width: usize) -> Vec<u32> {
    if width == cols {
        return x;
    }
    let mut out = vec![0u32; elems(rows, width)];
    for (dst, src) in out.chunks_exact_mut(width).zip(x.chunks_exact(cols)) {
        dst[..cols].copy_from_slice(src);
    }
    out
}

/// `[rows, cols]` pairs transposed to `[cols, width]` (`width >= rows`,
/// the columns past `rows` zero), in square blocks so that both sides
/// stay in cache; a band of `BLOCK` output rows a job on the kernel pool's
/// threads where `parallel` (on one thread, bands read the input with a
/// stride and ran 6% slower in `dense_dw_bf16_tiles`).
fn transpose_pairs(
    x: &[u32],
    (rows, cols): (usize, usize),
    width: usize,
    parallel: bool,
) -> Vec<u32> {
    const BLOCK: usize = 32;
    let mut out = vec![0u32; elems(cols, width)];
    // output rows `cs` into `out` (those rows), in blocks of BLOCK x BLOCK
    // with the input's rows outermost
    let band = |cs: std::ops::Range<usize>, out: &mut [u32]| {
        for r0 in (0..rows).step_by(BLOCK) {
            for c0 in cs.clone().step_by(BLOCK) {
                for r in r0..(r0 + BLOCK).min(rows) {
                    for c in c0..(c0 + BLOCK).min(cs.end) {
                        out[(c - cs.start) * width + r] = x[r * cols + c];
                    }
                }
            }
        }
    };
    if parallel {
        let mut bands: Vec<(usize, &mut [u32])> =
            out.chunks_mut(BLOCK * width.max(1)).enumerate().collect();
        parallel_for_each_mut(&mut bands, |(b, out)| {
            band(*b * BLOCK..((*b + 1) * BLOCK).min(cols), out)
        });
    } else {
        band(0..cols, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to the even one, 1
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// A 16-bit format only where both passes run it: 4 rows or more,
    /// units in sixteens; the refusal names the first reason.
    #[test]
    fn halves_apply_to_whole_blocks_only() {
        for half in [Half::Bf16, Half::F16] {
            assert_eq!(half.applies(4, 16), half.available());
            assert_eq!(half.applies(32, 512), half.available());
            assert!(!half.applies(3, 512), "rows under the kernel's four");
            assert!(
                !half.applies(64, 24),
                "backward operand [96, 24]: not whole strips"
            );
            assert!(!half.applies(64, 0));
            // and says why not, the CPU first
            if half.available() {
                assert_eq!(half.refusal(32, 512), None);
                assert_eq!(half.refusal(3, 24), Some(Refusal::Rows));
                assert_eq!(half.refusal(64, 24), Some(Refusal::Units));
                assert_eq!(half.refusal(64, 0), Some(Refusal::Units));
            } else {
                assert_eq!(half.refusal(32, 512), Some(Refusal::Cpu));
            }
        }
    }

    /// A layer runs in a 16-bit format only where it applies to every
    /// thread's part of the batch, f32 otherwise.
    #[test]
    fn precision_for_parts_needs_every_part() {
        assert_eq!(Precision::F32.for_parts(&[64], 512), Precision::F32);
        for half in [Half::Bf16, Half::F16] {
            let p = half.precision();
            let here = if half.available() { p } else { Precision::F32 };
            assert_eq!(p.for_parts(&[32, 32], 512), here);
            assert_eq!(
                p.for_parts(&[64, 3], 512),
                Precision::F32,
                "a part of 3 rows"
            );
            assert_eq!(p.for_parts(&[2], 512), Precision::F32);
            assert_eq!(
                p.for_parts(&[64], 40),
                Precision::F32,
                "units not in sixteens"
            );
        }
    }

    fn values(n: usize, m: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * m) % 23) as f32 - 11.0) / 7.3)
            .collect()
    }

    /// `x` as the kernels of `half` see it: times `scale`, rounded, and
    /// divided by `scale` again.
    fn rounded(half: Half, scale: f32, x: f32) -> f64 {
        half.value(half.round(x * scale)) as f64 / scale as f64
    }

    /// The scale `half` gives an operand.
    fn scale_of(half: Half, x: &[f32]) -> f32 {
        half.scale(|| f16::max_abs([x]))
    }

    /// fp16's worst case: every operand at its largest magnitude, every
    /// product of a lane's sum as large as the scales allow and of one
    /// sign. The sums of [`f16::FLUSH`] of them stay finite (a scale to
    /// [16, 32) overflowed fp16 here) and within fp16's rounding.
    #[test]
    #[allow(clippy::print_stderr)] // says when this CPU has no AVX512-FP16
    fn fp16_sums_of_the_largest_products_stay_finite() {
        if !Half::F16.available() {
            eprintln!(
                "fp16_sums_of_the_largest_products_stay_finite: no AVX512-FP16 here: SKIPPED"
            );
            return;
        }
        let (m, n, k) = (8, 32, 4 * f16::FLUSH);
        let (a, b) = (vec![-1.9999f32; m * k], vec![1.9999f32; k * n]);
        let packed = PackedHalf::new(Half::F16, &b, k, n, false).unwrap();
        let mut c = vec![0.0; m * n];
        packed.matmul(&mut c, &a, m, false);
        let mut at = vec![0.0; m * n];
        assert!(matmul_at(
            Half::F16,
            &mut at,
            (&a, &[]),
            (&b, &[]),
            (m, n, k)
        ));
        let want = -(k as f64) * 1.9999 * 1.9999;
        for got in c.iter().chain(&at) {
            assert!(
                got.is_finite() && (*got as f64 - want).abs() <= 4.0 * want.abs() / 2048.0,
                "{got} against {want}"
            );
        }
    }

    /// `A^T B` split over threads in blocks of the result's rows, its
    /// operands rounded and laid out on them too, equals the product on
    /// one, bit for bit, on one thread and on two: 48 rows (two blocks on
    /// the tiles where they exist) and 40 (blocks of 32 and 8, not whole
    /// tiles: the vector kernels). Says so when this CPU cannot run a format.
    #[test]
    #[allow(clippy::print_stderr)] // says when this CPU cannot run a format
    fn threaded_transposed_product_equals_one_block() {
        let _threads = crate::kernel::pool::TestThreads::lock();
        for half in [Half::Bf16, Half::F16] {
            if !half.available() {
                eprintln!(
                    "threaded_transposed_product_equals_one_block: no {half:?} here: SKIPPED"
                );
                assert!(matmul_at_threaded(half, &[0.0; 16], &[0.0; 64], (4, 16, 4)).is_none());
                continue;
            }
            if half == Half::Bf16 && !half.on_tiles() {
                eprintln!(
                    "threaded_transposed_product_equals_one_block: no AMX tiles here: the \
                     tile path is NOT tested"
                );
            }
            // 300 rows of depth: the rounding in three jobs of 64 pair rows
            for (m, n, k) in [(48, 32, 70), (40, 48, 33), (48, 32, 300)] {
                let (a, b) = (values(k * m, 3), values(k * n, 5));
                let mut one = vec![f32::NAN; m * n];
                assert!(matmul_at(half, &mut one, (&a, &[]), (&b, &[]), (m, n, k)));
                for threads in [1, 2] {
                    crate::kernel::pool::set_threads(threads);
                    let split = matmul_at_threaded(half, &a, &b, (m, n, k)).unwrap();
                    assert!(split == one, "{half:?} {m}x{n}x{k} on {threads} threads");
                }
            }
        }
    }

    /// The 16-bit products against the same product of the rounded
    /// operands in f64, at sizes that take the vector paths (and rows past
    /// the last four, odd depths for `A^T B`), within the rounding of the
    /// sums: bf16 sums in f32; fp16 sums up to [`f16::FLUSH`] products in
    /// fp16 (11 bits), so there the bound is a few of its roundings of the
    /// sum of the magnitudes. Says so when this CPU cannot run a format.
    #[test]
    #[allow(clippy::print_stderr)] // says when this CPU cannot run a format
    fn half_kernels_match_the_rounded_product() {
        for half in [Half::Bf16, Half::F16] {
            if half.available() {
                half_kernels_match(half);
            } else {
                eprintln!(
                    "half_kernels_match_the_rounded_product: no {half:?} instructions here: SKIPPED"
                );
                assert!(PackedHalf::new(half, &[0.0; 32], 2, 16, false).is_none());
            }
        }
    }

    #[allow(clippy::print_stderr)] // says which paths it tests
    fn half_kernels_match(half: Half) {
        // the bf16 sizes from 16 rows up take the AMX tiles where this CPU has them
        eprintln!(
            "half_kernels_match_the_rounded_product: {half:?}{}",
            match (half, half.on_tiles()) {
                (Half::F16, _) => "",
                (Half::Bf16, true) => " and the AMX tiles",
                (Half::Bf16, false) => "; no AMX tiles here: the tile path is NOT tested",
            }
        );
        // the bound on the difference, from the sum of the products'
        // magnitudes and the value accumulated onto (the bf16 kernel adds
        // the `k / 2` pairs' products to it one by one in f32)
        let close = |got: f32, want: f64, (magnitude, base, k): (f64, f64, usize), what: &str| {
            let sums = match half {
                Half::Bf16 => 1e-5,
                Half::F16 => 4.0 / 2048.0,
            };
            let bound = sums * magnitude + k as f64 * base.abs() / 16_777_216.0 + 1e-30;
            assert!(
                (got as f64 - want).abs() <= bound,
                "{half:?} {what}: {got} vs {want}"
            );
        };
        // tiles: 2 x 2 blocks (64 x 256), 2 + 1 row tiles and strips (48 x 48),
        // three passes over the depth with rows left to the vector kernel
        // and past the last four (37 x 32 x 1088); fp16: blocks of 8 and 4
        // rows, of 2 strips and 1, flushes of whole and part steps
        let sizes = [
            (8, 64, 300),
            (6, 48, 2),
            (64, 256, 64),
            (5, 16, 34),
            (48, 48, 96),
            (37, 32, 1088),
            (17, 16, 64), // tiles, then one row value by value
            (32, 32, 40), // 20 pairs: padded to whole tiles (32) on them
            (20, 48, 48), // 24 pairs padded to 32: tiles for 16 rows, 4 for the vector kernel
            (28, 48, 64), // tiles for 16 rows, then 12 for the vector kernel (6 + 6; without tiles 6 x 4 + 4)
        ];
        for (m, n, k) in sizes {
            // magnitudes of a gate gradient in `a`: fp16 needs the scale
            let a: Vec<f32> = values(m * k, 7).iter().map(|x| x * 1e-6).collect();
            let b = values(k * n, 5);
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let c0 = values(m * n, 3);
            let (sa, sb) = (scale_of(half, &a), scale_of(half, &b));
            for (b_t, accumulate) in [(false, false), (true, true)] {
                let packed = PackedHalf::new(half, if b_t { &bt } else { &b }, k, n, b_t).unwrap();
                let mut c = c0.clone();
                packed.matmul(&mut c, &a, m, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|p| {
                            rounded(half, sa, a[i * k + p]) * rounded(half, sb, b[p * n + j])
                        });
                        let base = if accumulate {
                            c0[i * n + j] as f64
                        } else {
                            0.0
                        };
                        let want = terms.clone().sum::<f64>() + base;
                        let magnitude = terms.map(f64::abs).sum::<f64>();
                        let what = format!("{m}x{n}x{k} ({i},{j}) {b_t}");
                        close(c[i * n + j], want, (magnitude, base, k), &what);
                    }
                }
            }
        }
        // A^T B with the depth in two ranges, odd and across the depth chunks
        // (tiles from 16 rows: depth padded to whole tiles, 48 x 48 in blocks
        // of 2 + 1, 515 pairs over three passes)
        let sizes = [
            (16, 32, 301, 7),
            (16, 272, 301, 7), // two panels of columns, the second of one strip
            (4, 16, 3, 1),
            (8, 64, 64, 0),
            (48, 48, 1030, 64),
        ];
        for (m, n, k, split) in sizes {
            let a = values(k * m, 11);
            let b: Vec<f32> = values(k * n, 13).iter().map(|x| x * 1e-6).collect();
            let (sa, sb) = (scale_of(half, &a), scale_of(half, &b));
            let mut c = vec![f32::NAN; m * n];
            let parts_a = a.split_at(split * m);
            let parts_b = b.split_at(split * n);
            assert!(matmul_at(half, &mut c, parts_a, parts_b, (m, n, k)));
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k)
                        .map(|p| rounded(half, sa, a[p * m + i]) * rounded(half, sb, b[p * n + j]));
                    let want = terms.clone().sum::<f64>();
                    let magnitude = terms.map(f64::abs).sum::<f64>();
                    let what = format!("a^T b {m}x{n}x{k} ({i},{j})");
                    close(c[i * n + j], want, (magnitude, 0.0, k), &what);
                }
            }
        }
        assert!(!matmul_at(
            half,
            &mut [0.0; 16],
            (&[0.0; 2], &[]),
            (&[0.0; 16], &[]),
            (2, 8, 1)
        ));
    }
}
