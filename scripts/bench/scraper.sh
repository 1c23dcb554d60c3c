#!/usr/bin/env bash
# The scraper end to end on one machine: a release `market` (no faults, no latency) on loopback,
# `scraper --once` over N ids into fresh topics of the local cluster (Avro through the registry,
# delivery awaited, checkpoints written). Prints listings/s (end to end, process start to exit)
# and CPU-seconds per page of the scraper process, beside a baseline measured in the same run:
# plain HTTP GETs of the same pages (market-load, reqwest, same concurrency, no parse/produce).
# Run as `scripts/bench.sh scraper [N]` (it brings the cluster up first). Default N=20000.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
n=${1:-20000}
concurrency=${SCRAPER_BENCH_CONCURRENCY:-128}
cargo build --release -p marketflow-market -p marketflow-scraper --bins
bin=${CARGO_TARGET_DIR:-target}/release
port=${SCRAPER_BENCH_PORT:-18092}
base=http://127.0.0.1:$port
first=100000001
work=$(mktemp -d)

"$bin/market" --listen "127.0.0.1:$port" --products "$((n + 1000))" --first-id "$first" \
  --captcha-rate 0.02 >"$work/market.log" 2>&1 &
market=$!
trap 'kill "$market" 2>/dev/null || true; wait "$market" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fs "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$base/healthz" >/dev/null || { echo "market did not start on $base" >&2; exit 1; }

echo "== baseline: plain GETs of $n product pages (market-load, concurrency $concurrency)"
baseline=$("$bin/market-load" --url "$base" --requests "$n" --concurrency "$concurrency" --duration 120s)
echo "$baseline"
base_rate=$(sed -n 's/.*pages_per_sec=\([0-9.]*\).*/\1/p' <<<"$baseline")

run=bench-$(date +%s)-$$
echo "== scraper --once over $n ids into topic $run-listings"
export MARKETFLOW__SCRAPER__BASE_URL=$base
export MARKETFLOW__SCRAPER__SELLER_HMAC_KEY=bench-key
export MARKETFLOW__SCRAPER__ADMIN_ADDR=127.0.0.1:0
export MARKETFLOW__SCRAPER__CONCURRENCY=$concurrency
export MARKETFLOW__SCRAPER__MAX_REQUESTS_PER_SEC=1000000
export MARKETFLOW__TOPICS__LISTINGS=$run-listings
export MARKETFLOW__TOPICS__SCRAPER_EVENTS=$run-events
export MARKETFLOW__SCRAPER__CHECKPOINT_TOPIC=$run-checkpoints
export RUST_LOG=${RUST_LOG:-warn}
/usr/bin/time -f '%e %U %S' -o "$work/time" \
  "$bin/scraper" --once --from "$first" --to "$((first + n - 1))" >"$work/summary" 2>"$work/stderr" \
  || { cat "$work/stderr" >&2; exit 1; }
cat "$work/summary"
read -r wall user sys <"$work/time"
listings=$(sed -n 's/.*: \([0-9]*\) listings,.*/\1/p' "$work/summary")
awk -v n="$n" -v listings="$listings" -v wall="$wall" -v user="$user" -v sys="$sys" \
  -v base="$base_rate" -v cores="$(nproc)" 'BEGIN {
  cpu = user + sys
  rate = listings / wall
  printf "scraper: %d ids, %d listings in %.2fs wall (process start to exit): %.0f listings/s, %.0f pages/s\n", n, listings, wall, rate, n / wall
  printf "scraper cpu_seconds=%.2f (user %.2f, sys %.2f) cpu_seconds_per_page=%.6f on %d cores\n", cpu, user, sys, cpu / n, cores
  printf "baseline plain GETs: %.0f pages/s; scraper pages/s / baseline = %.2f\n", base, (n / wall) / base
}'
