//! Reading a corpus in text8 form: a zip holding a single member, or a plain
//! text file, of the bytes `a`-`z` and space only.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Result, Text8Error};

/// A validated corpus as character ids (space 0, `a`..`z` 1..26).
#[derive(Debug, Clone)]
pub struct Corpus {
    /// One id per character, held once (parts of it are shared, not copied:
    /// [`crate::SharedIds`]).
    pub ids: Arc<Vec<u8>>,
    /// Where it was read from.
    pub source: PathBuf,
}

impl Corpus {
    /// [`Split::new`](crate::Split::new) of this corpus, its errors naming
    /// the file.
    pub fn split(&self, kind: crate::SplitKind) -> Result<crate::Split<'_>> {
        crate::Split::new(&self.ids, kind).map_err(|e| self.named(e))
    }

    /// `e`, an error about this corpus's text, with its file named first
    /// (a text too short: for what, and how much it has).
    pub fn named(&self, e: Text8Error) -> Text8Error {
        match e {
            Text8Error::TooShort {
                what,
                needed,
                found,
                unit,
            } => Text8Error::TooShort {
                what: format!("{}: {what}", self.source.display()),
                needed,
                found,
                unit,
            },
            other => other,
        }
    }

    /// Builds a corpus from text already in text8 form (tests, fixtures).
    pub fn from_text(text: &str) -> Result<Self> {
        let mut ids = Vec::with_capacity(text.len());
        push_ids(text.as_bytes(), 0, &mut ids, Path::new("<memory>"), None)?;
        Ok(Corpus {
            ids: Arc::new(ids),
            source: PathBuf::from("<memory>"),
        })
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no characters.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A 64-bit fingerprint of the ids, as 16 hex digits: two corpora of the
    /// same length but other text get other fingerprints, so a run can tell
    /// that it is resumed on the text it was trained on. (Not cryptographic:
    /// it guards against mistakes, not against an adversary.)
    pub fn fingerprint(&self) -> String {
        format!("{:016x}", fingerprint(&self.ids))
    }
}

/// 8 bytes at a time: xor, multiply by an odd constant, rotate; then the
/// length, and a final avalanche (splitmix64's). About 5 GB/s, so the 100 MB
/// of Text8 take some 20 ms.
fn fingerprint(ids: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3;
    let mut chunks = ids.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail))
        .wrapping_mul(K)
        .rotate_left(29);
    h ^= ids.len() as u64;
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Most characters a corpus may have: it is held in memory whole, one byte
/// a character (Text8 is 100 M).
pub const MAX_CORPUS_CHARS: u64 = 2 << 30;

/// How much larger than its zip a member may expand: English text deflates
/// to about a third, so 16x leaves room for any real corpus and stops a zip
/// bomb (a 3 MB archive of a 1 GB member) after 48 MB.
pub const MAX_ZIP_RATIO: u64 = 16;

