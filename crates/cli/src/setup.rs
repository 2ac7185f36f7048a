//! What every command does first: threads and device, the corpus (found or
//! downloaded, with a bar), the Ctrl-C handler, the allocator setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use text8::{DataSource, FetchEvent};

use crate::args::{DataArgs, DeviceArgs};
use crate::{device, progress};

/// Two signals' dispositions, set before any thread exists. A closed pipe
/// on stdout (`charlstm sample ... | head -1`) ends the program at once,
/// silently, with SIGPIPE's usual status, as `cat` and `yes` end: Rust
/// ignores the signal by default and would report an error (or panic in
/// `println!`) at the next write instead. A write past the file-size limit
/// (`ulimit -f`) fails with an error as a full disk does, where SIGXFSZ
/// would kill the program in the middle of a save: the file being written
/// keeps its old version (its temporary copy is removed), the previous
/// checkpoint stays, and the message names the file.
pub fn set_signal_dispositions() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sets dispositions before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// A training run's stop flag, which a failed write to stdout raises
/// ([`stop_when_stdout_fails`]).
static STDOUT_STOPS: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// The exit status of the first failed write to stdout of a run it
/// stopped: 141 for a closed pipe, 1 for any other error; 0 for none.
static STDOUT_FAILURE: AtomicU8 = AtomicU8::new(0);

/// A failed write to stdout: a closed pipe ends quietly (status 141, as
/// after SIGPIPE, where the signal could not be restored); anything else (a
/// full disk) is an error on stderr, status 1. During a training run
/// ([`stop_when_stdout_fails`]) it ends nothing: the run stops after its
/// step, saving a checkpoint, and later writes are lost.
pub fn stdout_failed(e: std::io::Error) {
    let closed = e.kind() == std::io::ErrorKind::BrokenPipe;
    let status = if closed { 141 } else { 1 };
    match STDOUT_STOPS.get() {
        Some(stop) => {
            if STDOUT_FAILURE
                .compare_exchange(0, status, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                if !stop_running_training(stop) {
                    // the final report's lines: nothing left to stop
                    if !closed {
                        errln!("error: writing to stdout: {e}");
                    }
                } else if closed {
                    errln!(
                        "stdout closed: stopping the run as Ctrl-C does (what it trained is kept)"
                    );
                } else {
                    errln!(
                        "error: writing to stdout: {e}: stopping the run as Ctrl-C does (what it \
                         trained is kept)"
                    );
                }
            }
        }
        None => {
            if !closed {
                errln!("error: writing to stdout: {e}");
            }
            std::process::exit(status.into())
        }
    }
}

/// Raises `stop` while the training run is going ([`training_ended`] not
/// yet called); whether it was.
fn stop_running_training(stop: &AtomicBool) -> bool {
    let running = !TRAINING_ENDED.load(Ordering::SeqCst);
    if running {
        stop.store(true, Ordering::SeqCst);
    }
    running
}

/// Set once `trainer::train` has returned: a failed write then stops nothing.
static TRAINING_ENDED: AtomicBool = AtomicBool::new(false);

/// Training is over: a closed or full stdout from now on only gives the
/// exit status ([`stdout_failure`]), saying nothing of a stop.
pub fn training_ended() {
    TRAINING_ENDED.store(true, Ordering::SeqCst);
}

/// From now on a closed or full stdout (`charlstm train | head`, a pipe
/// whose reader quit) stops the training run as Ctrl-C does, after the step
/// at hand and with a checkpoint, instead of ending the program and losing
/// the steps since the last one ([`stdout_failed`], [`stdout_failure`]).
pub fn stop_when_stdout_fails(stop: Arc<AtomicBool>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: one signal's disposition, to ignored: a write to a closed
    // pipe then fails with EPIPE, which `stdout_failed` handles
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let _ = STDOUT_STOPS.set(stop);
}

/// The exit status a failed write to stdout gives the run it stopped.
pub fn stdout_failure() -> Option<u8> {
    match STDOUT_FAILURE.load(Ordering::SeqCst) {
        0 => None,
        status => Some(status),
    }
}

/// The machine's cores (1 where the system does not say).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Most threads `--threads` takes: beyond a few per core they only wait on
/// each other (10000 threads took 65 s for two steps).
pub fn max_threads() -> usize {
    (4 * cores()).max(8)
}

/// The recipe `load` reads with the command's `overrides` (`--set`,
/// `--steps`, `--summary`); an error that only the overrides make (it
/// reads without them) is theirs: a usage error, status 2, as a flag out
/// of range is.
pub fn with_overrides<T>(
    overrides: &[String],
    load: impl Fn(&[String]) -> trainer::Result<T>,
) -> Result<T> {
    load(overrides).map_err(|e| {
        if !overrides.is_empty() && load(&[]).is_ok() {
            crate::args::UsageError(e.to_string()).into()
        } else {
            e.into()
        }
    })
}

