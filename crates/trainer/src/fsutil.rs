//! File writing that never leaves a half-written file at the target path,
//! and reading with a bound on size.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

pub use text8::atomic::AtomicFile;
use text8::atomic::folder_of;

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` atomically ([`AtomicFile`]): a crash, a kill
/// or a full disk never leaves a truncated file behind, and on any error
/// `path` keeps its previous content.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    Ok(file.commit(true)?)
}

/// [`atomic_write`] of a string.
pub fn atomic_write_str(path: &Path, text: &str) -> Result<()> {
    atomic_write(path, text.as_bytes())
}

/// Opens `path` with `options`, only as a regular file: on unix a symbolic
/// link is not followed and a FIFO not waited on (opened without blocking,
/// then refused); a device or folder is refused, each with an error naming it.
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    // a link (ELOOP under O_NOFOLLOW), a FIFO without a reader (ENXIO), a folder
    let file = options.open(path).map_err(|e| {
        regular_or_absent(path)
            .err()
            .unwrap_or_else(|| TrainError::io(path, e))
    })?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        Ok(_) => Err(not_a_regular_file(path)),
        Err(e) => Err(TrainError::io(path, e)),
    }
}

/// Refuses `path` where something other than a regular file is there (a
/// link, FIFO, device or folder): what [`open_regular`] will not open.
pub fn regular_or_absent(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(not_a_regular_file(path)),
        _ => Ok(()),
    }
}

fn not_a_regular_file(path: &Path) -> TrainError {
    TrainError::Input(format!(
        "{}: not a regular file (a symbolic link, FIFO, device or folder); remove it and run \
         again",
        path.display()
    ))
}

/// Whether two existing paths are one file (the same device and inode: a
/// hard link too, which the paths alone do not show).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(not(unix))]
    let _ = (a, b);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    false
}

/// Checks that `path` may be written as an output of a command: a path
/// that exists is replaced only with `force`, and only when it is a regular
/// file (never a symlink, a device, a FIFO or a folder, forced or not); and
/// it is none of the command's `inputs` (files, or folders it must not
/// write into, such as the run directory being trained), nor inside any run
/// directory.
pub fn check_output(path: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    let refuse = |why: String| Err(TrainError::Input(format!("{}: {why}", path.display())));
    // `out/` names a folder, whatever is there: the file would need a name
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return refuse("names a folder (it ends in /): give the file's name too".into());
    }
    let exists = match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return refuse(
                "exists and is not a regular file (a symlink, device, FIFO or folder): \
                 it is never replaced; choose another path"
                    .into(),
            );
        }
        Ok(_) => true,
        Err(_) => false,
    };
    // where the output would land, its folder resolved (the file may not
    // exist yet): said now, not after the work whose result it holds
    let folder = folder_of(path);
    let parent = match std::fs::metadata(folder).and_then(|m| Ok((m, folder.canonicalize()?))) {
        Ok((m, parent)) if m.is_dir() => parent,
        Ok(_) => return refuse(format!("{} is not a folder", folder.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return refuse(format!("its folder {} does not exist", folder.display()));
        }
        Err(e) => return refuse(format!("its folder {}: {e}", folder.display())),
    };
    let landing = parent.join(path.file_name().unwrap_or_default());
    // a run directory's files are written by training alone, forced or not
    if crate::run::is_run_dir(&parent) {
        return refuse(format!(
            "is inside the run directory {}: its files are written by training alone",
            parent.display()
        ));
    }
    for input in inputs {
        let Ok(input) = input.canonicalize() else {
            continue;
        };
        if input.is_dir() && landing.starts_with(&input) {
            return refuse(format!(
                "is inside {}, which this command reads or trains: not written there",
                input.display()
            ));
        }
        if landing == input || same_file(path, &input) {
            return refuse("is one of this command's inputs: not overwritten".into());
        }
    }
    // last: what --force would not mend is said first
    if exists && !force {
        return refuse("already exists (use --force to replace it)".into());
    }
    Ok(())
}

/// Largest text file of a run directory or recipe read (config, tokenizer,
/// metrics, recipes): far above any real one, far below a mistaken
/// `--recipe /dev/zero`.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Largest safetensors file read: 4 GiB (a 2 x 4096-unit LSTM with Adam's
/// moments is under 2 GiB).
pub const MAX_TENSOR_FILE_BYTES: u64 = 4 << 30;

/// Reads a regular file of at most `max` bytes; anything else (a folder, a
/// FIFO, a device, a larger file) is an error naming the file.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    // looked at before opening: opening a FIFO would wait for a writer
    let meta = std::fs::metadata(path).map_err(|e| TrainError::io(path, e))?;
    if !meta.is_file() {
        return Err(TrainError::Input(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > max {
        return Err(TrainError::Input(format!(
            "{}: {} bytes, more than the {max} read at most",
            path.display(),
            meta.len()
        )));
    }
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // the file may grow after the check: never read past the bound
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TrainError::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(TrainError::Input(format!(
            "{}: more than the {max} bytes read at most",
            path.display()
        )));
    }
    Ok(bytes)
}

/// [`read_bounded`] of UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_bounded(path, max)?).map_err(|e| {
        TrainError::Input(if text8::starts_as_utf16(e.as_bytes()) {
            text8::not_utf8_but_utf16(path)
        } else {
            format!(
                "{}: invalid UTF-8 at byte offset {}",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })
    })
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
    fn bounded_reads_refuse_large_files_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "hello").unwrap();
        assert_eq!(read_text(&p, 5).unwrap(), "hello");
        let e = read_text(&p, 4).unwrap_err().to_string();
        assert!(e.contains("a.txt: 5 bytes, more than the 4"), "{e}");
        let e = read_text(dir.path(), 4).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::write(&p, b"ab\xffc").unwrap();
        let e = read_text(&p, 10).unwrap_err().to_string();
        assert!(e.contains("invalid UTF-8 at byte offset 2"), "{e}");
        // UTF-16 (a --prime-file saved by a Windows editor) is named as such
        std::fs::write(&p, b"\xff\xfeh\0i\0").unwrap();
        let e = read_text(&p, 10).unwrap_err().to_string();
        assert!(
            e.contains("a.txt: UTF-16 text (by its byte-order mark)"),
            "{e}"
        );
    }

    #[test]
    fn outputs_never_replace_inputs_links_or_devices() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("out.txt");
        check_output(&out, false, &[]).unwrap();
        std::fs::write(&out, "x").unwrap();
        let e = check_output(&out, false, &[]).unwrap_err().to_string();
        assert!(e.contains("already exists (use --force"), "{e}");
        check_output(&out, true, &[]).unwrap();
        // said first, forced or not: --force would not mend it
        for force in [false, true] {
            let e = check_output(&out, force, &[&out]).unwrap_err().to_string();
            assert!(e.contains("one of this command's inputs"), "{e}");
        }
        let run = d.join("run");
        std::fs::create_dir(&run).unwrap();
        let e = check_output(&run.join("checkpoint.safetensors"), true, &[&run])
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside"), "{e}");
        #[cfg(unix)]
        {
            let link = d.join("link.txt");
            std::os::unix::fs::symlink(&out, &link).unwrap();
            let e = check_output(&link, true, &[]).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
            let e = check_output(Path::new("/dev/null"), true, &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let e = check_output(&run, true, &[]).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
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
