//! Bytecode coherence (CONTRACT.md "Python semantics of a swap"): after every cutover,
//! rollback, automatic rollback and recovery a fresh real `python3` runs the LIVE bytes,
//! although `__pycache__` held bytecode of the replaced version with the same size, written
//! in the same second (CPython's default check compares only mtime seconds and size).
//!
//! Each round pins the replaced version's mtime to a coming second, lets real interpreters
//! cache it, and swaps within that second (see `Pinned`): the case that broke before the
//! fix. Rounds whose swap missed the second do not count, so a slow machine cannot make a
//! test pass vacuously.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bluegreen_core::{
    BlueGreenService, Chain, DeployOutcome, FaultPoint, Verdict, Verifier, VerifyRequest,
};
use bluegreen_store::FsStore;

const AGENT: &str = "alpha";
const TARGET: &str = "mod.py";
/// Rounds per test; more run if too few of them swapped within their pinned second.
const ROUNDS: u32 = 10;
const MIN_SAME_SECOND_ROUNDS: u32 = 3;
const MAX_ROUNDS: u32 = 40;

/// `X = <n>` — every version has the same size (n has three digits).
fn version(n: u32) -> Vec<u8> {
    assert!((100..1000).contains(&n));
    format!("X = {n}\n").into_bytes()
}

fn service(root: &Path) -> BlueGreenService {
    BlueGreenService::builder(root)
        .store(FsStore::open(root).unwrap())
        .build()
        .unwrap()
}

/// A fresh interpreter that may write `__pycache__`, started in the root.
fn python(root: &Path, flags: &[&str], code: &str) -> std::process::Output {
    Command::new("python3")
        .args(flags)
        .arg("-c")
        .arg(code)
        .current_dir(root)
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .env_remove("PYTHONPYCACHEPREFIX")
        .env_remove("PYTHONSAFEPATH")
        .env_remove("PYTHONPATH")
        .output()
        .expect("python3 is required (CI always has it)")
}

