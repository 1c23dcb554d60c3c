#!/usr/bin/env bash
# The market's own throughput on loopback: pages/s, and CPU-seconds per page of the market process
# (from /proc/<pid>/stat before and after). Needs no cluster; run it directly or as
# `scripts/bench.sh market`. Extra arguments go to market-load (--requests, --duration, --concurrency).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release -p marketflow-market --bins
bin=${CARGO_TARGET_DIR:-target}/release
port=${MARKET_BENCH_PORT:-18090}
base=http://127.0.0.1:$port

"$bin/market" --listen "127.0.0.1:$port" --products 100000 --captcha-rate 0.02 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$base/healthz" >/dev/null || { echo "market did not start on $base" >&2; exit 1; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
before=$(cpu_ticks)
report=$("$bin/market-load" --url "$base" "$@")
after=$(cpu_ticks)
echo "$report"
pages=$(sed -n 's/.*pages=\([0-9]*\).*/\1/p' <<<"$report")
awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v pages="$pages" 'BEGIN {
  cpu = ticks / hz
  printf "market cpu_seconds=%.2f cpu_seconds_per_page=%.6f pages_per_cpu_second=%.0f\n", cpu, cpu / pages, (cpu > 0 ? pages / cpu : 0)
}'
