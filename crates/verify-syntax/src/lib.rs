//! Python syntax verifiers for bluegreen: does the staged file compile under CPython?
//!
//! Verifier kind `python-syntax` (the built-in verifier `syntax`) runs one of two engines on
//! the staged bytes, without starting Python:
//!
//! - **`ruff`** (default): decodes the bytes the way CPython does (PEP 263 coding cookie in
//!   line 1 or 2, UTF-8 BOM; unknown or conflicting encodings and undecodable bytes are
//!   errors), parses with ruff's parser for the configured target `python_version` (default
//!   3.11: `type X = …` is an error there, `match` is fine), and reports the compile-time
//!   errors CPython raises after parsing (`return`/`yield`/`await` outside their scope, late
//!   `from __future__`, unknown future features, duplicate parameters, `nonlocal` at module
//!   level, `break` outside a loop, default `except:` not last, …). Measured against CPython
//!   3.11's `compile()` by `cargo xtask fidelity`.
//! - **`tree-sitter`**: the error-tolerant engine. ERROR and MISSING nodes become
//!   diagnostics; it knows the grammar only, so it accepts most files CPython rejects for
//!   non-grammar reasons: on the Python 3.11 stdlib it rejects 5 of the 17 files CPython
//!   rejects (3 of them through the decoding shared with `ruff`), and wrongly rejects
//!   `test/test_compile.py`; on the mutants corpus it agrees with CPython on 40% of the
//!   files. It is *not* faster here: tree-sitter-python parses the stdlib at about 7 MB/s,
//!   an eighth of the `ruff` engine's throughput (`cargo xtask bench`). Its value is the
//!   tree it keeps building through errors, which serves structural checks such as the
//!   entrypoint check; do not use it as a compile gate.
//!
//! Either engine can also check an **entrypoint**: a module-level `def process_event(event)`
//! (any configured name and arity; also found inside module-level `if`/`try`/`with`), read
//! from the syntax tree without running Python. `async def` does not count.
//!
//! Diagnostics carry 1-based line and column (columns count characters) and CPython-like
//! messages for the compile-time errors; grammar errors keep the parser's own wording. One
//! diagnostic per line, at most 50 per file.
//!
//! # Known disagreements with CPython 3.11 (engine `ruff`)
//!
//! `cargo xtask fidelity` measures 100% agreement on the stdlib and on the mutants corpus;
//! these classes are known to differ and are not in either corpus:
//! - Invalid UTF-8 in a comment of a file without a coding cookie: CPython 3.11's
//!   `compile(bytes)` and `import` never decode comments and accept it, `python3 file.py`
//!   rejects it ("Non-UTF-8 code starting with …"). We reject it, as PEP 3120 says.
//! - Coding cookies naming a Python codec that `encoding_rs` cannot decode (e.g. `cp437`,
//!   `mac-roman`): rejected ("a Python codec this verifier cannot decode"); the text-to-text
//!   codecs (`unicode_escape`, `raw_unicode_escape`, `idna`, `punycode`) count as unknown.
//!   Other codecs decode with the WHATWG tables of `encoding_rs` (the bytes Python's Windows
//!   code pages leave undefined are rejected as in Python); multi-byte Asian codecs may
//!   differ from Python's on rare byte sequences.
//! - The compiler's recursion limit: CPython 3.11 rejects trees deeper than about 2991
//!   nested statements/expressions ("maximum recursion depth exceeded during
//!   compilation"), but the exact limit shrinks by 3 for every Python frame of the caller.
//!   We reject beyond 2991, measured under the fidelity harness; files within a few levels
//!   of the limit may get a different verdict from a deeper caller. Long `elif` chains
//!   (nested in CPython's tree, flat in ruff's) do not count towards our depth.
//!   Deeper than 5982 levels, both engines refuse the input before parsing it (the same
//!   message; `src/nesting.rs` explains the pre-scan), so a deep tree never costs memory.
//! - `from __future__ import barry_as_FLUFL` (the `<>` easter egg) is not modelled.
//! - Python versions other than 3.11: version-gated grammar comes from ruff and is
//!   reliable; our extra checks (tab consistency, nesting limits, `except*` exits, default
//!   `except:` last) follow 3.11's compiler and were measured against 3.11 only.
//!
//! # Example
//!
//! ```
//! use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};
//!
//! let ok = check_source(b"def process_event(event):\n    return event\n", &SyntaxOptions::default());
//! assert!(ok.is_empty());
//!
//! let diagnostics = check_source(b"def f():\n    pass\nreturn 1\n", &SyntaxOptions::default());
//! assert_eq!(diagnostics[0].line, 3);
//! assert_eq!(diagnostics[0].message, "'return' outside function");
//!
//! // Python 3.12 syntax is an error for the default target 3.11 ...
//! assert!(!check_source(b"type X = int\n", &SyntaxOptions::default()).is_empty());
//! // ... and the tree-sitter engine, grammar-only, accepts the late `return`.
//! let fast = SyntaxOptions { engine: Engine::TreeSitter, ..SyntaxOptions::default() };
//! assert!(check_source(b"return 1\n", &fast).is_empty());
//! ```

