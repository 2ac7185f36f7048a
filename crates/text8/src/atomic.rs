//! A file that appears at its path whole or not at all.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Result, Text8Error};

/// The folder of `path` (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `std::fs::create_dir_all`, where a file in the way (`dir` itself or a
/// folder above it) is said as such: "exists and is not a folder" (or
/// "PATH exists and is not a folder"), not the system's "File exists" or
/// "Not a directory".
pub fn create_folders(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        use std::io::ErrorKind::{AlreadyExists, NotADirectory};
        if !matches!(e.kind(), AlreadyExists | NotADirectory) {
            return e;
        }
        let in_the_way = dir
            .ancestors()
            .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()));
        match in_the_way {
            Some(a) if a == dir => std::io::Error::new(e.kind(), "exists and is not a folder"),
            Some(a) => std::io::Error::new(
                e.kind(),
                format!("{} exists and is not a folder", a.display()),
            ),
            None => e,
        }
    })
}

/// Removes the files beside `target` named `PREFIX` `PID-N` whose
/// process is gone (a killed writer's: a download's `.part`, a temporary
/// file): on Linux, where `/proc` lists the living processes; elsewhere
/// they stay.
pub fn remove_dead_files(target: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(folder_of(target)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(pid, n)| {
                [pid, n]
                    .iter()
                    .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            })
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            // a name, never what a link there points to
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A file written under a temporary name in its target's folder
/// (`.NAME.tmp-PID-N`, created new) and renamed over the target only by
/// [`AtomicFile::commit`], after a sync: until then the target keeps its
/// content, or stays absent, and a file dropped uncommitted (an error, a
/// run refused) is removed. The rename replaces the folder's entry, never
/// the old file's bytes, so another hard link to it keeps them.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: PathBuf,
    target: PathBuf,
    /// `None` once committed.
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts the file that will replace `target`.
    pub fn create(target: &Path) -> Result<Self> {
        // one name a writer, also for two writers of one process
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let prefix = format!(".{name}.tmp-");
        // those of killed writers of this target are removed (a kill
        // leaves its temporary file), as is one of a killed process of the
        // same id (a link itself, never what it points to); then the name
        // is created new
        remove_dead_files(target, &prefix);
        let tmp = folder_of(target).join(format!("{prefix}{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            // the caller named the target, not the temporary file beside it
            .map_err(|e| Text8Error::io(target, e))?;
        Ok(AtomicFile {
            tmp,
            target: target.to_path_buf(),
            file: Some(BufWriter::new(file)),
        })
    }

    /// Writes `bytes`; an error names the temporary file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("written before its commit");
        file.write_all(bytes)
            .map_err(|e| Text8Error::io(&self.tmp, e))
    }

    /// Flushes, syncs and renames the file over its target (and syncs the
    /// folder); with `replace` false, not over a target that exists by
    /// then (one made after the caller's check: an error naming it). On an
    /// error the target is as it was and the temporary file is removed.
    pub fn commit(mut self, replace: bool) -> Result<()> {
        let file = self.file.take().expect("committed once");
        let result = (|| {
            let file = file
                .into_inner()
                .map_err(|e| Text8Error::io(&self.tmp, e.into_error()))?;
            file.sync_all().map_err(|e| Text8Error::io(&self.tmp, e))?;
            drop(file);
            if !replace && std::fs::symlink_metadata(&self.target).is_ok() {
                return Err(Text8Error::io(
                    &self.target,
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "it appeared while this was written: left as it is",
                    ),
                ));
            }
            std::fs::rename(&self.tmp, &self.target).map_err(|e| Text8Error::io(&self.target, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
            return result;
        }
        if let Ok(d) = File::open(folder_of(&self.target)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new temporary file of a target removes those a killed writer of
    /// the same target left (its process gone), and nothing else.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_killed_writers_temporary_file_is_removed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.txt");
        // no process has an id this high (Linux's limit is 2^22)
        let dead = dir.path().join(".out.txt.tmp-999999999-0");
        let living = dir
            .path()
            .join(format!(".out.txt.tmp-{}-999", std::process::id()));
        let other = dir.path().join(".other.txt.tmp-999999999-0");
        // a file of its own named like one (not digits after the id)
        let kept = dir.path().join(".out.txt.tmp-999999999-x");
        for f in [&dead, &living, &other, &kept] {
            std::fs::write(f, "left").unwrap();
        }
        let mut file = AtomicFile::create(&target).unwrap();
        file.write_all(b"new").unwrap();
        file.commit(false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!dead.exists(), "a dead writer's file stays");
        assert!(
            living.exists() && other.exists() && kept.exists(),
            "a living writer's, another target's or a user's file went"
        );
    }
}
