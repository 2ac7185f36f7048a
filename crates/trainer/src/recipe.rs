//! Recipes: TOML files holding what a person chooses for a training run
//! (model sizes, data layout, optimiser, steps). The built-in ones live in
//! this crate's `recipes/` and are compiled in; any other file can be given by path.
//! `--set section.key=value` overrides a value; unknown keys are errors.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The recipes compiled into the binary: `(name, TOML source)`.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "notebook-char",
        include_str!("../recipes/notebook-char.toml"),
    ),
    (
        "notebook-fused",
        include_str!("../recipes/notebook-fused.toml"),
    ),
    (
        "notebook-embed",
        include_str!("../recipes/notebook-embed.toml"),
    ),
    (
        "notebook-bigram",
        include_str!("../recipes/notebook-bigram.toml"),
    ),
    (
        "notebook-dropout",
        include_str!("../recipes/notebook-dropout.toml"),
    ),
    ("large", include_str!("../recipes/large.toml")),
    ("best", include_str!("../recipes/best.toml")),
    ("mirror", include_str!("../recipes/mirror.toml")),
];

/// Input vocabulary of a language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenizerKind {
    /// One id per character (27).
    Char,
    /// One id per pair of characters (729), predicting the character after the pair.
    Bigram,
}

/// How ids enter the first LSTM layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputSpec {
    /// One-hot vectors (a row lookup).
    OneHot,
    /// A learned embedding.
    Embedding,
}

/// Gate parameter layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutSpec {
    /// Four matrices per input (the notebook's cell).
    Gates,
    /// One matrix four gates wide (problem 1).
    Fused,
}

/// Initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitSpec {
    /// The notebook's truncated normal (mean -0.1, deviation 0.1) and uniform embeddings.
    Notebook,
    /// Uniform `±1/sqrt(fan_in)`, forget bias 1.
    Default,
}

/// The language model's architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmModelSpec {
    /// Input vocabulary.
    pub tokenizer: TokenizerKind,
    /// Input representation.
    pub input: InputSpec,
    /// Embedding width (embedding input only).
    #[serde(default = "default_embedding")]
    pub d_embedding: usize,
    /// Units per layer.
    pub d_hidden: usize,
    /// Stacked layers.
    #[serde(default = "one")]
    pub n_layers: usize,
    /// Gate layout.
    #[serde(default = "default_layout")]
    pub layout: LayoutSpec,
    /// Initialisation.
    #[serde(default = "default_init")]
    pub init: InitSpec,
    /// Dropout keep probability on non-recurrent connections (1 = none).
    #[serde(default = "one_f")]
    pub keep_prob: f64,
    /// Keep probability of each recurrent weight (DropConnect on the
    /// hidden-to-hidden matrices, one mask per training step; 1 = none).
    #[serde(default = "one_f")]
    pub recurrent_keep_prob: f64,
}

/// How the corpus is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitSpec {
    /// First `valid_size` characters validation, the rest training.
    Notebook,
    /// 90% / 5% / 5% train / validation / test.
    Standard,
}

/// Data layout of a language-model run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmDataSpec {
    /// Split.
    pub split: SplitSpec,
    /// Validation characters for the notebook split (also the number of
    /// characters evaluated at each summary for the standard split).
    #[serde(default = "default_valid")]
    pub valid_size: usize,
    /// Cursors of the batch generator.
    pub batch_size: usize,
    /// Columns per step.
    pub num_unrollings: usize,
    /// Validation read as up to this many segments side by side, each warmed
    /// on 1000 characters and at least 4000 long (1, or a shorter validation
    /// text: one stream, character by character, around the text as the
    /// notebook does; `charlstm eval --streams`).
    #[serde(default = "one")]
    pub valid_streams: usize,
}

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent (the notebook's).
    Sgd,
    /// Adam (Kingma and Ba), betas 0.9 and 0.999, epsilon 1e-8.
    Adam,
}

/// Training schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Steps to train (the notebook: 7001, so its last summary is at step 7000).
    pub steps: u64,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Initial learning rate.
    pub learning_rate: f64,
    /// Staircase decay: the rate is multiplied by `decay_factor` every `decay_every` steps.
    pub decay_every: u64,
    /// Decay factor.
    #[serde(default = "default_decay")]
    pub decay_factor: f64,
    /// Global L2 norm all gradients together are clipped to (0 = no clipping).
    pub clip_norm: f64,
    /// Steps between summaries (log line, validation, checkpoint, plots).
    pub summary: u64,
    /// Steps between samples (default 10 x summary, as the notebook).
    #[serde(default)]
    pub samples_every: Option<u64>,
    /// Seed of initialisation, dropout and sampling.
    #[serde(default)]
    pub seed: u64,
    /// Polyak averaging: after each update the weights' running average
    /// becomes `average * itself + (1 - average) * weights` (a horizon of
    /// about `1 / (1 - average)` steps); validation, samples and the run's
    /// `model.safetensors` use the average. 0 (the default) keeps none.
    #[serde(default)]
    pub average: f64,
    /// Precision of the LSTM's products while training (the recurrent ones
    /// and a dense input's two by its weights, and on the AMX tiles its
    /// weight gradient): `f32` (the default), `bf16`
    /// (operands rounded to bf16, sums in f32, on CPUs with AVX512-BF16, on
    /// the AMX tiles where they exist) or `f16` (operands scaled and rounded
    /// to fp16, sums in fp16 for 64 products at a time then in f32, on CPUs
    /// with AVX512-FP16); f32 where
    /// the CPU has not the instructions, for a thread's part of the batch
    /// under 4 rows and for units not a multiple of 16 (a layer's dense
    /// input with its recurrent products; and a dense input whose sizes
    /// are not both multiples of 16).
    /// Faster on some CPUs, slower on others: docs/PERFORMANCE.md measures
    /// their speed and perplexity.
    #[serde(default)]
    pub precision: PrecisionSpec,
}

