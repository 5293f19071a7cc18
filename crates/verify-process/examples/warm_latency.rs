//! `cargo run --release -p bluegreen-verify-process --example warm_latency -- FILE [N]`:
//! median latency of warm and cold startup checks of FILE (quick local measurement; the
//! benchmark proper is `cargo xtask bench`).

use std::time::{Duration, Instant};

use bluegreen_core::{AgentId, DeploymentId, Verifier, VerifyRequest};
use bluegreen_verify_process::{StartupOptions, StartupVerifier};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.first() else {
        eprintln!("usage: warm_latency FILE [N] [PYTHON]");
        std::process::exit(2);
    };
    let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(50);
    let python = args.get(2).cloned().unwrap_or_else(|| "python3".into());
    let root = std::env::temp_dir().join(format!("bgvp-latency-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    let staged = root.join(".agent.py.bluegreen-dep_0.staged");
    std::fs::copy(file, &staged).expect("copy agent");
    let req = VerifyRequest {
        staged,
        target: root.join("agent.py"),
        agent_id: AgentId::new("agent").expect("id"),
        deployment_id: DeploymentId::generate(),
        root: root.clone(),
    };
    let verifier = StartupVerifier::new(
        "startup",
        StartupOptions {
            python,
            entrypoint: Some("process_event".into()),
            ..StartupOptions::default()
        },
    );
    println!("first: {:?}", verifier.verify(&req).await);
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        verifier.verify(&req).await;
        warm.push(t.elapsed());
        let t = Instant::now();
        verifier.verify_cold(&req).await;
        cold.push(t.elapsed());
    }
    warm.sort();
    cold.sort();
    println!(
        "warm p50 {:?} min {:?}; cold p50 {:?} min {:?}",
        warm[n / 2],
        warm[0],
        cold[n / 2],
        cold[0]
    );
    let _ = std::fs::remove_dir_all(&root);
}
