//! The crawl: which ids to visit (a window below the newest id, an explicit range, or new ids as
//! the recent list grows), visiting them concurrently under a semaphore, counting outcomes, and
//! moving the checkpoint only over ids whose listings were delivered.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use marketflow_core::Config;
use marketflow_core::codec::Codec;
use marketflow_core::kafka::SendLimit;
use marketflow_core::metric;
use marketflow_core::record::ScraperEvent;
use marketflow_core::shutdown::with_grace;
use rdkafka::producer::FutureProducer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::{self, Checkpoint, CheckpointError, Progress, Store};
use crate::counts::{Counts, LiveCounts};
use crate::events::Events;
use crate::fetch::{FetchError, Fetched, Fetcher, linked_ids};
use crate::parse::{Outcome, parse};
use crate::produce::{Delivered, ListingProducer, ProduceError, Sender};
use crate::pseudonym::Pseudonymiser;

/// The path of the list of newest products.
pub const RECENT_PATH: &str = "/product/list?type=recent";

/// What to crawl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Visit a range once, then exit with a summary.
    Once(Range),
    /// Poll the recent list every `poll_interval` and visit the new ids, until stopped.
    Continuous,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Once(_) => "once",
            Self::Continuous => "continuous",
        }
    }
}

/// The ids of a `--once` crawl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `scraper.window` ids up to the newest one (or the unfinished crawl being resumed).
    Window,
    /// `from..=to`.
    Ids {
        /// First id.
        from: i64,
        /// Last id.
        to: i64,
    },
}

/// What stopped a crawl.
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    /// A page every crawl needs (the recent list) could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The recent list links no product.
    #[error("{url} links no /product/{{id}}: cannot tell the newest id; give --from and --to")]
    NoNewest {
        /// The list's URL.
        url: String,
    },
    /// `--from` is above `--to`.
    #[error("--from {from} is above --to {to}")]
    BadRange {
        /// First id.
        from: i64,
        /// Last id.
        to: i64,
    },
    /// A record could not be produced.
    #[error(transparent)]
    Produce(#[from] ProduceError),
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A page task panicked (a bug).
    #[error("a page task failed: {0}")]
    Task(String),
}

/// How a crawl ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The crawl's id (the `marketflow-crawl` header of its listings).
    pub crawl_id: String,
    /// First id.
    pub from_id: i64,
    /// Last id (once mode).
    pub to_id: Option<i64>,
    /// Every id below this one is done.
    pub checkpoint_id: i64,
    /// Whether it resumed an interrupted crawl.
    pub resumed: bool,
    /// Whether a signal stopped it before the end.
    pub interrupted: bool,
    /// Ids by outcome, in this process.
    pub counts: Counts,
    /// How long this process crawled.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        #[allow(clippy::cast_precision_loss)] // counts are far below 2^53
        let rate = c.listings as f64 / secs;
        write!(
            f,
            "crawl {}{}: ids {}..={}: {} listings, {} deleted, {} blocked, {} malformed, {} failed, \
             {} skipped (already produced); checkpoint {}; {:.1}s, {rate:.0} listings/s{}",
            self.crawl_id,
            if self.resumed { " (resumed)" } else { "" },
            self.from_id,
            self.to_id.map_or_else(|| "…".to_owned(), |t| t.to_string()),
            c.listings,
            c.deleted,
            c.blocked,
            c.malformed,
            c.failed,
            c.skipped,
            self.checkpoint_id,
            secs,
            if self.interrupted {
                " (stopped by a signal; run again to resume)"
            } else {
                ""
            },
        )
    }
}

/// What one page task ended with.
enum Visit {
    Produced(Delivered),
    Nothing,
}

/// What the page tasks share.
struct Ctx {
    fetcher: Arc<Fetcher>,
    pseudonymiser: Pseudonymiser,
    listings: ListingProducer,
    events: Events,
    counts: LiveCounts,
    produce_retries: ExponentialBuilder,
}

