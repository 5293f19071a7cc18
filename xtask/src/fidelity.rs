//! `cargo xtask fidelity [--quick] [--mutants N] [--seed S] [--bench]`: how often the syntax verifier
//! agrees with CPython 3.11's own `compile(source_bytes, path, "exec")`.
//!
//! Corpus 1 is every `.py` file of the installed stdlib (site-packages excluded); corpus 2 is
//! mutants of stdlib files written by `xtask/fidelity/mutate.py` into `target/fidelity/`.
//! Ground truth comes from `xtask/fidelity/cpython_verdicts.py`, one interpreter per corpus.
//! Prints agreement, false accepts (CPython rejects, we accept) and false rejects per corpus
//! and engine, the disagreements, and writes everything to `target/fidelity/report.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};
use serde_json::json;

const DEFAULT_MUTANTS: usize = 5200;
const QUICK_MUTANTS: usize = 300;
const DEFAULT_SEED: u64 = 20_261_126;

pub fn main(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut mutants = None;
    let mut seed = DEFAULT_SEED;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--mutants" => mutants = Some(parse_next(&mut iter, "--mutants")?),
            "--seed" => seed = parse_next(&mut iter, "--seed")?,
            // The syntax section of `cargo xtask bench`, alone.
            "--bench" => {
                let report = crate::bench_syntax::run(args.iter().any(|a| a == "--quick"))?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                return Ok(());
            }
            other => {
                return Err(format!(
                    "unknown option {other:?}; expected --quick, --mutants N, --seed S, --bench"
                ))
            }
        }
    }
    let mutants = mutants.unwrap_or(if quick {
        QUICK_MUTANTS
    } else {
        DEFAULT_MUTANTS
    });
    let out = output_dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    let mut stdlib = stdlib_files()?;
    if quick {
        stdlib = quick_sample(stdlib);
    }
    let stdlib_list = out.join("stdlib.txt");
    write_list(&stdlib_list, &stdlib)?;
    let mutant_files = generate_mutants(&stdlib_files()?, &out, mutants, seed)?;

    let mut report = Vec::new();
    let mut failures_of_target = Vec::new();
    for (corpus, files) in [("stdlib", &stdlib), ("mutants", &mutant_files)] {
        let truth = cpython_verdicts(files, &out.join(format!("{corpus}.txt")))?;
        for engine in [Engine::Ruff, Engine::TreeSitter] {
            let result = compare(corpus, engine, files, &truth);
            result.print();
            if engine == Engine::Ruff {
                let target = if corpus == "stdlib" { 100.0 } else { 99.5 };
                if result.agreement() < target || (corpus == "stdlib" && result.false_rejects > 0) {
                    failures_of_target.push(format!(
                        "{corpus}/{engine}: {:.2}% < {target}%",
                        result.agreement()
                    ));
                }
            }
            report.push(result.to_json());
        }
    }
    let report_path = out.join("report.json");
    let text =
        serde_json::to_string_pretty(&json!({ "quick": quick, "seed": seed, "results": report }))
            .map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(&report_path, text)
        .map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
    println!("report: {}", report_path.display());
    if failures_of_target.is_empty() {
        Ok(())
    } else {
        Err(format!("below target: {}", failures_of_target.join("; ")))
    }
}

fn parse_next<T: std::str::FromStr>(
    iter: &mut std::slice::Iter<'_, String>,
    flag: &str,
) -> Result<T, String> {
    iter.next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a number"))
}

fn output_dir() -> PathBuf {
    crate::workspace::target_dir().join("fidelity")
}

fn script(name: &str) -> PathBuf {
    crate::workspace::root()
        .join("xtask")
        .join("fidelity")
        .join(name)
}

/// Every `.py` file of the installed CPython stdlib, site-packages excluded, sorted.
pub(crate) fn stdlib_files() -> Result<Vec<PathBuf>, String> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err("python3 could not report its stdlib path".into());
    }
    let root = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if name != "site-packages" && name != "dist-packages" && name != "__pycache__" {
                    stack.push(path);
                }
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "py") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Every 10th file plus the files known to be rejected (so both verdicts are exercised).
fn quick_sample(files: Vec<PathBuf>) -> Vec<PathBuf> {
    files
        .into_iter()
        .enumerate()
        .filter(|(i, p)| {
            let s = p.to_string_lossy();
            i % 10 == 0
                || s.contains("badsyntax")
                || s.contains("bad_coding")
                || s.contains("lib2to3/tests/data")
        })
        .map(|(_, p)| p)
        .collect()
}

