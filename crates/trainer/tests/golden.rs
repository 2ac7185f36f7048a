//! Golden test: from the reference implementation's initial weights, 300
//! training steps on the shared corpus must reproduce its losses.
//!
//! `../shared/reference/golden/{char,embed,bigram}.json` hold the initial
//! parameters of the notebook's model and the loss of each of the first 300
//! steps, computed by PyTorch and TensorFlow (which agree within 2.3e-5):
//! `seed_torch.py --variant V --steps 300 --save-init ... --loss-trace ...`
//! on `../shared/datasets/wikitext2-valid/text8.zip` (see the README there).
//! Matching them within 1e-4 checks the data order, the cell, the loss, the
//! global-norm clipping and the SGD update together.

#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use burn::tensor::Device;
use serde_json::Value;
use trainer::safetensors::{HostTensor, SafeTensors};
use trainer::{Event, RunTarget, TrainOptions, train_lm};

fn shared() -> PathBuf {
    std::env::var_os("CHARLSTM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn golden(variant: &str) -> Value {
    let p = shared().join(format!("reference/golden/{variant}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set CHARLSTM_SHARED to the shared folder)",
            p.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn tensor(v: &Value) -> HostTensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    HostTensor::new(shape, data)
}

/// Concatenates matrices `[r, c_k]` along columns.
fn cat_cols(parts: &[HostTensor]) -> HostTensor {
    let rows = parts[0].shape[0];
    let cols: usize = parts.iter().map(|p| p.shape[1]).sum();
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for p in parts {
            let c = p.shape[1];
            data.extend_from_slice(&p.data[r * c..(r + 1) * c]);
        }
    }
    HostTensor::new(vec![rows, cols], data)
}

/// The golden parameters under this project's names.
fn init_weights(g: &Value, fused: bool) -> SafeTensors {
    let p = &g["params"];
    let mut st = SafeTensors::default();
    let gates = ["i", "f", "c", "o"];
    if fused {
        let part = |suffix: &str| cat_cols(&gates.map(|k| tensor(&p[format!("{k}{suffix}")])));
        st.push("layers.0.blocks.0.wx", part("x"));
        st.push("layers.0.blocks.0.wh", part("m"));
        st.push("layers.0.blocks.0.b", part("b"));
    } else {
        for (k, gate) in gates.iter().enumerate() {
            st.push(
                format!("layers.0.blocks.{k}.wx"),
                tensor(&p[format!("{gate}x")]),
            );
            st.push(
                format!("layers.0.blocks.{k}.wh"),
                tensor(&p[format!("{gate}m")]),
            );
            st.push(
                format!("layers.0.blocks.{k}.b"),
                tensor(&p[format!("{gate}b")]),
            );
        }
    }
    st.push("w", tensor(&p["w"]));
    let b = tensor(&p["b"]);
    st.push("b", HostTensor::new(vec![1, b.data.len()], b.data));
    if !p["emb"].is_null() {
        st.push("embedding", tensor(&p["emb"]));
    }
    st
}

fn run_golden(variant: &str, recipe: &str) {
    let g = golden(variant);
    let expected: Vec<f64> = g["loss_pytorch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let tf: Vec<f64> = g["loss_tensorflow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(expected.len(), 300);
    let loaded = trainer::load_recipe(
        recipe,
        &["train.steps=300".into(), "train.summary=1000".into()],
    )
    .unwrap();
    let corpus = text8::read_corpus(&shared().join("datasets/wikitext2-valid/text8.zip")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fused = !recipe.ends_with("char");
    let mut losses = vec![];
    let report = train_lm(
        &loaded,
        &corpus,
        &RunTarget::New {
            path: Some(dir.path().join("run")),
            runs_root: dir.path().into(),
        },
        TrainOptions {
            init: Some(init_weights(&g, fused)),
            loss_trace: true,
            ..TrainOptions::new(Device::flex(), "flex")
        },
        &mut |e| {
            if let Event::Step { loss: Some(l), .. } = e {
                losses.push(*l);
            }
        },
    )
    .unwrap();
    assert_eq!(report.steps, 300);
    assert_eq!(losses.len(), 300);
    let mut worst = (0usize, 0.0f64);
    for (k, (ours, theirs)) in losses.iter().zip(&expected).enumerate() {
        let d = (ours - theirs).abs();
        if d > worst.1 {
            worst = (k, d);
        }
    }
    let tf_gap = expected
        .iter()
        .zip(&tf)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "{recipe}: largest difference {:.2e} at step {} (PyTorch vs TensorFlow: {tf_gap:.2e})",
        worst.1, worst.0
    );
    assert!(
        worst.1 <= 1e-4,
        "{recipe}: step {} loss {} differs from the reference {} by {:.3e}",
        worst.0,
        losses[worst.0],
        expected[worst.0],
        worst.1
    );
}

#[test]
fn golden_char_gates() {
    run_golden("char", "notebook-char");
}

#[test]
fn golden_char_fused() {
    run_golden("char", "notebook-fused");
}

#[test]
fn golden_embed() {
    run_golden("embed", "notebook-embed");
}

#[test]
fn golden_bigram() {
    run_golden("bigram", "notebook-bigram");
}
