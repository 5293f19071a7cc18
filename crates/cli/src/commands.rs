//! Running the commands: parse, set up logging, load the config, recover, dispatch, print.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use bluegreen_core::{
    AgentId, BlueGreenService, Chain, DeployOutcome, DeployRequest, DeploymentId, VerifyRequest,
};
use clap::{CommandFactory, Parser};
use serde_json::Value;

use crate::cli::{Cli, Command, DeployArgs, GlobalArgs, RollbackArgs, ServeArgs, VerifyArgs};
use crate::render::{self, Verbosity};
use crate::{exit, json, CliError, Config};

/// What a command produced: its exit code, its JSON document and its human text (or, for
/// `show`, raw bytes written as they are). A `Null` document means the command printed its
/// own output already (`watch`).
pub(crate) struct Output {
    pub(crate) code: u8,
    pub(crate) json: Value,
    pub(crate) human: String,
    pub(crate) raw: Option<Vec<u8>>,
}

impl Output {
    pub(crate) fn success(json: Value, human: String) -> Self {
        Self {
            code: exit::SUCCESS,
            json,
            human,
            raw: None,
        }
    }
}

pub(crate) fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err, &args),
    };
    init_logging(&cli.global);

    if let Command::Completions(completions) = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(
            completions.shell,
            &mut command,
            "bluegreen",
            &mut std::io::stdout(),
        );
        return exit::SUCCESS;
    }

    let agent = agent_of(&cli.command).map(str::to_owned);
    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(execute(&cli)),
        Err(e) => Err(CliError::Io(format!("cannot start the async runtime: {e}"))),
    };
    match result {
        Ok(output) => {
            if cli.global.json {
                if !output.json.is_null() {
                    print_json(&output.json);
                }
            } else if let Some(raw) = &output.raw {
                print_raw(raw);
            } else {
                print_human(&output.human);
            }
            output.code
        }
        Err(err) => {
            if cli.global.json {
                print_json(&err.to_json(agent.as_deref()));
            }
            let mut stderr = anstream::stderr();
            let _ = stderr.write_all(render::error(&err).as_bytes());
            err.exit_code()
        }
    }
}

/// Usage errors exit 2 (help and version 0) as clap prints them; with `--json` the
/// contract's error document also goes to stdout.
fn usage_error(err: &clap::Error, args: &[OsString]) -> u8 {
    use clap::error::ErrorKind as K;
    if matches!(err.kind(), K::DisplayHelp | K::DisplayVersion) {
        let _ = err.print();
        return exit::SUCCESS;
    }
    if args.iter().any(|a| a == "--json") {
        let message = if err.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
            "a command is required; see bluegreen --help".to_owned()
        } else {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("usage error");
            first.trim_start_matches("error: ").to_owned()
        };
        print_json(&json::error_message(
            &message,
            bluegreen_core::ErrorKind::BadInput,
            None,
        ));
    }
    let _ = err.print();
    exit::BAD_INPUT
}

fn print_json(value: &Value) {
    let mut stdout = std::io::stdout().lock();
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned());
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// Bytes exactly as they are: not through `anstream`, which would strip escape sequences
/// that are part of the code.
pub(crate) fn print_raw(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes);
    let _ = stdout.flush();
}

fn print_human(text: &str) {
    let mut stdout = anstream::stdout();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Logs go to stderr: warn by default, `-v` info, `-vv` debug, `-q` errors; RUST_LOG wins.
fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
        && std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .try_init();
}

fn agent_of(command: &Command) -> Option<&str> {
    match command {
        Command::Deploy(a) => Some(&a.agent_id),
        Command::Rollback(a) => Some(&a.agent_id),
        Command::Status(a) => a.agent_id.as_deref(),
        Command::History(a) => Some(&a.agent_id),
        Command::Show(a) => Some(&a.agent_id),
        Command::Diff(a) => Some(&a.agent_id),
        Command::Watch(a) => a.agent_id.as_deref(),
        Command::Verify(a) => a.agent.as_deref(),
        _ => None,
    }
}

