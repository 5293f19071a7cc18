//! The subprocess runner every verifier of this crate sits on.
//!
//! Each check runs under a tiny **supervisor** forked from bluegreen (inside `pre_exec`, so
//! it costs one `fork`, no extra program):
//!
//! ```text
//! bluegreen ──control pipe──▶ supervisor S (own session, child subreaper)
//!                                 └── check C (own process group, limits, exec's the program)
//!                                       └── grandchildren … (same group, reparented to S)
//! ```
//!
//! - C gets its own process group, the resource limits and stdin = `/dev/null`; stdout and
//!   stderr are pipes to bluegreen, read concurrently and capped.
//! - S is a child subreaper, so anything C leaves behind is re-parented to S, never to
//!   `init` (which, in many containers, never reaps): there are no zombies to leak.
//! - When C exits, S kills C's whole group with `SIGKILL`, reaps every descendant and exits
//!   with C's status (re-raising C's fatal signal), so bluegreen sees C's status.
//! - When bluegreen closes the control pipe (timeout, fail-fast cancellation, the future
//!   being dropped — or bluegreen itself dying), S kills C's group the same way.
//! - Then S keeps killing whatever gets re-parented to it until nothing is left, so even a
//!   descendant that moved to its own group or session (`setsid`, the warm zygote's
//!   per-check children) dies with the check.
//!
//! - With a [`Confinement`] (`sandbox = "strict"`), C confines itself right after `setpgid`
//!   (Landlock, no_new_privs, no capabilities: see [`crate::sandbox`]); S stays unconfined,
//!   as it must read `/proc` to find what was re-parented to it.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::limits::Limits;
use crate::sandbox::{self, Confinement};

/// Most of a check's report that is kept (a real one is a few KiB): a check that writes more
/// into its report channel is not read further, and blocks until its timeout.
pub(crate) const REPORT_CAP: usize = 1 << 20;

/// Most extra descriptors a check can be given (the zygote needs two).
const MAX_EXTRA_FDS: usize = 4;
const MAX_RLIMITS: usize = 8;

/// What to run.
pub(crate) struct ProcessSpec<'a> {
    pub program: &'a OsStr,
    pub args: Vec<OsString>,
    pub cwd: &'a Path,
    pub env: Vec<(OsString, OsString)>,
    /// `None`: no limits (the zygote, which applies them per child).
    pub limits: Option<Limits>,
    /// Descriptors handed to the check as the given fd numbers (3, 4, …).
    pub extra_fds: Vec<(OwnedFd, RawFd)>,
    /// `Some`: the check confines itself before `exec` (`sandbox = "strict"`).
    pub confinement: Option<&'a Confinement>,
}

/// Everything `pre_exec` needs, in plain data: nothing may allocate after `fork`.
#[derive(Clone, Copy)]
struct PreExec {
    rlimits: [(libc::c_int, u64); MAX_RLIMITS],
    rlimit_count: usize,
    extra: [(RawFd, RawFd); MAX_EXTRA_FDS],
    extra_count: usize,
    /// Whether to confine the check, and the Landlock ruleset (-1: none).
    confine: bool,
    ruleset: RawFd,
}

