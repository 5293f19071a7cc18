//! Crash safety: a crash at every named point, then recovery, then the contract's invariants.
//!
//! In-process crashes use `ServiceBuilder::crash_at` (the service stops dead, no cleanup);
//! real crashes run the `crashee` binary with `BLUEGREEN_FAULT=<point>`, which SIGKILLs
//! itself there, or kill it from outside mid-verification.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{BlueGreenService, Error, FaultPoint, Limits, MemoryStore, Status, Store};
use bluegreen_store::FsStore;
use bluegreen_tests::assert_recovered;

const AGENT: &str = "trading_agent_alpha";
const TARGET: &str = "services/agents/trading_agent_alpha.py";
const V1: &[u8] = b"def process_event(event):\n    return 1\n";
const V2: &[u8] = b"def process_event(event):\n    return 2\n";
const V3: &[u8] = b"def process_event(event):\n    return 3\n";

fn limits() -> Limits {
    Limits {
        keep_backups: 1,
        lock_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

fn service(root: &Path, store: Arc<dyn Store>, crash: Option<FaultPoint>) -> BlueGreenService {
    let mut builder = BlueGreenService::builder(root)
        .store_arc(store)
        .limits(limits());
    if let Some(point) = crash {
        builder = builder.crash_at(point);
    }
    builder.build().unwrap()
}

/// What the target must hold after recovering from a crash at `point`.
fn expected_after(point: FaultPoint) -> &'static [u8] {
    match point {
        FaultPoint::AfterBegin
        | FaultPoint::AfterBackup
        | FaultPoint::AfterStage
        | FaultPoint::DuringVerify => V1, // GREEN: never cut over
        FaultPoint::AfterRename | FaultPoint::AfterRecord | FaultPoint::DuringPrune => V2,
        FaultPoint::RollbackAfterStage => V2, // rollback never took effect
        FaultPoint::RollbackAfterRename => V1, // rollback completed by recovery
    }
}

async fn crash_in_process(point: FaultPoint, make_store: &dyn Fn(&Path) -> Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let healthy = service(root, make_store(root), None);
    healthy
        .deploy_hot_swap(AGENT, b"v0 = 0\n", TARGET)
        .await
        .unwrap();
    healthy.deploy_hot_swap(AGENT, V1, TARGET).await.unwrap();
    if point.is_rollback() {
        healthy.deploy_hot_swap(AGENT, V2, TARGET).await.unwrap();
    }
    drop(healthy);

    let crashing = service(root, make_store(root), Some(point));
    let err = if point.is_rollback() {
        crashing.rollback(AGENT, None, None).await.unwrap_err()
    } else {
        crashing
            .deploy_hot_swap(AGENT, V2, TARGET)
            .await
            .unwrap_err()
    };
    assert!(
        matches!(err, Error::InjectedCrash(p) if p == point),
        "{point}: {err}"
    );
    drop(crashing);

    let store = make_store(root);
    let recovering = service(root, store.clone(), None);
    let report = recovering.recover().await.unwrap();
    assert!(report.busy.is_empty());
    let bytes = assert_recovered(root, store.as_ref(), AGENT, TARGET, &[Some(V1), Some(V2)]);
    assert_eq!(bytes.as_deref(), Some(expected_after(point)), "{point}");

    // The next deployment succeeds at once (1 s lock timeout) and goes live.
    let next = recovering.deploy_hot_swap(AGENT, V3, TARGET).await.unwrap();
    assert!(next.succeeded(), "{point}: {:?}", next.error);
    assert_eq!(std::fs::read(root.join(TARGET)).unwrap(), V3);
    assert_recovered(root, store.as_ref(), AGENT, TARGET, &[Some(V3)]);
}

#[tokio::test]
async fn every_fault_point_recovers_with_file_store() {
    for point in FaultPoint::ALL {
        crash_in_process(point, &|root| Arc::new(FsStore::open(root).unwrap())).await;
    }
}

#[tokio::test]
async fn every_fault_point_recovers_with_memory_store() {
    for point in FaultPoint::ALL {
        // One store shared by the "crashed" and the "recovering" service, like a disk.
        let shared = MemoryStore::new();
        crash_in_process(point, &move |_| Arc::new(shared.clone())).await;
    }
}

#[tokio::test]
async fn interrupted_deployment_is_recorded_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(root).unwrap());
    service(root, store.clone(), None)
        .deploy_hot_swap(AGENT, V1, TARGET)
        .await
        .unwrap();
    let _ = service(root, store.clone(), Some(FaultPoint::AfterStage))
        .deploy_hot_swap(AGENT, V2, TARGET)
        .await;
    // Recovery also happens implicitly when the next operation takes the agent's lock.
    let svc = service(root, Arc::new(FsStore::open(root).unwrap()), None);
    assert_eq!(std::fs::read(root.join(TARGET)).unwrap(), V1);
    svc.deploy_hot_swap(AGENT, V3, TARGET).await.unwrap();
    let statuses: Vec<Status> = svc
        .history(AGENT)
        .unwrap()
        .iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(
        statuses,
        [Status::Live, Status::Aborted, Status::Superseded]
    );
}

