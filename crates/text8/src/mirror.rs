//! Sentence pairs for problem 3: windows of consecutive words of a corpus,
//! and the same words each written backwards (`the quick` -> `eht kciuq`).

use std::sync::Arc;

use crate::rng::Rng;
use crate::{Result, Text8Error};

/// Mirrors every word of a text in place: the spaces stay where they are and
/// the letters between them are reversed. Works on char ids (space = 0).
pub fn mirror_words(ids: &[u8]) -> Vec<u8> {
    let mut out = ids.to_vec();
    for word in out.split_mut(|&c| c == 0) {
        word.reverse();
    }
    out
}

/// A source sentence and its mirrored target, as char ids (no special tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPair {
    /// Words of the corpus separated by single spaces.
    pub source: Vec<u8>,
    /// The same words, each reversed.
    pub target: Vec<u8>,
}

impl MirrorPair {
    /// The pair of a source sentence.
    pub fn new(source: Vec<u8>) -> Self {
        let target = mirror_words(&source);
        MirrorPair { source, target }
    }
}

/// Random draws [`MirrorSampler::sample`] makes before it settles for the
/// first window that fits.
pub const MAX_REDRAWS: usize = 10_000;

/// Draws windows of consecutive words from one part of a corpus.
#[derive(Debug, Clone)]
pub struct MirrorSampler {
    ids: Arc<[u8]>,
    /// `(start, end)` of every word, end exclusive.
    words: Vec<(u32, u32)>,
    min_words: usize,
    max_words: usize,
    max_chars: usize,
}