/// A `std` command that runs `spec` under a supervisor (see the module docs). Its stdin is
/// the control pipe: keep `ChildStdin` while the check may run, drop it to kill the check.
/// Callers set stdout and stderr.
pub(crate) fn supervised_command(spec: &ProcessSpec<'_>) -> io::Result<std::process::Command> {
    if spec.extra_fds.len() > MAX_EXTRA_FDS {
        return Err(io::Error::other("too many descriptors for a check"));
    }
    let mut plan = PreExec {
        rlimits: [(0, 0); MAX_RLIMITS],
        rlimit_count: 0,
        extra: [(-1, -1); MAX_EXTRA_FDS],
        extra_count: spec.extra_fds.len(),
        confine: spec.confinement.is_some(),
        ruleset: spec.confinement.map_or(-1, Confinement::ruleset_fd),
    };
    // Without limits (the zygote) core dumps are still disabled.
    let rlimits = match &spec.limits {
        Some(limits) => limits.rlimits(),
        None => vec![("RLIMIT_CORE", libc::RLIMIT_CORE as libc::c_int, 0)],
    };
    {
        for (i, (_, id, value)) in rlimits.into_iter().enumerate().take(MAX_RLIMITS) {
            plan.rlimits[i] = (id, value);
            plan.rlimit_count = i + 1;
        }
    }
    for (i, (fd, target)) in spec.extra_fds.iter().enumerate() {
        plan.extra[i] = (fd.as_raw_fd(), *target);
    }
    let mut command = std::process::Command::new(spec.program);
    command
        .args(&spec.args)
        .current_dir(spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped());
    let hidden = spec
        .confinement
        .map_or_else(|| Arc::from([]), Confinement::hidden);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls on plain data copied in above (and strings allocated before the fork).
    unsafe {
        command.pre_exec(move || supervise_and_fork(&plan, &hidden));
    }
    Ok(command)
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Runs in the forked child. Becomes the supervisor S and forks the check C; only C returns
/// (to exec the program).
unsafe fn supervise_and_fork(plan: &PreExec, hidden: &[CString]) -> io::Result<()> {
    if libc::setsid() == -1 {
        return Err(io::Error::last_os_error());
    }
    #[cfg(target_os = "linux")]
    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    // SIGCHLD stays blocked except inside ppoll, so no exit can slip between a reap and the
    // wait. The handler replaces whatever bluegreen's runtime had installed.
    let mut chld: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut chld);
    libc::sigaddset(&mut chld, libc::SIGCHLD);
    let mut old_mask: libc::sigset_t = std::mem::zeroed();
    libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut old_mask);
    let mut action: libc::sigaction = std::mem::zeroed();
    action.sa_sigaction = ignore_signal as *const () as libc::sighandler_t;
    libc::sigemptyset(&mut action.sa_mask);
    libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());

    let pid = libc::fork();
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        return prepare_check(plan, hidden, &old_mask);
    }
    supervise(pid)
}

