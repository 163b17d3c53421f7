//! Checkpoint validation: [`Validator`] and the rules a job type's checkpoint data must
//! follow before it is saved (listed, in order, on the type).

use std::cmp::Ordering;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use crate::error::Error;

/// A custom validation rule: `Ok` if the data passes, else why it does not.
pub type CustomRule = Box<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// The field name used in a [`ValidationFailure`] for rules about the whole data.
pub(crate) const WHOLE_DATA_FIELD: &str = "(data)";

/// Why checkpoint data was rejected: which field broke which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?}: {rule}")]
#[non_exhaustive]
pub struct ValidationFailure {
    /// The field: a top-level name, a JSON pointer without its leading `/`, `phase`, the
    /// name a custom rule was registered under, or `(data)` for a rule about the whole data
    /// (a [`Validator::typed`] check).
    pub field: String,
    /// The rule broken, with the values involved, e.g.
    /// `must never decrease (was 50, now 40)`.
    pub rule: String,
}

impl ValidationFailure {
    fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ValidationFailure {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The public error for this failure in a checkpoint of `job`:
    /// [`Error::Validation`].
    pub fn into_error(self, job: &str) -> Error {
        Error::Validation {
            job: job.into(),
            field: self.field,
            rule: self.rule,
        }
    }
}

/// The validation rules of one job type, so that a job never resumes from data it cannot
/// use. Build it with the chained methods. Pure: the data and the previous checkpoint in, a
/// verdict out. Rules are checked in this order, and the first failure is reported:
///
/// 1. **Phases**: when phases are declared, the checkpoint's phase must be one of them and
///    must not come before the previous checkpoint's phase. Phases are job-wide steps (a
///    phase walks every unit of work), so going back means the run restarted: the store
///    passes no previous checkpoint after a `CheckpointCleared`, which allows it.
/// 2. **Required fields**: top-level fields that must be present (`null` counts as present).
/// 3. **Typed**: the data must deserialize into a given type ([`Validator::typed`]).
/// 4. **Monotonic fields**: numbers, named by JSON pointer, that must never decrease
///    versus the previous checkpoint: a count that goes down means lost data.
/// 5. **Custom rules**: any function of the data ([`Validator::custom`]).
///
/// ```
/// use serde_json::json;
/// let validator = cairn::job::Validator::new()
///     .phases(["discovery", "extraction"])
///     .require("repo_processing_queue")
///     .monotonic("/total_prs_processed");
/// let before = json!({"repo_processing_queue": [], "total_prs_processed": 50});
/// let after = json!({"repo_processing_queue": [], "total_prs_processed": 40});
/// let failure = validator
///     .validate("extraction", &after, Some(("extraction", &before)))
///     .expect_err("went down");
/// assert_eq!(failure.field, "total_prs_processed");
/// assert_eq!(failure.rule, "must never decrease (was 50, now 40)");
/// ```
#[derive(Default)]
pub struct Validator {
    phases: Vec<String>,
    required: Vec<String>,
    typed: Vec<(&'static str, CustomRule)>,
    monotonic: Vec<String>,
    custom: Vec<(String, CustomRule)>,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |rules: &[(String, CustomRule)]| -> Vec<String> {
            rules.iter().map(|(name, _)| name.clone()).collect()
        };
        let typed: Vec<&str> = self.typed.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Validator")
            .field("phases", &self.phases)
            .field("required", &self.required)
            .field("typed", &typed)
            .field("monotonic", &self.monotonic)
            .field("custom", &names(&self.custom))
            .finish()
    }
}

impl Validator {
    /// A validator with no rules: everything passes.
    pub fn new() -> Validator {
        Validator::default()
    }

    /// Declares the job's phases, in order (replacing any declared before).
    pub fn phases<I, S>(mut self, phases: I) -> Validator
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.phases = phases.into_iter().map(Into::into).collect();
        self
    }

    /// Requires a top-level field.
    pub fn require(mut self, field: impl Into<String>) -> Validator {
        self.required.push(field.into());
        self
    }

