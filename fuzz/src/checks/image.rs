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
    let id: u64 = all_digits.then(|| digits.parse().ok()).flatten()?;
    (id < format::SEGMENT_ID_LIMIT).then_some(id)
}

/// Compaction runs as usual (the background compactor after a few segments), but keeps
/// every checkpoint: the checks expect every save they made, and compaction must keep them.
pub fn options(mode: RecoveryMode) -> Options {
    Options::default()
        .recovery(mode)
        .segment_size(SEGMENT_LEN)
        .retention(cairn::Retention::default().keep_last(usize::MAX))
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

/// What the segment files of an image hold, as the reference decoder sees them: the only
/// place a store's answers can come from.
#[derive(Debug, Default)]
pub struct Contents {
    /// Every checkpoint that checks out at any 8-byte aligned offset of any segment file whose
    /// header checks out.
    pub checkpoints: Vec<Present>,
    /// A valid record whose data fails only when read: data that does not decompress, is not
    /// JSON, or a timestamp out of range.
    pub unreadable: bool,
}

static ZERO_PAGE: [u8; 4096] = [0; 4096];

/// Scans every segment file of `image` (see [`Contents`]).
pub fn contents_of(image: &Image) -> Contents {
    let mut found = Contents::default();
    for (name, bytes) in image {
        if segment_id(name).is_none() {
            continue;
        }
        let Some(header) = format::SegmentHeader::decode(bytes) else {
            continue;
        };
        let mut pos = SEGMENT_HEADER_LEN;
        while pos + format::RECORD_HEADER_LEN <= bytes.len() {
            // Whole zero pages are skipped with one comparison: under the fuzzer every byte
            // comparison is instrumented, and most of a 64 KiB segment is zeros.
            let page = ZERO_PAGE.len();
            if pos.is_multiple_of(page) && bytes.get(pos..pos + page) == Some(&ZERO_PAGE[..]) {
                pos += page;
                continue;
            }
            let head = &bytes[pos..pos + format::RECORD_HEADER_LEN];
            if head != &ZERO_PAGE[..format::RECORD_HEADER_LEN] {
                let record = format::decode_record(header.version, header.salt, &bytes[pos..]);
                found.add(record);
            }
            pos += 8;
        }
    }
    found
}

impl Contents {
    fn add(&mut self, record: Record) {
        match record {
            Record::BadData { .. } => self.unreadable = true,
            Record::Checkpoint { seq, body, .. } => {
                let present = Present { seq, body };
                self.unreadable |= unreadable(&present);
                self.checkpoints.push(present);
            }
            // The targets never build compacted segments: a snapshot in theirs is damage.
            Record::Invalid | Record::BadBody { .. } | Record::Seal { .. } => {}
            Record::Snapshot { .. } | Record::SnapshotPart { .. } | Record::Mark { .. } => {}
            Record::JobEvent { .. } => {}
        }
    }
}

/// The `segment_len` of every segment header of `image` that checks out.
pub fn segment_lens(image: &Image) -> impl Iterator<Item = u64> + '_ {
    image.iter().filter_map(|(name, bytes)| {
        segment_id(name)?;
        Some(format::SegmentHeader::decode(bytes)?.segment_len)
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
        && checkpoint.trigger == cairn::Trigger::from_code(body.trigger)
        && Some(checkpoint.at.timestamp_micros()) == Some(body.at_micros)
        && Some(&checkpoint.data) == data.as_ref()
}

/// Whether a valid record holds data that only fails when it is read (documented: the JSON and
/// the timestamp are parsed when a checkpoint is read, not at recovery).
fn unreadable(present: &Present) -> bool {
    let body = &present.body;
    serde_json::from_slice::<serde_json::Value>(&body.data).is_err()
        || chrono::DateTime::from_timestamp_micros(body.at_micros).is_none()
}
