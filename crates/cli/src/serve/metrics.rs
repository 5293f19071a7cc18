//! `/metrics`: counters and histograms in the Prometheus text exposition format (0.0.4).
//!
//! Hand-written rather than a metrics crate: five metric families, no dynamic registry,
//! and no extra dependencies to build.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use bluegreen_core::{DeployOutcome, DeployReport, Error, VerifierOutcome};

use crate::exit;

/// Upper bounds (seconds) of the duration histograms: syntax checks take milliseconds,
/// script verifiers up to minutes.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The server's metrics; shared by every request.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Families>,
}

#[derive(Default)]
struct Families {
    /// (agent, status) → count.
    deployments: BTreeMap<(String, &'static str), u64>,
    /// status → duration histogram.
    deployment_seconds: BTreeMap<&'static str, Histogram>,
    /// verifier → duration histogram.
    verifier_seconds: BTreeMap<String, Histogram>,
    /// (agent, trigger, status) → count.
    rollbacks: BTreeMap<(String, &'static str, &'static str), u64>,
    /// HTTP status code → count.
    requests: BTreeMap<u16, u64>,
}

struct Histogram {
    /// Non-cumulative counts per bucket of [`BUCKETS`]; the last slot is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// The `status` label of a finished deployment request: its outcome, or the error class of
/// a refused one.
pub fn deploy_status(result: &Result<DeployReport, Error>) -> &'static str {
    match result {
        Ok(report) => match report.outcome {
            DeployOutcome::Live => "live",
            DeployOutcome::Rejected => "rejected",
            DeployOutcome::RolledBack => "rolled_back",
        },
        Err(e) => exit::kind_name(e.kind()),
    }
}

impl Metrics {
    fn families(&self) -> std::sync::MutexGuard<'_, Families> {
        // A panic while holding this lock cannot leave the counters inconsistent enough to
        // matter; keep serving them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one deployment request: its count, duration and verifier durations.
    /// `agent` is the label to use (already validated by the caller).
    pub fn deployment(&self, agent: &str, result: &Result<DeployReport, Error>, took: Duration) {
        let status = deploy_status(result);
        let mut f = self.families();
        *f.deployments.entry((agent.to_owned(), status)).or_default() += 1;
        f.deployment_seconds
            .entry(status)
            .or_default()
            .observe(took.as_secs_f64());
        if let Ok(report) = result {
            let outcomes: Vec<&VerifierOutcome> =
                report.verification.iter().chain(&report.health).collect();
            for outcome in outcomes {
                f.verifier_seconds
                    .entry(outcome.verifier.clone())
                    .or_default()
                    .observe(outcome.elapsed_ms as f64 / 1000.0);
            }
            if report.outcome == DeployOutcome::RolledBack {
                *f.rollbacks
                    .entry((agent.to_owned(), "health", "success"))
                    .or_default() += 1;
            }
        }
    }

    /// Records a rollback request (`status` = `success` or the error class).
    pub fn rollback(&self, agent: &str, status: &'static str) {
        *self
            .families()
            .rollbacks
            .entry((agent.to_owned(), "request", status))
            .or_default() += 1;
    }

    pub fn request(&self, code: u16) {
        *self.families().requests.entry(code).or_default() += 1;
    }

    /// The exposition text; `in_flight` is the number of deployments running now.
    pub fn render(&self, in_flight: usize) -> String {
        let f = self.families();
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "bluegreen_deployments_total",
            "counter",
            "Deployment requests finished, by agent and status (live, rejected, rolled_back, or the error class).",
        );
        for ((agent, status), n) in &f.deployments {
            let _ = writeln!(
                out,
                "bluegreen_deployments_total{{agent=\"{}\",status=\"{status}\"}} {n}",
                escape(agent)
            );
        }
        family(
            &mut out,
            "bluegreen_deployment_duration_seconds",
            "histogram",
            "Time from request to outcome of deployments, by status.",
        );
        for (status, h) in &f.deployment_seconds {
            h.render(
                &mut out,
                "bluegreen_deployment_duration_seconds",
                &format!("status=\"{status}\""),
            );
        }
        family(
            &mut out,
            "bluegreen_verifier_duration_seconds",
            "histogram",
            "Time each verifier took, by verifier.",
        );
        for (verifier, h) in &f.verifier_seconds {
            h.render(
                &mut out,
                "bluegreen_verifier_duration_seconds",
                &format!("verifier=\"{}\"", escape(verifier)),
            );
        }
        family(
            &mut out,
            "bluegreen_rollbacks_total",
            "counter",
            "Rollbacks, by agent, trigger (request, or health for automatic) and status.",
        );
        for ((agent, trigger, status), n) in &f.rollbacks {
            let _ = writeln!(
                out,
                "bluegreen_rollbacks_total{{agent=\"{}\",trigger=\"{trigger}\",status=\"{status}\"}} {n}",
                escape(agent)
            );
        }
        family(
            &mut out,
            "bluegreen_deployments_in_flight",
            "gauge",
            "Deployments running now.",
        );
        let _ = writeln!(out, "bluegreen_deployments_in_flight {in_flight}");
        family(
            &mut out,
            "bluegreen_http_requests_total",
            "counter",
            "HTTP requests answered, by status code.",
        );
        for (code, n) in &f.requests {
            let _ = writeln!(out, "bluegreen_http_requests_total{{code=\"{code}\"}} {n}");
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::default();
        h.observe(0.004);
        h.observe(0.2);
        h.observe(500.0);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 1\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.25\"} 2\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"120\"} 2\n"));
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count{a=\"b\"} 3\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn rollback_and_request_counters_render() {
        let m = Metrics::default();
        m.rollback("alpha", "success");
        m.rollback("alpha", "conflict");
        m.request(200);
        m.request(200);
        let text = m.render(3);
        assert!(text.contains(
            "bluegreen_rollbacks_total{agent=\"alpha\",trigger=\"request\",status=\"success\"} 1\n"
        ));
        assert!(text.contains(
            "bluegreen_rollbacks_total{agent=\"alpha\",trigger=\"request\",status=\"conflict\"} 1\n"
        ));
        assert!(text.contains("bluegreen_http_requests_total{code=\"200\"} 2\n"));
        assert!(text.contains("bluegreen_deployments_in_flight 3\n"));
        assert!(text.contains("# TYPE bluegreen_deployment_duration_seconds histogram\n"));
    }
}
