//! Fetching pages from the marketplace: one shared HTTP client, the global rate limit, a timeout
//! per request, robots.txt, bodies read up to `scraper.max_page_bytes`, redirects followed only
//! within the marketplace ([`crate::redirect`]), and retries with exponential backoff and jitter
//! on timeouts, connection errors, 429 (after its `Retry-After`) and 5xx.

use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use marketflow_core::config::ScraperConfig;
use marketflow_core::metric;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tracing::{debug, info, warn};

use crate::redirect::{self, Refused};
use crate::robots::Robots;
use crate::throttle::RateLimiter;

/// What failed fetching a page.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request took longer than `scraper.request_timeout`. Retryable.
    #[error("GET {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The connection failed or was closed without an answer. Retryable.
    #[error("GET {url} failed before an answer: {detail}")]
    Connection {
        /// The URL.
        url: String,
        /// What the HTTP client said.
        detail: String,
    },
    /// The server answered 429 or 5xx. Retryable (after `retry_after` when it gave one).
    #[error("GET {url} answered {status}")]
    Unavailable {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The server's `Retry-After`, capped at `scraper.max_backoff`.
        retry_after: Option<Duration>,
    },
    /// robots.txt disallows the path for our User-Agent. Fatal.
    #[error("robots.txt of {base_url} disallows {path} for this crawler; not fetching it")]
    Disallowed {
        /// The marketplace.
        base_url: String,
        /// The path refused.
        path: String,
    },
    /// The body is larger than `scraper.max_page_bytes`; it was not read past that. Fatal: the
    /// page is malformed.
    #[error(
        "GET {url}: the body is larger than {limit} bytes (scraper.max_page_bytes); not reading it"
    )]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The server redirected where this crawler does not go (see [`crate::redirect`]); the
    /// target was not fetched. Fatal: the page is malformed.
    #[error("GET {url} redirected {refused}; not following it")]
    Redirect {
        /// The URL.
        url: String,
        /// Why the redirect was not followed.
        refused: Refused,
    },
    /// The HTTP client could not be built or the request not formed. Fatal.
    #[error("cannot request {url}: {detail}")]
    Client {
        /// The URL.
        url: String,
        /// What the HTTP client said.
        detail: String,
    },
}

