//! A dense layer `y = x W + b` over many rows, with its backward pass: the
//! input projection of an LSTM whose input is dense (embeddings after
//! dropout, a lower layer's outputs). As Burn operations it was a product,
//! a broadcast addition and, backward, two products of transposed views,
//! each allocating and zero-filling its output and copying a strided
//! operand: in a step of the dropout recipe a third of their time was
//! spent outside the products (`perf`). All three products go to the
//! `gemm` crate on all threads: at these shapes (hundreds to thousands of
//! rows) it runs as fast as the blocked kernel on packed weights, or faster
//! (`cargo bench -p model --bench kernel`, 640 x 256 x 128: 202 against
//! 187 GFLOP/s), and in the dropout recipe's step the blocked kernel's
//! version of this operation was no faster than Burn's.

use super::gemm::{elems, matmul_at_threaded, matmul_threaded, matmul_threaded_new};
use super::math::column_sums;
use super::pool::written_row_blocks;

/// Rows a thread's block of the bias takes.
const BLOCK: usize = 64;

/// Sizes of a layer applied to `rows` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearDims {
    /// Rows of `x` and `y`.
    pub rows: usize,
    /// Values in a row of `x` (rows of `W`).
    pub d_in: usize,
    /// Values in a row of `y` (columns of `W`, values of `b`).
    pub d_out: usize,
}

impl LinearDims {
    /// # Panics
    /// Unless `x` and `w` hold `[rows, d_in]` and `[d_in, d_out]`.
    fn check(&self, x: &[f32], w: &[f32]) {
        assert!(
            x.len() == elems(self.rows, self.d_in) && w.len() == elems(self.d_in, self.d_out),
            "dense layer operands for {self:?}: x {}, w {} values",
            x.len(),
            w.len()
        );
    }
}

/// `y = x W + b`, `[rows, d_out]`.
///
/// # Panics
/// On operands not of `d`.
pub fn linear_forward(x: &[f32], w: &[f32], b: &[f32], d: LinearDims) -> Vec<f32> {
    d.check(x, w);
    assert_eq!(b.len(), d.d_out, "dense layer bias for {d:?}");
    if d.d_out == 0 {
        return Vec::new();
    }
    // the bias in every row first, the product added to it
    // SAFETY: each block's rows are written whole, a copy of the bias each
    let mut y = unsafe {
        written_row_blocks(d.rows, d.d_out, BLOCK, 0, |_, out| {
            for row in out.chunks_exact_mut(d.d_out) {
                row.write_copy_of_slice(b);
            }
        })
    };
    matmul_threaded(&mut y, x, (w, false), (d.rows, d.d_out, d.d_in), true);
    y
}

/// Gradients of [`linear_forward`], shaped as their operands.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearGrads {
    /// Of `x` `[rows, d_in]`.
    pub dx: Vec<f32>,
    /// Of `W` `[d_in, d_out]`.
    pub dw: Vec<f32>,
    /// Of `b` `[d_out]`.
    pub db: Vec<f32>,
}

/// Gradients for the output's gradient `dy` `[rows, d_out]`: `dx = dy W^T`,
/// `dW = x^T dy` (over all rows at once, the output split over the threads:
/// each value summed on one, in the same order whatever their count), `db`
/// the column sums of `dy`.
///
/// # Panics
/// On operands not of `d`.
pub fn linear_backward(x: &[f32], w: &[f32], dy: &[f32], d: LinearDims) -> LinearGrads {
    d.check(x, w);
    assert_eq!(
        dy.len(),
        elems(d.rows, d.d_out),
        "dense layer output gradient"
    );
    let dx = matmul_threaded_new(dy, (w, true), (d.rows, d.d_in, d.d_out));
    let dw = matmul_at_threaded(x, dy, (d.d_in, d.d_out, d.rows));
    let db = column_sums(dy, d.d_out);
    LinearGrads { dx, dw, db }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::pool::{TestThreads, set_threads};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Forward and backward against their definitions in f64: at the
    /// dropout recipe's size (640 x 128 -> 256), at rows in no multiple of
    /// the `gemm` crate's blocks (70, 13), at odd widths (13 x 5 -> 3); on
    /// one thread and on two, bit-equal.
    #[test]
    fn layer_matches_its_definition_on_every_path() {
        let _threads = TestThreads::lock();
        for (rows, d_in, d_out) in [(640, 128, 256), (70, 32, 64), (13, 5, 3)] {
            let d = LinearDims { rows, d_in, d_out };
            let (x, w, b, dy) = (
                values(rows * d_in, 1),
                values(d_in * d_out, 2),
                values(d_out, 3),
                values(rows * d_out, 4),
            );
            let mut runs = vec![];
            for threads in [1, 2] {
                set_threads(threads);
                runs.push((
                    linear_forward(&x, &w, &b, d),
                    linear_backward(&x, &w, &dy, d),
                ));
            }
            set_threads(1);
            assert!(runs[0] == runs[1], "{d:?}: one thread and two differ");
            let (y, g) = &runs[0];
            let dot = |n: usize, f: &dyn Fn(usize) -> (f32, f32)| -> f64 {
                (0..n)
                    .map(|p| {
                        let (a, b) = f(p);
                        a as f64 * b as f64
                    })
                    .sum()
            };
            let close = |what: &str, got: f32, want: f64| {
                assert!(
                    (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{d:?} {what}: {got} against {want}"
                );
            };
            for r in 0..rows {
                for j in 0..d_out {
                    let want = b[j] as f64 + dot(d_in, &|p| (x[r * d_in + p], w[p * d_out + j]));
                    close(&format!("y[{r}, {j}]"), y[r * d_out + j], want);
                }
                for p in 0..d_in {
                    let want = dot(d_out, &|j| (dy[r * d_out + j], w[p * d_out + j]));
                    close(&format!("dx[{r}, {p}]"), g.dx[r * d_in + p], want);
                }
            }
            for p in 0..d_in {
                for j in 0..d_out {
                    let want = dot(rows, &|r| (x[r * d_in + p], dy[r * d_out + j]));
                    close(&format!("dw[{p}, {j}]"), g.dw[p * d_out + j], want);
                }
            }
            for j in 0..d_out {
                let want = dot(rows, &|r| (1.0, dy[r * d_out + j]));
                close(&format!("db[{j}]"), g.db[j], want);
            }
        }
    }
}
