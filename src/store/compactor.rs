//! The background compaction thread: woken when a save moves the log to a new segment and a
//! threshold of [`AutoCompact`](crate::AutoCompact) (or half the size limit) is crossed.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use super::{Inner, lock_mutex};
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Wanted {
    compact: bool,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    wanted: Mutex<Wanted>,
    wake: Condvar,
}

/// Runs compactions in a thread of its own until stopped.
#[derive(Debug)]
pub(crate) struct Compactor {
    shared: Arc<Shared>,
    handle: JoinHandle<()>,
}

impl Compactor {
    /// Starts the thread. It holds the store weakly, so it never keeps a dropped store alive.
    pub fn start(inner: Weak<Inner>) -> Result<Compactor> {
        let shared = Arc::new(Shared::default());
        let signal = shared.clone();
        let handle = std::thread::Builder::new()
            .name("cairn-compactor".into())
            .spawn(move || run(&signal, &inner))
            .map_err(|e| Error::io("start the compaction thread for", "cairn-compactor", e))?;
        Ok(Compactor { shared, handle })
    }

    /// Asks for a compaction; returns at once.
    pub fn request(&self) {
        lock_mutex(&self.shared.wanted).compact = true;
        self.shared.wake.notify_all();
    }

    /// Stops the thread, waiting for a compaction in progress to finish.
    pub fn stop(self) {
        lock_mutex(&self.shared.wanted).stop = true;
        self.shared.wake.notify_all();
        let _ = self.handle.join();
    }
}

fn run(shared: &Shared, inner: &Weak<Inner>) {
    loop {
        {
            let mut wanted = lock_mutex(&shared.wanted);
            while !wanted.compact && !wanted.stop {
                wanted = shared
                    .wake
                    .wait(wanted)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if wanted.stop {
                return;
            }
            wanted.compact = false;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // A failure (or a caught panic) is counted and logged there; the thread carries on
        // and tries again at the next request.
        let _ = inner.compact_unattended();
    }
}
