#!/usr/bin/env bash
# The local cluster marketflow runs and tests against, on loopback, without Docker:
#   Apache Kafka x3  127.0.0.1:19092-19094  KRaft, each node broker+controller (controllers on
#                                           127.0.0.1:19192-19194), replication factor 3
#   registry         127.0.0.1:18081        schema registry, Confluent REST API (local/registry)
#   MariaDB          127.0.0.1:13306        the sink's MySQL
#
# Usage: scripts/cluster.sh COMMAND
#   up                      install what is missing, start what is not running, create the topics
#                           and the database; running it twice is harmless
#   down                    stop exactly what `up` started (by PID)
#   status                  each part, up or down, with its address; each broker's KRaft role
#   env                     the MARKETFLOW__... exports pointing at this cluster
#   stop-broker N [--kill]  stop Kafka node N (1-3): a controlled shutdown, or SIGKILL
#   start-broker N          start Kafka node N again
#   stop-mariadb [--kill], start-mariadb, stop-registry [--kill], start-registry
#   prune                   delete the topics tests left behind (named as core's testkit names
#                           them: PREFIX-<pid>-<hex time>-<n>[-suffix]); scripts/test.sh runs it
#   kafka TOOL [ARGS...]    one of Kafka's own command-line tools against this cluster, e.g.
#                           kafka topics --describe --topic listings   (`kafka` alone lists them)
#
# State, logs and PID files live under $MARKETFLOW_CLUSTER_DIR (default ~/.cache/marketflow/cluster),
# broker logs in its logs/ folder. Kafka's jars come from Maven Central (local/kafka/pom.xml) and
# are cached under $MARKETFLOW_TOOLS_DIR (default ~/.cache/marketflow/tools).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}
TOOLS=${MARKETFLOW_TOOLS_DIR:-$HOME/.cache/marketflow/tools}
KAFKA_SRC=$ROOT/local/kafka
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_SRC/pom.xml")
KAFKA_LIBS=$TOOLS/kafka-$KAFKA_VERSION/libs
# The compose file's CLUSTER_ID: both paths format their storage with the same one.
CLUSTER_ID=bWFya2V0Zmxvdy1rcmFmdA
NODES=(1 2 3)
broker_port() { echo $((19091 + $1)); }
controller_port() { echo $((19191 + $1)); }
BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094
REGISTRY_PORT=18081
MYSQL_PORT=13306
MYSQL_SOCK=$STATE/mariadb/mariadb.sock
TOPICS=(listings listings-affordable listing-sums scraper-events listings-dlq)
COMPACTED_TOPICS=(scraper-checkpoints marketflow-streams-changelog marketflow-streams-partials)
PARTITIONS=3
READY_TIMEOUT=${MARKETFLOW_READY_TIMEOUT:-90}
# Per broker: a bounded heap (three of them and the tests share 2 cores and 24 GiB).
BROKER_HEAP=${MARKETFLOW_BROKER_HEAP:-512m}

say() { printf '\033[1mcluster:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31mcluster: %s\033[0m\n' "$*" >&2; exit 1; }

# --- helpers -------------------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# port_free PORT WHAT: dies naming the process that holds PORT, if one does.
port_free() {
  port_open "$1" || return 0
  local holder
  holder=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(.*)' | head -1)
  die "port $1 ($2) is taken by a process this script did not start${holder:+: $holder}; stop it, or run scripts/cluster.sh down if an older cluster holds it"
}

