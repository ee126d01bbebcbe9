/*
 * lshared.c - fdpool.shared.NAME in a worker: the Lua side of the shared
 * dictionaries (shdict.c) the master mapped before forking (shzone.c),
 * with ngx.shared.DICT's methods and return shapes. Owns each view's
 * scratch buffer; the mappings are the pool's.
 */
#include "fdp.h"
#include "laux.h"
#include "lshared.h"
#include "pool.h"
#include "shdict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define SHDICT_MT   "fdpool.shdict"
#define VIEW_MT     "fdpool.shdict.view"
#define SHD_VCBITS  12
#define SHD_VCACHE  (1u << SHD_VCBITS)  /* get's cached strings, per dict */
#define SHD_VCMAX   40          /* only short (interned) strings */

/*
 * fdpool.shared.NAME is a table holding its methods directly (so
 * `dict:get(k)` is one table hit, not a metatable's __index), each a C
 * closure whose upvalue is the view (a full userdata, struct lshd, with
 * its own __gc). The table's metatable is SHDICT_MT (__name, __tostring).
 */
struct lshd {
    struct fdp_shd d;
    /* the dictionary's table (lua_topointer); once view_gc ran, an
     * address no argument can have (&self): never cached again (check),
     * get without its string cache (freed) */
    const void *self;
    char name[32];
    uint32_t size;
    /* FDPOOL_TEST_SHARED_DIE=OP:N:KEY (tests only): _exit at the N-th
     * write of OP on KEY, holding the lock */
    int die_op;
    uint32_t die_at;
    char die_key[64];
    /* get's string cache: the Lua string last pushed for an entry, in
     * slot hash(entry offset) of an array (C: where its bytes are; the
     * get closure's second upvalue, a table: the string itself, kept
     * alive). Reused when its bytes are the value's, so a hot short value
     * is not interned again. Made by the first get of a short string. */
    struct shd_vc { uint32_t at, len; const char *p; } *vc;
};


/* The view behind a dictionary table at idx (any dictionary), or NULL:
 * its `capacity` method's upvalue. Leaves the stack as it was. */
