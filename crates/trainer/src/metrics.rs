//! Per-summary metrics: the notebook's log lines, `metrics.csv` and the plots,
//! for any task's rows ([`MetricsRow`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::fsutil::atomic_write_str;
use crate::plot::{Plot, Series};

/// One summary of a language-model run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Step the summary was taken at.
    pub step: u64,
    /// Mean training loss since the previous summary (the loss of step 0 at step 0).
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Perplexity of this step's minibatch, `exp(loss)`.
    pub minibatch_ppl: f64,
    /// Validation perplexity (batch 1, character by character, state carried).
    pub valid_ppl: f64,
    /// Validation bits per character, `log2(valid_ppl)`.
    pub valid_bpc: f64,
    /// The notebook's own bigram validation (every other character; bigram models only).
    pub valid_ppl_notebook: Option<f64>,
    /// Global gradient norm of this step, before clipping.
    pub grad_norm: f64,
    /// Training characters per second since the previous summary (validation,
    /// sampling and checkpoints excluded).
    pub chars_per_sec: f64,
    /// Seconds of training so far (all sessions of a resumed run).
    pub wall_seconds: f64,
}

/// One row of `metrics.csv`: a summary of either task. The run lifecycle
/// ([`crate::session`]) writes, reads back and plots rows through this trait
/// alone, so both tasks keep their metrics the same way.
pub trait MetricsRow: Clone + Serialize + std::fmt::Debug {
    /// The CSV header line (no newline).
    const CSV_HEADER: &'static str;
    /// The step the summary was taken at.
    fn step(&self) -> u64;
    /// Mean training loss since the previous summary.
    fn loss(&self) -> f64;
    /// The row as one CSV line (no newline).
    fn to_csv(&self) -> String;
    /// A row back from its CSV fields; `None` when malformed.
    fn from_csv(fields: &[&str]) -> Option<Self>;
    /// The log lines of this summary, with the samples drawn at it, if any.
    fn log_lines(&self, samples: Option<&[String]>) -> Vec<String>;
    /// The plots of a run's rows: `(file name, plot)`.
    fn plots(title: &str, rows: &[Self]) -> Vec<(&'static str, Plot)>;
}

impl MetricsRow for Summary {
    const CSV_HEADER: &'static str = "step,loss,lr,minibatch_ppl,valid_ppl,valid_bpc,valid_ppl_notebook,grad_norm,chars_per_sec,wall_seconds";

    fn step(&self) -> u64 {
        self.step
    }

    fn loss(&self) -> f64 {
        self.loss
    }

    fn to_csv(&self) -> String {
        format!(
            "{},{:.6},{},{:.4},{:.4},{:.4},{},{:.4},{:.0},{:.2}",
            self.step,
            self.loss,
            self.lr,
            self.minibatch_ppl,
            self.valid_ppl,
            self.valid_bpc,
            self.valid_ppl_notebook
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default(),
            self.grad_norm,
            self.chars_per_sec,
            self.wall_seconds
        )
    }

    fn from_csv(f: &[&str]) -> Option<Self> {
        if f.len() != 10 {
            return None;
        }
        let num = |k: usize| f[k].parse::<f64>().ok();
        Some(Summary {
            step: f[0].parse().ok()?,
            loss: num(1)?,
            lr: num(2)?,
            minibatch_ppl: num(3)?,
            valid_ppl: num(4)?,
            valid_bpc: num(5)?,
            valid_ppl_notebook: if f[6].is_empty() { None } else { Some(num(6)?) },
            grad_norm: num(7)?,
            chars_per_sec: num(8)?,
            wall_seconds: num(9)?,
        })
    }

    /// The notebook's three lines, with the samples between the second and the third.
    fn log_lines(&self, samples: Option<&[String]>) -> Vec<String> {
        let mut lines = vec![
            format!(
                "Average loss at step {}: {:.6} learning rate: {:.6}",
                self.step, self.loss, self.lr
            ),
            format!("Minibatch perplexity: {:.2}", self.minibatch_ppl),
        ];
        if let Some(samples) = samples {
            lines.push("=".repeat(80));
            lines.extend(samples.iter().cloned());
            lines.push("=".repeat(80));
        }
        let mut v = format!("Validation set perplexity: {:.2}", self.valid_ppl);
        if let Some(nb) = self.valid_ppl_notebook {
            v.push_str(&format!(
                " (the notebook's bigram validation, every other character: {nb:.2})"
            ));
        }
        lines.push(v);
        lines
    }

