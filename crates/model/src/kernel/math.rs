//! Fast `exp`, `sigmoid` and `tanh` for the gate arithmetic: branch-free,
//! so that loops over them vectorise; accuracy stated on each and tested.
//! Also the vectorised loops built on them and dropout's mask fill.

/// 1.5 * 2^23: adding it to a float below 2^22 in magnitude rounds it to
/// an integer (to nearest, ties to even), left in the low mantissa bits.
pub(super) const ROUND: f32 = 12_582_912.0;

/// ln 2 in two parts, `LN2_HI` exact in few bits: `x - n LN2_HI - n LN2_LO`
/// keeps the digits `x - n ln 2` would lose (`exp`, and the SIMD cell
/// steps' `e^x`, which follows it).
pub(super) const LN2_HI: f32 = 0.693_145_75;
pub(super) const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x`, relative error below 2e-7, branch-free so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
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

/// [`tanh`] of every value, in place, compiled for the CPU's widest
/// vectors; NaN stays NaN (as the library `tanh` does: a diverged model
/// must not look finite), where [`tanh`] alone would give -1.
pub fn tanh_all(v: &mut [f32]) {
    #[inline(always)]
    fn each(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = if x.is_nan() { *x } else { tanh(*x) };
        }
    }
    dispatch!(each(v));
}

/// [`exp`] of every value, in place, compiled for the CPU's widest vectors;
/// NaN stays NaN (as the library `exp` does), where [`exp`] alone would
/// give a finite value.
pub fn exp_all(v: &mut [f32]) {
    #[inline(always)]
    fn each(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = if x.is_nan() { *x } else { exp(*x) };
        }
    }
    dispatch!(each(v));
}

/// The sum of each column of `x` (rows of `width` values), each summed
/// over the rows in order, compiled for the CPU's widest vectors (they run
/// across the columns): a bias's gradient from its rows'.
///
/// # Panics
/// On `x` not of whole rows.
pub fn column_sums(x: &[f32], width: usize) -> Vec<f32> {
    assert!(
        x.is_empty() || (width > 0 && x.len().is_multiple_of(width)),
        "rows of {width} values"
    );
    #[inline(always)]
    fn add_rows(x: &[f32], sums: &mut [f32]) {
        for row in x.chunks_exact(sums.len()) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
    }
    let mut sums = vec![0.0f32; width];
    if !x.is_empty() {
        dispatch!(add_rows(x, &mut sums));
    }
    sums
}

/// Fills `out` with `scale` or 0: value `i` is `scale` when its 32 random
/// bits are below `threshold`. The bits are SplitMix64's output for the
/// counter `seed + i / 2` (each 64-bit word gives two values): no value
/// depends on another, so the loop vectorises, unlike a generator's chain.
pub fn fill_bernoulli(out: &mut [f32], threshold: u64, scale: f32, seed: u64) {
    #[inline(always)]
    fn mix(x: u64) -> u64 {
        let z = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Values from the counter `first` on; whole pairs in a loop without
    /// branches (it vectorises), the odd last value after it.
    #[inline(always)]
    fn each(out: &mut [f32], threshold: u64, scale: f32, first: u64) {
        let value = |bits: u64| if bits < threshold { scale } else { 0.0 };
        let mut pairs = out.chunks_exact_mut(2);
        let mut counter = first;
        for pair in &mut pairs {
            let r = mix(counter);
            pair[0] = value(r & 0xFFFF_FFFF);
            pair[1] = value(r >> 32);
            counter = counter.wrapping_add(1);
        }
        if let [last] = pairs.into_remainder() {
            *last = value(mix(counter) & 0xFFFF_FFFF);
        }
    }
    // parts of an even length, so that each starts at a whole counter
    let mut parts: Vec<(u64, &mut [f32])> = out
        .chunks_mut(FILL_PART)
        .enumerate()
        .map(|(k, part)| (seed.wrapping_add((k * FILL_PART / 2) as u64), part))
        .collect();
    super::pool::parallel_for_each_mut(&mut parts, |(first, part)| {
        dispatch!(each(part, threshold, scale, *first))
    });
}

/// Values per part of [`fill_bernoulli`] given to a thread (even: a part
/// starts at a whole counter; a notebook-dropout step draws 123 k values).
const FILL_PART: usize = 1 << 15;
const _: () = assert!(FILL_PART.is_multiple_of(2), "parts start at whole counters");

/// The sum of the squares of `x`, accumulated in f64 in 16 lanes: one
/// running sum was a chain of dependent additions (four cycles each), 3.6%
/// of a one-thread notebook-bigram step in the optimiser's gradient norm.
pub fn sum_squares(x: &[f32]) -> f64 {
    #[inline(always)]
    fn each(x: &[f32], out: &mut f64) {
        let mut lanes = [0.0f64; 16];
        let blocks = x.chunks_exact(16);
        let rest = blocks.remainder();
        for block in blocks {
            for (s, &v) in lanes.iter_mut().zip(block) {
                *s += v as f64 * v as f64;
            }
        }
        *out = lanes.iter().sum::<f64>() + rest.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
    }
    let mut sum = 0.0;
    dispatch!(each(x, &mut sum));
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each column's sum over the rows, at a width that fills vectors and
    /// leaves a tail (37 = 2 x 16 + 5), and no rows.
    #[test]
    fn column_sums_add_each_column_over_the_rows() {
        let (rows, width) = (9, 37);
        let x: Vec<f32> = (0..rows * width).map(|i| (i % 11) as f32 - 5.0).collect();
        let sums = column_sums(&x, width);
        for (j, &s) in sums.iter().enumerate() {
            let want: f32 = (0..rows).map(|r| x[r * width + j]).sum();
            assert_eq!(s, want, "column {j}");
        }
        assert_eq!(column_sums(&[], 4), vec![0.0; 4]);
    }

    /// The kept fraction is the asked one, an odd length gets its last value,
    /// only 0 and the scale appear, and the seed alone decides the mask.
    #[test]
    fn bernoulli_fill_keeps_the_asked_fraction() {
        let threshold = (0.3 * 4_294_967_296.0) as u64;
        let mut a = vec![-1.0f32; 100_001];
        fill_bernoulli(&mut a, threshold, 2.5, 7);
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.5));
        let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
        assert!((kept - 0.3).abs() < 0.01, "kept {kept}");
        let mut b = vec![0.0f32; 100_001];
        fill_bernoulli(&mut b, threshold, 2.5, 7);
        assert_eq!(a, b, "same seed, same mask");
        fill_bernoulli(&mut b, threshold, 2.5, 8);
        assert_ne!(a, b, "another seed, another mask");
    }

    /// Every value is the one its definition gives (SplitMix64 of `seed +
    /// i / 2`, low half for even `i`, high half for odd), across the parts
    /// given to threads and for an odd length, on one thread and on two.
    #[test]
    fn bernoulli_fill_follows_its_definition_across_parts() {
        let _threads = crate::kernel::pool::TestThreads::lock();
        let splitmix = |x: u64| {
            let z = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (threshold, seed, n) = (3_000_000_000u64, u64::MAX - 5, 3 * FILL_PART + 7);
        let want: Vec<f32> = (0..n)
            .map(|i| {
                let r = splitmix(seed.wrapping_add((i / 2) as u64));
                let bits = if i % 2 == 0 { r & 0xFFFF_FFFF } else { r >> 32 };
                if bits < threshold { 1.5 } else { 0.0 }
            })
            .collect();
        for threads in [1, 2] {
            crate::kernel::pool::set_threads(threads);
            let mut got = vec![-1.0f32; n];
            crate::kernel::pool::run_inside(|| fill_bernoulli(&mut got, threshold, 1.5, seed));
            assert_eq!(got, want, "{threads} threads");
        }
    }

    /// The lanes' sum equals a plain f64 sum (to rounding), with a remainder
    /// after the 16-lane blocks and for an empty slice.
    #[test]
    fn sum_squares_matches_a_plain_sum() {
        for n in [0usize, 1, 15, 16, 17, 1000, 100_003] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1001) as f32 / 100.0 - 5.0)
                .collect();
            let plain: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let fast = sum_squares(&x);
            assert!(
                (fast - plain).abs() <= 1e-12 * plain.max(1.0),
                "{n}: {fast} vs {plain}"
            );
        }
    }

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
        let mut v = [0.0, -1.0, 2.5, f32::NAN, -200.0];
        exp_all(&mut v);
        assert_eq!(v[0], 1.0);
        assert!(((v[1] as f64 - (-1f64).exp()) / (-1f64).exp()).abs() < 3e-7);
        assert!(((v[2] as f64 - 2.5f64.exp()) / 2.5f64.exp()).abs() < 3e-7);
        assert!(v[3].is_nan(), "NaN stays NaN");
        assert!(v[4] >= 0.0 && v[4] < 1e-37);
    }
}
