//! Retention through the public API: after each deployment or rollback, `keep_backups`
//! snapshots remain per agent — first the ones successive rollbacks from the LIVE deployment
//! would use, then the newest others — and the registry refers to exactly the snapshots the
//! store still holds.

use std::collections::BTreeSet;
use std::time::Duration;

use bluegreen_core::{
    AgentId, BlueGreenService, DeployOutcome, DeploymentId, Error, Limits, MemoryStore, Store,
};

const AGENT: &str = "alpha";
const TARGET: &str = "agents/alpha.py";

fn code(n: usize) -> Vec<u8> {
    format!("def process_event(e):\n    return {n}\n").into_bytes()
}

fn service(root: &std::path::Path, store: &MemoryStore, keep_backups: usize) -> BlueGreenService {
    BlueGreenService::builder(root)
        .store(store.clone())
        .limits(Limits {
            keep_backups,
            ..Limits::default()
        })
        .build()
        .unwrap_or_else(|e| panic!("building the service: {e}"))
}

fn agent() -> AgentId {
    AgentId::new(AGENT).unwrap_or_else(|e| panic!("{e}"))
}

/// Deploys versions `1..=n`; returns their ids, oldest first.
async fn deploy_versions(service: &BlueGreenService, n: usize) -> Vec<DeploymentId> {
    let mut ids = Vec::new();
    for i in 1..=n {
        let report = service
            .deploy_hot_swap(AGENT, &code(i), TARGET)
            .await
            .unwrap_or_else(|e| panic!("deploying v{i}: {e}"));
        assert_eq!(report.outcome, DeployOutcome::Live);
        ids.push(report.deployment_id);
    }
    ids
}

/// The snapshots the store holds for the agent.
fn stored(store: &MemoryStore) -> BTreeSet<String> {
    store
        .list_backups(&agent())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect()
}

/// The snapshots the registry refers to.
fn referenced(store: &MemoryStore) -> BTreeSet<String> {
    let state = store
        .load(&agent())
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no registry entry"));
    state.referenced_backups().map(str::to_owned).collect()
}

/// The bytes of every stored snapshot, sorted.
fn stored_bytes(store: &MemoryStore) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = stored(store)
        .iter()
        .map(|p| {
            store
                .read_backup(p)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("{p} listed but unreadable"))
        })
        .collect();
    out.sort();
    out
}

fn live_bytes(service: &BlueGreenService) -> Vec<u8> {
    std::fs::read(service.root().join(TARGET)).unwrap_or_else(|e| panic!("reading the target: {e}"))
}

#[tokio::test]
async fn retention_keeps_the_snapshots_successive_rollbacks_need() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = MemoryStore::new();
    let service = service(root.path(), &store, 2);
    let ids = deploy_versions(&service, 5).await;

    // v5's snapshot holds v4, v4's holds v3: the two rollbacks from LIVE v5.
    assert_eq!(stored(&store).len(), 2);
    assert_eq!(stored(&store), referenced(&store));
    assert_eq!(stored_bytes(&store), [code(3), code(4)]);
    let history = service.history(AGENT).unwrap_or_else(|e| panic!("{e}"));
    let with_snapshot: BTreeSet<&DeploymentId> = history
        .iter()
        .filter(|d| d.backup_path.is_some())
        .map(|d| &d.deployment_id)
        .collect();
    assert_eq!(with_snapshot, BTreeSet::from([&ids[3], &ids[4]]));
    assert!(history
        .iter()
        .filter(|d| d.backup_path.is_none())
        .all(|d| d.backup_sha256.is_none()));

    service
        .rollback(AGENT, None, None)
        .await
        .unwrap_or_else(|e| panic!("first rollback: {e}"));
    assert_eq!(live_bytes(&service), code(4));
    service
        .rollback(AGENT, None, None)
        .await
        .unwrap_or_else(|e| panic!("second rollback: {e}"));
    assert_eq!(live_bytes(&service), code(3));
    assert!(stored(&store).len() <= 2);
    assert_eq!(stored(&store), referenced(&store));
}

#[tokio::test]
async fn the_rollback_chain_is_kept_before_newer_snapshots() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = MemoryStore::new();
    let service = service(root.path(), &store, 2);
    let ids = deploy_versions(&service, 3).await;
    assert_eq!(stored_bytes(&store), [code(1), code(2)]);

    // Snapshot timestamps have millisecond resolution: make the rollback's the newest.
    std::thread::sleep(Duration::from_millis(5));
    service
        .rollback(AGENT, None, None)
        .await
        .unwrap_or_else(|e| panic!("rollback: {e}"));
    assert_eq!(live_bytes(&service), code(2));
    // LIVE v2's snapshot (v1's bytes) is what the next rollback needs: kept although v3's
    // snapshot (v2's bytes) is newer; the second place goes to the newest other snapshot,
    // the rollback's own of v3's bytes.
    assert_eq!(stored_bytes(&store), [code(1), code(3)]);
    assert_eq!(stored(&store), referenced(&store));

    // Nothing that was ever live is lost: the rolled-back v3 can be restored by id.
    service
        .rollback(AGENT, None, Some(ids[2].as_str()))
        .await
        .unwrap_or_else(|e| panic!("rollback to v3: {e}"));
    assert_eq!(live_bytes(&service), code(3));
    assert!(stored(&store).len() <= 2);
    assert_eq!(stored(&store), referenced(&store));
}

#[tokio::test]
async fn retention_counts_per_agent_and_defaults_to_twenty() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = MemoryStore::new();
    let service = service(root.path(), &store, Limits::default().keep_backups);
    deploy_versions(&service, 23).await;
    let other = service
        .deploy_hot_swap("beta", &code(1), "agents/beta.py")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    service
        .deploy_hot_swap("beta", &code(2), "agents/beta.py")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.outcome, DeployOutcome::Live);

    assert_eq!(stored(&store).len(), 20);
    assert_eq!(stored(&store), referenced(&store));
    // The twenty snapshots v23's rollback chain uses: v3..v22's bytes.
    assert_eq!(stored_bytes(&store), {
        let mut expected: Vec<Vec<u8>> = (3..=22).map(code).collect();
        expected.sort();
        expected
    });
    let beta = AgentId::new("beta").unwrap_or_else(|e| panic!("{e}"));
    let beta_snapshots = store.list_backups(&beta).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        beta_snapshots.len(),
        1,
        "another agent's snapshots do not count"
    );
}

#[test]
fn keeping_no_snapshot_is_refused() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let built = BlueGreenService::builder(root.path())
        .limits(Limits {
            keep_backups: 0,
            ..Limits::default()
        })
        .build();
    assert!(
        matches!(&built, Err(Error::BadInput(m)) if m.contains("keep_backups must be at least 1")),
        "{:?}",
        built.err()
    );
}
