//! A float tensor's values on the host: read in place, copied, or updated
//! in place, on any device. Flex keeps a tensor in a host buffer that Burn's
//! `into_data` copies up to three times; these read and write that buffer
//! itself where they can, and fall back to `into_data` elsewhere.

use burn::tensor::{Tensor, TensorData};

/// The values of a float tensor on the host, row-major, on any device.
///
/// A contiguous f32 tensor on flex is copied once, straight from its
/// buffer. `into_data` copies a flex tensor whose buffer is shared (a
/// parameter, a gradient or output autodiff also holds) three times: to
/// bytes, to aligned bytes, then into a `Vec<f32>`; the optimiser paid
/// that for every parameter and gradient of every step. Other tensors
/// (other backends and dtypes, strided views) go through `into_data`.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    with_values(&t, <[f32]>::to_vec)
}

/// `f` of a float tensor's values, row-major, on any device: borrowed from
/// the buffer of a contiguous f32 tensor on flex (no copy at all: the
/// optimiser reads every gradient once per step), else copied as
/// [`values`] says.
pub fn with_values<const D: usize, R>(t: &Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    #[cfg(feature = "flex")]
    {
        use burn::backend::{BackendTensor, DispatchTensorKind};
        // cloning a tensor clones a handle to its buffer, not the values;
        // `inner` takes the tensor out of autodiff's wrapper
        if let DispatchTensorKind::Flex(BackendTensor::Float(ft)) =
            t.clone().inner().into_dispatch().kind
            && let Some(v) = ft.as_slice::<f32>()
        {
            return f(v);
        }
    }
    let v = t
        .clone()
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("an f32 tensor");
    f(&v)
}

/// The tensor with `f` applied to its values (row-major): in place where
/// the tensor is a contiguous f32 flex tensor without autodiff that
/// nothing else holds (a parameter between steps: no copy out and back),
/// else on a host copy made into a new tensor on the same device.
pub fn update_values<const D: usize>(t: Tensor<D>, f: impl FnOnce(&mut [f32])) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let t = if t.is_autodiff() {
        t
    } else {
        use burn::backend::{BackendTensor, DispatchTensorKind};
        use burn::tensor::DType;
        let mut d = t.into_dispatch();
        // f32 first: `try_storage_mut` asserts the element type; the
        // offsets of a contiguous view (a narrowed one starts inside its
        // buffer), and a buffer no other tensor holds
        if let DispatchTensorKind::Flex(BackendTensor::Float(ft)) = &mut d.kind
            && ft.dtype() == DType::F32
            && let Some((start, end)) = ft.layout().contiguous_offsets()
            && let Some(storage) = ft.try_storage_mut::<f32>()
        {
            f(&mut storage[start..end]);
            return Tensor::from_dispatch(d);
        }
        Tensor::from_dispatch(d)
    };
    let (shape, device) = (t.shape(), t.device());
    let mut v = values(t);
    f(&mut v);
    Tensor::from_data(TensorData::new(v, shape), &device)
}
