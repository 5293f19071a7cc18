//! What lifecycle operations return.

use serde::Serialize;

use crate::ids::{AgentId, DeploymentId};
use crate::store::DeploymentRecord;
use crate::verify::VerifierOutcome;

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    /// BLUE passed and is live.
    Live,
    /// Verification rejected BLUE; GREEN was never touched.
    Rejected,
    /// BLUE went live, failed its health chain, and GREEN was restored.
    RolledBack,
}

/// The time one lifecycle stage took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageTiming {
    pub stage: &'static str,
    pub ok: bool,
    pub elapsed_ms: u64,
}

/// The result of [`crate::BlueGreenService::deploy_hot_swap`].
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub agent_id: AgentId,
    pub deployment_id: DeploymentId,
    /// The target, relative to the root.
    pub file_path: String,
    pub outcome: DeployOutcome,
    /// Why the deployment did not stay live.
    pub error: Option<String>,
    /// The deployment's registry record after the operation.
    pub meta: DeploymentRecord,
    pub stages: Vec<StageTiming>,
    /// The verification chain's outcomes, in chain order.
    pub verification: Vec<VerifierOutcome>,
    /// The health chain's outcomes (empty without a health chain).
    pub health: Vec<VerifierOutcome>,
}

impl DeployReport {
    pub fn succeeded(&self) -> bool {
        self.outcome == DeployOutcome::Live
    }
}

/// The result of a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub agent_id: AgentId,
    pub file_path: String,
    /// The deployment that was LIVE and is now `ROLLED_BACK`.
    pub rolled_back: DeploymentRecord,
    /// The deployment that is LIVE again (`None` when the restored bytes predate bluegreen).
    pub restored: Option<DeploymentRecord>,
    /// The snapshot the bytes came from.
    pub source_backup: Option<String>,
    /// SHA-256 of the bytes now at the target.
    pub sha256: Option<String>,
    pub stages: Vec<StageTiming>,
}

/// What [`crate::BlueGreenService::recover`] did for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryAction {
    pub agent_id: AgentId,
    pub action: String,
}

/// The result of recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    pub actions: Vec<RecoveryAction>,
    /// Agents skipped because a live process holds their lock (its work is not a crash).
    pub busy: Vec<AgentId>,
    /// Agents that could not be recovered (a corrupt registry, a state directory that is a
    /// symlink), each with its error; every other agent was recovered.
    pub broken: Vec<(AgentId, String)>,
}
