//! `bluegreen-verify-process`: verifiers that run the candidate in a subprocess.
//!
//! Two verifier kinds from the configuration contract, both on one subprocess
//! [`runner`]:
//!
//! - [`StartupVerifier`] (`kind = "python-startup"`): imports the staged file as a module in
//!   a fresh, isolated interpreter (`python -I`) and checks the entrypoint. A warm mode forks
//!   each check from a pre-started interpreter (see [`zygote`]) for a fraction of the cost.
//! - [`ScriptVerifier`] (`kind = "script"`): any command, with the contract's placeholders
//!   and `BLUEGREEN_*` variables; passes iff it exits 0 in time.
//!
//! Every check runs in its own process group under a small supervisor. On timeout, on
//! cancellation (a [`bluegreen_core::Chain`] drops the verifier's future) and when bluegreen
//! itself dies, the whole group is killed with `SIGKILL` and reaped. Resource limits
//! ([`Limits`]) are applied before the program runs, the environment is cleared except
//! [`ENV_ALLOW_LIST`] and configured pass-through variables, and stdout/stderr are captured
//! concurrently with a cap. Under `sandbox = "strict"` (the default) checks are also confined
//! by the kernel: see [`sandbox`].
//!
//! ```
//! use std::time::Duration;
//! use bluegreen_core::{AgentId, DeploymentId, Verifier, VerifyRequest};
//! use bluegreen_verify_process::{ScriptOptions, ScriptVerifier, StartupOptions, StartupVerifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let root = tempfile::tempdir().unwrap();
//! let staged = root.path().join(".alpha.py.bluegreen-dep_1.staged");
//! std::fs::write(&staged, "def process_event(event):\n    return event\n").unwrap();
//! let req = VerifyRequest {
//!     staged,
//!     target: root.path().join("alpha.py"),
//!     agent_id: AgentId::new("alpha").unwrap(),
//!     deployment_id: DeploymentId::generate(),
//!     root: root.path().to_path_buf(),
//! };
//!
//! let startup = StartupVerifier::new("startup", StartupOptions {
//!     entrypoint: Some("process_event".into()),
//!     ..StartupOptions::default()
//! });
//! assert!(startup.verify(&req).await.passed);
//!
//! let tests = ScriptVerifier::new("tests", ScriptOptions {
//!     command: vec!["sh".into(), "-c".into(), "grep -q return {staged} && test \"$BLUEGREEN_AGENT_ID\" = alpha".into()],
//!     timeout: Duration::from_secs(5),
//!     ..ScriptOptions::default()
//! }).unwrap();
//! assert!(tests.verify(&req).await.passed);
//! # }
//! ```

pub mod limits;
pub mod runner;
pub mod sandbox;
pub mod script;
pub mod startup;
pub mod zygote;

pub use limits::{Limits, ENV_ALLOW_LIST};
pub use sandbox::Sandbox;
pub use script::{ScriptOptions, ScriptVerifier};
pub use startup::{StartupOptions, StartupVerifier};

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("script verifier {0:?} needs a non-empty command")]
    EmptyCommand(String),
}
