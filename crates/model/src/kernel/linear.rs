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
//!
//! With a 16-bit [`Precision`] (and the CPU's instructions for it) the two
//! products by `W`, `y = x W` and `dx = dy W^T`, run in that format
//! ([`PackedHalf`]: fp16 at twice the f32 rate; bf16 on the AMX tiles
//! where the CPU has them, else on `vdpbf16ps`) a block of rows on each
//! thread. On the AMX tiles so does `dW = x^T dy`
//! ([`half::matmul_at_threaded`]: `x` and `dy` rounded once, a block of
//! `dW`'s rows on each thread): in `large`'s bf16 step the f32 `dW` was
//! 18.5% of the time, and in bf16 the step runs 14-18% faster. Elsewhere `dW`
//! stays f32: with AVX512-FP16 the step was no faster in 16 bits, with
//! bf16's `vdpbf16ps` 5-7% slower (Xeon model 167, side by side).

use super::gemm::{elems, matmul_at_threaded, matmul_threaded, matmul_threaded_new};
use super::half::{self, PackedHalf, Precision};
use super::math::column_sums;
use super::pool::{assume_written, written_row_blocks, zeroed};

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

/// `W` (`[k, n]`, or `[n, k]` when `transposed`) packed in the 16-bit
/// format `precision` asks for where the CPU has it; `None` for f32. Both
/// sizes in sixteens, so that the forward product (`k` even, `n` whole
/// strips) and the backward one (the other way round) run in the same
/// precision.
fn packed_half(
    precision: Precision,
    w: &[f32],
    (k, n): (usize, usize),
    transposed: bool,
) -> Option<PackedHalf> {
    if !in_sixteens(k, n) {
        return None;
    }
    PackedHalf::new(precision.half()?, w, k, n, transposed)
}

/// Whether a layer of sizes `a` and `b` (either order: the forward product
/// packs `[d_in, d_out]`, the backward one `[d_out, d_in]`) runs its
/// products in 16 bits where asked (see [`packed_half`]).
fn in_sixteens(a: usize, b: usize) -> bool {
    a.is_multiple_of(16) && b.is_multiple_of(16)
}

