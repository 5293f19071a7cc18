//! `bluegreen.toml` through the binary: mistakes quote file, line and column and exit 2;
//! a valid config's chains are the ones that run.

mod common;

use common::{assert_code, Root};
use insta::assert_snapshot;

/// Writes `text` as the root's config and runs `status`.
fn status_with(text: &str) -> (Root, common::Run) {
    let root = Root::new();
    root.write("bluegreen.toml", text);
    let run = root.run(&["status"]);
    (root, run)
}

#[test]
fn unknown_key() {
    let (root, run) = status_with("keep_backups = 5\ncolour = \"blue\"\n");
    assert_code(&run, 2);
    assert!(
        run.stderr
            .starts_with("error: bluegreen.toml:2:1: unknown field `colour`"),
        "{}",
        run.stderr
    );
    root.settings()
        .bind(|| assert_snapshot!("config_unknown_key", run.stderr));
}

#[test]
fn bad_duration() {
    let (root, run) = status_with("lock_timeout = \"30 parsecs\"\n");
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("bluegreen.toml:1:16: invalid duration"),
        "{}",
        run.stderr
    );
    root.settings()
        .bind(|| assert_snapshot!("config_bad_duration", run.stderr));
}

#[test]
fn chain_naming_a_missing_verifier() {
    let (root, run) = status_with("[chains]\ndefault = [\"syntax\", \"lint\"]\n");
    assert_code(&run, 2);
    assert!(
        run.stderr
            .contains("bluegreen.toml:2:22: unknown verifier \"lint\""),
        "{}",
        run.stderr
    );
    root.settings()
        .bind(|| assert_snapshot!("config_missing_verifier", run.stderr));
}

#[test]
fn unknown_verifier_kind_and_bad_options() {
    let (_, run) = status_with("[verifiers.lint]\nkind = \"pylint\"\n");
    assert_code(&run, 2);
    assert!(
        run.stderr
            .contains("bluegreen.toml:2:8: unknown verifier kind \"pylint\""),
        "{}",
        run.stderr
    );
    let (_, run) = status_with("[verifiers.syntax]\nengine = \"ruff\"\npython_version = \"2.7\"\n");
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("bluegreen.toml:3:18:"),
        "{}",
        run.stderr
    );
    let (_, run) = status_with("[agents.alpha]\nfile = \"a.py\"\nchains = [\"syntax\"]\n");
    assert_code(&run, 2);
    assert!(
        run.stderr
            .contains("bluegreen.toml:3:1: unknown field `chains`"),
        "{}",
        run.stderr
    );
    // With --json the mistake is one JSON document with the same one-line message.
    let root = Root::new();
    root.write("bluegreen.toml", "[chains]\ndeadline = \"x\"\n");
    let run = root.run(&["--json", "status"]);
    assert_code(&run, 2);
    let doc = run.json();
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .starts_with("bluegreen.toml:2:12: invalid duration"),
        "{doc}"
    );
}

#[test]
fn syntax_errors_in_the_toml_itself() {
    let (_, run) = status_with("keep_backups = \n");
    assert_code(&run, 2);
    assert!(run.stderr.contains("bluegreen.toml:1:"), "{}", run.stderr);
}

