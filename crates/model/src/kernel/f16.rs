//! The fp16 side of the opt-in half precision ([`Precision::F16`](super::half::Precision)):
//! AVX512-FP16's `vfmadd231ph` does 32 multiply-adds an instruction, twice
//! an f32 FMA's, at the same rate. On the Xeons here without AMX tiles
//! (family 6 model 207), where `vdpbf16ps` runs at half the f32 rate, that
//! is the one way past the f32 peak.
//!
//! fp16 has 11 bits of mantissa (bf16 8) but 5 of exponent (bf16 and f32
//! 8), so two things keep its products sound:
//! - **Scaling.** Every operand is multiplied by a power of two (exact)
//!   that puts its largest magnitude in [8, 16) ([`scale_for`]) before it
//!   is rounded to fp16 (where a value just under 16 may round to 16): gate
//!   gradients of 1e-6 keep their digits, and a product is at most 2^8.
//!   The result is multiplied back in f32.
//! - **Sums in f32 every [`FLUSH`] steps.** The kernel sums at most
//!   `FLUSH` (64) products a lane in fp16 (at most 2^14, a quarter of
//!   fp16's 65504), then adds them to f32 sums: the error of an fp16 sum
//!   grows with its length; 64 roundings of 2^-11 each add up, as a random
//!   walk, to about 2^-9 of the sum (2^-5 at worst), about the bf16 path's
//!   rounding of its operands (2^-8 each). (32 steps ran the kernel ~8%
//!   slower.)
//!
//! Layout: as the bf16 pairs ([`super::half`]): a `u32` holds the fp16 of
//! depth `2p` in its low half and of `2p + 1` in its high half, so a lane
//! pair of the kernel's accumulators holds the even and the odd depths of
//! one column, added together when the block ends.

/// Steps of the depth (pairs) the kernel sums in fp16 before adding the
/// sums to f32: a lane adds `FLUSH` products, each at most 2^8.
pub const FLUSH: usize = 64;

// the most a lane's fp16 sum can reach (each product under 2^8) below fp16's largest value
const _: () = assert!(FLUSH * 256 <= 65504);

/// The power of two that puts `max_abs`, the largest magnitude of an
/// operand, in [8, 16): 1 where there is nothing to scale (zero, or not
/// finite: an infinity or NaN then reaches the result as it would in f32).
pub fn scale_for(max_abs: f32) -> f32 {
    if max_abs == 0.0 || !max_abs.is_finite() {
        return 1.0;
    }
    // max_abs = m 2^e with m in [1, 2): times 2^(3 - e) lands in [8, 16)
    let e = ((max_abs.to_bits() >> 23) & 0xff) as i32 - 127;
    let e = if e == -127 {
        // subnormal: its exponent from the leading bit of the mantissa
        -127 - (max_abs.to_bits().leading_zeros() as i32 - 9)
    } else {
        e
    };
    pow2(3 - e)
}

/// `2^e` as an f32 for `e` in f32's normal range, clamped to it.
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e.clamp(-126, 127) + 127) as u32) << 23)
}

/// The largest finite magnitude of `values` (0 for none): an infinity or
/// NaN among them reaches the products as it would in f32 whatever the
/// scale, and must not take the others' scale away.
pub fn max_abs<'a>(values: impl IntoIterator<Item = &'a [f32]>) -> f32 {
    let mut shifted = SHIFT as i32;
    for v in values {
        dispatch!(max_abs_shifted(v, &mut shifted));
    }
    f32::from_bits(shifted as u32 - SHIFT)
}

/// Added to a magnitude's bits for [`max_abs_shifted`]: finite ones
/// (below `0x7f80_0000`) stay positive as `i32`, an infinity's or NaN's
/// wrap negative.
const SHIFT: u32 = 0x0080_0000;

/// [`max_abs`] of one slice into `shifted` (the largest of its finite
/// magnitudes' bits plus [`SHIFT`], as `i32`): a signed maximum of integers
/// over a slice, which the compiler vectorises. (Over an iterator of
/// slices it did not: 5% of a `large` step in fp16; a select between the
/// bits and 0 made the step 10% slower.)
#[inline(always)]
fn max_abs_shifted(v: &[f32], shifted: &mut i32) {
    *shifted = v.iter().fold(*shifted, |m, x| {
        m.max((x.to_bits() & 0x7fff_ffff).wrapping_add(SHIFT) as i32)
    });
}

/// `x` rounded to fp16, to nearest even (F16C's conversion).
///
/// # Panics
/// Where the CPU has no F16C (every CPU with AVX512-FP16 has it).
pub fn to_f16(x: f32) -> u16 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("f16c") {
        // SAFETY: F16C is available.
        return unsafe { to_f16_f16c(x) };
    }
    panic!("fp16 conversion without F16C")
}

/// The f32 value of an fp16 (F16C's conversion, exact).
///
/// # Panics
/// Where the CPU has no F16C.
pub fn from_f16(x: u16) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("f16c") {
        // SAFETY: F16C is available.
        return unsafe { from_f16_f16c(x) };
    }
    panic!("fp16 conversion without F16C")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
