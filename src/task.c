/*
 * task.c - the worker's coroutine scheduler (see task.h): tasks, their
 * waits on waitables (edge-triggered epoll through loop.c, or poll()
 * where no yield is possible), sleeps, the --timeout cancel, and the
 * coroutine wrappers that let a handler's own coroutines wait too. Owns
 * the tasks' coroutines; the owner (worker.c) owns what they serve.
 */
#include "fdp.h"
#include "task.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <lauxlib.h>
#include <signal.h>

#define TASK_CANCELLED FDP_TASK_CANCELLED
#define TASK_OPS(t) ((t)->ops != NULL ? (t)->ops : (t)->s->ops)

static void task_resume(struct fdp_task *t, int nargs);
static void waitlist_leave(struct fdp_task *t);


/* The registry key under which a Lua state keeps its scheduler. */
static const char sched_key = 's';

/* The scheduler registered last: a worker registers one, for its life.
 * task_of's fast path (a registry lookup per call was ~4 % of a
 * keep-alive request): a task whose coroutine is L is L's task whatever
 * state registered it, so no check that L belongs to it is needed. */
static struct fdp_sched *last_sched;


void
fdp_sched_register(lua_State *L, struct fdp_sched *s)
{
    last_sched = s;
    lua_pushlightuserdata(L, s);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sched_key);
}


