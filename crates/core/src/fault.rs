//! Crash injection: named points in the lifecycle where a test can make the process "die".
//!
//! Two ways to arm a point:
//! - In-process (unit tests): [`crate::ServiceBuilder::crash_at`]. At the point the service
//!   returns [`crate::Error::Internal`] *without any cleanup*, exactly as if it had died; drop
//!   the service, build a new one on the same store and call `recover()`.
//! - From outside (integration tests, e2e): environment variable `BLUEGREEN_FAULT=<point>`
//!   makes the process SIGKILL itself at that point. Honoured only in debug builds or with
//!   the `fault-injection` feature, so a production binary ignores it.

use std::fmt;
use std::str::FromStr;

/// Every point where a crash leaves distinct state on disk (ARCHITECTURE.md has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Journal entry (`Begin`) written; no backup yet.
    AfterBegin,
    /// GREEN's snapshot written; nothing staged.
    AfterBackup,
    /// BLUE staged beside the target; verification not started.
    AfterStage,
    /// Verification in progress (the chain has started).
    DuringVerify,
    /// Staged file renamed over the target; directory not yet synced, registry not written.
    AfterRename,
    /// Deployment recorded; retention not yet run.
    AfterRecord,
    /// Retention recorded a snapshot as pruned but has not deleted the file.
    DuringPrune,
    /// Rollback journal entry written and its bytes staged; not yet renamed.
    RollbackAfterStage,
    /// Rollback renamed over the target; registry not yet written.
    RollbackAfterRename,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 9] = [
        FaultPoint::AfterBegin,
        FaultPoint::AfterBackup,
        FaultPoint::AfterStage,
        FaultPoint::DuringVerify,
        FaultPoint::AfterRename,
        FaultPoint::AfterRecord,
        FaultPoint::DuringPrune,
        FaultPoint::RollbackAfterStage,
        FaultPoint::RollbackAfterRename,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultPoint::AfterBegin => "after_begin",
            FaultPoint::AfterBackup => "after_backup",
            FaultPoint::AfterStage => "after_stage",
            FaultPoint::DuringVerify => "during_verify",
            FaultPoint::AfterRename => "after_rename",
            FaultPoint::AfterRecord => "after_record",
            FaultPoint::DuringPrune => "during_prune",
            FaultPoint::RollbackAfterStage => "rollback_after_stage",
            FaultPoint::RollbackAfterRename => "rollback_after_rename",
        }
    }

    /// Is this point on the rollback path (rather than the deploy path)?
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            FaultPoint::RollbackAfterStage | FaultPoint::RollbackAfterRename
        )
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown fault point {s:?}"))
    }
}

/// The environment variable naming a point where the process kills itself.
pub const FAULT_ENV: &str = "BLUEGREEN_FAULT";

/// The point armed through [`FAULT_ENV`], read once.
pub(crate) fn env_fault() -> Option<FaultPoint> {
    if !(cfg!(debug_assertions) || cfg!(feature = "fault-injection")) {
        return None;
    }
    static ARMED: std::sync::OnceLock<Option<FaultPoint>> = std::sync::OnceLock::new();
    *ARMED.get_or_init(|| std::env::var(FAULT_ENV).ok()?.parse().ok())
}

/// Dies by SIGKILL: no destructors, no flushing, no unlock — a real crash.
pub(crate) fn kill_self(point: FaultPoint) -> ! {
    tracing::warn!(%point, "fault injection: killing this process");
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this is only reached if kill(2) itself failed.
    std::process::abort()
}
