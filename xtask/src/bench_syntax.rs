//! Benchmark section `syntax`: throughput of the `python-syntax` engines on the installed
//! Python stdlib, side by side in one run with CPython's in-process `compile()` (the
//! baseline) and a bare ruff parse (the ceiling). Single-threaded, files preloaded in
//! memory, best of N interleaved rounds (CPython, bare parse, `ruff`, `tree-sitter`). Rates
//! come from the measuring thread's CPU time (wall time is reported too); the verdict uses
//! the median of the per-round speedups, each from two measurements taken seconds apart.
//! Target: the `ruff` engine, semantic checks included, at least 10× CPython's compile
//! throughput.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};
use serde_json::json;

use crate::fidelity::stdlib_files;

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

    // Rounds interleave CPython and our engines, so a busy neighbour slows both alike.
    let ruff_options = SyntaxOptions::default();
    let ts_options = SyntaxOptions {
        engine: Engine::TreeSitter,
        ..SyntaxOptions::default()
    };
    let (mut cpython, mut bare, mut ruff, mut ts) = (
        Best::default(),
        Best::default(),
        Best::default(),
        Best::default(),
    );
    let (mut ruff_rejected, mut ts_rejected) = (0, 0);
    let mut round_speedups = Vec::new();
    for _ in 0..repeats {
        let cpython_round = cpython_compile(&files)?;
        cpython.add(cpython_round);
        bare.add(measure(|| {
            for source in &sources {
                if let Ok(text) = std::str::from_utf8(source) {
                    std::hint::black_box(ruff_python_parser::parse_unchecked(
                        text,
                        ruff_python_parser::ParseOptions::from(ruff_python_parser::Mode::Module),
                    ));
                }
            }
        }));
        let ruff_round = measure(|| ruff_rejected = rejected_count(&sources, &ruff_options));
        ruff.add(ruff_round);
        ts.add(measure(|| {
            ts_rejected = rejected_count(&sources, &ts_options)
        }));
        round_speedups
            .push(cpython_round.cpu.as_secs_f64() / ruff_round.cpu.as_secs_f64().max(1e-9));
    }
    round_speedups.sort_by(f64::total_cmp);
    let median_speedup = round_speedups[round_speedups.len() / 2];
    let cpython_rate = mb_per_s(total_bytes, cpython.cpu);
    let ruff_rate = mb_per_s(total_bytes, ruff.cpu);
    let ts_rate = mb_per_s(total_bytes, ts.cpu);
    let report = json!({
        "section": "syntax",
        "quick": quick,
        "corpus": { "name": "python3 stdlib (site-packages excluded)", "files": files.len(), "bytes": total_bytes },
        "rounds": repeats,
        "cpython_compile": cpython.to_json(total_bytes),
        "bare_ruff_parse": bare.to_json(total_bytes),
        "engines": [
            { "engine": "ruff", "files_rejected": ruff_rejected, "speedup_vs_cpython": ruff_rate / cpython_rate, "timing": ruff.to_json(total_bytes) },
            { "engine": "tree-sitter", "files_rejected": ts_rejected, "speedup_vs_cpython": ts_rate / cpython_rate, "timing": ts.to_json(total_bytes) },
        ],
        "ruff_speedup_vs_cpython": ruff_rate / cpython_rate,
        "ruff_speedup_vs_cpython_median_of_rounds": median_speedup,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": median_speedup >= TARGET_SPEEDUP,
        "summary": format!(
            "stdlib, {} files, {:.1} MB: ruff engine {ruff_rate:.1} MB/s, tree-sitter {ts_rate:.1} MB/s, CPython compile() {cpython_rate:.2} MB/s; ruff {:.1}× CPython (median of {repeats} rounds {median_speedup:.1}×), tree-sitter {:.1}×",
            files.len(),
            total_bytes as f64 / 1e6,
            ruff_rate / cpython_rate,
            ts_rate / cpython_rate,
        ),
    });
    Ok(report)
}

fn rejected_count(sources: &[Vec<u8>], options: &SyntaxOptions) -> usize {
    sources
        .iter()
        .filter(|s| !check_source(s, options).is_empty())
        .count()
}

/// Best CPU and wall time over the rounds.
#[derive(Clone, Copy)]
struct Best {
    cpu: Duration,
    wall: Duration,
}

impl Default for Best {
    fn default() -> Self {
        Self {
            cpu: Duration::MAX,
            wall: Duration::MAX,
        }
    }
}

impl Best {
    fn add(&mut self, timing: Timing) {
        self.cpu = self.cpu.min(timing.cpu);
        self.wall = self.wall.min(timing.wall);
    }

    fn to_json(self, bytes: usize) -> serde_json::Value {
        json!({
            "cpu_seconds": self.cpu.as_secs_f64(),
            "wall_seconds": self.wall.as_secs_f64(),
            "mb_per_s": mb_per_s(bytes, self.cpu),
        })
    }
}

/// One round of CPython's in-process `compile()` over `files` (a fresh interpreter).
fn cpython_compile(files: &[PathBuf]) -> Result<Timing, String> {
    let dir = std::env::temp_dir().join(format!("bluegreen-bench-syntax-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let list = dir.join("files.txt");
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(&list, text).map_err(|e| format!("cannot write {}: {e}", list.display()))?;
    let output = Command::new("python3")
        .arg(crate::workspace::root().join("xtask/fidelity/cpython_compile_bench.py"))
        .arg(&list)
        .arg("1")
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
    let wall = v["best_seconds"]
        .as_f64()
        .ok_or("no best_seconds from CPython")?;
    let cpu = v["best_cpu_seconds"]
        .as_f64()
        .ok_or("no best_cpu_seconds from CPython")?;
    Ok(Timing {
        cpu: Duration::from_secs_f64(cpu.max(0.0)),
        wall: Duration::from_secs_f64(wall.max(0.0)),
    })
}

/// CPU time of the measuring thread and wall time of one run.
#[derive(Clone, Copy)]
struct Timing {
    cpu: Duration,
    wall: Duration,
}

fn measure(f: impl FnOnce()) -> Timing {
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    f();
    Timing {
        cpu: thread_cpu_time().saturating_sub(cpu_start),
        wall: start.elapsed(),
    }
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
