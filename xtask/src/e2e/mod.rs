//! `cargo xtask e2e [--filter S] [--bin PATH | --debug] [--jobs N] [--keep]`: the integration
//! matrix.
//!
//! Builds the release binary once (with fault injection compiled in; `--debug` builds the
//! debug binary instead, where fault injection is always on), then runs every
//! scenario of issue 6 against it as a subprocess, each in a fresh temporary root, for every
//! configuration where the scenario means something:
//!
//! - configurations `file/<chain>`: the CLI with a `bluegreen.toml` selecting the chain
//!   (`none`, `syntax-ruff`, `syntax-tree-sitter`, `startup-cold`, `startup-warm`, `script`,
//!   `full`); the CLI always uses the durable file store.
//! - configurations `memory/<chain>`: scenarios 1–4 and 9 through the library with
//!   `MemoryStore`, in this process (the only place the library allows a memory store).
//!
//! Output: a table on stdout, `target/e2e/report.json` (rows `{scenario, config, result,
//! ms, detail}`), and a non-zero exit when any row fails. `--filter S` runs the rows whose
//! `"<scenario> <config>"` contains `S`. Roots of failed rows are kept for inspection.

mod bytecode;
mod cli;
mod config;
mod confinement;
mod hostile_root;
mod http;
mod memory;
mod module_identity;
mod scenarios;
mod server_limits;
mod system;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;

/// What a scenario function returns: `Ok(detail)` passes, `Err(why)` fails.
pub type Outcome = Result<String, String>;

/// Everything a scenario needs besides its own scratch directory.
pub struct Ctx {
    /// The `bluegreen` binary under test.
    pub bin: PathBuf,
    /// `fixtures/e2e` (absolute).
    pub fixtures: PathBuf,
}

/// One row's private scratch space: `dir` is fresh and empty; `root` (= `dir/root`) exists.
pub struct Case<'a> {
    pub ctx: &'a Ctx,
    pub dir: PathBuf,
    pub root: PathBuf,
}

type RunFn = Box<dyn Fn(&Case) -> Outcome + Send + Sync>;

/// One cell of the matrix.
pub struct Row {
    pub scenario: String,
    pub config: String,
    /// `None`: not applicable, with the reason in `na`.
    run: Option<RunFn>,
    na: String,
}

impl Row {
    pub fn run(
        scenario: impl Into<String>,
        config: impl Into<String>,
        f: impl Fn(&Case) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        Row {
            scenario: scenario.into(),
            config: config.into(),
            run: Some(Box::new(f)),
            na: String::new(),
        }
    }

    pub fn not_applicable(
        scenario: impl Into<String>,
        config: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Row {
            scenario: scenario.into(),
            config: config.into(),
            run: None,
            na: why.into(),
        }
    }

    fn key(&self) -> String {
        format!("{} {}", self.scenario, self.config)
    }
}

struct Options {
    filter: Vec<String>,
    bin: Option<PathBuf>,
    debug: bool,
    jobs: usize,
    keep: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            filter: Vec::new(),
            bin: None,
            debug: false,
            jobs: 2,
            keep: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--filter" => options.filter.push(value("--filter")?),
                "--bin" => options.bin = Some(PathBuf::from(value("--bin")?)),
                "--jobs" => {
                    options.jobs = value("--jobs")?
                        .parse()
                        .map_err(|_| "--jobs needs a positive number".to_string())?;
                    options.jobs = options.jobs.max(1);
                }
                "--keep" => options.keep = true,
                "--debug" => options.debug = true,
                "-h" | "--help" => {
                    return Err("usage: cargo xtask e2e [--filter S]... [--bin PATH | --debug] [--jobs N] [--keep]\n  --filter S  run rows whose \"<scenario> <config>\" contains S (repeatable: any)\n  --bin PATH  test this binary instead of building the release binary\n  --debug     build and test the debug binary (fault injection is on in debug builds)\n  --jobs N    rows run in parallel (default 2)\n  --keep      keep every row's scratch root (default: only failed rows')".into())
                }
                other => return Err(format!("unknown argument {other:?} (try --help)")),
            }
        }
        Ok(options)
    }
}

/// Every row of the matrix, in report order.
fn plan() -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(scenarios::rows());
    rows.extend(memory::rows());
    rows.extend(system::rows());
    rows.extend(module_identity::rows());
    rows.extend(hostile_root::rows());
    rows.extend(server_limits::rows());
    rows.extend(bytecode::rows());
    rows.extend(confinement::rows());
    rows.sort_by_key(|r| scenario_number(&r.scenario));
    rows
}

