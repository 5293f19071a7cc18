//! Scenario 13 (issue 14): the root itself is hostile — hand-edited registry lines,
//! symlinked state directories, the config file as a target, a FIFO at the target, a
//! corrupt log. (Scenario 8 covers hostile *requests*; this one hostile *roots*.) Each
//! row runs the binary against a root prepared by hand and checks that nothing outside
//! the root changed, the exit codes, and that the other agents keep working.

use std::path::Path;

use serde_json::Value;

use super::cli::{ensure, expect_bytes, read, write, Bg};
use super::config::{good_code, ChainKind, Settings};
use super::scenarios::setup;
use super::{Case, Outcome, Row};

const CONFIG: &str = "file/syntax-ruff";
const OUTSIDE: &[u8] = b"outside the root, must stay\n";

type Scenario = fn(&Case) -> Outcome;

pub fn rows() -> Vec<Row> {
    let cases: [(&str, Scenario); 5] = [
        ("registry-paths", registry_paths),
        ("symlinked-state", symlinked_state),
        ("reserved-config", reserved_config),
        ("fifo-target", fifo_target),
        ("corrupt-log", corrupt_log),
    ];
    cases
        .into_iter()
        .map(|(name, f)| Row::run(format!("13 hostile-root/{name}"), CONFIG, f))
        .collect()
}

fn start(c: &Case) -> Result<(Bg, std::path::PathBuf), String> {
    let bg = setup(c, ChainKind::SyntaxRuff, &Settings::default())?;
    let victim = c.dir.join("outside/victim.txt");
    write(&victim, OUTSIDE)?;
    bg.deploy_ok("alpha", "agents/alpha.py", &good_code("1"))?;
    bg.deploy_ok("beta", "agents/beta.py", &good_code("1"))?;
    Ok((bg, victim))
}

fn log(c: &Case, agent: &str) -> std::path::PathBuf {
    c.root
        .join(format!(".bluegreen/agents/{agent}/events.jsonl"))
}

fn append(path: &Path, line: &str) -> Result<(), String> {
    let mut bytes = read(path)?;
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    write(path, &bytes)
}

/// The other agent still deploys and rolls back.
fn beta_works(bg: &Bg, tag: &str) -> Result<(), String> {
    bg.deploy_ok("beta", "agents/beta.py", &good_code(tag))?;
    bg.rollback("beta", None)?.expect(0, "rollback beta")?;
    Ok(())
}

/// Finding 1: a `begin` whose staged path is outside the root is never used.
fn registry_paths(c: &Case) -> Outcome {
    let (bg, victim) = start(c)?;
    let line = serde_json::json!({"e": {"event": "begin",
        "deployment_id": "dep_019a0000000070008000000000000001",
        "timestamp": "2026-01-01T00:00:00Z", "file_path": "agents/alpha.py",
        "staged_path": victim.display().to_string(), "sha256": "0".repeat(64),
        "green_sha256": null, "backup_path": "backups/agents/beta/green_x.py",
        "previous": null}, "live": null});
    append(&log(c, "alpha"), &line.to_string())?;
    let out = bg.run(&["status"], None)?;
    expect_bytes(&victim, OUTSIDE, "the outside file")?;
    let doc = out.json()?;
    ensure!(out.code == Some(4), "status: {}", out.describe());
    ensure!(doc["agents"]["beta"].is_object(), "status lost beta: {doc}");
    ensure!(
        doc["errors"]["alpha"].is_string(),
        "alpha not reported: {doc}"
    );
    beta_works(&bg, "2")?;
    expect_bytes(&victim, OUTSIDE, "the outside file")?;
    Ok("outside file untouched; alpha reported, beta works".into())
}

