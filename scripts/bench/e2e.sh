#!/usr/bin/env bash
# The whole pipeline at a steady rate: scripts/bench.sh e2e [SECONDS] [--rate R] [--no-build]
# Runs release builds of `market` (its head growing by R new product ids a second, default 1,000;
# about 96 % of them listings, the rest deleted or sku-mismatched), `scraper` in continuous mode
# (polling the recent list every 100ms and visiting each new id as it appears, 128 pages at
# once), `sink` into a fresh MariaDB database and `streams`, for SECONDS (default 60) from the
# scraper's start, on topics, consumer groups, a database and ports of the run's own (deleted at
# the end, registry subjects too). It prints one table: p50, p99, max and mean of
# sink_end_to_end_latency_seconds and streams_end_to_end_latency_seconds (the quantiles are the
# exporter's summary quantiles, kept over a rolling 3 x 20 s from the first sample, so a run over
# 60 s reports its last 40-60 s; the mean is over the whole run), each program's max RSS (VmHWM in
# /proc/PID/status, sampled every 0.5 s) and CPU, what each stage counted, the CPU the cluster
# and other processes took, and the command to reproduce. Any MARKETFLOW__... variable in the
# environment reaches the programs (e.g. MARKETFLOW__SINK__BATCH_MAX_AGE=100ms); the run's own
# topics, groups, database and addresses are always its own. --no-build runs the binaries already
# in target/release. Ports: E2E_BENCH_PORT+1 to +4 (default 19611-19614).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
die() { echo "bench e2e: $*" >&2; exit 1; }
MARKETFLOW_CLUSTER_DIR=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}

# The MARKETFLOW__ settings given in the environment, for the command that reproduces the run:
# secrets left out, and the names and addresses this script always sets.
given=
while IFS= read -r line; do
  key=${line%%=*}
  case $key in
    *KEY* | *TOKEN* | *PASSWORD* | *SASL* | *DATABASE_URL | MARKETFLOW__TOPICS__* | *_TOPIC | \
      *__ADMIN_ADDR | *__GROUP_ID | MARKETFLOW__SINK__TOPICS | MARKETFLOW__SCRAPER__BASE_URL) ;;
    MARKETFLOW__*) given+="$key=$(printf %q "${line#*=}") " ;;
  esac
done < <(env | sort)
seconds=60 rate=1000 build=1
while (($#)); do
  case $1 in
    --rate) rate=${2:?--rate needs a value}; shift ;;
    --no-build) build=0 ;;
    [0-9]*) seconds=$1 ;;
    *) die "unknown argument $1 (usage: scripts/bench.sh e2e [SECONDS] [--rate R] [--no-build])" ;;
  esac
  shift
done
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds > 0)) || die "SECONDS must be a positive whole number"

if ((build)); then
  cargo build --release -p marketflow-market -p marketflow-scraper -p marketflow-sink \
    -p marketflow-streams --bin market --bin scraper --bin sink --bin streams
fi
bin=${CARGO_TARGET_DIR:-target}/release
for program in market scraper sink streams; do
  [[ -x $bin/$program ]] || die "$bin/$program is missing: run without --no-build"
done

