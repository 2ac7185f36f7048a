//! The notebook's `BatchGenerator`, on ids instead of one-hot rows.
//!
//! `batch_size` cursors start at `b * (len / batch_size)`. Each call returns
//! `num_unrollings + 1` columns: the previous call's last column followed by
//! `num_unrollings` new ones, every cursor advancing by one per column and
//! wrapping at the end of the text. The state after `k` calls has a closed
//! form, so a generator can be moved to any call number at once (resuming a run).

use crate::{Result, SharedIds, Text8Error};

/// The notebook's batch generator.
#[derive(Debug, Clone)]
pub struct BatchGenerator {
    ids: SharedIds,
    batch_size: usize,
    num_unrollings: usize,
    segment: usize,
    calls: u64,
}

impl BatchGenerator {
    /// A fresh generator (no calls made yet).
    ///
    /// ```
    /// use text8::{BatchGenerator, Corpus};
    /// let corpus = Corpus::from_text(" the quick brown fox jumps over the lazy dog").unwrap();
    /// let ids = text8::SharedIds::whole(corpus.ids.clone());
    /// let mut batches = BatchGenerator::new(ids, 4, 3).unwrap();
    /// let first = batches.next_batch();
    /// // num_unrollings + 1 columns of batch_size ids, time-major
    /// assert_eq!(first.len(), (3 + 1) * 4);
    /// // the last column of one batch is the first of the next
    /// let second = batches.next_batch();
    /// assert_eq!(first[3 * 4..], second[..4]);
    /// ```
    ///
    /// Errors when a size is zero, or when the text is shorter than
    /// `batch_size * num_unrollings` (the cursors would overlap within one call).
    pub fn new(ids: SharedIds, batch_size: usize, num_unrollings: usize) -> Result<Self> {
        if batch_size == 0 || num_unrollings == 0 {
            return Err(Text8Error::Invalid(format!(
                "batch_size ({batch_size}) and num_unrollings ({num_unrollings}) must be at least 1"
            )));
        }
        let needed = batch_size.saturating_mul(num_unrollings);
        if ids.len() < needed {
            return Err(Text8Error::TooShort {
                what: format!(
                    "training text for batch_size {batch_size} x num_unrollings {num_unrollings}"
                ),
                needed,
                found: ids.len(),
                unit: "characters",
            });
        }
        let segment = ids.len() / batch_size;
        Ok(BatchGenerator {
            ids,
            batch_size,
            num_unrollings,
            segment,
            calls: 0,
        })
    }

