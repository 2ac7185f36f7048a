//! A small, fast, seedable random number generator (xoshiro256++ seeded by
//! SplitMix64) whose whole state is four words, so it can be saved in a
//! checkpoint and restored exactly.

use serde::{Deserialize, Serialize};

/// xoshiro256++ (Blackman and Vigna).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from one number.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Rng {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// A generator for stream `stream` of `seed` (independent streams from one seed).
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut x = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng::new(splitmix64(&mut x))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, 1)` with 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform integer in `[0, n)` (`n > 0`), by Lemire's multiply-shift.
    /// The rejection threshold `2^64 mod n` (a division) is computed only
    /// when the low half falls under `n`, as it can only then be under the
    /// threshold: the same draws, without a division per call (the mirror
    /// sampler draws thousands of windows a batch).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform integer in `[lo, hi]`.
    pub fn range_inclusive(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi);
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// Index drawn from unnormalised non-negative weights (last index on rounding).
    pub fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f64 = weights.iter().map(|&w| w.max(0.0) as f64).sum();
        let r = self.next_f64() * total;
        let mut acc = 0.0;
        for (i, &w) in weights.iter().enumerate() {
            acc += w.max(0.0) as f64;
            if acc > r {
                return i;
            }
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `below` draws what Lemire's method with the threshold computed at
    /// every call draws, value for value and generator state for state,
    /// at bounds that reject often (3 x 2^62: a quarter of the draws) and
    /// never (powers of two), large and small.
    #[test]
    fn below_equals_the_method_with_a_division_per_call() {
        fn reference(rng: &mut Rng, n: u64) -> u64 {
            loop {
                let m = (rng.next_u64() as u128) * (n as u128);
                if (m as u64) >= n.wrapping_neg() % n {
                    return (m >> 64) as u64;
                }
            }
        }
        for n in [
            1,
            2,
            3,
            7,
            26,
            1000,
            1 << 40,
            (1 << 63) + 1,
            3 << 62,
            u64::MAX,
        ] {
            let (mut a, mut b) = (Rng::new(n), Rng::new(n));
            for _ in 0..20_000 {
                assert_eq!(a.below(n), reference(&mut b, n), "n = {n}");
            }
            assert_eq!(
                a.next_u64(),
                b.next_u64(),
                "n = {n}: the same number of draws"
            );
        }
    }

    #[test]
    fn reproducible_and_roughly_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut counts = [0usize; 10];
        let mut r = Rng::new(1);
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let mut r = Rng::new(3);
        let mut w = [0usize; 3];
        for _ in 0..30_000 {
            w[r.weighted(&[1.0, 0.0, 2.0])] += 1;
        }
        assert_eq!(w[1], 0);
        assert!((9_000..11_000).contains(&w[0]), "{w:?}");
        assert_ne!(Rng::derive(1, 0).next_u64(), Rng::derive(1, 1).next_u64());
    }
}
