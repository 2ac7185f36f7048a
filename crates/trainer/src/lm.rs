//! Training a character language model: the notebook's loop, done properly.
//!
//! Each step takes the next batch of the notebook's generator, runs the
//! model over `num_unrollings` columns from the state the previous step left
//! (detached: truncated backpropagation), takes the mean softmax
//! cross-entropy, clips all gradients together to a global norm and updates.
//! At every summary ([`crate::session`] runs the lifecycle): the validation
//! perplexity (batch 1, character by character, state carried), and every
//! `samples_every` steps five samples.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use model::{CellLayout, CharLm, CharLmConfig, InitScheme, InputKind, LstmState};
use text8::{BatchGenerator, Corpus, SplitKind};
use tokenizer::rng::Rng;
use tokenizer::{Tokenizer, bigram_id};

use crate::checkpoint::load_weights;
use crate::error::{Result, TrainError};
use crate::eval;
use crate::metrics::Summary;
use crate::optim::{Optimizer, from_host, to_host};
use crate::recipe::{
    InitSpec, InputSpec, LayoutSpec, LmRecipe, LoadedRecipe, Recipe, SplitSpec, TokenizerKind,
};
use crate::safetensors::{HostTensor, SafeTensors};
use crate::sample::{self, SampleOptions, ids_tensor};
use crate::session::{
    self, Event, FinalReport, ModelSlot, RunTarget, StepOutput, SummaryInput, SummaryOutput, Task,
    TrainOptions,
};

/// The model configuration of a recipe.
pub fn model_config(r: &LmRecipe) -> CharLmConfig {
    let m = &r.model;
    let tok = tokenizer_of(m.tokenizer);
    CharLmConfig::new(tok.vocab_size(), tok.output_size())
        .with_input(match m.input {
            InputSpec::OneHot => InputKind::OneHot,
            InputSpec::Embedding => InputKind::Embedding,
        })
        .with_d_embedding(m.d_embedding)
        .with_d_hidden(m.d_hidden)
        .with_n_layers(m.n_layers)
        .with_layout(match m.layout {
            LayoutSpec::Gates => CellLayout::Gates,
            LayoutSpec::Fused => CellLayout::Fused,
        })
        .with_init(match m.init {
            InitSpec::Notebook => InitScheme::Notebook,
            InitSpec::Default => InitScheme::Default,
        })
        .with_keep_prob(m.keep_prob)
        .with_recurrent_keep_prob(m.recurrent_keep_prob)
}

/// A saved [`CharLmConfig`] as this version writes it: runs saved before
/// DropConnect existed name no recurrent keep probability, and had none
/// (Burn's configs take no serde defaults, so the field is filled here).
pub fn upgrade_model_config(saved: &mut serde_json::Value) {
    if let Some(fields) = saved.as_object_mut() {
        fields
            .entry("recurrent_keep_prob")
            .or_insert(serde_json::json!(1.0));
    }
}

/// The precision a language model's products run in while training: the
/// recipe's `train.precision` where the CPU kernels take it for a thread's
/// part of the batch ([`model::kernel::Half::applies`]), f32 elsewhere.
pub fn runs_in(r: &LmRecipe, device: &Device) -> model::Precision {
    match model::Precision::from(r.train.precision).half() {
        Some(half)
            if model::device::is_flex(device) && half.applies(part_rows(r), r.model.d_hidden) =>
        {
            half.precision()
        }
        _ => model::Precision::F32,
    }
}

/// The smallest part of the batch the kernels give a thread
/// ([`model::kernel::batch_parts`]).
fn part_rows(r: &LmRecipe) -> usize {
    let parts = model::kernel::batch_parts(r.data.batch_size);
    parts.iter().map(|p| p.1).min().unwrap_or(0)
}

