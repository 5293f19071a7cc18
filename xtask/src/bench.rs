//! `cargo xtask bench [--quick] [--library-only | --startup-only | --scale-only]`: what users care about, each figure next to a baseline
//! measured in the same run (as a ratio), never as a pass/fail timing in tests.
//!
//! `cargo xtask bench` builds the release binaries once and re-runs itself from
//! `target/release/xtask bench-run`, so the library figures are for optimized code.
//! Writes `target/bench/report.json` and `target/bench/report.md`; BENCHMARKS.md keeps the
//! latest table with the machine and command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bluegreen_core::{BlueGreenService, Chain, Limits};
use bluegreen_store::FsStore;
use bluegreen_verify_process::{StartupOptions, StartupVerifier};
use bluegreen_verify_syntax::{SyntaxOptions, SyntaxVerifier};
use serde_json::{json, Value};

use crate::workspace;

/// Entry from `cargo xtask bench [--quick] [--debug]`: build release, then run the measuring
/// process. `--debug` runs in this (debug) process against the debug binary `cargo test`
/// built — a smoke test of the harness for CI, whose figures mean nothing.
pub fn main(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--debug") {
        let _ = BIN.set(workspace::build_bluegreen(false)?);
        return run_main(args);
    }
    workspace::build_bluegreen(true)?;
    let mut run = Command::new(workspace::target_dir().join("release/xtask"));
    run.arg("bench-run")
        .args(args)
        .current_dir(workspace::root());
    let status = run
        .status()
        .map_err(|e| format!("running the bench: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("bench failed".into())
    }
}

static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The `bluegreen` binary under test (release unless `--debug`).
/// `BLUEGREEN_BENCH_BIN` overrides it (to measure another build, e.g. main's, the same way).
pub fn bluegreen_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BLUEGREEN_BENCH_BIN") {
        return PathBuf::from(bin);
    }
    BIN.get_or_init(|| workspace::target_dir().join("release/bluegreen"))
        .clone()
}

