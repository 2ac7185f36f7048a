//! Character and bigram vocabularies of the Text8 alphabet.
//!
//! Owns: the mapping between characters and ids used everywhere else in the
//! workspace. Space is id 0 and `a`..`z` are ids 1..26, exactly as the
//! notebook's `char2id`; a bigram `(first, second)` is id
//! `id(first) + 27 * id(second)` (729 ids). The mirror model's vocabulary adds
//! padding, start and end tokens after the 27 characters.
//!
//! May import: nothing of the workspace, and no Burn. Unknown characters are
//! an error carrying their position, never a silent 0.
//!
//! Also home of [`rng::Rng`], the workspace's one seedable random number
//! generator: every crate depends on this one, and it has no dependencies.

pub mod rng;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Number of characters in the Text8 alphabet: space and `a`..`z`.
pub const CHAR_VOCAB_SIZE: usize = 27;
/// Number of ordered character pairs: `27 * 27`.
pub const BIGRAM_VOCAB_SIZE: usize = CHAR_VOCAB_SIZE * CHAR_VOCAB_SIZE;
/// The alphabet in id order.
pub const ALPHABET: &str = " abcdefghijklmnopqrstuvwxyz";

/// Errors of encoding and decoding.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenizerError {
    /// A character outside the vocabulary.
    #[error(
        "unknown character {found:?} at character {position} (byte offset {byte_offset}): \
         expected one of a-z or space"
    )]
    UnknownChar {
        /// The offending character.
        found: char,
        /// Its index in characters.
        position: usize,
        /// Its byte offset in the input string.
        byte_offset: usize,
    },
    /// An id outside the vocabulary.
    #[error("id {id} at position {position} is outside the vocabulary of {vocab_size}")]
    UnknownId {
        /// The offending id.
        id: usize,
        /// Its index in the input.
        position: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
}

/// Id of a Text8 byte (`b' '` -> 0, `b'a'..=b'z'` -> 1..=26), `None` for any other byte.
#[inline]
pub fn byte_to_id(b: u8) -> Option<u8> {
    match b {
        b' ' => Some(0),
        b'a'..=b'z' => Some(b - b'a' + 1),
        _ => None,
    }
}

/// The character of a char id (0 -> space, 1..=26 -> `a`..`z`), `None` past 26.
#[inline]
pub fn id_to_byte(id: u8) -> Option<u8> {
    match id {
        0 => Some(b' '),
        1..=26 => Some(b'a' + id - 1),
        _ => None,
    }
}

/// Bigram id of a pair of char ids: `first + 27 * second`.
#[inline]
pub fn bigram_id(first: u8, second: u8) -> usize {
    first as usize + CHAR_VOCAB_SIZE * second as usize
}

/// The pair of char ids of a bigram id.
#[inline]
pub fn bigram_pair(id: usize) -> (u8, u8) {
    ((id % CHAR_VOCAB_SIZE) as u8, (id / CHAR_VOCAB_SIZE) as u8)
}

/// The 27-character vocabulary of the notebook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharVocab;

impl CharVocab {
    /// Number of ids.
    pub const fn size(&self) -> usize {
        CHAR_VOCAB_SIZE
    }

