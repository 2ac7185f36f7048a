//! The unrolled sequence on one thread: forward over all time steps with
//! the recurrent product and the cell step, and backward through time.

use super::cell::{CellOut, cell_backward_rows, cell_step};
use super::gemm::{PackedB, blocked_rows, matmul, matmul_maybe_packed};
use super::half::{self, PackedHalf, Precision};
use std::mem::MaybeUninit;
use std::ops::Range;

/// The recurrent weights packed once for all steps, in the precision asked
/// for where it applies: `Wh` `[H, 4H]` for the forward product, `Wh^T`
/// `[4H, H]` for the backward one.
#[derive(Debug, Clone)]
pub enum PackedRecurrent {
    /// f32, packed for the blocked kernel where it applies (batches in
    /// fours, a CPU with a blocked kernel), else `None`: read in place.
    F32(Option<PackedB>),
    /// 16-bit pairs ([`Precision::Bf16`] or [`Precision::F16`] where the
    /// CPU has the instructions).
    Half(PackedHalf),
}

impl PackedRecurrent {
    /// Packs `wh` of `hidden` units for the forward product (`transposed` =
    /// false: `[H, 4H]`) or for the backward one (`Wh^T`, `[4H, H]`), for
    /// products of `rows` rows each (one count per thread's part of the
    /// batch): in a 16-bit format when asked and every part can run it
    /// ([`Half::applies`](half::Half::applies): parts under four rows, such as validation
    /// character by character, stay f32); in f32 packed when some part's
    /// rows come in fours (the packed kernel's row blocks; the others read
    /// `wh` in place). Forward and backward of one split get the same.
    pub fn new(
        wh: &[f32],
        hidden: usize,
        transposed: bool,
        precision: Precision,
        rows: &[usize],
    ) -> Self {
        let (k, n) = if transposed {
            (4 * hidden, hidden)
        } else {
            (hidden, 4 * hidden)
        };
        if let Some(half) = precision.for_parts(rows, hidden).half()
            && let Some(p) = PackedHalf::new(half, wh, k, n, transposed)
        {
            return PackedRecurrent::Half(p);
        }
        PackedRecurrent::F32(
            rows.iter()
                .any(|&r| blocked_rows(r))
                .then(|| PackedB::new(wh, k, n, transposed))
                .flatten(),
        )
    }

    /// The f32 packed weights, where their kernel takes products of `rows`
    /// rows whole (and so writes every value of its output); `None` where
    /// the product reads the unpacked weights or runs in bf16.
    fn packed_f32_for(&self, rows: usize) -> Option<&PackedB> {
        match self {
            PackedRecurrent::F32(Some(pb)) if blocked_rows(rows) => Some(pb),
            _ => None,
        }
    }

    /// Whether f32 products of `rows` rows read the unpacked weights (none
    /// packed, or rows the packed kernel does not take whole).
    fn reads_unpacked_f32(&self, rows: usize) -> bool {
        matches!(self, PackedRecurrent::F32(_)) && self.packed_f32_for(rows).is_none()
    }

    /// The precision the products run in.
    pub fn precision(&self) -> Precision {
        match self {
            PackedRecurrent::F32(_) => Precision::F32,
            PackedRecurrent::Half(p) => p.half().precision(),
        }
    }
}

/// `c (+)= a · B` for `a` `[m, k]` with the packed recurrent weights, `b`
/// being the same operand unpacked (`[k, n]` row-major) for the f32 path
/// when the weights could not be packed.
fn recurrent_product(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    packed: &PackedRecurrent,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    match packed {
        PackedRecurrent::Half(p) => p.matmul(c, a, m, accumulate),
        PackedRecurrent::F32(p) => {
            matmul_maybe_packed(c, a, (b, false), p.as_ref(), m, n, k, accumulate)
        }
    }
}

/// Sizes of one sequence call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqDims {
    /// Time steps.
    pub steps: usize,
    /// Sequences.
    pub batch: usize,
    /// Units.
    pub hidden: usize,
}

