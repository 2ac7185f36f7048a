//! Read a corpus in text8 form, split it as the notebook does and draw its
//! first batches.
//!
//! `cargo run -p text8 --example batches -- ../shared/datasets/wikitext2-valid/text8.zip`

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use text8::{BatchGenerator, Split, SplitKind};

fn main() -> Result<(), text8::Text8Error> {
    let path: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/datasets/wikitext2-valid/text8.zip".into())
        .into();
    let corpus = text8::read_corpus(&path)?;
    println!(
        "{}: {} characters, fingerprint {}",
        path.display(),
        corpus.len(),
        corpus.fingerprint()
    );
    let split = Split::new(&corpus.ids, SplitKind::Notebook { valid_size: 1000 })?;
    println!(
        "notebook split: {} training, {} validation characters",
        split.train.len(),
        split.valid.len()
    );
    // 4 cursors, 10 unrollings: each batch is 11 columns of 4 ids, time-major,
    // the last column repeated as the first of the next batch
    let mut batches = BatchGenerator::new(split.train.into(), 4, 10)?;
    for _ in 0..2 {
        let batch = batches.next_batch();
        let rows: Vec<String> = (0..4)
            .map(|b| {
                let ids: Vec<u8> = batch.chunks(4).map(|col| col[b]).collect();
                tokenizer::CharVocab
                    .decode(&ids)
                    .expect("ids of the alphabet")
            })
            .collect();
        println!("{rows:?}");
    }
    Ok(())
}