mod decode;
mod entrypoint;
mod nesting;
mod python_codecs;
mod ruff_engine;
mod tree_sitter_engine;

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use bluegreen_core::{Diagnostic, Verdict, Verifier, VerifyRequest};

pub use entrypoint::EntrypointSpec;

/// Diagnostics reported per file at most.
const MAX_DIAGNOSTICS: usize = 50;

/// A configuration value this crate does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown syntax engine {0:?}; expected \"ruff\" or \"tree-sitter\"")]
    UnknownEngine(String),
    #[error("invalid python_version {0:?}; expected MAJOR.MINOR such as \"3.11\"")]
    InvalidVersion(String),
    #[error("unsupported python_version {0}; supported: 3.8 to 3.14")]
    UnsupportedVersion(PythonVersion),
}

/// Which parser checks the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// ruff's parser plus CPython's compile-time checks: the compile gate.
    #[default]
    Ruff,
    /// tree-sitter-python: fast, error-tolerant, grammar only.
    TreeSitter,
}

impl FromStr for Engine {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ruff" => Ok(Self::Ruff),
            "tree-sitter" => Ok(Self::TreeSitter),
            other => Err(ConfigError::UnknownEngine(other.to_owned())),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ruff => "ruff",
            Self::TreeSitter => "tree-sitter",
        })
    }
}

/// The Python version whose syntax the file must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PythonVersion {
    pub major: u8,
    pub minor: u8,
}

impl PythonVersion {
    pub const PY311: Self = Self {
        major: 3,
        minor: 11,
    };
    const OLDEST: Self = Self { major: 3, minor: 8 };
    const NEWEST: Self = Self {
        major: 3,
        minor: 14,
    };

    fn to_ruff(self) -> ruff_python_ast::PythonVersion {
        ruff_python_ast::PythonVersion {
            major: self.major,
            minor: self.minor,
        }
    }
}

impl Default for PythonVersion {
    fn default() -> Self {
        Self::PY311
    }
}

impl FromStr for PythonVersion {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ConfigError::InvalidVersion(s.to_owned());
        let (major, minor) = s.trim().split_once('.').ok_or_else(invalid)?;
        let version = Self {
            major: major.parse().map_err(|_| invalid())?,
            minor: minor.parse().map_err(|_| invalid())?,
        };
        if version < Self::OLDEST || version > Self::NEWEST {
            return Err(ConfigError::UnsupportedVersion(version));
        }
        Ok(version)
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Options of a `python-syntax` verifier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyntaxOptions {
    pub engine: Engine,
    pub python_version: PythonVersion,
    /// When set, the module must define this function at module level.
    pub entrypoint: Option<EntrypointSpec>,
}

/// A finding at a byte offset of the decoded source, before it is placed on a line.
pub(crate) struct RawDiagnostic {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

impl RawDiagnostic {
    pub(crate) fn at(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

/// Checks Python source bytes. An empty result means the file passes.
///
/// Synchronous and CPU-bound (a 10 KB file takes well under a millisecond with either engine).
pub fn check_source(source: &[u8], options: &SyntaxOptions) -> Vec<Diagnostic> {
    let decoded = match decode::decode_source(source) {
        Ok(decoded) => decoded,
        Err(diagnostic) => return vec![diagnostic],
    };
    let text: &str = &decoded.text;
    // Before any tree is built: a deep tree costs far more memory than its bytes.
    if let Some(refused) = nesting::check(text) {
        return place(text, vec![refused]);
    }
    let raw = match options.engine {
        Engine::Ruff => ruff_engine::check(
            text,
            options.python_version.to_ruff(),
            options.entrypoint.as_ref(),
        ),
        Engine::TreeSitter => tree_sitter_engine::check(text, options.entrypoint.as_ref()),
    };
    place(text, raw)
}

/// Turns byte offsets into 1-based line and character column; one per line, capped.
fn place(text: &str, mut raw: Vec<RawDiagnostic>) -> Vec<Diagnostic> {
    if raw.is_empty() {
        return Vec::new();
    }
    raw.sort_by_key(|d| d.offset);
    let line_starts = line_starts(text);
    let mut out: Vec<Diagnostic> = Vec::new();
    for d in raw {
        let diagnostic = if d.offset == 0 && d.message.starts_with("entrypoint ") {
            Diagnostic::whole_file(d.message)
        } else {
            let offset = floor_char_boundary(text, d.offset.min(text.len()));
            let line_index = line_starts.partition_point(|&start| start <= offset) - 1;
            let line_start = line_starts[line_index];
            let column = text[line_start..offset].chars().count() + 1;
            Diagnostic::new(to_u32(line_index + 1), to_u32(column), d.message)
        };
        // One finding per line: later ones on the same line are mostly the parser recovering.
        if out
            .last()
            .is_none_or(|last| last.line != diagnostic.line || diagnostic.line == 0)
        {
            out.push(diagnostic);
        }
        if out.len() >= MAX_DIAGNOSTICS {
            break;
        }
    }
    out
}

/// Byte offsets where lines start; `\n`, `\r\n` and a lone `\r` end a line, as in CPython.
fn line_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = vec![0];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => starts.push(i + 1),
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => starts.push(i + 1),
            _ => {}
        }
        i += 1;
    }
    starts
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The `python-syntax` verifier: reads the staged file and runs [`check_source`].
#[derive(Debug, Clone)]
pub struct SyntaxVerifier {
    name: String,
    options: SyntaxOptions,
    /// Verdicts by content hash, shared by clones (all with the same options).
    memo: Arc<VerdictMemo>,
}

/// The last few verdicts, keyed by the SHA-256 of the checked bytes. A verdict is a pure
/// function of the bytes and the options, so one computed ahead of time from a deployment's
/// bytes ([`Verifier::prepare`]) is the verdict on a staged file holding those bytes. A slot
/// being filled blocks whoever else asks for it until it is: nothing is parsed twice.
#[derive(Debug, Default)]
struct VerdictMemo {
    slots: Mutex<VecDeque<([u8; 32], MemoSlot)>>,
}

/// A verdict, or the promise of one being computed.
type MemoSlot = Arc<OnceLock<Verdict>>;

impl VerdictMemo {
    /// Enough for the deployments one process has in flight at once.
    const CAPACITY: usize = 32;

