//! kill -9 while compaction runs: the test binary re-runs itself as a child that saves from
//! several threads into a store with small segments, aggressive automatic compaction and a
//! short retention window, while one more thread compacts in a loop. The child prints an
//! acknowledgement for every save that returned, and markers around each of its own
//! compactions. The parent kills it with SIGKILL: at a random moment, just after a compaction
//! started, just after one began writing its compacted segment, or while the child is still
//! opening (and recovering) the store. It then reopens the store and checks exactly what
//! retention guarantees (see [`check_job`]).
//!
//! Each thread owns its jobs and saves them one after another, with a counter per job that
//! goes up by one with each save and carries on across rounds from the latest checkpoint the
//! store holds. A save that returned but whose acknowledgement the kill cut off is on disk
//! (the process died, not the machine); so each job may hold one save more than acknowledged,
//! never fewer.
//!
//! `CAIRN_KILL9_ROUNDS` sets the number of rounds (default 100); `CAIRN_KILL9_SEED` replays a
//! seed printed by a run.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{ChildStdout, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cairn::{AutoCompact, FindingKind, Options, Retention, Store};
use serde_json::{Value, json};

use common::child::this_test;
use common::rng::{Rng, env_u64, seed_from_clock};

const CHILD_DIR_ENV: &str = "CAIRN_KILL9_COMPACTION_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "CAIRN_KILL9_COMPACTION_CHILD_ROUND";
const DEFAULT_ROUNDS: u64 = 150;
const ROUNDS_PER_STORE: u64 = 25;
const SAVER_THREADS: usize = 3;
const JOBS_PER_THREAD: usize = 2;
const RARE_JOB_EVERY: usize = 16;
const KEEP_LAST: usize = 3;
/// Longest wait for the child to open the store or print the marker a plan waits for.
const MARKER_TIMEOUT: Duration = Duration::from_secs(20);

/// 64 KiB segments, a short retention window and aggressive automatic compaction.
fn options() -> Options {
    common::small_segments()
        .retention(Retention::default().keep_last(KEEP_LAST))
        .auto_compact(AutoCompact::default().segments(2))
}

fn job_name(thread: usize, k: usize) -> String {
    format!("t{thread}-job{k}")
}

fn all_jobs() -> Vec<String> {
    (0..SAVER_THREADS)
        .flat_map(|t| (0..JOBS_PER_THREAD).map(move |k| job_name(t, k)))
        .collect()
}

/// The data of a save: names its job, counter and round, with 0.8–2 KB of padding so that a
/// 64 KiB segment rolls over every few dozen saves.
fn data_of(job: &str, counter: u64, round: u64) -> Value {
    let pad = "p".repeat(800 + (counter * 131 % 1200) as usize);
    json!({"job": job, "counter": counter, "round": round, "pad": pad})
}

fn counter_of(data: &Value) -> u64 {
    data["counter"].as_u64().expect("counter in the data")
}

/// One line to stdout, flushed, so that the parent sees it before the process can die.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("print");
    out.flush().expect("flush");
}

/// The child: saver threads and a compacting thread until the process is killed. Only runs
/// when the parent re-executes this binary with `CHILD_DIR_ENV` set; otherwise it returns.
#[test]
fn child_entry_point() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let round = env_u64(CHILD_ROUND_ENV).expect("the parent sets the round");
    let store = Arc::new(Store::open_with(&dir, options()).expect("child opens the store"));
    // The test harness has printed "test child_entry_point ... " without a newline: end
    // that line first, so that "ready" is a line of its own.
    say("");
    say("ready");
    let mut threads = Vec::new();
    for t in 0..SAVER_THREADS {
        let store = store.clone();
        threads.push(thread::spawn(move || save_forever(&store, t, round)));
    }
    let compactor = store.clone();
    threads.push(thread::spawn(move || compact_forever(&compactor)));
    for thread in threads {
        thread.join().expect("child thread");
    }
}