static struct lshd *
view_of(lua_State *L, int idx)
{
    struct lshd *s = NULL;

    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) {
        return NULL;
    }
    luaL_getmetatable(L, SHDICT_MT);
    if (lua_rawequal(L, -1, -2)) {
        lua_pushliteral(L, "capacity");
        lua_rawget(L, idx < 0 ? idx - 3 : idx);
        if (lua_tocfunction(L, -1) != NULL
            && lua_getupvalue(L, -1, 1) != NULL) {
            s = luaL_testudata(L, -1, VIEW_MT);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return s;
}


/* The dictionary at 1: the closure's own (one pointer compare), or
 * another dictionary's table (its method called on the wrong one still
 * works, as with a shared metatable); anything else raises
 * "fdpool.shdict expected". */
static struct lshd *
check_slow(lua_State *L)
{
    struct lshd *s = view_of(L, 1);

    if (s == NULL) {
        luaL_typeerror(L, 1, SHDICT_MT);
    }
    return s;
}


/* The dictionary last called (its table, its view): a method call on it
 * finds its view from argument 1 alone, without fetching the closure's
 * upvalue. Valid while that view lives (view_gc clears it), and the view
 * keeps its table alive (its user value), so no other table can have
 * that address meanwhile. A view already finalized is never cached
 * again: a finalizer that runs after view_gc in the same cycle (an
 * object older than the view) may still call its dictionary, whose
 * table and view are freed in the next cycle; cached then, the pointer
 * would outlive them, and a new table at that address would be taken
 * for the dictionary. One Lua state per worker opens dictionaries. */
static const void *last_self;
static struct lshd *last_view;


static inline struct lshd *
check(lua_State *L)
{
    const void *p = lua_topointer(L, 1);
    struct lshd *s;

    if (__builtin_expect(p == last_self && p != NULL, 1)) {
        return last_view;
    }
    s = lua_touserdata(L, lua_upvalueindex(1));
    if (p == s->self) {
        last_self = p;
        last_view = s;
        return s;
    }
    return check_slow(L);       /* (a finalized view too: not cached) */
}


/* The key at idx, checked (raises). The usual case inline: a string of
 * 1 to 65535 bytes and no test knob. */
static __attribute__((noinline)) const char *
check_key_slow(lua_State *L, int idx, size_t *len, struct lshd *s, int op,
               const char *k)
{
    if (k == NULL) {
        k = luaL_checklstring(L, idx, len);     /* raises */
    }
    luaL_argcheck(L, *len > 0, idx, "key must not be empty");
    luaL_argcheck(L, *len <= FDP_SHD_KEY_MAX, idx, "key too long (at most "
                  "65535 bytes)");
    if (s->die_op == op && strcmp(k, s->die_key) == 0) {
        s->d.die_op = op;
        s->d.die_at = s->die_at;
    } else {
        s->d.die_op = 0;
    }
    return k;
}


static inline __attribute__((always_inline)) const char *
check_key(lua_State *L, int idx, size_t *len, struct lshd *s, int op)
{
    const char *k = lua_tolstring(L, idx, len);

    if (__builtin_expect(k != NULL && *len - 1 < FDP_SHD_KEY_MAX
                         && s->die_op == 0, 1)) {
        return k;               /* (d.die_op is 0 when s->die_op is) */
    }
    return check_key_slow(L, idx, len, s, op, k);
}


/* A value from Lua at idx (nil deletes). Raises for other types. */
static void
check_value(lua_State *L, int idx, struct fdp_shd_val *v)
{
    v->i = 0;
    v->n = 0;
    v->s = NULL;
    v->len = 0;
    v->flags = 0;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        v->type = FDP_SHD_STRING;
        v->s = lua_tolstring(L, idx, &v->len);
        luaL_argcheck(L, v->len < 0x7fffffff, idx, "value too long");
        break;
    case LUA_TNONE:
    case LUA_TNIL:
        v->type = FDP_SHD_NIL;
        break;
    case LUA_TBOOLEAN:
        v->type = FDP_SHD_BOOLEAN;
        v->i = lua_toboolean(L, idx);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v->type = FDP_SHD_INTEGER;
            v->i = (int64_t) lua_tointeger(L, idx);
        } else {
            v->type = FDP_SHD_NUMBER;
            v->n = (double) lua_tonumber(L, idx);
        }
        break;
    default:
        luaL_argerror(L, idx, lua_pushfstring(L, "bad value type (string, "
                      "number, boolean or nil expected, got %s)",
                      luaL_typename(L, idx)));
    }
}


/* A number argument of incr (raises "number expected" for others). */
static __attribute__((noinline)) void
check_num_slow(lua_State *L, int idx, struct fdp_shd_val *v)
{
    luaL_checktype(L, idx, LUA_TNUMBER);
    v->type = FDP_SHD_NUMBER;
    v->n = (double) lua_tonumber(L, idx);
    v->i = 0;
}


static inline __attribute__((always_inline)) void
check_num(lua_State *L, int idx, struct fdp_shd_val *v)
{
    v->s = NULL;
    v->len = 0;
    v->flags = 0;
    if (__builtin_expect(lua_isinteger(L, idx), 1)) {
        v->type = FDP_SHD_INTEGER;
        v->i = (int64_t) lua_tointegerx(L, idx, NULL);
        v->n = 0;
    } else {
        check_num_slow(L, idx, v);
    }
}


static double
opt_ttl(lua_State *L, int idx)
{
    lua_Number t = luaL_optnumber(L, idx, 0);

    luaL_argcheck(L, t >= 0 && t <= 1e9, idx, "ttl must be 0 (never) to 1e9 "
                  "seconds");
    return (double) t;
}


/* What the last operation's lock found, for the log: a worker that died
 * holding it (its operation undone, or the dictionary flushed), or a
 * scribbled mapping (flushed). */
static __attribute__((noinline)) void
note_slow(struct lshd *s, int r)
{
    if (s->d.recovered == 1) {
        fdp_log(FDP_LOG_WARN, 0, "shared '%s': a process died holding its "
                "lock; %s", s->name, s->d.undone ? "its operation was undone"
                : "nothing to undo");
    } else if (s->d.recovered == 2) {
        fdp_log(FDP_LOG_ERROR, 0, "shared '%s': %s; every entry flushed",
                s->name, r == -EIO ? "found corrupted" : "a process died "
                "holding its lock in an operation that cannot be undone");
    }
    s->d.recovered = 0;
}


