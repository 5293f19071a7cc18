//! Confinement of candidate code (CONTRACT "Candidate code cannot touch what it is checked
//! against"): in cold and warm startup checks and in scripts, a hostile candidate cannot
//! write the target, `backups/`, `.bluegreen/` or the config, cannot read the environment or
//! memory of bluegreen (or of the supervisor, a fork of it) and leaves no process behind,
//! however it detaches. Run as root, as the service usually runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bluegreen_core::{Verdict, Verifier};
use bluegreen_verify_process::{
    Sandbox, ScriptOptions, ScriptVerifier, StartupOptions, StartupVerifier,
};
use common::{pid_exists, verifier_with, Setup, TIMEOUT};

/// The planted secret: present in this process's environment from exec on (see
/// [`in_process_with_token`]), never on the allow-list.
const TOKEN_VAR: &str = "BLUEGREEN_TOKEN";

const ATTACK: &str = include_str!("sandbox/attack.py");

/// Runs the calling test again in a fresh test process whose environment (from exec on, so
/// `/proc/<pid>/environ` shows it) holds the token; `true` in that child, which runs the test.
fn in_process_with_token(test: &str) -> bool {
    if std::env::var_os(TOKEN_VAR).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(TOKEN_VAR, token())
        .status()
        .unwrap();
    assert!(status.success(), "{test} failed with the planted token");
    false
}

fn token() -> String {
    std::env::var(TOKEN_VAR)
        .unwrap_or_else(|_| format!("planted-secret-{}", std::process::id() ^ 0x5a5a))
}

/// The files a candidate must not touch, with their bytes.
struct Guarded {
    root: PathBuf,
    before: BTreeMap<String, Vec<u8>>,
}

const GUARDED: [&str; 4] = [
    "services/agents/alpha.py",
    "backups/agents/alpha/green_1.py",
    ".bluegreen/agents/alpha/events.jsonl",
    "bluegreen.toml",
];

impl Guarded {
    fn plant(root: &Path) -> Self {
        let mut before = BTreeMap::new();
        for (i, rel) in GUARDED.iter().enumerate() {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let bytes = format!("# guarded file {i}\nGREEN = {i}\n").into_bytes();
            std::fs::write(&path, &bytes).unwrap();
            before.insert(rel.to_string(), bytes);
        }
        Self {
            root: root.to_path_buf(),
            before,
        }
    }

    fn assert_unchanged(&self) {
        for (rel, bytes) in &self.before {
            let now = std::fs::read(self.root.join(rel));
            assert_eq!(now.ok().as_ref(), Some(bytes), "{rel} was changed");
        }
        assert!(!self.root.join("dropped.py").exists(), "a file was created");
    }
}

fn attack_code(ptrace: bool) -> String {
    ATTACK
        .replace("@TEST_PID@", &std::process::id().to_string())
        .replace("@TOKEN@", &token())
        .replace("@PTRACE@", if ptrace { "yes" } else { "no" })
}

