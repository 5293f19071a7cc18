//! The HTTP API against a real server on 127.0.0.1:0, driven by a real HTTP client (ureq).
//!
//! The server runs in-process (`serve::serve` on its own runtime thread) so tests can use
//! verifiers that block, count or rendezvous, and deliver "signals" through the channel the
//! OS signal forwarder would use. `http_cli.rs` covers the real binary and real signals.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use bluegreen::serve::{self, ServeError, ServeOptions};
use bluegreen_core::{BlueGreenService, Chain, Limits, Verdict, Verifier, VerifyRequest};
use bluegreen_store::FsStore;
use bluegreen_verify_syntax::{SyntaxOptions, SyntaxVerifier};
use serde_json::{json, Value};

const TOKEN: &str = "test-token-0123456789abcdef";
const V1: &str = "def process_event(e):\n    return 1\n";
const V2: &str = "def process_event(e):\n    return 2\n";
const BROKEN: &str = "def process_event(e)\n    return 3\n";

struct TestServer {
    addr: SocketAddr,
    root: tempfile::TempDir,
    signals: tokio::sync::mpsc::Sender<&'static str>,
    done: Mutex<std_mpsc::Receiver<Result<(), ServeError>>>,
    http: ureq::Agent,
}

struct Setup {
    chain: Chain,
    limits: Limits,
    token: Option<&'static str>,
    insecure_loopback: bool,
    max_body_bytes: usize,
    grace: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            chain: Chain::new().with(SyntaxVerifier::new("syntax", SyntaxOptions::default())),
            limits: Limits::default(),
            token: Some(TOKEN),
            insecure_loopback: false,
            max_body_bytes: 0,
            grace: Duration::from_secs(30),
        }
    }
}

fn start(setup: Setup) -> TestServer {
    let root = tempfile::tempdir().unwrap();
    let service = BlueGreenService::builder(root.path())
        .store(FsStore::open(root.path()).unwrap())
        .chain(setup.chain)
        .limits(setup.limits)
        .build()
        .unwrap();
    let mut options = ServeOptions::new("127.0.0.1:0".parse().unwrap());
    options.token = setup.token.map(str::to_owned);
    options.insecure_loopback = setup.insecure_loopback;
    options.max_body_bytes = setup.max_body_bytes;
    options.shutdown_grace = setup.grace;
    let (signals, signal_rx) = tokio::sync::mpsc::channel(4);
    let (addr_tx, addr_rx) = std_mpsc::channel();
    let (done_tx, done) = std_mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            serve::serve(listener, service, options, signal_rx).await
        });
        let _ = done_tx.send(result);
    });
    let addr = addr_rx.recv().unwrap();
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    TestServer {
        addr,
        root,
        signals,
        done: Mutex::new(done),
        http,
    }
}

struct Answer {
    status: u16,
    body: Value,
    headers: ureq::http::HeaderMap,
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get_as(&self, path: &str, auth: Option<&str>) -> Answer {
        let mut req = self.http.get(self.url(path));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        answer(req.call().unwrap())
    }

    fn get(&self, path: &str) -> Answer {
        self.get_as(path, Some(&format!("Bearer {TOKEN}")))
    }

    fn post_raw(&self, path: &str, body: &[u8]) -> Answer {
        let req = self
            .http
            .post(self.url(path))
            .header("Authorization", format!("Bearer {TOKEN}"));
        answer(req.send(body).unwrap())
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.post_raw(path, body.to_string().as_bytes())
    }

    fn hotswap(&self, agent: &str, code: &str, file: &str) -> Answer {
        self.post(
            "/api/v1/dev/hotswap",
            json!({"agent_id": agent, "code": code, "file_path": file}),
        )
    }

    fn file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.path().join(rel)).unwrap()
    }

    fn shutdown(&self, signal: &'static str) {
        self.signals.blocking_send(signal).unwrap();
    }

    fn finished(&self) -> Result<(), ServeError> {
        self.done
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
    }
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.body_mut().read_to_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        headers,
    }
}

