/*
 * kvd's settings. One table (KVD_SETTINGS) names every setting once, with its
 * type, default and help text; the INI file parser, the command-line parser
 * and `kvd --help` are all generated from it, so a setting cannot exist in one
 * and be missing from another. Flags override the file; an unknown name or an
 * invalid value stops kvd at start with a message naming the setting.
 */
#ifndef KVD_CONFIG_H
#define KVD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/kv_err.h"

/* X(field, "name", type, "default", "help"). Types: STR, SIZE (bytes, with
 * optional k/m/g suffix), UINT, BOOL (flag without value on the command line;
 * yes/no/true/false/1/0 in the file), ADDR (host:port). */
#define KVD_SETTINGS(X)                                                        \
  X(config, "config", STR, "", "read settings from this INI file first")       \
  X(name, "name", STR, "kvd", "this replica's name, shown in status and logs") \
  X(data_dir, "data-dir", STR, "./data",                                       \
    "data directory (created if missing)")                                     \
  X(listen, "listen", ADDR, "127.0.0.1:7400",                                  \
    "native client protocol address")                                          \
  X(resp_listen, "resp-listen", ADDR, "127.0.0.1:7401",                        \
    "Redis protocol (RESP) address; empty to disable")                         \
  X(metrics_listen, "metrics-listen", ADDR, "127.0.0.1:7403",                  \
    "HTTP address for /metrics (Prometheus) and /health; empty: off")          \
  X(auth_token_file, "auth-token-file", STR, "",                               \
    "file holding the client auth token; without one, client ports must be "   \
    "on loopback")                                                             \
  X(sync, "sync", STR, "always",                                               \
    "always: fsync every commit (acknowledged writes are durable); none: no "  \
    "fsync (faster, an OS crash may lose recent writes)")                      \
  X(verify, "verify", BOOL, "no",                                              \
    "rebuild the Merkle leaves from the objects, compare, print and exit")     \
  X(restore, "restore", STR, "",                                               \
    "before starting, fill data-dir (new or empty) from this backup "          \
    "directory (kvctl backup), with a fresh replica id")                       \
  X(log_level, "log-level", STR, "info", "debug, info, warn or error")         \
  X(segments, "segments", UINT, "65536",                                       \
    "Merkle tree segments, a power of two (fixed per cluster)")                \
  X(map_size, "map-size", SIZE, "8g", "LMDB map size (maximum data size)")     \
  X(max_value_bytes, "max-value-bytes", SIZE, "16m", "largest value accepted") \
  X(max_siblings, "max-siblings", UINT, "100",                                 \
    "most sibling values a key may hold")                                      \
  X(max_frame_bytes, "max-frame-bytes", SIZE, "20m",                           \
    "largest client request; a bigger one closes the connection")              \
  X(max_clients, "max-clients", UINT, "10000", "most client connections")      \
  X(max_pipeline, "max-pipeline", UINT, "1024",                                \
    "requests queued per connection before kvd stops reading from it")         \
  X(max_clients_per_addr, "max-clients-per-addr", UINT, "1000",                \
    "most client connections from one IP address")                             \
  X(read_timeout, "read-timeout", UINT, "30000",                               \
    "milliseconds a client (or an unintroduced peer) has to finish a request " \
    "it has started; then it is closed")                                       \
  X(idle_timeout, "idle-timeout", UINT, "300000",                              \
    "milliseconds a client connection may stay idle (nothing received, no "    \
    "reply taken) before it is closed; 0 = never")                             \
  X(max_input_buffer, "max-input-buffer-bytes", SIZE, "256m",                  \
    "most bytes of incomplete requests held for all clients together; the "    \
    "connection that would exceed it is closed")                               \
  X(max_output_buffer, "max-output-buffer-bytes", SIZE, "8m",                  \
    "unsent reply bytes per connection above which kvd stops reading and "     \
    "answering it until the client reads")                                     \
  X(ports_file, "ports-file", STR, "",                                         \
    "after binding, write the actual ports here (for tests using port 0)")     \
  X(cluster, "cluster", STR, "epikv",                                          \
    "cluster name; replicas of different clusters refuse each other")          \
  X(peer_listen, "peer-listen", ADDR, "127.0.0.1:7402",                        \
    "replica-to-replica address (TCP)")                                        \
  X(join, "join", STR, "", "peers to connect to, host:port[,host:port...]")    \
  X(cluster_key_file, "cluster-key-file", STR, "",                             \
    "file with the base64 cluster key (kvctl keygen); seals all peer traffic") \
  X(insecure, "insecure", BOOL, "no",                                          \
    "allow peer networking without a cluster key (unauthenticated, clear)")    \
  X(rumors, "rumors", BOOL, "yes", "push fresh writes to peers at once")       \
  X(anti_entropy, "anti-entropy", BOOL, "yes",                                 \
    "start Merkle-tree exchanges with peers periodically (peers' exchanges "   \
    "are always answered)")     \
  X(ae_interval, "ae-interval", UINT, "2000",                                  \
    "milliseconds between anti-entropy exchanges")                             \
  X(ae_max_segments, "ae-max-segments", UINT, "4096",                          \
    "most differing segments repaired per exchange")                           \
  X(ae_max_keys, "ae-max-keys", UINT, "100000",                                \
    "most keys compared per exchange")                                         \
  X(fanout, "fanout", UINT, "3", "peers each rumor is pushed to per round")    \
  X(rumor_k, "rumor-k", UINT, "2", "not-news acks after which a rumor dies")   \
  X(peer_max_frame, "peer-max-frame-bytes", SIZE, "64m",                       \
    "largest peer message")                                                    \
  X(max_clock_skew, "max-clock-skew", UINT, "30000",                           \
    "milliseconds a peer envelope's timestamp may differ from ours")            \
  X(max_peer_conns_per_addr, "max-peer-conns-per-addr", UINT, "64",            \
    "most inbound peer connections from one IP address")                       \
  X(peer_rate, "peer-rate", UINT, "100000",                                    \
    "peer envelopes accepted per second from one sender (token bucket); "      \
    "the excess is dropped and counted; 0 = no limit")                         \
  X(peer_burst, "peer-burst", UINT, "200000",                                  \
    "the token bucket's size: envelopes a sender may send at once")            \
  X(probe_interval, "probe-interval", UINT, "1000",                            \
    "SWIM: milliseconds between failure-detection probes")                     \
  X(probe_timeout, "probe-timeout", UINT, "500",                               \
    "SWIM: milliseconds to wait for a direct ack before asking others")        \
  X(indirect_checks, "indirect-checks", UINT, "3",                             \
    "SWIM: members asked to probe a silent member for us (ping-req)")          \
  X(suspicion_mult, "suspicion-mult", UINT, "4",                               \
    "SWIM: suspicion timeout = this x log10(members) x probe-interval")        \
  X(suspicion_max_mult, "suspicion-max-mult", UINT, "6",                       \
    "SWIM: a lone suspicion lasts up to this x the suspicion timeout")         \
  X(retransmit_mult, "retransmit-mult", UINT, "4",                             \
    "SWIM: an update is piggybacked this x ceil(log10(members+1)) times")      \
  X(awareness_max, "awareness-max", UINT, "8",                                 \
    "SWIM (Lifeguard): most the probe interval stretches when unhealthy")      \
  X(gossip_interval, "gossip-interval", UINT, "200",                           \
    "SWIM: milliseconds between gossip rounds")                                \
  X(gossip_nodes, "gossip-nodes", UINT, "3",                                   \
    "SWIM: members gossiped to per round")                                     \
  X(gossip_to_the_dead, "gossip-to-the-dead", UINT, "30000",                   \
    "SWIM: milliseconds a dead member is still gossiped to")                   \
  X(push_pull_interval, "push-pull-interval", UINT, "30000",                   \
    "SWIM: milliseconds between full member-table exchanges over TCP")         \
  X(udp_buffer, "udp-buffer", SIZE, "1400",                                   \
    "SWIM: largest datagram sent; piggybacked updates fill it up to this")     \
  X(tombstone_grace, "tombstone-grace", UINT, "86400",                         \
    "seconds a replica may be away from its cluster and still rejoin with "    \
    "its data (DESIGN 2.3)")

