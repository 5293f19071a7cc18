//! `cargo xtask test [-- CARGO_TEST_ARGS]`: every test — the README's one test command.
//!
//! 1. `ruff check` over the project's Python, with ruff pinned in a virtual environment under
//!    `target/venv` (created on first use, no root needed);
//! 2. `cargo test --workspace --locked` (Rust unit, integration, doc and CLI tests, the
//!    real-interpreter startup checks, and the dashboard test in headless Chromium).
//!
//! What a fresh machine lacks and only root can install is named in one line: the dashboard
//! test needs Debian's `chromium` and `chromium-driver` (it fails under `CI=true` without them,
//! and skips with that message otherwise).

use std::path::Path;
use std::process::Command;

use crate::workspace;

/// The ruff release the Python code is kept clean against (`ruff.toml` holds the rules).
const RUFF: &str = "ruff==0.17.6";

pub fn main(args: &[String]) -> Result<(), String> {
    let root = workspace::root();
    ruff(&root)?;
    if which("chromedriver").is_none() {
        eprintln!(
            "xtask test: the dashboard test needs Chromium: apt-get install chromium chromium-driver"
        );
    }
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(&root)
        .args(["test", "--workspace", "--locked"])
        .args(args);
    run(&mut cargo, "cargo test --workspace")
}

fn ruff(root: &Path) -> Result<(), String> {
    let venv = workspace::target_dir().join("venv");
    let ruff = venv.join("bin/ruff");
    let pinned = Command::new(&ruff)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == RUFF.replace("==", " "));
    if !pinned {
        eprintln!("xtask test: installing {RUFF} into {}", venv.display());
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )?;
        run(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", RUFF]),
            "pip install ruff",
        )?;
    }
    run(
        Command::new(&ruff).current_dir(root).args(["check", "."]),
        "ruff check",
    )
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}