/// The contract's error document.
fn assert_error(a: &Answer, status: u16, kind: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["status"], "failed", "{}", a.body);
    assert_eq!(a.body["error_kind"], kind, "{}", a.body);
    assert!(a.body["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(a.body["exit_code"].is_u64());
}

/// Files in the directory of a target other than the target itself (staged leftovers).
fn leftovers(dir: &Path, target: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != target)
        .collect()
}

#[test]
fn healthz_is_the_only_open_route_and_tokens_are_checked() {
    let s = start(Setup::default());
    let health = s.get_as("/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok"}));

    for path in [
        "/api/v1/agents",
        "/metrics",
        "/api/v1/agents/a/history",
        "/nope",
    ] {
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some(&format!("Basic {TOKEN}")[..]),
            Some(&format!("Bearer {TOKEN}x")[..]),
            Some("Bearer "),
        ] {
            let a = s.get_as(path, auth);
            assert_error(&a, 401, "unauthorized");
            assert_eq!(a.headers["www-authenticate"], "Bearer");
        }
    }
    let post = answer(
        s.http
            .post(s.url("/api/v1/dev/hotswap"))
            .send(json!({"agent_id": "a", "code": V1, "file_path": "a.py"}).to_string())
            .unwrap(),
    );
    assert_error(&post, 401, "unauthorized");
    assert!(
        !s.root.path().join("a.py").exists(),
        "a refused request changed nothing"
    );

    assert_eq!(s.get("/api/v1/agents").status, 200);
    assert_eq!(
        s.get_as("/api/v1/agents", Some(&format!("bearer {TOKEN}")))
            .status,
        200
    );
    assert_error(&s.get("/nope"), 404, "not_found");
}

