//! Failed syncs with Linux semantics on the simulated disk (issue 9, findings 2 and 4): after
//! a failed sync the kernel has marked the file's dirty pages clean without writing them, so a
//! later sync "succeeds" without writing them and a reopen in the same boot still reads them
//! from the page cache. Whatever happens, a save that returned `Ok` survives a power loss, and
//! a store acknowledges nothing after it was poisoned.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cairn::testing::{CrashMode, Fault, SimDisk, Step};
use cairn::{Error, Store};
use serde_json::{Value, json};

use common::rng::incompressible;
use common::{options, sim};

fn open(disk: &SimDisk) -> cairn::Result<Store> {
    sim::open(disk, options())
}

/// Data of save `i`, `pad_bytes` long, that does not compress (so it takes that many bytes).
fn data(i: u64, pad_bytes: usize) -> Value {
    let pad = incompressible(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, pad_bytes);
    json!({"i": i, "pad": pad})
}

/// A power loss now (nothing dirty survives), then an open in the default recovery mode:
/// every `(seq, data)` acknowledged is there, intact.
fn check_acknowledged_survive(disk: &SimDisk, acked: &[(u64, Value)], context: &str) {
    let crashed = disk.crash(CrashMode::LoseUnsynced, 0);
    let store = open(&crashed)
        .unwrap_or_else(|e| panic!("{context}: the store does not open after a power loss: {e}"));
    let history = store.history("job").expect("history");
    for (seq, data) in acked {
        assert!(
            history.iter().any(|c| c.seq == *seq && c.data == *data),
            "{context}: acknowledged save {seq} is lost after a power loss; found {:?}",
            history.iter().map(|c| c.seq).collect::<Vec<_>>()
        );
    }
}

/// Finding 4: save 6's sync fails and poisons the store; a new process in the same boot
/// reopens it, reads save 6 from the page cache (its pages are clean, never written), and
/// acknowledges saves 7 and 8. A power loss must keep 1 to 5, 7 and 8, and the store must open.
#[test]
fn a_reopen_after_a_failed_sync_in_the_same_boot_keeps_every_later_save() {
    reopen_after_a_failed_sync(Fault::FailSync(1));
}

/// Saves 1 to 5; save 6's sync fails with `fault`; the store is reopened in the same boot and
/// acknowledges saves 7 and 8; a power loss must keep 1 to 5, 7 and 8.
fn reopen_after_a_failed_sync(fault: Fault) {
    let disk = SimDisk::new();
    let store = open(&disk).expect("opens");
    let mut acked = Vec::new();
    for i in 1..=5 {
        let value = data(i, 100);
        acked.push((store.save("job", "p", &value).expect("save"), value));
    }
    // Save 6 spans several pages: 7 and 8 rewrite only the page they start in, so the
    // middle of 6 never reaches the disk unless the reopened writer writes it again.
    disk.inject(fault);
    let err = store
        .save("job", "p", &data(6, 12_000))
        .expect_err("the sync fails");
    assert!(store.metrics().poisoned.is_some(), "not poisoned: {err}");
    drop(store);
    disk.clear_faults();
    let store = open(&disk).expect("reopens in the same boot");
    for i in 7..=8 {
        let value = data(i, 100);
        acked.push((store.save("job", "p", &value).expect("save"), value));
    }
    drop(store);
    check_acknowledged_survive(&disk, &acked, "saves 7 and 8 after a reopen");
}

