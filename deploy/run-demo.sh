#!/usr/bin/env bash
# `make run`: the demo origin serving deploy/demo-site, and an edge in front of it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
LISTEN=${LISTEN:-127.0.0.1:8080}
ORIGIN=${ORIGIN:-127.0.0.1:9000}
"$VENV/bin/edgecdn-origin" serve deploy/demo-site --listen "$ORIGIN" &
origin_pid=$!
trap 'kill "$origin_pid" 2>/dev/null || true' EXIT INT TERM
echo "demo origin: http://$ORIGIN/   edge: http://$LISTEN/   metrics: http://127.0.0.1:8081/metrics"
echo "try: curl -sI http://$LISTEN/index.html   (twice: X-Cache MISS, then HIT)"
"$VENV/bin/edgecdn" serve --origin "http://$ORIGIN" --listen "$LISTEN" --cache-dir .edgecdn-cache
