//! Defense in depth around the verify stage: candidate code run by a verifier must not have
//! changed GREEN, its snapshot or the agent's registry. Subprocess verifiers are confined by
//! the kernel where it can (`sandbox = "strict"`); this comparison holds where it cannot, and
//! when a verifier runs unconfined (`sandbox = "off"`, in-process custom verifiers). It costs
//! a read of the target and the snapshot and a fingerprint (for the file store, one stat) of
//! the agent's log.

use sha2::{Digest, Sha256};

use crate::ids::AgentId;
use crate::store::Store;

/// What the guarded files were before the chain ran.
pub(crate) struct Guard {
    registry: Option<[u8; 32]>,
}

impl Guard {
    /// Fingerprints the agent's registry (as the store keeps it) before the chain.
    pub(crate) fn before(store: &dyn Store, agent: &AgentId) -> Self {
        Self {
            registry: registry_digest(store, agent),
        }
    }

    /// After the chain: why the deployment must be refused, if anything changed — the live
    /// target (read now as `target_now`, through the target's directory descriptor; shown as
    /// `shown`) no longer holds `green`, the snapshot at `snapshot` no longer holds it
    /// either, or the registry's fingerprint differs. Nothing is put back: the operator decides
    /// (the reason names what changed).
    pub(crate) fn changed(
        &self,
        store: &dyn Store,
        agent: &AgentId,
        target_now: std::io::Result<Option<Vec<u8>>>,
        shown: &str,
        green: Option<&[u8]>,
        snapshot: Option<&str>,
    ) -> Option<String> {
        let mut changed = Vec::new();
        let unchanged = match target_now {
            Ok(bytes) => bytes.as_deref() == green,
            Err(_) => false, // no longer a readable regular file: changed
        };
        if !unchanged {
            changed.push(format!("the live target {shown}"));
        }
        if let (Some(path), Some(green)) = (snapshot, green) {
            if store.read_backup(path).ok().flatten().as_deref() != Some(green) {
                changed.push(format!("GREEN's snapshot {path}"));
            }
        }
        if registry_digest(store, agent) != self.registry {
            changed.push(format!("the registry of agent {agent}"));
        }
        if changed.is_empty() {
            return None;
        }
        Some(format!(
            "verification changed {}; deployment refused (nothing was restored: check them \
             before the next deploy or rollback)",
            changed.join(", ")
        ))
    }
}

fn registry_digest(store: &dyn Store, agent: &AgentId) -> Option<[u8; 32]> {
    match store.registry_fingerprint(agent) {
        Ok(Some(bytes)) => Some(Sha256::digest(&bytes).into()),
        Ok(None) => None,
        // Unreadable now: fingerprint as "unreadable", which differs from any content.
        Err(_) => Some([0xff; 32]),
    }
}