/// In C, before exec: own group, hidden files, confinement, stdin from /dev/null, extra
/// fds, limits.
unsafe fn prepare_check(
    plan: &PreExec,
    hidden: &[CString],
    old_mask: &libc::sigset_t,
) -> io::Result<()> {
    libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    libc::sigprocmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
    if libc::setpgid(0, 0) == -1 {
        return Err(io::Error::last_os_error());
    }
    // While capabilities remain (Landlock would deny the mounts too).
    sandbox::hide_paths(hidden)?;
    // First, while the ruleset's descriptor cannot have been replaced by an extra fd.
    if plan.confine {
        sandbox::confine_self(plan.ruleset)?;
    }
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if null == -1 || libc::dup2(null, 0) == -1 {
        return Err(io::Error::last_os_error());
    }
    libc::close(null);
    // Move sources out of the way first so a source numbered like a target is not clobbered.
    let mut moved = [-1; MAX_EXTRA_FDS];
    for (i, slot) in moved.iter_mut().enumerate().take(plan.extra_count) {
        *slot = libc::fcntl(plan.extra[i].0, libc::F_DUPFD_CLOEXEC, 64);
        if *slot == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut first_free = 3;
    for (i, &source) in moved.iter().enumerate().take(plan.extra_count) {
        let target = plan.extra[i].1;
        if libc::dup2(source, target) == -1 {
            return Err(io::Error::last_os_error());
        }
        first_free = first_free.max(target + 1);
    }
    // Anything else inherited (not ours, not close-on-exec) is closed at exec. Needs Linux
    // 5.11; on older kernels such strays are inherited, which is harmless.
    #[cfg(target_os = "linux")]
    libc::syscall(
        libc::SYS_close_range,
        first_free as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
    );
    for &(resource, value) in plan.rlimits.iter().take(plan.rlimit_count) {
        set_limit(resource, value)?;
    }
    Ok(())
}

unsafe fn set_limit(resource: libc::c_int, value: u64) -> io::Result<()> {
    let mut current: libc::rlimit = std::mem::zeroed();
    if libc::getrlimit(resource as _, &mut current) == -1 {
        return Err(io::Error::last_os_error());
    }
    // Never try to raise a hard limit (only root may); only tighten.
    let hard = if current.rlim_max == libc::RLIM_INFINITY {
        if resource == libc::RLIMIT_CPU as libc::c_int {
            value.saturating_add(1) // SIGXCPU at the soft limit, SIGKILL a second later
        } else {
            value
        }
    } else {
        value.min(current.rlim_max)
    };
    let wanted = libc::rlimit {
        rlim_cur: value.min(hard),
        rlim_max: hard,
    };
    if libc::setrlimit(resource as _, &wanted) == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The supervisor loop (S). Never returns.
///
/// Once the check has exited or been cancelled, S kills C's group and then, until nothing is
/// left, every process re-parented to it (S is the subreaper of C's whole subtree): that
/// includes descendants that moved to a group or session of their own, such as the warm
/// zygote's per-check children, so nothing of a check outlives it — even when bluegreen
/// itself was killed.
unsafe fn supervise(check: libc::pid_t) -> ! {
    libc::close(1);
    libc::close(2);
    close_from(3);
    // Do not hold on to the check's directory (the root) while supervising.
    libc::chdir(c"/".as_ptr());
    let mut no_signals_blocked: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut no_signals_blocked);
    let mut control = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut check_status: Option<libc::c_int> = None;
    let mut killing = false;
    // While killing, wake up now and then to kill what was re-parented meanwhile.
    let retry = libc::timespec {
        tv_sec: 0,
        tv_nsec: 5_000_000,
    };
    loop {
        loop {
            let mut status = 0;
            let reaped = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if reaped > 0 {
                if reaped == check {
                    check_status = Some(status);
                    killing = true;
                }
                continue;
            }
            if reaped == 0 {
                break;
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            exit_like(check_status); // ECHILD: every descendant is reaped
        }
        if killing {
            libc::kill(-check, libc::SIGKILL);
            kill_children();
        }
        let timeout = if killing {
            &retry as *const _
        } else {
            std::ptr::null()
        };
        let ready = libc::ppoll(&mut control, 1, timeout, &no_signals_blocked);
        if ready > 0 && control.revents != 0 {
            // Control pipe closed (or written): the check is cancelled.
            killing = true;
            control.fd = -1;
        }
    }
}

/// SIGKILLs every direct child of this process and its process group. Async-signal-safe
/// (raw syscalls, stack buffers only): S is a fork of a multi-threaded process.
unsafe fn kill_children() {
    let me = libc::getpid();
    let dir = libc::open(
        c"/proc".as_ptr(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    );
    if dir < 0 {
        return;
    }
    let mut buf = [0u8; 8192];
    loop {
        let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
        if n <= 0 {
            break;
        }
        let mut offset = 0usize;
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        while offset + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[offset + 16], buf[offset + 17]]) as usize;
            if reclen == 0 || offset + reclen > n as usize {
                break;
            }
            if let Some(pid) = parse_pid(&buf[offset + 19..offset + reclen]) {
                if pid != me && parent_of(pid) == Some(me) {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            offset += reclen;
        }
    }
    libc::close(dir);
}

/// A NUL-terminated decimal name as a pid.
fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
    let mut pid: libc::pid_t = 0;
    let mut digits = 0;
    for &b in name {
        match b {
            b'0'..=b'9' => {
                pid = pid
                    .checked_mul(10)?
                    .checked_add((b - b'0') as libc::pid_t)?;
                digits += 1;
            }
            0 => break,
            _ => return None,
        }
    }
    (digits > 0).then_some(pid)
}

/// The parent pid from `/proc/<pid>/stat` (field 4, after the parenthesised command name).
unsafe fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let mut path = [0u8; 32];
    let prefix = b"/proc/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut len = prefix.len();
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut rest = pid;
    loop {
        digits[d] = b'0' + (rest % 10) as u8;
        d += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[len] = digits[d];
        len += 1;
    }
    let suffix = b"/stat\0";
    path[len..len + suffix.len()].copy_from_slice(suffix);
    let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return None;
    }
    let mut stat = [0u8; 512];
    let n = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
    libc::close(fd);
    if n <= 0 {
        return None;
    }
    let stat = &stat[..n as usize];
    let close = stat.iter().rposition(|&b| b == b')')?;
    // ") S 1234 ..." — skip ") ", the state and a space.
    let after = stat.get(close + 4..)?;
    let mut ppid: libc::pid_t = 0;
    let mut any = false;
    for &b in after {
        if b.is_ascii_digit() {
            ppid = ppid
                .checked_mul(10)?
                .checked_add((b - b'0') as libc::pid_t)?;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(ppid)
}

unsafe fn close_from(first: libc::c_int) {
    #[cfg(target_os = "linux")]
    if libc::syscall(
        libc::SYS_close_range,
        first as libc::c_uint,
        libc::c_uint::MAX,
        0 as libc::c_uint,
    ) == 0
    {
        return;
    }
    let mut limit: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
        limit.rlim_cur.min(65536) as libc::c_int
    } else {
        4096
    };
    for fd in first..max {
        libc::close(fd);
    }
}

