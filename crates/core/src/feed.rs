//! The registry's change feed: every event appended to any agent's log, by any process,
//! from the moment the feed starts.
//!
//! It is built on two [`Store`] methods only — [`Store::events_end`] (where a log ends now)
//! and [`Store::events_after`] (what was appended since) — so any store with a cursor over
//! its log can be followed. [`Follower::poll`] is one cheap round (for the file store: a
//! directory listing and one `stat` per agent; only the logs that grew are read, from
//! where the last round stopped). [`watch`] runs rounds on a thread and hands the changes
//! over a channel. A store that can push (inotify, PostgreSQL `LISTEN`) can later replace
//! the polling behind the same [`Watch`] without changing its consumers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::ids::{AgentId, DeploymentId};
use crate::store::{DeploymentRecord, Event, Store};

/// The default interval between two polling rounds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

/// One event of one agent, as the feed saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub agent_id: AgentId,
    pub event: Event,
    /// The record of the deployment the event is about, as the registry holds it after the
    /// round that saw the event (`None` while a deployment is only begun).
    pub record: Option<DeploymentRecord>,
    /// When it happened: the time the event records (a deployment's or rollback's start),
    /// else the feed's best bound — when it read the event, or the recorded time of the
    /// next event it read with it, if earlier.
    pub at: DateTime<Utc>,
}

impl Change {
    /// The deployment the event is about (for a rollback: the one rolled back).
    pub fn deployment_id(&self) -> &DeploymentId {
        match &self.event {
            Event::Begin(begin) => &begin.deployment_id,
            Event::Finish { deployment_id, .. } => deployment_id,
            Event::Rollback { from, .. } | Event::RollbackAbandoned { from } => from,
            Event::RollbackBegin(rb) => &rb.from,
        }
    }
}

/// Follows the registry from where it stands when created.
pub struct Follower {
    store: Arc<dyn Store>,
    only: Option<AgentId>,
    cursors: HashMap<AgentId, u64>,
    /// The last error seen per agent, so a broken log is logged once, not every round.
    failing: HashMap<AgentId, String>,
}

impl Follower {
    /// Starts at the current end of every log (of `only`, when given). Agents that appear
    /// later are followed from their first event.
    pub fn new(store: Arc<dyn Store>, only: Option<AgentId>) -> Result<Self, Error> {
        let mut follower = Self {
            store,
            only,
            cursors: HashMap::new(),
            failing: HashMap::new(),
        };
        for agent in follower.agents()? {
            let end = follower.store.events_end(&agent)?;
            follower.cursors.insert(agent, end);
        }
        Ok(follower)
    }

    fn agents(&self) -> Result<Vec<AgentId>, Error> {
        match &self.only {
            Some(agent) => Ok(vec![agent.clone()]),
            None => self.store.agents(),
        }
    }

    /// One round: the events appended since the last round, per agent in log order.
    /// A log that cannot be read is skipped (and logged once) until it can.
    pub fn poll(&mut self) -> Result<Vec<Change>, Error> {
        let mut changes = Vec::new();
        for agent in self.agents()? {
            let cursor = self.cursors.get(&agent).copied().unwrap_or(0);
            match self.store.events_after(&agent, cursor) {
                Ok((events, next)) => {
                    self.failing.remove(&agent);
                    self.cursors.insert(agent.clone(), next);
                    if !events.is_empty() {
                        self.describe(&agent, events, &mut changes);
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    if self.failing.get(&agent) != Some(&message) {
                        tracing::warn!(agent = %agent, error = %message, "change feed: cannot read the log");
                        self.failing.insert(agent, message);
                    }
                }
            }
        }
        Ok(changes)
    }

    fn describe(&self, agent: &AgentId, events: Vec<Event>, out: &mut Vec<Change>) {
        let state = self.store.load(agent).ok().flatten();
        let mut at = Utc::now();
        let mut described = Vec::with_capacity(events.len());
        // Backwards, so an event without a time of its own is bounded by the next one's.
        for event in events.into_iter().rev() {
            if let Some(recorded) = recorded_time(&event) {
                at = at.min(recorded);
            }
            let mut change = Change {
                agent_id: agent.clone(),
                at: recorded_time(&event).unwrap_or(at),
                event,
                record: None,
            };
            change.record = state
                .as_deref()
                .and_then(|s| s.get(change.deployment_id()))
                .cloned();
            described.push(change);
        }
        out.extend(described.into_iter().rev());
    }
}

fn recorded_time(event: &Event) -> Option<DateTime<Utc>> {
    match event {
        Event::Begin(begin) => Some(begin.timestamp),
        Event::RollbackBegin(rb) => Some(rb.timestamp),
        Event::Rollback { timestamp, .. } => Some(*timestamp),
        Event::Finish { at, .. } => *at,
        Event::RollbackAbandoned { .. } => None,
    }
}

/// A running feed: changes arrive on [`Watch::next`]; dropping it stops the thread.
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Change>,
}