static inline __attribute__((always_inline)) void
note(struct lshd *s, int r)
{
    if (__builtin_expect(s->d.recovered != 0, 0)) {
        note_slow(s, r);
    }
}


static const char *
errtext(int r)
{
    switch (r) {
    case -EEXIST: return "exists";
    case -ENOENT: return "not found";
    case -ENOMEM: return "no memory";
    case -E2BIG: return "value too big";
    case -EINVAL: return "not a number";
    case -EIO: return "corrupted (flushed)";
    default: return strerror(-r);
    }
}


static void
push_val(lua_State *L, const struct fdp_shd_val *v)
{
    switch (v->type) {
    case FDP_SHD_STRING:
        lua_pushlstring(L, v->s, v->len);
        break;
    case FDP_SHD_INTEGER:
        lua_pushinteger(L, (lua_Integer) v->i);
        break;
    case FDP_SHD_NUMBER:
        lua_pushnumber(L, (lua_Number) v->n);
        break;
    case FDP_SHD_BOOLEAN:
        lua_pushboolean(L, v->i != 0);
        break;
    default:
        lua_pushnil(L);
    }
}


/* dict:get(key) -> value, flags (flags only when not 0) | nil | nil, err */
static int
shd_get(lua_State *L)
{
    struct lshd *s = lua_touserdata(L, lua_upvalueindex(1));
    /* the string cache is this closure's dictionary's: another
     * dictionary's get called on this one goes without it */
    int own = lua_topointer(L, 1) == s->self;
    size_t klen;
    const char *key;
    struct fdp_shd_val v;
    int r;

    if (!own) {
        s = check_slow(L);
    }
    key = check_key(L, 2, &klen, s, FDP_SHD_OP_GET);
    r = fdp_shd_get(&s->d, key, klen, &v, NULL);

    note(s, r);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext(r));
        return 2;
    }
    if (r == 0) {
        lua_pushnil(L);
        return 1;
    }
    if (v.type == FDP_SHD_STRING && v.len <= SHD_VCMAX && own) {
        /* the block's number among blocks of its size: SHD_VCACHE
         * neighbouring entries of a size never collide */
        uint32_t slot = v.blkno & (SHD_VCACHE - 1);

        if (s->vc == NULL) {
            /* the table first: it may raise (--max-memory), and vc set
             * means the table is there to keep the strings */
            struct shd_vc *vc;

            lua_createtable(L, SHD_VCACHE, 0);
            vc = calloc(SHD_VCACHE, sizeof(*vc));
            if (vc == NULL) {
                return luaL_error(L, "not enough memory");
            }
            lua_replace(L, lua_upvalueindex(2));
            s->vc = vc;
        }
        if (s->vc[slot].at == v.at && s->vc[slot].len == v.len
            && memcmp(s->vc[slot].p, v.s, v.len) == 0) {
            lua_rawgeti(L, lua_upvalueindex(2), slot + 1);
            goto pushed;
        }
        lua_pushlstring(L, v.s, v.len);
        lua_pushvalue(L, -1);
        lua_rawseti(L, lua_upvalueindex(2), slot + 1);
        s->vc[slot].at = v.at;
        s->vc[slot].len = (uint32_t) v.len;
        s->vc[slot].p = lua_tostring(L, -1);
    } else {
        push_val(L, &v);
    }
pushed:
    if (v.flags != 0) {
        lua_pushinteger(L, v.flags);
        return 2;
    }
    return 1;
}


/* set/add/replace(key, value [, ttl [, flags]]) -> true, nil, forcible |
 * false, err, forcible (ngx's shape). */
static int
set_mode(lua_State *L, int mode)
{
    struct lshd *s = check(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen, s, FDP_SHD_OP_SET);
    struct fdp_shd_val v;
    int top = lua_gettop(L);
    double ttl = top >= 4 ? opt_ttl(L, 4) : 0;
    lua_Integer flags = top >= 5 ? luaL_optinteger(L, 5, 0) : 0;
    int ev = 0, r;

    check_value(L, 3, &v);
    luaL_argcheck(L, flags >= 0 && flags <= 0xffffffff, 5, "flags must be "
                  "0 to 2^32-1");
    v.flags = (uint32_t) flags;
    if (v.type == FDP_SHD_NIL && mode != 0) {
        v.type = FDP_SHD_NIL;       /* add/replace of nil: a delete too */
    }
    r = fdp_shd_set(&s->d, mode, key, klen, &v, ttl, &ev);
    note(s, r);
    lua_pushboolean(L, r == 0);
    if (r == 0) {
        lua_pushnil(L);
    } else {
        lua_pushstring(L, errtext(r));
    }
    lua_pushboolean(L, ev);
    return 3;
}


