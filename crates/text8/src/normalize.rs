//! Turning arbitrary UTF-8 text into text8 form, with the character rules of
//! Matt Mahoney's `wikifil.pl` (the script that made Text8):
//!
//! - `A`-`Z` become `a`-`z` (ASCII only, as Perl's `tr/A-Z/a-z/`);
//! - each digit becomes its name between spaces (`1` -> ` one `);
//! - every other character (punctuation, newlines, any non-ASCII character) becomes a space;
//! - runs of spaces fold to one.
//!
//! Like Text8, the result starts with one space and does not end with one.
//! (The XML and wiki-markup stripping of `wikifil.pl` applies to Wikipedia
//! dumps only and is not done here.)

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Result, Text8Error};

const DIGITS: [&[u8]; 10] = [
    b"zero", b"one", b"two", b"three", b"four", b"five", b"six", b"seven", b"eight", b"nine",
];

/// Streaming normaliser: feed it bytes in any chunks, get text8 bytes out.
///
/// UTF-8 is validated across chunk boundaries; the first invalid byte is an
/// error carrying its offset in the whole stream.
#[derive(Debug, Default)]
pub struct Normalizer {
    /// Bytes consumed so far.
    offset: u64,
    /// An incomplete UTF-8 sequence carried from the previous chunk.
    pending: Vec<u8>,
    /// Whether anything was emitted.
    started: bool,
    /// Whether a space is owed before the next letter.
    space_owed: bool,
    /// Letters outside ASCII seen (they become spaces), and the first.
    dropped: (u64, Option<char>),
}

/// Offset (in `bytes`) of the first invalid UTF-8 byte, ignoring an
/// incomplete sequence at the very end; and how many trailing bytes are incomplete.
fn utf8_check(bytes: &[u8]) -> std::result::Result<usize, usize> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(0),
        Err(e) => match e.error_len() {
            Some(_) => Err(e.valid_up_to()),
            None => Ok(bytes.len() - e.valid_up_to()),
        },
    }
}

impl Normalizer {
    /// A normaliser at the start of a stream.
    pub fn new() -> Self {
        Normalizer::default()
    }

    fn emit_letter(&mut self, b: u8, out: &mut Vec<u8>) {
        if !self.started || self.space_owed {
            out.push(b' ');
        }
        self.started = true;
        self.space_owed = false;
        out.push(b);
    }

    fn emit_space(&mut self) {
        if self.started {
            self.space_owed = true;
        }
    }

    fn map_ascii(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'a'..=b'z' => self.emit_letter(b, out),
            b'A'..=b'Z' => self.emit_letter(b.to_ascii_lowercase(), out),
            b'0'..=b'9' => {
                self.emit_space();
                for &c in DIGITS[(b - b'0') as usize] {
                    self.emit_letter(c, out);
                }
                self.emit_space();
            }
            _ => self.emit_space(),
        }
    }

    /// Normalises the next chunk of the stream, appending to `out`.
    /// `Err(offset)` gives the offset of the first invalid UTF-8 byte in the stream.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), u64> {
        let joined;
        let (bytes, base) = if self.pending.is_empty() {
            (chunk, self.offset)
        } else {
            let mut j = std::mem::take(&mut self.pending);
            let base = self.offset - j.len() as u64;
            j.extend_from_slice(chunk);
            joined = j;
            (&joined[..], base)
        };
        let incomplete = utf8_check(bytes).map_err(|valid| base + valid as u64)?;
        let complete = &bytes[..bytes.len() - incomplete];
        let text = std::str::from_utf8(complete).expect("validated above");
        for c in text.chars() {
            if c.is_ascii() {
                self.map_ascii(c as u8, out);
            } else {
                if c.is_alphabetic() {
                    self.dropped.0 += 1;
                    self.dropped.1.get_or_insert(c);
                }
                self.emit_space();
            }
        }
        self.pending = bytes[bytes.len() - incomplete..].to_vec();
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Letters outside ASCII read so far (`é`, `ß`, `я`: text8 has no place
    /// for them, so they became spaces), and the first of them.
    pub fn letters_dropped(&self) -> (u64, Option<char>) {
        self.dropped
    }

    /// Ends the stream. `Err(offset)` if it ended inside a UTF-8 sequence.
    pub fn finish(self) -> std::result::Result<(), u64> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(self.offset - self.pending.len() as u64)
        }
    }
}