/// The measuring process (release build).
pub fn run_main(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let out_dir = workspace::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let scratch = out_dir.join("scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut report = Report::default();

    if args.iter().any(|a| a == "--startup-only") {
        // `--startup-only`: section 5 alone, for tuning warm mode.
        let value = crate::bench_startup::run(quick)?;
        println!("{}", summarize(&value));
        return Ok(());
    }
    if args.iter().any(|a| a == "--scale-only") {
        // `--scale-only`: section 8 alone.
        let value = agent_count_scaling(&scratch, &bluegreen_bin(), quick)?;
        println!("{}", summarize(&value));
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(());
    }
    let n = if quick { 20 } else { 200 };
    let floor = floor(&scratch, n)?;
    report.row(
        "1 floor",
        "durable atomic replace, 10 KB",
        &floor,
        None,
        None,
    );

    let agent = ten_kb_agent();
    let naive = naive_pipeline(&scratch, &agent, if quick { 10 } else { 50 })?;
    report.row(
        "2 baseline",
        "naive cp + py_compile + mv",
        &naive,
        None,
        None,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let only_library = args.iter().any(|a| a == "--library-only");
    for (name, chain) in chains() {
        let with_startup = name.contains("startup");
        if only_library && with_startup {
            continue;
        }
        // The startup chains take long enough that one pacing tells the story.
        let pacings: &[Pacing] = if with_startup {
            &[Pacing::SettledPairs]
        } else {
            &[Pacing::BackToBack, Pacing::SettledPairs]
        };
        for &pacing in pacings {
            let (stats, same_minutes_floor) =
                runtime.block_on(library_latency(&scratch, &agent, chain.clone(), n, pacing))?;
            let floor_p50 = same_minutes_floor.map_or(floor.p50, |f| f.p50);
            let how = match pacing {
                Pacing::BackToBack => "back to back (vs floor in alternating blocks",
                Pacing::SettledPairs => "settled (vs paired floor",
            };
            report.row(
                "2 deploy (library)",
                &format!("chain {name}, {how} {floor_p50:.3} ms)"),
                &stats,
                Some(("floor", floor_p50)),
                Some(("naive", naive.p50)),
            );
        }
    }
    if only_library {
        // `--library-only`: the floor and the library deploy rows, for tuning the hot path.
        for line in &report.lines {
            println!("{line}");
        }
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(());
    }
    let bin = bluegreen_bin();
    for chain in ["none", "syntax"] {
        let stats = cli_latency(&scratch, &bin, &agent, chain, if quick { 10 } else { 50 })?;
        report.row(
            "2 deploy (CLI)",
            &format!("chain {chain}"),
            &stats,
            Some(("floor", floor.p50)),
            Some(("naive", naive.p50)),
        );
    }

    let (one, two) = parallel_throughput(&scratch, &agent, if quick { 1 } else { 5 })?;
    report.extra.push(json!({"section": "3 parallel", "agents": 64, "deployments_per_s_1_worker": one, "deployments_per_s_2_workers": two, "scaling": two / one}));
    report.lines.push(format!(
        "| 3 parallel | 64 agents, syntax chain | {one:.0} deploys/s (1 worker) | {two:.0} deploys/s (2 workers) | scaling ×{:.2} |",
        two / one
    ));

    for (section, result) in [
        ("4 verifier throughput", crate::bench_syntax::run(quick)),
        ("5 startup check", crate::bench_startup::run(quick)),
        ("7 HTTP load", crate::bench_http::run(quick)),
    ] {
        match result {
            Ok(value) => {
                report.lines.push(format!(
                    "| {section} | see report.json | {} | | |",
                    summarize(&value)
                ));
                report
                    .extra
                    .push(json!({"section": section, "result": value}));
            }
            Err(e) => {
                report
                    .lines
                    .push(format!("| {section} | error | {e} | | |"));
                report.extra.push(json!({"section": section, "error": e}));
            }
        }
    }

    let (agents, deps) = if quick { (1_000, 10) } else { (10_000, 100) };
    let scale = registry_scale(&scratch, &bin, agents, deps)?;
    report.lines.push(format!(
        "| 6 registry | {agents} agents × {deps} deployments | open {:.1} ms, status {:.0} ms (CLI {:.0} ms), history {:.2} ms (CLI {:.0} ms), recover {:.0} ms | RSS +{:.0} MiB | |",
        scale["open_ms"].as_f64().unwrap_or(0.0),
        scale["status_ms"].as_f64().unwrap_or(0.0),
        scale["cli_status_ms"].as_f64().unwrap_or(0.0),
        scale["history_ms"].as_f64().unwrap_or(0.0),
        scale["cli_history_ms"].as_f64().unwrap_or(0.0),
        scale["recover_ms"].as_f64().unwrap_or(0.0),
        scale["rss_delta_mib"].as_f64().unwrap_or(0.0),
    ));
    report
        .extra
        .push(json!({"section": "6 registry", "result": scale}));

    let scaling = agent_count_scaling(&scratch, &bin, quick)?;
    report.lines.push(format!(
        "| 8 agent count | CLI deploy, {} agents vs 1 agent | {} | | ×{:.2} (target ≤ 1.3) |",
        scaling["agents"],
        summarize(&scaling),
        scaling["ratio"].as_f64().unwrap_or(0.0),
    ));
    report
        .extra
        .push(json!({"section": "8 agent count", "result": scaling}));

    let _ = std::fs::remove_dir_all(&scratch);
    report.finish(&out_dir, quick, started.elapsed())
}

/// A CLI deploy (`--no-verify`) on a root of 10,000 agents (1,000 with `--quick`) against
/// the same on a root of one agent, alternating in one run: the ratio of the medians. Each
/// root's first deployments are warm-up (the first builds the pending index).
fn agent_count_scaling(scratch: &Path, bin: &Path, quick: bool) -> Result<Value, String> {
    use bluegreen_core::store::{Begin, Event};
    use bluegreen_core::{AgentId, DeploymentId, Status};
    let (agents, n) = if quick { (1_000, 10) } else { (10_000, 50) };
    let big = tempdir_in(scratch, "many-agents")?;
    let small = tempdir_in(scratch, "one-agent")?;
    let store = FsStore::open(&big).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now();
    for a in 0..agents {
        let agent = AgentId::new(&format!("agent_{a:05}")).map_err(|e| e.to_string())?;
        let id = DeploymentId::generate();
        let events = [
            Event::Begin(Begin {
                deployment_id: id.clone(),
                timestamp: now,
                file_path: format!("agents/{agent}.py"),
                staged_path: format!("agents/.{agent}.py.bluegreen-{id}.staged"),
                sha256: format!("{a:064x}"),
                green_sha256: None,
                backup_path: None,
                previous: None,
            }),
            Event::Finish {
                deployment_id: id,
                status: Status::Live,
                backup_path: None,
                reason: None,
                pruned: Vec::new(),
                at: None,
            },
        ];
        store
            .import_log(&agent, &events)
            .map_err(|e| e.to_string())?;
    }
    drop(store);
    let agent = ten_kb_agent();
    let deploy = |root: &Path, i: usize| -> Result<Duration, String> {
        let code_file = root.join("code.in");
        std::fs::write(&code_file, variant(&agent, i)).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("--root")
            .arg(root)
            .args([
                "deploy",
                "bench",
                "--file",
                "agents/bench.py",
                "--no-verify",
            ])
            .arg("--code-file")
            .arg(&code_file)
            .output()
            .map_err(|e| format!("running {}: {e}", bin.display()))?;
        let elapsed = t.elapsed();
        if !out.status.success() {
            return Err(format!(
                "CLI deploy failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        Ok(elapsed)
    };
    for i in 0..3 {
        deploy(&big, i)?;
        deploy(&small, i)?;
    }
    let (mut many, mut one) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 3..3 + n {
        many.push(deploy(&big, i)?);
        one.push(deploy(&small, i)?);
    }
    let (many, one) = (Stats::of(many), Stats::of(one));
    let ratio = many.p50 / one.p50;
    Ok(json!({
        "agents": agents, "deployments": n,
        "many_p50_ms": many.p50, "one_p50_ms": one.p50, "ratio": ratio,
        "summary": format!(
            "p50 {:.1} ms on {agents} agents vs {:.1} ms on 1 agent: ×{ratio:.2}",
            many.p50, one.p50
        ),
    }))
}

fn summarize(value: &Value) -> String {
    value
        .get("summary")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string().chars().take(200).collect())
}

#[derive(Default)]
struct Report {
    rows: Vec<Value>,
    lines: Vec<String>,
    extra: Vec<Value>,
}

impl Report {
    fn row(
        &mut self,
        section: &str,
        name: &str,
        stats: &Stats,
        floor: Option<(&str, f64)>,
        baseline: Option<(&str, f64)>,
    ) {
        let vs_floor = floor.map(|(_, f)| stats.p50 / f);
        let speedup = baseline.map(|(_, b)| b / stats.p50);
        self.rows.push(json!({
            "section": section, "name": name, "n": stats.n,
            "p50_ms": stats.p50, "p99_ms": stats.p99,
            "ratio_to_floor": vs_floor, "speedup_vs_naive": speedup,
        }));
        self.lines.push(format!(
            "| {section} | {name} | p50 {:.3} ms | p99 {:.3} ms | {}{} |",
            stats.p50,
            stats.p99,
            vs_floor
                .map(|r| format!("{r:.2}× floor"))
                .unwrap_or_default(),
            speedup
                .map(|s| format!(", {s:.1}× faster than naive"))
                .unwrap_or_default(),
        ));
    }

    fn finish(self, out_dir: &Path, quick: bool, elapsed: Duration) -> Result<(), String> {
        let mut md = String::from(
            "| section | what | figure | baseline/detail | ratio |\n|---|---|---|---|---|\n",
        );
        for line in &self.lines {
            md.push_str(line);
            md.push('\n');
        }
        println!("{md}");
        println!(
            "bench finished in {:.1}s (quick: {quick})",
            elapsed.as_secs_f64()
        );
        let doc = json!({
            "quick": quick,
            "machine": machine(),
            "elapsed_s": elapsed.as_secs_f64(),
            "latency": self.rows,
            "sections": self.extra,
        });
        std::fs::write(out_dir.join("report.md"), md).map_err(|e| e.to_string())?;
        std::fs::write(
            out_dir.join("report.json"),
            serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu})
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let pick = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples
                .get(i)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0)
        };
        Stats {
            n: samples.len(),
            p50: pick(0.5),
            p99: pick(0.99),
        }
    }
}

/// A valid ~10 KB agent module.
pub fn ten_kb_agent() -> Vec<u8> {
    let mut code = String::from("\"\"\"A benchmark agent.\"\"\"\nimport math\n\n\ndef process_event(event):\n    return helper_0(event)\n");
    let mut i = 0;
    while code.len() < 10 * 1024 {
        code.push_str(&format!(
            "\n\ndef helper_{i}(x, scale={i}):\n    total = 0\n    for k in range(3):\n        total += math.sqrt(abs(x) + k) * scale\n    return total\n"
        ));
        i += 1;
    }
    code.into_bytes()
}

fn variant(agent: &[u8], i: usize) -> Vec<u8> {
    let mut code = agent.to_vec();
    code.extend_from_slice(format!("\nVERSION = {i}\n").as_bytes());
    code
}

/// The physical limit: write + fsync + rename + directory fsync of 10 KB.
fn floor(scratch: &Path, n: usize) -> Result<Stats, String> {
    let dir = scratch.join("floor");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let target = dir.join("agent.py");
    let bytes = ten_kb_agent();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        bluegreen_core::util::replace_durable(&target, &bytes).map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
    }
    Ok(Stats::of(samples))
}

