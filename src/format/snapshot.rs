//! Snapshot bodies (format 3 on), the last records of a compacted segment: every job's folded
//! state as plain JSON, with no envelope:
//!
//! ```text
//! {"jobs":[<job state>,<job state>,...]}
//! ```
//!
//! From format 4 a snapshot may be split over several records (snapshot parts, then the final
//! snapshot record), each such a body with a subset of the jobs, in order. The job states are
//! opaque here: the job layer defines them, this module only lays them out.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::body::EncodeError;

/// What every snapshot body starts and ends with, around the comma-separated job states.
const SNAPSHOT_PREFIX: &[u8] = br#"{"jobs":["#;
const SNAPSHOT_SUFFIX: &[u8] = b"]}";

/// Packs job states, each already encoded as JSON, in order into snapshot bodies
/// `{"jobs":[...]}` of at most `max_body_bytes` bytes each: one body when they all fit, more
/// when not (format 4 snapshot parts), and one empty body when there are no states. Every body
/// decodes on its own. Fails, naming the state, when one state alone does not fit.
pub(crate) fn encode_snapshot_parts(
    states_json: &[Vec<u8>],
    max_body_bytes: usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let overhead = SNAPSHOT_PREFIX.len() + SNAPSHOT_SUFFIX.len();
    let mut parts = Vec::new();
    let mut part = SNAPSHOT_PREFIX.to_vec();
    let mut empty = true;
    for (index, state) in states_json.iter().enumerate() {
        if overhead + state.len() > max_body_bytes {
            return Err(EncodeError::SnapshotStateTooLarge {
                index,
                len_bytes: state.len(),
                max_body_bytes,
            });
        }
        let comma = usize::from(!empty);
        if part.len() + comma + state.len() + SNAPSHOT_SUFFIX.len() > max_body_bytes {
            part.extend_from_slice(SNAPSHOT_SUFFIX);
            parts.push(std::mem::replace(&mut part, SNAPSHOT_PREFIX.to_vec()));
            empty = true;
        }
        if !empty {
            part.push(b',');
        }
        part.extend_from_slice(state);
        empty = false;
    }
    part.extend_from_slice(SNAPSHOT_SUFFIX);
    parts.push(part);
    Ok(parts)
}

/// A snapshot body as it decodes: the job states, of whatever type the caller reads them as.
#[derive(Deserialize)]
struct SnapshotBody<T> {
    jobs: Vec<T>,
}

/// Decodes the job states of one snapshot body (a part or the final record).
pub(crate) fn decode_snapshot_body<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<Vec<T>, serde_json::Error> {
    serde_json::from_slice::<SnapshotBody<T>>(bytes).map(|body| body.jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_parts_split_between_states_and_each_decodes() {
        let states: Vec<Vec<u8>> = (0..50)
            .map(|i| format!(r#"{{"job":"j{i}","pad":"{}"}}"#, "x".repeat(i)).into_bytes())
            .collect();
        let whole = encode_snapshot_parts(&states, usize::MAX).unwrap();
        assert_eq!(whole.len(), 1);
        let value: serde_json::Value = serde_json::from_slice(&whole[0]).unwrap();
        assert_eq!(value["jobs"].as_array().unwrap().len(), 50);
        for max in [100, 150, 333, 1000] {
            let parts = encode_snapshot_parts(&states, max).unwrap();
            assert!(parts.len() > 1, "{max}");
            let mut jobs = Vec::new();
            for part in &parts {
                assert!(
                    part.len() <= max,
                    "a part of {} bytes over {max}",
                    part.len()
                );
                let value: serde_json::Value = serde_json::from_slice(part).unwrap();
                jobs.extend(value["jobs"].as_array().unwrap().iter().cloned());
            }
            let expected: Vec<serde_json::Value> = states
                .iter()
                .map(|s| serde_json::from_slice(s).unwrap())
                .collect();
            assert_eq!(jobs, expected, "every state once, in order ({max})");
        }
    }

    #[test]
    fn snapshot_parts_of_nothing_and_of_a_state_too_large() {
        assert_eq!(
            encode_snapshot_parts(&[], 64).unwrap(),
            vec![br#"{"jobs":[]}"#.to_vec()]
        );
        let big = vec![b"\"x\"".repeat(10)];
        assert!(encode_snapshot_parts(&big, 11 + 29).is_err());
        assert_eq!(encode_snapshot_parts(&big, 11 + 30).unwrap().len(), 1);
    }

    #[test]
    fn every_part_decodes_to_its_states() {
        let states: Vec<Vec<u8>> = (0..20).map(|i| format!("{i}").into_bytes()).collect();
        let parts = encode_snapshot_parts(&states, 30).unwrap();
        assert!(parts.len() > 1);
        let decoded: Vec<u32> = parts
            .iter()
            .flat_map(|part| decode_snapshot_body::<u32>(part).unwrap())
            .collect();
        assert_eq!(decoded, (0..20).collect::<Vec<u32>>());
        assert!(decode_snapshot_body::<u32>(b"{\"jobs\":[1,").is_err());
    }
}
