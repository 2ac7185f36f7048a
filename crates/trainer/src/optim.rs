//! Optimisers (SGD, Adam) with the notebook's gradient clipping.
//!
//! Clipping is TensorFlow's `clip_by_global_norm`: the L2 norm of all
//! gradients together is computed and, when it exceeds `clip_norm`, every
//! gradient is scaled by `clip_norm / norm`. (Burn's
//! `GradientClippingConfig::Norm` clips each tensor on its own, which is not
//! the same.) On a GPU device everything stays there: no value is read
//! back to the host during a step; on CPU devices the update runs as host
//! loops over the parameters' values, in their own buffers where the
//! backend allows (flex; see [`Optimizer`]).
//!
//! State is kept by parameter name, so it can be checkpointed and restored exactly.
//!
//! With an `average` (Polyak averaging as an exponential moving average,
//! `a <- average * a + (1 - average) * w` after every update, started at the
//! first update's weights) the optimiser also keeps a running average of the
//! weights: the noise of the last steps' updates averages out, and the
//! averaged weights are what a run publishes and validates.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Gradients, Tensor};
use model::buffer::{update_values, with_values};
use model::params::{for_each_param_grad, map_params, named_grads};

use crate::recipe::OptimizerKind;
use crate::safetensors::{HostTensor, SafeTensors};

/// Adam's constants (Kingma and Ba's defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;
/// Parameters per work item of the host update (256 KiB of each array).
const CHUNK: usize = 1 << 16;

/// An optimiser with global-norm clipping.
///
/// On devices whose tensors live in this process (flex, ndarray) the update
/// runs as plain loops over the parameters' values (`host` mode): a handful
/// of copies instead of a hundred small tensor operations per step. On other
/// devices it runs as tensor operations on the device.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    clip_norm: f64,
    host: bool,
    /// Adam's first and second moments by parameter name (device mode).
    moments: BTreeMap<String, (Tensor<2>, Tensor<2>)>,
    /// The same, as host vectors with their matrix shape (host mode).
    host_moments: BTreeMap<String, HostMoments>,
    /// Updates made (Adam's bias correction).
    t: u64,
    /// Weight of the old average in each update of it (0 = no average).
    average: f64,
    /// The weights' running averages by parameter name (device mode).
    averages: BTreeMap<String, Tensor<2>>,
    /// The same, as host vectors with their matrix shape (host mode).
    host_averages: BTreeMap<String, ([usize; 2], Vec<f32>)>,
}

/// Adam's moments of one parameter on the host: its matrix shape, first and second moments.
type HostMoments = ([usize; 2], Vec<f32>, Vec<f32>);

/// What a step measured.
#[derive(Debug, Clone)]
pub enum GradNorm {
    /// On the device, `[1]` (read it only when needed).
    Device(Box<Tensor<1>>),
    /// Already on the host.
    Host(f64),
}

impl GradNorm {
    /// The value (a device read in device mode).
    pub fn value(self) -> f64 {
        match self {
            GradNorm::Host(v) => v,
            GradNorm::Device(t) => t.into_data().try_into_vec_as::<f64>().expect("f64")[0],
        }
    }
}

/// What a step measured.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: GradNorm,
}

impl Optimizer {
    /// A fresh optimiser for parameters on `device`.
    pub fn new(kind: OptimizerKind, clip_norm: f64, device: &Device) -> Self {
        Optimizer {
            kind,
            clip_norm,
            host: model::device::runs_on_host(device),
            moments: BTreeMap::new(),
            host_moments: BTreeMap::new(),
            t: 0,
            average: 0.0,
            averages: BTreeMap::new(),
            host_averages: BTreeMap::new(),
        }
    }

    /// Keeps a running average of the weights with this weight of the old
    /// average per update (`train.average`; 0 = none).
    pub fn with_average(mut self, average: f64) -> Self {
        self.average = average;
        self
    }

    /// Forces host mode on or off (for tests comparing the two).
    pub fn with_host(mut self, host: bool) -> Self {
        self.host = host;
        self
    }

    /// Updates made so far.
    pub fn updates(&self) -> u64 {
        self.t
    }