#[test]
fn prototype_hotswap_deploys_rejects_and_refuses_like_the_contract_says() {
    let s = start(Setup::default());
    let ok = s.hotswap("trading_agent_alpha", V1, "agents/alpha.py");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["status"], "success");
    assert_eq!(ok.body["agent_id"], "trading_agent_alpha");
    assert_eq!(ok.body["file_path"], "agents/alpha.py");
    assert_eq!(ok.body["meta"]["status"], "LIVE");
    assert_eq!(ok.body["meta"]["deployment_id"], ok.body["deployment_id"]);
    assert!(ok.body["deployment_id"]
        .as_str()
        .unwrap()
        .starts_with("dep_"));
    assert_eq!(ok.body["verification"][0]["verifier"], "syntax");
    assert_eq!(ok.body["verification"][0]["passed"], true);
    let stages: Vec<&str> = ok.body["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(
        stages.contains(&"verify") && stages.contains(&"cutover"),
        "{stages:?}"
    );
    assert_eq!(s.file("agents/alpha.py"), V1);

    let rejected = s.hotswap("trading_agent_alpha", BROKEN, "agents/alpha.py");
    assert_eq!(rejected.status, 422, "{}", rejected.body);
    assert_eq!(rejected.body["status"], "failed");
    assert_eq!(rejected.body["meta"]["status"], "FAILED");
    assert!(rejected.body["error"].as_str().is_some());
    let diag = &rejected.body["verification"][0]["diagnostics"][0];
    assert_eq!(diag["line"], 1, "{diag}");
    assert_eq!(s.file("agents/alpha.py"), V1, "GREEN untouched");

    // The prototype's clients do not always send a content type.
    let no_content_type = answer(
        s.http
            .post(s.url("/api/v1/dev/hotswap"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send(json!({"agent_id": "beta", "code": V1, "file_path": "beta.py"}).to_string())
            .unwrap(),
    );
    assert_eq!(no_content_type.status, 200, "{}", no_content_type.body);

    // Bad input: 400, nothing changes.
    for (body, why) in [
        (
            json!({"agent_id": "../evil", "code": V1, "file_path": "x.py"}),
            "agent id",
        ),
        (
            json!({"agent_id": "", "code": V1, "file_path": "x.py"}),
            "empty agent id",
        ),
        (
            json!({"agent_id": "gamma", "code": V1, "file_path": "../outside.py"}),
            "traversal",
        ),
        (
            json!({"agent_id": "gamma", "code": V1, "file_path": "/etc/passwd"}),
            "absolute outside",
        ),
        (
            json!({"agent_id": "gamma", "code": V1}),
            "missing file_path",
        ),
        (
            json!({"agent_id": "gamma", "file_path": "g.py"}),
            "missing code",
        ),
        (
            json!({"agent_id": "gamma", "code": 7, "file_path": "g.py"}),
            "code not a string",
        ),
        (json!(["not", "an", "object"]), "not an object"),
    ] {
        let a = s.post("/api/v1/dev/hotswap", body);
        assert_error(&a, 400, "bad_input");
        assert!(!a.body["error"].as_str().unwrap().is_empty(), "{why}");
    }
    assert_error(
        &s.post_raw("/api/v1/dev/hotswap", b"{not json"),
        400,
        "bad_input",
    );
    assert_error(&s.post_raw("/api/v1/dev/hotswap", b""), 400, "bad_input");
    assert!(!s.root.path().join("g.py").exists());
    assert!(!s.root.path().parent().unwrap().join("outside.py").exists());
    assert_error(&s.get("/api/v1/agents/gamma/history"), 404, "not_found");

    // Bound to another path: conflict.
    let conflict = s.hotswap("trading_agent_alpha", V2, "agents/other.py");
    assert_error(&conflict, 409, "conflict");
    assert_eq!(conflict.body["agent_id"], "trading_agent_alpha");
    assert!(!s.root.path().join("agents/other.py").exists());

    // Wrong method on a known route.
    let get = s.get("/api/v1/dev/hotswap");
    assert_eq!(get.status, 405);
}

#[test]
fn restful_routes_deploy_list_history_and_roll_back() {
    let s = start(Setup::default());
    let first = s.post(
        "/api/v1/agents/alpha/deployments",
        json!({"code": V1, "file_path": "agents/alpha.py"}),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    // The bound path is used when none is given.
    let second = s.post("/api/v1/agents/alpha/deployments", json!({"code": V2}));
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["file_path"], "agents/alpha.py");
    assert_eq!(s.file("agents/alpha.py"), V2);
    let unbound = s.post("/api/v1/agents/fresh/deployments", json!({"code": V1}));
    assert_error(&unbound, 400, "bad_input");

    let status = s.get("/api/v1/agents");
    assert_eq!(status.status, 200);
    let alpha = &status.body["agents"]["alpha"];
    assert_eq!(alpha["deployment_id"], second.body["deployment_id"]);
    assert_eq!(alpha["status"], "LIVE");
    assert_eq!(alpha["file_path"], "agents/alpha.py");
    assert_eq!(alpha["sha256"], second.body["meta"]["sha256"]);
    assert_eq!(status.body["agents"].as_object().unwrap().len(), 1);

    let one = s.get("/api/v1/agents/alpha");
    assert_eq!(one.status, 200);
    assert_eq!(one.body["agents"]["alpha"], *alpha);
    assert_error(&s.get("/api/v1/agents/nobody"), 404, "not_found");

    let history = s.get("/api/v1/agents/alpha/history");
    assert_eq!(history.status, 200);
    assert_eq!(history.body["agent_id"], "alpha");
    let deployments = history.body["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    assert_eq!(
        deployments[0]["deployment_id"],
        second.body["deployment_id"]
    );
    assert_eq!(deployments[0]["status"], "LIVE");
    assert_eq!(deployments[1]["status"], "SUPERSEDED");

    // An empty body is an empty rollback request.
    let rolled = s.post_raw("/api/v1/agents/alpha/rollback", b"");
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert_eq!(rolled.body["status"], "success");
    assert_eq!(rolled.body["deployment_id"], first.body["deployment_id"]);
    assert_eq!(
        rolled.body["rolled_back"]["deployment_id"],
        second.body["deployment_id"]
    );
    assert_eq!(s.file("agents/alpha.py"), V1);

    // Nothing before the first version: conflict, nothing changes.
    let again = s.post("/api/v1/agents/alpha/rollback", json!({}));
    assert_error(&again, 409, "conflict");
    assert_eq!(s.file("agents/alpha.py"), V1);

    // `to` a named earlier version; a malformed id is bad input; another path conflicts.
    let to = s.post(
        "/api/v1/agents/alpha/rollback",
        json!({"to": second.body["deployment_id"], "file_path": "agents/alpha.py"}),
    );
    assert_eq!(to.status, 200, "{}", to.body);
    assert_eq!(s.file("agents/alpha.py"), V2);
    assert_error(
        &s.post("/api/v1/agents/alpha/rollback", json!({"to": "dep_nope"})),
        400,
        "bad_input",
    );
    assert_error(
        &s.post(
            "/api/v1/agents/alpha/rollback",
            json!({"file_path": "agents/x.py"}),
        ),
        409,
        "conflict",
    );
    assert_error(
        &s.post_raw("/api/v1/agents/alpha/rollback", b"[1"),
        400,
        "bad_input",
    );

    // Unknown agents: 404; hostile ids: 400.
    assert_error(
        &s.post("/api/v1/agents/nobody/rollback", json!({})),
        404,
        "not_found",
    );
    assert_error(&s.get("/api/v1/agents/nobody/history"), 404, "not_found");
    assert_error(&s.get("/api/v1/agents/..%2Fetc/history"), 400, "bad_input");
    assert_error(
        &s.post(
            "/api/v1/agents/bad%20id/deployments",
            json!({"code": V1, "file_path": "b.py"}),
        ),
        400,
        "bad_input",
    );
}

#[test]
fn oversized_bodies_and_code_get_413() {
    let s = start(Setup {
        limits: Limits {
            max_code_bytes: 64,
            ..Limits::default()
        },
        max_body_bytes: 4096,
        ..Setup::default()
    });
    let big = "x".repeat(10_000);
    let a = s.hotswap("alpha", &big, "alpha.py");
    assert_error(&a, 413, "too_large");
    // Under the body limit but over max_code_bytes.
    let code = format!("x = 1\n{}\n", "#".repeat(100));
    let b = s.hotswap("alpha", &code, "alpha.py");
    assert_error(&b, 413, "too_large");
    assert!(b.body["error"].as_str().unwrap().contains("max_code_bytes"));
    assert!(!s.root.path().join("alpha.py").exists());
    // Just at the limit is fine.
    let fits = s.hotswap("alpha", &format!("x = 1{}\n", " ".repeat(58)), "alpha.py");
    assert_eq!(fits.status, 200, "{}", fits.body);
}

#[test]
fn metrics_count_deployments_rollbacks_and_durations() {
    let s = start(Setup::default());
    assert_eq!(s.hotswap("alpha", V1, "alpha.py").status, 200);
    assert_eq!(s.hotswap("alpha", V2, "alpha.py").status, 200);
    assert_eq!(s.hotswap("alpha", BROKEN, "alpha.py").status, 422);
    assert_eq!(s.hotswap("beta", V1, "beta.py").status, 200);
    assert_eq!(
        s.post("/api/v1/agents/alpha/rollback", json!({})).status,
        200
    );
    assert_eq!(
        s.post("/api/v1/agents/beta/rollback", json!({})).status,
        409
    );

    let mut req = s.http.get(s.url("/metrics"));
    req = req.header("Authorization", format!("Bearer {TOKEN}"));
    let mut response = req.call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.body_mut().read_to_string().unwrap();
    for line in [
        "bluegreen_deployments_total{agent=\"alpha\",status=\"live\"} 2",
        "bluegreen_deployments_total{agent=\"alpha\",status=\"rejected\"} 1",
        "bluegreen_deployments_total{agent=\"beta\",status=\"live\"} 1",
        "bluegreen_rollbacks_total{agent=\"alpha\",trigger=\"request\",status=\"success\"} 1",
        "bluegreen_rollbacks_total{agent=\"beta\",trigger=\"request\",status=\"conflict\"} 1",
        "bluegreen_deployment_duration_seconds_count{status=\"live\"} 3",
        "bluegreen_deployment_duration_seconds_bucket{status=\"rejected\",le=\"+Inf\"} 1",
        "bluegreen_verifier_duration_seconds_count{verifier=\"syntax\"} 4",
        "bluegreen_deployments_in_flight 0",
        "# TYPE bluegreen_deployment_duration_seconds histogram",
        "# TYPE bluegreen_verifier_duration_seconds histogram",
        "# TYPE bluegreen_deployments_in_flight gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("bluegreen_http_requests_total{code=\"200\"}"));
}

#[test]
fn request_ids_are_echoed_or_generated() {
    let s = start(Setup::default());
    let generated = s.get("/api/v1/agents");
    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32, "{id}");
    let given = answer(
        s.http
            .get(s.url("/healthz"))
            .header("x-request-id", "client-42")
            .call()
            .unwrap(),
    );
    assert_eq!(given.headers["x-request-id"], "client-42");
}

