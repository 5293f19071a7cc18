//! `bluegreen-core`: hot-swap live code files with zero downtime.
//!
//! A deployment backs up the live file (GREEN), stages the candidate (BLUE) beside it,
//! runs a [`Chain`] of [`Verifier`]s against the staged file, cuts over with one atomic
//! rename, and records everything in a [`Store`]. Failed checks leave GREEN untouched;
//! rollbacks restore earlier versions from their snapshots; [`BlueGreenService::recover`]
//! repairs whatever a crash interrupted.
//!
//! This crate has no parsers, no subprocess code and no HTTP: verifier families live in
//! their own crates (`bluegreen-verify-syntax`, `bluegreen-verify-process`) and the durable
//! store in `bluegreen-store`. You can use it alone with your own verifiers:
//!
//! ```
//! use bluegreen_core::{BlueGreenService, Chain, DeployOutcome, Diagnostic, Verdict, Verifier, VerifyRequest};
//!
//! /// Rejects code that mentions `TODO`.
//! struct NoTodo;
//!
//! #[async_trait::async_trait]
//! impl Verifier for NoTodo {
//!     fn name(&self) -> &str { "no-todo" }
//!     async fn verify(&self, req: &VerifyRequest) -> Verdict {
//!         let code = std::fs::read_to_string(&req.staged).unwrap_or_default();
//!         match code.lines().position(|l| l.contains("TODO")) {
//!             Some(i) => Verdict::fail(vec![Diagnostic::new(i as u32 + 1, 1, "TODO left in code")]),
//!             None => Verdict::pass(),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bluegreen_core::Error> {
//! let root = tempfile::tempdir().unwrap();
//! let service = BlueGreenService::builder(root.path())
//!     .chain(Chain::new().with(NoTodo))
//!     .build()?;
//!
//! let v1 = service.deploy_hot_swap("alpha", b"def process_event(e):\n    return 1\n", "agents/alpha.py").await?;
//! assert_eq!(v1.outcome, DeployOutcome::Live);
//!
//! let bad = service.deploy_hot_swap("alpha", b"# TODO\n", "agents/alpha.py").await?;
//! assert_eq!(bad.outcome, DeployOutcome::Rejected);
//! assert_eq!(bad.verification[0].diagnostics[0].line, 1);
//!
//! let v2 = service.deploy_hot_swap("alpha", b"def process_event(e):\n    return 2\n", "agents/alpha.py").await?;
//! service.rollback("alpha", None, None).await?;
//! let live = std::fs::read(root.path().join("agents/alpha.py")).unwrap();
//! assert_eq!(live, b"def process_event(e):\n    return 1\n");
//! assert_eq!(service.active_versions()?["alpha"].deployment_id, v1.deployment_id);
//! # let _ = v2;
//! # Ok(()) }
//! ```

pub mod dirfd;
pub mod error;
pub mod fault;
pub mod feed;
pub mod ids;
pub mod import_name;
mod integrity;
pub mod memory;
pub mod paths;
pub mod pyc;
pub mod report;
pub mod service;
pub mod store;
pub mod util;
pub mod verify;

pub use error::{Error, ErrorKind};
pub use fault::FaultPoint;
pub use ids::{AgentId, DeploymentId};
pub use import_name::{import_name, ImportName};
pub use memory::MemoryStore;
pub use report::{DeployOutcome, DeployReport, RecoveryReport, RollbackReport, StageTiming};
pub use service::{BlueGreenService, DeployRequest, Limits, ServiceBuilder};
pub use store::{ActiveVersions, AgentLease, AgentState, DeploymentRecord, Event, Status, Store};
pub use verify::{
    Chain, ChainOptions, ChainReport, Diagnostic, Verdict, Verifier, VerifierOutcome, VerifyRequest,
};

// Re-exported so implementors of `Verifier` need no direct dependency on it.
pub use async_trait::async_trait;
