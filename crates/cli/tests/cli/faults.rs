//! Bad input and faults: each case asserts a clear error naming what is
//! wrong, a non-zero exit, no panic, and no earlier work lost.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn zip(path: &Path, members: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

fn train_on(data: &Path, dir: &Path) -> String {
    let run = dir.join("run-on-bad-data");
    fails(&charlstm(&train_args(
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        &["--steps", "3"],
    )))
}

#[test]
fn bad_corpora_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = train_on(&d.join("missing.zip"), d);
    assert!(err.contains("missing.zip: no such file"), "{err}");

    std::fs::write(d.join("empty.txt"), b"").unwrap();
    let err = train_on(&d.join("empty.txt"), d);
    assert!(err.contains("empty.txt: the corpus is empty"), "{err}");

    zip(&d.join("none.zip"), &[]);
    let err = train_on(&d.join("none.zip"), d);
    assert!(
        err.contains("none.zip: expected a zip with exactly one member, found 0"),
        "{err}"
    );

    zip(&d.join("two.zip"), &[("a", b" x"), ("b", b" y")]);
    let err = train_on(&d.join("two.zip"), d);
    assert!(
        err.contains("two.zip: expected a zip with exactly one member, found 2 (a, b)"),
        "{err}"
    );

    let good = PARAGRAPH.repeat(100);
    zip(&d.join("good.zip"), &[("text8", good.as_bytes())]);
    let bytes = std::fs::read(d.join("good.zip")).unwrap();
    std::fs::write(d.join("truncated.zip"), &bytes[..bytes.len() / 2]).unwrap();
    let err = train_on(&d.join("truncated.zip"), d);
    assert!(
        err.contains("truncated.zip: not a readable zip archive"),
        "{err}"
    );
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 3;
    for b in &mut corrupt[mid..mid + 64] {
        *b ^= 0x5A;
    }
    std::fs::write(d.join("corrupt.zip"), &corrupt).unwrap();
    let err = train_on(&d.join("corrupt.zip"), d);
    assert!(err.contains("corrupt.zip"), "{err}");

    let mut bad = good.clone().into_bytes();
    bad[5000] = b'Q';
    std::fs::write(d.join("upper.txt"), &bad).unwrap();
    let err = train_on(&d.join("upper.txt"), d);
    assert!(
        err.contains("upper.txt: byte 0x51 ('Q') at offset 5000 is not in the text8 alphabet"),
        "{err}"
    );
    zip(&d.join("upper.zip"), &[("text8", &bad)]);
    let err = train_on(&d.join("upper.zip"), d);
    assert!(
        err.contains("upper.zip:text8: byte 0x51 ('Q') at offset 5000"),
        "{err}"
    );

    // shorter than the validation size, and than batch x unrollings
    std::fs::write(d.join("short.txt"), &good.as_bytes()[..900]).unwrap();
    let err = train_on(&d.join("short.txt"), d);
    assert!(
        err.contains("needs at least 1001 characters, has 900"),
        "{err}"
    );
    std::fs::write(d.join("short2.txt"), &good.as_bytes()[..1030]).unwrap();
    let err = train_on(&d.join("short2.txt"), d);
    assert!(
        err.contains("batch_size 8 x num_unrollings 5: needs at least 40 characters, has 30"),
        "{err}"
    );

    // a default datasets/text8.zip of the wrong size is not used
    std::fs::create_dir(d.join("datasets")).unwrap();
    std::fs::copy(d.join("good.zip"), d.join("datasets/text8.zip")).unwrap();
    let run = d.join("r");
    let out = Command::new(BIN)
        .args([
            "train",
            "--datasets",
            d.join("datasets").to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(
        err.contains("text8.zip") && err.contains("expected 31344016 bytes"),
        "{err}"
    );
}

#[test]
fn prepare_reports_non_utf8_input_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("latin1.txt");
    std::fs::write(&input, b"caf\xe9 au lait").unwrap();
    let output = dir.path().join("out.txt");
    let prepare = |input: &std::path::Path| {
        charlstm(&["prepare", input.to_str().unwrap(), output.to_str().unwrap()])
    };
    let err = fails(&prepare(&input));
    assert!(
        err.contains("latin1.txt: invalid UTF-8 at byte offset 3"),
        "{err}"
    );
    assert!(!output.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
    // UTF-16 is named by its byte-order mark
    let utf16 = dir.path().join("utf16.txt");
    let mut bytes = vec![0xff, 0xfe];
    bytes.extend("café".encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(&utf16, bytes).unwrap();
    let err = fails(&prepare(&utf16));
    assert!(
        err.contains("utf16.txt: UTF-16 text (by its byte-order mark)"),
        "{err}"
    );
    assert!(!output.exists());
    // letters outside a-z become spaces, as in Text8, and the user is told
    let accents = dir.path().join("accents.txt");
    std::fs::write(&accents, "Café au lait, naïve").unwrap();
    let out = prepare(&accents);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("note: 2 letters outside a-z (the first: 'é') became spaces"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        " caf au lait na ve"
    );
}

#[test]
fn bad_flags_and_recipe_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--set", "data.batch_size=0"],
            "data.batch_size must be at least 1, got 0",
        ),
        (
            &["--set", "model.d_hidden=-3"],
            "expected usize in `model.d_hidden`",
        ),
        (
            &["--set", "train.learning_rate=-1"],
            "train.learning_rate must be a positive number, got -1",
        ),
        (
            &["--set", "train.learnin_rate=1"],
            "unknown field `learnin_rate`",
        ),
        (
            &["--set", "model.keep_prob=1.5"],
            "model.keep_prob must be in (0, 1], got 1.5",
        ),
        (
            &["--recipe", "no-such-recipe"],
            "unknown recipe \"no-such-recipe\"",
        ),
    ];
    for (extra, want) in cases {
        let out = charlstm(&train_args(d, r, extra));
        // a --set the recipe cannot take is the flag's fault (status 2);
        // a recipe that does not exist is not
        let err = match extra[0] {
            "--set" => refused(&out),
            _ => fails(&out),
        };
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(
            !run.exists() || std::fs::read_dir(&run).unwrap().count() == 0,
            "{extra:?} left a run behind"
        );
    }
    // --steps wins over a --set of the same key, as its help says
    let out = ok(&charlstm(&train_args(
        d,
        r,
        &["--set", "train.steps=9", "--steps", "4"],
    )));
    assert!(out.contains("done: 4 steps"), "{out}");
    std::fs::remove_dir_all(&run).unwrap();
    // an empty variable that stands for a flag is no setting, not a flag
    // without a value; an empty kernels' choice none, not an unknown one
    let out = Command::new(BIN)
        .args(["sample", "--run", "/nonexistent"])
        .env("CHARLSTM_DEVICE", "")
        .env("CHARLSTM_KERNELS", "")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/nonexistent") && !err.contains("--device") && !err.contains("KERNELS"),
        "{err}"
    );
    let err = fails(&charlstm(&["train", "--recipe", "mirror", "--data", d]));
    assert!(
        err.contains("use `charlstm mirror train --recipe mirror`"),
        "{err}"
    );
    // said before the overrides, which name the other task's keys
    let err = fails(&charlstm(&[
        "train",
        "--recipe",
        "mirror",
        "--set",
        "data.num_unrollings=5",
        "--data",
        d,
    ]));
    assert!(
        err.contains("use `charlstm mirror train --recipe mirror`"),
        "{err}"
    );
    // a device not compiled in
    if !cfg!(feature = "ndarray") {
        let err = fails(&charlstm(&train_args(d, r, &["--device", "ndarray"])));
        assert!(
            err.contains("--device ndarray: this binary was built without the `ndarray` feature"),
            "{err}"
        );
    }
    // clap's own usage errors: unknown device, conflicting options, values
    // out of a flag's range, negative numbers named as such (exit code 2, usage)
    for args in [
        vec!["train", "--device", "tpu"],
        vec!["train", "--run", "a", "--resume", "b"],
        vec!["sample"],
        vec!["train", "--steps", "0"],
        vec!["train", "--summary", "0"],
        vec!["train", "--threads", "0"],
        vec!["sample", "--run", "r", "--top-p", "0"],
        vec!["sample", "--run", "r", "--top-p", "1.5"],
        vec!["sample", "--run", "r", "--temperature", "NaN"],
        vec!["sample", "--run", "r", "--temperature", "-1"],
        vec!["eval", "--run", "r", "--dynamic", "--dynamic-lr", "-1"],
        vec!["eval", "--run", "r", "--limit", "1"],
        vec!["eval", "--run", "r", "--dynamic", "--dynamic-stats", "1"],
        vec!["eval", "--run", "r", "--dynamic", "--dynamic-lr", "1e300"],
        vec!["sample", "--run", "r", "--length", "268435455"],
        vec!["train", "--set", "x"],
        vec!["train", "--set", "=3"],
        vec!["sample", "--run", "r", "--prime", "123"],
        vec!["train", "--resume", "r", "--runs", "elsewhere"],
        vec!["train", "--force"],
        vec!["mirror", "eval", "--run", "r", "--words", "0"],
        vec!["mirror", "eval", "--run", "r", "--words", "5-3"],
        vec!["mirror", "eval", "--run", "r", "--words", "1-3,,4"],
        vec!["mirror", "eval", "--run", "r", "--words", ""],
    ] {
        let out = charlstm(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("error:")
                && (err.contains("Usage:") || err.contains("--help"))
                && !err.contains("panicked"),
            "{err}"
        );
        if args.contains(&"-1") {
            assert!(err.contains("\"-1\" is not a number"), "{err}");
        }
        if args.contains(&"--words") {
            assert!(
                err.contains("--words") && err.contains("FIRST-LAST ranges"),
                "{err}"
            );
        }
        if args.contains(&"--force") {
            assert!(err.contains("--loss-trace"), "{err}");
        }
        if args.contains(&"123") {
            assert!(
                err.contains("'1' at position 0 is not in a-z or space"),
                "{err}"
            );
        }
        if args.contains(&"1e300") {
            assert!(err.contains("not a number from 0 to 100"), "{err}");
        }
    }
}

