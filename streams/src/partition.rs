//! One input partition's processing, without Kafka: a decoded input record in; the state change,
//! the forward decision, the changelog records and the drop reason out; at each flush, the
//! partition's shares of the sums it touched and the input offset to commit.
//!
//! [`crate::worker`] only moves bytes: it decodes the record, sends what [`Partition`] returns
//! and commits. The guarantees of [`crate::state`] rest on what is decided here, so the
//! proptests below check them directly: a restore from any prefix of the changelog a partition
//! wrote is the state at that prefix's input offset, the shares it sends equal a recomputation,
//! and a record read again after a restore is forwarded but changes nothing.

use std::collections::BTreeSet;

use marketflow_core::record::ListingSumKey;

use crate::aggregate::{Aggregator, Applied, Change, Scoping, Version};
use crate::changelog::{
    Entry, change_key, declared_key, encode_change, encode_declared, encode_partial,
    encode_partial_key, owner_partition,
};
use crate::filter::{DropReason, Verdict};

/// One input record as a partition reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its offset in the input partition.
    pub offset: i64,
    /// Its timestamp, epoch milliseconds (0 when it has none).
    pub timestamp: i64,
    /// The highest price it is accepted at (`streams.max_price`): exactly this much passes.
    pub max_price: i64,
    /// What it holds.
    pub body: Body<'a>,
}

/// What an input record holds, as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// A version of a product's listing (`None`: its tombstone).
    Listing {
        /// The product.
        product_id: i64,
        /// What the sums read from the version; `None` for a tombstone.
        version: Option<Version<'a>>,
    },
    /// A record that does not decode and never will, dropped for this reason
    /// (`undecodable`, `foreign_schema`, `too_large`).
    Undecodable(DropReason),
}

impl Body<'_> {
    /// The listing's category at the configured level, if it is a version that has one.
    pub fn category(&self) -> Option<&str> {
        match self {
            Body::Listing {
                version: Some(version),
                ..
            } => version.category,
            _ => None,
        }
    }
}

/// What a partition makes of a record before anything is sent: whether it is read again after
/// a restore, and whether it goes onward. The caller forwards it (or finds it cannot be sent)
/// and hands the plan back to [`Partition::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    offset: i64,
    replayed: bool,
    /// The change and the filter's verdict (`None` for a tombstone); `Err` for an undecodable
    /// record.
    read: Result<(Option<Verdict>, Change), DropReason>,
}

impl Plan {
    /// The state already reflects the record: it is read again only to be forwarded (its
    /// forward may have been lost in a crash), and changes nothing.
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// The filter accepts the listing: it goes to the affordable topic, replayed or not.
    pub fn forward(&self) -> bool {
        matches!(self.read, Ok((Some(Verdict::Accept(_)), _)))
    }

    /// The product the record is about, if it decoded.
    pub fn product_id(&self) -> Option<i64> {
        self.read.as_ref().ok().map(|(_, change)| change.product_id)
    }
}

/// A record to write: its key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
}

/// What processing one record comes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The state already reflected the record: nothing was applied, counted or written.
    pub replayed: bool,
    /// Why the record is dropped from the sums, to count (never for a replayed one).
    pub dropped: Option<DropReason>,
    /// The declarations of the sums the change touches for the first time, to write to the
    /// partition's changelog before the change (see [`crate::state`]).
    pub declarations: Vec<KeyValue>,
    /// The change, to write to the partition's changelog after the declarations; `None` when
    /// the state did not change.
    pub change: Option<KeyValue>,
}

impl Outcome {
    /// The changelog records to write, in order.
    pub fn changelog(&self) -> impl Iterator<Item = &KeyValue> {
        self.declarations.iter().chain(&self.change)
    }
}

/// One partition's share of one sum, for the partials topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// The partition of the partials topic that owns the sum ([`owner_partition`]).
    pub owner: i32,
    /// The record's key ([`encode_partial_key`]).
    pub key: Vec<u8>,
    /// The record's value: the share at the partition's position ([`encode_partial`]).
    pub value: Vec<u8>,
}

/// What a flush comes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flushed {
    /// The shares of the sums touched since the last flush.
    pub partials: Vec<Partial>,
    /// The input offset to commit once everything sent for the records before it is durable
    /// (the last processed offset + 1); `None` before the first record.
    pub commit: Option<i64>,
}

/// One input partition's state and what it owes the topics.
#[derive(Debug, Clone)]
pub struct Partition {
    number: i32,
    scoping: Scoping,
    state: Aggregator,
    /// The sums touched since the last flush: their shares are due.
    dirty: BTreeSet<ListingSumKey>,
    /// The last input offset processed, whether it changed the state or not.
    processed: Option<i64>,
}

