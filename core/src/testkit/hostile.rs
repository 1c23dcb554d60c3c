//! Hostile records for the listings topic, shared by the sink's and the streams' hostile-input
//! suites: garbage, unknown and foreign schema ids, nested-null bombs, bodies that do not decode,
//! extreme prices, a valid listing of about 1 MiB, 4-byte UTF-8 and SQL metacharacters in every
//! string field, tombstones for known and unknown keys — interleaved with good listings. Each
//! record says what it is; what a program must make of it the suites compute themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::codec::Codec;
use crate::config::{Config, KafkaConfig};
use crate::kafka::{consumer_config, producer_config};
use crate::record::{Listing, ListingKey};
use crate::schema::{self, Part};

/// The brokers' `message.max.bytes` (Kafka 4.1's default, which the local cluster keeps): the
/// largest record batch a topic accepts.
pub const BROKER_MESSAGE_MAX_BYTES: usize = 1_048_588;

/// The size the ~1 MiB listing's value is made to: what is left of the broker's limit after the
/// batch and record framing, the key and the headers, with a little room to spare.
pub const HUGE_VALUE_BYTES: usize = BROKER_MESSAGE_MAX_BYTES - 400;

/// The header every hostile record carries, as the scraper's records carry it: a dead letter
/// must keep it.
pub const CRAWL_HEADER: &str = "marketflow-crawl";

/// The header holding a hostile record's index in [`Hostile::records`].
pub const INDEX_HEADER: &str = "hostile-index";

/// The nested-null bomb: arrays of arrays of nulls. A null takes no input, so a payload of
/// ~100 bytes can name billions of them.
pub const BOMB_SCHEMA: &str = r#"{"type":"array","items":{"type":"array","items":"null"}}"#;

/// Emoji and supplementary CJK: 4 bytes each in UTF-8 (utf8mb4, not MySQL's 3-byte utf8).
pub const FOUR_BYTE: &str = "🍎📱🧨 𠀀𪚥𩸽";

/// SQL metacharacters: quotes, backslash, statement and comment syntax, NUL, backticks.
pub const METACHARACTERS: &str = "' \" \\ ; -- /* */ \0 ` '); DROP TABLE listings; -- \\";

/// Category names as hostile as the rest (streams groups its sums by them).
pub const CATEGORIES: [&str; 6] = [
    "디지털기기 🍎",
    "𠀀 가구'; --",
    "의류 \\",
    "도서 `x` /*",
    "스포츠\0레저",
    "\"유아동\" 𪚥",
];

/// What a hostile record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A listing of the contract's schema (any price, extreme ones included, hostile strings).
    Listing,
    /// A valid listing of about 1 MiB (its description far over a `TEXT` column's 65,535 bytes).
    Huge,
    /// Bytes that are not the Confluent wire format (empty, short, JSON, random).
    Garbage,
    /// The magic byte and a schema id the registry does not know.
    UnknownSchemaId,
    /// The listing schema's id and a body that does not decode (cut short, or a string length
    /// of 2^40).
    BadBody,
    /// A listing-shaped record whose schema is registered under another subject.
    ForeignListing,
    /// A `ListingKey` as the value: the schema of the topic's key subject.
    ForeignKeySchema,
    /// The nested-null bomb, its schema registered under another subject.
    ForeignBomb,
    /// The nested-null bomb, its schema registered under the topic's own value subject (whose
    /// compatibility is set to `NONE` for it): only a cap on decoded size stops it.
    OwnSubjectBomb,
    /// A tombstone for a product a listing was written for.
    TombstoneKnown,
    /// A tombstone for a product never written.
    TombstoneUnknown,
    /// A tombstone whose key is garbage.
    TombstoneGarbageKey,
}

impl Kind {
    /// Whether the record is a tombstone (a null value).
    pub fn is_tombstone(self) -> bool {
        matches!(
            self,
            Self::TombstoneKnown | Self::TombstoneUnknown | Self::TombstoneGarbageKey
        )
    }
}

/// One hostile record.
#[derive(Debug, Clone)]
pub struct HostileRecord {
    /// What it is.
    pub kind: Kind,
    /// Its key bytes.
    pub key: Option<Vec<u8>>,
    /// Its value bytes; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Its headers: [`CRAWL_HEADER`] and [`INDEX_HEADER`].
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its timestamp (create time, epoch milliseconds), distinct per record.
    pub timestamp: i64,
    /// The product its key names, when the key is a `ListingKey`.
    pub product_id: Option<i64>,
    /// The listing its value encodes ([`Kind::Listing`], [`Kind::Huge`]).
    pub listing: Option<Listing>,
}

