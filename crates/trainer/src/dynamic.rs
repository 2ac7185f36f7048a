//! Dynamic evaluation (Krause et al., arXiv 1709.07432): the model keeps
//! learning from the text it has already been scored on.
//!
//! The text is read in order, one stream, state carried. Each segment of
//! [`Dynamic::segment`] characters is first scored with the current weights,
//! then the weights take one step on that segment's mean cross-entropy
//! (gradient clipped to a global norm) and are pulled back towards the
//! trained weights `w0`:
//!
//! - SGD: `w' = w - lr * g`, then `w' + decay * (w0 - w')`;
//! - RMS (the paper's best): `w' = w - lr * g / (rms + eps)`, then
//!   `w' + pull * (w0 - w')`,
//!   where `rms` is the root mean square of each weight's gradient over
//!   segments of training text (taken once, with the trained weights, before
//!   the evaluated text is read), `eps` a hundredth of its mean, and
//!   `pull = min(decay * rms / mean(rms), 1)`.
//!
//! Every character is scored before the model has learned from it, so the
//! figure measures a model that adapts to the text, not one that has seen it.

use std::collections::BTreeMap;

use burn::tensor::Gradients;
use burn::tensor::{Device, Tensor};
use model::params::{for_each_param, map_params, named_grads};
use model::{CharLm, LstmState, cross_entropy};

use crate::error::{Result, TrainError};
use crate::eval::{EvalReport, logprob_sum, text_inputs};
use crate::optim::clip_factor;
use crate::recipe::{DynamicRule, TokenizerKind, default_dynamic_stats};
use crate::sample::ids_tensor;

/// Settings of a dynamic evaluation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Dynamic {
    /// Characters scored between two updates.
    pub segment: usize,
    /// How an update scales the gradient.
    pub rule: DynamicRule,
    /// Learning rate of the updates (0: the static evaluation, one stream).
    pub learning_rate: f64,
    /// Pull towards the trained weights per update, in `[0, 1]`.
    pub decay: f64,
    /// Global gradient-norm clip of each update (0: none).
    pub clip_norm: f64,
    /// Training characters the RMS rule's statistics are taken from (the
    /// sgd rule reads none).
    pub stats: usize,
}

impl Default for Dynamic {
    /// [`Dynamic::for_rule`] of the SGD rule; a recipe may say its own.
    fn default() -> Self {
        Dynamic::for_rule(DynamicRule::Sgd)
    }
}

impl Dynamic {
    /// The settings measured best for a 2 x 512 model on the shared corpus's
    /// validation part with `rule` (docs/RESULTS.md, "Dynamic evaluation"
    /// and "The RMS rule"): its learning rate and pull are the rule's own
    /// (the RMS rule scales each step by the gradient's spread, so its
    /// rate is hundreds of times smaller than SGD's).
    pub fn for_rule(rule: DynamicRule) -> Self {
        let (learning_rate, decay) = match rule {
            DynamicRule::Sgd => (0.2, 0.001),
            DynamicRule::Rms => (5e-4, 0.002),
        };
        Dynamic {
            segment: 50,
            rule,
            learning_rate,
            decay,
            clip_norm: 1.0,
            stats: default_dynamic_stats(),
        }
    }

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
            rule: spec.rule,
            learning_rate: spec.learning_rate,
            decay: spec.decay,
            stats: spec.stats,
            ..Dynamic::default()
        })
    }

    fn check(&self) -> Result<()> {
        if self.segment == 0 || !(self.learning_rate >= 0.0 && self.learning_rate.is_finite()) {
            return Err(TrainError::Input(format!(
                "dynamic evaluation: segment must be at least 1 and the learning rate a number \
                 >= 0, got {} and {}",
                self.segment, self.learning_rate
            )));
        }
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(TrainError::Input(format!(
                "dynamic evaluation: decay must be in [0, 1], got {}",
                self.decay
            )));
        }
        Ok(())
    }
}

/// How one weight matrix follows the text.
struct Follow {
    /// Its trained value, pulled back towards.
    trained: Tensor<2>,
    /// The RMS rule's per-element `1 / (rms + eps)` and pull; `None` under SGD.
    rms: Option<(Tensor<2>, Tensor<2>)>,
}