    fn slot(&self, key: [u8; 32]) -> MemoSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, slot)) = slots.iter().find(|(k, _)| *k == key) {
            return slot.clone();
        }
        if slots.len() >= Self::CAPACITY {
            slots.pop_front();
        }
        let slot = Arc::new(OnceLock::new());
        slots.push_back((key, slot.clone()));
        slot
    }
}

/// The largest deployment `prepare` parses ahead (8 ms of parsing at most): beyond it the
/// speculative work would compete with the deployment for longer than the backup takes.
const PREPARE_MAX_BYTES: usize = 256 * 1024;

fn content_key(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl SyntaxVerifier {
    pub fn new(name: impl Into<String>, options: SyntaxOptions) -> Self {
        Self {
            name: name.into(),
            options,
            memo: Arc::default(),
        }
    }

    pub fn options(&self) -> &SyntaxOptions {
        &self.options
    }

    /// Reads and checks one file; the blocking half of [`Verifier::verify`].
    pub fn verify_path(&self, path: &Path) -> Verdict {
        let source = match std::fs::read(path) {
            Ok(source) => source,
            Err(error) => {
                return Verdict::fail_msg(format!("cannot read {}: {error}", path.display()));
            }
        };
        self.memo
            .slot(content_key(&source))
            .get_or_init(|| self.check(&source, path))
            .clone()
    }

    /// The memoized verdict for `path`'s bytes, if the file is small and one is ready.
    fn prepared_verdict(&self, path: &Path) -> Option<Verdict> {
        let small = std::fs::metadata(path).ok()?.len() <= PREPARE_MAX_BYTES as u64;
        if !small {
            return None;
        }
        let source = std::fs::read(path).ok()?;
        self.memo.slot(content_key(&source)).get().cloned()
    }

    fn check(&self, source: &[u8], path: &Path) -> Verdict {
        let diagnostics = check_source(source, &self.options);
        tracing::debug!(
            verifier = %self.name,
            engine = %self.options.engine,
            path = %path.display(),
            diagnostics = diagnostics.len(),
            "syntax check finished"
        );
        if diagnostics.is_empty() {
            Verdict::pass()
        } else {
            Verdict::fail(diagnostics)
        }
    }
}

#[async_trait::async_trait]
impl Verifier for SyntaxVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        // A small staged file whose verdict `prepare` already has: reading and hashing it
        // takes microseconds, less than a hop to the blocking pool and back.
        if let Some(verdict) = self.prepared_verdict(&req.staged) {
            return verdict;
        }
        // Parsing takes milliseconds: keep it off the async worker threads.
        let this = self.clone();
        let path = req.staged.clone();
        match tokio::task::spawn_blocking(move || this.verify_path(&path)).await {
            Ok(verdict) => verdict,
            Err(error) => Verdict::fail_msg(format!("syntax check did not complete: {error}")),
        }
    }

    fn prepare(&self, code: &Arc<[u8]>) {
        // Parse while the deployment waits for its backup to be durable; `verify` hashes the
        // staged file and finds the verdict (or waits for it) in the memo.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if code.len() > PREPARE_MAX_BYTES {
            return; // parsed in `verify`, where its time is the verifier's
        }
        let this = self.clone();
        let code = code.clone();
        runtime.spawn_blocking(move || {
            let slot = this.memo.slot(content_key(&code));
            slot.get_or_init(|| this.check(&code, Path::new("<deployment bytes>")));
        });
    }
}