#[test]
fn broken_checkpoints_are_reported_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let small = dir.path().join("small");
    let wide = dir.path().join("wide");
    ok(&charlstm(&train_args(
        d,
        small.to_str().unwrap(),
        &["--steps", "11"],
    )));
    ok(&charlstm(&train_args(
        d,
        wide.to_str().unwrap(),
        &["--steps", "11", "--set", "model.d_hidden=24"],
    )));
    // a checkpoint of another model shape
    std::fs::copy(
        small.join("checkpoint.safetensors"),
        wide.join("checkpoint.safetensors"),
    )
    .unwrap();
    let err = fails(&charlstm(&[
        "train",
        "--resume",
        wide.to_str().unwrap(),
        "--steps",
        "20",
    ]));
    assert!(
        err.contains("checkpoint.safetensors: does not fit this model"),
        "{err}"
    );
    assert!(
        err.contains("layers.0.blocks.0.wh: expected shape [24, 24], found [16, 16]"),
        "{err}"
    );
    // truncated
    let ck = std::fs::read(small.join("checkpoint.safetensors")).unwrap();
    std::fs::write(small.join("checkpoint.safetensors"), &ck[..ck.len() - 100]).unwrap();
    let err = fails(&charlstm(&[
        "train",
        "--resume",
        small.to_str().unwrap(),
        "--steps",
        "20",
    ]));
    assert!(
        err.contains("checkpoint.safetensors: truncated safetensors file"),
        "{err}"
    );
    // corrupt weights for sampling
    let mut w = std::fs::read(small.join("model.safetensors")).unwrap();
    w[8] = b'!';
    std::fs::write(small.join("model.safetensors"), &w).unwrap();
    let err = fails(&charlstm(&["sample", "--run", small.to_str().unwrap()]));
    assert!(
        err.contains("model.safetensors: corrupt safetensors header"),
        "{err}"
    );
    // not a run directory
    let err = fails(&charlstm(&[
        "sample",
        "--run",
        dir.path().to_str().unwrap(),
    ]));
    assert!(
        err.contains("not a run directory (no config.json)"),
        "{err}"
    );
}

