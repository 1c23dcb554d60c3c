#!/usr/bin/env bash
# The sink's throughput from a pre-filled topic of N listings into MariaDB, next to the raw rate
# of the same rows written with multi-row INSERTs of the same batch size, in the same run:
# ROUNDS pairs of them, and the median ratio.
# Usage: scripts/bench.sh sink [N=50000] [BATCH=500] [ROUNDS=5]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release -p marketflow-sink --bin sink-bench
RUST_LOG=${RUST_LOG:-warn} exec target/release/sink-bench "${1:-50000}" "${2:-500}" "${3:-5}"
