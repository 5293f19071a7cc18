//! Unified diffs between two versions of an agent (the `similar` crate), plain or colored.
//!
//! Code is diffed as text: bytes that are not UTF-8 are shown as U+FFFD (the JSON `diff`
//! must be a string; `bluegreen show` prints any version byte-exact).

use anstyle::{AnsiColor, Style};
use serde_json::{json, Value};
use similar::TextDiff;

use super::versions::{Version, VersionError, Versions};

const HEADER: Style = Style::new().effects(anstyle::Effects::BOLD);
const HUNK: Style = AnsiColor::Cyan.on_default();
const REMOVED: Style = AnsiColor::Red.on_default();
const ADDED: Style = AnsiColor::Green.on_default();

/// A diff from one version (`None`: nothing, before the first) to another.
#[derive(Debug, Clone)]
pub struct Diff {
    pub agent_id: String,
    pub from: Option<String>,
    pub to: String,
    /// The unified diff; empty when both versions hold the same bytes.
    pub text: String,
}

impl Diff {
    /// `{"agent_id","from","to","diff"}` (`from` is `null` before the first version).
    pub fn to_json(&self) -> Value {
        json!({
            "agent_id": self.agent_id,
            "from": self.from,
            "to": self.to,
            "diff": self.text,
        })
    }

    /// The diff with ANSI colors: headers bold, hunk lines cyan, removals red, additions
    /// green. The code itself is left as it is (like `git diff`).
    pub fn colored(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + self.text.len() / 4);
        for line in self.text.split_inclusive('\n') {
            let style = if line.starts_with("--- ") || line.starts_with("+++ ") {
                HEADER
            } else if line.starts_with("@@") {
                HUNK
            } else if line.starts_with('-') {
                REMOVED
            } else if line.starts_with('+') {
                ADDED
            } else {
                out.push_str(line);
                continue;
            };
            let (body, newline) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            out.push_str(&format!("{style}{body}{style:#}{newline}"));
        }
        out
    }
}

/// The diff of `from` (default: the predecessor of `to`) against `to` (default: LIVE).
pub fn between(
    versions: &Versions<'_>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Diff, VersionError> {
    let to_record = versions.record(to)?.clone();
    let from_record = match from {
        Some(id) => Some(versions.record(Some(id))?.clone()),
        None => versions.predecessor(&to_record).cloned(),
    };
    let old = from_record
        .as_ref()
        .map(|r| versions.bytes(r))
        .transpose()?;
    let new = versions.bytes(&to_record)?;
    Ok(unified(old.as_ref(), &new))
}

/// The unified diff with headers `--- <agent>@<from>` / `+++ <agent>@<to>`
/// (`--- /dev/null` before the first version).
pub fn unified(old: Option<&Version>, new: &Version) -> Diff {
    let agent = new.agent_id.to_string();
    let name = |v: &Version| format!("{agent}@{}", v.record.deployment_id);
    let old_text = old
        .map(|v| String::from_utf8_lossy(&v.bytes).into_owned())
        .unwrap_or_default();
    let new_text = String::from_utf8_lossy(&new.bytes);
    let old_name = old.map(name).unwrap_or_else(|| "/dev/null".to_owned());
    let text = TextDiff::from_lines(old_text.as_str(), &*new_text)
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &name(new))
        .to_string();
    Diff {
        agent_id: agent,
        from: old.map(|v| v.record.deployment_id.to_string()),
        to: new.record.deployment_id.to_string(),
        text,
    }
}