# Names as core's testkit makes them (PREFIX-<pid>-<hex time>-<n>), so that `scripts/cluster.sh
# prune` deletes the topics should this script be killed before it cleans up.
run=e2e-$$-$(printf %x "$(date +%s)")-0
database=e2e_$$_$(printf %x "$(date +%s)")
port=${E2E_BENCH_PORT:-19610}
market_url=http://127.0.0.1:$((port + 1))
scraper_admin=127.0.0.1:$((port + 2))
sink_admin=127.0.0.1:$((port + 3))
streams_admin=127.0.0.1:$((port + 4))
registry=${MARKETFLOW__REGISTRY__URL:-http://127.0.0.1:18081}
mysql=(mysql -h 127.0.0.1 -P 13306 -u marketflow -pmarketflow)
work=$(mktemp -d)
names=(market scraper sink streams)
declare -A pid=()

# stop NAME: SIGTERM, then SIGKILL after 30 s.
stop() {
  local p=${pid[$1]:-}
  [[ -n $p ]] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "pid[$1]"
}

cleanup() {
  local status=$? subject subjects groups
  if [[ -n ${sampler:-} ]]; then
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
  fi
  for name in scraper sink streams market; do stop "$name"; done
  echo "bench e2e: deleting the run's topics, consumer groups, registry subjects and database" >&2
  scripts/cluster.sh kafka topics --delete --if-exists --topic "$run-.*" >/dev/null 2>&1 || true
  groups=$(scripts/cluster.sh kafka consumer-groups --list 2>/dev/null | grep "^$run-" || true)
  if [[ -n $groups ]]; then
    # shellcheck disable=SC2046
    scripts/cluster.sh kafka consumer-groups --delete $(printf -- '--group %s ' $groups) \
      >/dev/null 2>&1 || true
  fi
  subjects=$(curl -sf "$registry/subjects" 2>/dev/null | jq -r '.[]' 2>/dev/null || true)
  for subject in $(grep "^$run-" <<<"$subjects" || true); do
    curl -sf -X DELETE "$registry/subjects/$subject" >/dev/null 2>&1 || true
    curl -sf -X DELETE "$registry/subjects/$subject?permanent=true" >/dev/null 2>&1 || true
  done
  "${mysql[@]}" -e "DROP DATABASE IF EXISTS \`$database\`" 2>/dev/null || true
  if ((status == 0)); then
    rm -rf "$work"
  else
    echo "bench e2e: the programs' logs are in $work" >&2
  fi
}
trap cleanup EXIT

# start NAME URL CMD...: runs CMD in the background (log in $work/NAME.log), waits for URL.
start() {
  local name=$1 url=$2
  shift 2
  "$@" >"$work/$name.log" 2>&1 </dev/null &
  pid[$name]=$!
  for _ in $(seq 300); do
    curl -sf "$url" >/dev/null 2>&1 && return 0
    if ! kill -0 "${pid[$name]}" 2>/dev/null; then
      tail -n 20 "$work/$name.log" >&2
      die "$name exited; see $work/$name.log"
    fi
    sleep 0.2
  done
  die "$name did not answer at $url within 60s; see $work/$name.log"
}

export MARKETFLOW__TOPICS__LISTINGS=$run-listings
export MARKETFLOW__TOPICS__LISTINGS_AFFORDABLE=$run-affordable
export MARKETFLOW__TOPICS__LISTING_SUMS=$run-sums
export MARKETFLOW__TOPICS__SCRAPER_EVENTS=$run-events
export MARKETFLOW__TOPICS__DEAD_LETTER=$run-dlq
export MARKETFLOW__SCRAPER__BASE_URL=$market_url
export MARKETFLOW__SCRAPER__ADMIN_ADDR=$scraper_admin
export MARKETFLOW__SCRAPER__CHECKPOINT_TOPIC=$run-checkpoints
export MARKETFLOW__SCRAPER__SELLER_HMAC_KEY=${MARKETFLOW__SCRAPER__SELLER_HMAC_KEY:-bench-key}
# Start at the head (no window of old ids first) and see new ids within 100 ms. Each page
# awaits its own delivery (acks=all), so the crawl's rate is about concurrency / (fetch + ack);
# at the default 64 it fell to 580-680 listings/s on 2 cores, so it is 128 here (as in
# `scripts/bench.sh scraper`).
export MARKETFLOW__SCRAPER__WINDOW=${MARKETFLOW__SCRAPER__WINDOW:-1}
export MARKETFLOW__SCRAPER__POLL_INTERVAL=${MARKETFLOW__SCRAPER__POLL_INTERVAL:-100ms}
export MARKETFLOW__SCRAPER__CONCURRENCY=${MARKETFLOW__SCRAPER__CONCURRENCY:-128}
export MARKETFLOW__SINK__DATABASE_URL=mysql://marketflow:marketflow@127.0.0.1:13306/$database
export MARKETFLOW__SINK__TOPICS="[\"$run-listings\"]"
export MARKETFLOW__SINK__GROUP_ID=$run-sink
export MARKETFLOW__SINK__ADMIN_ADDR=$sink_admin
export MARKETFLOW__STREAMS__GROUP_ID=$run-streams
export MARKETFLOW__STREAMS__CHANGELOG_TOPIC=$run-changelog
export MARKETFLOW__STREAMS__PARTIALS_TOPIC=$run-partials
export MARKETFLOW__STREAMS__ADMIN_ADDR=$streams_admin
export RUST_LOG=${RUST_LOG:-warn}

echo "bench e2e: run $run: market at $rate new ids/s, ${seconds}s; logs in $work" >&2
"${mysql[@]}" -e "CREATE DATABASE \`$database\` CHARACTER SET utf8mb4" ||
  die "cannot create database $database on 127.0.0.1:13306: run scripts/cluster.sh up"
# streams needs its input topic at start; the scraper would make the same one (3 partitions).
scripts/cluster.sh kafka topics --create --if-not-exists --topic "$run-listings" --partitions 3 \
  >/dev/null

start market "$market_url/healthz" "$bin/market" --listen "${market_url#http://}" --products 1000 \
  --new-per-sec "$rate"
start sink "http://$sink_admin/healthz" "$bin/sink"
start streams "http://$streams_admin/healthz" "$bin/streams"
# Records flow only once both consumers own their partitions, so that the run measures the
# pipeline, not a group join.
owned() { curl -sf "http://$1/status" | jq '.partitions | length' 2>/dev/null || echo 0; }
for _ in $(seq 300); do
  sink_parts=$(owned "$sink_admin") streams_parts=$(owned "$streams_admin")
  ((sink_parts == 3 && streams_parts == 3)) && break
  sleep 0.2
done
((sink_parts == 3 && streams_parts == 3)) ||
  die "sink ($sink_parts) and streams ($streams_parts) own not all 3 input partitions after 60s"

# Every 0.5 s: each program's VmHWM (its peak RSS so far, in kB) into $work/NAME.hwm; and
# /metrics of each program read and thrown away. The exporter keeps histogram samples until
# /metrics is read, and a read places them into a rolling summary (3 x 20 s) aligned on the
# first sample it handles, which is the newest block's, not the oldest: a first read after a
# minute would keep about one batch's samples in the quantiles (and lose the rest). Reading
# every 0.5 s from before the first record loses at most the first half second's.
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
sample() {
  local name kb admin
  while :; do
    for name in "${names[@]}"; do
      kb=$(hwm "${pid[$name]}")
      if [[ -n $kb ]]; then echo "$kb" >"$work/$name.hwm"; fi
    done
    for admin in "$scraper_admin" "$sink_admin" "$streams_admin"; do
      curl -sf "http://$admin/metrics" >/dev/null 2>&1 || true
    done
    sleep 0.5
  done
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The whole machine's CPU ticks: "busy total interrupts steal" (busy: all but idle and iowait;
# interrupts: irq and softirq, where loopback networking goes, charged to no process; steal:
# taken by the hypervisor of a virtual machine).
machine_ticks() {
  awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t, $7 + $8, $9 }' \
    /proc/stat
}

# The run's time starts with the scraper's process: its first record (and so the summaries'
# first bucket) comes later, so that a final read at SECONDS <= 60 still sees every bucket.
began=$(date +%s.%N)
load_before=$(cut -d' ' -f1 /proc/loadavg)
read -r busy_before total_before irq_before steal_before < <(machine_ticks)
# The cluster's processes (brokers, registry, MariaDB) all name its state directory.
cluster_pids=$(pgrep -f -- "$MARKETFLOW_CLUSTER_DIR" | paste -sd' ' || true)
cluster_ticks() {
  local p t=0
  for p in $cluster_pids; do t=$((t + $(cpu_ticks "$p"))); done
  echo "$t"
}
cluster_before=$(cluster_ticks)
declare -A ticks=([scraper]=0)
for name in market sink streams; do ticks[$name]=$(cpu_ticks "${pid[$name]}"); done
start scraper "http://$scraper_admin/healthz" "$bin/scraper"
sample &
sampler=$!
sleep "$(awk -v b="$began" -v s="$seconds" -v n="$(date +%s.%N)" \
  'BEGIN { d = b + s - n; print (d > 0 ? d : 0) }')"

# The figures at the end of the run, before anything stops.
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=
elapsed=$(awk -v b="$began" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - b }')
read -r busy_after total_after irq_after steal_after < <(machine_ticks)
cluster_cpu=$(($(cluster_ticks) - cluster_before))
declare -A cpu=()
for name in "${names[@]}"; do
  kill -0 "${pid[$name]}" 2>/dev/null || die "$name exited during the run; see $work/$name.log"
  cpu[$name]=$(($(cpu_ticks "${pid[$name]}") - ticks[$name]))
done
for name in scraper sink streams; do
  admin=${name}_admin
  curl -sf "http://${!admin}/metrics" >"$work/$name.prom" || die "$name's /metrics did not answer"
done
newest=$(curl -sf "$market_url/__truth" | jq '.newest_id' 2>/dev/null || echo 0)
for name in "${names[@]}"; do
  kb=$(hwm "${pid[$name]}")
  if [[ -n $kb ]]; then echo "$kb" >"$work/$name.hwm"; fi
done
load_after=$(cut -d' ' -f1 /proc/loadavg)
busy=$(((busy_after - busy_before) * 100 / (total_after - total_before)))

# quantile FILE NAME Q: the Q-quantile of NAME in seconds: the summary's own line when the
# exporter renders a summary (it does, having no buckets configured); else interpolated linearly
# within the cumulative buckets of a histogram, as Prometheus' histogram_quantile does (label
# sets summed by `le`).
quantile() {
  local value
  value=$(awk -v k="$2{quantile=\"$3\"} " 'index($0, k) == 1 { print $2; exit }' "$1")
  if [[ -n $value ]]; then
    echo "$value"
    return
  fi
  { grep -F "$2_bucket{" "$1" || true; } | sed -n 's/.*le="\([^"]*\)".* \([0-9.e+]*\)$/\1 \2/p' |
    awk '{ n[$1] += $2 } END { for (le in n) print (le == "+Inf" ? "inf" : le), n[le] }' |
    sort -g | awk -v q="$3" '
      { le[NR] = $1; c[NR] = $2 }
      END {
        if (NR == 0 || c[NR] == 0) { print "nan"; exit }
        rank = q * c[NR]; lower = 0; below = 0
        for (i = 1; i <= NR; i++) {
          if (c[i] >= rank) {
            if (le[i] == "inf") { print lower; exit }
            if (c[i] == below) print le[i]
            else print lower + (le[i] - lower) * (rank - below) / (c[i] - below)
            exit
          }
          lower = le[i]; below = c[i]
        }
      }'
}
# metric FILE SELECTOR: the sum of the lines whose name (and labels) start with SELECTOR.
metric() { awk -v s="$2" 'index($0, s) == 1 { sum += $NF } END { printf "%d", sum }' "$1"; }

listed=$(metric "$work/scraper.prom" 'scraper_outcomes_total{outcome="listing"')
visited=$(metric "$work/scraper.prom" 'scraper_outcomes_total{')
sink_rows=$(metric "$work/sink.prom" sink_rows_written_total)
sink_lag=$(metric "$work/sink.prom" sink_consumer_lag)
streams_in=$(metric "$work/streams.prom" streams_records_in_total)
streams_lag=$(metric "$work/streams.prom" streams_consumer_lag)
behind=$((newest - $(metric "$work/scraper.prom" scraper_checkpoint_id) + 1))
produce_p50=$(quantile "$work/scraper.prom" scraper_produce_latency_seconds 0.5)
produce_p99=$(quantile "$work/scraper.prom" scraper_produce_latency_seconds 0.99)
hz=$(getconf CLK_TCK)

# ms SECONDS: as whole milliseconds ("-" stays).
ms() { awk -v s="$1" 'BEGIN { if (s == "-") print "-"; else printf "%.0f ms\n", s * 1000 }'; }
# share TICKS: CPU ticks over the run as a percentage of one core.
share() {
  awk -v t="$1" -v hz="$hz" -v e="$elapsed" 'BEGIN { printf "%.0f%%\n", 100 * t / hz / e }'
}
ours=$((cpu[market] + cpu[scraper] + cpu[sink] + cpu[streams]))
irq=$((irq_after - irq_before)) steal=$((steal_after - steal_before))
others=$((busy_after - busy_before - ours - cluster_cpu - irq - steal))
((others > 0)) || others=0
window="all of the run"
((seconds > 60)) && window="its last 40-60 s"

per_sec=$(awk -v l="$listed" -v e="$elapsed" 'BEGIN { printf "%.0f", l / e }')
echo "marketflow e2e: market +$rate ids/s for ${elapsed}s, $(nproc) cores" \
  "(load average $load_before, then $load_after)"
echo "scraper: $visited ids, $listed listings ($per_sec/s), its checkpoint $behind ids behind the" \
  "head; produce to ack p50 $(ms "$produce_p50"), p99 $(ms "$produce_p99")"
echo "sink: $sink_rows rows written (lag $sink_lag); streams: $streams_in records read" \
  "(lag $streams_lag)"
echo
row() { printf '%-8s %8s %8s %8s %8s %8s %10s %5s\n' "$@"; }
row program "e2e p50" "e2e p99" "e2e max" "e2e mean" samples "max RSS" CPU
for name in "${names[@]}"; do
  p50=- p99=- max=- mean=- samples=-
  if [[ $name == sink || $name == streams ]]; then
    prom=$work/$name.prom metric_name=${name}_end_to_end_latency_seconds
    p50=$(quantile "$prom" "$metric_name" 0.5)
    p99=$(quantile "$prom" "$metric_name" 0.99)
    max=$(quantile "$prom" "$metric_name" 1)
    samples=$(metric "$prom" "${metric_name}_count")
    mean=$(awk -v k="${metric_name}_sum " -v c="$samples" \
      'index($0, k) == 1 && c > 0 { print $2 / c }' "$prom")
  fi
  kb=$(cat "$work/$name.hwm" 2>/dev/null || echo 0)
  row "$name" "$(ms "$p50")" "$(ms "$p99")" "$(ms "$max")" "$(ms "${mean:--}")" "$samples" \
    "$(awk -v kb="$kb" 'BEGIN { printf "%.1f MiB", kb / 1024 }')" "$(share "${cpu[$name]}")"
done
echo
echo "CPU, of one core: these four $(share "$ours"), the cluster (3 brokers, registry, MariaDB)" \
  "$(share "$cluster_cpu"), interrupts $(share "$irq"), other processes $(share "$others")," \
  "stolen by the hypervisor $(share "$steal"); the machine $busy% busy"
echo "e2e: from a listing's Kafka timestamp (the scraper's produce) to its row committed (sink)"
echo "or its state change durable (streams); quantiles over $window, mean and samples over the run."
echo "Targets (issue 11): p99 <= 500 ms for sink and streams at ~1,000 listings/s; max RSS <= 64 MiB."
echo "reproduce: ${given}scripts/bench.sh e2e $seconds --rate $rate"
