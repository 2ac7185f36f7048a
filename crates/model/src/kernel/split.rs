//! The batch split over threads: every sequence of a batch is independent,
//! so a forward or backward pass runs as one part per thread, each on its
//! own sequences, sharing one packed copy of the recurrent weights.

use super::gemm::elems;
use super::half::Precision;
use super::pool::{for_row_blocks, parallel_map, parallel_map_owned, threads, written_row_blocks};
use super::sequence::{
    PackedRecurrent, PartInput, PartLookup, PartRows, Projections, SeqCache, SeqDims, SeqGrads,
    backward_packed, check_ids, forward_packed,
};

/// The batch split for `parts` threads: `(first sequence, sequences)` of each part.
pub fn split_batch(batch: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, batch.max(1));
    (0..parts)
        .map(|k| {
            let lo = batch * k / parts;
            let hi = batch * (k + 1) / parts;
            (lo, hi - lo)
        })
        .collect()
}

/// The parts [`forward_split`] splits a batch of `batch` sequences into:
/// one a thread from 16 sequences, else one part.
pub fn batch_parts(batch: usize) -> Vec<(usize, usize)> {
    split_batch(batch, if batch >= 16 { threads() } else { 1 })
}

/// The rows of a part of `n` sequences of every step of time-major `x`
/// (`width` values a row).
fn gather(x: &[f32], part: PartRows, n: usize, width: usize, steps: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(steps * n * width);
    for t in 0..steps {
        let rows = part.step(t, n);
        out.extend_from_slice(&x[rows.start * width..rows.end * width]);
    }
    out
}

/// Time-major `[steps * batch, width]` from the parts' rows (`(first
/// sequence, sequences, rows [steps * sequences, width])` each), copied by
/// all threads, a run of steps each; with room for `spare` more values.
fn scatter_all<'a>(
    parts: impl Iterator<Item = (usize, usize, &'a [f32])>,
    dims: SeqDims,
    width: usize,
    spare: usize,
) -> Vec<f32> {
    let parts: Vec<(usize, usize, &[f32])> = parts.collect();
    let mut covered = 0;
    for &(lo, n, part) in &parts {
        assert_eq!(lo, covered, "parts are consecutive sequence ranges");
        assert!(
            part.len() >= elems(elems(dims.steps, n), width),
            "part size"
        );
        covered += n;
    }
    assert_eq!(covered, dims.batch, "the parts cover the batch");
    let per = dims.steps.div_ceil(threads().max(1)).max(1);
    // SAFETY: each step's rows are written whole: the parts are
    // consecutive, disjoint sequence ranges covering the batch (checked above)
    unsafe {
        written_row_blocks(dims.rows(), width, per * dims.batch, spare, |r0, run| {
            for (k, out) in run.chunks_exact_mut(dims.batch * width).enumerate() {
                let t = r0 / dims.batch + k;
                for &(lo, n, part) in &parts {
                    out[lo * width..(lo + n) * width]
                        .write_copy_of_slice(&part[t * n * width..(t + 1) * n * width]);
                }
            }
        })
    }
}

/// Caches of a forward pass split over threads.
#[derive(Debug, Clone, Default)]
pub struct SplitCache {
    /// `(first sequence, sequences, cache)` of every part.
    pub parts: Vec<(usize, usize, SeqCache)>,
    /// The precision the forward pass ran in; the backward pass runs in the same.
    pub precision: Precision,
}

