//! Target `decode_record`: one record from arbitrary bytes.
//!
//! Input: a flags byte, a 4-byte salt, then the record bytes. With bit 0 of the flags set, both
//! CRCs are rewritten to match (trusting the bytes' own `body_len`) before decoding, so the
//! fuzzer gets past the checksums and into the header fields and the checkpoint body.
//!
//! Checked: cairn's decoder never panics and agrees with the reference decoder written from
//! docs/FORMAT.md (same validity, same sequence number, job and data); a decoded record depends
//! on its own bytes only (trailing bytes change nothing, one byte less makes it invalid); no
//! other salt accepts it; and encoding the decoded checkpoint again decodes to the same values.

use cairn::testing::{self, DecodedRecord};

use super::format::{self, CheckpointBody, MAX_ENVELOPE_BYTES, Record};
use super::input::Input;

pub fn check_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let salt = input.u32();
    let mut bytes = input.rest().to_vec();
    if flags & 1 == 1 {
        format::fix_record_crcs(salt, &mut bytes);
    }
    let decoded = testing::decode_record(salt, &bytes);
    // testing::decode_record decodes bodies as the newest format does.
    let reference = format::decode_record(format::FORMAT_VERSION, salt, &bytes);
    let len = match (&decoded, &reference) {
        (None, Record::Invalid | Record::BadBody { .. } | Record::BadData { .. }) => return,
        (
            Some(found),
            Record::Seal { seq, len, .. }
            | Record::JobEvent { seq, len, .. }
            | Record::Snapshot { seq, len }
            | Record::Mark { seq, len, .. }
            | Record::SnapshotPart { seq, len },
        ) => {
            assert_eq!(
                (found.seq, &found.checkpoint),
                (*seq, &None),
                "seal, job event, snapshot or mark"
            );
            *len
        }
        (Some(found), Record::Checkpoint { seq, len, body, .. }) => {
            let expected = (body.job.clone(), body.data.clone());
            assert_eq!(found.seq, *seq, "sequence number");
            assert_eq!(found.checkpoint.as_ref(), Some(&expected), "checkpoint");
            *len
        }
        (found, expected) => {
            panic!("cairn decodes {found:?}, the specification says {expected:?}")
        }
    };
    let found = decoded.as_ref().expect("matched above");
    assert_eq!(
        testing::decode_record(salt, &bytes[..len]).as_ref(),
        Some(found)
    );
    assert_eq!(testing::decode_record(salt, &bytes[..len - 1]), None);
    // CRC32 of a fixed-length input differs for any two salts, so another salt never checks
    // out, whatever the record.
    assert_eq!(testing::decode_record(salt ^ 0x8000_0001, &bytes), None);
    check_round_trip(salt, found);
}

/// Encodes the decoded checkpoint again, through cairn and through the reference encoder,
/// and checks both encodings are identical and decode to the same values.
fn check_round_trip(salt: u32, found: &DecodedRecord) {
    let Some((job, data)) = &found.checkpoint else {
        return;
    };
    // encode_checkpoint_record uses the phase "fuzz" and must fit the envelope limit.
    if 8 + job.len() + 8 + 4 + 8 + 4 + 2 > MAX_ENVELOPE_BYTES {
        return;
    }
    let encoded = testing::encode_checkpoint_record(salt, found.seq, job, data);
    let body = CheckpointBody {
        job: job.clone(),
        phase: "fuzz".into(),
        at_micros: 0,
        data_version: 1,
        trigger: 0,
        codec: format::CODEC_JSON,
        data: data.clone(),
    }
    .encode(format::FORMAT_VERSION);
    let header = format::RecordHeader {
        seq: found.seq,
        durable_seq: found.seq - 1,
        body_len: body.len() as u32,
        kind: format::KIND_CHECKPOINT,
    };
    assert_eq!(
        encoded,
        header.encode(salt, &body),
        "cairn encodes differently from FORMAT.md"
    );
    assert_eq!(testing::decode_record(salt, &encoded).as_ref(), Some(found));
}