    /// Requires the data to deserialize into `T` (unknown fields are allowed unless `T`
    /// denies them), e.g. a struct of the fields the resume code reads.
    pub fn typed<T: DeserializeOwned + 'static>(mut self) -> Validator {
        let rule: CustomRule = Box::new(|data: &Value| {
            T::deserialize(data)
                .map(drop)
                .map_err(|error| error.to_string())
        });
        self.typed.push((std::any::type_name::<T>(), rule));
        self
    }

    /// Requires the number at `pointer` (a JSON pointer such as `/total_prs_processed`; a
    /// plain name is taken as a top-level field) never to decrease versus the previous
    /// checkpoint. A field the previous checkpoint had must stay present.
    pub fn monotonic(mut self, pointer: impl Into<String>) -> Validator {
        let pointer = pointer.into();
        let pointer = if pointer.starts_with('/') {
            pointer
        } else {
            format!("/{pointer}")
        };
        self.monotonic.push(pointer);
        self
    }

    /// Adds a custom rule, reported under `field` when it fails.
    pub fn custom<F>(mut self, field: impl Into<String>, rule: F) -> Validator
    where
        F: Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    {
        self.custom.push((field.into(), Box::new(rule)));
        self
    }

    /// The declared phases, in order (empty when undeclared: any phase goes).
    pub fn declared_phases(&self) -> &[String] {
        &self.phases
    }

    /// The position of `phase` among the declared phases.
    pub fn phase_index(&self, phase: &str) -> Option<usize> {
        self.phases.iter().position(|declared| declared == phase)
    }

    /// The required top-level fields.
    pub fn required_fields(&self) -> &[String] {
        &self.required
    }

    /// The JSON pointers of the fields that must never decrease.
    pub fn monotonic_fields(&self) -> &[String] {
        &self.monotonic
    }

    /// Checks a checkpoint of `phase` with `data` against every rule. `previous` is the
    /// phase and data of the job's latest checkpoint, or `None` if it has none (a first run,
    /// or after a `CheckpointCleared`). Returns the first rule broken.
    pub fn validate(
        &self,
        phase: &str,
        data: &Value,
        previous: Option<(&str, &Value)>,
    ) -> Result<(), ValidationFailure> {
        self.check_phase(phase, previous.map(|(phase, _)| phase))?;
        for field in &self.required {
            if data.get(field).is_none() {
                return Err(ValidationFailure::new(field, "required field is missing"));
            }
        }
        for (type_name, rule) in &self.typed {
            rule(data).map_err(|reason| {
                let rule = format!("does not deserialize into {type_name}: {reason}");
                ValidationFailure::new(WHOLE_DATA_FIELD, rule)
            })?;
        }
        if let Some((_, previous)) = previous {
            for pointer in &self.monotonic {
                check_monotonic(pointer, data, previous)?;
            }
        } else {
            for pointer in &self.monotonic {
                check_number(pointer, data)?;
            }
        }
        for (field, rule) in &self.custom {
            rule(data).map_err(|reason| ValidationFailure::new(field, reason))?;
        }
        Ok(())
    }

    fn check_phase(&self, phase: &str, previous: Option<&str>) -> Result<(), ValidationFailure> {
        if self.phases.is_empty() {
            return Ok(());
        }
        let Some(index) = self.phase_index(phase) else {
            let rule = format!(
                "unknown phase {phase:?}; declared phases: {}",
                self.phases.join(", ")
            );
            return Err(ValidationFailure::new("phase", rule));
        };
        // A previous phase no longer declared (the job type changed) does not constrain.
        if let Some(previous) = previous
            && let Some(previous_index) = self.phase_index(previous)
            && index < previous_index
        {
            let rule = format!(
                "phase {phase:?} comes before the previous checkpoint's phase {previous:?}; \
                 clear the checkpoint to restart"
            );
            return Err(ValidationFailure::new("phase", rule));
        }
        Ok(())
    }
}

/// The field name reported for a pointer: the pointer without its leading `/`.
fn field_of(pointer: &str) -> &str {
    pointer.strip_prefix('/').unwrap_or(pointer)
}

/// A present monotonic field must be a number.
fn check_number<'a>(
    pointer: &str,
    data: &'a Value,
) -> Result<Option<&'a Number>, ValidationFailure> {
    match data.pointer(pointer) {
        None => Ok(None),
        Some(Value::Number(number)) => Ok(Some(number)),
        Some(other) => Err(ValidationFailure::new(
            field_of(pointer),
            format!("must be a number, found {other}"),
        )),
    }
}

