//! Attention restricted to a window of source positions per decoder row,
//! forward and backward, on the rows' windows only.
//!
//! Dense attention computes a score for every (row, position) and masks
//! most of them out with an additive `-1e9`, whose weight is then exactly 0
//! in f32: the masked positions add nothing to the context and get no
//! gradient. A mirror decoder row may look at one source word and its
//! delimiter (about 7 of 50-100 positions), so computing only the window
//! gives the same numbers (up to the order of the sums) for a tenth of the
//! work, and none of the `[rows, positions]` intermediate tensors.
//!
//! Layout: `dec` `[sentences * steps, h]` (row `b * steps + t`), `keys`
//! `[sentences * len, h]`, `values` `[sentences * len, e]` (position `s` of
//! sentence `b` at row `b * len + s`). Sentences are independent and go to
//! the threads whole.

use std::mem::MaybeUninit;

use super::math::exp;
use super::pool::parallel_for_each_mut;

/// Where each decoder row looks: positions `lo..hi` of its sentence, each
/// with an optional relative-position bucket (an index into a bias table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// Decoder rows per sentence.
    pub steps: usize,
    /// Source positions per sentence.
    pub len: usize,
    /// Per row `(lo, hi)`, `lo < hi <= len`.
    bounds: Vec<(u32, u32)>,
    /// Per row, where its entries start (one more than rows: the total last).
    offset: Vec<usize>,
    /// Per entry (row by row, position by position), its bucket; empty
    /// when there is no relative bias.
    bucket: Vec<u32>,
}

impl Windows {
    /// No rows yet, for sentences of `steps` decoder rows over `len` positions.
    pub fn new(steps: usize, len: usize) -> Self {
        Windows {
            steps,
            len,
            bounds: Vec::new(),
            offset: vec![0],
            bucket: Vec::new(),
        }
    }

    /// Appends the next row's window `lo..hi` and, with a relative bias, the
    /// bucket of each of its positions (none without one: then every row must
    /// give none).
    ///
    /// # Panics
    /// On an empty window or one past `len`, on a bucket count other than
    /// the window's, or on rows mixing buckets and none.
    pub fn push(&mut self, lo: usize, hi: usize, buckets: impl IntoIterator<Item = u32>) {
        assert!(
            lo < hi && hi <= self.len,
            "window {lo}..{hi} of {}",
            self.len
        );
        let before = self.bucket.len();
        self.bucket.extend(buckets);
        let added = self.bucket.len() - before;
        let entries = self.entries();
        assert!(
            (added == hi - lo && before == entries) || (added == 0 && before == 0),
            "one bucket per position of every row, or none at all"
        );
        self.bounds.push((lo as u32, hi as u32));
        self.offset.push(entries + hi - lo);
    }

    /// Window positions of all rows pushed (one attention weight each).
    pub fn entries(&self) -> usize {
        *self.offset.last().expect("offset starts at 0")
    }

    /// Rows pushed.
    pub fn rows(&self) -> usize {
        self.bounds.len()
    }

    /// Row `r`'s window.
    pub fn window(&self, r: usize) -> std::ops::Range<usize> {
        let (lo, hi) = self.bounds[r];
        lo as usize..hi as usize
    }

    /// Row `r`'s buckets (empty without a relative bias).
    pub fn buckets(&self, r: usize) -> &[u32] {
        if self.bucket.is_empty() {
            &[]
        } else {
            &self.bucket[self.offset[r]..self.offset[r + 1]]
        }
    }

    /// Whether rows carry relative buckets.
    pub fn has_buckets(&self) -> bool {
        !self.bucket.is_empty()
    }

    /// Largest bucket (0 without any).
    pub fn max_bucket(&self) -> u32 {
        self.bucket.iter().copied().max().unwrap_or(0)
    }

    fn sentences(&self) -> usize {
        assert!(
            self.steps > 0 && self.rows().is_multiple_of(self.steps),
            "whole sentences of rows"
        );
        self.rows() / self.steps
    }

    /// Entries (window positions) of sentence `b`'s rows.
    fn entries_of(&self, b: usize) -> std::ops::Range<usize> {
        self.offset[b * self.steps]..self.offset[(b + 1) * self.steps]
    }
}

/// The operand sizes of one call.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    /// Width of `dec` and `keys`.
    pub h: usize,
    /// Width of `values`.
    pub e: usize,
}