/// Leaves with the check's status so that the parent sees what the check did.
unsafe fn exit_like(status: Option<libc::c_int>) -> ! {
    match status {
        Some(s) if libc::WIFEXITED(s) => libc::_exit(libc::WEXITSTATUS(s)),
        Some(s) if libc::WIFSIGNALED(s) => {
            let signal = libc::WTERMSIG(s);
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal)
        }
        _ => libc::_exit(127),
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub(crate) fn from_std(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        }
    }

    /// From the zygote's exit code (negative = killed by that signal).
    pub(crate) fn from_exitcode(code: i64) -> Self {
        if code < 0 {
            Exit::Signal((-code) as i32)
        } else {
            Exit::Code(code as i32)
        }
    }
}

/// The tail of one output stream, plus how much was written in total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Captured {
    pub tail: Vec<u8>,
    pub total: u64,
}

impl Captured {
    pub(crate) fn push(&mut self, data: &[u8], cap: usize) {
        self.total += data.len() as u64;
        self.tail.extend_from_slice(data);
        // Trim in batches (at twice the cap) so each byte is moved O(1) times on average.
        if self.tail.len() > cap.saturating_mul(2).max(8192) {
            let excess = self.tail.len() - cap;
            self.tail.drain(..excess);
        }
    }

    pub(crate) fn finish(&mut self, cap: usize) {
        if self.tail.len() > cap {
            let excess = self.tail.len() - cap;
            self.tail.drain(..excess);
        }
    }
}

/// What a supervised run produced; the default is a run that timed out.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOutput {
    /// `None` when the run timed out (and was killed).
    pub exit: Option<Exit>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// What the check wrote to fd 3 (only when asked for a report channel).
    pub report: Vec<u8>,
}

/// Owns a running supervisor: dropping it kills the check's group and reaps the supervisor.
struct Supervised {
    child: tokio::process::Child,
    control: Option<tokio::process::ChildStdin>,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Closing the control pipe makes S kill the group, reap it and exit.
        self.control.take();
        for _ in 0..100 {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
        // S still waits for something that escaped the group: reap S later.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            if let Some(pid) = self.child.id() {
                handle.spawn_blocking(move || {
                    let mut status = 0;
                    // SAFETY: plain waitpid on our own child.
                    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
                });
            }
        }
    }
}

/// A pipe whose ends are close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors that we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

async fn capture(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    sink: Arc<Mutex<Captured>>,
    cap: usize,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Ok(mut captured) = sink.lock() {
                    captured.push(&buf[..n], cap);
                }
            }
        }
    }
}

