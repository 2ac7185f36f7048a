//! Fuzzing what is read from a run directory: `config.json` with any value
//! changed, `model.safetensors` and `checkpoint.safetensors` with bytes
//! changed or cut, checkpoint metadata rewritten. Loading or resuming gives
//! a model or an error, never a panic, an abort or a hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use proptest::prelude::*;
use trainer::{RunTarget, TrainOptions};

const TEXT: &str = " the quick brown fox jumps over the lazy dog while the cat sleeps on the warm \
    mat and the birds sing in the old oak tree near the river where children play";

fn corpus() -> text8::Corpus {
    text8::Corpus::from_text(&TEXT.repeat(60)).unwrap()
}

fn options() -> TrainOptions<'static> {
    TrainOptions::new(Device::flex(), "flex")
}

/// A trained language-model run and a trained mirror run, made once.
fn runs() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static RUNS: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lm = dir.path().join("lm");
        let loaded = trainer::load_recipe(
            "notebook-embed",
            &[
                "train.steps=2".into(),
                "model.d_hidden=8".into(),
                "model.d_embedding=4".into(),
                "data.batch_size=4".into(),
                "data.num_unrollings=3".into(),
                "data.valid_size=50".into(),
            ],
        )
        .unwrap();
        let target = RunTarget::New {
            path: Some(lm.clone()),
            runs_root: dir.path().into(),
        };
        trainer::train(&loaded, &corpus(), &target, options(), &mut |_| {}).unwrap();
        let mirror = dir.path().join("mirror");
        let target = RunTarget::New {
            path: Some(mirror.clone()),
            runs_root: dir.path().into(),
        };
        trainer::train(&tiny_mirror(), &corpus(), &target, options(), &mut |_| {}).unwrap();
        (dir, lm, mirror)
    })
}

/// The mirror recipe at a size that trains its 2 steps in a blink.
fn tiny_mirror() -> trainer::LoadedRecipe {
    trainer::load_recipe(
        "mirror",
        &[
            "train.steps=2".into(),
            "model.d_hidden=8".into(),
            "model.d_embedding=4".into(),
            "data.batch_size=4".into(),
            "data.valid_windows=4".into(),
            "data.test_windows=4".into(),
        ],
    )
    .unwrap()
}

/// A copy of `run` in a fresh folder.
fn copy(run: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(run).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

/// Every number, string and boolean of a JSON tree, by path.
fn leaves(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                leaves(x, format!("{path}/{k}"), out)
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{path}/{i}"), out)
            }
        }
        _ => out.push(path),
    }
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (0u64..40).prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!(true)),
        "[a-z]{0,8}".prop_map(serde_json::Value::from),
        Just(serde_json::json!({"kind": "bigram"})),
        Just(serde_json::json!({"kind": "mirror"})),
    ]
}