#[test]
fn refuses_to_start_without_a_token_unless_insecure_loopback() {
    let s = start(Setup {
        token: None,
        ..Setup::default()
    });
    assert!(matches!(s.finished(), Err(ServeError::NoToken(_))));

    let open = start(Setup {
        token: None,
        insecure_loopback: true,
        ..Setup::default()
    });
    assert_eq!(open.get_as("/api/v1/agents", None).status, 200);
    assert_eq!(open.hotswap("alpha", V1, "a.py").status, 200);
}

/// Records how many verifications run at once, per agent and overall.
#[derive(Default)]
struct Concurrency {
    now: Mutex<std::collections::HashMap<String, usize>>,
    max_per_agent: AtomicUsize,
    overall: AtomicUsize,
    max_overall: AtomicUsize,
}

struct Counting(Arc<Concurrency>);

#[bluegreen_core::async_trait]
impl Verifier for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        let c = &self.0;
        let agent = req.agent_id.to_string();
        {
            let mut now = c.now.lock().unwrap();
            let n = now.entry(agent.clone()).or_default();
            *n += 1;
            c.max_per_agent.fetch_max(*n, Ordering::SeqCst);
        }
        let overall = c.overall.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_overall.fetch_max(overall, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.overall.fetch_sub(1, Ordering::SeqCst);
        *c.now.lock().unwrap().get_mut(&agent).unwrap() -= 1;
        Verdict::pass()
    }
}

