/*
 * status.c - the worker table's slots, their derived state, and the two
 * renderings of the table (JSON and Lua for programs, aligned text and
 * OpenMetrics for people and scrapers).
 * Pure data: no fds, no Lua, no logging.
 */
#include "fdp.h"
#include "status.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


void
fdp_slot_reset(struct fdp_slot *s, int id)
{
    uint32_t restarts = s->restarts;
    int how = s->last_exit_how, code = s->last_exit_code;

    memset(s, 0, sizeof(*s));
    s->id = id;
    s->pid = -1;
    s->restarts = restarts;
    s->last_exit_how = how;
    s->last_exit_code = code;
    s->cpu = -1;
}


/* "starting", "free", "busy", "exiting" ("none" for an unused slot). */
const char *
fdp_slot_state(const struct fdp_slot *s)
{
    switch (s->state) {
    case FDP_W_STARTING:
        return "starting";
    case FDP_W_RUNNING:
        return s->active < s->capacity ? "free" : "busy";
    case FDP_W_EXITING:
        return "exiting";
    default:
        return "none";
    }
}


/* Track busy_since: set when the slot becomes full, cleared when not. */
void
fdp_slot_update_busy(struct fdp_slot *s, double now)
{
    if (s->active >= s->capacity) {
        if (s->busy_since == 0) {
            s->busy_since = now;
        }
    } else {
        s->busy_since = 0;
    }
}


/* Set or replace a custom field. Returns 0 or -ENOSPC when full. The
 * caller has checked the lengths (fdp_msg_check). */
int
fdp_slot_set_kv(struct fdp_slot *s, const char *key, const char *val)
{
    int i;

    for (i = 0; i < s->nkv; i++) {
        if (strcmp(s->kv[i].key, key) == 0) {
            break;
        }
    }
    if (i == s->nkv) {
        if (s->nkv == FDP_KV_MAX) {
            return -ENOSPC;
        }
        s->nkv++;
        snprintf(s->kv[i].key, sizeof(s->kv[i].key), "%s", key);
    }
    snprintf(s->kv[i].val, sizeof(s->kv[i].val), "%s", val);
    return 0;
}


const char *
fdp_slot_get_kv(const struct fdp_slot *s, const char *key)
{
    int i;

    for (i = 0; i < s->nkv; i++) {
        if (strcmp(s->kv[i].key, key) == 0) {
            return s->kv[i].val;
        }
    }
    return NULL;
}


const char *
fdp_signame(int sig)
{
    static const struct { int sig; const char *name; } names[] = {
        { SIGHUP, "SIGHUP" }, { SIGINT, "SIGINT" }, { SIGQUIT, "SIGQUIT" },
        { SIGILL, "SIGILL" }, { SIGTRAP, "SIGTRAP" }, { SIGABRT, "SIGABRT" },
        { SIGBUS, "SIGBUS" }, { SIGFPE, "SIGFPE" }, { SIGKILL, "SIGKILL" },
        { SIGUSR1, "SIGUSR1" }, { SIGSEGV, "SIGSEGV" }, { SIGUSR2, "SIGUSR2" },
        { SIGPIPE, "SIGPIPE" }, { SIGALRM, "SIGALRM" }, { SIGTERM, "SIGTERM" },
        { SIGCHLD, "SIGCHLD" }, { SIGXCPU, "SIGXCPU" }, { SIGSYS, "SIGSYS" },
        { SIGTTIN, "SIGTTIN" }, { SIGTTOU, "SIGTTOU" }
    };
    size_t i;

    for (i = 0; i < FDP_NELEM(names); i++) {
        if (names[i].sig == sig) {
            return names[i].name;
        }
    }
    return "SIGUNKNOWN";
}


void
fdp_buf_printf(struct fdp_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->oom) {
        return;
    }
    for (;;) {
        size_t room = b->cap - b->len;

        va_start(ap, fmt);
        n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t) n < room) {
            b->len += (size_t) n;
            return;
        }
        {
            size_t cap = b->cap ? b->cap : 1024;
            char *p;

            while (cap - b->len <= (size_t) n) {
                cap *= 2;
            }
            p = realloc(b->data, cap);
            if (p == NULL) {
                b->oom = 1;
                return;
            }
            b->data = p;
            b->cap = cap;
        }
    }
}


