#!/usr/bin/env bash
# The demo: the whole pipeline, offline, on the bundled market, without Docker.
#
#   scripts/demo.sh         bring the local cluster up, build, start market + sink + streams,
#                           scrape DEMO_LISTINGS product pages, wait for MySQL and the sums to catch
#                           up, and print a report; the programs keep running afterwards
#   scripts/demo.sh stop    stop the programs the demo started (the cluster stays up)
#
# Settings (environment): DEMO_LISTINGS (default 3000) product ids to scrape; DEMO_PROFILE (dev:
# it shares the build `scripts/cluster.sh up` and the tests make, and a first demo on a fresh
# clone is ready minutes sooner; release for the benchmarks' speed); DEMO_SEED (7) the market's
# seed; DEMO_WAIT (300) seconds to wait for the pipeline to catch up; DEMO_BUILD=0 uses the
# binaries already in DEMO_BIN (as the demo's test does). Any MARKETFLOW__... variable reaches the
# programs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STATE=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}
RUN=${DEMO_RUN_DIR:-$STATE/demo}
LISTINGS=${DEMO_LISTINGS:-3000}
PROFILE=${DEMO_PROFILE:-dev}
SEED=${DEMO_SEED:-7}
WAIT=${DEMO_WAIT:-300}
FIRST_ID=100000001
MARKET_URL=${MARKETFLOW__SCRAPER__BASE_URL:-http://127.0.0.1:18080}
SINK_ADMIN=${MARKETFLOW__SINK__ADMIN_ADDR:-127.0.0.1:19302}
STREAMS_ADMIN=${MARKETFLOW__STREAMS__ADMIN_ADDR:-127.0.0.1:19303}
started=$SECONDS

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
  printf '\033[1;31mdemo: %s\033[0m\n' "$*" >&2
  exit 1
}

stop_programs() {
  local name pid
  for name in scraper streams sink market; do
    pid=$(cat "$RUN/$name.pid" 2>/dev/null) || continue
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
  done
}

# start NAME CMD...: runs a program in the background, logging to $RUN/NAME.log.
start() {
  local name=$1
  shift
  "$@" >>"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# healthy NAME URL: waits until URL answers, or stops the demo naming the program's log.
healthy() {
  local name=$1 url=$2
  for _ in $(seq 300); do
    curl -sf "$url" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null || { tail -n 20 "$RUN/$name.log" >&2; die "$name exited; see $RUN/$name.log"; }
    sleep 0.2
  done
  die "$name did not answer at $url within 60s; see $RUN/$name.log"
}

if [[ ${1:-} == stop ]]; then
  stop_programs
  echo "demo programs stopped; the cluster is still up (scripts/cluster.sh down stops it)" >&2
  exit 0
fi
[[ $# == 0 ]] || die "usage: scripts/demo.sh [stop]"

step "1/5 The local cluster: three Kafka brokers, schema registry, MariaDB (a first run fetches Kafka from Maven Central and MariaDB from Debian)"
scripts/cluster.sh up
# The programs' defaults point at the local cluster; settings given in the environment stay.
export MARKETFLOW_CLUSTER_DIR=$STATE

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $PROFILE in dev | test) BIN=$TARGET/debug ;; *) BIN=$TARGET/$PROFILE ;; esac
BIN=${DEMO_BIN:-$BIN}
if [[ ${DEMO_BUILD:-1} != 0 ]]; then
  step "2/5 Building market, scraper, sink, streams and marketflow ($PROFILE)"
  cargo build --profile "$PROFILE" -p marketflow-market -p marketflow-scraper -p marketflow-sink \
    -p marketflow-streams -p marketflow-status
else
  step "2/5 Using the programs in $BIN"
fi
for program in market scraper sink streams marketflow; do
  [[ -x $BIN/$program ]] || die "$BIN/$program is missing: build it (cargo build --profile $PROFILE)"
done

step "3/5 Starting market ($LISTINGS products at $MARKET_URL), sink ($SINK_ADMIN) and streams ($STREAMS_ADMIN)"
mkdir -p "$RUN"
stop_programs
# A key of the demo's own for pseudonymising sellers; set your own secret for real data.
export MARKETFLOW__SCRAPER__SELLER_HMAC_KEY=${MARKETFLOW__SCRAPER__SELLER_HMAC_KEY:-marketflow-demo-only-key}
start market "$BIN/market" --listen "${MARKET_URL#http://}" --products "$LISTINGS" --seed "$SEED" --first-id "$FIRST_ID"
start sink "$BIN/sink"
start streams "$BIN/streams"
healthy market "$MARKET_URL/healthz"
healthy sink "http://$SINK_ADMIN/healthz"
healthy streams "http://$STREAMS_ADMIN/healthz"

step "4/5 Scraping product ids $FIRST_ID..$((FIRST_ID + LISTINGS - 1)) into Kafka"
"$BIN/scraper" --once --from "$FIRST_ID" --to "$((FIRST_ID + LISTINGS - 1))" | tee "$RUN/scrape.txt" ||
  die "the scrape failed; see the lines above"

step "5/5 Waiting until MySQL and the running sums have caught up (at most ${WAIT}s)"
"$BIN/marketflow" summary --wait "$WAIT" >"$RUN/summary.txt" || {
  cat "$RUN/summary.txt" >&2
  die "the pipeline did not catch up within ${WAIT}s; see $RUN/sink.log and $RUN/streams.log"
}

cat <<EOF

marketflow demo report (took $((SECONDS - started))s)
Scraped          $(cat "$RUN/scrape.txt")
$(cat "$RUN/summary.txt")

Look further:
  $BIN/marketflow status
      the whole data map: topics, consumer lag, registry subjects, MySQL tables, sums
  curl http://$SINK_ADMIN/status   (and curl -X POST -H 'content-type: application/json' http://$SINK_ADMIN/pause, /resume, /replay;
      with sink.admin_token set, add -H "authorization: Bearer \$MARKETFLOW__SINK__ADMIN_TOKEN")
      the sink's partitions, lag and rows written; /metrics for Prometheus
  curl http://$STREAMS_ADMIN/status
      the streams worker's partitions and state
  curl $MARKET_URL/product/$FIRST_ID   and   curl $MARKET_URL/__truth/$FIRST_ID
      a product page, and what the scraper should read from it
  logs: $RUN/*.log
Stop: scripts/demo.sh stop (the programs), then scripts/cluster.sh down (the cluster).
EOF
