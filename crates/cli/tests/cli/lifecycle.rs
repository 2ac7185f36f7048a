//! The run lifecycle, the same for both tasks: what resume checks, the lock,
//! a run stopped before its first checkpoint, leftovers of killed saves,
//! weights that are not finite.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Resume refuses a different text of the same length, for both tasks.
#[test]
fn resume_refuses_another_text_of_the_same_length() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let text = std::fs::read_to_string(&data).unwrap();
    let other = dir.path().join("other.txt");
    // same length, one word changed
    std::fs::write(&other, text.replacen("quick", "quack", 1)).unwrap();
    let (d, o) = (data.to_str().unwrap(), other.to_str().unwrap());
    let lm = dir.path().join("lm");
    let l = lm.to_str().unwrap();
    ok(&charlstm(&train_args(d, l, &["--steps", "3"])));
    let err = fails(&charlstm(&[
        "train", "--resume", l, "--data", o, "--steps", "6",
    ]));
    assert!(
        err.contains("cannot resume") && err.contains("is another text"),
        "{err}"
    );
    let mirror = dir.path().join("mirror");
    let m = mirror.to_str().unwrap();
    ok(&charlstm_owned(&mirror_train_args(d, m, "3")));
    let err = fails(&charlstm(&[
        "mirror", "train", "--resume", m, "--data", o, "--steps", "6",
    ]));
    assert!(
        err.contains("cannot resume") && err.contains("is another text"),
        "{err}"
    );
    // the run's own text resumes, for both
    ok(&charlstm(&[
        "train", "--resume", l, "--steps", "6", "--log", "plain",
    ]));
    ok(&charlstm(&[
        "mirror", "train", "--resume", m, "--steps", "6", "--log", "plain",
    ]));
}

/// A recipe value edited in config.json (or set on the command line) is
/// refused, except the schedule's length; resuming past the end says so.
#[test]
fn resume_refuses_an_edited_recipe_and_says_when_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "4"])));
    let config = run.join("config.json");
    let original = std::fs::read_to_string(&config).unwrap();
    let edited = original.replace("\"valid_size\": 1000", "\"valid_size\": 500");
    assert_ne!(edited, original);
    std::fs::write(&config, &edited).unwrap();
    let err = fails(&charlstm(&["train", "--resume", r, "--steps", "8"]));
    assert!(err.contains("data.valid_size differs"), "{err}");
    // a value no recipe may have: the file is named (it is the file's
    // fault, read before the command's overrides)
    let zero = original.replace("\"summary\": 10", "\"summary\": 0");
    assert_ne!(zero, original);
    std::fs::write(&config, &zero).unwrap();
    let err = fails(&charlstm(&["train", "--resume", r, "--steps", "8"]));
    assert!(
        err.contains("config.json: recipe notebook-char: train.summary must be at least 1"),
        "{err}"
    );
    std::fs::write(&config, &original).unwrap();
    let err = fails(&charlstm(&[
        "train",
        "--resume",
        r,
        "--steps",
        "8",
        "--set",
        "train.learning_rate=1",
    ]));
    assert!(err.contains("train.learning_rate differs"), "{err}");
    let err = fails(&charlstm(&["train", "--resume", r, "--steps", "4"]));
    assert!(
        err.contains("nothing to do") && err.contains("--steps"),
        "{err}"
    );
    let out = ok(&charlstm(&[
        "train",
        "--resume",
        r,
        "--steps",
        "8",
        "--summary",
        "2",
        "--log",
        "plain",
    ]));
    assert!(out.contains("done: 8 steps"), "{out}");
}

