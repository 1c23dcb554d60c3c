//! The running sums as pure logic: one input partition's state (its products and per-scope
//! aggregates), the changes input records make to it, and the merge of partial sums into totals.
//!
//! Nothing here touches Kafka, so the proptests below check the arithmetic against a plain
//! recomputation, and crash recovery (replaying a changelog into a fresh state) against the
//! uninterrupted run.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use marketflow_core::config::StreamsSemantics;
use marketflow_core::record::{Listing, ListingSum, ListingSumKey};

use crate::filter::{Verdict, verdict};

/// Scope and value of the global total.
pub const ALL: &str = "all";

/// The category value of a listing that has none at the configured level.
pub const NO_CATEGORY: &str = "unknown";

/// What one product adds to the sums: its price, under its category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// Price in KRW.
    pub price: i64,
    /// The category value at the configured level, or [`NO_CATEGORY`].
    pub category: String,
}

/// The change one input record makes to its partition's state; also the changelog record that
/// makes the change durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Offset of the input record in its partition.
    pub offset: i64,
    /// The input record's timestamp, epoch milliseconds: the sums' `updated_at`.
    pub timestamp: i64,
    /// The product the record is about.
    pub product_id: i64,
    /// What the product contributes from now on; `None` for a tombstone or a version the filter
    /// drops (under `distinct` it leaves the set; under `append` nothing happens).
    pub next: Option<Contribution>,
}

/// Which scopes a state sums over, beside the global `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scoping {
    /// What a sum counts.
    pub semantics: StreamsSemantics,
    /// The category level, 1 to 4.
    pub category_level: u8,
}

impl Scoping {
    /// The scope name of the category sums, e.g. `category_level1`.
    pub fn category_scope(&self) -> String {
        format!("category_level{}", self.category_level)
    }

    /// The category of `listing` at the configured level, if it has one.
    pub fn category_of<'a>(&self, listing: &'a Listing) -> Option<&'a str> {
        let level = match self.category_level {
            1 => &listing.category_level1,
            2 => &listing.category_level2,
            3 => &listing.category_level3,
            _ => &listing.category_level4,
        };
        level.as_deref()
    }

    /// The change an input record makes, with the filter's verdict (`None` for a tombstone).
    pub fn change(
        &self,
        offset: i64,
        timestamp: i64,
        product_id: i64,
        listing: Option<&Listing>,
        max_price: i64,
    ) -> (Option<Verdict>, Change) {
        let version = listing.map(|l| Version {
            price: l.price,
            category: self.category_of(l),
        });
        self.change_of(offset, timestamp, product_id, version, max_price)
    }

    /// As [`Scoping::change`], from the two fields the sums read (`None` for a tombstone).
    pub fn change_of(
        &self,
        offset: i64,
        timestamp: i64,
        product_id: i64,
        version: Option<Version<'_>>,
        max_price: i64,
    ) -> (Option<Verdict>, Change) {
        let verdict = version.as_ref().map(|v| verdict(v.price, max_price));
        let next = match (version, verdict) {
            (Some(version), Some(Verdict::Accept(price))) => Some(Contribution {
                price,
                category: version.category.unwrap_or(NO_CATEGORY).to_owned(),
            }),
            _ => None,
        };
        let change = Change {
            offset,
            timestamp,
            product_id,
            next,
        };
        (verdict, change)
    }
}

/// What the sums read from one version of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    /// Its price, if any.
    pub price: Option<i64>,
    /// Its category at the configured level, if any.
    pub category: Option<&'a str>,
}

/// A sum over a subset of listings: one partition's share of a scope, or the merged total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Listings summed.
    pub count: i64,
    /// Sum of their prices, exact: 128 bits cannot wrap within a partition (see
    /// [`crate::state`]), and the total is added with checks ([`Summary::merge`]).
    pub sum: i128,
    /// Lowest price, when any.
    pub min: Option<i64>,
    /// Highest price, when any.
    pub max: Option<i64>,
    /// When the sum last changed, epoch milliseconds.
    pub updated_at: i64,
}

/// A total the output record cannot hold: its count or sum does not fit the `long` of
/// `ListingSum`, or adding the partitions' shares would overflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the sum {scope}={value} is out of range ({detail}): it is not emitted, rather than emitted \
     wrong; lower streams.max_price, or check the partials topic for records this program did \
     not write"
)]
pub struct OutOfRange {
    /// The sum's scope.
    pub scope: String,
    /// The sum's value.
    pub value: String,
    /// What does not fit.
    pub detail: String,
}