/// A hostile workload for one topic.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// The topic the records were encoded for.
    pub topic: String,
    /// The records, in the order they are to be produced.
    pub records: Vec<HostileRecord>,
}

/// How many records of each kind [`Hostile::generate`] makes.
#[derive(Debug, Clone)]
pub struct Mix {
    /// Good listings (new products and newer versions of earlier ones).
    pub listings: usize,
    /// Of each other kind, how many.
    pub bad: BTreeMap<Kind, usize>,
}

impl Default for Mix {
    /// 1,000 good listings and 1,000 of the other kinds.
    fn default() -> Self {
        let bad = [
            (Kind::Huge, 2),
            (Kind::Garbage, 250),
            (Kind::UnknownSchemaId, 120),
            (Kind::BadBody, 120),
            (Kind::ForeignListing, 100),
            (Kind::ForeignKeySchema, 60),
            (Kind::ForeignBomb, 40),
            (Kind::OwnSubjectBomb, 8),
            (Kind::TombstoneKnown, 120),
            (Kind::TombstoneUnknown, 120),
            (Kind::TombstoneGarbageKey, 60),
        ];
        Self {
            listings: 1_000,
            bad: bad.into_iter().collect(),
        }
    }
}

/// What went wrong preparing a hostile workload.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the hostile records: {0}")]
pub struct HostileError(String);

impl Hostile {
    /// The records of `mix` for `topic`, the same for the same `seed` (schema ids aside): the
    /// listing schemas registered under `topic`'s subjects, the foreign ones under subjects of
    /// their own, the bomb under `topic`'s value subject too (its compatibility set to `NONE`).
    ///
    /// # Errors
    /// [`HostileError`] when the registry refuses a schema or cannot be reached.
    pub async fn generate(
        config: &Config,
        topic: &str,
        mix: &Mix,
        seed: u64,
    ) -> Result<Self, HostileError> {
        let schemas = Schemas::register(config, topic, seed).await?;
        let mut rng = Rng::new(seed);
        // The kinds in a shuffled order, good listings among them.
        let mut kinds: Vec<Kind> = std::iter::repeat_n(Kind::Listing, mix.listings).collect();
        for (kind, n) in &mix.bad {
            kinds.extend(std::iter::repeat_n(*kind, *n));
        }
        for i in (1..kinds.len()).rev() {
            let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
            kinds.swap(i, j);
        }
        let codec = Codec::new(&config.registry).map_err(|e| HostileError(e.to_string()))?;
        let key_encoder = codec.encoder(topic, Part::Key, schema::LISTING_KEY);
        let value_encoder = codec.encoder(topic, Part::Value, schema::LISTING);
        let key_of = async |id: i64| {
            key_encoder
                .encode(&ListingKey { product_id: id })
                .await
                .map_err(|e| HostileError(e.to_string()))
        };
        let mut written: Vec<i64> = Vec::new();
        let mut next_id = 1_000_000 + i64::try_from(seed % 1_000).unwrap_or(0) * 1_000_000;
        let mut fresh = || {
            next_id += 1;
            next_id
        };
        let mut records = Vec::with_capacity(kinds.len());
        let mut prices = SPECIAL_PRICES.iter().copied();
        for (index, kind) in kinds.into_iter().enumerate() {
            let n = index as u64;
            let (mut product_id, mut listing) = (None, None);
            let (key, value) = match kind {
                Kind::Listing => {
                    // A tenth are newer versions of products already written.
                    let id = match written.len() {
                        len if len > 0 && rng.below(10) == 0 => {
                            written[usize::try_from(rng.below(len as u64)).unwrap_or(0)]
                        }
                        _ => fresh(),
                    };
                    let price = match prices.next() {
                        Some(special) => special,
                        None => ordinary_price(&mut rng),
                    };
                    let l = good_listing(&mut rng, id, price, n);
                    let value = value_encoder
                        .encode(&l)
                        .await
                        .map_err(|e| HostileError(e.to_string()))?;
                    written.push(id);
                    (product_id, listing) = (Some(id), Some(l));
                    (Some(key_of(id).await?), Some(value))
                }
                Kind::Huge => {
                    let id = fresh();
                    let l = huge_listing(&mut rng, id, &value_encoder).await?;
                    let value = value_encoder
                        .encode(&l)
                        .await
                        .map_err(|e| HostileError(e.to_string()))?;
                    (product_id, listing) = (Some(id), Some(l));
                    (Some(key_of(id).await?), Some(value))
                }
                Kind::TombstoneKnown if !written.is_empty() => {
                    let id = written[usize::try_from(rng.below(written.len() as u64)).unwrap_or(0)];
                    product_id = Some(id);
                    (Some(key_of(id).await?), None)
                }
                Kind::TombstoneKnown | Kind::TombstoneUnknown => {
                    let id = fresh();
                    product_id = Some(id);
                    (Some(key_of(id).await?), None)
                }
                Kind::TombstoneGarbageKey => (Some(garbage(&mut rng, n)), None),
                bad => {
                    // Half the poison names a product already written: it must leave it alone.
                    let id = match written.len() {
                        len if len > 0 && rng.below(2) == 0 => {
                            written[usize::try_from(rng.below(len as u64)).unwrap_or(0)]
                        }
                        _ => fresh(),
                    };
                    product_id = Some(id);
                    let value = schemas.poison(bad, &mut rng, id, n, &value_encoder).await?;
                    (Some(key_of(id).await?), Some(value))
                }
            };
            records.push(HostileRecord {
                kind,
                key,
                value,
                headers: vec![
                    (
                        CRAWL_HEADER.to_owned(),
                        format!("hostile-{seed}").into_bytes(),
                    ),
                    (INDEX_HEADER.to_owned(), index.to_string().into_bytes()),
                ],
                timestamp: 1_700_000_000_000 + i64::try_from(index).unwrap_or(0),
                product_id,
                listing,
            });
        }
        Ok(Self {
            topic: topic.to_owned(),
            records,
        })
    }