    /// Ids of every character of `text`.
    ///
    /// ```
    /// use tokenizer::CharVocab;
    /// let ids = CharVocab.encode("the cat").unwrap();
    /// assert_eq!(ids, [20, 8, 5, 0, 3, 1, 20]);
    /// assert_eq!(CharVocab.decode(&ids).unwrap(), "the cat");
    /// assert!(CharVocab.encode("The").is_err()); // upper case is not in the alphabet
    /// ```
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, TokenizerError> {
        let mut ids = Vec::with_capacity(text.len());
        for (position, (byte_offset, c)) in text.char_indices().enumerate() {
            let id =
                u8::try_from(c)
                    .ok()
                    .and_then(byte_to_id)
                    .ok_or(TokenizerError::UnknownChar {
                        found: c,
                        position,
                        byte_offset,
                    })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Text of a sequence of char ids.
    pub fn decode(&self, ids: &[u8]) -> Result<String, TokenizerError> {
        ids.iter()
            .enumerate()
            .map(|(position, &id)| {
                id_to_byte(id)
                    .map(char::from)
                    .ok_or(TokenizerError::UnknownId {
                        id: id as usize,
                        position,
                        vocab_size: CHAR_VOCAB_SIZE,
                    })
            })
            .collect()
    }
}

/// The 729-entry vocabulary of ordered character pairs (notebook problem 2b).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BigramVocab;

impl BigramVocab {
    /// Number of ids.
    pub const fn size(&self) -> usize {
        BIGRAM_VOCAB_SIZE
    }

    /// Overlapping bigram ids of `text`: `text[k], text[k+1]` for every `k`,
    /// so a text of `n` characters gives `n - 1` ids (none for `n < 2`).
    pub fn encode(&self, text: &str) -> Result<Vec<u16>, TokenizerError> {
        let chars = CharVocab.encode(text)?;
        Ok(Self::from_char_ids(&chars))
    }

    /// Overlapping bigram ids of a sequence of char ids.
    pub fn from_char_ids(ids: &[u8]) -> Vec<u16> {
        ids.windows(2)
            .map(|w| bigram_id(w[0], w[1]) as u16)
            .collect()
    }

    /// Text of a sequence of overlapping bigram ids (inverse of [`encode`](Self::encode)).
    pub fn decode(&self, ids: &[u16]) -> Result<String, TokenizerError> {
        let mut out = String::with_capacity(ids.len() + 1);
        for (position, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= BIGRAM_VOCAB_SIZE {
                return Err(TokenizerError::UnknownId {
                    id,
                    position,
                    vocab_size: BIGRAM_VOCAB_SIZE,
                });
            }
            let (first, second) = bigram_pair(id);
            if position == 0 {
                out.push(char::from(id_to_byte(first).expect("first < 27")));
            }
            out.push(char::from(id_to_byte(second).expect("second < 27")));
        }
        Ok(out)
    }
}

/// Vocabulary of the word-mirroring sequence-to-sequence model: the 27
/// characters (ids 0..27, as [`CharVocab`]), then padding, start and end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorVocab;

impl MirrorVocab {
    /// Padding id: fills sequences up to the batch's longest.
    pub const PAD: u8 = 27;
    /// Start id: the decoder's first input.
    pub const START: u8 = 28;
    /// End id: ends every target sequence.
    pub const END: u8 = 29;

    /// Number of ids.
    pub const fn size(&self) -> usize {
        CHAR_VOCAB_SIZE + 3
    }

    /// Char ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, TokenizerError> {
        CharVocab.encode(text)
    }

    /// Text of ids, stopping at the first end token; padding and start are skipped.
    pub fn decode(&self, ids: &[u8]) -> Result<String, TokenizerError> {
        let mut out = String::with_capacity(ids.len());
        for (position, &id) in ids.iter().enumerate() {
            match id {
                Self::END => break,
                Self::PAD | Self::START => {}
                _ => out.push(char::from(id_to_byte(id).ok_or(
                    TokenizerError::UnknownId {
                        id: id as usize,
                        position,
                        vocab_size: self.size(),
                    },
                )?)),
            }
        }
        Ok(out)
    }
}

/// A vocabulary as stored in a run directory (`tokenizer.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Tokenizer {
    /// One id per character (27).
    Char,
    /// One id per ordered pair of characters (729).
    Bigram,
    /// Characters plus padding, start and end (30).
    Mirror,
}

