//! What CPU the kernels run on, for measurements to say where they were
//! taken: its model name, the vector extensions it has, and which kernel
//! paths those select.

/// The vector instruction sets the kernels have paths for, narrowest first
/// (so `isa() >= Isa::Avx2` reads "at least AVX2").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Whatever the compiler makes of plain Rust for the baseline target.
    Portable,
    /// AVX2 with FMA: 8 lanes of `f32`.
    Avx2,
    /// AVX-512 (F, BW, VL, DQ) with FMA: 16 lanes of `f32`.
    Avx512,
    /// AVX-512 and the AMX tiles with bf16 ([`amx`](super::amx)): the
    /// vector kernels are AVX-512's, the bf16 products run on the tiles.
    Avx512Amx,
}

impl Isa {
    /// The name measurements and `CHARLSTM_KERNELS` use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512",
            Isa::Avx512Amx => "avx512+amx",
        }
    }

    /// Whether the AVX-512 vector kernels run (with or without the tiles).
    pub fn avx512(self) -> bool {
        self >= Isa::Avx512
    }
}

/// The widest instruction set this CPU has, and the AMX tiles where this
/// process may use them ([`amx::usable`](super::amx::usable), which asks
/// the OS for them).
pub fn detected_isa() -> Isa {
    match vector_isa() {
        Isa::Avx512 if super::amx::usable() => Isa::Avx512Amx,
        vector => vector,
    }
}

/// The widest vector instruction set this CPU has (no tiles).
fn vector_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let avx512 = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq");
        if avx2 && avx512 {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// The instruction set the kernels use: the widest detected, or narrower when
/// the environment variable `CHARLSTM_KERNELS` names one (`portable`,
/// `avx2+fma`, `avx512`, `avx512+amx`; wider than the CPU has means the CPU's), so that one
/// binary can measure its paths against each other on one machine. Read once.
/// A value it does not know is ignored here; programs check it first with
/// [`asked_isa`] and say so.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| match asked_isa().ok().flatten() {
        // capped below the tiles: no need to ask the OS for them
        Some(asked) if asked < Isa::Avx512Amx => asked.min(vector_isa()),
        _ => detected_isa(),
    })
}

/// The instruction set `CHARLSTM_KERNELS` names: `None` when it is not set,
/// an error naming the variable and the accepted values when it names none.
pub fn asked_isa() -> Result<Option<Isa>, String> {
    // empty is no setting, as the CLI's other variables
    let Some(value) = std::env::var_os("CHARLSTM_KERNELS").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let all = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Amx];
    value
        .to_str()
        .and_then(|name| all.into_iter().find(|i| i.name() == name))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "CHARLSTM_KERNELS={}: expected one of {}",
                value.to_string_lossy(),
                all.map(Isa::name).join(", ")
            )
        })
}

/// The CPU and the kernel paths it selects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuInfo {
    /// Model name (`/proc/cpuinfo`), or the architecture where unknown.
    pub model: String,
    /// CPU family and model number (`/proc/cpuinfo`'s `cpu family` and
    /// `model`), where known: under a hypervisor the name may be only
    /// "AMD EPYC", and these tell Zen 3 (25, 1), Zen 4 (25, 17) and Zen 5
    /// (26, 2) apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<u32>,
    /// See [`CpuInfo::family`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_number: Option<u32>,
    /// The vector extensions of interest that this CPU has.
    pub extensions: Vec<&'static str>,
    /// The kernel paths used: `avx512+amx`, `avx512`, `avx2+fma`, or `portable` ([`Isa::name`]).
    pub kernels: &'static str,
}

/// Extensions reported (those the kernels, `gemm` or oneDNN may use; AMX
/// by CPUID, its detection not being stable Rust yet).
#[cfg(target_arch = "x86_64")]
fn extensions() -> Vec<&'static str> {
    let mut out = vec![];
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::is_x86_feature_detected!($f) {
                out.push($f);
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16"
    );
    if super::amx::has_amx_bf16() {
        out.extend(["amx-tile", "amx-bf16"]);
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn extensions() -> Vec<&'static str> {
    vec![]
}

/// This machine's CPU.
pub fn cpu_info() -> CpuInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // the first processor's value of `key` (`key<tabs>: value` lines)
    let field = |key: &str| {
        cpuinfo
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let number = |key: &str| field(key).and_then(|v| v.parse().ok());
    CpuInfo {
        model: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        family: number("cpu family"),
        model_number: number("model"),
        extensions: extensions(),
        kernels: isa().name(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(clippy::print_stderr)] // said in the output: which paths this CPU took
    fn names_the_cpu_and_what_it_selects() {
        let cpu = super::cpu_info();
        assert!(!cpu.model.is_empty());
        if cfg!(target_arch = "x86_64") && std::path::Path::new("/proc/cpuinfo").exists() {
            assert!(
                cpu.family.is_some() && cpu.model_number.is_some(),
                "{cpu:?}"
            );
        }
        let has = |f| cpu.extensions.contains(&f);
        let widest = if has("avx2")
            && has("fma")
            && has("avx512f")
            && has("avx512bw")
            && has("avx512vl")
            && has("avx512dq")
        {
            if has("amx-bf16") && super::super::amx::usable() {
                "avx512+amx"
            } else {
                "avx512"
            }
        } else if has("avx2") && has("fma") {
            "avx2+fma"
        } else {
            "portable"
        };
        assert_eq!(super::detected_isa().name(), widest);
        if super::asked_isa() == Ok(None) {
            assert_eq!(cpu.kernels, widest);
        }
        // said in the output, so a run on a CPU without them does not pass silently
        eprintln!("cpu: {cpu:?}");
    }
}
