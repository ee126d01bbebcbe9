/*
 * status.h - the status table: one slot per worker, written only by the
 * master in its own memory, read by policies (through views), by
 * pool:status() and by the control socket (formatted here as JSON or a
 * table for people).
 */
#ifndef FDP_STATUS_H
#define FDP_STATUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "channel.h"

#define FDP_KV_MAX 8        /* custom fields per worker */
#define FDP_STATUS_SHARED_MAX 16

enum fdp_wstate {
    FDP_W_NONE = 0,         /* slot unused */
    FDP_W_STARTING,         /* forked, not READY yet */
    FDP_W_RUNNING,          /* READY: free or busy by its counts */
    FDP_W_EXITING           /* told to stop, or its channel is gone */
};

enum fdp_exit_how {
    FDP_EXIT_NONE = 0,
    FDP_EXIT_CODE,
    FDP_EXIT_SIGNAL
};

struct fdp_kv {
    char key[FDP_KEY_MAX];
    char val[FDP_VAL_MAX];
};

struct fdp_slot {
    int id;                 /* 1-based, stable across restarts */
    pid_t pid;              /* -1 when no process */
    int generation;
    int state;              /* enum fdp_wstate */
    int active;             /* connections handed and not done */
    int capacity;
    uint64_t served;
    uint64_t bytes_in;
    uint64_t bytes_out;
    double started;         /* wall clock */
    double busy_since;      /* wall clock when it became busy, or 0 */
    uint32_t restarts;
    int last_exit_how;      /* enum fdp_exit_how */
    int last_exit_code;     /* exit status or signal number */
    int nkv;
    struct fdp_kv kv[FDP_KV_MAX];
    uint64_t rss;           /* resident bytes (/proc/PID/statm), read for
                             * a snapshot of the table; 0: not read */
    int cpu;                /* the CPU it is pinned to (--cpu-affinity),
                             * -1: not pinned */
};

/* Pool-wide figures that go with the table when it is shown. */
struct fdp_status_info {
    pid_t pid;
    double now;                     /* wall clock of the snapshot (0: the
                                     * renderer reads it) */
    const char *state;              /* "running", "stopping" (a graceful
                                     * stop's drain included), "upgrading"
                                     * (a new master is starting);
                                     * NULL: running */
    const char *policy;
    const char *const *listen;
    int nlisten;
    uint64_t accepted;
    uint64_t queued;
    uint64_t parked;
    uint64_t fallbacks;
    double started;
    int generation;
    uint64_t closed_by_peer;        /* clients gone while the master held
                                     * their connection (PARK, parked) */
    uint64_t offers;                /* strict prefork's prefetch: made, */
    uint64_t offers_back;           /* and taken back (requeued) */
    int crash_streak;               /* workers crashing in a row */
    const char *crash_why;          /* the last crash, or NULL */
    const char *reload_refused;     /* the last reload's refusal, NULL
                                     * when none or one served since */
    /* Dispatch latency (accept, or bytes on a parked connection, to the
     * hand-off), as a histogram over FDP_LAT_BUCKETS upper bounds. */
    const uint64_t *lat_counts;     /* per bucket, not cumulative */
    double lat_sum;                 /* seconds */
    uint64_t lat_count;
    /* The accept filter: connections waiting in the master for bytes,
     * and closes by reason (deadline, overflow, per-ip, peer closed). */
    uint64_t pending;
    uint64_t closed[5];
    /* The worker count: min and max (equal when fixed), why it changed
     * last (NULL: never), processes started for waiting connections and
     * retired idle (workers on demand); and the processes outside the
     * table (retiring, or a reload's generation still starting). */
    int workers_min;
    int workers_max;
    const char *scaled;
    uint64_t spawned;
    uint64_t retired_idle;
    const struct fdp_slot *others;
    int nothers;
    /* The shared dictionaries (--shared): size, bytes used and keys, from
     * counters clamped to [0, size] by the master. */
    struct fdp_status_shared {
        const char *name;
        uint64_t size, used, keys;
    } shared[FDP_STATUS_SHARED_MAX];
    int nshared;
};

#define FDP_LAT_BUCKETS 10
extern const double fdp_lat_bounds[FDP_LAT_BUCKETS];   /* last: +Inf */

void fdp_slot_reset(struct fdp_slot *s, int id);
const char *fdp_slot_state(const struct fdp_slot *s);
int fdp_slot_set_kv(struct fdp_slot *s, const char *key, const char *val);
const char *fdp_slot_get_kv(const struct fdp_slot *s, const char *key);
void fdp_slot_update_busy(struct fdp_slot *s, double now);
const char *fdp_signame(int sig);

/* Growable output buffer for the formatters. */
struct fdp_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
};

void fdp_buf_printf(struct fdp_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void fdp_buf_json_str(struct fdp_buf *b, const char *s);
void fdp_buf_free(struct fdp_buf *b);
void fdp_status_json(struct fdp_buf *b, const struct fdp_status_info *info,
                     const struct fdp_slot *slots, int n);
void fdp_status_table(struct fdp_buf *b, const struct fdp_status_info *info,
                      const struct fdp_slot *slots, int n);
void fdp_status_lua(struct fdp_buf *b, const struct fdp_status_info *info,
                    const struct fdp_slot *slots, int n);
void fdp_status_openmetrics(struct fdp_buf *b,
                            const struct fdp_status_info *info,
                            const struct fdp_slot *slots, int n);

/* The renderings by name, for callers that pick one at run time. */
enum fdp_status_format {
    FDP_STATUS_TABLE, FDP_STATUS_JSON, FDP_STATUS_LUA, FDP_STATUS_OPENMETRICS
};
void fdp_status_render(struct fdp_buf *b, int format,
                       const struct fdp_status_info *info,
                       const struct fdp_slot *slots, int n);

#endif
