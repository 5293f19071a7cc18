//! Issue 14 through the library: registry paths are re-validated before use, state
//! directories must be real directories, reserved targets are caught by inode, and a broken
//! agent breaks only itself. Real files, real symlinks, hand-edited logs.

use std::io::Write;
use std::path::{Path, PathBuf};

use bluegreen_core::{BlueGreenService, ErrorKind, Limits};
use bluegreen_store::FsStore;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        Self { _dir: dir, root }
    }

    fn service(&self) -> BlueGreenService {
        self.builder().build().unwrap()
    }

    fn builder(&self) -> bluegreen_core::ServiceBuilder {
        BlueGreenService::builder(&self.root)
            .store(FsStore::open(&self.root).unwrap())
            .limits(Limits {
                keep_backups: 1,
                ..Limits::default()
            })
    }

    fn log(&self, agent: &str) -> PathBuf {
        self.root
            .join(format!(".bluegreen/agents/{agent}/events.jsonl"))
    }

    fn append(&self, agent: &str, line: serde_json::Value) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log(agent))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap()
    }
}

const DEP: &str = "dep_019a0000000070008000000000000001";

/// Two agents, beta with a snapshot; returns beta's snapshot path.
async fn two_agents(f: &Fixture, service: &BlueGreenService) -> String {
    service
        .deploy_hot_swap("alpha", b"a = 1\n", "agents/alpha.py")
        .await
        .unwrap();
    service
        .deploy_hot_swap("beta", b"b = 1\n", "agents/beta.py")
        .await
        .unwrap();
    let report = service
        .deploy_hot_swap("beta", b"b = 2\n", "agents/beta.py")
        .await
        .unwrap();
    let snap = report.meta.backup_path.unwrap();
    assert_eq!(f.read(&snap), b"b = 1\n");
    snap
}

fn assert_names(err: &bluegreen_core::Error, agent: &str, root: &Path) {
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Io, "{text}");
    assert!(text.contains(agent), "{text}");
    assert!(!text.contains(&root.display().to_string()), "{text}");
}

#[tokio::test]
async fn a_begin_naming_another_agents_snapshot_does_not_delete_it() {
    let f = Fixture::new();
    let service = f.service();
    let snap = two_agents(&f, &service).await;
    f.append(
        "alpha",
        serde_json::json!({"e": {"event": "begin", "deployment_id": DEP,
            "timestamp": "2026-01-01T00:00:00Z", "file_path": "agents/alpha.py",
            "staged_path": "agents/.alpha.py.bluegreen-dep_019a0000000070008000000000000001.staged",
            "sha256": "0".repeat(64), "green_sha256": "1".repeat(64),
            "backup_path": snap, "previous": null}, "live": null}),
    );
    let report = service.recover().await.unwrap();
    assert_eq!(f.read(&snap), b"b = 1\n", "beta's snapshot was deleted");
    assert_eq!(report.broken.len(), 1, "{report:?}");
    assert_eq!(report.broken[0].0.as_str(), "alpha");
    // beta keeps working: its rollback needs the snapshot alpha's line pointed at.
    service.rollback("beta", None, None).await.unwrap();
    assert_eq!(f.read("agents/beta.py"), b"b = 1\n");
    let err = service
        .deploy_hot_swap("alpha", b"a = 2\n", "agents/alpha.py")
        .await
        .unwrap_err();
    assert_names(&err, "alpha", &f.root);
}

