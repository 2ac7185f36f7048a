//! Hostile and careless input, as a table: each case is a command line, the
//! exit code it must end with, words its message must hold, and the promise
//! that every file that existed before is byte-for-byte the same after (and
//! that no device or link was replaced). No case may panic or hang.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Every regular file under `dir` with its bytes (`.lock` files excepted:
/// taking a run's lock writes the taker's pid into it).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.file_name() != ".lock" {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

struct Case {
    args: Vec<String>,
    code: i32,
    words: &'static [&'static str],
    stdin: Option<PathBuf>,
}

fn case(args: &[&str], code: i32, words: &'static [&'static str]) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        words,
        stdin: None,
    }
}

#[test]
fn hostile_inputs_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = corpus(d);
    let c = data.to_str().unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    // a trained language model and a trained mirror
    let lm = p("lm");
    ok(&charlstm(&train_args(c, &lm, &["--steps", "3"])));
    let mirror = p("mirror");
    ok(&charlstm_owned(&mirror_train_args(c, &mirror, "3")));
    // runs whose config.json no longer matches the weights
    let copy = |from: &str, to: &str, edit: &dyn Fn(String) -> String| {
        let to = p(to);
        std::fs::create_dir(&to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), Path::new(&to).join(e.file_name())).unwrap();
        }
        let config = Path::new(&to).join("config.json");
        let text = std::fs::read_to_string(&config).unwrap();
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit changed nothing");
        std::fs::write(&config, edited).unwrap();
        to
    };
    let other_tok = copy(&lm, "lm-bigram", &|t| {
        t.replace("\"kind\": \"char\"", "\"kind\": \"bigram\"")
    });
    let huge = copy(&lm, "lm-huge", &|t| {
        t.replace("\"d_hidden\": 16", "\"d_hidden\": 100000")
    });
    let bad_ids = copy(&mirror, "mirror-ids", &|t| {
        t.replace("\"start_id\": 28", "\"start_id\": 9999")
    });
    let spaces = p("spaces.txt");
    std::fs::write(&spaces, " ".repeat(5000)).unwrap();
    let text = p("book.txt");
    std::fs::write(&text, "Some text, to prepare.").unwrap();
    let link = p("link.txt");
    // the corpus under another name (a hard link: the same file)
    let hard = p("hard.png");
    std::fs::hard_link(&data, &hard).unwrap();
    let short = p("short.txt");
    std::fs::write(&short, " a short text").unwrap();
    let page = p("page.zip");
    std::fs::write(&page, "<html>502 Bad Gateway</html>").unwrap();
    let loop_a = p("loop-a");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&data, &link).unwrap();
        std::os::unix::fs::symlink(p("loop-b"), &loop_a).unwrap();
        std::os::unix::fs::symlink(&loop_a, p("loop-b")).unwrap();
        let _ = Command::new("mkfifo").arg(p("fifo")).status();
    }
    // a 40 MB member in a zip of some 40 KB
    let bomb = p("bomb.zip");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("text8", opts).unwrap();
        zip.write_all(&vec![b'a'; 40 << 20]).unwrap();
        zip.finish().unwrap();
    }
    // a server announcing a 100 GB body
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let huge_url = format!("http://{}/huge.zip", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 107374182400\r\n\r\n");
        }
    });
    let downloads = p("downloads");
    let not_a_dir = format!("{}/out.txt", text);
    let checkpoint = format!("{lm}/checkpoint.safetensors");
    let new_run = p("new-run");
    let zero = Path::new("/dev/zero");

    let mut cases = vec![
        // data loss
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--loss-trace",
                &checkpoint,
            ],
            1,
            // what --force would not mend is said first
            &["--loss-trace", "inside the run directory"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--loss-trace",
                &checkpoint,
                "--force",
            ],
            1,
            &["--loss-trace", "inside the run directory"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--loss-trace",
                c,
                "--force",
            ],
            1,
            &["one of this command's inputs"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--loss-trace",
                &hard,
                "--force",
            ],
            1,
            &["one of this command's inputs"],
        ),
        case(
            &[
                "mirror", "eval", "--run", &mirror, "--data", c, "--words", "2", "--count", "3",
                "--plot", &hard, "--force",
            ],
            1,
            &["--plot", "one of this command's inputs"],
        ),
        case(
            &[
                "mirror", "eval", "--run", &mirror, "--data", c, "--words", "2", "--count", "3",
                "--plot", &text,
            ],
            2,
            &["ending in .png or .svg", "--help"],
        ),
        // --force with nothing to replace: a mistake, not a setting
        case(
            &[
                "mirror", "eval", "--run", &mirror, "--data", c, "--words", "2", "--count", "3",
                "--force",
            ],
            2,
            &["--plot <FILE>"],
        ),
        case(
            &[
                "mirror",
                "eval",
                "--run",
                &mirror,
                "--data",
                c,
                "--plot",
                &p("no-such-folder/plot.png"),
            ],
            1,
            &["no-such-folder does not exist"],
        ),
        case(
            &[
                "mirror",
                "train",
                "--recipe",
                "mirror",
                "--data",
                c,
                "--run",
                &new_run,
                "--set",
                "train.beam=1000000",
            ],
            1,
            &["train.beam 1000000", "lower train.beam"],
        ),
        case(
            &[
                "train",
                "--resume",
                &lm,
                "--steps",
                "9",
                "--loss-trace",
                &format!("{lm}/trace.txt"),
            ],
            1,
            &["inside"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--loss-trace",
                &link,
                "--force",
            ],
            1,
            &["not a regular file"],
        ),
        case(
            &["prepare", "--force", &text, "/dev/full"],
            1,
            &["/dev/full", "not a regular file"],
        ),
        case(
            &["prepare", "--force", &text, &text],
            1,
            &["one of this command's inputs"],
        ),
        case(
            &["prepare", &text, &text],
            1,
            &["one of this command's inputs"],
        ),
        // no streams: a file named `-` is ./-
        case(&["prepare", "-", &text], 2, &["INPUT -", "./-"]),
        case(&["prepare", &text, "-"], 2, &["OUTPUT -", "./-"]),
        case(
            &["prepare", "--force", &text, &link],
            1,
            &["not a regular file"],
        ),
        case(&["prepare", &text, c], 1, &["already exists", "--force"]),
        // plain text under a zip's name: every reader would refuse it
        case(
            &["prepare", &text, &p("book.ZIP")],
            2,
            &["book.ZIP: named .zip", "--help"],
        ),
        // values read from a run directory, checked against the weights
        case(
            &["sample", "--run", &other_tok, "--length", "5"],
            1,
            &["vocabulary", "does not match"],
        ),
        case(
            &["eval", "--run", &other_tok, "--data", c],
            1,
            &["vocabulary", "does not match"],
        ),
        case(
            &["sample", "--run", &huge, "--length", "5"],
            1,
            &["config.json", "does not belong to these weights"],
        ),
        case(&["mirror", "--run", &bad_ids, "the cat"], 1, &["start_id"]),
        // sizes that would abort on allocation
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--set",
                "model.d_hidden=100000",
            ],
            1,
            &["GB, more than this machine's", "model.d_hidden"],
        ),
        case(
            &["sample", "--run", &lm, "--count", "1000000000"],
            2,
            &["--count"],
        ),
        case(
            &[
                "sample", "--run", &lm, "--count", "1000000", "--length", "1000",
            ],
            1,
            &["lower --count or --length"],
        ),
        case(
            &[
                "mirror",
                "--run",
                &mirror,
                "--beam",
                "18446744073709551615",
                "the cat",
            ],
            2,
            &["--beam"],
        ),
        case(
            &[
                "mirror",
                "--run",
                &mirror,
                "--beam",
                "4294967296",
                "the cat",
            ],
            2,
            &["--beam"],
        ),
        case(
            &[
                "mirror",
                "eval",
                "--run",
                &mirror,
                "--data",
                c,
                "--count",
                "18446744073709551615",
            ],
            2,
            &["--count"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--threads",
                "10000",
            ],
            2,
            &["\"10000\" is not a thread count from 1 to"],
        ),
        // unbounded input
        case(
            &["train", "--recipe", "/dev/zero", "--data", c],
            1,
            &["/dev/zero", "not a regular file"],
        ),
        case(
            &["train", "--data", &p("fifo"), "--run", &new_run],
            1,
            &["fifo", "not a regular file"],
        ),
        case(
            &[
                "mirror", "eval", "--run", &mirror, "--data", c, "--words", "60", "--count", "3",
            ],
            0,
            &[],
        ),
        case(
            &[
                "mirror", "eval", "--run", &mirror, "--data", c, "--words", "60", "--count",
                "1000000",
            ],
            1,
            &["characters to hold at once", "lower --count"],
        ),
        case(
            &[
                "eval",
                "--run",
                &lm,
                "--data",
                c,
                "--dynamic",
                "--dynamic-decay",
                "2",
            ],
            2,
            &["--dynamic-decay", "from 0 to 1"],
        ),
        case(&["sample", "--run", &lm, "--beam", "65"], 2, &["--beam"]),
        // wrong results and unclear errors
        case(
            &["train", "--data", &spaces, "--run", &new_run],
            1,
            &["no letters"],
        ),
        // a local file is checked as a download is, not only named
        case(&["fetch", "--data", &spaces], 1, &["no letters"]),
        case(
            &["train", "--data", c, "--steps", "18446744073709551615"],
            2,
            &["--steps"],
        ),
        case(
            &["train", "--data", &loop_a, "--run", &new_run],
            1,
            &["symbolic links"],
        ),
        case(
            &["train", "--resume", &lm, "--steps", "2"],
            1,
            &["nothing to do"],
        ),
        case(
            &["train", "--data", &bomb, "--run", &new_run],
            1,
            &["bomb.zip:text8: more than", "16 times"],
        ),
        case(
            &["fetch", "--data", &huge_url, "--datasets", &downloads],
            1,
            &["announces 107374182400 bytes"],
        ),
        case(
            &[
                "fetch",
                "--data",
                "http://127.0.0.1:9/",
                "--datasets",
                &downloads,
            ],
            1,
            &["names no file"],
        ),
        case(
            &["prepare", &text, &not_a_dir],
            1,
            &["book.txt is not a folder"],
        ),
        case(
            &["prepare", &text, &format!("{}/", p("newdir"))],
            1,
            &["names a folder (it ends in /)"],
        ),
        case(
            &["prepare", &p("missing.txt"), &p("out.txt")],
            1,
            &["missing.txt: no such file"],
        ),
        case(
            &["train", "--resume", &mirror],
            1,
            &["charlstm mirror train --resume"],
        ),
        case(
            &[
                "train",
                "--resume",
                &mirror,
                "--set",
                "train.samples_every=5",
            ],
            1,
            &["charlstm mirror train --resume"],
        ),
        // found by an adversarial pass
        case(
            &["train", "--data", c, "--run", &format!("{lm}/sub")],
            1,
            &["inside the run directory"],
        ),
        case(
            &["train", "--data", c, "--runs", &lm],
            1,
            &["a run directory"],
        ),
        case(
            &["fetch", "--data", &huge_url, "--datasets", &lm],
            1,
            &["a run directory"],
        ),
        case(&["train", "--data", c, "--run", c], 1, &["not a folder"]),
        case(
            &["train", "--data", c, "--runs", c],
            1,
            &["tiny.txt: exists and is not a folder"],
        ),
        case(
            &["fetch", "--data", &huge_url, "--datasets", c],
            1,
            &["tiny.txt exists and is not a folder"],
        ),
        case(&["sample", "--run", c], 1, &["not a run directory"]),
        case(
            &["train", "--data", "", "--run", &new_run],
            1,
            &["--data is empty"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--set",
                "train.seed=18446744073709551615",
            ],
            2,
            &["larger than a recipe integer"],
        ),
        case(
            &["train", "--data", &short, "--run", &new_run],
            1,
            &[
                "short.txt: corpus for a validation part",
                "needs at least 1001 characters, has 13",
            ],
        ),
        case(
            &["eval", "--run", &lm, "--data", &short, "--part", "test"],
            1,
            &[
                "--part: ",
                "short.txt: corpus for the standard 90/5/5 split",
            ],
        ),
        case(
            &["train", "--data", &page, "--run", &new_run],
            1,
            &["page.zip: named .zip but not a zip archive"],
        ),
        case(
            &[
                "mirror", "eval", "--run", &mirror, "--data", c, "--words", "100000",
            ],
            1,
            &["--words", "needs at least 100000 words, has"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--set",
                "train.clip_norm=1e309",
            ],
            2,
            &["1e309 is larger than a recipe number can hold"],
        ),
        case(
            &[
                "train",
                "--data",
                c,
                "--run",
                &new_run,
                "--set",
                "model.n_layers=100000",
            ],
            2,
            &["model.n_layers must be at most 64"],
        ),
        case(&["recipes", &text], 1, &["recipe"]),
        case(&["bench", "--data", c, "--warmup", "0"], 2, &["--warmup"]),
    ];
    cases.push(Case {
        stdin: Some(zero.to_path_buf()),
        ..case(
            &["mirror", "--run", &mirror],
            1,
            &["longer than 1048576 bytes"],
        )
    });
    #[cfg(not(unix))]
    cases.retain(|c| {
        !c.args
            .iter()
            .any(|a| a.contains("link") || a.contains("fifo") || a.contains("loop"))
    });

    for case in &cases {
        let before = snapshot(d);
        let (code, err) = run_bounded(&case.args, case.stdin.as_deref(), Duration::from_secs(60));
        assert_eq!(code, Some(case.code), "{:?}: {err}", case.args);
        assert!(!err.contains("panicked"), "{:?} panicked: {err}", case.args);
        for w in case.words {
            assert!(err.contains(w), "{:?}: {w:?} not in: {err}", case.args);
        }
        // an error of the system is said once, not once per layer of context
        assert!(
            err.matches("(os error").count() <= 1,
            "{:?}: {err}",
            case.args
        );
        let after = snapshot(d);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "{:?} added or removed files",
            case.args
        );
        for (path, bytes) in &before {
            assert!(
                after[path] == *bytes,
                "{:?} changed {}",
                case.args,
                path.display()
            );
        }
        assert!(!Path::new(&new_run).exists(), "{:?} made a run", case.args);
    }
    // the devices are still devices
    #[cfg(unix)]
    for dev in ["/dev/full", "/dev/null"] {
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata(dev).unwrap().file_type().is_char_device(),
            "{dev}"
        );
    }
}