/// `y = x W + b`, `[rows, d_out]`, the product in `precision` where it
/// applies (see the module's note).
///
/// # Panics
/// On operands not of `d`.
pub fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    d: LinearDims,
    precision: Precision,
) -> Vec<f32> {
    d.check(x, w);
    assert_eq!(b.len(), d.d_out, "dense layer bias for {d:?}");
    if d.d_out == 0 {
        return Vec::new();
    }
    let packed = packed_half(precision, w, (d.d_in, d.d_out), false);
    // the bias in every row first, the product added to it: in 16 bits a
    // block of rows on each thread, else over all rows at once after
    // SAFETY: each block's rows are written whole, a copy of the bias each
    let mut y = unsafe {
        written_row_blocks(d.rows, d.d_out, BLOCK, 0, |first, out| {
            for row in out.chunks_exact_mut(d.d_out) {
                row.write_copy_of_slice(b);
            }
            if let Some(p) = &packed {
                // SAFETY: every value written just above
                let out = assume_written(out);
                let rows = out.len() / d.d_out;
                p.matmul(out, &x[first * d.d_in..(first + rows) * d.d_in], rows, true);
            }
        })
    };
    if packed.is_none() {
        matmul_threaded(&mut y, x, (w, false), (d.rows, d.d_out, d.d_in), true);
    }
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

/// Gradients for the output's gradient `dy` `[rows, d_out]`: `dx = dy W^T`
/// (in `precision` where it applies, as [`linear_forward`]), `dW = x^T dy`
/// (in bf16 on the AMX tiles, see the module's note; over all rows at
/// once, the output split over the threads: each value summed on one, in
/// the same order whatever their count), `db` the column sums of `dy`.
///
/// # Panics
/// On operands not of `d`.
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    d: LinearDims,
    precision: Precision,
) -> LinearGrads {
    d.check(x, w);
    assert_eq!(
        dy.len(),
        elems(d.rows, d.d_out),
        "dense layer output gradient"
    );
    let packed = packed_half(precision, w, (d.d_out, d.d_in), true);
    let dx = match &packed {
        // SAFETY: each block written whole (zeroed), then by the product
        Some(p) if d.d_in > 0 => unsafe {
            written_row_blocks(d.rows, d.d_in, BLOCK, 0, |first, out| {
                let out = zeroed(out);
                let rows = out.len() / d.d_in;
                p.matmul(
                    out,
                    &dy[first * d.d_out..(first + rows) * d.d_out],
                    rows,
                    false,
                );
            })
        },
        _ => matmul_threaded_new(dy, (w, true), (d.rows, d.d_in, d.d_out)),
    };
    let dw_dims = (d.d_in, d.d_out, d.rows);
    // in 16 bits where `dx` is, and on the tiles
    let dw = match packed.map(|p| p.half()) {
        Some(half) if half.on_tiles() => half::matmul_at_threaded(half, x, dy, dw_dims),
        _ => None,
    }
    .unwrap_or_else(|| matmul_at_threaded(x, dy, dw_dims));
    let db = column_sums(dy, d.d_out);
    LinearGrads { dx, dw, db }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::half::Half;
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
                    linear_forward(&x, &w, &b, d, Precision::F32),
                    linear_backward(&x, &w, &dy, d, Precision::F32),
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

    /// With a 16-bit format asked for, `y`, `dx` (and `dW` on the tiles)
    /// within its rounding of their definitions (bf16: each operand within 2^-8 of itself, their
    /// product within 2^-7, sums in f32; fp16: sums of 64 products in fp16,
    /// a few 2^-11 of the sum of the magnitudes), `db` (and `dW` elsewhere)
    /// as in f32; at
    /// sizes that take the blocks of 64 rows (on CPUs with AMX, bf16 on
    /// the tiles) and the rows past the last four (70), on one thread and
    /// on two, bit-equal (each block computed on one thread). Says so when
    /// this CPU has not the format's instructions, and then equals f32, as
    /// it does for inputs not in sixteens (the backward product's strips).
    #[test]
    #[allow(clippy::print_stderr)] // says when this CPU has not a format
    fn half_products_stay_within_their_rounding() {
        let _threads = TestThreads::lock();
        for half in [Half::Bf16, Half::F16] {
            let available = half.available();
            if !available {
                eprintln!(
                    "half_products_stay_within_their_rounding: no {} here: f32 compared",
                    half.instructions()
                );
            }
            // of the sum of the products' magnitudes
            let relative_error = match half {
                Half::Bf16 => 2.02 / 256.0,
                Half::F16 => 6.0 / 2048.0,
            };
            if half == Half::Bf16 && available && !half.on_tiles() {
                eprintln!(
                    "half_products_stay_within_their_rounding: no AMX tiles here: dW in bf16 \
                     is NOT tested"
                );
            }
            // 24 inputs or outputs: one product's operand is not whole
            // strips, so neither product is in 16 bits
            for (rows, d_in, d_out) in [(640, 128, 256), (70, 32, 64), (70, 24, 64), (70, 32, 24)] {
                let d = LinearDims { rows, d_in, d_out };
                let runs = available && in_sixteens(d_in, d_out);
                check_half_layer(half.precision(), d, runs, relative_error);
            }
        }
    }

    /// [`half_products_stay_within_their_rounding`] at the sizes `d`.
    fn check_half_layer(precision: Precision, d: LinearDims, in_half: bool, relative_error: f64) {
        let LinearDims { rows, d_in, d_out } = d;
        let (x, w, b, dy) = (
            values(rows * d_in, 1),
            values(d_in * d_out, 2),
            values(d_out, 3),
            values(rows * d_out, 4)
                .iter()
                .map(|v| v * 1e-5)
                .collect::<Vec<_>>(),
        );
        let mut runs = vec![];
        for threads in [1, 2] {
            set_threads(threads);
            runs.push((
                linear_forward(&x, &w, &b, d, precision),
                linear_backward(&x, &w, &dy, d, precision),
            ));
        }
        set_threads(1);
        assert!(runs[0] == runs[1], "{d:?}: one thread and two differ");
        let (y, g) = &runs[0];
        let f32_grads = linear_backward(&x, &w, &dy, d, Precision::F32);
        assert_eq!(
            linear_forward(&x, &w, &b, d, Precision::F32) != *y,
            in_half,
            "{} ran where it applies",
            precision.name()
        );
        assert_eq!(g.db, f32_grads.db);
        let dw_in_half = in_half && precision.half().is_some_and(Half::on_tiles);
        assert_eq!(
            g.dw != f32_grads.dw,
            dw_in_half,
            "{d:?}: dW in bf16 on the tiles only"
        );
        if !in_half {
            assert_eq!(
                (&g.dx, &g.dw),
                (&f32_grads.dx, &f32_grads.dw),
                "{d:?}: dx and dW in f32 as y is"
            );
        }
        // the sum and the sum of magnitudes of n products
        let dot = |n: usize, f: &dyn Fn(usize) -> (f32, f32)| -> (f64, f64) {
            (0..n).fold((0.0, 0.0), |(s, m), p| {
                let (a, b) = f(p);
                let t = a as f64 * b as f64;
                (s + t, m + t.abs())
            })
        };
        let close = |what: &str, got: f32, (want, magnitude): (f64, f64), base: f64| {
            let bound = relative_error * magnitude + 1e-6 * base.abs() + 1e-30;
            assert!(
                (got as f64 - want).abs() <= bound,
                "{d:?} {what}: {got} against {want}"
            );
        };
        for r in 0..rows {
            for j in 0..d_out {
                let (sum, magnitude) = dot(d_in, &|p| (x[r * d_in + p], w[p * d_out + j]));
                let bias = b[j] as f64;
                close(
                    &format!("y[{r}, {j}]"),
                    y[r * d_out + j],
                    (sum + bias, magnitude),
                    bias,
                );
            }
            for p in 0..d_in {
                let want = dot(d_out, &|j| (dy[r * d_out + j], w[p * d_out + j]));
                close(&format!("dx[{r}, {p}]"), g.dx[r * d_in + p], want, 0.0);
            }
        }
        for p in 0..d_in {
            for j in 0..d_out {
                let want = dot(rows, &|r| (x[r * d_in + p], dy[r * d_out + j]));
                close(&format!("dW[{p}, {j}]"), g.dw[p * d_out + j], want, 0.0);
            }
        }
    }
}
