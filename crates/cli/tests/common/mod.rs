//! Shared by the CLI tests: a temp root, the real binary, redacted snapshots.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A scratch root for one test.
pub struct Root {
    dir: PathBuf,
    /// Removes the directory when the test ends.
    _cleanup: Option<tempfile::TempDir>,
}

/// One run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as the one JSON document it must be.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

pub fn fixtures() -> PathBuf {
    bluegreen_tests::workspace_root().join("fixtures/cli")
}

impl Root {
    /// An empty root holding the tour's code files (no config: the embedded default).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "alpha_v1.py",
            "alpha_v2.py",
            "alpha_broken.py",
            "alpha_crashes.py",
            "alpha_wrong_answer.py",
            "typo.toml",
        ] {
            std::fs::copy(fixtures().join(name), dir.path().join(name)).unwrap();
        }
        Self {
            dir: dir.path().to_path_buf(),
            _cleanup: Some(dir),
        }
    }

    /// A root at an existing directory (whose owner cleans it up).
    pub fn at(dir: PathBuf) -> Self {
        Self {
            dir,
            _cleanup: None,
        }
    }

    /// [`Root::new`] plus the tour's `bluegreen.toml` and its script check.
    pub fn with_config() -> Self {
        let root = Self::new();
        std::fs::copy(
            fixtures().join("bluegreen.toml"),
            root.path().join("bluegreen.toml"),
        )
        .unwrap();
        std::fs::create_dir(root.path().join("checks")).unwrap();
        std::fs::copy(
            fixtures().join("checks/check_agent.py"),
            root.path().join("checks/check_agent.py"),
        )
        .unwrap();
        root
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path().join(rel)).unwrap()
    }

    /// The binary, working in the root, without colour or inherited log settings.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("bluegreen").unwrap();
        cmd.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env("COLUMNS", "100")
            .env_remove("RUST_LOG")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("BLUEGREEN_FAULT")
            .env_remove("BLUEGREEN_TOKEN");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_cmd(self.cmd().args(args))
    }

    /// Deploys a fixture as `alpha` to `agents/alpha.py`; returns the run.
    pub fn deploy(&self, code_file: &str) -> Run {
        self.run(&[
            "deploy",
            "alpha",
            "--file",
            "agents/alpha.py",
            "--code-file",
            code_file,
        ])
    }

    /// insta settings redacting this root, ids, timestamps, hashes and padded timings.
    pub fn settings(&self) -> insta::Settings {
        // Stage lines pad their timings and the padding changes with the number, so this
        // filter must run before the shared ones (insta applies filters in order).
        let mut first = insta::Settings::clone_current();
        first.add_filter(r" +\d+ ms\b", " [MS]");
        let mut settings = first.bind(|| bluegreen_tests::insta_settings(Some(self.path())));
        settings.add_filter(r"\b[0-9a-f]{12}\b", "[SHA12]");
        settings.set_prepend_module_to_snapshot(false);
        settings
    }

    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        bluegreen_tests::redact_json(value, Some(self.path()))
    }
}

pub fn run_cmd(cmd: &mut Command) -> Run {
    let output = cmd.output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
pub fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.stdout, run.stderr
    );
}
