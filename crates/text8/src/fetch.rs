//! Finding the corpus, or downloading it.
//!
//! A download goes to a temporary file beside the target and is renamed into
//! place only after its length matches the announced `Content-Length`, its
//! size matches the expected size (31,344,016 bytes for Text8) and it opens
//! as a zip of one member. A failed, short or long download leaves nothing
//! at the target path, so a retry starts clean.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Result, Text8Error};

/// Where the notebook downloads Text8 from.
pub const TEXT8_URL: &str = "http://mattmahoney.net/dc/text8.zip";
/// Size of the canonical `text8.zip` in bytes.
pub const TEXT8_SIZE: u64 = 31_344_016;
/// File name of the canonical archive.
pub const TEXT8_FILE: &str = "text8.zip";

/// What the user asked for with `--data` (or nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// `datasets/text8.zip` if present (checked for the canonical size), else
    /// download it from [`TEXT8_URL`].
    Default {
        /// The datasets folder.
        datasets_dir: PathBuf,
    },
    /// A local file, used as it is.
    Path(PathBuf),
    /// A URL to download into `datasets_dir` (kept there for the next run).
    Url {
        /// The URL.
        url: String,
        /// Where downloads land.
        datasets_dir: PathBuf,
        /// Size the file must have, when known.
        expected_size: Option<u64>,
    },
}

impl DataSource {
    /// Interprets a `--data` value: `http://` and `https://` are URLs, anything else a path.
    pub fn parse(data: Option<&str>, datasets_dir: &Path) -> Self {
        match data {
            None => DataSource::Default {
                datasets_dir: datasets_dir.to_path_buf(),
            },
            Some(s) if s.starts_with("http://") || s.starts_with("https://") => DataSource::Url {
                url: s.to_string(),
                datasets_dir: datasets_dir.to_path_buf(),
                expected_size: (s == TEXT8_URL).then_some(TEXT8_SIZE),
            },
            Some(s) => DataSource::Path(PathBuf::from(s)),
        }
    }
}

/// Progress of a download, for the caller to display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// The file is already here; nothing to download.
    Found(PathBuf),
    /// The response arrived; `total` is the announced length, if any.
    Started {
        /// The URL.
        url: String,
        /// Content-Length, when the server sent one.
        total: Option<u64>,
    },
    /// Bytes received so far.
    Progress(u64),
    /// The file is complete and in place.
    Done(PathBuf),
}

/// Resolves a data source to a local file, downloading it if needed.
pub fn resolve(source: &DataSource, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
    match source {
        DataSource::Path(p) => {
            if !p.exists() {
                return Err(Text8Error::NotFound { path: p.clone() });
            }
            Ok(p.clone())
        }
        DataSource::Default { datasets_dir } => {
            let target = datasets_dir.join(TEXT8_FILE);
            if target.exists() {
                check_size(&target, TEXT8_SIZE).map_err(|e| match e {
                    Text8Error::WrongSize {
                        expected, found, ..
                    } => Text8Error::WrongSize {
                        what: format!(
                            "{} (not the canonical text8.zip; delete it to download again, \
                             or pass it with --data to use it as it is)",
                            target.display()
                        ),
                        expected,
                        found,
                    },
                    other => other,
                })?;
                progress(FetchEvent::Found(target.clone()));
                return Ok(target);
            }
            fetch(TEXT8_URL, &target, Some(TEXT8_SIZE), progress)?;
            Ok(target)
        }
        DataSource::Url {
            url,
            datasets_dir,
            expected_size,
        } => {
            let name = url
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty() && !n.contains(['?', '#']))
                .unwrap_or(TEXT8_FILE);
            let target = datasets_dir.join(name);
            if target.exists() {
                if let Some(size) = expected_size {
                    check_size(&target, *size)?;
                }
                progress(FetchEvent::Found(target.clone()));
                return Ok(target);
            }
            fetch(url, &target, *expected_size, progress)?;
            Ok(target)
        }
    }
}

fn check_size(path: &Path, expected: u64) -> Result<()> {
    let found = std::fs::metadata(path)
        .map_err(|e| Text8Error::io(path, e))?
        .len();
    if found != expected {
        return Err(Text8Error::WrongSize {
            what: path.display().to_string(),
            expected,
            found,
        });
    }
    Ok(())
}

