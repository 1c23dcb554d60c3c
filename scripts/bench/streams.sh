#!/usr/bin/env bash
# The streams benchmark: scripts/bench.sh streams [N] [--listings N] [--only LIST] [--timeout S]
#                                                 [--keep-topics] [--source TOPIC] [--no-build]
#                                                 [--baseline-bin PATH]
# Fills one fresh 3-partition topic with N Avro listings (default 1,000,000; every product id
# distinct, 59 % at or under 1,000,000 KRW) and runs over it, one after the other, each from its
# process start to its exact final global sum: the raw consume→produce loop (first and last),
# marketflow `streams` under `changelog` and `exactly_once`, bytewax 0.21.1 running the original
# demo's filtered_sum job, and Kafka Streams 4.1.0 at-least-once and exactly-once-v2 doing the same
# job. It prints one table: wall, listings/s, CPU-s, max RSS, whether the final sum is exact, and
# each one's rate against the raw loop's. LIST picks contenders (comma-separated) of: raw,
# changelog, exactly_once, bytewax, ks_alos, ks_eos. --no-build runs the binaries already built.
# --baseline-bin PATH adds another build of streams (e.g. one made before a change, copied out of
# target/release) under `changelog`, run right after this build's, for a before/after ratio.
# --source TOPIC runs over a topic an earlier run filled with the same N and kept
# (--keep-topics) instead of filling a new one: the listings are the same in every run, and
# the contenders start on a quiet cluster, not right after the fill.
#
# The peers live in bench/peers/ (see its README.md); what they need is installed idempotently
# under ~/.cache/marketflow/peers/: a Python venv from bench/peers/requirements.txt (PyPI), and the
# Kafka Streams classes and jars (Maven Central; Maven's output in maven.log there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
peers=$HOME/.cache/marketflow/peers
die() { echo "bench streams: $*" >&2; exit 1; }

args=() build=1
while (($#)); do
  case $1 in
    --no-build) build=0 ;;
    --listings | --only | --timeout | --baseline-bin | --source) args+=("$1" "${2:?$1 needs a value}"); shift ;;
    [0-9]*) args+=(--listings "$1") ;;
    *) args+=("$1") ;;
  esac
  shift
done
mkdir -p "$peers"

# marketflow's streams binary and the raw loop, which shares the workspace's target directory
# (and so librdkafka's release build) but is a crate of its own.
if ((build)); then
  cargo build --release -p marketflow-streams --bin streams
  cargo build --release --manifest-path bench/peers/raw/Cargo.toml --target-dir target
fi
[[ -x target/release/streams && -x target/release/raw-copy ]] ||
  die "target/release/streams or raw-copy missing: run without --no-build"

# The Python venv, reinstalled only when requirements.txt changes; PyPI only.
venv=$peers/venv
want=$(sha256sum bench/peers/requirements.txt | cut -d' ' -f1)
if [[ $(cat "$venv/.requirements.sha256" 2>/dev/null) != "$want" ]]; then
  python3 -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 12))' ||
    die "bytewax 0.21.1 needs Python 3.8-3.12; python3 is $(python3 --version 2>&1)"
  echo "bench streams: installing the peers' Python packages into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  PIP_FIND_LINKS= "$venv/bin/pip" install -q --disable-pip-version-check -r bench/peers/requirements.txt ||
    die "pip install -r bench/peers/requirements.txt failed"
  echo "$want" >"$venv/.requirements.sha256"
fi

# The Kafka Streams peer, compiled again only when its sources change; offline once fetched.
ks=$peers/kafka-streams
want=$(cat bench/peers/kafka-streams/pom.xml $(find bench/peers/kafka-streams/src -type f | sort) |
  sha256sum | cut -d' ' -f1)
if [[ $(cat "$ks/.sources.sha256" 2>/dev/null) != "$want" ]]; then
  mkdir -p "$ks"
  rm -rf "$ks/classes" "$ks/lib"
  mvn=(mvn -B -Dstyle.color=never -f bench/peers/kafka-streams/pom.xml -Dpeers.build="$ks"
    compile dependency:copy-dependencies)
  echo "bench streams: building the Kafka Streams peer (Maven's output: $ks/maven.log)" >&2
  "${mvn[@]}" -o >"$ks/maven.log" 2>&1 || "${mvn[@]}" >>"$ks/maven.log" 2>&1 ||
    die "building bench/peers/kafka-streams failed; see $ks/maven.log"
  echo "$want" >"$ks/.sources.sha256"
fi

exec "$venv/bin/python" bench/peers/streams_bench.py \
  --streams-bin target/release/streams --raw-bin target/release/raw-copy \
  --kstreams-classpath "$ks/classes:$ks/lib/*" --python "$venv/bin/python" "${args[@]}"
