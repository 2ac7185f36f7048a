//! Facts about devices the models need (not the choice of one: that is the CLI's).

use burn::tensor::Device;

/// Whether tensors on `device` live in this process's memory (the CPU
/// backends flex and ndarray), so that host-side kernels may work on them.
#[allow(deprecated)] // NdArray is deprecated upstream; recognising its device is not using it
pub fn runs_on_host(device: &Device) -> bool {
    #[allow(unused_imports)]
    use burn::backend::DispatchDevice;
    let inner = device.clone().inner();
    match inner.as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        _ => false,
    }
}

/// Whether tensors on `device` are on the flex backend (which has the fused kernels).
pub fn is_flex(device: &Device) -> bool {
    #[allow(unused_imports)]
    use burn::backend::DispatchDevice;
    let inner = device.clone().inner();
    match inner.as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        _ => false,
    }
}