/// Precision of the recurrent products ([`model::Precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrecisionSpec {
    /// f32 throughout.
    #[default]
    F32,
    /// bf16 operands, f32 accumulation.
    Bf16,
    /// fp16 operands (scaled), fp16 sums of 64 products added in f32.
    F16,
}

impl From<PrecisionSpec> for model::Precision {
    fn from(p: PrecisionSpec) -> Self {
        match p {
            PrecisionSpec::F32 => model::Precision::F32,
            PrecisionSpec::Bf16 => model::Precision::Bf16,
            PrecisionSpec::F16 => model::Precision::F16,
        }
    }
}

/// A language-model recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmRecipe {
    /// One line saying what this is.
    pub description: String,
    /// Always "lm".
    pub task: String,
    /// Architecture.
    pub model: LmModelSpec,
    /// Data layout.
    pub data: LmDataSpec,
    /// Schedule.
    pub train: TrainSpec,
    /// Dynamic evaluation settings measured for this model (`charlstm eval
    /// --dynamic`; flags override them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<DynamicSpec>,
}

/// Dynamic evaluation (`trainer::dynamic`): segment length, update rule,
/// learning rate, pull towards the trained weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicSpec {
    /// Characters scored between two updates.
    pub segment: usize,
    /// How each update scales the gradient (runs made before there was a
    /// choice used SGD).
    #[serde(default)]
    pub rule: DynamicRule,
    /// Learning rate of the updates.
    pub learning_rate: f64,
    /// Pull towards the trained weights per update, in `[0, 1]`.
    #[serde(default)]
    pub decay: f64,
    /// Training characters the RMS rule takes its gradient statistics from.
    #[serde(default = "default_dynamic_stats")]
    pub stats: usize,
}

/// The update rule of dynamic evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DynamicRule {
    /// `w <- w - lr * g + decay * (w0 - w)`: one rate for every weight.
    #[default]
    Sgd,
    /// Krause et al.'s RMS rule: each weight's step is its gradient divided
    /// by the gradient's root mean square over segments of training text, and
    /// its pull back towards the trained value is proportional to that root
    /// mean square (normalised to a mean of `decay`): weights that training
    /// moved little stay close to where training left them.
    Rms,
}

impl DynamicRule {
    /// Its lower-case name, as recipes and flags spell it.
    pub fn name(self) -> &'static str {
        match self {
            DynamicRule::Sgd => "sgd",
            DynamicRule::Rms => "rms",
        }
    }
}

/// 20,000 characters: 400 segments of 50, about half a minute for a 2 x 512
/// model on 2 cores.
pub fn default_dynamic_stats() -> usize {
    20_000
}

/// The mirror model's architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorModelSpec {
    /// Character embedding width (encoder and decoder).
    pub d_embedding: usize,
    /// Units of the encoder and decoder LSTMs.
    pub d_hidden: usize,
    /// Stacked layers in the encoder and the decoder.
    #[serde(default = "one")]
    pub n_layers: usize,
    /// Luong-style attention over the encoder outputs.
    pub attention: bool,
    /// Feed the source to the encoder reversed (Sutskever et al.).
    pub reverse_source: bool,
    /// A second encoder reading the source backwards, joined per position.
    #[serde(default = "yes")]
    pub bidirectional: bool,
    /// Dropout keep probability on non-recurrent connections.
    #[serde(default = "one_f")]
    pub keep_prob: f64,
    /// Attention only over the source word being written and its delimiter.
    #[serde(default)]
    pub word_window: bool,
    /// Learned attention bias per position relative to the letter due, this
    /// many buckets each side (0: none).
    #[serde(default)]
    pub relative_span: usize,
}

/// Mirror data: windows of words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorDataSpec {
    /// Fewest words per training window.
    pub min_words: usize,
    /// Most words per training window.
    pub max_words: usize,
    /// Longest training window in characters (longer draws are redrawn).
    pub max_chars: usize,
    /// Windows per training batch (all of one character length).
    pub batch_size: usize,
    /// Probability that a training word is replaced by random letters of the
    /// same length (so that made-up words are mirrored too).
    #[serde(default)]
    pub random_word_prob: f64,
    /// Longest made-up word: a replaced word gets a random length from 1 to
    /// this (0: the length of the word it replaces).
    #[serde(default)]
    pub made_up_len: usize,
    /// Share of made-up words that are runs of one letter (`zzzzzq`,
    /// `aaaaaaaab`: at most one other letter), which counting breaks.
    #[serde(default)]
    pub letter_run_prob: f64,
    /// Validation windows evaluated at each summary.
    pub valid_windows: usize,
    /// Test windows for the final report.
    pub test_windows: usize,
}