void
fdp_buf_json_str(struct fdp_buf *b, const char *s)
{
    fdp_buf_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;

        if (c == '"' || c == '\\') {
            fdp_buf_printf(b, "\\%c", c);
        } else if (c < 0x20) {
            fdp_buf_printf(b, "\\u%04x", c);
        } else {
            fdp_buf_printf(b, "%c", c);
        }
    }
    fdp_buf_printf(b, "\"");
}


/* A custom field's key or value (a worker's bytes) in the text table:
 * a control byte would let a worker's handler write lines of its own,
 * or terminal escapes, into `pool status`: shown as '?'. */
static void
text_str(struct fdp_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;

        fdp_buf_printf(b, "%c", c < 0x20 || c == 0x7f ? '?' : c);
    }
}


void
fdp_buf_free(struct fdp_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}


/* A process outside the table: told to stop (retiring), or a reload's
 * new generation waiting for the rest of it (pending). */
static const char *
other_role(const struct fdp_slot *s)
{
    return s->state == FDP_W_EXITING ? "retiring" : "pending";
}


/* One walk over the status, two notations: JSON (`pool status --json`,
 * the control socket) and a Lua table constructor (fdpool.status() in a
 * worker, loaded there as text with an empty environment). The walk says
 * what is there; the writer says how it is spelt. A missing value is
 * null in JSON and an absent field in Lua. */
struct tree {
    struct fdp_buf *b;
    int lua;
    int depth;
    unsigned char first[8];         /* per level: nothing written yet */
};

static void
lua_str(struct fdp_buf *b, const char *s)
{
    fdp_buf_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;

        if (c == '"' || c == '\\') {
            fdp_buf_printf(b, "\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            fdp_buf_printf(b, "\\%03u", c);
        } else {
            fdp_buf_printf(b, "%c", c);
        }
    }
    fdp_buf_printf(b, "\"");
}

static void
t_string(struct tree *t, const char *s)
{
    if (t->lua) {
        lua_str(t->b, s);
    } else {
        fdp_buf_json_str(t->b, s);
    }
}

/* The separator, then the key: a name (NULL: an array element), or with
 * any = 1 a worker's own string (quoted; ["..."]= in Lua). */
static void
t_key(struct tree *t, const char *key, int any)
{
    if (!t->first[t->depth]) {
        fdp_buf_printf(t->b, t->lua ? "," : ", ");
    }
    t->first[t->depth] = 0;
    if (key == NULL) {
        return;
    }
    if (!any) {
        fdp_buf_printf(t->b, t->lua ? "%s=" : "\"%s\": ", key);
    } else if (t->lua) {
        fdp_buf_printf(t->b, "[");
        lua_str(t->b, key);
        fdp_buf_printf(t->b, "]=");
    } else {
        fdp_buf_json_str(t->b, key);
        fdp_buf_printf(t->b, ": ");
    }
}

static void
t_open(struct tree *t, const char *key, int array)
{
    t_key(t, key, 0);
    fdp_buf_printf(t->b, array && !t->lua ? "[" : "{");
    t->depth++;
    t->first[t->depth] = 1;
}

static void
t_close(struct tree *t, int array)
{
    t->depth--;
    fdp_buf_printf(t->b, array && !t->lua ? "]" : "}");
}

static void
t_u64(struct tree *t, const char *key, uint64_t v)
{
    t_key(t, key, 0);
    fdp_buf_printf(t->b, "%llu", (unsigned long long) v);
}

static void
t_int(struct tree *t, const char *key, long v)
{
    t_key(t, key, 0);
    fdp_buf_printf(t->b, "%ld", v);
}

static void
t_time(struct tree *t, const char *key, double v)
{
    t_key(t, key, 0);
    fdp_buf_printf(t->b, "%.3f", v);
}

static void
t_str(struct tree *t, const char *key, const char *s)
{
    if (s == NULL) {
        if (!t->lua) {
            t_key(t, key, 0);
            fdp_buf_printf(t->b, "null");
        }
        return;
    }
    t_key(t, key, 0);
    t_string(t, s);
}

static void
t_null(struct tree *t, const char *key)
{
    t_str(t, key, NULL);
}


