//! Shared by the integration tests: a real `market` process on a free port, and a reader of its
//! pages that applies the README's rules (as the scraper's parser must).

#![allow(dead_code)] // each test crate uses a part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scraper::{Html, Selector};
use serde_json::{Value, json};

/// A `market` process, killed when dropped.
pub struct Market {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Market {
    /// Starts `market` with `args` on a free loopback port and waits until it answers.
    pub async fn start(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_market"));
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("MARKET_")) {
            command.env_remove(name);
        }
        let child = command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the market binary starts");
        let market = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", market.base)).await
                && r.status().is_success()
            {
                return market;
            }
            assert!(Instant::now() < deadline, "the market did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET path` as (status, body).
    pub async fn get(&self, client: &reqwest::Client, path: &str) -> (u16, String) {
        let response = client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// `GET /__truth/{id}` as JSON.
    pub async fn truth(&self, client: &reqwest::Client, id: u64) -> Value {
        let (status, body) = self.get(client, &format!("/__truth/{id}")).await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /__truth` as JSON.
    pub async fn summary(&self, client: &reqwest::Client) -> Value {
        let (_, body) = self.get(client, "/__truth").await;
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Market {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a page carries, read the way the README says a parser reads it.
#[derive(Debug, Default)]
pub struct Page {
    /// `<title>` text.
    pub title: String,
    /// The Product JSON-LD.
    pub product: Option<Value>,
    /// The BreadcrumbList JSON-LD.
    pub breadcrumbs: Option<Value>,
    /// The decoded flight chunks, in order.
    pub chunks: Vec<String>,
    /// The product object of the flight data.
    pub flight: Option<Value>,
}

impl Page {
    /// Reads `html`.
    pub fn parse(html: &str) -> Self {
        let document = Html::parse_document(html);
        let mut page = Page {
            title: document
                .select(&Selector::parse("title").unwrap())
                .next()
                .map(|t| t.text().collect())
                .unwrap_or_default(),
            ..Page::default()
        };
        for script in
            document.select(&Selector::parse("script[type=\"application/ld+json\"]").unwrap())
        {
            let text: String = script.text().collect();
            let value: Value = serde_json::from_str(&text).expect("JSON-LD is JSON");
            match value["@type"].as_str() {
                Some("Product") => page.product = Some(value),
                Some("BreadcrumbList") => page.breadcrumbs = Some(value),
                other => panic!("unexpected JSON-LD type {other:?}"),
            }
        }
        for script in document.select(&Selector::parse("script:not([type])").unwrap()) {
            let text: String = script.text().collect();
            let Some(array) = text
                .strip_prefix("self.__next_f.push(")
                .and_then(|t| t.strip_suffix(')'))
            else {
                continue;
            };
            let array: Value = serde_json::from_str(array).expect("a flight push is JSON");
            page.chunks
                .push(array[1].as_str().expect("a string chunk").to_owned());
        }
        let joined = page.chunks.concat();
        if let Some(at) = joined.find("{\"productSeq\"") {
            let mut values = serde_json::Deserializer::from_str(&joined[at..]).into_iter::<Value>();
            page.flight = Some(values.next().unwrap().expect("the flight object is JSON"));
        }
        page
    }

    /// Whether the flight object lies across two chunks.
    pub fn flight_is_split(&self) -> bool {
        self.flight.is_some()
            && !self
                .chunks
                .iter()
                .any(|c| c.contains("\"productSeq\"") && c.contains("\"locationName\""))
    }

    /// The single offer, and whether `offers` was an array.
    pub fn offer(&self) -> (Value, bool) {
        let offers = &self.product.as_ref().unwrap()["offers"];
        match offers {
            Value::Array(items) => {
                assert_eq!(items.len(), 1);
                (items[0].clone(), true)
            }
            _ => (offers.clone(), false),
        }
    }

    /// The listing (without `scraped_at`) a correct parser makes of this page, per the README.
    pub fn listing(&self, source_url: &str) -> Value {
        let product = self.product.as_ref().unwrap();
        let (offer, _) = self.offer();
        let flight = self.flight.clone().unwrap_or(Value::Null);
        let price = match &offer["price"] {
            Value::Number(n) => json!(n.as_i64().unwrap()),
            Value::String(s) => json!(s.parse::<i64>().unwrap()),
            Value::Null => flight["productPrice"].clone(),
            other => panic!("price {other}"),
        };
        let condition = match offer["itemCondition"].as_str() {
            Some("https://schema.org/NewCondition") => "new",
            Some("https://schema.org/UsedCondition") => "used",
            None => "unknown",
            other => panic!("condition {other:?}"),
        };
        let sale_status = match flight["productStatus"].as_i64() {
            Some(0) => "on_sale",
            Some(1) => "reserved",
            Some(3) => "sold",
            None => "unknown",
            other => panic!("status {other:?}"),
        };
        let names: Vec<String> = self.breadcrumbs.as_ref().unwrap()["itemListElement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["item"]["name"].as_str().unwrap().to_owned())
            .collect();
        let seller = match (&flight["storeSeq"], &product["seller"]["name"]) {
            (Value::Number(n), _) => json!(n.to_string()),
            (_, Value::String(name)) => json!(name),
            _ => Value::Null,
        };
        let posted_at = flight["sortDate"].as_str().map(|d| {
            chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_millis()
                - 9 * 3_600_000
        });
        json!({
            "product_id": product["sku"].as_str().unwrap().parse::<i64>().unwrap(),
            "title": product["name"],
            "price": price,
            "condition": condition,
            "sale_status": sale_status,
            "category_path": names.join(" > "),
            "category_level1": names.first(),
            "category_level2": names.get(1),
            "category_level3": names.get(2),
            "category_level4": names.get(3),
            "description": product["description"],
            "seller": seller,
            "location": flight["locationName"],
            "view_count": flight["viewCount"],
            "wish_count": flight["wishCount"],
            "chat_count": flight["chatCount"],
            "image_urls": product["image"],
            "posted_at": posted_at,
            "source_url": source_url,
        })
    }
}
