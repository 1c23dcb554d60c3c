//! The hostile-input suite of the scraper: a marketplace served from this test (axum on a free
//! port) whose robots.txt is 1.5 MiB of garbage with `Crawl-delay: 1e30`, and whose 480 product
//! pages are half good (hostile strings in every field, missing fields, reached through a
//! same-site redirect, trickled slowly) and half hostile: bodies over `scraper.max_page_bytes`
//! (announced or streamed), redirect loops, redirects off the site or to paths robots.txt
//! disallows, broken, nested and lying JSON-LD, pages that stall or are cut off, 500s, a 418, and
//! pages whose listing is too large for Kafka. The real `scraper --once` crawls them: it finishes
//! without a panic, every good page's listing is on the topic exactly once and exactly as the
//! page states it, every bad page is reported for its id with its cause, and its memory stayed
//! bounded. A robots.txt over the page cap is read only to its first 500 KiB (RFC 9309's parse
//! limit) and the crawl goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use marketflow_core::record::Listing;
use marketflow_core::testkit::Cluster;
use marketflow_core::testkit::hostile::{FOUR_BYTE, METACHARACTERS, Rng};
use marketflow_core::testkit::memory::{MemoryWatch, mib};
use serde_json::{Value, json};
use support::{KEY, Topics, pseudonym, read_events, read_listings};
use tokio_util::sync::CancellationToken;

/// The first product id crawled.
const FIRST: i64 = 500_000_001;

/// Product pages crawled: every other one hostile.
const PAGES: i64 = 480;

/// `scraper.max_page_bytes` in this test: over the ~1.4 MiB of a page whose listing is too large
/// for Kafka, under the huge bodies.
const MAX_PAGE_BYTES: usize = 2 << 20;

/// `scraper.request_timeout`: a stalled page outlives it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The scraper's resident set must stay under this: 16 pages in flight of at most 2 MiB each, the
/// DOM of the two being parsed (one per worker thread; ~10x a page's size), the producer's
/// buffers; an unbounded body would need the 3 MiB of each huge page and more.
const RSS_BOUND: u64 = 256 << 20;

/// Past this the memory watch kills the scraper.
const RSS_CEILING: u64 = 1 << 30;

/// What a product page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Page {
    /// JSON-LD Product and BreadcrumbList with hostile strings in every field.
    Good,
    /// The same, reached through a redirect within the site.
    GoodRedirected,
    /// A Product with a name only (and a broken JSON-LD block before it).
    GoodMinimal,
    /// A good page in an `@graph`, sent in slow chunks (within the timeout).
    GoodSlow,
    /// A 3 MiB body with a Content-Length.
    HugeAnnounced,
    /// A 3 MiB body streamed without a Content-Length.
    HugeStreamed,
    /// Redirects to itself, forever.
    RedirectLoop,
    /// Redirects to another host (`localhost` instead of `127.0.0.1`).
    RedirectOffHost,
    /// Redirects to another site.
    RedirectOffSite,
    /// Redirects to a path robots.txt disallows.
    RedirectDisallowed,
    /// JSON-LD cut off mid-object: no Product data.
    BrokenJsonLd,
    /// JSON-LD nested 100,000 arrays deep.
    NestedJsonLd,
    /// Binary garbage (invalid UTF-8) with status 200.
    GarbageBody,
    /// A Product whose sku names another product.
    SkuMismatch,
    /// A price that is not a number.
    PriceNotNumber,
    /// A negative price.
    PriceNegative,
    /// A price of 1e300.
    PriceHuge,
    /// A Product without a name (and no og:title).
    NoTitle,
    /// Headers, then nothing until long after the timeout.
    Stalled,
    /// Half a body, then the connection is cut.
    Truncated,
    /// 500, every time.
    ServerError,
    /// 418.
    Teapot,
    /// A good page whose listing (a 1.4 MiB description) is over the brokers' message size.
    ListingTooLarge,
}