impl SeqDims {
    pub(super) fn rows(&self) -> usize {
        self.steps
            .checked_mul(self.batch)
            .expect("steps x batch overflows usize")
    }
    pub(super) fn gates(&self) -> usize {
        4 * self.hidden
    }
}

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Clone, Default)]
pub struct SeqCache {
    /// Gate activations `[rows, 4H]`: `sigmoid(i), sigmoid(f), tanh(u), sigmoid(o)`.
    pub acts: Vec<f32>,
    /// Cell states `c_t`, `[rows, H]`.
    pub cells: Vec<f32>,
    /// `tanh(c_t)`, `[rows, H]`.
    pub tanh_c: Vec<f32>,
    /// Outputs `h_t`, `[rows, H]`.
    pub hs: Vec<f32>,
}

/// Where a sequence's input projections come from.
#[derive(Debug, Clone, Copy)]
pub enum Projections<'a> {
    /// Every row's, time-major `[steps * batch, 4H]`.
    Rows(&'a [f32]),
    /// Row `ids[r]` of `table` `[vocab, 4H]` for row `r`: a one-hot or
    /// embedded input, projected once per vocabulary entry and looked up
    /// here, step by step, instead of copied out row by row first.
    Lookup {
        /// `[vocab, 4H]`.
        table: &'a [f32],
        /// One per row, time-major.
        ids: &'a [u32],
    },
}

/// # Panics
/// On an id past `vocab`, naming it (the one check of lookups' ids).
pub(super) fn check_ids(ids: &[u32], vocab: usize) {
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        panic!("input id {id} past the projected table's {vocab} rows");
    }
}

impl Projections<'_> {
    /// The rows it gives for `width` (= 4H) values a row (a lookup's ids
    /// are checked by [`check`](Self::check)).
    ///
    /// # Panics
    /// On a buffer not of whole rows.
    pub fn rows(&self, width: usize) -> usize {
        assert!(width > 0, "projection width");
        match *self {
            Projections::Rows(p) => {
                assert!(
                    p.len().is_multiple_of(width),
                    "input projections of whole rows"
                );
                p.len() / width
            }
            Projections::Lookup { table, ids } => {
                assert!(
                    table.len().is_multiple_of(width),
                    "projected table of whole rows"
                );
                ids.len()
            }
        }
    }

    /// # Panics
    /// On a lookup's id past its table (of `width` values a row).
    pub fn check(&self, width: usize) {
        if let Projections::Lookup { table, ids } = *self {
            check_ids(ids, table.len() / width);
        }
    }
}

/// Where a part of a batch lies in the batch's time-major rows: its
/// sequences are `lo..lo + n` of the `stride` sequences of every step.
#[derive(Debug, Clone, Copy)]
pub struct PartRows {
    /// Sequences a step in the whole batch.
    pub stride: usize,
    /// The part's first sequence.
    pub lo: usize,
}

impl PartRows {
    /// All the sequences of a batch of `batch`.
    pub fn whole(batch: usize) -> Self {
        PartRows {
            stride: batch,
            lo: 0,
        }
    }

    /// The batch's rows of step `s` that a part of `n` sequences holds.
    pub fn step(&self, s: usize, n: usize) -> Range<usize> {
        let first = s * self.stride + self.lo;
        first..first + n
    }

    /// # Panics
    /// Naming `what`, on a part of `n` sequences past a step's, or `rows`
    /// other than `steps` steps of the whole batch.
    fn check(&self, n: usize, steps: usize, rows: usize, what: &str) {
        assert!(
            self.lo + n <= self.stride && rows == steps * self.stride,
            "{what} of a part: sequences {}..{} of {} a step, {rows} rows for {steps} steps",
            self.lo,
            self.lo + n,
            self.stride
        );
    }
}

