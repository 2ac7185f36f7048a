//! `charlstm`: character-level LSTM language models on Text8, and a
//! sequence-to-sequence LSTM that mirrors words.
//!
//! This crate only parses arguments (`args.rs`), picks the device
//! (`device.rs`), draws progress (`progress.rs`) and calls the library
//! crates; each subcommand is one function of `train.rs`, `commands.rs` or
//! `mirror_cmd.rs`.

#![allow(clippy::print_stdout, clippy::print_stderr)]
// The doc comments of argument structs are clap's --help text, shown as written
// (`runs/<recipe>-<n>`), not HTML.
#![allow(rustdoc::invalid_html_tags)]

/// `println!` that never panics: a stdout that is closed or full ends the
/// program as Unix tools end, or stops a training run with a checkpoint
/// ([`setup::stdout_failed`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::setup::stdout_failed(e)
        }
    }};
}

/// `eprintln!` that never panics: a closed or full stderr loses the message
/// (there is nowhere left to say anything), never the command's work.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `print!` as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = write!(stdout, $($arg)*).and_then(|_| stdout.flush()) {
            $crate::setup::stdout_failed(e)
        }
    }};
}

mod allocator;
mod args;
mod commands;
mod device;
mod mirror_cmd;
mod progress;
mod setup;
mod train;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::args::{
    BenchArgs, EvalArgs, FetchArgs, PrepareArgs, RecipesArgs, SampleArgs, TrainArgs,
};
use crate::train::TrainCommand;

/// Large blocks aligned to cache lines, for the kernels' vector loads, and
/// the largest on huge pages ([`allocator`]).
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

/// Character-level LSTM language models on Text8 (the Udacity notebook,
/// done properly), and an LSTM that mirrors every word of a sentence.
#[derive(Debug, Parser)]
#[command(name = "charlstm", version, propagate_version = true)]
#[command(
    after_help = "Start with `charlstm train` (downloads Text8 and trains the notebook's model), \
                        then `charlstm sample --run runs/notebook-char-1`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a language model from a recipe (or resume a run)
    Train(TrainArgs),
    /// Generate text from a trained run
    Sample(SampleArgs),
    /// Cross-entropy, perplexity and bits per character of a run on a text
    Eval(EvalArgs),
    /// Turn any UTF-8 text into text8 form (lower-case, digits spelled, single spaces)
    Prepare(PrepareArgs),
    /// Download Text8 (or another URL) into the datasets folder, without training
    Fetch(FetchArgs),
    /// List the built-in recipes, or print one
    Recipes(RecipesArgs),
    /// Problem 3: mirror every word of a sentence (`mirror train` trains a model)
    Mirror(mirror_cmd::MirrorArgs),
    /// Measure training, validation and sampling speed of recipes (one JSON line each)
    Bench(BenchArgs),
}

fn main() -> ExitCode {
    setup::set_signal_dispositions();
    // an empty variable is no setting: clap would take it for a flag given
    // without a value, and name the flag
    for name in args::FLAG_VARIABLES {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // SAFETY: the program's first statements, before any other thread exists
            unsafe { std::env::remove_var(name) };
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // usage errors go to stderr (exit 2); --help and --version to
            // stdout, where a full or closed one ends as any output does
            let printed = e.print().and_then(|()| {
                use std::io::Write as _;
                std::io::stdout().flush()
            });
            if let Err(io) = printed
                && !e.use_stderr()
            {
                setup::stdout_failed(io);
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(code) => code,
        // a combination of flags: a usage error as clap's are
        Err(e) if e.downcast_ref::<args::UsageError>().is_some() => {
            errln!("error: {e:#}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train::train(a, TrainCommand::Lm),
        Command::Sample(a) => commands::sample(a),
        Command::Eval(a) => commands::eval(a),
        Command::Prepare(a) => commands::prepare(a),
        Command::Fetch(a) => commands::fetch(a),
        Command::Recipes(a) => commands::recipes(a),
        Command::Mirror(a) => mirror_cmd::run(a),
        Command::Bench(a) => commands::bench(a),
    }
}