/// The attempts the candidate reported in its failure message.
fn attempts(verdict: &Verdict) -> BTreeMap<String, String> {
    let message = verdict
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let json = message
        .rsplit_once("ATTACKS ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or_else(|| panic!("no attack report in {verdict:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn assert_all_failed(label: &str, attempts: &BTreeMap<String, String>) {
    let succeeded: Vec<_> = attempts
        .iter()
        .filter(|(_, outcome)| !outcome.starts_with("failed"))
        .collect();
    assert!(succeeded.is_empty(), "{label}: {succeeded:#?}");
    // The candidate reached bluegreen (this process) among the processes it tried.
    let me = std::process::id();
    assert!(
        attempts.contains_key(&format!("e: environ of {me}")),
        "{label}: {attempts:#?}"
    );
    assert!(attempts.keys().filter(|k| k.starts_with("e:")).count() >= 2);
}

fn startup(warm: bool, sandbox: Sandbox) -> StartupVerifier {
    StartupVerifier::new(
        "startup",
        StartupOptions {
            timeout: TIMEOUT,
            warm,
            sandbox,
            ..StartupOptions::default()
        },
    )
}

fn script(sandbox: Sandbox) -> ScriptVerifier {
    ScriptVerifier::new(
        "tests",
        ScriptOptions {
            command: vec!["python3".into(), "{staged}".into()],
            timeout: TIMEOUT,
            sandbox,
            ..ScriptOptions::default()
        },
    )
    .unwrap()
}

async fn attack_with(verifier: &dyn Verifier, label: &str) {
    let setup = Setup::new(&attack_code(true));
    let guarded = Guarded::plant(setup.root());
    let verdict = verifier.verify(&setup.req).await;
    assert!(!verdict.passed, "{label}: {verdict:?}");
    assert_all_failed(label, &attempts(&verdict));
    guarded.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_startup_check_cannot_touch_the_root_or_read_bluegreen() {
    if in_process_with_token("a_cold_startup_check_cannot_touch_the_root_or_read_bluegreen") {
        attack_with(&startup(false, Sandbox::Strict), "cold").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_startup_check_cannot_touch_the_root_or_read_bluegreen() {
    if in_process_with_token("a_warm_startup_check_cannot_touch_the_root_or_read_bluegreen") {
        let verifier = startup(true, Sandbox::Strict);
        // Twice: the spare that was prepared ahead, then a second child.
        for round in 0..2 {
            attack_with(&verifier, &format!("warm round {round}")).await;
            assert!(verifier.zygote_pid().is_some(), "warm mode ran cold");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_cannot_touch_the_root_or_read_bluegreen() {
    if in_process_with_token("a_script_cannot_touch_the_root_or_read_bluegreen") {
        attack_with(&script(Sandbox::Strict), "script").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_the_same_candidate_does_the_damage() {
    // Proves the attack is real: with `sandbox = "off"` the writes and the reads succeed.
    if !in_process_with_token("without_the_sandbox_the_same_candidate_does_the_damage") {
        return;
    }
    for warm in [false, true] {
        let setup = Setup::new(&attack_code(false));
        let _guarded = Guarded::plant(setup.root());
        let verdict = startup(warm, Sandbox::Off).verify(&setup.req).await;
        let attempts = attempts(&verdict);
        let me = std::process::id();
        for key in [
            "a: rewrite target".to_string(),
            "b: delete backups".into(),
            "c: append events".into(),
            "d: rewrite config".into(),
        ] {
            assert!(
                attempts[&key].starts_with("succeeded"),
                "{key}: {attempts:#?}"
            );
        }
        assert_eq!(
            attempts[&format!("e: environ of {me}")],
            "succeeded: TOKEN FOUND",
            "warm={warm}"
        );
        let target = std::fs::read(setup.root().join(GUARDED[0])).ok();
        assert_ne!(
            target.as_deref(),
            Some(&b"# guarded file 0\nGREEN = 0\n"[..])
        );
    }
}

/// A candidate that double-forks a `setsid` sleeper ignoring SIGTERM and names its pid.
const ESCAPEE: &str = r#"
import os, signal, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        while True:
            time.sleep(1)
    os._exit(0)
os.close(w)
pid = int(os.read(r, 32))
raise RuntimeError("sleeper %d" % pid)
"#;

fn sleeper_pid(verdict: &Verdict) -> i32 {
    let message = &verdict.diagnostics[0].message;
    message
        .rsplit_once("sleeper ")
        .and_then(|(_, pid)| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {message:?}"))
}

/// Polls (generously) until `pid` is gone; the bound is a hang guard, not a timing claim.
async fn assert_gone(pid: i32, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pid_exists(pid) {
        assert!(
            Instant::now() < deadline,
            "{label}: sleeper {pid} survived its check"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_setsid_sleeper_dies_with_its_check_in_both_modes() {
    for (warm, sandbox) in [
        (false, Sandbox::Strict),
        (true, Sandbox::Strict),
        (true, Sandbox::Off),
    ] {
        let label = format!("warm={warm} sandbox={sandbox:?}");
        let verifier = startup(warm, sandbox);
        for round in 0..2 {
            let setup = Setup::new(ESCAPEE);
            let verdict = verifier.verify(&setup.req).await;
            assert!(!verdict.passed, "{label}: {verdict:?}");
            assert_gone(sleeper_pid(&verdict), &format!("{label} round {round}")).await;
            if warm {
                assert!(verifier.zygote_pid().is_some(), "{label}: ran cold");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_gets_a_private_writable_scratch_directory() {
    // TMPDIR and HOME point at a scratch directory outside the root that the check may
    // write; the root stays read-only but readable (siblings import).
    let code = "import os, tempfile\n\
                scratch = os.environ['TMPDIR']\n\
                assert os.environ['HOME'] == scratch, os.environ['HOME']\n\
                assert not scratch.startswith(os.getcwd()), scratch\n\
                with tempfile.NamedTemporaryFile(dir=scratch) as f:\n    f.write(b'ok')\n\
                import agent_helpers\n\
                raise RuntimeError('SCRATCH ' + scratch)\n";
    for warm in [false, true] {
        let setup = Setup::new(code);
        let verdict = startup(warm, Sandbox::Strict).verify(&setup.req).await;
        let message = &verdict.diagnostics[0].message;
        let scratch = message
            .split_once("SCRATCH ")
            .map(|(_, s)| s.trim().to_owned())
            .unwrap_or_else(|| panic!("warm={warm}: {message}"));
        // Removed once the check is over.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&scratch).exists() {
            assert!(Instant::now() < deadline, "{scratch} was not removed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_and_off_give_the_same_verdicts_on_the_fixtures() {
    // Confinement changes nothing for agents that only import, compute and print (the root,
    // its siblings and the stdlib stay readable).
    let fixtures = [
        "good_agent.py",
        "imports_sibling.py",
        "large_good_agent.py",
        "raises_at_import.py",
        "sys_exit_at_import.py",
        "missing_entrypoint.py",
        "entrypoint_not_callable.py",
        "entrypoint_wrong_arity.py",
        "prints_100mb.py",
        "allocates_4gib.py",
    ];
    for warm in [false, true] {
        let strict = verifier_with(warm, TIMEOUT, Sandbox::Strict);
        let off = verifier_with(warm, TIMEOUT, Sandbox::Off);
        for fixture in fixtures {
            let setup = Setup::fixture(fixture);
            let confined = strict.verify(&setup.req).await;
            assert_eq!(
                confined,
                off.verify(&setup.req).await,
                "{fixture} warm={warm}"
            );
            if fixture == "good_agent.py" || fixture == "imports_sibling.py" {
                assert!(confined.passed, "{fixture} warm={warm}: {confined:?}");
            }
        }
        if warm {
            assert!(strict.zygote_pid().is_some(), "strict warm mode ran cold");
        }
    }
}

/// A candidate that reads the server's token file and reports what it got.
fn token_file_reader(path: &Path) -> String {
    let path = serde_json::to_string(path.to_str().unwrap()).unwrap();
    format!(
        "try:\n    got = 'read ' + repr(open({path}).read())\n\
         except OSError as e:\n    got = 'failed: ' + type(e).__name__\n\
         raise RuntimeError('TOKEN FILE ' + got)\n"
    )
}

/// A 0400 token file outside the root, as `serve --token-file` reads it.
fn plant_token_file() -> (tempfile::TempDir, PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("bgvp-token-")
        .tempdir()
        .unwrap();
    let path = dir.path().canonicalize().unwrap().join("token");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("file-secret-{}-{nanos}", std::process::id());
    std::fs::write(&path, &token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    (dir, path, token)
}

/// What the token-file reader reported.
fn token_file_report(verdict: &Verdict, label: &str) -> String {
    assert!(!verdict.passed, "{label}: {verdict:?}");
    let message = &verdict.diagnostics[0].message;
    message
        .rsplit_once("TOKEN FILE ")
        .and_then(|(_, got)| got.lines().next())
        .map(|got| got.trim().to_owned())
        .unwrap_or_else(|| panic!("{label}: no report in {verdict:?}"))
}

/// A cold and a warm startup verifier and a script verifier that hide `hidden`.
fn hiding(sandbox: Sandbox, hidden: &Path) -> (StartupVerifier, StartupVerifier, ScriptVerifier) {
    let startup = |warm| StartupOptions {
        timeout: TIMEOUT,
        warm,
        sandbox,
        hidden: vec![hidden.to_path_buf()],
        ..StartupOptions::default()
    };
    let script = ScriptOptions {
        command: vec!["python3".into(), "{staged}".into()],
        timeout: TIMEOUT,
        sandbox,
        hidden: vec![hidden.to_path_buf()],
        ..ScriptOptions::default()
    };
    (
        StartupVerifier::new("startup", startup(false)),
        StartupVerifier::new("startup", startup(true)),
        ScriptVerifier::new("tests", script).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_check_cannot_read_a_hidden_token_file_even_as_root() {
    // The file is 0400 and the check runs as root, like bluegreen: only the mount hides it.
    let (_dir, path, token) = plant_token_file();
    let (cold, warm, script) = hiding(Sandbox::Strict, &path);
    let checks: [(&str, &dyn Verifier); 3] =
        [("cold", &cold), ("warm", &warm), ("script", &script)];
    for (label, verifier) in checks {
        // Warm: the spare prepared ahead, then a second child.
        for round in 0..2 {
            let setup = Setup::new(&token_file_reader(&path));
            let got = token_file_report(&verifier.verify(&setup.req).await, label);
            assert!(!got.contains(&token), "{label} round {round}: {got}");
            assert_eq!(got, "read ''", "{label} round {round}");
        }
    }
    assert!(warm.zygote_pid().is_some(), "warm mode ran cold");
    // bluegreen itself still reads it.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_a_check_reads_the_token_file() {
    // Proves the test above is real: the same candidate, unconfined, gets the token.
    let (_dir, path, token) = plant_token_file();
    let (cold, warm, script) = hiding(Sandbox::Off, &path);
    let checks: [(&str, &dyn Verifier); 3] =
        [("cold", &cold), ("warm", &warm), ("script", &script)];
    for (label, verifier) in checks {
        let setup = Setup::new(&token_file_reader(&path));
        let got = token_file_report(&verifier.verify(&setup.req).await, label);
        assert_eq!(got, format!("read '{token}'"), "{label}");
    }
    assert!(warm.zygote_pid().is_some(), "warm mode ran cold");
}
