/*
 * lfdpool.h - the fdpool Lua module (lfdpool.c).
 */
#ifndef FDP_LFDPOOL_H
#define FDP_LFDPOOL_H

#include <lua.h>

int luaopen_fdpool(lua_State *L);

/* require "fdpool" in L (package.loaded), leaving nothing on the stack. */
void fdp_open_module(lua_State *L);

#endif
