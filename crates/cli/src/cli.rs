//! The command line (CONTRACT.md "CLI: bluegreen"), declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Hot-swap live code files with zero downtime: back up GREEN, verify BLUE, cut over
/// atomically, roll back on failure.
#[derive(Debug, Parser)]
#[command(
    name = "bluegreen",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Examples:\n  \
        bluegreen deploy alpha --file agents/alpha.py --code-file new_alpha.py\n  \
        bluegreen --json status\n  \
        bluegreen rollback alpha\n\n\
        Exit codes: 0 success, 1 code rejected, 2 bad input or usage, 3 conflict, 4 I/O or internal failure."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The directory everything is confined to [default: the current directory]
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The configuration file [default: <root>/bluegreen.toml when present, else built-in defaults]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print exactly one JSON document on stdout (logs go to stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and the result
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More logging on stderr (-v info, -vv debug; RUST_LOG overrides)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy new code for an agent: backup, stage, verify, atomic cutover
    #[command(after_help = "Example:\n  \
        bluegreen deploy trading_agent_alpha --file agents/alpha.py --code-file new_alpha.py\n  \
        cat new_alpha.py | bluegreen deploy trading_agent_alpha --file agents/alpha.py --code-file -")]
    Deploy(DeployArgs),
    /// Restore the version that was live before the current one (or a named one)
    #[command(after_help = "Example:\n  \
        bluegreen rollback trading_agent_alpha\n  \
        bluegreen rollback trading_agent_alpha --to dep_0190f0a1b2c3d4e5f60718293a4b5c6d")]
    Rollback(RollbackArgs),
    /// Show the live version of every agent (or of one)
    #[command(
        after_help = "Example:\n  bluegreen status\n  bluegreen --json status trading_agent_alpha"
    )]
    Status(StatusArgs),
    /// Show every deployment of an agent, newest first
    #[command(after_help = "Example:\n  bluegreen history trading_agent_alpha")]
    History(HistoryArgs),
    /// Print the exact bytes of a version (LIVE by default)
    #[command(after_help = "Example:\n  \
        bluegreen show trading_agent_alpha\n  \
        bluegreen show trading_agent_alpha dep_0190f0a1b2c3d4e5f60718293a4b5c6d > old.py")]
    Show(ShowArgs),
    /// Unified diff between two versions (default: the previous version against LIVE)
    #[command(after_help = "Example:\n  \
        bluegreen diff trading_agent_alpha\n  \
        bluegreen diff trading_agent_alpha dep_0190f0a1b2c3d4e5f60718293a4b5c6d\n\n\
        Colored on a terminal; plain with NO_COLOR or when stdout is not a terminal.")]
    Diff(DiffArgs),
    /// Follow registry changes (deploys, rollbacks, by any process) until interrupted
    #[command(after_help = "Example:\n  \
        bluegreen watch\n  \
        bluegreen --json watch trading_agent_alpha | jq .type")]
    Watch(WatchArgs),
    /// Run a verifier chain on any file, without deploying (for pre-commit hooks and CI)
    #[command(after_help = "Example:\n  \
        bluegreen verify agents/alpha.py\n  \
        bluegreen verify --verifier syntax --verifier startup agents/alpha.py")]
    Verify(VerifyArgs),
    /// Repair deployments a crash interrupted (every command also does this first)
    #[command(after_help = "Example:\n  bluegreen recover")]
    Recover,
    /// Serve the HTTP API
    #[command(after_help = "Example:\n  \
        BLUEGREEN_TOKEN=s3cret bluegreen serve --listen 127.0.0.1:8080")]
    Serve(ServeArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  bluegreen completions bash > ~/.local/share/bash-completion/completions/bluegreen"
    )]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The agent (1-128 chars of A-Z a-z 0-9 _ . -)
    pub agent_id: String,
    /// The target file, relative to the root (optional when bluegreen.toml sets [agents.ID] file)
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,
    /// The new code ("-" reads stdin)
    #[arg(long, value_name = "PATH|-")]
    pub code_file: PathBuf,
    /// Use these verifiers instead of the agent's chain (repeatable)
    #[arg(long = "verifier", value_name = "NAME", conflicts_with = "no_verify")]
    pub verifiers: Vec<String>,
    /// Skip verification entirely
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub agent_id: String,
    /// The agent's target file (checked against its binding)
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,
    /// Restore this earlier deployment instead of the previous one
    #[arg(long, value_name = "DEPLOYMENT_ID")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub agent_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub agent_id: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub agent_id: String,
    /// The deployment to show [default: the LIVE one]
    pub deployment_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub agent_id: String,
    /// The old version [default: the one before TO]
    pub from: Option<String>,
    /// The new version [default: the LIVE one]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this agent's events [default: every agent]
    pub agent_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The file to check (relative to the current directory)
    pub path: PathBuf,
    /// Use these verifiers instead of the default chain (repeatable)
    #[arg(long = "verifier", value_name = "NAME")]
    pub verifiers: Vec<String>,
    /// Use this agent's configured chain (and id in script placeholders)
    #[arg(long, value_name = "AGENT_ID", conflicts_with = "verifiers")]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Read the bearer token from this file (default: $BLUEGREEN_TOKEN)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Most concurrent event-stream subscribers (GET /api/v1/events); more get 503
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_subscribers: usize,
    /// Allow running without a token when listening on loopback only
    #[arg(long)]
    pub insecure_loopback: bool,
    /// Close a connection whose request head is not complete within this time
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: std::time::Duration,
    /// Close a keep-alive connection idle this long (also a stalled body or response)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Serve at most this many connections at once; more are answered 503 and closed
    #[arg(long, value_name = "N", default_value_t = crate::serve::conn::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Run at most this many deployments/rollbacks at once; more wait up to lock_timeout
    /// (default: twice the number of cores)
    #[arg(long, value_name = "N")]
    pub max_operations: Option<usize>,
    /// After SIGTERM/SIGINT, how long running deployments may take before they are cancelled
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("bluegreen "),
                "{} has no example",
                sub.get_name()
            );
        }
    }
}
