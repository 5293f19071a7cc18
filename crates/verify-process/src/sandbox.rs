//! Kernel confinement of the processes a verifier starts (`sandbox = "strict"`, the default).
//!
//! A strict check runs with:
//!
//! - **Landlock** (applied in the check process before `exec`, see [`crate::runner`]):
//!   read and execute everywhere except `/proc` (every top-level directory but `/proc` is
//!   granted, so the root, its parent packages and siblings import as usual); write only in
//!   the check's own [`Scratch`] directory (outside the root, exported as `TMPDIR` and
//!   `HOME`) and to `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom`.
//!   Landlock also scopes signals and abstract unix sockets to the check's own processes,
//!   denies `mount`, and denies ptrace-class access — `ptrace`, `process_vm_readv`,
//!   `/proc/<pid>/mem` and `/proc/<pid>/environ` — to every process outside the check's
//!   domain (bluegreen, its supervisors, other checks), whatever the capabilities.
//! - **no_new_privs and no capabilities**: the bounding, ambient, effective, permitted and
//!   inheritable sets are emptied, so a check started by root keeps uid 0 but cannot use
//!   `CAP_SYS_PTRACE`, `CAP_DAC_OVERRIDE`, `CAP_SYS_ADMIN`, … and an `exec` cannot regain them.
//!
//! - **hidden files** (`hidden` in the options: the server's token file): the check gets a
//!   private mount namespace (before Landlock, while it still has `CAP_SYS_ADMIN`) in which
//!   `/dev/null` is bind-mounted over each, so even as root it reads nothing there; without
//!   the capability to unshare and mount, checks run without this (a warning says so once).
//!
//! The warm zygote gets the same treatment once, with `/proc` readable (it looks for its
//! orphans there) and its scratch parent writable; every child it forks adds a second layer
//! (`zygote.py`, `_bg_confine`) that takes `/proc` away again and narrows writes to the
//! child's own scratch directory.
//!
//! Where the kernel has no Landlock, a strict check still runs without capabilities and with
//! no_new_privs, and the service's after-the-chain comparison of GREEN, its snapshot and the
//! registry (`bluegreen_core::integrity`) is what catches a candidate that changed them.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

/// How a verifier's processes are confined (`sandbox = "strict" | "off"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// Landlock + no capabilities (see the module docs); the default.
    #[default]
    Strict,
    /// The check runs with bluegreen's user, capabilities and file access (only the
    /// service's after-the-chain integrity check guards GREEN, its snapshot and the registry).
    Off,
}

impl Sandbox {
    /// Parses a config value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "strict" => Some(Sandbox::Strict),
            "off" => Some(Sandbox::Off),
            _ => None,
        }
    }
}

/// The Landlock ABI whose rights we ask for; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V6;

/// Devices a check may write (and read).
pub(crate) const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// A fresh directory (mode 0700) under the system temp dir, removed with everything in it
/// when dropped.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub(crate) fn new(kind: &str) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("bluegreen-{kind}-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `TMPDIR` and `HOME` pointing here (they replace inherited values).
    pub(crate) fn env(&self) -> [(OsString, OsString); 2] {
        let dir = OsString::from(self.path.as_os_str());
        [("TMPDIR".into(), dir.clone()), ("HOME".into(), dir)]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // remove_dir_all does not follow symlinks a check may have left here.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Replaces `TMPDIR` and `HOME` in `env` by the scratch directory's.
pub(crate) fn with_scratch_env(env: &mut Vec<(OsString, OsString)>, scratch: &Scratch) {
    env.retain(|(k, _)| k != "TMPDIR" && k != "HOME");
    env.extend(scratch.env());
}

/// A strict run's scratch directory and confinement.
#[derive(Debug)]
pub(crate) struct Confined {
    /// Held for its `Drop`: the directory goes when the run is over.
    #[allow(dead_code)]
    pub scratch: Scratch,
    pub confinement: Confinement,
}

/// For a `strict` run: a fresh scratch directory (exported in `env` as `TMPDIR` and `HOME`)
/// and the confinement that lets the run write there only and hides `hidden`; `None` for
/// `off`.
pub(crate) fn prepare(
    mode: Sandbox,
    env: &mut Vec<(OsString, OsString)>,
    hidden: &[PathBuf],
) -> io::Result<Option<Confined>> {
    match mode {
        Sandbox::Off => Ok(None),
        Sandbox::Strict => {
            let scratch = Scratch::new("check")?;
            with_scratch_env(env, &scratch);
            let confinement = Confinement::new(scratch.path(), false, hidden);
            Ok(Some(Confined {
                scratch,
                confinement,
            }))
        }
    }
}

/// What the check process applies to itself before `exec` (see [`crate::runner`]).
#[derive(Debug)]
pub(crate) struct Confinement {
    /// A Landlock ruleset, `None` when the kernel has none.
    ruleset: Option<OwnedFd>,
    /// Absolute paths to cover with `/dev/null` (empty when mount namespaces are refused).
    hidden: Arc<[CString]>,
}

impl Confinement {
    /// Read everywhere except `/proc` (unless `proc_readable`) and `hidden`, write in
    /// `scratch` only.
    pub(crate) fn new(scratch: &Path, proc_readable: bool, hidden: &[PathBuf]) -> Self {
        let ruleset = match build_ruleset(scratch, proc_readable) {
            Ok(ruleset) => ruleset,
            Err(e) => {
                tracing::warn!("cannot build the Landlock ruleset: {e}");
                None
            }
        };
        if ruleset.is_none() {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                tracing::warn!(
                    "this kernel offers no Landlock: checks run without capabilities but can \
                     write what bluegreen's user can; deployments are checked afterwards"
                );
            });
        }
        Self {
            ruleset,
            hidden: hidden_paths(hidden),
        }
    }

    /// What [`hide_paths`] covers, prepared before `fork`.
    pub(crate) fn hidden(&self) -> Arc<[CString]> {
        self.hidden.clone()
    }

    /// The ruleset's descriptor, or -1.
    pub(crate) fn ruleset_fd(&self) -> RawFd {
        self.ruleset.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Whether Landlock is enforced (and not only the capability drop).
    pub(crate) fn is_enforced(&self) -> bool {
        self.ruleset.is_some()
    }
}

