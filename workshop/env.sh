# shellcheck shell=bash
# The settings of one workshop exercise: `source workshop/env.sh N` (from the repository's root).
#
# Each exercise runs on topics, consumer groups, a database and ports of its own, so that you can
# redo an exercise from scratch (source this file again: new topics, new database) and so that
# exercises, the demo and the tests never see each other's data. It sets:
#   PATH                     target/debug first: `market`, `scraper`, `sink`, `streams`, `marketflow`
#   MARKETFLOW__…            the programs' configuration (README, "Configuration"), pointing them at
#                            this exercise's topics, database and ports
#   LISTINGS, AFFORDABLE, SUMS, EVENTS, DLQ, CHECKPOINTS, CHANGELOG, PARTIALS   topic names
#   SINK_GROUP, STREAMS_GROUP  consumer groups;  WS_DB  the MySQL database
#   MARKET, SINK, STREAMS, SCRAPER   the market's URL and the admin addresses (host:port);
#                            SINK2, STREAMS2 for a second instance
#   json                     the header every admin POST needs (README, "Runtime control")
#   WS_DIR                   where `start` writes the programs' logs
# and helpers: `start NAME [PROGRAM ARGS...]` (a program in the background, logging to
# $WS_DIR/NAME.log, waits until it answers /healthz), `stop NAME` (SIGTERM, waits for the exit),
# `await NAME`, `pid NAME`, `db SQL` (runs SQL in this exercise's database with the mysql client),
# `fetch` (one record's bytes into files), `produce` (one record of raw bytes), `hex FILE`.
# Topic names follow `scripts/cluster.sh prune`'s pattern, which deletes them when you are done.

ws_n=${1:?usage: source workshop/env.sh N   (N = the exercise number)}
ws_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WS_ID=ws$ws_n-$$-$(printf %x "$(date +%s)")-0
WS_DB=ws${ws_n}_$$_$(printf %x "$(date +%s)")
WS_DIR=${TMPDIR:-/tmp}/marketflow-workshop/$WS_ID
mkdir -p "$WS_DIR"
export WS_ID WS_DB WS_DIR
export PATH="$ws_root/${CARGO_TARGET_DIR:-target}/debug:$PATH"
export MARKETFLOW_CLUSTER_DIR=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}

# Ports: 194N1-194N9 for exercise N (exercise 10: 19501-19509).
ws_port=$((19400 + 10 * ws_n))
export MARKET=http://127.0.0.1:$((ws_port + 1))
export SCRAPER=127.0.0.1:$((ws_port + 2))
export SINK=127.0.0.1:$((ws_port + 3))
export STREAMS=127.0.0.1:$((ws_port + 4))
# For a second sink or streams instance.
export SINK2=127.0.0.1:$((ws_port + 5)) STREAMS2=127.0.0.1:$((ws_port + 6))

export LISTINGS=$WS_ID-listings AFFORDABLE=$WS_ID-affordable SUMS=$WS_ID-sums
export EVENTS=$WS_ID-events DLQ=$WS_ID-dlq CHECKPOINTS=$WS_ID-checkpoints
export CHANGELOG=$WS_ID-changelog PARTIALS=$WS_ID-partials
export SINK_GROUP=$WS_ID-sink STREAMS_GROUP=$WS_ID-streams
# The sink names a table after its topic, every character other than letters, digits and _ as _.
export TABLE=${LISTINGS//-/_}

export MARKETFLOW__TOPICS__LISTINGS=$LISTINGS
export MARKETFLOW__TOPICS__LISTINGS_AFFORDABLE=$AFFORDABLE
export MARKETFLOW__TOPICS__LISTING_SUMS=$SUMS
export MARKETFLOW__TOPICS__SCRAPER_EVENTS=$EVENTS
export MARKETFLOW__TOPICS__DEAD_LETTER=$DLQ
export MARKETFLOW__SCRAPER__BASE_URL=$MARKET
export MARKETFLOW__SCRAPER__ADMIN_ADDR=$SCRAPER
export MARKETFLOW__SCRAPER__CHECKPOINT_TOPIC=$CHECKPOINTS
# A key for the workshop only: the same key gives the same seller pseudonyms.
export MARKETFLOW__SCRAPER__SELLER_HMAC_KEY=marketflow-workshop-only-key
export MARKETFLOW__SINK__DATABASE_URL=mysql://marketflow:marketflow@127.0.0.1:13306/$WS_DB
export MARKETFLOW__SINK__TOPICS="[\"$LISTINGS\"]"
export MARKETFLOW__SINK__GROUP_ID=$SINK_GROUP
export MARKETFLOW__SINK__ADMIN_ADDR=$SINK
export MARKETFLOW__STREAMS__GROUP_ID=$STREAMS_GROUP
export MARKETFLOW__STREAMS__CHANGELOG_TOPIC=$CHANGELOG
export MARKETFLOW__STREAMS__PARTIALS_TOPIC=$PARTIALS
export MARKETFLOW__STREAMS__ADMIN_ADDR=$STREAMS
# The market every exercise crawls: 1,000 products from id 100000001, the same pages every time.
export MARKET_LISTEN=${MARKET#http://} MARKET_SEED=7 MARKET_PRODUCTS=1000
json='content-type: application/json'
export REGISTRY=${MARKETFLOW__REGISTRY__URL:-http://127.0.0.1:18081}

# db SQL: runs SQL in this exercise's database (tab-separated output, a header line first).
db() { mysql -h 127.0.0.1 -P 13306 -u marketflow -pmarketflow "$WS_DB" -e "$*"; }

# start NAME [PROGRAM ARGS...]: runs PROGRAM (default: NAME) in the background, logging to
# $WS_DIR/NAME.log, and waits until it answers on /healthz (the market's or its admin address).
start() {
  local name=$1 url
  shift
  (($#)) || set -- "$name"
  case $1 in
    market) url=$MARKET/healthz ;;
    sink) url=http://${MARKETFLOW__SINK__ADMIN_ADDR}/healthz ;;
    streams) url=http://${MARKETFLOW__STREAMS__ADMIN_ADDR}/healthz ;;
    scraper) url=http://${MARKETFLOW__SCRAPER__ADMIN_ADDR}/healthz ;;
    *) url= ;;
  esac
  "$@" >>"$WS_DIR/$name.log" 2>&1 </dev/null &
  local pid=$!
  # Not a job of this shell: it would report "Killed" at a random later prompt.
  disown "$pid"
  echo "$pid" >"$WS_DIR/$name.pid"
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 5 "$WS_DIR/$name.log"
      echo "$name exited; see $WS_DIR/$name.log"
      return 1
    fi
    if [[ -z $url ]] || curl -sf "$url" >/dev/null 2>&1; then
      echo "$name is up (pid $pid), logging to $WS_DIR/$name.log"
      return 0
    fi
    sleep 0.2
  done
  echo "$name did not answer at $url within 60s; see $WS_DIR/$name.log"
  return 1
}

