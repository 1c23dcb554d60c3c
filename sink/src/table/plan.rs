//! The plan that turns a record into a row: which column takes which part of the record (its
//! coordinates, its key or a field of its value), the record's fields moved, not copied.

use apache_avro::types::Value;

use super::columns::{Source, Wanted};
use crate::typemap::{self, SqlValue, Unbindable};

/// The coordinates and decoded halves of one record, as a plan takes them apart.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its decoded key, when decoded.
    pub key: Option<Value>,
    /// Its decoded value; `None` for a tombstone.
    pub value: Option<Value>,
}

/// How the records of one (table, key schema, value schema) become rows.
#[derive(Debug)]
pub struct Plan {
    /// The table.
    pub table: String,
    /// The columns written, in order.
    pub columns: Vec<String>,
    /// The primary key columns (a subset of `columns`).
    pub key: Vec<String>,
    sources: Vec<Source>,
}

impl Plan {
    /// The plan writing the `wanted` columns to `table`, keyed by `key`.
    pub(super) fn new(table: String, wanted: Vec<Wanted>, key: Vec<String>) -> Self {
        let columns = wanted.iter().map(|w| w.def.name.clone()).collect();
        Self {
            table,
            columns,
            key,
            sources: wanted.into_iter().map(|w| w.source).collect(),
        }
    }

    /// The row of a record, in the order of [`Plan::columns`]; its strings move into the row.
    ///
    /// # Errors
    /// [`Unbindable`] when a field is missing or has no bound form.
    pub fn row(&self, record: Record<'_>) -> Result<Vec<SqlValue>, Unbindable> {
        self.values(record, |_| true)
    }

    /// The primary key values of a record, in the order of [`Plan::key`].
    ///
    /// # Errors
    /// As [`Plan::row`].
    pub fn key_row(&self, record: Record<'_>) -> Result<Vec<SqlValue>, Unbindable> {
        self.values(record, |column| self.key.iter().any(|k| k == column))
    }

    fn values(
        &self,
        mut record: Record<'_>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<SqlValue>, Unbindable> {
        let mut row = Vec::with_capacity(self.columns.len());
        // Columns come in the schema's field order, so each field is looked for first where
        // the one before it was found.
        let (mut key_at, mut value_at) = (0, 0);
        for (source, column) in self.sources.iter().zip(&self.columns) {
            if !wanted(column) {
                continue;
            }
            let missing = |what: &str| Unbindable {
                field: column.clone(),
                detail: format!("the record has no {what}"),
            };
            let value = match source {
                Source::Topic => SqlValue::Text(record.topic.to_owned()),
                Source::Partition => SqlValue::Int(i64::from(record.partition)),
                Source::Offset => SqlValue::Int(record.offset),
                Source::WholeKey => {
                    typemap::to_sql(record.key.take().ok_or_else(|| missing("key"))?, column)?
                }
                Source::KeyField(name) => {
                    let key = record.key.as_mut().ok_or_else(|| missing("key"))?;
                    let field = take_field(key, name, &mut key_at)
                        .ok_or_else(|| missing("such key field"))?;
                    typemap::to_sql(field, column)?
                }
                Source::ValueField(name) => {
                    let value = record.value.as_mut().ok_or_else(|| missing("value"))?;
                    let field = take_field(value, name, &mut value_at)
                        .ok_or_else(|| missing("such field"))?;
                    typemap::to_sql(field, column)?
                }
            };
            row.push(value);
        }
        Ok(row)
    }
}

/// Takes field `name` out of a record (leaving null), looking at position `*at` first and
/// leaving `*at` just past where it was found.
fn take_field(record: &mut Value, name: &str, at: &mut usize) -> Option<Value> {
    match record {
        Value::Record(fields) => {
            let position = match fields.get(*at) {
                Some((n, _)) if n == name => *at,
                _ => fields.iter().position(|(n, _)| n == name)?,
            };
            *at = position + 1;
            Some(std::mem::replace(&mut fields[position].1, Value::Null))
        }
        Value::Union(_, inner) => take_field(inner, name, at),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::columns::{key_columns, wanted_columns};
    use super::super::testing::{listing_key, listing_schema, settings};
    use super::*;

    #[test]
    fn plans_turn_records_into_rows() {
        let s = settings(|_| {});
        let wanted = wanted_columns(&s, Some(&listing_key()), Some(&listing_schema())).unwrap();
        let key = key_columns(&s, &wanted);
        let plan = Plan::new("listings".into(), wanted, key);
        let listing = marketflow_core::record::Listing {
            product_id: 42,
            title: "'; DROP TABLE listings; --".into(),
            price: None,
            condition: "used".into(),
            sale_status: "sold".into(),
            category_path: None,
            category_level1: Some("디지털".into()),
            category_level2: None,
            category_level3: None,
            category_level4: None,
            description: "🍎".into(),
            seller: None,
            location: None,
            view_count: Some(3),
            wish_count: None,
            chat_count: None,
            image_urls: vec![],
            posted_at: None,
            scraped_at: 1_700_000_000_000,
            source_url: "http://x".into(),
        };
        let value = apache_avro::to_value(&listing)
            .unwrap()
            .resolve(&listing_schema())
            .unwrap();
        let key = apache_avro::to_value(listing.key())
            .unwrap()
            .resolve(&listing_key())
            .unwrap();
        let record = Record {
            topic: "listings",
            partition: 0,
            offset: 9,
            key: Some(key),
            value: Some(value),
        };
        let row = plan.row(record.clone()).unwrap();
        assert_eq!(row.len(), plan.columns.len());
        assert_eq!(row[0], SqlValue::Int(42));
        let at = |c: &str| &row[plan.columns.iter().position(|n| n == c).unwrap()];
        assert_eq!(
            at("title"),
            &SqlValue::Text("'; DROP TABLE listings; --".into())
        );
        assert_eq!(at("price"), &SqlValue::Null);
        assert_eq!(at("category_level1"), &SqlValue::Text("디지털".into()));
        assert_eq!(at("image_urls"), &SqlValue::Text("[]".into()));
        assert_eq!(plan.key_row(record).unwrap(), [SqlValue::Int(42)]);
    }
}
