/*
 * Local clusters for kvctl (DESIGN.md §10): `kvctl cluster up|start|stop|
 * status|logs|down` run N kvd processes on this machine from one directory D.
 * Node K (1-based) lives in D/nodeK/ (kvd.conf, data/, kvd.pid, kvd.log) and
 * owns ports P+10(K-1) (native), +1 (RESP), +2 (peer), +3 (metrics, reserved);
 * D/cluster.conf records N and P and is what marks D as a cluster directory,
 * and D/cluster.key is the cluster key every node shares.
 *
 * A pid file is trusted only while the process it names is a kvd started with
 * that node's kvd.conf, so a stale file (or a reused pid) never leads kvctl to
 * signal a process that is not the node's.
 */
#ifndef KVCTL_CLUSTER_H
#define KVCTL_CLUSTER_H

#include <stdbool.h>

/* The parsed command line of one `kvctl cluster SUB` call. Strings are
 * borrowed for the call. kvctl.c has already checked arity, which options
 * apply to which subcommand, and that numbers are in range. */
typedef struct kvctl_cluster_args {
  const char *sub; /* "up", "start", "stop", "status", "logs" or "down" */
  const char *dir; /* --dir D; NULL if not given (a usage error) */
  int nodes;       /* up: -n N; 0 if not given */
  int base_port;   /* up: --base-port P; 0 if not given */
  int node;        /* start, stop, logs: --node K; 0 for every node */
  int lines;       /* logs: -n LINES; 0 for the default */
  bool purge;      /* down: --purge */
  const char *kvd; /* up, start: --kvd PATH; NULL to look kvd up */
  bool json;       /* status: --json */
} kvctl_cluster_args;

/* Runs the subcommand. Progress goes to stdout, errors to stderr as
 * "kvctl: <message>". Returns kvctl's exit status: 0 ok, 2 usage error (the
 * arguments contradict the cluster in D), 3 any other error. */
int kvctl_cluster_run(const kvctl_cluster_args *a);

#endif