/// What someone who asked for 16-bit products in recipe `name` should know
/// before the run: why they run in f32 here; for bf16 without AMX tiles,
/// that the bf16 instruction may run slower than f32 (on the Intel Xeons
/// without AMX in docs/PERFORMANCE.md at half its rate, where f16 is the
/// faster choice); for f16 where the CPU has AMX tiles, that bf16 runs
/// faster there. None for f32, bf16 on AMX tiles, and f16 on a CPU with
/// AVX512-FP16 and no tiles.
pub fn precision_note(name: &str, r: &LmRecipe, device: &Device) -> Option<String> {
    use model::kernel::half::{Half, Refusal};
    use model::kernel::isa;
    let precision = model::Precision::from(r.train.precision);
    let half = precision.half()?;
    let asked = precision.name();
    let (rows, hidden) = (part_rows(r), r.model.d_hidden);
    let f32_because = if !model::device::is_flex(device) {
        format!("the {asked} products are CPU kernels and this device is not the CPU")
    } else {
        match half.refusal(rows, hidden) {
            Some(Refusal::Cpu) => match model::kernel::cpu::asked_isa() {
                Ok(Some(kernels)) if !isa().avx512() => {
                    format!(
                        "CHARLSTM_KERNELS={} caps the kernels below AVX-512",
                        kernels.name()
                    )
                }
                _ => format!("this CPU has no {}", half.instructions()),
            },
            Some(Refusal::Rows) if rows == r.data.batch_size => {
                format!("data.batch_size {rows} is under the 4 rows {asked} needs")
            }
            Some(Refusal::Rows) => format!(
                "a thread's part of the batch is {rows} rows (data.batch_size {} over {} \
                 threads), under the 4 {asked} needs: raise data.batch_size or lower --threads",
                r.data.batch_size,
                model::kernel::pool::threads()
            ),
            Some(Refusal::Units) => format!("model.d_hidden {hidden} is not a multiple of 16"),
            None if half == Half::Bf16 && !half.on_tiles() => {
                let f16 = if Half::F16.available() {
                    " (this one has AVX512-FP16: `train.precision = f16` runs here)"
                } else {
                    ""
                };
                return Some(format!(
                    "train.precision = bf16 without AMX tiles runs on the AVX512-BF16 dot \
                     product, slower than f32 on some CPUs{f16}: compare `charlstm bench --recipe \
                     {name}` with and without `--set train.precision=bf16` (docs/PERFORMANCE.md)"
                ));
            }
            None if half == Half::F16 && Half::Bf16.on_tiles() => {
                return Some(format!(
                    "train.precision = f16 runs on AVX512-FP16's multiply-adds; this CPU has \
                     AMX tiles, on which `train.precision = bf16` runs faster (`large` in \
                     docs/PERFORMANCE.md): compare `charlstm bench --recipe {name}` with `--set \
                     train.precision=f16` and with `--set train.precision=bf16`"
                ));
            }
            None => return None,
        }
    };
    Some(format!(
        "train.precision = {asked} runs in f32 here: {f32_because}"
    ))
}

/// The tokenizer of a recipe's input kind.
pub fn tokenizer_of(kind: TokenizerKind) -> Tokenizer {
    match kind {
        TokenizerKind::Char => Tokenizer::Char,
        TokenizerKind::Bigram => Tokenizer::Bigram,
    }
}

