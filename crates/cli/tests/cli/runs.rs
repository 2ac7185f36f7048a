//! Run directories, resume, sampling, evaluation, preparing text.

use std::process::Command;

use crate::common::*;

#[test]
fn train_writes_a_self_describing_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let out = ok(&charlstm(&train_args(d, r, &["--steps", "21"])));
    assert!(out.contains("Average loss at step 0:"), "{out}");
    assert!(out.contains("Validation set perplexity:"), "{out}");
    assert!(out.contains("done: 21 steps"), "{out}");
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "checkpoint.safetensors",
        "metrics.csv",
        "train.log",
        "loss.png",
        "perplexity.png",
        "loss.svg",
        "perplexity.svg",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // an independent safetensors reader sees the notebook cell's tensors, named and shaped
    let t = tensors(&run.join("model.safetensors"));
    let shapes: Vec<(&str, &[usize])> = t
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_slice()))
        .collect();
    assert!(
        shapes.contains(&("layers.0.blocks.0.wx", &[27, 16][..])),
        "{shapes:?}"
    );
    assert!(
        shapes.contains(&("layers.0.blocks.3.wh", &[16, 16][..])),
        "{shapes:?}"
    );
    assert!(shapes.contains(&("w", &[16, 27][..])), "{shapes:?}");
    assert!(shapes.contains(&("b", &[1, 27][..])), "{shapes:?}");
    assert_eq!(t.len(), 14);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 3, "{metrics}"); // steps 0, 10, 20
    assert!(metrics.starts_with("step,loss,lr,minibatch_ppl,valid_ppl,valid_bpc"));
    assert_eq!(&std::fs::read(run.join("loss.png")).unwrap()[1..4], b"PNG");
    let tok = std::fs::read_to_string(run.join("tokenizer.json")).unwrap();
    assert!(tok.contains("\"char\""), "{tok}");

    // a run directory is never overwritten
    let err = fails(&charlstm(&train_args(d, r, &["--steps", "5"])));
    assert!(
        err.contains("already exists") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.csv")).unwrap(),
        metrics
    );

    // sampling: reproducible by seed, primed, of the asked length
    let s1 = ok(&charlstm(&[
        "sample", "--run", r, "--prime", "The ", "--length", "40", "--seed", "3", "-n", "2",
    ]));
    let s2 = ok(&charlstm(&[
        "sample", "--run", r, "--prime", "the ", "--length", "40", "--seed", "3", "-n", "2",
    ]));
    assert_eq!(s1, s2);
    let lines: Vec<&str> = s1.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines.iter().all(|l| l.len() == 44 && l.starts_with("the ")),
        "{lines:?}"
    );
    let greedy = ok(&charlstm(&[
        "sample",
        "--run",
        r,
        "--temperature",
        "0",
        "--length",
        "10",
        "--prime",
        "the",
    ]));
    assert_eq!(greedy.trim_end().len(), 13);

    // evaluation on any text8-form file
    let e = ok(&charlstm(&[
        "eval", "--run", r, "--data", d, "--limit", "3000",
    ]));
    assert!(
        e.contains("2999 characters predicted")
            && e.contains("perplexity")
            && e.contains("bits per character"),
        "{e}"
    );
    let j = ok(&charlstm(&[
        "eval", "--run", r, "--data", d, "--limit", "3000", "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
    assert!(v["report"]["perplexity"].as_f64().unwrap() > 1.0);
    // every part of the text a run of the notebook's split trained on is
    // text it trained on: said, for the default part too; of another text
    // nothing is said, whatever its part
    let note = |args: &[&str]| {
        let out = charlstm(args);
        ok(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for part in [&["--part", "test"][..], &[]] {
        let err = note(&[&["eval", "--run", r, "--data", d][..], part].concat());
        assert!(
            err.contains("trained on all of this text but its first 1000 characters")
                && err.contains("--set data.split=standard"),
            "{part:?}: {err}"
        );
    }
    // the first 1000 characters alone are what it held out
    let err = note(&["eval", "--run", r, "--data", d, "--limit", "1000"]);
    assert!(!err.contains("note:"), "{err}");
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "another text of the same letters ".repeat(200)).unwrap();
    let o = other.to_str().unwrap();
    for part in ["all", "test"] {
        let err = note(&["eval", "--run", r, "--data", o, "--part", part]);
        assert!(!err.contains("note:"), "{part}: {err}");
    }
    // the standard split holds out its valid and test parts, not the rest
    let standard = dir.path().join("standard");
    let s = standard.to_str().unwrap();
    ok(&charlstm(&train_args(
        d,
        s,
        &["--steps", "2", "--set", "data.split=standard"],
    )));
    for (part, said) in [
        ("all", true),
        ("train", true),
        ("valid", false),
        ("test", false),
    ] {
        let err = note(&["eval", "--run", s, "--data", d, "--part", part]);
        assert_eq!(
            err.contains("trained on the first 90% of this text"),
            said,
            "{part}: {err}"
        );
    }
}

/// The RMS rule of dynamic evaluation reads the text the run was trained on
/// for its statistics, and says so when that text is gone.
#[test]
fn rms_dynamic_evaluation_reads_the_training_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "3"])));
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "another text of the same letters ".repeat(20)).unwrap();
    let o = other.to_str().unwrap();
    let rms = [
        "eval",
        "--run",
        r,
        "--data",
        o,
        "--dynamic",
        "--dynamic-rule",
        "rms",
        "--dynamic-stats",
        "400",
        "--dynamic-lr",
        "0.001",
        "--json",
    ];
    let v: serde_json::Value = serde_json::from_str(ok(&charlstm(&rms)).trim()).unwrap();
    assert_eq!(v["dynamic"]["settings"]["rule"], "rms", "{v}");
    assert_eq!(v["dynamic"]["settings"]["stats"], 400, "{v}");
    let (fixed, adapted) = (
        v["report"]["bits_per_char"].as_f64().unwrap(),
        v["dynamic"]["report"]["bits_per_char"].as_f64().unwrap(),
    );
    assert!(adapted.is_finite() && adapted != fixed, "{v}");
    // without --dynamic-lr and --dynamic-decay a rule other than the
    // recipe's (sgd here) takes its own measured ones, not sgd's 0.2
    let own: Vec<&str> = rms
        .iter()
        .copied()
        .filter(|a| !["--dynamic-lr", "0.001"].contains(a))
        .collect();
    let v: serde_json::Value = serde_json::from_str(ok(&charlstm(&own)).trim()).unwrap();
    let settings = &v["dynamic"]["settings"];
    assert_eq!(
        (
            settings["learning_rate"].as_f64(),
            settings["decay"].as_f64()
        ),
        (Some(5e-4), Some(0.002)),
        "{v}"
    );
    std::fs::remove_file(&data).unwrap();
    let err = fails(&charlstm(&rms));
    assert!(
        err.contains("the text the run was trained on")
            && err.contains("tiny.txt")
            && err.contains("--dynamic-rule sgd"),
        "{err}"
    );
    // the SGD rule does not need it
    let sgd = &rms[..rms.len() - 7];
    let sgd_json = [sgd, &["--json"]].concat();
    let v: serde_json::Value = serde_json::from_str(ok(&charlstm(&sgd_json)).trim()).unwrap();
    // which reads no statistics, and reports none
    let settings = &v["dynamic"]["settings"];
    assert_eq!(
        (&settings["rule"], &settings["stats"]),
        (&"sgd".into(), &0.into()),
        "{v}"
    );
    // and takes no statistics: asked for some, it says so before reading
    // any text (the text given here does not exist)
    let out = charlstm(&[
        "eval",
        "--run",
        r,
        "--data",
        "/no/such/text.txt",
        "--dynamic",
        "--dynamic-stats",
        "400",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(
        err.contains("--dynamic-stats")
            && err.contains("--dynamic-rule rms")
            && err.contains("--help"),
        "{err}"
    );
}

/// Stopping at any step and resuming gives the same final weights as a run
/// that never stopped: same batches, optimiser state, schedule, dropout
/// masks, running average of the weights.
#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    for (name, extra) in [
        ("sgd", vec![]),
        // DropConnect alone seeds the masks of each step too
        (
            "dropconnect",
            vec!["--set", "model.recurrent_keep_prob=0.8"],
        ),
        (
            "adam-dropout",
            vec![
                "--recipe",
                "notebook-dropout",
                "--set",
                "train.optimizer=adam",
                "--set",
                "train.learning_rate=0.01",
                "--set",
                "d_embedding=8",
                "--set",
                "train.decay_every=15",
                "--set",
                "train.average=0.9",
                "--set",
                "model.recurrent_keep_prob=0.8",
            ],
        ),
    ] {
        let a = dir.path().join(format!("{name}-straight"));
        let b = dir.path().join(format!("{name}-resumed"));
        let mut args = train_args(d, a.to_str().unwrap(), &["--steps", "25"]);
        args.extend(extra.iter().copied());
        ok(&charlstm(&args));
        // the same run, stopped after 13 steps (not a summary step) and resumed twice
        let mut args = train_args(d, b.to_str().unwrap(), &["--steps", "13"]);
        args.extend(extra.iter().copied());
        ok(&charlstm(&args));
        ok(&charlstm(&[
            "train",
            "--resume",
            b.to_str().unwrap(),
            "--steps",
            "20",
            "--log",
            "plain",
            "--no-samples",
        ]));
        let out = ok(&charlstm(&[
            "train",
            "--resume",
            b.to_str().unwrap(),
            "--steps",
            "25",
            "--log",
            "plain",
            "--no-samples",
        ]));
        assert!(out.contains("Resuming"), "{out}");
        let published = tensors(&a.join("model.safetensors"));
        assert_eq!(
            published,
            tensors(&b.join("model.safetensors")),
            "{name}: weights differ"
        );
        // with train.average the run publishes the average, not the last weights
        let last: Vec<_> = tensors(&a.join("checkpoint.safetensors"))
            .into_iter()
            .filter_map(|(n, s, d)| Some((n.strip_prefix("model.")?.to_string(), s, d)))
            .collect();
        assert_eq!(
            last == published,
            !extra.contains(&"train.average=0.9"),
            "{name}: published weights"
        );
        let ma = std::fs::read_to_string(a.join("metrics.csv")).unwrap();
        let mb = std::fs::read_to_string(b.join("metrics.csv")).unwrap();
        let strip = |m: &str| -> Vec<String> {
            // all but the timing columns
            m.lines()
                .map(|l| l.split(',').take(8).collect::<Vec<_>>().join(","))
                .collect()
        };
        assert_eq!(strip(&ma), strip(&mb), "{name}: metrics differ");
    }
}

