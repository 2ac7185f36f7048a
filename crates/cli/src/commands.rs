//! The language-model commands besides training: sample, eval, prepare,
//! fetch, recipes, bench.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::args::{BenchArgs, EvalArgs, FetchArgs, PrepareArgs, RecipesArgs, SampleArgs};
use crate::progress;
use crate::setup::{read_corpus, resolve_data, setup_device, tune_allocator, with_overrides};

/// `charlstm fetch`: prints where the corpus is (downloading it first if
/// needed), once it reads as one (a local file is checked as a download is).
pub fn fetch(a: FetchArgs) -> Result<ExitCode> {
    let path = resolve_data(&a.data, None)?;
    read_corpus(&path)?;
    outln!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn bench(a: BenchArgs) -> Result<ExitCode> {
    let (device, device_name) = setup_device(&a.device)?;
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    // every recipe and override checked before any is timed
    let recipes = a
        .recipe
        .iter()
        .map(|r| with_overrides(&a.set, |o| trainer::load_recipe(r, o)))
        .collect::<Result<Vec<_>, _>>()?;
    let path = resolve_data(&a.data, None)?;
    let corpus = read_corpus(&path)?;
    let scratch = std::env::temp_dir().join(format!("charlstm-bench-{}", std::process::id()));
    for loaded in &recipes {
        tune_allocator(loaded);
        let bar = progress::count_bar(&format!("bench {}", loaded.name), "steps");
        let stepped = |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
        };
        let setup = trainer::bench::BenchSetup {
            corpus: &corpus,
            device: device.clone(),
            device_name,
            threads: trainer::threads(), // what --threads set, or every core
            warmup: a.warmup,
            steps: a.steps,
            scratch: &scratch,
            stepped: &stepped,
        };
        let result = trainer::bench::bench_recipe(loaded, &setup);
        bar.finish_and_clear();
        let _ = std::fs::remove_dir_all(&scratch);
        outln!("{}", result?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sample(a: SampleArgs) -> Result<ExitCode> {
    let prime = match &a.prime_file {
        Some(p) => {
            let text = trainer::fsutil::read_text(p, 1 << 20)
                .with_context(|| format!("--prime-file {}", p.display()))?;
            Some(text8::normalize(&text).trim_start().to_string())
        }
        None => a.prime.clone(),
    };
    let (device, _) = setup_device(&a.device)?;
    let (model, kind, _) = trainer::lm::load_lm(&a.run, &device)?;
    if let Some(beam) = a.beam {
        let bar = progress::count_bar("searching", "characters");
        bar.set_length(a.length as u64);
        let found = trainer::beam::most_likely(
            &model,
            kind,
            prime.as_deref(),
            (a.length, beam),
            &device,
            &mut |done| bar.set_position(done as u64),
        )?;
        bar.finish_and_clear();
        outln!("{}", found.text);
        // `+ 0.0`: a certain text (or none) is 0 bits, not -0
        let bits = -found.log_prob / std::f64::consts::LN_2 / a.length.max(1) as f64 + 0.0;
        errln!(
            "log-probability {:.4} nats ({bits:.4} bits per character)",
            found.log_prob
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rng = tokenizer::rng::Rng::new(a.seed);
    let opts = trainer::sample::SampleOptions {
        length: a.length,
        temperature: if a.greedy { 0.0 } else { a.temperature },
        prime,
        count: a.count,
        truncation: trainer::sample::Truncation {
            top_k: a.top_k,
            top_p: a.top_p,
        },
    };
    if a.count == 1 {
        // one text is printed as it is generated
        trainer::sample::generate_streaming(&model, kind, &opts, &mut rng, &device, &mut |t| {
            out!("{t}")
        })?;
        outln!();
        return Ok(ExitCode::SUCCESS);
    }
    // the texts come at the end: a bar meanwhile
    let bar = progress::count_bar("sampling", "characters");
    bar.set_length((a.count * a.length) as u64);
    let drawn = |n: usize| bar.inc(n as u64);
    let texts = trainer::sample::generate_counted(&model, kind, &opts, &mut rng, &device, &drawn)?;
    bar.finish_and_clear();
    for t in texts {
        outln!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The dynamic evaluation's settings: the flags', else the run's recipe's,
/// else its rule's own; checked before any text is read.
fn dynamic_settings(a: &EvalArgs, recipe: &serde_json::Value) -> Result<trainer::dynamic::Dynamic> {
    let recipe = trainer::dynamic::Dynamic::of_recipe(recipe)?;
    let rule = a.dynamic_rule.unwrap_or(recipe.rule);
    if rule == trainer::recipe::DynamicRule::Sgd && a.dynamic_stats.is_some() {
        return Err(crate::args::UsageError(
            "--dynamic-stats: the sgd rule takes no statistics (they are for --dynamic-rule rms)"
                .into(),
        )
        .into());
    }
    // the recipe's rate and pull are for its rule; another rule's own otherwise
    let tuned = if rule == recipe.rule {
        recipe
    } else {
        trainer::dynamic::Dynamic::for_rule(rule)
    };
    let cfg = trainer::dynamic::Dynamic {
        segment: a.dynamic_segment.unwrap_or(recipe.segment),
        rule,
        learning_rate: a.dynamic_lr.unwrap_or(tuned.learning_rate),
        decay: a.dynamic_decay.unwrap_or(tuned.decay),
        // the sgd rule reads no statistics: none reported either
        stats: match rule {
            trainer::recipe::DynamicRule::Sgd => 0,
            trainer::recipe::DynamicRule::Rms => a.dynamic_stats.unwrap_or(recipe.stats),
        },
        ..recipe
    };
    Ok(cfg)
}

/// A note that `--part part` of `corpus` is text the run at `run` was
/// trained on, where it is: the run's own corpus (its fingerprint), and a
/// part its split did not hold out (the standard split holds out its valid
/// and test parts; the notebook's split only its first characters, which
/// every part but those two holds a little of, and all of a `--limit` that
/// ends within them). Another text gets none, whatever its part.
fn trained_text_note(
    run: &Path,
    (config, data): (&trainer::RunConfig, &trainer::recipe::LmDataSpec),
    corpus: &text8::Corpus,
    (part, limit): (text8::Part, Option<usize>),
) -> Option<String> {
    if !config.trained_on(&corpus.fingerprint(), corpus.len()) {
        return None;
    }
    let from_start = matches!(part, text8::Part::All | text8::Part::Train);
    if data.split == trainer::recipe::SplitSpec::Notebook
        && from_start
        && limit.is_some_and(|l| l <= data.valid_size)
    {
        return None;
    }
    let held_out = matches!(part, text8::Part::Valid | text8::Part::Test);
    let (run, part) = (run.display(), part.name());
    if data.split == trainer::recipe::SplitSpec::Standard {
        (!held_out).then(|| {
            format!(
                "note: {run} was trained on the first 90% of this text (the standard split), \
                 so --part {part} is text it trained on; --part valid and --part test are held out"
            )
        })
    } else {
        Some(format!(
            "note: {run} was trained on all of this text but its first {} characters (the \
             notebook's split), so --part {part} is text it trained on; train with --set \
             data.split=standard to hold out a validation and a test part",
            data.valid_size
        ))
    }
}

pub fn eval(a: EvalArgs) -> Result<ExitCode> {
    let (device, _) = setup_device(&a.device)?;
    // loaded once: where it will learn when evaluated dynamically
    let learning = a.dynamic.then(|| device.clone().autodiff());
    let (model, kind, config) = trainer::lm::load_lm(&a.run, learning.as_ref().unwrap_or(&device))?;
    let dynamic = a
        .dynamic
        .then(|| dynamic_settings(&a, &config.recipe))
        .transpose()?;
    let fixed = learning
        .is_some()
        .then(|| burn::module::Module::valid(&model));
    let path = resolve_data(&a.data, None)?;
    let corpus = read_corpus(&path)?;
    let part = a.part;
    // the run's recipe as training read it (defaults filled in), from the
    // config read above
    let run = trainer::RunDir::open(&a.run)?;
    if let trainer::Recipe::Lm(r) = trainer::session::recipe_of(&run, &config, &[])?.recipe
        && let Some(note) = trained_text_note(&a.run, (&config, &r.data), &corpus, (part, a.limit))
    {
        errln!("{note}");
    }
    let ids = part
        .of(&corpus.ids)
        .map_err(|e| corpus.named(e))
        .context("--part")?;
    let ids = &ids[..a.limit.unwrap_or(ids.len()).min(ids.len())];
    // a text too short to predict from says which file, part and limit
    let what = || {
        let limit = a
            .limit
            .map(|n| format!(", --limit {n}"))
            .unwrap_or_default();
        format!("{}, --part {}{limit}", path.display(), part.name())
    };
    let bar = progress::bytes_bar(Some(ids.len() as u64), "evaluating");
    let plan = trainer::eval::Streams {
        streams: a.streams,
        burn_in: a.burn_in,
    };
    let report = trainer::eval::evaluate_text(
        fixed.as_ref().unwrap_or(&model),
        kind,
        ids,
        plan,
        &device,
        &mut |done, _| bar.set_position(done as u64),
    )
    .with_context(what)?;
    bar.finish_and_clear();
    let dynamic = if let (Some(learning), Some(cfg)) = (learning, dynamic) {
        let training = match cfg.rule {
            trainer::recipe::DynamicRule::Rms => Some(
                trainer::lm::training_text(&a.run, &corpus)
                    .map_err(|e| anyhow::anyhow!("{e} (`--dynamic-rule sgd` needs none)"))?,
            ),
            trainer::recipe::DynamicRule::Sgd => None,
        };
        let bar = progress::bytes_bar(Some(ids.len() as u64), "evaluating dynamically");
        let report = trainer::dynamic::evaluate_dynamic(
            model,
            kind,
            ids,
            training.as_deref().unwrap_or_default(),
            cfg,
            &learning,
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64)
            },
        )?;
        bar.finish_and_clear();
        Some((cfg, report))
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::json!({"data": path.to_string_lossy(), "part": part.name(), "report": report});
        if let Some((cfg, r)) = &dynamic {
            v["dynamic"] = serde_json::json!({"settings": cfg, "report": r});
        }
        outln!("{v}");
    } else {
        outln!(
            "{}: {} character{} predicted; cross-entropy {:.4} nats, perplexity {:.3}, {:.4} bits per character",
            path.display(),
            report.predicted,
            if report.predicted == 1 { "" } else { "s" },
            report.cross_entropy,
            report.perplexity,
            report.bits_per_char
        );
        if let Some((cfg, r)) = &dynamic {
            outln!(
                "dynamic ({}, segments of {}, learning rate {}, decay {}): cross-entropy {:.4} \
                 nats, perplexity {:.3}, {:.4} bits per character",
                cfg.rule.name(),
                cfg.segment,
                setting(cfg.learning_rate),
                setting(cfg.decay),
                r.cross_entropy,
                r.perplexity,
                r.bits_per_char
            );
        }
    }
    if let Some((cfg, _)) = &dynamic
        && cfg.segment >= report.predicted
    {
        errln!(
            "note: segments of {} characters, and {} predicted: the model was never updated, \
             the dynamic figure is the static one (a shorter --dynamic-segment adapts)",
            cfg.segment,
            report.predicted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A setting as a person reads it: `1e-320`, not 320 zeros.
fn setting(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

pub fn prepare(a: PrepareArgs) -> Result<ExitCode> {
    // `-` is no stream here: the input is measured for its bar and the
    // output replaced whole, by rename
    for (name, path) in [("INPUT", &a.input), ("OUTPUT", &a.output)] {
        if path.as_os_str() == "-" {
            return Err(crate::args::UsageError(format!(
                "{name} -: prepare reads and writes files, not standard input or output; \
                 give a file name (./- for a file named -)"
            ))
            .into());
        }
    }
    // the input must be a file that ends (not a FIFO or /dev/zero)
    match std::fs::metadata(&a.input) {
        Ok(m) if !m.is_file() => bail!(
            "{}: not a regular file; save the text to a file first",
            a.input.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file", a.input.display())
        }
        _ => {}
    }
    if text8::corpus::named_zip(&a.output) {
        // (normalize_file refuses it too; here it is the argument's fault)
        return Err(crate::args::UsageError(format!(
            "OUTPUT {}: named .zip, but prepare writes plain text: name it .txt",
            a.output.display()
        ))
        .into());
    }
    trainer::fsutil::check_output(&a.output, a.force, &[&a.input])?;
    let total = std::fs::metadata(&a.input).map(|m| m.len()).ok();
    let bar = progress::bytes_bar(total, "normalising");
    let stats = text8::normalize_file(&a.input, &a.output, a.force, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if stats.chars_out == 0 {
        errln!(
            "note: {} has no letters or digits: {} is empty",
            a.input.display(),
            a.output.display()
        );
    }
    if let (n @ 1.., Some(first)) = stats.letters_dropped {
        errln!(
            "note: {n} letter{} outside a-z (the first: {first:?}) became spaces, as Text8's \
             rules make them; transliterate the text first to keep them",
            if n == 1 { "" } else { "s" }
        );
    }
    outln!(
        "{}: {} bytes in, {} characters of text8 form out",
        a.output.display(),
        stats.bytes_in,
        stats.chars_out
    );
    Ok(ExitCode::SUCCESS)
}

pub fn recipes(a: RecipesArgs) -> Result<ExitCode> {
    match a.show {
        Some(name) => {
            // only a recipe is printed: a path is read and checked as one first
            trainer::load_recipe(&name, &[])?;
            let (_, src) = trainer::recipe::recipe_source(&name)?;
            out!("{src}");
        }
        None => {
            for (name, desc) in trainer::recipe::list_builtin() {
                outln!("{name:<18} {desc}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
