//! `charlstm`: character-level LSTM language models on Text8, and a
//! sequence-to-sequence LSTM that mirrors words.
//!
//! This crate only parses arguments, picks the device (`device.rs`), draws
//! progress (`progress.rs`) and calls the library crates.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod device;
mod mirror_cmd;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use device::DeviceChoice;
use progress::{LogMode, Progress};
use text8::{DataSource, FetchEvent};
use trainer::lm::{self, RunTarget, TrainOptions};
use trainer::recipe::Recipe;

/// Character-level LSTM language models on Text8 (the Udacity notebook,
/// done properly), and an LSTM that mirrors every word of a sentence.
#[derive(Debug, Parser)]
#[command(name = "charlstm", version, propagate_version = true)]
#[command(
    after_help = "Start with `charlstm train` (downloads Text8 and trains the notebook's model), \
                        then `charlstm sample --run runs/notebook-char-1`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a language model from a recipe (or resume a run)
    Train(TrainArgs),
    /// Generate text from a trained run
    Sample(SampleArgs),
    /// Cross-entropy, perplexity and bits per character of a run on a text
    Eval(EvalArgs),
    /// Turn any UTF-8 text into text8 form (lower-case, digits spelled, single spaces)
    Prepare(PrepareArgs),
    /// Download Text8 (or another URL) into the datasets folder, without training
    Fetch(FetchArgs),
    /// List the built-in recipes, or print one
    Recipes(RecipesArgs),
    /// Problem 3: mirror every word of a sentence (`mirror train` trains a model)
    Mirror(mirror_cmd::MirrorArgs),
    /// Measure training, validation and sampling speed of recipes (one JSON line each)
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Recipes to measure (language-model recipes)
    #[arg(long, short, default_value = "notebook-char")]
    recipe: Vec<String>,
    /// Steps timed
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Steps run before timing starts
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Override a recipe value (as for `train`)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Where the corpus comes from.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Corpus: a text8-form zip or text file, or an http(s) URL [default: datasets/text8.zip,
    /// downloaded from mattmahoney.net when missing]
    #[arg(long, value_name = "FILE|URL")]
    pub data: Option<String>,
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
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Arguments of `train` and `mirror train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Built-in recipe name (see `charlstm recipes`) or path to a recipe .toml
    /// [default: notebook-char; mirror for `mirror train`]
    #[arg(long, short, conflicts_with = "resume")]
    recipe: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// Run directory to create [default: runs/<recipe>-<n>, the first unused n]
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    run: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (same batches, optimiser state,
    /// schedule and random numbers); --steps may extend it
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Training steps (overrides the recipe's train.steps)
    #[arg(long, value_name = "N")]
    steps: Option<u64>,
    /// Steps between summaries: log, validation, checkpoint, plots (train.summary)
    #[arg(long, value_name = "N")]
    summary: Option<u64>,
    /// Override a recipe value, e.g. --set model.d_hidden=128 --set train.seed=3
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    device: DeviceArgs,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto")]
    log: LogMode,
    /// Print only the final result line (and errors)
    #[arg(long, short, conflicts_with = "log")]
    quiet: bool,
    /// Do not generate the periodic samples
    #[arg(long)]
    no_samples: bool,
    /// Also write every step's training loss to FILE, one per line (costs a device read per step)
    #[arg(long, value_name = "FILE")]
    loss_trace: Option<PathBuf>,
    /// Parent folder of automatically named runs
    #[arg(
        long,
        value_name = "DIR",
        default_value = "runs",
        env = "CHARLSTM_RUNS"
    )]
    runs: PathBuf,
}

impl TrainArgs {
    /// `--steps`, `--summary` and `--set` as recipe overrides.
    pub fn overrides(&self) -> Vec<String> {
        let mut o = vec![];
        if let Some(s) = self.steps {
            o.push(format!("train.steps={s}"));
        }
        if let Some(s) = self.summary {
            o.push(format!("train.summary={s}"));
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

/// Installs the Ctrl-C handler: the first press asks training to stop after
/// the current step (with a checkpoint), the second exits at once.
pub fn install_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without waiting for the checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)"
        );
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

#[derive(Debug, Args)]
struct SampleArgs {
    /// Run directory to sample from
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Text to start from (letters and spaces; upper-case is lowered)
    #[arg(long, short)]
    prime: Option<String>,
    /// Characters to generate
    #[arg(long, short, default_value_t = 200)]
    length: usize,
    /// Softmax temperature (1: the model's distribution; lower: safer; 0: always the most likely)
    #[arg(long, short, default_value_t = 1.0)]
    temperature: f64,
    /// Random seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples
    #[arg(long, short = 'n', default_value_t = 1)]
    count: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Which part of the corpus to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// The whole file
    All,
    /// The standard split's training part (first 90%)
    Train,
    /// The standard split's validation part (next 5%)
    Valid,
    /// The standard split's test part (last 5%)
    Test,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Run directory of the model
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Part of the corpus to evaluate
    #[arg(long, value_enum, default_value = "all")]
    part: Part,
    /// Evaluate at most the first N characters of that part
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print the result as one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Debug, Args)]
struct PrepareArgs {
    /// UTF-8 text file to normalise
    input: PathBuf,
    /// Where to write the text8-form result (written atomically)
    output: PathBuf,
    /// Replace OUTPUT if it exists
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct FetchArgs {
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, Args)]
struct RecipesArgs {
    /// Print this recipe's TOML
    #[arg(value_name = "NAME")]
    show: Option<String>,
}

/// Bytes of a step's largest buffer (the gate pre-activations of every
/// unrolled step) from which [`tune_allocator`] applies: `large`'s are 26 MB,
/// the notebook models' 0.6 MB.
const LARGE_STEP_BUFFER: usize = 8 << 20;

/// For models whose step buffers are large, keeps glibc's allocator from
/// handing them back to the kernel after every use and faulting them in
/// again at the next: allocations up to 32 MiB come from the heap, and freed
/// heap memory is kept for reuse. `large` on two threads trains about 3%
/// faster for ~40 MiB more at the peak; the small models run slower with
/// it (~5% on one thread), so they keep the defaults (docs/PERFORMANCE.md).
fn tune_allocator(loaded: &trainer::LoadedRecipe) {
    let Recipe::Lm(r) = &loaded.recipe else {
        return;
    };
    let gates = r.data.batch_size * r.data.num_unrollings * 4 * r.model.d_hidden;
    if gates * std::mem::size_of::<f32>() >= LARGE_STEP_BUFFER {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets allocator parameters (under the allocator's lock).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train(a),
        Command::Sample(a) => sample(a),
        Command::Eval(a) => eval(a),
        Command::Prepare(a) => prepare(a),
        Command::Fetch(a) => {
            let path = resolve_data(&a.data, None)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Recipes(a) => recipes(a),
        Command::Mirror(a) => mirror_cmd::run(a),
        Command::Bench(a) => bench(a),
    }
}

/// Applies `--threads` (before any backend thread pool starts) and picks the device.
pub fn setup_device(d: &DeviceArgs) -> Result<(burn::tensor::Device, &'static str)> {
    let n = match d.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    // SAFETY: called once, before any other thread of this process exists.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    trainer::set_threads(n);
    device::select(d.device)
}

/// Finds or downloads the corpus, showing a download bar.
pub fn resolve_data(data: &DataArgs, fallback: Option<&str>) -> Result<PathBuf> {
    let spec = data.data.as_deref().or(fallback);
    let source = DataSource::parse(spec, &data.datasets);
    let mut bar = None;
    let path = text8::resolve(&source, &mut |e| match e {
        FetchEvent::Started { url, total } => {
            eprintln!("downloading {url}");
            bar = Some(progress::bytes_bar(total, "text8.zip"));
        }
        FetchEvent::Progress(n) => {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
        FetchEvent::Done(p) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!("saved {}", p.display());
        }
        FetchEvent::Found(_) => {}
    })
    .with_context(|| match &source {
        DataSource::Default { .. } => {
            "getting the Text8 corpus (give a local copy with --data FILE)".to_string()
        }
        DataSource::Url { url, .. } => format!("downloading {url}"),
        DataSource::Path(p) => format!("--data {}", p.display()),
    })?;
    Ok(path)
}

fn read_corpus(path: &Path) -> Result<text8::Corpus> {
    let c = text8::read_corpus(path)?;
    Ok(c)
}

fn train(a: TrainArgs) -> Result<ExitCode> {
    let (device, device_name) = setup_device(&a.device)?;
    let overrides = a.overrides();
    let (loaded, target, data_fallback) = match &a.resume {
        Some(dir) => {
            let (loaded, config) = lm::run_recipe(dir, &overrides)?;
            (
                loaded,
                RunTarget::Resume(dir.clone()),
                Some(config.data_source),
            )
        }
        None => (
            trainer::load_recipe(a.recipe.as_deref().unwrap_or("notebook-char"), &overrides)?,
            RunTarget::New {
                path: a.run.clone(),
                runs_root: a.runs.clone(),
            },
            None,
        ),
    };
    if let Recipe::Mirror(_) = loaded.recipe {
        bail!(
            "recipe {} trains the word mirror: use `charlstm mirror train --recipe {0}`",
            loaded.name
        );
    }
    tune_allocator(&loaded);
    let path = resolve_data(&a.data, data_fallback.as_deref())?;
    let corpus = read_corpus(&path)?;

    let stop = install_ctrl_c()?;
    let mut trace = match &a.loss_trace {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--loss-trace {}", p.display()))?,
        )),
        None => None,
    };
    let mut shown = Progress::new(a.log, a.quiet);
    let json = shown.mode() == LogMode::Json;
    let result = trainer::train_lm(
        &loaded,
        &corpus,
        &target,
        TrainOptions {
            device,
            device_name: device_name.to_string(),
            stop: Some(&stop),
            init: None,
            loss_trace: trace.is_some(),
            samples: !a.no_samples,
        },
        &mut |e| {
            if let (Some(t), lm::Event::Step { loss: Some(l), .. }) = (trace.as_mut(), e) {
                use std::io::Write;
                let _ = writeln!(t, "{l}");
            }
            shown.event(e);
        },
    );
    shown.finish();
    let report = result?;
    if json {
        println!("{}", serde_json::json!({"event": "done", "report": report}));
    } else {
        let verb = if report.interrupted {
            "stopped"
        } else {
            "done"
        };
        println!(
            "{verb}: {} steps, validation perplexity {:.2}, {:.1} s training ({:.0} chars/s); run: {}",
            report.steps,
            report.final_valid_ppl,
            report.train_seconds,
            report.chars_per_sec,
            report.run_dir.display()
        );
        if report.interrupted {
            println!(
                "continue with: charlstm train --resume {}",
                report.run_dir.display()
            );
        }
    }
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    let (device, device_name) = setup_device(&a.device)?;
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let path = resolve_data(&a.data, None)?;
    let corpus = read_corpus(&path)?;
    let scratch = std::env::temp_dir().join(format!("charlstm-bench-{}", std::process::id()));
    for r in &a.recipe {
        let loaded = trainer::load_recipe(r, &a.set)?;
        tune_allocator(&loaded);
        let result = trainer::bench::bench_lm(
            &loaded,
            &corpus,
            device.clone(),
            device_name,
            a.device.threads.unwrap_or(0),
            a.warmup,
            a.steps,
            &scratch,
        );
        let _ = std::fs::remove_dir_all(&scratch);
        println!("{}", serde_json::to_string(&result?)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn sample(a: SampleArgs) -> Result<ExitCode> {
    let (device, _) = setup_device(&a.device)?;
    let (model, kind, _) = lm::load_lm(&a.run, &device)?;
    let mut rng = tokenizer::rng::Rng::new(a.seed);
    let texts = trainer::sample::generate(
        &model,
        kind,
        &trainer::sample::SampleOptions {
            length: a.length,
            temperature: a.temperature,
            prime: a.prime.clone(),
            count: a.count,
        },
        &mut rng,
        &device,
    )?;
    for t in texts {
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(a: EvalArgs) -> Result<ExitCode> {
    let (device, _) = setup_device(&a.device)?;
    let (model, kind, _) = lm::load_lm(&a.run, &device)?;
    let path = resolve_data(&a.data, None)?;
    let corpus = read_corpus(&path)?;
    let ids: &[u8] = match a.part {
        Part::All => &corpus.ids,
        p => {
            let s = text8::Split::new(&corpus.ids, text8::SplitKind::Standard)?;
            match p {
                Part::Train => s.train,
                Part::Valid => s.valid,
                _ => s.test,
            }
        }
    };
    let ids = &ids[..a.limit.unwrap_or(ids.len()).min(ids.len())];
    let bar = progress::bytes_bar(Some(ids.len() as u64), "evaluating");
    let report = trainer::sample::evaluate_text(&model, kind, ids, &device, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"data": path, "part": format!("{:?}", a.part).to_lowercase(), "report": report})
        );
    } else {
        println!(
            "{}: {} characters predicted; cross-entropy {:.4} nats, perplexity {:.3}, {:.4} bits per character",
            path.display(),
            report.predicted,
            report.cross_entropy,
            report.perplexity,
            report.bits_per_char
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prepare(a: PrepareArgs) -> Result<ExitCode> {
    if a.output.exists() && !a.force {
        bail!(
            "{}: already exists (use --force to replace it)",
            a.output.display()
        );
    }
    let total = std::fs::metadata(&a.input).map(|m| m.len()).ok();
    let bar = progress::bytes_bar(total, "normalising");
    let stats = text8::normalize_file(&a.input, &a.output, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    println!(
        "{}: {} bytes in, {} characters of text8 form out",
        a.output.display(),
        stats.bytes_in,
        stats.chars_out
    );
    Ok(ExitCode::SUCCESS)
}

fn recipes(a: RecipesArgs) -> Result<ExitCode> {
    match a.show {
        Some(name) => {
            let (_, src) = trainer::recipe::recipe_source(&name)?;
            print!("{src}");
        }
        None => {
            for (name, desc) in trainer::recipe::list_builtin() {
                println!("{name:<18} {desc}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