/// Runs `spec` to completion or until `timeout`, capturing stdout and stderr (the last
/// `output_cap` bytes of each) and, with `report`, what the check writes to its fd 3.
pub(crate) async fn run(
    mut spec: ProcessSpec<'_>,
    timeout: Duration,
    output_cap: usize,
    report: bool,
) -> io::Result<RunOutput> {
    let report_reader = if report {
        let (read, write) = pipe()?;
        spec.extra_fds.push((write, 3));
        Some(read)
    } else {
        None
    };
    let mut command = supervised_command(&spec)?;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(command).spawn()?;
    // Our copies of the check's ends must go, or the report pipe never reaches EOF.
    drop(spec.extra_fds);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let control = child.stdin.take();
    let mut supervised = Supervised { child, control };

    let out = Arc::new(Mutex::new(Captured::default()));
    let err = Arc::new(Mutex::new(Captured::default()));
    let readers = [
        stdout.map(|s| tokio::spawn(capture(s, out.clone(), output_cap))),
        stderr.map(|s| tokio::spawn(capture(s, err.clone(), output_cap))),
    ];

    let exit = match tokio::time::timeout(timeout, supervised.child.wait()).await {
        Ok(status) => Some(Exit::from_std(status?)),
        Err(_) => {
            supervised.control.take();
            let _ = tokio::time::timeout(Duration::from_secs(2), supervised.child.wait()).await;
            None
        }
    };
    // The group is dead, so the pipes are at EOF; a process that escaped the group may hold
    // them open, which is why the wait is bounded.
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_millis(250), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let report = match report_reader {
        Some(fd) => read_available(fd),
        None => Vec::new(),
    };
    let take = |c: &Arc<Mutex<Captured>>| {
        let mut captured = c.lock().map(|c| c.clone()).unwrap_or_default();
        captured.finish(output_cap);
        captured
    };
    Ok(RunOutput {
        exit,
        stdout: take(&out),
        stderr: take(&err),
        report,
    })
}

/// Reads what a finished writer left in a pipe, without blocking on a writer that escaped.
fn read_available(fd: OwnedFd) -> Vec<u8> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while out.len() < REPORT_CAP {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// The name of a signal, for messages.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU: CPU time limit exceeded",
        libc::SIGXFSZ => "SIGXFSZ: file size limit exceeded",
        _ => "signal",
    }
}

