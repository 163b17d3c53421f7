//! What readers see of records being saved.
//!
//! In [`Durability::Sync`](crate::Durability::Sync) a record's index update waits in
//! [`Pending`] until the log says the record is durable: `latest`, `job`, `history`, `jobs`,
//! the recovery plans and the validators never show a record that a power loss could take
//! back, nor one whose save failed. In the other modes a save is acknowledged before it is
//! durable, and readers see it at once (docs/RECOVERY.md, "Durability modes").

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::Inner;
use super::index::{Index, Location};
use crate::error::{Error, Result};
use crate::job::{JobEvent, Trigger};
use crate::options::Durability;

/// The index update of one appended record.
#[derive(Debug)]
pub(super) enum Update {
    Checkpoint {
        job: String,
        at: Location,
        time: DateTime<Utc>,
        phase: String,
        trigger: Trigger,
        bytes: u64,
    },
    Event {
        job: String,
        seq: u64,
        time: DateTime<Utc>,
        event: JobEvent,
        bytes: u64,
    },
}

impl Update {
    fn seq(&self) -> u64 {
        match self {
            Update::Checkpoint { at, .. } => at.seq,
            Update::Event { seq, .. } => *seq,
        }
    }

    fn apply(self, index: &mut Index) {
        match self {
            Update::Checkpoint {
                job,
                at,
                time,
                phase,
                trigger,
                bytes,
            } => index.checkpoint(&job, at, time, &phase, trigger, bytes),
            Update::Event {
                job,
                seq,
                time,
                event,
                bytes,
            } => index.event(&job, seq, time, &event, bytes),
        }
    }
}

/// Index updates of records written but not yet known to be durable, in sequence order.
#[derive(Debug, Default)]
pub(super) struct Pending {
    queue: Mutex<VecDeque<Update>>,
}

impl Pending {
    /// Queues an update. Called under the writer lock, so updates arrive in sequence order.
    fn push(&self, update: Update) {
        let mut queue = super::lock_mutex(&self.queue);
        assert!(
            queue.back().is_none_or(|last| last.seq() < update.seq()),
            "index updates queued out of order"
        );
        queue.push_back(update);
    }

    /// Applies, in order, every queued update up to `upto_seq`.
    fn apply_upto(&self, index: &mut Index, upto_seq: u64) {
        let mut queue = super::lock_mutex(&self.queue);
        while queue.front().is_some_and(|update| update.seq() <= upto_seq) {
            if let Some(update) = queue.pop_front() {
                update.apply(index);
            }
        }
    }

    /// The sequence number of the oldest queued update.
    fn first_seq(&self) -> Option<u64> {
        super::lock_mutex(&self.queue).front().map(Update::seq)
    }
}

impl Inner {
    /// Takes the index update of a record just appended (under the writer lock): applied at
    /// once unless saves wait for durability, else queued until the record is durable.
    pub(super) fn record_written(&self, update: Update) {
        match self.options.durability {
            Durability::Sync => self.pending.push(update),
            _ => update.apply(&mut self.index_mut()),
        }
    }

    /// Makes every durable record visible to readers: applies the queued updates of records
    /// up to the log's durable sequence number, in order. Nothing is applied once the log is
    /// poisoned (what a failed save wrote stays invisible), except up to `acknowledged`: the
    /// caller's own record, which the log reported durable.
    pub(super) fn publish_durable(&self, acknowledged: u64) {
        if self.pending.first_seq().is_none() {
            return;
        }
        // Read before the poison check: whatever is durable now was durable before any
        // failure that comes after the check. The log's lock is not held while the index and
        // queue are locked below.
        let durable_seq = self.log.durable_seq();
        let upto_seq = if self.log.poisoned().is_some() {
            acknowledged
        } else {
            durable_seq.max(acknowledged)
        };
        self.pending.apply_upto(&mut self.index_mut(), upto_seq);
    }

    /// Before a compaction of every record up to `upto_seq` commits: makes each of them
    /// visible, so the index the compaction swaps holds them all. They are durable (their
    /// segments are sealed, and the log was synced); only a poisoned log refuses.
    pub(super) fn publish_compacted(&self, upto_seq: u64) -> Result<()> {
        self.publish_durable(0);
        match (self.pending.first_seq(), self.log.poisoned()) {
            (Some(first), Some(cause)) if first <= upto_seq => Err(Error::Poisoned { cause }),
            (Some(first), None) if first <= upto_seq => Err(Error::invalid(
                "compaction",
                format!("record {first} is not durable although its segment is sealed"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(job: &str, seq: u64) -> Update {
        Update::Checkpoint {
            job: job.into(),
            at: Location {
                seq,
                segment_id: 1,
                offset: 64 * seq,
            },
            time: DateTime::<Utc>::default(),
            phase: "p".into(),
            trigger: Trigger::Manual,
            bytes: 64,
        }
    }

    #[test]
    fn updates_apply_in_order_and_only_up_to_the_durable_one() {
        let pending = Pending::default();
        let mut index = Index::new(1);
        pending.push(checkpoint("a", 1));
        pending.push(Update::Event {
            job: "a".into(),
            seq: 2,
            time: DateTime::<Utc>::default(),
            event: JobEvent::RunSucceeded,
            bytes: 64,
        });
        pending.push(checkpoint("a", 4));
        pending.apply_upto(&mut index, 3);
        assert_eq!(index.visible_seq(), 2);
        assert_eq!(
            index.get("a").and_then(|e| e.latest).map(|l| l.seq),
            Some(1)
        );
        assert_eq!(pending.first_seq(), Some(4));
        pending.apply_upto(&mut index, 4);
        assert_eq!(index.visible_seq(), 4);
        assert_eq!(
            index.get("a").and_then(|e| e.latest).map(|l| l.seq),
            Some(4)
        );
        assert_eq!(pending.first_seq(), None);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn an_update_queued_out_of_order_is_a_bug() {
        let pending = Pending::default();
        pending.push(checkpoint("a", 2));
        pending.push(checkpoint("a", 1));
    }
}