#[test]
fn same_agent_deployments_are_serialized_and_all_succeed() {
    let counts = Arc::new(Concurrency::default());
    let s = Arc::new(start(Setup {
        chain: Chain::new().with(Counting(counts.clone())),
        ..Setup::default()
    }));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let code = format!("VERSION = {i}\n");
                let a = s.hotswap("alpha", &code, "alpha.py");
                assert_eq!(a.status, 200, "{}", a.body);
                a.body["deployment_id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let ids: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(
        counts.max_per_agent.load(Ordering::SeqCst),
        1,
        "one at a time per agent"
    );

    let history = s.get("/api/v1/agents/alpha/history");
    let deployments = history.body["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 6);
    let live: Vec<&Value> = deployments
        .iter()
        .filter(|d| d["status"] == "LIVE")
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(deployments[0]["status"], "LIVE", "the newest is live");
    for id in &ids {
        assert!(deployments
            .iter()
            .any(|d| d["deployment_id"] == id.as_str()));
    }
    // The live file holds the live deployment's bytes.
    let live_sha = live[0]["sha256"].as_str().unwrap();
    let bytes = std::fs::read(s.root.path().join("alpha.py")).unwrap();
    assert_eq!(sha256_hex(&bytes), live_sha);
    assert!(leftovers(s.root.path(), "alpha.py")
        .iter()
        .all(|n| !n.ends_with(".staged")));
}

/// Passes only when `n` verifications are inside it at the same time.
struct Rendezvous(Arc<tokio::sync::Barrier>);

#[bluegreen_core::async_trait]
impl Verifier for Rendezvous {
    fn name(&self) -> &str {
        "rendezvous"
    }
    async fn verify(&self, _req: &VerifyRequest) -> Verdict {
        match tokio::time::timeout(Duration::from_secs(20), self.0.wait()).await {
            Ok(_) => Verdict::pass(),
            Err(_) => Verdict::fail_msg("the other agents' verifications never ran alongside"),
        }
    }
}

#[test]
fn different_agents_deploy_in_parallel() {
    let agents = 4;
    let s = Arc::new(start(Setup {
        chain: Chain::new().with(Rendezvous(Arc::new(tokio::sync::Barrier::new(agents)))),
        ..Setup::default()
    }));
    let clients: Vec<_> = (0..agents)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let agent = format!("agent_{i}");
                s.post(
                    &format!("/api/v1/agents/{agent}/deployments"),
                    json!({"code": V1, "file_path": format!("{agent}.py")}),
                )
            })
        })
        .collect();
    for client in clients {
        let a = client.join().unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let status = s.get("/api/v1/agents");
    assert_eq!(status.body["agents"].as_object().unwrap().len(), agents);
}

