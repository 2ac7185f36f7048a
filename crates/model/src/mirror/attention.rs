//! Where the decoder may look, from the task's own structure: the i-th output
//! word is the i-th source word reversed, so a decoder that has written `w`
//! spaces and then `k` letters is writing letter `k` of source word `w`
//! counted from that word's end (or, after its last letter, the delimiter).
//!
//! Two optional attention terms follow from that place, both computed from
//! the symbols (the source and the decoder's own output so far), never from
//! learned state, so they mean the same at any sentence length:
//!
//! - **word window**: positions outside source word `w` and its delimiter
//!   (the space or end symbol after it) are masked out;
//! - **relative position**: a learned bias per `from_end(s) - k`, clamped to
//!   `-span..=span`, where `from_end(s)` counts the letters after `s` in its
//!   word (a delimiter's is its word's length, the step at which it is due).
//!   Location attention of this relative kind is what Ray Chowdhury &
//!   Caragea (arXiv 2305.20019) use for reverse copying far beyond the
//!   trained lengths.

pub use crate::kernel::attention::Windows;

/// The words of one source sequence (char ids ending in the end symbol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceWords {
    /// `(first, delimiter)` per word: its letters are `first..delimiter`, then
    /// the space or end symbol at `delimiter`.
    spans: Vec<(u32, u32)>,
    /// Per position, the letters after it in its word; a delimiter's is the
    /// length of the word before it.
    from_end: Vec<u32>,
}

/// Additive score of a masked position: `exp` of it is 0 in f32.
pub const MASKED: f32 = -1e9;

impl SourceWords {
    /// The words of `src`, which ends in the end symbol (the last word's
    /// delimiter); `space` separates words.
    pub fn new(src: &[u8], space: u8) -> Self {
        let mut spans = Vec::new();
        let mut from_end = vec![0u32; src.len()];
        let mut first = 0usize;
        for (i, &c) in src.iter().enumerate() {
            if c == space || i + 1 == src.len() {
                for (k, slot) in from_end[first..i].iter_mut().enumerate() {
                    *slot = (i - first - 1 - k) as u32;
                }
                from_end[i] = (i - first) as u32;
                spans.push((first as u32, i as u32));
                first = i + 1;
            }
        }
        SourceWords { spans, from_end }
    }

    /// Positions in the source.
    pub fn len(&self) -> usize {
        self.from_end.len()
    }

    /// Whether the source is empty (never, for a source that ends in the end symbol).
    pub fn is_empty(&self) -> bool {
        self.from_end.is_empty()
    }

    /// The span `(first, delimiter)` of word `w` (the last word for any `w`
    /// past it: a decoder that wrote too many spaces looks at the end).
    pub fn span(&self, w: usize) -> (usize, usize) {
        let (a, b) = self.spans[w.min(self.spans.len() - 1)];
        (a as usize, b as usize)
    }

    /// Relative-position bucket of source position `s` for a decoder `k`
    /// letters into its word: `from_end(s) - k` clamped to `-span..=span`,
    /// shifted to `0..=2 * span`.
    pub fn bucket(&self, s: usize, k: usize, span: usize) -> i64 {
        let d = self.from_end[s] as i64 - k as i64;
        d.clamp(-(span as i64), span as i64) + span as i64
    }
}

/// The decoder's place in its own output: the word it is on (spaces
/// written) and the letters of that word written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Place {
    /// Index of the word being written.
    pub word: usize,
    /// Letters of it written so far.
    pub letter: usize,
}

impl Place {
    /// The place after writing `symbol` here.
    pub fn after(self, symbol: u8, space: u8) -> Place {
        if symbol == space {
            Place {
                word: self.word + 1,
                letter: 0,
            }
        } else {
            Place {
                letter: self.letter + 1,
                ..self
            }
        }
    }

    /// The place after writing `prefix` from the start.
    pub fn of(prefix: &[u8], space: u8) -> Place {
        prefix
            .iter()
            .fold(Place::default(), |p, &c| p.after(c, space))
    }
}

/// How one attention call is restricted and biased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locating {
    /// Mask all but the current word and its delimiter.
    pub word_window: bool,
    /// Relative-position buckets each side (0: no relative bias).
    pub span: usize,
}

impl Locating {
    /// Whether attention uses the decoder's place at all.
    pub fn is_used(&self) -> bool {
        self.word_window || self.span > 0
    }

    /// The positions `lo..hi` a decoder at `place` may look at: its word and
    /// the delimiter after it, or the whole source without a word window.
    pub fn window(&self, words: &SourceWords, place: Place) -> (usize, usize) {
        if self.word_window {
            let (a, b) = words.span(place.word);
            (a, b + 1)
        } else {
            (0, words.len())
        }
    }

    /// Mask and relative bucket of position `s` for a decoder at `place`.
    pub fn at(&self, words: &SourceWords, s: usize, place: Place) -> (f32, i64) {
        let (lo, hi) = self.window(words, place);
        let mask = if (lo..hi).contains(&s) { 0.0 } else { MASKED };
        let bucket = if self.span > 0 {
            words.bucket(s, place.letter, self.span)
        } else {
            0
        };
        (mask, bucket)
    }
}

/// Masks and buckets for a batch of decoder places, position-major per place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bias {
    /// Additive mask per (place, position).
    pub mask: Vec<f32>,
    /// Relative bucket per (place, position).
    pub bucket: Vec<i64>,
}

