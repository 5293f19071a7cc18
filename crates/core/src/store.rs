//! The [`Store`] trait: where backups, the registry and the journal live.
//!
//! The registry is event-sourced: each agent has an append-only list of [`Event`]s and its
//! state ([`AgentState`]) is their fold. A `Begin` event is the write-ahead journal entry of
//! a deployment: written (durably) before the target can change, and closed by a `Finish`
//! event. A `Begin` without its `Finish` after a crash is exactly what recovery repairs.
//!
//! Invariant: a `Store` acknowledges (returns `Ok`) only once the change is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{AgentId, DeploymentId};

/// Statuses of a deployment (CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Live,
    Superseded,
    Failed,
    RolledBack,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Live => "LIVE",
            Status::Superseded => "SUPERSEDED",
            Status::Failed => "FAILED",
            Status::RolledBack => "ROLLED_BACK",
            Status::Aborted => "ABORTED",
        }
    }

    /// Was this deployment's code ever live (so it may be restored)?
    pub fn was_live(self) -> bool {
        matches!(self, Status::Live | Status::Superseded | Status::RolledBack)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One deployment as the registry knows it. The first five fields are the contract's `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub deployment_id: DeploymentId,
    /// When the deployment started (RFC 3339 UTC).
    pub timestamp: DateTime<Utc>,
    /// Snapshot of what was live before this deployment, relative to the root; `None` when
    /// nothing was live (first deployment) or the snapshot was pruned.
    pub backup_path: Option<String>,
    pub status: Status,
    /// SHA-256 of this deployment's code.
    pub sha256: String,
    /// The target, relative to the root.
    pub file_path: String,
    /// SHA-256 of the snapshot at `backup_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_sha256: Option<String>,
    /// The deployment that was LIVE when this one went live: where a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<DeploymentId>,
    /// Why it failed, was rolled back or aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The write-ahead part of a deployment: everything recovery needs to finish or undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begin {
    pub deployment_id: DeploymentId,
    pub timestamp: DateTime<Utc>,
    pub file_path: String,
    /// Hidden sibling of the target holding BLUE, relative to the root.
    pub staged_path: String,
    /// SHA-256 of the new code (BLUE).
    pub sha256: String,
    /// SHA-256 of what was live (GREEN) when the deployment started, if the target existed.
    pub green_sha256: Option<String>,
    /// Where GREEN's snapshot is being written, relative to the root.
    pub backup_path: Option<String>,
    /// The deployment LIVE when this one started.
    pub previous: Option<DeploymentId>,
}

/// An entry of an agent's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A deployment started (journal entry, durable before the target can change).
    Begin(Begin),
    /// A deployment ended: `LIVE` (the previous LIVE becomes `SUPERSEDED`), `FAILED` or
    /// `ABORTED`. `backup_path` is the snapshot as finally kept (`None` if not written).
    Finish {
        deployment_id: DeploymentId,
        status: Status,
        backup_path: Option<String>,
        reason: Option<String>,
        /// Snapshots retention drops with this event (deleted only after it is durable).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pruned: Vec<String>,
        /// When it ended (absent in logs written before it was recorded): every follower of
        /// the registry reports this one time for the event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// `from` (LIVE) was rolled back and `to` (if any) is LIVE again with bytes `sha256`.
    Rollback {
        from: DeploymentId,
        to: Option<DeploymentId>,
        timestamp: DateTime<Utc>,
        sha256: Option<String>,
        reason: Option<String>,
        /// Snapshot of the bytes the rollback replaced (what `from` had live).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<SnapshotRef>,
        /// Snapshots retention drops with this event.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pruned: Vec<String>,
    },
    /// A rollback started (journal entry): `staged_path` holds the bytes (`sha256`) about to
    /// replace LIVE `from`; `sha256: None` means the target is about to be removed (health
    /// failure of a first deployment). Closed by `Rollback` or `RollbackAbandoned`.
    RollbackBegin(RollbackBegin),
    /// A rollback that did not take effect (crash before its rename); nothing changed.
    RollbackAbandoned { from: DeploymentId },
}

/// A snapshot file and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub path: String,
    pub sha256: String,
}

