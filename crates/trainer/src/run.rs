//! Run directories: everything a run needs to be understood, resumed,
//! sampled from and evaluated, with nothing else but the directory.
//!
//! ```text
//! runs/notebook-char-1/
//!   config.json              resolved recipe, model config, tokenizer, data source
//!   tokenizer.json           the vocabulary ({"kind": "char"})
//!   model.safetensors        weights (names like layers.0.blocks.0.wx), model config in metadata
//!   checkpoint.safetensors   weights + optimiser + carried state + trainer state, for --resume
//!   metrics.csv              one row per summary
//!   samples.txt              samples printed during training
//!   train.log                the notebook's log lines
//!   loss.png, perplexity.png plots against steps, redrawn at every summary (also as .svg;
//!                            a mirror run has loss and accuracy)
//!   test.json                a mirror run's test accuracy, written when it ends
//!   .lock                    held (flock) by the process training the run
//! ```

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The files a run writes whole, under a temporary name renamed over the
/// old one: its config, weights, checkpoint, metrics, both tasks' plots and
/// a mirror run's test scores (`train.log` and `samples.txt` are appended to, opened as regular files).
pub const REPLACED_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "checkpoint.safetensors",
    "metrics.csv",
    "loss.png",
    "loss.svg",
    "perplexity.png",
    "perplexity.svg",
    "accuracy.png",
    "accuracy.svg",
    "test.json",
];

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

/// The resolved description of a run, saved as `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// Version of charlstm that made the run.
    pub charlstm_version: String,
    /// Recipe name (built-in name or file stem).
    pub recipe_name: String,
    /// The recipe after overrides (TOML tree as JSON).
    pub recipe: serde_json::Value,
    /// The tokenizer.
    pub tokenizer: tokenizer::Tokenizer,
    /// The model configuration (Burn config JSON).
    pub model: serde_json::Value,
    /// Corpus the run was trained on.
    pub data_source: String,
    /// Characters in that corpus.
    pub data_chars: usize,
    /// [`text8::Corpus::fingerprint`] of that corpus (absent in runs made
    /// before it was recorded: they are checked by length only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
    /// Device name it was trained on (first session).
    pub device: String,
}

impl RunConfig {
    /// Whether a corpus of that [`text8::Corpus::fingerprint`] and length is
    /// the text this run was trained on (runs made before fingerprints were
    /// recorded: the length is all there is).
    pub fn trained_on(&self, fingerprint: &str, chars: usize) -> bool {
        match &self.data_fingerprint {
            Some(f) => f == fingerprint,
            None => self.data_chars == chars,
        }
    }
}

/// " (pid N)" for the process that wrote its id into the lock file `lock`,
/// else nothing.
fn holder_pid(lock: &Path) -> String {
    let holder = std::fs::read_to_string(lock).unwrap_or_default();
    match holder.trim() {
        "" => String::new(),
        pid => format!(" (pid {pid})"),
    }
}

/// The refusal of a new run in `dir`, which another process (`holder`,
/// [`holder_pid`]) trains now.
fn being_trained(dir: &Path, holder: &str) -> TrainError {
    TrainError::Run(format!(
        "run directory {} is being trained by another charlstm process{holder}; choose another \
         --run",
        dir.display()
    ))
}

/// [`holder_pid`] of the process holding `dir`'s run lock, if another one
/// holds it: an existing `.lock` only (none is created in the folder), a
/// regular file, tried without waiting and let go at once (a lock taken
/// meanwhile is tried again: [`RunDir::lock`]).
fn lock_holder(dir: &Path) -> Option<String> {
    let path = dir.join(".lock");
    if !path.exists() {
        return None;
    }
    let file = crate::fsutil::open_regular(&path, OpenOptions::new().read(true)).ok()?;
    match file.try_lock() {
        Err(TryLockError::WouldBlock) => Some(holder_pid(&path)),
        _ => None,
    }
}

/// Whether `path` holds a run (a `config.json` and weights or a checkpoint):
/// no file of another command is written into one.
pub fn is_run_dir(path: &Path) -> bool {
    path.join("config.json").is_file()
        && (path.join("checkpoint.safetensors").exists() || path.join("model.safetensors").exists())
}

