//! Shared helpers for bluegreen's tests.
//!
//! [`redact`] / [`redact_json`] replace what changes from run to run — deployment ids,
//! timestamps, temp paths, durations and hashes — with stable placeholders, so `insta`
//! snapshots only change when behaviour does (the idea of uv's test filters).

use std::path::Path;

/// Placeholders, in the order they are applied to text.
const FILTERS: &[(&str, &str)] = &[
    (r"dep_[0-9a-f]{32}", "[DEPLOYMENT_ID]"),
    (
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "[TIMESTAMP]",
    ),
    (r"\d{8}T\d{6}\.\d{3}Z", "[TS]"),
    (r"\b[0-9a-f]{64}\b", "[SHA256]"),
    (r"\b\d+(\.\d+)?\s?(ms|µs|s)\b", "[DURATION]"),
];

/// Redacts run-specific text: `root` (the temp dir) becomes `[ROOT]`, then [`FILTERS`].
pub fn redact(text: &str, root: Option<&Path>) -> String {
    let mut out = text.to_owned();
    if let Some(root) = root {
        for variant in root_variants(root) {
            out = out.replace(&variant, "[ROOT]");
        }
    }
    for (pattern, replacement) in FILTERS {
        out = regex_replace(pattern, &out, replacement);
    }
    out
}

/// Redacts a JSON document: every string is redacted as text, every `elapsed_ms` becomes
/// `"[ELAPSED]"`.
pub fn redact_json(value: &serde_json::Value, root: Option<&Path>) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(redact(s, root)),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_json(v, root)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "elapsed_ms" {
                        Value::String("[ELAPSED]".into())
                    } else {
                        redact_json(v, root)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `insta` settings with the same filters, for `settings.bind(|| assert_snapshot!(…))`.
pub fn insta_settings(root: Option<&Path>) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    if let Some(root) = root {
        for variant in root_variants(root) {
            settings.add_filter(&regex_escape(&variant), "[ROOT]");
        }
    }
    for (pattern, replacement) in FILTERS {
        settings.add_filter(pattern, *replacement);
    }
    settings
}

fn root_variants(root: &Path) -> Vec<String> {
    let mut v = vec![root.display().to_string()];
    if let Ok(canon) = root.canonicalize() {
        let c = canon.display().to_string();
        if !v.contains(&c) {
            v.insert(0, c);
        }
    }
    v
}

fn regex_escape(s: &str) -> String {
    regex::escape(s)
}

fn regex_replace(pattern: &str, text: &str, replacement: &str) -> String {
    match regex::Regex::new(pattern) {
        Ok(re) => re.replace_all(text, replacement).into_owned(),
        Err(_) => text.to_owned(),
    }
}

/// The workspace's root directory (for fixtures).
pub fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every file under `dir` with its bytes (symlinks recorded by target), for "nothing
/// changed" assertions.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(
        base: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap_or_default();
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if meta.is_dir() {
                out.insert(rel.clone(), b"<dir>".to_vec());
                walk(base, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Lowercase hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    bluegreen_core::util::sha256_hex(bytes)
}

/// Files in the target's directory that are staged leftovers of bluegreen.
pub fn staged_leftovers(target: &Path) -> Vec<String> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let prefix = format!(".{name}.bluegreen-");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The post-recovery invariants of CONTRACT.md, asserted for one agent: the target holds
/// exactly one of `allowed` (`None` = absent); no staged file remains; the registry's LIVE
/// sha256 equals the target's; every recorded snapshot exists with its recorded bytes; the
/// agent's lock is free. Returns the target's bytes.
pub fn assert_recovered(
    root: &Path,
    store: &dyn bluegreen_core::Store,
    agent: &str,
    target_rel: &str,
    allowed: &[Option<&[u8]>],
) -> Option<Vec<u8>> {
    let agent_id = bluegreen_core::AgentId::new(agent).expect("valid agent id");
    let target = root.join(target_rel);
    let bytes = std::fs::read(&target).ok();
    assert!(
        allowed.iter().any(|a| a.map(<[u8]>::to_vec) == bytes),
        "target holds neither GREEN nor BLUE: {:?}",
        bytes
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    );
    assert_eq!(
        staged_leftovers(&target),
        Vec::<String>::new(),
        "staged leftovers"
    );
    let state = store
        .load(&agent_id)
        .expect("registry readable")
        .unwrap_or_default();
    assert!(
        !state.is_pending(),
        "still pending after recovery: {state:?}"
    );
    match (state.live(), &bytes) {
        (Some(live), Some(b)) => assert_eq!(live.sha256, sha256(b), "LIVE sha256 != target"),
        (Some(live), None) => panic!("LIVE {} but target missing", live.deployment_id),
        (None, Some(b)) => {
            // Allowed only when the bytes predate bluegreen (GREEN of a first deployment).
            assert!(
                state.deployments.iter().all(|d| d.sha256 != sha256(b)),
                "target holds a recorded version but nothing is LIVE"
            );
        }
        (None, None) => {}
    }
    for record in &state.deployments {
        if let Some(path) = &record.backup_path {
            let snapshot = store
                .read_backup(path)
                .expect("snapshot readable")
                .unwrap_or_else(|| panic!("recorded snapshot {path} missing"));
            assert_eq!(
                Some(sha256(&snapshot)),
                record.backup_sha256,
                "snapshot {path} bytes differ from the record"
            );
        }
    }
    // Retention left nothing behind: every snapshot file is one the registry refers to.
    let referenced: std::collections::HashSet<&str> = state.referenced_backups().collect();
    for path in store.list_backups(&agent_id).expect("snapshots listable") {
        assert!(
            referenced.contains(path.as_str()),
            "snapshot {path} is on disk but not in the registry"
        );
    }
    // Polled briefly: a child that another test thread is forking right now holds a copy
    // of every descriptor until its exec closes them (O_CLOEXEC), including lock files.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if store
            .try_lock(&agent_id)
            .expect("lock file usable")
            .is_some()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lock still held after recovery"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_run_specific_text() {
        let text = "/tmp/x/a.py dep_0190f0a1b2c3d4e5f60718293a4b5c6d at 2026-11-26T10:00:00.123Z took 12ms \
                    green_20261126T100000.123Z e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            redact(text, Some(Path::new("/tmp/x"))),
            "[ROOT]/a.py [DEPLOYMENT_ID] at [TIMESTAMP] took [DURATION] green_[TS] [SHA256]"
        );
        let json =
            serde_json::json!({"elapsed_ms": 5, "id": "dep_0190f0a1b2c3d4e5f60718293a4b5c6d"});
        assert_eq!(
            redact_json(&json, None),
            serde_json::json!({"elapsed_ms": "[ELAPSED]", "id": "[DEPLOYMENT_ID]"})
        );
    }
}
