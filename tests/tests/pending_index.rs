//! The pending index (`.bluegreen/pending/<agent>`): a crash at every fault point leaves a
//! marker and the next command — a different agent's deploy, or `status` — recovers the
//! agent from it without looking at the others; hostile markers change nothing; a root
//! without the index (an older version's) is still recovered, and its first operation builds
//! the index from a full scan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{AgentId, BlueGreenService, Error, FaultPoint, Limits, Store};
use bluegreen_store::FsStore;
use bluegreen_tests::assert_recovered;

const AGENT: &str = "crashed_agent";
const TARGET: &str = "agents/crashed_agent.py";
const OTHER: &str = "other_agent";
const OTHER_TARGET: &str = "agents/other_agent.py";
const V1: &[u8] = b"def process_event(event):\n    return 1\n";
const V2: &[u8] = b"def process_event(event):\n    return 2\n";

fn service(root: &Path, crash: Option<FaultPoint>) -> (BlueGreenService, Arc<FsStore>) {
    let store = Arc::new(FsStore::open(root).unwrap());
    let mut builder = BlueGreenService::builder(root)
        .store_arc(store.clone())
        .limits(Limits {
            keep_backups: 1,
            lock_timeout: Duration::from_secs(1),
            ..Limits::default()
        });
    if let Some(point) = crash {
        builder = builder.crash_at(point);
    }
    (builder.build().unwrap(), store)
}

fn marker(root: &Path, agent: &str) -> PathBuf {
    root.join(".bluegreen/pending").join(agent)
}

/// Deploys v0 and V1 (and V2 before a rollback), then crashes at `point`.
async fn crash_at(root: &Path, point: FaultPoint) {
    let (healthy, _) = service(root, None);
    healthy
        .deploy_hot_swap(AGENT, b"v0 = 0\n", TARGET)
        .await
        .unwrap();
    healthy.deploy_hot_swap(AGENT, V1, TARGET).await.unwrap();
    if point.is_rollback() {
        healthy.deploy_hot_swap(AGENT, V2, TARGET).await.unwrap();
    }
    assert!(
        !marker(root, AGENT).exists(),
        "a finished operation leaves no marker"
    );
    let (crashing, _) = service(root, Some(point));
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
}

fn pending(store: &dyn Store) -> bool {
    let state = store.load(&AgentId::new(AGENT).unwrap()).unwrap().unwrap();
    state.is_pending()
}

#[tokio::test]
async fn a_crash_at_every_point_leaves_a_marker_the_next_command_recovers() {
    for (i, point) in FaultPoint::ALL.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        crash_at(root, point).await;
        assert!(
            marker(root, AGENT).exists(),
            "{point}: no marker after the crash"
        );

        let (next, store) = service(root, None);
        let by_status = i % 2 == 1;
        let report = if by_status {
            // What `bluegreen status` runs.
            let (report, status) = next.recover_and_status().await.unwrap();
            assert!(status.live.contains_key(AGENT), "{point}: {status:?}");
            report
        } else {
            // What `bluegreen deploy other_agent ...` runs, then the deploy itself.
            let report = next.recover_pending(Some(OTHER)).await.unwrap();
            let other = next.deploy_hot_swap(OTHER, V1, OTHER_TARGET).await.unwrap();
            assert!(other.succeeded());
            report
        };
        assert!(
            report.broken.is_empty() && report.busy.is_empty(),
            "{point}: {report:?}"
        );
        assert!(
            report.actions.iter().all(|a| a.agent_id.as_str() == AGENT),
            "{point}: {report:?}"
        );
        assert!(!pending(store.as_ref()), "{point}: still pending");
        assert_recovered(root, store.as_ref(), AGENT, TARGET, &[Some(V1), Some(V2)]);
        // A crash after the last pruned file was already gone (`during_prune` with one
        // file) leaves nothing to do, so recovery (which locks only agents with work) leaves
        // the stale marker; it costs a look at one tail until the agent's next operation.
        let id = AgentId::new(AGENT).unwrap();
        assert!(
            !marker(root, AGENT).exists() || !store.needs_recovery(&id),
            "{point}: a marker left on an agent with work pending"
        );
        assert!(!marker(root, OTHER).exists(), "{point}");
        let again = next
            .deploy_hot_swap(AGENT, b"v3 = 3\n", TARGET)
            .await
            .unwrap();
        assert!(again.succeeded());
        assert!(
            !marker(root, AGENT).exists(),
            "{point}: marker left after an operation"
        );
    }
}

/// Every file under `root` with its bytes (symlinks as their target).
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, target.as_os_str().as_encoded_bytes().to_vec());
            } else if kind.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                stack.push(path);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn hostile_markers_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"keep me").unwrap();
    let (svc, _) = service(&root, None);
    svc.deploy_hot_swap(AGENT, V1, TARGET).await.unwrap();
    svc.deploy_hot_swap(AGENT, V2, TARGET).await.unwrap();
    drop(svc);

    let index = root.join(".bluegreen/pending");
    // A marker named like an agent with nothing pending (a symlink out of the root), one
    // for an agent with no registry, a directory, and names that are no agent id.
    std::os::unix::fs::symlink(outside.join("victim"), index.join(AGENT)).unwrap();
    std::os::unix::fs::symlink(&outside, index.join("ghost")).unwrap();
    std::fs::create_dir(index.join("ghost_dir")).unwrap();
    std::fs::write(index.join("not an id!"), b"").unwrap();
    std::fs::write(index.join(".hidden"), b"").unwrap();
    let before = tree(&root);

    let (svc, _) = service(&root, None);
    let report = svc.recover_pending(None).await.unwrap();
    assert!(report.actions.is_empty() && report.broken.is_empty() && report.busy.is_empty());
    let (report, status) = svc.recover_and_status().await.unwrap();
    assert!(
        report.actions.is_empty() && report.broken.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        status.live.keys().map(AgentId::as_str).collect::<Vec<_>>(),
        [AGENT]
    );
    assert_eq!(tree(&root), before, "recovery changed the root");
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep me");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    assert!(!root.join(".bluegreen/agents/ghost").exists());
}

#[tokio::test]
async fn a_root_without_the_index_is_recovered_and_its_first_operation_builds_it() {
    for point in [FaultPoint::AfterStage, FaultPoint::AfterRecord] {
        // An older version left a crashed agent and no index.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        crash_at(root, point).await;
        std::fs::remove_dir_all(root.join(".bluegreen/pending")).unwrap();

        // Commands before any operation see it by looking at every agent.
        let (svc, store) = service(root, None);
        let report = svc.recover_pending(Some(OTHER)).await.unwrap();
        assert!(!report.actions.is_empty(), "{point}: {report:?}");
        assert!(!pending(store.as_ref()));
        assert_recovered(root, store.as_ref(), AGENT, TARGET, &[Some(V1), Some(V2)]);
        drop(svc);

        // Again without the index, and this time the first operation (another agent's
        // deploy, before any recovery) builds the index: the crashed agent is in it.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        crash_at(root, point).await;
        std::fs::remove_dir_all(root.join(".bluegreen/pending")).unwrap();
        let (svc, store) = service(root, None);
        svc.deploy_hot_swap(OTHER, V1, OTHER_TARGET).await.unwrap();
        assert!(
            marker(root, AGENT).exists(),
            "{point}: the index misses the crashed agent"
        );
        assert!(!marker(root, OTHER).exists());
        let report = svc.recover_pending(None).await.unwrap();
        assert!(!report.actions.is_empty(), "{point}: {report:?}");
        assert!(!pending(store.as_ref()));
        assert!(!marker(root, AGENT).exists());
    }
}