/// Normalises a whole string (always valid UTF-8).
pub fn normalize(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 1);
    let mut n = Normalizer::new();
    n.push(text.as_bytes(), &mut out)
        .expect("a str is valid UTF-8");
    n.finish().expect("a str is valid UTF-8");
    String::from_utf8(out).expect("normalised text is ASCII")
}

/// Summary of [`normalize_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalizeStats {
    /// Bytes read.
    pub bytes_in: u64,
    /// Characters written.
    pub chars_out: u64,
    /// Letters outside ASCII that became spaces, and the first of them.
    pub letters_dropped: (u64, Option<char>),
}

/// Normalises the file `input` into `output`, streaming, through an
/// [`AtomicFile`](crate::atomic::AtomicFile): a failure (such as invalid
/// UTF-8) leaves no partial output, and without `replace` an output that
/// appeared meanwhile is left as it is. An output named `.zip` is refused
/// (the text is written plain).
pub fn normalize_file(
    input: &Path,
    output: &Path,
    replace: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<NormalizeStats> {
    let mut reader = match File::open(input) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Text8Error::NotFound {
                path: input.to_path_buf(),
            });
        }
        Err(e) => return Err(Text8Error::io(input, e)),
    };
    if crate::corpus::named_zip(output) {
        // every reader would take it for an archive and refuse it
        return Err(Text8Error::Invalid(format!(
            "{}: named .zip, but the text is written plain, not as a zip archive: name it \
             .txt (a corpus may be a text file)",
            output.display()
        )));
    }
    let mut writer = crate::atomic::AtomicFile::create(output)?;
    let mut norm = Normalizer::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(1 << 21);
    let mut stats = NormalizeStats {
        bytes_in: 0,
        chars_out: 0,
        letters_dropped: (0, None),
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Text8Error::io(input, e)),
        };
        out.clear();
        norm.push(&buf[..n], &mut out).map_err(|offset| {
            if stats.bytes_in == 0 && starts_as_utf16(&buf) {
                Text8Error::Invalid(not_utf8_but_utf16(input))
            } else {
                Text8Error::NotUtf8 {
                    path: input.to_path_buf(),
                    offset,
                }
            }
        })?;
        writer.write_all(&out)?;
        stats.bytes_in += n as u64;
        stats.chars_out += out.len() as u64;
        progress(stats.bytes_in);
    }
    stats.letters_dropped = norm.letters_dropped();
    norm.finish().map_err(|offset| Text8Error::NotUtf8 {
        path: input.to_path_buf(),
        offset,
    })?;
    writer.commit(replace)?;
    Ok(stats)
}

/// Whether text starts with UTF-16's byte-order mark (either order): text
/// that is not UTF-8 and can be said to be what it is.
pub fn starts_as_utf16(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff])
}

