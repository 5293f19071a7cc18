//! The `bluegreen` command-line tool and HTTP service, as a library so tests and the
//! server share the code paths of the CLI.
//!
//! [`Config`] is `bluegreen.toml` (or the embedded default: the file store and the built-in
//! `syntax` verifier); [`build_service`] turns a root and a config into the
//! [`BlueGreenService`] every command (and `bluegreen serve`) runs on; [`run`] is the whole
//! command line, returning the process exit code ([`exit`]).
//!
//! ```
//! use bluegreen::{build_service, Config};
//! use bluegreen_core::DeployOutcome;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bluegreen::CliError> {
//! let root = tempfile::tempdir().unwrap();
//! let service = build_service(root.path(), &Config::default())?;
//! service.recover().await?;
//! let good = service.deploy_hot_swap("alpha", b"def process_event(e):\n    return e\n", "agents/alpha.py").await?;
//! assert_eq!(good.outcome, DeployOutcome::Live);
//! let bad = service.deploy_hot_swap("alpha", b"def process_event(e)\n    return e\n", "agents/alpha.py").await?;
//! assert_eq!(bad.outcome, DeployOutcome::Rejected); // the built-in `syntax` check
//! assert_eq!(bad.verification[0].diagnostics[0].line, 1);
//! # Ok(()) }
//! ```

pub mod cli;
pub(crate) mod commands;
pub mod config;
pub mod exit;
pub mod inspect;
pub mod json;
pub mod render;
pub mod serve;
pub mod verifiers;

use std::ffi::OsString;
use std::path::Path;

use bluegreen_core::{BlueGreenService, ErrorKind};

pub use config::Config;

/// The README's Rust examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// Why a command failed (as opposed to a deployment being rejected, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Core(#[from] bluegreen_core::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Version(#[from] inspect::VersionError),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Io(String),
}

impl CliError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CliError::Core(e) => e.kind(),
            CliError::Version(e) => e.kind(),
            CliError::Config(_) | CliError::BadInput(_) => ErrorKind::BadInput,
            CliError::Io(_) => ErrorKind::Io,
        }
    }

    pub fn exit_code(&self) -> u8 {
        exit::code_for(self.kind())
    }

    /// The error as the contract's one JSON document.
    pub fn to_json(&self, agent_id: Option<&str>) -> serde_json::Value {
        json::error_message(&self.to_string(), self.kind(), agent_id)
    }
}

impl From<config::LoadError> for CliError {
    fn from(err: config::LoadError) -> Self {
        match err {
            // A config file the user named but that cannot be read is their input's fault.
            config::LoadError::Read { .. } => CliError::BadInput(err.to_string()),
            config::LoadError::Invalid(e) => CliError::Config(e),
        }
    }
}

/// The service of a root under a config: the durable file store, the config's chains
/// (default, per agent, health) and limits. Callers run [`BlueGreenService::recover`]
/// before anything else.
pub fn build_service(root: &Path, config: &Config) -> Result<BlueGreenService, CliError> {
    build_service_reserving(root, config, &[])
}

/// [`build_service`], with `reserved` files (e.g. the server's token file) that may never
/// be deployment targets, besides the active config file and `<root>/bluegreen.toml`,
/// which are always reserved. Strict startup and script checks cannot read `reserved`.
pub fn build_service_reserving(
    root: &Path,
    config: &Config,
    reserved: &[std::path::PathBuf],
) -> Result<BlueGreenService, CliError> {
    let store = bluegreen_store::FsStore::open(root)?;
    let hidden = reserved.iter().map(|p| absolute(p)).collect();
    let mut verifiers = verifiers::Verifiers::hiding(hidden);
    let chain = |v: &mut verifiers::Verifiers, names: &[String]| {
        v.chain(config, names).map_err(CliError::BadInput)
    };
    let mut builder = BlueGreenService::builder(root)
        .store(store)
        .limits(config.limits)
        .chain(chain(&mut verifiers, &config.default_chain)?)
        .health_chain(chain(&mut verifiers, &config.health_chain)?)
        .reserve(absolute(&root.join(config::FILE_NAME)));
    // Named relative to the working directory, like every path given on the command line.
    for path in config.path.iter().chain(reserved) {
        builder = builder.reserve(absolute(path));
    }
    for (agent, agent_config) in &config.agents {
        if let Some(names) = &agent_config.chain {
            builder = builder.agent_chain(agent.clone(), chain(&mut verifiers, names)?);
        }
    }
    Ok(builder.build()?)
}

fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The whole command line: parses `args` (including the program name), runs the command
/// and returns the exit code. Output goes to stdout, logs and errors to stderr.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    commands::run(args)
}
