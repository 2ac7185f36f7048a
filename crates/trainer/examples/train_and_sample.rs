//! Train a small language model into a run directory, then load the run back
//! and sample from it: the library calls behind `charlstm train` and
//! `charlstm sample`.
//!
//! `cargo run --release -p trainer --example train_and_sample -- ../shared/datasets/wikitext2-valid/text8.zip`

#![allow(clippy::print_stdout)]

use burn::tensor::Device;
use trainer::sample::SampleOptions;
use trainer::{Event, RunTarget, TrainOptions};

fn main() -> trainer::Result<()> {
    let data = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/datasets/wikitext2-valid/text8.zip".into());
    let corpus = text8::read_corpus(std::path::Path::new(&data))?;
    // the notebook's recipe, shortened
    let recipe = trainer::load_recipe("notebook-char", &["train.steps=301".into()])?;
    let runs = std::env::temp_dir().join(format!("charlstm-example-{}", std::process::id()));
    let report = trainer::train_lm(
        &recipe,
        &corpus,
        &RunTarget::New {
            path: None,
            runs_root: runs.clone(),
        },
        TrainOptions::new(Device::flex(), "flex"),
        &mut |e| {
            if let Event::Summary { lines, .. } = e {
                println!("{}", lines.join("\n"));
            }
        },
    )?;
    println!(
        "trained {} steps into {}",
        report.steps,
        report.run_dir.display()
    );

    // anyone can load the run directory back, on any device
    let (model, kind, _config) = trainer::lm::load_lm(&report.run_dir, &Device::flex())?;
    let mut rng = tokenizer::rng::Rng::new(7);
    let texts = trainer::sample::generate(
        &model,
        kind,
        &SampleOptions {
            length: 60,
            temperature: 0.8,
            prime: Some("the ".into()),
            count: 2,
            truncation: Default::default(),
        },
        &mut rng,
        &Device::flex(),
    )?;
    for t in texts {
        println!("{t}");
    }
    std::fs::remove_dir_all(&runs).ok();
    Ok(())
}