/// The error for a file of UTF-16 text read as UTF-8.
pub fn not_utf8_but_utf16(path: &std::path::Path) -> String {
    format!(
        "{}: UTF-16 text (by its byte-order mark), not UTF-8; save it as UTF-8 first",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_wikifil_rules() {
        assert_eq!(normalize("Hello, World!"), " hello world");
        assert_eq!(
            normalize("In 1984 there were 2 cats."),
            " in one nine eight four there were two cats"
        );
        assert_eq!(normalize("  café\tnaïve\n\nX"), " caf na ve x");
        let mut n = Normalizer::new();
        n.push("café naïve Straße".as_bytes(), &mut vec![]).unwrap();
        assert_eq!(n.letters_dropped(), (3, Some('é')));
        assert_eq!(normalize("a1b"), " a one b");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("!!!"), "");
        assert_eq!(normalize("don't"), " don t");
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let text = "Zürich 2024 — «quoted» 東京 end".as_bytes();
        let whole = normalize(std::str::from_utf8(text).unwrap());
        for split in 0..text.len() {
            let mut n = Normalizer::new();
            let mut out = vec![];
            n.push(&text[..split], &mut out).unwrap();
            n.push(&text[split..], &mut out).unwrap();
            n.finish().unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), whole, "split at {split}");
        }
    }

    #[test]
    fn invalid_utf8_reports_its_offset_across_chunks() {
        let mut n = Normalizer::new();
        let mut out = vec![];
        n.push(b"abc\xe2\x82", &mut out).unwrap(); // incomplete euro sign, carried
        assert_eq!(n.push(b"x", &mut out), Err(3));
        let mut n = Normalizer::new();
        n.push(b"ab", &mut out).unwrap();
        assert_eq!(n.push(b"c\xff", &mut out), Err(3));
        let mut n = Normalizer::new();
        n.push(b"ab\xe2", &mut out).unwrap();
        assert_eq!(n.finish(), Err(2));
    }

    #[test]
    fn normalize_file_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        let output = dir.path().join("out.txt");
        std::fs::write(&input, b"Good text\xff bad").unwrap();
        let err = normalize_file(&input, &output, false, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("in.txt: invalid UTF-8 at byte offset 9"),
            "{err}"
        );
        assert!(!output.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&input, "Good text, 3 times.\n").unwrap();
        let stats = normalize_file(&input, &output, false, &mut |_| {}).unwrap();
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            " good text three times"
        );
        assert_eq!(stats.chars_out, 22);
        let corpus = crate::read_corpus(&output).unwrap();
        assert_eq!(corpus.len(), 22);
        // an output there by the end, without replace: left as it is, nothing else left
        let err = normalize_file(&input, &output, false, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("left as it is"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            " good text three times"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        normalize_file(&input, &output, true, &mut |_| {}).unwrap();
        // text under a zip's name would be refused by every reader: not written
        let zip = dir.path().join("out.ZIP");
        let err = normalize_file(&input, &zip, true, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("out.ZIP: named .zip"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            // PROPTEST_CASES runs longer fuzzing (docs/RELIABILITY.md)
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512),
        ))]
        /// Fuzz: any string normalises to valid text8 form (alphabet, single
        /// spaces, leading space, no trailing space), and normalising is idempotent.
        #[test]
        fn output_is_always_text8_form(s in any::<String>()) {
            let out = normalize(&s);
            prop_assert!(out.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
            prop_assert!(!out.contains("  "));
            if !out.is_empty() {
                prop_assert!(out.starts_with(' '));
                prop_assert!(!out.ends_with(' '));
            }
            prop_assert_eq!(normalize(&out), out.clone());
        }

        /// Fuzz: arbitrary bytes in arbitrary chunks either fail at the offset
        /// `std::str::from_utf8` reports or agree with the one-shot result.
        #[test]
        fn streaming_agrees_with_one_shot(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                         cut in 0usize..64) {
            let cut = cut.min(bytes.len());
            let mut n = Normalizer::new();
            let mut out = vec![];
            let r = n.push(&bytes[..cut], &mut out)
                .and_then(|_| n.push(&bytes[cut..], &mut out))
                .and_then(|_| n.finish());
            match std::str::from_utf8(&bytes) {
                Ok(s) => {
                    prop_assert!(r.is_ok());
                    prop_assert_eq!(String::from_utf8(out).unwrap(), normalize(s));
                }
                Err(e) => prop_assert_eq!(r, Err(e.valid_up_to() as u64)),
            }
        }
    }
}
