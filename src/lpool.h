/*
 * lpool.h - fdpool.pool{} and fdpool.simulator() (lpool.c).
 */
#ifndef FDP_LPOOL_H
#define FDP_LPOOL_H

#include <lua.h>

#define FDP_POOL_MT "fdpool.pool"

/* Make the fdpool.pool and fdpool.simulator metatables, and set pool and
 * simulator in the table on top of the stack. */
void fdp_lpool_open(lua_State *L);

#endif
