//! Warm mode: a pre-started interpreter (the *zygote*) that forks one fresh child per check.
//!
//! The zygote is `python -I -B` running `check.py` + `zygote.py`, started lazily (in the root
//! of the first check, so an interpreter launcher such as a pyenv shim resolves as it would
//! for a cold check) under the same supervisor as every other check (see [`crate::runner`]),
//! so whatever it or its children leave behind is reaped.
//!
//! ```text
//! bluegreen ══ control socket (fd 3, SOCK_SEQPACKET) ══ zygote: forks and reaps, nothing else
//!     │  request pipe ──▶ child (own session; the agent is imported here)
//!     ◀── stdout, stderr, report pipes ──┘
//! ```
//!
//! - **Bluegreen makes each child's four pipes** and passes the child's ends to the zygote
//!   with a fork request (`SCM_RIGHTS`); the zygote forks, closes its copies and says which
//!   pid it got. Request and report then go straight between bluegreen and the child: the
//!   zygote is not on a check's path, which saves two process wake-ups per check.
//! - **One child is forked ahead of time** (the *spare*): it calls `setsid`, puts its pipes
//!   in place, rehearses the check on a throwaway module (10–20 ms), applies the limits,
//!   writes a newline to its report pipe (*prepared*; JSON whitespace, so the report still
//!   parses) and blocks reading its request. A check takes the spare if it is prepared;
//!   otherwise (checks arriving faster than that) it asks for a fresh child that skips the
//!   preparation, and the spare stays for a later check. The next spare is asked for a
//!   millisecond after a check, when its caller has the verdict (the fork wakes the zygote,
//!   which would compete for the CPU). A spare found dead before it read its request (the
//!   request line is still in the pipe) is replaced; nothing of the agent ran in it.
//! - **The child** `chdir`s to the root, sets `sys.path = [root, target dir] + the stdlib
//!   path of python -I`, imports the candidate exactly like cold mode and writes the same
//!   report. Then it waits to be killed: bluegreen kills its group as soon as the report is
//!   whole (its output was flushed before), so the verdict does not wait for the child's
//!   teardown. A child that ends without a whole report is judged by its exit status, which
//!   the zygote sends when it has reaped the child and killed its group.
//! - A timeout, a cancellation or the check being dropped kills the child's group from
//!   here (`Running`); the zygote reaps it.
//!
//! Differences from cold mode that cannot change a verdict: the stdlib modules the check
//! itself uses are already imported, all children share the zygote's hash seed, and the
//! interpreter allocates through glibc's malloc rather than pymalloc (`ZYGOTE_ALLOCATOR`;
//! the agent's environment does not show it).
//!
//! Failure handling: if the zygote cannot start, dies (the reader sees end of file) or
//! sends something unexpected, the checks in flight fall back to cold mode and a new zygote
//! is started on a later check (at most one start attempt per second).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::limits::Limits;
use crate::runner::{self, Captured, Exit, ProcessSpec, RunOutput};
use crate::sandbox::{self, Confinement, Sandbox, Scratch};

/// The zygote's program: the shared check code plus the fork server.
const ZYGOTE_SOURCE: &str = concat!(
    include_str!("python/check.py"),
    "\n",
    include_str!("python/zygote.py")
);

/// The zygote's allocator: glibc's, told to keep what it frees (no trimming, no per-block
/// mmap). The spare child grows its heap while it waits (`_bg_prefault`), so the check's
/// compile reuses pages already faulted in instead of faulting fresh ones — measured at
/// 0.3–0.7 ms of what was then a ~6 ms warm check. `zygote.py` removes these variables from
/// `os.environ` at start, so neither the agent nor anything it runs sees them. Not used when
/// the configured environment sets `PYTHONMALLOC` itself.
const ZYGOTE_ALLOCATOR: [(&str, &str); 4] = [
    ("PYTHONMALLOC", "malloc"),
    ("MALLOC_TRIM_THRESHOLD_", "1073741824"),
    ("MALLOC_MMAP_THRESHOLD_", "33554432"),
    ("MALLOC_TOP_PAD_", "16777216"),
];

/// Least time between two attempts to start a zygote.
pub(crate) const RESTART_DELAY: Duration = Duration::from_secs(1);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a check the next spare is asked for (see [`Zygote::prefork_soon`]).
const PREFORK_DELAY: Duration = Duration::from_millis(1);

