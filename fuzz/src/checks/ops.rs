//! Target `ops`: a sequence of operations on a store on the simulated disk, checked against a
//! model (the model test of sled's `fuzz_model.rs`, driven by the fuzzer).
//!
//! Each input byte starts an operation: save (job from a small set, payload up to 4 KiB),
//! reopen, crash (a [`CrashMode`] and a seed: the disk is replaced by what a power loss would
//! leave, and the store reopened on it), inject a fault (a failed or short write, a failed
//! sync, a full disk, at the n-th operation of its kind from now), or check the contents
//! through the writer and through a read-only open. At most 200 operations; every input ends
//! with a crash and a last check.
//!
//! The model: every save that returned `Ok` (with `Durability::Sync`) is durable. A save that
//! failed while writing or syncing may or may not be in the log: the next writer open decides,
//! and from then on it is durable too (a writer syncs what it recovered). A save refused by a
//! poisoned store, or one that failed creating a segment, left nothing. So after every open,
//! crash or not, the store holds exactly the durable saves, in order, with their sequence
//! numbers, and possibly the undecided ones: never anything else.

use std::path::Path;

use cairn::testing::{self, CrashMode, Fault, SimDisk};
use cairn::{Error, Options, RecoveryMode, Store};
use serde_json::{Value, json};

use super::image;
use super::input::Input;

const MAX_OPS: usize = 200;
const MAX_PAD_BYTES: usize = 4000;
const JOBS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const CRASH_MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TornSectors,
    CrashMode::TornPages,
];

#[derive(Debug, Clone, PartialEq)]
struct Save {
    job: String,
    data: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the log for good, with this sequence number.
    Durable(u64),
    /// A failed save that may or may not be in the log.
    Undecided,
}

#[derive(Debug, Default)]
struct Model {
    log: Vec<(Save, State)>,
    /// A save failed in a way that poisons the store; later saves must be refused.
    poisoned: bool,
    /// Faults were injected and may still be armed.
    faults_armed: bool,
    saves_made: u64,
}

