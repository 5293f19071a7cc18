//! `bluegreen.toml` (CONTRACT.md "Configuration"), parsed with serde + toml.
//!
//! Every mistake — a syntax error, an unknown key, an unknown verifier kind, a bad duration,
//! a chain naming a verifier that does not exist — is a [`ConfigError`] quoting the file,
//! line and column, because a config that half-works is worse than one that fails loudly.
//!
//! With no file, [`Config::default`] is the embedded default: the file store and the
//! built-in `syntax` verifier as the only check.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_core::{AgentId, Limits};
use serde::Deserialize;
use toml::Spanned;

/// The name of the built-in verifier, always available.
pub const SYNTAX: &str = "syntax";
/// The config file looked for in the root when `--config` is not given.
pub const FILE_NAME: &str = "bluegreen.toml";

/// A mistake in a config file, located at `line:column` (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The file's text and the byte span of the mistake, for a snippet with a caret.
    pub source_text: String,
    pub span: Range<usize>,
}

impl ConfigError {
    fn at(path: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, span.start);
        Self {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            source_text: text.to_owned(),
            span,
        }
    }
}

/// Where a value came from in the file: used by [`crate::verifiers`] to locate its errors.
pub type Span = Range<usize>;

/// The kind of a verifier, with its kind-specific options (raw; validated by
/// [`crate::verifiers::validate`] when the file is loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifierKind {
    PythonSyntax {
        engine: Option<Spanned<String>>,
        python_version: Option<Spanned<String>>,
        entrypoint: Option<Spanned<String>>,
    },
    PythonStartup {
        entrypoint: Option<Spanned<String>>,
        warm: bool,
    },
    Script {
        command: Spanned<Vec<String>>,
    },
}

/// One `[verifiers.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierSpec {
    pub name: String,
    pub kind: VerifierKind,
    /// The verifier's own time limit.
    pub timeout: Option<Duration>,
    /// Environment variables passed through to subprocess verifiers.
    pub pass_env: Vec<String>,
    /// `sandbox = "strict" | "off"` of subprocess verifiers (default strict).
    pub sandbox: SandboxMode,
}

/// How a subprocess verifier's processes are confined (`sandbox = "strict" | "off"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    #[default]
    Strict,
    Off,
}

impl VerifierSpec {
    /// The built-in `syntax` verifier with default options.
    pub fn builtin_syntax() -> Self {
        Self {
            name: SYNTAX.to_owned(),
            kind: VerifierKind::PythonSyntax {
                engine: None,
                python_version: None,
                entrypoint: None,
            },
            timeout: None,
            pass_env: Vec::new(),
            sandbox: SandboxMode::Strict,
        }
    }
}

/// One `[agents.ID]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentConfig {
    /// The agent's target file, relative to the root.
    pub file: Option<String>,
    /// The agent's own chain (verifier names); `None` uses `[chains] default`.
    pub chain: Option<Vec<String>>,
}

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from; `None` for the embedded default.
    pub path: Option<PathBuf>,
    pub limits: Limits,
    /// The interpreter of `python-startup` verifiers.
    pub python: String,
    /// Import roots besides the root (`python_path`): directories relative to the root,
    /// checked to exist inside it when the file was read for a root.
    pub python_path: Vec<PathBuf>,
    /// Every verifier by name; always contains `syntax`.
    pub verifiers: BTreeMap<String, VerifierSpec>,
    pub default_chain: Vec<String>,
    pub health_chain: Vec<String>,
    /// Run a chain's verifiers concurrently (`[chains] parallel`).
    pub parallel: bool,
    /// A time limit for a whole chain (`[chains] deadline`).
    pub deadline: Option<Duration>,
    pub agents: BTreeMap<AgentId, AgentConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let syntax = VerifierSpec::builtin_syntax();
        Self {
            path: None,
            limits: Limits::default(),
            python: "python3".to_owned(),
            python_path: Vec::new(),
            verifiers: BTreeMap::from([(SYNTAX.to_owned(), syntax)]),
            default_chain: vec![SYNTAX.to_owned()],
            health_chain: Vec::new(),
            parallel: false,
            deadline: None,
            agents: BTreeMap::new(),
        }
    }
}

