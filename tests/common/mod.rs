//! Helpers shared by the integration tests. Each test file declares `mod common;` and uses
//! what it needs: the options most tests run with here; running the `cairn` binary in
//! [`cli`]; re-running a test binary as a child process in [`child`]; one test body on the
//! real file system and on the simulated disk in [`disk`]; seeds and random numbers in
//! [`rng`]; store files and the record layout of segment images (docs/FORMAT.md) in
//! [`files`]; the simulated disk's store in [`sim`].

// Every test file is a crate of its own that compiles all of this module but uses only some
// of it, so each would warn about the helpers it does not use: the usual allowance for shared
// integration-test helpers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use cairn::{AutoCompact, Durability, Options, Retention};

pub mod child;
#[cfg(feature = "cli")]
pub mod cli;
pub mod disk;
pub mod files;
pub mod rng;
pub mod sim;

/// The segment size of most tests: 64 KiB (the smallest allowed), so that a few saves roll
/// the log over to a new segment.
pub const SEGMENT_BYTES: u64 = 64 * 1024;

/// Default options but 64 KiB segments.
pub fn small_segments() -> Options {
    Options::default().segment_size(SEGMENT_BYTES)
}

/// 64 KiB segments and no background compaction: the store keeps every record until the test
/// compacts.
pub fn options() -> Options {
    small_segments().auto_compact(AutoCompact::disabled())
}

/// [`options`] without syncs (`Durability::OsOnly`), for tests that close their stores.
pub fn unsynced_options() -> Options {
    options().durability(Durability::OsOnly)
}

/// 64 KiB segments; the background compactor runs (after a few segments) but keeps every
/// checkpoint, so that the test can expect every acknowledged save.
pub fn keep_every_checkpoint() -> Options {
    small_segments().retention(Retention::default().keep_last(usize::MAX))
}

/// Polls `done` until it holds, for at most a minute (what it waits for happens in another
/// thread); panics naming `what` when it never does.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
