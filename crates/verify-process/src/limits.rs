//! Resource limits and the environment every checked process gets.
//!
//! These bound accidents — a runaway loop, a huge allocation, a log file that fills the
//! disk, a fork loop. Confinement (what a check may write, read and signal) is
//! [`crate::sandbox`]'s job.

use std::ffi::OsString;

/// Per-process resource limits, applied (with `setrlimit`) in the checked process before it
/// runs any of its own code. A value of `0` means "leave this limit as inherited"; core
/// dumps are always disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU time per process (`RLIMIT_CPU`): `SIGXCPU` at the limit, `SIGKILL` a second later.
    pub cpu_seconds: u64,
    /// Virtual address space per process (`RLIMIT_AS`), default 1 GiB.
    pub address_space_bytes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Processes per *user* (`RLIMIT_NPROC`). The kernel counts every process of the user,
    /// not just the check's, and ignores this limit for root (and `CAP_SYS_RESOURCE`).
    pub max_processes: u64,
    /// Bytes of stdout and of stderr kept per check (the tail); the rest is counted and
    /// dropped, so a check printing 100 MB neither blocks nor eats memory.
    pub output_cap_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_seconds: 60,
            address_space_bytes: 1 << 30,
            file_size_bytes: 64 << 20,
            max_processes: 512,
            output_cap_bytes: 64 << 10,
        }
    }
}

impl Limits {
    /// The `(resource, value)` pairs to apply, as `resource` module names and libc ids.
    pub(crate) fn rlimits(&self) -> Vec<(&'static str, libc::c_int, u64)> {
        let mut out = vec![("RLIMIT_CORE", libc::RLIMIT_CORE as libc::c_int, 0)];
        let mut add = |name, id: libc::__rlimit_resource_t, value: u64| {
            if value > 0 {
                out.push((name, id as libc::c_int, value));
            }
        };
        add("RLIMIT_CPU", libc::RLIMIT_CPU, self.cpu_seconds);
        add("RLIMIT_AS", libc::RLIMIT_AS, self.address_space_bytes);
        add("RLIMIT_FSIZE", libc::RLIMIT_FSIZE, self.file_size_bytes);
        add("RLIMIT_NPROC", libc::RLIMIT_NPROC, self.max_processes);
        out
    }
}

/// Environment variables a checked process inherits from bluegreen; everything else is
/// cleared unless named in the verifier's `pass_env`.
pub const ENV_ALLOW_LIST: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// The allow-listed and passed-through variables that are set in this process.
pub(crate) fn inherited_env(pass_env: &[String]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let names = ENV_ALLOW_LIST
        .iter()
        .copied()
        .chain(pass_env.iter().map(String::as_str));
    for name in names {
        if env.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(value) = std::env::var_os(name) {
            env.push((name.into(), value));
        }
    }
    env
}