/// How the scraper must report a page.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    /// Its listing on the topic.
    Listed,
    /// An `id_failed` event whose cause contains this.
    Failed(&'static str),
    /// Counted malformed, logged with a reason containing this.
    Malformed(&'static str),
    /// Counted deleted (no Product data).
    Deleted,
}

const BAD: [Page; 19] = [
    Page::HugeAnnounced,
    Page::HugeStreamed,
    Page::RedirectLoop,
    Page::RedirectOffHost,
    Page::RedirectOffSite,
    Page::RedirectDisallowed,
    Page::BrokenJsonLd,
    Page::NestedJsonLd,
    Page::GarbageBody,
    Page::SkuMismatch,
    Page::PriceNotNumber,
    Page::PriceNegative,
    Page::PriceHuge,
    Page::NoTitle,
    Page::Stalled,
    Page::Truncated,
    Page::ServerError,
    Page::Teapot,
    Page::ListingTooLarge,
];

const GOOD: [Page; 4] = [
    Page::Good,
    Page::GoodRedirected,
    Page::GoodMinimal,
    Page::GoodSlow,
];

impl Page {
    fn of(id: i64) -> Self {
        let i = usize::try_from(id - FIRST).unwrap();
        if i % 2 == 0 {
            GOOD[(i / 2) % GOOD.len()]
        } else {
            BAD[(i / 2) % BAD.len()]
        }
    }

    fn report(self) -> Report {
        match self {
            Self::Good | Self::GoodRedirected | Self::GoodMinimal | Self::GoodSlow => {
                Report::Listed
            }
            Self::HugeAnnounced | Self::HugeStreamed => Report::Malformed("too large"),
            Self::RedirectLoop => Report::Malformed("more than 5 times"),
            Self::RedirectOffHost | Self::RedirectOffSite => {
                Report::Malformed("off the marketplace")
            }
            Self::RedirectDisallowed => Report::Failed("robots.txt"),
            Self::BrokenJsonLd | Self::NestedJsonLd | Self::GarbageBody => Report::Deleted,
            Self::SkuMismatch => Report::Malformed("differs from the requested id"),
            Self::PriceNotNumber | Self::PriceHuge => Report::Malformed("offer price"),
            Self::PriceNegative => Report::Malformed("negative price"),
            Self::NoTitle => Report::Malformed("no title"),
            Self::Stalled => Report::Failed("timed out"),
            Self::Truncated => Report::Failed("GET"),
            Self::ServerError => Report::Failed("answered 500"),
            Self::Teapot => Report::Malformed("unexpected HTTP status 418"),
            Self::ListingTooLarge => Report::Failed("bytes"),
        }
    }
}

/// Hostile text for `field` of product `id`.
fn text(field: &str, id: i64) -> String {
    match id % 3 {
        0 => format!("{field} {id} {FOUR_BYTE} {METACHARACTERS}"),
        1 => format!("{METACHARACTERS}{field}{FOUR_BYTE}{id}"),
        _ => format!("`{field}`;--{id}/*{FOUR_BYTE}*/ <b>&amp;</b>"),
    }
}

/// What a good page states, as the listing the scraper must make of it (`scraped_at` 0), and the
/// raw seller.
fn truth(id: i64, base: &str) -> (Listing, Option<String>) {
    let page = Page::of(id);
    let source_url = format!("{base}/product/{id}");
    if page == Page::GoodMinimal {
        let listing = Listing {
            product_id: id,
            title: text("title", id),
            condition: "unknown".into(),
            sale_status: "unknown".into(),
            source_url,
            ..Listing::default()
        };
        return (listing, None);
    }
    let categories = [text("c1", id), text("c2", id), format!("도서 {id}")];
    let description = if page == Page::ListingTooLarge {
        let mut rng = Rng::new(u64::try_from(id).unwrap());
        let alphabet: Vec<char> = "가나다라마바사아자차카타파하abcdefghij🍎𠀀"
            .chars()
            .collect();
        (0..600_000)
            .map(|_| alphabet[usize::try_from(rng.below(alphabet.len() as u64)).unwrap()])
            .collect()
    } else {
        text("description", id)
    };
    let listing = Listing {
        product_id: id,
        title: text("title", id),
        price: Some((id % 7) * 250_000),
        condition: "used".into(),
        sale_status: "unknown".into(),
        category_path: Some(categories.join(" > ")),
        category_level1: Some(categories[0].clone()),
        category_level2: Some(categories[1].clone()),
        category_level3: Some(categories[2].clone()),
        category_level4: None,
        description,
        seller: None,
        location: None,
        view_count: None,
        wish_count: None,
        chat_count: None,
        image_urls: vec![format!("https://img.example/{id}/{}.jpg", text("img", id))],
        posted_at: None,
        scraped_at: 0,
        source_url,
    };
    (listing, Some(text("seller", id)))
}

/// JSON for a `<script>`: nothing in it can end the script.
fn script_json(value: &Value) -> String {
    value.to_string().replace('<', "\\u003c")
}

fn ld(value: &Value) -> String {
    format!(
        r#"<script type="application/ld+json">{}</script>"#,
        script_json(value)
    )
}

/// The Product and BreadcrumbList of product `id` as JSON-LD.
fn product_ld(id: i64, base: &str) -> (Value, Value) {
    let (listing, seller) = truth(id, base);
    let breadcrumb = json!({
        "@type": "BreadcrumbList",
        "itemListElement": [
            {"@type": "ListItem", "position": 2, "item": {"name": listing.category_level2}},
            {"@type": "ListItem", "position": 1, "name": listing.category_level1},
            {"@type": "ListItem", "position": 3, "name": listing.category_level3},
        ],
    });
    let product = json!({
        "@context": "https://schema.org",
        "@type": "Product",
        "sku": id.to_string(),
        "name": listing.title,
        "description": listing.description,
        "image": listing.image_urls,
        "seller": {"@type": "Person", "name": seller},
        "offers": {
            "@type": "Offer",
            "price": listing.price,
            "priceCurrency": "KRW",
            "itemCondition": "https://schema.org/UsedCondition",
        },
    });
    (product, breadcrumb)
}

fn html(head: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title>{head}</head>\
         <body>{body}</body></html>",
        "중고나라 &lt;script&gt;"
    )
}