static int
shd_set(lua_State *L)
{
    return set_mode(L, 0);
}


static int
shd_add(lua_State *L)
{
    return set_mode(L, 1);
}


static int
shd_replace(lua_State *L)
{
    return set_mode(L, 2);
}


/* dict:delete(key) -> true */
static int
shd_delete(lua_State *L)
{
    struct lshd *s = check(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen, s, FDP_SHD_OP_SET);
    struct fdp_shd_val v;
    int ev, r;

    memset(&v, 0, sizeof(v));
    r = fdp_shd_set(&s->d, 0, key, klen, &v, 0, &ev);
    note(s, r);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext(r));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* dict:incr(key, n [, init [, init_ttl]]) -> new value, nil, forcible |
 * nil, err, forcible. Integers stay integers. */
static int
shd_incr(lua_State *L)
{
    struct lshd *s = check(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen, s, FDP_SHD_OP_INCR);
    struct fdp_shd_val by, init, out;
    double ttl;
    int top = lua_gettop(L), has_init = 0;
    int ev = 0, r;

    check_num(L, 3, &by);
    if (top >= 4 && (lua_isinteger(L, 4) || !lua_isnil(L, 4))) {
        check_num(L, 4, &init);
        has_init = 1;
    }
    ttl = top >= 5 ? opt_ttl(L, 5) : 0;
    r = fdp_shd_incr(&s->d, key, klen, &by, has_init ? &init : NULL, ttl,
                     &out, &ev);
    note(s, r);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext(r));
    } else {
        push_val(L, &out);
        lua_pushnil(L);
    }
    lua_pushboolean(L, ev);
    return 3;
}


/* dict:ttl(key) -> seconds left (0: never expires) | nil, "not found" */
static int
shd_ttl(lua_State *L)
{
    struct lshd *s = check(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen, s, FDP_SHD_OP_GET);
    double ttl = 0;
    int r = fdp_shd_ttl(&s->d, key, klen, &ttl);

    note(s, r);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext(r));
        return 2;
    }
    if (ttl == 0) {
        lua_pushinteger(L, 0);          /* never expires */
    } else {
        lua_pushnumber(L, ttl);
    }
    return 1;
}


/* dict:expire(key, ttl) -> true | nil, "not found" (ttl 0: never) */
static int
shd_expire(lua_State *L)
{
    struct lshd *s = check(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen, s, FDP_SHD_OP_EXPIRE);
    double ttl;
    int r;

    luaL_checknumber(L, 3);
    ttl = opt_ttl(L, 3);
    r = fdp_shd_expire(&s->d, key, klen, ttl);
    note(s, r);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext(r));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* dict:flush_all(): every entry gone (the memory is free at once). */
static int
shd_flush_all(lua_State *L)
{
    struct lshd *s = check(L);
    int r;

    s->d.die_op = s->die_op == FDP_SHD_OP_FLUSH ? FDP_SHD_OP_FLUSH : 0;
    s->d.die_at = s->die_at;
    r = fdp_shd_flush(&s->d);
    note(s, r);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext(r));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


struct keys_ud {
    lua_State *L;
    lua_Integer n;
};


static void
add_key(void *ud, const char *key, size_t klen)
{
    struct keys_ud *k = ud;

    lua_pushlstring(k->L, key, klen);
    lua_rawseti(k->L, -2, ++k->n);
}


/* dict:get_keys([max]) -> {keys} (max default 1024, 0: all) */
static int
shd_get_keys(lua_State *L)
{
    struct lshd *s = check(L);
    lua_Integer max = luaL_optinteger(L, 2, 1024);
    struct keys_ud k;
    int r;

    luaL_argcheck(L, max >= 0, 2, "max must be >= 0 (0: all)");
    lua_newtable(L);
    k.L = L;
    k.n = 0;
    s->d.die_op = 0;
    r = fdp_shd_keys(&s->d, (size_t) max, add_key, &k);
    note(s, r);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext(r));
        return 2;
    }
    return 1;
}