fn check_monotonic(pointer: &str, data: &Value, previous: &Value) -> Result<(), ValidationFailure> {
    let now = check_number(pointer, data)?;
    // A previous value that is missing or not a number (the rule is new) does not constrain.
    let Some(Value::Number(was)) = previous.pointer(pointer) else {
        return Ok(());
    };
    let Some(now) = now else {
        return Err(ValidationFailure::new(
            field_of(pointer),
            format!("must never decrease (was {was}, now missing)"),
        ));
    };
    if compare_numbers(now, was) == Some(Ordering::Less) {
        return Err(ValidationFailure::new(
            field_of(pointer),
            format!("must never decrease (was {was}, now {now})"),
        ));
    }
    Ok(())
}

/// Compares JSON numbers exactly when both are integers of one kind, else as floats.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return Some(a.cmp(&b));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn phased() -> Validator {
        Validator::new().phases(["discovery", "issues", "users"])
    }

    fn rejected(result: Result<(), ValidationFailure>) -> ValidationFailure {
        result.expect_err("must be rejected")
    }

    #[test]
    fn no_rules_accept_anything() {
        let validator = Validator::new();
        for data in [json!(null), json!([1]), json!({"a": 1})] {
            validator
                .validate("any", &data, Some(("other", &json!(3))))
                .expect("passes");
        }
    }

    #[test]
    fn unknown_phase_is_rejected() {
        let failure = rejected(phased().validate("transformation", &json!({}), None));
        assert_eq!(failure.field, "phase");
        assert!(
            failure.rule.contains("unknown phase \"transformation\""),
            "{}",
            failure.rule
        );
        assert!(
            failure.rule.contains("discovery, issues, users"),
            "{}",
            failure.rule
        );
    }

    #[test]
    fn phases_may_stay_or_advance_but_not_go_back() {
        let validator = phased();
        let data = json!({});
        validator.validate("discovery", &data, None).expect("first");
        validator
            .validate("issues", &data, Some(("issues", &data)))
            .expect("same phase");
        validator
            .validate("users", &data, Some(("discovery", &data)))
            .expect("skip ahead");
        let failure = rejected(validator.validate("discovery", &data, Some(("issues", &data))));
        assert_eq!(failure.field, "phase");
        assert!(failure.rule.contains("comes before"), "{}", failure.rule);
        // After a restart the store passes no previous checkpoint: any phase may follow.
        validator
            .validate("discovery", &data, None)
            .expect("after a restart");
    }

    #[test]
    fn a_previous_phase_no_longer_declared_does_not_constrain() {
        let data = json!({});
        phased()
            .validate("discovery", &data, Some(("retired_phase", &data)))
            .expect("passes");
    }

    #[test]
    fn undeclared_phases_accept_any_phase() {
        let data = json!({});
        Validator::new()
            .validate("z", &data, Some(("a", &data)))
            .expect("passes");
    }

    #[test]
    fn required_fields_must_be_present() {
        let validator = Validator::new()
            .require("last_sync_at")
            .require("extraction_phase");
        let ok = json!({"last_sync_at": "2025-01-16T10:30:00Z", "extraction_phase": null});
        validator
            .validate("p", &ok, None)
            .expect("null counts as present");
        let failure = rejected(validator.validate("p", &json!({"last_sync_at": "x"}), None));
        assert_eq!(failure.field, "extraction_phase");
        assert_eq!(failure.rule, "required field is missing");
        let failure = failure_of_non_object(&validator);
        assert_eq!(failure.field, "last_sync_at");
    }

    fn failure_of_non_object(validator: &Validator) -> ValidationFailure {
        rejected(validator.validate("p", &json!([1, 2]), None))
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only the shape is checked")]
    struct Progress {
        processed: u64,
        cursor: Option<String>,
    }

    #[test]
    fn typed_data_must_deserialize() {
        let validator = Validator::new().typed::<Progress>();
        validator
            .validate("p", &json!({"processed": 3, "extra": true}), None)
            .expect("passes");
        let failure = rejected(validator.validate("p", &json!({"processed": "three"}), None));
        assert_eq!(failure.field, WHOLE_DATA_FIELD);
        assert!(failure.rule.contains("Progress"), "{}", failure.rule);
        assert!(failure.rule.contains("invalid type"), "{}", failure.rule);
        let failure = rejected(validator.validate("p", &json!({"cursor": "c"}), None));
        assert!(
            failure.rule.contains("missing field `processed`"),
            "{}",
            failure.rule
        );
    }

    #[test]
    fn monotonic_fields_never_decrease() {
        let validator = Validator::new().monotonic("/total_prs_processed");
        let at = |n: i64| json!({"total_prs_processed": n});
        let previous = at(50);
        validator
            .validate("p", &at(50), Some(("p", &previous)))
            .expect("equal");
        validator
            .validate("p", &at(51), Some(("p", &previous)))
            .expect("up");
        let failure = rejected(validator.validate("p", &at(40), Some(("p", &previous))));
        assert_eq!(failure.field, "total_prs_processed");
        assert_eq!(failure.rule, "must never decrease (was 50, now 40)");
        assert_eq!(
            failure.into_error("github_sync").to_string(),
            "checkpoint of job \"github_sync\" rejected: field \"total_prs_processed\": \
             must never decrease (was 50, now 40)"
        );
    }

    #[test]
    fn monotonic_fields_must_stay_present_and_numeric() {
        let validator = Validator::new().monotonic("total");
        assert_eq!(validator.monotonic_fields(), ["/total"]);
        let previous = json!({"total": 5});
        let failure = rejected(validator.validate("p", &json!({}), Some(("p", &previous))));
        assert_eq!(failure.rule, "must never decrease (was 5, now missing)");
        let failure = rejected(validator.validate("p", &json!({"total": "6"}), None));
        assert_eq!(failure.rule, "must be a number, found \"6\"");
        // Absent before and now: nothing to compare.
        validator
            .validate("p", &json!({}), Some(("p", &json!({}))))
            .expect("passes");
        // A previous value that is not a number does not constrain.
        validator
            .validate(
                "p",
                &json!({"total": 1}),
                Some(("p", &json!({"total": "x"}))),
            )
            .expect("passes");
    }

    #[test]
    fn monotonic_fields_can_be_nested_and_fractional() {
        let validator = Validator::new().monotonic("/stats/ratio");
        let previous = json!({"stats": {"ratio": 0.5}});
        validator
            .validate(
                "p",
                &json!({"stats": {"ratio": 0.75}}),
                Some(("p", &previous)),
            )
            .expect("up");
        let failure = rejected(validator.validate(
            "p",
            &json!({"stats": {"ratio": 0.25}}),
            Some(("p", &previous)),
        ));
        assert_eq!(failure.field, "stats/ratio");
    }

    #[test]
    fn numbers_compare_exactly() {
        let n = |value: Value| match value {
            Value::Number(number) => number,
            other => panic!("not a number: {other}"),
        };
        let big = n(json!(u64::MAX));
        let big_minus_one = n(json!(u64::MAX - 1));
        assert_eq!(compare_numbers(&big_minus_one, &big), Some(Ordering::Less));
        assert_eq!(
            compare_numbers(&n(json!(-1)), &n(json!(u64::MAX))),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_numbers(&n(json!(-3)), &n(json!(-2))),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_numbers(&n(json!(2.5)), &n(json!(2))),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn custom_rules_report_under_their_field() {
        let validator = Validator::new().custom("repo_processing_queue", |data| {
            match data.get("repo_processing_queue") {
                Some(Value::Array(_)) | None => Ok(()),
                Some(_) => Err("must be a list".into()),
            }
        });
        validator
            .validate("p", &json!({"repo_processing_queue": []}), None)
            .expect("passes");
        let failure = rejected(validator.validate("p", &json!({"repo_processing_queue": 1}), None));
        assert_eq!(
            failure,
            ValidationFailure::new("repo_processing_queue", "must be a list")
        );
    }

    #[test]
    fn rules_are_checked_in_order() {
        let validator = phased()
            .require("a")
            .monotonic("/n")
            .custom("c", |_| Err("never".into()));
        let failure = rejected(validator.validate("nope", &json!({}), None));
        assert_eq!(failure.field, "phase");
        let failure = rejected(validator.validate("issues", &json!({}), None));
        assert_eq!(failure.field, "a");
        let failure = rejected(validator.validate("issues", &json!({"a": 1, "n": "x"}), None));
        assert_eq!(failure.field, "n");
        let failure = rejected(validator.validate("issues", &json!({"a": 1, "n": 1}), None));
        assert_eq!(failure.field, "c");
    }

    #[test]
    fn debug_lists_the_rules() {
        let validator = phased()
            .require("a")
            .typed::<Progress>()
            .custom("c", |_| Ok(()));
        let debug = format!("{validator:?}");
        assert!(
            debug.contains("Progress") && debug.contains("\"c\""),
            "{debug}"
        );
        assert_eq!(validator.required_fields(), ["a"]);
        assert_eq!(validator.declared_phases().len(), 3);
        assert_eq!(validator.phase_index("users"), Some(2));
    }
}
