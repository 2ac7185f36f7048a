//! The three vocabularies: characters, bigrams and the mirror's.
//!
//! `cargo run -p tokenizer --example vocabularies -- "the cat"`

#![allow(clippy::print_stdout)]

use tokenizer::{BigramVocab, CharVocab, MirrorVocab, Tokenizer};

fn main() -> Result<(), tokenizer::TokenizerError> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "the quick brown fox".into());
    let chars = CharVocab.encode(&text)?;
    println!("characters: {chars:?}");
    println!("back: {:?}", CharVocab.decode(&chars)?);
    println!("bigrams: {:?}", BigramVocab.encode(&text)?);
    println!("mirror ids: {:?}", MirrorVocab.encode(&text)?);
    for t in [Tokenizer::Char, Tokenizer::Bigram, Tokenizer::Mirror] {
        println!(
            "{:>7}: {} inputs, {} outputs",
            t.name(),
            t.vocab_size(),
            t.output_size()
        );
    }
    Ok(())
}