# alive NAME: the process recorded in pids/NAME.pid is running, and is still the program we
# started there (after a reboot the number may belong to another process).
alive() {
  local pid program
  pid=$(cat "$STATE/pids/$1.pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  case $1 in broker-*) program=kafka.Kafka ;; mariadb) program=mariadbd ;; *) program=$1 ;; esac
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

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }

install_packages() {
  local missing=()
  if ! { command -v mariadbd || [[ -x /usr/sbin/mariadbd ]]; } >/dev/null ||
    ! command -v mariadb-install-db >/dev/null || ! command -v mariadb >/dev/null; then
    missing+=(mariadb-server mariadb-client)
  fi
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v curl >/dev/null || missing+=(curl)
  command -v make >/dev/null || missing+=(make)
  command -v ss >/dev/null || missing+=(iproute2)
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
  local major
  major=$(java_major)
  ((${major:-0} >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17 or newer, and 'java' here is ${major:-unknown} ($(command -v java)); install openjdk-17-jre-headless or put a newer java first on PATH"
}

# Kafka's jars, from Maven Central through local/kafka/pom.xml; once per version.
install_kafka() {
  local stamp=$KAFKA_LIBS/.complete
  [[ -f $stamp ]] && return
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS (first run only)"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  mvn -B -Dstyle.color=never -f "$KAFKA_SRC/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime >"$STATE/logs/maven.log" 2>&1 || {
    tail -n 20 "$STATE/logs/maven.log" >&2
    die "fetching Kafka's jars failed (see $STATE/logs/maven.log); run: mvn -f local/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$KAFKA_LIBS"
  }
  [[ -f $KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar ]] || die "Maven gave no kafka_2.13-$KAFKA_VERSION.jar in $KAFKA_LIBS"
  touch "$stamp"
}

build_registry() {
  say "building the schema registry (local/registry)"
  (cd "$ROOT" && cargo build -q -p marketflow-registry --bin registry) || die "building local/registry failed"
}

# --- Kafka ---------------------------------------------------------------------------------------

# kafka_java ARGS...: java with Kafka's jars, as Kafka's bin/kafka-run-class.sh runs it.
kafka_java() { java -cp "$KAFKA_LIBS/*" "$@"; }

# The tools: short JVMs, so a small heap and the quick-starting compiler only.
TOOL_JVM=(-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$KAFKA_SRC/tools-log4j2.properties")
kafka_tool_java() { kafka_java -Xmx256m "${TOOL_JVM[@]}" "$@"; }

node_dir() { echo "$STATE/kafka/node-$1"; }

# node_config N: writes node N's server.properties (shared settings + its own) and prints its path.
node_config() {
  local n=$1 dir
  dir=$(node_dir "$n")
  mkdir -p "$dir/data"
  {
    cat "$KAFKA_SRC/server.properties"
    echo
    echo "# Node $n's own (written by scripts/cluster.sh)."
    echo "node.id=$n"
    echo "listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n")"
    echo "log.dirs=$dir/data"
  } >"$dir/server.properties"
  echo "$dir/server.properties"
}

# format_node N: formats node N's storage with the cluster id, unless it already is (once).
format_node() {
  local n=$1 config
  config=$(node_config "$n")
  [[ -f $(node_dir "$n")/data/meta.properties ]] && return
  say "formatting Kafka node $n's storage (cluster id $CLUSTER_ID)"
  kafka_tool_java kafka.tools.StorageTool format --cluster-id "$CLUSTER_ID" --config "$config" \
    --ignore-formatted >>"$STATE/logs/broker-$n.out" 2>&1 ||
    die "formatting node $n failed; see $STATE/logs/broker-$n.out"
}

# launch_broker N: starts node N unless it runs; does not wait for it.
launch_broker() {
  local n=$1 config
  alive "broker-$n" && return
  port_free "$(broker_port "$n")" "Kafka node $n"
  port_free "$(controller_port "$n")" "Kafka node $n's controller"
  format_node "$n"
  config=$(node_dir "$n")/server.properties
  say "starting Kafka $KAFKA_VERSION node $n on 127.0.0.1:$(broker_port "$n") (controller :$(controller_port "$n"))"
  spawn "broker-$n" "$STATE/logs/broker-$n.out" java -Xms"$BROKER_HEAP" -Xmx"$BROKER_HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties" \
    -Dkafka.logs.dir="$STATE/logs" -Dkafka.node="$n" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$config"
}

wait_broker() {
  local n=$1
  wait_for "Kafka node $n (127.0.0.1:$(broker_port "$n"))" "$STATE/logs/broker-$n.log" \
    port_open "$(broker_port "$n")"
}

# topics_ready: every topic of the project exists. Creates the missing ones; a creation fails
# while fewer than three brokers have registered (replication factor 3), so this is retried.
topics_ready() {
  local existing topic
  existing=$(kafka_tool_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list 2>/dev/null) || return 1
  for topic in "${TOPICS[@]}" "${COMPACTED_TOPICS[@]}"; do
    grep -qxF -- "$topic" <<<"$existing" && continue
    local extra=()
    [[ " ${COMPACTED_TOPICS[*]} " == *" $topic "* ]] && extra=(--config cleanup.policy=compact)
    kafka_tool_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create \
      --if-not-exists --topic "$topic" --partitions "$PARTITIONS" --replication-factor 3 \
      "${extra[@]}" >/dev/null 2>>"$STATE/logs/topics.log" || return 1
    say "created topic $topic (${PARTITIONS} partitions, replication factor 3)"
  done
}

create_topics() {
  wait_for "the project's topics on $BOOTSTRAP" "$STATE/logs/topics.log" topics_ready
}

# --- registry and MariaDB ------------------------------------------------------------------------

start_registry() {
  local bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug/registry log=$STATE/logs/registry.log
  if alive registry; then return; fi
  port_free "$REGISTRY_PORT" "schema registry"
  [[ -x $bin ]] || build_registry
  say "starting the schema registry on 127.0.0.1:$REGISTRY_PORT"
  mkdir -p "$STATE/registry"
  spawn registry "$log" "$bin" --listen "127.0.0.1:$REGISTRY_PORT" --data-dir "$STATE/registry"
  wait_for "schema registry (127.0.0.1:$REGISTRY_PORT)" "$log" curl -sf "http://127.0.0.1:$REGISTRY_PORT/subjects"
}

mysql_root() { mariadb --no-defaults --socket="$MYSQL_SOCK" -u root "$@"; }

start_mariadb() {
  local data=$STATE/mariadb/data log=$STATE/logs/mariadb.log
  if alive mariadb; then return; fi
  port_free "$MYSQL_PORT" "MariaDB"
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

# --- commands ------------------------------------------------------------------------------------

prepare() {
  [[ $(id -u) == 0 ]] || die "run as root: it installs packages from Debian when they are missing"
  mkdir -p "$STATE/pids" "$STATE/logs"
  install_packages
  install_kafka
}

up() {
  local n
  prepare
  # The brokers boot while the registry builds.
  for n in "${NODES[@]}"; do launch_broker "$n"; done
  build_registry
  for n in "${NODES[@]}"; do wait_broker "$n"; done
  start_registry
  start_mariadb
  create_topics
  say "up: Kafka $KAFKA_VERSION on $BOOTSTRAP, registry http://127.0.0.1:$REGISTRY_PORT, MariaDB 127.0.0.1:$MYSQL_PORT (state and logs in $STATE)"
}

# stop_pid NAME [SIGNAL]: stops the process recorded for NAME: SIGTERM then, after 30 s, SIGKILL
# (or SIGKILL at once).
stop_pid() {
  local name=$1 signal=${2:-TERM} pid
  pid=$(cat "$STATE/pids/$name.pid" 2>/dev/null) || return 0
  if alive "$name"; then
    say "stopping $name (pid $pid, SIG$signal)"
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$STATE/pids/$name.pid"
}

down() {
  local n
  stop_pid registry
  # All three at once: one by one, the last would wait for a quorum that is gone.
  for n in "${NODES[@]}"; do stop_pid "broker-$n" & done
  wait
  stop_pid mariadb
}

# The names testkit::unique gives (prefix-<pid>-<nanoseconds in hex>-<n>), and names built on them
# (no comma: Kafka's topic filter reads one as a separator).
TEST_TOPICS='.+-[0-9]+-[0-9a-f]{5}[0-9a-f]*-[0-9]+(-.+)?'

prune() {
  local before
  before=$(kafka_tool_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list | grep -cxE -- "$TEST_TOPICS" || true)
  ((before > 0)) || return 0
  kafka_tool_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --delete \
    --if-exists --topic "$TEST_TOPICS" >/dev/null || die "deleting the tests' topics failed"
  say "deleted $before topics left by earlier test runs"
}

node_arg() {
  [[ ${1:-} =~ ^[123]$ ]] || die "which node? scripts/cluster.sh $2 N, with N one of 1 2 3"
}

signal_arg() {
  case ${1:-} in
    "") echo TERM ;;
    --kill) echo KILL ;;
    *) die "unknown option $1 (only --kill, for SIGKILL instead of a clean stop)" ;;
  esac
}

start_broker() {
  prepare
  launch_broker "$1"
  wait_broker "$1"
  say "Kafka node $1 is up on 127.0.0.1:$(broker_port "$1")"
}

status() {
  local n state role quorum=""
  row() { printf '%-9s %-5s %-36s %s\n' "$1" "$2" "$3" "${4:-}"; }
  # The quorum as the controllers see it: Leader, Follower or Observer for each node.
  if port_open 19092 || port_open 19093 || port_open 19094; then
    quorum=$(kafka_tool_java org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server \
      "$BOOTSTRAP" describe --replication 2>/dev/null || true)
  fi
  row PART STATE ADDRESS ROLE
  for n in "${NODES[@]}"; do
    state=down role=""
    if alive "broker-$n" && port_open "$(broker_port "$n")"; then
      state=up
      role=$(awk -v n="$n" '$1 == n { print $NF }' <<<"$quorum")
      case $role in
        Leader) role="broker+controller, quorum leader" ;;
        "") role="broker+controller, quorum unknown" ;;
        *) role="broker+controller, quorum ${role,,}" ;;
      esac
    fi
    row "broker-$n" "$state" "127.0.0.1:$(broker_port "$n") (controller :$(controller_port "$n"))" "$role"
  done
  state=down; alive registry && curl -sf "http://127.0.0.1:$REGISTRY_PORT/subjects" >/dev/null && state=up
  row registry "$state" "http://127.0.0.1:$REGISTRY_PORT"
  state=down; alive mariadb && port_open $MYSQL_PORT && state=up
  row mariadb "$state" "127.0.0.1:$MYSQL_PORT"
}

