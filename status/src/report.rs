//! Renders the status as plain text for people (`marketflow status`) or JSON for machines
//! (`--json`).

use std::fmt::Write;

use crate::inventory::Status;

/// How many running sums the text view lists (the JSON has them all).
const SUMS_SHOWN: usize = 12;

/// The status as aligned plain text, one section per part.
pub fn text(status: &Status, header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    for section in [programs, topics, groups, subjects, tables, sums, unreached] {
        section(&mut out, status);
    }
    out
}

/// Which programs answer on their admin port.
fn programs(out: &mut String, status: &Status) {
    let _ = writeln!(out, "\nPROGRAMS");
    for p in &status.programs {
        let _ = writeln!(
            out,
            "  {:<10} {:<5} {}",
            p.name,
            if p.up { "up" } else { "down" },
            p.address
        );
    }
}

/// Every topic's partitions, end offsets and records.
fn topics(out: &mut String, status: &Status) {
    let _ = writeln!(
        out,
        "\nTOPICS{:>38}{:>14}{:>12}",
        "PARTITIONS", "END OFFSETS", "RECORDS"
    );
    for t in &status.topics {
        let _ = writeln!(
            out,
            "  {:<40}{:>8}{:>14}{:>12}",
            t.name,
            t.partitions.len(),
            t.end_offsets(),
            t.messages()
        );
    }
}

/// Every consumer group's committed offsets, end offsets and lag, per topic.
fn groups(out: &mut String, status: &Status) {
    let _ = writeln!(
        out,
        "\nCONSUMER GROUPS{:>33}{:>12}{:>12}{:>10}",
        "TOPIC", "COMMITTED", "END", "LAG"
    );
    for g in &status.groups {
        let _ = writeln!(out, "  {} ({}, {} members)", g.group, g.state, g.members);
        for lag in &g.topics {
            let _ = writeln!(
                out,
                "  {:<46}{:>12}{:>12}{:>10}",
                format!("  {}", lag.topic),
                lag.committed,
                lag.end,
                lag.lag
            );
        }
    }
}

/// Every registry subject's versions and latest schema id.
fn subjects(out: &mut String, status: &Status) {
    let _ = writeln!(out, "\nSUBJECTS{:>40}{:>10}", "VERSIONS", "LATEST ID");
    for s in &status.subjects {
        let versions = s
            .versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let id = s
            .latest_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string());
        let _ = writeln!(out, "  {:<38}{:>8}{:>10}", s.subject, versions, id);
    }
}

/// Every table's row count.
fn tables(out: &mut String, status: &Status) {
    let _ = writeln!(out, "\nMYSQL TABLES{:>36}", "ROWS");
    for t in &status.tables {
        let _ = writeln!(out, "  {:<38}{:>8}", t.table, t.rows);
    }
}

/// The first [`SUMS_SHOWN`] running sums.
fn sums(out: &mut String, status: &Status) {
    let _ = writeln!(
        out,
        "\nRUNNING SUMS (latest){:>17}{:>16}{:>12}{:>12}",
        "COUNT", "SUM KRW", "MIN", "MAX"
    );
    for s in status.sums.iter().take(SUMS_SHOWN) {
        let scope = if s.scope == "all" {
            "all".to_owned()
        } else {
            format!("{}={}", s.scope, s.value)
        };
        let dash = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "  {:<36}{:>8}{:>16}{:>12}{:>12}",
            scope,
            s.count,
            s.sum,
            dash(s.min),
            dash(s.max)
        );
    }
    if status.sums.len() > SUMS_SHOWN {
        let _ = writeln!(
            out,
            "  ... and {} more (--json lists them all)",
            status.sums.len() - SUMS_SHOWN
        );
    }
}

/// The parts that could not be asked, if any.
fn unreached(out: &mut String, status: &Status) {
    if !status.errors.is_empty() {
        let _ = writeln!(out, "\nNOT REACHED");
        for e in &status.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{PartitionStatus, ProgramStatus, TopicStatus};

    #[test]
    fn the_text_names_every_part_and_its_figures() {
        let status = Status {
            programs: vec![ProgramStatus {
                name: "sink".into(),
                address: "127.0.0.1:19302".into(),
                up: true,
            }],
            topics: vec![TopicStatus {
                name: "listings".into(),
                partitions: vec![
                    PartitionStatus {
                        partition: 0,
                        low: 0,
                        high: 5,
                    },
                    PartitionStatus {
                        partition: 1,
                        low: 2,
                        high: 7,
                    },
                ],
            }],
            groups: vec![],
            subjects: vec![],
            tables: vec![],
            sums: vec![],
            errors: vec!["MySQL at 127.0.0.1:13306/marketflow: refused".into()],
        };
        let text = text(&status, "marketflow status");
        assert!(text.contains("sink       up    127.0.0.1:19302"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("listings")
                    && l.trim_end().ends_with("2            12          10")),
            "{text}"
        );
        assert!(
            text.contains("NOT REACHED\n  MySQL at 127.0.0.1:13306/marketflow: refused"),
            "{text}"
        );
    }
}