    /// How many records of `kind` there are.
    pub fn count(&self, kind: Kind) -> usize {
        self.records.iter().filter(|r| r.kind == kind).count()
    }
}

/// Prices the first good listings get, one each: every edge of the filter and of `i64`.
pub const SPECIAL_PRICES: [Option<i64>; 12] = [
    Some(-1),
    Some(0),
    Some(i64::MIN),
    Some(i64::MAX),
    Some(1_000_000),
    Some(1_000_001),
    Some(-1_000_000),
    Some(i64::MIN + 1),
    Some(i64::MAX - 1),
    None,
    Some(1),
    Some(999_999),
];

fn ordinary_price(rng: &mut Rng) -> Option<i64> {
    match rng.below(20) {
        0 => None,
        1 => Some(-i64::try_from(rng.below(1_000_000)).unwrap_or(0) - 1),
        2..=4 => Some(1_000_001 + i64::try_from(rng.below(5_000_000)).unwrap_or(0)),
        _ => Some(i64::try_from(rng.below(1_000_001)).unwrap_or(0)),
    }
}

/// Text with 4-byte UTF-8 and SQL metacharacters, in an order that varies with `n`.
pub fn hostile_text(field: &str, n: u64) -> String {
    match n % 4 {
        0 => format!("{field} {n} {FOUR_BYTE} {METACHARACTERS}"),
        1 => format!("{METACHARACTERS}{FOUR_BYTE}{field}{n}"),
        2 => format!("\0{FOUR_BYTE}'{field}'\"{n}\"{METACHARACTERS}\\"),
        _ => format!("`{field}`;--{n}/*{FOUR_BYTE}*/\0{METACHARACTERS}"),
    }
}

