/*
 * lsock.h - fdpool.tcp() client sockets (lsock.c): a conn plus connect,
 * the keep-alive pool and the streaming chunked reader.
 */
#ifndef FDP_LSOCK_H
#define FDP_LSOCK_H

#include <lua.h>

/* Make the socket's metatable (after the conn's) and set fdpool.tcp in
 * the table at the top of the stack. */
void fdp_lsock_open(lua_State *L);

#endif
