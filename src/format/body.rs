//! Record bodies. Every body starts with a length-prefixed envelope encoded with bincode 2,
//! `config::legacy()` (little-endian fixed-width integers, `u64` length before each string),
//! followed by JSON text, so that any tool (even `strings`) can show the data:
//!
//! | offset   | size | field     | meaning                                              |
//! |----------|------|-----------|------------------------------------------------------|
//! | 0        | 4    | meta_len  | u32 length of the envelope that follows              |
//! | 4        | m    | envelope  | bincode (see below)                                  |
//! | 4+m      | rest | data      | JSON text, or LZ4 of it (see `codec`)                |
//!
//! Checkpoint envelope, format version 2:
//! `{ job: String, phase: String, at_micros: i64, data_version: u32, trigger: u8, codec: u8 }`.
//! Format version 1 has no `trigger` and `codec` (as if both were 0).
//! `codec` 0: the data is JSON; 1: the data is `u32 json_len` then an LZ4 block of the JSON.
//!
//! Job event envelope (format version 2 only): `{ job: String, at_micros: i64 }`, then the
//! event as JSON.
//!
//! Snapshot bodies have no envelope: see `snapshot.rs`.

use serde::{Deserialize, Serialize};

use super::read_u32;

/// The envelope is small (names and a timestamp); anything longer is damage.
const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// The largest data a compressed body may expand to.
pub(crate) const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

const CODEC_NONE: u8 = 0;
const CODEC_LZ4: u8 = 1;

fn config() -> impl bincode::config::Config {
    bincode::config::legacy().with_limit::<MAX_ENVELOPE_BYTES>()
}

/// Why a record body (whose record checksum checked out) does not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("body shorter than its length prefix")]
    NoLengthPrefix,
    #[error("envelope length {meta_len} over the limit")]
    EnvelopeTooLong { meta_len: usize },
    #[error("envelope runs past the end of the body")]
    EnvelopePastEnd,
    #[error("envelope does not decode: {0}")]
    Envelope(#[source] bincode::error::DecodeError),
    #[error("envelope is {used} bytes, its prefix says {meta_len}")]
    EnvelopeLength { used: usize, meta_len: usize },
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    #[error("compressed data shorter than its length")]
    NoDataLength,
    #[error("compressed data claims {json_len} bytes, over the limit")]
    DataTooLong { json_len: usize },
    #[error("compressed data does not decompress: {0}")]
    Decompress(#[source] lz4_flex::block::DecompressError),
    #[error("compressed data expands to {written} bytes, its length says {json_len}")]
    DataLength { written: usize, json_len: usize },
}

/// Why a body cannot be encoded. The store's input limits rule each of these out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    #[error("envelope does not encode: {0}")]
    Envelope(#[source] bincode::error::EncodeError),
    #[error("envelope too long")]
    EnvelopeTooLong,
    #[error("data over 4 GiB")]
    DataTooLong,
    #[error(
        "job state {index} takes {len_bytes} bytes of JSON, more than a snapshot record may \
         hold ({max_body_bytes} bytes)"
    )]
    SnapshotStateTooLarge {
        index: usize,
        len_bytes: usize,
        max_body_bytes: usize,
    },
}

/// The decoded body of a checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointBody {
    pub job: String,
    pub phase: String,
    pub at_micros: i64,
    pub data_version: u32,
    /// What made the job save (a code the job layer defines; 0 when unknown).
    pub trigger: u8,
    /// The data as JSON text (decompressed).
    pub data_json: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointEnvelopeV1 {
    job: String,
    phase: String,
    at_micros: i64,
    data_version: u32,
}

#[derive(Serialize, Deserialize)]
struct CheckpointEnvelopeV2 {
    job: String,
    phase: String,
    at_micros: i64,
    data_version: u32,
    trigger: u8,
    codec: u8,
}

/// The decoded body of a job event record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventBody {
    pub job: String,
    pub at_micros: i64,
    #[serde(skip)]
    pub event_json: Vec<u8>,
}