/// [`forward`](super::sequence::forward) with the batch split over up to [`threads`] threads (each
/// sequence is independent of the others). Returns the outputs `[rows, H]`
/// (with room for `[batch, H]` more: the flex operation appends the final
/// cell state without moving them) and the final cell state `[batch, H]`. The recurrent products run in
/// `precision` where it applies ([`PackedRecurrent::new`]). `input` is
/// read where it lies (the caller can lend it from a tensor's buffer):
/// each part reads its own rows, step by step.
///
/// # Panics
/// On a lookup's id past its table ([`Projections::check`]), or operands
/// not of `dims`.
pub fn forward_split(
    dims: SeqDims,
    input: Projections,
    wh: &[f32],
    (h0, c0): (&[f32], &[f32]),
    precision: Precision,
    cache: &mut SplitCache,
) -> (Vec<f32>, Vec<f32>) {
    input.check(dims.gates());
    let parts = batch_parts(dims.batch);
    // one packed copy for all threads (two copies of a 4 MiB `wh` would fill
    // the L3 cache), chosen by the parts' rows alone: the backward pass,
    // on the same parts, packs in the same precision
    let rows: Vec<usize> = parts.iter().map(|p| p.1).collect();
    let packed = PackedRecurrent::new(wh, dims.hidden, false, precision, &rows);
    cache.precision = packed.precision();
    if parts.len() == 1 {
        let mut c = SeqCache::default();
        let part = PartInput::whole(input, dims.batch);
        let c_last = forward_packed(dims, part, wh, &packed, h0, c0, &mut c);
        let mut hs = Vec::with_capacity(c.hs.len() + c_last.len());
        hs.extend_from_slice(&c.hs);
        cache.parts = vec![(0, dims.batch, c)];
        return (hs, c_last);
    }
    let hd = dims.hidden;
    let results: Vec<(usize, usize, SeqCache, Vec<f32>)> = parallel_map(&parts, |&(lo, n)| {
        let h0k = &h0[lo * hd..(lo + n) * hd];
        let c0k = &c0[lo * hd..(lo + n) * hd];
        let d = SeqDims {
            steps: dims.steps,
            batch: n,
            hidden: hd,
        };
        let mut c = SeqCache::default();
        let part = PartInput {
            input,
            rows: PartRows {
                stride: dims.batch,
                lo,
            },
        };
        let last = forward_packed(d, part, wh, &packed, h0k, c0k, &mut c);
        (lo, n, c, last)
    });
    let hs = scatter_all(
        results.iter().map(|(lo, n, c, _)| (*lo, *n, &c.hs[..])),
        dims,
        hd,
        dims.batch * hd,
    );
    let mut c_last = vec![0.0f32; dims.batch * hd];
    cache.parts.clear();
    for (lo, n, c, last) in results {
        c_last[lo * hd..(lo + n) * hd].copy_from_slice(&last);
        cache.parts.push((lo, n, c));
    }
    (hs, c_last)
}

/// [`backward`](super::sequence::backward) of a [`forward_split`] pass, on
/// the same split. It consumes the forward pass's `cache` (each part's
/// activations become its gradients). With `lookup` (the forward pass's
/// [`Projections::Lookup`] ids, one per row, and its table's rows), the
/// table's gradient comes back in `dtable`: each part's sums, added in
/// part order, so that their rounding depends on the thread count, as the
/// recurrent weights' gradient's does. `dh0_wanted`: as
/// [`backward_packed`]'s (`dh0` empty without it).
///
/// # Panics
/// On a lookup's id past its table, operands not of `dims`, or a `cache`
/// of no parts (not one a [`forward_split`] pass made).
pub fn backward_split(
    dims: SeqDims,
    cache: SplitCache,
    wh: &[f32],
    (h0, c0): (&[f32], &[f32]),
    (dhs, dc_last): (&[f32], &[f32]),
    lookup: Option<(&[u32], usize)>,
    dh0_wanted: bool,
) -> SeqGrads {
    if let Some((ids, vocab)) = lookup {
        check_ids(ids, vocab);
    }
    let part_lookup = |rows| lookup.map(|(ids, vocab)| PartLookup { ids, vocab, rows });
    let rows: Vec<usize> = cache.parts.iter().map(|p| p.1).collect();
    let packed_t = PackedRecurrent::new(wh, dims.hidden, true, cache.precision, &rows);
    let mut parts = cache.parts;
    if parts.len() == 1 {
        let (_, _, c) = parts.pop().expect("one part");
        let whole = part_lookup(PartRows::whole(dims.batch));
        let (state, d_out) = ((h0, c0), (dhs, dc_last));
        return backward_packed(dims, c, wh, &packed_t, state, d_out, whole, dh0_wanted);
    }
    let (g4, hd) = (dims.gates(), dims.hidden);
    let mut results: Vec<(usize, usize, SeqGrads)> = parallel_map_owned(parts, |(lo, n, c)| {
        let part = PartRows {
            stride: dims.batch,
            lo,
        };
        let dh = gather(dhs, part, n, hd, dims.steps);
        let dc = &dc_last[lo * hd..(lo + n) * hd];
        let d = SeqDims {
            steps: dims.steps,
            batch: n,
            hidden: hd,
        };
        let state = (&h0[lo * hd..(lo + n) * hd], &c0[lo * hd..(lo + n) * hd]);
        let lookup = part_lookup(part);
        let g = backward_packed(d, c, wh, &packed_t, state, (&dh, dc), lookup, dh0_wanted);
        (lo, n, g)
    });
    let dp = scatter_all(
        results.iter().map(|(lo, n, g)| (*lo, *n, &g.dp[..])),
        dims,
        g4,
        0,
    );
    // the parts' sums of the weights' and the table's gradients, into the
    // first part's, rows over the threads (`large`'s 4 MiB `dwh` summed on
    // one thread was time the other spent waiting)
    let (first, rest) = results
        .split_first_mut()
        .expect("a split forward pass makes one part or more");
    let sum_into = |sum: &mut [f32], field: fn(&SeqGrads) -> &[f32]| {
        for_row_blocks(sum, g4, SUM_ROWS, |r0, rows| {
            let at = r0 * g4..r0 * g4 + rows.len();
            for (_, _, g) in rest.iter() {
                rows.iter_mut()
                    .zip(&field(g)[at.clone()])
                    .for_each(|(a, b)| *a += b);
            }
        });
    };
    sum_into(&mut first.2.dwh, |g| &g.dwh);
    sum_into(&mut first.2.dtable, |g| &g.dtable);
    let mut out = SeqGrads {
        dp,
        dwh: std::mem::take(&mut first.2.dwh),
        dh0: vec![0.0; if dh0_wanted { dims.batch * hd } else { 0 }],
        dc0: vec![0.0; dims.batch * hd],
        dtable: std::mem::take(&mut first.2.dtable),
    };
    for (lo, n, g) in &results {
        if dh0_wanted {
            out.dh0[lo * hd..(lo + n) * hd].copy_from_slice(&g.dh0);
        }
        out.dc0[lo * hd..(lo + n) * hd].copy_from_slice(&g.dc0);
    }
    out
}