#[test]
fn resume_refuses_another_model_shape() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "11"])));
    let err = fails(&charlstm(&[
        "train",
        "--resume",
        r,
        "--set",
        "model.d_hidden=32",
    ]));
    // the field named with both values, not two whole configs
    assert!(
        err.contains("cannot resume")
            && err.contains("model differs from the run's: model.d_hidden ")
            && err.contains(" in the run, 32 asked")
            && !err.contains("keep_prob"),
        "{err}"
    );
    // in the recipe's words, not the model config's ("Fused")
    let err = fails(&charlstm(&[
        "train",
        "--resume",
        r,
        "--set",
        "model.layout=\"fused\"",
    ]));
    assert!(
        err.contains("model.layout ") && err.contains("\"fused\" asked"),
        "{err}"
    );
    // a value the recipe cannot take is the flag's fault, resuming too
    let err = refused(&charlstm(&[
        "train",
        "--resume",
        r,
        "--set",
        "data.batch_size=0",
    ]));
    assert!(err.contains("data.batch_size must be at least 1"), "{err}");
    let err = fails(&charlstm(&[
        "train",
        "--resume",
        dir.path().join("nothing").to_str().unwrap(),
    ]));
    assert!(err.contains("no such run directory"), "{err}");
}

#[test]
fn prepare_normalises_text() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, "Chapter 1.\nIt was 1984; THE END!").unwrap();
    let out = ok(&charlstm(&[
        "prepare",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
    ]));
    assert!(out.contains("characters of text8 form"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        " chapter one it was one nine eight four the end"
    );
    let err = fails(&charlstm(&[
        "prepare",
        input.to_str().unwrap(),
        output.to_str().unwrap(),
    ]));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
}

