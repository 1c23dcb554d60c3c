//! The HTML the market serves, in the shapes of web.joongna.com: product pages (JSON-LD, og tags,
//! Next.js flight chunks), the recent list, deleted and challenge pages.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::generate::{Condition, Flight, Product, SaleStatus};

/// `robots.txt`: everything but the truth is allowed.
pub const ROBOTS: &str = "User-agent: *\nAllow: /\nDisallow: /__truth\n";

/// The body of a 404.
pub const NOT_FOUND: &str = "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\">\
<title>중고나라</title></head><body><h1>404</h1><p>페이지를 찾을 수 없습니다.</p></body></html>";

/// Korean time, in which `sortDate` is written.
const KST_SECONDS: i32 = 9 * 3600;

/// The product page of `product`, claiming to be `shown_id` (its own id unless the sku mismatches).
pub fn product(product: &Product, shown_id: u64) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let title = escape(&product.title);
    let og_description: String = product.description.chars().take(80).collect();
    let first_image = product.images.first().map_or("", String::as_str);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} | 중고나라</title>\
         <meta property=\"og:title\" content=\"{title}\">\
         <meta property=\"og:description\" content=\"{}\">\
         <meta property=\"og:image\" content=\"{}\">\
         <meta property=\"og:url\" content=\"https://web.joongna.com/product/{shown_id}\">",
        escape(&og_description),
        escape(first_image),
    );
    let _ = write!(
        html,
        "<script type=\"application/ld+json\">{}</script>\
         <script type=\"application/ld+json\">{}</script></head>",
        json_ld(&product_ld(product, shown_id)),
        json_ld(&breadcrumbs(product)),
    );
    let price_text = product
        .price
        .map_or_else(|| "가격 문의".to_owned(), |p| format!("{}원", thousands(p)));
    let _ = write!(
        html,
        "<body><div id=\"__next\"><header class=\"gnb\"><a href=\"/\">중고나라</a></header>\
         <main class=\"product-detail\"><nav class=\"breadcrumb\">{}</nav>\
         <h1 class=\"title\">{title}</h1><p class=\"price\">{price_text}</p>\
         <div class=\"seller\">{}</div><article class=\"description\">{}</article>\
         <ul class=\"images\">",
        escape(&product.category.path.join(" > ")),
        escape(&product.nickname),
        escape(&product.description),
    );
    for url in &product.images {
        let _ = write!(
            html,
            "<li><img src=\"{}\" alt=\"{title}\"></li>",
            escape(url)
        );
    }
    html.push_str("</ul></main></div>");
    flight(&mut html, product, shown_id);
    html.push_str("</body></html>");
    html
}

/// The 200 page of a deleted product: no Product JSON-LD, no product flight data.
pub fn deleted() -> String {
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\"><title>중고나라</title>\
         <meta property=\"og:title\" content=\"중고나라\"></head><body><div id=\"__next\">\
         <main class=\"product-deleted\"><p>삭제된 상품입니다</p>\
         <a href=\"/\">홈으로 가기</a></main></div>",
    );
    push_chunk(&mut html, NOISE[0]);
    html.push_str("</body></html>");
    html
}

/// A Cloudflare-style challenge in front of `id`: no JSON-LD, no flight data.
pub fn challenge(id: u64) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title>\
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\">\
         <meta name=\"robots\" content=\"noindex,nofollow\"></head><body>\
         <div class=\"main-wrapper\" role=\"main\"><h1>web.joongna.com</h1>\
         <h2>Verifying you are human. This may take a few seconds.</h2>\
         <form id=\"challenge-form\" action=\"/product/{id}?__cf_chl_f_tk={:016x}\" method=\"POST\">\
         <div class=\"cf-turnstile\" data-sitekey=\"0x4AAAAAAADnPIDROrmt1Wwj\"></div>\
         <input type=\"hidden\" name=\"cf_captcha_kind\" value=\"h\"></form>\
         <noscript>Enable JavaScript and cookies to continue</noscript></div></body></html>",
        crate::generate::mix(id),
    )
}

