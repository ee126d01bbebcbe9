/*
 * task.h - the worker's coroutine scheduler (task.c), as
 * lua-nginx-module's cosocket core: a task is one coroutine running a
 * handler; a waitable is what it waits on (a conn embeds one; an outbound
 * socket or a timer can next). I/O that would block yields the task to
 * the loop; where yielding is impossible (top level, init, a plain
 * program) the wait blocks in poll() instead.
 *
 * The scheduler knows no conn, channel or master: what the handler's end
 * means (close the connection, report it) and what parking is belong to
 * the owner, which fills struct fdp_task_ops.
 */
#ifndef FDP_TASK_H
#define FDP_TASK_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "loop.h"

#define FDP_WAIT_SLEEP  0x80000000u

#define FDP_FOREVER     UINT64_MAX

struct fdp_sched;
struct fdp_task;

/* Tasks waiting in line for something that is not an fd (a queue's
 * items, a semaphore's units, a thread's end): FIFO, a task is in at
 * most one; a task that times out or ends leaves it by itself. */
struct fdp_waitlist {
    struct fdp_task *head, *tail;
    int n;
};

/* Something a task can wait on: an fd watched edge-triggered in the
 * scheduler's loop (registered at the first wait). */
struct fdp_waitable {
    struct fdp_io io;
    struct fdp_sched *s;        /* NULL: waits block in poll() */
    struct fdp_task *waiter;    /* task blocked on it (reading, or any
                                   wait but a write's) */
    uint32_t events;            /* what the waiter waits for */
    struct fdp_task *writer;    /* task blocked on it writing (EPOLLOUT
                                   alone): one reader and one writer may
                                   wait at once */
    int rready;                 /* no short read since the last EPOLLIN:
                                   worth a read() before waiting */
    int rdhup;                  /* the peer's FIN (or an error) was seen:
                                   a short read no longer means drained */
};

/* What the owner of the tasks does at their edges. */
struct fdp_task_ops {
    /* The peer of the task, for log lines. */
    void (*peer)(struct fdp_task *t, char *out, size_t n);
    /* The handler is over (its coroutine done and reset, t unlinked):
     * the owner's bookkeeping; it frees t. */
    void (*finish)(struct fdp_task *t);
    /* Hand fd (the task's own connection, with its counters) back to
     * the master: 0 (fd is the channel's now) or -errno. */
    int (*park)(struct fdp_task *t, int fd, uint64_t bytes_in,
                uint64_t bytes_out, uint32_t idle_ms);
    /* The request the task serves, if known ("GET /x"), for --slow's
     * line; NULL or "" when none. */
    void (*request)(struct fdp_task *t, char *out, size_t n);
    /* Optional, called first when the task ends, with its results on
     * t->co (LUA_OK), its error on top (an error status) or nothing
     * (FDP_TASK_CANCELLED). Nonzero: it logged the error itself. */
    int (*ended)(struct fdp_task *t, int status);
};

#define FDP_TASK_CANCELLED (-1)

struct fdp_task {
    /* What a request's waits touch first (one or two cache lines). */
    lua_State *co;
    struct fdp_sched *s;
    void *data;                 /* the owner's: the object it serves */
    struct fdp_waitable *dwt;   /* this resume's wait to read on it may
                                   let the coroutine go (dormant tasks,
                                   fdp_task_may_sleep: co is NULL while
                                   it sleeps, ref then the root
                                   function's argument; the function is
                                   the scheduler's dfn) */
    uint32_t waiting;           /* events waited for, 0 = runnable */
    unsigned char timed_out;
    unsigned char dsoon;        /* its drowsy wait sleeps after
                                   FDP_SOON_MS (fdp_task_may_sleep) */
    unsigned char dret;         /* its root returns over a registered
                                   wait: dormant then (fdp_wait_dormant) */
    struct fdp_waitable *wobj;  /* waitable waited on */
    int ref;                    /* the thread, in the registry */
    uint32_t dsince;            /* ms (low bits): its drowsy wait's start */
    struct fdp_task *dprev, *dnext;     /* the scheduler's drowsy list */
    struct fdp_timer timer;     /* wait deadline or sleep */
    struct fdp_timer iot;       /* fdp_wait's deadline, re-armed lazily */
    uint64_t iot_dl;            /* that deadline (ms), 0: none or over */
    uint64_t start_ms;          /* when the handler (or its request)
                                   started; 0: between requests */
    const struct fdp_task_ops *ops;     /* NULL: the scheduler's */
    int slow_logged;            /* its --slow line was written */
    int nresume;                /* values for the next deferred resume */
    int aref;                   /* a dormant task's root argument (a
                                   registry ref, kept till it ends), 0 */
    struct fdp_timer limit;     /* --timeout for the whole handler */
    struct fdp_timer slow;      /* --slow: log where it waits, once */
    struct fdp_task *prev, *next;
    /* Additions for threads and timers (lthread.c). */
    struct fdp_task *parent;    /* ends this task when it ends, or NULL */
    struct fdp_task *kids;      /* tasks it ends when it ends */
    struct fdp_task *kprev, *knext;
    struct fdp_waitlist *wlist; /* the waitlist it waits in, or NULL */
    struct fdp_task *wprev, *wnext;
};