impl Tokenizer {
    /// Number of ids of the vocabulary.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char => CharVocab.size(),
            Tokenizer::Bigram => BigramVocab.size(),
            Tokenizer::Mirror => MirrorVocab.size(),
        }
    }

    /// Number of ids the model predicts (the character vocabulary for the
    /// language models: a bigram model still predicts one character).
    pub fn output_size(&self) -> usize {
        match self {
            Tokenizer::Char | Tokenizer::Bigram => CHAR_VOCAB_SIZE,
            Tokenizer::Mirror => MirrorVocab.size(),
        }
    }

    /// Characters of input consumed per model input (1, or 2 for bigrams).
    pub fn context(&self) -> usize {
        match self {
            Tokenizer::Bigram => 2,
            _ => 1,
        }
    }

    /// Stable lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Tokenizer::Char => "char",
            Tokenizer::Bigram => "bigram",
            Tokenizer::Mirror => "mirror",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_ids_match_the_notebook() {
        // notebook: char2id('a') = 1, char2id('z') = 26, char2id(' ') = 0
        assert_eq!(CharVocab.encode("a z").unwrap(), vec![1, 0, 26]);
        assert_eq!(CharVocab.decode(&[1, 26, 0]).unwrap(), "az ");
        assert_eq!(CharVocab.size(), 27);
        for (i, c) in ALPHABET.bytes().enumerate() {
            assert_eq!(byte_to_id(c), Some(i as u8));
            assert_eq!(id_to_byte(i as u8), Some(c));
        }
    }

    #[test]
    fn unknown_char_reports_position() {
        let err = CharVocab.encode("ab€cD").unwrap_err();
        assert_eq!(
            err,
            TokenizerError::UnknownChar {
                found: '€',
                position: 2,
                byte_offset: 2
            }
        );
        let err = CharVocab.encode("ab€cD").unwrap_err().to_string();
        assert!(err.contains("'€'") && err.contains("character 2"), "{err}");
        let err = CharVocab.encode("abcD").unwrap_err();
        assert!(matches!(
            err,
            TokenizerError::UnknownChar {
                found: 'D',
                position: 3,
                ..
            }
        ));
    }

    #[test]
    fn unknown_id_is_an_error() {
        assert!(matches!(
            CharVocab.decode(&[1, 27]),
            Err(TokenizerError::UnknownId {
                id: 27,
                position: 1,
                ..
            })
        ));
        assert!(BigramVocab.decode(&[729]).is_err());
    }

    #[test]
    fn bigram_ids_follow_first_plus_27_second() {
        // ' a' -> 0 + 27 * 1 = 27; 'ab' -> 1 + 27 * 2 = 55; 'zz' -> 26 + 27 * 26 = 728
        assert_eq!(BigramVocab.encode(" ab").unwrap(), vec![27, 55]);
        assert_eq!(BigramVocab.encode("zz").unwrap(), vec![728]);
        assert_eq!(BigramVocab.encode("a").unwrap(), Vec::<u16>::new());
        assert_eq!(BigramVocab.decode(&[27, 55]).unwrap(), " ab");
        assert_eq!(bigram_pair(728), (26, 26));
        assert_eq!(BigramVocab.size(), 729);
    }

    #[test]
    fn mirror_vocab_decodes_until_end() {
        let v = MirrorVocab;
        assert_eq!(v.size(), 30);
        let ids = [
            MirrorVocab::START,
            5,
            8,
            0,
            MirrorVocab::END,
            1,
            MirrorVocab::PAD,
        ];
        assert_eq!(v.decode(&ids).unwrap(), "eh ");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            // PROPTEST_CASES runs longer fuzzing (docs/RELIABILITY.md)
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000),
        ))]
        /// Fuzz: any string encodes to valid ids or fails at the first
        /// character outside the alphabet; valid text round-trips through
        /// the char and bigram vocabularies.
        #[test]
        fn encode_never_panics_and_round_trips(s in ".{0,64}", t in "[a-z ]{0,64}") {
            match CharVocab.encode(&s) {
                Ok(ids) => {
                    proptest::prop_assert!(ids.iter().all(|&i| i < 27));
                    proptest::prop_assert_eq!(CharVocab.decode(&ids).unwrap(), s.clone());
                }
                Err(TokenizerError::UnknownChar { found, position, byte_offset }) => {
                    proptest::prop_assert_eq!(s.chars().nth(position), Some(found));
                    proptest::prop_assert_eq!(s[byte_offset..].chars().next(), Some(found));
                    proptest::prop_assert!(s.chars().take(position).all(|c| c == ' ' || c.is_ascii_lowercase()));
                }
                Err(e) => proptest::prop_assert!(false, "unexpected {e}"),
            }
            let ids = CharVocab.encode(&t).unwrap();
            proptest::prop_assert_eq!(CharVocab.decode(&ids).unwrap(), t.clone());
            let bigrams = BigramVocab.encode(&t).unwrap();
            proptest::prop_assert_eq!(bigrams.len(), t.len().saturating_sub(1));
            if t.len() >= 2 {
                proptest::prop_assert_eq!(BigramVocab.decode(&bigrams).unwrap(), t.clone());
            }
            let raw: Vec<u8> = s.bytes().collect();
            let _ = CharVocab.decode(&raw);
            let _ = MirrorVocab.decode(&raw);
        }
    }

    #[test]
    fn tokenizer_serialises_with_its_kind() {
        let json = serde_json::to_string(&Tokenizer::Bigram).unwrap();
        assert_eq!(json, r#"{"kind":"bigram"}"#);
        let back: Tokenizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Tokenizer::Bigram);
        assert!(serde_json::from_str::<Tokenizer>(r#"{"kind":"word"}"#).is_err());
        assert_eq!(Tokenizer::Bigram.vocab_size(), 729);
        assert_eq!(Tokenizer::Bigram.output_size(), 27);
    }
}
