//! The `script` verifier: any command; passes iff it exits 0 within the timeout.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::util::human_duration;
use bluegreen_core::{Verdict, Verifier, VerifyRequest};

use crate::limits::{inherited_env, Limits};
use crate::runner::{self, signal_name, tail_text, Exit, ProcessSpec};
use crate::sandbox::{self, Sandbox};
use crate::Error;

/// Lines of each output stream quoted in a failure diagnostic.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4000;

/// Options of a `script` verifier (`[verifiers.<name>] kind = "script"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOptions {
    /// Program and arguments. Placeholders `{staged}`, `{target}`, `{agent_id}`,
    /// `{deployment_id}` and `{root}` are replaced in every element.
    pub command: Vec<String>,
    /// Default 60 s; on timeout the script's whole process group is killed.
    pub timeout: Duration,
    pub limits: Limits,
    /// Environment variables passed through besides [`crate::ENV_ALLOW_LIST`].
    pub pass_env: Vec<String>,
    /// Confinement of the script (see [`crate::sandbox`]); default strict.
    pub sandbox: Sandbox,
    /// Files a strict script cannot read, even as root (the server's token file): see
    /// [`crate::sandbox`]. Absolute paths.
    pub hidden: Vec<PathBuf>,
}

impl Default for ScriptOptions {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            timeout: Duration::from_secs(60),
            limits: Limits::default(),
            pass_env: Vec::new(),
            sandbox: Sandbox::Strict,
            hidden: Vec::new(),
        }
    }
}

const DONT_WRITE_BYTECODE: &str = "PYTHONDONTWRITEBYTECODE";

/// Runs a command with the root as working directory and the request exported as
/// `BLUEGREEN_STAGED`, `BLUEGREEN_TARGET`, `BLUEGREEN_AGENT_ID`, `BLUEGREEN_DEPLOYMENT_ID`
/// and `BLUEGREEN_ROOT`, with `PYTHONDONTWRITEBYTECODE=1` unless that variable is passed
/// through. Passes iff it exits 0 in time; otherwise the tail of its output is the
/// diagnostic.
#[derive(Debug, Clone)]
pub struct ScriptVerifier {
    name: String,
    options: Arc<ScriptOptions>,
    env: Arc<Vec<(OsString, OsString)>>,
}

impl ScriptVerifier {
    /// Fails when the command is empty.
    pub fn new(name: impl Into<String>, options: ScriptOptions) -> Result<Self, Error> {
        let name = name.into();
        if options.command.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::EmptyCommand(name));
        }
        let mut env = inherited_env(&options.pass_env);
        // Nothing a check runs leaves bytecode next to the sources, unless the user passes
        // the variable through (then its own value, or its absence, is kept).
        if !options.pass_env.iter().any(|v| v == DONT_WRITE_BYTECODE) {
            env.push((DONT_WRITE_BYTECODE.into(), "1".into()));
        }
        Ok(Self {
            name,
            options: Arc::new(options),
            env: Arc::new(env),
        })
    }

    pub fn options(&self) -> &ScriptOptions {
        &self.options
    }
}

/// The placeholders and their values for one request.
fn placeholders(req: &VerifyRequest) -> [(&'static str, &'static str, OsString); 5] {
    [
        ("{staged}", "BLUEGREEN_STAGED", req.staged.clone().into()),
        ("{target}", "BLUEGREEN_TARGET", req.target.clone().into()),
        (
            "{agent_id}",
            "BLUEGREEN_AGENT_ID",
            req.agent_id.as_str().into(),
        ),
        (
            "{deployment_id}",
            "BLUEGREEN_DEPLOYMENT_ID",
            req.deployment_id.as_str().into(),
        ),
        ("{root}", "BLUEGREEN_ROOT", req.root.clone().into()),
    ]
}

/// Replaces every placeholder in `arg` (byte-wise, so non-UTF-8 paths survive).
fn substitute(arg: &str, values: &[(&str, &str, OsString)]) -> OsString {
    let mut out: Vec<u8> = Vec::with_capacity(arg.len());
    let mut rest = arg;
    'scan: while !rest.is_empty() {
        for (placeholder, _, value) in values {
            if let Some(after) = rest.strip_prefix(placeholder) {
                out.extend_from_slice(value.as_bytes());
                rest = after;
                continue 'scan;
            }
        }
        let next = rest.chars().next().map_or(1, char::len_utf8);
        out.extend_from_slice(&rest.as_bytes()[..next]);
        rest = &rest[next..];
    }
    OsString::from_vec(out)
}

#[async_trait::async_trait]
impl Verifier for ScriptVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let values = placeholders(req);
        let mut argv = self.options.command.iter().map(|a| substitute(a, &values));
        let Some(program) = argv.next() else {
            return Verdict::fail_msg("script verifier has an empty command");
        };
        let mut env = self.env.as_ref().clone();
        env.extend(
            values
                .iter()
                .map(|(_, var, value)| ((*var).into(), value.clone())),
        );
        let shown = self.options.command.join(" ");
        // Strict: a private scratch directory (TMPDIR, HOME), removed after the run.
        let confined = match sandbox::prepare(self.options.sandbox, &mut env, &self.options.hidden)
        {
            Ok(confined) => confined,
            Err(e) => {
                return Verdict::fail_msg(format!(
                    "cannot create a scratch directory for `{shown}`: {e}"
                ))
            }
        };
        let spec = ProcessSpec {
            program: &program,
            args: argv.collect(),
            cwd: &req.root,
            env,
            limits: Some(self.options.limits),
            extra_fds: Vec::new(),
            confinement: confined.as_ref().map(|c| &c.confinement),
        };
        let output = match runner::run(
            spec,
            self.options.timeout,
            self.options.limits.output_cap_bytes,
            false,
        )
        .await
        {
            Ok(output) => output,
            Err(e) => return Verdict::fail_msg(format!("cannot run `{shown}`: {e}")),
        };
        let headline = match output.exit {
            Some(Exit::Code(0)) => return Verdict::pass(),
            Some(Exit::Code(code)) => format!("`{shown}` exited with status {code}"),
            Some(Exit::Signal(signal)) => format!(
                "`{shown}` was killed by signal {signal} ({})",
                signal_name(signal)
            ),
            None => format!(
                "`{shown}` timed out after {}",
                human_duration(self.options.timeout)
            ),
        };
        let mut message = headline;
        for (label, captured) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            let tail = tail_text(&captured.tail, TAIL_LINES, TAIL_BYTES);
            if !tail.is_empty() {
                message.push_str(&format!("\n--- {label} (tail) ---\n{tail}"));
            }
        }
        Verdict::fail_msg(message)
    }
}
