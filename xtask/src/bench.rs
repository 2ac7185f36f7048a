//! `cargo xtask bench`: speed of every recipe on every asked device, and the
//! same model in TensorFlow and PyTorch when their reference scripts are
//! installed, run alternately in one session and compared as ratios.
//!
//! ```text
//! cargo xtask bench [--data FILE] [--recipes a,b] [--devices flex,ndarray,wgpu]
//!                   [--threads 1,2] [--steps N] [--repeats R] [--no-reference]
//!                   [--set KEY=VALUE]...
//! ```
//!
//! `--set` overrides a value of every recipe for ours only (e.g. `--set
//! train.precision=bf16`; the references have no such setting), and each of
//! our lines records the overrides it ran with.
//!
//! Prints one JSON line per measurement (ours: `"framework": "charlstm"`),
//! then one line per comparison with the medians and the ratio.
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

struct Options {
    data: String,
    recipes: Vec<String>,
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
        recipes: [
            "notebook-char",
            "notebook-fused",
            "notebook-embed",
            "notebook-bigram",
            "notebook-dropout",
            "large",
            "mirror",
        ]
        .map(String::from)
        .to_vec(),
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
            "--recipes" => o.recipes = val()?.split(',').map(String::from).collect(),
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
    recipe: &str,
    (device, threads): (&str, usize),
    steps: u64,
    o: &Options,
) -> Option<Value> {
    let mut c = Command::new(bin);
    c.current_dir(root()).args([
        "bench",
        "--recipe",
        recipe,
        "--device",
        device,
        "--threads",
        &threads.to_string(),
        "--steps",
        &steps.to_string(),
        "--data",
        &o.data,
    ]);
    for s in &o.set {
        c.args(["--set", s]);
    }
    let mut v = run_json(c)?;
    v["framework"] = json!("charlstm");
    if !o.set.is_empty() {
        v["set"] = json!(o.set);
    }
    Some(v)
}

fn median(mut v: Vec<f64>) -> f64 {
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
/// returns its speed.
fn report_reference(mut v: Value, recipe: &str, cpu: &Value) -> f64 {
    v["recipe"] = json!(recipe);
    v["cpu"] = cpu.clone();
    println!("{v}");
    v["chars_per_second"].as_f64().unwrap_or(f64::NAN)
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
    let caps = reference_isa_caps();
    let refs = if o.reference { reference_paths() } else { None };
    if o.reference && refs.is_none() {
        eprintln!("xtask bench: no reference scripts or venv found; measuring charlstm only");
    }
    for recipe in &o.recipes {
        for device in &o.devices {
            for &threads in &o.threads {
                // the large model and the mirror are slow: fewer steps
                let steps = if recipe == "large" || recipe == "mirror" {
                    (o.steps / 25).max(10)
                } else {
                    o.steps
                };
                let mut mine = vec![];
                let mut tf = vec![];
                let mut torch = vec![];
                // the CPU ours names, said on every line of the comparison
                let mut cpu = Value::Null;
                for _ in 0..o.repeats {
                    if let Some(v) = ours(&bin, recipe, (device, threads), steps, &o) {
                        println!("{v}");
                        cpu = v["cpu"].clone();
                        mine.push(v["chars_per_sec"].as_f64().unwrap_or(f64::NAN));
                    }
                    let Some((scripts, python)) = &refs else {
                        continue;
                    };
                    if device != "flex" {
                        continue;
                    }
                    // the CPU the references run on, as ours names it
                    let ref_cpu = reference_cpu(&cpu, &caps);
                    let t = threads.to_string();
                    let s = steps.to_string();
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
                        if let Some(v) = reference(python, &scripts.join("seed_tf.py"), &common) {
                            tf.push(report_reference(v, recipe, &ref_cpu));
                        }
                        let mut a = common.clone();
                        a.extend(["--impl".into(), "nnlstm".into()]);
                        if let Some(v) = reference(python, &scripts.join("seed_torch.py"), &a) {
                            torch.push(report_reference(v, recipe, &ref_cpu));
                        }
                    } else if let Some(script) = match recipe.as_str() {
                        "large" => Some("xtask/bench/torch_large.py"),
                        "mirror" => Some("xtask/bench/torch_mirror.py"),
                        _ => None,
                    } {
                        let script = root().join(script);
                        let a = ["--data", &o.data, "--steps", &s, "--threads", &t]
                            .map(String::from)
                            .to_vec();
                        if let Some(v) = reference(python, &script, &a) {
                            torch.push(report_reference(v, recipe, &ref_cpu));
                        }
                    }
                }
                if !tf.is_empty() || !torch.is_empty() {
                    let (m, t, p) = (median(mine), median(tf), median(torch));
                    let best = [t, p]
                        .into_iter()
                        .filter(|x| x.is_finite())
                        .fold(f64::NAN, f64::max);
                    println!(
                        "{}",
                        json!({"compare": recipe, "device": device, "threads": threads, "steps": steps,
                               "charlstm_chars_per_sec": m, "tensorflow_chars_per_sec": t,
                               "pytorch_chars_per_sec": p, "ratio_vs_fastest_reference": m / best,
                               "cpu": cpu, "reference_isa_caps": caps, "set": o.set})
                    );
                }
            }
        }
    }
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
}
