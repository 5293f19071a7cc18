//! `bluegreen serve`: the HTTP API of CONTRACT.md on axum/tokio, sharing one
//! [`BlueGreenService`] (and so its per-agent locks) with the CLI code paths.
//!
//! - Every route but `/healthz` needs `Authorization: Bearer <token>`; the token is compared
//!   in constant time (as SHA-256 digests, so its length does not leak either).
//! - Deployments and rollbacks run detached from their request ([`work`]): a client that
//!   hangs up does not cut a deployment short.
//! - Connections ([`conn`]): a cap, header-read and idle timeouts; at most
//!   `max_operations` deployments/rollbacks run at once ([`work`]); error bodies pass a path
//!   redaction ([`redact`]).
//! - SIGTERM/SIGINT: stop accepting, close connections with nothing in flight at once, let
//!   in-flight operations finish within the grace period, exit 0. A second signal (or the grace running out) cancels what is still
//!   running and runs recovery before returning, so no agent is left half-deployed.

pub mod conn;
mod dashboard;
pub mod events;
mod handlers;
mod inspect;
pub mod metrics;
mod redact;
mod work;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{HeaderValue, AUTHORIZATION};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bluegreen_core::{BlueGreenService, Limits};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

pub use conn::ConnLimits;
pub use handlers::ApiError;
use metrics::Metrics;
use work::Work;

/// The environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "BLUEGREEN_TOKEN";

/// Default time in-flight deployments get to finish after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How `bluegreen serve` runs.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// The bearer token every request but `/healthz` must present; see [`resolve_token`].
    pub token: Option<String>,
    /// Allows running without a token, only on a loopback address.
    pub insecure_loopback: bool,
    /// Largest request body; `0` means [`default_max_body_bytes`] of the service's limits.
    pub max_body_bytes: usize,
    /// How long in-flight deployments may run after the first SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Connection cap and timeouts.
    pub conn_limits: ConnLimits,
    /// Deployments and rollbacks running at once; more wait (FIFO) up to the lock timeout.
    /// `0` means [`default_max_operations`].
    pub max_operations: usize,
    /// Most concurrent `GET /api/v1/events` subscribers (503 past it).
    pub max_event_subscribers: usize,
    /// Print `listening on http://ADDR` on stdout too (always on stderr). Off with `--json`,
    /// whose stdout holds exactly one document (written when the server stops).
    pub announce_on_stdout: bool,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("insecure_loopback", &self.insecure_loopback)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("conn_limits", &self.conn_limits)
            .field("max_operations", &self.max_operations)
            .field("announce_on_stdout", &self.announce_on_stdout)
            .field("max_event_subscribers", &self.max_event_subscribers)
            .finish()
    }
}

impl ServeOptions {
    /// Options with the defaults: no token, body limit from the service, 30 s grace.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            token: None,
            insecure_loopback: false,
            max_body_bytes: 0,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            conn_limits: ConnLimits::default(),
            max_operations: 0,
            announce_on_stdout: true,
            max_event_subscribers: events::DEFAULT_MAX_SUBSCRIBERS,
        }
    }
}

/// The body limit that fits the largest accepted code plus JSON escaping overhead:
/// `2 × max_code_bytes + 64 KiB`.
pub fn default_max_body_bytes(limits: Limits) -> usize {
    limits
        .max_code_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

/// Deployments and rollbacks run at once by default: twice the cores (a chain mostly
/// waits on subprocesses; a syntax check of 8 MiB takes one core for about a second).
pub fn default_max_operations() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

/// Why the server did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to serve on {0} without a token: set {TOKEN_ENV} or --token-file (or use --insecure-loopback on a loopback address)")]
    NoToken(SocketAddr),
    #[error(
        "--insecure-loopback needs a loopback address, not {0}; set {TOKEN_ENV} or --token-file"
    )]
    NotLoopback(SocketAddr),
    #[error("reading the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token {0} is empty")]
    EmptyToken(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("installing the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error("{running} operation(s) still running after the shutdown grace of {grace:?}: cancelled them and ran recovery")]
    GraceExpired { grace: Duration, running: usize },
    #[error("second {0}: cancelled the running operations and ran recovery")]
    Aborted(&'static str),
}

impl ServeError {
    /// The CLI exit code for this error: 2 for configuration/usage, 4 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::NoToken(_)
            | ServeError::NotLoopback(_)
            | ServeError::EmptyToken(_)
            | ServeError::TokenFile { .. } => crate::exit::BAD_INPUT,
            _ => crate::exit::IO,
        }
    }
}

