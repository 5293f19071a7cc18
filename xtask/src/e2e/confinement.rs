//! Scenario 14 (issue 14, findings 4-6): candidate code run by a verifier cannot touch what
//! it is checked against, cannot read the server's token, and leaves no process behind —
//! through the real binary, as root, with `BLUEGREEN_TOKEN` in bluegreen's environment.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cli::{digest_diff, ensure, expect_bytes, tree_digest, write, Bg};
use super::{Case, Outcome, Row};

const AGENT: &str = "alpha";
const FILE: &str = "agents/alpha.py";
const GREEN: &[u8] = b"def process_event(event):\n    return event\n";
const TOKEN: &str = "e2e-planted-token-7f3a";

/// The chains of this scenario: one subprocess verifier each.
#[derive(Clone, Copy)]
enum Check {
    StartupCold,
    StartupWarm,
    Script,
}

impl Check {
    const ALL: [Check; 3] = [Check::StartupCold, Check::StartupWarm, Check::Script];

    fn name(self) -> &'static str {
        match self {
            Check::StartupCold => "startup-cold",
            Check::StartupWarm => "startup-warm",
            Check::Script => "script",
        }
    }

    fn toml(self, sandbox: &str) -> String {
        let verifier = match self {
            Check::StartupCold | Check::StartupWarm => format!(
                "kind = \"python-startup\"\nentrypoint = \"process_event\"\nwarm = {}\n",
                matches!(self, Check::StartupWarm)
            ),
            Check::Script => "kind = \"script\"\ncommand = [\"python3\", \"{staged}\"]\n".into(),
        };
        format!(
            "python = \"python3\"\n\n[verifiers.check]\n{verifier}timeout = \"20s\"\n\
             sandbox = \"{sandbox}\"\n\n[chains]\ndefault = [\"check\"]\n"
        )
    }
}

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for check in Check::ALL {
        let config = format!("file/{}", check.name());
        rows.push(Row::run("14 confinement/attack", &config, move |c| {
            attack(c, check)
        }));
        rows.push(Row::run("14 confinement/sandbox-off", &config, move |c| {
            sandbox_off(c, check)
        }));
        rows.push(Row::run("14 confinement/escapee", &config, move |c| {
            escapee(c, check)
        }));
    }
    rows
}

/// A root with GREEN live through `check` (and `sandbox`), and the binary with the token.
fn live_root(c: &Case, check: Check, sandbox: &str) -> Result<Bg, String> {
    write(
        &c.root.join("bluegreen.toml"),
        check.toml(sandbox).as_bytes(),
    )?;
    let bg = Bg::new(&c.ctx.bin, &c.root);
    bg.deploy_ok(AGENT, FILE, GREEN)?;
    // A second deployment: GREEN then has a snapshot of the first.
    bg.deploy_ok(AGENT, FILE, &[GREEN, b"# v2\n"].concat())?;
    Ok(bg)
}

/// `deploy` of `code` with the token planted in bluegreen's environment.
fn deploy_with_token(bg: &Bg, code: &[u8]) -> Result<super::cli::Out, String> {
    let mut cmd = bg.command();
    cmd.env("BLUEGREEN_TOKEN", TOKEN)
        .args(["deploy", AGENT, "--file", FILE, "--code-file", "-"]);
    super::cli::run(&mut cmd, Some(code), Duration::from_secs(90))
}

/// Tries every write and read the contract forbids; raises with a summary (or with the
/// token, if it got it).
const ATTACK: &str = r#"
import os, shutil
tried = []
def attempt(name, action):
    try:
        action()
        tried.append(name + ": DONE")
    except OSError as exc:
        tried.append(name + ": refused " + type(exc).__name__)
def write(rel, mode="w"):
    with open(rel, mode) as f:
        f.write("HACKED\n")
attempt("target", lambda: write("agents/alpha.py"))
attempt("backups", lambda: shutil.rmtree("backups"))
attempt("registry", lambda: write(".bluegreen/agents/alpha/events.jsonl", "a"))
attempt("config", lambda: write("bluegreen.toml"))
pids = {os.getppid()}
pid = os.getppid()
try:
    while pid > 1:
        with open("/proc/%d/stat" % pid) as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        pids.add(pid)
