#!/usr/bin/env bash
# One bounded load run on this machine: redis-server, one `usher broker`, one
# `usher dispatcher` and `usher-load`, all on 127.0.0.1, then everything is
# stopped. Settings come from the environment (defaults below); any
# arguments are passed on to usher-load, e.g. --joins-only or --json.
#
#   runtime/bench/load.sh                       # 1,000 streaming clients
#   CLIENTS=19000 RATE=5000 runtime/bench/load.sh
#   CLIENTS=50000 RATE=12000 runtime/bench/load.sh --joins-only
#   PROOF_OF_WORK=12 CLIENTS=200 RATE=100 runtime/bench/load.sh --joins-only
set -euo pipefail
cd "$(dirname "$0")/../.."

CLIENTS=${CLIENTS:-1000}        # users to join (and streams to hold)
RATE=${RATE:-2000}              # joins per second
HOLD=${HOLD:-15}                # seconds to hold every stream after the joins
CAPACITY=${CAPACITY:-100}       # room capacity
SESSION=${SESSION:-1h}          # session duration
COMPLETE_AFTER=${COMPLETE_AFTER:-300}  # ms after admission a client completes
POSITION_INTERVAL=${POSITION_INTERVAL:-1s}

source runtime/bench/room.sh

"$bin/usher-load" --target "http://127.0.0.1:$broker_port" --room bench "${solve_proof[@]}" \
  --metrics "http://127.0.0.1:$broker_metrics_port" \
  --clients "$CLIENTS" --join-rate "$RATE" --hold "$HOLD" --complete-after "$COMPLETE_AFTER" \
  --broker-pid "$broker_pid" --redis-url "redis://127.0.0.1:$redis_port/" "$@"