static void
status_tree(struct tree *t, const struct fdp_status_info *info,
            const struct fdp_slot *slots, int n)
{
    static const char *const closed[] = {
        "deadline", "overflow", "per_ip", "peer_closed", "not_tls"
    };
    int i, k;

    t->first[0] = 1;
    t_open(t, NULL, 0);
    t_int(t, "pid", (long) info->pid);
    t_str(t, "version", FDP_VERSION);
    t_time(t, "now", info->now > 0 ? info->now : fdp_wall());
    t_str(t, "state", info->state ? info->state : "running");
    t_str(t, "policy", info->policy);
    t_open(t, "listen", 1);
    for (i = 0; i < info->nlisten; i++) {
        t_str(t, NULL, info->listen[i]);
    }
    t_close(t, 1);
    t_open(t, "shared", 1);
    for (i = 0; i < info->nshared; i++) {
        t_open(t, NULL, 0);
        t_str(t, "name", info->shared[i].name);
        t_u64(t, "size", info->shared[i].size);
        t_u64(t, "used", info->shared[i].used);
        t_u64(t, "keys", info->shared[i].keys);
        t_close(t, 0);
    }
    t_close(t, 1);
    t_u64(t, "accepted", info->accepted);
    t_u64(t, "queued", info->queued);
    t_u64(t, "parked", info->parked);
    t_u64(t, "pending", info->pending);
    t_open(t, "closed", 0);
    for (i = 0; i < (int) (sizeof(closed) / sizeof(closed[0])); i++) {
        t_u64(t, closed[i], info->closed[i]);
    }
    t_close(t, 0);
    t_u64(t, "closed_by_peer", info->closed_by_peer);
    t_u64(t, "offers", info->offers);
    t_u64(t, "offers_back", info->offers_back);
    t_u64(t, "fallbacks", info->fallbacks);
    t_time(t, "started", info->started);
    t_int(t, "generation", info->generation);
    t_int(t, "crash_streak", info->crash_streak);
    t_str(t, "crash", info->crash_why);
    t_str(t, "reload_refused", info->reload_refused);
    t_int(t, "workers_min", info->workers_min);
    t_int(t, "workers_max", info->workers_max);
    t_u64(t, "spawned", info->spawned);
    t_u64(t, "retired_idle", info->retired_idle);
    t_str(t, "scaled", info->scaled);
    t_open(t, "others", 1);
    for (i = 0; i < info->nothers; i++) {
        const struct fdp_slot *s = &info->others[i];

        t_open(t, NULL, 0);
        t_int(t, "id", s->id);
        t_int(t, "pid", (long) s->pid);
        t_int(t, "generation", s->generation);
        t_str(t, "state", fdp_slot_state(s));
        t_str(t, "role", other_role(s));
        t_int(t, "active", s->active);
        t_close(t, 0);
    }
    t_close(t, 1);
    t_open(t, "workers", 1);
    for (i = 0; i < n; i++) {
        const struct fdp_slot *s = &slots[i];

        t_open(t, NULL, 0);
        t_int(t, "id", s->id);
        t_int(t, "pid", (long) s->pid);
        t_int(t, "generation", s->generation);
        t_str(t, "state", fdp_slot_state(s));
        t_int(t, "active", s->active);
        t_int(t, "capacity", s->capacity);
        t_u64(t, "served", s->served);
        t_u64(t, "bytes_in", s->bytes_in);
        t_u64(t, "bytes_out", s->bytes_out);
        t_time(t, "started", s->started);
        t_time(t, "busy_since", s->busy_since);
        t_u64(t, "restarts", s->restarts);
        if (s->rss) {
            t_u64(t, "rss", s->rss);
        } else {
            t_null(t, "rss");
        }
        if (s->last_exit_how == FDP_EXIT_CODE
            || s->last_exit_how == FDP_EXIT_SIGNAL)
        {
            int sig = s->last_exit_how == FDP_EXIT_SIGNAL;

            t_open(t, "last_exit", 0);
            t_str(t, "how", sig ? "signal" : "exit");
            t_int(t, "code", s->last_exit_code);
            if (sig) {
                t_str(t, "name", fdp_signame(s->last_exit_code));
            }
            t_close(t, 0);
        } else {
            t_null(t, "last_exit");
        }
        t_open(t, "fields", 0);
        for (k = 0; k < s->nkv; k++) {
            t_key(t, s->kv[k].key, 1);
            t_string(t, s->kv[k].val);
        }
        t_close(t, 0);
        t_close(t, 0);
    }
    t_close(t, 1);
    t_close(t, 0);
}