/// Cross-entropy of `model` on `ids` under dynamic evaluation. `model` must
/// live on an autodiff `device`; it is consumed (it has learned from the
/// text). `training` is text the model was trained on: the RMS rule takes
/// its statistics from the first [`Dynamic::stats`] characters of it (the
/// SGD rule does not read it). `progress(done, total)` counts those
/// characters, then the evaluated ones.
pub fn evaluate_dynamic(
    model: CharLm,
    kind: TokenizerKind,
    ids: &[u8],
    training: &[u8],
    cfg: Dynamic,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    cfg.check()?;
    let (inputs, labels) = text_inputs(kind, ids)?;
    let stats_text = match cfg.rule {
        DynamicRule::Sgd => &training[..0],
        DynamicRule::Rms => &training[..cfg.stats.min(training.len())],
    };
    let total = stats_text.len() + inputs.len();
    let rms = match cfg.rule {
        DynamicRule::Sgd => None,
        DynamicRule::Rms => Some(gradient_rms(
            &model,
            kind,
            stats_text,
            cfg.segment,
            device,
            &mut |done| progress(done, total),
        )?),
    };
    let follow = following(&model, cfg, rms);
    let mut model = model;
    let mut state: Vec<LstmState> = model.zero_state(1, device);
    let (mut sum, mut done) = (0.0f64, 0usize);
    for (inp, lab) in inputs.chunks(cfg.segment).zip(labels.chunks(cfg.segment)) {
        let learn = cfg.learning_rate > 0.0;
        let (logits, grads);
        (logits, state, grads) = read_segment(&model, inp, lab, state, learn, device);
        // scored first, learned from after
        sum += logprob_sum(logits, lab);
        done += inp.len();
        progress(stats_text.len() + done, total);
        if let Some(grads) = grads {
            let mut named = named_grads(&model, &grads);
            let lr = cfg.learning_rate * clip_scale(named.values(), cfg.clip_norm);
            model = map_params(model, |name, w| {
                let (Some(g), Some(f)) = (named.remove(name), follow.get(name)) else {
                    return w;
                };
                let stepped = match &f.rms {
                    None => w - g.mul_scalar(lr),
                    Some((inv, _)) => w - (g * inv.clone()).mul_scalar(lr),
                };
                let back = f.trained.clone() - stepped.clone();
                match &f.rms {
                    None => stepped + back.mul_scalar(cfg.decay),
                    Some((_, pull)) => stepped + back * pull.clone(),
                }
            });
        }
    }
    Ok(EvalReport::from_sum(sum, done))
}

/// Each weight's trained value and, under the RMS rule, its step scale and
/// pull from the gradient statistics `rms`.
fn following(
    model: &CharLm,
    cfg: Dynamic,
    rms: Option<BTreeMap<String, Tensor<2>>>,
) -> BTreeMap<String, Follow> {
    let mut trained = BTreeMap::new();
    for_each_param(model, |name, v| {
        trained.insert(name.to_string(), v.detach());
    });
    let Some(mut rms) = rms else {
        return trained
            .into_iter()
            .map(|(name, trained)| (name, Follow { trained, rms: None }))
            .collect();
    };
    // the mean over every weight, so that the pulls average `decay`
    let (mut sum, mut count) = (0.0f64, 0usize);
    for r in rms.values() {
        let [a, b] = r.dims();
        sum += scalar(r.clone().sum());
        count += a * b;
    }
    let mean = (sum / count.max(1) as f64).max(f64::MIN_POSITIVE);
    trained
        .into_iter()
        .map(|(name, trained)| {
            let r = rms.remove(&name).unwrap_or_else(|| trained.zeros_like());
            let inv = r.clone().add_scalar(0.01 * mean).recip();
            let pull = r.mul_scalar(cfg.decay / mean).clamp_max(1.0);
            let rms = Some((inv, pull));
            (name, Follow { trained, rms })
        })
        .collect()
}

