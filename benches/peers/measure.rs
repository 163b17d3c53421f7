//! Running one peer: its writers save in a loop on their own threads until the time is up, and
//! every save's latency is kept.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Errors of the bench: any peer's error type, as text for the final message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One store or floor under test, set up in a fresh directory before the clock starts.
pub trait Peer: Sync {
    /// The handle writer number `writer` saves through, made on the writer's own thread before
    /// the clock starts (a PostgreSQL connection, an open file, a job name).
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>>;

    /// Syncs issued so far, where the peer counts them (the group-commit floor).
    fn syncs(&self) -> Option<u64> {
        None
    }

    /// Closes the peer once its runs are over (outside the clock).
    fn finish(self: Box<Self>) -> BenchResult<()> {
        Ok(())
    }
}

/// One writer's handle on a peer.
pub trait Saver {
    /// Saves the bench checkpoint once, as durably as the peer promises.
    fn save(&mut self) -> BenchResult<()>;
}

/// How long a run lasts and how many saves each writer may do at most (the latencies are kept
/// in a vector of that capacity, so the time loop never allocates).
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub duration: Duration,
    pub max_saves_per_writer: usize,
}

/// What one run of one peer measured.
#[derive(Debug, Clone)]
pub struct Sample {
    pub saves: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Syncs issued during the run, where the peer counts them.
    pub syncs: Option<u64>,
}

impl Sample {
    pub fn saves_per_sec(&self) -> f64 {
        self.saves as f64 / self.elapsed.as_secs_f64()
    }

    pub fn saves_per_sync(&self) -> Option<f64> {
        self.syncs
            .filter(|&syncs| syncs > 0)
            .map(|syncs| self.saves as f64 / syncs as f64)
    }
}

/// Runs `writers` threads saving through `peer` at once, from the moment all of them hold a
/// saver until the time or a writer's save budget is used up.
pub fn run(peer: &dyn Peer, writers: usize, limits: RunLimits) -> BenchResult<Sample> {
    let ready = Barrier::new(writers + 1);
    let stop = AtomicBool::new(false);
    let syncs_before = peer.syncs();
    let (latencies, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let (ready, stop) = (&ready, &stop);
                scope.spawn(move || {
                    let saver = peer.saver(writer);
                    ready.wait();
                    let result = saver.and_then(|mut saver| save_loop(&mut *saver, limits, stop));
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        let latencies = join_writers(handles);
        (latencies, started.elapsed())
    });
    let mut latencies = latencies?;
    let syncs = match (syncs_before, peer.syncs()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    Ok(Sample {
        saves: latencies.len() as u64,
        elapsed,
        p50: percentile(&mut latencies, 0.50),
        p99: percentile(&mut latencies, 0.99),
        syncs,
    })
}

type WriterHandle<'scope> = std::thread::ScopedJoinHandle<'scope, BenchResult<Vec<u32>>>;

/// Waits for every writer and pools their latencies; the first error wins.
fn join_writers(handles: Vec<WriterHandle<'_>>) -> BenchResult<Vec<u32>> {
    let mut pooled = Vec::new();
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(latencies)) => pooled.extend_from_slice(&latencies),
            Ok(Err(error)) => first_error = first_error.or(Some(error)),
            Err(_) => first_error = first_error.or(Some("a writer thread panicked".into())),
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(pooled),
    }
}

/// One writer's loop. A save's latency runs from the end of the previous save (one clock read
/// per save, so the floors of a few hundred nanoseconds are not mostly clock reads).
fn save_loop(saver: &mut dyn Saver, limits: RunLimits, stop: &AtomicBool) -> BenchResult<Vec<u32>> {
    let mut latencies_ns = Vec::with_capacity(limits.max_saves_per_writer);
    let deadline = Instant::now() + limits.duration;
    let mut previous = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        saver.save()?;
        let now = Instant::now();
        let latency_ns = (now - previous).as_nanos();
        latencies_ns.push(u32::try_from(latency_ns).unwrap_or(u32::MAX));
        if latencies_ns.len() == limits.max_saves_per_writer {
            stop.store(true, Ordering::Relaxed);
        }
        if now >= deadline {
            break;
        }
        previous = now;
    }
    Ok(latencies_ns)
}

/// The `q` quantile (nearest rank) of latencies in nanoseconds; zero when there are none.
fn percentile(latencies_ns: &mut [u32], q: f64) -> Duration {
    if latencies_ns.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((latencies_ns.len() as f64 * q).ceil() as usize).clamp(1, latencies_ns.len());
    let (_, nth, _) = latencies_ns.select_nth_unstable(rank - 1);
    Duration::from_nanos(u64::from(*nth))
}