void
fdp_status_json(struct fdp_buf *b, const struct fdp_status_info *info,
                const struct fdp_slot *slots, int n)
{
    struct tree t = { b, 0, 0, { 0 } };

    status_tree(&t, info, slots, n);
    fdp_buf_printf(b, "\n");
}


void
fdp_status_table(struct fdp_buf *b, const struct fdp_status_info *info,
                 const struct fdp_slot *slots, int n)
{
    int i, k;

    fdp_buf_printf(b, "master %ld  policy %s  accepted %llu  queued %llu  "
                   "parked %llu  pending %llu  closed by peer %llu\n",
                   (long) info->pid, info->policy,
                   (unsigned long long) info->accepted,
                   (unsigned long long) info->queued,
                   (unsigned long long) info->parked,
                   (unsigned long long) info->pending,
                   (unsigned long long) info->closed_by_peer);
    fdp_buf_printf(b, "closed waiting: deadline %llu  overflow %llu  "
                   "per-ip %llu  peer-closed %llu  not-tls %llu\n",
                   (unsigned long long) info->closed[0],
                   (unsigned long long) info->closed[1],
                   (unsigned long long) info->closed[2],
                   (unsigned long long) info->closed[3],
                   (unsigned long long) info->closed[4]);
    if (info->crash_why) {
        fdp_buf_printf(b, "crash streak %d: %s; restarting with back-off\n",
                       info->crash_streak, info->crash_why);
    }
    if (info->reload_refused) {
        fdp_buf_printf(b, "last reload refused (%s)\n",
                       info->reload_refused);
    }
    if (info->state && strcmp(info->state, "running") != 0) {
        fdp_buf_printf(b, "state %s\n", info->state);
    }
    if (info->workers_min != info->workers_max || info->scaled) {
        fdp_buf_printf(b, "workers %d-%d  spawned %llu  retired idle %llu"
                       "%s%s\n", info->workers_min, info->workers_max,
                       (unsigned long long) info->spawned,
                       (unsigned long long) info->retired_idle,
                       info->scaled ? "  last change: " : "",
                       info->scaled ? info->scaled : "");
    }
    for (i = 0; i < info->nothers; i++) {
        const struct fdp_slot *s = &info->others[i];

        fdp_buf_printf(b, "%s: slot %d pid %ld generation %d %s active %d\n",
                       other_role(s), s->id, (long) s->pid, s->generation,
                       fdp_slot_state(s), s->active);
    }
    for (i = 0; i < info->nlisten; i++) {
        fdp_buf_printf(b, "listen %s\n", info->listen[i]);
    }
    for (i = 0; i < info->nshared; i++) {
        fdp_buf_printf(b, "shared %s  size %llu  used %llu  keys %llu\n",
                       info->shared[i].name,
                       (unsigned long long) info->shared[i].size,
                       (unsigned long long) info->shared[i].used,
                       (unsigned long long) info->shared[i].keys);
    }
    fdp_buf_printf(b, "%4s %8s %-8s %6s %8s %10s %8s %12s %12s\n", "ID",
                   "PID", "STATE", "ACTIVE", "CAPACITY", "SERVED",
                   "RESTARTS", "BYTES_IN", "BYTES_OUT");
    for (i = 0; i < n; i++) {
        const struct fdp_slot *s = &slots[i];

        fdp_buf_printf(b, "%4d %8ld %-8s %6d %8d %10llu %8u %12llu %12llu",
                       s->id, (long) s->pid, fdp_slot_state(s), s->active,
                       s->capacity, (unsigned long long) s->served,
                       s->restarts, (unsigned long long) s->bytes_in,
                       (unsigned long long) s->bytes_out);
        for (k = 0; k < s->nkv; k++) {
            fdp_buf_printf(b, " ");
            text_str(b, s->kv[k].key);
            fdp_buf_printf(b, "=");
            text_str(b, s->kv[k].val);
        }
        fdp_buf_printf(b, "\n");
    }
}