    /// Number of cursors.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// New columns per call.
    pub fn num_unrollings(&self) -> usize {
        self.num_unrollings
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Moves to the state after `calls` calls, as if they had been made.
    pub fn seek(&mut self, calls: u64) {
        self.calls = calls;
    }

    /// Text position of column `column` of call `call` for cursor `b`.
    #[inline]
    fn position(&self, call: u64, b: usize, column: usize) -> usize {
        // in u128: any call count (a resumed run's comes from a file) stays exact
        let n = self.ids.len() as u128;
        let start = (b as u128 * self.segment as u128) % n;
        let advance = (call as u128 % n) * (self.num_unrollings as u128 % n) % n;
        ((start + advance + column as u128) % n) as usize
    }

    /// The next batch: `[num_unrollings + 1, batch_size]` ids, time-major
    /// (`out[t * batch_size + b]` is column `t` of cursor `b`).
    pub fn next_batch(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.num_unrollings + 1) * self.batch_size);
        self.next_into(&mut out);
        out
    }

    /// [`next_batch`](Self::next_batch) into a reused buffer (cleared first).
    pub fn next_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        for t in 0..=self.num_unrollings {
            for b in 0..self.batch_size {
                out.push(self.ids[self.position(self.calls, b, t)]);
            }
        }
        self.calls = self.calls.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A literal transcription of the notebook's class (cursor list, `_next_batch`,
    /// `_last_batch`), to check the closed form against.
    struct Notebook {
        text: Vec<u8>,
        cursor: Vec<usize>,
        last: Vec<u8>,
        unrollings: usize,
    }

    impl Notebook {
        fn new(text: Vec<u8>, batch_size: usize, unrollings: usize) -> Self {
            let segment = text.len() / batch_size;
            let cursor = (0..batch_size).map(|b| b * segment).collect();
            let mut nb = Notebook {
                text,
                cursor,
                last: vec![],
                unrollings,
            };
            nb.last = nb.next_column();
            nb
        }
        fn next_column(&mut self) -> Vec<u8> {
            let n = self.text.len();
            self.cursor
                .iter_mut()
                .map(|c| {
                    let id = self.text[*c];
                    *c = (*c + 1) % n;
                    id
                })
                .collect()
        }
        fn next(&mut self) -> Vec<u8> {
            let mut out = self.last.clone();
            for _ in 0..self.unrollings {
                let col = self.next_column();
                out.extend_from_slice(&col);
                self.last = col;
            }
            out
        }
    }

    fn text(s: &str) -> SharedIds {
        s.bytes()
            .map(|b| tokenizer::byte_to_id(b).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn first_batches_match_the_notebook_on_a_known_text() {
        // The notebook prints, for batch_size 64 on text8:
        //   batches2string(train_batches.next()) -> ['ons anarchi', 'when milita', ...]
        // Here on a short text with 3 cursors and 2 unrollings: segment = 26 / 3 = 8,
        // cursors at 0, 8, 16.
        let ids = text("abcdefghijklmnopqrstuvwxyz");
        let mut g = BatchGenerator::new(ids, 3, 2).unwrap();
        let strings = |v: &[u8]| -> Vec<String> {
            (0..3)
                .map(|b| {
                    (0..3)
                        .map(|t| tokenizer::id_to_byte(v[t * 3 + b]).unwrap() as char)
                        .collect()
                })
                .collect()
        };
        assert_eq!(strings(&g.next_batch()), ["abc", "ijk", "qrs"]);
        assert_eq!(strings(&g.next_batch()), ["cde", "klm", "stu"]);
        // cursor 2 wraps around the end of the text
        for _ in 0..3 {
            g.next_batch();
        }
        assert_eq!(strings(&g.next_batch()), ["klm", "stu", "abc"]);
    }

    #[test]
    fn closed_form_equals_the_literal_transcription_and_seeks() {
        let ids: Vec<u8> = (0..1013u32).map(|i| ((i * 7 + i / 3) % 27) as u8).collect();
        for (bs, u) in [(64, 10), (5, 1), (1, 2), (7, 13)] {
            let mut nb = Notebook::new(ids.clone(), bs, u);
            let mut g = BatchGenerator::new(ids.clone().into(), bs, u).unwrap();
            let batches: Vec<Vec<u8>> = (0..300).map(|_| g.next_batch()).collect();
            for (k, batch) in batches.iter().enumerate() {
                assert_eq!(batch, &nb.next(), "batch {k} of ({bs}, {u})");
            }
            let mut h = BatchGenerator::new(ids.clone().into(), bs, u).unwrap();
            h.seek(123);
            assert_eq!(h.next_batch(), batches[123]);
        }
    }

    #[test]
    fn rejects_zero_sizes_and_short_texts() {
        let ids = text("abcdefghij");
        assert!(BatchGenerator::new(ids.clone(), 0, 10).is_err());
        assert!(BatchGenerator::new(ids.clone(), 1, 0).is_err());
        let err = BatchGenerator::new(ids.clone(), 4, 3).unwrap_err();
        assert!(
            err.to_string()
                .contains("needs at least 12 characters, has 10"),
            "{err}"
        );
        assert!(BatchGenerator::new(ids, 5, 2).is_ok());
    }
}
