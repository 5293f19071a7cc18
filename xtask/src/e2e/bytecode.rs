//! Scenario 11 (issue 13, bytecode coherence) through the CLI: after same-second, same-size
//! deploys and rollbacks, a fresh `python3` that writes `__pycache__` runs the LIVE bytes,
//! and nothing leaves bytecode of staged or snapshot names.
//!
//! Each swap is made to hit the case CPython gets wrong (see `tests/tests/bytecode.rs`): the
//! live file's mtime is pinned to a coming second `S`, an interpreter caches it (recording
//! `S` and the size), and the swap starts once the clock is in `S`, so without monotonic
//! mtimes the new bytes would carry `S` too. Swaps that miss `S` on a slow machine do not
//! count, and more rounds run until enough hit it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cli::{ensure, expect_no_staged, s};
use super::config::{good_code, ChainKind, Settings};
use super::scenarios::{setup, AGENT, FILE};
use super::{Case, Outcome, Row};

const ROUNDS: u32 = 10;
const MIN_IN_SECOND: u32 = 3;
const MAX_ROUNDS: u32 = 30;
const IMPORT: &str = "import agents.alpha as m; print(m.VERSION)";

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for chain in [
        ChainKind::None,
        ChainKind::StartupCold,
        ChainKind::StartupWarm,
    ] {
        rows.push(Row::run(
            "11 bytecode",
            format!("file/{}", chain.name()),
            move |c| bytecode(c, chain),
        ));
    }
    rows.push(Row::not_applicable(
        "11 bytecode",
        "memory/*",
        "the CLI always uses the file store (the library's swaps: tests/tests/bytecode.rs)",
    ));
    rows
}

/// Version `n` (three digits): every version has the same size.
fn version(n: u32) -> Vec<u8> {
    good_code(&n.to_string())
}

fn bytecode(c: &Case, chain: ChainKind) -> Outcome {
    let bg = setup(c, chain, &Settings::default())?;
    let mut n = 100;
    bg.deploy_ok(AGENT, FILE, &version(n))?;
    let (mut swaps, mut in_second) = (0, 0);
    while swaps < 2 * ROUNDS || (in_second < MIN_IN_SECOND && swaps < 2 * MAX_ROUNDS) {
        // A deploy over the cached version n.
        let pinned = pin(&c.root, n)?;
        n += 1;
        let doc = bg.deploy_ok(AGENT, FILE, &version(n))?;
        let started = chrono::DateTime::parse_from_rfc3339(s(&doc["meta"], "timestamp")?)
            .map_err(|e| format!("meta.timestamp: {e}"))?;
        in_second += u32::from(u64::try_from(started.timestamp()).ok() == Some(pinned));
        expect_runs(&c.root, n, "after a same-second deploy")?;
        // A rollback over the cached version n, to n - 1.
        let pinned = pin(&c.root, n)?;
        bg.rollback(AGENT, None)?.expect(0, "rollback")?;
        in_second += u32::from(now_secs() == pinned);
        expect_runs(&c.root, n - 1, "after a same-second rollback")?;
        swaps += 2;
        n += 1;
        bg.deploy_ok(AGENT, FILE, &version(n))?;
    }
    ensure!(
        in_second >= MIN_IN_SECOND,
        "only {in_second} of {swaps} swaps started within their pinned second: proved nothing"
    );
    expect_runs(&c.root, n, "after the last deploy")?;
    expect_no_staged(&c.root)?;
    let pycs = pycs_under(&c.root);
    ensure!(
        pycs.iter()
            .any(|p| p.starts_with("agents/__pycache__/alpha.")),
        "the interpreters wrote no bytecode at all: {pycs:?}"
    );
    let foreign: Vec<&String> = pycs
        .iter()
        .filter(|p| {
            p.contains("bluegreen-")
                || p.contains("staged")
                || p.starts_with("backups/")
                || p.starts_with(".bluegreen/")
        })
        .collect();
    ensure!(
        foreign.is_empty(),
        "bytecode of staged or snapshot names: {foreign:?}"
    );
    Ok(format!(
        "{swaps} same-size swaps ({in_second} in the cached version's mtime second): a fresh \
         python3 ran the live bytes after each"
    ))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Pins the live file's mtime to a coming second, has a fresh interpreter cache it (it must
/// run version `live`), then waits until that second has begun. Returns the second.
fn pin(root: &Path, live: u32) -> Result<u64, String> {
    let second = now_secs() + 2;
    let path = root.join(FILE);
    std::fs::File::open(&path)
        .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(second)))
        .map_err(|e| format!("setting the mtime of {}: {e}", path.display()))?;
    expect_runs(root, live, "before the swap")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    if let Some(wait) = Duration::from_secs(second).checked_sub(now) {
        std::thread::sleep(wait);
    }
    Ok(second)
}

/// A fresh `python3` in the root, writing bytecode, must print version `n`.
fn expect_runs(root: &Path, n: u32, when: &str) -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", IMPORT])
        .current_dir(root)
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .env_remove("PYTHONPYCACHEPREFIX")
        .env_remove("PYTHONSAFEPATH")
        .env_remove("PYTHONPATH")
        .output()
        .map_err(|e| format!("running python3: {e}"))?;
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(
        out.status.success() && printed == n.to_string(),
        "{when}: a fresh python3 printed {printed:?}, the live file holds version {n} ({})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Every `*.pyc` under `root`, relative, not following symlinks.
fn pycs_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "pyc") {
                if let Ok(rel) = path.strip_prefix(root) {
                    found.push(rel.display().to_string());
                }
            }
        }
    }
    found
}