/// Whether a folder holds nothing but what a run that died before writing
/// its config leaves (its `.lock`, temporary files of a save): it may be
/// used for a new run.
fn only_leftovers(path: &Path) -> Result<bool> {
    for e in std::fs::read_dir(path).map_err(|e| TrainError::io(path, e))? {
        let name = e.map_err(|e| TrainError::io(path, e))?.file_name();
        let name = name.to_string_lossy();
        if !(name == ".lock" || (name.starts_with('.') && name.contains(".tmp-"))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The lock of a run directory, held while this value lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunDir {
    /// Path of the run.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new run directory. `path` is used if given (it must not
    /// exist, or be an empty folder: checked again under the lock, see
    /// [`RunDir::lock_new`]); otherwise `<runs_root>/<recipe>-<n>` with the
    /// first unused `n`. An existing run is never overwritten.
    pub fn create(path: Option<&Path>, runs_root: &Path, recipe_name: &str) -> Result<Self> {
        let path = match path {
            Some(p) => {
                if let Some(parent) = p.parent().filter(|q| is_run_dir(q)) {
                    return Err(TrainError::Run(format!(
                        "{}: inside the run directory {}; choose a --run outside it",
                        p.display(),
                        parent.display()
                    )));
                }
                match std::fs::symlink_metadata(p) {
                    Ok(m) if m.file_type().is_symlink() && !p.exists() => {
                        return Err(TrainError::Run(format!(
                            "{}: a symbolic link to nothing; choose another --run",
                            p.display()
                        )));
                    }
                    Ok(_) if !p.is_dir() => {
                        return Err(TrainError::Run(format!(
                            "{}: exists and is not a folder; choose another --run",
                            p.display()
                        )));
                    }
                    Ok(_) if is_run_dir(p) || !only_leftovers(p)? => {
                        // a run that stopped before its first checkpoint
                        // (diverged at once): resuming repeats its settings
                        if let Some(holder) = lock_holder(p) {
                            // (started a moment ago, perhaps with no checkpoint yet)
                            return Err(being_trained(p, &holder));
                        }
                        let message = if !is_run_dir(p) && p.join("config.json").is_file() {
                            format!(
                                "run directory {} already exists without a checkpoint (its \
                                 training stopped before the first): continue it with --resume \
                                 {0} (its settings as saved), or delete it or choose another \
                                 --run to start with other settings",
                                p.display()
                            )
                        } else {
                            format!(
                                "run directory {} already exists; continue it with --resume \
                                 {0}, or choose another --run",
                                p.display()
                            )
                        };
                        return Err(TrainError::Run(message));
                    }
                    _ => {}
                }
                p.to_path_buf()
            }
            None => {
                if is_run_dir(runs_root) {
                    return Err(TrainError::Run(format!(
                        "--runs {}: a run directory; runs are not made inside one",
                        runs_root.display()
                    )));
                }
                text8::atomic::create_folders(runs_root)
                    .map_err(|e| TrainError::io(runs_root, e))?;
                // created, not tested then created: two runs started together get two names
                let mut n = 1;
                loop {
                    let p = runs_root.join(format!("{recipe_name}-{n}"));
                    match std::fs::create_dir(&p) {
                        Ok(()) => return Ok(RunDir { path: p }),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                        Err(e) => return Err(TrainError::io(&p, e)),
                    }
                }
            }
        };
        text8::atomic::create_folders(&path).map_err(|e| TrainError::io(&path, e))?;
        Ok(RunDir { path })
    }

    /// Opens an existing run directory (it must hold a `config.json`).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(TrainError::Run(if path.exists() {
                format!("{}: not a run directory (not a folder)", path.display())
            } else {
                format!("{}: no such run directory", path.display())
            }));
        }
        let dir = RunDir {
            path: path.to_path_buf(),
        };
        if !dir.config_path().exists() {
            return Err(TrainError::Run(format!(
                "{}: not a run directory (no config.json)",
                path.display()
            )));
        }
        Ok(dir)
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }
    /// `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.path.join("tokenizer.json")
    }
    /// `model.safetensors`.
    pub fn model_path(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }
    /// `checkpoint.safetensors`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join("checkpoint.safetensors")
    }
    /// `metrics.csv`.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.csv")
    }
    /// `samples.txt`.
    pub fn samples_path(&self) -> PathBuf {
        self.path.join("samples.txt")
    }
    /// `train.log`.
    pub fn log_path(&self) -> PathBuf {
        self.path.join("train.log")
    }

    /// Refuses a link, folder, FIFO or device where the run will write one
    /// of [`REPLACED_FILES`] or append to its `samples.txt` or `train.log`
    /// (a save would replace a link, where the user may have put a file of
    /// theirs): found now, before any step, not at the first save after hours.
    fn check_replaced_files(&self) -> Result<()> {
        let replaced = REPLACED_FILES.iter().map(|name| self.path.join(name));
        for path in replaced.chain([self.samples_path(), self.log_path()]) {
            crate::fsutil::regular_or_absent(&path)?;
        }
        Ok(())
    }

    /// Takes the run's lock (`.lock`, an advisory lock the system drops when
    /// the process ends, however it ends): a second process training the same
    /// run is refused. Then removes the temporary files of saves that a killed
    /// process left (no other process can be writing them now).
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.path.join(".lock");
        let file = crate::fsutil::open_regular(
            &path,
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .read(true),
        )?;
        // a few tries: another process's `lock_holder` holds it for an instant
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < 3 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(TrainError::Busy {
                        dir: self.path.clone(),
                        holder: holder_pid(&path),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
            }
        }
        let mut f = &file;
        let _ = f.set_len(0);
        let _ = write!(f, "{}", std::process::id());
        self.check_replaced_files()?;
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(RunLock { _file: file })
    }

    /// [`RunDir::lock`] for a run just created: also checks, under the lock,
    /// that no other process has started a run in the folder meanwhile.
    pub fn lock_new(&self) -> Result<RunLock> {
        let lock = self.lock().map_err(|e| match e {
            TrainError::Busy { dir, holder } => being_trained(&dir, &holder),
            e => e,
        })?;
        if self.config_path().exists() {
            return Err(TrainError::Run(format!(
                "run directory {} was started by another process meanwhile; choose another --run",
                self.path.display()
            )));
        }
        Ok(lock)
    }

    /// Writes `config.json` and `tokenizer.json`.
    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        let json = serde_json::to_string_pretty(config).expect("config serialises");
        crate::fsutil::atomic_write_str(&self.config_path(), &(json + "\n"))?;
        let tok = serde_json::to_string_pretty(&config.tokenizer).expect("tokenizer serialises");
        crate::fsutil::atomic_write_str(&self.tokenizer_path(), &(tok + "\n"))
    }

    /// Reads `config.json`.
    pub fn read_config(&self) -> Result<RunConfig> {
        let p = self.config_path();
        let text = crate::fsutil::read_text(&p, crate::fsutil::MAX_TEXT_BYTES)?;
        serde_json::from_str(&text).map_err(|e| {
            TrainError::Run(format!("{}: not a charlstm run config: {e}", p.display()))
        })
    }

    /// Appends lines to a text file of the run (a regular file only: never
    /// through a link, never waiting on a FIFO).
    pub fn append(&self, file: &Path, text: &str) -> Result<()> {
        let mut f =
            crate::fsutil::open_regular(file, OpenOptions::new().create(true).append(true))?;
        f.write_all(text.as_bytes())
            .map_err(|e| TrainError::io(file, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// Runs started together without `--run` each get a folder of their
    /// own: a name is taken by creating its folder, not by testing first.
    #[test]
    fn runs_started_together_get_folders_of_their_own() {
        let root = tempfile::tempdir().unwrap();
        let start = Arc::new(Barrier::new(8));
        let runs: Vec<_> = (0..8)
            .map(|_| {
                let (root, start) = (root.path().to_path_buf(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    RunDir::create(None, &root, "r")
                        .unwrap()
                        .path()
                        .to_path_buf()
                })
            })
            .collect();
        let mut got: Vec<PathBuf> = runs.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort();
        let want: Vec<PathBuf> = (1..=8)
            .map(|n| root.path().join(format!("r-{n}")))
            .collect();
        assert_eq!(got, want);
    }

    /// A `--run` folder in which another process started a run after this
    /// one took it (an empty folder may be taken by both) is refused under
    /// the lock, and the other run's files are left as they are.
    #[test]
    fn a_run_started_in_the_folder_meanwhile_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("mine");
        let first = RunDir::create(Some(&path), root.path(), "r").unwrap();
        let second = RunDir::create(Some(&path), root.path(), "r").unwrap();
        let lock = first.lock_new().unwrap();
        std::fs::write(first.config_path(), "{}").unwrap();
        drop(lock);
        let msg = second.lock_new().unwrap_err().to_string();
        assert!(
            msg.contains("was started by another process meanwhile"),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(first.config_path()).unwrap(), "{}");
    }

    /// A `--run` folder that a training holds now (perhaps before its first
    /// checkpoint) is refused as being trained, not as a run to resume; once
    /// let go, as a run that stopped before its first checkpoint.
    #[test]
    fn a_run_being_trained_is_refused_as_such() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("busy");
        let run = RunDir::create(Some(&path), root.path(), "r").unwrap();
        let lock = run.lock_new().unwrap();
        std::fs::write(run.config_path(), "{}").unwrap();
        let busy = RunDir::create(Some(&path), root.path(), "r")
            .unwrap_err()
            .to_string();
        assert!(
            busy.contains("is being trained by another charlstm process (pid ")
                && busy.contains("choose another --run")
                && !busy.contains("--resume"),
            "{busy}"
        );
        // a second new run that took the folder first, then found it locked
        let late = run.lock_new().unwrap_err().to_string();
        assert!(late.contains("is being trained by another"), "{late}");
        drop(lock);
        let stopped = RunDir::create(Some(&path), root.path(), "r")
            .unwrap_err()
            .to_string();
        assert!(stopped.contains("without a checkpoint"), "{stopped}");
    }
}
