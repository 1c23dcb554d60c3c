//! The price filter: which listings count, and why the others are dropped.

/// Why an input record was dropped: the label of `streams_records_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not Confluent wire format, an unknown schema id, or Avro that does not decode.
    Undecodable,
    /// The schema id is not a version of the topic's value subject (`<topic>-value`).
    ForeignSchema,
    /// The decoded record is over the decoded-size cap.
    TooLarge,
    /// Priced below 0: not a price.
    InvalidPrice,
    /// Priced above `streams.max_price`.
    OverMaxPrice,
    /// No price on the page: never summed as 0.
    NoPrice,
    /// Accepted, but it cannot be sent onward (over the producer's or the affordable topic's
    /// size limit): neither forwarded nor summed.
    Unsendable,
}

impl DropReason {
    /// The metrics label of the reason.
    pub fn label(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::ForeignSchema => "foreign_schema",
            Self::TooLarge => "too_large",
            Self::InvalidPrice => "invalid_price",
            Self::OverMaxPrice => "over_max_price",
            Self::NoPrice => "no_price",
            Self::Unsendable => "unsendable",
        }
    }
}

/// What the filter decided about one listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The listing counts, at this price (from 0 to the limit).
    Accept(i64),
    /// The listing is dropped.
    Drop(DropReason),
}

/// Accepts a listing priced from 0 to `max_price` KRW (exactly `max_price` passes); drops one
/// priced below 0 (`invalid_price`), above the limit, or with no price.
pub fn verdict(price: Option<i64>, max_price: i64) -> Verdict {
    match price {
        None => Verdict::Drop(DropReason::NoPrice),
        Some(price) if price < 0 => Verdict::Drop(DropReason::InvalidPrice),
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

    #[test]
    fn a_price_below_zero_is_invalid_down_to_the_lowest_long() {
        for price in [-1, -1_000_000, i64::MIN] {
            assert_eq!(
                verdict(Some(price), 1_000_000),
                Verdict::Drop(DropReason::InvalidPrice),
                "{price}"
            );
            assert_eq!(
                verdict(Some(price), i64::MAX),
                Verdict::Drop(DropReason::InvalidPrice)
            );
        }
        assert_eq!(DropReason::InvalidPrice.label(), "invalid_price");
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_prices_from_zero_to_the_limit(price in any::<i64>(), max in any::<i64>()) {
            let accepted = matches!(verdict(Some(price), max), Verdict::Accept(p) if p == price);
            prop_assert_eq!(accepted, (0..=max).contains(&price));
        }
    }
}
