//! Reading one product page into a typed outcome: a listing, or why there is none (deleted,
//! blocked, malformed). JSON-LD comes first; the Next.js flight data and the og tags fill in what
//! it lacks.

use std::fmt;

use chrono::NaiveDate;
use marketflow_core::record::Listing;
use scraper::{Html, Selector};
use serde_json::{Map, Value};

/// What one product page turned out to be. Only [`Outcome::Listing`] becomes a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A product page that parsed into a listing.
    Listing(Box<Page>),
    /// The product is gone: 404, or a page without Product data.
    Deleted,
    /// An anti-bot (captcha / challenge) page.
    Blocked,
    /// A page that cannot be trusted to be the listing asked for.
    Malformed {
        /// Why, e.g. `sku 12 differs from the requested id 13`.
        reason: String,
    },
}

impl Outcome {
    /// A short, stable name, for metrics labels and counts.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Listing(_) => "listing",
            Self::Deleted => "deleted",
            Self::Blocked => "blocked",
            Self::Malformed { .. } => "malformed",
        }
    }
}

/// The raw seller identity as the page shows it (store id, else nickname). It never leaves the
/// process: [`Page::into_listing`] pseudonymises it, and `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct RawSeller(String);

impl RawSeller {
    /// The raw identity, for the pseudonymiser only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RawSeller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSeller(<redacted>)")
    }
}

/// A parsed listing page: the record (its `seller` still empty and `scraped_at` 0) and the raw
/// seller the record's pseudonym is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Every field but `seller` and `scraped_at`.
    pub listing: Listing,
    /// The seller as the page names it.
    pub seller: Option<RawSeller>,
}

impl Page {
    /// The record: the seller replaced by `pseudonymise(raw)`, stamped with `scraped_at`.
    pub fn into_listing(self, pseudonymise: impl Fn(&str) -> String, scraped_at: i64) -> Listing {
        Listing {
            seller: self.seller.map(|raw| pseudonymise(raw.expose())),
            scraped_at,
            ..self.listing
        }
    }
}

/// Parses the answer to `GET {source_url}` (product `requested_id`) with HTTP status `status`.
/// Statuses the fetcher retries (429, 5xx) are not expected here.
pub fn parse(requested_id: i64, status: u16, body: &str, source_url: &str) -> Outcome {
    if status == 404 || status == 410 {
        return Outcome::Deleted;
    }
    if !(200..300).contains(&status) && status != 403 {
        return Outcome::Malformed {
            reason: format!("unexpected HTTP status {status}"),
        };
    }
    let doc = Html::parse_document(body);
    let selectors = Selectors::get();
    let ld = json_ld(&doc, selectors);
    let product = ld.iter().find(|v| has_type(v, "Product"));
    let Some(product) = product else {
        if status == 403 || looks_blocked(&doc, selectors, body) {
            return Outcome::Blocked;
        }
        return Outcome::Deleted;
    };
    if status == 403 {
        return Outcome::Blocked;
    }
    let breadcrumb = ld.iter().find(|v| has_type(v, "BreadcrumbList"));
    let flight = flight_data(&doc, selectors);
    let og = OgTags::read(&doc, selectors);
    match build(
        requested_id,
        source_url,
        product,
        breadcrumb,
        flight.as_ref(),
        &og,
    ) {
        Ok(page) => Outcome::Listing(Box::new(page)),
        Err(reason) => Outcome::Malformed { reason },
    }
}

/// The CSS selectors, parsed once per process.
struct Selectors {
    ld_json: Selector,
    script: Selector,
    meta: Selector,
    title: Selector,
}

impl Selectors {
    fn get() -> &'static Self {
        static SELECTORS: std::sync::OnceLock<Selectors> = std::sync::OnceLock::new();
        SELECTORS.get_or_init(|| Self {
            ld_json: selector(r#"script[type="application/ld+json"]"#),
            script: selector("script"),
            meta: selector("meta[property]"),
            title: selector("title"),
        })
    }
}

