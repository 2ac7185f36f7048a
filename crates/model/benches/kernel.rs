//! `cargo bench -p model`: the LSTM sequence kernel on its own: matrix-product
//! throughput at the notebook's and `large`'s shapes, the dense layer's
//! products on one and two threads, one cell step, forward/backward times of
//! whole sequences on one thread, and of the batch split over one and two
//! threads. The end-to-end benchmark is `cargo xtask bench`.
//!
//! `cargo bench -p model --bench kernel -- 2048x512 lstm` runs only the
//! shapes whose name (`matmul MxNxK`, `dense ROWSxINxOUT`, `cell ROWSxHIDDEN`,
//! `lstm STEPSxBATCHxHIDDEN`) contains one of the words.

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

fn main() {
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
        // the opt-in bf16 products (where the CPU has AVX512-BF16; on the
        // AMX tiles from 16 rows where it has those: `kernels`)
        if let Some(packed) = kernel::PackedBf16::new(&b, k, n, false) {
            let s = time(|| packed.matmul(&mut c, &a, m, true));
            println!(
                "{{\"bench\": \"matmul_packed_bf16\", \"kernels\": \"{}\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"us\": {:.2}, \"gflops\": {:.1}}}",
                kernel::isa().name(),
                s * 1e6,
                2.0 * (m * n * k) as f64 / s / 1e9
            );
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
        let precisions = if kernel::bf16::available() {
            vec![Precision::F32, Precision::Bf16]
        } else {
            vec![Precision::F32]
        };
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
            // the backward pass consumes the cache: timed after a forward pass, less its time
            let bwd = time(|| {
                kernel::backward_split(dims, forward(), &wh, (&h0, &c0), (&dh, &dc), None);
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
