#!/usr/bin/env bash
# Write throughput of a 3-replica local cluster against one replica alone,
# same client load: kvbench with a fixed seed against
#   (a) one kvd started on its own (no cluster key: no peers), and
#   (b) node 1 of a 3-replica kvctl cluster (rumors and anti-entropy on,
#       default settings),
# both durable (sync = always, the default), alternating a, b, a, b, each on
# fresh data directories. All replicas and the client share this machine's
# cores (nproc is printed): in (b) the other two replicas' merges of every
# write compete with node 1 for the same CPUs and the same disk.
#
# Each case: kvbench runs once for WARMUP seconds (its preload writes the
# key space), then, for (b), the script waits until the three Merkle roots
# are equal, then the measured kvbench runs (its preload then only reads).
#
# Usage: bench/cluster-bench.sh       (from the repository root)
# Environment: BUILD (default build) holding kvd, kvctl, kvbench, kvload (or
# KVD, KVCTL, KVBENCH, KVLOAD); BASE_PORT (27700); ROUNDS (2); CONNS (16);
# PIPELINE (8); MIX (get=50,put=50); SECONDS_RUN (10); WARMUP (2); KEYS
# (100000); SEED (0x5eed). Listens on 127.0.0.1 only. Exit status 0.
set -u

BUILD=${BUILD:-build}
KVD=$(realpath "${KVD:-$BUILD/kvd}")
KVCTL=$(realpath "${KVCTL:-$BUILD/kvctl}")
KVBENCH=$(realpath "${KVBENCH:-$BUILD/kvbench}")
KVLOAD=$(realpath "${KVLOAD:-$BUILD/kvload}")
BASE_PORT=${BASE_PORT:-27700}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-16}
PIPELINE=${PIPELINE:-8}
MIX=${MIX:-get=50,put=50}
SECONDS_RUN=${SECONDS_RUN:-10}
WARMUP=${WARMUP:-2}
KEYS=${KEYS:-100000}
SEED=${SEED:-0x5eed}

for b in "$KVD" "$KVCTL" "$KVBENCH" "$KVLOAD"; do
  [ -x "$b" ] || { echo "cluster-bench: $b not found (make; see BUILD)" >&2; exit 2; }
done

OWN_WORK=""
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d /tmp/cluster-bench.XXXXXX)
  OWN_WORK=$WORK
