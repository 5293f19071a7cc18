//! Finding the exact bytes of a version: `bluegreen show`, `diff` and the HTTP code route.
//!
//! Where a version's bytes live:
//! - LIVE: the target file, when its SHA-256 matches the LIVE record (else a kept snapshot
//!   with that SHA-256: the target drifted by hand since).
//! - an earlier version that was live (SUPERSEDED, ROLLED_BACK): the snapshot that holds its
//!   bytes — the `backup_path` of the deployment that replaced it, or a rollback's snapshot
//!   of it (`AgentState::snapshot_of`); gone once retention pruned it.
//! - FAILED and ABORTED deployments never went live, and their bytes were never kept.
//!
//! Whatever is returned was checked against the deployment's recorded SHA-256: bytes that
//! do not match are refused, never printed.

use bluegreen_core::util::sha256_hex;
use bluegreen_core::{
    AgentId, AgentState, BlueGreenService, DeploymentId, DeploymentRecord, ErrorKind, Status,
};

/// Why a version's bytes cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Core(#[from] bluegreen_core::Error),
    #[error("agent {agent} has no deployment {id}")]
    UnknownDeployment { agent: String, id: String },
    #[error("agent {0} has no live deployment")]
    NothingLive(String),
    #[error(
        "the bytes of {id} were never kept: it is {status} (only versions that went live are kept)"
    )]
    NeverKept { id: String, status: Status },
    #[error("the snapshot of {id} was pruned by retention (keep_backups); its bytes are gone")]
    Pruned { id: String },
    #[error("the target {path} was edited by hand since {id} went live (its sha256 is not the LIVE record's), and no snapshot holds {id}'s bytes")]
    Drifted { id: String, path: String },
    #[error("refusing to show {id}: {source_path} holds bytes with sha256 {actual}, the registry records {expected}")]
    Mismatch {
        id: String,
        source_path: String,
        expected: String,
        actual: String,
    },
}

impl VersionError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            VersionError::Core(e) => e.kind(),
            VersionError::Mismatch { .. } | VersionError::Drifted { .. } => ErrorKind::Io,
            _ => ErrorKind::BadInput,
        }
    }

    /// The HTTP status: 404 unknown, 410 for bytes that existed and are gone (pruned) or were
    /// never kept, 500 for a mismatch or an I/O failure.
    pub fn http_status(&self) -> u16 {
        match self {
            VersionError::Core(bluegreen_core::Error::UnknownAgent(_))
            | VersionError::UnknownDeployment { .. }
            | VersionError::NothingLive(_) => 404,
            VersionError::Pruned { .. } | VersionError::NeverKept { .. } => 410,
            VersionError::Core(e) => crate::exit::http_status_for(e.kind()),
            VersionError::Mismatch { .. } | VersionError::Drifted { .. } => 500,
        }
    }

    /// A short machine-readable name (`"error_kind"` in JSON).
    pub fn kind_name(&self) -> &'static str {
        match self {
            VersionError::Core(bluegreen_core::Error::UnknownAgent(_))
            | VersionError::UnknownDeployment { .. }
            | VersionError::NothingLive(_) => "not_found",
            VersionError::Pruned { .. } => "pruned",
            VersionError::NeverKept { .. } => "not_kept",
            VersionError::Core(e) => crate::exit::kind_name(e.kind()),
            VersionError::Mismatch { .. } => "io",
            VersionError::Drifted { .. } => "drifted",
        }
    }
}

/// One version and its bytes.
#[derive(Debug, Clone)]
pub struct Version {
    pub agent_id: AgentId,
    pub record: DeploymentRecord,
    pub bytes: Vec<u8>,
}

/// An agent's registry entry, for looking up several versions of it.
pub struct Versions<'a> {
    service: &'a BlueGreenService,
    agent: AgentId,
    state: std::sync::Arc<AgentState>,
}

