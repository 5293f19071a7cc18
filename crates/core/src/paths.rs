//! Confining paths to the root (CONTRACT.md "Input rules").
//!
//! Invariant: every path the service writes is produced by [`resolve_target`] (targets) or
//! by a store under its own checked directories — nothing is ever written outside the root,
//! whatever `..`, absolute paths or symlinks the caller passes.

use std::path::{Component, Path, PathBuf};

use crate::error::Error;

/// Top-level names under the root that belong to bluegreen; targets may not live there.
pub const RESERVED_TOP_LEVEL: [&str; 2] = [".bluegreen", "backups"];

/// Longest target file name we accept: the staged sibling adds about 50 bytes and must
/// still fit in NAME_MAX (255).
pub const MAX_FILE_NAME: usize = 200;

/// A target file, resolved inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Relative to the root, `/`-separated, no `.`/`..`, symlinks inside the root resolved.
    pub rel: String,
    /// Absolute path under the canonical root.
    pub abs: PathBuf,
}

impl Target {
    /// The target's extension with its dot (`.py`), or empty.
    pub fn extension(&self) -> String {
        self.abs
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| format!(".{e}"))
            .unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.abs.parent().unwrap_or(Path::new("/"))
    }

    pub fn file_name(&self) -> &str {
        self.abs.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }
}

/// Canonicalizes the root: it must exist and be a directory.
pub fn canonical_root(root: &Path) -> Result<PathBuf, Error> {
    let canon = root
        .canonicalize()
        .map_err(|e| Error::BadInput(format!("root {} is not usable: {e}", root.display())))?;
    if !canon.is_dir() {
        return Err(Error::BadInput(format!(
            "root {} is not a directory",
            root.display()
        )));
    }
    Ok(canon)
}

/// Resolves `raw` (relative to the root, or absolute inside it) to a target file.
///
/// Refused: empty paths, NUL bytes, anything that normalizes outside the root, an existing
/// component that is a symlink leading outside the root (or dangling), a directory, a path
/// through a regular file, the root itself, and bluegreen's own state directories.
pub fn resolve_target(root: &Path, raw: &str) -> Result<Target, Error> {
    let bad = |why: String| Error::BadInput(format!("invalid file path {raw:?}: {why}"));
    if raw.is_empty() {
        return Err(bad("must not be empty".into()));
    }
    if raw.contains('\0') {
        return Err(bad("contains a NUL byte".into()));
    }
    let path = Path::new(raw);
    let relative: PathBuf = if path.is_absolute() {
        match path.strip_prefix(root) {
            Ok(rel) => rel.to_path_buf(),
            // The caller may spell the root differently (a symlinked or relative --root):
            // compare canonical forms of the deepest existing ancestor.
            Err(_) => canonical_prefix(path)
                .and_then(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
                .ok_or_else(|| bad("absolute path outside the root".into()))?,
        }
    } else {
        path.to_path_buf()
    };

    // Lexical normalization first: `..` may never climb above the root.
    let mut parts: Vec<&str> = Vec::new();
    for component in relative.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(bad("escapes the root".into()));
                }
            }
            Component::Normal(name) => {
                parts.push(name.to_str().ok_or_else(|| bad("not valid UTF-8".into()))?)
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("absolute path outside the root".into()))
            }
        }
    }
    if parts.is_empty() {
        return Err(bad("names the root itself, not a file".into()));
    }
    if raw.ends_with('/') {
        return Err(bad("names a directory".into()));
    }

    // Then walk what exists, resolving symlinks and checking each stays inside.
    let mut current = root.to_path_buf();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        let next = current.join(part);
        match std::fs::symlink_metadata(&next) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                current = next;
                continue;
            }
            Err(e) => return Err(bad(format!("cannot inspect {part:?}: {e}"))),
            Ok(meta) if meta.file_type().is_symlink() => {
                let resolved = next
                    .canonicalize()
                    .map_err(|_| bad(format!("symlink {part:?} is dangling")))?;
                if !resolved.starts_with(root) {
                    return Err(bad(format!("symlink {part:?} leads outside the root")));
                }
                if i < last && !resolved.is_dir() {
                    return Err(bad(format!("{part:?} is not a directory")));
                }
                current = resolved;
            }
            Ok(meta) => {
                if i < last && !meta.is_dir() {
                    return Err(bad(format!("{part:?} is not a directory")));
                }
                current = next;
            }
        }
    }
    if current.is_dir() {
        return Err(bad("is a directory".into()));
    }
    let rel_path = current
        .strip_prefix(root)
        .map_err(|_| bad("escapes the root".into()))?;
    let rel = rel_path
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/");
    if rel.is_empty() {
        return Err(bad("names the root itself, not a file".into()));
    }
    let top = rel.split('/').next().unwrap_or("");
    if RESERVED_TOP_LEVEL.contains(&top) {
        return Err(bad(format!("{top}/ is reserved for bluegreen's own state")));
    }
    let target = Target { rel, abs: current };
    if target.file_name().len() > MAX_FILE_NAME {
        return Err(bad(format!("file name longer than {MAX_FILE_NAME} bytes")));
    }
    Ok(target)
}

