//! The `python-startup` verifier: import the staged file in a fresh, isolated interpreter.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluegreen_core::util::human_duration;
use bluegreen_core::{Diagnostic, Verdict, Verifier, VerifyRequest};
use serde::Deserialize;

use crate::limits::{inherited_env, Limits};
use crate::runner::{self, signal_name, tail_text, Exit, ProcessSpec, RunOutput};
use crate::sandbox::{self, Sandbox};
use crate::zygote::{WarmRequest, ZygotePool};

/// The cold-mode program: the shared check code plus its entry point.
const COLD_SOURCE: &str = concat!(include_str!("python/check.py"), "\n_bg_cold_main()\n");

/// Options of a `python-startup` verifier (`[verifiers.<name>] kind = "python-startup"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupOptions {
    /// The interpreter (top-level `python` in the config), default `python3`.
    pub python: String,
    /// A module-level name that must exist, be callable and accept one positional argument.
    pub entrypoint: Option<String>,
    /// Limit for one check, default 10 s.
    pub timeout: Duration,
    /// Check in a child forked from a pre-started interpreter (the zygote) instead of a fresh
    /// `python -I` per check. Same verdicts, a fraction of the latency; falls back to cold
    /// automatically. Default on.
    pub warm: bool,
    pub limits: Limits,
    /// Environment variables passed through besides [`crate::ENV_ALLOW_LIST`].
    pub pass_env: Vec<String>,
    /// Import roots besides the root (`python_path` in the config): directories relative
    /// to the root, already checked to lie inside it.
    pub python_path: Vec<PathBuf>,
    /// Confinement of the check, cold and warm (see [`crate::sandbox`]); default strict.
    pub sandbox: Sandbox,
    /// Files a strict check cannot read, even as root (the server's token file): see
    /// [`crate::sandbox`]. Absolute paths.
    pub hidden: Vec<PathBuf>,
}

impl Default for StartupOptions {
    fn default() -> Self {
        Self {
            python: "python3".into(),
            entrypoint: None,
            timeout: Duration::from_secs(10),
            warm: true,
            limits: Limits::default(),
            pass_env: Vec::new(),
            python_path: Vec::new(),
            sandbox: Sandbox::Strict,
            hidden: Vec::new(),
        }
    }
}

/// Imports the staged file in a fresh `python -I` (working directory = root) as the module
/// it will be: under its dotted import name ([`bluegreen_core::import_name`]), its parent
/// packages imported first from the live tree, the import roots (root, then `python_path`)
/// first on `sys.path` (and for a top-level module its own directory after them), running
/// its module-level code as production would. Fails on any exception (including `SystemExit` and
/// `KeyboardInterrupt`), a non-zero exit, death by a signal or the timeout; checks the
/// entrypoint when one is configured. Clones share one zygote, which is killed when the last
/// clone is dropped.
#[derive(Clone)]
pub struct StartupVerifier {
    name: String,
    options: Arc<StartupOptions>,
    env: Arc<Vec<(OsString, OsString)>>,
    zygote: Arc<ZygotePool>,
}

impl std::fmt::Debug for StartupVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartupVerifier")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish()
    }
}

/// The report `check.py` writes.
#[derive(Debug, Deserialize)]
struct Report {
    ok: bool,
    #[serde(default)]
    line: u32,
    #[serde(default)]
    column: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    traceback: String,
}

/// How a check is addressed to the interpreter.
struct Plan {
    staged: PathBuf,
    /// The target's dotted import name ([`bluegreen_core::import_name`]).
    module: String,
    /// The target is a package's `__init__.py`.
    package: bool,
    root: PathBuf,
    /// Put first on `sys.path`: the import roots (the root, then `python_path`), and for a
    /// top-level module its own directory.
    path: Vec<PathBuf>,
}

impl Plan {
    fn new(req: &VerifyRequest, python_path: &[PathBuf]) -> Self {
        let absolute = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                req.root.join(p)
            }
        };
        let root = absolute(&req.root);
        let target = absolute(&req.target);
        let mut import_roots = vec![root.clone()];
        import_roots.extend(python_path.iter().map(|p| root.join(p)));
        let name = bluegreen_core::import_name(&import_roots, &target);
        Self {
            staged: absolute(&req.staged),
            module: name.name,
            package: name.is_package,
            root,
            path: name.sys_path,
        }
    }
}

impl StartupVerifier {
    pub fn new(name: impl Into<String>, options: StartupOptions) -> Self {
        let env = inherited_env(&options.pass_env);
        let zygote = ZygotePool::new(
            options.python.clone().into(),
            env.clone(),
            &options.limits,
            options.sandbox,
            options.hidden.clone(),
        );
        Self {
            name: name.into(),
            options: Arc::new(options),
            env: Arc::new(env),
            zygote: Arc::new(zygote),
        }
    }

    pub fn options(&self) -> &StartupOptions {
        &self.options
    }

