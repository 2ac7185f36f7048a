//! Dynamic evaluation (Krause et al., arXiv 1709.07432): the model keeps
//! learning from the text it has already been scored on.
//!
//! The text is read in order, one stream, state carried. Each segment of
//! [`Dynamic::segment`] characters is first scored with the current weights,
//! then the weights take one SGD step on that segment's mean cross-entropy
//! (gradient clipped to a global norm), and are pulled back towards the
//! trained weights: `w <- w - lr * grad + decay * (w0 - w)`. Every character
//! is scored before the model has learned from it, so the figure measures a
//! model that adapts to the text, not one that has seen it.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use model::params::{for_each_param, map_params};
use model::{CharLm, LstmState, cross_entropy};

use crate::error::{Result, TrainError};
use crate::eval::{EvalReport, logprob_sum, text_inputs};
use crate::optim::Optimizer;
use crate::recipe::{OptimizerKind, TokenizerKind};
use crate::sample::ids_tensor;

/// Settings of a dynamic evaluation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Dynamic {
    /// Characters scored between two updates.
    pub segment: usize,
    /// SGD learning rate of the updates (0: the static evaluation, one stream).
    pub learning_rate: f64,
    /// Pull towards the trained weights per update, in `[0, 1]`.
    pub decay: f64,
    /// Global gradient-norm clip of each update (0: none).
    pub clip_norm: f64,
}

impl Default for Dynamic {
    /// The settings measured best for a 2 x 512 model on the shared corpus's
    /// validation part (docs/RESULTS.md); a recipe may say its own.
    fn default() -> Self {
        Dynamic {
            segment: 50,
            learning_rate: 0.2,
            decay: 0.001,
            clip_norm: 1.0,
        }
    }
}

impl Dynamic {
    /// The settings of a run's recipe (its `[dynamic]` section, the TOML
    /// tree as JSON in `config.json`), else the defaults.
    pub fn of_recipe(recipe: &serde_json::Value) -> crate::error::Result<Self> {
        let Some(section) = recipe.get("dynamic") else {
            return Ok(Dynamic::default());
        };
        let spec: crate::recipe::DynamicSpec = serde_json::from_value(section.clone())
            .map_err(|e| TrainError::Run(format!("the run's recipe: [dynamic]: {e}")))?;
        Ok(Dynamic {
            segment: spec.segment,
            learning_rate: spec.learning_rate,
            decay: spec.decay,
            ..Dynamic::default()
        })
    }
}