/// Lazily started, shared, restartable zygote of one startup verifier.
pub(crate) struct ZygotePool {
    python: OsString,
    env: Vec<(OsString, OsString)>,
    /// The resource limits of every check, as `[[name, value], ...]` JSON.
    limits: String,
    sandbox: Sandbox,
    /// Files hidden from the zygote and so from every child (see [`crate::sandbox`]).
    hidden: Vec<PathBuf>,
    state: tokio::sync::Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    zygote: Option<Arc<Zygote>>,
    last_attempt: Option<Instant>,
}

impl ZygotePool {
    pub(crate) fn new(
        python: OsString,
        env: Vec<(OsString, OsString)>,
        limits: &Limits,
        sandbox: Sandbox,
        hidden: Vec<PathBuf>,
    ) -> Self {
        let limits: Vec<(&str, u64)> = limits
            .rlimits()
            .into_iter()
            .map(|(name, _, value)| (name, value))
            .collect();
        Self {
            python,
            env,
            limits: json!(limits).to_string(),
            sandbox,
            hidden,
            state: tokio::sync::Mutex::new(PoolState::default()),
        }
    }

    /// A live zygote, starting one if there is none (and the last attempt is not too recent).
    /// It is started in `root`, so that a launcher choosing the interpreter by directory (a
    /// pyenv shim and `.python-version`) picks the same one as a cold check there.
    pub(crate) async fn get(&self, root: &Path) -> Option<Arc<Zygote>> {
        let mut state = self.state.lock().await;
        if let Some(zygote) = &state.zygote {
            if zygote.is_alive() {
                return Some(zygote.clone());
            }
            tracing::warn!("startup zygote is gone; checks run cold until it is restarted");
            state.zygote = None;
        }
        if state
            .last_attempt
            .is_some_and(|at| at.elapsed() < RESTART_DELAY)
        {
            return None;
        }
        state.last_attempt = Some(Instant::now());
        let python = self.python.clone();
        let env = self.env.clone();
        let limits = self.limits.clone();
        let sandbox = self.sandbox;
        let hidden = self.hidden.clone();
        let root = root.to_path_buf();
        let start = move || Zygote::start(python, env, limits, sandbox, &hidden, &root);
        match tokio::task::spawn_blocking(start).await {
            Ok(Ok(zygote)) => {
                let zygote = Arc::new(zygote);
                state.zygote = Some(zygote.clone());
                Some(zygote)
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot start the startup zygote, checking cold: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("cannot start the startup zygote, checking cold: {e}");
                None
            }
        }
    }

    /// The pid of the running zygote interpreter, if any (for tests and diagnostics).
    pub(crate) fn current_pid(&self) -> Option<i32> {
        let state = self.state.try_lock().ok()?;
        state
            .zygote
            .as_ref()
            .filter(|z| z.is_alive())
            .map(|z| z.pid)
    }
}

/// A forked child blocked reading its request, and bluegreen's ends of its pipes.
struct Spare {
    pid: i32,
    ends: SpareEnds,
}

impl Spare {
    /// Whether it has finished its preparation: it writes a newline to its report pipe then.
    fn is_prepared(&self) -> bool {
        unread_bytes(&self.ends.report) > 0
    }
}

/// Bluegreen's ends of a child's pipes. Closing `request` before a whole request line was
/// written makes the child exit.
struct SpareEnds {
    request: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    report: OwnedFd,
}

/// A child the zygote is forking, and the check waiting for it, if any.
struct Forking {
    ends: SpareEnds,
    claimed_by: Option<oneshot::Sender<Claimed>>,
}

/// A spare handed to one check, with the channel its exit status arrives on.
struct Claimed {
    spare: Spare,
    exit: oneshot::Receiver<i64>,
}

/// The zygote's children as bluegreen knows them.
#[derive(Default)]
struct Children {
    /// At most one spare waits unclaimed.
    ready: Option<Spare>,
    forking: HashMap<u64, Forking>,
    /// Children running a check, and where their exit status goes.
    running: HashMap<i32, oneshot::Sender<i64>>,
}

impl Children {
    /// Registers `spare` as running a check, so its exit status reaches that check.
    fn claim(&mut self, spare: Spare) -> Claimed {
        let (exit_tx, exit) = oneshot::channel();
        self.running.insert(spare.pid, exit_tx);
        Claimed { spare, exit }
    }

