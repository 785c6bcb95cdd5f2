#!/usr/bin/env bash
# Runs each test binary given on the command line in its own process with a
# timeout, prints its output, and closes with one summary line
# "N passed, N failed" (binaries, not cases; each binary prints its own
# cmocka totals). Exits non-zero if any binary failed or timed out.
set -u
timeout_s=${TEST_TIMEOUT:-600}
passed=0
failed=0
failed_names=()
for bin in "$@"; do
  name=$(basename "$bin")
  echo "=== $name"
  start=$(date +%s)
  if timeout --signal=KILL "$timeout_s" "$bin"; then
    passed=$((passed + 1))
    echo "=== $name: ok ($(( $(date +%s) - start ))s)"
  else
    rc=$?
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "=== $name: FAILED (exit $rc, $(( $(date +%s) - start ))s)"
  fi
done
echo
[ "$failed" -eq 0 ] || echo "failed: ${failed_names[*]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
