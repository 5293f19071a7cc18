//! The change feed's documents, shared by `bluegreen watch --json` and `GET /api/v1/events`.
//!
//! `{"type","agent_id","deployment_id","status","timestamp",...}`, one per registry event:
//!
//! | type | when | `status` |
//! |---|---|---|
//! | `deploy_started` | a deployment began (its journal entry is durable) | `null` |
//! | `deployed` | its cutover is done: it is LIVE (`previous` was LIVE before) | `LIVE` |
//! | `deploy_failed` | verification rejected it; nothing changed | `FAILED` |
//! | `aborted` | recovery closed a deployment a crash interrupted | `ABORTED` |
//! | `rollback_started` | a rollback of `deployment_id` began | `null` |
//! | `rolled_back` | `deployment_id` was rolled back; `to` is LIVE again (`null`: none) | `ROLLED_BACK` |
//! | `rollback_abandoned` | a rollback a crash interrupted did not take effect | `LIVE` |
//!
//! `timestamp` is when it happened, as the registry recorded it: the start for `*_started`
//! and `rolled_back`, the end for `deployed`/`deploy_failed`/`aborted` (so every follower
//! reports one time); only where no time is recorded (`rollback_abandoned`, logs written
//! before the end time was) when the feed read them, bounded by the next event's time (so
//! timestamps never go backwards within an agent). Optional fields:
//! `file_path`, `sha256` (of the deployment's bytes; for `rolled_back`, of the restored
//! bytes), `previous`, `to`, `reason`.

use bluegreen_core::feed::Change;
use bluegreen_core::{Event, Status};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event's type name (see the module docs).
pub fn type_name(change: &Change) -> &'static str {
    match &change.event {
        Event::Begin(_) => "deploy_started",
        Event::Finish { status, .. } => match status {
            Status::Live => "deployed",
            Status::Failed => "deploy_failed",
            Status::Aborted => "aborted",
            Status::Superseded | Status::RolledBack => "deploy_finished",
        },
        Event::RollbackBegin(_) => "rollback_started",
        Event::Rollback { .. } => "rolled_back",
        Event::RollbackAbandoned { .. } => "rollback_abandoned",
    }
}

/// The document of one change.
pub fn document(change: &Change) -> Value {
    let record = change.record.as_ref();
    let mut doc = Map::new();
    doc.insert("type".into(), json!(type_name(change)));
    doc.insert("agent_id".into(), json!(change.agent_id));
    doc.insert("deployment_id".into(), json!(change.deployment_id()));
    let mut status = Value::Null;
    let timestamp = time(&change.at);
    let mut extra = |key: &str, value: Value| {
        if !value.is_null() {
            doc.insert(key.into(), value);
        }
    };
    match &change.event {
        Event::Begin(begin) => {
            extra("file_path", json!(begin.file_path));
            extra("sha256", json!(begin.sha256));
            extra("previous", json!(begin.previous));
        }
        Event::Finish {
            status: s, reason, ..
        } => {
            status = json!(s);
            extra("file_path", json!(record.map(|r| &r.file_path)));
            extra("sha256", json!(record.map(|r| &r.sha256)));
            extra("previous", json!(record.and_then(|r| r.previous.as_ref())));
            extra("reason", json!(reason));
        }
        Event::RollbackBegin(rb) => {
            extra("to", json!(rb.to));
            extra("reason", json!(rb.reason));
        }
        Event::Rollback {
            to, sha256, reason, ..
        } => {
            status = json!(Status::RolledBack);
            extra("to", json!(to));
            extra("file_path", json!(record.map(|r| &r.file_path)));
            extra("sha256", json!(sha256));
            extra("reason", json!(reason));
        }
        Event::RollbackAbandoned { .. } => status = json!(Status::Live),
    }
    doc.insert("status".into(), status);
    doc.insert("timestamp".into(), json!(timestamp));
    Value::Object(doc)
}

/// One human line: `TIME AGENT TYPE DEPLOYMENT [STATUS] [-> TO] [sha256 SHORT] [reason]`.
pub fn human_line(change: &Change) -> String {
    let doc = document(change);
    let field = |key: &str| doc.get(key).and_then(Value::as_str);
    let mut line = format!(
        "{} {} {:<18} {}",
        field("timestamp").unwrap_or_default(),
        change.agent_id,
        type_name(change),
        change.deployment_id()
    );
    if let Some(status) = field("status") {
        line.push_str(&format!(" {status}"));
    }
    if let Some(to) = field("to") {
        line.push_str(&format!(" -> {to}"));
    }
    if let Some(sha) = field("sha256") {
        line.push_str(&format!(" sha256 {}", &sha[..sha.len().min(12)]));
    }
    if let Some(reason) = field("reason") {
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        line.push_str(&format!(" ({reason})"));
    }
    line
}
