//! Bytecode coherence of a swap (CONTRACT.md "Python semantics of a swap"): once new bytes
//! are live, no interpreter may load bytecode of the bytes they replaced. Two mechanisms,
//! each covering what the other cannot (ARCHITECTURE.md "Bytecode coherence" has the
//! argument):
//!
//! - [`stamp`]: the replacing file's mtime is a whole second strictly after the replaced
//!   file's (and not before now). CPython's default pyc check compares the source's mtime
//!   second and size with what the pyc recorded, so no timestamp pyc of an earlier version
//!   validates against the new bytes — wherever it is cached (`PYTHONPYCACHEPREFIX` too) and
//!   even if an interpreter that read the old version writes it after the swap.
//! - [`clear`]: removes the target's cached bytecode, which the mtime cannot invalidate:
//!   unchecked-hash pycs (never validated) and a legacy `<stem>.pyc` beside the source (loaded
//!   when the source is gone). Only `.py` targets: on POSIX, CPython imports no other source
//!   suffix (`importlib.machinery.SOURCE_SUFFIXES == ['.py']`; `.pyw` is Windows-only).
//!
//! Nothing here follows a symlink or touches anything but the target's directory and its
//! `__pycache__`, and nothing needs an interpreter.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::dirfd;
use crate::error::Error;

/// The suffix of the sources CPython caches bytecode for.
const SOURCE_SUFFIX: &str = ".py";
const CACHE_DIR: &str = "__pycache__";

/// The mtime for bytes replacing a file whose mtime is `replaced` (`None`: no file): the
/// later of `now` and one second after `replaced`, in whole seconds. Successive versions of
/// a file so have strictly increasing mtime seconds, running ahead of the clock by at most
/// the number of swaps within one second.
pub fn next_mtime(replaced: Option<SystemTime>, now: SystemTime) -> SystemTime {
    let floor = replaced.map_or(0, |t| secs(t).saturating_add(1));
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs(now).max(floor)))
        .unwrap_or(now)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A file's mtime from its `stat` (before the epoch: the epoch; only seconds matter here).
pub fn mtime(st: &Stat) -> SystemTime {
    let secs = u64::try_from(st.st_mtime).unwrap_or(0);
    let nanos = u32::try_from(st.st_mtime_nsec)
        .unwrap_or(0)
        .min(999_999_999);
    UNIX_EPOCH
        .checked_add(Duration::new(secs, nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// Gives `file` (BLUE, before its fsync, so the mtime is durable with its bytes) the mtime
/// [`next_mtime`] computes from the replaced file's. Returns it, for [`keep_ahead`].
pub fn stamp(file: &File, replaced: Option<SystemTime>) -> std::io::Result<SystemTime> {
    let mtime = next_mtime(replaced, SystemTime::now());
    file.set_modified(mtime)?;
    Ok(mtime)
}

/// Right before the rename of `staged` over `replaced` (names in `dir`): if the replaced
/// file was modified since [`stamp`] read its mtime (a hand edit or `touch` during
/// verification) and caught up with `planned`, stamps the staged file past it again and
/// syncs it (rare). One `lstat` otherwise.
pub fn keep_ahead(
    dir: &dirfd::Dir,
    staged: &str,
    replaced: &str,
    planned: SystemTime,
) -> std::io::Result<()> {
    let Some(st) = dir.stat(replaced)? else {
        return Ok(());
    };
    let current = mtime(&st);
    if secs(current) < secs(planned) {
        return Ok(());
    }
    let Some((file, _)) = dir.open_file(staged, OFlags::RDONLY)? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{staged:?} is gone"),
        ));
    };
    stamp(&file, Some(current))?;
    file.sync_all()
}

/// The module stem of a target CPython caches bytecode for (`m` for `m.py`), else `None`.
pub fn source_stem(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(SOURCE_SUFFIX)
        .filter(|stem| !stem.is_empty())
}

