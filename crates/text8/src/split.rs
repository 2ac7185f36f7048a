//! Train / validation / test splits of a corpus.

use serde::{Deserialize, Serialize};

use crate::{Result, Text8Error};

/// How a corpus is split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SplitKind {
    /// The notebook's: the first `valid_size` characters are validation, the
    /// rest training; no test part.
    Notebook {
        /// Validation characters (the notebook uses 1000).
        valid_size: usize,
    },
    /// The standard Text8 split, 90M / 5M / 5M of 100M: the first 90% train,
    /// the next 5% validation, the last 5% test (same fractions on any corpus).
    Standard,
}

impl SplitKind {
    /// Fractions of the standard split.
    pub const STANDARD_TRAIN: f64 = 0.9;
    /// Fraction up to the end of validation in the standard split.
    pub const STANDARD_VALID_END: f64 = 0.95;
}

/// A part of a corpus by the standard split, or all of it (what `eval` reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The whole corpus.
    All,
    /// The standard split's training part (first 90%).
    Train,
    /// The standard split's validation part (next 5%).
    Valid,
    /// The standard split's test part (last 5%).
    Test,
}

impl Part {
    /// This part of `ids`.
    pub fn of(self, ids: &[u8]) -> Result<&[u8]> {
        if self == Part::All {
            return Ok(ids);
        }
        let s = Split::new(ids, SplitKind::Standard)?;
        Ok(match self {
            Part::Train => s.train,
            Part::Valid => s.valid,
            _ => s.test,
        })
    }

    /// Every part, in order.
    pub const ALL: [Part; 4] = [Part::All, Part::Train, Part::Valid, Part::Test];

    /// Its lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Part::All => "all",
            Part::Train => "train",
            Part::Valid => "valid",
            Part::Test => "test",
        }
    }
}

impl std::str::FromStr for Part {
    type Err = String;

    /// A part by its [`Part::name`].
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Part::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("{s:?}: expected all, train, valid or test"))
    }
}

/// The three parts of a corpus, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    /// Training ids.
    pub train: &'a [u8],
    /// Validation ids.
    pub valid: &'a [u8],
    /// Test ids (empty for the notebook split).
    pub test: &'a [u8],
}

impl<'a> Split<'a> {
    /// Splits `ids`. The notebook split needs more than `valid_size` characters;
    /// the standard split needs at least 20 so that every part is non-empty.
    pub fn new(ids: &'a [u8], kind: SplitKind) -> Result<Self> {
        match kind {
            SplitKind::Notebook { valid_size } => {
                if valid_size == 0 {
                    return Err(Text8Error::Invalid("valid_size must be at least 1".into()));
                }
                if ids.len() <= valid_size {
                    return Err(Text8Error::TooShort {
                        what: format!(
                            "corpus for a validation part of valid_size = {valid_size} plus training"
                        ),
                        needed: valid_size + 1,
                        found: ids.len(),
                        unit: "characters",
                    });
                }
                let (valid, train) = ids.split_at(valid_size);
                Ok(Split {
                    train,
                    valid,
                    test: &[],
                })
            }
            SplitKind::Standard => {
                if ids.len() < 20 {
                    return Err(Text8Error::TooShort {
                        what: "corpus for the standard 90/5/5 split".into(),
                        needed: 20,
                        found: ids.len(),
                        unit: "characters",
                    });
                }
                let n = ids.len() as f64;
                let a = (n * SplitKind::STANDARD_TRAIN).round() as usize;
                let b = (n * SplitKind::STANDARD_VALID_END).round() as usize;
                Ok(Split {
                    train: &ids[..a],
                    valid: &ids[a..b],
                    test: &ids[b..],
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notebook_split_takes_the_first_chars_for_validation() {
        let ids: Vec<u8> = (0..27).cycle().take(3000).collect();
        let s = Split::new(&ids, SplitKind::Notebook { valid_size: 1000 }).unwrap();
        assert_eq!(s.valid, &ids[..1000]);
        assert_eq!(s.train, &ids[1000..]);
        assert!(s.test.is_empty());
        assert!(Split::new(&ids[..1000], SplitKind::Notebook { valid_size: 1000 }).is_err());
    }

    #[test]
    fn standard_split_is_90_5_5() {
        let ids = vec![0u8; 100_000_000];
        let s = Split::new(&ids, SplitKind::Standard).unwrap();
        assert_eq!(
            (s.train.len(), s.valid.len(), s.test.len()),
            (90_000_000, 5_000_000, 5_000_000)
        );
        let ids = vec![0u8; 1_024_806];
        let s = Split::new(&ids, SplitKind::Standard).unwrap();
        assert_eq!(s.train.len() + s.valid.len() + s.test.len(), ids.len());
        assert_eq!(s.train.len(), 922_325);
    }
}