static int
shd_capacity(lua_State *L)
{
    lua_pushinteger(L, check(L)->size);
    return 1;
}


static int
shd_free_space(lua_State *L)
{
    struct lshd *s = check(L);
    int64_t r;

    s->d.die_op = 0;
    r = fdp_shd_free_space(&s->d);
    note(s, (int) (r < 0 ? r : 0));
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, errtext((int) r));
        return 2;
    }
    lua_pushinteger(L, (lua_Integer) r);
    return 1;
}


static int
shd_tostring(lua_State *L)
{
    struct lshd *s = view_of(L, 1);

    lua_pushfstring(L, "fdpool.shdict (%s)", s ? s->name : "?");
    return 1;
}


static int
view_gc(lua_State *L)
{
    struct lshd *s = luaL_checkudata(L, 1, VIEW_MT);

    if (last_view == s) {
        last_self = NULL;
        last_view = NULL;
    }
    s->self = &s->self;         /* (a finalizer may still call it) */
    fdp_shd_detach(&s->d);
    free(s->vc);
    s->vc = NULL;
    return 0;
}


/* The test knob, read once per worker. */
static void
read_knob(struct lshd *s)
{
    static const char *const ops[] = { "", "get", "set", "incr", "delete",
                                       "expire", "flush" };
    const char *e = getenv("FDPOOL_TEST_SHARED_DIE");
    char op[16];
    unsigned at;
    int i;

    if (e == NULL || sscanf(e, "%15[a-z]:%u:%63s", op, &at, s->die_key) < 2) {
        return;
    }
    for (i = 1; i < (int) FDP_NELEM(ops); i++) {
        if (strcmp(op, ops[i]) == 0) {
            s->die_op = i == FDP_SHD_OP_DELETE ? FDP_SHD_OP_SET : i;
            s->die_at = at;
        }
    }
}


void
fdp_lshared_open(lua_State *L, struct fdp_pool *p)
{
    static const luaL_Reg methods[] = {
        { "get", shd_get }, { "set", shd_set }, { "add", shd_add },
        { "replace", shd_replace }, { "delete", shd_delete },
        { "incr", shd_incr }, { "ttl", shd_ttl }, { "expire", shd_expire },
        { "flush_all", shd_flush_all }, { "get_keys", shd_get_keys },
        { "capacity", shd_capacity }, { "free_space", shd_free_space },
        { NULL, NULL }
    };
    int i;

    if (luaL_newmetatable(L, SHDICT_MT)) {
        lua_pushcfunction(L, shd_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, VIEW_MT)) {
        lua_pushcfunction(L, view_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    for (i = 0; i < p->nshared; i++) {
        struct fdp_shzone *z = &p->shared[i];
        struct lshd *s = lua_newuserdatauv(L, sizeof(*s), 1);

        memset(s, 0, sizeof(*s));
        if (z->base == NULL
            || fdp_shd_attach(&s->d, z->base, (size_t) z->size) < 0) {
            lua_pop(L, 1);
            continue;
        }
        luaL_setmetatable(L, VIEW_MT);
        snprintf(s->name, sizeof(s->name), "%s", z->name);
        s->size = (uint32_t) z->size;
        read_knob(s);
        /* the dictionary's table: its methods, each with the view */
        lua_createtable(L, 0, (int) FDP_NELEM(methods));
        lua_insert(L, -2);
        luaL_setfuncs(L, methods, 1);
        lua_getfield(L, -1, "capacity");
        lua_getupvalue(L, -1, 1);       /* the view again */
        lua_pushboolean(L, 0);          /* the string cache, made later */
        lua_pushcclosure(L, shd_get, 2);
        lua_setfield(L, -3, "get");
        lua_pop(L, 1);
        s->self = lua_topointer(L, -1);
        lua_getfield(L, -1, "capacity");
        lua_getupvalue(L, -1, 1);
        lua_pushvalue(L, -3);
        lua_setiuservalue(L, -2, 1);    /* the view keeps its table */
        lua_pop(L, 2);
        luaL_setmetatable(L, SHDICT_MT);
        lua_setfield(L, -2, z->name);
    }
    lua_setfield(L, -2, "shared");
}