/// A selector written in this file; they are constants, checked by the unit tests.
fn selector(css: &str) -> Selector {
    // Proven invariant: every selector above is a literal that parses (the tests run them all).
    #[allow(clippy::expect_used)]
    Selector::parse(css).expect("a constant CSS selector parses")
}

/// Every JSON-LD object on the page, arrays and `@graph`s flattened.
fn json_ld(doc: &Html, selectors: &Selectors) -> Vec<Value> {
    let mut out = Vec::new();
    for script in doc.select(&selectors.ld_json) {
        let text: String = script.text().collect();
        let Ok(value) = serde_json::from_str::<Value>(text.trim()) else {
            continue;
        };
        flatten(value, &mut out);
    }
    out
}

fn flatten(value: Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.into_iter().for_each(|v| flatten(v, out)),
        Value::Object(mut map) => {
            if let Some(graph) = map.remove("@graph") {
                flatten(graph, out);
            }
            out.push(Value::Object(map));
        }
        _ => {}
    }
}

fn has_type(value: &Value, wanted: &str) -> bool {
    match value.get("@type") {
        Some(Value::String(t)) => t == wanted,
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some(wanted)),
        _ => false,
    }
}

/// A Cloudflare-style challenge or a captcha form.
fn looks_blocked(doc: &Html, selectors: &Selectors, body: &str) -> bool {
    let title: String = doc
        .select(&selectors.title)
        .next()
        .map(|t| t.text().collect())
        .unwrap_or_default();
    if title.contains("Just a moment") || title.contains("Attention Required") {
        return true;
    }
    let lower = body.to_ascii_lowercase();
    ["captcha", "challenge-platform", "cf-chl", "cf-turnstile"]
        .iter()
        .any(|marker| lower.contains(marker))
}

/// The `og:*` meta tags the parser falls back on.
#[derive(Debug, Default)]
struct OgTags {
    title: Option<String>,
    description: Option<String>,
    image: Option<String>,
}

impl OgTags {
    fn read(doc: &Html, selectors: &Selectors) -> Self {
        let mut og = Self::default();
        for meta in doc.select(&selectors.meta) {
            let (Some(property), Some(content)) =
                (meta.value().attr("property"), meta.value().attr("content"))
            else {
                continue;
            };
            let slot = match property {
                "og:title" => &mut og.title,
                "og:description" => &mut og.description,
                "og:image" => &mut og.image,
                _ => continue,
            };
            slot.get_or_insert_with(|| content.to_owned());
        }
        og
    }
}

/// Marker of the Next.js flight chunks: `self.__next_f.push([1,"..."])`.
const FLIGHT_PUSH: &str = "self.__next_f.push(";

/// The product object inside the flight data: the chunks decoded and concatenated in order, then
/// the JSON object holding `productSeq` (it may span two chunks).
fn flight_data(doc: &Html, selectors: &Selectors) -> Option<Map<String, Value>> {
    let mut text = String::new();
    for script in doc.select(&selectors.script) {
        let content: String = script.text().collect();
        let content = content.trim();
        let Some(rest) = content.strip_prefix(FLIGHT_PUSH) else {
            continue;
        };
        let args = rest.trim_end_matches(';').trim_end();
        let Some(args) = args.strip_suffix(')') else {
            continue;
        };
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(args)
            && let [Value::Number(kind), Value::String(chunk), ..] = items.as_slice()
            && kind.as_i64() == Some(1)
        {
            text.push_str(chunk);
        }
    }
    find_product_object(&text)
}