async fn execute(cli: &Cli) -> Result<Output, CliError> {
    let root = match &cli.global.root {
        Some(root) => root.clone(),
        None => std::env::current_dir()
            .map_err(|e| CliError::Io(format!("cannot read the current directory: {e}")))?,
    };
    // The root is checked before the config so a missing root is reported as such.
    bluegreen_core::paths::canonical_root(&root)?;
    let config = Config::discover(&root, cli.global.config.as_deref())?;
    let reserved: Vec<PathBuf> = match &cli.command {
        Command::Serve(args) => args.token_file.iter().cloned().collect(),
        _ => Vec::new(),
    };
    let service = crate::build_service_reserving(&root, &config, &reserved)?;

    // Every command first repairs what a crash interrupted. An agent that cannot be
    // recovered (a corrupt registry) is reported and left alone; the others go on.
    // `recover` looks at every agent; `status` of all agents recovers what the one read of
    // every log tail it needs anyway finds; every other command recovers the agents in the
    // store's pending index and its own agent, at a cost independent of the agent count.
    let mut all_status = None;
    let recovery = match &cli.command {
        Command::Recover => service.recover().await?,
        Command::Status(args) if args.agent_id.is_none() => {
            let (recovery, status) = service.recover_and_status().await?;
            all_status = Some(status);
            recovery
        }
        command => service.recover_pending(agent_of(command)).await?,
    };
    for action in &recovery.actions {
        tracing::warn!(agent = %action.agent_id, "recovered: {}", action.action);
    }
    if !matches!(cli.command, Command::Status(_) | Command::Recover) {
        // (`status` and `recover` report these themselves, and a command on the broken
        // agent fails with the same error.)
        let own = agent_of(&cli.command);
        for (agent, error) in recovery
            .broken
            .iter()
            .filter(|(a, _)| Some(a.as_str()) != own)
        {
            tracing::warn!(%agent, "cannot recover: {error}");
        }
    }

    let verbosity = Verbosity {
        stages: !cli.global.quiet,
    };
    match &cli.command {
        Command::Deploy(args) => deploy(&service, &config, args, verbosity).await,
        Command::Rollback(args) => rollback(&service, args, verbosity).await,
        Command::Status(args) => status(&service, args.agent_id.as_deref(), all_status, &recovery),
        Command::History(args) => {
            let deployments = service.history(&args.agent_id)?;
            Ok(Output::success(
                json::history(&args.agent_id, &deployments),
                render::history(&args.agent_id, &deployments),
            ))
        }
        Command::Verify(args) => verify(&service, &config, args, verbosity).await,
        Command::Show(args) => crate::inspect::commands::show(&service, args),
        Command::Diff(args) => crate::inspect::commands::diff(&service, args),
        Command::Watch(args) => {
            crate::inspect::commands::watch(&service, args, cli.global.json).await
        }
        Command::Recover => Ok(Output {
            code: if recovery.broken.is_empty() {
                exit::SUCCESS
            } else {
                exit::code_for(bluegreen_core::ErrorKind::Io)
            },
            ..Output::success(json::recover(&recovery), render::recover(&recovery))
        }),
        Command::Serve(args) => serve(service.clone(), args, cli.global.json).await,
        Command::Completions(_) => Err(CliError::Io(
            "completions are handled before a root is opened".into(),
        )),
    }
}

/// Reads the new code, at most one byte over `limit`: the core refuses oversized code, and
/// reading more of an endless stdin first would only waste memory.
fn read_code(path: &Path, limit: usize) -> Result<Vec<u8>, CliError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut code = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(cap)
            .read_to_end(&mut code)
            .map_err(|e| CliError::Io(format!("cannot read the code from stdin: {e}")))?;
        return Ok(code);
    }
    let bad = |e: std::io::Error| {
        CliError::BadInput(format!("cannot read code file {}: {e}", path.display()))
    };
    std::fs::File::open(path)
        .map_err(bad)?
        .take(cap)
        .read_to_end(&mut code)
        .map_err(bad)?;
    Ok(code)
}

