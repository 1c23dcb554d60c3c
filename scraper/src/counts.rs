//! A crawl's ids by outcome: the figures its `finished` or `stopped` event and its summary
//! carry, and the counters its page tasks bump.

use std::sync::atomic::{AtomicI64, Ordering};

/// Ids by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Produced as listings.
    pub listings: i64,
    /// Deleted products.
    pub deleted: i64,
    /// Anti-bot pages.
    pub blocked: i64,
    /// Pages that did not parse into the listing asked for.
    pub malformed: i64,
    /// Given up after their retries (and recorded).
    pub failed: i64,
    /// Found already produced by this crawl before a restart.
    pub skipped: i64,
}

impl Counts {
    /// Ids visited or skipped.
    pub fn total(&self) -> i64 {
        self.listings + self.deleted + self.blocked + self.malformed + self.failed + self.skipped
    }
}

/// The counters the page tasks bump.
#[derive(Debug, Default)]
pub(crate) struct LiveCounts([AtomicI64; 6]);

impl LiveCounts {
    pub(crate) const LISTINGS: usize = 0;
    pub(crate) const DELETED: usize = 1;
    pub(crate) const BLOCKED: usize = 2;
    pub(crate) const MALFORMED: usize = 3;
    pub(crate) const FAILED: usize = 4;
    pub(crate) const SKIPPED: usize = 5;

    pub(crate) fn add(&self, which: usize, n: i64) {
        self.0[which].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counts {
        let get = |i: usize| self.0[i].load(Ordering::Relaxed);
        Counts {
            listings: get(Self::LISTINGS),
            deleted: get(Self::DELETED),
            blocked: get(Self::BLOCKED),
            malformed: get(Self::MALFORMED),
            failed: get(Self::FAILED),
            skipped: get(Self::SKIPPED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counter_lands_in_its_own_figure() {
        let live = LiveCounts::default();
        live.add(LiveCounts::LISTINGS, 5);
        live.add(LiveCounts::DELETED, 1);
        live.add(LiveCounts::BLOCKED, 2);
        live.add(LiveCounts::MALFORMED, 3);
        live.add(LiveCounts::FAILED, 4);
        live.add(LiveCounts::SKIPPED, 6);
        live.add(LiveCounts::LISTINGS, 1);
        let counts = live.snapshot();
        assert_eq!(
            counts,
            Counts {
                listings: 6,
                deleted: 1,
                blocked: 2,
                malformed: 3,
                failed: 4,
                skipped: 6,
            }
        );
        assert_eq!(counts.total(), 22);
    }
}