/// The recent list: links to `newest` and the ids below it, newest first, at most `count` and
/// none below `first`.
pub fn recent(first: u64, newest: u64, count: u64) -> String {
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\">\
         <title>최신 상품 | 중고나라</title></head><body><div id=\"__next\">\
         <main class=\"product-list\"><ul>",
    );
    let oldest = newest.saturating_sub(count.saturating_sub(1)).max(first);
    for id in (oldest..=newest).rev() {
        let _ = write!(
            html,
            "<li class=\"product-item\"><a href=\"/product/{id}\">상품 {id}</a></li>"
        );
    }
    html.push_str("</ul></main></div></body></html>");
    html
}

/// `sortDate`: `YYYY-MM-DD HH:MM:SS` in Korean time.
pub fn sort_date(epoch_ms: i64) -> String {
    let kst = FixedOffset::east_opt(KST_SECONDS);
    match (DateTime::from_timestamp_millis(epoch_ms), kst) {
        (Some(utc), Some(kst)) => utc
            .with_timezone(&kst)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        _ => String::new(),
    }
}

#[derive(Serialize)]
struct ProductLd<'a> {
    #[serde(rename = "@context")]
    context: &'static str,
    #[serde(rename = "@type")]
    kind: &'static str,
    name: &'a str,
    description: &'a str,
    sku: String,
    image: &'a [String],
    offers: Offers,
    #[serde(skip_serializing_if = "Option::is_none")]
    seller: Option<Person<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Offers {
    One(Offer),
    Many([Offer; 1]),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Offer {
    #[serde(rename = "@type")]
    kind: &'static str,
    price_currency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_condition: Option<&'static str>,
    availability: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Price {
    Number(i64),
    Digits(String),
}

#[derive(Serialize)]
struct Person<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    name: &'a str,
}

#[derive(Serialize)]
struct BreadcrumbList {
    #[serde(rename = "@context")]
    context: &'static str,
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "itemListElement")]
    items: Vec<ListItem>,
}

#[derive(Serialize)]
struct ListItem {
    #[serde(rename = "@type")]
    kind: &'static str,
    position: usize,
    item: Crumb,
}

#[derive(Serialize)]
struct Crumb {
    #[serde(rename = "@id")]
    id: String,
    name: &'static str,
}

/// The product object of the flight data, keys in the site's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FlightProduct<'a> {
    product_seq: u64,
    product_title: &'a str,
    product_description: &'a str,
    product_price: Option<i64>,
    product_status: u8,
    category_name: &'static str,
    category_seq: u32,
    store_seq: u64,
    nick_name: &'a str,
    view_count: i64,
    wish_count: i64,
    chat_count: i64,
    sort_date: String,
    location_name: Option<&'static str>,
}

fn product_ld(product: &Product, shown_id: u64) -> ProductLd<'_> {
    let offer = Offer {
        kind: "Offer",
        price_currency: "KRW",
        price: product.price.map(|p| {
            if product.price_as_string {
                Price::Digits(p.to_string())
            } else {
                Price::Number(p)
            }
        }),
        item_condition: match product.condition {
            Condition::New => Some("https://schema.org/NewCondition"),
            Condition::Used => Some("https://schema.org/UsedCondition"),
            Condition::Unknown => None,
        },
        availability: match product.status {
            SaleStatus::OnSale => "https://schema.org/InStock",
            SaleStatus::Reserved => "https://schema.org/LimitedAvailability",
            SaleStatus::Sold => "https://schema.org/SoldOut",
        },
    };
    ProductLd {
        context: "https://schema.org",
        kind: "Product",
        name: &product.title,
        description: &product.description,
        sku: shown_id.to_string(),
        image: &product.images,
        offers: if product.offers_array {
            Offers::Many([offer])
        } else {
            Offers::One(offer)
        },
        seller: product.seller_in_json_ld.then_some(Person {
            kind: "Person",
            name: &product.nickname,
        }),
    }
}

fn breadcrumbs(product: &Product) -> BreadcrumbList {
    BreadcrumbList {
        context: "https://schema.org",
        kind: "BreadcrumbList",
        items: product
            .category
            .path
            .iter()
            .enumerate()
            .map(|(i, &name)| ListItem {
                kind: "ListItem",
                position: i + 1,
                item: Crumb {
                    id: format!(
                        "https://web.joongna.com/search?category={}&level={}",
                        product.category.seq,
                        i + 1
                    ),
                    name,
                },
            })
            .collect(),
    }
}

