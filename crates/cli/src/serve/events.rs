//! `GET /api/v1/events`: the change feed as Server-Sent Events.
//!
//! One feed thread per server (`bluegreen_core::feed::follow`) publishes every registry
//! event into an [`EventHub`]: a ring of the last [`RING`] events (for `Last-Event-ID`) and a
//! tokio broadcast channel. Publishing never waits for a subscriber, so deployments never
//! do. Each subscriber reads the broadcast at its own pace, with room for [`QUEUE`] events;
//! one that falls further behind (it stopped reading) is dropped: its stream ends with a
//! comment saying so, and it may reconnect with `Last-Event-ID`.
//!
//! Event ids are `<server epoch>-<sequence>`. A `Last-Event-ID` of this server resumes right
//! after that event (from the ring); one the ring no longer holds, or from another server
//! run, starts from now, announced by a comment event. Subscribers are capped
//! (`--max-subscribers`, 503 past it); on shutdown every stream ends so the server can.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bluegreen_core::feed::{self, Change};
use bluegreen_core::{AgentId, Store};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

use super::{ApiError, AppState};

/// Events kept for `Last-Event-ID` resumption.
pub const RING: usize = 1024;
/// Events a subscriber may fall behind before it is dropped.
pub const QUEUE: usize = 256;
/// Default cap on concurrent subscribers.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 64;
/// Keep-alive comments on an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct Item {
    seq: u64,
    agent_id: AgentId,
    data: String,
}

#[derive(Default)]
struct Ring {
    items: VecDeque<Arc<Item>>,
    next: u64,
}

/// The server's change feed and its subscribers.
pub struct EventHub {
    epoch: String,
    tx: broadcast::Sender<Arc<Item>>,
    ring: Mutex<Ring>,
    permits: Arc<Semaphore>,
    max: AtomicUsize,
    closed: watch::Sender<bool>,
    published: AtomicU64,
    dropped: AtomicU64,
    /// Why there is no feed (the store cannot be followed), if so.
    unavailable: Mutex<Option<String>>,
}

impl EventHub {
    /// A hub fed by a thread following `store` (it stops when the hub is dropped).
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(QUEUE);
        let hub = Arc::new(Self {
            epoch: format!("{:x}", chrono::Utc::now().timestamp_millis()),
            tx,
            ring: Mutex::new(Ring::default()),
            permits: Arc::new(Semaphore::new(DEFAULT_MAX_SUBSCRIBERS)),
            max: AtomicUsize::new(DEFAULT_MAX_SUBSCRIBERS),
            closed: watch::Sender::new(false),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unavailable: Mutex::new(None),
        });
        let weak: Weak<Self> = Arc::downgrade(&hub);
        let started = feed::follow(store, None, feed::DEFAULT_INTERVAL, move |change| {
            let Some(hub) = weak.upgrade() else {
                return false;
            };
            if let Some(change) = change {
                hub.publish(&change);
            }
            true
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "no change feed: GET /api/v1/events answers 503");
            *lock(&hub.unavailable) = Some(e.to_string());
        }
        hub
    }

    /// Sets the cap on concurrent subscribers (before any subscribe).
    pub fn set_max_subscribers(&self, max: usize) {
        let old = self.max.swap(max, Ordering::AcqRel);
        if max > old {
            self.permits.add_permits(max - old);
        } else {
            self.permits.forget_permits(old - max);
        }
    }

    /// Ends every stream (shutdown) and refuses new ones.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn publish(&self, change: &Change) {
        let data = crate::inspect::feed::document(change).to_string();
        let mut ring = lock(&self.ring);
        let item = Arc::new(Item {
            seq: ring.next,
            agent_id: change.agent_id.clone(),
            data,
        });
        ring.next += 1;
        if ring.items.len() == RING {
            ring.items.pop_front();
        }
        ring.items.push_back(item.clone());
        // No receivers is fine; a full receiver is overwritten, never waited for.
        let _ = self.tx.send(item);
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// A receiver and what to replay before it, atomically (no event twice, none lost).
    fn subscribe(
        &self,
        last: Option<&str>,
    ) -> (
        broadcast::Receiver<Arc<Item>>,
        Vec<Arc<Item>>,
        Option<String>,
    ) {
        let ring = lock(&self.ring);
        let rx = self.tx.subscribe();
        let Some(last) = last else {
            return (rx, Vec::new(), None);
        };
        let resumed = last
            .strip_prefix(&self.epoch)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|seq| seq.parse::<u64>().ok())
            .filter(|seq| *seq < ring.next);
        let oldest = ring.items.front().map_or(ring.next, |i| i.seq);
        match resumed {
            Some(seq) if seq + 1 >= oldest => {
                let backlog = ring.items.iter().filter(|i| i.seq > seq).cloned().collect();
                (rx, backlog, None)
            }
            Some(_) => (rx, Vec::new(), Some(format!("Last-Event-ID {last} is older than the {RING} events kept: events were missed; starting from now"))),
            None => (rx, Vec::new(), Some(format!("Last-Event-ID {last} is not of this server run: starting from now"))),
        }
    }

    fn sse_event(&self, item: &Item) -> SseEvent {
        SseEvent::default()
            .id(format!("{}-{}", self.epoch, item.seq))
            .data(&item.data)
    }

    /// `bluegreen_event_*` lines for `/metrics`.
    pub fn metrics(&self) -> String {
        let max = self.max.load(Ordering::Acquire);
        let connected = max.saturating_sub(self.permits.available_permits());
        format!(
            "# HELP bluegreen_event_subscribers Connected event stream subscribers.\n\
             # TYPE bluegreen_event_subscribers gauge\n\
             bluegreen_event_subscribers {connected}\n\
             # HELP bluegreen_event_subscribers_dropped_total Subscribers dropped for falling behind.\n\
             # TYPE bluegreen_event_subscribers_dropped_total counter\n\
             bluegreen_event_subscribers_dropped_total {}\n\
             # HELP bluegreen_events_published_total Registry events published to subscribers.\n\
             # TYPE bluegreen_events_published_total counter\n\
             bluegreen_events_published_total {}\n",
            self.dropped.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Deserialize)]
