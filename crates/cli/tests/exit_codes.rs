//! One test per exit code of CONTRACT.md, each from a real situation, human and `--json`.

mod common;

use common::{assert_code, Root};
use insta::assert_json_snapshot;

#[test]
fn exit_0_success() {
    let root = Root::new();
    let run = root.deploy("alpha_v1.py");
    assert_code(&run, 0);
    assert!(run.stdout.contains("deployed alpha dep_"));
}

#[test]
fn exit_1_rejected() {
    let root = Root::new();
    let run = root.deploy("alpha_broken.py");
    assert_code(&run, 1);
    assert!(
        !root.path().join("agents/alpha.py").exists(),
        "nothing went live"
    );
}

#[test]
fn exit_1_rejected_by_a_startup_check_from_the_config() {
    let root = Root::with_config();
    let run = root.run(&[
        "--json",
        "deploy",
        "trading_agent_alpha",
        "--code-file",
        "alpha_crashes.py",
    ]);
    assert_code(&run, 1);
    let doc = run.json();
    let startup = &doc["verification"][1];
    assert_eq!(startup["verifier"], "startup");
    assert_eq!(startup["diagnostics"][0]["line"], 4, "{doc}");
}

#[test]
fn exit_2_bad_input() {
    let root = Root::new();
    // Invalid agent id.
    let run = root.run(&[
        "--json",
        "deploy",
        "../etc",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 2);
    root.settings()
        .bind(|| assert_json_snapshot!("exit_2_invalid_agent_json", root.redact_json(&run.json())));
    assert!(
        run.stderr.starts_with("error: invalid agent id"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one-line error: {}",
        run.stderr
    );
    // Missing code file: one line, nothing written.
    let run = root.run(&[
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "nope.py",
    ]);
    assert_code(&run, 2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("nope.py"));
    // A path escaping the root.
    let run = root.run(&[
        "deploy",
        "alpha",
        "--file",
        "../outside.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 2);
    // --file missing with no config for the agent.
    let run = root.run(&["deploy", "alpha", "--code-file", "alpha_v1.py"]);
    assert_code(&run, 2);
    assert!(run.stderr.contains("--file is required"), "{}", run.stderr);
    // Unknown agents.
    for args in [
        &["history", "ghost"][..],
        &["status", "ghost"],
        &["rollback", "ghost"],
    ] {
        let run = root.run(args);
        assert_code(&run, 2);
        assert!(
            run.stderr.contains("unknown agent \"ghost\""),
            "{args:?}: {}",
            run.stderr
        );
    }
    // Code over the configured size limit.
    let small = Root::new();
    small.write("bluegreen.toml", "max_code_bytes = 64\n");
    let run = small.run(&[
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 2);
    assert!(run.stderr.contains("max_code_bytes"), "{}", run.stderr);
    assert!(!small.path().join("agents").exists());
    // A root that does not exist.
    assert_code(&root.run(&["--root", "no/such/dir", "status"]), 2);
    assert!(!root.path().join(".bluegreen").exists());
    assert!(!root.path().join("agents").exists());
}

#[test]
fn exit_2_usage_errors_from_clap() {
    let root = Root::new();
    let run = root.run(&["deploy", "alpha"]);
    assert_code(&run, 2);
    assert!(run.stderr.contains("--code-file"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_code(&root.run(&["frobnicate"]), 2);
    assert_code(&root.run(&[]), 2);
    // With --json, the usage error is also one JSON document on stdout.
    let run = root.run(&["--json", "deploy"]);
    assert_code(&run, 2);
    assert_eq!(run.json()["error_kind"], "bad_input");
    assert_eq!(run.json()["exit_code"], 2);
    let run = root.run(&["--json"]);
    assert_code(&run, 2);
    assert_eq!(run.json()["error_kind"], "bad_input");
}

#[test]
fn exit_2_config_file_and_agent_file_disagree() {
    let root = Root::with_config();
    let run = root.run(&[
        "deploy",
        "trading_agent_alpha",
        "--file",
        "agents/other.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 2);
    assert!(run.stderr.contains("differs"), "{}", run.stderr);
    // The same path, spelled differently, is fine.
    let run = root.run(&[
        "deploy",
        "trading_agent_alpha",
        "--file",
        "./agents/trading_agent_alpha.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 0);
}

#[test]
fn exit_3_conflicts() {
    let root = Root::new();
    assert_code(&root.deploy("alpha_v1.py"), 0);
    // Nothing before the first version.
    let run = root.run(&["rollback", "alpha"]);
    assert_code(&run, 3);
    assert!(
        run.stderr.contains("nothing to roll back"),
        "{}",
        run.stderr
    );
    // The agent is bound to another path.
    let run = root.run(&[
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/other.py",
        "--code-file",
        "alpha_v2.py",
    ]);
    assert_code(&run, 3);
    root.settings()
        .bind(|| assert_json_snapshot!("exit_3_bound_json", root.redact_json(&run.json())));
    assert!(!root.path().join("agents/other.py").exists());
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));
}

#[test]
fn exit_3_lock_wait_times_out() {
    let root = Root::new();
    root.write("bluegreen.toml", "lock_timeout = \"200ms\"\n");
    assert_code(&root.deploy("alpha_v1.py"), 0);
    // Another process holds the agent's lock (flock on its lock file) for a while.
    let lock = root.path().join(".bluegreen/agents/alpha/lock");
    assert!(lock.exists());
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // Wait until the lock is really taken.
    let started = std::time::Instant::now();
    loop {
        let probe = std::process::Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap();
        if !probe.success() || started.elapsed().as_secs() > 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = root.run(&[
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v2.py",
    ]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_code(&run, 3);
    assert!(
        run.json()["error"].as_str().unwrap().contains("lock"),
        "{}",
        run.stdout
    );
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));
}

#[test]
fn exit_4_io_failure() {
    let root = Root::new();
    // The state directory cannot hold agents: its `agents` is a regular file.
    root.write(".bluegreen/agents", "not a directory");
    let run = root.run(&[
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 4);
    let doc = run.json();
    assert_eq!(doc["error_kind"], "io");
    assert_eq!(doc["exit_code"], 4);
    assert!(!root.path().join("agents/alpha.py").exists());
    assert_code(&root.run(&["status"]), 4);
}