struct fdp_sched {
    lua_State *L;
    struct fdp_loop *loop;
    const struct fdp_task_ops *ops;
    double timeout;             /* --timeout, seconds, 0: none */
    struct fdp_task *tasks;
    struct fdp_task *current;   /* the task being resumed */
    int active;                 /* tasks alive */
    int nspare;                 /* finished coroutines kept for reuse */
    int dfn;                    /* the root function of dormant tasks (a
                                   registry ref), 0: none yet; a task with
                                   another root keeps its coroutine */
    struct fdp_task *drowsy;    /* tasks that waited where they may sleep
                                   (fdp_task_may_sleep), for the sweep */
    struct fdp_timer sweep;     /* sleeps the ones idle FDP_SLEEP_MS,
                                   nothing come in meanwhile */
    int spare[64];              /* their registry refs */
    int limit_mem;              /* set mem_limited while a task runs */
    int mem_limited;            /* handler code runs: the owner's
                                   allocator refuses growth past its limit */
    int nrbufs;                 /* idle conns' read buffers, kept for */
    char *rbufs[32];            /* the next fill (lconn.c) */
    const int *nconn;           /* the owner's count of connections being
                                   served (a worker's), or NULL */
    int crowded;                /* *nconn at which the owner is crowded
                                   (fdp_sched_crowded), 0: never */
    double slow;                /* --slow, seconds, 0: none */
    int slow_fd;                /* --slow-log file, or -1: the log */
    char slow_who[32];          /* "worker N": who writes the line */
};

/* Whether s's owner serves so many connections (3/4 of a worker's
 * capacity) that an idle keep-alive connection should wait parked with
 * the master rather than hold one of its slots (fdpool.http). */
static inline int
fdp_sched_crowded(const struct fdp_sched *s)
{
    return s != NULL && s->nconn != NULL && s->crowded > 0
           && *s->nconn >= s->crowded;
}

/* Make s the scheduler of L's tasks (a registry entry), and install the
 * coroutine.resume/wrap that pass a nested coroutine's waits up. */
void fdp_sched_register(lua_State *L, struct fdp_sched *s);
void fdp_sched_install_wrappers(lua_State *L);

/* Start t (zeroed by the caller, or its container) on a coroutine of
 * its own, and link it. The caller pushes the function and its
 * arguments on t->co, then calls fdp_task_resume. */
void fdp_task_start(struct fdp_sched *s, struct fdp_task *t);
void fdp_task_resume(struct fdp_task *t, int nargs);

/*
 * L, its task's own coroutine, is about to wait to read on wt and holds
 * no state but what its root function rebuilds from its first argument
 * (fdpool.http's loop between keep-alive requests, nothing buffered):
 * when that wait has lasted FDP_SLEEP_MS (a sweep every FDP_SLEEP_MS
 * looks), the task lets its coroutine go (to the spares) and keeps only
 * the root function and that argument; the wake-up (wt
 * readable, the wait's timeout: fdp_wait_timed_out says which) calls
 * the function with the argument on a coroutine again. NULL: the next
 * wait keeps the coroutine. soon: after FDP_SOON_MS instead (the wait
 * after a connection's first request: a client that asked once may ask
 * no more, and a burst of arrivals would otherwise hold FDP_SLEEP_MS of
 * coroutines at once, whose holes stay in the heap after them).
 */
void fdp_task_may_sleep(lua_State *L, struct fdp_waitable *wt, int soon);
/* How long such a wait lasts before the coroutine goes (a keep-alive
 * client's next request within it finds its coroutine as it was). A
 * build may set it (-DFDP_SLEEP_MS=...): bench/instr's `many` under
 * callgrind, which slows the worker ~50 times, so that its connections
 * idle as long as at full speed. */
#ifndef FDP_SLEEP_MS
#define FDP_SLEEP_MS 50
#endif
/* The same after a connection's first request (fdp_task_may_sleep's
 * soon; docs/performance.md: idle RSS after a burst of arrivals). */
#ifndef FDP_SOON_MS
#define FDP_SOON_MS 5
#endif

/* The scheduler registered in L's state (a worker), or NULL. */
struct fdp_sched *fdp_sched_of(lua_State *L);
/* The task L runs in (its own coroutine), or NULL. */
struct fdp_task *fdp_current_task(lua_State *L);
/* The task for a wait from L (own or nested coroutine), or NULL when L
 * must block instead. */
