//! Process verifiers inside a real `Chain`: cancellation by fail-fast, per-verifier timeout
//! and the chain deadline all kill and reap the verifiers' process groups.

mod common;

use std::time::{Duration, Instant};

use bluegreen_core::{Chain, ChainOptions, Verdict, Verifier, VerifyRequest};
use bluegreen_verify_process::{ScriptOptions, ScriptVerifier, StartupOptions, StartupVerifier};
use common::Setup;

/// Fails after a short while, so the process verifiers are running when it does.
struct FailsSoon;

#[async_trait::async_trait]
impl Verifier for FailsSoon {
    fn name(&self) -> &str {
        "fails-soon"
    }
    async fn verify(&self, _req: &VerifyRequest) -> Verdict {
        tokio::time::sleep(Duration::from_millis(400)).await;
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
        let chain = Chain::new()
            .with(sleeper_script())
            .with(startup.clone())
            .with(FailsSoon)
            .options(ChainOptions {
                fail_fast: true,
                parallel: true,
                verifier_timeout: Some(Duration::from_secs(60)),
                deadline: None,
            });
        // Both process verifiers must really be running when the cancellation comes.
        let watcher_root = setup.root().to_path_buf();
        let watcher = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut most = 0;
            while Instant::now() < deadline {
                most = most.max(common::processes_of(&watcher_root).len());
                if most >= 3 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        });
        let started = Instant::now();
        let report = chain.run(&setup.req).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!report.passed);
        assert_eq!(report.outcomes.len(), 1, "{report:?}");
        assert_eq!(report.outcomes[0].verifier, "fails-soon");
        assert!(watcher.await.unwrap() >= 3, "process verifiers were not running");
        setup.assert_no_survivors();
        if warm {
            assert!(startup.zygote_pid().is_some(), "the zygote survives a cancelled check");
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
