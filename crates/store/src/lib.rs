//! `bluegreen-store`: the durable file store, bluegreen's default [`Store`].
//!
//! Layout under the root (human-readable, safe to `cat`):
//!
//! ```text
//! backups/agents/<agent>/green_<UTC yyyymmddTHHMMSS.mmmZ>_<deployment_id><ext>   snapshots (CONTRACT.md)
//! .bluegreen/agents/<agent>/events.jsonl   the agent's registry + write-ahead journal, one JSON event a line
//! .bluegreen/agents/<agent>/lock           flock(2)ed while a process operates on the agent
//! .bluegreen/trash/                        pruned snapshots on their way out (see `trash.rs`)
//! .bluegreen/pending/<agent>               empty marker: the agent may have an operation in flight
//! ```
//!
//! The pending index: a marker is created before an agent's `Begin` or `RollbackBegin` is
//! written, and its directory is synced in the same sync as that event (before the target
//! can change; on ext4 the log's sync has already committed the entry, so this costs no
//! extra round). The service removes it (unsynced) once the operation has ended and its
//! pruned files are gone. Recovery before a command reads only the marked agents' tails
//! (`pending_agents_indexed`); a marker's name must be a valid agent id with a registry,
//! it is never opened when read back, and a stale or hostile one only costs a look at that
//! agent's tail. A root without the index (made by an older version) is scanned in full
//! until its first operation builds the index from a full scan (written aside, then renamed
//! into place without replacing, so concurrent builders and markers are never lost).
//!
//! Durability: every `append` is `write` + `fdatasync` before it returns (`append_deferred`
//! leaves the `fdatasync` to the agent's next `sync` or `append`); snapshots are
//! written, fsynced and their directory fsynced; new directories are fsynced into their
//! parents. A torn last line (a crash mid-append) is ignored on read and cut off before the
//! next append. Each line also carries the agent's LIVE record after the event, so `status`
//! and crash detection read only the tail of each log — opening a store is O(1) and
//! `status` over 10,000 agents reads 10,000 tails, not 1,000,000 events.
//!
//! The root is hostile: everything is reached by descriptor from the root opened once
//! (`bluegreen_core::dirfd`), state directories must be real directories (a symlink there is
//! an error for that agent, never followed), files are opened `O_NOFOLLOW` and must be
//! regular, and every line read back is checked (`AgentState::check_event`) before it is
//! folded: a line naming a path bluegreen could not have written makes that agent's log
//! corrupt — an error naming the agent and the line, for that agent only.
//!
//! ```
//! use bluegreen_core::BlueGreenService;
//! use bluegreen_store::FsStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bluegreen_core::Error> {
//! let root = tempfile::tempdir().unwrap();
//! let service = BlueGreenService::builder(root.path())
//!     .store(FsStore::open(root.path())?)
//!     .build()?;
//! service.deploy_hot_swap("alpha", b"x = 1\n", "agents/alpha.py").await?;
//! service.deploy_hot_swap("alpha", b"x = 2\n", "agents/alpha.py").await?;
//! // The first version is kept as a snapshot and the registry survives the process.
//! let history = service.history("alpha")?;
//! let snapshot = history[0].backup_path.as_deref().unwrap();
//! assert_eq!(std::fs::read(root.path().join(snapshot)).unwrap(), b"x = 1\n");
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bluegreen_core::dirfd::{Dir, FsContext};
use bluegreen_core::paths::{canonical_root, check_snapshot};
use bluegreen_core::store::ActiveVersions;
use bluegreen_core::{AgentId, AgentLease, AgentState, DeploymentRecord, Error, Event, Store};
use rustix::fs::OFlags;
use serde::{Deserialize, Serialize};

mod feed;
mod trash;
use trash::Trash;

/// Name of the state directory under the root.
pub const STATE_DIR: &str = ".bluegreen";
const EVENTS: &str = "events.jsonl";
const LOCK: &str = "lock";
/// The pending index under the state directory.
const PENDING: &str = "pending";
/// How much of a log's end is read to find its last line before falling back to all of it.
const TAIL_WINDOW: u64 = 4 * 1024;

