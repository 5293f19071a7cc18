//! Human output: one line per stage with its time, compiler-style diagnostics with the
//! source line and a caret (annotate-snippets), short tables for status and history.
//!
//! Everything is written with ANSI styles; the caller writes through `anstream`, which
//! strips them unless stdout is a terminal and `NO_COLOR` is unset.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use anstyle::{AnsiColor, Style};
use bluegreen_core::{
    AgentId, DeployOutcome, DeployReport, DeploymentRecord, Diagnostic, RecoveryReport,
    RollbackReport, StageTiming, Status, VerifierOutcome,
};

const OK: Style = AnsiColor::Green.on_default();
const BAD: Style = AnsiColor::Red.on_default().effects(anstyle::Effects::BOLD);
const DIM: Style = Style::new().effects(anstyle::Effects::DIMMED);
const BOLD: Style = Style::new().effects(anstyle::Effects::BOLD);

/// How much to print: `-q` drops the stage lines, keeping diagnostics and the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbosity {
    pub stages: bool,
}

fn mark(ok: bool) -> String {
    if ok {
        format!("{OK}✓{OK:#}")
    } else {
        format!("{BAD}✗{BAD:#}")
    }
}

fn stage_line(out: &mut String, stage: &StageTiming) {
    let _ = writeln!(
        out,
        "{} {:<10} {:>6} ms",
        mark(stage.ok),
        stage.stage,
        stage.elapsed_ms
    );
}

fn verifier_lines(out: &mut String, outcomes: &[VerifierOutcome]) {
    for outcome in outcomes {
        let _ = writeln!(
            out,
            "  {} {:<8} {:>6} ms",
            mark(outcome.passed),
            outcome.verifier,
            outcome.elapsed_ms
        );
    }
}

/// Stage lines with each verifier under the stage that ran it.
fn stages(
    out: &mut String,
    report_stages: &[StageTiming],
    verification: &[VerifierOutcome],
    health: &[VerifierOutcome],
) {
    for stage in report_stages {
        stage_line(out, stage);
        match stage.stage {
            "verify" => verifier_lines(out, verification),
            "probation" => verifier_lines(out, health),
            _ => {}
        }
    }
}

/// Every failed verifier's diagnostics, located in `source` (the checked code).
pub fn diagnostics(out: &mut String, path: &str, source: &[u8], outcomes: &[VerifierOutcome]) {
    let text = String::from_utf8_lossy(source);
    for outcome in outcomes.iter().filter(|o| !o.passed) {
        if outcome.diagnostics.is_empty() {
            let _ = writeln!(out, "{BOLD}{path}{BOLD:#}: {}: failed", outcome.verifier);
        }
        for diagnostic in &outcome.diagnostics {
            diagnostic_block(out, path, &text, diagnostic);
        }
    }
}

fn diagnostic_block(out: &mut String, path: &str, text: &str, d: &Diagnostic) {
    // Multi-line messages (a script's stderr) keep their first line on the header.
    let mut lines = d.message.trim_end().lines();
    let message = lines.next().unwrap_or_default();
    let location = if d.line == 0 {
        format!("{path}:")
    } else {
        format!("{path}:{}:{}:", d.line, d.column)
    };
    // Exactly `path:line:col: message`, the format editors and CI annotators parse; the
    // verifier is named on its own line above.
    let _ = writeln!(out, "{BOLD}{location}{BOLD:#} {message}");
    for more in lines {
        let _ = writeln!(out, "    {more}");
    }
    if d.line == 0 {
        return;
    }
    let Some(line_text) = text.lines().nth(d.line as usize - 1) else {
        return;
    };
    // The caret goes under the reported character (columns count characters, 1-based).
    let start = line_text
        .char_indices()
        .nth((d.column as usize).saturating_sub(1))
        .map_or(line_text.len(), |(i, _)| i);
    let end = line_text[start..]
        .chars()
        .next()
        .map_or(start, |c| start + c.len_utf8());
    let report = &[Group::with_level(Level::ERROR).element(
        Snippet::source(line_text)
            .line_start(d.line as usize)
            .fold(false)
            .annotation(AnnotationKind::Primary.span(start..end)),
    )];
    let rendered = Renderer::styled().render(report);
    let _ = writeln!(out, "{rendered}");
}

pub fn deploy(report: &DeployReport, code: &[u8], verbosity: Verbosity) -> String {
    let mut out = String::new();
    if verbosity.stages {
        stages(
            &mut out,
            &report.stages,
            &report.verification,
            &report.health,
        );
    }
    diagnostics(&mut out, &report.file_path, code, &report.verification);
    diagnostics(&mut out, &report.file_path, code, &report.health);
    let id = &report.deployment_id;
    let agent = &report.agent_id;
    let _ = match report.outcome {
        DeployOutcome::Live => writeln!(
            out,
            "{OK}deployed{OK:#} {agent} {id} to {} (sha256 {})",
            report.file_path,
            short(&report.meta.sha256)
        ),
        // The diagnostics above say why; the result line names who said no.
        DeployOutcome::Rejected => writeln!(
            out,
            "{BAD}rejected{BAD:#} {agent} {id}: {}; {} unchanged",
            failed("verifier", &report.verification),
            report.file_path
        ),
        DeployOutcome::RolledBack => writeln!(
            out,
            "{BAD}rolled back{BAD:#} {agent} {id}: {}; the previous version of {} is live again",
            failed("health check", &report.health),
            report.file_path
        ),
    };
    out
}