/// The top-level entries of `/` a check may read: all but `proc` (unless asked for).
fn readable_top_level(proc_readable: bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| proc_readable || e.file_name() != "proc")
        .map(|e| e.path())
        .collect()
}

/// What a warm child may read (the zygote's children add this layer themselves).
pub(crate) fn child_readable() -> Vec<PathBuf> {
    readable_top_level(false)
}

fn build_ruleset(
    scratch: &Path,
    proc_readable: bool,
) -> Result<Option<OwnedFd>, landlock::RulesetError> {
    let abi = ABI_WANTED;
    let created = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(
            readable_top_level(proc_readable),
            AccessFs::from_read(abi),
        ))?
        .add_rules(path_beneath_rules(DEVICES, AccessFs::from_file(abi)))?
        .add_rules(path_beneath_rules([scratch], AccessFs::from_all(abi)))?;
    Ok(created.into())
}

/// `hidden` as absolute C strings, or none (with a warning, once) when this process cannot
/// give a check a private mount namespace.
fn hidden_paths(hidden: &[PathBuf]) -> Arc<[CString]> {
    if hidden.is_empty() {
        return Arc::new([]);
    }
    if !mount_namespaces_work() {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| {
            tracing::warn!(
                "cannot give checks a private mount namespace (needs root or CAP_SYS_ADMIN): \
                 strict checks can read {hidden:?}"
            );
        });
        return Arc::new([]);
    }
    hidden
        .iter()
        .filter_map(|p| std::path::absolute(p).ok())
        .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
        .collect()
}

/// Whether a forked child can enter a private mount namespace and bind-mount there (tried
/// once per process).
fn mount_namespaces_work() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        // SAFETY: the child makes raw system calls only and leaves with `_exit`.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                let ok = private_mount_namespace().is_ok() && bind_null(c"/dev/null").is_ok();
                libc::_exit(if ok { 0 } else { 1 });
            }
            if pid < 0 {
                return false;
            }
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) == -1 {
                if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return false;
                }
            }
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        }
    })
}

/// In the check process, before [`confine_self`]: a private mount namespace with
/// `/dev/null` over each of `hidden` (one that does not exist has nothing to hide).
/// Async-signal-safe: raw system calls on strings prepared before `fork`.
///
/// # Safety
/// Only to be called in a freshly forked child.
pub(crate) unsafe fn hide_paths(hidden: &[CString]) -> io::Result<()> {
    if hidden.is_empty() {
        return Ok(());
    }
    private_mount_namespace()?;
    for path in hidden {
        if bind_null(path).is_err()
            && io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A mount namespace of our own whose mounts propagate nowhere.
unsafe fn private_mount_namespace() -> io::Result<()> {
    if libc::unshare(libc::CLONE_NEWNS) == -1
        || libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == -1
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

unsafe fn bind_null(target: &std::ffi::CStr) -> io::Result<()> {
    if libc::mount(
        c"/dev/null".as_ptr(),
        target.as_ptr(),
        std::ptr::null(),
        libc::MS_BIND,
        std::ptr::null(),
    ) == -1
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In the check process, between `fork` and `exec`: no_new_privs, the Landlock ruleset
/// (`-1`: none), then every capability dropped. Async-signal-safe: raw system calls only.
///
/// # Safety
/// Only to be called in a freshly forked child.
pub(crate) unsafe fn confine_self(ruleset: RawFd) -> io::Result<()> {
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 {
        return Err(io::Error::last_os_error());
    }
    if ruleset >= 0 && libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) == -1 {
        return Err(io::Error::last_os_error());
    }
    drop_capabilities()
}

/// Empties every capability set. Root keeps uid 0 but none of its powers.
unsafe fn drop_capabilities() -> io::Result<()> {
    // The bounding set first (needs CAP_SETPCAP, which we hold until capset below).
    for cap in 0..64 {
        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINVAL) => break,   // past the last capability
                Some(libc::EPERM) => continue, // not ours to drop (already unprivileged)
                _ => return Err(io::Error::last_os_error()),
            }
        }
    }
    libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
    );
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_directories_are_fresh_private_and_removed() {
        let a = Scratch::new("test").unwrap();
        let b = Scratch::new("test").unwrap();
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o700
        );
        std::fs::write(a.path().join("f"), b"x").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn the_config_values_parse() {
        assert_eq!(Sandbox::parse("strict"), Some(Sandbox::Strict));
        assert_eq!(Sandbox::parse("off"), Some(Sandbox::Off));
        assert_eq!(Sandbox::parse("Strict"), None);
        assert_eq!(Sandbox::default(), Sandbox::Strict);
    }
}