/// Finding 2: symlinks at state directories and files are refused, not followed.
fn symlinked_state(c: &Case) -> Outcome {
    let (bg, victim) = start(c)?;
    let outside_dir = c.dir.join("outside/state");
    std::fs::create_dir_all(&outside_dir).map_err(|e| e.to_string())?;
    let link = |to: &Path, at: &Path| {
        std::os::unix::fs::symlink(to, at).map_err(|e| format!("{}: {e}", at.display()))
    };
    link(&outside_dir, &c.root.join(".bluegreen/agents/gamma"))?;
    std::fs::remove_file(log(c, "alpha")).map_err(|e| e.to_string())?;
    link(&victim, &log(c, "alpha"))?;
    link(Path::new("agents/beta"), &c.root.join(".bluegreen/trash"))?;
    for agent in ["gamma", "alpha"] {
        let out = bg.deploy(agent, &format!("agents/{agent}.py"), &good_code("2"))?;
        ensure!(
            matches!(out.code, Some(2 | 4)),
            "deploy {agent}: {}",
            out.describe()
        );
    }
    ensure!(
        std::fs::read_dir(&outside_dir).map_or(0, |d| d.count()) == 0,
        "files were created outside the root"
    );
    expect_bytes(&victim, OUTSIDE, "the outside file")?;
    // Retention through the symlinked trash must not delete beta's live log.
    for tag in ["3", "4", "5"] {
        bg.deploy_ok("beta", "agents/beta.py", &good_code(tag))?;
    }
    ensure!(log(c, "beta").is_file(), "beta's log was deleted");
    beta_works(&bg, "6")?;
    Ok("agent dir, log and trash symlinks refused".into())
}

/// Finding 3: the config file (also by hard link) is not a deployment target.
fn reserved_config(c: &Case) -> Outcome {
    let (bg, _) = start(c)?;
    let config = c.root.join("bluegreen.toml");
    let before = read(&config)?;
    std::fs::hard_link(&config, c.root.join("cfg.py")).map_err(|e| e.to_string())?;
    for file in ["bluegreen.toml", "agents/../bluegreen.toml", "cfg.py"] {
        bg.deploy("gamma", file, b"keep_backups = 1\n")?
            .expect_error(2, file)?;
    }
    expect_bytes(&config, &before, "bluegreen.toml")?;
    Ok("refused by path and by inode".into())
}

/// Finding 9: a FIFO at the target is refused at once, not blocked on.
fn fifo_target(c: &Case) -> Outcome {
    let (bg, _) = start(c)?;
    let fifo = c.root.join("agents/fifo.py");
    let path =
        std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(path.as_ptr(), 0o644) } != 0 {
        return Err(format!("mkfifo: {}", std::io::Error::last_os_error()));
    }
    let doc: Value = bg
        .deploy("gamma", "agents/fifo.py", &good_code("1"))?
        .expect_error(2, "deploy to a FIFO")?;
    ensure!(
        doc["error"].as_str().is_some_and(|e| e.contains("FIFO")),
        "error does not say FIFO: {doc}"
    );
    beta_works(&bg, "2")?;
    Ok("refused with exit 2, without blocking".into())
}

/// Finding 10: one corrupt line breaks its agent only; no absolute path in the error.
fn corrupt_log(c: &Case) -> Outcome {
    let (bg, _) = start(c)?;
    append(&log(c, "alpha"), "{not json")?;
    let out = bg.run(&["status"], None)?;
    ensure!(out.code == Some(4), "status: {}", out.describe());
    let doc = out.json()?;
    let error = doc["errors"]["alpha"].as_str().unwrap_or("");
    ensure!(
        error.contains("line 3"),
        "error does not name the line: {doc}"
    );
    let root = c.root.display().to_string();
    ensure!(
        !out.stderr.contains(&root) && !error.contains(&root),
        "absolute path in the error: {}",
        out.describe()
    );
    let deploy = bg.deploy("alpha", "agents/alpha.py", &good_code("2"))?;
    deploy.expect_error(4, "deploy alpha")?;
    bg.run(&["recover"], None)?.expect(4, "recover")?;
    beta_works(&bg, "2")?;
    Ok("alpha reported with its line, beta works".into())
}
