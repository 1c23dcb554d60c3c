#!/usr/bin/env bash
# The local cluster marketflow runs and tests against, on loopback, without Docker:
#   PostgreSQL 15  127.0.0.1:15432   storage shared by the three brokers
#   nisshi x3      127.0.0.1:19092-19094  Kafka-protocol brokers (one cluster)
#   registry       127.0.0.1:18081   schema registry, Confluent REST API (local/registry)
#   MariaDB        127.0.0.1:13306   the sink's MySQL
#
# Usage: scripts/cluster.sh up|down|status|env
#   up      install what is missing, start what is not running, create topics and database
#   down    stop exactly what `up` started (by PID)
#   status  each part, up or down, with its address
#   env     the MARKETFLOW__... exports pointing at this cluster
#
# State, logs and PID files live under $MARKETFLOW_CLUSTER_DIR (default ~/.cache/marketflow/cluster);
# the broker binary is cached under $MARKETFLOW_TOOLS_DIR (default ~/.cache/marketflow/tools).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}
TOOLS=${MARKETFLOW_TOOLS_DIR:-$HOME/.cache/marketflow/tools}
NISSHI_VERSION=0.8.1
NISSHI=$TOOLS/bin/nisshi
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=15432
BROKER_PORTS=(19092 19093 19094)
REGISTRY_PORT=18081
MYSQL_PORT=13306
MYSQL_SOCK=$STATE/mariadb/mariadb.sock
TOPICS=(listings listings-affordable listing-sums scraper-events listings-dlq marketflow-streams-changelog marketflow-streams-partials)
PARTITIONS=3
READY_TIMEOUT=${MARKETFLOW_READY_TIMEOUT:-60}

say() { printf '\033[1mcluster:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31mcluster: %s\033[0m\n' "$*" >&2; exit 1; }

