/*
 * laux.h - the Lua helpers every Lua-facing C file shares (as lauxlib
 * is to Lua's own libraries): the failure triple, the fd object every
 * descriptor-returning call pushes, the fd-like value protocol, and the
 * one way a metatable is made. Lowest of the Lua layers: it uses no
 * other fdpool file but fdp.h.
 */
#ifndef FDP_LAUX_H
#define FDP_LAUX_H

#include <lua.h>
#include <lauxlib.h>

#define FDP_FD_MT   "fdpool.fd"
#define FDP_CHAN_MT "fdpool.chan"
#define FDP_CONN_MT "fdpool.conn"
#define FDP_TCP_MT  "fdpool.tcp"     /* a client socket: a conn first */

/* An fd or chan object. Every userdata that owns a descriptor (fd, chan,
 * conn) keeps it as its first member, -1 once closed. */
struct fdp_fd {
    int fd;
};

/* nil, "what: strerror", errno -- as luaL_fileresult. Returns 3. */
int fdp_pushfail(lua_State *L, int err, const char *what);

/* nil, msg (a C function's line of text), errno from its -errno r: the
 * binding's failure shape when the C side wrote the message. Returns 3. */
int fdp_pushfailmsg(lua_State *L, const char *msg, int r);

/* luaL_checkstring for a string C reads as a C string (a path, a name,
 * an option): one holding a NUL byte raises (C would read its part
 * before the NUL). */
const char *fdp_checkcstring(lua_State *L, int arg);

/* Push a new fd object owning fd. Returns 1. */
int fdp_pushfd(lua_State *L, int fd);

/* The descriptor behind an integer, Lua file, fd, chan or conn at idx;
 * raises for anything else or a closed one. */
int fdp_fd_fileno(lua_State *L, int idx);

/* Make (once) the metatable `name` with the metamethods `meta` and the
 * methods `methods` under __index (either may be NULL); leaves nothing
 * on the stack. As liolib.c's createmeta. */
void fdp_createmeta(lua_State *L, const char *name, const luaL_Reg *meta,
                    const luaL_Reg *methods);

/* The body of a lua_pcall message handler: the error object at index 1
 * as a string (naming its type when it is not one), with a traceback if
 * `traceback` is set. Returns 1. */
int fdp_errmsg(lua_State *L, int traceback);

#endif
