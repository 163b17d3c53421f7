//! Real process crashes: `cairn put --stdin` is killed with SIGKILL at a random moment, again
//! and again in the same store, and every save it acknowledged must be there afterwards with
//! exactly the data that was sent.
//!
//! Each round runs the binary with small segments (so rollovers happen), feeds it lines from
//! one thread, collects its acknowledgements in another, and kills it after 0–30 ms: while it
//! opens (and recovers) the store, while it appends, while it rolls a segment over. The test
//! then opens the store with the library (a writer, so recovery repairs what the kill left)
//! and checks the whole log against what was sent, every earlier round in that store
//! included. Rounds accumulate in one store, [`ROUNDS_PER_STORE`] at a time.
//!
//! `CAIRN_KILL9_ROUNDS` raises the number of rounds (default 100); `CAIRN_KILL9_SEED` replays
//! a seed printed by a failing run.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cairn::{FindingKind, Store};
use serde_json::{Value, json};

use common::cli::command;
use common::files::snapshot;
use common::keep_every_checkpoint;
use common::rng::{Rng, env_u64, seed_from_clock};

const DEFAULT_ROUNDS: u64 = 100;
const MAX_KILL_DELAY_MS: u64 = 30;
/// Rounds that crash one store before the next starts: enough for recovery to run on
/// stores recovered many times over, few enough that checking (which reads the whole store
/// after every round) stays linear in the number of rounds.
const ROUNDS_PER_STORE: u64 = 20;
/// Longest wait for the first acknowledgement of a round.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// More lines than any round can save before it is killed; the feeder stops at the kill.
const MAX_LINES_PER_ROUND: u64 = 10_000_000;
/// Few jobs: each check reads every job's history, and each history read scans the log.
const JOBS: [&str; 3] = ["orders", "github_sync", "ünïcode job/1"];

/// The job of line `i` of `round`.
fn job_of(round: u64, i: u64) -> &'static str {
    JOBS[((round + i) % JOBS.len() as u64) as usize]
}

/// The data of line `i` of `round`: identifies the line, and varies in size so that records
/// straddle segment ends in many ways.
fn data_of(round: u64, i: u64) -> Value {
    let pad = "x".repeat(((i * 37 + round * 11) % 200) as usize);
    json!({"round": round, "i": i, "pad": pad})
}

/// How one round crashes.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The `--durability` of the writer. Every mode keeps acknowledged saves through a kill
    /// of the process: they are in the page cache.
    mode: &'static str,
    /// Wait for the first acknowledgement before the delay starts, so that the kill lands
    /// while saving rather than while opening and recovering the store.
    after_first_ack: bool,
    delay_ms: u64,
}

impl Plan {
    fn random(rng: &mut Rng) -> Plan {
        let mode = match rng.below(10) {
            0..6 => "sync",
            6..8 => "buffered",
            _ => "os",
        };
        Plan {
            mode,
            after_first_ack: rng.below(2) == 0,
            delay_ms: rng.below(MAX_KILL_DELAY_MS + 1),
        }
    }
}

/// What one round did.
#[derive(Debug)]
struct Round {
    /// The acknowledgements, in order: the k-th is of line k.
    acks: Vec<(String, u64)>,
    stderr: String,
}

#[test]
fn every_acknowledged_save_survives_sigkill() {
    let seed = env_u64("CAIRN_KILL9_SEED").unwrap_or_else(seed_from_clock);
    let rounds = env_u64("CAIRN_KILL9_ROUNDS").unwrap_or(DEFAULT_ROUNDS);
    eprintln!("kill9: seed {seed} (replay with CAIRN_KILL9_SEED={seed}), {rounds} rounds");
    let mut rng = Rng(seed);
    let temp = tempfile::tempdir().expect("tempdir");
    let mut dir = temp.path().to_path_buf();

    let started = Instant::now();
    let mut checking_time = Duration::ZERO;
    // Lines of each round of the current store that the store holds.
    let mut lines_kept: Vec<u64> = Vec::new();
    let (mut acked_total, mut saved_total, mut torn_tails, mut killed_before_first_ack) =
        (0, 0, 0, 0);
    for round in 0..rounds {
        if round % ROUNDS_PER_STORE == 0 {
            dir = temp.path().join(format!("store{round}"));
            create_store(&dir);
            lines_kept.clear();
        }
        let plan = Plan::random(&mut rng);
        let outcome = crash_round(&dir, lines_kept.len() as u64, plan);
        let context = format!("round {round} (seed {seed}, {plan:?})");
        let checking = Instant::now();
        verify_leaves_crashed_store_alone(&dir, &context);
        torn_tails += check_store(&dir, &outcome, &mut lines_kept, &context);
        checking_time += checking.elapsed();
        acked_total += outcome.acks.len();
        saved_total += lines_kept.last().copied().unwrap_or(0);
        killed_before_first_ack += usize::from(outcome.acks.is_empty());
    }
    eprintln!(
        "kill9: {rounds} rounds, {acked_total} acknowledged saves all present, {saved_total} \
         saves in the store, {torn_tails} torn tails cut, {killed_before_first_ack} kills before \
         the first acknowledgement; {:.1} s, {:.1} s of them checking",
        started.elapsed().as_secs_f64(),
        checking_time.as_secs_f64(),
    );
}