/// A listing of the contract with a hostile string in every string field.
fn good_listing(rng: &mut Rng, id: i64, price: Option<i64>, n: u64) -> Listing {
    let category = match rng.below(8) {
        0 => None,
        c => Some(CATEGORIES[usize::try_from(c).unwrap_or(0) % CATEGORIES.len()].to_owned()),
    };
    let text = |field: &str| hostile_text(field, n);
    let some_text =
        |rng: &mut Rng, field: &str| (rng.below(5) != 0).then(|| hostile_text(field, n));
    Listing {
        product_id: id,
        title: text("title"),
        price,
        condition: text("condition"),
        sale_status: text("sale_status"),
        category_path: category.as_ref().map(|c| format!("{c} > {}", text("path"))),
        category_level1: category,
        category_level2: some_text(rng, "level2"),
        category_level3: some_text(rng, "level3"),
        category_level4: some_text(rng, "level4"),
        description: text("description"),
        seller: some_text(rng, "seller"),
        location: some_text(rng, "location"),
        view_count: (rng.below(3) != 0).then(|| i64::try_from(rng.below(100_000)).unwrap_or(0)),
        wish_count: (rng.below(3) != 0).then(|| i64::try_from(rng.below(1_000)).unwrap_or(0)),
        chat_count: (rng.below(3) != 0).then(|| i64::try_from(rng.below(100)).unwrap_or(0)),
        image_urls: (0..rng.below(3))
            .map(|i| text(&format!("image{i}")))
            .collect(),
        posted_at: (rng.below(4) != 0).then(|| 1_600_000_000_000 + i64::try_from(n).unwrap_or(0)),
        scraped_at: 1_700_000_000_000 + i64::try_from(n).unwrap_or(0),
        source_url: format!("https://web.joongna.com/product/{id}?q={}", text("url")),
    }
}

/// A listing whose encoded value is [`HUGE_VALUE_BYTES`] long, of incompressible text (so that
/// it is as large on the wire as in memory) with 4-byte characters.
async fn huge_listing(
    rng: &mut Rng,
    id: i64,
    encoder: &crate::codec::SubjectEncoder<'_>,
) -> Result<Listing, HostileError> {
    let mut listing = good_listing(rng, id, Some(123_456), 0);
    listing.category_level1 = Some(CATEGORIES[0].to_owned());
    let mut description = String::new();
    let alphabet: Vec<char> =
        "가나다라마바사아자차카타파하abcdefghijklmnopqrstuvwxyz0123456789🍎𠀀'\"\\;`"
            .chars()
            .collect();
    // Fill, then trim to the exact size (a char boundary may leave it a few bytes short; the
    // string's own length prefix grows by at most two bytes on the way).
    loop {
        listing.description = description.clone();
        let len = encoder
            .encode(&listing)
            .await
            .map_err(|e| HostileError(e.to_string()))?
            .len();
        if len >= HUGE_VALUE_BYTES - 8 {
            while encoder
                .encode(&listing)
                .await
                .map_err(|e| HostileError(e.to_string()))?
                .len()
                > HUGE_VALUE_BYTES
            {
                listing.description.pop();
            }
            return Ok(listing);
        }
        let missing = HUGE_VALUE_BYTES - len;
        while description.len() < listing.description.len() + missing {
            let c = alphabet[usize::try_from(rng.below(alphabet.len() as u64)).unwrap_or(0)];
            description.push(c);
        }
    }
}

/// Bytes that are not the Confluent wire format.
fn garbage(rng: &mut Rng, n: u64) -> Vec<u8> {
    match n % 6 {
        0 => Vec::new(),
        1 => vec![0, 0, 1],
        2 => format!(r#"{{"product_id": {n}, "price": "1'; --"}}"#).into_bytes(),
        3 => format!("garbage {n} {FOUR_BYTE}").into_bytes(),
        _ => (0..1 + rng.below(300))
            .map(|i| {
                let byte = rng.next_u64().to_le_bytes()[0];
                // Not the magic byte first: that is another kind.
                if i == 0 && byte == 0 { 0xff } else { byte }
            })
            .collect(),
    }
}

/// The Confluent wire-format header for schema `id`.
fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(5 + body.len());
    payload.push(0);
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(body);
    payload
}

