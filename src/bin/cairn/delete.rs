//! `cairn delete`: delete a job. It leaves `jobs` at once; the next compaction drops its
//! records.

use std::io::Write;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;

use crate::GlobalArgs;
use crate::output::{print, write_json_line};

/// Arguments of `cairn delete`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints {\"job\":…,\"deleted\":true} with --json once the deletion is \
    recorded. Saving under the same name later starts a new job. Exit status 1 when the store \
    does not know the job."
)]
pub struct DeleteArgs {
    /// The job to delete.
    job: String,
    /// Why, kept with the deletion record until the next compaction.
    #[arg(long, value_name = "TEXT", default_value = "deleted with cairn delete")]
    reason: String,
}

/// The acknowledgement of a deletion.
#[derive(Debug, Serialize)]
struct Deleted<'a> {
    job: &'a str,
    deleted: bool,
}

/// Runs `cairn delete`.
pub fn run(
    global: &GlobalArgs,
    options: cairn::Options,
    args: &DeleteArgs,
) -> anyhow::Result<ExitCode> {
    crate::store_dir::require_existing(&global.dir)?;
    let store = cairn::Store::open_with(&global.dir, options)?;
    if !store.delete_job(&args.job, &args.reason)? {
        return Err(anyhow!(
            "job {:?} does not exist in {}; nothing was deleted",
            args.job,
            global.dir.display()
        ));
    }
    // Durable before it is acknowledged, whatever the durability mode.
    store.close()?;
    print(|out| {
        if global.json {
            write_json_line(
                out,
                &Deleted {
                    job: &args.job,
                    deleted: true,
                },
            )
        } else {
            writeln!(
                out,
                "deleted job {:?}; the next compaction drops its records",
                args.job
            )
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
