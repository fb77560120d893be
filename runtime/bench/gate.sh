#!/usr/bin/env bash
# Gate checks per second: one visitor is admitted, then wrk (Debian package
# `wrk`) asks the broker's gate with that visitor's entry cookie over
# CONNECTIONS kept-alive connections for DURATION, as an ingress does with
# its pooled upstream connections. Everything runs on 127.0.0.1 and stops.
#
#   runtime/bench/gate.sh
#   CONNECTIONS=128 DURATION=20s runtime/bench/gate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
CAPACITY=1 SESSION=1h POSITION_INTERVAL=1s
command -v wrk >/dev/null || { echo "gate.sh needs wrk (apt-get install wrk)" >&2; exit 1; }

source runtime/bench/room.sh

base="http://127.0.0.1:$broker_port"
status_url=$(curl -sf -X POST "$base/v1/rooms/bench/queue" | python3 -c 'import json,sys; print(json.load(sys.stdin)["statusUrl"])')
token=""
for _ in $(seq 100); do
  token=$(curl -sf "$base$status_url" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("entryToken") or "")')
  [ -n "$token" ] && break
  sleep 0.1
done
[ -n "$token" ] || { echo "the visitor was never admitted" >&2; exit 1; }
curl -sf -o /dev/null -H "Cookie: usher_entry=$token" "$base/v1/rooms/bench/gate"
wrk --latency -t 1 -c "$CONNECTIONS" -d "$DURATION" \
  -H "Cookie: usher_entry=$token" "$base/v1/rooms/bench/gate"
