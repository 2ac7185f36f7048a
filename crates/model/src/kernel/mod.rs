//! The unrolled LSTM sequence as plain Rust on `f32` slices: forward and
//! backward of all time steps in one call, with no allocation per step, and
//! the fused output layer with its softmax cross-entropy.
//!
//! - [`pool`]: the threads the kernels (and the trainer's host-side work) run on.
//! - [`gemm`]: matrix products: an AVX2+FMA blocked kernel, packed right
//!   operands ([`PackedB`]), the `gemm` crate for other shapes and CPUs.
//! - [`math`]: fast `exp`, `sigmoid`, `tanh`.
//! - [`cell`]: one cell step for every row, forward and backward.
//! - [`sequence`]: all time steps on one thread.
//! - [`split`]: the batch split over the threads.
//! - [`classifier`]: output layer + softmax cross-entropy.
//! - [`cpu`]: which CPU and extensions, for measurements to name.
//!
//! Layout (row-major, time-major): the input projections `p` are
//! `[steps * batch, 4 * d_hidden]` with the gates `i, f, u, o` side by side
//! (bias included); `wh` is `[d_hidden, 4 * d_hidden]`; states are `[batch, d_hidden]`.
//!
//! The AVX2+FMA paths are chosen at run time (`is_x86_feature_detected!`);
//! every one has a portable fallback computing the same function, and the
//! tests compare them on the same inputs.

/// Runs `f` compiled for AVX2+FMA when the CPU has them, else for the baseline.
macro_rules! dispatch {
    ($generic:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast(f: impl FnOnce()) { f() }
                // SAFETY: the CPU supports the features just detected.
                unsafe { fast(|| $generic($($arg),*)) };
            } else {
                $generic($($arg),*);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $generic($($arg),*);
        }
    }};
}

pub mod cell;
pub mod classifier;
pub mod cpu;
pub mod gemm;
pub mod math;
pub mod pool;
pub mod sequence;
pub mod split;

pub use cell::cell_step;
pub use classifier::{linear_xent, linear_xent_backward};
pub use cpu::{CpuInfo, cpu_info};
pub use gemm::{BLOCKED_MAX_B, PackedB, matmul, matmul_gemm_crate, matmul_maybe_packed};
pub use math::{exp, sigmoid, tanh};
pub use sequence::{
    SeqCache, SeqDims, SeqGrads, backward, backward_packed, forward, forward_packed,
};
pub use split::{SplitCache, backward_split, forward_split, split_batch};