/// Mirror schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorTrainSpec {
    /// Steps to train.
    pub steps: u64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Staircase decay every this many steps (0 = never).
    #[serde(default)]
    pub decay_every: u64,
    /// Decay factor.
    #[serde(default = "default_decay")]
    pub decay_factor: f64,
    /// Global gradient norm clip (0 = none).
    pub clip_norm: f64,
    /// Steps between summaries.
    pub summary: u64,
    /// Beam width used for the reported accuracy (1 = greedy).
    #[serde(default = "one")]
    pub beam: usize,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
}

/// A mirror (sequence-to-sequence) recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorRecipe {
    /// One line saying what this is.
    pub description: String,
    /// Always "mirror".
    pub task: String,
    /// Architecture.
    pub model: MirrorModelSpec,
    /// Data.
    pub data: MirrorDataSpec,
    /// Schedule.
    pub train: MirrorTrainSpec,
}

/// The command line that trains a character language model: error
/// messages name it (one copy, for the CLI and the library).
pub const LM_TRAIN_COMMAND: &str = "charlstm train";

/// The command line that trains a word mirror.
pub const MIRROR_TRAIN_COMMAND: &str = "charlstm mirror train";

/// The command line that trains a recipe of the mirror task when `mirror`,
/// else of the language model.
pub fn train_command(mirror: bool) -> &'static str {
    if mirror {
        MIRROR_TRAIN_COMMAND
    } else {
        LM_TRAIN_COMMAND
    }
}

/// A recipe of either task.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipe {
    /// Character language model.
    Lm(LmRecipe),
    /// Word mirror.
    Mirror(MirrorRecipe),
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn one_f() -> f64 {
    1.0
}
fn default_embedding() -> usize {
    128
}
fn default_layout() -> LayoutSpec {
    LayoutSpec::Fused
}
fn default_init() -> InitSpec {
    InitSpec::Default
}
fn default_valid() -> usize {
    1000
}
fn default_decay() -> f64 {
    0.1
}

/// A recipe as loaded: its name (file stem or built-in name), the TOML tree
/// after overrides, and the parsed recipe.
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    /// Name (built-in name or file stem).
    pub name: String,
    /// The tree after `--set` overrides.
    pub tree: toml::Table,
    /// The recipe.
    pub recipe: Recipe,
}

/// A parser's message cut to a readable length (a one-line recipe of
/// 400 KB would otherwise be echoed whole).
fn shorten(message: &str) -> String {
    const MAX: usize = 400;
    match message.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}... ({} more bytes)", &message[..at], message.len() - at),
        None => message.to_string(),
    }
}

/// Largest recipe file read.
pub const RECIPE_MAX_BYTES: u64 = 1 << 20;

