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
#include "worker.h"
#include "laux.h"
#include "lconn.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <time.h>
#include <grp.h>

#include <lauxlib.h>
#include <lualib.h>

static void task_resume(struct fdp_task *t, int nargs);
static void status_unwait(struct fdp_task *t);


/* The registry key under which a worker's state keeps its context. */
static const char worker_key = 'w';


void
fdp_worker_register(lua_State *L, struct fdp_wctx *w)
{
    lua_pushlightuserdata(L, w);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &worker_key);
}


/* What a handler's own coroutine yields to say "I wait for I/O": the
 * worker's coroutine.resume/wrap pass it up to the task (OpenResty does
 * the same), and resume the coroutine again when the task is woken. */
static const char io_yield_key = 'y';
static const char forward_key = 'f';


/*
 * The task whose execution L is part of: its own coroutine, or (when
 * `nested` is given) a handler's coroutine resumed through the worker's
 * coroutine.resume while the task runs. NULL elsewhere (top level,
 * init, the master, plain programs).
 */
static struct fdp_task *
task_of(lua_State *L, int *nested)
{
    struct fdp_wctx *w;
    struct fdp_task *t;
    int fwd;

    lua_rawgetp(L, LUA_REGISTRYINDEX, &worker_key);
    w = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (w == NULL || (t = w->current) == NULL) {
        return NULL;
    }
    if (t->co == L) {
        if (nested) {
            *nested = 0;
        }
        return t;
    }
    if (nested == NULL) {
        return NULL;
    }
    /* Forward only if the wrapper said the resumer can yield too. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &forward_key);
    lua_pushthread(L);
    lua_rawget(L, -2);
    fwd = lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (!fwd) {
        return NULL;
    }
    *nested = 1;
    return t;
}


struct fdp_task *
fdp_current_task(lua_State *L)
{
    return task_of(L, NULL);
}


/*
 * Yield for a wait registered on task t: the task's own coroutine yields
 * to the worker's loop; a nested one yields the I/O marker, which the
 * coroutine.resume wrappers pass up to the task.
 */
int
fdp_task_yield(lua_State *L, struct fdp_task *t, lua_KContext ctx,
               lua_KFunction k)
{
    if (t->co == L) {
        return lua_yieldk(L, 0, ctx, k);
    }
    lua_pushlightuserdata(L, (void *) &io_yield_key);
    return lua_yieldk(L, 1, ctx, k);
}


/* The task for a wait from L (own or nested coroutine), or NULL when L
 * must block instead. */
struct fdp_task *
fdp_wait_task(lua_State *L)
{
    int nested;
    struct fdp_task *t = task_of(L, &nested);

    return t != NULL && lua_isyieldable(L) ? t : NULL;
}


/* The worker's coroutine.resume and coroutine.wrap, in Lua: they pass the
 * I/O marker up and resume again, so conn I/O in a handler's own
 * coroutines yields to the worker's loop instead of blocking it. */
static const char coroutine_wrappers[] =
    "local IO, forward = ...\n"
    "local create, resume0, yield, isyieldable, status = coroutine.create,\n"
    "  coroutine.resume, coroutine.yield, coroutine.isyieldable,\n"
    "  coroutine.status\n"
    "local pack, unpack = table.pack, table.unpack\n"
    "local function resume(co, ...)\n"
    "  forward[co] = isyieldable()\n"
    "  local r = pack(resume0(co, ...))\n"
    "  while r[1] and r.n == 2 and r[2] == IO and status(co) == 'suspended' do\n"
    "    local v = pack(yield(IO))\n"
    "    forward[co] = isyieldable()\n"
    "    r = pack(resume0(co, unpack(v, 1, v.n)))\n"
    "  end\n"
    "  return unpack(r, 1, r.n)\n"
    "end\n"
    "coroutine.resume = resume\n"
    "coroutine.wrap = function(f)\n"
    "  local co = create(f)\n"
    "  return function(...)\n"
    "    local r = pack(resume(co, ...))\n"
    "    if not r[1] then error(r[2], 2) end\n"
    "    return unpack(r, 2, r.n)\n"
    "  end\n"
    "end\n";


/* Install the wrappers in L's coroutine library (a worker's state). */
static void
install_coroutine_wrappers(lua_State *L)
{
    lua_newtable(L);                            /* weak: thread -> bool */
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &forward_key);
    if (luaL_loadbufferx(L, coroutine_wrappers, sizeof(coroutine_wrappers) - 1,
                         "=[fdpool] coroutine", "t") != LUA_OK) {
        lua_pop(L, 2);
        return;
    }
    lua_insert(L, -2);
    lua_pushlightuserdata(L, (void *) &io_yield_key);
    lua_insert(L, -2);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
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
    if (cap <= 8 || (w->active + w->ndone) * 4 >= cap * 3 || w->stopping
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
    flush_done(w);
    /* The channel queue may hold DONE messages: give them a moment. */
    if (w->ch->head != NULL) {
        (void) fdp_set_nonblock(w->ch->fd, 0);
        (void) fdp_chan_flush(w->ch);
    }
    _exit(code);
}


/* Replace "\n\t" in a traceback with " | " so the log keeps one line per
 * event. Pushes the result. */
static void
push_oneline(lua_State *L, const char *s)
{
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    for (; *s; s++) {
        if (*s == '\n') {
            luaL_addstring(&b, " | ");
            while (s[1] == '\t' || s[1] == ' ') {
                s++;
            }
        } else {
            luaL_addchar(&b, *s);
        }
    }
    luaL_pushresult(&b);
}


#define TASK_CANCELLED (-1)

/*
 * The handler is over: it returned (LUA_OK), raised (its error and
 * traceback are logged), or was cancelled by --timeout while waiting
 * (TASK_CANCELLED: logged by the caller). Closes the connection, queues
 * its DONE entry, frees the task.
 */
static void
task_finish(struct fdp_task *t, int status)
{
    struct fdp_wctx *w = t->w;
    struct fdp_conn *c = t->conn;
    struct fdp_done_entry *d;

    fdp_timer_stop(&w->loop, &t->limit);
    if (t->status_id) {
        status_unwait(t);
    }
    if (status == TASK_CANCELLED) {
        (void) lua_resetthread(t->co);  /* runs pending <close> */
    } else if (status != LUA_OK) {
        const char *msg = lua_tostring(t->co, -1);
        char peer[80] = "?";

        if (msg == NULL) {
            msg = luaL_typename(t->co, -1);
        }
        if (c) {
            fdp_conn_peer(c, peer, sizeof(peer));
        }
        luaL_traceback(w->L, t->co, msg, 0);
        push_oneline(w->L, lua_tostring(w->L, -1));
        fdp_log(FDP_LOG_ERROR, 0, "handler error (peer %s): %s", peer,
                lua_tostring(w->L, -1));
        lua_pop(w->L, 2);
        (void) lua_resetthread(t->co);  /* runs pending <close> */
    }
    if (t->waiting) {
        fdp_timer_stop(&w->loop, &t->timer);
        if (t->wconn) {
            t->wconn->waiter = NULL;
        }
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
    }
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        w->tasks = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    /* Keep the finished coroutine for the next connection (a new thread
     * per connection is an allocation and later a collection): its stack
     * emptied, any --timeout hook removed. */
    if (lua_status(t->co) == LUA_OK && w->nspare < (int) FDP_NELEM(w->spare)) {
        lua_settop(t->co, 0);
        lua_sethook(t->co, NULL, 0, 0);
        w->spare[w->nspare++] = t->ref;
    } else {
        luaL_unref(w->L, LUA_REGISTRYINDEX, t->ref);
    }
    free(t);
    w->active--;
}


static void
run_again(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;

    (void) loop;
    t->waiting = 0;
    task_resume(t, 0);
}


static void
task_resume(struct fdp_task *t, int nargs)
{
    struct fdp_wctx *w = t->w;
    struct fdp_task *prev = w->current;
    int nres = 0, r, limited = w->mem_limited;

    w->current = t;
    w->mem_limited = w->mem_limit > 0;
    r = lua_resume(t->co, w->L, nargs, &nres);
    w->mem_limited = limited;
    w->current = prev;
    if (r == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (!t->waiting) {
            /* A bare coroutine.yield() in a handler: run it again on the
             * next turn of the loop, after the others. */
            fdp_timer_init(&t->timer, run_again, t);
            t->waiting = FDP_WAIT_SLEEP;
            t->wconn = NULL;
            (void) fdp_timer_start(&w->loop, &t->timer, 0);
        }
        return;
    }
    task_finish(t, r);
}


static void
wait_timeout(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;

    (void) loop;
    if (t->wconn) {
        t->wconn->waiter = NULL;
    }
    t->wconn = NULL;
    t->waiting = 0;
    t->timed_out = 1;
    task_resume(t, 0);
}


static void
conn_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_conn *c = io->data;
    struct fdp_task *t = c->waiter;

    /* Edge-triggered: remember readability even when nobody waits, or
     * the edge would be lost for a conn whose last read was short. */
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        c->rready = 1;
    }
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        c->rdhup = 1;       /* as nginx's pending_eof */
    }
    if (t == NULL) {
        return;
    }
    if (ev & (c->wait_events | EPOLLHUP | EPOLLERR)) {
        fdp_timer_stop(loop, &t->timer);
        c->waiter = NULL;
        t->wconn = NULL;
        t->waiting = 0;
        t->timed_out = 0;
        task_resume(t, 0);
    }
}


