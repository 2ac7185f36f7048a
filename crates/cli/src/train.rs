//! `charlstm train` and `charlstm mirror train`: one driver for both tasks.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use trainer::mirror::Scores;
use trainer::{Event, Recipe, RunTarget, TrainOptions, TrainReport};

use crate::args::TrainArgs;
use crate::progress::{LogMode, Progress};
use crate::setup::{install_ctrl_c, read_corpus, resolve_data, setup_device, tune_allocator};

/// The task a train command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainCommand {
    /// `charlstm train`: language models.
    Lm,
    /// `charlstm mirror train`: the word mirror.
    Mirror,
}

impl TrainCommand {
    fn default_recipe(self) -> &'static str {
        match self {
            TrainCommand::Lm => "notebook-char",
            TrainCommand::Mirror => "mirror",
        }
    }

    /// The command line that trains `recipe`, when it is not this one.
    fn refuses(self, recipe: &Recipe) -> Option<&'static str> {
        match (self, recipe) {
            (TrainCommand::Lm, Recipe::Mirror(_)) => Some("charlstm mirror train"),
            (TrainCommand::Mirror, Recipe::Lm(_)) => Some("charlstm train"),
            _ => None,
        }
    }

    fn resume_command(self) -> &'static str {
        match self {
            TrainCommand::Lm => "charlstm train",
            TrainCommand::Mirror => "charlstm mirror train",
        }
    }
}

/// Trains a new run or resumes one: device, recipe and overrides, the run
/// target, the corpus (the run's own when resuming without --data), Ctrl-C,
/// progress, the final line and the exit code (130 when stopped).
pub fn train(a: TrainArgs, command: TrainCommand) -> Result<ExitCode> {
    let (device, device_name) = setup_device(&a.device)?;
    let overrides = a.overrides();
    let (loaded, target, data_fallback) = match &a.resume {
        Some(dir) => {
            let (loaded, config) = trainer::run_recipe(dir, &overrides)?;
            (
                loaded,
                RunTarget::Resume(dir.clone()),
                Some(config.data_source),
            )
        }
        None => (
            trainer::load_recipe(
                a.recipe.as_deref().unwrap_or(command.default_recipe()),
                &overrides,
            )?,
            RunTarget::New {
                path: a.run.clone(),
                runs_root: a.runs.clone(),
            },
            None,
        ),
    };
    if let Some(other) = command.refuses(&loaded.recipe) {
        let what = match loaded.recipe {
            Recipe::Lm(_) => "trains a language model",
            Recipe::Mirror(_) => "trains the word mirror",
        };
        match &a.resume {
            Some(dir) => bail!("run {} {what}: use `{other} --resume {0}`", dir.display()),
            // the recipe as given: a file's path, not only its name
            None => bail!(
                "recipe {} {what}: use `{other} --recipe {}`",
                loaded.name,
                a.recipe.as_deref().unwrap_or(&loaded.name)
            ),
        }
    }
    tune_allocator(&loaded);
    if let Recipe::Lm(r) = &loaded.recipe
        && !a.quiet
        && let Some(note) = trainer::lm::precision_note(&loaded.name, r, &device)
    {
        errln!("note: {note}");
    }
    let path = resolve_data(&a.data, data_fallback.as_deref())?;
    let corpus = read_corpus(&path)?;

    let stop = install_ctrl_c()?;
    if let Some(p) = &a.loss_trace {
        // never the corpus or a file of the run directory, never a link or a device
        let mut inputs = vec![path.as_path()];
        inputs.extend(a.resume.as_deref().or(a.run.as_deref()));
        trainer::fsutil::check_output(p, a.force, &inputs).context("--loss-trace")?;
    }
    // written beside its path once training starts (a run refused by its
    // checks leaves an old trace as it was), put in its place when the run
    // ends, however it ends: a replaced file's other hard links keep its bytes
    let mut trace: Option<trainer::Result<trainer::fsutil::AtomicFile>> = None;
    let mut shown = Progress::new(a.log, a.quiet);
    let json = shown.mode() == LogMode::Json;
    let result = trainer::train(
        &loaded,
        &corpus,
        &target,
        TrainOptions {
            stop: Some(&stop),
            loss_trace: a.loss_trace.is_some(),
            samples: !a.no_samples,
            ..TrainOptions::new(device, device_name)
        },
        &mut |e| {
            match (&a.loss_trace, &mut trace, e) {
                (Some(p), None, Event::Started { .. }) => {
                    trace = Some(trainer::fsutil::AtomicFile::create(p));
                }
                (_, Some(Ok(file)), Event::Step { loss: Some(l), .. }) => {
                    if let Err(e) = file.write_all(format!("{l}\n").as_bytes()) {
                        trace = Some(Err(e));
                    }
                }
                _ => {}
            }
            shown.event(e);
        },
    );
    shown.finish();
    // the trace of the steps trained, kept also when training failed
    let traced = trace.map(|t| t.and_then(|file| file.commit(a.force)));
    let report = result?;
    if let Some(Err(e)) = traced {
        return Err(e).context("--loss-trace");
    }
    if json {
        outln!("{}", serde_json::json!({"event": "done", "report": report}));
    } else {
        for line in final_lines(&report) {
            outln!("{line}");
        }
        if report.interrupted() {
            outln!(
                "continue with: {} --resume {}",
                command.resume_command(),
                report.run_dir().display()
            );
        }
    }
    Ok(if report.interrupted() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// What a person reads at the end of a run.
fn final_lines(report: &TrainReport) -> Vec<String> {
    match report {
        TrainReport::Lm(r) => {
            let verb = if r.interrupted { "stopped" } else { "done" };
            let valid = r
                .last
                .as_ref()
                .map(|s| format!("validation perplexity {:.2} (step {})", s.valid_ppl, s.step))
                .unwrap_or_else(|| "no summary yet".to_string());
            vec![format!(
                "{verb}: {} steps, {valid}, {:.1} s training ({:.0} chars/s); run: {}",
                r.steps,
                r.train_seconds,
                r.chars_per_sec,
                r.run_dir.display()
            )]
        }
        TrainReport::Mirror(r) => {
            let pct = |s: &Scores| {
                format!(
                    "characters {:.2}%, words {:.2}%, sentences {:.2}%",
                    100.0 * s.char_acc,
                    100.0 * s.word_acc,
                    100.0 * s.sentence_acc
                )
            };
            let run = &r.run;
            match (&r.test_greedy, &r.test_beam) {
                (Some(greedy), Some(beam)) => {
                    let mut lines = vec![format!(
                        "done: {} steps in {:.0} s; test ({} unseen sentences), greedy: {}",
                        run.steps,
                        run.train_seconds,
                        greedy.sentences,
                        pct(greedy)
                    )];
                    if r.beam > 1 {
                        lines.push(format!("beam {}: {}", r.beam, pct(beam)));
                    }
                    lines.push(format!("run: {}", run.run_dir.display()));
                    lines
                }
                _ => {
                    let valid = run
                        .last
                        .as_ref()
                        .map(|s| format!(", validation at step {}: {}", s.step, pct(&s.valid)))
                        .unwrap_or_default();
                    vec![format!(
                        "stopped: {} steps{valid}; run: {}",
                        run.steps,
                        run.run_dir.display()
                    )]
                }
            }
        }
    }
}