#[test]
fn agent_chain_and_file_from_the_config() {
    let root = Root::with_config();
    // `file` comes from [agents.trading_agent_alpha]; the chain is syntax, startup, tests.
    let run = root.run(&[
        "--json",
        "deploy",
        "trading_agent_alpha",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 0);
    let doc = run.json();
    assert_eq!(doc["file_path"], "agents/trading_agent_alpha.py");
    let names: Vec<_> = doc["verification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["verifier"].clone())
        .collect();
    assert_eq!(names, ["syntax", "startup", "tests"]);
    // The script check rejects a version that imports fine but answers nonsense.
    let run = root.run(&[
        "deploy",
        "trading_agent_alpha",
        "--code-file",
        "alpha_wrong_answer.py",
    ]);
    assert_code(&run, 1);
    assert!(run.stdout.contains("returned 'buy'"), "{}", run.stdout);
    root.settings()
        .bind(|| assert_snapshot!("config_script_rejects_human", run.stdout));
    // `verify --agent` runs the same chain as a dry run, writing nothing.
    let run = root.run(&[
        "--json",
        "verify",
        "--agent",
        "trading_agent_alpha",
        "alpha_wrong_answer.py",
    ]);
    assert_code(&run, 1);
    let doc = run.json();
    assert_eq!(doc["passed"], false);
    assert_eq!(doc["verification"][2]["verifier"], "tests");
    let run = root.run(&["verify", "--agent", "trading_agent_alpha", "alpha_v2.py"]);
    assert_code(&run, 0);
    // Another agent gets [chains] default.
    let run = root.run(&[
        "--json",
        "deploy",
        "beta",
        "--file",
        "agents/beta.py",
        "--code-file",
        "alpha_v1.py",
    ]);
    assert_code(&run, 0);
    let names: Vec<_> = run.json()["verification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["verifier"].clone())
        .collect();
    assert_eq!(names, ["syntax", "startup"]);
}

#[test]
fn health_chain_failure_restores_green_and_exits_1() {
    let root = Root::with_config();
    root.write(
        "bluegreen.toml",
        "[verifiers.probe]\nkind = \"script\"\ncommand = [\"python3\", \"checks/check_agent.py\", \"{target}\"]\n\n[chains]\ndefault = [\"syntax\"]\nhealth = [\"probe\"]\n",
    );
    let run = root.deploy("alpha_v1.py");
    assert_code(&run, 0);
    let run = root.run(&[
        "--json",
        "deploy",
        "alpha",
        "--file",
        "agents/alpha.py",
        "--code-file",
        "alpha_wrong_answer.py",
    ]);
    assert_code(&run, 1);
    let doc = run.json();
    assert_eq!(doc["meta"]["status"], "ROLLED_BACK");
    assert_eq!(doc["health"][0]["passed"], false);
    assert_eq!(
        root.read("agents/alpha.py"),
        root.read("alpha_v1.py"),
        "GREEN restored"
    );
}

#[test]
fn python_path_adds_an_import_root_for_startup_checks() {
    let root = Root::new();
    root.write(
        "bluegreen.toml",
        "python_path = [\"src\"]\n\n[verifiers.startup]\nkind = \"python-startup\"\nwarm = false\n\n[chains]\ndefault = [\"syntax\", \"startup\"]\n",
    );
    root.write("src/pkg/__init__.py", "");
    root.write("src/pkg/util.py", "U = 1\n");
    root.write(
        "mod_v1.py",
        "from .util import U\nassert __name__ == 'pkg.mod', __name__\n",
    );
    let run = root.run(&[
        "deploy",
        "mod",
        "--file",
        "src/pkg/mod.py",
        "--code-file",
        "mod_v1.py",
    ]);
    assert_code(&run, 0);
    assert_eq!(root.read("src/pkg/mod.py"), root.read("mod_v1.py"));
}

#[test]
fn python_path_entries_must_be_directories_inside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let root = Root::new();
    std::fs::create_dir(root.path().join("src")).unwrap();
    root.write("file.txt", "");
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    let cases = [
        (
            "python_path = [\"src\", \"../lib\"]\n",
            "1:23",
            "must be a directory inside the root",
        ),
        (
            "python_path = [\"src\", \"lib\"]\n",
            "1:23",
            "\"lib\" does not exist in the root",
        ),
        (
            "python_path = [\"out\"]\n",
            "1:16",
            "\"out\" leaves the root",
        ),
        (
            "python_path = [\"file.txt\"]\n",
            "1:16",
            "is not a directory",
        ),
    ];
    for (text, at, needle) in cases {
        root.write("bluegreen.toml", text);
        let run = root.run(&["status"]);
        assert_code(&run, 2);
        assert!(
            run.stderr
                .starts_with(&format!("error: bluegreen.toml:{at}: `python_path` entry")),
            "{text}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(needle), "{text}: {}", run.stderr);
    }
}

#[test]
fn sandbox_option_of_subprocess_verifiers() {
    // Both values are accepted for python-startup and script verifiers.
    let (_, run) = status_with(
        "[verifiers.startup]\nkind = \"python-startup\"\nsandbox = \"off\"\n\
         [verifiers.tests]\nkind = \"script\"\ncommand = [\"true\"]\nsandbox = \"strict\"\n",
    );
    assert_code(&run, 0);
    // Anything else is refused where it stands.
    let (_, run) = status_with(
        "[verifiers.tests]\nkind = \"script\"\ncommand = [\"true\"]\nsandbox = \"loose\"\n",
    );
    assert_code(&run, 2);
    assert!(
        run.stderr.contains(
            "bluegreen.toml:4:11: unknown sandbox \"loose\"; expected \"strict\" or \"off\""
        ),
        "{}",
        run.stderr
    );
    // python-syntax runs no candidate code: the option is not one of its.
    let (_, run) = status_with("[verifiers.lint]\nkind = \"python-syntax\"\nsandbox = \"off\"\n");
    assert_code(&run, 2);
    assert!(
        run.stderr
            .contains("bluegreen.toml:3:11: `sandbox` is not an option of python-syntax verifiers"),
        "{}",
        run.stderr
    );
    let (_, run) = status_with("[verifiers.startup]\nkind = \"python-startup\"\nsandbox = true\n");
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("bluegreen.toml:3:11:"),
        "{}",
        run.stderr
    );
}