impl Bias {
    /// Appends the entries of a decoder at `place` over `positions` (`None`:
    /// a padding slot, always masked).
    pub fn push(
        &mut self,
        locating: Locating,
        words: &SourceWords,
        place: Place,
        positions: impl Iterator<Item = Option<usize>>,
    ) {
        for s in positions {
            let (m, b) = match s {
                Some(s) => locating.at(words, s, place),
                None => (MASKED, 0),
            };
            self.mask.push(m);
            self.bucket.push(b);
        }
    }
}

/// The windows of teacher-forced decoding, sentence by sentence: at step
/// `t` the decoder is at the place its target prefix `tgt[..t]` reaches
/// (`steps` = target length + 1, the end symbol last); every source is
/// `len` positions. Without locating, every window is the whole source.
pub fn teacher_windows(
    locating: Locating,
    words: &[SourceWords],
    tgt: &[Vec<u8>],
    len: usize,
    space: u8,
) -> Windows {
    let steps = tgt[0].len() + 1;
    let mut windows = Windows::new(steps, len);
    if !locating.is_used() {
        for _ in 0..tgt.len() * steps {
            windows.push(0, len, []);
        }
        return windows;
    }
    assert_eq!(words.len(), tgt.len(), "the words of every source");
    for (y, words) in tgt.iter().zip(words) {
        let mut at = Place::default();
        for t in 0..steps {
            let (lo, hi) = locating.window(words, at);
            let buckets = (locating.span > 0)
                .then(|| (lo..hi).map(move |s| words.bucket(s, at.letter, locating.span) as u32));
            windows.push(lo, hi, buckets.into_iter().flatten());
            if let Some(&c) = y.get(t) {
                at = at.after(c, space);
            }
        }
    }
    windows
}

/// The dense form of `windows` (a mask and a bucket per row and position,
/// positions outside a row's window masked, their bucket 0), for backends
/// without the windowed operation.
pub fn dense_bias(windows: &Windows) -> Bias {
    let mut bias = Bias::default();
    for r in 0..windows.rows() {
        let (win, buckets) = (windows.window(r), windows.buckets(r));
        for s in 0..windows.len {
            let inside = win.contains(&s);
            bias.mask.push(if inside { 0.0 } else { MASKED });
            let bucket = if inside {
                buckets.get(s - win.start)
            } else {
                None
            };
            bias.bucket.push(bucket.map_or(0, |&c| c as i64));
        }
    }
    bias
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: u8 = 29;

    #[test]
    fn words_spans_and_distances_from_the_end() {
        // "ab c" + end
        let w = SourceWords::new(&[1, 2, 0, 3, END], 0);
        assert_eq!(w.spans, vec![(0, 2), (3, 4)]);
        assert_eq!(w.from_end, vec![1, 0, 2, 0, 1]);
        assert_eq!(w.span(7), (3, 4));
        // a double space is an empty word whose delimiter is due at once
        let w = SourceWords::new(&[1, 0, 0, 2, END], 0);
        assert_eq!(w.spans, vec![(0, 1), (2, 2), (3, 4)]);
        assert_eq!(w.from_end[2], 0);
    }

    #[test]
    fn the_place_names_the_source_letter_due() {
        let src = [1, 2, 3, 0, 4, 5, END]; // "abc de"
        let target = [3, 2, 1, 0, 5, 4, END]; // "cba ed" then end
        let words = SourceWords::new(&src, 0);
        for t in 0..target.len() {
            let Place { word: w, letter: k } = Place::of(&target[..t], 0);
            let (a, b) = words.span(w);
            // the one position at relative distance 0 in the word holds the symbol due
            let due: Vec<usize> = (a..=b).filter(|&s| words.bucket(s, k, 3) == 3).collect();
            assert_eq!(due.len(), 1, "step {t}");
            assert_eq!(src[due[0]], target[t], "step {t}");
        }
    }

    #[test]
    fn bias_masks_other_words_and_padding() {
        let words = SourceWords::new(&[1, 0, 2, 3, END], 0);
        let loc = Locating {
            word_window: true,
            span: 2,
        };
        let mut bias = Bias::default();
        let at = Place { word: 1, letter: 0 };
        bias.push(loc, &words, at, (0..5).map(Some).chain([None]));
        assert_eq!(bias.mask, vec![MASKED, MASKED, 0.0, 0.0, 0.0, MASKED]);
        // from_end of "bc" + end is 1, 0, 2; minus k = 0, clamped to 2, plus 2
        assert_eq!(&bias.bucket[2..5], &[3, 2, 4]);
    }

    /// Teacher forcing's windows, made dense, are the mask and buckets a
    /// decoder at each prefix's place gets position by position
    /// ([`Locating::at`], as decoding uses): for every locating kind.
    #[test]
    fn teacher_windows_agree_with_the_place_of_each_prefix() {
        let src = [1, 2, 0, 3, 4, 5, 0, 6, END]; // "ab cde f"
        let tgt = vec![2u8, 1, 0, 5, 4, 3, 0, 6];
        let words = SourceWords::new(&src, 0);
        for (word_window, span) in [(true, 2), (false, 3), (true, 0)] {
            let loc = Locating { word_window, span };
            let windows = teacher_windows(
                loc,
                std::slice::from_ref(&words),
                std::slice::from_ref(&tgt),
                src.len(),
                0,
            );
            let dense = dense_bias(&windows);
            let mut want = Bias::default();
            for t in 0..=tgt.len() {
                want.push(
                    loc,
                    &words,
                    Place::of(&tgt[..t], 0),
                    (0..src.len()).map(Some),
                );
            }
            assert_eq!(dense.mask, want.mask, "{loc:?}");
            for (i, &m) in want.mask.iter().enumerate() {
                if m == 0.0 && span > 0 {
                    assert_eq!(dense.bucket[i], want.bucket[i], "{loc:?} entry {i}");
                }
            }
        }
    }
}