fn put_envelope<T: Serialize>(envelope: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let bytes = bincode::serde::encode_to_vec(envelope, config()).map_err(EncodeError::Envelope)?;
    let meta_len = u32::try_from(bytes.len()).map_err(|_| EncodeError::EnvelopeTooLong)?;
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Splits a body into its decoded envelope and the data after it.
fn take_envelope<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<(T, &[u8]), BodyError> {
    let meta_len = read_u32(bytes, 0).ok_or(BodyError::NoLengthPrefix)? as usize;
    if meta_len > MAX_ENVELOPE_BYTES {
        return Err(BodyError::EnvelopeTooLong { meta_len });
    }
    let envelope = bytes
        .get(4..4 + meta_len)
        .ok_or(BodyError::EnvelopePastEnd)?;
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(envelope, config()).map_err(BodyError::Envelope)?;
    if used != meta_len {
        return Err(BodyError::EnvelopeLength { used, meta_len });
    }
    Ok((value, bytes.get(4 + meta_len..).unwrap_or_default()))
}

/// Appends the encoded body (format version 2) to `out`, compressing the data with LZ4 when
/// `compress` is set, and returns how many bytes the data takes once stored. Fails only if
/// the envelope is over its limit, which the store's input limits rule out; the error says so.
pub(crate) fn encode_checkpoint_body(
    body: &CheckpointBody,
    compress: bool,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let envelope = CheckpointEnvelopeV2 {
        job: body.job.clone(),
        phase: body.phase.clone(),
        at_micros: body.at_micros,
        data_version: body.data_version,
        trigger: body.trigger,
        codec: if compress { CODEC_LZ4 } else { CODEC_NONE },
    };
    put_envelope(&envelope, out)?;
    let data_start = out.len();
    if compress {
        let json_len = u32::try_from(body.data_json.len()).map_err(|_| EncodeError::DataTooLong)?;
        out.extend_from_slice(&json_len.to_le_bytes());
        out.extend_from_slice(&lz4_flex::block::compress(&body.data_json));
    } else {
        out.extend_from_slice(&body.data_json);
    }
    Ok(out.len() - data_start)
}

/// Decodes a checkpoint body of a segment of format `version`, whose record checksum has
/// already been verified. Errors describe what was malformed.
pub(crate) fn decode_checkpoint_body(
    version: u16,
    bytes: &[u8],
) -> Result<CheckpointBody, BodyError> {
    decode_checkpoint(version, bytes, true)
}

/// Like [`decode_checkpoint_body`] but leaves `data_json` empty: recovery needs only the
/// envelope and skips parsing and decompressing the data.
pub(crate) fn decode_checkpoint_envelope(
    version: u16,
    bytes: &[u8],
) -> Result<CheckpointBody, BodyError> {
    decode_checkpoint(version, bytes, false)
}

fn decode_checkpoint(
    version: u16,
    bytes: &[u8],
    with_data: bool,
) -> Result<CheckpointBody, BodyError> {
    let (envelope, data) = if version == 1 {
        let (v1, data): (CheckpointEnvelopeV1, _) = take_envelope(bytes)?;
        let v2 = CheckpointEnvelopeV2 {
            job: v1.job,
            phase: v1.phase,
            at_micros: v1.at_micros,
            data_version: v1.data_version,
            trigger: 0,
            codec: CODEC_NONE,
        };
        (v2, data)
    } else {
        take_envelope::<CheckpointEnvelopeV2>(bytes)?
    };
    let data_json = match envelope.codec {
        _ if !with_data => Vec::new(),
        CODEC_NONE => data.to_vec(),
        CODEC_LZ4 => decompress(data)?,
        codec => return Err(BodyError::UnknownCodec(codec)),
    };
    if !with_data && envelope.codec > CODEC_LZ4 {
        return Err(BodyError::UnknownCodec(envelope.codec));
    }
    Ok(CheckpointBody {
        job: envelope.job,
        phase: envelope.phase,
        at_micros: envelope.at_micros,
        data_version: envelope.data_version,
        trigger: envelope.trigger,
        data_json,
    })
}

/// Expands `u32 json_len` + LZ4 block, refusing lengths over the limit before allocating.
fn decompress(data: &[u8]) -> Result<Vec<u8>, BodyError> {
    let json_len = read_u32(data, 0).ok_or(BodyError::NoDataLength)? as usize;
    if json_len > MAX_DECOMPRESSED_BYTES {
        return Err(BodyError::DataTooLong { json_len });
    }
    let mut out = vec![0u8; json_len];
    let written = lz4_flex::block::decompress_into(data.get(4..).unwrap_or_default(), &mut out)
        .map_err(BodyError::Decompress)?;
    if written != json_len {
        return Err(BodyError::DataLength { written, json_len });
    }
    Ok(out)
}

/// Appends the encoded event body to `out`.
pub(crate) fn encode_event_body(body: &EventBody, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    put_envelope(body, out)?;
    out.extend_from_slice(&body.event_json);
    Ok(())
}

/// Decodes a job event body whose record checksum has already been verified.
pub(crate) fn decode_event_body(bytes: &[u8]) -> Result<EventBody, BodyError> {
    let (mut body, rest): (EventBody, _) = take_envelope(bytes)?;
    body.event_json = rest.to_vec();
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointBody {
        CheckpointBody {
            job: "github_sync".into(),
            phase: "pr_extraction".into(),
            at_micros: 1_700_000_000_123_456,
            data_version: 3,
            trigger: 2,
            data_json: br#"{"cursor":"Y3Vy"}"#.to_vec(),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let body = sample();
        let mut out = Vec::new();
        encode_checkpoint_body(&body, false, &mut out).expect("encodes");
        // meta_len, then u64 job length and the job name, as FORMAT.md says.
        let meta_len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(meta_len, 8 + 11 + 8 + 13 + 8 + 4 + 1 + 1);
        assert_eq!(u64::from_le_bytes(out[4..12].try_into().unwrap()), 11);
        assert_eq!(&out[12..23], b"github_sync");
        assert_eq!(
            &out[4 + meta_len - 2..4 + meta_len],
            &[2, 0],
            "trigger, codec"
        );
        assert!(out.ends_with(br#"{"cursor":"Y3Vy"}"#));
        assert_eq!(decode_checkpoint_body(2, &out).unwrap(), body);
        let meta = decode_checkpoint_envelope(2, &out).unwrap();
        assert_eq!(
            (meta.job, meta.trigger, meta.data_json.len()),
            (body.job, body.trigger, 0)
        );
    }

    #[test]
    fn compressed_round_trip() {
        let mut body = sample();
        body.data_json = format!("{{\"queue\":\"{}\"}}", "repo,".repeat(10_000)).into_bytes();
        let mut out = Vec::new();
        encode_checkpoint_body(&body, true, &mut out).expect("encodes");
        assert!(
            out.len() < body.data_json.len() / 10,
            "LZ4 shrinks repetitive JSON"
        );
        assert_eq!(decode_checkpoint_body(2, &out).unwrap(), body);
    }

    #[test]
    fn version_1_bodies_still_decode() {
        let v1 = CheckpointEnvelopeV1 {
            job: "jira_sync".into(),
            phase: "issues".into(),
            at_micros: 5,
            data_version: 1,
        };
        let mut out = Vec::new();
        put_envelope(&v1, &mut out).unwrap();
        out.extend_from_slice(b"{}");
        let body = decode_checkpoint_body(1, &out).unwrap();
        assert_eq!(
            (body.job.as_str(), body.trigger, &body.data_json[..]),
            ("jira_sync", 0, &b"{}"[..])
        );
        assert!(
            decode_checkpoint_body(2, &out).is_err(),
            "a v1 body is not a v2 body"
        );
    }

    #[test]
    fn event_round_trip() {
        let body = EventBody {
            job: "j".into(),
            at_micros: 9,
            event_json: br#"{"event":"run_succeeded"}"#.to_vec(),
        };
        let mut out = Vec::new();
        encode_event_body(&body, &mut out).unwrap();
        assert_eq!(decode_event_body(&out).unwrap(), body);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for version in [1, 2] {
            assert!(decode_checkpoint_body(version, &[]).is_err());
            assert!(decode_checkpoint_body(version, &[255, 255, 255, 255]).is_err());
            assert!(decode_checkpoint_body(version, &[10, 0, 0, 0, 1]).is_err());
            // A job length prefix claiming 2^64-1 bytes must not allocate.
            let mut evil = vec![16, 0, 0, 0];
            evil.extend_from_slice(&u64::MAX.to_le_bytes());
            evil.extend_from_slice(&[0; 8]);
            assert!(decode_checkpoint_body(version, &evil).is_err());
        }
        assert!(decode_event_body(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn compressed_data_claiming_too_much_is_refused() {
        let mut out = Vec::new();
        encode_checkpoint_body(&sample(), true, &mut out).unwrap();
        let meta_len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        out[4 + meta_len..8 + meta_len].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = decode_checkpoint_body(2, &out).unwrap_err();
        assert!(
            matches!(error, BodyError::DataTooLong { json_len } if json_len == u32::MAX as usize),
            "{error}"
        );
        assert!(error.to_string().contains("over the limit"), "{error}");
        out[4 + meta_len..8 + meta_len].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode_checkpoint_body(2, &out).is_err());
    }
}