/// Removes the temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Downloads `url` to `target`, atomically.
///
/// The body streams into `target` + `.part` (in the same folder), which is
/// checked (announced length, `expected_size`, a zip of one member when the
/// target ends in `.zip`), flushed to disk and only then renamed to `target`.
pub fn fetch(
    url: &str,
    target: &Path,
    expected_size: Option<u64>,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    if url.starts_with("https://") && !cfg!(feature = "https") {
        return Err(Text8Error::UnsupportedUrl {
            url: url.to_string(),
            reason: "https needs the `https` cargo feature (cargo build --features https); \
                     the canonical Text8 URL is plain http"
                .into(),
        });
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(Text8Error::UnsupportedUrl {
            url: url.to_string(),
            reason: "expected an http:// or https:// URL".into(),
        });
    }
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Text8Error::io(dir, e))?;

    let http_err = |reason: String| Text8Error::Http {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("charlstm/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| http_err(describe_ureq(e)))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Text8Error::HttpStatus {
            url: url.to_string(),
            status,
        });
    }
    let announced = response.body().content_length();
    if let (Some(len), Some(expected)) = (announced, expected_size)
        && len != expected
    {
        return Err(Text8Error::WrongSize {
            what: format!("GET {url} (Content-Length)"),
            expected,
            found: len,
        });
    }
    progress(FetchEvent::Started {
        url: url.to_string(),
        total: announced.or(expected_size),
    });

    let part = target.with_file_name(format!(
        "{}.part",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(TEXT8_FILE)
    ));
    let mut guard = TempGuard(Some(part.clone()));
    let mut out = File::create(&part).map_err(|e| Text8Error::io(&part, e))?;
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let mut last_report = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(match announced {
                    Some(expected) if received < expected => Text8Error::Truncated {
                        url: url.to_string(),
                        expected,
                        received,
                    },
                    _ => http_err(format!("reading the body after {received} bytes: {e}")),
                });
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| Text8Error::io(&part, e))?;
        received += n as u64;
        if received - last_report >= 1 << 20 {
            progress(FetchEvent::Progress(received));
            last_report = received;
        }
    }
    progress(FetchEvent::Progress(received));
    if let Some(expected) = announced
        && received != expected
    {
        return Err(Text8Error::Truncated {
            url: url.to_string(),
            expected,
            received,
        });
    }
    if let Some(expected) = expected_size
        && received != expected
    {
        return Err(Text8Error::WrongSize {
            what: format!("GET {url}"),
            expected,
            found: received,
        });
    }
    out.sync_all().map_err(|e| Text8Error::io(&part, e))?;
    drop(out);
    if target
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        crate::corpus::zip_single_member(&part).map_err(|e| Text8Error::Http {
            url: url.to_string(),
            reason: format!("the downloaded file is not a usable zip: {e}"),
        })?;
    }
    std::fs::rename(&part, target).map_err(|e| Text8Error::io(target, e))?;
    guard.0 = None;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    log::info!(
        "downloaded {url} to {} ({received} bytes)",
        target.display()
    );
    progress(FetchEvent::Done(target.to_path_buf()));
    Ok(())
}