#[tokio::test]
async fn a_rollback_staged_path_that_is_not_a_staged_sibling_is_never_removed() {
    let f = Fixture::new();
    let service = f.service();
    two_agents(&f, &service).await;
    // Inside the root and plausible, but beta's live file, not alpha's staged sibling.
    f.append(
        "alpha",
        serde_json::json!({"e": {"event": "rollback_begin", "from": DEP,
            "to": null, "timestamp": "2026-01-01T00:00:00Z",
            "staged_path": "agents/beta.py", "sha256": null, "reason": null}, "live": null}),
    );
    let _ = service.recover().await;
    assert_eq!(
        f.read("agents/beta.py"),
        b"b = 2\n",
        "beta's live file was removed"
    );
    service
        .deploy_hot_swap("beta", b"b = 3\n", "agents/beta.py")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pruned_path_of_another_agent_is_not_deleted() {
    let f = Fixture::new();
    let service = f.service();
    let snap = two_agents(&f, &service).await;
    f.append(
        "alpha",
        serde_json::json!({"e": {"event": "rollback_abandoned", "from": DEP}, "live": null}),
    );
    f.append(
        "alpha",
        serde_json::json!({"e": {"event": "finish", "deployment_id": DEP, "status": "ABORTED",
            "backup_path": null, "reason": null, "pruned": [snap]}, "live": null}),
    );
    let _ = service.recover().await;
    let _ = service
        .deploy_hot_swap("alpha", b"a = 2\n", "agents/alpha.py")
        .await;
    assert_eq!(f.read(&snap), b"b = 1\n", "beta's snapshot was deleted");
}

#[tokio::test]
async fn a_state_directory_symlinked_inside_the_root_is_not_followed() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.root.join("elsewhere")).unwrap();
    std::fs::create_dir_all(f.root.join(".bluegreen")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", f.root.join(".bluegreen/agents")).unwrap();
    // The store refuses to open through it; nothing is written where it leads.
    let err = FsStore::open(&f.root).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(
        std::fs::read_dir(f.root.join("elsewhere")).unwrap().count(),
        0
    );
    assert!(!f.root.join("agents/alpha.py").exists());
}

#[tokio::test]
async fn reserved_paths_are_caught_by_inode() {
    let f = Fixture::new();
    std::fs::write(f.root.join("secret.token"), b"s3cret\n").unwrap();
    std::fs::hard_link(f.root.join("secret.token"), f.root.join("alias.py")).unwrap();
    let service = f
        .builder()
        .reserve(f.root.join("secret.token"))
        .build()
        .unwrap();
    for path in ["secret.token", "./secret.token", "alias.py"] {
        let err = service
            .deploy_hot_swap("alpha", b"x = 1\n", path)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput, "{path}: {err}");
        assert!(err.to_string().contains("reserved"), "{err}");
    }
    assert_eq!(f.read("secret.token"), b"s3cret\n");
    assert!(!f.root.join(".bluegreen/agents/alpha").exists());
}

/// A health check that, while it runs, swaps the target's directory for a symlink leading
/// out of the root (what a hostile process sharing the root could do), then fails.
struct SwapDirForSymlink {
    root: PathBuf,
    outside: PathBuf,
}

#[bluegreen_core::async_trait]
impl bluegreen_core::Verifier for SwapDirForSymlink {
    fn name(&self) -> &str {
        "swap"
    }

    async fn verify(&self, _req: &bluegreen_core::VerifyRequest) -> bluegreen_core::Verdict {
        std::fs::rename(self.root.join("agents"), self.root.join("agents.moved")).unwrap();
        std::os::unix::fs::symlink(&self.outside, self.root.join("agents")).unwrap();
        bluegreen_core::Verdict::fail_msg("unhealthy")
    }
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_between_check_and_use_is_not_followed() {
    let f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("alpha.py"), b"outside\n").unwrap();
    f.service()
        .deploy_hot_swap("alpha", b"a = 1\n", "agents/alpha.py")
        .await
        .unwrap();
    // The health check fails after the swap, so the automatic restore must reach the
    // target's directory again: by descriptor, it refuses the symlink.
    let service = f
        .builder()
        .health_chain(bluegreen_core::Chain::new().with(SwapDirForSymlink {
            root: f.root.clone(),
            outside: outside.path().to_path_buf(),
        }))
        .build()
        .unwrap();
    let result = service
        .deploy_hot_swap("alpha", b"a = 2\n", "agents/alpha.py")
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        std::fs::read(outside.path().join("alpha.py")).unwrap(),
        b"outside\n"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert_eq!(f.read("agents.moved/alpha.py"), b"a = 2\n");
}
