/*
 * lpool.c - fdpool.pool{}: a pool made from Lua ("fdpool.pool": start,
 * step, run, stop, reload, scale, status, addresses), and
 * fdpool.simulator(): the master's dispatch decision without processes
 * ("fdpool.simulator", for fdpool.sim). Misuse raises.
 */
#include "fdp.h"
#include "laux.h"
#include "lpool.h"
#include "pool.h"
#include "shdict.h"
#include "control.h"
#include "policy.h"
#include "tls.h"
#include "worker.h"
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>

#include <lauxlib.h>

#define POOL_MT     FDP_POOL_MT

struct lpool {
    struct fdp_pool *p;
};


/* fdpool.set_log_level(name): "error", "warn", "info" or "debug". */
static int
l_set_log_level(lua_State *L)
{
    static const char *const levels[] = { "error", "warn", "info", "debug",
                                          NULL };

    fdp_log_set_level(luaL_checkoption(L, (fdp_checkcstring(L, 1), 1), NULL,
                                       levels));
    return 0;
}


/* ---- fdpool.pool ---------------------------------------------------- */

/* The pool behind a pool (or simulator) object; raises if closed. */
static struct fdp_pool *
checkpoolof(lua_State *L, const char *mt, const char *what)
{
    struct lpool *lp = luaL_checkudata(L, 1, mt);

    if (lp->p == NULL) {
        luaL_error(L, "attempt to use a closed %s", what);
    }
    lp->p->L = L;
    return lp->p;
}


static struct fdp_pool *
checkpool(lua_State *L)
{
    return checkpoolof(L, POOL_MT, "pool");
}


/* A method that would free, step or re-enter the policy, called from
 * inside that policy's pick() (a function policy holding its pool or
 * simulator): an error, not a use after free (p:close() in the policy
 * freed it under the pick; p:run() in it nested the event loop). */
static void
not_in_policy(lua_State *L, const struct fdp_pool *p, const char *what)
{
    if (fdp_policy_running(p)) {
        luaL_error(L, "%s: not from inside the pool's own policy", what);
    }
}


static int
opt_int(lua_State *L, const char *key, int def, int lo, int hi)
{
    int isnum, t = lua_getfield(L, 1, key);
    lua_Integer v;

    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v < lo || v > hi) {
        luaL_error(L, "bad option '%s' (an integer from %d to %d expected, "
                   "got %s)", key, lo, hi, lua_tostring(L, -1)
                   ? lua_tostring(L, -1) : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return (int) v;
}


static char *
xstrdup(lua_State *L, const char *s)
{
    char *d = strdup(s);

    if (d == NULL) {
        luaL_error(L, "out of memory");
    }
    return d;
}


/* Whether the value at idx is anything but a string holding a NUL byte
 * (C would read it as the part before the NUL: "127.0.0.1:0\0junk"
 * bound 127.0.0.1:0, "app.lua\0x" loaded app.lua). */
static int
nul_free(lua_State *L, int idx)
{
    size_t n;
    const char *v;

    if (lua_type(L, idx) != LUA_TSTRING) {
        return 1;
    }
    v = lua_tolstring(L, idx, &n);
    return strlen(v) == n;
}


/* Raises for option key's value (at -1, the key at -2 as check_keys
 * leaves it... here pushed again) holding a NUL byte: itself, or in a
 * list (listen, args, exec_argv, tls_cert, tls_key) or in shared's
 * names and sizes. */
static void
check_nul(lua_State *L, const char *key)
{
    int bad;

    lua_getfield(L, 1, key);
    bad = !nul_free(L, -1);
    if (!bad && lua_type(L, -1) == LUA_TTABLE) {
        lua_pushnil(L);
        while (!bad && lua_next(L, -2) != 0) {
            bad = !nul_free(L, -1) || !nul_free(L, -2);
            lua_pop(L, 1);
        }
        if (bad) {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (bad) {
        luaL_error(L, "bad option '%s' (a string holds a NUL byte)", key);
    }
}


static void
check_keys(lua_State *L)
{
    static const char *const known[] = {
        "handler", "args", "listen", "workers", "concurrency", "policy",
        "control", "grace", "log_level", "timeout", "max_requests", "user",
        "io_timeout", "metrics", "max_memory", "accept_filter",
        "max_conns_per_ip", "max_pending", "worker_idle_timeout",
        "reconfigure", "slow", "slow_log", "drain_delay", "exec_argv",
        "start_timeout",
        "cpu_affinity", "tls_cert", "tls_key", "shared", "sched",
        NULL
    };

    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int i, ok = 0;

        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            for (i = 0; known[i]; i++) {
                if (strcmp(lua_tostring(L, -1), known[i]) == 0) {
                    ok = 1;
                }
            }
        }
        if (!ok) {
            luaL_error(L, "unknown option '%s' in fdpool.pool{}",
                       luaL_tolstring(L, -1, NULL));
        }
        check_nul(L, lua_tostring(L, -1));
    }
}


/* cpu_affinity = "auto" | "0,2-3" (a bad one: nil, message, EINVAL). */
static int
opt_affinity(lua_State *L, struct fdp_pool *p)
{
    int r = 0;

    if (lua_getfield(L, 1, "cpu_affinity") != LUA_TNIL) {
        char err[160];

        r = fdp_pool_set_affinity(p, luaL_checkstring(L, -1), err, sizeof(err));
        if (r < 0) {
            return fdp_pushfailmsg(L, err, r);
        }
    }
    lua_pop(L, 1);
    return 0;
}


/* sched = "master" (default) | "batch" | "other": who runs SCHED_BATCH
 * (pool.c's sched_master, sched_child). Read at start; a reload keeps
 * the running pool's (start_only warns when it changed). */
static const char *const sched_names[] = { "master", "batch", "other", NULL };

static void
opt_sched(lua_State *L, struct fdp_pool *p)
{
    if (lua_getfield(L, 1, "sched") != LUA_TNIL) {
        int i;

        for (i = 0; lua_type(L, -1) == LUA_TSTRING && sched_names[i]; i++) {
            if (strcmp(lua_tostring(L, -1), sched_names[i]) == 0) {
                break;
            }
        }
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING && sched_names[i],
                      1, "sched must be master, batch or other");
        p->sched = i;
    }
    lua_pop(L, 1);
}


/* workers = n | "MIN-MAX" | {min = MIN, max = MAX}: a fixed count, or
 * workers on demand (max_workers 0: fixed); worker_idle_timeout. */
