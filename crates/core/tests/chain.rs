//! Unit tests of [`Chain`]: order, fail-fast and run-all, parallel mode and its cancellation,
//! per-verifier timeout and chain deadline, `prepare`, and the empty chain.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{
    AgentId, Chain, ChainOptions, DeploymentId, Diagnostic, Verdict, Verifier, VerifyRequest,
};
use tokio::sync::Notify;

/// What the test verifiers record, shared between them.
#[derive(Default)]
struct Log {
    calls: Mutex<Vec<String>>,
    prepared: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Log {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// How a test verifier behaves once called.
enum Behaviour {
    Pass,
    Fail(&'static str),
    /// Never finishes; sets the flag when its future is dropped (cancelled).
    Hang(Arc<AtomicBool>),
    /// Passes once the notify fires.
    WaitFor(Arc<Notify>),
    /// Fires the notify, then passes.
    Signal(Arc<Notify>),
}

struct Probe {
    name: &'static str,
    log: Arc<Log>,
    behaviour: Behaviour,
}

fn probe(name: &'static str, log: &Arc<Log>, behaviour: Behaviour) -> Probe {
    Probe {
        name,
        log: Arc::clone(log),
        behaviour,
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Verifier for Probe {
    fn name(&self) -> &str {
        self.name
    }

    async fn verify(&self, _req: &VerifyRequest) -> Verdict {
        if let Ok(mut calls) = self.log.calls.lock() {
            calls.push(self.name.to_owned());
        }
        match &self.behaviour {
            Behaviour::Pass => Verdict::pass(),
            Behaviour::Fail(message) => Verdict::fail(vec![Diagnostic::new(3, 7, *message)]),
            Behaviour::Hang(dropped) => {
                let _guard = DropFlag(Arc::clone(dropped));
                std::future::pending::<()>().await;
                Verdict::pass()
            }
            Behaviour::WaitFor(notify) => {
                notify.notified().await;
                Verdict::pass()
            }
            Behaviour::Signal(notify) => {
                notify.notify_one();
                Verdict::pass()
            }
        }
    }

    fn prepare(&self, code: &Arc<[u8]>) {
        if let Ok(mut prepared) = self.log.prepared.lock() {
            prepared.push((self.name.to_owned(), code.to_vec()));
        }
    }
}

fn request() -> VerifyRequest {
    VerifyRequest {
        staged: PathBuf::from("/nonexistent/agents/.a.py.bluegreen-staged"),
        target: PathBuf::from("/nonexistent/agents/a.py"),
        agent_id: AgentId::new("alpha").expect("a valid agent id"),
        deployment_id: DeploymentId::generate(),
        root: PathBuf::from("/nonexistent"),
    }
}

fn verifiers(report: &bluegreen_core::ChainReport) -> Vec<&str> {
    report
        .outcomes
        .iter()
        .map(|o| o.verifier.as_str())
        .collect()
}

fn options(fail_fast: bool, parallel: bool) -> ChainOptions {
    ChainOptions {
        fail_fast,
        parallel,
        ..ChainOptions::default()
    }
}

#[tokio::test]
async fn empty_chain_passes_with_no_outcomes() {
    let chain = Chain::new();
    assert!(chain.is_empty());
    assert!(chain.names().is_empty());
    chain.prepare(&Arc::from(&b"x = 1\n"[..]));
    let report = chain.run(&request()).await;
    assert!(report.passed);
    assert!(report.outcomes.is_empty());
    assert_eq!(report.summary(), None);
}

#[tokio::test]
async fn sequential_chain_runs_in_order_and_records_each_verdict() {
    let log = Arc::new(Log::default());
    let chain = Chain::new()
        .with(probe("first", &log, Behaviour::Pass))
        .with(probe("second", &log, Behaviour::Pass))
        .with(probe("third", &log, Behaviour::Pass));
    assert_eq!(chain.names(), ["first", "second", "third"]);
    assert!(!chain.is_empty());
    let report = chain.run(&request()).await;
    assert!(report.passed);
    assert_eq!(verifiers(&report), ["first", "second", "third"]);
    assert_eq!(log.calls(), ["first", "second", "third"]);
    assert!(report
        .outcomes
        .iter()
        .all(|o| o.passed && o.diagnostics.is_empty()));
    assert_eq!(report.summary(), None);
}

#[tokio::test]
async fn fail_fast_stops_at_the_first_failure() {
    let log = Arc::new(Log::default());
    let chain = Chain::new()
        .with(probe("first", &log, Behaviour::Pass))
        .with(probe("second", &log, Behaviour::Fail("bad indent")))
        .with(probe("third", &log, Behaviour::Pass));
    let report = chain.run(&request()).await;
    assert!(!report.passed);
    assert_eq!(verifiers(&report), ["first", "second"]);
    assert_eq!(log.calls(), ["first", "second"], "third must not run");
    let failed = &report.outcomes[1];
    assert!(!failed.passed);
    assert_eq!(
        failed.diagnostics,
        vec![Diagnostic::new(3, 7, "bad indent")]
    );
    assert_eq!(
        report.summary().as_deref(),
        Some("verifier second failed: 3:7: bad indent")
    );
}

#[tokio::test]
async fn without_fail_fast_every_verifier_runs_and_the_first_failure_is_summarised() {
    let log = Arc::new(Log::default());
    let chain = Chain::new()
        .with(probe("first", &log, Behaviour::Fail("one")))
        .with(probe("second", &log, Behaviour::Pass))
        .with(probe("third", &log, Behaviour::Fail("three")))
        .options(options(false, false));
    let report = chain.run(&request()).await;
    assert!(!report.passed);
    assert_eq!(log.calls(), ["first", "second", "third"]);
    let passed: Vec<bool> = report.outcomes.iter().map(|o| o.passed).collect();
    assert_eq!(passed, [false, true, false]);
    assert_eq!(
        report.summary().as_deref(),
        Some("verifier first failed: 3:7: one")
    );
}

#[tokio::test]
async fn parallel_chain_reports_in_chain_order_whatever_finishes_first() {
    let log = Arc::new(Log::default());
    let go = Arc::new(Notify::new());
    // `first` can only finish after `second` has run: they must run concurrently.
    let chain = Chain::new()
        .with(probe("first", &log, Behaviour::WaitFor(Arc::clone(&go))))
        .with(probe("second", &log, Behaviour::Signal(Arc::clone(&go))))
        .options(options(true, true));
    let report = chain.run(&request()).await;
    assert!(report.passed);
    assert_eq!(verifiers(&report), ["first", "second"]);
    assert_eq!(log.calls(), ["first", "second"]);
}

#[tokio::test]
async fn parallel_fail_fast_cancels_the_verifiers_still_running() {
    let log = Arc::new(Log::default());
    let dropped = Arc::new(AtomicBool::new(false));
    let chain = Chain::new()
        .with(probe("slow", &log, Behaviour::Hang(Arc::clone(&dropped))))
        .with(probe("broken", &log, Behaviour::Fail("nope")))
        .options(options(true, true));
    let report = chain.run(&request()).await;
    assert!(!report.passed);
    assert_eq!(
        verifiers(&report),
        ["broken"],
        "a cancelled verifier has no verdict"
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the hanging verifier was dropped"
    );
    assert_eq!(log.calls(), ["slow", "broken"]);
}

#[tokio::test]
async fn parallel_without_fail_fast_waits_for_every_verifier() {
    let log = Arc::new(Log::default());
    let go = Arc::new(Notify::new());
    let chain = Chain::new()
        .with(probe("waits", &log, Behaviour::WaitFor(Arc::clone(&go))))
        .with(probe("fails", &log, Behaviour::Fail("no")))
        .with(probe("signals", &log, Behaviour::Signal(Arc::clone(&go))))
        .options(options(false, true));
    let report = chain.run(&request()).await;
    assert!(!report.passed);
    assert_eq!(verifiers(&report), ["waits", "fails", "signals"]);
    let passed: Vec<bool> = report.outcomes.iter().map(|o| o.passed).collect();
    assert_eq!(passed, [true, false, true]);
}

#[tokio::test]
async fn a_verifier_past_its_timeout_fails_and_is_cancelled() {
    let log = Arc::new(Log::default());
    let dropped = Arc::new(AtomicBool::new(false));
    let chain = Chain::new()
        .with(probe("hangs", &log, Behaviour::Hang(Arc::clone(&dropped))))
        .with(probe("after", &log, Behaviour::Pass))
        .options(ChainOptions {
            fail_fast: false,
            verifier_timeout: Some(Duration::from_millis(20)),
            ..ChainOptions::default()
        });
    let report = chain.run(&request()).await;
    assert!(!report.passed);
    assert_eq!(verifiers(&report), ["hangs", "after"]);
    assert_eq!(
        report.outcomes[0].diagnostics,
        vec![Diagnostic::whole_file("timed out after 20ms")]
    );
    assert!(report.outcomes[1].passed, "the next verifier still runs");
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(
        report.summary().as_deref(),
        Some("verifier hangs failed: timed out after 20ms")
    );
}

#[tokio::test]
async fn the_chain_deadline_cuts_off_the_verifier_running_when_it_expires() {
    let log = Arc::new(Log::default());
    let dropped = Arc::new(AtomicBool::new(false));
    let chain = Chain::new()
        .with(probe("quick", &log, Behaviour::Pass))
        .with(probe("hangs", &log, Behaviour::Hang(Arc::clone(&dropped))))
        .with(probe("never", &log, Behaviour::Pass))
        .options(ChainOptions {
            // A per-verifier timeout longer than the deadline: the deadline's message wins.
            verifier_timeout: Some(Duration::from_secs(60)),
            deadline: Some(Duration::from_millis(30)),
            ..ChainOptions::default()
        });
    let report = chain.run(&request()).await;
    assert!(!report.passed);
    assert_eq!(verifiers(&report), ["quick", "hangs"]);
    assert_eq!(
        report.outcomes[1].diagnostics,
        vec![Diagnostic::whole_file("chain deadline of 30ms exceeded")]
    );
    assert_eq!(log.calls(), ["quick", "hangs"]);
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn prepare_hands_the_same_bytes_to_every_verifier_in_order() {
    let log = Arc::new(Log::default());
    let shared: Arc<dyn Verifier> = Arc::new(probe("shared", &log, Behaviour::Pass));
    let chain = Chain::new()
        .with(probe("own", &log, Behaviour::Pass))
        .with_arc(Arc::clone(&shared));
    let code: Arc<[u8]> = Arc::from(&b"def process_event(e):\n    return e\n"[..]);
    chain.prepare(&code);
    let prepared = log.prepared.lock().map(|p| p.clone()).unwrap_or_default();
    assert_eq!(
        prepared,
        [
            ("own".to_owned(), code.to_vec()),
            ("shared".to_owned(), code.to_vec())
        ]
    );
    assert!(log.calls().is_empty(), "prepare does not verify");
}

#[tokio::test]
async fn a_cloned_chain_shares_its_verifiers_and_options() {
    let log = Arc::new(Log::default());
    let chain = Chain::new()
        .with(probe("first", &log, Behaviour::Fail("x")))
        .with(probe("second", &log, Behaviour::Pass))
        .options(options(false, false));
    let copy = chain.clone();
    assert_eq!(copy.names(), chain.names());
    assert!(format!("{copy:?}").contains("\"first\""));
    let report = copy.run(&request()).await;
    assert_eq!(verifiers(&report), ["first", "second"]);
    assert_eq!(log.calls(), ["first", "second"]);
}