/// Crawls one marketplace into Kafka.
pub struct Crawler {
    config: Config,
    fetcher: Arc<Fetcher>,
    pseudonymiser: Pseudonymiser,
    sender: Sender,
    codec: Arc<Codec>,
    listing_limit: SendLimit,
}

impl Crawler {
    /// A crawler over `fetcher`'s marketplace, producing with `producer` through `codec`
    /// listing records within `listing_limit`.
    pub fn new(
        config: Config,
        fetcher: Fetcher,
        pseudonymiser: Pseudonymiser,
        producer: FutureProducer,
        codec: Arc<Codec>,
        listing_limit: SendLimit,
    ) -> Self {
        Self {
            sender: Sender::new(producer, &config.kafka),
            config,
            fetcher: Arc::new(fetcher),
            pseudonymiser,
            codec,
            listing_limit,
        }
    }

    /// Crawls in `mode` until done (once) or until `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`CrawlError`] when the crawl cannot go on; the `failed` event has been emitted when
    /// possible, and the checkpoint written up to where every id is done.
    pub async fn run(
        &self,
        mode: Mode,
        shutdown: CancellationToken,
    ) -> Result<Summary, CrawlError> {
        let started = Instant::now();
        let key = format!(
            "{}|{}|{}",
            mode.name(),
            self.fetcher.base_url(),
            self.config.topics.listings
        );
        let store = Store::new(
            &self.config.kafka,
            self.sender.clone(),
            &self.config.scraper.checkpoint_topic,
            &key,
        );
        let (mut checkpoint, resumed) = self.plan(mode, &store).await?;
        let counts = LiveCounts::default();
        let progress = if resumed {
            self.resume(&checkpoint, &counts).await?
        } else {
            Progress::new(checkpoint.next_id, checkpoint.scan_from.clone())
        };
        store.save(&checkpoint).await?;
        let ctx = Arc::new(self.context(mode, &checkpoint, counts));
        ctx.events.started(progress.next()).await?;
        info!(
            crawl_id = %checkpoint.crawl_id,
            mode = mode.name(),
            from = checkpoint.from_id,
            to = ?checkpoint.to_id,
            checkpoint = progress.next(),
            "Crawl started."
        );
        let scraper = &self.config.scraper;
        let mut run = Run {
            ctx: &ctx,
            store: &store,
            checkpoint: &mut checkpoint,
            progress,
            concurrency: scraper.concurrency.max(1),
            checkpoint_interval: scraper.checkpoint_interval,
            grace: scraper.shutdown_grace,
        };
        match self.crawl(mode, &mut run, &shutdown).await {
            Ok(interrupted) => run.finish(mode, interrupted, resumed, started).await,
            Err(error) => Err(run.fail(error).await),
        }
    }

    /// The progress of the unfinished crawl `checkpoint` resumes: the ids its listings show
    /// produced past the checkpoint are done (and counted as skipped).
    async fn resume(
        &self,
        checkpoint: &Checkpoint,
        counts: &LiveCounts,
    ) -> Result<Progress, CrawlError> {
        let (produced, ends) = checkpoint::recover(
            &self.config.kafka,
            &self.codec,
            &self.config.topics.listings,
            &checkpoint.crawl_id,
            checkpoint.next_id,
            &checkpoint.scan_from,
        )
        .await?;
        let mut progress = Progress::new(checkpoint.next_id, ends);
        counts.add(
            LiveCounts::SKIPPED,
            i64::try_from(produced.len()).unwrap_or(i64::MAX),
        );
        for (id, delivered) in produced {
            progress.complete(id, Some(delivered));
        }
        info!(
            crawl_id = %checkpoint.crawl_id,
            checkpoint = checkpoint.next_id,
            skipped = counts.snapshot().skipped,
            "Crawl resumed."
        );
        Ok(progress)
    }

