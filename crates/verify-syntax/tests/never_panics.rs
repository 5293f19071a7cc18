//! `check_source` must return (never panic, never hang) on any bytes, with either engine, and
//! every diagnostic must point into the file. Failing inputs go to
//! `fixtures/python/fuzz-regressions/` (replayed by `tests/fixtures.rs`).

use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};
use proptest::prelude::*;

/// Python-looking fragments: random bytes alone rarely get past the tokenizer.
const FRAGMENTS: &[&str] = &[
    "def ",
    "async ",
    "await ",
    "class ",
    "lambda",
    "return",
    "yield",
    "from __future__ import annotations\n",
    "nonlocal x\n",
    "global x\n",
    "for x in y:",
    "while 1:",
    "try:",
    "except*",
    "except:",
    "finally:",
    "match x:",
    "case _:",
    "with a as b:",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ":=",
    ",",
    "*",
    "**",
    "=",
    "\n",
    "    ",
    "\t",
    "\r",
    "\x0c",
    "\\\n",
    "#",
    "# coding: latin-1\n",
    "\u{feff}",
    "'",
    "\"",
    "'''",
    "f'",
    "f\"{",
    "}\"",
    "rb'",
    "x",
    "y",
    "__debug__",
    "__class__",
    "0",
    "0755",
    "1_000",
    "1e",
    ".",
    "...",
    "@",
    "->",
    "if ",
    "else",
    "elif ",
    "break",
    "continue",
    "pass",
    "del ",
    "import ",
    "€",
    "\u{a0}",
    "é",
    "\u{200b}",
    "\\N{",
    "type X = ",
    "[T]",
    "print ",
];

fn pythonish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(FRAGMENTS).prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

fn assert_diagnostics_point_into(source: &[u8], engine: Engine) {
    let options = SyntaxOptions {
        engine,
        ..SyntaxOptions::default()
    };
    let diagnostics = check_source(source, &options);
    // Lines are counted on the decoded text; any line ending counts, and a BOM or cookie
    // cannot add lines, so the raw count of line-ending bytes bounds them.
    let max_line = source.iter().filter(|&&b| b == b'\n' || b == b'\r').count() + 1;
    for d in &diagnostics {
        assert!(d.line as usize <= max_line, "{d:?} beyond line {max_line}");
        assert!(d.line == 0 || d.column >= 1, "{d:?}");
    }
}

proptest! {
    // 2000 cases per property by default; PROPTEST_CASES=100000 for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn ruff_engine_never_panics(source in pythonish()) {
        assert_diagnostics_point_into(&source, Engine::Ruff);
    }

    #[test]
    fn tree_sitter_engine_never_panics(source in pythonish()) {
        assert_diagnostics_point_into(&source, Engine::TreeSitter);
    }

    #[test]
    fn arbitrary_bytes_never_panic(source in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_diagnostics_point_into(&source, Engine::Ruff);
        assert_diagnostics_point_into(&source, Engine::TreeSitter);
    }
}

#[test]
fn pathological_nesting_returns_a_diagnostic() {
    // Deep enough to overflow a naive recursive parser or tree walk.
    let deep_parens = [b"x = ".as_slice(), &b"(".repeat(50_000), b"\n"].concat();
    let deep_lists = [
        b"x = ".as_slice(),
        &b"[".repeat(50_000),
        &b"]".repeat(50_000),
        b"\n",
    ]
    .concat();
    for source in [deep_parens, deep_lists] {
        let ruff = check_source(&source, &SyntaxOptions::default());
        assert_eq!(ruff[0].message, "too many nested parentheses");
        let ts = check_source(
            &source,
            &SyntaxOptions {
                engine: Engine::TreeSitter,
                ..SyntaxOptions::default()
            },
        );
        assert!(ts.len() <= 50, "{} diagnostics", ts.len());
    }
}

#[test]
fn trees_deeper_than_cpython_compiles_are_rejected_without_overflow() {
    // No brackets: a left-deep tree of 100k levels, which a recursive walk or drop overflows.
    for source in [
        [b"x = ".as_slice(), &b"1+".repeat(100_000), b"1\n"].concat(),
        [b"x = a".as_slice(), &b".a".repeat(100_000), b"\n"].concat(),
    ] {
        let diagnostics = check_source(&source, &SyntaxOptions::default());
        assert_eq!(
            diagnostics
                .iter()
                .map(|d| d.message.as_str())
                .collect::<Vec<_>>(),
            ["too complex: maximum recursion depth exceeded during compilation"]
        );
    }
    // Just inside the limit, where ruff's own checks recurse through the whole expression
    // (comprehension elements, async function bodies): accepted, as CPython does, on the
    // 2 MB stack of a test thread.
    for source in [
        [b"x = ".as_slice(), &b"-".repeat(2900), b"1\n"].concat(),
        [b"x = [".as_slice(), &b"-".repeat(2900), b"y for y in z]\n"].concat(),
        [
            b"async def f():\n    x = ".as_slice(),
            &b"1+".repeat(2900),
            b"1\n    yield x\n",
        ]
        .concat(),
    ] {
        let diagnostics = check_source(&source, &SyntaxOptions::default());
        assert_eq!(diagnostics, vec![]);
    }
}
