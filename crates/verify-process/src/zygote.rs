//! Warm mode: a pre-started interpreter (the *zygote*) that forks one fresh child per check.
//!
//! The zygote is `python -I -B` running `check.py` + `zygote.py`, started lazily (in the root
//! of the first check, so an interpreter launcher such as a pyenv shim resolves as it would
//! for a cold check) under the same supervisor as every other check (see [`crate::runner`]),
//! so whatever it or its children leave behind is reaped. It speaks line-delimited JSON on
//! two pipes (its fds 3 and 4); `zygote.py` documents the messages.
//!
//! Each check gets a child forked from the pristine zygote: it calls `setsid`, redirects
//! stdio to fresh pipes, applies the limits, `chdir`s to the root, sets
//! `sys.path = [root, target dir] + the stdlib path of python -I`, imports the candidate
//! exactly like cold mode and writes the same report. One such child is kept forked ahead of
//! time (the *spare*, blocked reading its request), so the fork is off the critical path.
//! The zygote answers with exit status, report and capped output as soon as the child's
//! report is whole — the report is the child's last act before `_exit(0)`, so the zygote
//! kills its group and answers without waiting for the address space to be torn down
//! (about a millisecond); a child that dies without a whole report is answered when it has
//! been reaped. Either way the zygote reaps the child and kills its group. Bluegreen learns the child's pid right after the hand-off, so a
//! timeout or cancellation kills the child's group directly.
//!
//! Differences from cold mode that cannot change a verdict: the stdlib modules the check
//! itself uses are already imported, all children share the zygote's hash seed, and the
//! interpreter allocates through glibc's malloc rather than pymalloc (`ZYGOTE_ALLOCATOR`;
//! the agent's environment does not show it).
//!
//! Failure handling: if the zygote cannot start, dies (the reader sees end of file) or
//! sends something unexpected, the check in flight falls back to cold mode and a new zygote
//! is started on a later check (at most one start attempt per second).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::runner::{self, Captured, Exit, ProcessSpec, RunOutput};

/// The zygote's program: the shared check code plus the fork server.
const ZYGOTE_SOURCE: &str = concat!(
    include_str!("python/check.py"),
    "\n",
    include_str!("python/zygote.py")
);

/// The zygote's allocator: glibc's, told to keep what it frees (no trimming, no per-block
/// mmap). The spare child grows its heap while it waits (`_bg_prefault`), so the check's
/// compile reuses pages already faulted in instead of faulting fresh ones — measured at
/// 0.3–0.7 ms of a ~6 ms warm check here. `zygote.py` removes these variables from
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

/// Lazily started, shared, restartable zygote of one startup verifier.
pub(crate) struct ZygotePool {
    python: OsString,
    env: Vec<(OsString, OsString)>,
    state: tokio::sync::Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    zygote: Option<Arc<Zygote>>,
    last_attempt: Option<Instant>,
}