struct fdp_task *fdp_wait_task(lua_State *L);
int fdp_task_yield(lua_State *L, struct fdp_task *t, lua_KContext ctx,
                   lua_KFunction k);
/* Suspend t (no I/O) until fdp_task_wake or ms pass (then it resumes
 * timed out); the caller yields. */
void fdp_task_suspend(struct fdp_task *t, uint64_t ms);
void fdp_task_wake(struct fdp_task *t, int nargs);

/*
 * Wait until fd (watched through wt) is ready for `events` or
 * deadline_ms (fdp_now_ms() time, 0: none) passes. In a task this yields
 * and the continuation k runs later: it asks fdp_wait_timed_out().
 * Elsewhere it blocks in poll() and returns 1 when ready, 0 on timeout.
 * Edge-triggered: call only after EAGAIN.
 */
int fdp_wait(lua_State *L, struct fdp_waitable *wt, int fd, uint32_t events,
             uint64_t deadline_ms, lua_KContext ctx, lua_KFunction k);
int fdp_wait_timed_out(lua_State *L);
/*
 * fdp_wait without the yield, for a wait where fdp_task_may_sleep is
 * allowed (the caller checked the root with fdp_sched_root), when the
 * worker holds more than FDP_DRET_MIN tasks: the wait is registered,
 * and the caller returns up to the task's root function, whose plain
 * return makes the task dormant (its coroutine, ended as usual, to the
 * spares at once, no reset); the argument at stack index arg is the
 * one the wake-up calls the root with. 1 when so (return), 0 when the
 * task must wait the usual way.
 */
int fdp_wait_dormant(lua_State *L, struct fdp_waitable *wt, int fd,
                     uint32_t events, uint64_t deadline_ms, int arg);
/* The function at idx is L's task's root (the caller checked): the
 * worker's root of dormant tasks if it has none yet; 1 when it is. */
int fdp_sched_root(lua_State *L, int idx);
/* The fewest live tasks at which fdp_wait_dormant lets go: below it a
 * connection's coroutine stays hot in the cache between its requests
 * (and sleeps only after FDP_SLEEP_MS); above it a few spares serve
 * every idle connection. The environment's FDPOOL_DRET_MIN=N moves it
 * (-1: off), for A/B runs on one binary: the wall clock at 1000
 * connections has not settled it yet (docs/performance.md). */
#ifndef FDP_DRET_MIN
#define FDP_DRET_MIN 96
#endif
/* wt's fd is being closed by its owner: resume its waiter (which then
 * sees it closed) and stop watching it; unwatch with epoll_ctl, forget
 * without a syscall (the fd is about to close). */
void fdp_waitable_unwatch(struct fdp_waitable *wt);
void fdp_waitable_forget(struct fdp_waitable *wt);

/* Resume t on the next turn of the loop with the nargs values on top of
 * t->co: a task just started, or one suspended (fdp_task_suspend or a
 * waitlist; it leaves the list, not timed out). Never resumes t inside
 * the caller, so a task that wakes another keeps running first. */
void fdp_task_resume_soon(struct fdp_task *t, int nargs);
/* End a task that is not running (killed): its pending <close>
 * variables run, its kids end too. 0, or -EBUSY for the running task. */
int fdp_task_cancel(struct fdp_task *t);
/* Make t a kid of parent (ended with it), or of nobody (NULL). */
void fdp_task_set_parent(struct fdp_task *t, struct fdp_task *parent);
/* Wait in wl (FIFO) until fdp_task_resume_soon or ms pass (FDP_FOREVER:
 * no limit); t must be L's wait task. Yields; the continuation k asks
 * fdp_wait_timed_out(). */
int fdp_waitlist_wait(lua_State *L, struct fdp_task *t,
                      struct fdp_waitlist *wl, uint64_t ms,
                      lua_KContext ctx, lua_KFunction k);

/* fdpool.sleep: yield the task for s seconds, or block outside one. */
/* fdpool.sleep: at most FDP_SLEEP_MAX seconds (about 31.7 years; inf
 * too), NaN raises. */
#define FDP_SLEEP_MAX 1e9
int fdp_sleep(lua_State *L, lua_Number s);

/* --slow for a handler that holds the CPU: the master's SIGUSR2 (with
 * FDP_SIG_SLOW_VALUE, pool.h) lands here, in the signal handler. It only
 * sets a count hook on the running task's coroutine (lua_sethook is
 * async-signal-safe) unless one is set already (--timeout's); the hook
 * logs the traceback of where the handler runs, once, and goes. */
void fdp_sched_slow_signal(struct fdp_sched *s);
/* A request starts (begin 1) or the handler waits for the next one
 * (begin 0): --slow counts per request (task.c). */
void fdp_task_request(lua_State *L, int begin);

/* Push s with each "\n\t" of a traceback as " | " (one log line). */
void fdp_push_oneline(lua_State *L, const char *s);

#endif