pub fn rollback(report: &RollbackReport, verbosity: Verbosity) -> String {
    let mut out = String::new();
    if verbosity.stages {
        for stage in &report.stages {
            stage_line(&mut out, stage);
        }
    }
    let agent = &report.agent_id;
    let from = &report.rolled_back.deployment_id;
    let _ = match &report.restored {
        Some(restored) => writeln!(
            out,
            "{OK}rolled back{OK:#} {agent}: {from} is {}, {} is live again in {}",
            report.rolled_back.status, restored.deployment_id, report.file_path
        ),
        None => writeln!(
            out,
            "{OK}rolled back{OK:#} {agent}: {from} is {}, {} holds what it held before {from}",
            report.rolled_back.status, report.file_path
        ),
    };
    out
}

pub fn status(live: &BTreeMap<AgentId, DeploymentRecord>) -> String {
    if live.is_empty() {
        return "no live agents\n".to_owned();
    }
    let width = live
        .keys()
        .map(|a| a.as_str().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{BOLD}{:<width$}  {:<36}  {:<24}  {:<12}  FILE{BOLD:#}\n",
        "AGENT", "DEPLOYMENT", "SINCE", "SHA256"
    );
    for (agent, record) in live {
        let _ = writeln!(
            out,
            "{:<width$}  {}  {:<24}  {:<12}  {}",
            agent.as_str(),
            record.deployment_id,
            timestamp(record),
            short(&record.sha256),
            record.file_path
        );
    }
    out
}

pub fn history(agent: &str, deployments: &[DeploymentRecord]) -> String {
    let mut out = format!(
        "{BOLD}{agent}{BOLD:#}: {} deployment(s), newest first\n",
        deployments.len()
    );
    for record in deployments {
        let style = match record.status {
            Status::Live => OK,
            Status::Failed | Status::RolledBack | Status::Aborted => BAD,
            Status::Superseded => DIM,
        };
        let _ = write!(
            out,
            "{}  {style}{:<11}{style:#}  {}  {}  {}",
            record.deployment_id,
            record.status.as_str(),
            timestamp(record),
            short(&record.sha256),
            record.file_path
        );
        if let Some(reason) = &record.reason {
            let _ = write!(out, "  {DIM}({reason}){DIM:#}");
        }
        out.push('\n');
    }
    out
}

pub fn verify(
    path: &str,
    passed: bool,
    outcomes: &[VerifierOutcome],
    source: &[u8],
    verbosity: Verbosity,
) -> String {
    let mut out = String::new();
    if verbosity.stages {
        verifier_lines(&mut out, outcomes);
    }
    diagnostics(&mut out, path, source, outcomes);
    let _ = if passed {
        writeln!(out, "{OK}passed{OK:#} {path}")
    } else {
        writeln!(out, "{BAD}failed{BAD:#} {path}")
    };
    out
}

pub fn recover(report: &RecoveryReport) -> String {
    let mut out = String::new();
    for action in &report.actions {
        let _ = writeln!(out, "recovered {}: {}", action.agent_id, action.action);
    }
    for agent in &report.busy {
        let _ = writeln!(out, "skipped {agent}: another process is operating on it");
    }
    for (agent, error) in &report.broken {
        let _ = writeln!(out, "cannot recover {agent}: {error}");
    }
    if out.is_empty() {
        out.push_str("nothing to recover\n");
    }
    out
}

/// "verifier `tests` failed" (every failed one, in chain order).
fn failed(what: &str, outcomes: &[VerifierOutcome]) -> String {
    let names: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("`{}`", o.verifier))
        .collect();
    if names.is_empty() {
        format!("{what} failed")
    } else {
        format!("{what} {} failed", names.join(", "))
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn timestamp(record: &DeploymentRecord) -> String {
    record
        .timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An error for stderr: `error: <message>`, with the config file's line and a caret when
/// the error is a config mistake.
pub fn error(err: &crate::CliError) -> String {
    let mut out = format!("{BAD}error:{BAD:#} {err}\n");
    if let crate::CliError::Config(config) = err {
        if let Some(line_text) = config
            .source_text
            .lines()
            .nth(config.line.saturating_sub(1))
        {
            // Column counts characters; rebuild the byte span within the line.
            let start = line_text
                .char_indices()
                .nth(config.column.saturating_sub(1))
                .map_or(line_text.len(), |(i, _)| i);
            let len = config.span.len().min(line_text.len() - start).max(1);
            let end = (start + len).min(line_text.len());
            let report = &[Group::with_level(Level::ERROR).element(
                Snippet::source(line_text)
                    .line_start(config.line)
                    .fold(false)
                    .annotation(AnnotationKind::Primary.span(start..end)),
            )];
            let _ = writeln!(out, "{}", Renderer::styled().render(report));
        }
    }
    out
}
