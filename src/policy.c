/*
 * policy.c - the dispatch policy, run in the master for each connection.
 * A policy named or given as a file runs in its own sandboxed Lua state
 * (no os, io, require, package, debug, binary chunks; memory capped); a
 * function given to fdpool.pool{} runs in the caller's state. Either way
 * it sees read-only views of the status table (no table is built per
 * connection) and each call has an instruction budget.
 */
#include "fdp.h"
#include "pool.h"
#include "policy.h"
#include "embed.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#define POLICY_BUDGET   200000          /* VM instructions per call */
#define POLICY_MEM_MAX  (32u << 20)     /* bytes for a sandboxed state */
#define WORKERS_MT      "fdpool.workers"
#define SLOT_MT         "fdpool.slot"
#define CONNVIEW_MT     "fdpool.connview"

struct fdp_policy {
    lua_State *S;
    int own;                    /* S is ours (sandbox) */
    int fn_ref;
    int workers_ref;
    int conn_ref;
    size_t mem;
    const struct fdp_pending *cur;
    char name[128];
    uint64_t err_logged_ms;
    uint64_t err_unlogged;
    char last_err[256];
    int builtin;                /* enum builtin: its C fast path, or 0 */
    int rr_last;                /* round_robin's last pick (1-based) */
};

/* The built-in policies in C: the same choices as their Lua files in
 * lua/fdpool/policy/ (the reference; fdpool.sim compares both), without
 * a Lua call per connection. */
enum builtin { B_LUA, B_FIRST_FREE, B_ROUND_ROBIN, B_LEAST_CONN, B_IP_HASH };

struct slot_view {
    struct fdp_pool *p;
    int idx;
};


static void *
sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fdp_policy *pol = ud;

    if (ptr == NULL) {
        osize = 0;
    }
    if (nsize == 0) {
        free(ptr);
        pol->mem -= osize;
        return NULL;
    }
    if (nsize > osize && pol->mem + (nsize - osize) > POLICY_MEM_MAX) {
        return NULL;
    }
    ptr = realloc(ptr, nsize);
    if (ptr != NULL) {
        pol->mem = pol->mem - osize + nsize;
    }
    return ptr;
}


static void
budget_hook(lua_State *L, lua_Debug *ar)
{
    (void) ar;
    luaL_error(L, "policy exceeded its instruction budget (%d)",
               POLICY_BUDGET);
}


static struct fdp_pool *
view_pool(lua_State *L, int idx, const char *mt)
{
    return *(struct fdp_pool **) luaL_checkudata(L, idx, mt);
}


static int
slot_index(lua_State *L)
{
    struct slot_view *v = luaL_checkudata(L, 1, SLOT_MT);
    const struct fdp_slot *s = &v->p->workers[v->idx].slot;
    const char *k = luaL_checkstring(L, 2);
    const char *custom;

    switch (k[0]) {
    case 'a':
        if (strcmp(k, "active") == 0) {
            lua_pushinteger(L, s->active);
            return 1;
        }
        break;
    case 'b':
        if (strcmp(k, "bytes_in") == 0) {
            lua_pushinteger(L, (lua_Integer) s->bytes_in);
            return 1;
        }
        if (strcmp(k, "bytes_out") == 0) {
            lua_pushinteger(L, (lua_Integer) s->bytes_out);
            return 1;
        }
        if (strcmp(k, "busy_since") == 0) {
            lua_pushnumber(L, s->busy_since);
            return 1;
        }
        break;
    case 'c':
        if (strcmp(k, "capacity") == 0) {
            lua_pushinteger(L, s->capacity);
            return 1;
        }
        if (strcmp(k, "cpu") == 0) {
            if (s->cpu >= 0) {
                lua_pushinteger(L, s->cpu);
            } else {
                lua_pushnil(L);
            }
            return 1;
        }
        break;
    case 'g':
        if (strcmp(k, "generation") == 0) {
            lua_pushinteger(L, s->generation);
            return 1;
        }
        break;
    case 'i':
        if (strcmp(k, "id") == 0) {
            lua_pushinteger(L, s->id);
            return 1;
        }
        break;
    case 'p':
        if (strcmp(k, "pid") == 0) {
            lua_pushinteger(L, s->pid);
            return 1;
        }
        break;
    case 'r':
        if (strcmp(k, "restarts") == 0) {
            lua_pushinteger(L, s->restarts);
            return 1;
        }
        break;
    case 's':
        if (strcmp(k, "state") == 0) {
            lua_pushstring(L, fdp_slot_state(s));
            return 1;
        }
        if (strcmp(k, "served") == 0) {
            lua_pushinteger(L, (lua_Integer) s->served);
            return 1;
        }
        if (strcmp(k, "started") == 0) {
            lua_pushnumber(L, s->started);
            return 1;
        }
        break;
    default:
        break;
    }
    custom = fdp_slot_get_kv(s, k);
    if (custom) {
        lua_pushstring(L, custom);
    } else {
        lua_pushnil(L);
    }
    return 1;
}


