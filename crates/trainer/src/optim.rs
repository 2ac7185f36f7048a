//! Optimisers (SGD, Adam) with the notebook's gradient clipping.
//!
//! Clipping is TensorFlow's `clip_by_global_norm`: the L2 norm of all
//! gradients together is computed and, when it exceeds `clip_norm`, every
//! gradient is scaled by `clip_norm / norm`. (Burn's
//! `GradientClippingConfig::Norm` clips each tensor on its own, which is not
//! the same.) Everything stays on the device: no value is read back to the
//! host during a step.
//!
//! State is kept by parameter name, so it can be checkpointed and restored exactly.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Gradients, Tensor};
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
        }
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
        let kind = self.kind;
        let moments = &mut self.moments;
        let module = map_params(module, |name, value| {
            let Some(g) = named.remove(name) else {
                return value;
            };
            let g = match &scale {
                Some(s) => g * s.clone(),
                None => g,
            };
            match kind {
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
            }
        });
        (
            module,
            StepStats {
                grad_norm: GradNorm::Device(Box::new(grad_norm)),
            },
        )
    }

    fn step_host<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, StepStats) {
        let mut named: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut sq = 0.0f64;
        for_each_param_grad(&module, grads, |name, _value, grad| {
            if let Some(g) = grad {
                let g = g
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32 gradient");
                sq += g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                named.insert(name.to_string(), g);
            }
        });
        let norm = sq.sqrt();
        let scale = clip_factor(norm, self.clip_norm);
        self.t += 1;
        let (t, kind) = (self.t, self.kind);
        let moments = &mut self.host_moments;
        let module = map_params(module, |name, value| {
            let Some(g) = named.remove(name) else {
                return value;
            };
            let dims = value.dims();
            let device = value.device();
            let mut v = value
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32 parameter");
            // element-wise updates, in chunks spread over the kernel threads
            // (a 2 x 512 model has 3.4 M parameters: serial, this was 4% of a step)
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
            Tensor::from_data(burn::tensor::TensorData::new(v, dims), &device)
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
        out.metadata
            .insert("optim.updates".into(), self.t.to_string());
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
        for (name, t) in &from.tensors {
            if let Some(rest) = name.strip_prefix("optim.")
                && let Some(param) = rest.strip_suffix(".m")
            {
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
        Ok(())
    }
}

/// A matrix copied to the host.
pub fn to_host(t: &Tensor<2>) -> HostTensor {
    let dims = t.dims();
    let data = t
        .clone()
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 data");
    HostTensor::new(dims.to_vec(), data)
}

/// A host tensor as a matrix on `device` (rank 1 becomes `[1, n]`).
pub fn from_host(t: &HostTensor, device: &Device) -> Tensor<2> {
    let dims = model::params::matrix_dims(&t.shape);
    Tensor::from_data(burn::tensor::TensorData::new(t.data.clone(), dims), device)
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
}
