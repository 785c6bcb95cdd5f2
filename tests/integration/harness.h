/*
 * Integration-test harness: starts real kvd processes (the binary named by
 * $KVD) in a private temporary directory, on loopback port 0, and reads the
 * ports they bound from --ports-file; stops them with a chosen signal; and
 * speaks just enough RESP and native framing to check replies byte by byte.
 * Everything a test starts is killed and removed by kvdh_cleanup, also when
 * an assertion fails (the harness registers an atexit hook) or the test's
 * watchdog fires (kvdh_watchdog).
 *
 * kvd is started with SIGPIPE at its default action and no signal blocked,
 * as a shell would start it, so a kvd that forgets to ignore SIGPIPE dies in
 * these tests as it would in production. The test process itself never gets
 * SIGPIPE from the harness's writes (they use MSG_NOSIGNAL).
 */
#ifndef KV_HARNESS_H
#define KV_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct kvdh {
  pid_t pid;
  char dir[128];  /* private temporary directory */
  char data[192]; /* dir/data */
  char log[192];  /* dir/kvd.log: kvd's stderr */
  int native_port, resp_port, peer_port; /* peer_port 0: peering off */
  const char *extra[16]; /* extra kvd arguments, NULL-terminated */
  int metrics_port;      /* 0: no --metrics-listen among the extra ones */
} kvdh;

/* Creates p->dir (and fills p->data, p->log) if not done yet, so that a test
 * can put files there (a token file) before the first start. 0 or -1. */
int kvdh_prepare(kvdh *p);

/* Creates p->dir on first use, then starts kvd with --data-dir p->data and
 * the extra arguments, and waits (up to 10 s) until it listens. Returns 0, or
 * -1 with a message on stderr (kvd's log is printed too). */
int kvdh_start(kvdh *p);

/* Starts kvd like kvdh_start but expects it to exit without listening (a
 * refused configuration). Returns its exit status as waitpid reports it, or
 * -1 if it is still running after timeout_ms (it is then killed) or it
 * wrote its ports file (it listened: also killed). */
int kvdh_start_expect_exit(kvdh *p, int timeout_ms);

/* Sends sig and waits up to timeout_ms for the process to exit. Returns its
 * exit status as waitpid reports it, or -1 on timeout (then it is killed). */
int kvdh_stop(kvdh *p, int sig, int timeout_ms);

/* True while p's process is alive (reaps it if it has exited; then
 * *status, if not NULL, receives its waitpid status). */
bool kvdh_alive(kvdh *p, int *status);

/* Kills p if running, removes its directory and forgets p (its memory may
 * be freed afterwards). */
void kvdh_cleanup(kvdh *p);

/* Prints the last lines of p's log to stderr (for failing tests). */
void kvdh_dump_log(const kvdh *p);

/* True if p's log contains needle. */
bool kvdh_log_contains(const kvdh *p, const char *needle);

/* Arms a watchdog: if the calling test has not disarmed it (seconds 0)
 * within seconds, the harness prints which test hung, kills every kvd it
 * started and exits the process with status 1. */
void kvdh_watchdog(const char *test, unsigned seconds);

/* A blocking TCP connection to 127.0.0.1:port with a 10 s I/O timeout;
 * -1 on failure. */
int kvdh_connect(int port);

/* Sets fd's receive timeout to ms milliseconds. */
void kvdh_set_recv_timeout(int fd, int ms);

/* Sends one RESP command (argv[0..argc), lengths given or strlen when lens
 * is NULL) and reads one reply, rendered as text into out: simple strings
 * and bulk strings as their bytes, "(nil)" for null, integers in decimal,
 * "ERR ..." / "WRONGTYPE ..." for errors prefixed with "-", arrays as
 * "[a,b,...]". Returns 0, or -1 if the connection failed or timed out. */
int kvdh_resp(int fd, int argc, const char **argv, const size_t *lens,
              char *out, size_t outlen);

/* Writes one RESP command without reading the reply (for pipelines). */
int kvdh_resp_send(int fd, int argc, const char **argv, const size_t *lens);

/* Reads one RESP reply only (after raw bytes were written by the test). */
int kvdh_resp_read(int fd, char *out, size_t outlen);

/* Writes all len bytes (never raising SIGPIPE); -1 on failure. */
int kvdh_write_all(int fd, const void *p, size_t len);

/* Reads until EOF or error/timeout. Returns 1 if the peer closed the
 * connection (EOF or reset), 0 on timeout (the connection is still open).
 * The bytes read are discarded. */
int kvdh_wait_closed(int fd, int timeout_ms);

/* Native framing: writes a 4-byte big-endian length and body. */
int kvdh_frame_write(int fd, const void *body, size_t len);

/* Reads one native frame (at most max bytes of body) into a malloc'ed
 * buffer (*body, caller frees; *len its size). 0, or -1 on EOF, error,
 * timeout or an oversize length. */
int kvdh_frame_read(int fd, size_t max, uint8_t **body, size_t *len);

/* Runs argv[0] (a path) with argv, feeding stdin_data (may be NULL: empty
 * stdin) and capturing stdout into out and stderr into err (either may be
 * NULL; each is NUL-terminated and truncated to its size). Kills it after
 * timeout_ms. Returns its exit code (0..255), 128+signal if a signal ended
 * it, or -1 if it could not run or timed out. */
int kvdh_exec(const char *const argv[], const char *stdin_data, char *out,
              size_t outlen, char *err, size_t errlen, int timeout_ms);

/* The absolute path of an executable on $PATH, or NULL. Static buffer. */
const char *kvdh_which(const char *name);

/* Milliseconds on the monotonic clock. */
uint64_t kvdh_now_ms(void);

/* Sleeps ms milliseconds. */
void kvdh_sleep_ms(int ms);

#endif
