//! The arguments of every subcommand but `mirror`'s own (`mirror_cmd.rs`),
//! and the groups they share (data, device, training).

use std::path::PathBuf;

use clap::Args;

use clap::builder::{RangedU64ValueParser, TypedValueParser};

use crate::device::DeviceChoice;
use crate::progress::LogMode;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Recipe to measure; repeat the flag for several (`-r notebook-char -r
    /// mirror`; language-model or mirror recipes; a mirror line has training
    /// speed only)
    #[arg(long, short, default_value = "notebook-char")]
    pub recipe: Vec<String>,
    /// Steps timed
    #[arg(long, default_value_t = 300, value_parser = steps_value())]
    pub steps: u64,
    /// Steps run before timing starts (at least 1: the clock starts after one)
    #[arg(long, default_value_t = 20, value_parser = steps_value())]
    pub warmup: u64,
    /// Override a recipe value (as for `train`)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = set_value)]
    pub set: Vec<String>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Where the corpus comes from.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Corpus: a text8-form zip or text file, or an http(s) URL [default: datasets/text8.zip,
    /// downloaded from mattmahoney.net when missing]
    #[arg(long, value_name = "FILE|URL")]
    pub data: Option<std::ffi::OsString>,
    /// Folder where downloads land and text8.zip is looked for
    #[arg(
        long,
        value_name = "DIR",
        default_value = "datasets",
        env = "CHARLSTM_DATASETS"
    )]
    pub datasets: PathBuf,
}

/// Backend and threads.
#[derive(Debug, Args, Clone)]
pub struct DeviceArgs {
    /// Backend to run on (only those compiled in are available)
    #[arg(long, value_enum, default_value = "auto", env = "CHARLSTM_DEVICE")]
    pub device: DeviceChoice,
    /// CPU threads for the CPU backends [default: all cores]
    #[arg(long, value_name = "N", value_parser = threads_value)]
    pub threads: Option<usize>,
}

/// Arguments of `train` and `mirror train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Built-in recipe name (see `charlstm recipes`) or path to a recipe .toml
    /// [default: notebook-char; mirror for `mirror train`]
    #[arg(long, short, conflicts_with = "resume")]
    pub recipe: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Run directory to create [default: runs/<recipe>-<n>, the first unused n]
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub run: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (same batches, optimiser state,
    /// schedule and random numbers); --steps may extend it
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Training steps (overrides the recipe's train.steps)
    #[arg(long, value_name = "N", value_parser = steps_value())]
    pub steps: Option<u64>,
    /// Steps between summaries: log, validation, checkpoint, plots (train.summary)
    #[arg(long, value_name = "N", value_parser = steps_value())]
    pub summary: Option<u64>,
    /// Override a recipe value, e.g. --set model.d_hidden=128 --set train.seed=3
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = set_value)]
    pub set: Vec<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto")]
    pub log: LogMode,
    /// Print only the final result line (and errors)
    #[arg(long, short, conflicts_with = "log")]
    pub quiet: bool,
    /// Do not generate the periodic samples
    #[arg(long)]
    pub no_samples: bool,
    /// Also write every step's training loss to FILE, one per line (costs a device read per step)
    #[arg(long, value_name = "FILE")]
    pub loss_trace: Option<PathBuf>,
    /// Replace the --loss-trace FILE if it exists (never a link, a device or an input)
    #[arg(long, requires = "loss_trace")]
    pub force: bool,
    /// Parent folder of automatically named runs
    #[arg(
        long,
        value_name = "DIR",
        default_value = "runs",
        env = "CHARLSTM_RUNS",
        conflicts_with = "resume"
    )]
    pub runs: PathBuf,
}

/// The environment variables that stand for flags (`env = ...` above).
pub const FLAG_VARIABLES: [&str; 3] = ["CHARLSTM_DATASETS", "CHARLSTM_DEVICE", "CHARLSTM_RUNS"];