/// A lookup input's ids as a part of the batch reads them, and its table's
/// rows (for the table's gradient).
#[derive(Debug, Clone, Copy)]
pub struct PartLookup<'a> {
    /// One per row of the whole batch, time-major.
    pub ids: &'a [u32],
    /// Table rows.
    pub vocab: usize,
    /// The part's rows among the ids'.
    pub rows: PartRows,
}

/// Adds row `r` of `rows` (`width` values each) to row `ids[r]` of `sums`:
/// the body of [`add_rows_by_id`].
#[inline(always)]
fn add_rows_by_id_body(ids: &[u32], rows: &[f32], width: usize, sums: &mut [f32]) {
    for (&id, row) in ids.iter().zip(rows.chunks_exact(width)) {
        let id = id as usize;
        for (t, x) in sums[id * width..(id + 1) * width].iter_mut().zip(row) {
            *t += x;
        }
    }
}

// the adds compiled for the CPU's widest vectors
dispatch_fn!(fn add_rows_by_id(ids: &[u32], rows: &[f32], width: usize, sums: &mut [f32]) => add_rows_by_id_body);

/// A part's input projections, read where they lie.
#[derive(Debug, Clone, Copy)]
pub struct PartInput<'a> {
    /// All the sequences' projections.
    pub input: Projections<'a>,
    /// The part's rows among them.
    pub rows: PartRows,
}

impl<'a> PartInput<'a> {
    /// All of `input`'s sequences, `batch` a step.
    pub fn whole(input: Projections<'a>, batch: usize) -> Self {
        PartInput {
            input,
            rows: PartRows::whole(batch),
        }
    }

    /// Step `s`'s rows of a part of `n` sequences, `g4` values each, where
    /// they lie, into `rows` (emptied first: one buffer for all steps).
    fn step_rows(&self, s: usize, n: usize, g4: usize, rows: &mut Vec<&'a [f32]>) {
        let step = self.rows.step(s, n);
        rows.clear();
        match self.input {
            Projections::Rows(p) => {
                rows.extend(p[step.start * g4..step.end * g4].chunks_exact(g4));
            }
            Projections::Lookup { table, ids } => rows.extend(
                ids[step]
                    .iter()
                    .map(|&id| &table[id as usize * g4..(id as usize + 1) * g4]),
            ),
        }
    }
}

/// Forward pass over all steps. Returns the outputs `[rows, H]` and the final
/// cell state `[batch, H]`; `cache` keeps what the backward pass needs (its
/// `hs` holds the outputs; its buffers are reused by a later forward pass,
/// unless a backward pass consumed it).
pub fn forward(
    dims: SeqDims,
    p: &[f32],
    wh: &[f32],
    h0: &[f32],
    c0: &[f32],
    cache: &mut SeqCache,
) -> Vec<f32> {
    // packed once for all steps: faster than reading `wh` in place (small
    // models) and than the `gemm` crate, which packs it at every call (large ones)
    // (batches in fours: the packed kernel's row blocks; others read `wh` in place)
    let packed = PackedRecurrent::new(wh, dims.hidden, false, Precision::F32, &[dims.batch]);
    forward_packed(
        dims,
        PartInput::whole(Projections::Rows(p), dims.batch),
        wh,
        &packed,
        h0,
        c0,
        cache,
    )
}

