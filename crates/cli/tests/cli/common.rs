//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_charlstm");

/// A paragraph in text8 form, repeated into a corpus of about 24 KB.
pub const PARAGRAPH: &str = " the quick brown fox jumps over the lazy dog while the cat sleeps on the warm \
    mat and the birds sing in the old oak tree near the river where children play every summer \
    day until the sun goes down behind the hills and the stars come out one by one";

pub fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.txt");
    std::fs::write(&p, PARAGRAPH.repeat(100)).unwrap();
    p
}

/// Waits until `child` trains `run` (its config is written before the
/// first step); fails if it exits first or takes over a minute.
pub fn wait_until_training(child: &mut std::process::Child, run: &Path) {
    let t0 = Instant::now();
    while !run.join("config.json").exists() {
        assert!(child.try_wait().unwrap().is_none(), "training exited early");
        assert!(t0.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tiny language-model run of `data` into `run` that would train for
/// hours, its stdout and stderr piped, once its first step is under way.
pub fn spawn_endless_training(data: &str, run: &Path) -> std::process::Child {
    let r = run.to_str().unwrap();
    let mut child = Command::new(BIN)
        .args(train_args(
            data,
            r,
            &["--steps", "1000000", "--summary", "1000000"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_training(&mut child, run);
    child
}

pub fn charlstm(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CHARLSTM_DEVICE")
        .output()
        .expect("runs the binary")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error message of a failed run; asserts exit code 1 and no panic.
pub fn fails(out: &Output) -> String {
    fails_with(out, 1)
}

/// The error message of a usage error (a flag's fault); asserts exit code 2
/// and no panic.
pub fn refused(out: &Output) -> String {
    fails_with(out, 2)
}

fn fails_with(out: &Output, code: i32) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A tiny language-model run's arguments (16 units, batch 8, 5 unrollings).
pub fn train_args<'a>(data: &'a str, run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--data",
        data,
        "--run",
        run,
        "--log",
        "plain",
        "--no-samples",
        "--set",
        "model.d_hidden=16",
        "--set",
        "data.batch_size=8",
        "--set",
        "data.num_unrollings=5",
    ];
    a.extend_from_slice(extra);
    if !extra.contains(&"--summary") {
        a.extend_from_slice(&["--summary", "10"]);
    }
    a
}

/// Tensors of a safetensors file read with the reference `safetensors` crate, sorted by name.
pub fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
        .collect();
    out.sort();
    out
}

/// A tiny mirror run's arguments (16 units, batch 8, windows of at most 4
/// words and 30 characters, 10 validation and 10 test windows).
pub fn mirror_train_args(d: &str, r: &str, steps: &str) -> Vec<String> {
    [
        "mirror",
        "train",
        "--data",
        d,
        "--run",
        r,
        "--log",
        "plain",
        "--steps",
        steps,
        "--summary",
        "10",
        "--set",
        "model.d_hidden=16",
        "--set",
        "model.d_embedding=8",
        "--set",
        "data.batch_size=8",
        "--set",
        "data.valid_windows=10",
        "--set",
        "data.test_windows=10",
        "--set",
        "data.max_chars=30",
        "--set",
        "data.max_words=4",
    ]
    .map(String::from)
    .to_vec()
}

/// [`charlstm`] with owned arguments.
pub fn charlstm_owned(args: &[String]) -> Output {
    charlstm(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs `args` with `stdin` (a file, or nothing), at most `limit`.
pub fn run_bounded(
    args: &[String],
    stdin: Option<&Path>,
    limit: Duration,
) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("CHARLSTM_DEVICE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match stdin {
        Some(p) => cmd.stdin(std::fs::File::open(p).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    let mut child = cmd.spawn().unwrap();
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            panic!("{args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