/// A snapshot taken by a rollback of the bytes it replaced, so that nothing that was ever
/// live is lost (a rolled-back version can be restored again with `--to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackSnapshot {
    pub path: String,
    pub sha256: String,
    /// The deployment that was live in those bytes (the one rolled back).
    pub deployment_id: DeploymentId,
    pub timestamp: DateTime<Utc>,
}

/// The write-ahead part of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackBegin {
    pub from: DeploymentId,
    pub to: Option<DeploymentId>,
    pub timestamp: DateTime<Utc>,
    pub staged_path: String,
    pub sha256: Option<String>,
    pub reason: Option<String>,
    /// Where the bytes being replaced are snapshotted first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
}

/// An agent's registry entry: its binding, deployments (oldest first) and any unfinished one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentState {
    /// The target the agent is bound to (set by its first deployment).
    pub file_path: Option<String>,
    pub deployments: Vec<DeploymentRecord>,
    /// A deployment that began and has not finished: in flight, or interrupted by a crash.
    pub pending: Option<Begin>,
    /// A rollback that began and has not finished.
    pub pending_rollback: Option<RollbackBegin>,
    /// Snapshots taken by rollbacks, oldest first.
    pub rollback_snapshots: Vec<RollbackSnapshot>,
    /// The snapshots the last event pruned, if it was a `Finish` or `Rollback`. Their files
    /// are deleted after the event is written; a crash in between leaves them, and the next
    /// operation on the agent deletes them again (see `BlueGreenService`).
    pub last_pruned: Vec<String>,
}