/// A run whose process died before its first checkpoint resumes from step
/// 0; leftovers of a killed save are removed; the report after resuming is
/// of the step reached.
#[test]
fn a_run_without_a_checkpoint_starts_again_and_leftovers_go() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "3"])));
    // without its checkpoint but with trained files, a run is not started
    // again: its model past the first step, or its metrics alone
    std::fs::remove_file(run.join("checkpoint.safetensors")).unwrap();
    let err = fails(&charlstm(&["train", "--resume", r, "--steps", "5"]));
    assert!(err.contains("has trained files"), "{err}");
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    std::fs::remove_file(run.join("model.safetensors")).unwrap();
    let err = fails(&charlstm(&["train", "--resume", r, "--steps", "5"]));
    assert!(err.contains("has trained files"), "{err}");
    std::fs::write(run.join("model.safetensors"), model).unwrap();
    // those of its first step alone (a stop in its first save): started again
    let first = dir.path().join("first");
    let f = first.to_str().unwrap();
    ok(&charlstm(&train_args(d, f, &["--steps", "1"])));
    std::fs::remove_file(first.join("checkpoint.safetensors")).unwrap();
    let out = ok(&charlstm(&[
        "train", "--resume", f, "--steps", "2", "--log", "plain",
    ]));
    assert!(out.contains("from step 0 of 2"), "{out}");
    for f in ["model.safetensors", "metrics.csv"] {
        std::fs::remove_file(run.join(f)).unwrap();
    }
    let leftover = run.join(".checkpoint.safetensors.tmp-999999");
    std::fs::write(&leftover, b"half a checkpoint").unwrap();
    let out = ok(&charlstm(&[
        "train", "--resume", r, "--steps", "5", "--log", "plain",
    ]));
    assert!(
        out.contains("from step 0 of 5") && out.contains("done: 5 steps"),
        "{out}"
    );
    assert!(!leftover.exists());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(
        log.contains("no checkpoint yet: starting again from step 0"),
        "{log}"
    );
    // the same as a run that never stopped
    let straight = dir.path().join("straight");
    ok(&charlstm(&train_args(
        d,
        straight.to_str().unwrap(),
        &["--steps", "5"],
    )));
    assert_eq!(
        tensors(&run.join("model.safetensors")),
        tensors(&straight.join("model.safetensors"))
    );
}

/// Two processes never train one run: the second is refused while the
/// first holds the lock; SIGTERM stops the first with status 143.
#[cfg(unix)]
#[test]
fn a_run_in_use_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "2"])));
    let mut first = Command::new(BIN)
        .args([
            "train",
            "--resume",
            r,
            "--steps",
            "1000000",
            "--summary",
            "1000000",
        ])
        .args(["--log", "plain", "--no-samples"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = run.join("train.log");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("resumed at step")
    {
        assert!(
            t0.elapsed().as_secs() < 60,
            "the first process did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = fails(&charlstm(&["train", "--resume", r, "--steps", "2000000"]));
    assert!(err.contains("in use by another charlstm process"), "{err}");
    // SIGTERM (a service manager's stop) stops it as Ctrl-C does, with
    // SIGTERM's status as a shell reports it (128 + 15)
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let expected = if cfg!(all(target_os = "linux", target_env = "gnu")) {
        143
    } else {
        130
    };
    assert_eq!(first.wait().unwrap().code(), Some(expected));
    // once it is gone, the run is free again
    ok(&charlstm(&[
        "eval", "--run", r, "--data", d, "--limit", "500",
    ]));
}

/// A hangup ignored where training started (`nohup`, `trap '' HUP`) stays
/// ignored: the run goes on; SIGTERM still stops it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn an_ignored_hangup_stays_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' HUP; exec "$@""#)
        .arg("sh")
        .arg(BIN)
        .args(train_args(
            d,
            r,
            &["--steps", "1000000", "--summary", "1000000"],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until_training(&mut child, &run);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // a handled hangup stops after the step at hand, well within this
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the ignored hangup stopped the run"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(143));
}

/// A closed stdout (`charlstm train | head`) stops the run as Ctrl-C does,
/// with a checkpoint and the way to go on (on stderr), status 141: the
/// steps since the last checkpoint are not lost.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_closed_stdout_stops_training_with_a_checkpoint() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut child = Command::new(BIN)
        .args(train_args(d, r, &["--steps", "1000000", "--summary", "5"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // the start line, then the first summary's lines
    while !line.contains("Average loss at step 5") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "stdout ended");
    }
    // the reader quits, as `head` does
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(
        err.contains("stdout closed: stopping the run") && err.contains("continue with"),
        "{err}"
    );
    let ck = tensors(&run.join("checkpoint.safetensors"));
    assert!(!ck.is_empty());
    ok(&charlstm(&[
        "train", "--resume", r, "--steps", "20", "--log", "plain",
    ]));
}

/// `--log bar` where stderr is no terminal (a log file, a pipe) draws no
/// bar, and the summaries go to stdout as in plain mode, not nowhere.
#[test]
fn a_bar_without_a_terminal_still_gives_the_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut args = train_args(d, r, &["--steps", "10", "--summary", "5"]);
    let mode = args.iter().position(|a| *a == "plain").unwrap();
    args[mode] = "bar";
    let out = ok(&charlstm(&args));
    assert!(out.contains("Average loss at step 5"), "{out}");
}

/// Two signals microseconds apart (GNU `timeout -s INT` signals the
/// program, then its process group) are one stop, with a checkpoint, not a
/// second Ctrl-C that quits at once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn two_signals_at_once_are_one_stop() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let child = spawn_endless_training(data.to_str().unwrap(), &run);
    // two kinds, so that the kernel cannot merge them into one
    let pid = child.id().to_string();
    assert!(
        Command::new("sh")
            .args(["-c", "kill -INT $0; kill -TERM $0", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!err.contains("interrupted again"), "{err}");
    assert!(stdout.contains("continue with"), "{stdout}\n{err}");
    assert!(matches!(out.status.code(), Some(130 | 143)), "{err}");
    assert!(run.join("checkpoint.safetensors").exists());
}

/// Weights that are not finite are refused by sample and eval.
#[test]
fn weights_that_are_not_finite_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "2"])));
    let path = run.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut broken = bytes.clone();
    // the first value after the header becomes NaN
    broken[8 + n..8 + n + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &broken).unwrap();
    let err = fails(&charlstm(&["sample", "--run", r, "--length", "5"]));
    assert!(err.contains("not finite"), "{err}");
    let err = fails(&charlstm(&["eval", "--run", r, "--data", d]));
    assert!(err.contains("not finite"), "{err}");
}

