//! `charlstm mirror`: train the word-mirroring model, evaluate it, or mirror sentences with it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use trainer::mirror;
use trainer::plot::{Plot, Series};

use clap::builder::TypedValueParser;

use crate::args::{DataArgs, DeviceArgs, TrainArgs, UsageError, beam_value, unit_interval_value};
use crate::progress;
use crate::setup::{resolve_data, setup_device};
use crate::train::TrainCommand;

/// Mirror every word of sentences with a trained run (`Hello, World!` ->
/// `olleH, dlroW!`: case, punctuation, digits and spacing kept), or train
/// or evaluate one. Each line goes to the model whole, but for words longer
/// than 32 letters, mirrored in parts, and lines longer than the model was
/// measured on (3,000 characters for word-window models, the training
/// window for others), mirrored in pieces of whole words with a note on
/// stderr.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MirrorArgs {
    #[command(subcommand)]
    command: Option<MirrorCommand>,
    /// Run directory of a trained mirror model
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
    /// Beam width (1: greedy decoding; at most 64)
    #[arg(long, default_value_t = 1, value_parser = beam_value())]
    beam: usize,
    /// Print the model's own text8 form (lower case, no punctuation, digits
    /// as letters a-j, any other letter as one of a-z) instead of restoring
    /// the typed form around it
    #[arg(long)]
    text8: bool,
    /// Sentences to mirror [default, or a lone `-`: one per line from stdin, each
    /// line's ending kept]
    sentences: Vec<String>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Train a mirror model from a recipe (default: mirror)
    Train(TrainArgs),
    /// Accuracy on unseen sentences of any lengths (the corpus's test part), with speed and the wrong words
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Run directory of a trained mirror model
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Sentence lengths in words: numbers and FIRST-LAST ranges, such as 1-10,20,60
    #[arg(long, default_value = "1-12", value_parser = parse_lengths)]
    words: Lengths,
    /// Sentences per length (at most 1000000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|v| v as usize))]
    count: usize,
    /// Beam width (1: greedy; at most 64)
    #[arg(long, default_value_t = 1, value_parser = beam_value())]
    beam: usize,
    /// Seed of the drawn sentences
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replace every word by random letters (sentences no corpus has)
    #[arg(long)]
    made_up: bool,
    /// With --made-up: words of 1 to N random letters (0: each of the
    /// length of the word it replaces)
    #[arg(long, default_value_t = 0, requires = "made_up", value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=1000).map(|v| v as usize))]
    made_up_len: usize,
    /// With --made-up: the share of made-up words that are one letter
    /// repeated, with at most one other letter (zzzzzq)
    #[arg(long, default_value_t = 0.0, requires = "made_up", value_name = "P",
          value_parser = unit_interval_value)]
    letter_runs: f64,
    /// Wrong words to show, with what the model wrote
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1_000_000).map(|v| v as usize))]
    examples: usize,
    /// Also draw accuracy against sentence length to FILE (.png or .svg)
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Replace an existing --plot file (never a link, a device or an input)
    #[arg(long, requires = "plot")]
    force: bool,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs the mirror command.
pub fn run(a: MirrorArgs) -> Result<ExitCode> {
    match a.command {
        Some(MirrorCommand::Train(t)) => crate::train::train(t, TrainCommand::Mirror),
        Some(MirrorCommand::Eval(e)) => eval(e),
        None => {
            let Some(run) = a.run else {
                return Err(UsageError(format!(
                    "give a trained model with --run DIR (or train one with `{}`)",
                    trainer::recipe::MIRROR_TRAIN_COMMAND
                ))
                .into());
            };
            infer(&run, a.beam, a.text8, &a.sentences, &a.device)
        }
    }
}

/// The sentence lengths of `--words`, in the order given.
#[derive(Debug, Clone)]
struct Lengths(Vec<usize>);