/// What a team scripts by hand: `cp` a backup, `python3 -m py_compile`, `mv` into place.
fn naive_pipeline(scratch: &Path, agent: &[u8], n: usize) -> Result<Stats, String> {
    let dir = scratch.join("naive");
    std::fs::create_dir_all(dir.join("backups")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("agent.py"), agent).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        std::fs::write(dir.join("new.py"), variant(agent, i)).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cp agent.py backups/agent.py.{i} && python3 -m py_compile new.py && mv new.py agent.py"
            ))
            .current_dir(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
        if !status.success() {
            return Err("naive pipeline failed".into());
        }
    }
    Ok(Stats::of(samples))
}

fn chains() -> Vec<(&'static str, Chain)> {
    let syntax = || SyntaxVerifier::new("syntax", SyntaxOptions::default());
    let startup = |warm| {
        StartupVerifier::new(
            "startup",
            StartupOptions {
                warm,
                ..StartupOptions::default()
            },
        )
    };
    vec![
        ("none", Chain::new()),
        ("syntax", Chain::new().with(syntax())),
        (
            "syntax+startup warm",
            Chain::new().with(syntax()).with(startup(true)),
        ),
        (
            "syntax+startup cold",
            Chain::new().with(syntax()).with(startup(false)),
        ),
    ]
}