/// Cross-entropy of `model` on `ids` under dynamic evaluation. `model` must
/// live on an autodiff `device`; it is consumed (it has learned from the text).
pub fn evaluate_dynamic(
    model: CharLm,
    kind: TokenizerKind,
    ids: &[u8],
    cfg: Dynamic,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    if cfg.segment == 0 || !(cfg.learning_rate >= 0.0 && cfg.learning_rate.is_finite()) {
        return Err(TrainError::Input(format!(
            "dynamic evaluation: segment must be at least 1 and the learning rate a number >= 0, \
             got {} and {}",
            cfg.segment, cfg.learning_rate
        )));
    }
    if !(0.0..=1.0).contains(&cfg.decay) {
        return Err(TrainError::Input(format!(
            "dynamic evaluation: decay must be in [0, 1], got {}",
            cfg.decay
        )));
    }
    let (inputs, labels) = text_inputs(kind, ids)?;
    let mut trained: BTreeMap<String, Tensor<2>> = BTreeMap::new();
    if cfg.decay > 0.0 {
        for_each_param(&model, |name, v| {
            trained.insert(name.to_string(), v.detach());
        });
    }
    let mut optim = Optimizer::new(OptimizerKind::Sgd, cfg.clip_norm, device);
    let mut model = model;
    let mut state: Vec<LstmState> = model.zero_state(1, device);
    let (mut sum, mut done) = (0.0f64, 0usize);
    for (inp, lab) in inputs.chunks(cfg.segment).zip(labels.chunks(cfg.segment)) {
        let (logits, st) = model.forward(ids_tensor(inp.to_vec(), device), 1, state, false);
        state = st.into_iter().map(LstmState::detach).collect();
        // scored first, learned from after
        sum += logprob_sum(logits.clone(), lab);
        done += inp.len();
        progress(done, inputs.len());
        if cfg.learning_rate > 0.0 {
            let targets = ids_tensor(lab.iter().map(|&c| c as i64).collect(), device);
            let grads = cross_entropy(logits, targets).backward();
            let (updated, _) = optim.step(model, &grads, cfg.learning_rate);
            model = if cfg.decay > 0.0 {
                map_params(updated, |name, w| match trained.get(name) {
                    Some(w0) => w.clone() + (w0.clone() - w).mul_scalar(cfg.decay),
                    None => w,
                })
            } else {
                updated
            };
        }
    }
    Ok(EvalReport::from_sum(sum, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Streams, evaluate_text};
    use burn::module::Module;
    use model::CharLmConfig;

    fn text(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = tokenizer::rng::Rng::new(seed);
        (0..n).map(|_| rng.below(27) as u8).collect()
    }

    #[test]
    fn without_updates_it_is_the_static_evaluation() {
        let device = Device::flex().autodiff();
        let model = CharLmConfig::new(27, 27).with_d_hidden(16).init(3, &device);
        let ids = text(300, 1);
        let one_stream = Streams {
            streams: 1,
            burn_in: 0,
        };
        let plain = evaluate_text(
            &model.valid(),
            TokenizerKind::Char,
            &ids,
            one_stream,
            &Device::flex(),
            &mut |_, _| {},
        )
        .unwrap();
        let cfg = Dynamic {
            learning_rate: 0.0,
            ..Dynamic::default()
        };
        let dynamic = evaluate_dynamic(
            model,
            TokenizerKind::Char,
            &ids,
            cfg,
            &device,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(dynamic.predicted, plain.predicted);
        assert!(
            (dynamic.cross_entropy - plain.cross_entropy).abs() < 1e-5,
            "{dynamic:?} {plain:?}"
        );
    }

    #[test]
    fn a_recipe_says_its_settings() {
        let best = crate::load_recipe("best", &[]).unwrap();
        let tree = serde_json::to_value(&best.tree).unwrap();
        let d = Dynamic::of_recipe(&tree).unwrap();
        assert_eq!((d.segment, d.learning_rate, d.decay), (50, 0.2, 0.001));
        assert_eq!(
            Dynamic::of_recipe(&serde_json::json!({})).unwrap(),
            Dynamic::default()
        );
        let bad = serde_json::json!({"dynamic": {"segment": 5, "rate": 1}});
        assert!(Dynamic::of_recipe(&bad).is_err());
        let e = crate::load_recipe("best", &["dynamic.decay=2".into()]).unwrap_err();
        assert!(e.to_string().contains("dynamic.decay"), "{e}");
    }

    #[test]
    fn it_learns_what_the_text_repeats() {
        // a random string said 100 times: an adapting model predicts the repeats
        let device = Device::flex().autodiff();
        let ids = text(12, 2).repeat(100);
        let model = || CharLmConfig::new(27, 27).with_d_hidden(32).init(4, &device);
        let score = |lr: f64, decay: f64| {
            let cfg = Dynamic {
                segment: 12,
                learning_rate: lr,
                decay,
                clip_norm: 5.0,
            };
            evaluate_dynamic(
                model(),
                TokenizerKind::Char,
                &ids,
                cfg,
                &device,
                &mut |_, _| {},
            )
            .unwrap()
            .bits_per_char
        };
        let (still, adapting) = (score(0.0, 0.0), score(1.0, 0.0));
        assert!(adapting < still - 0.5, "{adapting} vs {still}");
        // full decay every update: back to the trained weights each time, no memory
        assert!(score(1.0, 1.0) > adapting, "decay 1 forgets");
        let bad = Dynamic {
            decay: 2.0,
            ..Dynamic::default()
        };
        assert!(
            evaluate_dynamic(
                model(),
                TokenizerKind::Char,
                &ids,
                bad,
                &device,
                &mut |_, _| {}
            )
            .is_err()
        );
    }
}
