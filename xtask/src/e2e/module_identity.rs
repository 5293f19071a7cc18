//! Scenario 12 (issue 13): the startup check imports the candidate as the module it will be.
//! CLI deploys over a regular package with relative imports, a namespace directory above a
//! regular package, a `src/` layout through `python_path`, and a relative import of a
//! missing sibling (rejected at its line, GREEN kept), with cold and with warm startup.

use std::path::Path;
use std::process::Command;

use super::cli::{ensure, expect_bytes, expect_no_staged, run, write, COMMAND_TIMEOUT};
use super::config::{toml, ChainKind, Settings};
use super::{Case, Outcome, Row};
use crate::e2e::cli::Bg;

#[derive(Debug, Clone, Copy)]
enum Layout {
    Package,
    Namespace,
    Src,
    MissingSibling,
}

impl Layout {
    const ALL: [Layout; 4] = [
        Layout::Package,
        Layout::Namespace,
        Layout::Src,
        Layout::MissingSibling,
    ];

    fn name(self) -> &'static str {
        match self {
            Layout::Package => "package",
            Layout::Namespace => "namespace",
            Layout::Src => "src-layout",
            Layout::MissingSibling => "missing-sibling",
        }
    }

    /// The tree around the target, the target, its `python_path` and the expected name.
    fn tree(
        self,
    ) -> (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    ) {
        const PACKAGE: &[(&str, &str)] = &[
            ("services/__init__.py", "MARKER = 'live'\n"),
            ("services/common.py", "x = 3\n"),
            ("services/agents/__init__.py", ""),
            ("services/agents/util.py", "def f():\n    return 1\n"),
        ];
        match self {
            Layout::Package | Layout::MissingSibling => (PACKAGE, "services/agents/alpha.py", ""),
            Layout::Namespace => (
                &[
                    ("ns/pkg/__init__.py", ""),
                    ("ns/pkg/util.py", "def f():\n    return 1\n"),
                ],
                "ns/pkg/mod.py",
                "",
            ),
            Layout::Src => (
                &[
                    ("src/pkg/__init__.py", ""),
                    ("src/pkg/util.py", "def f():\n    return 1\n"),
                ],
                "src/pkg/mod.py",
                "python_path = [\"src\"]\n",
            ),
        }
    }

    /// Version `tag` of the candidate: imports relatively and asserts its own identity.
    fn code(self, tag: &str) -> String {
        let identity = match self {
            Layout::Package | Layout::MissingSibling => {
                "from ..common import x\nimport services\nassert services.MARKER == 'live'\n\
                 assert __name__ == 'services.agents.alpha', __name__\n\
                 assert __package__ == 'services.agents', __package__\n"
            }
            Layout::Namespace => "assert __name__ == 'ns.pkg.mod', __name__\n",
            Layout::Src => "assert __name__ == 'pkg.mod', __name__\n",
        };
        format!(
            "from .util import f\n{identity}assert __spec__.name == __name__\n\
             if __name__ == '__main__':\n    raise SystemExit(1)\nVERSION = {tag:?}\n\n\
             def process_event(event):\n    return {{'version': VERSION, 'f': f()}}\n"
        )
    }
}

pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for layout in Layout::ALL {
        for chain in [ChainKind::StartupCold, ChainKind::StartupWarm] {
            rows.push(Row::run(
                format!("12 module-identity/{}", layout.name()),
                format!("file/{}", chain.name()),
                move |c| scenario(c, chain, layout),
            ));
        }
    }
    rows
}

fn scenario(c: &Case, chain: ChainKind, layout: Layout) -> Outcome {
    let (files, target, python_path) = layout.tree();
    let config = format!(
        "{python_path}{}",
        toml(chain, &Settings::default(), &c.ctx.fixtures)
    );
    write(&c.root.join("bluegreen.toml"), config.as_bytes())?;
    for (path, text) in files {
        write(&c.root.join(path), text.as_bytes())?;
    }
    let bg = Bg::new(&c.ctx.bin, &c.root);
    let v1 = layout.code("1");
    bg.deploy_ok("alpha", target, v1.as_bytes())?;
    let detail = match layout {
        Layout::MissingSibling => missing_sibling(c, &bg, target, &v1)?,
        _ => {
            let v2 = layout.code("2");
            bg.deploy_ok("alpha", target, v2.as_bytes())?;
            expect_bytes(&c.root.join(target), v2.as_bytes(), "v2")?;
            format!("{target} deployed twice, checked as its dotted name")
        }
    };
    expect_no_staged(&c.root)?;
    let bytecode = bytecode_under(&c.root);
    ensure!(
        bytecode.is_empty(),
        "bytecode written under the root: {bytecode:?}"
    );
    Ok(detail)
}

/// A candidate whose relative import names a missing sibling: rejected at line 3 of the
/// target, GREEN kept.
fn missing_sibling(c: &Case, bg: &Bg, target: &str, green: &str) -> Outcome {
    let bad = "import os\nfrom .util import f\nfrom .missing import g\n";
    let doc = bg
        .deploy("alpha", target, bad.as_bytes())?
        .expect(1, "deploy of the bad candidate")?;
    let diagnostic = &doc["verification"][0]["diagnostics"][0];
    ensure!(
        diagnostic["line"] == 3
            && diagnostic["message"]
                == "ModuleNotFoundError: No module named 'services.agents.missing'",
        "wrong diagnostic: {doc}"
    );
    expect_bytes(&c.root.join(target), green.as_bytes(), "GREEN")?;
    // The human output names the target's path and the import's line.
    let code_file = c.dir.join("bad.py");
    write(&code_file, bad.as_bytes())?;
    let mut cmd = Command::new(&c.ctx.bin);
    cmd.arg("--root")
        .arg(&c.root)
        .env("NO_COLOR", "1")
        .env_remove("BLUEGREEN_FAULT");
    cmd.args(["deploy", "alpha", "--file", target, "--code-file"])
        .arg(&code_file);
    let out = run(&mut cmd, None, COMMAND_TIMEOUT)?;
    let location = format!("{target}:3:1:");
    ensure!(
        out.code == Some(1) && (out.stdout.contains(&location) || out.stderr.contains(&location)),
        "the human output does not point at {location}: {}",
        out.describe()
    );
    Ok(format!(
        "rejected at {location} No module named 'services.agents.missing'"
    ))
}

/// Every `__pycache__` directory or `.pyc` file under `dir`.
fn bytecode_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == "__pycache__" || path.extension().is_some_and(|e| e == "pyc") {
            found.push(path.display().to_string());
        } else if path.is_dir() {
            found.extend(bytecode_under(&path));
        }
    }
    found
}
