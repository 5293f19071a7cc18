//! CONTRACT.md "Input rules": every bad input gets a clear one-line error of the right class
//! and changes nothing on disk (asserted byte for byte over the whole root, and a sentinel
//! tree outside it).

use std::path::Path;
use std::time::Duration;

use bluegreen_core::{BlueGreenService, ErrorKind, Limits};
use bluegreen_store::FsStore;
use bluegreen_tests::tree;

const V1: &[u8] = b"x = 1\n";

struct Fixture {
    _dir: tempfile::TempDir,
    _outside: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    service: BlueGreenService,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let out = outside.path().canonicalize().unwrap();
    std::fs::write(out.join("sentinel.py"), b"do not touch\n").unwrap();
    std::fs::create_dir(root.join("a_dir")).unwrap();
    std::os::unix::fs::symlink(&out, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(out.join("sentinel.py"), root.join("leaf.py")).unwrap();
    let service = BlueGreenService::builder(&root)
        .store(FsStore::open(&root).unwrap())
        .limits(Limits {
            max_code_bytes: 1024,
            lock_timeout: Duration::from_secs(1),
            ..Limits::default()
        })
        .build()
        .unwrap();
    service
        .deploy_hot_swap("bound", V1, "agents/bound.py")
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        _outside: outside,
        root,
        outside: out,
        service,
    }
}

async fn assert_refused(f: &Fixture, agent: &str, code: &[u8], path: &str, kind: ErrorKind) {
    let before = (tree(&f.root), tree(&f.outside));
    let err = f
        .service
        .deploy_hot_swap(agent, code, path)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), kind, "{agent:?} {path:?}: {err}");
    let message = err.to_string();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{message:?}"
    );
    assert_eq!(
        (tree(&f.root), tree(&f.outside)),
        before,
        "{agent:?} {path:?} changed bytes"
    );
}

#[tokio::test]
async fn bad_agent_ids_are_refused() {
    let f = fixture().await;
    for agent in [
        "",
        "_x",
        ".x",
        "-x",
        "a..b",
        "a/b",
        "../x",
        "a b",
        "a\0b",
        "ü",
        &"a".repeat(129),
    ] {
        assert_refused(&f, agent, V1, "ok.py", ErrorKind::BadInput).await;
    }
}

#[tokio::test]
async fn bad_paths_are_refused() {
    let f = fixture().await;
    let outside_abs = f.outside.join("x.py");
    let escape_abs = f.root.join("../x.py");
    for path in [
        "",
        "../x.py",
        "a/../../x.py",
        outside_abs.to_str().unwrap(),
        escape_abs.to_str().unwrap(),
        "/etc/passwd",
        "escape/x.py",
        "escape/sentinel.py",
        "leaf.py",
        "a_dir",
        "a_dir/",
        ".",
        "x\0.py",
        ".bluegreen/agents/x.py",
        "backups/agents/bound/x.py",
    ] {
        assert_refused(&f, "fresh", V1, path, ErrorKind::BadInput).await;
    }
    assert_eq!(
        std::fs::read(f.outside.join("sentinel.py")).unwrap(),
        b"do not touch\n"
    );
}

#[tokio::test]
async fn oversized_code_is_refused() {
    let f = fixture().await;
    assert_refused(
        &f,
        "bound",
        &vec![b'#'; 1025],
        "agents/bound.py",
        ErrorKind::BadInput,
    )
    .await;
    // Exactly at the limit is fine.
    let ok = f
        .service
        .deploy_hot_swap("bound", &vec![b'#'; 1024], "agents/bound.py")
        .await
        .unwrap();
    assert!(ok.succeeded());
}

#[tokio::test]
async fn agent_bound_to_another_path_conflicts() {
    let f = fixture().await;
    assert_refused(&f, "bound", V1, "agents/other.py", ErrorKind::Conflict).await;
    // The same file spelled differently is the same binding.
    let ok = f
        .service
        .deploy_hot_swap("bound", b"x = 2\n", "./agents/../agents/bound.py")
        .await
        .unwrap();
    assert!(ok.succeeded());
}

#[tokio::test]
async fn rollback_refusals_change_nothing() {
    let f = fixture().await;
    let before = tree(&f.root);
    // Nothing to roll back: the only deployment is the first version.
    let err = f.service.rollback("bound", None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // Unknown agent, bad deployment id, unknown deployment, other path.
    for (agent, to, path, kind) in [
        ("nobody", None, None, ErrorKind::BadInput),
        ("bound", Some("dep_nothex"), None, ErrorKind::BadInput),
        (
            "bound",
            Some("dep_0190f0a1b2c3d4e5f60718293a4b5c6d"),
            None,
            ErrorKind::BadInput,
        ),
        ("bound", None, Some("agents/other.py"), ErrorKind::Conflict),
        ("bound", None, Some("../x.py"), ErrorKind::BadInput),
    ] {
        let err = f.service.rollback(agent, path, to).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{agent} {to:?} {path:?}: {err}");
        assert!(!err.to_string().contains('\n'));
    }
    assert_eq!(tree(&f.root), before);
}

#[tokio::test]
async fn symlinked_backups_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("backups")).unwrap();
    let err = FsStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(tree(outside.path()).is_empty());
}

#[tokio::test]
async fn symlinked_agent_backup_dir_is_refused_without_writing_outside() {
    let f = fixture().await;
    std::fs::create_dir_all(f.root.join("backups/agents")).unwrap();
    // Planted after the store was opened: the write itself must check.
    let planted = f.root.join("backups/agents/victim");
    std::os::unix::fs::symlink(&f.outside, &planted).unwrap();
    f.service
        .deploy_hot_swap("victim", V1, "victim.py")
        .await
        .unwrap(); // nothing to back up yet
    let outside_before = tree(&f.outside);
    let err = f
        .service
        .deploy_hot_swap("victim", b"x = 2\n", "victim.py")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert_eq!(tree(&f.outside), outside_before);
    assert_eq!(std::fs::read(f.root.join("victim.py")).unwrap(), V1);
    // Refused before the journal recorded anything: nothing pending, history unchanged.
    let store = FsStore::open(&f.root).unwrap();
    let state = bluegreen_core::Store::load(&store, &"victim".parse().unwrap())
        .unwrap()
        .unwrap();
    assert!(!state.is_pending(), "{state:?}");
    assert_eq!(state.deployments.len(), 1);
    assert!(bluegreen_tests::staged_leftovers(&f.root.join("victim.py")).is_empty());
}

#[tokio::test]
async fn missing_parent_directories_are_created_inside_the_root() {
    let f = fixture().await;
    let report = f
        .service
        .deploy_hot_swap("deep", V1, "a/b/c/d.py")
        .await
        .unwrap();
    assert!(report.succeeded());
    assert_eq!(report.file_path, "a/b/c/d.py");
    assert_eq!(std::fs::read(f.root.join("a/b/c/d.py")).unwrap(), V1);
}

#[test]
fn root_must_exist() {
    let err = BlueGreenService::builder(Path::new("/nonexistent/bluegreen-root"))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
}
