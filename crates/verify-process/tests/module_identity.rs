//! python-startup checks the candidate as the module it will be (CONTRACT.md "Python
//! semantics of a swap"): under its dotted import name with its package context, parents
//! imported from the live tree, in cold and warm mode alike, leaving no bytecode behind.

mod common;

use std::path::{Path, PathBuf};

use bluegreen_core::{AgentId, DeploymentId, Verdict, Verifier, VerifyRequest};
use bluegreen_verify_process::{Sandbox, StartupOptions, StartupVerifier};
use common::TIMEOUT;

/// A root with `files` written, and the candidate `code` staged beside `target`.
struct Tree {
    _dir: tempfile::TempDir,
    req: VerifyRequest,
}

impl Tree {
    fn new(files: &[(&str, &str)], target: &str, code: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bgvp-modid-")
            .tempdir()
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let target = root.join(target);
        let parent = target.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        let deployment_id = DeploymentId::generate();
        let file_name = target.file_name().unwrap().to_str().unwrap();
        let staged = parent.join(format!(".{file_name}.bluegreen-{deployment_id}.staged"));
        std::fs::write(&staged, code).unwrap();
        let req = VerifyRequest {
            staged,
            target,
            agent_id: AgentId::new("alpha").unwrap(),
            deployment_id,
            root,
        };
        Self { _dir: dir, req }
    }

    fn root(&self) -> &Path {
        &self.req.root
    }

    /// Every `__pycache__` directory or `.pyc` file under the root.
    fn bytecode(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if name == "__pycache__" || path.extension().is_some_and(|e| e == "pyc") {
                    found.push(path.clone());
                }
                if path.is_dir() {
                    walk(&path, found);
                }
            }
        }
        let mut found = Vec::new();
        walk(self.root(), &mut found);
        found
    }
}

/// Unconfined (`sandbox = "off"`): these agents and parents record that they ran in the root.
fn verifier(warm: bool, python_path: &[&str]) -> StartupVerifier {
    StartupVerifier::new(
        "startup",
        StartupOptions {
            entrypoint: Some("process_event".into()),
            timeout: TIMEOUT,
            warm,
            python_path: python_path.iter().map(PathBuf::from).collect(),
            sandbox: Sandbox::Off,
            ..StartupOptions::default()
        },
    )
}

/// Checks the candidate in a fresh tree per mode (the root in messages shown as `<root>`);
/// asserts that both modes agree, that warm mode ran warm and that no bytecode was written anywhere under the root.
async fn check(files: &[(&str, &str)], target: &str, code: &str, python_path: &[&str]) -> Verdict {
    // The interpreters must not be kept from writing bytecode by the environment.
    std::env::remove_var("PYTHONDONTWRITEBYTECODE");
    let mut verdicts = Vec::new();
    for warm in [false, true] {
        let tree = Tree::new(files, target, code);
        let verifier = verifier(warm, python_path);
        let mut verdict = verifier.verify(&tree.req).await;
        let root = tree.root().to_string_lossy().into_owned();
        for d in &mut verdict.diagnostics {
            d.message = d.message.replace(&root, "<root>");
        }
        if warm {
            assert!(verifier.zygote_pid().is_some(), "{target}: warm ran cold");
        }
        assert_eq!(
            tree.bytecode(),
            Vec::<PathBuf>::new(),
            "{target} (warm={warm})"
        );
        verdicts.push(verdict);
    }
    assert_eq!(verdicts[0], verdicts[1], "{target}: cold and warm differ");
    verdicts.remove(0)
}

/// The environment check every candidate starts with.
const NO_DONT_WRITE: &str =
    "import os\nassert 'PYTHONDONTWRITEBYTECODE' not in os.environ, 'env'\n";

const ENTRYPOINT: &str = "def process_event(e):\n    return e\n";