/// Announces that it started, then waits until released (or forever).
struct Gate {
    started: Mutex<std_mpsc::Sender<()>>,
    release: Arc<tokio::sync::Semaphore>,
}

fn gate() -> (Gate, std_mpsc::Receiver<()>, Arc<tokio::sync::Semaphore>) {
    let (tx, rx) = std_mpsc::channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    (
        Gate {
            started: Mutex::new(tx),
            release: release.clone(),
        },
        rx,
        release,
    )
}

#[bluegreen_core::async_trait]
impl Verifier for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    async fn verify(&self, _req: &VerifyRequest) -> Verdict {
        let _ = self.started.lock().unwrap().send(());
        match self.release.acquire().await {
            Ok(permit) => {
                permit.forget();
                Verdict::pass()
            }
            Err(_) => Verdict::fail_msg("gate closed"),
        }
    }
}

/// Deploys V2 over V1 (deployed with the gate open) on a background thread; returns once
/// the V2 verification is running.
fn deploy_into_gate(
    s: &Arc<TestServer>,
    started: &std_mpsc::Receiver<()>,
    release: &tokio::sync::Semaphore,
) -> std::thread::JoinHandle<Option<Answer>> {
    release.add_permits(1);
    assert_eq!(s.hotswap("alpha", V1, "agents/alpha.py").status, 200);
    started.recv_timeout(Duration::from_secs(10)).unwrap();
    let client = {
        let s = s.clone();
        std::thread::spawn(move || {
            let req = s
                .http
                .post(s.url("/api/v1/dev/hotswap"))
                .header("Authorization", format!("Bearer {TOKEN}"));
            req.send(
                json!({"agent_id": "alpha", "code": V2, "file_path": "agents/alpha.py"})
                    .to_string(),
            )
            .ok()
            .map(answer)
        })
    };
    started.recv_timeout(Duration::from_secs(10)).unwrap();
    client
}