/// One line of an agent's log.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    #[serde(rename = "e")]
    event: Event,
    /// The agent's LIVE record after this event.
    live: Option<DeploymentRecord>,
}

struct Cached {
    len: u64,
    state: Arc<AgentState>,
}

/// Writes made with deferred durability, synced together by `Store::sync`.
#[derive(Default)]
struct Deferred {
    log: Option<File>,
    backups: Vec<File>,
    backup_dir: Option<Dir>,
    /// The pending index, after a marker was created in it.
    pending_dir: Option<Dir>,
}

/// The durable file store. See the crate docs for the layout.
pub struct FsStore {
    root: PathBuf,
    /// The root, opened once; everything else is reached from it by descriptor.
    dir: Dir,
    /// State folded from each log, valid while the log's length is unchanged (another
    /// process appending changes it).
    cache: Mutex<HashMap<AgentId, Cached>>,
    deferred: Mutex<HashMap<AgentId, Deferred>>,
    trash: Trash,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore").field("root", &self.root).finish()
    }
}

fn agent_rel(agent: &AgentId) -> String {
    format!("{STATE_DIR}/agents/{agent}")
}

fn log_rel(agent: &AgentId) -> String {
    format!("{STATE_DIR}/agents/{agent}/{EVENTS}")
}

fn pending_rel() -> String {
    format!("{STATE_DIR}/{PENDING}")
}

/// Would `agents()` list the entry `name` of `.bluegreen/agents`? A symlink (or anything
/// but a directory) where an agent's directory belongs is listed: that agent is then
/// reported broken, not silently skipped.
fn listed(agents: &Dir, name: &str) -> bool {
    match agents.open_dir(name) {
        Ok(Some(sub)) => matches!(sub.stat(EVENTS), Ok(Some(_))),
        Ok(None) => false,
        Err(_) => true,
    }
}

fn backups_rel(agent: &AgentId) -> String {
    format!("backups/agents/{agent}")
}

