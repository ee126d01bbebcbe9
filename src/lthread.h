/*
 * lthread.h - timers, threads, queues and semaphores of a worker, and the
 * Lua side of its stop notice (lthread.c).
 */
#ifndef FDP_LTHREAD_H
#define FDP_LTHREAD_H

#include <lua.h>

/* Add timer, spawn, wait, kill, queue, semaphore to the module table on
 * top of L, and make their metatables. */
void fdp_lthread_open(lua_State *L);
/* The worker was told to stop: exiting() turns true, timers stop firing,
 * the on_stop callbacks start (each in a task of its own). */
void fdp_lthread_stop(lua_State *L);
/* 1 once this process's worker was told to stop (fdp_lthread_stop): a
 * response sent from then on says Connection: close (src/lhttp.c) */
extern int fdp_lthread_stopping;
/* 1 once told that the pool stops (FDP_STOP_IDLE): fdpool.http closes a
 * keep-alive connection instead of waiting for its next request. */
extern int fdp_lthread_close_idle;
/* on_stop callbacks still running (the worker waits for them, within
 * its grace). */
int fdp_lthread_holding(lua_State *L);
/* fdpool.worker.exiting() and fdpool.worker.on_stop(fn). */
int fdp_lthread_exiting(lua_State *L);
int fdp_lthread_on_stop(lua_State *L);

#endif
