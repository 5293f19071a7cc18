//! Test helpers: a temporary root with a staged fixture, and process-table checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bluegreen_core::{AgentId, DeploymentId, Verdict, Verifier, VerifyRequest};
use bluegreen_verify_process::{Sandbox, StartupOptions, StartupVerifier};

/// The default startup-check timeout of these tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/agents")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A root like production's: the agent lives at `services/agents/alpha.py`, a helper module
/// sits in the root, and the candidate is staged as a hidden sibling of the target.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub req: VerifyRequest,
}

impl Setup {
    pub fn new(code: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bgvp-test-")
            .tempdir()
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("agent_helpers.py"), fixture("agent_helpers.py")).unwrap();
        let agents = root.join("services/agents");
        std::fs::create_dir_all(&agents).unwrap();
        let deployment_id = DeploymentId::generate();
        let staged = agents.join(format!(".alpha.py.bluegreen-{deployment_id}.staged"));
        std::fs::write(&staged, code).unwrap();
        let req = VerifyRequest {
            staged,
            target: agents.join("alpha.py"),
            agent_id: AgentId::new("alpha").unwrap(),
            deployment_id,
            root,
        };
        Self { dir, req }
    }

    pub fn fixture(name: &str) -> Self {
        Self::new(&fixture(name))
    }

    pub fn root(&self) -> &Path {
        &self.req.root
    }

    /// Waits (up to 3 s) until no process runs in the root or names it on its command line,
    /// and none of the pids a fixture recorded in `.pids` exists (not even as a zombie).
    pub fn assert_no_survivors(&self) {
        self.assert_no_survivors_within(Duration::from_secs(3));
    }

    /// Like [`Self::assert_no_survivors`] with a custom grace (zero: right now).
    pub fn assert_no_survivors_within(&self, grace: Duration) {
        let recorded: Vec<i32> = std::fs::read_to_string(self.root().join(".pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let deadline = Instant::now() + grace;
        loop {
            let mut left = processes_of(self.root());
            left.extend(
                recorded
                    .iter()
                    .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
                    .map(|pid| describe(*pid)),
            );
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!("processes of the check survived: {left:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn describe(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    format!(
        "{pid}: {} | {}",
        stat.trim(),
        String::from_utf8_lossy(&cmdline).replace('\0', " ")
    )
}

/// Processes whose working directory is `root` or whose command line mentions it.
pub fn processes_of(root: &Path) -> Vec<String> {
    let me = std::process::id() as i32;
    let needle = root.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cwd: Option<PathBuf> = std::fs::read_link(entry.path().join("cwd")).ok();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let mentions = String::from_utf8_lossy(&cmdline).contains(&needle);
        if cwd.as_deref() == Some(root) || mentions {
            found.push(describe(pid));
        }
    }
    found
}

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if pid != me && String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(describe(pid));
        }
    }
    found
}

/// Waits (up to 3 s) until no process carries `marker`.
pub fn assert_none_with(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("processes survived: {left:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `python-startup` verifier checking the `process_event` entrypoint, unconfined
/// (`sandbox = "off"`): these tests' agents record pids and parents in the root. The strict
/// mode gives the same verdicts on the fixtures (`tests/sandbox.rs`).
pub fn verifier(warm: bool, timeout: Duration) -> StartupVerifier {
    verifier_with(warm, timeout, Sandbox::Off)
}

/// [`verifier`] with the given confinement.
pub fn verifier_with(warm: bool, timeout: Duration, sandbox: Sandbox) -> StartupVerifier {
    StartupVerifier::new(
        "startup",
        StartupOptions {
            entrypoint: Some("process_event".into()),
            timeout,
            warm,
            sandbox,
            ..StartupOptions::default()
        },
    )
}

/// The pids whose parent is `parent` (zombies included).
pub fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            ppid == Some(parent)
        })
        .collect()
}

/// Whether `pid` is in the process table (a zombie counts).
pub fn pid_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls `condition` every 10 ms; fails the test after 5 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A warm verifier whose zygote is running (after one check), and the zygote's pid.
pub async fn started_warm_verifier() -> (StartupVerifier, i32) {
    let verifier = verifier(true, TIMEOUT);
    let warm_up = Setup::fixture("good_agent.py");
    assert!(verifier.verify(&warm_up.req).await.passed);
    let zygote = verifier.zygote_pid().expect("zygote running");
    (verifier, zygote)
}

/// Checks an agent that records its parent process, asserting that it passed and ran in a
/// child of `zygote` (warm, not cold).
pub async fn assert_passes_warm(verifier: &StartupVerifier, zygote: i32, label: &str) {
    let setup = Setup::new(
        "import os\nwith open('parent', 'w') as f:\n    f.write(str(os.getppid()))\n\
         def process_event(e):\n    return e\n",
    );
    assert_eq!(
        verifier.verify(&setup.req).await,
        Verdict::pass(),
        "{label}"
    );
    let parent = std::fs::read_to_string(setup.root().join("parent")).unwrap();
    assert_eq!(parent, zygote.to_string(), "{label} ran cold");
}