impl ZygotePool {
    pub(crate) fn new(python: OsString, env: Vec<(OsString, OsString)>) -> Self {
        Self {
            python,
            env,
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
        let root = root.to_path_buf();
        match tokio::task::spawn_blocking(move || Zygote::start(python, env, &root)).await {
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

/// Shared between the zygote handle and its reader thread.
#[derive(Default)]
struct Shared {
    alive: AtomicBool,
    pending: Mutex<HashMap<u64, Pending>>,
}

struct Pending {
    pid: Option<i32>,
    done: Option<oneshot::Sender<Value>>,
}

/// One running zygote.
pub(crate) struct Zygote {
    pid: i32,
    next_id: AtomicU64,
    requests: Mutex<Option<std::fs::File>>,
    supervisor: Mutex<Option<std::process::Child>>,
    shared: Arc<Shared>,
}

impl Zygote {
    /// Starts the interpreter and waits for its `ready` line (blocking).
    fn start(
        python: OsString,
        env: Vec<(OsString, OsString)>,
        root: &Path,
    ) -> std::io::Result<Self> {
        let (request_read, request_write) = runner::pipe()?;
        let (response_read, response_write) = runner::pipe()?;
        let spec = ProcessSpec {
            program: &python,
            args: vec!["-I".into(), "-B".into(), "-c".into(), ZYGOTE_SOURCE.into()],
            cwd: root,
            env,
            limits: None,
            extra_fds: vec![(request_read, 3), (response_write, 4)],
        };
        let mut spec = spec;
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
        // Writes never block: a zygote that stops reading is treated as broken.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fd = request_write.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader_shared = shared.clone();
        let responses = std::fs::File::from(response_read);
        std::thread::Builder::new()
            .name("bluegreen-zygote".into())
            .spawn(move || read_responses(responses, reader_shared, ready_tx))?;
        let mut zygote = Self {
            pid: 0,
            next_id: AtomicU64::new(1),
            requests: Mutex::new(Some(std::fs::File::from(request_write))),
            supervisor: Mutex::new(Some(supervisor)),
            shared,
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(pid) => {
                zygote.pid = pid;
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

    /// Kills the zygote (it misbehaved); in-flight checks fall back to cold.
    fn kill(&self) {
        self.shared.alive.store(false, Ordering::SeqCst);
        if let Ok(mut requests) = self.requests.lock() {
            requests.take();
        }
        if let Ok(mut supervisor) = self.supervisor.lock() {
            if let Some(mut child) = supervisor.take() {
                child.stdin.take(); // the supervisor kills the zygote's group
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
        }
    }

    fn send(&self, message: &Value) -> bool {
        let mut line = message.to_string();
        line.push('\n');
        let Ok(mut requests) = self.requests.lock() else {
            return false;
        };
        matches!(
            requests.as_mut().map(|f| f.write_all(line.as_bytes())),
            Some(Ok(()))
        )
    }

    /// Runs one check; `None` means "the zygote failed, check cold instead".
    pub(crate) async fn check(
        self: &Arc<Self>,
        request: WarmRequest,
        timeout: Duration,
    ) -> Option<RunOutput> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().ok()?.insert(
            id,
            Pending {
                pid: None,
                done: Some(tx),
            },
        );
        let mut in_flight = InFlight {
            zygote: self.clone(),
            id,
            finished: false,
        };
        let message = json!({
            "id": id,
            "staged": request.staged,
            "module": request.module,
            "entrypoint": request.entrypoint,
            "root": request.root,
            "path": request.path,
            "limits": request.limits,
            "output_cap": request.output_cap,
        });
        if !self.send(&message) {
            in_flight.finished = true;
            self.forget(id);
            self.kill();
            return None;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(done)) => {
                in_flight.finished = true;
                match parse_done(&done, request.output_cap) {
                    Some(output) => Some(output),
                    None => {
                        tracing::warn!("startup zygote sent a malformed result; restarting it");
                        self.kill();
                        None
                    }
                }
            }
            // The zygote died; the reader already killed the child's group.
            Ok(Err(_)) => {
                in_flight.finished = true;
                None
            }
            // Timed out: dropping `in_flight` kills the child's group.
            Err(_) => Some(RunOutput {
                exit: None,
                stdout: Captured::default(),
                stderr: Captured::default(),
                report: Vec::new(),
            }),
        }
    }

    fn forget(&self, id: u64) -> Option<Pending> {
        self.shared.pending.lock().ok()?.remove(&id)
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // No check is in flight (each holds an Arc): end the zygote and reap its supervisor.
        self.kill();
    }
}

/// A check sent to the zygote; dropping it before the result arrived cancels it.
struct InFlight {
    zygote: Arc<Zygote>,
    id: u64,
    finished: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(Pending { pid: Some(pid), .. }) = self.zygote.forget(self.id) {
            // SAFETY: signalling a process group we created; the zygote reaps it.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        // Also covers a fork whose pid has not reached us yet.
        if !self.zygote.send(&json!({ "cancel": self.id })) {
            self.zygote.kill();
        }
    }
}

/// What cold and warm mode both need to know about one check.
pub(crate) struct WarmRequest {
    pub staged: String,
    pub module: String,
    pub entrypoint: Option<String>,
    pub root: String,
    pub path: Vec<String>,
    pub limits: Vec<(&'static str, u64)>,
    pub output_cap: usize,
}

fn parse_done(done: &Value, cap: usize) -> Option<RunOutput> {
    let exit = Exit::from_exitcode(done.get("exit")?.as_i64()?);
    let text = |key: &str| done.get(key).and_then(Value::as_str).unwrap_or_default();
    let total = |key: &str| done.get(key).and_then(Value::as_u64).unwrap_or_default();
    let captured = |key: &str, total_key: &str| {
        let bytes = text(key).as_bytes();
        let keep = bytes.len().min(cap);
        Captured {
            tail: bytes[bytes.len() - keep..].to_vec(),
            total: total(total_key),
        }
    };
    Some(RunOutput {
        exit: Some(exit),
        stdout: captured("stdout", "stdout_total"),
        stderr: captured("stderr", "stderr_total"),
        report: text("report").as_bytes().to_vec(),
    })
}

/// The reader thread: dispatches responses until the zygote's output ends.
fn read_responses(
    responses: std::fs::File,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<i32>,
) {
    let mut lines = BufReader::new(responses);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!("startup zygote sent an unreadable line");
            break;
        };
        if message.get("ready").is_some() {
            let pid = message.get("pid").and_then(Value::as_i64).unwrap_or(0);
            shared.alive.store(true, Ordering::SeqCst);
            let _ = ready.send(pid as i32);
            continue;
        }
        let Some(id) = message.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let Ok(mut pending) = shared.pending.lock() else {
            break;
        };
        if message.get("exit").is_some() {
            if let Some(mut entry) = pending.remove(&id) {
                if let Some(done) = entry.done.take() {
                    let _ = done.send(message);
                }
            }
        } else if let Some(pid) = message.get("pid").and_then(Value::as_i64) {
            if let Some(entry) = pending.get_mut(&id) {
                entry.pid = Some(pid as i32);
            }
        }
    }
    // The zygote is gone: kill what it was running (its supervisor reaps them) and let the
    // waiting checks fall back to cold mode.
    shared.alive.store(false, Ordering::SeqCst);
    if let Ok(mut pending) = shared.pending.lock() {
        for (_, entry) in pending.drain() {
            if let Some(pid) = entry.pid {
                // SAFETY: signalling a process group the zygote created for a check.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
    }
}
