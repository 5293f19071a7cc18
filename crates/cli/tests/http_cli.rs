//! `bluegreen serve` as a real process: startup rules, the announced port, real SIGTERM /
//! SIGINT during a slow `script` verification, and a real HTTP client (ureq).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "cli-test-token-5e1f0c9a7b3d2468";
const V1: &str = "def process_event(e):\n    return 1\n";
const V2: &str = "def process_event(e):\n    return 2\n";

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("bluegreen")
}

/// A root whose default chain is syntax then a script that sleeps `seconds`.
fn slow_root(seconds: u32) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("bluegreen.toml"),
        format!(
            r#"
[verifiers.slow]
kind = "script"
command = ["sleep", "{seconds}"]
timeout = "120s"

[chains]
default = ["syntax", "slow"]
"#
        ),
    )
    .unwrap();
    root
}

struct Server {
    child: Child,
    addr: SocketAddr,
    http: ureq::Agent,
}

impl Server {
    fn start(root: &Path, extra: &[&str], token: Option<&str>) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("--root")
            .arg(root)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("BLUEGREEN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            cmd.env("BLUEGREEN_TOKEN", token);
        }
        let mut child = cmd.spawn().unwrap();
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
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Server { child, addr, http }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The exit code, waiting at most `limit` (then kills and fails).
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the server did not exit within {limit:?}");
    }

    fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = req.send_json(body).unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().unwrap())
    }

    fn get(&self, path: &str, token: Option<&str>) -> u16 {
        let mut req = self.http.get(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        req.call().unwrap().status().as_u16()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bluegreen --json <args>` on the root: the one JSON document it prints.
fn cli_json(root: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin())
        .arg("--root")
        .arg(root)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn staged_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".staged"))
                .collect()
        })
        .unwrap_or_default()
}

/// Deploys V1 (through the slow chain), then starts deploying V2 on a thread and returns
/// once V2's verification runs (its staged file exists).
fn deploy_v2_in_flight(s: &Server, root: &Path) -> std::thread::JoinHandle<(u16, Value)> {
    let (status, body) = s.post(
        "/api/v1/dev/hotswap",
        Some(TOKEN),
        json!({"agent_id": "alpha", "code": V1, "file_path": "agents/alpha.py"}),
    );
    assert_eq!(status, 200, "{body}");
    let (addr, http) = (s.addr, s.http.clone());
    let client = std::thread::spawn(move || {
        let mut response = http
            .post(format!("http://{addr}/api/v1/dev/hotswap"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send_json(json!({"agent_id": "alpha", "code": V2, "file_path": "agents/alpha.py"}))
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_json().unwrap_or(Value::Null),
        )
    });
    let dir = root.join("agents");
    let deadline = Instant::now() + Duration::from_secs(30);
    while staged_files(&dir).is_empty() {
        assert!(Instant::now() < deadline, "V2 never reached verification");
        std::thread::sleep(Duration::from_millis(10));
    }
    client
}

#[test]
fn sigterm_during_a_slow_verification_lets_the_deployment_finish_then_exits_0() {
    let root = slow_root(2);
    let mut s = Server::start(root.path(), &[], Some(TOKEN));
    let client = deploy_v2_in_flight(&s, root.path());
    s.signal(libc::SIGTERM);
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(s.exit_code(Duration::from_secs(60)), Some(0));
    assert_eq!(
        std::fs::read_to_string(root.path().join("agents/alpha.py")).unwrap(),
        V2
    );
    let status = cli_json(root.path(), &["status"]);
    assert_eq!(
        status["agents"]["alpha"]["deployment_id"],
        body["deployment_id"]
    );
    assert_eq!(status["agents"]["alpha"]["status"], "LIVE");
    assert!(staged_files(&root.path().join("agents")).is_empty());
}

#[test]
fn a_second_signal_aborts_and_leaves_green_live_and_the_registry_consistent() {
    let root = slow_root(60);
    let mut s = Server::start(root.path(), &[], Some(TOKEN));
    // V1 through a 60 s chain would be slow: deploy it with the CLI, no verification.
    std::fs::create_dir_all(root.path().join("agents")).unwrap();
    std::fs::write(root.path().join("v1.py"), V1).unwrap();
    let out = Command::new(bin())
        .arg("--root")
        .arg(root.path())
        .args([
            "deploy",
            "alpha",
            "--file",
            "agents/alpha.py",
            "--no-verify",
            "--code-file",
        ])
        .arg(root.path().join("v1.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (addr, http) = (s.addr, s.http.clone());
    let _client = std::thread::spawn(move || {
        http.post(format!("http://{addr}/api/v1/dev/hotswap"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send_json(json!({"agent_id": "alpha", "code": V2, "file_path": "agents/alpha.py"}))
    });
    let dir = root.path().join("agents");
    let deadline = Instant::now() + Duration::from_secs(30);
    while staged_files(&dir).is_empty() {
        assert!(Instant::now() < deadline, "V2 never reached verification");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    s.signal(libc::SIGINT);
    // Well before the 60 s verification would end.
    let code = s.exit_code(Duration::from_secs(30));
    assert_eq!(code, Some(4), "aborting is an exit with code 4");
    assert_eq!(std::fs::read_to_string(dir.join("alpha.py")).unwrap(), V1);
    assert!(
        staged_files(&dir).is_empty(),
        "recovery removed the staged file"
    );
    let history = cli_json(root.path(), &["history", "alpha"]);
    assert_eq!(history["deployments"][0]["status"], "ABORTED", "{history}");
    assert_eq!(history["deployments"][1]["status"], "LIVE", "{history}");
}

#[test]
fn without_a_token_the_server_refuses_to_start_unless_insecure_loopback() {
    let root = tempfile::tempdir().unwrap();
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["serve", "--listen", "0.0.0.0:0", "--insecure-loopback"],
    ] {
        let out = Command::new(bin())
            .arg("--root")
            .arg(root.path())
            .args(&args)
            .env_remove("BLUEGREEN_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("BLUEGREEN_TOKEN"), "{stderr}");
        assert!(
            out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("listening")
        );
    }

    let mut open = Server::start(root.path(), &["--insecure-loopback"], None);
    assert_eq!(open.get("/api/v1/agents", None), 200);
    open.signal(libc::SIGINT);
    assert_eq!(open.exit_code(Duration::from_secs(30)), Some(0));
}

#[test]
fn the_token_file_is_the_token_and_hotswap_answers_the_deploy_json() {
    let root = tempfile::tempdir().unwrap();
    let token_file = root.path().join("token");
    std::fs::write(&token_file, "from-a-file-0123456789\n").unwrap();
    let mut s = Server::start(
        root.path(),
        &["--token-file", token_file.to_str().unwrap()],
        Some("the-env-token-is-not-used"),
    );
    assert_eq!(s.get("/healthz", None), 200);
    assert_eq!(s.get("/api/v1/agents", None), 401);
    assert_eq!(
        s.get("/api/v1/agents", Some("the-env-token-is-not-used")),
        401
    );
    assert_eq!(s.get("/api/v1/agents", Some("from-a-file-0123456789")), 200);
    let (status, body) = s.post(
        "/api/v1/dev/hotswap",
        Some("from-a-file-0123456789"),
        json!({"agent_id": "beta", "code": V1, "file_path": "beta.py"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meta"]["status"], "LIVE");
    let (status, body) = s.post(
        "/api/v1/dev/hotswap",
        Some("from-a-file-0123456789"),
        json!({"agent_id": "beta", "code": "def broken(:\n", "file_path": "beta.py"}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        std::fs::read_to_string(root.path().join("beta.py")).unwrap(),
        V1
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.exit_code(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_candidate_cannot_read_the_token_file_over_http() {
    // The service runs as root and the file is 0400 root's: only the sandbox keeps a
    // candidate (imported by a startup check, run by a script) from reading it.
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let secret = tempfile::tempdir().unwrap();
    let token = "token-file-secret-7d41a9c03e5b";
    let token_file = secret.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::write(
        root.path().join("bluegreen.toml"),
        r#"
[verifiers.boot]
kind = "python-startup"

[verifiers.probe]
kind = "script"
command = ["python3", "{staged}"]

[chains]
default = ["syntax", "boot"]

[agents.scripted]
chain = ["syntax", "probe"]
"#,
    )
    .unwrap();
    let path = serde_json::to_string(token_file.to_str().unwrap()).unwrap();
    let candidate = format!(
        "try:\n    got = 'read ' + repr(open({path}).read())\n\
         except OSError as e:\n    got = 'failed: ' + type(e).__name__\n\
         raise RuntimeError('TOKEN FILE ' + got)\n"
    );
    let mut s = Server::start(
        root.path(),
        &["--token-file", token_file.to_str().unwrap()],
        None,
    );
    for agent in ["imported", "scripted"] {
        let (status, body) = s.post(
            "/api/v1/dev/hotswap",
            Some(token),
            json!({"agent_id": agent, "code": candidate, "file_path": format!("{agent}.py")}),
        );
        let text = body.to_string();
        assert_eq!(status, 422, "{agent}: {text}");
        assert!(text.contains("TOKEN FILE read ''"), "{agent}: {text}");
        assert!(!text.contains(token), "{agent}: the token leaked: {text}");
    }
    s.signal(libc::SIGTERM);
    assert_eq!(s.exit_code(Duration::from_secs(30)), Some(0));
}

#[test]
fn with_json_stdout_holds_exactly_one_document() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .arg("--root")
        .arg(root.path())
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .env("BLUEGREEN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The address is announced on stderr only.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on http://") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no announcement");
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    assert_eq!(doc["status"], "stopped");
}
