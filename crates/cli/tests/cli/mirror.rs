//! The word mirror from the command line: train a tiny model, mirror
//! sentences from arguments and stdin, refuse or chunk long inputs, resume.

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
    ok(&charlstm(&[
        "mirror", "train", "--resume", r, "--steps", "31", "--log", "plain",
    ]));
    assert_eq!(
        tensors(&run.join("model.safetensors")),
        tensors(&straight.join("model.safetensors"))
    );

    // arguments: one output line per sentence, words in place
    let out = ok(&charlstm(&["mirror", "--run", r, "the cat", "a dog ran"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    // input outside the alphabet is normalised, with a note
    let o = charlstm(&["mirror", "--run", r, "The Cat!"]);
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(
        note.contains("normalised to text8 form: \"the cat\""),
        "{note}"
    );
    // stdin, beam search
    let mut child = Command::new(BIN)
        .args(["mirror", "--run", r, "--beam", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"the sun\none two three\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // too long for the model: refused, or mirrored in chunks when asked
    let long = "the quick brown fox jumps over the lazy dog";
    let err = fails(&charlstm(&["mirror", "--run", r, long]));
    assert!(
        err.contains("has 43 characters, more than the 30 this model was trained on"),
        "{err}"
    );
    assert!(err.contains("--chunk"), "{err}");
    let out = ok(&charlstm(&["mirror", "--run", r, "--chunk", long]));
    assert_eq!(out.lines().count(), 1);

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
}
