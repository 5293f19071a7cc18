//! [`MemoryStore`]: a [`Store`] kept in memory, for tests and embedding.
//!
//! Nothing survives the process, and leases only exclude within it. Backup paths are the
//! same strings a durable store would use, so reports look the same.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;
use crate::ids::AgentId;
use crate::store::{AgentLease, AgentState, Event, Store};

#[derive(Default)]
struct Inner {
    events: BTreeMap<AgentId, Vec<Event>>,
    backups: BTreeMap<String, Vec<u8>>,
    held: HashSet<AgentId>,
}

/// An in-memory [`Store`]. Cloning shares the same contents.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps half-updated (each method
        // does one insert/remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The raw event log of an agent (for tests).
    pub fn events(&self, agent: &AgentId) -> Vec<Event> {
        self.lock().events.get(agent).cloned().unwrap_or_default()
    }
}

struct MemoryLease {
    store: MemoryStore,
    agent: AgentId,
}

impl AgentLease for MemoryLease {}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        self.store.lock().held.remove(&self.agent);
    }
}

impl Store for MemoryStore {
    fn try_lock(&self, agent: &AgentId) -> Result<Option<Box<dyn AgentLease>>, Error> {
        if !self.lock().held.insert(agent.clone()) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemoryLease {
            store: self.clone(),
            agent: agent.clone(),
        })))
    }

    fn agents(&self) -> Result<Vec<AgentId>, Error> {
        Ok(self.lock().events.keys().cloned().collect())
    }

    fn load(&self, agent: &AgentId) -> Result<Option<Arc<AgentState>>, Error> {
        Ok(self
            .lock()
            .events
            .get(agent)
            .map(|events| Arc::new(AgentState::from_events(events))))
    }

    fn append(&self, agent: &AgentId, event: &Event) -> Result<(), Error> {
        self.lock()
            .events
            .entry(agent.clone())
            .or_default()
            .push(event.clone());
        Ok(())
    }

    fn write_backup(&self, _agent: &AgentId, path: &str, bytes: &[u8]) -> Result<(), Error> {
        match self.lock().backups.entry(path.to_owned()) {
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(Error::Store(format!("snapshot {path} already exists")))
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(bytes.to_vec());
                Ok(())
            }
        }
    }

    fn read_backup(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock().backups.get(path).cloned())
    }

    fn remove_backup(&self, path: &str) -> Result<(), Error> {
        self.lock().backups.remove(path);
        Ok(())
    }

    fn list_backups(&self, agent: &AgentId) -> Result<Vec<String>, Error> {
        let prefix = format!("backups/agents/{agent}/");
        Ok(self
            .lock()
            .backups
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect())
    }

    fn events_end(&self, agent: &AgentId) -> Result<u64, Error> {
        Ok(self.lock().events.get(agent).map_or(0, |e| e.len() as u64))
    }

    fn events_after(&self, agent: &AgentId, cursor: u64) -> Result<(Vec<Event>, u64), Error> {
        let inner = self.lock();
        let events = inner
            .events
            .get(agent)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let from = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(events.len());
        Ok((events[from..].to_vec(), events.len() as u64))
    }
}
