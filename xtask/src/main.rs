//! `cargo xtask <task>`: project automation in Rust (see the README's "Automation").
//!
//! - `e2e [--filter S]`: the integration matrix against the release binary.
//! - `bench [--quick]`: performance, side by side with baselines.
//! - `fidelity [--quick]`: syntax verifier agreement with CPython.
//! - `test [-- ARGS]`: every test (ruff, then `cargo test --workspace`): the README's test command.
//! - `demo`: deploy, a rejected deploy and a rollback in a scratch root (the README's first command).

// The same allocator as the `bluegreen` binary, so in-process figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_http;
mod bench_startup;
mod bench_syntax;
mod demo;
mod e2e;
mod fidelity;
mod test;
mod workspace;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <test|e2e|bench|fidelity|demo> [options]");
        return ExitCode::from(2);
    };
    let result = match task.as_str() {
        "fidelity" => fidelity::main(rest),
        "bench" => bench::main(rest),
        "bench-run" => bench::run_main(rest),
        "e2e" => e2e::main(rest),
        "demo" => demo::main(rest),
        "test" => test::main(rest),
        other => Err(format!(
            "unknown task {other:?}; expected test, e2e, bench, fidelity or demo"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}