/// A sync that fails with ENOSPC (a file system that allocates at write-back) poisons the
/// store like EIO, wherever it happens in a workload with rollovers, and a power loss keeps
/// every acknowledged save. The error's kind is not checked: only that it is one, that the
/// store refuses more saves, and that nothing acknowledged is lost. The one sync that may fail
/// cleanly is that of a new segment's header (no record is in it yet): the save fails, the
/// store is not poisoned, and the next save works.
#[test]
fn a_sync_without_space_poisons_like_eio_and_loses_nothing_acknowledged() {
    let mut poisoned = 0;
    for n in 1..=60 {
        let context = format!("sync {n} finds no space");
        let disk = SimDisk::new();
        let store = open(&disk).expect("opens");
        disk.inject(Fault::SyncNoSpace(n));
        let mut acked = Vec::new();
        let mut failures = 0;
        for i in 0..80 {
            let value = data(i, (i % 5 * 700) as usize);
            let err = match store.save("job", "p", &value) {
                Ok(seq) => {
                    acked.push((seq, value));
                    continue;
                }
                Err(err) => err,
            };
            failures += 1;
            if store.metrics().poisoned.is_some() {
                break;
            }
            let clean = matches!(&err, Error::DiskFull { .. })
                || matches!(
                    &err,
                    Error::Io {
                        op: "sync new segment",
                        ..
                    }
                );
            assert!(clean, "{context}: not poisoned by {err}");
        }
        assert_eq!(failures, 1, "{context}: one save fails");
        if store.metrics().poisoned.is_some() {
            poisoned += 1;
            let again = store.save("job", "p", &data(999, 10));
            assert!(
                matches!(again, Err(Error::Poisoned { .. })),
                "{context}: a poisoned store took a save: {again:?}"
            );
        }
        drop(store);
        check_acknowledged_survive(&disk, &acked, &context);
    }
    assert!(
        poisoned >= 50,
        "only {poisoned} failed syncs poisoned the store"
    );
}

/// Finding 4 with ENOSPC: the reopen in the same boot must not build on the bytes whose
/// write-back found no space.
#[test]
fn a_reopen_after_a_sync_without_space_keeps_every_later_save() {
    reopen_after_a_failed_sync(Fault::SyncNoSpace(1));
}

/// Finding 2, made deterministic with the disk's concurrent hook and the threads' scheduler
/// states (`/proc`). Three savers share a segment with little room left:
///
/// 1. `c` is the group-commit leader; it is held right after its sync, so the log still says
///    a sync is running;
/// 2. `a` appends its record and waits for that sync (a follower);
/// 3. `b`'s record does not fit: it takes the writer lock and rolls over; at the creation of
///    the new segment it lets `c` finish its sync and waits until `c` is blocked on the writer
///    lock (it wants to write its mark) and `a` still waits (the leader wakes its followers
///    once, when it publishes; a follower that wakes meanwhile, as in older builds, may become
///    the next leader and wait for the writer lock too); then the rollover's sync fails (EIO),
///    which drops every dirty page of the segment, `a`'s record included, and poisons the
///    store.
///
/// `a` must not return `Ok`: its record never reached the disk. Before the fix, `a` synced the
/// segment again from where the last sync ended; the pages were clean, so the sync succeeded
/// without writing them, and `a` was acknowledged. (`c` may return an error although its
/// record was synced: a poisoned store acknowledges nothing; if it returns `Ok`, its save must
/// survive.)
#[test]
fn a_leader_waiting_while_a_seal_sync_fails_acknowledges_nothing() {
    let disk = SimDisk::new();
    let store = Arc::new(open(&disk).expect("opens"));
    // Room for two small records after the filler, not for `b`'s.
    let filler = data(0, 30_000);
    let filler_seq = store.save("job", "p", &filler).expect("filler");
    let gates = Arc::new(Gates::default());
    {
        let gates = gates.clone();
        let hook_disk = disk.clone();
        let store = Arc::downgrade(&store);
        disk.set_concurrent_hook(move |_: &SimDisk, step: Step| {
            on_step(&gates, &hook_disk, &store, step)
        });
    }
    let c = spawn_saver(&store, &gates, "c", 1, 200);
    gates.wait_for("c held");
    let a = spawn_saver(&store, &gates, "a", 2, 200);
    gates.wait_for("a written");
    wait_until_blocked(gates.tid("a"), None, "a waits for c's sync");
    let switches = voluntary_switches(gates.tid("a")).expect("a is waiting");
    gates.set("a parked", switches);
    let b = spawn_saver(&store, &gates, "b", 3, 40_000);
    let c_result = c.join().expect("c");
    let a_result = a.join().expect("a");
    let b_result = b.join().expect("b");
    disk.clear_hook();
    assert!(
        matches!(b_result, Err(Error::Poisoned { .. })),
        "the scenario did not run as planned: b's rollover gave {b_result:?}"
    );
    assert!(store.metrics().poisoned.is_some());
    let mut acked = vec![(filler_seq, filler)];
    if let Ok(saved) = c_result {
        acked.push(saved);
    }
    let a_ok = a_result.as_ref().ok().cloned();
    if let Some(saved) = a_ok.clone() {
        acked.push(saved);
    }
    drop(store);
    check_acknowledged_survive(&disk, &acked, "a's save");
    assert!(
        a_ok.is_none() || gates.get("a synced when poisoned").is_none(),
        "a's save was acknowledged by a sync made after the store was poisoned"
    );
}

