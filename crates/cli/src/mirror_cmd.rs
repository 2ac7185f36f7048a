//! `charlstm mirror`: train the word-mirroring model, or mirror sentences with one.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

/// Mirror the words of sentences with a trained run, or train one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MirrorArgs {
    #[command(subcommand)]
    command: Option<MirrorCommand>,
    /// Run directory of a trained mirror model
    #[arg(long, value_name = "DIR")]
    run: Option<std::path::PathBuf>,
    /// Sentences to mirror (default: one per line from stdin)
    sentences: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Train a mirror model from a recipe
    Train,
}

/// Runs the mirror command.
pub fn run(a: MirrorArgs) -> Result<ExitCode> {
    let _ = (&a.command, &a.run, &a.sentences);
    bail!("the mirror model is not built yet")
}
