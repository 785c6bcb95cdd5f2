#!/usr/bin/env bash
# Repair benchmark: two replicas (kvctl cluster -n 2), 1,000,000 keys with
# 100-byte values, then 1% and 0.1% of the keys changed on replica 1 while
# replica 2 is down; replica 2 restarts and anti-entropy alone repairs it.
#
# Measured:
#   - the bytes of one anti-entropy exchange between replicas already in sync
#     (target: <= 100 bytes each way), from both replicas' status counters
#     over an idle window (peer_bytes_sent / peer_messages_sent: framed and
#     sealed, as on the wire) and from the ae_exchange debug log lines
#     (encoded PeerMessage bytes, before sealing);
#   - per divergence: time from the restart of replica 2 until both Merkle
#     roots (and key counts) are equal, bytes exchanged (both replicas'
#     peer_bytes_sent deltas over that time, on the wire), against the
#     divergent objects' own bytes (key + canonical object bytes of the
#     changed keys, read from replica 1's LMDB file with `kvload objsize`)
#     and against a full-state transfer (key + object bytes of all keys).
#     Targets: <= 2x the divergent bytes at 1%; >= 100x less than the full
#     state at 0.1%.
#   - divergence over time: every 100 ms, replica 2 is read for a fixed
#     random sample of the changed keys (all of them at 0.1%, 1,000 at 1%):
#     remaining = changed keys x the share of the sample not yet holding the
#     new value (0 once the roots are equal). CSV and PNG plot.
#
# Settings (appended to both kvd.conf): sync = none for the whole benchmark
# (it measures repair, not durability: NOT durable), log-level = debug,
# ae-interval = $AE_INTERVAL (default 2000 ms, kvd's default). The load runs
# with rumors on (replica 2 receives the same objects); for the repair phases
# both replicas restart with rumors = no, so anti-entropy alone repairs.
#
# Usage: bench/repair-bench.sh       (from the repository root)
# Environment: BUILD (default build) holding kvd, kvctl, kvload, or KVD,
# KVCTL, KVLOAD; BASE_PORT (27500); KEYS (1000000); VALUE_BYTES (100);
# AE_INTERVAL (2000); FRACTIONS ("0.01 0.001"); OUT (output prefix, default
# bench/repair: writes OUT.csv and OUT.png); EXTRA_CONF (more kvd.conf lines
# for both replicas, e.g. "ae-max-segments = 65536"); WORK (scratch dir). Listens on
# 127.0.0.1 only. Exit status 0 even when targets are missed.
set -u

BUILD=${BUILD:-build}
KVD=$(realpath "${KVD:-$BUILD/kvd}")
KVCTL=$(realpath "${KVCTL:-$BUILD/kvctl}")
KVLOAD=$(realpath "${KVLOAD:-$BUILD/kvload}")
BASE_PORT=${BASE_PORT:-27500}
KEYS=${KEYS:-1000000}
VALUE_BYTES=${VALUE_BYTES:-100}
AE_INTERVAL=${AE_INTERVAL:-2000}
FRACTIONS=${FRACTIONS:-0.01 0.001}
IDLE_SECONDS=${IDLE_SECONDS:-20}
SEED=${SEED:-0x5eed}
OUT=${OUT:-$(dirname "$0")/repair}
EXTRA_CONF=${EXTRA_CONF:-}

for b in "$KVD" "$KVCTL" "$KVLOAD"; do
  [ -x "$b" ] || { echo "repair-bench: $b not found (make; see BUILD)" >&2; exit 2; }
done
command -v gnuplot >/dev/null || echo "repair-bench: gnuplot not found; no PNG (apt-get install gnuplot-nox)" >&2

OWN_WORK=""
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d /tmp/repair-bench.XXXXXX)
  OWN_WORK=$WORK