/// Is `entry` (a name in `__pycache__`) bytecode of the source with stem `stem`?
/// CPython names it `<stem>.<cache tag>[.opt-<level>].pyc` (`importlib.util.cache_from_source`;
/// the tag has no dot, the level is alphanumeric), so `a` does not match `ab.cpython-311.pyc`
/// nor `a.b.cpython-311.pyc` (the cache of `a.b.py`).
pub fn is_cache_of(entry: &str, stem: &str) -> bool {
    let Some(rest) = entry
        .strip_suffix(".pyc")
        .and_then(|e| e.strip_prefix(stem))
        .and_then(|e| e.strip_prefix('.'))
    else {
        return false;
    };
    let (tag, opt) = match rest.split_once('.') {
        Some((tag, opt)) => (tag, Some(opt)),
        None => (rest, None),
    };
    let opt_ok = opt.is_none_or(|o| {
        o.strip_prefix("opt-").is_some_and(|level| {
            !level.is_empty() && level.chars().all(|c| c.is_ascii_alphanumeric())
        })
    });
    !tag.is_empty() && opt_ok
}

/// Is `entry` (a name in `__pycache__`) bytecode of one of bluegreen's hidden siblings of
/// `file_name` (`.<file_name>.bluegreen-<id>.staged` caches as
/// `.<file_name>.bluegreen-<id>.<tag>.pyc`)? bluegreen never writes these (its checks run
/// with bytecode writing off); a verifier script might, and the same scan removes them.
pub fn is_staged_cache(entry: &str, file_name: &str) -> bool {
    entry.ends_with(".pyc")
        && entry
            .strip_prefix('.')
            .and_then(|e| e.strip_prefix(file_name))
            .is_some_and(|e| e.starts_with(".bluegreen-"))
}

/// What [`clear`] removed inside `__pycache__`. [`Cleared::sync`] makes those removals
/// durable; a legacy pyc beside the source is in the target's directory, which the caller
/// syncs after the rename anyway.
#[derive(Debug, Default)]
#[must_use = "the removals in __pycache__ are durable only after sync()"]
pub struct Cleared {
    cache: Option<(Dir, String)>,
}

impl Cleared {
    /// fsyncs `__pycache__` if anything was removed from it (no syscall otherwise).
    pub fn sync(self) -> Result<(), Error> {
        let Some((dir, shown)) = self.cache else {
            return Ok(());
        };
        dir.fd()
            .and_then(rustix::fs::fsync)
            .map_err(|e| Error::io(format!("syncing {shown}"), e.into()))
    }
}

/// Removes every cached bytecode of the target `rel` (relative to the root; `dir` is its
/// directory): `__pycache__/<stem>.<tag>[.opt-N].pyc` (and bytecode of its staged names),
/// and a legacy `<stem>.pyc` beside it. Nothing for non-`.py` targets. A `__pycache__` that
/// is a symlink (or no directory) is left alone with a warning. Costs one failed `unlink`
/// and one failed `open` when there is nothing to remove.
pub fn clear(dir: BorrowedFd<'_>, rel: &str) -> Result<Cleared, Error> {
    let (rel_dir, file_name) = dirfd::split_rel(rel);
    let Some(stem) = source_stem(file_name) else {
        return Ok(Cleared::default());
    };
    let shown = |name: &str| match rel_dir {
        "" => name.to_owned(),
        d => format!("{d}/{name}"),
    };
    let legacy = format!("{stem}.pyc");
    remove(dir, &legacy, || shown(&legacy))?;

    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let cache = match rustix::fs::openat(dir, CACHE_DIR, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Cleared::default()),
        Err(Errno::LOOP | Errno::NOTDIR) => {
            tracing::warn!(
                path = %shown(CACHE_DIR),
                "not a directory (a symlink?): its bytecode is left alone; the new mtime still \
                 invalidates timestamp pycs in it"
            );
            return Ok(Cleared::default());
        }
        Err(e) => return Err(Error::io(format!("opening {}", shown(CACHE_DIR)), e.into())),
    };
    let shown_cache = shown(CACHE_DIR);
    let reading = |e: Errno| Error::io(format!("reading {shown_cache}"), e.into());
    let mut entries = Dir::new(cache).map_err(reading)?;
    let mut doomed = Vec::new();
    for entry in entries.by_ref() {
        let entry = entry.map_err(reading)?;
        if entry.file_type() == FileType::Directory {
            continue;
        }
        let Ok(name) = entry.file_name().to_str() else {
            continue; // not UTF-8: no cache of a UTF-8 file name
        };
        if is_cache_of(name, stem) || is_staged_cache(name, file_name) {
            doomed.push(name.to_owned());
        }
    }
    if doomed.is_empty() {
        return Ok(Cleared::default());
    }
    let fd = entries.fd().map_err(reading)?;
    for name in &doomed {
        remove(fd, name, || format!("{shown_cache}/{name}"))?;
    }
    Ok(Cleared {
        cache: Some((entries, shown_cache)),
    })
}

