#!/usr/bin/env bash
# The test command: brings the local cluster up (installing what is missing), validates
# docker-compose.yml with a compose-spec validator, then runs every test of the workspace, the
# cluster-backed ones (#[ignore = "needs the local cluster..."]) included.
# Extra arguments go to the test binaries, e.g. `scripts/test.sh registry_`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/cluster.sh up
# Topics earlier test runs left behind (each test makes its own): brokers start and stay fast.
scripts/cluster.sh prune
scripts/compose-check.sh
# The defaults point at the local cluster; settings given in the environment stay.
export MARKETFLOW_CLUSTER_DIR=${MARKETFLOW_CLUSTER_DIR:-$HOME/.cache/marketflow/cluster}
# The workshop's exercises run even when a test failed; the exit status is 1 if either did.
status=0
cargo test --workspace --no-fail-fast -- --include-ignored "$@" || status=$?
scripts/workshop.sh check || status=$?
df -h "$PWD" | awk 'NR == 2 { print "test: disk left after the run: " $4 " of " $2 }' >&2
exit "$status"