fn to_f16_f16c(x: f32) -> u16 {
    use std::arch::x86_64::*;
    let v = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    _mm_extract_epi16::<0>(v) as u16
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
fn from_f16_f16c(x: u16) -> f32 {
    use std::arch::x86_64::*;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x as i32)))
}

/// `C (+)= inv.0 inv.1 · A B` with `A` and `B` in pairs of fp16 (`u32`: the
/// element of depth `2p` in the low half, `2p + 1` in the high half), `C`
/// in f32, read as the bf16 kernel reads them (`gemm_bf16`): `k` counts
/// pairs, `A[i][p]` at `a[i * a_rs + p * a_cs]`, strip `s`'s row `p` at
/// `b[s * b_strip + p * ldb]`, 16 pairs. `inv` undoes the operands' scales, one each, applied one after the other
/// (their product may leave f32's range where the result does not)
/// ([`scale_for`]). Blocks of 8 (then 4) rows by 2 (then 1) strips.
///
/// # Safety
/// AVX-512F/BW/DQ and AVX512-FP16; `m % 4 == 0`, `n % 16 == 0`, and the
/// pointers cover every element the strides address.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512fp16")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_f16(
    m: usize,
    n: usize,
    k: usize,
    a: *const u32,
    (a_rs, a_cs): (usize, usize),
    b: *const u32,
    (ldb, b_strip): (usize, usize),
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    inv: (f32, f32),
) {
    // blocks of 8 rows by 2 strips: 16 accumulators (the compiler spilled
    // 24 of them, the f32 kernel's 6 x 4), reading 2 vectors of B a step,
    // for 16 multiply-adds; 4 x 4 blocks read 4 and ran slower
    for s in (0..n / 16).step_by(2) {
        let take = (n / 16 - s).min(2);
        for i in (0..m).step_by(8) {
            let rows = (m - i).min(8);
            // SAFETY: rows i..i + rows <= m, strips s..s + take <= n / 16, as documented.
            unsafe {
                let (ai, bs, ci) = (a.add(i * a_rs), b.add(s * b_strip), c.add(i * ldc + 16 * s));
                let (ad, bd) = ((a_rs, a_cs), (ldb, b_strip));
                let out = (ci, ldc, accumulate, inv);
                match (rows, take) {
                    (8, 2) => block_f16::<8, 2>(k, ai, ad, bs, bd, out),
                    (8, _) => block_f16::<8, 1>(k, ai, ad, bs, bd, out),
                    (_, 2) => block_f16::<4, 2>(k, ai, ad, bs, bd, out),
                    _ => block_f16::<4, 1>(k, ai, ad, bs, bd, out),
                }
            }
        }
    }
}

/// `steps` (at most [`FLUSH`]) steps of the depth of a block of
/// [`gemm_f16`] in fp16, added to its f32 `sums`. Out of line so that the
/// sums stay in memory: inlined, the compiler kept them in registers and
/// spilled the accumulators instead, every step.
///
/// # Safety
/// As [`gemm_f16`], for this block's rows and strips and these steps.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512fp16")]
unsafe fn flush_f16<const R: usize, const S: usize>(
    steps: usize,
    a: *const u32,
    (a_rs, a_cs): (usize, usize),
    b: *const u32,
    (ldb, b_strip): (usize, usize),
    sums: &mut [[[std::arch::x86_64::__m512; 2]; S]; R],
) {
    use std::arch::x86_64::*;
    // SAFETY (whole block): indices stay inside the operands as documented.
    unsafe {
        // one step of the depth: the products added to the accumulators,
        // or, on the `first` step, put in them
        let step = |ap: *const u32, bp: *const u32, acc: &mut [[__m512; S]; R], first: bool| {
            let mut bv = [_mm512_setzero_ph(); S];
            for (q, v) in bv.iter_mut().enumerate() {
                *v = _mm512_castsi512_ph(_mm512_loadu_si512(bp.add(q * b_strip).cast()));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm512_castsi512_ph(_mm512_set1_epi32(*ap.add(r * a_rs) as i32));
                for (v, w) in row.iter_mut().zip(&bv) {
                    *v = _mm512_castph_ps(if first {
                        _mm512_mul_ph(x, *w)
                    } else {
                        _mm512_fmadd_ph(x, *w, _mm512_castps_ph(*v))
                    });
                }
            }
        };
        // held as f32 vectors between steps (fp16 vectors were spilled to
        // the stack every step), and started by the first step's products
        // (started at zero, 24 of them were spilled too)
        let mut acc = [[_mm512_setzero_ps(); S]; R];
        step(a, b, &mut acc, true);
        let (mut ap, mut bp) = (a.wrapping_add(a_cs), b.wrapping_add(ldb));
        for _ in 1..steps {
            step(ap, bp, &mut acc, false);
            // past the operands after the last step, never read there
            ap = ap.wrapping_add(a_cs);
            bp = bp.wrapping_add(ldb);
        }
        for (sum_row, acc_row) in sums.iter_mut().zip(&acc) {
            for (sum, v) in sum_row.iter_mut().zip(acc_row) {
                let bits = _mm512_castps_si512(*v);
                let lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));
                let hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(bits));
                sum[0] = _mm512_add_ps(sum[0], lo);
                sum[1] = _mm512_add_ps(sum[1], hi);
            }
        }
    }
}

