//! `cargo xtask bench`: the speed benchmark (filled in by the performance work).

use std::process::ExitCode;

/// Runs the benchmark.
pub fn run(args: &[String]) -> ExitCode {
    let mut a = vec!["bench".to_string()];
    a.extend(args.iter().cloned());
    let mut c = crate::charlstm(None, &a);
    match c.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}
