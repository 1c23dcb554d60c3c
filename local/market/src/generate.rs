//! The generator: every product id's page kind and content as a pure function of the seed and
//! the id, computed on demand in O(1), so no product is ever stored.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{self, CATEGORIES, Category};

/// 2025-01-01 00:00:00 in Korean time (UTC+9), epoch milliseconds: the oldest `sortDate`.
const EPOCH_MS: i64 = 1_735_657_200_000;

/// Independent random streams drawn from one (seed, id), so that changing a share (say, of
/// captcha pages) does not change the content of the other products.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
enum Stream {
    Kind = 1,
    Content = 2,
}

/// The share of ids per page kind that is not a listing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    /// Share of ids behind an anti-bot challenge.
    pub captcha: f64,
    /// Share of ids deleted (404 or a "deleted" page).
    pub deleted: f64,
    /// Share of ids whose page shows another id's `sku`.
    pub sku_mismatch: f64,
}

impl Default for Shares {
    fn default() -> Self {
        Self {
            captcha: 0.0,
            deleted: 0.03,
            sku_mismatch: 0.01,
        }
    }
}

/// What an id's page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A product page with a listing.
    Listing,
    /// A deleted product: 404 when `not_found`, else 200 with a "deleted" page.
    Deleted {
        /// Answer 404 rather than the deleted page.
        not_found: bool,
    },
    /// An anti-bot challenge: 403 when `forbidden`, else 200.
    Blocked {
        /// Answer 403 rather than 200.
        forbidden: bool,
    },
    /// A product page whose `sku` and `productSeq` are `shown_id`, not the id requested.
    SkuMismatch {
        /// The id the page claims.
        shown_id: u64,
    },
}

/// Item condition as the Product JSON-LD states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `https://schema.org/NewCondition`.
    New,
    /// `https://schema.org/UsedCondition`.
    Used,
    /// No `itemCondition`.
    Unknown,
}

impl Condition {
    /// The name the listing record uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Used => "used",
            Self::Unknown => "unknown",
        }
    }
}

/// Sale state as the flight data's `productStatus` codes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleStatus {
    /// 0.
    OnSale,
    /// 1.
    Reserved,
    /// 3.
    Sold,
}

impl SaleStatus {
    /// The `productStatus` code.
    pub fn code(self) -> u8 {
        match self {
            Self::OnSale => 0,
            Self::Reserved => 1,
            Self::Sold => 3,
        }
    }

    /// The name the listing record uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnSale => "on_sale",
            Self::Reserved => "reserved",
            Self::Sold => "sold",
        }
    }
}

/// How the flight data appears on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flight {
    /// No flight data at all.
    Absent,
    /// The product object inside one chunk.
    Whole,
    /// The product object split across two consecutive chunks, after `at` parts in 1000.
    Split {
        /// Where to cut, in thousandths of the object's length.
        at: u16,
    },
}

/// One product's content: what its page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// The product id.
    pub id: u64,
    /// The title.
    pub title: String,
    /// The description, several lines.
    pub description: String,
    /// The category leaf.
    pub category: &'static Category,
    /// The asking price in KRW; `None` when the seller gave none.
    pub price: Option<i64>,
    /// Whether the offer writes the price as a string of digits rather than a number.
    pub price_as_string: bool,
    /// Whether `offers` is an array of one offer rather than the offer itself.
    pub offers_array: bool,
    /// The item's condition.
    pub condition: Condition,
    /// The sale state.
    pub status: SaleStatus,
    /// The seller's store number (`storeSeq`).
    pub store_seq: u64,
    /// The seller's nickname.
    pub nickname: String,
    /// Whether the Product JSON-LD names the seller.
    pub seller_in_json_ld: bool,
    /// The trade location, if given.
    pub location: Option<&'static str>,
    /// Views.
    pub view_count: i64,
    /// Wishes.
    pub wish_count: i64,
    /// Chats.
    pub chat_count: i64,
    /// 1 to 5 image URLs.
    pub images: Vec<String>,
    /// `sortDate`, epoch milliseconds (whole seconds).
    pub posted_at: i64,
    /// Whether and how the page carries flight data.
    pub flight: Flight,
}