impl AgentState {
    /// Folds an event log into state. Unknown references are ignored so a damaged log
    /// degrades to "less history", never to a panic.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut state = AgentState::default();
        for event in events {
            state.apply(event);
        }
        state
    }

    /// Checks that every path `event` names is one bluegreen could have written for
    /// `agent`, given the state before it (a target, its staged sibling, the agent's own
    /// snapshots), so a hand-edited line cannot steer a read, write or delete. Stores that
    /// read logs from disk call this on every line before [`AgentState::apply`].
    pub fn check_event(&self, agent: &AgentId, event: &Event) -> Result<(), String> {
        use crate::paths::{check_registry_target, check_snapshot, check_staged};
        let snapshots = |paths: &mut dyn Iterator<Item = &String>| -> Result<(), String> {
            for p in paths {
                check_snapshot(agent.as_str(), p)?;
            }
            Ok(())
        };
        match event {
            Event::Begin(b) => {
                check_registry_target(&b.file_path)?;
                if let Some(bound) = self.file_path.as_deref().filter(|f| *f != b.file_path) {
                    return Err(format!(
                        "deployment of {:?}, but the agent is bound to {bound:?}",
                        b.file_path
                    ));
                }
                check_staged(&b.file_path, &b.staged_path)?;
                snapshots(&mut b.backup_path.iter())
            }
            Event::Finish {
                backup_path,
                pruned,
                ..
            } => snapshots(&mut backup_path.iter().chain(pruned)),
            Event::Rollback {
                snapshot, pruned, ..
            } => snapshots(&mut snapshot.iter().map(|s| &s.path).chain(pruned)),
            Event::RollbackBegin(rb) => {
                let bound = self
                    .file_path
                    .as_deref()
                    .ok_or("a rollback of an agent with no bound file")?;
                check_staged(bound, &rb.staged_path)?;
                snapshots(&mut rb.snapshot.iter().map(|s| &s.path))
            }
            Event::RollbackAbandoned { .. } => Ok(()),
        }
    }

    pub fn apply(&mut self, event: &Event) {
        self.last_pruned.clear();
        match event {
            Event::Begin(begin) => {
                if self.file_path.is_none() {
                    self.file_path = Some(begin.file_path.clone());
                }
                self.pending = Some(begin.clone());
            }
            Event::Finish {
                deployment_id,
                status,
                backup_path,
                reason,
                pruned,
                ..
            } => {
                let Some(begin) = self.pending.take_if(|b| &b.deployment_id == deployment_id)
                else {
                    return;
                };
                if *status == Status::Live {
                    for d in &mut self.deployments {
                        if d.status == Status::Live {
                            d.status = Status::Superseded;
                        }
                    }
                }
                let backup_sha256 = backup_path.as_ref().and(begin.green_sha256.clone());
                self.deployments.push(DeploymentRecord {
                    deployment_id: begin.deployment_id,
                    timestamp: begin.timestamp,
                    backup_path: backup_path.clone(),
                    status: *status,
                    sha256: begin.sha256,
                    file_path: begin.file_path,
                    backup_sha256,
                    previous: begin.previous,
                    reason: reason.clone(),
                });
                self.forget_snapshots(pruned);
                self.last_pruned.clone_from(pruned);
            }
            Event::Rollback {
                from,
                to,
                sha256,
                reason,
                timestamp,
                snapshot,
                pruned,
            } => {
                self.pending_rollback = None;
                if let Some(snap) = snapshot {
                    self.rollback_snapshots.push(RollbackSnapshot {
                        path: snap.path.clone(),
                        sha256: snap.sha256.clone(),
                        deployment_id: from.clone(),
                        timestamp: *timestamp,
                    });
                }
                for d in &mut self.deployments {
                    if &d.deployment_id == from {
                        d.status = Status::RolledBack;
                        d.reason = reason.clone();
                    } else if Some(&d.deployment_id) == to.as_ref() {
                        d.status = Status::Live;
                        if let Some(sha) = sha256 {
                            d.sha256 = sha.clone();
                        }
                    }
                }
                self.forget_snapshots(pruned);
                self.last_pruned.clone_from(pruned);
            }
            Event::RollbackBegin(rb) => self.pending_rollback = Some(rb.clone()),
            Event::RollbackAbandoned { from } => {
                self.pending_rollback.take_if(|rb| &rb.from == from);
            }
        }
    }

    /// Drops references to pruned snapshot files.
    fn forget_snapshots(&mut self, paths: &[String]) {
        if paths.is_empty() {
            return;
        }
        for d in &mut self.deployments {
            if d.backup_path.as_ref().is_some_and(|p| paths.contains(p)) {
                d.backup_path = None;
                d.backup_sha256 = None;
            }
        }
        self.rollback_snapshots.retain(|s| !paths.contains(&s.path));
    }

    /// The LIVE deployment, if any.
    pub fn live(&self) -> Option<&DeploymentRecord> {
        self.deployments
            .iter()
            .rev()
            .find(|d| d.status == Status::Live)
    }

    pub fn get(&self, id: &DeploymentId) -> Option<&DeploymentRecord> {
        self.deployments.iter().find(|d| &d.deployment_id == id)
    }

    /// Is a deployment or rollback unfinished (in flight, or interrupted by a crash)?
    pub fn is_pending(&self) -> bool {
        self.pending.is_some() || self.pending_rollback.is_some()
    }

    /// Every snapshot path the registry still refers to.
    pub fn referenced_backups(&self) -> impl Iterator<Item = &str> {
        self.deployments
            .iter()
            .filter_map(|d| d.backup_path.as_deref())
            .chain(self.pending.iter().filter_map(|b| b.backup_path.as_deref()))
            .chain(self.rollback_snapshots.iter().map(|s| s.path.as_str()))
            .chain(
                self.pending_rollback
                    .iter()
                    .filter_map(|r| r.snapshot.as_ref().map(|s| s.path.as_str())),
            )
    }

    /// A kept snapshot holding bytes with `sha256`, preferring the one taken by the
    /// deployment that replaced `replaced` (the natural "version before" link).
    pub fn snapshot_of(&self, sha256: &str, replaced: Option<&DeploymentId>) -> Option<String> {
        let holds = |d: &&DeploymentRecord| d.backup_sha256.as_deref() == Some(sha256);
        self.deployments
            .iter()
            .rev()
            .filter(holds)
            .find(|d| d.previous.as_ref() == replaced)
            .or_else(|| self.deployments.iter().rev().find(holds))
            .and_then(|d| d.backup_path.clone())
            .or_else(|| {
                self.rollback_snapshots
                    .iter()
                    .rev()
                    .find(|s| s.sha256 == sha256)
                    .map(|s| s.path.clone())
            })
    }
}