fn save_forever(store: &Store, thread: usize, round: u64) {
    let jobs: Vec<String> = (0..JOBS_PER_THREAD).map(|k| job_name(thread, k)).collect();
    let mut next: Vec<u64> = jobs
        .iter()
        .map(|job| {
            let latest = store.latest(job).expect("latest");
            latest.map_or(0, |c| counter_of(&c.data) + 1)
        })
        .collect();
    for n in 0usize.. {
        // Job 0 of each thread saves often; job 1 once in RARE_JOB_EVERY saves, so that its
        // history after a compaction is about KEEP_LAST long and the bound is tested.
        let k = usize::from((n + thread) % RARE_JOB_EVERY == RARE_JOB_EVERY - 1);
        let (job, counter) = (&jobs[k], next[k]);
        let seq = store
            .save(job, "extract", &data_of(job, counter, round))
            .expect("save");
        say(&format!("ack {job} {counter} {seq}"));
        next[k] += 1;
    }
}

/// Compacts with the store's own retention policy (what `Store::compact` does), printing
/// markers around each call and when the compacted segment starts being written.
fn compact_forever(store: &Store) {
    let retention = store.options().get_retention();
    loop {
        say("compact start");
        let report = store
            .compact_with_progress(&retention, false, &mut |progress| {
                if progress.phase == cairn::CompactionPhase::Write {
                    say("compact write");
                }
            })
            .expect("compact");
        say(&format!("compact end {}", report.compacted));
        thread::sleep(Duration::from_millis(2));
    }
}

/// What the child printed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Ready,
    CompactStart,
    CompactWrite,
    CompactEnd,
    Ack { job: String, counter: u64, seq: u64 },
}

fn parse_line(line: &str) -> Option<Line> {
    match line {
        "ready" => return Some(Line::Ready),
        "compact start" => return Some(Line::CompactStart),
        "compact write" => return Some(Line::CompactWrite),
        _ if line.starts_with("compact end ") => return Some(Line::CompactEnd),
        _ => {}
    }
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let job = parts.next()?.to_owned();
    let counter = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some(Line::Ack { job, counter, seq })
}

/// When a round's kill comes.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// While the child opens and recovers the store: this long after spawning it.
    WhileOpening { delay_us: u64 },
    /// This long after the child is ready.
    Random { delay_us: u64 },
    /// This long after the `nth` "compact start" marker.
    AfterCompactStart { nth: u64, delay_us: u64 },
    /// This long after the `nth` "compact write" marker: while the compacted segment is
    /// written, renamed into place, installed, and the old segments removed.
    AfterCompactWrite { nth: u64, delay_us: u64 },
}

impl Plan {
    fn random(rng: &mut Rng) -> Plan {
        match rng.below(10) {
            0 => Plan::WhileOpening {
                delay_us: rng.below(30_000),
            },
            1..4 => Plan::Random {
                delay_us: rng.below(400_000),
            },
            4..6 => Plan::AfterCompactStart {
                nth: 1 + rng.below(10),
                delay_us: rng.below(3_000),
            },
            _ => Plan::AfterCompactWrite {
                nth: 1 + rng.below(8),
                delay_us: rng.below(2_000),
            },
        }
    }
}

/// What one round saw of the child.
struct Round {
    lines: Vec<Line>,
    stderr: String,
}

impl Round {
    /// Whether the kill came between a "compact start" and its "compact end", and whether
    /// after its "compact write".
    fn killed_in_compaction(&self) -> (bool, bool) {
        let last = self.lines.iter().rev().find(|l| {
            matches!(
                l,
                Line::CompactStart | Line::CompactWrite | Line::CompactEnd
            )
        });
        match last {
            Some(Line::CompactStart) => (true, false),
            Some(Line::CompactWrite) => (true, true),
            _ => (false, false),
        }
    }
}

/// Reads the child's lines in a thread of its own, passing on the ones it understands.
fn read_lines(stdout: ChildStdout) -> (thread::JoinHandle<()>, mpsc::Receiver<Line>) {
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            // A line cut short by the kill (no newline) was never printed in full: an ack
            // cut there may name a wrong seq, so it does not count.
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if !line.ends_with('\n') => return,
                Ok(_) => {}
            }
            if let Some(parsed) = parse_line(line.trim_end())
                && tx.send(parsed).is_err()
            {
                return;
            }
        }
    });
    (reader, rx)
}

