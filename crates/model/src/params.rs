//! Parameters by name: every float parameter of a module is reached with its
//! dotted path (`layers.0.blocks.0.wx`), seen as a matrix. Checkpoints,
//! optimizers and golden tests go through these functions, so a model needs
//! nothing but `#[derive(Module)]` to be saved, loaded and trained.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

/// Matrix shape of a parameter: rank 1 `[n]` is `[1, n]`; rank `k > 2` keeps
/// its first dimension and folds the rest.
pub fn matrix_dims(dims: &[usize]) -> [usize; 2] {
    match dims.len() {
        0 => [1, 1],
        1 => [1, dims[0]],
        _ => [dims[0], dims[1..].iter().product()],
    }
}

fn as_matrix<const D: usize>(t: Tensor<D>) -> Tensor<2> {
    let dims = matrix_dims(&t.dims());
    t.reshape(dims)
}

struct Visit<'a, F> {
    path: Vec<String>,
    grads: Option<&'a Gradients>,
    f: F,
}

impl<F: FnMut(&str, Tensor<2>, Option<Tensor<2>>)> ModuleVisitor for Visit<'_, F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.path.join(".");
        let value = param.val();
        let grad = self.grads.and_then(|g| value.grad(g)).map(as_matrix);
        (self.f)(&name, as_matrix(value.inner()), grad);
    }
}

struct Map<F> {
    path: Vec<String>,
    f: F,
}

impl<F: FnMut(&str, Tensor<2>) -> Tensor<2>> ModuleMapper for Map<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let autodiff = tensor.is_autodiff();
        let require_grad = tensor.is_require_grad();
        let name = self.path.join(".");
        let new = (self.f)(&name, as_matrix(tensor.inner()));
        assert_eq!(
            new.dims(),
            matrix_dims(&dims),
            "parameter {name}: the mapped value changed shape"
        );
        let mut new: Tensor<D> = new.inner().reshape(dims);
        if autodiff {
            new = new.autodiff();
            if require_grad {
                new = new.require_grad();
            }
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Calls `f(name, value)` for every float parameter, in declaration order.
/// `value` is the parameter's matrix without autodiff.
pub fn for_each_param<M: Module>(module: &M, mut f: impl FnMut(&str, Tensor<2>)) {
    module.visit(&mut Visit {
        path: vec![],
        grads: None,
        f: |name: &str, value, _| f(name, value),
    });
}

/// Calls `f(name, value, gradient)` for every float parameter, in declaration
/// order; the gradient is `None` for a parameter the loss does not depend on.
pub fn for_each_param_grad<M: Module>(
    module: &M,
    grads: &Gradients,
    f: impl FnMut(&str, Tensor<2>, Option<Tensor<2>>),
) {
    module.visit(&mut Visit {
        path: vec![],
        grads: Some(grads),
        f,
    });
}

/// Every float parameter's gradient by name (parameters the loss does not
/// depend on are left out).
pub fn named_grads<M: Module>(module: &M, grads: &Gradients) -> BTreeMap<String, Tensor<2>> {
    let mut named = BTreeMap::new();
    for_each_param_grad(module, grads, |name, _value, grad| {
        if let Some(g) = grad {
            named.insert(name.to_string(), g);
        }
    });
    named
}

/// Replaces every float parameter by `f(name, value)`, which must keep the
/// matrix shape. `value` comes without autodiff; the result gets back the
/// parameter's autodiff and gradient requirement, so a module on an autodiff
/// device stays trainable.
pub fn map_params<M: Module>(module: M, f: impl FnMut(&str, Tensor<2>) -> Tensor<2>) -> M {
    module.map(&mut Map { path: vec![], f })
}

/// Names and matrix shapes of every float parameter, in declaration order.
pub fn param_shapes<M: Module>(module: &M) -> Vec<(String, [usize; 2])> {
    let mut out = vec![];
    for_each_param(module, |name, t| out.push((name.to_string(), t.dims())));
    out
}

/// Number of float parameters (scalars).
pub fn num_scalars<M: Module>(module: &M) -> usize {
    param_shapes(module).iter().map(|(_, [r, c])| r * c).sum()
}
