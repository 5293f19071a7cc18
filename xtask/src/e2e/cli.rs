//! Running the binary under test, and the file-system checks every scenario shares.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bluegreen_core::util::sha256_hex;
use serde_json::Value;

/// `Err(format!(..))` unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;

/// No single command of the matrix may take longer than this (a hang is a failure, not a stall).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// How a subprocess ended and what it printed.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// One line describing the outcome, for failure messages.
    pub fn describe(&self) -> String {
        let how = match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown end".into(),
        };
        let tail = |s: &str| {
            let s = s.trim();
            let start = s.len().saturating_sub(300);
            let start = (start..=s.len())
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            s[start..].replace('\n', " | ")
        };
        format!(
            "{how}; stdout: {}; stderr: {}",
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    /// The JSON document on stdout.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(self.stdout.trim())
            .map_err(|e| format!("stdout is not one JSON document ({e}): {}", self.describe()))
    }

    /// Requires exit `code` and returns the JSON document.
    pub fn expect(&self, code: i32, what: &str) -> Result<Value, String> {
        ensure!(
            self.code == Some(code),
            "{what}: expected exit {code}, got {}",
            self.describe()
        );
        self.json().map_err(|e| format!("{what}: {e}"))
    }

    /// Requires exit `code` with the contract's JSON error document (`exit_code` agrees).
    pub fn expect_error(&self, code: i32, what: &str) -> Result<Value, String> {
        let doc = self.expect(code, what)?;
        ensure!(
            doc["status"] == "failed",
            "{what}: JSON status is not \"failed\": {doc}"
        );
        if let Some(reported) = doc.get("exit_code") {
            ensure!(
                reported == &Value::from(code),
                "{what}: JSON exit_code {reported} disagrees with exit {code}"
            );
        }
        Ok(doc)
    }
}

/// Runs a command to completion, feeding `stdin`, killing it after `timeout`.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Out, String> {
    let started = Instant::now();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning {:?}: {e}", cmd.get_program()))?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            // A child that exits early closes the pipe; that is its business, not an error here.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_until(&mut child, started + timeout)?;
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let Some(status) = status else {
        return Err(format!(
            "{:?} {:?} did not finish within {} s (killed)",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            timeout.as_secs()
        ));
    };
    Ok(Out {
        code: status.code(),
        signal: status.signal(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for the child until `deadline`; kills it (and returns `None`) after that.
pub fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> Result<Option<std::process::ExitStatus>, String> {
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("waiting: {e}"))? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The binary, bound to one root (`--root ROOT --json` on every call).
#[derive(Clone)]
pub struct Bg {
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Bg {
    pub fn new(bin: &Path, root: &Path) -> Self {
        Bg {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--json")
            // The working directory is deliberately not the root: --root must be honoured.
            .current_dir(self.root.parent().unwrap_or(&self.root))
            .env_remove("BLUEGREEN_FAULT")
            .env_remove("BLUEGREEN_TOKEN")
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Out, String> {
        let mut cmd = self.command();
        cmd.args(args);
        run(&mut cmd, stdin, COMMAND_TIMEOUT)
    }

    /// `deploy AGENT --file FILE --code-file -` with `code` on stdin.
    pub fn deploy(&self, agent: &str, file: &str, code: &[u8]) -> Result<Out, String> {
        self.run(
            &["deploy", agent, "--file", file, "--code-file", "-"],
            Some(code),
        )
    }

    /// The same, with `BLUEGREEN_FAULT=<point>` armed.
    pub fn deploy_with_fault(
        &self,
        agent: &str,
        file: &str,
        code: &[u8],
        fault: &str,
    ) -> Result<Out, String> {
        let mut cmd = self.command();
        cmd.env("BLUEGREEN_FAULT", fault).args([
            "deploy",
            agent,
            "--file",
            file,
            "--code-file",
            "-",
        ]);
        run(&mut cmd, Some(code), COMMAND_TIMEOUT)
    }

    /// A deploy that must succeed; returns its JSON.
    pub fn deploy_ok(&self, agent: &str, file: &str, code: &[u8]) -> Result<Value, String> {
        let doc = self
            .deploy(agent, file, code)?
            .expect(0, &format!("deploy {agent}"))?;
        ensure!(
            doc["status"] == "success",
            "deploy {agent}: status is not success: {doc}"
        );
        Ok(doc)
    }

    pub fn rollback(&self, agent: &str, to: Option<&str>) -> Result<Out, String> {
        match to {
            Some(id) => self.run(&["rollback", agent, "--to", id], None),
            None => self.run(&["rollback", agent], None),
        }
    }

    /// `status --json`, which must succeed.
    pub fn status(&self) -> Result<Value, String> {
        self.run(&["status"], None)?.expect(0, "status")
    }

    /// `history AGENT --json`, which must succeed; returns the deployments, newest first.
    pub fn history(&self, agent: &str) -> Result<Vec<Value>, String> {
        let doc = self.run(&["history", agent], None)?.expect(0, "history")?;
        ensure!(
            doc["agent_id"] == agent,
            "history: agent_id is not {agent}: {doc}"
        );
        doc["deployments"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("history: no deployments array: {doc}"))
    }
}

/// The string field `key` of a JSON object.
pub fn s<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v[key]
        .as_str()
        .ok_or_else(|| format!("field {key:?} missing or not a string in {v}"))
}

pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

pub fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Requires the file at `path` to hold exactly `expected` (`what` names the version).
pub fn expect_bytes(path: &Path, expected: &[u8], what: &str) -> Result<(), String> {
    let actual = read(path)?;
    ensure!(
        actual == expected,
        "{} does not hold {what} ({} bytes, sha256 {}; expected {} bytes, sha256 {})",
        path.display(),
        actual.len(),
        &sha256_hex(&actual)[..12],
        expected.len(),
        &sha256_hex(expected)[..12]
    );
    Ok(())
}

/// Every file under `dir` (recursively, not following symlinks) whose name ends in `.staged`.
pub fn staged_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().ends_with(".staged") {
                found.push(path);
            }
        }
    }
    found
}

pub fn expect_no_staged(root: &Path) -> Result<(), String> {
    let left = staged_leftovers(root);
    ensure!(left.is_empty(), "staged files left behind: {left:?}");
    Ok(())
}

/// A digest of a tree: relative path → content sha256 / symlink target / "dir".
/// Symlinks are recorded, never followed.
pub fn tree_digest(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let value = if meta.file_type().is_symlink() {
                format!(
                    "symlink -> {}",
                    std::fs::read_link(&path)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            } else if meta.is_dir() {
                stack.push(path);
                "dir".into()
            } else {
                std::fs::read(&path)
                    .map(|b| sha256_hex(&b))
                    .unwrap_or_else(|e| format!("unreadable: {e}"))
            };
            out.insert(rel, value);
        }
    }
    out
}

/// What differs between two tree digests, as one line.
pub fn digest_diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("removed {k}")),
            Some(w) if w != v => diffs.push(format!("changed {k}")),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diffs.push(format!("added {k}"));
        }
    }
    diffs.join(", ")
}