/// Waits for the marker `plan` names (keeping the lines read meanwhile in `lines`); returns
/// how long to wait after it before the kill.
fn wait_for_plan(
    rx: &mpsc::Receiver<Line>,
    plan: Plan,
    spawned: Instant,
    lines: &mut Vec<Line>,
) -> u64 {
    let (wanted, nth, delay_us) = match plan {
        Plan::WhileOpening { delay_us } => return delay_us,
        Plan::Random { delay_us } => (Line::Ready, 1, delay_us),
        Plan::AfterCompactStart { nth, delay_us } => (Line::CompactStart, nth, delay_us),
        Plan::AfterCompactWrite { nth, delay_us } => (Line::CompactWrite, nth, delay_us),
    };
    let mut seen = 0;
    while seen < nth {
        let left = MARKER_TIMEOUT.saturating_sub(spawned.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen += u64::from(line == wanted);
                lines.push(line);
            }
            // The child died by itself (its exit status tells why) or never got there.
            Err(_) => break,
        }
    }
    delay_us
}

/// Runs one child on `dir` and kills it as `plan` says.
fn run_child(dir: &Path, round: u64, plan: Plan) -> Round {
    let mut child = this_test("child_entry_point")
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .env_remove("CAIRN_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let spawned = Instant::now();
    let stdout = child.stdout.take().expect("child stdout");
    let mut stderr = child.stderr.take().expect("child stderr");
    let (reader, rx) = read_lines(stdout);
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut lines = Vec::new();
    let delay_us = wait_for_plan(&rx, plan, spawned, &mut lines);
    thread::sleep(Duration::from_micros(delay_us));
    // `kill` sends SIGKILL; it fails only if the child was already reaped.
    let _ = child.kill();
    let status = child.wait().expect("reap child");
    reader.join().expect("reader thread");
    lines.extend(rx.try_iter());
    let stderr = stderr_reader.join().expect("stderr thread");
    assert!(
        status.code().is_none(),
        "round {round}: the child exited by itself ({status}) instead of being killed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "round {round}: {stderr}");
    Round { lines, stderr }
}

/// Totals over all rounds, printed at the end.
#[derive(Debug, Default)]
struct Tally {
    acks: usize,
    killed_in_compaction: u64,
    killed_while_writing_compacted: u64,
    leftover_compacting_files: u64,
    superseded_segments_found: u64,
    torn_tails: u64,
    unacknowledged_saves_found: u64,
    max_segments_at_reopen: usize,
}

#[test]
fn compaction_killed_at_any_moment_keeps_every_acknowledged_save() {
    let seed = env_u64("CAIRN_KILL9_SEED").unwrap_or_else(seed_from_clock);
    let rounds = env_u64("CAIRN_KILL9_ROUNDS").unwrap_or(DEFAULT_ROUNDS);
    eprintln!(
        "kill9_compaction: seed {seed} (replay with CAIRN_KILL9_SEED={seed}), {rounds} rounds"
    );
    let mut rng = Rng(seed);
    let temp = tempfile::tempdir().expect("tempdir");
    let mut dir = temp.path().to_path_buf();
    // Each job's latest counter and the seq of each counter seen, in the current store.
    let mut latest: HashMap<String, u64> = HashMap::new();
    let mut seqs: HashMap<(String, u64), u64> = HashMap::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    for round in 0..rounds {
        if round % ROUNDS_PER_STORE == 0 {
            dir = temp.path().join(format!("store{round}"));
            Store::open_with(&dir, options())
                .expect("create the store")
                .close()
                .expect("close");
            latest.clear();
            seqs.clear();
        }
        let plan = Plan::random(&mut rng);
        let outcome = run_child(&dir, round, plan);
        let context = format!("round {round} ({plan:?}), seed {seed} (CAIRN_KILL9_SEED to replay)");
        let (in_compaction, while_writing) = outcome.killed_in_compaction();
        tally.killed_in_compaction += u64::from(in_compaction);
        tally.killed_while_writing_compacted += u64::from(while_writing);
        tally.acks += outcome
            .lines
            .iter()
            .filter(|l| matches!(l, Line::Ack { .. }))
            .count();
        let context = format!("{context}\nchild stderr: {}", outcome.stderr);
        check_round(
            &dir,
            round,
            &outcome,
            &mut latest,
            &mut seqs,
            &mut tally,
            &context,
        );
    }
    eprintln!(
        "kill9_compaction: {rounds} rounds in {:.1} s, {} acknowledged saves checked; kills \
         during a compaction call: {}, of them after it began writing the compacted segment: \
         {}; reopens that found a leftover .compacting file: {}, segments a committed \
         compaction had not removed yet: {}; torn tails cut: {}; unacknowledged saves found: \
         {}; most segments at a reopen: {}",
        started.elapsed().as_secs_f64(),
        tally.acks,
        tally.killed_in_compaction,
        tally.killed_while_writing_compacted,
        tally.leftover_compacting_files,
        tally.superseded_segments_found,
        tally.torn_tails,
        tally.unacknowledged_saves_found,
        tally.max_segments_at_reopen,
    );
    assert!(
        tally.acks as u64 > rounds,
        "the children must get saves acknowledged"
    );
    assert!(
        tally.killed_while_writing_compacted > 0,
        "some kills must land while a compacted segment is being written"
    );
}

/// Reopens the store the kill left and checks it against what the child acknowledged.
fn check_round(
    dir: &Path,
    round: u64,
    outcome: &Round,
    latest: &mut HashMap<String, u64>,
    seqs: &mut HashMap<(String, u64), u64>,
    tally: &mut Tally,
    context: &str,
) {
    tally.leftover_compacting_files += file_names(dir)
        .iter()
        .filter(|n| n.ends_with(".compacting"))
        .count() as u64;
    let store = Store::open_with(dir, options())
        .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    check_recovery(dir, &store, tally, context);
    let mut acks: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for line in &outcome.lines {
        if let Line::Ack { job, counter, seq } = line {
            acks.entry(job.clone()).or_default().push((*counter, *seq));
        }
    }
    for job in all_jobs() {
        let job_acks = acks.remove(&job).unwrap_or_default();
        let check = JobCheck {
            store: &store,
            job: &job,
            round,
            previous_latest: latest.get(&job).copied(),
            acks: &job_acks,
            context,
        };
        let (now_latest, unacknowledged) = check_job(&check, seqs);
        tally.unacknowledged_saves_found += u64::from(unacknowledged);
        if let Some(counter) = now_latest {
            latest.insert(job, counter);
        }
    }
    assert!(acks.is_empty(), "{context}: acks of unknown jobs: {acks:?}");
    check_compaction_after_recovery(&store, context);
    store.close().expect("close");
}

/// The reopen found a torn tail at most, and removed what an interrupted compaction left: no
/// temporary file, and exactly the segment files the store uses.
fn check_recovery(dir: &Path, store: &Store, tally: &mut Tally, context: &str) {
    let report = store.recovery_report();
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.kind == FindingKind::TornTail),
        "{context}: {report:?}"
    );
    tally.torn_tails += report.findings.len() as u64;
    tally.superseded_segments_found += report.segments_superseded as u64;
    let names = file_names(dir);
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".compacting") || n.ends_with(".creating")),
        "{context}: leftovers after a writer reopened the store: {names:?}"
    );
    let segment_files = names.iter().filter(|n| n.ends_with(".seg")).count();
    assert_eq!(segment_files, store.segment_count(), "{context}: {names:?}");
    tally.max_segments_at_reopen = tally.max_segments_at_reopen.max(segment_files);
}

