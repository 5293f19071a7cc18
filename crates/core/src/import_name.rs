//! The name under which Python imports a target file (CONTRACT.md "Python semantics of a
//! swap"): what a `python-startup` check imports the staged bytes as, so that relative
//! imports, `__name__` and `__package__` behave as they will after the cutover.
//!
//! The rule, for a target file and a list of *import roots* (the root itself and the
//! `python_path` entries, absolute):
//! - The deepest import root that contains the target is used.
//! - A `.py` file whose own directory has no `__init__.py` (or is the import root) is
//!   outside any regular package: it is **top-level**, named by its stem, and its directory
//!   is put on `sys.path` after the import roots (`import helper` finds its siblings).
//! - Otherwise every directory between the import root and the file is a package
//!   component: regular packages (with `__init__.py`) and, above them, namespace packages
//!   (without), as CPython resolves them for that root (`ns/pkg/mod.py` with only
//!   `ns/pkg/__init__.py` is `ns.pkg.mod`). A package's `__init__.py` is named by its
//!   package.
//! - If a component is not a Python identifier (or is a keyword), or the target does not end
//!   in `.py`, the file cannot be imported under a dotted name: it falls back to top-level.
//!   Identifiers are checked as "letters, digits and `_`, not starting with a digit"
//!   (Unicode letters count; NFKC normalization is not applied).

use std::path::{Path, PathBuf};

/// How a target is imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportName {
    /// The dotted module name, e.g. `services.agents.alpha` (or `alpha` when top-level).
    pub name: String,
    /// The target is a package's `__init__.py`: the module is the package itself, and its
    /// directory is its `__path__`.
    pub is_package: bool,
    /// The directories to put first on `sys.path`, in order.
    pub sys_path: Vec<PathBuf>,
}

const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Whether `name` can be a component of a dotted import name.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && !PYTHON_KEYWORDS.contains(&name)
}

/// The import name of `target` (absolute) given the import roots (absolute, the root
/// first). Reads the file system only to look for `__init__.py` files.
pub fn import_name(import_roots: &[PathBuf], target: &Path) -> ImportName {
    let dir = target.parent().unwrap_or(Path::new("/"));
    let stem = target
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("agent");
    let top_level = || {
        let mut sys_path = import_roots.to_vec();
        if !sys_path.iter().any(|p| p == dir) {
            sys_path.push(dir.to_path_buf());
        }
        ImportName {
            name: stem.to_owned(),
            is_package: false,
            sys_path,
        }
    };
    let is_python = target.extension().is_some_and(|e| e == "py");
    let Some(components) = package_components(import_roots, dir) else {
        return top_level();
    };
    // A package's own `__init__.py` may not exist yet (its first deployment).
    let is_package = stem == "__init__";
    if !is_python || components.is_empty() || !(is_package || dir.join("__init__.py").is_file()) {
        return top_level();
    }
    let mut parts = components;
    if !is_package {
        parts.push(stem.to_owned());
    }
    if !parts.iter().all(|p| is_identifier(p)) {
        return top_level();
    }
    ImportName {
        name: parts.join("."),
        is_package,
        sys_path: import_roots.to_vec(),
    }
}

/// The directory names from the deepest import root containing `dir` down to `dir`
/// (empty when `dir` is that root); `None` when no root contains it or a name is not UTF-8.
fn package_components(import_roots: &[PathBuf], dir: &Path) -> Option<Vec<String>> {
    let relative = import_roots
        .iter()
        .filter_map(|root| dir.strip_prefix(root).ok())
        .min_by_key(|rest| rest.components().count())?;
    relative
        .components()
        .map(|c| match c {
            std::path::Component::Normal(name) => name.to_str().map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary root with the given files (empty) created.
    fn tree(files: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for file in files {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        (dir, root)
    }

    fn name_of(root: &Path, extra: &[&str], target: &str) -> ImportName {
        let mut roots = vec![root.to_path_buf()];
        roots.extend(extra.iter().map(|e| root.join(e)));
        import_name(&roots, &root.join(target))
    }

    #[test]
    fn outside_any_package_is_top_level_with_its_directory_on_the_path() {
        let (_d, root) = tree(&["services/agents/alpha.py"]);
        let got = name_of(&root, &[], "services/agents/alpha.py");
        assert_eq!(got.name, "alpha");
        assert!(!got.is_package);
        assert_eq!(got.sys_path, [root.clone(), root.join("services/agents")]);
        // A file in the root itself: the root is not repeated.
        let got = name_of(&root, &[], "alpha.py");
        assert_eq!((got.name.as_str(), got.sys_path), ("alpha", vec![root]));
    }

    #[test]
    fn regular_packages_give_a_dotted_name() {
        let (_d, root) = tree(&["services/__init__.py", "services/agents/__init__.py"]);
        let got = name_of(&root, &[], "services/agents/alpha.py");
        assert_eq!(got.name, "services.agents.alpha");
        assert!(!got.is_package);
        assert_eq!(got.sys_path, vec![root.clone()]);
        let got = name_of(&root, &[], "services/agents/__init__.py");
        assert_eq!(
            (got.name.as_str(), got.is_package),
            ("services.agents", true)
        );
    }

    #[test]
    fn namespace_directories_above_a_regular_package_are_components() {
        let (_d, root) = tree(&["ns/pkg/__init__.py"]);
        assert_eq!(name_of(&root, &[], "ns/pkg/mod.py").name, "ns.pkg.mod");
        // A directory without __init__.py holding the file: top-level, not `ns.mod`.
        let (_d, root) = tree(&["ns/mod.py"]);
        assert_eq!(name_of(&root, &[], "ns/mod.py").name, "mod");
    }

    #[test]
    fn the_deepest_import_root_wins() {
        let (_d, root) = tree(&["src/pkg/__init__.py"]);
        let got = name_of(&root, &["src"], "src/pkg/mod.py");
        assert_eq!(got.name, "pkg.mod");
        assert_eq!(got.sys_path, [root.clone(), root.join("src")]);
        // Without the python_path entry, `src` is a namespace package.
        assert_eq!(name_of(&root, &[], "src/pkg/mod.py").name, "src.pkg.mod");
        // A package __init__ directly in an import root is its package.
        let got = name_of(&root, &["src"], "src/pkg/__init__.py");
        assert_eq!((got.name.as_str(), got.is_package), ("pkg", true));
    }

    #[test]
    fn names_python_cannot_import_fall_back_to_top_level() {
        let (_d, root) = tree(&["my-app/__init__.py", "class/__init__.py", "ok/__init__.py"]);
        for target in ["my-app/mod.py", "class/mod.py"] {
            let got = name_of(&root, &[], target);
            assert_eq!(got.name, "mod", "{target}");
            assert_eq!(
                got.sys_path.last(),
                root.join(target).parent().map(Path::to_path_buf).as_ref()
            );
        }
        assert_eq!(name_of(&root, &[], "ok/my-mod.py").name, "my-mod");
        assert_eq!(name_of(&root, &[], "ok/mod.pyw").name, "mod");
        assert_eq!(name_of(&root, &[], "ok/mod.py").name, "ok.mod");
        // An __init__.py in the root itself is not a package.
        assert_eq!(name_of(&root, &[], "__init__.py").name, "__init__");
    }

    #[test]
    fn identifiers() {
        for ok in ["a", "_x", "alpha_2", "été"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "2a", "a-b", "a.b", "None", "import", "a b"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