/// The first JSON object in `text` that has a `productSeq` key of its own.
fn find_product_object(text: &str) -> Option<Map<String, Value>> {
    const KEY: &str = "\"productSeq\"";
    const MAX_CANDIDATES: usize = 64;
    for (at, _) in text.match_indices(KEY) {
        let opens = text[..at].rmatch_indices('{').take(MAX_CANDIDATES);
        for (start, _) in opens {
            let mut stream =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
            if let Some(Ok(Value::Object(map))) = stream.next()
                && map.contains_key("productSeq")
            {
                return Some(map);
            }
        }
    }
    None
}

/// An integer from a JSON number (integral) or a string of digits (commas allowed).
fn integer(value: &Value) -> Result<Option<i64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    // Integral and well inside i64: the cast is exact.
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(Some(f as i64))
                }
                _ => Err(format!("{n} is not an integer")),
            }
        }
        Value::String(s) => {
            let digits: String = s.trim().chars().filter(|c| *c != ',').collect();
            if digits.is_empty() {
                return Ok(None);
            }
            digits
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("{s:?} is not an integer"))
        }
        other => Err(format!("{other} is not an integer")),
    }
}

fn string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Assembles the listing, or says why the page is not the listing asked for.
fn build(
    requested_id: i64,
    source_url: &str,
    product: &Value,
    breadcrumb: Option<&Value>,
    flight: Option<&Map<String, Value>>,
    og: &OgTags,
) -> Result<Page, String> {
    let fl = |key: &str| flight.and_then(|f| f.get(key)).filter(|v| !v.is_null());
    check_ids(requested_id, product, fl("productSeq"))?;
    let title = string(product.get("name"))
        .or_else(|| string(fl("productTitle")))
        .or_else(|| og.title.clone())
        .ok_or_else(|| "no title (Product name, productTitle or og:title)".to_owned())?;
    let description = string(product.get("description"))
        .or_else(|| string(fl("productDescription")))
        .or_else(|| og.description.clone())
        .unwrap_or_default();
    let (price, condition) = offer(product, fl("productPrice"))?;
    let sale_status = match fl("productStatus").map(integer) {
        Some(Ok(Some(0))) => "on_sale",
        Some(Ok(Some(1))) => "reserved",
        Some(Ok(Some(3))) => "sold",
        _ => "unknown",
    };
    let categories = breadcrumb.map(categories).unwrap_or_default();
    let level = |n: usize| categories.get(n).cloned();
    let count = |key: &str| -> Result<Option<i64>, String> {
        fl(key)
            .map(integer)
            .transpose()
            .map(Option::flatten)
            .map_err(|e| format!("{key}: {e}"))
    };
    let posted_at = match fl("sortDate").and_then(Value::as_str) {
        Some(date) => Some(kst_millis(date).ok_or_else(|| format!("sortDate {date:?}"))?),
        None => None,
    };
    Ok(Page {
        listing: Listing {
            product_id: requested_id,
            title,
            price,
            condition: condition.to_owned(),
            sale_status: sale_status.to_owned(),
            category_path: (!categories.is_empty()).then(|| categories.join(" > ")),
            category_level1: level(0),
            category_level2: level(1),
            category_level3: level(2),
            category_level4: level(3),
            description,
            seller: None,
            location: string(fl("locationName")),
            view_count: count("viewCount")?,
            wish_count: count("wishCount")?,
            chat_count: count("chatCount")?,
            image_urls: image_urls(product, og),
            posted_at,
            scraped_at: 0,
            source_url: source_url.to_owned(),
        },
        seller: seller(product, fl("storeSeq")),
    })
}

/// Refuses a page whose product (`sku`, or the flight data's `productSeq`) is another id than
/// the one asked for: a redirect or a mix-up, not this listing.
fn check_ids(requested_id: i64, product: &Value, seq: Option<&Value>) -> Result<(), String> {
    for (what, value) in [("sku", product.get("sku")), ("productSeq", seq)] {
        if let Some(value) = value {
            let id = integer(value).map_err(|e| format!("{what}: {e}"))?;
            if let Some(id) = id
                && id != requested_id
            {
                return Err(format!(
                    "{what} {id} differs from the requested id {requested_id}"
                ));
            }
        }
    }
    Ok(())
}

