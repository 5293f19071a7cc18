//! A tiny program that runs one bluegreen operation on a file store, for tests that need a
//! real process to kill (SIGKILL via `BLUEGREEN_FAULT`, or from outside) or several
//! processes contending for one root.
//!
//! ```text
//! crashee deploy   <root> <agent> <file_path> <code_file> [--slow-ms N] [--keep N]
//! crashee loop     <root> <agent> <file_path> <count> <tag> [--keep N]
//! crashee rollback <root> <agent>
//! ```
//! Exit 0 on success, 1 when rejected, 10 on error. Prints one JSON line per operation.

use std::time::Duration;

use bluegreen_core::{BlueGreenService, Chain, Limits, Verdict, Verifier, VerifyRequest};
use bluegreen_store::FsStore;

struct Slow(u64);

#[async_trait::async_trait]
impl Verifier for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    async fn verify(&self, _req: &VerifyRequest) -> Verdict {
        tokio::time::sleep(Duration::from_millis(self.0)).await;
        Verdict::pass()
    }
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crashee: {e}");
            10
        }
    };
    std::process::exit(code);
}

async fn run(args: &[String]) -> Result<i32, String> {
    let err = |e: bluegreen_core::Error| e.to_string();
    let root = args.get(1).ok_or("missing root")?;
    let agent = args.get(2).ok_or("missing agent")?;
    let mut chain = Chain::new();
    if let Some(ms) = flag(args, "--slow-ms") {
        chain = chain.with(Slow(ms));
    }
    let limits = Limits {
        keep_backups: flag(args, "--keep").unwrap_or(20) as usize,
        lock_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let service = BlueGreenService::builder(root)
        .store(FsStore::open(root.as_ref()).map_err(err)?)
        .chain(chain)
        .limits(limits)
        .build()
        .map_err(err)?;
    service.recover().await.map_err(err)?;
    match args.first().map(String::as_str) {
        Some("deploy") => {
            let file_path = args.get(3).ok_or("missing file_path")?;
            let code = std::fs::read(args.get(4).ok_or("missing code file")?)
                .map_err(|e| e.to_string())?;
            let report = service
                .deploy_hot_swap(agent, &code, file_path)
                .await
                .map_err(err)?;
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Ok(if report.succeeded() { 0 } else { 1 })
        }
        Some("loop") => {
            let file_path = args.get(3).ok_or("missing file_path")?;
            let count: usize = args
                .get(4)
                .and_then(|c| c.parse().ok())
                .ok_or("bad count")?;
            let tag = args.get(5).ok_or("missing tag")?;
            for i in 0..count {
                let code = format!("VERSION = '{tag}-{i}'\n");
                let report = service
                    .deploy_hot_swap(agent, code.as_bytes(), file_path)
                    .await
                    .map_err(err)?;
                if !report.succeeded() {
                    return Err(format!("deployment {i} not live: {:?}", report.error));
                }
            }
            Ok(0)
        }
        Some("rollback") => {
            let report = service.rollback(agent, None, None).await.map_err(err)?;
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Ok(0)
        }
        other => Err(format!("unknown mode {other:?}")),
    }
}
