//! `cargo xtask <task>`: project automation in Rust (see the README's "Automation").
//!
//! - `e2e [--filter S]`: the integration matrix against the release binary.
//! - `bench [--quick]`: performance, side by side with baselines.
//! - `fidelity [--quick]`: syntax verifier agreement with CPython.

mod bench_startup;
mod bench_syntax;
mod fidelity;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <e2e|bench|fidelity> [options]");
        return ExitCode::from(2);
    };
    let result = match task.as_str() {
        "fidelity" => fidelity::main(rest),
        other => Err(format!("unknown task {other:?}; expected e2e, bench or fidelity")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}