/// The price (the first offer's, else the flight data's `productPrice`; never negative) and
/// the condition the offer states.
fn offer(
    product: &Value,
    product_price: Option<&Value>,
) -> Result<(Option<i64>, &'static str), String> {
    let offer = match product.get("offers") {
        Some(Value::Array(offers)) => offers.first(),
        Some(offer @ Value::Object(_)) => Some(offer),
        _ => None,
    };
    let mut price = match offer.and_then(|o| o.get("price")) {
        Some(p) => integer(p).map_err(|e| format!("offer price: {e}"))?,
        None => None,
    };
    if price.is_none()
        && let Some(p) = product_price
    {
        price = integer(p).map_err(|e| format!("productPrice: {e}"))?;
    }
    if let Some(p) = price
        && p < 0
    {
        return Err(format!("negative price {p}"));
    }
    let condition = match offer
        .and_then(|o| o.get("itemCondition"))
        .and_then(Value::as_str)
    {
        Some(c) if c.ends_with("UsedCondition") => "used",
        Some(c) if c.ends_with("NewCondition") => "new",
        _ => "unknown",
    };
    Ok((price, condition))
}

/// The product's images, else the `og:image`.
fn image_urls(product: &Value, og: &OgTags) -> Vec<String> {
    match product.get("image") {
        Some(Value::Array(images)) => images.iter().filter_map(|v| string(Some(v))).collect(),
        Some(Value::String(image)) => vec![image.clone()],
        _ => og.image.iter().cloned().collect(),
    }
}

/// The seller as the page names it (the flight data's `storeSeq`, else the product's seller),
/// before pseudonymisation.
fn seller(product: &Value, store_seq: Option<&Value>) -> Option<RawSeller> {
    string(store_seq)
        .or_else(|| match product.get("seller") {
            Some(Value::Object(seller)) => string(seller.get("name")),
            Some(Value::String(name)) => Some(name.clone()),
            _ => None,
        })
        .map(RawSeller)
}

/// The breadcrumb's category names, top level first.
fn categories(breadcrumb: &Value) -> Vec<String> {
    let Some(Value::Array(items)) = breadcrumb.get("itemListElement") else {
        return Vec::new();
    };
    let mut named: Vec<(i64, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let name = string(item.get("item").and_then(|it| it.get("name")))
                .or_else(|| string(item.get("name")))?;
            let position = item
                .get("position")
                .and_then(|p| integer(p).ok().flatten())
                .unwrap_or(i64::try_from(i).unwrap_or(i64::MAX));
            Some((position, name))
        })
        .collect();
    named.sort_by_key(|(position, _)| *position);
    named.into_iter().map(|(_, name)| name).collect()
}

