//! [`BlueGreenService`]: the lifecycle (backup → stage → verify → cutover → probation),
//! rollback and recovery.
//!
//! Invariants kept here (ARCHITECTURE.md lists them all):
//! - GREEN is never touched until BLUE has passed; the cutover is one `rename(2)` plus a
//!   directory fsync, so the target always holds all of GREEN or all of BLUE.
//! - A `Begin`/`RollbackBegin` journal event is durable before the target can change, so
//!   after a crash recovery knows what was in flight; it decides by the bytes on disk.
//! - One agent's operations are serialized (in-process mutex, then the store's lease,
//!   which for durable stores is an OS file lock); different agents never wait on each other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{SubsecRound, Utc};

use crate::dirfd::{self, Dir, FileId, FsContext};
use crate::error::Error;
use crate::fault::{self, FaultPoint};
use crate::ids::{AgentId, DeploymentId};
use crate::integrity;
use crate::memory::MemoryStore;
use crate::paths::{self, Target};
use crate::pyc;
use crate::report::{
    DeployOutcome, DeployReport, RecoveryAction, RecoveryReport, RollbackReport, StageTiming,
};
use crate::store::{
    AgentLease, AgentState, Begin, DeploymentRecord, Event, RollbackBegin, Status, Store,
};
use crate::util::sha256_hex;
use crate::verify::{Chain, ChainReport, VerifyRequest};

/// How long `recover()` waits for an agent's lock before deciding a live process holds it.
/// (A lock can look held for a moment after its owner released it: a child forked by another
/// thread keeps the descriptor until its exec closes it.)
const RECOVERY_LOCK_WAIT: Duration = Duration::from_millis(500);

/// Limits from the configuration (CONTRACT.md `bluegreen.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted code, in bytes (default 8 MiB).
    pub max_code_bytes: usize,
    /// How long to wait for another deployment of the same agent (default 30 s).
    pub lock_timeout: Duration,
    /// Snapshots kept per agent (default 20, at least 1); the ones a rollback needs are kept first.
    pub keep_backups: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_code_bytes: 8 * 1024 * 1024,
            lock_timeout: Duration::from_secs(30),
            keep_backups: 20,
        }
    }
}

/// Builds a [`BlueGreenService`].
pub struct ServiceBuilder {
    root: PathBuf,
    store: Option<Arc<dyn Store>>,
    chain: Chain,
    agent_chains: HashMap<AgentId, Chain>,
    health: Chain,
    limits: Limits,
    crash_at: Option<FaultPoint>,
    reserved: Vec<PathBuf>,
}

impl ServiceBuilder {
    /// The store (default: a fresh [`MemoryStore`]; the CLI uses `bluegreen_store::FsStore`).
    pub fn store(self, store: impl Store) -> Self {
        self.store_arc(Arc::new(store))
    }

    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The verification chain for agents without their own (default: empty).
    pub fn chain(mut self, chain: Chain) -> Self {
        self.chain = chain;
        self
    }

    /// The verification chain for one agent.
    pub fn agent_chain(mut self, agent: AgentId, chain: Chain) -> Self {
        self.agent_chains.insert(agent, chain);
        self
    }

