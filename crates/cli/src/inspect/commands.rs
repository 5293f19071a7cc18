//! `bluegreen show`, `diff` and `watch`.

use bluegreen_core::{feed, AgentId, BlueGreenService};

use super::{diff, show_json, Versions};
use crate::cli::{DiffArgs, ShowArgs, WatchArgs};
use crate::commands::Output;
use crate::CliError;

/// `show AGENT [DEPLOYMENT]`: the bytes, exactly.
pub(crate) fn show(service: &BlueGreenService, args: &ShowArgs) -> Result<Output, CliError> {
    let versions = Versions::of(service, &args.agent_id)?;
    let record = versions.record(args.deployment_id.as_deref())?.clone();
    let version = versions.bytes(&record)?;
    let mut output = Output::success(show_json(&version), String::new());
    output.raw = Some(version.bytes);
    Ok(output)
}

/// `diff AGENT [FROM [TO]]`: colored only when stdout is a terminal and NO_COLOR is unset
/// (the same choice `anstream` makes for the rest of the human output).
pub(crate) fn diff(service: &BlueGreenService, args: &DiffArgs) -> Result<Output, CliError> {
    let versions = Versions::of(service, &args.agent_id)?;
    let diff = diff::between(&versions, args.from.as_deref(), args.to.as_deref())?;
    let color = anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
    let text = if color {
        diff.colored()
    } else {
        diff.text.clone()
    };
    let mut output = Output::success(diff.to_json(), String::new());
    output.raw = Some(text.into_bytes());
    Ok(output)
}

/// `watch [AGENT]`: one line (or JSON document) per registry event, until SIGINT/SIGTERM.
pub(crate) async fn watch(
    service: &BlueGreenService,
    args: &WatchArgs,
    json: bool,
) -> Result<Output, CliError> {
    use std::io::Write as _;
    use tokio::signal::unix::{signal, SignalKind};
    let only = args.agent_id.as_deref().map(AgentId::new).transpose()?;
    let signal_error = |e: std::io::Error| CliError::Io(format!("installing signal handlers: {e}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut feed = feed::watch(service.store().clone(), only, feed::DEFAULT_INTERVAL)?;
    // On stderr, so scripts (and tests) know from when on events are caught.
    eprintln!("watching for changes (Ctrl-C to stop)");
    loop {
        let change = tokio::select! {
            change = feed.next() => change,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        };
        let Some(change) = change else {
            return Err(CliError::Io("the change feed stopped".into()));
        };
        let line = if json {
            super::feed::document(&change).to_string()
        } else {
            super::feed::human_line(&change)
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break; // stdout closed (e.g. `| head`): nobody is listening any more
        }
    }
    Ok(Output::success(serde_json::Value::Null, String::new()))
}