# --- helpers -------------------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive NAME: the process recorded in pids/NAME.pid is running, and is still the program we
# started there (after a reboot the number may belong to another process).
alive() {
  local pid program
  pid=$(cat "$STATE/pids/$1.pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  case $1 in broker-*) program=nisshi ;; mariadb) program=mariadbd ;; *) program=$1 ;; esac
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$program"
}

# wait_for WHAT LOG CHECK...: runs CHECK until it succeeds, or fails naming LOG.
wait_for() {
  local what=$1 log=$2 deadline=$((SECONDS + READY_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      tail -n 20 "$log" >&2 2>/dev/null || true
      die "$what not ready after ${READY_TIMEOUT}s; see $log"
    fi
    sleep 0.3
  done
}

# spawn NAME LOG CMD...: starts CMD in the background, detached, and records its PID.
spawn() {
  local name=$1 log=$2
  shift 2
  setsid nohup "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
}

# --- install -------------------------------------------------------------------------------------

apt_install() {
  say "installing $* (apt)"
  if [[ ! -f /var/lib/apt/lists/.marketflow-updated ]] || ! apt-cache policy "$1" | grep -q Candidate; then
    apt-get update -qq
    touch /var/lib/apt/lists/.marketflow-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_packages() {
  local missing=()
  [[ -x $PG_BIN/pg_ctl ]] || missing+=(postgresql-15)
  if ! { command -v mariadbd || [[ -x /usr/sbin/mariadbd ]]; } >/dev/null ||
    ! command -v mariadb-install-db >/dev/null || ! command -v mariadb >/dev/null; then
    missing+=(mariadb-server mariadb-client)
  fi
  command -v curl >/dev/null || missing+=(curl)
  command -v make >/dev/null || missing+=(make)
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
}

install_nisshi() {
  if [[ -x $NISSHI ]] && "$NISSHI" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then return; fi
  say "building the broker, nisshi $NISSHI_VERSION, from crates.io into $TOOLS (first run only: 11-17 minutes on 2 cores)"
  mkdir -p "$TOOLS"
  # --ignore-rust-version: a dependency declares Rust 1.96; it builds and runs on 1.95.
  CARGO_TARGET_DIR=$TOOLS/build cargo install nisshi --version "$NISSHI_VERSION" --locked \
    --ignore-rust-version --features dynostore,libsql,postgres --root "$TOOLS" \
    2>&1 | grep -E --line-buffered '^\s*(Compiling|Installing|Installed|error|warning: build failed)' >&2 || true
  rm -rf "$TOOLS/build"
  "$NISSHI" --version 2>/dev/null | grep -q "$NISSHI_VERSION" || die "building nisshi failed; run: cargo install nisshi --version $NISSHI_VERSION --locked --ignore-rust-version --features dynostore,libsql,postgres --root $TOOLS"
}

build_registry() {
  say "building the schema registry (local/registry)"
  (cd "$ROOT" && cargo build -q -p marketflow-registry --bin registry) || die "building local/registry failed"
}

# --- parts ---------------------------------------------------------------------------------------

# PostgreSQL runs as user `postgres`, which must be able to reach its folder: give the folders
# above it search permission (x) for others where they lack it.
pg_reachable() {
  local dir=$1
  while [[ $dir != / ]]; do
    if ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
      say "granting search permission on $dir so that PostgreSQL (user postgres) can reach its data"
      chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
  done
}

start_postgres() {
  local data=$STATE/postgres/data log=$STATE/postgres/postgres.log # written by user postgres
  if runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then return; fi
  mkdir -p "$STATE/postgres/run"
  touch "$log" # before initdb's output lands in it, so that it is postgres's to write too
  chown -R postgres:postgres "$STATE/postgres"
  pg_reachable "$STATE/postgres"
  if [[ ! -f $data/PG_VERSION ]]; then
    say "initialising PostgreSQL in $data"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >>"$log" 2>&1 ||
      die "initdb failed; see $log"
  fi
  say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t "$READY_TIMEOUT" \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $STATE/postgres/run" start >/dev/null ||
    die "PostgreSQL did not start; see $log"
  head -1 "$data/postmaster.pid" >"$STATE/pids/postgres.pid"
  psql_pg() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "$1"; }
  if [[ $(psql_pg "select 1 from pg_database where datname = 'nisshi'") != 1 ]]; then
    psql_pg "create database nisshi" >/dev/null || die "cannot create database nisshi; see $log"
  fi
}

start_brokers() {
  local i port
  for i in "${!BROKER_PORTS[@]}"; do
    port=${BROKER_PORTS[$i]}
    if alive "broker-$i"; then continue; fi
    port_open "$port" && die "port $port is taken by a process this script did not start"
    say "starting broker $i on 127.0.0.1:$port"
    spawn "broker-$i" "$STATE/logs/broker-$i.log" env RUST_LOG=warn "$NISSHI" broker \
      --cluster-id marketflow \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "postgres://postgres@127.0.0.1:$PG_PORT/nisshi"
  done
  for i in "${!BROKER_PORTS[@]}"; do
    wait_for "broker $i (127.0.0.1:${BROKER_PORTS[$i]})" "$STATE/logs/broker-$i.log" port_open "${BROKER_PORTS[$i]}"
  done
}

start_registry() {
  local bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug/registry log=$STATE/logs/registry.log
  if alive registry; then return; fi
  port_open "$REGISTRY_PORT" && die "port $REGISTRY_PORT is taken by a process this script did not start"
  say "starting the schema registry on 127.0.0.1:$REGISTRY_PORT"
  mkdir -p "$STATE/registry"
  spawn registry "$log" "$bin" --listen "127.0.0.1:$REGISTRY_PORT" --data-dir "$STATE/registry"
  wait_for "schema registry (127.0.0.1:$REGISTRY_PORT)" "$log" curl -sf "http://127.0.0.1:$REGISTRY_PORT/subjects"
}

mysql_root() { mariadb --no-defaults --socket="$MYSQL_SOCK" -u root "$@"; }

start_mariadb() {
  local data=$STATE/mariadb/data log=$STATE/logs/mariadb.log
  if alive mariadb; then return; fi
  port_open "$MYSQL_PORT" && die "port $MYSQL_PORT is taken by a process this script did not start"
  mkdir -p "$STATE/mariadb"
  if [[ ! -d $data/mysql ]]; then
    say "initialising MariaDB in $data"
    mariadb-install-db --no-defaults --datadir="$data" --user=root \
      --auth-root-authentication-method=socket >>"$log" 2>&1 || die "mariadb-install-db failed; see $log"
  fi
  say "starting MariaDB on 127.0.0.1:$MYSQL_PORT"
  spawn mariadb "$log" mariadbd --no-defaults --datadir="$data" --user=root \
    --bind-address=127.0.0.1 --port="$MYSQL_PORT" --socket="$MYSQL_SOCK" \
    --pid-file="$STATE/mariadb/mariadb.pid" --log-error="$log" --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --max-connections=500 --innodb-buffer-pool-size=512M
  wait_for "MariaDB (127.0.0.1:$MYSQL_PORT)" "$log" mysql_root -e 'select 1'
  # The tests create a database each, so the user may create databases.
  mysql_root <<'SQL' || die "cannot create the marketflow database and user; see $log"
CREATE DATABASE IF NOT EXISTS marketflow CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'marketflow'@'127.0.0.1' IDENTIFIED BY 'marketflow';
CREATE USER IF NOT EXISTS 'marketflow'@'localhost' IDENTIFIED BY 'marketflow';
GRANT ALL PRIVILEGES ON *.* TO 'marketflow'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'marketflow'@'localhost';
SQL
}

create_topics() {
  local existing topic
  existing=$("$NISSHI" topic list --broker "tcp://127.0.0.1:${BROKER_PORTS[0]}" 2>/dev/null || true)
  for topic in "${TOPICS[@]}"; do
    # The listing is JSON: match the name exactly ("listings" is not "listings-dlq").
    if grep -qF -- "\"name\":\"$topic\"" <<<"$existing"; then continue; fi
    "$NISSHI" topic create "$topic" --partitions "$PARTITIONS" --silent \
      --broker "tcp://127.0.0.1:${BROKER_PORTS[0]}" >/dev/null 2>&1 ||
      "$NISSHI" topic list --broker "tcp://127.0.0.1:${BROKER_PORTS[0]}" 2>/dev/null |
      grep -qF -- "\"name\":\"$topic\"" ||
      die "cannot create topic $topic on 127.0.0.1:${BROKER_PORTS[0]}"
  done
}

# --- commands ------------------------------------------------------------------------------------

up() {
  [[ $(id -u) == 0 ]] || die "run as root: it installs packages and starts PostgreSQL as user postgres"
  mkdir -p "$STATE/pids" "$STATE/logs"
  install_packages
  install_nisshi
  build_registry
  start_postgres
  start_brokers
  start_registry
  start_mariadb
  create_topics
  say "up: brokers 127.0.0.1:${BROKER_PORTS[0]}-${BROKER_PORTS[2]}, registry http://127.0.0.1:$REGISTRY_PORT, MariaDB 127.0.0.1:$MYSQL_PORT (state in $STATE)"
}

stop_pid() {
  local name=$1 pid
  pid=$(cat "$STATE/pids/$name.pid" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/pids/$name.pid"
}

down() {
  local i
  stop_pid registry
  for i in "${!BROKER_PORTS[@]}"; do stop_pid "broker-$i"; done
  stop_pid mariadb
  if [[ -f $STATE/postgres/data/postmaster.pid ]]; then
    say "stopping PostgreSQL"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/postgres/data" -m fast -w stop >/dev/null || true
  fi
  rm -f "$STATE/pids/postgres.pid"
}

status() {
  local i state
  row() { printf '%-10s %-5s %s\n' "$1" "$2" "$3"; }
  up_if() { if "$@" >/dev/null 2>&1; then echo up; else echo down; fi; }
  row postgres "$(up_if port_open $PG_PORT)" "127.0.0.1:$PG_PORT"
  for i in "${!BROKER_PORTS[@]}"; do
    state=down; alive "broker-$i" && port_open "${BROKER_PORTS[$i]}" && state=up
    row "broker-$i" "$state" "127.0.0.1:${BROKER_PORTS[$i]}"
  done
  state=down; alive registry && curl -sf "http://127.0.0.1:$REGISTRY_PORT/subjects" >/dev/null && state=up
  row registry "$state" "http://127.0.0.1:$REGISTRY_PORT"
  state=down; alive mariadb && port_open $MYSQL_PORT && state=up
  row mariadb "$state" "127.0.0.1:$MYSQL_PORT"
}

print_env() {
  cat <<EOF
export MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:${BROKER_PORTS[0]},127.0.0.1:${BROKER_PORTS[1]},127.0.0.1:${BROKER_PORTS[2]}
export MARKETFLOW__REGISTRY__URL=http://127.0.0.1:$REGISTRY_PORT
export MARKETFLOW__SINK__DATABASE_URL=mysql://marketflow:marketflow@127.0.0.1:$MYSQL_PORT/marketflow
export MARKETFLOW_CLUSTER_DIR=$STATE
EOF
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