/// The training part of the text a run was trained on (what the RMS rule of
/// dynamic evaluation takes its gradient statistics from): of `corpus` when
/// it is that text (same fingerprint), else of the corpus the run's
/// `config.json` names, read again. An error says which text is missing.
pub fn training_text(run_dir: &Path, corpus: &Corpus) -> Result<text8::SharedIds> {
    let (loaded, config) = session::run_recipe(run_dir, &[])?;
    let Recipe::Lm(recipe) = &loaded.recipe else {
        return Err(TrainError::Run(format!(
            "{} is not a language-model run",
            run_dir.display()
        )));
    };
    let needs = || {
        format!(
            "the RMS rule of dynamic evaluation takes its gradient statistics from the text the \
             run was trained on, {} ({} characters)",
            config.data_source, config.data_chars
        )
    };
    let reread;
    let trained_on = |c: &Corpus| config.trained_on(&c.fingerprint(), c.len());
    let corpus = if trained_on(corpus) {
        corpus
    } else {
        reread = text8::read_corpus(Path::new(&config.data_source))
            .map_err(|e| TrainError::Input(format!("{}: {e}", needs())))?;
        if !trained_on(&reread) {
            return Err(TrainError::Input(format!(
                "{}, and {} is now another text",
                needs(),
                config.data_source
            )));
        }
        &reread
    };
    Ok(LmData::new(corpus, recipe)?.train)
}

/// Training and validation ids of a corpus, split as the recipe says.
pub struct LmData {
    /// Training ids (shared with the corpus, not copied).
    pub train: text8::SharedIds,
    /// Validation ids evaluated at each summary.
    pub valid: Vec<u8>,
    /// Where the corpus came from.
    pub source: String,
    /// Characters in the corpus.
    pub chars: usize,
}

impl LmData {
    /// Splits a corpus for a recipe, checking it is long enough.
    pub fn new(corpus: &Corpus, r: &LmRecipe) -> Result<Self> {
        let kind = match r.data.split {
            SplitSpec::Notebook => SplitKind::Notebook {
                valid_size: r.data.valid_size,
            },
            SplitSpec::Standard => SplitKind::Standard,
        };
        let split = corpus.split(kind)?;
        let valid = split.valid[..split.valid.len().min(r.data.valid_size)].to_vec();
        let min_valid = if r.model.tokenizer == TokenizerKind::Bigram {
            3
        } else {
            2
        };
        if valid.len() < min_valid {
            return Err(TrainError::Data(corpus.named(
                text8::Text8Error::TooShort {
                    what: format!(
                        "validation part (at most data.valid_size = {})",
                        r.data.valid_size
                    ),
                    needed: min_valid,
                    found: valid.len(),
                    unit: "characters",
                },
            )));
        }
        Ok(LmData {
            train: text8::SharedIds::part_of(&corpus.ids, split.train),
            valid,
            source: corpus.source.display().to_string(),
            chars: corpus.len(),
        })
    }
}

/// Inputs (`[steps * batch]`), labels and the number of steps of one
/// generator batch (`[num_unrollings + 1, batch]` ids, time-major).
pub fn step_inputs(
    kind: TokenizerKind,
    batch: &[u8],
    batch_size: usize,
) -> (Vec<i64>, Vec<i64>, usize) {
    let cols = batch.len() / batch_size;
    let col = |t: usize| &batch[t * batch_size..(t + 1) * batch_size];
    match kind {
        TokenizerKind::Char => {
            let steps = cols - 1;
            let inputs = (0..steps)
                .flat_map(|t| col(t).iter().map(|&c| c as i64))
                .collect();
            let labels = (1..=steps)
                .flat_map(|t| col(t).iter().map(|&c| c as i64))
                .collect();
            (inputs, labels, steps)
        }
        TokenizerKind::Bigram => {
            // inputs are the first num_unrollings columns, as pairs: 9 bigrams of 10 columns
            let steps = cols - 2;
            let inputs = (0..steps)
                .flat_map(|t| {
                    col(t)
                        .iter()
                        .zip(col(t + 1))
                        .map(|(&a, &b)| bigram_id(a, b) as i64)
                })
                .collect();
            let labels = (2..cols)
                .flat_map(|t| col(t).iter().map(|&c| c as i64))
                .collect();
            (inputs, labels, steps)
        }
    }
}

/// Dropout seed of a step: the same for a step whatever session runs it.
fn step_seed(seed: u64, step: u64) -> u64 {
    Rng::derive(seed ^ 0x5EED_D809, step).next_u64()
}

