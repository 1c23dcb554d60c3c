#!/usr/bin/env bash
# Validates docker-compose.yml against the compose spec without a Docker engine:
# `docker-compose config -q` (Debian's docker-compose, installed when missing) parses the file,
# applies its anchors and merge keys, and refuses unknown keys and wrongly typed values.
# core/tests/compose.rs checks what the spec cannot: services, ports, the brokers' quorum and
# that the brokers run the local cluster's Kafka and settings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v docker-compose >/dev/null; then
  [[ $(id -u) == 0 ]] || { echo "compose-check: docker-compose is missing; run as root to install it (apt)" >&2; exit 1; }
  echo "compose-check: installing docker-compose (apt)" >&2
  if ! apt-cache policy docker-compose 2>/dev/null | grep -q 'Candidate: [0-9]'; then apt-get update -qq; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
docker-compose --file docker-compose.yml config --quiet
echo "compose-check: docker-compose.yml is valid" >&2