/*
 * The conn a task waits on is being closed by someone else (another
 * coroutine, or GC): resume the waiter on the next turn of the loop; its
 * retried call then sees the closed fd and returns "closed".
 */
static void
wake_waiter(struct fdp_conn *c)
{
    struct fdp_task *t = c->waiter;

    c->waiter = NULL;
    t->wconn = NULL;
    fdp_timer_stop(&t->w->loop, &t->timer);
    fdp_timer_init(&t->timer, run_again, t);
    t->waiting = FDP_WAIT_SLEEP;
    t->timed_out = 0;
    (void) fdp_timer_start(&t->w->loop, &t->timer, 0);
}


void
fdp_conn_unwatch(struct fdp_conn *c)
{
    if (c->waiter != NULL) {
        wake_waiter(c);
    }
    if (c->io.events != 0 || c->io.seq != 0) {
        (void) fdp_loop_del(&c->w->loop, &c->io);
        c->io.seq = 0;
    }
}


/* The conn's fd is being closed: stop watching it without a syscall. */
void
fdp_conn_forget(struct fdp_conn *c)
{
    if (c->waiter != NULL) {
        wake_waiter(c);
    }
    if (c->io.seq != 0) {
        fdp_loop_forget(&c->w->loop, &c->io);
        c->io.seq = 0;
    }
}