/// The language model as a [`Task`] of the run lifecycle.
struct LmTask {
    recipe: LmRecipe,
    config: serde_json::Value,
    /// The training device (with autodiff) and the one validation runs on.
    device: Device,
    eval_device: Device,
    model: ModelSlot<CharLm>,
    generator: BatchGenerator,
    /// The LSTM state carried from step to step.
    state: Vec<LstmState>,
    valid: Vec<u8>,
    train_chars: usize,
    batch: Vec<u8>,
}

impl Task for LmTask {
    type Row = Summary;
    const FORMAT: &'static str = "charlstm-lm";
    const LOSS_EVERY_STEP: bool = false;

    fn tokenizer(&self) -> Tokenizer {
        tokenizer_of(self.recipe.model.tokenizer)
    }

    fn model_config(&self) -> serde_json::Value {
        self.config.clone()
    }

    fn upgrade_model_config(&self, saved: &mut serde_json::Value) {
        upgrade_model_config(saved);
    }

    fn params(&self) -> usize {
        model::params::num_scalars(self.model.get())
    }

    fn train_chars(&self) -> usize {
        self.train_chars
    }

    fn step(
        &mut self,
        step: u64,
        lr: f64,
        optim: &mut Optimizer,
        _rng: &mut Rng,
    ) -> Result<StepOutput> {
        let batch_size = self.recipe.data.batch_size;
        self.generator.next_into(&mut self.batch);
        let (inputs, labels, steps) =
            step_inputs(self.recipe.model.tokenizer, &self.batch, batch_size);
        if self.recipe.model.keep_prob < 1.0 || self.recipe.model.recurrent_keep_prob < 1.0 {
            self.device.seed(step_seed(self.recipe.train.seed, step));
        }
        let inputs = ids_tensor(inputs, &self.device);
        let labels = ids_tensor(labels, &self.device);
        let model = self.model.take();
        let state = std::mem::take(&mut self.state);
        let (hidden, state) = model.forward_hidden(inputs, batch_size, state, true);
        debug_assert_eq!(hidden.dims()[0], steps * batch_size);
        let loss = model.loss(hidden, labels, true);
        let grads = loss.backward();
        let (model, stats) = optim.step(model, &grads, lr);
        self.model.put(model);
        self.state = state.into_iter().map(LstmState::detach).collect();
        Ok(StepOutput {
            loss: loss.inner(),
            chars: steps * batch_size,
            grad_norm: stats.grad_norm,
        })
    }

    fn summary(&mut self, s: &SummaryInput, rng: &mut Rng) -> Result<SummaryOutput<Summary>> {
        let kind = self.recipe.model.tokenizer;
        // validated and sampled in f32, as `charlstm eval` and `sample` do:
        // the precision is a setting of the training steps
        let eval_model = self
            .model
            .get()
            .valid()
            .with_precision(model::Precision::F32);
        let mut samples = None;
        let mut sample_seconds = 0.0;
        if s.samples {
            let t = Instant::now();
            samples = Some(sample::generate(
                &eval_model,
                kind,
                &SampleOptions {
                    length: 80 - sample::context_chars(kind),
                    temperature: 1.0,
                    prime: None,
                    count: 5,
                    truncation: Default::default(),
                },
                rng,
                &self.eval_device,
            )?);
            sample_seconds = t.elapsed().as_secs_f64();
        }
        let (valid_ppl, valid_nb) = validate(
            &eval_model,
            kind,
            &self.valid,
            self.recipe.data.valid_streams,
            &self.eval_device,
        );
        Ok(SummaryOutput {
            row: Summary {
                step: s.step,
                loss: s.mean_loss,
                lr: s.lr,
                minibatch_ppl: s.last_loss.exp(),
                valid_ppl,
                valid_bpc: valid_ppl.log2(),
                valid_ppl_notebook: valid_nb,
                grad_norm: s.grad_norm,
                chars_per_sec: s.chars_per_sec,
                wall_seconds: s.wall_seconds,
            },
            samples,
            sample_seconds,
        })
    }

