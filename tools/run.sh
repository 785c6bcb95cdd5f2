#!/usr/bin/env bash
# `make run` / `make stop`: a local 3-replica cluster in ./cluster, made and
# managed by `kvctl cluster` (node K on ports 7400+10(K-1): native, +1 RESP,
# +2 peer), and how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
DIR=./cluster
export KVD

case "${1:-start}" in
start)
  "$KVCTL" cluster up -n 3 --dir "$DIR"
  "$KVCTL" cluster status --dir "$DIR"
  cat <<EOT

A 3-replica epikv cluster is running (data and logs in $DIR/nodeK/).
Every replica accepts reads and writes; writes reach the others at once
(rumors) and anti-entropy repairs whatever was missed. SWIM keeps the
member list: who is alive, suspect, dead or has left.

  $KVCTL put greeting hello                      # write on node 1 (port 7400)
  $KVCTL -h 127.0.0.1:7410 get greeting          # read on node 2
  $KVCTL -h 127.0.0.1:7420 put greeting hi --no-context   # concurrent value
  $KVCTL get greeting                            # siblings: hello and hi
  $KVCTL incr visits 5; $KVCTL -h 127.0.0.1:7420 incr visits 2
  $KVCTL -h 127.0.0.1:7410 get visits            # 7
  $KVCTL status                                  # peers, exchanges, rumors
  $KVCTL members                                 # the SWIM member table
  redis-cli -p 7401 set name epikv               # Redis protocol on +1
  redis-cli -p 7411 get name

Stop a replica and watch it repair when it comes back:
  $KVCTL cluster stop --dir $DIR --node 3     # a graceful leave
  $KVCTL members                                 # node3: left
  $KVCTL put while-away yes
  $KVCTL cluster start --dir $DIR --node 3
  $KVCTL -h 127.0.0.1:7420 get while-away
  $KVCTL cluster logs --dir $DIR --node 3

'make stop' stops the cluster (its data stays in $DIR).
EOT
  ;;
stop)
  if [ -f "$DIR/cluster.conf" ]; then
    "$KVCTL" cluster down --dir "$DIR"
  else
    echo "no cluster in $DIR"
  fi
  ;;
*)
  echo "usage: tools/run.sh start|stop" >&2
  exit 2
  ;;
esac
