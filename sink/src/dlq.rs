//! The dead-letter topic: records that can never be written, as they arrived (same key, value,
//! headers and timestamp), with headers naming where they came from and why they were set aside —
//! the header names of Kafka Connect's dead-letter queue, so existing tooling reads them. A letter
//! too large for the producer or the broker goes with its value (and, if need be, its key) cut,
//! saying so in headers: a size is never a reason to stop.

use std::borrow::Cow;
use std::time::Duration;

use futures::future::try_join_all;
use marketflow_core::config::KafkaConfig;
use marketflow_core::kafka::{ClientError, producer_config};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::OnceCell;

use crate::envelope::{Envelope, Poison};

/// Header: the record's source topic.
pub const HEADER_TOPIC: &str = "__connect.errors.topic";
/// Header: the record's source partition (decimal text).
pub const HEADER_PARTITION: &str = "__connect.errors.partition";
/// Header: the record's source offset (decimal text).
pub const HEADER_OFFSET: &str = "__connect.errors.offset";
/// Header: the error's class (`unknown_schema_id`, `row_refused`, ...).
pub const HEADER_CLASS: &str = "__connect.errors.exception.class.name";
/// Header: the error's message.
pub const HEADER_MESSAGE: &str = "__connect.errors.exception.message";
/// Header, only on a letter that was cut to fit: the original value's size in bytes (decimal).
pub const HEADER_TRUNCATED: &str = "__connect.errors.marketflow.truncated";
/// Header, only on a letter that was cut to fit: what was cut, and why.
pub const HEADER_TRUNCATED_REASON: &str = "__connect.errors.marketflow.truncated.reason";

/// The prefix of the headers this module writes: a record's own headers with it (from an earlier
/// dead letter) are not copied, so that each name means this failure.
const ERROR_PREFIX: &str = "__connect.errors.";
/// librdkafka's `message.max.bytes` when the configuration does not set it.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room left for a record's framing: librdkafka's per-record overhead and the batch's header
/// (61 bytes) the broker counts.
const FRAMING_BYTES: usize = 1 << 10;
/// Longest error message carried (a refused row's message may quote the row).
const MAX_MESSAGE_BYTES: usize = 8 << 10;
/// A letter cut to the producer's limit may still be over the topic's own limit
/// (`max.message.bytes`): the last try is cut to this fraction of it.
const LAST_TRY_FRACTION: usize = 16;

/// Why a dead letter could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot send {coordinates} to the dead-letter topic {topic}: {detail}")]
pub struct DlqError {
    /// The record's `topic/partition/offset`.
    pub coordinates: String,
    /// The dead-letter topic.
    pub topic: String,
    /// What the producer said.
    pub detail: String,
}

