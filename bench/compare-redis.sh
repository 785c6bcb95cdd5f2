#!/usr/bin/env bash
# compare-redis.sh: kvd's Redis-protocol port against redis-server, measured
# with redis-benchmark on this machine in one run. Three targets alternate,
# round after round: kvd (durable: --sync always), redis-server with
# appendfsync always (the durable baseline) and redis-server with appendfsync
# everysec. Each server starts on a fresh data directory in one temporary
# folder (same disk for all), listens on 127.0.0.1 only, and is stopped after
# its turn. The table gives the median requests/s over the rounds and the
# ratios against the issue's targets. A missed target is reported, never an
# error: the exit status is non-zero only when the benchmark could not run.

set -u -o pipefail

usage() {
  cat <<'EOF'
usage: bench/compare-redis.sh [--help]

Runs, for each round, `redis-benchmark -c CLIENTS -n N -r KEYSPACE
-t set,get,incr --csv` against, in this order:
  kvd             $KVD --sync $SYNC, RESP port (fresh data dir)
  redis-always    redis-server, appendonly yes, appendfsync always, save ""
  redis-everysec  redis-server, appendonly yes, appendfsync everysec, save ""
then, in round 1 only and for information, `-t mset` and `-t ping` against
the same server. Prints the median requests/s per test and target, the
ratios kvd/redis-always and kvd/redis-everysec, and the issue's targets
(durable SET >= 1.5x redis-always, INCR >= 1.5x redis-always,
GET >= 1.0x redis) with met/missed.

Environment (defaults in brackets):
  N         requests per test [200000]; N=20000 for a quick run
  ROUNDS    rounds, each running the three targets in turn [2]
  CLIENTS   redis-benchmark connections [50]
  KEYSPACE  redis-benchmark -r, random keys [100000]
  KVD       the kvd binary [build/kvd]
  SYNC      kvd's --sync: always (durable) or none (labelled NOT durable)
            [always]
  BENCH_DIR where the temporary data dirs go [${TMPDIR:-/tmp}]; put it on
            the disk you want measured (not tmpfs: fsync would be free)

redis-server and redis-benchmark are installed with apt-get when missing
(and the script says so). Servers and temporary data are removed on exit,
Ctrl-C included. Exit status: 0 when the benchmark ran (whatever the
targets), 1 when it could not (kvd missing, a server did not start), 2 for
a usage error.
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "compare-redis.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
esac

N=${N:-200000}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
SYNC=${SYNC:-always}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
KVD=${KVD:-build/kvd}

for v in N ROUNDS CLIENTS KEYSPACE; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "compare-redis.sh: $v must be a positive integer (got '${!v}')" >&2
    exit 2
  fi
done
case "$SYNC" in always | none) ;; *)
  echo "compare-redis.sh: SYNC must be always or none" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$KVD" in
  /*) ;;
  *) if [ -x "$KVD" ]; then KVD=$PWD/$KVD; else KVD=$ROOT/$KVD; fi ;;
esac
if [ ! -x "$KVD" ]; then
  echo "compare-redis.sh: no kvd at $KVD: build it with 'make' or set KVD" >&2
  exit 1
fi

# ---- redis-server and redis-benchmark ----

apt_install() {
  local sudo=
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "compare-redis.sh: $1 is missing: installing package $2 with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q --no-install-recommends "$2"; then
    echo "compare-redis.sh: install failed; running apt-get update and retrying"
    $sudo apt-get update -q && \
      $sudo apt-get install -y -q --no-install-recommends "$2"
  fi
}
command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-server
command -v redis-benchmark >/dev/null 2>&1 || apt_install redis-benchmark redis-tools
for tool in redis-server redis-benchmark redis-cli; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "compare-redis.sh: $tool is still missing" >&2
    exit 1
  fi
done

# ---- temporary folder, servers, cleanup ----

WORK=$(mktemp -d "$BENCH_DIR/compare-redis.XXXXXX") || exit 1
SERVER_PID=
SERVER_LOG=
BENCH_PID=
RESULTS=$WORK/results.tsv # round, target, test, rps, p50 ms, p99 ms
: >"$RESULTS"

stop_server() {
  local pid=$SERVER_PID
  SERVER_PID=
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# shellcheck disable=SC2317 # called through the trap
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$BENCH_PID" ]; then
    kill -TERM "$BENCH_PID" 2>/dev/null
    wait "$BENCH_PID" 2>/dev/null
  fi
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "compare-redis.sh: interrupted" >&2; exit 130' INT TERM

# A port nothing listens on, searched from a random start; the two ports of
# kvd come from one call each, the second starting after the first.
free_port() {
  local p=$1
  for ((; p < 60000; p++)); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Waits until PING on 127.0.0.1:$1 answers PONG (10 s at most).
wait_ready() {
  for _ in $(seq 200); do
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# start_target NAME DIR: starts it, sets SERVER_PID, SERVER_LOG and PORT
# (RESP).
start_target() {
  local name=$1 dir=$2 log=$2.log
  SERVER_LOG=$log
  mkdir -p "$dir"
  PORT=$(free_port $((20000 + RANDOM % 20000))) || return 1
  case "$name" in
    kvd)
      local native
      native=$(free_port $((PORT + 1))) || return 1
      "$KVD" --data-dir "$dir" --sync "$SYNC" --log-level warn \
        --listen "127.0.0.1:$native" --resp-listen "127.0.0.1:$PORT" \
        --metrics-listen "" >"$log" 2>&1 &
      ;;
    redis-always | redis-everysec)
      redis-server --bind 127.0.0.1 --port "$PORT" --dir "$dir" \
        --save '' --appendonly yes --appendfsync "${name#redis-}" \
        --daemonize no --protected-mode yes --logfile "$log" >/dev/null 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  if ! wait_ready "$PORT"; then
    echo "compare-redis.sh: $name did not start; its log:" >&2
    tail -n 20 "$log" >&2
    stop_server
    return 1
  fi
}

# bench ROUND TARGET TESTS: one redis-benchmark run, CSV rows appended to
# RESULTS. --csv prints no progress lines; any \r is dropped all the same.
bench() {
  local round=$1 target=$2 tests=$3 out=$WORK/out.csv
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "compare-redis.sh: $target died; its log:" >&2
    tail -n 20 "$SERVER_LOG" >&2
    exit 1
  fi
  # In the background so that the INT/TERM trap runs at once (bash defers a
  # trap until a foreground child exits); the trap's cleanup stops it.
  redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$CLIENTS" -n "$N" \
    -r "$KEYSPACE" -t "$tests" --csv >"$out" 2>"$WORK/err.txt" &
  BENCH_PID=$!
  if ! wait "$BENCH_PID"; then
    echo "  $target: redis-benchmark -t $tests failed:" \
      "$(tail -n 3 "$WORK/err.txt")" >&2
  fi
  BENCH_PID=
  tr '\r' '\n' <"$out" | awk -F'","' -v r="$round" -v t="$target" '
    /^"/ && $1 != "\"test" {
      gsub(/"/, "", $1); gsub(/"/, "", $2); gsub(/"/, "", $5); gsub(/"/, "", $7)
      printf "%s\t%s\t%s\t%s\t%s\t%s\n", r, t, $1, $2, $5, $7
    }' | tee -a "$RESULTS" | awk -F'\t' '{
      printf "  %-15s %-15s %12.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n", $2, $3, $4, $5, $6 }'
}

# ---- run ----

TARGETS="kvd redis-always redis-everysec"
KVD_LABEL="kvd-$SYNC"
echo "compare-redis: N=$N ROUNDS=$ROUNDS CLIENTS=$CLIENTS KEYSPACE=$KEYSPACE"
echo "  machine: $(nproc) cpus, $(uname -sr), data in $WORK" \
  "($(stat -f -c %T "$WORK") on $(df -P "$WORK" | awk 'NR==2 {print $1}'))"
echo "  kvd: $KVD ($("$KVD" --version 2>/dev/null | head -n 1)), --sync $SYNC"
echo "  $(redis-server --version | awk '{print $1, $2, $3}')," \
  "$(redis-benchmark --version 2>/dev/null | head -n 1)"
[ "$SYNC" = always ] || echo "  NOTE: kvd runs with --sync none: NOT durable"
case "$(stat -f -c %T "$WORK")" in tmpfs | ramfs)
  echo "  WARNING: $WORK is in memory: fsync costs nothing there" ;;
esac

for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS"
  for target in $TARGETS; do
    start_target "$target" "$WORK/$target-$round" || exit 1
    bench "$round" "$target" set,get,incr
    if [ "$round" = 1 ]; then
      bench info "$target" mset
      bench info "$target" ping
    fi
    stop_server
    rm -rf "$WORK/$target-$round"
  done
done

# ---- table ----

# median ROUND-FILTER TARGET TEST: median rps over the matching rows.
median() {
  awk -F'\t' -v t="$2" -v x="$3" -v info="$1" '
    $2 == t && $3 == x && ((info == "info") == ($1 == "info")) { print $4 }' \
    "$RESULTS" | sort -g | awk '
    { a[NR] = $1 }
    END {
      if (NR == 0) exit
      if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2
    }'
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'
}

fmt() { [ -n "$1" ] && printf "%.0f" "$1" || printf "n/a"; }

print_table() {
  local which=$1
  shift
  printf "%-16s %14s %14s %16s %10s %12s\n" test "$KVD_LABEL" redis-always \
    redis-everysec kvd/always kvd/everysec
  for t in "$@"; do
    local k a e
    k=$(median "$which" kvd "$t")
    a=$(median "$which" redis-always "$t")
    e=$(median "$which" redis-everysec "$t")
    [ -n "$k$a$e" ] || continue
    printf "%-16s %14s %14s %16s %10s %12s\n" "$t" "$(fmt "$k")" "$(fmt "$a")" \
      "$(fmt "$e")" "$(ratio "$k" "$a")" "$(ratio "$k" "$e")"
  done
}

echo
echo "requests/s, median over $ROUNDS round(s) (redis-benchmark -c $CLIENTS -n $N -r $KEYSPACE):"
print_table rounds SET GET INCR
echo
echo "for information, round 1 only:"
print_table info "MSET (10 keys)" PING_INLINE PING_MBULK

# target TEXT KVD BASE MIN: one line of the targets' verdict.
verdict() {
  awk -v txt="$1" -v k="$2" -v b="$3" -v min="$4" 'BEGIN {
    if (k == "" || b == "" || b == 0) { printf "  %-44s  n/a\n", txt; exit }
    r = k / b
    printf "  %-44s %6.2fx  %s\n", txt, r, (r >= min ? "met" : "missed")
  }'
}

echo
echo "targets (from the issue):"
if [ "$SYNC" != always ]; then
  echo "  (kvd ran with --sync none: these are NOT the durable targets)"
fi
verdict "durable SET >= 1.5x redis-always" \
  "$(median rounds kvd SET)" "$(median rounds redis-always SET)" 1.5
verdict "INCR >= 1.5x redis-always" \
  "$(median rounds kvd INCR)" "$(median rounds redis-always INCR)" 1.5
verdict "GET >= 1.0x redis-always" \
  "$(median rounds kvd GET)" "$(median rounds redis-always GET)" 1.0
verdict "GET >= 1.0x redis-everysec" \
  "$(median rounds kvd GET)" "$(median rounds redis-everysec GET)" 1.0
exit 0
