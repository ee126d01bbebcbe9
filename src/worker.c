/*
 * worker.c - the child side. After fork: drop the master's fds (done by
 * the caller), restore signals, die with the master, build a Lua state
 * and an epoll loop, run the handler script's top level, report READY,
 * then serve: every connection the master hands over runs handler(conn)
 * in its own coroutine; conn I/O that would block yields to this loop.
 * Owns the channel end and every connection fd it was handed.
 */
#include "fdp.h"
#include "pool.h"
#include "channel.h"
#include "laux.h"
#include "lconn.h"
#include "lshared.h"
#include "lthread.h"
#include "ltls.h"
#include "loop.h"
#include "policy.h"
#include "task.h"
#include "tls.h"
#include "worker.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <dirent.h>
#include <grp.h>
#include <malloc.h>

#include <lauxlib.h>
#include <lualib.h>

/* Offers a worker holds at most (the master sends fewer than
 * FDP_CLAIM_WORDS that are valid; the rest were taken back). */
#define OFFERS_MAX (FDP_CLAIM_WORDS + 4)

/* PARKs of kept connections sent together while the master waits
 * (FDPOOL_PARKS=N, 1 to FDP_PARKS_MAX, for measuring); the page's size
 * (FDP_PARKS_MAX) in a run with deep offers (wctx.deep). */
static unsigned parks_batch = 4;
static int parks_fixed;         /* FDPOOL_PARKS given: deep runs too */

/* 1: held PARKs go as a message only while the master waits (its word
 * in the page, msleep); else the master takes them from the page before
 * it waits. 0 (FDPOOL_PARKWAKE=0, for measuring): they go whenever this
 * worker would wait. */
static int parks_wake = 1;


/* Does the master wait (or is about to)? Then held PARKs must be sent:
 * it would not look at the page before its next event. */
static int
master_waits(const struct fdp_wshared *sh)
{
    return !parks_wake || __atomic_load_n(&sh->msleep, __ATOMIC_SEQ_CST);
}

/* A task of the worker: the scheduler's, plus the connection it serves. */
struct fdp_wtask {
    struct fdp_task t;          /* first: a struct fdp_task * is one; its
                                   scheduler is its worker's (TASK_W) */
    struct fdp_conn *conn;      /* the connection it serves */
    uint64_t id;
    uint64_t started_us;
    uint32_t status_id;         /* fdpool.status() request it waits for */
    unsigned char parked;       /* its conn went back to the master */
    unsigned char kept;         /* the master kept a copy of its socket
                                   (FDP_CONN_KEPT): PARK sends no fd */
    struct fdp_wtask *status_next;
};                              /* small: one per connection, idle too */

struct fdp_wctx {
    struct fdp_pool *pool;
    int idx;                    /* 0-based slot */
    lua_State *L;
    struct fdp_sched sched;     /* its tasks */
    struct fdp_tls *tls;        /* its generation's certificates, or NULL */
    int handler_ref;
    struct fdp_loop loop;
    struct fdp_chan *ch;
    struct fdp_io chio;
    int stopping;
    int nconn;                  /* tasks serving a connection (not timers
                                   or threads: they never make it busy) */
    struct fdp_timer stop_timer;
    int ndone;
    struct fdp_done_entry done[FDP_BATCH_MAX];
    struct fdp_timer done_timer;    /* coalesces DONE reports */
    uint32_t status_seq;        /* fdpool.status() requests */
    struct fdp_wtask *status_waiters;    /* FIFO of tasks waiting */
    char *status_buf;           /* the answer being assembled */
    size_t status_len;
    lua_Alloc mem_inner;        /* --max-memory: the allocator wrapped */
    void *mem_inner_ud;
    size_t mem_used;            /* bytes the Lua state holds */
    size_t mem_limit;           /* refused past this in handler code */
    struct fcache *fc;          /* small blocks kept for reuse, or NULL */
    uint64_t *claim;            /* prefetch: its claim words, or NULL */
    struct fdp_wshared *shm;    /* strict prefork: shared with the
                                   master (the PARKs held back), or NULL */
    int noffer;                 /* offers waiting for its connection's end */
    int deep;                   /* held more than FDP_PREFETCH_SHALLOW
                                   offers since it last slept: the master
                                   tops it up as it goes (deep offers,
                                   a long queue), so its PARKs wait for
                                   a full page or nothing ready */
    int offer_fd[OFFERS_MAX];
    struct fdp_conn_entry offer_e[OFFERS_MAX];
    struct fdp_wtask *spare;    /* freed tasks kept for the next
                                   connections (a list through
                                   status_next) */
    int nspare;
};

/* The worker of a task: the one whose scheduler runs it. */
#define TASK_W(t) ((struct fdp_wctx *) (void *) ((char *) (t)->t.s \
                   - offsetof(struct fdp_wctx, sched)))

static void status_unwait(struct fdp_wtask *t);


/* Tasks kept for reuse: in strict prefork a worker starts one per
 * request, each a calloc and a free otherwise. */
#define WTASK_SPARES 8

static struct fdp_wtask *
task_alloc(struct fdp_wctx *w)
{
    struct fdp_wtask *t = w->spare;

    if (t == NULL) {
        return calloc(1, sizeof(*t));
    }
    w->spare = t->status_next;
    w->nspare--;
    memset(t, 0, sizeof(*t));
    return t;
}


static void
task_free(struct fdp_wctx *w, struct fdp_wtask *t)
{
    if (w->nspare >= WTASK_SPARES) {
        free(t);
        return;
    }
    t->status_next = w->spare;
    w->spare = t;
    w->nspare++;
}



