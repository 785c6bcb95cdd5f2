#!/usr/bin/env bash
# Runs the libFuzzer harnesses: usage run.sh BUILD SECONDS JOBS BIN...
#
# First every harness replays its seed corpus (tests/fuzz/corpus/<name>) and
# its regression inputs (tests/fuzz/regress/<name>: inputs that once crashed
# it), each input once. Then each harness fuzzes for SECONDS, JOBS harnesses
# at a time, starting from those inputs plus what earlier runs found. New
# inputs go to BUILD/work/<name>/corpus, never into the repository; a crash
# leaves its input as BUILD/work/<name>/crash-* (copy it to
# tests/fuzz/regress/<name>/ once fixed). SECONDS 0 only replays. Closes
# with one summary line "fuzz: N passed, N failed" and exits non-zero if any
# harness failed.
set -u
build=$1 seconds=$2 jobs=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
passed=0
failed=0
failed_names=()

name_of() { basename "$1" _fuzz; }

# Flags for every run: an input taking over 10 s or 2 GiB is a bug too.
common=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

finish() { # name status log
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1))
    echo "=== $1: ok"
  else
    failed=$((failed + 1))
    failed_names+=("$1")
    echo "=== $1: FAILED (exit $2); last lines of $3:"
    tail -n 60 "$3"
  fi
}

echo "=== replaying seed corpora and regression inputs"
for bin in "$@"; do
  name=$(name_of "$bin")
  work=$build/work/$name
  mkdir -p "$work"
  mapfile -t inputs < <(find "$here/corpus/$name" "$here/regress/$name" \
    -type f ! -name '.*' 2>/dev/null | sort)
  if [ "${#inputs[@]}" -eq 0 ]; then
    echo "=== $name-replay: no inputs"
    failed=$((failed + 1))
    failed_names+=("$name-replay")
    continue
  fi
  "$bin" "${common[@]}" "${inputs[@]}" >"$work/replay.log" 2>&1
  finish "$name-replay (${#inputs[@]} inputs)" $? "$work/replay.log"
done

if [ "$seconds" -gt 0 ]; then
  echo "=== fuzzing each harness for ${seconds}s, $jobs at a time"
else
  set -- # SECONDS 0: replay only
fi
while [ $# -gt 0 ]; do
  pids=()
  names=()
  for ((j = 0; j < jobs && $# > 0; j++)); do
    bin=$1
    shift
    name=$(name_of "$bin")
    work=$build/work/$name
    mkdir -p "$work/corpus"
    dirs=("$work/corpus" "$here/corpus/$name")
    [ -d "$here/regress/$name" ] && dirs+=("$here/regress/$name")
    "$bin" "${common[@]}" -max_total_time="$seconds" \
      -artifact_prefix="$work/" "${dirs[@]}" >"$work/fuzz.log" 2>&1 &
    pids+=($!)
    names+=("$name")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    log=$build/work/${names[$i]}/fuzz.log
    stats=$(grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' \
      "$log" | sed 's/^stat:://' | tr '\n' ' ')
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
    echo "=== ${names[$i]}: $cov $stats"
    finish "${names[$i]}" "$rc" "$log"
    if [ "$rc" -ne 0 ]; then
      ls "$build/work/${names[$i]}"/crash-* "$build/work/${names[$i]}"/leak-* \
        "$build/work/${names[$i]}"/timeout-* "$build/work/${names[$i]}"/oom-* \
        2>/dev/null | sed 's/^/    input: /'
    fi
  done
done

echo
[ "$failed" -eq 0 ] || echo "failed: ${failed_names[*]}"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