fi
mkdir -p "$WORK"
C="$WORK/cluster"
cleanup() {
  [ -f "$C/cluster.conf" ] && "$KVCTL" cluster down --dir "$C" --purge >/dev/null 2>&1
  [ -n "$OWN_WORK" ] && rm -rf "$OWN_WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

A=127.0.0.1:$BASE_PORT
B=127.0.0.1:$((BASE_PORT + 10))
res() { # res "RESULT line" key
  echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}
fail() {
  echo "repair-bench: $*" >&2
  exit 0
}

# Plots OUT.csv (case,t_s,remaining; cases in order of appearance) to OUT.png.
plot_csv() {
  command -v gnuplot >/dev/null || return 0
  local cases plot="" c i=0
  cases=$(awk -F, 'NR > 1 && !seen[$1]++ { print $1 }' "$OUT.csv")
  for c in $cases; do
    i=$((i + 1))
    awk -F, -v c="$c" 'NR > 1 && $1 == c { print $2, $3 }' "$OUT.csv" >"$WORK/plot$i.dat"
    plot="$plot${plot:+, }'$WORK/plot$i.dat' using 1:2 with steps linewidth 2 title '$c divergent ($(head -1 "$WORK/plot$i.dat" | cut -d' ' -f2) keys)'"
  done
  [ -n "$plot" ] || return 0
  local extra=""
  [ -n "$EXTRA_CONF" ] && extra="\\n$(echo "$EXTRA_CONF" | paste -sd ';' -)"
  gnuplot <<EOF
set terminal pngcairo size 900,540 font "sans,11"
set output "$OUT.png"
set title "Anti-entropy repair of replica 2 after its restart\\n$KEYS keys x $VALUE_BYTES B, 2 replicas, ae-interval $AE_INTERVAL ms, rumors off, sync = none$extra"
set xlabel "seconds since replica 2 was restarted"
set ylabel "divergent keys remaining on replica 2"
set grid
set key outside below center horizontal
set yrange [0:*]
set xrange [0:*]
plot $plot
EOF
  echo
  echo "plot: $OUT.png (data: $OUT.csv)"
}

# PLOT_ONLY=1: redraw OUT.png from an existing OUT.csv and stop.
if [ -n "${PLOT_ONLY:-}" ]; then
  plot_csv
  exit 0
fi

echo "repair-bench: $KEYS keys x $VALUE_BYTES-byte values, 2 replicas, ae-interval $AE_INTERVAL ms, sync = none (NOT durable), work dir $WORK"
[ -n "$EXTRA_CONF" ] && echo "extra kvd.conf settings: $(echo "$EXTRA_CONF" | tr '\n' ';')"

rm -rf "$C"
"$KVCTL" cluster up -n 2 --dir "$C" --base-port "$BASE_PORT" --kvd "$KVD" >/dev/null ||
  fail "cluster up failed"
"$KVCTL" cluster stop --dir "$C" >/dev/null
for k in 1 2; do
  printf 'sync = none\nlog-level = debug\nae-interval = %s\n' "$AE_INTERVAL" >>"$C/node$k/kvd.conf"
  [ -n "$EXTRA_CONF" ] && printf '%s\n' "$EXTRA_CONF" >>"$C/node$k/kvd.conf"
done
"$KVCTL" cluster start --dir "$C" --kvd "$KVD" >/dev/null || fail "cluster start failed"

# ---- load, then wait until both replicas hold the same state ----
echo
echo "=== load: $KEYS keys into replica 1 (rumors on, so replica 2 gets the same objects)"
out=$("$KVLOAD" load -h "$A" --keys "$KEYS" --value-bytes "$VALUE_BYTES" --seed "$SEED") || fail "load failed: $out"
echo "$out" | grep -v '^RESULT'
out=$("$KVLOAD" watch -h "$A" -h "$B" --timeout 900) || fail "watch failed"
echo "$out" | grep -v '^RESULT'
[ "$(res "$(echo "$out" | grep '^RESULT')" synced)" = 1 ] || fail "replicas did not converge after the load"
LOAD_SYNC_S=$(res "$(echo "$out" | grep '^RESULT')" seconds)

# ---- in-sync exchange ----
echo
echo "=== in sync: peer traffic over $IDLE_SECONDS idle seconds"
n1=$(wc -l <"$C/node1/kvd.log")
n2=$(wc -l <"$C/node2/kvd.log")
out=$("$KVLOAD" idle -h "$A" -h "$B" --seconds "$IDLE_SECONDS") || fail "idle failed"
echo "$out" | grep -v '^RESULT'
IDLE=$(echo "$out" | grep '^RESULT')
IDLE_BPM=$(res "$IDLE" bytes_per_msg)
IDLE_LOG=$({
  tail -n +$((n1 + 1)) "$C/node1/kvd.log"
  tail -n +$((n2 + 1)) "$C/node2/kvd.log"
} | grep 'event=ae_exchange' | grep 'in_sync=1' |
  sed -E 's/.*bytes_sent=([0-9]+) bytes_received=([0-9]+).*/\1 \2/' |
  awk '{ n++; s += $1; r += $2 } END { if (n) printf "%d %.1f %.1f", n, s / n, r / n; else print "0 0 0" }')
read -r IDLE_N IDLE_PS IDLE_PR <<<"$IDLE_LOG"
echo "ae_exchange log lines with in_sync=1: $IDLE_N; encoded PeerMessage bytes per exchange: AeRoot $IDLE_PS, AeRootReply $IDLE_PR (before sealing and framing)"

# ---- full state ----
out=$("$KVLOAD" objsize --data-dir "$C/node1/data") || fail "objsize failed"
echo "$out" | grep -v '^RESULT'
r=$(echo "$out" | grep '^RESULT')
FULL_BYTES=$(($(res "$r" key_bytes) + $(res "$r" object_bytes)))
OBJ_MEAN=$(awk -v o="$(res "$r" object_bytes)" -v n="$(res "$r" keys)" 'BEGIN { printf "%.1f", o / n }')
MDB_BYTES=$(stat -c %s "$C/node1/data/data.mdb")
echo "full state: $FULL_BYTES bytes of keys + objects ($OBJ_MEAN-byte objects); data.mdb file $MDB_BYTES bytes"

# ---- repairs ----
"$KVCTL" cluster stop --dir "$C" >/dev/null
for k in 1 2; do echo "rumors = no" >>"$C/node$k/kvd.conf"; done
"$KVCTL" cluster start --dir "$C" --node 1 --kvd "$KVD" >/dev/null || fail "restart of replica 1 failed"

declare -a ROWS
CSV="$OUT.csv"
echo "case,t_s,remaining" >"$CSV"
phase=0
for f in $FRACTIONS; do
  phase=$((phase + 1))
  count=$(awk -v k="$KEYS" -v f="$f" 'BEGIN { printf "%d", k * f + 0.5 }')
  pct=$(awk -v f="$f" 'BEGIN { printf "%g%%", f * 100 }')
  useed=$((SEED + phase))
  echo
  echo "=== repair of $pct: $count keys changed on replica 1 while replica 2 is down"
  "$KVCTL" cluster stop --dir "$C" --node 2 >/dev/null
  out=$("$KVLOAD" update -h "$A" --keys "$KEYS" --count "$count" --value-bytes "$VALUE_BYTES" \
    --seed "$useed" --out "$WORK/div$phase.txt") || fail "update failed: $out"
  echo "$out" | grep -v '^RESULT'
  out=$("$KVLOAD" objsize --data-dir "$C/node1/data" --list "$WORK/div$phase.txt") || fail "objsize failed"
  r=$(echo "$out" | grep '^RESULT')
  DIV_BYTES=$(($(res "$r" listed_key_bytes) + $(res "$r" listed_object_bytes)))
  echo "divergent objects' own bytes: $(res "$r" listed) keys, $(res "$r" listed_key_bytes) key + $(res "$r" listed_object_bytes) object bytes = $DIV_BYTES"
  n1=$(wc -l <"$C/node1/kvd.log")
  n2=$(wc -l <"$C/node2/kvd.log")
  out=$("$KVLOAD" watch -h "$A" -h "$B" --list "$WORK/div$phase.txt" --seed "$useed" \
    --value-bytes "$VALUE_BYTES" --sample 1000 --csv "$WORK/watch$phase.csv" --timeout 600 \
    --start-cmd "'$KVCTL' cluster start --dir '$C' --node 2 --kvd '$KVD' >/dev/null")
  echo "$out" | grep -v '^RESULT'
  W=$(echo "$out" | grep '^RESULT')
  echo "$pct,0,$count" >>"$CSV"
  awk -F, -v c="$pct" 'NR > 1 { print c "," $1 "," $2 }' "$WORK/watch$phase.csv" >>"$CSV"
  out=$("$KVLOAD" check -h "$B" --list "$WORK/div$phase.txt" --seed "$useed" --value-bytes "$VALUE_BYTES")
  echo "check on replica 2: $(echo "$out" | grep -v '^RESULT')"
  STALE=$(res "$(echo "$out" | grep '^RESULT')" stale)
  # The exchanges of this phase, from both replicas' logs.
  AE=$({
    tail -n +$((n1 + 1)) "$C/node1/kvd.log" | sed 's/^/node1 /'
    tail -n +$((n2 + 1)) "$C/node2/kvd.log" | sed 's/^/node2 /'
  } | grep 'event=ae_exchange' | grep 'in_sync=0')
  echo "anti-entropy exchanges that found differences (initiator, outcome, segments, keys pushed/pulled, PeerMessage bytes sent/received, ms):"
  echo "$AE" | sed -E 's/^(node[0-9]) ts=[^ ]*T([^ ]*) .* outcome=([a-z]+) in_sync=0 segments=([0-9]+) keys_pushed=([0-9]+) keys_pulled=([0-9]+) bytes_sent=([0-9]+) bytes_received=([0-9]+) ms=([0-9]+)/  \2 \1 \3 seg=\4 pushed=\5 pulled=\6 sent=\7 recv=\8 ms=\9/' |
    sort -k1,1 | awk '{ l[NR] = $0 } END { for (i = 1; i <= NR; i++) if (NR <= 24 || i <= 10 || i > NR - 10) print l[i]; else if (i == 11) print "  ... " NR - 20 " more ..." }'
  echo "outcomes: $(echo "$AE" | grep -o 'outcome=[a-z]*' | sort | uniq -c | awk '{ printf "%s%s %s", sep, $1, substr($2, 9); sep = ", " }')"
  AE_PAYLOAD=$(echo "$AE" | sed -E 's/.*bytes_sent=([0-9]+) bytes_received=([0-9]+).*/\1 \2/' |
    awk '{ s += $1 + $2 } END { printf "%d", s }')
  WIRE=$(($(res "$W" a_bytes_sent) + $(res "$W" b_bytes_sent)))
  ratio_div=$(awk -v w="$WIRE" -v d="$DIV_BYTES" 'BEGIN { printf "%.2f", w / d }')
  ratio_full=$(awk -v w="$WIRE" -v f="$FULL_BYTES" 'BEGIN { printf "%.1f", f / w }')
  echo "bytes on the wire, both directions: $WIRE (replica 1 sent $(res "$W" a_bytes_sent), replica 2 sent $(res "$W" b_bytes_sent)); AE PeerMessage payload in the logs: $AE_PAYLOAD"
  echo "= ${ratio_div}x the divergent bytes; full state / repair = ${ratio_full}x"
  ROWS+=("$pct|$count|$(res "$W" synced)|$(res "$W" seconds)|$(res "$W" alive_s)|$(res "$W" first_repair_s)|$(res "$W" a_exchanges)+$(res "$W" b_exchanges)|$DIV_BYTES|$WIRE|$AE_PAYLOAD|$ratio_div|$ratio_full|$STALE")
done

# ---- plot ----
plot_csv
# ---- summary ----
echo
echo "Summary ($KEYS keys, $VALUE_BYTES-byte values; full state = $FULL_BYTES bytes of keys + objects; ae-interval $AE_INTERVAL ms; sync = none):"
echo "load: replicas in sync ${LOAD_SYNC_S} s after the load finished"
echo "in-sync exchange: $(res "$IDLE" exchanges) exchanges, $(res "$IDLE" msgs) messages, $(res "$IDLE" bytes) bytes: $(res "$IDLE" bytes_per_exchange) bytes per exchange, $IDLE_BPM bytes per message on the wire (payload AeRoot $IDLE_PS / AeRootReply $IDLE_PR)"
printf '%-6s %7s %6s %9s %8s %9s %9s %12s %12s %12s %9s %10s %6s\n' \
  case keys synced converge_s alive_s 1st_fix_s exchanges divergent_B wire_B ae_payload_B wire/div full/wire stale
for row in "${ROWS[@]}"; do
  IFS='|' read -r -a c <<<"$row"
  printf '%-6s %7s %6s %9s %8s %9s %9s %12s %12s %12s %9s %10s %6s\n' "${c[@]}"
done
echo
if awk -v b="$IDLE_BPM" 'BEGIN { exit !(b <= 100) }'; then
  echo "target in-sync exchange <= 100 bytes each way: MET ($IDLE_BPM bytes per message)"
else
  echo "target in-sync exchange <= 100 bytes each way: MISSED ($IDLE_BPM bytes per message)"
fi
for row in "${ROWS[@]}"; do
  IFS='|' read -r -a c <<<"$row"
  case ${c[0]} in
  1%)
    if awk -v r="${c[10]}" 'BEGIN { exit !(r <= 2) }'; then
      echo "target 1% repair <= 2x the divergent bytes: MET (${c[10]}x)"
    else
      echo "target 1% repair <= 2x the divergent bytes: MISSED (${c[10]}x, $(awk -v r="${c[10]}" 'BEGIN { printf "%.1f", r / 2 }')x over)"
    fi
    ;;
  0.1%)
    if awk -v r="${c[11]}" 'BEGIN { exit !(r >= 100) }'; then
      echo "target 0.1% repair >= 100x less than full transfer: MET (${c[11]}x less)"
    else
      echo "target 0.1% repair >= 100x less than full transfer: MISSED (${c[11]}x less)"
    fi
    ;;
  esac
done
exit 0
