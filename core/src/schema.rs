//! The Avro schemas of the records marketflow moves, read from `core/schemas/*.avsc`, and the
//! registry subjects they are registered under (Confluent's TopicNameStrategy).

use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

/// An Avro schema shipped as a file in `core/schemas/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaFile {
    /// The record's full name, e.g. `io.marketflow.listing.Listing`.
    pub full_name: &'static str,
    /// The schema's JSON text, exactly as in the file.
    pub json: &'static str,
}

/// Key of the `listings` topic: `core/schemas/listing-key.avsc`.
pub const LISTING_KEY: SchemaFile = SchemaFile {
    full_name: "io.marketflow.listing.ListingKey",
    json: include_str!("../schemas/listing-key.avsc"),
};

/// Value of the `listings` topic: `core/schemas/listing.avsc`.
pub const LISTING: SchemaFile = SchemaFile {
    full_name: "io.marketflow.listing.Listing",
    json: include_str!("../schemas/listing.avsc"),
};

/// Key of the `listing-sums` topic: `core/schemas/listing-sum-key.avsc`.
pub const LISTING_SUM_KEY: SchemaFile = SchemaFile {
    full_name: "io.marketflow.sums.ListingSumKey",
    json: include_str!("../schemas/listing-sum-key.avsc"),
};

/// Value of the `listing-sums` topic: `core/schemas/listing-sum.avsc`.
pub const LISTING_SUM: SchemaFile = SchemaFile {
    full_name: "io.marketflow.sums.ListingSum",
    json: include_str!("../schemas/listing-sum.avsc"),
};

/// Key of the `scraper-events` topic: `core/schemas/scraper-event-key.avsc`.
pub const SCRAPER_EVENT_KEY: SchemaFile = SchemaFile {
    full_name: "io.marketflow.scraper.ScraperEventKey",
    json: include_str!("../schemas/scraper-event-key.avsc"),
};

/// Value of the `scraper-events` topic: `core/schemas/scraper-event.avsc`.
pub const SCRAPER_EVENT: SchemaFile = SchemaFile {
    full_name: "io.marketflow.scraper.ScraperEvent",
    json: include_str!("../schemas/scraper-event.avsc"),
};

/// Every schema file of the contract: one entry per file in `core/schemas/` (a test checks).
pub const ALL: [SchemaFile; 6] = [
    LISTING_KEY,
    LISTING,
    LISTING_SUM_KEY,
    LISTING_SUM,
    SCRAPER_EVENT_KEY,
    SCRAPER_EVENT,
];

impl SchemaFile {
    /// Parses the schema.
    ///
    /// # Errors
    /// When the file is not a valid Avro schema (a unit test guards every shipped file).
    pub fn parse(&self) -> Result<apache_avro::Schema, apache_avro::Error> {
        apache_avro::Schema::parse_str(self.json)
    }

    /// The schema as `schema_registry_converter` registers it.
    pub fn supplied(&self) -> SuppliedSchema {
        SuppliedSchema::new(
            Some(self.full_name.to_owned()),
            SchemaType::Avro,
            self.json.to_owned(),
        )
    }
}

/// Which half of a Kafka record a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The record's key.
    Key,
    /// The record's value.
    Value,
}

/// The registry subject of `topic`'s key or value under TopicNameStrategy: `<topic>-key` or
/// `<topic>-value`.
pub fn subject(topic: &str, part: Part) -> String {
    match part {
        Part::Key => format!("{topic}-key"),
        Part::Value => format!("{topic}-value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_schema_parses_under_its_declared_name() {
        for file in ALL {
            let schema = file
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", file.full_name));
            let name = match &schema {
                apache_avro::Schema::Record(record) => record.name.fullname(None),
                other => panic!("{} is not a record: {other:?}", file.full_name),
            };
            assert_eq!(name, file.full_name);
        }
    }

    #[test]
    fn every_file_in_the_schemas_folder_is_listed_once() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "avsc"))
            .map(|path| std::fs::read_to_string(&path).expect("a readable schema file"))
            .collect();
        let mut listed: Vec<String> = ALL.iter().map(|file| file.json.to_owned()).collect();
        on_disk.sort();
        listed.sort();
        assert_eq!(
            listed, on_disk,
            "schema::ALL must list every core/schemas/*.avsc file exactly once"
        );
    }

    #[test]
    fn subjects_follow_topic_name_strategy() {
        assert_eq!(subject("listings", Part::Key), "listings-key");
        assert_eq!(subject("listings", Part::Value), "listings-value");
    }
}
