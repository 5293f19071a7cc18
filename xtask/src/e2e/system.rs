//! Scenarios 5–8 (crash, two processes, zero downtime, hostile input) and 10 (HTTP), once
//! each on the file store with the ruff syntax chain.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bluegreen_core::util::sha256_hex;
use bluegreen_core::FaultPoint;
use serde_json::Value;

use super::cli::{
    digest_diff, ensure, expect_bytes, expect_no_staged, read, s, snapshot_files, tree_digest,
    wait_until, write,
};
use super::config::{good_code, ChainKind, Settings};
use super::scenarios::{expect_live, setup, AGENT, FILE};
use super::{Case, Outcome, Row};

const CONFIG: &str = "file/syntax-ruff";

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for point in FaultPoint::ALL {
        rows.push(Row::run(format!("5 crash/{point}"), CONFIG, move |c| {
            crash(c, point)
        }));
    }
    // A kill -9 from outside while verifier subprocesses run: none may outlive the binary.
    for chain in [
        ChainKind::StartupCold,
        ChainKind::StartupWarm,
        ChainKind::Script,
    ] {
        rows.push(Row::run(
            "5 crash/kill-9-mid-verify",
            format!("file/{}", chain.name()),
            move |c| kill_mid_verify(c, chain),
        ));
    }
    rows.push(Row::run("6 two-processes", CONFIG, two_processes));
    rows.push(Row::run("7 zero-downtime", CONFIG, zero_downtime));
    for case in Hostile::ALL {
        rows.push(Row::run(
            format!("8 hostile/{}", case.name()),
            CONFIG,
            move |c| hostile(c, case),
        ));
    }
    rows.push(Row::run("10 http", CONFIG, super::http::scenario));
    // The CLI always uses the file store; "memory" is covered in-process by 1–4 and 9.
    for scenario in [
        "5 crash",
        "6 two-processes",
        "7 zero-downtime",
        "8 hostile",
        "10 http",
    ] {
        rows.push(Row::not_applicable(
            scenario,
            "memory/*",
            "the CLI always uses the file store (memory runs 1-4 and 9 in-process)",
        ));
    }
    rows
}

// ---------------------------------------------------------------- 5. crash

fn crash(c: &Case, point: FaultPoint) -> Outcome {
    // keep_backups = 1 makes the third deployment prune (so `during_prune` is reached).
    let settings = Settings {
        keep_backups: 1,
        lock_timeout: "10s",
        ..Settings::default()
    };
    let bg = setup(c, ChainKind::SyntaxRuff, &settings)?;
    let (v1, v2, v3, v4) = (
        good_code("1"),
        good_code("2"),
        good_code("3"),
        good_code("4"),
    );
    bg.deploy_ok(AGENT, FILE, &v1)?;
    bg.deploy_ok(AGENT, FILE, &v2)?;

    // GREEN: the bytes before the interrupted operation; BLUE: the bytes it was putting live.
    let (blue, out) = if point.is_rollback() {
        let mut cmd = bg.command();
        cmd.env("BLUEGREEN_FAULT", point.as_str())
            .args(["rollback", AGENT]);
        (
            &v1,
            super::cli::run(&mut cmd, None, super::cli::COMMAND_TIMEOUT)?,
        )
    } else {
        (&v3, bg.deploy_with_fault(AGENT, FILE, &v3, point.as_str())?)
    };
    ensure!(
        out.signal == Some(9),
        "the binary was not killed at {point} (BLUEGREEN_FAULT ignored? built without fault injection?): {}",
        out.describe()
    );
    let expect_blue = matches!(
        point,
        FaultPoint::AfterRename
            | FaultPoint::AfterRecord
            | FaultPoint::DuringPrune
            | FaultPoint::RollbackAfterRename
    );
    let (expected, which) = if expect_blue {
        (blue, "BLUE")
    } else {
        (&v2, "GREEN")
    };

    let status = bg
        .run(&["status"], None)?
        .expect(0, "status after the crash")?;
    let target = read(&c.root.join(FILE))?;
    ensure!(
        target == *expected,
        "after a crash at {point} the target should be exactly {which}; it is {}",
        if target == v2 {
            "GREEN"
        } else if target == *blue {
            "BLUE"
        } else {
            "NEITHER"
        }
    );
    let live = &status["agents"][AGENT];
    ensure!(
        live["sha256"] == sha256_hex(&target).as_str() && live["status"] == "LIVE",
        "registry disagrees with the target after a crash at {point}: {live}"
    );
    expect_no_staged(&c.root)?;
    let history = bg.history(AGENT)?;
    let live_count = history.iter().filter(|d| d["status"] == "LIVE").count();
    ensure!(
        live_count == 1,
        "{live_count} LIVE deployments in history: {history:?}"
    );
    // Every snapshot kept holds a version that was live (no partial snapshot survives).
    for snap in snapshot_files(&c.root, AGENT) {
        let bytes = read(&snap)?;
        ensure!(
            [&v1, &v2, &v3].contains(&&bytes),
            "snapshot {} holds bytes of no version",
            snap.display()
        );
    }

    // The next deployment succeeds at once: no stale lock, no recovery wait.
    let started = Instant::now();
    let next = bg.deploy(AGENT, FILE, &v4)?;
    let waited = started.elapsed();
    let doc = next.expect(0, "the deployment after the crash")?;
    ensure!(
        waited < Duration::from_secs(5),
        "the next deployment took {} ms (a stale lock?)",
        waited.as_millis()
    );
    expect_live(&bg, s(&doc, "deployment_id")?, &v4)?;
    expect_no_staged(&c.root)?;
    Ok(format!(
        "target {which}; next deploy {} ms",
        waited.as_millis()
    ))
}