static void
flush_parks(struct fdp_wctx *w)
{
    int r;

    uint64_t st;

    if (w->shm == NULL) {
        return;
    }
    st = __atomic_load_n(&w->shm->pstate, __ATOMIC_SEQ_CST);
    if (FDP_PARKS_N(st) == 0
        || !__atomic_compare_exchange_n(&w->shm->pstate, &st,
                                        FDP_PARKS_EMPTY(st), 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        return;                     /* none, or the master took them */
    }
    r = fdp_chan_send(w->ch, FDP_MSG_PARK, FDP_PARKS_N(st), w->shm->parks,
                      (size_t) FDP_PARKS_N(st) * sizeof(w->shm->parks[0]),
                      NULL, 0);
    if (r < 0) {
        fdp_log(FDP_LOG_ERROR, -r, "cannot report to the master; exiting");
        _exit(1);
    }
    if (w->ch->head != NULL) {
        (void) fdp_loop_mod(&w->loop, &w->chio, EPOLLIN | EPOLLOUT);
    }
}


static void
flush_done(struct fdp_wctx *w)
{
    int r;

    if (w->ndone == 0) {
        return;
    }
    r = fdp_chan_send(w->ch, FDP_MSG_DONE, (unsigned) w->ndone, w->done,
                      (size_t) w->ndone * sizeof(w->done[0]), NULL, 0);
    if (r < 0) {
        fdp_log(FDP_LOG_ERROR, -r, "cannot report to the master; exiting");
        _exit(1);
    }
    w->ndone = 0;
    if (w->ch->head != NULL) {
        (void) fdp_loop_mod(&w->loop, &w->chio, EPOLLIN | EPOLLOUT);
    }
}


static void
done_timer_cb(struct fdp_loop *loop, struct fdp_timer *t)
{
    (void) loop;
    flush_done(t->data);
}


/*
 * End of a loop turn: report finished connections now when the master's
 * view of this worker is close to full (it would hold back connections),
 * else within DONE_DELAY_MS, so that under load one DONE message (and
 * one wake-up of the master) covers many connections.
 */
#define DONE_DELAY_MS 2

static void
maybe_flush_done(struct fdp_wctx *w)
{
    int cap = w->pool->concurrency;

    if (w->ndone == 0) {
        return;
    }
    /* --max-requests counts DONEs: report at once so the master retires
     * the worker on time. */
    if (cap <= 8 || (w->nconn + w->ndone) * 4 >= cap * 3 || w->stopping
        || w->pool->max_requests > 0) {
        fdp_timer_stop(&w->loop, &w->done_timer);
        flush_done(w);
    } else if (!fdp_timer_active(&w->done_timer)) {
        (void) fdp_timer_start(&w->loop, &w->done_timer, DONE_DELAY_MS);
    }
}


static void
worker_exit(struct fdp_wctx *w, int code)
{
    flush_parks(w);
    flush_done(w);
    /* The channel queue may hold DONE messages: give them a moment. */
    if (w->ch->head != NULL) {
        (void) fdp_set_nonblock(w->ch->fd, 0);
        (void) fdp_chan_flush(w->ch);
    }
    _exit(code);
}


/* The task's connection, for log lines. */
static void
task_peer(struct fdp_task *tk, char *out, size_t n)
{
    struct fdp_wtask *t = (struct fdp_wtask *) tk;

    if (t->conn) {
        fdp_conn_peer(t->conn, out, n);
    }
}


/*
 * The handler is over: queue its connection's DONE entry (unless
 * parked: the PARK said it), close its conn, and keep the task for reuse.
 */
static void
task_done(struct fdp_task *tk)
{
    struct fdp_wtask *t = (struct fdp_wtask *) tk;
    struct fdp_wctx *w = TASK_W(t);
    struct fdp_conn *c = t->conn;
    struct fdp_done_entry *d;

    if (t->status_id) {
        status_unwait(t);
    }
    if (c) {
        w->nconn--;
    }
    if (c && !t->parked) {
        d = &w->done[w->ndone++];
        d->id = t->id;
        d->bytes_in = c->bytes_in;
        d->bytes_out = c->bytes_out;
        d->usec = fdp_now_us() - t->started_us;
        fdp_conn_close(c);
        if (w->ndone == FDP_BATCH_MAX) {
            flush_done(w);
        }
    } else if (c) {
        /* Parked (its fd is the master's now): the conn has no
         * finalizer (fdp_conn_new), so its read buffer goes back to
         * the scheduler's spares here, for the next hand-off. */
        fdp_conn_close(c);
    }
    task_free(w, t);
}


/*
 * conn:park(), the worker's part: hand the task's own connection back to
 * the master, which waits (epoll, up to idle_ms) for its next bytes and
 * dispatches it again through the policy. 0, or -errno.
 */
static int
task_park(struct fdp_task *tk, int fd, uint64_t bytes_in, uint64_t bytes_out,
          uint32_t idle_ms)
{
    struct fdp_wtask *t = (struct fdp_wtask *) tk;
    struct fdp_park_entry e;
    int r;

    e.id = t->id;
    e.bytes_in = bytes_in;
    e.bytes_out = bytes_out;
    e.usec = (uint32_t) (fdp_now_us() - t->started_us);
    e.idle_ms = idle_ms;
    /* A socket the master kept a copy of goes back by its id alone: no
     * fd to pass, check or register again (the master's epoll
     * registration of it stays); such PARKs go together, before the
     * worker waits (the master sees the next request's edge meanwhile
     * and looks at the PARK). */
    if (t->kept && parks_batch > 1 && TASK_W(t)->shm != NULL) {
        struct fdp_wshared *sh = TASK_W(t)->shm;
        uint64_t st = __atomic_load_n(&sh->pstate, __ATOMIC_SEQ_CST);

        /* In the shared page: if this worker dies or is held up in a
         * handler before it sends them, the master takes them. */
        do {
            sh->parks[FDP_PARKS_N(st)] = e;
        } while (!__atomic_compare_exchange_n(&sh->pstate, &st, st + 1, 0,
                                              __ATOMIC_SEQ_CST,
                                              __ATOMIC_SEQ_CST));
        /* Sent when the page is full, or at the batch's size while
         * the master waits, but not in a run of deep offers (there the
         * master's next CONN is often in before this worker runs out:
         * the loop's look finds it, no message; measured, 0.12 PARK
         * messages per request against 0.25); else when this worker
         * finds nothing ready while the master waits (the loop in
         * fdp_worker_run), or taken by the master at its turn. */
        if (FDP_PARKS_N(st) + 1 >= FDP_PARKS_MAX || TASK_W(t)->stopping
            || (FDP_PARKS_N(st) + 1 >= parks_batch
                && (!TASK_W(t)->deep || parks_fixed) && master_waits(sh))) {
            flush_parks(TASK_W(t));
        }
        r = 0;
    } else {
        flush_parks(TASK_W(t));
        r = fdp_chan_send(TASK_W(t)->ch, FDP_MSG_PARK, 1, &e, sizeof(e),
                          &fd, t->kept ? 0 : 1);
    }
    if (r < 0) {
        return r;
    }
    /* The channel owns (and closes) the fd now; a kept one is ours to
     * close (the master's copy keeps the connection open). */
    if (t->kept) {
        fdp_close(&fd);
    }
    t->parked = 1;
    if (TASK_W(t)->ch->head != NULL) {
        (void) fdp_loop_mod(&TASK_W(t)->loop, &TASK_W(t)->chio,
                            EPOLLIN | EPOLLOUT);
    }
    return 0;
}


/* The request line its conn read last (fdpool.http), if any. */
static void
task_request(struct fdp_task *tk, char *out, size_t n)
{
    struct fdp_wtask *t = (struct fdp_wtask *) tk;

    if (t->conn && t->conn->req) {
        snprintf(out, n, "%s", t->conn->req);
    }
}


static const struct fdp_task_ops task_ops = { task_peer, task_done,
                                              task_park, task_request,
                                              NULL };

static void close_idle(struct fdp_wctx *w);
static void start_guard(lua_State *L, int on);


/*
 * SIGUSR2 from the master: the handler being resumed has held the CPU
 * past --timeout. The signal handler only sets a count hook on that
 * coroutine (lua_sethook is async-signal-safe); the hook, running in the
 * coroutine at its next instructions, raises, so the handler ends with
 * an error whose logged traceback shows where it was. A handler stuck in
 * C never reaches the hook: the master then kills the worker.
 */
static struct fdp_wctx *volatile sig_worker;
static volatile sig_atomic_t sig_reopen;
/* The state running the top level and init (NULL once READY): the
 * master's SIGUSR2 then means "past --start-timeout" (start_hook). */
static lua_State *volatile sig_start_L;


static void
cpu_hook(lua_State *L, lua_Debug *ar)
{
    (void) ar;
    lua_sethook(L, cpu_hook, LUA_MASKCOUNT, 1000);  /* again if caught */
    luaL_error(L, "handler timed out: held the CPU past --timeout");
}


/* Still starting past --start-timeout (an endless loop in the top
 * level or init): raise where it runs, so that the FAIL the master
 * gets names the file and line. */
static void
start_hook(lua_State *L, lua_Debug *ar)
{
    char s[32];

    (void) ar;
    lua_sethook(L, start_hook, LUA_MASKCOUNT, 1000);    /* if caught */
    snprintf(s, sizeof(s), "%g", sig_worker != NULL
             ? sig_worker->pool->start_timeout : 0.0);
    luaL_where(L, 0);           /* in a hook, level 0 is where it runs */
    lua_pushfstring(L, "still starting after --start-timeout %s s (an "
                    "endless loop in the top level or init?)", s);
    lua_concat(L, 2);
    lua_error(L);
}


/* Only the master's SIGUSR2 counts (kill() by its pid): a stray
 * `kill -USR2 <worker>` must not raise inside a handler. */
static void
on_sigusr2(int sig, siginfo_t *si, void *uc)
{
    struct fdp_wctx *w = sig_worker;

    (void) sig;
    (void) uc;
    if (w == NULL || si == NULL || si->si_pid != w->pool->owner) {
        return;
    }
    if (si->si_code == SI_QUEUE
        && si->si_value.sival_int == FDP_SIG_SLOW_VALUE) {
        /* --slow (sigqueue): log where it runs, do not stop it. */
        fdp_sched_slow_signal(&w->sched);
        return;
    }
    if (si->si_code == SI_QUEUE
        && si->si_value.sival_int == FDP_SIG_START_VALUE) {
        /* past --start-timeout; late (READY already sent): nothing */
        if (sig_start_L != NULL) {
            lua_sethook(sig_start_L, start_hook, LUA_MASKCOUNT, 1);
        }
        return;
    }
    if (si->si_code != SI_USER) {
        return;
    }
    if (w->sched.current != NULL) {
        lua_sethook(w->sched.current->co, cpu_hook, LUA_MASKCOUNT, 1);
    }
}


static void
on_sigusr1(int sig)
{
    (void) sig;
    sig_reopen = 1;
}


/*
 * --user: drop to the user's uid/gid and groups, in that order (groups
 * and gid need the root we are about to lose), and check it cannot be
 * undone. Not dumpable afterwards. Returns 0, or -errno with err set.
 */
static int
drop_privileges(struct fdp_pool *p, char *err, size_t errlen)
{
    if (p->user_name == NULL) {
        return 0;
    }
    if (initgroups(p->user_name, (gid_t) p->user_gid) < 0) {
        int e = errno;

        snprintf(err, errlen, "initgroups(%s) failed: %s", p->user_name,
                 strerror(e));
        return -e;
    }
    if (setgid((gid_t) p->user_gid) < 0 || setuid((uid_t) p->user_uid) < 0) {
        int e = errno;

        snprintf(err, errlen, "cannot switch to user %s: %s", p->user_name,
                 strerror(e));
        return -e;
    }
    if (getuid() != (uid_t) p->user_uid || geteuid() != (uid_t) p->user_uid
        || getgid() != (gid_t) p->user_gid
        || getegid() != (gid_t) p->user_gid
        || (p->user_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))) {
        snprintf(err, errlen, "privilege drop to %s did not hold",
                 p->user_name);
        return -EPERM;
    }
    (void) prctl(PR_SET_DUMPABLE, 0);
    return 0;
}