impl FetchError {
    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Connection { .. } | Self::Unavailable { .. }
        )
    }

    /// A short name of the cause, for the retries metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Connection { .. } => "connection",
            Self::Unavailable { status: 429, .. } => "429",
            Self::Unavailable { .. } => "5xx",
            Self::Disallowed { .. } => "robots",
            Self::TooLarge { .. } => "too_large",
            Self::Redirect { .. } => "redirect",
            Self::Client { .. } => "client",
        }
    }

    /// Why the page is malformed, when the error says what the page is (too large, redirected
    /// off the marketplace) rather than that it could not be had.
    pub fn malformed_reason(&self) -> Option<String> {
        match self {
            Self::TooLarge { limit, .. } => Some(format!(
                "too large: the body is over {limit} bytes (scraper.max_page_bytes)"
            )),
            Self::Redirect { refused, .. } => Some(format!("redirected {refused}")),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How much of robots.txt is read and parsed: RFC 9309 (section 2.5) lets a crawler stop there,
/// and asks that the limit be at least 500 KiB. The rest of a longer file is ignored, so a huge
/// robots.txt neither holds memory nor stops the crawl.
pub const ROBOTS_PARSE_LIMIT: u64 = 500 * 1024;

/// How much of a body is read.
#[derive(Debug, Clone, Copy)]
enum Cap {
    /// At most this many bytes (`scraper.max_page_bytes`): a longer body is
    /// [`FetchError::TooLarge`].
    Refuse(u64),
    /// At most this many bytes; the rest is not read (robots.txt).
    Truncate(u64),
}

impl Cap {
    fn bytes(self) -> u64 {
        match self {
            Self::Refuse(bytes) | Self::Truncate(bytes) => bytes,
        }
    }
}

/// An answer worth parsing: a 2xx, 403 or 404 (other 4xx too), with its body.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// Fetches pages of one marketplace politely.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    base_url: String,
    timeout: Duration,
    max_page_bytes: u64,
    max_backoff: Duration,
    backoff: ExponentialBuilder,
    limiter: RateLimiter,
    robots: Robots,
}

impl Fetcher {
    /// A fetcher for `config.base_url`; reads its robots.txt first, and lowers the rate to the
    /// `Crawl-delay` it asks for (at most `max_crawl_delay`).
    ///
    /// # Errors
    /// [`FetchError`] when the client cannot be built or robots.txt cannot be read (after
    /// retries): the marketplace is down or the base URL wrong.
    pub async fn new(config: &ScraperConfig) -> Result<Self, FetchError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let origin = Url::parse(&base_url).map_err(|e| FetchError::Client {
            url: base_url.clone(),
            detail: format!("scraper.base_url is not a URL: {e}"),
        })?;
        let client = http_client(config, &origin, None)?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_max_times(config.max_retries)
            .with_jitter();
        let mut fetcher = Self {
            client,
            base_url,
            timeout: config.request_timeout,
            max_page_bytes: config.max_page_bytes,
            max_backoff: config.max_backoff,
            backoff,
            limiter: RateLimiter::new(config.max_requests_per_sec),
            robots: Robots::allow_all(),
        };
        let robots = fetcher.read_robots(&config.user_agent).await?;
        let mut per_sec = config.max_requests_per_sec;
        if let Some(delay) = robots.crawl_delay(config.max_crawl_delay) {
            if delay.clamped {
                warn!(
                    asked = delay.asked,
                    honoured = ?delay.honoured,
                    "robots.txt's Crawl-delay is out of range; honouring a delay within \
                     0..=scraper.max_crawl_delay instead."
                );
            }
            if !delay.honoured.is_zero() {
                let asked = 1.0 / delay.honoured.as_secs_f64();
                if per_sec <= 0.0 || asked < per_sec {
                    info!(
                        crawl_delay = ?delay.honoured,
                        max_requests_per_sec = asked,
                        "Rate lowered to robots.txt's Crawl-delay."
                    );
                    per_sec = asked;
                }
            }
        }
        fetcher.limiter = RateLimiter::new(per_sec);
        // Redirects from now on are checked against robots.txt too.
        fetcher.client = http_client(config, &origin, Some(robots.clone()))?;
        fetcher.robots = robots;
        Ok(fetcher)
    }

    /// The marketplace's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of product `id`'s page.
    pub fn product_url(&self, id: i64) -> String {
        format!("{}/product/{id}", self.base_url)
    }

    /// Whether robots.txt lets us fetch `path`.
    pub fn allows(&self, path: &str) -> bool {
        self.robots.allows(path)
    }

    async fn read_robots(&self, user_agent: &str) -> Result<Robots, FetchError> {
        let fetched = self
            .get_with_retries("/robots.txt", Cap::Truncate(ROBOTS_PARSE_LIMIT))
            .await;
        let robots = match fetched {
            Ok(page) if (200..300).contains(&page.status) => Robots::parse(&page.body, user_agent),
            Ok(page) => {
                debug!(
                    status = page.status,
                    "No robots.txt; everything is allowed."
                );
                Robots::allow_all()
            }
            Err(FetchError::Unavailable { status, url, .. }) if status >= 500 => {
                warn!(%url, status, "robots.txt unavailable; treating everything as disallowed.");
                Robots::disallow_all()
            }
            Err(e) => return Err(e),
        };
        Ok(robots)
    }

    /// GETs `path` (below the base URL), honouring robots.txt, the rate limit and the retry
    /// policy.
    ///
    /// # Errors
    /// The last [`FetchError`] once retries are exhausted, or at once when it is not retryable.
    pub async fn get(&self, path: &str) -> Result<Fetched, FetchError> {
        if !self.robots.allows(path) {
            return Err(FetchError::Disallowed {
                base_url: self.base_url.clone(),
                path: path.to_owned(),
            });
        }
        self.get_with_retries(path, Cap::Refuse(self.max_page_bytes))
            .await
    }

    async fn get_with_retries(&self, path: &str, cap: Cap) -> Result<Fetched, FetchError> {
        let url = format!("{}{path}", self.base_url);
        let max_backoff = self.max_backoff;
        (|| async {
            self.limiter.acquire().await;
            self.get_once(&url, cap).await
        })
        .retry(self.backoff)
        .sleep(tokio::time::sleep)
        .when(FetchError::is_retryable)
        .adjust(move |error, backoff| next_delay(error, backoff, max_backoff))
        .notify(|error, after| {
            metrics::counter!(metric::scraper::RETRIES, "reason" => error.reason()).increment(1);
            debug!(%error, ?after, "Retrying.");
        })
        .await
    }

    async fn get_once(&self, url: &str, cap: Cap) -> Result<Fetched, FetchError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| self.classify(url, &e))?;
        let status = response.status();
        metrics::counter!(metric::scraper::PAGES_FETCHED, "status" => status_label(status))
            .increment(1);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(FetchError::Unavailable {
                url: url.to_owned(),
                status: status.as_u16(),
                retry_after: retry_after(response.headers(), SystemTime::now()),
            });
        }
        let body = self.read_body(url, response, cap).await?;
        Ok(Fetched {
            status: status.as_u16(),
            body,
        })
    }

    /// The body, read chunk by chunk up to the cap: whatever the server sends (or claims in
    /// Content-Length), one body holds at most that much memory. Past [`Cap::Refuse`]'s limit the
    /// page is given up; past [`Cap::Truncate`]'s, the rest is not read and the last, cut line is
    /// left out.
    async fn read_body(
        &self,
        url: &str,
        mut response: reqwest::Response,
        cap: Cap,
    ) -> Result<String, FetchError> {
        let too_large = |limit| FetchError::TooLarge {
            url: url.to_owned(),
            limit,
        };
        let announced = response.content_length();
        if let Cap::Refuse(limit) = cap
            && announced.is_some_and(|length| length > limit)
        {
            return Err(too_large(limit));
        }
        let limit = usize::try_from(cap.bytes()).unwrap_or(usize::MAX);
        let capacity = usize::try_from(announced.unwrap_or(0)).unwrap_or(0);
        let mut body = Vec::with_capacity(capacity.min(limit));
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(url, &e))? {
            if body.len() + chunk.len() <= limit {
                body.extend_from_slice(&chunk);
                continue;
            }
            match cap {
                Cap::Refuse(limit) => return Err(too_large(limit)),
                Cap::Truncate(_) => {
                    body.extend_from_slice(&chunk[..limit - body.len()]);
                    let whole_lines = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    body.truncate(whole_lines);
                    warn!(
                        %url,
                        limit,
                        "Body over the parse limit; reading only its first {limit} bytes."
                    );
                    break;
                }
            }
        }
        Ok(String::from_utf8(body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn classify(&self, url: &str, error: &reqwest::Error) -> FetchError {
        if let Some(refused) = redirect::refusal(error) {
            return match refused {
                Refused::Disallowed { path } => FetchError::Disallowed {
                    base_url: self.base_url.clone(),
                    path: path.clone(),
                },
                refused => FetchError::Redirect {
                    url: url.to_owned(),
                    refused: refused.clone(),
                },
            };
        }
        if error.is_timeout() {
            metrics::counter!(metric::scraper::PAGES_FETCHED, "status" => "timeout").increment(1);
            FetchError::Timeout {
                url: url.to_owned(),
                timeout: self.timeout,
            }
        } else if error.is_builder() {
            FetchError::Client {
                url: url.to_owned(),
                detail: error.to_string(),
            }
        } else {
            metrics::counter!(metric::scraper::PAGES_FETCHED, "status" => "error").increment(1);
            let mut detail = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                detail = format!("{detail}: {cause}");
                source = cause.source();
            }
            FetchError::Connection {
                url: url.to_owned(),
                detail,
            }
        }
    }
}

