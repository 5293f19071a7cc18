//! File-system access by descriptor (CONTRACT.md "Input rules": the root is hostile).
//!
//! The root is opened once; every directory below it is reached from a [`Dir`] one plain
//! component at a time with `O_NOFOLLOW | O_DIRECTORY`, and files are opened relative to
//! their directory's descriptor with `O_NOFOLLOW` and checked with `fstat` on what was
//! opened. Renames, links and unlinks are `*at` calls on those descriptors. So a path is
//! never re-resolved between check and use: a component swapped for a symlink is refused
//! (`ELOOP`/`ENOTDIR`), never followed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};

use crate::error::Error;

/// An open directory. Cheap to pass by reference; clone with [`Dir::try_clone`].
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// What an opened file is, from `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl From<&Stat> for FileId {
    fn from(st: &Stat) -> Self {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// `"a FIFO"`, `"a directory"`…: what a non-regular file is, for messages.
pub fn describe(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "not a regular file",
    }
}

pub fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// What the root holds is refused (a symlink where a real directory or file must be, a
/// non-regular file): carried inside an `io::Error`, turned into [`Error::BadInput`] by
/// [`error`].
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(why: String) -> io::Error {
    io::Error::other(Refused(why))
}

/// `context: e` as the core's error: [`Error::BadInput`] when the root held something
/// refused (see [`Refused`]), else [`Error::Io`].
pub fn error(context: impl Into<String>, e: io::Error) -> Error {
    match e.get_ref().and_then(|r| r.downcast_ref::<Refused>()) {
        Some(why) => Error::BadInput(format!("{}: {why}", context.into())),
        None => Error::io(context, e),
    }
}

/// Adds context to `io::Result`s of this module (see [`error`]).
pub trait FsContext<T> {
    fn fs_context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> FsContext<T> for io::Result<T> {
    fn fs_context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| error(what(), e))
    }
}

/// The error for `name` in `dir` failing to open as a directory: a symlink there is
/// [`Refused`] (never followed); anything else (e.g. a regular file) is an I/O error.
fn not_followed(dir: &OwnedFd, name: &str, e: rustix::io::Errno) -> io::Error {
    if e != rustix::io::Errno::LOOP && e != rustix::io::Errno::NOTDIR {
        return e.into();
    }
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            refused(format!("{name:?} is a symlink; refusing to follow it"))
        }
        _ => io::Error::other(format!("{name:?} is not a directory")),
    }
}

/// One plain path component: no `/`, not empty, `.` or `..`, no NUL.
fn plain(name: &str) -> io::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(name)
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::RDONLY);

