#!/usr/bin/env bash
# The streams benchmark: scripts/bench.sh streams [N] (default 100000 listings).
# Fills a fresh topic with N Avro listings, then measures in the same run the raw rate of a plain
# consume→produce loop of the same bytes and the rate of the release `streams` binary (filter,
# state, changelog, partial sums) over the same topic, and prints both and their ratio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
n=${1:-100000}
cargo build --release -p marketflow-streams --bin streams --example bench
exec target/release/examples/bench "$n" target/release/streams