/// `services/` and `services/agents/` are regular packages; the parents record that they
/// ran from the live tree.
fn package_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("services/__init__.py", "MARKER = 'live services'\n"),
        ("services/common.py", "x = 3\n"),
        (
            "services/agents/__init__.py",
            "with open('agents-init-ran', 'a') as f:\n    f.write('ran\\n')\nAGENTS = 'live'\n",
        ),
        ("services/agents/util.py", "def f():\n    return 1\n"),
        ("services/agents/sibling.py", "VALUE = 2\n"),
        (
            "services/agents/broken.py",
            "x = 1\nraise ValueError('broken sibling')\n",
        ),
        ("services/agents/alpha.py", "GREEN = True\n"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_with_relative_imports_passes_under_its_dotted_name() {
    let code = format!(
        "{NO_DONT_WRITE}\
         from .util import f\n\
         from . import sibling\n\
         from ..common import x\n\
         import sys, services, services.agents\n\
         assert __name__ == 'services.agents.alpha', __name__\n\
         assert __package__ == 'services.agents', __package__\n\
         assert __spec__.name == 'services.agents.alpha', __spec__.name\n\
         assert sys.modules['services.agents.alpha'] is sys.modules[__name__]\n\
         assert services.MARKER == 'live services', 'parent not from the live tree'\n\
         assert services.agents.AGENTS == 'live'\n\
         assert (f(), sibling.VALUE, x) == (1, 2, 3)\n\
         assert not hasattr(sys.modules[__name__], 'GREEN'), 'the live file was imported'\n\
         if __name__ == '__main__':\n    raise SystemExit(1)\n\
         {ENTRYPOINT}"
    );
    let verdict = check(&package_files(), "services/agents/alpha.py", &code, &[]).await;
    assert_eq!(verdict, Verdict::pass());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_run_from_the_live_tree_in_every_warm_check() {
    // The zygote never imports user packages: each forked check imports the parents afresh.
    std::env::remove_var("PYTHONDONTWRITEBYTECODE");
    let code = format!(
        "from . import AGENTS\nassert AGENTS == 'live'\n\
         assert open('agents-init-ran').read() == 'ran\\n', 'parent state leaked'\n{ENTRYPOINT}"
    );
    let verifier = verifier(true, &[]);
    for _ in 0..3 {
        let tree = Tree::new(&package_files(), "services/agents/alpha.py", &code);
        assert_eq!(verifier.verify(&tree.req).await, Verdict::pass());
        let ran = std::fs::read_to_string(tree.root().join("agents-init-ran")).unwrap();
        assert_eq!(ran, "ran\n");
    }
    assert!(verifier.zygote_pid().is_some(), "warm mode ran cold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_init_is_checked_as_its_package() {
    let code = format!(
        "{NO_DONT_WRITE}\
         import os\n\
         from .util import f\n\
         assert __name__ == 'services.agents', __name__\n\
         assert __package__ == 'services.agents', __package__\n\
         assert __spec__.name == 'services.agents'\n\
         assert __path__ == [os.path.dirname(__file__)], __path__\n\
         {ENTRYPOINT}"
    );
    let verdict = check(&package_files(), "services/agents/__init__.py", &code, &[]).await;
    assert_eq!(verdict, Verdict::pass());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_directory_above_a_regular_package_is_part_of_the_name() {
    let files = [
        ("ns/pkg/__init__.py", ""),
        ("ns/pkg/helper.py", "H = 'h'\n"),
    ];
    let code = format!(
        "{NO_DONT_WRITE}\
         from .helper import H\n\
         import ns\n\
         assert __name__ == 'ns.pkg.mod', __name__\n\
         assert __package__ == 'ns.pkg', __package__\n\
         assert __spec__.name == 'ns.pkg.mod'\n\
         assert getattr(ns, '__file__', None) is None, 'ns is not a namespace package'\n\
         assert H == 'h'\n\
         {ENTRYPOINT}"
    );
    assert_eq!(
        check(&files, "ns/pkg/mod.py", &code, &[]).await,
        Verdict::pass()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_outside_any_package_stays_top_level() {
    let files = [(
        "services/agents/helper.py",
        "def help():\n    return 'ok'\n",
    )];
    let code = format!(
        "{NO_DONT_WRITE}\
         import helper\n\
         assert __name__ == 'alpha', __name__\n\
         assert __package__ == '', repr(__package__)\n\
         assert __spec__.name == 'alpha'\n\
         assert helper.help() == 'ok'\n\
         if __name__ == '__main__':\n    raise SystemExit(1)\n\
         {ENTRYPOINT}"
    );
    let verdict = check(&files, "services/agents/alpha.py", &code, &[]).await;
    assert_eq!(verdict, Verdict::pass());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_src_layout_via_python_path_names_the_module_from_src() {
    let files = [
        ("src/pkg/__init__.py", "ROOT = 'src'\n"),
        ("src/pkg/util.py", "U = 5\n"),
    ];
    let code = format!(
        "{NO_DONT_WRITE}\
         from .util import U\n\
         from . import ROOT\n\
         assert __name__ == 'pkg.mod', __name__\n\
         assert __package__ == 'pkg', __package__\n\
         assert (U, ROOT) == (5, 'src')\n\
         {ENTRYPOINT}"
    );
    let verdict = check(&files, "src/pkg/mod.py", &code, &["src"]).await;
    assert_eq!(verdict, Verdict::pass());
    // Without the import root, `src` is a namespace package and the name says so.
    let code =
        format!("assert __name__ == 'src.pkg.mod', __name__\nfrom .util import U\n{ENTRYPOINT}");
    assert_eq!(
        check(&files, "src/pkg/mod.py", &code, &[]).await,
        Verdict::pass()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_import_of_a_missing_sibling_is_rejected_at_its_line() {
    let code = "import os\nfrom .util import f\nfrom .missing import g\n";
    let verdict = check(&package_files(), "services/agents/alpha.py", code, &[]).await;
    assert!(!verdict.passed, "{verdict:?}");
    let d = &verdict.diagnostics[0];
    assert_eq!((d.line, d.column), (3, 1), "{verdict:?}");
    assert_eq!(
        d.message, "ModuleNotFoundError: No module named 'services.agents.missing'",
        "{verdict:?}"
    );
    // `from . import name` of a missing sibling, too.
    let code = "x = 1\n\nfrom . import nothing_here\n";
    let verdict = check(&package_files(), "services/agents/alpha.py", code, &[]).await;
    let d = &verdict.diagnostics[0];
    assert_eq!(d.line, 3, "{verdict:?}");
    assert!(
        d.message
            .starts_with("ImportError: cannot import name 'nothing_here' from 'services.agents'"),
        "{verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_a_relative_imported_sibling_points_at_the_importing_line() {
    let code = "import os\n\nfrom . import broken\n";
    let verdict = check(&package_files(), "services/agents/alpha.py", code, &[]).await;
    let d = &verdict.diagnostics[0];
    assert_eq!(
        (d.line, d.message.as_str()),
        (3, "ValueError: broken sibling"),
        "{verdict:?}"
    );
    // A syntax error and the entrypoint check still point into the candidate.
    let code = "from .util import f\nx = (\n";
    let verdict = check(&package_files(), "services/agents/alpha.py", code, &[]).await;
    assert!(
        verdict.diagnostics[0].message.starts_with("SyntaxError"),
        "{verdict:?}"
    );
    assert_eq!(verdict.diagnostics[0].line, 2, "{verdict:?}");
    let code = "from .util import f\nprocess_event = 3\n";
    let verdict = check(&package_files(), "services/agents/alpha.py", code, &[]).await;
    assert_eq!(verdict.diagnostics[0].line, 2, "{verdict:?}");
    assert!(
        verdict.diagnostics[0].message.contains("is not callable"),
        "{verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_package_found_elsewhere_on_the_path_is_a_clear_failure() {
    // `src/services/agents/alpha.py` is `services.agents.alpha` for the `src` import root,
    // but `import services` finds the root's own `services` package first (as it would in
    // production with this sys.path): the check says so instead of importing the wrong one.
    let files = [
        ("services/__init__.py", ""),
        ("services/agents/__init__.py", ""),
        ("src/services/__init__.py", ""),
        ("src/services/agents/__init__.py", ""),
    ];
    let verdict = check(&files, "src/services/agents/alpha.py", ENTRYPOINT, &["src"]).await;
    assert!(!verdict.passed, "{verdict:?}");
    let message = &verdict.diagnostics[0].message;
    assert!(
        message.starts_with("ImportError: package 'services.agents' is not the target's directory <root>/src/services/agents"),
        "{verdict:?}"
    );
}