print_env() {
  cat <<EOF
export MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS=$BOOTSTRAP
export MARKETFLOW__REGISTRY__URL=http://127.0.0.1:$REGISTRY_PORT
export MARKETFLOW__SINK__DATABASE_URL=mysql://marketflow:marketflow@127.0.0.1:$MYSQL_PORT/marketflow
export MARKETFLOW_CLUSTER_DIR=$STATE
EOF
}

# Kafka's tools by the names of their bin/kafka-*.sh scripts.
declare -A KAFKA_TOOLS=(
  [topics]=org.apache.kafka.tools.TopicCommand
  [consumer-groups]=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
  [console-consumer]=org.apache.kafka.tools.consumer.ConsoleConsumer
  [console-producer]=org.apache.kafka.tools.ConsoleProducer
  [get-offsets]=org.apache.kafka.tools.GetOffsetShell
  [metadata-quorum]=org.apache.kafka.tools.MetadataQuorumCommand
  [configs]=kafka.admin.ConfigCommand
  [broker-api-versions]=org.apache.kafka.tools.BrokerApiVersionsCommand
  [log-dirs]=org.apache.kafka.tools.LogDirsCommand
  [transactions]=org.apache.kafka.tools.TransactionsCommand
  [leader-election]=org.apache.kafka.tools.LeaderElectionCommand
  [reassign-partitions]=org.apache.kafka.tools.reassign.ReassignPartitionsCommand
  [delete-records]=org.apache.kafka.tools.DeleteRecordsCommand
  [features]=org.apache.kafka.tools.FeatureCommand
  [cluster]=org.apache.kafka.tools.ClusterTool
  [producer-perf-test]=org.apache.kafka.tools.ProducerPerformance
  [consumer-perf-test]=org.apache.kafka.tools.ConsumerPerformance
  [dump-log]=kafka.tools.DumpLogSegments
  [storage]=kafka.tools.StorageTool
)

