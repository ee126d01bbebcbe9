/*
 * lthread.c - work beyond one request, per worker: fdpool.timer.at/every,
 * fdpool.spawn/wait/kill (threads), fdpool.queue, fdpool.semaphore, and
 * the stop notice's Lua side (exiting, on_stop). Each timer and thread is
 * a task of task.c's scheduler with its own ops; none of them serves a
 * connection, so the worker's busy accounting never counts them. Waiters
 * wait in task.c waitlists and are resumed on the next turn of the loop,
 * never inside the task that woke them.
 */
#include "fdp.h"
#include "laux.h"
#include "lthread.h"
#include "task.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define THREAD_MT   "fdpool.thread"
#define TIMER_MT    "fdpool.timer"
#define QUEUE_MT    "fdpool.queue"
#define SEMA_MT     "fdpool.semaphore"

enum { K_THREAD, K_TIMER, K_STOP };
enum { TH_RUNNING, TH_DONE, TH_FAILED, TH_KILLED };

/* What a Lua state's threads share: one per worker state. */
struct lt_state {
    int exiting;                /* the worker was told to stop */
    int nhold;                  /* on_stop callbacks still running */
    int ntimers;                /* timers not ended (pending or running) */
    int max_timers;             /* the cap on ntimers (timer.max_pending) */
};

/* A task of this file: a thread, a timer's loop, or an on_stop call. */
struct lt_task {
    struct fdp_task t;          /* first */
    struct lt_state *st;
    int kind;
    int udref;                  /* its thread/timer object, in the registry */
    void *ud;
};

struct lt_thread {
    struct lt_task *task;       /* NULL once ended */
    int state;
    struct fdp_waitlist joiners;
};

struct lt_timer {
    struct lt_task *task;       /* NULL once ended */
    double delay;
    int every;
    int cancelled;
    int fired;
    struct fdp_waitlist sleeper;    /* the timer's task between runs */
};

struct lt_queue {
    lua_Integer head, count, cap;   /* items at [head, head + count) */
    struct fdp_waitlist poppers;
};

struct lt_sema {
    lua_Integer count;
    struct fdp_waitlist waiters;
};

static const char state_key = 'T';
static const char onstop_key = 'S';
static const char timerfn_key = 'F';


static struct lt_state *
get_state(lua_State *L)
{
    struct lt_state *st;

    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) == LUA_TUSERDATA) {
        st = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return st;
    }
    lua_pop(L, 1);
    st = lua_newuserdatauv(L, sizeof(*st), 0);
    memset(st, 0, sizeof(*st));
    st->max_timers = 1024;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
    return st;
}


static struct fdp_sched *
need_sched(lua_State *L, const char *what)
{
    struct fdp_sched *s = fdp_sched_of(L);

    if (s == NULL) {
        luaL_error(L, "%s works only in a pool's worker", what);
    }
    return s;
}


/* The task a wait from L belongs to; raises where L cannot yield. */
static struct fdp_task *
need_wait_task(lua_State *L, const char *what)
{
    struct fdp_task *t = fdp_wait_task(L);

    if (t == NULL) {
        luaL_error(L, "%s would wait outside a handler, thread or timer "
                   "(init, the top level, a C call boundary)", what);
    }
    return t;
}


static double
opt_timeout(lua_State *L, int idx, uint64_t *ms)
{
    lua_Number s;

    if (lua_isnoneornil(L, idx)) {
        *ms = FDP_FOREVER;
        return -1;
    }
    s = luaL_checknumber(L, idx);
    luaL_argcheck(L, s >= 0 && s < 1e9, idx, "timeout must be 0 to 1e9 "
                  "seconds");
    *ms = (uint64_t) (s * 1000.0 + 0.5);
    return s;
}


/* ---- the tasks' ops -------------------------------------------------- */

static void
lt_peer(struct fdp_task *t, char *out, size_t n)
{
    static const char *const names[] = { "thread", "timer", "on_stop" };

    snprintf(out, n, "%s", names[((struct lt_task *) t)->kind]);
}


static void
log_error(lua_State *L, lua_State *co, const char *what)
{
    const char *msg = lua_tostring(co, -1);

    if (msg == NULL) {
        msg = luaL_typename(co, -1);
    }
    luaL_traceback(L, co, msg, 0);
    fdp_push_oneline(L, lua_tostring(L, -1));
    fdp_log(FDP_LOG_ERROR, 0, "%s error: %s", what, lua_tostring(L, -1));
    lua_pop(L, 2);
}