impl Dir {
    /// Opens the root (a directory; the path itself may be spelled through symlinks —
    /// it is the one path resolved by name).
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    /// The subdirectory `name` (`None` if missing). A symlink there is an error.
    pub fn open_dir(&self, name: &str) -> io::Result<Option<Dir>> {
        match rustix::fs::openat(&self.fd, plain(name)?, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir { fd })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(not_followed(&self.fd, name, e)),
        }
    }

    /// The subdirectory `name`, created (and its entry synced into `self`) if missing.
    pub fn create_dir(&self, name: &str) -> io::Result<Dir> {
        if let Some(dir) = self.open_dir(name)? {
            return Ok(dir);
        }
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o777)) {
            Ok(()) => self.sync()?,
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.open_dir(name)?
            .ok_or_else(|| io::Error::other(format!("{name:?} vanished after creating it")))
    }

    /// Walks `rel` (`/`-separated plain components) down from `self`; `None` if a
    /// component is missing.
    pub fn walk(&self, rel: &str) -> io::Result<Option<Dir>> {
        let mut current = self.try_clone()?;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            match current.open_dir(part)? {
                Some(next) => current = next,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }

    /// [`Dir::walk`], creating missing directories durably.
    pub fn walk_create(&self, rel: &str) -> io::Result<Dir> {
        let mut current = self.try_clone()?;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            current = current.create_dir(part)?;
        }
        Ok(current)
    }

    /// Opens the file `name` with `flags` plus `O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK`
    /// (so a FIFO cannot block the open) and checks with `fstat` that it is a regular
    /// file. `None` if missing (and not created).
    pub fn open_file(&self, name: &str, flags: OFlags) -> io::Result<Option<(File, Stat)>> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.fd, plain(name)?, flags, Mode::from_raw_mode(0o666))
        {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(refused(format!(
                    "{name:?} is a symlink; refusing to follow it"
                )))
            }
            // A socket (or a device without a driver) cannot be opened at all.
            Err(e @ rustix::io::Errno::NXIO) => match self.stat(name)? {
                Some(st) if !is_regular(&st) => {
                    return Err(refused(format!(
                        "{name:?} is {}, not a regular file",
                        describe(&st)
                    )))
                }
                _ => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if !is_regular(&st) {
            return Err(refused(format!(
                "{name:?} is {}, not a regular file",
                describe(&st)
            )));
        }
        // Regular files never block; plain blocking I/O from here on.
        let mut fl = rustix::fs::fcntl_getfl(&fd)?;
        fl.remove(OFlags::NONBLOCK);
        rustix::fs::fcntl_setfl(&fd, fl)?;
        Ok(Some((File::from(fd), st)))
    }

    /// `lstat` of `name` (`None` if missing).
    pub fn stat(&self, name: &str) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, plain(name)?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of the regular file `name` (`None` if missing).
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let Some((mut file, st)) = self.open_file(name, OFlags::RDONLY)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(st.st_size.max(0) as usize);
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Creates `name` exclusively, writes `bytes`, does not sync; returns the open file.
    pub fn write_new(&self, name: &str, bytes: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            plain(name)?,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )?;
        let mut file = File::from(fd);
        file.write_all(bytes)?;
        Ok(file)
    }

    /// An unnamed file here (`O_TMPFILE`) holding `bytes`, not synced; `None` where the
    /// filesystem cannot make one.
    pub fn write_unnamed(&self, bytes: &[u8]) -> io::Result<Option<File>> {
        match rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        ) {
            Ok(fd) => {
                let mut file = File::from(fd);
                file.write_all(bytes)?;
                Ok(Some(file))
            }
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Names an unnamed file from [`Dir::write_unnamed`] `name` here (never over an
    /// existing name). Through `/proc/self/fd` (no privilege needed).
    pub fn link_unnamed(&self, file: &File, name: &str) -> io::Result<()> {
        let from = format!("/proc/self/fd/{}", file.as_raw_fd());
        rustix::fs::linkat(CWD, &from, &self.fd, plain(name)?, AtFlags::SYMLINK_FOLLOW)?;
        Ok(())
    }

    /// `renameat(self, from, to_dir, to)`.
    pub fn rename(&self, from: &str, to_dir: &Dir, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, plain(from)?, &to_dir.fd, plain(to)?)?;
        Ok(())
    }

    /// `renameat2(self, from, to_dir, to, RENAME_NOREPLACE)`: `false` if `to` exists
    /// (or the filesystem cannot rename without replacing).
    pub fn rename_noreplace(&self, from: &str, to_dir: &Dir, to: &str) -> io::Result<bool> {
        match rustix::fs::renameat_with(
            &self.fd,
            plain(from)?,
            &to_dir.fd,
            plain(to)?,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST | rustix::io::Errno::INVAL) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the empty directory `name`; `false` if it was missing.
    pub fn remove_dir(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, plain(name)?, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Unlinks the file `name`; `false` if it was missing.
    pub fn unlink(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, plain(name)?, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes this directory's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// The names of the entries (without `.` and `..`).
    pub fn entries(&self) -> io::Result<Vec<String>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if let Ok(name) = std::str::from_utf8(name) {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Splits `rel` into its directory (maybe empty) and its file name.
pub fn split_rel(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), tmp.path().join("f")).unwrap();
        let root = Dir::open_root(tmp.path()).unwrap();
        assert!(root.open_dir("d").is_err());
        assert!(root.walk("d/x").is_err());
        assert!(root.walk_create("d/x").is_err());
        assert!(root.read("f").is_err());
        assert!(root.open_dir("..").is_err());
        assert!(root.walk("missing/x").unwrap().is_none());
        let sub = root.walk_create("a/b").unwrap();
        sub.write_new("x", b"1").unwrap();
        assert_eq!(
            root.walk("a/b")
                .unwrap()
                .unwrap()
                .read("x")
                .unwrap()
                .unwrap(),
            b"1"
        );
        assert_eq!(std::fs::read(outside.path().join("f")).unwrap(), b"outside");
    }

    #[test]
    fn an_unnamed_file_is_invisible_until_linked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        let Some(file) = dir.write_unnamed(b"blue").unwrap() else {
            return; // no O_TMPFILE here: callers fall back to a named file
        };
        assert!(dir.entries().unwrap().is_empty());
        dir.link_unnamed(&file, ".x.staged").unwrap();
        assert_eq!(dir.read(".x.staged").unwrap().unwrap(), b"blue");
        assert!(dir.link_unnamed(&file, ".x.staged").is_err());
    }
}
