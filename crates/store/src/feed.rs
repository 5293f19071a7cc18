//! The file store's side of the change feed (`bluegreen_core::feed`): cursors are byte
//! offsets into an agent's `events.jsonl`, always just after a complete line.
//!
//! Polling one agent costs one `stat` when its log did not grow; when it grew, only the new
//! bytes are read. A torn last line (a writer mid-append, or a crash) is left for the next
//! round: the cursor never moves past a line without its newline.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use bluegreen_core::error::IoContext;
use bluegreen_core::{Error, Event};
use serde::Deserialize;

/// How much of a log's end is read at first to find its last newline.
const TAIL: u64 = 64 * 1024;

/// Only the event of a log line (the line's other fields are the store's business).
#[derive(Deserialize)]
struct LineEvent {
    e: Event,
}

/// Reads the log from `from` to `to`.
fn read_range(file: &mut File, from: u64, to: u64, rel: &str) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    file.seek(SeekFrom::Start(from))
        .and_then(|_| file.take(to - from).read_to_end(&mut bytes))
        .context(|| format!("reading {rel}"))?;
    Ok(bytes)
}

/// The offset just after the last complete line of the log `file` (`len` bytes long).
pub(crate) fn events_end(mut file: File, len: u64, rel: &str) -> Result<u64, Error> {
    let mut from = len.saturating_sub(TAIL);
    loop {
        let bytes = read_range(&mut file, from, len, rel)?;
        if let Some(i) = bytes.iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        if from == 0 {
            return Ok(0);
        }
        from = from.saturating_sub(TAIL);
    }
}

/// The complete events after `cursor`, and the cursor after them. A line that does not
/// parse is skipped (logged): the feed goes on, the store reports the damage on its own.
pub(crate) fn events_after(
    mut file: File,
    len: u64,
    cursor: u64,
    rel: &str,
) -> Result<(Vec<Event>, u64), Error> {
    if len == cursor {
        return Ok((Vec::new(), cursor));
    }
    if len < cursor {
        // The log was replaced or cut (a torn line is only ever after the cursor): go on
        // from its end rather than guess what was lost.
        return Ok((Vec::new(), events_end(file, len, rel)?));
    }
    let bytes = read_range(&mut file, cursor, len, rel)?;
    let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Ok((Vec::new(), cursor));
    };
    let mut events = Vec::new();
    for line in bytes[..last].split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<LineEvent>(line) {
            Ok(parsed) => events.push(parsed.e),
            Err(e) => {
                tracing::warn!(log = rel, error = %e, "change feed: skipping an unreadable log line")
            }
        }
    }
    Ok((events, cursor + last as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::{AgentId, BlueGreenService};

    #[tokio::test]
    async fn cursors_follow_complete_lines_only() {
        let root = tempfile::tempdir().unwrap();
        let service = BlueGreenService::builder(root.path())
            .store(crate::FsStore::open(root.path()).unwrap())
            .build()
            .unwrap();
        let agent = AgentId::new("a").unwrap();
        assert_eq!(service.store().events_end(&agent).unwrap(), 0);
        service
            .deploy_hot_swap("a", b"x = 1\n", "a.py")
            .await
            .unwrap();
        let log = root.path().join(".bluegreen/agents/a/events.jsonl");
        let end = service.store().events_end(&agent).unwrap();
        assert_eq!(end, std::fs::metadata(&log).unwrap().len());
        let (events, next) = service.store().events_after(&agent, 0).unwrap();
        assert_eq!((events.len(), next), (2, end));
        assert!(matches!(events[0], Event::Begin(_)));

        // A line still being written is not returned, and the cursor waits before it.
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"{\"e\":{\"event\":\"rollback_aband")
            .unwrap();
        assert_eq!(service.store().events_end(&agent).unwrap(), end);
        assert_eq!(
            service.store().events_after(&agent, end).unwrap(),
            (vec![], end)
        );
        // The store cuts the torn line before its next append; the feed reads on from there.
        service
            .deploy_hot_swap("a", b"x = 2\n", "a.py")
            .await
            .unwrap();
        let (events, next) = service.store().events_after(&agent, end).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(next, std::fs::metadata(&log).unwrap().len());
    }
}
