//! `cargo xtask`: training recipes and chores.
//!
//! Depends on no workspace crate: it reads the recipe files in
//! `crates/trainer/recipes/` and shells out to `cargo run --release -p cli -- ...`.
//!
//! ```text
//! cargo xtask recipes                      list the recipes
//! cargo xtask train RECIPE [ARGS...]       train a recipe (ARGS go to `charlstm train`)
//! cargo xtask notebook [--data FILE] [ARGS...]
//!                                          run every notebook recipe, print a results table
//! cargo xtask bench [ARGS...]              speed benchmark (see docs/PERFORMANCE.md)
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where the recipes live: with the trainer, which compiles them in.
fn recipe_dir() -> PathBuf {
    root().join("crates/trainer/recipes")
}

/// `(name, description)` of every recipe file, sorted by name.
fn recipes() -> Vec<(String, String)> {
    let dir = recipe_dir();
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
                .map(|e| {
                    let name = e.path().file_stem().unwrap().to_string_lossy().into_owned();
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let desc = text
                        .lines()
                        .find_map(|l| l.strip_prefix("description = "))
                        .map(|d| d.trim_matches('"').to_string())
                        .unwrap_or_default();
                    (name, desc)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `cargo run --release -p cli [--features F] -- ARGS`.
pub fn charlstm(features: Option<&str>, args: &[String]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root())
        .args(["run", "--quiet", "--release", "-p", "cli"]);
    if let Some(f) = features {
        c.args(["--features", f]);
    }
    c.arg("--").args(args);
    c
}

fn status(mut c: Command) -> ExitCode {
    match c.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            ExitCode::from(1)
        }
    }
}

const NOTEBOOK: [&str; 5] = [
    "notebook-char",
    "notebook-fused",
    "notebook-embed",
    "notebook-bigram",
    "notebook-dropout",
];

fn notebook(args: &[String]) -> ExitCode {
    let mut rows = vec![];
    for recipe in NOTEBOOK {
        eprintln!("== {recipe}");
        let mut a: Vec<String> = vec![
            "train".into(),
            "--recipe".into(),
            recipe.into(),
            "--log".into(),
            "json".into(),
        ];
        a.extend(args.iter().cloned());
        let out = match charlstm(None, &a)
            .stderr(std::process::Stdio::inherit())
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("xtask: {e}");
                return ExitCode::from(1);
            }
        };
        if !out.status.success() {
            eprintln!("xtask: {recipe} failed");
            return ExitCode::from(1);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let done = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "done");
        let Some(done) = done else {
            eprintln!("xtask: {recipe}: no final report");
            return ExitCode::from(1);
        };
        let r = &done["report"];
        rows.push(format!(
            "| {recipe} | {} | {:.2} | {:.1} s | {:.0}k |",
            r["steps"],
            r["final_valid_ppl"].as_f64().unwrap_or(f64::NAN),
            r["train_seconds"].as_f64().unwrap_or(f64::NAN),
            r["chars_per_sec"].as_f64().unwrap_or(f64::NAN) / 1000.0
        ));
    }
    println!("| recipe | steps | final validation perplexity | training loop | chars/s |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <recipes | train RECIPE [ARGS...] | notebook [ARGS...] | bench [ARGS...]>\n\
         ARGS are passed to `charlstm train` (e.g. --data FILE, --steps N, --set key=value)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("recipes") => {
            for (name, desc) in recipes() {
                println!("{name:<18} {desc}");
            }
            ExitCode::SUCCESS
        }
        Some("train") => {
            let Some(recipe) = args.get(1) else {
                return usage();
            };
            let text = std::fs::read_to_string(recipe_dir().join(format!("{recipe}.toml")))
                .or_else(|_| std::fs::read_to_string(recipe));
            let Ok(text) = text else {
                eprintln!("xtask: unknown recipe {recipe:?}; `cargo xtask recipes` lists them");
                return ExitCode::from(2);
            };
            let mut all: Vec<String> = if text.contains("task = \"mirror\"") {
                vec!["mirror".into(), "train".into()]
            } else {
                vec!["train".into()]
            };
            all.extend(["--recipe".to_string(), recipe.clone()]);
            all.extend(args[2..].iter().cloned());
            status(charlstm(None, &all))
        }
        Some("notebook") => notebook(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        _ => usage(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recipes_lists_every_recipe_file_with_its_description() {
        let listed = super::recipes();
        let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        for name in ["notebook-char", "notebook-dropout", "large", "mirror"] {
            assert!(names.contains(&name), "{name} not in {names:?}");
        }
        for (name, desc) in &listed {
            assert!(!desc.is_empty(), "recipe {name} has no description");
        }
    }
}