static void
status_unwait(struct fdp_wtask *t)
{
    struct fdp_wtask **pp = &TASK_W(t)->status_waiters;

    while (*pp && *pp != t) {
        pp = &(*pp)->status_next;
    }
    if (*pp) {
        *pp = t->status_next;
    }
    t->status_next = NULL;
    t->status_id = 0;
}


static int
status_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_wtask *t = (struct fdp_wtask *) fdp_current_task(L);
    size_t len;
    const char *text;

    (void) status;
    (void) ctx;
    if (t == NULL || t->t.timed_out || !lua_isstring(L, -1)) {
        if (t) {
            status_unwait(t);
        }
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    lua_pushliteral(L, "return ");
    lua_insert(L, -2);
    lua_concat(L, 2);
    text = lua_tolstring(L, -1, &len);
    if (luaL_loadbufferx(L, text, len, "=fdpool.status", "t") != LUA_OK) {
        return lua_error(L);
    }
    lua_newtable(L);                    /* an empty _ENV: data only */
    (void) lua_setupvalue(L, -2, 1);
    lua_call(L, 0, 1);
    return 1;
}


/*
 * fdpool.status() in a handler: ask the master for the status table over
 * the channel and yield until the answer (or 5 s) comes. Pushes the table,
 * or nil and why.
 */
int
fdp_worker_status(lua_State *L)
{
    struct fdp_wtask *t = (struct fdp_wtask *) fdp_current_task(L), **pp;
    uint32_t id;
    int r;

    /* A thread or timer (its own task ops) has no slot for the request. */
    if (t == NULL || t->t.ops != NULL || !lua_isyieldable(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "fdpool.status() works in a handler's coroutine");
        return 2;
    }
    id = ++TASK_W(t)->status_seq;
    if (id == 0) {
        id = ++TASK_W(t)->status_seq;
    }
    r = fdp_chan_send(TASK_W(t)->ch, FDP_MSG_STATUS_REQ, 0, &id,
                      sizeof(id), NULL, 0);
    if (r < 0) {
        return fdp_pushfail(L, -r, "status");
    }
    if (TASK_W(t)->ch->head != NULL) {
        (void) fdp_loop_mod(&TASK_W(t)->loop, &TASK_W(t)->chio,
                            EPOLLIN | EPOLLOUT);
    }
    t->status_id = id;
    t->status_next = NULL;
    for (pp = &TASK_W(t)->status_waiters; *pp; pp = &(*pp)->status_next) {
    }
    *pp = t;
    fdp_task_suspend(&t->t, 5000);
    return lua_yieldk(L, 0, 0, status_k);
}


/* A part of a STATUS_RESP: collect; on the last, wake the waiter. */
static void
on_status_resp(struct fdp_wctx *w, const struct fdp_msg *m)
{
    uint32_t id;
    size_t n = m->h.len - 4;
    char *b;
    struct fdp_wtask *t;

    memcpy(&id, m->u.bytes, 4);
    b = realloc(w->status_buf, w->status_len + n + 1);
    if (b == NULL) {
        return;
    }
    w->status_buf = b;
    memcpy(b + w->status_len, m->u.bytes + 4, n);
    w->status_len += n;
    if (m->h.count == 1) {
        return;                         /* more parts follow */
    }
    t = w->status_waiters;
    if (t != NULL && t->status_id == id) {
        status_unwait(t);
        lua_pushlstring(t->t.co, w->status_buf, w->status_len);
        w->status_len = 0;
        fdp_task_wake(&t->t, 1);
    }
    w->status_len = 0;
}


static void
start_task(struct fdp_wctx *w, int fd, const struct fdp_conn_entry *e)
{
    struct fdp_wtask *t = task_alloc(w);
    lua_State *co;

    if (t == NULL) {
        fdp_log(FDP_LOG_ERROR, ENOMEM, "cannot serve a connection");
        fdp_close(&fd);
        return;
    }
    w->nconn++;
    t->id = e->id;
    t->started_us = fdp_now_us();
    fdp_task_start(&w->sched, &t->t);
    co = t->t.co;
    /* The conn, under the handler on the coroutine's stack: it stays
     * there (reachable) until the task ends, whatever the handler does
     * with its own reference, so task_done never meets a collected
     * conn. */
    t->conn = fdp_conn_new(co, fd, &w->sched, w->pool->io_timeout > 0
                                              ? w->pool->io_timeout : -1);
    lua_rawgeti(co, LUA_REGISTRYINDEX, w->handler_ref);
    lua_pushvalue(co, -2);
    t->t.data = t->conn;
    if (e->flags & FDP_CONN_KEPT) {
        t->kept = 1;
        t->conn->shared = 1;
    }
    if (e->peerlen > 0 && e->peerlen <= sizeof(e->peer)) {
        fdp_conn_set_peer(t->conn, e->peer, e->peerlen);
    }
    if (w->tls != NULL && e->listener < (uint32_t) w->pool->nlisten
        && w->pool->listeners[e->listener].tls) {
        double ms = FDP_TLS_HANDSHAKE_MS;

        if (w->pool->io_timeout > 0 && w->pool->io_timeout * 1000.0 < ms) {
            ms = w->pool->io_timeout * 1000.0;
        }
        if (fdp_tls_accept(t->conn, fdp_tls_ctx(w->tls)) < 0) {
            fdp_log(FDP_LOG_ERROR, ENOMEM, "cannot serve a TLS connection");
            fdp_conn_close(t->conn);    /* fdp_tls_serve ends at once */
        }
        /* handler, conn -> fdp_tls_serve(handler, conn, ms): the
         * handshake first, in the task, then the handler. */
        lua_pushcfunction(co, fdp_tls_serve);
        lua_insert(co, -3);
        lua_pushinteger(co, (lua_Integer) ms);
        fdp_task_resume(&t->t, 3);
        return;
    }
    fdp_task_resume(&t->t, 1);
}


