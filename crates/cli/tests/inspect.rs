//! `bluegreen show` and `diff` with the real binary, and the HTTP code and diff routes of a
//! real `bluegreen serve` with a real client (ureq).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_code, Root};
use serde_json::Value;

const V1: &[u8] = b"x = 1\n";
/// Non-ASCII and no trailing newline.
const V2: &[u8] = "name = \"\u{e9}t\u{e9} \u{1f680}\"\nx = 2".as_bytes();
const V3: &[u8] = b"x = 3\n";
const TOKEN: &str = "inspect-test-token-0123456789";

/// Raw stdout bytes, exit code and stderr of one run.
fn raw(root: &Root, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = root.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Deploys `code` as agent `a` to `a.py` (no verification, so any bytes go); its id.
fn deploy(root: &Root, code: &[u8]) -> String {
    let name = format!("code_{}.bin", uuid_like(code));
    std::fs::write(root.path().join(&name), code).unwrap();
    let run = root.run(&[
        "--json",
        "deploy",
        "a",
        "--file",
        "a.py",
        "--code-file",
        &name,
        "--no-verify",
    ]);
    assert_code(&run, 0);
    run.json()["deployment_id"].as_str().unwrap().to_owned()
}

fn uuid_like(code: &[u8]) -> String {
    bluegreen_core::util::sha256_hex(code)[..16].to_owned()
}

#[test]
fn show_prints_the_exact_bytes_of_live_and_of_earlier_versions() {
    let root = Root::new();
    let d1 = deploy(&root, V1);
    let d2 = deploy(&root, V2);

    let (code, out, _) = raw(&root, &["show", "a"]);
    assert_eq!(
        (code, out.as_slice()),
        (0, V2),
        "LIVE by default, byte-exact"
    );
    let (code, out, _) = raw(&root, &["show", "a", &d2]);
    assert_eq!((code, out.as_slice()), (0, V2));
    let (code, out, _) = raw(&root, &["show", "a", &d1]);
    assert_eq!((code, out.as_slice()), (0, V1), "from the snapshot");

    let doc = root.run(&["--json", "show", "a", &d2]).json();
    assert_eq!(doc["agent_id"], "a");
    assert_eq!(doc["deployment_id"], d2.as_str());
    assert_eq!(doc["sha256"], bluegreen_core::util::sha256_hex(V2));
    assert_eq!(doc["code"].as_str().unwrap().as_bytes(), V2);

    // After a rollback, the rolled-back version is still shown from its snapshot.
    assert_code(&root.run(&["rollback", "a"]), 0);
    let (code, out, _) = raw(&root, &["show", "a"]);
    assert_eq!((code, out.as_slice()), (0, V1));
    let (code, out, _) = raw(&root, &["show", "a", &d2]);
    assert_eq!((code, out.as_slice()), (0, V2));
}

#[test]
fn show_of_bytes_that_are_not_utf8_is_exact_and_base64_in_json() {
    let root = Root::new();
    let latin1: &[u8] = b"# -*- coding: latin-1 -*-\nname = '\xe9'\n\x1b[31m";
    let id = deploy(&root, latin1);
    let (code, out, _) = raw(&root, &["show", "a", &id]);
    assert_eq!(
        (code, out.as_slice()),
        (0, latin1),
        "escape codes pass untouched"
    );
    let doc = root.run(&["--json", "show", "a"]).json();
    assert_eq!(doc["code"], Value::Null);
    assert_eq!(
        doc["code_base64"],
        "IyAtKi0gY29kaW5nOiBsYXRpbi0xIC0qLQpuYW1lID0gJ+knChtbMzFt"
    );
}

#[test]
fn show_refuses_what_it_cannot_show_exactly() {
    let root = Root::new();
    root.write("bluegreen.toml", "keep_backups = 1\n");
    let d1 = deploy(&root, V1);
    deploy(&root, V2);
    deploy(&root, V3); // retention keeps V2's snapshot (a rollback needs it) and prunes V1's
    let (code, out, err) = raw(&root, &["show", "a", &d1]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("pruned") && err.contains(&d1), "{err}");

    // A rejected deployment's bytes were never kept.
    let bad = root.run(&[
        "--json",
        "deploy",
        "a",
        "--file",
        "a.py",
        "--code-file",
        "alpha_broken.py",
    ]);
    assert_code(&bad, 1);
    let failed = bad.json()["deployment_id"].as_str().unwrap().to_owned();
    let (code, _, err) = raw(&root, &["show", "a", &failed]);
    assert_eq!(code, 2);
    assert!(
        err.contains("never kept") && err.contains("FAILED"),
        "{err}"
    );

    let (code, _, err) = raw(&root, &["show", "nobody"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = raw(
        &root,
        &["show", "a", "dep_0190f0a1b2c3d4e5f60718293a4b5c6d"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no deployment"), "{err}");
    let (code, _, _) = raw(&root, &["show", "a", "not-an-id"]);
    assert_eq!(code, 2);

    // A snapshot whose bytes no longer match the registry is refused, never printed.
    let history = root.run(&["--json", "history", "a"]).json();
    let live = &history["deployments"][1]; // V3 (newest is the FAILED one)
    let d2_snapshot = live["backup_path"].as_str().unwrap();
    let d2 = history["deployments"][2]["deployment_id"].as_str().unwrap();
    std::fs::write(root.path().join(d2_snapshot), b"tampered").unwrap();
    let (code, out, err) = raw(&root, &["show", "a", d2]);
    assert_eq!(code, 4, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("sha256"), "{err}");
}

#[test]
fn diff_defaults_to_previous_against_live_and_takes_from_and_to() {
    let root = Root::new();
    let d1 = deploy(&root, V1);
    let d2 = deploy(&root, V2);
    let d3 = deploy(&root, V3);

    let (code, out, err) = raw(&root, &["diff", "a"]);
    assert_eq!(code, 0, "{err}");
    let expected = format!(
        "--- a@{d2}\n+++ a@{d3}\n@@ -1,2 +1 @@\n-name = \"\u{e9}t\u{e9} \u{1f680}\"\n-x = 2\n\\ No newline at end of file\n+x = 3\n"
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);

    let (_, out, _) = raw(&root, &["diff", "a", &d1]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("--- a@{d1}\n+++ a@{d3}\n@@ -1 +1 @@\n-x = 1\n+x = 3\n")
    );
    let (_, out, _) = raw(&root, &["diff", "a", &d1, &d2]);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(&format!("--- a@{d1}\n+++ a@{d2}\n@@ -1 +1,2 @@\n-x = 1\n")),
        "{text}"
    );

    let doc = root.run(&["--json", "diff", "a", &d1]).json();
    assert_eq!(doc["agent_id"], "a");
    assert_eq!(doc["from"], d1.as_str());
    assert_eq!(doc["to"], d3.as_str());
    assert_eq!(
        doc["diff"],
        format!("--- a@{d1}\n+++ a@{d3}\n@@ -1 +1 @@\n-x = 1\n+x = 3\n")
    );

    // The same bytes: an empty diff. The first version: against nothing.
    let (code, out, _) = raw(&root, &["diff", "a", &d3, &d3]);
    assert_eq!((code, out.len()), (0, 0));
    let doc = root.run(&["--json", "diff", "a", &d1, &d1]).json();
    assert_eq!(doc["diff"], "");
    let fresh = Root::new();
    let only = deploy(&fresh, V1);
    let doc = fresh.run(&["--json", "diff", "a"]).json();
    assert_eq!(doc["from"], Value::Null);
    assert_eq!(
        doc["diff"],
        format!("--- /dev/null\n+++ a@{only}\n@@ -0,0 +1 @@\n+x = 1\n")
    );
    let (code, _, _) = raw(
        &root,
        &["diff", "a", "dep_0190f0a1b2c3d4e5f60718293a4b5c6d"],
    );
    assert_eq!(code, 2);
}

#[test]
fn diff_is_colored_only_on_request_and_plain_in_a_pipe_or_with_no_color() {
    let root = Root::new();
    deploy(&root, V1);
    deploy(&root, V3);
    // A pipe, NO_COLOR unset: plain.
    let out = root
        .cmd()
        .env_remove("NO_COLOR")
        .args(["diff", "a"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!out.stdout.contains(&0x1b), "no escape codes in a pipe");
    // NO_COLOR wins even over CLICOLOR_FORCE.
    let out = root
        .cmd()
        .env("CLICOLOR_FORCE", "1")
        .args(["diff", "a"])
        .output()
        .unwrap();
    assert!(!out.stdout.contains(&0x1b), "NO_COLOR means no color");
    // Forced (as a terminal would be): colored, and the same text once the styles go.
    let colored = root
        .cmd()
        .env_remove("NO_COLOR")
        .env("CLICOLOR_FORCE", "1")
        .args(["diff", "a"])
        .output()
        .unwrap();
    let colored = String::from_utf8(colored.stdout).unwrap();
    assert!(colored.contains("\x1b[31m-x = 1"), "{colored:?}");
    assert!(colored.contains("\x1b[32m+x = 3"), "{colored:?}");
    let stripped = regex::Regex::new("\x1b\\[[0-9;]*m")
        .unwrap()
        .replace_all(&colored, "");
    let plain = root.run(&["diff", "a"]).stdout;
    assert_eq!(stripped, plain);
}

struct Server {
    child: Child,
    addr: SocketAddr,
    http: ureq::Agent,
}

impl Server {
    fn start(root: &Path) -> Server {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("bluegreen"))
            .arg("--root")
            .arg(root)
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

    /// Status, content type and body of a GET with the token (or none).
    fn get(&self, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
        let mut req = self.http.get(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = req.call().unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.body_mut().read_to_vec().unwrap();
        (status, content_type, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn http_code_and_diff_routes() {
    let root = Root::new();
    root.write("bluegreen.toml", "keep_backups = 1\n");
    let d1 = deploy(&root, V1);
    let d2 = deploy(&root, V2);
    let d3 = deploy(&root, V3);
    let server = Server::start(root.path());
    let code = |id: &str| format!("/api/v1/agents/a/deployments/{id}/code");

    let (status, content_type, body) = server.get(&code(&d2), Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(body, V2);
    let (status, _, body) = server.get(&code(&d3), Some(TOKEN));
    assert_eq!((status, body.as_slice()), (200, V3));

    assert_eq!(server.get(&code(&d2), None).0, 401);
    assert_eq!(server.get(&code(&d2), Some("wrong-token")).0, 401);
    assert_eq!(
        server.get("/api/v1/agents/a/diff", Some("wrong-token")).0,
        401
    );
    let (status, _, body) = server.get(&code(&d1), Some(TOKEN));
    assert_eq!(status, 410, "pruned");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error_kind"], "pruned");
    assert_eq!(
        server
            .get(&code("dep_0190f0a1b2c3d4e5f60718293a4b5c6d"), Some(TOKEN))
            .0,
        404
    );
    assert_eq!(
        server
            .get("/api/v1/agents/nobody/deployments/x/code", Some(TOKEN))
            .0,
        404
    );

    let (status, content_type, body) = server.get("/api/v1/agents/a/diff", Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["from"], d2.as_str());
    assert_eq!(doc["to"], d3.as_str());
    assert!(doc["diff"].as_str().unwrap().contains("+x = 3\n"));
    let (status, _, body) = server.get(
        &format!("/api/v1/agents/a/diff?from={d3}&to={d2}"),
        Some(TOKEN),
    );
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["from"], d3.as_str());
    assert_eq!(doc["to"], d2.as_str());
    assert!(doc["diff"]
        .as_str()
        .unwrap()
        .starts_with(&format!("--- a@{d3}\n+++ a@{d2}\n@@ -1 +1,2 @@\n-x = 3\n")));
    let (status, _, _) = server.get(&format!("/api/v1/agents/a/diff?from={d1}"), Some(TOKEN));
    assert_eq!(status, 410);
    assert_eq!(server.get("/api/v1/agents/nobody/diff", Some(TOKEN)).0, 404);
}
