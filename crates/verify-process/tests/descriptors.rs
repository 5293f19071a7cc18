//! Descriptor hygiene of warm checks. Alone in its test binary: counting this process's open
//! descriptors is only meaningful when no other test opens any meanwhile.

mod common;

use std::time::Duration;

use bluegreen_core::Verifier;
use common::{assert_passes_warm, children_of, started_warm_verifier, wait_until, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_checks_do_not_leak_descriptors() {
    // A server runs warm checks for months: each one's pipes must be closed afterwards.
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }
    let (verifier, zygote) = started_warm_verifier().await;
    let failing = Setup::fixture("raises_at_import.py");
    let settled = || async {
        wait_until("one spare, prepared", || children_of(zygote).len() == 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        open_fds()
    };
    let before = settled().await;
    for i in 0..10 {
        assert_passes_warm(&verifier, zygote, &format!("check {i}")).await;
        assert!(!verifier.verify(&failing.req).await.passed);
    }
    assert_eq!(
        settled().await,
        before,
        "descriptors leaked over 20 warm checks"
    );
}
