//! Finding the corpus, or downloading it.
//!
//! A download goes to a temporary file beside the target and is renamed into
//! place only after its length matches the announced `Content-Length`, its
//! size matches the expected size (31,344,016 bytes for Text8) and it opens
//! as a zip of one member. A failed, short or long download leaves nothing
//! at the target path, so a retry starts clean.
//!
//! Every download is bounded ([`Limits`]): in size (the expected size, or
//! 2 GiB when none is known, checked against `Content-Length` before the
//! body and against the bytes as they arrive), in time per read, and in
//! rate (a server trickling bytes is given up on). Each download streams
//! into a `.part` file of its own; those of killed downloads are removed by
//! the next download of the same file.

use std::ffi::OsStr;
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

/// Bounds of a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes read when the size is not known in advance.
    pub max_bytes: u64,
    /// Longest wait for the connection, the response, or any single read.
    pub read_timeout: Duration,
    /// The rate below which a download is abandoned: fewer than
    /// `min_bytes_per_window` bytes in any `window`.
    pub window: Duration,
    /// See `window`.
    pub min_bytes_per_window: u64,
}

impl Default for Limits {
    /// 2 GiB; 60 s per read; at least 64 KiB in every minute (a 31 MB Text8
    /// at that rate would take 8 hours: anything slower is a stalled server).
    fn default() -> Self {
        Limits {
            max_bytes: 2 << 30,
            read_timeout: Duration::from_secs(60),
            window: Duration::from_secs(60),
            min_bytes_per_window: 64 << 10,
        }
    }
}

/// Folders of a URL's path kept in the name it is saved as: deeper paths
/// are refused (a bound on the folders a download makes).
const MAX_URL_FOLDERS: usize = 8;

/// `url` as messages show it: a password in it (`http://user:pw@host/`)
/// and its query (`?token=...`, where signed URLs keep their keys)
/// replaced by `***`. The request itself sends them.
pub fn shown_url(url: &str) -> String {
    let Some(UrlParts {
        scheme,
        user,
        host,
        rest,
    }) = UrlParts::of(url)
    else {
        return url.to_string();
    };
    let user = match user {
        Some(u) if u.contains(':') => format!("{}:***@", u.split(':').next().unwrap_or_default()),
        Some(u) => format!("{u}@"),
        None => String::new(),
    };
    let rest = match rest.split_once('?') {
        Some((path, _)) => format!("{path}?***"),
        None => rest.to_string(),
    };
    format!("{scheme}://{user}{host}{rest}")
}

/// A URL's parts around its authority, `SCHEME://USER@HOST` then `REST`
/// (the path, query and fragment, from the first `/`, `?` or `#`): where
/// the user info ends and the host begins is read in this one place.
struct UrlParts<'a> {
    scheme: &'a str,
    /// The user name and password (`user:pw`), without the `@`.
    user: Option<&'a str>,
    /// With its port, if any.
    host: &'a str,
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> Option<Self> {
        let (scheme, after) = url.split_once("://")?;
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (user, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        };
        Some(UrlParts {
            scheme,
            user,
            host,
            rest,
        })
    }
}

/// The file a URL is saved as, under `datasets_dir`: the canonical Text8 URL
/// as `text8.zip`, any other as `<host>/<path>` (query and fragment
/// ignored), so that one name from two hosts, or from two folders of one
/// host, are two files. A URL whose path names no file, or whose folders
/// are not plain names, is an error.
pub fn download_path(url: &str, datasets_dir: &Path) -> Result<PathBuf> {
    if url == TEXT8_URL {
        return Ok(datasets_dir.join(TEXT8_FILE));
    }
    let bad = |reason: &str| Text8Error::UnsupportedUrl {
        url: shown_url(url),
        reason: reason.to_string(),
    };
    let parts = UrlParts::of(url)
        .filter(|p| matches!(p.scheme, "http" | "https"))
        .ok_or_else(|| bad("expected an http:// or https:// URL"))?;
    // the host without user info; the port stays (another server)
    let host = parts.host;
    // the path without query and fragment, nor its first `/`
    let path = parts.rest.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_prefix('/').unwrap_or(path);
    // an IPv6 literal, `[::1]:8080`, has colons of its own inside brackets
    let ipv6 = host.strip_prefix('[').and_then(|h| h.split_once(']'));
    let port = match ipv6 {
        Some((_, after)) => after.strip_prefix(':'),
        None => host.rsplit_once(':').map(|(_, port)| port),
    };
    // digits only, without leading zeros: `+80` and `080` would name
    // another folder for the same server
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit())
            && !port.starts_with('0')
            && port.parse::<u16>().is_ok())
    {
        return Err(bad(&format!(
            "the port {port:?} is not a number from 1 to 65535"
        )));
    }
    // the folders of the path (empty ones, `a//b`, skipped), then the name
    let (folders, name) = path.rsplit_once('/').unwrap_or(("", path));
    let folders: Vec<&str> = folders.split('/').filter(|f| !f.is_empty()).collect();
    let safe = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%' | '+'))
    };
    // the host's folder, its port after `_`: `mirror.net:8080` is
    // `mirror.net_8080`; an IPv6 literal in its one written form (RFC 5952,
    // so that `[0::1]` and `[::1]` are one server), its colons `-`, after
    // `ipv6_` (no brackets: a shell would take them for a pattern):
    // `[::1]:8080` is `ipv6_--1_8080`
    let host = match ipv6 {
        Some((ip, after)) => match ip.parse::<std::net::Ipv6Addr>() {
            Ok(ip) if after.is_empty() || port.is_some() => {
                let port = port.map_or(String::new(), |port| format!("_{port}"));
                format!("ipv6_{}{port}", ip.to_string().replace(':', "-"))
            }
            _ => String::new(),
        },
        None => host.replace(':', "_"),
    };
    if !safe(&host) {
        return Err(bad("the host part is empty or unusual"));
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad(
            "the URL's path names no file to save (it must end in a file name, such as .../text8.zip)",
        ));
    }
    if !safe(name) {
        return Err(bad(&format!(
            "the URL's file name {name:?} is not a plain name to save it under (ASCII letters, \
             digits and . - _ % +)"
        )));
    }
    if let Some(folder) = folders.iter().find(|f| !safe(f)) {
        return Err(bad(&format!(
            "the URL's folder {folder:?} is not a plain name to save it under"
        )));
    }
    if folders.len() > MAX_URL_FOLDERS {
        return Err(bad(&format!(
            "the URL's path has {} folders, more than the {MAX_URL_FOLDERS} kept in the name \
             it is saved as",
            folders.len()
        )));
    }
    let mut path = datasets_dir.join(host);
    path.extend(folders);
    Ok(path.join(name))
}

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

