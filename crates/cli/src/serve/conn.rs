//! Connections: the accept loop with a connection cap, per-connection timeouts, and a
//! shutdown that does not wait for stalled clients.
//!
//! - **Cap**: at most `max_connections` connections are served at once. One more is
//!   accepted, answered `503` (`Connection: close`, written without waiting) and closed at
//!   once, so it neither waits in the backlog nor holds a task.
//! - **Header read timeout**: a request's head must be complete within `header_read_timeout`
//!   of the connection's start, or of the first byte of a later request on it.
//! - **Idle timeout**: a keep-alive connection with no new request for `idle_timeout` is
//!   closed; so is one whose request body, or whose reading of the response, makes no
//!   progress for that long. While a request is being handled (a deployment may verify for
//!   minutes) its connection is never timed out.
//! - **Shutdown**: stop accepting; connections with no request in flight are closed at once
//!   (however far their client got with a head); the others finish their response and close.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// Default [`ConnLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ConnLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ConnLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How long and how many connections the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The answer to a connection over the cap.
fn over_capacity() -> Vec<u8> {
    let body = r#"{"status":"failed","error":"too many connections: the server is at its connection cap; retry later","error_kind":"io","exit_code":4}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a connection's service and its I/O share.
#[derive(Default)]
struct ConnState {
    /// Requests being handled now.
    busy: AtomicUsize,
    /// Requests started so far.
    started: AtomicU64,
    /// The connection's task, parked on a read while a request was handled: hyper does not
    /// read again after answering until woken, and the idle timeout starts with that read.
    parked_read: Mutex<Option<Waker>>,
}

/// Marks a request in flight on its connection while alive.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(state: &Arc<ConnState>) -> Self {
        state.busy.fetch_add(1, Ordering::AcqRel);
        state.started.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            let parked = self
                .0
                .parked_read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(waker) = parked {
                waker.wake();
            }
        }
    }
}

/// Serves `app` on `listener` until `draining` turns true, then closes idle connections,
/// lets busy ones finish their response, and returns when none is left.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    mut draining: watch::Receiver<bool>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut conns: Conns = HashMap::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of descriptors or a connection reset before accept: keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    refuse(stream);
                    continue;
                };
                let state = Arc::new(ConnState::default());
                let conn = graceful.watch(connection(stream, app.clone(), limits, state.clone()));
                let handle = tasks.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
                conns.insert(handle.id(), (state, handle));
            }
            Some(done) = tasks.join_next_with_id() => {
                conns.remove(&done.map_or_else(|e| e.id(), |(id, ())| id));
            }
            () = async { let _ = draining.wait_for(|d| *d).await; } => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = conns.len(),
        "draining: closing idle connections, finishing busy ones"
    );
    // The graceful watcher makes busy connections close after their response; idle ones
    // (nothing in flight, whatever their client is doing) are closed now.
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    abort_idle(&conns);
    loop {
        tokio::select! {
            () = &mut all_closed => break,
            Some(done) = tasks.join_next_with_id() => {
                conns.remove(&done.map_or_else(|e| e.id(), |(id, ())| id));
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => abort_idle(&conns),
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

type Conns = HashMap<tokio::task::Id, (Arc<ConnState>, tokio::task::AbortHandle)>;

/// Aborts every connection task with no request in flight.
fn abort_idle(conns: &Conns) {
    for (state, handle) in conns.values() {
        if state.busy.load(Ordering::Acquire) == 0 {
            handle.abort();
        }
    }
}

/// Over the cap: a 503 if the socket takes it right away, then close.
fn refuse(stream: TcpStream) {
    tracing::warn!("connection cap reached: refusing a connection");
    let _ = stream.try_write(&over_capacity());
    drop(stream);
}

/// One HTTP/1.1 connection with its timeouts.
fn connection(
    stream: TcpStream,
    app: Router,
    limits: ConnLimits,
    state: Arc<ConnState>,
) -> hyper::server::conn::http1::Connection<
    TokioIo<TimedIo>,
    impl hyper::service::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
                         + Send,
        > + Send,
> {
    let idle = limits.idle_timeout;
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = InFlight::enter(&service_state);
        let req = req.map(|body| Body::new(TimedBody::new(body, idle)));
        let mut app = app.clone();
        async move {
            let _in_flight = in_flight;
            tower_service::Service::call(&mut app, req).await
        }
    });
    let io = TimedIo::new(stream, limits, state);
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
}

/// The socket, with the header read and idle timeouts applied to it.
struct TimedIo {
    inner: TcpStream,
    limits: ConnLimits,
    state: Arc<ConnState>,
    /// Requests started when the current wait for a request began.
    seen: u64,
    /// Bytes of the next request have arrived (the header read timeout runs).
    reading_head: bool,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Pin<Box<Sleep>>,
    write_armed: bool,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl TimedIo {
    fn new(inner: TcpStream, limits: ConnLimits, state: Arc<ConnState>) -> Self {
        let now = Instant::now();
        Self {
            inner,
            limits,
            state,
            seen: 0,
            // The first request's head is due within the header timeout of the connection.
            reading_head: true,
            read_deadline: Box::pin(tokio::time::sleep_until(now + limits.header_read_timeout)),
            write_deadline: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            write_armed: false,
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.busy.load(Ordering::Acquire) > 0 {
            // A request is being handled: its body has its own timeout, the handler none.
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if polled.is_pending() {
                *this
                    .state
                    .parked_read
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            }
            return polled;
        }
        let started = this.state.started.load(Ordering::Acquire);
        if started != this.seen {
            // The previous request is done: wait for the next one, up to the idle timeout.
            this.seen = started;
            this.reading_head = false;
            let deadline = Instant::now() + this.limits.idle_timeout;
            this.read_deadline.as_mut().reset(deadline);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !this.reading_head {
                    this.reading_head = true;
                    let deadline = Instant::now() + this.limits.header_read_timeout;
                    this.read_deadline.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(this.read_deadline.as_mut().poll(cx));
                Poll::Ready(Err(timed_out(if this.reading_head {
                    "request head not received within the header read timeout"
                } else {
                    "keep-alive connection idle"
                })))
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => {
                if !this.write_armed {
                    this.write_armed = true;
                    let deadline = Instant::now() + this.limits.idle_timeout;
                    this.write_deadline.as_mut().reset(deadline);
                }
                ready!(this.write_deadline.as_mut().poll(cx));
                Poll::Ready(Err(timed_out("the client stopped reading the response")))
            }
            ready => {
                this.write_armed = false;
                ready
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that fails when no data arrives for the idle timeout.
struct TimedBody {
    inner: Incoming,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    armed: bool,
}

impl TimedBody {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            armed: false,
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    let deadline = Instant::now() + this.idle;
                    this.deadline.as_mut().reset(deadline);
                }
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(timed_out(
                    "the request body stalled past the idle timeout",
                )))))
            }
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