/* Called first when a task of ours ends (see task.h). */
static int
lt_ended(struct fdp_task *t, int status)
{
    struct lt_task *lt = (struct lt_task *) t;
    lua_State *L = t->s->L, *co = t->co;
    int logged = 0;

    if (lt->kind == K_THREAD) {
        struct lt_thread *th = lt->ud;

        lua_rawgeti(L, LUA_REGISTRYINDEX, lt->udref);
        if (status == LUA_OK) {
            int i, n = lua_gettop(co);

            if (!lua_checkstack(co, 3)) {
                lua_settop(co, 0);      /* results dropped, never overflow */
                n = 0;
            }
            lua_createtable(co, n, 1);
            for (i = 1; i <= n; i++) {
                lua_pushvalue(co, i);
                lua_rawseti(co, -2, i);
            }
            lua_pushinteger(co, n);
            lua_setfield(co, -2, "n");
            lua_xmove(co, L, 1);
            th->state = TH_DONE;
        } else if (status == FDP_TASK_CANCELLED) {
            lua_pushliteral(L, "killed");
            th->state = TH_KILLED;
        } else {
            log_error(L, co, "thread");
            logged = 1;
            lua_pushvalue(co, -1);
            lua_xmove(co, L, 1);
            th->state = TH_FAILED;
        }
        lua_setiuservalue(L, -2, 1);
        lua_pop(L, 1);
        th->task = NULL;
        while (th->joiners.head != NULL) {
            fdp_task_resume_soon(th->joiners.head, 0);
        }
    } else if (lt->kind == K_TIMER) {
        ((struct lt_timer *) lt->ud)->task = NULL;
        lt->st->ntimers--;
        if (status != LUA_OK && status != FDP_TASK_CANCELLED) {
            log_error(L, co, "timer");
            logged = 1;
        }
    } else {
        lt->st->nhold--;
        if (status != LUA_OK && status != FDP_TASK_CANCELLED) {
            log_error(L, co, "on_stop callback");
            logged = 1;
        }
    }
    if (lt->udref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, lt->udref);
        lt->udref = LUA_NOREF;
    }
    return logged;
}


static void
lt_finish(struct fdp_task *t)
{
    free(t);
}


static const struct fdp_task_ops lt_ops = { lt_peer, lt_finish, NULL,
                                            NULL, lt_ended };


/*
 * Start a task of kind `kind` running the function at L's index fidx
 * with the nargs values after it, on the next turn of the loop. The
 * object on top of L (or nil) is kept alive while it runs. Pops that
 * object. Returns the task.
 */
static struct lt_task *
start(lua_State *L, struct fdp_sched *s, int kind, int fidx, int nargs,
      void *ud, struct fdp_task *parent)
{
    struct lt_task *lt = calloc(1, sizeof(*lt));
    int i;

    if (lt == NULL) {
        luaL_error(L, "out of memory");
        return NULL;
    }
    lt->st = get_state(L);
    lt->kind = kind;
    lt->ud = ud;
    lt->udref = luaL_ref(L, LUA_REGISTRYINDEX);
    fdp_task_start(s, &lt->t);
    if (!lua_checkstack(lt->t.co, nargs + 1 + LUA_MINSTACK)) {
        fdp_task_set_parent(&lt->t, NULL);
        (void) fdp_task_cancel(&lt->t);     /* frees lt */
        luaL_error(L, "too many arguments");
        return NULL;
    }
    lt->t.ops = &lt_ops;
    /* --timeout and --slow are for handlers: a thread ends with its
     * handler, and a timer or detached thread is the script's own
     * business. */
    fdp_timer_stop(s->loop, &lt->t.limit);
    fdp_timer_stop(s->loop, &lt->t.slow);
    lt->t.start_ms = 0;
    for (i = 0; i <= nargs; i++) {
        lua_pushvalue(L, fidx + i);
    }
    lua_xmove(L, lt->t.co, nargs + 1);
    fdp_task_set_parent(&lt->t, parent);
    fdp_task_resume_soon(&lt->t, nargs);
    return lt;
}


/* ---- threads --------------------------------------------------------- */

static struct lt_thread *
check_thread(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, THREAD_MT);
}


/* fdpool.spawn(fn, ...) -> thread: fn(...) in a task of its own, from
 * the next turn of the loop; it ends with the task that spawned it
 * unless detached. */