fn load(run: &Path, lm: bool) {
    if lm {
        let _ = trainer::lm::load_lm(run, &Device::flex());
    } else {
        let _ = trainer::mirror::load_mirror(run, &Device::flex());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        // PROPTEST_CASES runs longer fuzzing (docs/RELIABILITY.md)
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
    ))]

    /// `config.json` with one value replaced by anything: loaded or refused.
    #[test]
    fn any_config_value_is_loaded_or_refused(pick in any::<prop::sample::Index>(), value in any_json(), lm in any::<bool>()) {
        let (_, lm_run, mirror_run) = runs();
        let dir = copy(if lm { lm_run } else { mirror_run });
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut paths = vec![];
        leaves(&config, String::new(), &mut paths);
        let at = pick.get(&paths).clone();
        *config.pointer_mut(&at).unwrap() = value;
        std::fs::write(&path, config.to_string()).unwrap();
        load(dir.path(), lm);
    }

    /// A weights or checkpoint file with bytes changed or cut: loaded,
    /// resumed or refused.
    #[test]
    fn damaged_weight_files_are_loaded_or_refused(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        checkpoint in any::<bool>(),
        lm in any::<bool>(),
    ) {
        let (_, lm_run, mirror_run) = runs();
        let dir = copy(if lm { lm_run } else { mirror_run });
        let name = if checkpoint { "checkpoint.safetensors" } else { "model.safetensors" };
        let path = dir.path().join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if cut.index(4) == 0 {
            bytes.truncate(cut.index(bytes.len()));
        }
        std::fs::write(&path, bytes).unwrap();
        if checkpoint {
            let Ok((loaded, _)) = trainer::run_recipe(dir.path(), &["train.steps=3".into()]) else {
                return Ok(());
            };
            let target = RunTarget::Resume(dir.path().to_path_buf());
            let _ = trainer::train(&loaded, &corpus(), &target, options(), &mut |_| {});
        } else {
            load(dir.path(), lm);
        }
    }

    /// Checkpoint metadata rewritten (step, random state, loss window, recipe):
    /// resumed or refused.
    #[test]
    fn any_checkpoint_metadata_is_resumed_or_refused(
        key in prop::sample::select(&["step", "rng", "loss_sum", "loss_count", "wall_seconds",
                                      "generator_calls", "recipe", "format", "tokenizer",
                                      "metrics_csv"][..]),
        value in prop_oneof![any::<u64>().prop_map(|v| v.to_string()), "[ -~]{0,20}",
                             Just("NaN".to_string()), Just("-1".to_string())],
    ) {
        let (_, lm_run, _) = runs();
        let dir = copy(lm_run);
        let path = dir.path().join("checkpoint.safetensors");
        let mut ck = trainer::safetensors::SafeTensors::read(&path).unwrap();
        ck.metadata.insert(key.to_string(), value);
        ck.write(&path).unwrap();
        let (loaded, _) = trainer::run_recipe(dir.path(), &["train.steps=4".into()]).unwrap();
        let target = RunTarget::Resume(dir.path().to_path_buf());
        let _ = trainer::train(&loaded, &corpus(), &target, options(), &mut |_| {});
    }
}

/// The error of resuming the run at `dir` to step 4, which must fail.
fn resume_error(dir: &Path) -> String {
    let (loaded, _) = trainer::run_recipe(dir, &["train.steps=4".into()]).unwrap();
    let target = RunTarget::Resume(dir.to_path_buf());
    trainer::train(&loaded, &corpus(), &target, options(), &mut |_| {})
        .unwrap_err()
        .to_string()
}

/// A checkpoint that could not have been written (a value not finite in a
/// weight or the carried state, a loss sum without losses, more optimiser updates than steps) is
/// refused on resuming, naming the file and what is wrong, before any step.
#[test]
fn a_checkpoint_damaged_after_writing_is_refused_on_resuming() {
    type Damage = fn(&mut trainer::safetensors::SafeTensors) -> String;
    /// The first tensor whose name starts with `prefix`, its first value set to `v`.
    fn set_first(ck: &mut trainer::safetensors::SafeTensors, prefix: &str, v: f32) -> String {
        let (name, t) = ck
            .tensors
            .iter_mut()
            .find(|(n, _)| n.starts_with(prefix))
            .unwrap();
        t.data[0] = v;
        name.clone()
    }
    let damages: [Damage; 4] = [
        |ck| set_first(ck, "model.", f32::NAN),
        // the carried state (SGD keeps no optimiser tensors)
        |ck| set_first(ck, "state.", f32::INFINITY),
        |ck| {
            ck.metadata.insert("loss_count".into(), "0".into());
            ck.metadata.insert("loss_sum_host".into(), "1379".into());
            "loss_count or loss_sum".into()
        },
        |ck| {
            ck.metadata
                .insert("optim.updates".into(), "99999999999".into());
            "optim.updates".into()
        },
    ];
    for damage in damages {
        let (_, lm_run, _) = runs();
        let dir = copy(lm_run);
        let path = dir.path().join("checkpoint.safetensors");
        let mut ck = trainer::safetensors::SafeTensors::read(&path).unwrap();
        let named = damage(&mut ck);
        ck.write(&path).unwrap();
        let err = resume_error(dir.path());
        assert!(
            err.contains("checkpoint.safetensors") && err.contains(&named),
            "{named}: {err}"
        );
        // refused before training: the checkpoint is the damaged one still
        let after = trainer::safetensors::SafeTensors::read(&path).unwrap();
        assert_eq!(
            after.metadata.get("step"),
            ck.metadata.get("step"),
            "{named}"
        );
    }
}

