/*
 * The log writer. Each line is formatted into one buffer and written with a
 * single fputs so lines from different threads never interleave. Noisy
 * events go through kvd_log_limited: one line a second per event kind, with
 * the count of those dropped.
 */
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int min_level = KVD_LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

void kvd_log_set_level(int level) { min_level = level; }

int kvd_log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (!strcmp(name, names[i])) return i;
  return -1;
}

static void vlog(int level, const char *event, unsigned long long suppressed,
                 const char *fmt, va_list ap);

void kvd_log(int level, const char *event, const char *fmt, ...) {
  if (level < min_level) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(level, event, 0, fmt, ap);
  va_end(ap);
}

void kvd_log_limited(kvd_log_rate *r, int level, const char *event,
                     const char *fmt, ...) {
  if (level < min_level) return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  unsigned long long now = (unsigned long long)ts.tv_sec * 1000 +
                           (unsigned long long)ts.tv_nsec / 1000000;
  /* last_ms 0 means never written; the monotonic clock starts at boot, so
   * only the first second after boot could be mistaken for it. */
  if (r->last_ms && now - r->last_ms < 1000) {
    r->suppressed++;
    return;
  }
  r->last_ms = now ? now : 1;
  va_list ap;
  va_start(ap, fmt);
  vlog(level, event, r->suppressed, fmt, ap);
  va_end(ap);
  r->suppressed = 0;
}

static void vlog(int level, const char *event, unsigned long long suppressed,
                 const char *fmt, va_list ap) {
  char line[2048];
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  int n = (int)strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
  n += snprintf(line + n, sizeof line - (size_t)n, ".%03dZ level=%s event=%s",
                (int)(tv.tv_usec / 1000), names[level], event);
  if (fmt && *fmt && n < (int)sizeof line - 2) {
    line[n++] = ' ';
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    n = m < 0 ? n : n + m;
  }
  if (suppressed && n < (int)sizeof line - 2) {
    int m = snprintf(line + n, sizeof line - (size_t)n, " suppressed=%llu",
                     suppressed);
    n = m < 0 ? n : n + m;
  }
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  line[n] = 0;
  fputs(line, stderr);
}
