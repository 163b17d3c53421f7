//! `cairn verify`: scan every record, check every checksum, change nothing.

use std::io::{self, Write};
use std::process::ExitCode;

use crate::GlobalArgs;
use crate::output::{print, write_json_line, write_table};

/// Runs `cairn verify`: exit status 0 when the store is clean, 1 when anything does not check
/// out (a torn tail included). `--recovery` does not apply: verify reads past every problem so
/// as to report all of them.
pub fn run(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let report = cairn::Store::verify(&global.dir)?;
    print(|out| {
        if global.json {
            write_json_line(out, &report)
        } else {
            write_report(out, &report)
        }
    })?;
    if report.is_clean() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "cairn: {} is damaged: {} problem(s), {} byte(s) do not check out",
        global.dir.display(),
        report.findings.len(),
        report.bytes_discarded
    );
    Ok(ExitCode::FAILURE)
}

/// The report as people read it: a summary, then one row per finding.
fn write_report(out: &mut impl Write, report: &cairn::RecoveryReport) -> io::Result<()> {
    let verdict = if report.is_clean() {
        "clean"
    } else {
        "DAMAGED"
    };
    writeln!(out, "store:     {verdict}")?;
    writeln!(out, "segments:  {}", report.segments_scanned)?;
    writeln!(
        out,
        "records:   {} ({} bytes)",
        report.records_scanned, report.bytes_scanned
    )?;
    writeln!(out, "last seq:  {}", report.last_seq)?;
    writeln!(out, "bad bytes: {}", report.bytes_discarded)?;
    for note in &report.notes {
        writeln!(out, "note:      {note}")?;
    }
    if report.findings.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let rows: Vec<Vec<String>> = report
        .findings
        .iter()
        .map(|finding| {
            vec![
                kind_name(finding.kind),
                finding.segment.display().to_string(),
                finding.offset.to_string(),
                finding.len_bytes.to_string(),
                finding.detail.clone(),
            ]
        })
        .collect();
    write_table(out, &["kind", "segment", "offset", "len", "detail"], &rows)
}

/// The kind's name as `--json` spells it (`torn-tail`, `damaged-record`, …).
fn kind_name(kind: cairn::FindingKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}
