//! The names of every program's Prometheus metrics (served on its admin address at `/metrics`),
//! one module per program, so that the program that records a metric and whatever reads it
//! (`marketflow status`, the tests, the benchmarks) spell it once.

/// The scraper's metrics.
pub mod scraper {
    /// Counter: pages fetched, by `status` (the HTTP status class, `timeout` or `error`).
    pub const PAGES_FETCHED: &str = "scraper_pages_fetched_total";
    /// Counter: product ids visited, by `outcome` (`listing`, `deleted`, `blocked`, `malformed`,
    /// `failed`).
    pub const OUTCOMES: &str = "scraper_outcomes_total";
    /// Counter: requests tried again, by `reason`.
    pub const RETRIES: &str = "scraper_retries_total";
    /// Histogram: seconds from sending a listing to the brokers having it.
    pub const PRODUCE_SECONDS: &str = "scraper_produce_latency_seconds";
    /// Gauge: the next product id of the last checkpoint written.
    pub const CHECKPOINT_ID: &str = "scraper_checkpoint_id";
}

/// The sink's metrics.
pub mod sink {
    /// Counter: records consumed, by `topic`.
    pub const RECORDS_IN: &str = "sink_records_in_total";
    /// Counter: rows written (inserted, upserted, updated), by `table`.
    pub const ROWS_WRITTEN: &str = "sink_rows_written_total";
    /// Counter: tombstones applied (rows deleted, when they existed), by `table`.
    pub const ROWS_DELETED: &str = "sink_rows_deleted_total";
    /// Counter: records whose row was already in the table, identical (a re-delivery under a
    /// plain `INSERT`), by `table`.
    pub const REDELIVERED: &str = "sink_records_redelivered_total";
    /// Counter: batches committed.
    pub const BATCHES: &str = "sink_batches_total";
    /// Histogram: seconds to write a batch: its transaction (retries included) and dead letters.
    pub const BATCH_SECONDS: &str = "sink_batch_duration_seconds";
    /// Histogram: seconds from a record's timestamp (when it was produced, or appended with
    /// `LogAppendTime`) to the commit of the transaction that wrote its row; dead letters and
    /// records without a timestamp are not counted.
    pub const END_TO_END_SECONDS: &str = "sink_end_to_end_latency_seconds";
    /// Counter: records sent to the dead-letter topic, by source `topic`.
    pub const DEAD_LETTERED: &str = "sink_dead_lettered_total";
    /// Counter: transient database failures retried.
    pub const DB_RETRIES: &str = "sink_database_retries_total";
    /// Gauge: records in the topic not yet committed by the group, by `topic`.
    pub const CONSUMER_LAG: &str = "sink_consumer_lag";
}

/// Streams' metrics.
pub mod streams {
    /// Counter: input records read.
    pub const RECORDS_IN: &str = "streams_records_in_total";
    /// Counter: input records dropped, by `reason` (`over_max_price`, `no_price`,
    /// `invalid_price`, `unsendable`, `undecodable`, `foreign_schema`, `too_large`).
    pub const RECORDS_DROPPED: &str = "streams_records_dropped_total";
    /// Counter: input records the state already reflected (read again after a restart).
    pub const RECORDS_SKIPPED: &str = "streams_records_skipped_total";
    /// Counter: input records found in another partition than the one their key belongs in.
    pub const RECORDS_MISROUTED: &str = "streams_records_misrouted_total";
    /// Counter: accepted listings sent to the affordable topic.
    pub const LISTINGS_FORWARDED: &str = "streams_listings_forwarded_total";
    /// Counter: partitions' shares of sums sent to the merge stage.
    pub const PARTIALS_SENT: &str = "streams_partials_sent_total";
    /// Counter: merged sums emitted.
    pub const SUMS_EMITTED: &str = "streams_sums_emitted_total";
    /// Counter: sums not emitted because a figure is out of the schema's range.
    pub const SUMS_OUT_OF_RANGE: &str = "streams_sums_out_of_range_total";
    /// Counter: input offset commits that failed (under `changelog`; a later commit carries
    /// them).
    pub const OFFSET_COMMIT_FAILURES: &str = "streams_offset_commit_failures_total";
    /// Gauge: products held in the state of this instance's input partitions.
    pub const STATE_PRODUCTS: &str = "streams_state_products";
    /// Gauge: sums this instance's merge stage owns.
    pub const STATE_SUMS: &str = "streams_state_sums";
    /// Gauge: input records past the state's position, over this instance's partitions.
    pub const CONSUMER_LAG: &str = "streams_consumer_lag";
    /// Histogram: seconds from an input record's timestamp to when its change to the state is
    /// durable: under `changelog` its changelog record delivered (its forward is sent just
    /// before it), under `exactly_once` the transaction that holds both committed. Records that
    /// change no state, records read again after a restart and records without a timestamp are
    /// not counted.
    pub const END_TO_END_SECONDS: &str = "streams_end_to_end_latency_seconds";
}
