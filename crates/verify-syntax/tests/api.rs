//! Options, the verifier on files, target versions and the entrypoint check.

use bluegreen_core::{AgentId, DeploymentId, Diagnostic, Verifier, VerifyRequest};
use bluegreen_verify_syntax::{
    check_source, ConfigError, Engine, EntrypointSpec, PythonVersion, SyntaxOptions, SyntaxVerifier,
};

fn options(engine: Engine) -> SyntaxOptions {
    SyntaxOptions {
        engine,
        ..SyntaxOptions::default()
    }
}

fn messages(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
        .collect()
}

#[test]
fn options_parse_from_config_strings() {
    assert_eq!("ruff".parse::<Engine>(), Ok(Engine::Ruff));
    assert_eq!("tree-sitter".parse::<Engine>(), Ok(Engine::TreeSitter));
    assert_eq!(
        "pyright".parse::<Engine>().unwrap_err().to_string(),
        "unknown syntax engine \"pyright\"; expected \"ruff\" or \"tree-sitter\""
    );
    assert_eq!(
        "3.12".parse::<PythonVersion>(),
        Ok(PythonVersion {
            major: 3,
            minor: 12
        })
    );
    assert!(matches!(
        "3.7".parse::<PythonVersion>(),
        Err(ConfigError::UnsupportedVersion(_))
    ));
    assert_eq!(
        "2.7".parse::<PythonVersion>().unwrap_err().to_string(),
        "unsupported python_version 2.7; supported: 3.8 to 3.14"
    );
    assert!(matches!(
        "three".parse::<PythonVersion>(),
        Err(ConfigError::InvalidVersion(_))
    ));
    let default = SyntaxOptions::default();
    assert_eq!(default.engine, Engine::Ruff);
    assert_eq!(default.python_version.to_string(), "3.11");
    assert_eq!(default.entrypoint, None);
}

#[test]
fn target_version_decides_what_is_new_syntax() {
    let type_alias = b"type Point = tuple[float, float]\n";
    let match_stmt = b"match x:\n    case 1:\n        pass\n";
    let at = |minor| SyntaxOptions {
        python_version: PythonVersion { major: 3, minor },
        ..SyntaxOptions::default()
    };
    assert_eq!(
        messages(&check_source(type_alias, &at(11))),
        ["1:1 Cannot use `type` alias statement on Python 3.11 (syntax was added in Python 3.12)"]
    );
    assert!(check_source(type_alias, &at(12)).is_empty());
    assert!(check_source(match_stmt, &at(11)).is_empty());
    assert!(!check_source(match_stmt, &at(9)).is_empty());
    // PEP 701 f-strings: an error before 3.12 only.
    let nested_quotes = b"x = f\"{\"a\"}\"\n";
    assert!(!check_source(nested_quotes, &at(11)).is_empty());
    assert!(check_source(nested_quotes, &at(12)).is_empty());
}

#[test]
fn tree_sitter_reports_grammar_errors_only() {
    let ts = options(Engine::TreeSitter);
    assert_eq!(
        messages(&check_source(b"def f(:\n    pass\n", &ts)),
        ["1:7 invalid syntax: missing ')'"]
    );
    // Compile-time checks are not its business.
    assert!(check_source(b"def f(a, a):\n    return 1\n", &ts).is_empty());
    // Decoding is shared with the ruff engine.
    assert_eq!(
        messages(&check_source(b"# coding: nope\nx = 1\n", &ts)),
        ["1:1 unknown encoding: nope"]
    );
}

