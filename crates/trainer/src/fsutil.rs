//! File writing that never leaves a half-written file at the target path.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` atomically: to a temporary file in the same
/// folder, flushed and synced, then renamed over `path` (and the folder
/// synced). On any error the temporary file is removed and `path` keeps its
/// previous content, so a crash, a kill or a full disk never leaves a
/// truncated file behind.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| TrainError::io(&tmp, e))?;
        f.sync_all().map_err(|e| TrainError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`atomic_write`] of a string.
pub fn atomic_write_str(path: &Path, text: &str) -> Result<()> {
    atomic_write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        atomic_write(&p, b"old").unwrap();
        // a directory in the way of the rename makes the last step fail
        let q = dir.path().join("sub");
        std::fs::create_dir(&q).unwrap();
        std::fs::write(q.join("x"), b"x").unwrap();
        assert!(atomic_write(&q, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