/// The token: the contents of `token_file` when given (surrounding whitespace trimmed),
/// else `BLUEGREEN_TOKEN` when set and not empty, else `None`.
pub fn resolve_token(token_file: Option<&Path>) -> Result<Option<String>, ServeError> {
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::TokenFile {
            path: path.to_owned(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ServeError::EmptyToken(format!("in {}", path.display())));
        }
        return Ok(Some(token.to_owned()));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
        Ok(_) => Err(ServeError::EmptyToken(format!("in {TOKEN_ENV}"))),
        Err(_) => Ok(None),
    }
}

/// Refuses an open server anywhere but on loopback with `--insecure-loopback`.
pub fn check_exposure(
    addr: SocketAddr,
    token: Option<&str>,
    insecure_loopback: bool,
) -> Result<(), ServeError> {
    if token.is_some() {
        return Ok(());
    }
    if !insecure_loopback {
        return Err(ServeError::NoToken(addr));
    }
    if !addr.ip().to_canonical().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    Ok(())
}

/// What every request shares.
#[derive(Clone)]
pub struct AppState {
    service: BlueGreenService,
    token: Option<Arc<[u8; 32]>>,
    metrics: Arc<Metrics>,
    work: Arc<Work>,
    max_body_bytes: usize,
    events: Arc<events::EventHub>,
}

impl AppState {
    /// `max_body_bytes == 0` means [`default_max_body_bytes`].
    pub fn new(service: BlueGreenService, token: Option<&str>, max_body_bytes: usize) -> Self {
        let max_body_bytes = if max_body_bytes == 0 {
            default_max_body_bytes(service.limits())
        } else {
            max_body_bytes
        };
        Self {
            token: token.map(|t| Arc::new(Sha256::digest(t.as_bytes()).into())),
            events: events::EventHub::start(service.store().clone()),
            service,
            metrics: Arc::new(Metrics::default()),
            work: Arc::new(Work::default()),
            max_body_bytes,
        }
    }

    /// At most `max` deployments and rollbacks at once (`0`: [`default_max_operations`]).
    pub fn with_max_operations(mut self, max: usize) -> Self {
        let max = if max == 0 {
            default_max_operations()
        } else {
            max
        };
        self.work = Arc::new(Work::new(max));
        self
    }

    /// Deployments and rollbacks running now.
    pub fn running(&self) -> usize {
        self.work.running()
    }
}

/// The routes with authentication, body limit and request ids.
pub fn router(state: AppState) -> Router {
    // A rollback body names a path and an id: one over the code limit is refused as such.
    let rollback_body = state
        .service
        .limits()
        .max_code_bytes
        .max(4096)
        .min(state.max_body_bytes);
    let protected = Router::new()
        .route("/api/v1/dev/hotswap", post(handlers::hotswap))
        .route("/api/v1/agents", get(handlers::status))
        .route("/api/v1/agents/{agent_id}", get(handlers::agent_status))
        .route(
            "/api/v1/agents/{agent_id}/deployments",
            post(handlers::create_deployment),
        )
        .route(
            "/api/v1/agents/{agent_id}/rollback",
            post(handlers::rollback).layer(DefaultBodyLimit::max(rollback_body)),
        )
        .route("/api/v1/agents/{agent_id}/history", get(handlers::history))
        .route(
            "/api/v1/agents/{agent_id}/deployments/{deployment_id}/code",
            get(inspect::code),
        )
        .route("/api/v1/agents/{agent_id}/diff", get(inspect::diff))
        .route("/api/v1/events", get(events::events))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/", get(dashboard::page))
        .merge(protected)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        // Outermost: every error body, whoever wrote it, passes the path redaction.
        .layer(middleware::from_fn_with_state(
            redact::RootForms::new(state.service.root()),
            redact::redact_errors,
        ))
        .with_state(state)
}

