//! `charlstm mirror`: train the word-mirroring model, evaluate it, or mirror sentences with it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use trainer::mirror;

use crate::args::{DataArgs, DeviceArgs, TrainArgs};
use crate::setup::{resolve_data, setup_device};
use crate::train::TrainCommand;

/// Mirror every word of sentences with a trained run (`the cat` -> `eht tac`),
/// or train or evaluate one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MirrorArgs {
    #[command(subcommand)]
    command: Option<MirrorCommand>,
    /// Run directory of a trained mirror model
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
    /// Beam width (1: greedy decoding)
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Mirror inputs longer than the model accepts in chunks of whole words,
    /// instead of refusing them
    #[arg(long)]
    chunk: bool,
    /// Sentences to mirror [default: one per line from stdin]
    sentences: Vec<String>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Train a mirror model from a recipe (default: mirror)
    Train(TrainArgs),
    /// Accuracy on unseen sentences of 1 to 12 words (the corpus's test part)
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Run directory of a trained mirror model
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Sentence lengths in words, as FIRST-LAST or one number
    #[arg(long, default_value = "1-12")]
    words: String,
    /// Sentences per length
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Beam width (1: greedy)
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Seed of the drawn sentences
    #[arg(long, default_value_t = 1)]
    seed: u64,
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
                bail!(
                    "give a trained model with --run DIR (or train one with `charlstm mirror train`)"
                );
            };
            infer(&run, a.beam, a.chunk, &a.sentences, &a.device)
        }
    }
}

fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<usize>> {
    let bad = || anyhow::anyhow!("--words {s:?}: expected FIRST-LAST or a number, such as 1-12");
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        ),
        None => {
            let n = s.trim().parse().map_err(|_| bad())?;
            (n, n)
        }
    };
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

fn eval(a: EvalArgs) -> Result<ExitCode> {
    let range = parse_range(&a.words)?;
    if a.beam == 0 || a.count == 0 {
        bail!("--beam and --count must be at least 1");
    }
    let (device, _) = setup_device(&a.device)?;
    let (model, _) = mirror::load_mirror(&a.run, &device)?;
    let path = resolve_data(&a.data, None)?;
    let corpus = text8::read_corpus(&path)?;
    let split = text8::Split::new(&corpus.ids, text8::SplitKind::Standard)?;
    let test: Arc<[u8]> = split.test.into();
    if !a.json {
        println!("| words | sentences | characters | words | sentences exact |");
        println!("|---:|---:|---:|---:|---:|");
    }
    for n in range {
        // long sentences may exceed the training limit: evaluate them anyway, up to 200 characters
        let s = mirror::evaluate_words(
            &model,
            test.clone(),
            n,
            a.count,
            a.beam,
            a.seed,
            200,
            &device,
        )?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({"words": n, "beam": a.beam, "scores": s})
            );
        } else {
            println!(
                "| {n} | {} | {:.2}% | {:.2}% | {:.2}% |",
                s.sentences,
                100.0 * s.char_acc,
                100.0 * s.word_acc,
                100.0 * s.sentence_acc
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Text8 form of a user's sentence, without the leading space.
fn prepare_input(raw: &str) -> String {
    text8::normalize(raw).trim_start().to_string()
}

fn infer(
    run: &std::path::Path,
    beam: usize,
    chunk: bool,
    sentences: &[String],
    device: &DeviceArgs,
) -> Result<ExitCode> {
    if beam == 0 {
        bail!("--beam must be at least 1");
    }
    let (device, _) = setup_device(device)?;
    let (model, max_chars) = mirror::load_mirror(run, &device)?;
    let lines: Vec<String> = if sentences.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .context("reading sentences from stdin")?
    } else {
        sentences.to_vec()
    };
    for (k, raw) in lines.iter().enumerate() {
        let text = prepare_input(raw);
        if text.is_empty() {
            println!();
            continue;
        }
        if text != raw.trim() {
            eprintln!("note: input {} normalised to text8 form: {text:?}", k + 1);
        }
        if text.len() > max_chars && !chunk {
            bail!(
                "input {} has {} characters, more than the {max_chars} this model was trained on \
                 (data.max_chars); shorten it, or pass --chunk to mirror it in pieces of whole words",
                k + 1,
                text.len()
            );
        }
        let out = mirror::mirror_text(&model, &text, max_chars, beam, &device)
            .with_context(|| format!("input {}", k + 1))?;
        println!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_ranges() {
        assert_eq!(prepare_input("Hello, World 2!"), "hello world two");
        assert!(parse_range("3-1").is_err());
        assert_eq!(parse_range("2-4").unwrap(), 2..=4);
        assert_eq!(parse_range("5").unwrap(), 5..=5);
    }
}
