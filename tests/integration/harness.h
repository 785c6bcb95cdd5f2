/*
 * Integration-test harness: starts real kvd processes (the binary named by
 * $KVD) in a private temporary directory, on loopback port 0, and reads the
 * ports they bound from --ports-file; stops them with a chosen signal; and
 * speaks just enough RESP to check replies. Everything a test starts is
 * killed and removed by kvdh_cleanup, also when an assertion fails (the
 * harness registers an atexit hook).
 */
#ifndef KV_HARNESS_H
#define KV_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct kvdh {
  pid_t pid;
  char dir[128];  /* private temporary directory */
  char data[192]; /* dir/data */
  char log[192];  /* dir/kvd.log: kvd's stderr */
  int native_port, resp_port;
  const char *extra[16]; /* extra kvd arguments, NULL-terminated */
} kvdh;

/* Creates p->dir on first use, then starts kvd with --data-dir p->data and
 * the extra arguments, and waits (up to 10 s) until it listens. Returns 0, or
 * -1 with a message on stderr (kvd's log is printed too). */
int kvdh_start(kvdh *p);

/* Sends sig and waits up to timeout_ms for the process to exit. Returns its
 * exit status as waitpid reports it, or -1 on timeout (then it is killed). */
int kvdh_stop(kvdh *p, int sig, int timeout_ms);

/* Kills p if running and removes its directory. */
void kvdh_cleanup(kvdh *p);

/* Prints the last lines of p's log to stderr (for failing tests). */
void kvdh_dump_log(const kvdh *p);

/* A blocking TCP connection to 127.0.0.1:port with a 10 s I/O timeout;
 * -1 on failure. */
int kvdh_connect(int port);

/* Sends one RESP command (argv[0..argc), lengths given or strlen when lens
 * is NULL) and reads one reply, rendered as text into out: simple strings
 * and bulk strings as their bytes, "(nil)" for null, integers in decimal,
 * "ERR ..." / "WRONGTYPE ..." for errors prefixed with "-", arrays as
 * "[a,b,...]". Returns 0, or -1 if the connection failed or timed out. */
int kvdh_resp(int fd, int argc, const char **argv, const size_t *lens,
              char *out, size_t outlen);

/* Reads one RESP reply only (after raw bytes were written by the test). */
int kvdh_resp_read(int fd, char *out, size_t outlen);

/* Writes all len bytes; -1 on failure. */
int kvdh_write_all(int fd, const void *p, size_t len);

#endif