/// Named flags and values the threads of the finding 2 scenario wait on.
#[derive(Default)]
struct Gates {
    flags: Mutex<std::collections::BTreeMap<String, u64>>,
    changed: Condvar,
}

impl Gates {
    fn set(&self, name: &str, value: u64) {
        self.flags.lock().unwrap().insert(name.to_owned(), value);
        self.changed.notify_all();
    }

    fn get(&self, name: &str) -> Option<u64> {
        self.flags.lock().unwrap().get(name).copied()
    }

    fn wait_for(&self, name: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut flags = self.flags.lock().unwrap();
        loop {
            if let Some(value) = flags.get(name) {
                return *value;
            }
            assert!(Instant::now() < deadline, "{name} never happened");
            flags = self
                .changed
                .wait_timeout(flags, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    /// The kernel's id of saver thread `thread`.
    fn tid(&self, thread: &str) -> u64 {
        self.wait_for(&format!("tid {thread}"))
    }
}

/// Starts saver thread `name`: it publishes its kernel thread id and saves save `i` with
/// `pad_bytes` of data.
fn spawn_saver(
    store: &Arc<Store>,
    gates: &Arc<Gates>,
    name: &'static str,
    i: u64,
    pad_bytes: usize,
) -> std::thread::JoinHandle<cairn::Result<(u64, Value)>> {
    let (store, gates) = (store.clone(), gates.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            gates.set(&format!("tid {name}"), unsafe { libc::gettid() } as u64);
            let value = data(i, pad_bytes);
            store.save("job", "p", &value).map(|seq| (seq, value))
        })
        .expect("spawn")
}

/// The concurrent hook of the finding 2 scenario; see its test.
fn on_step(gates: &Gates, disk: &SimDisk, store: &std::sync::Weak<Store>, step: Step) {
    let thread = std::thread::current();
    let poisoned = || {
        store
            .upgrade()
            .is_some_and(|s| s.metrics().poisoned.is_some())
    };
    match (thread.name(), step) {
        (Some("a"), Step::Sync) if poisoned() => gates.set("a synced when poisoned", 1),
        (Some("c"), Step::Sync) if gates.get("c held").is_none() => {
            gates.set("c held", 1);
            gates.wait_for("release c");
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u64;
            gates.set("c running", voluntary_switches(tid).expect("c runs"));
        }
        (Some("a"), Step::Write) => gates.set("a written", 1),
        (Some("b"), Step::Create) => {
            gates.set("release c", 1);
            let running = gates.wait_for("c running");
            wait_until_blocked(
                gates.tid("c"),
                Some(running),
                "c, its sync done, waits for b's writer lock to write its mark",
            );
            gates.wait_for("a parked");
            wait_until_blocked(gates.tid("a"), None, "a waits for c's mark");
        }
        // The new segment is in place; the next sync is the rollover's sync of the segment.
        (Some("b"), Step::SyncDir) => disk.inject(Fault::FailSync(1)),
        _ => {}
    }
}

/// The scheduler state of thread `tid` of this process and its voluntary context switches;
/// `None` once the thread has exited.
fn thread_state(tid: u64) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())?;
    Some((state, voluntary_switches(tid)?))
}

