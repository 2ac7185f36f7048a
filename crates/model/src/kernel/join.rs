//! A bidirectional encoder's two output sequences joined into batch-major
//! rows, and the gradient split back: one pass each, sentences split over
//! the threads. As Burn operations the join was a reversal of one
//! direction (a row gather), a concatenation and a transposition to batch
//! major, each a copy of the outputs (and each gradient another).
//!
//! Layout: each direction time-major `[len * batch, h]` (row `t * batch +
//! b`), in source order or, when it read the source reversed, in reversed
//! order; the join `[batch * len, 2h]` (row `b * len + s`: position `s` of
//! sentence `b`, the first direction's values then the second's).

use super::pool::written_row_blocks;

/// The sizes of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinDims {
    /// Source positions.
    pub len: usize,
    /// Sentences.
    pub batch: usize,
    /// Width of each direction.
    pub h: usize,
    /// Whether each direction's rows run in reversed source order.
    pub reversed: [bool; 2],
}

impl JoinDims {
    /// The time-major row of direction `k` holding position `s` of sentence `b`.
    fn row(&self, k: usize, s: usize, b: usize) -> usize {
        let t = if self.reversed[k] {
            self.len - 1 - s
        } else {
            s
        };
        t * self.batch + b
    }

    fn check(&self, joined: usize, directions: [usize; 2]) {
        let n = self.len * self.batch * self.h;
        assert!(
            joined == 2 * n && directions == [n, n],
            "join sizes: joined {joined}, directions {directions:?} for {self:?}"
        );
    }
}

/// The joined rows `[batch * len, 2h]` of directions `dirs`.
pub fn join(dirs: [&[f32]; 2], d: JoinDims) -> Vec<f32> {
    let n = d.len * d.batch * d.h;
    d.check(2 * n, dirs.map(<[f32]>::len));
    // SAFETY: each sentence's rows are written whole, both halves of each
    unsafe {
        written_row_blocks(d.batch * d.len, 2 * d.h, d.len, 0, |r0, rows| {
            let sentence = r0 / d.len;
            for (s, row) in rows.chunks_exact_mut(2 * d.h).enumerate() {
                for (k, half) in row.chunks_exact_mut(d.h).enumerate() {
                    let r = d.row(k, s, sentence);
                    half.write_copy_of_slice(&dirs[k][r * d.h..(r + 1) * d.h]);
                }
            }
        })
    }
}

/// The gradients of both directions `[len * batch, h]` from the joined
/// rows' `djoined` `[batch * len, 2h]`.
pub fn split(djoined: &[f32], d: JoinDims) -> [Vec<f32>; 2] {
    let n = d.len * d.batch * d.h;
    d.check(djoined.len(), [n, n]);
    // time-major outputs: a step's rows at a time, gathered from the sentences
    [0, 1].map(|k| {
        // SAFETY: each step's rows are written whole, one per sentence
        unsafe {
            written_row_blocks(d.len * d.batch, d.h, d.batch, 0, |r0, rows| {
                let t = r0 / d.batch;
                let s = if d.reversed[k] { d.len - 1 - t } else { t };
                for (sentence, row) in rows.chunks_exact_mut(d.h).enumerate() {
                    let j = (sentence * d.len + s) * 2 * d.h + k * d.h;
                    row.write_copy_of_slice(&djoined[j..j + d.h]);
                }
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value lands where the layout says, and the split is the join's
    /// inverse, for each direction's order.
    #[test]
    fn split_inverts_join_and_rows_land_in_place() {
        for reversed in [[false, true], [true, false], [false, false], [true, true]] {
            let d = JoinDims {
                len: 5,
                batch: 3,
                h: 4,
                reversed,
            };
            let n = d.len * d.batch * d.h;
            let dirs: [Vec<f32>; 2] = [0, 1].map(|k| (0..n).map(|i| (k * n + i) as f32).collect());
            let joined = join([&dirs[0], &dirs[1]], d);
            for b in 0..d.batch {
                for s in 0..d.len {
                    for k in 0..2 {
                        let t = if reversed[k] { d.len - 1 - s } else { s };
                        for i in 0..d.h {
                            let want = dirs[k][(t * d.batch + b) * d.h + i];
                            let got = joined[(b * d.len + s) * 2 * d.h + k * d.h + i];
                            assert_eq!(got, want, "{reversed:?} b {b} s {s} k {k} i {i}");
                        }
                    }
                }
            }
            assert_eq!(split(&joined, d), dirs, "{reversed:?}");
        }
    }

    #[test]
    #[should_panic(expected = "join sizes")]
    fn mismatched_sizes_panic() {
        let d = JoinDims {
            len: 2,
            batch: 2,
            h: 2,
            reversed: [false, true],
        };
        join([&[0.0; 8], &[0.0; 7]], d);
    }
}