impl Summary {
    /// Merges partial sums of disjoint subsets into their total; `None` when the count or the
    /// sum would overflow (never with shares this program wrote: see [`crate::state`]).
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Summary>) -> Option<Summary> {
        parts
            .into_iter()
            .try_fold(Summary::default(), |total, part| {
                Some(Summary {
                    count: total.count.checked_add(part.count)?,
                    sum: total.sum.checked_add(part.sum)?,
                    min: option_min(total.min, part.min),
                    max: option_max(total.max, part.max),
                    updated_at: total.updated_at.max(part.updated_at),
                })
            })
    }

    /// The output record for `key`.
    ///
    /// # Errors
    /// [`OutOfRange`] when the sum does not fit the record's `long`.
    pub fn to_record(self, key: &ListingSumKey) -> Result<ListingSum, OutOfRange> {
        let sum = i64::try_from(self.sum).map_err(|_| OutOfRange {
            scope: key.scope.clone(),
            value: key.value.clone(),
            detail: format!("sum {} is over the long's range", self.sum),
        })?;
        Ok(ListingSum {
            scope: key.scope.clone(),
            value: key.value.clone(),
            count: self.count,
            sum,
            min: self.min,
            max: self.max,
            updated_at: self.updated_at,
        })
    }
}

fn option_min(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn option_max(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One scope's aggregate: count, sum, and the lowest and highest price.
///
/// A removal that takes out the lowest or the highest price leaves them `stale`: the next
/// [`Aggregator::settle`] finds them again among the products, in one pass for every stale sum.
/// A multiset of prices would keep them exact at each change, but cost a tree insert per sum
/// and per change and tens of bytes per product; a pass over the products costs one flush a
/// few milliseconds per million products, at most once per flush (and only under `distinct`,
/// where prices leave).
///
/// The sum is 128 bits wide and the arithmetic plain: it cannot wrap (the proof is in
/// [`crate::state`]: at most 2^63 prices of magnitude at most 2^63 are ever in it).
#[derive(Debug, Clone, Default)]
struct Scope {
    count: i64,
    sum: i128,
    extremes: Extremes,
    /// A removal took out the lowest or the highest price: `extremes` are to be found again.
    stale: bool,
    updated_at: i64,
}

impl Scope {
    fn add(&mut self, price: i64, at: i64) {
        self.count += 1;
        self.sum += i128::from(price);
        self.extremes.take(price);
        self.updated_at = at;
    }

    /// Takes out a price [`Scope::add`] put in (only ever called with one).
    fn remove(&mut self, price: i64, at: i64) {
        self.count -= 1;
        self.sum -= i128::from(price);
        if self.count == 0 {
            (self.extremes, self.stale) = (Extremes::default(), false);
        } else if self.extremes.min == Some(price) || self.extremes.max == Some(price) {
            self.stale = true;
        }
        self.updated_at = at;
    }

    /// The summary, with `extremes` as the lowest and highest price (the scope's own unless
    /// stale).
    fn summary(&self, extremes: Extremes) -> Summary {
        Summary {
            count: self.count,
            sum: self.sum,
            min: extremes.min,
            max: extremes.max,
            updated_at: self.updated_at,
        }
    }
}

/// The lowest and highest of some prices.
#[derive(Debug, Clone, Copy, Default)]
struct Extremes {
    min: Option<i64>,
    max: Option<i64>,
}

impl Extremes {
    fn take(&mut self, price: i64) {
        self.min = option_min(self.min, Some(price));
        self.max = option_max(self.max, Some(price));
    }
}

/// Which products a sum is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Members {
    /// Every product (`all`).
    All,
    /// The products of this category number.
    Category(u32),
    /// No product of this state (a sum declared by a changelog of another configuration).
    None,
}

/// The lowest and highest price of `all`'s products and of each category's (by number), found
/// in one pass over the products.
struct Found {
    all: Extremes,
    categories: Vec<Extremes>,
}

impl Found {
    fn of(&self, members: Members) -> Extremes {
        match members {
            Members::All => self.all,
            Members::Category(c) => usize::try_from(c)
                .ok()
                .and_then(|i| self.categories.get(i).copied())
                .unwrap_or_default(),
            Members::None => Extremes::default(),
        }
    }
}

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The change was at or before the state's position: already reflected, skipped.
    Skipped,
    /// The state is as it was (e.g. the same version again); nothing to make durable.
    Unchanged,
    /// The state changed; the change must reach the changelog.
    Changed,
}

