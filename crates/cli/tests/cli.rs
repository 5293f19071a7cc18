//! The real `bluegreen` binary, command by command: exit codes, bytes on disk, and
//! snapshots of the human and `--json` output.

mod common;

use common::{assert_code, Root};
use insta::{assert_json_snapshot, assert_snapshot};

#[test]
fn deploy_on_the_embedded_default_goes_live() {
    let root = Root::new();
    let run = root.deploy("alpha_v1.py");
    assert_code(&run, 0);
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));
    root.settings()
        .bind(|| assert_snapshot!("deploy_human", run.stdout));
    // Nothing but logs on stderr, and with the default level there are none.
    assert_eq!(run.stderr, "");
}

#[test]
fn deploy_json_is_the_contract_document() {
    let root = Root::new();
    assert_code(&root.deploy("alpha_v1.py"), 0);
    let run = root.run(&[
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v2.py",
    ]);
    assert_code(&run, 0);
    let doc = run.json();
    assert_eq!(doc["status"], "success");
    assert_eq!(doc["meta"]["status"], "LIVE");
    let backup = doc["meta"]["backup_path"].as_str().unwrap();
    assert_eq!(
        root.read(backup),
        root.read("alpha_v1.py"),
        "the snapshot holds GREEN"
    );
    root.settings()
        .bind(|| assert_json_snapshot!("deploy_json", root.redact_json(&doc)));
}

#[test]
fn rejected_deploy_exits_1_with_a_compiler_style_diagnostic() {
    let root = Root::new();
    assert_code(&root.deploy("alpha_v1.py"), 0);
    let run = root.deploy("alpha_broken.py");
    assert_code(&run, 1);
    assert_eq!(
        root.read("agents/alpha.py"),
        root.read("alpha_v1.py"),
        "GREEN untouched"
    );
    assert!(run.stdout.contains("agents/alpha.py:6:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("def process_event(event)\n"),
        "source line shown"
    );
    root.settings()
        .bind(|| assert_snapshot!("deploy_rejected_human", run.stdout));

    let run = root.run(&[
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_broken.py",
    ]);
    assert_code(&run, 1);
    let doc = run.json();
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["meta"]["status"], "FAILED");
    assert_eq!(doc["verification"][0]["diagnostics"][0]["line"], 6);
    root.settings()
        .bind(|| assert_json_snapshot!("deploy_rejected_json", root.redact_json(&doc)));
}

#[test]
fn quiet_drops_stage_lines_but_keeps_the_diagnostic_and_result() {
    let root = Root::new();
    let run = root.run(&[
        "-q",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_broken.py",
    ]);
    assert_code(&run, 1);
    assert!(!run.stdout.contains("backup"), "{}", run.stdout);
    assert!(run.stdout.contains("agents/alpha.py:6:"), "{}", run.stdout);
    assert!(run.stdout.contains("rejected alpha"), "{}", run.stdout);
}

#[test]
fn verbose_logs_go_to_stderr_only() {
    let root = Root::new();
    let run = root.run(&[
        "-vv",
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 0);
    run.json(); // stdout is still exactly one document
    assert!(run.stderr.contains("DEBUG"), "{}", run.stderr);
}

#[test]
fn code_from_stdin() {
    let root = Root::new();
    let run = common::run_cmd(
        root.cmd()
            .args([
                "deploy",
                "alpha",
                "--file",
                "agents/alpha.py",
                "--code-file",
                "-",
            ])
            .write_stdin(root.read("alpha_v2.py")),
    );
    assert_code(&run, 0);
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v2.py"));
}

#[test]
fn no_verify_and_verifier_override() {
    let root = Root::new();
    // --no-verify skips the syntax check entirely.
    let run = root.run(&[
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_broken.py",
        "--no-verify",
    ]);
    assert_code(&run, 0);
    assert_eq!(run.json()["verification"], serde_json::json!([]));
    // --verifier names the chain for one call; an unknown name is bad input.
    let run = root.run(&[
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v1.py",
        "--verifier",
        "lint",
    ]);
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("unknown verifier \"lint\""),
        "{}",
        run.stderr
    );
    assert_eq!(
        root.read("agents/alpha.py"),
        root.read("alpha_broken.py"),
        "nothing changed"
    );
}

