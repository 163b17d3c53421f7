//! A full disk on real file systems (issue 14): ext4, XFS and btrfs on loop-mounted images, and
//! a small tmpfs. On each, the test fills the file system while saving, and checks that
//!
//! - the CLI ends with `cairn: disk full ...` and exit status 1, and the library with
//!   `Error::DiskFull` (or, when a sync ran out of space, `Error::Poisoned` whose cause is the
//!   full disk), never with a death by signal (a write through a shared map that needs new
//!   blocks on btrfs is a SIGBUS);
//! - every acknowledged save is there, byte for byte, after a reopen;
//! - saves work again once space is freed: without a reopen when only a write failed, after a
//!   reopen when a sync failed and poisoned the store;
//! - a writer killed with SIGKILL loses no acknowledged save (one round per file system).
//!
//! The library part runs in a child process (this test binary, re-executed) so that a signal
//! shows as the child's death, not the test runner's.
//!
//! It needs root, loop devices, `mount`, `losetup`, `mkfs.ext4`, `mkfs.xfs` (xfsprogs) and
//! `mkfs.btrfs` (btrfs-progs). Without them each test says why and returns, unless
//! `CAIRN_REQUIRE_FS_TESTS=1` is set (as `.ci/run` does): then a missing tool is a failure, so
//! CI can never skip these tests silently.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::{AutoCompact, Error, Options, Retention, Store};
use serde_json::{Value, json};

use common::child::{KillOnDrop, this_test};
use common::cli::command;
use common::files::segment_files;

/// Set to `1` to turn a missing tool, root or loop device into a failure.
const REQUIRE_ENV: &str = "CAIRN_REQUIRE_FS_TESTS";
/// Set in a child process: `<role> <store dir>`.
const CHILD_ENV: &str = "CAIRN_FULL_DISK_CHILD";
/// Lines of the child's protocol start with this; the test harness prints other lines.
const LINE_PREFIX: &str = "full-disk-child: ";
const SEGMENT_BYTES: u64 = 1 << 20;
/// What the filler file leaves free: half a segment, so the next segment cannot be created.
const LEFT_FREE_BYTES: u64 = 512 << 10;
/// Checkpoints of about 4 KB, as in the reproduction.
const PAD_CHARS: usize = 4000;
/// More saves than a filled file system can take, so a loop that ends here never filled it.
const MAX_SAVES: u64 = 3000;
const SAVER_THREADS: u64 = 4;
/// Saves each thread makes once space is freed.
const SAVES_AFTER_FREEING: u64 = 20;
/// Acknowledgements to wait for before the kill -9 round kills its child.
const ACKS_BEFORE_KILL: usize = 200;
/// Longest wait for one line from a child.
const CHILD_LINE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsKind {
    Ext4,
    Xfs,
    Btrfs,
    Tmpfs,
}

impl FsKind {
    fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Tmpfs => "tmpfs",
        }
    }

    /// The size of the file system. mkfs.xfs refuses anything under 300 MB.
    fn size_mib(self) -> u64 {
        match self {
            FsKind::Xfs => 320,
            FsKind::Ext4 | FsKind::Btrfs => 128,
            FsKind::Tmpfs => 64,
        }
    }

    /// The mkfs command line, without the image path.
    fn mkfs(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            FsKind::Ext4 => Some(("mkfs.ext4", &["-q", "-F", "-m", "0"])),
            FsKind::Xfs => Some(("mkfs.xfs", &["-q", "-f"])),
            FsKind::Btrfs => Some(("mkfs.btrfs", &["-q", "-f"])),
            FsKind::Tmpfs => None,
        }
    }
}

#[test]
fn a_full_ext4_is_a_clear_error_and_loses_nothing() {
    full_disk_round(FsKind::Ext4);
}

#[test]
fn a_full_xfs_is_a_clear_error_and_loses_nothing() {
    full_disk_round(FsKind::Xfs);
}

#[test]
fn a_full_btrfs_is_a_clear_error_and_loses_nothing() {
    full_disk_round(FsKind::Btrfs);
}

#[test]
fn a_full_tmpfs_is_a_clear_error_and_loses_nothing() {
    full_disk_round(FsKind::Tmpfs);
}

