#!/usr/bin/env bash
# Gate checks per second, and revocation to refusal, with usher-load's gate
# mode: VISITORS visitors are admitted, then the gate of the first broker is
# asked with their entry cookies over CONNECTIONS kept-alive connections for
# HOLD seconds, as an ingress does with its pooled upstream connections.
# Then one visitor is revoked through the checkout's API, and the run times
# until both brokers of the room refuse that visitor. Everything runs on
# 127.0.0.1 and stops; arguments go on to usher-load (e.g. --json).
#
#   runtime/bench/gate.sh
#   CONNECTIONS=128 HOLD=20 runtime/bench/gate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNECTIONS=${CONNECTIONS:-64}
HOLD=${HOLD:-10}
VISITORS=${VISITORS:-1000}
CAPACITY=$VISITORS SESSION=1h POSITION_INTERVAL=1s BROKERS=2 CHECKOUT_KEY=1

source runtime/bench/room.sh

"$bin/usher-load" --gate --target "http://127.0.0.1:$broker_port" --room bench "${solve_proof[@]}" \
  --clients "$VISITORS" --connections "$CONNECTIONS" --hold "$HOLD" \
  --checkout-key "$work/checkout.key" --gate-brokers "$other_broker_urls" "$@"