/// Creates the store before the first kill, so that every round's checks (`verify`, reopen)
/// have a store to look at even when the kill lands before `put` created it.
fn create_store(dir: &Path) {
    let options = keep_every_checkpoint();
    let store = Store::open_with(dir, options).expect("create the store");
    store.close().expect("close the new store");
}

/// Runs `put --stdin` on `dir`, feeding it the lines of `round`, and kills it as `plan` says.
fn crash_round(dir: &Path, round: u64, plan: Plan) -> Round {
    let mut child = command(dir)
        .args([
            "--segment-size",
            "64KiB",
            "--keep-last",
            "1000000000",
            "--durability",
            plan.mode,
            "put",
            "--stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn put --stdin");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let feeder = thread::spawn(move || feed(stdin, round));
    let (first_ack_tx, first_ack) = mpsc::channel();
    let collector = thread::spawn(move || collect_acks(stdout, first_ack_tx));
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    if plan.after_first_ack {
        // Disconnected (the child failed before any ack) shows in the exit status below.
        let _ = first_ack.recv_timeout(FIRST_ACK_TIMEOUT);
    }
    thread::sleep(Duration::from_millis(plan.delay_ms));
    // `kill` sends SIGKILL on Unix; it fails only if the child was already reaped.
    let _ = child.kill();
    let status = child.wait().expect("wait for cairn");
    feeder.join().expect("feeder thread");
    let acks = collector.join().expect("collector thread");
    let stderr = stderr_reader.join().expect("stderr thread");
    assert!(
        status.code().is_none(),
        "round {round}: cairn exited by itself ({status}) instead of being killed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "round {round}: {stderr}");
    Round { acks, stderr }
}

/// Writes the lines of `round` until the pipe breaks (the child was killed).
fn feed(mut stdin: ChildStdin, round: u64) {
    for i in 0..MAX_LINES_PER_ROUND {
        let line = json!({"job": job_of(round, i), "phase": format!("phase{}", i % 3),
            "data": data_of(round, i)});
        if writeln!(stdin, "{line}").is_err() {
            return;
        }
    }
}

/// Reads acknowledgements until the child's stdout closes. A line cut short by the kill
/// (no newline) was never acknowledged.
fn collect_acks(stdout: ChildStdout, first_ack: mpsc::Sender<()>) -> Vec<(String, u64)> {
    let mut reader = BufReader::new(stdout);
    let mut acks = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return acks,
            Ok(_) if !line.ends_with('\n') => return acks,
            Ok(_) => {}
        }
        let ack: Value = serde_json::from_str(&line).expect("an acknowledgement is JSON");
        let job = ack["job"].as_str().expect("ack job").to_owned();
        let seq = ack["seq"].as_u64().expect("ack seq");
        acks.push((job, seq));
        if acks.len() == 1 {
            let _ = first_ack.send(());
        }
    }
}

/// Opens the store as a writer (recovering it) and checks the whole log: in seq order it must
/// be, for each round, a prefix of the lines sent, at least as long as
/// what was acknowledged and, for earlier rounds, exactly as long as found before. Returns the
/// number of torn tails recovery cut.
fn check_store(dir: &Path, round: &Round, lines_kept: &mut Vec<u64>, context: &str) -> usize {
    let options = keep_every_checkpoint();
    let store = Store::open_with(dir, options)
        .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}\n{}", round.stderr));
    let report = store.recovery_report();
    let unexpected: Vec<_> = report
        .findings
        .iter()
        .filter(|finding| finding.kind != FindingKind::TornTail)
        .collect();
    assert!(unexpected.is_empty(), "{context}: {report:?}");

    let by_seq = all_checkpoints(&store, context);
    let this_round = lines_kept.len() as u64;
    let mut kept = vec![0u64; lines_kept.len() + 1];
    let mut previous: Option<(u64, u64)> = None;
    for (seq, (job, data)) in &by_seq {
        let line_round = data["round"].as_u64().expect("round in data");
        let line = data["i"].as_u64().expect("i in data");
        let position = (line_round, line);
        assert!(
            line_round <= this_round && previous.is_none_or(|p| p < position),
            "{context}: seq {seq} holds round {line_round} line {line} after {previous:?}"
        );
        let kept_of_round = &mut kept[line_round as usize];
        assert_eq!(
            line, *kept_of_round,
            "{context}: seq {seq}: a line is missing"
        );
        assert_eq!(job, job_of(line_round, line), "{context}: seq {seq}: job");
        assert_eq!(
            *data,
            data_of(line_round, line),
            "{context}: seq {seq}: data"
        );
        *kept_of_round += 1;
        previous = Some(position);
    }
    for (earlier, (before, now)) in lines_kept.iter().zip(&kept).enumerate() {
        assert_eq!(
            before, now,
            "{context}: round {earlier} changed after recovery"
        );
    }
    let kept_now = kept[this_round as usize];
    assert!(
        kept_now >= round.acks.len() as u64,
        "{context}: {} saves acknowledged, only {kept_now} in the store",
        round.acks.len()
    );
    check_acks(&by_seq, round, this_round, context);
    lines_kept.push(kept_now);
    report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::TornTail)
        .count()
}

