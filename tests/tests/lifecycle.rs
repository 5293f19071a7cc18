//! The lifecycle as CONTRACT.md describes it: statuses, backups, rollback (walking back and
//! `--to`), health-check rollback, retention, drift — and snapshots of the report shapes.

use std::sync::Arc;

use bluegreen_core::{
    BlueGreenService, Chain, DeployOutcome, Diagnostic, Limits, Status, Store, Verdict, Verifier,
    VerifyRequest,
};
use bluegreen_store::FsStore;
use bluegreen_tests::{redact_json, sha256, tree};

const T: &str = "services/agents/alpha.py";

/// Rejects files containing `BAD`, pointing at the line.
struct NoBad;

#[async_trait::async_trait]
impl Verifier for NoBad {
    fn name(&self) -> &str {
        "no-bad"
    }
    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let code = std::fs::read_to_string(&req.staged).unwrap_or_default();
        match code.lines().position(|l| l.contains("BAD")) {
            Some(i) => Verdict::fail(vec![Diagnostic::new(i as u32 + 1, 1, "BAD is not allowed")]),
            None => Verdict::pass(),
        }
    }
}

fn service(root: &std::path::Path, keep: usize) -> (BlueGreenService, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(FsStore::open(root).unwrap());
    let svc = BlueGreenService::builder(root)
        .store_arc(store.clone())
        .chain(Chain::new().with(NoBad))
        .limits(Limits {
            keep_backups: keep,
            ..Limits::default()
        })
        .build()
        .unwrap();
    (svc, store)
}

fn v(i: usize) -> Vec<u8> {
    format!("def process_event(event):\n    return {i}\n").into_bytes()
}

#[tokio::test]
async fn first_and_second_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = service(dir.path(), 20);
    let first = svc.deploy_hot_swap("alpha", &v(1), T).await.unwrap();
    assert_eq!(first.outcome, DeployOutcome::Live);
    assert_eq!(first.meta.status, Status::Live);
    assert_eq!(first.meta.backup_path, None, "nothing to back up");
    assert_eq!(first.meta.sha256, sha256(&v(1)));
    let stages: Vec<_> = first.stages.iter().map(|s| s.stage).collect();
    assert_eq!(stages, ["backup", "stage", "verify", "cutover"]);

    let second = svc.deploy_hot_swap("alpha", &v(2), T).await.unwrap();
    let backup = second.meta.backup_path.clone().unwrap();
    let name = backup.rsplit('/').next().unwrap();
    assert!(
        backup.starts_with("backups/agents/alpha/green_"),
        "{backup}"
    );
    assert!(
        name.ends_with(&format!("_{}.py", second.deployment_id)),
        "{name}"
    );
    let stamp = &name["green_".len().."green_".len() + 20];
    assert_eq!(
        stamp,
        second
            .meta
            .timestamp
            .format("%Y%m%dT%H%M%S%.3fZ")
            .to_string()
    );
    assert_eq!(std::fs::read(dir.path().join(&backup)).unwrap(), v(1));
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), v(2));

    let history = svc.history("alpha").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0].deployment_id, second.deployment_id,
        "newest first"
    );
    assert_eq!(history[0].status, Status::Live);
    assert_eq!(history[1].status, Status::Superseded);
    let status = svc.active_versions().unwrap();
    assert_eq!(status["alpha"].deployment_id, second.deployment_id);
    assert_eq!(status["alpha"].file_path, T);
}

#[tokio::test]
async fn rejected_deployment_changes_nothing_but_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = service(dir.path(), 20);
    svc.deploy_hot_swap("alpha", &v(1), T).await.unwrap();
    let target_before = std::fs::read(dir.path().join(T)).unwrap();
    let report = svc
        .deploy_hot_swap("alpha", b"x = 1\nBAD\n", T)
        .await
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::Rejected);
    assert_eq!(report.meta.status, Status::Failed);
    assert_eq!(report.verification[0].diagnostics[0].line, 2);
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .contains("BAD is not allowed"));
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), target_before);
    assert!(bluegreen_tests::staged_leftovers(&dir.path().join(T)).is_empty());
    assert_eq!(svc.history("alpha").unwrap()[0].status, Status::Failed);
    assert_eq!(
        svc.active_versions().unwrap()["alpha"].sha256,
        sha256(&v(1))
    );
}

