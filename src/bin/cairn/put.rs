//! `cairn put`: save one checkpoint from the arguments, or one per NDJSON line of stdin.
//!
//! Every save is acknowledged with one line `{"job":…,"seq":…}` on stdout, flushed, written
//! only once `Store::save` has returned. In sync mode that means the save is on stable
//! storage, so a process killed at any moment has every acknowledged line on disk.

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::output::write_json_line;
use crate::{BadInput, GlobalArgs};

/// The shortest line limit of `put --stdin`, whatever the payload limit.
const MIN_LINE_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
/// Room on a line for the job, the phase and the JSON around the data.
const LINE_OVERHEAD_BYTES: u64 = 64 * 1024;

/// Arguments of `cairn put`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints {\"job\":…,\"seq\":…} for each save once Store::save has \
    returned. With --durability sync (the default) an acknowledged save is on stable storage. \
    With --durability buffered or os an acknowledgement only means the save is in the page \
    cache: it survives the process being killed, not a machine crash (a single `put JOB` still \
    syncs before it exits).\n\n\
    With --stdin, each line is {\"job\":\"…\",\"phase\":\"…\",\"data\":<any JSON>}; empty lines \
    are skipped; unknown fields and lines over 16 MiB (or twice --max-payload, when that is \
    more) are refused. A bad line stops the run with exit status 2, naming the line; every line \
    acknowledged before it stays saved."
)]
pub struct PutArgs {
    /// The job to save a checkpoint of.
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    job: Option<String>,
    /// The phase the job is in (free text, may be empty).
    #[arg(long, required_unless_present = "stdin", conflicts_with = "stdin")]
    phase: Option<String>,
    /// The checkpoint data, as JSON.
    #[arg(
        long,
        value_name = "JSON",
        required_unless_present = "stdin",
        conflicts_with = "stdin"
    )]
    data: Option<String>,
    /// Read NDJSON lines {"job","phase","data"} from stdin and save each one.
    #[arg(long)]
    stdin: bool,
}

/// One line of `put --stdin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutLine {
    job: String,
    phase: String,
    data: serde_json::Value,
}

/// The acknowledgement of one save.
#[derive(Debug, Serialize)]
struct Ack<'a> {
    job: &'a str,
    seq: u64,
}

/// Runs `cairn put`.
pub fn run(
    global: &GlobalArgs,
    options: cairn::Options,
    args: &PutArgs,
) -> anyhow::Result<ExitCode> {
    match (&args.job, &args.phase, &args.data) {
        (Some(job), Some(phase), Some(data)) if !args.stdin => {
            put_one(global, options, job, phase, data)
        }
        _ if args.stdin => put_lines(global, options),
        _ => Err(BadInput("put needs JOB, --phase and --data, or --stdin".into()).into()),
    }
}

/// Saves one checkpoint and syncs it (whatever the durability mode) before acknowledging.
fn put_one(
    global: &GlobalArgs,
    options: cairn::Options,
    job: &str,
    phase: &str,
    data: &str,
) -> anyhow::Result<ExitCode> {
    let data: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| BadInput(format!("--data is not valid JSON: {e}")))?;
    let store = cairn::Store::open_with(&global.dir, options)?;
    let seq = store.save(job, phase, &data)?;
    store.close()?;
    acknowledge(&mut io::stdout().lock(), job, seq)
        .with_context(|| format!("saved as seq {seq} but could not print the acknowledgement"))?;
    Ok(ExitCode::SUCCESS)
}

/// Saves one checkpoint per line of stdin, acknowledging each once `save` has returned.
fn put_lines(global: &GlobalArgs, options: cairn::Options) -> anyhow::Result<ExitCode> {
    let line_limit = line_limit_bytes(options.get_max_payload());
    let store = cairn::Store::open_with(&global.dir, options)?;
    let mut input = io::stdin().lock();
    let mut out = io::stdout().lock();
    let mut line = Vec::new();
    for number in 1u64.. {
        let read = read_bounded_line(&mut input, &mut line, line_limit)
            .with_context(|| format!("could not read line {number} of stdin"))?;
        match read {
            LineRead::End => break,
            LineRead::TooLong => {
                let reason = format!("line {number}: longer than the limit of {line_limit} bytes");
                return Err(BadInput(reason).into());
            }
            LineRead::Line => {}
        }
        let Some(request) =
            parse_line(&line).map_err(|reason| BadInput(format!("line {number}: {reason}")))?
        else {
            continue;
        };
        let seq = store
            .save(&request.job, &request.phase, &request.data)
            .with_context(|| format!("line {number}"))?;
        acknowledge(&mut out, &request.job, seq).with_context(|| {
            format!("line {number}: saved as seq {seq} but could not print the acknowledgement")
        })?;
    }
    store.close()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes and flushes the acknowledgement line of one save.
fn acknowledge(out: &mut impl Write, job: &str, seq: u64) -> io::Result<()> {
    write_json_line(out, &Ack { job, seq })?;
    out.flush()
}

/// The longest line `put --stdin` accepts: 16 MiB, or more when the payload limit needs it
/// (twice the payload leaves room for whitespace the compact JSON will not keep).
fn line_limit_bytes(max_payload_bytes: u64) -> u64 {
    max_payload_bytes
        .saturating_mul(2)
        .saturating_add(LINE_OVERHEAD_BYTES)
        .max(MIN_LINE_LIMIT_BYTES)
}

/// Parses one line; `Ok(None)` for a blank line.
fn parse_line(line: &[u8]) -> Result<Option<PutLine>, String> {
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "not valid UTF-8 (bad byte at column {})",
            e.valid_up_to() + 1
        )
    })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| format!("not a valid {{\"job\",\"phase\",\"data\"}} object: {e}"))
}