/*
 * Strict prefork's prefetch: an offer (FDP_CONN_OFFER) is a connection
 * for when this worker's own is over. It starts only once claimed: a
 * compare-and-swap of its claim word from its id to 0, which fails when
 * the master took it back (the master keeps its copy of the socket: the
 * worker's copy is then just closed, no shutdown).
 */
/* Tests only (tests/66-prefetch_spec.lua, tests/66-parkring_spec.lua):
 * FDPOOL_TEST_SHM=MODE:PATH makes the first worker given a connection
 * while PATH does not exist (it creates it) fill its shared page with
 * what a buggy or hostile worker could write, before that connection's
 * handler runs. The master must survive it and kill this worker as
 * faulty. Mode "ring" waits for PATH.go to exist, and holds PARKs of the
 * connections handed just before and after its own (another worker's),
 * under a generation of its choosing. */
static void
test_scribble(struct fdp_wctx *w, uint64_t id)
{
    static int off;                 /* unset, or done: no more getenv */
    const char *e = off ? NULL : getenv("FDPOOL_TEST_SHM");
    const char *path = e != NULL ? strchr(e, ':') : NULL;
    int i, fd;

    if (path == NULL || w->shm == NULL) {
        off = 1;
        return;
    }
    if (strncmp(e, "ring:", 5) == 0) {
        char go[512];

        snprintf(go, sizeof(go), "%s.go", path + 1);
        if (access(go, F_OK) != 0) {
            return;                 /* not yet */
        }
    }
    off = 1;
    fd = open(path + 1, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return;                     /* done once already */
    }
    (void) close(fd);
    for (i = 0; i < FDP_CLAIM_WORDS; i++) {
        __atomic_store_n(&w->shm->claim[i], id + (uint64_t) i,
                         __ATOMIC_SEQ_CST);
    }
    if (strncmp(e, "count:", 6) == 0) {     /* a count past the page */
        __atomic_store_n(&w->shm->pstate, 0xffffffffu, __ATOMIC_SEQ_CST);
        return;
    }
    if (strncmp(e, "ring:", 5) == 0) {
        /* ids of the hand-offs next to its own: slots 0 to 3 of the
         * sequence numbers before and after (another worker's
         * connections), well-formed entries otherwise */
        memset(w->shm->parks, 0, sizeof(w->shm->parks));
        for (i = 0; i < 8; i++) {
            uint64_t seq = (id >> 16) + (i < 4 ? (uint64_t) -1 : 1);

            w->shm->parks[i].id = (seq << 16) | (uint64_t) (i & 3);
            w->shm->parks[i].idle_ms = 1000;
        }
        __atomic_store_n(&w->shm->msleep, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&w->shm->pstate, ((uint64_t) 0xdead << 32) | 8u,
                         __ATOMIC_SEQ_CST);
        return;
    }
    /* ids: its own connection not kept, twice; 0; one past its table;
     * its own slot with another generation */
    memset(w->shm->parks, 0, sizeof(w->shm->parks));
    w->shm->parks[0].id = id;
    w->shm->parks[1].id = id;
    w->shm->parks[2].id = 0;
    w->shm->parks[3].id = (id & ~(uint64_t) 0xffff) | 0xfffe;
    w->shm->parks[4].id = id ^ ((uint64_t) 1 << 40);
    w->shm->parks[5].id = ~(uint64_t) 0;
    __atomic_store_n(&w->shm->pstate, ((uint64_t) 7 << 32) | 6u,
                     __ATOMIC_SEQ_CST);
}


static void
offer_start(struct fdp_wctx *w, int fd, const struct fdp_conn_entry *e)
{
    uint64_t want = e->id;
    int j = (int) FDP_CONN_WORD_OF(e->flags);

    if (w->claim != NULL && !w->stopping && j < FDP_CLAIM_WORDS
        && __atomic_compare_exchange_n(&w->claim[j], &want, 0, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        start_task(w, fd, e);
    } else {
        fdp_close(&fd);
    }
}


/*
 * A connection whose descriptor the kernel dropped on its way here (this
 * worker is at its RLIMIT_NOFILE: MSG_CTRUNC): it cannot be served, and
 * its socket is closed (the master closed its own copy when it sent it,
 * or closes a kept one at the DONE). It is reported DONE at once, so the
 * master's count of this worker's connections stays true, and logged at
 * most once a second with a count: the worker goes on with the others.
 * An offer is claimed first; one the master took back is its own.
 */
static void
conn_lost(struct fdp_wctx *w, const struct fdp_conn_entry *e)
{
    static uint64_t last_ms;
    static unsigned long unsaid;
    uint64_t now = fdp_now_ms();
    struct fdp_done_entry *d;

    if (e->flags & FDP_CONN_OFFER) {
        uint64_t want = e->id;
        int j = (int) FDP_CONN_WORD_OF(e->flags);

        if (w->claim == NULL || j >= FDP_CLAIM_WORDS
            || !__atomic_compare_exchange_n(&w->claim[j], &want, 0, 0,
                                            __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST)) {
            return;
        }
    }
    unsaid++;
    if (last_ms == 0 || now - last_ms >= 1000) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
            rl.rlim_cur = 0;
        }
        fdp_log(FDP_LOG_ERROR, 0, "%lu connection(s) closed unserved: "
                "out of file descriptors (open files limit %llu, %d "
                "connection(s) open here); raise the limit (ulimit -n, "
                "systemd LimitNOFILE=) or lower --concurrency", unsaid,
                (unsigned long long) rl.rlim_cur, w->nconn);
        last_ms = now;
        unsaid = 0;
    }
    d = &w->done[w->ndone++];
    memset(d, 0, sizeof(*d));
    d->id = e->id;
    if (w->ndone == FDP_BATCH_MAX) {
        flush_done(w);
    }
}


static void
offer_take(struct fdp_wctx *w, int fd, const struct fdp_conn_entry *e)
{
    if (w->nconn == 0 && w->noffer == 0) {
        offer_start(w, fd, e);
        return;
    }
    if (w->noffer == OFFERS_MAX) {
        /* Cannot happen with a master that keeps to FDP_CLAIM_WORDS: the
         * oldest goes unclaimed (the master takes it back at its tick). */
        fdp_close(&w->offer_fd[0]);
        memmove(w->offer_fd, w->offer_fd + 1,
                (OFFERS_MAX - 1) * sizeof(w->offer_fd[0]));
        memmove(w->offer_e, w->offer_e + 1,
                (OFFERS_MAX - 1) * sizeof(w->offer_e[0]));
        w->noffer--;
    }
    w->offer_fd[w->noffer] = fd;
    w->offer_e[w->noffer] = *e;
    w->noffer++;
}


/* The worker's connection is over: its next offer, if any. */
static void
offers_run(struct fdp_wctx *w)
{
    while (w->nconn == 0 && w->noffer > 0) {
        int fd = w->offer_fd[0];
        struct fdp_conn_entry e = w->offer_e[0];

        w->noffer--;
        memmove(w->offer_fd, w->offer_fd + 1,
                (size_t) w->noffer * sizeof(w->offer_fd[0]));
        memmove(w->offer_e, w->offer_e + 1,
                (size_t) w->noffer * sizeof(w->offer_e[0]));
        offer_start(w, fd, &e);
        maybe_flush_done(w);
    }
}