/// Flight chunks that carry no product: the shapes of a Next.js app router page.
const NOISE: [&str; 4] = [
    "0:[\"$\",\"$L1\",null,{\"buildId\":\"jn-2025.06.1\",\"assetPrefix\":\"\",\"initialTree\":[\"\",{\"children\":[\"product\",{\"children\":[[\"productSeq\",\"d\"],{}]}]}]}]\n",
    "1:I[42178,[\"static/chunks/app/product/[productSeq]/page-8f2c.js\"],\"ProductDetail\"]\n2:HL[\"/_next/static/css/app.css\",\"style\"]\n",
    "7:[\"$\",\"footer\",null,{\"className\":\"footer\",\"children\":\"© 중고나라 Corp. \\\\ 사업자정보\"}]\n",
    "8:[[\"$\",\"meta\",\"0\",{\"name\":\"viewport\",\"content\":\"width=device-width, initial-scale=1\"}]]\n",
];

fn flight(html: &mut String, product: &Product, shown_id: u64) {
    if product.flight == Flight::Absent {
        return;
    }
    let object = FlightProduct {
        product_seq: shown_id,
        product_title: &product.title,
        product_description: &product.description,
        product_price: product.price,
        product_status: product.status.code(),
        category_name: product.category.name(),
        category_seq: product.category.seq,
        store_seq: product.store_seq,
        nick_name: &product.nickname,
        view_count: product.view_count,
        wish_count: product.wish_count,
        chat_count: product.chat_count,
        sort_date: sort_date(product.posted_at),
        location_name: product.location,
    };
    let object = serde_json::to_string(&object).unwrap_or_default();
    let before = "6:[\"$\",\"$L5\",null,{\"isLogin\":false,\"productDetail\":";
    let after = ",\"recommend\":[]}]\n";
    push_chunk(html, NOISE[0]);
    push_chunk(html, NOISE[1]);
    match product.flight {
        Flight::Split { at } => {
            let mut cut = object.len() * usize::from(at) / 1000;
            while !object.is_char_boundary(cut) {
                cut -= 1;
            }
            push_chunk(html, &format!("{before}{}", &object[..cut]));
            push_chunk(html, &format!("{}{after}", &object[cut..]));
        }
        _ => push_chunk(html, &format!("{before}{object}{after}")),
    }
    push_chunk(html, NOISE[2]);
    push_chunk(html, NOISE[3]);
}

/// Appends `<script>self.__next_f.push([1,"{chunk}"])</script>`, `chunk` a JSON string literal
/// with `<` written `\u003c` as Next.js does, so no `</script>` can end the script early.
fn push_chunk(html: &mut String, chunk: &str) {
    let literal = serde_json::to_string(chunk).unwrap_or_default();
    html.push_str("<script>self.__next_f.push([1,");
    html.push_str(&literal.replace('<', "\\u003c"));
    html.push_str("])</script>");
}

/// JSON for a `<script>` element: `</` written `<\/` (the contract's escape).
fn json_ld<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_default()
        .replace("</", "<\\/")
}

/// HTML-escapes text for an element or a double-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generator, Shares};

    #[test]
    fn sort_date_is_korean_time() {
        // 2024-12-31T15:00:00Z is midnight on New Year's Day in Seoul.
        assert_eq!(sort_date(1_735_657_200_000), "2025-01-01 00:00:00");
    }

    #[test]
    fn prices_are_written_with_thousands_separators() {
        assert_eq!(thousands(1_250_000), "1,250,000");
        assert_eq!(thousands(900), "900");
    }

    #[test]
    fn no_script_ends_early_and_text_is_escaped() {
        let generator = Generator::new(9, Shares::default());
        for id in 100_000_001..100_000_301 {
            let item = generator.product(id);
            let html = product(&item, id);
            let ours = html
                .matches("<script type=\"application/ld+json\">")
                .count()
                + html.matches("<script>self.__next_f.push(").count();
            assert_eq!(ours, html.matches("</script>").count(), "id {id}");
            if item.description.contains("<script>") {
                assert!(html.contains("&lt;script&gt;alert"), "id {id}");
            }
        }
    }

    #[test]
    fn the_recent_list_is_newest_first_and_bounded() {
        let html = recent(10, 100, 50);
        assert!(html.find("/product/100\"") < html.find("/product/99\""));
        assert_eq!(html.matches("href=\"/product/").count(), 50);
        assert_eq!(recent(10, 12, 50).matches("href=\"/product/").count(), 3);
    }
}