fi
mkdir -p "$WORK"
SINGLE_PID=""
CLUSTER=""
stop_single() {
  if [ -n "$SINGLE_PID" ]; then
    kill "$SINGLE_PID" 2>/dev/null
    wait "$SINGLE_PID" 2>/dev/null
    SINGLE_PID=""
  fi
}
stop_cluster() {
  if [ -n "$CLUSTER" ] && [ -f "$CLUSTER/cluster.conf" ]; then
    "$KVCTL" cluster down --dir "$CLUSTER" --purge >/dev/null 2>&1
  fi
  CLUSTER=""
}
cleanup() {
  stop_single
  stop_cluster
  [ -n "$OWN_WORK" ] && rm -rf "$OWN_WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

P1=127.0.0.1:$BASE_PORT
LOAD=(--connections "$CONNS" --pipeline "$PIPELINE" --mix "$MIX" --keys "$KEYS" --seed "$SEED")

# kvbench --json -> "ops/s p50 p99 get_p50 get_p99 put_p50 put_p99 errors"
parse_json() {
  tr -d ' \n' | awk '{
    s = $0
    match(s, /"elapsed_s":.*"by_op"/); t = substr(s, RSTART, RLENGTH)
    split("", v)
    n = split(t, kv, ",")
    for (i = 1; i <= n; i++) { split(kv[i], p, ":"); gsub(/"/, "", p[1]); v[p[1]] = p[2] }
    g = s; sub(/.*"get":\{/, "", g); split(g, gk, ","); split("", gv)
    for (i = 1; i <= 5; i++) { split(gk[i], p, ":"); gsub(/"/, "", p[1]); gv[p[1]] = p[2] }
    w = s; sub(/.*"put":\{/, "", w); split(w, wk, ","); split("", wv)
    for (i = 1; i <= 5; i++) { split(wk[i], p, ":"); gsub(/"/, "", p[1]); wv[p[1]] = p[2] }
    e = s; sub(/.*"broken_connections":/, "", e); sub(/,.*/, "", e)
    printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f %s\n", v["ops_per_s"], v["p50_us"], v["p99_us"],
      gv["p50_us"], gv["p99_us"], wv["p50_us"], wv["p99_us"], e
  }'
}

peer_sum() { # sum of a status counter over the given native addresses
  local key=$1 total=0 h v
  shift
  for h in "$@"; do
    v=$("$KVCTL" -h "$h" status --json 2>/dev/null | grep -o "\"$key\":[0-9]*" | head -1 | cut -d: -f2)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

cpu_snap() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

declare -a ROWS
run_single() {
  local round=$1 dir="$WORK/single$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  "$KVD" --name single --data-dir "$dir/data" --listen "$P1" \
    --resp-listen "127.0.0.1:$((BASE_PORT + 1))" \
    --peer-listen "127.0.0.1:$((BASE_PORT + 2))" \
    --metrics-listen "127.0.0.1:$((BASE_PORT + 3))" >"$dir/kvd.log" 2>&1 &
  SINGLE_PID=$!
  local i
  for i in $(seq 50); do
    "$KVCTL" -h "$P1" status >/dev/null 2>&1 && break
    sleep 0.1
  done
  measure "a: 1 replica" "$round" "$P1"
  stop_single
  rm -rf "$dir"
}

run_cluster() {
  local round=$1
  CLUSTER="$WORK/cluster$round"
  rm -rf "$CLUSTER"
  "$KVCTL" cluster up -n 3 --dir "$CLUSTER" --base-port "$BASE_PORT" --kvd "$KVD" >/dev/null ||
    { echo "cluster-bench: cluster up failed" >&2; stop_cluster; return; }
  measure "b: node1 of 3" "$round" "$P1" "127.0.0.1:$((BASE_PORT + 10))" "127.0.0.1:$((BASE_PORT + 20))"
  stop_cluster
}

# measure LABEL ROUND NODE1 [OTHER NODES...]
measure() {
  local label=$1 round=$2 node1=$3
  shift 2
  local all=("$@")
  echo
  echo "=== round $round, $label: warm-up ($WARMUP s, preload of $KEYS keys)"
  "$KVBENCH" -h "$node1" "${LOAD[@]}" --seconds "$WARMUP" >/dev/null 2>&1
  local h
  for h in "${all[@]:1}"; do
    "$KVLOAD" watch -h "$node1" -h "$h" --timeout 300 | grep -v '^RESULT' | sed 's/^/  sync with '"$h"': /'
  done
  local m0 b0 c0 w0 c1
  m0=$(peer_sum peer_messages_sent "${all[@]}")
  b0=$(peer_sum peer_bytes_sent "${all[@]}")
  w0=$(peer_sum commits "${all[@]}")
  c0=$(cpu_snap)
  local json
  json=$("$KVBENCH" -h "$node1" "${LOAD[@]}" --seconds "$SECONDS_RUN" --json 2>"$WORK/kvbench.err")
  c1=$(cpu_snap)
  local m1 b1 w1
  m1=$(peer_sum peer_messages_sent "${all[@]}")
  b1=$(peer_sum peer_bytes_sent "${all[@]}")
  w1=$(peer_sum commits "${all[@]}")
  local r
  r=$(echo "$json" | parse_json)
  local cpu
  cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
  echo "ops/s p50 p99 get_p50 get_p99 put_p50 put_p99 broken: $r"
  echo "peer traffic during the run (all replicas): $((m1 - m0)) messages, $((b1 - b0)) bytes; commits $((w1 - w0)); CPU busy $cpu% of $(nproc) cores (includes kvbench)"
  ROWS+=("$label|$round|$r|$((m1 - m0))|$((b1 - b0))|$((w1 - w0))|$cpu")
}

echo "cluster-bench: kvbench ${LOAD[*]} --seconds $SECONDS_RUN; $(nproc) cores shared by every replica and the client; durable (sync = always)"
for round in $(seq 1 "$ROUNDS"); do
  run_single "$round"
  run_cluster "$round"
done

echo
echo "Summary (kvbench ${LOAD[*]} --seconds $SECONDS_RUN; latencies in µs):"
printf '%-14s %5s %9s %7s %7s %8s %8s %8s %8s %6s %9s %11s %8s %5s\n' \
  case round ops/s p50 p99 get_p50 get_p99 put_p50 put_p99 broken peer_msgs peer_bytes commits cpu%
for row in "${ROWS[@]}"; do
  IFS='|' read -r label round r msgs bytes commits cpu <<<"$row"
  read -r -a v <<<"$r"
  printf '%-14s %5s %9s %7s %7s %8s %8s %8s %8s %6s %9s %11s %8s %5s\n' \
    "$label" "$round" "${v[@]}" "$msgs" "$bytes" "$commits" "$cpu"
done
echo
awk -v rows="$(printf '%s\n' "${ROWS[@]}")" 'BEGIN {
  n = split(rows, L, "\n")
  for (i = 1; i <= n; i++) {
    split(L[i], f, "|"); split(f[3], v, " ")
    if (f[1] ~ /^a/) { a += v[1]; na++ } else { b += v[1]; nb++ }
  }
  if (na && nb)
    printf "mean ops/s: 1 replica %.0f, node1 of 3 replicas %.0f; cluster / single = %.2f\n", a / na, b / nb, (b / nb) / (a / na)
}'
exit 0