# stop NAME: SIGTERM to a program `start` started, then waits (at most 30 s) until it has exited.
stop() {
  local pid
  pid=$(cat "$WS_DIR/$1.pid" 2>/dev/null) || { echo "$1 was not started"; return 1; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { echo "$1 stopped"; return 0; }
    sleep 0.1
  done
  echo "$1 (pid $pid) still runs after 30s"
  return 1
}

# pid NAME: the process id of a program `start` started.
pid() { cat "$WS_DIR/$1.pid"; }

# await NAME [SECONDS]: waits (default at most 300 s) until a program `start` started has exited.
await() {
  local pid
  pid=$(cat "$WS_DIR/$1.pid") || return 1
  for _ in $(seq $((${2:-300} * 5))); do
    kill -0 "$pid" 2>/dev/null || { echo "$1 has exited"; return 0; }
    sleep 0.2
  done
  echo "$1 (pid $pid) still runs"
  return 1
}

db_create() { mysql -h 127.0.0.1 -P 13306 -u marketflow -pmarketflow -e "CREATE DATABASE \`$WS_DB\`"; }
db_create && echo "exercise $ws_n: topics $WS_ID-*, database $WS_DB, ports $((ws_port + 1))-$((ws_port + 6)), logs in $WS_DIR"

# Kafka's jars, which scripts/cluster.sh fetched: its tools, and workshop/tools/Produce.java.
export KAFKA_LIBS=${MARKETFLOW_TOOLS_DIR:-$HOME/.cache/marketflow/tools}/kafka-4.1.0/libs
# produce TOPIC[:PARTITION] KEY VALUE [NAME=VALUE...]: one record of raw bytes (hex, @FILE or null).
produce() {
  java -cp "$KAFKA_LIBS/*" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$ws_root/local/kafka/tools-log4j2.properties" \
    "$ws_root/workshop/tools/Produce.java" "$@"
}
# hex FILE: a file's bytes as hex, on one line.
hex() { od -An -tx1 -v "$1" | tr -d ' \n'; echo; }
# fetch TOPIC PARTITION OFFSET NAME: one record's key and value bytes, as they are on the topic,
# into $WS_DIR/NAME.key and $WS_DIR/NAME.value (with Kafka's console consumer).
fetch() {
  local part
  for part in key value; do
    "$ws_root/scripts/cluster.sh" kafka console-consumer --topic "$1" --partition "$2" \
      --offset "$3" --max-messages 1 --property print.key=$([[ $part == key ]] && echo true || echo false) \
      --property print.value=$([[ $part == value ]] && echo true || echo false) 2>/dev/null |
      head -c -1 >"$WS_DIR/$4.$part"
  done
  echo "$4: key $(wc -c <"$WS_DIR/$4.key") bytes, value $(wc -c <"$WS_DIR/$4.value") bytes"
}
