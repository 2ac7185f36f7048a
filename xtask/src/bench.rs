//! `cargo xtask bench`: speed of every recipe on every asked device, and the
//! same model in TensorFlow and PyTorch when their reference scripts are
//! installed, run alternately in one session and compared as ratios.
//!
//! ```text
//! cargo xtask bench [--data FILE] [--recipes a,b,large@f16] [--devices flex,ndarray,wgpu]
//!                   [--threads 1,2] [--steps N] [--repeats R] [--no-reference]
//!                   [--set KEY=VALUE]...
//! ```
//!
//! A recipe given as `NAME@PRECISION` (`large@bf16`, `large@f16`) trains
//! ours with `train.precision` set to it, the references as they are (they
//! have no such setting); the default rows are every recipe but `best`,
//! then `large@bf16` and `large@f16`, so that one command measures a CPU
//! kind's whole table. A row whose precision runs in f32 on this CPU (no
//! such instructions: ours' first line says so) is skipped with a note, as
//! it would repeat the f32 row.
//!
//! `--set` overrides a value of every recipe for ours only (e.g. `--set
//! train.steps=...`), and each of our lines records the overrides it ran
//! with.
//!
//! Prints one JSON line per measurement (ours: `"framework": "charlstm"`),
//! then one line per comparison with the medians and the ratio, and at the
//! end, on stderr, the comparisons as a markdown table (the form of
//! docs/PERFORMANCE.md's tables).
//! The references are looked for in `../shared/reference/` (scripts) and
//! `../refvenv/` (a Python with tensorflow-cpu and torch, see the README there);
//! `CHARLSTM_REFERENCE` and `CHARLSTM_REFVENV` override those paths.
//!
//! The references' lines name the CPU as ours do, less our kernels (not
//! theirs), and with the settings that cap their instruction sets where
//! any is set ([`REFERENCE_ISA_CAPS`]: with `CHARLSTM_KERNELS` for ours,
//! how one AVX-512 machine measures everything held to AVX2).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::{Value, json};

/// The precisions a row may ask for (`train.precision`'s values).
const PRECISIONS: [&str; 3] = ["f32", "bf16", "f16"];

/// The rows `cargo xtask bench` measures when `--recipes` is not given.
const DEFAULT_ROWS: [&str; 9] = [
    "notebook-char",
    "notebook-fused",
    "notebook-embed",
    "notebook-bigram",
    "notebook-dropout",
    "large",
    "mirror",
    "large@bf16",
    "large@f16",
];

/// One row of the table: a recipe, and the precision ours trains it in
/// where the row asks for one (`large@f16`).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    recipe: String,
    precision: Option<String>,
}

impl Row {
    fn parse(spec: &str) -> Result<Row, String> {
        let (recipe, precision) = match spec.split_once('@') {
            Some((r, p)) if PRECISIONS.contains(&p) => (r, Some(p.to_string())),
            Some((_, p)) => {
                return Err(format!(
                    "--recipes {spec}: unknown precision {p:?} (one of {})",
                    PRECISIONS.join(", ")
                ));
            }
            None => (spec, None),
        };
        if recipe.is_empty() {
            return Err(format!("--recipes: an empty recipe name in {spec:?}"));
        }
        Ok(Row {
            recipe: recipe.to_string(),
            precision,
        })
    }

    /// The row as given: `large`, `large@f16`.
    fn label(&self) -> String {
        match &self.precision {
            Some(p) => format!("{}@{p}", self.recipe),
            None => self.recipe.clone(),
        }
    }

    /// Our `--set` values: the common ones, then the row's precision.
    fn sets(&self, common: &[String]) -> Vec<String> {
        let mut sets = common.to_vec();
        if let Some(p) = &self.precision {
            sets.push(format!("train.precision={p}"));
        }
        sets
    }
}