/// `s` with its scheme and host in lower case where it starts as a URL
/// does (`SCHEME://`, the scheme a letter then at least one more of
/// letters, digits, `+`, `-` or `.`; one letter is a Windows drive,
/// `C://x`): `HTTP://Example.ORG/A.zip` is `http://example.org/A.zip`
/// (both are case-blind, so one server's file is kept once, and the
/// canonical URL in any case is the canonical URL), the user name, password
/// and path as given; and `ftp://x` a URL this crate refuses by name, not
/// a path that does not exist.
fn as_url(s: &str) -> Option<String> {
    let parts = UrlParts::of(s)?;
    let mut chars = parts.scheme.chars();
    let is_scheme = parts.scheme.len() >= 2
        && chars.next()?.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return None;
    }
    Some(format!(
        "{}://{}{}{}",
        parts.scheme.to_ascii_lowercase(),
        parts.user.map(|u| format!("{u}@")).unwrap_or_default(),
        parts.host.to_ascii_lowercase(),
        parts.rest
    ))
}

impl DataSource {
    /// Interprets a `--data` value: a value that starts as a URL does
    /// (`http://`, `HTTPS://`, `ftp://`) is a URL, anything else a path
    /// (one that is not UTF-8 too).
    pub fn parse<S: AsRef<OsStr> + ?Sized>(data: Option<&S>, datasets_dir: &Path) -> Self {
        match data.map(AsRef::as_ref) {
            None => DataSource::Default {
                datasets_dir: datasets_dir.to_path_buf(),
            },
            Some(s) => match s.to_str().and_then(as_url) {
                Some(url) => DataSource::Url {
                    expected_size: (url == TEXT8_URL).then_some(TEXT8_SIZE),
                    url,
                    datasets_dir: datasets_dir.to_path_buf(),
                },
                None => DataSource::Path(PathBuf::from(s)),
            },
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
        DataSource::Path(p) => match std::fs::metadata(p) {
            Ok(_) => Ok(p.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Text8Error::NotFound { path: p.clone() })
            }
            // a symlink loop, a folder without permission: the OS says which
            Err(e) => Err(Text8Error::io(p, e)),
        },
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
            let target = download_path(url, datasets_dir)?;
            if std::fs::symlink_metadata(&target).is_ok() {
                if let Some(size) = expected_size {
                    check_size(&target, *size)?;
                }
                // what a download must be to be kept, a file put there too
                check_usable(&target, &target).map_err(|reason| {
                    Text8Error::Invalid(format!(
                        "{}: the copy of {} kept here is {reason}; delete it to download \
                         again",
                        target.display(),
                        shown_url(url)
                    ))
                })?;
                progress(FetchEvent::Found(target.clone()));
                return Ok(target);
            }
            fetch(url, &target, *expected_size, progress)?;
            Ok(target)
        }
    }
}

/// Why the file at `path`, kept as `name` (a `.zip`, or text), is no
/// usable corpus, if it is not: a regular file (or a link to one; never a
/// FIFO or a folder) holding a zip of one member, or text in text8 form.
fn check_usable(path: &Path, name: &Path) -> std::result::Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err("not a regular file (a FIFO, device or folder)".into()),
        Err(e) => return Err(e.to_string()),
    }
    if name
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        crate::corpus::zip_single_member(path).map_err(|e| format!("not a usable zip: {e}"))?;
    } else {
        crate::corpus::read_corpus(path).map_err(|e| format!("not a corpus in text8 form: {e}"))?;
    }
    Ok(())
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
/// The body streams into a `.part` file of its own beside `target`, which is
/// checked (announced length, `expected_size`, a zip of one member when the
/// target ends in `.zip`), flushed to disk and only then renamed to `target`.
pub fn fetch(
    url: &str,
    target: &Path,
    expected_size: Option<u64>,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    fetch_with(url, target, expected_size, &Limits::default(), progress)
}