/// What `import mod; print(mod.X)` prints in a fresh interpreter.
fn live_x(root: &Path, flags: &[&str]) -> String {
    let out = python(root, flags, "import mod; print(mod.X)");
    assert!(
        out.status.success(),
        "python3 {flags:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The value the target's bytes hold now.
fn file_x(root: &Path) -> String {
    let text = std::fs::read_to_string(root.join(TARGET)).unwrap();
    text.trim().trim_start_matches("X = ").to_owned()
}

/// Requires every interpreter flavour (`flags`) to run the bytes on disk.
fn assert_runs_live(root: &Path, flags: &[&[&str]], what: &str) {
    let expected = file_x(root);
    for f in flags {
        assert_eq!(
            live_x(root, f),
            expected,
            "{what}: python3 {f:?} ran stale bytecode"
        );
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One round's same-second setup, made deterministic: the live file's mtime is set to a
/// coming second `S` (as if it had been written then), the test's interpreters cache it
/// (recording `S` and its size, as CPython does), and the swap waits until the wall clock is
/// in `S`. Without monotonic mtimes the replacing file is then written in `S` too — same
/// mtime second, same size: CPython takes the old bytecode for valid.
struct Pinned(u64);

impl Pinned {
    fn live_file(root: &Path) -> Self {
        let second = secs(SystemTime::now()) + 2;
        let file = std::fs::File::open(root.join(TARGET)).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(second))
            .unwrap();
        Pinned(second)
    }

    /// Sleeps until second `S` has begun; then comes the swap.
    fn wait(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let at = Duration::from_secs(self.0);
        if now < at {
            std::thread::sleep(at - now);
        }
    }
}

/// Counts rounds whose swap really happened in the pinned second (where the old code broke)
/// and runs more if too few did (a machine too slow to swap within a second).
struct Rounds {
    done: u32,
    same_second: u32,
    wanted: u32,
}

impl Rounds {
    fn new(wanted: u32) -> Self {
        Rounds {
            done: 0,
            same_second: 0,
            wanted,
        }
    }

    fn more(&self) -> bool {
        self.done < self.wanted
            || (self.same_second < MIN_SAME_SECOND_ROUNDS && self.done < MAX_ROUNDS)
    }

    /// Right after the swap, which began in `pinned` (after `Pinned::wait`).
    fn swapped(&mut self, pinned: &Pinned) {
        self.done += 1;
        if secs(SystemTime::now()) == pinned.0 {
            self.same_second += 1;
        }
    }

    fn assert_meaningful(&self) {
        assert!(
            self.same_second >= MIN_SAME_SECOND_ROUNDS.min(self.wanted),
            "only {} of {} swaps happened within their pinned second: the test proved nothing",
            self.same_second,
            self.done
        );
    }
}

const PLAIN: &[&[&str]] = &[&[]];
const ALL_OPT_LEVELS: &[&[&str]] = &[&[], &["-O"], &["-OO"]];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_interpreter_runs_the_live_bytes_after_same_second_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let svc = service(root);
    let mut rounds = Rounds::new(ROUNDS);
    let mut n = 100;
    svc.deploy_hot_swap(AGENT, &version(n), TARGET)
        .await
        .unwrap();
    while rounds.more() {
        let pinned = Pinned::live_file(root);
        assert_runs_live(root, PLAIN, "before the deploy");
        pinned.wait();
        n += 1;
        svc.deploy_hot_swap(AGENT, &version(n), TARGET)
            .await
            .unwrap();
        rounds.swapped(&pinned);
        assert_runs_live(root, PLAIN, &format!("after deploying X = {n}"));
    }
    rounds.assert_meaningful();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_interpreter_runs_the_restored_bytes_after_same_second_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let svc = service(root);
    let mut rounds = Rounds::new(ROUNDS);
    let mut n = 100;
    while rounds.more() {
        for _ in 0..2 {
            n += 1;
            svc.deploy_hot_swap(AGENT, &version(n), TARGET)
                .await
                .unwrap();
        }
        let pinned = Pinned::live_file(root);
        assert_runs_live(root, PLAIN, "before the rollback");
        pinned.wait();
        svc.rollback(AGENT, None, None).await.unwrap();
        rounds.swapped(&pinned);
        assert_eq!(file_x(root), (n - 1).to_string());
        assert_runs_live(root, PLAIN, "after a rollback");
    }
    rounds.assert_meaningful();
}

/// A health check that pins the live (unhealthy) file's mtime, imports it in a real
/// interpreter (which caches its bytecode, as any process started during probation would),
/// waits for the pinned second and fails: the automatic rollback then writes GREEN back in
/// that second.
#[derive(Default)]
struct ImportingHealth {
    pinned: std::sync::Mutex<Option<u64>>,
}

#[async_trait::async_trait]
impl Verifier for ImportingHealth {
    fn name(&self) -> &str {
        "importing-health"
    }

    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let root = req.root.clone();
        let (printed, pinned) = tokio::task::spawn_blocking(move || {
            let pinned = Pinned::live_file(&root);
            let printed = live_x(&root, &[]);
            pinned.wait();
            (printed, pinned.0)
        })
        .await
        .unwrap();
        *self.pinned.lock().unwrap() = Some(pinned);
        let code = std::fs::read_to_string(&req.staged).unwrap();
        assert!(
            code.starts_with(&format!("X = {printed} ")),
            "probation ran stale bytecode: {code:?} vs {printed}"
        );
        if code.contains("# bad") {
            Verdict::fail_msg("unhealthy")
        } else {
            Verdict::pass()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_interpreter_runs_green_after_an_automatic_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let svc = service(root);
    let health = std::sync::Arc::new(ImportingHealth::default());
    let probing = BlueGreenService::builder(root)
        .store(FsStore::open(root).unwrap())
        .health_chain(Chain::new().with_arc(health.clone()))
        .build()
        .unwrap();
    let mut rounds = Rounds::new(ROUNDS / 2);
    let mut n = 100;
    while rounds.more() {
        n += 1;
        // Same size as the unhealthy version below.
        let green = format!("X = {n}  # ok!\n");
        svc.deploy_hot_swap(AGENT, green.as_bytes(), TARGET)
            .await
            .unwrap();
        assert_eq!(live_x(root, &[]), n.to_string());
        let bad = format!("X = {}  # bad\n", n + 500);
        let report = probing
            .deploy_hot_swap(AGENT, bad.as_bytes(), TARGET)
            .await
            .unwrap();
        let pinned = health.pinned.lock().unwrap().take().unwrap();
        rounds.swapped(&Pinned(pinned));
        assert_eq!(report.outcome, DeployOutcome::RolledBack);
        assert_eq!(std::fs::read_to_string(root.join(TARGET)).unwrap(), green);
        assert_eq!(
            live_x(root, &[]),
            n.to_string(),
            "after the automatic rollback python3 ran the unhealthy version's bytecode"
        );
    }
    rounds.assert_meaningful();
}

/// `py_compile` with the unchecked-hash mode: CPython never validates such a pyc against
/// its source, so only removing it keeps an interpreter off it.
fn compile_unchecked(root: &Path) {
    let out = python(
        root,
        &[],
        "import py_compile as p; p.compile('mod.py', doraise=True, \
         invalidation_mode=p.PycInvalidationMode.UNCHECKED_HASH)",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchecked_hash_bytecode_does_not_survive_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let svc = service(root);
    svc.deploy_hot_swap(AGENT, &version(101), TARGET)
        .await
        .unwrap();
    compile_unchecked(root);
    assert_eq!(live_x(root, &[]), "101");
    svc.deploy_hot_swap(AGENT, &version(102), TARGET)
        .await
        .unwrap();
    assert_runs_live(root, PLAIN, "after a deploy over unchecked-hash bytecode");
    compile_unchecked(root);
    svc.rollback(AGENT, None, None).await.unwrap();
    assert_runs_live(root, PLAIN, "after a rollback over unchecked-hash bytecode");
}

async fn crash_then_recover(point: FaultPoint) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let svc = service(root);
    let mut rounds = Rounds::new(ROUNDS / 2);
    let mut n = 100;
    while rounds.more() {
        n += 2;
        svc.deploy_hot_swap(AGENT, &version(n), TARGET)
            .await
            .unwrap();
        if point.is_rollback() {
            // The interrupted rollback restores n over n + 1.
            svc.deploy_hot_swap(AGENT, &version(n + 1), TARGET)
                .await
                .unwrap();
        }
        // Timestamp bytecode of the replaced version in the pinned second, and
        // unchecked-hash bytecode under the -O name.
        let pinned = Pinned::live_file(root);
        assert_runs_live(root, PLAIN, "before the crash");
        let out = python(
            root,
            &["-O"],
            "import py_compile as p; p.compile('mod.py', doraise=True, optimize=1, \
             invalidation_mode=p.PycInvalidationMode.UNCHECKED_HASH)",
        );
        assert!(out.status.success());
        let crashing = BlueGreenService::builder(root)
            .store(FsStore::open(root).unwrap())
            .crash_at(point)
            .build()
            .unwrap();
        pinned.wait();
        let err = if point.is_rollback() {
            crashing.rollback(AGENT, None, None).await.unwrap_err()
        } else {
            crashing
                .deploy_hot_swap(AGENT, &version(n + 1), TARGET)
                .await
                .unwrap_err()
        };
        rounds.swapped(&pinned);
        assert!(matches!(err, bluegreen_core::Error::InjectedCrash(p) if p == point));
        drop(crashing);
        service(root).recover().await.unwrap();
        let expected = if point.is_rollback() { n } else { n + 1 };
        assert_eq!(file_x(root), expected.to_string(), "{point}");
        assert_runs_live(
            root,
            ALL_OPT_LEVELS,
            &format!("after recovery from {point}"),
        );
    }
    rounds.assert_meaningful();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_interpreter_runs_the_live_bytes_after_recovery_from_a_crash_after_rename() {
    crash_then_recover(FaultPoint::AfterRename).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_interpreter_runs_the_restored_bytes_after_recovery_of_a_rollback() {
    crash_then_recover(FaultPoint::RollbackAfterRename).await;
}

/// Every cached file of `mod` in `__pycache__`.
fn caches_of_mod(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("__pycache__")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mod."))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_optimization_level_runs_the_live_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let svc = service(root);
    let mut rounds = Rounds::new(ROUNDS / 2);
    let mut n = 100;
    svc.deploy_hot_swap(AGENT, &version(n), TARGET)
        .await
        .unwrap();
    while rounds.more() {
        let pinned = Pinned::live_file(root);
        assert_runs_live(root, ALL_OPT_LEVELS, "before a deploy");
        assert_eq!(caches_of_mod(root).len(), 3, "{:?}", caches_of_mod(root));
        pinned.wait();
        n += 1;
        svc.deploy_hot_swap(AGENT, &version(n), TARGET)
            .await
            .unwrap();
        rounds.swapped(&pinned);
        assert_eq!(caches_of_mod(root), Vec::<String>::new(), "after a deploy");
        assert_runs_live(root, ALL_OPT_LEVELS, "after a same-second deploy");

        let pinned = Pinned::live_file(root);
        assert_runs_live(root, ALL_OPT_LEVELS, "before a rollback");
        pinned.wait();
        svc.rollback(AGENT, None, None).await.unwrap();
        rounds.swapped(&pinned);
        assert_eq!(
            caches_of_mod(root),
            Vec::<String>::new(),
            "after a rollback"
        );
        assert_runs_live(root, ALL_OPT_LEVELS, "after a same-second rollback");
        // Live again, for the next round.
        n += 1;
        svc.deploy_hot_swap(AGENT, &version(n), TARGET)
            .await
            .unwrap();
    }
    rounds.assert_meaningful();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_pyc_beside_the_source_is_removed_by_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let svc = service(root);
    let legacy = root.join("mod.pyc");
    let compile_legacy = || {
        let out = python(
            root,
            &[],
            "import py_compile as p; p.compile('mod.py', cfile='mod.pyc', doraise=True)",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(legacy.is_file());
    };
    svc.deploy_hot_swap(AGENT, &version(101), TARGET)
        .await
        .unwrap();
    compile_legacy();
    svc.deploy_hot_swap(AGENT, &version(102), TARGET)
        .await
        .unwrap();
    assert!(!legacy.exists(), "a deploy left the legacy mod.pyc");
    compile_legacy();
    svc.rollback(AGENT, None, None).await.unwrap();
    assert!(!legacy.exists(), "a rollback left the legacy mod.pyc");
    assert_runs_live(root, PLAIN, "after the rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rollback_that_removes_the_target_leaves_no_importable_bytecode() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A module that once lived here, compiled to a legacy pyc, then deleted: the pyc alone
    // would still import (sourceless) once the target is gone again.
    std::fs::write(root.join(TARGET), "X = 999  # bad\n").unwrap();
    let out = python(
        root,
        &[],
        "import py_compile as p; p.compile('mod.py', cfile='mod.pyc', doraise=True)",
    );
    assert!(out.status.success());
    std::fs::remove_file(root.join(TARGET)).unwrap();
    let probing = BlueGreenService::builder(root)
        .store(FsStore::open(root).unwrap())
        .health_chain(Chain::new().with(ImportingHealth::default()))
        .build()
        .unwrap();
    let report = probing
        .deploy_hot_swap(AGENT, b"X = 123  # bad\n", TARGET)
        .await
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::RolledBack);
    assert!(!root.join(TARGET).exists());
    let out = python(root, &[], "import mod");
    assert!(
        !out.status.success(),
        "python3 imported mod although its source is gone: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every `*.pyc` under `dir`, recursively (not following symlinks).
fn all_pycs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            all_pycs(&path, out);
        } else if path.extension().is_some_and(|e| e == "pyc") {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bytecode_of_staged_or_snapshot_names_is_left_anywhere() {
    use bluegreen_verify_process::{StartupOptions, StartupVerifier};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let target = "services/agents/alpha.py";
    for warm in [true, false] {
        let startup = || {
            StartupVerifier::new(
                "startup",
                StartupOptions {
                    warm,
                    ..StartupOptions::default()
                },
            )
        };
        let svc = BlueGreenService::builder(root)
            .store(FsStore::open(root).unwrap())
            .chain(Chain::new().with(startup()))
            .health_chain(Chain::new().with(startup()))
            .build()
            .unwrap();
        for n in 101..105 {
            let code = format!("import json\nX = {n}\n");
            let report = svc
                .deploy_hot_swap(AGENT, code.as_bytes(), target)
                .await
                .unwrap();
            assert_eq!(report.outcome, DeployOutcome::Live, "{:?}", report.error);
            let out = python(root, &[], "import services.agents.alpha as m; print(m.X)");
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), n.to_string());
        }
        svc.rollback(AGENT, None, None).await.unwrap();
        let out = python(root, &[], "import services.agents.alpha as m; print(m.X)");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "103");
    }
    let mut pycs = Vec::new();
    all_pycs(root, &mut pycs);
    let rel: Vec<String> = pycs
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(
        rel.iter()
            .any(|p| p.starts_with("services/agents/__pycache__/alpha.")),
        "the interpreters wrote no bytecode at all (PYTHONDONTWRITEBYTECODE?): {rel:?}"
    );
    let foreign: Vec<&String> = rel
        .iter()
        .filter(|p| {
            p.contains("bluegreen-")
                || p.contains("staged")
                || p.starts_with("backups/")
                || p.starts_with(".bluegreen/")
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "bytecode of staged or snapshot names: {foreign:?}"
    );
}
