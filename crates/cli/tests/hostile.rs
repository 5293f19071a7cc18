//! Issue 14: the root is hostile. Each test plants what a hostile root holds (hand-edited
//! registry lines, symlinks, FIFOs, hard links) and runs the real binary as the service
//! would, then asserts that nothing outside the root changed, exit codes and error text.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{assert_code, Root, Run};

const V1: &str = "VALUE = 1\n";
const V2: &str = "VALUE = 2\n";
const V3: &str = "VALUE = 3\n";

fn deploy(root: &Root, agent: &str, file: &str, code: &str) -> Run {
    root.write("code.py", code);
    let mut cmd = root.cmd();
    cmd.args(["deploy", agent, "--file", file, "--code-file", "code.py"])
        // A deployment that blocks (a FIFO target) must fail this test, not hang it.
        .timeout(Duration::from_secs(60));
    common::run_cmd(&mut cmd)
}

fn log_path(root: &Root, agent: &str) -> std::path::PathBuf {
    root.path()
        .join(format!(".bluegreen/agents/{agent}/events.jsonl"))
}

fn append_line(path: &Path, line: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(file, "{line}").unwrap();
}

/// No absolute path of the root or of the outside directory appears in `text`.
#[track_caller]
fn assert_no_abs(text: &str, paths: &[&Path]) {
    for p in paths {
        let p = p.display().to_string();
        assert!(!text.contains(&p), "absolute path {p} in:\n{text}");
    }
}

#[test]
fn finding_1_a_hand_edited_staged_path_outside_the_root_is_never_deleted() {
    let root = Root::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"outside, must stay\n").unwrap();
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V1), 0);
    assert_code(&deploy(&root, "beta", "agents/beta.py", V1), 0);
    let begin = serde_json::json!({"e": {
        "event": "begin",
        "deployment_id": "dep_019a0000000070008000000000000001",
        "timestamp": "2026-01-01T00:00:00Z",
        "file_path": "agents/alpha.py",
        "staged_path": victim.display().to_string(),
        "sha256": "0".repeat(64),
        "green_sha256": null,
        "backup_path": null,
        "previous": null,
    }, "live": null});
    append_line(&log_path(&root, "alpha"), &begin.to_string());

    let run = root.run(&["status"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"outside, must stay\n");
    assert_code(&run, 4);
    assert!(run.stderr.contains("alpha"), "{}", run.stderr);
    assert!(run.stdout.contains("beta"), "{}", run.stdout);
    assert_no_abs(&run.stderr, &[root.path(), outside.path()]);
    // The other agent keeps working; the broken one stays refused until repaired.
    assert_code(&deploy(&root, "beta", "agents/beta.py", V2), 0);
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V2), 4);
    assert_eq!(std::fs::read(&victim).unwrap(), b"outside, must stay\n");
    assert_eq!(root.read("agents/alpha.py"), V1.as_bytes());
}

#[test]
fn finding_2_a_symlinked_agent_directory_is_not_followed() {
    let root = Root::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(".bluegreen/agents")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join(".bluegreen/agents/alpha"))
        .unwrap();
    let run = deploy(&root, "alpha", "agents/alpha.py", V1);
    assert_ne!(run.code, 0, "{run:?}");
    assert_no_abs(&run.stderr, &[outside.path()]);
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "files were created outside the root"
    );
    assert!(!root.path().join("agents/alpha.py").exists());
    // Another agent is not affected.
    assert_code(&deploy(&root, "beta", "agents/beta.py", V1), 0);
}