impl Config {
    /// The config of a root: `explicit` if given (it must exist), else `<root>/bluegreen.toml`
    /// when present, else the embedded default.
    pub fn discover(root: &Path, explicit: Option<&Path>) -> Result<Self, LoadError> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let candidate = root.join(FILE_NAME);
                if !candidate.exists() {
                    return Ok(Self::default());
                }
                // Named relative to the root in messages, like every other path.
                return Self::load_named(&candidate, Path::new(FILE_NAME), Some(root));
            }
        };
        Self::load_named(&path, &path, Some(root))
    }

    /// Reads and validates one file (`python_path` entries are only checked lexically: no
    /// root is known).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        Self::load_named(path, path, None)
    }

    fn load_named(path: &Path, shown: &Path, root: Option<&Path>) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: shown.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse_for(shown, &text, root)?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates config text (`path` is only used in error messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_for(path, text, None)
    }

    /// Like [`Self::parse`]; with a root, `python_path` entries must also exist in it.
    pub fn parse_for(path: &Path, text: &str, root: Option<&Path>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ConfigError::at(path, text, span, e.message().trim().to_owned())
        })?;
        Validator { path, text, root }.validate(raw)
    }

    /// The verifier names of an agent's chain.
    pub fn chain_of(&self, agent: &str) -> &[String] {
        self.agents
            .get(agent)
            .and_then(|a| a.chain.as_deref())
            .unwrap_or(&self.default_chain)
    }
}

/// Why no config could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

// ---- the file as written ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    keep_backups: Option<Spanned<i64>>,
    lock_timeout: Option<Spanned<String>>,
    max_code_bytes: Option<Spanned<i64>>,
    python: Option<Spanned<String>>,
    python_path: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    verifiers: BTreeMap<Spanned<String>, RawVerifier>,
    chains: Option<RawChains>,
    #[serde(default)]
    agents: BTreeMap<Spanned<String>, RawAgent>,
}

