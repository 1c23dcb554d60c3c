//! The ground truth for an id: what a correct scraper makes of its page, as `GET /__truth/{id}`
//! answers it, with the field names of `marketflow_core::record::Listing`.

use marketflow_core::record::Listing;
use serde::Serialize;
use serde_json::Value;

use crate::generate::{Flight, Kind, Product};

/// What an id is, as the truth names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A page the scraper turns into a listing.
    Listing,
    /// A deleted product (404 or a "deleted" page).
    Deleted,
    /// An anti-bot challenge.
    Blocked,
    /// A page whose sku is another id.
    SkuMismatch,
    /// Below the first id or above the head.
    Missing,
}

impl Status {
    /// The status of an existing id of `kind`.
    pub fn of(kind: Kind) -> Self {
        match kind {
            Kind::Listing => Self::Listing,
            Kind::Deleted { .. } => Self::Deleted,
            Kind::Blocked { .. } => Self::Blocked,
            Kind::SkuMismatch { .. } => Self::SkuMismatch,
        }
    }
}

/// The truth for one id: `{"id", "status", "listing"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Truth {
    /// The id asked about.
    pub id: u64,
    /// What it is.
    pub status: Status,
    /// The listing a correct scraper produces, when `status` is `listing`.
    pub listing: Option<Value>,
}

/// The truth for `id` of `status`, with `product` its content and `base_url` the scheme and
/// authority the scraper requested (e.g. `http://127.0.0.1:18080`).
pub fn truth(id: u64, status: Status, product: Option<&Product>, base_url: &str) -> Truth {
    let listing = match (status, product) {
        (Status::Listing, Some(product)) => Some(listing_json(product, base_url)),
        _ => None,
    };
    Truth {
        id,
        status,
        listing,
    }
}

/// The listing of `product` as the scraper must produce it, before pseudonymising the seller.
pub fn listing(product: &Product, base_url: &str) -> Listing {
    let flight = product.flight != Flight::Absent;
    let path = product.category.path;
    let level = |n: usize| path.get(n).map(|s| (*s).to_owned());
    let seller = if flight {
        Some(product.store_seq.to_string())
    } else if product.seller_in_json_ld {
        Some(product.nickname.clone())
    } else {
        None
    };
    Listing {
        product_id: i64::try_from(product.id).unwrap_or(i64::MAX),
        title: product.title.clone(),
        price: product.price,
        condition: product.condition.as_str().to_owned(),
        sale_status: if flight {
            product.status.as_str()
        } else {
            "unknown"
        }
        .to_owned(),
        category_path: Some(path.join(" > ")),
        category_level1: level(0),
        category_level2: level(1),
        category_level3: level(2),
        category_level4: level(3),
        description: product.description.clone(),
        seller,
        location: product.location.filter(|_| flight).map(str::to_owned),
        view_count: flight.then_some(product.view_count),
        wish_count: flight.then_some(product.wish_count),
        chat_count: flight.then_some(product.chat_count),
        image_urls: product.images.clone(),
        posted_at: flight.then_some(product.posted_at),
        scraped_at: 0,
        source_url: format!("{base_url}/product/{}", product.id),
    }
}

/// [`listing`] as JSON, without `scraped_at` (the scraper sets it when it reads the page).
fn listing_json(product: &Product, base_url: &str) -> Value {
    let mut value = serde_json::to_value(listing(product, base_url)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("scraped_at");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generator, Shares};

    #[test]
    fn a_listing_truth_has_the_record_fields_but_scraped_at() {
        let generator = Generator::new(1, Shares::default());
        let product = generator.product(100_000_001);
        let truth = truth(
            100_000_001,
            Status::Listing,
            Some(&product),
            "http://127.0.0.1:18080",
        );
        let listing = truth.listing.clone().unwrap();
        assert!(listing.get("scraped_at").is_none());
        assert_eq!(listing["product_id"], 100_000_001);
        assert_eq!(
            listing["source_url"],
            "http://127.0.0.1:18080/product/100000001"
        );
        let json = serde_json::to_value(&truth).unwrap();
        assert_eq!(json["status"], "listing");
    }

    #[test]
    fn without_flight_data_the_flight_fields_are_null() {
        let generator = Generator::new(1, Shares::default());
        let product = (100_000_001..)
            .map(|id| generator.product(id))
            .find(|p| p.flight == Flight::Absent)
            .unwrap();
        let listing = listing(&product, "http://x");
        assert_eq!(listing.sale_status, "unknown");
        assert_eq!(listing.view_count, None);
        assert_eq!(listing.posted_at, None);
        assert_eq!(listing.location, None);
    }

    #[test]
    fn other_statuses_carry_no_listing() {
        let truth = truth(5, Status::SkuMismatch, None, "http://x");
        assert_eq!(
            serde_json::to_value(&truth).unwrap(),
            serde_json::json!({"id": 5, "status": "sku_mismatch", "listing": null})
        );
    }
}