impl FsStore {
    /// Opens the store under `root`. Writes nothing until the first change; refuses a state
    /// or backups directory that is a symlink (or not a directory).
    pub fn open(root: &Path) -> Result<Self, Error> {
        let root = canonical_root(root)?;
        let dir = Dir::open_root(&root).fs_context(|| "opening the root".to_owned())?;
        for rel in [format!("{STATE_DIR}/agents"), "backups/agents".to_owned()] {
            dir.walk(&rel).fs_context(|| format!("opening {rel}"))?;
        }
        let trash_root = dir
            .try_clone()
            .fs_context(|| "opening the root".to_owned())?;
        Ok(Self {
            root,
            dir,
            trash: Trash::new(trash_root),
            cache: Mutex::new(HashMap::new()),
            deferred: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a whole event log for an agent that has none yet, in one durable write (for
    /// migrations from another registry, and for building large registries in benchmarks).
    pub fn import_log(&self, agent: &AgentId, events: &[Event]) -> Result<(), Error> {
        let dir = self.agent_dir(agent, true)?.ok_or_else(|| {
            Error::Internal(format!("agent {agent}: no directory after creating it"))
        })?;
        let rel = log_rel(agent);
        if dir
            .stat(EVENTS)
            .fs_context(|| format!("stat {rel}"))?
            .is_some()
        {
            return Err(Error::Conflict(format!(
                "agent {agent} already has a registry"
            )));
        }
        let mut state = AgentState::default();
        let mut bytes = Vec::new();
        for event in events {
            state.apply(event);
            serde_json::to_writer(
                &mut bytes,
                &Line {
                    event: event.clone(),
                    live: state.live().cloned(),
                },
            )
            .map_err(|e| Error::Internal(format!("encoding an event: {e}")))?;
            bytes.push(b'\n');
        }
        if state.is_pending() {
            if let Some(index) = self.mark_pending(agent)? {
                index
                    .sync()
                    .fs_context(|| format!("syncing {}", pending_rel()))?;
            }
        }
        let tmp = format!(".{EVENTS}.tmp-{}", uuid_suffix());
        let written = dir
            .write_new(&tmp, &bytes)
            .and_then(|f| f.sync_all())
            .and_then(|()| dir.rename(&tmp, &dir, EVENTS));
        if written.is_err() {
            let _ = dir.unlink(&tmp);
        }
        written
            .and_then(|()| dir.sync())
            .fs_context(|| format!("writing {rel}"))
    }

    /// The agent's state directory (`None` if missing, unless `create`).
    fn agent_dir(&self, agent: &AgentId, create: bool) -> Result<Option<Dir>, Error> {
        let rel = agent_rel(agent);
        let dir = if create {
            self.dir.walk_create(&rel).map(Some)
        } else {
            self.dir.walk(&rel)
        };
        dir.fs_context(|| format!("agent {agent}: opening {rel}"))
    }

    /// The agent's log, opened with `flags` (`None` if missing).
    fn open_log(
        &self,
        agent: &AgentId,
        dir: &Dir,
        flags: OFlags,
    ) -> Result<Option<(File, u64)>, Error> {
        Ok(dir
            .open_file(EVENTS, flags)
            .fs_context(|| format!("agent {agent}: opening {}", log_rel(agent)))?
            .map(|(f, st)| (f, st.st_size.max(0) as u64)))
    }

    /// The agent's log for the change feed, read-only (`None` if missing).
    fn feed_log(&self, agent: &AgentId) -> Result<Option<(File, u64)>, Error> {
        match self.agent_dir(agent, false)? {
            Some(dir) => self.open_log(agent, &dir, OFlags::RDONLY),
            None => Ok(None),
        }
    }

    /// The agent's snapshot directory (`None` if missing, unless `create`).
    fn backup_dir(&self, agent: &AgentId, create: bool) -> Result<Option<Dir>, Error> {
        let rel = backups_rel(agent);
        let dir = if create {
            self.dir.walk_create(&rel).map(Some)
        } else {
            self.dir.walk(&rel)
        };
        dir.fs_context(|| format!("opening {rel}"))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deferred(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Deferred>> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one line; syncs it when `sync`.
    fn append_line(&self, agent: &AgentId, event: &Event, sync: bool) -> Result<(), Error> {
        let mut state = self.load(agent)?.unwrap_or_default();
        // Out of the cache while it changes, so the fold is updated in place rather than
        // copied (unless a caller still holds it).
        self.cache().remove(agent);
        Arc::make_mut(&mut state).apply(event);
        let mut line = serde_json::to_vec(&Line {
            event: event.clone(),
            live: state.live().cloned(),
        })
        .map_err(|e| Error::Internal(format!("encoding an event: {e}")))?;
        line.push(b'\n');

        // The marker exists before the journal entry does (see the crate docs).
        let marked = match event {
            Event::Begin(_) | Event::RollbackBegin(_) => self.mark_pending(agent)?,
            _ => None,
        };
        let rel = log_rel(agent);
        let dir = self.agent_dir(agent, true)?.ok_or_else(|| {
            Error::Internal(format!("agent {agent}: no directory after creating it"))
        })?;
        let is_new = dir
            .stat(EVENTS)
            .fs_context(|| format!("stat {rel}"))?
            .is_none();
        let (mut file, mut len) = self
            .open_log(agent, &dir, OFlags::RDWR | OFlags::APPEND | OFlags::CREATE)?
            .ok_or_else(|| Error::Internal(format!("{rel} missing after creating it")))?;
        if len > 0 {
            len = cut_torn_line(&mut file, len).fs_context(|| format!("repairing {rel}"))?;
        }
        file.write_all(&line)
            .fs_context(|| format!("appending to {rel}"))?;

        if is_new {
            dir.sync()
                .fs_context(|| format!("syncing {}", agent_rel(agent)))?;
        }
        if sync {
            file.sync_data().fs_context(|| format!("syncing {rel}"))?;
            if let Some(index) = &marked {
                index
                    .sync()
                    .fs_context(|| format!("syncing {}", pending_rel()))?;
            }
        } else {
            let mut deferred = self.deferred();
            let entry = deferred.entry(agent.clone()).or_default();
            entry.log = Some(file);
            if marked.is_some() {
                entry.pending_dir = marked;
            }
        }
        self.cache().insert(
            agent.clone(),
            Cached {
                len: len + line.len() as u64,
                state,
            },
        );
        Ok(())
    }

    /// The agent and file name of a snapshot path from the registry, refusing anything
    /// but `backups/agents/<agent>/green_<...>`.
    fn snapshot_parts<'a>(&self, rel: &'a str) -> Result<(AgentId, &'a str), Error> {
        let refuse = |why: String| Error::Store(format!("refusing a snapshot path: {why}"));
        let agent = rel
            .strip_prefix("backups/agents/")
            .and_then(|r| r.split_once('/'))
            .map(|(a, _)| a)
            .ok_or_else(|| refuse("not under backups/agents/<agent>/".into()))?;
        let agent = AgentId::new(agent).map_err(|e| refuse(e.to_string()))?;
        let name = check_snapshot(agent.as_str(), rel).map_err(refuse)?;
        Ok((agent, name))
    }

    /// Reads, checks and folds an agent's whole log from `file`.
    fn read_state(&self, agent: &AgentId, mut file: File) -> Result<(u64, AgentState), Error> {
        let rel = log_rel(agent);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .fs_context(|| format!("reading {rel}"))?;
        let mut state = AgentState::default();
        for (n, line) in complete_lines(&bytes).enumerate() {
            let corrupt = |why: String| {
                Error::Store(format!(
                    "agent {agent}: {rel} line {}: {why} (repair or remove the line)",
                    n + 1
                ))
            };
            let line: Line = serde_json::from_slice(line).map_err(|e| corrupt(e.to_string()))?;
            state.check_event(agent, &line.event).map_err(corrupt)?;
            state.apply(&line.event);
        }
        Ok((bytes.len() as u64, state))
    }

    /// The last complete line of an agent's log, reading only its end. A last line that
    /// does not parse is reported with its line number (by reading the whole log).
    fn last_line(&self, agent: &AgentId) -> Result<Option<Line>, Error> {
        let Some(dir) = self.agent_dir(agent, false)? else {
            return Ok(None);
        };
        let Some((mut file, len)) = self.open_log(agent, &dir, OFlags::RDONLY)? else {
            return Ok(None);
        };
        let rel = log_rel(agent);
        let mut window = TAIL_WINDOW.min(len);
        loop {
            let mut buf = vec![0; window as usize];
            file.seek(SeekFrom::Start(len - window))
                .and_then(|_| file.read_exact(&mut buf))
                .fs_context(|| format!("reading {rel}"))?;
            // The bytes before the first newline may be a partial line unless we read from 0.
            let usable = if window == len {
                &buf[..]
            } else {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => &buf[i + 1..],
                    None => &[],
                }
            };
            if let Some(last) = complete_lines(usable).last() {
                return match serde_json::from_slice(last) {
                    Ok(line) => Ok(Some(line)),
                    Err(e) => {
                        file.seek(SeekFrom::Start(0))
                            .fs_context(|| format!("reading {rel}"))?;
                        self.read_state(agent, file)?;
                        Err(Error::Store(format!(
                            "agent {agent}: {rel}: last line: {e}"
                        )))
                    }
                };
            }
            if window == len {
                return Ok(None);
            }
            window = (window * 4).min(len);
        }
    }

    /// Creates the agent's marker in the pending index (building the index first on a root
    /// that has none). Returns the index, to be synced with the event the marker precedes;
    /// `None` where no index can be kept (recovery then looks at every agent).
    fn mark_pending(&self, agent: &AgentId) -> Result<Option<Dir>, Error> {
        let rel = pending_rel();
        let index = match self
            .dir
            .walk(&rel)
            .fs_context(|| format!("opening {rel}"))?
        {
            Some(index) => index,
            None => match self.build_index()? {
                Some(index) => index,
                None => return Ok(None),
            },
        };
        index
            .open_file(agent.as_str(), OFlags::WRONLY | OFlags::CREATE)
            .fs_context(|| format!("agent {agent}: marking it pending in {rel}"))?;
        Ok(Some(index))
    }

    /// Builds the pending index from a full scan (a root made before the index existed, or
    /// a new one): the markers are written into a fresh directory, synced, and renamed into
    /// place only if no other process got there first (then its index, which it built the
    /// same way, is used). Operations begin only after the index exists, so none is missed.
    fn build_index(&self) -> Result<Option<Dir>, Error> {
        let rel = pending_rel();
        let state = self
            .dir
            .walk_create(STATE_DIR)
            .fs_context(|| format!("opening {STATE_DIR}"))?;
        let found = self.pending_agents()?;
        let tmp = format!("{PENDING}.new-{}", uuid_suffix());
        let staging = state
            .create_dir(&tmp)
            .fs_context(|| format!("creating {STATE_DIR}/{tmp}"))?;
        let built = found
            .iter()
            .try_for_each(|agent| {
                staging
                    .open_file(agent.as_str(), OFlags::WRONLY | OFlags::CREATE)
                    .map(drop)
            })
            .and_then(|()| staging.sync())
            .and_then(|()| state.rename_noreplace(&tmp, &state, PENDING));
        match built {
            Ok(true) => {
                state.sync().fs_context(|| format!("syncing {STATE_DIR}"))?;
                tracing::info!(pending = found.len(), "built the pending index");
            }
            Ok(false) | Err(_) => {
                for agent in &found {
                    let _ = staging.unlink(agent.as_str());
                }
                let _ = state.remove_dir(&tmp);
                built.fs_context(|| format!("building {rel}"))?;
            }
        }
        self.dir.walk(&rel).fs_context(|| format!("opening {rel}"))
    }

    /// Does the last line of a readable log leave work for recovery?
    fn tail_pending(&self, line: &Line) -> bool {
        match &line.event {
            Event::Begin(_) | Event::RollbackBegin(_) => true,
            // A crash between recording a prune and deleting its files.
            Event::Finish { pruned, .. } | Event::Rollback { pruned, .. } => {
                pruned.iter().any(|p| self.backup_exists(p))
            }
            Event::RollbackAbandoned { .. } => false,
        }
    }

    /// Does a snapshot named by the registry still exist?
    fn backup_exists(&self, rel: &str) -> bool {
        let Ok((agent, name)) = self.snapshot_parts(rel) else {
            return false;
        };
        matches!(self.backup_dir(&agent, false), Ok(Some(dir)) if matches!(dir.stat(name), Ok(Some(_))))
    }
}

/// Cuts off a torn last line left by a crash mid-append; returns the new length.
fn cut_torn_line(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) as u64;
    tracing::warn!(dropped = len - keep, "cutting a torn last line");
    file.set_len(keep)?;
    Ok(keep)
}

fn uuid_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// The newline-terminated lines of `bytes`; a trailing unterminated piece (a torn append)
/// is not a line.
fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes[..end]
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

struct FileLease {
    _file: File,
}

impl AgentLease for FileLease {}

impl Store for FsStore {
    fn try_lock(&self, agent: &AgentId) -> Result<Option<Box<dyn AgentLease>>, Error> {
        let dir = self.agent_dir(agent, true)?.ok_or_else(|| {
            Error::Internal(format!("agent {agent}: no directory after creating it"))
        })?;
        let rel = format!("{}/{LOCK}", agent_rel(agent));
        let (file, _) = dir
            .open_file(LOCK, OFlags::RDWR | OFlags::CREATE)
            .fs_context(|| format!("agent {agent}: opening {rel}"))?
            .ok_or_else(|| Error::Internal(format!("{rel} missing after creating it")))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLease { _file: file }))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(format!("locking {rel}"), e)),
        }
    }

    fn agents(&self) -> Result<Vec<AgentId>, Error> {
        let rel = format!("{STATE_DIR}/agents");
        let Some(dir) = self
            .dir
            .walk(&rel)
            .fs_context(|| format!("opening {rel}"))?
        else {
            return Ok(Vec::new());
        };
        let mut agents = Vec::new();
        for name in dir.entries().fs_context(|| format!("listing {rel}"))? {
            let Ok(agent) = AgentId::new(&name) else {
                continue;
            };
            if listed(&dir, &name) {
                agents.push(agent);
            }
        }
        agents.sort();
        Ok(agents)
    }

    fn load(&self, agent: &AgentId) -> Result<Option<Arc<AgentState>>, Error> {
        let Some(dir) = self.agent_dir(agent, false)? else {
            return Ok(None);
        };
        let Some((file, len)) = self.open_log(agent, &dir, OFlags::RDONLY)? else {
            return Ok(None);
        };
        if let Some(cached) = self.cache().get(agent) {
            if cached.len == len {
                return Ok(Some(cached.state.clone()));
            }
        }
        let (len, state) = self.read_state(agent, file)?;
        let state = Arc::new(state);
        self.cache().insert(
            agent.clone(),
            Cached {
                len,
                state: state.clone(),
            },
        );
        Ok(Some(state))
    }

    fn append(&self, agent: &AgentId, event: &Event) -> Result<(), Error> {
        // Anything deferred before must not become durable after this.
        self.sync(agent)?;
        self.append_line(agent, event, true)
    }

    fn append_deferred(&self, agent: &AgentId, event: &Event) -> Result<(), Error> {
        self.append_line(agent, event, false)
    }

    fn check_backup_dir(&self, agent: &AgentId) -> Result<(), Error> {
        self.backup_dir(agent, false).map(drop)
    }

    fn write_backup_deferred(
        &self,
        agent: &AgentId,
        path: &str,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let (owner, name) = self.snapshot_parts(path)?;
        if &owner != agent {
            return Err(Error::Store(format!(
                "refusing snapshot path {path:?}: not agent {agent}'s"
            )));
        }
        let dir = self.backup_dir(agent, true)?.ok_or_else(|| {
            Error::Internal(format!("no {} after creating it", backups_rel(agent)))
        })?;
        let file = dir
            .write_new(name, bytes)
            .fs_context(|| format!("writing snapshot {path}"))?;
        let mut deferred = self.deferred();
        let entry = deferred.entry(agent.clone()).or_default();
        entry.backups.push(file);
        entry.backup_dir = Some(dir);
        Ok(())
    }

    /// Syncs the agent's deferred snapshots, then its log, then the snapshots' directory.
    /// One after another: ext4 commits its journal once for whichever comes first and the
    /// rest find little left to do, so threads (measured) bought nothing but CPU time.
    fn sync(&self, agent: &AgentId) -> Result<(), Error> {
        let Some(deferred) = self.deferred().remove(agent) else {
            return Ok(());
        };
        for file in &deferred.backups {
            file.sync_all()
                .fs_context(|| format!("syncing a snapshot in {}", backups_rel(agent)))?;
        }
        if let Some(log) = &deferred.log {
            log.sync_all()
                .fs_context(|| format!("syncing {}", log_rel(agent)))?;
        }
        if let Some(dir) = &deferred.backup_dir {
            dir.sync()
                .fs_context(|| format!("syncing {}", backups_rel(agent)))?;
        }
        // Last: ext4's journal commit for the log has already made the marker (created
        // before the event) durable, so this finds nothing left to do there.
        if let Some(dir) = &deferred.pending_dir {
            dir.sync()
                .fs_context(|| format!("syncing {}", pending_rel()))?;
        }
        Ok(())
    }

    fn write_backup(&self, agent: &AgentId, path: &str, bytes: &[u8]) -> Result<(), Error> {
        self.write_backup_deferred(agent, path, bytes)?;
        self.sync(agent)
    }

    fn read_backup(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let (agent, name) = self.snapshot_parts(path)?;
        let Some(dir) = self.backup_dir(&agent, false)? else {
            return Ok(None);
        };
        dir.read(name)
            .fs_context(|| format!("reading snapshot {path}"))
    }

    fn remove_backup(&self, path: &str) -> Result<(), Error> {
        let (agent, name) = self.snapshot_parts(path)?;
        let Some(dir) = self.backup_dir(&agent, false)? else {
            return Ok(());
        };
        // Not synced: a deletion lost to a power cut leaves the file, which the next
        // operation deletes again (the record that dropped it is what must be durable).
        self.trash.discard(&dir, name, path)
    }

    fn registry_fingerprint(&self, agent: &AgentId) -> Result<Option<Vec<u8>>, Error> {
        let Some(dir) = self.agent_dir(agent, false)? else {
            return Ok(None);
        };
        // The log's identity, size and both timestamps (not followed if it is a symlink):
        // any write, truncation or replacement changes the inode or the ctime, which no
        // unprivileged process can set back. A stat, not a read of the whole history.
        let st = dir
            .stat(EVENTS)
            .fs_context(|| format!("agent {agent}: inspecting {}", log_rel(agent)))?;
        Ok(st.map(|st| {
            format!(
                "{}:{}:{}:{}.{}:{}.{}",
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime,
                st.st_mtime_nsec,
                st.st_ctime,
                st.st_ctime_nsec
            )
            .into_bytes()
        }))
    }

    fn list_backups(&self, agent: &AgentId) -> Result<Vec<String>, Error> {
        let rel = backups_rel(agent);
        let Some(dir) = self.backup_dir(agent, false)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = dir
            .entries()
            .fs_context(|| format!("listing {rel}"))?
            .into_iter()
            .filter(|name| name.starts_with("green_"))
            .map(|name| format!("{rel}/{name}"))
            .collect();
        out.sort();
        Ok(out)
    }

    fn needs_recovery(&self, agent: &AgentId) -> bool {
        match self.last_line(agent) {
            Ok(None) => false,
            // Broken: recovery reports it (and only it).
            Err(_) => true,
            Ok(Some(line)) => self.tail_pending(&line),
        }
    }

    fn pending_agents_indexed(&self) -> Result<Vec<AgentId>, Error> {
        let rel = pending_rel();
        let index = match self.dir.walk(&rel) {
            Ok(Some(index)) => index,
            // A root from before the index (or with no operation yet): look at every agent.
            Ok(None) => return self.pending_agents(),
            Err(e) => {
                tracing::warn!(error = %e, "{rel} is unusable; looking at every agent");
                return self.pending_agents();
            }
        };
        let agents_rel = format!("{STATE_DIR}/agents");
        let Some(agents) = self
            .dir
            .walk(&agents_rel)
            .fs_context(|| format!("opening {agents_rel}"))?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in index.entries().fs_context(|| format!("listing {rel}"))? {
            // Only the name counts; the marker itself is never opened or followed.
            let Ok(agent) = AgentId::new(&name) else {
                tracing::debug!(name, "ignoring an entry of {rel} that is not an agent id");
                continue;
            };
            if listed(&agents, &name) && self.needs_recovery(&agent) {
                out.push(agent);
            }
        }
        out.sort();
        Ok(out)
    }

    fn settled(&self, agent: &AgentId) -> Result<(), Error> {
        let rel = pending_rel();
        if let Some(index) = self
            .dir
            .walk(&rel)
            .fs_context(|| format!("opening {rel}"))?
        {
            // Not synced: a marker that survives only costs a look at the agent's tail.
            index
                .unlink(agent.as_str())
                .fs_context(|| format!("agent {agent}: removing its marker in {rel}"))?;
        }
        Ok(())
    }

    fn active_version(&self, agent: &AgentId) -> Result<Option<DeploymentRecord>, Error> {
        Ok(self.last_line(agent)?.and_then(|l| l.live))
    }

    fn active_versions(&self) -> Result<ActiveVersions, Error> {
        let mut out = ActiveVersions::default();
        for agent in self.agents()? {
            match self.last_line(&agent) {
                Ok(line) => {
                    if line.as_ref().is_some_and(|l| self.tail_pending(l)) {
                        out.pending.push(agent.clone());
                    }
                    if let Some(live) = line.and_then(|l| l.live) {
                        out.live.insert(agent, live);
                    }
                }
                Err(e) => {
                    out.pending.push(agent.clone());
                    out.broken.insert(agent, e.to_string());
                }
            }
        }
        Ok(out)
    }

    fn live_versions(&self) -> Result<BTreeMap<AgentId, DeploymentRecord>, Error> {
        Ok(self.active_versions()?.live)
    }

    fn events_end(&self, agent: &AgentId) -> Result<u64, Error> {
        match self.feed_log(agent)? {
            Some((file, len)) => feed::events_end(file, len, &log_rel(agent)),
            None => Ok(0),
        }
    }

    fn events_after(&self, agent: &AgentId, cursor: u64) -> Result<(Vec<Event>, u64), Error> {
        match self.feed_log(agent)? {
            Some((file, len)) => feed::events_after(file, len, cursor, &log_rel(agent)),
            None => Ok((Vec::new(), 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bluegreen_core::store::Begin;
    use bluegreen_core::{DeploymentId, Status};

    use super::*;

    fn begin(agent: &str, reason_len: usize) -> (DeploymentId, Event, Event) {
        let id = DeploymentId::generate();
        let begin = Event::Begin(Begin {
            deployment_id: id.clone(),
            timestamp: chrono::Utc::now(),
            file_path: format!("{agent}.py"),
            staged_path: format!(".{agent}.py.bluegreen-{id}.staged"),
            sha256: "a".repeat(64),
            green_sha256: None,
            backup_path: None,
            previous: None,
        });
        let finish = Event::Finish {
            deployment_id: id.clone(),
            status: Status::Live,
            backup_path: None,
            reason: Some("r".repeat(reason_len)),
            pruned: Vec::new(),
            at: None,
        };
        (id, begin, finish)
    }

    #[test]
    fn tail_reads_agree_with_full_folds() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let agent = AgentId::new("a").unwrap();
        // Lines longer than the tail window force the window to grow.
        for reason_len in [10, 10_000, 50_000] {
            let (id, b, f) = begin("a", reason_len);
            store.append(&agent, &b).unwrap();
            assert_eq!(store.pending_agents().unwrap(), vec![agent.clone()]);
            store.append(&agent, &f).unwrap();
            assert!(store.pending_agents().unwrap().is_empty());
            let live = store.live_versions().unwrap();
            assert_eq!(live["a"].deployment_id, id);
            assert_eq!(
                store
                    .load(&agent)
                    .unwrap()
                    .unwrap()
                    .live()
                    .unwrap()
                    .deployment_id,
                id
            );
        }
        // A second store instance (another process) sees the same.
        let other = FsStore::open(dir.path()).unwrap();
        assert_eq!(other.load(&agent).unwrap().unwrap().deployments.len(), 3);
    }

    #[test]
    fn import_log_writes_a_whole_registry_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let agent = AgentId::new("imported").unwrap();
        let (id, b, f) = begin("imported", 0);
        store.import_log(&agent, &[b.clone(), f]).unwrap();
        assert_eq!(store.live_versions().unwrap()["imported"].deployment_id, id);
        let err = store.import_log(&agent, &[b]).unwrap_err();
        assert_eq!(err.kind(), bluegreen_core::ErrorKind::Conflict);
    }

    #[test]
    fn nothing_is_written_until_the_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        assert!(store.agents().unwrap().is_empty());
        assert!(store.live_versions().unwrap().is_empty());
        assert!(store.pending_agents().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn snapshot_paths_outside_backups_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for path in [
            "x.py",
            "backups/agents/../../x",
            "/etc/passwd",
            "backups/agents/a//b",
        ] {
            assert!(store.read_backup(path).is_err(), "{path}");
            assert!(store.remove_backup(path).is_err(), "{path}");
        }
    }
}