#[test]
fn recipes_are_listed_and_printable() {
    let out = ok(&charlstm(&["recipes"]));
    for r in [
        "notebook-char",
        "notebook-fused",
        "notebook-embed",
        "notebook-bigram",
        "notebook-dropout",
        "mirror",
    ] {
        assert!(out.contains(r), "{out}");
    }
    let toml = ok(&charlstm(&["recipes", "notebook-char"]));
    assert!(toml.contains("learning_rate = 10.0"), "{toml}");
}

/// Ctrl-C (SIGINT) stops after the current step with a checkpoint; resuming
/// from it ends with the weights of a run that was never interrupted.
#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let run = dir.path().join("interrupted");
    let r = run.to_str().unwrap();
    let child = spawn_endless_training(d, &run);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stopped: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stopped: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'stopped' line in {stdout}"));
    assert!(stopped > 1, "{stdout}");
    // the report is of the step reached, not of the last periodic summary
    assert!(
        stdout.contains(&format!("(step {})", stopped - 1)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("charlstm train --resume {r}")),
        "{stdout}"
    );
    let target = (stopped + 7).to_string();
    ok(&charlstm(&[
        "train",
        "--resume",
        r,
        "--steps",
        &target,
        "--log",
        "plain",
        "--no-samples",
    ]));
    let straight = dir.path().join("straight");
    let s = straight.to_str().unwrap();
    ok(&charlstm(&train_args(
        d,
        s,
        &["--steps", &target, "--summary", "100000"],
    )));
    assert_eq!(
        tensors(&run.join("model.safetensors")),
        tensors(&straight.join("model.safetensors"))
    );
}