static int
l_spawn(lua_State *L)
{
    struct fdp_sched *s = need_sched(L, "fdpool.spawn");
    int n = lua_gettop(L);
    struct lt_thread *th;

    luaL_checktype(L, 1, LUA_TFUNCTION);
    th = lua_newuserdatauv(L, sizeof(*th), 1);
    memset(th, 0, sizeof(*th));
    th->state = TH_RUNNING;
    luaL_setmetatable(L, THREAD_MT);
    lua_pushvalue(L, -1);
    th->task = start(L, s, K_THREAD, 1, n - 1, th, s->current);
    return 1;
}


static int
push_results(lua_State *L, struct lt_thread *th)
{
    lua_getiuservalue(L, 1, 1);
    if (th->state == TH_DONE) {
        int i, n;

        lua_getfield(L, -1, "n");
        n = (int) lua_tointeger(L, -1);
        lua_pop(L, 1);
        luaL_checkstack(L, n + 1, "too many results");
        lua_pushboolean(L, 1);
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, -2 - (i - 1), i);
        }
        return n + 1;
    }
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}


static int
wait_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lt_thread *th = check_thread(L, 1);

    (void) status;
    (void) ctx;
    lua_settop(L, 1);
    if (th->state == TH_RUNNING) {
        /* Woken for nothing: cannot happen, but never report results. */
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "interrupted");
        return 2;
    }
    return push_results(L, th);
}


/* fdpool.wait(thread) -> true, results... | false, err ("killed"). */
static int
l_wait(lua_State *L)
{
    struct lt_thread *th = check_thread(L, 1);
    struct fdp_task *t;

    lua_settop(L, 1);
    if (th->state != TH_RUNNING) {
        return push_results(L, th);
    }
    t = need_wait_task(L, "fdpool.wait");
    if (t == &th->task->t) {
        return luaL_error(L, "fdpool.wait: a thread cannot wait for itself");
    }
    return fdp_waitlist_wait(L, t, &th->joiners, FDP_FOREVER, 0, wait_k);
}


/* fdpool.kill(thread) -> true | nil, err. */
static int
l_kill(lua_State *L)
{
    struct lt_thread *th = check_thread(L, 1);

    if (th->state != TH_RUNNING) {
        lua_pushnil(L);
        lua_pushliteral(L, "already ended");
        return 2;
    }
    if (fdp_task_cancel(&th->task->t) < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "a thread cannot kill itself");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* thread:detach(): it no longer ends with the task that spawned it. */
static int
thread_detach(lua_State *L)
{
    struct lt_thread *th = check_thread(L, 1);

    if (th->task != NULL) {
        fdp_task_set_parent(&th->task->t, NULL);
    }
    lua_pushboolean(L, 1);
    return 1;
}


static int
thread_status(lua_State *L)
{
    static const char *const names[] = { "running", "done", "failed",
                                         "killed" };

    lua_pushstring(L, names[check_thread(L, 1)->state]);
    return 1;
}


static int
thread_tostring(lua_State *L)
{
    struct lt_thread *th = check_thread(L, 1);

    lua_pushfstring(L, "fdpool.thread (%s)", th->state == TH_RUNNING
                    ? "running" : "ended");
    return 1;
}


/* ---- timers ---------------------------------------------------------- */

static struct lt_timer *
check_timer(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, TIMER_MT);
}


static int
tsleep_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lt_timer *tm = check_timer(L, 1);

    (void) status;
    (void) ctx;
    lua_pushboolean(L, fdp_wait_timed_out(L) && !tm->cancelled
                    && !get_state(L)->exiting);
    if (lua_toboolean(L, -1)) {
        tm->fired++;
    }
    return 1;
}


/* The timer's task between runs: true when it is time to run the
 * callback, false when the timer is over (cancelled, fired once, the
 * worker exiting). */