    /// One update of every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, StepStats) {
        if self.host {
            return self.step_host(module, grads, lr);
        }
        let mut named = named_grads(&module, grads);
        let device = named
            .values()
            .next()
            .map(|g| g.device())
            .unwrap_or_default();
        let sq: Tensor<1> = named
            .values()
            .map(|g| g.clone().square().sum())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([1], &device));
        let grad_norm = sq.sqrt();
        let scale: Option<Tensor<2>> = (self.clip_norm > 0.0).then(|| {
            grad_norm
                .clone()
                .clamp_min(self.clip_norm)
                .recip()
                .mul_scalar(self.clip_norm)
                .reshape([1, 1])
        });
        self.t += 1;
        let t = self.t;
        let (kind, average) = (self.kind, self.average);
        let (moments, averages) = (&mut self.moments, &mut self.averages);
        let module = map_params(module, |name, value| {
            let Some(g) = named.remove(name) else {
                return value;
            };
            let g = match &scale {
                Some(s) => g * s.clone(),
                None => g,
            };
            let value = match kind {
                OptimizerKind::Sgd => value - g.mul_scalar(lr),
                OptimizerKind::Adam => {
                    let (m, v) = moments
                        .remove(name)
                        .unwrap_or_else(|| (g.zeros_like(), g.zeros_like()));
                    let m = m.mul_scalar(BETA1) + g.clone().mul_scalar(1.0 - BETA1);
                    let v = v.mul_scalar(BETA2) + g.square().mul_scalar(1.0 - BETA2);
                    let c1 = 1.0 - BETA1.powi(t as i32);
                    let c2 = 1.0 - BETA2.powi(t as i32);
                    let step = (m.clone().div_scalar(c1))
                        / (v.clone().div_scalar(c2).sqrt().add_scalar(EPSILON));
                    moments.insert(name.to_string(), (m, v));
                    value - step.mul_scalar(lr)
                }
            };
            if average > 0.0 {
                let a = match averages.remove(name) {
                    // the host loop's form, so that both modes round alike
                    Some(a) => a.clone() + (value.clone() - a).mul_scalar(1.0 - average),
                    None => value.clone(),
                };
                averages.insert(name.to_string(), a);
            }
            value
        });
        (
            module,
            StepStats {
                grad_norm: GradNorm::Device(Box::new(grad_norm)),
            },
        )
    }

    fn step_host<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, StepStats) {
        // gradients and parameters are read and updated in their own buffers
        // where the backend allows (`with_values`, `update_values`): copying
        // them out and back was a third of the optimiser's time
        let mut named: BTreeMap<String, Tensor<2>> = BTreeMap::new();
        let mut sq = 0.0f64;
        for_each_param_grad(&module, grads, |name, _value, grad| {
            if let Some(g) = grad {
                sq += with_values(&g, model::kernel::math::sum_squares);
                named.insert(name.to_string(), g);
            }
        });
        let norm = sq.sqrt();
        let scale = clip_factor(norm, self.clip_norm);
        self.t += 1;
        let (t, kind, average) = (self.t, self.kind, self.average);
        let (moments, averages) = (&mut self.host_moments, &mut self.host_averages);
        let module = map_params(module, |name, value| {
            let Some(g) = named.remove(name) else {
                return value;
            };
            let dims = value.dims();
            with_values(&g, |g| {
                update_values(value, |v| {
                    host_update(v, g, kind, moments, name, dims, (lr, scale, t));
                    if average > 0.0 {
                        host_update_average(averages, name, dims, v, average);
                    }
                })
            })
        });
        (
            module,
            StepStats {
                grad_norm: GradNorm::Host(norm),
            },
        )
    }

    /// The state as named host tensors (`optim.<param>.m`, `optim.<param>.v`) and the update count.
    pub fn save(&self, out: &mut SafeTensors) {
        for (name, (m, v)) in &self.moments {
            out.push(format!("optim.{name}.m"), to_host(m));
            out.push(format!("optim.{name}.v"), to_host(v));
        }
        for (name, (dims, m, v)) in &self.host_moments {
            out.push(
                format!("optim.{name}.m"),
                HostTensor::new(dims.to_vec(), m.clone()),
            );
            out.push(
                format!("optim.{name}.v"),
                HostTensor::new(dims.to_vec(), v.clone()),
            );
        }
        for (name, a) in &self.averages {
            out.push(format!("optim.{name}.avg"), to_host(a));
        }
        for (name, (dims, a)) in &self.host_averages {
            out.push(
                format!("optim.{name}.avg"),
                HostTensor::new(dims.to_vec(), a.clone()),
            );
        }
        out.metadata
            .insert("optim.updates".into(), self.t.to_string());
    }

    /// `weights` (named as the module's parameters) with each parameter
    /// replaced by its running average; `None` without averaging. Checked
    /// by [`check_averages`](Self::check_averages) when restored.
    pub fn averaged(&self, weights: &SafeTensors) -> Option<SafeTensors> {
        if self.average <= 0.0 || self.t == 0 {
            return None;
        }
        let tensors = weights.tensors.iter().map(|(name, t)| {
            let average = self.average_of(name).unwrap_or_else(|| t.data.clone());
            (name.clone(), HostTensor::new(t.shape.clone(), average))
        });
        Some(SafeTensors {
            tensors: tensors.collect(),
            metadata: weights.metadata.clone(),
        })
    }

    /// Checks restored averages against the module's `weights`: when the
    /// optimiser averages, every parameter has an average of its size.
    pub fn check_averages(&self, weights: &SafeTensors) -> Result<(), String> {
        if self.average <= 0.0 || self.t == 0 {
            return Ok(());
        }
        for (name, t) in &weights.tensors {
            let len = self
                .average_of(name)
                .ok_or_else(|| format!("missing optim.{name}.avg"))?
                .len();
            if len != t.data.len() {
                return Err(format!(
                    "optim.{name}.avg has {len} values, the parameter {}",
                    t.data.len()
                ));
            }
        }
        Ok(())
    }

    /// The running average of the parameter `name` on the host, in either mode.
    fn average_of(&self, name: &str) -> Option<Vec<f32>> {
        match (self.averages.get(name), self.host_averages.get(name)) {
            (Some(a), _) => Some(to_host(a).data),
            (None, Some((_, a))) => Some(a.clone()),
            (None, None) => None,
        }
    }

    /// Restores the state written by [`save`](Self::save).
    pub fn load(&mut self, from: &SafeTensors, device: &Device) -> Result<(), String> {
        self.t = from
            .metadata
            .get("optim.updates")
            .and_then(|s| s.parse().ok())
            .ok_or("missing optim.updates")?;
        self.moments.clear();
        self.host_moments.clear();
        self.averages.clear();
        self.host_averages.clear();
        for (name, t) in &from.tensors {
            let Some(rest) = name.strip_prefix("optim.") else {
                continue;
            };
            if let Some(param) = rest.strip_suffix(".avg") {
                if self.host {
                    let dims = model::params::matrix_dims(&t.shape);
                    self.host_averages
                        .insert(param.to_string(), (dims, t.data.clone()));
                } else {
                    self.averages
                        .insert(param.to_string(), from_host(t, device));
                }
            } else if let Some(param) = rest.strip_suffix(".m") {
                let v = from
                    .get(&format!("optim.{param}.v"))
                    .ok_or_else(|| format!("missing optim.{param}.v"))?;
                if t.shape != v.shape {
                    return Err(format!("optim.{param}: m and v differ in shape"));
                }
                if self.host {
                    let dims = model::params::matrix_dims(&t.shape);
                    self.host_moments
                        .insert(param.to_string(), (dims, t.data.clone(), v.data.clone()));
                } else {
                    self.moments.insert(
                        param.to_string(),
                        (from_host(t, device), from_host(v, device)),
                    );
                }
            }
        }
        let restored = self.moments.len() + self.host_moments.len();
        if self.kind == OptimizerKind::Adam && self.t > 0 && restored == 0 {
            return Err("Adam state missing (was the run trained with SGD?)".into());
        }
        let averaged = self.averages.len() + self.host_averages.len();
        if (self.average > 0.0 && self.t > 0) != (averaged > 0) {
            return Err(format!(
                "weight averages {} (was the run trained with another train.average?)",
                if averaged > 0 { "present" } else { "missing" }
            ));
        }
        Ok(())
    }
}

