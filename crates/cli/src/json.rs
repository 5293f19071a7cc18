//! The JSON documents of CONTRACT.md, shared by `--json` output and the HTTP API.

use std::collections::BTreeMap;

use bluegreen_core::{
    AgentId, DeployOutcome, DeployReport, DeploymentRecord, Error, ErrorKind, RecoveryReport,
    RollbackReport, VerifierOutcome,
};
use serde_json::{json, Value};

use crate::exit;

/// `meta`: the contract's five fields of a deployment record.
pub fn meta(record: &DeploymentRecord) -> Value {
    json!({
        "deployment_id": record.deployment_id,
        "timestamp": record.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "backup_path": record.backup_path,
        "status": record.status,
        "sha256": record.sha256,
    })
}

/// A history/status entry: `meta` plus `file_path` (and `reason` when there is one).
pub fn record(record: &DeploymentRecord) -> Value {
    let mut value = meta(record);
    value["file_path"] = json!(record.file_path);
    if let Some(reason) = &record.reason {
        value["reason"] = json!(reason);
    }
    value
}

pub fn verification(outcomes: &[VerifierOutcome]) -> Value {
    json!(outcomes)
}

/// deploy: `{"status","deployment_id","agent_id","file_path","error"?,"meta","stages","verification"}`.
pub fn deploy(report: &DeployReport) -> Value {
    let mut value = json!({
        "status": if report.outcome == DeployOutcome::Live { "success" } else { "failed" },
        "deployment_id": report.deployment_id,
        "agent_id": report.agent_id,
        "file_path": report.file_path,
        "meta": meta(&report.meta),
        "stages": report.stages,
        "verification": verification(&report.verification),
    });
    if let Some(error) = &report.error {
        value["error"] = json!(error);
    }
    if !report.health.is_empty() {
        value["health"] = verification(&report.health);
    }
    value
}

/// rollback: the deploy shape, describing the deployment that is live again (`meta`), plus
/// `rolled_back` (the record that was live and is now `ROLLED_BACK`).
pub fn rollback(report: &RollbackReport) -> Value {
    let shown = report.restored.as_ref().unwrap_or(&report.rolled_back);
    json!({
        "status": "success",
        "deployment_id": shown.deployment_id,
        "agent_id": report.agent_id,
        "file_path": report.file_path,
        "meta": meta(shown),
        "rolled_back": meta(&report.rolled_back),
        "restored_from": report.source_backup,
        "stages": report.stages,
        "verification": [],
    })
}

/// status: `{"agents":{"<agent_id>":{…meta…, "file_path"}}}`.
pub fn status(live: &BTreeMap<AgentId, DeploymentRecord>) -> Value {
    let agents: serde_json::Map<String, Value> = live
        .iter()
        .map(|(agent, rec)| (agent.to_string(), record(rec)))
        .collect();
    json!({ "agents": agents })
}

/// history: `{"agent_id","deployments":[…newest first…]}`.
pub fn history(agent_id: &str, deployments: &[DeploymentRecord]) -> Value {
    json!({
        "agent_id": agent_id,
        "deployments": deployments.iter().map(record).collect::<Vec<_>>(),
    })
}

/// verify: `{"passed","verification"}`.
pub fn verify(passed: bool, outcomes: &[VerifierOutcome]) -> Value {
    json!({ "passed": passed, "verification": verification(outcomes) })
}

pub fn recover(report: &RecoveryReport) -> Value {
    let broken: BTreeMap<AgentId, String> = report.broken.iter().cloned().collect();
    with_errors(
        json!({ "recovered": report.actions, "busy": report.busy }),
        &broken,
    )
}

/// `doc` plus an additive `"errors":{"<agent_id>":"<message>"}` naming the agents whose
/// registry cannot be read (left out when there are none).
pub fn with_errors(mut doc: Value, broken: &BTreeMap<AgentId, String>) -> Value {
    if !broken.is_empty() {
        doc["errors"] = json!(broken);
    }
    doc
}

/// An error as one JSON document: `{"status":"failed","error","error_kind","exit_code"}`
/// (plus `agent_id` when known).
pub fn error(err: &Error, agent_id: Option<&str>) -> Value {
    error_message(&err.to_string(), err.kind(), agent_id)
}

/// [`error`] for errors that are not the core's (config mistakes, unreadable input files).
pub fn error_message(message: &str, kind: ErrorKind, agent_id: Option<&str>) -> Value {
    let mut value = json!({
        "status": "failed",
        "error": message,
        "error_kind": exit::kind_name(kind),
        "exit_code": exit::code_for(kind),
    });
    if let Some(agent) = agent_id {
        value["agent_id"] = json!(agent);
    }
    value
}