/// A product's contribution as the state holds it: its category as a number (see
/// [`Aggregator`]), so that a million products take 24 bytes each, not a string each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    price: i64,
    category: u32,
}

/// One input partition's state: each product's current contribution (under `distinct`), each
/// scope's aggregate, the offset of the last input record reflected, and which sums are
/// declared (their declarations written to the changelog, see [`crate::state`]).
///
/// Category values are numbered, with the keys of their sums made once (`keys`), and products
/// refer to them by number.
#[derive(Debug, Clone)]
pub struct Aggregator {
    scoping: Scoping,
    products: HashMap<i64, Held>,
    keys: SumKeys,
    scopes: BTreeMap<ListingSumKey, Scope>,
    position: Option<i64>,
    declared: BTreeSet<ListingSumKey>,
}

/// The key of `all`, and of each category's sum by category number: made once, so that applying
/// a change allocates no key.
#[derive(Debug, Clone)]
struct SumKeys {
    all: ListingSumKey,
    categories: Vec<ListingSumKey>,
    /// The number of each category value.
    ids: HashMap<String, u32>,
    /// The key of the category scope's sum for a number no category has (none, by
    /// construction); its scope is the one every category key takes.
    unknown: ListingSumKey,
}

impl SumKeys {
    fn new(category_scope: String) -> Self {
        Self {
            all: ListingSumKey {
                scope: ALL.to_owned(),
                value: ALL.to_owned(),
            },
            categories: Vec::new(),
            ids: HashMap::new(),
            unknown: ListingSumKey {
                scope: category_scope,
                value: NO_CATEGORY.to_owned(),
            },
        }
    }

    /// The number standing for category value `category`; the key of its sum is made the first
    /// time.
    fn intern(&mut self, category: &str) -> u32 {
        if let Some(id) = self.ids.get(category) {
            return *id;
        }
        // Past 2^32 values memory would have run out long before.
        let id = u32::try_from(self.categories.len()).unwrap_or(u32::MAX);
        self.categories.push(ListingSumKey {
            scope: self.unknown.scope.clone(),
            value: category.to_owned(),
        });
        self.ids.insert(category.to_owned(), id);
        id
    }

    /// Which products the sum of `key` is over.
    fn members(&self, key: &ListingSumKey) -> Members {
        if *key == self.all {
            Members::All
        } else if key.scope == self.unknown.scope
            && let Some(id) = self.ids.get(&key.value)
        {
            Members::Category(*id)
        } else {
            Members::None
        }
    }

    /// The key of the sum of category number `category` (always one [`SumKeys::intern`]
    /// gave).
    fn category(&self, category: u32) -> &ListingSumKey {
        usize::try_from(category)
            .ok()
            .and_then(|i| self.categories.get(i))
            .unwrap_or(&self.unknown)
    }

    /// The keys of the sums a product of category number `category` is in.
    fn of(&self, category: u32) -> [&ListingSumKey; 2] {
        [&self.all, self.category(category)]
    }

    /// The keys of the sums in `touched`, in order, each once.
    fn touched(&self, touched: &Touched) -> impl Iterator<Item = &ListingSumKey> {
        let mut keys: [Option<&ListingSumKey>; 3] = [
            touched.all.then_some(&self.all),
            touched.categories[0].map(|c| self.category(c)),
            touched.categories[1].map(|c| self.category(c)),
        ];
        keys.sort_unstable();
        let mut last = None;
        keys.into_iter().flatten().filter(move |key| {
            let new = last != Some(*key);
            last = Some(*key);
            new
        })
    }
}

/// The sums a change touched, as [`Aggregator::apply`] tells them: `all` and the sums of the
/// categories (by number) the product left and joined. Read them with
/// [`Aggregator::touched_keys`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Touched {
    all: bool,
    categories: [Option<u32>; 2],
}

impl Touched {
    /// Adds `all` and category `category`'s sum (a change touches at most two categories: the
    /// one its product left and the one it joined).
    fn add(&mut self, category: u32) {
        self.all = true;
        if !self.categories.contains(&Some(category)) {
            let free = usize::from(self.categories[0].is_some());
            self.categories[free] = Some(category);
        }
    }
}

impl Aggregator {
    /// An empty state that has reflected no input.
    pub fn new(scoping: Scoping) -> Self {
        Self {
            keys: SumKeys::new(scoping.category_scope()),
            scoping,
            products: HashMap::new(),
            scopes: BTreeMap::new(),
            position: None,
            declared: BTreeSet::new(),
        }
    }