static void
opt_workers(lua_State *L, struct fdp_pool *p)
{
    lua_Integer min = 0, max = 0;
    int t = lua_getfield(L, 1, "workers"), ok = 1;

    if (t == LUA_TSTRING && !lua_isinteger(L, -1)) {
        const char *s = lua_tostring(L, -1);
        char *end;

        errno = 0;
        min = (lua_Integer) strtol(s, &end, 10);
        ok = end != s && *end == '-' && s[0] >= '0' && s[0] <= '9';
        if (end != s && *end == '\0' && s[0] >= '0' && s[0] <= '9') {
            ok = 1;                 /* "4": fixed */
            max = -1;
        } else if (ok) {
            s = end + 1;
            max = (lua_Integer) strtol(s, &end, 10);
            ok = end != s && *end == '\0' && s[0] >= '0' && s[0] <= '9'
                 && errno == 0;
        }
    } else if (t == LUA_TTABLE) {
        int a = lua_getfield(L, -1, "min"), b = lua_getfield(L, -2, "max");

        min = lua_tointegerx(L, -2, &ok);
        max = ok ? lua_tointegerx(L, -1, &ok) : 0;
        ok = ok && a == LUA_TNUMBER && b == LUA_TNUMBER;
        lua_pop(L, 2);
    } else {
        lua_pop(L, 1);
        p->nworkers = opt_int(L, "workers",
                              (int) sysconf(_SC_NPROCESSORS_ONLN), 1,
                              FDP_MAX_WORKERS);
        p->max_workers = p->min_workers = 0;
        ok = -1;
    }
    if (ok >= 0 && max == -1) {
        luaL_argcheck(L, min >= 1 && min <= FDP_MAX_WORKERS, 1, "bad "
                      "option 'workers' (1 to 256 expected)");
        lua_pop(L, 1);
        p->nworkers = (int) min;
        p->max_workers = p->min_workers = 0;
    } else if (ok >= 0) {
        if (!ok || min < 1 || max < min || max > FDP_MAX_WORKERS) {
            luaL_error(L, "bad option 'workers' (N, \"MIN-MAX\" or {min = "
                       "MIN, max = MAX} with 1 <= MIN <= MAX <= %d expected, "
                       "got %s)", FDP_MAX_WORKERS, luaL_tolstring(L, -1,
                                                                   NULL));
        }
        lua_pop(L, 1);
        p->min_workers = (int) min;
        p->max_workers = (int) max;
        p->nworkers = (int) max;
    }
    if (lua_getfield(L, 1, "worker_idle_timeout") != LUA_TNIL) {
        p->idle_timeout = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->idle_timeout > 0 && p->idle_timeout <= 1e6, 1,
                      "worker_idle_timeout must be a number of seconds "
                      "above 0");
    }
    lua_pop(L, 1);
}


/* workers, concurrency, grace, max_requests, max_conns_per_ip,
 * max_pending, accept_filter, max_memory, sched, cpu_affinity. */
static int
opt_limits(lua_State *L, struct fdp_pool *p)
{
    opt_workers(L, p);
    p->concurrency = opt_int(L, "concurrency", 1024, 1, FDP_MAX_CONCURRENCY);
    if (lua_getfield(L, 1, "grace") != LUA_TNIL) {
        p->graceful_grace = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->graceful_grace >= 0 && p->graceful_grace <= 1e9,
                      1, "grace must be 0 to 1e9 seconds");
    }
    lua_pop(L, 1);
    p->max_requests = opt_int(L, "max_requests", 0, 0, 0x7fffffff);
    p->max_conns_per_ip = opt_int(L, "max_conns_per_ip", 0, 0, 0x7fffffff);
    p->max_pending = opt_int(L, "max_pending", FDP_PENDING_MAX_DEFAULT, 1,
                             1 << 20);
    if (lua_getfield(L, 1, "accept_filter") != LUA_TNIL) {
        const char *af = luaL_checkstring(L, -1);

        p->accept_filter = strcmp(af, "auto") == 0 ? FDP_AF_AUTO
                           : fdp_acceptf_parse(af);
        luaL_argcheck(L, p->accept_filter >= 0 || strcmp(af, "auto") == 0,
                      1, "accept_filter must be none, data, http or auto");
    }
    lua_pop(L, 1);
    /* MiB per worker: its Lua heap in handler code, and its RssAnon. */
    p->max_memory = (uint64_t) opt_int(L, "max_memory", 0, 0, 4194304) << 20;
    opt_sched(L, p);
    return opt_affinity(L, p);
}


/* shared = {NAME = "10m" | bytes, ...}: the dictionaries, made now (the
 * master maps them before any worker forks). 0, or 3 with nil, message,
 * errno pushed. */
static int
opt_shared(lua_State *L, struct fdp_pool *p)
{
    if (lua_getfield(L, 1, "shared") != LUA_TNIL) {
        luaL_argcheck(L, lua_istable(L, -1), 1, "shared must be a table "
                      "{NAME = SIZE}");
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            const char *size_s = NULL;
            uint64_t size = 0;
            int r;

            if (lua_type(L, -2) != LUA_TSTRING) {
                return luaL_error(L, "shared: names must be strings");
            }
            if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0) {
                size = (uint64_t) lua_tointeger(L, -1);
            } else if (lua_type(L, -1) == LUA_TSTRING) {
                size_s = lua_tostring(L, -1);
            } else {
                size_s = "";
            }
            r = fdp_shzone_add(p, lua_tostring(L, -2), size_s, size);
            if (r < 0) {
                return fdp_pushfailmsg(L, p->error, r);
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return 0;
}


/* user = "name[:group]": checked now (a worker cannot say why
 * later). 0, or 3 with nil, message, errno pushed (EINVAL: no such user
 * or group; EPERM: not root). */
static int
opt_user(lua_State *L, struct fdp_pool *p)
{
    if (lua_getfield(L, 1, "user") != LUA_TNIL) {
        const char *spec = luaL_checkstring(L, -1);
        char name[256], *colon;
        struct passwd *pw;

        snprintf(name, sizeof(name), "%s", spec);
        colon = strchr(name, ':');
        if (colon) {
            *colon++ = '\0';
        }
        pw = getpwnam(name);
        if (pw == NULL) {
            lua_pushfstring(L, "unknown user '%s'", name);
            return fdp_pushfailmsg(L, lua_tostring(L, -1), -EINVAL);
        }
        p->user_uid = pw->pw_uid;
        p->user_gid = pw->pw_gid;
        if (colon && *colon) {
            struct group *gr = getgrnam(colon);

            if (gr == NULL) {
                lua_pushfstring(L, "unknown group '%s'", colon);
                return fdp_pushfailmsg(L, lua_tostring(L, -1), -EINVAL);
            }
            p->user_gid = gr->gr_gid;
        }
        if (geteuid() != 0) {
            return fdp_pushfailmsg(L, "user: dropping privileges needs root",
                                -EPERM);
        }
        p->user_name = xstrdup(L, name);
    }
    lua_pop(L, 1);
    return 0;
}


/* Option name (a string or a list of strings) into a fresh array of
 * copies; its length. */
static int
string_list(lua_State *L, const char *name, char ***out)
{
    int i, n;

    *out = NULL;
    lua_getfield(L, 1, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    }
    luaL_argcheck(L, lua_istable(L, -1), 1, lua_pushfstring(L, "%s must be "
                  "a file name or a list of them", name));
    n = (int) luaL_len(L, -1);
    luaL_argcheck(L, n <= FDP_TLS_MAX_CERTS, 1, lua_pushfstring(L, "at most "
                  "%d %s files", FDP_TLS_MAX_CERTS, name));
    *out = calloc((size_t) n + 1, sizeof(char *));
    if (*out == NULL) {
        luaL_error(L, "out of memory");
    }
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            luaL_argerror(L, 1, lua_pushfstring(L, "%s[%d] must be a file "
                          "name", name, i + 1));
        }
        (*out)[i] = xstrdup(L, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return n;
}


/* tls_cert, tls_key: pairs (the first the default certificate, the
 * others chosen by SNI). Loaded by pool:start(), before any fork. */
static int
opt_tls(lua_State *L, struct fdp_pool *p)
{
    int nc = string_list(L, "tls_cert", &p->tls_cert);
    int nk = string_list(L, "tls_key", &p->tls_key);

    p->ntls = nc < nk ? nc : nk;
    if (nc != nk) {
        lua_pushfstring(L, "tls_cert and tls_key come in pairs (got %d "
                        "certificate(s) and %d key(s))", nc, nk);
        return fdp_pushfailmsg(L, lua_tostring(L, -1), -EINVAL);
    }
    return 0;
}


/* io_timeout, timeout, log_level. */
static int
opt_timeouts(lua_State *L, struct fdp_pool *p)
{
    if (lua_getfield(L, 1, "io_timeout") != LUA_TNIL) {
        p->io_timeout = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->io_timeout >= 0 && p->io_timeout <= 1e9, 1,
                      "io_timeout must be 0 to 1e9 seconds");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "timeout") != LUA_TNIL) {
        p->timeout = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->timeout >= 0 && p->timeout <= 1e9, 1,
                      "timeout must be 0 to 1e9 seconds");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "log_level") != LUA_TNIL) {
        lua_pushcfunction(L, l_set_log_level);
        lua_insert(L, -2);
        lua_call(L, 1, 0);
    } else {
        lua_pop(L, 1);
    }
    return 0;
}