    /// Hands a freshly forked child to the check that claimed it, or keeps it as the spare.
    fn deliver(&mut self, spare: Spare, claimed_by: Option<oneshot::Sender<Claimed>>) {
        let spare = match claimed_by {
            Some(check) => {
                let pid = spare.pid;
                match check.send(self.claim(spare)) {
                    Ok(()) => return,
                    // The check gave up waiting (timeout, cancellation).
                    Err(claimed) => {
                        self.running.remove(&pid);
                        claimed.spare
                    }
                }
            }
            None => spare,
        };
        if self.ready.is_none() {
            self.ready = Some(spare);
        }
        // Otherwise dropping it closes its request pipe, and it exits.
    }
}

/// Shared between the zygote handle, its checks and its reader thread.
#[derive(Default)]
struct Shared {
    alive: AtomicBool,
    children: Mutex<Children>,
}

/// One running zygote.
pub(crate) struct Zygote {
    pid: i32,
    next_token: AtomicU64,
    /// The control socket (`SOCK_SEQPACKET`); the reader thread has its own descriptor.
    ctl: OwnedFd,
    supervisor: Mutex<Option<std::process::Child>>,
    shared: Arc<Shared>,
    /// Strict: the parent of the children's scratch directories (removed with the zygote).
    _scratch: Option<Scratch>,
}

impl Zygote {
    /// Starts the interpreter and waits for its `ready` message (blocking).
    fn start(
        python: OsString,
        env: Vec<(OsString, OsString)>,
        limits: String,
        sandbox: Sandbox,
        hidden: &[PathBuf],
        root: &Path,
    ) -> std::io::Result<Self> {
        let (ctl, zygote_end) = seqpacket_pair()?;
        let mut env = env;
        // Strict: the zygote may read /proc (it finds its orphans there) and write the
        // scratch parent; each child narrows that to its own directory (zygote.py) and
        // inherits the zygote's mount namespace, where `hidden` is covered.
        let (scratch, confinement) = match sandbox {
            Sandbox::Strict => {
                let scratch = Scratch::new("zygote")?;
                sandbox::with_scratch_env(&mut env, &scratch);
                let confinement = Confinement::new(scratch.path(), true, hidden);
                (Some(scratch), Some(confinement))
            }
            Sandbox::Off => (None, None),
        };
        let child_sandbox = match (&scratch, &confinement) {
            (Some(scratch), Some(confinement)) => json!({
                "scratch": scratch.path(),
                "landlock": confinement.is_enforced(),
                "read": sandbox::child_readable(),
                "devices": sandbox::DEVICES,
            }),
            _ => Value::Null,
        };
        let mut spec = ProcessSpec {
            program: &python,
            args: vec![
                "-I".into(),
                "-B".into(),
                "-c".into(),
                ZYGOTE_SOURCE.into(),
                limits.into(),
                child_sandbox.to_string().into(),
            ],
            cwd: root,
            env,
            limits: None,
            extra_fds: vec![(zygote_end, 3)],
            confinement: confinement.as_ref(),
        };
        if !spec.env.iter().any(|(k, _)| k == "PYTHONMALLOC") {
            spec.env.extend(
                ZYGOTE_ALLOCATOR
                    .iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            );
        }
        let mut command = runner::supervised_command(&spec)?;
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let supervisor = command.spawn()?;
        drop(spec);
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader_shared = shared.clone();
        let reader_ctl = ctl.try_clone()?;
        std::thread::Builder::new()
            .name("bluegreen-zygote".into())
            .spawn(move || read_messages(reader_ctl, reader_shared, ready_tx))?;
        let mut zygote = Self {
            pid: 0,
            next_token: AtomicU64::new(1),
            ctl,
            supervisor: Mutex::new(Some(supervisor)),
            shared,
            _scratch: scratch,
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(pid) => {
                zygote.pid = pid;
                zygote.prefork();
                Ok(zygote)
            }
            Err(_) => Err(std::io::Error::other(
                "the zygote did not report ready (is the python interpreter usable?)",
            )),
        }
    }

    fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Ends the zygote (it misbehaved, or nobody needs it); checks in flight fall back to
    /// cold.
    fn kill(&self) {
        self.shared.alive.store(false, Ordering::SeqCst);
        // End of input for the zygote (it kills its children and exits) and for the reader.
        // SAFETY: shutdown on a socket we own.
        unsafe { libc::shutdown(self.ctl.as_raw_fd(), libc::SHUT_RDWR) };
        if let Ok(mut supervisor) = self.supervisor.lock() {
            if let Some(mut child) = supervisor.take() {
                child.stdin.take(); // the supervisor kills the zygote's group
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
        }
    }

    /// Asks for a child; `claimed_by` receives it, or else it becomes the spare.
    fn fork(&self, claimed_by: Option<oneshot::Sender<Claimed>>) -> bool {
        let token = self.next_token.fetch_add(1, Ordering::SeqCst);
        let claimed_by_nobody = claimed_by.is_none();
        let pipes = (|| -> std::io::Result<_> {
            Ok([
                runner::pipe()?,
                runner::pipe()?,
                runner::pipe()?,
                runner::pipe()?,
            ])
        })();
        let Ok([(request_r, request_w), (out_r, out_w), (err_r, err_w), (rep_r, rep_w)]) = pipes
        else {
            return false;
        };
        let ends = SpareEnds {
            request: request_w,
            stdout: out_r,
            stderr: err_r,
            report: rep_r,
        };
        match self.shared.children.lock() {
            Ok(mut children) => children.forking.insert(token, Forking { ends, claimed_by }),
            Err(_) => return false,
        };
        // A check waiting for this child wants it now, not prepared.
        let message = json!({ "fork": token, "prefault": claimed_by_nobody }).to_string();
        let child_ends = [&request_r, &out_w, &err_w, &rep_w].map(|fd| fd.as_raw_fd());
        if send_with_fds(&self.ctl, message.as_bytes(), &child_ends).is_err() {
            if let Ok(mut children) = self.shared.children.lock() {
                children.forking.remove(&token);
            }
            self.kill();
            return false;
        }
        // The zygote has its own copies now; ours go with this scope, or the pipes would
        // never reach end of file.
        true
    }

    /// Keeps one spare forked ahead of the next check (once no check is waiting for one).
    fn prefork(&self) {
        let needed = match self.shared.children.lock() {
            Ok(children) => {
                children.ready.is_none()
                    && !children.forking.values().any(|f| f.claimed_by.is_none())
            }
            Err(_) => false,
        };
        if needed && self.is_alive() {
            self.fork(None);
        }
    }

    /// [`Self::prefork`] a moment after a check, once its caller has the verdict: forking
    /// wakes the zygote, which would otherwise compete with the caller for the CPU.
    fn prefork_soon(self: &Arc<Self>) {
        let zygote = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(PREFORK_DELAY).await;
                    zygote.prefork();
                });
            }
            Err(_) => zygote.prefork(),
        }
    }

    /// A child for one check: the spare if there is one, else the next one forked. `None`
    /// when the zygote is gone.
    async fn claim(&self) -> Option<Claimed> {
        let (tx, rx) = oneshot::channel();
        let unclaimed = {
            let mut children = self.shared.children.lock().ok()?;
            if !self.is_alive() {
                return None;
            }
            match children.ready.take() {
                Some(spare) if spare.is_prepared() => return Some(children.claim(spare)),
                // Still preparing (checks arrive faster than that): a fresh child that skips
                // the preparation starts sooner; the spare stays for a later check.
                Some(spare) => {
                    children.ready = Some(spare);
                    Some(tx)
                }
                // Wait for the spare being forked, if nobody else does.
                None => match children
                    .forking
                    .values_mut()
                    .find(|f| f.claimed_by.is_none())
                {
                    Some(forking) => {
                        forking.claimed_by = Some(tx);
                        None
                    }
                    None => Some(tx),
                },
            }
        };
        if let Some(tx) = unclaimed {
            if !self.fork(Some(tx)) {
                return None;
            }
        }
        rx.await.ok()
    }

    /// Runs one check; `None` means "the zygote failed, check cold instead".
    pub(crate) async fn check(
        self: &Arc<Self>,
        request: WarmRequest,
        timeout: Duration,
    ) -> Option<RunOutput> {
        let deadline = tokio::time::Instant::now() + timeout;
        let message = json!({
            "staged": request.staged,
            "module": request.module,
            "package": request.package,
            "entrypoint": request.entrypoint,
            "root": request.root,
            "path": request.path,
        })
        .to_string();
        // A spare that died while it waited never read its request: take another (once).
        for _ in 0..2 {
            let claimed = match tokio::time::timeout_at(deadline, self.claim()).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => return None,
                Err(_) => return Some(RunOutput::default()), // timed out
            };
            let ran = self
                .run(claimed, message.as_bytes(), deadline, request.output_cap)
                .await;
            self.prefork_soon();
            match ran {
                Ran::Finished(output) => return Some(output),
                Ran::NotStarted => continue,
                Ran::ZygoteGone => return None,
            }
        }
        None
    }

    /// Hands the request to the claimed child and collects what it does, straight from its
    /// pipes: the verdict is known as soon as its report is whole.
    async fn run(
        &self,
        claimed: Claimed,
        message: &[u8],
        deadline: tokio::time::Instant,
        cap: usize,
    ) -> Ran {
        let Claimed { spare, mut exit } = claimed;
        let mut running = Running {
            shared: &self.shared,
            pid: spare.pid,
            reaped: false,
        };
        let ends = spare.ends;
        // One line into an empty pipe, far below its capacity: this never blocks. The pipe
        // stays open until the verdict, so a child that dies can be asked whether it had
        // read its request.
        let mut request = std::fs::File::from(ends.request);
        if request.write_all(message).is_err() || request.write_all(b"\n").is_err() {
            return Ran::NotStarted;
        }
        let (Ok(mut report), Ok(mut out), Ok(mut err)) = (
            pipe::Receiver::from_owned_fd(ends.report),
            pipe::Receiver::from_owned_fd(ends.stdout),
            pipe::Receiver::from_owned_fd(ends.stderr),
        ) else {
            return Ran::ZygoteGone;
        };
        let mut output = RunOutput::default();
        let (mut report_open, mut out_open, mut err_open) = (true, true, true);
        let mut report_buf = [0u8; 16 * 1024];
        let mut out_buf = vec![0u8; 64 * 1024];
        let mut err_buf = vec![0u8; 64 * 1024];
        let status = loop {
            tokio::select! {
                biased;
                read = report.read(&mut report_buf), if report_open => match read {
                    Ok(0) | Err(_) => report_open = false,
                    Ok(n) => {
                        output.report.extend_from_slice(&report_buf[..n]);
                        // Like a cold check's: a flood is not read further (the check then
                        // blocks until its timeout, as it would cold).
                        report_open = output.report.len() < runner::REPORT_CAP;
                        if is_whole_report(&output.report) {
                            // The report is the checker's last act before _exit(0), after
                            // it flushed its output: the verdict is known, and everything
                            // it printed is in the pipes.
                            kill_group(running.pid);
                            drain_ready(&out, &mut output.stdout, cap);
                            drain_ready(&err, &mut output.stderr, cap);
                            break 0;
                        }
                    }
                },
                read = out.read(&mut out_buf), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => output.stdout.push(&out_buf[..n], cap),
                },
                read = err.read(&mut err_buf), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => output.stderr.push(&err_buf[..n], cap),
                },
                status = &mut exit => match status {
                    Ok(status) => {
                        // Reaped, its group killed: the rest of its output is in the pipes
                        // (bounded: something that escaped the group may hold them open).
                        running.reaped = true;
                        let rest = async {
                            if report_open {
                                let left = runner::REPORT_CAP.saturating_sub(output.report.len());
                                let mut rest = (&mut report).take(left as u64);
                                let _ = rest.read_to_end(&mut output.report).await;
                            }
                            if out_open {
                                read_capped(&mut out, &mut output.stdout, cap).await;
                            }
                            if err_open {
                                read_capped(&mut err, &mut output.stderr, cap).await;
                            }
                        };
                        let _ = tokio::time::timeout(Duration::from_millis(250), rest).await;
                        let reported = output.report.iter().any(|b| !b.is_ascii_whitespace());
                        if !reported && unread_bytes(&request) > 0 {
                            return Ran::NotStarted; // it died waiting (killed from outside)
                        }
                        break status;
                    }
                    Err(_) => return Ran::ZygoteGone,
                },
                () = tokio::time::sleep_until(deadline) => return Ran::Finished(RunOutput::default()),
            }
        };
        output.exit = Some(Exit::from_exitcode(status));
        output.stdout.finish(cap);
        output.stderr.finish(cap);
        Ran::Finished(output)
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // No check is in flight (each holds an Arc): end the zygote and reap its supervisor.
        self.kill();
    }
}

