/*
 * laux.c - the Lua helpers shared by lconn, worker and the binding: the
 * failure triple, fd objects, fd-like values, metatables (see laux.h).
 */
#include "fdp.h"
#include "laux.h"

#include <stdio.h>
#include <string.h>

#include <lualib.h>


/* nil, "what: strerror", errno -- as luaL_fileresult. */
int
fdp_pushfail(lua_State *L, int err, const char *what)
{
    lua_pushnil(L);
    if (what) {
        lua_pushfstring(L, "%s: %s", what, strerror(err));
    } else {
        lua_pushstring(L, strerror(err));
    }
    lua_pushinteger(L, err);
    return 3;
}


void
fdp_createmeta(lua_State *L, const char *name, const luaL_Reg *meta,
               const luaL_Reg *methods)
{
    if (luaL_newmetatable(L, name)) {
        if (meta != NULL) {
            luaL_setfuncs(L, meta, 0);
        }
        if (methods != NULL) {
            lua_newtable(L);
            luaL_setfuncs(L, methods, 0);
            lua_setfield(L, -2, "__index");
        }
    }
    lua_pop(L, 1);
}


/* Push a new fd object owning fd. Created closed, then opened. */
int
fdp_pushfd(lua_State *L, int fd)
{
    struct fdp_fd *f = lua_newuserdatauv(L, sizeof(*f), 0);

    f->fd = -1;
    luaL_setmetatable(L, FDP_FD_MT);
    f->fd = fd;
    return 1;
}


/*
 * The descriptor number behind any fd-like value: an integer, a Lua file,
 * an fdpool fd, chan or conn. Raises for anything else or closed ones.
 */
int
fdp_fd_fileno(lua_State *L, int idx)
{
    void *u;

    if (lua_isinteger(L, idx)) {
        lua_Integer n = lua_tointeger(L, idx);

        luaL_argcheck(L, n >= 0 && n <= 0x7fffffff, idx, "invalid fd");
        return (int) n;
    }
    if ((u = luaL_testudata(L, idx, FDP_FD_MT)) != NULL
        || (u = luaL_testudata(L, idx, FDP_CHAN_MT)) != NULL) {
        int fd = ((struct fdp_fd *) u)->fd;

        if (fd < 0) {
            luaL_argerror(L, idx, "attempt to use a closed fd");
        }
        return fd;
    }
    if ((u = luaL_testudata(L, idx, FDP_CONN_MT)) != NULL) {
        int fd = ((struct fdp_fd *) u)->fd;     /* its first member */

        if (fd < 0) {
            luaL_argerror(L, idx, "attempt to use a closed connection");
        }
        return fd;
    }
    if ((u = luaL_testudata(L, idx, LUA_FILEHANDLE)) != NULL) {
        luaL_Stream *s = u;

        if (s->closef == NULL || s->f == NULL) {
            luaL_argerror(L, idx, "attempt to use a closed file");
        }
        fflush(s->f);
        return fileno(s->f);
    }
    return luaL_typeerror(L, idx, "fd, file, fdpool.fd, fdpool.chan or "
                          "fdpool.conn");
}



int
fdp_errmsg(lua_State *L, int traceback)
{
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL) {
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    }
    if (traceback) {
        luaL_traceback(L, L, msg, 1);
    } else {
        lua_pushstring(L, msg);
    }
    return 1;
}


int
fdp_pushfailmsg(lua_State *L, const char *msg, int r)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushinteger(L, r < 0 ? -r : r);
    return 3;
}


const char *
fdp_checkcstring(lua_State *L, int arg)
{
    size_t n;
    const char *s = luaL_checklstring(L, arg, &n);

    if (strlen(s) != n) {
        luaL_argerror(L, arg, "string contains a NUL byte");
    }
    return s;
}
