#!/usr/bin/env bash
# One bounded load run on this machine: redis-server, one `usher broker`, one
# `usher dispatcher` and `usher-load`, all on 127.0.0.1, then everything is
# stopped. Settings come from the environment (defaults below); any
# arguments are passed on to usher-load, e.g. --joins-only or --json.
#
#   runtime/bench/load.sh                       # 1,000 streaming clients
#   CLIENTS=19000 RATE=5000 runtime/bench/load.sh
#   CLIENTS=50000 RATE=12000 runtime/bench/load.sh --joins-only
set -euo pipefail
cd "$(dirname "$0")/../.."

CLIENTS=${CLIENTS:-1000}        # users to join (and streams to hold)
RATE=${RATE:-2000}              # joins per second
HOLD=${HOLD:-15}                # seconds to hold every stream after the joins
CAPACITY=${CAPACITY:-100}       # room capacity
SESSION=${SESSION:-1h}          # session duration
COMPLETE_AFTER=${COMPLETE_AFTER:-300}  # ms after admission a client completes
POSITION_INTERVAL=${POSITION_INTERVAL:-1s}

ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin usher --bin usher-load
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port); broker_port=$(free_port); dispatcher_port=$(free_port)
broker_metrics_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
"$bin/usher" keygen >"$work/entry.pem"
export USHER_ROOM=bench USHER_REDIS_URL="redis://127.0.0.1:$redis_port/" USHER_LOG=warn \
  USHER_CAPACITY="$CAPACITY" USHER_SESSION_DURATION="$SESSION" USHER_TOKEN_KEY="$work/entry.pem" \
  USHER_POSITION_INTERVAL="$POSITION_INTERVAL" USHER_ABANDON_TIMEOUT=10m
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
USHER_LISTEN="127.0.0.1:$broker_port" USHER_METRICS_LISTEN="127.0.0.1:$broker_metrics_port" \
  "$bin/usher" broker &
broker_pid=$!; pids+=("$broker_pid")
USHER_LISTEN="127.0.0.1:$dispatcher_port" "$bin/usher" dispatcher &
pids+=($!)
until curl -sf "http://127.0.0.1:$broker_port/readyz" >/dev/null; do sleep 0.05; done

"$bin/usher-load" --target "http://127.0.0.1:$broker_port" --room bench \
  --metrics "http://127.0.0.1:$broker_metrics_port" \
  --clients "$CLIENTS" --join-rate "$RATE" --hold "$HOLD" --complete-after "$COMPLETE_AFTER" \
  --broker-pid "$broker_pid" --redis-url "redis://127.0.0.1:$redis_port/" "$@"
