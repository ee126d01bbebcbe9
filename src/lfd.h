/*
 * lfd.h - the binding's fd and chan objects (lfd.c).
 */
#ifndef FDP_LFD_H
#define FDP_LFD_H

#include <lua.h>

/* Make the fdpool.fd and fdpool.chan metatables, and set socketpair,
 * connect, dup and open_beneath in the table on top of the stack. */
void fdp_lfd_open(lua_State *L);

#endif