/// `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.token {
        let presented = req.headers().get(AUTHORIZATION).and_then(bearer);
        let ok = presented.is_some_and(|token| {
            let digest: [u8; 32] = Sha256::digest(token).into();
            bool::from(digest.ct_eq(&expected[..]))
        });
        if !ok {
            tracing::warn!("rejected a request without a valid bearer token");
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// A request id (the client's `x-request-id` when sane, else a fresh UUIDv7) on every log
/// line of the request and echoed in the response.
async fn request_id(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    // At error level so the id is on every log line whatever the verbosity filter.
    let span = tracing::error_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    state.metrics.request(status);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "answered");
        } else {
            tracing::info!(status, elapsed_ms, "answered");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Binds `options.listen`, announces the address, serves until SIGTERM/SIGINT and returns
/// after a graceful shutdown.
///
/// On startup prints `listening on http://ADDR` (the bound address, so port 0 works) as one
/// line on stdout and on stderr.
pub async fn run(service: BlueGreenService, options: ServeOptions) -> Result<(), ServeError> {
    check_exposure(
        options.listen,
        options.token.as_deref(),
        options.insecure_loopback,
    )?;
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
    let signals = os_signals()?;
    serve(listener, service, options, signals).await
}

/// Forwards SIGTERM and SIGINT, by name, into a channel [`serve`] listens on.
pub fn os_signals() -> Result<mpsc::Receiver<&'static str>, ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => break,
            };
            if tx.send(name).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Serves on an already bound listener until the first message on `signals` (a signal
/// name), then shuts down gracefully; a second message, or `shutdown_grace` running out,
/// cancels the operations still running and runs recovery.
///
/// ```
/// # #[tokio::main] async fn main() {
/// use bluegreen::serve::{serve, ServeOptions};
///
/// let root = tempfile::tempdir().unwrap();
/// let service = bluegreen_core::BlueGreenService::builder(root.path()).build().unwrap();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let mut options = ServeOptions::new(listener.local_addr().unwrap());
/// options.token = Some("a-long-random-token-0123".into());
/// let (stop, signals) = tokio::sync::mpsc::channel(1);
/// let server = tokio::spawn(serve(listener, service, options, signals));
/// stop.send("SIGTERM").await.unwrap();
/// server.await.unwrap().unwrap(); // nothing was running: a clean stop
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    service: BlueGreenService,
    options: ServeOptions,
    mut signals: mpsc::Receiver<&'static str>,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Server)?;
    check_exposure(addr, options.token.as_deref(), options.insecure_loopback)?;
    recover(&service).await;
    if options.token.as_deref().is_some_and(|t| t.len() < 16) {
        tracing::warn!("the bearer token is shorter than 16 characters; use a long random one");
    }

    let state = AppState::new(
        service.clone(),
        options.token.as_deref(),
        options.max_body_bytes,
    )
    .with_max_operations(options.max_operations);
    state
        .events
        .set_max_subscribers(options.max_event_subscribers);
    let app = router(state.clone());
    let (drain, draining) = watch::channel(false);
    let server = conn::serve_connections(listener, app, options.conn_limits, draining);
    let mut server = tokio::spawn(server);

    announce(addr, options.token.is_some(), options.announce_on_stdout);

    // Serving: until the first signal (or the server failing on its own).
    let first = tokio::select! {
        joined = &mut server => return server_result(joined),
        Some(name) = signals.recv() => name,
    };
    tracing::info!(
        signal = first,
        running = state.running(),
        grace_ms = options.shutdown_grace.as_millis() as u64,
        "shutting down: no new connections; waiting for running operations"
    );
    eprintln!(
        "bluegreen serve: {first} received, draining ({} running)",
        state.running()
    );
    drain.send_replace(true);
    state.events.close(); // event streams never end on their own

    // Draining: the server finishes its connections and the detached operations finish.
    let deadline = tokio::time::Instant::now() + options.shutdown_grace;
    let failure = tokio::select! {
        joined = async {
            let joined = (&mut server).await;
            state.work.wait_idle().await;
            joined
        } => {
            tracing::info!("shutdown complete");
            return server_result(joined);
        }
        () = tokio::time::sleep_until(deadline) => {
            if state.running() == 0 {
                // Nothing runs any more; only connections whose clients stall are left.
                tracing::warn!("closing the connections still open at the end of the grace");
                server.abort();
                return Ok(());
            }
            ServeError::GraceExpired {
                grace: options.shutdown_grace,
                running: state.running(),
            }
        }
        Some(name) = signals.recv() => ServeError::Aborted(name),
    };

    // Aborting: cancel what runs, wait briefly for it to drop, then repair what it left.
    tracing::warn!(error = %failure, "aborting the running operations");
    state.work.cancel_all();
    if tokio::time::timeout(Duration::from_secs(5), state.work.wait_idle())
        .await
        .is_err()
    {
        tracing::error!(
            running = state.running(),
            "operations did not stop; the next start recovers them"
        );
    }
    server.abort();
    recover(&service).await;
    Err(failure)
}