static int
l_tsleep(lua_State *L)
{
    struct lt_timer *tm = check_timer(L, 1);
    struct fdp_task *t = fdp_wait_task(L);
    double ms = tm->delay * 1000.0 + 0.5;

    lua_settop(L, 1);
    if (t == NULL || tm->cancelled || get_state(L)->exiting
        || (tm->fired && !tm->every)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return fdp_waitlist_wait(L, t, &tm->sleeper, (uint64_t) ms, 0, tsleep_k);
}


/* A timer callback raised: log it with its traceback, as one line. */
static int
l_terror(lua_State *L)
{
    fdp_push_oneline(L, luaL_tolstring(L, 1, NULL));
    fdp_log(FDP_LOG_ERROR, 0, "timer callback error: %s",
            lua_tostring(L, -1));
    return 0;
}


/* xpcall's message handler for timer callbacks: the message with a
 * traceback (a C function, so a state without the debug library works). */
static int
l_ttraceback(lua_State *L)
{
    return fdp_errmsg(L, 1);
}


static const char timer_loop[] =
    "local tsleep, terror, traceback = ...\n"
    "local xpcall = xpcall\n"
    "return function(h, fn, ...)\n"
    "  while tsleep(h) do\n"
    "    local ok, err = xpcall(fn, traceback, ...)\n"
    "    if not ok then terror(err) end\n"
    "  end\n"
    "end\n";


static int
timer_new(lua_State *L, int every)
{
    struct fdp_sched *s = need_sched(L, every ? "fdpool.timer.every"
                                              : "fdpool.timer.at");
    lua_Number d = luaL_checknumber(L, 1);
    int n = lua_gettop(L);
    struct lt_timer *tm;
    struct lt_state *st;

    luaL_argcheck(L, d >= 0 && d < 1e9 && (!every || d > 0), 1, every
                  ? "interval must be > 0 and < 1e9 seconds"
                  : "delay must be 0 to 1e9 seconds");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    st = get_state(L);
    if (st->exiting) {
        lua_pushnil(L);
        lua_pushliteral(L, "exiting");
        return 2;
    }
    if (st->ntimers >= st->max_timers) {
        lua_pushnil(L);
        lua_pushliteral(L, "too many pending timers");
        return 2;
    }
    /* The loop function, then (h, fn, ...) as its arguments. */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &timerfn_key) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        if (luaL_loadbufferx(L, timer_loop, sizeof(timer_loop) - 1,
                             "=[fdpool] timer", "t") != LUA_OK) {
            return lua_error(L);
        }
        lua_pushcfunction(L, l_tsleep);
        lua_pushcfunction(L, l_terror);
        lua_pushcfunction(L, l_ttraceback);
        lua_call(L, 3, 1);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &timerfn_key);
    }
    tm = lua_newuserdatauv(L, sizeof(*tm), 0);
    memset(tm, 0, sizeof(*tm));
    tm->delay = d;
    tm->every = every;
    luaL_setmetatable(L, TIMER_MT);
    /* stack: delay fn args... loopfn h */
    lua_insert(L, 2);           /* delay h fn args... loopfn */
    lua_insert(L, 2);           /* delay loopfn h fn args... */
    lua_pushvalue(L, 3);        /* the object kept alive while it runs */
    tm->task = start(L, s, K_TIMER, 2, n, tm, NULL);
    st->ntimers++;
    lua_pushvalue(L, 3);
    return 1;
}


/* fdpool.timer.pending() -> the worker's timers not ended yet. */
static int
l_timer_pending(lua_State *L)
{
    lua_pushinteger(L, get_state(L)->ntimers);
    return 1;
}


/* fdpool.timer.max_pending([n]) -> the cap (after setting it to n): a
 * timer started past it gets nil, "too many pending timers", so a handler
 * that starts one per request cannot grow the worker without bound
 * (ngx's lua_max_pending_timers; 1024 by default, as there). */
static int
l_timer_max_pending(lua_State *L)
{
    struct lt_state *st = get_state(L);

    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);

        luaL_argcheck(L, n >= 1 && n <= 1000000, 1,
                      "the cap must be 1 to 1000000");
        st->max_timers = (int) n;
    }
    lua_pushinteger(L, st->max_timers);
    return 1;
}


/* fdpool.timer.at(delay, fn, ...) -> timer | nil, "exiting" */
static int
l_timer_at(lua_State *L)
{
    return timer_new(L, 0);
}


/* fdpool.timer.every(interval, fn, ...) -> timer | nil, "exiting" */
static int
l_timer_every(lua_State *L)
{
    return timer_new(L, 1);
}


