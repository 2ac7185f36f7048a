//! Per-summary metrics: the notebook's log lines, `metrics.csv` and the plots.

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

impl Summary {
    /// The notebook's log lines for this summary.
    pub fn notebook_lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "Average loss at step {}: {:.6} learning rate: {:.6}",
                self.step, self.loss, self.lr
            ),
            format!("Minibatch perplexity: {:.2}", self.minibatch_ppl),
        ];
        let mut v = format!("Validation set perplexity: {:.2}", self.valid_ppl);
        if let Some(nb) = self.valid_ppl_notebook {
            v.push_str(&format!(
                " (the notebook's bigram validation, every other character: {nb:.2})"
            ));
        }
        lines.push(v);
        lines
    }
}

const HEADER: &str = "step,loss,lr,minibatch_ppl,valid_ppl,valid_bpc,valid_ppl_notebook,grad_norm,chars_per_sec,wall_seconds";

/// Writes every row to `metrics.csv` (atomically, so it always matches a checkpoint).
pub fn write_csv(path: &Path, rows: &[Summary]) -> Result<()> {
    let mut text = String::from(HEADER);
    text.push('\n');
    for r in rows {
        text.push_str(&format!(
            "{},{:.6},{},{:.4},{:.4},{:.4},{},{:.4},{:.0},{:.2}\n",
            r.step,
            r.loss,
            r.lr,
            r.minibatch_ppl,
            r.valid_ppl,
            r.valid_bpc,
            r.valid_ppl_notebook
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default(),
            r.grad_norm,
            r.chars_per_sec,
            r.wall_seconds
        ));
    }
    atomic_write_str(path, &text)
}

/// Reads `metrics.csv` back.
pub fn read_csv(path: &Path) -> Result<Vec<Summary>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut rows = vec![];
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || TrainError::Run(format!("{}: line {}: malformed row", path.display(), i + 1));
        if f.len() != 10 {
            return Err(bad());
        }
        let num = |k: usize| f[k].parse::<f64>().map_err(|_| bad());
        rows.push(Summary {
            step: f[0].parse().map_err(|_| bad())?,
            loss: num(1)?,
            lr: num(2)?,
            minibatch_ppl: num(3)?,
            valid_ppl: num(4)?,
            valid_bpc: num(5)?,
            valid_ppl_notebook: if f[6].is_empty() { None } else { Some(num(6)?) },
            grad_norm: num(7)?,
            chars_per_sec: num(8)?,
            wall_seconds: num(9)?,
        });
    }
    Ok(rows)
}

/// Redraws `loss.png` and `perplexity.png` in `dir`.
pub fn write_plots(dir: &Path, title: &str, rows: &[Summary]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let steps: Vec<f64> = rows.iter().map(|r| r.step as f64).collect();
    let mut loss = Plot::new(
        &format!("{title}: training loss"),
        "step",
        "cross-entropy (nats)",
    );
    loss.add(Series::new(
        "mean training loss",
        &steps,
        rows.iter().map(|r| r.loss).collect(),
    ));
    loss.write_png(&dir.join("loss.png"))?;
    let mut ppl = Plot::new(&format!("{title}: perplexity"), "step", "perplexity");
    ppl.add(Series::new(
        "minibatch",
        &steps,
        rows.iter().map(|r| r.minibatch_ppl).collect(),
    ));
    ppl.add(Series::new(
        "validation",
        &steps,
        rows.iter().map(|r| r.valid_ppl).collect(),
    ));
    ppl.write_png(&dir.join("perplexity.png"))
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
        let back = read_csv(&p).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].step, 100);
        assert_eq!(back[0].valid_ppl_notebook, Some(9.0));
        assert!(
            row.notebook_lines()[0]
                .starts_with("Average loss at step 100: 2.500000 learning rate: 10.000000")
        );
    }
}
