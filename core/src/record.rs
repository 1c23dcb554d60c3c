//! The records marketflow moves, as Rust types that serialise to the Avro schemas in
//! `core/schemas` (field for field; timestamps are epoch milliseconds).

use serde::{Deserialize, Serialize};

use crate::schema::{self, SchemaFile};

/// A record type of the contract, the value of a topic's records, with its key type and the
/// schemas both are registered with under the topic's `-key` and `-value` subjects (see
/// [`crate::Codec::encode_record`]).
pub trait Keyed: Serialize {
    /// The key of the topic's records.
    type Key: Serialize;
    /// The key's schema.
    const KEY_SCHEMA: SchemaFile;
    /// The value's schema.
    const VALUE_SCHEMA: SchemaFile;
}

impl Keyed for Listing {
    type Key = ListingKey;
    const KEY_SCHEMA: SchemaFile = schema::LISTING_KEY;
    const VALUE_SCHEMA: SchemaFile = schema::LISTING;
}

impl Keyed for ListingSum {
    type Key = ListingSumKey;
    const KEY_SCHEMA: SchemaFile = schema::LISTING_SUM_KEY;
    const VALUE_SCHEMA: SchemaFile = schema::LISTING_SUM;
}

impl Keyed for ScraperEvent {
    type Key = ScraperEventKey;
    const KEY_SCHEMA: SchemaFile = schema::SCRAPER_EVENT_KEY;
    const VALUE_SCHEMA: SchemaFile = schema::SCRAPER_EVENT;
}

/// Key of a listing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ListingKey {
    /// The marketplace's product id.
    pub product_id: i64,
}

/// One scrape of one product page. See `core/schemas/listing.avsc` for each field's meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The marketplace's product id.
    pub product_id: i64,
    /// Title as written by the seller.
    pub title: String,
    /// Asking price in KRW; `None` when the page states none.
    pub price: Option<i64>,
    /// `new`, `used` or `unknown`.
    pub condition: String,
    /// `on_sale`, `reserved`, `sold` or `unknown`.
    pub sale_status: String,
    /// Category chain joined with ` > `.
    pub category_path: Option<String>,
    /// Top-level category.
    pub category_level1: Option<String>,
    /// Second-level category.
    pub category_level2: Option<String>,
    /// Third-level category.
    pub category_level3: Option<String>,
    /// Fourth-level category.
    pub category_level4: Option<String>,
    /// Description text.
    pub description: String,
    /// Pseudonymised seller (hex HMAC-SHA256), never the raw name.
    pub seller: Option<String>,
    /// Trade location.
    pub location: Option<String>,
    /// Views.
    pub view_count: Option<i64>,
    /// Wishes.
    pub wish_count: Option<i64>,
    /// Chats.
    pub chat_count: Option<i64>,
    /// Image URLs in page order.
    pub image_urls: Vec<String>,
    /// When posted, epoch milliseconds.
    pub posted_at: Option<i64>,
    /// When scraped, epoch milliseconds.
    pub scraped_at: i64,
    /// The page the record was read from.
    pub source_url: String,
}

impl Listing {
    /// The record's key.
    pub fn key(&self) -> ListingKey {
        ListingKey {
            product_id: self.product_id,
        }
    }
}

/// Key of a running sum.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListingSumKey {
    /// `all`, or the dimension summed over (e.g. `category_level1`).
    pub scope: String,
    /// `all`, or the dimension's value.
    pub value: String,
}

/// A running sum over the accepted listings of one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingSum {
    /// As in the key.
    pub scope: String,
    /// As in the key.
    pub value: String,
    /// Listings summed.
    pub count: i64,
    /// Sum of their prices in KRW.
    pub sum: i64,
    /// Lowest price; `None` when `count` is 0.
    pub min: Option<i64>,
    /// Highest price; `None` when `count` is 0.
    pub max: Option<i64>,
    /// When this sum last changed, epoch milliseconds.
    pub updated_at: i64,
}

/// Key of a scraper lifecycle event: the crawl it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScraperEventKey {
    /// The crawl's id.
    pub crawl_id: String,
}

/// A fact in the life of one scraper crawl. See `core/schemas/scraper-event.avsc` for each
/// field's meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScraperEvent {
    /// The crawl.
    pub crawl_id: String,
    /// `started`, `finished`, `failed` or `id_failed`.
    pub kind: String,
    /// When, epoch milliseconds.
    pub at: i64,
    /// `once` or `continuous`.
    pub mode: String,
    /// The marketplace crawled.
    pub base_url: String,
    /// First id of the range.
    pub from_id: Option<i64>,
    /// Last id of the range.
    pub to_id: Option<i64>,
    /// Every id below this one is done.
    pub checkpoint_id: Option<i64>,
    /// The id given up (`id_failed`).
    pub product_id: Option<i64>,
    /// What went wrong.
    pub cause: Option<String>,
    /// Listings produced.
    pub listings: Option<i64>,
    /// Deleted products.
    pub deleted: Option<i64>,
    /// Anti-bot pages.
    pub blocked: Option<i64>,
    /// Pages that did not parse into a listing.
    pub malformed: Option<i64>,
    /// Ids given up after their retries.
    pub failed: Option<i64>,
    /// Ids already produced before a restart.
    pub skipped: Option<i64>,
}