/// Why this build cannot GET `url` (a URL with its scheme in lower case),
/// if it cannot.
fn fetchable(url: &str) -> std::result::Result<(), String> {
    if url.starts_with("https://") && !cfg!(feature = "https") {
        return Err(
            "https needs the `https` cargo feature (cargo build --features https); \
                    the canonical Text8 URL is plain http"
                .into(),
        );
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err("expected an http:// or https:// URL".into());
    }
    Ok(())
}

/// Redirects a download follows (ureq's default bound).
const MAX_REDIRECTS: usize = 10;

/// The URL a redirect's `Location` names, read against the URL that
/// answered with it as RFC 3986 (5.2) reads a reference against its base:
/// absolute (its scheme folded to lower case), scheme-relative
/// (`//host/path`), host-relative (`/path`), relative to the answering
/// URL's folder (`file.zip`, `../dc/file.zip`) or a query of its path
/// (`?v=2`), dot segments removed. Fragments are dropped: they are never sent.
fn redirected_url(from: &str, location: &str) -> String {
    let location = location.split('#').next().unwrap_or_default();
    let scheme_end = location.find(':').filter(|&i| {
        let scheme = &location[..i];
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let from = from.split('#').next().unwrap_or_default();
    let Some(base) = UrlParts::of(from) else {
        return location.to_string();
    };
    let absolute = match scheme_end {
        Some(i) => Some(location[..i].to_ascii_lowercase() + &location[i..]),
        None if location.starts_with("//") => Some(format!("{}:{location}", base.scheme)),
        None => None,
    };
    if let Some(absolute) = absolute {
        return match UrlParts::of(&absolute) {
            Some(to) => with_path(&to, to.rest),
            None => absolute,
        };
    }
    let (base_path, base_query) = split_query(base.rest);
    if location.is_empty() {
        return with_path(&base, &format!("{base_path}{base_query}"));
    }
    if location.starts_with('?') {
        return with_path(&base, &format!("{base_path}{location}"));
    }
    if location.starts_with('/') {
        return with_path(&base, location);
    }
    let folder = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
    with_path(&base, &format!("{folder}{location}"))
}

/// `url`'s scheme, user and host with `rest` (a path from `/`, or empty,
/// then a query), the path's dot segments removed.
fn with_path(url: &UrlParts<'_>, rest: &str) -> String {
    let (path, query) = split_query(rest);
    let mut kept: Vec<&str> = vec![];
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    kept.pop();
                }
                if i + 1 == segments.len() {
                    kept.push(""); // `a/..` is the folder `/`, as `a/.` is `a/`
                }
            }
            other => kept.push(other),
        }
    }
    let path = if path.is_empty() {
        String::new()
    } else {
        format!("/{}", kept.join("/"))
    };
    let user = url.user.map(|u| format!("{u}@")).unwrap_or_default();
    format!("{}://{user}{}{path}{query}", url.scheme, url.host)
}

/// A URL's path and its query (from the `?` on, or empty).
fn split_query(rest: &str) -> (&str, &str) {
    rest.split_at(rest.find('?').unwrap_or(rest.len()))
}

/// GETs `url`, following redirects here rather than in ureq, so that one to
/// a URL this build cannot fetch (`file://`, or `https://` without the
/// feature) is refused by name. Returns the response and the URL that gave
/// it; an error after a redirect names the URL it was redirected to.
fn get_following_redirects(
    agent: &ureq::Agent,
    url: &str,
) -> std::result::Result<(ureq::http::Response<ureq::Body>, String), String> {
    let mut current = url.to_string();
    let redirected = |current: &str, reason: String| {
        if current == url {
            reason
        } else {
            format!("redirected to {}: {reason}", shown_url(current))
        }
    };
    for _ in 0..=MAX_REDIRECTS {
        let response = agent
            .get(&current)
            .call()
            .map_err(|e| redirected(&current, describe_ureq(e)))?;
        // the statuses ureq follows; any other is the answer
        if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
            return Ok((response, current));
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                format!(
                    "{} from {} with no readable Location",
                    response.status().as_u16(),
                    shown_url(&current)
                )
            })?;
        let next = redirected_url(&current, location);
        fetchable(&next).map_err(|reason| redirected(&next, reason))?;
        current = next;
    }
    Err(format!(
        "more than {MAX_REDIRECTS} redirects (the last to {})",
        shown_url(&current)
    ))
}

/// [`fetch`] within `limits`.
pub fn fetch_with(
    url: &str,
    target: &Path,
    expected_size: Option<u64>,
    limits: &Limits,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    if let Err(reason) = fetchable(url) {
        return Err(Text8Error::UnsupportedUrl {
            url: shown_url(url),
            reason,
        });
    }
    let dir = crate::atomic::folder_of(target);
    let created = missing_folders(dir);
    crate::atomic::create_folders(dir).map_err(|e| Text8Error::io(dir, e))?;
    let result = download(url, target, expected_size, limits, progress);
    if result.is_err() {
        // a failed download leaves no empty `datasets/HOST/` behind; a
        // folder that holds anything (another download) is kept
        for folder in &created {
            let _ = std::fs::remove_dir(folder);
        }
    }
    result
}

