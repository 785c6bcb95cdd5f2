#!/usr/bin/env bash
# `make run` / `make stop`: one local kvd with its data in ./data, its log in
# ./data/kvd.log and its pid in ./data/kvd.pid, on the default ports
# (native 7400, RESP 7401, loopback only). Prints how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
DATA=./data
PIDFILE=$DATA/kvd.pid
LOG=$DATA/kvd.log

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-start}" in
start)
  mkdir -p "$DATA"
  if running; then
    echo "kvd is already running (pid $(cat "$PIDFILE")); 'make stop' stops it."
  else
    nohup "$KVD" --data-dir "$DATA" --name local \
      --listen 127.0.0.1:7400 --resp-listen 127.0.0.1:7401 >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 50); do
      "$KVCTL" status >/dev/null 2>&1 && break
      if ! running; then
        echo "kvd failed to start; the end of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
      fi
      sleep 0.1
    done
    echo "kvd started (pid $(cat "$PIDFILE")), data in $DATA, log in $LOG"
  fi
  cat <<EOT

Native protocol on 127.0.0.1:7400 (kvctl, libkvclient), Redis protocol on 127.0.0.1:7401.

  $KVCTL put greeting hello          # store a value
  $KVCTL get greeting                # read it back
  $KVCTL put greeting hi --no-context    # a second, concurrent value: siblings
  $KVCTL get greeting --json         # both siblings and the causal context
  $KVCTL put greeting merged         # reads the context first: replaces both
  $KVCTL incr visits 5               # a counter
  $KVCTL scan                        # list keys
  $KVCTL status                      # replica id, keys, Merkle root, ...
  redis-cli -p 7401 set name epikv   # redis-cli and redis-benchmark work too
  redis-cli -p 7401 get name

Stop it with 'make stop'. Every setting: $KVD --help
EOT
  ;;
stop)
  if running; then
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 100); do running || break; sleep 0.1; done
    if running; then echo "kvd did not stop within 10 s" >&2; exit 1; fi
    rm -f "$PIDFILE"
    echo "kvd stopped"
  else
    echo "kvd is not running"
  fi
  ;;
*)
  echo "usage: tools/run.sh start|stop" >&2
  exit 2
  ;;
esac