fn write_list(path: &Path, files: &[PathBuf]) -> Result<(), String> {
    let mut text = String::new();
    for f in files {
        text.push_str(&f.to_string_lossy());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn generate_mutants(
    stdlib: &[PathBuf],
    out: &Path,
    count: usize,
    seed: u64,
) -> Result<Vec<PathBuf>, String> {
    let dir = out.join("mutants");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    let list = out.join("mutant-sources.txt");
    write_list(&list, stdlib)?;
    let status = Command::new("python3")
        .arg(script("mutate.py"))
        .arg(&list)
        .arg(&dir)
        .arg(count.to_string())
        .arg(seed.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run mutate.py: {e}"))?;
    if !status.success() {
        return Err(format!("mutate.py failed with {status}"));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// CPython's verdict per file: `None` = accepted, `Some(message)` = rejected.
pub(crate) fn cpython_verdicts(
    files: &[PathBuf],
    list: &Path,
) -> Result<Vec<Option<String>>, String> {
    write_list(list, files)?;
    let output = Command::new("python3")
        .arg(script("cpython_verdicts.py"))
        .arg(list)
        .output()
        .map_err(|e| format!("cannot run cpython_verdicts.py: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cpython_verdicts.py failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let verdicts: Vec<Option<String>> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("bad verdict line: {e}"))?;
            Ok(if v["ok"].as_bool() == Some(true) {
                None
            } else {
                Some(format!(
                    "line {}: {}",
                    v["line"].as_i64().unwrap_or(0),
                    v["error"].as_str().unwrap_or("?")
                ))
            })
        })
        .collect::<Result<_, String>>()?;
    if verdicts.len() != files.len() {
        return Err(format!(
            "expected {} verdicts, got {}",
            files.len(),
            verdicts.len()
        ));
    }
    Ok(verdicts)
}

struct Disagreement {
    path: PathBuf,
    cpython: Option<String>,
    ours: Option<String>,
}

struct Comparison {
    corpus: &'static str,
    engine: Engine,
    files: usize,
    agree: usize,
    false_accepts: usize,
    false_rejects: usize,
    disagreements: Vec<Disagreement>,
    /// Per mutation operator (from the file name): (files, agree).
    by_operator: BTreeMap<String, (usize, usize)>,
}

impl Comparison {
    fn agreement(&self) -> f64 {
        if self.files == 0 {
            return 100.0;
        }
        100.0 * self.agree as f64 / self.files as f64
    }

    fn print(&self) {
        println!(
            "{:<8} {:<12} files {:>5}  agreement {:>7.2}%  false accepts {:>4}  false rejects {:>4}",
            self.corpus,
            self.engine.to_string(),
            self.files,
            self.agreement(),
            self.false_accepts,
            self.false_rejects
        );
        if self.engine == Engine::Ruff {
            if self.corpus == "mutants" {
                for (op, (n, agree)) in &self.by_operator {
                    println!("    {op:<36} {agree:>5}/{n:<5}");
                }
            }
            for d in self.disagreements.iter().take(40) {
                println!(
                    "    {} {}\n        cpython: {}\n        ours:    {}",
                    if d.cpython.is_some() {
                        "FALSE ACCEPT"
                    } else {
                        "FALSE REJECT"
                    },
                    d.path.display(),
                    d.cpython.as_deref().unwrap_or("accepted"),
                    d.ours.as_deref().unwrap_or("accepted")
                );
            }
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "corpus": self.corpus,
            "engine": self.engine.to_string(),
            "files": self.files,
            "agreement_percent": self.agreement(),
            "false_accepts": self.false_accepts,
            "false_rejects": self.false_rejects,
            "by_operator": self.by_operator.iter().map(|(k, (n, a))| (k.clone(), json!({"files": n, "agree": a}))).collect::<serde_json::Map<_, _>>(),
            "disagreements": self.disagreements.iter().map(|d| json!({
                "path": d.path, "cpython": d.cpython, "ours": d.ours,
            })).collect::<Vec<_>>(),
        })
    }
}

fn operator_of(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.split_once('_')
        .map_or(stem.clone(), |(_, op)| op.to_owned())
}

/// Our verdict per file, checked on two threads.
pub(crate) fn our_verdicts(files: &[PathBuf], options: &SyntaxOptions) -> Vec<Option<String>> {
    let chunk = files.len().div_ceil(2).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| match std::fs::read(p) {
                            Ok(bytes) => check_source(&bytes, options)
                                .first()
                                .map(|d| format!("line {}:{}: {}", d.line, d.column, d.message)),
                            Err(e) => Some(format!("unreadable: {e}")),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn compare(
    corpus: &'static str,
    engine: Engine,
    files: &[PathBuf],
    truth: &[Option<String>],
) -> Comparison {
    let options = SyntaxOptions {
        engine,
        ..SyntaxOptions::default()
    };
    let ours = our_verdicts(files, &options);
    let mut result = Comparison {
        corpus,
        engine,
        files: files.len(),
        agree: 0,
        false_accepts: 0,
        false_rejects: 0,
        disagreements: Vec::new(),
        by_operator: BTreeMap::new(),
    };
    for ((path, cpython), ours) in files.iter().zip(truth).zip(ours) {
        let agrees = cpython.is_some() == ours.is_some();
        let entry = result.by_operator.entry(operator_of(path)).or_default();
        entry.0 += 1;
        if agrees {
            result.agree += 1;
            entry.1 += 1;
            continue;
        }
        if cpython.is_some() {
            result.false_accepts += 1;
        } else {
            result.false_rejects += 1;
        }
        result.disagreements.push(Disagreement {
            path: path.clone(),
            cpython: cpython.clone(),
            ours,
        });
    }
    result
}
