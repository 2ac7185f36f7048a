//! Dropout for the non-recurrent connections (Zaremba et al., arXiv 1409.2329).
//!
//! Each mask is seeded by one draw from the device's random generator,
//! which the trainer seeds for every step, so a run (and a resumed run)
//! draws the same masks. The mask itself is made on the host, two values per
//! 64 random bits of a counter-based generator (vectorised), already scaled:
//! Burn's per-element Bernoulli sampler (ChaCha) took a fifth of a
//! `notebook-dropout` step.

use burn::tensor::{Distribution, Int, Tensor, TensorData};

/// Inverted dropout: keeps each value with probability `keep_prob` and
/// scales the kept ones by `1 / keep_prob`, so evaluation needs no scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of keeping a value, in `(0, 1]`.
    pub keep_prob: f64,
}

impl Dropout {
    /// A dropout layer keeping values with probability `keep_prob`.
    ///
    /// # Panics
    /// If `keep_prob` is not in `(0, 1]` (configurations are validated before this).
    pub fn new(keep_prob: f64) -> Self {
        assert!(
            keep_prob > 0.0 && keep_prob <= 1.0,
            "keep_prob must be in (0, 1], got {keep_prob}"
        );
        Dropout { keep_prob }
    }

    /// Whether [`forward`](Self::forward) changes anything.
    pub fn active(&self, train: bool) -> bool {
        train && self.keep_prob < 1.0
    }

    /// Applies dropout when `train` is true; the identity otherwise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, train: bool) -> Tensor<D> {
        if !self.active(train) {
            return x;
        }
        let device = x.device();
        let shape = x.shape();
        // one draw of the device's generator seeds the mask (two 30-bit halves:
        // they fit every backend's integer type)
        let halves =
            Tensor::<1, Int>::random([2], Distribution::Uniform(0.0, 2f64.powi(30)), &device)
                .into_data()
                .try_into_vec_as::<i64>()
                .expect("two seed halves");
        let seed = ((halves[0] as u64) << 30) ^ halves[1] as u64;
        let mask = keep_mask(shape.num_elements(), self.keep_prob, seed);
        x * Tensor::from_data(TensorData::new(mask, shape), &device)
    }
}

/// `n` values, each `1 / keep_prob` with probability `keep_prob`, else 0:
/// a value is kept when its 32 random bits fall below `keep_prob * 2^32`.
pub fn keep_mask(n: usize, keep_prob: f64, seed: u64) -> Vec<f32> {
    let threshold = (keep_prob * 4_294_967_296.0).min(u32::MAX as f64) as u64;
    let mut mask = vec![0.0f32; n];
    crate::kernel::math::fill_bernoulli(&mut mask, threshold, (1.0 / keep_prob) as f32, seed);
    mask
}
