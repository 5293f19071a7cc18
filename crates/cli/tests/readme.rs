//! The README cannot rot: every `$ ` command of its ```console blocks runs here, in order,
//! in one scratch root holding the tour's files, against the built binary. Each command must
//! exit as the README says (`$ echo $?` after it, else 0) and print what the README shows
//! (after redacting ids, timestamps and timings; a line `...` stands for any lines).
//! ```toml blocks are written to the root's `bluegreen.toml` when they appear, so the
//! config the README shows is the config that runs. The ```rust blocks are doctests of this
//! crate (see `ReadmeDoctests` in lib.rs). `cargo …` commands are what CI itself runs
//! (`cargo xtask demo` is tested in xtask/src/demo.rs).
//!
//! `README_PRINT=1 cargo test -p bluegreen --test readme -- --nocapture` prints the actual
//! output of every command, for updating the README.

mod common;

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Block {
    lang: String,
    text: String,
    /// 1-based line of the opening fence, for messages.
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                current = Some(Block {
                    lang: lang.trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

struct Step {
    command: String,
    expected: Vec<String>,
}

/// `$ ` lines (with `\` continuations) and the output lines under each.
fn steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if let Some(command) = line.strip_prefix("$ ") {
            let mut command = command.to_owned();
            while command.ends_with('\\') {
                command.pop();
                command.push_str(lines.next().unwrap_or_default().trim_start());
            }
            steps.push(Step {
                command,
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_owned());
        }
    }
    steps
}

fn normalize(text: &str, root: &Path) -> Vec<String> {
    let timings = regex_lite(r" +\d+ ms\b", " [MS]", text);
    let elapsed = regex_lite(r#""elapsed_ms": ?\d+"#, r#""elapsed_ms": [N]"#, &timings);
    bluegreen_tests::redact(&elapsed, Some(root))
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn regex_lite(pattern: &str, replacement: &str, text: &str) -> String {
    regex::Regex::new(pattern)
        .unwrap()
        .replace_all(text, replacement)
        .into_owned()
}

/// `expected` (with `...` wildcards) matches `actual`.
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| a == first && matches(rest, more)),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn readme_commands_run_as_shown() {
    let readme_path = bluegreen_tests::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    // The README's ```sh setup block builds the tour root, with its path swapped for ours.
    let scratch = tempfile::tempdir().unwrap();
    let tour = scratch.path().join("tour");
    let setup = blocks(&readme)
        .into_iter()
        .find(|b| b.lang == "sh" && b.text.contains("/tmp/tour"))
        .expect("the README's tour setup block");
    let status = Command::new("sh")
        .arg("-ec")
        .arg(setup.text.replace("/tmp/tour", &tour.display().to_string()))
        .current_dir(bluegreen_tests::workspace_root())
        .status()
        .unwrap();
    assert!(status.success(), "the README's setup block failed");
    let root = common::Root::at(tour);
    let bin = assert_cmd::cargo::cargo_bin("bluegreen");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = free_port().to_string();
    let print = std::env::var_os("README_PRINT").is_some();
    let mut background = Background(Vec::new());
    let mut ran = 0;
    let mut failures = Vec::new();

    for block in blocks(&readme) {
        if block.lang == "toml" {
            std::fs::write(root.path().join("bluegreen.toml"), &block.text).unwrap();
            continue;
        }
        if block.lang != "console" {
            continue;
        }
        let steps = steps(&block.text);
        for (i, step) in steps.iter().enumerate() {
            if step.command.starts_with("cargo ") || step.command == "echo $?" {
                continue;
            }
            let command = step.command.replace("8080", &port);
            let expected_code: i32 = match steps.get(i + 1) {
                Some(next) if next.command == "echo $?" => next.expected[0].trim().parse().unwrap(),
                _ => 0,
            };
            ran += 1;
            if let Some(daemon) = command.strip_suffix('&') {
                let child = Command::new("sh")
                    .arg("-c")
                    .arg(format!("exec env {}", daemon.trim()))
                    .current_dir(root.path())
                    .env("PATH", &path)
                    .env("NO_COLOR", "1")
                    .env_remove("RUST_LOG")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                background.0.push(child);
                let started = Instant::now();
                while TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "{command} did not start listening"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
            let output = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .current_dir(root.path())
                .env("PATH", &path)
                .env("NO_COLOR", "1")
                .env_remove("RUST_LOG")
                .env_remove("BLUEGREEN_TOKEN")
                .output()
                .unwrap();
            let code = output.status.code().unwrap_or(-1);
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            if print {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "$ {}\n{}[exit {code}]\n", step.command, text);
            }
            let actual = normalize(&text, root.path());
            let expected = normalize(&step.expected.join("\n"), root.path());
            if code != expected_code {
                failures.push(format!(
                    "README.md (block at line {}): `{}` exited {code}, the README says {expected_code}\n{text}",
                    block.line, step.command
                ));
            } else if !matches(&expected, &actual) {
                failures.push(format!(
                    "README.md (block at line {}): `{}` printed something else than the README shows.\n--- README (normalized) ---\n{}\n--- actual (normalized) ---\n{}",
                    block.line,
                    step.command,
                    expected.join("\n"),
                    actual.join("\n")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        ran >= 10,
        "only {ran} README commands ran: did the README lose its tour?"
    );
}

#[test]
fn wildcards_and_steps_parse() {
    let s = steps("$ a \\\n  --b\nout 1\n$ echo $?\n1\n");
    assert_eq!(s[0].command, "a --b");
    assert_eq!(s[0].expected, ["out 1"]);
    assert_eq!(s[1].expected, ["1"]);
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(matches(&v(&["a", "...", "d"]), &v(&["a", "b", "c", "d"])));
    assert!(matches(&v(&["a", "..."]), &v(&["a"])));
    assert!(!matches(&v(&["a", "d"]), &v(&["a", "b", "d"])));
}