/* slow, drain_delay, start_timeout (docs/operations.md); a reload reads
 * them again. */
static void
opt_delays(lua_State *L, struct fdp_pool *p)
{
    if (lua_getfield(L, 1, "slow") != LUA_TNIL) {
        p->slow = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->slow >= 0 && p->slow <= 1e9, 1,
                      "slow must be 0 to 1e9 seconds");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "drain_delay") != LUA_TNIL) {
        p->drain_delay = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->drain_delay >= 0 && p->drain_delay <= 3600, 1,
                      "drain_delay must be 0 to 3600 seconds");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "start_timeout") != LUA_TNIL) {
        p->start_timeout = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->start_timeout >= 0.1
                      && p->start_timeout <= 60, 1,
                      "start_timeout must be 0.1 to 60 seconds");
    }
    lua_pop(L, 1);
}


/* slow_log, exec_argv, and opt_delays. The slow log is opened here,
 * append-only, CLOEXEC (workers inherit the master's descriptor, so
 * --user needs no write access to it). 0, or 3 with nil, message, errno
 * pushed (the open's errno). */
static int
opt_ops(lua_State *L, struct fdp_pool *p)
{
    opt_delays(L, p);
    if (lua_getfield(L, 1, "slow_log") != LUA_TNIL) {
        const char *path;

        if (lua_type(L, -1) != LUA_TSTRING) {
            /* (a number made a file named after it: "-nan", "1e+308") */
            return luaL_error(L, "bad option 'slow_log' (a file name "
                              "expected, got %s)", luaL_typename(L, -1));
        }
        path = lua_tostring(L, -1);

        p->slow_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC
                          | O_NOCTTY, 0640);
        if (p->slow_fd < 0) {
            int e = errno;

            lua_pushfstring(L, "cannot open slow log %s (%s)", path,
                            strerror(e));
            return fdp_pushfailmsg(L, lua_tostring(L, -1), -e);
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "exec_argv") != LUA_TNIL) {
        /* pool upgrade re-executes this command line with the binary
         * running now (`pool run` sets it; without it upgrade is
         * refused). */
        lua_Integer i, k;
        char exe[4096];
        ssize_t n;

        luaL_checktype(L, -1, LUA_TTABLE);
        k = luaL_len(L, -1);
        luaL_argcheck(L, k >= 1 && k < 4096, 1, "exec_argv must be a list "
                      "of 1 or more strings");
        p->exec_argv = calloc((size_t) k + 1, sizeof(char *));
        if (p->exec_argv == NULL) {
            return luaL_error(L, "out of memory");
        }
        for (i = 1; i <= k; i++) {
            lua_geti(L, -1, i);
            p->exec_argv[i - 1] = xstrdup(L, luaL_checkstring(L, -1));
            lua_pop(L, 1);
        }
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
            exe[n] = '\0';
            p->exe = xstrdup(L, exe);
        }
    }
    lua_pop(L, 1);
    return 0;
}


/* handler (a function, a table or a script, compiled now) and args.
 * 0, or 3 with nil, message, errno pushed (the open's errno for a
 * script that cannot be read, EINVAL for one that does not compile). */