/// [`forward`] with `wh` already packed (`PackedRecurrent::new(wh, H,
/// false, precision, rows)`), shared by the threads of
/// [`forward_split`](super::split::forward_split), on a part of the input
/// projections. Where the packed f32 kernel takes the whole batch (rows in
/// fours), each step's recurrent product is written straight into the
/// cache's activation buffer and the cell step adds the input rows where
/// they lie; elsewhere each step's rows are copied into that buffer just
/// before its product adds to them (in cache, where one copy of all of `p`
/// up front streamed it through memory twice).
///
/// # Panics
/// On operands not of `dims`, or weights packed for other sizes.
pub fn forward_packed(
    dims: SeqDims,
    p: PartInput,
    wh: &[f32],
    packed: &PackedRecurrent,
    h0: &[f32],
    c0: &[f32],
    cache: &mut SeqCache,
) -> Vec<f32> {
    let (rows, g4, hd, b) = (dims.rows(), dims.gates(), dims.hidden, dims.batch);
    p.rows
        .check(b, dims.steps, p.input.rows(g4), "input projections");
    assert_eq!(wh.len(), hd * g4, "recurrent weights");
    assert_eq!(h0.len(), b * hd, "initial output");
    assert_eq!(c0.len(), b * hd, "initial cell");
    // the packed kernel that writes each step's product into the gates, if any
    let fused = packed.packed_f32_for(b);
    if let Some(pb) = fused {
        // the product written into the gates must write all of them
        assert_eq!(
            pb.dims(),
            (hd, g4),
            "recurrent weights packed for other sizes"
        );
    }
    // the buffers grow step by step, written into their spare capacity
    // (nothing zeroed first): the gates' recurrent product, then the cell's
    // outputs; the cell adds the input rows, read where they lie (a lookup's
    // from its table), not copied into the gates first
    for buffer in [
        &mut cache.acts,
        &mut cache.cells,
        &mut cache.tanh_c,
        &mut cache.hs,
    ] {
        buffer.clear();
    }
    cache.acts.reserve(rows * g4);
    for buffer in [&mut cache.cells, &mut cache.tanh_c, &mut cache.hs] {
        buffer.reserve(rows * hd);
    }
    let n = b * hd;
    let mut step_rows = Vec::with_capacity(b);
    for s in 0..dims.steps {
        let g_span = s * b * g4..(s + 1) * b * g4;
        let h_prev = if s == 0 { h0 } else { &cache.hs[(s - 1) * n..] };
        p.step_rows(s, b, g4, &mut step_rows);
        let inputs: &[&[f32]] = match fused {
            // the packed kernel's whole row blocks write every value
            Some(pb) => {
                pb.matmul_uninit(&mut cache.acts.spare_capacity_mut()[..b * g4], h_prev, b);
                // SAFETY: the product wrote the b x 4H values past the length
                unsafe { cache.acts.set_len(g_span.end) };
                &step_rows
            }
            // other products add to the input rows, copied in first
            None => {
                for row in &step_rows {
                    cache.acts.extend_from_slice(row);
                }
                recurrent_product(
                    &mut cache.acts[g_span.clone()],
                    h_prev,
                    wh,
                    packed,
                    (b, g4, hd),
                    true,
                );
                &[]
            }
        };
        let (cells_done, c) = split_at_spare(&mut cache.cells);
        let c_prev = if s == 0 {
            c0
        } else {
            &cells_done[(s - 1) * n..]
        };
        let out = CellOut::uninit(
            &mut c[..n],
            &mut cache.tanh_c.spare_capacity_mut()[..n],
            &mut cache.hs.spare_capacity_mut()[..n],
        );
        cell_step(&mut cache.acts[g_span], inputs, c_prev, out, hd);
        for buffer in [&mut cache.cells, &mut cache.tanh_c, &mut cache.hs] {
            // SAFETY: the cell step wrote the n values past the length
            // (capacity for all steps was reserved above)
            unsafe { buffer.set_len((s + 1) * n) };
        }
    }
    if dims.steps == 0 {
        // no step: the final cell state is the initial one
        return c0.to_vec();
    }
    cache.cells[(rows - b) * hd..].to_vec()
}

/// A vector's values and its spare capacity, apart (as the unstable
/// `Vec::split_at_spare_mut`).
fn split_at_spare(v: &mut Vec<f32>) -> (&[f32], &mut [MaybeUninit<f32>]) {
    let (len, spare) = (v.len(), v.capacity() - v.len());
    let base = v.as_mut_ptr();
    // SAFETY: values 0..len are initialized and len..capacity are the rest
    // of the allocation; the two ranges do not overlap, and both borrow `v`.
    unsafe {
        (
            std::slice::from_raw_parts(base, len),
            std::slice::from_raw_parts_mut(base.add(len).cast(), spare),
        )
    }
}