impl TrainArgs {
    /// `--set`, then `--steps` and `--summary`, as recipe overrides: the
    /// flags win over a `--set` of the same key, as their help says.
    pub fn overrides(&self) -> Vec<String> {
        let mut o = self.set.clone();
        if let Some(s) = self.steps {
            o.push(format!("train.steps={s}"));
        }
        if let Some(s) = self.summary {
            o.push(format!("train.summary={s}"));
        }
        o
    }
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Run directory to sample from
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Text to start from (letters and spaces; upper-case is lowered)
    /// [default: a random character, a random bigram for a bigram model,
    /// printed before the --length generated]
    #[arg(long, short, conflicts_with = "prime_file", value_parser = prime_value)]
    pub prime: Option<String>,
    /// Start from the text of FILE (any UTF-8 text, put in text8 form; at most 1 MiB)
    #[arg(long, value_name = "FILE")]
    pub prime_file: Option<PathBuf>,
    /// Characters to generate in each sample (--count samples with their
    /// primes: at most 2^28 - 2 characters in all)
    #[arg(long, short, default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=(trainer::sample::MAX_SAMPLE_CHARS - trainer::sample::START_CHARS) as u64).map(|v| v as usize))]
    pub length: usize,
    /// Softmax temperature (1: the model's distribution; lower: safer; 0: always the most likely)
    #[arg(long, short, default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = non_negative_value)]
    pub temperature: f64,
    /// Always the most likely character (the same as --temperature 0)
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub greedy: bool,
    /// The most likely continuation that a beam of N hypotheses finds (beam
    /// search; 1: greedy), printed when complete (a progress bar on a
    /// terminal meanwhile), with its log-probability on stderr
    #[arg(long, value_name = "N", value_parser = beam_value(),
          conflicts_with_all = ["temperature", "top_k", "top_p", "greedy", "count"])]
    pub beam: Option<usize>,
    /// Draw only among the K most likely characters (1: greedy)
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=729).map(|v| v as usize))]
    pub top_k: Option<usize>,
    /// Draw only among the smallest set of most likely characters whose probability reaches P (nucleus sampling), 0 < P <= 1
    #[arg(long, value_name = "P", allow_negative_numbers = true, value_parser = top_p_value)]
    pub top_p: Option<f64>,
    /// Random seed
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of samples
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1 << 20).map(|v| v as usize))]
    pub count: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory of the model
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Part of the corpus to evaluate: all of it, or the standard split's
    /// train (first 90%), valid (next 5%) or test (last 5%)
    #[arg(long, default_value = "all", value_parser = part_value())]
    pub part: text8::Part,
    /// Evaluate at most the first N characters of that part (at least 2:
    /// one to read, one to predict; 3 for a bigram model, which reads two)
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(2..=text8::corpus::MAX_CORPUS_CHARS).map(|v| v as usize))]
    pub limit: Option<usize>,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Segments of the text evaluated side by side (1: one stream, character by
    /// character, as the notebook validates); each is warmed on --burn-in
    /// characters before it, so the result equals one stream's
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096).map(|v| v as usize))]
    pub streams: usize,
    /// Characters read before each segment but the first, not scored
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1 << 20).map(|v| v as usize))]
    pub burn_in: usize,
    /// Also evaluate dynamically (Krause et al.): the model learns from each
    /// segment after scoring it; reported next to the static figure
    #[arg(long)]
    pub dynamic: bool,
    /// Characters per dynamic update [default: the run's recipe's
    /// `dynamic.segment`, else 50]
    #[arg(long, requires = "dynamic", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=100_000).map(|v| v as usize))]
    pub dynamic_segment: Option<usize>,
    /// Update rule: `sgd` (one rate for every weight) or `rms` (Krause et
    /// al.'s: each weight's step scaled by its gradient's root mean square on
    /// training text, read from the corpus the run was trained on) [default:
    /// the recipe's, else sgd]
    #[arg(long, requires = "dynamic", value_name = "RULE", value_parser = dynamic_rule_value())]
    pub dynamic_rule: Option<trainer::recipe::DynamicRule>,
    /// Learning rate of the dynamic updates [default: the recipe's for its
    /// rule, else 0.2 with `sgd` and 0.0005 with `rms`]
    #[arg(long, requires = "dynamic", value_name = "LR", allow_negative_numbers = true,
          value_parser = dynamic_lr_value)]
    pub dynamic_lr: Option<f64>,
    /// Pull towards the trained weights per dynamic update, 0 to 1 [default:
    /// the recipe's for its rule, else 0.001 with `sgd` and 0.002 with `rms`]
    #[arg(long, requires = "dynamic", value_name = "D", value_parser = unit_interval_value)]
    pub dynamic_decay: Option<f64>,
    /// Training characters the `rms` rule takes its statistics from
    /// (refused with `sgd`, which takes none) [default: the recipe's, else
    /// 20000]
    #[arg(long, requires = "dynamic", value_name = "N",
          value_parser = clap::value_parser!(u64).range(2..=100_000_000).map(|v| v as usize))]
    pub dynamic_stats: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// A recipe override: `KEY=VALUE` with a key (the value is checked with the