except OSError:
    pass
for pid in sorted(pids):
    def environ(pid=pid):
        with open("/proc/%d/environ" % pid, "rb") as f:
            if b"@TOKEN@" in f.read():
                raise SystemExit("LEAKED @TOKEN@ from %d" % pid)
    attempt("environ %d" % pid, environ)
raise RuntimeError("CONTAINED " + "; ".join(tried))
"#;

fn attack(c: &Case, check: Check) -> Outcome {
    let bg = live_root(c, check, "strict")?;
    let before = tree_digest(&c.root);
    let out = deploy_with_token(&bg, ATTACK.replace("@TOKEN@", TOKEN).as_bytes())?;
    let text = format!("{}{}", out.stdout, out.stderr);
    ensure!(
        out.code == Some(1),
        "the attack was not rejected: {}",
        out.describe()
    );
    ensure!(!text.contains(TOKEN), "the token leaked: {text}");
    ensure!(
        text.contains("CONTAINED") && !text.contains(": DONE"),
        "an attempt succeeded: {text}"
    );
    // Only the deployment's own records changed: the log grew, GREEN got a snapshot.
    let after = tree_digest(&c.root);
    let changed: Vec<_> = before
        .iter()
        .filter(|(path, digest)| after.get(*path) != Some(digest))
        .map(|(path, _)| path.clone())
        .filter(|path| !path.ends_with("events.jsonl"))
        .collect();
    ensure!(
        changed.is_empty(),
        "files changed: {changed:?}\n{}",
        digest_diff(&before, &after)
    );
    expect_bytes(&c.root.join(FILE), &[GREEN, b"# v2\n"].concat(), "GREEN")?;
    let rollback = bg.rollback(AGENT, None)?;
    rollback.expect(0, "rollback after the attack")?;
    expect_bytes(&c.root.join(FILE), GREEN, "the rolled-back version")?;
    Ok("every write and /proc read refused; rollback works".into())
}

fn sandbox_off(c: &Case, check: Check) -> Outcome {
    let bg = live_root(c, check, "off")?;
    let code = b"open('agents/alpha.py', 'w').write('HACKED = 1\\n')\n\
                 def process_event(event):\n    return event\n";
    let out = deploy_with_token(&bg, code)?;
    let doc = out.expect_error(1, "deploy with sandbox off")?;
    let error = doc["error"].as_str().unwrap_or_default();
    ensure!(
        error.contains("verification changed the live target agents/alpha.py")
            && error.contains("deployment refused"),
        "the damage was not reported: {doc}"
    );
    // Nothing is restored behind the operator's back; BLUE did not go live.
    expect_bytes(
        &c.root.join(FILE),
        b"HACKED = 1\n",
        "what the candidate left",
    )?;
    Ok("detected after the chain: exit 1 with the reason".into())
}

const ESCAPEE: &str = r#"
import os, signal, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(w, str(os.getpid()).encode())
        while True:
            time.sleep(1)
    os._exit(0)
os.close(w)
raise RuntimeError("sleeper %d" % int(os.read(r, 32)))
"#;

fn escapee(c: &Case, check: Check) -> Outcome {
    let bg = live_root(c, check, "strict")?;
    let out = deploy_with_token(&bg, ESCAPEE.as_bytes())?;
    let text = format!("{}{}", out.stdout, out.stderr);
    ensure!(out.code == Some(1), "not rejected: {}", out.describe());
    // The first "sleeper <digits>" (a script's traceback also quotes the source line).
    let pid: i32 = text
        .split("sleeper ")
        .skip(1)
        .find_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .ok_or_else(|| format!("no sleeper pid in {text}"))?;
    // A hang guard, not a timing claim.
    let proc_dir = format!("/proc/{pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&proc_dir).exists() {
        ensure!(
            Instant::now() < deadline,
            "sleeper {pid} outlived its check"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(format!("sleeper {pid} died with its check"))
}