    fn plots(title: &str, rows: &[Self]) -> Vec<(&'static str, Plot)> {
        vec![
            (
                "loss.png",
                step_plot(
                    &format!("{title}: training loss"),
                    "cross-entropy (nats)",
                    rows,
                    &[("mean training loss", &|r: &Self| r.loss)],
                ),
            ),
            (
                "perplexity.png",
                step_plot(
                    &format!("{title}: perplexity"),
                    "perplexity",
                    rows,
                    &[
                        ("minibatch", &|r: &Self| r.minibatch_ppl),
                        ("validation", &|r: &Self| r.valid_ppl),
                    ],
                ),
            ),
        ]
    }
}

/// A column of rows to draw: its legend and how to read it from a row.
pub type Column<'a, R> = (&'a str, &'a dyn Fn(&R) -> f64);

/// A plot of columns of `rows` against their steps.
pub fn step_plot<R: MetricsRow>(
    title: &str,
    y_label: &str,
    rows: &[R],
    columns: &[Column<'_, R>],
) -> Plot {
    let steps: Vec<f64> = rows.iter().map(|r| r.step() as f64).collect();
    let mut plot = Plot::new(title, "step", y_label);
    for (label, value) in columns {
        plot.add(Series::new(label, &steps, rows.iter().map(value).collect()));
    }
    plot
}

/// Every row as the text of `metrics.csv`, header first.
pub fn csv_text<R: MetricsRow>(rows: &[R]) -> String {
    let mut text = String::from(R::CSV_HEADER);
    text.push('\n');
    for r in rows {
        text.push_str(&r.to_csv());
        text.push('\n');
    }
    text
}

/// Writes every row to `metrics.csv` (atomically).
pub fn write_csv<R: MetricsRow>(path: &Path, rows: &[R]) -> Result<()> {
    atomic_write_str(path, &csv_text(rows))
}

/// Reads `metrics.csv` back ([`parse_csv`]).
pub fn read_csv<R: MetricsRow>(path: &Path) -> Result<Vec<R>> {
    let text = crate::fsutil::read_text(path, crate::fsutil::MAX_TEXT_BYTES)?;
    parse_csv(&text, &path.display().to_string())
}

/// The rows of a [`csv_text`]; a header of another task or a malformed
/// line is an error naming `source` (a file, or a checkpoint's metadata)
/// and the line.
pub fn parse_csv<R: MetricsRow>(text: &str, source: &str) -> Result<Vec<R>> {
    let mut lines = text.lines();
    if lines.next() != Some(R::CSV_HEADER) {
        return Err(TrainError::Run(format!(
            "{source}: line 1: not the header of this kind of run ({})",
            R::CSV_HEADER
        )));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            R::from_csv(&f)
                .ok_or_else(|| TrainError::Run(format!("{source}: line {}: malformed row", i + 2)))
        })
        .collect()
}

/// Redraws the plots of `rows` in `dir`: each as PNG and as SVG (the same
/// name, `.svg`).
pub fn write_plots<R: MetricsRow>(dir: &Path, title: &str, rows: &[R]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    for (name, plot) in R::plots(title, rows) {
        let png = dir.join(name);
        plot.write_png(&png)?;
        plot.write_svg(&png.with_extension("svg"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip() {
        let row = Summary {
            step: 100,
            loss: 2.5,
            lr: 10.0,
            minibatch_ppl: 11.0,
            valid_ppl: 10.5,
            valid_bpc: 10.5f64.log2(),
            valid_ppl_notebook: Some(9.0),
            grad_norm: 1.5,
            chars_per_sec: 100000.0,
            wall_seconds: 3.25,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        write_csv(&p, std::slice::from_ref(&row)).unwrap();
        let back: Vec<Summary> = read_csv(&p).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].step, 100);
        assert_eq!(back[0].valid_ppl_notebook, Some(9.0));
        assert!(
            row.log_lines(None)[0]
                .starts_with("Average loss at step 100: 2.500000 learning rate: 10.000000")
        );
    }
}