/// The marketplace: its base URL and what it serves.
struct Site {
    base: String,
    robots: String,
}

fn page_response(status: StatusCode, content: impl Into<Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        content.into(),
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

/// A body of `chunks`, `pause` apart, then (when `cut`) a broken connection.
fn trickle(chunks: Vec<Vec<u8>>, pause: Duration, cut: bool) -> Body {
    let stream = futures::stream::unfold(
        (chunks.into_iter(), false),
        move |(mut rest, done)| async move {
            if done {
                return None;
            }
            match rest.next() {
                Some(chunk) => {
                    tokio::time::sleep(pause).await;
                    Some((Ok::<_, std::io::Error>(chunk), (rest, false)))
                }
                None if cut => Some((Err(std::io::Error::other("cut off")), (rest, true))),
                None => None,
            }
        },
    );
    Body::from_stream(stream)
}

async fn robots(State(site): State<Arc<Site>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], site.robots.clone()).into_response()
}

/// A good page of product `id` (the target of a same-site redirect too).
async fn good(State(site): State<Arc<Site>>, Path(id): Path<i64>) -> Response {
    page_response(StatusCode::OK, good_page(id, &site.base))
}

fn good_page(id: i64, base: &str) -> String {
    let (product, breadcrumb) = product_ld(id, base);
    html(
        &format!(
            "<meta property=\"og:title\" content=\"og {id}\">{}{}",
            ld(&product),
            ld(&breadcrumb)
        ),
        "<p>상품</p>",
    )
}