    /// What the page tasks of the crawl `checkpoint` share: where listings and events go, and
    /// how a produce is retried.
    fn context(&self, mode: Mode, checkpoint: &Checkpoint, counts: LiveCounts) -> Ctx {
        let topics = &self.config.topics;
        let scraper = &self.config.scraper;
        let events = Events::new(
            self.sender.clone(),
            Arc::clone(&self.codec),
            &topics.scraper_events,
            ScraperEvent {
                crawl_id: checkpoint.crawl_id.clone(),
                mode: mode.name().to_owned(),
                base_url: self.fetcher.base_url().to_owned(),
                from_id: Some(checkpoint.from_id),
                to_id: checkpoint.to_id,
                ..ScraperEvent::default()
            },
        );
        Ctx {
            fetcher: Arc::clone(&self.fetcher),
            pseudonymiser: self.pseudonymiser.clone(),
            listings: ListingProducer::new(
                self.sender.clone(),
                Arc::clone(&self.codec),
                &topics.listings,
                &checkpoint.crawl_id,
                self.listing_limit,
            ),
            events,
            counts,
            produce_retries: ExponentialBuilder::default()
                .with_min_delay(scraper.min_backoff)
                .with_max_delay(scraper.max_backoff)
                .with_max_times(scraper.max_retries)
                .with_jitter(),
        }
    }

    /// Visits the ids of `mode` (with a progress line for a `--once` crawl on a terminal);
    /// whether `shutdown` cut it short.
    async fn crawl(
        &self,
        mode: Mode,
        run: &mut Run<'_>,
        shutdown: &CancellationToken,
    ) -> Result<bool, CrawlError> {
        let progress_line = match (mode, std::io::stderr().is_terminal()) {
            (Mode::Once(_), true) => Some(spawn_progress_line(
                Arc::clone(run.ctx),
                run.checkpoint.to_id.unwrap_or(0) - run.checkpoint.from_id + 1,
            )),
            _ => None,
        };
        let result = match mode {
            Mode::Once(_) => {
                let to = run.checkpoint.to_id.unwrap_or(run.checkpoint.from_id);
                run.visit_range(run.progress.next(), to, shutdown).await
            }
            Mode::Continuous => self.poll(run, shutdown).await,
        };
        if let Some(line) = progress_line {
            line.abort();
            eprintln!();
        }
        result
    }

    /// The checkpoint to go on from, and whether it resumes an unfinished crawl.
    async fn plan(&self, mode: Mode, store: &Store) -> Result<(Checkpoint, bool), CrawlError> {
        let stored = store.load().await?;
        let (from, to) = match (mode, stored) {
            (Mode::Continuous, Some(c)) => return Ok((c, true)),
            (Mode::Once(range), Some(c)) if !c.finished => {
                let same = match range {
                    Range::Window => true,
                    Range::Ids { from, to } => c.from_id == from && c.to_id == Some(to),
                };
                if same {
                    return Ok((c, true));
                }
                warn!(
                    crawl_id = %c.crawl_id,
                    from = c.from_id,
                    to = ?c.to_id,
                    checkpoint = c.next_id,
                    "An unfinished crawl of another range is abandoned for this one."
                );
                self.range(range).await?
            }
            (Mode::Once(range), _) => self.range(range).await?,
            (Mode::Continuous, None) => {
                let newest = self.newest().await?;
                let from =
                    (newest - i64::try_from(self.config.scraper.window).unwrap_or(0) + 1).max(1);
                (from, None)
            }
        };
        let scan_from =
            checkpoint::end_offsets(&self.config.kafka, &self.config.topics.listings).await?;
        Ok((
            Checkpoint {
                crawl_id: uuid::Uuid::new_v4().to_string(),
                from_id: from,
                to_id: to,
                next_id: from,
                finished: false,
                scan_from,
                updated_at: chrono::Utc::now().timestamp_millis(),
            },
            false,
        ))
    }

    async fn range(&self, range: Range) -> Result<(i64, Option<i64>), CrawlError> {
        match range {
            Range::Ids { from, to } if from > to => Err(CrawlError::BadRange { from, to }),
            Range::Ids { from, to } => Ok((from, Some(to))),
            Range::Window => {
                let newest = self.newest().await?;
                let window = i64::try_from(self.config.scraper.window).unwrap_or(i64::MAX);
                Ok(((newest - window + 1).max(1), Some(newest)))
            }
        }
    }

