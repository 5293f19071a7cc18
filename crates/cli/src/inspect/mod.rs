//! Inspecting versions and following changes (CONTRACT.md): `show`, `diff`, and the
//! documents they share with the HTTP API.

pub(crate) mod commands;
pub mod diff;
pub mod feed;
pub mod versions;

use base64::Engine as _;
use serde_json::{json, Value};

pub use diff::Diff;
pub use versions::{Version, VersionError, Versions};

/// `show --json`: `{"agent_id","deployment_id","sha256","code"}`; code that is not UTF-8 is
/// `"code": null` plus `"code_base64"` (standard alphabet, padded).
pub fn show_json(version: &Version) -> Value {
    let mut value = json!({
        "agent_id": version.agent_id,
        "deployment_id": version.record.deployment_id,
        "sha256": version.record.sha256,
        "status": version.record.status,
        "file_path": version.record.file_path,
    });
    match std::str::from_utf8(&version.bytes) {
        Ok(text) => value["code"] = json!(text),
        Err(_) => {
            value["code"] = Value::Null;
            value["code_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&version.bytes));
        }
    }
    value
}