/// The last `max_lines` lines of `bytes` (at most `max_bytes`), as text.
pub(crate) fn tail_text(bytes: &[u8], max_lines: usize, max_bytes: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let mut start = text.len();
    for _ in 0..max_lines {
        match text[..start].rfind('\n') {
            Some(i) => start = i,
            None => {
                start = 0;
                break;
            }
        }
    }
    let mut tail = text[start..].trim_start_matches('\n');
    if tail.len() > max_bytes {
        let mut cut = tail.len() - max_bytes;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = &tail[cut..];
    }
    tail.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn spec<'a>(script: &str, cwd: &'a Path, limits: Option<Limits>) -> ProcessSpec<'a> {
        ProcessSpec {
            program: OsStr::new("sh"),
            args: vec!["-c".into(), script.into()],
            cwd,
            env: vec![("PATH".into(), std::env::var_os("PATH").unwrap_or_default())],
            limits,
            extra_fds: Vec::new(),
            confinement: None,
        }
    }

    fn with_marker(marker: &str) -> Vec<String> {
        let me = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy() != me)
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(marker))
            .collect()
    }

    fn marker(name: &str) -> String {
        format!("bgvp-{name}-{}-{:?}", std::process::id(), Instant::now())
            .replace([' ', '{', '}', ':', '.'], "_")
    }

    #[tokio::test]
    async fn a_grandchild_in_its_own_session_is_killed_too() {
        // `setsid` leaves the check's process group; the supervisor, as subreaper, still
        // finds it among its re-parented children and kills it.
        let cwd = std::env::temp_dir();
        let marker = marker("session");
        let script = format!(
            "setsid python3 -c 'import time; time.sleep(300)' {marker} & sleep 0.2; echo started"
        );
        let out = run(
            spec(&script, &cwd, None),
            Duration::from_secs(10),
            1024,
            false,
        )
        .await
        .unwrap();
        assert_eq!(out.exit, Some(Exit::Code(0)));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !with_marker(&marker).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(with_marker(&marker), Vec::<String>::new());
    }

    #[tokio::test]
    async fn output_is_captured_concurrently_and_capped() {
        let cwd = std::env::temp_dir();
        let out = run(
            spec(
                "head -c 104857600 /dev/zero; echo 'the end' >&2",
                &cwd,
                None,
            ),
            Duration::from_secs(20),
            64 * 1024,
            false,
        )
        .await
        .unwrap();
        assert_eq!(out.exit, Some(Exit::Code(0)));
        assert_eq!(out.stdout.total, 100 * 1024 * 1024);
        assert_eq!(out.stdout.tail.len(), 64 * 1024);
        assert_eq!(out.stderr.tail, b"the end\n");
    }

    #[tokio::test]
    async fn timeout_kills_a_group_that_ignores_sigterm() {
        let cwd = std::env::temp_dir();
        let marker = marker("sigterm");
        let script = format!(
            "trap '' TERM; python3 -c 'import signal, time; \
             signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)' {marker} & wait"
        );
        let started = Instant::now();
        let out = run(
            spec(&script, &cwd, None),
            Duration::from_millis(500),
            1024,
            false,
        )
        .await
        .unwrap();
        assert_eq!(out.exit, None);
        assert!(started.elapsed() < Duration::from_millis(1500));
        // Reaped before `run` returned: nothing left, not even a zombie.
        assert_eq!(with_marker(&marker), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_sleeping_grandchild_is_killed_when_the_check_exits() {
        let cwd = std::env::temp_dir();
        let marker = marker("grandchild");
        let script = format!("python3 -c 'import time; time.sleep(300)' {marker} & echo started");
        let out = run(
            spec(&script, &cwd, None),
            Duration::from_secs(10),
            1024,
            false,
        )
        .await
        .unwrap();
        assert_eq!(out.exit, Some(Exit::Code(0)));
        assert_eq!(out.stdout.tail, b"started\n");
        assert_eq!(with_marker(&marker), Vec::<String>::new());
    }

    #[tokio::test]
    async fn dropping_the_run_kills_and_reaps_the_group() {
        let cwd = std::env::temp_dir();
        let marker = marker("drop");
        let script = format!("python3 -c 'import time; time.sleep(300)' {marker}");
        let running = run(
            spec(&script, &cwd, None),
            Duration::from_secs(60),
            1024,
            false,
        );
        let cut = tokio::time::timeout(Duration::from_millis(500), running).await;
        assert!(cut.is_err(), "the sleeper finished?");
        assert_eq!(with_marker(&marker), Vec::<String>::new());
    }

    #[tokio::test]
    async fn limits_are_applied_before_exec() {
        let cwd = std::env::temp_dir();
        let limits = Limits {
            cpu_seconds: 7,
            address_space_bytes: 512 << 20,
            file_size_bytes: 1 << 20,
            max_processes: 100,
            output_cap_bytes: 1024,
        };
        let script = "python3 -c 'import resource as r; print([r.getrlimit(getattr(r, n))[0] \
                      for n in (\"RLIMIT_CPU\", \"RLIMIT_AS\", \"RLIMIT_FSIZE\", \"RLIMIT_CORE\", \
                      \"RLIMIT_NPROC\")])'";
        let out = run(
            spec(script, &cwd, Some(limits)),
            Duration::from_secs(10),
            1024,
            false,
        )
        .await
        .unwrap();
        assert_eq!(out.exit, Some(Exit::Code(0)), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout.tail),
            format!("[7, {}, {}, 0, 100]\n", 512 << 20, 1 << 20)
        );
        // The file-size limit stops a runaway writer.
        let out = run(
            spec("head -c 2000000 /dev/zero > big.bin", &cwd, Some(limits)),
            Duration::from_secs(10),
            1024,
            false,
        )
        .await
        .unwrap();
        let _ = std::fs::remove_file(cwd.join("big.bin"));
        assert_ne!(out.exit, Some(Exit::Code(0)));
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_reported_as_the_check_saw_them() {
        let cwd = std::env::temp_dir();
        let out = run(
            spec("exit 7", &cwd, None),
            Duration::from_secs(5),
            64,
            false,
        )
        .await
        .unwrap();
        assert_eq!(out.exit, Some(Exit::Code(7)));
        let out = run(
            spec("kill -SEGV $$", &cwd, None),
            Duration::from_secs(5),
            64,
            false,
        )
        .await
        .unwrap();
        assert_eq!(out.exit, Some(Exit::Signal(libc::SIGSEGV)));
    }

    #[test]
    fn tail_text_keeps_the_last_lines() {
        assert_eq!(tail_text(b"a\nb\nc\n", 2, 100), "b\nc");
        assert_eq!(tail_text(b"a\nb\nc", 5, 100), "a\nb\nc");
        assert_eq!(tail_text(b"abcdef", 5, 3), "def");
        assert_eq!(tail_text(b"", 5, 3), "");
    }
}
