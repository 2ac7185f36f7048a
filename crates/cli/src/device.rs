//! The one place where a backend is chosen: cargo features compile backends
//! in, `--device` (or `CHARLSTM_DEVICE`) picks one at run time.

// NdArray is deprecated upstream in favour of Flex; the design keeps it
// available behind its feature, and this is the only file that names it.
#![allow(deprecated)]

use anyhow::{Result, bail};
use burn::tensor::Device;

/// A device name as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The first compiled-in of flex, ndarray, wgpu (CPU first: these models are small).
    Auto,
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// Burn's ndarray CPU backend (deprecated upstream).
    Ndarray,
    /// Burn's wgpu GPU backend (Vulkan, Metal, DX12 or WebGPU).
    Wgpu,
}

/// Backends compiled into this binary, in `auto` order.
pub fn compiled() -> Vec<&'static str> {
    let mut v = vec![];
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

fn not_compiled(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--device {name}: this binary was built without the `{name}` feature (compiled in: {}); \
         rebuild with `cargo build --release -p cli --features {name}`",
        compiled().join(", ")
    )
}

/// The device for a choice, and its name.
pub fn select(choice: DeviceChoice) -> Result<(Device, &'static str)> {
    let choice = match choice {
        DeviceChoice::Auto => match compiled().first() {
            Some(&"flex") => DeviceChoice::Flex,
            Some(&"ndarray") => DeviceChoice::Ndarray,
            Some(&"wgpu") => DeviceChoice::Wgpu,
            _ => bail!("no backend compiled in: build with --features flex, ndarray or wgpu"),
        },
        c => c,
    };
    match choice {
        DeviceChoice::Flex => {
            #[cfg(feature = "flex")]
            return Ok((Device::flex(), "flex"));
            #[cfg(not(feature = "flex"))]
            return Err(not_compiled("flex"));
        }
        DeviceChoice::Ndarray => {
            #[cfg(feature = "ndarray")]
            return Ok((Device::ndarray(), "ndarray"));
            #[cfg(not(feature = "ndarray"))]
            return Err(not_compiled("ndarray"));
        }
        DeviceChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok((Device::wgpu(Default::default()), "wgpu"));
            #[cfg(not(feature = "wgpu"))]
            return Err(not_compiled("wgpu"));
        }
        DeviceChoice::Auto => unreachable!("resolved above"),
    }
}
