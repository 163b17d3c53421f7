//! Running the `cairn` binary (feature `cli`) and checking what scripts rely on: exit
//! statuses, stdout, and one `cairn: ` line on stderr for an error.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use serde_json::Value;

/// The `cairn` binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Stdout as one JSON value a line.
    pub fn stdout_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    /// Asserts the exit status and that stderr, on failure, is one `cairn: ` line (a usage
    /// error with status 2 is clap's message instead, unless cairn wrote it).
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{self:?}");
        if code == 1 || (code == 2 && self.stderr.starts_with("cairn: ")) {
            let errors = self
                .stderr
                .lines()
                .filter(|line| line.starts_with("cairn: "))
                .count();
            assert_eq!(errors, 1, "exactly one error line: {self:?}");
        }
        self
    }
}

/// A `cairn` command on `dir`, without the caller's environment leaking in.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--dir")
        .arg(dir)
        .env_remove("CAIRN_DIR")
        .env_remove("CAIRN_LOG");
    command
}

/// A `cairn` command on `dir` with 64 KiB segments, so that every open is quick.
pub fn cairn(dir: &Path) -> Command {
    let mut command = command(dir);
    command.arg("--segment-size").arg("64KiB");
    command
}

/// Runs `command` with `stdin` as its input and checks that it did not panic.
pub fn run_with_input(command: &mut Command, stdin: &[u8]) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // The binary may stop reading early (bad line); a broken pipe here is expected then.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("wait for cairn");
    writer.join().expect("stdin writer");
    let run = Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{run:?}");
    run
}

/// Runs `command` with empty stdin and checks that it did not panic.
pub fn run(command: &mut Command) -> Run {
    run_with_input(command, b"")
}

/// A temporary directory and the path of a store in it, not created yet.
pub fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("store");
    (temp, dir)
}

/// A `put --stdin` that holds the writer lock of a store.
pub struct HeldWriter {
    pub child: Child,
    /// Dropping it ends the writer's input: it then exits.
    pub stdin: ChildStdin,
    /// The sequence number of the one line it saved.
    pub seq: u64,
}

/// Spawns `put --stdin` and waits for the acknowledgement of one line (job `held`), so that
/// it holds the writer lock.
pub fn spawn_holding_writer(dir: &Path) -> HeldWriter {
    let mut child = cairn(dir)
        .args(["put", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"{\"job\":\"held\",\"phase\":\"p\",\"data\":1}\n")
        .expect("write line");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read ack");
    let ack: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ack {line:?}: {e}"));
    assert_eq!(ack["job"], "held", "{ack}");
    let seq = ack["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq: {ack}"));
    HeldWriter { child, stdin, seq }
}
