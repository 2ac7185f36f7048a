//! Errors of reading, fetching and normalising corpora.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong between a file or URL and character ids.
/// Messages name the file, URL or offset, and what was expected.
#[derive(Debug, Error)]
pub enum Text8Error {
    /// An I/O error on a file. (The OS error is part of the message, not a
    /// `source`: chained, it would be printed twice.)
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The corpus file does not exist.
    #[error("{}: no such file (give an existing text8.zip or text file)", path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// The corpus holds no characters.
    #[error("{}: the corpus is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A zip archive that does not hold exactly one file.
    #[error("{}: expected a zip with exactly one member, found {count}{}", path.display(), names_suffix(names))]
    ZipMembers {
        /// The archive.
        path: PathBuf,
        /// Number of file members found.
        count: usize,
        /// Their names (at most a few).
        names: Vec<String>,
    },
    /// A corrupt or truncated zip archive.
    #[error("{}: not a readable zip archive ({reason})", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// What the zip reader said.
        reason: String,
    },
    /// A byte outside `a`-`z` and space.
    #[error(
        "{}: byte {byte:#04x} ({}) at offset {offset} is not in the text8 alphabet \
         (a-z and space); run `charlstm prepare` to normalise arbitrary text",
        location(path, member), printable(*byte)
    )]
    BadByte {
        /// The file.
        path: PathBuf,
        /// The zip member, when reading a zip.
        member: Option<String>,
        /// Byte offset of the bad byte in the (decompressed) text.
        offset: u64,
        /// The bad byte.
        byte: u8,
    },
    /// A file of the wrong size (a truncated or foreign `text8.zip`).
    #[error("{}: expected {expected} bytes, found {found}", what)]
    WrongSize {
        /// The file or URL.
        what: String,
        /// Expected size.
        expected: u64,
        /// Found size.
        found: u64,
    },
    /// A corpus (or part of one) too short for what was asked of it.
    #[error("{what}: needs at least {needed} {unit}, has {found}")]
    TooShort {
        /// What was too short, and for what.
        what: String,
        /// Units needed.
        needed: usize,
        /// Units present.
        found: usize,
        /// What is counted: `characters`, `words`.
        unit: &'static str,
    },
    /// Invalid arguments (zero sizes, out-of-range fractions).
    #[error("{0}")]
    Invalid(String),
    /// No run of the fewest words a mirror sentence may have fits in its
    /// most characters: a text of words too long for those limits.
    #[error("no window of {min_words} consecutive words has at most {max_chars} characters")]
    NoWindow {
        /// The fewest words of a window.
        min_words: usize,
        /// The most characters of a window.
        max_chars: usize,
    },
    /// The server answered with an error status.
    #[error("GET {url}: HTTP status {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A transport error: connection refused, reset, timed out, bad URL.
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The body ended before the announced length.
    #[error("GET {url}: body ended after {received} of {expected} announced bytes")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes announced by Content-Length.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// A URL scheme this build cannot fetch.
    #[error("{url}: {reason}")]
    UnsupportedUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Input to the normaliser that is not UTF-8.
    #[error("{}: invalid UTF-8 at byte offset {offset}", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first invalid byte.
        offset: u64,
    },
}

impl Text8Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Text8Error::Io {
            path: path.into(),
            error,
        }
    }
}

fn location(path: &std::path::Path, member: &Option<String>) -> String {
    match member {
        Some(m) => format!("{}:{m}", path.display()),
        None => path.display().to_string(),
    }
}

fn printable(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}'", byte as char)
    } else if byte == b'\n' {
        "newline".into()
    } else {
        "non-printable".into()
    }
}

fn names_suffix(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}