    /// The offset of the last input record reflected, if any.
    pub fn position(&self) -> Option<i64> {
        self.position
    }

    /// Products in the current set (`distinct`; always 0 under `append`).
    pub fn products(&self) -> usize {
        self.products.len()
    }

    /// Applies `change` unless its offset is already reflected, and returns the sums it touched
    /// (none unless [`Applied::Changed`]).
    pub fn apply(&mut self, change: &Change) -> (Applied, Touched) {
        let mut touched = Touched::default();
        if self.position.is_some_and(|p| change.offset <= p) {
            return (Applied::Skipped, touched);
        }
        self.position = Some(change.offset);
        let at = change.timestamp;
        match self.scoping.semantics {
            StreamsSemantics::Distinct => {
                let next = change.next.as_ref().map(|n| Held {
                    price: n.price,
                    category: self.keys.intern(&n.category),
                });
                // One lookup of the product: the hot path of the stage.
                let old = match (self.products.entry(change.product_id), next) {
                    (Entry::Occupied(held), _) if Some(*held.get()) == next => {
                        return (Applied::Unchanged, touched);
                    }
                    (Entry::Vacant(_), None) => return (Applied::Unchanged, touched),
                    (Entry::Occupied(mut held), Some(next)) => Some(held.insert(next)),
                    (Entry::Occupied(held), None) => Some(held.remove()),
                    (Entry::Vacant(slot), Some(next)) => {
                        slot.insert(next);
                        None
                    }
                };
                if let Some(old) = old {
                    for key in self.keys.of(old.category) {
                        update(&mut self.scopes, key, |scope| scope.remove(old.price, at));
                    }
                    touched.add(old.category);
                }
                if let Some(next) = next {
                    for key in self.keys.of(next.category) {
                        update(&mut self.scopes, key, |scope| scope.add(next.price, at));
                    }
                    touched.add(next.category);
                }
            }
            StreamsSemantics::Append => {
                let Some(next) = &change.next else {
                    return (Applied::Unchanged, touched);
                };
                let category = self.keys.intern(&next.category);
                for key in self.keys.of(category) {
                    update(&mut self.scopes, key, |scope| scope.add(next.price, at));
                }
                touched.add(category);
            }
        }
        (Applied::Changed, touched)
    }

    /// The keys of the sums in `touched`, in order, each once.
    pub fn touched_keys(&self, touched: &Touched) -> impl Iterator<Item = &ListingSumKey> {
        self.keys.touched(touched)
    }

    /// The partition's share of `key`'s sum (zero when it never had any).
    pub fn summary(&self, key: &ListingSumKey) -> Summary {
        let Some(scope) = self.scopes.get(key) else {
            return Summary::default();
        };
        let extremes = if scope.stale {
            self.found().of(self.keys.members(key))
        } else {
            scope.extremes
        };
        scope.summary(extremes)
    }

    /// Finds again the lowest and highest price of every sum a removal left them stale in, in
    /// one pass over the products; [`Aggregator::summary`] is then a lookup. Called before a
    /// flush reads the summaries.
    pub fn settle(&mut self) {
        if !self.scopes.values().any(|scope| scope.stale) {
            return;
        }
        let found = self.found();
        for (key, scope) in self.scopes.iter_mut().filter(|(_, scope)| scope.stale) {
            (scope.extremes, scope.stale) = (found.of(self.keys.members(key)), false);
        }
    }

    /// The lowest and highest price of every sum's products, in one pass over them.
    fn found(&self) -> Found {
        let mut found = Found {
            all: Extremes::default(),
            categories: vec![Extremes::default(); self.keys.categories.len()],
        };
        for held in self.products.values() {
            found.all.take(held.price);
            if let Some(category) = usize::try_from(held.category)
                .ok()
                .and_then(|i| found.categories.get_mut(i))
            {
                category.take(held.price);
            }
        }
        found
    }

    /// Every key this partition has ever summed (a key whose count fell to 0 stays, so that its
    /// zero still reaches the totals; restored from a compacted changelog, through its
    /// declaration).
    pub fn keys_summed(&self) -> impl Iterator<Item = &ListingSumKey> {
        self.scopes.keys()
    }

    /// Takes the declaration of `key` read back from the changelog: this partition holds a
    /// share of that sum, zero until a change adds to it.
    pub fn declare(&mut self, key: ListingSumKey) {
        self.scopes.entry(key.clone()).or_default();
        self.declared.insert(key);
    }

