//! Every file in `fixtures/python/invalid/` fails with the diagnostics in its snapshot; every
//! file in `fixtures/python/valid/` passes with both engines.

use std::path::{Path, PathBuf};

use bluegreen_verify_syntax::{check_source, Engine, SyntaxOptions};

fn fixture_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/python")
        .join(kind)
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

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn invalid_fixtures_fail_with_snapshotted_diagnostics() {
    let files = python_files(&fixture_dir("invalid"));
    assert!(files.len() >= 30, "only {} invalid fixtures", files.len());
    for path in files {
        let diagnostics = check_source(&std::fs::read(&path).unwrap(), &SyntaxOptions::default());
        assert!(!diagnostics.is_empty(), "{} passed", path.display());
        insta::assert_json_snapshot!(format!("invalid__{}", stem(&path)), diagnostics);
    }
}

#[test]
fn valid_fixtures_pass_with_both_engines() {
    let files = python_files(&fixture_dir("valid"));
    assert!(files.len() >= 10);
    for path in files {
        let source = std::fs::read(&path).unwrap();
        for engine in [Engine::Ruff, Engine::TreeSitter] {
            let options = SyntaxOptions {
                engine,
                ..SyntaxOptions::default()
            };
            let diagnostics = check_source(&source, &options);
            assert_eq!(diagnostics, vec![], "{} with {engine}", path.display());
        }
    }
}

#[test]
fn fuzz_regressions_get_a_stable_verdict_from_both_engines() {
    for path in python_files(&fixture_dir("fuzz-regressions")) {
        let source = std::fs::read(&path).unwrap();
        for engine in [Engine::Ruff, Engine::TreeSitter] {
            let options = SyntaxOptions {
                engine,
                ..SyntaxOptions::default()
            };
            let first = check_source(&source, &options);
            assert_eq!(first, check_source(&source, &options), "{}", path.display());
        }
    }
}

#[test]
fn known_differences_with_cpython_stay_on_the_safe_side() {
    let files = python_files(&fixture_dir("known-differences"));
    assert_eq!(files.len(), 5);
    for path in files {
        let diagnostics = check_source(&std::fs::read(&path).unwrap(), &SyntaxOptions::default());
        assert_eq!(diagnostics.len(), 1, "{}", path.display());
        let message = &diagnostics[0].message;
        assert!(
            message.starts_with("(unicode error) 'utf-8' codec can't decode byte")
                || message.contains("cannot decode")
                || message.starts_with("unknown encoding"),
            "{}: {message}",
            path.display()
        );
    }
}