/// What [`read_bounded_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A line is in the buffer, without its line ending.
    Line,
    /// The input ended.
    End,
    /// The line is longer than the limit; the buffer holds only its start.
    TooLong,
}

/// Reads one line into `line` (cleared first), never buffering more than `limit_bytes + 1`
/// bytes however long the line is. A last line without a newline counts as a line.
fn read_bounded_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit_bytes: u64,
) -> io::Result<LineRead> {
    line.clear();
    let read = Read::take(&mut *input, limit_bytes.saturating_add(1)).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(LineRead::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() as u64 > limit_bytes {
        return Ok(LineRead::TooLong);
    }
    Ok(LineRead::Line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8], limit: u64) -> Vec<(LineRead, Vec<u8>)> {
        let mut reader = io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            let read = read_bounded_line(&mut reader, &mut line, limit).expect("in memory");
            let stop = read != LineRead::Line;
            out.push((read, line.clone()));
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn lines_split_on_newlines_and_crlf() {
        let got = lines_of(b"ab\r\ncd\n\nlast", 10);
        let expected: Vec<(LineRead, Vec<u8>)> = vec![
            (LineRead::Line, b"ab".to_vec()),
            (LineRead::Line, b"cd".to_vec()),
            (LineRead::Line, b"".to_vec()),
            (LineRead::Line, b"last".to_vec()),
            (LineRead::End, b"".to_vec()),
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn a_line_at_the_limit_passes_and_one_byte_more_is_refused() {
        let got = lines_of(b"12345\n123456\n", 5);
        assert_eq!(got.first(), Some(&(LineRead::Line, b"12345".to_vec())));
        let (read, buffered) = got.get(1).expect("second read");
        assert_eq!(*read, LineRead::TooLong);
        assert_eq!(buffered.len(), 6, "never buffers more than limit + 1");
        assert_eq!(
            lines_of(b"123456", 5).first().map(|r| &r.0),
            Some(&LineRead::TooLong)
        );
    }

    #[test]
    fn parse_line_accepts_requests_and_explains_refusals() {
        let ok = parse_line(br#"{"job":"j","phase":"p","data":{"a":[1]}}"#).expect("valid");
        let ok = ok.expect("not blank");
        assert_eq!((ok.job.as_str(), ok.phase.as_str()), ("j", "p"));
        assert_eq!(ok.data, serde_json::json!({"a": [1]}));
        assert!(parse_line(b"  \t").expect("blank").is_none());
        let bad: [&[u8]; 5] = [
            b"{",
            br#"{"job":"j","phase":"p"}"#,
            br#"{"job":"j","data":1}"#,
            br#"{"job":"j","phase":"p","data":1,"extra":2}"#,
            b"{\"job\":\"\xff\",\"phase\":\"p\",\"data\":1}",
        ];
        for line in bad {
            let err = parse_line(line).expect_err("must be refused");
            assert!(!err.is_empty());
        }
        let missing = parse_line(br#"{"job":"j","phase":"p"}"#).expect_err("no data");
        assert!(missing.contains("missing field `data`"), "{missing}");
    }

    #[test]
    fn the_line_limit_grows_with_the_payload_limit() {
        assert_eq!(line_limit_bytes(1024 * 1024), MIN_LINE_LIMIT_BYTES);
        assert_eq!(
            line_limit_bytes(100 * 1024 * 1024),
            200 * 1024 * 1024 + LINE_OVERHEAD_BYTES
        );
        assert_eq!(line_limit_bytes(u64::MAX), u64::MAX);
    }
}