static void
stop_now(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_wctx *w = timer->data;

    (void) loop;
    if (w->nconn > 0) {
        fdp_log(FDP_LOG_WARN, 0, "grace period over with %d connection(s) "
                "still open; exiting", w->nconn);
    } else if (fdp_lthread_holding(w->L) > 0) {
        fdp_log(FDP_LOG_WARN, 0, "grace period over with %d on_stop "
                "callback(s) still running; exiting",
                fdp_lthread_holding(w->L));
    }
    worker_exit(w, 0);
}


static void
channel_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_wctx *w = io->data;
    struct fdp_msg m;
    int r, i;

    if (ev & EPOLLOUT) {
        r = fdp_chan_flush(w->ch);
        if (r == 0) {
            (void) fdp_loop_mod(loop, io, EPOLLIN);
        } else if (r != -EAGAIN) {
            _exit(1);
        }
    }
    for (;;) {
        r = fdp_chan_recv(w->ch, &m);
        if (r == -EAGAIN) {
            return;
        }
        if (r <= 0 || fdp_msg_check(&m, 0) < 0) {
            /* EOF: the master is gone, and so are we (a master killed
             * with data unread on its end resets the pair instead:
             * ECONNRESET is the same news). Garbage from the master
             * cannot happen; leave rather than guess. */
            fdp_msg_close_fds(&m);
            if (r == -ECONNRESET) {
                r = 0;
            }
            if (r != 0) {
                fdp_log(FDP_LOG_ERROR, r < 0 ? -r : 0, "bad message from "
                        "the master; exiting");
            }
            _exit(r == 0 ? 0 : 1);
        }
        switch (m.h.type) {
        case FDP_MSG_CONN:
            /* Deep offers (more than the shallow depth in one CONN, or
             * in hand with those before): see task_park. */
            if (m.h.count > FDP_PREFETCH_SHALLOW + 1
                || w->noffer + m.h.count > FDP_PREFETCH_SHALLOW + 1) {
                w->deep = 1;
            }
            for (i = 0; i < m.h.count; i++) {
                int fd = i < m.nfds ? m.fds[i] : -1;

                if (fd < 0) {       /* dropped by the kernel: EMFILE */
                    conn_lost(w, &m.u.conn[i]);
                    continue;
                }
                m.fds[i] = -1;
                if (m.u.conn[i].flags & FDP_CONN_OFFER) {
                    offer_take(w, fd, &m.u.conn[i]);
                } else {
                    test_scribble(w, m.u.conn[i].id);
                    start_task(w, fd, &m.u.conn[i]);
                }
            }
            /* Handlers that finished at once are reported now when the
             * master needs them soon (--max-requests, a small capacity),
             * not after every message waiting on the channel. */
            maybe_flush_done(w);
            /* One CONN per wake-up: the channel is level-triggered, so a
             * message behind this one (a burst longer than one batch)
             * wakes the next epoll_wait at once, and the recvmsg that
             * would only say EAGAIN -- one per hand-off, the common
             * case -- is saved. */
            return;
        case FDP_MSG_STATUS_RESP:
            on_status_resp(w, &m);
            break;
        case FDP_MSG_STOP:
            w->stopping = 1;
            /* Held PARKs go now: a stopping master looks at no page
             * before this worker's exit, which may wait for a handler. */
            flush_parks(w);
            while (w->noffer > 0) {     /* never started: the master's */
                fdp_close(&w->offer_fd[--w->noffer]);
            }
            /* The stop notice: exiting() turns true, timers stop, the
             * on_stop callbacks start (they run within the grace). */
            fdp_lthread_stop(w->L);
            if (m.u.stop.graceful & FDP_STOP_IDLE) {
                fdp_lthread_close_idle = 1;
                close_idle(w);
            }
            if (w->nconn == 0 && fdp_lthread_holding(w->L) == 0) {
                worker_exit(w, 0);
            }
            fdp_timer_init(&w->stop_timer, stop_now, w);
            (void) fdp_timer_start(loop, &w->stop_timer, m.u.stop.grace_ms);
            break;
        default:
            break;
        }
    }
}


/*
 * Told that the pool stops (FDP_STOP_IDLE): the keep-alive connections
 * idle between requests (no byte of a next head) go now, as nginx's do,
 * instead of holding the worker until their keep-alive timeout. Each
 * one's wait (or a dormant task's registration) is woken on the loop's
 * next turn with a read forced: a next head already in the socket (its
 * edge not yet seen) is read and served, whole, body too; none, and the
 * loop ends the usual way (head_find: such an idle conn is "closed").
 * (Not a shutdown(SHUT_RD): a head that came meanwhile would be read,
 * but a body sent after it would read as the end.)
 */
static void
close_idle(struct fdp_wctx *w)
{
    struct fdp_task *t;

    for (t = w->sched.tasks; t != NULL; t = t->next) {
        /* the worker's own (ops NULL: the scheduler's) serve a conn */
        struct fdp_conn *c = ((struct fdp_wtask *) t)->conn;

        if (t->ops == NULL && c != NULL && c->kawait == 2 && c->fd >= 0
            && c->rend == c->rstart && c->wt.waiter == t) {
            c->wt.rready = 1;
            fdp_task_resume_soon(t, 0);
        }
    }
}


/*
 * The worker cannot serve: log the whole message (a traceback folded into
 * one line), tell the master the first line, and leave.
 */
static void
fail(struct fdp_wctx *w, const char *msg)
{
    const char *nl = strchr(msg, '\n');
    size_t n = nl ? (size_t) (nl - msg) : strlen(msg);

    /* "app.lua:1: module 'x' not found:" and its list below: the first
     * line goes to the master, without the colon that led to the list */
    if (nl != NULL && n > 1 && msg[n - 1] == ':') {
        n--;
    }

    if (nl != NULL && w->L != NULL) {
        fdp_push_oneline(w->L, msg);
        fdp_log(FDP_LOG_ERROR, 0, "cannot start: %s", lua_tostring(w->L, -1));
    }
    if (n > FDP_MSG_MAX) {
        n = FDP_MSG_MAX;
    }
    (void) fdp_set_nonblock(w->ch->fd, 0);
    (void) fdp_chan_send(w->ch, FDP_MSG_FAIL, 0, n ? msg : "?", n ? n : 1,
                         NULL, 0);
    _exit(1);
}


static int
msgh(lua_State *L)
{
    return fdp_errmsg(L, 1);
}


/* fdpool.worker.crowded() -> whether the worker serves 3/4 of its
 * capacity or more (fdp_sched_crowded): fdpool.http parks idle
 * keep-alive connections then. */
static int
worker_crowded(lua_State *L)
{
    struct fdp_wctx *w = lua_touserdata(L, lua_upvalueindex(1));

    lua_pushboolean(L, fdp_sched_crowded(&w->sched));
    return 1;
}


/* fdpool.worker.set(key, value): a custom field in this worker's slot of
 * the status table. */