/// The HTTP client: the User-Agent, the timeouts, and redirects followed only where
/// [`redirect::check`] allows.
fn http_client(
    config: &ScraperConfig,
    origin: &Url,
    robots: Option<Robots>,
) -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .user_agent(&config.user_agent)
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .pool_max_idle_per_host(config.concurrency.max(1))
        .redirect(redirect::policy(origin.clone(), robots))
        .build()
        .map_err(|e| FetchError::Client {
            url: origin.to_string(),
            detail: e.to_string(),
        })
}

/// The wait before the next try: the server's `Retry-After` (capped at `max_backoff`) replaces
/// the exponential backoff, but only while retries remain (`backoff` is `None` once they are
/// exhausted).
fn next_delay(
    error: &FetchError,
    backoff: Option<Duration>,
    max_backoff: Duration,
) -> Option<Duration> {
    backoff.map(|b| error.retry_after().map_or(b, |r| r.min(max_backoff)))
}

/// A metric label for a status: the common ones by number, the rest by class.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        403 => "403",
        404 => "404",
        429 => "429",
        500 => "500",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// `Retry-After` as seconds or as an HTTP date (relative to `now`).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The product ids linked from a listing page (`/product/{id}` links, relative or absolute).
pub fn linked_ids(html: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for (at, _) in html.match_indices("/product/") {
        let digits: String = html[at + "/product/".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(id) = digits.parse::<i64>() {
            ids.push(id);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, SystemTime::now()), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_secs(3))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
    }

    #[test]
    fn which_errors_are_retried() {
        let unavailable = |status| FetchError::Unavailable {
            url: "u".into(),
            status,
            retry_after: None,
        };
        assert!(unavailable(429).is_retryable());
        assert!(unavailable(503).is_retryable());
        assert_eq!(unavailable(429).reason(), "429");
        assert!(
            !FetchError::Disallowed {
                base_url: "b".into(),
                path: "/p".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn retry_after_replaces_the_backoff_while_retries_remain() {
        let limited = FetchError::Unavailable {
            url: "u".into(),
            status: 429,
            retry_after: Some(Duration::from_secs(1)),
        };
        let max = Duration::from_secs(30);
        let backoff = Some(Duration::from_millis(100));
        assert_eq!(
            next_delay(&limited, backoff, max),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            next_delay(&limited, backoff, Duration::from_millis(300)),
            Some(Duration::from_millis(300))
        );
        assert_eq!(next_delay(&limited, None, max), None);
        let timeout = FetchError::Timeout {
            url: "u".into(),
            timeout: max,
        };
        assert_eq!(next_delay(&timeout, backoff, max), backoff);
    }

    /// A server on a free port answering `script[n]` to the n-th product request (the last
    /// one from then on), `robots` to robots.txt; returns its base URL and the request count.
    async fn server(
        robots: &'static str,
        script: Vec<(u16, Option<&'static str>)>,
    ) -> (String, Arc<AtomicUsize>) {
        use axum::http::{HeaderValue, StatusCode, header};
        use axum::response::IntoResponse;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new()
            .route(
                "/robots.txt",
                axum::routing::get(move || async move { robots }),
            )
            .route(
                "/product/{id}",
                axum::routing::get(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let (status, retry_after) = script[n.min(script.len() - 1)];
                    async move {
                        let mut response =
                            (StatusCode::from_u16(status).unwrap(), "page").into_response();
                        if let Some(after) = retry_after {
                            response
                                .headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
                        }
                        response
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), hits)
    }

    fn config(base_url: &str, max_retries: usize) -> ScraperConfig {
        ScraperConfig {
            base_url: base_url.to_owned(),
            max_retries,
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
            ..ScraperConfig::default()
        }
    }

    #[tokio::test]
    async fn a_429_with_retry_after_and_a_500_are_retried_until_the_page_comes() {
        let script = vec![(429, Some("1")), (500, None), (200, None)];
        let (base, hits) = server("User-agent: *\nAllow: /\n", script).await;
        let fetcher = Fetcher::new(&config(&base, 5)).await.unwrap();
        let page = fetcher.get("/product/1").await.unwrap();
        assert_eq!((page.status, page.body.as_str()), (200, "page"));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn after_max_retries_the_last_error_is_returned() {
        let (base, hits) = server("", vec![(503, None)]).await;
        let fetcher = Fetcher::new(&config(&base, 3)).await.unwrap();
        let error = fetcher.get("/product/1").await.unwrap_err();
        assert!(
            matches!(error, FetchError::Unavailable { status: 503, .. }),
            "{error}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 4, "one try and three retries");
    }

    #[tokio::test]
    async fn a_404_is_an_answer_not_an_error() {
        let (base, hits) = server("", vec![(404, None)]).await;
        let fetcher = Fetcher::new(&config(&base, 3)).await.unwrap();
        assert_eq!(fetcher.get("/product/1").await.unwrap().status, 404);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn paths_robots_txt_disallows_are_never_requested() {
        let (base, hits) = server("User-agent: *\nDisallow: /product/\n", vec![(200, None)]).await;
        let fetcher = Fetcher::new(&config(&base, 3)).await.unwrap();
        let error = fetcher.get("/product/1").await.unwrap_err();
        assert!(matches!(error, FetchError::Disallowed { .. }), "{error}");
        assert!(!error.is_retryable());
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    /// `head`, then comment lines up to `ROBOTS_PARSE_LIMIT - before_limit` bytes, then `tail`.
    fn long_robots(head: &str, before_limit: usize, tail: &str) -> &'static str {
        let limit = usize::try_from(ROBOTS_PARSE_LIMIT).unwrap();
        let mut text = head.to_owned();
        while text.len() + 10 <= limit - before_limit {
            text.push_str("# filler\n");
        }
        text.push_str(&"#".repeat(limit - before_limit - text.len() - 1));
        text.push('\n');
        text.push_str(tail);
        text.push_str(&"# more\n".repeat(200_000));
        Box::leak(text.into_boxed_str())
    }

    #[tokio::test]
    async fn a_robots_txt_over_the_page_cap_is_read_to_the_parse_limit_and_the_rest_ignored() {
        let robots = long_robots(
            "User-agent: *\nDisallow: /product/\n",
            0,
            "User-agent: *\nAllow: /product/\n",
        );
        assert!(robots.len() > 1 << 20);
        let (base, hits) = server(robots, vec![(200, None)]).await;
        let config = ScraperConfig {
            max_page_bytes: 100_000,
            ..config(&base, 1)
        };
        let fetcher = Fetcher::new(&config).await.unwrap();
        let error = fetcher.get("/product/1").await.unwrap_err();
        assert!(matches!(error, FetchError::Disallowed { .. }), "{error}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_rule_cut_by_the_parse_limit_is_left_out_not_shortened() {
        // Cut at the limit, "Disallow: /product/1" would read "Disallow: /product/".
        let robots = long_robots("User-agent: *\n", 19, "Disallow: /product/1\n");
        let (base, hits) = server(robots, vec![(200, None)]).await;
        let fetcher = Fetcher::new(&config(&base, 1)).await.unwrap();
        assert_eq!(fetcher.get("/product/2").await.unwrap().status, 200);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn ids_linked_from_the_recent_list() {
        let html = r#"<a href="/product/17">a</a><a href="https://web.joongna.com/product/123?x=1">b</a><a href="/product/list">c</a>"#;
        assert_eq!(linked_ids(html), vec![17, 123]);
    }

    /// A marketplace on a free port whose pages misbehave: `/product/1` redirects to `elsewhere`,
    /// `/product/2` to a path robots.txt disallows, `/product/3` sends 8 MiB without a
    /// Content-Length, `/product/4` sends 6 MiB and then never ends, `/product/5` announces
    /// 6 MiB. Returns its base URL and the count of requests to the disallowed path.
    async fn hostile_market(elsewhere: String) -> (String, Arc<AtomicUsize>) {
        use axum::body::Body;
        use axum::response::Redirect;
        use axum::routing::get;
        use futures::StreamExt;
        const MIB: usize = 1024 * 1024;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new()
            .route(
                "/robots.txt",
                get(|| async { "User-agent: *\nDisallow: /private\nCrawl-delay: 1e30\n" }),
            )
            .route(
                "/product/1",
                get(move || async move { Redirect::temporary(&format!("{elsewhere}/product/1")) }),
            )
            .route(
                "/product/2",
                get(|| async { Redirect::temporary("/private/2") }),
            )
            .route(
                "/private/{id}",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { "private" }
                }),
            )
            .route(
                "/product/3",
                get(|| async {
                    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'x'; MIB / 8]));
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/product/4",
                get(|| async {
                    let first =
                        futures::stream::iter([Ok::<_, std::io::Error>(vec![b'x'; 6 * MIB])]);
                    Body::from_stream(first.chain(futures::stream::pending()))
                }),
            )
            .route("/product/5", get(|| async { vec![b'x'; 6 * MIB] }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), hits)
    }

    /// Another host (`localhost` on another port), counting the requests it gets.
    async fn elsewhere() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "another host's page" }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://localhost:{port}"), hits)
    }

    async fn hostile_fetcher() -> (Fetcher, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (other, other_hits) = elsewhere().await;
        let (base, private_hits) = hostile_market(other).await;
        let config = ScraperConfig {
            request_timeout: Duration::from_secs(3),
            max_page_bytes: 5 * 1024 * 1024,
            ..config(&base, 0)
        };
        (
            Fetcher::new(&config).await.unwrap(),
            other_hits,
            private_hits,
        )
    }

    #[tokio::test]
    async fn a_crawl_delay_of_1e30_slows_to_the_longest_delay_honoured() {
        let (fetcher, ..) = hostile_fetcher().await;
        assert_eq!(fetcher.limiter.interval(), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_redirect_off_the_marketplace_is_refused_without_fetching_it() {
        let (mut fetcher, other_hits, _) = hostile_fetcher().await;
        fetcher.limiter = RateLimiter::new(0.0);
        let result = fetcher.get("/product/1").await;
        assert_eq!(other_hits.load(Ordering::SeqCst), 0, "{result:?}");
        let error = result.unwrap_err();
        assert!(
            matches!(&error, FetchError::Redirect { refused: Refused::OffSite { location, .. }, .. }
                if location.starts_with("http://localhost:")),
            "{error}"
        );
        assert!(!error.is_retryable());
        assert!(error.malformed_reason().is_some(), "{error}");
    }

    #[tokio::test]
    async fn a_redirect_to_a_path_robots_txt_disallows_is_refused() {
        let (mut fetcher, _, private_hits) = hostile_fetcher().await;
        fetcher.limiter = RateLimiter::new(0.0);
        let result = fetcher.get("/product/2").await;
        assert_eq!(private_hits.load(Ordering::SeqCst), 0, "{result:?}");
        assert!(
            matches!(&result, Err(FetchError::Disallowed { path, .. }) if path == "/private/2"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_body_over_max_page_bytes_is_too_large_with_or_without_a_length() {
        let (mut fetcher, ..) = hostile_fetcher().await;
        fetcher.limiter = RateLimiter::new(0.0);
        for path in ["/product/3", "/product/5"] {
            let result = fetcher.get(path).await;
            let read = result.as_ref().map(|page| page.body.len());
            assert!(
                matches!(
                    result,
                    Err(FetchError::TooLarge {
                        limit: 5_242_880,
                        ..
                    })
                ),
                "{path}: read {read:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_endless_body_is_given_up_at_the_cap_not_at_the_timeout() {
        let (mut fetcher, ..) = hostile_fetcher().await;
        fetcher.limiter = RateLimiter::new(0.0);
        let started = std::time::Instant::now();
        let error = fetcher.get("/product/4").await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { .. }), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