#[test]
fn finding_2_symlinked_log_and_lock_are_not_followed() {
    let root = Root::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    // A torn last line: the repair would truncate the file it reaches.
    std::fs::write(&victim, b"line one\ntorn").unwrap();
    let lock_victim = outside.path().join("lock-victim");
    std::fs::write(&lock_victim, b"keep\n").unwrap();
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V1), 0);
    let log = log_path(&root, "alpha");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    std::fs::create_dir_all(root.path().join(".bluegreen/agents/gamma")).unwrap();
    std::os::unix::fs::symlink(
        &lock_victim,
        root.path().join(".bluegreen/agents/gamma/lock"),
    )
    .unwrap();

    let run = deploy(&root, "alpha", "agents/alpha.py", V2);
    assert_ne!(run.code, 0, "{run:?}");
    let run = deploy(&root, "gamma", "agents/gamma.py", V2);
    assert_ne!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"line one\ntorn");
    assert_eq!(std::fs::read(&lock_victim).unwrap(), b"keep\n");
    assert_eq!(root.read("agents/alpha.py"), V1.as_bytes());
    assert!(!root.path().join("agents/gamma.py").exists());
    assert_code(&deploy(&root, "beta", "agents/beta.py", V1), 0);
}

#[test]
fn finding_2_a_trash_symlinked_inside_the_root_deletes_no_live_file() {
    let root = Root::new();
    root.write("bluegreen.toml", "keep_backups = 1\n");
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V1), 0);
    std::fs::create_dir_all(root.path().join(".bluegreen")).unwrap();
    let _ = std::fs::remove_dir_all(root.path().join(".bluegreen/trash"));
    std::os::unix::fs::symlink("agents/alpha", root.path().join(".bluegreen/trash")).unwrap();
    // Three deployments with keep_backups = 1: the third prunes a snapshot through the trash.
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V2), 0);
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V3), 0);
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V1), 0);
    assert!(
        log_path(&root, "alpha").is_file(),
        "the live log was deleted"
    );
    let run = root.run(&["--json", "history", "alpha"]);
    assert_code(&run, 0);
    assert_eq!(run.json()["deployments"].as_array().unwrap().len(), 4);
    assert_code(&root.run(&["rollback", "alpha"]), 0);
    assert_eq!(root.read("agents/alpha.py"), V3.as_bytes());
}

#[test]
fn finding_3_the_config_file_is_a_reserved_target_by_path_and_by_inode() {
    let root = Root::new();
    // TOML that is also valid Python.
    let config = "keep_backups = 5\n";
    root.write("bluegreen.toml", config);
    let evil = "keep_backups = 1\n";
    for file in ["bluegreen.toml", "./x/../bluegreen.toml"] {
        let run = deploy(&root, "alpha", file, evil);
        assert_code(&run, 2);
        assert!(run.stderr.contains("reserved"), "{}", run.stderr);
    }
    // Another name for the same inode.
    std::fs::hard_link(
        root.path().join("bluegreen.toml"),
        root.path().join("cfg.py"),
    )
    .unwrap();
    let run = deploy(&root, "alpha", "cfg.py", evil);
    assert_code(&run, 2);
    // An explicit --config elsewhere in the root is reserved too.
    root.write("conf/other.toml", config);
    let mut cmd = root.cmd();
    root.write("code.py", evil);
    cmd.args([
        "--config",
        "conf/other.toml",
        "deploy",
        "alpha",
        "--file",
        "conf/other.toml",
        "--code-file",
        "code.py",
    ]);
    assert_code(&common::run_cmd(&mut cmd), 2);
    assert_eq!(root.read("bluegreen.toml"), config.as_bytes());
    assert_eq!(root.read("conf/other.toml"), config.as_bytes());
    assert!(!root
        .path()
        .join(".bluegreen/agents/alpha/events.jsonl")
        .exists());
}

#[test]
fn finding_9_a_fifo_target_is_refused_without_blocking() {
    let root = Root::new();
    std::fs::create_dir(root.path().join("agents")).unwrap();
    let fifo = root.path().join("agents/alpha.py");
    rustix_mkfifo(&fifo);
    let run = deploy(&root, "alpha", "agents/alpha.py", V1);
    assert_code(&run, 2);
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo_like());
    // A directory at the target: refused the same way.
    std::fs::create_dir_all(root.path().join("agents/dir.py")).unwrap();
    assert_code(&deploy(&root, "delta", "agents/dir.py", V1), 2);
}

