# Sourced by the benchmark scripts: builds the release binaries and starts
# redis-server, one `usher broker` and one `usher dispatcher` on free
# 127.0.0.1 ports, all stopped when the script exits. Reads CAPACITY,
# SESSION and POSITION_INTERVAL, and optionally BROKERS (more brokers of the
# room, default 1), JOINS_PER_ADDRESS and SESSIONS_PER_ADDRESS (the
# per-address limits, default 0: off, as every client is on 127.0.0.x),
# PROOF_OF_WORK (the room's proof-of-work bits, default 0: the benchmarks
# measure the broker, not the visitors' work) and CHECKOUT_KEY=1 (brokers
# get a checkout key, written to $work/checkout.key); sets bin, work,
# redis_port, broker_port, broker_metrics_port, broker_pid,
# other_broker_urls (comma-separated) and solve_proof (usher-load's
# --solve-proof when the room asks for a proof).

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
  USHER_POSITION_INTERVAL="$POSITION_INTERVAL" USHER_ABANDON_TIMEOUT=10m \
  USHER_JOINS_PER_ADDRESS="${JOINS_PER_ADDRESS:-0}" USHER_SESSIONS_PER_ADDRESS="${SESSIONS_PER_ADDRESS:-0}" \
  USHER_PROOF_OF_WORK="${PROOF_OF_WORK:-0}"
solve_proof=()
if [ "${PROOF_OF_WORK:-0}" != 0 ]; then solve_proof=(--solve-proof); fi
if [ "${CHECKOUT_KEY:-0}" = 1 ]; then
  python3 -c 'import secrets; print(secrets.token_hex(32))' >"$work/checkout.key"
  export USHER_CHECKOUT_KEY="$work/checkout.key"
fi
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
USHER_LISTEN="127.0.0.1:$broker_port" USHER_METRICS_LISTEN="127.0.0.1:$broker_metrics_port" \
  "$bin/usher" broker &
broker_pid=$!; pids+=("$broker_pid")
other_broker_urls=""
for _ in $(seq 2 "${BROKERS:-1}"); do
  port=$(free_port)
  USHER_LISTEN="127.0.0.1:$port" USHER_METRICS_LISTEN="127.0.0.1:$(free_port)" "$bin/usher" broker &
  pids+=($!)
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
  other_broker_urls="${other_broker_urls:+$other_broker_urls,}http://127.0.0.1:$port"
done
USHER_LISTEN="127.0.0.1:$dispatcher_port" "$bin/usher" dispatcher &
pids+=($!)
until curl -sf "http://127.0.0.1:$broker_port/readyz" >/dev/null; do sleep 0.05; done
