//! Unit tests of the registry fold [`AgentState::apply`]: each event kind, LIVE superseding,
//! rollbacks walking back, abandoned rollbacks, pruned snapshots forgotten, and a damaged log
//! degrading to less history.

use bluegreen_core::store::{Begin, RollbackBegin, SnapshotRef};
use bluegreen_core::{AgentState, DeploymentId, Event, Status};
use chrono::{DateTime, TimeZone, Utc};

const TARGET: &str = "agents/alpha.py";

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, second)
        .single()
        .unwrap_or_default()
}

fn snapshot(n: u32) -> String {
    format!("backups/agents/alpha/green_{n}.py")
}

/// A deployment's `Begin`: code `sha-N`, replacing GREEN `sha-(N-1)` snapshotted at
/// `snapshot(N)` (none for the first).
fn begin(n: u32, id: &DeploymentId, previous: Option<&DeploymentId>) -> Event {
    Event::Begin(Begin {
        deployment_id: id.clone(),
        timestamp: at(n),
        file_path: TARGET.to_owned(),
        staged_path: "agents/.alpha.py.bluegreen-staged".to_owned(),
        sha256: format!("sha-{n}"),
        green_sha256: (n > 1).then(|| format!("sha-{}", n - 1)),
        backup_path: (n > 1).then(|| snapshot(n)),
        previous: previous.cloned(),
    })
}

fn finish(id: &DeploymentId, status: Status, backup: Option<String>, pruned: &[String]) -> Event {
    Event::Finish {
        deployment_id: id.clone(),
        status,
        backup_path: backup,
        reason: (status != Status::Live).then(|| "checks failed".to_owned()),
        pruned: pruned.to_vec(),
        at: None,
    }
}

fn rollback(from: &DeploymentId, to: Option<&DeploymentId>, snap: Option<&str>) -> Event {
    Event::Rollback {
        from: from.clone(),
        to: to.cloned(),
        timestamp: at(50),
        sha256: to.map(|_| "restored-sha".to_owned()),
        reason: Some("operator".to_owned()),
        snapshot: snap.map(|path| SnapshotRef {
            path: path.to_owned(),
            sha256: "replaced-sha".to_owned(),
        }),
        pruned: Vec::new(),
    }
}

fn rollback_begin(from: &DeploymentId, to: Option<&DeploymentId>) -> Event {
    Event::RollbackBegin(RollbackBegin {
        from: from.clone(),
        to: to.cloned(),
        timestamp: at(49),
        staged_path: "agents/.alpha.py.bluegreen-staged".to_owned(),
        sha256: None,
        reason: None,
        snapshot: None,
    })
}

/// Deploys `n` versions, each LIVE in turn; returns the state and the ids, oldest first.
fn deployed(n: u32) -> (AgentState, Vec<DeploymentId>) {
    let mut state = AgentState::default();
    let mut ids: Vec<DeploymentId> = Vec::new();
    for i in 1..=n {
        let id = DeploymentId::generate();
        state.apply(&begin(i, &id, ids.last()));
        state.apply(&finish(
            &id,
            Status::Live,
            (i > 1).then(|| snapshot(i)),
            &[],
        ));
        ids.push(id);
    }
    (state, ids)
}

fn statuses(state: &AgentState) -> Vec<Status> {
    state.deployments.iter().map(|d| d.status).collect()
}

#[test]
fn begin_binds_the_file_and_opens_a_pending_deployment() {
    let id = DeploymentId::generate();
    let mut state = AgentState::default();
    state.apply(&begin(1, &id, None));
    assert_eq!(state.file_path.as_deref(), Some(TARGET));
    assert_eq!(state.pending.as_ref().map(|b| &b.deployment_id), Some(&id));
    assert!(state.is_pending());
    assert!(state.deployments.is_empty());
    assert_eq!(state.live(), None);
}

#[test]
fn a_later_begin_does_not_rebind_the_file() {
    let mut state = AgentState::default();
    state.apply(&begin(1, &DeploymentId::generate(), None));
    let Event::Begin(mut other) = begin(2, &DeploymentId::generate(), None) else {
        unreachable!("begin() builds a Begin");
    };
    other.file_path = "agents/other.py".to_owned();
    state.apply(&Event::Begin(other));
    assert_eq!(state.file_path.as_deref(), Some(TARGET));
}

