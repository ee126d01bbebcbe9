/*
 * lshared.h - fdpool.shared.NAME in a worker (lshared.c).
 */
#ifndef FDP_LSHARED_H
#define FDP_LSHARED_H

#include <lua.h>

struct fdp_pool;

/* Set fdpool.shared (the module table on top of L) to a table of p's
 * shared dictionaries by name. */
void fdp_lshared_open(lua_State *L, struct fdp_pool *p);

#endif