/// What `status` shows: see [`Store::active_versions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveVersions {
    pub live: BTreeMap<AgentId, DeploymentRecord>,
    /// Agents whose registry cannot be read, with the error (naming the agent and line).
    pub broken: BTreeMap<AgentId, String>,
    /// Agents that may need recovery, found by the same read ([`Store::needs_recovery`]),
    /// so `status` recovers them without reading every log a second time.
    pub pending: Vec<AgentId>,
}

/// An exclusive hold on one agent, across processes for durable stores. Released on drop
/// (and by the OS if the process dies).
pub trait AgentLease: Send {}

/// Backups, the registry and the journal. Implementations: [`crate::MemoryStore`] here,
/// `bluegreen_store::FsStore` (the default, durable) in its own crate.
///
/// Methods are synchronous: they are short, and a store's work is the fsync the caller
/// must wait for anyway.
pub trait Store: Send + Sync + 'static {
    /// Tries to take the agent's exclusive lease without waiting.
    fn try_lock(&self, agent: &AgentId) -> Result<Option<Box<dyn AgentLease>>, Error>;

    /// Every agent with a registry entry.
    fn agents(&self) -> Result<Vec<AgentId>, Error>;

    /// The agent's folded state (`None` if it never began a deployment). Shared, so a store
    /// can hand out its cached fold without copying a long history.
    fn load(&self, agent: &AgentId) -> Result<Option<Arc<AgentState>>, Error>;

    /// Appends one event, durably.
    fn append(&self, agent: &AgentId, event: &Event) -> Result<(), Error>;

    /// Like [`Store::append`], but durability may be deferred until [`Store::sync`]. The
    /// event must still be visible to readers (and survive the process dying) at once.
    fn append_deferred(&self, agent: &AgentId, event: &Event) -> Result<(), Error> {
        self.append(agent, event)
    }

    /// Like [`Store::write_backup`], but durability may be deferred until [`Store::sync`].
    fn write_backup_deferred(
        &self,
        agent: &AgentId,
        path: &str,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.write_backup(agent, path, bytes)
    }

    /// Makes every deferred write for `agent` durable, in whatever order the store finds
    /// fastest; all of it before returning.
    fn sync(&self, _agent: &AgentId) -> Result<(), Error> {
        Ok(())
    }

    /// Where a snapshot for `deployment_id` taken at `timestamp` goes (relative to the root).
    fn backup_path(
        &self,
        agent: &AgentId,
        deployment_id: &DeploymentId,
        timestamp: DateTime<Utc>,
        extension: &str,
    ) -> String {
        format!(
            "backups/agents/{agent}/green_{}_{deployment_id}{extension}",
            timestamp.format("%Y%m%dT%H%M%S%.3fZ")
        )
    }

    /// Where a rollback's snapshot of the bytes it replaces goes: like [`Store::backup_path`]
    /// for the rolled-back deployment, with a unique suffix (a deployment's own snapshot and
    /// any number of rollback snapshots of it never share a name, even within a millisecond).
    fn rollback_snapshot_path(
        &self,
        agent: &AgentId,
        rolled_back: &DeploymentId,
        timestamp: DateTime<Utc>,
        extension: &str,
    ) -> String {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        format!(
            "backups/agents/{agent}/green_{}_{rolled_back}_rb{}{extension}",
            timestamp.format("%Y%m%dT%H%M%S%.3fZ"),
            &unique[20..]
        )
    }

    /// Checks, before anything is written, that snapshots of `agent` can be written safely
    /// (for a file store: no symlink leading out of the root on the way).
    fn check_backup_dir(&self, _agent: &AgentId) -> Result<(), Error> {
        Ok(())
    }

    /// Writes a snapshot at `path` (from [`Store::backup_path`]), durably. Never overwrites.
    fn write_backup(&self, agent: &AgentId, path: &str, bytes: &[u8]) -> Result<(), Error>;

    /// Reads a snapshot (`None` if it does not exist).
    fn read_backup(&self, path: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Deletes a snapshot (missing is fine). Need not be durable: a deletion lost to a power
    /// cut leaves an unreferenced file, which retention sweeps.
    fn remove_backup(&self, path: &str) -> Result<(), Error>;

    /// Every snapshot present for the agent (relative paths), for orphan cleanup.
    fn list_backups(&self, agent: &AgentId) -> Result<Vec<String>, Error>;

    /// A fingerprint of the agent's registry as stored (for `FsStore`: its log's inode, size,
    /// mtime and ctime), so the service can tell whether verification changed it; cheap
    /// whatever the history's length. `None` if the store cannot tell (in-memory stores).
    fn registry_fingerprint(&self, _agent: &AgentId) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }

    /// Does the agent (maybe) need recovery: a pending deployment or rollback, an unfinished
    /// prune, or a registry that cannot be read (recovery then reports it)? May
    /// over-approximate; must never miss one.
    fn needs_recovery(&self, agent: &AgentId) -> bool {
        let state = match self.load(agent) {
            Ok(Some(state)) => state,
            Ok(None) => return false,
            Err(_) => return true,
        };
        state.is_pending()
            || state
                .last_pruned
                .iter()
                .any(|p| self.read_backup(p).ok().flatten().is_some())
    }

    /// Every agent that may need recovery (see [`Store::needs_recovery`]), found by
    /// looking at every agent: O(agents). Must never miss one.
    fn pending_agents(&self) -> Result<Vec<AgentId>, Error> {
        let mut out = self.agents()?;
        out.retain(|agent| self.needs_recovery(agent));
        Ok(out)
    }

    /// Like [`Store::pending_agents`], from an index of operations in flight where the store
    /// keeps one (`FsStore`: `.bluegreen/pending/`), so its cost grows with the number of
    /// pending agents, not of agents. Never misses an operation begun through a store of this
    /// version; a registry edited by hand (or broken) outside one is found by
    /// `pending_agents` and by the agent's own next operation. Default: `pending_agents`.
    fn pending_agents_indexed(&self) -> Result<Vec<AgentId>, Error> {
        self.pending_agents()
    }

    /// Called with the agent's lease held once nothing is pending for it any more (its
    /// operation ended and the files its last event pruned are gone): a store keeping an
    /// index of pending agents drops the agent from it. Need not be durable.
    fn settled(&self, _agent: &AgentId) -> Result<(), Error> {
        Ok(())
    }

    /// The agent's LIVE record (`None` if nothing is live or the agent is unknown). Stores
    /// may answer this without folding the whole log.
    fn active_version(&self, agent: &AgentId) -> Result<Option<DeploymentRecord>, Error> {
        Ok(self
            .load(agent)?
            .as_deref()
            .and_then(AgentState::live)
            .cloned())
    }

    /// The LIVE record of every readable agent, and every agent whose registry cannot be
    /// read with its error: one broken agent never hides the others.
    fn active_versions(&self) -> Result<ActiveVersions, Error> {
        let mut out = ActiveVersions::default();
        for agent in self.agents()? {
            if self.needs_recovery(&agent) {
                out.pending.push(agent.clone());
            }
            match self.active_version(&agent) {
                Ok(Some(live)) => {
                    out.live.insert(agent, live);
                }
                Ok(None) => {}
                Err(e) => {
                    out.broken.insert(agent, e.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The LIVE record of every agent. Stores may answer this faster than loading each.
    fn live_versions(&self) -> Result<BTreeMap<AgentId, DeploymentRecord>, Error> {
        let mut out = BTreeMap::new();
        for agent in self.agents()? {
            if let Some(live) = self.load(&agent)?.as_deref().and_then(AgentState::live) {
                out.insert(agent, live.clone());
            }
        }
        Ok(out)
    }

    /// Where the agent's log ends now: an opaque cursor for [`Store::events_after`]. The
    /// change feed (`crate::feed`) starts here to follow only what happens from now on.
    /// Stores without a change feed keep this default, an error.
    fn events_end(&self, _agent: &AgentId) -> Result<u64, Error> {
        Err(Error::Store("this store has no change feed".into()))
    }

    /// The complete events appended to the agent's log after `cursor` (from
    /// [`Store::events_end`] or an earlier call; `0` is the beginning), oldest first, and
    /// the cursor after them. Must be cheap when nothing was appended (the feed polls it).
    fn events_after(&self, _agent: &AgentId, _cursor: u64) -> Result<(Vec<Event>, u64), Error> {
        Err(Error::Store("this store has no change feed".into()))
    }
}
