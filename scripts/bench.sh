#!/usr/bin/env bash
# Benchmarks against the local cluster: scripts/bench.sh scraper|sink|streams [args...]
# Each prints its figures as ratios against a baseline measured in the same run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name=${1:-}
if [[ -z $name || ! -f scripts/bench/$name.sh ]]; then
  echo "usage: scripts/bench.sh <$(ls scripts/bench 2>/dev/null | sed 's/\.sh$//' | paste -sd'|')> [args...]" >&2
  exit 2
fi
shift
scripts/cluster.sh up
eval "$(scripts/cluster.sh env)"
exec bash "scripts/bench/$name.sh" "$@"
