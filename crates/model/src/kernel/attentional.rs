//! The attentional hidden state of Luong et al. (arXiv 1508.04025),
//! `tanh([ctx; dec] W + b)`, over the windowed attention
//! ([`super::attention`]) with the "general" score, whose keys `values W_a`
//! it computes too: forward and backward each run the attention and passes
//! over blocks of rows split over the threads, on the blocked products; the
//! weights' gradients are products over all rows, on all threads. As Burn
//! operations the keys' product, the join, the layer's product, the bias,
//! the `tanh` and their gradients were a dozen nodes, each allocating and
//! zero-filling its output (the join also copying both halves), and the
//! values' two gradients another sum.
//!
//! Layout: as [`super::attention`]'s; `w_a` is `[e, h]`, `w` `[e + h, h]`
//! (the context's rows first, then the decoder's), `b` `[h]`, the output
//! `[rows, h]`.

use std::mem::MaybeUninit;

use super::attention::{AttnDims, Operands, Windows, attention_backward, attention_forward};
use super::gemm::{
    PackedB, elems, matmul_at_threaded, matmul_maybe_packed, matmul_maybe_packed_uninit,
};
use super::math::{column_sums, tanh_all};
use super::pool::{for_row_blocks, parallel_for_each_mut, written_row_blocks};

/// Rows per block of the row-wise passes: a multiple of 4 (the blocked
/// kernel's row blocks).
const BLOCK: usize = 256;

/// The operands of the attention but its keys, which the layer computes.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Decoder rows `[rows, h]`.
    pub dec: &'a [f32],
    /// `[sentences * len, e]`.
    pub values: &'a [f32],
    /// The relative bias per bucket (before `scale`).
    pub table: &'a [f32],
    /// Multiplies every table entry.
    pub scale: f32,
    /// Each row's window and buckets.
    pub windows: &'a Windows,
    /// The widths.
    pub dims: AttnDims,
}

impl<'a> Inputs<'a> {
    /// The attention's operands with these keys.
    fn with_keys(&self, keys: &'a [f32]) -> Operands<'a> {
        Operands {
            dec: self.dec,
            keys,
            values: self.values,
            table: self.table,
            scale: self.scale,
            windows: self.windows,
            dims: self.dims,
        }
    }
}

/// The layer's weights.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// The score's `W_a` `[e, h]`: keys are `values W_a`.
    pub w_a: &'a [f32],
    /// `W`, the context's rows then the decoder's.
    pub w: &'a [f32],
    /// `b`.
    pub b: &'a [f32],
}

impl<'a> Layer<'a> {
    /// `W`'s rows for the context `[e, h]` and for the decoder rows `[h, h]`.
    ///
    /// # Panics
    /// On weights not of the operands' widths.
    fn halves(&self, d: AttnDims) -> (&'a [f32], &'a [f32]) {
        let (h, e) = (d.h, d.e);
        assert!(
            self.w_a.len() == elems(e, h) && self.w.len() == elems(e + h, h) && self.b.len() == h,
            "attentional layer sizes: w_a {} (want {}), w {} (want {}), b {} (want {h})",
            self.w_a.len(),
            e * h,
            self.w.len(),
            (e + h) * h,
            self.b.len()
        );
        self.w.split_at(e * h)
    }
}

/// What the forward pass keeps for the backward one, besides its output.
#[derive(Debug, Clone, Default)]
pub struct Saved {
    /// The keys `[sentences * len, h]`.
    pub keys: Vec<f32>,
    /// The contexts `[rows, e]`.
    pub ctx: Vec<f32>,
    /// The attention weights ([`attention_forward`]'s).
    pub alpha: Vec<f32>,
}

