//! [`WorkQueue`]: the units of work of a phase and how far each got, embedded in checkpoint
//! data.

use serde::{Deserialize, Serialize};

/// The most units a [`WorkQueue`] may hold.
pub const MAX_WORK_UNITS: usize = 1_000_000;

/// Where one unit of work stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Not started.
    Pending,
    /// Being processed: resume it from its cursor.
    InFlight,
    /// Finished; never handed out again.
    Done,
}

/// One unit of work: a repository, a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkUnit {
    /// The unit's name, unique in its queue (e.g. `wexinc/repo1`).
    pub name: String,
    /// Where it stands.
    pub state: UnitState,
    /// Where to resume it (an API page cursor), while in flight. Cleared when it finishes.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items processed in it so far.
    #[serde(default)]
    pub processed: u64,
}

/// Why a [`WorkQueue`] operation or deserialization was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Two units have the same name.
    #[error("work unit {name:?} appears twice in the queue")]
    DuplicateUnit {
        /// The repeated name.
        name: String,
    },
    /// More units than [`MAX_WORK_UNITS`].
    #[error("the queue has {count} units, over the limit of {limit}")]
    TooManyUnits {
        /// How many were given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// No unit has this name.
    #[error("no work unit named {name:?} in the queue")]
    UnknownUnit {
        /// The name asked for.
        name: String,
    },
    /// The unit is not the one in flight: only the unit handed out by
    /// [`WorkQueue::next_unit`] can advance or finish.
    #[error("work unit {name:?} is {state:?}, not in flight; call next_unit first")]
    NotInFlight {
        /// The unit.
        name: String,
        /// Its state.
        state: UnitState,
    },
    /// A deserialized queue has more than one unit in flight.
    #[error("work units {first:?} and {second:?} are both in flight; at most one may be")]
    SeveralInFlight {
        /// The first unit in flight.
        first: String,
        /// The second.
        second: String,
    },
}

/// The units of work of a phase (repositories, projects) and how far each got. Serialize it
/// into checkpoint data and deserialize it to resume: resuming skips exactly the units that
/// were finished and continues the one in flight from its cursor. Its JSON form is the list
/// of its units, e.g. `[{"name":"acme/api","state":"in_flight","cursor":"Y3Vy","processed":50}]`.
///
/// Invariants, checked on every operation and on deserialization: names are unique, at most
/// one unit is in flight, and a finished unit never goes back (a unit is in exactly one
/// [`UnitState`], so it is never both done and pending). Units are handed out in order.
///
/// ```
/// use cairn::job::WorkQueue;
/// let mut queue = WorkQueue::new(["acme/api", "acme/web"])?;
/// let unit = queue.next_unit().expect("a unit").name.clone();
/// queue.advance(&unit, Some("Y3Vy".into()), 50)?;
/// let checkpoint = serde_json::to_value(&queue)?;
///
/// // After a crash: the same unit resumes from its cursor.
/// let mut resumed: WorkQueue = serde_json::from_value(checkpoint)?;
/// let unit = resumed.next_unit().expect("a unit");
/// assert_eq!((unit.name.as_str(), unit.cursor.as_deref()), ("acme/api", Some("Y3Vy")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<WorkUnit>")]
pub struct WorkQueue {
    units: Vec<WorkUnit>,
    /// Index of the unit in flight. Derived from `units`.
    #[serde(skip)]
    in_flight: Option<usize>,
    /// No unit before this index is pending (states never go back to pending, and units are
    /// handed out in order), so the search for the next one starts here. Derived from `units`.
    #[serde(skip)]
    first_pending: usize,
}

/// A queue serializes as the list of its units; the derived indexes are not stored.
impl Serialize for WorkQueue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.units.serialize(serializer)
    }
}

/// A deserialized list of units is checked before it becomes a queue.
impl TryFrom<Vec<WorkUnit>> for WorkQueue {
    type Error = QueueError;

    fn try_from(units: Vec<WorkUnit>) -> Result<Self, QueueError> {
        WorkQueue::from_units(units)
    }
}

