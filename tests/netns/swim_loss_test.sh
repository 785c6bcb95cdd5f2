#!/usr/bin/env bash
# SWIM under packet loss (issue: membership, DESIGN §6.3): five kvd replicas,
# each in its own network namespace on a bridge, with nftables dropping 10% of
# the packets every replica receives (so 10% on every link, UDP and TCP
# alike), run with memberlist's default timings for LOSS_SECONDS (default
# 300). Meanwhile a client keeps writing. Passes if no replica ever declared
# another dead, every replica ends with all five alive, and the data
# converges. Needs root, `ip netns` and nft; says so and skips otherwise.
#
# Env: KVD, KVCTL (binaries), LOSS_SECONDS, LOSS_PERCENT (default 10).
set -u
secs=${LOSS_SECONDS:-300}
loss=${LOSS_PERCENT:-10}
n=5
KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}

skip() {
  echo "swim_loss_test: SKIP: $*"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
command -v nft >/dev/null || skip "no 'nft' command (nftables)"
tag=ek$$
ip netns add "${tag}br" 2>/dev/null || skip "this machine does not allow network namespaces"

dir=$(mktemp -d /tmp/swim-loss.XXXXXX)
pids=()
cleanup() {
  # SIGTERM (a graceful leave), then SIGKILL for any still running.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for i in $(seq 1 $n); do ip netns del "${tag}n$i" 2>/dev/null; done
  ip netns del "${tag}br" 2>/dev/null
  if [ "${keep:-0}" = 1 ]; then echo "logs kept in $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

fail() {
  echo "swim_loss_test: FAIL: $*"
  for i in $(seq 1 $n); do
    echo "---- n$i (last lines)"
    grep -E "member_|error" "$dir/n$i/kvd.log" | tail -15
  done
  keep=1
  exit 1
}

# The bridge lives in its own namespace; each replica's namespace has one
# veth leg on it, 10.77.0.i/24.
ip -n "${tag}br" link add br0 type bridge
ip -n "${tag}br" link set br0 up
for i in $(seq 1 $n); do
  ns=${tag}n$i
  ip netns add "$ns"
  ip link add "v$tag$i" type veth peer name "b$tag$i"
  ip link set "v$tag$i" netns "$ns"
  ip link set "b$tag$i" netns "${tag}br"
  ip -n "${tag}br" link set "b$tag$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "v$tag$i" name eth0
  ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip netns exec "$ns" nft -f - <<EOF || fail "nft rules refused"
table inet loss {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "eth0" numgen random mod 100 < $loss drop
  }
}
EOF
done

"$KVCTL" keygen >"$dir/cluster.key"
for i in $(seq 1 $n); do
  mkdir -p "$dir/n$i"
  join=""
  [ "$i" -gt 1 ] && join="--join 10.77.0.1:7402,10.77.0.2:7402"
  ip netns exec "${tag}n$i" "$KVD" --name "n$i" --data-dir "$dir/n$i/data" \
    --listen 127.0.0.1:7400 --resp-listen "" --peer-listen "10.77.0.$i:7402" \
    --cluster-key-file "$dir/cluster.key" --sync none $join \
    2>"$dir/n$i/kvd.log" &
  pids+=($!)
  sleep 0.2
done

ctl() { # ctl NODE ARGS...: kvctl against replica NODE, inside its namespace
  local i=$1
  shift
  ip netns exec "${tag}n$i" "$KVCTL" -h 127.0.0.1:7400 --timeout 3000 "$@"
}

alive_count() {
  ctl "$1" members --json 2>/dev/null | grep -o '"state":"alive"' | wc -l
}

# Formation (with loss already on): all five alive everywhere within 30 s.
deadline=$((SECONDS + 30))
for i in $(seq 1 $n); do
  until [ "$(alive_count "$i")" = $n ]; do
    [ $SECONDS -lt $deadline ] || fail "n$i did not see $n alive members"
    sleep 0.5
  done
done
echo "swim_loss_test: $n replicas formed a cluster; ${loss}% loss on every link for ${secs}s"

# The run: one write a second through a random replica; watch every 10 s.
end=$((SECONDS + secs))
writes=0
next_report=$((SECONDS + 60))
while [ $SECONDS -lt $end ]; do
  i=$((RANDOM % n + 1))
  ctl "$i" put "k$writes" "v$writes" >/dev/null 2>&1 && writes=$((writes + 1))
  for j in $(seq 1 $n); do
    kill -0 "${pids[$((j - 1))]}" 2>/dev/null || fail "kvd n$j exited"
  done
  if grep -q "event=member_dead" "$dir"/n*/kvd.log; then
    fail "a replica was declared dead under ${loss}% loss"
  fi
  if [ $SECONDS -ge $next_report ]; then
    suspects=$(cat "$dir"/n*/kvd.log | grep -c "event=member_suspect")
    echo "swim_loss_test: $((secs - (end - SECONDS)))s: $writes writes, $suspects suspicions refuted, no deaths"
    next_report=$((SECONDS + 60))
  fi
  sleep 1
done

for i in $(seq 1 $n); do
  [ "$(alive_count "$i")" = $n ] || fail "n$i does not hold all $n members alive at the end"
done
if grep -q "event=member_dead" "$dir"/n*/kvd.log; then
  fail "a replica was declared dead under ${loss}% loss"
fi

# Heal the network; the data must converge.
for i in $(seq 1 $n); do ip netns exec "${tag}n$i" nft delete table inet loss; done
deadline=$((SECONDS + 60))
while :; do
  roots=$(for i in $(seq 1 $n); do ctl "$i" status --json 2>/dev/null | grep -o '"merkle_root":"[0-9a-f]*"'; done | sort -u | wc -l)
  keys=$(ctl 1 status --json 2>/dev/null | grep -o '"keys":[0-9]*' | head -1 | cut -d: -f2)
  [ "$roots" = 1 ] && [ "${keys:-0}" = "$writes" ] && break
  [ $SECONDS -lt $deadline ] || fail "data did not converge ($roots roots, $keys of $writes keys)"
  sleep 1
done
suspects=$(cat "$dir"/n*/kvd.log | grep -c "event=member_suspect")
sent=0
for i in $(seq 1 $n); do
  s=$(ctl "$i" status --json | grep -o '"swim":{"sent":[0-9]*' | grep -o '[0-9]*$')
  sent=$((sent + s))
done
echo "swim_loss_test: ok: ${secs}s at ${loss}% loss, $writes writes converged, $suspects suspicions all refuted, 0 false deaths, $(awk -v s="$sent" -v n=$n -v t=$((secs + 30)) 'BEGIN { printf "%.2f", s / n / t }') SWIM messages per member per second"