/// `YYYY-MM-DD HH:MM:SS` in Korean time (UTC+9) as epoch milliseconds.
fn kst_millis(date: &str) -> Option<i64> {
    let (day, time) = date.trim().split_once(' ')?;
    let mut d = day.split('-').map(str::parse::<u32>);
    let mut t = time.split(':').map(str::parse::<u32>);
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hour, minute, second) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let local = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_opt(hour, minute, second)?;
    Some(local.and_utc().timestamp_millis() - 9 * 3_600_000)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The listing a page was generated from, with the raw seller.
    #[derive(Debug, Clone)]
    pub(crate) struct Truth {
        pub listing: Listing,
        pub raw_seller: Option<String>,
    }

    /// How a generated page presents its truth.
    #[derive(Debug, Clone)]
    pub(crate) struct Shape {
        pub offers_array: bool,
        pub price_as_string: bool,
        pub flight: bool,
        pub split_flight: bool,
        pub ld_seller: Option<String>,
        pub store_seq: i64,
    }

    fn escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    }

    fn ld(value: &Value) -> String {
        value.to_string().replace("</", "<\\/")
    }

    fn push(chunk: &str) -> String {
        let literal = serde_json::to_string(chunk)
            .unwrap()
            .replace('<', "\\u003c");
        format!("<script>self.__next_f.push([1,{literal}])</script>")
    }

    /// A product page in the shapes of the market contract.
    pub(crate) fn render(truth: &Truth, shape: &Shape, sku: i64) -> String {
        let l = &truth.listing;
        let mut offer = json!({"@type": "Offer", "priceCurrency": "KRW", "availability": "https://schema.org/InStock"});
        if let Some(price) = l.price {
            offer["price"] = if shape.price_as_string {
                json!(price.to_string())
            } else {
                json!(price)
            };
        }
        match l.condition.as_str() {
            "used" => offer["itemCondition"] = json!("https://schema.org/UsedCondition"),
            "new" => offer["itemCondition"] = json!("https://schema.org/NewCondition"),
            _ => {}
        }
        let mut product = json!({
            "@context": "https://schema.org", "@type": "Product", "name": l.title,
            "description": l.description, "sku": sku.to_string(), "image": l.image_urls,
            "offers": if shape.offers_array { json!([offer]) } else { offer },
        });
        if let Some(name) = &shape.ld_seller {
            product["seller"] = json!({"@type": "Person", "name": name});
        }
        let levels: Vec<&String> = [
            &l.category_level1,
            &l.category_level2,
            &l.category_level3,
            &l.category_level4,
        ]
        .into_iter()
        .flatten()
        .collect();
        let breadcrumb = json!({
            "@context": "https://schema.org", "@type": "BreadcrumbList",
            "itemListElement": levels.iter().enumerate().map(|(i, name)| json!({
                "@type": "ListItem", "position": i + 1,
                "item": {"@id": format!("https://example.invalid/c/{i}"), "name": name},
            })).collect::<Vec<_>>(),
        });
        let mut html = format!(
            "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\">\
             <title>{t} | 중고나라</title>\
             <meta property=\"og:title\" content=\"{t}\">\
             <meta property=\"og:description\" content=\"{d}\">\
             <meta property=\"og:image\" content=\"{i}\">\
             <script type=\"application/ld+json\">{p}</script>\
             <script type=\"application/ld+json\">{b}</script></head><body><div id=\"app\">…</div>",
            t = escape(&l.title),
            d = escape(&l.description.chars().take(80).collect::<String>()),
            i = escape(l.image_urls.first().map_or("", String::as_str)),
            p = ld(&product),
            b = ld(&breadcrumb),
        );
        if shape.flight {
            let status = match l.sale_status.as_str() {
                "reserved" => 1,
                "sold" => 3,
                _ => 0,
            };
            let sort_date = l.posted_at.map(|ms| {
                chrono::DateTime::from_timestamp_millis(ms + 9 * 3_600_000)
                    .unwrap()
                    .naive_utc()
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            });
            let object = json!({
                "productSeq": sku, "productTitle": l.title, "productDescription": l.description,
                "productPrice": l.price, "productStatus": status, "categoryName": l.category_level3,
                "categorySeq": 1234, "storeSeq": shape.store_seq, "nickName": "닉네임",
                "viewCount": l.view_count, "wishCount": l.wish_count, "chatCount": l.chat_count,
                "sortDate": sort_date, "locationName": l.location,
            })
            .to_string();
            html.push_str(&push("0:[\"$\",\"html\",null,{\"children\":[]}]\n"));
            let text = format!("1:{{\"props\":{{\"product\":{object}}}}}\n");
            if shape.split_flight {
                let mid = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
                html.push_str(&push(&text[..mid]));
                html.push_str(&push(&text[mid..]));
            } else {
                html.push_str(&push(&text));
            }
            html.push_str(&push("2:{\"noise\":\"{\\\"not\\\":1}\"}\n"));
        }
        html.push_str("</body></html>");
        html
    }

    fn pseudonym(raw: &str) -> String {
        format!("p:{raw}")
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[가-힣 ]{1,30}",
            Just("아이폰 15 Pro 🍎📱 \"급처\" \\ 네고 X <b>&amp;</b> '따옴표'\n줄바꿈".to_owned()),
            Just("</script><script>alert(1)</script> 🙂".to_owned()),
            "[a-zA-Z0-9 '\"\\\\<>&;%_-]{1,40}",
            ".{1,40}",
        ]
    }

    fn category() -> impl Strategy<Value = String> {
        "[가-힣]{1,6}( [가-힣]{1,4})?"
    }

    prop_compose! {
        pub(crate) fn page()(
            id in 1i64..10_000_000,
            title in text(),
            description in text(),
            price in proptest::option::of(prop_oneof![0i64..1_000_000, 1_000_000i64..50_000_000]),
            condition in prop_oneof![Just("used"), Just("new"), Just("unknown")],
            status in prop_oneof![Just("on_sale"), Just("reserved"), Just("sold")],
            cats in proptest::collection::vec(category(), 3..=4),
            location in proptest::option::of("[가-힣]{2,5}(구|동)"),
            counts in proptest::array::uniform3(0i64..100_000),
            images in proptest::collection::vec("https://img\\.example\\.invalid/[a-z0-9]{4,10}\\.jpg", 0..4),
            posted_min in 1_500_000_000i64..1_800_000_000,
            offers_array in any::<bool>(),
            price_as_string in any::<bool>(),
            flight in any::<bool>(),
            split_flight in any::<bool>(),
            ld_seller in proptest::option::of("[가-힣a-z0-9]{2,10}"),
            store_seq in 1i64..100_000_000,
        ) -> (Truth, Shape) {
            let url = format!("http://market.test/product/{id}");
            let listing = Listing {
                product_id: id,
                title,
                price,
                condition: condition.to_owned(),
                sale_status: if flight { status.to_owned() } else { "unknown".to_owned() },
                category_path: Some(cats.join(" > ")),
                category_level1: cats.first().cloned(),
                category_level2: cats.get(1).cloned(),
                category_level3: cats.get(2).cloned(),
                category_level4: cats.get(3).cloned(),
                description,
                seller: None,
                location: if flight { location } else { None },
                view_count: flight.then_some(counts[0]),
                wish_count: flight.then_some(counts[1]),
                chat_count: flight.then_some(counts[2]),
                image_urls: images,
                posted_at: flight.then_some(posted_min * 1000),
                scraped_at: 0,
                source_url: url,
            };
            let raw_seller = if flight { Some(store_seq.to_string()) } else { ld_seller.clone() };
            let shape = Shape { offers_array, price_as_string, flight, split_flight, ld_seller, store_seq };
            (Truth { listing, raw_seller }, shape)
        }
    }

    fn expect_listing(outcome: Outcome) -> Page {
        match outcome {
            Outcome::Listing(page) => *page,
            other => panic!("expected a listing, got {other:?}"),
        }
    }

    fn check(truth: &Truth, shape: &Shape) -> Result<(), TestCaseError> {
        let l = &truth.listing;
        let html = render(truth, shape, l.product_id);
        let page = expect_listing(parse(l.product_id, 200, &html, &l.source_url));
        prop_assert_eq!(
            page.seller.as_ref().map(|s| s.expose().to_owned()),
            truth.raw_seller.clone()
        );
        let got = page.into_listing(pseudonym, 7);
        let want = Listing {
            seller: truth.raw_seller.as_deref().map(pseudonym),
            scraped_at: 7,
            ..l.clone()
        };
        prop_assert_eq!(got, want);
        Ok(())
    }

    proptest! {
        #[test]
        fn every_field_a_generated_page_has_is_extracted((truth, shape) in page()) {
            check(&truth, &shape)?;
        }

        #[test]
        fn a_page_for_another_id_never_yields_a_record((truth, shape) in page(), delta in 1i64..1000) {
            let l = &truth.listing;
            let html = render(&truth, &shape, l.product_id + delta);
            let outcome = parse(l.product_id, 200, &html, &l.source_url);
            prop_assert!(matches!(outcome, Outcome::Malformed { .. }), "{:?}", outcome);
        }

        #[test]
        fn deleted_and_blocked_pages_never_yield_a_record(title in text(), status in prop_oneof![Just(200u16), Just(403u16)]) {
            prop_assert_eq!(parse(1, 404, &deleted_page(&title), "u"), Outcome::Deleted);
            prop_assert_eq!(parse(1, 200, &deleted_page(&title), "u"), Outcome::Deleted);
            prop_assert_eq!(parse(1, status, BLOCKED, "u"), Outcome::Blocked);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_yield_a_record(body in ".{0,400}") {
            let outcome = parse(1, 200, &body, "u");
            prop_assert!(!matches!(outcome, Outcome::Listing(_)));
        }
    }

    fn deleted_page(title: &str) -> String {
        format!(
            "<!DOCTYPE html><html><head><title>{} | 중고나라</title></head><body>\
             <p>삭제된 상품입니다</p>{}</body></html>",
            escape(title),
            push("0:[\"$\",\"div\",null,{}]")
        )
    }

    const BLOCKED: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head>\
        <body><form id=\"challenge-form\" action=\"/cdn-cgi/challenge-platform\">\
        <div class=\"g-recaptcha\" data-sitekey=\"x\"></div></form></body></html>";

    fn sample() -> (Truth, Shape) {
        let listing = Listing {
            product_id: 123_456,
            title: "아이폰 15 Pro 256GB \"급처\" 🍎".into(),
            price: Some(1_250_000),
            condition: "used".into(),
            sale_status: "reserved".into(),
            category_path: Some("디지털기기 > 휴대폰 > 애플 > 아이폰".into()),
            category_level1: Some("디지털기기".into()),
            category_level2: Some("휴대폰".into()),
            category_level3: Some("애플".into()),
            category_level4: Some("아이폰".into()),
            description: "상태 좋아요 <없음> & 네고 \\ 가능\n직거래".into(),
            seller: None,
            location: Some("서울 강남구".into()),
            view_count: Some(120),
            wish_count: Some(4),
            chat_count: Some(2),
            image_urls: vec!["https://img.example.invalid/a.jpg".into()],
            posted_at: Some(1_700_000_000_000),
            scraped_at: 0,
            source_url: "http://market.test/product/123456".into(),
        };
        let shape = Shape {
            offers_array: true,
            price_as_string: false,
            flight: true,
            split_flight: false,
            ld_seller: Some("판매자".into()),
            store_seq: 777,
        };
        (
            Truth {
                listing,
                raw_seller: Some("777".into()),
            },
            shape,
        )
    }

    #[test]
    fn a_full_page_with_an_offers_array_and_four_levels() {
        let (truth, shape) = sample();
        check(&truth, &shape).unwrap();
    }

    #[test]
    fn a_single_offer_object_with_a_string_price_and_three_levels() {
        let (mut truth, mut shape) = sample();
        shape.offers_array = false;
        shape.price_as_string = true;
        truth.listing.category_level4 = None;
        truth.listing.category_path = Some("디지털기기 > 휴대폰 > 애플".into());
        check(&truth, &shape).unwrap();
    }

    #[test]
    fn flight_data_split_across_two_chunks() {
        let (truth, mut shape) = sample();
        shape.split_flight = true;
        check(&truth, &shape).unwrap();
    }

    #[test]
    fn without_flight_data_the_seller_is_the_json_ld_name_and_status_unknown() {
        let (mut truth, mut shape) = sample();
        shape.flight = false;
        truth.raw_seller = Some("판매자".into());
        let l = &mut truth.listing;
        l.sale_status = "unknown".into();
        (
            l.location,
            l.view_count,
            l.wish_count,
            l.chat_count,
            l.posted_at,
        ) = (None, None, None, None, None);
        check(&truth, &shape).unwrap();
    }

    #[test]
    fn no_price_no_condition_no_seller() {
        let (mut truth, mut shape) = sample();
        shape.flight = false;
        shape.ld_seller = None;
        truth.raw_seller = None;
        let l = &mut truth.listing;
        (l.price, l.condition, l.sale_status) = (None, "unknown".into(), "unknown".into());
        (
            l.location,
            l.view_count,
            l.wish_count,
            l.chat_count,
            l.posted_at,
        ) = (None, None, None, None, None);
        check(&truth, &shape).unwrap();
    }

    #[test]
    fn the_price_falls_back_on_the_flight_data() {
        let (truth, shape) = sample();
        let html = render(&truth, &shape, 123_456)
            .replace(",\"price\":1250000", "")
            .replace("\"price\":1250000,", "");
        let page = expect_listing(parse(123_456, 200, &html, "u"));
        assert_eq!(page.listing.price, Some(1_250_000));
    }

    #[test]
    fn sold_and_new_items() {
        let (mut truth, shape) = sample();
        truth.listing.sale_status = "sold".into();
        truth.listing.condition = "new".into();
        check(&truth, &shape).unwrap();
    }

    #[test]
    fn a_sku_mismatch_is_malformed_and_says_so() {
        let (truth, shape) = sample();
        let html = render(&truth, &shape, 999);
        match parse(123_456, 200, &html, "u") {
            Outcome::Malformed { reason } => {
                assert!(
                    reason.contains("sku 999 differs from the requested id 123456"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_404_and_a_page_without_product_data_are_deleted() {
        assert_eq!(parse(5, 404, "", "u"), Outcome::Deleted);
        assert_eq!(parse(5, 200, &deleted_page("삭제"), "u"), Outcome::Deleted);
    }

    #[test]
    fn captcha_pages_are_blocked_with_200_or_403() {
        assert_eq!(parse(5, 200, BLOCKED, "u"), Outcome::Blocked);
        assert_eq!(parse(5, 403, BLOCKED, "u"), Outcome::Blocked);
        assert_eq!(parse(5, 403, "<html></html>", "u"), Outcome::Blocked);
    }

    #[test]
    fn a_price_that_is_not_a_number_is_malformed() {
        let (truth, shape) = sample();
        let html =
            render(&truth, &shape, 123_456).replace("\"price\":1250000", "\"price\":\"free\"");
        assert!(matches!(
            parse(123_456, 200, &html, "u"),
            Outcome::Malformed { .. }
        ));
    }

    #[test]
    fn the_raw_seller_is_not_printed_by_debug() {
        let (truth, shape) = sample();
        let html = render(&truth, &shape, 123_456);
        let page = expect_listing(parse(123_456, 200, &html, "u"));
        assert!(!format!("{page:?}").contains("777"));
    }

    #[test]
    fn korean_time_is_nine_hours_ahead_of_utc() {
        assert_eq!(kst_millis("1970-01-01 09:00:00"), Some(0));
        assert_eq!(kst_millis("2024-02-30 00:00:00"), None);
        assert_eq!(kst_millis("yesterday"), None);
    }

    #[test]
    fn integers_from_numbers_and_digit_strings() {
        assert_eq!(integer(&json!(15000)), Ok(Some(15000)));
        assert_eq!(integer(&json!(15000.0)), Ok(Some(15000)));
        assert_eq!(integer(&json!("1,500,000")), Ok(Some(1_500_000)));
        assert_eq!(integer(&json!("")), Ok(None));
        assert!(integer(&json!(1.5)).is_err());
        assert!(integer(&json!("12a")).is_err());
    }
}