async fn product(State(site): State<Arc<Site>>, Path(id): Path<i64>) -> Response {
    let base = &site.base;
    let port = base.rsplit(':').next().unwrap_or_default();
    let (product, breadcrumb) = product_ld(id, base);
    let with = |product: Value| html(&format!("{}{}", ld(&product), ld(&breadcrumb)), "");
    let huge = || {
        let line = format!("<p>{}</p>\n", text("padding", id));
        line.repeat(3 * (1 << 20) / line.len() + 1)
    };
    match Page::of(id) {
        Page::Good | Page::ListingTooLarge => page_response(StatusCode::OK, good_page(id, base)),
        Page::GoodRedirected => redirect(&format!("/p/{id}")),
        Page::GoodMinimal => {
            let (listing, _) = truth(id, base);
            let minimal = json!({"@type": "Product", "name": listing.title});
            let broken =
                r#"<script type="application/ld+json">{"@type": "Product", "name": </script>"#;
            page_response(
                StatusCode::OK,
                html(&format!("{broken}{}", ld(&minimal)), ""),
            )
        }
        Page::GoodSlow => {
            let graph = json!({"@context": "https://schema.org", "@graph": [product, breadcrumb]});
            let page = html(&ld(&graph), "").into_bytes();
            let chunks = page
                .chunks(page.len() / 5 + 1)
                .map(<[u8]>::to_vec)
                .collect();
            page_response(
                StatusCode::OK,
                trickle(chunks, Duration::from_millis(100), false),
            )
        }
        Page::HugeAnnounced => page_response(StatusCode::OK, huge()),
        Page::HugeStreamed => {
            let body = huge().into_bytes();
            let chunks = body.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
            page_response(StatusCode::OK, trickle(chunks, Duration::ZERO, false))
        }
        Page::RedirectLoop => redirect(&format!("/loop/{id}/0")),
        Page::RedirectOffHost => redirect(&format!("http://localhost:{port}/p/{id}")),
        Page::RedirectOffSite => redirect(&format!("https://evil.example/product/{id}")),
        Page::RedirectDisallowed => redirect(&format!("/private/{id}")),
        Page::BrokenJsonLd => page_response(
            StatusCode::OK,
            html(
                &format!(
                    r#"<script type="application/ld+json">{{"@type": "Product", "sku": "{id}", "name": "cut</script>"#
                ),
                "",
            ),
        ),
        Page::NestedJsonLd => {
            let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
            page_response(
                StatusCode::OK,
                html(
                    &format!(r#"<script type="application/ld+json">{nested}</script>"#),
                    "",
                ),
            )
        }
        Page::GarbageBody => {
            let mut rng = Rng::new(u64::try_from(id).unwrap());
            let bytes: Vec<u8> = (0..4096)
                .map(|_| rng.next_u64().to_le_bytes()[0] | 0x80)
                .collect();
            page_response(StatusCode::OK, bytes)
        }
        Page::SkuMismatch => {
            let mut p = product;
            p["sku"] = json!(id + 1);
            page_response(StatusCode::OK, with(p))
        }
        Page::PriceNotNumber => {
            let mut p = product;
            p["offers"]["price"] = json!("12abc'; --");
            page_response(StatusCode::OK, with(p))
        }
        Page::PriceNegative => {
            let mut p = product;
            p["offers"]["price"] = json!(-5);
            page_response(StatusCode::OK, with(p))
        }
        Page::PriceHuge => {
            let mut p = product;
            p["offers"]["price"] = json!(1e300);
            page_response(StatusCode::OK, with(p))
        }
        Page::NoTitle => {
            let mut p = product;
            p["name"] = json!({"@value": "not a string"});
            page_response(StatusCode::OK, with(p))
        }
        Page::Stalled => {
            let chunks = vec![b"<html>".to_vec(), b"</html>".to_vec()];
            page_response(
                StatusCode::OK,
                trickle(chunks, Duration::from_secs(30), false),
            )
        }
        Page::Truncated => {
            let page = good_page(id, base).into_bytes();
            let half = page[..page.len() / 2].to_vec();
            page_response(StatusCode::OK, trickle(vec![half], Duration::ZERO, true))
        }
        Page::ServerError => page_response(StatusCode::INTERNAL_SERVER_ERROR, "oops"),
        Page::Teapot => page_response(StatusCode::IM_A_TEAPOT, good_page(id, base)),
    }
}

async fn redirect_loop(Path((id, n)): Path<(i64, u64)>) -> Response {
    redirect(&format!("/loop/{id}/{}", n + 1))
}

/// What robots.txt forbids: only for this test to see it is never fetched.
async fn private(Path(id): Path<i64>) -> Response {
    eprintln!("/private/{id} was fetched although robots.txt disallows it");
    page_response(StatusCode::OK, format!("private {id}"))
}

/// robots.txt: `size` bytes of garbage, rules for other crawlers, and for everyone a disallowed
/// `/private/` and a `Crawl-delay` of 1e30 after unparsable ones.
fn hostile_robots(size: usize) -> String {
    let mut rng = Rng::new(7);
    let mut text = String::from(
        "\u{feff}# robots.txt of a hostile site\nUser-agent: evilbot\nDisallow: /\nCrawl-delay: 1e30\n\n\
         User-agent: *\nAllow: /product/\nDisallow: /private/\nDisallow: /*.pdf$\n\
         Crawl-delay: abc\nCrawl-delay: NaN\nCrawl-delay: -5\nCrawl-delay: inf\nCrawl-delay: 1e30\n\n",
    );
    text.push_str(&format!("Disallow: /{}\n", "a".repeat(100_000)));
    while text.len() < size {
        match rng.below(4) {
            0 => text.push_str("no colon here at all, just words \u{0}\u{7}\n"),
            1 => text.push_str(&format!("X-Unknown-{}: {FOUR_BYTE}\n", rng.below(1000))),
            2 => text.push_str("User-agent: otherbot\nDisallow: /*/*/*/*/*$\n"),
            _ => {
                let garbage: String = (0..80)
                    .map(|_| char::from(b'!' + u8::try_from(rng.below(90)).unwrap()))
                    .filter(|c| *c != ':')
                    .collect();
                text.push_str(&garbage);
                text.push('\n');
            }
        }
    }
    text
}

/// Serves `site` on a free port, on a runtime of its own, until `stop`.
fn serve(robots_txt: String, stop: CancellationToken) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let site = Arc::new(Site {
        base: base.clone(),
        robots: robots_txt,
    });
    let app = Router::new()
        .route("/robots.txt", get(robots))
        .route("/product/{id}", get(product))
        .route("/p/{id}", get(good))
        .route("/loop/{id}/{n}", get(redirect_loop))
        .route("/private/{id}", get(private))
        .with_state(site);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                served = axum::serve(listener, app) => served.unwrap(),
                () = stop.cancelled() => {}
            }
        });
        runtime.shutdown_background();
    });
    base
}

