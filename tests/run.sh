#!/usr/bin/env bash
# Runs each test binary given on the command line in its own process with a
# timeout, prints its output, and closes with one summary line
# "N passed, N failed" (binaries, not cases; each binary prints its own
# cmocka totals). Exits non-zero if any binary failed or timed out.
#
# With SAN_LOG set (the sanitizer passes point ASAN_OPTIONS/UBSAN_OPTIONS
# log_path there), a binary during whose run any process -- the test itself,
# a kvd or kvctl it started -- wrote a sanitizer report fails too, even if
# its own exit status was 0: a kvd's report would otherwise go unseen.
set -u
timeout_s=${TEST_TIMEOUT:-600}
passed=0
failed=0
failed_names=()
for bin in "$@"; do
  name=$(basename "$bin")
  echo "=== $name"
  start=$(date +%s)
  timeout --signal=KILL "$timeout_s" "$bin"
  rc=$?
  reports=()
  if [ -n "${SAN_LOG:-}" ] && [ -d "$SAN_LOG" ]; then
    mkdir -p "$SAN_LOG/$name"
    while IFS= read -r f; do
      reports+=("$SAN_LOG/$name/$(basename "$f")")
      mv "$f" "$SAN_LOG/$name/"
    done < <(find "$SAN_LOG" -maxdepth 1 -type f)
    for f in "${reports[@]}"; do
      echo "--- sanitizer report $f"
      cat "$f"
    done
    [ "${#reports[@]}" -eq 0 ] || [ "$rc" -ne 0 ] || rc=99
  fi
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "=== $name: ok ($(( $(date +%s) - start ))s)"
  else
    [ "${#reports[@]}" -eq 0 ] || echo "=== $name: ${#reports[@]} sanitizer report(s)"
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "=== $name: FAILED (exit $rc, $(( $(date +%s) - start ))s)"
  fi
done
echo
[ "$failed" -eq 0 ] || echo "failed: ${failed_names[*]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