#[test]
fn status_history_and_rollback() {
    let root = Root::new();
    assert_code(&root.deploy("alpha_v1.py"), 0);
    assert_code(&root.deploy("alpha_v2.py"), 0);
    assert_code(&root.deploy("alpha_broken.py"), 1);

    let status = root.run(&["status"]);
    assert_code(&status, 0);
    root.settings()
        .bind(|| assert_snapshot!("status_human", status.stdout));
    let status = root.run(&["--json", "status"]);
    assert_code(&status, 0);
    let doc = status.json();
    assert_eq!(doc["agents"]["alpha"]["file_path"], "agents/alpha.py");
    root.settings()
        .bind(|| assert_json_snapshot!("status_json", root.redact_json(&doc)));

    let history = root.run(&["history", "alpha"]);
    assert_code(&history, 0);
    root.settings()
        .bind(|| assert_snapshot!("history_human", history.stdout));
    let history = root.run(&["--json", "history", "alpha"]);
    let doc = history.json();
    let statuses: Vec<_> = doc["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].clone())
        .collect();
    assert_eq!(statuses, ["FAILED", "LIVE", "SUPERSEDED"], "newest first");
    root.settings()
        .bind(|| assert_json_snapshot!("history_json", root.redact_json(&doc)));

    let rollback = root.run(&["rollback", "alpha"]);
    assert_code(&rollback, 0);
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));
    root.settings()
        .bind(|| assert_snapshot!("rollback_human", rollback.stdout));

    // The first version has nothing before it: a conflict, nothing changes.
    let again = root.run(&["--json", "rollback", "alpha"]);
    assert_code(&again, 3);
    root.settings()
        .bind(|| assert_json_snapshot!("rollback_nothing_json", root.redact_json(&again.json())));
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));
}

#[test]
fn rollback_json_and_to() {
    let root = Root::new();
    let v1 = root
        .run(&[
            "--json",
            "deploy",
            "alpha",
            "--file",
            "agents/alpha.py",
            "--code-file",
            "alpha_v1.py",
        ])
        .json();
    assert_code(&root.deploy("alpha_v2.py"), 0);
    assert_code(&root.deploy("alpha_v1.py"), 0);
    let v1_id = v1["deployment_id"].as_str().unwrap();
    // Back to v2 (the previous one), as JSON.
    let run = root.run(&["--json", "rollback", "alpha", "--file", "agents/alpha.py"]);
    assert_code(&run, 0);
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v2.py"));
    root.settings()
        .bind(|| assert_json_snapshot!("rollback_json", root.redact_json(&run.json())));
    // --to a named deployment.
    let run = root.run(&["--json", "rollback", "alpha", "--to", v1_id]);
    assert_code(&run, 0);
    assert_eq!(run.json()["deployment_id"], v1_id);
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));
}

#[test]
fn status_of_one_agent_and_of_an_empty_root() {
    let root = Root::new();
    let run = root.run(&["--json", "status"]);
    assert_code(&run, 0);
    assert_eq!(run.json(), serde_json::json!({"agents": {}}));
    let run = root.run(&["status"]);
    assert_eq!(run.stdout, "no live agents\n");
    // Reading the registry of a fresh root writes nothing.
    assert!(!root.path().join(".bluegreen").exists());

    assert_code(&root.deploy("alpha_v1.py"), 0);
    let run = root.run(&["--json", "status", "alpha"]);
    assert_code(&run, 0);
    assert_eq!(run.json()["agents"].as_object().unwrap().len(), 1);
}

#[test]
fn verify_any_file() {
    let root = Root::new();
    let pass = root.run(&["verify", "alpha_v1.py"]);
    assert_code(&pass, 0);
    root.settings()
        .bind(|| assert_snapshot!("verify_pass_human", pass.stdout));

    let fail = root.run(&["verify", "alpha_broken.py"]);
    assert_code(&fail, 1);
    root.settings()
        .bind(|| assert_snapshot!("verify_fail_human", fail.stdout));

    let fail = root.run(&["--json", "verify", "alpha_broken.py"]);
    assert_code(&fail, 1);
    root.settings()
        .bind(|| assert_json_snapshot!("verify_fail_json", root.redact_json(&fail.json())));

    let missing = root.run(&["--json", "verify", "nope.py"]);
    assert_code(&missing, 2);
    assert_eq!(missing.json()["error_kind"], "bad_input");
    // A dry run: no state, no deployment.
    assert!(!root.path().join(".bluegreen").exists());
    assert!(!root.path().join("backups").exists());
}