/// The folders of `dir` that do not exist yet, `dir` first.
fn missing_folders(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect()
}

/// Whether a read of the body failed for want of data within the read
/// timeout (ureq wraps its own timeout in the `io::Error`).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// The file a download of `target` streams into, beside it:
/// `.NAME.part-PID-N`, one a download, so that two processes fetching one
/// file at once (two runs started together) each write their own; each
/// checks its copy and renames it over the target, and the later rename
/// replaces the same bytes.
fn part_path(target: &Path) -> PathBuf {
    static DOWNLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = DOWNLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    target.with_file_name(format!("{}{}-{n}", part_prefix(target), std::process::id()))
}

/// `.NAME.part-`: the start of the name of every download of `target`.
fn part_prefix(target: &Path) -> String {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.part-")
}

/// Creates the `.part` file of a download in `dir`. The folder is made
/// again where it is gone: another process's failed download removes the
/// empty folder it made, which may be this one's until its `.part` exists.
fn create_part(part: &Path, dir: &Path) -> Result<File> {
    let mut tries = 0;
    loop {
        match File::create(part) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => {
                tries += 1;
                crate::atomic::create_folders(dir).map_err(|e| Text8Error::io(dir, e))?;
            }
            other => return other.map_err(|e| Text8Error::io(part, e)),
        }
    }
}

