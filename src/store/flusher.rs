//! The background thread of [`Durability::Buffered`](crate::Durability::Buffered).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::Log;

/// Syncs the log at least every interval until stopped.
#[derive(Debug)]
pub(crate) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

impl Flusher {
    pub fn start(log: Arc<Log>, interval: Duration) -> Result<Flusher> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let handle = std::thread::Builder::new()
            .name("cairn-flusher".into())
            .spawn(move || {
                let (lock, cvar) = &*signal;
                let mut stopped = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while !*stopped {
                    let (guard, _) = cvar
                        .wait_timeout(stopped, interval)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    stopped = guard;
                    if let Err(error) = log.sync_all() {
                        tracing::error!(%error, "cairn: background sync failed");
                        break;
                    }
                }
            })
            .map_err(|e| Error::io("start the background sync thread for", "cairn-flusher", e))?;
        Ok(Flusher { stop, handle })
    }

    pub fn stop(self) {
        let (lock, cvar) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cvar.notify_all();
        let _ = self.handle.join();
    }
}