/// Compaction works on the recovered store: the sealed segments go into one, and no job's
/// latest changes.
fn check_compaction_after_recovery(store: &Store, context: &str) {
    let latests = || -> Vec<Option<u64>> {
        all_jobs()
            .iter()
            .map(|job| store.latest(job).expect("latest").map(|c| c.seq))
            .collect()
    };
    let before = latests();
    store
        .compact()
        .unwrap_or_else(|e| panic!("{context}: compact: {e}"));
    assert!(
        store.segment_count() <= 2,
        "{context}: {} segments after a compaction",
        store.segment_count()
    );
    assert_eq!(before, latests(), "{context}: compaction changed a latest");
}

struct JobCheck<'a> {
    store: &'a Store,
    job: &'a str,
    round: u64,
    /// The job's latest counter after the previous round (`None`: no checkpoint yet).
    previous_latest: Option<u64>,
    /// This round's acknowledgements of the job: (counter, seq), in order.
    acks: &'a [(u64, u64)],
    context: &'a str,
}

/// What is guaranteed for one job, and checked exactly:
///
/// - the round's acknowledged counters continue the previous latest one by one (the child
///   resumed from what the parent saw);
/// - the latest counter `L` is the last acknowledged one or, when the save after it returned
///   but was not acknowledged before the kill, one more (never less, never two more: each
///   thread has one save in flight at most);
/// - the history is a run of consecutive counters ending at `L` (every save the job ever made
///   up to `L` reached the disk, so compaction can only have dropped the oldest), in strictly
///   increasing seq order, holding the newest `min(KEEP_LAST, L + 1)` at least. So the newest
///   `KEEP_LAST` acknowledged saves are all there, except that a present unacknowledged save
///   counts as one of the newest `KEEP_LAST` and may have pushed the oldest of them out;
/// - each checkpoint holds exactly its save's data, under the seq it was acknowledged with.
///
/// Returns the job's latest counter and whether it is an unacknowledged save.
fn check_job(check: &JobCheck<'_>, seqs: &mut HashMap<(String, u64), u64>) -> (Option<u64>, bool) {
    let JobCheck {
        store,
        job,
        round,
        previous_latest,
        acks,
        context,
    } = *check;
    let context = format!("{context}\njob {job}, acks {acks:?}");
    let first_new = previous_latest.map_or(0, |l| l + 1);
    record_acks(job, first_new, acks, seqs, &context);
    let last_acked = acks.last().map(|&(c, _)| c).or(previous_latest);
    let history = store.history(job).expect("history");
    let Some(latest) = history.last() else {
        assert_eq!(last_acked, None, "{context}: the job lost every checkpoint");
        return (None, false);
    };
    let latest_counter = counter_of(&latest.data);
    let newest_possible = last_acked.map_or(0, |c| c + 1);
    assert!(
        last_acked.is_none_or(|c| latest_counter >= c) && latest_counter <= newest_possible,
        "{context}: latest counter {latest_counter}, last acknowledged {last_acked:?}"
    );
    let at_least = (latest_counter + 1).min(KEEP_LAST as u64) as usize;
    assert!(
        history.len() >= at_least,
        "{context}: {} checkpoints, the newest {at_least} must be kept",
        history.len()
    );
    assert!(
        history.len() as u64 <= latest_counter + 1,
        "{context}: {} checkpoints up to counter {latest_counter}",
        history.len()
    );
    let first_counter = latest_counter + 1 - history.len() as u64;
    let mut previous_seq = 0;
    for (checkpoint, counter) in history.iter().zip(first_counter..) {
        assert!(
            checkpoint.seq > previous_seq,
            "{context}: seqs not increasing at counter {counter}"
        );
        previous_seq = checkpoint.seq;
        let saved_in = checkpoint.data["round"].as_u64().expect("round");
        if counter >= first_new {
            assert_eq!(
                saved_in, round,
                "{context}: counter {counter} is new this round"
            );
        } else {
            assert!(
                saved_in < round,
                "{context}: counter {counter} is from an earlier round"
            );
        }
        assert_eq!(
            checkpoint.data,
            data_of(job, counter, saved_in),
            "{context}: seq {} is not the save of counter {counter}",
            checkpoint.seq
        );
        match seqs.insert((job.to_owned(), counter), checkpoint.seq) {
            Some(seq) => assert_eq!(seq, checkpoint.seq, "{context}: seq of counter {counter}"),
            // Only the save after the last acknowledged one may be new to the parent.
            None => assert_eq!(
                counter, newest_possible,
                "{context}: counter {counter} is new"
            ),
        }
    }
    let unacknowledged = Some(latest_counter) != last_acked;
    (Some(latest_counter), unacknowledged)
}

/// The round's acknowledged counters of `job` continue from `first_new` one by one (the child
/// resumed from what the parent saw), each acknowledged once; notes their seqs.
fn record_acks(
    job: &str,
    first_new: u64,
    acks: &[(u64, u64)],
    seqs: &mut HashMap<(String, u64), u64>,
    context: &str,
) {
    for (i, &(counter, seq)) in acks.iter().enumerate() {
        assert_eq!(
            counter,
            first_new + i as u64,
            "{context}: acknowledged counters"
        );
        let known = seqs.insert((job.to_owned(), counter), seq);
        assert!(
            known.is_none(),
            "{context}: counter {counter} acknowledged twice"
        );
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list the store")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}
