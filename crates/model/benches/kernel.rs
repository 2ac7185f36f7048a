//! `cargo bench -p model`: the core's multiply-add ceilings (f32, and bf16 and fp16
//! where it has AVX512-BF16 and AVX512-FP16), then the LSTM sequence kernel on its own:
//! matrix-product throughput at the notebook's and `large`'s shapes, the dense layer's
//! products on one and two threads, one cell step, forward/backward times of
//! whole sequences on one thread, and of the batch split over one and two
//! threads. The end-to-end benchmark is `cargo xtask bench`.
//!
//! `cargo bench -p model --bench kernel -- 2048x512 lstm` runs only the
//! shapes whose name (`peak`, `matmul MxNxK`, `dense ROWSxINxOUT`,
//! `cell ROWSxHIDDEN`, `lstm STEPSxBATCHxHIDDEN`) contains one of the words.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use model::kernel::{self, Precision, SeqCache, SeqDims};

fn time<F: FnMut()>(mut f: F) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < 0.2 {
            f();
            n += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    best
}

/// Whether the command line asks for the shape named `name`: it names none,
/// or a word of it is part of `name`.
fn wanted(name: &str) -> bool {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    words.is_empty() || words.iter().any(|w| name.contains(w.as_str()))
}

/// The core's multiply-add ceilings: `ACC` independent accumulators of
/// the widest vectors the CPU has, each updated `ROUNDS` times, so that no
/// dependency chain limits the rate, only how many such units the core has
/// and its clock. Every product rate below (and a reference's, by its FLOP
/// count) is a fraction of the f32 one; the bf16 one (`vdpbf16ps`, two
/// products a lane) says whether the opt-in bf16 products can be faster
/// than f32 on this CPU without AMX tiles, the fp16 one (`vfmadd231ph`, 32
/// lanes) the same for the f16 products.
#[cfg(target_arch = "x86_64")]
fn peaks() -> Vec<(&'static str, f64)> {
    use std::arch::x86_64::*;
    /// Accumulators: more than an instruction's latency times the units
    /// that run it (4 x 2 for the FMA, 5 or fewer for `vdpbf16ps`), few
    /// enough to stay in registers (with 24 the compiler spilled some to
    /// the stack, in the AVX-512 loop too, and measured the spills).
    const ACC: usize = 12;
    const ROUNDS: usize = 100_000;
    #[target_feature(enable = "avx512f")]
    fn f32x16(rounds: usize) -> f32 {
        // v <- 0.999999 v + 1e-7 settles towards 0.1: no overflow, no
        // denormals (which would slow the units) however many rounds
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); ACC];
        for _ in 0..rounds {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }
    #[target_feature(enable = "avx2,fma")]
    fn f32x8(rounds: usize) -> f32 {
        // as in `f32x16`
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); ACC];
        for _ in 0..rounds {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut lanes = [0.0f32; 8];
        acc.iter()
            .map(|v| {
                // SAFETY: `lanes` holds 8 f32, what one 256-bit store writes
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *v) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn bf16x32(rounds: usize) -> f32 {
        // bf16 1.0 and 2^-24 in both halves of every lane: an update adds
        // 2^-23, which stops changing v by the time it reaches 2 (under half
        // its ulp): no overflow, no denormals
        let (one, tiny) = (_mm512_set1_ps(1.0), _mm512_set1_ps(1.0 / 16_777_216.0));
        let (a, b) = (
            _mm512_cvtne2ps_pbh(one, one),
            _mm512_cvtne2ps_pbh(tiny, tiny),
        );
        let mut acc = [_mm512_set1_ps(1.0); ACC];
        for _ in 0..rounds {
            for v in &mut acc {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }
    #[target_feature(enable = "avx512f,avx512fp16")]
    fn f16x32(rounds: usize) -> f32 {
        // as in `f32x16`, in fp16 (0.999 v + 1e-4 settles towards 0.1);
        // the accumulators held as f32 vectors, as the kernel's
        let half = |x: f32| _mm512_castsi512_ph(_mm512_set1_epi16(kernel::f16::to_f16(x) as i16));
        let (a, b) = (half(0.999), half(1e-4));
        let mut acc = [_mm512_castph_ps(half(1.0)); ACC];
        for _ in 0..rounds {
            for v in &mut acc {
                *v = _mm512_castph_ps(_mm512_fmadd_ph(_mm512_castps_ph(*v), a, b));
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    let bf16 = avx512 && std::arch::is_x86_feature_detected!("avx512bf16");
    // (name, multiply-adds in one update of one accumulator, the loop)
    type Loop = fn(usize) -> f32;
    let f32_loop: Option<(&str, usize, Loop)> = if avx512 {
        // SAFETY: the CPU has AVX-512F (checked)
        Some(("f32 avx512", 16, |r| unsafe { f32x16(r) }))
    } else if avx2 {
        // SAFETY: the CPU has AVX2 and FMA (checked)
        Some(("f32 avx2+fma", 8, |r| unsafe { f32x8(r) }))
    } else {
        None
    };
    // two products a lane: 32 multiply-adds an update
    let bf16_loop: Option<(&str, usize, Loop)> =
        // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked)
        bf16.then_some(("bf16 vdpbf16ps", 32, |r| unsafe { bf16x32(r) }));
    let f16 = avx512 && std::arch::is_x86_feature_detected!("avx512fp16");
    let f16_loop: Option<(&str, usize, Loop)> =
        // SAFETY: the CPU has AVX-512F and AVX512-FP16 (checked)
        f16.then_some(("f16 vfmadd231ph", 32, |r| unsafe { f16x32(r) }));
    [f32_loop, bf16_loop, f16_loop]
        .into_iter()
        .flatten()
        .map(|(name, madds, run)| {
            let s = time(|| {
                std::hint::black_box(run(std::hint::black_box(ROUNDS)));
            });
            (name, 2.0 * (ACC * madds * ROUNDS) as f64 / s / 1e9)
        })
        .collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn peaks() -> Vec<(&'static str, f64)> {
    vec![]
}

fn main() {
    if wanted("peak") {
        for (units, gflops) in peaks() {
            println!("{{\"bench\": \"peak\", \"units\": \"{units}\", \"gflops\": {gflops:.1}}}");
        }
    }
    for (m, n, k) in [
        // a row block's operands all in L1: what the kernel's loop can do
        (60, 64, 128),
        (64, 256, 64),
        (64, 64, 256),
        (64, 256, 640),
        (64, 512, 128),
        (64, 2048, 512),
        (32, 2048, 512),
        (32, 512, 2048),
        (64, 512, 2048),
    ] {
        if !wanted(&format!("matmul {m}x{n}x{k}")) {
            continue;
        }
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let s = time(|| kernel::matmul(&mut c, &a, &b, m, n, k, false, false, true));
        println!(
            "{{\"bench\": \"matmul\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"us\": {:.2}, \"gflops\": {:.1}}}",
            s * 1e6,
            2.0 * (m * n * k) as f64 / s / 1e9
        );
        let s = time(|| kernel::matmul_gemm_crate(&mut c, &a, &b, m, n, k, false, true));
        println!(
            "{{\"bench\": \"matmul_gemm_crate\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"us\": {:.2}, \"gflops\": {:.1}}}",
            s * 1e6,
            2.0 * (m * n * k) as f64 / s / 1e9
        );
        if let Some(packed) = kernel::PackedB::new(&b, k, n, false) {
            let s = time(|| packed.matmul(&mut c, &a, m, true));
            println!(
                "{{\"bench\": \"matmul_packed\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"us\": {:.2}, \"gflops\": {:.1}}}",
                s * 1e6,
                2.0 * (m * n * k) as f64 / s / 1e9
            );
        }
        // the opt-in 16-bit products (where the CPU has AVX512-BF16 or
        // AVX512-FP16; bf16 on the AMX tiles from 16 rows where it has
        // those: `kernels`)
        for half in [kernel::Half::Bf16, kernel::Half::F16] {
            if let Some(packed) = kernel::PackedHalf::new(half, &b, k, n, false) {
                let s = time(|| packed.matmul(&mut c, &a, m, true));
                println!(
                    "{{\"bench\": \"matmul_packed_{}\", \"kernels\": \"{}\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"us\": {:.2}, \"gflops\": {:.1}}}",
                    half.precision().name(),
                    kernel::isa().name(),
                    s * 1e6,
                    2.0 * (m * n * k) as f64 / s / 1e9
                );
            }
        }
    }
    // the dense layer's products over all of a sequence's rows (`large`'s
    // second layer: 3200 rows, 512 -> 2048) on 1 and 2 threads: y = x W,
    // dx = dy W^T, dW = x^T dy
    for (rows, d_in, d_out) in [(3200, 512, 2048)] {
        if !wanted(&format!("dense {rows}x{d_in}x{d_out}")) {
            continue;
        }
        let x = vec![0.5f32; rows * d_in];
        let w = vec![0.25f32; d_in * d_out];
        let dy = vec![0.125f32; rows * d_out];
        let mut y = vec![0.0f32; rows * d_out];
        let mut dx = vec![0.0f32; rows * d_in];
        let mut dw = vec![std::mem::MaybeUninit::new(0.0f32); d_in * d_out];
        let flops = 2.0 * (rows * d_in * d_out) as f64;
        for threads in [1, 2] {
            kernel::pool::set_threads(threads);
            let products: [(&str, &mut dyn FnMut()); 3] = [
                ("y", &mut || {
                    kernel::gemm::matmul_threaded(
                        &mut y,
                        &x,
                        (&w, false),
                        (rows, d_out, d_in),
                        false,
                    )
                }),
                ("dx", &mut || {
                    kernel::gemm::matmul_threaded(
                        &mut dx,
                        &dy,
                        (&w, true),
                        (rows, d_in, d_out),
                        false,
                    )
                }),
                ("dw", &mut || {
                    kernel::gemm::matmul_at_threaded_into(&mut dw, &x, &dy, (d_in, d_out, rows));
                }),
            ];
            for (name, f) in products {
                let s = time(f);
                println!(
                    "{{\"bench\": \"dense_{name}\", \"threads\": {threads}, \"rows\": {rows}, \"d_in\": {d_in}, \"d_out\": {d_out}, \"us\": {:.1}, \"gflops\": {:.1}}}",
                    s * 1e6,
                    flops / s / 1e9
                );
            }
            // train.precision = bf16's dW on the AMX tiles (`kernel::linear`),
            // rounding its operands included
            if kernel::Half::Bf16.on_tiles() {
                let s = time(|| {
                    std::hint::black_box(kernel::half::matmul_at_threaded(
                        kernel::Half::Bf16,
                        &x,
                        &dy,
                        (d_in, d_out, rows),
                    ));
                });
                println!(
                    "{{\"bench\": \"dense_dw_bf16_tiles\", \"threads\": {threads}, \"rows\": {rows}, \"d_in\": {d_in}, \"d_out\": {d_out}, \"us\": {:.1}, \"gflops\": {:.1}}}",
                    s * 1e6,
                    flops / s / 1e9
                );
            }
        }
        kernel::pool::set_threads(1);
    }
    for (rows, hidden) in [(64, 64), (64, 512)] {
        if !wanted(&format!("cell {rows}x{hidden}")) {
            continue;
        }
        // one step of the gates and state, without and with an input row
        // added (the second layer's projection)
        let g0: Vec<f32> = (0..rows * 4 * hidden)
            .map(|i| ((i % 17) as f32 - 8.0) / 4.0)
            .collect();
        let x: Vec<f32> = (0..4 * hidden)
            .map(|i| ((i % 5) as f32 - 2.0) / 8.0)
            .collect();
        let xs: Vec<&[f32]> = vec![&x; rows];
        let c_prev = vec![0.3f32; rows * hidden];
        let (mut c, mut tc, mut h) = (
            vec![0.0f32; rows * hidden],
            vec![0.0f32; rows * hidden],
            vec![0.0f32; rows * hidden],
        );
        for (name, inputs) in [("none", &[][..]), ("rows", &xs[..])] {
            // the step overwrites g with activations, inputs as good as any
            // (its time does not depend on the values)
            let mut g = g0.clone();
            let s = time(|| {
                kernel::cell_step(
                    &mut g,
                    inputs,
                    &c_prev,
                    kernel::CellOut::over(&mut c, &mut tc, &mut h),
                    hidden,
                );
            });
            println!(
                "{{\"bench\": \"cell_step\", \"rows\": {rows}, \"hidden\": {hidden}, \"inputs\": \"{name}\", \"us\": {:.2}, \"ns_per_unit\": {:.3}}}",
                s * 1e6,
                s * 1e9 / (rows * hidden) as f64
            );
        }
    }
    for (steps, batch, hidden) in [(10, 64, 64), (51, 64, 128), (50, 64, 512), (1000, 1, 64)] {
        if !wanted(&format!("lstm {steps}x{batch}x{hidden}")) {
            continue;
        }
        let dims = SeqDims {
            steps,
            batch,
            hidden,
        };
        let rows = steps * batch;
        let p: Vec<f32> = (0..rows * 4 * hidden)
            .map(|i| ((i % 17) as f32 - 8.0) / 20.0)
            .collect();
        let wh: Vec<f32> = (0..hidden * 4 * hidden)
            .map(|i| ((i % 13) as f32 - 6.0) / 50.0)
            .collect();
        let h0 = vec![0.1f32; batch * hidden];
        let c0 = vec![0.2f32; batch * hidden];
        // a fresh cache each pass, as in training; the backward pass consumes
        // it, so it is timed after a forward pass, less the forward's time
        let fwd = time(|| {
            kernel::forward(dims, &p, &wh, &h0, &c0, &mut SeqCache::default());
        });
        let dh = vec![0.01f32; rows * hidden];
        let dc = vec![0.01f32; batch * hidden];
        let bwd = time(|| {
            let mut cache = SeqCache::default();
            kernel::forward(dims, &p, &wh, &h0, &c0, &mut cache);
            kernel::backward(dims, cache, &wh, &h0, &c0, &dh, &dc);
        }) - fwd;
        // the batch split over 1 and 2 threads (what `--threads` runs): where
        // a second core's time goes at each size; in bf16 too where it runs
        let precisions: Vec<Precision> = [Precision::F32, Precision::Bf16, Precision::F16]
            .into_iter()
            .filter(|p| p.half().is_none_or(|h| h.available()))
            .collect();
        for (threads, precision) in [1, 2]
            .into_iter()
            .flat_map(|t| precisions.iter().map(move |p| (t, *p)))
        {
            kernel::pool::set_threads(threads);
            let forward = || {
                let mut split = kernel::SplitCache::default();
                kernel::forward_split(
                    dims,
                    kernel::Projections::Rows(&p),
                    &wh,
                    (&h0, &c0),
                    precision,
                    &mut split,
                );
                split
            };
            let fwd = time(|| {
                forward();
            });
            let dh = vec![0.01f32; rows * hidden];
            let dc = vec![0.01f32; batch * hidden];
            // the backward pass consumes the cache: timed after a forward pass,
            // less its time; as in training, with an initial state that takes no gradient
            let bwd = time(|| {
                let d_out = (&dh[..], &dc[..]);
                kernel::backward_split(dims, forward(), &wh, (&h0, &c0), d_out, None, false);
            }) - fwd;
            println!(
                "{{\"bench\": \"lstm_split\", \"threads\": {threads}, \"precision\": \"{precision:?}\", \"steps\": {steps}, \"batch\": {batch}, \"hidden\": {hidden}, \"forward_us\": {:.1}, \"backward_us\": {:.1}}}",
                fwd * 1e6,
                bwd * 1e6
            );
        }
        kernel::pool::set_threads(1);
        let flops = 2.0 * (rows * hidden * 4 * hidden) as f64;
        println!(
            "{{\"bench\": \"lstm_sequence\", \"steps\": {steps}, \"batch\": {batch}, \"hidden\": {hidden}, \"forward_us\": {:.1}, \"backward_us\": {:.1}, \"forward_gflops\": {:.1}, \"backward_gflops\": {:.1}}}",
            fwd * 1e6,
            bwd * 1e6,
            flops / fwd / 1e9,
            2.0 * flops / bwd / 1e9
        );
    }
}