impl Model {
    fn last_durable_seq(&self) -> u64 {
        self.log
            .iter()
            .filter_map(|(_, state)| match state {
                State::Durable(seq) => Some(*seq),
                State::Undecided => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Checks `found` (every checkpoint, by sequence number) against the model: every durable
    /// save is there with its number, undecided ones may be, nothing else is. With `decide`,
    /// the undecided saves become durable or are dropped, as found.
    fn reconcile(&mut self, found: &[(u64, Save)], decide: bool, context: &str) {
        let mut next = found.iter().peekable();
        let mut decided = Vec::new();
        for (save, state) in &self.log {
            match state {
                State::Durable(seq) => {
                    let got = next.next();
                    assert_eq!(
                        got,
                        Some(&(*seq, save.clone())),
                        "{context}: durable save {seq} lost or changed"
                    );
                    decided.push((save.clone(), *state));
                }
                State::Undecided => match next.peek() {
                    Some((seq, got)) if got == save => {
                        decided.push((save.clone(), State::Durable(*seq)));
                        next.next();
                    }
                    _ => {}
                },
            }
        }
        let extra: Vec<_> = next.collect();
        assert!(
            extra.is_empty(),
            "{context}: saves found that were never made: {extra:?}"
        );
        if decide {
            self.log = decided;
        }
    }
}

fn options() -> Options {
    image::options(RecoveryMode::TolerateTornTail)
}

/// Every checkpoint of the store, by sequence number.
fn found(store: &Store, context: &str) -> Vec<(u64, Save)> {
    image::contents(store)
        .unwrap_or_else(|e| panic!("{context}: reads fail: {e}"))
        .into_iter()
        .map(|c| {
            (
                c.seq,
                Save {
                    job: c.job,
                    data: c.data,
                },
            )
        })
        .collect()
}

/// Opens a writer on `disk`, which must work (after disarming faults, if an armed fault made
/// the first try fail), and decides the undecided saves. `None` when a known bug stops the
/// scenario.
fn open_writer(disk: &SimDisk, model: &mut Model, context: &str) -> Option<Store> {
    let dir = Path::new(image::DIR);
    let store = match testing::open(disk, dir, options(), false) {
        Ok(store) => store,
        Err(e) => {
            assert!(
                model.faults_armed,
                "{context}: the store does not open: {e}"
            );
            disk.clear_faults();
            model.faults_armed = false;
            testing::open(disk, dir, options(), false)
                .unwrap_or_else(|e| panic!("{context}: does not open once the disk works: {e}"))
        }
    };
    model.reconcile(&found(&store, context), true, context);
    model.poisoned = false;
    Some(store)
}

fn save(store: &Store, model: &mut Model, input: &mut Input, op: u8, context: &str) {
    let job = JOBS[usize::from(op >> 3) % JOBS.len()].to_string();
    let pad = (usize::from(input.u8()) * 16).min(MAX_PAD_BYTES);
    let data = json!({"n": model.saves_made, "pad": "p".repeat(pad)});
    model.saves_made += 1;
    let save = Save { job, data };
    let result = store.save(&save.job, "extract", &save.data);
    if tracing() {
        eprintln!("  save {} pad {pad}: {result:?}", save.job);
    }
    match result {
        Ok(seq) => {
            assert!(
                !model.poisoned,
                "{context}: a poisoned store acknowledged save {seq}"
            );
            assert!(
                seq > model.last_durable_seq(),
                "{context}: sequence number {seq} reused"
            );
            model.log.push((save, State::Durable(seq)));
        }
        Err(e) => {
            assert!(
                model.faults_armed,
                "{context}: save failed without a fault: {e}"
            );
            let poisons = matches!(
                &e,
                Error::Poisoned { .. }
                    | Error::Io {
                        op: "write record" | "sync sealed segment",
                        ..
                    }
            );
            let clean = matches!(&e, Error::DiskFull { .. })
                || matches!(
                    &e,
                    Error::Io {
                        op: "create segment"
                            | "write segment header"
                            | "rename new segment"
                            | "sync directory",
                        ..
                    }
                );
            assert!(poisons || clean, "{context}: unexpected error {e:?}");
            if model.poisoned {
                assert!(
                    matches!(e, Error::Poisoned { .. }),
                    "{context}: poisoned, yet {e:?}"
                );
            } else if poisons {
                model.poisoned = true;
                model.log.push((save, State::Undecided));
            }
        }
    }
}

fn fault(input: &mut Input) -> Fault {
    let n = 1 + u64::from(input.u8() % 8);
    match input.u8() % 4 {
        0 => Fault::FailWrite(n),
        1 => Fault::ShortWrite(n),
        2 => Fault::FailSync(n),
        _ => Fault::NoSpace(n),
    }
}

/// Set `CAIRN_FUZZ_TRACE=1` to print every operation (when reproducing a failure).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CAIRN_FUZZ_TRACE").is_some())
}

pub fn check_ops(data: &[u8]) {
    let mut input = Input::new(data);
    let mut disk = SimDisk::new();
    let mut model = Model::default();
    let mut store = open_writer(&disk, &mut model, "first open").expect("a new store opens");
    for step in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let context = format!("op {step} ({op})");
        if tracing() {
            eprintln!(
                "{context}: saves made {}, poisoned {}",
                model.saves_made, model.poisoned
            );
        }
        match op % 8 {
            0..=3 => save(&store, &mut model, &mut input, op, &context),
            4 => {
                drop(store);
                let Some(reopened) = open_writer(&disk, &mut model, &context) else {
                    return;
                };
                store = reopened;
            }
            5 => {
                let mode = CRASH_MODES[usize::from(input.u8()) % CRASH_MODES.len()];
                let crashed = disk.crash(mode, u64::from(input.u16()));
                // The old store's final sync at drop goes to the old disk: after the crash.
                drop(store);
                disk = crashed;
                model.faults_armed = false;
                let context = format!("{context} crash {mode:?}");
                let Some(reopened) = open_writer(&disk, &mut model, &context) else {
                    return;
                };
                store = reopened;
            }
            6 => {
                let fault = fault(&mut input);
                if tracing() {
                    eprintln!("  inject {fault:?}");
                }
                disk.inject(fault);
                model.faults_armed = true;
            }
            _ => {
                model.reconcile(&found(&store, &context), false, &context);
                let reader = testing::open(&disk, Path::new(image::DIR), options(), true)
                    .unwrap_or_else(|e| panic!("{context}: a reader does not open: {e}"));
                model.reconcile(&found(&reader, &context), false, &context);
            }
        }
    }
    disk.clear_faults();
    let crashed = disk.crash(CrashMode::TornSectors, 0);
    drop(store);
    drop(open_writer(&crashed, &mut model, "final crash"));
}