/// A chain of named verifiers, for `--verifier NAME` overrides.
fn named_chain(config: &Config, names: &[String]) -> Result<Chain, CliError> {
    crate::verifiers::Verifiers::default()
        .chain(config, names)
        .map_err(CliError::BadInput)
}

async fn deploy(
    service: &BlueGreenService,
    config: &Config,
    args: &DeployArgs,
    verbosity: Verbosity,
) -> Result<Output, CliError> {
    let agent = AgentId::new(&args.agent_id)?;
    let configured = config.agents.get(&agent).and_then(|a| a.file.as_deref());
    let file = match (args.file.as_deref(), configured) {
        (Some(given), Some(configured)) => {
            if service.resolve(given)?.rel != service.resolve(configured)?.rel {
                return Err(CliError::BadInput(format!(
                    "--file {given} differs from the file of [agents.{agent}] in the config ({configured})"
                )));
            }
            given
        }
        (Some(given), None) => given,
        (None, Some(configured)) => configured,
        (None, None) => {
            return Err(CliError::BadInput(format!(
                "--file is required (or set `file` under [agents.{agent}] in bluegreen.toml)"
            )))
        }
    };
    let limit = service.limits().max_code_bytes;
    let code = read_code(&args.code_file, limit)?;
    if code.len() > limit {
        // Only `limit + 1` bytes were read, so say "over", not a size.
        return Err(CliError::BadInput(format!(
            "the code in {} is over the limit of {limit} bytes (max_code_bytes)",
            args.code_file.display()
        )));
    }
    let chain = if args.no_verify {
        Some(Chain::new())
    } else if args.verifiers.is_empty() {
        None
    } else {
        Some(named_chain(config, &args.verifiers)?)
    };
    let report = service
        .deploy(DeployRequest {
            agent_id: agent.as_str(),
            code: &code,
            file_path: Some(file),
            chain,
        })
        .await?;
    let code_exit = match report.outcome {
        DeployOutcome::Live => exit::SUCCESS,
        DeployOutcome::Rejected | DeployOutcome::RolledBack => exit::REJECTED,
    };
    Ok(Output {
        code: code_exit,
        json: json::deploy(&report),
        human: render::deploy(&report, &code, verbosity),
        raw: None,
    })
}

async fn rollback(
    service: &BlueGreenService,
    args: &RollbackArgs,
    verbosity: Verbosity,
) -> Result<Output, CliError> {
    let report = service
        .rollback(&args.agent_id, args.file.as_deref(), args.to.as_deref())
        .await?;
    Ok(Output::success(
        json::rollback(&report),
        render::rollback(&report, verbosity),
    ))
}

/// `status`: every readable agent's LIVE record. Agents whose registry cannot be read (or
/// could not be recovered) are reported on stderr and under an additive `"errors"` key of
/// the JSON document, and make the exit code 4, while the others are still shown.
fn status(
    service: &BlueGreenService,
    agent: Option<&str>,
    all: Option<bluegreen_core::store::ActiveVersions>,
    recovery: &bluegreen_core::RecoveryReport,
) -> Result<Output, CliError> {
    let (mut live, mut broken) = match (agent, all) {
        (None, Some(all)) => (all.live, all.broken),
        (None, None) => {
            let all = service.status()?;
            (all.live, all.broken)
        }
        // One agent: only its own log tail is read.
        (Some(agent), _) => {
            let id = AgentId::new(agent)?;
            let mut live = std::collections::BTreeMap::new();
            let mut broken = std::collections::BTreeMap::new();
            match service.store().active_version(&id) {
                Ok(Some(record)) => {
                    live.insert(id, record);
                }
                Ok(None) => {}
                Err(e) => {
                    broken.insert(id, e.to_string());
                }
            }
            (live, broken)
        }
    };
    for (id, error) in &recovery.broken {
        broken.entry(id.clone()).or_insert_with(|| error.clone());
    }
    if let Some(agent) = agent {
        // An agent that never deployed is an error; one with nothing live is an empty answer.
        if let Some((_, error)) = broken.iter().find(|(id, _)| id.as_str() == agent) {
            return Err(CliError::Core(bluegreen_core::Error::Store(error.clone())));
        }
        service.history(agent)?;
        live.retain(|id, _| id.as_str() == agent);
        broken.clear();
    }
    let mut output = Output::success(
        json::with_errors(json::status(&live), &broken),
        render::status(&live),
    );
    if !broken.is_empty() {
        let mut stderr = anstream::stderr();
        for error in broken.values() {
            let _ = writeln!(stderr, "error: {error}");
        }
        output.code = exit::code_for(bluegreen_core::ErrorKind::Io);
    }
    Ok(output)
}

