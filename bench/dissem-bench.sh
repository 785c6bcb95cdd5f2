#!/usr/bin/env bash
# Dissemination benchmark: a 5-replica local cluster (kvctl cluster), a steady
# 1,000 writes/s round-robin over the replicas (bench/dissem), and the time
# from a write's acknowledgement on one replica to its visibility on all the
# others, plus peer messages and bytes per write. Target: p99 <= 10 ms.
#
# Cases, each on a fresh cluster, one after another (never two at once):
#   durable        the defaults: sync = always (a write is acknowledged after
#                  its fsync, and every replica fsyncs the merge of a rumor),
#                  rumors on, anti-entropy on every 2000 ms
#   durable-ae-off the same with anti-entropy = no (rumors alone)
#   durable-poll2ms the defaults, the observer polling each key every 2 ms
#                  instead of 0.5 ms (less load from the measurement itself)
#   durable-2      the defaults again (run-to-run spread)
#   NOSYNC         sync = none appended to every kvd.conf (NOT durable; for
#                  comparison only)
#   durable-<R>/s  durable at the lower rates of $RATES_EXTRA (saturation)
#
# Usage: bench/dissem-bench.sh       (from the repository root)
# Environment: BUILD (default build) holding kvd, kvctl and dissem, or KVD,
# KVCTL, DISSEM one by one; BASE_PORT (27400); NODES (5); RATE (1000);
# DURATION (20 s per case); RATES_EXTRA ("250 500"; empty to skip); WORK (a
# scratch dir, default a new one under /tmp). Everything listens on
# 127.0.0.1. Exit status 0 even when the target is missed.
set -u

BUILD=${BUILD:-build}
KVD=$(realpath "${KVD:-$BUILD/kvd}")
KVCTL=$(realpath "${KVCTL:-$BUILD/kvctl}")
DISSEM=$(realpath "${DISSEM:-$BUILD/dissem}")
BASE_PORT=${BASE_PORT:-27400}
NODES=${NODES:-5}
RATE=${RATE:-1000}
DURATION=${DURATION:-20}
RATES_EXTRA=${RATES_EXTRA-250 500}
SEED=${SEED:-0x5eed}
TARGET_P99_US=10000

for b in "$KVD" "$KVCTL" "$DISSEM"; do
  [ -x "$b" ] || { echo "dissem-bench: $b not found (make; see BUILD)" >&2; exit 2; }
done

OWN_WORK=""
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d /tmp/dissem-bench.XXXXXX)
  OWN_WORK=$WORK
