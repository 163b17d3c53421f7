//! Writing results to stdout: compact JSON lines for scripts, aligned tables for people.

use std::io::{self, Write};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// Longest cell of a table before it is cut with `…` (`--json` always shows everything).
const MAX_CELL_CHARS: usize = 80;

/// Writes `value` as one line of compact JSON.
pub fn write_json_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Writes a table: a header row, then one row per entry, columns padded to align. Every
/// row has as many cells as `headers`.
pub fn write_table(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| shorten(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_cells: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    write_row(out, &widths, &header_cells)?;
    for row in &rows {
        write_row(out, &widths, row)?;
    }
    Ok(())
}

fn write_row(out: &mut impl Write, widths: &[usize], cells: &[String]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let pad = width.saturating_sub(cell.chars().count());
            line.push_str(cell);
            line.push_str(&" ".repeat(pad + 2));
        }
    }
    writeln!(out, "{line}")
}

/// Cuts a cell to [`MAX_CELL_CHARS`] characters.
fn shorten(cell: &str) -> String {
    if cell.chars().count() <= MAX_CELL_CHARS {
        return cell.to_owned();
    }
    let mut short: String = cell.chars().take(MAX_CELL_CHARS - 1).collect();
    short.push('…');
    short
}

/// A timestamp as people read it: RFC 3339 in UTC, to the microsecond.
pub fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Binary units above bytes, for [`human_bytes`].
const BYTE_UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// A byte count as people read it: `512 B`, `1.2 KiB`, `64.0 MiB` (binary units, one
/// decimal). `--json` always gives exact bytes.
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision loss past 2^53 bytes is far below the one decimal shown.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = "KiB";
    for next in BYTE_UNITS.iter().skip(1) {
        // 1023.96 KiB would print as "1024.0 KiB": move up a unit before rounding gets there.
        if value < 1023.95 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// A duration in microseconds as people read it: `850 µs`, `12 ms`, `3.4 s`.
pub fn human_duration_us(micros: u64) -> String {
    match micros {
        0..1_000 => format!("{micros} µs"),
        1_000..1_000_000 => format!("{} ms", micros / 1_000),
        _ => format!("{:.1} s", micros as f64 / 1e6),
    }
}

/// Runs `write` against a locked stdout and flushes it. A reader that went away (`cairn jobs |
/// head`) is not an error for commands that only print.
pub fn print(write: impl FnOnce(&mut io::StdoutLock<'_>) -> io::Result<()>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("could not write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_in_binary_units() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1_258_291, "1.2 MiB"),
            (64 << 20, "64.0 MiB"),
            ((1 << 20) - 1, "1.0 MiB"),
            (3 << 30, "3.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(human_bytes(bytes), expected, "{bytes}");
        }
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(human_duration_us(850), "850 µs");
        assert_eq!(human_duration_us(12_345), "12 ms");
        assert_eq!(human_duration_us(3_400_000), "3.4 s");
    }

    #[test]
    fn table_columns_align_and_long_cells_are_cut() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned()],
            vec!["long name".to_owned(), "x".repeat(100)],
        ];
        write_table(&mut out, &["job", "data"], &rows).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines.first().copied(), Some("JOB        DATA"));
        assert_eq!(lines.get(1).copied(), Some("a          1"));
        let last = lines.get(2).copied().unwrap_or_default();
        assert!(last.ends_with('…'), "{last}");
        assert_eq!(last.chars().count(), 11 + MAX_CELL_CHARS);
    }
}
