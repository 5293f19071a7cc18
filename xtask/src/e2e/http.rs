//! Scenario 10: the same deploy / rollback through `bluegreen serve`, with auth.
//! A few requests need no HTTP client crate: raw HTTP/1.1 over a `TcpStream`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use bluegreen_core::util::sha256_hex;
use serde_json::{json, Value};

use super::cli::{ensure, expect_bytes, s};
use super::config::{good_code, ChainKind, Settings};
use super::scenarios::{expect_live, setup, AGENT, FILE};
use super::{Case, Outcome};

const TOKEN: &str = "e2e-token-0123456789abcdef";
const CODE_LIMIT: usize = 4096;

/// A response: status code and body.
struct Response {
    status: u16,
    body: String,
}

impl Response {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body)
            .map_err(|e| format!("response body is not JSON ({e}): {:?}", self.body))
    }

    fn expect(&self, status: u16, what: &str) -> Result<Value, String> {
        ensure!(
            self.status == status,
            "{what}: expected HTTP {status}, got {} {:?}",
            self.status,
            self.body.chars().take(300).collect::<String>()
        );
        self.json().map_err(|e| format!("{what}: {e}"))
    }
}

fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("{method} {path}: sending: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path}: reading: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: malformed response {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

pub(super) struct Server {
    pub(super) child: Child,
    pub(super) addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve --listen 127.0.0.1:0` and reads the address it announces.
fn start(bg: &super::cli::Bg, token: Option<&str>) -> Result<Server, String> {
    let mut cmd = bg.command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(t) = token {
        cmd.env("BLUEGREEN_TOKEN", t);
    }
    start_command(cmd)
}

/// Spawns a `serve` command and reads the address it announces on stderr (always there;
/// stdout carries it only without `--json`).
pub(super) fn start_command(mut cmd: std::process::Command) -> Result<Server, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("starting serve: {e}"))?;
    let stderr = child.stderr.take();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let Some(err) = stderr else { return };
            // Keeps draining after the announcement so the server never blocks on stderr.
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().trim_end_matches('/').to_owned());
                }
                if let Ok(mut seen) = seen.lock() {
                    if seen.len() < 4000 {
                        seen.push_str(&line);
                        seen.push('\n');
                    }
                }
            }
        });
    }
    let mut server = Server {
        child,
        addr: String::new(),
    };
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => server.addr = addr,
        Err(_) => {
            let _ = server.child.kill();
            let err = seen.lock().map(|s| s.clone()).unwrap_or_default();
            return Err(format!(
                "serve did not announce \"listening on http://...\" within 20 s; stderr: {}",
                err.trim().chars().take(400).collect::<String>()
            ));
        }
    }
    Ok(server)
}

pub fn scenario(c: &Case) -> Outcome {
    let settings = Settings {
        max_code_bytes: CODE_LIMIT,
        ..Settings::default()
    };
    let bg = setup(c, ChainKind::SyntaxRuff, &settings)?;

    // Without a token the server refuses to start on a normal listen.
    let mut refused = bg.command();
    refused.args(["serve", "--listen", "127.0.0.1:0"]);
    let out = super::cli::run(&mut refused, None, Duration::from_secs(20))
        .map_err(|e| format!("serve without a token should refuse to start: {e}"))?;
    ensure!(
        out.code.is_some_and(|c| c != 0),
        "serve without a token did not refuse: {}",
        out.describe()
    );

    let server = start(&bg, Some(TOKEN))?;
    let addr = server.addr.as_str();
    let t = Some(TOKEN);
    let (v1, v2) = (good_code("1"), good_code("2"));
    let code = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    request(addr, "GET", "/healthz", None, None)?
        .expect_status(200, "GET /healthz without a token")?;
    let hot = json!({"agent_id": AGENT, "code": code(&v1), "file_path": FILE});
    for (token, what) in [(None, "no token"), (Some("wrong-token"), "a wrong token")] {
        request(addr, "POST", "/api/v1/dev/hotswap", token, Some(&hot))?
            .expect_status(401, &format!("hotswap with {what}"))?;
    }
    ensure!(
        !c.root.join(FILE).exists(),
        "an unauthorized request deployed"
    );

    let d1 = request(addr, "POST", "/api/v1/dev/hotswap", t, Some(&hot))?
        .expect(200, "POST /api/v1/dev/hotswap")?;
    ensure!(d1["status"] == "success", "hotswap: {d1}");
    let id1 = s(&d1, "deployment_id")?.to_owned();
    expect_bytes(&c.root.join(FILE), &v1, "v1")?;

    let path = format!("/api/v1/agents/{AGENT}/deployments");
    let d2 = request(addr, "POST", &path, t, Some(&json!({"code": code(&v2)})))?
        .expect(200, "POST deployments")?;
    ensure!(
        d2["meta"]["backup_path"].is_string() && d2["meta"]["status"] == "LIVE",
        "second deployment meta: {d2}"
    );
    expect_bytes(&c.root.join(FILE), &v2, "v2")?;

    let rejected = request(
        addr,
        "POST",
        &path,
        t,
        Some(&json!({"code": "def process_event(event:\n"})),
    )?
    .expect(422, "a syntax error")?;
    ensure!(rejected["status"] == "failed", "rejection body: {rejected}");
    expect_bytes(&c.root.join(FILE), &v2, "v2 after a rejection")?;

    let big = json!({"code": "#".repeat(CODE_LIMIT + 1)});
    request(addr, "POST", &path, t, Some(&big))?.expect_status(413, "code over the limit")?;
    let escape = json!({"agent_id": "beta", "code": code(&v1), "file_path": "../outside.py"});
    request(addr, "POST", "/api/v1/dev/hotswap", t, Some(&escape))?
        .expect_status(400, "a path outside the root")?;
    for (agent, file, what) in [
        ("beta", "agents/be\u{0}ta.py", "a NUL byte in file_path"),
        ("be\u{0}ta", "agents/beta.py", "a NUL byte in agent_id"),
        ("../beta", "agents/beta.py", "an invalid agent_id"),
    ] {
        let body = json!({"agent_id": agent, "code": code(&v1), "file_path": file});
        request(addr, "POST", "/api/v1/dev/hotswap", t, Some(&body))?.expect_status(400, what)?;
    }
    ensure!(
        !c.root.join("agents/beta.py").exists(),
        "a refused request deployed beta"
    );
    ensure!(
        !c.dir.join("outside.py").exists(),
        "a file was written outside the root"
    );
    request(addr, "GET", "/api/v1/agents/nobody/history", t, None)?
        .expect_status(404, "history of an unknown agent")?;

    let rb = format!("/api/v1/agents/{AGENT}/rollback");
    request(addr, "POST", &rb, t, Some(&json!({})))?.expect(200, "POST rollback")?;
    expect_bytes(&c.root.join(FILE), &v1, "v1 after the rollback")?;

    let status =
        request(addr, "GET", "/api/v1/agents", t, None)?.expect(200, "GET /api/v1/agents")?;
    let live = &status["agents"][AGENT];
    ensure!(
        live["deployment_id"] == id1.as_str() && live["sha256"] == sha256_hex(&v1).as_str(),
        "HTTP status after rollback: {live}"
    );
    let history = request(
        addr,
        "GET",
        &format!("/api/v1/agents/{AGENT}/history"),
        t,
        None,
    )?
    .expect(200, "GET history")?;
    let n = history["deployments"].as_array().map_or(0, Vec::len);
    ensure!(
        n == 3,
        "HTTP history has {n} deployments, expected 3 (2 live + 1 failed)"
    );
    let metrics = request(addr, "GET", "/metrics", t, None)?;
    ensure!(
        metrics.status == 200 && metrics.body.contains("# TYPE"),
        "GET /metrics: {} {:?}",
        metrics.status,
        metrics.body.chars().take(200).collect::<String>()
    );
    // The CLI sees what the server did (one store).
    expect_live(&bg, &id1, &v1)?;
    drop(server);

    // The token can come from a file instead of the environment.
    let token_file = c.dir.join("token");
    super::cli::write(&token_file, format!("{TOKEN}\n").as_bytes())?;
    let mut cmd = bg.command();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token_file);
    let server = start_command(cmd)?;
    request(&server.addr, "GET", "/api/v1/agents", None, None)?
        .expect_status(401, "--token-file server without a token")?;
    request(&server.addr, "GET", "/api/v1/agents", t, None)?
        .expect(200, "--token-file server with the token")?;
    drop(server);
    Ok("auth 401s (env and --token-file), deploy 200, reject 422, 413, 400 (path, NUL, id), 404, rollback 200, CLI agrees".into())
}

impl Response {
    /// Only the status matters (the body of some errors need not be JSON).
    fn expect_status(&self, status: u16, what: &str) -> Result<(), String> {
        ensure!(
            self.status == status,
            "{what}: expected HTTP {status}, got {} {:?}",
            self.status,
            self.body.chars().take(300).collect::<String>()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn dechunk_joins_chunks_and_stops_at_the_last() {
        assert_eq!(
            dechunk("4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n"),
            "Wikipedia"
        );
    }
}