/// Two Ctrl-C in quick succession, at several moments of a run that saves
/// at every step: the weights file and the checkpoint are always of one step.
#[cfg(unix)]
#[test]
fn a_second_ctrl_c_leaves_the_run_of_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let step_of = |p: &std::path::Path| -> u64 {
        let bytes = std::fs::read(p).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        meta.metadata().as_ref().unwrap()["step"].parse().unwrap()
    };
    for k in 0..4u64 {
        let run = dir.path().join(format!("run{k}"));
        let mut child = Command::new(BIN)
            .args(train_args(
                d,
                run.to_str().unwrap(),
                &[
                    "--steps",
                    "100000",
                    "--summary",
                    "1",
                    "--set",
                    "model.d_hidden=192",
                ],
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ck = run.join("checkpoint.safetensors");
        let t0 = std::time::Instant::now();
        while !ck.exists() {
            assert!(t0.elapsed().as_secs() < 60, "no checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(50 + 37 * k));
        for _ in 0..2 {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            // past the 100 ms within which a second signal is the same stop
            std::thread::sleep(std::time::Duration::from_millis(105 + 3 * k));
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130));
        assert_eq!(
            step_of(&ck),
            step_of(&run.join("model.safetensors")),
            "attempt {k}: the checkpoint and the weights are of different steps"
        );
    }
}

/// A run whose weights overflow stops, and what it keeps is finite: the
/// checkpoint it calls good loads and samples.
#[test]
fn a_diverging_run_keeps_only_finite_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let err = fails(&charlstm(&train_args(
        d,
        r,
        &[
            "--steps",
            "30",
            "--summary",
            "1",
            "--set",
            "train.learning_rate=1e308",
            "--set",
            "train.clip_norm=0",
        ],
    )));
    assert!(
        err.contains("not finite") || err.contains("the training loss is"),
        "{err}"
    );
    if run.join("model.safetensors").exists() {
        for (name, _, bytes) in tensors(&run.join("model.safetensors")) {
            for c in bytes.chunks_exact(4) {
                assert!(
                    f32::from_le_bytes(c.try_into().unwrap()).is_finite(),
                    "{name}"
                );
            }
        }
        ok(&charlstm(&["sample", "--run", r, "--length", "10"]));
    } else {
        assert!(err.contains("No checkpoint was written"), "{err}");
        // the same --run again says what is there and how to start over
        let again = fails(&charlstm(&train_args(d, r, &["--steps", "30"])));
        assert!(
            again.contains("without a checkpoint") && again.contains("delete it"),
            "{again}"
        );
    }
}

/// A new `--summary` on resume keeps the rows the run already has.
#[test]
fn resuming_with_another_summary_interval_keeps_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "25"])));
    ok(&charlstm(&[
        "train",
        "--resume",
        r,
        "--steps",
        "31",
        "--summary",
        "3",
        "--log",
        "plain",
    ]));
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let steps: Vec<&str> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["0", "10", "20", "27", "30"], "{metrics}");
}

