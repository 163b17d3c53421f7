//! `cairn`: the command-line face of a cairn store, for operators and scripts.
//!
//! Exit status: 0 success, 1 failure (I/O, corruption, a locked store, a missing checkpoint,
//! `verify` finding damage), 2 bad usage or bad input. Errors are one line on stderr that
//! starts with `cairn: `. Logging goes to stderr too, filtered by `CAIRN_LOG` (default `warn`).

#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::too_many_lines
)]

mod args;
mod compact;
mod delete;
mod demo;
mod output;
mod progress;
mod put;
mod read;
mod stats;
mod store_dir;
mod verify;

use std::error::Error as StdError;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// An embedded, crash-safe checkpoint log for ETL jobs.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
#[command(
    after_help = "Exit status: 0 success, 1 failure, 2 bad usage or bad input.\n\
    Set CAIRN_LOG (e.g. CAIRN_LOG=info) to see what the store does; default: warn."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command accepts, before or after the command name.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// The store directory.
    #[arg(long, global = true, env = "CAIRN_DIR", default_value = "cairn-data")]
    dir: PathBuf,
    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// When a save counts as done: sync (on stable storage), buffered (synced in the
    /// background every --sync-interval) or os (synced when the OS pleases).
    #[arg(long, global = true, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
    /// The longest a save stays unsynced with --durability buffered [default: 100ms].
    #[arg(long, global = true, value_parser = args::parse_duration, value_name = "DURATION")]
    sync_interval: Option<Duration>,
    /// What opening the store does with damaged records.
    #[arg(long, global = true, value_enum, default_value_t = RecoveryArg::TolerateTornTail)]
    recovery: RecoveryArg,
    /// Size of new segment files, e.g. 64MiB [default: the store's own, recorded when it was
    /// created; 64MiB for a new store]. A size that differs from the store's is noted on
    /// stderr and becomes the store's; existing segments keep theirs.
    #[arg(long, global = true, value_parser = args::parse_size, value_name = "SIZE")]
    segment_size: Option<u64>,
    /// Largest checkpoint data, as compact JSON, e.g. 1MiB [default: 1MiB].
    #[arg(long, global = true, value_parser = args::parse_size, value_name = "SIZE")]
    max_payload: Option<u64>,
    /// Retention: keep the newest N checkpoints of each job, N >= 1 (the latest is always
    /// kept) [default: 10].
    #[arg(
        long,
        global = true,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    keep_last: Option<u64>,
    /// Retention: drop checkpoints older than this, e.g. 30d (each job's
    /// latest is always kept) [default: no limit].
    #[arg(long, global = true, value_parser = args::parse_duration, value_name = "DURATION")]
    max_age: Option<Duration>,
    /// Cap the store's disk use, e.g. 1GiB; saves are refused if live data alone fills it
    /// [default: no cap].
    #[arg(long, global = true, value_parser = args::parse_size, value_name = "SIZE")]
    max_bytes: Option<u64>,
    /// Never compact in the background (explicit `cairn compact` and the --max-bytes cap
    /// still compact).
    #[arg(long, global = true)]
    no_auto_compact: bool,
}

/// The durability modes of [`cairn::Durability`], as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    /// A save is acknowledged once it is on stable storage.
    Sync,
    /// A save is acknowledged once it is in the page cache; synced every --sync-interval.
    Buffered,
    /// A save is acknowledged once it is in the page cache; synced when a segment fills.
    Os,
}

/// The recovery modes of [`cairn::RecoveryMode`], as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RecoveryArg {
    /// Cut a torn tail of the newest segment; any other damage is an error.
    TolerateTornTail,
    /// Keep the log up to the first damage; set aside what follows.
    PointInTime,
    /// Skip damaged records and keep every valid one.
    SkipCorrupted,
    /// Any damage, a torn tail included, is an error.
    AbsoluteConsistency,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Save checkpoints: one from the arguments, or one per NDJSON line of stdin.
    Put(put::PutArgs),
    /// Print the latest checkpoint of a job.
    Get(read::GetArgs),
    /// List every job with its latest checkpoint.
    Jobs,
    /// Print the checkpoints of a job, oldest first.
    History(read::HistoryArgs),
    /// Check every record of the store without changing it; exit 1 if anything is damaged.
    Verify,
    /// Compact the store with the retention flags (--keep-last, --max-age, --max-bytes), or
    /// with --dry-run report what that would free.
    Compact(compact::CompactArgs),
    /// Show segments, live and dead bytes, jobs, records, what compaction would free, and
    /// health.
    Stats,
    /// Delete a job: it leaves `jobs` now and its records go at the next compaction.
    Delete(delete::DeleteArgs),
    /// Run the crash-recovery demo: GitHub- and Jira-style extractions killed with kill -9
    /// and resumed; checks that every record reached the sink exactly once.
    Demo(demo::DemoArgs),
    /// The extractor `cairn demo` starts and kills (internal).
    #[command(hide = true)]
    DemoWorker(demo::WorkerArgs),
}

