//! The body of a checkpoint record:
//!
//! | offset   | size | field     | meaning                                              |
//! |----------|------|-----------|------------------------------------------------------|
//! | 0        | 4    | meta_len  | u32 length of the envelope that follows              |
//! | 4        | m    | envelope  | bincode 2, `config::legacy()` (see below)            |
//! | 4+m      | rest | data      | the checkpoint data as UTF-8 JSON text               |
//!
//! The envelope is the bincode encoding, with little-endian fixed-width integers and u64
//! length prefixes, of `{ job: String, phase: String, at_micros: i64, data_version: u32 }`:
//! `u64 job_len, job bytes, u64 phase_len, phase bytes, i64 at_micros, u32 data_version`.
//! The data stays JSON so that any tool (even `strings`) can show it.

use serde::{Deserialize, Serialize};

use super::read_u32;

/// The envelope is small (names and a timestamp); anything longer is damage.
const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::legacy().with_limit::<MAX_ENVELOPE_BYTES>()
}

/// The decoded body of a checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckpointBody {
    pub job: String,
    pub phase: String,
    pub at_micros: i64,
    pub data_version: u32,
    #[serde(skip)]
    pub data_json: Vec<u8>,
}

/// Appends the encoded body to `out`. Fails only if the envelope is over its limit, which the
/// store's input limits rule out; the error says so.
pub(crate) fn encode_checkpoint_body(
    body: &CheckpointBody,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let envelope = bincode::serde::encode_to_vec(body, config())
        .map_err(|e| format!("envelope does not encode: {e}"))?;
    let meta_len = u32::try_from(envelope.len()).map_err(|_| "envelope too long".to_string())?;
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&envelope);
    out.extend_from_slice(&body.data_json);
    Ok(())
}

/// Decodes a checkpoint body whose record checksum has already been verified. Errors describe
/// what was malformed.
pub(crate) fn decode_checkpoint_body(bytes: &[u8]) -> Result<CheckpointBody, String> {
    let meta_len = read_u32(bytes, 0).ok_or("body shorter than its length prefix")? as usize;
    if meta_len > MAX_ENVELOPE_BYTES {
        return Err(format!("envelope length {meta_len} over the limit"));
    }
    let envelope = bytes
        .get(4..4 + meta_len)
        .ok_or("envelope runs past the end of the body")?;
    let (mut body, used): (CheckpointBody, usize) =
        bincode::serde::decode_from_slice(envelope, config())
            .map_err(|e| format!("envelope does not decode: {e}"))?;
    if used != meta_len {
        return Err(format!(
            "envelope is {used} bytes, its prefix says {meta_len}"
        ));
    }
    body.data_json = bytes.get(4 + meta_len..).unwrap_or_default().to_vec();
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let body = CheckpointBody {
            job: "github_sync".into(),
            phase: "pr_extraction".into(),
            at_micros: 1_700_000_000_123_456,
            data_version: 3,
            data_json: br#"{"cursor":"Y3Vy"}"#.to_vec(),
        };
        let mut out = Vec::new();
        encode_checkpoint_body(&body, &mut out).expect("encodes");
        // meta_len, then u64 job length and the job name, as FORMAT.md says.
        let meta_len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(meta_len, 8 + 11 + 8 + 13 + 8 + 4);
        assert_eq!(u64::from_le_bytes(out[4..12].try_into().unwrap()), 11);
        assert_eq!(&out[12..23], b"github_sync");
        assert!(out.ends_with(br#"{"cursor":"Y3Vy"}"#));
        assert_eq!(decode_checkpoint_body(&out), Ok(body));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(decode_checkpoint_body(&[]).is_err());
        assert!(decode_checkpoint_body(&[255, 255, 255, 255]).is_err());
        assert!(decode_checkpoint_body(&[10, 0, 0, 0, 1]).is_err());
        // A job length prefix claiming 2^64-1 bytes must not allocate.
        let mut evil = vec![16, 0, 0, 0];
        evil.extend_from_slice(&u64::MAX.to_le_bytes());
        evil.extend_from_slice(&[0; 8]);
        assert!(decode_checkpoint_body(&evil).is_err());
    }
}