/// A `metrics.csv` short of the checkpoint's last row (edited, or left by
/// a kill between the checkpoint and the metrics of a version that wrote
/// the checkpoint first) loses no history: the checkpoint holds the rows,
/// and resuming writes them back.
#[test]
fn a_kill_before_the_metrics_are_written_loses_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "21"])));
    let metrics = run.join("metrics.csv");
    let whole = std::fs::read_to_string(&metrics).unwrap();
    let rows: Vec<&str> = whole.lines().collect();
    assert_eq!(rows.len(), 4, "{whole}");
    std::fs::write(&metrics, rows[..3].join("\n") + "\n").unwrap();
    ok(&charlstm(&[
        "train", "--resume", r, "--steps", "31", "--log", "plain",
    ]));
    let after = std::fs::read_to_string(&metrics).unwrap();
    let steps: Vec<&str> = after
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["0", "10", "20", "30"], "{after}");
    assert!(after.starts_with(&whole), "{after}\nagainst\n{whole}");
}

/// A run's log and lock are written only as regular files: a symbolic
/// link put in their place is not followed (what it points to is left as
/// it was), a FIFO is not waited on; each is refused, naming the file.
#[cfg(unix)]
#[test]
fn run_files_are_not_written_through_links_or_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "3"])));
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    for (name, fifo) in [("train.log", false), (".lock", false), ("train.log", true)] {
        let file = run.join(name);
        let _ = std::fs::remove_file(&file);
        if fifo {
            assert!(
                Command::new("mkfifo")
                    .arg(&file)
                    .status()
                    .unwrap()
                    .success()
            );
        } else {
            std::os::unix::fs::symlink(&victim, &file).unwrap();
        }
        let args: Vec<String> = ["train", "--resume", r, "--steps", "6"]
            .map(String::from)
            .to_vec();
        let (code, err) = run_bounded(&args, None, Duration::from_secs(120));
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}: not a regular file")),
            "{name}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "{name}");
        std::fs::remove_file(&file).unwrap();
    }
}