/// Source text of a recipe given by built-in name or path.
pub fn recipe_source(name_or_path: &str) -> Result<(String, String)> {
    if let Some((name, src)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return Ok((name.to_string(), src.to_string()));
    }
    let path = Path::new(name_or_path);
    if path.exists() || name_or_path.ends_with(".toml") {
        // a recipe is a few hundred bytes: 1 MiB is a generous bound (`--recipe /dev/zero`)
        let text = crate::fsutil::read_text(path, RECIPE_MAX_BYTES)?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("recipe")
            .to_string();
        return Ok((name, text));
    }
    Err(TrainError::Recipe(format!(
        "unknown recipe {name_or_path:?}: expected one of {} or a path to a .toml file",
        BUILTIN
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Parses `value` of a `--set` as TOML (`10`, `1.5`, `true`, `"x"`), or as a bare string.
fn parse_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

/// Applies one `key=value` override. `key` is `section.field`, or a bare
/// field name found in exactly one section.
pub fn apply_override(tree: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, value) = assignment.split_once('=').ok_or_else(|| {
        TrainError::Recipe(format!(
            "--set {assignment:?}: expected key=value, for example train.steps=2000"
        ))
    })?;
    let key = key.trim();
    let trimmed = value.trim();
    if trimmed.parse::<u64>().is_ok() && trimmed.parse::<i64>().is_err() {
        return Err(TrainError::Recipe(format!(
            "--set {assignment:?}: {trimmed} is larger than a recipe integer can hold \
             (at most {})",
            i64::MAX
        )));
    }
    if trimmed.parse::<f64>().is_ok_and(f64::is_infinite)
        && !trimmed.to_ascii_lowercase().contains("inf")
    {
        return Err(TrainError::Recipe(format!(
            "--set {assignment:?}: {trimmed} is larger than a recipe number can hold \
             (at most {:e})",
            f64::MAX
        )));
    }
    if key == "task" && tree.get("task") != Some(&parse_value(trimmed)) {
        // the task is which recipe, not a setting of one: its sections differ
        return Err(TrainError::Recipe(format!(
            "--set {assignment:?}: the task is not a setting; give a recipe of that task \
             (`{LM_TRAIN_COMMAND} --recipe notebook-char`, `{MIRROR_TRAIN_COMMAND} --recipe \
             mirror`)"
        )));
    }
    let value = parse_value(trimmed);
    let path: Vec<String> = if key.contains('.') {
        key.split('.').map(str::to_string).collect()
    } else {
        let sections: Vec<String> = tree
            .iter()
            .filter(|(_, v)| v.as_table().is_some_and(|t| t.contains_key(key)))
            .map(|(k, _)| k.clone())
            .collect();
        match sections.as_slice() {
            [one] => vec![one.clone(), key.to_string()],
            [] if tree.contains_key(key) => vec![key.to_string()],
            [] => vec![key.to_string()],
            many => {
                return Err(TrainError::Recipe(format!(
                    "--set {key}: ambiguous, found in sections {}; write section.{key}",
                    many.join(", ")
                )));
            }
        }
    };
    let mut table = tree;
    for part in &path[..path.len() - 1] {
        table = table
            .get_mut(part)
            .and_then(|v| v.as_table_mut())
            .ok_or_else(|| {
                // dynamic evaluation is optional in a recipe; its flags are eval's
                let hint = if part == "dynamic" {
                    "; this recipe keeps no dynamic evaluation settings: give them to \
                     `charlstm eval --dynamic` as its --dynamic-* flags"
                } else {
                    ""
                };
                TrainError::Recipe(format!(
                    "--set {key}: no section {part:?} in the recipe{hint}"
                ))
            })?;
    }
    let last = path.last().expect("non-empty key");
    if let (Some(old), new) = (table.get(last), &value)
        && old.type_str() != new.type_str()
        && !(old.is_float() && new.is_integer())
    {
        // keep the error of a wrong type close to the flag
        let a = |t: &str| match t {
            "integer" | "array" => format!("an {t}"),
            t => format!("a {t}"),
        };
        return Err(TrainError::Recipe(format!(
            "--set {key}={trimmed}: expected {}, found {}",
            a(old.type_str()),
            a(new.type_str())
        )));
    }
    let value = match (table.get(last), value) {
        (Some(old), toml::Value::Integer(i)) if old.is_float() => toml::Value::Float(i as f64),
        (_, v) => v,
    };
    table.insert(last.clone(), value);
    Ok(())
}

/// Loads a recipe by built-in name or path, applies overrides, parses and validates it.
///
/// ```
/// use trainer::{Recipe, load_recipe};
/// let loaded = load_recipe("notebook-char", &["model.d_hidden=128".into()]).unwrap();
/// let Recipe::Lm(r) = &loaded.recipe else { unreachable!() };
/// assert_eq!((r.model.d_hidden, r.train.steps), (128, 7001));
/// assert!(load_recipe("notebook-char", &["train.stepz=3".into()]).is_err());
/// ```
pub fn load_recipe(name_or_path: &str, overrides: &[String]) -> Result<LoadedRecipe> {
    let (name, src) = recipe_source(name_or_path)?;
    // errors name the recipe as given: a file by its path
    let mut tree: toml::Table = src.parse().map_err(|e: toml::de::Error| {
        TrainError::Recipe(format!(
            "recipe {name_or_path}: {}",
            shorten(&e.to_string())
        ))
    })?;
    let task = tree
        .get("task")
        .and_then(|t| t.as_str())
        .map(str::to_string);
    for o in overrides {
        apply_override(&mut tree, o)?;
    }
    let recipe = parse_tree(name_or_path, &tree).map_err(|e| match e {
        // a wrong key or value of the file itself: its line too
        TrainError::Recipe(msg) => match error_line(&src, task.as_deref()) {
            Some(line) => TrainError::Recipe(msg.replacen(
                &format!("recipe {name_or_path}:"),
                &format!("recipe {name_or_path}, line {line}:"),
                1,
            )),
            None => TrainError::Recipe(msg),
        },
        e => e,
    })?;
    Ok(LoadedRecipe { name, tree, recipe })
}

/// The line of `src` at which it fails to read as a recipe of its `task`
/// (an unknown key, a value of the wrong type), if it does: an error of the
/// file, not of an override or of the values' ranges.
fn error_line(src: &str, task: Option<&str>) -> Option<usize> {
    let span = match task? {
        "lm" => toml::from_str::<LmRecipe>(src).err()?.span()?,
        "mirror" => toml::from_str::<MirrorRecipe>(src).err()?.span()?,
        _ => return None,
    };
    Some(src.get(..span.start)?.matches('\n').count() + 1)
}

/// Parses a recipe tree (after overrides) and validates it.
pub fn parse_tree(name: &str, tree: &toml::Table) -> Result<Recipe> {
    let task = tree.get("task").and_then(|t| t.as_str()).ok_or_else(|| {
        TrainError::Recipe(format!(
            "recipe {name}: missing task = \"lm\" or \"mirror\""
        ))
    })?;
    // the display names the key: "invalid value: integer `-5`, expected u64 in `train.steps`"
    let err = |e: toml::de::Error| {
        let text: Vec<String> = e
            .to_string()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        TrainError::Recipe(format!("recipe {name}: {}", shorten(&text.join(" "))))
    };
    let recipe = match task {
        "lm" => Recipe::Lm(tree.clone().try_into().map_err(err)?),
        "mirror" => Recipe::Mirror(tree.clone().try_into().map_err(err)?),
        other => {
            return Err(TrainError::Recipe(format!(
                "recipe {name}: task {other:?}: expected \"lm\" or \"mirror\""
            )));
        }
    };
    recipe
        .validate()
        .map_err(|e| TrainError::Recipe(format!("recipe {name}: {e}")))?;
    Ok(recipe)
}

fn at_least_one(what: &str, v: u64) -> std::result::Result<(), String> {
    if v == 0 {
        Err(format!("{what} must be at least 1, got 0"))
    } else {
        Ok(())
    }
}

/// Most stacked layers a recipe may ask for (deeper LSTMs do not train here,
/// and a typo of 100000 layers of one unit passes any memory check while
/// taking minutes a step).
pub const MAX_LAYERS: usize = 64;

fn at_most(what: &str, v: usize, max: usize) -> std::result::Result<(), String> {
    if v > max {
        Err(format!("{what} must be at most {max}, got {v}"))
    } else {
        Ok(())
    }
}

fn finite_positive(what: &str, v: f64) -> std::result::Result<(), String> {
    if !(v.is_finite() && v > 0.0) {
        Err(format!("{what} must be a positive number, got {v}"))
    } else {
        Ok(())
    }
}

fn probability(what: &str, v: f64) -> std::result::Result<(), String> {
    if !(v > 0.0 && v <= 1.0) {
        Err(format!("{what} must be in (0, 1], got {v}"))
    } else {
        Ok(())
    }
}

fn share(what: &str, v: f64) -> std::result::Result<(), String> {
    if !(0.0..=1.0).contains(&v) {
        Err(format!("{what} must be in [0, 1], got {v}"))
    } else {
        Ok(())
    }
}

/// Longest made-up training word (`data.made_up_len`).
pub const MAX_MADE_UP_LEN: usize = 1000;

impl Recipe {
    /// The command line that trains this recipe ([`train_command`]).
    pub fn train_command(&self) -> &'static str {
        train_command(matches!(self, Recipe::Mirror(_)))
    }

    /// Whether `section.field` is a setting of this recipe (defaults
    /// included): `train.samples_every` is one of a language model's, not
    /// of a mirror's.
    pub fn has_key(&self, key: &str) -> bool {
        let tree = match self {
            Recipe::Lm(r) => serde_json::to_value(r),
            Recipe::Mirror(r) => serde_json::to_value(r),
        }
        .expect("a recipe serialises");
        key.split('.')
            .try_fold(&tree, |node, part| node.get(part))
            .is_some()
    }

    /// Checks every number for sense; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Recipe::Lm(r) => {
                let m = &r.model;
                at_least_one("model.d_hidden", m.d_hidden as u64)?;
                at_least_one("model.n_layers", m.n_layers as u64)?;
                at_most("model.n_layers", m.n_layers, MAX_LAYERS)?;
                at_least_one("model.d_embedding", m.d_embedding as u64)?;
                probability("model.keep_prob", m.keep_prob)?;
                probability("model.recurrent_keep_prob", m.recurrent_keep_prob)?;
                if m.tokenizer == TokenizerKind::Bigram && m.input == InputSpec::OneHot {
                    // a 729-wide one-hot works, but is never what anyone means
                    return Err(
                        "model.tokenizer = \"bigram\" needs model.input = \"embedding\"".into(),
                    );
                }
                if let Some(dy) = &r.dynamic {
                    at_least_one("dynamic.segment", dy.segment as u64)?;
                    if !(dy.learning_rate.is_finite() && dy.learning_rate >= 0.0) {
                        return Err(format!(
                            "dynamic.learning_rate must be a number >= 0, got {}",
                            dy.learning_rate
                        ));
                    }
                    share("dynamic.decay", dy.decay)?;
                    if dy.rule == DynamicRule::Rms {
                        at_least_one("dynamic.stats", dy.stats as u64)?;
                    }
                }
                let d = &r.data;
                at_least_one("data.batch_size", d.batch_size as u64)?;
                at_least_one("data.num_unrollings", d.num_unrollings as u64)?;
                at_least_one("data.valid_size", d.valid_size as u64)?;
                at_least_one("data.valid_streams", d.valid_streams as u64)?;
                at_most("data.valid_streams", d.valid_streams, 4096)?;
                if m.tokenizer == TokenizerKind::Bigram && d.num_unrollings < 2 {
                    return Err("data.num_unrollings must be at least 2 for bigram input".into());
                }
                validate_train(&r.train)
            }
            Recipe::Mirror(r) => {
                let m = &r.model;
                at_least_one("model.d_hidden", m.d_hidden as u64)?;
                at_least_one("model.d_embedding", m.d_embedding as u64)?;
                at_least_one("model.n_layers", m.n_layers as u64)?;
                at_most("model.n_layers", m.n_layers, MAX_LAYERS)?;
                probability("model.keep_prob", m.keep_prob)?;
                let d = &r.data;
                at_least_one("data.min_words", d.min_words as u64)?;
                if d.max_words < d.min_words {
                    return Err(format!(
                        "data.max_words ({}) must be at least data.min_words ({})",
                        d.max_words, d.min_words
                    ));
                }
                at_least_one("data.max_chars", d.max_chars as u64)?;
                at_least_one("data.batch_size", d.batch_size as u64)?;
                at_least_one("data.valid_windows", d.valid_windows as u64)?;
                at_least_one("data.test_windows", d.test_windows as u64)?;
                share("data.random_word_prob", d.random_word_prob)?;
                share("data.letter_run_prob", d.letter_run_prob)?;
                at_most("data.made_up_len", d.made_up_len, MAX_MADE_UP_LEN)?;
                if d.made_up_len > d.max_chars {
                    return Err(format!(
                        "data.made_up_len ({}) must be at most data.max_chars ({}): longer \
                         made-up words never fit a training window",
                        d.made_up_len, d.max_chars
                    ));
                }
                at_most(
                    "model.relative_span",
                    m.relative_span,
                    model::mirror::MAX_RELATIVE_SPAN,
                )?;
                if (m.word_window || m.relative_span > 0) && !m.attention {
                    return Err(
                        "model.word_window and model.relative_span need model.attention = true"
                            .into(),
                    );
                }
                let t = &r.train;
                at_least_one("train.steps", t.steps)?;
                at_least_one("train.summary", t.summary)?;
                at_least_one("train.beam", t.beam as u64)?;
                finite_positive("train.learning_rate", t.learning_rate)?;
                if !(t.clip_norm >= 0.0 && t.clip_norm.is_finite()) {
                    return Err(format!("train.clip_norm must be >= 0, got {}", t.clip_norm));
                }
                probability("train.decay_factor", t.decay_factor)
            }
        }
    }
}