/// `cairn verify` on the store as the kill left it: at most a torn tail, reported with exit
/// status 1, and not a byte changed.
fn verify_leaves_crashed_store_alone(dir: &Path, context: &str) {
    let before = snapshot(dir);
    let output = command(dir)
        .args(["verify", "--json"])
        .output()
        .expect("run cairn verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{context}: verify printed no report ({e}): {stderr}"));
    let findings = report["findings"].as_array().expect("findings");
    assert!(
        findings.iter().all(|f| f["kind"] == "torn-tail"),
        "{context}: {report}"
    );
    let expected_code = if findings.is_empty() { 0 } else { 1 };
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "{context}: {stderr}"
    );
    assert!(
        snapshot(dir) == before,
        "{context}: verify changed the store"
    );
}

/// Every checkpoint of every job, by seq; each job's history must be in strictly increasing
/// seq order and end at its latest checkpoint.
fn all_checkpoints(store: &Store, context: &str) -> BTreeMap<u64, (String, Value)> {
    let mut by_seq = BTreeMap::new();
    for summary in store.jobs().expect("jobs") {
        let history = store.history(&summary.job).expect("history");
        assert!(
            history.windows(2).all(|w| w[0].seq < w[1].seq),
            "{context}: history of {} is not in seq order",
            summary.job
        );
        let last = history.last().map(|c| c.seq);
        assert_eq!(last, Some(summary.latest_seq), "{context}: {}", summary.job);
        assert_eq!(history.len() as u64, summary.checkpoints, "{context}");
        for checkpoint in history {
            let old = by_seq.insert(checkpoint.seq, (checkpoint.job, checkpoint.data));
            assert!(old.is_none(), "{context}: seq {} twice", checkpoint.seq);
        }
    }
    // Seal records take seqs too, so the last record may be no checkpoint.
    let last_checkpoint_seq = by_seq.keys().next_back().copied().unwrap_or(0);
    assert!(
        last_checkpoint_seq <= store.last_seq(),
        "{context}: checkpoint seq {last_checkpoint_seq} after the last seq {}",
        store.last_seq()
    );
    by_seq
}

/// The k-th acknowledgement of the round names the job of line k and the seq it is stored at.
fn check_acks(by_seq: &BTreeMap<u64, (String, Value)>, round: &Round, number: u64, context: &str) {
    for (line, (job, seq)) in (0u64..).zip(&round.acks) {
        assert_eq!(job, job_of(number, line), "{context}: ack of line {line}");
        let stored = by_seq.get(seq).unwrap_or_else(|| {
            panic!(
                "{context}: acknowledged seq {seq} is missing; stderr: {}",
                round.stderr
            )
        });
        assert_eq!(stored.0, *job, "{context}: seq {seq} job");
        assert_eq!(stored.1, data_of(number, line), "{context}: seq {seq} data");
    }
}

/// A writer killed between creating `CAIRN.tmp` and renaming it to `CAIRN` (the store marker)
/// leaves a directory that holds only `CAIRN.tmp`. Such a directory never held data and must
/// open as a new store (it was once refused as "not empty and has no CAIRN marker file").
#[test]
fn a_store_killed_while_writing_its_marker_still_opens() {
    let temp = tempfile::tempdir().expect("tempdir");
    std::fs::write(temp.path().join("CAIRN.tmp"), b"").expect("leftover marker");
    let options = keep_every_checkpoint();
    let store = Store::open_with(temp.path(), options).expect("opens as a new store");
    store.save("job", "p", &1).expect("save");
}