/// A matrix copied to the host.
pub fn to_host(t: &Tensor<2>) -> HostTensor {
    let dims = t.dims();
    HostTensor::new(dims.to_vec(), model::buffer::values(t.clone()))
}

/// A host tensor as a matrix on `device` (rank 1 becomes `[1, n]`).
pub fn from_host(t: &HostTensor, device: &Device) -> Tensor<2> {
    let dims = model::params::matrix_dims(&t.shape);
    Tensor::from_data(burn::tensor::TensorData::new(t.data.clone(), dims), device)
}

/// One parameter's update on the host: `v` its values, `g` its gradient,
/// `(lr, scale, t)` the learning rate, the clipping factor and the update
/// count; element-wise, in chunks spread over the kernel threads (a 2 x 512
/// model has 3.4 M parameters: serial, this was 4% of a step).
fn host_update(
    v: &mut [f32],
    g: &[f32],
    kind: OptimizerKind,
    moments: &mut BTreeMap<String, HostMoments>,
    name: &str,
    dims: [usize; 2],
    (lr, scale, t): (f64, f64, u64),
) {
    match kind {
        OptimizerKind::Sgd => {
            let step = (lr * scale) as f32;
            let mut work: Vec<_> = v.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).collect();
            model::kernel::pool::parallel_for_each_mut(&mut work, |(v, g)| {
                for (p, g) in v.iter_mut().zip(g.iter()) {
                    *p -= step * g;
                }
            });
        }
        OptimizerKind::Adam => {
            let (_, m, s) = moments
                .entry(name.to_string())
                .or_insert_with(|| (dims, vec![0.0; g.len()], vec![0.0; g.len()]));
            let (b1, b2, sc) = (BETA1 as f32, BETA2 as f32, scale as f32);
            let c1 = 1.0 - BETA1.powi(t as i32);
            let c2 = 1.0 - BETA2.powi(t as i32);
            let (lr1, inv_c2) = ((lr / c1) as f32, (1.0 / c2) as f32);
            let eps = EPSILON as f32;
            let mut work: Vec<_> = v
                .chunks_mut(CHUNK)
                .zip(g.chunks(CHUNK))
                .zip(m.chunks_mut(CHUNK).zip(s.chunks_mut(CHUNK)))
                .collect();
            model::kernel::pool::parallel_for_each_mut(&mut work, |((v, g), (m, s))| {
                let moments = m.iter_mut().zip(s.iter_mut());
                for ((p, &g), (m, s)) in v.iter_mut().zip(g.iter()).zip(moments) {
                    let gi = g * sc;
                    *m = b1 * *m + (1.0 - b1) * gi;
                    *s = b2 * *s + (1.0 - b2) * gi * gi;
                    *p -= lr1 * *m / ((*s * inv_c2).sqrt() + eps);
                }
            });
        }
    }
}

