//! The one place where verifiers are built from configuration, so a change in a verifier
//! crate's API is fixed here and nowhere else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{Chain, ChainOptions, Verdict, Verifier, VerifyRequest};
use bluegreen_verify_syntax::{EntrypointSpec, SyntaxOptions, SyntaxVerifier};

use crate::config::{Config, SandboxMode, Span, VerifierKind, VerifierSpec};

/// Checks a verifier's options when the config is loaded: `Err((span, message))` locates the
/// mistake in the file.
pub fn validate(spec: &VerifierSpec, config: &Config) -> Result<(), (Span, String)> {
    match &spec.kind {
        VerifierKind::PythonSyntax { .. } => syntax_options(spec).map(drop),
        VerifierKind::PythonStartup { .. } => startup_options(spec, config).map(drop),
        VerifierKind::Script { .. } => script_options(spec).map(drop),
    }
}

/// Builds the verifiers that the named chains use, each once, shared between chains.
#[derive(Default)]
pub struct Verifiers {
    built: BTreeMap<String, Arc<dyn Verifier>>,
    /// Files strict startup and script checks cannot read (the server's token file).
    hidden: Vec<PathBuf>,
}

impl Verifiers {
    /// Verifiers whose strict checks cannot read `hidden` (absolute paths).
    pub fn hiding(hidden: Vec<PathBuf>) -> Self {
        Self {
            hidden,
            ..Self::default()
        }
    }

    /// The chain of `names`, with the config's chain options. Unknown names are bad input.
    pub fn chain(&mut self, config: &Config, names: &[String]) -> Result<Chain, String> {
        let mut chain = Chain::new().options(ChainOptions {
            parallel: config.parallel,
            deadline: config.deadline,
            ..ChainOptions::default()
        });
        for name in names {
            chain = chain.with_arc(self.get(config, name)?);
        }
        Ok(chain)
    }

    fn get(&mut self, config: &Config, name: &str) -> Result<Arc<dyn Verifier>, String> {
        if let Some(verifier) = self.built.get(name) {
            return Ok(verifier.clone());
        }
        let spec = config.verifiers.get(name).ok_or_else(|| {
            format!(
                "unknown verifier {name:?}; configured: {}",
                config
                    .verifiers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let verifier = build(spec, config, &self.hidden).map_err(|(_, message)| message)?;
        self.built.insert(name.to_owned(), verifier.clone());
        Ok(verifier)
    }
}

fn build(
    spec: &VerifierSpec,
    config: &Config,
    hidden: &[PathBuf],
) -> Result<Arc<dyn Verifier>, (Span, String)> {
    let verifier: Arc<dyn Verifier> = match &spec.kind {
        VerifierKind::PythonSyntax { .. } => {
            let syntax = SyntaxVerifier::new(spec.name.clone(), syntax_options(spec)?);
            // The syntax check runs in-process; its timeout is enforced here.
            match spec.timeout {
                Some(limit) => Arc::new(WithTimeout {
                    inner: syntax,
                    limit,
                }),
                None => Arc::new(syntax),
            }
        }
        VerifierKind::PythonStartup { .. } => {
            let mut options = startup_options(spec, config)?;
            options.hidden = hidden.to_vec();
            Arc::new(bluegreen_verify_process::StartupVerifier::new(
                spec.name.clone(),
                options,
            ))
        }
        VerifierKind::Script { command } => {
            let mut options = script_options(spec)?;
            options.hidden = hidden.to_vec();
            let verifier =
                bluegreen_verify_process::ScriptVerifier::new(spec.name.clone(), options)
                    .map_err(|e| (command.span(), e.to_string()))?;
            Arc::new(verifier)
        }
    };
    Ok(verifier)
}

fn syntax_options(spec: &VerifierSpec) -> Result<SyntaxOptions, (Span, String)> {
    let VerifierKind::PythonSyntax {
        engine,
        python_version,
        entrypoint,
    } = &spec.kind
    else {
        return Ok(SyntaxOptions::default());
    };
    let mut options = SyntaxOptions::default();
    if let Some(engine) = engine {
        options.engine = engine
            .get_ref()
            .parse()
            .map_err(|e: bluegreen_verify_syntax::ConfigError| (engine.span(), e.to_string()))?;
    }
    if let Some(version) = python_version {
        options.python_version = version
            .get_ref()
            .parse()
            .map_err(|e: bluegreen_verify_syntax::ConfigError| (version.span(), e.to_string()))?;
    }
    if let Some(entrypoint) = entrypoint {
        options.entrypoint = Some(EntrypointSpec::new(entrypoint_name(entrypoint)?));
    }
    Ok(options)
}

fn startup_options(
    spec: &VerifierSpec,
    config: &Config,
) -> Result<bluegreen_verify_process::StartupOptions, (Span, String)> {
    let mut options = bluegreen_verify_process::StartupOptions {
        python: config.python.clone(),
        pass_env: spec.pass_env.clone(),
        python_path: config.python_path.clone(),
        sandbox: sandbox(spec),
        ..Default::default()
    };
    if let VerifierKind::PythonStartup { entrypoint, warm } = &spec.kind {
        options.entrypoint = entrypoint
            .as_ref()
            .map(|e| entrypoint_name(e).map(str::to_owned))
            .transpose()?;
        options.warm = *warm;
    }
    if let Some(timeout) = spec.timeout {
        options.timeout = timeout;
    }
    Ok(options)
}

fn script_options(
    spec: &VerifierSpec,
) -> Result<bluegreen_verify_process::ScriptOptions, (Span, String)> {
    let VerifierKind::Script { command } = &spec.kind else {
        return Err((0..0, format!("{} is not a script verifier", spec.name)));
    };
    Ok(bluegreen_verify_process::ScriptOptions {
        command: command.get_ref().clone(),
        timeout: spec.timeout.unwrap_or(DEFAULT_SCRIPT_TIMEOUT),
        limits: Default::default(),
        pass_env: spec.pass_env.clone(),
        sandbox: sandbox(spec),
        ..Default::default()
    })
}

fn sandbox(spec: &VerifierSpec) -> bluegreen_verify_process::Sandbox {
    match spec.sandbox {
        SandboxMode::Strict => bluegreen_verify_process::Sandbox::Strict,
        SandboxMode::Off => bluegreen_verify_process::Sandbox::Off,
    }
}

/// A script without its own `timeout` still may not hang a deployment forever.
const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn entrypoint_name(value: &toml::Spanned<String>) -> Result<&str, (Span, String)> {
    let name = value.get_ref().as_str();
    let is_identifier = name
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_alphabetic())
        && name.chars().all(|c| c == '_' || c.is_alphanumeric());
    if is_identifier {
        Ok(name)
    } else {
        Err((
            value.span(),
            format!("entrypoint {name:?} is not a Python function name"),
        ))
    }
}

/// Applies a verifier's own time limit (the chain runner only knows chain-wide limits).
struct WithTimeout<V> {
    inner: V,
    limit: Duration,
}

#[bluegreen_core::async_trait]
impl<V: Verifier> Verifier for WithTimeout<V> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        match tokio::time::timeout(self.limit, self.inner.verify(req)).await {
            Ok(verdict) => verdict,
            Err(_) => Verdict::fail_msg(format!(
                "timed out after {}",
                humantime::format_duration(self.limit)
            )),
        }
    }

    fn prepare(&self, code: &std::sync::Arc<[u8]>) {
        self.inner.prepare(code);
    }
}