/// Root mean square of every weight's gradient of the mean cross-entropy of
/// segments of `segment` characters of `text`, read as one stream with the
/// weights fixed. `progress(done)` counts characters.
fn gradient_rms(
    model: &CharLm,
    kind: TokenizerKind,
    text: &[u8],
    segment: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<BTreeMap<String, Tensor<2>>> {
    let (inputs, labels) = text_inputs(kind, text).map_err(|e| {
        TrainError::Input(format!(
            "the RMS rule's gradient statistics need training text: {e}"
        ))
    })?;
    let mut squares: BTreeMap<String, Tensor<2>> = BTreeMap::new();
    let mut state: Vec<LstmState> = model.zero_state(1, device);
    let (mut segments, mut done) = (0usize, 0usize);
    for (inp, lab) in inputs.chunks(segment).zip(labels.chunks(segment)) {
        let grads;
        (_, state, grads) = read_segment(model, inp, lab, state, true, device);
        for (name, g) in named_grads(model, &grads.expect("asked for")) {
            let g2 = g.square();
            let sum = match squares.remove(&name) {
                Some(s) => s + g2,
                None => g2,
            };
            squares.insert(name, sum);
        }
        segments += 1;
        done += inp.len();
        progress(done);
    }
    Ok(squares
        .into_iter()
        .map(|(name, s)| (name, s.div_scalar(segments as f64).sqrt()))
        .collect())
}

/// One segment read from `state`, one stream: its logits, the state after
/// it (detached: the next segment does not backpropagate into this one) and,
/// when `learn`, the gradients of its mean cross-entropy.
fn read_segment(
    model: &CharLm,
    inputs: &[i64],
    labels: &[u8],
    state: Vec<LstmState>,
    learn: bool,
    device: &Device,
) -> (Tensor<2>, Vec<LstmState>, Option<Gradients>) {
    let (logits, st) = model.forward(ids_tensor(inputs.to_vec(), device), 1, state, false);
    let state = st.into_iter().map(LstmState::detach).collect();
    let grads = learn.then(|| {
        let targets = ids_tensor(labels.iter().map(|&c| c as i64).collect(), device);
        cross_entropy(logits.clone(), targets).backward()
    });
    (logits, state, grads)
}

/// The factor that brings the global norm of `grads` down to `clip_norm`
/// (1 when it is below, or when `clip_norm` is 0).
fn clip_scale<'a>(grads: impl Iterator<Item = &'a Tensor<2>>, clip_norm: f64) -> f64 {
    if clip_norm <= 0.0 {
        return 1.0;
    }
    let norm = grads
        .map(|g| scalar(g.clone().square().sum()))
        .sum::<f64>()
        .sqrt();
    clip_factor(norm, clip_norm)
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_data().try_into_vec_as::<f64>().expect("f64")[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Streams, evaluate_text};
    use burn::module::Module;
    use model::CharLmConfig;
    use model::params::for_each_param_grad;

    fn text(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = tokenizer::rng::Rng::new(seed);
        (0..n).map(|_| rng.below(27) as u8).collect()
    }

    fn evaluate(model: CharLm, ids: &[u8], training: &[u8], cfg: Dynamic) -> Result<EvalReport> {
        let device = Device::flex().autodiff();
        evaluate_dynamic(
            model,
            TokenizerKind::Char,
            ids,
            training,
            cfg,
            &device,
            &mut |_, _| {},
        )
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
        for rule in [DynamicRule::Sgd, DynamicRule::Rms] {
            let cfg = Dynamic {
                learning_rate: 0.0,
                rule,
                ..Dynamic::default()
            };
            let dynamic = evaluate(model.clone(), &ids, &text(200, 5), cfg).unwrap();
            assert_eq!(dynamic.predicted, plain.predicted);
            assert!(
                (dynamic.cross_entropy - plain.cross_entropy).abs() < 1e-5,
                "{rule:?}: {dynamic:?} {plain:?}"
            );
        }
    }

    #[test]
    fn a_recipe_says_its_settings() {
        let best = crate::load_recipe("best", &[]).unwrap();
        let tree = serde_json::to_value(&best.tree).unwrap();
        let d = Dynamic::of_recipe(&tree).unwrap();
        assert_eq!(
            (d.segment, d.rule, d.learning_rate, d.decay, d.stats),
            (50, DynamicRule::Rms, 0.0005, 0.002, 20_000)
        );
        assert_eq!(
            Dynamic::of_recipe(&serde_json::json!({})).unwrap(),
            Dynamic::default()
        );
        // a run made before the rule could be chosen evaluates as it did
        let old = serde_json::json!({"dynamic": {"segment": 5, "learning_rate": 0.1}});
        let d = Dynamic::of_recipe(&old).unwrap();
        assert_eq!((d.rule, d.decay, d.stats), (DynamicRule::Sgd, 0.0, 20_000));
        let bad = serde_json::json!({"dynamic": {"segment": 5, "rate": 1}});
        assert!(Dynamic::of_recipe(&bad).is_err());
        let e = crate::load_recipe("best", &["dynamic.decay=2".into()]).unwrap_err();
        assert!(e.to_string().contains("dynamic.decay"), "{e}");
        let e = crate::load_recipe("best", &["dynamic.rule=\"adam\"".into()]).unwrap_err();
        assert!(e.to_string().contains("dynamic.rule"), "{e}");
        let e = crate::load_recipe(
            "best",
            &["dynamic.rule=\"rms\"".into(), "dynamic.stats=0".into()],
        )
        .unwrap_err();
        assert!(e.to_string().contains("dynamic.stats"), "{e}");
    }

    #[test]
    fn it_learns_what_the_text_repeats() {
        // a random string said 100 times: an adapting model predicts the repeats
        let device = Device::flex().autodiff();
        let ids = text(12, 2).repeat(100);
        let training = text(600, 3);
        let model = || CharLmConfig::new(27, 27).with_d_hidden(32).init(4, &device);
        for (rule, lr) in [(DynamicRule::Sgd, 1.0), (DynamicRule::Rms, 0.001)] {
            let score = |lr: f64, decay: f64| {
                let cfg = Dynamic {
                    segment: 12,
                    rule,
                    learning_rate: lr,
                    decay,
                    clip_norm: 5.0,
                    stats: 600,
                };
                evaluate(model(), &ids, &training, cfg)
                    .unwrap()
                    .bits_per_char
            };
            let (still, adapting) = (score(0.0, 0.0), score(lr, 0.0));
            assert!(adapting < still - 0.5, "{rule:?}: {adapting} vs {still}");
            // a strong pull back towards the trained weights keeps less of the text
            assert!(
                score(lr, 0.5) > adapting + 0.1,
                "{rule:?}: the pull forgets"
            );
        }
        let bad = Dynamic {
            decay: 2.0,
            ..Dynamic::default()
        };
        assert!(evaluate(model(), &ids, &training, bad).is_err());
    }

    #[test]
    fn the_rms_rule_needs_training_text() {
        let device = Device::flex().autodiff();
        let model = CharLmConfig::new(27, 27).with_d_hidden(16).init(3, &device);
        let cfg = Dynamic {
            rule: DynamicRule::Rms,
            ..Dynamic::default()
        };
        let e = evaluate(model, &text(100, 1), &[], cfg).unwrap_err();
        assert!(e.to_string().contains("training text"), "{e}");
    }

    #[test]
    fn one_segment_s_gradient_rms_is_its_absolute_gradient() {
        let device = Device::flex().autodiff();
        let model = CharLmConfig::new(27, 27).with_d_hidden(16).init(3, &device);
        let ids = text(21, 7);
        let rms =
            gradient_rms(&model, TokenizerKind::Char, &ids, 20, &device, &mut |_| {}).unwrap();
        let (inputs, labels) = text_inputs(TokenizerKind::Char, &ids).unwrap();
        let (logits, _) = model.forward(
            ids_tensor(inputs, &device),
            1,
            model.zero_state(1, &device),
            false,
        );
        let targets = ids_tensor(labels.iter().map(|&c| c as i64).collect(), &device);
        let grads = cross_entropy(logits, targets).backward();
        let mut checked = 0;
        for_each_param_grad(&model, &grads, |name, _, g| {
            let want = g
                .unwrap()
                .abs()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap();
            let got = rms[name]
                .clone()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap();
            for (w, g) in want.iter().zip(&got) {
                assert!(
                    (w - g).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{name}: {g} vs {w}"
                );
            }
            checked += 1;
        });
        assert_eq!(checked, rms.len());
        assert!(checked >= 4);
    }
}
