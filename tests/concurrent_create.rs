//! Two writers creating the same new store at once (issue 9 section 7): each writes the marker
//! under its own temporary name, so neither truncates the other's copy. Both opens succeed, or
//! one is refused with a clear `Locked` error; the marker is intact either way.

use std::path::Path;
use std::sync::Barrier;

use cairn::{Error, Store};

const ROUNDS: usize = 40;

fn open_once(dir: &Path, start: &Barrier) -> Result<(), String> {
    start.wait();
    match Store::open(dir) {
        Ok(store) => store.close().map_err(|e| e.to_string()),
        Err(Error::Locked { .. }) => Ok(()),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[test]
fn two_writers_creating_one_store_at_once_leave_an_intact_marker() {
    let temp = tempfile::tempdir().expect("tempdir");
    for round in 0..ROUNDS {
        let dir = temp.path().join(format!("store-{round}"));
        let start = Barrier::new(2);
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let opens: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| open_once(&dir, &start)))
                .collect();
            opens
                .into_iter()
                .map(|t| t.join().expect("opener"))
                .collect()
        });
        for result in results {
            assert!(result.is_ok(), "round {round}: {result:?}");
        }
        let marker = std::fs::read_to_string(dir.join("CAIRN")).expect("marker");
        assert!(
            marker.starts_with("cairn store\nformat_version "),
            "round {round}: marker {marker:?}"
        );
        Store::open(&dir)
            .unwrap_or_else(|e| panic!("round {round}: reopen: {e}"))
            .close()
            .expect("close");
    }
}
