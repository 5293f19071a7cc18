//! Serialization of one agent's deployments across tasks and processes; parallelism across
//! agents.

use std::sync::Arc;
use std::time::Duration;

use bluegreen_core::{
    BlueGreenService, Chain, DeploymentRecord, Limits, Status, Store, Verdict, Verifier,
    VerifyRequest,
};
use bluegreen_store::FsStore;
use bluegreen_tests::{assert_recovered, sha256};

const TARGET: &str = "agents/shared.py";

fn limits() -> Limits {
    Limits {
        keep_backups: 10_000,
        lock_timeout: Duration::from_secs(120),
        ..Limits::default()
    }
}

/// Oldest first. Asserts every deployment is recorded LIVE/SUPERSEDED, exactly one LIVE,
/// and the backup chain is intact: the snapshot taken by deployment i holds the code of
/// deployment i-1, byte for byte.
fn assert_chain(store: &dyn Store, root: &std::path::Path, agent: &str, expected: usize) {
    let state = store
        .load(&bluegreen_core::AgentId::new(agent).unwrap())
        .unwrap()
        .unwrap();
    let deps: &[DeploymentRecord] = &state.deployments;
    assert_eq!(deps.len(), expected);
    assert_eq!(deps.iter().filter(|d| d.status == Status::Live).count(), 1);
    assert_eq!(deps.last().unwrap().status, Status::Live);
    let mut ids: Vec<_> = deps.iter().map(|d| d.deployment_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), expected, "duplicate deployment ids");
    assert!(deps[0].backup_path.is_none());
    for pair in deps.windows(2) {
        assert!(matches!(pair[1].status, Status::Live | Status::Superseded));
        assert_eq!(pair[1].previous.as_ref(), Some(&pair[0].deployment_id));
        let snapshot = std::fs::read(root.join(pair[1].backup_path.as_ref().unwrap())).unwrap();
        assert_eq!(sha256(&snapshot), pair[0].sha256, "backup chain broken");
    }
    let live = std::fs::read(root.join(TARGET)).unwrap();
    assert_eq!(sha256(&live), deps.last().unwrap().sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_times_25_deployments_to_one_agent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(&root).unwrap());
    let service = BlueGreenService::builder(&root)
        .store_arc(store.clone())
        .limits(limits())
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let code = format!("VERSION = 'task{t}-{i}'\n");
                let report = service
                    .deploy_hot_swap("shared", code.as_bytes(), TARGET)
                    .await
                    .unwrap();
                assert!(report.succeeded());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_chain(store.as_ref(), &root, "shared", 200);
    let live = std::fs::read(root.join(TARGET)).unwrap();
    assert_recovered(&root, store.as_ref(), "shared", TARGET, &[Some(&live)]);
}

#[test]
fn two_processes_deploying_one_agent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spawn = |tag: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_crashee"))
            .args([
                "loop",
                root.to_str().unwrap(),
                "shared",
                TARGET,
                "25",
                tag,
                "--keep",
                "1000",
            ])
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let store = FsStore::open(root).unwrap();
    assert_chain(&store, root, "shared", 50);
}

/// Passes only after `release` is notified: holds one agent's deployment in verification.
struct Gate {
    entered: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl Verifier for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    async fn verify(&self, req: &VerifyRequest) -> Verdict {
        if req.agent_id.as_str() == "slow" {
            self.entered.notify_one();
            self.release.notified().await;
        }
        Verdict::pass()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_agents_do_not_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let service = BlueGreenService::builder(dir.path())
        .store(FsStore::open(dir.path()).unwrap())
        .chain(Chain::new().with(Gate {
            entered: entered.clone(),
            release: release.clone(),
        }))
        .limits(Limits {
            lock_timeout: Duration::from_secs(5),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let slow = {
        let service = service.clone();
        tokio::spawn(async move { service.deploy_hot_swap("slow", b"a = 1\n", "slow.py").await })
    };
    entered.notified().await;
    // "slow" holds its lock inside verification; "fast" must still go through.
    for i in 0..5 {
        let code = format!("b = {i}\n");
        let report = service
            .deploy_hot_swap("fast", code.as_bytes(), "fast.py")
            .await
            .unwrap();
        assert!(report.succeeded());
    }
    // A second deployment of "slow" must wait: it times out while the first is held.
    let blocked = BlueGreenService::builder(dir.path())
        .store(FsStore::open(dir.path()).unwrap())
        .limits(Limits {
            lock_timeout: Duration::from_millis(200),
            ..Limits::default()
        })
        .build()
        .unwrap()
        .deploy_hot_swap("slow", b"a = 2\n", "slow.py")
        .await
        .unwrap_err();
    assert_eq!(
        blocked.kind(),
        bluegreen_core::ErrorKind::Conflict,
        "{blocked}"
    );
    release.notify_one();
    assert!(slow.await.unwrap().unwrap().succeeded());
    assert_eq!(
        std::fs::read(dir.path().join("slow.py")).unwrap(),
        b"a = 1\n"
    );
}