/*
 * conn:park(): hand the task's own connection back to the master, which
 * waits (epoll, up to idle_ms) for its next bytes and dispatches it again
 * through the policy. Only at a request boundary: nothing may be left
 * unread in our buffer. Pushes true, or nil and why.
 */
int
fdp_conn_park(lua_State *L, struct fdp_conn *c, uint32_t idle_ms)
{
    struct fdp_task *t = fdp_current_task(L);
    struct fdp_park_entry e;
    int fd = c->fd, r;

    if (t == NULL || t->conn != c) {
        return luaL_error(L, "conn:park() is only for the handler's own "
                          "connection, from its coroutine");
    }
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (c->rend > c->rstart) {
        lua_pushnil(L);
        lua_pushliteral(L, "unread data");
        return 2;
    }
    e.id = t->id;
    e.bytes_in = c->bytes_in;
    e.bytes_out = c->bytes_out;
    e.usec = (uint32_t) (fdp_now_us() - t->started_us);
    e.idle_ms = idle_ms;
    fdp_conn_unwatch(c);
    r = fdp_chan_send(t->w->ch, FDP_MSG_PARK, 1, &e, sizeof(e), &fd, 1);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "park: %s", strerror(-r));
        return 2;
    }
    /* The channel owns (and closes) our copy now. */
    c->fd = -1;
    t->parked = 1;
    if (t->w->ch->head != NULL) {
        (void) fdp_loop_mod(&t->w->loop, &t->w->chio, EPOLLIN | EPOLLOUT);
    }
    lua_pushboolean(L, 1);
    return 1;
}


