//! Benchmark section `syntax`: throughput of the `python-syntax` engines on the installed
//! Python stdlib, side by side in one run with CPython's in-process `compile()` (the
//! baseline) and a bare ruff parse (the ceiling). Single-threaded, files preloaded in
//! memory, best of N runs. Rates are computed from the measuring thread's CPU time (wall time
//! is reported too): other processes on a shared 2-core machine skew wall time, not CPU time.
//! Target: the `ruff` engine, semantic checks included, at least 10× CPython's compile
//! throughput.

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
    let bare_parse = measure(repeats, || {
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
        let elapsed = measure(repeats, || {
            rejected = sources
                .iter()
                .filter(|s| !check_source(s, &options).is_empty())
                .count();
        });
        let rate = mb_per_s(total_bytes, elapsed.cpu);
        if engine == Engine::Ruff {
            ruff_rate = rate;
        }
        engines.push(json!({
            "engine": engine.to_string(),
            "cpu_seconds": elapsed.cpu.as_secs_f64(),
            "wall_seconds": elapsed.wall.as_secs_f64(),
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
        "cpython_compile": { "cpu_seconds": cpython.cpu_seconds, "wall_seconds": cpython.wall_seconds, "mb_per_s": cpython.mb_per_s },
        "bare_ruff_parse": { "cpu_seconds": bare_parse.cpu.as_secs_f64(), "wall_seconds": bare_parse.wall.as_secs_f64(), "mb_per_s": mb_per_s(total_bytes, bare_parse.cpu) },
        "engines": engines,
        "ruff_speedup_vs_cpython": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
    });
    Ok(report)
}

struct Baseline {
    cpu_seconds: f64,
    wall_seconds: f64,
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
    let wall_seconds = v["best_seconds"].as_f64().ok_or("no best_seconds from CPython")?;
    let cpu_seconds = v["best_cpu_seconds"].as_f64().ok_or("no best_cpu_seconds from CPython")?;
    let bytes = v["bytes"].as_u64().ok_or("no bytes from CPython")?;
    Ok(Baseline {
        cpu_seconds,
        wall_seconds,
        mb_per_s: bytes as f64 / 1e6 / cpu_seconds.max(1e-9),
    })
}

/// Best CPU time and best wall time over `repeats` runs.
struct Timing {
    cpu: Duration,
    wall: Duration,
}

fn measure(repeats: usize, mut f: impl FnMut()) -> Timing {
    let mut best = Timing {
        cpu: Duration::MAX,
        wall: Duration::MAX,
    };
    for _ in 0..repeats.max(1) {
        let cpu_start = thread_cpu_time();
        let start = Instant::now();
        f();
        best.wall = best.wall.min(start.elapsed());
        best.cpu = best.cpu.min(thread_cpu_time().saturating_sub(cpu_start));
    }
    best
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}