#[tokio::test]
async fn rollback_walks_back_and_to_a_named_version() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, store) = service(dir.path(), 20);
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(
            svc.deploy_hot_swap("alpha", &v(i), T)
                .await
                .unwrap()
                .deployment_id,
        );
    }
    let r = svc.rollback("alpha", None, None).await.unwrap();
    assert_eq!(r.rolled_back.deployment_id, ids[3]);
    assert_eq!(r.rolled_back.status, Status::RolledBack);
    assert_eq!(r.restored.as_ref().unwrap().deployment_id, ids[2]);
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), v(3));
    svc.rollback("alpha", Some(T), None).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), v(2));
    let statuses: Vec<_> = svc
        .history("alpha")
        .unwrap()
        .iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(
        statuses,
        [
            Status::RolledBack,
            Status::RolledBack,
            Status::Live,
            Status::Superseded
        ]
    );
    // --to the rolled-back v4 (it was live once, so its bytes are kept).
    let r = svc
        .rollback("alpha", None, Some(ids[3].as_str()))
        .await
        .unwrap();
    assert_eq!(r.restored.unwrap().status, Status::Live);
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), v(4));
    // --to the first version, then nothing is left to walk back to.
    svc.rollback("alpha", None, Some(ids[0].as_str()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), v(1));
    let before = tree(dir.path());
    let err = svc.rollback("alpha", None, None).await.unwrap_err();
    assert_eq!(err.kind(), bluegreen_core::ErrorKind::Conflict);
    assert_eq!(tree(dir.path()), before);
    // --to the version that is live: conflict; to a failed one: conflict.
    let err = svc
        .rollback("alpha", None, Some(ids[0].as_str()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), bluegreen_core::ErrorKind::Conflict);
    let failed = svc.deploy_hot_swap("alpha", b"BAD\n", T).await.unwrap();
    let err = svc
        .rollback("alpha", None, Some(failed.deployment_id.as_str()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), bluegreen_core::ErrorKind::Conflict);
    bluegreen_tests::assert_recovered(dir.path(), store.as_ref(), "alpha", T, &[Some(&v(1))]);
}

#[tokio::test]
async fn retention_keeps_what_rollback_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, store) = service(dir.path(), 3);
    for i in 1..=10 {
        svc.deploy_hot_swap("alpha", &v(i), T).await.unwrap();
        // Failed deployments take snapshots too; they must not crowd out the useful ones.
        svc.deploy_hot_swap("alpha", b"BAD\n", T).await.unwrap();
    }
    let snapshots = store.list_backups(&"alpha".parse().unwrap()).unwrap();
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");
    for expected in [9, 8, 7] {
        svc.rollback("alpha", None, None).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), v(expected));
    }
    bluegreen_tests::assert_recovered(dir.path(), store.as_ref(), "alpha", T, &[Some(&v(7))]);
    // Pruned snapshots pass through the store's trash; none is left once it is closed.
    drop(svc);
    drop(store);
    let trash = dir.path().join(".bluegreen/trash");
    let left: Vec<_> = std::fs::read_dir(&trash)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(left, Vec::<std::path::PathBuf>::new(), "trash not emptied");
}

/// A cutover's registry record is written without an fsync of its own: the durable journal
/// entry and the durable rename imply it. If a power cut loses it after its pruned snapshot
/// was deleted, recovery must re-derive the same record and the same retention.
#[tokio::test]
async fn a_lost_cutover_record_is_rederived_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, store) = service(dir.path(), 2);
    for i in 1..=5 {
        svc.deploy_hot_swap("alpha", &v(i), T).await.unwrap();
    }
    let before = svc.history("alpha").unwrap();
    let snapshots_before = store.list_backups(&"alpha".parse().unwrap()).unwrap();
    assert_eq!(snapshots_before.len(), 2, "{snapshots_before:?}");
    drop(svc);
    drop(store);

    // What a power cut may leave: the log without its last line (deployment 5's record).
    let log = dir.path().join(".bluegreen/agents/alpha/events.jsonl");
    let bytes = std::fs::read(&log).unwrap();
    let body = &bytes[..bytes.len() - 1];
    let cut = body.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    assert!(String::from_utf8_lossy(&bytes[cut..]).contains("\"finish\""));
    std::fs::write(&log, &bytes[..cut]).unwrap();

    let (svc, store) = service(dir.path(), 2);
    let report = svc.recover().await.unwrap();
    assert!(
        report.actions.iter().any(|a| a.action.contains("LIVE")),
        "{report:?}"
    );
    assert_eq!(svc.history("alpha").unwrap(), before);
    assert_eq!(
        store.list_backups(&"alpha".parse().unwrap()).unwrap(),
        snapshots_before
    );
    bluegreen_tests::assert_recovered(dir.path(), store.as_ref(), "alpha", T, &[Some(&v(5))]);
}