/// The child roles, dispatched from the test that re-executes this binary.
fn child_role() -> Option<(String, PathBuf)> {
    let value = std::env::var(CHILD_ENV).ok()?;
    let (role, dir) = value.split_once(' ')?;
    Some((role.to_string(), PathBuf::from(dir)))
}

fn full_disk_round(kind: FsKind) {
    if let Some((role, dir)) = child_role() {
        match role.as_str() {
            "savers" => savers_child(&dir),
            "loop" => loop_child(&dir),
            other => panic!("unknown child role {other}"),
        }
        return;
    }
    if let Some(reason) = missing_environment(kind) {
        assert!(
            std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
            "{REQUIRE_ENV}=1 but the {} full-disk test cannot run: {reason}",
            kind.name()
        );
        eprintln!(
            "full_disk: SKIPPED on {}: {reason} (set {REQUIRE_ENV}=1 to make this a failure)",
            kind.name()
        );
        return;
    }
    let mounted = Mounted::new(kind).unwrap_or_else(|e| panic!("mount {}: {e}", kind.name()));
    let context = kind.name();
    cli_fills_the_disk(&mounted, context);
    library_fills_the_disk(&mounted, kind, context);
    kill9_round(&mounted, context);
    a_hole_in_the_tail_is_reserved_again_or_the_open_fails(&mounted, context);
}

// ---------------------------------------------------------------------------------------------
// The environment: root, tools, loop devices, and a mounted file system that cleans up after
// itself.

