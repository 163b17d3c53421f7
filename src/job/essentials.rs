//! Checkpoint size management, the pure part: keep only the fields a resume needs.

use serde_json::{Map, Value};

/// A copy of `data` with only the top-level `fields` that it has, in its own order. Data
/// that is not a JSON object has no fields to drop and is returned unchanged.
///
/// ```
/// use serde_json::json;
/// let data = json!({"cursor": "Y3Vy", "processed": 50, "debug_log": ["…"]});
/// let kept = cairn::job::keep_essential_fields(&data, &["cursor", "processed", "absent"]);
/// assert_eq!(kept, json!({"cursor": "Y3Vy", "processed": 50}));
/// ```
pub fn keep_essential_fields(data: &Value, fields: &[&str]) -> Value {
    match data {
        Value::Object(object) => {
            let kept: Map<String, Value> = object
                .iter()
                .filter(|(key, _)| fields.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            Value::Object(kept)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_named_top_level_fields_are_kept() {
        let data = json!({
            "repo_processing_queue": [{"name": "a", "finished": true}],
            "last_repo_sync_checkpoint": "a",
            "rate_limit_context": {"remaining_calls": 30},
            "debug": {"repo_processing_queue": "nested names are not top-level"}
        });
        let kept = keep_essential_fields(
            &data,
            &["repo_processing_queue", "last_repo_sync_checkpoint"],
        );
        assert_eq!(
            kept,
            json!({
                "repo_processing_queue": [{"name": "a", "finished": true}],
                "last_repo_sync_checkpoint": "a"
            })
        );
    }

    #[test]
    fn no_fields_keeps_an_empty_object() {
        assert_eq!(keep_essential_fields(&json!({"a": 1}), &[]), json!({}));
    }

    #[test]
    fn non_objects_are_returned_unchanged() {
        for data in [json!(null), json!(3), json!("s"), json!([{"a": 1}])] {
            assert_eq!(keep_essential_fields(&data, &["a"]), data);
        }
    }
}
