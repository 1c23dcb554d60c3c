//! The price filter: which listings count, and why the others are dropped.

/// Why a listing was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Priced above `streams.max_price`.
    OverMaxPrice,
    /// No price on the page: never summed as 0.
    NoPrice,
    /// The record did not decode as a listing.
    Undecodable,
}

impl DropReason {
    /// The metrics label of the reason.
    pub fn label(self) -> &'static str {
        match self {
            Self::OverMaxPrice => "over_max_price",
            Self::NoPrice => "no_price",
            Self::Undecodable => "undecodable",
        }
    }
}

/// What the filter decided about one listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The listing counts, at this price.
    Accept(i64),
    /// The listing is dropped.
    Drop(DropReason),
}

/// Accepts a listing priced at most `max_price` KRW (exactly `max_price` passes); drops one
/// priced above it or with no price.
pub fn verdict(price: Option<i64>, max_price: i64) -> Verdict {
    match price {
        None => Verdict::Drop(DropReason::NoPrice),
        Some(price) if price > max_price => Verdict::Drop(DropReason::OverMaxPrice),
        Some(price) => Verdict::Accept(price),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exactly_the_limit_passes_and_one_won_more_is_dropped() {
        assert_eq!(
            verdict(Some(1_000_000), 1_000_000),
            Verdict::Accept(1_000_000)
        );
        assert_eq!(
            verdict(Some(1_000_001), 1_000_000),
            Verdict::Drop(DropReason::OverMaxPrice)
        );
        assert_eq!(verdict(Some(0), 1_000_000), Verdict::Accept(0));
    }

    #[test]
    fn a_listing_without_a_price_is_dropped_not_summed_as_zero() {
        assert_eq!(verdict(None, 1_000_000), Verdict::Drop(DropReason::NoPrice));
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_prices_up_to_the_limit(price in any::<i64>(), max in any::<i64>()) {
            let accepted = matches!(verdict(Some(price), max), Verdict::Accept(p) if p == price);
            prop_assert_eq!(accepted, price <= max);
        }
    }
}
