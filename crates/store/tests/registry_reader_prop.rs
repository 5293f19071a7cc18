//! Property tests of the registry reader: arbitrary lines (and bytes) in an agent's
//! `events.jsonl` never make the store panic, and whatever state it yields names only
//! paths inside the root of the kinds bluegreen writes (a normalized target, its staged
//! sibling, the agent's own snapshots). Bounded cases: seconds in CI.

use bluegreen_core::paths::{check_registry_target, check_snapshot, check_staged};
use bluegreen_core::{AgentId, Store};
use bluegreen_store::FsStore;
use proptest::prelude::*;

/// Path strings an attacker would write into a line.
fn hostile_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("agents/a.py".to_owned()),
        Just("agents/.a.py.bluegreen-dep_019a0000000070008000000000000001.staged".to_owned()),
        Just("agents/.a.py.bluegreen-rb-019a0000000070008000000000000001.staged".to_owned()),
        Just("backups/agents/a/green_20260101T000000.000Z_dep_1.py".to_owned()),
        Just("backups/agents/b/green_x.py".to_owned()),
        Just("backups/agents/a/../b/green_x.py".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("../outside.py".to_owned()),
        Just(".bluegreen/agents/a/events.jsonl".to_owned()),
        Just("agents/b.py".to_owned()),
        "[a-z./_-]{0,24}",
    ]
}

fn event_line() -> impl Strategy<Value = String> {
    let dep = Just("dep_019a0000000070008000000000000001");
    prop_oneof![
        (
            hostile_path(),
            hostile_path(),
            prop::option::of(hostile_path()),
            dep
        )
            .prop_map(|(file, staged, backup, dep)| {
                serde_json::json!({"e": {"event": "begin",
                "deployment_id": dep, "timestamp": "2026-01-01T00:00:00Z",
                "file_path": file, "staged_path": staged, "sha256": "0".repeat(64),
                "green_sha256": null, "backup_path": backup, "previous": null},
                "live": null})
                .to_string()
            }),
        (
            prop::option::of(hostile_path()),
            prop::collection::vec(hostile_path(), 0..3),
            dep
        )
            .prop_map(
                |(backup, pruned, dep)| serde_json::json!({"e": {"event": "finish",
                "deployment_id": dep, "status": "LIVE", "backup_path": backup,
                "reason": null, "pruned": pruned}, "live": null})
                .to_string()
            ),
        (hostile_path(), dep).prop_map(|(staged, dep)| serde_json::json!({"e": {
            "event": "rollback_begin", "from": dep, "to": null,
            "timestamp": "2026-01-01T00:00:00Z", "staged_path": staged, "sha256": null,
            "reason": null}, "live": null})
        .to_string()),
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_logs_never_panic_or_yield_paths_outside(
        lines in prop::collection::vec(event_line(), 0..6),
        torn in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join(".bluegreen/agents/a");
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut bytes = lines.join("\n").into_bytes();
        if !torn {
            bytes.push(b'\n');
        }
        std::fs::write(log_dir.join("events.jsonl"), &bytes).unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let agent = AgentId::new("a").unwrap();
        let _ = store.pending_agents();
        let _ = store.active_versions();
        if let Ok(Some(state)) = store.load(&agent) {
            if let Some(file) = &state.file_path {
                prop_assert!(check_registry_target(file).is_ok(), "{file:?}");
            }
            if let Some(begin) = &state.pending {
                prop_assert!(check_registry_target(&begin.file_path).is_ok());
                prop_assert!(check_staged(&begin.file_path, &begin.staged_path).is_ok());
            }
            if let Some(rb) = &state.pending_rollback {
                let bound = state.file_path.as_deref().unwrap_or("");
                prop_assert!(check_staged(bound, &rb.staged_path).is_ok());
            }
            for path in state.referenced_backups().chain(state.last_pruned.iter().map(String::as_str)) {
                prop_assert!(check_snapshot("a", path).is_ok(), "{path:?}");
            }
        }
    }
}
