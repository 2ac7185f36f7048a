//! The word mirror from the command line: train a tiny model, mirror
//! sentences from arguments and stdin in their typed form, long inputs whole,
//! resume; and a model trained briefly that must have learned to mirror
//! sentences longer than any it was trained on.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn mirror_trains_resumes_and_mirrors_from_arguments_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let run = dir.path().join("mirror");
    let r = run.to_str().unwrap();
    let args = mirror_train_args(d, r, "21");
    let out = ok(&charlstm_owned(&args));
    assert!(
        out.contains("step 20: loss") && out.contains("sentences"),
        "{out}"
    );
    assert!(
        out.contains("test (10 unseen sentences), greedy: characters"),
        "{out}"
    );
    for f in [
        "config.json",
        "model.safetensors",
        "checkpoint.safetensors",
        "metrics.csv",
        "loss.png",
        "accuracy.png",
        "accuracy.svg",
        "test.json",
        "train.log",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    // resume: same final weights as a run of that length from the start
    let straight = dir.path().join("straight");
    let args = mirror_train_args(d, straight.to_str().unwrap(), "31");
    ok(&charlstm_owned(&args));
    let test_of_21_steps = std::fs::read(run.join("test.json")).unwrap();
    ok(&charlstm(&[
        "mirror", "train", "--resume", r, "--steps", "31", "--log", "plain",
    ]));
    assert_eq!(
        tensors(&run.join("model.safetensors")),
        tensors(&straight.join("model.safetensors"))
    );
    let test_scores = |run: &std::path::Path| {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).unwrap()).unwrap();
        (json["test_greedy"].clone(), json["test_beam"].clone())
    };
    assert_eq!(test_scores(&run), test_scores(&straight));
    // a run stopped during its test (every step trained, its test.json
    // that of the 21 steps before) takes the test when resumed, and then
    // has nothing left to do; config.json and metrics.csv stay as they were
    std::fs::write(run.join("test.json"), test_of_21_steps).unwrap();
    let kept = ["config.json", "metrics.csv"].map(|f| std::fs::read(run.join(f)).unwrap());
    let resume = ["mirror", "train", "--resume", r, "--log", "plain"];
    let out = ok(&charlstm(&resume));
    assert!(
        out.contains("done: 31 steps all trained before; test (10 unseen"),
        "{out}"
    );
    assert_eq!(test_scores(&run), test_scores(&straight));
    assert_eq!(
        kept,
        ["config.json", "metrics.csv"].map(|f| std::fs::read(run.join(f)).unwrap())
    );
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(
        log.contains("resumed at step 31: every step trained, finishing"),
        "{log}"
    );
    let again = charlstm(&resume);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("nothing to do"),
        "{err}"
    );

    // arguments: one output line per sentence, words in place
    let out = ok(&charlstm(&["mirror", "--run", r, "the cat", "a dog ran"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    // the typed form comes back around the model's words; --text8 prints the model's own
    let typed = ok(&charlstm(&["mirror", "--run", r, "The Cat, 42!"]));
    assert!(typed.ends_with("!\n") && typed.contains(", "), "{typed}");
    let raw = ok(&charlstm(&[
        "mirror",
        "--run",
        r,
        "--text8",
        "The Cat, 42!",
    ]));
    assert!(
        raw.bytes()
            .all(|c| c == b' ' || c == b'\n' || c.is_ascii_lowercase()),
        "{raw}"
    );
    // stdin, beam search
    let out = with_stdin(
        &["mirror", "--run", r, "--beam", "3"],
        b"the sun\none two three\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // `-` reads stdin; each line's ending comes back with it
    let out = with_stdin(&["mirror", "--run", r, "-"], b"ab\r\ncd\n");
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, second) = text.split_once('\n').unwrap_or_default();
    assert!(out.status.success() && first.ends_with('\r'), "{text:?}");
    let one_line = second.matches('\n').count() == 1 && !second.contains('\r');
    assert!(second.ends_with('\n') && one_line, "{text:?}");

    // longer than any training window: given to the model whole, no note
    let o = charlstm(&[
        "mirror",
        "--run",
        r,
        "the quick brown fox jumps over the lazy dog",
    ]);
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    // longer than the model was measured on: in pieces of whole words, said
    // on stderr once for all such lines
    let long = "ab ".repeat(1100);
    let o = charlstm(&["mirror", "--run", r, "--text8", &long, &long]);
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{note}");
    assert!(
        note.contains("1100 words") && note.contains("in pieces of whole words"),
        "{note}"
    );
    assert_eq!(note.matches("note:").count(), 1, "{note}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);

    // evaluation by sentence length
    let out = ok(&charlstm(&[
        "mirror", "eval", "--run", r, "--data", d, "--words", "1-2", "--count", "5", "--json",
    ]));
    assert_eq!(out.lines().count(), 2, "{out}");
    // a language-model run is not a mirror run
    let lm = dir.path().join("lm");
    ok(&charlstm(&train_args(
        d,
        lm.to_str().unwrap(),
        &["--steps", "2"],
    )));
    let err = fails(&charlstm(&["mirror", "--run", lm.to_str().unwrap(), "x"]));
    assert!(err.contains("is a language-model run"), "{err}");
    // no run at all: a usage error that names the command that trains one
    let out = charlstm(&["mirror", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--run DIR") && err.contains("`charlstm mirror train`"),
        "{err}"
    );
}

/// A regression in the model, the trainer or the decoder fails here: a small
/// model trained for a few hundred steps on sentences of 1 to 4 words must
/// mirror unseen sentences of 10 words (greedy), and a made-up word.
#[test]
fn a_briefly_trained_mirror_mirrors_unseen_longer_sentences() {
    let dir = tempfile::tempdir().unwrap();
    // words of random letters: every test sentence is unseen
    let data = dir.path().join("made-up.txt");
    std::fs::write(&data, made_up_words(30_000, 7)).unwrap();
    let d = data.to_str().unwrap();
    let run = dir.path().join("learned");
    let r = run.to_str().unwrap();
    let mut args = mirror_train_args(d, r, "300");
    for set in [
        "model.d_hidden=32",
        "model.d_embedding=16",
        "data.batch_size=16",
        "train.summary=100",
    ] {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    ok(&charlstm_owned(&args));
    let out = ok(&charlstm(&[
        "mirror", "eval", "--run", r, "--data", d, "--words", "10", "--count", "100", "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let acc = |k: &str| v["scores"][k].as_f64().unwrap();
    // measured: 1.0 for words and sentences (this test's first run); far
    // below the bounds without the located attention
    assert!(acc("word_acc") >= 0.98, "{out}");
    assert!(acc("sentence_acc") >= 0.8, "{out}");
    let out = ok(&charlstm(&["mirror", "--run", r, "Zyxwv, qqqqp!"]));
    assert_eq!(out.trim(), "vwxyZ, pqqqq!");
}

/// `n` words of 1 to 12 random letters (a fixed generator), text8 form.
fn made_up_words(n: usize, seed: u64) -> String {
    let mut x = seed;
    let mut next = move |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    let mut out = String::new();
    for _ in 0..n {
        out.push(' ');
        for _ in 0..1 + next(12) {
            out.push((b'a' + next(26) as u8) as char);
        }
    }
    out
}

/// The binary run with `input` on its stdin, to its end.
fn with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