    /// The keys of the sums in `touched` not declared yet, counted as declared from now on:
    /// their declarations must reach the changelog before the change that touched them.
    pub fn declare_touched(&mut self, touched: &Touched) -> Vec<ListingSumKey> {
        declare_new(&mut self.declared, self.keys.touched(touched))
    }

    /// Every key summed but not declared (a changelog written before declarations were), counted
    /// as declared from now on: their declarations must reach the changelog.
    pub fn declare_all(&mut self) -> Vec<ListingSumKey> {
        declare_new(&mut self.declared, self.scopes.keys())
    }
}

/// The keys among `keys` not in `declared`, added to it (each cloned only when new).
fn declare_new<'k>(
    declared: &mut BTreeSet<ListingSumKey>,
    keys: impl Iterator<Item = &'k ListingSumKey>,
) -> Vec<ListingSumKey> {
    let new: Vec<ListingSumKey> = keys
        .filter(|key| !declared.contains(*key))
        .cloned()
        .collect();
    declared.extend(new.iter().cloned());
    new
}

/// Updates the aggregate of `key`, an empty one if it has none (the key cloned only then).
fn update(
    scopes: &mut BTreeMap<ListingSumKey, Scope>,
    key: &ListingSumKey,
    change: impl FnOnce(&mut Scope),
) {
    if let Some(scope) = scopes.get_mut(key) {
        change(scope);
    } else {
        let mut scope = Scope::default();
        change(&mut scope);
        scopes.insert(key.clone(), scope);
    }
}