#[test]
fn finish_live_records_the_deployment_from_its_begin() {
    let (state, ids) = deployed(2);
    assert!(!state.is_pending());
    let second = state
        .get(&ids[1])
        .cloned()
        .unwrap_or_else(|| panic!("missing"));
    assert_eq!(second.status, Status::Live);
    assert_eq!(second.timestamp, at(2));
    assert_eq!(second.sha256, "sha-2");
    assert_eq!(second.file_path, TARGET);
    assert_eq!(second.backup_path, Some(snapshot(2)));
    assert_eq!(second.backup_sha256.as_deref(), Some("sha-1"));
    assert_eq!(second.previous.as_ref(), Some(&ids[0]));
    assert_eq!(second.reason, None);
    assert_eq!(state.live(), Some(&second));
}

#[test]
fn finish_without_a_snapshot_records_no_snapshot_hash() {
    let id = DeploymentId::generate();
    let mut state = AgentState::default();
    state.apply(&begin(2, &id, None));
    state.apply(&finish(&id, Status::Live, None, &[]));
    assert_eq!(state.deployments[0].backup_path, None);
    assert_eq!(
        state.deployments[0].backup_sha256, None,
        "the GREEN hash needs a snapshot"
    );
}

#[test]
fn each_live_finish_supersedes_the_previous_live() {
    let (state, ids) = deployed(3);
    assert_eq!(
        statuses(&state),
        [Status::Superseded, Status::Superseded, Status::Live]
    );
    assert_eq!(state.live().map(|d| &d.deployment_id), Some(&ids[2]));
}

#[test]
fn a_failed_or_aborted_finish_leaves_the_live_deployment_live() {
    let (mut state, ids) = deployed(1);
    for (n, status) in [(2, Status::Failed), (3, Status::Aborted)] {
        let id = DeploymentId::generate();
        state.apply(&begin(n, &id, Some(&ids[0])));
        state.apply(&finish(&id, status, Some(snapshot(n)), &[]));
    }
    assert_eq!(
        statuses(&state),
        [Status::Live, Status::Failed, Status::Aborted]
    );
    assert_eq!(
        state.deployments[1].reason.as_deref(),
        Some("checks failed")
    );
    assert_eq!(state.live().map(|d| &d.deployment_id), Some(&ids[0]));
}

#[test]
fn a_finish_that_matches_no_pending_begin_is_ignored() {
    let (mut state, _) = deployed(1);
    let pending = DeploymentId::generate();
    state.apply(&begin(2, &pending, None));
    let before = state.clone();
    state.apply(&finish(&DeploymentId::generate(), Status::Live, None, &[]));
    assert_eq!(state, before, "a stray Finish changes nothing");
    assert_eq!(
        state.pending.as_ref().map(|b| &b.deployment_id),
        Some(&pending)
    );
}

#[test]
fn rollback_begin_opens_and_rollback_closes_a_pending_rollback() {
    let (mut state, ids) = deployed(2);
    state.apply(&rollback_begin(&ids[1], Some(&ids[0])));
    assert!(state.is_pending());
    assert_eq!(
        state.pending_rollback.as_ref().map(|r| &r.from),
        Some(&ids[1])
    );
    state.apply(&rollback(
        &ids[1],
        Some(&ids[0]),
        Some("backups/agents/alpha/rb.py"),
    ));
    assert!(!state.is_pending());
    assert_eq!(statuses(&state), [Status::Live, Status::RolledBack]);
    let restored = &state.deployments[0];
    assert_eq!(
        restored.sha256, "restored-sha",
        "LIVE again with the restored bytes"
    );
    let rolled_back = &state.deployments[1];
    assert_eq!(rolled_back.reason.as_deref(), Some("operator"));
    assert_eq!(state.rollback_snapshots.len(), 1);
    let snap = &state.rollback_snapshots[0];
    assert_eq!(snap.path, "backups/agents/alpha/rb.py");
    assert_eq!(snap.sha256, "replaced-sha");
    assert_eq!(snap.deployment_id, ids[1]);
    assert_eq!(snap.timestamp, at(50));
}

#[test]
fn successive_rollbacks_walk_back_through_the_history() {
    let (mut state, ids) = deployed(3);
    state.apply(&rollback(&ids[2], Some(&ids[1]), None));
    assert_eq!(state.live().map(|d| &d.deployment_id), Some(&ids[1]));
    state.apply(&rollback(&ids[1], Some(&ids[0]), None));
    assert_eq!(state.live().map(|d| &d.deployment_id), Some(&ids[0]));
    assert_eq!(
        statuses(&state),
        [Status::Live, Status::RolledBack, Status::RolledBack]
    );
    assert!(state.rollback_snapshots.is_empty());
}