impl MirrorSampler {
    /// A sampler of windows of `min_words..=max_words` words (each window at
    /// most `max_chars` characters; longer draws are redrawn).
    pub fn new(
        ids: Arc<[u8]>,
        min_words: usize,
        max_words: usize,
        max_chars: usize,
    ) -> Result<Self> {
        if min_words == 0 || min_words > max_words {
            return Err(Text8Error::Invalid(format!(
                "word range {min_words}..={max_words}: need 1 <= min_words <= max_words"
            )));
        }
        let mut words = Vec::new();
        let mut start = None;
        for (i, &c) in ids.iter().enumerate() {
            match (c == 0, start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    words.push((s as u32, i as u32));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            words.push((s as u32, ids.len() as u32));
        }
        if words.len() < max_words {
            return Err(Text8Error::TooShort {
                what: format!("text for windows of up to {max_words} words"),
                needed: max_words,
                found: words.len(),
                unit: "words",
            });
        }
        let sampler = MirrorSampler {
            ids,
            words,
            min_words,
            max_words,
            max_chars,
        };
        // every draw must be able to end: some window of the fewest words fits
        if sampler.first_fitting(0).is_none() {
            return Err(Text8Error::NoWindow {
                min_words,
                max_chars,
            });
        }
        Ok(sampler)
    }

    /// Characters of the window of `len` words starting at word `first`
    /// (the words joined by single spaces, as [`MirrorSampler::window`] makes it).
    fn window_chars(&self, first: usize, len: usize) -> usize {
        let letters: usize = self.words[first..first + len]
            .iter()
            .map(|(s, e)| (e - s) as usize)
            .sum();
        letters + len - 1
    }

    /// The first start, from word `from` on (wrapping around), of a window of
    /// `min_words` words that fits `max_chars`.
    fn first_fitting(&self, from: usize) -> Option<usize> {
        let starts = self.words.len() - self.min_words + 1;
        (0..starts)
            .map(|k| (from + k) % starts)
            .find(|&first| self.window_chars(first, self.min_words) <= self.max_chars)
    }

    /// Number of words in the text.
    pub fn num_words(&self) -> usize {
        self.words.len()
    }

    /// The words of the window of `len` words starting at word `first`.
    pub fn words_of(&self, first: usize, len: usize) -> impl Iterator<Item = &[u8]> {
        self.words[first..first + len]
            .iter()
            .map(|&(s, e)| &self.ids[s as usize..e as usize])
    }

    /// The window of `len` words starting at word `first`.
    pub fn window(&self, first: usize, len: usize) -> Vec<u8> {
        let (s, _) = self.words[first];
        let (_, e) = self.words[first + len - 1];
        let mut out = Vec::with_capacity((e - s) as usize);
        for (k, &(ws, we)) in self.words[first..first + len].iter().enumerate() {
            if k > 0 {
                out.push(0);
            }
            out.extend_from_slice(&self.ids[ws as usize..we as usize]);
        }
        out
    }

    /// One random pair: a random length and start, redrawn while the window
    /// is longer than `max_chars`; after [`MAX_REDRAWS`] draws, the first
    /// window of the fewest words that fits from a random start (one exists:
    /// [`MirrorSampler::new`] checks), so every call ends.
    pub fn sample(&self, rng: &mut Rng) -> MirrorPair {
        let (first, len) = self.sample_span(rng);
        MirrorPair::new(self.window(first, len))
    }

    /// The window of [`sample`](Self::sample) as `(first word, words)`
    /// (the same draws), made into ids by [`window`](Self::window) or read
    /// by [`words_of`](Self::words_of).
    pub fn sample_span(&self, rng: &mut Rng) -> (usize, usize) {
        for _ in 0..MAX_REDRAWS {
            let len = rng.range_inclusive(self.min_words, self.max_words);
            let first = rng.below((self.words.len() - len + 1) as u64) as usize;
            if self.window_chars(first, len) <= self.max_chars {
                return (first, len);
            }
        }
        let from = rng.below(self.words.len() as u64) as usize;
        let first = self
            .first_fitting(from)
            .expect("checked when the sampler was made");
        (first, self.min_words)
    }

    /// `n` pairs drawn with a fixed seed (an evaluation set).
    pub fn fixed_set(&self, n: usize, seed: u64) -> Vec<MirrorPair> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| self.sample(&mut rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> Vec<u8> {
        tokenizer::CharVocab.encode(s).unwrap()
    }

    #[test]
    fn mirrors_each_word_in_place() {
        let m = mirror_words(&ids("the quick brown fox"));
        assert_eq!(
            tokenizer::CharVocab.decode(&m).unwrap(),
            "eht kciuq nworb xof"
        );
        let m = mirror_words(&ids(" a  bc "));
        assert_eq!(tokenizer::CharVocab.decode(&m).unwrap(), " a  cb ");
        assert_eq!(mirror_words(&ids("zxqvw")), ids("wvqxz"));
    }

    #[test]
    fn windows_are_consecutive_words_within_limits() {
        let text = ids(" one two three four five six seven eight nine ten");
        let s = MirrorSampler::new(text.clone().into(), 2, 4, 100).unwrap();
        assert_eq!(s.num_words(), 10);
        assert_eq!(s.window(1, 3), ids("two three four"));
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let p = s.sample(&mut rng);
            let n = p.source.split(|&c| c == 0).count();
            assert!((2..=4).contains(&n));
            assert_eq!(p.target, mirror_words(&p.source));
        }
        assert_eq!(s.fixed_set(5, 9), s.fixed_set(5, 9));
        assert!(MirrorSampler::new(ids(" a b").into(), 1, 3, 10).is_err());
        // no window fits: refused at once, not a draw that never ends
        let e = MirrorSampler::new(text.clone().into(), 3, 3, 5).unwrap_err();
        assert!(
            e.to_string().contains("no window of 3 consecutive words"),
            "{e}"
        );
        // windows that rarely fit still come back
        let mut long = ids(" abcdefghijklmnopqrstuvwxy").repeat(2000);
        long.extend(ids(" a b"));
        let s = MirrorSampler::new(long.into(), 2, 2, 3).unwrap();
        assert_eq!(s.sample(&mut rng).source, ids("a b"));
        assert!(MirrorSampler::new(ids(" a b").into(), 0, 1, 10).is_err());
    }
}