/// Processes (other than ours) whose working directory or command line is inside `root`:
/// pid, "is its working directory inside the root" (a running check), description.
fn processes_in(root: &Path) -> Vec<(u32, bool, String)> {
    let me = std::process::id();
    let needle = root.display().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cwd.starts_with(root) || cmdline.contains(&needle) {
            // State and parent say whether it is an orphan, a zombie or still starting.
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            found.push((
                pid,
                cwd.starts_with(root),
                format!(
                    "[{} ppid {}] {}",
                    field("State:"),
                    field("PPid:"),
                    cmdline.chars().take(100).collect::<String>()
                ),
            ));
        }
    }
    found
}

/// Who started a check process, for the report: its parent's command name (`python3` when
/// a warm zygote forked it, the binary's thread name when it was spawned directly).
fn check_path(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().to_owned())
        .unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
    format!("(parent {})", comm.trim())
}

fn kill_mid_verify(c: &Case, chain: ChainKind) -> Outcome {
    // The check must still be running when the binary dies: no verifier timeout meanwhile.
    let settings = Settings {
        startup_timeout_secs: 60,
        ..Settings::default()
    };
    let bg = setup(c, chain, &settings)?;
    let v1 = good_code("1");
    bg.deploy_ok(AGENT, FILE, &v1)?;
    // A version whose check never finishes (until the verifier's timeout): kill mid-check.
    let mut slow = good_code("2");
    slow.extend_from_slice(if chain == ChainKind::Script {
        b"# E2E_SCRIPT_SLOW\n" as &[u8]
    } else {
        b"import time\nwhile True:\n    time.sleep(0.01)\n"
    });
    let mut cmd = bg.command();
    cmd.args(["deploy", AGENT, "--file", FILE, "--code-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("spawning deploy: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, &slow).map_err(|e| format!("stdin: {e}"))?;
    }
    // Wait until BLUE is staged and a verifier process runs, then give it a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let staged_dir = c.root.join("agents");
    // In warm mode the zygote itself starts in the root; the check is the child it forks
    // (parent `python3`). Wait for that child, or accept any check after 5 s (cold fallback).
    let mut first_seen: Option<Instant> = None;
    let path = loop {
        let staged = !super::cli::staged_leftovers(&staged_dir).is_empty();
        // A check (startup or script) runs with the root as its working directory.
        let checks: Vec<(u32, String)> = processes_in(&c.root)
            .into_iter()
            .filter(|(_, in_root, _)| *in_root)
            .map(|(pid, _, _)| (pid, check_path(pid)))
            .collect();
        if staged && !checks.is_empty() {
            let seen = *first_seen.get_or_insert_with(Instant::now);
            let forked = checks.iter().find(|(_, parent)| parent.contains("python"));
            if let Some((_, parent)) = forked {
                break parent.clone();
            }
            if chain != ChainKind::StartupWarm || seen.elapsed() > Duration::from_secs(5) {
                break checks[0].1.clone();
            }
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the deployment never reached a running verifier".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Let the check get well into the agent's module code before the kill.
    std::thread::sleep(Duration::from_millis(800));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    // Orphans get a grace period to notice their parent died.
    let grace = Instant::now() + Duration::from_secs(3);
    let mut left = processes_in(&c.root);
    while !left.is_empty() && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_in(&c.root);
    }
    for (pid, _, _) in &left {
        // Only descendants of the binary we started can be in this fresh root.
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    ensure!(
        left.is_empty(),
        "check run {path}: verifier processes outlived the killed binary by 3 s: {:?}",
        left.iter()
            .map(|(pid, _, what)| format!("{pid} {what}"))
            .collect::<Vec<_>>()
    );
    bg.run(&["status"], None)?
        .expect(0, "status after the kill")?;
    expect_bytes(&c.root.join(FILE), &v1, "GREEN")?;
    expect_no_staged(&c.root)?;
    let started = Instant::now();
    let v3 = good_code("3");
    let doc = bg
        .deploy(AGENT, FILE, &v3)?
        .expect(0, "the deployment after the kill")?;
    expect_live(&bg, s(&doc, "deployment_id")?, &v3)?;
    Ok(format!(
        "check run {path}: no orphan; GREEN kept; next deploy {} ms",
        started.elapsed().as_millis()
    ))
}

// ---------------------------------------------------------------- 6. two processes

fn two_processes(c: &Case) -> Outcome {
    const PER_WRITER: usize = 25;
    let settings = Settings {
        keep_backups: 100,
        ..Settings::default()
    };
    let bg = setup(c, ChainKind::SyntaxRuff, &settings)?;
    let results: Vec<Result<Vec<Vec<u8>>, String>> = std::thread::scope(|scope| {
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|w| {
                let bg = bg.clone();
                scope.spawn(move || {
                    let mut codes = Vec::new();
                    for i in 0..PER_WRITER {
                        let code = good_code(&format!("{w}{i}"));
                        bg.deploy_ok(AGENT, FILE, &code)?;
                        codes.push(code);
                    }
                    Ok(codes)
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("writer panicked".into())))
            .collect()
    });
    let mut by_sha: HashMap<String, Vec<u8>> = HashMap::new();
    for r in results {
        for code in r? {
            by_sha.insert(sha256_hex(&code), code);
        }
    }
    let history = bg.history(AGENT)?;
    ensure!(
        history.len() == 2 * PER_WRITER,
        "{} deployments recorded, not 50",
        history.len()
    );
    let live: Vec<&Value> = history.iter().filter(|d| d["status"] == "LIVE").collect();
    ensure!(live.len() == 1, "{} LIVE deployments", live.len());
    let superseded = history
        .iter()
        .filter(|d| d["status"] == "SUPERSEDED")
        .count();
    ensure!(
        superseded == 2 * PER_WRITER - 1,
        "{superseded} SUPERSEDED, not 49"
    );
    let target_sha = sha256_hex(&read(&c.root.join(FILE))?);
    ensure!(
        live[0]["sha256"] == target_sha.as_str(),
        "the LIVE record's sha256 is not the target's"
    );
    // The backup chain: each deployment's snapshot holds the code of the one before it.
    let mut previous_of: HashMap<String, String> = HashMap::new(); // sha → sha of its backup
    let mut first = Vec::new();
    for d in &history {
        let sha = s(d, "sha256")?.to_owned();
        ensure!(
            by_sha.contains_key(&sha),
            "history holds code nobody deployed"
        );
        match d["backup_path"].as_str() {
            None => first.push(sha),
            Some(p) => {
                let backup = read(&c.root.join(p))?;
                previous_of.insert(sha, sha256_hex(&backup));
            }
        }
    }
    ensure!(
        first.len() == 1,
        "{} deployments without a backup (expected only the first)",
        first.len()
    );
    let mut walked = 1;
    let mut at = target_sha;
    while let Some(prev) = previous_of.get(&at) {
        ensure!(walked <= 2 * PER_WRITER, "the backup chain has a cycle");
        at = prev.clone();
        walked += 1;
    }
    ensure!(
        walked == 2 * PER_WRITER && at == first[0],
        "the backup chain from LIVE reaches {walked} of 50 deployments"
    );
    expect_no_staged(&c.root)?;
    Ok("50 recorded, 1 LIVE = target, backup chain walks all 50".into())
}

// ---------------------------------------------------------------- 7. zero downtime

/// A version the reader can check: framed by `# BEGIN n` / `# END n`, 60 KB in between.
fn framed(n: usize) -> Vec<u8> {
    let pad = "x".repeat(60_000);
    format!(
        "# BEGIN {n}\nPAD = '{pad}'\n\n\ndef process_event(event):\n    return {n}\n# END {n}\n"
    )
    .into_bytes()
}

struct Reader {
    child: std::process::Child,
    stop: std::path::PathBuf,
    out: std::thread::JoinHandle<String>,
}

fn start_reader(c: &Case, target: &Path, tag: &str) -> Result<Reader, String> {
    let stop = c.dir.join(format!("stop-{tag}"));
    let ready = c.dir.join(format!("ready-{tag}"));
    let mut child = Command::new("python3")
        .arg(c.ctx.fixtures.join("reader.py"))
        .arg(target)
        .arg(&stop)
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the reader: {e}"))?;
    let mut pipe = child.stdout.take();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = pipe.as_mut() {
            let _ = std::io::Read::read_to_string(p, &mut s);
        }
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the reader did not start".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Reader { child, stop, out })
}

fn stop_reader(mut r: Reader) -> Result<Value, String> {
    write(&r.stop, b"")?;
    let status = wait_until(&mut r.child, Instant::now() + Duration::from_secs(20))?;
    ensure!(
        status.is_some_and(|s| s.success()),
        "the reader failed or hung"
    );
    let text = r.out.join().unwrap_or_default();
    serde_json::from_str(text.trim()).map_err(|e| format!("reader output {text:?}: {e}"))
}

fn bad_reads(counts: &Value) -> u64 {
    ["empty", "missing", "partial", "uncompilable"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap_or(0))
        .sum()
}

fn zero_downtime(c: &Case) -> Outcome {
    const DEPLOYMENTS: usize = 200;
    let bg = setup(c, ChainKind::SyntaxRuff, &Settings::default())?;
    bg.deploy_ok(AGENT, FILE, &framed(0))?;
    let target = c.root.join(FILE);

    let reader = start_reader(c, &target, "bluegreen")?;
    let deployed: Result<(), String> =
        (1..=DEPLOYMENTS).try_for_each(|i| bg.deploy_ok(AGENT, FILE, &framed(i)).map(|_| ()));
    let counts = stop_reader(reader)?;
    deployed?;
    expect_bytes(&target, &framed(DEPLOYMENTS), "the last version")?;
    let reads = counts["reads"].as_u64().unwrap_or(0);
    ensure!(
        bad_reads(&counts) == 0,
        "the reader saw bad reads during deployments: {counts}"
    );
    ensure!(
        reads >= DEPLOYMENTS as u64,
        "the reader barely ran ({reads} reads)"
    );

    // Negative control: the same reader against a naive truncate-and-write loop.
    let naive = c.root.join("naive/agent.py");
    write(&naive, &framed(0))?;
    let reader = start_reader(c, &naive, "naive")?;
    let writer = super::cli::run(
        Command::new("python3")
            .arg(c.ctx.fixtures.join("naive_writer.py"))
            .arg(&naive)
            .arg("400"),
        None,
        Duration::from_secs(60),
    );
    let control = stop_reader(reader)?;
    let writer = writer?;
    ensure!(
        writer.code == Some(0),
        "naive writer: {}",
        writer.describe()
    );
    let caught = bad_reads(&control);
    ensure!(
        caught > 0,
        "negative control: the reader caught nothing against a naive writer ({control}), so it proves nothing"
    );
    Ok(format!(
        "{reads} reads during {DEPLOYMENTS} deploys, 0 bad; control caught {caught} bad of {}",
        control["reads"]
    ))
}

// ---------------------------------------------------------------- 8. hostile input

#[derive(Debug, Clone, Copy)]
enum Hostile {
    Traversal,
    AbsoluteOutside,
    SymlinkDirEscape,
    SymlinkFileEscape,
    SymlinkBackupsDir,
    SymlinkAgentBackupsDir,
    SymlinkStateDir,
    InvalidAgentIds,
    OversizedCode,
    NulBytes,
    DirectoryTarget,
    RootAsTarget,
    OtherPath,
}

impl Hostile {
    const ALL: [Hostile; 13] = [
        Hostile::Traversal,
        Hostile::AbsoluteOutside,
        Hostile::SymlinkDirEscape,
        Hostile::SymlinkFileEscape,
        Hostile::SymlinkBackupsDir,
        Hostile::SymlinkAgentBackupsDir,
        Hostile::SymlinkStateDir,
        Hostile::InvalidAgentIds,
        Hostile::OversizedCode,
        Hostile::NulBytes,
        Hostile::DirectoryTarget,
        Hostile::RootAsTarget,
        Hostile::OtherPath,
    ];

    fn name(self) -> &'static str {
        match self {
            Hostile::Traversal => "path-traversal",
            Hostile::AbsoluteOutside => "absolute-outside",
            Hostile::SymlinkDirEscape => "symlink-dir-escape",
            Hostile::SymlinkFileEscape => "symlink-file-escape",
            Hostile::SymlinkBackupsDir => "symlink-backups",
            Hostile::SymlinkAgentBackupsDir => "symlink-agent-backups",
            Hostile::SymlinkStateDir => "symlink-state-dir",
            Hostile::InvalidAgentIds => "invalid-agent-ids",
            Hostile::OversizedCode => "oversized-code",
            Hostile::NulBytes => "nul-bytes",
            Hostile::DirectoryTarget => "directory-target",
            Hostile::RootAsTarget => "root-as-target",
            Hostile::OtherPath => "agent-bound-elsewhere",
        }
    }
}

/// One refused request: what it is, the arguments, the code on stdin, the allowed exit codes.
type Attempt = (String, Vec<String>, Vec<u8>, &'static [i32]);

fn symlink(target: &Path, link: &Path) -> Result<(), String> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| format!("symlink {}: {e}", link.display()))
}

fn hostile(c: &Case, case: Hostile) -> Outcome {
    let small_limit = 4096;
    let settings = Settings {
        max_code_bytes: if matches!(case, Hostile::OversizedCode) {
            small_limit
        } else {
            Settings::default().max_code_bytes
        },
        ..Settings::default()
    };
    let bg = setup(c, ChainKind::SyntaxRuff, &settings)?;
    // The sentinel tree lives beside the root; nothing may ever touch it.
    let sentinel = c.dir.join("sentinel");
    write(&sentinel.join("victim.py"), b"VICTIM = 'must stay'\n")?;
    write(&sentinel.join("sub/deep.py"), b"DEEP = 1\n")?;
    std::fs::create_dir_all(sentinel.join("backups/agents/alpha"))
        .map_err(|e| format!("sentinel: {e}"))?;
    let good = good_code("1");

    // Per case: prepare the root, then the attempts that must be refused, with exit codes.
    let mut attempts: Vec<Attempt> = Vec::new();
    let deploy = |agent: &str, file: &str| -> Vec<String> {
        ["deploy", agent, "--file", file, "--code-file", "-"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let outside = sentinel.join("victim.py").display().to_string();
    // Whatever a first command creates in the root is not the refusal's doing.
    bg.run(&["status"], None)?.expect(0, "status")?;
    match case {
        Hostile::Traversal => {
            for p in [
                "../sentinel/victim.py",
                "agents/../../sentinel/victim.py",
                "../../x.py",
            ] {
                attempts.push((p.into(), deploy(AGENT, p), good.clone(), &[2]));
            }
        }
        Hostile::AbsoluteOutside => {
            attempts.push((outside.clone(), deploy(AGENT, &outside), good.clone(), &[2]));
            attempts.push((
                "/etc/passwd".into(),
                deploy(AGENT, "/etc/passwd"),
                good.clone(),
                &[2],
            ));
        }
        Hostile::SymlinkDirEscape => {
            symlink(&sentinel, &c.root.join("agents"))?;
            attempts.push((
                "agents/victim.py".into(),
                deploy(AGENT, "agents/victim.py"),
                good.clone(),
                &[2],
            ));
            attempts.push((
                "agents/new.py".into(),
                deploy(AGENT, "agents/new.py"),
                good.clone(),
                &[2],
            ));
            attempts.push((
                "agents/sub/deep.py".into(),
                deploy(AGENT, "agents/sub/deep.py"),
                good.clone(),
                &[2],
            ));
        }
        Hostile::SymlinkFileEscape => {
            symlink(&sentinel.join("victim.py"), &c.root.join(FILE))?;
            attempts.push((FILE.into(), deploy(AGENT, FILE), good.clone(), &[2]));
        }
        Hostile::SymlinkBackupsDir | Hostile::SymlinkAgentBackupsDir => {
            // A first deployment, then the backups directory is swapped for a way out.
            bg.deploy_ok(AGENT, FILE, &good)?;
            let (link, to) = if matches!(case, Hostile::SymlinkBackupsDir) {
                (c.root.join("backups"), sentinel.join("backups"))
            } else {
                (
                    c.root.join("backups/agents/alpha"),
                    sentinel.join("backups/agents/alpha"),
                )
            };
            if link.exists() {
                std::fs::remove_dir_all(&link).map_err(|e| format!("{}: {e}", link.display()))?;
            }
            symlink(&to, &link)?;
            attempts.push((
                "second deployment".into(),
                deploy(AGENT, FILE),
                good_code("2"),
                &[2, 4],
            ));
        }
        Hostile::SymlinkStateDir => {
            // The registry directory itself leads out of the root.
            std::fs::create_dir_all(sentinel.join("state")).map_err(|e| e.to_string())?;
            let link = c.root.join(".bluegreen");
            if link.exists() {
                std::fs::remove_dir_all(&link).map_err(|e| format!("{}: {e}", link.display()))?;
            }
            symlink(&sentinel.join("state"), &link)?;
            attempts.push((
                "a deployment".into(),
                deploy(AGENT, FILE),
                good.clone(),
                &[2, 4],
            ));
        }
        Hostile::InvalidAgentIds => {
            let long = "a".repeat(129);
            for id in [
                "",
                "../evil",
                "a/b",
                ".hidden",
                "_underscore",
                "a..b",
                "has space",
                "ünïcode",
                long.as_str(),
            ] {
                attempts.push((
                    format!("agent {id:?}"),
                    deploy(id, FILE),
                    good.clone(),
                    &[2],
                ));
            }
        }
        Hostile::OversizedCode => {
            let mut big = good.clone();
            big.resize(small_limit + 1, b'#');
            attempts.push(("limit + 1 bytes".into(), deploy(AGENT, FILE), big, &[2]));
            // The contract's default limit (8 MiB), through a configuration that leaves it unset.
            let defaults = c.dir.join("defaults.toml");
            write(&defaults, b"# every setting at its default\n")?;
            let mut args = vec!["--config".to_string(), defaults.display().to_string()];
            args.extend(deploy(AGENT, FILE));
            let mut huge = good.clone();
            huge.resize(8 * 1024 * 1024 + 1, b'#');
            attempts.push(("default limit (8 MiB) + 1 bytes".into(), args, huge, &[2]));
        }
        Hostile::NulBytes => {
            bg.deploy_ok(AGENT, FILE, &good)?;
            let mut nul = good_code("2");
            nul.extend_from_slice(b"X = 'a\0b'\n");
            attempts.push((
                "code with a NUL byte".into(),
                deploy(AGENT, FILE),
                nul,
                &[1],
            ));
        }
        Hostile::DirectoryTarget => {
            std::fs::create_dir_all(c.root.join("agents/adir")).map_err(|e| e.to_string())?;
            attempts.push((
                "agents/adir".into(),
                deploy(AGENT, "agents/adir"),
                good.clone(),
                &[2],
            ));
        }
        Hostile::RootAsTarget => {
            for p in [".", "", "agents/.."] {
                attempts.push((format!("{p:?}"), deploy(AGENT, p), good.clone(), &[2]));
            }
        }
        Hostile::OtherPath => {
            bg.deploy_ok(AGENT, FILE, &good)?;
            attempts.push((
                "agents/other.py".into(),
                deploy(AGENT, "agents/other.py"),
                good_code("2"),
                &[3],
            ));
        }
    }
    let sentinel_before = tree_digest(&sentinel);
    let root_before = tree_digest(&c.root);
    let events = c
        .root
        .join(".bluegreen/agents")
        .join(AGENT)
        .join("events.jsonl");
    let events_before = std::fs::read_to_string(&events).unwrap_or_default();
    let mut codes = Vec::new();
    for (what, args, code, allowed) in &attempts {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bg.run(&args, Some(code))?;
        let exit = out.code.unwrap_or(-1);
        ensure!(
            allowed.contains(&exit),
            "{what}: expected exit {allowed:?}, got {}",
            out.describe()
        );
        // A rejection (exit 1) records a FAILED deployment (and GREEN's snapshot, taken
        // before verification); everything else is a JSON error.
        if exit != 1 {
            out.expect_error(exit, what)?;
        }
        ensure!(
            tree_digest(&sentinel) == sentinel_before,
            "{what}: the sentinel outside the root changed: {}",
            digest_diff(&sentinel_before, &tree_digest(&sentinel))
        );
        codes.push(exit);
    }
    let root_after = tree_digest(&c.root);
    let changed: Vec<String> = digest_diff(&root_before, &root_after)
        .split(", ")
        .filter(|d| !d.is_empty())
        // A rejected deployment is recorded in the registry (that is the point of history).
        .filter(|d| {
            !(matches!(case, Hostile::NulBytes)
                && (d.contains(".bluegreen/") || d.contains("backups")))
        })
        .map(str::to_owned)
        .collect();
    if !changed.is_empty() {
        // Name the registry events the refused request appended, if any.
        let after = std::fs::read_to_string(&events).unwrap_or_default();
        let appended: Vec<String> = after
            .get(events_before.len()..)
            .unwrap_or("")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| format!("{} {}", v["e"]["event"], v["e"]["status"]))
            .collect();
        return Err(format!(
            "the root changed: {}; registry events appended: {appended:?}",
            changed.join(", ")
        ));
    }
    expect_no_staged(&c.root)?;
    Ok(format!(
        "{} refused (exit {:?}), sentinel and root intact",
        attempts.len(),
        dedup(codes)
    ))
}

fn dedup(mut v: Vec<i32>) -> Vec<i32> {
    v.sort_unstable();
    v.dedup();
    v
}