/// Generators of input and the plain recomputation the sums are checked against, shared with
/// [`crate::partition`]'s tests.
#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const MAX: i64 = 1_000_000;

    /// One input record: a version of a product (price, category) or its tombstone.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Version {
            id: i64,
            price: Option<i64>,
            category: Option<&'static str>,
        },
        Tombstone {
            id: i64,
        },
    }

    impl Op {
        pub(crate) fn id(&self) -> i64 {
            match self {
                Op::Version { id, .. } | Op::Tombstone { id } => *id,
            }
        }
    }

    pub(crate) fn op() -> impl Strategy<Value = Op> {
        let price = prop_oneof![
            3 => (0i64..=2 * MAX).prop_map(Some),
            1 => Just(Some(MAX)),
            1 => Just(Some(MAX + 1)),
            1 => Just(None),
            1 => (i64::MIN..0).prop_map(Some),
        ];
        let category =
            proptest::option::of(prop_oneof![Just("디지털기기"), Just("가구"), Just("의류")]);
        prop_oneof![
            6 => (0i64..25, price, category).prop_map(|(id, price, category)| Op::Version { id, price, category }),
            1 => (0i64..25).prop_map(|id| Op::Tombstone { id }),
        ]
    }

    /// Versions at the extremes of a long (and tombstones), over few products so that they
    /// pile up in the same sums.
    pub(crate) fn extreme_op() -> impl Strategy<Value = Op> {
        let price = prop_oneof![
            3 => Just(Some(i64::MAX)),
            1 => Just(Some(i64::MAX - 1)),
            2 => Just(Some(i64::MIN)),
            1 => Just(Some(-1)),
            1 => Just(Some(0)),
            1 => Just(None),
            2 => any::<i64>().prop_map(Some),
        ];
        prop_oneof![
            8 => (0i64..6, price, proptest::option::of(Just("가구"))).prop_map(|(id, price, category)| Op::Version { id, price, category }),
            1 => (0i64..6).prop_map(|id| Op::Tombstone { id }),
        ]
    }

    pub(crate) fn listing(id: i64, price: Option<i64>, category: Option<&str>) -> Listing {
        Listing {
            product_id: id,
            price,
            condition: "used".into(),
            sale_status: "on_sale".into(),
            category_level1: category.map(str::to_owned),
            ..Listing::default()
        }
    }

    pub(crate) fn scoping(semantics: StreamsSemantics) -> Scoping {
        Scoping {
            semantics,
            category_level: 1,
        }
    }

    /// The plain recomputation: group the listings that count by scope.
    pub(crate) fn recompute(
        semantics: StreamsSemantics,
        ops: &[Op],
    ) -> BTreeMap<ListingSumKey, (i64, i128, Option<i64>, Option<i64>)> {
        recompute_at(semantics, ops, MAX)
    }

    /// As [`recompute`], with the limit `max`: in 128 bits, so that it cannot wrap either.
    pub(crate) fn recompute_at(
        semantics: StreamsSemantics,
        ops: &[Op],
        max: i64,
    ) -> BTreeMap<ListingSumKey, (i64, i128, Option<i64>, Option<i64>)> {
        let mut counted: Vec<(i64, String)> = Vec::new();
        match semantics {
            StreamsSemantics::Append => {
                for op in ops {
                    if let Op::Version {
                        price: Some(p),
                        category,
                        ..
                    } = op
                        && (0..=max).contains(p)
                    {
                        counted.push((*p, category.unwrap_or(NO_CATEGORY).to_owned()));
                    }
                }
            }
            StreamsSemantics::Distinct => {
                let mut latest: BTreeMap<i64, &Op> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Tombstone { id } => {
                            latest.remove(id);
                        }
                        Op::Version { id, .. } => {
                            latest.insert(*id, op);
                        }
                    }
                }
                for op in latest.values() {
                    if let Op::Version {
                        price: Some(p),
                        category,
                        ..
                    } = op
                        && (0..=max).contains(p)
                    {
                        counted.push((*p, category.unwrap_or(NO_CATEGORY).to_owned()));
                    }
                }
            }
        }
        let mut groups: BTreeMap<ListingSumKey, Vec<i64>> = BTreeMap::new();
        for (price, category) in counted {
            groups
                .entry(ListingSumKey {
                    scope: ALL.into(),
                    value: ALL.into(),
                })
                .or_default()
                .push(price);
            groups
                .entry(ListingSumKey {
                    scope: "category_level1".into(),
                    value: category,
                })
                .or_default()
                .push(price);
        }
        groups
            .into_iter()
            .map(|(key, prices)| {
                let total: i128 = prices.iter().map(|p| i128::from(*p)).sum();
                let summary = (
                    prices.len() as i64,
                    total,
                    prices.iter().min().copied(),
                    prices.iter().max().copied(),
                );
                (key, summary)
            })
            .collect()
    }

    pub(crate) fn semantics() -> impl Strategy<Value = StreamsSemantics> {
        prop_oneof![
            Just(StreamsSemantics::Distinct),
            Just(StreamsSemantics::Append)
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::*;
    use super::*;
    use crate::changelog::{Entry, change_key, declared_key};
    use proptest::prelude::*;

    const PARTITIONS: i64 = 3;

    /// The changes of `ops`, each with its partition (product id mod 3) and offset in it.
    fn changes(scoping: &Scoping, ops: &[Op]) -> Vec<(usize, Change)> {
        changes_at(scoping, ops, MAX)
    }

    /// As [`changes`], under the limit `max`.
    fn changes_at(scoping: &Scoping, ops: &[Op], max: i64) -> Vec<(usize, Change)> {
        let mut next_offset = [0i64; PARTITIONS as usize];
        ops.iter()
            .enumerate()
            .map(|(i, op)| {
                let partition = (op.id() % PARTITIONS) as usize;
                let offset = next_offset[partition];
                next_offset[partition] += 1;
                let record = match op {
                    Op::Version {
                        id,
                        price,
                        category,
                    } => Some(listing(*id, *price, *category)),
                    Op::Tombstone { .. } => None,
                };
                let (_, change) = scoping.change(offset, i as i64, op.id(), record.as_ref(), max);
                (partition, change)
            })
            .collect()
    }

    /// Runs the changes through one aggregator per partition and merges their sums, as the
    /// worker and the merge stage do.
    fn totals(
        parts: &[Aggregator],
    ) -> BTreeMap<ListingSumKey, (i64, i128, Option<i64>, Option<i64>)> {
        let mut keys: Vec<&ListingSumKey> =
            parts.iter().flat_map(Aggregator::keys_summed).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let summaries: Vec<Summary> = parts.iter().map(|p| p.summary(key)).collect();
                let total = Summary::merge(&summaries).expect("no overflow");
                (key.clone(), (total.count, total.sum, total.min, total.max))
            })
            .filter(|(_, (count, ..))| *count > 0)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn sums_equal_a_recomputation(
            semantics in semantics(),
            ops in proptest::collection::vec(op(), 0..120),
            settle_every in 1usize..8,
        ) {
            let scoping = scoping(semantics);
            let mut parts = vec![Aggregator::new(scoping.clone()); PARTITIONS as usize];
            for (i, (partition, change)) in changes(&scoping, &ops).into_iter().enumerate() {
                parts[partition].apply(&change);
                if i % settle_every == 0 {
                    parts[partition].settle();
                }
            }
            let expected = recompute(semantics, &ops);
            // Some extremes stale, found by `summary` itself.
            prop_assert_eq!(&totals(&parts), &expected);
            for part in &mut parts {
                part.settle();
            }
            prop_assert_eq!(totals(&parts), expected);
        }

        #[test]
        fn no_input_sequence_makes_a_sum_wrap_or_panic(
            semantics in semantics(),
            ops in proptest::collection::vec(extreme_op(), 0..200),
            max in prop_oneof![Just(i64::MAX), Just(MAX), Just(0), any::<i64>()],
        ) {
            let scoping = scoping(semantics);
            let mut parts = vec![Aggregator::new(scoping.clone()); PARTITIONS as usize];
            for (partition, change) in changes_at(&scoping, &ops, max) {
                parts[partition].apply(&change);
            }
            let totals = totals(&parts);
            prop_assert_eq!(&totals, &recompute_at(semantics, &ops, max));
            // A total past the output's `long` is refused, never wrapped into it.
            for (key, (count, sum, min, max)) in totals {
                let summary = Summary { count, sum, min, max, updated_at: 0 };
                match summary.to_record(&key) {
                    Ok(record) => prop_assert_eq!(i128::from(record.sum), sum),
                    Err(_) => prop_assert!(i64::try_from(sum).is_err()),
                }
            }
        }

        #[test]
        fn a_crash_and_a_replay_of_the_changelog_change_nothing(
            semantics in semantics(),
            ops in proptest::collection::vec(op(), 0..120),
            crash_at in 0usize..120,
            durable_share in 0usize..=100,
        ) {
            // The uninterrupted run.
            let scoping = scoping(semantics);
            let all = changes(&scoping, &ops);
            let mut parts = vec![Aggregator::new(scoping.clone()); PARTITIONS as usize];
            for (partition, change) in &all {
                parts[*partition].apply(change);
            }

            // A run that crashes after `crash_at` records with only a prefix of its changelog
            // durable, restores from that prefix, and resumes after the restored position.
            let crash_at = crash_at.min(all.len());
            let mut changelog: Vec<Vec<Change>> = vec![Vec::new(); PARTITIONS as usize];
            let mut before = vec![Aggregator::new(scoping.clone()); PARTITIONS as usize];
            for (partition, change) in &all[..crash_at] {
                if before[*partition].apply(change).0 == Applied::Changed {
                    changelog[*partition].push(change.clone());
                }
            }
            let mut restored = vec![Aggregator::new(scoping.clone()); PARTITIONS as usize];
            for (partition, log) in changelog.iter().enumerate() {
                let durable = log.len() * durable_share / 100;
                // A duplicate of the durable tail, as a zombie writer or a retry would leave.
                let replay = log[..durable].iter().chain(log[..durable].last());
                for change in replay {
                    restored[partition].apply(change);
                }
            }
            for (partition, change) in &all {
                restored[*partition].apply(change);
            }
            prop_assert_eq!(totals(&restored), totals(&parts));
            prop_assert_eq!(totals(&restored), recompute(semantics, &ops));
        }

        #[test]
        fn a_restore_from_a_compacted_changelog_holds_every_sum_ever_held(
            semantics in semantics(),
            ops in proptest::collection::vec(op(), 0..120),
            durable_share in 0usize..=100,
        ) {
            // The changelog as the worker writes it: a sum's declaration before the first change
            // that touches it, then the change.
            let scoping = scoping(semantics);
            let mut live = vec![Aggregator::new(scoping.clone()); PARTITIONS as usize];
            let mut changelog: Vec<Vec<(Vec<u8>, Entry)>> = vec![Vec::new(); PARTITIONS as usize];
            for (partition, change) in changes(&scoping, &ops) {
                let (applied, touched) = live[partition].apply(&change);
                if applied == Applied::Changed {
                    for key in live[partition].declare_touched(&touched) {
                        changelog[partition].push((declared_key(&key), Entry::Declared(key)));
                    }
                    let key = change_key(semantics, &change).to_vec();
                    changelog[partition].push((key, Entry::Change(change)));
                }
            }
            for log in &changelog {
                // What a crash left durable, replayed whole and compacted (the latest record of
                // each key, in their order): the two restores must hold the same sums, zeros
                // included, at the same position.
                let durable = &log[..log.len() * durable_share / 100];
                let latest: HashMap<&[u8], usize> = durable
                    .iter()
                    .enumerate()
                    .map(|(i, (key, _))| (key.as_slice(), i))
                    .collect();
                let replay = |compacted: bool| {
                    let mut state = Aggregator::new(scoping.clone());
                    for (i, (key, entry)) in durable.iter().enumerate() {
                        if compacted && latest[key.as_slice()] != i {
                            continue;
                        }
                        match entry {
                            Entry::Declared(key) => state.declare(key.clone()),
                            Entry::Change(change) => {
                                state.apply(change);
                            }
                        }
                    }
                    state
                };
                let (whole, mut compacted) = (replay(false), replay(true));
                let figures = |state: &Aggregator| -> Vec<_> {
                    state
                        .keys_summed()
                        .map(|key| {
                            let s = state.summary(key);
                            (key.clone(), s.count, s.sum, s.min, s.max)
                        })
                        .collect()
                };
                prop_assert_eq!(figures(&compacted), figures(&whole));
                prop_assert_eq!(compacted.position(), whole.position());
                prop_assert!(compacted.declare_all().is_empty(), "every sum held is declared");
            }
        }
    }

    #[test]
    fn a_move_across_categories_moves_the_contribution() {
        let scoping = scoping(StreamsSemantics::Distinct);
        let mut state = Aggregator::new(scoping.clone());
        let a = listing(7, Some(500), Some("가구"));
        let b = listing(7, Some(700), Some("의류"));
        let (_, first) = state.apply(&scoping.change(0, 10, 7, Some(&a), MAX).1);
        let (_, moved) = state.apply(&scoping.change(1, 20, 7, Some(&b), MAX).1);
        let (_, again) = state.apply(&scoping.change(2, 30, 7, Some(&b), MAX).1);
        let touched = |t| {
            state
                .touched_keys(&t)
                .map(|k| k.value.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(touched(first), ["all", "가구"]);
        assert_eq!(
            touched(moved),
            ["all", "가구", "의류"],
            "in order, each once"
        );
        assert!(
            touched(again).is_empty(),
            "the same version touches nothing"
        );
        let furniture = ListingSumKey {
            scope: "category_level1".into(),
            value: "가구".into(),
        };
        let clothes = ListingSumKey {
            scope: "category_level1".into(),
            value: "의류".into(),
        };
        let all = ListingSumKey {
            scope: ALL.into(),
            value: ALL.into(),
        };
        assert_eq!(
            state.summary(&furniture),
            Summary {
                updated_at: 20,
                ..Summary::default()
            }
        );
        assert_eq!(
            state.summary(&clothes),
            Summary {
                count: 1,
                sum: 700,
                min: Some(700),
                max: Some(700),
                updated_at: 20
            }
        );
        assert_eq!(state.summary(&all).count, 1);
        assert_eq!(state.summary(&all).sum, 700);
    }

    #[test]
    fn min_and_max_survive_the_removal_of_the_extreme() {
        let scoping = scoping(StreamsSemantics::Distinct);
        let mut state = Aggregator::new(scoping.clone());
        for (offset, (id, price)) in [(1, 100), (2, 300), (3, 300), (4, 900)]
            .into_iter()
            .enumerate()
        {
            state.apply(
                &scoping
                    .change(
                        offset as i64,
                        0,
                        id,
                        Some(&listing(id, Some(price), None)),
                        MAX,
                    )
                    .1,
            );
        }
        state.apply(&scoping.change(4, 0, 4, None, MAX).1);
        state.apply(&scoping.change(5, 0, 1, None, MAX).1);
        let all = ListingSumKey {
            scope: ALL.into(),
            value: ALL.into(),
        };
        assert_eq!(state.summary(&all).min, Some(300));
        assert_eq!(state.summary(&all).max, Some(300));
        assert_eq!(state.summary(&all).count, 2);
        state.settle();
        assert!(state.scopes.values().all(|scope| !scope.stale));
        assert_eq!(
            (state.summary(&all).min, state.summary(&all).max),
            (Some(300), Some(300))
        );
        // The last one out leaves no extremes behind.
        state.apply(&scoping.change(6, 0, 2, None, MAX).1);
        state.apply(&scoping.change(7, 0, 3, None, MAX).1);
        assert_eq!(
            state.summary(&all),
            Summary {
                updated_at: 0,
                ..Summary::default()
            }
        );
    }

    #[test]
    fn input_already_reflected_is_skipped() {
        let scoping = scoping(StreamsSemantics::Append);
        let mut state = Aggregator::new(scoping.clone());
        let change = scoping
            .change(5, 0, 1, Some(&listing(1, Some(10), None)), MAX)
            .1;
        assert_eq!(state.apply(&change).0, Applied::Changed);
        assert_eq!(state.apply(&change).0, Applied::Skipped);
        assert_eq!(state.position(), Some(5));
    }
}