impl Partition {
    /// Input partition `number`, resuming from `state`, restored from its changelog
    /// ([`crate::state::Restorer`]), with the declarations to write first: those of the sums a
    /// changelog written before sums were declared holds (before compaction can lose them).
    /// Every share it holds is due again, since one sent before a crash may not have landed.
    pub fn restored(number: i32, mut state: Aggregator, scoping: Scoping) -> (Self, Vec<KeyValue>) {
        let declarations = state
            .declare_all()
            .iter()
            .map(|key| declaration(&scoping, key))
            .collect();
        let dirty = state.keys_summed().cloned().collect();
        let partition = Self {
            number,
            scoping,
            state,
            dirty,
            processed: None,
        };
        (partition, declarations)
    }

    /// The input partition's number.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// The state: its position, products and shares.
    pub fn state(&self) -> &Aggregator {
        &self.state
    }

    /// Whether the state already reflects input offset `offset`.
    pub fn reflects(&self, offset: i64) -> bool {
        self.state.position().is_some_and(|p| offset <= p)
    }

    /// What `record` comes to before anything is sent (see [`Plan`]).
    pub fn plan(&self, record: &Record<'_>) -> Plan {
        let read = match record.body {
            Body::Listing {
                product_id,
                version,
            } => Ok(self.scoping.change_of(
                record.offset,
                record.timestamp,
                product_id,
                version,
                record.max_price,
            )),
            Body::Undecodable(reason) => Err(reason),
        };
        Plan {
            offset: record.offset,
            replayed: self.reflects(record.offset),
            read,
        }
    }

    /// Processes the record `plan` was made of, given whether it went onward (only asked when
    /// [`Plan::forward`]). An accepted listing that did not is dropped as `unsendable`, from
    /// the sums too: every listing summed is on the affordable topic. A replayed record changes
    /// nothing (see [`crate::state`]). `plan` must come from this partition's
    /// [`Partition::plan`], with no other record processed in between.
    ///
    /// The record counts as processed: the next [`Partition::flush`] gives the offset after it
    /// to commit. So what the outcome holds must be sent before that commit, and a failed send
    /// must stop the stage, not commit.
    pub fn apply(&mut self, plan: Plan, sent: bool) -> Outcome {
        self.processed = Some(plan.offset);
        let (mut verdict, mut change) = match plan.read {
            Err(reason) => {
                return Outcome {
                    replayed: plan.replayed,
                    dropped: (!plan.replayed).then_some(reason),
                    ..Outcome::default()
                };
            }
            Ok(_) if plan.replayed => {
                return Outcome {
                    replayed: true,
                    ..Outcome::default()
                };
            }
            Ok(read) => read,
        };
        if matches!(verdict, Some(Verdict::Accept(_))) && !sent {
            verdict = Some(Verdict::Drop(DropReason::Unsendable));
            change.next = None;
        }
        let dropped = match verdict {
            Some(Verdict::Drop(reason)) => Some(reason),
            _ => None,
        };
        let (applied, touched) = self.state.apply(&change);
        if applied != Applied::Changed {
            return Outcome {
                dropped,
                ..Outcome::default()
            };
        }
        // A sum's declaration goes before the first change that touches it (see `state`).
        let declarations = self
            .state
            .declare_touched(&touched)
            .iter()
            .map(|key| declaration(&self.scoping, key))
            .collect();
        let record = KeyValue {
            key: change_key(self.scoping.semantics, &change).to_vec(),
            value: encode_change(&self.scoping, &change),
        };
        for key in self.state.touched_keys(&touched) {
            if !self.dirty.contains(key) {
                self.dirty.insert(key.clone());
            }
        }
        Outcome {
            replayed: false,
            dropped,
            declarations,
            change: Some(record),
        }
    }

    /// The shares of the sums touched since the last flush, at the current position, for a
    /// partials topic of `partials_partitions` partitions (none before the state has a
    /// position: they stay due), and the input offset to commit.
    pub fn flush(&mut self, partials_partitions: i32) -> Flushed {
        let mut partials = Vec::new();
        if let Some(position) = self.state.position() {
            self.state.settle();
            for key in std::mem::take(&mut self.dirty) {
                partials.push(Partial {
                    owner: owner_partition(&key, partials_partitions),
                    key: encode_partial_key(&key, self.number),
                    value: encode_partial(position, &self.state.summary(&key)),
                });
            }
        }
        Flushed {
            partials,
            commit: self.processed.map(|p| p + 1),
        }
    }
}