fn validate_train(t: &TrainSpec) -> std::result::Result<(), String> {
    at_least_one("train.steps", t.steps)?;
    at_least_one("train.summary", t.summary)?;
    at_least_one("train.decay_every", t.decay_every)?;
    if let Some(s) = t.samples_every {
        at_least_one("train.samples_every", s)?;
    }
    finite_positive("train.learning_rate", t.learning_rate)?;
    probability("train.decay_factor", t.decay_factor)?;
    if !(t.clip_norm >= 0.0 && t.clip_norm.is_finite()) {
        return Err(format!("train.clip_norm must be >= 0, got {}", t.clip_norm));
    }
    if !(0.0..1.0).contains(&t.average) {
        return Err(format!(
            "train.average must be in [0, 1) (0 = no averaging), got {}",
            t.average
        ));
    }
    Ok(())
}

impl TrainSpec {
    /// Steps between samples (default 10 x summary, as the notebook).
    pub fn samples_every(&self) -> u64 {
        self.samples_every
            .unwrap_or(self.summary.saturating_mul(10))
    }
}

/// What the run lifecycle needs of any recipe: how long, how often, how fast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Steps to train.
    pub steps: u64,
    /// Steps between summaries.
    pub summary: u64,
    /// Steps between samples (`u64::MAX`: never).
    pub samples_every: u64,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Initial learning rate.
    pub learning_rate: f64,
    /// Staircase decay every this many steps (0 = never).
    pub decay_every: u64,
    /// Decay factor.
    pub decay_factor: f64,
    /// Global gradient norm clip (0 = none).
    pub clip_norm: f64,
    /// Weight of the old average in the weights' running average (0 = none).
    pub average: f64,
    /// Seed of initialisation, dropout, batches and sampling.
    pub seed: u64,
}