// ---- real processes, real SIGKILL ----------------------------------------------------

fn crashee() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crashee"))
}

fn deploy_with_binary(
    root: &Path,
    code: &[u8],
    fault: Option<FaultPoint>,
) -> std::process::ExitStatus {
    let code_file = root.join("code.in");
    std::fs::write(&code_file, code).unwrap();
    let mut cmd = crashee();
    cmd.args([
        "deploy",
        root.to_str().unwrap(),
        AGENT,
        TARGET,
        code_file.to_str().unwrap(),
        "--keep",
        "1",
    ]);
    if let Some(point) = fault {
        cmd.env("BLUEGREEN_FAULT", point.as_str());
    }
    let status = cmd.output().unwrap().status;
    std::fs::remove_file(&code_file).unwrap();
    status
}

fn recover_and_check(root: &Path, allowed: &[Option<&[u8]>]) -> Option<Vec<u8>> {
    let store: Arc<dyn Store> = Arc::new(FsStore::open(root).unwrap());
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(service(root, store.clone(), None).recover())
        .unwrap();
    assert_recovered(root, store.as_ref(), AGENT, TARGET, allowed)
}

#[test]
fn sigkill_at_every_fault_point() {
    for point in FaultPoint::ALL {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(deploy_with_binary(root, b"v0 = 0\n", None).success());
        assert!(deploy_with_binary(root, V1, None).success());
        let status = if point.is_rollback() {
            assert!(deploy_with_binary(root, V2, None).success());
            crashee()
                .args(["rollback", root.to_str().unwrap(), AGENT])
                .env("BLUEGREEN_FAULT", point.as_str())
                .output()
                .unwrap()
                .status
        } else {
            deploy_with_binary(root, V2, Some(point))
        };
        assert_eq!(
            status.signal(),
            Some(9),
            "{point}: not SIGKILLed: {status:?}"
        );
        let bytes = recover_and_check(root, &[Some(V1), Some(V2)]);
        assert_eq!(bytes.as_deref(), Some(expected_after(point)), "{point}");
        // The next process deploys at once.
        assert!(deploy_with_binary(root, V3, None).success(), "{point}");
        assert_eq!(std::fs::read(root.join(TARGET)).unwrap(), V3);
        recover_and_check(root, &[Some(V3)]);
    }
}

#[test]
fn sigkill_from_outside_during_verification() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    assert!(deploy_with_binary(root, V1, None).success());
    let code_file = root.join("code.in");
    std::fs::write(&code_file, V2).unwrap();
    let mut child = crashee()
        .args([
            "deploy",
            root.to_str().unwrap(),
            AGENT,
            TARGET,
            code_file.to_str().unwrap(),
            "--slow-ms",
            "30000",
        ])
        .spawn()
        .unwrap();
    // Wait until BLUE is staged (verification is then running), then kill -9.
    let target = root.join(TARGET);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bluegreen_tests::staged_leftovers(&target).is_empty() {
        assert!(std::time::Instant::now() < deadline, "never staged");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    std::fs::remove_file(&code_file).unwrap();
    let bytes = recover_and_check(root, &[Some(V1)]);
    assert_eq!(bytes.as_deref(), Some(V1));
    assert!(deploy_with_binary(root, V3, None).success());
}

#[test]
fn torn_registry_line_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    assert!(deploy_with_binary(root, V1, None).success());
    let log = root
        .join(".bluegreen/agents")
        .join(AGENT)
        .join("events.jsonl");
    let mut bytes = std::fs::read(&log).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(br#"{"e":{"event":"begin","deployment_id":"dep_01"#);
    std::fs::write(&log, &bytes).unwrap();
    recover_and_check(root, &[Some(V1)]);
    assert!(deploy_with_binary(root, V2, None).success());
    // The torn piece was cut before the next append: the log is whole lines again.
    let after = std::fs::read(&log).unwrap();
    assert!(after.len() > whole && after.ends_with(b"\n"));
    assert!(!String::from_utf8_lossy(&after).contains(r#""dep_01{"#));
    recover_and_check(root, &[Some(V2)]);
}
