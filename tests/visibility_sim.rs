//! What readers see of saves in flight (issue 9, finding 6), on the simulated disk: in
//! `Sync` mode a record is visible only once it is durable, and a save that fails leaves
//! nothing visible; in `Buffered` and `OsOnly` a save is visible once it returned.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use cairn::testing::{CrashMode, Fault, SimDisk, Step};
use cairn::{Checkpoint, Durability, Error, ErrorContext, JobState, JobSummary, RunPlan, Store};
use serde_json::{Value, json};

use common::{sim, small_segments};

fn open(disk: &SimDisk, durability: Durability) -> Store {
    sim::open(disk, small_segments().durability(durability)).expect("open")
}

/// Everything a reader can ask about a job.
#[derive(Debug, PartialEq)]
struct Shown {
    latest: Option<(u64, Value)>,
    history: Vec<u64>,
    job: Option<JobState>,
    jobs: Vec<JobSummary>,
    plan: RunPlan<Checkpoint>,
}

impl Shown {
    fn of(store: &Store, job: &str) -> Shown {
        Shown {
            latest: store.latest(job).expect("latest").map(|c| (c.seq, c.data)),
            history: store
                .history(job)
                .expect("history")
                .iter()
                .map(|c| c.seq)
                .collect(),
            job: store.job(job),
            jobs: store.jobs().expect("jobs"),
            plan: store.plan(job).expect("plan"),
        }
    }
}

/// A store with a job that saved twice and has a run in progress.
fn store_with_a_run(disk: &SimDisk) -> Store {
    let store = open(disk, Durability::Sync);
    store.start_run("job").expect("start run");
    store.save("job", "p", &json!({"n": 1})).expect("save");
    store.save("job", "p", &json!({"n": 2})).expect("save");
    store.save("other", "p", &json!({"n": 1})).expect("save");
    store
}

/// After a failed save or job event, the store shows what it showed before, and keeps
/// showing it: the failed record never becomes visible.
fn check_nothing_visible(store: &Store, before: &Shown, err: Error) {
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert_eq!(&Shown::of(store, "job"), before);
    assert!(store.flush().is_err(), "the store is poisoned");
    assert!(store.save("job", "p", &json!({"n": 9})).is_err());
    assert_eq!(&Shown::of(store, "job"), before);
}

#[test]
fn a_save_whose_sync_fails_is_never_visible() {
    let disk = SimDisk::new();
    let store = store_with_a_run(&disk);
    let before = Shown::of(&store, "job");
    assert_eq!(before.latest, Some((3, json!({"n": 2}))));
    disk.inject(Fault::FailSync(1));
    let err = store
        .save("job", "p", &json!({"n": 3}))
        .expect_err("the sync fails");
    check_nothing_visible(&store, &before, err);
}

#[test]
fn a_job_event_whose_sync_fails_is_never_visible() {
    let disk = SimDisk::new();
    let store = store_with_a_run(&disk);
    let before = Shown::of(&store, "job");
    assert!(
        matches!(before.plan, RunPlan::Resume { checkpoint: _ }),
        "{before:?}"
    );
    disk.inject(Fault::FailSync(1));
    let err = store
        .fail_run("job", "boom", ErrorContext::default())
        .expect_err("the sync fails");
    // Neither the failure nor its retry count is in the job's state or its plan.
    check_nothing_visible(&store, &before, err);
}