/// How a warm check went.
enum Ran {
    Finished(RunOutput),
    /// The child was gone before it read its request: nothing of the agent ran.
    NotStarted,
    ZygoteGone,
}

/// A child running a check. Dropping it (the check finished, timed out or was cancelled)
/// kills the child's group unless the zygote already reaped it; the zygote reaps it.
struct Running<'a> {
    shared: &'a Shared,
    pid: i32,
    reaped: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut children) = self.shared.children.lock() {
            children.running.remove(&self.pid);
        }
        if !self.reaped {
            kill_group(self.pid);
        }
    }
}

fn kill_group(pid: i32) {
    // SAFETY: signalling the process group of a child the zygote forked for a check.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

/// Whether the report is one whole JSON object (leading whitespace is the spare's "prepared").
fn is_whole_report(report: &[u8]) -> bool {
    // The checker writes one JSON object: only a buffer ending in `}` is worth parsing.
    report.trim_ascii_end().ends_with(b"}")
        && serde_json::from_slice::<serde::de::IgnoredAny>(report).is_ok()
}

/// How many bytes wait unread in a pipe (`FIONREAD`, which either end answers).
fn unread_bytes(pipe: &impl AsRawFd) -> libc::c_int {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    if unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut unread) } == -1 {
        return 0;
    }
    unread
}