/// Applies `--threads` (checked by its parser: 1 to [`max_threads`])
/// before any backend thread pool starts, and picks the device.
pub fn setup_device(d: &DeviceArgs) -> Result<(burn::tensor::Device, &'static str)> {
    trainer::check_kernels_setting().map_err(anyhow::Error::msg)?;
    let n = match d.threads {
        Some(n) => n,
        None => cores(),
    };
    // SAFETY: called once, before any other thread of this process exists.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    trainer::set_threads(n);
    let (device, name) = device::select(d.device)?;
    // a GPU run has no CPU regions for the kernels' threads to poll for
    trainer::set_keep_awake(name != "wgpu");
    Ok((device, name))
}

/// Finds or downloads the corpus (`--data`, else `fallback`: a resumed
/// run's own, named as such when it is gone), showing a download bar.
pub fn resolve_data(data: &DataArgs, fallback: Option<&str>) -> Result<PathBuf> {
    let spec = data.data.as_deref().or(fallback.map(std::ffi::OsStr::new));
    if spec.is_some_and(std::ffi::OsStr::is_empty) {
        bail!("--data is empty: give a text8.zip, a text file or an http(s) URL");
    }
    if trainer::run::is_run_dir(&data.datasets) {
        bail!(
            "--datasets {}: a run directory; downloads are not kept inside one",
            data.datasets.display()
        );
    }
    let source = DataSource::parse(spec, &data.datasets);
    let mut bar = None;
    let path = text8::resolve(&source, &mut |e| match e {
        FetchEvent::Started { url, total } => {
            errln!("downloading {url}");
            bar = Some(progress::bytes_bar(total, "text8.zip"));
        }
        FetchEvent::Progress(n) => {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
        FetchEvent::Done(p) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            errln!("saved {}", p.display());
        }
        FetchEvent::Found(_) => {}
    })
    .with_context(|| match &source {
        DataSource::Default { .. } => {
            "getting the Text8 corpus (give a local copy with --data FILE)".to_string()
        }
        DataSource::Url { url, .. } => format!("downloading {}", text8::shown_url(url)),
        // a resumed run's own corpus, not given on this command line (the
        // cause names its path)
        DataSource::Path(_) if data.data.is_none() => {
            "the corpus this run was trained on (moved or removed? give it with --data)".to_string()
        }
        DataSource::Path(p) => format!("--data {}", p.display()),
    })?;
    Ok(path)
}

/// Installs the Ctrl-C handler: the first press (or SIGTERM, SIGHUP) asks
/// training to stop after the current step (with a checkpoint), the second
/// exits at once. Either way the exit status is 128 + the signal's number,
/// as a shell reports a program the signal ended: 130 for Ctrl-C, 143 for
/// SIGTERM ([`stop_status`]).
pub fn install_ctrl_c() -> Result<Arc<AtomicBool>> {
    // a hangup ignored where the program started (`nohup`) stays ignored:
    // ctrlc's handler replaces it. SIGINT and SIGTERM are handled whatever
    // they were (a script's background job starts with SIGINT ignored, and
    // `kill -INT` stopped such runs before)
    let hangup_ignored = signal::hangup_ignored();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // when the first signal was handled, and how many were (the flag may
    // be raised by a failed stdout too)
    let mut first: Option<std::time::Instant> = None;
    let mut calls = 0;
    ctrlc::set_handler(move || {
        calls += 1;
        if let Some(t) = first {
            // GNU `timeout -s INT` signals the program and then its process
            // group, the program again, microseconds apart: one stop asked
            // for, not two. Timed when the signals came where the signal
            // handler noted it (on Linux), else when this thread got them;
            // a hand's second press comes later than 100 ms
            let gap = signal::gap_before(calls - 1).unwrap_or_else(|| t.elapsed());
            if gap < Duration::from_millis(100) {
                return;
            }
            errln!("\ninterrupted again: exiting now");
            // a checkpoint being written is finished first: the run's files stay of one step
            trainer::session::exit_between_checkpoints(
                stop_status().into(),
                Duration::from_secs(60),
            );
        }
        first = Some(std::time::Instant::now());
        flag.store(true, Ordering::SeqCst);
        let again = match signal::last() {
            15 => "SIGTERM",
            1 => "SIGHUP",
            _ => "Ctrl-C",
        };
        if trainer::session::finishing() {
            errln!(
                "\nstopping the final test: every step is trained and saved, resuming takes the test ({again} again to quit at once)"
            );
        } else {
            errln!(
                "\nstopping after this step and saving a checkpoint ({again} again to quit at once)"
            );
        }
    })
    .context("installing the Ctrl-C handler")?;
    signal::record_signals(hangup_ignored);
    Ok(stop)
}

/// The exit status of a run the last signal stopped: 128 + its number (130,
/// SIGINT's, where none was recorded).
pub fn stop_status() -> u8 {
    128 + signal::last()
}

