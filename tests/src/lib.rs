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
        let json = serde_json::json!({"elapsed_ms": 5, "id": "dep_0190f0a1b2c3d4e5f60718293a4b5c6d"});
        assert_eq!(
            redact_json(&json, None),
            serde_json::json!({"elapsed_ms": "[ELAPSED]", "id": "[DEPLOYMENT_ID]"})
        );
    }
}