/// What is in the pipe right now, without waiting.
fn drain_ready(pipe: &pipe::Receiver, into: &mut Captured, cap: usize) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = pipe.try_read(&mut buf) {
        if n == 0 {
            break;
        }
        into.push(&buf[..n], cap);
    }
}

async fn read_capped(pipe: &mut pipe::Receiver, into: &mut Captured, cap: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        into.push(&buf[..n], cap);
    }
}

/// What cold and warm mode both need to know about one check.
pub(crate) struct WarmRequest {
    pub staged: String,
    /// The dotted import name.
    pub module: String,
    /// The target is a package's `__init__.py`.
    pub package: bool,
    pub entrypoint: Option<String>,
    pub root: String,
    pub path: Vec<String>,
    pub output_cap: usize,
}

/// A close-on-exec `SOCK_SEQPACKET` socket pair: message boundaries, and descriptors can
/// travel with a message.
fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two fresh descriptors that we then own.
    unsafe {
        if libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        ) == -1
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Sends one message with `fds` attached (`SCM_RIGHTS`), never blocking: a zygote that
/// stopped reading is broken.
fn send_with_fds(socket: &OwnedFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // u64 words keep the control buffer aligned for cmsghdr.
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr points at live buffers for the duration of the call; the control
    // buffer is large enough for one cmsghdr carrying `fds`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
        let sent = libc::sendmsg(
            socket.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if sent as usize != data.len() {
            return Err(std::io::Error::other("short send to the zygote"));
        }
    }
    Ok(())
}

/// The reader thread: dispatches the zygote's messages until its socket ends.
fn read_messages(ctl: OwnedFd, shared: Arc<Shared>, ready: std::sync::mpsc::Sender<i32>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv into a buffer we own, on a socket we own.
        let n = unsafe { libc::recv(ctl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        let Ok(message) = serde_json::from_slice::<Value>(&buf[..n as usize]) else {
            tracing::warn!("startup zygote sent an unreadable message");
            break;
        };
        let number = |key: &str| message.get(key).and_then(Value::as_i64);
        if message.get("ready").is_some() {
            shared.alive.store(true, Ordering::SeqCst);
            let _ = ready.send(number("pid").unwrap_or(0) as i32);
            continue;
        }
        let Ok(mut children) = shared.children.lock() else {
            break;
        };
        if let (Some(token), Some(pid)) = (number("forked"), number("pid")) {
            if let Some(forking) = children.forking.remove(&(token as u64)) {
                let spare = Spare {
                    pid: pid as i32,
                    ends: forking.ends,
                };
                children.deliver(spare, forking.claimed_by);
            }
        } else if let (Some(pid), Some(status)) = (number("exit"), number("status")) {
            let pid = pid as i32;
            if children.ready.as_ref().is_some_and(|s| s.pid == pid) {
                children.ready = None; // the spare died while it waited
            } else if let Some(check) = children.running.remove(&pid) {
                let _ = check.send(status);
            }
        } else {
            tracing::warn!("startup zygote sent an unexpected message");
            break;
        }
    }
    // The zygote is gone (or broken): kill what it was running and let the waiting checks
    // fall back to cold mode (dropping their channels tells them).
    shared.alive.store(false, Ordering::SeqCst);
    if let Ok(mut children) = shared.children.lock() {
        let children = std::mem::take(&mut *children);
        if let Some(spare) = &children.ready {
            kill_group(spare.pid);
        }
        for pid in children.running.keys() {
            kill_group(*pid);
        }
    }
}