kafka_cmd() {
  local tool=${1:-}
  if [[ -z $tool || -z ${KAFKA_TOOLS[$tool]:-} ]]; then
    [[ -n $tool ]] && printf 'cluster: no Kafka tool named %s\n' "$tool" >&2
    echo "usage: scripts/cluster.sh kafka TOOL [ARGS...], TOOL one of:" >&2
    printf '  %s\n' "${!KAFKA_TOOLS[@]}" | sort >&2
    exit 2
  fi
  shift
  [[ -f $KAFKA_LIBS/.complete ]] || die "Kafka's jars are not installed yet: run scripts/cluster.sh up"
  local args=("$@")
  # The local cluster unless the command names servers itself (or needs none).
  case $tool in
    dump-log | storage | producer-perf-test) ;;
    *) [[ " $* " == *" --bootstrap-server"* || " $* " == *" --bootstrap-controller"* || " $* " == *" --help "* ]] ||
      args=(--bootstrap-server "$BOOTSTRAP" "${args[@]}") ;;
  esac
  # A person's tool (a console consumer may run long and hold more): a larger heap.
  exec java -cp "$KAFKA_LIBS/*" -Xmx512m "${TOOL_JVM[@]}" "${KAFKA_TOOLS[$tool]}" "${args[@]}"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  stop-broker) node_arg "${2:-}" stop-broker; stop_pid "broker-$2" "$(signal_arg "${3:-}")" ;;
  start-broker) node_arg "${2:-}" start-broker; start_broker "$2" ;;
  stop-mariadb) stop_pid mariadb "$(signal_arg "${2:-}")" ;;
  start-mariadb) prepare; start_mariadb ;;
  stop-registry) stop_pid registry "$(signal_arg "${2:-}")" ;;
  start-registry) prepare; start_registry ;;
  prune) prune ;;
  kafka) shift; kafka_cmd "$@" ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