/// `--top-k 1`, `--greedy` and `--temperature 0` are the same text; `--top-p`
/// and `--top-k` sample; `--prime-file` primes with a file in text8 form.
#[test]
fn sampling_flags_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "30"])));
    let sample = |extra: &[&str]| {
        let mut args = vec![
            "sample", "--run", r, "--length", "40", "--seed", "4", "--count", "3",
        ];
        args.extend_from_slice(extra);
        ok(&charlstm(&args))
    };
    let greedy = sample(&["--greedy"]);
    assert_eq!(sample(&["--top-k", "1"]), greedy);
    assert_eq!(sample(&["--temperature", "0"]), greedy);
    assert_eq!(sample(&["--top-p", "0.9"]).lines().count(), 3);
    assert_eq!(
        sample(&["--top-k", "5", "--top-p", "0.5"]).lines().count(),
        3
    );
    let prime = dir.path().join("prime.txt");
    std::fs::write(&prime, "The Quick, brown!").unwrap();
    let out = sample(&["--prime-file", prime.to_str().unwrap(), "--greedy"]);
    assert!(
        out.lines().all(|l| l.starts_with("the quick brown")),
        "{out}"
    );
}

/// A long sample shows its beginning while the rest is still being generated.
#[test]
fn a_long_sample_is_streamed() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(
        d,
        r,
        &["--steps", "5", "--set", "model.d_hidden=256"],
    )));
    let mut child = Command::new(BIN)
        .args([
            "sample",
            "--run",
            r,
            "--length",
            "100000000",
            "--threads",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 200];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    // 100 M characters take minutes: these came while it runs
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before streaming"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.iter().all(|&b| b == b' ' || b.is_ascii_lowercase()));
}

/// `CHARLSTM_KERNELS` caps the kernels' instruction set (the benchmark line
/// says which ran, and the portable path trains), and a value it does not
/// know is an error naming the variable, not silently ignored.
#[test]
fn the_kernels_setting_is_obeyed_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let bench = |kernels: &str| {
        Command::new(BIN)
            .args([
                "bench",
                "--recipe",
                "notebook-char",
                "--steps",
                "3",
                "--warmup",
                "1",
            ])
            .args(["--data", data.to_str().unwrap(), "--threads", "1"])
            .env("CHARLSTM_KERNELS", kernels)
            .env("TMPDIR", dir.path())
            .output()
            .unwrap()
    };
    let line: serde_json::Value = serde_json::from_str(ok(&bench("portable")).trim()).unwrap();
    assert_eq!(line["cpu"]["kernels"], "portable", "{line}");
    assert!(line["last_loss"].as_f64().unwrap().is_finite(), "{line}");
    // `avx512` caps below the AMX tiles: AVX-512 where the CPU has it
    let line: serde_json::Value = serde_json::from_str(ok(&bench("avx512")).trim()).unwrap();
    let has = |f: &str| {
        line["cpu"]["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == f)
    };
    let avx512 = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"]
        .iter()
        .all(|f| has(f));
    if avx512 {
        assert_eq!(line["cpu"]["kernels"], "avx512", "{line}");
    } else {
        assert_ne!(line["cpu"]["kernels"], "avx512+amx", "{line}");
    }
    let e = fails(&bench("avx3"));
    assert!(
        e.contains("CHARLSTM_KERNELS=avx3") && e.contains("avx2+fma") && e.contains("avx512+amx"),
        "{e}"
    );
}

/// A run resumed without --data reads the corpus it was trained on again;
/// where that file is gone, the message says it is the run's own corpus and
/// to give it with --data (which then resumes it, and is where the run
/// finds it from then on).
#[test]
fn a_resumed_runs_missing_corpus_is_named_as_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm(&train_args(d, r, &["--steps", "2"])));
    let moved = dir.path().join("moved.txt");
    std::fs::rename(&data, &moved).unwrap();
    let err = fails(&charlstm(&["train", "--resume", r, "--steps", "3"]));
    assert!(
        err.contains("the corpus this run was trained on")
            && err.contains(d)
            && err.contains("give it with --data"),
        "{err}"
    );
    let m = moved.to_str().unwrap();
    ok(&charlstm(&[
        "train", "--resume", r, "--steps", "3", "--data", m,
    ]));
    // the run now names where its text is: the next resume needs no --data
    ok(&charlstm(&["train", "--resume", r, "--steps", "4"]));
}