/*
 * Wait until c's fd is ready for `events` or c->deadline passes.
 * In a task coroutine this yields (lua_yieldk) and the continuation k
 * runs later: it asks fdp_wait_timed_out(). Elsewhere (a handler's own
 * coroutine, init, top level) it blocks in poll() and returns 1 when
 * ready, 0 on timeout. Edge-triggered epoll: call only after EAGAIN.
 */
int
fdp_wait(lua_State *L, struct fdp_conn *c, uint32_t events,
         lua_KContext ctx, lua_KFunction k)
{
    struct fdp_task *t = fdp_wait_task(L);
    uint64_t now = fdp_now_ms(), dl;

    if (!c->total) {
        c->deadline = c->timeout < 0 ? 0
                      : now + (uint64_t) (c->timeout * 1000.0) + 1;
    }
    /* conn:setdeadline (or readrequest's whole-head limit) caps every
     * wait, whatever the per-wait timeout. */
    dl = c->deadline;
    if (c->limit > 0 && (dl == 0 || (uint64_t) c->limit < dl)) {
        dl = (uint64_t) c->limit;
    }
    if (t != NULL && c->w != NULL) {
        if (c->waiter != NULL) {
            return luaL_error(L, "connection already waited on by another "
                              "coroutine");
        }
        if (c->io.seq == 0) {
            c->io.fd = c->fd;
            c->io.cb = conn_io;
            c->io.data = c;
            if (fdp_loop_add(&c->w->loop, &c->io,
                             EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
                return luaL_error(L, "epoll_ctl() failed: %s",
                                  strerror(errno));
            }
        }
        c->waiter = t;
        c->wait_events = events;
        t->wconn = c;
        t->waiting = events;
        t->timed_out = 0;
        fdp_timer_init(&t->timer, wait_timeout, t);
        if (dl) {
            (void) fdp_timer_start(&c->w->loop, &t->timer,
                                   dl > now ? dl - now : 0);
        }
        return fdp_task_yield(L, t, ctx, k);
    } else {
        struct pollfd pfd;
        int ms, r;

        pfd.fd = c->fd;
        pfd.events = (short) ((events & EPOLLIN ? POLLIN : 0)
                              | (events & EPOLLOUT ? POLLOUT : 0));
        do {
            now = fdp_now_ms();
            ms = !dl ? -1 : dl > now ? (int) (dl - now) : 0;
            r = poll(&pfd, 1, ms);
        } while (r < 0 && errno == EINTR);
        if (r > 0) {
            c->rready = 1;
        }
        return r > 0;
    }
}


int
fdp_wait_timed_out(lua_State *L)
{
    int nested;
    struct fdp_task *t = task_of(L, &nested);

    return t != NULL && t->timed_out;
}


/* --timeout passed while the handler waits on I/O or sleeps: cancel it
 * alone, with the traceback of where it waited. */
static void
task_limit(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;
    struct fdp_wctx *w = t->w;
    char peer[80] = "?";

    (void) loop;
    if (t->conn) {
        fdp_conn_peer(t->conn, peer, sizeof(peer));
    }
    luaL_traceback(w->L, t->co, "handler timed out", 0);
    push_oneline(w->L, lua_tostring(w->L, -1));
    fdp_log(FDP_LOG_ERROR, 0, "handler exceeded --timeout %gs (peer %s); "
            "cancelled: %s", w->pool->timeout, peer, lua_tostring(w->L, -1));
    lua_pop(w->L, 2);
    task_finish(t, TASK_CANCELLED);
}


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


static void
cpu_hook(lua_State *L, lua_Debug *ar)
{
    (void) ar;
    lua_sethook(L, cpu_hook, LUA_MASKCOUNT, 1000);  /* again if caught */
    luaL_error(L, "handler timed out: held the CPU past --timeout");
}


/* Only the master's SIGUSR2 counts (kill() by its pid): a stray
 * `kill -USR2 <worker>` must not raise inside a handler. */
static void
on_sigusr2(int sig, siginfo_t *si, void *uc)
{
    struct fdp_wctx *w = sig_worker;

    (void) sig;
    (void) uc;
    if (w == NULL || si == NULL || si->si_code != SI_USER
        || si->si_pid != w->pool->owner) {
        return;
    }
    if (w->current != NULL) {
        lua_sethook(w->current->co, cpu_hook, LUA_MASKCOUNT, 1);
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
 * undone. Not dumpable afterwards. Returns 0 or -1 with err set.
 */
static int
drop_privileges(struct fdp_pool *p, char *err, size_t errlen)
{
    if (p->user_name == NULL) {
        return 0;
    }
    if (initgroups(p->user_name, (gid_t) p->user_gid) < 0) {
        snprintf(err, errlen, "initgroups(%s) failed: %s", p->user_name,
                 strerror(errno));
        return -1;
    }
    if (setgid((gid_t) p->user_gid) < 0 || setuid((uid_t) p->user_uid) < 0) {
        snprintf(err, errlen, "cannot switch to user %s: %s", p->user_name,
                 strerror(errno));
        return -1;
    }
    if (getuid() != (uid_t) p->user_uid || geteuid() != (uid_t) p->user_uid
        || getgid() != (gid_t) p->user_gid
        || getegid() != (gid_t) p->user_gid
        || (p->user_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))) {
        snprintf(err, errlen, "privilege drop to %s did not hold",
                 p->user_name);
        return -1;
    }
    (void) prctl(PR_SET_DUMPABLE, 0);
    return 0;
}


static void
status_unwait(struct fdp_task *t)
{
    struct fdp_task **pp = &t->w->status_waiters;

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
    struct fdp_task *t = fdp_current_task(L);
    size_t len;
    const char *text;

    (void) status;
    (void) ctx;
    if (t == NULL || t->timed_out || !lua_isstring(L, -1)) {
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
    struct fdp_task *t = fdp_current_task(L), **pp;
    uint32_t id;
    int r;

    if (t == NULL || !lua_isyieldable(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "fdpool.status() works in a handler's coroutine");
        return 2;
    }
    id = ++t->w->status_seq;
    if (id == 0) {
        id = ++t->w->status_seq;
    }
    r = fdp_chan_send(t->w->ch, FDP_MSG_STATUS_REQ, 0, &id, sizeof(id),
                      NULL, 0);
    if (r < 0) {
        return fdp_pushfail(L, -r, "status");
    }
    if (t->w->ch->head != NULL) {
        (void) fdp_loop_mod(&t->w->loop, &t->w->chio, EPOLLIN | EPOLLOUT);
    }
    t->status_id = id;
    t->status_next = NULL;
    for (pp = &t->w->status_waiters; *pp; pp = &(*pp)->status_next) {
    }
    *pp = t;
    t->waiting = FDP_WAIT_SLEEP;
    t->wconn = NULL;
    t->timed_out = 0;
    fdp_timer_init(&t->timer, wait_timeout, t);
    (void) fdp_timer_start(&t->w->loop, &t->timer, 5000);
    return lua_yieldk(L, 0, 0, status_k);
}


/* A part of a STATUS_RESP: collect; on the last, wake the waiter. */
static void
on_status_resp(struct fdp_wctx *w, const struct fdp_msg *m)
{
    uint32_t id;
    size_t n = m->h.len - 4;
    char *b;
    struct fdp_task *t;

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
        fdp_timer_stop(&w->loop, &t->timer);
        t->waiting = 0;
        t->timed_out = 0;
        lua_pushlstring(t->co, w->status_buf, w->status_len);
        w->status_len = 0;
        task_resume(t, 1);
    }
    w->status_len = 0;
}


static void
start_task(struct fdp_wctx *w, int fd, const struct fdp_conn_entry *e)
{
    uint64_t id = e->id;
    struct fdp_task *t = calloc(1, sizeof(*t));
    lua_State *co;

    if (t == NULL) {
        fdp_log(FDP_LOG_ERROR, ENOMEM, "cannot serve a connection");
        fdp_close(&fd);
        return;
    }
    if (w->nspare > 0) {
        t->ref = w->spare[--w->nspare];
        lua_rawgeti(w->L, LUA_REGISTRYINDEX, t->ref);
        co = lua_tothread(w->L, -1);
        lua_pop(w->L, 1);
    } else {
        co = lua_newthread(w->L);
        t->ref = luaL_ref(w->L, LUA_REGISTRYINDEX);
    }
    t->co = co;
    t->w = w;
    t->id = id;
    t->started_us = fdp_now_us();
    fdp_timer_init(&t->timer, wait_timeout, t);
    fdp_timer_init(&t->limit, task_limit, t);
    if (w->pool->timeout > 0) {
        (void) fdp_timer_start(&w->loop, &t->limit,
                               (uint64_t) (w->pool->timeout * 1000.0));
    }
    t->next = w->tasks;
    if (w->tasks) {
        w->tasks->prev = t;
    }
    w->tasks = t;
    w->active++;

    lua_rawgeti(co, LUA_REGISTRYINDEX, w->handler_ref);
    t->conn = fdp_conn_new(co, fd, w);
    if (e->peerlen > 0 && e->peerlen <= sizeof(e->peer)) {
        fdp_conn_set_peer(t->conn, e->peer, e->peerlen);
    }
    task_resume(t, 1);
}


static void
stop_now(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_wctx *w = timer->data;

    (void) loop;
    if (w->active > 0) {
        fdp_log(FDP_LOG_WARN, 0, "grace period over with %d connection(s) "
                "still open; exiting", w->active);
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
            /* EOF: the master is gone, and so are we. Garbage from the
             * master cannot happen; leave rather than guess. */
            fdp_msg_close_fds(&m);
            if (r != 0) {
                fdp_log(FDP_LOG_ERROR, r < 0 ? -r : 0, "bad message from "
                        "the master; exiting");
            }
            _exit(r == 0 ? 0 : 1);
        }
        switch (m.h.type) {
        case FDP_MSG_CONN:
            for (i = 0; i < m.h.count; i++) {
                int fd = m.fds[i];

                m.fds[i] = -1;
                start_task(w, fd, &m.u.conn[i]);
            }
            break;
        case FDP_MSG_STATUS_RESP:
            on_status_resp(w, &m);
            break;
        case FDP_MSG_STOP:
            w->stopping = 1;
            if (w->active == 0) {
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
 * The worker cannot serve: log the whole message (a traceback folded into
 * one line), tell the master the first line, and leave.
 */
static void
fail(struct fdp_wctx *w, const char *msg)
{
    const char *nl = strchr(msg, '\n');
    size_t n = nl ? (size_t) (nl - msg) : strlen(msg);

    if (nl != NULL && w->L != NULL) {
        push_oneline(w->L, msg);
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
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL) {
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
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
    fdp_worker_register(L, w);
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
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "fdpool.worker");
    lua_setfield(L, -2, "worker");
    lua_pop(L, 1);
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
            rb->max_head = mh > 0 && mh < 4294967295.0 ? (uint32_t) mh : 0;
            rb->head_ms = ht > 0 && ht < 4294967.0
                          ? (uint32_t) (ht * 1000.0) : 0;
        }
    }
    lua_settop(L, top);
}


/* Load the handler script into a fresh state (arg and ... as lua5.4
 * gives them) and leave its result on the stack. 0 or -1, message on top. */
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
        return -1;
    }
    for (i = 0; i < p->nargs; i++) {
        lua_pushstring(L, p->args[i]);
    }
    if (lua_pcall(L, p->nargs, 1, -(p->nargs + 2)) != LUA_OK) {
        return -1;
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

    if (nsize > old && w->mem_limited
        && w->mem_used + (nsize - old) > w->mem_limit) {
        return NULL;
    }
    np = w->mem_inner(w->mem_inner_ud, ptr, osize, nsize);
    if (np != NULL || nsize == 0) {
        w->mem_used = w->mem_used - old + nsize;
    }
    return np;
}


static void
memory_limit(struct fdp_wctx *w)
{
    lua_State *L = w->L;

    if (w->pool->max_memory == 0) {
        return;
    }
    w->mem_limit = (size_t) w->pool->max_memory;
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


void
fdp_worker_main(struct fdp_pool *p, int idx)
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
    w.idx = p->workers[idx].slot.id - 1;
    w.ch = &p->workers[idx].ch;
    snprintf(tag, sizeof(tag), "worker %d", w.idx + 1);
    fdp_log_set_tag(tag);

    {
        char err[256];

        if (drop_privileges(p, err, sizeof(err)) < 0) {
            fail(&w, err);
        }
    }
    /* Die with the master: the signal (set after the privilege drop,
     * which clears it), and the channel EOF. The getppid() check closes
     * the race with a master that died first. */
    (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != p->owner) {
        _exit(1);
    }
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
    sig_worker = &w;
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
    (void) sigprocmask(SIG_SETMASK, &p->oldmask, NULL);
    stdin_devnull(&w);

    if (fdp_loop_init(&w.loop) < 0) {
        fail(&w, "epoll_create1() failed");
    }
    fdp_timer_init(&w.done_timer, done_timer_cb, &w);
    (void) fdp_set_nonblock(w.ch->fd, 1);
    w.chio.fd = w.ch->fd;
    w.chio.cb = channel_io;
    w.chio.data = &w;
    if (fdp_loop_add(&w.loop, &w.chio, EPOLLIN) < 0) {
        fail(&w, "epoll_ctl() failed on the channel");
    }

    if (p->script) {
        L = luaL_newstate();
        if (L == NULL) {
            fail(&w, "cannot create a Lua state");
        }
        w.L = L;
        memory_limit(&w);
        luaL_openlibs(L);
        module_set_worker(L, &w);
        install_coroutine_wrappers(L);
        w.mem_limited = w.mem_limit > 0;
        r = load_script(L, p);
        w.mem_limited = 0;
        if (r < 0) {
            fail(&w, lua_tostring(L, -1));
        }
    } else {
        L = p->L;
        w.L = L;
        memory_limit(&w);
        module_set_worker(L, &w);
        install_coroutine_wrappers(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->handler_ref);
    }

    /* The handler: a function, or {handle = fn, init = fn}. */
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "init");
        if (!lua_isnil(L, -1)) {
            if (!lua_isfunction(L, -1)) {
                fail(&w, "the handler table's 'init' is not a function");
            }
            lua_pushcfunction(L, msgh);
            lua_insert(L, -2);
            lua_getfield(L, LUA_REGISTRYINDEX, "fdpool.worker");
            w.mem_limited = w.mem_limit > 0;
            r = lua_pcall(L, 1, 0, -3);
            w.mem_limited = 0;
            if (r != LUA_OK) {
                lua_pushfstring(L, "init failed: %s", lua_tostring(L, -1));
                fail(&w, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
        }
        lua_getfield(L, -1, "handle");
        lua_remove(L, -2);
    }
    if (!lua_isfunction(L, -1)) {
        lua_pushfstring(L, "%s must return a function(conn) or a table "
                        "{handle = function(conn) ... end} (got %s)",
                        p->script ? p->script : "the handler",
                        luaL_typename(L, -1));
        fail(&w, lua_tostring(L, -1));
    }
    ready_body(L, &rb);
    w.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    r = fdp_chan_send(w.ch, FDP_MSG_READY, 0, &rb, sizeof(rb), NULL, 0);
    if (r < 0) {
        _exit(1);
    }
    for (;;) {
        r = fdp_loop_run_once(&w.loop, -1);
        if (r < 0) {
            fdp_log(FDP_LOG_ERROR, -r, "epoll_wait() failed");
            worker_exit(&w, 1);
        }
        maybe_flush_done(&w);
        if (sig_reopen) {
            sig_reopen = 0;
            fdp_log_reopen();
        }
        if (w.stopping && w.active == 0) {
            worker_exit(&w, 0);
        }
    }
}