/// The output `[rows, h]` and what the backward pass needs.
pub fn attentional_forward(inp: &Inputs, layer: Layer) -> (Vec<f32>, Saved) {
    let (w_ctx, w_dec) = layer.halves(inp.dims);
    let (h, e) = (inp.dims.h, inp.dims.e);
    // the weights packed once for every block's products (the packed
    // kernel runs at 200 GFLOP/s where reading them in place runs at 170)
    let (p_a, p_ctx, p_dec) = (
        PackedB::new(layer.w_a, e, h, false),
        PackedB::new(w_ctx, e, h, false),
        PackedB::new(w_dec, h, h, false),
    );
    // SAFETY: each block's product writes all of its rows
    let keys = unsafe {
        written_row_blocks(inp.values.len() / e, h, BLOCK, 0, |r0, out| {
            let m = out.len() / h;
            let values = &inp.values[r0 * e..(r0 + m) * e];
            matmul_maybe_packed_uninit(out, values, (layer.w_a, false), p_a.as_ref(), m, h, e);
        })
    };
    let op = inp.with_keys(&keys);
    let (ctx, alpha) = attention_forward(&op);
    // SAFETY: each block's first product writes all of its rows
    let y = unsafe {
        written_row_blocks(
            inp.dec.len().checked_div(h).unwrap_or(0),
            h,
            BLOCK,
            0,
            |r0, out| {
                let m = out.len() / h;
                let (ctx, dec) = (&ctx[r0 * e..(r0 + m) * e], &inp.dec[r0 * h..(r0 + m) * h]);
                let out =
                    matmul_maybe_packed_uninit(out, ctx, (w_ctx, false), p_ctx.as_ref(), m, h, e);
                matmul_maybe_packed(out, dec, (w_dec, false), p_dec.as_ref(), m, h, h, true);
                for row in out.chunks_exact_mut(h) {
                    for (x, b) in row.iter_mut().zip(layer.b) {
                        *x += b;
                    }
                }
                tanh_all(out);
            },
        )
    };
    (y, Saved { keys, ctx, alpha })
}

/// Gradients of [`attentional_forward`], shaped as their operands.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    /// Of the decoder rows `[rows, h]`.
    pub ddec: Vec<f32>,
    /// Of the values.
    pub dvalues: Vec<f32>,
    /// Of `w_a` `[e, h]`.
    pub dw_a: Vec<f32>,
    /// Of the bias table.
    pub dtable: Vec<f32>,
    /// Of `w` `[e + h, h]`.
    pub dw: Vec<f32>,
    /// Of `b` `[h]`.
    pub db: Vec<f32>,
}

/// One block's share of the backward pass: its index, its rows of the
/// gradients of the pre-activations, the context and the decoder rows.
type BackwardBlock<'a> = (
    usize,
    &'a mut [MaybeUninit<f32>],
    &'a mut [MaybeUninit<f32>],
    &'a mut [MaybeUninit<f32>],
);