/// `path` with its deepest existing ancestor canonicalized (the rest appended as is).
fn canonical_prefix(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canon) = existing.canonicalize() {
            let mut out = canon;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Some(out);
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

/// Checks that `dir` (under the canonical root) has no existing component that is a symlink
/// leading outside the root. Stores call this before writing under their own directories,
/// so a planted `backups -> /etc` symlink cannot redirect a write.
pub fn check_inside_root(root: &Path, dir: &Path) -> Result<(), Error> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| Error::BadInput(format!("{} is outside the root", dir.display())))?;
    let mut current = root.to_path_buf();
    for component in rel.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Err(_) => return Ok(()), // the rest does not exist yet; it will be created as real dirs
            Ok(meta) if meta.file_type().is_symlink() => {
                let resolved = current.canonicalize().map_err(|_| {
                    Error::BadInput(format!("{} is a dangling symlink", current.display()))
                })?;
                if !resolved.starts_with(root) {
                    return Err(Error::BadInput(format!(
                        "{} is a symlink leading outside the root; refusing to write through it",
                        current.display()
                    )));
                }
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// A registry value for a message: quoted, but never an absolute path (which would name
/// something outside the root, or the root itself).
fn shown(p: &str) -> String {
    if p.starts_with('/') {
        "an absolute path".to_owned()
    } else {
        format!("{p:?}")
    }
}

/// Checks a target path read back from the registry: relative, `/`-separated plain
/// components, not under bluegreen's own directories. (Lexical: the deployment then reaches
/// it by descriptor without following symlinks.)
pub fn check_registry_target(rel: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("file path {} {why}", shown(rel)));
    if rel.is_empty() || rel.starts_with('/') || rel.ends_with('/') {
        return bad("is not a relative file path");
    }
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return bad("is not normalized");
        }
    }
    let top = rel.split('/').next().unwrap_or("");
    if RESERVED_TOP_LEVEL.contains(&top) {
        return bad("is under bluegreen's own state");
    }
    if crate::dirfd::split_rel(rel).1.len() > MAX_FILE_NAME {
        return bad("has a file name that is too long");
    }
    Ok(())
}