    /// Starts the warm-mode zygote now (in `root`) instead of on the first check, e.g. when a
    /// long-running server starts; `true` if it is running. A one-shot command gains nothing
    /// from warm mode: its single check pays for the zygote's start.
    pub async fn prestart(&self, root: &Path) -> bool {
        self.options.warm && self.zygote.get(root).await.is_some()
    }

    /// The pid of the warm-mode interpreter if one is running (diagnostics and tests).
    pub fn zygote_pid(&self) -> Option<i32> {
        self.zygote.current_pid()
    }

    /// Checks `req` in a fresh `python -I`, ignoring [`StartupOptions::warm`].
    pub async fn verify_cold(&self, req: &VerifyRequest) -> Verdict {
        self.cold(
            &Plan::new(req, &self.options.python_path),
            self.options.timeout,
        )
        .await
    }

    async fn cold(&self, plan: &Plan, timeout: Duration) -> Verdict {
        let mut args: Vec<OsString> = vec![
            "-I".into(),
            "-B".into(),
            "-c".into(),
            COLD_SOURCE.into(),
            plan.staged.clone().into(),
            plan.module.clone().into(),
            self.options.entrypoint.clone().unwrap_or_default().into(),
            if plan.package { "package" } else { "module" }.into(),
        ];
        args.extend(plan.path.iter().map(|p| p.clone().into_os_string()));
        let mut env = self.env.as_ref().clone();
        // Strict: a private scratch directory (TMPDIR, HOME), removed after the check.
        let confined = match sandbox::prepare(self.options.sandbox, &mut env, &self.options.hidden)
        {
            Ok(confined) => confined,
            Err(e) => {
                return Verdict::fail_msg(format!(
                    "cannot create a scratch directory for the startup check: {e}"
                ))
            }
        };
        let spec = ProcessSpec {
            program: self.options.python.as_ref(),
            args,
            cwd: &plan.root,
            env,
            limits: Some(self.options.limits),
            extra_fds: Vec::new(),
            confinement: confined.as_ref().map(|c| &c.confinement),
        };
        let cap = self.options.limits.output_cap_bytes;
        match runner::run(spec, timeout, cap, true).await {
            Ok(output) => self.verdict(&output),
            Err(e) => Verdict::fail_msg(format!(
                "cannot start python interpreter {:?}: {e}",
                self.options.python
            )),
        }
    }

    fn warm_request(&self, plan: &Plan) -> Option<WarmRequest> {
        let text = |p: &Path| p.to_str().map(str::to_owned);
        Some(WarmRequest {
            staged: text(&plan.staged)?,
            module: plan.module.clone(),
            package: plan.package,
            entrypoint: self.options.entrypoint.clone(),
            root: text(&plan.root)?,
            path: plan.path.iter().map(|p| text(p)).collect::<Option<_>>()?,
            output_cap: self.options.limits.output_cap_bytes,
        })
    }

    /// Turns what the interpreter did into a verdict (the same for cold and warm mode).
    fn verdict(&self, output: &RunOutput) -> Verdict {
        let Some(exit) = output.exit else {
            return Verdict::fail_msg(format!(
                "startup check timed out after {}",
                human_duration(self.options.timeout)
            ));
        };
        let report = serde_json::from_slice::<Report>(&output.report).ok();
        match (report, exit) {
            (Some(report), _) if !report.ok => {
                tracing::debug!(traceback = %report.traceback, "startup check failed");
                Verdict::fail(vec![Diagnostic::new(
                    report.line,
                    report.column,
                    report.message,
                )])
            }
            (Some(_), Exit::Code(0)) => Verdict::pass(),
            (_, Exit::Signal(signal)) => Verdict::fail_msg(with_stderr(
                format!(
                    "interpreter killed by signal {signal} ({})",
                    signal_name(signal)
                ),
                &output.stderr.tail,
            )),
            (_, Exit::Code(code)) => Verdict::fail_msg(with_stderr(
                format!("interpreter exited with status {code} before the import finished"),
                &output.stderr.tail,
            )),
        }
    }
}

fn with_stderr(message: String, stderr: &[u8]) -> String {
    let tail = tail_text(stderr, 1, 500);
    if tail.is_empty() {
        message
    } else {
        format!("{message}: {tail}")
    }
}

#[async_trait::async_trait]
impl Verifier for StartupVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let started = Instant::now();
        let plan = Plan::new(req, &self.options.python_path);
        if self.options.warm {
            // Starting the zygote (first check, or after it died) counts against the timeout.
            let zygote = match self.warm_request(&plan) {
                Some(request) => {
                    tokio::time::timeout(self.options.timeout, self.zygote.get(&plan.root))
                        .await
                        .ok()
                        .flatten()
                        .map(|zygote| (request, zygote))
                }
                None => None,
            };
            if let Some((request, zygote)) = zygote {
                let left = self.options.timeout.saturating_sub(started.elapsed());
                if let Some(output) = zygote.check(request, left).await {
                    return self.verdict(&output);
                }
                tracing::warn!(verifier = %self.name, "startup zygote failed; checking cold");
            }
        }
        let left = self.options.timeout.saturating_sub(started.elapsed());
        self.cold(&plan, left).await
    }
}