    /// The newest product id linked from the recent list.
    async fn newest(&self) -> Result<i64, CrawlError> {
        let page = self.fetcher.get(RECENT_PATH).await?;
        linked_ids(&page.body)
            .into_iter()
            .max()
            .ok_or_else(|| CrawlError::NoNewest {
                url: format!("{}{RECENT_PATH}", self.fetcher.base_url()),
            })
    }

    /// Continuous mode: visit new ids each `poll_interval`; returns when `shutdown` is cancelled.
    async fn poll(
        &self,
        run: &mut Run<'_>,
        shutdown: &CancellationToken,
    ) -> Result<bool, CrawlError> {
        loop {
            match self.newest().await {
                Ok(newest) if newest >= run.progress.next() => {
                    debug!(newest, checkpoint = run.progress.next(), "New ids listed.");
                    if run
                        .visit_range(run.progress.next(), newest, shutdown)
                        .await?
                    {
                        return Ok(true);
                    }
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "Cannot read the recent list; trying again later."),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(true),
                () = tokio::time::sleep(self.config.scraper.poll_interval) => {}
            }
        }
    }
}

/// One process's share of a crawl: the progress and how it is saved.
struct Run<'a> {
    ctx: &'a Arc<Ctx>,
    store: &'a Store,
    checkpoint: &'a mut Checkpoint,
    progress: Progress,
    concurrency: usize,
    checkpoint_interval: Duration,
    grace: Duration,
}

