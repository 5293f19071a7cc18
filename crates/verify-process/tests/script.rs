//! The script verifier: placeholders, environment, verdicts, diagnostics, timeouts.

mod common;

use std::time::{Duration, Instant};

use bluegreen_core::{Verdict, Verifier};
use bluegreen_verify_process::{Error, Sandbox, ScriptOptions, ScriptVerifier};
use common::Setup;

fn script(command: &[&str], timeout: Duration) -> ScriptVerifier {
    ScriptVerifier::new(
        "tests",
        ScriptOptions {
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout,
            ..ScriptOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn placeholders_variables_and_working_directory() {
    let setup = Setup::fixture("good_agent.py");
    let check = r#"
        test "$PWD" = "{root}" &&
        test "$BLUEGREEN_ROOT" = "{root}" &&
        test "$BLUEGREEN_STAGED" = "{staged}" && test -f "{staged}" &&
        test "$BLUEGREEN_TARGET" = "{target}" &&
        test "$BLUEGREEN_AGENT_ID" = alpha && test "$1" = "alpha" &&
        test "$BLUEGREEN_DEPLOYMENT_ID" = "{deployment_id}" &&
        case "{deployment_id}" in dep_*) true;; *) false;; esac
    "#;
    let verifier = script(
        &["sh", "-c", check, "sh", "{agent_id}"],
        Duration::from_secs(10),
    );
    assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
}

#[tokio::test]
async fn failure_quotes_the_tail_of_the_output() {
    let setup = Setup::fixture("good_agent.py");
    let verifier = script(
        &[
            "sh",
            "-c",
            "for i in $(seq 1 30); do echo line $i; done; echo 'assert 1 == 2' >&2; exit 3",
        ],
        Duration::from_secs(10),
    );
    let verdict = verifier.verify(&setup.req).await;
    assert!(!verdict.passed);
    assert_eq!(verdict.diagnostics.len(), 1);
    assert_eq!(verdict.diagnostics[0].line, 0);
    insta::assert_snapshot!("script_failure", verdict.diagnostics[0].message);
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let setup = Setup::fixture("good_agent.py");
    let verifier = script(
        &[
            "sh",
            "-c",
            "trap '' TERM; sleep 300 & sleep 300; echo never",
        ],
        Duration::from_secs(1),
    );
    let started = Instant::now();
    let verdict = verifier.verify(&setup.req).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        verdict,
        Verdict::fail_msg(
            "`sh -c trap '' TERM; sleep 300 & sleep 300; echo never` timed out after 1s"
        )
    );
    setup.assert_no_survivors_within(Duration::ZERO);
}

#[tokio::test]
async fn background_processes_do_not_outlive_a_passing_script() {
    let setup = Setup::fixture("good_agent.py");
    let verifier = script(&["sh", "-c", "sleep 300 & exit 0"], Duration::from_secs(10));
    let started = Instant::now();
    assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
    assert!(started.elapsed() < Duration::from_secs(5));
    setup.assert_no_survivors_within(Duration::ZERO);
}

#[tokio::test]
async fn a_missing_program_fails_with_a_clear_message() {
    let setup = Setup::fixture("good_agent.py");
    let verifier = script(
        &["bgvp-no-such-program", "{staged}"],
        Duration::from_secs(10),
    );
    let verdict = verifier.verify(&setup.req).await;
    assert_eq!(
        verdict,
        Verdict::fail_msg(
            "cannot run `bgvp-no-such-program {staged}`: No such file or directory (os error 2)"
        )
    );
}

#[tokio::test]
async fn environment_is_cleared_except_the_allow_list_and_pass_env() {
    std::env::set_var("BGVP_SCRIPT_SECRET", "x");
    std::env::set_var("BGVP_SCRIPT_PASSED", "y");
    let setup = Setup::fixture("good_agent.py");
    let verifier = ScriptVerifier::new(
        "tests",
        ScriptOptions {
            command: vec![
                "sh".into(),
                "-c".into(),
                r#"test -z "${BGVP_SCRIPT_SECRET:-}" && test "$BGVP_SCRIPT_PASSED" = y && test -n "$PATH""#.into(),
            ],
            pass_env: vec!["BGVP_SCRIPT_PASSED".into()],
            ..ScriptOptions::default()
        },
    )
    .unwrap();
    assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
}

#[tokio::test]
async fn scripts_write_no_bytecode_unless_the_variable_is_passed_through() {
    // A real python script importing a sibling module of the root: no __pycache__ appears.
    std::env::remove_var("PYTHONDONTWRITEBYTECODE");
    let setup = Setup::fixture("good_agent.py");
    let check = "import sys, os; sys.path.insert(0, os.getcwd()); import agent_helpers; \
                 assert os.environ['PYTHONDONTWRITEBYTECODE'] == '1'";
    let verifier = script(&["python3", "-c", check], Duration::from_secs(10));
    assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
    assert!(!setup.root().join("__pycache__").exists());
    // Passed through (and unset here): the user's choice is kept, so bytecode is written.
    let verifier = ScriptVerifier::new(
        "tests",
        ScriptOptions {
            command: vec![
                "python3".into(),
                "-c".into(),
                check.replace(
                    "assert os.environ['PYTHONDONTWRITEBYTECODE'] == '1'",
                    "assert 'PYTHONDONTWRITEBYTECODE' not in os.environ",
                ),
            ],
            pass_env: vec!["PYTHONDONTWRITEBYTECODE".into()],
            // Unconfined: a strict script cannot write into the root at all.
            sandbox: Sandbox::Off,
            ..ScriptOptions::default()
        },
    )
    .unwrap();
    assert_eq!(verifier.verify(&setup.req).await, Verdict::pass());
    assert!(setup.root().join("__pycache__").exists());
}

#[test]
fn an_empty_command_is_a_configuration_error() {
    let err = ScriptVerifier::new("tests", ScriptOptions::default()).unwrap_err();
    assert!(matches!(err, Error::EmptyCommand(ref n) if n == "tests"));
    assert_eq!(
        err.to_string(),
        "script verifier \"tests\" needs a non-empty command"
    );
}
