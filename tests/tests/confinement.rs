//! CONTRACT "Candidate code cannot touch what it is checked against", at the service level:
//! a candidate that rewrites GREEN, deletes its snapshot or appends to the registry during
//! verification. Strict (the default): the kernel refuses, the deployment is rejected by the
//! failing check, every file is byte-identical. Off: the damage happens, the integrity check
//! after the chain sees it, and the deployment is refused (Rejected, exit 1) with a reason
//! naming what changed — nothing is restored behind the operator's back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::{BlueGreenService, Chain, DeployOutcome, ErrorKind};
use bluegreen_store::FsStore;
use bluegreen_verify_process::{Sandbox, ScriptOptions, ScriptVerifier};

const GREEN: &[u8] = b"def process_event(e):\n    return e\n";
const TARGET: &str = "agents/alpha.py";

/// A BLUE that, run as a script, damages `what` (relative to the root) first.
fn damaging(action: &str) -> Vec<u8> {
    format!(
        "import os, shutil\n{action}\ndef process_event(e):\n    return [e]\n\
         if __name__ == '__main__':\n    pass\n"
    )
    .into_bytes()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    service: BlueGreenService,
}

async fn fixture(sandbox: Sandbox) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let script = ScriptVerifier::new(
        "tests",
        ScriptOptions {
            command: vec!["python3".into(), "{staged}".into()],
            timeout: Duration::from_secs(20),
            sandbox,
            ..ScriptOptions::default()
        },
    )
    .unwrap();
    let service = BlueGreenService::builder(&root)
        .store(FsStore::open(&root).unwrap())
        .chain(Chain::new().with(script))
        .build()
        .unwrap();
    // GREEN is live (deployed through the same chain).
    let first = service
        .deploy_hot_swap("alpha", GREEN, TARGET)
        .await
        .unwrap();
    assert_eq!(first.outcome, DeployOutcome::Live, "{first:?}");
    Fixture {
        _dir: dir,
        root,
        service,
    }
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// The state a candidate must not touch: GREEN, the snapshots, the agent's registry.
fn guarded(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = files(&root.join("backups"));
    all.extend(files(&root.join(".bluegreen/agents")));
    all.push((root.join(TARGET), std::fs::read(root.join(TARGET)).unwrap()));
    all
}

const ATTACKS: [(&str, &str); 3] = [
    (
        "open('agents/alpha.py', 'w').write('HACKED = 1\\n')",
        "verification changed the live target agents/alpha.py",
    ),
    (
        "shutil.rmtree('backups')",
        "verification changed GREEN's snapshot backups/agents/alpha/",
    ),
    (
        "open('.bluegreen/agents/alpha/events.jsonl', 'a').write('{}\\n')",
        "verification changed the registry of agent alpha",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_confinement_refuses_the_damage_and_changes_nothing() {
    for (action, _) in ATTACKS {
        let f = fixture(Sandbox::Strict).await;
        // A second deployment, so that GREEN has a snapshot to protect.
        let v2 = f
            .service
            .deploy_hot_swap("alpha", &damaging("pass")[..], TARGET)
            .await
            .unwrap();
        assert_eq!(v2.outcome, DeployOutcome::Live, "{v2:?}");
        let before = guarded(&f.root);
        let report = f
            .service
            .deploy_hot_swap("alpha", &damaging(action)[..], TARGET)
            .await
            .unwrap();
        assert_eq!(
            report.outcome,
            DeployOutcome::Rejected,
            "{action}: {report:?}"
        );
        let reason = report.error.clone().unwrap_or_default();
        // The attempt raised (PermissionError) and failed the script; nothing changed, so
        // the integrity check has nothing to add.
        assert!(
            reason.contains("exited with status 1"),
            "{action}: {reason}"
        );
        assert!(
            !reason.contains("verification changed"),
            "{action}: {reason}"
        );
        // Byte-identical (the deployment itself only added GREEN's new snapshot and its
        // records to the log).
        let after = guarded(&f.root);
        for (path, bytes) in before.iter().filter(|(p, _)| !p.ends_with("events.jsonl")) {
            let now = after.iter().find(|(p, _)| p == path).map(|(_, b)| b);
            assert_eq!(now, Some(bytes), "{action}: {}", path.display());
        }
        // The log only grew by the deployment's own records.
        let log = |all: &[(PathBuf, Vec<u8>)]| {
            all.iter()
                .find(|(p, _)| p.ends_with("events.jsonl"))
                .map(|(_, b)| b.clone())
                .unwrap()
        };
        assert!(log(&after).starts_with(&log(&before)), "{action}");
        f.service.rollback("alpha", None, None).await.unwrap();
        assert_eq!(std::fs::read(f.root.join(TARGET)).unwrap(), GREEN);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sandbox_off_the_damage_is_detected_and_the_deployment_refused() {
    for (action, expected) in ATTACKS {
        let f = fixture(Sandbox::Off).await;
        let v2 = f
            .service
            .deploy_hot_swap("alpha", &damaging("pass")[..], TARGET)
            .await;
        let v2 = v2.unwrap();
        assert_eq!(v2.outcome, DeployOutcome::Live, "{v2:?}");
        let deployed = f
            .service
            .deploy_hot_swap("alpha", &damaging(action)[..], TARGET)
            .await;
        // The script passed; the comparison after the chain refused the deployment. When
        // the candidate broke the registry, the refusal cannot be recorded there: an error
        // of the same class (exit 1) says both.
        let reason = match deployed {
            Ok(report) => {
                assert!(report.verification.iter().all(|v| v.passed), "{report:?}");
                assert_eq!(
                    report.outcome,
                    DeployOutcome::Rejected,
                    "{action}: {report:?}"
                );
                report.error.clone().unwrap_or_default()
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Rejected, "{action}: {e}");
                assert!(e.to_string().contains("recording it failed"), "{e}");
                e.to_string()
            }
        };
        assert!(reason.contains(expected), "{action}: {reason}");
        assert!(reason.contains("deployment refused"), "{reason}");
        // BLUE was not made live: the target is whatever the candidate left, not BLUE.
        assert_ne!(
            std::fs::read(f.root.join(TARGET)).ok().as_deref(),
            Some(&damaging(action)[..])
        );
    }
}
