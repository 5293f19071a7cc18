//! Benchmark section `syntax`: throughput of the `python-syntax` engines on the installed
//! Python stdlib, side by side in one run with CPython's in-process `compile()` (the
//! baseline) and a bare ruff parse (the ceiling). Single-threaded, files preloaded in
//! memory, best of N runs. Target: the `ruff` engine, semantic checks included, at least 10×
//! CPython's compile throughput.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};
use serde_json::json;

use crate::fidelity::{stdlib_files, workspace_root};

const TARGET_SPEEDUP: f64 = 10.0;

/// Runs this section; `quick` is the smoke version for CI. Returns the figures as JSON.
pub fn run(quick: bool) -> Result<serde_json::Value, String> {
    let mut files = stdlib_files()?;
    if quick {
        files = files.into_iter().step_by(10).collect();
    }
    let repeats = if quick { 1 } else { 5 };
    let sources: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    let total_bytes: usize = sources.iter().map(Vec::len).sum();

    let cpython = cpython_compile(&files, repeats)?;
    let bare_parse = best_of(repeats, || {
        for source in &sources {
            if let Ok(text) = std::str::from_utf8(source) {
                std::hint::black_box(ruff_python_parser::parse_unchecked(
                    text,
                    ruff_python_parser::ParseOptions::from(ruff_python_parser::Mode::Module),
                ));
            }
        }
    });
    let mut engines = Vec::new();
    let mut ruff_rate = 0.0;
    for engine in [Engine::Ruff, Engine::TreeSitter] {
        let options = SyntaxOptions {
            engine,
            ..SyntaxOptions::default()
        };
        let mut rejected = 0;
        let elapsed = best_of(repeats, || {
            rejected = sources
                .iter()
                .filter(|s| !check_source(s, &options).is_empty())
                .count();
        });
        let rate = mb_per_s(total_bytes, elapsed);
        if engine == Engine::Ruff {
            ruff_rate = rate;
        }
        engines.push(json!({
            "engine": engine.to_string(),
            "seconds": elapsed.as_secs_f64(),
            "mb_per_s": rate,
            "files_rejected": rejected,
            "speedup_vs_cpython": rate / cpython.mb_per_s,
        }));
    }
    let speedup = ruff_rate / cpython.mb_per_s;
    let report = json!({
        "section": "syntax",
        "quick": quick,
        "corpus": { "name": "python3 stdlib (site-packages excluded)", "files": files.len(), "bytes": total_bytes },
        "repeats": repeats,
        "cpython_compile": { "seconds": cpython.seconds, "mb_per_s": cpython.mb_per_s },
        "bare_ruff_parse": { "seconds": bare_parse.as_secs_f64(), "mb_per_s": mb_per_s(total_bytes, bare_parse) },
        "engines": engines,
        "ruff_speedup_vs_cpython": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
    });
    Ok(report)
}

struct Baseline {
    seconds: f64,
    mb_per_s: f64,
}

fn cpython_compile(files: &[PathBuf], repeats: usize) -> Result<Baseline, String> {
    let dir = std::env::temp_dir().join(format!("bluegreen-bench-syntax-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let list = dir.join("files.txt");
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(&list, text).map_err(|e| format!("cannot write {}: {e}", list.display()))?;
    let output = Command::new("python3")
        .arg(workspace_root().join("xtask/fidelity/cpython_compile_bench.py"))
        .arg(&list)
        .arg(repeats.to_string())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let output = output?;
    if !output.status.success() {
        return Err(format!(
            "cpython_compile_bench.py failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("bad output from cpython_compile_bench.py: {e}"))?;
    let seconds = v["best_seconds"].as_f64().ok_or("no best_seconds from CPython")?;
    let bytes = v["bytes"].as_u64().ok_or("no bytes from CPython")?;
    Ok(Baseline {
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds,
    })
}

fn best_of(repeats: usize, mut f: impl FnMut()) -> Duration {
    (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}