#[tokio::test]
async fn drift_is_backed_up_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = service(dir.path(), 20);
    svc.deploy_hot_swap("alpha", &v(1), T).await.unwrap();
    std::fs::write(dir.path().join(T), b"# hand edit\n").unwrap();
    let r = svc.deploy_hot_swap("alpha", &v(2), T).await.unwrap();
    let snapshot = std::fs::read(dir.path().join(r.meta.backup_path.unwrap())).unwrap();
    assert_eq!(snapshot, b"# hand edit\n", "what was live is never lost");
    svc.rollback("alpha", None, None).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), b"# hand edit\n");
    // The registry tells the truth about what is live now.
    assert_eq!(
        svc.active_versions().unwrap()["alpha"].sha256,
        sha256(b"# hand edit\n")
    );
}

#[tokio::test]
async fn pre_existing_file_is_backed_up_by_the_first_deployment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("services/agents")).unwrap();
    std::fs::write(dir.path().join(T), b"# before bluegreen\n").unwrap();
    let (svc, _) = service(dir.path(), 20);
    let r = svc.deploy_hot_swap("alpha", &v(1), T).await.unwrap();
    let snapshot = std::fs::read(dir.path().join(r.meta.backup_path.unwrap())).unwrap();
    assert_eq!(snapshot, b"# before bluegreen\n");
    let rb = svc.rollback("alpha", None, None).await.unwrap();
    assert!(rb.restored.is_none());
    assert_eq!(
        std::fs::read(dir.path().join(T)).unwrap(),
        b"# before bluegreen\n"
    );
    assert!(svc.active_versions().unwrap().is_empty());
}

/// Fails health checks for code containing `UNHEALTHY`.
struct Health;

#[async_trait::async_trait]
impl Verifier for Health {
    fn name(&self) -> &str {
        "health"
    }
    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let code = std::fs::read_to_string(&req.staged).unwrap_or_default();
        if code.contains("UNHEALTHY") {
            Verdict::fail_msg("probe returned 503")
        } else {
            Verdict::pass()
        }
    }
}

#[tokio::test]
async fn health_failure_restores_green() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).unwrap());
    let svc = BlueGreenService::builder(dir.path())
        .store_arc(store.clone())
        .health_chain(Chain::new().with(Health))
        .build()
        .unwrap();
    // A first deployment that fails health: there was no GREEN, so the target goes away.
    let r = svc
        .deploy_hot_swap("alpha", b"UNHEALTHY = 0\n", T)
        .await
        .unwrap();
    assert_eq!(r.outcome, DeployOutcome::RolledBack);
    assert!(!dir.path().join(T).exists());
    svc.deploy_hot_swap("alpha", &v(1), T).await.unwrap();
    let r = svc
        .deploy_hot_swap("alpha", b"UNHEALTHY = 1\n", T)
        .await
        .unwrap();
    assert_eq!(r.outcome, DeployOutcome::RolledBack);
    assert_eq!(r.meta.status, Status::RolledBack);
    assert!(r.error.as_deref().unwrap().contains("probe returned 503"));
    assert!(!r.health[0].passed);
    assert_eq!(std::fs::read(dir.path().join(T)).unwrap(), v(1));
    let live = svc.active_versions().unwrap();
    assert_eq!(live["alpha"].sha256, sha256(&v(1)));
    bluegreen_tests::assert_recovered(dir.path(), store.as_ref(), "alpha", T, &[Some(&v(1))]);
}

#[tokio::test]
async fn report_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = service(dir.path(), 20);
    let first = svc.deploy_hot_swap("alpha", &v(1), T).await.unwrap();
    let second = svc.deploy_hot_swap("alpha", &v(2), T).await.unwrap();
    let rejected = svc.deploy_hot_swap("alpha", b"BAD\n", T).await.unwrap();
    let rollback = svc.rollback("alpha", None, None).await.unwrap();
    let history = svc.history("alpha").unwrap();
    let redact = |v: serde_json::Value| redact_json(&v, Some(dir.path()));
    insta::assert_json_snapshot!(
        "deploy_first",
        redact(serde_json::to_value(&first).unwrap())
    );
    insta::assert_json_snapshot!(
        "deploy_second",
        redact(serde_json::to_value(&second).unwrap())
    );
    insta::assert_json_snapshot!(
        "deploy_rejected",
        redact(serde_json::to_value(&rejected).unwrap())
    );
    insta::assert_json_snapshot!("rollback", redact(serde_json::to_value(&rollback).unwrap()));
    insta::assert_json_snapshot!("history", redact(serde_json::to_value(&history).unwrap()));
}

#[tokio::test]
async fn permissions_of_the_live_file_are_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = service(dir.path(), 20);
    svc.deploy_hot_swap("alpha", &v(1), T).await.unwrap();
    let target = dir.path().join(T);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o750)).unwrap();
    svc.deploy_hot_swap("alpha", &v(2), T).await.unwrap();
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o750);
}
