#!/usr/bin/env bash
# Benchmarks against the local cluster: scripts/bench.sh scraper|sink|streams|market|e2e [args...]
# Each prints its figures as ratios against a baseline measured in the same run; e2e prints the
# whole pipeline's end-to-end latency and memory at a steady rate against issue 11's targets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name=${1:-}
if [[ -z $name || ! -f scripts/bench/$name.sh ]]; then
  echo "usage: scripts/bench.sh <$(ls scripts/bench 2>/dev/null | sed 's/\.sh$//' | paste -sd'|')> [args...]" >&2
  exit 2
fi
shift
scripts/cluster.sh up
# The defaults point at the local cluster; settings given in the environment stay.
export MARKETFLOW_CLUSTER_DIR=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}
exec bash "scripts/bench/$name.sh" "$@"
