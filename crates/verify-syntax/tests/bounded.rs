//! Deeply nested input is refused before a tree is built, with memory within a small
//! multiple of the input (CONTRACT.md, "Input rules": verification is bounded).
//!
//! Each check runs in a fresh child process (this test binary, re-executed) under an address
//! space limit of 2 GiB, so an unbounded parse fails cleanly instead of taking the machine
//! down; the child reports the growth of its peak RSS (`VmHWM`, reset through
//! `/proc/self/clear_refs` just before the check) and the diagnostics.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};

const INPUT_BYTES: usize = 8 * 1024 * 1024;
const CHILD_ENV: &str = "BLUEGREEN_BOUNDED_CHILD";
const ADDRESS_SPACE_LIMIT: u64 = 2 << 30;

/// `prefix` + `unit` repeated + `suffix` repeated as often, 8 MiB in all.
fn nested(prefix: &str, unit: &str, middle: &str, closer: &str) -> Vec<u8> {
    let n = (INPUT_BYTES - prefix.len() - middle.len() - 1) / (unit.len() + closer.len());
    let mut s = String::with_capacity(INPUT_BYTES);
    s.push_str(prefix);
    s.push_str(&unit.repeat(n));
    s.push_str(middle);
    s.push_str(&closer.repeat(n));
    s.push('\n');
    s.into_bytes()
}

/// The patterns of issue 14, finding 7, and their relatives; (name, bytes, line refused at).
fn patterns() -> Vec<(&'static str, Vec<u8>, u32)> {
    let late = {
        let mut s = "x = 1\n".repeat(INPUT_BYTES / 2 / 6);
        let lines = u32::try_from(s.len() / 6).unwrap() + 1;
        let rest = INPUT_BYTES - s.len() - 6;
        s.push_str("y = ");
        s.push_str(&"-".repeat(rest));
        s.push_str("1\n");
        (s.into_bytes(), lines)
    };
    vec![
        ("unary minus", nested("x = ", "-", "1", ""), 1),
        ("unary invert", nested("x = ", "~", "1", ""), 1),
        ("not", nested("x = ", "not ", "1", ""), 1),
        ("parentheses", nested("x = ", "(", "1", ")"), 1),
        ("lists", nested("x = ", "[", "1", "]"), 1),
        ("dicts", nested("x = ", "{1: ", "1", "}"), 1),
        ("attribute chain", nested("x = a", ".b", "", ""), 1),
        ("call chain", nested("x = f", "()", "", ""), 1),
        ("subscript chain", nested("x = a", "[0]", "", ""), 1),
        ("plus chain", nested("x = 1", "+1", "", ""), 1),
        ("power chain", nested("x = 1", "**1", "", ""), 1),
        (
            "conditional chain",
            nested("x = 1", " if 1 else 1", "", ""),
            1,
        ),
        ("nested lambdas", nested("x = ", "lambda: ", "1", ""), 1),
        (
            "lambda defaults",
            nested("x = ", "lambda a=", "1", ": 1"),
            1,
        ),
        (
            "await chain",
            nested("async def f():\n    x = ", "await ", "1", ""),
            2,
        ),
        ("nested f-strings", nested("x = ", "f'{", "1", "}'"), 1),
        ("walrus chain", nested("x = (", "y := ", "1", ""), 1),
        ("after 4 MiB of flat code", late.0, late.1),
    ]
}

