#!/usr/bin/env bash
# Operator scale run (a benchmark, not a test): ROOMS WaitingRooms on a local
# control plane with fake nodes. Reports the time until every room is Ready,
# the operator's RSS, and the API requests per second once steady (the
# apiserver's request counter with the operator running, minus the same
# window with it stopped).
#
#   tests/cluster/bench-operator.sh            # 300 rooms
#   ROOMS=50 tests/cluster/bench-operator.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOMS=${ROOMS:-300}
WINDOW=${WINDOW:-30}
export USHER_CLUSTER_DIR=${USHER_CLUSTER_DIR:-/tmp/usher-bench-operator}

cargo build --release --quiet -p usher-operator
tests/cluster/cluster up
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  tests/cluster/cluster down
}
trap cleanup EXIT
eval "$(tests/cluster/cluster env)"

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=($!)
kubectl create namespace usher >/dev/null
kubectl create namespace bench >/dev/null
kubectl apply -f charts/usher/crds/waitingroom.yaml >/dev/null
kubectl wait --for=condition=established crd/waitingrooms.usher.dev --timeout=30s >/dev/null
helm template usher charts/usher --namespace usher --set replicas=0 | kubectl apply -n usher -f - >/dev/null

requests() { # total requests the apiserver has served
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ {sum += $NF} END {printf "%d\n", sum}'
}

# The operator, with only the chart's ServiceAccount permissions.
sed 's|client-key: |as: "system:serviceaccount:usher:usher-operator", client-key: |' "$KUBECONFIG" > "$USHER_CLUSTER_DIR/operator.kubeconfig"
KUBECONFIG=$USHER_CLUSTER_DIR/operator.kubeconfig POD_NAMESPACE=usher HOSTNAME=bench USHER_LOG=warn \
  USHER_LISTEN=127.0.0.1:0 target/release/usher-operator run >"$USHER_CLUSTER_DIR/operator.log" 2>&1 &
operator=$!; pids+=("$operator")

start=$(date +%s.%N)
for i in $(seq 1 "$ROOMS"); do
  cat <<X
---
apiVersion: usher.dev/v1alpha1
kind: WaitingRoom
metadata: {name: sale-$i}
spec:
  capacity: 100
  redis: {url: "redis://127.0.0.1:$redis_port/"}
  broker: {minReplicas: 1, maxReplicas: 4}
X
done | kubectl apply -n bench -f - >/dev/null
echo "applied $ROOMS WaitingRooms"
while true; do
  ready=$(kubectl get wr -n bench -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  [ "$ready" -ge "$ROOMS" ] && break
  sleep 1
done
ready_s=$(python3 -c "import time; print(round(time.time() - $start, 1))")
echo "all $ROOMS rooms Ready after ${ready_s}s"

sleep 10  # let the last rollouts settle
a=$(requests); sleep "$WINDOW"; b=$(requests)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$operator/status")
kill "$operator"; wait "$operator" 2>/dev/null || true
sleep 5
c=$(requests); sleep "$WINDOW"; d=$(requests)
python3 - "$a" "$b" "$c" "$d" "$WINDOW" "$rss" "$ROOMS" "$ready_s" <<'PY'
import sys
a, b, c, d, window, rss, rooms, ready = (float(x) for x in sys.argv[1:])
with_op = (b - a) / window
without = (d - c) / window
print(f"rooms: {int(rooms)}")
print(f"all Ready after: {ready:.1f} s")
print(f"operator RSS: {rss / 1024:.1f} MiB")
print(f"apiserver requests/s, steady: {with_op:.1f} with the operator, {without:.1f} without -> operator {with_op - without:.1f}/s")
PY
