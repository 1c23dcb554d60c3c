#!/usr/bin/env bash
# The demo: the whole pipeline, offline, on the bundled market. The scraper, sink and streams
# arrive with their issues; until then this brings the local cluster up and says what is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/cluster.sh up
scripts/cluster.sh status
echo
echo "The local cluster is up (scripts/cluster.sh env prints its settings)."
echo "The pipeline's programs (market, scraper, sink, streams) are not built yet: the demo arrives with them."
echo "Stop the cluster with: scripts/cluster.sh down"