static int
readonly(lua_State *L)
{
    return luaL_error(L, "the status table is read-only");
}


static int
workers_len(lua_State *L)
{
    lua_pushinteger(L, view_pool(L, 1, WORKERS_MT)->nworkers);
    return 1;
}


/* workers[i]: a cached slot view, created on first use. */
static int
workers_index(lua_State *L)
{
    struct fdp_pool *p = view_pool(L, 1, WORKERS_MT);
    lua_Integer i;
    struct slot_view *v;

    if (!lua_isinteger(L, 2)) {
        lua_pushnil(L);
        return 1;
    }
    i = lua_tointeger(L, 2);
    if (i < 1 || i > p->nworkers) {
        lua_pushnil(L);
        return 1;
    }
    lua_getiuservalue(L, 1, 1);
    if (lua_rawgeti(L, -1, i) != LUA_TNIL) {
        return 1;
    }
    lua_pop(L, 1);
    v = lua_newuserdatauv(L, sizeof(*v), 0);
    v->p = p;
    v->idx = (int) i - 1;
    luaL_setmetatable(L, SLOT_MT);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, i);
    return 1;
}


static int
workers_call_iter(lua_State *L)
{
    lua_Integer i = luaL_checkinteger(L, 2) + 1;
    struct fdp_pool *p = view_pool(L, 1, WORKERS_MT);

    if (i > p->nworkers) {
        return 0;
    }
    lua_pushinteger(L, i);
    lua_pushcfunction(L, workers_index);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, i);
    lua_call(L, 2, 1);
    return 2;
}


/* ipairs(workers) works through __index; this gives pairs() too. */
static int
workers_pairs(lua_State *L)
{
    lua_pushcfunction(L, workers_call_iter);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 3;
}


/* conn.ip as the Lua view gives it, into ip (INET6_ADDRSTRLEN); 0 when
 * the peer has no IP (a unix socket). */
static int
peer_ip(const struct fdp_pending *c, char *ip)
{
    if (c->peer.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *) &c->peer)->sin_addr,
                  ip, INET6_ADDRSTRLEN);
        return 1;
    }
    if (c->peer.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) &c->peer)->sin6_addr,
                  ip, INET6_ADDRSTRLEN);
        return 1;
    }
    return 0;
}


/* conn.cpu: the CPU that received c (SO_INCOMING_CPU), -1 unknown */
static int
conn_cpu(const struct fdp_pending *c)
{
    int cpu = c->fd < 0 ? c->cpu : -1;
    socklen_t len = sizeof(cpu);

    if (c->fd >= 0 && getsockopt(c->fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu,
                                 &len) < 0) {
        cpu = -1;
    }
    return cpu;
}


static void
push_peer(lua_State *L, const struct fdp_pending *c, int what)
{
    char ip[INET6_ADDRSTRLEN];
    unsigned port = 0;

    if (c->peer.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) &c->peer;

        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
        if (what == 0) {
            lua_pushfstring(L, "%s:%d", ip, (int) port);
        } else if (what == 1) {
            lua_pushstring(L, ip);
        } else {
            lua_pushinteger(L, port);
        }
    } else if (c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) &c->peer;

        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
        if (what == 0) {
            lua_pushfstring(L, "[%s]:%d", ip, (int) port);
        } else if (what == 1) {
            lua_pushstring(L, ip);
        } else {
            lua_pushinteger(L, port);
        }
    } else if (what == 0) {
        lua_pushliteral(L, "unix");
    } else {
        lua_pushnil(L);
    }
}


