//! Faults and time on a real `market` process: 429 with `Retry-After`, 500s and resets at their
//! rates with retries eventually answered, latency, a head that grows, and a graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod support;

use std::time::{Duration, Instant};

use support::Market;

const FIRST: u64 = 100_000_001;

#[tokio::test]
async fn a_429_carries_retry_after_and_a_retry_draws_again() {
    let market = Market::start(&[
        "--rate-429",
        "0.5",
        "--deleted-rate",
        "0",
        "--mismatch-rate",
        "0",
    ])
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/product/{FIRST}", market.base);
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let response = client.get(&url).send().await.unwrap();
        if response.status() == 429 {
            let retry_after = response.headers().get("retry-after").unwrap();
            assert_eq!(retry_after, "1");
        }
        statuses.push(response.status().as_u16());
    }
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        (10..=50).contains(&throttled),
        "{throttled} of 60 throttled"
    );
    assert_eq!(
        throttled + statuses.iter().filter(|&&s| s == 200).count(),
        60
    );
    // The truth is never faulted.
    for _ in 0..20 {
        assert_eq!(
            market.get(&client, &format!("/__truth/{FIRST}")).await.0,
            200
        );
    }
}

#[tokio::test]
async fn server_errors_and_resets_occur_and_retries_get_the_page() {
    let market = Market::start(&["--rate-500", "0.25", "--rate-reset", "0.25"]).await;
    let client = reqwest::Client::new();
    let (mut ok, mut errors, mut resets) = (0, 0, 0);
    for n in 0..120 {
        match client
            .get(format!("{}/product/{}", market.base, FIRST + n))
            .send()
            .await
        {
            Ok(response) if response.status() == 500 => errors += 1,
            Ok(_) => ok += 1,
            Err(_) => resets += 1,
        }
    }
    assert!(
        ok >= 30 && errors >= 10 && resets >= 10,
        "{ok} ok, {errors} 500, {resets} resets"
    );
    // Retrying one id ends with its page within a few attempts.
    let mut attempts = 0;
    let page = loop {
        attempts += 1;
        assert!(attempts <= 50, "no answer after 50 attempts");
        if let Ok(response) = client
            .get(format!("{}/product/{FIRST}", market.base))
            .send()
            .await
            && response.status() != 500
        {
            break response.text().await.unwrap();
        }
    };
    let truth = market.truth(&client, FIRST).await;
    if truth["status"] == "listing" {
        let title = truth["listing"]["title"].as_str().unwrap();
        assert!(page.contains(&serde_json::to_string(title).unwrap().replace("</", "<\\/")));
    }
}

#[tokio::test]
async fn latency_delays_each_page() {
    let market = Market::start(&["--latency", "150ms"]).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (status, _) = market.get(&client, &format!("/product/{FIRST}")).await;
    assert!(matches!(status, 200 | 404));
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn the_head_grows_with_new_per_sec() {
    let market = Market::start(&["--products", "10", "--new-per-sec", "20"]).await;
    let client = reqwest::Client::new();
    let start = market.summary(&client).await["newest_id"].as_u64().unwrap();
    assert!(start >= FIRST + 9);
    let next = start + 10;
    assert_eq!(market.truth(&client, next).await["status"], "missing");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let truth = market.truth(&client, next).await;
        if truth["status"] != "missing" {
            break;
        }
        assert!(Instant::now() < deadline, "id {next} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let newest = market.summary(&client).await["newest_id"].as_u64().unwrap();
    assert!(newest >= next);
    let (_, list) = market.get(&client, "/product/list?type=recent").await;
    let first_link = list.split("href=\"/product/").nth(1).unwrap();
    let listed: u64 = first_link.split('"').next().unwrap().parse().unwrap();
    assert!(
        listed >= next,
        "the list starts at {listed}, not at the head"
    );
}

#[tokio::test]
async fn sigterm_stops_the_market_with_status_zero() {
    let mut market = Market::start(&[]).await;
    let pid = market.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = market.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the market did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}
