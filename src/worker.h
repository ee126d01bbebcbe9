/*
 * worker.h - the worker process (worker.c): its main (run by the pool
 * after fork), its channel to the master, its tasks (task.c's, each
 * serving one connection), parking and status requests.
 */
#ifndef FDP_WORKER_H
#define FDP_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "channel.h"
#include "loop.h"
#include "task.h"

struct fdp_pool;
struct fdp_conn;
struct fdp_wctx;

/* A task of the worker: the scheduler's, plus the connection it serves. */
struct fdp_wtask {
    struct fdp_task t;          /* first: a struct fdp_task * is one */
    struct fdp_wctx *w;
    struct fdp_conn *conn;      /* the connection it serves */
    uint64_t id;
    uint64_t started_us;
    int parked;                 /* its conn went back to the master */
    uint32_t status_id;         /* fdpool.status() request it waits for */
    struct fdp_wtask *status_next;
};

struct fdp_wctx {
    struct fdp_pool *pool;
    int idx;                    /* 0-based slot */
    lua_State *L;
    struct fdp_sched sched;     /* its tasks */
    int handler_ref;
    struct fdp_loop loop;
    struct fdp_chan *ch;
    struct fdp_io chio;
    int stopping;
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
};

/* worker.c */
int fdp_worker_status(lua_State *L);
void fdp_worker_set_luaopen(lua_State *L, lua_CFunction open);
void fdp_worker_main(struct fdp_pool *p, int idx) __attribute__((noreturn));

#endif