    /// The post-cutover chain; a failure restores GREEN automatically.
    pub fn health_chain(mut self, chain: Chain) -> Self {
        self.health = chain;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A file that may never be a deployment target (the CLI reserves its active config
    /// file and the token file). Compared by path and, if it exists, by device and inode,
    /// so another spelling or a hard link is caught too. May be missing or outside the root.
    pub fn reserve(mut self, path: impl Into<PathBuf>) -> Self {
        self.reserved.push(path.into());
        self
    }

    /// Arms an in-process crash at `point` (tests; see [`crate::fault`]).
    pub fn crash_at(mut self, point: FaultPoint) -> Self {
        self.crash_at = Some(point);
        self
    }

    pub fn build(self) -> Result<BlueGreenService, Error> {
        let root = paths::canonical_root(&self.root)?;
        if self.limits.keep_backups == 0 {
            return Err(Error::BadInput(
                "keep_backups must be at least 1 (a rollback needs a snapshot)".into(),
            ));
        }
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>);
        let dir = Dir::open_root(&root).fs_context(|| "opening the root".to_owned())?;
        let reserved = self
            .reserved
            .iter()
            .map(|p| Reserved::new(&root, p))
            .collect();
        Ok(BlueGreenService {
            inner: Arc::new(Inner {
                dir,
                reserved,
                root,
                store,
                chain: self.chain,
                agent_chains: self.agent_chains,
                health: self.health,
                limits: self.limits,
                crash_at: self.crash_at,
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// A reserved file: its root-relative path (if inside the root) and identity (if it exists).
#[derive(Debug)]
struct Reserved {
    rel: Option<String>,
    id: Option<FileId>,
}

impl Reserved {
    fn new(root: &Path, path: &Path) -> Self {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            root.join(path)
        };
        let canon = abs.canonicalize().unwrap_or(abs);
        let rel = canon
            .strip_prefix(root)
            .ok()
            .and_then(|r| r.to_str())
            .map(str::to_owned);
        let id = rustix::fs::stat(&canon).ok().map(|st| FileId::from(&st));
        Self { rel, id }
    }
}

struct Inner {
    root: PathBuf,
    /// The root, opened once: targets are reached from it by descriptor.
    dir: Dir,
    reserved: Vec<Reserved>,
    store: Arc<dyn Store>,
    chain: Chain,
    agent_chains: HashMap<AgentId, Chain>,
    health: Chain,
    limits: Limits,
    crash_at: Option<FaultPoint>,
    locks: Mutex<HashMap<AgentId, Arc<tokio::sync::Mutex<()>>>>,
}

/// One deployment request; [`BlueGreenService::deploy_hot_swap`] is the common case.
#[derive(Debug, Clone)]
pub struct DeployRequest<'a> {
    pub agent_id: &'a str,
    pub code: &'a [u8],
    /// The target; `None` uses the agent's bound path.
    pub file_path: Option<&'a str>,
    /// Overrides the configured chain for this call (`Some(Chain::new())` skips verification).
    pub chain: Option<Chain>,
}

/// Held while operating on one agent.
struct AgentGuard {
    _lease: Box<dyn AgentLease>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// The hot-swap service. Cheap to clone; clones share locks and store.
#[derive(Clone)]
pub struct BlueGreenService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlueGreenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlueGreenService")
            .field("root", &self.inner.root)
            .field("chain", &self.inner.chain)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

impl BlueGreenService {
    /// Starts building a service confined to `root` (which must exist).
    pub fn builder(root: impl Into<PathBuf>) -> ServiceBuilder {
        ServiceBuilder {
            root: root.into(),
            store: None,
            chain: Chain::new(),
            agent_chains: HashMap::new(),
            health: Chain::new(),
            limits: Limits::default(),
            crash_at: None,
            reserved: Vec::new(),
        }
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Resolves a target path under the root with the contract's input rules.
    pub fn resolve(&self, file_path: &str) -> Result<Target, Error> {
        let target = paths::resolve_target(&self.inner.root, file_path)?;
        let id = rustix::fs::lstat(&target.abs)
            .ok()
            .map(|st| FileId::from(&st));
        let reserved =
            self.inner.reserved.iter().any(|r| {
                r.rel.as_deref() == Some(target.rel.as_str()) || (id.is_some() && r.id == id)
            });
        if reserved {
            return Err(Error::BadInput(format!(
                "invalid file path {file_path:?}: {} is reserved (bluegreen's configuration or token file)",
                target.rel
            )));
        }
        Ok(target)
    }

    /// Backs up GREEN, stages `new_code`, verifies it, cuts over and (with a health chain)
    /// probes it. A rejection is `Ok` with [`DeployOutcome::Rejected`]; `Err` means the
    /// request was refused or an I/O failure stopped it.
    pub async fn deploy_hot_swap(
        &self,
        agent_id: &str,
        new_code: &[u8],
        file_path: &str,
    ) -> Result<DeployReport, Error> {
        self.deploy(DeployRequest {
            agent_id,
            code: new_code,
            file_path: Some(file_path),
            chain: None,
        })
        .await
    }

    /// [`Self::deploy_hot_swap`] with every option.
    pub async fn deploy(&self, req: DeployRequest<'_>) -> Result<DeployReport, Error> {
        let agent = AgentId::new(req.agent_id)?;
        let limit = self.inner.limits.max_code_bytes;
        if req.code.len() > limit {
            return Err(Error::BadInput(format!(
                "code is {} bytes, over the limit of {limit} bytes (max_code_bytes)",
                req.code.len()
            )));
        }
        let requested = req.file_path.map(|p| self.resolve(p)).transpose()?;

        let _guard = self.lock(&agent).await?;
        let state = self.load_recovered(&agent)?;
        let target = match (requested, state.file_path.as_deref()) {
            (Some(t), Some(bound)) if t.rel != bound => {
                return Err(Error::Conflict(format!(
                    "agent {agent} is bound to {bound}, not {}",
                    t.rel
                )))
            }
            (Some(t), _) => t,
            (None, Some(bound)) => self.resolve(bound)?,
            (None, None) => {
                return Err(Error::BadInput(format!(
                    "agent {agent} has no bound file yet: give the file path"
                )))
            }
        };
        let (green, green_mode, green_mtime) = self.read_green(&target)?;

        let deployment_id = DeploymentId::generate();
        // Millisecond precision: the snapshot name carries the same instant.
        let timestamp = Utc::now().trunc_subsecs(3);
        let backup_path = green.as_ref().map(|_| {
            self.inner
                .store
                .backup_path(&agent, &deployment_id, timestamp, &target.extension())
        });
        let begin = Begin {
            deployment_id: deployment_id.clone(),
            timestamp,
            file_path: target.rel.clone(),
            staged_path: staged_rel(&target, &format!("bluegreen-{deployment_id}")),
            sha256: sha256_hex(req.code),
            green_sha256: green.as_deref().map(sha256_hex),
            backup_path,
            previous: state.live().map(|d| d.deployment_id.clone()),
        };
        // Done with it: the store can update its cached fold in place.
        drop(state);
        if begin.backup_path.is_some() {
            // Refuse a hostile snapshot directory before the journal records anything.
            self.inner.store.check_backup_dir(&agent)?;
        }
        let chain = req.chain.unwrap_or_else(|| self.chain_for(&agent).clone());
        // Durable together with GREEN's snapshot in the backup stage (`Store::sync`).
        self.inner
            .store
            .append_deferred(&agent, &Event::Begin(begin.clone()))?;
        self.fault(FaultPoint::AfterBegin)?;

        let run = Deployment {
            agent: &agent,
            target: &target,
            begin: &begin,
            code: req.code,
            green: green.as_deref(),
            green_mode,
            green_mtime,
            chain: &chain,
        };
        match self.run_deployment(run).await {
            Ok(report) => {
                self.settle(&agent);
                Ok(report)
            }
            Err(e @ Error::InjectedCrash(_)) => Err(e),
            Err(e) => {
                // A real failure mid-flight: put things back now rather than at next start.
                tracing::error!(%agent, error = %e, "deployment failed; recovering");
                match self.recover_agent_locked(&agent) {
                    Ok(_) => self.settle(&agent),
                    Err(again) => {
                        tracing::error!(%agent, error = %again, "recovery after failure failed too")
                    }
                }
                Err(e)
            }
        }
    }

    async fn run_deployment(&self, d: Deployment<'_>) -> Result<DeployReport, Error> {
        let store = &self.inner.store;
        let root = &self.inner.root;
        let mut stages = Vec::with_capacity(5);

        // 1. Backup GREEN, durably, before anything else changes. The journal entry (written
        //    deferred) is made durable in the same sync. BLUE's bytes meanwhile go into an
        //    unnamed file in the target's directory (O_TMPFILE): nothing anyone can see, freed
        //    by the kernel if we die, so its fsync rides along with the backup's instead of
        //    costing a round of its own after it. (The directory is created only when it is
        //    missing, and then there is no GREEN to back up.)
        let started = Instant::now();
        let dir = self.target_dir(d.target, true)?.ok_or_else(|| {
            Error::Internal(format!(
                "no directory for {} after creating it",
                d.target.rel
            ))
        })?;
        let unnamed = dir
            .write_unnamed(d.code)
            .fs_context(|| format!("writing BLUE in the directory of {}", d.target.rel))?;
        // BLUE's mtime second follows GREEN's, durable with BLUE's fsync (`pyc.rs`).
        let blue_mtime = pyc::next_mtime(d.green_mtime, SystemTime::now());
        if let Some(file) = &unnamed {
            file.set_modified(blue_mtime)
                .fs_context(|| format!("setting the mtime of BLUE for {}", d.target.rel))?;
        }
        if let (Some(file), Some(mode)) = (&unnamed, d.green_mode.clone()) {
            // BLUE keeps GREEN's permissions (an executable or 0600 file stays so).
            file.set_permissions(mode)
                .fs_context(|| format!("setting the permissions of BLUE for {}", d.target.rel))?;
        }
        let unnamed_sync =
            unnamed.map(|file| tokio::task::spawn_blocking(move || file.sync_all().map(|()| file)));
        if let (Some(bytes), Some(path)) = (d.green, d.begin.backup_path.as_deref()) {
            store.write_backup_deferred(d.agent, path, bytes)?;
        }
        if !d.chain.is_empty() {
            // Verifiers may start on BLUE's bytes while this task waits on the disk.
            d.chain.prepare(&Arc::from(d.code));
        }
        store.sync(d.agent)?;
        let unnamed = match unnamed_sync {
            Some(task) => Some(
                task.await
                    .map_err(|e| Error::Internal(format!("staging sync task: {e}")))?
                    .fs_context(|| format!("syncing BLUE for {}", d.target.rel))?,
            ),
            None => None,
        };
        stages.push(timing("backup", true, started));
        self.fault(FaultPoint::AfterBackup)?;

        // 2. Stage BLUE as the target's hidden sibling (same directory: the cutover is one
        //    rename). Where the filesystem has no unnamed files, BLUE is written here and its
        //    fsync runs while BLUE is verified, completing before the rename.
        let started = Instant::now();
        let staged = root.join(&d.begin.staged_path);
        let staged_name = dirfd::split_rel(&d.begin.staged_path).1;
        let linked = unnamed
            .as_ref()
            .is_some_and(|file| dir.link_unnamed(file, staged_name).is_ok());
        drop(unnamed);
        let staged_sync = if linked {
            None
        } else {
            let staged_file = dir
                .write_new(staged_name, d.code)
                .fs_context(|| format!("staging {}", d.begin.staged_path))?;
            staged_file
                .set_modified(blue_mtime)
                .fs_context(|| format!("setting the mtime of {}", d.begin.staged_path))?;
            if let Some(mode) = d.green_mode.clone() {
                staged_file
                    .set_permissions(mode)
                    .fs_context(|| format!("setting the permissions of {}", d.begin.staged_path))?;
            }
            Some(tokio::task::spawn_blocking(move || staged_file.sync_all()))
        };
        stages.push(timing("stage", true, started));
        self.fault(FaultPoint::AfterStage)?;

        // 3. Verify BLUE. GREEN stays live and untouched.
        let started = Instant::now();
        self.fault(FaultPoint::DuringVerify)?;
        let request = VerifyRequest {
            staged: staged.clone(),
            target: d.target.abs.clone(),
            agent_id: d.agent.clone(),
            deployment_id: d.begin.deployment_id.clone(),
            root: root.clone(),
        };
        let guard = integrity::Guard::before(store.as_ref(), d.agent);
        let verification = d.chain.run(&request).await;
        // Candidate code must not have touched GREEN, its snapshot or the registry.
        let tampered = guard.changed(
            store.as_ref(),
            d.agent,
            dir.read(d.target.file_name()),
            &d.target.rel,
            d.green,
            d.begin.backup_path.as_deref(),
        );
        stages.push(timing("verify", verification.passed, started));
        let synced = match staged_sync {
            Some(task) => task
                .await
                .map_err(|e| Error::Internal(format!("staging sync task: {e}")))
                .and_then(|r| r.fs_context(|| format!("syncing {}", d.begin.staged_path))),
            None => Ok(()),
        };
        if !verification.passed || tampered.is_some() {
            remove_and_sync(&dir, staged_name, &d.begin.staged_path)?;
            let reason = tampered
                .clone()
                .or_else(|| verification.summary().map(|s| one_line(&s, 500)));
            let meta = match (
                self.finish(d.agent, d.begin, Status::Failed, reason.clone()),
                tampered,
            ) {
                (Ok(meta), _) => meta,
                // The candidate may have broken the registry itself: say so, not only that
                // the log is unreadable.
                (Err(e), Some(why)) => {
                    return Err(Error::Refused(format!("{why}; recording it failed: {e}")))
                }
                (Err(e), None) => return Err(e),
            };
            return Ok(report(
                &d,
                DeployOutcome::Rejected,
                reason,
                meta,
                stages,
                verification,
                None,
            ));
        }
        synced?;

        // 4. Cutover: one atomic rename, then the directory fsync that makes it durable.
        let started = Instant::now();
        pyc::keep_ahead(&dir, staged_name, d.target.file_name(), blue_mtime)
            .fs_context(|| format!("setting the mtime of {}", d.begin.staged_path))?;
        dir.rename(staged_name, &dir, d.target.file_name())
            .fs_context(|| format!("renaming the staged file over {}", d.target.rel))?;
        self.fault(FaultPoint::AfterRename)?;
        // GREEN's bytecode goes before BLUE is acknowledged, durable with the rename.
        let cleared = pyc::clear(dir.as_fd(), &d.target.rel);
        dir.sync()
            .fs_context(|| format!("syncing the directory of {}", d.target.rel))?;
        cleared?.sync()?;
        let mut meta = self.finish(d.agent, d.begin, Status::Live, None)?;
        stages.push(timing("cutover", true, started));

        // 5. Probation: the health chain against the live file.
        let mut health = None;
        let mut outcome = DeployOutcome::Live;
        let mut error = None;
        if !self.inner.health.is_empty() {
            let started = Instant::now();
            let request = VerifyRequest {
                staged: d.target.abs.clone(),
                ..request
            };
            let checked = self.inner.health.run(&request).await;
            stages.push(timing("probation", checked.passed, started));
            if !checked.passed {
                let reason = checked
                    .summary()
                    .map(|s| format!("health check failed: {}", one_line(&s, 500)));
                let started = Instant::now();
                self.restore_locked(
                    d.agent,
                    d.target,
                    &meta,
                    meta.previous.clone(),
                    d.green.map(<[u8]>::to_vec),
                    reason.clone(),
                )?;
                stages.push(timing("rollback", true, started));
                outcome = DeployOutcome::RolledBack;
                error = reason;
                meta = self.record(d.agent, &d.begin.deployment_id)?;
            }
            health = Some(checked);
        }
        Ok(report(
            &d,
            outcome,
            error,
            meta,
            stages,
            verification,
            health,
        ))
    }

    /// Records how a deployment ended, with retention folded into the same durable append,
    /// then deletes the pruned snapshots. Returns the deployment's record.
    fn finish(
        &self,
        agent: &AgentId,
        begin: &Begin,
        status: Status,
        reason: Option<String>,
    ) -> Result<DeploymentRecord, Error> {
        let mut finish = Event::Finish {
            deployment_id: begin.deployment_id.clone(),
            status,
            backup_path: begin.backup_path.clone(),
            reason,
            pruned: Vec::new(),
            at: Some(Utc::now()),
        };
        let mut state = Arc::unwrap_or_clone(self.load_state(agent)?);
        let plan = self.plan_retention(&mut state, &mut finish);
        // A cutover's record needs no fsync of its own: the durable Begin plus the durable
        // rename imply it, and recovery re-derives it identically (status LIVE, same prune
        // plan) if a power cut loses it. It becomes durable with the agent's next sync.
        // Only when the bytes cannot tell BLUE from GREEN (or for any other outcome) is the
        // record itself the evidence, so it is synced before the caller hears of it.
        let implied =
            status == Status::Live && begin.green_sha256.as_deref() != Some(&begin.sha256);
        if implied {
            self.inner.store.append_deferred(agent, &finish)?;
        } else {
            self.inner.store.append(agent, &finish)?;
        }
        self.fault(FaultPoint::AfterRecord)?;
        self.delete_pruned(agent, &plan)?;
        state.get(&begin.deployment_id).cloned().ok_or_else(|| {
            Error::Internal(format!("{} missing from the registry", begin.deployment_id))
        })
    }

    fn record(&self, agent: &AgentId, id: &DeploymentId) -> Result<DeploymentRecord, Error> {
        self.load_state(agent)?
            .get(id)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("{id} missing from the registry")))
    }

    /// Restores the version that was live before the current one (or `to`, a named earlier
    /// deployment), from its snapshot, atomically.
    pub async fn rollback(
        &self,
        agent_id: &str,
        file_path: Option<&str>,
        to: Option<&str>,
    ) -> Result<RollbackReport, Error> {
        let agent = AgentId::new(agent_id)?;
        let to = to.map(DeploymentId::parse).transpose()?;
        let requested = file_path.map(|p| self.resolve(p)).transpose()?;
        // Checked before locking so a rollback of an unknown agent writes nothing at all.
        if self.inner.store.load(&agent)?.is_none() {
            return Err(Error::UnknownAgent(agent.to_string()));
        }
        let _guard = self.lock(&agent).await?;
        let state = self.load_recovered(&agent)?;
        let Some(bound) = state.file_path.clone() else {
            return Err(Error::UnknownAgent(agent.to_string()));
        };
        if let Some(t) = &requested {
            if t.rel != bound {
                return Err(Error::Conflict(format!(
                    "agent {agent} is bound to {bound}, not {}",
                    t.rel
                )));
            }
        }
        let target = self.resolve(&bound)?;
        let live = state.live().cloned().ok_or_else(|| {
            Error::Conflict(format!(
                "nothing to roll back: agent {agent} has no live deployment"
            ))
        })?;
        let (restore_to, source) = match &to {
            None => {
                let source = match (&live.backup_path, &live.previous) {
                    (Some(path), _) => Some(path.clone()),
                    (None, Some(prev)) => state
                        .get(prev)
                        .and_then(|p| state.snapshot_of(&p.sha256, Some(prev))),
                    (None, None) => None,
                };
                let source = source.ok_or_else(|| {
                    Error::Conflict(format!(
                        "nothing to roll back: {} is the first version of agent {agent}",
                        live.deployment_id
                    ))
                })?;
                (live.previous.clone(), source)
            }
            Some(id) => {
                let wanted = state.get(id).ok_or_else(|| {
                    Error::BadInput(format!("agent {agent} has no deployment {id}"))
                })?;
                if wanted.status == Status::Live {
                    return Err(Error::Conflict(format!("{id} is already live")));
                }
                if !wanted.status.was_live() {
                    return Err(Error::Conflict(format!(
                        "{id} was never live ({}); only versions that were live can be restored",
                        wanted.status
                    )));
                }
                let source = state.snapshot_of(&wanted.sha256, Some(id)).ok_or_else(|| {
                    Error::Conflict(format!("no snapshot of {id} is kept any more"))
                })?;
                (Some(id.clone()), source)
            }
        };
        let bytes =
            self.inner.store.read_backup(&source)?.ok_or_else(|| {
                Error::Store(format!("snapshot {source} is recorded but missing"))
            })?;
        let started = Instant::now();
        let sha = self.restore_locked(
            &agent,
            &target,
            &live,
            restore_to.clone(),
            Some(bytes),
            Some("rolled back on request".into()),
        )?;
        self.settle(&agent);
        let stages = vec![timing("rollback", true, started)];
        let state = self.load_state(&agent)?;
        Ok(RollbackReport {
            agent_id: agent.clone(),
            file_path: bound,
            rolled_back: state.get(&live.deployment_id).cloned().unwrap_or(live),
            restored: restore_to.and_then(|id| state.get(&id).cloned()),
            source_backup: Some(source),
            sha256: sha,
            stages,
        })
    }

    /// The LIVE record of every agent (the `active_versions` registry). Agents whose
    /// registry cannot be read are left out (with a warning); [`Self::status`] names them.
    pub fn active_versions(&self) -> Result<BTreeMap<AgentId, DeploymentRecord>, Error> {
        let status = self.status()?;
        for (agent, error) in &status.broken {
            tracing::warn!(%agent, %error, "left out of the registry listing");
        }
        Ok(status.live)
    }

    /// The LIVE record of every readable agent, and every agent whose registry cannot be
    /// read, with its error: one broken agent never hides the others.
    pub fn status(&self) -> Result<crate::store::ActiveVersions, Error> {
        self.inner.store.active_versions()
    }

    /// Every deployment of an agent, newest first.
    pub fn history(&self, agent_id: &str) -> Result<Vec<DeploymentRecord>, Error> {
        let agent = AgentId::new(agent_id)?;
        let state = self
            .inner
            .store
            .load(&agent)?
            .ok_or_else(|| Error::UnknownAgent(agent.to_string()))?;
        Ok(state.deployments.iter().rev().cloned().collect())
    }

    /// Repairs every agent left mid-operation by a crash: removes staged leftovers, decides
    /// from the bytes on disk whether the cutover happened, and records the outcome.
    /// Agents whose lock a live process keeps holding are skipped (their work is in flight,
    /// not crashed); a lock that frees up within a moment is waited for. Looks at every
    /// agent (`Store::pending_agents`); [`Self::recover_pending`] is the cheap form.
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
        let pending = self.inner.store.pending_agents()?;
        Ok(self.recover_agents(pending).await)
    }

    /// [`Self::recover`] of the agents the store's index of operations in flight names
    /// (`Store::pending_agents_indexed`), plus `agent` (the one a command is about to touch)
    /// if its own registry says it needs it: the cost grows with the pending agents, not
    /// with all of them. What every CLI command but `recover` and `status` runs first.
    pub async fn recover_pending(&self, agent: Option<&str>) -> Result<RecoveryReport, Error> {
        let store = &self.inner.store;
        let mut pending = store.pending_agents_indexed()?;
        if let Some(agent) = agent.and_then(|a| AgentId::new(a).ok()) {
            if !pending.contains(&agent) && store.needs_recovery(&agent) {
                pending.push(agent);
                pending.sort();
            }
        }
        Ok(self.recover_agents(pending).await)
    }

    /// Recovers what needs it, then the LIVE record of every agent, reading each agent's
    /// log tail once (plus again for the agents recovery changed): `status` of all agents.
    pub async fn recover_and_status(
        &self,
    ) -> Result<(RecoveryReport, crate::store::ActiveVersions), Error> {
        let store = &self.inner.store;
        let mut status = store.active_versions()?;
        let pending = std::mem::take(&mut status.pending);
        let report = self.recover_agents(pending.clone()).await;
        for agent in pending {
            status.live.remove(&agent);
            status.broken.remove(&agent);
            match store.active_version(&agent) {
                Ok(Some(live)) => {
                    status.live.insert(agent, live);
                }
                Ok(None) => {}
                Err(e) => {
                    status.broken.insert(agent, e.to_string());
                }
            }
        }
        Ok((report, status))
    }

    async fn recover_agents(&self, pending: Vec<AgentId>) -> RecoveryReport {
        let mut report = RecoveryReport::default();
        for agent in pending {
            // One agent's broken registry (or state directory) is reported, and the others
            // are still recovered.
            let guard = match self.lock_within(&agent, RECOVERY_LOCK_WAIT).await {
                Ok(guard) => guard,
                Err(Error::LockTimeout { .. }) => {
                    report.busy.push(agent);
                    continue;
                }
                Err(e) => {
                    report.broken.push((agent, e.to_string()));
                    continue;
                }
            };
            match self.recover_agent_locked(&agent) {
                Ok(actions) => {
                    self.settle(&agent);
                    report
                        .actions
                        .extend(actions.into_iter().map(|action| RecoveryAction {
                            agent_id: agent.clone(),
                            action,
                        }))
                }
                Err(e) => report.broken.push((agent, e.to_string())),
            }
            drop(guard);
        }
        report
    }

    /// Tells the store nothing is pending for `agent` any more. Lock held. A failure only
    /// leaves the agent in the store's index, which costs the next command a look.
    fn settle(&self, agent: &AgentId) {
        if let Err(e) = self.inner.store.settled(agent) {
            tracing::warn!(%agent, error = %e, "cannot drop the agent from the pending index");
        }
    }

    // ---- internals -------------------------------------------------------------------

    /// The target's directory, walked from the root without following symlinks (created
    /// durably when `create`); `None` if missing.
    fn target_dir(&self, target: &Target, create: bool) -> Result<Option<Dir>, Error> {
        let parent = dirfd::split_rel(&target.rel).0;
        let dir = if create {
            self.inner.dir.walk_create(parent).map(Some)
        } else {
            self.inner.dir.walk(parent)
        };
        dir.fs_context(|| format!("the directory of {}", target.rel))
    }

    /// GREEN's bytes and permissions (`None` if there is no file yet). Refused without
    /// blocking or reading: a target that is not a regular file (a FIFO, a device, a
    /// directory, a symlink swapped in) and one larger than `max_code_bytes`.
    fn read_green(&self, target: &Target) -> Result<Green, Error> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let Some(dir) = self.target_dir(target, false)? else {
            return Ok((None, None, None));
        };
        let opened = dir
            .open_file(target.file_name(), rustix::fs::OFlags::RDONLY)
            .fs_context(|| format!("invalid target {}", target.rel))?;
        let Some((mut file, st)) = opened else {
            return Ok((None, None, None));
        };
        let limit = self.inner.limits.max_code_bytes;
        let size = st.st_size.max(0) as u64;
        if size > limit as u64 {
            return Err(Error::BadInput(format!(
                "invalid target {}: it holds {size} bytes, over the limit of {limit} bytes (max_code_bytes); not read",
                target.rel
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.by_ref()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .fs_context(|| format!("reading {}", target.rel))?;
        if bytes.len() > limit {
            return Err(Error::BadInput(format!(
                "invalid target {}: it grew over the limit of {limit} bytes (max_code_bytes)",
                target.rel
            )));
        }
        let mode = std::fs::Permissions::from_mode(st.st_mode & 0o7777);
        Ok((Some(bytes), Some(mode), Some(pyc::mtime(&st))))
    }

    /// Checks a target and staged path read back from the registry (the staged file must
    /// be the target's sibling with the staged name pattern) and opens their directory
    /// without following symlinks. A path that fails is the agent's corrupt registry.
    fn registry_sibling<'s>(
        &self,
        agent: &AgentId,
        file_path: &str,
        staged_path: &'s str,
    ) -> Result<(Option<Dir>, &'s str), Error> {
        let corrupt = |why: String| Error::Store(format!("agent {agent}: registry: {why}"));
        paths::check_registry_target(file_path).map_err(corrupt)?;
        let name = paths::check_staged(file_path, staged_path).map_err(corrupt)?;
        let parent = dirfd::split_rel(file_path).0;
        let dir = self
            .inner
            .dir
            .walk(parent)
            .fs_context(|| format!("agent {agent}: the directory of {file_path}"))?;
        Ok((dir, name))
    }

    fn chain_for(&self, agent: &AgentId) -> &Chain {
        self.inner
            .agent_chains
            .get(agent)
            .unwrap_or(&self.inner.chain)
    }

    fn fault(&self, point: FaultPoint) -> Result<(), Error> {
        if self.inner.crash_at == Some(point) {
            return Err(Error::InjectedCrash(point));
        }
        if fault::env_fault() == Some(point) {
            fault::kill_self(point);
        }
        Ok(())
    }

    fn local_mutex(&self, agent: &AgentId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(agent.clone()).or_default().clone()
    }

    /// Takes the agent's in-process mutex (FIFO among tasks) and then the store's lease
    /// (polled: the OS lock has no async wait), within `lock_timeout` in total.
    async fn lock(&self, agent: &AgentId) -> Result<AgentGuard, Error> {
        self.lock_within(agent, self.inner.limits.lock_timeout)
            .await
    }

    async fn lock_within(&self, agent: &AgentId, timeout: Duration) -> Result<AgentGuard, Error> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || Error::LockTimeout {
            agent: agent.to_string(),
            waited_ms: started.elapsed().as_millis() as u64,
        };
        let local = tokio::time::timeout_at(deadline, self.local_mutex(agent).lock_owned())
            .await
            .map_err(|_| timed_out())?;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(lease) = self.inner.store.try_lock(agent)? {
                return Ok(AgentGuard {
                    _lease: lease,
                    _local: local,
                });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(timed_out());
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    fn load_state(&self, agent: &AgentId) -> Result<Arc<AgentState>, Error> {
        Ok(self.inner.store.load(agent)?.unwrap_or_default())
    }

    /// Loads the agent's state, first finishing anything a crash left pending. Lock held.
    fn load_recovered(&self, agent: &AgentId) -> Result<Arc<AgentState>, Error> {
        let state = self.load_state(agent)?;
        // A crash between recording a prune and deleting its files leaves them behind; the
        // record is the last event until the next operation, which is this one.
        for path in &state.last_pruned {
            self.inner.store.remove_backup(path)?;
        }
        if !state.is_pending() {
            return Ok(state);
        }
        for action in self.recover_agent_locked(agent)? {
            tracing::warn!(%agent, action, "recovered an interrupted operation");
        }
        self.settle(agent);
        self.load_state(agent)
    }

    /// Recovery of one agent. Lock held. Returns what it did, in words.
    fn recover_agent_locked(&self, agent: &AgentId) -> Result<Vec<String>, Error> {
        let store = &self.inner.store;
        let state = self.load_state(agent)?;
        let mut actions = Vec::new();

        if let Some(begin) = &state.pending {
            let (dir, staged_name) =
                self.registry_sibling(agent, &begin.file_path, &begin.staged_path)?;
            let staged_left = match &dir {
                Some(dir) => remove_and_sync(dir, staged_name, &begin.staged_path)?,
                None => false,
            };
            if staged_left {
                actions.push(format!("removed staged file {}", begin.staged_path));
            }
            let target_sha = sha_of_file(dir.as_ref(), &begin.file_path)?;
            // BLUE is live iff the rename happened: no staged file and the target holds BLUE.
            // If BLUE == GREEN the bytes cannot tell; ABORTED is then equally true on disk.
            let went_live = !staged_left
                && target_sha.as_deref() == Some(begin.sha256.as_str())
                && begin.green_sha256.as_deref() != Some(begin.sha256.as_str());
            let backup_path = match (&begin.backup_path, &begin.green_sha256) {
                (Some(path), Some(sha)) => {
                    if store
                        .read_backup(path)?
                        .is_some_and(|b| &sha256_hex(&b) == sha)
                    {
                        Some(path.clone())
                    } else {
                        // Torn or never written: GREEN is still recorded elsewhere or live.
                        store.remove_backup(path)?;
                        None
                    }
                }
                _ => None,
            };
            // The rename happened: GREEN's bytecode goes, as the cutover would have done.
            // (ABORTED: the target is GREEN, or BLUE with GREEN's bytes; its caches hold.)
            let bytecode =
                went_live.then(|| clear_bytecode_durably(dir.as_ref(), &begin.file_path));
            let status = if went_live {
                Status::Live
            } else {
                Status::Aborted
            };
            let mut finish = Event::Finish {
                deployment_id: begin.deployment_id.clone(),
                status,
                backup_path,
                reason: (!went_live)
                    .then(|| "interrupted before cutover; cleaned up by recovery".to_owned()),
                pruned: Vec::new(),
                at: Some(Utc::now()),
            };
            // The same retention a finished cutover applies: its record may have been lost
            // to a power cut after its pruned files were already deleted.
            let plan = self.plan_retention(&mut (*state).clone(), &mut finish);
            store.append(agent, &finish)?;
            self.delete_pruned(agent, &plan)?;
            actions.push(format!("marked {} {status}", begin.deployment_id));
            // Reported after the record, so a stubborn cache cannot keep the agent pending.
            bytecode.transpose()?;
        }

        if let Some(rb) = &state.pending_rollback {
            let bound = state.file_path.as_deref().unwrap_or("");
            let (dir, staged_name) = self.registry_sibling(agent, bound, &rb.staged_path)?;
            let staged_left = match &dir {
                Some(dir) => remove_and_sync(dir, staged_name, &rb.staged_path)?,
                None => false,
            };
            if staged_left {
                actions.push(format!("removed staged file {}", rb.staged_path));
            }
            let target_sha = sha_of_file(dir.as_ref(), bound)?;
            if !staged_left && target_sha == rb.sha256 {
                let bytecode = clear_bytecode_durably(dir.as_ref(), bound);
                store.append(
                    agent,
                    &Event::Rollback {
                        from: rb.from.clone(),
                        to: rb.to.clone(),
                        timestamp: rb.timestamp,
                        sha256: rb.sha256.clone(),
                        reason: rb.reason.clone(),
                        // The snapshot precedes the rename, so it is whole; check anyway.
                        snapshot: match &rb.snapshot {
                            Some(snap)
                                if store
                                    .read_backup(&snap.path)
                                    .ok()
                                    .flatten()
                                    .is_some_and(|b| sha256_hex(&b) == snap.sha256) =>
                            {
                                Some(snap.clone())
                            }
                            _ => None,
                        },
                        pruned: Vec::new(),
                    },
                )?;
                actions.push(format!("completed the rollback of {}", rb.from));
                bytecode?;
            } else {
                store.append(
                    agent,
                    &Event::RollbackAbandoned {
                        from: rb.from.clone(),
                    },
                )?;
                actions.push(format!("abandoned the unfinished rollback of {}", rb.from));
            }
        }
        actions.extend(self.sweep_orphans(agent)?);
        Ok(actions)
    }

    /// Deletes snapshots the registry no longer refers to (a crash between recording a
    /// prune and deleting the file).
    fn sweep_orphans(&self, agent: &AgentId) -> Result<Vec<String>, Error> {
        let state = self.load_state(agent)?;
        let referenced: HashSet<&str> = state.referenced_backups().collect();
        let mut actions = Vec::new();
        for path in self.inner.store.list_backups(agent)? {
            if !referenced.contains(path.as_str()) {
                self.inner.store.remove_backup(&path)?;
                actions.push(format!("removed unreferenced snapshot {path}"));
            }
        }
        Ok(actions)
    }

    /// Puts `bytes` (or nothing, for `None`) at the target in place of LIVE `from`, with a
    /// journal entry first. Lock held. Returns the SHA-256 now at the target.
    fn restore_locked(
        &self,
        agent: &AgentId,
        target: &Target,
        from: &DeploymentRecord,
        to: Option<DeploymentId>,
        bytes: Option<Vec<u8>>,
        reason: Option<String>,
    ) -> Result<Option<String>, Error> {
        let store = &self.inner.store;
        let sha = bytes.as_deref().map(sha256_hex);
        // What is live now is about to be replaced: keep it (nothing ever live is lost).
        let (current, _, current_mtime) = self.read_green(target)?;
        let now = Utc::now().trunc_subsecs(3);
        if current.is_some() {
            store.check_backup_dir(agent)?;
        }
        let snapshot = current.as_deref().map(|b| crate::store::SnapshotRef {
            path: store.rollback_snapshot_path(
                agent,
                &from.deployment_id,
                now,
                &target.extension(),
            ),
            sha256: sha256_hex(b),
        });
        let rb = RollbackBegin {
            from: from.deployment_id.clone(),
            to: to.clone(),
            timestamp: now,
            staged_path: staged_rel(
                target,
                &format!("bluegreen-rb-{}", uuid::Uuid::now_v7().simple()),
            ),
            sha256: sha.clone(),
            reason: reason.clone(),
            snapshot: snapshot.clone(),
        };
        store.append(agent, &Event::RollbackBegin(rb.clone()))?;
        let result = (|| {
            if let (Some(snap), Some(bytes)) = (&snapshot, &current) {
                store.write_backup(agent, &snap.path, bytes)?;
            }
            let dir = self.target_dir(target, bytes.is_some())?;
            match (&bytes, &dir) {
                (Some(bytes), Some(dir)) => {
                    let staged_name = dirfd::split_rel(&rb.staged_path).1;
                    // The restored file's mtime second follows the current one's (`pyc.rs`).
                    dir.write_new(staged_name, bytes)
                        .and_then(|f| pyc::stamp(&f, current_mtime).and_then(|_| f.sync_all()))
                        .fs_context(|| format!("staging {}", rb.staged_path))?;
                    self.fault(FaultPoint::RollbackAfterStage)?;
                    dir.rename(staged_name, dir, target.file_name())
                        .fs_context(|| format!("renaming the restored file over {}", target.rel))?;
                }
                (None, Some(dir)) => {
                    self.fault(FaultPoint::RollbackAfterStage)?;
                    dir.unlink(target.file_name())
                        .fs_context(|| format!("removing {}", target.rel))?;
                }
                (Some(_), None) => {
                    return Err(Error::Internal(format!(
                        "no directory for {} after creating it",
                        target.rel
                    )))
                }
                (None, None) => self.fault(FaultPoint::RollbackAfterStage)?,
            }
            self.fault(FaultPoint::RollbackAfterRename)?;
            match &dir {
                Some(dir) => {
                    let cleared = pyc::clear(dir.as_fd(), &target.rel);
                    dir.sync()
                        .fs_context(|| format!("syncing the directory of {}", target.rel))?;
                    cleared?.sync()
                }
                None => Ok(()),
            }
        })();
        match result {
            Ok(()) => {}
            Err(e @ Error::InjectedCrash(_)) => return Err(e),
            Err(e) => {
                match self.recover_agent_locked(agent) {
                    Ok(_) => self.settle(agent),
                    Err(again) => {
                        tracing::error!(%agent, error = %again, "recovery after a failed rollback failed too")
                    }
                }
                return Err(e);
            }
        }
        let mut rollback = Event::Rollback {
            from: rb.from,
            to,
            timestamp: rb.timestamp,
            sha256: sha.clone(),
            reason,
            snapshot,
            pruned: Vec::new(),
        };
        let plan = self.plan_retention(
            &mut Arc::unwrap_or_clone(self.load_state(agent)?),
            &mut rollback,
        );
        store.append(agent, &rollback)?;
        self.delete_pruned(agent, &plan)?;
        Ok(sha)
    }

    /// Folds `event` (a `Finish` or `Rollback`) into `state` and writes retention's plan into
    /// the event's `pruned`, so the record that drops snapshots is the one that ends the
    /// operation. Returns the plan, for deleting the files once the event is written.
    fn plan_retention(&self, state: &mut AgentState, event: &mut Event) -> Vec<String> {
        state.apply(event);
        let plan = self.prune_plan(state);
        if let Event::Finish { pruned, .. } | Event::Rollback { pruned, .. } = event {
            pruned.clone_from(&plan);
        }
        plan
    }

    /// Retention: which snapshots to drop so `keep_backups` remain — first keeping the ones
    /// successive rollbacks from the LIVE deployment would use, then the newest others.
    /// `state` is the state after the event that will carry the plan.
    fn prune_plan(&self, state: &AgentState) -> Vec<String> {
        let keep = self.inner.limits.keep_backups;
        let mut kept: HashSet<&str> = HashSet::new();
        let mut cursor = state.live();
        let mut seen = HashSet::new();
        while let Some(record) = cursor {
            if kept.len() >= keep || !seen.insert(&record.deployment_id) {
                break;
            }
            if let Some(path) = record.backup_path.as_deref() {
                kept.insert(path);
            }
            cursor = record.previous.as_ref().and_then(|p| state.get(p));
        }
        // Fill up with the newest other snapshots (deployment backups and rollback snapshots).
        let mut all: Vec<(chrono::DateTime<Utc>, &str)> = state
            .deployments
            .iter()
            .filter_map(|d| d.backup_path.as_deref().map(|p| (d.timestamp, p)))
            .chain(
                state
                    .rollback_snapshots
                    .iter()
                    .map(|s| (s.timestamp, s.path.as_str())),
            )
            .collect();
        all.sort_by_key(|o| std::cmp::Reverse(o.0));
        for (_, path) in &all {
            if kept.len() >= keep {
                break;
            }
            kept.insert(path);
        }
        all.iter()
            .filter(|(_, p)| !kept.contains(p))
            .map(|(_, p)| (*p).to_owned())
            .collect()
    }

    /// Deletes snapshots whose pruning is already recorded. Lock held. (A crash before they
    /// are gone is repaired by `load_recovered`, which repeats the last event's deletions.)
    fn delete_pruned(&self, agent: &AgentId, plan: &[String]) -> Result<(), Error> {
        for (i, path) in plan.iter().enumerate() {
            self.inner.store.remove_backup(path)?;
            if i == 0 {
                self.fault(FaultPoint::DuringPrune)?;
            }
        }
        if !plan.is_empty() {
            tracing::debug!(%agent, pruned = plan.len(), "retention");
        }
        Ok(())
    }
}

/// GREEN as found: its bytes, permissions and mtime (all `None` if there is no file).
type Green = (
    Option<Vec<u8>>,
    Option<std::fs::Permissions>,
    Option<SystemTime>,
);

struct Deployment<'a> {
    agent: &'a AgentId,
    target: &'a Target,
    begin: &'a Begin,
    code: &'a [u8],
    green: Option<&'a [u8]>,
    green_mode: Option<std::fs::Permissions>,
    /// GREEN's mtime when the deployment started: BLUE's follows it (`pyc.rs`).
    green_mtime: Option<SystemTime>,
    chain: &'a Chain,
}

fn report(
    d: &Deployment<'_>,
    outcome: DeployOutcome,
    error: Option<String>,
    meta: DeploymentRecord,
    stages: Vec<StageTiming>,
    verification: ChainReport,
    health: Option<ChainReport>,
) -> DeployReport {
    DeployReport {
        agent_id: d.agent.clone(),
        deployment_id: d.begin.deployment_id.clone(),
        file_path: d.target.rel.clone(),
        outcome,
        error,
        meta,
        stages,
        verification: verification.outcomes,
        health: health.map(|h| h.outcomes).unwrap_or_default(),
    }
}

/// `s` on one line, at most `max` chars (registry reasons stay short; reports keep it all).
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

fn timing(stage: &'static str, ok: bool, started: Instant) -> StageTiming {
    StageTiming {
        stage,
        ok,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// The hidden sibling `.<name>.<tag>.staged` of the target, relative to the root.
fn staged_rel(target: &Target, tag: &str) -> String {
    let name = format!(".{}.{tag}.staged", target.file_name());
    match target.rel.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name,
    }
}

/// The bytes of the file `rel` in `dir` (its directory), or `None` if either is missing.
fn read_in(dir: Option<&Dir>, rel: &str) -> Result<Option<Vec<u8>>, Error> {
    match dir {
        Some(dir) => dir
            .read(dirfd::split_rel(rel).1)
            .fs_context(|| format!("reading {rel}")),
        None => Ok(None),
    }
}

fn sha_of_file(dir: Option<&Dir>, rel: &str) -> Result<Option<String>, Error> {
    Ok(read_in(dir, rel)?.as_deref().map(sha256_hex))
}

/// Recovery's half of a swap it completes: the replaced bytes' caches go (`pyc.rs`), and
/// the target's directory `dir` is synced with the removals (the rename's sync may be lost).
fn clear_bytecode_durably(dir: Option<&Dir>, rel: &str) -> Result<(), Error> {
    let Some(dir) = dir else {
        return Ok(()); // no directory: no target and no caches beside it
    };
    let cleared = pyc::clear(dir.as_fd(), rel)?;
    dir.sync()
        .fs_context(|| format!("syncing the directory of {rel}"))?;
    cleared.sync()
}

/// Unlinks `name` in `dir` and syncs `dir`; `false` if it was missing.
fn remove_and_sync(dir: &Dir, name: &str, rel: &str) -> Result<bool, Error> {
    if !dir.unlink(name).fs_context(|| format!("removing {rel}"))? {
        return Ok(false);
    }
    dir.sync()
        .fs_context(|| format!("syncing the directory of {rel}"))?;
    Ok(true)
}
