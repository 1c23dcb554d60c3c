//! The pipeline's figures in a few lines, for the demo's report: rows in MySQL, the global and
//! per-category running sums, what streams dropped and why, and how far behind each consumer
//! group of the pipeline is.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use marketflow_core::Config;
use marketflow_core::metric;
use marketflow_core::record::ListingSum;
use serde::Serialize;

use crate::inventory::{self, TableStatus};

/// How many categories the text lists.
const CATEGORIES_SHOWN: usize = 5;

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Every table of the sink's database with its row count.
    pub tables: Vec<TableStatus>,
    /// The global running sum (`all`), when streams has emitted one.
    pub total: Option<ListingSum>,
    /// The per-category running sums, largest first.
    pub categories: Vec<ListingSum>,
    /// Listings streams dropped, by reason (from its `/metrics`); empty when streams is down.
    pub dropped: BTreeMap<String, u64>,
    /// Lag of each consumer group of the sink and streams (the group ids and those starting with
    /// them), summed over its topics; `None` when it has committed nothing (streams' merge stage
    /// never commits: it re-reads its input on every assignment).
    pub lags: BTreeMap<String, Option<i64>>,
    /// The sink's and streams' own group ids: these must have committed for the pipeline to count
    /// as caught up.
    #[serde(skip)]
    pub main_groups: Vec<String>,
    /// Parts that could not be asked, and why.
    pub errors: Vec<String>,
}

impl Summary {
    /// Whether the sink and streams have processed everything they were given: their own groups
    /// have committed up to the end, and no other group of theirs that commits is behind.
    pub fn caught_up(&self) -> bool {
        let main_done = self
            .main_groups
            .iter()
            .all(|g| self.lags.get(g) == Some(&Some(0)));
        main_done && self.lags.values().all(|lag| lag.is_none_or(|l| l == 0))
    }

    /// Whether two summaries show the same figures (rows, sums, drops), lags aside.
    pub fn same_figures(&self, other: &Self) -> bool {
        let rows = |s: &Self| {
            s.tables
                .iter()
                .map(|t| (t.table.clone(), t.rows))
                .collect::<Vec<_>>()
        };
        rows(self) == rows(other)
            && self.total == other.total
            && self.categories == other.categories
            && self.dropped == other.dropped
    }
}

/// Gathers the figures.
pub async fn summarize(config: &Config) -> Summary {
    let mut errors = Vec::new();
    let topics: Vec<String> = vec![
        config.topics.listings.clone(),
        config.topics.listing_sums.clone(),
    ];
    let groups = [
        config.sink.group_id.clone(),
        config.streams.group_id.clone(),
    ];
    let topic_filter: inventory::NameFilter =
        Arc::new(move |name: &str| topics.iter().any(|t| t == name));
    let group_ids = groups.clone();
    let group_filter: inventory::NameFilter = Arc::new(move |name: &str| {
        group_ids
            .iter()
            .any(|g| name == g || name.starts_with(&format!("{g}-")))
    });
    let (kafka, tables, dropped) = tokio::join!(
        inventory::kafka_parts(config, topic_filter, group_filter),
        inventory::tables(config),
        dropped(config)
    );
    let (topics, groups_seen) = kafka.unwrap_or_else(|e| {
        errors.push(e);
        (Vec::new(), Vec::new())
    });
    let tables = tables.unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let sums = inventory::sums(config, &topics).await.unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let mut lags: BTreeMap<String, Option<i64>> =
        groups.iter().map(|g| (g.clone(), None)).collect();
    for group in groups_seen {
        let lag = (!group.topics.is_empty()).then(|| group.topics.iter().map(|t| t.lag).sum());
        lags.insert(group.group, lag);
    }
    let (total, mut categories): (Vec<ListingSum>, Vec<ListingSum>) =
        sums.into_iter().partition(|s| s.scope == "all");
    categories.sort_by_key(|s| std::cmp::Reverse(s.sum));
    Summary {
        tables,
        total: total.into_iter().next(),
        categories,
        dropped: dropped.unwrap_or_default(),
        lags,
        main_groups: groups.to_vec(),
        errors,
    }
}

