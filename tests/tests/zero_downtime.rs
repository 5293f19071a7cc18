//! A reader that opens and reads the target in a tight loop during 200 deployments of
//! 200 KB files never sees an empty, missing or mixed file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bluegreen_core::BlueGreenService;
use bluegreen_store::FsStore;

/// 200 KB of one repeated byte per version, so a mixed read is detectable.
fn version(i: usize) -> Vec<u8> {
    let fill = b'a' + (i % 26) as u8;
    let mut code = format!("# version {i}\n").into_bytes();
    code.resize(200 * 1024, fill);
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_never_sees_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let service = BlueGreenService::builder(&root)
        .store(FsStore::open(&root).unwrap())
        .build()
        .unwrap();
    service
        .deploy_hot_swap("reader_test", &version(0), "agent.py")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let path = root.join("agent.py");
        std::thread::spawn(move || {
            let (mut reads, mut bad) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                reads += 1;
                match std::fs::read(&path) {
                    Err(e) => bad.push(format!("read failed: {e}")),
                    Ok(bytes) => {
                        let header_end = bytes.iter().position(|&b| b == b'\n').unwrap_or(0);
                        let body = &bytes[header_end + 1..];
                        let whole = bytes.len() == 200 * 1024
                            && !body.is_empty()
                            && body.iter().all(|&b| b == body[0]);
                        if !whole {
                            bad.push(format!("partial or mixed read of {} bytes", bytes.len()));
                        }
                    }
                }
            }
            (reads, bad)
        })
    };
    for i in 1..=200 {
        assert!(service
            .deploy_hot_swap("reader_test", &version(i), "agent.py")
            .await
            .unwrap()
            .succeeded());
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    assert!(reads > 200, "the reader barely ran ({reads} reads)");
    assert!(
        bad.is_empty(),
        "{} bad reads of {reads}: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(std::fs::read(root.join("agent.py")).unwrap(), version(200));
}