/// The body of [`fetch_with`], into `target`'s existing folder.
fn download(
    url: &str,
    target: &Path,
    expected_size: Option<u64>,
    limits: &Limits,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    let dir = crate::atomic::folder_of(target);
    // the URL as messages show it
    let shown = shown_url(url);
    let http_err = |reason: String| Text8Error::Http {
        url: shown.clone(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(limits.read_timeout))
        .timeout_recv_response(Some(limits.read_timeout))
        .timeout_per_read(Some(limits.read_timeout))
        .user_agent(concat!("charlstm/", env!("CARGO_PKG_VERSION")))
        .max_redirects(0)
        .build()
        .into();
    let (response, answered) = get_following_redirects(&agent, url).map_err(http_err)?;
    let status = response.status().as_u16();
    if status != 200 {
        let url = if answered == url {
            shown.clone()
        } else {
            format!("{shown} (redirected to {})", shown_url(&answered))
        };
        return Err(Text8Error::HttpStatus { url, status });
    }
    let announced = response.body().content_length();
    if let (Some(len), Some(expected)) = (announced, expected_size)
        && len != expected
    {
        return Err(Text8Error::WrongSize {
            what: format!("GET {shown} (Content-Length)"),
            expected,
            found: len,
        });
    }
    let max_bytes = expected_size.unwrap_or(limits.max_bytes);
    if let Some(len) = announced
        && len > max_bytes
    {
        return Err(http_err(format!(
            "the server announces {len} bytes, more than the {max_bytes} this download takes"
        )));
    }
    progress(FetchEvent::Started {
        url: shown.clone(),
        total: announced.or(expected_size),
    });

    crate::atomic::remove_dead_files(target, &part_prefix(target));
    let part = part_path(target);
    let mut guard = TempGuard(Some(part.clone()));
    let mut out = create_part(&part, dir)?;
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let mut last_report = 0u64;
    let (mut window_start, mut window_bytes) = (std::time::Instant::now(), 0u64);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // a server that stops sending: said as a wait, not as a short body
            Err(e) if is_timeout(&e) => {
                return Err(http_err(format!(
                    "no data for {:?} after {received}{} bytes; try again later, or \
                     download the file yourself and pass it with --data",
                    limits.read_timeout,
                    announced.map(|a| format!(" of {a}")).unwrap_or_default()
                )));
            }
            Err(e) => {
                return Err(match announced {
                    Some(expected) if received < expected => Text8Error::Truncated {
                        url: shown.clone(),
                        expected,
                        received,
                    },
                    _ => http_err(format!("reading the body after {received} bytes: {e}")),
                });
            }
        };
        if received + n as u64 > max_bytes {
            return Err(http_err(format!(
                "the body goes on past {max_bytes} bytes, the most this download takes"
            )));
        }
        out.write_all(&buf[..n])
            .map_err(|e| Text8Error::io(&part, e))?;
        received += n as u64;
        window_bytes += n as u64;
        if window_start.elapsed() >= limits.window {
            if window_bytes < limits.min_bytes_per_window {
                return Err(http_err(format!(
                    "too slow: {window_bytes} bytes in the last {:.0} s (after {received} bytes); \
                     try again later, or download the file yourself and pass it with --data",
                    window_start.elapsed().as_secs_f64()
                )));
            }
            (window_start, window_bytes) = (std::time::Instant::now(), 0);
        }
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
            url: shown.clone(),
            expected,
            received,
        });
    }
    if let Some(expected) = expected_size
        && received != expected
    {
        return Err(Text8Error::WrongSize {
            what: format!("GET {shown}"),
            expected,
            found: received,
        });
    }
    out.sync_all().map_err(|e| Text8Error::io(&part, e))?;
    drop(out);
    // kept only if it is a corpus: an error page saved as text would be
    // taken from the cache, and fail, at every later run
    check_usable(&part, target).map_err(|reason| Text8Error::Http {
        url: shown.clone(),
        reason: format!("the downloaded file is {reason}"),
    })?;
    std::fs::rename(&part, target).map_err(|e| Text8Error::io(target, e))?;
    guard.0 = None;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    log::info!(
        "downloaded {} to {} ({received} bytes)",
        shown,
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
        /// Announces `announced` bytes, sends `sent`, then nothing for `stall`.
        Stall {
            sent: Vec<u8>,
            announced: usize,
            stall: Duration,
        },
        /// 302 to this Location.
        Redirect(String),
        /// No Content-Length; `chunks` pieces of `chunk` bytes, `pause` apart.
        Trickle {
            chunk: usize,
            chunks: usize,
            pause: Duration,
        },
    }

    /// A one-thread HTTP/1.1 server on 127.0.0.1 answering every request with the
    /// reply of its index (the last reply repeats). Returns the base URL and a hit counter.
    fn serve(replies: Vec<Reply>) -> (String, Arc<AtomicUsize>) {
        serve_on(TcpListener::bind("127.0.0.1:0").unwrap(), replies)
    }

    /// [`serve`] on `listener`.
    fn serve_on(listener: TcpListener, replies: Vec<Reply>) -> (String, Arc<AtomicUsize>) {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let hits2 = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let k = hits2.fetch_add(1, Ordering::SeqCst);
                let reply = replies[k.min(replies.len() - 1)].clone();
                // each request on a thread of its own: downloads at once overlap
                std::thread::spawn(move || answer(stream, reply));
            }
        });
        (format!("http://{addr}/text8.zip"), hits)
    }

    /// Reads a request's head from `stream`, then sends `reply`.
    fn answer(mut stream: std::net::TcpStream, reply: Reply) {
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
            Reply::Redirect(to) => (
                format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n"),
                vec![],
            ),
            Reply::Status(s) => (
                format!("HTTP/1.1 {s} Nope\r\nContent-Length: 0\r\n"),
                vec![],
            ),
            Reply::Stall {
                sent,
                announced,
                stall,
            } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&sent);
                let _ = stream.flush();
                std::thread::sleep(stall);
                return;
            }
            Reply::Lying { body, announced } => (
                format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n"),
                body,
            ),
            Reply::Trickle {
                chunk,
                chunks,
                pause,
            } => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                for _ in 0..chunks {
                    if stream.write_all(&vec![b'a'; chunk]).is_err() {
                        break; // the client gave up
                    }
                    std::thread::sleep(pause);
                }
                return;
            }
        };
        let _ = stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
        let _ = stream.write_all(&body);
        let _ = stream.flush();
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
    fn a_redirect_is_read_against_the_url_that_answered() {
        for (from, location, to) in [
            ("http://h:1/dc/a.zip?q=1", "b.zip", "http://h:1/dc/b.zip"),
            ("http://u:p@h/dc/a.zip", "/x/y.zip", "http://u:p@h/x/y.zip"),
            ("http://h/dc/a.zip", "//other/z.zip", "http://other/z.zip"),
            (
                "http://h/dc/a.zip",
                "HTTPS://Other/z.zip",
                "https://Other/z.zip",
            ),
            ("http://h/a.zip", "?v=2", "http://h/a.zip?v=2"),
            ("http://h", "a.zip", "http://h/a.zip"),
            ("http://h/a.zip", "file:///etc/passwd", "file:///etc/passwd"),
            ("http://h/c/d/x.zip", "../../ok/y.zip", "http://h/ok/y.zip"),
            ("http://h/c/d/x.zip", "./y.zip", "http://h/c/d/y.zip"),
            ("http://h/c/d/x.zip", "../../../..", "http://h/"),
            (
                "http://h/c/x.zip",
                "/a/./b/../y.zip?k=1",
                "http://h/a/y.zip?k=1",
            ),
            (
                "http://h/c/x.zip?keep=1",
                "#frag",
                "http://h/c/x.zip?keep=1",
            ),
            ("http://h/c/x.zip?keep=1#f", "", "http://h/c/x.zip?keep=1"),
            ("http://h/c/x.zip", "y.zip?v=1#f", "http://h/c/y.zip?v=1"),
            ("http://h/c/x.zip", "http://o/a/../b.zip", "http://o/b.zip"),
        ] {
            assert_eq!(redirected_url(from, location), to, "{from} {location}");
        }
    }

    #[test]
    fn redirects_are_followed_and_one_this_build_cannot_fetch_is_named() {
        let body = small_zip();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        let (url, hits) = serve(vec![
            Reply::Redirect("mirror/text8.zip".into()),
            Reply::Redirect("/dc/text8.zip?v=1".into()),
            Reply::Ok(body.clone()),
        ]);
        fetch(&url, &target, Some(body.len() as u64), &mut |_| {}).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        std::fs::remove_file(&target).unwrap();

        let mut refused = vec![(
            "file:///etc/passwd",
            "redirected to file:///etc/passwd: expected an http:// or https:// URL",
        )];
        if !cfg!(feature = "https") {
            refused.push((
                "https://example.invalid/text8.zip",
                "redirected to https://example.invalid/text8.zip: https needs the `https` cargo feature",
            ));
        }
        for (location, expected) in refused {
            let (url, hits) = serve(vec![Reply::Redirect(location.into())]);
            let err = fetch(&url, &target, None, &mut |_| {})
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert_eq!(hits.load(Ordering::SeqCst), 1);
            no_files_but(dir.path(), &[]);
        }
        // an answer after a redirect names where it came from
        let (url, _) = serve(vec![
            Reply::Redirect("/gone/x.zip".into()),
            Reply::Status(404),
        ]);
        let err = fetch(&url, &target, None, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("(redirected to http://127.0.0.1:"), "{err}");
        assert!(err.contains("/gone/x.zip): HTTP status 404"), "{err}");
        let (url, hits) = serve(vec![Reply::Redirect("text8.zip".into())]);
        let err = fetch(&url, &target, None, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 10 redirects (the last to"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 11);
        no_files_but(dir.path(), &[]);
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

    /// A local port nothing listens on (just freed).
    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[test]
    fn connection_refused_is_reported() {
        let port = closed_port();
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
        let source = DataSource::parse(None::<&str>, dir.path());
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
        assert_eq!(path, download_path(&url, dir.path()).unwrap());
        let host = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        assert!(host.starts_with("127.0.0.1_"), "{}", path.display());
        let mut events = vec![];
        assert_eq!(resolve(&source, &mut |e| events.push(e)).unwrap(), path);
        assert_eq!(events, vec![FetchEvent::Found(path)]);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// An IPv6 literal URL, `http://[::1]:PORT/text8.zip`, downloads into
    /// the folder `ipv6_--1_PORT`. Says so where this machine has no IPv6
    /// loopback.
    #[test]
    #[allow(clippy::print_stderr)] // says when the test cannot run here
    fn an_ipv6_url_downloads_into_its_own_folder() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("an_ipv6_url_downloads_into_its_own_folder: no IPv6 loopback here: SKIPPED");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let (url, hits) = serve_on(listener, vec![Reply::Ok(small_zip())]);
        assert_eq!(url, format!("http://[::1]:{port}/text8.zip"));
        let dir = tempfile::tempdir().unwrap();
        let path = resolve(&DataSource::parse(Some(&url), dir.path()), &mut |_| {}).unwrap();
        assert_eq!(
            path,
            dir.path()
                .join(format!("ipv6_--1_{port}"))
                .join("text8.zip")
        );
        assert_eq!(std::fs::read(&path).unwrap(), small_zip());
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

    #[test]
    fn urls_map_to_files_by_host_and_name() {
        let d = Path::new("datasets");
        assert_eq!(download_path(TEXT8_URL, d).unwrap(), d.join("text8.zip"));
        assert_eq!(
            download_path("http://example.org/a/good.zip?x=1#top", d).unwrap(),
            d.join("example.org").join("a").join("good.zip")
        );
        // one name in two folders of one host: two files
        assert_ne!(
            download_path("http://example.org/sub/good.zip", d).unwrap(),
            download_path("http://example.org/good.zip", d).unwrap()
        );
        assert_eq!(
            download_path("http://example.org//a//good.zip", d).unwrap(),
            d.join("example.org").join("a").join("good.zip")
        );
        assert_eq!(
            download_path("https://user@mirror.net:8080/text8.zip", d).unwrap(),
            d.join("mirror.net_8080").join("text8.zip")
        );
        // a password's colon is no port
        assert_eq!(
            download_path("http://user:pw@mirror.net/text8.zip", d).unwrap(),
            d.join("mirror.net").join("text8.zip")
        );
        for bad in [
            "http://example.org/",
            "http://example.org",
            "http://example.org/a/..",
            "ftp://x/y.zip",
        ] {
            let e = download_path(bad, d).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        for (url, says) in [
            ("http://example.org/../x.zip", "folder \"..\""),
            ("http://example.org/a b/x.zip", "folder \"a b\""),
            (
                "http://example.org/caf\u{e9}.zip",
                "file name \"caf\u{e9}.zip\" is not a plain name",
            ),
            ("http://example.org/a.zip;b", "file name \"a.zip;b\""),
            (
                "http://h/1/2/3/4/5/6/7/8/9/x.zip",
                "9 folders, more than the 8",
            ),
        ] {
            let e = download_path(url, d).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        for port in ["99999", "0", "http", "", "+80", "080"] {
            for host in ["127.0.0.1", "[::1]"] {
                let url = format!("http://{host}:{port}/x.zip");
                let e = download_path(&url, d).unwrap_err().to_string();
                assert!(e.contains("not a number from 1 to 65535"), "{url}: {e}");
            }
        }
        // IPv6 literals, with a port and without, each in one written form
        assert_eq!(
            download_path("http://[::1]:8080/text8.zip", d).unwrap(),
            d.join("ipv6_--1_8080").join("text8.zip")
        );
        for same in ["[0::1]:8080", "[0:0:0:0:0:0:0:1]:8080"] {
            assert_eq!(
                download_path(&format!("http://{same}/text8.zip"), d).unwrap(),
                d.join("ipv6_--1_8080").join("text8.zip")
            );
        }
        assert_eq!(
            download_path("http://[2001:DB8::1]/a/text8.zip", d).unwrap(),
            d.join("ipv6_2001-db8--1").join("a").join("text8.zip")
        );
        for url in [
            "http://[::1]]/x.zip",
            "http://[::1/x.zip",
            "http://[nope]/x.zip",
            "http://[::1]x/x.zip",
            "http://[fe80::1%25eth0]/x.zip",
            "http://[]/x.zip",
        ] {
            let e = download_path(url, d).unwrap_err().to_string();
            assert!(e.contains("host part is empty or unusual"), "{url}: {e}");
        }
    }

    #[test]
    fn passwords_and_queries_in_urls_are_not_shown() {
        assert_eq!(
            shown_url("http://me:secret@example.org:8080/a/x.zip?q=1"),
            "http://me:***@example.org:8080/a/x.zip?***"
        );
        assert_eq!(
            shown_url("http://example.org/x.zip?token=SECRET#part"),
            "http://example.org/x.zip?***"
        );
        for plain in [
            "http://me@example.org/x.zip",
            "http://example.org/a@b.zip",
            "x.zip",
        ] {
            assert_eq!(shown_url(plain), plain);
        }
        // a refused download's message and a bad URL's
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://me:secret@127.0.0.1:{}/t.zip", closed_port());
        let source = DataSource::parse(Some(&url), dir.path());
        let err = resolve(&source, &mut |_| {}).unwrap_err().to_string();
        assert!(
            err.contains("me:***@127.0.0.1") && !err.contains("secret"),
            "{err}"
        );
        let err = download_path("http://me:secret@example.org/", dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("me:***@") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn values_that_start_as_urls_are_urls_in_any_case() {
        let d = Path::new("datasets");
        let url_of = |s: &str| match DataSource::parse(Some(s), d) {
            DataSource::Url {
                url, expected_size, ..
            } => Some((url, expected_size)),
            _ => None,
        };
        // the canonical URL in upper case is the canonical URL, size and all
        assert_eq!(
            url_of("HTTP://mattmahoney.net/dc/text8.zip"),
            Some((TEXT8_URL.to_string(), Some(TEXT8_SIZE)))
        );
        assert_eq!(
            url_of("http://MattMahoney.NET/dc/text8.zip"),
            Some((TEXT8_URL.to_string(), Some(TEXT8_SIZE)))
        );
        // the host folded (one server, one copy), the user, password and path not
        for (given, url) in [
            ("Https://example.org/A.zip", "https://example.org/A.zip"),
            (
                "http://Example.ORG:8080/Dir/A.zip",
                "http://example.org:8080/Dir/A.zip",
            ),
            (
                "http://Me:PW@EXAMPLE.org/A.zip",
                "http://Me:PW@example.org/A.zip",
            ),
            ("http://EXAMPLE.org?Q=A", "http://example.org?Q=A"),
        ] {
            assert_eq!(url_of(given).map(|u| u.0).as_deref(), Some(url), "{given}");
        }
        // another scheme is a URL refused by name, not a missing file
        let ftp = DataSource::parse(Some("ftp://example.org/x.zip"), d);
        let err = resolve(&ftp, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("expected an http:// or https:// URL"), "{err}");
        for path in [
            "corpus.zip",
            "./a://b.zip",
            "/x/y://z",
            "1http://x",
            "C://corpus.zip",
        ] {
            assert_eq!(
                DataSource::parse(Some(path), d),
                DataSource::Path(path.into()),
                "{path}"
            );
        }
    }

    #[test]
    fn a_failed_download_leaves_no_empty_folder() {
        let port = closed_port();
        let dir = tempfile::tempdir().unwrap();
        let datasets = dir.path().join("datasets");
        let source = DataSource::parse(Some(&format!("http://127.0.0.1:{port}/t.zip")), &datasets);
        resolve(&source, &mut |_| {}).unwrap_err();
        // neither `datasets/` nor `datasets/127.0.0.1_PORT/` was there before
        no_files_but(dir.path(), &[]);
        // a folder that was there is kept, and what it holds
        std::fs::create_dir_all(&datasets).unwrap();
        std::fs::write(datasets.join("keep.txt"), b"x").unwrap();
        resolve(&source, &mut |_| {}).unwrap_err();
        no_files_but(&datasets, &["keep.txt"]);
    }

    /// A server that stops sending mid-body is given up on after the read
    /// timeout, and said to have stopped, not to have sent a short body.
    #[test]
    fn a_body_that_stalls_is_a_wait_not_a_short_body() {
        let (url, _) = serve(vec![Reply::Stall {
            sent: vec![0; 1000],
            announced: 5000,
            stall: Duration::from_secs(3),
        }]);
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let t = std::time::Instant::now();
        let err = fetch_with(&url, &dir.path().join("t.zip"), None, &limits, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no data for 300ms after 1000 of 5000 bytes"),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        no_files_but(dir.path(), &[]);
    }

    #[test]
    fn a_huge_announced_length_is_refused_before_the_body() {
        let (url, _) = serve(vec![Reply::Lying {
            body: vec![0; 10],
            announced: 100 << 30,
        }]);
        let dir = tempfile::tempdir().unwrap();
        let err = fetch(&url, &dir.path().join("t.zip"), None, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("more than the 2147483648"),
            "{err}"
        );
        no_files_but(dir.path(), &[]);
    }

    #[test]
    fn an_endless_body_and_a_trickle_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.zip");
        let limits = Limits {
            max_bytes: 100_000,
            ..Limits::default()
        };
        let (url, _) = serve(vec![Reply::NoLength(vec![b'a'; 300_000])]);
        let err = fetch_with(&url, &target, None, &limits, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("goes on past 100000 bytes"),
            "{err}"
        );
        no_files_but(dir.path(), &[]);
        let limits = Limits {
            window: Duration::from_millis(300),
            min_bytes_per_window: 10_000,
            ..Limits::default()
        };
        let (url, _) = serve(vec![Reply::Trickle {
            chunk: 10,
            chunks: 100,
            pause: Duration::from_millis(50),
        }]);
        let t = std::time::Instant::now();
        let err = fetch_with(&url, &target, None, &limits, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("too slow"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        no_files_but(dir.path(), &[]);
    }

    /// The `.part` of a killed download (its process gone) is removed by
    /// the next download of the file; a living process's (another download
    /// of the same file at once, as two runs started together make) is
    /// never written or removed, nor a kept file named like the old `.part`.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_part_file_of_a_killed_download_is_removed() {
        let body = small_zip();
        let (url, _) = serve(vec![Reply::Ok(body.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("text8.zip");
        // pid_max is at most 2^22: no process has this one
        let dead = ".text8.zip.part-4294967295-0";
        let living = format!(".text8.zip.part-{}-99", std::process::id());
        for name in [dead, &living, "text8.zip.part"] {
            std::fs::write(dir.path().join(name), b"left by a download").unwrap();
        }
        fetch(&url, &target, None, &mut |_| {}).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);
        no_files_but(dir.path(), &["text8.zip", &living, "text8.zip.part"]);
        for kept in [living.as_str(), "text8.zip.part"] {
            assert_eq!(
                std::fs::read(dir.path().join(kept)).unwrap(),
                b"left by a download"
            );
        }
    }

    /// A kept copy of a URL that is no corpus (junk, a folder, a link to junk) is
    /// refused with the advice to delete it, before any request; a good
    /// one is used as it is.
    #[test]
    fn a_kept_copy_that_is_no_corpus_is_refused() {
        let (url, hits) = serve(vec![Reply::Ok(small_zip())]);
        let dir = tempfile::tempdir().unwrap();
        let source = DataSource::parse(Some(&url), dir.path());
        let target = download_path(&url, dir.path()).unwrap();
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"<html>").unwrap();
        let kept: [(&str, &dyn Fn()); 3] = [
            ("not a usable zip", &|| {
                std::fs::write(&target, b"junk!").unwrap()
            }),
            ("not a regular file", &|| {
                std::fs::create_dir(&target).unwrap()
            }),
            #[cfg(unix)]
            ("not a usable zip", &|| {
                std::os::unix::fs::symlink(&junk, &target).unwrap()
            }),
            #[cfg(not(unix))]
            ("not a regular file", &|| {
                std::fs::create_dir(&target).unwrap()
            }),
        ];
        for (why, make) in kept {
            make();
            let msg = resolve(&source, &mut |_| {}).unwrap_err().to_string();
            assert!(
                msg.contains(why) && msg.contains("delete it to download again"),
                "{msg}"
            );
            if target.is_dir() && !target.is_symlink() {
                std::fs::remove_dir(&target).unwrap();
            } else {
                std::fs::remove_file(&target).unwrap();
            }
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let path = resolve(&source, &mut |_| {}).unwrap();
        assert_eq!(resolve(&source, &mut |_| {}).unwrap(), path);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// A server's error page sent with status 200 for a `.txt` URL is not
    /// kept in the cache (every later run would take it from there and
    /// fail): the error says so, nothing is left, and the next run asks
    /// the server again and keeps a corpus.
    #[test]
    fn an_error_page_saved_as_text_is_not_kept() {
        let page = b"<html><body>503 Service Unavailable</body></html>".to_vec();
        let (url, hits) = serve(vec![
            Reply::Ok(page),
            Reply::Ok(b" a corpus in text eight form".to_vec()),
        ]);
        let url = url.replace("text8.zip", "corpus.txt");
        let dir = tempfile::tempdir().unwrap();
        let source = DataSource::parse(Some(&url), dir.path());
        let target = download_path(&url, dir.path()).unwrap();
        let msg = resolve(&source, &mut |_| {}).unwrap_err().to_string();
        assert!(
            msg.contains("not a corpus in text8 form") && msg.contains(&url),
            "{msg}"
        );
        // nothing: the host's folder, made for this download, is gone too
        assert!(!target.parent().unwrap().exists());
        assert_eq!(resolve(&source, &mut |_| {}).unwrap(), target);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        no_files_but(target.parent().unwrap(), &["corpus.txt"]);
    }
}