struct Options {
    data: String,
    rows: Vec<Row>,
    devices: Vec<String>,
    threads: Vec<usize>,
    steps: u64,
    repeats: usize,
    reference: bool,
    /// Recipe overrides for ours (`--set`).
    set: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        data: "../shared/datasets/wikitext2-valid/text8.zip".into(),
        rows: DEFAULT_ROWS
            .iter()
            .map(|r| Row::parse(r))
            .collect::<Result<_, _>>()?,
        devices: vec!["flex".into()],
        threads: vec![1, 2],
        steps: 1000,
        repeats: 3,
        reference: true,
        set: vec![],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--data" => o.data = val()?,
            "--recipes" => {
                o.rows = val()?
                    .split(',')
                    .map(Row::parse)
                    .collect::<Result<_, _>>()?
            }
            "--devices" => o.devices = val()?.split(',').map(String::from).collect(),
            "--threads" => {
                o.threads = val()?
                    .split(',')
                    .map(|t| {
                        t.parse()
                            .map_err(|_| format!("--threads: bad number {t:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--steps" => {
                o.steps = val()?
                    .parse()
                    .map_err(|_| "--steps: bad number".to_string())?
            }
            "--repeats" => {
                o.repeats = val()?
                    .parse()
                    .map_err(|_| "--repeats: bad number".to_string())?
            }
            "--no-reference" => o.reference = false,
            "--set" => o.set.push(val()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.repeats == 0 || o.steps == 0 || o.threads.contains(&0) {
        return Err("--steps, --repeats and --threads must be at least 1".into());
    }
    Ok(o)
}

fn root() -> PathBuf {
    crate::root()
}

fn run_json(mut c: Command) -> Option<Value> {
    let out = c.stderr(std::process::Stdio::inherit()).output().ok()?;
    if !out.status.success() {
        eprintln!("xtask bench: {c:?} failed");
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
}

fn ours(
    bin: &Path,
    row: &Row,
    (device, threads): (&str, usize),
    steps: u64,
    o: &Options,
) -> Option<Value> {
    let mut c = Command::new(bin);
    c.current_dir(root()).args([
        "bench",
        "--recipe",
        &row.recipe,
        "--device",
        device,
        "--threads",
        &threads.to_string(),
        "--steps",
        &steps.to_string(),
        "--data",
        &o.data,
    ]);
    let sets = row.sets(&o.set);
    for s in &sets {
        c.args(["--set", s]);
    }
    let mut v = run_json(c)?;
    v["framework"] = json!("charlstm");
    if !sets.is_empty() {
        v["set"] = json!(sets);
    }
    Some(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn reference_paths() -> Option<(PathBuf, PathBuf)> {
    let scripts = std::env::var_os("CHARLSTM_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/reference"));
    let venv = std::env::var_os("CHARLSTM_REFVENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../refvenv"));
    let python = venv.join("bin/python");
    (scripts.join("seed_tf.py").exists() && python.exists()).then_some((scripts, python))
}

/// The environment settings that cap the references' instruction sets:
/// MKL's (PyTorch's products), oneDNN's (TensorFlow's and PyTorch's) and
/// PyTorch's own kernels'.
const REFERENCE_ISA_CAPS: [&str; 3] = [
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
];

/// Those of [`REFERENCE_ISA_CAPS`] set here, with their values.
fn reference_isa_caps() -> serde_json::Map<String, Value> {
    REFERENCE_ISA_CAPS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), json!(v))))
        .collect()
}

/// The CPU a reference ran on: ours' `cpu` (model, extensions) less the
/// kernels ours chose, which are not the reference's, and with `caps` on
/// its instruction sets where there are any.
fn reference_cpu(ours: &Value, caps: &serde_json::Map<String, Value>) -> Value {
    let mut cpu = ours.clone();
    if let Some(fields) = cpu.as_object_mut() {
        fields.remove("kernels");
        if !caps.is_empty() {
            fields.insert("isa_caps".into(), Value::Object(caps.clone()));
        }
    }
    cpu
}

/// Prints a reference's line `v` for `recipe` with the CPU it ran on;
/// returns its speed, where the line gives one.
fn report_reference(mut v: Value, recipe: &str, cpu: &Value) -> Option<f64> {
    v["recipe"] = json!(recipe);
    v["cpu"] = cpu.clone();
    println!("{v}");
    v["chars_per_second"].as_f64().filter(|x| x.is_finite())
}

/// A reference run: `script` with `args`, the JSON line it ends with.
fn reference(python: &Path, script: &Path, args: &[String]) -> Option<Value> {
    let mut c = Command::new(python);
    c.current_dir(root())
        .arg(script)
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3");
    run_json(c)
}

/// One repeat of a row: ours' and the references' chars/s, where each ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Repeat {
    ours: Option<f64>,
    tf: Option<f64>,
    torch: Option<f64>,
}

/// The larger of two speeds where either is known.
fn faster(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Repeat {
    /// Ours against the faster reference of this repeat.
    fn ratio(&self) -> Option<f64> {
        Some(self.ours? / faster(self.tf, self.torch)?)
    }
}

/// A row measured on one device at one thread count.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    label: String,
    device: String,
    threads: usize,
    repeats: Vec<Repeat>,
}

impl Measured {
    /// Medians of ours, TensorFlow and PyTorch (NaN where none ran).
    fn medians(&self) -> (f64, f64, f64) {
        let of =
            |f: fn(&Repeat) -> Option<f64>| median(self.repeats.iter().filter_map(f).collect());
        (of(|r| r.ours), of(|r| r.tf), of(|r| r.torch))
    }

    /// Ours' median against the faster reference's median.
    fn ratio(&self) -> f64 {
        let (m, t, p) = self.medians();
        let known = |x: f64| x.is_finite().then_some(x);
        faster(known(t), known(p)).map_or(f64::NAN, |best| m / best)
    }
}

/// Thousands of chars/s as the docs' tables write them (`612`, `7.4`), `-`
/// where none ran.
fn kilo(x: f64) -> String {
    match x / 1000.0 {
        k if !k.is_finite() => "-".into(),
        k if k >= 100.0 => format!("{k:.0}"),
        k => format!("{k:.1}"),
    }
}

/// A ratio with two decimals, `-` where there is none.
fn ratio_text(ratio: Option<f64>) -> String {
    ratio
        .filter(|v| v.is_finite())
        .map_or("-".into(), |v| format!("{v:.2}"))
}

/// The comparisons as a markdown table: medians in thousands of chars/s
/// (the mirror: predicted symbols/s), the ratio of the medians, and each
/// repeat's.
fn table(rows: &[Measured]) -> String {
    let mut out = String::from(
        "| recipe | threads | charlstm / TF / PyTorch (k/s) | ratio | per repeat |\n\
         |---|---:|---|---:|---|\n",
    );
    for r in rows {
        let (m, t, p) = r.medians();
        let name = if r.device == "flex" {
            r.label.clone()
        } else {
            format!("{} ({})", r.label, r.device)
        };
        let each: Vec<String> = r.repeats.iter().map(|x| ratio_text(x.ratio())).collect();
        out += &format!(
            "| {name} | {} | {} / {} / {} | {} | {} |\n",
            r.threads,
            kilo(m),
            kilo(t),
            kilo(p),
            ratio_text(Some(r.ratio())),
            each.join(", ")
        );
    }
    out
}

/// Where the references are and what caps their instruction sets.
struct References {
    scripts: PathBuf,
    python: PathBuf,
    caps: serde_json::Map<String, Value>,
}

impl References {
    /// One repeat of the references of `recipe` (none for a recipe they do
    /// not have); `cpu` is ours' line's.
    fn run(&self, recipe: &str, threads: usize, steps: u64, o: &Options, cpu: &Value) -> Repeat {
        let ref_cpu = reference_cpu(cpu, &self.caps);
        let (t, s) = (threads.to_string(), steps.to_string());
        let mut rep = Repeat::default();
        if let Some(variant) = recipe.strip_prefix("notebook-") {
            let common: Vec<String> = [
                "--data",
                &o.data,
                "--variant",
                variant,
                "--steps",
                &s,
                "--summary",
                "100000000",
                "--no-samples",
                "--threads",
                &t,
            ]
            .map(String::from)
            .to_vec();
            rep.tf = reference(&self.python, &self.scripts.join("seed_tf.py"), &common)
                .and_then(|v| report_reference(v, recipe, &ref_cpu));
            let mut a = common.clone();
            a.extend(["--impl".into(), "nnlstm".into()]);
            rep.torch = reference(&self.python, &self.scripts.join("seed_torch.py"), &a)
                .and_then(|v| report_reference(v, recipe, &ref_cpu));
        } else if let Some(script) = match recipe {
            "large" => Some("xtask/bench/torch_large.py"),
            "mirror" => Some("xtask/bench/torch_mirror.py"),
            _ => None,
        } {
            let a = ["--data", &o.data, "--steps", &s, "--threads", &t]
                .map(String::from)
                .to_vec();
            rep.torch = reference(&self.python, &root().join(script), &a)
                .and_then(|v| report_reference(v, recipe, &ref_cpu));
        }
        rep
    }
}

/// Measures `row` on `device` at `threads`, ours and (on the CPU) the
/// references alternately, `--repeats` times; prints every line and the
/// comparison. `None` where the row's precision runs in f32 here; a row
/// where ours failed is kept, with no speeds (the table shows `-`).
fn measure(
    bin: &Path,
    row: &Row,
    (device, threads): (&str, usize),
    refs: Option<&References>,
    o: &Options,
) -> Option<Measured> {
    // the large model and the mirror are slow: fewer steps
    let steps = if row.recipe == "large" || row.recipe == "mirror" {
        (o.steps / 25).max(10)
    } else {
        o.steps
    };
    let label = row.label();
    let mut repeats = vec![];
    // the CPU ours names, said on every line of the comparison
    let mut cpu = Value::Null;
    for _ in 0..o.repeats {
        let mine = ours(bin, row, (device, threads), steps, o);
        if let Some(v) = &mine {
            println!("{v}");
            cpu = v["cpu"].clone();
            let ran = v["precision"].as_str().unwrap_or("f32");
            if let Some(asked) = row.precision.as_deref().filter(|p| *p != ran) {
                eprintln!(
                    "xtask bench: {label} on {device}, {threads} thread(s), trains in {ran} \
                     here ({asked} does not run on this device, CPU or shape; `charlstm \
                     train` says why): skipped"
                );
                return None;
            }
        }
        // the references only where ours ran: there is nothing to compare otherwise
        let mut rep = match refs.filter(|_| device == "flex" && mine.is_some()) {
            Some(r) => r.run(&row.recipe, threads, steps, o, &cpu),
            None => Repeat::default(),
        };
        rep.ours = mine.and_then(|v| v["chars_per_sec"].as_f64().filter(|x| x.is_finite()));
        repeats.push(rep);
    }
    let m = Measured {
        label,
        device: device.to_string(),
        threads,
        repeats,
    };
    let (mine, t, p) = m.medians();
    let compared = m
        .repeats
        .iter()
        .any(|r| r.tf.is_some() || r.torch.is_some());
    if compared {
        println!(
            "{}",
            json!({"compare": m.label, "device": device, "threads": threads, "steps": steps,
               "charlstm_chars_per_sec": mine, "tensorflow_chars_per_sec": t,
               "pytorch_chars_per_sec": p, "ratio_vs_fastest_reference": m.ratio(),
               "cpu": cpu, "reference_isa_caps": refs.map(|r| r.caps.clone()).unwrap_or_default(),
               "set": row.sets(&o.set)})
        );
    }
    Some(m)
}

pub fn run(args: &[String]) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask bench: {e}");
            return ExitCode::from(2);
        }
    };
    let features: Vec<&str> = o
        .devices
        .iter()
        .map(String::as_str)
        .filter(|d| *d != "flex")
        .collect();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .current_dir(root())
        .args(["build", "--release", "-p", "cli"]);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if !build.status().is_ok_and(|s| s.success()) {
        eprintln!("xtask bench: the build failed");
        return ExitCode::from(1);
    }
    let bin = root().join("target/release/charlstm");
    let refs = o
        .reference
        .then(reference_paths)
        .flatten()
        .map(|(scripts, python)| References {
            scripts,
            python,
            caps: reference_isa_caps(),
        });
    if o.reference && refs.is_none() {
        eprintln!("xtask bench: no reference scripts or venv found; measuring charlstm only");
    }
    let mut measured = vec![];
    for row in &o.rows {
        for device in &o.devices {
            for &threads in &o.threads {
                measured.extend(measure(&bin, row, (device, threads), refs.as_ref(), &o));
            }
        }
    }
    eprintln!(
        "\nxtask bench: medians of {} repeat(s), ratios against the faster reference\n\n{}",
        o.repeats,
        table(&measured)
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference's line keeps the CPU's model and extensions, drops our
    /// kernels and names the caps on its instruction sets, if any.
    #[test]
    fn a_reference_names_its_cpu_and_caps_not_our_kernels() {
        let ours =
            json!({"model": "Xeon", "extensions": ["avx2", "avx512f"], "kernels": "avx2+fma"});
        let none = serde_json::Map::new();
        assert_eq!(
            reference_cpu(&ours, &none),
            json!({"model": "Xeon", "extensions": ["avx2", "avx512f"]})
        );
        let mut caps = serde_json::Map::new();
        caps.insert("MKL_ENABLE_INSTRUCTIONS".into(), json!("AVX2"));
        assert_eq!(
            reference_cpu(&ours, &caps),
            json!({"model": "Xeon", "extensions": ["avx2", "avx512f"],
                   "isa_caps": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}})
        );
        // no line of ours (ours failed): nothing to name
        assert_eq!(reference_cpu(&Value::Null, &caps), Value::Null);
    }

    #[test]
    fn rows_name_a_recipe_and_maybe_a_precision() {
        let row = Row::parse("large@f16").unwrap();
        assert_eq!(
            (row.recipe.as_str(), row.precision.as_deref()),
            ("large", Some("f16"))
        );
        assert_eq!(row.label(), "large@f16");
        // the row's precision comes after the common overrides: it wins
        assert_eq!(
            row.sets(&["train.steps=5".into()]),
            ["train.steps=5", "train.precision=f16"]
        );
        let plain = Row::parse("mirror").unwrap();
        assert_eq!((plain.label(), plain.sets(&[])), ("mirror".into(), vec![]));
        let err = Row::parse("large@fp8").unwrap_err();
        assert!(err.contains("large@fp8") && err.contains("bf16"), "{err}");
        assert!(Row::parse("@f16").is_err());
        let o = parse(&["--recipes".into(), "notebook-char,large@bf16".into()]).unwrap();
        assert_eq!(o.rows.len(), 2);
        assert!(parse(&["--recipes".into(), "large@f64".into()]).is_err());
        // the default rows hold the half precisions' rows of `large`
        let all = parse(&[]).unwrap().rows;
        assert!(all.iter().any(|r| r.label() == "large@f16"));
    }

    #[test]
    fn the_table_gives_medians_the_ratio_and_each_repeat() {
        let rep = |ours, tf, torch| Repeat { ours, tf, torch };
        let rows = [
            Measured {
                label: "notebook-char".into(),
                device: "flex".into(),
                threads: 2,
                repeats: vec![
                    rep(Some(600e3), Some(200e3), Some(300e3)),
                    rep(Some(900e3), Some(250e3), Some(400e3)),
                    rep(Some(612e3), None, Some(286e3)),
                ],
            },
            Measured {
                label: "large@f16".into(),
                device: "flex".into(),
                threads: 1,
                repeats: vec![
                    rep(Some(9437.0), None, Some(5878.0)),
                    rep(None, None, Some(5000.0)),
                ],
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        // medians 612 / 250 (two TF runs: the larger middle) / 300; 612 / 300 = 2.04
        assert_eq!(
            lines[2],
            "| notebook-char | 2 | 612 / 250 / 300 | 2.04 | 2.00, 2.25, 2.14 |"
        );
        // a repeat where ours failed has no ratio; the median of PyTorch's two is the larger
        assert_eq!(
            lines[3],
            "| large@f16 | 1 | 9.4 / - / 5.9 | 1.61 | 1.61, - |"
        );
    }
}
