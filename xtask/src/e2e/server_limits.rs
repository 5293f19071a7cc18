//! Scenario 15: `bluegreen serve` against clients that stall or overload it (issue 14,
//! finding 8), and bounded verification over HTTP (finding 7). Raw sockets, real signals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cli::ensure;
use super::config::{ChainKind, Settings};
use super::http::{start_command, Server};
use super::scenarios::setup;
use super::{Case, Outcome, Row};

const CONFIG: &str = "file/syntax-ruff";
const TOKEN: &str = "e2e-limits-token-0123456789abcdef";
const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";

pub fn rows() -> Vec<Row> {
    vec![
        Row::run("15 server-limits/header-timeout", CONFIG, header_timeout),
        Row::run("15 server-limits/connection-cap", CONFIG, connection_cap),
        Row::run("15 server-limits/idle-timeout", CONFIG, idle_timeout),
        Row::run(
            "15 server-limits/shutdown-stalled",
            CONFIG,
            shutdown_stalled,
        ),
        Row::run("15 server-limits/nested-input", CONFIG, nested_input),
        Row::run(
            "15 server-limits/no-absolute-paths",
            CONFIG,
            no_absolute_paths,
        ),
    ]
}

fn serve(c: &Case, extra: &[&str]) -> Result<Server, String> {
    let bg = setup(c, ChainKind::SyntaxRuff, &Settings::default())?;
    let mut cmd = bg.command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("BLUEGREEN_TOKEN", TOKEN);
    start_command(cmd)
}

fn connect(addr: &str, bytes: &[u8]) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .write_all(bytes)
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    Ok(stream)
}

/// Everything the server sent by `deadline`, and whether it closed the connection.
fn outcome(stream: &mut TcpStream, deadline: Instant) -> (String, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        if stream.set_read_timeout(Some(left)).is_err() {
            return (String::new(), false);
        }
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&received).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

