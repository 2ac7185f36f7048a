//! The block of a packed operand that a product's next pass will read,
//! fetched into L2 while the current pass computes ([`Prefetch`]).
//!
//! A packed `B` past L2 (`large`'s recurrent weights, 4 MiB) otherwise
//! makes every pass start by waiting on L3. On the Xeon with AMX
//! (docs/PERFORMANCE-LOG.md), `cargo bench -p model --bench kernel`'s 32-row
//! products at `large`'s shapes ran 10-19% faster with it, a whole
//! one-thread `large` step 2-4% (`xtask/bench/side_by_side.sh`).

use std::ops::Range;

/// Values in a line of a packed strip: a row of 16 values of 4 bytes.
pub(super) const LINE: usize = 16;

/// The block a product's next pass reads ([`PackedB::passes`](super::gemm::PackedB)):
/// `strips` strips of `rows` rows, `b_strip` values apart, one cache line a
/// row. The kernels deal its strips out over the row blocks of their
/// current pass ([`Prefetch::for_block`]); each row block fetches a line
/// per step of its depth (`_mm_prefetch`, `_MM_HINT_T1`: into L2), and
/// what its depth leaves when it ends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prefetch<T> {
    pub(super) b: *const T,
    pub(super) rows: usize,
    pub(super) strips: usize,
    pub(super) b_strip: usize,
}

impl<T> Prefetch<T> {
    /// Nothing to fetch.
    pub(super) const NONE: Self = Prefetch {
        b: std::ptr::null(),
        rows: 0,
        strips: 0,
        b_strip: 0,
    };

    /// What row block `block` of `blocks` fetches while the kernel computes
    /// the strips `group` of its pass: the next block's strips of the same
    /// indices, dealt out over the row blocks (`group.start + block`, then
    /// every `blocks`-th after it), so that every strip is fetched however
    /// few the row blocks.
    pub(super) fn for_block(&self, group: Range<usize>, block: usize, blocks: usize) -> Fetch<T> {
        let first = group.start + block;
        let end = group.end.min(self.strips);
        if first >= end || self.rows == 0 || blocks == 0 {
            return Fetch::NONE;
        }
        let at = self.b.wrapping_add(first * self.b_strip);
        Fetch {
            at,
            strip: at,
            left: self.rows,
            more: (end - first - 1) / blocks,
            rows: self.rows,
            apart: blocks * self.b_strip,
        }
    }
}

/// The lines one row block fetches: its first strip's, a line a step of
/// its depth ([`Fetch::head`]), then what is left ([`Fetch::after`]: the
/// rest of the first strip, then its other strips, `apart` values after
/// each other). The depth's steps fetch the head by their count alone
/// ([`steps`]), so that the kernels' registers stay with the product.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fetch<T> {
    at: *const T,
    strip: *const T,
    left: usize,
    more: usize,
    rows: usize,
    apart: usize,
}

impl<T> Fetch<T> {
    /// The first strip and its rows, one line each: line `p` at `head + p * 16`.
    #[inline]
    pub(super) fn head(&self) -> (*const T, usize) {
        (self.at, self.left)
    }

    /// The lines the steps of a depth `k` leave, in order.
    fn after(mut self, k: usize) -> Self {
        let done = k.min(self.left);
        self.at = self.at.wrapping_add(done * LINE);
        self.left -= done;
        self
    }

    /// Fetches the lines the steps of a depth `k` left ([`Fetch::after`]),
    /// if any: the test inline, the loop out of line (most row blocks
    /// leave none, and the check is all they pay).
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub(super) fn finish(self, k: usize) {
        #[cold]
        #[inline(never)]
        fn rest<T>(fetch: Fetch<T>, k: usize) {
            fetch.after(k).for_each(line);
        }
        if self.left > k || self.more > 0 {
            rest(self, k);
        }
    }

    /// Every line a row block of depth `k` fetches, in the kernels' order:
    /// [`Fetch::head`]'s first `k`, then [`Fetch::after`]. (The kernels
    /// interleave the first part with their steps; the tests read it here.)
    #[cfg(test)]
    pub(super) fn lines(self, k: usize) -> impl Iterator<Item = *const T> {
        let (head, lines) = self.head();
        (0..k.min(lines))
            .map(move |p| head.wrapping_add(p * LINE))
            .chain(self.after(k))
    }

    const NONE: Self = Fetch {
        at: std::ptr::null(),
        strip: std::ptr::null(),
        left: 0,
        more: 0,
        rows: 0,
        apart: 0,
    };
}

impl<T> Iterator for Fetch<T> {
    type Item = *const T;

    #[inline]
    fn next(&mut self) -> Option<*const T> {
        if self.left == 0 {
            if self.more == 0 {
                return None;
            }
            self.more -= 1;
            self.strip = self.strip.wrapping_add(self.apart);
            self.at = self.strip;
            self.left = self.rows;
        }
        let at = self.at;
        self.at = self.at.wrapping_add(LINE);
        self.left -= 1;
        Some(at)
    }
}

/// Runs a row block's `k` steps of the depth, step `p` fetching line `p`
/// from `at` while `p < lines` ([`Fetch::head`]): the fetching steps, then
/// the rest, so that no step tests whether it fetches (a test a step, and
/// the kernels' indexed loops, spilled their strip offsets to the stack).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn steps<T>(k: usize, (at, lines): (*const T, usize), mut step: impl FnMut()) {
    let fetching = lines.min(k);
    for p in 0..fetching {
        line(at.wrapping_add(p * LINE));
        step();
    }
    for _ in fetching..k {
        step();
    }
}

/// Fetches the line at `at` into L2. Any address may be fetched: a
/// prefetch never faults.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn line<T>(at: *const T) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    // SAFETY: SSE is in every x86_64 CPU; a prefetch reads nothing the
    // program sees and never faults, whatever the address
    unsafe { _mm_prefetch::<_MM_HINT_T1>(at.cast()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of the block once, however many row blocks share a
    /// group of strips (more, as many, fewer), and nothing past the
    /// block's strips or for an empty block.
    #[test]
    fn the_row_blocks_fetch_every_line_of_the_block_once() {
        let (rows, strips, b_strip) = (5, 7, 1000);
        let base = vec![0.0f32; strips * b_strip];
        let next = Prefetch {
            b: base.as_ptr(),
            rows,
            strips,
            b_strip,
        };
        let want: Vec<usize> = (0..strips)
            .flat_map(|s| (0..rows).map(move |r| s * b_strip + r * LINE))
            .collect();
        let whole = std::iter::once(0..7).collect();
        for groups in [
            vec![0..4, 4..6, 6..7],
            whole,
            (0..7).map(|s| s..s + 1).collect(),
        ] {
            for blocks in [1, 2, 3, 4, 11] {
                // the kernels' split: a line a step of depths shorter and
                // longer than a strip, then the rest
                for k in [1, 3, 5, 9] {
                    let mut got: Vec<usize> = groups
                        .iter()
                        .flat_map(|g| (0..blocks).map(|b| next.for_block(g.clone(), b, blocks)))
                        .flat_map(|f| f.lines(k))
                        .map(|at| (at as usize - base.as_ptr() as usize) / 4)
                        .collect();
                    got.sort_unstable();
                    assert_eq!(
                        got, want,
                        "groups {groups:?}, {blocks} row blocks, depth {k}"
                    );
                }
            }
        }
        assert_eq!(next.for_block(7..9, 0, 2).count(), 0, "past the last strip");
        assert_eq!(Prefetch::<f32>::NONE.for_block(0..4, 0, 4).count(), 0);
    }
}