/// The generator for one seed and set of shares.
#[derive(Debug, Clone)]
pub struct Generator {
    seed: u64,
    shares: Shares,
}

impl Generator {
    /// A generator of the products of `seed`, with `shares` of non-listing pages.
    pub fn new(seed: u64, shares: Shares) -> Self {
        Self { seed, shares }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// What `id`'s page is.
    pub fn kind(&self, id: u64) -> Kind {
        let mut rng = self.rng(id, Stream::Kind);
        // Independent draws, so each share lands where configured whatever the others are.
        let captcha = rng.random::<f64>() < self.shares.captcha;
        let deleted = rng.random::<f64>() < self.shares.deleted;
        let mismatch = rng.random::<f64>() < self.shares.sku_mismatch;
        let coin = rng.random_bool(0.5);
        let offset = rng.random_range(1..5_000);
        if captcha {
            Kind::Blocked { forbidden: coin }
        } else if deleted {
            Kind::Deleted { not_found: coin }
        } else if mismatch {
            Kind::SkuMismatch {
                shown_id: id.wrapping_add(offset),
            }
        } else {
            Kind::Listing
        }
    }

    /// The content of `id`'s product page (meaningful when its kind shows one).
    pub fn product(&self, id: u64) -> Product {
        let mut rng = self.rng(id, Stream::Content);
        let (category, price) = price_and_category(&mut rng);
        let item = pick(&mut rng, category.items);
        let location = pick(&mut rng, catalog::LOCATIONS);
        let title = title(&mut rng, item);
        let description = description(&mut rng, item, location);
        let condition = match rng.random_range(0..10) {
            0..=1 => Condition::New,
            2..=8 => Condition::Used,
            _ => Condition::Unknown,
        };
        let status = match rng.random_range(0..20) {
            0..=14 => SaleStatus::OnSale,
            15..=16 => SaleStatus::Reserved,
            _ => SaleStatus::Sold,
        };
        let nickname = format!(
            "{}{}{}",
            pick(&mut rng, catalog::NICK_ADJECTIVES),
            pick(&mut rng, catalog::NICK_NOUNS),
            rng.random_range(0..10_000)
        );
        let image_count = rng.random_range(1..=5);
        let images = (0..image_count)
            .map(|n| {
                format!(
                    "https://img2.joongna.com/media/original/{id}/{n}_{:08x}.jpg",
                    rng.random::<u32>()
                )
            })
            .collect();
        // Newer ids were posted later: about 3 seconds apart, wrapping after about a year.
        let posted_at = EPOCH_MS
            + (i64::try_from(id % 10_000_000).unwrap_or(0) * 3 + rng.random_range(0..3)) * 1_000;
        let view_count = skewed(&mut rng, 5_000);
        let flight = match rng.random_range(0..100) {
            0..=4 => Flight::Absent,
            5..=29 => Flight::Split {
                at: rng.random_range(100..900),
            },
            _ => Flight::Whole,
        };
        Product {
            id,
            title,
            description,
            category,
            price,
            price_as_string: rng.random_bool(0.3),
            offers_array: rng.random_bool(0.5),
            condition,
            status,
            store_seq: rng.random_range(1_000_000..100_000_000),
            nickname,
            seller_in_json_ld: rng.random_bool(0.5),
            location: (!rng.random_bool(0.1)).then_some(location),
            view_count,
            wish_count: skewed(&mut rng, view_count.min(200) / 4 + 1),
            chat_count: skewed(&mut rng, view_count.min(120) / 4 + 1),
            images,
            posted_at,
            flight,
        }
    }

    fn rng(&self, id: u64, stream: Stream) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(mix(mix(self.seed ^ mix(id)) ^ stream as u64))
    }
}

