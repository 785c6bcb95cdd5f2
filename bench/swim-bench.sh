#!/usr/bin/env bash
# SWIM membership benchmark (RESULTS.md, "Membership"): a local cluster of 5
# replicas with kvd's default timings (memberlist's LAN defaults). Measures
#   1. steady-state SWIM messages (UDP datagrams and TCP push-pulls) sent per
#      member per second, over a quiet window of WINDOW seconds;
#   2. failure-detection time: from kill -9 of one replica until every other
#      replica lists it as dead (polled every 100 ms), over ROUNDS kills, the
#      victim restarted and re-admitted between rounds.
# Usage: bench/swim-bench.sh   (env: KVD, KVCTL, ROUNDS=5, WINDOW=30,
#                               BASE_PORT=18400)
set -eu
KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
ROUNDS=${ROUNDS:-5}
WINDOW=${WINDOW:-30}
BASE=${BASE_PORT:-18400}
n=5
dir=$(mktemp -d /tmp/swim-bench.XXXXXX)
trap '"$KVCTL" cluster down --dir "$dir/c" --purge >/dev/null 2>&1; rm -rf "$dir"' EXIT

now_ms() { date +%s%3N; }
port() { echo $((BASE + 10 * ($1 - 1))); }
members() { "$KVCTL" -h "127.0.0.1:$(port "$1")" members --json 2>/dev/null; }
state_of() { # state_of NODE NAME
  members "$1" | grep -o "\"name\":\"$2\",[^}]*" | grep -o '"state":"[a-z]*"' | cut -d'"' -f4
}
swim_sent() {
  "$KVCTL" -h "127.0.0.1:$(port "$1")" status --json | grep -o '"swim":{"sent":[0-9]*' | grep -o '[0-9]*$'
}
wait_all_alive() {
  local deadline=$((SECONDS + 30))
  for i in $(seq 1 $n); do
    until [ "$(members "$i" | grep -o '"state":"alive"' | wc -l)" = $n ]; do
      [ $SECONDS -lt $deadline ] || { echo "cluster did not form" >&2; exit 1; }
      sleep 0.2
    done
  done
}

"$KVCTL" cluster up -n $n --dir "$dir/c" --base-port "$BASE" --kvd "$KVD" >/dev/null
wait_all_alive
sleep 5 # let the joins' gossip settle

# 1. Steady-state message rate.
before=0
for i in $(seq 1 $n); do before=$((before + $(swim_sent "$i"))); done
t0=$(now_ms)
sleep "$WINDOW"
after=0
for i in $(seq 1 $n); do after=$((after + $(swim_sent "$i"))); done
t1=$(now_ms)
rate=$(awk -v d=$((after - before)) -v n=$n -v ms=$((t1 - t0)) \
  'BEGIN { printf "%.2f", d / n / (ms / 1000) }')
echo "steady state: $rate SWIM messages sent per member per second ($n members, ${WINDOW}s)"

# 2. Failure detection.
times=()
for r in $(seq 1 "$ROUNDS"); do
  victim=$(( (r - 1) % (n - 1) + 2 )) # never node1
  kill -9 "$(cat "$dir/c/node$victim/kvd.pid")"
  t0=$(now_ms)
  for i in $(seq 1 $n); do
    [ "$i" = "$victim" ] && continue
    until [ "$(state_of "$i" "node$victim")" = dead ]; do sleep 0.1; done
  done
  t=$(( $(now_ms) - t0 ))
  times+=("$t")
  echo "round $r: node$victim killed, dead everywhere after $t ms"
  "$KVCTL" cluster start --dir "$dir/c" --node "$victim" --kvd "$KVD" >/dev/null
  wait_all_alive
  sleep 3
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "failure detection (kill -9 -> dead on all 4 others), ms: min $(echo "$sorted" | head -1)," \
  "median $(echo "$sorted" | sed -n "$(( (ROUNDS + 1) / 2 ))p"), max $(echo "$sorted" | tail -1)"