pub struct EventsQuery {
    agent_id: Option<String>,
}

/// What a subscriber's stream holds between two events.
struct Subscriber {
    hub: Arc<EventHub>,
    rx: broadcast::Receiver<Arc<Item>>,
    pending: VecDeque<SseEvent>,
    only: Option<String>,
    closed: watch::Receiver<bool>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Subscriber {
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let received = tokio::select! {
                received = self.rx.recv() => received,
                _ = self.closed.wait_for(|c| *c) => {
                    self.done = true;
                    self.pending.push_back(SseEvent::default().comment("server shutting down"));
                    continue;
                }
            };
            match received {
                Ok(item)
                    if self
                        .only
                        .as_deref()
                        .is_none_or(|a| a == item.agent_id.as_str()) =>
                {
                    return Some((Ok(self.hub.sse_event(&item)), self));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.hub.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(missed, "dropping an event subscriber that fell behind");
                    self.done = true;
                    self.pending.push_back(SseEvent::default().comment(format!(
                        "dropped: this subscriber fell {missed} events behind; reconnect with Last-Event-ID"
                    )));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// `GET /api/v1/events[?agent_id=ID]`.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let hub = state.events.clone();
    if let Some(why) = lock(&hub.unavailable).clone() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "io",
            format!("no change feed: {why}"),
        )
        .into_response();
    }
    if *hub.closed.borrow() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "io",
            "the server is shutting down",
        )
        .into_response();
    }
    let Ok(permit) = hub.permits.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!(
                "already {} event subscribers (--max-subscribers); retry later",
                hub.max.load(Ordering::Acquire)
            ),
        )
        .into_response();
    };
    let only = query
        .ok()
        .and_then(|Query(q)| q.agent_id)
        .filter(|a| !a.is_empty());
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (rx, backlog, notice) = hub.subscribe(last);
    let mut pending: VecDeque<SseEvent> = notice
        .map(|n| SseEvent::default().comment(n))
        .into_iter()
        .collect();
    pending.extend(
        backlog
            .iter()
            .filter(|i| only.as_deref().is_none_or(|a| a == i.agent_id.as_str()))
            .map(|i| hub.sse_event(i)),
    );
    let subscriber = Subscriber {
        closed: hub.closed.subscribe(),
        hub,
        rx,
        pending,
        only,
        done: false,
        _permit: permit,
    };
    let stream = stream::unfold(subscriber, Subscriber::next);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::{BlueGreenService, MemoryStore};
    use futures_util::StreamExt as _;

    /// A subscriber that never reads is overtaken, never waited for: publishing 4× its
    /// queue returns at once, and when the subscriber is polled again it is told it was
    /// dropped and its stream ends.
    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_dropped_and_never_waited_for() {
        let root = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let service = BlueGreenService::builder(root.path())
            .store_arc(store.clone())
            .build()
            .unwrap();
        let hub = EventHub::start(store.clone());
        let (rx, backlog, notice) = hub.subscribe(None);
        assert!(backlog.is_empty() && notice.is_none());
        let subscriber = Subscriber {
            closed: hub.closed.subscribe(),
            hub: hub.clone(),
            rx,
            pending: VecDeque::new(),
            only: None,
            done: false,
            _permit: hub.permits.clone().try_acquire_owned().unwrap(),
        };
        service
            .deploy_hot_swap("a", b"x = 0\n", "a.py")
            .await
            .unwrap();
        let change = Change {
            agent_id: AgentId::new("a").unwrap(),
            event: store.events(&AgentId::new("a").unwrap())[0].clone(),
            record: None,
            at: chrono::Utc::now(),
        };
        for _ in 0..4 * QUEUE {
            hub.publish(&change);
        }
        let items: Vec<_> = stream::unfold(subscriber, Subscriber::next)
            .collect::<Vec<_>>()
            .await;
        assert_eq!(items.len(), 1, "only the notice, then the end");
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(hub.permits.available_permits(), DEFAULT_MAX_SUBSCRIBERS);
    }
}
