//! Benchmark section: the HTTP API under load.
//!
//! Starts the release binary (`bluegreen serve` on 127.0.0.1:0, bearer token, default
//! config = the syntax chain) in a scratch root, then 32 concurrent clients × 25
//! deployments of the 10 KB agent across 8 agents, each client on one keep-alive
//! connection. Every request must answer 200; afterwards the registry must be consistent
//! (one LIVE deployment per agent, every deployment recorded, the live file's SHA-256 equal
//! to the registry's). Reports throughput and p50/p99 request latency, then stops the
//! server with SIGTERM and requires a clean exit. The same load then runs through the CLI
//! (one `bluegreen deploy` process per deployment) for comparison.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench::{ten_kb_agent, Stats};

const TOKEN: &str = "bench-token-7f3a9c2e5d1b4a60";

/// Runs this section; `quick` is the smoke version for CI. Returns the figures as JSON.
pub fn run(quick: bool) -> Result<Value, String> {
    let (clients, per_client, agents) = if quick { (8, 3, 4) } else { (32, 25, 8) };
    let bin = crate::bench::bluegreen_bin();
    let scratch = crate::workspace::target_dir().join("bench/scratch");
    let root = scratch.join(format!(
        "http-{}",
        &bluegreen_core::DeploymentId::generate().as_str()[4..]
    ));
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let mut server = Server::start(&bin, &root)?;
    let result = load(server.addr, clients, per_client, agents, &root);
    let exit = server.stop();
    let _ = std::fs::remove_dir_all(&root);
    let mut figures = result?;
    let code = exit?;
    if code != Some(0) {
        return Err(format!(
            "the server exited with {code:?} after SIGTERM, not 0"
        ));
    }
    figures["server_exit_code"] = json!(0);

    // The same load through the CLI (one process per deployment), for comparison.
    let cli_root = scratch.join(format!(
        "http-cli-{}",
        &bluegreen_core::DeploymentId::generate().as_str()[4..]
    ));
    std::fs::create_dir_all(&cli_root)
        .map_err(|e| format!("creating {}: {e}", cli_root.display()))?;
    let cli = cli_load(&bin, &cli_root, clients, per_client, agents);
    let _ = std::fs::remove_dir_all(&cli_root);
    let (cli_rate, cli_stats) = cli?;
    let http_rate = figures["deployments_per_s"].as_f64().unwrap_or(0.0);
    figures["cli"] = json!({
        "deployments_per_s": cli_rate,
        "p50_ms": cli_stats.p50,
        "p99_ms": cli_stats.p99,
    });
    figures["http_vs_cli_throughput"] = json!(http_rate / cli_rate);
    if let Some(summary) = figures["summary"].as_str() {
        figures["summary"] = json!(format!(
            "{summary}; same load via CLI processes: {cli_rate:.0} deploys/s, p50 {:.1} ms, p99 {:.1} ms",
            cli_stats.p50, cli_stats.p99
        ));
    }
    Ok(figures)
}

/// `clients` threads each running `bluegreen deploy` `per_client` times.
fn cli_load(
    bin: &Path,
    root: &Path,
    clients: usize,
    per_client: usize,
    agents: usize,
) -> Result<(f64, Stats), String> {
    let agent_code = Arc::new(ten_kb_agent());
    let start = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (start, agent_code) = (start.clone(), agent_code.clone());
            let (bin, root) = (bin.to_owned(), root.to_owned());
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let agent = format!("bench_agent_{}", c % agents);
                let code_file = root.join(format!("client_{c}.py"));
                let mut samples = Vec::with_capacity(per_client);
                start.wait();
                for i in 0..per_client {
                    let mut code = agent_code.to_vec();
                    code.extend_from_slice(
                        format!("\nVERSION = {}\n", c * per_client + i).as_bytes(),
                    );
                    std::fs::write(&code_file, code).map_err(|e| e.to_string())?;
                    let t = Instant::now();
                    let out = Command::new(&bin)
                        .arg("--root")
                        .arg(&root)
                        .args([
                            "deploy",
                            &agent,
                            "--file",
                            &format!("agents/{agent}.py"),
                            "--code-file",
                        ])
                        .arg(&code_file)
                        .output()
                        .map_err(|e| format!("running {}: {e}", bin.display()))?;
                    samples.push(t.elapsed());
                    if !out.status.success() {
                        return Err(format!(
                            "CLI client {c}: deploy {i} failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                                .lines()
                                .last()
                                .unwrap_or("")
                        ));
                    }
                }
                Ok(samples)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut failure = None;
    for worker in workers {
        match worker.join() {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a CLI client thread panicked".to_owned())),
        }
    }
    let wall = began.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((
        (clients * per_client) as f64 / wall.as_secs_f64(),
        Stats::of(samples),
    ))
}

