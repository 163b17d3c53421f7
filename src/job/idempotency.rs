//! Idempotency keys: a stable name for "this item of this unit of this job", so that writes
//! replayed after a resume or a full restart overwrite rather than duplicate.

use std::fmt::Write as _;

/// The prefix of every key; a new format would get a new prefix.
const KEY_PREFIX: &str = "cairn1:";

/// A key naming the write of `position` (an item id, a cursor, an offset) in `unit` (a
/// repository, a project) of `job`. The same inputs give the same key on every run, platform
/// and cairn version (no randomness, no `std::hash`); different inputs give different keys.
///
/// The format is `cairn1:` followed by each part as a netstring, `<length>:<text>,`, where
/// the length is the part's size in UTF-8 bytes, in decimal:
///
/// ```
/// assert_eq!(
///     cairn::job::idempotency_key("jira_sync", "PROJ-1", "1250"),
///     "cairn1:9:jira_sync,6:PROJ-1,4:1250,"
/// );
/// ```
///
/// The lengths make the key injective: `("a:b", "c")` and `("a", "b:c")` differ, whatever
/// characters the parts contain. Keys grow with their parts; hash them with a
/// cryptographic hash if a fixed size is needed.
pub fn idempotency_key(job: &str, unit: &str, position: &str) -> String {
    let mut key =
        String::with_capacity(KEY_PREFIX.len() + job.len() + unit.len() + position.len() + 24);
    key.push_str(KEY_PREFIX);
    for part in [job, unit, position] {
        // Writing to a String cannot fail.
        let _ = write!(key, "{}:{part},", part.len());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splits a key back into its parts; `None` if it is not well formed.
    fn parse(key: &str) -> Option<Vec<String>> {
        let mut rest = key.strip_prefix(KEY_PREFIX)?;
        let mut parts = Vec::new();
        while !rest.is_empty() {
            let (length, tail) = rest.split_once(':')?;
            let length: usize = length.parse().ok()?;
            let part = tail.get(..length)?;
            rest = tail.get(length..)?.strip_prefix(',')?;
            parts.push(part.to_string());
        }
        Some(parts)
    }

    #[test]
    fn keys_are_stable() {
        // Fixed expected strings: these must never change, or replays after an upgrade would
        // duplicate writes.
        assert_eq!(idempotency_key("j", "u", "p"), "cairn1:1:j,1:u,1:p,");
        assert_eq!(
            idempotency_key("github_sync", "wexinc/repo2", "Y3Vyc29yOjE2NzM5NzI4MDA="),
            "cairn1:11:github_sync,12:wexinc/repo2,24:Y3Vyc29yOjE2NzM5NzI4MDA=,"
        );
        assert_eq!(idempotency_key("", "", ""), "cairn1:0:,0:,0:,");
        // Lengths count UTF-8 bytes, not characters.
        assert_eq!(idempotency_key("é", "日本", "x"), "cairn1:2:é,6:日本,1:x,");
    }

    #[test]
    fn tricky_inputs_give_distinct_keys() {
        let inputs = [
            ("a:b", "c", ""),
            ("a", "b:c", ""),
            ("a", "b", "c"),
            ("a,", "b", "c"),
            ("a", ",b", "c"),
            ("1:a,", "", ""),
            ("", "1:a,", ""),
            ("", "", "1:a,"),
            ("ab", "", "c"),
            ("a", "bc", ""),
            ("", "", ""),
            ("1", "1", "1"),
            ("11", "1", ""),
        ];
        let keys: std::collections::BTreeSet<String> = inputs
            .iter()
            .map(|(j, u, p)| idempotency_key(j, u, p))
            .collect();
        assert_eq!(keys.len(), inputs.len());
    }

    proptest! {
        #[test]
        fn keys_parse_back_to_their_parts(job in ".*", unit in ".*", position in ".*") {
            let key = idempotency_key(&job, &unit, &position);
            prop_assert_eq!(parse(&key), Some(vec![job, unit, position]));
        }

        #[test]
        fn different_parts_give_different_keys(
            a in prop::collection::vec("[a:,1]{0,4}", 3),
            b in prop::collection::vec("[a:,1]{0,4}", 3),
        ) {
            let key = |p: &[String]| idempotency_key(&p[0], &p[1], &p[2]);
            prop_assert_eq!(key(&a) == key(&b), a == b);
        }
    }
}