#[test]
fn finding_9_an_oversized_green_is_refused_before_it_is_read() {
    let root = Root::new();
    root.write("bluegreen.toml", "max_code_bytes = 1024\n");
    let big = "#".repeat(4096) + "\n";
    root.write("agents/alpha.py", &big);
    let run = deploy(&root, "alpha", "agents/alpha.py", V1);
    assert_code(&run, 2);
    assert!(run.stderr.contains("max_code_bytes"), "{}", run.stderr);
    assert_eq!(root.read("agents/alpha.py"), big.as_bytes());
    assert!(!root.path().join("backups").exists());
}

#[test]
fn finding_10_a_corrupt_log_breaks_only_its_agent() {
    let root = Root::new();
    assert_code(&deploy(&root, "alpha", "agents/alpha.py", V1), 0);
    assert_code(&deploy(&root, "beta", "agents/beta.py", V1), 0);
    // A complete line (not a torn append) that is not an event.
    append_line(&log_path(&root, "alpha"), "{not json");

    let run = root.run(&["status"]);
    assert_code(&run, 4);
    assert!(run.stdout.contains("beta"), "{}", run.stdout);
    assert!(
        run.stderr.contains("alpha") && run.stderr.contains("line 3"),
        "{}",
        run.stderr
    );
    assert_no_abs(&run.stderr, &[root.path()]);
    let run = root.run(&["--json", "status"]);
    assert_code(&run, 4);
    let json = run.json();
    assert!(json["agents"]["beta"].is_object(), "{json}");
    assert!(json["errors"]["alpha"].as_str().unwrap().contains("line 3"));

    assert_code(&deploy(&root, "beta", "agents/beta.py", V2), 0);
    assert_eq!(root.read("agents/beta.py"), V2.as_bytes());
    assert_code(&root.run(&["rollback", "beta"]), 0);
    let run = deploy(&root, "alpha", "agents/alpha.py", V2);
    assert_code(&run, 4);
    assert!(run.stderr.contains("alpha") && run.stderr.contains("line 3"));
    assert_no_abs(&run.stderr, &[root.path()]);
    assert_code(&root.run(&["recover"]), 4);
    assert_code(&root.run(&["history", "beta"]), 0);
    assert_eq!(root.read("agents/alpha.py"), V1.as_bytes());
}

trait FileTypeExt {
    fn is_fifo_like(&self) -> bool;
}

impl FileTypeExt for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

fn rustix_mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn finding_3_over_http_the_config_and_token_files_are_reserved() {
    use std::io::{BufRead, BufReader};
    let root = Root::new();
    let config = "keep_backups = 5\n";
    root.write("bluegreen.toml", config);
    let token = "hostile-test-token-0123456789abcdef";
    root.write("secrets/token", token);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("bluegreen"))
        .arg("--root")
        .arg(root.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "secrets/token",
        ])
        .current_dir(root.path())
        .env_remove("BLUEGREEN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut answers = Vec::new();
    for file in [
        "bluegreen.toml",
        "secrets/token",
        "./secrets/../bluegreen.toml",
    ] {
        let body = serde_json::json!({"agent_id": "alpha", "code": "keep_backups = 1\n", "file_path": file});
        let mut response = http
            .post(format!("http://{addr}/api/v1/dev/hotswap"))
            .header("Authorization", format!("Bearer {token}"))
            .send(body.to_string().as_bytes())
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        answers.push((file, response.status().as_u16(), text));
    }
    let _ = child.kill();
    let _ = child.wait();
    for (file, status, text) in answers {
        assert_eq!(status, 400, "{file}: {text}");
        assert!(text.contains("reserved"), "{file}: {text}");
    }
    assert_eq!(root.read("bluegreen.toml"), config.as_bytes());
    assert_eq!(root.read("secrets/token"), token.as_bytes());
}