impl Run<'_> {
    /// After the crawl went through (or was `interrupted` by a signal): saves the checkpoint
    /// (finished, for a `--once` crawl that was not), emits `finished` or `stopped`, and sums
    /// up.
    async fn finish(
        &mut self,
        mode: Mode,
        interrupted: bool,
        resumed: bool,
        started: Instant,
    ) -> Result<Summary, CrawlError> {
        let finished = matches!(mode, Mode::Once(_)) && !interrupted;
        self.save(finished).await?;
        let counts = self.ctx.counts.snapshot();
        let next = self.progress.next();
        let kind = if finished { "finished" } else { "stopped" };
        self.ctx.events.ended(kind, &counts, next).await?;
        let summary = Summary {
            crawl_id: self.checkpoint.crawl_id.clone(),
            from_id: self.checkpoint.from_id,
            to_id: self.checkpoint.to_id,
            checkpoint_id: next,
            resumed,
            interrupted,
            counts,
            elapsed: started.elapsed(),
        };
        info!(
            crawl_id = %summary.crawl_id,
            listings = counts.listings,
            deleted = counts.deleted,
            blocked = counts.blocked,
            malformed = counts.malformed,
            failed = counts.failed,
            skipped = counts.skipped,
            checkpoint = next,
            "Crawl {kind}."
        );
        Ok(summary)
    }

    /// After the crawl stopped on `error`: saves the checkpoint up to where every id is done
    /// and emits `failed`, as far as they can be; `error` again.
    async fn fail(&mut self, error: CrawlError) -> CrawlError {
        let next = self.progress.next();
        if let Err(e) = self.save(false).await {
            warn!(error = %e, "Cannot write the checkpoint after a failure.");
        }
        if let Err(e) = self.ctx.events.failed(&error.to_string(), next).await {
            warn!(error = %e, "Cannot produce the failed event.");
        }
        error
    }

    async fn save(&mut self, finished: bool) -> Result<(), CheckpointError> {
        self.checkpoint.next_id = self.progress.next();
        self.checkpoint.scan_from = self.progress.scan_from();
        self.checkpoint.finished = finished;
        self.checkpoint.updated_at = chrono::Utc::now().timestamp_millis();
        self.store.save(self.checkpoint).await?;
        debug!(checkpoint = self.checkpoint.next_id, "Checkpoint written.");
        Ok(())
    }

    /// Visits `from..=to` (ids not done yet), at most `concurrency` at once. Returns whether
    /// `shutdown` cut it short.
    async fn visit_range(
        &mut self,
        from: i64,
        to: i64,
        shutdown: &CancellationToken,
    ) -> Result<bool, CrawlError> {
        let semaphore = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks: JoinSet<(i64, Result<Visit, CrawlError>)> = JoinSet::new();
        let mut last_save = Instant::now();
        let mut saved_next = self.progress.next();
        let mut failure = None;
        let mut interrupted = false;
        for id in from..=to {
            if self.progress.is_done(id) {
                continue;
            }
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => { interrupted = true; break; }
                permit = Arc::clone(&semaphore).acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            while let Some(joined) = tasks.try_join_next() {
                failure = failure.or(self.settle(joined));
            }
            if failure.is_some() {
                break;
            }
            // Before the task can produce: its listing may be acknowledged long before it is
            // settled, and the checkpoints written meanwhile must still lead to it.
            self.progress.start(id);
            let ctx = Arc::clone(self.ctx);
            tasks.spawn(async move {
                let visit = visit(&ctx, id).await;
                drop(permit);
                (id, visit)
            });
            if last_save.elapsed() >= self.checkpoint_interval && self.progress.next() != saved_next
            {
                self.save(false).await?;
                saved_next = self.progress.next();
                last_save = Instant::now();
            }
        }
        // What is in flight finishes, within the grace period once shutdown is asked for.
        let grace = self.grace;
        let failed = &mut failure;
        let drain = async {
            while let Some(joined) = tasks.join_next().await {
                let settled = self.settle(joined);
                if failed.is_none() {
                    *failed = settled;
                }
            }
        };
        if with_grace(drain, shutdown, grace).await.is_err() {
            warn!(
                in_flight = tasks.len(),
                "Grace period over; abandoning in-flight pages (a restart visits them again)."
            );
            tasks.abort_all();
            interrupted = true;
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(interrupted || shutdown.is_cancelled()),
        }
    }

    /// Records a finished task; returns its error if it ended the crawl.
    fn settle(
        &mut self,
        joined: Result<(i64, Result<Visit, CrawlError>), tokio::task::JoinError>,
    ) -> Option<CrawlError> {
        match joined {
            Ok((id, Ok(Visit::Produced(delivered)))) => self.progress.complete(id, Some(delivered)),
            Ok((id, Ok(Visit::Nothing))) => self.progress.complete(id, None),
            Ok((_, Err(error))) => return Some(error),
            Err(error) if error.is_cancelled() => {}
            Err(error) => return Some(CrawlError::Task(error.to_string())),
        }
        None
    }
}

/// Fetches, parses and (for a listing) produces one product page.
async fn visit(ctx: &Ctx, id: i64) -> Result<Visit, CrawlError> {
    let path = format!("/product/{id}");
    let url = ctx.fetcher.product_url(id);
    let outcome = match outcome_of(id, ctx.fetcher.get(&path).await, &url) {
        Ok(outcome) => outcome,
        Err(error) => return give_up(ctx, id, &error).await,
    };
    metrics::counter!(metric::scraper::OUTCOMES, "outcome" => outcome.name()).increment(1);
    match outcome {
        Outcome::Listing(page) => {
            let listing = page.into_listing(
                |raw| ctx.pseudonymiser.pseudonymise(raw),
                chrono::Utc::now().timestamp_millis(),
            );
            let produced = (|| ctx.listings.send(&listing))
                .retry(ctx.produce_retries)
                .sleep(tokio::time::sleep)
                .when(ProduceError::is_retryable)
                .notify(
                    |error, after| warn!(product_id = id, %error, ?after, "Retrying the produce."),
                )
                .await;
            let delivered = match produced {
                Ok(delivered) => delivered,
                // This listing's problem, not the crawl's: the id is failed with the cause, and
                // the checkpoint passes it.
                Err(error @ ProduceError::TooLarge { .. }) => {
                    return give_up(ctx, id, &error).await;
                }
                Err(error) => return Err(error.into()),
            };
            ctx.counts.add(LiveCounts::LISTINGS, 1);
            debug!(product_id = id, price = listing.price, "Listing produced.");
            Ok(Visit::Produced(delivered))
        }
        Outcome::Deleted => {
            ctx.counts.add(LiveCounts::DELETED, 1);
            debug!(product_id = id, "Product deleted.");
            Ok(Visit::Nothing)
        }
        Outcome::Blocked => {
            ctx.counts.add(LiveCounts::BLOCKED, 1);
            debug!(product_id = id, "Anti-bot page; nothing produced.");
            Ok(Visit::Nothing)
        }
        Outcome::Malformed { reason } => {
            ctx.counts.add(LiveCounts::MALFORMED, 1);
            debug!(product_id = id, reason, "Page malformed; nothing produced.");
            Ok(Visit::Nothing)
        }
    }
}