/// Sentence lengths of `--words`: numbers and FIRST-LAST ranges,
/// comma-separated (clap names the flag and the value; a usage error).
fn parse_lengths(s: &str) -> std::result::Result<Lengths, String> {
    let expected = format!(
        "expected numbers or FIRST-LAST ranges separated by commas, such as 1-10,20,60 \
         (each from 1 to {MAX_WORDS})"
    );
    let mut out = vec![];
    let mut seen = std::collections::HashSet::new();
    for (k, part) in s.split(',').enumerate() {
        let bad = |why: &str| format!("part {} {part:?}: {why}; {expected}", k + 1);
        let number = |n: &str| {
            n.trim()
                .parse::<usize>()
                .map_err(|_| bad(&format!("{:?} is not a number", n.trim())))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if a == 0 || b > MAX_WORDS {
            return Err(bad("out of range"));
        }
        if a > b {
            return Err(bad("a range from high to low"));
        }
        // a length given twice is one row, where it first came (so at most
        // MAX_WORDS rows: once every length is in, the rest are repeats)
        if seen.len() < MAX_WORDS {
            out.extend((a..=b).filter(|&n| seen.insert(n)));
        }
    }
    Ok(Lengths(out))
}

/// Most characters evaluated for one sentence length, held in memory with
/// the targets, the outputs and the model's states: about 160 bytes a
/// character (288 MB for `--words 30 --count 10000`), so about 3 GB.
const MAX_EVAL_CHARS: usize = 20_000_000;

/// Longest evaluated sentence, in words (and most lengths in one `--words`).
const MAX_WORDS: usize = 100_000;

fn eval(a: EvalArgs) -> Result<ExitCode> {
    let lengths = &a.words.0;
    if let Some(plot) = &a.plot {
        if !Plot::is_plot_path(plot) {
            return Err(UsageError(format!(
                "--plot {}: give a file name ending in .png or .svg",
                plot.display()
            ))
            .into());
        }
        trainer::fsutil::check_output(plot, a.force, &[&a.run]).context("--plot")?;
    }
    let (device, _) = setup_device(&a.device)?;
    let (model, _) = mirror::load_mirror(&a.run, &device)?;
    let path = resolve_data(&a.data, None)?;
    if let Some(plot) = &a.plot {
        // the corpus too, now that it is known
        trainer::fsutil::check_output(plot, a.force, &[&a.run, &path]).context("--plot")?;
    }
    let corpus = text8::read_corpus(&path)?;
    let split = corpus.split(text8::SplitKind::Standard)?;
    let test: Arc<[u8]> = split.test.into();
    if let Some(&longest) = lengths.iter().max() {
        // a length the test part cannot fill, said before the table starts
        text8::MirrorSampler::new(test.clone(), longest, longest, usize::MAX)
            .map_err(|e| corpus.named(e))
            .context("--words")?;
    }
    // characters per word, to bound what one length holds: said before the table starts
    let words_in_test = test.split(|&c| c == 0).filter(|w| !w.is_empty()).count();
    let per_word = if a.made_up && a.made_up_len > 0 {
        a.made_up_len + 1
    } else {
        test.len() / words_in_test.max(1) + 1
    };
    if let Some(&n) = lengths.iter().max() {
        let chars = n.saturating_mul(a.count).saturating_mul(per_word);
        if chars > MAX_EVAL_CHARS {
            bail!(
                "--words {n} x --count {}: about {chars} characters to hold at once, more than \
                 {MAX_EVAL_CHARS}; lower --count",
                a.count
            );
        }
    }
    let made_up = a.made_up.then_some(mirror::MadeUpWords {
        prob: 1.0,
        max_len: a.made_up_len,
        run_prob: a.letter_runs,
    });
    // (the bar is gone when the closure returns, before the row is printed)
    let evaluate = |n: usize, count: usize, what: &str| {
        let mut bar = progress::PatientBar::new(what, "characters");
        mirror::evaluate_words(
            &model,
            test.clone(),
            n,
            count,
            a.beam,
            a.seed,
            made_up,
            &device,
            &mut |done, total| bar.set(done, total),
        )
    };
    if let Some(&first) = lengths.first() {
        // a few short sentences first, unmeasured: the first row's speed is
        // not the start-up's
        evaluate(first.min(12), a.count.min(8), "warming up")?;
    }
    if !a.json {
        outln!(
            "| words | sentences | characters | words | sentences exact | sentences/s | chars/s |"
        );
        outln!("|---:|---:|---:|---:|---:|---:|---:|");
    }
    let mut tally = ErrorTally::default();
    let mut examples = vec![];
    let mut measured = vec![];
    for &n in lengths {
        let e = evaluate(n, a.count, &format!("{n} words"))?;
        let s = &e.scores;
        let rate = |x: usize| x as f64 / e.seconds.max(1e-9);
        if a.json {
            let shown = &e.errors[..e.errors.len().min(a.examples)];
            outln!(
                "{}",
                serde_json::json!({"words": n, "beam": a.beam, "scores": s,
                    "wrong_words": e.errors.len(), "examples": shown,
                    "seconds": e.seconds, "sentences_per_sec": rate(s.sentences),
                    "chars_per_sec": rate(e.chars)})
            );
        } else {
            outln!(
                "| {n} | {} | {:.2}% | {:.2}% | {:.2}% | {:.0} | {:.0} |",
                s.sentences,
                100.0 * s.char_acc,
                100.0 * s.word_acc,
                100.0 * s.sentence_acc,
                rate(s.sentences),
                rate(e.chars)
            );
        }
        e.errors.iter().for_each(|w| tally.add(w));
        let room = a.examples.saturating_sub(examples.len());
        examples.extend(e.errors.into_iter().take(room));
        measured.push((n, e.scores));
    }
    if let Some(path) = &a.plot {
        length_plot(&a.run, a.beam, &measured).write(path)?;
    }
    if !a.json && tally.wrong > 0 {
        outln!();
        outln!("{tally}");
        for e in &examples {
            outln!(
                "- word {} of {}: {:?} came out {:?}",
                e.position + 1,
                e.sentence_words,
                e.word,
                e.got
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Accuracy (%) against sentence length.
fn length_plot(run: &std::path::Path, beam: usize, measured: &[(usize, mirror::Scores)]) -> Plot {
    let decoding = if beam > 1 {
        format!("beam {beam}")
    } else {
        "greedy".to_string()
    };
    let mut plot = Plot::new(
        &format!(
            "{}: accuracy by sentence length ({decoding})",
            run.display()
        ),
        "words in the sentence",
        "accuracy (%)",
    );
    let xs: Vec<f64> = measured.iter().map(|(n, _)| *n as f64).collect();
    let pick = |f: fn(&mirror::Scores) -> f64| measured.iter().map(|(_, s)| 100.0 * f(s)).collect();
    plot.add(Series::new(
        "sentences exact",
        &xs,
        pick(|s| s.sentence_acc),
    ));
    plot.add(Series::new("words", &xs, pick(|s| s.word_acc)));
    plot.add(Series::new("characters", &xs, pick(|s| s.char_acc)));
    plot
}

/// At which word positions and on which kinds of words the errors are,
/// counted over every wrong word.
#[derive(Debug, Default, PartialEq, Eq)]
struct ErrorTally {
    wrong: usize,
    first: usize,
    last: usize,
    /// Words of 1-3, 4-7, 8-12 and 13+ letters.
    by_length: [usize; 4],
    letter_runs: usize,
}

impl ErrorTally {
    fn add(&mut self, e: &mirror::WordError) {
        self.wrong += 1;
        if e.position == 0 {
            self.first += 1;
        } else if e.position + 1 == e.sentence_words {
            self.last += 1;
        }
        let bucket = match e.word.len() {
            0..=3 => 0,
            4..=7 => 1,
            8..=12 => 2,
            _ => 3,
        };
        self.by_length[bucket] += 1;
        self.letter_runs += usize::from(has_letter_run(&e.word));
    }
}

impl std::fmt::Display for ErrorTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d] = self.by_length;
        write!(
            f,
            "wrong words: {}; first word of its sentence {}, last {}, in between {}; \
             1-3 letters {a}, 4-7 letters {b}, 8-12 letters {c}, 13+ letters {d}; \
             with a letter three or more times in a row {}",
            self.wrong,
            self.first,
            self.last,
            self.wrong - self.first - self.last,
            self.letter_runs
        )
    }
}

/// Whether a word has one letter three or more times in a row.
fn has_letter_run(word: &str) -> bool {
    word.as_bytes()
        .windows(3)
        .any(|w| w[0] == w[1] && w[1] == w[2])
}

/// Longest input line read from stdin (a sentence is a few hundred bytes).
const MAX_LINE_BYTES: usize = 1 << 20;

/// Most lines mirrored together: those already read in when the first of
/// them is (a file's lines in batches, a typed line at once). The model
/// decodes lines of equal length together: the more lines, the more of
/// each length.
const BATCH_LINES: usize = 1024;

/// Most bytes of the lines mirrored together (one line can be longer).
const BATCH_BYTES: usize = 1 << 20;

/// A line of input and the line ending it came with (`\r\n` or `\n`), to
/// end its mirror with.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    text: String,
    ending: &'static str,
}

/// The next line of `input` without its line ending, `None` at the end;
/// a line longer than `max` bytes, or not UTF-8, is an error (nothing past
/// `max` is read).
fn read_line(input: &mut impl std::io::BufRead, max: usize) -> Result<Option<Line>> {
    let mut line = Vec::new();
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let content = take - usize::from(done);
        if line.len() + content > max {
            bail!("a line longer than {max} bytes (one sentence per line)");
        }
        line.extend_from_slice(&buf[..take]);
        input.consume(take);
        if done {
            break;
        }
    }
    if line.is_empty() {
        return Ok(None);
    }
    let ending = if line.ends_with(b"\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    if line.ends_with(b"\n") {
        line.truncate(line.len() - ending.len());
    }
    String::from_utf8(line)
        .map(|text| Some(Line { text, ending }))
        .map_err(|e| anyhow::anyhow!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

/// The lines to mirror next: from stdin the next line, waiting for it, and
/// then those already read in (at most [`BATCH_LINES`]); else the next
/// arguments. A line that cannot be read ends the batch, its error after
/// the lines before it.
fn next_lines(
    stdin: Option<&mut std::io::BufReader<std::io::StdinLock<'static>>>,
    args: &mut std::slice::Iter<String>,
    read: usize,
) -> (Vec<Line>, Option<anyhow::Error>) {
    let mut batch: Vec<Line> = vec![];
    let mut bytes = 0;
    let Some(input) = stdin else {
        let text = args.take(BATCH_LINES).cloned();
        return (text.map(|text| Line { text, ending: "\n" }).collect(), None);
    };
    while batch.len() < BATCH_LINES && bytes < BATCH_BYTES {
        if !batch.is_empty() && !input.buffer().contains(&b'\n') {
            break;
        }
        match read_line(input, MAX_LINE_BYTES) {
            Ok(Some(line)) => {
                bytes += line.text.len();
                batch.push(line);
            }
            Ok(None) => break,
            Err(e) => {
                let k = read + batch.len() + 1;
                return (
                    batch,
                    Some(e.context(format!("reading sentence {k} from stdin"))),
                );
            }
        }
    }
    (batch, None)
}

fn infer(
    run: &std::path::Path,
    beam: usize,
    raw_form: bool,
    sentences: &[String],
    device: &DeviceArgs,
) -> Result<ExitCode> {
    if beam == 0 {
        bail!("--beam must be at least 1");
    }
    let (device, _) = setup_device(device)?;
    let (model, whole_chars) = mirror::load_mirror(run, &device)?;
    // arguments, or stdin (`-` too) answered as it arrives
    let from_stdin = sentences.is_empty() || sentences == ["-"];
    let mut stdin =
        from_stdin.then(|| std::io::BufReader::with_capacity(1 << 18, std::io::stdin().lock()));
    let mut args = if from_stdin {
        [].iter()
    } else {
        sentences.iter()
    };
    let mut read = 0;
    let mut noted = false;
    loop {
        let (lines, error) = next_lines(stdin.as_mut(), &mut args, read);
        // the model reads the words in text8 form; the typed form goes back around them
        let surfaces: Vec<text8::Surface> = lines
            .iter()
            .map(|l| text8::Surface::parse(&l.text))
            .collect();
        let texts: Vec<String> = surfaces.iter().map(text8::Surface::text8).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut bar = progress::PatientBar::new("mirroring", "characters");
        let (mirrored, failed) = mirror::mirror_texts_up_to_error(
            &model,
            &refs,
            whole_chars,
            beam,
            &device,
            &mut |done, total| bar.set(done, total),
        );
        drop(bar); // before the mirrors are printed
        let failed =
            failed.map(|(k, e)| anyhow::Error::new(e).context(format!("input {}", read + k + 1)));
        for (k, ((line, surface), m)) in lines.iter().zip(&surfaces).zip(&mirrored).enumerate() {
            if m.cut && !noted {
                noted = true;
                errln!(
                    "note: input {} has {} words ({} characters), more than the {whole_chars} \
                     characters this model was measured on whole: it and any other such line \
                     are mirrored in pieces of whole words",
                    read + k + 1,
                    surface.num_words(),
                    texts[k].len()
                );
            }
            let shown = if raw_form {
                m.text.clone()
            } else {
                surface.restore(&m.text)
            };
            out!("{shown}{}", line.ending);
        }
        read += lines.len();
        if let Some(e) = failed.or(error) {
            return Err(e);
        }
        if lines.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_ranges() {
        let mut tally = ErrorTally::default();
        for (position, word) in [(0, "abc"), (4, "zzzq"), (2, "recommendations")] {
            tally.add(&mirror::WordError {
                position,
                sentence_words: 5,
                word: word.into(),
                got: String::new(),
            });
        }
        assert_eq!(
            tally.to_string(),
            "wrong words: 3; first word of its sentence 1, last 1, in between 1; 1-3 letters 1, \
             4-7 letters 1, 8-12 letters 0, 13+ letters 1; with a letter three or more times in a row 1"
        );
        let err = |s: &str| parse_lengths(s).unwrap_err();
        assert!(err("3-1").starts_with("part 1 \"3-1\": a range from high to low"));
        assert!(err("0").starts_with("part 1 \"0\": out of range"));
        assert!(err("1,,2").starts_with("part 2 \"\": \"\" is not a number"));
        assert!(err("4,1_000").starts_with("part 2 \"1_000\": \"1_000\" is not a number"));
        assert!(err("1-100001").contains("out of range"));
        assert_eq!(parse_lengths("2-4").unwrap().0, vec![2, 3, 4]);
        assert_eq!(parse_lengths("5").unwrap().0, vec![5]);
        assert_eq!(
            parse_lengths("1-3, 10,60").unwrap().0,
            vec![1, 2, 3, 10, 60]
        );
        // each length once, where it first came
        assert_eq!(parse_lengths("2,2,2").unwrap().0, vec![2]);
        assert_eq!(parse_lengths("5,1-6").unwrap().0, vec![5, 1, 2, 3, 4, 6]);
        assert_eq!(parse_lengths("1-100000,7").unwrap().0.len(), 100_000);
        let mut input = std::io::Cursor::new(b"the cat\r\nsat\n\nlast\r\r\nend".to_vec());
        let lines: Vec<Option<Line>> = (0..6).map(|_| read_line(&mut input, 10).unwrap()).collect();
        let line = |text: &str, ending| {
            Some(Line {
                text: text.into(),
                ending,
            })
        };
        let want = [
            line("the cat", "\r\n"),
            line("sat", "\n"),
            line("", "\n"),
            line("last\r", "\r\n"),
            line("end", "\n"),
            None,
        ];
        assert_eq!(lines, want);
        use std::io::Read as _;
        let mut zeros = std::io::repeat(0).take(1 << 30);
        let e = read_line(&mut std::io::BufReader::new(&mut zeros), 1000).unwrap_err();
        assert!(e.to_string().contains("longer than 1000 bytes"), "{e}");
    }
}
