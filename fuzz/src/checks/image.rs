//! Store directories as plain bytes: building them on a simulated disk, and reading back what
//! a store opened on one returns, with the consistency checks every read must pass.

use std::collections::BTreeMap;
use std::path::Path;

use cairn::testing::{self, SimDisk};
use cairn::{Checkpoint, Error, Options, RecoveryMode, Store};

use super::format::{self, CheckpointBody, Record, SEGMENT_HEADER_LEN, SEGMENT_LEN};

/// Where the targets put their store on the simulated disk.
pub const DIR: &str = "/fuzz/store";

/// Every recovery mode.
pub const MODES: [RecoveryMode; 4] = [
    RecoveryMode::TolerateTornTail,
    RecoveryMode::PointInTime,
    RecoveryMode::SkipCorrupted,
    RecoveryMode::AbsoluteConsistency,
];

/// The files of a store directory, by name (the marker `CAIRN` included).
pub type Image = BTreeMap<String, Vec<u8>>;

/// `{id:020}.seg`.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id of a segment file name, as cairn parses it.
pub fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    let all_digits = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
    all_digits.then(|| digits.parse().ok()).flatten()
}

pub fn options(mode: RecoveryMode) -> Options {
    Options::default().recovery(mode).segment_size(SEGMENT_LEN)
}

/// A simulated disk holding `image` in [`DIR`].
pub fn disk_with(image: &Image) -> SimDisk {
    let disk = SimDisk::new();
    let dir = Path::new(DIR);
    // SimDisk has no public call to create a directory. A writer open of a missing directory
    // creates it, then reads the marker; a marker that is not cairn's makes that open fail
    // before it writes anything else.
    disk.overwrite_file(&dir.join("CAIRN"), b"not a cairn marker".to_vec());
    let refused = testing::open(&disk, dir, Options::default(), false);
    assert!(
        matches!(refused, Err(Error::NotAStore { .. })),
        "the directory trick failed: {refused:?}"
    );
    for (name, bytes) in image {
        disk.overwrite_file(&dir.join(name), bytes.clone());
    }
    disk
}

/// Every file on the disk with its live bytes.
pub fn disk_files(disk: &SimDisk) -> BTreeMap<String, Vec<u8>> {
    disk.file_names()
        .into_iter()
        .map(|path| {
            let bytes = disk.read_file(&path).unwrap_or_default();
            (path.to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

/// Every checkpoint a store returns, ordered by sequence number, after checking that its
/// read calls agree with one another: `jobs` with `latest` and `history`, `latest` with the
/// end of `history`, and every job's history in increasing sequence order. `Err` when a read
/// fails (the caller decides whether it may).
pub fn contents(store: &Store) -> Result<Vec<Checkpoint>, Error> {
    let mut all = Vec::new();
    for summary in store.jobs()? {
        let history = store.history(&summary.job)?;
        let latest = store.latest(&summary.job)?;
        let context = format!("job {:?}", summary.job);
        assert!(
            history.windows(2).all(|w| w[0].seq < w[1].seq),
            "{context}: history out of order"
        );
        assert!(
            history.iter().all(|c| c.job == summary.job),
            "{context}: foreign checkpoint"
        );
        assert_eq!(
            latest.as_ref(),
            history.last(),
            "{context}: latest is not the last of history"
        );
        let latest = latest.expect("listed jobs have a checkpoint");
        assert_eq!(
            (
                summary.latest_seq,
                &summary.phase,
                summary.at,
                summary.checkpoints
            ),
            (latest.seq, &latest.phase, latest.at, history.len() as u64),
            "{context}: the summary disagrees with the history"
        );
        all.extend(history);
    }
    all.sort_by_key(|c| c.seq);
    assert!(
        all.windows(2).all(|w| w[0].seq < w[1].seq),
        "two checkpoints share a sequence number"
    );
    Ok(all)
}

/// A valid checkpoint record found in a segment image.
#[derive(Debug, Clone)]
pub struct Present {
    pub seq: u64,
    pub body: CheckpointBody,
}

/// Every checkpoint record that checks out at any 8-byte aligned offset of any segment file
/// of `image` whose header checks out: nothing a store returns can come from anywhere else.
pub fn present_checkpoints(image: &Image) -> Vec<Present> {
    let mut found = Vec::new();
    for (name, bytes) in image {
        if segment_id(name).is_none() {
            continue;
        }
        let Some(header) = format::SegmentHeader::decode(bytes) else {
            continue;
        };
        let mut pos = SEGMENT_HEADER_LEN;
        while pos + format::RECORD_HEADER_LEN <= bytes.len() {
            let head = &bytes[pos..pos + format::RECORD_HEADER_LEN];
            if head.iter().any(|&b| b != 0)
                && let Record::Checkpoint { seq, body, .. } =
                    format::decode_record(header.version, header.salt, &bytes[pos..])
            {
                found.push(Present { seq, body });
            }
            pos += 8;
        }
    }
    found
}

/// The highest sequence number in any valid segment header (`first_seq`) or valid record
/// (of any kind, at any aligned offset) of `image`.
pub fn max_seq_on_disk(image: &Image) -> u64 {
    let mut max = 0;
    for (name, bytes) in image {
        if segment_id(name).is_none() {
            continue;
        }
        let Some(header) = format::SegmentHeader::decode(bytes) else {
            continue;
        };
        max = max.max(header.first_seq);
        let mut pos = SEGMENT_HEADER_LEN;
        while pos + format::RECORD_HEADER_LEN <= bytes.len() {
            let seq = match format::decode_record(header.version, header.salt, &bytes[pos..]) {
                Record::Invalid | Record::BadBody { .. } => 0,
                Record::Seal { seq, .. }
                | Record::JobEvent { seq, .. }
                | Record::Checkpoint { seq, .. } => seq,
            };
            max = max.max(seq);
            pos += 8;
        }
    }
    max
}

/// Whether a checkpoint record of `image` has matching CRCs but a body that does not decode.
pub fn has_bad_body(image: &Image) -> bool {
    image.iter().any(|(name, bytes)| {
        let Some(header) = segment_id(name).and_then(|_| format::SegmentHeader::decode(bytes))
        else {
            return false;
        };
        let last = bytes.len().saturating_sub(format::RECORD_HEADER_LEN);
        (SEGMENT_HEADER_LEN..=last).step_by(8).any(|pos| {
            matches!(
                format::decode_record(header.version, header.salt, &bytes[pos..]),
                Record::BadBody { .. }
            )
        })
    })
}

/// Whether `checkpoint` is exactly what the record `present` holds.
pub fn matches(checkpoint: &Checkpoint, present: &Present) -> bool {
    let body = &present.body;
    let data: Option<serde_json::Value> = serde_json::from_slice(&body.data).ok();
    checkpoint.seq == present.seq
        && checkpoint.job == body.job
        && checkpoint.phase == body.phase
        && checkpoint.version == body.data_version
        && Some(checkpoint.at.timestamp_micros()) == Some(body.at_micros)
        && Some(&checkpoint.data) == data.as_ref()
}

/// Whether a valid record holds data that only fails when it is read (documented: the JSON and
/// the timestamp are parsed when a checkpoint is read, not at recovery).
pub fn unreadable(present: &Present) -> bool {
    let body = &present.body;
    serde_json::from_slice::<serde_json::Value>(&body.data).is_err()
        || chrono::DateTime::from_timestamp_micros(body.at_micros).is_none()
}