/// Gradients of the sequence.
#[derive(Debug, Clone)]
pub struct SeqGrads {
    /// Of the input projections `[rows, 4H]`.
    pub dp: Vec<f32>,
    /// Of the recurrent weights `[H, 4H]`.
    pub dwh: Vec<f32>,
    /// Of the initial output `[batch, H]` (empty where it was not wanted).
    pub dh0: Vec<f32>,
    /// Of the initial cell state `[batch, H]`.
    pub dc0: Vec<f32>,
    /// Of a lookup's table `[vocab, 4H]` (empty without one).
    pub dtable: Vec<f32>,
}

/// Backward pass from the gradients of the outputs `dhs` `[rows, H]` and of the
/// final cell state `dc_last` `[batch, H]`. It consumes the forward pass's
/// `cache`: the activations' buffer becomes the gradient `dp`.
pub fn backward(
    dims: SeqDims,
    cache: SeqCache,
    wh: &[f32],
    h0: &[f32],
    c0: &[f32],
    dhs: &[f32],
    dc_last: &[f32],
) -> SeqGrads {
    // Wh^T [4H, H], once: packed straight from `wh` where the packed kernel
    // applies (batches in fours)
    let packed = PackedRecurrent::new(wh, dims.hidden, true, Precision::F32, &[dims.batch]);
    backward_packed(
        dims,
        cache,
        wh,
        &packed,
        (h0, c0),
        (dhs, dc_last),
        None,
        true,
    )
}