/* timer:cancel(): no further runs (a running callback finishes). */
static int
timer_cancel(lua_State *L)
{
    struct lt_timer *tm = check_timer(L, 1);
    int was = tm->cancelled || tm->task == NULL;

    tm->cancelled = 1;
    if (tm->sleeper.head != NULL) {
        fdp_task_resume_soon(tm->sleeper.head, 0);
    }
    if (was) {
        lua_pushnil(L);
        lua_pushliteral(L, "already ended");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


static int
timer_tostring(lua_State *L)
{
    struct lt_timer *tm = check_timer(L, 1);

    lua_pushfstring(L, "fdpool.timer (%s)", tm->task != NULL
                    && !tm->cancelled ? "pending" : "ended");
    return 1;
}


/* ---- queues ---------------------------------------------------------- */

static struct lt_queue *
check_queue(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, QUEUE_MT);
}


/* fdpool.queue([size]) -> queue of at most size items (none: no limit). */
static int
l_queue(lua_State *L)
{
    lua_Integer cap = luaL_optinteger(L, 1, 0);
    struct lt_queue *q;

    luaL_argcheck(L, cap >= 0, 1, "size must be >= 0 (0: no limit)");
    q = lua_newuserdatauv(L, sizeof(*q), 1);
    memset(q, 0, sizeof(*q));
    q->cap = cap;
    q->head = 1;
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, QUEUE_MT);
    return 1;
}


/* queue:push(v) -> true | nil, "full". A waiting pop gets v directly. */
static int
queue_push(lua_State *L)
{
    struct lt_queue *q = check_queue(L, 1);
    struct fdp_task *w = q->poppers.head;

    luaL_argcheck(L, !lua_isnoneornil(L, 2), 2, "value expected (nil "
                  "cannot be queued)");
    lua_settop(L, 2);
    if (w != NULL && lua_checkstack(w->co, 1)) {
        lua_xmove(L, w->co, 1);
        fdp_task_resume_soon(w, 1);
    } else if (q->cap > 0 && q->count >= q->cap) {
        lua_pushnil(L);
        lua_pushliteral(L, "full");
        return 2;
    } else {
        lua_getiuservalue(L, 1, 1);
        lua_insert(L, 2);
        lua_rawseti(L, 2, q->head + q->count);
        q->count++;
    }
    lua_pushboolean(L, 1);
    return 1;
}


static int
pop_k(lua_State *L, int status, lua_KContext ctx)
{
    (void) status;
    (void) ctx;
    if (fdp_wait_timed_out(L) || lua_gettop(L) < 3) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    return 1;
}


/* queue:pop([timeout]) -> v | nil, "timeout". */
static int
queue_pop(lua_State *L)
{
    struct lt_queue *q = check_queue(L, 1);
    uint64_t ms;

    (void) opt_timeout(L, 2, &ms);
    lua_settop(L, 2);
    if (q->count > 0) {
        lua_getiuservalue(L, 1, 1);
        lua_rawgeti(L, -1, q->head);
        lua_pushnil(L);
        lua_rawseti(L, -3, q->head);
        q->head++;
        q->count--;
        if (q->count == 0) {
            q->head = 1;
        }
        return 1;
    }
    if (ms == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    return fdp_waitlist_wait(L, need_wait_task(L, "queue:pop"), &q->poppers,
                             ms, 0, pop_k);
}


static int
queue_len(lua_State *L)
{
    lua_pushinteger(L, check_queue(L, 1)->count);
    return 1;
}


/* ---- semaphores ------------------------------------------------------ */

static struct lt_sema *
check_sema(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, SEMA_MT);
}


/* fdpool.semaphore([n]) -> semaphore with n (default 0) units. */
static int
l_semaphore(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 1, 0);
    struct lt_sema *sm;

    luaL_argcheck(L, n >= 0, 1, "units must be >= 0");
    sm = lua_newuserdatauv(L, sizeof(*sm), 0);
    memset(sm, 0, sizeof(*sm));
    sm->count = n;
    luaL_setmetatable(L, SEMA_MT);
    return 1;
}