impl Watch {
    /// The next change; `None` once the feed stopped (its store failed for good).
    pub async fn next(&mut self) -> Option<Change> {
        self.rx.recv().await
    }

    /// The next change, waiting in this thread (for callers without an async runtime).
    pub fn blocking_next(&mut self) -> Option<Change> {
        self.rx.blocking_recv()
    }
}

/// Follows the registry (every agent, or `only`) on a thread polling every `interval` (or
/// nine times as long as a round took, if longer: polling a registry of many agents stays
/// under a tenth of a core). The thread ends when the [`Watch`] is dropped.
pub fn watch(
    store: Arc<dyn Store>,
    only: Option<AgentId>,
    interval: Duration,
) -> Result<Watch, Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    follow(store, only, interval, move |change| match change {
        Some(change) => tx.blocking_send(change).is_ok(),
        None => !tx.is_closed(),
    })?;
    Ok(Watch { rx })
}

/// Like [`watch`], handing each change to `sink` on the polling thread, and `None` after a
/// round without changes (a liveness probe); the thread ends when `sink` returns `false`.
/// `sink` must not block for long: it delays the next round.
pub fn follow(
    store: Arc<dyn Store>,
    only: Option<AgentId>,
    interval: Duration,
    mut sink: impl FnMut(Option<Change>) -> bool + Send + 'static,
) -> Result<(), Error> {
    let mut follower = Follower::new(store, only)?;
    let mut pause = interval;
    std::thread::Builder::new()
        .name("bluegreen-feed".into())
        .spawn(move || loop {
            std::thread::sleep(pause);
            let started = std::time::Instant::now();
            let changes = match follower.poll() {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: cannot list the agents");
                    Vec::new()
                }
            };
            // A round costs about one stat per agent: on a large registry, wait long enough
            // that polling stays under a tenth of a core.
            pause = interval.max(started.elapsed() * 9);
            if changes.is_empty() && !sink(None) {
                return;
            }
            for change in changes {
                if !sink(Some(change)) {
                    return;
                }
            }
        })
        .map_err(|e| Error::io("starting the change feed thread", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlueGreenService, MemoryStore};

    #[tokio::test]
    async fn a_follower_sees_only_what_happens_after_it_starts() {
        let root = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let service = BlueGreenService::builder(root.path())
            .store_arc(store.clone())
            .build()
            .unwrap();
        service
            .deploy_hot_swap("a", b"x = 1\n", "a.py")
            .await
            .unwrap();
        let mut follower = Follower::new(store.clone(), None).unwrap();
        assert!(follower.poll().unwrap().is_empty());
        let v2 = service
            .deploy_hot_swap("a", b"x = 2\n", "a.py")
            .await
            .unwrap();
        service
            .deploy_hot_swap("b", b"y = 1\n", "b.py")
            .await
            .unwrap();
        let changes = follower.poll().unwrap();
        let kinds: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| {
                let kind = match &c.event {
                    Event::Begin(_) => "begin",
                    Event::Finish { .. } => "finish",
                    _ => "other",
                };
                (c.agent_id.as_str(), kind)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", "begin"),
                ("a", "finish"),
                ("b", "begin"),
                ("b", "finish")
            ]
        );
        assert_eq!(changes[1].deployment_id(), &v2.deployment_id);
        assert_eq!(changes[1].record.as_ref().unwrap().sha256, v2.meta.sha256);
        assert!(follower.poll().unwrap().is_empty());

        let mut only_b = Follower::new(store, Some(AgentId::new("b").unwrap())).unwrap();
        service
            .deploy_hot_swap("a", b"x = 3\n", "a.py")
            .await
            .unwrap();
        assert!(only_b.poll().unwrap().is_empty());
    }
}
