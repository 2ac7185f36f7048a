//! Parameter initialisation on the host, from a seed, so that a model starts
//! from the same numbers on every device.

use burn::config::Config;
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use tokenizer::rng::Rng;

/// How parameters are drawn.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum InitScheme {
    /// The notebook, literally: weights from `tf.truncated_normal(shape, -0.1, 0.1)`,
    /// which is a normal of mean -0.1 and standard deviation 0.1 re-drawn
    /// outside two deviations (so in `[-0.3, 0.1]`); embeddings uniform in
    /// `[-1, 1)`; biases 0.
    Notebook,
    /// A sensible default: weights uniform in `±1/sqrt(fan_in)` (PyTorch's LSTM
    /// and Linear), forget-gate bias 1 (Jozefowicz et al. 2015), embeddings
    /// normal with deviation 1, other biases 0.
    Default,
}

/// A normal draw of mean `mean` and deviation `std`, re-drawn outside `mean ± 2 std`.
pub fn truncated_normal(rng: &mut Rng, mean: f32, std: f32) -> f32 {
    loop {
        // Box-Muller
        let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
        let u2 = rng.next_f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        if z.abs() <= 2.0 {
            return mean + std * z as f32;
        }
    }
}

/// A standard normal draw.
pub fn normal(rng: &mut Rng) -> f32 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A parameter of shape `[rows, cols]` whose values come from `f`.
pub fn param_from_fn(
    rows: usize,
    cols: usize,
    device: &Device,
    mut f: impl FnMut() -> f32,
) -> Param<Tensor<2>> {
    let values: Vec<f32> = (0..rows * cols).map(|_| f()).collect();
    Param::from_tensor(Tensor::from_data(
        TensorData::new(values, [rows, cols]),
        device,
    ))
}

/// A weight matrix `[fan_in, fan_out]` drawn by `scheme`.
pub fn weight(
    scheme: InitScheme,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
    device: &Device,
) -> Param<Tensor<2>> {
    match scheme {
        InitScheme::Notebook => {
            param_from_fn(rows, cols, device, || truncated_normal(rng, -0.1, 0.1))
        }
        InitScheme::Default => {
            let k = 1.0 / (rows as f64).sqrt();
            param_from_fn(rows, cols, device, || {
                ((rng.next_f64() * 2.0 - 1.0) * k) as f32
            })
        }
    }
}

/// An embedding table `[rows, cols]` drawn by `scheme`.
pub fn embedding(
    scheme: InitScheme,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
    device: &Device,
) -> Param<Tensor<2>> {
    match scheme {
        InitScheme::Notebook => {
            param_from_fn(rows, cols, device, || (rng.next_f64() * 2.0 - 1.0) as f32)
        }
        InitScheme::Default => param_from_fn(rows, cols, device, || normal(rng)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_normal_matches_the_notebook_distribution() {
        let mut rng = Rng::new(0);
        let xs: Vec<f32> = (0..200_000)
            .map(|_| truncated_normal(&mut rng, -0.1, 0.1))
            .collect();
        assert!(xs.iter().all(|&x| (-0.3..=0.1).contains(&x)));
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        // a normal truncated at 2 deviations keeps the mean and has deviation 0.0880 * (0.1 / 0.1)
        assert!((mean + 0.1).abs() < 1e-3, "mean {mean}");
        assert!((var.sqrt() - 0.0880).abs() < 1e-3, "std {}", var.sqrt());
    }
}
