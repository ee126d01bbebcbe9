/*
 * lfdpool.c - luaopen_fdpool: the module table (the fd and chan objects
 * from lfd.c, pool and simulator from lpool.c, the conn metatable from
 * lconn.c) and the module functions that fit nowhere else: sleep,
 * status, type, control, check_policy, control_sockets, now, ncpu, log.
 * Misuse raises; the world failing returns nil, "what: strerror", errno.
 */
#include "fdp.h"
#include "embed.h"
#include "laux.h"
#include "lfd.h"
#include "lfdpool.h"
#include "lhttp.h"
#include "lws.h"
#include "lpool.h"
#include "lsock.h"
#include "ltls.h"
#include "lthread.h"
#include "pool.h"
#include "control.h"
#include "policy.h"
#include "task.h"
#include "worker.h"

#include <sys/stat.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>


/* ---- module functions ----------------------------------------------- */

/* fdpool.sleep(seconds): yields the handler's coroutine; blocks outside
 * one. */
static int
l_sleep(lua_State *L)
{
    return fdp_sleep(L, luaL_checknumber(L, 1));
}


/* fdpool.status() -> the pool's status table (asked of the master), in a
 * handler; or nil, why. */
static int
l_status(lua_State *L)
{
    return fdp_worker_status(L);
}


static int
l_type(lua_State *L)
{
    static const char *const types[] = { FDP_FD_MT, FDP_CHAN_MT,
                                         FDP_CONN_MT, FDP_TCP_MT,
                                         FDP_POOL_MT,
                                         "fdpool.thread", "fdpool.timer",
                                         "fdpool.queue", "fdpool.semaphore",
                                         NULL };
    int i;

    luaL_checkany(L, 1);
    for (i = 0; types[i]; i++) {
        void *u = luaL_testudata(L, 1, types[i]);

        if (u) {
            const char *name = types[i] + 7;

            /* fd, chan, conn and tcp keep their descriptor first */
            if (i <= 3 && ((struct fdp_fd *) u)->fd < 0) {
                lua_pushfstring(L, "closed %s", name);
            } else {
                lua_pushstring(L, name);
            }
            return 1;
        }
    }
    /* a shared dictionary is a table of its methods (lshared.c) */
    if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, "fdpool.shdict");
        if (lua_rawequal(L, -1, -2)) {
            lua_pushliteral(L, "shdict");
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}


/* fdpool.control(path, command) -> answer, or nil, message, errno. */
static int
l_control(lua_State *L)
{
    const char *path = fdp_checkcstring(L, 1);
    const char *cmd = fdp_checkcstring(L, 2);
    struct fdp_buf out;
    char err[256];
    int r;

    memset(&out, 0, sizeof(out));
    r = fdp_control_request(path, cmd, &out, err, sizeof(err));
    if (r < 0) {
        fdp_buf_free(&out);
        return fdp_pushfailmsg(L, err, r);
    }
    lua_pushlstring(L, out.data, out.len);
    fdp_buf_free(&out);
    return 1;
}


/* fdpool.check_policy(spec) -> true, or nil, message, errno. */
static int
l_check_policy(lua_State *L)
{
    char err[512];
    int r = fdp_policy_check(L, fdp_checkcstring(L, 1), err, sizeof(err));

    if (r < 0) {
        return fdp_pushfailmsg(L, err, r);
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* fdpool.control_sockets() -> dir, {socket paths in it}, or nil, err,
 * errno. */
static int
l_control_sockets(lua_State *L)
{
    char dir[128], err[256];
    DIR *d;
    struct dirent *e;
    int n = 0;
    int r = fdp_control_default_dir(dir, sizeof(dir), 0, err, sizeof(err));

    if (r < 0) {
        return fdp_pushfailmsg(L, err, r);
    }
    lua_pushstring(L, dir);
    lua_newtable(L);
    d = opendir(dir);
    if (d == NULL) {
        return 2;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);

        if (len > 5 && strcmp(e->d_name + len - 5, ".sock") == 0) {
            lua_pushfstring(L, "%s/%s", dir, e->d_name);
            lua_rawseti(L, -2, ++n);
        }
    }
    closedir(d);
    return 2;
}


/* fdpool._filekind(path) -> "file", "directory", "fifo", "socket",
 * "character device", "block device", or nil, err, errno (stat follows
 * links). The CLI refuses a script or config file that is no regular
 * file: reading a FIFO would block, /dev/zero never end. */
static int
l_filekind(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;

    if (stat(path, &st) < 0) {
        return fdp_pushfail(L, errno, path);
    }
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file"
                   : S_ISDIR(st.st_mode) ? "directory"
                   : S_ISFIFO(st.st_mode) ? "fifo"
                   : S_ISSOCK(st.st_mode) ? "socket"
                   : S_ISCHR(st.st_mode) ? "character device"
                   : S_ISBLK(st.st_mode) ? "block device" : "special file");
    return 1;
}