/// One block of [`gemm_f16`]: `R` rows by `S` strips, `R x S` fp16
/// accumulators over [`FLUSH`] steps at a time, added to f32 sums kept in
/// lane order (even and odd depths side by side) and combined at the end.
///
/// # Safety
/// As [`gemm_f16`], for this block's rows and strips.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512fp16")]
unsafe fn block_f16<const R: usize, const S: usize>(
    k: usize,
    a: *const u32,
    (a_rs, a_cs): (usize, usize),
    b: *const u32,
    (ldb, b_strip): (usize, usize),
    (c, ldc, accumulate, inv): (*mut f32, usize, bool, (f32, f32)),
) {
    use std::arch::x86_64::*;
    // SAFETY (whole block): indices stay inside the operands as documented.
    unsafe {
        // lanes 2j and 2j + 1 of a strip's sums: column j's even and odd depths
        let mut sums = [[[_mm512_setzero_ps(); 2]; S]; R];
        let (mut ap, mut bp) = (a, b);
        let mut left = k;
        while left > 0 {
            let steps = left.min(FLUSH);
            left -= steps;
            flush_f16::<R, S>(steps, ap, (a_rs, a_cs), bp, (ldb, b_strip), &mut sums);
            ap = ap.wrapping_add(steps * a_cs);
            bp = bp.wrapping_add(steps * ldb);
        }
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let (inv_a, inv_b) = (_mm512_set1_ps(inv.0), _mm512_set1_ps(inv.1));
        for (r, sum_row) in sums.iter().enumerate() {
            for (q, [lo, hi]) in sum_row.iter().enumerate() {
                let both = _mm512_add_ps(
                    _mm512_permutex2var_ps(*lo, even, *hi),
                    _mm512_permutex2var_ps(*lo, odd, *hi),
                );
                let both = _mm512_mul_ps(both, inv_a);
                let at = c.add(r * ldc + 16 * q);
                let out = if accumulate {
                    _mm512_fmadd_ps(both, inv_b, _mm512_loadu_ps(at))
                } else {
                    _mm512_mul_ps(both, inv_b)
                };
                _mm512_storeu_ps(at, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scale puts the largest magnitude in [8, 16), normal, subnormal
    /// or huge, and leaves zero and the non-finite alone.
    #[test]
    fn scales_put_the_largest_magnitude_in_8_to_16() {
        for x in [1.0f32, 31.9, 32.0, 1e-6, 3e-39, 1e-45, 1e30, f32::MAX, 16.0] {
            let s = scale_for(x);
            assert_eq!(s.log2().fract(), 0.0, "{x}: {s} a power of two");
            let scaled = x as f64 * s as f64;
            if x >= 2f32.powi(-122) && x <= 2f32.powi(122) {
                assert!((8.0..16.0).contains(&scaled), "{x} -> {scaled}");
            } else {
                // the scale clamped to f32's normal range, in the right direction
                assert!(scaled > x as f64 || x > 1.0, "{x} -> {scaled}");
            }
        }
        assert_eq!(scale_for(0.0), 1.0);
        assert_eq!(scale_for(f32::INFINITY), 1.0);
        assert_eq!(scale_for(f32::NAN), 1.0);
        assert_eq!(max_abs([&[1.0, -3.0][..], &[2.0]]), 3.0);
        assert_eq!(max_abs([&[1.0, f32::NAN, f32::NEG_INFINITY][..]]), 1.0);
        assert_eq!(max_abs(std::iter::empty::<&[f32]>()), 0.0);
    }

    /// F16C's rounding: to nearest even, fp16's range and subnormals.
    #[test]
    #[allow(clippy::print_stderr)] // says when this CPU has no F16C
    fn fp16_rounding_is_to_nearest_even() {
        if !std::is_x86_feature_detected!("f16c") {
            eprintln!("fp16_rounding_is_to_nearest_even: no F16C here: SKIPPED");
            return;
        }
        assert_eq!(to_f16(1.0), 0x3c00);
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: to the even one, 1
        assert_eq!(to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(from_f16(to_f16(-2.5)), -2.5);
        assert_eq!(from_f16(to_f16(65504.0)), 65504.0);
        assert_eq!(from_f16(to_f16(1e6)), f32::INFINITY);
        assert_eq!(from_f16(to_f16(2f32.powi(-24))), 2f32.powi(-24));
        assert!(from_f16(to_f16(f32::NAN)).is_nan());
    }
}