#[test]
fn recover_finishes_an_interrupted_deployment() {
    let root = Root::new();
    assert_code(&root.deploy("alpha_v1.py"), 0);
    // The process kills itself after staging BLUE: a crash mid-deployment.
    let crashed = common::run_cmd(root.cmd().env("BLUEGREEN_FAULT", "after_stage").args([
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v2.py",
    ]));
    assert_ne!(crashed.code, 0);
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));

    let run = root.run(&["recover"]);
    assert_code(&run, 0);
    root.settings()
        .bind(|| assert_snapshot!("recover_human", run.stdout));
    let history = root.run(&["--json", "history", "alpha"]).json();
    assert_eq!(history["deployments"][0]["status"], "ABORTED");
    // No staged leftovers beside the target.
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("agents"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["alpha.py"]);

    let run = root.run(&["--json", "recover"]);
    assert_code(&run, 0);
    assert_eq!(run.json(), serde_json::json!({"recovered": [], "busy": []}));
}

#[test]
fn every_command_recovers_first() {
    let root = Root::new();
    assert_code(&root.deploy("alpha_v1.py"), 0);
    let crashed = common::run_cmd(root.cmd().env("BLUEGREEN_FAULT", "after_stage").args([
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_v2.py",
    ]));
    assert_ne!(crashed.code, 0);
    // `status` repairs the registry before it answers.
    let run = root.run(&["status"]);
    assert_code(&run, 0);
    let history = root.run(&["--json", "history", "alpha"]).json();
    assert_eq!(history["deployments"][0]["status"], "ABORTED");
}

#[test]
fn completions_for_every_shell() {
    let root = Root::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = root.run(&["completions", shell]);
        assert_code(&run, 0);
        assert!(run.stdout.contains("bluegreen"), "{shell}");
        assert!(run.stdout.contains("rollback"), "{shell}");
    }
    assert_code(&root.run(&["completions", "tcsh"]), 2);
}

#[test]
fn help_for_every_command_has_an_example() {
    let root = Root::new();
    let run = root.run(&["--help"]);
    assert_code(&run, 0);
    root.settings()
        .bind(|| assert_snapshot!("help", run.stdout));
    for command in [
        "deploy",
        "rollback",
        "status",
        "history",
        "verify",
        "recover",
        "serve",
        "completions",
    ] {
        let run = root.run(&[command, "--help"]);
        assert_code(&run, 0);
        assert!(
            run.stdout.contains(&format!("bluegreen {command}")),
            "{command}: {}",
            run.stdout
        );
        assert!(run.stdout.contains("Example"), "{command}");
    }
    let run = root.run(&["deploy", "--help"]);
    root.settings()
        .bind(|| assert_snapshot!("deploy_help", run.stdout));
}

#[test]
fn colour_only_when_forced_and_never_with_no_color() {
    let root = Root::new();
    assert_code(&root.deploy("alpha_v1.py"), 0);
    // Piped output has no escape codes by default (the helper sets NO_COLOR; drop it here).
    let run = common::run_cmd(root.cmd().env_remove("NO_COLOR").args(["status"]));
    assert!(!run.stdout.contains('\x1b'));
    let run = common::run_cmd(
        root.cmd()
            .env_remove("NO_COLOR")
            .env("CLICOLOR_FORCE", "1")
            .args(["status"]),
    );
    assert!(run.stdout.contains('\x1b'), "CLICOLOR_FORCE forces colour");
    let run = common::run_cmd(
        root.cmd()
            .env("NO_COLOR", "1")
            .env("CLICOLOR_FORCE", "1")
            .args(["status"]),
    );
    assert!(!run.stdout.contains('\x1b'), "NO_COLOR wins");
}

#[test]
fn root_flag_and_config_flag() {
    let root = Root::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let run = common::run_cmd(root.cmd().current_dir(elsewhere.path()).args([
        "--root",
        root.path().to_str().unwrap(),
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        root.path().join("alpha_v1.py").to_str().unwrap(),
    ]));
    assert_code(&run, 0);
    assert_eq!(root.read("agents/alpha.py"), root.read("alpha_v1.py"));
    // A config elsewhere, named with --config; a missing one is bad input.
    let config = elsewhere.path().join("ci.toml");
    std::fs::write(&config, "[chains]\ndefault = []\n").unwrap();
    let run = root.run(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "deploy",
        "alpha",
        "--code-file",
        "alpha_broken.py",
        "--file",
        "agents/alpha.py",
    ]);
    assert_code(&run, 0);
    let run = root.run(&["--config", "missing.toml", "status"]);
    assert_code(&run, 2);
    assert!(run.stderr.contains("missing.toml"), "{}", run.stderr);
}