    fn save_model(&self, prefix: &str, out: &mut SafeTensors) {
        self.model.save(prefix, out);
    }

    fn load_model(&mut self, from: &SafeTensors, prefix: &str, path: &Path) -> Result<()> {
        self.model.load(from, prefix, path, &self.device)
    }

    fn save_state(&self, ck: &mut SafeTensors) {
        for (k, s) in self.state.iter().enumerate() {
            ck.push(format!("state.{k}.h"), to_host(&s.h));
            ck.push(format!("state.{k}.c"), to_host(&s.c));
        }
        ck.metadata
            .insert("generator_calls".into(), self.generator.calls().to_string());
    }

    fn load_state(&mut self, ck: &SafeTensors, step: u64, path: &Path) -> Result<()> {
        let batch_size = self.recipe.data.batch_size;
        let mut state = vec![];
        for (k, layer) in self.model.get().layers.iter().enumerate() {
            let get = |n: &str| -> Result<Tensor<2>> {
                let t: &HostTensor = ck.get(&format!("state.{k}.{n}")).ok_or_else(|| {
                    TrainError::checkpoint(path, format!("missing state.{k}.{n}"))
                })?;
                if t.shape != [batch_size, layer.d_hidden] {
                    return Err(TrainError::checkpoint(
                        path,
                        format!("state.{k}.{n} has shape {:?}", t.shape),
                    ));
                }
                Ok(from_host(t, &self.device))
            };
            state.push(LstmState {
                h: get("h")?,
                c: get("c")?,
            });
        }
        self.state = state;
        let calls = ck
            .metadata
            .get("generator_calls")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                TrainError::checkpoint(path, "missing or bad metadata generator_calls")
            })?;
        // one batch a step: anything else is a damaged or foreign checkpoint
        if calls != step {
            return Err(TrainError::checkpoint(
                path,
                format!("generator_calls {calls} does not match step {step}"),
            ));
        }
        self.generator.seek(calls);
        Ok(())
    }
}