/// recipe, where its type is known).
fn set_value(s: &str) -> std::result::Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE (for example train.steps=2000)"
        )),
    }
}

/// A prime: characters the model knows (as [`trainer::sample::prime_ids`] reads them).
fn prime_value(s: &str) -> std::result::Result<String, String> {
    match trainer::sample::prime_ids(s) {
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(e.to_string().trim_start_matches("--prime: ").to_string()),
    }
}

/// A flag combination refused after parsing (one flag's value rules out
/// another's): reported as clap's usage errors are, with status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A dynamic learning rate: 0 to 100 (the recipes' are 0.0005 to 0.2; a
/// larger one only drives the weights to infinity).
fn dynamic_lr_value(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        // `-0` is 0, not printed as -0
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v + 0.0),
        _ => Err(format!("{s:?} is not a number from 0 to 100")),
    }
}

/// A number from 0 to 1.
pub fn unit_interval_value(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

/// A probability mass for nucleus sampling: above 0, at most 1.
fn top_p_value(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if trainer::sample::top_p_in_range(v) => Ok(v),
        _ => Err(format!("{s:?} is not a number above 0 and at most 1")),
    }
}

/// A thread count from 1 to [`max_threads`](crate::setup::max_threads).
fn threads_value(s: &str) -> std::result::Result<usize, String> {
    let most = crate::setup::max_threads();
    match s.parse::<usize>() {
        Ok(n) if (1..=most).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a thread count from 1 to {most} (this machine has {} cores; more \
             threads only wait on each other)",
            crate::setup::cores()
        )),
    }
}

/// A finite number >= 0.
fn non_negative_value(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// UTF-8 text file to normalise
    pub input: PathBuf,
    /// Where to write the text8-form result (written atomically)
    pub output: PathBuf,
    /// Replace OUTPUT if it exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args)]
pub struct RecipesArgs {
    /// Print this recipe's TOML
    #[arg(value_name = "NAME")]
    pub show: Option<String>,
}

/// Step counts: at least 1 and at most what a recipe (TOML, 64-bit signed
/// integers) can hold, so that `--steps 18446744073709551615` is refused by
/// name here rather than as a recipe value later.
fn steps_value() -> RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=i64::MAX as u64)
}

/// Beam widths: 1 (greedy) to 64 (wider beams cost more than they find).
pub fn beam_value() -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u64).range(1..=64).map(|v| v as usize)
}

/// `--part`: the names of [`text8::Part`].
fn dynamic_rule_value() -> impl TypedValueParser<Value = trainer::recipe::DynamicRule> {
    use trainer::recipe::DynamicRule;
    let rules = [DynamicRule::Sgd, DynamicRule::Rms];
    clap::builder::PossibleValuesParser::new(rules.map(|r| r.name())).map(move |s| {
        *rules
            .iter()
            .find(|r| r.name() == s)
            .expect("one of the possible values")
    })
}

fn part_value() -> impl TypedValueParser<Value = text8::Part> {
    clap::builder::PossibleValuesParser::new(text8::Part::ALL.map(|p| p.name())).map(|s| {
        s.parse::<text8::Part>()
            .expect("one of the possible values")
    })
}