fn server_result(
    joined: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    match joined {
        Ok(result) => result.map_err(ServeError::Server),
        Err(e) => Err(ServeError::Server(std::io::Error::other(e.to_string()))),
    }
}

fn announce(addr: SocketAddr, authenticated: bool, on_stdout: bool) {
    use std::io::Write as _;
    let line = format!("listening on http://{addr}");
    if on_stdout {
        let mut stdout = std::io::stdout().lock();
        // Tests and supervisors read this line to learn the port; a closed stdout is no
        // reason to stop serving.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
    eprintln!(
        "bluegreen serve: {line}{}",
        if authenticated {
            ""
        } else {
            " (no token: loopback only)"
        }
    );
}

/// Repairs what a crash or a cancelled operation left; failures are logged, not fatal
/// (every operation recovers its agent first anyway).
async fn recover(service: &BlueGreenService) {
    match service.recover().await {
        Ok(report) => {
            for action in &report.actions {
                tracing::warn!(agent = %action.agent_id, action = %action.action, "recovered");
            }
        }
        Err(e) => tracing::error!(error = %e, "recovery failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_accepts_any_scheme_case_and_trims() {
        assert_eq!(
            bearer(&HeaderValue::from_static("Bearer abc")),
            Some(&b"abc"[..])
        );
        assert_eq!(
            bearer(&HeaderValue::from_static("bearer  abc ")),
            Some(&b"abc"[..])
        );
        assert_eq!(bearer(&HeaderValue::from_static("Basic abc")), None);
        assert_eq!(bearer(&HeaderValue::from_static("Bear")), None);
    }

    #[test]
    fn exposure_rules() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let lo6: SocketAddr = "[::1]:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert!(check_exposure(any, Some("t"), false).is_ok());
        assert!(matches!(
            check_exposure(lo, None, false),
            Err(ServeError::NoToken(_))
        ));
        assert!(check_exposure(lo, None, true).is_ok());
        assert!(check_exposure(lo6, None, true).is_ok());
        assert!(matches!(
            check_exposure(any, None, true),
            Err(ServeError::NotLoopback(_))
        ));
    }

    #[test]
    fn token_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        assert_eq!(
            resolve_token(Some(&file)).unwrap().as_deref(),
            Some("s3cret-token")
        );
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            resolve_token(Some(&file)),
            Err(ServeError::EmptyToken(_))
        ));
        assert!(matches!(
            resolve_token(Some(&dir.path().join("missing"))),
            Err(ServeError::TokenFile { .. })
        ));
    }
}