/// Gradients for the output's gradient `dy` `[rows, h]`, from the
/// forward's output `y` and what it saved.
pub fn attentional_backward(
    inp: &Inputs,
    layer: Layer,
    saved: &Saved,
    y: &[f32],
    dy: &[f32],
) -> Grads {
    let (w_ctx, w_dec) = layer.halves(inp.dims);
    let (h, e) = (inp.dims.h, inp.dims.e);
    let rows = inp.dec.len() / h;
    assert!(
        y.len() == rows * h && dy.len() == rows * h && saved.ctx.len() == rows * e,
        "attentional layer output and gradient sizes"
    );
    // `W`'s halves transposed, packed once for every block's products
    let (p_ctx, p_dec) = (
        PackedB::new(w_ctx, h, e, true),
        PackedB::new(w_dec, h, h, true),
    );
    // three buffers written block by block, none zeroed first
    let (mut dpre, mut dctx, mut ddec_direct) = (
        Vec::with_capacity(rows * h),
        Vec::with_capacity(rows * e),
        Vec::with_capacity(rows * h),
    );
    let mut work: Vec<BackwardBlock> = dpre.spare_capacity_mut()[..rows * h]
        .chunks_mut(BLOCK * h)
        .zip(dctx.spare_capacity_mut()[..rows * e].chunks_mut(BLOCK * e))
        .zip(ddec_direct.spare_capacity_mut()[..rows * h].chunks_mut(BLOCK * h))
        .enumerate()
        .map(|(k, ((dpre, dctx), ddec))| (k, dpre, dctx, ddec))
        .collect();
    parallel_for_each_mut(&mut work, |(k, dpre, dctx, ddec)| {
        let (r0, m) = (*k * BLOCK, ddec.len() / h);
        let span = r0 * h..(r0 + m) * h;
        // through the tanh
        for ((p, y), d) in dpre.iter_mut().zip(&y[span.clone()]).zip(&dy[span]) {
            p.write(d * (1.0 - y * y));
        }
        // SAFETY: the loop above wrote every value (the block is `m x h`)
        let dpre = unsafe { dpre.assume_init_ref() };
        matmul_maybe_packed_uninit(dctx, dpre, (w_ctx, true), p_ctx.as_ref(), m, e, h);
        matmul_maybe_packed_uninit(ddec, dpre, (w_dec, true), p_dec.as_ref(), m, h, h);
    });
    drop(work);
    // SAFETY: the blocks cover each buffer's first values (`rows` rows),
    // and each block wrote all of its own in each
    unsafe {
        dpre.set_len(rows * h);
        dctx.set_len(rows * e);
        ddec_direct.set_len(rows * h);
    }
    // the weights' gradients: products over every row at once
    let mut dw = matmul_at_threaded(&saved.ctx, &dpre, (e, h, rows));
    dw.extend(matmul_at_threaded(inp.dec, &dpre, (h, h, rows)));
    let db = column_sums(&dpre, h);
    let op = inp.with_keys(&saved.keys);
    let (mut ddec, dkeys, mut dvalues, dtable) = attention_backward(&op, &saved.alpha, &dctx);
    for (d, x) in ddec.iter_mut().zip(&ddec_direct) {
        *d += x;
    }
    // through the keys: dvalues += dkeys W_a^T, dW_a = values^T dkeys
    let p_a = PackedB::new(layer.w_a, h, e, true);
    for_row_blocks(&mut dvalues, e, BLOCK, |r0, out| {
        let m = out.len() / e;
        let dk = &dkeys[r0 * h..(r0 + m) * h];
        matmul_maybe_packed(out, dk, (layer.w_a, true), p_a.as_ref(), m, e, h, true);
    });
    let dw_a = matmul_at_threaded(inp.values, &dkeys, (e, h, dkeys.len() / h));
    Grads {
        ddec,
        dvalues,
        dw_a,
        dtable,
        dw,
        db,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::attention::tests::{Case, case, reference};
    use crate::kernel::pool::{TestThreads, set_threads};
    use tokenizer::rng::Rng;

    /// A case's operands (its keys unused: made from the values by `w_a`)
    /// plus the layer's weights and an output gradient.
    struct Layered {
        c: Case,
        w_a: Vec<f32>,
        w: Vec<f32>,
        b: Vec<f32>,
        dy: Vec<f32>,
    }

    fn layered(n: usize, steps: usize, len: usize, d: AttnDims, seed: u64) -> Layered {
        let c = case(n, steps, len, d, true, seed);
        let mut rng = Rng::new(seed + 100);
        let mut fill = |k: usize, s: f32| -> Vec<f32> {
            (0..k).map(|_| (rng.next_f32() * 2.0 - 1.0) * s).collect()
        };
        Layered {
            w_a: fill(d.e * d.h, 0.4),
            w: fill((d.e + d.h) * d.h, 0.3),
            b: fill(d.h, 0.5),
            dy: fill(c.w.rows() * d.h, 1.0),
            c,
        }
    }

    impl Layered {
        fn inputs(&self, scale: f32) -> Inputs<'_> {
            Inputs {
                dec: &self.c.dec,
                values: &self.c.values,
                table: &self.c.table,
                scale,
                windows: &self.c.w,
                dims: self.c.d,
            }
        }

        fn layer(&self) -> Layer<'_> {
            Layer {
                w_a: &self.w_a,
                w: &self.w,
                b: &self.b,
            }
        }

        /// The operands in gradient order: decoder rows, values, `w_a`,
        /// table, `w`, `b`.
        fn operands(&self) -> [Vec<f32>; 6] {
            [
                &self.c.dec,
                &self.c.values,
                &self.w_a,
                &self.c.table,
                &self.w,
                &self.b,
            ]
            .map(|v| v.clone())
        }
    }

    /// The definition in f64: keys `values w_a`, the dense attention's
    /// context, joined with the decoder rows, times `w`, plus `b`, through
    /// `tanh`.
    fn reference_layer(l: &Layered, ops: &[Vec<f32>; 6], scale: f32) -> Vec<f64> {
        let [dec, values, w_a, table, w, b] = ops;
        let (h, e) = (l.c.d.h, l.c.d.e);
        let keys: Vec<f32> = values
            .chunks_exact(e)
            .flat_map(|v| {
                (0..h).map(move |j| {
                    (0..e)
                        .map(|i| v[i] as f64 * w_a[i * h + j] as f64)
                        .sum::<f64>() as f32
                })
            })
            .collect();
        let ctx = reference(&l.c, dec, &keys, values, table, scale);
        let rows = l.c.w.rows();
        let mut y = vec![0.0f64; rows * h];
        for r in 0..rows {
            for j in 0..h {
                let mut s = b[j] as f64;
                for i in 0..e {
                    s += ctx[r * e + i] * w[i * h + j] as f64;
                }
                for i in 0..h {
                    s += dec[r * h + i] as f64 * w[(e + i) * h + j] as f64;
                }
                y[r * h + j] = s.tanh();
            }
        }
        y
    }

    /// Widths with a 16-lane body and a rest: every product by the `gemm`
    /// crate (no packed operand).
    const DIMS: AttnDims = AttnDims { h: 40, e: 24 };

    /// Widths in sixteens: the blocked kernels and the packed `W^T` (on a
    /// CPU that has them: the output says which).
    const FAST: AttnDims = AttnDims { h: 32, e: 64 };

    /// 3 x 87 decoder rows: a whole block of 256, then 5 rows (not a
    /// multiple of 4: those go to the `gemm` crate); 3 x 8 value rows.
    const ACROSS_A_BLOCK: (usize, usize, usize) = (3, 87, 8);

    #[test]
    #[allow(clippy::print_stderr)] // says which kernels the fast widths took
    fn forward_equals_the_definition() {
        let (n, steps, len) = ACROSS_A_BLOCK;
        for d in [DIMS, FAST] {
            let l = layered(n, steps, len, d, 1);
            let (y, _) = attentional_forward(&l.inputs(2.5), l.layer());
            let want = reference_layer(&l, &l.operands(), 2.5);
            for (i, (x, y)) in y.iter().zip(&want).enumerate() {
                assert!((*x as f64 - y).abs() < 1e-5, "{d:?} output {i}: {x} vs {y}");
            }
        }
        eprintln!(
            "attentional forward: fast widths on {} kernels",
            crate::kernel::isa().name()
        );
    }

    /// Every gradient against central differences of the definition: at a
    /// small size, and at the fast widths across a block (every 31st value).
    #[test]
    fn backward_matches_finite_differences() {
        finite_differences(layered(2, 5, 9, DIMS, 2), 7);
        let (n, steps, len) = ACROSS_A_BLOCK;
        finite_differences(layered(n, steps, len, FAST, 2), 31);
    }

    fn finite_differences(l: Layered, stride: usize) {
        let scale = 2.5;
        let (y, saved) = attentional_forward(&l.inputs(scale), l.layer());
        let g = attentional_backward(&l.inputs(scale), l.layer(), &saved, &y, &l.dy);
        let ops = l.operands();
        let grads = [&g.ddec, &g.dvalues, &g.dw_a, &g.dtable, &g.dw, &g.db];
        let loss = |ops: &[Vec<f32>; 6]| -> f64 {
            let y = reference_layer(&l, ops, scale);
            y.iter().zip(&l.dy).map(|(y, d)| y * *d as f64).sum()
        };
        for (which, grad) in grads.into_iter().enumerate() {
            assert_eq!(ops[which].len(), grad.len(), "operand {which}");
            for i in (0..grad.len()).step_by(stride) {
                let eps = 1e-3f32;
                let mut nudged = ops.clone();
                nudged[which][i] = ops[which][i] + eps;
                let up = loss(&nudged);
                nudged[which][i] = ops[which][i] - eps;
                let down = loss(&nudged);
                let fd = (up - down) / (2.0 * eps as f64);
                let g = grad[i] as f64;
                assert!(
                    (g - fd).abs() < 2e-3 * (1.0 + fd.abs()),
                    "operand {which} value {i}: {g} vs {fd}"
                );
            }
        }
    }

    /// One thread and two give the same values to the last bit, with
    /// several blocks and the mirror's widths (the weight gradients'
    /// products large enough for the `gemm` crate to split them).
    #[test]
    fn threads_do_not_change_the_result() {
        let _threads = TestThreads::lock();
        let l = layered(6, 70, 14, AttnDims { h: 128, e: 256 }, 3);
        let run = || {
            let (y, saved) = attentional_forward(&l.inputs(1.5), l.layer());
            let g = attentional_backward(&l.inputs(1.5), l.layer(), &saved, &y, &l.dy);
            (y, g)
        };
        set_threads(1);
        let one = run();
        set_threads(2);
        assert_eq!(one, run());
    }
}