fn load(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    agents: usize,
    root: &Path,
) -> Result<Value, String> {
    let agent_code = Arc::new(ten_kb_agent());
    let start = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let start = start.clone();
            let agent_code = agent_code.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut conn = Connection::open(addr)?;
                let agent = format!("bench_agent_{}", c % agents);
                let mut samples = Vec::with_capacity(per_client);
                start.wait();
                for i in 0..per_client {
                    let mut code = String::from_utf8_lossy(&agent_code).into_owned();
                    code.push_str(&format!("\nVERSION = {}\n", c * per_client + i));
                    let body = json!({"agent_id": agent, "code": code, "file_path": format!("agents/{agent}.py")});
                    let t = Instant::now();
                    let (status, answer) =
                        conn.request("POST", "/api/v1/dev/hotswap", Some(&body.to_string()))?;
                    samples.push(t.elapsed());
                    if status != 200 {
                        return Err(format!("client {c}: deploy {i} answered {status}: {answer}"));
                    }
                }
                Ok(samples)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut samples = Vec::with_capacity(clients * per_client);
    let mut failure = None;
    for worker in workers {
        match worker.join() {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a client thread panicked".to_owned())),
        }
    }
    let wall = began.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    let stats = Stats::of(samples);
    let requests = clients * per_client;
    check_registry(addr, agents, requests / agents, root)?;
    let rate = requests as f64 / wall.as_secs_f64();
    Ok(json!({
        "summary": format!(
            "{clients} clients × {per_client} deploys, {agents} agents, syntax chain: {requests}/{requests} ok, {rate:.0} deploys/s, p50 {:.1} ms, p99 {:.1} ms, registry consistent",
            stats.p50, stats.p99
        ),
        "clients": clients,
        "deployments_per_client": per_client,
        "agents": agents,
        "chain": "syntax",
        "requests": requests,
        "succeeded": requests,
        "wall_s": wall.as_secs_f64(),
        "deployments_per_s": rate,
        "p50_ms": stats.p50,
        "p99_ms": stats.p99,
        "registry_consistent": true,
    }))
}

/// One LIVE per agent, every deployment recorded, the file on disk is the LIVE one.
fn check_registry(
    addr: SocketAddr,
    agents: usize,
    per_agent: usize,
    root: &Path,
) -> Result<(), String> {
    let mut conn = Connection::open(addr)?;
    let (status, body) = conn.request("GET", "/api/v1/agents", None)?;
    let doc: Value = serde_json::from_str(&body).map_err(|e| format!("status JSON: {e}"))?;
    let live = doc["agents"]
        .as_object()
        .ok_or("status JSON without agents")?;
    if status != 200 || live.len() != agents {
        return Err(format!(
            "status answered {status} with {} agents, expected {agents}",
            live.len()
        ));
    }
    for (agent, record) in live {
        let (status, body) =
            conn.request("GET", &format!("/api/v1/agents/{agent}/history"), None)?;
        let history: Value =
            serde_json::from_str(&body).map_err(|e| format!("history JSON: {e}"))?;
        let deployments = history["deployments"]
            .as_array()
            .ok_or("history without deployments")?;
        let lives = deployments.iter().filter(|d| d["status"] == "LIVE").count();
        if status != 200 || deployments.len() != per_agent || lives != 1 {
            return Err(format!(
                "{agent}: {} deployments ({lives} LIVE), expected {per_agent} (1 LIVE)",
                deployments.len()
            ));
        }
        if deployments[0]["deployment_id"] != record["deployment_id"] {
            return Err(format!(
                "{agent}: the newest deployment is not the LIVE one"
            ));
        }
        let file = root.join(record["file_path"].as_str().unwrap_or_default());
        let bytes = std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        let sha = sha256_hex(&bytes);
        if record["sha256"].as_str() != Some(sha.as_str()) {
            return Err(format!(
                "{agent}: the live file does not match the registry's sha256"
            ));
        }
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    // The one SHA-256 in the dependency tree the xtask already links (via the core).
    bluegreen_core::util::sha256_hex(bytes)
}

/// The `bluegreen serve` child process.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, root: &Path) -> Result<Server, String> {
        let mut child = Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("BLUEGREEN_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the server's first line: {e}"))?;
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Server { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the server did not announce its address (first line {line:?})"
                ))
            }
        }
    }

    /// SIGTERM, then the exit code (waits up to 30 s, then kills).
    fn stop(&mut self) -> Result<Option<i32>, String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status.code()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("the server did not stop within 30 s of SIGTERM".into());
                }
                Err(e) => return Err(format!("waiting for the server: {e}")),
            }
        }
    }
}

/// A minimal HTTP/1.1 keep-alive client (requests with Content-Length, answers with
/// Content-Length, which is all the server sends): no client crate needed in the xtask.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Connection {
    fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Connection {
            reader: BufReader::new(stream),
            writer,
            host: addr.to_string(),
        })
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let io = |e: std::io::Error| format!("{method} {path}: {e}");
        self.writer.write_all(head.as_bytes()).map_err(io)?;
        self.writer.write_all(body.as_bytes()).map_err(io)?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).map_err(io)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{method} {path}: bad status line {status_line:?}"))?;
        let mut length = None;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).map_err(io)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length =
            length.ok_or_else(|| format!("{method} {path}: answer without Content-Length"))?;
        let mut buf = vec![0; length];
        self.reader.read_exact(&mut buf).map_err(io)?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }
}
