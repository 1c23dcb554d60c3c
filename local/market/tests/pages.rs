//! The pages of a real `market` process: every shape of the contract occurs, each listing page
//! agrees with `/__truth`, and the same seed serves the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::collections::BTreeMap;

use futures::StreamExt;
use support::{Market, Page};

const FIRST: u64 = 100_000_001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shape_occurs_and_each_listing_agrees_with_the_truth() {
    let products = 1_500;
    let market = Market::start(&[
        "--seed",
        "7",
        "--products",
        &products.to_string(),
        "--captcha-rate",
        "0.03",
    ])
    .await;
    let client = reqwest::Client::new();
    let shapes: Vec<Vec<&'static str>> = futures::stream::iter(FIRST..FIRST + products)
        .map(|id| {
            let (market, client) = (&market, &client);
            async move { shapes_of(market, client, id).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut counts = BTreeMap::<&str, usize>::new();
    for shape in shapes.into_iter().flatten() {
        *counts.entry(shape).or_default() += 1;
    }
    for shape in [
        "listing",
        "offers object",
        "offers array",
        "price number",
        "price string",
        "no price",
        "price above 1,000,000",
        "3 levels",
        "4 levels",
        "flight whole",
        "flight split",
        "no flight",
        "new",
        "used",
        "no condition",
        "on_sale",
        "reserved",
        "sold",
        "seller in JSON-LD",
        "deleted 404",
        "deleted 200",
        "blocked 200",
        "blocked 403",
        "sku mismatch",
    ] {
        assert!(counts.contains_key(shape), "no {shape} page in {counts:?}");
    }
    let no_flight = counts["no flight"] as f64 / counts["listing"] as f64;
    assert!(
        (0.02..0.09).contains(&no_flight),
        "{no_flight} without flight data"
    );
}

/// Fetches `id`'s page and truth, checks they agree, and names the shapes the page has.
async fn shapes_of(market: &Market, client: &reqwest::Client, id: u64) -> Vec<&'static str> {
    let truth = market.truth(client, id).await;
    let (status, html) = market.get(client, &format!("/product/{id}")).await;
    let page = Page::parse(&html);
    let mut shapes = Vec::new();
    match truth["status"].as_str().unwrap() {
        "listing" => {
            assert_eq!(status, 200, "id {id}");
            let source_url = format!("{}/product/{id}", market.base);
            assert_eq!(page.listing(&source_url), truth["listing"], "id {id}");
            assert!(page.title.ends_with(" | 중고나라"));
            shapes.push("listing");
            let (offer, array) = page.offer();
            shapes.push(if array {
                "offers array"
            } else {
                "offers object"
            });
            shapes.push(match &offer["price"] {
                serde_json::Value::Number(_) => "price number",
                serde_json::Value::String(_) => "price string",
                _ => "no price",
            });
            if truth["listing"]["price"]
                .as_i64()
                .is_some_and(|p| p > 1_000_000)
            {
                shapes.push("price above 1,000,000");
            }
            shapes.push(match truth["listing"]["category_level4"].is_null() {
                true => "3 levels",
                false => "4 levels",
            });
            shapes.push(match (&page.flight, page.flight_is_split()) {
                (None, _) => "no flight",
                (Some(_), true) => "flight split",
                (Some(_), false) => "flight whole",
            });
            shapes.push(match truth["listing"]["condition"].as_str().unwrap() {
                "new" => "new",
                "used" => "used",
                _ => "no condition",
            });
            if let Some(status) = page.flight.as_ref().map(|f| f["productStatus"].as_i64()) {
                shapes.push(match status {
                    Some(0) => "on_sale",
                    Some(1) => "reserved",
                    _ => "sold",
                });
            }
            if page.product.as_ref().unwrap().get("seller").is_some() {
                shapes.push("seller in JSON-LD");
            }
        }
        "deleted" => {
            assert!(page.product.is_none() && page.flight.is_none(), "id {id}");
            if status == 404 {
                shapes.push("deleted 404");
            } else {
                assert_eq!(status, 200);
                assert!(html.contains("삭제된 상품입니다"), "id {id}");
                shapes.push("deleted 200");
            }
        }
        "blocked" => {
            assert_eq!(page.title, "Just a moment...", "id {id}");
            assert!(page.product.is_none() && page.breadcrumbs.is_none() && page.chunks.is_empty());
            assert!(html.contains("<form"), "id {id}");
            shapes.push(if status == 403 {
                "blocked 403"
            } else {
                "blocked 200"
            });
        }
        "sku_mismatch" => {
            assert_eq!(status, 200);
            assert!(truth["listing"].is_null());
            let sku = page.product.as_ref().unwrap()["sku"].as_str().unwrap();
            assert_ne!(sku, id.to_string(), "id {id}");
            if let Some(flight) = &page.flight {
                assert_eq!(flight["productSeq"].to_string(), sku);
            }
            shapes.push("sku mismatch");
        }
        other => panic!("id {id} in range has status {other}"),
    }
    shapes
}

#[tokio::test]
async fn the_same_seed_serves_the_same_bytes_and_another_seed_others() {
    let a = Market::start(&["--seed", "11", "--products", "200"]).await;
    let b = Market::start(&["--seed", "11", "--products", "200"]).await;
    let c = Market::start(&["--seed", "12", "--products", "200"]).await;
    let client = reqwest::Client::new();
    let mut differ = 0;
    for id in FIRST..FIRST + 40 {
        let path = format!("/product/{id}");
        let page = a.get(&client, &path).await;
        assert_eq!(page, b.get(&client, &path).await, "id {id}");
        differ += usize::from(page != c.get(&client, &path).await);
        let truth = a.truth(&client, id).await.to_string();
        let same = b
            .truth(&client, id)
            .await
            .to_string()
            .replace(&b.base, &a.base);
        assert_eq!(truth, same, "id {id}");
    }
    assert!(
        differ > 30,
        "only {differ} of 40 pages differ between seeds"
    );
    let list = "/product/list?type=recent";
    assert_eq!(a.get(&client, list).await, b.get(&client, list).await);
}

#[tokio::test]
async fn the_recent_list_robots_and_the_summary_follow_the_contract() {
    let market = Market::start(&["--products", "120", "--first-id", "5000"]).await;
    let client = reqwest::Client::new();
    let summary = market.summary(&client).await;
    assert_eq!(
        summary,
        serde_json::json!({"first_id": 5000, "newest_id": 5119, "products": 120, "seed": 42})
    );
    let (status, list) = market.get(&client, "/product/list?type=recent").await;
    assert_eq!(status, 200);
    let document = scraper::Html::parse_document(&list);
    let links: Vec<String> = document
        .select(&scraper::Selector::parse("a[href^=\"/product/\"]").unwrap())
        .map(|a| a.value().attr("href").unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (5070..=5119)
        .rev()
        .map(|id| format!("/product/{id}"))
        .collect();
    assert_eq!(links, expected);
    let (status, robots) = market.get(&client, "/robots.txt").await;
    assert_eq!(status, 200);
    assert!(robots.contains("User-agent: *") && robots.contains("Disallow: /__truth"));
    for id in [4999, 5120, 9_999_999] {
        assert_eq!(market.get(&client, &format!("/product/{id}")).await.0, 404);
        assert_eq!(market.truth(&client, id).await["status"], "missing");
    }
    assert_eq!(market.get(&client, "/product/abc").await.0, 404);
}
