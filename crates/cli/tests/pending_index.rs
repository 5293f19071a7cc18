//! The pending index through the binary: a real SIGKILL (`BLUEGREEN_FAULT`) at every
//! deployment fault point leaves `.bluegreen/pending/alpha`, and the next command — another
//! agent's deploy, or `status` — recovers alpha from it.

mod common;

use common::{assert_code, Root};

const POINTS: [&str; 7] = [
    "after_begin",
    "after_backup",
    "after_stage",
    "during_verify",
    "after_rename",
    "after_record",
    "during_prune",
];

#[test]
fn a_sigkill_at_every_point_leaves_a_marker_the_next_command_recovers() {
    for (i, point) in POINTS.into_iter().enumerate() {
        let root = Root::new();
        root.write("bluegreen.toml", "keep_backups = 1\n");
        assert_code(&root.deploy("alpha_v1.py"), 0);
        assert_code(&root.deploy("alpha_v2.py"), 0);
        let marker = root.path().join(".bluegreen/pending/alpha");
        assert!(
            !marker.exists(),
            "{point}: a finished deploy leaves no marker"
        );
        let crashed = common::run_cmd(root.cmd().env("BLUEGREEN_FAULT", point).args([
            "deploy",
            "alpha",
            "--file",
            "agents/alpha.py",
            "--code-file",
            "alpha_v1.py",
            "--no-verify",
        ]));
        assert_ne!(crashed.code, 0, "{point}: {crashed:?}");
        assert!(marker.exists(), "{point}: no marker after the crash");

        let run = if i % 2 == 0 {
            root.run(&[
                "deploy",
                "beta",
                "--file",
                "agents/beta.py",
                "--code-file",
                "alpha_v1.py",
            ])
        } else {
            root.run(&["status"])
        };
        assert_code(&run, 0);
        let history = root.run(&["--json", "history", "alpha"]).json();
        let last = &history["deployments"][0];
        let expected = match point {
            "after_rename" | "after_record" | "during_prune" => "LIVE",
            _ => "ABORTED",
        };
        assert_eq!(last["status"], expected, "{point}: {history}");
        let explicit = root.run(&["--json", "recover"]);
        assert_code(&explicit, 0);
        assert_eq!(
            explicit.json(),
            serde_json::json!({"recovered": [], "busy": []}),
            "{point}: the implicit recovery left work"
        );
        assert!(!root.path().join(".bluegreen/pending/beta").exists());
    }
}