/* fdpool.now() -> monotonic seconds (for rates and deadlines). */
static int
l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number) fdp_now_us() / 1e6);
    return 1;
}


static int
l_ncpu(lua_State *L)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}


static int
l_log(lua_State *L)
{
    static const char *const levels[] = { "error", "warn", "info", "debug",
                                          NULL };
    int level = luaL_checkoption(L, (fdp_checkcstring(L, 1), 1), NULL, levels);

    fdp_log(level, 0, "%s", luaL_checkstring(L, 2));
    return 0;
}


/* fdpool.log_file(path): the log (stderr) goes to path; SIGUSR1 reopens
 * it. Returns true or nil, err, errno. */
static int
l_log_file(lua_State *L)
{
    const char *path = fdp_checkcstring(L, 1);
    int r = fdp_log_open(path);

    if (r < 0) {
        return fdp_pushfail(L, -r, path);
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* fdpool.log_format("text" | "json") */
static int
l_log_format(lua_State *L)
{
    static const char *const fmts[] = { "text", "json", NULL };

    fdp_log_set_json(luaL_checkoption(L, (fdp_checkcstring(L, 1), 1), NULL,
                                      fmts) == 1);
    return 0;
}



/* package.searchers entry: the embedded lua/fdpool files. */
static int
embed_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t len;
    const char *src = fdp_embed_find(name, &len);

    if (src == NULL) {
        lua_pushfstring(L, "no embedded module '%s'", name);
        return 1;
    }
    lua_pushfstring(L, "=[fdpool] %s", name);
    if (luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t") != LUA_OK) {
        return lua_error(L);
    }
    lua_pushstring(L, name);
    return 2;
}


static void
install_searcher(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "fdpool.searcher") != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "fdpool.searcher");
    if (lua_getglobal(L, "package") != LUA_TTABLE
        || lua_getfield(L, -1, "searchers") != LUA_TTABLE) {
        lua_settop(L, lua_gettop(L) - 2);
        return;
    }
    /* After preload, before the path searchers: the binary uses its own
     * copy of lua/fdpool, wherever it runs from. */
    {
        lua_Integer i, n = luaL_len(L, -1);

        for (i = n; i >= 2; i--) {
            lua_geti(L, -1, i);
            lua_seti(L, -2, i + 1);
        }
        lua_pushcfunction(L, embed_searcher);
        lua_seti(L, -2, 2);
    }
    lua_pop(L, 2);
}


void
fdp_open_module(lua_State *L)
{
    luaL_requiref(L, "fdpool", luaopen_fdpool, 0);
    lua_pop(L, 1);
}

int
luaopen_fdpool(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "status", l_status },
        { "sleep", l_sleep },
        { "type", l_type },
        { "control", l_control },
        { "check_policy", l_check_policy },
        { "ncpu", l_ncpu },
        { "now", l_now },
        { "control_sockets", l_control_sockets },
        { "_filekind", l_filekind },
        { "log", l_log },
        { "log_file", l_log_file },
        { "log_format", l_log_format },
        { "_httpres", fdp_lhttp_res },
        { "_httpreply", fdp_lhttp_reply },
        { "_httptoken", fdp_lhttp_token },
        { "_httpreq", fdp_lhttp_req },
        { NULL, NULL }
    };

    fdp_lhttp_open(L);
    install_searcher(L);
    fdp_worker_set_luaopen(L, luaopen_fdpool);

    luaL_newlib(L, funcs);
    fdp_lfd_open(L);
    fdp_lpool_open(L);
    fdp_lws_open(L);
    fdp_lsock_open(L);
    fdp_ltls_open(L);
    fdp_lthread_open(L);
    lua_newtable(L);            /* a worker's fdpool.shared.NAME */
    lua_setfield(L, -2, "shared");
    lua_pushliteral(L, FDP_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