/// SplitMix64's finaliser: a cheap, well-spread hash of a u64.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    // The catalog's lists are never empty; `items[0]` is the fallback only to avoid a panic path.
    items.choose(rng).copied().unwrap_or(items[0])
}

/// A count skewed towards small values, below `max`.
fn skewed(rng: &mut ChaCha8Rng, max: i64) -> i64 {
    let u: f64 = rng.random();
    // Truncation is the point: a whole count.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let count = (u * u * u * max as f64) as i64;
    count
}

/// A price and a category together: about 3% of listings have no price, 0.5% ask exactly
/// 1,000,000 KRW, 12.5% ask more (in a category where that is usual), the rest less.
fn price_and_category(rng: &mut ChaCha8Rng) -> (&'static Category, Option<i64>) {
    let bucket = rng.random_range(0..1000);
    let premium = (35..160).contains(&bucket);
    let candidates: Vec<&'static Category> = CATEGORIES
        .iter()
        .filter(|c| !premium || c.is_premium())
        .collect();
    let category = pick(rng, &candidates);
    let price = match bucket {
        0..=29 => None,
        30..=34 => Some(1_000_000),
        35..=159 => Some(round_price(
            log_uniform(rng, 1_010_000, category.max_price),
            10_000,
        )),
        _ => {
            let high = category.max_price.min(990_000);
            let low = category.min_price.min(high / 2);
            let raw = log_uniform(rng, low, high);
            Some(round_price(raw, if raw >= 10_000 { 1_000 } else { 100 }))
        }
    };
    (category, price)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn log_uniform(rng: &mut ChaCha8Rng, low: i64, high: i64) -> i64 {
    let (low, high) = ((low.max(1)) as f64, (high.max(low + 1)) as f64);
    (low.ln() + rng.random::<f64>() * (high.ln() - low.ln())).exp() as i64
}

fn round_price(price: i64, step: i64) -> i64 {
    ((price + step / 2) / step * step).max(step)
}

fn title(rng: &mut ChaCha8Rng, item: &str) -> String {
    let mut title = item.to_owned();
    if rng.random_bool(0.6) {
        title.push(' ');
        title.push_str(pick(rng, catalog::TITLE_SPECS));
    }
    let ending = pick(rng, catalog::TITLE_ENDINGS);
    if !ending.is_empty() {
        title.push(' ');
        title.push_str(ending);
    }
    if rng.random_bool(0.3) {
        let decoration = pick(rng, catalog::TITLE_DECORATIONS);
        if rng.random_bool(0.5) {
            title = format!("{decoration} {title}");
        } else {
            title.push(' ');
            title.push_str(decoration);
        }
    }
    title
}

fn description(rng: &mut ChaCha8Rng, item: &str, location: &str) -> String {
    let lines = rng.random_range(2..=6);
    (0..lines)
        .map(|_| {
            pick(rng, catalog::DESCRIPTION_LINES)
                .replace("{item}", item)
                .replace("{location}", location)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: u64 = 20_000;

    fn share(is: impl Fn(u64) -> bool) -> f64 {
        let hits = (0..SAMPLE).filter(|&i| is(100_000_001 + i)).count();
        hits as f64 / SAMPLE as f64
    }

    #[test]
    fn the_same_seed_gives_the_same_products_and_another_seed_others() {
        let a = Generator::new(7, Shares::default());
        let b = Generator::new(7, Shares::default());
        let c = Generator::new(8, Shares::default());
        for id in 100_000_001..100_000_101 {
            assert_eq!(a.product(id), b.product(id));
            assert_eq!(a.kind(id), b.kind(id));
        }
        let differ = (100_000_001..100_000_101)
            .filter(|&id| a.product(id).title != c.product(id).title)
            .count();
        assert!(
            differ > 50,
            "only {differ} of 100 titles differ between seeds"
        );
    }

    #[test]
    fn the_shares_of_page_kinds_land_where_configured() {
        let shares = Shares {
            captcha: 0.05,
            deleted: 0.03,
            sku_mismatch: 0.01,
        };
        let generator = Generator::new(1, shares);
        let blocked = share(|id| matches!(generator.kind(id), Kind::Blocked { .. }));
        let deleted = share(|id| matches!(generator.kind(id), Kind::Deleted { .. }));
        let mismatch = share(|id| matches!(generator.kind(id), Kind::SkuMismatch { .. }));
        assert!((0.04..0.06).contains(&blocked), "blocked {blocked}");
        assert!((0.02..0.04).contains(&deleted), "deleted {deleted}");
        assert!((0.005..0.015).contains(&mismatch), "mismatch {mismatch}");
    }

    #[test]
    fn the_content_does_not_depend_on_the_shares() {
        let a = Generator::new(3, Shares::default());
        let b = Generator::new(
            3,
            Shares {
                captcha: 0.5,
                ..Shares::default()
            },
        );
        for id in 100_000_001..100_000_051 {
            assert_eq!(a.product(id), b.product(id));
        }
    }

    #[test]
    fn prices_are_realistic_whole_krw() {
        let generator = Generator::new(2, Shares::default());
        let products: Vec<Product> = (0..SAMPLE)
            .map(|i| generator.product(100_000_001 + i))
            .collect();
        let n = products.len() as f64;
        let none = products.iter().filter(|p| p.price.is_none()).count() as f64 / n;
        let above = products
            .iter()
            .filter(|p| p.price.is_some_and(|x| x > 1_000_000))
            .count() as f64
            / n;
        let exactly = products
            .iter()
            .filter(|p| p.price == Some(1_000_000))
            .count();
        assert!((0.02..0.04).contains(&none), "no price {none}");
        assert!((0.10..0.15).contains(&above), "above 1,000,000 {above}");
        assert!(exactly > 0);
        for p in &products {
            if let Some(price) = p.price {
                assert!(price > 0 && price % 100 == 0, "price {price}");
                assert!(price <= p.category.max_price.max(1_000_000) + 10_000);
            }
        }
    }

    #[test]
    fn categories_are_three_or_four_levels_and_both_occur() {
        let generator = Generator::new(4, Shares::default());
        let depths: Vec<usize> = (0..2_000)
            .map(|i| generator.product(100_000_001 + i).category.path.len())
            .collect();
        assert!(depths.iter().all(|d| matches!(d, 3 | 4)));
        assert!(depths.contains(&3) && depths.contains(&4));
    }

    #[test]
    fn the_page_shapes_all_occur() {
        let generator = Generator::new(5, Shares::default());
        let products: Vec<Product> = (0..2_000)
            .map(|i| generator.product(100_000_001 + i))
            .collect();
        let absent = products
            .iter()
            .filter(|p| p.flight == Flight::Absent)
            .count();
        assert!(
            (40..=160).contains(&absent),
            "{absent} of 2000 without flight data"
        );
        assert!(
            products
                .iter()
                .any(|p| matches!(p.flight, Flight::Split { .. }))
        );
        assert!(products.iter().any(|p| p.offers_array));
        assert!(products.iter().any(|p| !p.offers_array));
        assert!(products.iter().any(|p| p.price_as_string));
        for condition in [Condition::New, Condition::Used, Condition::Unknown] {
            assert!(products.iter().any(|p| p.condition == condition));
        }
        for status in [SaleStatus::OnSale, SaleStatus::Reserved, SaleStatus::Sold] {
            assert!(products.iter().any(|p| p.status == status));
        }
        assert!(products.iter().all(|p| (1..=5).contains(&p.images.len())));
        assert!(
            products
                .iter()
                .any(|p| p.title.contains('"') || p.title.contains('\\'))
        );
        assert!(products.iter().any(|p| p.description.contains('\n')));
    }
}
