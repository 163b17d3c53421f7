//! kill -9 of a library-using process with several writer threads: the test binary re-runs
//! itself as a child whose threads save concurrently (sharing syncs through group commit) and
//! print an acknowledgement for every save that returned; the parent kills the child with
//! SIGKILL at a random moment, reopens the store, and checks that every acknowledged save is
//! there, intact. Rounds accumulate in a store for 25 rounds, so each recovery starts from the
//! last one; then a fresh store starts (checking grows with the store).
//!
//! `CAIRN_KILL9_THREADS_ROUNDS` sets the number of rounds (default 100); `CAIRN_KILL9_SEED`
//! replays a run.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cairn::Store;
use serde_json::json;

use common::child::this_test;
use common::keep_every_checkpoint;
use common::rng::{env_u64, seed_from_clock, xorshift};

const CHILD_DIR_ENV: &str = "CAIRN_KILL9_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "CAIRN_KILL9_CHILD_ROUND";
const WRITER_THREADS: u64 = 4;
const ROUNDS_PER_STORE: u64 = 25;

/// The child: `WRITER_THREADS` threads save until the process is killed. Only runs when the
/// parent re-executes this binary with `CHILD_DIR_ENV` set; in a normal test run it returns.
#[test]
fn child_writers_entry_point() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let round = env_u64(CHILD_ROUND_ENV).expect("the parent sets the round");
    let store =
        Arc::new(Store::open_with(&dir, keep_every_checkpoint()).expect("child opens the store"));
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0u64.. {
                    let data = json!({"round": round, "thread": t, "n": n, "pad": "k".repeat((n % 50) as usize * 20)});
                    let seq = store.save(&format!("writer{t}"), "extract", &data).expect("save");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {round} {t} {n} {seq}").expect("print ack");
                    out.flush().expect("flush ack");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
}

struct Ack {
    round: u64,
    thread: u64,
    n: u64,
    seq: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line
        .strip_prefix("ack ")?
        .split(' ')
        .map(|p| p.parse::<u64>());
    let mut next = || parts.next()?.ok();
    Some(Ack {
        round: next()?,
        thread: next()?,
        n: next()?,
        seq: next()?,
    })
}

/// Runs one child and kills it after `delay`; returns its acknowledgements.
fn run_child(dir: &Path, round: u64, delay: Duration) -> Vec<Ack> {
    let mut child = this_test("child_writers_entry_point")
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| parse_ack(&l))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap child");
    reader.join().expect("reader thread")
}

#[test]
fn every_acknowledged_save_of_a_multithreaded_process_survives_sigkill() {
    let rounds = env_u64("CAIRN_KILL9_THREADS_ROUNDS").unwrap_or(100);
    let seed = env_u64("CAIRN_KILL9_SEED").unwrap_or_else(seed_from_clock);
    let mut rng = seed | 1;
    let temp = tempfile::tempdir().expect("tempdir");
    let mut dir = temp.path().to_path_buf();
    let mut acked: Vec<Ack> = Vec::new();
    let mut acked_total = 0;
    for round in 0..rounds {
        if round % ROUNDS_PER_STORE == 0 {
            dir = temp.path().join(format!("store{round}"));
            Store::open_with(&dir, keep_every_checkpoint())
                .expect("create the store")
                .close()
                .expect("close");
            acked.clear();
        }
        let delay = Duration::from_millis(30 + xorshift(&mut rng) % 120);
        let new_acks = run_child(&dir, round, delay);
        acked_total += new_acks.len();
        acked.extend(new_acks);
        let context = format!("round {round}, seed {seed} (CAIRN_KILL9_SEED to replay)");
        let store = Store::open_with(&dir, keep_every_checkpoint())
            .unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
        let mut by_seq = HashMap::new();
        for t in 0..WRITER_THREADS {
            let history = store.history(&format!("writer{t}")).unwrap();
            assert!(history.windows(2).all(|w| w[0].seq < w[1].seq), "{context}");
            for checkpoint in history {
                by_seq.insert(checkpoint.seq, checkpoint.data);
            }
        }
        for ack in &acked {
            let data = by_seq
                .get(&ack.seq)
                .unwrap_or_else(|| panic!("{context}: acknowledged seq {} lost", ack.seq));
            assert_eq!(
                (&data["round"], &data["thread"], &data["n"]),
                (&json!(ack.round), &json!(ack.thread), &json!(ack.n)),
                "{context}: seq {} holds other data",
                ack.seq
            );
        }
    }
    eprintln!(
        "kill9_threads: {rounds} rounds, {acked_total} acknowledged saves from {WRITER_THREADS} \
         threads all present (seed {seed})"
    );
    assert!(
        acked_total as u64 > rounds,
        "the children must get some saves acknowledged"
    );
}
