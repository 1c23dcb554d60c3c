//! Placeholder of the benchmark binary (see scripts/bench/sink.sh).

fn main() {}