#[test]
fn entrypoint_check_with_both_engines() {
    let cases: &[(&[u8], Option<&str>)] = &[
        (b"def process_event(event):\n    return event\n", None),
        (b"def process_event(event, ctx=None, *, debug=False):\n    pass\n", None),
        (b"import functools\n@functools.cache\ndef process_event(*events):\n    pass\n", None),
        (b"try:\n    import fast\nexcept ImportError:\n    def process_event(event):\n        pass\n", None),
        (
            b"def handle(event):\n    pass\n",
            Some("entrypoint 'process_event' is not defined: expected a module-level 'def process_event(...)'"),
        ),
        (
            b"class Agent:\n    def process_event(self, event):\n        pass\n",
            Some("entrypoint 'process_event' is not defined: expected a module-level 'def process_event(...)'"),
        ),
        (
            b"def process_event():\n    pass\n",
            Some("entrypoint 'process_event' cannot be called with 1 positional argument: it takes 0 required and 0 optional positional parameter(s)"),
        ),
        (
            b"def process_event(event, *, mode):\n    pass\n",
            Some("entrypoint 'process_event' cannot be called with 1 positional argument: it takes 1 required and 0 optional positional parameter(s) and 1 required keyword-only parameter(s)"),
        ),
        (
            b"async def process_event(event):\n    pass\n",
            Some("entrypoint 'process_event' is 'async def'; expected a plain 'def'"),
        ),
    ];
    for engine in [Engine::Ruff, Engine::TreeSitter] {
        let options = SyntaxOptions {
            engine,
            entrypoint: Some(EntrypointSpec::new("process_event")),
            ..SyntaxOptions::default()
        };
        for (source, expected) in cases {
            let diagnostics = check_source(source, &options);
            let expected: Vec<Diagnostic> = expected
                .iter()
                .map(|m| Diagnostic::whole_file(*m))
                .collect();
            assert_eq!(
                diagnostics,
                expected,
                "{engine}: {}",
                String::from_utf8_lossy(source)
            );
        }
    }
    let two_args = SyntaxOptions {
        entrypoint: Some(EntrypointSpec::new("run").with_arity(2)),
        ..SyntaxOptions::default()
    };
    assert!(check_source(b"def run(a, b):\n    pass\n", &two_args).is_empty());
    assert!(!check_source(b"def run(a):\n    pass\n", &two_args).is_empty());
}

fn request(staged: std::path::PathBuf) -> VerifyRequest {
    VerifyRequest {
        target: staged.clone(),
        root: staged.parent().unwrap().to_path_buf(),
        staged,
        agent_id: AgentId::new("agent").unwrap(),
        deployment_id: DeploymentId::generate(),
    }
}

#[tokio::test]
async fn verifier_checks_the_staged_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.py");
    let bad = dir.path().join("bad.py");
    std::fs::write(&good, "def process_event(event):\n    return event\n").unwrap();
    std::fs::write(&bad, "def process_event(event)\n    return event\n").unwrap();
    let verifier = SyntaxVerifier::new("syntax", SyntaxOptions::default());
    assert_eq!(verifier.name(), "syntax");

    let pass = verifier.verify(&request(good)).await;
    assert!(pass.passed);
    assert!(pass.diagnostics.is_empty());

    let fail = verifier.verify(&request(bad)).await;
    assert!(!fail.passed);
    assert_eq!(
        messages(&fail.diagnostics),
        ["1:25 Expected `:`, found newline"]
    );

    let missing = verifier
        .verify(&request(dir.path().join("missing.py")))
        .await;
    assert!(!missing.passed);
    assert_eq!(missing.diagnostics.len(), 1);
    assert_eq!(
        (missing.diagnostics[0].line, missing.diagnostics[0].column),
        (0, 0)
    );
    assert!(
        missing.diagnostics[0].message.starts_with("cannot read ")
            && missing.diagnostics[0].message.contains("missing.py"),
        "{:?}",
        missing.diagnostics
    );
}

/// `prepare` parses a deployment's bytes ahead; the verdict must still be the staged file's.
#[tokio::test]
async fn a_prepared_verdict_is_used_only_for_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let good: &[u8] = b"def process_event(event):\n    return event\n";
    let bad: &[u8] = b"def process_event(event)\n    return event\n";
    let verifier = SyntaxVerifier::new("syntax", SyntaxOptions::default());
    let staged = dir.path().join("staged.py");

    // Prepared with good bytes, but the staged file holds bad ones: rejected.
    verifier.prepare(&std::sync::Arc::from(good));
    std::fs::write(&staged, bad).unwrap();
    let verdict = verifier.verify(&request(staged.clone())).await;
    assert_eq!(
        messages(&verdict.diagnostics),
        ["1:25 Expected `:`, found newline"]
    );

    // Prepared with bad bytes, staged file good: accepted.
    verifier.prepare(&std::sync::Arc::from(bad));
    std::fs::write(&staged, good).unwrap();
    assert!(verifier.verify(&request(staged.clone())).await.passed);

    // Prepared with the staged bytes (and cloned: clones share the memo): the same verdict
    // as a fresh verifier's, diagnostics included.
    let clone = verifier.clone();
    clone.prepare(&std::sync::Arc::from(bad));
    std::fs::write(&staged, bad).unwrap();
    let prepared = verifier.verify(&request(staged.clone())).await;
    let fresh = SyntaxVerifier::new("syntax", SyntaxOptions::default())
        .verify(&request(staged))
        .await;
    assert_eq!(prepared, fresh);
    assert!(!prepared.passed);
}