#[test]
fn shutdown_lets_a_running_deployment_finish_and_stops_accepting() {
    let (gate, started, release) = gate();
    let s = Arc::new(start(Setup {
        chain: Chain::new().with(gate),
        ..Setup::default()
    }));
    let client = deploy_into_gate(&s, &started, &release);
    s.shutdown("SIGTERM");
    // New connections are refused once draining (poll: the accept loop stops asynchronously).
    let mut refused = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(s.addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(refused, "still accepting connections while draining");
    assert_eq!(s.staged_files(), 1);
    release.add_permits(1);
    let a = client
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(s.finished().is_ok());
    assert_eq!(s.file("agents/alpha.py"), V2);
    let registry = registry(s.root.path());
    assert_eq!(registry["alpha"]["deployment_id"], a.body["deployment_id"]);
    assert_eq!(registry["alpha"]["status"], "LIVE");
}

impl TestServer {
    /// Staged files present now: one per verification in flight.
    fn staged_files(&self) -> usize {
        leftovers(&self.root.path().join("agents"), "alpha.py")
            .iter()
            .filter(|n| n.ends_with(".staged"))
            .count()
    }
}

/// The live registry, read from disk by a fresh service (as the CLI would).
fn registry(root: &Path) -> Value {
    let service = BlueGreenService::builder(root)
        .store(FsStore::open(root).unwrap())
        .build()
        .unwrap();
    bluegreen::json::status(&service.active_versions().unwrap())["agents"].clone()
}

fn history(root: &Path, agent: &str) -> Vec<Value> {
    let service = BlueGreenService::builder(root)
        .store(FsStore::open(root).unwrap())
        .build()
        .unwrap();
    let json = bluegreen::json::history(agent, &service.history(agent).unwrap());
    json["deployments"].as_array().unwrap().clone()
}

#[test]
fn a_second_signal_cancels_the_running_deployment_and_recovers() {
    let (gate, started, release) = gate();
    let s = Arc::new(start(Setup {
        chain: Chain::new().with(gate),
        ..Setup::default()
    }));
    let _client = deploy_into_gate(&s, &started, &release);
    s.shutdown("SIGTERM");
    s.shutdown("SIGINT");
    assert!(matches!(s.finished(), Err(ServeError::Aborted("SIGINT"))));
    assert_eq!(s.file("agents/alpha.py"), V1, "GREEN stays live");
    assert_eq!(
        leftovers(&s.root.path().join("agents"), "alpha.py"),
        Vec::<String>::new()
    );
    let deployments = history(s.root.path(), "alpha");
    assert_eq!(deployments[0]["status"], "ABORTED");
    assert_eq!(deployments[1]["status"], "LIVE");
}

#[test]
fn the_grace_period_bounds_the_wait_then_cancels_and_recovers() {
    let (gate, started, release) = gate();
    let s = Arc::new(start(Setup {
        chain: Chain::new().with(gate),
        grace: Duration::from_millis(300),
        ..Setup::default()
    }));
    let _client = deploy_into_gate(&s, &started, &release);
    s.shutdown("SIGTERM");
    assert!(matches!(
        s.finished(),
        Err(ServeError::GraceExpired { running: 1, .. })
    ));
    assert_eq!(s.file("agents/alpha.py"), V1);
    assert_eq!(
        leftovers(&s.root.path().join("agents"), "alpha.py"),
        Vec::<String>::new()
    );
    assert_eq!(history(s.root.path(), "alpha")[0]["status"], "ABORTED");
}

#[test]
fn a_client_hanging_up_does_not_cut_a_deployment_short() {
    let (gate, started, release) = gate();
    let s = Arc::new(start(Setup {
        chain: Chain::new().with(gate),
        ..Setup::default()
    }));
    release.add_permits(1);
    assert_eq!(s.hotswap("alpha", V1, "agents/alpha.py").status, 200);
    started.recv_timeout(Duration::from_secs(10)).unwrap();
    let impatient: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(300)))
        .build()
        .into();
    let gave_up = impatient
        .post(s.url("/api/v1/dev/hotswap"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send(json!({"agent_id": "alpha", "code": V2, "file_path": "agents/alpha.py"}).to_string());
    assert!(gave_up.is_err(), "the client timed out");
    started.recv_timeout(Duration::from_secs(10)).unwrap();
    release.add_permits(1);
    // The deployment still completes (poll the registry; bounded).
    // (A deployment in flight is not in the history yet.)
    let mut deployments = Value::Null;
    for _ in 0..500 {
        deployments = s.get("/api/v1/agents/alpha/history").body["deployments"].clone();
        if deployments.as_array().unwrap().len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(deployments[0]["status"], "LIVE", "{deployments}");
    assert_eq!(deployments[1]["status"], "SUPERSEDED", "{deployments}");
    assert_eq!(s.file("agents/alpha.py"), V2);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_cli_deploy_of_the_same_agent_waits_for_the_http_deployment() {
    let (gate, started, release) = gate();
    let s = Arc::new(start(Setup {
        chain: Chain::new().with(gate),
        ..Setup::default()
    }));
    let client = deploy_into_gate(&s, &started, &release);
    // The HTTP deployment of V2 holds alpha's lock (it is inside its verification).
    let code_file = s.root.path().join("v3.py");
    std::fs::write(&code_file, "VERSION = 3\n").unwrap();
    let mut cli = std::process::Command::new(assert_cmd::cargo::cargo_bin("bluegreen"))
        .arg("--root")
        .arg(s.root.path())
        .args([
            "deploy",
            "alpha",
            "--file",
            "agents/alpha.py",
            "--no-verify",
            "--code-file",
        ])
        .arg(&code_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the HTTP deployment is held, the CLI must not finish (it waits for the lock).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cli.try_wait().unwrap().is_none(),
        "the CLI deploy did not wait its turn"
    );
    assert_eq!(s.file("agents/alpha.py"), V1);
    release.add_permits(1);
    let a = client.join().unwrap().expect("answered");
    assert_eq!(a.status, 200, "{}", a.body);
    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.file("agents/alpha.py"), "VERSION = 3\n");
    let deployments = s.get("/api/v1/agents/alpha/history").body["deployments"].clone();
    assert_eq!(deployments[0]["status"], "LIVE");
    assert_eq!(deployments[1]["deployment_id"], a.body["deployment_id"]);
    assert_eq!(deployments[1]["status"], "SUPERSEDED");
}

/// The documents the API answers, redacted, as a reviewed snapshot.
#[test]
fn answer_documents_snapshot() {
    let s = start(Setup::default());
    let root = Some(s.root.path());
    let mut answers = serde_json::Map::new();
    let mut record = |name: &str, a: Answer| {
        answers.insert(
            name.to_owned(),
            json!({"http_status": a.status, "body": bluegreen_tests::redact_json(&a.body, root)}),
        );
    };
    record("deploy_ok", s.hotswap("alpha", V1, "agents/alpha.py"));
    record(
        "deploy_rejected",
        s.hotswap("alpha", BROKEN, "agents/alpha.py"),
    );
    record("deploy_second", s.hotswap("alpha", V2, "agents/alpha.py"));
    record("status", s.get("/api/v1/agents"));
    record("history", s.get("/api/v1/agents/alpha/history"));
    record(
        "rollback",
        s.post("/api/v1/agents/alpha/rollback", json!({})),
    );
    record(
        "rollback_nothing_left",
        s.post("/api/v1/agents/alpha/rollback", json!({})),
    );
    record("unknown_agent", s.get("/api/v1/agents/nobody/history"));
    record("bad_agent_id", s.hotswap("../x", V1, "x.py"));
    record("bad_json", s.post_raw("/api/v1/dev/hotswap", b"{"));
    record("unauthorized", s.get_as("/api/v1/agents", None));
    record("no_route", s.get("/api/v1/nothing"));
    insta::assert_json_snapshot!(Value::Object(answers));
}