static int
connview_index(lua_State *L)
{
    struct fdp_pool *p = view_pool(L, 1, CONNVIEW_MT);
    const struct fdp_pending *c = p->policy ? p->policy->cur : NULL;
    const char *k = luaL_checkstring(L, 2);

    if (c == NULL) {
        return luaL_error(L, "connection view used outside its pick() call");
    }
    if (strcmp(k, "peer") == 0) {
        push_peer(L, c, 0);
    } else if (strcmp(k, "ip") == 0) {
        push_peer(L, c, 1);
    } else if (strcmp(k, "port") == 0) {
        push_peer(L, c, 2);
    } else if (strcmp(k, "listener") == 0) {
        lua_pushstring(L, p->listeners[c->listener].addr);
    } else if (strcmp(k, "cpu") == 0) {
        /* the CPU that received it (SO_INCOMING_CPU): asked only when a
         * policy reads it; a simulated one carries it */
        int cpu = conn_cpu(c);

        if (cpu >= 0) {
            lua_pushinteger(L, cpu);
        } else {
            lua_pushnil(L);
        }
    } else {
        lua_pushnil(L);
    }
    return 1;
}


static void
new_views(lua_State *L, struct fdp_pool *p, struct fdp_policy *pol)
{
    struct fdp_pool **u;

    if (luaL_newmetatable(L, SLOT_MT)) {
        lua_pushcfunction(L, slot_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, readonly);
        lua_setfield(L, -2, "__newindex");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, WORKERS_MT)) {
        lua_pushcfunction(L, workers_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, readonly);
        lua_setfield(L, -2, "__newindex");
        lua_pushcfunction(L, workers_len);
        lua_setfield(L, -2, "__len");
        lua_pushcfunction(L, workers_pairs);
        lua_setfield(L, -2, "__pairs");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, CONNVIEW_MT)) {
        lua_pushcfunction(L, connview_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, readonly);
        lua_setfield(L, -2, "__newindex");
    }
    lua_pop(L, 1);

    u = lua_newuserdatauv(L, sizeof(*u), 1);
    *u = p;
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, WORKERS_MT);
    pol->workers_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    u = lua_newuserdatauv(L, sizeof(*u), 0);
    *u = p;
    luaL_setmetatable(L, CONNVIEW_MT);
    pol->conn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}