fn engines() -> [(Engine, &'static str); 2] {
    [(Engine::Ruff, "ruff"), (Engine::TreeSitter, "tree-sitter")]
}

#[test]
fn deeply_nested_input_is_refused_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut report = Vec::new();
    for (name, source, line) in patterns() {
        assert!(source.len() <= INPUT_BYTES && source.len() > INPUT_BYTES - 64);
        let path = dir.path().join("input.py");
        std::fs::write(&path, &source).unwrap();
        for (_, engine) in engines() {
            let mut command = Command::new(&exe);
            command
                .args([
                    "--exact",
                    "bounded_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, format!("{engine}:{}", path.display()));
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: ADDRESS_SPACE_LIMIT,
                        rlim_max: ADDRESS_SPACE_LIMIT,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let output = command.output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let result = stdout
                .lines()
                .find_map(|l| l.split_once("BOUNDED ").map(|(_, json)| json))
                .unwrap_or_else(|| {
                    panic!(
                        "{name} ({engine}): the check did not complete ({}):\n{}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr)
                            .lines()
                            .take(5)
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                });
            let result: serde_json::Value = serde_json::from_str(result).unwrap();
            let growth = result["hwm_growth_bytes"].as_u64().unwrap();
            let diagnostics = result["diagnostics"].as_array().unwrap();
            report.push(format!(
                "{name:>26} {engine:>11}: peak RSS +{:.1} MiB",
                growth as f64 / f64::from(1 << 20)
            ));
            assert_eq!(diagnostics.len(), 1, "{name} ({engine}): {diagnostics:?}");
            let message = diagnostics[0]["message"].as_str().unwrap();
            assert!(
                [
                    "too complex: maximum recursion depth exceeded during compilation",
                    "too many nested parentheses",
                ]
                .contains(&message),
                "{name} ({engine}): {message}"
            );
            assert_eq!(diagnostics[0]["line"], line, "{name} ({engine})");
            let bound = 10 * source.len() as u64 + (64 << 20);
            assert!(
                growth <= bound,
                "{name} ({engine}): peak RSS grew by {growth} bytes for {} bytes of input",
                source.len()
            );
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// The child side of the test above: checks one file and reports its peak RSS growth.
#[test]
fn bounded_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // run directly: nothing to do
    };
    let (engine, path) = spec.split_once(':').unwrap();
    let engine = engines().into_iter().find(|(_, n)| *n == engine).unwrap().0;
    let source = std::fs::read(path).unwrap();
    let options = SyntaxOptions {
        engine,
        ..SyntaxOptions::default()
    };
    // Reset the peak to the current RSS, so the peak after the check is its own.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let diagnostics = check_source(&source, &options);
    let peak = status_kib("VmHWM:");
    let diagnostics: Vec<_> = diagnostics
        .iter()
        .map(|d| serde_json::json!({"line": d.line, "column": d.column, "message": d.message}))
        .collect();
    let line = serde_json::json!({
        "hwm_growth_bytes": peak.saturating_sub(before) * 1024,
        "diagnostics": diagnostics,
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "BOUNDED {line}").unwrap();
    stdout.flush().unwrap();
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Long but flat (or shallow) constructs that CPython 3.11 compiles: the pre-scan must not
/// count them as nesting (most are 7000 elements, more than the refusal depth).
#[test]
fn long_flat_constructs_cpython_accepts_are_not_refused() {
    let n = 7000;
    let join = |item: &str, sep: &str| vec![item; n].join(sep);
    let sources = [
        format!("x = {}\n", join("not a", " and ")),
        format!("x = a{}\n", " < a".repeat(n)),
        format!("x = a{}\n", " is not a".repeat(n)),
        format!("x = a{}\n", " not in a".repeat(n)),
        format!("x = {}\n", "'a' ".repeat(n)),
        format!("x = {}\n", "1, ".repeat(n)),
        format!("match x:\n    case {}:\n        pass\n", join("1", " | ")),
        format!("import {}\n", join("a", ".")),
        format!("from {} import a\n", ".".repeat(n)),
        format!("f({})\n", join("-a.b[1](2)", ", ")),
        format!(
            "x = [{}]\n",
            join("lambda a=1, *b, **c: a if b else c", ", ")
        ),
        format!("x = {{{}}}\n", join("'k': f'{a!r:>{w}}'", ", ")),
        format!("def f():\n{}", "    x = yield from a\n".repeat(n)),
        format!("x = {}\n", vec!["a * b"; 2000].join(" + ")),
        format!("x = {}1\n", "-".repeat(2900)),
    ];
    for source in &sources {
        for (engine, name) in engines() {
            let options = SyntaxOptions {
                engine,
                ..SyntaxOptions::default()
            };
            let diagnostics = check_source(source.as_bytes(), &options);
            assert_eq!(
                diagnostics,
                vec![],
                "{name}: {}…",
                source.chars().take(60).collect::<String>()
            );
        }
    }
}
