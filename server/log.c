/*
 * The log writer. Each line is formatted into one buffer and written with a
 * single fputs so lines from different threads never interleave.
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

void kvd_log(int level, const char *event, const char *fmt, ...) {
  if (level < min_level) return;
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
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    n = m < 0 ? n : n + m;
  }
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  line[n] = 0;
  fputs(line, stderr);
}