/* load() that refuses binary chunks, for the sandbox. */
static int
sandbox_load(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *name = luaL_optstring(L, 2, "=(load)");

    if (luaL_loadbufferx(L, s, n, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}


static void
open_sandbox_libs(lua_State *S)
{
    static const char *const drop[] = {
        "dofile", "loadfile", "require", "print", "collectgarbage", NULL
    };
    int i;

    luaL_requiref(S, LUA_GNAME, luaopen_base, 1);
    lua_pop(S, 1);
    luaL_requiref(S, LUA_STRLIBNAME, luaopen_string, 1);
    lua_pop(S, 1);
    luaL_requiref(S, LUA_TABLIBNAME, luaopen_table, 1);
    lua_pop(S, 1);
    luaL_requiref(S, LUA_MATHLIBNAME, luaopen_math, 1);
    lua_pop(S, 1);
    luaL_requiref(S, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_pop(S, 1);
    for (i = 0; drop[i]; i++) {
        lua_pushnil(S);
        lua_setglobal(S, drop[i]);
    }
    lua_pushcfunction(S, sandbox_load);
    lua_setglobal(S, "load");
}


static int
valid_name(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s; s++) {
        if (!islower((unsigned char) *s) && *s != '_'
            && !isdigit((unsigned char) *s)) {
            return 0;
        }
    }
    return 1;
}


/* A Lua status as -errno: out of memory, a file that cannot be read
 * (e: errno from the load), or else bad code (-EINVAL). */
static int
lua_errno(int status, int e)
{
    if (status == LUA_ERRMEM) {
        return -ENOMEM;
    }
    if (status == LUA_ERRFILE) {
        return -(e > 0 ? e : EIO);
    }
    return -EINVAL;
}


/*
 * Load policy `spec` (a built-in name or a .lua file) into S and leave
 * its pick function on the stack. Returns 0, or -errno (-EINVAL for an
 * unknown name or bad code, the open's errno for a file that cannot be
 * read) with err set.
 */
static int
load_policy(lua_State *S, const char *spec, char *err, size_t errlen)
{
    int r, e = 0;

    if (strchr(spec, '/') == NULL && strstr(spec, ".lua") == NULL) {
        char mod[160];
        size_t len;
        const char *src;

        snprintf(mod, sizeof(mod), "fdpool.policy.%s", spec);
        src = valid_name(spec) ? fdp_embed_find(mod, &len) : NULL;
        if (src == NULL) {
            snprintf(err, errlen, "unknown policy '%s' (built in: first_free, "
                     "round_robin, least_conn, ip_hash; or a path to a "
                     ".lua file)", spec);
            return -EINVAL;
        }
        lua_pushfstring(S, "=policy %s", spec);
        r = luaL_loadbufferx(S, src, len, lua_tostring(S, -1), "t");
        lua_remove(S, -2);
    } else {
        errno = 0;
        r = luaL_loadfilex(S, spec, "t");
        e = errno;
    }
    if (r != LUA_OK) {
        snprintf(err, errlen, "cannot load policy: %s", lua_tostring(S, -1));
        lua_pop(S, 1);
        return lua_errno(r, e);
    }
    lua_sethook(S, budget_hook, LUA_MASKCOUNT, POLICY_BUDGET * 10);
    r = lua_pcall(S, 0, 1, 0);
    lua_sethook(S, NULL, 0, 0);
    if (r != LUA_OK) {
        snprintf(err, errlen, "policy %s failed: %s", spec,
                 lua_tostring(S, -1));
        lua_pop(S, 1);
        return lua_errno(r, 0);
    }
    if (lua_istable(S, -1)) {
        lua_getfield(S, -1, "pick");
        lua_remove(S, -2);
    }
    if (!lua_isfunction(S, -1)) {
        snprintf(err, errlen, "policy %s must return a function "
                 "pick(workers, conn) (got %s)", spec, luaL_typename(S, -1));
        lua_pop(S, 1);
        return -EINVAL;
    }
    return 0;
}


int
fdp_policy_open(struct fdp_pool *p, char *err, size_t errlen)
{
    struct fdp_policy *pol = calloc(1, sizeof(*pol));
    const char *spec = p->policy_name ? p->policy_name : "least_conn";
    int r;

    if (pol == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (p->policy_ref != LUA_NOREF && p->L != NULL) {
        pol->S = p->L;
        lua_rawgeti(pol->S, LUA_REGISTRYINDEX, p->policy_ref);
        snprintf(pol->name, sizeof(pol->name), "function");
    } else {
        pol->S = lua_newstate(sandbox_alloc, pol);
        if (pol->S == NULL) {
            free(pol);
            snprintf(err, errlen, "cannot create the policy's Lua state");
            return -ENOMEM;
        }
        pol->own = 1;
        open_sandbox_libs(pol->S);
        r = load_policy(pol->S, spec, err, errlen);
        if (r < 0) {
            lua_close(pol->S);
            free(pol);
            return r;
        }
        snprintf(pol->name, sizeof(pol->name), "%s", spec);
        if (!p->policy_lua) {
            pol->builtin = strcmp(spec, "first_free") == 0 ? B_FIRST_FREE
                           : strcmp(spec, "round_robin") == 0 ? B_ROUND_ROBIN
                           : strcmp(spec, "least_conn") == 0 ? B_LEAST_CONN
                           : strcmp(spec, "ip_hash") == 0 ? B_IP_HASH : B_LUA;
        }
    }
    pol->fn_ref = luaL_ref(pol->S, LUA_REGISTRYINDEX);
    new_views(pol->S, p, pol);
    p->policy = pol;
    return 0;
}


/* For `pool check --policy`: load it in a throwaway sandbox. */
int
fdp_policy_check(lua_State *L, const char *spec, char *err, size_t errlen)
{
    struct fdp_policy pol;
    lua_State *S;
    int r;

    (void) L;
    memset(&pol, 0, sizeof(pol));
    S = lua_newstate(sandbox_alloc, &pol);
    if (S == NULL) {
        snprintf(err, errlen, "cannot create the policy's Lua state");
        return -ENOMEM;
    }
    open_sandbox_libs(S);
    r = load_policy(S, spec, err, errlen);
    lua_close(S);
    return r;
}


void
fdp_policy_close(struct fdp_pool *p)
{
    struct fdp_policy *pol = p->policy;

    if (pol == NULL) {
        return;
    }
    if (pol->own) {
        if (getpid() == p->owner) {
            lua_close(pol->S);
        }
    } else if (getpid() == p->owner) {
        luaL_unref(pol->S, LUA_REGISTRYINDEX, pol->fn_ref);
        luaL_unref(pol->S, LUA_REGISTRYINDEX, pol->workers_ref);
        luaL_unref(pol->S, LUA_REGISTRYINDEX, pol->conn_ref);
    }
    free(pol);
    p->policy = NULL;
}


/* 1 while the policy's Lua pick() runs (its views read the connection
 * being placed): the Lua-facing pool and simulator methods that could
 * free or re-enter the policy refuse then. */
int
fdp_policy_running(const struct fdp_pool *p)
{
    return p->policy != NULL && p->policy->cur != NULL;
}


/* 1 when the policy lets any worker with room take any connection (the
 * built-in first_free, round_robin, least_conn): strict prefork's
 * prefetch may then offer a connection to a busy worker. */
int
fdp_policy_any_worker(struct fdp_pool *p)
{
    return p->policy != NULL
           && (p->policy->builtin == B_FIRST_FREE
               || p->policy->builtin == B_ROUND_ROBIN
               || p->policy->builtin == B_LEAST_CONN);
}


const char *
fdp_policy_name(struct fdp_pool *p)
{
    if (p->policy) {
        return p->policy->name;
    }
    return p->policy_name ? p->policy_name : "least_conn";
}


/* At most one line a second; the errors in between are counted and
 * reported by the next line or by fdp_policy_flush_log (the tick). */
static void
log_policy_error(struct fdp_pool *p, const char *msg)
{
    struct fdp_policy *pol = p->policy;
    uint64_t now = fdp_now_ms();

    if (now - pol->err_logged_ms >= 1000) {
        fdp_log(FDP_LOG_ERROR, 0, "policy %s: %s; using first_free "
                "(%llu similar errors not shown)", pol->name, msg,
                (unsigned long long) pol->err_unlogged);
        pol->err_logged_ms = now;
        pol->err_unlogged = 0;
    } else {
        pol->err_unlogged++;
        snprintf(pol->last_err, sizeof(pol->last_err), "%s", msg);
    }
}


void
fdp_policy_flush_log(struct fdp_pool *p)
{
    struct fdp_policy *pol = p->policy;
    uint64_t now = fdp_now_ms();

    if (pol && pol->err_unlogged > 0 && now - pol->err_logged_ms >= 1000) {
        fdp_log(FDP_LOG_ERROR, 0, "policy %s: %llu more errors, the last: "
                "%s; using first_free", pol->name,
                (unsigned long long) pol->err_unlogged, pol->last_err);
        pol->err_logged_ms = now;
        pol->err_unlogged = 0;
    }
}


/*
 * Ask the policy for a worker for c. Returns a 0-based worker index,
 * -EAGAIN for "keep it queued" (nil), or -EINVAL when the policy failed
 * (raised, looped, returned nonsense): the caller falls back to
 * first_free.
 */
static int
is_free(const struct fdp_pool *p, int i)
{
    const struct fdp_slot *s = &p->workers[i].slot;

    return s->state == FDP_W_RUNNING && s->active < s->capacity;
}


/* The built-in policies of lua/fdpool/policy/ in C: a 0-based index or
 * -EAGAIN (nil). */
static int
pick_builtin(struct fdp_pool *p, struct fdp_policy *pol,
             const struct fdp_pending *c)
{
    int n = p->nworkers, i, k, best = -1, cpu;
    double best_load = 0;

    switch (pol->builtin) {
    case B_FIRST_FREE:
        for (i = 0; i < n; i++) {
            if (is_free(p, i)) {
                return i;
            }
        }
        return -EAGAIN;
    case B_ROUND_ROBIN:
        for (k = 1; k <= n; k++) {
            i = (pol->rr_last + k - 1) % n;
            if (is_free(p, i)) {
                pol->rr_last = i + 1;
                return i;
            }
        }
        return -EAGAIN;
    case B_LEAST_CONN:
        for (i = 0; i < n; i++) {
            const struct fdp_slot *s = &p->workers[i].slot;

            if (is_free(p, i)) {
                double load = (double) s->active / (double) s->capacity;

                if (best < 0 || load < best_load) {
                    best = i;
                    best_load = load;
                }
            }
        }
        /* a near tie goes to the worker on the connection's CPU */
        if (best >= 0 && p->workers[best].slot.cpu >= 0
            && (cpu = conn_cpu(c)) >= 0 && p->workers[best].slot.cpu != cpu) {
            for (i = 0; i < n; i++) {
                const struct fdp_slot *s = &p->workers[i].slot;

                if (s->cpu == cpu && is_free(p, i)
                    && (double) s->active / (double) s->capacity
                       <= best_load + 1.0 / 8) {
                    return i;
                }
            }
        }
        return best >= 0 ? best : -EAGAIN;
    default: {                          /* B_IP_HASH */
        char ip[INET6_ADDRSTRLEN];
        const char *key = peer_ip(c, ip) ? ip : NULL;
        uint32_t h = 2166136261u;
        char peer[INET6_ADDRSTRLEN + 16];
        size_t j;

        if (key == NULL) {              /* conn.peer: "unix" */
            snprintf(peer, sizeof(peer), "unix");
            key = peer;
        }
        for (j = 0; key[j]; j++) {      /* FNV-1a, as ip_hash.lua */
            h = (h ^ (unsigned char) key[j]) * 16777619u;
        }
        for (k = 0; k < n; k++) {
            i = (int) ((h % (uint32_t) n + (uint32_t) k) % (uint32_t) n);
            if (is_free(p, i)) {
                return i;
            }
        }
        return -EAGAIN;
    }
    }
}


int
fdp_policy_pick(struct fdp_pool *p, const struct fdp_pending *c)
{
    struct fdp_policy *pol = p->policy;
    lua_State *S = pol->S;
    int top, r, isnum;
    lua_Integer i;

    if (pol->builtin != B_LUA) {
        return pick_builtin(p, pol, c);
    }
    top = lua_gettop(S);
    pol->cur = c;
    lua_rawgeti(S, LUA_REGISTRYINDEX, pol->fn_ref);
    lua_rawgeti(S, LUA_REGISTRYINDEX, pol->workers_ref);
    lua_rawgeti(S, LUA_REGISTRYINDEX, pol->conn_ref);
    lua_sethook(S, budget_hook, LUA_MASKCOUNT, POLICY_BUDGET);
    r = lua_pcall(S, 2, 1, 0);
    lua_sethook(S, NULL, 0, 0);
    pol->cur = NULL;
    if (r != LUA_OK) {
        const char *msg = lua_tostring(S, -1);

        p->fallbacks++;
        log_policy_error(p, msg ? msg : "error object is not a string");
        lua_settop(S, top);
        return -EINVAL;
    }
    if (lua_isnil(S, -1)) {
        lua_settop(S, top);
        return -EAGAIN;
    }
    i = lua_tointegerx(S, -1, &isnum);
    if (!isnum || i < 1 || i > p->nworkers) {
        char msg[96];

        snprintf(msg, sizeof(msg), "pick() returned %s%s, not a worker "
                 "index from 1 to %d", isnum ? "" : "a ",
                 isnum ? lua_tostring(S, -1) : luaL_typename(S, -1),
                 p->nworkers);
        p->fallbacks++;
        log_policy_error(p, msg);
        lua_settop(S, top);
        return -EINVAL;
    }
    lua_settop(S, top);
    return (int) i - 1;
}


/*
 * Compile a handler script from its text as luaL_loadfilex would from
 * the file (chunk name "@path", a UTF-8 BOM and a first line starting
 * with '#' skipped, line numbers kept). Workers load the text the master
 * read, so a worker restarted later runs its generation's script, not
 * whatever is on disk by then. Returns a lua_load status, the function
 * or the message on top.
 */
int
fdp_script_load(lua_State *L, const char *path, const char *src, size_t len)
{
    const char *s = src, *end = src + len;
    int r;

    if (end - s >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
    }
    if (s < end && *s == '#') {
        /* Keep the newline: the rest still starts on line 2. */
        const char *nl = memchr(s, '\n', (size_t) (end - s));

        s = nl ? nl : end;
    }
    lua_pushfstring(L, "@%s", path);
    r = luaL_loadbufferx(L, s, (size_t) (end - s), lua_tostring(L, -1), "t");
    lua_remove(L, -2);
    return r;
}


/*
 * For `pool reload`: the handler script's new text must still compile
 * (checked in a scratch state, so a syntax error is refused at once).
 * Its top level and `init` run only in the new workers, never in the
 * master. 0, or -errno with err (-EINVAL: it does not compile).
 */
int
fdp_script_check(struct fdp_pool *p, const char *src, size_t len, char *err,
                 size_t errlen)
{
    lua_State *L = luaL_newstate();
    int r = 0;

    if (L == NULL) {
        snprintf(err, errlen, "cannot create a Lua state");
        return -ENOMEM;
    }
    r = fdp_script_load(L, p->script, src, len);
    if (r != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        r = lua_errno(r, 0);
    }
    lua_close(L);
    return r;
}