/// Lines piped in are answered as they arrive, not after the end of input.
#[cfg(unix)]
#[test]
fn mirror_answers_stdin_line_by_line() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let run = dir.path().join("mirror");
    let (c, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    ok(&charlstm_owned(&mirror_train_args(c, r, "2")));
    let mut child = Command::new(BIN)
        .args(["mirror", "--run", r])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut answer = String::new();
    for _ in 0..3 {
        // one line in, one line out, with the input still open
        writeln!(stdin, "the cat").unwrap();
        stdin.flush().unwrap();
        answer.clear();
        stdout.read_line(&mut answer).unwrap();
        assert!(answer.ends_with('\n'), "{answer:?}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// A full stderr loses the message, not the exit code: never a panic.
#[cfg(unix)]
#[test]
fn a_full_stderr_is_no_panic() {
    for args in [
        vec!["sample", "--run", "/nonexistent"],
        vec!["train", "--data", "/nonexistent"],
    ] {
        let status = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}");
    }
}

/// `--help` and `--version` into a full stdout: an error and status 1, as
/// every other output (clap's own printing would end with status 0).
#[cfg(unix)]
#[test]
fn help_into_a_full_stdout_is_an_error() {
    for args in [vec!["--help"], vec!["--version"], vec!["help", "train"]] {
        let out = Command::new(BIN)
            .args(&args)
            .stdout(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("writing to stdout"), "{args:?}: {err}");
    }
}