static int
opt_handler(lua_State *L, struct fdp_pool *p)
{
    int t, i;

    t = lua_getfield(L, 1, "handler");
    if (t == LUA_TTABLE && lua_getfield(L, -1, "handle") != LUA_TFUNCTION) {
        /* (else each worker failed at start, the pool stopping with
         * "the handler must return ... (got nil)") */
        return luaL_error(L, "bad option 'handler' (a table handler needs "
                          "a function 'handle', got %s)",
                          luaL_typename(L, -1));
    }
    if (t == LUA_TTABLE) {
        lua_pop(L, 1);
    }
    if (t == LUA_TFUNCTION || t == LUA_TTABLE) {
        p->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (t == LUA_TSTRING) {
        const char *path = lua_tostring(L, -1);
        int r, e;

        p->script = xstrdup(L, path);
        lua_pop(L, 1);
        errno = 0;
        r = luaL_loadfilex(L, p->script, "t");
        e = errno;
        if (r != LUA_OK) {
            return fdp_pushfailmsg(L, lua_tostring(L, -1),
                                r == LUA_ERRFILE ? -(e > 0 ? e : EIO)
                                : r == LUA_ERRMEM ? -ENOMEM : -EINVAL);
        }
        lua_pop(L, 1);
    } else {
        return luaL_error(L, "bad option 'handler' (a function, a table or "
                          "a script path expected, got %s)",
                          luaL_typename(L, -1));
    }

    if (lua_getfield(L, 1, "args") != LUA_TNIL) {
        lua_Integer k;

        luaL_checktype(L, -1, LUA_TTABLE);
        k = luaL_len(L, -1);
        p->args = calloc((size_t) k + 1, sizeof(char *));
        if (p->args == NULL) {
            return luaL_error(L, "out of memory");
        }
        for (i = 1; i <= k; i++) {
            lua_geti(L, -1, i);
            p->args[p->nargs++] = xstrdup(L, luaL_checkstring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return 0;
}


/* policy, metrics, control. */
static int
opt_policy(lua_State *L, struct fdp_pool *p)
{
    int t;

    t = lua_getfield(L, 1, "policy");
    if (t == LUA_TFUNCTION) {
        p->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (t == LUA_TSTRING) {
        p->policy_name = xstrdup(L, lua_tostring(L, -1));
        lua_pop(L, 1);
    } else if (t == LUA_TNIL) {
        lua_pop(L, 1);
    } else {
        return luaL_error(L, "bad option 'policy' (a name, a path or a "
                          "function expected)");
    }

    if (lua_getfield(L, 1, "metrics") != LUA_TNIL) {
        p->metrics_addr = xstrdup(L, luaL_checkstring(L, -1));
    }
    lua_pop(L, 1);
    t = lua_getfield(L, 1, "control");
    if (t == LUA_TSTRING && lua_rawlen(L, -1) == 0) {
        return luaL_error(L, "bad option 'control' (a path or true expected, "
                          "got an empty string)");
    }
    if (t == LUA_TSTRING) {
        p->control_path = xstrdup(L, lua_tostring(L, -1));
    } else if (t == LUA_TBOOLEAN) {
        p->control_default = lua_toboolean(L, -1);
    } else if (t != LUA_TNIL) {
        return luaL_error(L, "bad option 'control' (a path or true "
                          "expected)");
    }
    lua_pop(L, 1);
    return 0;
}


/* A pool upgrade's new master: close the old master's listeners that the
 * configuration no longer names (systemd's stay), keeping the order of
 * the rest. */
static void
upgrade_drop_listeners(struct fdp_pool *p, int nadopted, const char *kept)
{
    int i, k = 0;

    for (i = 0; i < p->nlisten; i++) {
        struct fdp_listener *l = &p->listeners[i];

        if (i < nadopted && !kept[i] && !l->named) {
            fdp_log(FDP_LOG_INFO, 0, "upgrade: not taking over %s (no longer "
                    "in the configuration)", l->bound);
            if (strncmp(l->bound, "unix:", 5) == 0 && p->ndropped
                < FDP_MAX_LISTEN && (p->dropped[p->ndropped] =
                                     strdup(l->bound + 5)) != NULL) {
                (void) fdp_path_identity(p->dropped[p->ndropped],
                                         &p->dropped_id[p->ndropped][0],
                                         &p->dropped_id[p->ndropped][1]);
                p->ndropped++;
            }
            fdp_close(&l->fd);
            free(l->unix_path);
            continue;
        }
        if (k != i) {
            p->listeners[k] = *l;
        }
        p->listeners[k].io.data = &p->listeners[k];
        k++;
    }
    for (i = k; i < p->nlisten; i++) {
        memset(&p->listeners[i], 0, sizeof(p->listeners[i]));
        p->listeners[i].fd = -1;
    }
    p->nlisten = k;
}


/* The listeners: sockets passed by systemd, then listen. 0, or 3
 * with nil, message, errno pushed (EADDRINUSE, EACCES, EINVAL...). */
static int
opt_listen(lua_State *L, struct fdp_pool *p)
{
    int t, i, r, nadopted, named = 0;
    char kept[FDP_MAX_LISTEN] = { 0 };

    /* A pool upgrade's new master: the old master's listeners first
     * (systemd's, and each --listen address it bound, taken over as it
     * is); only addresses new in the configuration are bound below. */
    nadopted = r = fdp_upgrade_adopt(p);
    if (r < 0) {
        return fdp_pushfailmsg(L, p->error, r);
    }
    /* Sockets passed by systemd (LISTEN_FDS for this pid) come first;
     * with them, no default address is added. */
    r = nadopted ? 0 : fdp_pool_systemd_fds(p);
    if (r < 0) {
        return fdp_pushfailmsg(L, p->error, r);
    }
    for (i = 0; i < p->nlisten; i++) {
        named |= p->listeners[i].named;
    }
    t = lua_getfield(L, 1, "listen");
    if (t == LUA_TNIL && (named || (p->nlisten > 0 && !nadopted))) {
        lua_pop(L, 1);
        lua_newtable(L);
        t = LUA_TTABLE;
    } else if (t == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushliteral(L, "127.0.0.1:8080");
        t = LUA_TSTRING;
    }
    if (t == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    }
    luaL_argcheck(L, lua_istable(L, -1), 1, "listen must be an address or "
                  "a list of addresses");
    for (i = 1; i <= luaL_len(L, -1); i++) {
        const char *addr;
        int j;

        lua_geti(L, -1, i);
        addr = luaL_checkstring(L, -1);
        for (j = 0; j < nadopted; j++) {
            if (!kept[j] && !p->listeners[j].named
                && strcmp(p->listeners[j].addr, addr) == 0) {
                kept[j] = 1;
                break;
            }
        }
        if (j == nadopted && (r = fdp_pool_add_listen(p, addr)) < 0) {
            return fdp_pushfailmsg(L, p->error, r);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    upgrade_drop_listeners(p, nadopted, kept);
    if (p->nlisten == 0) {
        /* listen = {}: a pool that listens nowhere */
        return luaL_error(L, "bad option 'listen' (an address or a list of "
                          "1 to %d addresses expected, got an empty list)",
                          FDP_MAX_LISTEN);
    }
    return 0;
}


/* A policy by name or path must load now. 0, or 3 with nil, message,
 * errno pushed. */
static int
check_policy(lua_State *L, struct fdp_pool *p)
{
    if (p->policy_ref == LUA_NOREF) {
        char err[512];
        int r = fdp_policy_check(L, p->policy_name ? p->policy_name
                                 : "least_conn", err, sizeof(err));

        if (r < 0) {
            return fdp_pushfailmsg(L, err, r);
        }
    }
    return 0;
}


/* ---- reconfigure: a reload re-reads the configuration --------------- */

/* What a reload's configuration may change, as it was: restored when the
 * reload is refused (phase 2), freed when the new generation serves. */
struct saved_conf {
    char *script;
    char **args;
    int nargs;
    int handler_ref;
    int policy_ref;
    char *policy_name;
    int concurrency, max_requests, max_conns_per_ip, max_pending;
    int accept_filter;
    double timeout, io_timeout, graceful_grace, idle_timeout;
    uint64_t max_memory;
    char **tls_cert, **tls_key;     /* NULL-terminated lists */
    int ntls;
    double slow, drain_delay, start_timeout;
};


static void
free_args(char **args, int nargs)
{
    int i;

    for (i = 0; i < nargs; i++) {
        free(args[i]);
    }
    free(args);
}


/* A NULL-terminated list of strings (tls_cert, tls_key). */
static void
free_list(char **list)
{
    int i;

    for (i = 0; list != NULL && list[i] != NULL; i++) {
        free(list[i]);
    }
    free(list);
}


/* Swap what a reload may change between p and s (both ways). */
static void
swap_conf(struct fdp_pool *p, struct saved_conf *s)
{
    struct saved_conf t = *s;

#define SW(f) do { s->f = p->f; p->f = t.f; } while (0)
    SW(script); SW(args); SW(nargs); SW(handler_ref); SW(policy_ref);
    SW(policy_name); SW(concurrency); SW(max_requests); SW(max_conns_per_ip);
    SW(max_pending); SW(accept_filter); SW(timeout); SW(io_timeout);
    SW(graceful_grace); SW(idle_timeout); SW(max_memory);
    SW(tls_cert); SW(tls_key); SW(ntls);
    SW(slow); SW(drain_delay); SW(start_timeout);
#undef SW
}


/* Free a saved configuration's own strings and references. */
static void
drop_conf(lua_State *L, struct saved_conf *s)
{
    free(s->script);
    free_args(s->args, s->nargs);
    free(s->policy_name);
    free_list(s->tls_cert);
    free_list(s->tls_key);
    if (s->handler_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->handler_ref);
    }
    if (s->policy_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->policy_ref);
    }
    free(s);
}


/* Does the configuration at index 1 ask for other listeners (or another
 * control socket, metrics address or user) than p has? Raises with the
 * difference: those need new sockets, so `pool upgrade`. */
static void
same_sockets(lua_State *L, struct fdp_pool *p)
{
    char want[FDP_MAX_LISTEN * (FDP_ADDR_MAX + 1) + 1] = "";
    char have[sizeof(want)] = "";
    size_t wl = 0, hl = 0;
    int i, t, n, named = 0;

    for (i = 0; i < p->nlisten; i++) {
        if (p->listeners[i].named) {
            named = 1;
        } else {
            hl += (size_t) snprintf(have + hl, sizeof(have) - hl, "%s%s",
                                    hl ? " " : "", p->listeners[i].addr);
        }
    }
    t = lua_getfield(L, 1, "listen");
    if (t == LUA_TSTRING) {
        snprintf(want, sizeof(want), "%s", lua_tostring(L, -1));
    } else if (t == LUA_TTABLE) {
        n = (int) luaL_len(L, -1);
        for (i = 1; i <= n && wl < sizeof(want); i++) {
            lua_geti(L, -1, i);
            wl += (size_t) snprintf(want + wl, sizeof(want) - wl, "%s%s",
                                    wl ? " " : "", luaL_tolstring(L, -1,
                                                                  NULL));
            lua_pop(L, 2);
        }
    } else if (!named) {
        snprintf(want, sizeof(want), "127.0.0.1:8080");
    }
    lua_pop(L, 1);
    if (strcmp(want, have) != 0) {
        luaL_error(L, "the listen addresses changed (from '%s' to '%s'): "
                   "new listeners need `pool upgrade` (or a restart)",
                   have, want);
    }
    if (lua_getfield(L, 1, "control") == LUA_TSTRING && p->control_path
        && strcmp(lua_tostring(L, -1), p->control_path) != 0) {
        luaL_error(L, "the control socket changed: it needs a restart");
    }
    lua_pop(L, 1);
    t = lua_getfield(L, 1, "metrics");
    if ((t == LUA_TSTRING) != (p->metrics_addr != NULL)
        || (t == LUA_TSTRING && strcmp(lua_tostring(L, -1),
                                       p->metrics_addr) != 0)) {
        luaL_error(L, "the metrics address changed: a new listener needs "
                   "`pool upgrade` (or a restart)");
    }
    lua_pop(L, 1);
    t = lua_getfield(L, 1, "user");
    if ((t == LUA_TSTRING) != (p->user_name != NULL)) {
        luaL_error(L, "the user changed: it needs a restart");
    }
    if (t == LUA_TSTRING) {
        char name[256], *colon;

        snprintf(name, sizeof(name), "%s", lua_tostring(L, -1));
        if ((colon = strchr(name, ':')) != NULL) {
            *colon = '\0';
        }
        if (strcmp(name, p->user_name) != 0) {
            luaL_error(L, "the user changed: it needs a restart");
        }
    }
    lua_pop(L, 1);
}


/* Does the configuration at index 1 ask for the shared dictionaries p
 * has (names and sizes)? Raises otherwise: the mappings are made before
 * the first worker forks and live as long as the master. */
static void
same_shared(lua_State *L, struct fdp_pool *p)
{
    int n = 0, i;

    if (lua_getfield(L, 1, "shared") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            uint64_t size = 0;
            char err[128];
            int found = 0;

            if (lua_isinteger(L, -1)) {
                size = (uint64_t) lua_tointeger(L, -1);
            } else if (lua_type(L, -1) == LUA_TSTRING) {
                (void) fdp_shd_parse_size(lua_tostring(L, -1), &size, err,
                                          sizeof(err));
            }
            for (i = 0; i < p->nshared; i++) {
                found |= lua_type(L, -2) == LUA_TSTRING
                         && strcmp(p->shared[i].name,
                                   lua_tostring(L, -2)) == 0
                         && p->shared[i].size == size;
            }
            if (!found) {
                luaL_error(L, "the shared dictionaries changed: they need a "
                           "restart");
            }
            n++;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (n != p->nshared) {
        luaL_error(L, "the shared dictionaries changed: they need a restart");
    }
}


/* sched and cpu_affinity are read at start only (the master's policy,
 * which every worker inherits; the CPUs of the slots): a reload that
 * changes them says so at warn level and keeps the running ones. */
static void
start_only(const struct fdp_pool *p, const struct fdp_pool *q)
{
    if (q->sched != p->sched) {
        fdp_log(FDP_LOG_WARN, 0, "reload: sched changed to '%s': read at "
                "start only, the pool keeps '%s' (`pool upgrade` or a "
                "restart applies it)", sched_names[q->sched],
                sched_names[p->sched]);
    }
    if (q->ncpus != p->ncpus
        || memcmp(q->cpus, p->cpus, sizeof(p->cpus[0]) * (size_t) p->ncpus)) {
        fdp_log(FDP_LOG_WARN, 0, "reload: cpu_affinity changed: read at "
                "start only, the workers keep their CPUs (`pool upgrade` "
                "or a restart applies it)");
    }
}


/*
 * (Under lua_pcall.) Call the pool's reconfigure function for a new
 * settings table, check it as fdpool.pool{} would (in a scratch pool,
 * collected if anything raises) and swap it into p, saving the settings
 * it replaces in p->reconf_saved. Raises with the one-line reason.
 */
static int
reconf_read(lua_State *L)
{
    struct fdp_pool *p = lua_touserdata(L, 1), *q;
    struct saved_conf *s;
    struct lpool *lp;
    int r;

    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->reconf_ref);
    lua_call(L, 0, 2);
    if (!lua_istable(L, 1)) {
        return luaL_error(L, "%s", lua_isstring(L, 2) ? lua_tostring(L, 2)
                          : "the configuration is not a table");
    }
    lua_settop(L, 1);
    check_keys(L);
    same_sockets(L, p);
    same_shared(L, p);
    lp = lua_newuserdatauv(L, sizeof(*lp), 0);
    lp->p = NULL;
    luaL_setmetatable(L, POOL_MT);
    q = lp->p = fdp_pool_new();
    if (q == NULL) {
        return luaL_error(L, "out of memory");
    }
    q->L = L;
    if ((r = opt_limits(L, q)) != 0 || (r = opt_timeouts(L, q)) != 0
        || (r = opt_tls(L, q)) != 0
        || (r = opt_handler(L, q)) != 0 || (r = opt_policy(L, q)) != 0
        || (r = check_policy(L, q)) != 0) {
        return luaL_error(L, "%s", lua_tostring(L, -2));
    }
    opt_delays(L, q);
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return luaL_error(L, "out of memory");
    }
    /* q's values into s, then s (the new) swapped with p's (the old). */
    s->script = q->script;
    s->args = q->args;
    s->nargs = q->nargs;
    s->handler_ref = q->handler_ref;
    s->policy_ref = q->policy_ref;
    s->policy_name = q->policy_name;
    q->script = NULL;
    q->args = NULL;
    q->nargs = 0;
    q->handler_ref = q->policy_ref = LUA_NOREF;
    q->policy_name = NULL;
    s->concurrency = q->concurrency;
    s->max_requests = q->max_requests;
    s->max_conns_per_ip = q->max_conns_per_ip;
    s->max_pending = q->max_pending;
    s->accept_filter = q->accept_filter;
    s->timeout = q->timeout;
    s->io_timeout = q->io_timeout;
    s->graceful_grace = q->graceful_grace;
    s->idle_timeout = q->idle_timeout;
    s->max_memory = q->max_memory;
    s->tls_cert = q->tls_cert;      /* the certificates' paths: the */
    s->tls_key = q->tls_key;        /* reload reads them next */
    s->ntls = q->ntls;
    q->tls_cert = q->tls_key = NULL;
    q->ntls = 0;
    s->slow = q->slow;
    s->drain_delay = q->drain_delay;
    s->start_timeout = q->start_timeout;
    swap_conf(p, s);
    p->reconf_saved = s;
    p->reconf_workers[0] = q->max_workers ? q->min_workers : q->nworkers;
    p->reconf_workers[1] = q->max_workers;
    start_only(p, q);
    return 0;
}


/* The pool's reconfigure hook (pool.h): phase 0 reads and applies,
 * 1 keeps, 2 restores what phase 0 replaced. */
static int
lpool_reconfigure(struct fdp_pool *p, int phase, char *err, size_t errlen)
{
    lua_State *L = p->L;
    struct saved_conf *s = p->reconf_saved;
    int top = lua_gettop(L), r;

    if (phase != 0) {
        if (s != NULL && phase == 2) {
            swap_conf(p, s);        /* the old back, the new into s */
        }
        if (s != NULL) {
            drop_conf(L, s);
        }
        p->reconf_saved = NULL;
        p->reconf_workers[0] = p->reconf_workers[1] = 0;
        return 0;
    }
    if (s != NULL) {                /* cannot happen: one reload at once */
        drop_conf(L, s);
        p->reconf_saved = NULL;
    }
    lua_pushcfunction(L, reconf_read);
    lua_pushlightuserdata(L, p);
    r = lua_pcall(L, 1, 0, 0);
    if (r != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        char *nl;

        snprintf(err, errlen, "%s", msg ? msg : "error in the configuration");
        if ((nl = strchr(err, '\n')) != NULL) {
            *nl = '\0';
        }
        lua_settop(L, top);
        return r == LUA_ERRMEM ? -ENOMEM : -EINVAL;
    }
    lua_settop(L, top);
    fdp_log(FDP_LOG_INFO, 0, "reload: configuration read again");
    return 0;
}


/*
 * fdpool.pool{handler = fn | "file.lua", args = {...}, listen = addr |
 * {addr...}, workers = n, concurrency = n, policy = name | path | fn,
 * control = path, grace = seconds} -> pool, or nil, message, errno.
 * Binds the listeners now (a port in use fails here: EADDRINUSE),
 * compiles a script handler (one that cannot be read: its open's errno;
 * a syntax error: EINVAL); forks nothing yet. Misuse (a bad option)
 * raises.
 */
static int
l_pool(lua_State *L)
{
    struct lpool *lp;
    struct fdp_pool *p;
    int r;

    luaL_checktype(L, 1, LUA_TTABLE);
    check_keys(L);
    lp = lua_newuserdatauv(L, sizeof(*lp), 0);
    lp->p = NULL;
    luaL_setmetatable(L, POOL_MT);
    p = fdp_pool_new();
    if (p == NULL) {
        return luaL_error(L, "out of memory");
    }
    lp->p = p;
    p->L = L;
    /* What the pool runs above itself: the worker's main in each child,
     * the control socket as its service. */
    p->worker_main = fdp_worker_main;
    p->service = &fdp_control_service;
    if ((r = opt_limits(L, p)) != 0 || (r = opt_shared(L, p)) != 0
        || (r = opt_user(L, p)) != 0
        || (r = opt_timeouts(L, p)) != 0 || (r = opt_ops(L, p)) != 0
        || (r = opt_tls(L, p)) != 0
        || (r = opt_handler(L, p)) != 0
        || (r = opt_policy(L, p)) != 0 || (r = opt_listen(L, p)) != 0
        || (r = check_policy(L, p)) != 0) {
        return r;
    }
    if (lua_getfield(L, 1, "reconfigure") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TFUNCTION);
        p->reconf_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        p->reconfigure = lpool_reconfigure;
    } else {
        lua_pop(L, 1);
    }
    return 1;
}


/* pool:start() -> true, or nil, message, errno: forks the workers. */
/* While a pool runs, the registry keeps its userdata alive: a program
 * (or a forked worker) that drops its last reference must not have the
 * pool collected under the running loop. */
static void
anchor(lua_State *L, struct fdp_pool *p, int on)
{
    if (on) {
        lua_pushvalue(L, 1);
    } else {
        lua_pushnil(L);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, p);
}


static int
pool_start(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);

    int r;

    not_in_policy(L, p, "pool:start");
    anchor(L, p, 1);
    r = fdp_pool_start(p);
    if (r < 0) {
        anchor(L, p, 0);
        return fdp_pushfailmsg(L, p->error, r);
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* pool:step([seconds]) -> true while running, false once stopped (then
 * nil-able second value: the start error, if the pool failed). */
static int
pool_step(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    lua_Number s = luaL_optnumber(L, 2, -1);
    int r;

    not_in_policy(L, p, "pool:step");
    /* (NaN or past INT_MAX ms was an undefined conversion) */
    luaL_argcheck(L, s == s, 2, "seconds must not be NaN");
    r = fdp_pool_step(p, s < 0 ? -1 : s >= INT_MAX / 1000 ? INT_MAX
                      : (int) (s * 1000));

    if (!r) {
        anchor(L, p, 0);
    }
    lua_pushboolean(L, r);
    if (!r && p->failed) {
        lua_pushstring(L, p->error);
        return 2;
    }
    return 1;
}


/* pool:run() -> true when it has stopped; nil, message, errno when it
 * cannot start; nil, message when the first generation of workers could
 * not start (their own error: no errno). */
static int
pool_run(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    int r;

    not_in_policy(L, p, "pool:run");
    anchor(L, p, 1);
    if (!p->started && (r = fdp_pool_start(p)) < 0) {
        anchor(L, p, 0);
        return fdp_pushfailmsg(L, p->error, r);
    }
    while (fdp_pool_step(p, -1)) {
        p->L = L;
    }
    anchor(L, p, 0);
    if (p->failed) {
        lua_pushnil(L);
        lua_pushstring(L, p->error);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


static int
pool_stop(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);

    fdp_pool_stop(p, lua_toboolean(L, 2));
    lua_pushboolean(L, 1);
    return 1;
}


/* pool:reload() -> true (a new generation is starting; it replaces the
 * running one once READY, or is stopped and the refusal logged), or nil,
 * why, errno (refused at once: nothing changed). */
static int
pool_reload(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    int r;

    not_in_policy(L, p, "pool:reload");
    r = fdp_pool_reload(p);

    if (r < 0) {
        return fdp_pushfailmsg(L, p->error, r);
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* pool:scale(n) -> true, or nil, why, errno (EBUSY, ENOSPC). */
static int
pool_scale(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    int r;

    luaL_argcheck(L, n >= 1 && n <= FDP_MAX_WORKERS, 2, "workers must be "
                  "1 to 256");
    not_in_policy(L, p, "pool:scale");
    r = fdp_pool_scale(p, (int) n);
    if (r < 0) {
        lua_pushfstring(L, "cannot scale now: %s", p->error);
        p->error[0] = '\0';
        return fdp_pushfailmsg(L, lua_tostring(L, -1), r);
    }
    lua_pushboolean(L, 1);
    return 1;
}


static void
set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}


static void
set_num(lua_State *L, const char *k, lua_Number v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}


/* pool:status() -> a snapshot table of the pool and its workers. */
static int
pool_status(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    struct fdp_status_info info;
    const char *listen[FDP_MAX_LISTEN];
    int i, k;

    fdp_pool_status_info(p, &info, listen);
    lua_createtable(L, 0, 8);
    set_int(L, "pid", info.pid);
    lua_pushstring(L, info.state);
    lua_setfield(L, -2, "state");
    lua_pushstring(L, info.policy);
    lua_setfield(L, -2, "policy");
    lua_createtable(L, info.nlisten, 0);
    for (i = 0; i < info.nlisten; i++) {
        lua_pushstring(L, listen[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "listen");
    lua_createtable(L, info.nshared, 0);
    for (i = 0; i < info.nshared; i++) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, info.shared[i].name);
        lua_setfield(L, -2, "name");
        set_int(L, "size", (lua_Integer) info.shared[i].size);
        set_int(L, "used", (lua_Integer) info.shared[i].used);
        set_int(L, "keys", (lua_Integer) info.shared[i].keys);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "shared");
    set_int(L, "accepted", (lua_Integer) info.accepted);
    set_int(L, "queued", (lua_Integer) info.queued);
    set_int(L, "parked", (lua_Integer) info.parked);
    set_int(L, "pending", (lua_Integer) info.pending);
    lua_createtable(L, 0, 4);
    set_int(L, "deadline", (lua_Integer) info.closed[0]);
    set_int(L, "overflow", (lua_Integer) info.closed[1]);
    set_int(L, "per_ip", (lua_Integer) info.closed[2]);
    set_int(L, "peer_closed", (lua_Integer) info.closed[3]);
    set_int(L, "not_tls", (lua_Integer) info.closed[4]);
    lua_setfield(L, -2, "closed");
    set_int(L, "closed_by_peer", (lua_Integer) info.closed_by_peer);
    set_int(L, "offers", (lua_Integer) info.offers);
    set_int(L, "offers_back", (lua_Integer) info.offers_back);
    set_int(L, "crash_streak", info.crash_streak);
    if (info.crash_why) {
        lua_pushstring(L, info.crash_why);
        lua_setfield(L, -2, "crash");
    }
    if (info.reload_refused) {
        lua_pushstring(L, info.reload_refused);
        lua_setfield(L, -2, "reload_refused");
    }
    set_int(L, "fallbacks", (lua_Integer) info.fallbacks);
    set_int(L, "workers_min", info.workers_min);
    set_int(L, "workers_max", info.workers_max);
    set_int(L, "spawned", (lua_Integer) info.spawned);
    set_int(L, "retired_idle", (lua_Integer) info.retired_idle);
    if (info.scaled) {
        lua_pushstring(L, info.scaled);
        lua_setfield(L, -2, "scaled");
    }
    set_num(L, "started", info.started);
    lua_pushboolean(L, p->running);
    lua_setfield(L, -2, "running");
    lua_createtable(L, p->nworkers, 0);
    for (i = 0; i < p->nworkers; i++) {
        const struct fdp_slot *s = &p->workers[i].slot;

        lua_createtable(L, 0, 16);
        set_int(L, "id", s->id);
        set_int(L, "pid", s->pid);
        set_int(L, "generation", s->generation);
        lua_pushstring(L, fdp_slot_state(s));
        lua_setfield(L, -2, "state");
        set_int(L, "active", s->active);
        set_int(L, "capacity", s->capacity);
        set_int(L, "served", (lua_Integer) s->served);
        set_int(L, "bytes_in", (lua_Integer) s->bytes_in);
        set_int(L, "bytes_out", (lua_Integer) s->bytes_out);
        set_num(L, "started", s->started);
        set_num(L, "busy_since", s->busy_since);
        set_int(L, "restarts", s->restarts);
        if (s->last_exit_how != FDP_EXIT_NONE) {
            lua_createtable(L, 0, 3);
            lua_pushstring(L, s->last_exit_how == FDP_EXIT_CODE ? "exit"
                           : "signal");
            lua_setfield(L, -2, "how");
            set_int(L, "code", s->last_exit_code);
            if (s->last_exit_how == FDP_EXIT_SIGNAL) {
                lua_pushstring(L, fdp_signame(s->last_exit_code));
                lua_setfield(L, -2, "name");
            }
            lua_setfield(L, -2, "last_exit");
        }
        lua_createtable(L, 0, s->nkv);
        for (k = 0; k < s->nkv; k++) {
            lua_pushstring(L, s->kv[k].val);
            lua_setfield(L, -2, s->kv[k].key);
        }
        lua_setfield(L, -2, "fields");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "workers");
    return 1;
}


/* pool:addresses() -> {"127.0.0.1:43123", ...}: where it really listens. */
static int
pool_addresses(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    int i;

    lua_createtable(L, p->nlisten, 0);
    for (i = 0; i < p->nlisten; i++) {
        lua_pushstring(L, p->listeners[i].bound);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}


/*
 * __gc/__close: the owner stops a running pool (fast) and waits for its
 * workers; a forked child only frees its copy (never signals, never
 * unlinks).
 */
static int
pool_gc(lua_State *L)
{
    struct lpool *lp = luaL_checkudata(L, 1, POOL_MT);
    struct fdp_pool *p = lp->p;

    if (p == NULL) {
        return 0;
    }
    not_in_policy(L, p, "pool:close");
    p->L = L;
    if (getpid() == p->owner && p->running) {
        fdp_pool_stop(p, 0);
        while (fdp_pool_step(p, 100)) {
        }
    }
    if (getpid() == p->owner) {
        int i;

        if (p->handler_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, p->handler_ref);
        }
        if (p->policy_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, p->policy_ref);
        }
        if (p->reconf_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, p->reconf_ref);
        }
        if (p->reconf_saved != NULL) {
            drop_conf(L, p->reconf_saved);
            p->reconf_saved = NULL;
        }
        for (i = 0; i < p->nlisten; i++) {
            if (p->listeners[i].unix_path && p->listeners[i].fd >= 0) {
                (void) unlink(p->listeners[i].unix_path);
            }
        }
    }
    fdp_pool_free(p);
    lp->p = NULL;
    return 0;
}


static int
pool_tostring(lua_State *L)
{
    struct lpool *lp = luaL_checkudata(L, 1, POOL_MT);

    if (lp->p == NULL) {
        lua_pushliteral(L, "fdpool.pool (closed)");
    } else {
        lua_pushfstring(L, "fdpool.pool (%s)", lp->p->running ? "running"
                        : "stopped");
    }
    return 1;
}


/* ---- fdpool.sim: the master's dispatch decision without processes ---- */

#define SIM_MT "fdpool.simulator"

static struct fdp_pool *
checksim(lua_State *L)
{
    return checkpoolof(L, SIM_MT, "simulator");
}


/*
 * fdpool.simulator(policy, workers, capacity [, listener [, cpus
 * [, reference]]]) -> sim: a pool with no processes whose workers are all
 * running, for fdpool.sim; cpus[i]: worker i's CPU (as --cpu-affinity
 * pins it); reference: a built-in policy runs its Lua file instead of
 * its C fast path (the master's), so the two can be compared. The
 * policy (name, path or function) runs exactly as in the master:
 * sandbox, views, budget, checks, fallback.
 */
static int
l_simulator(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 2), cap = luaL_checkinteger(L, 3);
    const char *listener = luaL_optstring(L, 4, "127.0.0.1:8080");
    int ncpus = lua_istable(L, 5) ? (int) luaL_len(L, 5) : 0;
    struct lpool *lp;
    struct fdp_pool *p;
    int i;

    luaL_argcheck(L, n >= 1 && n <= FDP_MAX_WORKERS, 2, "1 to 256 workers");
    luaL_argcheck(L, cap >= 1 && cap <= FDP_MAX_CONCURRENCY, 3,
                  "capacity out of range");
    lp = lua_newuserdatauv(L, sizeof(*lp), 0);
    lp->p = NULL;
    luaL_setmetatable(L, SIM_MT);
    p = fdp_pool_new();
    if (p == NULL) {
        return luaL_error(L, "out of memory");
    }
    lp->p = p;
    p->L = L;
    p->simulated = 1;
    p->policy_lua = lua_toboolean(L, 6);
    p->nworkers = (int) n;
    p->concurrency = (int) cap;
    p->nlisten = 1;
    snprintf(p->listeners[0].addr, sizeof(p->listeners[0].addr), "%s",
             listener);
    for (i = 0; i < p->nworkers; i++) {
        struct fdp_slot *sl = &p->workers[i].slot;

        sl->state = FDP_W_RUNNING;
        sl->capacity = (int) cap;
        sl->pid = 0;
        sl->generation = 1;
        if (i < ncpus) {            /* worker i's CPU (--cpu-affinity) */
            lua_geti(L, 5, i + 1);
            sl->cpu = lua_isinteger(L, -1) ? (int) lua_tointeger(L, -1) : -1;
            lua_pop(L, 1);
        }
    }
    if (lua_isfunction(L, 1)) {
        lua_pushvalue(L, 1);
        p->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        p->policy_name = xstrdup(L, fdp_checkcstring(L, 1));
    }
    if (fdp_policy_open(p, p->error, sizeof(p->error)) < 0) {
        return luaL_error(L, "%s", p->error);
    }
    return 1;
}


/* sim:choose(peer [, cpu]) -> worker index, or nil (queued); and
 * whether the master would have fallen back to first_free. cpu: the CPU
 * that received the connection (conn.cpu). */
static int
sim_choose(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    const char *peer = luaL_checkstring(L, 2);
    struct fdp_pending c;
    char err[256];
    int fallback, idx;

    not_in_policy(L, p, "sim:choose");
    memset(&c, 0, sizeof(c));
    c.fd = -1;
    c.cpu = (int) luaL_optinteger(L, 3, -1);
    if (strcmp(peer, "unix") == 0) {
        c.peer.ss_family = AF_UNIX;
        c.peerlen = sizeof(sa_family_t);
    } else if (fdp_parse_addr(peer, &c.peer, &c.peerlen, err,
                              sizeof(err)) < 0) {
        return luaL_argerror(L, 2, err);
    }
    idx = fdp_pool_choose(p, &c, &fallback);
    if (idx < 0) {
        lua_pushnil(L);
    } else {
        lua_pushinteger(L, idx + 1);
    }
    lua_pushboolean(L, fallback);
    return 2;
}


/* sim:start(i) / sim:finish(i): a connection begins / ends on worker i. */
static int
sim_start(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    lua_Integer i = luaL_checkinteger(L, 2);

    luaL_argcheck(L, i >= 1 && i <= p->nworkers, 2, "no such worker");
    p->workers[i - 1].slot.active++;
    return 0;
}


static int
sim_finish(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    struct fdp_slot *sl;

    luaL_argcheck(L, i >= 1 && i <= p->nworkers, 2, "no such worker");
    sl = &p->workers[i - 1].slot;
    luaL_argcheck(L, sl->active > 0, 2, "worker has no connection");
    sl->active--;
    sl->served++;
    return 0;
}


/* sim:set(i, key, value): a custom status field, as fdpool.worker.set. */
static int
sim_set(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    const char *k = luaL_checkstring(L, 3), *v = luaL_tolstring(L, 4, NULL);

    luaL_argcheck(L, i >= 1 && i <= p->nworkers, 2, "no such worker");
    luaL_argcheck(L, strlen(k) > 0 && strlen(k) < FDP_KEY_MAX, 3,
                  "key must be 1 to 31 bytes");
    luaL_argcheck(L, strlen(v) < FDP_VAL_MAX, 4, "value too long");
    (void) fdp_slot_set_kv(&p->workers[i - 1].slot, k, v);
    return 0;
}


/* sim:state(i, "none" | "starting" | "running"): workers on demand in
 * fdpool.sim: a slot without a process ("none", pid -1) and one starting
 * are skipped by the checks, as in the master. */
static int
sim_state(lua_State *L)
{
    static const char *const names[] = { "none", "starting", "running",
                                         NULL };
    static const int states[] = { FDP_W_NONE, FDP_W_STARTING,
                                  FDP_W_RUNNING };
    struct fdp_pool *p = checksim(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    int k = luaL_checkoption(L, 3, NULL, names);
    struct fdp_slot *sl;

    luaL_argcheck(L, i >= 1 && i <= p->nworkers, 2, "no such worker");
    sl = &p->workers[i - 1].slot;
    luaL_argcheck(L, k != 0 || sl->active == 0, 3, "worker has connections");
    sl->state = states[k];
    sl->pid = k == 0 ? -1 : 0;
    return 0;
}


static int
sim_fallbacks(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer) checksim(L)->fallbacks);
    return 1;
}


static int
sim_gc(lua_State *L)
{
    struct lpool *lp = luaL_checkudata(L, 1, SIM_MT);

    if (lp->p) {
        not_in_policy(L, lp->p, "sim:close");
        if (lp->p->policy_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, lp->p->policy_ref);
        }
        lp->p->L = L;
        fdp_policy_close(lp->p);
        fdp_pool_free(lp->p);
        lp->p = NULL;
    }
    return 0;
}



void
fdp_lpool_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "pool", l_pool },
        { "simulator", l_simulator },
        { "set_log_level", l_set_log_level },
        { NULL, NULL }
    };
    static const luaL_Reg pool_meta[] = {
        { "__gc", pool_gc },
        { "__close", pool_gc },
        { "__tostring", pool_tostring },
        { NULL, NULL }
    };
    static const luaL_Reg pool_methods[] = {
        { "start", pool_start },
        { "step", pool_step },
        { "run", pool_run },
        { "stop", pool_stop },
        { "reload", pool_reload },
        { "scale", pool_scale },
        { "status", pool_status },
        { "addresses", pool_addresses },
        { "close", pool_gc },
        { NULL, NULL }
    };
    static const luaL_Reg sim_meta[] = {
        { "__gc", sim_gc },
        { NULL, NULL }
    };
    static const luaL_Reg sim_methods[] = {
        { "choose", sim_choose },
        { "start", sim_start },
        { "finish", sim_finish },
        { "set", sim_set },
        { "state", sim_state },
        { "fallbacks", sim_fallbacks },
        { "close", sim_gc },
        { NULL, NULL }
    };

    fdp_createmeta(L, POOL_MT, pool_meta, pool_methods);
    fdp_createmeta(L, SIM_MT, sim_meta, sim_methods);
    luaL_setfuncs(L, funcs, 0);
}