/// Moves one parameter's running average towards its new values `v`
/// (started at them on the first update).
fn host_update_average(
    averages: &mut BTreeMap<String, ([usize; 2], Vec<f32>)>,
    name: &str,
    dims: [usize; 2],
    v: &[f32],
    average: f64,
) {
    match averages.get_mut(name) {
        Some((_, a)) => {
            let keep = (1.0 - average) as f32;
            let mut work: Vec<_> = a.chunks_mut(CHUNK).zip(v.chunks(CHUNK)).collect();
            model::kernel::pool::parallel_for_each_mut(&mut work, |(a, v)| {
                for (a, &w) in a.iter_mut().zip(v.iter()) {
                    *a += keep * (w - *a);
                }
            });
        }
        None => {
            averages.insert(name.to_string(), (dims, v.to_vec()));
        }
    }
}

/// The factor that scales gradients of global L2 norm `norm` down to
/// `clip_norm` (`tf.clip_by_global_norm`): 1 when the norm is within it or
/// `clip_norm` is 0.
pub fn clip_factor(norm: f64, clip_norm: f64) -> f64 {
    if clip_norm > 0.0 && norm > clip_norm {
        clip_norm / norm
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, TensorData};
    use model::CharLmConfig;
    use model::params::for_each_param;

    fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
        let mut out = vec![];
        for_each_param(m, |_, v| {
            out.push(v.into_data().try_into_vec_as::<f32>().unwrap())
        });
        out
    }

    /// Host-side loops and device tensor operations make the same updates,
    /// SGD and Adam, with clipping active; and Adam's state survives a save
    /// and load. With 160 units (recurrent weights of two host chunks,
    /// updated on two threads) only the first update is compared: after it
    /// the two models differ by rounding, and Adam, which divides each
    /// gradient by its own size, turns the rounding noise of near-zero
    /// gradients into visible differences.
    #[test]
    fn host_and_device_modes_agree() {
        let device = Device::flex().autodiff();
        model::kernel::pool::set_threads(2);
        for (kind, units) in [
            (OptimizerKind::Sgd, 8),
            (OptimizerKind::Adam, 8),
            (OptimizerKind::Sgd, 160),
            (OptimizerKind::Adam, 160),
        ] {
            let cfg = CharLmConfig::new(27, 27).with_d_hidden(units);
            let mut models = [cfg.init(1, &device), cfg.init(1, &device)];
            let mut opts = [
                Optimizer::new(kind, 0.05, &device).with_host(true),
                Optimizer::new(kind, 0.05, &device).with_host(false),
            ];
            for step in 0..if units > 8 { 1 } else { 3 } {
                for k in 0..2 {
                    let m = &models[k];
                    let ids = Tensor::<1, Int>::from_data(
                        TensorData::new(vec![1i64, 4, 9, 2, 0, 5], [6]),
                        &device,
                    );
                    let (logits, _) = m.forward(ids, 2, m.zero_state(2, &device), true);
                    let grads = logits.square().mean().backward();
                    let model = std::mem::replace(&mut models[k], cfg.init(9, &device));
                    let (model, stats) = opts[k].step(model, &grads, 0.5);
                    assert!(stats.grad_norm.value() > 0.0);
                    models[k] = model;
                }
                let (a, b) = (values(&models[0]), values(&models[1]));
                for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                    // Adam divides by the root of tiny second moments: agree to float precision
                    assert!(
                        (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                        "{kind:?} step {step}: {x} vs {y}"
                    );
                }
            }
            // a restored optimiser (in either mode) makes the same next update as the original
            let mut saved = SafeTensors::default();
            opts[0].save(&mut saved);
            let next = |opt: &mut Optimizer| {
                let m = models[0].clone();
                let ids = Tensor::<1, Int>::from_data(
                    TensorData::new(vec![3i64, 1, 4, 1, 5, 9], [6]),
                    &device,
                );
                let (logits, _) = m.forward(ids, 2, m.zero_state(2, &device), true);
                let grads = logits.square().mean().backward();
                values(&opt.step(m, &grads, 0.5).0)
            };
            let mut restored = vec![];
            for host in [true, false] {
                let mut back = Optimizer::new(kind, 0.05, &device).with_host(host);
                back.load(&saved, &device).unwrap();
                assert_eq!(back.updates(), if units > 8 { 1 } else { 3 });
                restored.push(next(&mut back));
            }
            let original = next(&mut opts[0]);
            for (mode, r) in ["host", "device"].iter().zip(&restored) {
                for (x, y) in original.iter().flatten().zip(r.iter().flatten()) {
                    assert!(
                        (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                        "{kind:?} restored in {mode} mode: {x} vs {y}"
                    );
                }
            }
            assert_eq!(original, restored[0], "{kind:?}: host restore is not exact");
        }
    }

    /// The running average is the exponential moving average of the weights
    /// after each update, started at the first, in both modes; it survives a
    /// save and load, and a checkpoint without it (or with it, when no
    /// averaging is asked for) is refused.
    #[test]
    fn running_average_of_the_weights() {
        let device = Device::flex().autodiff();
        let cfg = CharLmConfig::new(27, 27).with_d_hidden(8);
        for host in [true, false] {
            let mut m = cfg.init(3, &device);
            let mut opt = Optimizer::new(OptimizerKind::Adam, 1.0, &device)
                .with_host(host)
                .with_average(0.75);
            let mut expected: Option<Vec<Vec<f32>>> = None;
            for step in 0..3i64 {
                let ids = Tensor::<1, Int>::from_data(
                    TensorData::new(vec![1i64, 4, 9 + step, 2, 0, 5], [6]),
                    &device,
                );
                let (logits, _) = m.forward(ids, 2, m.zero_state(2, &device), true);
                let grads = logits.square().mean().backward();
                m = opt.step(m, &grads, 0.1).0;
                let w = values(&m);
                expected = Some(match expected {
                    None => w,
                    Some(a) => a
                        .iter()
                        .zip(&w)
                        .map(|(a, w)| a.iter().zip(w).map(|(a, w)| a + 0.25 * (w - a)).collect())
                        .collect(),
                });
            }
            let mut weights = SafeTensors::default();
            crate::checkpoint::save_weights(&m, "", &mut weights);
            let averaged = opt.averaged(&weights).expect("averaging");
            let got: Vec<&Vec<f32>> = averaged.tensors.iter().map(|(_, t)| &t.data).collect();
            let expected = expected.unwrap();
            assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(&expected) {
                for (x, y) in g.iter().zip(e) {
                    assert!((x - y).abs() < 1e-6, "host {host}: {x} vs {y}");
                }
            }
            assert_ne!(averaged, weights, "the average is not the last weights");
            let mut saved = SafeTensors::default();
            opt.save(&mut saved);
            let mut back = Optimizer::new(OptimizerKind::Adam, 1.0, &device)
                .with_host(!host)
                .with_average(0.75);
            back.load(&saved, &device).unwrap();
            assert_eq!(back.averaged(&weights), Some(averaged));
            let mut plain = Optimizer::new(OptimizerKind::Adam, 1.0, &device).with_host(host);
            let err = plain.load(&saved, &device).unwrap_err();
            assert!(err.contains("train.average"), "{err}");
            saved.tensors.retain(|(n, _)| !n.ends_with(".avg"));
            let err = back.load(&saved, &device).unwrap_err();
            assert!(err.contains("weight averages missing"), "{err}");
            assert_eq!(plain.averaged(&weights), None);
        }
    }
}
