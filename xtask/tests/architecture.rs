//! The rules of docs/ARCHITECTURE.md that a test can check: which crate may
//! depend on which, which modules may import which, where devices are made.
//! (The rest are kept by lints: `print_stdout`/`print_stderr` in the
//! libraries, `missing_docs`, clippy with warnings as errors in CI.)

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Names of a crate's normal dependencies (`[dependencies]` and target-specific ones).
fn dependencies(krate: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
    let mut deps = vec![];
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]"
                || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                deps.push(name.to_string());
            }
        }
    }
    deps
}

const WORKSPACE: &[&str] = &["tokenizer", "text8", "model", "trainer", "cli"];

#[test]
fn crates_depend_one_way() {
    let allowed: &[(&str, &[&str])] = &[
        ("crates/tokenizer", &[]),
        ("crates/text8", &["tokenizer"]),
        ("crates/model", &["tokenizer"]),
        ("crates/trainer", &["model", "text8", "tokenizer"]),
        ("crates/cli", &["trainer", "text8", "tokenizer"]),
        ("xtask", &[]),
    ];
    for (krate, ok) in allowed {
        let deps = dependencies(krate);
        for d in &deps {
            if WORKSPACE.contains(&d.as_str()) {
                assert!(ok.contains(&d.as_str()), "{krate} must not depend on {d}");
            }
        }
        let burn = deps.iter().any(|d| d == "burn");
        let may_use_burn = matches!(*krate, "crates/model" | "crates/trainer" | "crates/cli");
        assert!(!burn || may_use_burn, "{krate} must not depend on Burn");
        let anyhow = deps.iter().any(|d| d == "anyhow");
        assert!(
            !anyhow || matches!(*krate, "crates/cli" | "xtask"),
            "{krate}: anyhow belongs to the binaries; libraries define their errors"
        );
    }
}

fn source(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

#[test]
fn the_two_trainers_share_the_lifecycle_and_not_each_other() {
    let lm = source("crates/trainer/src/lm.rs");
    let mirror = source("crates/trainer/src/mirror.rs");
    assert!(!lm.contains("crate::mirror"), "lm imports mirror");
    assert!(!mirror.contains("crate::lm"), "mirror imports lm");
    for (name, text) in [("lm", &lm), ("mirror", &mirror)] {
        assert!(
            text.contains("impl Task for") && text.contains("session::train("),
            "{name} does not run through session"
        );
        // run-directory files are the lifecycle's alone
        for file in [
            "checkpoint_path",
            "metrics_path",
            "log_path",
            "write_config",
        ] {
            assert!(
                !text.contains(file),
                "{name} touches the run directory ({file})"
            );
        }
    }
}

#[test]
fn only_the_cli_device_module_makes_devices() {
    let dir = root().join("crates/cli/src");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "device.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for make in ["Device::flex(", "Device::ndarray(", "Device::wgpu("] {
            assert!(!text.contains(make), "{}: {make}", path.display());
        }
    }
}

#[test]
fn recipes_live_with_the_crate_that_reads_them() {
    let recipe = source("crates/trainer/src/recipe.rs");
    assert!(
        !recipe.contains("xtask/"),
        "the trainer reads recipes from xtask"
    );
    for entry in std::fs::read_dir(root().join("crates/trainer/recipes")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            recipe.contains(&format!("include_str!(\"../recipes/{name}\")")),
            "{name} is not compiled in"
        );
    }
}
