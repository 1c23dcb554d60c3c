//! The decoded-size cap, measured: a ~100-byte record naming an array of arrays of nulls (items
//! that take no input) is refused with a typed error, the process's peak memory staying small.
//! The decode runs in a child process limited to 1 GiB of address space (`ulimit -v`), so that
//! a decoder without the cap fails here ("memory allocation of … bytes failed") instead of
//! taking the shared machine's memory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::process::Command;

use apache_avro::Schema;
use apache_avro::types::Value;
use marketflow_core::codec::{CodecError, HEADER_LEN, WriterSchema};

/// Set in the child process that does the decoding.
const CHILD: &str = "MARKETFLOW_DECODE_BOUNDS_CHILD";

/// The process's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Runs test `name` of this binary again in a child process with `CHILD` set and at most
/// 1 GiB of address space, and returns its output; fails when the child does.
fn in_a_bounded_child(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 1048576 && exec "$0" --exact "$1" --nocapture --test-threads=1"#)
        .arg(&exe)
        .arg(name)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

fn zigzag(n: i64) -> Vec<u8> {
    let mut z = n.cast_unsigned() << 1 ^ (n >> 63).cast_unsigned();
    let mut out = Vec::new();
    while z >= 0x80 {
        out.push(u8::try_from(z & 0x7f).unwrap() | 0x80);
        z >>= 7;
    }
    out.push(u8::try_from(z).unwrap());
    out
}

/// A whole record (wire-format header included) of schema
/// `{"type":"array","items":{"type":"array","items":"null"}}`: as many inner arrays as fit in
/// 100 bytes, each of as many nulls as apache-avro's own per-allocation limit (512 MiB) allows.
fn bomb() -> Vec<u8> {
    let per_array = i64::try_from(
        apache_avro::util::DEFAULT_MAX_ALLOCATION_BYTES / std::mem::size_of::<Value>(),
    )
    .unwrap();
    let inner = [zigzag(per_array), zigzag(0)].concat();
    let arrays = (100 - HEADER_LEN - 2) / inner.len();
    let mut record = vec![0, 0, 0, 0, 7];
    record.extend(zigzag(i64::try_from(arrays).unwrap()));
    for _ in 0..arrays {
        record.extend(&inner);
    }
    record.extend(zigzag(0));
    record
}

const BOMB_SCHEMA: &str = r#"{"type":"array","items":{"type":"array","items":"null"}}"#;

#[test]
fn the_nested_null_bomb_is_refused_quickly_with_bounded_memory() {
    if std::env::var_os(CHILD).is_none() {
        let out = in_a_bounded_child("the_nested_null_bomb_is_refused_quickly_with_bounded_memory");
        assert!(out.contains("refused; peak RSS"), "{out}");
        print!("{out}");
        return;
    }
    let record = bomb();
    assert!(record.len() <= 100, "{} bytes", record.len());
    let writer = WriterSchema::new(7, Schema::parse_str(BOMB_SCHEMA).unwrap()).unwrap();

    // What decoding it whole would take: many gigabytes.
    let demand = match writer.check_size(&record[HEADER_LEN..], usize::MAX) {
        Ok(bytes) => bytes,
        Err(other) => panic!("the bomb is a valid body: {other:?}"),
    };
    assert!(demand > 8 << 30, "{demand}");

    let before = peak_rss();
    match writer.decode(&record[HEADER_LEN..], 4 << 20) {
        Err(error @ CodecError::TooLarge { id: 7, .. }) => {
            assert_eq!(error.class(), "too_large");
            assert!(!error.is_retryable());
            assert!(error.to_string().contains("4194304"), "{error}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let after = peak_rss();
    assert!(after < 64 << 20, "peak RSS {after} bytes");
    println!(
        "{}-byte record ({demand} bytes to decode whole) refused; peak RSS {before} bytes \
         before, {after} after",
        record.len()
    );
}

#[test]
fn a_recursive_schema_cannot_nest_values_a_level_per_input_byte() {
    let schema = r#"{"type":"record","name":"R","fields":[{"name":"next","type":["null","R"]}]}"#;
    let writer = WriterSchema::new(8, Schema::parse_str(schema).unwrap()).unwrap();
    // Branch 1 (`R`) a hundred thousand times: the decoder's recursion would overflow the stack.
    let body = vec![2u8; 100_000];
    match writer.decode(&body, 4 << 20) {
        Err(error @ CodecError::TooLarge { id: 8, .. }) => {
            assert!(error.to_string().contains("deeper than"), "{error}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
