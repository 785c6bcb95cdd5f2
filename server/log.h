/*
 * kvd's log: one event per line on stderr, key=value pairs after a timestamp,
 * a level and an event name ("ts=... level=info event=listen addr=..."), so
 * lines can be grepped and parsed. Callers pass the key=value text already
 * formatted; values with spaces are to be quoted by the caller.
 */
#ifndef KVD_LOG_H
#define KVD_LOG_H

enum { KVD_LOG_DEBUG, KVD_LOG_INFO, KVD_LOG_WARN, KVD_LOG_ERROR };

/* Sets the minimum level written (default info). */
void kvd_log_set_level(int level);

/* The level for "debug", "info", "warn" or "error"; -1 for anything else. */
int kvd_log_level_parse(const char *name);

/* Writes one line if level is enabled: event, then fmt's key=value text. */
void kvd_log(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One noisy event kind's rate limit (zero it to start): kvd_log_limited
 * writes at most one line a second through it and counts the rest. Not
 * locked: each is used from one thread (the event loop). */
typedef struct kvd_log_rate {
  unsigned long long last_ms, suppressed;
} kvd_log_rate;

/* Like kvd_log, but through r: a line within a second of r's last written
 * one is only counted, and the next line written ends with
 * suppressed=N, the number of lines dropped since the previous one. */
void kvd_log_limited(kvd_log_rate *r, int level, const char *event,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_debug(ev, ...) kvd_log(KVD_LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) kvd_log(KVD_LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) kvd_log(KVD_LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) kvd_log(KVD_LOG_ERROR, ev, __VA_ARGS__)

#endif