/// Bytes of a step's largest buffer from which
/// [`Recipe::has_large_step_buffers`] holds: `large`'s gate pre-activations
/// are 26 MB, the mirror's (101 symbols, 128 units) 13 MB, the notebook
/// models' 0.6 MB.
pub const LARGE_STEP_BUFFER: usize = 8 << 20;

impl Recipe {
    /// Whether a training step's largest buffer (the gate pre-activations of
    /// every unrolled step, f32: of the language model's unrollings, of the
    /// mirror decoder's longest target) reaches [`LARGE_STEP_BUFFER`]: for
    /// such models the allocator should keep freed memory rather than return
    /// it to the system and fault it in again at the next step.
    pub fn has_large_step_buffers(&self) -> bool {
        let (rows, steps, hidden) = match self {
            Recipe::Lm(r) => (r.data.batch_size, r.data.num_unrollings, r.model.d_hidden),
            // the target and its end symbol
            Recipe::Mirror(r) => (
                r.data.batch_size,
                r.data.max_chars.saturating_add(1),
                r.model.d_hidden,
            ),
        };
        let gates = rows
            .saturating_mul(steps)
            .saturating_mul(hidden)
            .saturating_mul(4 * std::mem::size_of::<f32>());
        gates >= LARGE_STEP_BUFFER
    }