const double fdp_lat_bounds[FDP_LAT_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0, -1.0
};


static void
om_family(struct fdp_buf *b, const char *name, const char *type,
          const char *help)
{
    fdp_buf_printf(b, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
}


/* The OpenMetrics text exposition (Prometheus scrapes it), ending with
 * "# EOF". Counters are "_total" samples of their family. */
void
fdp_status_openmetrics(struct fdp_buf *b, const struct fdp_status_info *info,
                       const struct fdp_slot *slots, int n)
{
    static const char *const states[] = { "starting", "free", "busy",
                                          "exiting", NULL };
    uint64_t cum = 0;
    int i, k;

    om_family(b, "fdpool_accepted", "counter", "Connections accepted.");
    fdp_buf_printf(b, "fdpool_accepted_total %llu\n",
                   (unsigned long long) info->accepted);
    om_family(b, "fdpool_queued", "gauge", "Connections waiting for a "
              "worker in the master.");
    fdp_buf_printf(b, "fdpool_queued %llu\n", (unsigned long long) info->queued);
    om_family(b, "fdpool_parked", "gauge", "Idle keep-alive connections "
              "held by the master.");
    fdp_buf_printf(b, "fdpool_parked %llu\n", (unsigned long long) info->parked);
    om_family(b, "fdpool_pending", "gauge", "Connections the accept filter "
              "holds until they have something to serve.");
    fdp_buf_printf(b, "fdpool_pending %llu\n",
                   (unsigned long long) info->pending);
    om_family(b, "fdpool_closed_waiting", "counter", "Connections the "
              "master closed before a worker saw them, by reason.");
    for (i = 0; i < 5; i++) {
        static const char *const why[] = { "deadline", "overflow", "per_ip",
                                           "peer_closed", "not_tls" };

        fdp_buf_printf(b, "fdpool_closed_waiting_total{reason=\"%s\"} %llu\n",
                       why[i], (unsigned long long) info->closed[i]);
    }
    om_family(b, "fdpool_closed_by_peer", "counter", "Connections whose "
              "client reset or closed while the master held them after a "
              "worker (PARK, parked).");
    fdp_buf_printf(b, "fdpool_closed_by_peer_total %llu\n",
                   (unsigned long long) info->closed_by_peer);
    om_family(b, "fdpool_crash_streak", "gauge", "Workers that crashed in "
              "a row (0: none; restarts back off while above 0).");
    fdp_buf_printf(b, "fdpool_crash_streak %d\n", info->crash_streak);
    om_family(b, "fdpool_policy_fallbacks", "counter", "Dispatch choices "
              "the policy failed and first_free made.");
    fdp_buf_printf(b, "fdpool_policy_fallbacks_total %llu\n",
                   (unsigned long long) info->fallbacks);
    om_family(b, "fdpool_generation", "gauge", "Worker generation (reloads "
              "+ 1).");
    fdp_buf_printf(b, "fdpool_generation %d\n", info->generation);
    om_family(b, "fdpool_workers", "gauge", "Worker slots.");
    fdp_buf_printf(b, "fdpool_workers %d\n", n);
    om_family(b, "fdpool_workers_min", "gauge", "Workers kept running "
              "(--workers MIN, or the fixed count).");
    fdp_buf_printf(b, "fdpool_workers_min %d\n", info->workers_min);
    om_family(b, "fdpool_workers_max", "gauge", "Workers at most "
              "(--workers MAX, or the fixed count).");
    fdp_buf_printf(b, "fdpool_workers_max %d\n", info->workers_max);
    om_family(b, "fdpool_workers_spawned", "counter", "Workers started "
              "because connections waited (on demand).");
    fdp_buf_printf(b, "fdpool_workers_spawned_total %llu\n",
                   (unsigned long long) info->spawned);
    om_family(b, "fdpool_workers_retired_idle", "counter", "Workers "
              "retired after --worker-idle-timeout without a connection.");
    fdp_buf_printf(b, "fdpool_workers_retired_idle_total %llu\n",
                   (unsigned long long) info->retired_idle);

    om_family(b, "fdpool_worker_state", "stateset", "Each worker's state.");
    for (i = 0; i < n; i++) {
        const char *st = fdp_slot_state(&slots[i]);

        for (k = 0; states[k]; k++) {
            fdp_buf_printf(b, "fdpool_worker_state{worker=\"%d\","
                           "fdpool_worker_state=\"%s\"} %d\n", slots[i].id,
                           states[k], strcmp(st, states[k]) == 0);
        }
    }
#define PER_WORKER(name, type, help, fmt, field)                            \
    om_family(b, "fdpool_worker_" name, type, help);                         \
    for (i = 0; i < n; i++) {                                               \
        fdp_buf_printf(b, "fdpool_worker_" name "%s{worker=\"%d\"} " fmt    \
                       "\n", strcmp(type, "counter") == 0 ? "_total" : "",   \
                       slots[i].id, field);                                 \
    }
    PER_WORKER("active", "gauge", "Connections the worker has now.", "%d",
               slots[i].active)
    PER_WORKER("capacity", "gauge", "Connections the worker may have.", "%d",
               slots[i].capacity)
    PER_WORKER("pid", "gauge", "The worker's process id.", "%ld",
               (long) slots[i].pid)
    PER_WORKER("served", "counter", "Connections the worker finished.",
               "%llu", (unsigned long long) slots[i].served)
    PER_WORKER("bytes_in", "counter", "Bytes received from clients.",
               "%llu", (unsigned long long) slots[i].bytes_in)
    PER_WORKER("bytes_out", "counter", "Bytes sent to clients.", "%llu",
               (unsigned long long) slots[i].bytes_out)
    PER_WORKER("restarts", "counter", "Times the worker was replaced after "
               "it died.", "%u", slots[i].restarts)
#undef PER_WORKER

    if (info->nshared > 0) {
        static const char *const fam[3][2] = {
            { "fdpool_shared_size_bytes", "Size of a shared dictionary." },
            { "fdpool_shared_used_bytes", "Bytes a shared dictionary's "
              "entries hold." },
            { "fdpool_shared_keys", "Keys in a shared dictionary." } };

        for (k = 0; k < 3; k++) {
            om_family(b, fam[k][0], "gauge", fam[k][1]);
            for (i = 0; i < info->nshared; i++) {
                const struct fdp_status_shared *z = &info->shared[i];

                fdp_buf_printf(b, "%s{name=\"%s\"} %llu\n", fam[k][0],
                               z->name, (unsigned long long)
                               (k == 0 ? z->size : k == 1 ? z->used
                                : z->keys));
            }
        }
    }
    om_family(b, "fdpool_dispatch_latency_seconds", "histogram", "From "
              "accept (or a parked connection's next bytes) to the hand-off "
              "to a worker.");
    for (k = 0; k < FDP_LAT_BUCKETS && info->lat_counts; k++) {
        cum += info->lat_counts[k];
        if (fdp_lat_bounds[k] < 0) {
            fdp_buf_printf(b, "fdpool_dispatch_latency_seconds_bucket"
                           "{le=\"+Inf\"} %llu\n", (unsigned long long) cum);
        } else {
            fdp_buf_printf(b, "fdpool_dispatch_latency_seconds_bucket"
                           "{le=\"%g\"} %llu\n", fdp_lat_bounds[k],
                           (unsigned long long) cum);
        }
    }
    fdp_buf_printf(b, "fdpool_dispatch_latency_seconds_sum %.6f\n"
                   "fdpool_dispatch_latency_seconds_count %llu\n",
                   info->lat_sum, (unsigned long long) info->lat_count);
    fdp_buf_printf(b, "# EOF\n");
}


void
fdp_status_lua(struct fdp_buf *b, const struct fdp_status_info *info,
               const struct fdp_slot *slots, int n)
{
    struct tree t = { b, 1, 0, { 0 } };

    status_tree(&t, info, slots, n);
}


void
fdp_status_render(struct fdp_buf *b, int format,
                  const struct fdp_status_info *info,
                  const struct fdp_slot *slots, int n)
{
    switch (format) {
    case FDP_STATUS_JSON:
        fdp_status_json(b, info, slots, n);
        break;
    case FDP_STATUS_LUA:
        fdp_status_lua(b, info, slots, n);
        break;
    case FDP_STATUS_OPENMETRICS:
        fdp_status_openmetrics(b, info, slots, n);
        break;
    default:
        fdp_status_table(b, info, slots, n);
        break;
    }
}
