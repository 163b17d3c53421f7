//! `cairn stats`: the space a store takes, what compaction would free, and its health. It
//! opens the store read-only, so it works beside a running writer and changes nothing.

use std::io::{self, Write};
use std::process::ExitCode;

use serde::Serialize;

use crate::GlobalArgs;
use crate::compact::describe_retention;
use crate::output::{human_bytes, print, write_json_line};

/// What `cairn stats --json` prints: [`cairn::StoreStats`], its fields at the top level, and
/// the health figures of [`cairn::Metrics`].
#[derive(Debug, Serialize)]
struct StatsOutput {
    #[serde(flatten)]
    stats: cairn::StoreStats,
    health: Health,
}

/// The health of the store as this process sees it.
#[derive(Debug, Serialize)]
struct Health {
    /// No recovery findings, not full, not poisoned.
    healthy: bool,
    /// The size limit leaves no room for a new segment even after a compaction (the next
    /// save that needs one is refused).
    full: bool,
    /// Why this process's store refuses writes, if it does.
    poisoned: Option<String>,
    /// Problems the recovery at open found.
    recovery_findings: usize,
    /// Bytes the recovery at open discarded (read-only: nothing is changed on disk).
    recovery_bytes_discarded: u64,
    /// The sequence number of the last record.
    last_seq: u64,
}

/// Runs `cairn stats`. What compaction would free is reckoned with the retention flags
/// (`--keep-last`, `--max-age`, `--max-bytes`), so it matches `cairn compact` with the same
/// flags.
pub fn run(global: &GlobalArgs, options: cairn::Options) -> anyhow::Result<ExitCode> {
    let retention = options.get_retention();
    let store = cairn::Store::open_read_only_with(&global.dir, options)?;
    let stats = store.stats()?;
    let metrics = store.metrics();
    let full = stats.full || metrics.full;
    let output = StatsOutput {
        stats,
        health: Health {
            healthy: metrics.is_healthy() && !full,
            full,
            poisoned: metrics.poisoned.clone(),
            recovery_findings: metrics.recovery_findings,
            recovery_bytes_discarded: metrics.recovery_bytes_discarded,
            last_seq: metrics.last_seq,
        },
    };
    print(|out| {
        if global.json {
            write_json_line(out, &output)
        } else {
            write_stats(out, &output, &describe_retention(&retention))
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The figures as people read them, one `name: value` line each.
fn write_stats(out: &mut impl Write, output: &StatsOutput, retention: &str) -> io::Result<()> {
    let stats = &output.stats;
    writeln!(
        out,
        "segments:     {} ({} on disk)",
        stats.segments,
        human_bytes(stats.storage_bytes)
    )?;
    writeln!(
        out,
        "records:      {} ({})",
        stats.records,
        human_bytes(stats.record_bytes)
    )?;
    writeln!(out, "live:         {}", human_bytes(stats.live_bytes))?;
    writeln!(out, "dead:         {}", human_bytes(stats.dead_bytes))?;
    writeln!(out, "jobs:         {}", stats.jobs)?;
    writeln!(
        out,
        "reclaimable:  {} (compaction with {retention})",
        human_bytes(stats.reclaimable_bytes)
    )?;
    let limit = stats
        .size_limit_bytes
        .map_or_else(|| "none".to_owned(), human_bytes);
    writeln!(out, "size limit:   {limit}")?;
    writeln!(out, "last seq:     {}", output.health.last_seq)?;
    writeln!(out, "health:       {}", health_text(&output.health))
}

/// `ok`, or every problem, comma-separated.
fn health_text(health: &Health) -> String {
    let mut problems = Vec::new();
    if health.full {
        problems.push("FULL (live data fills the size limit)".to_owned());
    }
    if let Some(cause) = &health.poisoned {
        problems.push(format!("POISONED ({cause})"));
    }
    if health.recovery_findings > 0 {
        problems.push(format!(
            "DAMAGED ({} recovery finding(s), {} byte(s) do not check out; run cairn verify)",
            health.recovery_findings, health.recovery_bytes_discarded
        ));
    }
    if problems.is_empty() {
        "ok".to_owned()
    } else {
        problems.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health {
            healthy: true,
            full: false,
            poisoned: None,
            recovery_findings: 0,
            recovery_bytes_discarded: 0,
            last_seq: 7,
        }
    }

    #[test]
    fn health_names_every_problem() {
        assert_eq!(health_text(&health()), "ok");
        let sick = Health {
            healthy: false,
            full: true,
            recovery_findings: 2,
            recovery_bytes_discarded: 100,
            ..health()
        };
        let text = health_text(&sick);
        assert!(text.starts_with("FULL"), "{text}");
        assert!(text.contains("2 recovery finding(s)"), "{text}");
    }

    #[test]
    fn json_has_the_stats_at_the_top_level_and_health_beside_them() {
        let output = StatsOutput {
            stats: cairn::StoreStats::default(),
            health: health(),
        };
        let value = serde_json::to_value(&output).expect("serialize");
        for field in [
            "segments",
            "storage_bytes",
            "records",
            "record_bytes",
            "live_bytes",
            "dead_bytes",
            "jobs",
            "reclaimable_bytes",
            "size_limit_bytes",
        ] {
            assert!(value.get(field).is_some(), "{field}: {value}");
        }
        assert_eq!(value["health"]["healthy"], true);
        assert_eq!(value["health"]["last_seq"], 7);
    }
}