impl WorkQueue {
    /// A queue of pending units with these names, handed out in this order. Fails on a
    /// repeated name or more than [`MAX_WORK_UNITS`] units.
    pub fn new<I, S>(names: I) -> Result<WorkQueue, QueueError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let units = names
            .into_iter()
            .map(|name| WorkUnit {
                name: name.into(),
                state: UnitState::Pending,
                cursor: None,
                processed: 0,
            })
            .collect();
        WorkQueue::from_units(units)
    }

    fn from_units(units: Vec<WorkUnit>) -> Result<WorkQueue, QueueError> {
        if units.len() > MAX_WORK_UNITS {
            return Err(QueueError::TooManyUnits {
                count: units.len(),
                limit: MAX_WORK_UNITS,
            });
        }
        let mut names = std::collections::HashSet::with_capacity(units.len());
        let mut in_flight: Option<usize> = None;
        for (index, unit) in units.iter().enumerate() {
            if !names.insert(unit.name.as_str()) {
                return Err(QueueError::DuplicateUnit {
                    name: unit.name.clone(),
                });
            }
            if unit.state == UnitState::InFlight {
                if let Some(first) = in_flight.and_then(|first| units.get(first)) {
                    return Err(QueueError::SeveralInFlight {
                        first: first.name.clone(),
                        second: unit.name.clone(),
                    });
                }
                in_flight = Some(index);
            }
        }
        let first_pending = units
            .iter()
            .position(|unit| unit.state == UnitState::Pending)
            .unwrap_or(units.len());
        Ok(WorkQueue {
            units,
            in_flight,
            first_pending,
        })
    }

    /// The unit to work on: the one in flight if any (resume it from its cursor), else the
    /// first pending one, which is marked in flight. `None` when every unit is done.
    pub fn next_unit(&mut self) -> Option<&WorkUnit> {
        if self.in_flight.is_none() {
            let offset = self
                .units
                .get(self.first_pending..)?
                .iter()
                .position(|unit| unit.state == UnitState::Pending);
            let Some(offset) = offset else {
                self.first_pending = self.units.len();
                return None;
            };
            let index = self.first_pending + offset;
            self.first_pending = index + 1;
            let unit = self.units.get_mut(index)?;
            unit.state = UnitState::InFlight;
            self.in_flight = Some(index);
        }
        let unit = self.in_flight.and_then(|index| self.units.get(index));
        self.debug_check();
        unit
    }

    /// Records progress in the unit in flight: its new cursor and `processed_delta` more
    /// items. Fails if `name` is not the unit in flight.
    pub fn advance(
        &mut self,
        name: &str,
        cursor: Option<String>,
        processed_delta: u64,
    ) -> Result<(), QueueError> {
        let unit = self.in_flight_named(name)?;
        unit.cursor = cursor;
        unit.processed = unit.processed.saturating_add(processed_delta);
        Ok(())
    }

    /// Marks the unit in flight done and clears its cursor; it is never handed out again.
    /// Fails if `name` is not the unit in flight.
    pub fn finish(&mut self, name: &str) -> Result<(), QueueError> {
        let unit = self.in_flight_named(name)?;
        unit.state = UnitState::Done;
        unit.cursor = None;
        self.in_flight = None;
        self.debug_check();
        Ok(())
    }

    fn in_flight_named(&mut self, name: &str) -> Result<&mut WorkUnit, QueueError> {
        let matches = self
            .in_flight
            .and_then(|index| self.units.get(index))
            .is_some_and(|unit| unit.name == name);
        if !matches {
            return Err(match self.get(name) {
                Some(unit) => QueueError::NotInFlight {
                    name: name.into(),
                    state: unit.state,
                },
                None => QueueError::UnknownUnit { name: name.into() },
            });
        }
        self.in_flight
            .and_then(|index| self.units.get_mut(index))
            .ok_or_else(|| QueueError::UnknownUnit { name: name.into() })
    }

    /// True when every unit is done (also for an empty queue).
    pub fn is_done(&self) -> bool {
        self.units.iter().all(|unit| unit.state == UnitState::Done)
    }

    /// The unit in flight, if any.
    pub fn in_flight(&self) -> Option<&WorkUnit> {
        self.in_flight.and_then(|index| self.units.get(index))
    }

    /// The units not started yet, in the order they will be handed out.
    pub fn pending(&self) -> impl Iterator<Item = &WorkUnit> {
        self.units
            .iter()
            .filter(|unit| unit.state == UnitState::Pending)
    }

    /// The finished units.
    pub fn done(&self) -> impl Iterator<Item = &WorkUnit> {
        self.units
            .iter()
            .filter(|unit| unit.state == UnitState::Done)
    }

    /// Every unit, in order.
    pub fn units(&self) -> &[WorkUnit] {
        &self.units
    }

    /// The unit with this name.
    pub fn get(&self, name: &str) -> Option<&WorkUnit> {
        self.units.iter().find(|unit| unit.name == name)
    }

    /// How many units the queue holds.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// True when the queue holds no unit.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Items processed over all units.
    pub fn processed_total(&self) -> u64 {
        self.units
            .iter()
            .fold(0u64, |total, unit| total.saturating_add(unit.processed))
    }

    /// Checks the derived indexes where they point (debug builds; constant time, so a long
    /// queue stays linear). The full invariants are checked by `check_invariants` in tests.
    fn debug_check(&self) {
        if let Some(index) = self.in_flight {
            debug_assert_eq!(
                self.units.get(index).map(|unit| unit.state),
                Some(UnitState::InFlight)
            );
        }
        if let Some(before) = self.first_pending.checked_sub(1) {
            debug_assert_ne!(
                self.units.get(before).map(|unit| unit.state),
                Some(UnitState::Pending)
            );
        }
    }

    /// Every invariant, checked by a full scan.
    #[cfg(test)]
    fn check_invariants(&self) {
        let in_flight: Vec<usize> = (0..self.units.len())
            .filter(|&i| self.units.get(i).map(|u| u.state) == Some(UnitState::InFlight))
            .collect();
        assert!(in_flight.len() <= 1, "several units in flight");
        assert_eq!(in_flight.first().copied(), self.in_flight);
        assert!(
            self.units
                .iter()
                .take(self.first_pending)
                .all(|unit| unit.state != UnitState::Pending),
            "a pending unit before the search start"
        );
        let names: std::collections::HashSet<&str> =
            self.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names.len(), self.units.len(), "duplicate names");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    fn round_trip(queue: &WorkQueue) -> WorkQueue {
        let text = serde_json::to_string(queue).expect("serializes");
        serde_json::from_str(&text).expect("deserializes")
    }

    #[test]
    fn units_are_handed_out_in_order_one_at_a_time() {
        let mut queue = WorkQueue::new(["a", "b"]).expect("queue");
        assert_eq!(
            queue.next_unit().map(|u| u.name.clone()).as_deref(),
            Some("a")
        );
        // Asking again returns the same unit: it is still in flight.
        assert_eq!(
            queue.next_unit().map(|u| u.name.clone()).as_deref(),
            Some("a")
        );
        assert_eq!(
            queue.in_flight().map(|u| u.state),
            Some(UnitState::InFlight)
        );
        queue.finish("a").expect("finish");
        assert_eq!(
            queue.next_unit().map(|u| u.name.clone()).as_deref(),
            Some("b")
        );
        queue.finish("b").expect("finish");
        assert!(queue.next_unit().is_none());
        assert!(queue.is_done());
    }

    #[test]
    fn advance_records_cursor_and_count_and_finish_clears_the_cursor() {
        let mut queue = WorkQueue::new(["a"]).expect("queue");
        queue.next_unit();
        queue.advance("a", Some("c1".into()), 50).expect("advance");
        queue.advance("a", Some("c2".into()), 25).expect("advance");
        let unit = queue.get("a").expect("unit");
        assert_eq!((unit.cursor.as_deref(), unit.processed), (Some("c2"), 75));
        queue.finish("a").expect("finish");
        let unit = queue.get("a").expect("unit");
        assert_eq!((unit.cursor.as_deref(), unit.processed), (None, 75));
        assert_eq!(queue.processed_total(), 75);
    }

    #[test]
    fn only_the_unit_in_flight_moves() {
        let mut queue = WorkQueue::new(["a", "b"]).expect("queue");
        assert_eq!(
            queue.advance("a", None, 1),
            Err(QueueError::NotInFlight {
                name: "a".into(),
                state: UnitState::Pending
            })
        );
        queue.next_unit();
        assert!(matches!(
            queue.finish("b"),
            Err(QueueError::NotInFlight { .. })
        ));
        assert_eq!(
            queue.finish("zz"),
            Err(QueueError::UnknownUnit { name: "zz".into() })
        );
        queue.finish("a").expect("finish");
        // Done units never go back.
        assert_eq!(
            queue.finish("a"),
            Err(QueueError::NotInFlight {
                name: "a".into(),
                state: UnitState::Done
            })
        );
        assert!(matches!(
            queue.advance("a", None, 1),
            Err(QueueError::NotInFlight { .. })
        ));
    }

    #[test]
    fn duplicate_names_are_refused() {
        assert_eq!(
            WorkQueue::new(["a", "b", "a"]),
            Err(QueueError::DuplicateUnit { name: "a".into() })
        );
    }

    #[test]
    fn too_many_units_are_refused() {
        let names = (0..=MAX_WORK_UNITS).map(|i| i.to_string());
        assert!(matches!(
            WorkQueue::new(names),
            Err(QueueError::TooManyUnits { .. })
        ));
    }

    #[test]
    fn iterators_and_sizes() {
        let mut queue = WorkQueue::new(["a", "b", "c"]).expect("queue");
        queue.next_unit();
        queue.finish("a").expect("finish");
        queue.next_unit();
        let names =
            |units: Vec<&WorkUnit>| units.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(queue.done().collect()), ["a"]);
        assert_eq!(names(queue.pending().collect()), ["c"]);
        assert_eq!(queue.in_flight().map(|u| u.name.as_str()), Some("b"));
        assert_eq!(
            (queue.len(), queue.is_empty(), queue.is_done()),
            (3, false, false)
        );
        let empty = WorkQueue::new(Vec::<String>::new()).expect("queue");
        assert!(empty.is_empty() && empty.is_done());
    }

    #[test]
    fn json_form_is_readable() {
        let mut queue = WorkQueue::new(["wexinc/repo1", "wexinc/repo2"]).expect("queue");
        queue.next_unit();
        queue.finish("wexinc/repo1").expect("finish");
        queue.next_unit();
        queue
            .advance("wexinc/repo2", Some("Y3Vy".into()), 3)
            .expect("advance");
        assert_eq!(
            serde_json::to_value(&queue).expect("serializes"),
            json!([
                {"name": "wexinc/repo1", "state": "done", "cursor": null, "processed": 0},
                {"name": "wexinc/repo2", "state": "in_flight", "cursor": "Y3Vy", "processed": 3}
            ])
        );
    }

    #[test]
    fn bad_serialized_queues_are_errors() {
        let several = json!([
            {"name": "a", "state": "in_flight"},
            {"name": "b", "state": "in_flight"}
        ]);
        let err = serde_json::from_value::<WorkQueue>(several).expect_err("refused");
        assert!(err.to_string().contains("both in flight"), "{err}");
        let duplicate = json!([
            {"name": "a", "state": "done"},
            {"name": "a", "state": "pending"}
        ]);
        let err = serde_json::from_value::<WorkQueue>(duplicate).expect_err("refused");
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(serde_json::from_value::<WorkQueue>(json!({"units": []})).is_err());
    }

    #[test]
    fn a_resumed_queue_skips_finished_units_even_out_of_order() {
        let queue: WorkQueue = serde_json::from_value(json!([
            {"name": "a", "state": "pending"},
            {"name": "b", "state": "done", "processed": 4},
            {"name": "c", "state": "pending"}
        ]))
        .expect("deserializes");
        let mut queue = round_trip(&queue);
        let mut handed_out = Vec::new();
        while let Some(unit) = queue.next_unit() {
            let name = unit.name.clone();
            queue.finish(&name).expect("finish");
            handed_out.push(name);
        }
        assert_eq!(handed_out, ["a", "c"]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Process one item of the unit in flight, or finish it when it has no more.
        Step,
        /// Save the queue as a checkpoint.
        Checkpoint,
        /// Serialize and deserialize the queue in place.
        RoundTrip,
        /// Lose everything since the last checkpoint and resume from it.
        Crash,
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => Just(Op::Step),
            2 => Just(Op::Checkpoint),
            1 => Just(Op::RoundTrip),
            1 => Just(Op::Crash),
        ]
    }

    /// A job over the queue: each unit has `sizes[i]` items; the cursor is the next position.
    struct Worker {
        sizes: BTreeMap<String, u64>,
        queue: WorkQueue,
        durable: Option<String>,
        /// Items whose effects are in the last checkpoint, counted.
        committed: BTreeMap<(String, u64), u32>,
        since_checkpoint: Vec<(String, u64)>,
        done_in_checkpoint: BTreeSet<String>,
    }

    impl Worker {
        fn new(sizes: &[u64]) -> Worker {
            let sizes: BTreeMap<String, u64> = sizes
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("repo{i}"), *s))
                .collect();
            let queue = WorkQueue::new(sizes.keys().cloned()).expect("queue");
            Worker {
                sizes,
                queue,
                durable: None,
                committed: BTreeMap::new(),
                since_checkpoint: Vec::new(),
                done_in_checkpoint: BTreeSet::new(),
            }
        }

        /// Returns false when the queue is done.
        fn step(&mut self) -> bool {
            let Some(unit) = self.queue.next_unit() else {
                return false;
            };
            assert!(
                !self.done_in_checkpoint.contains(&unit.name),
                "a finished unit came back"
            );
            let name = unit.name.clone();
            let position: u64 = unit
                .cursor
                .as_deref()
                .map_or(0, |c| c.parse().expect("number"));
            assert_eq!(position, unit.processed, "cursor and count disagree");
            if position < self.sizes[&name] {
                self.since_checkpoint.push((name.clone(), position));
                self.queue
                    .advance(&name, Some((position + 1).to_string()), 1)
                    .expect("advance");
            } else {
                self.queue.finish(&name).expect("finish");
            }
            true
        }

        fn checkpoint(&mut self) {
            self.durable = Some(serde_json::to_string(&self.queue).expect("serializes"));
            for item in self.since_checkpoint.drain(..) {
                *self.committed.entry(item).or_default() += 1;
            }
            self.done_in_checkpoint = self.queue.done().map(|u| u.name.clone()).collect();
        }

        fn crash(&mut self) {
            self.since_checkpoint.clear();
            self.queue = match &self.durable {
                Some(text) => serde_json::from_str(text).expect("deserializes"),
                None => WorkQueue::new(self.sizes.keys().cloned()).expect("queue"),
            };
        }
    }

    proptest! {
        #[test]
        fn resume_at_any_point_processes_every_item_exactly_once(
            sizes in prop::collection::vec(0u64..6, 0..8),
            ops in prop::collection::vec(any_op(), 0..150),
        ) {
            let mut worker = Worker::new(&sizes);
            for op in ops {
                let done_before: BTreeSet<String> =
                    worker.queue.done().map(|u| u.name.clone()).collect();
                match op {
                    Op::Step => { worker.step(); }
                    Op::Checkpoint => worker.checkpoint(),
                    Op::RoundTrip => {
                        let back = round_trip(&worker.queue);
                        prop_assert_eq!(&back, &worker.queue);
                        worker.queue = back;
                    }
                    Op::Crash => worker.crash(),
                }
                worker.queue.check_invariants();
                if !matches!(op, Op::Crash) {
                    let done_after: BTreeSet<String> =
                        worker.queue.done().map(|u| u.name.clone()).collect();
                    prop_assert!(done_after.is_superset(&done_before), "a done unit went back");
                }
            }
            let bound = sizes.iter().sum::<u64>() + sizes.len() as u64 + 1;
            for _ in 0..bound {
                if !worker.step() {
                    break;
                }
            }
            worker.checkpoint();
            prop_assert!(worker.queue.is_done());
            prop_assert_eq!(worker.queue.processed_total(), sizes.iter().sum::<u64>());
            for (name, size) in &worker.sizes {
                prop_assert_eq!(worker.queue.get(name).map(|u| u.processed), Some(*size));
                for position in 0..*size {
                    prop_assert_eq!(
                        worker.committed.get(&(name.clone(), position)).copied(),
                        Some(1),
                        "item {} of {} not committed exactly once", position, name
                    );
                }
            }
            prop_assert_eq!(worker.committed.len() as u64, sizes.iter().sum::<u64>());
        }
    }
}