/// Trains (or resumes) a language-model run.
pub fn train_lm(
    loaded: &LoadedRecipe,
    corpus: &Corpus,
    target: &RunTarget,
    opts: TrainOptions<'_>,
    observer: &mut dyn FnMut(&Event<'_>),
) -> Result<FinalReport<Summary>> {
    let Recipe::Lm(recipe) = &loaded.recipe else {
        return Err(TrainError::Recipe(format!(
            "recipe {} is a mirror recipe: use `{}`",
            loaded.name,
            loaded.recipe.train_command()
        )));
    };
    let data = LmData::new(corpus, recipe)?;
    let cfg = model_config(recipe);
    cfg.validate().map_err(TrainError::Recipe)?;
    crate::memory::check_lm(recipe, &cfg)?;
    let device = opts.device.clone().autodiff();
    let mut model = cfg
        .init(Rng::derive(recipe.train.seed, 0).next_u64(), &device)
        .with_precision(runs_in(recipe, &opts.device));
    if let Some(init) = &opts.init {
        model = load_weights(model, "", init, Path::new("<initial weights>"), &device)?;
    }
    let task = LmTask {
        recipe: recipe.clone(),
        config: serde_json::to_value(&cfg).expect("config json"),
        eval_device: opts.device.clone(),
        state: model.zero_state(recipe.data.batch_size, &device),
        device,
        model: ModelSlot::new(model),
        generator: BatchGenerator::new(
            data.train.clone(),
            recipe.data.batch_size,
            recipe.data.num_unrollings,
        )
        .map_err(|e| corpus.named(e))?,
        train_chars: data.train.len(),
        valid: data.valid,
        batch: vec![],
    };
    let (report, _) = session::train(loaded, corpus, target, &opts, task, observer)?;
    Ok(report)
}

/// Validation perplexity as the notebook computes it (the text read as a
/// circle, batch 1, state carried from zero), and for bigram models also the
/// notebook's own every-other-character variant.
pub fn validate(
    model: &CharLm,
    kind: TokenizerKind,
    valid: &[u8],
    streams: usize,
    device: &Device,
) -> (f64, Option<f64>) {
    let plan = eval::Streams {
        streams,
        ..Default::default()
    };
    let (sum, n) = if plan.segments(valid.len()) > 1 {
        // segments side by side, each warmed on the text before it
        let (inputs, labels) = eval::sequence_inputs(kind, valid, false);
        eval::evaluate_streams(model, &inputs, &labels, plan, device, &mut |_| {})
    } else {
        let (inputs, labels) = eval::sequence_inputs(kind, valid, true);
        eval::evaluate_sequence(model, &inputs, &labels, device, usize::MAX, &mut |_| {})
    };
    let ppl = eval::perplexity(sum, n);
    let notebook = (kind == TokenizerKind::Bigram).then(|| {
        let (inputs, labels) = eval::notebook_bigram_inputs(valid);
        let (sum, n) =
            eval::evaluate_sequence(model, &inputs, &labels, device, usize::MAX, &mut |_| {});
        eval::perplexity(sum, n)
    });
    (ppl, notebook)
}

/// A trained language model rebuilt from its run directory alone, on `device`
/// (any compiled-in device, whatever device trained it). Everything read is
/// checked against the weights before use: the vocabulary of `config.json`
/// must be the model's.
pub fn load_lm(
    run_dir: &Path,
    device: &Device,
) -> Result<(CharLm, TokenizerKind, crate::run::RunConfig)> {
    let run = crate::run::RunDir::open(run_dir)?;
    let config = run.read_config()?;
    let kind = match config.tokenizer {
        Tokenizer::Char => TokenizerKind::Char,
        Tokenizer::Bigram => TokenizerKind::Bigram,
        Tokenizer::Mirror => {
            return Err(TrainError::Run(format!(
                "{} is a mirror run: use `charlstm mirror --run {0}` (or `charlstm mirror eval \
                 --run {0} --data FILE`)",
                run_dir.display()
            )));
        }
    };
    let weights = session::load_weights_file(&run, &config, "charlstm-lm")?;
    let bad_config = |e: String| {
        TrainError::Run(format!(
            "{}: bad model config: {e}",
            run.config_path().display()
        ))
    };
    let mut model_json = config.model.clone();
    upgrade_model_config(&mut model_json);
    let cfg: CharLmConfig =
        serde_json::from_value(model_json).map_err(|e| bad_config(e.to_string()))?;
    cfg.validate().map_err(bad_config)?;
    let tok = tokenizer_of(kind);
    if cfg.vocab_size != tok.vocab_size() || cfg.output_size != tok.output_size() {
        return Err(bad_config(format!(
            "vocab_size {} and output_size {} do not fit the {:?} vocabulary ({} in, {} out)",
            cfg.vocab_size,
            cfg.output_size,
            config.tokenizer,
            tok.vocab_size(),
            tok.output_size()
        )));
    }
    crate::memory::check_config_fits_weights(
        crate::memory::lm_params(&cfg),
        weights.scalars(),
        &run.config_path().display().to_string(),
    )?;
    let model = load_weights(cfg.init(0, device), "", &weights, &run.model_path(), device)?;
    Ok((model, kind, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::CharLmConfig;

    #[test]
    fn an_old_model_config_reads_as_one_without_dropconnect() {
        let mut old = serde_json::json!({"d_hidden": 8});
        upgrade_model_config(&mut old);
        assert_eq!(
            old,
            serde_json::json!({"d_hidden": 8, "recurrent_keep_prob": 1.0})
        );
        let mut new = serde_json::json!({"recurrent_keep_prob": 0.8});
        upgrade_model_config(&mut new);
        assert_eq!(new, serde_json::json!({"recurrent_keep_prob": 0.8}));
        let mut not_an_object = serde_json::json!([1]);
        upgrade_model_config(&mut not_an_object);
        assert_eq!(not_an_object, serde_json::json!([1]));
    }

    #[test]
    fn validation_in_streams_equals_one_stream() {
        // 20,000 characters: 5 segments of 4,000, each warmed on 1,000
        let device = Device::flex();
        let model = CharLmConfig::new(27, 27).with_d_hidden(16).init(2, &device);
        let mut rng = Rng::new(9);
        let text: Vec<u8> = (0..20_000).map(|_| rng.below(27) as u8).collect();
        let (one, _) = validate(&model, TokenizerKind::Char, &text, 1, &device);
        let (many, _) = validate(&model, TokenizerKind::Char, &text, 5, &device);
        assert!((one.ln() - many.ln()).abs() < 1e-3, "{one} vs {many}");
    }

    /// Asking for bf16 or f16 says why it runs in f32 here (the CPU, the
    /// batch part, the units), for bf16 without AMX tiles that it may be
    /// slower, for f16 with them that bf16 is faster; f32, bf16 where it
    /// runs on the tiles and f16 where it runs without them say nothing.
    #[test]
    #[allow(clippy::print_stderr)] // says when this CPU cannot run a format
    fn a_half_run_says_where_it_is_f32_or_may_be_slower() {
        use model::kernel::Half;
        let device = Device::flex();
        let note = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            match crate::recipe::load_recipe("large", &sets).unwrap().recipe {
                Recipe::Lm(r) => precision_note("large", &r, &device),
                Recipe::Mirror(_) => unreachable!("large is a language model"),
            }
        };
        assert_eq!(note(&[]), None, "f32 says nothing");
        for half in [Half::Bf16, Half::F16] {
            let name = half.precision().name();
            let set = format!("train.precision={name}");
            let set = set.as_str();
            let f32_here = format!("train.precision = {name} runs in f32 here: ");
            let asked = note(&[set]);
            let units = note(&[set, "model.d_hidden=40"]).expect("a note");
            // batches under 16 are one part whatever the thread count: 2 rows
            // are too few, 6 are enough
            let rows = note(&[set, "data.batch_size=2"]).expect("a note");
            let six = note(&[set, "data.batch_size=6"]);
            if !half.available() {
                eprintln!(
                    "no {} here: only the CPU's note can be checked",
                    half.instructions()
                );
                for n in [asked.expect("a note"), units, rows, six.expect("a note")] {
                    assert!(n.starts_with(&f32_here), "{n}");
                    assert!(
                        n.contains(half.instructions()) || n.contains("CHARLSTM_KERNELS"),
                        "{n}"
                    );
                }
                continue;
            }
            assert_eq!(
                units,
                format!("{f32_here}model.d_hidden 40 is not a multiple of 16")
            );
            assert_eq!(
                rows,
                format!("{f32_here}data.batch_size 2 is under the 4 rows {name} needs")
            );
            assert_eq!(six, asked, "6 rows run {name} as 64 do");
            let tiles = Half::Bf16.on_tiles();
            match (half, tiles) {
                (Half::F16, false) | (Half::Bf16, true) => {
                    assert_eq!(asked, None, "{name} where it runs fast says nothing")
                }
                (Half::Bf16, false) => {
                    let n = asked.expect("a note without AMX");
                    assert!(
                        n.contains("without AMX tiles") && n.contains("--recipe large"),
                        "{n}"
                    );
                }
                (Half::F16, true) => {
                    let n = asked.expect("a note on AMX");
                    assert!(
                        n.contains("has AMX tiles") && n.contains("train.precision=bf16"),
                        "{n}"
                    );
                }
            }
        }
    }
}