/// One request on its own connection: (status, body).
fn request(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = connect(addr, head.as_bytes())?;
    stream
        .write_all(body.as_bytes())
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let (text, closed) = outcome(&mut stream, Instant::now() + Duration::from_secs(60));
    ensure!(closed, "{method} {path}: no complete answer within 60 s");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: malformed answer {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

fn header_timeout(c: &Case) -> Outcome {
    let server = serve(c, &["--header-read-timeout", "1s"])?;
    let mut stalled = (0..200)
        .map(|_| connect(&server.addr, PARTIAL_HEAD))
        .collect::<Result<Vec<_>, _>>()?;
    let (status, _) = request(&server.addr, "GET", "/healthz", "")?;
    ensure!(
        status == 200,
        "GET /healthz beside 200 stalled heads: {status}"
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let open = stalled
        .iter_mut()
        .map(|s| outcome(s, deadline).1)
        .filter(|closed| !closed)
        .count();
    ensure!(
        open == 0,
        "{open} of 200 partial heads still open after 30 s"
    );
    Ok(format!(
        "200 partial heads closed {:.1} s after the first check (header timeout 1 s); /healthz served meanwhile",
        started.elapsed().as_secs_f64()
    ))
}

fn connection_cap(c: &Case) -> Outcome {
    let server = serve(
        c,
        &["--max-connections", "4", "--header-read-timeout", "120s"],
    )?;
    let held = (0..4)
        .map(|_| connect(&server.addr, PARTIAL_HEAD))
        .collect::<Result<Vec<_>, _>>()?;
    let mut fifth = connect(&server.addr, PARTIAL_HEAD)?;
    let (answer, closed) = outcome(&mut fifth, Instant::now() + Duration::from_secs(30));
    ensure!(
        closed && answer.starts_with("HTTP/1.1 503 "),
        "the fifth connection over a cap of 4: closed={closed}, {answer:?}"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = request(&server.addr, "GET", "/healthz", "")?;
        if status == 200 {
            break;
        }
        ensure!(Instant::now() < deadline, "the cap was not freed: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok("cap 4: the fifth connection got 503 and was closed; freed once the four left".into())
}

fn idle_timeout(c: &Case) -> Outcome {
    let server = serve(c, &["--idle-timeout", "1s"])?;
    let mut conn = connect(
        &server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )?;
    let started = Instant::now();
    let (answer, closed) = outcome(&mut conn, started + Duration::from_secs(30));
    ensure!(
        closed && answer.starts_with("HTTP/1.1 200 "),
        "keep-alive connection: closed={closed}, {answer:?}"
    );
    Ok(format!(
        "an idle keep-alive connection was closed {:.1} s after its answer (idle timeout 1 s)",
        started.elapsed().as_secs_f64()
    ))
}

fn shutdown_stalled(c: &Case) -> Outcome {
    let mut server = serve(
        c,
        &[
            "--shutdown-grace",
            "30s",
            "--header-read-timeout",
            "120s",
            "--idle-timeout",
            "120s",
        ],
    )?;
    let _stalled = (0..50)
        .map(|_| connect(&server.addr, PARTIAL_HEAD))
        .collect::<Result<Vec<_>, _>>()?;
    let (status, _) = request(&server.addr, "GET", "/api/v1/agents", "")?;
    ensure!(status == 200, "GET /api/v1/agents: {status}");
    let pid = libc::pid_t::try_from(server.child.id()).map_err(|e| e.to_string())?;
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    ensure!(
        unsafe { libc::kill(pid, libc::SIGTERM) } == 0,
        "kill failed"
    );
    let deadline = sent + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    ensure!(status.code() == Some(0), "exit after SIGTERM: {status}");
    ensure!(
        took < Duration::from_secs(30),
        "took {took:?}, the grace is 30 s"
    );
    Ok(format!(
        "SIGTERM with 50 stalled clients: exit 0 after {} ms (grace 30 s)",
        took.as_millis()
    ))
}

/// The server's peak RSS so far, from /proc.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM".to_owned())
}

fn nested_input(c: &Case) -> Outcome {
    let server = serve(c, &[])?;
    let code = format!("x = {}1\n", "-".repeat(8 * 1024 * 1024 - 7));
    let before = peak_rss_kib(server.child.id())?;
    let body = json!({"agent_id": "nested", "code": code, "file_path": "agents/nested.py"});
    let (status, answer) = request(
        &server.addr,
        "POST",
        "/api/v1/dev/hotswap",
        &body.to_string(),
    )?;
    let after = peak_rss_kib(server.child.id())?;
    ensure!(
        status == 422,
        "8 MiB of nested input: {status} {}",
        answer.chars().take(300).collect::<String>()
    );
    ensure!(
        answer.contains("too complex: maximum recursion depth exceeded during compilation"),
        "diagnostic: {}",
        answer.chars().take(300).collect::<String>()
    );
    ensure!(
        !c.root.join("agents/nested.py").exists(),
        "the refused code was written"
    );
    let growth_mib = after.saturating_sub(before) / 1024;
    ensure!(
        growth_mib <= 10 * 8 + 64,
        "the server's peak RSS grew by {growth_mib} MiB"
    );
    Ok(format!(
        "8 MiB of `x = ---…1` refused (422); server peak RSS {} → {} MiB",
        before / 1024,
        after / 1024
    ))
}

fn no_absolute_paths(c: &Case) -> Outcome {
    let server = serve(c, &[])?;
    let deploy = |agent: &str, file: &str| {
        let body = json!({"agent_id": agent, "code": "x = 1\n", "file_path": file});
        request(
            &server.addr,
            "POST",
            "/api/v1/dev/hotswap",
            &body.to_string(),
        )
    };
    let (status, body) = deploy("good", "agents/good.py")?;
    ensure!(status == 200, "first deployment: {status} {body}");
    std::fs::write(
        c.root.join(".bluegreen/agents/good/events.jsonl"),
        "{not json\n",
    )
    .map_err(|e| e.to_string())?;
    let answers = [
        deploy("good", "agents/good.py")?,
        deploy("other", "/etc/passwd")?,
        request(&server.addr, "GET", "/api/v1/agents/good/history", "")?,
    ];
    let root = c.root.display().to_string();
    let canonical = c
        .root
        .canonicalize()
        .map_or_else(|_| root.clone(), |p| p.display().to_string());
    for (status, body) in &answers {
        ensure!(*status >= 400, "expected an error, got {status} {body}");
        ensure!(
            !body.contains(&root) && !body.contains(&canonical) && !body.contains("/etc/"),
            "an error body names a server path: {body}"
        );
    }
    Ok(format!(
        "{} error bodies (corrupt log, path outside the root) name no absolute path",
        answers.len()
    ))
}
