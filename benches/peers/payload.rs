//! The checkpoint every peer saves: an ETL job's cursor, counts and queue of pending items,
//! about 1 KiB of JSON, and a save number that changes with every save.
//!
//! The save number matters: SQLite does not even write a page whose new content equals the
//! old, so an upsert of identical bytes commits nothing and syncs nothing. Every save of every
//! row therefore differs from the previous one in the same 12 digits, and has the same length.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Serialize, Serializer};

use crate::measure::BenchResult;

/// A realistic checkpoint of a paginated API sync.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    save_number: Digits,
    source: String,
    cursor: String,
    since: String,
    page: u32,
    processed: u64,
    failed: u64,
    counts: BTreeMap<String, u64>,
    pending: Vec<String>,
    rate_limit_reset: String,
    last_error: Option<String>,
}

impl Document {
    /// Sets the save number, without allocating.
    pub fn stamp(&mut self, save_number: u64) {
        write_digits(&mut self.save_number.0, save_number);
    }
}

const DIGITS: usize = 12;

/// A fixed-width decimal number, serialized as a JSON string so that its width never changes.
#[derive(Debug, Clone, Copy)]
struct Digits([u8; DIGITS]);

impl Serialize for Digits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// Writes `n` in decimal, right-aligned and zero-padded; higher digits than fit are dropped.
fn write_digits(digits: &mut [u8], mut n: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The document's JSON, serialized once, with the place of its save number: the peers that
/// take bytes stamp each save's number into their own copy.
#[derive(Debug, Clone)]
pub struct StampedJson {
    bytes: Vec<u8>,
    digits: Range<usize>,
}

impl StampedJson {
    /// The JSON with `save_number` stamped in.
    pub fn stamp(&mut self, save_number: u64) -> &[u8] {
        if let Some(digits) = self.bytes.get_mut(self.digits.clone()) {
            write_digits(digits, save_number);
        }
        &self.bytes
    }

    /// The same, as text (for the stores whose column is text).
    pub fn stamp_str(&mut self, save_number: u64) -> BenchResult<&str> {
        Ok(std::str::from_utf8(self.stamp(save_number))?)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// The document for cairn (its API serializes, as a user's save does) and its JSON for the
/// floors and the other stores (handed the bytes ready-made, which if anything favours them).
#[derive(Debug, Clone)]
pub struct Payload {
    pub document: Document,
    pub json: StampedJson,
}

/// The JSON must stay "about 1 KiB", the size the targets speak of.
const JSON_BYTES_RANGE: std::ops::RangeInclusive<usize> = 900..=1200;
const SAVE_NUMBER_PREFIX: &[u8] = b"{\"save_number\":\"";

impl Payload {
    pub fn new() -> BenchResult<Payload> {
        let document = document();
        let bytes = serde_json::to_vec(&document)?;
        if !JSON_BYTES_RANGE.contains(&bytes.len()) {
            let len = bytes.len();
            return Err(format!("the bench checkpoint is {len} bytes, not about 1 KiB").into());
        }
        if !bytes.starts_with(SAVE_NUMBER_PREFIX) {
            return Err("the bench checkpoint does not start with its save number".into());
        }
        let start = SAVE_NUMBER_PREFIX.len();
        let json = StampedJson {
            bytes,
            digits: start..start + DIGITS,
        };
        Ok(Payload { document, json })
    }
}

fn document() -> Document {
    let counts = [
        ("commits", 48_213),
        ("issues", 9_120),
        ("pull_requests", 3_877),
        ("reviews", 11_402),
        ("comments", 60_915),
        ("releases", 214),
    ];
    Document {
        save_number: Digits([b'0'; DIGITS]),
        source: "https://api.github.com/repos/acme/warehouse-etl/pulls?state=all&per_page=100"
            .into(),
        cursor: "Y3Vyc29yOnYyOpK5MjAyNC0wNi0xMlQwODoxNTo0MiswMDowMM4qB3xY".into(),
        since: "2024-06-12T08:15:42Z".into(),
        page: 387,
        processed: 1_038_211,
        failed: 17,
        counts: counts
            .into_iter()
            .map(|(name, count)| (name.to_owned(), count))
            .collect(),
        pending: (0..24)
            .map(|i| format!("PR_kwDOAbCdEf5xYz{:06}", 731_000 + i * 37))
            .collect(),
        rate_limit_reset: "2024-06-12T09:00:00Z".into(),
        last_error: Some("HTTP 502 from api.github.com on page 386; retried after 2 s".into()),
    }
}