/// Gives product `id` up for `error`: counted failed, and its `id_failed` event emitted.
async fn give_up(
    ctx: &Ctx,
    id: i64,
    error: &(dyn std::fmt::Display + Sync),
) -> Result<Visit, CrawlError> {
    warn!(product_id = id, %error, "Product given up.");
    metrics::counter!(metric::scraper::OUTCOMES, "outcome" => "failed").increment(1);
    ctx.counts.add(LiveCounts::FAILED, 1);
    ctx.events.id_failed(id, &error.to_string()).await?;
    Ok(Visit::Nothing)
}

/// What the answer to `GET url` (product `id`) makes of the page; an error when there is no
/// page to judge (it failed, or robots.txt forbids it). A body too large, or a redirect off the
/// marketplace, is a malformed page: nothing was fetched that could be the listing asked for.
fn outcome_of(
    id: i64,
    fetched: Result<Fetched, FetchError>,
    url: &str,
) -> Result<Outcome, FetchError> {
    match fetched {
        Ok(page) => Ok(parse(id, page.status, &page.body, url)),
        Err(error) => match error.malformed_reason() {
            Some(reason) => Ok(Outcome::Malformed { reason }),
            None => Err(error),
        },
    }
}

/// A progress line on standard error, redrawn twice a second.
fn spawn_progress_line(ctx: Arc<Ctx>, total: i64) -> tokio::task::JoinHandle<()> {
    let started = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let c = ctx.counts.snapshot();
            #[allow(clippy::cast_precision_loss)] // counts are far below 2^53
            let rate = c.listings as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r{}/{total} ids: {} listings, {} deleted, {} blocked, {} malformed, {} failed ({rate:.0} listings/s)  ",
                c.total(),
                c.listings,
                c.deleted,
                c.blocked,
                c.malformed,
                c.failed,
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redirect::Refused;

    #[test]
    fn a_page_too_large_or_redirected_off_site_is_malformed_and_a_timeout_fails() {
        let url = "http://127.0.0.1:18080/product/7";
        let too_large = FetchError::TooLarge {
            url: url.into(),
            limit: 5 * 1024 * 1024,
        };
        let outcome = outcome_of(7, Err(too_large), url).unwrap();
        assert!(
            matches!(&outcome, Outcome::Malformed { reason } if reason.starts_with("too large")),
            "{outcome:?}"
        );
        let off_site = FetchError::Redirect {
            url: url.into(),
            refused: Refused::OffSite {
                location: "https://evil.example/".into(),
                origin: "http://127.0.0.1:18080".into(),
            },
        };
        let outcome = outcome_of(7, Err(off_site), url).unwrap();
        assert!(
            matches!(&outcome, Outcome::Malformed { reason } if reason.contains("evil.example")),
            "{outcome:?}"
        );
        let timeout = FetchError::Timeout {
            url: url.into(),
            timeout: Duration::from_secs(10),
        };
        assert!(matches!(
            outcome_of(7, Err(timeout), url),
            Err(FetchError::Timeout { .. })
        ));
        let gone = Fetched {
            status: 404,
            body: String::new(),
        };
        assert_eq!(outcome_of(7, Ok(gone), url).unwrap(), Outcome::Deleted);
    }
}