#[test]
fn a_rollback_to_nothing_leaves_no_live_deployment() {
    let (mut state, ids) = deployed(1);
    state.apply(&rollback(&ids[0], None, None));
    assert_eq!(statuses(&state), [Status::RolledBack]);
    assert_eq!(state.live(), None);
}

#[test]
fn rollback_abandoned_clears_only_the_matching_pending_rollback() {
    let (mut state, ids) = deployed(2);
    state.apply(&rollback_begin(&ids[1], Some(&ids[0])));
    state.apply(&Event::RollbackAbandoned {
        from: ids[0].clone(),
    });
    assert!(
        state.pending_rollback.is_some(),
        "another deployment's abandon"
    );
    state.apply(&Event::RollbackAbandoned {
        from: ids[1].clone(),
    });
    assert!(!state.is_pending());
    assert_eq!(
        statuses(&state),
        [Status::Superseded, Status::Live],
        "nothing changed"
    );
}

#[test]
fn pruned_snapshots_are_forgotten_and_reported_by_the_last_event_only() {
    let (mut state, ids) = deployed(3);
    state.apply(&rollback(
        &ids[2],
        Some(&ids[1]),
        Some("backups/agents/alpha/rb.py"),
    ));
    let id = DeploymentId::generate();
    state.apply(&begin(4, &id, Some(&ids[1])));
    let pruned = [snapshot(2), "backups/agents/alpha/rb.py".to_owned()];
    state.apply(&finish(&id, Status::Live, Some(snapshot(4)), &pruned));
    assert_eq!(state.last_pruned, pruned);
    let second = state
        .get(&ids[1])
        .cloned()
        .unwrap_or_else(|| panic!("missing"));
    assert_eq!(second.backup_path, None);
    assert_eq!(second.backup_sha256, None);
    assert!(state.rollback_snapshots.is_empty());
    let mut referenced: Vec<&str> = state.referenced_backups().collect();
    referenced.sort_unstable();
    assert_eq!(referenced, [snapshot(3).as_str(), snapshot(4).as_str()]);
    // The next event starts with a clean slate.
    state.apply(&rollback_begin(&id, Some(&ids[1])));
    assert!(state.last_pruned.is_empty());
}

#[test]
fn a_rollback_prunes_too() {
    let (mut state, ids) = deployed(3);
    let Event::Rollback {
        from,
        to,
        timestamp,
        sha256,
        reason,
        snapshot: snap,
        ..
    } = rollback(&ids[2], Some(&ids[1]), None)
    else {
        unreachable!("rollback() builds a Rollback");
    };
    state.apply(&Event::Rollback {
        from,
        to,
        timestamp,
        sha256,
        reason,
        snapshot: snap,
        pruned: vec![snapshot(3)],
    });
    assert_eq!(state.last_pruned, [snapshot(3)]);
    assert_eq!(state.get(&ids[2]).and_then(|d| d.backup_path.clone()), None);
    assert_eq!(
        state.get(&ids[1]).and_then(|d| d.backup_path.clone()),
        Some(snapshot(2))
    );
}

#[test]
fn from_events_is_the_fold_of_apply() {
    let ids: Vec<DeploymentId> = (0..2).map(|_| DeploymentId::generate()).collect();
    let events = [
        begin(1, &ids[0], None),
        finish(&ids[0], Status::Live, None, &[]),
        begin(2, &ids[1], Some(&ids[0])),
        finish(&ids[1], Status::Live, Some(snapshot(2)), &[]),
        rollback_begin(&ids[1], Some(&ids[0])),
        rollback(&ids[1], Some(&ids[0]), None),
    ];
    let mut stepwise = AgentState::default();
    for event in &events {
        stepwise.apply(event);
    }
    assert_eq!(AgentState::from_events(&events), stepwise);
    assert_eq!(statuses(&stepwise), [Status::Live, Status::RolledBack]);
}

#[test]
fn a_rollback_naming_unknown_deployments_changes_no_record() {
    let (mut state, _) = deployed(2);
    let before = state.deployments.clone();
    state.apply(&rollback(
        &DeploymentId::generate(),
        Some(&DeploymentId::generate()),
        None,
    ));
    assert_eq!(state.deployments, before);
}