/// Rows of a gradient summed over the parts in one block (of `4 * hidden`
/// values: 64 rows of `large`'s 2048 are 512 KiB, its 512 rows 8 blocks).
const SUM_ROWS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::half::Half;
    use crate::kernel::pool::{TestThreads, set_threads};
    use crate::kernel::sequence::{backward, forward};

    /// Inputs of one sequence pass and its output gradients, values in
    /// `[-8 / div, 8 / div]`.
    struct Case {
        p: Vec<f32>,
        wh: Vec<f32>,
        h0: Vec<f32>,
        c0: Vec<f32>,
        dh: Vec<f32>,
        dc: Vec<f32>,
    }

    impl Case {
        fn new(dims: SeqDims, div: f32) -> Self {
            let n = |k: usize, m: usize| -> Vec<f32> {
                (0..k)
                    .map(|i| (((i * m) % 17) as f32 - 8.0) / div)
                    .collect()
            };
            let (rows, g4, b, hd) = (dims.rows(), dims.gates(), dims.batch, dims.hidden);
            Case {
                p: n(rows * g4, 7),
                wh: n(hd * g4, 5),
                h0: n(b * hd, 3),
                c0: n(b * hd, 11),
                dh: n(rows * hd, 13),
                dc: n(b * hd, 2),
            }
        }

        /// The single-threaded f32 passes: the forward cache, the final cell, the gradients.
        fn single(&self, dims: SeqDims) -> (SeqCache, Vec<f32>, SeqGrads) {
            let mut one = SeqCache::default();
            let c1 = forward(dims, &self.p, &self.wh, &self.h0, &self.c0, &mut one);
            let g = backward(
                dims,
                one.clone(),
                &self.wh,
                &self.h0,
                &self.c0,
                &self.dh,
                &self.dc,
            );
            (one, c1, g)
        }

        /// The split passes in `precision`: outputs, final cell, gradients, the cache.
        fn split(
            &self,
            dims: SeqDims,
            precision: Precision,
        ) -> (Vec<f32>, Vec<f32>, SeqGrads, SplitCache) {
            let mut split = SplitCache::default();
            let (hs, c2) = forward_split(
                dims,
                Projections::Rows(&self.p),
                &self.wh,
                (&self.h0, &self.c0),
                precision,
                &mut split,
            );
            let g = backward_split(
                dims,
                split.clone(),
                &self.wh,
                (&self.h0, &self.c0),
                (&self.dh, &self.dc),
                None,
                true,
            );
            (hs, c2, g, split)
        }
    }

    /// Splitting the batch over threads changes nothing but rounding: with
    /// unpacked weights (12 gate columns), with weights packed once for all
    /// threads (16 columns, parts of 8) and with packed weights that some
    /// parts cannot use (parts of 6 and 7 rows: not multiples of 4, the
    /// kernel's smallest row block, so every part reads `wh` in place);
    /// 72 units are two blocks of rows of the parts' summed `dwh`. Without
    /// `dh0`, the other gradients are the same to the bit.
    #[test]
    fn split_passes_equal_the_single_pass() {
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((x - y).abs() < 1e-5, "{what}[{i}]: {x} vs {y}");
            }
        };
        for (batch, hidden) in [(20, 3), (24, 4), (20, 4), (16, 72)] {
            let dims = SeqDims {
                steps: 4,
                batch,
                hidden,
            };
            let case = Case::new(dims, 10.0);
            let (one, c1, g1) = case.single(dims);
            let threads = TestThreads::lock();
            set_threads(3);
            let (hs, c2, g2, split) = case.split(dims, Precision::F32);
            // without dh0 (a detached initial state): the rest exactly as with it
            let (state, d_out) = ((&case.h0[..], &case.c0[..]), (&case.dh[..], &case.dc[..]));
            let g3 = backward_split(dims, split.clone(), &case.wh, state, d_out, None, false);
            drop(threads);
            assert!(g3.dh0.is_empty(), "dh0 not wanted");
            assert!(g3.dp == g2.dp && g3.dwh == g2.dwh && g3.dc0 == g2.dc0);
            assert_eq!(split.parts.len(), 3);
            close(&hs, &one.hs, "outputs");
            close(&c1, &c2, "final cell");
            close(&g1.dp, &g2.dp, "dp");
            close(&g1.dh0, &g2.dh0, "dh0");
            close(&g1.dc0, &g2.dc0, "dc0");
            close(&g1.dwh, &g2.dwh, "dwh");
        }
    }

    /// Input projections looked up from a table give the rows they name,
    /// exactly, on one thread and two (parts of 8: the packed kernels), and
    /// the table's gradient, summed step by step in the backward pass, is
    /// the sum of its rows' gradients.
    #[test]
    fn lookup_input_equals_its_rows() {
        let dims = SeqDims {
            steps: 5,
            batch: 16,
            hidden: 48,
        };
        let g4 = dims.gates();
        let case = Case::new(dims, 10.0);
        let _threads = TestThreads::lock();
        // a table of 70 rows is two blocks of the parts' summed gradient
        for vocab in [7, 70] {
            let table = &case.p[..vocab * g4];
            let ids: Vec<u32> = (0..dims.rows())
                .map(|r| ((r * 5 + r / 3) % vocab) as u32)
                .collect();
            let rows: Vec<f32> = ids
                .iter()
                .flat_map(|&id| {
                    table[id as usize * g4..(id as usize + 1) * g4]
                        .iter()
                        .copied()
                })
                .collect();
            for threads in [1, 2] {
                set_threads(threads);
                let run = |input: Projections| {
                    let mut split = SplitCache::default();
                    let h = (&case.h0[..], &case.c0[..]);
                    let out = forward_split(dims, input, &case.wh, h, Precision::F32, &mut split);
                    (out, split)
                };
                let (looked_up, split) = run(Projections::Lookup { table, ids: &ids });
                let (from_rows, _) = run(Projections::Rows(&rows));
                assert_eq!(looked_up, from_rows, "{threads} threads");
                assert_eq!(split.parts.len(), threads);
                let (state, d_out) = ((&case.h0[..], &case.c0[..]), (&case.dh[..], &case.dc[..]));
                let lookup = Some((&ids[..], vocab));
                let g = backward_split(dims, split, &case.wh, state, d_out, lookup, false);
                assert_eq!(g.dtable.len(), vocab * g4);
                assert!(g.dh0.is_empty(), "dh0 not wanted");
                for (v, row) in g.dtable.chunks_exact(g4).enumerate() {
                    for (j, &x) in row.iter().enumerate() {
                        let terms: Vec<f64> = (0..ids.len())
                            .filter(|&r| ids[r] as usize == v)
                            .map(|r| f64::from(g.dp[r * g4 + j]))
                            .collect();
                        let want: f64 = terms.iter().sum();
                        let scale: f64 = terms.iter().map(|t| t.abs()).sum();
                        assert!(
                            (f64::from(x) - want).abs() <= 1e-6 * scale,
                            "{threads} threads, {vocab} rows: table row {v} column {j}: {x} vs {want}"
                        );
                    }
                }
                assert!(
                    g.dtable.iter().filter(|x| x.abs() > 1e-3).count() > g.dtable.len() / 2,
                    "a gradient that says something"
                );
            }
        }
        set_threads(1);
    }

    /// A lookup's ids are checked again by the backward pass, which sums
    /// the table's gradient by them.
    #[test]
    #[should_panic(expected = "input id 3 past the projected table's 3 rows")]
    fn a_backward_lookup_past_the_table_panics() {
        let dims = SeqDims {
            steps: 1,
            batch: 2,
            hidden: 1,
        };
        let mut split = SplitCache::default();
        let state = [0.0f32; 2];
        let rows = [0.0f32; 2 * 4];
        forward_split(
            dims,
            Projections::Rows(&rows),
            &[0.0; 4],
            (&state, &state),
            Precision::F32,
            &mut split,
        );
        let lookup = Some((&[0u32, 3][..], 3));
        let d_out = (&[0.0f32; 2][..], &state[..]);
        backward_split(
            dims,
            split,
            &[0.0; 4],
            (&state, &state),
            d_out,
            lookup,
            true,
        );
    }

    #[test]
    #[should_panic(expected = "input id 7 past the projected table's 7 rows")]
    fn a_lookup_past_the_table_panics() {
        let dims = SeqDims {
            steps: 1,
            batch: 2,
            hidden: 1,
        };
        let table = [0.0f32; 7 * 4];
        let input = Projections::Lookup {
            table: &table,
            ids: &[0, 7],
        };
        let state = [0.0f32; 2];
        forward_split(
            dims,
            input,
            &[0.0; 4],
            (&state, &state),
            Precision::F32,
            &mut SplitCache::default(),
        );
    }

    /// The 16-bit recurrent products at `large`'s proportions (scaled
    /// down: parts of 16 rows, 32 units: bf16 on the AMX tiles where the
    /// CPU has them, on both threads at once) on one and two threads: close
    /// to the f32 passes (operands rounded to 8 or 11 bits of mantissa),
    /// and not equal to them beyond f32 rounding where the CPU has the
    /// format's instructions (so that path did run).
    #[test]
    #[allow(clippy::print_stderr)] // says when this CPU cannot run a format
    fn half_split_passes_stay_close_to_f32() {
        let dims = SeqDims {
            steps: 5,
            batch: 32,
            hidden: 32,
        };
        let case = Case::new(dims, 20.0);
        let (one, c1, g1) = case.single(dims);
        let _threads = TestThreads::lock();
        for half in [Half::Bf16, Half::F16] {
            for threads in [1, 2] {
                set_threads(threads);
                let (hs, c2, g2, split) = case.split(dims, half.precision());
                set_threads(1);
                let want = if half.available() {
                    half.precision()
                } else {
                    Precision::F32
                };
                assert_eq!(split.precision, want);
                let mut differs = false;
                for (what, a, b) in [
                    ("outputs", &one.hs, &hs),
                    ("final cell", &c1, &c2),
                    ("dp", &g1.dp, &g2.dp),
                    ("dh0", &g1.dh0, &g2.dh0),
                    ("dwh", &g1.dwh, &g2.dwh),
                ] {
                    assert_eq!(a.len(), b.len(), "{what}");
                    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                        assert!(
                            (x - y).abs() <= 3e-2 * (1.0 + x.abs()),
                            "{half:?}, {threads} threads, {what}[{i}]: {x} vs {y}"
                        );
                        // more than the split's own rounding (1e-5 above)
                        differs |= (x - y).abs() > 1e-5;
                    }
                }
                assert_eq!(differs, half.available(), "{half:?} ran where available");
            }
            if !half.available() {
                eprintln!(
                    "half_split_passes_stay_close_to_f32: no {half:?} instructions here: f32 compared only"
                );
            }
        }
    }
}