/// Takes one changelog record read back in a restore into `state`: a declaration, or a change
/// (skipped when at or before the position already reflected).
pub fn replay(state: &mut Aggregator, entry: Entry) {
    match entry {
        Entry::Change(change) => {
            state.apply(&change);
        }
        Entry::Declared(key) => state.declare(key),
    }
}

fn declaration(scoping: &Scoping, key: &ListingSumKey) -> KeyValue {
    KeyValue {
        key: declared_key(key),
        value: encode_declared(scoping, key),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use marketflow_core::config::StreamsSemantics;
    use proptest::prelude::*;

    use super::*;
    use crate::aggregate::Summary;
    use crate::aggregate::strategies::{MAX, Op, op, recompute, scoping, semantics};
    use crate::changelog::{decode_entry, decode_partial, decode_partial_key};

    /// The input partition under test.
    const NUMBER: i32 = 2;
    /// Partitions of the partials topic.
    const PARTIALS: i32 = 4;

    /// How a generated record reads.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        /// It decodes and, if accepted, goes onward.
        Sendable,
        /// It decodes, but cannot go onward (over the size limit).
        Unsendable,
        /// It does not decode.
        Undecodable,
    }

    /// One input record: a product's version or tombstone at an offset.
    #[derive(Debug, Clone)]
    struct Input {
        op: Op,
        offset: i64,
        timestamp: i64,
        kind: Kind,
    }

    /// Input records at increasing offsets, with gaps (a transaction's marker takes one).
    fn inputs() -> impl Strategy<Value = Vec<Input>> {
        let kind = prop_oneof![
            8 => Just(Kind::Sendable),
            1 => Just(Kind::Unsendable),
            1 => Just(Kind::Undecodable),
        ];
        proptest::collection::vec((op(), kind, 1i64..=2), 0..80).prop_map(|items| {
            let mut offset = -1;
            items
                .into_iter()
                .enumerate()
                .map(|(i, (op, kind, gap))| {
                    offset += gap;
                    Input {
                        op,
                        offset,
                        timestamp: i as i64 * 10,
                        kind,
                    }
                })
                .collect()
        })
    }

    fn record(input: &Input) -> Record<'static> {
        let body = match (&input.op, input.kind) {
            (_, Kind::Undecodable) => Body::Undecodable(DropReason::Undecodable),
            (
                Op::Version {
                    id,
                    price,
                    category,
                },
                _,
            ) => Body::Listing {
                product_id: *id,
                version: Some(Version {
                    price: *price,
                    category: *category,
                }),
            },
            (Op::Tombstone { id }, _) => Body::Listing {
                product_id: *id,
                version: None,
            },
        };
        Record {
            offset: input.offset,
            timestamp: input.timestamp,
            max_price: MAX,
            body,
        }
    }

    /// What the sums see of `inputs`: an undecodable record nothing, an unsendable version
    /// the same as one without a price.
    fn seen(inputs: &[Input]) -> Vec<Op> {
        inputs
            .iter()
            .filter_map(|input| match (&input.op, input.kind) {
                (_, Kind::Undecodable) => None,
                (Op::Version { id, category, .. }, Kind::Unsendable) => Some(Op::Version {
                    id: *id,
                    price: None,
                    category: *category,
                }),
                (op, _) => Some(op.clone()),
            })
            .collect()
    }

    fn fresh(semantics: StreamsSemantics) -> Partition {
        let (partition, declarations) = Partition::restored(
            NUMBER,
            Aggregator::new(scoping(semantics)),
            scoping(semantics),
        );
        assert!(declarations.is_empty());
        partition
    }

    /// One record processed as the worker does: planned, forwarded when the plan says so (and
    /// it can be sent), applied.
    fn feed(partition: &mut Partition, input: &Input) -> (Plan, Outcome) {
        let plan = partition.plan(&record(input));
        let sent = plan.forward() && input.kind == Kind::Sendable;
        let outcome = partition.apply(plan.clone(), sent);
        (plan, outcome)
    }

    /// A changelog record as written: the input offset it was written for, whether it is a
    /// change (not a declaration), its bytes.
    type Logged = (i64, bool, KeyValue);

    /// Runs `inputs` through `partition` and returns the changelog records written, in order.
    fn run(partition: &mut Partition, inputs: &[Input]) -> Vec<Logged> {
        let mut log = Vec::new();
        for input in inputs {
            let (_, outcome) = feed(partition, input);
            for declaration in outcome.declarations {
                log.push((input.offset, false, declaration));
            }
            if let Some(change) = outcome.change {
                log.push((input.offset, true, change));
            }
        }
        log
    }

    /// A state restored from `log` as [`crate::state::Restorer`] does: decoded, checked
    /// against the configured scoping, replayed.
    fn restore(semantics: StreamsSemantics, log: &[Logged]) -> Aggregator {
        let mut state = Aggregator::new(scoping(semantics));
        for (_, _, record) in log {
            let (found, entry) = decode_entry("changelog", &record.value).unwrap();
            assert_eq!(found, scoping(semantics));
            // The key is the one compaction goes by: a declaration's never superseded.
            match &entry {
                Entry::Declared(key) => assert_eq!(record.key, declared_key(key)),
                Entry::Change(change) => {
                    assert_eq!(record.key, change_key(semantics, change).to_vec());
                }
            }
            replay(&mut state, entry);
        }
        state
    }

    /// Every share and the position, zeros included, for comparing two states.
    fn figures(
        a: &Aggregator,
        b: &Aggregator,
    ) -> (Option<i64>, usize, BTreeMap<ListingSumKey, Summary>) {
        let keys: BTreeSet<&ListingSumKey> = a.keys_summed().chain(b.keys_summed()).collect();
        let shares = keys
            .into_iter()
            .map(|key| (key.clone(), a.summary(key)))
            .collect();
        (a.position(), a.products(), shares)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn a_restore_from_any_prefix_of_the_changelog_is_the_state_at_its_offset(
            semantics in semantics(),
            inputs in inputs(),
            commit_share in 0usize..=100,
        ) {
            let mut live = fresh(semantics);
            let log = run(&mut live, &inputs);
            let last = live.flush(PARTIALS);
            for end in 0..=log.len() {
                // What a crash left durable: the prefix, restored.
                let restored = restore(semantics, &log[..end]);
                // The input offset of its last change: the uninterrupted run up to it.
                let at = log[..end].iter().rev().find(|(_, change, _)| *change).map(|(o, ..)| *o);
                let upto: Vec<Input> = inputs
                    .iter()
                    .filter(|input| at.is_some_and(|at| input.offset <= at))
                    .cloned()
                    .collect();
                let mut expected = fresh(semantics);
                run(&mut expected, &upto);
                prop_assert_eq!(restored.position(), at);
                prop_assert_eq!(
                    figures(&restored, expected.state()),
                    figures(expected.state(), &restored)
                );

                // Every sum held is declared; resumed from any committed offset up to the
                // position + 1, the partition forwards what it reads again, writes exactly the
                // rest of the changelog and ends with the uninterrupted run's shares.
                let (mut resumed, declarations) =
                    Partition::restored(NUMBER, restored, scoping(semantics));
                prop_assert!(declarations.is_empty(), "every sum held is declared");
                let committed = upto.len() * commit_share / 100;
                let rest = run(&mut resumed, &inputs[committed..]);
                let written: Vec<&KeyValue> = rest.iter().map(|(.., r)| r).collect();
                let wanted: Vec<&KeyValue> = log[end..].iter().map(|(.., r)| r).collect();
                prop_assert_eq!(written, wanted);
                let resumed_last = resumed.flush(PARTIALS);
                if committed < inputs.len() {
                    prop_assert_eq!(&resumed_last, &last);
                }
            }
        }

        #[test]
        fn the_shares_sent_equal_a_recomputation(
            semantics in semantics(),
            inputs in inputs(),
            flushes in proptest::collection::vec(any::<bool>(), 80),
        ) {
            let mut partition = fresh(semantics);
            // The newest share of each sum, as the merge stage keeps it.
            let mut shares: BTreeMap<ListingSumKey, (i64, Summary)> = BTreeMap::new();
            for (i, input) in inputs.iter().enumerate() {
                feed(&mut partition, input);
                if !flushes[i] && i + 1 < inputs.len() {
                    continue;
                }
                let flushed = partition.flush(PARTIALS);
                prop_assert_eq!(flushed.commit, Some(input.offset + 1));
                for partial in flushed.partials {
                    let (key, source) = decode_partial_key("partials", &partial.key).unwrap();
                    prop_assert_eq!(source, NUMBER);
                    prop_assert_eq!(partial.owner, owner_partition(&key, PARTIALS));
                    prop_assert!((0..PARTIALS).contains(&partial.owner));
                    let (version, summary) = decode_partial("partials", &partial.value).unwrap();
                    prop_assert_eq!(Some(version), partition.state().position());
                    prop_assert!(shares.get(&key).is_none_or(|(v, _)| *v <= version));
                    shares.insert(key, (version, summary));
                }
                // Every sum the partition holds has its share out, at its current figure.
                let held: Vec<&ListingSumKey> = partition.state().keys_summed().collect();
                prop_assert_eq!(shares.keys().collect::<Vec<_>>(), held);
                let counted: BTreeMap<ListingSumKey, (i64, i128, Option<i64>, Option<i64>)> =
                    shares
                        .iter()
                        .filter(|(_, (_, s))| s.count > 0)
                        .map(|(key, (_, s))| (key.clone(), (s.count, s.sum, s.min, s.max)))
                        .collect();
                prop_assert_eq!(counted, recompute(semantics, &seen(&inputs[..=i])));
            }
        }

        #[test]
        fn a_record_read_again_is_forwarded_and_changes_nothing(
            semantics in semantics(),
            inputs in inputs(),
            from_share in 0usize..=100,
        ) {
            let mut live = fresh(semantics);
            let mut forwards = Vec::new();
            for input in &inputs {
                forwards.push(feed(&mut live, input).0.forward());
            }
            let log = run(&mut fresh(semantics), &inputs);
            let (mut again, _) =
                Partition::restored(NUMBER, restore(semantics, &log), scoping(semantics));
            let before = again.state().clone();
            let reflected = inputs.iter().filter(|i| again.reflects(i.offset)).count();
            let from = reflected * from_share / 100;
            for (input, forwarded) in inputs[from..reflected].iter().zip(&forwards[from..]) {
                let (plan, outcome) = feed(&mut again, input);
                prop_assert!(plan.replayed());
                prop_assert_eq!(plan.forward(), *forwarded);
                prop_assert_eq!(
                    outcome,
                    Outcome { replayed: true, ..Outcome::default() }
                );
                prop_assert_eq!(again.flush(PARTIALS).commit, Some(input.offset + 1));
            }
            prop_assert_eq!(figures(again.state(), &before), figures(&before, again.state()));
        }
    }

    fn version(id: i64, price: Option<i64>, offset: i64) -> Input {
        Input {
            op: Op::Version {
                id,
                price,
                category: Some("가구"),
            },
            offset,
            timestamp: 100 + offset,
            kind: Kind::Sendable,
        }
    }

    #[test]
    fn an_unsendable_listing_is_dropped_from_the_sums_too() {
        let mut partition = fresh(StreamsSemantics::Distinct);
        let (plan, outcome) = feed(&mut partition, &version(7, Some(500), 0));
        assert!(plan.forward());
        assert_eq!(outcome.dropped, None);
        // Two declarations (all, the category), then the change.
        assert_eq!(outcome.changelog().count(), 3);
        let unsendable = Input {
            kind: Kind::Unsendable,
            ..version(7, Some(600), 1)
        };
        let (plan, outcome) = feed(&mut partition, &unsendable);
        assert!(plan.forward());
        assert_eq!(outcome.dropped, Some(DropReason::Unsendable));
        assert!(outcome.declarations.is_empty());
        let change = outcome.change.expect("the product leaves the sums");
        let (_, entry) = decode_entry("changelog", &change.value).unwrap();
        let Entry::Change(change) = entry else {
            panic!("a change");
        };
        assert_eq!(change.next, None);
        assert_eq!(partition.state().products(), 0);
    }

    #[test]
    fn a_dropped_or_undecodable_record_is_counted_once_and_committed() {
        let mut partition = fresh(StreamsSemantics::Append);
        let (plan, outcome) = feed(&mut partition, &version(1, Some(MAX + 1), 4));
        assert!(!plan.forward());
        assert_eq!(outcome.dropped, Some(DropReason::OverMaxPrice));
        assert_eq!(outcome.changelog().count(), 0);
        let undecodable = Input {
            kind: Kind::Undecodable,
            ..version(1, Some(5), 6)
        };
        let (plan, outcome) = feed(&mut partition, &undecodable);
        assert_eq!((plan.forward(), plan.product_id()), (false, None));
        assert_eq!(outcome.dropped, Some(DropReason::Undecodable));
        let flushed = partition.flush(PARTIALS);
        assert_eq!(flushed.commit, Some(7));
        assert!(flushed.partials.is_empty());
        // Read again after the position: the drop is not counted twice.
        let (plan, outcome) = feed(&mut partition, &version(1, Some(MAX + 1), 4));
        assert!(plan.replayed());
        assert_eq!(outcome.dropped, None);
    }
}
