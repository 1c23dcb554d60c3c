//! Lifecycle events of a crawl (`started`, `finished` with counts by outcome, `stopped`,
//! `failed` with its cause, `id_failed` for an id given up) as Avro to `scraper-events`, keyed by
//! the crawl id so that one crawl's events stay in order.

use std::sync::Arc;

use marketflow_core::codec::Codec;
use marketflow_core::record::ScraperEvent;

use crate::counts::Counts;
use crate::produce::{ProduceError, Sender};

/// Writes one crawl's events.
#[derive(Clone)]
pub struct Events {
    sender: Sender,
    codec: Arc<Codec>,
    topic: String,
    template: ScraperEvent,
}

impl Events {
    /// Events of the crawl described by `template` (crawl id, mode, base URL, range) to `topic`.
    pub fn new(sender: Sender, codec: Arc<Codec>, topic: &str, template: ScraperEvent) -> Self {
        Self {
            sender,
            codec,
            topic: topic.to_owned(),
            template,
        }
    }

    /// The crawl started (or resumed) with every id below `checkpoint_id` done.
    ///
    /// # Errors
    /// [`ProduceError`] when the event cannot be produced.
    pub async fn started(&self, checkpoint_id: i64) -> Result<(), ProduceError> {
        self.emit(ScraperEvent {
            kind: "started".into(),
            checkpoint_id: Some(checkpoint_id),
            ..self.template.clone()
        })
        .await
    }

    /// The crawl ended (`finished`) or was stopped by a signal (`stopped`), with its counts.
    ///
    /// # Errors
    /// [`ProduceError`] when the event cannot be produced.
    pub async fn ended(
        &self,
        kind: &str,
        counts: &Counts,
        checkpoint_id: i64,
    ) -> Result<(), ProduceError> {
        self.emit(ScraperEvent {
            kind: kind.into(),
            checkpoint_id: Some(checkpoint_id),
            listings: Some(counts.listings),
            deleted: Some(counts.deleted),
            blocked: Some(counts.blocked),
            malformed: Some(counts.malformed),
            failed: Some(counts.failed),
            skipped: Some(counts.skipped),
            ..self.template.clone()
        })
        .await
    }

    /// The crawl stopped on an error.
    ///
    /// # Errors
    /// [`ProduceError`] when the event cannot be produced.
    pub async fn failed(&self, cause: &str, checkpoint_id: i64) -> Result<(), ProduceError> {
        self.emit(ScraperEvent {
            kind: "failed".into(),
            checkpoint_id: Some(checkpoint_id),
            cause: Some(cause.to_owned()),
            ..self.template.clone()
        })
        .await
    }

    /// Product `id` was given up after its retries.
    ///
    /// # Errors
    /// [`ProduceError`] when the event cannot be produced.
    pub async fn id_failed(&self, id: i64, cause: &str) -> Result<(), ProduceError> {
        self.emit(ScraperEvent {
            kind: "id_failed".into(),
            product_id: Some(id),
            cause: Some(cause.to_owned()),
            ..self.template.clone()
        })
        .await
    }

    async fn emit(&self, mut event: ScraperEvent) -> Result<(), ProduceError> {
        event.at = chrono::Utc::now().timestamp_millis();
        let (key, value) = self
            .codec
            .encode_record(&self.topic, &event.key(), &event)
            .await?;
        self.sender.send(&self.topic, &key, &value, None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use marketflow_core::record::{ScraperEvent, ScraperEventKey};
    use marketflow_core::schema;

    #[test]
    fn the_event_schemas_parse_and_fit_the_types() {
        let schema = schema::SCRAPER_EVENT.parse().unwrap();
        let event = ScraperEvent {
            crawl_id: "c".into(),
            kind: "finished".into(),
            listings: Some(3),
            cause: None,
            ..ScraperEvent::default()
        };
        let value = apache_avro::to_value(&event)
            .unwrap()
            .resolve(&schema)
            .unwrap();
        assert_eq!(
            apache_avro::from_value::<ScraperEvent>(&value).unwrap(),
            event
        );
        let key_schema = schema::SCRAPER_EVENT_KEY.parse().unwrap();
        let key = apache_avro::to_value(event.key())
            .unwrap()
            .resolve(&key_schema)
            .unwrap();
        assert_eq!(
            apache_avro::from_value::<ScraperEventKey>(&key).unwrap(),
            ScraperEventKey {
                crawl_id: "c".into()
            }
        );
    }
}