/// A diverging run stops with a message and keeps its last good checkpoint.
#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    let err = fails(&charlstm(&train_args(
        data.to_str().unwrap(),
        r,
        &[
            "--steps",
            "30",
            "--set",
            "train.learning_rate=1e38",
            "--set",
            "train.clip_norm=0",
        ],
    )));
    assert!(
        err.contains("the training loss is") && err.contains("at step 10: stopping"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint (step 1)"), "{err}");
    // the log ends with it
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    let last = log.lines().last().unwrap();
    assert!(
        last.starts_with("ended by an error after 11 steps: the training loss is"),
        "{log}"
    );
    let t = tensors(&run.join("model.safetensors"));
    for (name, _, bytes) in &t {
        for c in bytes.chunks_exact(4) {
            assert!(
                f32::from_le_bytes(c.try_into().unwrap()).is_finite(),
                "{name} not finite"
            );
        }
    }
    ok(&charlstm(&["sample", "--run", r, "--length", "10"]));
}

/// Killing the process at any moment (SIGKILL, no chance to clean up) never
/// leaves a checkpoint that does not load: files are replaced by rename.
#[cfg(unix)]
#[test]
fn sigkill_at_any_moment_leaves_loadable_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    let ck = run.join("checkpoint.safetensors");
    // a large model with a checkpoint every step: much of the time is spent saving
    let mut killed_with_checkpoint = 0;
    for k in 0..8u64 {
        let args: Vec<&str> = if ck.exists() {
            vec![
                "train",
                "--resume",
                r,
                "--steps",
                "100000",
                "--log",
                "plain",
                "--no-samples",
            ]
        } else {
            let _ = std::fs::remove_dir_all(&run);
            train_args(
                d,
                r,
                &[
                    "--steps",
                    "100000",
                    "--summary",
                    "1",
                    "--set",
                    "model.d_hidden=192",
                ],
            )
        };
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(900 + 137 * k));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if ck.exists() {
            killed_with_checkpoint += 1;
            tensors(&ck); // parses completely
            tensors(&run.join("model.safetensors"));
        }
    }
    assert!(
        killed_with_checkpoint >= 4,
        "only {killed_with_checkpoint} kills after a first checkpoint"
    );
    // and the run continues from where it was last killed
    let bytes = std::fs::read(&ck).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let step: u64 = meta.metadata().as_ref().unwrap()["step"].parse().unwrap();
    let target = (step + 2).to_string();
    let out = ok(&charlstm(&[
        "train",
        "--resume",
        r,
        "--steps",
        &target,
        "--log",
        "plain",
        "--no-samples",
    ]));
    assert!(out.contains(&format!("done: {target} steps")), "{out}");
}

