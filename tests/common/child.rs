//! Real process crashes: a test re-runs its own test binary as a child process, to run one
//! test that does the child's work (the test returns at once in a normal run), and kills it
//! (sled's `test_crash_recovery.rs`).

use std::process::{Child, Command};

/// A command that runs only the test `name` of this test binary, with its output shown and
/// on one thread. The caller sets the environment that tells the test it is the child.
pub fn this_test(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    command
}

/// A child process that is killed and reaped when dropped, if it still runs: also when the
/// parent's test fails before waiting for it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // Fails only if the child has exited since.
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