struct fdp_sched *
fdp_sched_of(lua_State *L)
{
    struct fdp_sched *s;

    lua_rawgetp(L, LUA_REGISTRYINDEX, &sched_key);
    s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
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
    struct fdp_sched *s;
    struct fdp_task *t;
    int fwd;

    s = last_sched;
    if (s != NULL && (t = s->current) != NULL && t->co == L) {
        if (nested) {
            *nested = 0;
        }
        return t;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sched_key);
    s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (s == NULL || (t = s->current) == NULL) {
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
 * to the loop; a nested one yields the I/O marker, which the
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
void
fdp_sched_install_wrappers(lua_State *L)
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


/* Replace "\n\t" in a traceback with " | " so the log keeps one line per
 * event. Pushes the result. */
void
fdp_push_oneline(lua_State *L, const char *s)
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


/* t no longer waits on its waitable (timed out, cancelled, finished). */
static void
waitable_drop(struct fdp_task *t)
{
    struct fdp_waitable *wt = t->wobj;

    if (wt != NULL) {
        if (wt->waiter == t) {
            wt->waiter = NULL;
        }
        if (wt->writer == t) {
            wt->writer = NULL;
        }
    }
    t->wobj = NULL;
}


/* A coroutine for a task: a spare one, or a new one; *ref: its registry
 * reference. */
static lua_State *
thread_take(struct fdp_sched *s, int *ref)
{
    lua_State *co;

    if (s->nspare > 0) {
        *ref = s->spare[--s->nspare];
        lua_rawgeti(s->L, LUA_REGISTRYINDEX, *ref);
        co = lua_tothread(s->L, -1);
        lua_pop(s->L, 1);
    } else {
        co = lua_newthread(s->L);
        *ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
    }
    return co;
}


/* A dormant task gets a coroutine again, its root function and argument
 * pushed (not started). */
static void
task_revive(struct fdp_task *t)
{
    struct fdp_sched *s = t->s;
    lua_State *co = thread_take(s, &t->ref);

    t->co = co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->dfn);
    lua_rawgeti(co, LUA_REGISTRYINDEX, t->aref);
}


/* t's coroutine, stopped or ended, goes to the spares (or the collector:
 * 1); t is dormant. */
static int
task_let_go(struct fdp_task *t)
{
    struct fdp_sched *s = t->s;
    lua_State *co = t->co;

    t->co = NULL;
    if (lua_status(co) == LUA_OK && s->nspare < (int) FDP_NELEM(s->spare)) {
        lua_settop(co, 0);
        s->spare[s->nspare++] = t->ref;
        t->ref = LUA_NOREF;
        return 0;
    }
    luaL_unref(s->L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
    return 1;
}


/*
 * t's coroutine waits where fdp_task_may_sleep allowed: keep its root
 * function (level 1 of the coroutine, nothing under it; the same for
 * every dormant task, s->dfn) and that function's first argument (in
 * t->aref, kept until the task ends), and let the coroutine go. Its wait (waiter, deadline) stays
 * registered as it is. 1 when the coroutine went to the collector, 0
 * to the spares or when it stays.
 */
static int
task_sleep(struct fdp_task *t)
{
    struct fdp_sched *s = t->s;
    lua_State *co = t->co, *L = s->L;
    lua_Debug ar;
    int same;

    if (t->kids != NULL || t->wlist != NULL || lua_gethook(co) != NULL
        || !lua_getstack(co, 1, &ar) || lua_getstack(co, 2, &ar)
        || !lua_getstack(co, 1, &ar) || !lua_checkstack(co, 3)
        || !lua_checkstack(L, 3)) {
        return 0;
    }
    (void) lua_getinfo(co, "f", &ar);
    if (lua_getlocal(co, &ar, 1) == NULL) {
        lua_pop(co, 1);
        return 0;
    }
    lua_xmove(co, L, 2);
    if (s->dfn == 0) {
        lua_pushvalue(L, -2);
        s->dfn = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->dfn);
    same = lua_rawequal(L, -1, -3);
    lua_pop(L, 1);
    if (!same) {
        lua_pop(L, 2);
        return 0;
    }
    if (t->aref == 0) {
        t->aref = luaL_ref(L, LUA_REGISTRYINDEX);       /* the argument */
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    (void) lua_resetthread(co);
    return task_let_go(t);
}


static void
drowsy_unlink(struct fdp_task *t)
{
    if (t->dprev) {
        t->dprev->dnext = t->dnext;
    } else {
        t->s->drowsy = t->dnext;
    }
    if (t->dnext) {
        t->dnext->dprev = t->dprev;
    }
    t->dprev = t->dnext = NULL;
}


static int
drowsy_listed(const struct fdp_task *t)
{
    return t->dprev != NULL || t->s->drowsy == t;
}


/* Still in the wait fdp_task_may_sleep allowed (not woken since). */
static int
drowsy_waits(const struct fdp_task *t)
{
    return t->co != NULL && t->dwt != NULL && t->waiting
           && t->wobj == t->dwt && t->dwt->waiter == t;
}


/* Every FDP_SLEEP_MS while some task is drowsy: the ones in their wait
 * for FDP_SLEEP_MS or more sleep; the ones woken since leave the list. */
static void
sweep_fire(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_sched *s = timer->data;
    struct fdp_task *t = s->drowsy, *next;
    int n = 0, soon = 0;

    for (; t != NULL; t = next) {
        next = t->dnext;
        if (!drowsy_waits(t)) {
            drowsy_unlink(t);
        } else if ((uint32_t) loop->now - t->dsince
                   >= (t->dsoon ? FDP_SOON_MS : FDP_SLEEP_MS)) {
            char b;

            /* Bytes already in (a busy worker has not reached its event
             * yet): it runs soon, with its coroutine. */
            if (recv(t->dwt->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
                continue;
            }
            drowsy_unlink(t);
            n += task_sleep(t);
        } else {
            soon |= t->dsoon;
        }
    }
    /* The coroutines past the spares are garbage now, and an idle
     * worker allocates nothing that would drive the collector to them:
     * step it as if their memory (about 1 KiB each) had been allocated. */
    if (n > 0) {
        (void) lua_gc(s->L, LUA_GCSTEP, n);
    }
    if (s->drowsy != NULL) {
        (void) fdp_timer_start(loop, &s->sweep,
                               soon ? FDP_SOON_MS : FDP_SLEEP_MS);
    }
}


/* t yielded in a wait where it may sleep: to the sweep's list. */
static void
drowsy(struct fdp_task *t)
{
    struct fdp_sched *s = t->s;

    t->dsince = (uint32_t) s->loop->now;
    if (drowsy_listed(t)) {
        return;
    }
    t->dprev = NULL;
    t->dnext = s->drowsy;
    if (s->drowsy) {
        s->drowsy->dprev = t;
    }
    s->drowsy = t;
    if (s->sweep.cb == NULL) {
        fdp_timer_init(&s->sweep, sweep_fire, s);
    }
    if (!fdp_timer_active(&s->sweep)) {
        (void) fdp_timer_start(s->loop, &s->sweep,
                               t->dsoon ? FDP_SOON_MS : FDP_SLEEP_MS);
    } else if (t->dsoon && s->sweep.when > s->loop->now + FDP_SOON_MS) {
        /* earlier, never later (arrivals must not put it off) */
        fdp_timer_stop(s->loop, &s->sweep);
        (void) fdp_timer_start(s->loop, &s->sweep, FDP_SOON_MS);
    }
}


void
fdp_task_may_sleep(lua_State *L, struct fdp_waitable *wt, int soon)
{
    struct fdp_task *t = task_of(L, NULL);

    if (t != NULL) {
        t->dwt = wt;
        t->dsoon = wt != NULL && soon;
    }
}


/*
 * The handler is over: it returned (LUA_OK), raised (its error and
 * traceback are logged), or was cancelled by --timeout while waiting
 * (TASK_CANCELLED: logged by the caller). Unlinks the task, keeps its
 * coroutine for reuse, and hands it to the owner's finish.
 */
static void
task_finish(struct fdp_task *t, int status)
{
    struct fdp_sched *s = t->s;
    const struct fdp_task_ops *ops = TASK_OPS(t);
    int logged = 0, aref = t->aref;

    if (t->co == NULL) {
        task_revive(t);                 /* ended while dormant */
    }
    t->dret = 0;
    if (drowsy_listed(t)) {
        drowsy_unlink(t);
    }
    fdp_timer_stop(s->loop, &t->limit);
    fdp_timer_stop(s->loop, &t->slow);
    fdp_timer_stop(s->loop, &t->iot);
    t->iot_dl = 0;
    if (ops->ended != NULL) {
        logged = ops->ended(t, status);
    }
    if (status == TASK_CANCELLED) {
        (void) lua_resetthread(t->co);  /* runs pending <close> */
    } else if (logged) {
        (void) lua_resetthread(t->co);
    } else if (status != LUA_OK) {
        const char *msg = lua_tostring(t->co, -1);
        char peer[80] = "?";

        if (msg == NULL) {
            msg = luaL_typename(t->co, -1);
        }
        ops->peer(t, peer, sizeof(peer));
        luaL_traceback(s->L, t->co, msg, 0);
        fdp_push_oneline(s->L, lua_tostring(s->L, -1));
        fdp_log(FDP_LOG_ERROR, 0, "handler error (peer %s): %s", peer,
                lua_tostring(s->L, -1));
        lua_pop(s->L, 2);
        (void) lua_resetthread(t->co);  /* runs pending <close> */
    }
    if (t->waiting) {
        fdp_timer_stop(s->loop, &t->timer);
        waitable_drop(t);
    }
    waitlist_leave(t);
    /* Its kids end with it (the running one, if any, is let go). */
    while (t->kids != NULL) {
        struct fdp_task *k = t->kids;

        fdp_task_set_parent(k, NULL);
        if (k != s->current) {
            task_finish(k, TASK_CANCELLED);
        }
    }
    fdp_task_set_parent(t, NULL);
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        s->tasks = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    /* Keep the finished coroutine for the next task (a new thread per
     * connection is an allocation and later a collection): its stack
     * emptied, any --timeout hook removed. */
    if (lua_status(t->co) == LUA_OK && s->nspare < (int) FDP_NELEM(s->spare)) {
        lua_settop(t->co, 0);
        lua_sethook(t->co, NULL, 0, 0);
        s->spare[s->nspare++] = t->ref;
    } else {
        luaL_unref(s->L, LUA_REGISTRYINDEX, t->ref);
    }
    s->active--;
    ops->finish(t);
    if (aref != 0) {                    /* t is the owner's again */
        luaL_unref(s->L, LUA_REGISTRYINDEX, aref);
    }
}


static void
run_again(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;
    int n = t->nresume;

    (void) loop;
    t->waiting = 0;
    t->nresume = 0;
    task_resume(t, n);
}


static void
task_resume(struct fdp_task *t, int nargs)
{
    struct fdp_sched *s = t->s;
    struct fdp_task *prev = s->current;
    int nres = 0, r, limited = s->mem_limited;

    t->iot_dl = 0;              /* whatever wait it was in is over */
    if (t->co == NULL) {
        task_revive(t);                 /* dormant: the root again */
        nargs = 1;
    }
    t->dwt = NULL;
    s->current = t;
    s->mem_limited = s->limit_mem;
    r = lua_resume(t->co, s->L, nargs, &nres);
    s->mem_limited = limited;
    s->current = prev;
    if (r == LUA_OK && t->dret) {
        /* Its root returned over a registered wait
         * (fdp_wait_dormant): the coroutine ended the plain way, and
         * is reusable as it is (no reset, its stack kept). */
        t->dret = 0;
        if (lua_gethook(t->co) != NULL) {
            lua_sethook(t->co, NULL, 0, 0);
        }
        (void) task_let_go(t);
        return;
    }
    if (r == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (drowsy_waits(t)) {
            drowsy(t);
            return;
        }
        if (!t->waiting) {
            /* A bare coroutine.yield() in a handler: run it again on the
             * next turn of the loop, after the others. */
            fdp_timer_init(&t->timer, run_again, t);
            t->waiting = FDP_WAIT_SLEEP;
            t->wobj = NULL;
            (void) fdp_timer_start(s->loop, &t->timer, 0);
        }
        return;
    }
    task_finish(t, r);
}


void
fdp_task_resume(struct fdp_task *t, int nargs)
{
    task_resume(t, nargs);
}


static void
wait_timeout(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;

    (void) loop;
    waitable_drop(t);
    waitlist_leave(t);
    t->waiting = 0;
    t->timed_out = 1;
    task_resume(t, 0);
}


/*
 * fdp_wait's deadline. The timer is not stopped when a wait ends (a
 * keep-alive connection waits once per request: a stop and a start in
 * the loop's heap each time, which at 1000 connections walk the heap
 * through cold timers); the next wait keeps it when it fires no later
 * than the new deadline (as nginx's lazy timer updates). So it may fire
 * early, or after the wait: then it re-arms for what is left, or does
 * nothing.
 */
static void
iot_fire(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;

    if (t->iot_dl == 0 || t->waiting == 0 || t->waiting == FDP_WAIT_SLEEP) {
        return;
    }
    if (loop->now < t->iot_dl) {
        (void) fdp_timer_start(loop, &t->iot, t->iot_dl - loop->now);
        return;
    }
    wait_timeout(loop, &t->timer);
}


/* --timeout passed while the handler waits on I/O or sleeps: cancel it
 * alone, with the traceback of where it waited. */
static void
task_limit(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;
    struct fdp_sched *s = t->s;
    char peer[80] = "?";

    (void) loop;
    TASK_OPS(t)->peer(t, peer, sizeof(peer));
    if (t->co == NULL) {                /* dormant: no stack to show */
        task_revive(t);
        lua_pushliteral(s->L, "handler timed out between requests "
                        "(an idle keep-alive connection)");
    } else {
        luaL_traceback(s->L, t->co, "handler timed out", 0);
    }
    fdp_push_oneline(s->L, lua_tostring(s->L, -1));
    fdp_log(FDP_LOG_ERROR, 0, "handler exceeded --timeout %gs (peer %s); "
            "cancelled: %s", s->timeout, peer, lua_tostring(s->L, -1));
    lua_pop(s->L, 2);
    task_finish(t, TASK_CANCELLED);
}


/*
 * The --slow line for task t, once: where L is (t's coroutine, suspended,
 * or the one running when called from the hook), how long the handler
 * has run, its peer and request. The text is built on S's stack (the
 * scheduler's state, or L itself when it runs). Written to --slow-log
 * (one write(2), so lines from several workers never interleave) or,
 * without one, to the log as a warning. The handler goes on.
 */
static void
slow_log(struct fdp_task *t, lua_State *S, lua_State *L, const char *how)
{
    struct fdp_sched *s = t->s;
    char peer[80] = "?", req[96] = "", head[256], line[8192];
    double secs = (double) (fdp_now_ms() - t->start_ms) / 1000.0;
    const char *tb;

    if (t->slow_logged) {
        return;
    }
    t->slow_logged = 1;
    TASK_OPS(t)->peer(t, peer, sizeof(peer));
    if (TASK_OPS(t)->request != NULL) {
        TASK_OPS(t)->request(t, req, sizeof(req));
    }
    snprintf(head, sizeof(head), "slow handler (peer %s%s%s, running %.2f "
             "s, %s)", peer, req[0] ? ", " : "", req, secs, how);
    if (!lua_checkstack(S, 3)) {
        return;
    }
    luaL_traceback(S, L, NULL, 0);
    fdp_push_oneline(S, lua_tostring(S, -1));
    tb = lua_tostring(S, -1);
    if (s->slow_fd < 0) {
        fdp_log(FDP_LOG_WARN, 0, "%s: %s", head, tb);
    } else {
        struct timespec ts;
        struct tm tm;
        size_t n;
        int k;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ", &tm);
        k = snprintf(line + n, sizeof(line) - n - 1, " %s[%ld]: %s: %s",
                     s->slow_who, (long) getpid(), head, tb);
        n += k > 0 ? (size_t) k : 0;
        if (n > sizeof(line) - 2) {
            n = sizeof(line) - 2;
        }
        line[n++] = '\n';
        while (write(s->slow_fd, line, n) < 0 && errno == EINTR) {
        }
    }
    lua_pop(S, 2);
}


/* --slow passed while the handler waits (the loop runs, so it is not on
 * the CPU): the traceback of its suspended coroutine. */
static void
task_slow(struct fdp_loop *loop, struct fdp_timer *timer)
{
    struct fdp_task *t = timer->data;

    (void) loop;
    if (t->co != NULL) {                /* dormant: between requests */
        slow_log(t, t->s->L, t->co, "waiting");
    }
}


/* The count hook fdp_sched_slow_signal set: runs in the coroutine that
 * holds the CPU, logs where, and goes. */
static void
slow_hook(lua_State *L, lua_Debug *ar)
{
    struct fdp_task *t = task_of(L, NULL);

    (void) ar;
    lua_sethook(L, NULL, 0, 0);
    if (t != NULL && t->start_ms != 0) {
        slow_log(t, L, L, "on the CPU");
    }
}


/* In the signal handler: only reads and lua_sethook (both safe there);
 * fdp_now_ms is clock_gettime. */
void
fdp_sched_slow_signal(struct fdp_sched *s)
{
    struct fdp_task *t = s->current;

    if (t != NULL && !t->slow_logged && t->start_ms != 0 && s->slow > 0
        && fdp_now_ms() - t->start_ms >= (uint64_t) (s->slow * 1000.0)
        && lua_gethook(t->co) == NULL) {
        lua_sethook(t->co, slow_hook, LUA_MASKCOUNT, 1);
    }
}


/*
 * --slow counts from a request's start where the handler says where
 * requests are (fdpool.http's conn:readrequest): begin = 0 as it starts
 * reading a request (an idle keep-alive connection is not slow), 1 when
 * the head is read (the clock starts again, and the request may be
 * logged once). Other handlers count from the connection's start.
 */
void
fdp_task_request(lua_State *L, int begin)
{
    int nested;
    struct fdp_task *t = task_of(L, &nested);

    if (t == NULL || t->s->slow <= 0) {
        return;
    }
    if (begin) {
        t->start_ms = fdp_now_ms();
        t->slow_logged = 0;
        (void) fdp_timer_start(t->s->loop, &t->slow,
                               (uint64_t) (t->s->slow * 1000.0));
    } else {
        t->start_ms = 0;
        fdp_timer_stop(t->s->loop, &t->slow);
    }
}


void
fdp_task_start(struct fdp_sched *s, struct fdp_task *t)
{
    lua_State *co;

    co = thread_take(s, &t->ref);
    t->co = co;
    t->s = s;
    fdp_timer_init(&t->timer, wait_timeout, t);
    fdp_timer_init(&t->limit, task_limit, t);
    fdp_timer_init(&t->slow, task_slow, t);
    fdp_timer_init(&t->iot, iot_fire, t);
    t->iot_dl = 0;
    if (s->timeout > 0) {
        (void) fdp_timer_start(s->loop, &t->limit,
                               (uint64_t) (s->timeout * 1000.0));
    }
    t->start_ms = fdp_now_ms();
    t->slow_logged = 0;
    if (s->slow > 0) {
        (void) fdp_timer_start(s->loop, &t->slow,
                               (uint64_t) (s->slow * 1000.0));
    }
    t->next = s->tasks;
    if (s->tasks) {
        s->tasks->prev = t;
    }
    s->tasks = t;
    s->active++;
}


void
fdp_task_suspend(struct fdp_task *t, uint64_t ms)
{
    t->waiting = FDP_WAIT_SLEEP;
    t->wobj = NULL;
    t->timed_out = 0;
    fdp_timer_init(&t->timer, wait_timeout, t);
    if (ms != FDP_FOREVER) {
        (void) fdp_timer_start(t->s->loop, &t->timer, ms);
    }
}


void
fdp_task_wake(struct fdp_task *t, int nargs)
{
    fdp_timer_stop(t->s->loop, &t->timer);
    t->waiting = 0;
    t->timed_out = 0;
    task_resume(t, nargs);
}


static void wake_writer(struct fdp_waitable *wt);


static void
waitable_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_waitable *wt = io->data;
    struct fdp_task *t = wt->waiter;

    /* Edge-triggered: remember readability even when nobody waits, or
     * the edge would be lost for a conn whose last read was short. */
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        wt->rready = 1;
    }
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        wt->rdhup = 1;      /* as nginx's pending_eof */
    }
    if (wt->writer != NULL && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
        if (t == NULL || !(ev & (wt->events | EPOLLHUP | EPOLLERR))) {
            struct fdp_task *w = wt->writer;

            fdp_timer_stop(loop, &w->timer);
            wt->writer = NULL;
            w->wobj = NULL;
            w->waiting = 0;
            w->timed_out = 0;
            task_resume(w, 0);
            return;
        }
        /* The reader runs now; the writer on the next turn (wt may be
         * gone once the reader has run). */
        wake_writer(wt);
    }
    if (t == NULL) {
        return;
    }
    if (ev & (wt->events | EPOLLHUP | EPOLLERR)) {
        fdp_timer_stop(loop, &t->timer);
        wt->waiter = NULL;
        t->wobj = NULL;
        t->waiting = 0;
        t->timed_out = 0;
        task_resume(t, 0);
    }
}


/*
 * The waitable a task waits on is being closed by someone else (another
 * coroutine, or GC): resume the waiter on the next turn of the loop; its
 * retried call then sees the closed fd and returns "closed".
 */
static void
wake_task(struct fdp_task *t)
{
    t->wobj = NULL;
    fdp_timer_stop(t->s->loop, &t->timer);
    fdp_timer_init(&t->timer, run_again, t);
    t->waiting = FDP_WAIT_SLEEP;
    t->timed_out = 0;
    (void) fdp_timer_start(t->s->loop, &t->timer, 0);
}


static void
wake_writer(struct fdp_waitable *wt)
{
    struct fdp_task *t = wt->writer;

    wt->writer = NULL;
    wake_task(t);
}


static void
wake_waiter(struct fdp_waitable *wt)
{
    struct fdp_task *t = wt->waiter;

    wt->waiter = NULL;
    wake_task(t);
    if (wt->writer != NULL) {
        wake_writer(wt);
    }
}


void
fdp_waitable_unwatch(struct fdp_waitable *wt)
{
    if (wt->waiter != NULL || wt->writer != NULL) {
        wake_waiter(wt);
    }
    if (wt->io.events != 0 || wt->io.seq != 0) {
        (void) fdp_loop_del(wt->s->loop, &wt->io);
        wt->io.seq = 0;
    }
}


void
fdp_waitable_forget(struct fdp_waitable *wt)
{
    if (wt->waiter != NULL || wt->writer != NULL) {
        wake_waiter(wt);
    }
    if (wt->io.seq != 0) {
        fdp_loop_forget(wt->s->loop, &wt->io);
        wt->io.seq = 0;
    }
}


/* fdp_wait's registration of t's wait (the waiter or writer slot, the
 * fd's watch, the deadline), without the yield: a luaL_error when
 * another coroutine waits there or epoll refuses. */
static void
wait_register(lua_State *L, struct fdp_task *t, struct fdp_waitable *wt,
              int fd, uint32_t events, uint64_t dl)
{
    struct fdp_task **slot = events == EPOLLOUT ? &wt->writer : &wt->waiter;

    if (*slot != NULL) {
        (void) luaL_error(L, "connection already waited on by another "
                          "coroutine");
        return;
    }
    if (wt->io.seq == 0) {
        wt->io.fd = fd;
        wt->io.cb = waitable_io;
        wt->io.data = wt;
        if (fdp_loop_add(wt->s->loop, &wt->io,
                         EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
            (void) luaL_error(L, "epoll_ctl() failed: %s", strerror(errno));
            return;
        }
    }
    *slot = t;
    if (slot == &wt->waiter) {
        wt->events = events;
    }
    t->wobj = wt;
    t->waiting = events;
    t->timed_out = 0;
    t->iot_dl = dl;
    if (dl && !(fdp_timer_active(&t->iot) && t->iot.when <= dl)) {
        uint64_t now = fdp_now_ms();

        (void) fdp_timer_start(wt->s->loop, &t->iot, dl > now ? dl - now : 0);
    }
}


int
fdp_wait(lua_State *L, struct fdp_waitable *wt, int fd, uint32_t events,
         uint64_t dl, lua_KContext ctx, lua_KFunction k)
{
    struct fdp_task *t = fdp_wait_task(L);
    uint64_t now;

    if (t != NULL && wt->s != NULL) {
        wait_register(L, t, wt, fd, events, dl);
        return fdp_task_yield(L, t, ctx, k);
    } else {
        struct pollfd pfd;
        int ms, r;

        pfd.fd = fd;
        pfd.events = (short) ((events & EPOLLIN ? POLLIN : 0)
                              | (events & EPOLLOUT ? POLLOUT : 0));
        do {
            now = fdp_now_ms();
            ms = !dl ? -1 : dl > now ? (int) (dl - now) : 0;
            r = poll(&pfd, 1, ms);
        } while (r < 0 && errno == EINTR);
        if (r > 0) {
            wt->rready = 1;
        }
        return r > 0;
    }
}


/* FDP_DRET_MIN, or FDPOOL_DRET_MIN from the environment (read once):
 * a negative value is off. */
static int
dret_min(void)
{
    static int min = -2;

    if (min == -2) {
        const char *e = getenv("FDPOOL_DRET_MIN");
        char *end;
        long v;

        min = FDP_DRET_MIN;
        if (e != NULL && *e != '\0') {
            v = strtol(e, &end, 10);
            if (*end == '\0' && v >= -1 && v <= 1000000) {
                min = (int) v;
            }
        }
    }
    return min;
}


int
fdp_wait_dormant(lua_State *L, struct fdp_waitable *wt, int fd,
                 uint32_t events, uint64_t dl, int arg)
{
    struct fdp_task *t = task_of(L, NULL);
    int min = dret_min();

    if (t == NULL || t->co != L || min < 0 || t->s->active <= min
        || t->s->dfn == 0 || wt->s == NULL || t->kids != NULL
        || t->wlist != NULL || lua_gethook(L) != NULL) {
        return 0;
    }
    if (t->aref == 0) {
        lua_pushvalue(L, arg);
        t->aref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    wait_register(L, t, wt, fd, events, dl);
    t->dret = 1;
    return 1;
}


int
fdp_sched_root(lua_State *L, int idx)
{
    struct fdp_task *t = task_of(L, NULL);
    struct fdp_sched *s = t != NULL ? t->s : NULL;
    int same;

    if (s == NULL || !lua_checkstack(L, 2)) {
        return 0;
    }
    if (s->dfn == 0) {
        lua_pushvalue(L, idx);
        s->dfn = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->dfn);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}


int
fdp_wait_timed_out(lua_State *L)
{
    int nested;
    struct fdp_task *t = task_of(L, &nested);

    return t != NULL && t->timed_out;
}


static int
sleep_k(lua_State *L, int status, lua_KContext ctx)
{
    (void) L;
    (void) status;
    (void) ctx;
    return 0;
}


int
fdp_sleep(lua_State *L, lua_Number s)
{
    struct fdp_task *t = fdp_wait_task(L);

    if (s != s) {
        /* (NaN made the timer's milliseconds undefined: a sleep of
         * ~292 million years) */
        return luaL_argerror(L, 1, "seconds must be a number, got nan");
    }
    if (s < 0) {
        s = 0;
    }
    if (s > FDP_SLEEP_MAX) {
        s = FDP_SLEEP_MAX;                  /* (and inf) */
    }
    if (t != NULL) {
        t->waiting = FDP_WAIT_SLEEP;
        t->wobj = NULL;
        t->timed_out = 0;
        (void) fdp_timer_start(t->s->loop, &t->timer,
                               (uint64_t) (s * 1000.0 + 0.5));
        return fdp_task_yield(L, t, 0, sleep_k);
    } else {
        struct timespec ts;

        ts.tv_sec = (time_t) s;
        ts.tv_nsec = (long) ((s - (lua_Number) ts.tv_sec) * 1e9);
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
    }
    return 0;
}


/* ---- additions for threads, timers, queues (lthread.c) -------------- */

static void
waitlist_leave(struct fdp_task *t)
{
    struct fdp_waitlist *wl = t->wlist;

    if (wl == NULL) {
        return;
    }
    if (t->wprev) {
        t->wprev->wnext = t->wnext;
    } else {
        wl->head = t->wnext;
    }
    if (t->wnext) {
        t->wnext->wprev = t->wprev;
    } else {
        wl->tail = t->wprev;
    }
    wl->n--;
    t->wlist = NULL;
    t->wprev = t->wnext = NULL;
}


void
fdp_task_resume_soon(struct fdp_task *t, int nargs)
{
    waitlist_leave(t);
    waitable_drop(t);
    fdp_timer_stop(t->s->loop, &t->timer);
    fdp_timer_init(&t->timer, run_again, t);
    t->waiting = FDP_WAIT_SLEEP;
    t->timed_out = 0;
    t->nresume = nargs;
    (void) fdp_timer_start(t->s->loop, &t->timer, 0);
}


int
fdp_task_cancel(struct fdp_task *t)
{
    if (t == t->s->current) {
        return -EBUSY;
    }
    task_finish(t, TASK_CANCELLED);
    return 0;
}


void
fdp_task_set_parent(struct fdp_task *t, struct fdp_task *parent)
{
    if (t->parent != NULL) {
        if (t->kprev) {
            t->kprev->knext = t->knext;
        } else {
            t->parent->kids = t->knext;
        }
        if (t->knext) {
            t->knext->kprev = t->kprev;
        }
    }
    t->parent = parent;
    t->kprev = NULL;
    t->knext = NULL;
    if (parent != NULL) {
        t->knext = parent->kids;
        if (parent->kids) {
            parent->kids->kprev = t;
        }
        parent->kids = t;
    }
}


int
fdp_waitlist_wait(lua_State *L, struct fdp_task *t, struct fdp_waitlist *wl,
                  uint64_t ms, lua_KContext ctx, lua_KFunction k)
{
    fdp_task_suspend(t, ms);
    t->wlist = wl;
    t->wnext = NULL;
    t->wprev = wl->tail;
    if (wl->tail) {
        wl->tail->wnext = t;
    } else {
        wl->head = t;
    }
    wl->tail = t;
    wl->n++;
    return fdp_task_yield(L, t, ctx, k);
}