impl<'a> Versions<'a> {
    pub fn of(service: &'a BlueGreenService, agent_id: &str) -> Result<Self, VersionError> {
        let agent = AgentId::new(agent_id)?;
        let state = service
            .store()
            .load(&agent)?
            .ok_or_else(|| bluegreen_core::Error::UnknownAgent(agent.to_string()))?;
        Ok(Self {
            service,
            agent,
            state,
        })
    }

    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The record of `id` (`None`: the LIVE one).
    pub fn record(&self, id: Option<&str>) -> Result<&DeploymentRecord, VersionError> {
        match id {
            None => self
                .state
                .live()
                .ok_or_else(|| VersionError::NothingLive(self.agent.to_string())),
            Some(raw) => {
                let unknown = || VersionError::UnknownDeployment {
                    agent: self.agent.to_string(),
                    id: raw.to_owned(),
                };
                let id = DeploymentId::parse(raw).map_err(|_| unknown())?;
                self.state.get(&id).ok_or_else(unknown)
            }
        }
    }

    /// The version before `record`: the deployment that was LIVE when it started (its
    /// `previous`), or, without one, the latest earlier deployment that went live. `None`
    /// for the first version.
    pub fn predecessor(&self, record: &DeploymentRecord) -> Option<&DeploymentRecord> {
        if let Some(prev) = record.previous.as_ref().and_then(|p| self.state.get(p)) {
            return Some(prev);
        }
        let position = self
            .state
            .deployments
            .iter()
            .position(|d| d.deployment_id == record.deployment_id)?;
        self.state.deployments[..position]
            .iter()
            .rev()
            .find(|d| d.status.was_live())
    }

    /// The exact bytes of `record`, checked against its SHA-256.
    pub fn bytes(&self, record: &DeploymentRecord) -> Result<Version, VersionError> {
        let id = record.deployment_id.to_string();
        if !record.status.was_live() {
            return Err(VersionError::NeverKept {
                id,
                status: record.status,
            });
        }
        if record.status == Status::Live {
            if let Some(bytes) = self.target_bytes(record)? {
                return Ok(self.version(record, bytes));
            }
        }
        let source = self
            .state
            .snapshot_of(&record.sha256, Some(&record.deployment_id))
            .ok_or_else(|| match record.status {
                Status::Live => VersionError::Drifted {
                    id: id.clone(),
                    path: record.file_path.clone(),
                },
                _ => VersionError::Pruned { id: id.clone() },
            })?;
        let bytes = self.service.store().read_backup(&source)?.ok_or_else(|| {
            bluegreen_core::Error::Store(format!("snapshot {source} is recorded but missing"))
        })?;
        let actual = sha256_hex(&bytes);
        if actual != record.sha256 {
            return Err(VersionError::Mismatch {
                id,
                source_path: source,
                expected: record.sha256.clone(),
                actual,
            });
        }
        Ok(self.version(record, bytes))
    }

    /// The target's bytes when they are `record`'s (`None` when it drifted, is missing or
    /// is not a regular file). Read by descriptor from the root, never through a symlink.
    fn target_bytes(&self, record: &DeploymentRecord) -> Result<Option<Vec<u8>>, VersionError> {
        use bluegreen_core::dirfd::{self, Dir};
        let rel = &record.file_path;
        bluegreen_core::paths::check_registry_target(rel).map_err(|why| {
            bluegreen_core::Error::Store(format!("registry target {rel:?}: {why}"))
        })?;
        let (dir_rel, name) = dirfd::split_rel(rel);
        let io = |e: std::io::Error| bluegreen_core::Error::io(format!("reading {rel}"), e);
        let root = Dir::open_root(self.service.root()).map_err(io)?;
        let Some(dir) = root.walk(dir_rel).map_err(io)? else {
            return Ok(None);
        };
        let limit = self.service.limits().max_code_bytes;
        match dir.stat(name).map_err(io)? {
            Some(st) if dirfd::is_regular(&st) && st.st_size.max(0) as u64 <= limit as u64 => {}
            _ => return Ok(None),
        }
        let bytes = match dir.read(name) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => return Err(io(e).into()),
        };
        Ok((sha256_hex(&bytes) == record.sha256).then_some(bytes))
    }

    fn version(&self, record: &DeploymentRecord, bytes: Vec<u8>) -> Version {
        Version {
            agent_id: self.agent.clone(),
            record: record.clone(),
            bytes,
        }
    }
}