/// Is `id` a contract deployment id (`dep_` + 32 lowercase hex digits)?
pub fn is_deployment_id(id: &str) -> bool {
    id.strip_prefix("dep_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Is `ts` an RFC 3339 UTC timestamp?
pub fn is_utc_timestamp(ts: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(ts).is_ok_and(|t| t.offset().local_minus_utc() == 0)
}

/// The snapshot files of an agent in a file store.
pub fn snapshot_files(root: &Path, agent: &str) -> Vec<PathBuf> {
    let dir = root.join("backups/agents").join(agent);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ids_are_dep_and_32_lowercase_hex() {
        assert!(is_deployment_id("dep_01a2178156e97205a4dd69dce63a3aa6"));
        assert!(!is_deployment_id("dep_01A2178156E97205A4DD69DCE63A3AA6"));
        assert!(!is_deployment_id("dep_01a2178156e97205a4dd69dce63a3aa"));
        assert!(!is_deployment_id("01a2178156e97205a4dd69dce63a3aa6"));
    }

    #[test]
    fn timestamps_must_be_utc() {
        assert!(is_utc_timestamp("2026-11-26T10:58:02.089Z"));
        assert!(is_utc_timestamp("2026-11-26T10:58:02+00:00"));
        assert!(!is_utc_timestamp("2026-11-26T10:58:02+01:00"));
        assert!(!is_utc_timestamp("2026-11-26 10:58:02"));
    }

    #[test]
    fn digest_diff_names_every_change() {
        let before = BTreeMap::from([("a".to_string(), "1".to_string()), ("b".into(), "2".into())]);
        let after = BTreeMap::from([("a".to_string(), "9".to_string()), ("c".into(), "3".into())]);
        assert_eq!(
            digest_diff(&before, &after),
            "changed a, removed b, added c"
        );
    }
}