async fn verify(
    service: &BlueGreenService,
    config: &Config,
    args: &VerifyArgs,
    verbosity: Verbosity,
) -> Result<Output, CliError> {
    let path: PathBuf = std::fs::canonicalize(&args.path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", args.path.display())))?;
    if !path.is_file() {
        return Err(CliError::BadInput(format!(
            "{} is not a file",
            args.path.display()
        )));
    }
    let source = std::fs::read(&path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", args.path.display())))?;
    let agent_id = match &args.agent {
        Some(agent) => AgentId::new(agent)?,
        None => agent_from_file(&path)?,
    };
    let names: Vec<String> = if !args.verifiers.is_empty() {
        args.verifiers.clone()
    } else {
        config.chain_of(agent_id.as_str()).to_vec()
    };
    let chain = named_chain(config, &names)?;
    let request = VerifyRequest {
        staged: path.clone(),
        target: path.clone(),
        agent_id,
        deployment_id: DeploymentId::generate(),
        root: service.root().to_path_buf(),
    };
    let report = chain.run(&request).await;
    let shown = args.path.display().to_string();
    Ok(Output {
        code: if report.passed {
            exit::SUCCESS
        } else {
            exit::REJECTED
        },
        json: json::verify(report.passed, &report.outcomes),
        human: render::verify(&shown, report.passed, &report.outcomes, &source, verbosity),
        raw: None,
    })
}

/// A stand-in agent id for `verify` (scripts see it as `{agent_id}`): the file's stem when
/// that is a valid id, else `verify`.
fn agent_from_file(path: &Path) -> Result<AgentId, CliError> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    Ok(AgentId::new(stem).or_else(|_| AgentId::new("verify"))?)
}

async fn serve(
    service: BlueGreenService,
    args: &ServeArgs,
    json: bool,
) -> Result<Output, CliError> {
    use crate::serve::{resolve_token, ServeError, ServeOptions};
    let listen = args.listen.parse().map_err(|e| {
        CliError::BadInput(format!(
            "--listen {:?} is not an address such as 127.0.0.1:8080: {e}",
            args.listen
        ))
    })?;
    let as_cli_error = |e: ServeError| match e.exit_code() {
        exit::BAD_INPUT => CliError::BadInput(e.to_string()),
        _ => CliError::Io(e.to_string()),
    };
    let options = ServeOptions {
        token: resolve_token(args.token_file.as_deref()).map_err(as_cli_error)?,
        insecure_loopback: args.insecure_loopback,
        announce_on_stdout: !json,
        conn_limits: crate::serve::ConnLimits {
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        },
        max_operations: args.max_operations.unwrap_or(0),
        shutdown_grace: args.shutdown_grace,
        max_event_subscribers: args.max_subscribers,
        ..ServeOptions::new(listen)
    };
    crate::serve::run(service, options)
        .await
        .map_err(as_cli_error)?;
    Ok(Output::success(
        serde_json::json!({ "status": "stopped" }),
        String::new(),
    ))
}