    /// The schedule, whichever the task.
    pub fn schedule(&self) -> Schedule {
        match self {
            Recipe::Lm(r) => {
                let t = &r.train;
                Schedule {
                    steps: t.steps,
                    summary: t.summary,
                    samples_every: t.samples_every(),
                    optimizer: t.optimizer,
                    learning_rate: t.learning_rate,
                    decay_every: t.decay_every,
                    decay_factor: t.decay_factor,
                    clip_norm: t.clip_norm,
                    average: t.average,
                    seed: t.seed,
                }
            }
            Recipe::Mirror(r) => {
                let t = &r.train;
                Schedule {
                    steps: t.steps,
                    summary: t.summary,
                    samples_every: u64::MAX,
                    optimizer: OptimizerKind::Adam,
                    learning_rate: t.learning_rate,
                    decay_every: t.decay_every,
                    decay_factor: t.decay_factor,
                    clip_norm: t.clip_norm,
                    average: 0.0,
                    seed: t.seed,
                }
            }
        }
    }
}

/// One line per built-in recipe: name and description.
pub fn list_builtin() -> Vec<(String, String)> {
    BUILTIN
        .iter()
        .map(|(name, src)| {
            let desc = src
                .parse::<toml::Table>()
                .ok()
                .and_then(|t| {
                    t.get("description")
                        .and_then(|d| d.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            (name.to_string(), desc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recipe's keys are its kind's, defaults included, and no other's.
    #[test]
    fn has_key_knows_each_kind_of_recipe() {
        let lm = load_recipe("notebook-char", &[]).unwrap().recipe;
        let mirror = load_recipe("mirror", &[]).unwrap().recipe;
        let best = load_recipe("best", &[]).unwrap().recipe;
        assert!(lm.has_key("train.samples_every") && lm.has_key("train.precision"));
        assert!(!lm.has_key("dynamic.segment") && best.has_key("dynamic.segment"));
        assert!(mirror.has_key("train.summary") && mirror.has_key("data.max_chars"));
        assert!(!mirror.has_key("train.samples_every") && !mirror.has_key("dynamic.rule"));
        assert!(!lm.has_key("train.nothing"));
    }
    /// `--set task=...` names what to do instead, not the fields the other
    /// task's sections lack.
    #[test]
    fn the_task_is_not_a_setting() {
        let e = load_recipe("notebook-char", &["task=mirror".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the task is not a setting") && e.contains("mirror train --recipe mirror"),
            "{e}"
        );
        // its own task is no change
        load_recipe("notebook-char", &["task=\"lm\"".into()]).unwrap();
    }

    #[test]
    fn every_builtin_recipe_parses_and_validates() {
        for (name, _) in BUILTIN {
            load_recipe(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn overrides_apply_by_section_or_bare_name() {
        let r = load_recipe(
            "notebook-char",
            &["train.steps=20".into(), "d_hidden=8".into()],
        )
        .unwrap();
        let Recipe::Lm(r) = r.recipe else { panic!() };
        assert_eq!(r.train.steps, 20);
        assert_eq!(r.model.d_hidden, 8);
        // integers become floats where a float is expected
        let r = load_recipe(
            "notebook-char",
            &["learning_rate=1".into(), "layout=fused".into()],
        )
        .unwrap();
        let Recipe::Lm(r) = r.recipe else { panic!() };
        assert_eq!(r.train.learning_rate, 1.0);
        assert_eq!(r.model.layout, LayoutSpec::Fused);
        // the precision is f32 unless asked; bf16 and f16 map to the model's setting
        assert_eq!(r.train.precision, PrecisionSpec::F32);
        for (set, want) in [
            ("train.precision=bf16", model::Precision::Bf16),
            ("train.precision=f16", model::Precision::F16),
        ] {
            let r = load_recipe("large", &[set.into()]).unwrap();
            let Recipe::Lm(r) = r.recipe else { panic!() };
            assert_eq!(model::Precision::from(r.train.precision), want);
        }
    }

    /// A recipe file's wrong key or value is named with its line; an
    /// override's error or a value out of range has none to name.
    #[test]
    fn a_recipe_file_error_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let good = recipe_source("notebook-char").unwrap().1;
        let bad = good.replacen("d_hidden", "d_hiden", 1);
        let line = bad.lines().position(|l| l.contains("d_hiden")).unwrap() + 1;
        std::fs::write(&path, &bad).unwrap();
        let p = path.to_str().unwrap();
        let e = load_recipe(p, &[]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("recipe {p}, line {line}: unknown field `d_hiden`")),
            "{e}"
        );
        std::fs::write(&path, &good).unwrap();
        let e = load_recipe(p, &["model.d_hidden=0".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("recipe {p}: ")), "{e}");
    }

    #[test]
    fn bad_overrides_and_values_are_clear_errors() {
        let e = |o: &str| {
            load_recipe("notebook-char", &[o.to_string()])
                .unwrap_err()
                .to_string()
        };
        assert!(
            e("train.stepz=3").contains("unknown field `stepz`"),
            "{}",
            e("train.stepz=3")
        );
        assert!(
            e("stepz=3").contains("unknown field `stepz`"),
            "{}",
            e("stepz=3")
        );
        assert!(e("train.steps=0").contains("train.steps must be at least 1, got 0"));
        assert!(
            e("train.steps=-5").contains("expected u64 in `train.steps`"),
            "{}",
            e("train.steps=-5")
        );
        assert!(e("learning_rate=-1").contains("train.learning_rate must be a positive number"));
        assert!(e("dynamic.segment=50").contains("as its --dynamic-* flags"));
        assert!(
            e("train.steps=abc").contains("train.steps=abc: expected an integer, found a string"),
            "{}",
            e("train.steps=abc")
        );
        assert!(e("keep_prob=0").contains("model.keep_prob must be in (0, 1]"));
        assert!(
            e("model.recurrent_keep_prob=1.5")
                .contains("model.recurrent_keep_prob must be in (0, 1]")
        );
        assert!(
            e("layout=diagonal").contains("unknown variant `diagonal`"),
            "{}",
            e("layout=diagonal")
        );
        assert!(
            e("train.precision=fp8").contains("expected one of `f32`, `bf16`, `f16`"),
            "{}",
            e("train.precision=fp8")
        );
        let mirror = load_recipe("mirror", &["train.precision=bf16".into()]).unwrap_err();
        assert!(
            mirror.to_string().contains("unknown field `precision`"),
            "{mirror}"
        );
        assert!(
            e("nosection.x=1").contains("no section \"nosection\""),
            "{}",
            e("nosection.x=1")
        );
        assert!(e("steps").contains("expected key=value"));
        let unknown = load_recipe("no-such-recipe", &[]).unwrap_err().to_string();
        assert!(unknown.contains("notebook-char"), "{unknown}");
    }

    /// A value as someone might type it after `--set key=`.
    fn typed_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:e}")),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-0".to_string()),
            Just("0".to_string()),
            Just("1".to_string()),
            Just("true".to_string()),
            Just("[1, 2]".to_string()),
            "[a-z\\-]{0,12}",
        ]
    }

    const KEYS: &[&str] = &[
        "train.precision",
        "model.d_hidden",
        "model.n_layers",
        "model.d_embedding",
        "model.keep_prob",
        "model.recurrent_keep_prob",
        "model.tokenizer",
        "model.input",
        "model.layout",
        "model.attention",
        "data.batch_size",
        "data.num_unrollings",
        "data.valid_size",
        "data.valid_streams",
        "data.max_chars",
        "data.min_words",
        "data.max_words",
        "data.random_word_prob",
        "data.made_up_len",
        "data.letter_run_prob",
        "model.word_window",
        "model.relative_span",
        "data.valid_windows",
        "train.steps",
        "train.learning_rate",
        "train.decay_every",
        "train.decay_factor",
        "train.clip_norm",
        "train.summary",
        "train.seed",
        "train.samples_every",
        "train.beam",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            // PROPTEST_CASES runs longer fuzzing (docs/RELIABILITY.md)
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512),
        ))]

        /// Any value of any key, on either task's recipe, is parsed or refused,
        /// and what is accepted is sized (memory) without a panic or an allocation.
        #[test]
        fn any_override_is_parsed_or_refused(
            key in proptest::sample::select(KEYS),
            value in typed_value(),
            lm in proptest::prelude::any::<bool>(),
        ) {
            let name = if lm { "notebook-embed" } else { "mirror" };
            if let Ok(loaded) = load_recipe(name, &[format!("{key}={value}")]) {
                let _ = loaded.recipe.schedule().learning_rate_at(u64::MAX);
                let _ = loaded.recipe.has_large_step_buffers();
                match &loaded.recipe {
                    Recipe::Lm(r) => {
                        let cfg = crate::lm::model_config(r);
                        if cfg.validate().is_ok() {
                            let _ = crate::memory::check_lm(r, &cfg);
                        }
                    }
                    Recipe::Mirror(r) => {
                        let cfg = crate::mirror::model_config(r);
                        if cfg.validate().is_ok() {
                            let _ = crate::memory::check_mirror(r, &cfg);
                        }
                    }
                }
            }
        }

        /// Any text as a recipe file is parsed or refused.
        #[test]
        fn any_recipe_file_is_parsed_or_refused(text in "(\\PC|\n){0,300}", lines in proptest::collection::vec(0usize..40, 0..4)) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("r.toml");
            std::fs::write(&p, &text).unwrap();
            let _ = load_recipe(p.to_str().unwrap(), &[]);
            // a real recipe with lines dropped
            let src = BUILTIN[0].1;
            let kept: String = src
                .lines()
                .enumerate()
                .filter(|(i, _)| !lines.contains(i))
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            std::fs::write(&p, kept).unwrap();
            let _ = load_recipe(p.to_str().unwrap(), &[]);
        }
    }

    #[test]
    fn samples_default_to_ten_summaries() {
        let Recipe::Lm(r) = load_recipe("notebook-char", &[]).unwrap().recipe else {
            panic!()
        };
        assert_eq!(r.train.samples_every(), 1000);
        let s = Recipe::Lm(r).schedule();
        assert_eq!((s.steps, s.summary, s.samples_every), (7001, 100, 1000));
    }
}
