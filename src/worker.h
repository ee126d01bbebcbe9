/*
 * worker.h - the worker process's scheduler, shared by worker.c (the
 * loop, tasks, the channel to the master) and lconn.c (the conn object,
 * whose I/O waits through it). A task is one coroutine serving one
 * connection.
 */
#ifndef FDP_WORKER_H
#define FDP_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "channel.h"
#include "http_parse.h"
#include "loop.h"

#define FDP_WAIT_SLEEP  0x80000000u

struct fdp_pool;
struct fdp_wctx;
struct fdp_conn;

struct fdp_task {
    lua_State *co;
    int ref;                    /* the thread, in the registry */
    struct fdp_conn *conn;      /* the connection it serves */
    struct fdp_wctx *w;
    uint64_t id;
    uint64_t started_us;
    struct fdp_timer timer;     /* wait deadline or sleep */
    uint32_t waiting;           /* events waited for, 0 = runnable */
    struct fdp_conn *wconn;     /* conn waited on */
    int timed_out;
    int parked;                 /* its conn went back to the master */
    uint32_t status_id;         /* fdpool.status() request it waits for */
    struct fdp_task *status_next;
    struct fdp_timer limit;     /* --timeout for the whole handler */
    struct fdp_task *prev, *next;
};

struct fdp_wctx {
    struct fdp_pool *pool;
    int idx;                    /* 0-based slot */
    lua_State *L;
    int handler_ref;
    struct fdp_loop loop;
    struct fdp_chan *ch;
    struct fdp_io chio;
    int active;
    int stopping;
    struct fdp_timer stop_timer;
    int ndone;
    struct fdp_done_entry done[FDP_BATCH_MAX];
    struct fdp_timer done_timer;    /* coalesces DONE reports */
    int nspare;                     /* finished coroutines kept for reuse */
    int spare[64];                  /* their registry refs */
    struct fdp_task *tasks;
    struct fdp_task *current;   /* the task being resumed */
    uint32_t status_seq;        /* fdpool.status() requests */
    struct fdp_task *status_waiters;    /* FIFO of tasks waiting */
    char *status_buf;           /* the answer being assembled */
    size_t status_len;
    lua_Alloc mem_inner;        /* --max-memory: the allocator wrapped */
    void *mem_inner_ud;
    size_t mem_used;            /* bytes the Lua state holds */
    size_t mem_limit;           /* refused past this in handler code */
    int mem_limited;            /* running handler code now */
};

/* worker.c */
int fdp_wait(lua_State *L, struct fdp_conn *c, uint32_t events,
             lua_KContext ctx, lua_KFunction k);
int fdp_wait_timed_out(lua_State *L);
struct fdp_task *fdp_current_task(lua_State *L);
struct fdp_task *fdp_wait_task(lua_State *L);
int fdp_task_yield(lua_State *L, struct fdp_task *t, lua_KContext ctx,
                   lua_KFunction k);
void fdp_worker_register(lua_State *L, struct fdp_wctx *w);
void fdp_conn_unwatch(struct fdp_conn *c);
void fdp_conn_forget(struct fdp_conn *c);
int fdp_conn_park(lua_State *L, struct fdp_conn *c, uint32_t idle_ms);
int fdp_worker_status(lua_State *L);

void fdp_worker_set_luaopen(lua_State *L, lua_CFunction open);
void fdp_worker_main(struct fdp_pool *p, int idx) __attribute__((noreturn));

#endif