/// `--loss-trace`: a run refused before it starts leaves an old trace as it
/// was and no new one; `--force` replaces the file's name, not its bytes
/// (another hard link to it keeps them), with one loss a step.
#[test]
fn a_loss_trace_replaces_only_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "3"])));
    let old = dir.path().join("old.txt");
    std::fs::write(&old, "keep\n").unwrap();
    let link = dir.path().join("link.txt");
    std::fs::hard_link(&old, &link).unwrap();
    let new = dir.path().join("new.txt");
    let trace = |path: &std::path::Path, steps: &str| {
        let args = ["train", "--resume", r, "--steps", steps, "--loss-trace"];
        let mut args: Vec<&str> = args.to_vec();
        args.extend([path.to_str().unwrap(), "--force"]);
        charlstm(&args)
    };
    // nothing left to train: refused before training starts
    for path in [&old, &new] {
        let err = fails(&trace(path, "3"));
        assert!(err.contains("nothing to do"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "keep\n");
    assert!(!new.exists());
    ok(&trace(&old, "7"));
    assert_eq!(std::fs::read_to_string(&old).unwrap().lines().count(), 4);
    assert_eq!(std::fs::read_to_string(&link).unwrap(), "keep\n");
}

/// Paths that are not UTF-8 (the run directory, the corpus given with
/// `--data`) are used and reported (lossily), never a panic.
#[cfg(unix)]
#[test]
fn a_run_directory_that_is_not_utf8_is_reported() {
    use std::os::unix::ffi::OsStringExt;
    let dir = tempfile::tempdir().unwrap();
    // a corpus whose name is not UTF-8 either
    let mut name = dir.path().as_os_str().to_os_string().into_vec();
    name.extend(b"/corpus-\xff.txt");
    let data = std::path::PathBuf::from(std::ffi::OsString::from_vec(name));
    std::fs::rename(corpus(dir.path()), &data).unwrap();
    let mut name = dir.path().as_os_str().to_os_string().into_vec();
    name.extend(b"/run-\xff");
    let run = std::ffi::OsString::from_vec(name);
    let out = Command::new(BIN)
        .args(["train", "--data"])
        .arg(&data)
        .arg("--run")
        .arg(&run)
        .args([
            "--log",
            "json",
            "--steps",
            "3",
            "--no-samples",
            "--set",
            "model.d_hidden=8",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"event\":\"done\"") && stdout.contains("run-\u{fffd}"),
        "{stdout}"
    );
    // resumed without --data: the corpus's path is asked for, not guessed
    let out = Command::new(BIN)
        .args(["train", "--resume"])
        .arg(&run)
        .args(["--steps", "5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("give the corpus again with --data"), "{err}");
    let out = Command::new(BIN)
        .args(["train", "--resume"])
        .arg(&run)
        .args(["--steps", "5", "--log", "plain", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `prepare` never touches a file that happens to have its temporary name.
#[test]
fn prepare_leaves_a_file_named_like_its_temporary_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("book.txt.tmp");
    std::fs::write(&input, "The Book.").unwrap();
    let output = dir.path().join("book.txt");
    ok(&charlstm(&[
        "prepare",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "The Book.");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), " the book");
}

/// A run saved before `model.recurrent_keep_prob` existed (its
/// `config.json` names none) still evaluates, samples and resumes.
#[test]
fn a_run_saved_before_dropconnect_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "3"])));
    let config = run.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    // the model's configuration (the recipe section holds the recipe's own keys)
    let fields = json.pointer_mut("/model").unwrap().as_object_mut().unwrap();
    assert!(fields.remove("recurrent_keep_prob").is_some());
    std::fs::write(&config, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let out = ok(&charlstm(&["eval", "--run", r, "--data", d]));
    assert!(out.contains("bits per character"), "{out}");
    ok(&charlstm(&["sample", "--run", r, "--length", "20"]));
    let out = ok(&charlstm(&[
        "train", "--resume", r, "--steps", "5", "--log", "plain",
    ]));
    assert!(out.contains("done: 5 steps"), "{out}");
}

/// A stop anywhere in a run's first or last save (strace kills the process
/// at each of their renames: the model's, the metrics', the plots', the
/// checkpoint's) leaves a run whose resume ends where the uninterrupted run
/// did: the same model and metrics. A save writes its checkpoint last, so
/// a stop leaves the checkpoint of the save before (none in the first: the
/// run starts again), never one with nothing left to train beside a model
/// and metrics of the save before.
#[cfg(target_os = "linux")]
#[test]
fn a_kill_during_a_save_is_made_good_by_resuming() {
    let traced = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output();
    if !traced.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "strace cannot trace here: a_kill_during_a_save_is_made_good_by_resuming not run"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let whole = dir.path().join("whole");
    let trace = dir.path().join("renames");
    const RENAMES: &str = "rename,renameat,renameat2";
    let strace = |inject: Option<usize>, args: &[&str]| {
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-o"])
            .arg(&trace)
            .args(["-e", &format!("trace={RENAMES}")]);
        if let Some(n) = inject {
            c.args(["-e", &format!("inject={RENAMES}:signal=SIGKILL:when={n}")]);
        }
        c.arg(BIN)
            .args(args)
            .env_remove("CHARLSTM_DEVICE")
            .output()
            .unwrap()
    };
    let out = strace(
        None,
        &train_args(d, whole.to_str().unwrap(), &["--steps", "30"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the saves' renames, 1-based (config.json's and tokenizer.json's,
    // before any step, left out), all by one thread (strace counts a kill's
    // renames per thread) through one call
    let trace = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = trace
        .lines()
        .filter(|l| {
            ["rename(", "renameat(", "renameat2("]
                .iter()
                .any(|c| l.contains(c))
        })
        .collect();
    let caller = |l: &str| l.split('(').next().unwrap_or_default().to_string();
    assert!(
        calls.iter().all(|l| caller(l) == caller(calls[0])),
        "{calls:#?}"
    );
    let renames: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.contains("config.json") && !l.contains("tokenizer.json"))
        .map(|(k, _)| k + 1)
        .collect();
    // every rename of the first save and of the last: the model, the
    // metrics, four plots, the checkpoint
    let per_save = 7;
    assert!(renames.len() >= 2 * per_save, "{renames:?}");
    let ends = renames[..per_save]
        .iter()
        .chain(&renames[renames.len() - per_save..]);
    for &when in ends {
        let run = dir.path().join(format!("killed-{when}"));
        let r = run.to_str().unwrap();
        let killed = strace(Some(when), &train_args(d, r, &["--steps", "30"]));
        assert!(!killed.status.success(), "rename {when}: not killed");
        let resumed = charlstm(&["train", "--resume", r, "--log", "plain"]);
        let err = String::from_utf8_lossy(&resumed.stderr);
        assert!(
            resumed.status.success() || err.contains("nothing to do"),
            "rename {when}: {err}"
        );
        assert_eq!(
            tensors(&run.join("model.safetensors")),
            tensors(&whole.join("model.safetensors")),
            "rename {when}"
        );
        // the columns of the training, not its timing
        let metrics = |run: &std::path::Path| -> Vec<String> {
            let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
            text.lines()
                .map(|l| l.split(',').take(8).collect::<Vec<_>>().join(","))
                .collect()
        };
        assert_eq!(metrics(&run), metrics(&whole), "rename {when}");
    }
}
