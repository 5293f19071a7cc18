//! `cargo xtask demo`: the README's first command. Builds the `bluegreen` binary, then in a
//! scratch root on the embedded default (no config, `syntax` chain): deploys an agent,
//! deploys a new version, tries a broken one (rejected, with its diagnostic), rolls back,
//! and shows status and history. Each step's exit code is checked.
//!
//! Options: `--keep` leaves the scratch root for exploring (its path is printed).
//! `BLUEGREEN_BIN` names a prebuilt binary to use instead of building one.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT: &str = "trading_agent_alpha";
const TARGET: &str = "agents/trading_agent_alpha.py";

pub fn main(args: &[String]) -> Result<(), String> {
    let keep = match args {
        [] => false,
        [flag] if flag == "--keep" => true,
        other => {
            return Err(format!(
                "unexpected arguments {other:?}; usage: cargo xtask demo [--keep]"
            ))
        }
    };
    let workspace = crate::workspace::root();
    let bin = match std::env::var_os("BLUEGREEN_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            println!("building bluegreen (cargo build -p bluegreen) ...");
            crate::workspace::build_bluegreen(false)?
        }
    };
    run(&workspace, &bin, keep)
}

/// The demo with a given binary; the scratch root is removed unless `keep` or a step failed.
fn run(workspace: &Path, bin: &Path, keep: bool) -> Result<(), String> {
    let root = scratch_root()?;
    for name in ["alpha_v1.py", "alpha_v2.py", "alpha_broken.py"] {
        std::fs::copy(workspace.join("fixtures/cli").join(name), root.join(name))
            .map_err(|e| format!("copying fixture {name}: {e}"))?;
    }
    println!("scratch root: {}\n", root.display());

    let result = steps(bin, &root);
    if keep || result.is_err() {
        println!(
            "\nthe scratch root is kept: bluegreen --root {} history {AGENT}",
            root.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn steps(bin: &Path, root: &Path) -> Result<(), String> {
    fn deploy(code: &str) -> Vec<&str> {
        vec!["deploy", AGENT, "--file", TARGET, "--code-file", code]
    }
    step(
        bin,
        root,
        "Deploy version 1 (the syntax check passes, GREEN is empty):",
        &deploy("alpha_v1.py"),
        0,
    )?;
    step(
        bin,
        root,
        "Deploy version 2 (version 1 is backed up first):",
        &deploy("alpha_v2.py"),
        0,
    )?;
    step(
        bin,
        root,
        "Deploy a broken version: rejected with a diagnostic, version 2 stays live (exit 1):",
        &deploy("alpha_broken.py"),
        1,
    )?;
    step(
        bin,
        root,
        "Roll back: version 1 is live again:",
        &["rollback", AGENT],
        0,
    )?;
    step(bin, root, "Status:", &["status"], 0)?;
    step(bin, root, "History, newest first:", &["history", AGENT], 0)?;
    let live = std::fs::read(root.join(TARGET)).map_err(|e| format!("reading {TARGET}: {e}"))?;
    let v1 =
        std::fs::read(root.join("alpha_v1.py")).map_err(|e| format!("reading alpha_v1.py: {e}"))?;
    if live != v1 {
        return Err(format!("{TARGET} should hold version 1 after the rollback"));
    }
    println!("\ndemo finished: every step exited as expected and {TARGET} holds version 1");
    Ok(())
}

fn step(bin: &Path, root: &Path, title: &str, args: &[&str], expected: i32) -> Result<(), String> {
    println!("\n# {title}\n$ bluegreen {}", args.join(" "));
    let mut command = Command::new(bin);
    command.args(args).current_dir(root);
    // Captured (so test harnesses capture it too) but still coloured on a terminal.
    if std::io::stdout().is_terminal() {
        command.env("CLICOLOR_FORCE", "1");
    }
    let output = command
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    print!("{}", String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(code) if code == expected => Ok(()),
        code => Err(format!(
            "`bluegreen {}` exited with {code:?}, expected {expected}",
            args.join(" ")
        )),
    }
}

fn scratch_root() -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let root = std::env::temp_dir().join(format!("bluegreen-demo-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask demo` from the README, on the binary `cargo test --workspace` builds
    /// (target/debug/bluegreen, beside this test's deps/ directory).
    #[test]
    fn demo_runs_on_the_built_binary() {
        let bin = std::env::var_os("BLUEGREEN_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.parent()?.join("bluegreen"))
            });
        let Some(bin) = bin.filter(|b| b.is_file()) else {
            eprintln!("skipped: no bluegreen binary built yet (run cargo test --workspace)");
            return;
        };
        run(&crate::workspace::root(), &bin, false).unwrap();
    }
}