/// Avro's zig-zag varint of `n`.
pub fn zigzag(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)).cast_unsigned();
    let mut out = Vec::new();
    loop {
        let byte = u8::try_from(z & 0x7f).unwrap_or(0);
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The bomb's body, about 100 bytes: one outer block of inner arrays, each a block of as many
/// nulls as apache-avro lets one array reserve (512 MiB of values), then the end of the input.
pub fn bomb_body() -> Vec<u8> {
    let per_array = (512 * 1024 * 1024 / std::mem::size_of::<Value>()) as i64;
    let inner = [zigzag(per_array), vec![0]].concat();
    let arrays = 18;
    let mut body = zigzag(arrays);
    for _ in 0..arrays {
        body.extend_from_slice(&inner);
    }
    body
}

/// The schemas the poison is written with.
struct Schemas {
    foreign_listing: (u32, Schema),
    foreign_key: u32,
    foreign_bomb: u32,
    own_bomb: u32,
    listing: u32,
}

impl Schemas {
    async fn register(config: &Config, topic: &str, seed: u64) -> Result<Self, HostileError> {
        let url = config.registry.url.clone();
        let settings = SrSettings::new(url.clone());
        let register = async |subject: String, name: Option<&str>, json: &str| {
            let supplied =
                SuppliedSchema::new(name.map(str::to_owned), SchemaType::Avro, json.into());
            post_schema(&settings, subject.clone(), supplied)
                .await
                .map(|s| s.id)
                .map_err(|e| HostileError(format!("registering under {subject}: {}", e.error)))
        };
        let other = format!("{topic}-hostile-{seed}");
        // The listing's fields under another name: it decodes as a listing, from the wrong subject.
        let foreign_json = schema::LISTING
            .json
            .replacen("\"name\": \"Listing\"", "\"name\": \"ForeignListing\"", 1)
            .replacen("io.marketflow.listing", "io.marketflow.hostile", 1);
        let foreign_schema =
            Schema::parse_str(&foreign_json).map_err(|e| HostileError(e.to_string()))?;
        let foreign_listing = register(
            format!("{other}-value"),
            Some("io.marketflow.hostile.ForeignListing"),
            &foreign_json,
        )
        .await?;
        let foreign_key = register(
            schema::subject(topic, Part::Key),
            Some(schema::LISTING_KEY.full_name),
            schema::LISTING_KEY.json,
        )
        .await?;
        let foreign_bomb = register(format!("{other}-bomb-value"), None, BOMB_SCHEMA).await?;
        // Under the topic's own subject, which only takes it with compatibility NONE; the
        // listing schema is registered after it, as the subject's latest version.
        let value_subject = schema::subject(topic, Part::Value);
        set_compatibility_none(&url, &value_subject).await?;
        let own_bomb = register(value_subject.clone(), None, BOMB_SCHEMA).await?;
        let listing = register(
            value_subject,
            Some(schema::LISTING.full_name),
            schema::LISTING.json,
        )
        .await?;
        Ok(Self {
            foreign_listing: (foreign_listing, foreign_schema),
            foreign_key,
            foreign_bomb,
            own_bomb,
            listing,
        })
    }

    /// The value of a poison record of `kind` naming product `id`.
    async fn poison(
        &self,
        kind: Kind,
        rng: &mut Rng,
        id: i64,
        n: u64,
        encoder: &crate::codec::SubjectEncoder<'_>,
    ) -> Result<Vec<u8>, HostileError> {
        let avro = |schema: &Schema, value: Value| {
            apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                .build()
                .and_then(|writer| writer.write_value_to_vec(value))
                .map_err(|e| HostileError(e.to_string()))
        };
        Ok(match kind {
            Kind::Garbage => garbage(rng, n),
            Kind::UnknownSchemaId => {
                let unknown = 0x7fff_0000 + u32::try_from(n % 0xffff).unwrap_or(0);
                framed(unknown, &garbage(rng, n))
            }
            Kind::BadBody => {
                let good = good_listing(rng, id, Some(1_000), n);
                if n.is_multiple_of(2) {
                    let whole = encoder
                        .encode(&good)
                        .await
                        .map_err(|e| HostileError(e.to_string()))?;
                    // Cut inside the body: the reader runs out of input.
                    let cut = 5 + (whole.len() - 5) / 2;
                    whole[..cut].to_vec()
                } else {
                    // product_id, then a title 2^40 bytes long.
                    let body = [zigzag(id), zigzag(1 << 40), b"short".to_vec()].concat();
                    framed(self.listing, &body)
                }
            }
            Kind::ForeignListing => {
                let (schema_id, schema) = &self.foreign_listing;
                let mut listing = good_listing(rng, id, Some(500_000), n);
                listing.category_level1 = Some("foreign".into());
                let value = apache_avro::to_value(&listing)
                    .and_then(|v| v.resolve(schema))
                    .map_err(|e| HostileError(e.to_string()))?;
                framed(*schema_id, &avro(schema, value)?)
            }
            Kind::ForeignKeySchema => framed(self.foreign_key, &zigzag(id)),
            Kind::ForeignBomb => framed(self.foreign_bomb, &bomb_body()),
            Kind::OwnSubjectBomb => framed(self.own_bomb, &bomb_body()),
            _ => return Err(HostileError(format!("{kind:?} is not poison"))),
        })
    }
}

/// `PUT /config/<subject>` `{"compatibility":"NONE"}` on the registry at `url` (plain HTTP; the
/// registry client has no call for it).
async fn set_compatibility_none(url: &str, subject: &str) -> Result<(), HostileError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |e: &dyn std::fmt::Display| {
        HostileError(format!(
            "setting compatibility NONE on {subject} at {url}: {e}"
        ))
    };
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let body = r#"{"compatibility":"NONE"}"#;
    let request = format!(
        "PUT /config/{subject} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: \
         application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| failed(&e))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(&e))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| failed(&e))?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(failed(&answer.lines().next().unwrap_or_default()))
    }
}

