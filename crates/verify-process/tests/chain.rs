//! Process verifiers inside a real `Chain`: cancellation by fail-fast, per-verifier timeout
//! and the chain deadline all kill and reap the verifiers' process groups.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluegreen_core::{Chain, ChainOptions, Verdict, Verifier, VerifyRequest};
use bluegreen_verify_process::{ScriptOptions, ScriptVerifier, StartupOptions, StartupVerifier};
use common::Setup;

/// Fails as soon as both process verifiers are running (so the cancellation surely hits
/// live process groups), or after 5 s; records whether it saw them.
struct FailsWhenBothRun {
    saw_both: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Verifier for FailsWhenBothRun {
    fn name(&self) -> &str {
        "fails-soon"
    }
    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let running = common::processes_of(&req.root);
            let has = |comm: &str| running.iter().any(|p| p.contains(comm));
            // The script's sleepers and the interpreter importing the looping agent.
            if has("(sleep)") && has("(python3") {
                self.saw_both.store(true, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Verdict::fail_msg("nope")
    }
}

fn sleeper_script() -> ScriptVerifier {
    ScriptVerifier::new(
        "tests",
        ScriptOptions {
            command: vec!["sh".into(), "-c".into(), "sleep 300 & sleep 300".into()],
            timeout: Duration::from_secs(60),
            ..ScriptOptions::default()
        },
    )
    .unwrap()
}

fn looping_startup(warm: bool) -> StartupVerifier {
    StartupVerifier::new(
        "startup",
        StartupOptions {
            timeout: Duration::from_secs(60),
            warm,
            ..StartupOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_cancels_running_process_verifiers() {
    for warm in [false, true] {
        let setup = Setup::fixture("infinite_loop.py");
        let startup = looping_startup(warm);
        if warm {
            // Start the zygote first, so the chain cancels a check, not a zygote start.
            let good = Setup::fixture("good_agent.py");
            assert!(startup.verify(&good.req).await.passed);
        }
        let saw_both = Arc::new(AtomicBool::new(false));
        let chain = Chain::new()
            .with(sleeper_script())
            .with(startup.clone())
            .with(FailsWhenBothRun {
                saw_both: saw_both.clone(),
            })
            .options(ChainOptions {
                fail_fast: true,
                parallel: true,
                verifier_timeout: Some(Duration::from_secs(60)),
                deadline: None,
            });
        let started = Instant::now();
        let report = chain.run(&setup.req).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!report.passed);
        assert_eq!(report.outcomes.len(), 1, "{report:?}");
        assert_eq!(report.outcomes[0].verifier, "fails-soon");
        assert!(
            saw_both.load(Ordering::SeqCst),
            "process verifiers were not both running"
        );
        setup.assert_no_survivors();
        if warm {
            assert!(
                startup.zygote_pid().is_some(),
                "the zygote survives a cancelled check"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_timeout_and_deadline_kill_process_groups() {
    let options = [
        ChainOptions {
            fail_fast: false,
            parallel: false,
            verifier_timeout: Some(Duration::from_millis(700)),
            deadline: None,
        },
        ChainOptions {
            fail_fast: false,
            parallel: true,
            verifier_timeout: None,
            deadline: Some(Duration::from_millis(700)),
        },
    ];
    for options in options {
        let setup = Setup::fixture("infinite_loop.py");
        let chain = Chain::new()
            .with(sleeper_script())
            .with(looping_startup(true))
            .options(options);
        let report = chain.run(&setup.req).await;
        assert!(!report.passed);
        assert!(report.outcomes.iter().all(|o| !o.passed), "{report:?}");
        setup.assert_no_survivors();
    }
}