/// The producer of dead letters, made when the first one comes: an idle producer's polling
/// thread costs a few percent of a core (rust-rdkafka polls with a millisecond-truncated timeout
/// and spins through the last millisecond of every 100 ms), and most runs have none.
pub struct DeadLetters {
    config: ClientConfig,
    producer: OnceCell<FutureProducer>,
    topic: String,
    /// The producer's `message.max.bytes`.
    max_bytes: usize,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetters {
    /// Dead letters to `topic` through an idempotent producer.
    ///
    /// # Errors
    /// [`ClientError`] when the producer's configuration is refused (checked now, and the
    /// producer built once, so that a bad one stops the sink at start-up).
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self, ClientError> {
        let config = producer_config(kafka)?;
        drop(config.create::<FutureProducer>()?);
        let max_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        Ok(Self {
            config,
            producer: OnceCell::new(),
            topic: topic.to_owned(),
            max_bytes,
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every letter and waits until the brokers have them all.
    ///
    /// # Errors
    /// [`DlqError`] for the first that could not be delivered.
    pub async fn send_all(&self, letters: &[(&Envelope, &Poison)]) -> Result<(), DlqError> {
        try_join_all(
            letters
                .iter()
                .map(|(envelope, poison)| self.send(envelope, poison)),
        )
        .await
        .map(drop)
    }

    /// Sends one letter whole if it fits the producer's limit, else (or when the producer or
    /// the broker finds it too large) cut to the limit, then to a sixteenth of it.
    async fn send(&self, envelope: &Envelope, poison: &Poison) -> Result<(), DlqError> {
        let failed = |detail: String| DlqError {
            coordinates: envelope.coordinates(),
            topic: self.topic.clone(),
            detail,
        };
        let producer = self
            .producer
            .get_or_try_init(async || self.config.create::<FutureProducer>())
            .await
            .map_err(|e| failed(format!("cannot build the producer: {e}")))?;
        let whole = Letter::new(envelope, poison);
        let budgets = [
            None,
            Some(self.max_bytes),
            Some(self.max_bytes / LAST_TRY_FRACTION),
        ];
        let mut last = None;
        for budget in budgets {
            let letter = match budget {
                None if whole.size() > self.max_bytes => continue,
                None => whole.clone(),
                Some(budget) => whole.cut(budget, self.max_bytes),
            };
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(letter.headers());
            if let Some(key) = letter.key.as_deref() {
                record = record.key(key);
            }
            if let Some(value) = letter.value.as_deref() {
                record = record.payload(value);
            }
            if let Some(timestamp) = envelope.timestamp {
                record = record.timestamp(timestamp);
            }
            match producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => {
                    if letter.cut {
                        tracing::warn!(record = %envelope.coordinates(), bytes = whole.size(), limit = self.max_bytes, "Dead letter too large; sent cut.");
                    }
                    return Ok(());
                }
                Err((e, _)) if too_large(&e) => last = Some(e),
                Err((e, _)) => return Err(failed(e.to_string())),
            }
        }
        Err(failed(last.map_or_else(
            || "too large to send even cut".into(),
            |e| {
                format!(
                    "{e}, even cut to {} bytes",
                    self.max_bytes / LAST_TRY_FRACTION
                )
            },
        )))
    }
}

/// Whether the producer or the broker refused a record for its size.
fn too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

/// A dead letter's key, value and headers, borrowed from its record where they are unchanged.
#[derive(Debug, Clone)]
struct Letter<'a> {
    key: Option<Cow<'a, [u8]>>,
    value: Option<Cow<'a, [u8]>>,
    headers: Vec<(&'a str, Option<Cow<'a, [u8]>>)>,
    /// How many of `headers` (from the start) are the record's own.
    own_headers: usize,
    /// Whether anything was cut.
    cut: bool,
}

impl<'a> Letter<'a> {
    /// The whole letter: the record's key, value and headers (but those of an earlier failure),
    /// then the error headers.
    fn new(envelope: &'a Envelope, poison: &'a Poison) -> Self {
        let mut headers: Vec<(&str, Option<Cow<'_, [u8]>>)> = envelope
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .filter(|h| !h.key.starts_with(ERROR_PREFIX))
            .map(|h| (h.key, h.value.map(Cow::Borrowed)))
            .collect();
        let own_headers = headers.len();
        let text = |s: String| Some(Cow::Owned(s.into_bytes()));
        let message = poison.message.as_bytes();
        let message = &message[..floor_char_boundary(&poison.message, MAX_MESSAGE_BYTES)];
        headers.extend([
            (HEADER_TOPIC, Some(Cow::Borrowed(envelope.topic.as_bytes()))),
            (HEADER_PARTITION, text(envelope.partition.to_string())),
            (HEADER_OFFSET, text(envelope.offset.to_string())),
            (HEADER_CLASS, Some(Cow::Borrowed(poison.class.as_bytes()))),
            (HEADER_MESSAGE, Some(Cow::Borrowed(message))),
        ]);
        Self {
            key: envelope.key_bytes.as_deref().map(Cow::Borrowed),
            value: envelope.value_bytes.as_deref().map(Cow::Borrowed),
            headers,
            own_headers,
            cut: false,
        }
    }

    /// Bytes the producer counts (near enough: each header's length prefixes as 10).
    fn size(&self) -> usize {
        let bytes = |b: &Option<Cow<'_, [u8]>>| b.as_ref().map_or(0, |b| b.len());
        FRAMING_BYTES
            + bytes(&self.key)
            + bytes(&self.value)
            + self
                .headers
                .iter()
                .map(|(k, v)| 10 + k.len() + bytes(v))
                .sum::<usize>()
    }

    /// The letter cut to `budget` bytes (the producer's limit being `limit`): the record's own
    /// headers dropped if they take over a quarter of it, the key cut to a quarter, the value to
    /// what is left; the cut said in [`HEADER_TRUNCATED`] and [`HEADER_TRUNCATED_REASON`].
    fn cut(&self, budget: usize, limit: usize) -> Self {
        let mut letter = self.clone();
        let mut done = Vec::new();
        let quarter = budget / 4;
        let own: usize = letter.headers[..letter.own_headers]
            .iter()
            .map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum();
        if own > quarter {
            letter.headers.drain(..letter.own_headers);
            letter.own_headers = 0;
            done.push(format!("its own headers ({own} bytes) dropped"));
        }
        if let Some(key) = &mut letter.key
            && key.len() > quarter
        {
            done.push(format!(
                "key cut to its first {quarter} of {} bytes",
                key.len()
            ));
            truncate(key, quarter);
        }
        let original = letter.value.as_ref().map_or(0, |v| v.len());
        // The reason's text is not known yet: room for it is kept.
        let reason_room = 512;
        let spare = budget
            .saturating_sub(letter.size() - original)
            .saturating_sub(2 * 10 + HEADER_TRUNCATED.len() + HEADER_TRUNCATED_REASON.len())
            .saturating_sub(reason_room);
        if let Some(value) = &mut letter.value
            && value.len() > spare
        {
            done.push(format!(
                "value cut to its first {spare} of {original} bytes"
            ));
            truncate(value, spare);
        }
        let reason = format!(
            "the dead letter takes {} bytes, over the {budget} it may take (the producer's \
             message.max.bytes is {limit}): {}",
            self.size(),
            if done.is_empty() {
                "nothing to cut".to_owned()
            } else {
                done.join("; ")
            }
        );
        letter.headers.push((
            HEADER_TRUNCATED,
            Some(Cow::Owned(original.to_string().into_bytes())),
        ));
        letter.headers.push((
            HEADER_TRUNCATED_REASON,
            Some(Cow::Owned(reason.into_bytes())),
        ));
        letter.cut = true;
        letter
    }

    fn headers(&self) -> OwnedHeaders {
        self.headers.iter().fold(
            OwnedHeaders::new_with_capacity(self.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            },
        )
    }
}

/// Keeps the first `len` bytes, still borrowed if they were.
fn truncate(bytes: &mut Cow<'_, [u8]>, len: usize) {
    match bytes {
        Cow::Borrowed(b) => *b = &b[..len.min(b.len())],
        Cow::Owned(b) => b.truncate(len),
    }
}

/// The largest index of at most `max` that is a character boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Content;
    use std::sync::Arc;

    fn envelope(value: Vec<u8>, headers: &[(&str, &str)]) -> (Envelope, Poison) {
        let poison = Poison {
            class: "unknown_schema_id",
            message: "schema id 9 is not known".into(),
        };
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
        let envelope = Envelope {
            topic: Arc::from("listings"),
            partition: 2,
            offset: 41,
            key_bytes: Some(b"key".to_vec()),
            value_bytes: Some(value),
            headers: Some(headers),
            timestamp: Some(1_700_000_000_000),
            content: Content::Poison(poison.clone()),
        };
        (envelope, poison)
    }

    fn found(letter: &Letter<'_>) -> Vec<(String, String)> {
        letter
            .headers()
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_letter_keeps_the_records_headers_and_names_the_source_and_the_error() {
        let (envelope, poison) = envelope(
            vec![0, 0, 0, 0, 9],
            &[
                ("marketflow-crawl", "crawl-7"),
                (HEADER_CLASS, "from an earlier failure"),
            ],
        );
        let letter = Letter::new(&envelope, &poison);
        assert_eq!(
            found(&letter),
            [
                ("marketflow-crawl".to_owned(), "crawl-7".to_owned()),
                (HEADER_TOPIC.to_owned(), "listings".to_owned()),
                (HEADER_PARTITION.to_owned(), "2".to_owned()),
                (HEADER_OFFSET.to_owned(), "41".to_owned()),
                (HEADER_CLASS.to_owned(), "unknown_schema_id".to_owned()),
                (
                    HEADER_MESSAGE.to_owned(),
                    "schema id 9 is not known".to_owned()
                ),
            ]
        );
        assert_eq!(letter.value.as_deref(), Some(&[0, 0, 0, 0, 9][..]));
        assert_eq!(letter.key.as_deref(), Some(&b"key"[..]));
    }

    #[test]
    fn a_letter_over_the_limit_is_cut_to_it_saying_so() {
        let limit = 1_048_588;
        let value: Vec<u8> = (0..1_048_000u32).map(|i| (i % 251) as u8).collect();
        let (envelope, poison) = envelope(value.clone(), &[("marketflow-crawl", "crawl-7")]);
        let whole = Letter::new(&envelope, &poison);
        assert!(whole.size() > limit);
        for budget in [limit, limit / LAST_TRY_FRACTION] {
            let cut = whole.cut(budget, limit);
            assert!(cut.size() <= budget, "{} > {budget}", cut.size());
            let kept = cut.value.as_deref().unwrap();
            assert!(kept.len() > budget / 2);
            assert_eq!(kept, &value[..kept.len()]);
            let headers = found(&cut);
            assert_eq!(headers[0], ("marketflow-crawl".into(), "crawl-7".into()));
            let header = |name: &str| &headers.iter().find(|(k, _)| k == name).unwrap().1;
            assert_eq!(header(HEADER_TRUNCATED), "1048000");
            assert!(header(HEADER_TRUNCATED_REASON).contains("value cut to its first"));
            assert_eq!(header(HEADER_CLASS), "unknown_schema_id");
        }
    }

    #[test]
    fn huge_headers_are_dropped_and_a_long_message_is_cut_at_a_character() {
        let big = "h".repeat(600_000);
        let (envelope, mut poison) = envelope(vec![1; 10], &[("big", &big)]);
        poison.message = "가".repeat(5_000);
        let whole = Letter::new(&envelope, &poison);
        let message = &found(&whole)[5].1;
        assert!(message.len() <= MAX_MESSAGE_BYTES && message.chars().all(|c| c == '가'));
        let cut = whole.cut(1_000_000, 1_000_000);
        assert!(cut.size() <= 1_000_000);
        assert!(!found(&cut).iter().any(|(k, _)| k == "big"));
        assert_eq!(cut.value.as_deref(), Some(&[1; 10][..]));
    }
}
