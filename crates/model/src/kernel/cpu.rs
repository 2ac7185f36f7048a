//! What CPU the kernels run on, for measurements to say where they were
//! taken: its model name, the vector extensions it has, and which kernel
//! paths those select.

/// The CPU and the kernel paths it selects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuInfo {
    /// Model name (`/proc/cpuinfo`), or the architecture where unknown.
    pub model: String,
    /// The vector extensions of interest that this CPU has.
    pub extensions: Vec<&'static str>,
    /// The kernel paths used: `avx2+fma`, or `portable`.
    pub kernels: &'static str,
}

/// Extensions reported (those the kernels, `gemm` or oneDNN may use; AMX
/// detection is not stable Rust yet).
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
        "avx512vnni",
        "avx512bf16",
        "avx512fp16"
    );
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn extensions() -> Vec<&'static str> {
    vec![]
}

/// This machine's CPU.
pub fn cpu_info() -> CpuInfo {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let extensions = extensions();
    let fast = extensions.contains(&"avx2") && extensions.contains(&"fma");
    CpuInfo {
        model,
        extensions,
        kernels: if fast { "avx2+fma" } else { "portable" },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(clippy::print_stderr)] // said in the output: which paths this CPU took
    fn names_the_cpu_and_what_it_selects() {
        let cpu = super::cpu_info();
        assert!(!cpu.model.is_empty());
        let fast = cpu.extensions.contains(&"avx2") && cpu.extensions.contains(&"fma");
        assert_eq!(cpu.kernels == "avx2+fma", fast);
        // said in the output, so a run on a CPU without them does not pass silently
        eprintln!("cpu: {cpu:?}");
    }
}