/// The `scraper --once` command over `FIRST..FIRST + PAGES` of `base` into `topics`.
fn crawl(base: &str, topics: &Topics) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scraper"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("MARKETFLOW__SCRAPER__")) {
        command.env_remove(name);
    }
    command
        .args([
            "--once",
            "--from",
            &FIRST.to_string(),
            "--to",
            &(FIRST + PAGES - 1).to_string(),
        ])
        .env("MARKETFLOW__SCRAPER__BASE_URL", base)
        .env("MARKETFLOW__SCRAPER__SELLER_HMAC_KEY", KEY)
        .env("MARKETFLOW__SCRAPER__ADMIN_ADDR", "127.0.0.1:0")
        .env("MARKETFLOW__SCRAPER__CONCURRENCY", "16")
        .env("MARKETFLOW__SCRAPER__MIN_BACKOFF", "20ms")
        .env("MARKETFLOW__SCRAPER__MAX_BACKOFF", "200ms")
        .env("MARKETFLOW__SCRAPER__MAX_RETRIES", "2")
        .env("MARKETFLOW__SCRAPER__MAX_CRAWL_DELAY", "1ms")
        .env(
            "MARKETFLOW__SCRAPER__REQUEST_TIMEOUT",
            format!("{}ms", REQUEST_TIMEOUT.as_millis()),
        )
        .env(
            "MARKETFLOW__SCRAPER__MAX_PAGE_BYTES",
            MAX_PAGE_BYTES.to_string(),
        )
        .env("MARKETFLOW__TOPICS__LISTINGS", &topics.listings)
        .env("MARKETFLOW__TOPICS__SCRAPER_EVENTS", &topics.events)
        .env("MARKETFLOW__SCRAPER__CHECKPOINT_TOPIC", &topics.checkpoints)
        .env("MARKETFLOW__TELEMETRY__FORMAT", "json")
        .env("RUST_LOG", "warn,marketflow_scraper::crawl=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` to its end under a memory watch; returns its exit status, stdout, stderr and
/// peak RSS.
async fn run_watched(
    mut command: Command,
) -> (std::process::ExitStatus, String, String, u64, bool) {
    tokio::task::spawn_blocking(move || {
        let child = command.spawn().unwrap();
        let watch = MemoryWatch::start(child.id(), RSS_CEILING);
        let output = child.wait_with_output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
            watch.peak(),
            watch.killed(),
        )
    })
    .await
    .unwrap()
}