/// Blocks the first sync after it is armed, once that sync has written, until released: the
/// group-commit leader then holds the sync while other savers append and wait.
struct SyncGate {
    armed: Arc<AtomicBool>,
    synced: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl SyncGate {
    fn install(disk: &SimDisk) -> SyncGate {
        let armed = Arc::new(AtomicBool::new(false));
        let (synced_tx, synced) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let flag = armed.clone();
        disk.set_hook(move |_, step| {
            if step == Step::Sync && flag.swap(false, Ordering::SeqCst) {
                synced_tx.send(()).expect("test waits");
                release_rx.recv().expect("test releases");
            }
        });
        SyncGate {
            armed,
            synced,
            release,
        }
    }
}

/// The latest checkpoint of `job` that a power loss now would keep.
fn durable_latest(disk: &SimDisk, job: &str) -> Option<u64> {
    let crashed = disk.crash(CrashMode::LoseUnsynced, 1);
    let store = sim::open_read_only(&crashed, small_segments().durability(Durability::Sync))
        .expect("the crashed disk opens");
    store.latest(job).expect("latest").map(|c| c.seq)
}

/// Several savers in `Sync` mode; the leader's sync of record 2 is held (after it wrote)
/// while savers of records 3 and 4 append and wait for it. A reader thread then must see
/// nothing above what a power loss keeps: not records 3 and 4, which are only in the page
/// cache.
#[test]
fn readers_never_see_a_checkpoint_that_is_not_durable() {
    let disk = SimDisk::new();
    let store = Arc::new(open(&disk, Durability::Sync));
    assert_eq!(store.save("job", "p", &json!({"n": 1})).expect("save"), 1);
    let gate = SyncGate::install(&disk);
    gate.armed.store(true, Ordering::SeqCst);
    let saver = |n: u64| {
        let store = store.clone();
        std::thread::spawn(move || store.save("job", "p", &json!({ "n": n })))
    };
    let leader = saver(2);
    gate.synced.recv().expect("the leader syncs record 2");
    let followers = [saver(3), saver(4)];
    // Records 3 and 4 are in the log (the writer lock is free again) but not durable.
    while store.last_seq() < 4 {
        std::thread::yield_now();
    }
    let durable = durable_latest(&disk, "job").expect("record 2 is durable");
    assert_eq!(durable, 2);
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || Shown::of(&store, "job"))
    };
    let shown = reader.join().expect("reader");
    let seen = shown.latest.as_ref().map_or(0, |(seq, _)| *seq);
    assert!(
        seen <= durable,
        "a reader sees record {seen}, durable is {durable}"
    );
    assert!(shown.history.iter().all(|&seq| seq <= durable), "{shown:?}");
    assert!(
        shown.jobs.iter().all(|j| j.latest_seq <= durable),
        "{shown:?}"
    );
    gate.release.send(()).expect("leader waits");
    let mut acknowledged = vec![leader.join().expect("leader").expect("save 2")];
    for follower in followers {
        acknowledged.push(follower.join().expect("follower").expect("save"));
    }
    acknowledged.sort_unstable();
    assert_eq!(acknowledged, [2, 3, 4]);
    // Once acknowledged, every save is visible.
    assert_eq!(Shown::of(&store, "job").history, [1, 2, 3, 4]);
    disk.clear_hook();
}

/// Many savers, a compacting thread and a reader in `Sync` mode: whatever the reader sees of
/// a job, a power loss right after would keep. Checks the interplay of the pending index
/// updates with compaction's index swap too.
#[test]
fn readers_beside_savers_and_compactions_see_only_durable_checkpoints() {
    let disk = SimDisk::new();
    let store = Arc::new(sim::open(&disk, small_segments()).expect("open"));
    let jobs: [&'static str; 3] = ["a", "b", "c"];
    let savers: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0..150u64 {
                    store
                        .save(job, "p", &json!({"n": n, "pad": "x".repeat(1000)}))
                        .expect("save");
                }
            })
        })
        .collect();
    let compactor = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                store.compact().expect("compact");
                std::thread::yield_now();
            }
        })
    };
    let mut checks = 0;
    while !savers.iter().all(|s| s.is_finished()) || checks < 50 {
        for job in jobs {
            let Some(seen) = store.latest(job).expect("latest") else {
                continue;
            };
            let kept = durable_latest(&disk, job).unwrap_or(0);
            assert!(
                seen.seq <= kept,
                "{job}: a reader sees record {}, a power loss keeps up to {kept}",
                seen.seq
            );
        }
        checks += 1;
    }
    for saver in savers {
        saver.join().expect("saver");
    }
    compactor.join().expect("compactor");
    for job in jobs {
        let latest = store.latest(job).expect("latest").expect("saved");
        assert_eq!(latest.data["n"], 149, "{job}");
    }
}

/// In `Buffered` and `OsOnly` a save is acknowledged before it is durable, and readers see it
/// as soon as it returned. A failed sync poisons the store; readers keep seeing every
/// acknowledged save (some of which a power loss may now take).
#[test]
fn without_sync_a_save_is_visible_once_it_returned_and_stays_so_after_a_failed_sync() {
    let modes = [
        Durability::Buffered {
            interval: Duration::from_secs(3600),
        },
        Durability::OsOnly,
    ];
    for durability in modes {
        let disk = SimDisk::new();
        let store = open(&disk, durability);
        for n in 1..=3u64 {
            let seq = store.save("job", "p", &json!({ "n": n })).expect("save");
            let shown = Shown::of(&store, "job");
            assert_eq!(
                shown.latest,
                Some((seq, json!({ "n": n }))),
                "{durability:?}"
            );
            assert_eq!(shown.history.last(), Some(&seq), "{durability:?}");
            assert_eq!(shown.jobs.first().map(|j| j.latest_seq), Some(seq));
        }
        store
            .fail_run("job", "boom", ErrorContext::default())
            .expect("event");
        let before = Shown::of(&store, "job");
        assert_eq!(before.job.as_ref().map(|s| s.retry_count), Some(1));
        assert!(
            durable_latest(&disk, "job").is_none(),
            "{durability:?}: nothing is durable yet"
        );
        disk.inject(Fault::FailSync(1));
        let err = store.flush().expect_err("the sync fails");
        assert!(
            matches!(err, Error::Io { .. } | Error::Poisoned { .. }),
            "{err}"
        );
        assert!(store.save("job", "p", &json!({"n": 4})).is_err());
        assert_eq!(Shown::of(&store, "job"), before, "{durability:?}");
    }
}
