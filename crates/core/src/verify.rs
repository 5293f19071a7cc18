//! The [`Verifier`] trait and the [`Chain`] that runs verifiers in order.
//!
//! A verifier looks at one staged file and says pass or fail with diagnostics. Verifier
//! *families* live in their own crates (`bluegreen-verify-syntax`, `bluegreen-verify-process`);
//! this module only knows the trait, so the core stays free of parsers and subprocess code.
//!
//! Cancellation: the chain cancels a verifier by dropping its future (fail-fast in parallel
//! mode, per-verifier timeout, overall deadline). Implementations that hold resources — child
//! processes above all — must release them on drop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ids::{AgentId, DeploymentId};

/// One finding, 1-based line and column (0 when a verifier has no position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl Diagnostic {
    pub fn new(line: u32, column: u32, message: impl Into<String>) -> Self {
        Self {
            line,
            column,
            message: message.into(),
        }
    }

    /// A diagnostic that is about the whole file rather than a position.
    pub fn whole_file(message: impl Into<String>) -> Self {
        Self::new(0, 0, message)
    }
}

/// What a verifier decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub passed: bool,
    pub diagnostics: Vec<Diagnostic>,
}

impl Verdict {
    pub fn pass() -> Self {
        Self {
            passed: true,
            diagnostics: Vec::new(),
        }
    }

    pub fn fail(diagnostics: Vec<Diagnostic>) -> Self {
        Self {
            passed: false,
            diagnostics,
        }
    }

    /// A failure with one positionless message.
    pub fn fail_msg(message: impl Into<String>) -> Self {
        Self::fail(vec![Diagnostic::whole_file(message)])
    }
}

/// Everything a verifier may want to know about the file it checks.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The file under test (the staged BLUE, or the live file for health checks).
    pub staged: PathBuf,
    /// Where the file goes (or is) live.
    pub target: PathBuf,
    pub agent_id: AgentId,
    pub deployment_id: DeploymentId,
    /// The root every path is confined to; scripts run here.
    pub root: PathBuf,
}

/// A check of one staged file. Implement this to plug your own checks into a chain.
#[async_trait::async_trait]
pub trait Verifier: Send + Sync {
    /// The name under which the verifier is reported (`"syntax"`, `"startup"`, …).
    fn name(&self) -> &str;

    /// Checks `req.staged`. Infrastructure problems (an interpreter that cannot be started)
    /// are failures with a diagnostic that says so: a check that could not run did not pass.
    async fn verify(&self, req: &VerifyRequest) -> Verdict;

    /// A hint, given BLUE's bytes while GREEN's backup is being made durable (before BLUE is
    /// staged): a verifier whose work is a pure function of the bytes may start it now, in the
    /// background, and reuse the result in [`Verifier::verify`] if the staged file holds
    /// exactly these bytes. The verdict is still about the staged file. Default: nothing.
    fn prepare(&self, code: &Arc<[u8]>) {
        let _ = code;
    }
}

/// The recorded result of one verifier in a chain run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifierOutcome {
    pub verifier: String,
    pub passed: bool,
    pub elapsed_ms: u64,
    pub diagnostics: Vec<Diagnostic>,
}

/// How a chain runs its verifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainOptions {
    /// Stop at the first failure (default). Without it every verifier runs and is recorded.
    pub fail_fast: bool,
    /// Run the verifiers concurrently. With `fail_fast`, the first failure cancels the rest.
    pub parallel: bool,
    /// Limit for each verifier; a verifier that exceeds it fails with a timeout diagnostic.
    pub verifier_timeout: Option<Duration>,
    /// Limit for the whole chain.
    pub deadline: Option<Duration>,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            fail_fast: true,
            parallel: false,
            verifier_timeout: None,
            deadline: None,
        }
    }
}

/// An ordered list of verifiers. Cheap to clone (verifiers are shared).
#[derive(Clone, Default)]
pub struct Chain {
    verifiers: Vec<Arc<dyn Verifier>>,
    options: ChainOptions,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("verifiers", &self.names())
            .field("options", &self.options)
            .finish()
    }
}

impl Chain {
    /// An empty chain: passes everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a verifier.
    pub fn with(mut self, verifier: impl Verifier + 'static) -> Self {
        self.verifiers.push(Arc::new(verifier));
        self
    }

    /// Appends a shared verifier (one instance may sit in several chains).
    pub fn with_arc(mut self, verifier: Arc<dyn Verifier>) -> Self {
        self.verifiers.push(verifier);
        self
    }

    pub fn options(mut self, options: ChainOptions) -> Self {
        self.options = options;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.verifiers.iter().map(|v| v.name().to_owned()).collect()
    }

    /// Passes BLUE's bytes to every verifier's [`Verifier::prepare`].
    pub fn prepare(&self, code: &Arc<[u8]>) {
        for verifier in &self.verifiers {
            verifier.prepare(code);
        }
    }

