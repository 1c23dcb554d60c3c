//! The client our programs use, `schema_registry_converter`, against the `registry` binary:
//! a serde struct encoded with a supplied schema (registering it) and decoded back by id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::{Deserialize, Serialize};
use support::Registry;

const LISTING: &str = r#"{
  "type": "record",
  "name": "Listing",
  "namespace": "marketflow.test",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "price_cents", "type": "long"},
    {"name": "rating", "type": "double"},
    {"name": "seller", "type": ["null", "string"], "default": null}
  ]
}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Listing {
    id: String,
    price_cents: i64,
    rating: f64,
    seller: Option<String>,
}

fn strategy(topic: &str) -> SubjectNameStrategy {
    SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_owned(),
        false,
        SuppliedSchema::new(
            Some("marketflow.test.Listing".to_owned()),
            SchemaType::Avro,
            LISTING.to_owned(),
        ),
    )
}

#[tokio::test]
async fn a_struct_encoded_through_the_registry_decodes_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let sr = Registry::start(dir.path()).await;
    let encoder = AvroEncoder::new(SrSettings::new(sr.url.clone()));
    let listings = [
        Listing {
            id: "a-1".into(),
            price_cents: 129_900,
            rating: 4.5,
            seller: Some("acme".into()),
        },
        Listing {
            id: "b-2".into(),
            price_cents: -1,
            rating: 0.0,
            seller: None,
        },
    ];
    let mut encoded = Vec::new();
    for listing in &listings {
        encoded.push(
            encoder
                .encode_struct(listing, &strategy("listings"))
                .await
                .unwrap(),
        );
    }

    // The supplied schema was registered as the topic's value subject; the payload carries
    // the magic byte and its id.
    let (_, latest) = sr.get("/subjects/listings-value/versions/latest").await;
    let id = latest["id"].as_u64().unwrap();
    assert_eq!(latest["version"], 1);
    for bytes in &encoded {
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u64::from(u32::from_be_bytes(bytes[1..5].try_into().unwrap())),
            id
        );
    }

    // A fresh decoder (no cache shared with the encoder) fetches the schema by id.
    let decoder = AvroDecoder::new(SrSettings::new(sr.url.clone()));
    for (bytes, listing) in encoded.iter().zip(&listings) {
        let decoded = decoder.decode(Some(bytes)).await.unwrap();
        assert_eq!(
            decoded.name.map(|n| n.fullname(None)).as_deref(),
            Some("marketflow.test.Listing")
        );
        let back: Listing = apache_avro::from_value(&decoded.value).unwrap();
        assert_eq!(&back, listing);
    }

    // A second encoder registering the same schema under another topic reuses the id.
    let other = AvroEncoder::new(SrSettings::new(sr.url.clone()));
    let bytes = other
        .encode_struct(&listings[0], &strategy("listings-copy"))
        .await
        .unwrap();
    assert_eq!(bytes, encoded[0]);
}