/// Whether `path` is named as a zip archive (`.zip`, any case): read as
/// one, never written as text.
pub fn named_zip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// Whether the file starts like a zip archive (`PK\x03\x04`, or `PK\x05\x06` for an empty one).
fn looks_like_zip(path: &Path, file: &mut File) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        let k = file
            .read(&mut magic[n..])
            .map_err(|e| Text8Error::io(path, e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    file.rewind().map_err(|e| Text8Error::io(path, e))?;
    Ok(n == 4
        && magic[0] == b'P'
        && magic[1] == b'K'
        && matches!((magic[2], magic[3]), (3, 4) | (5, 6)))
}

/// Reads and validates a corpus: the single member of a zip archive, or a plain text file.
///
/// Every byte must be `a`-`z` or space; the first other byte is an error that
/// names the file (and member) and its offset.
pub fn read_corpus(path: &Path) -> Result<Corpus> {
    // a FIFO is refused before it is opened: opening one waits for a writer
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
        && !meta.is_dir()
    {
        return Err(Text8Error::Invalid(format!(
            "{}: not a regular file (a FIFO, socket or device); give a text8.zip or a text file",
            path.display()
        )));
    }
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Text8Error::NotFound {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(Text8Error::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| Text8Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Text8Error::Invalid(format!(
            "{}: is a directory, expected a text8.zip or a text file",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(Text8Error::Invalid(format!(
            "{}: not a regular file (a FIFO, socket or device); give a text8.zip or a text file",
            path.display()
        )));
    }
    if meta.len() > MAX_CORPUS_CHARS {
        return Err(Text8Error::Invalid(format!(
            "{}: {} bytes, more than the {MAX_CORPUS_CHARS} characters a corpus may have \
             (it is held in memory whole)",
            path.display(),
            meta.len()
        )));
    }
    let is_zip = looks_like_zip(path, &mut file)?;
    if !is_zip && named_zip(path) {
        // an error page or a damaged download named .zip: not text to check letter by letter
        return Err(Text8Error::Invalid(format!(
            "{}: named .zip but not a zip archive (it does not start with a zip header); \
             download it again, or give a text file",
            path.display()
        )));
    }
    let ids = if is_zip {
        let limit = MAX_CORPUS_CHARS.min(meta.len().saturating_mul(MAX_ZIP_RATIO).max(1 << 20));
        read_zip_member(path, file, limit)?
    } else {
        let mut ids = Vec::with_capacity(meta.len() as usize);
        read_stream(BufReader::new(file), path, None, MAX_CORPUS_CHARS, &mut ids)?;
        ids
    };
    if ids.is_empty() {
        return Err(Text8Error::Empty {
            path: path.to_path_buf(),
        });
    }
    if ids.iter().all(|&c| c == 0) {
        return Err(Text8Error::Invalid(format!(
            "{}: the corpus has no letters, only {} spaces: nothing to learn",
            path.display(),
            ids.len()
        )));
    }
    Ok(Corpus {
        ids: Arc::new(ids),
        source: path.to_path_buf(),
    })
}

/// Checks that `path` is a readable zip of exactly one file member and returns that member's name.
pub fn zip_single_member(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| Text8Error::io(path, e))?;
    let archive = open_zip(path, file)?;
    single_member(path, &archive).map(|(_, name)| name)
}

fn open_zip(path: &Path, file: File) -> Result<zip::ZipArchive<BufReader<File>>> {
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| Text8Error::Zip {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn single_member<R: Read + Seek>(
    path: &Path,
    archive: &zip::ZipArchive<R>,
) -> Result<(usize, String)> {
    let files: Vec<(usize, String)> = (0..archive.len())
        .filter_map(|i| {
            let name = match archive.name_for_index(i)? {
                Ok(n) => n.into_owned(),
                Err(_) => format!("<member {i}>"),
            };
            (!name.ends_with('/')).then_some((i, name))
        })
        .collect();
    if files.len() != 1 {
        return Err(Text8Error::ZipMembers {
            path: path.to_path_buf(),
            count: files.len(),
            names: files.iter().take(5).map(|(_, n)| n.clone()).collect(),
        });
    }
    Ok(files.into_iter().next().expect("one member"))
}

fn read_zip_member(path: &Path, file: File, limit: u64) -> Result<Vec<u8>> {
    let mut archive = open_zip(path, file)?;
    let (index, name) = single_member(path, &archive)?;
    let zip_err = |e: zip::result::ZipError| Text8Error::Zip {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let member = archive.by_index(index).map_err(zip_err)?;
    let mut ids = Vec::with_capacity(member.size().min(limit) as usize);
    read_stream(member, path, Some(&name), limit, &mut ids)?;
    Ok(ids)
}

/// Streams `reader` into `ids`, validating every byte; more than `limit`
/// bytes is an error.
fn read_stream<R: Read>(
    mut reader: R,
    path: &Path,
    member: Option<&str>,
    limit: u64,
    ids: &mut Vec<u8>,
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut offset = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A failed CRC or a broken deflate stream is a corrupt archive, not an I/O fault.
                return Err(match member {
                    Some(m) => Text8Error::Zip {
                        path: path.to_path_buf(),
                        reason: format!("member {m}: {e}"),
                    },
                    None => Text8Error::io(path, e),
                });
            }
        };
        if offset + n as u64 > limit {
            return Err(Text8Error::Invalid(format!(
                "{}: more than {limit} characters{}; a corpus is held in memory whole",
                match member {
                    Some(m) => format!("{}:{m}", path.display()),
                    None => path.display().to_string(),
                },
                match member {
                    Some(_) =>
                        format!(" (the member expands more than {MAX_ZIP_RATIO} times the archive)"),
                    None => String::new(),
                }
            )));
        }
        push_ids(&buf[..n], offset, ids, path, member)?;
        offset += n as u64;
    }
}

fn push_ids(
    bytes: &[u8],
    offset: u64,
    ids: &mut Vec<u8>,
    path: &Path,
    member: Option<&str>,
) -> Result<()> {
    ids.reserve(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        match tokenizer::byte_to_id(b) {
            Some(id) => ids.push(id),
            None => {
                return Err(Text8Error::BadByte {
                    path: path.to_path_buf(),
                    member: member.map(str::to_string),
                    offset: offset + i as u64,
                    byte: b,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::fs::File;
    use std::io::Write;
    use std::path::Path;

    /// Writes a deflated zip of the given members.
    pub(crate) fn write_zip(path: &Path, members: &[(&str, &[u8])]) {
        let file = File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::write_zip;
    use super::*;

    #[test]
    fn zip_bombs_fifos_and_space_only_corpora_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // a member that expands far more than text does
        let p = dir.path().join("bomb.zip");
        tests_support::write_zip(&p, &[("text8", &vec![b'a'; 40 << 20])]);
        let e = read_corpus(&p).unwrap_err().to_string();
        assert!(
            e.contains("bomb.zip:text8: more than") && e.contains("16 times"),
            "{e}"
        );
        let p = dir.path().join("spaces.txt");
        std::fs::write(&p, "      ").unwrap();
        let e = read_corpus(&p).unwrap_err().to_string();
        assert!(e.contains("no letters, only 6 spaces"), "{e}");
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            let ok = std::process::Command::new("mkfifo").arg(&fifo).status();
            if ok.is_ok_and(|s| s.success()) {
                // refused without opening it (which would wait for a writer)
                let e = read_corpus(&fifo).unwrap_err().to_string();
                assert!(e.contains("not a regular file"), "{e}");
            }
        }
    }

    #[test]
    fn fingerprints_tell_texts_of_one_length_apart() {
        let a = Corpus::from_text("the cat sat on the mat").unwrap();
        let b = Corpus::from_text("the cat sat on the hat").unwrap();
        let c = Corpus::from_text("the cat sat on the ma").unwrap();
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        // a trailing space is not the same text as none
        let d = Corpus::from_text("the cat sat on the mat ").unwrap();
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn reads_a_zip_member_and_a_plain_file_alike() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("c.zip");
        write_zip(&zip_path, &[("text8", b" the cat sat")]);
        let plain = dir.path().join("c.txt");
        std::fs::write(&plain, b" the cat sat").unwrap();
        let a = read_corpus(&zip_path).unwrap();
        let b = read_corpus(&plain).unwrap();
        assert_eq!(a.ids, b.ids);
        assert_eq!(&a.ids[..5], &[0, 20, 8, 5, 0]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            // PROPTEST_CASES runs longer fuzzing (docs/RELIABILITY.md)
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        ))]
        /// Fuzz: arbitrary bytes, as a plain file, as a zip member, or as a
        /// damaged zip, are read or rejected with an error; never a panic,
        /// and what is read holds only valid ids.
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                               flip in 0usize..400, with_pk in proptest::prelude::any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let plain = dir.path().join("plain");
            let mut data = bytes.clone();
            if with_pk && data.len() >= 4 {
                data[..4].copy_from_slice(b"PK\x03\x04");
            }
            std::fs::write(&plain, &data).unwrap();
            if let Ok(c) = read_corpus(&plain) {
                proptest::prop_assert!(c.ids.iter().all(|&i| i < 27));
            }
            let z = dir.path().join("z.zip");
            write_zip(&z, &[("text8", &bytes)]);
            let mut zipped = std::fs::read(&z).unwrap();
            if let Ok(c) = read_corpus(&z) {
                proptest::prop_assert_eq!(c.ids.len(), bytes.len());
            }
            let k = flip % zipped.len();
            zipped[k] ^= 0xA5;
            std::fs::write(&z, &zipped).unwrap();
            if let Ok(c) = read_corpus(&z) {
                proptest::prop_assert!(c.ids.iter().all(|&i| i < 27));
            }
        }
    }

    #[test]
    fn bad_byte_names_file_member_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("c.zip");
        write_zip(&zip_path, &[("text8", b"abc\nde")]);
        let err = read_corpus(&zip_path).unwrap_err();
        match &err {
            Text8Error::BadByte {
                offset,
                byte,
                member,
                ..
            } => {
                assert_eq!((*offset, *byte), (3, b'\n'));
                assert_eq!(member.as_deref(), Some("text8"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("c.zip:text8") && msg.contains("offset 3"),
            "{msg}"
        );
        let plain = dir.path().join("p.txt");
        std::fs::write(&plain, b"ok fine X").unwrap();
        let msg = read_corpus(&plain).unwrap_err().to_string();
        assert!(
            msg.contains("p.txt") && msg.contains("offset 8") && msg.contains("'X'"),
            "{msg}"
        );
    }
}
