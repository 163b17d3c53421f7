//! `cairn compact`: rewrite the store's sealed segments with the retention policy that the
//! flags give (`--keep-last`, `--max-age`, `--max-bytes`), or, with `--dry-run`, report what
//! that would free without changing a byte.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;

use crate::GlobalArgs;
use crate::output::{human_bytes, human_duration_us, print, write_json_line};
use crate::progress::CompactionBar;

/// Arguments of `cairn compact`. The retention flags are global (they also set the policy of
/// the background compaction of `put`), so they go before or after `compact`.
#[derive(Debug, Args)]
#[command(
    after_help = "Retention: --keep-last N (default 10), --max-age DURATION (e.g. 30d), \
    --max-bytes SIZE (e.g. 1GiB). Each job's latest checkpoint and state are always kept. \
    The segment being written is never compacted, so its checkpoints all stay.\n\n\
    Prints what was freed (with --json the compaction report: dry_run, compacted, \
    segments_before, segments_after, bytes_before, bytes_after, bytes_freed, \
    checkpoints_kept, checkpoints_dropped, events_folded, jobs, upto_seq, over_limit, \
    duration_us; and, unless a dry run, disk_bytes_before and disk_bytes_after: the disk the \
    store's files take, as du counts it, where bytes_* count the segment files' lengths). Exit status 1 when the store is locked by a writer (use --dry-run to look \
    at it meanwhile); a progress bar shows on stderr when it is a terminal."
)]
pub struct CompactArgs {
    /// Report what a compaction would free and change nothing. Opens the store read-only,
    /// so it works while another process writes.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `cairn compact`.
pub fn run(
    global: &GlobalArgs,
    options: cairn::Options,
    args: &CompactArgs,
) -> anyhow::Result<ExitCode> {
    let retention = options.get_retention();
    let mut bar = CompactionBar::new(CompactionBar::wanted(
        io::stderr().is_terminal(),
        global.json,
    ));
    let mut on_progress = |progress: &cairn::CompactionProgress| bar.update(progress);
    let (report, disk) = if args.dry_run {
        let store = cairn::Store::open_read_only_with(&global.dir, options)?;
        let report = store.compact_with_progress(&retention, true, &mut on_progress)?;
        (report, None)
    } else {
        crate::store_dir::require_existing(&global.dir)?;
        let before = disk_bytes(&global.dir);
        // This command is the compaction: a background one would only wait for its turn.
        let options = options.auto_compact(cairn::AutoCompact::disabled());
        let store = cairn::Store::open_with(&global.dir, options)?;
        let report = store.compact_with_progress(&retention, false, &mut on_progress)?;
        store.close()?;
        (report, Some((before, disk_bytes(&global.dir))))
    };
    // The bar is cleared before the summary is printed.
    drop(bar);
    print(|out| {
        if global.json {
            write_json_line(
                out,
                &JsonReport {
                    report: &report,
                    disk_bytes_before: disk.map(|(before, _)| before),
                    disk_bytes_after: disk.map(|(_, after)| after),
                },
            )
        } else {
            write_summary(out, &report, disk, &retention)
        }
    })?;
    if report.over_limit && global.json {
        eprintln!("cairn: warning: {}", over_limit_warning(&retention));
    }
    Ok(ExitCode::SUCCESS)
}

/// The compaction report with the disk use around it, as `--json` prints it.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a cairn::CompactionReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_bytes_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_bytes_after: Option<u64>,
}

/// The disk the files of the store in `dir` take, as `du` counts it (allocated blocks; a
/// segment's never-reserved part takes none). 0 for what cannot be read: it is only reported.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|metadata| metadata.blocks() * 512)
        .sum()
}

