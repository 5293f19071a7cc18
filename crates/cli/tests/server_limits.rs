//! `bluegreen serve` under hostile or greedy clients (issue 14, finding 8; CONTRACT.md "HTTP
//! API": header timeout, idle timeout, connection cap, shutdown within the grace, no absolute
//! paths in error bodies; "Input rules": the server bounds concurrent checks).
//!
//! Real server processes, real sockets (raw `TcpStream`s for clients that stall) and a real
//! HTTP client (ureq).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "limits-test-token-9f8e7d6c5b4a3210";
const V1: &str = "def process_event(e):\n    return 1\n";
const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";

struct Server {
    child: Child,
    addr: SocketAddr,
    http: ureq::Agent,
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("bluegreen"))
            .arg("--root")
            .arg(root)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("BLUEGREEN_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Server { child, addr, http }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn healthz(&self) -> u16 {
        self.http
            .get(self.url("/healthz"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .http
            .get(self.url(path))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    fn post(&self, path: &str, body: &Value) -> (u16, String) {
        let mut response = self
            .http
            .post(self.url(path))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send(body.to_string())
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    fn deploy(&self, agent: &str, file: &str) -> (u16, String) {
        self.post(
            "/api/v1/dev/hotswap",
            &json!({"agent_id": agent, "code": V1, "file_path": file}),
        )
    }

    /// A raw connection that has sent `bytes` and then stalls.
    fn stalled(&self, bytes: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.write_all(bytes).unwrap();
        stream
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The exit status, waiting at most `limit` (then kills and fails).
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("the server did not exit within {limit:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the server did with a connection by `deadline`: everything it sent, and whether it
/// closed the connection (EOF or reset) rather than leaving it open.
fn outcome(stream: &mut TcpStream, deadline: Instant) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (received, true),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (received, true),
            Err(_) => return (received, false), // still open at the deadline
        }
    }
}

#[test]
fn partial_heads_are_closed_by_the_header_timeout_while_requests_succeed() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path(), &["--header-read-timeout", "1s"]);
    let mut stalled: Vec<TcpStream> = (0..500).map(|_| server.stalled(PARTIAL_HEAD)).collect();
    // The server keeps serving others meanwhile.
    assert_eq!(server.healthz(), 200);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let open = stalled
        .iter_mut()
        .map(|s| outcome(s, deadline).1)
        .filter(|closed| !closed)
        .count();
    eprintln!(
        "500 partial heads: all closed after {:?} (header timeout 1 s)",
        started.elapsed()
    );
    assert_eq!(open, 0, "{open} of 500 stalled connections were still open");
    assert_eq!(server.healthz(), 200);
}

#[test]
fn the_connection_cap_holds_and_frees_up() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(
        root.path(),
        &["--max-connections", "8", "--header-read-timeout", "120s"],
    );
    let held: Vec<TcpStream> = (0..8).map(|_| server.stalled(PARTIAL_HEAD)).collect();
    // The ninth connection gets a 503 and is closed at once, whatever it sends.
    let mut ninth = server.stalled(PARTIAL_HEAD);
    let (answer, closed) = outcome(&mut ninth, Instant::now() + Duration::from_secs(30));
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed, "the connection over the cap stayed open");
    assert!(
        answer.starts_with("HTTP/1.1 503 "),
        "over the cap: {answer:?}"
    );
    assert!(answer.contains("connection cap"), "{answer}");
    assert_eq!(server.healthz(), 503);
    // Once the held connections go, the server takes new ones again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.healthz() != 200 {
        assert!(Instant::now() < deadline, "the cap was not freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_keep_alive_connections_and_stalled_bodies_are_closed() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path(), &["--idle-timeout", "1s"]);
    // A keep-alive connection: one full request and its answer, then silence.
    let mut idle = server.stalled(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    while !String::from_utf8_lossy(&answer).contains("\"ok\"") {
        let n = idle.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 "));
    let (_, closed) = outcome(&mut idle, Instant::now() + Duration::from_secs(30));
    assert!(closed, "an idle keep-alive connection stayed open");
    // A request whose body stops halfway.
    let head = format!(
        "POST /api/v1/dev/hotswap HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 1000\r\n\r\n{{\"agent_id\""
    );
    let mut body = server.stalled(head.as_bytes());
    let (answer, closed) = outcome(&mut body, Instant::now() + Duration::from_secs(30));
    assert!(closed, "a connection with a stalled body stayed open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400 "),
        "{answer}"
    );
    assert_eq!(server.healthz(), 200);
}

#[test]
fn sigterm_with_stalled_clients_exits_within_the_grace() {
    let root = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(60);
    let mut server = Server::start(
        root.path(),
        &[
            "--shutdown-grace",
            "60s",
            "--header-read-timeout",
            "120s",
            "--idle-timeout",
            "120s",
        ],
    );
    let mut stalled: Vec<TcpStream> = (0..50).map(|_| server.stalled(PARTIAL_HEAD)).collect();
    // And one idle keep-alive connection after a full request.
    let (status, _) = server.get("/api/v1/agents");
    assert_eq!(status, 200);
    assert_eq!(server.healthz(), 200);
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(grace + Duration::from_secs(30));
    let took = sent.elapsed();
    eprintln!("SIGTERM with 50 stalled clients: exited {status} after {took:?}");
    assert_eq!(status.code(), Some(0), "a clean stop");
    assert!(took < grace, "took {took:?}, the grace is {grace:?}");
    // The stalled clients were disconnected, not left hanging.
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(stalled.iter_mut().all(|s| outcome(s, deadline).1));
}

/// Checks alive now: process groups (the runner gives each check its own) holding a process
/// whose command line holds `marker` (a `python3` shim's subshells carry the same arguments).
fn alive_with(marker: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut groups: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == marker.as_bytes())
            })
        })
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp …; comm may hold spaces, so split after the last ')'.
            Some(
                stat.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(2)?
                    .to_owned(),
            )
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups.len()
}

