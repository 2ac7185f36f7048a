//! `charlstm train` and `charlstm mirror train`: one driver for both tasks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use trainer::mirror::Scores;
use trainer::session::n_steps;
use trainer::{Event, Recipe, RunTarget, TrainOptions, TrainReport};

use crate::args::TrainArgs;
use crate::progress::{LogMode, Progress};
use crate::setup::{
    install_ctrl_c, read_corpus, resolve_data, setup_device, tune_allocator, with_overrides,
};

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
        let train = recipe.train_command();
        (train != self.line()).then_some(train)
    }

    /// This command's line, as error messages name it.
    fn line(self) -> &'static str {
        trainer::recipe::train_command(self == TrainCommand::Mirror)
    }
}

/// Trains a new run or resumes one: device, recipe and overrides, the run
/// target, the corpus (the run's own when resuming without --data), Ctrl-C,
/// progress, the final line and the exit code (128 + the signal's number
/// when a signal stopped it: 130 for Ctrl-C).
pub fn train(a: TrainArgs, command: TrainCommand) -> Result<ExitCode> {
    let (device, device_name) = setup_device(&a.device)?;
    let recipe_name = a.recipe.as_deref().unwrap_or(command.default_recipe());
    // the task first, before the overrides: another task's keys would be
    // named as unknown fields of this one's
    let plain = match &a.resume {
        Some(dir) => trainer::run_recipe(dir, &[])?.0,
        None => trainer::load_recipe(recipe_name, &[])?,
    };
    if let Some(other) = command.refuses(&plain.recipe) {
        let what = match plain.recipe {
            Recipe::Lm(_) => "trains a language model",
            Recipe::Mirror(_) => "trains the word mirror",
        };
        match &a.resume {
            Some(dir) => bail!("run {} {what}: use `{other} --resume {0}`", dir.display()),
            // the recipe as given: a file's path, not only its name
            None => bail!(
                "recipe {} {what}: use `{other} --recipe {recipe_name}`",
                plain.name
            ),
        }
    }
    let overrides = a.overrides();
    let (loaded, target, data_fallback) = match &a.resume {
        Some(dir) => {
            let (loaded, config) = with_overrides(&overrides, |o| trainer::run_recipe(dir, o))?;
            // the corpus's path is kept as text: one that is not UTF-8 is not found again
            if a.data.data.is_none() && config.data_source.contains('\u{fffd}') {
                bail!(
                    "run {} was trained on {}, a path that is not UTF-8 and cannot be read back \
                     from config.json: give the corpus again with --data",
                    dir.display(),
                    config.data_source
                );
            }
            (
                loaded,
                RunTarget::Resume(dir.clone()),
                Some(config.data_source),
            )
        }
        None => (
            with_overrides(&overrides, |o| trainer::load_recipe(recipe_name, o))?,
            RunTarget::New {
                path: a.run.clone(),
                runs_root: a.runs.clone(),
            },
            None,
        ),
    };
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
    crate::setup::stop_when_stdout_fails(stop.clone());
    // never the corpus or a file of the run directory, never a link or a device
    let mut trace = match &a.loss_trace {
        Some(p) => {
            let mut inputs = vec![path.as_path()];
            inputs.extend(a.resume.as_deref().or(a.run.as_deref()));
            Some(LossTrace::open(p, a.force, &inputs)?)
        }
        None => None,
    };
    let mut shown = Progress::new(a.log, a.quiet);
    let json = shown.mode() == LogMode::Json;
    // where it trains, once it does: a run that then fails to write says
    // how to go on from its last checkpoint
    let mut started: Option<PathBuf> = None;
    let result = trainer::train(
        &loaded,
        &corpus,
        &target,
        TrainOptions {
            stop: Some(&stop),
            loss_trace: trace.is_some(),
            samples: !a.no_samples,
            ..TrainOptions::new(device, device_name)
        },
        &mut |e| {
            if let Event::Started { run_dir, .. } = e {
                started = Some(run_dir.to_path_buf());
            }
            match (trace.as_mut(), e) {
                (Some(t), Event::Started { .. }) => t.start(),
                (Some(t), Event::Step { loss: Some(l), .. }) => t.write(*l),
                _ => {}
            }
            shown.event(e);
        },
    );
    shown.finish();
    crate::setup::training_ended();
    // the steps trained are kept also when training failed
    let traced = trace.map_or(Ok(()), LossTrace::finish);
    let report = result.map_err(|e| with_resume_hint(e, started.as_deref(), command))?;
    let resume = format!(
        "continue with: {} --resume {}",
        command.line(),
        report.run_dir().display()
    );
    if json {
        outln!("{}", serde_json::json!({"event": "done", "report": report}));
    } else {
        for line in final_lines(&report) {
            outln!("{line}");
        }
        if report.interrupted() {
            outln!("{resume}");
        }
    }
    // a stdout that failed stopped the run: how to go on, where it is read
    let stdout_failure = crate::setup::stdout_failure();
    if stdout_failure.is_some() && report.interrupted() {
        errln!("{resume}");
    }
    // said after the report: the run itself is saved
    traced?;
    Ok(match stdout_failure {
        Some(status) => ExitCode::from(status),
        None if report.interrupted() => ExitCode::from(crate::setup::stop_status()),
        None => ExitCode::SUCCESS,
    })
}

