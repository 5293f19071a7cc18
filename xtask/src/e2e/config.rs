//! The configurations of the matrix: verifier chains, and the `bluegreen.toml` for each.

use std::path::Path;

/// The chain a configuration runs (`[chains] default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    None,
    SyntaxRuff,
    SyntaxTreeSitter,
    StartupCold,
    StartupWarm,
    Script,
    /// syntax (ruff) + startup (warm) + script.
    Full,
}

impl ChainKind {
    pub const ALL: [ChainKind; 7] = [
        ChainKind::None,
        ChainKind::SyntaxRuff,
        ChainKind::SyntaxTreeSitter,
        ChainKind::StartupCold,
        ChainKind::StartupWarm,
        ChainKind::Script,
        ChainKind::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChainKind::None => "none",
            ChainKind::SyntaxRuff => "syntax-ruff",
            ChainKind::SyntaxTreeSitter => "syntax-tree-sitter",
            ChainKind::StartupCold => "startup-cold",
            ChainKind::StartupWarm => "startup-warm",
            ChainKind::Script => "script",
            ChainKind::Full => "full",
        }
    }

    /// Verifier names of the default chain, in order.
    pub fn verifiers(self) -> &'static [&'static str] {
        match self {
            ChainKind::None => &[],
            ChainKind::SyntaxRuff | ChainKind::SyntaxTreeSitter => &["syntax"],
            ChainKind::StartupCold | ChainKind::StartupWarm => &["startup"],
            ChainKind::Script => &["script"],
            ChainKind::Full => &["syntax", "startup", "script"],
        }
    }

    pub fn engine(self) -> &'static str {
        match self {
            ChainKind::SyntaxTreeSitter => "tree-sitter",
            _ => "ruff",
        }
    }

    pub fn warm(self) -> bool {
        self != ChainKind::StartupCold
    }

    /// Can this chain reject `kind` at all? (Otherwise the row is "n/a".)
    pub fn detects(self, kind: Reject) -> bool {
        use ChainKind as C;
        use Reject as R;
        match kind {
            R::Syntax | R::Encoding => self != C::None,
            // tree-sitter knows the grammar only.
            R::Semantic => !matches!(self, C::None | C::SyntaxTreeSitter),
            // Only importing the module can see these.
            R::ImportError | R::ExitAtImport | R::Timeout | R::MissingEntrypoint => {
                matches!(self, C::StartupCold | C::StartupWarm | C::Full)
            }
            R::FailingScript => matches!(self, C::Script | C::Full),
        }
    }
}

/// The rejection kinds of scenario 2, one fixture each (`fixtures/e2e/rejects/<name>.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Syntax,
    Semantic,
    Encoding,
    ImportError,
    ExitAtImport,
    Timeout,
    MissingEntrypoint,
    FailingScript,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::Syntax,
        Reject::Semantic,
        Reject::Encoding,
        Reject::ImportError,
        Reject::ExitAtImport,
        Reject::Timeout,
        Reject::MissingEntrypoint,
        Reject::FailingScript,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reject::Syntax => "syntax",
            Reject::Semantic => "semantic",
            Reject::Encoding => "encoding",
            Reject::ImportError => "import_error",
            Reject::ExitAtImport => "exit_at_import",
            Reject::Timeout => "timeout",
            Reject::MissingEntrypoint => "missing_entrypoint",
            Reject::FailingScript => "failing_script",
        }
    }

    pub fn fixture(self, fixtures: &Path) -> Result<Vec<u8>, String> {
        let path = fixtures.join("rejects").join(format!("{}.py", self.name()));
        std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    }
}

/// Knobs some scenarios turn.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keep_backups: usize,
    pub max_code_bytes: usize,
    pub lock_timeout: &'static str,
    /// Run `health_check.py` as the health chain.
    pub health: bool,
    /// The startup verifier's limit.
    pub startup_timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_backups: 20,
            max_code_bytes: 8 * 1024 * 1024,
            lock_timeout: "30s",
            health: false,
            startup_timeout_secs: STARTUP_TIMEOUT_SECS,
        }
    }
}

/// The startup verifier's limit: long enough for a cold interpreter on a busy 2-core
/// machine, short enough that the timeout rows stay cheap.
pub const STARTUP_TIMEOUT_SECS: u64 = 3;
pub const SCRIPT_TIMEOUT_SECS: u64 = 20;

/// `bluegreen.toml` for a chain. Every verifier is defined; the chain picks.
pub fn toml(chain: ChainKind, settings: &Settings, fixtures: &Path) -> String {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let script = fixtures.join("script_check.py").display().to_string();
    let health = fixtures.join("health_check.py").display().to_string();
    format!(
        r#"# written by cargo xtask e2e (configuration {name})
keep_backups = {keep}
lock_timeout = "{lock}"
max_code_bytes = {max}
python = "python3"

[verifiers.syntax]
kind = "python-syntax"
engine = "{engine}"
python_version = "3.11"

[verifiers.startup]
kind = "python-startup"
entrypoint = "process_event"
timeout = "{startup_timeout}s"
warm = {warm}

[verifiers.script]
kind = "script"
command = ["python3", {script:?}, "{{staged}}"]
timeout = "{script_timeout}s"

[verifiers.health]
kind = "script"
command = ["python3", {health:?}, "{{target}}"]
timeout = "{script_timeout}s"

[chains]
default = [{default}]
health = [{health_chain}]
"#,
        name = chain.name(),
        keep = settings.keep_backups,
        lock = settings.lock_timeout,
        max = settings.max_code_bytes,
        engine = chain.engine(),
        startup_timeout = settings.startup_timeout_secs,
        warm = chain.warm(),
        script_timeout = SCRIPT_TIMEOUT_SECS,
        default = list(chain.verifiers()),
        health_chain = if settings.health {
            list(&["health"])
        } else {
            String::new()
        },
    )
}

/// A good agent, distinct per `tag` (so every version has its own sha256).
pub fn good_code(tag: &str) -> Vec<u8> {
    format!(
        "\"\"\"e2e agent, version {tag}.\"\"\"\nVERSION = {tag:?}\n\n\ndef process_event(event):\n    return {{\"version\": VERSION, \"event\": event}}\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_table_matches_what_each_chain_can_see() {
        for kind in Reject::ALL {
            assert!(ChainKind::Full.detects(kind), "full misses {kind:?}");
            assert!(!ChainKind::None.detects(kind), "none detects {kind:?}");
        }
        assert!(!ChainKind::SyntaxTreeSitter.detects(Reject::Semantic));
        assert!(ChainKind::SyntaxRuff.detects(Reject::Semantic));
        assert!(!ChainKind::Script.detects(Reject::ImportError));
    }

    #[test]
    fn config_selects_the_chain_and_health() {
        let settings = Settings {
            health: true,
            keep_backups: 3,
            ..Settings::default()
        };
        let text = toml(ChainKind::Full, &settings, Path::new("/fx"));
        assert!(text.contains("default = [\"syntax\", \"startup\", \"script\"]"));
        assert!(text.contains("health = [\"health\"]"));
        assert!(text.contains("keep_backups = 3"));
        assert!(text.contains("command = [\"python3\", \"/fx/script_check.py\", \"{staged}\"]"));
        let none = toml(ChainKind::None, &Settings::default(), Path::new("/fx"));
        assert!(none.contains("default = []") && none.contains("health = []"));
    }
}