/// A full disk while saving (simulated with a file-size limit, which makes
/// `write` fail as a full disk does) is an error naming the file, and the
/// previous checkpoint stays as it was, and resumes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn disk_full_while_saving_keeps_the_previous_checkpoint() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    ok(&charlstm(&train_args(
        data.to_str().unwrap(),
        r,
        &[
            "--steps",
            "11",
            "--set",
            "train.optimizer=adam",
            "--set",
            "train.learning_rate=0.01",
        ],
    )));
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let limit_kib = (before.len() / 1024 / 2).max(1);
    let mut bash = Command::new("bash");
    // SIGXFSZ at its default (kill), whatever this process has (bash
    // cannot reset a signal ignored when it started): the program ignores
    // it itself
    // SAFETY: only `signal`, async-signal-safe, between fork and exec
    unsafe {
        bash.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            Ok(())
        })
    };
    let out = bash
        .args([
            "-c",
            &format!("ulimit -f {limit_kib}; exec \"$0\" \"$@\""),
            BIN,
            "train",
            "--resume",
            r,
            "--steps",
            "21",
            "--log",
            "plain",
        ])
        .output()
        .unwrap();
    // the first file of the save past the limit (a plot, before the checkpoint)
    let err = fails(&out);
    assert!(
        err.contains(".tmp-")
            && err.contains("File too large")
            && err.contains("the run keeps its last checkpoint")
            && err.contains(&format!("continue with: charlstm train --resume {r}")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(run.join("checkpoint.safetensors")).unwrap(),
        before,
        "previous checkpoint changed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // the log ends with what ended the session, not mid-way
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    let last = log.lines().last().unwrap();
    assert!(
        last.starts_with("ended by an error after ") && last.contains("File too large"),
        "{log}"
    );
    ok(&charlstm(&[
        "train", "--resume", r, "--steps", "21", "--log", "plain",
    ]));
}

/// Every recipe and override of a bench is checked before the first is
/// timed: a bad one is an error with nothing measured, not one after an hour.
#[test]
fn a_bench_checks_every_recipe_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = charlstm(&[
        "bench",
        "-r",
        "notebook-char",
        "-r",
        "mirror",
        "--set",
        "data.num_unrollings=5",
        "--steps",
        "1",
        "--data",
        data.to_str().unwrap(),
    ]);
    let err = refused(&out);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("num_unrollings"), "{err}");
}