static int
sema_k(lua_State *L, int status, lua_KContext ctx)
{
    (void) status;
    (void) ctx;
    if (fdp_wait_timed_out(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* semaphore:wait([timeout]) -> true | nil, "timeout". */
static int
sema_wait(lua_State *L)
{
    struct lt_sema *sm = check_sema(L, 1);
    uint64_t ms;

    (void) opt_timeout(L, 2, &ms);
    lua_settop(L, 2);
    if (sm->count > 0) {
        sm->count--;
        lua_pushboolean(L, 1);
        return 1;
    }
    if (ms == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    return fdp_waitlist_wait(L, need_wait_task(L, "semaphore:wait"),
                             &sm->waiters, ms, 0, sema_k);
}


/* semaphore:post([n]): n units (default 1), each to the first waiter. */
static int
sema_post(lua_State *L)
{
    struct lt_sema *sm = check_sema(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, 1);

    luaL_argcheck(L, n >= 1 && n <= 0x7fffffff, 2, "units must be 1 to "
                  "2^31-1");
    while (n > 0 && sm->waiters.head != NULL) {
        fdp_task_resume_soon(sm->waiters.head, 0);
        n--;
    }
    luaL_argcheck(L, sm->count <= LUA_MAXINTEGER - n, 2, "too many units");
    sm->count += n;
    lua_pushboolean(L, 1);
    return 1;
}


/* semaphore:count() -> units free, minus the waiters (as ngx's). */
static int
sema_count(lua_State *L)
{
    struct lt_sema *sm = check_sema(L, 1);

    lua_pushinteger(L, sm->count - sm->waiters.n);
    return 1;
}


/* ---- the stop notice --------------------------------------------------- */

int fdp_lthread_stopping;
int fdp_lthread_close_idle;

int
fdp_lthread_exiting(lua_State *L)
{
    lua_pushboolean(L, get_state(L)->exiting);
    return 1;
}


static void
run_on_stop(lua_State *L, struct fdp_sched *s, int fidx)
{
    lua_pushnil(L);
    get_state(L)->nhold++;
    (void) start(L, s, K_STOP, fidx, 0, NULL, NULL);
}


/* fdpool.worker.on_stop(fn): fn() in a task of its own when the worker
 * is told to stop (at once if it already was). */
int
fdp_lthread_on_stop(lua_State *L)
{
    struct fdp_sched *s = need_sched(L, "fdpool.worker.on_stop");

    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    if (get_state(L)->exiting) {
        run_on_stop(L, s, 1);
        return 0;
    }
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &onstop_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &onstop_key);
    }
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, (lua_Integer) lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
    return 0;
}


void
fdp_lthread_stop(lua_State *L)
{
    struct fdp_sched *s = fdp_sched_of(L);
    struct lt_state *st = get_state(L);
    struct fdp_task *t;
    lua_Integer i, n;

    if (s == NULL || st->exiting) {
        return;
    }
    st->exiting = 1;
    fdp_lthread_stopping = 1;
    /* Timers stop firing: wake the ones between runs (they see exiting
     * and end); a callback that runs now finishes. */
    for (t = s->tasks; t != NULL; t = t->next) {
        struct lt_task *lt = (struct lt_task *) t;

        if (t->ops == &lt_ops && lt->kind == K_TIMER) {
            struct lt_timer *tm = lt->ud;

            if (tm->sleeper.head != NULL) {
                fdp_task_resume_soon(tm->sleeper.head, 0);
            }
        }
    }
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &onstop_key) == LUA_TTABLE) {
        n = (lua_Integer) lua_rawlen(L, -1);
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            run_on_stop(L, s, lua_gettop(L));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}


int
fdp_lthread_holding(lua_State *L)
{
    return get_state(L)->nhold;
}


void
fdp_lthread_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "spawn", l_spawn },
        { "wait", l_wait },
        { "kill", l_kill },
        { "queue", l_queue },
        { "semaphore", l_semaphore },
        { NULL, NULL }
    };
    static const luaL_Reg timer_funcs[] = {
        { "at", l_timer_at },
        { "every", l_timer_every },
        { "pending", l_timer_pending },
        { "max_pending", l_timer_max_pending },
        { NULL, NULL }
    };
    static const luaL_Reg thread_m[] = {
        { "detach", thread_detach }, { "status", thread_status },
        { NULL, NULL } };
    static const luaL_Reg thread_mm[] = {
        { "__tostring", thread_tostring }, { NULL, NULL } };
    static const luaL_Reg timer_m[] = {
        { "cancel", timer_cancel }, { NULL, NULL } };
    static const luaL_Reg timer_mm[] = {
        { "__tostring", timer_tostring }, { NULL, NULL } };
    static const luaL_Reg queue_m[] = {
        { "push", queue_push }, { "pop", queue_pop }, { "len", queue_len },
        { NULL, NULL } };
    static const luaL_Reg sema_m[] = {
        { "wait", sema_wait }, { "post", sema_post }, { "count", sema_count },
        { NULL, NULL } };

    fdp_createmeta(L, THREAD_MT, thread_mm, thread_m);
    fdp_createmeta(L, TIMER_MT, timer_mm, timer_m);
    fdp_createmeta(L, QUEUE_MT, NULL, queue_m);
    fdp_createmeta(L, SEMA_MT, NULL, sema_m);
    luaL_setfuncs(L, funcs, 0);
    luaL_newlib(L, timer_funcs);
    lua_setfield(L, -2, "timer");
}
