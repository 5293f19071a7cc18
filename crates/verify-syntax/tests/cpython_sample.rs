//! The fast fidelity sample: our `ruff` engine against CPython's own `compile()` on every
//! fixture (valid, invalid, fuzz regressions, differential edge cases), 100 stdlib files and 100 mutants (the full run is `cargo xtask fidelity`).
//! Skipped, with a message, when `python3` is not CPython 3.11.

use std::path::{Path, PathBuf};
use std::process::Command;

use bluegreen_verify_syntax::{check_source, SyntaxOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write_list(path: &Path, files: &[PathBuf]) {
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(path, text).unwrap();
}

fn python_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    files.sort();
    files
}

/// Every `step`-th stdlib file, sorted, site-packages excluded.
fn stdlib_sample(step: usize) -> Vec<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .unwrap();
    let root = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if entry.file_name() != "site-packages" {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "py") {
                files.push(path);
            }
        }
    }
    files.sort();
    files.into_iter().step_by(step).collect()
}

fn cpython_rejects(files: &[PathBuf], scratch: &Path) -> Vec<bool> {
    let list = scratch.join("list.txt");
    write_list(&list, files);
    let out = Command::new("python3")
        .arg(repo().join("xtask/fidelity/cpython_verdicts.py"))
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.contains("\"ok\": false"))
        .collect();
    assert_eq!(verdicts.len(), files.len());
    verdicts
}

#[test]
fn ruff_engine_agrees_with_cpython_on_a_sample() {
    // The ground truth is CPython 3.11 (3.12 accepts PEP 701 f-strings, for one).
    let version = Command::new("python3").arg("--version").output();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if !version
        .as_deref()
        .is_ok_and(|v| v.starts_with("Python 3.11"))
    {
        eprintln!("python3 3.11 not found ({version:?}): CPython fidelity sample skipped");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let fixtures = repo().join("fixtures/python");
    let mut files = python_files(&fixtures.join("valid"));
    files.extend(python_files(&fixtures.join("invalid")));
    files.extend(python_files(&fixtures.join("fuzz-regressions")));
    files.extend(python_files(&fixtures.join("differential")));
    let stdlib = stdlib_sample(18);
    files.extend(stdlib.iter().cloned());

    // 100 mutants of the first 40 sampled stdlib files: same generator as the full run.
    let sources = scratch.path().join("sources.txt");
    write_list(&sources, &stdlib[..stdlib.len().min(40)]);
    let mutants_dir = scratch.path().join("mutants");
    let status = Command::new("python3")
        .arg(repo().join("xtask/fidelity/mutate.py"))
        .args([sources.as_os_str(), mutants_dir.as_os_str()])
        .args(["100", "7"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mutants = python_files(&mutants_dir);
    assert_eq!(mutants.len(), 100);
    files.extend(mutants);

    let truth = cpython_rejects(&files, scratch.path());
    let mut disagreements = Vec::new();
    for (path, cpython_rejects) in files.iter().zip(truth) {
        let diagnostics = check_source(&std::fs::read(path).unwrap(), &SyntaxOptions::default());
        if cpython_rejects == diagnostics.is_empty() {
            disagreements.push(format!(
                "{}: cpython {}, ours {:?}",
                path.display(),
                if cpython_rejects {
                    "rejects"
                } else {
                    "accepts"
                },
                diagnostics.first()
            ));
        }
    }
    assert!(files.len() > 450, "sample too small: {}", files.len());
    assert_eq!(disagreements, Vec::<String>::new());
}