/// `streams_records_dropped_total` by reason, read from streams' `/metrics`.
async fn dropped(config: &Config) -> Option<BTreeMap<String, u64>> {
    let asked = inventory::reachable(config.streams.admin_addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let text = client
        .get(format!("http://{asked}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(parse_dropped(&text))
}

/// The `reason` label and value of each `streams_records_dropped_total` line of a Prometheus page.
fn parse_dropped(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines().filter(|l| {
        l.strip_prefix(metric::streams::RECORDS_DROPPED)
            .is_some_and(|labels| labels.starts_with('{'))
    }) {
        let reason = line
            .split("reason=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(reason), Some(value)) = (reason, value) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a counter's value
            out.insert(reason.to_owned(), value as u64);
        }
    }
    out
}

/// One line of how far the pipeline is: each group's lag and the rows written so far.
pub fn progress(summary: &Summary) -> String {
    let lags: Vec<String> = summary
        .lags
        .iter()
        .filter_map(|(group, lag)| lag.map(|lag| format!("{group} lag {lag}")))
        .collect();
    let rows: i64 = summary.tables.iter().map(|t| t.rows).sum();
    let summed = summary.total.as_ref().map_or(0, |t| t.count);
    format!(
        "{}; {rows} rows in MySQL; {summed} listings summed",
        lags.join(", ")
    )
}

/// The figures as lines of `label  key=value ...`, easy to read and to check.
pub fn text(summary: &Summary) -> String {
    let mut out = String::new();
    for table in &summary.tables {
        let _ = writeln!(out, "MySQL rows       {} {}", table.table, table.rows);
    }
    match &summary.total {
        Some(s) => {
            let _ = writeln!(out, "Sum of all       {}", figures(s));
        }
        None => {
            let _ = writeln!(out, "Sum of all       (none emitted yet)");
        }
    }
    if !summary.categories.is_empty() {
        let scope = &summary.categories[0].scope;
        let _ = writeln!(out, "Top categories   ({scope}, by sum of prices)");
        for s in summary.categories.iter().take(CATEGORIES_SHOWN) {
            let _ = writeln!(out, "  {:<20} {}", s.value, figures(s));
        }
    }
    let dropped: Vec<String> = summary
        .dropped
        .iter()
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    let _ = writeln!(
        out,
        "Dropped          {}",
        if dropped.is_empty() {
            "(streams not reachable)".to_owned()
        } else {
            // Counted by the running streams process: a restart re-reads, and recounts, the
            // input after its last state change.
            format!("{} (by streams since it started)", dropped.join(" "))
        }
    );
    let lags: Vec<String> = summary
        .lags
        .iter()
        .map(|(group, lag)| {
            format!(
                "{group}={}",
                lag.map_or_else(|| "-".to_owned(), |l| l.to_string())
            )
        })
        .collect();
    let _ = writeln!(out, "Consumer lag     {}", lags.join(" "));
    for error in &summary.errors {
        let _ = writeln!(out, "Not reached      {error}");
    }
    out
}

fn figures(s: &ListingSum) -> String {
    let dash = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    format!(
        "count={} sum={} min={} max={}",
        s.count,
        s.sum,
        dash(s.min),
        dash(s.max)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_read_by_reason_from_the_metrics_page() {
        let page = "# TYPE streams_records_dropped_total counter\n\
                    streams_records_dropped_total{reason=\"over_max_price\"} 350\n\
                    streams_records_dropped_total{reason=\"no_price\"} 12\n\
                    streams_records_in_total 3000\n";
        let dropped = parse_dropped(page);
        assert_eq!(dropped.get("over_max_price"), Some(&350));
        assert_eq!(dropped.get("no_price"), Some(&12));
        assert_eq!(dropped.len(), 2);
    }

    #[test]
    fn caught_up_needs_every_group_at_zero() {
        let mut summary = Summary {
            tables: vec![],
            total: None,
            categories: vec![],
            dropped: BTreeMap::new(),
            lags: BTreeMap::from([("sink".to_owned(), Some(0)), ("streams".to_owned(), None)]),
            main_groups: vec!["sink".to_owned(), "streams".to_owned()],
            errors: vec![],
        };
        assert!(!summary.caught_up(), "streams has committed nothing yet");
        summary.lags.insert("streams".to_owned(), Some(0));
        summary.lags.insert("streams-merge".to_owned(), None);
        assert!(
            summary.caught_up(),
            "a group that never commits does not hold it up"
        );
        summary.lags.insert("streams-merge".to_owned(), Some(3));
        assert!(!summary.caught_up());
    }
}
