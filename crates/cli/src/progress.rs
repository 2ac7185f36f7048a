//! What a person (or a script) sees while training: a progress bar on a
//! terminal, the notebook's plain log lines otherwise, or JSON lines.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use trainer::Event;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogMode {
    /// A progress bar on a terminal, plain lines otherwise.
    Auto,
    /// Progress bar (step, loss, chars/s, ETA) with the summaries above it.
    Bar,
    /// The notebook's log lines, one summary at a time.
    Plain,
    /// One JSON object per line: summaries, checkpoints, the final report.
    Json,
}

/// Renders trainer events.
pub struct Progress {
    mode: LogMode,
    quiet: bool,
    bar: Option<ProgressBar>,
    last_loss: Option<f64>,
}

impl Progress {
    /// A renderer; `auto` becomes `bar` when stderr is a terminal.
    pub fn new(mode: LogMode, quiet: bool) -> Self {
        let mode = match mode {
            LogMode::Auto if std::io::stderr().is_terminal() => LogMode::Bar,
            LogMode::Auto => LogMode::Plain,
            m => m,
        };
        Progress {
            mode,
            quiet,
            bar: None,
            last_loss: None,
        }
    }

    /// The resolved mode.
    pub fn mode(&self) -> LogMode {
        self.mode
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            // a bar drawn nowhere (stderr not a terminal) prints nothing:
            // the lines go to stdout as in plain mode
            Some(bar) if !bar.is_hidden() => bar.println(s),
            _ => outln!("{s}"),
        }
    }

    /// Handles one event.
    pub fn event(&mut self, e: &Event<'_>) {
        match e {
            Event::Started {
                run_dir,
                start_step,
                total_steps,
                params,
                train_chars,
                resumed,
            } => {
                if self.mode == LogMode::Json {
                    outln!(
                        "{}",
                        json!({"event": "started", "run_dir": run_dir.to_string_lossy(), "start_step": start_step,
                               "total_steps": total_steps, "params": params,
                               "train_chars": train_chars, "resumed": resumed})
                    );
                    return;
                }
                if *resumed && start_step >= total_steps {
                    // stopped after its last step, before the work that follows it
                    self.line(&format!(
                        "Finishing {}: its {start_step} steps are trained",
                        run_dir.display()
                    ));
                    return;
                }
                let verb = if *resumed { "Resuming" } else { "Training" };
                self.line(&format!(
                    "{verb} {} ({params} parameters, {train_chars} training characters) from step {start_step} of {total_steps}",
                    run_dir.display()
                ));
                if self.mode == LogMode::Bar && !self.quiet {
                    let bar = ProgressBar::with_draw_target(
                        Some(*total_steps),
                        ProgressDrawTarget::stderr_with_hz(8),
                    );
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{bar:32.cyan/blue} step {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
                        )
                        .expect("template")
                        .progress_chars("=> "),
                    );
                    bar.set_position(*start_step);
                    bar.reset_eta();
                    bar.enable_steady_tick(Duration::from_millis(250));
                    self.bar = Some(bar);
                }
            }
            Event::Step {
                step,
                loss,
                chars_per_sec,
                ..
            } => {
                if let Some(l) = loss {
                    self.last_loss = Some(*l);
                }
                if let Some(bar) = &self.bar {
                    bar.set_position(step + 1);
                    let loss = self
                        .last_loss
                        .map(|l| format!("loss {l:.4}"))
                        .unwrap_or_default();
                    bar.set_message(format!("{loss} {:.0}k chars/s", chars_per_sec / 1000.0));
                }
            }
            Event::Summary {
                loss,
                lines,
                row,
                samples,
                ..
            } => {
                self.last_loss = Some(*loss);
                if self.mode == LogMode::Json {
                    outln!(
                        "{}",
                        json!({"event": "summary", "summary": row, "samples": samples})
                    );
                    return;
                }
                for l in lines.iter() {
                    self.line(l);
                }
            }
            Event::Checkpoint { step, path } => {
                if self.mode == LogMode::Json {
                    outln!(
                        "{}",
                        json!({"event": "checkpoint", "step": step, "path": path.to_string_lossy()})
                    );
                }
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A bar of `what` counted in `units` (its length set as it becomes known),
/// on stderr where it is a terminal, else hidden.
pub fn count_bar(what: &str, units: &str) -> ProgressBar {
    terminal_bar(Some(0), &count_template(units), what)
}

fn count_template(units: &str) -> String {
    format!("{{msg}} {{bar:32.cyan/blue}} {{pos}}/{{len}} {units} ETA {{eta}}")
}

/// A [`count_bar`] drawn only once its work has taken [`PatientBar::AFTER`]:
/// a quick answer on a terminal comes without a flash of a bar before it.
pub struct PatientBar {
    bar: ProgressBar,
    /// When the bar is to be drawn; `None` once drawn, or where it is never
    /// drawn (stderr no terminal).
    show_at: Option<Instant>,
}

impl PatientBar {
    /// How long the work goes unshown.
    pub const AFTER: Duration = Duration::from_secs(1);

    /// A bar of `what` counted in `units`, not drawn yet.
    pub fn new(what: &str, units: &str) -> Self {
        let bar = styled_bar(Some(0), &count_template(units), what);
        let show_at = std::io::stderr()
            .is_terminal()
            .then(|| Instant::now() + Self::AFTER);
        PatientBar { bar, show_at }
    }

    /// `done` of `total` units: drawn from [`Self::AFTER`] on.
    pub fn set(&mut self, done: usize, total: usize) {
        if self.show_at.is_some_and(|at| Instant::now() >= at) {
            self.show_at = None;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        // each setter draws: the length only when it changes
        if self.bar.length() != Some(total as u64) {
            self.bar.set_length(total as u64);
        }
        self.bar.set_position(done as u64);
    }
}

impl Drop for PatientBar {
    /// Removes the bar, where it was drawn: before what its work prints.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A byte-count progress bar for downloads and file processing (stderr, terminals only).
pub fn bytes_bar(total: Option<u64>, what: &str) -> ProgressBar {
    let template = "{msg} {bar:32.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}";
    terminal_bar(total, template, what)
}

/// A bar of `total` (a spinner for none) drawn by `template`, labelled
/// `what`, where stderr is a terminal; else a hidden one.
fn terminal_bar(total: Option<u64>, template: &str, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = styled_bar(total, template, what);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// A bar of `total` (a spinner for none) drawn by `template`, labelled
/// `what`, drawn nowhere yet.
fn styled_bar(total: Option<u64>, template: &str, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