/// The operands of a call (see the module's layout).
#[derive(Debug, Clone, Copy)]
pub struct Operands<'a> {
    /// Decoder rows `[rows, h]`.
    pub dec: &'a [f32],
    /// `[sentences * len, h]`.
    pub keys: &'a [f32],
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

impl Operands<'_> {
    /// # Panics
    /// On sizes that do not match the windows and dims, or a bucket past the table.
    fn check(&self) {
        let (w, d) = (self.windows, self.dims);
        let n = w.sentences();
        assert!(
            self.dec.len() == w.rows() * d.h
                && self.keys.len() == n * w.len * d.h
                && self.values.len() == n * w.len * d.e,
            "attention operand sizes"
        );
        assert!(
            !w.has_buckets() || (w.max_bucket() as usize) < self.table.len(),
            "a bucket past the bias table"
        );
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ab, bb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ab
        .remainder()
        .iter()
        .zip(bb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ab.zip(bb) {
        for ((s, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `y += a x`.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The context `[rows, e]` of every row and its attention weights (one per
/// window entry, for [`attention_backward`]). A row's scores are `dec_r ·
/// key_s + scale * table[bucket]` over its window, their softmax weighs the
/// values.
pub fn attention_forward(op: &Operands) -> (Vec<f32>, Vec<f32>) {
    dispatch_fn!(fn sentence(item: &mut ForwardItem, op: &Operands) => forward_sentence);
    forward_with(op, sentence)
}

/// One sentence's share of the forward: its index, context rows, weights.
type ForwardItem<'a> = (usize, &'a mut [f32], &'a mut [f32]);

/// [`attention_forward`] with `sentence` run on every sentence: the
/// dispatched one, or (in the tests) the portable body itself.
fn forward_with(
    op: &Operands,
    sentence: impl Fn(&mut ForwardItem, &Operands) + Sync + Send,
) -> (Vec<f32>, Vec<f32>) {
    op.check();
    let (w, d) = (op.windows, op.dims);
    let mut context = vec![0.0f32; w.rows() * d.e];
    let mut alpha = vec![0.0f32; w.entries()];
    let mut work = split_alpha(w, &mut alpha, context.chunks_mut(w.steps * d.e));
    parallel_for_each_mut(&mut work, |item| sentence(item, op));
    (context, alpha)
}

/// The forward of one sentence's rows.
#[inline(always)]
fn forward_sentence((b, context, alpha): &mut ForwardItem, op: &Operands) {
    let Operands {
        dec,
        keys,
        values,
        table,
        scale,
        windows: w,
        dims: d,
    } = *op;
    let (steps, len, h, e) = (w.steps, w.len, d.h, d.e);
    let first = w.entries_of(*b).start;
    for t in 0..steps {
        let r = *b * steps + t;
        let q = &dec[r * h..(r + 1) * h];
        let weights = &mut alpha[w.offset[r] - first..w.offset[r + 1] - first];
        let buckets = w.buckets(r);
        let mut max = f32::NEG_INFINITY;
        for (j, s) in w.window(r).enumerate() {
            let k = *b * len + s;
            let bias = buckets.get(j).map_or(0.0, |&c| scale * table[c as usize]);
            weights[j] = dot(q, &keys[k * h..(k + 1) * h]) + bias;
            max = max.max(weights[j]);
        }
        let mut sum = 0.0f32;
        for x in weights.iter_mut() {
            *x = exp(*x - max);
            sum += *x;
        }
        let out = &mut context[t * e..(t + 1) * e];
        for (j, s) in w.window(r).enumerate() {
            weights[j] /= sum;
            let k = *b * len + s;
            axpy(out, weights[j], &values[k * e..(k + 1) * e]);
        }
    }
}

/// Per sentence: its index, its share of `per_row` outputs and of `alpha`.
fn split_alpha<'a>(
    w: &Windows,
    alpha: &'a mut [f32],
    per_row: impl Iterator<Item = &'a mut [f32]>,
) -> Vec<ForwardItem<'a>> {
    let mut rest = alpha;
    let mut work = Vec::with_capacity(w.sentences());
    for (b, out) in per_row.enumerate() {
        let (mine, after) = rest.split_at_mut(w.entries_of(b).len());
        rest = after;
        work.push((b, out, mine));
    }
    work
}

/// Gradients of [`attention_forward`] for the context's gradient `dctx`
/// `[rows, e]`: `(ddec [rows, h], dkeys, dvalues, dtable)`, shaped as their
/// operands. `dtable` is summed sentence by sentence in order, the same
/// whatever the thread count.
pub fn attention_backward(
    op: &Operands,
    alpha: &[f32],
    dctx: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    dispatch_fn!(fn sentence(it: &mut BackwardItem, op: &Operands, alpha: &[f32], dctx: &[f32]) => backward_sentence);
    backward_with(op, alpha, dctx, sentence)
}

/// [`attention_backward`] with `sentence` run on every sentence (as [`forward_with`]).
fn backward_with(
    op: &Operands,
    alpha: &[f32],
    dctx: &[f32],
    sentence: impl Fn(&mut BackwardItem, &Operands, &[f32], &[f32]) + Sync + Send,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    op.check();
    let (w, d, table) = (op.windows, op.dims, op.table);
    let (steps, len, h, e) = (w.steps, w.len, d.h, d.e);
    assert_eq!(dctx.len(), w.rows() * e, "context gradient size");
    assert_eq!(alpha.len(), w.entries(), "weights");
    let n = w.sentences();
    let (rows_h, keys_h, values_e) = (w.rows() * h, n * len * h, n * len * e);
    let (mut ddec, mut dkeys, mut dvalues) = (
        Vec::with_capacity(rows_h),
        Vec::with_capacity(keys_h),
        Vec::with_capacity(values_e),
    );
    let mut shares: Vec<Share> = ddec.spare_capacity_mut()[..rows_h]
        .chunks_mut(steps * h)
        .zip(dkeys.spare_capacity_mut()[..keys_h].chunks_mut(len * h))
        .zip(dvalues.spare_capacity_mut()[..values_e].chunks_mut(len * e))
        .enumerate()
        .map(|(b, ((ddec, dkeys), dvalues))| Share {
            b,
            ddec,
            dkeys,
            dvalues,
            dtable: Vec::new(),
        })
        .collect();
    let table_len = if w.has_buckets() { table.len() } else { 0 };
    parallel_for_each_mut(&mut shares, |share| {
        // a sentence's rows zeroed by the thread that adds to them, just
        // before (a zeroed buffer of all was a memset on one thread, the
        // rows out of the cache again when added to)
        let mut item = BackwardItem {
            b: share.b,
            ddec: zeroed(share.ddec),
            dkeys: zeroed(share.dkeys),
            dvalues: zeroed(share.dvalues),
            dtable: vec![0.0; table_len],
        };
        sentence(&mut item, op, alpha, dctx);
        share.dtable = item.dtable;
    });
    let mut dtable = vec![0.0f32; table.len()];
    for share in &shares {
        for (t, x) in dtable.iter_mut().zip(&share.dtable) {
            *t += x;
        }
    }
    drop(shares);
    // SAFETY: the sentences' shares cover each buffer's first values
    // (`n` sentences of `steps` rows and `len` positions), and each share
    // was zeroed whole before it was added to
    unsafe {
        ddec.set_len(rows_h);
        dkeys.set_len(keys_h);
        dvalues.set_len(values_e);
    }
    (ddec, dkeys, dvalues, dtable)
}

/// A sentence's rows of the three gradients, not yet written, and its own
/// table gradient once computed.
struct Share<'a> {
    b: usize,
    ddec: &'a mut [MaybeUninit<f32>],
    dkeys: &'a mut [MaybeUninit<f32>],
    dvalues: &'a mut [MaybeUninit<f32>],
    dtable: Vec<f32>,
}

/// `x` filled with zeros.
fn zeroed(x: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    x.fill(MaybeUninit::new(0.0));
    // SAFETY: every value was written just above
    unsafe { x.assume_init_mut() }
}

/// One sentence's share of the backward: its index, its gradient rows
/// and its own table gradient (summed over sentences in order after).
struct BackwardItem<'a> {
    b: usize,
    ddec: &'a mut [f32],
    dkeys: &'a mut [f32],
    dvalues: &'a mut [f32],
    dtable: Vec<f32>,
}

/// The backward of one sentence's rows.
#[inline(always)]
fn backward_sentence(it: &mut BackwardItem, op: &Operands, alpha: &[f32], dctx: &[f32]) {
    let Operands {
        dec,
        keys,
        values,
        scale,
        windows: w,
        dims: d,
        ..
    } = *op;
    let (steps, len, h, e) = (w.steps, w.len, d.h, d.e);
    let mut dalpha = Vec::new();
    for t in 0..steps {
        let r = it.b * steps + t;
        let q = &dec[r * h..(r + 1) * h];
        let g = &dctx[r * e..(r + 1) * e];
        let weights = &alpha[w.offset[r]..w.offset[r + 1]];
        dalpha.clear();
        let mut mean = 0.0f32;
        for (j, s) in w.window(r).enumerate() {
            let k = it.b * len + s;
            let da = dot(g, &values[k * e..(k + 1) * e]);
            mean += weights[j] * da;
            dalpha.push(da);
        }
        let buckets = w.buckets(r);
        let ddec = &mut it.ddec[t * h..(t + 1) * h];
        for (j, s) in w.window(r).enumerate() {
            let k = it.b * len + s;
            let ds = weights[j] * (dalpha[j] - mean);
            axpy(ddec, ds, &keys[k * h..(k + 1) * h]);
            axpy(&mut it.dkeys[s * h..(s + 1) * h], ds, q);
            axpy(&mut it.dvalues[s * e..(s + 1) * e], weights[j], g);
            if let Some(&c) = buckets.get(j) {
                it.dtable[c as usize] += scale * ds;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::pool::{TestThreads, set_threads};
    use tokenizer::rng::Rng;

    /// Operands of a call: `n` sentences of `steps` rows over `len`
    /// positions, windows of 1 to 6 positions anywhere (or the whole
    /// sentence), buckets from a table of 5 when `relative`.
    pub(crate) struct Case {
        pub(crate) w: Windows,
        pub(crate) d: AttnDims,
        pub(crate) dec: Vec<f32>,
        pub(crate) keys: Vec<f32>,
        pub(crate) values: Vec<f32>,
        pub(crate) table: Vec<f32>,
        dctx: Vec<f32>,
    }

    impl Case {
        pub(crate) fn operands(&self, scale: f32) -> Operands<'_> {
            Operands {
                dec: &self.dec,
                keys: &self.keys,
                values: &self.values,
                table: &self.table,
                scale,
                windows: &self.w,
                dims: self.d,
            }
        }
    }

    pub(crate) fn case(
        n: usize,
        steps: usize,
        len: usize,
        d: AttnDims,
        relative: bool,
        seed: u64,
    ) -> Case {
        let mut rng = Rng::new(seed);
        let mut w = Windows::new(steps, len);
        for r in 0..n * steps {
            let (lo, hi) = if r % 7 == 3 {
                (0, len)
            } else {
                let lo = rng.below(len as u64) as usize;
                (lo, (lo + 1 + rng.below(6) as usize).min(len))
            };
            let buckets: Vec<u32> = if relative {
                (lo..hi).map(|_| rng.below(5) as u32).collect()
            } else {
                vec![]
            };
            w.push(lo, hi, buckets);
        }
        let mut fill = |k: usize| (0..k).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        Case {
            dec: fill(n * steps * d.h),
            keys: fill(n * len * d.h),
            values: fill(n * len * d.e),
            table: fill(5),
            dctx: fill(n * steps * d.e),
            w,
            d,
        }
    }

    /// The definition, dense and in f64: every position scored, those
    /// outside the row's window at -1e9, softmax, weighted values.
    pub(crate) fn reference(
        c: &Case,
        dec: &[f32],
        keys: &[f32],
        values: &[f32],
        table: &[f32],
        scale: f32,
    ) -> Vec<f64> {
        let (w, h, e) = (&c.w, c.d.h, c.d.e);
        let mut out = vec![0.0f64; w.rows() * e];
        for r in 0..w.rows() {
            let b = r / w.steps;
            let scores: Vec<f64> = (0..w.len)
                .map(|s| {
                    let k = b * w.len + s;
                    let dot: f64 = (0..h)
                        .map(|i| dec[r * h + i] as f64 * keys[k * h + i] as f64)
                        .sum();
                    let win = w.window(r);
                    if !win.contains(&s) {
                        return dot - 1e9;
                    }
                    let bias = w
                        .buckets(r)
                        .get(s - win.start)
                        .map_or(0.0, |&q| (scale * table[q as usize]) as f64);
                    dot + bias
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
            for (s, x) in scores.iter().enumerate() {
                let a = (x - max).exp() / z;
                for i in 0..e {
                    out[r * e + i] += a * values[(b * w.len + s) * e + i] as f64;
                }
            }
        }
        out
    }

    fn loss(c: &Case, dec: &[f32], keys: &[f32], values: &[f32], table: &[f32], scale: f32) -> f64 {
        let out = reference(c, dec, keys, values, table, scale);
        out.iter().zip(&c.dctx).map(|(o, g)| o * *g as f64).sum()
    }

    /// Widths with a 16-lane body and a remainder, windows at the edges and
    /// whole sentences, with and without buckets.
    const DIMS: AttnDims = AttnDims { h: 40, e: 24 };

    #[test]
    fn forward_equals_masked_dense_attention() {
        for relative in [false, true] {
            let c = case(3, 5, 11, DIMS, relative, 1);
            let (ctx, alpha) = attention_forward(&c.operands(2.5));
            let want = reference(&c, &c.dec, &c.keys, &c.values, &c.table, 2.5);
            for (i, (x, y)) in ctx.iter().zip(&want).enumerate() {
                assert!((*x as f64 - y).abs() < 1e-5, "context {i}: {x} vs {y}");
            }
            for r in 0..c.w.rows() {
                let s: f32 = alpha[c.w.offset[r]..c.w.offset[r + 1]].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "row {r}'s weights sum to {s}");
            }
        }
    }

    /// Every gradient against central differences of the f64 definition, on
    /// every operand (the table's entries included).
    #[test]
    fn backward_matches_finite_differences() {
        let scale = 2.5;
        for relative in [false, true] {
            let c = case(2, 4, 9, DIMS, relative, 2);
            let (_, alpha) = attention_forward(&c.operands(scale));
            let (ddec, dkeys, dvalues, dtable) =
                attention_backward(&c.operands(scale), &alpha, &c.dctx);
            let ops = [&c.dec, &c.keys, &c.values, &c.table];
            let grads = [&ddec, &dkeys, &dvalues, &dtable];
            for (which, (op, grad)) in ops.iter().zip(grads).enumerate() {
                assert_eq!(op.len(), grad.len(), "operand {which}");
                for i in (0..op.len()).step_by(3) {
                    let eps = 1e-3f32;
                    let mut nudged: Vec<Vec<f32>> = ops.iter().map(|v| v.to_vec()).collect();
                    nudged[which][i] = op[i] + eps;
                    let up = loss(&c, &nudged[0], &nudged[1], &nudged[2], &nudged[3], scale);
                    nudged[which][i] = op[i] - eps;
                    let down = loss(&c, &nudged[0], &nudged[1], &nudged[2], &nudged[3], scale);
                    let fd = (up - down) / (2.0 * eps as f64);
                    let g = grad[i] as f64;
                    assert!(
                        (g - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                        "operand {which} value {i}: {g} vs {fd} (relative {relative})"
                    );
                }
            }
            if !relative {
                assert!(
                    dtable.iter().all(|&x| x == 0.0),
                    "no buckets, no table gradient"
                );
            }
        }
    }

    /// One thread and two give the same values, to the last bit (sentences
    /// go whole to a thread and the table's gradient is summed in order).
    #[test]
    fn threads_do_not_change_the_result() {
        let _threads = TestThreads::lock();
        let c = case(8, 6, 13, AttnDims { h: 64, e: 32 }, true, 3);
        let run = || {
            let (ctx, alpha) = attention_forward(&c.operands(1.5));
            let g = attention_backward(&c.operands(1.5), &alpha, &c.dctx);
            (ctx, alpha, g)
        };
        set_threads(1);
        let one = run();
        set_threads(2);
        assert_eq!(one, run());
    }

    /// The dispatched kernels (compiled for the widest instruction set this
    /// CPU has: the output says which) give the portable bodies' results to
    /// the last bit, at widths that fill whole 16-lane vectors and leave a
    /// rest.
    #[test]
    #[allow(clippy::print_stderr)] // says which instruction set was compared
    fn dispatched_kernels_equal_the_portable_bodies() {
        eprintln!(
            "attention kernels: {} against portable",
            crate::kernel::isa().name()
        );
        for d in [AttnDims { h: 128, e: 256 }, DIMS] {
            let c = case(6, 9, 17, d, true, 4);
            let op = c.operands(1.5);
            let (ctx, alpha) = attention_forward(&op);
            assert_eq!((ctx, alpha.clone()), forward_with(&op, forward_sentence));
            assert_eq!(
                attention_backward(&op, &alpha, &c.dctx),
                backward_with(&op, &alpha, &c.dctx, backward_sentence)
            );
        }
    }

    #[test]
    #[should_panic(expected = "one bucket per position")]
    fn a_row_without_buckets_among_rows_with_them_panics() {
        let mut w = Windows::new(2, 4);
        w.push(0, 2, [1, 2]);
        w.push(1, 3, []);
    }

    #[test]
    #[should_panic(expected = "window 2..2 of 4")]
    fn an_empty_window_panics() {
        Windows::new(1, 4).push(2, 2, []);
    }
}