fn scenario_number(scenario: &str) -> u32 {
    scenario
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

#[derive(Clone)]
struct Record {
    scenario: String,
    config: String,
    result: &'static str,
    ms: u64,
    detail: String,
}

pub fn main(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args)?;
    let started = Instant::now();
    let workspace = crate::workspace::root();
    let bin = match &options.bin {
        Some(bin) => std::path::absolute(bin).map_err(|e| format!("{}: {e}", bin.display()))?,
        None => {
            let started = Instant::now();
            let bin = crate::workspace::build_bluegreen(!options.debug)?;
            eprintln!("e2e: built in {:.1} s", started.elapsed().as_secs_f64());
            bin
        }
    };
    if !bin.is_file() {
        return Err(format!("no binary at {}", bin.display()));
    }
    let ctx = Ctx {
        bin,
        fixtures: workspace.join("fixtures/e2e"),
    };
    let scratch = std::env::temp_dir().join(format!("bluegreen-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;

    let rows: Vec<Row> = plan()
        .into_iter()
        .filter(|r| options.filter.is_empty() || options.filter.iter().any(|f| r.key().contains(f)))
        .collect();
    if rows.is_empty() {
        return Err("no row matches the filter".into());
    }
    eprintln!(
        "e2e: {} rows against {} ({} jobs)",
        rows.len(),
        ctx.bin.display(),
        options.jobs
    );

    let results: Vec<Mutex<Option<Record>>> = rows.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let matrix_started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..options.jobs.min(rows.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(row) = rows.get(i) else { break };
                let record = run_row(&ctx, row, &scratch.join(format!("{i:03}")), options.keep);
                eprintln!(
                    "  {:<4} {:>6} ms  {} {}",
                    record.result, record.ms, record.scenario, record.config
                );
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(record);
                }
            });
        }
    });
    let matrix_ms = matrix_started.elapsed().as_millis() as u64;
    let records: Vec<Record> = results
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect();
    let _ = std::fs::remove_dir(&scratch); // only succeeds when every row cleaned up

    print_table(&records);
    let failed = records.iter().filter(|r| r.result == "FAIL").count();
    let passed = records.iter().filter(|r| r.result == "PASS").count();
    let na = records.iter().filter(|r| r.result == "n/a").count();
    println!(
        "\n{passed} passed, {failed} failed, {na} n/a; matrix {:.1} s, total {:.1} s",
        matrix_ms as f64 / 1000.0,
        started.elapsed().as_secs_f64()
    );

    let report = json!({
        "binary": ctx.bin.display().to_string(),
        "matrix_ms": matrix_ms,
        "total_ms": started.elapsed().as_millis() as u64,
        "passed": passed,
        "failed": failed,
        "not_applicable": na,
        "rows": records.iter().map(|r| json!({
            "scenario": r.scenario, "config": r.config, "result": r.result, "ms": r.ms, "detail": r.detail,
        })).collect::<Vec<_>>(),
    });
    let out_dir = workspace.join("target/e2e");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("report.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    println!("report: {}", out.display());

    if failed > 0 {
        return Err(format!("{failed} of {} rows failed", records.len()));
    }
    Ok(())
}

fn run_row(ctx: &Ctx, row: &Row, dir: &Path, keep: bool) -> Record {
    let mut record = Record {
        scenario: row.scenario.clone(),
        config: row.config.clone(),
        result: "n/a",
        ms: 0,
        detail: row.na.clone(),
    };
    let Some(run) = &row.run else {
        return record;
    };
    let started = Instant::now();
    let outcome = prepare(dir).and_then(|root| {
        let case = Case {
            ctx,
            dir: dir.to_path_buf(),
            root,
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&case))) {
            Ok(outcome) => outcome,
            Err(panic) => Err(format!(
                "harness panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    });
    record.ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(detail) => {
            record.result = "PASS";
            record.detail = detail;
            if !keep {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        Err(why) => {
            record.result = "FAIL";
            record.detail = format!("{why} [kept: {}]", dir.display());
        }
    }
    record
}

fn prepare(dir: &Path) -> Result<PathBuf, String> {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    Ok(root)
}

fn print_table(records: &[Record]) {
    let sw = records
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let cw = records
        .iter()
        .map(|r| r.config.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "\n{:<sw$}  {:<cw$}  {:<6} {:>8}  detail",
        "scenario", "config", "result", "ms"
    );
    println!("{}", "-".repeat(sw + cw + 30));
    for r in records {
        let detail: String = r.detail.chars().take(140).collect();
        println!(
            "{:<sw$}  {:<cw$}  {:<6} {:>8}  {}",
            r.scenario, r.config, r.result, r.ms, detail
        );
    }
}