const SETTLE: std::time::Duration = std::time::Duration::from_millis(2);
const BLOCK: usize = 10;

/// How deployments follow one another in [`library_latency`].
#[derive(Clone, Copy, PartialEq)]
enum Pacing {
    /// One after another, like the floor of section 1, in blocks of [`BLOCK`] that alternate
    /// with blocks of as many floor operations (each kind follows only its own kind, and both
    /// are sampled across the same minutes; the first of each block is not counted).
    BackToBack,
    /// Each after a 2 ms pause and followed (after another) by one floor operation: the
    /// ratio compares samples taken under the same disk and machine conditions (on a shared
    /// VM, fsync latency drifts by ±20% within a minute), both starting from a quiet disk —
    /// closer to how deployments arrive in practice than a tight loop.
    SettledPairs,
}

/// Deployment latency through the library; with [`Pacing::SettledPairs`] also the paired
/// floor samples.
async fn library_latency(
    scratch: &Path,
    agent: &[u8],
    chain: Chain,
    n: usize,
    pacing: Pacing,
) -> Result<(Stats, Option<Stats>), String> {
    let floor_dir = tempdir_in(scratch, "paired-floor")?;
    let floor_target = floor_dir.join("agent.py");
    let root = tempdir_in(scratch, "lib")?;
    let service = BlueGreenService::builder(&root)
        .store(FsStore::open(&root).map_err(|e| e.to_string())?)
        .chain(chain)
        .build()
        .map_err(|e| e.to_string())?;
    // One warm-up deployment (creates directories, starts a zygote).
    service
        .deploy_hot_swap("bench", agent, "agents/bench.py")
        .await
        .map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(n);
    let mut floor_samples = Vec::with_capacity(n);
    for i in 0..n {
        let code = variant(agent, i);
        // Both operations start from a quiet disk: neither pays for the other's
        // background work (the kernel's writeback, bluegreen's snapshot deletion).
        if pacing == Pacing::SettledPairs {
            tokio::time::sleep(SETTLE).await;
        }
        let t = Instant::now();
        let report = service
            .deploy_hot_swap("bench", &code, "agents/bench.py")
            .await
            .map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
        if !report.succeeded() {
            return Err(format!("bench deployment rejected: {:?}", report.error));
        }
        match pacing {
            Pacing::SettledPairs => {
                tokio::time::sleep(SETTLE).await;
                let t = Instant::now();
                bluegreen_core::util::replace_durable(&floor_target, &code)
                    .map_err(|e| e.to_string())?;
                floor_samples.push(t.elapsed());
            }
            Pacing::BackToBack if (i + 1) % BLOCK == 0 => {
                // Drop the block's first deployment (it follows floor operations).
                samples.remove(samples.len() - BLOCK);
                for k in 0..BLOCK {
                    let t = Instant::now();
                    bluegreen_core::util::replace_durable(&floor_target, &code)
                        .map_err(|e| e.to_string())?;
                    if k > 0 {
                        floor_samples.push(t.elapsed());
                    }
                }
            }
            Pacing::BackToBack => {}
        }
    }
    let paired = (!floor_samples.is_empty()).then(|| Stats::of(floor_samples));
    Ok((Stats::of(samples), paired))
}

