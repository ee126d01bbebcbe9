/*
 * main.c - the `pool` command: a Lua 5.4 state with the fdpool module
 * preloaded, running the CLI (lua/fdpool/cli.lua, embedded). Errors that
 * escape it print as one line, "pool: message", with exit code 1.
 */
#include "fdp.h"
#include "laux.h"
#include "lfdpool.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>


static int
msgh(lua_State *L)
{
    return fdp_errmsg(L, getenv("FDPOOL_DEBUG") != NULL);
}


static int
run_cli(lua_State *L)
{
    int argc = (int) lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    int i;

    luaL_openlibs(L);
    fdp_open_module(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "fdpool.cli");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (i = 0; i < argc; i++) {      /* args[0]: the program's name */
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 1, 1);
    return 1;
}


int
main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    int status, code = 1;

    if (L == NULL) {
        fprintf(stderr, "pool: cannot create a Lua state\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    lua_pushcfunction(L, msgh);
    lua_pushcfunction(L, run_cli);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    status = lua_pcall(L, 2, 1, 1);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);

        fprintf(stderr, "pool: %s\n", msg ? msg : "unknown error");
    } else {
        code = lua_isinteger(L, -1) ? (int) lua_tointeger(L, -1) : 0;
    }
    fflush(stdout);
    lua_close(L);
    return code;
}