/// The report as people read it, one `name: value` line per figure. `disk` is the disk use
/// before and after (not for a dry run).
fn write_summary(
    out: &mut impl Write,
    report: &cairn::CompactionReport,
    disk: Option<(u64, u64)>,
    retention: &cairn::Retention,
) -> io::Result<()> {
    let freed = if report.dry_run {
        "would free"
    } else {
        "freed"
    };
    writeln!(out, "result:       {}", verdict(report))?;
    writeln!(out, "retention:    {}", describe_retention(retention))?;
    writeln!(
        out,
        "size:         {} -> {} ({freed} {})",
        human_bytes(report.bytes_before),
        human_bytes(report.bytes_after),
        human_bytes(report.bytes_freed)
    )?;
    if let Some((before, after)) = disk {
        writeln!(
            out,
            "disk use:     {} -> {}",
            human_bytes(before),
            human_bytes(after)
        )?;
    }
    writeln!(
        out,
        "segments:     {} -> {}",
        report.segments_before, report.segments_after
    )?;
    writeln!(
        out,
        "checkpoints:  {} kept, {} dropped",
        report.checkpoints_kept, report.checkpoints_dropped
    )?;
    writeln!(out, "events:       {} folded", report.events_folded)?;
    writeln!(out, "jobs:         {}", report.jobs)?;
    writeln!(out, "up to seq:    {}", report.upto_seq)?;
    writeln!(
        out,
        "took:         {}",
        human_duration_us(report.duration_us)
    )?;
    if report.over_limit {
        writeln!(out, "warning:      {}", over_limit_warning(retention))?;
    }
    if report.replaced_files_left > 0 {
        writeln!(
            out,
            "warning:      {} replaced segment file(s) could not be removed; the next writer to \
             open the store removes them",
            report.replaced_files_left
        )?;
    }
    Ok(())
}

/// One phrase for what happened.
fn verdict(report: &cairn::CompactionReport) -> &'static str {
    match (report.dry_run, report.compacted) {
        (true, true) => "dry run, nothing changed: a compaction would do this",
        (true, false) => "dry run, nothing changed: nothing to compact",
        (false, true) => "compacted",
        (false, false) => "nothing to compact",
    }
}

/// The policy in force, e.g. `keep last 10, max age 30d, max size 1.0 GiB`.
pub fn describe_retention(retention: &cairn::Retention) -> String {
    let mut parts = vec![format!("keep last {}", retention.get_keep_last())];
    if let Some(age) = retention.get_max_age() {
        parts.push(format!("max age {}", crate::args::format_duration(age)));
    }
    if let Some(bytes) = retention.get_max_bytes() {
        parts.push(format!("max size {}", human_bytes(bytes)));
    }
    parts.join(", ")
}

fn over_limit_warning(retention: &cairn::Retention) -> String {
    let limit = retention
        .get_max_bytes()
        .map_or_else(|| "the size limit".to_owned(), human_bytes);
    format!(
        "even with only each job's latest checkpoint and state kept, the store does not fit \
         in {limit} (the segment being written and room for a new one count against it); \
         saves that need a new segment will be refused: raise --max-bytes or delete jobs"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retention_is_described_with_every_limit_in_force() {
        let default = cairn::Retention::default();
        assert_eq!(describe_retention(&default), "keep last 10");
        let all = default
            .keep_last(3)
            .max_age(Duration::from_secs(30 * 86_400))
            .max_bytes(1 << 30);
        assert_eq!(
            describe_retention(&all),
            "keep last 3, max age 30d, max size 1.0 GiB"
        );
    }

    #[test]
    fn the_summary_says_dry_run_and_warns_over_the_limit() {
        let report = cairn::CompactionReport::default();
        let mut out = Vec::new();
        let retention = cairn::Retention::default().max_bytes(1 << 20);
        write_summary(&mut out, &report, Some((6 << 20, 148 << 10)), &retention)
            .expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("result:       nothing to compact\n"),
            "{text}"
        );
        assert!(text.contains("(freed 0 B)"), "{text}");
        assert!(
            text.contains("\ndisk use:     6.0 MiB -> 148.0 KiB\n"),
            "{text}"
        );
        assert!(!text.contains("warning"), "{text}");

        let mut report = cairn::CompactionReport::default();
        report.dry_run = true;
        report.compacted = true;
        report.bytes_before = 3 << 20;
        report.bytes_after = 1 << 20;
        report.bytes_freed = 2 << 20;
        report.over_limit = true;
        let mut out = Vec::new();
        write_summary(&mut out, &report, None, &retention).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("dry run, nothing changed"), "{text}");
        assert!(
            !text.contains("disk use"),
            "a dry run changes no disk use: {text}"
        );
        assert!(
            text.contains("3.0 MiB -> 1.0 MiB (would free 2.0 MiB)"),
            "{text}"
        );
        assert!(text.contains("warning:      even with only"), "{text}");
        assert!(text.contains("1.0 MiB"), "{text}");
    }
}