fn describe_ureq(e: ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::HostNotFound => "host not found (is the network reachable?)".into(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How the test server answers.
    #[derive(Clone)]
    enum Reply {
        /// 200 with the body and a correct Content-Length.
        Ok(Vec<u8>),
        /// 200 with the body and no Content-Length (connection close ends it).
        NoLength(Vec<u8>),
        /// An error status.
        Status(u16),
        /// Announces `announced` bytes, sends the body, closes.
        Lying { body: Vec<u8>, announced: usize },
    }

    /// A one-thread HTTP/1.1 server on 127.0.0.1 answering every request with the
    /// reply of its index (the last reply repeats). Returns the base URL and a hit counter.
    fn serve(replies: Vec<Reply>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let hits2 = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let k = hits2.fetch_add(1, Ordering::SeqCst);
                let reply = replies[k.min(replies.len() - 1)].clone();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let (head, body) = match reply {
                    Reply::Ok(b) => (
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", b.len()),
                        b,
                    ),
                    Reply::NoLength(b) => ("HTTP/1.1 200 OK\r\n".to_string(), b),
                    Reply::Status(s) => (
                        format!("HTTP/1.1 {s} Nope\r\nContent-Length: 0\r\n"),
                        vec![],
                    ),
                    Reply::Lying { body, announced } => (
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n"),
                        body,
                    ),
                };
                let _ = stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
                let _ = stream.write_all(&body);
                let _ = stream.flush();
            }
        });
        (format!("http://{addr}/text8.zip"), hits)
    }

    fn small_zip() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.zip");
        crate::corpus::tests_support::write_zip(&p, &[("text8", b" a small corpus")]);
        std::fs::read(p).unwrap()
    }

    fn no_files_but(dir: &Path, allowed: &[&str]) {
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for n in &names {
            assert!(
                allowed.contains(&n.as_str()),
                "unexpected file {n} in {names:?}"
            );
        }
    }

    #[test]
    fn downloads_atomically_and_reports_progress() {
        let body = small_zip();
        let (url, _) = serve(vec![Reply::Ok(body.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        let mut events = vec![];
        fetch(&url, &target, Some(body.len() as u64), &mut |e| {
            events.push(e)
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);
        assert!(
            matches!(events[0], FetchEvent::Started { total: Some(n), .. } if n == body.len() as u64)
        );
        assert_eq!(events.last(), Some(&FetchEvent::Done(target.clone())));
        no_files_but(dir.path(), &["text8.zip"]);
        let corpus = crate::read_corpus(&target).unwrap();
        assert_eq!(corpus.len(), 15);
    }

    #[test]
    fn http_404_leaves_nothing() {
        let (url, _) = serve(vec![Reply::Status(404)]);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        let err = fetch(&url, &target, None, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, Text8Error::HttpStatus { status: 404, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("404") && err.to_string().contains(&url));
        no_files_but(dir.path(), &[]);
    }

    #[test]
    fn short_body_leaves_nothing_and_a_retry_works() {
        let body = small_zip();
        let (url, hits) = serve(vec![
            Reply::Lying {
                body: body[..body.len() / 2].to_vec(),
                announced: body.len(),
            },
            Reply::Ok(body.clone()),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        let err = fetch(&url, &target, None, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Text8Error::Truncated { .. }), "{err}");
        no_files_but(dir.path(), &[]);
        fetch(&url, &target, None, &mut |_| {}).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn wrong_size_leaves_nothing() {
        let body = small_zip();
        // announced correctly, but not the size the caller expects
        let (url, _) = serve(vec![Reply::Ok(body.clone()), Reply::NoLength(body.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        let err = fetch(&url, &target, Some(TEXT8_SIZE), &mut |_| {}).unwrap_err();
        match &err {
            Text8Error::WrongSize {
                expected, found, ..
            } => {
                assert_eq!((*expected, *found), (TEXT8_SIZE, body.len() as u64))
            }
            other => panic!("{other}"),
        }
        // without Content-Length the size is checked after the body
        let err = fetch(&url, &target, Some(TEXT8_SIZE), &mut |_| {}).unwrap_err();
        assert!(matches!(err, Text8Error::WrongSize { .. }), "{err}");
        no_files_but(dir.path(), &[]);
    }

    #[test]
    fn body_longer_than_announced_is_not_a_good_file() {
        let body = small_zip();
        // the announced prefix is not a complete zip: rejected, nothing left behind
        let (url, _) = serve(vec![Reply::Lying {
            body: [body.clone(), body.clone()].concat(),
            announced: body.len() - 10,
        }]);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        let err = fetch(&url, &target, None, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("not a usable zip"), "{err}");
        no_files_but(dir.path(), &[]);
    }

    #[test]
    fn connection_refused_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        let url = format!("http://127.0.0.1:{port}/text8.zip");
        let err = fetch(&url, &target, None, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Text8Error::Http { .. }), "{err}");
        assert!(err.to_string().contains(&url));
        no_files_but(dir.path(), &[]);
    }

    #[test]
    fn default_source_uses_a_present_canonical_file_or_rejects_a_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let source = DataSource::parse(None, dir.path());
        std::fs::write(dir.path().join("text8.zip"), b"PK\x05\x06 too small").unwrap();
        let err = resolve(&source, &mut |_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("expected 31344016 bytes, found 14"), "{msg}");
        assert!(msg.contains("delete it to download again"), "{msg}");
    }

    #[test]
    fn url_source_downloads_into_the_datasets_folder_once() {
        let body = small_zip();
        let (url, hits) = serve(vec![Reply::Ok(body.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let source = DataSource::parse(Some(&url), dir.path());
        let path = resolve(&source, &mut |_| {}).unwrap();
        assert_eq!(path, dir.path().join("text8.zip"));
        let mut events = vec![];
        assert_eq!(resolve(&source, &mut |e| events.push(e)).unwrap(), path);
        assert_eq!(events, vec![FetchEvent::Found(path)]);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn missing_path_and_https_without_feature_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(
            &DataSource::parse(Some("/no/such/corpus.zip"), dir.path()),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("/no/such/corpus.zip: no such file"),
            "{err}"
        );
        if !cfg!(feature = "https") {
            let err = fetch(
                "https://example.invalid/x.zip",
                &dir.path().join("x.zip"),
                None,
                &mut |_| {},
            )
            .unwrap_err();
            assert!(err.to_string().contains("`https` cargo feature"), "{err}");
        }
    }
}
