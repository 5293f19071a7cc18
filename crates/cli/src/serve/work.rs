//! Deployments and rollbacks run detached from the request that started them.
//!
//! Why: axum drops a handler's future when the client disconnects. Dropping a deployment
//! halfway leaves a staged file and a pending journal entry until recovery; a client
//! hanging up is no reason for that. So each operation runs on its own blocking thread
//! (the core does synchronous fsyncs, which would otherwise stall the async workers) and
//! is counted here, so shutdown can wait for it — or, past the grace period, cancel it and
//! let recovery clean up.
//!
//! At most a fixed number of operations run at once (their chains are the expensive part: a
//! syntax check of 8 MiB holds a core and hundreds of MiB for about a second, a startup check
//! a process). Others wait their turn in FIFO order, up to a bound (the service's lock
//! timeout); past it they get a conflict, like a lock wait that timed out.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

/// Counts running operations and can cancel them.
pub struct Work {
    running: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
    /// Turns to run, one per operation running.
    slots: Arc<Semaphore>,
    max_running: usize,
}

impl Default for Work {
    fn default() -> Self {
        Self::new(Semaphore::MAX_PERMITS)
    }
}

/// No turn came within the wait bound.
#[derive(Debug)]
pub struct Busy {
    pub max_running: usize,
    pub waited: Duration,
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
    /// At most `max_running` operations at once (at least one).
    pub fn new(max_running: usize) -> Self {
        let max_running = max_running.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            running: AtomicUsize::new(0),
            idle: Notify::new(),
            cancel: watch::Sender::new(false),
            slots: Arc::new(Semaphore::new(max_running)),
            max_running,
        }
    }

    /// [`Work::run`] once a turn is free, waiting for one at most `wait`.
    pub async fn run_bounded<T, F>(
        self: &Arc<Self>,
        wait: Duration,
        op: F,
    ) -> Result<Option<T>, Busy>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let busy = || Busy {
            max_running: self.max_running,
            waited: wait,
        };
        let slot = tokio::time::timeout(wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        // The turn goes with the operation, which may outlive this call.
        Ok(self.run_holding(op, Some(slot)).await)
    }

    /// Operations running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Runs `op` to completion even if the caller stops waiting. `None` when it was
    /// cancelled by [`Work::cancel_all`] (or its thread panicked).
    #[cfg(test)]
    pub async fn run<T, F>(self: &Arc<Self>, op: F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.run_holding(op, None).await
    }

    async fn run_holding<T, F>(
        self: &Arc<Self>,
        op: F,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Option<T>
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
            let _slot = slot;
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