typedef enum kvd_setting_type {
  KVD_STR,
  KVD_SIZE,
  KVD_UINT,
  KVD_BOOL,
  KVD_ADDR
} kvd_setting_type;

typedef struct kvd_config {
#define KVD_FIELD(field, name, type, def, help) char *field;
  KVD_SETTINGS(KVD_FIELD)
#undef KVD_FIELD
  /* Parsed forms, filled by kvd_config_finish. */
  uint64_t map_size_n, max_value_n, max_frame_n;
  uint64_t segments_n, max_siblings_n, max_clients_n, max_pipeline_n;
  bool sync_n, verify_n, insecure_n, rumors_n, anti_entropy_n;
  uint64_t ae_interval_n, ae_max_segments_n, ae_max_keys_n, fanout_n, rumor_k_n;
  uint64_t peer_max_frame_n, max_clock_skew_n;
  uint64_t probe_interval_n, probe_timeout_n, indirect_checks_n;
  uint64_t suspicion_mult_n, suspicion_max_mult_n, retransmit_mult_n;
  uint64_t awareness_max_n, gossip_interval_n, gossip_nodes_n;
  uint64_t gossip_to_the_dead_n, push_pull_interval_n, tombstone_grace_n;
  uint64_t udp_buffer_n;
  uint64_t max_clients_per_addr_n, read_timeout_n, idle_timeout_n;
  uint64_t max_input_buffer_n, max_output_buffer_n;
  uint64_t max_peer_conns_per_addr_n, peer_rate_n, peer_burst_n;
  int log_level_n;
  bool help, version;
} kvd_config;

/* Fills cfg from defaults, then the config file (if --config is given), then
 * the flags in argv. On error writes a message naming the setting to err
 * (errlen bytes) and returns KV_INVALID; cfg must still be freed.
 * Caller frees with kvd_config_fini. */
KV_WARN_UNUSED int kvd_config_load(kvd_config *cfg, int argc, char **argv,
                                   char *err, size_t errlen);

void kvd_config_fini(kvd_config *cfg);

/* Prints the usage text with every setting, its default and help. */
void kvd_config_usage(FILE *out);

/* Splits "host:port" into host (copied into host, hostlen bytes) and port.
 * KV_INVALID when malformed. */
KV_WARN_UNUSED int kvd_parse_addr(const char *addr, char *host, size_t hostlen,
                                  int *port);

#endif