/// Every option of every kind; which ones a kind accepts is checked after parsing so the
/// error can say "`command` is not an option of python-syntax verifiers".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerifier {
    kind: Option<Spanned<String>>,
    engine: Option<Spanned<String>>,
    python_version: Option<Spanned<String>>,
    entrypoint: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    warm: Option<Spanned<bool>>,
    pass_env: Option<Spanned<Vec<String>>>,
    command: Option<Spanned<Vec<String>>>,
    sandbox: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChains {
    default: Option<Vec<Spanned<String>>>,
    health: Option<Vec<Spanned<String>>>,
    parallel: Option<bool>,
    deadline: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    file: Option<Spanned<String>>,
    chain: Option<Vec<Spanned<String>>>,
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    root: Option<&'a Path>,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, self.text, span, message)
    }

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        let parsed = humantime::parse_duration(value.get_ref().trim()).map_err(|e| {
            self.err(
                value.span(),
                format!(
                    "invalid duration {:?} for `{key}`: {e} (write e.g. \"30s\", \"500ms\", \"2m\")",
                    value.get_ref()
                ),
            )
        })?;
        if parsed.is_zero() {
            return Err(self.err(value.span(), format!("`{key}` must be longer than 0")));
        }
        Ok(parsed)
    }

    fn positive(&self, value: &Spanned<i64>, key: &str) -> Result<usize, ConfigError> {
        match usize::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.err(
                value.span(),
                format!("`{key}` must be a positive whole number"),
            )),
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut config = Config {
            path: Some(self.path.to_path_buf()),
            ..Config::default()
        };
        if let Some(v) = &raw.keep_backups {
            config.limits.keep_backups = self.positive(v, "keep_backups")?;
        }
        if let Some(v) = &raw.max_code_bytes {
            config.limits.max_code_bytes = self.positive(v, "max_code_bytes")?;
        }
        if let Some(v) = &raw.lock_timeout {
            config.limits.lock_timeout = self.duration(v, "lock_timeout")?;
        }
        if let Some(v) = &raw.python {
            if v.get_ref().trim().is_empty() {
                return Err(self.err(v.span(), "`python` must not be empty"));
            }
            config.python = v.get_ref().clone();
        }
        for entry in raw.python_path.iter().flatten() {
            config.python_path.push(self.import_root(entry)?);
        }

        for (name, verifier) in raw.verifiers {
            let spec = self.verifier(&name, verifier)?;
            crate::verifiers::validate(&spec, &config)
                .map_err(|(span, message)| self.err(span, message))?;
            config.verifiers.insert(name.into_inner(), spec);
        }

        if let Some(chains) = raw.chains {
            if let Some(default) = &chains.default {
                config.default_chain = self.chain(default, &config)?;
            }
            if let Some(health) = &chains.health {
                config.health_chain = self.chain(health, &config)?;
            }
            config.parallel = chains.parallel.unwrap_or(false);
            if let Some(deadline) = &chains.deadline {
                config.deadline = Some(self.duration(deadline, "deadline")?);
            }
        }

        for (id, agent) in raw.agents {
            let agent_id = AgentId::new(id.get_ref())
                .map_err(|e| self.err(id.span(), format!("[agents.{}]: {e}", id.get_ref())))?;
            let chain = agent
                .chain
                .as_ref()
                .map(|c| self.chain(c, &config))
                .transpose()?;
            if let Some(file) = &agent.file {
                if file.get_ref().trim().is_empty() {
                    return Err(self.err(file.span(), "`file` must not be empty"));
                }
            }
            let file = agent.file.map(Spanned::into_inner);
            config.agents.insert(agent_id, AgentConfig { file, chain });
        }
        Ok(config)
    }

    /// One `python_path` entry: a relative directory inside the root (checked against the
    /// root when one is known), returned relative to the root with symlinks resolved.
    fn import_root(&self, entry: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        use std::path::Component;
        let text = entry.get_ref();
        let path = Path::new(text);
        let err =
            |what: &str| self.err(entry.span(), format!("`python_path` entry {text:?} {what}"));
        if text.trim().is_empty() {
            return Err(err("is empty"));
        }
        if path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(err(
                "must be a directory inside the root, written relative to it (no `..`)",
            ));
        }
        let Some(root) = self.root else {
            return Ok(path.to_path_buf());
        };
        let root = root
            .canonicalize()
            .map_err(|e| err(&format!("cannot be checked: {e}")))?;
        let resolved = match root.join(path).canonicalize() {
            Ok(resolved) => resolved,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(err("does not exist in the root"))
            }
            Err(e) => return Err(err(&format!("cannot be read: {e}"))),
        };
        let Ok(inside) = resolved.strip_prefix(&root) else {
            return Err(err("leaves the root (through a symbolic link)"));
        };
        if !resolved.is_dir() {
            return Err(err("is not a directory"));
        }
        Ok(inside.to_path_buf())
    }

    fn verifier(
        &self,
        name: &Spanned<String>,
        raw: RawVerifier,
    ) -> Result<VerifierSpec, ConfigError> {
        let builtin = name.get_ref() == SYNTAX;
        let kind_name = match &raw.kind {
            Some(kind) => kind.get_ref().as_str(),
            // `syntax` is built in; its table may just tune options.
            None if builtin => "python-syntax",
            None => {
                return Err(self.err(
                    name.span(),
                    format!(
                        "verifier {:?} has no `kind` (python-syntax, python-startup or script)",
                        name.get_ref()
                    ),
                ))
            }
        };
        let kind_span = raw.kind.as_ref().map_or(name.span(), Spanned::span);
        if builtin && kind_name != "python-syntax" {
            return Err(self.err(
                kind_span,
                "the built-in verifier `syntax` must be of kind \"python-syntax\"; give yours another name",
            ));
        }
        // Options that the kind does not take are mistakes, not silently ignored.
        let not_for = |key: &str, span: Option<Range<usize>>| match span {
            Some(span) => Err(self.err(
                span,
                format!("`{key}` is not an option of {kind_name} verifiers"),
            )),
            None => Ok(()),
        };
        let kind = match kind_name {
            "python-syntax" => {
                not_for("warm", raw.warm.as_ref().map(Spanned::span))?;
                not_for("command", raw.command.as_ref().map(Spanned::span))?;
                not_for("pass_env", raw.pass_env.as_ref().map(Spanned::span))?;
                not_for("sandbox", raw.sandbox.as_ref().map(Spanned::span))?;
                VerifierKind::PythonSyntax {
                    engine: raw.engine,
                    python_version: raw.python_version,
                    entrypoint: raw.entrypoint,
                }
            }
            "python-startup" => {
                not_for("engine", raw.engine.as_ref().map(Spanned::span))?;
                not_for("python_version", raw.python_version.as_ref().map(Spanned::span))?;
                not_for("command", raw.command.as_ref().map(Spanned::span))?;
                VerifierKind::PythonStartup {
                    entrypoint: raw.entrypoint,
                    warm: raw.warm.map(Spanned::into_inner).unwrap_or(true),
                }
            }
            "script" => {
                not_for("engine", raw.engine.as_ref().map(Spanned::span))?;
                not_for("python_version", raw.python_version.as_ref().map(Spanned::span))?;
                not_for("entrypoint", raw.entrypoint.as_ref().map(Spanned::span))?;
                not_for("warm", raw.warm.as_ref().map(Spanned::span))?;
                let command = raw.command.ok_or_else(|| {
                    self.err(
                        name.span(),
                        format!("script verifier {:?} needs a `command`", name.get_ref()),
                    )
                })?;
                if command.get_ref().is_empty() {
                    return Err(self.err(command.span(), "`command` must not be empty"));
                }
                VerifierKind::Script { command }
            }
            other => {
                return Err(self.err(
                    kind_span,
                    format!(
                        "unknown verifier kind {other:?}; expected \"python-syntax\", \"python-startup\" or \"script\""
                    ),
                ))
            }
        };
        let timeout = raw
            .timeout
            .as_ref()
            .map(|t| self.duration(t, "timeout"))
            .transpose()?;
        let sandbox = match &raw.sandbox {
            None => SandboxMode::Strict,
            Some(value) => match value.get_ref().as_str() {
                "strict" => SandboxMode::Strict,
                "off" => SandboxMode::Off,
                other => {
                    return Err(self.err(
                        value.span(),
                        format!("unknown sandbox {other:?}; expected \"strict\" or \"off\""),
                    ))
                }
            },
        };
        Ok(VerifierSpec {
            name: name.get_ref().clone(),
            kind,
            timeout,
            pass_env: raw.pass_env.map(Spanned::into_inner).unwrap_or_default(),
            sandbox,
        })
    }

    fn chain(
        &self,
        names: &[Spanned<String>],
        config: &Config,
    ) -> Result<Vec<String>, ConfigError> {
        let mut chain = Vec::with_capacity(names.len());
        for name in names {
            if !config.verifiers.contains_key(name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    format!(
                        "unknown verifier {:?} in chain; defined: {}",
                        name.get_ref(),
                        config
                            .verifiers
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            chain.push(name.get_ref().clone());
        }
        Ok(chain)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("bluegreen.toml"), text)
    }

    #[test]
    fn contract_example_parses() {
        let config = parse(
            r#"
keep_backups = 20
lock_timeout = "30s"
max_code_bytes = 8388608
python = "python3"

[verifiers.syntax]
kind = "python-syntax"
engine = "ruff"
python_version = "3.11"

[verifiers.startup]
kind = "python-startup"
entrypoint = "process_event"
timeout = "10s"

[verifiers.tests]
kind = "script"
command = ["python3", "-m", "pytest", "-q", "tests/test_{agent_id}.py"]
timeout = "60s"

[chains]
default = ["syntax", "startup"]
health = []

[agents.trading_agent_alpha]
file = "services/agents/trading_agent_alpha.py"
chain = ["syntax", "startup", "tests"]
"#,
        )
        .unwrap();
        assert_eq!(config.limits.lock_timeout, Duration::from_secs(30));
        assert_eq!(config.default_chain, ["syntax", "startup"]);
        assert_eq!(
            config.chain_of("trading_agent_alpha"),
            ["syntax", "startup", "tests"]
        );
        assert_eq!(config.chain_of("other"), ["syntax", "startup"]);
        assert_eq!(
            config.verifiers["startup"].timeout,
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let config = parse("").unwrap();
        assert_eq!(config.default_chain, ["syntax"]);
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn mistakes_quote_file_line_and_column() {
        let cases = [
            ("colour = 1\n", 1, 1, "unknown field `colour`"),
            ("lock_timeout = \"soon\"\n", 1, 16, "invalid duration"),
            ("[chains]\ndefault = [\"syntax\", \"lint\"]\n", 2, 22, "unknown verifier \"lint\""),
            ("[verifiers.x]\nkind = \"magic\"\n", 2, 8, "unknown verifier kind \"magic\""),
            ("[verifiers.x]\nkind = \"script\"\ncommand = [\"true\"]\nengine = \"ruff\"\n", 4, 10, "`engine` is not an option"),
            ("[verifiers.syntax]\nengine = \"fast\"\n", 2, 10, "unknown syntax engine"),
            ("[agents.\"a/b\"]\nfile = \"x.py\"\n", 1, 9, "invalid agent id"),
            ("keep_backups = 0\n", 1, 16, "positive"),
            ("[verifiers.s]\nkind = \"script\"\ncommand = [\"true\"]\ntimeout = \"1 fortnight\"\n", 4, 11, "invalid duration"),
            ("python_path = [\"src\", \"../lib\"]\n", 1, 23, "`python_path` entry \"../lib\" must be a directory inside the root"),
            ("python_path = [\"/usr/lib\"]\n", 1, 16, "must be a directory inside the root"),
            ("python_path = \"src\"\n", 1, 15, "invalid type"),
        ];
        for (text, line, column, needle) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!((err.line, err.column), (line, column), "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
            assert!(err
                .to_string()
                .starts_with(&format!("bluegreen.toml:{line}:{column}: ")));
        }
    }
}