/// The JSON log lines of `stderr` with `message`, as `product_id → the line`.
fn logged(stderr: &str, message: &str) -> BTreeMap<i64, Value> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .filter_map(|line| Some((line["product_id"].as_i64()?, line)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn hostile_pages_are_each_reported_and_every_good_listing_arrives_exactly_once() {
    let cluster = Cluster::require().await;
    let topics = Topics::new(&cluster).await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let robots = hostile_robots(3 << 19);
    let base = serve(robots, stop);

    let (status, stdout, stderr, peak, killed) = run_watched(crawl(&base, &topics)).await;
    let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
    assert!(
        !killed,
        "the scraper was killed by the memory watch (over 1 GiB)"
    );
    assert!(
        !stderr.contains("panicked"),
        "the scraper panicked: {tail:?}"
    );
    assert!(
        status.success(),
        "the crawl failed ({status}): {stdout}\n{tail:?}"
    );
    assert!(
        stderr.contains("Crawl-delay is out of range"),
        "Crawl-delay: 1e30 was not reported as clamped"
    );
    assert!(!stderr.contains("was fetched although robots.txt disallows it"));

    // Every good page's listing, once, exactly as the page states it.
    let records = read_listings(&cluster.config, &topics.listings).await;
    let mut listed: BTreeMap<i64, Vec<Listing>> = BTreeMap::new();
    for record in records {
        listed
            .entry(record.listing.product_id)
            .or_default()
            .push(record.listing);
    }
    let events = read_events(&cluster.config, &topics.events).await;
    let failed: BTreeMap<i64, String> = events
        .iter()
        .filter(|e| e.kind == "id_failed")
        .filter_map(|e| Some((e.product_id?, e.cause.clone().unwrap_or_default())))
        .collect();
    let malformed = logged(&stderr, "Page malformed; nothing produced.");
    let deleted = logged(&stderr, "Product deleted.");

    let mut wrong = Vec::new();
    let mut expected_counts: BTreeMap<&str, i64> = BTreeMap::new();
    let mut pages: BTreeMap<Page, usize> = BTreeMap::new();
    for id in FIRST..FIRST + PAGES {
        let page = Page::of(id);
        *pages.entry(page).or_default() += 1;
        let report = page.report();
        let listings = listed.get(&id).map_or(0, Vec::len);
        let ok = match &report {
            Report::Listed => {
                *expected_counts.entry("listings").or_default() += 1;
                let (mut want, seller) = truth(id, &base);
                want.seller = seller.as_deref().map(pseudonym);
                match listed.get(&id).map(Vec::as_slice) {
                    Some([got]) => {
                        let mut got = got.clone();
                        got.scraped_at = 0;
                        got == want
                    }
                    _ => false,
                }
            }
            Report::Failed(cause) => {
                *expected_counts.entry("failed").or_default() += 1;
                listings == 0
                    && failed
                        .get(&id)
                        .is_some_and(|c| c.to_lowercase().contains(&cause.to_lowercase()))
            }
            Report::Malformed(reason) => {
                *expected_counts.entry("malformed").or_default() += 1;
                listings == 0
                    && malformed
                        .get(&id)
                        .and_then(|l| l["reason"].as_str())
                        .is_some_and(|r| r.contains(reason))
            }
            Report::Deleted => {
                *expected_counts.entry("deleted").or_default() += 1;
                listings == 0 && deleted.contains_key(&id)
            }
        };
        if !ok {
            wrong.push(format!(
                "{id} ({page:?}, expected {report:?}): {listings} listings, failed: {:?}, \
                 malformed: {:?}, deleted: {}",
                failed.get(&id),
                malformed.get(&id).map(|l| l["reason"].clone()),
                deleted.contains_key(&id)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {PAGES} pages not reported as expected; the first:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The finished event counts the same.
    let finished = events
        .iter()
        .find(|e| e.kind == "finished")
        .expect("no finished event");
    let counted = [
        ("listings", finished.listings),
        ("failed", finished.failed),
        ("malformed", finished.malformed),
        ("deleted", finished.deleted),
    ];
    for (name, count) in counted {
        assert_eq!(
            count.unwrap_or(0),
            expected_counts.get(name).copied().unwrap_or(0),
            "finished event: {name}"
        );
    }
    assert_eq!(finished.blocked, Some(0));
    let bad = PAGES - expected_counts["listings"];
    eprintln!(
        "{PAGES} pages ({bad} hostile) crawled: {expected_counts:?}; pages by kind: {pages:?}; \
         scraper peak RSS {:.1} MiB (VmHWM; bound {} MiB)",
        mib(peak),
        RSS_BOUND >> 20
    );
    assert!(
        peak < RSS_BOUND,
        "the scraper's peak RSS {:.1} MiB is over {} MiB",
        mib(peak),
        RSS_BOUND >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn a_robots_txt_over_the_page_cap_is_read_to_its_parse_limit_and_the_crawl_goes_on() {
    let cluster = Cluster::require().await;
    let topics = Topics::new(&cluster).await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let base = serve(hostile_robots(MAX_PAGE_BYTES + (1 << 20)), stop);

    let (status, _, stderr, peak, killed) = run_watched(crawl(&base, &topics)).await;
    assert!(!killed, "the scraper was killed by the memory watch");
    assert!(
        !stderr.contains("panicked"),
        "the scraper panicked: {stderr}"
    );
    assert!(status.success(), "the crawl failed ({status}): {stderr}");
    assert!(
        stderr.contains("parse limit") && stderr.contains("robots.txt"),
        "no warning that robots.txt was read only to its parse limit: {stderr}"
    );
    // The rules in the first 500 KiB hold: /private/ is never fetched.
    assert!(!stderr.contains("was fetched although robots.txt disallows it"));
    assert!(
        !read_listings(&cluster.config, &topics.listings)
            .await
            .is_empty()
    );
    eprintln!(
        "robots.txt over the cap: {status}; peak RSS {:.1} MiB",
        mib(peak)
    );
}
