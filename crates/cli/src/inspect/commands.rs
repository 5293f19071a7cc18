//! `bluegreen show`, `diff` and `watch`.

use bluegreen_core::BlueGreenService;

use super::{diff, show_json, Versions};
use crate::cli::{DiffArgs, ShowArgs};
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