/// [`backward`] with `Wh^T` already packed (`PackedRecurrent::new(wh, H,
/// true, precision, rows)`), shared by the threads of
/// [`backward_split`](super::split::backward_split). In bf16 the weight
/// gradient is a bf16 product too. Each step's gate gradients are written
/// over its activations in the cache, which then is `dp`: no zeroed buffer
/// of `[rows, 4H]` streamed through memory a second time. With a
/// `lookup`, each step's gate gradients are also added to their ids' rows
/// of the table's gradient (`dtable`) while they are in cache, instead of
/// in a pass over all of `dp` afterwards. Without `dh0_wanted` (an
/// initial state that takes no gradient, such as one carried over from the
/// previous batch and detached) the first step's `dG · Wh^T` is not
/// computed, and `dh0` comes back empty: that product is a tenth of the
/// recurrent backward products of a 10-step sequence.
#[allow(clippy::too_many_arguments)]
pub fn backward_packed(
    dims: SeqDims,
    cache: SeqCache,
    wh: &[f32],
    packed_t: &PackedRecurrent,
    (h0, c0): (&[f32], &[f32]),
    (dhs, dc_last): (&[f32], &[f32]),
    lookup: Option<PartLookup>,
    dh0_wanted: bool,
) -> SeqGrads {
    let (rows, g4, hd, b) = (dims.rows(), dims.gates(), dims.hidden, dims.batch);
    assert_eq!(dhs.len(), rows * hd, "output gradients");
    assert_eq!(dc_last.len(), b * hd, "final cell gradient");
    let SeqCache {
        acts: mut dp,
        cells,
        tanh_c,
        hs,
    } = cache;
    assert!(
        dp.len() == rows * g4 && cells.len() == rows * hd && tanh_c.len() == rows * hd,
        "the forward pass's cache of these sizes"
    );
    let mut dc = dc_last.to_vec();
    let mut dh_next = vec![0.0f32; b * hd];
    let mut dh = vec![0.0f32; b * hd];
    let mut dwh = vec![0.0f32; hd * g4];
    if let Some(l) = lookup {
        l.rows.check(b, dims.steps, l.ids.len(), "lookup ids");
    }
    let mut dtable = vec![0.0f32; lookup.map_or(0, |l| l.vocab * g4)];
    if dims.steps == 0 {
        // no step: the final cell is the initial one, and no weight was used
        return SeqGrads {
            dp,
            dwh,
            dh0: if dh0_wanted { dh_next } else { Vec::new() },
            dc0: dc,
            dtable,
        };
    }
    // where the packed f32 kernel does not apply, Wh^T transposed so that dG Wh^T reads it row by row
    let mut wh_t = Vec::new();
    if packed_t.reads_unpacked_f32(b) {
        wh_t = vec![0.0f32; g4 * hd];
        for r in 0..hd {
            for c in 0..g4 {
                wh_t[c * hd + r] = wh[r * g4 + c];
            }
        }
    }
    for s in (0..dims.steps).rev() {
        let h_span = s * b * hd..(s + 1) * b * hd;
        for (d, (x, y)) in dh.iter_mut().zip(dhs[h_span.clone()].iter().zip(&dh_next)) {
            *d = x + y;
        }
        let c_prev = if s == 0 {
            c0
        } else {
            &cells[(s - 1) * b * hd..s * b * hd]
        };
        let tc = &tanh_c[h_span];
        // the step's activations in, their gradients out
        let dg = &mut dp[s * b * g4..(s + 1) * b * g4];
        dispatch!(cell_backward_rows(dg, c_prev, tc, &dh, &mut dc, hd));
        if let Some(l) = lookup {
            add_rows_by_id(&l.ids[l.rows.step(s, b)], dg, g4, &mut dtable);
        }
        // dh_prev = dG · Wh^T
        if s > 0 || dh0_wanted {
            recurrent_product(&mut dh_next, dg, &wh_t, packed_t, (b, hd, g4), false);
        }
    }
    // dWh = h0^T dG_0 + H_{0..T-1}^T dG_{1..T}
    let in_half = match packed_t {
        PackedRecurrent::Half(p) => half::matmul_at(
            p.half(),
            &mut dwh,
            (h0, &hs[..(rows - b) * hd]),
            (&dp[..b * g4], &dp[b * g4..]),
            (hd, g4, rows),
        ),
        PackedRecurrent::F32(_) => false,
    };
    if !in_half {
        matmul(&mut dwh, h0, &dp[..b * g4], hd, g4, b, true, false, false);
        if dims.steps > 1 {
            matmul(
                &mut dwh,
                &hs[..(rows - b) * hd],
                &dp[b * g4..],
                hd,
                g4,
                rows - b,
                true,
                false,
                true,
            );
        }
    }
    if !dh0_wanted {
        // not dh0: the gradient of the second step's input state
        dh_next = Vec::new();
    }
    SeqGrads {
        dp,
        dwh,
        dh0: dh_next,
        dc0: dc,
        dtable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite differences of a scalar function of every input: at a size
    /// only the portable loops take (3 units, 2 sequences) and at one that
    /// takes this CPU's fast paths (12 sequences: two of the blocked
    /// kernels' 6-row blocks, the product written into the gates and the
    /// inputs added by the cell step; 16 units: the packed recurrent
    /// weights of 64 and 16 columns and the 16-lane cell step).
    #[test]
    #[allow(clippy::print_stderr)] // says which paths the fast size took here
    fn backward_matches_finite_differences() {
        for (batch, hidden) in [(2, 3), (12, 16)] {
            finite_differences(SeqDims {
                steps: 3,
                batch,
                hidden,
            });
        }
        eprintln!(
            "backward_matches_finite_differences: fast size on {} kernels",
            crate::kernel::isa().name()
        );
    }

    /// A sequence of no steps hands the initial state through: the final
    /// cell is the initial one, its gradient the final cell's, and no weight
    /// or initial output gets any (at a batch the packed kernels take and
    /// at one they do not).
    #[test]
    fn no_steps_pass_the_state_through() {
        for batch in [4, 3] {
            let (hidden, g4) = (16, 64);
            let dims = SeqDims {
                steps: 0,
                batch,
                hidden,
            };
            let wh: Vec<f32> = (0..hidden * g4).map(|i| i as f32 * 1e-3).collect();
            let h0 = vec![0.5f32; batch * hidden];
            let c0: Vec<f32> = (0..batch * hidden).map(|i| i as f32).collect();
            let mut cache = SeqCache::default();
            let c_last = forward(dims, &[], &wh, &h0, &c0, &mut cache);
            assert_eq!(c_last, c0);
            assert!(cache.hs.is_empty());
            let dc_last: Vec<f32> = (0..batch * hidden).map(|i| -(i as f32)).collect();
            let g = backward(dims, cache, &wh, &h0, &c0, &[], &dc_last);
            assert!(g.dp.is_empty() && g.dtable.is_empty());
            assert_eq!(g.dc0, dc_last);
            assert!(g.dwh.len() == wh.len() && g.dwh.iter().all(|&x| x == 0.0));
            assert!(g.dh0.len() == h0.len() && g.dh0.iter().all(|&x| x == 0.0));
            // a lookup's table of 3 rows was not read either
            let mut cache = SeqCache::default();
            forward(dims, &[], &wh, &h0, &c0, &mut cache);
            let packed = PackedRecurrent::new(&wh, hidden, true, Precision::F32, &[batch]);
            let lookup = PartLookup {
                ids: &[],
                vocab: 3,
                rows: PartRows::whole(batch),
            };
            let g = backward_packed(
                dims,
                cache,
                &wh,
                &packed,
                (&h0, &c0),
                (&[], &dc_last),
                Some(lookup),
                false,
            );
            assert!(g.dtable.len() == 3 * g4 && g.dtable.iter().all(|&x| x == 0.0));
            assert!(g.dh0.is_empty(), "dh0 not wanted");
        }
    }

    fn finite_differences(dims: SeqDims) {
        let (rows, b, hd, g4) = (dims.rows(), dims.batch, dims.hidden, dims.gates());
        let mut seed = 1u32;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let p = rnd(rows * g4);
        let wh = rnd(hd * g4);
        let h0 = rnd(b * hd);
        let c0 = rnd(b * hd);
        let wy = rnd(rows * hd);
        let wc = rnd(b * hd);
        // loss = sum(wy * hs) + sum(wc * c_last), in f64 for the differences
        let loss = |p: &[f32], wh: &[f32], h0: &[f32], c0: &[f32]| -> f64 {
            let mut cache = SeqCache::default();
            let c_last = forward(dims, p, wh, h0, c0, &mut cache);
            cache
                .hs
                .iter()
                .zip(&wy)
                .map(|(a, b)| (a * b) as f64)
                .sum::<f64>()
                + c_last
                    .iter()
                    .zip(&wc)
                    .map(|(a, b)| (a * b) as f64)
                    .sum::<f64>()
        };
        let mut cache = SeqCache::default();
        forward(dims, &p, &wh, &h0, &c0, &mut cache);
        let g = backward(dims, cache, &wh, &h0, &c0, &wy, &wc);
        let eps = 1e-2f32;
        let check = |name: &str, x: &[f32], grad: &[f32], f: &dyn Fn(&[f32]) -> f64| {
            for k in 0..x.len() {
                let mut plus = x.to_vec();
                plus[k] += eps;
                let mut minus = x.to_vec();
                minus[k] -= eps;
                let num = (f(&plus) - f(&minus)) / (2.0 * eps as f64);
                assert!(
                    (num - grad[k] as f64).abs() < 2e-3,
                    "{dims:?} {name}[{k}]: numeric {num} vs {}",
                    grad[k]
                );
            }
        };
        check("p", &p, &g.dp, &|x| loss(x, &wh, &h0, &c0));
        check("wh", &wh, &g.dwh, &|x| loss(&p, x, &h0, &c0));
        check("h0", &h0, &g.dh0, &|x| loss(&p, &wh, x, &c0));
        check("c0", &c0, &g.dc0, &|x| loss(&p, &wh, &h0, x));
    }
}
