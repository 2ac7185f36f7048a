//! The unrolled LSTM sequence as plain Rust on `f32` slices: forward and
//! backward of all time steps in one call, with no allocation per step, and
//! the fused output layer with its softmax cross-entropy.
//!
//! - [`pool`]: the threads the kernels (and the trainer's host-side work) run on.
//! - [`gemm`]: matrix products: AVX-512 and AVX2+FMA blocked kernels, packed right
//!   operands ([`PackedB`]), the `gemm` crate for other shapes and CPUs.
//! - `lines`: the packed operands' buffers, aligned to cache lines; `prefetch`:
//!   their next blocks fetched into L2 during a product.
//! - [`half`]: the opt-in 16-bit products, the recurrent ones and a dense
//!   input's (bf16 on AVX512-BF16 or AMX; fp16 on AVX512-FP16: [`f16`](mod@f16)).
//! - [`amx`]: those products on the AMX tiles, where the CPU has them.
//! - [`math`]: fast `exp`, `sigmoid`, `tanh`.
//! - [`cell`]: one cell step for every row, forward and backward.
//! - [`sequence`]: all time steps on one thread.
//! - [`split`]: the batch split over the threads.
//! - [`classifier`]: output layer + softmax cross-entropy.
//! - [`linear`]: a dense layer `x W + b` over many rows, forward and backward.
//! - [`attention`]: attention over each row's window of positions, forward and backward.
//! - [`attentional`]: `tanh([context; row] W + b)` over that attention, forward and backward.
//! - [`join`]: a bidirectional encoder's outputs joined into batch-major rows, and back.
//! - [`cpu`]: which CPU and extensions, for measurements to name.
//!
//! Layout (row-major, time-major): the input projections `p` are
//! `[steps * batch, 4 * d_hidden]` with the gates `i, f, u, o` side by side
//! (bias included), or rows of a projected table named by ids
//! ([`Projections`]); `wh` is `[d_hidden, 4 * d_hidden]`; states are `[batch, d_hidden]`.
//!
//! The AVX-512 and AVX2+FMA paths are chosen at run time ([`isa`]: the
//! widest the CPU has, or the one `CHARLSTM_KERNELS` names); every one has a
//! portable fallback computing the same function, and the tests compare
//! them on the same inputs.

/// Runs `f` compiled for the widest instruction set the kernels use
/// ([`isa`]): AVX-512, AVX2+FMA, or the baseline.
macro_rules! dispatch {
    ($generic:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use $crate::kernel::cpu::{Isa, isa};
            match isa() {
                Isa::Avx512 | Isa::Avx512Amx => {
                    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                    unsafe fn wide(f: impl FnOnce()) { f() }
                    // SAFETY: the CPU supports the features (`isa` detected them).
                    unsafe { wide(|| $generic($($arg),*)) };
                }
                Isa::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn fast(f: impl FnOnce()) { f() }
                    // SAFETY: the CPU supports the features (`isa` detected them).
                    unsafe { fast(|| $generic($($arg),*)) };
                }
                Isa::Portable => $generic($($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $generic($($arg),*);
        }
    }};
}

/// Defines `fn $name(args)` that runs the `#[inline(always)]` function
/// `$body` compiled for the widest instruction set ([`isa`]), as
/// [`dispatch!`] does, but without a closure: a large body inlined into
/// `dispatch!`'s closure can leave that closure a function of its own,
/// compiled for the baseline (SSE2) after all.
macro_rules! dispatch_fn {
    (fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) => $body:ident) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::kernel::cpu::{Isa, isa};
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match isa() {
                    // SAFETY: the CPU supports the features (`isa` detected them).
                    Isa::Avx512 | Isa::Avx512Amx => unsafe { wide($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => unsafe { fast($($arg),*) },
                    Isa::Portable => $body($($arg),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            $body($($arg),*)
        }
    };
}

pub mod amx;
pub mod attention;
pub mod attentional;
pub mod cell;
pub mod classifier;
pub mod cpu;
pub mod f16;
pub mod gemm;
pub mod half;
pub mod join;
pub mod linear;
mod lines;
pub mod math;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod prefetch;
pub mod sequence;
pub mod split;

pub use cell::{CellOut, cell_step};
pub use classifier::{linear_xent, linear_xent_backward};
pub use cpu::{CpuInfo, Isa, cpu_info, detected_isa, isa};
pub use gemm::{
    BLOCKED_MAX_B, PackedB, blocked_rows, matmul, matmul_gemm_crate, matmul_maybe_packed,
};
pub use half::{Half, PackedHalf, Precision};
pub use math::{exp, sigmoid, tanh};
pub use sequence::{
    PackedRecurrent, PartInput, PartLookup, PartRows, Projections, SeqCache, SeqDims, SeqGrads,
    backward, backward_packed, forward, forward_packed,
};
pub use split::{SplitCache, backward_split, batch_parts, forward_split, split_batch};
