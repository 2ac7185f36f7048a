//! The Text8 corpus: finding or downloading it, reading and validating it,
//! normalising other text into its form, splitting it, and the notebook's
//! batch generator; also the word-mirroring sentence pairs of problem 3 and
//! the typed form of a line around its text8 words ([`Surface`]).
//!
//! Owns: everything between a file (or URL) and vectors of character ids.
//! Pure Rust, no tensors: batches are ids, and every random choice takes a seed.
//!
//! May import: `tokenizer` (ids). Never Burn, never a terminal: progress is
//! reported through callbacks ([`fetch::FetchEvent`]) and the caller draws it.

pub mod atomic;
pub mod batch;
pub mod corpus;
pub mod error;
pub mod fetch;
pub mod mirror;
pub mod normalize;
pub mod shared;
pub mod split;
pub mod surface;

pub use tokenizer::rng;

pub use batch::BatchGenerator;
pub use corpus::{Corpus, read_corpus};
pub use error::Text8Error;
pub use fetch::{DataSource, FetchEvent, TEXT8_SIZE, TEXT8_URL, fetch, resolve, shown_url};
pub use mirror::{MirrorPair, MirrorSampler, mirror_words};
pub use normalize::{Normalizer, normalize, normalize_file, not_utf8_but_utf16, starts_as_utf16};
pub use shared::SharedIds;
pub use split::{Part, Split, SplitKind};
pub use surface::Surface;

/// Result type of this crate.
pub type Result<T, E = Text8Error> = std::result::Result<T, E>;
