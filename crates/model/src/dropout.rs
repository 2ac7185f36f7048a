//! Dropout for the non-recurrent connections (Zaremba et al., arXiv 1409.2329).
//!
//! Masks come from the device's random generator; the trainer seeds it for
//! every step, so a run (and a resumed run) draws the same masks.

use burn::tensor::{Distribution, Tensor};

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
        let mask = x.random_like(Distribution::Bernoulli(self.keep_prob));
        x * mask.mul_scalar(1.0 / self.keep_prob)
    }
}