static int
worker_set(lua_State *L)
{
    struct fdp_wctx *w = lua_touserdata(L, lua_upvalueindex(1));
    size_t klen, vlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *val;
    char buf[FDP_KEY_MAX + FDP_VAL_MAX];
    int r;

    luaL_checkany(L, 2);
    val = luaL_tolstring(L, 2, &vlen);
    luaL_argcheck(L, klen > 0 && klen < FDP_KEY_MAX
                  && strlen(key) == klen, 1, "key must be 1 to 31 bytes");
    luaL_argcheck(L, vlen < FDP_VAL_MAX && strlen(val) == vlen, 2,
                  "value must be at most 95 bytes");
    memcpy(buf, key, klen + 1);
    memcpy(buf + klen + 1, val, vlen);
    r = fdp_chan_send(w->ch, FDP_MSG_SET, 0, buf, klen + 1 + vlen, NULL, 0);
    if (r < 0) {
        return fdp_pushfail(L, -r, "worker.set");
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* The registry key of the binding's luaopen_fdpool (a C function), left
 * in the state that creates a pool: the worker opens the module in a
 * fresh state with it, without knowing the layer above. */
static const char luaopen_key = 'o';


void
fdp_worker_set_luaopen(lua_State *L, lua_CFunction open)
{
    lua_pushcfunction(L, open);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &luaopen_key);
}


/* Make fdpool.worker = {id, pid, set} in L (requiring fdpool, with the
 * binding's opener found in the pool's state, if the program had not),
 * and keep it in the registry for init(worker). */
static void
module_set_worker(lua_State *L, struct fdp_wctx *w)
{
    lua_CFunction open;

    lua_rawgetp(w->pool->L, LUA_REGISTRYINDEX, &luaopen_key);
    open = lua_tocfunction(w->pool->L, -1);
    lua_pop(w->pool->L, 1);
    if (open == NULL) {
        fail(w, "the fdpool module is not open in the pool's state");
    }
    fdp_sched_register(L, &w->sched);
    luaL_requiref(L, "fdpool", open, 0);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, w->idx + 1);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, getpid());
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, w->pool->concurrency);
    lua_setfield(L, -2, "capacity");
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, worker_set, 1);
    lua_setfield(L, -2, "set");
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, worker_crowded, 1);
    lua_setfield(L, -2, "crowded");
    lua_pushcfunction(L, fdp_lthread_exiting);
    lua_setfield(L, -2, "exiting");
    lua_pushcfunction(L, fdp_lthread_on_stop);
    lua_setfield(L, -2, "on_stop");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "fdpool.worker");
    lua_setfield(L, -2, "worker");
    fdp_lshared_open(L, w->pool);
    lua_pop(L, 1);
}


/*
 * How many connections at once this worker's RLIMIT_NOFILE leaves room
 * for, when fewer than cap (--concurrency): the limit, less the fds open
 * now (after the top level and init) and a margin for what handlers open
 * (files, upstream sockets: an eighth of the limit, at least 16). The
 * master then hands it no more (they wait in its queue) instead of
 * handing it connections whose fd the kernel would drop. 0: no need.
 */
static uint32_t
fd_room(int cap)
{
    struct rlimit rl;
    struct dirent *e;
    DIR *d;
    long open = 0, room, margin;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY
        || rl.rlim_cur >= (rlim_t) cap + 1024 * 1024) {
        return 0;
    }
    d = opendir("/proc/self/fd");
    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        open += e->d_name[0] != '.';
    }
    (void) closedir(d);
    open--;                             /* the directory's own fd */
    margin = (long) rl.rlim_cur / 8 < 16 ? 16 : (long) rl.rlim_cur / 8;
    room = (long) rl.rlim_cur - open - margin;
    if (room < 1) {
        room = 1;
    }
    return room < cap ? (uint32_t) room : 0;
}


/*
 * What READY tells the master about the handler on top of L's stack: a
 * function made by http.serve (listed in fdpool.http's weak `handlers`
 * table with its options) speaks HTTP, and its max_head and head_timeout
 * set the master's accept filter. Anything else: zeros.
 */
static void
ready_body(lua_State *L, struct fdp_ready_body *rb)
{
    int top = lua_gettop(L);

    memset(rb, 0, sizeof(*rb));
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_istable(L, -1)
        && lua_getfield(L, -1, "fdpool.http") == LUA_TTABLE
        && lua_getfield(L, -1, "handlers") == LUA_TTABLE) {
        lua_pushvalue(L, top);
        if (lua_rawget(L, -2) == LUA_TTABLE) {
            lua_Number mh, ht;

            lua_getfield(L, -1, "max_head");
            lua_getfield(L, -2, "head_timeout");
            mh = lua_tonumber(L, -2);
            ht = lua_tonumber(L, -1);
            rb->http = 1;
            /* Past what 32 bits hold: the largest (49.7 days of ms, a
             * 4 GiB head), never 0, which would mean "none" and give the
             * accept filter --io-timeout instead. */
            rb->max_head = !(mh > 0) ? 0 : mh >= 4294967295.0 ? UINT32_MAX
                           : (uint32_t) mh;
            rb->head_ms = fdp_sec_ms32(ht);
        }
    }
    lua_settop(L, top);
}


/* Load the handler script into a fresh state (arg and ... as lua5.4
 * gives them) and leave its result on the stack. 0, or -EINVAL with the
 * message on top. */
static int
load_script(lua_State *L, struct fdp_pool *p)
{
    int i;

    lua_createtable(L, p->nargs, 1);
    lua_pushstring(L, p->script);
    lua_rawseti(L, -2, 0);
    for (i = 0; i < p->nargs; i++) {
        lua_pushstring(L, p->args[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, msgh);
    /* The text of this worker's generation, as the master read it. */
    if (p->spawn_new ? fdp_script_load(L, p->script, p->reload_src,
                                       p->reload_len)
                     : fdp_script_load(L, p->script, p->script_src,
                                       p->script_len)) {
        return -EINVAL;
    }
    for (i = 0; i < p->nargs; i++) {
        lua_pushstring(L, p->args[i]);
    }
    if (lua_pcall(L, p->nargs, 1, -(p->nargs + 2)) != LUA_OK) {
        return -EINVAL;
    }
    lua_remove(L, -2);
    return 0;
}


/*
 * --max-memory, the Lua side: the worker's allocator wraps the state's
 * own (a script handler's fresh state, or the forked copy of the caller's
 * state for a function handler: lua_setallocf works on a live state, and
 * the wrapped allocator still frees what was allocated before the fork).
 * It counts the bytes the state holds and, while handler code runs (a
 * task's resume, the script's top level, init), refuses growth past the
 * limit: Lua then collects garbage once and retries, and failing that
 * raises "not enough memory" inside the handler (fdpool.http answers
 * 500). Everything else the worker does (the scheduler, new coroutines,
 * tracebacks, unprotected API calls) is never refused, so it cannot fail
 * outside a protected call: the headroom past the limit is the worker's.
 * The master's RssAnon check bounds what that, and memory Lua does not
 * see, can add up to.
 */
static void *
limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fdp_wctx *w = ud;
    size_t old = ptr != NULL ? osize : 0;   /* else osize is a type tag */
    void *np;

    if (nsize > old && w->sched.mem_limited
        && w->mem_used + (nsize - old) > w->mem_limit) {
        return NULL;
    }
    np = w->mem_inner(w->mem_inner_ud, ptr, osize, nsize);
    if (np != NULL || nsize == 0) {
        w->mem_used = w->mem_used - old + nsize;
    }
    return np;
}


/*
 * A script handler's Lua allocator: freed blocks of up to FC_MAX bytes
 * are kept on free lists by size (8-byte classes) and handed out again,
 * so the objects every request makes and the collector frees (its
 * tables, their node arrays, strings) cost a list push and pop instead
 * of glibc's free and malloc, whose per-size caches (7 blocks) a
 * collector's sweep overflows. At most FC_CAP bytes wait on the lists;
 * the rest goes back to free(). 1 MiB: a minor collection of a worker
 * holding 500-1000 keep-alive connections frees 0.6-1.2 MiB at once,
 * and what glibc takes back there it hands out again through its bins,
 * reading cold chunk headers (docs/performance.md). The state is the
 * worker's own (luaL_newstate, whose allocator is realloc/free), so
 * every block is malloc's: a block from before the switch goes on a list
 * only when it holds its class (FC_HOLDS). The allocator itself is
 * src/fcache.h. Off under AddressSanitizer, which must see every free
 * (test_core tortures the allocator under both builds).
 */
#if defined(__SANITIZE_ADDRESS__)
#define FC_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FC_OFF 1
#endif
#endif

#ifndef FC_OFF
#include "fcache.h"
#endif


static void
fcache_install(struct fdp_wctx *w)
{
#ifndef FC_OFF
    static const size_t probe[] = {1, 9, 13, 25, 100, 257, 505};
    size_t i;

    w->fc = calloc(1, sizeof(*w->fc));
    if (w->fc == NULL) {
        return;
    }
    for (i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
        void *p = malloc(probe[i]);

        if (p == NULL || malloc_usable_size(p) < ((probe[i] + 7) & ~(size_t) 7)) {
            w->fc->exact = 1;
        }
        free(p);
    }
    lua_setallocf(w->L, fc_alloc, w->fc);
#else
    (void) w;
#endif
}


static void
memory_limit(struct fdp_wctx *w)
{
    lua_State *L = w->L;

    if (w->pool->max_memory == 0) {
        return;
    }
    w->mem_limit = (size_t) w->pool->max_memory;
    w->sched.limit_mem = w->mem_limit > 0;
    w->mem_used = (size_t) lua_gc(L, LUA_GCCOUNT, 0) * 1024
                  + (size_t) lua_gc(L, LUA_GCCOUNTB, 0);
    w->mem_inner = lua_getallocf(L, &w->mem_inner_ud);
    lua_setallocf(L, limited_alloc, w);
    if (w->mem_used >= w->mem_limit) {
        char msg[160];

        snprintf(msg, sizeof(msg), "the Lua state already holds %zu KiB, "
                 "above --max-memory %zu KiB", w->mem_used / 1024,
                 w->mem_limit / 1024);
        fail(w, msg);
    }
}


/* stdin is /dev/null in a worker: a handler's io.read() gets EOF at once
 * instead of blocking the whole worker on the terminal or a pipe. dup2
 * keeps fd 0 open (and not CLOEXEC) as stdin always is. */
static void
stdin_devnull(struct fdp_wctx *w)
{
    int fd;

    /* A master started with fd 0 closed may have given it to our channel:
     * move the channel out of the way first. */
    if (w->ch->fd == 0) {
        fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            fail(w, "cannot move the channel off fd 0");
        }
        (void) close(0);
        w->ch->fd = fd;
    }
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (fd != 0 && dup2(fd, 0) < 0)) {
        fail(w, "cannot open /dev/null as stdin");
    }
    if (fd != 0) {
        fdp_close(&fd);
    } else {
        (void) fcntl(0, F_SETFD, 0);
    }
    clearerr(stdin);
}


