//! Divergences from CONTRACT.md found by the acceptance audit, each checked from the outside
//! with the real binary and a real HTTP client.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_code, Root};
use serde_json::Value;

const TOKEN: &str = "audit-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(60);

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("bluegreen")
}

fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

fn spawn_watch(root: &Root) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .arg("--root")
        .arg(root.path())
        .args(["--json", "watch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    assert!(err.recv_timeout(WAIT).unwrap().starts_with("watching"));
    let out = lines_of(child.stdout.take().unwrap());
    (child, out)
}

/// The documents up to and including the first of `kind`.
fn until(lines: &mpsc::Receiver<String>, kind: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    loop {
        let line = lines
            .recv_timeout(WAIT)
            .expect("watch printed nothing more");
        let doc: Value = serde_json::from_str(&line).unwrap();
        let done = doc["type"] == kind;
        docs.push(doc);
        if done {
            return docs;
        }
    }
}

/// "`GET /api/v1/events` (Server-Sent Events, the same documents as `watch --json`)": every
/// follower sees one event with one timestamp, however late it looks. Before the fix the
/// finish of a deployment carried the time a follower noticed it, so two followers differed.
#[test]
fn every_follower_sees_the_same_timestamp_for_a_finished_deployment() {
    let root = Root::new();
    let (mut early, early_lines) = spawn_watch(&root);
    let (mut late, late_lines) = spawn_watch(&root);
    signal(&late, libc::SIGSTOP);

    let run = root.run(&[
        "deploy",
        "alpha",
        "--file",
        "alpha.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 0);
    let seen_early = until(&early_lines, "deployed");
    // The late follower only looks after a pause (a slow poll, a busy machine).
    std::thread::sleep(Duration::from_millis(1500));
    signal(&late, libc::SIGCONT);
    let seen_late = until(&late_lines, "deployed");
    assert_eq!(seen_early, seen_late);

    for child in [&mut early, &mut late] {
        signal(child, libc::SIGTERM);
        let _ = child.wait();
    }
}

struct Server {
    child: Child,
    base: String,
    http: ureq::Agent,
}

impl Server {
    fn start(root: &Root) -> Server {
        let mut child = Command::new(bin())
            .arg("--root")
            .arg(root.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("BLUEGREEN_TOKEN", TOKEN)
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
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Server {
            child,
            base: addr,
            http,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "Bodies over the size limit get 413" on every route with a body, the rollback route too:
/// a rollback body larger than the code limit is refused before anything is looked up.
#[test]
fn a_rollback_body_over_the_size_limit_gets_413() {
    let root = Root::new();
    root.write("bluegreen.toml", "max_code_bytes = 1000\n");
    let run = root.run(&[
        "deploy",
        "alpha",
        "--file",
        "alpha.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 0);
    let server = Server::start(&root);
    let body = format!(
        "{{\"file_path\":\"alpha.py\",\"pad\":\"{}\"}}",
        "x".repeat(5000)
    );
    let resp = server
        .http
        .post(format!("{}/api/v1/agents/alpha/rollback", server.base))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .send(body.as_str())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
}

/// "A target that exists must be a regular file (not a directory, FIFO, socket or device)":
/// bad input (exit 2), like a FIFO, not an I/O failure; nothing changes.
#[test]
fn a_socket_target_is_refused_as_bad_input() {
    let root = Root::new();
    let _listener = std::os::unix::net::UnixListener::bind(root.path().join("sock.py")).unwrap();
    let run = root.run(&[
        "deploy",
        "alpha",
        "--file",
        "sock.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 2);
    assert!(run.stderr.contains("socket"), "{}", run.stderr);
    assert!(!root.path().join("backups").exists());
}

/// "agent_id: 1–128 chars of [A-Za-z0-9_.-]" on every route, and "Error bodies carry no
/// absolute paths": an error body with non-ASCII text (an agent id or file path a client
/// sent) is answered 400 with its JSON document. Before the fix the redaction of error
/// bodies panicked on a multi-byte character and the connection closed with no answer.
#[test]
fn errors_with_non_ascii_input_are_answered_400() {
    let root = Root::new();
    let server = Server::start(&root);
    let auth = format!("Bearer {TOKEN}");
    let resp = server
        .http
        .get(format!("{}/api/v1/agents/%C3%A9/history", server.base))
        .header("Authorization", &auth)
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error_kind"], "bad_input");
    assert!(body["error"].as_str().unwrap().contains('é'), "{body}");

    let resp = server
        .http
        .post(format!("{}/api/v1/dev/hotswap", server.base))
        .header("Authorization", &auth)
        .send(r#"{"agent_id":"alpha","code":"x = 1\n","file_path":"/nowhere/ü/a.py"}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert!(
        !body["error"].as_str().unwrap().contains("/nowhere"),
        "{body}"
    );
}