/// Input the user gave that cannot be used: exit status 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for BadInput {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let options = match store_options(&cli.global) {
        Ok(options) => options,
        Err(message) => {
            let mut command = Cli::command();
            command
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit()
        }
    };
    let global = &cli.global;
    let result = match &cli.command {
        Command::Put(put_args) => put::run(global, options, put_args),
        Command::Get(get_args) => read::get(global, options, get_args),
        Command::Jobs => read::jobs(global, options),
        Command::History(history_args) => read::history(global, options, history_args),
        Command::Verify => verify::run(global),
        Command::Compact(compact_args) => compact::run(global, options, compact_args),
        Command::Stats => stats::run(global, options),
        Command::Delete(delete_args) => delete::run(global, options, delete_args),
        Command::Demo(demo_args) => demo::run(global, options, demo_args),
        Command::DemoWorker(worker_args) => demo::worker(global, options, worker_args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("cairn: {}", one_line_message(&error));
            ExitCode::from(exit_status(&error))
        }
    }
}

/// Builds the store options from the global flags; `Err` is a usage error.
fn store_options(global: &GlobalArgs) -> Result<cairn::Options, String> {
    let durability = match (global.durability, global.sync_interval) {
        (DurabilityArg::Sync, None) => cairn::Durability::Sync,
        (DurabilityArg::Os, None) => cairn::Durability::OsOnly,
        (DurabilityArg::Buffered, interval) => cairn::Durability::Buffered {
            interval: interval.unwrap_or(Duration::from_millis(100)),
        },
        (_, Some(_)) => {
            return Err("--sync-interval applies only to --durability buffered".into());
        }
    };
    let recovery = match global.recovery {
        RecoveryArg::TolerateTornTail => cairn::RecoveryMode::TolerateTornTail,
        RecoveryArg::PointInTime => cairn::RecoveryMode::PointInTime,
        RecoveryArg::SkipCorrupted => cairn::RecoveryMode::SkipCorrupted,
        RecoveryArg::AbsoluteConsistency => cairn::RecoveryMode::AbsoluteConsistency,
    };
    let mut options = cairn::Options::default()
        .durability(durability)
        .recovery(recovery);
    if let Some(bytes) = global.segment_size {
        options = options.segment_size(bytes);
    }
    if let Some(bytes) = global.max_payload {
        options = options.max_payload(bytes);
    }
    let mut retention = cairn::Retention::default();
    if let Some(n) = global.keep_last {
        // More than usize::MAX checkpoints cannot exist, so saturating keeps them all.
        retention = retention.keep_last(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(age) = global.max_age {
        retention = retention.max_age(age);
    }
    if let Some(bytes) = global.max_bytes {
        retention = retention.max_bytes(bytes);
    }
    options = options.retention(retention);
    if global.no_auto_compact {
        options = options.auto_compact(cairn::AutoCompact::disabled());
    }
    Ok(options)
}

/// Logs to stderr, filtered by `CAIRN_LOG` (default `warn`), so that recovery findings show.
fn init_logging() {
    let filter = match std::env::var("CAIRN_LOG") {
        Ok(spec) => tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|error| {
            eprintln!("cairn: ignoring CAIRN_LOG={spec:?} ({error}); logging warnings");
            tracing_subscriber::EnvFilter::new("warn")
        }),
        Err(_) => tracing_subscriber::EnvFilter::new("warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
}

/// 2 when the user's input was at fault, 1 for every other failure.
fn exit_status(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<BadInput>() {
            return 2;
        }
        if let Some(error) = cause.downcast_ref::<cairn::Error>() {
            return match error {
                cairn::Error::InvalidInput { .. }
                | cairn::Error::PayloadTooLarge { .. }
                | cairn::Error::Serialize { .. } => 2,
                _ => 1,
            };
        }
    }
    1
}

/// The error and its causes on one line. A [`cairn::Error`] already names its own source (and,
/// for corruption, what to do next), so the chain stops there.
fn one_line_message(error: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in error.chain() {
        parts.push(cause.to_string());
        if cause.is::<cairn::Error>() {
            break;
        }
    }
    parts.join(": ").replace(['\n', '\r'], " ")
}