fn missing_environment(kind: FsKind) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (mount needs it)".into());
    }
    let mut tools = vec!["mount", "umount"];
    if let Some((mkfs, _)) = kind.mkfs() {
        tools.extend([mkfs, "losetup"]);
        if !Path::new("/dev/loop-control").exists() {
            return Some("no loop devices (/dev/loop-control is missing)".into());
        }
    }
    let missing: Vec<&str> = tools
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing tools: {} (apt-get install xfsprogs btrfs-progs)",
            missing.join(", ")
        ));
    }
    None
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs a system tool, returning its stderr on failure.
fn run_tool(name: &str, args: &[&str]) -> Result<String, String> {
    let tool = find_tool(name).ok_or_else(|| format!("{name} not found"))?;
    let out = Command::new(&tool)
        .args(args)
        .output()
        .map_err(|e| format!("run {name}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{name} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Loop devices are picked by "first free"; tests running at once take turns.
static MOUNTING: Mutex<()> = Mutex::new(());

/// A file system mounted for one test; unmounted (and its loop device detached) on drop.
struct Mounted {
    mount_point: PathBuf,
    loop_device: Option<String>,
    /// Holds the image and the mount point; removed after the unmount.
    _temp: tempfile::TempDir,
}

impl Mounted {
    fn new(kind: FsKind) -> Result<Mounted, String> {
        let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_point = temp.path().join("mnt");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        let mnt = mount_point.to_string_lossy().into_owned();
        let size = kind.size_mib() << 20;
        let _turn = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
        let Some((mkfs, mkfs_args)) = kind.mkfs() else {
            run_tool(
                "mount",
                &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &mnt],
            )?;
            return Ok(Mounted {
                mount_point,
                loop_device: None,
                _temp: temp,
            });
        };
        let image = temp.path().join(format!("{}.img", kind.name()));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("create image: {e}"))?;
        let image = image.to_string_lossy().into_owned();
        run_tool(mkfs, &[mkfs_args, &[image.as_str()]].concat())?;
        let device = run_tool("losetup", &["--find", "--show", &image])?;
        let mounted = Mounted {
            mount_point,
            loop_device: Some(device.clone()),
            _temp: temp,
        };
        run_tool("mount", &[&device, &mnt])?;
        Ok(mounted)
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _turn = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
        let mnt = self.mount_point.to_string_lossy().into_owned();
        // A child that just died may still hold files open for a moment.
        let mut unmounted = false;
        for _ in 0..50 {
            match run_tool("umount", &[&mnt]) {
                Ok(_) => {
                    unmounted = true;
                    break;
                }
                Err(e) if e.contains("not mounted") => {
                    unmounted = true;
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        if !unmounted {
            let _ = run_tool("umount", &["-l", &mnt]);
        }
        if let Some(device) = &self.loop_device {
            let _ = run_tool("losetup", &["-d", device]);
        }
    }
}

/// Free bytes for an unprivileged writer, as `df` shows them. (ext4 is made without blocks
/// reserved for root, so this is what root may use too.)
fn free_bytes(dir: &Path) -> u64 {
    let path = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a temp path");
    // SAFETY: statvfs writes only into the struct it is given; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    stat.f_bavail * stat.f_frsize
}

/// Writes a file that leaves about [`LEFT_FREE_BYTES`] free, syncs it, and returns its path.
fn fill(mount_point: &Path) -> PathBuf {
    fill_leaving(mount_point, LEFT_FREE_BYTES)
}

/// Writes a file that leaves about `left_bytes` free, syncs it, and returns its path. Stops
/// early, without failing, when the file system runs out sooner.
fn fill_leaving(mount_point: &Path, left_bytes: u64) -> PathBuf {
    let path = mount_point.join("filler");
    let mut file = std::fs::File::create(&path).expect("create filler");
    let target = free_bytes(mount_point).saturating_sub(left_bytes);
    let chunk = vec![0x66u8; 1 << 20];
    let mut written = 0u64;
    while written < target {
        let len = (target - written).min(chunk.len() as u64) as usize;
        match file.write(&chunk[..len]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("write filler: {e}"),
        }
    }
    // ENOSPC at write-back would only make the disk fuller; either way it is full.
    let _ = file.sync_all();
    eprintln!(
        "full_disk: filler of {written} bytes, {} bytes left",
        free_bytes(mount_point)
    );
    path
}

fn free(filler: &Path, mount_point: &Path) {
    std::fs::remove_file(filler).expect("remove filler");
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    eprintln!(
        "full_disk: filler removed, {} bytes free",
        free_bytes(mount_point)
    );
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the parts.

fn assert_no_signal(status: &ExitStatus, context: &str) {
    assert!(
        status.signal().is_none(),
        "{context}: killed by signal {:?} ({status}); a full disk must be an error, not a crash",
        status.signal()
    );
}

fn padded(i: u64) -> Value {
    json!({"i": i, "pad": "q".repeat(PAD_CHARS)})
}

fn open_options() -> Options {
    Options::default()
        .segment_size(SEGMENT_BYTES)
        .auto_compact(AutoCompact::disabled())
        .retention(Retention::default().keep_last(usize::MAX))
}

/// Every acknowledged save (job, data) is in the store with exactly that data.
fn assert_all_present(dir: &Path, acked: &[(String, Value)], context: &str) {
    let store = Store::open_read_only_with(dir, open_options())
        .unwrap_or_else(|e| panic!("{context}: reopen {}: {e}", dir.display()));
    let jobs: BTreeSet<&str> = acked.iter().map(|(job, _)| job.as_str()).collect();
    let mut stored: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for job in jobs {
        let history = store
            .history(job)
            .unwrap_or_else(|e| panic!("{context}: history of {job}: {e}"));
        stored.insert(job, history.into_iter().map(|c| c.data).collect());
    }
    let mut missing = 0;
    for (job, data) in acked {
        if !stored.get(job.as_str()).is_some_and(|h| h.contains(data)) {
            missing += 1;
            eprintln!(
                "{context}: acknowledged save of {job} missing: {}",
                data["i"]
            );
        }
    }
    assert_eq!(
        missing,
        0,
        "{context}: {missing} of {} acknowledged saves lost",
        acked.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The CLI: the reproduction of issue 14.

fn cli_put(dir: &Path, job: &str, data: &Value) -> Output {
    command(dir)
        .args(["--segment-size", "1MiB", "--no-auto-compact", "put", job])
        .args(["--phase", "p", "--data", &data.to_string()])
        .output()
        .expect("run cairn")
}

fn cli_fills_the_disk(mounted: &Mounted, fs: &str) {
    let context = format!("{fs} cli");
    let dir = mounted.path().join("cli");
    let mut acked = Vec::new();
    let put_ok = |i: u64, data: Value, acked: &mut Vec<(String, Value)>| {
        let job = format!("job{}", i % 3);
        let out = cli_put(&dir, &job, &data);
        assert_no_signal(&out.status, &format!("{context}: put {i}"));
        let ok = out.status.success();
        if ok {
            acked.push((job, data));
        }
        (ok, out)
    };
    for i in 1..=20 {
        let (ok, out) = put_ok(i, json!({"i": i}), &mut acked);
        assert!(
            ok,
            "{context}: put {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let filler = fill(mounted.path());
    let mut failure = None;
    for i in 21..=MAX_SAVES {
        let (ok, out) = put_ok(i, padded(i), &mut acked);
        if !ok {
            failure = Some((i, out));
            break;
        }
    }
    let (i, out) = failure.unwrap_or_else(|| panic!("{context}: the disk never filled"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{context}: put {i} failed: {}", stderr.trim());
    assert_eq!(out.status.code(), Some(1), "{context}: {stderr}");
    assert!(
        stderr.starts_with("cairn: disk full"),
        "{context}: not a clear disk-full message: {stderr}"
    );
    assert_all_present(&dir, &acked, &format!("{context}, disk full"));
    free(&filler, mounted.path());
    let (ok, out) = put_ok(i, padded(i), &mut acked);
    assert!(
        ok,
        "{context}: the save after freeing space failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_present(&dir, &acked, &format!("{context}, space freed"));
}

// ---------------------------------------------------------------------------------------------
// The library, from several threads, in a child process.

/// A child process of this test binary in `role`, with piped stdin and stdout. It is killed
/// if the test fails before it is waited for, so that it never keeps writing to a file system
/// the test is unmounting.
fn spawn_child(role: &str, dir: &Path, test: &str) -> KillOnDrop {
    let child = this_test(test)
        .env(CHILD_ENV, format!("{role} {}", dir.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    KillOnDrop(child)
}

/// The protocol lines of a child's stdout, from a reader thread.
fn child_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(line) = line.strip_prefix(LINE_PREFIX)
                && send.send(line.to_string()).is_err()
            {
                break;
            }
        }
    });
    receive
}

fn test_name(kind: FsKind) -> String {
    format!("a_full_{}_is_a_clear_error_and_loses_nothing", kind.name())
}

/// Reads lines until `until`, recording acknowledgements and errors.
fn read_until(
    lines: &Receiver<String>,
    until: &str,
    acked: &mut Vec<(String, Value)>,
    errors: &mut Vec<String>,
    context: &str,
) {
    loop {
        let line = lines
            .recv_timeout(CHILD_LINE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{context}: waiting for {until}: {e}"));
        if line == until {
            return;
        }
        match line.split_once(' ') {
            Some(("ACK", rest)) => {
                let (job, i) = rest.split_once(' ').expect("ACK job i");
                let i: u64 = i.parse().expect("ACK number");
                acked.push((job.to_string(), padded(i)));
            }
            Some(("ERR", rest)) => errors.push(rest.to_string()),
            _ => panic!("{context}: unexpected line from the child: {line}"),
        }
    }
}

fn library_fills_the_disk(mounted: &Mounted, kind: FsKind, fs: &str) {
    let context = format!("{fs} library");
    let dir = mounted.path().join("lib");
    let mut guard = spawn_child("savers", &dir, &test_name(kind));
    let child = &mut guard.0;
    let lines = child_lines(child);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let (mut acked, mut errors) = (Vec::new(), Vec::new());
    read_until(&lines, "READY", &mut acked, &mut errors, &context);
    let filler = fill(mounted.path());
    writeln!(stdin, "go").expect("tell the child to go");
    read_until(&lines, "FULL", &mut acked, &mut errors, &context);
    eprintln!("{context}: {} saves, then: {errors:?}", acked.len());
    assert_eq!(
        errors.len(),
        SAVER_THREADS as usize,
        "{context}: {errors:?}"
    );
    for error in &errors {
        assert!(
            error.starts_with("DiskFull ") || error.starts_with("Poisoned-by-disk-full "),
            "{context}: not a clear disk-full error: {error}"
        );
    }
    free(&filler, mounted.path());
    writeln!(stdin, "freed").expect("tell the child space is free");
    read_until(&lines, "DONE", &mut acked, &mut errors, &context);
    drop(stdin);
    let status = child.wait().expect("wait for the child");
    assert_no_signal(&status, &context);
    assert!(status.success(), "{context}: child failed: {status}");
    assert_all_present(&dir, &acked, &context);
}

/// One saver thread's output.
fn say(out: &Mutex<std::io::Stdout>, line: &str) {
    let out = out.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = out.lock();
    writeln!(out, "{LINE_PREFIX}{line}").expect("write to parent");
    out.flush().expect("flush to parent");
}

/// How a save failed, for the parent: a clear disk-full error or anything else.
fn describe(error: &Error) -> String {
    match error {
        Error::DiskFull { .. } => format!("DiskFull {error}"),
        Error::Poisoned { cause } if cause.contains("disk full") => {
            format!("Poisoned-by-disk-full {error}")
        }
        _ => format!("Other {error:?}"),
    }
}

/// Saves from [`SAVER_THREADS`] threads until each gets an error, then, once the parent has
/// freed space, saves again: on the same store when every error was clean, else after a
/// reopen.
fn savers_child(dir: &Path) {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut store = Store::open_with(dir, open_options()).expect("open the store");
    for t in 0..SAVER_THREADS {
        store
            .save(&format!("lib{t}"), "p", &padded(t))
            .expect("save before the disk is full");
        say(&out, &format!("ACK lib{t} {t}"));
    }
    say(&out, "READY");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read go");
    let poisoned = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..SAVER_THREADS)
            .map(|t| {
                let (store, out) = (&store, &out);
                scope.spawn(move || {
                    for n in 1..MAX_SAVES {
                        let i = n * SAVER_THREADS + t;
                        match store.save(&format!("lib{t}"), "p", &padded(i)) {
                            Ok(_) => say(out, &format!("ACK lib{t} {i}")),
                            Err(e) => {
                                say(out, &format!("ERR {}", describe(&e)));
                                return matches!(e, Error::Poisoned { .. });
                            }
                        }
                    }
                    say(out, "ERR never-full");
                    false
                })
            })
            .collect();
        // Every thread is joined before looking at the results.
        let poisoned: Vec<bool> = threads
            .into_iter()
            .map(|t| t.join().expect("saver thread"))
            .collect();
        poisoned.contains(&true)
    });
    say(&out, "FULL");
    std::io::stdin().read_line(&mut line).expect("read freed");
    if poisoned {
        drop(store);
        store = Store::open_with(dir, open_options()).expect("reopen after a poisoning sync");
    }
    for t in 0..SAVER_THREADS {
        for n in 0..SAVES_AFTER_FREEING {
            let i = (MAX_SAVES + n) * SAVER_THREADS + t;
            store
                .save(&format!("lib{t}"), "p", &padded(i))
                .unwrap_or_else(|e| panic!("save after space was freed: {e}"));
            say(&out, &format!("ACK lib{t} {i}"));
        }
    }
    store.close().expect("close");
    say(&out, "DONE");
}

// ---------------------------------------------------------------------------------------------
// kill -9.

/// Saves in a loop until killed.
fn loop_child(dir: &Path) {
    let out = Mutex::new(std::io::stdout());
    let options = open_options().segment_size(64 * 1024);
    let store = Store::open_with(dir, options).expect("open the store");
    for i in 0.. {
        let job = format!("kill{}", i % 3);
        store.save(&job, "p", &padded(i)).expect("save");
        say(&out, &format!("ACK {job} {i}"));
    }
}

fn kill9_round(mounted: &Mounted, fs: &str) {
    let context = format!("{fs} kill -9");
    let dir = mounted.path().join("kill9");
    let kind = [FsKind::Ext4, FsKind::Xfs, FsKind::Btrfs, FsKind::Tmpfs]
        .into_iter()
        .find(|k| k.name() == fs)
        .expect("a known file system");
    let mut guard = spawn_child("loop", &dir, &test_name(kind));
    let child = &mut guard.0;
    let lines = child_lines(child);
    let stdin: ChildStdin = child.stdin.take().expect("piped stdin");
    let mut acked = Vec::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = lines
            .recv_timeout(CHILD_LINE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{context}: waiting for saves: {e}"));
        let (job, i) = line
            .strip_prefix("ACK ")
            .and_then(|rest| rest.split_once(' '))
            .unwrap_or_else(|| panic!("{context}: unexpected line {line}"));
        acked.push((job.to_string(), padded(i.parse().expect("ACK number"))));
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("wait for the child");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{context}: {status}");
    drop(stdin);
    // Acknowledgements the child printed before it died.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        if let Some((job, i)) = line.strip_prefix("ACK ").and_then(|r| r.split_once(' ')) {
            acked.push((job.to_string(), padded(i.parse().expect("ACK number"))));
        }
    }
    // A writer open runs recovery and repairs the tail, then the check reads everything.
    let store = Store::open_with(&dir, open_options().segment_size(64 * 1024))
        .unwrap_or_else(|e| panic!("{context}: reopen after kill: {e}"));
    store.close().expect("close");
    assert_all_present(&dir, &acked, &context);
    eprintln!("{context}: {} acknowledged saves all present", acked.len());
}

// ---------------------------------------------------------------------------------------------
// A hole in the tail segment (issue 9 section 7; since issue 11 every segment is a hole past
// what its writer reserved). On a full disk, a writer open must reserve what it writes next or
// fail cleanly, and saves into the hole must reserve their space first: a clean DiskFull,
// never a failure in the middle of a record.

fn punch_hole(path: &Path, offset: u64, len: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: plain system call on an open descriptor.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    assert_eq!(rc, 0, "punch a hole: {}", std::io::Error::last_os_error());
}

/// Bytes of disk the file holds (`st_blocks`), preallocated ones included.
fn allocated_bytes(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).expect("stat")) * 512
}

fn newest_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().expect("a segment")
}

fn a_hole_in_the_tail_is_reserved_again_or_the_open_fails(mounted: &Mounted, fs: &str) {
    let context = format!("{fs} hole in the tail");
    let dir = mounted.path().join("hole");
    let mut acked = Vec::new();
    let store = Store::open_with(&dir, open_options()).expect("open");
    for i in 0..5 {
        store.save("hole", "p", &padded(i)).expect("save");
        acked.push(("hole".to_string(), padded(i)));
    }
    store.close().expect("close");
    let segment = newest_segment(&dir);
    let hole_bytes = SEGMENT_BYTES / 2;
    punch_hole(&segment, SEGMENT_BYTES - hole_bytes, hole_bytes);
    let filler = fill_leaving(mounted.path(), hole_bytes / 8);
    let mut next = 5;
    match Store::open_with(&dir, open_options()) {
        Ok(store) => {
            eprintln!(
                "{context}: the open succeeded, {} bytes of the segment allocated",
                allocated_bytes(&segment)
            );
            // Fill the hole: each save reserves its space first, so it is acknowledged or a
            // clean DiskFull, and the store stays usable (not poisoned).
            for _ in 0..(SEGMENT_BYTES / PAD_CHARS as u64) {
                match store.save("hole", "p", &padded(next)) {
                    Ok(_) => {
                        acked.push(("hole".to_string(), padded(next)));
                        next += 1;
                    }
                    Err(Error::DiskFull { .. }) => break,
                    Err(e) => panic!("{context}: not a clean disk-full error: {e:?}"),
                }
            }
            assert!(store.metrics().poisoned.is_none(), "{context}: poisoned");
            drop(store);
        }
        Err(e @ Error::DiskFull { .. }) => eprintln!("{context}: the open failed: {e}"),
        Err(e) => panic!("{context}: not a clear disk-full error: {e:?}"),
    }
    free(&filler, mounted.path());
    let store = Store::open_with(&dir, open_options()).expect("opens once space is free");
    assert!(
        allocated_bytes(&segment) <= SEGMENT_BYTES,
        "{context}: no more than the segment"
    );
    store.save("hole", "p", &padded(next)).expect("save");
    acked.push(("hole".to_string(), padded(next)));
    store.close().expect("close");
    assert_all_present(&dir, &acked, &context);
}