/* The worker's signal dispositions (sig_worker is w from now on). */
static void
worker_signals(struct fdp_wctx *w)
{
    /* The master decides when workers stop: Ctrl-C on a terminal sends
     * SIGINT (QUIT, ...) to the whole process group, and the workers
     * must still get their grace period. TERM stays fatal. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTTIN, SIG_IGN);
    signal(SIGTTOU, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    sig_worker = w;
    {
        struct sigaction sa;

        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_sigusr2;
        sa.sa_flags = SA_RESTART | SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGUSR2, &sa, NULL);
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_sigusr1;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGUSR1, &sa, NULL);
    }
}


/* The worker's collector: generational, a minor collection each time
 * the heap has grown by WORKER_GC_MINOR % since the last one, a major
 * one past WORKER_GC_MAJOR % (see open_handler). */
#ifndef WORKER_GC_MINOR
#define WORKER_GC_MINOR 50      /* % (Lua's default 20) */
#endif
#define WORKER_GC_MAJOR 100     /* % (Lua's default) */
#define WORKER_GC_PAUSE 150     /* % (Lua's default 200): the pause of the
                                 * incremental cycles it runs after a bad
                                 * major collection */


/*
 * A memory error says only "not enough memory": the error on top of the
 * stack becomes "app.lua: not enough memory in its top level (--max-memory
 * 64 MB)", so that the start's or the reload's refusal names the file.
 */
static void
start_oom_where(struct fdp_wctx *w, const char *where)
{
    lua_State *L = w->L;
    const char *e = lua_tostring(L, -1);
    const char *oom = "not enough memory";

    if (e == NULL || strncmp(e, oom, strlen(oom)) != 0) {
        return;
    }
    lua_pushfstring(L, "%s: not enough memory in %s", w->pool->script
                    ? w->pool->script : "the handler", where);
    if (w->pool->max_memory > 0) {
        lua_pushfstring(L, " (--max-memory %d MB)", (int)
                        (w->pool->max_memory / (1024 * 1024)));
        lua_concat(L, 2);
    }
    lua_replace(L, -2);
}


/*
 * The Lua side of a new worker: a fresh state running the script (or
 * the forked copy of the caller's state for a function handler), the
 * fdpool.worker table, the coroutine wrappers, the handler table's
 * init(worker). Leaves the handler function on top of the returned
 * state's stack; any failure is fail()'s.
 */
static lua_State *
open_handler(struct fdp_wctx *w)
{
    struct fdp_pool *p = w->pool;
    lua_State *L;
    int r;

    if (p->script) {
        L = luaL_newstate();
        if (L == NULL) {
            fail(w, "cannot create a Lua state");
        }
        w->L = L;
        w->sched.L = L;
        fcache_install(w);
        memory_limit(w);
        luaL_openlibs(L);
        module_set_worker(L, w);
        fdp_sched_install_wrappers(L);
        start_guard(L, 1);
        sig_start_L = L;
        w->sched.mem_limited = w->sched.limit_mem;
        r = load_script(L, p);
        w->sched.mem_limited = 0;
        if (r < 0) {
            start_oom_where(w, "its top level");
            fail(w, lua_tostring(L, -1));
        }
    } else {
        L = p->L;
        w->L = L;
        w->sched.L = L;
        memory_limit(w);
        module_set_worker(L, w);
        fdp_sched_install_wrappers(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->handler_ref);
        start_guard(L, 1);
        sig_start_L = L;
    }

    /* The collector: generational (minor collections at +50 %, Lua's
     * default 20 %), not incremental with a pause of 150 % as before.
     * Nearly all of a request's objects (req, res, their tables and
     * strings) die young: a minor collection frees them without marking
     * or sweeping the old heap (the http.lua code, the conns, the
     * coroutines), so the collector's share of a keep-alive request goes
     * from ~1.9k to ~0.9k instructions, almost all of it freeing
     * (bench/instr ka -7 %, many -3 % and a fifth fewer cache misses).
     * +20 % or +30 % collect so often that the per-collection cost
     * (every live coroutine is traversed at each minor collection) takes
     * the gain back at 1000 connections. The price: 2-5 % more RSS
     * after a burst of 10,000 connections (bench/idle-rss: up to 8.8 MiB
     * against 8.35, 1.4 x nginx). docs/performance.md has the figures. The pause
     * is for the incremental cycles Lua runs after a major collection
     * that freed little. Entering generational mode is a full
     * collection; Lua 5.4.4 leaves the next minor collection's threshold
     * unset after it (later 5.4 releases set it), so one step sets it.
     * A handler's init may choose its own (collectgarbage("incremental",
     * pause) as before, or other generational parameters). */
    lua_gc(L, LUA_GCINC, WORKER_GC_PAUSE, 0, 0);
    lua_gc(L, LUA_GCGEN, WORKER_GC_MINOR, WORKER_GC_MAJOR);
    lua_gc(L, LUA_GCSTEP, 0);

    /* The handler: a function, or {handle = fn, init = fn}. */
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "init");
        if (!lua_isnil(L, -1)) {
            if (!lua_isfunction(L, -1)) {
                fail(w, "the handler table's 'init' is not a function");
            }
            lua_pushcfunction(L, msgh);
            lua_insert(L, -2);
            lua_getfield(L, LUA_REGISTRYINDEX, "fdpool.worker");
            w->sched.mem_limited = w->sched.limit_mem;
            r = lua_pcall(L, 1, 0, -3);
            w->sched.mem_limited = 0;
            if (r != LUA_OK) {
                start_oom_where(w, "init");
                lua_pushfstring(L, "init failed: %s", lua_tostring(L, -1));
                fail(w, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
        }
        lua_getfield(L, -1, "handle");
        lua_remove(L, -2);
    }
    sig_start_L = NULL;
    if (lua_gethook(L) == start_hook) {
        lua_sethook(L, NULL, 0, 0); /* a late SIGUSR2's */
    }
    start_guard(L, 0);
    if (!lua_isfunction(L, -1)) {
        lua_pushfstring(L, "%s must return a function(conn) or a table "
                        "{handle = function(conn) ... end} (got %s)",
                        p->script ? p->script : "the handler",
                        luaL_typename(L, -1));
        fail(w, lua_tostring(L, -1));
    }
    return L;
}


/* os.exit while the worker starts: raise instead, so that the master
 * hears why (FAIL, with the file and line) rather than of an exit code
 * from a worker that never said what went wrong. */
static int
start_exit(lua_State *L)
{
    return luaL_error(L, "os.exit() called while the worker starts (its "
                      "top level or init): raise an error to refuse to "
                      "start");
}


/* Swap os.exit for start_exit (on = 1), or put the saved one back if
 * start_exit is still there (on = 0). */
static void
start_guard(lua_State *L, int on)
{
    static const char key = 'x';

    if (lua_getglobal(L, "os") != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    if (on) {
        lua_getfield(L, -1, "exit");
        lua_rawsetp(L, LUA_REGISTRYINDEX, &key);
        lua_pushcfunction(L, start_exit);
        lua_setfield(L, -2, "exit");
    } else {
        lua_getfield(L, -1, "exit");
        if (lua_tocfunction(L, -1) == start_exit) {
            lua_rawgetp(L, LUA_REGISTRYINDEX, &key);
            lua_setfield(L, -3, "exit");
        }
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &key);
    }
    lua_pop(L, 1);
}


/* The shape the pool takes its worker main in (a function pointer set
 * by whoever creates the pool): the slot wk of p, after fork. */
int
fdp_worker_run(struct fdp_pool *p, struct fdp_worker *wk)
{
    struct fdp_wctx w;
    struct fdp_ready_body rb;
    char tag[32];
    lua_State *L;
    int r;

    memset(&w, 0, sizeof(w));
    w.pool = p;
    /* The id it serves as: a reload's new worker starts in a spare slot
     * and takes the table slot of this id once its generation is READY. */
    w.idx = wk->slot.id - 1;
    w.ch = &wk->ch;
    w.claim = wk->claim;
    w.shm = wk->shm;
    /* A reload's new worker serves with the certificates read for it. */
    w.tls = p->spawn_new ? p->reload_tls : p->tls;
    snprintf(tag, sizeof(tag), "worker %d", w.idx + 1);
    fdp_log_set_tag(tag);

    {
        char err[256];

        if (drop_privileges(p, err, sizeof(err)) < 0) {
            fail(&w, err);
        }
    }
    /* --cpu-affinity: this slot's CPU (the master recorded it too) */
    r = fdp_pool_pin(p, w.idx);
    if (r < 0) {
        char err[96];

        snprintf(err, sizeof(err), "cannot pin worker %d to CPU %d: %s",
                 w.idx + 1, fdp_pool_cpu_of(p, w.idx), strerror(-r));
        fail(&w, err);
    }
    /* Die with the master: the signal (set after the privilege drop,
     * which clears it), and the channel EOF. The getppid() check closes
     * the race with a master that died first. */
    (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != p->owner) {
        _exit(1);
    }
    worker_signals(&w);
    (void) sigprocmask(SIG_SETMASK, &p->oldmask, NULL);
    stdin_devnull(&w);

    if (fdp_loop_init(&w.loop) < 0) {
        fail(&w, "epoll_create1() failed");
    }
    w.sched.loop = &w.loop;
    w.sched.ops = &task_ops;
    w.sched.timeout = p->timeout;
    w.sched.slow = p->slow;
    w.sched.nconn = &w.nconn;
    w.sched.crowded = p->concurrency - p->concurrency / 4;
    w.sched.slow_fd = p->slow_fd;
    snprintf(w.sched.slow_who, sizeof(w.sched.slow_who), "%s", tag);
    fdp_timer_init(&w.done_timer, done_timer_cb, &w);
    (void) fdp_set_nonblock(w.ch->fd, 1);
    w.chio.fd = w.ch->fd;
    w.chio.cb = channel_io;
    w.chio.data = &w;
    if (fdp_loop_add(&w.loop, &w.chio, EPOLLIN) < 0) {
        fail(&w, "epoll_ctl() failed on the channel");
    }

    L = open_handler(&w);
    ready_body(L, &rb);
    rb.maxconns = fd_room(w.pool->concurrency);
    w.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    r = fdp_chan_send(w.ch, FDP_MSG_READY, 0, &rb, sizeof(rb), NULL, 0);
    if (r < 0) {
        _exit(1);
    }
    {
        const char *e = getenv("FDPOOL_PARKS");

        if (getenv("FDPOOL_PARKWAKE") != NULL
            && strcmp(getenv("FDPOOL_PARKWAKE"), "0") == 0) {
            parks_wake = 0;
        }
        if (e != NULL && atoi(e) >= 1 && atoi(e) <= FDP_PARKS_MAX) {
            parks_batch = (unsigned) atoi(e);
            parks_fixed = 1;
        }
    }
    for (;;) {
        /* PARKs held back and a master that waits: one look without
         * waiting; nothing to do, so they go before the worker sleeps
         * (an offer in hand starts first: its PARK may go with them).
         * A master that runs takes them from the page before it waits:
         * the worker's compare-and-swap that held the last one came
         * before the load of msleep, as the master's store of msleep
         * before its last look at the page (both sequentially
         * consistent): one of the two sees the other. */
        int look = w.shm != NULL
                   && FDP_PARKS_N(__atomic_load_n(&w.shm->pstate,
                                                  __ATOMIC_RELAXED)) > 0
                   && master_waits(w.shm);

        w.deep = w.deep && (look || w.nconn > 0 || w.noffer > 0);
        r = fdp_loop_run_once(&w.loop, look ? 0 : -1);
        if (r < 0) {
            fdp_log(FDP_LOG_ERROR, -r, "epoll_wait() failed");
            worker_exit(&w, 1);
        }
        maybe_flush_done(&w);
        if (w.noffer > 0 && w.nconn == 0) {
            offers_run(&w);
        }
        if (r == 0 && look) {
            flush_parks(&w);
        }
        if (sig_reopen) {
            sig_reopen = 0;
            r = fdp_log_reopen();
            if (r < 0) {
                fdp_log(FDP_LOG_WARN, -r, "SIGUSR1: cannot reopen the log "
                        "file; logging on to the one already open");
            }
        }
        if (w.stopping && w.nconn == 0 && fdp_lthread_holding(w.L) == 0) {
            worker_exit(&w, 0);
        }
    }
}


void
fdp_worker_main(struct fdp_pool *p, int idx)
{
    (void) fdp_worker_run(p, &p->workers[idx]);
    _exit(1);                           /* not reached */
}