/// A root whose chain ends in a script that sleeps `seconds`, tagged with `marker` so the
/// test can count the checks running at any instant from `/proc`.
fn slow_root(seconds: f64, marker: &str, lock_timeout: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("bluegreen.toml"),
        format!(
            r#"
lock_timeout = "{lock_timeout}"

[verifiers.slow]
kind = "script"
command = ["python3", "-c", "import time; time.sleep({seconds})", "{marker}"]
timeout = "120s"

[chains]
default = ["syntax", "slow"]
"#
        ),
    )
    .unwrap();
    root
}

#[test]
fn no_more_than_max_operations_chains_run_at_once() {
    let marker = format!("bluegreen-ops-{}", std::process::id());
    let root = slow_root(0.8, &marker, "120s");
    let server = std::sync::Arc::new(Server::start(root.path(), &["--max-operations", "2"]));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let server = server.clone();
            std::thread::spawn(move || {
                server.deploy(&format!("agent{i}"), &format!("a/agent{i}.py"))
            })
        })
        .collect();
    let mut peak = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        peak = peak.max(alive_with(&marker));
        std::thread::sleep(Duration::from_millis(5));
    }
    for client in clients {
        let (status, body) = client.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    eprintln!("6 concurrent deployments, --max-operations 2: at most {peak} checks at once");
    assert!(peak <= 2, "{peak} checks ran at once");
    assert!(peak >= 1, "no check was seen running");
}

#[test]
fn a_deployment_without_a_turn_within_the_lock_timeout_gets_409() {
    let marker = format!("bluegreen-busy-{}", std::process::id());
    let root = slow_root(5.0, &marker, "1s");
    let server = std::sync::Arc::new(Server::start(root.path(), &["--max-operations", "1"]));
    let first = {
        let server = server.clone();
        std::thread::spawn(move || server.deploy("first", "a/first.py"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive_with(&marker) == 0 {
        assert!(Instant::now() < deadline, "the first check never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, body) = server.deploy("second", "a/second.py");
    assert_eq!(status, 409, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error_kind"], "conflict");
    assert_eq!(body["exit_code"], 3);
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    assert!(!root.path().join("a/second.py").exists());
    assert_eq!(first.join().unwrap().0, 200);
}

/// Every absolute path in `text` (a `/` that starts a word and continues as a path).
fn absolute_paths(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"(?:^|[\s"'(\[=])(/[A-Za-z0-9._~-][^\s"',;:)\]]*)"#).unwrap();
    re.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

#[test]
fn error_bodies_carry_no_absolute_paths() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::write(r.join("blocker"), "a file where a directory should be").unwrap();
    std::fs::create_dir(r.join("adir")).unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("escape")).unwrap();
    let server = Server::start(r, &[]);
    assert_eq!(server.deploy("good", "agents/good.py").0, 200);
    // A registry problem: one agent's log is garbage.
    let log = r.join(".bluegreen/agents/good/events.jsonl");
    assert!(
        log.exists(),
        "the file store keeps its log at {}",
        log.display()
    );
    let mut answers = vec![
        ("outside", server.deploy("a1", "/etc/passwd")),
        ("dotdot", server.deploy("a2", "../../x.py")),
        ("not a dir", server.deploy("a3", "blocker/x.py")),
        ("a directory", server.deploy("a4", "adir")),
        ("symlink out", server.deploy("a5", "escape/x.py")),
        (
            "absolute outside",
            server.deploy("a6", &format!("{}/x.py", outside.path().display())),
        ),
        ("unknown agent", server.get("/api/v1/agents/nobody/history")),
    ];
    std::fs::write(&log, "{not json\n{\"also\": \"garbage\"}\n").unwrap();
    answers.push((
        "corrupt log: history",
        server.get("/api/v1/agents/good/history"),
    ));
    answers.push((
        "corrupt log: deploy",
        server.deploy("good", "agents/good.py"),
    ));
    answers.push(("corrupt log: status", server.get("/api/v1/agents")));
    let forms = [
        r.display().to_string(),
        r.canonicalize().unwrap().display().to_string(),
        outside.path().display().to_string(),
    ];
    let mut errors = 0;
    for (what, (status, body)) in &answers {
        eprintln!("{what}: {status} {body}");
        if *status < 400 {
            continue;
        }
        errors += 1;
        for form in &forms {
            assert!(!body.contains(form.as_str()), "{what}: {body}");
        }
        assert_eq!(absolute_paths(body), Vec::<String>::new(), "{what}: {body}");
    }
    assert!(errors >= 8, "only {errors} of the provocations were errors");
}