fi
mkdir -p "$WORK"
CLUSTER=""
cleanup() {
  if [ -n "$CLUSTER" ] && [ -f "$CLUSTER/cluster.conf" ]; then
    "$KVCTL" cluster down --dir "$CLUSTER" --purge >/dev/null 2>&1
  fi
  [ -n "$OWN_WORK" ] && rm -rf "$OWN_WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The block device under the data dirs, for flush counts.
DEV=$(lsblk -no PKNAME "$(df --output=source "$WORK" | tail -1)" 2>/dev/null | head -1)
[ -n "$DEV" ] || DEV=$(basename "$(df --output=source "$WORK" | tail -1)")

disk_snap() { # writes and flushes completed, ms doing I/O on $DEV; now (ms)
  awk -v d="$DEV" -v now="$(date +%s%3N)" \
    '$3 == d { print $8, ($19 == "" ? 0 : $19), $13, now }' /proc/diskstats
}
cpu_snap() { # busy and total jiffies
  awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# start_cluster NAME EXTRA-CONFIG-LINES...
start_cluster() {
  local name=$1
  shift
  CLUSTER="$WORK/$name"
  rm -rf "$CLUSTER"
  KVD="$KVD" "$KVCTL" cluster up -n "$NODES" --dir "$CLUSTER" \
    --base-port "$BASE_PORT" --kvd "$KVD" >/dev/null || return 1
  "$KVCTL" cluster stop --dir "$CLUSTER" >/dev/null || return 1
  local k line
  for k in $(seq 1 "$NODES"); do
    for line in "$@"; do
      echo "$line" >>"$CLUSTER/node$k/kvd.conf"
    done
  done
  "$KVCTL" cluster start --dir "$CLUSTER" --kvd "$KVD" >/dev/null
}

stop_cluster() {
  "$KVCTL" cluster down --dir "$CLUSTER" --purge >/dev/null 2>&1
  CLUSTER=""
}

declare -a ROWS
# run_case LABEL RATE CONFIG-LINES...
run_case() {
  local label=$1 rate=$2
  shift 2
  echo
  echo "=== $label: $NODES replicas, $rate writes/s for $DURATION s; extra config: ${*:-none}"
  if ! start_cluster "$label" "$@"; then
    echo "dissem-bench: could not start the cluster for $label" >&2
    ROWS+=("$label|$rate|failed")
    stop_cluster
    return
  fi
  local d0 c0 d1 c1 out
  sync # the previous case's writeback out of the way
  sleep 2
  d0=$(disk_snap)
  c0=$(cpu_snap)
  out=$("$DISSEM" --base-port "$BASE_PORT" --nodes "$NODES" --rate "$rate" \
    --seconds "$DURATION" --seed "$SEED" --label "$label" --poll-us "${POLL_US:-500}" 2>&1)
  local rc=$?
  d1=$(disk_snap)
  c1=$(cpu_snap)
  echo "$out" | grep -v '^RESULT'
  stop_cluster
  local res
  res=$(echo "$out" | grep '^RESULT' | tail -1)
  if [ $rc -ne 0 ] || [ -z "$res" ]; then
    ROWS+=("$label|$rate|failed")
    return
  fi
  local f
  f() { echo "$res" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }
  # disk flushes per second and CPU busy over the dissem run (writes, drain,
  # settle: about DURATION + 2.5 s)
  local extra
  extra=$(awk -v a="$d0" -v b="$d1" -v ca="$c0" -v cb="$c1" -v w="$(f writes)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); split(ca, p, " "); split(cb, q, " ");
    busy = (q[2] - p[2]) ? 100 * (q[1] - p[1]) / (q[2] - p[2]) : 0;
    ms = y[4] - x[4];
    printf "%.1f|%.1f|%.0f|%.0f|%.0f", (y[2] - x[2]) / w, (y[1] - x[1]) / w,
      ms ? 1000 * (y[2] - x[2]) / ms : 0, ms ? 100 * (y[3] - x[3]) / ms : 0, busy }')
  echo "over the run: disk ($DEV) flushes/write|writes/write|flushes/s|disk busy %|CPU busy % of all cores: $extra"
  ROWS+=("$label|$rate|$(f writes)|$(f p50_us)|$(f p99_us)|$(f p999_us)|$(f max_us)|$(f invisible)|$(f msgs_per_write)|$(f bytes_per_write)|$(f put_p50_us)|$(f put_p99_us)|$(f commits_per_write)|$extra")
}

echo "dissem-bench: kvd $KVD, work dir $WORK, device $DEV, seed $SEED, $(nproc) cores"
run_case durable "$RATE"
run_case durable-ae-off "$RATE" "anti-entropy = no"
run_case NOSYNC "$RATE" "sync = none"
POLL_US=2000 run_case durable-poll2ms "$RATE"
run_case durable-2 "$RATE"
for r in $RATES_EXTRA; do
  run_case "durable-${r}/s" "$r"
done

echo
echo "Summary (latency = ack on one replica -> visible on all $((NODES - 1)) others, µs):"
printf '%-16s %6s %7s %7s %7s %7s %7s %5s %9s %9s %8s %8s %9s %8s %8s %8s %6s %5s\n' \
  case rate writes p50 p99 p999 max invis msgs/wr bytes/wr put_p50 put_p99 commit/wr flush/wr diskw/wr flush/s disk% cpu%
for row in "${ROWS[@]}"; do
  IFS='|' read -r -a c <<<"$row"
  if [ "${c[2]}" = failed ]; then
    printf '%-16s %6s  failed\n' "${c[0]}" "${c[1]}"
    continue
  fi
  printf '%-16s %6s %7s %7s %7s %7s %7s %5s %9s %9s %8s %8s %9s %8s %8s %8s %6s %5s\n' "${c[@]}"
done
echo
for row in "${ROWS[@]}"; do
  IFS='|' read -r -a c <<<"$row"
  [ "${c[2]}" = failed ] && continue
  case ${c[0]} in durable | durable-2 | durable-ae-off | durable-poll2ms | NOSYNC) ;; *) continue ;; esac
  p99=${c[4]}
  if [ "$p99" -le "$TARGET_P99_US" ]; then
    echo "target p99 <= 10 ms, ${c[0]}: MET (p99 $(awk -v p="$p99" 'BEGIN{printf "%.2f", p/1000}') ms)"
  else
    echo "target p99 <= 10 ms, ${c[0]}: MISSED (p99 $(awk -v p="$p99" 'BEGIN{printf "%.2f", p/1000}') ms, $(awk -v p="$p99" 'BEGIN{printf "%.1f", p/10000}')x the target)"
  fi
done
exit 0