    /// Runs the chain. Every verifier that ran (or was cut off) is recorded, in chain order.
    pub async fn run(&self, req: &VerifyRequest) -> ChainReport {
        let deadline = self.options.deadline.map(|d| (Instant::now() + d, d));
        let outcomes = if self.options.parallel && self.verifiers.len() > 1 {
            self.run_parallel(req, deadline).await
        } else {
            let mut outcomes = Vec::with_capacity(self.verifiers.len());
            for verifier in &self.verifiers {
                let limit = self.limit_for(deadline);
                let outcome = run_one(verifier.as_ref(), req, limit).await;
                let failed = !outcome.passed;
                outcomes.push(outcome);
                if failed && self.options.fail_fast {
                    break;
                }
            }
            outcomes
        };
        let passed = outcomes.iter().all(|o| o.passed);
        ChainReport { passed, outcomes }
    }

    /// The time a verifier starting now may take: its own timeout or what is left of the
    /// chain deadline, whichever is shorter, with the message to give when it runs out.
    fn limit_for(&self, deadline: Option<(Instant, Duration)>) -> Option<(Duration, String)> {
        let own = self.options.verifier_timeout.map(|t| {
            (
                t,
                format!("timed out after {}", crate::util::human_duration(t)),
            )
        });
        let chain = deadline.map(|(at, total)| {
            (
                at.saturating_duration_since(Instant::now()),
                format!(
                    "chain deadline of {} exceeded",
                    crate::util::human_duration(total)
                ),
            )
        });
        match (own, chain) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    async fn run_parallel(
        &self,
        req: &VerifyRequest,
        deadline: Option<(Instant, Duration)>,
    ) -> Vec<VerifierOutcome> {
        use std::future::Future;
        use std::pin::Pin;
        type Running<'a> = Pin<Box<dyn Future<Output = (usize, VerifierOutcome)> + Send + 'a>>;
        let mut running: Vec<Running<'_>> = self
            .verifiers
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let limit = self.limit_for(deadline);
                Box::pin(async move { (i, run_one(v.as_ref(), req, limit).await) }) as Running<'_>
            })
            .collect();
        let mut done: Vec<Option<VerifierOutcome>> = vec![None; self.verifiers.len()];
        while !running.is_empty() {
            let ((i, outcome), rest) = select_all(running).await;
            running = rest;
            let failed = !outcome.passed;
            done[i] = Some(outcome);
            if failed && self.options.fail_fast {
                // Dropping `running` cancels the rest (process verifiers kill their groups).
                break;
            }
        }
        done.into_iter().flatten().collect()
    }
}

/// Awaits the first of several futures (a tiny `futures::future::select_all`).
async fn select_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> (F::Output, Vec<F>) {
    use std::pin::Pin;
    use std::task::Poll;
    std::future::poll_fn(move |cx| {
        for i in 0..futures.len() {
            if let Poll::Ready(out) = Pin::new(&mut futures[i]).poll(cx) {
                drop(futures.swap_remove(i));
                return Poll::Ready((out, std::mem::take(&mut futures)));
            }
        }
        Poll::Pending
    })
    .await
}

async fn run_one(
    verifier: &dyn Verifier,
    req: &VerifyRequest,
    limit: Option<(Duration, String)>,
) -> VerifierOutcome {
    let started = Instant::now();
    let verdict = match limit {
        Some((limit, message)) => match tokio::time::timeout(limit, verifier.verify(req)).await {
            Ok(verdict) => verdict,
            // The verifier's future was dropped, which cancels it.
            Err(_) => Verdict::fail_msg(message),
        },
        None => verifier.verify(req).await,
    };
    let elapsed = started.elapsed();
    tracing::debug!(
        verifier = verifier.name(),
        passed = verdict.passed,
        ?elapsed,
        "verifier finished"
    );
    VerifierOutcome {
        verifier: verifier.name().to_owned(),
        passed: verdict.passed,
        elapsed_ms: elapsed.as_millis() as u64,
        diagnostics: verdict.diagnostics,
    }
}

/// The result of running a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub passed: bool,
    pub outcomes: Vec<VerifierOutcome>,
}

impl ChainReport {
    /// The first failure's first diagnostic, as one line (for `error` fields).
    pub fn summary(&self) -> Option<String> {
        let failed = self.outcomes.iter().find(|o| !o.passed)?;
        let detail = failed
            .diagnostics
            .first()
            .map(|d| {
                if d.line > 0 {
                    format!("{}:{}: {}", d.line, d.column, d.message)
                } else {
                    d.message.clone()
                }
            })
            .unwrap_or_else(|| "failed".to_owned());
        Some(format!("verifier {} failed: {}", failed.verifier, detail))
    }
}
