//! Using bluegreen with nothing but `bluegreen-core`: your own `Verifier`, the in-memory
//! store, and the lifecycle deploy → reject → rollback.
//!
//! Run with `cargo run -p bluegreen-core --example custom_verifier`.

use bluegreen_core::{
    async_trait, BlueGreenService, Chain, DeployOutcome, Diagnostic, Verdict, Verifier,
    VerifyRequest,
};

/// Rejects agents that do not define `process_event` at module level.
struct HasEntrypoint;

#[async_trait]
impl Verifier for HasEntrypoint {
    fn name(&self) -> &str {
        "has-entrypoint"
    }

    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let code = match std::fs::read_to_string(&req.staged) {
            Ok(code) => code,
            Err(e) => return Verdict::fail_msg(format!("cannot read the staged file: {e}")),
        };
        if code.lines().any(|l| l.starts_with("def process_event(")) {
            Verdict::pass()
        } else {
            let last = code.lines().count().max(1) as u32;
            Verdict::fail(vec![Diagnostic::new(
                last,
                1,
                "no module-level `def process_event(...)`",
            )])
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::temp_dir().join(format!("bluegreen-example-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let service = BlueGreenService::builder(&root)
        .chain(Chain::new().with(HasEntrypoint))
        .build()?;
    let path = "services/agents/trading_agent_alpha.py";

    let v1 = service
        .deploy_hot_swap(
            "trading_agent_alpha",
            b"def process_event(event):\n    return 'v1'\n",
            path,
        )
        .await?;
    println!("deployed {} -> {:?}", v1.deployment_id, v1.outcome);

    let v2 = service
        .deploy_hot_swap(
            "trading_agent_alpha",
            b"def process_event(event):\n    return 'v2'\n",
            path,
        )
        .await?;
    println!("deployed {} -> {:?}", v2.deployment_id, v2.outcome);

    let broken = service
        .deploy_hot_swap(
            "trading_agent_alpha",
            b"def handle(event):\n    pass\n",
            path,
        )
        .await?;
    assert_eq!(broken.outcome, DeployOutcome::Rejected);
    println!(
        "rejected {}: {}",
        broken.deployment_id,
        broken.error.as_deref().unwrap_or("")
    );

    let rollback = service.rollback("trading_agent_alpha", None, None).await?;
    println!(
        "rolled back {} -> live again: {}",
        rollback.rolled_back.deployment_id,
        rollback
            .restored
            .as_ref()
            .map(|r| r.deployment_id.as_str())
            .unwrap_or("-")
    );
    let live = std::fs::read_to_string(root.join(path))?;
    assert!(live.contains("'v1'"));
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