/// Where a produced record landed: `(partition, offset)`.
pub type Coordinates = (i32, i64);

/// Produces `hostile`'s records in order, with their headers and timestamps, through a producer
/// whose `message.max.bytes` is the broker's (so that the ~1 MiB listing goes through whatever
/// the programs' own producers allow); returns where each landed.
///
/// # Errors
/// [`HostileError`] when a record is not delivered.
pub async fn produce(
    kafka: &KafkaConfig,
    hostile: &Hostile,
) -> Result<Vec<Coordinates>, HostileError> {
    let mut config = producer_config(kafka).map_err(|e| HostileError(e.to_string()))?;
    config.set("message.max.bytes", BROKER_MESSAGE_MAX_BYTES.to_string());
    let producer: FutureProducer = config.create().map_err(|e| HostileError(e.to_string()))?;
    let mut landed = Vec::with_capacity(hostile.records.len());
    for chunk in hostile.records.chunks(500) {
        let sends = chunk.iter().map(|r| {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in &r.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&hostile.topic)
                .headers(headers)
                .timestamp(r.timestamp);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            if let Some(value) = &r.value {
                record = record.payload(value);
            }
            producer.send(record, Duration::from_secs(60))
        });
        for (delivery, r) in futures::future::join_all(sends)
            .await
            .into_iter()
            .zip(chunk)
        {
            let delivery = delivery.map_err(|(e, _)| {
                HostileError(format!(
                    "producing a {:?} record of {} bytes: {e}",
                    r.kind,
                    r.value.as_ref().map_or(0, Vec::len)
                ))
            })?;
            landed.push((delivery.partition, delivery.offset));
        }
    }
    Ok(landed)
}

/// Every record of `topic` up to its end now (all partitions), read without a group commit.
/// Blocking: call it from a blocking thread.
///
/// # Errors
/// [`HostileError`] when the topic cannot be read within a minute.
pub fn read_all(kafka: &KafkaConfig, topic: &str) -> Result<Vec<OwnedMessage>, HostileError> {
    let failed = |e: &dyn std::fmt::Display| HostileError(format!("reading {topic}: {e}"));
    let mut config =
        consumer_config(kafka, &super::unique("hostile-reader")).map_err(|e| failed(&e))?;
    config.set(
        "fetch.message.max.bytes",
        (2 * BROKER_MESSAGE_MAX_BYTES).to_string(),
    );
    let consumer: BaseConsumer = config.create().map_err(|e| failed(&e))?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| failed(&e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| failed(&e))?;
        if high > low {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| failed(&e))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&list).map_err(|e| failed(&e))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(failed(&"not read to its end within a minute"));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
                out.push(m.detach());
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}; retrying"),
            None => {}
        }
    }
    Ok(out)
}

/// A small deterministic generator (xorshift), so that a failing run can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_matches_avro() {
        assert_eq!(zigzag(0), [0]);
        assert_eq!(zigzag(-1), [1]);
        assert_eq!(zigzag(1), [2]);
        assert_eq!(zigzag(64), [0x80, 1]);
    }

    #[test]
    fn the_bomb_is_about_a_hundred_bytes_and_names_gigabytes() {
        let body = bomb_body();
        assert!(body.len() <= 120, "{}", body.len());
        let schema = Schema::parse_str(BOMB_SCHEMA).unwrap();
        assert!(matches!(schema, Schema::Array(_)));
    }

    #[test]
    fn hostile_text_has_four_byte_characters_and_metacharacters() {
        for n in 0..4 {
            let text = hostile_text("f", n);
            assert!(text.chars().any(|c| c.len_utf8() == 4), "{text:?}");
            for meta in ['\'', '"', '\\', ';', '\0', '`'] {
                assert!(text.contains(meta), "{meta:?} not in {text:?}");
            }
        }
    }
}
