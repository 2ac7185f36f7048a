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
use model::params::{for_each_param_grad, map_params};

use crate::recipe::OptimizerKind;
use crate::safetensors::{HostTensor, SafeTensors};

/// Adam's constants (Kingma and Ba's defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

/// An optimiser with global-norm clipping.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    clip_norm: f64,
    /// Adam's first and second moments by parameter name.
    moments: BTreeMap<String, (Tensor<2>, Tensor<2>)>,
    /// Updates made (Adam's bias correction).
    t: u64,
}

/// What a step measured, still on the device.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Global gradient norm before clipping, `[1]`.
    pub grad_norm: Tensor<1>,
}

impl Optimizer {
    /// A fresh optimiser.
    pub fn new(kind: OptimizerKind, clip_norm: f64) -> Self {
        Optimizer {
            kind,
            clip_norm,
            moments: BTreeMap::new(),
            t: 0,
        }
    }

    /// Updates made so far.
    pub fn updates(&self) -> u64 {
        self.t
    }

    /// One update of every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, StepStats) {
        let mut named: BTreeMap<String, Tensor<2>> = BTreeMap::new();
        for_each_param_grad(&module, grads, |name, _value, grad| {
            if let Some(g) = grad {
                named.insert(name.to_string(), g);
            }
        });
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
        (module, StepStats { grad_norm })
    }

    /// The state as named host tensors (`optim.<param>.m`, `optim.<param>.v`) and the update count.
    pub fn save(&self, out: &mut SafeTensors) {
        for (name, (m, v)) in &self.moments {
            out.push(format!("optim.{name}.m"), to_host(m));
            out.push(format!("optim.{name}.v"), to_host(v));
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
        for (name, t) in &from.tensors {
            if let Some(rest) = name.strip_prefix("optim.")
                && let Some(param) = rest.strip_suffix(".m")
            {
                let v = from
                    .get(&format!("optim.{param}.v"))
                    .ok_or_else(|| format!("missing optim.{param}.v"))?;
                self.moments.insert(
                    param.to_string(),
                    (from_host(t, device), from_host(v, device)),
                );
            }
        }
        if self.kind == OptimizerKind::Adam && self.t > 0 && self.moments.is_empty() {
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