/// Every file a run writes whole is checked when the run is locked: a folder
/// or a link where one goes is refused before the first step, not at the
/// first save, and what the link points to is left as it was.
#[test]
fn a_folder_or_link_where_a_run_writes_is_refused_before_training() {
    let (_, lm_run, mirror_run) = runs();
    for run in [lm_run, mirror_run] {
        for e in std::fs::read_dir(run).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                trainer::run::REPLACED_FILES.contains(&name.as_str())
                    || ["train.log", "samples.txt", ".lock"].contains(&name.as_str()),
                "{name}: a file of the run that the lock does not check"
            );
        }
    }
    for (name, link) in [("model.safetensors", false), ("metrics.csv", true)] {
        if link && !cfg!(unix) {
            continue;
        }
        let dir = copy(lm_run);
        let file = dir.path().join(name);
        std::fs::remove_file(&file).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep").unwrap();
        if link {
            #[cfg(unix)]
            std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        } else {
            std::fs::create_dir(&file).unwrap();
        }
        let before = std::fs::read(dir.path().join("checkpoint.safetensors")).unwrap();
        let err = resume_error(dir.path());
        assert!(
            err.contains(&format!("{name}: not a regular file")),
            "{err}"
        );
        let after = std::fs::read(dir.path().join("checkpoint.safetensors")).unwrap();
        assert!(
            before == after,
            "the checkpoint changed: a step was trained"
        );
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "keep");
    }
}

/// A run without its model says how to write it again, with the command
/// of its task: by training further where a checkpoint is left (the model
/// was removed), by resuming where none is (stopped before the first).
#[test]
fn a_missing_model_says_which_command_writes_it() {
    let (_, lm_run, mirror_run) = runs();
    let device = Device::flex();
    for (run, train) in [
        (lm_run, "charlstm train"),
        (mirror_run, "charlstm mirror train"),
    ] {
        let dir = copy(run);
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        let load = || {
            if run == lm_run {
                trainer::lm::load_lm(dir.path(), &device).map(|_| ())
            } else {
                trainer::mirror::load_mirror(dir.path(), &device).map(|_| ())
            }
        };
        let err = load().unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "it was removed; training further writes it again: {train} --resume"
            )),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("checkpoint.safetensors")).unwrap();
        let err = load().unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "before its first checkpoint; continue it with {train} --resume"
            )),
            "{err}"
        );
    }
}

/// A stop asked for after the last step (a Ctrl-C during a mirror run's
/// test) ends the run before its test, as stopped; resuming takes the test.
#[test]
fn a_stop_during_the_test_leaves_it_to_the_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("mirror");
    let target = RunTarget::New {
        path: Some(run.clone()),
        runs_root: dir.path().into(),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stopping = TrainOptions {
        stop: Some(&stop),
        ..options()
    };
    let report = trainer::train(&tiny_mirror(), &corpus(), &target, stopping, &mut |e| {
        if let trainer::Event::Step {
            step, total_steps, ..
        } = e
            && step + 1 == *total_steps
        {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .unwrap();
    let trainer::TrainReport::Mirror(report) = report else {
        panic!("a mirror run reports as one")
    };
    assert!(report.run.interrupted && report.run.finish_left);
    assert!(!run.join("test.json").exists());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(
        log.ends_with("stopped at step 2: every step trained, finishing left to the resume\n"),
        "{log}"
    );

    let resume = RunTarget::Resume(run.clone());
    let report = trainer::train(&tiny_mirror(), &corpus(), &resume, options(), &mut |_| {});
    assert!(!report.unwrap().interrupted());
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).unwrap()).unwrap();
    assert_eq!(test["steps"], 2);
}