/// Unlinks `name` in `dir`, never following a symlink (a symlink itself is unlinked).
/// Missing and directories are fine; other failures are errors naming `shown()`.
fn remove(dir: BorrowedFd<'_>, name: &str, shown: impl FnOnce() -> String) -> Result<(), Error> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT | Errno::ISDIR) => Ok(()),
        Err(e) => Err(Error::io(
            format!("removing stale bytecode {}", shown()),
            e.into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::path::Path;

    use super::*;

    #[test]
    fn caches_of_a_stem_and_nothing_else() {
        for yes in [
            "a.cpython-311.pyc",
            "a.cpython-313.opt-1.pyc",
            "a.cpython-311.opt-2.pyc",
            "a.pypy39.pyc",
            "a.cpython-311.opt-x7.pyc",
        ] {
            assert!(is_cache_of(yes, "a"), "{yes}");
        }
        for no in [
            "ab.cpython-311.pyc",  // another module whose name starts with the stem
            "a.b.cpython-311.pyc", // the cache of a.b.py
            "a.b.cpython-311.opt-1.pyc",
            "a.cpython-311.opt-.pyc", // empty level
            "a.cpython-311.opt-1.x.pyc",
            "a.cpython-311.opt_1.pyc",
            "a..pyc",
            "a.pyc",
            "a.cpython-311.py",
            "a.cpython-311.pyc.tmp",
            "b.cpython-311.pyc",
        ] {
            assert!(!is_cache_of(no, "a"), "{no}");
        }
        // Dotted stems (a file `a.b.py`) match their own caches only.
        assert!(is_cache_of("a.b.cpython-311.pyc", "a.b"));
        assert!(!is_cache_of("a.cpython-311.pyc", "a.b"));
    }

    #[test]
    fn only_py_sources_have_a_stem() {
        assert_eq!(source_stem("m.py"), Some("m"));
        assert_eq!(source_stem("a.b.py"), Some("a.b"));
        for name in ["m.pyw", "m.pyc", "m.txt", "m", ".py", "m.PY", "m.py.bak"] {
            assert_eq!(source_stem(name), None, "{name}");
        }
    }

    #[test]
    fn caches_of_staged_names_are_recognized() {
        assert!(is_staged_cache(
            ".m.py.bluegreen-dep_1.cpython-311.pyc",
            "m.py"
        ));
        assert!(is_staged_cache(
            ".m.py.bluegreen-rb-ab.cpython-311.opt-1.pyc",
            "m.py"
        ));
        assert!(!is_staged_cache(".m.py.bluegreen-dep_1.staged", "m.py"));
        assert!(!is_staged_cache(
            ".mm.py.bluegreen-dep_1.cpython-311.pyc",
            "m.py"
        ));
        assert!(!is_staged_cache("m.cpython-311.pyc", "m.py"));
    }

    #[test]
    fn mtimes_strictly_increase_and_stay_whole_seconds() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        // Same second as the replaced file: one second later.
        assert_eq!(next_mtime(Some(at(100, 300)), at(100, 900)), at(101, 0));
        // The replaced file is older: now, truncated.
        assert_eq!(next_mtime(Some(at(50, 0)), at(100, 900)), at(100, 0));
        // Ahead of the clock (many swaps in one second): keeps increasing.
        assert_eq!(next_mtime(Some(at(103, 0)), at(100, 10)), at(104, 0));
        assert_eq!(next_mtime(None, at(100, 999)), at(100, 0));
        // Before the epoch, or absurdly late: no panic.
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(next_mtime(Some(before), at(100, 0)), at(100, 0));
        let _ = next_mtime(Some(at(u64::MAX / 1000, 0)), at(100, 0));
    }

    /// [`clear`] on `rel` under `root`, with its directory opened by path.
    fn clear_target(root: &Path, rel: &str) -> Result<Cleared, Error> {
        let dir = File::open(root.join(dirfd::split_rel(rel).0)).unwrap();
        clear(dir.as_fd(), rel)
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn clear_removes_the_targets_bytecode_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cache = root.join("pkg/__pycache__");
        let gone = [
            "pkg/__pycache__/m.cpython-311.pyc",
            "pkg/__pycache__/m.cpython-311.opt-1.pyc",
            "pkg/__pycache__/m.cpython-312.opt-2.pyc",
            "pkg/__pycache__/.m.py.bluegreen-dep_x.cpython-311.pyc",
            "pkg/m.pyc",
        ];
        let kept = [
            "pkg/__pycache__/mm.cpython-311.pyc",
            "pkg/__pycache__/m.b.cpython-311.pyc",
            "pkg/__pycache__/other.cpython-311.pyc",
            "pkg/mm.pyc",
            "pkg/m.py",
            "__pycache__/m.cpython-311.pyc",
        ];
        for p in gone.iter().chain(&kept) {
            touch(&root.join(p));
        }
        // A directory with a cache's name is not bytecode.
        std::fs::create_dir(cache.join("m.cpython-310.pyc")).unwrap();
        clear_target(root, "pkg/m.py").unwrap().sync().unwrap();
        for p in gone {
            assert!(!root.join(p).exists(), "{p} survived");
        }
        for p in kept {
            assert!(root.join(p).exists(), "{p} was removed");
        }
        assert!(cache.join("m.cpython-310.pyc").is_dir());
        // Nothing left: a no-op.
        clear_target(root, "pkg/m.py").unwrap().sync().unwrap();
        // No __pycache__ at all: fine.
        std::fs::create_dir(root.join("other")).unwrap();
        clear_target(root, "other/n.py").unwrap().sync().unwrap();
    }

    #[test]
    fn non_python_targets_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("__pycache__/m.cpython-311.pyc"));
        touch(&root.join("m.pyc"));
        for name in ["m.pyw", "m.txt", "m"] {
            clear_target(root, name).unwrap().sync().unwrap();
        }
        assert!(root.join("__pycache__/m.cpython-311.pyc").exists());
        assert!(root.join("m.pyc").exists());
    }

    #[test]
    fn a_symlinked_pycache_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        touch(&outside.join("m.cpython-311.pyc"));
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("__pycache__")).unwrap();
        // A legacy pyc that is a symlink: the link goes, its target stays.
        std::os::unix::fs::symlink(outside.join("m.cpython-311.pyc"), root.join("m.pyc")).unwrap();
        clear_target(&root, "m.py").unwrap().sync().unwrap();
        assert!(outside.join("m.cpython-311.pyc").exists());
        assert!(root.join("__pycache__").is_symlink());
        assert!(!root.join("m.pyc").is_symlink());
    }

    #[test]
    fn stamping_sets_whole_seconds_after_the_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blue");
        let file = File::create(&path).unwrap();
        let green = SystemTime::now() + Duration::from_secs(3600);
        let mtime = stamp(&file, Some(green)).unwrap();
        let on_disk = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(on_disk, mtime);
        assert_eq!(secs(on_disk), secs(green) + 1);
        assert_eq!(
            on_disk.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(),
            0
        );
        // The replaced file caught up meanwhile: the staged one moves past it again.
        let replaced = dir.path().join("green");
        let green_file = File::create(&replaced).unwrap();
        green_file
            .set_modified(mtime + Duration::from_secs(5))
            .unwrap();
        let at = dirfd::Dir::open_root(dir.path()).unwrap();
        keep_ahead(&at, "blue", "green", mtime).unwrap();
        let again = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(secs(again), secs(mtime) + 6);
        // Not caught up: unchanged.
        keep_ahead(&at, "blue", "missing", again).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), again);
    }
}