/// Which signal came. `ctrlc` runs one handler for SIGINT, SIGTERM and
/// SIGHUP and does not say which; on Linux a handler of ours goes before
/// its own, notes the number and calls it.
mod signal {
    use std::sync::atomic::{AtomicU8, Ordering};

    /// The number of the last signal (SIGINT's, 2, until one is noted).
    static LAST: AtomicU8 = AtomicU8::new(2);

    pub fn last() -> u8 {
        LAST.load(Ordering::SeqCst)
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    mod chain {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

        /// `ctrlc`'s handler (one function for all three signals).
        static CTRLC: AtomicUsize = AtomicUsize::new(0);

        /// When the last two signals came (ns of the monotonic clock), by
        /// their number's parity, and how many came.
        static ARRIVED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
        static COUNT: AtomicUsize = AtomicUsize::new(0);

        /// Notes the signal and when it came, then runs `ctrlc`'s handler:
        /// atomic stores, `clock_gettime` and a call, all async-signal-safe.
        extern "C" fn note_then_ctrlc(sig: libc::c_int) {
            super::LAST.store(sig as u8, Ordering::SeqCst);
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes the timespec given
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            // counted first: a signal of another kind in the middle of this
            // handler takes the next place (`ctrlc` is told after both)
            let k = COUNT.fetch_add(1, Ordering::SeqCst);
            ARRIVED[k % 2].store(
                (now.tv_sec as u64).wrapping_mul(1_000_000_000) + now.tv_nsec as u64,
                Ordering::SeqCst,
            );
            let handler = CTRLC.load(Ordering::SeqCst);
            if handler != 0 {
                // SAFETY: the value was read from `ctrlc`'s sigaction as a
                // one-argument handler (not SA_SIGINFO, not SIG_DFL/SIG_IGN)
                let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                handler(sig);
            }
        }

        /// How long after the signal before it the `k`-th (from 0) came, as
        /// the handler saw them, while both are the last two noted.
        pub fn gap_before(k: usize) -> Option<std::time::Duration> {
            if k == 0 || COUNT.load(Ordering::SeqCst) != k + 1 {
                return None;
            }
            let (before, at) = (
                ARRIVED[(k - 1) % 2].load(Ordering::SeqCst),
                ARRIVED[k % 2].load(Ordering::SeqCst),
            );
            Some(std::time::Duration::from_nanos(at.checked_sub(before)?))
        }

        /// The signals a handler is for.
        const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

        /// Whether SIGHUP is ignored now.
        pub fn hangup_ignored() -> bool {
            // SAFETY: sigaction writes the `sigaction` struct given
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut action) == 0
                    && action.sa_sigaction == libc::SIG_IGN
            }
        }

        /// Puts [`note_then_ctrlc`] before `ctrlc`'s handler of each
        /// signal, and SIGHUP back to ignored where it `hangup_ignored`.
        pub fn record_signals(hangup_ignored: bool) {
            for sig in SIGNALS {
                if sig == libc::SIGHUP && hangup_ignored {
                    // SAFETY: the disposition of one signal, to ignored
                    unsafe { libc::signal(sig, libc::SIG_IGN) };
                    continue;
                }
                // SAFETY: sigaction reads and writes the `sigaction` structs given
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, std::ptr::null(), &mut action) != 0
                        || action.sa_flags & libc::SA_SIGINFO != 0
                        || action.sa_sigaction == libc::SIG_DFL
                        || action.sa_sigaction == libc::SIG_IGN
                    {
                        continue;
                    }
                    let ours = note_then_ctrlc as extern "C" fn(libc::c_int) as usize;
                    if action.sa_sigaction != ours {
                        CTRLC.store(action.sa_sigaction, Ordering::SeqCst);
                        action.sa_sigaction = ours;
                        libc::sigaction(sig, &action, std::ptr::null_mut());
                    }
                }
            }
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub use chain::{gap_before, hangup_ignored, record_signals};

    /// Elsewhere no arrival is noted.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn gap_before(_k: usize) -> Option<std::time::Duration> {
        None
    }

    /// Elsewhere every stop reports SIGINT's status, and `ctrlc` handles
    /// the signals whatever they were.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn hangup_ignored() -> bool {
        false
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn record_signals(_hangup_ignored: bool) {}
}

/// Reads a corpus file.
pub fn read_corpus(path: &Path) -> Result<text8::Corpus> {
    Ok(text8::read_corpus(path)?)
}

/// For recipes whose step buffers are large
/// ([`trainer::Recipe::has_large_step_buffers`]), keeps glibc's allocator
/// from handing them back to the kernel after every use and faulting them in
/// again at the next: allocations up to 32 MiB come from the heap, and freed
/// heap memory is kept for reuse. `large` on two threads trains about 3%
/// faster for ~40 MiB more at the peak; the small models run slower with
/// it (~5% on one thread), so they keep the defaults (docs/PERFORMANCE.md).
pub fn tune_allocator(loaded: &trainer::LoadedRecipe) {
    if loaded.recipe.has_large_step_buffers() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets allocator parameters (under the allocator's lock).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
