//! Memory a command will need, estimated before anything is allocated, so
//! that a size typed by mistake (`--set model.d_hidden=100000`, a sampling
//! count of a billion) is refused with the figure and the setting to change,
//! instead of aborting on a failed allocation.

use model::CharLmConfig;
use model::mirror::MirrorConfig;

use crate::error::{Result, TrainError};
use crate::recipe::{InputSpec, LmRecipe, MirrorRecipe};

/// The machine's memory (`MemTotal` of `/proc/meminfo`), where the system says.
pub fn machine_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Without a figure from the system: refuse above 64 GiB.
const FALLBACK_BYTES: u64 = 64 << 30;

fn gb(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

/// Refuses `bytes` (what `what` needs) above the machine's memory, naming
/// the figure and `advice` (the settings to lower).
pub fn check_fits(what: &str, bytes: f64, advice: &str) -> Result<()> {
    let have = machine_bytes().unwrap_or(FALLBACK_BYTES);
    if bytes.is_finite() && bytes <= have as f64 {
        return Ok(());
    }
    Err(TrainError::Recipe(format!(
        "{what} needs about {}, more than this machine's {}; {advice}",
        gb(bytes),
        gb(have as f64)
    )))
}

/// Parameters of one LSTM layer of `input` inputs and `hidden` units.
fn lstm_params(input: f64, hidden: f64) -> f64 {
    4.0 * hidden * (input + hidden + 1.0)
}

/// Parameters of a character LM (within a few percent: a bound, not a count).
pub fn lm_params(c: &CharLmConfig) -> f64 {
    let (v, h) = (c.vocab_size as f64, c.d_hidden as f64);
    let (table, first_in) = match c.input {
        model::InputKind::OneHot => (0.0, v),
        model::InputKind::Embedding => (v * c.d_embedding as f64, c.d_embedding as f64),
    };
    let layers = lstm_params(first_in, h) + (c.n_layers as f64 - 1.0).max(0.0) * lstm_params(h, h);
    table + layers + (h + 1.0) * c.output_size as f64
}

/// Parameters of a mirror model (a bound, as [`lm_params`]).
pub fn mirror_params(c: &MirrorConfig) -> f64 {
    let (v, e, h, n) = (
        c.vocab_size as f64,
        c.d_embedding as f64,
        c.d_hidden as f64,
        c.n_layers as f64,
    );
    let directions = if c.bidirectional { 2.0 } else { 1.0 };
    let encoder = directions * (lstm_params(e, h) + (n - 1.0).max(0.0) * lstm_params(h, h));
    let context = if c.attention { directions * h } else { 0.0 };
    let decoder = lstm_params(e + context, h) + (n - 1.0).max(0.0) * lstm_params(h, h);
    2.0 * v * e + encoder + decoder + (h + context + 1.0) * (h + v)
}

/// Bytes per parameter while training: the weights, their gradients, Adam's
/// two moments, packed and host copies.
const TRAINING_BYTES_PER_PARAM: f64 = 4.0 * 7.0;
/// Bytes per parameter that `train.average` adds: the running average, and
/// at summaries the host copies of the trained and the averaged weights.
const AVERAGE_BYTES_PER_PARAM: f64 = 4.0 * 3.0;
/// Bytes per activation value kept for the backward pass, with its gradient
/// and the step's temporaries.
const BYTES_PER_ACTIVATION: f64 = 4.0 * 4.0;

/// Refuses a language-model recipe whose training would not fit in memory.
pub fn check_lm(r: &LmRecipe, cfg: &CharLmConfig) -> Result<()> {
    let rows = r.data.batch_size as f64 * r.data.num_unrollings as f64;
    let h = r.model.d_hidden as f64;
    let activations = rows * r.model.n_layers as f64 * 7.0 * h + rows * cfg.output_size as f64;
    let embedded = match r.model.input {
        InputSpec::Embedding => rows * r.model.d_embedding as f64,
        InputSpec::OneHot => 0.0,
    };
    let per_param = TRAINING_BYTES_PER_PARAM
        + if r.train.average > 0.0 {
            AVERAGE_BYTES_PER_PARAM
        } else {
            0.0
        };
    let bytes = lm_params(cfg) * per_param + (activations + embedded) * BYTES_PER_ACTIVATION;
    check_fits(
        "training this model",
        bytes,
        "lower model.d_hidden, model.n_layers, model.d_embedding, data.batch_size or data.num_unrollings",
    )
}

/// Refuses a mirror recipe whose training would not fit in memory.
pub fn check_mirror(r: &MirrorRecipe, cfg: &MirrorConfig) -> Result<()> {
    let (b, t, h) = (
        r.data.batch_size as f64,
        r.data.max_chars as f64 + 2.0,
        r.model.d_hidden as f64,
    );
    // attention: scores, weights, mask and relative bias per source position
    let per_step = r.model.n_layers as f64 * 7.0 * h * 3.0 + cfg.vocab_size as f64 + 4.0 * t;
    // the fixed validation and test windows, source and target, as ids and pairs
    let windows = (r.data.valid_windows as f64 + r.data.test_windows as f64) * (2.0 * t + 64.0);
    let bytes = mirror_params(cfg) * TRAINING_BYTES_PER_PARAM
        + b * t * per_step * BYTES_PER_ACTIVATION
        + windows;
    check_fits(
        "training this model",
        bytes,
        "lower model.d_hidden, model.n_layers, data.batch_size, data.max_chars, \
         data.valid_windows or data.test_windows",
    )?;
    // the test at the end decodes windows of up to data.max_chars with
    // train.beam: refused now, not after the training
    check_fits(
        &format!("train.beam {}: decoding the test windows", r.train.beam),
        decode_bytes(r.data.max_chars, r.train.beam, r.model.d_hidden),
        "lower train.beam",
    )
}

/// What beam search holds at once for sentences of `chars` characters with
/// `beam` hypotheses of a `d_hidden`-unit mirror: per position and
/// hypothesis the encoder outputs (2 h floats), keys (h) and the decoder
/// state (2 h), three copies of them at a time.
pub fn decode_bytes(chars: usize, beam: usize, d_hidden: usize) -> f64 {
    (chars as f64 + 2.0) * beam as f64 * 5.0 * d_hidden as f64 * 4.0 * 3.0
}

/// Refuses a model config of a run directory that describes a model far
/// larger than its weights file: the config was edited or belongs to
/// another run, and building it first would allocate for nothing.
pub fn check_config_fits_weights(described: f64, file_scalars: usize, config: &str) -> Result<()> {
    if described <= 2.0 * file_scalars as f64 + 4096.0 {
        return Ok(());
    }
    Err(TrainError::Run(format!(
        "{config} describes a model of about {described:.0} parameters, but its weights hold \
         {file_scalars}: the config does not belong to these weights"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_estimates_bound_the_real_counts() {
        let device = burn::tensor::Device::flex();
        for cfg in [
            CharLmConfig::new(27, 27).with_d_hidden(64),
            CharLmConfig::new(729, 27)
                .with_input(model::InputKind::Embedding)
                .with_d_hidden(32)
                .with_n_layers(2),
        ] {
            let real = model::params::num_scalars(&cfg.init(0, &device)) as f64;
            let est = lm_params(&cfg);
            assert!((est - real).abs() <= 0.1 * real, "{est} vs {real}");
        }
        let m = MirrorConfig::new(30, 28, 29)
            .with_d_embedding(8)
            .with_d_hidden(16);
        let real = model::params::num_scalars(&m.init(0, &device)) as f64;
        let est = mirror_params(&m);
        assert!(est >= 0.5 * real && est <= 2.0 * real, "{est} vs {real}");
    }

    #[test]
    fn a_huge_model_is_refused_with_the_figure() {
        let loaded =
            crate::load_recipe("notebook-char", &["model.d_hidden=100000".into()]).unwrap();
        let crate::Recipe::Lm(r) = &loaded.recipe else {
            panic!()
        };
        let cfg = crate::lm::model_config(r);
        let e = check_lm(r, &cfg).unwrap_err().to_string();
        assert!(
            e.contains("GB, more than this machine's") && e.contains("model.d_hidden"),
            "{e}"
        );
        let small = crate::load_recipe("notebook-char", &[]).unwrap();
        let crate::Recipe::Lm(r) = &small.recipe else {
            panic!()
        };
        check_lm(r, &crate::lm::model_config(r)).unwrap();
    }
}