fn voluntary_switches(tid: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits until thread `tid` sleeps (blocked on a lock or a condition variable), after more
/// voluntary context switches than `after` when given (it woke up and blocked again), or has
/// exited (a log that never makes it wait).
fn wait_until_blocked(tid: u64, after: Option<u64>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Some((state, switches)) = thread_state(tid) else {
            return;
        };
        if state == 'S' && after.is_none_or(|after| switches > after) {
            return;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Finding 4 at every step: after save 6's sync failed, the store is reopened in the same boot
/// and takes saves 7 to 12; a power loss at every write, sync, creation, rename, removal and
/// directory sync of that reopen and those saves (four ways) must leave a store that opens in
/// the default mode and holds every save acknowledged so far, and besides them at most save 6
/// and the save in flight. Whatever the reopen does to make save 6's bytes durable (or to drop
/// them), it must be crash-safe.
#[test]
fn every_crash_point_after_a_reopen_that_follows_a_failed_sync_keeps_every_acknowledged_save() {
    let disk = SimDisk::new();
    let store = open(&disk).expect("opens");
    let mut acked = Vec::new();
    for i in 1..=5 {
        let value = data(i, 100);
        acked.push((store.save("job", "p", &value).expect("save"), value));
    }
    disk.inject(Fault::FailSync(1));
    store
        .save("job", "p", &data(6, 12_000))
        .expect_err("the sync fails");
    drop(store);
    disk.clear_faults();
    let model = Arc::new(Mutex::new(CrashModel {
        acked,
        in_flight: None,
        crash_states: 0,
    }));
    {
        let model = model.clone();
        disk.set_hook(move |disk: &SimDisk, step: Step| {
            let mut model = model.lock().unwrap();
            model.check_every_crash(disk, step);
        });
    }
    let store = open(&disk).expect("reopens in the same boot");
    for i in 7..=12 {
        let value = data(i, (i % 3 * 5000) as usize);
        model.lock().unwrap().in_flight = Some(value.clone());
        let seq = store.save("job", "p", &value).expect("save");
        let mut model = model.lock().unwrap();
        model.in_flight = None;
        model.acked.push((seq, value));
    }
    drop(store);
    disk.clear_hook();
    let model = model.lock().unwrap();
    check_acknowledged_survive(&disk, &model.acked, "after the last save");
    // Each of the six saves writes and syncs at least once, each step crashed four ways.
    assert!(
        model.crash_states >= 48,
        "{} crash states",
        model.crash_states
    );
}

/// What the crash hook of the every-step test knows: the saves acknowledged so far and the
/// one in flight.
struct CrashModel {
    acked: Vec<(u64, Value)>,
    in_flight: Option<Value>,
    crash_states: u64,
}

impl CrashModel {
    fn check_every_crash(&mut self, disk: &SimDisk, step: Step) {
        let modes = [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::TornSectors,
            CrashMode::TornPages,
        ];
        for (n, mode) in modes.into_iter().enumerate() {
            let seed = disk.steps() * 4 + n as u64;
            let context = format!("step {} ({step:?}), {mode:?}, seed {seed}", disk.steps());
            let crashed = disk.crash(mode, seed);
            let store = open(&crashed)
                .unwrap_or_else(|e| panic!("{context}: does not open after the power loss: {e}"));
            let history = store.history("job").expect("history");
            for (seq, data) in &self.acked {
                assert!(
                    history.iter().any(|c| c.seq == *seq && c.data == *data),
                    "{context}: acknowledged save {seq} is lost; found {:?}",
                    history.iter().map(|c| c.seq).collect::<Vec<_>>()
                );
            }
            let save_6 = data(6, 12_000);
            let extra: Vec<u64> = history
                .iter()
                .filter(|c| {
                    !self.acked.iter().any(|(seq, _)| *seq == c.seq)
                        && c.data != save_6
                        && Some(&c.data) != self.in_flight.as_ref()
                })
                .map(|c| c.seq)
                .collect();
            assert!(extra.is_empty(), "{context}: saves never made: {extra:?}");
            self.crash_states += 1;
        }
    }
}
