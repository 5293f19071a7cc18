//! Deployments and rollbacks run detached from the request that started them.
//!
//! Why: axum drops a handler's future when the client disconnects. Dropping a deployment
//! halfway leaves a staged file and a pending journal entry until recovery; a client
//! hanging up is no reason for that. So each operation runs on its own blocking thread
//! (the core does synchronous fsyncs, which would otherwise stall the async workers) and
//! is counted here, so shutdown can wait for it — or, past the grace period, cancel it and
//! let recovery clean up.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tracing::Instrument as _;

/// Counts running operations and can cancel them.
pub struct Work {
    running: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
}

impl Default for Work {
    fn default() -> Self {
        Self {
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            cancel: watch::Sender::new(false),
        }
    }
}

/// Decrements the count when the operation ends, however it ends.
struct Running(Arc<Work>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Work {
    /// Operations running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Runs `op` to completion even if the caller stops waiting. `None` when it was
    /// cancelled by [`Work::cancel_all`] (or its thread panicked).
    pub async fn run<T, F>(self: &Arc<Self>, op: F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.clone());
        let mut cancel = self.cancel.subscribe();
        let handle = tokio::runtime::Handle::current();
        let op = op.instrument(tracing::Span::current());
        let joined = tokio::task::spawn_blocking(move || {
            let _running = running;
            handle.block_on(async move {
                tokio::select! {
                    biased;
                    result = op => Some(result),
                    // Dropping `op` cancels it at its current await point.
                    Ok(_) = cancel.wait_for(|cancelled| *cancelled) => None,
                }
            })
        })
        .await;
        joined.ok().flatten()
    }

    /// Waits until no operation is running.
    pub async fn wait_idle(&self) {
        loop {
            // Created before the check so a notification in between is not missed.
            let idle = self.idle.notified();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Cancels every running operation (and any started later).
    pub fn cancel_all(&self) {
        self.cancel.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_operation_finishes_when_its_caller_gives_up() {
        let work = Arc::new(Work::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let caller = {
            let work = work.clone();
            tokio::spawn(async move {
                work.run(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx.send(42);
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(work.running(), 1);
        caller.abort();
        assert_eq!(rx.await.unwrap(), 42);
        work.wait_idle().await;
        assert_eq!(work.running(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_all_drops_running_operations() {
        let work = Arc::new(Work::default());
        let task = {
            let work = work.clone();
            tokio::spawn(async move {
                work.run(async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    1
                })
                .await
            })
        };
        while work.running() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        work.cancel_all();
        assert_eq!(task.await.unwrap(), None);
        work.wait_idle().await;
        assert_eq!(work.running(), 0);
    }
}
