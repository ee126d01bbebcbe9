/*
 * worker.h - the worker process (worker.c): its main (run by the pool
 * after fork), its channel to the master, its tasks (task.c's, each
 * serving one connection), parking and status requests.
 */
#ifndef FDP_WORKER_H
#define FDP_WORKER_H

#include <lua.h>

struct fdp_pool;
struct fdp_worker;

/* fdpool.status() in a handler: ask the master, yield until it answers
 * (5 s at most). Pushes the status table, or nil and why. */
int fdp_worker_status(lua_State *L);
/* The binding's luaopen_fdpool, left in the state that creates a pool:
 * a worker with a fresh state opens the module with it. */
void fdp_worker_set_luaopen(lua_State *L, lua_CFunction open);
/* The child process, after fork: serves slot wk of p until told to stop;
 * never returns. fdp_worker_main is the same by slot index, as pool.c
 * calls it today. */
int fdp_worker_run(struct fdp_pool *p, struct fdp_worker *wk)
    __attribute__((noreturn));
void fdp_worker_main(struct fdp_pool *p, int idx) __attribute__((noreturn));

#endif