/// Is `staged` the name of a staged sibling of the file `target_name`:
/// `.<name>.bluegreen-dep_<32 hex>.staged` or `.<name>.bluegreen-rb-<32 hex>.staged`?
pub fn is_staged_name(target_name: &str, staged: &str) -> bool {
    let Some(tag) = staged
        .strip_prefix('.')
        .and_then(|s| s.strip_prefix(target_name))
        .and_then(|s| s.strip_prefix(".bluegreen-"))
        .and_then(|s| s.strip_suffix(".staged"))
    else {
        return false;
    };
    let hex = tag
        .strip_prefix("dep_")
        .or_else(|| tag.strip_prefix("rb-"))
        .unwrap_or("");
    hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a staged path read back from the registry: the sibling of `file_path` with the
/// staged name pattern. Returns the staged file's name.
pub fn check_staged<'a>(file_path: &str, staged: &'a str) -> Result<&'a str, String> {
    let (dir, name) = crate::dirfd::split_rel(file_path);
    let (sdir, sname) = crate::dirfd::split_rel(staged);
    if sdir != dir || !is_staged_name(name, sname) {
        return Err(format!(
            "staged path {} is not a staged sibling of {}",
            shown(staged),
            shown(file_path)
        ));
    }
    Ok(sname)
}

/// Checks a snapshot path read back from the registry:
/// `backups/agents/<agent>/green_<...>`, one plain file name. Returns that name.
pub fn check_snapshot<'a>(agent: &str, path: &'a str) -> Result<&'a str, String> {
    let name = path
        .strip_prefix("backups/agents/")
        .and_then(|p| p.strip_prefix(agent))
        .and_then(|p| p.strip_prefix('/'))
        .filter(|n| {
            n.starts_with("green_")
                && n.len() <= 255
                && !n.contains(['/', '\0'])
                && *n != "."
                && *n != ".."
        });
    name.ok_or_else(|| {
        format!(
            "snapshot path {} is not a snapshot of agent {agent}",
            shown(path)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let canon = canonical_root(dir.path()).unwrap();
        (dir, canon)
    }

    #[test]
    fn accepts_relative_absolute_and_normalizes() {
        let (_d, root) = root();
        let t = resolve_target(&root, "services/agents/a.py").unwrap();
        assert_eq!(t.rel, "services/agents/a.py");
        assert_eq!(t.abs, root.join("services/agents/a.py"));
        assert_eq!(t.extension(), ".py");
        let t = resolve_target(&root, "./x/../services//a.py").unwrap();
        assert_eq!(t.rel, "services/a.py");
        let abs = root.join("b.py");
        let t = resolve_target(&root, abs.to_str().unwrap()).unwrap();
        assert_eq!(t.rel, "b.py");
        // The root spelled through a symlink still counts as inside.
        let alias = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&root, alias.path().join("r")).unwrap();
        let spelled = alias.path().join("r/new/c.py");
        let t = resolve_target(&root, spelled.to_str().unwrap()).unwrap();
        assert_eq!(t.rel, "new/c.py");
    }

    #[test]
    fn refuses_escapes() {
        let (_d, root) = root();
        std::fs::create_dir(root.join("dir")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        for raw in [
            "",
            "../a.py",
            "a/../../b.py",
            "/etc/passwd",
            ".",
            "dir",
            "dir/",
            "file/x.py",
            "a\0b.py",
            ".bluegreen/registry",
            "backups/agents/x/green.py",
        ] {
            let err = resolve_target(&root, raw).unwrap_err();
            assert!(matches!(err, Error::BadInput(_)), "{raw:?}: {err}");
        }
        let long = format!("{}.py", "n".repeat(MAX_FILE_NAME));
        assert!(resolve_target(&root, &long).is_err());
    }

    #[test]
    fn symlinks_inside_are_resolved_outside_refused() {
        let (_d, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("inside")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f.py"), root.join("leaf.py")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        assert_eq!(
            resolve_target(&root, "inside/a.py").unwrap().rel,
            "real/a.py"
        );
        assert!(resolve_target(&root, "escape/a.py").is_err());
        std::fs::write(outside.path().join("f.py"), b"x").unwrap();
        assert!(resolve_target(&root, "leaf.py").is_err());
        assert!(resolve_target(&root, "dangling/a.py").is_err());
        assert!(check_inside_root(&root, &root.join("escape/agents")).is_err());
        assert!(check_inside_root(&root, &root.join("inside/agents")).is_ok());
    }
}