impl ScraperEvent {
    /// The event's key.
    pub fn key(&self) -> ScraperEventKey {
        ScraperEventKey {
            crawl_id: self.crawl_id.clone(),
        }
    }
}

/// Proptest strategies for the records, for the tests of every crate.
#[cfg(any(test, feature = "testkit"))]
pub mod arbitrary {
    use super::Listing;
    use proptest::prelude::*;

    /// Text as marketplaces have it: Korean, emoji, quotes, backslashes, SQL-looking strings.
    pub fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[가-힣 ]{0,40}",
            "[a-zA-Z0-9 '\"\\\\;%_-]{0,40}",
            Just("'; DROP TABLE listings; --".to_owned()),
            Just("아이폰 15 Pro 🍎📱 \"급처\" \\ 네고 X".to_owned()),
            ".{0,60}",
        ]
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    /// `n` arbitrary listings with distinct product ids, the same for the same `seed`.
    pub fn distinct_listings(n: usize, seed: u64) -> Vec<Listing> {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let mut runner = TestRunner::new_with_rng(Config::default(), rng);
        let mut by_id = std::collections::BTreeMap::new();
        while by_id.len() < n {
            // Generating a value from a strategy without shrinking cannot fail.
            if let Ok(tree) = listing().new_tree(&mut runner) {
                let listing = tree.current();
                by_id.insert(listing.product_id, listing);
            }
        }
        by_id.into_values().collect()
    }

    /// An arbitrary listing whose every field is in the schema's domain.
    pub fn listing() -> impl Strategy<Value = Listing> {
        (
            (
                any::<i64>(),
                text(),
                proptest::option::of(0i64..=100_000_000),
            ),
            (
                prop_oneof![Just("new"), Just("used"), Just("unknown")],
                prop_oneof![
                    Just("on_sale"),
                    Just("reserved"),
                    Just("sold"),
                    Just("unknown")
                ],
            ),
            (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
            (text(), opt_text(), opt_text()),
            proptest::array::uniform3(proptest::option::of(0i64..1_000_000)),
            proptest::collection::vec(text(), 0..4),
            (
                proptest::option::of(0i64..4_000_000_000_000),
                0i64..4_000_000_000_000,
                text(),
            ),
        )
            .prop_map(
                |(
                    (product_id, title, price),
                    (condition, sale_status),
                    (category_path, l1, l2, l3, l4),
                    (description, seller, location),
                    [view_count, wish_count, chat_count],
                    image_urls,
                    (posted_at, scraped_at, source_url),
                )| Listing {
                    product_id,
                    title,
                    price,
                    condition: condition.to_owned(),
                    sale_status: sale_status.to_owned(),
                    category_path,
                    category_level1: l1,
                    category_level2: l2,
                    category_level3: l3,
                    category_level4: l4,
                    description,
                    seller,
                    location,
                    view_count,
                    wish_count,
                    chat_count,
                    image_urls,
                    posted_at,
                    scraped_at,
                    source_url,
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::schema_id;
    use crate::schema;
    use proptest::prelude::*;

    /// Frames `item` as the codec does (magic byte, schema id, Avro datum of the shipped schema).
    fn frame<T: Serialize>(id: u32, file: schema::SchemaFile, item: &T) -> Vec<u8> {
        let schema = file.parse().unwrap();
        let value = apache_avro::to_value(item)
            .unwrap()
            .resolve(&schema)
            .unwrap();
        let mut payload = vec![0];
        payload.extend_from_slice(&id.to_be_bytes());
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap();
        payload.extend(writer.write_value_to_vec(value).unwrap());
        payload
    }

    fn unframe<T: serde::de::DeserializeOwned>(file: schema::SchemaFile, payload: &[u8]) -> T {
        let schema = file.parse().unwrap();
        let mut body = &payload[crate::codec::HEADER_LEN..];
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap();
        let value = reader.read_value(&mut body).unwrap();
        assert!(body.is_empty(), "bytes left after the datum");
        apache_avro::from_value(&value).unwrap()
    }

    proptest! {
        #[test]
        fn listings_round_trip_through_the_shipped_schema(listing in arbitrary::listing(), id in any::<u32>()) {
            let payload = frame(id, schema::LISTING, &listing);
            prop_assert_eq!(schema_id(&payload).ok(), Some(id));
            prop_assert_eq!(unframe::<Listing>(schema::LISTING, &payload), listing.clone());
            let key = frame(id, schema::LISTING_KEY, &listing.key());
            prop_assert_eq!(unframe::<ListingKey>(schema::LISTING_KEY, &key), listing.key());
        }

        #[test]
        fn sums_round_trip_through_the_shipped_schema(
            count in 0i64..1_000_000, sum in any::<i64>(), min in proptest::option::of(any::<i64>()),
            max in proptest::option::of(any::<i64>()), value in arbitrary::text(), updated_at in any::<i64>(),
        ) {
            let record = ListingSum { scope: "category_level1".into(), value: value.clone(), count, sum, min, max, updated_at };
            prop_assert_eq!(unframe::<ListingSum>(schema::LISTING_SUM, &frame(1, schema::LISTING_SUM, &record)), record);
            let key = ListingSumKey { scope: "category_level1".into(), value };
            prop_assert_eq!(unframe::<ListingSumKey>(schema::LISTING_SUM_KEY, &frame(2, schema::LISTING_SUM_KEY, &key)), key);
        }
    }
}