/// The `--loss-trace` file: one loss a line, written as the steps run. A
/// new path is created before training (one that cannot be written fails
/// first); an existing one (`--force`) is replaced only once training
/// starts, its name unlinked and created anew, so that a run refused by its
/// checks leaves it as it was and another hard link to it keeps its bytes.
struct LossTrace {
    path: std::path::PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// Created by this command: removed again if training never starts.
    created: bool,
    /// Training started ([`LossTrace::start`]).
    started: bool,
    /// The first write that failed (training goes on; said at the end).
    error: Option<std::io::Error>,
}

impl LossTrace {
    fn open(p: &std::path::Path, force: bool, inputs: &[&std::path::Path]) -> Result<Self> {
        trainer::fsutil::check_output(p, force, inputs).context("--loss-trace")?;
        let exists = std::fs::symlink_metadata(p).is_ok();
        let file = if exists {
            None
        } else {
            Some(Self::create(p).with_context(|| format!("--loss-trace {}", p.display()))?)
        };
        Ok(LossTrace {
            path: p.to_path_buf(),
            file,
            created: !exists,
            started: false,
            error: None,
        })
    }

    /// The name created new (never through what appeared there meanwhile).
    fn create(p: &std::path::Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)?;
        Ok(std::io::BufWriter::new(file))
    }

    /// Training started: an existing file replaced by a new one of its name.
    fn start(&mut self) {
        self.started = true;
        if self.file.is_none() && self.error.is_none() {
            match std::fs::remove_file(&self.path).and_then(|()| Self::create(&self.path)) {
                Ok(f) => self.file = Some(f),
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn write(&mut self, loss: f64) {
        use std::io::Write as _;
        if let (Some(f), None) = (self.file.as_mut(), &self.error)
            && let Err(e) = writeln!(f, "{loss}")
        {
            self.error = Some(e);
        }
    }

    /// After training: flushed, or (a run that never started) the empty
    /// file this command created removed; the first error, naming the file.
    fn finish(mut self) -> Result<()> {
        use std::io::Write as _;
        if !self.started && self.created {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.path);
            return Ok(());
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.flush()
        {
            self.error.get_or_insert(e);
        }
        match self.error {
            Some(e) => Err(e).with_context(|| format!("--loss-trace {}", self.path.display())),
            None => Ok(()),
        }
    }
}

/// A file that could not be read or written once the run had started (a
/// full disk, a file-size limit): the error says how to go on, as a stopped
/// run's last line does: from its last checkpoint, or from step 0 where the
/// failed save was its first.
fn with_resume_hint(
    e: trainer::TrainError,
    run_dir: Option<&Path>,
    command: TrainCommand,
) -> anyhow::Error {
    let run = run_dir
        .filter(|dir| e.is_io() && trainer::run::is_run_dir(dir))
        .and_then(|dir| trainer::RunDir::open(dir).ok());
    match run {
        Some(run) => {
            let kept = if run.checkpoint_path().is_file() {
                "the run keeps its last checkpoint"
            } else {
                "no checkpoint was saved yet (resuming starts again from step 0)"
            };
            anyhow::anyhow!(
                "{e}\n{kept}; when that is mended, continue with: {} --resume {}",
                command.line(),
                run.path().display()
            )
        }
        None => e.into(),
    }
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
                "{verb}: {}, {valid}, {:.1} s training ({:.0} chars/s); run: {}",
                n_steps(r.steps),
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
                    let trained = match run.session_steps {
                        0 => "all trained before".to_string(),
                        _ => format!("in {:.0} s", run.train_seconds),
                    };
                    let mut lines = vec![format!(
                        "done: {} {trained}; test ({} unseen sentences), greedy: {}",
                        n_steps(run.steps),
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
                    let stopped = if run.finish_left {
                        "stopped before the test: all"
                    } else {
                        "stopped:"
                    };
                    vec![format!(
                        "{stopped} {} trained{valid}; run: {}",
                        n_steps(run.steps),
                        run.run_dir.display()
                    )]
                }
            }
        }
    }
}
