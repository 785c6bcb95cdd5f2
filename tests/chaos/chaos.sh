#!/usr/bin/env bash
# Chaos test (issue 8; reliability.md §6-7): N kvd replicas (default 5), each
# in its own network namespace with one veth leg on a bridge, under a seeded
# nemesis (partitions, nftables loss, kill -9, SIGSTOP) and crash rounds
# (kill -9 under load, then read back what the replica acknowledged). This
# script builds and removes the namespaces; the C program beside it
# (build/tests/chaos) runs the replicas, the clients, the nemesis and the
# checker, and prints its seed and how to rerun it. It ends with the
# self-test, which breaks the checker's inputs and expects each to be caught.
# Needs root, `ip netns` and nft; says SKIP and exits 0 otherwise.
#
# Usage: chaos.sh [--seed S] [--seconds N] [--kills K] [--self-test] [...]
#   (every option goes to the C program: build/tests/chaos --help)
# Env: KVD, KVCTL, CHAOS (binaries), CHAOS_SECONDS (default 60) and
#   CHAOS_KILLS (default 20) when not given as options, CHAOS_NODES (5),
#   CHAOS_KEEP=1 to keep the replicas' logs even when the run passes.
set -u
KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
CHAOS=${CHAOS:-$(dirname "$KVD")/tests/chaos}
n=${CHAOS_NODES:-5}
subnet=10.78.0

skip() {
  echo "chaos: SKIP: $*"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
command -v nft >/dev/null || skip "no 'nft' command (nftables)"
for b in "$KVD" "$KVCTL" "$CHAOS"; do
  [ -x "$b" ] || { echo "chaos: FAIL: $b is not built"; exit 1; }
done
tag=ch$$
ip netns add "${tag}br" 2>/dev/null || skip "this machine does not allow network namespaces"

dir=$(mktemp -d /tmp/chaos.XXXXXX)
keep=${CHAOS_KEEP:-0}
cleanup() {
  # Whatever still runs in our namespaces was started by this test.
  for i in $(seq 1 "$n"); do
    for p in $(ip netns pids "${tag}n$i" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  for i in $(seq 1 "$n"); do ip netns del "${tag}n$i" 2>/dev/null; done
  ip netns del "${tag}br" 2>/dev/null
  if [ "$keep" = 1 ]; then echo "chaos: logs kept in $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip -n "${tag}br" link add br0 type bridge || skip "cannot create a bridge"
ip -n "${tag}br" link set br0 up
for i in $(seq 1 "$n"); do
  ns=${tag}n$i
  ip netns add "$ns"
  ip link add "v$tag$i" type veth peer name "b$tag$i" || skip "cannot create veth pairs"
  ip link set "v$tag$i" netns "$ns"
  ip link set "b$tag$i" netns "${tag}br"
  ip -n "${tag}br" link set "b$tag$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "v$tag$i" name eth0
  ip -n "$ns" addr add "$subnet.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
done
ip netns exec "${tag}n1" nft list ruleset >/dev/null 2>&1 || skip "nft does not work in a namespace here"
"$KVCTL" keygen >"$dir/cluster.key" || { echo "chaos: FAIL: kvctl keygen"; exit 1; }

args=()
case " $* " in *" --seconds "*) ;; *) args+=(--seconds "${CHAOS_SECONDS:-60}") ;; esac
case " $* " in *" --kills "*) ;; *) args+=(--kills "${CHAOS_KILLS:-20}") ;; esac
"$CHAOS" --ns-prefix "${tag}n" --subnet "$subnet" --nodes "$n" --dir "$dir" \
  --kvd "$KVD" "${args[@]}" "$@"
rc=$?
if [ $rc -ne 0 ]; then
  keep=1
  for i in $(seq 1 "$n"); do
    echo "---- n$i.log (errors and warnings, last lines)"
    grep -E "level=(error|warn)" "$dir/n$i.log" | tail -8
  done
fi
exit $rc