fn cli_latency(
    scratch: &Path,
    bin: &Path,
    agent: &[u8],
    chain: &str,
    n: usize,
) -> Result<Stats, String> {
    let root = tempdir_in(scratch, "cli")?;
    let code_file = root.join("code.in");
    let mut samples = Vec::with_capacity(n);
    for i in 0..=n {
        std::fs::write(&code_file, variant(agent, i)).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args(["--root"])
            .arg(&root)
            .args([
                "deploy",
                "bench",
                "--file",
                "agents/bench.py",
                "--code-file",
            ])
            .arg(&code_file);
        if chain == "none" {
            cmd.arg("--no-verify");
        }
        let t = Instant::now();
        let out = cmd
            .output()
            .map_err(|e| format!("running {}: {e}", bin.display()))?;
        if i > 0 {
            samples.push(t.elapsed());
        }
        if !out.status.success() {
            return Err(format!(
                "CLI deploy failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
    }
    Ok(Stats::of(samples))
}

/// 64 agents deploying concurrently (syntax chain), with 1 and with 2 runtime workers.
fn parallel_throughput(scratch: &Path, agent: &[u8], rounds: usize) -> Result<(f64, f64), String> {
    let mut rates = Vec::new();
    for workers in [1, 2] {
        let root = tempdir_in(scratch, "par")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .max_blocking_threads(workers)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let rate = runtime.block_on(async {
            let service = BlueGreenService::builder(&root)
                .store(FsStore::open(&root).map_err(|e| e.to_string())?)
                .chain(Chain::new().with(SyntaxVerifier::new("syntax", SyntaxOptions::default())))
                .limits(Limits {
                    lock_timeout: Duration::from_secs(120),
                    ..Limits::default()
                })
                .build()
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            let mut tasks = Vec::new();
            for a in 0..64 {
                let service = service.clone();
                let agent = agent.to_vec();
                tasks.push(tokio::spawn(async move {
                    for r in 0..=rounds {
                        let path = format!("agents/a{a}.py");
                        let report = service
                            .deploy_hot_swap(&format!("a{a}"), &variant(&agent, r), &path)
                            .await
                            .map_err(|e| e.to_string())?;
                        if !report.succeeded() {
                            return Err("rejected".to_owned());
                        }
                    }
                    Ok::<(), String>(())
                }));
            }
            for task in tasks {
                task.await.map_err(|e| e.to_string())??;
            }
            Ok::<f64, String>((64 * (rounds + 1)) as f64 / t.elapsed().as_secs_f64())
        })?;
        rates.push(rate);
    }
    Ok((rates[0], rates[1]))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A file store with `agents` × `deps` deployments: open time, memory, status/history latency.
fn registry_scale(scratch: &Path, bin: &Path, agents: usize, deps: usize) -> Result<Value, String> {
    use bluegreen_core::store::{Begin, Event};
    use bluegreen_core::{AgentId, DeploymentId, Status};
    let root = tempdir_in(scratch, "registry")?;
    let store = FsStore::open(&root).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let now = chrono::Utc::now();
    for a in 0..agents {
        let agent = AgentId::new(&format!("agent_{a:05}")).map_err(|e| e.to_string())?;
        let mut events = Vec::with_capacity(deps * 2);
        let mut previous = None;
        for d in 0..deps {
            let id = DeploymentId::generate();
            events.push(Event::Begin(Begin {
                deployment_id: id.clone(),
                timestamp: now,
                file_path: format!("agents/{agent}.py"),
                staged_path: format!("agents/.{agent}.py.bluegreen-{id}.staged"),
                sha256: format!("{:064x}", a * 1000 + d),
                green_sha256: None,
                backup_path: None,
                previous: previous.clone(),
            }));
            events.push(Event::Finish {
                deployment_id: id.clone(),
                status: Status::Live,
                backup_path: None,
                reason: None,
                pruned: Vec::new(),
                at: None,
            });
            previous = Some(id);
        }
        store
            .import_log(&agent, &events)
            .map_err(|e| e.to_string())?;
    }
    let build_s = t.elapsed().as_secs_f64();
    drop(store);

    let rss0 = rss_kib();
    let t = Instant::now();
    let service = BlueGreenService::builder(&root)
        .store(FsStore::open(&root).map_err(|e| e.to_string())?)
        .build()
        .map_err(|e| e.to_string())?;
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let status = service.active_versions().map_err(|e| e.to_string())?;
    let status_ms = t.elapsed().as_secs_f64() * 1000.0;
    if status.len() != agents {
        return Err(format!(
            "status lists {} agents, expected {agents}",
            status.len()
        ));
    }
    let t = Instant::now();
    let history = service.history("agent_00042").map_err(|e| e.to_string())?;
    let history_ms = t.elapsed().as_secs_f64() * 1000.0;
    if history.len() != deps {
        return Err("history length mismatch".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    runtime
        .block_on(service.recover())
        .map_err(|e| e.to_string())?;
    let recover_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss_delta_mib = rss_kib().saturating_sub(rss0) as f64 / 1024.0;

    let time_cli = |args: &[&str]| -> Result<f64, String> {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("CLI {args:?} failed"));
        }
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let cli_status_ms = time_cli(&["--json", "status"])?;
    let cli_history_ms = time_cli(&["--json", "history", "agent_00042"])?;
    let size: u64 = walk_size(&root.join(".bluegreen"));
    Ok(json!({
        "agents": agents, "deployments_per_agent": deps, "build_s": build_s,
        "registry_bytes": size,
        "open_ms": open_ms, "status_ms": status_ms, "history_ms": history_ms, "recover_ms": recover_ms,
        "rss_delta_mib": rss_delta_mib, "cli_status_ms": cli_status_ms, "cli_history_ms": cli_history_ms,
    }))
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_size(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn tempdir_in(scratch: &Path, prefix: &str) -> Result<PathBuf, String> {
    let dir = scratch.join(format!("{prefix}-{}", uuid_like()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn uuid_like() -> String {
    bluegreen_core::DeploymentId::generate().as_str()[4..].to_owned()
}
