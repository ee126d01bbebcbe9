/*
 * lhttp.c - the conn object's HTTP/1.x methods, in C on top of
 * http_parse.c and lconn.c's buffer and waits: conn:readrequest (the
 * request head into a table), conn:readchunked (a chunked body) and
 * conn:sendresponse (a response head built without Lua strings per
 * header, sent with the body in one writev). fdpool.http is built on
 * them; they are the hot path.
 */
#include "fdp.h"
#include "http_parse.h"
#include "laux.h"
#include "lconn.h"
#include "lhttp.h"
#include "lthread.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <time.h>

#include <lauxlib.h>


/* ---- HTTP/1.x response head ----------------------------------------- */

/* A growable head buffer: its stack, then a userdata that replaces the
 * value at slot of L's stack (so the collector frees it also when a
 * header's metamethod or an allocation raises while it is built). */
struct headbuf {
    char *p;
    size_t len, cap;
    lua_State *L;
    int slot;                   /* absolute */
    const char *invalid;        /* the name of a header refused, or NULL */
    char bad[68];               /* (a copy of it: its string may die) */
    int scan;                   /* hb_headers notes the two below: */
    int conn_close;             /* the first Connection is "close" */
    int has_date;               /* a Date header */
    struct hcache *cache;       /* res:send's names and values checked */
    int cache_idx;              /* (the userdata holding them) */
    char stack[2048];
};

/*
 * The header names and values res:send found valid last (at most
 * HCACHE_N of each), by address: the userdata at cache_idx holds each
 * string as a user value, so none of them is collected and no other
 * string can have its address while it is here. A handler setting the
 * same literal names and values each request has them checked once.
 * Strings up to HCACHE_MAXLEN bytes only: none holds much memory.
 */
#define HCACHE_N 4
#define HCACHE_MAXLEN 128               /* (no big string kept alive) */
struct hcache {
    const char *s[2][HCACHE_N];         /* [0] names, [1] values */
    unsigned next[2];
};


/* s (at idx of L's stack) valid as kind 0 (name) or 1 (value): a known
 * one is 1 at once; one found valid now is remembered. */
static int
hc_check(struct headbuf *b, int kind, const char *s, size_t n, int idx,
         int (*valid)(const char *, size_t))
{
    struct hcache *hc = b->cache;
    unsigned i;

    if (hc != NULL) {
        for (i = 0; i < HCACHE_N; i++) {
            if (hc->s[kind][i] == s) {
                return 1;
            }
        }
    }
    if (!valid(s, n)) {
        return 0;
    }
    if (hc != NULL && idx != 0 && n <= HCACHE_MAXLEN) {
        i = hc->next[kind]++ % HCACHE_N;
        lua_pushvalue(b->L, idx);
        (void) lua_setiuservalue(b->L, b->cache_idx,
                                 1 + kind * HCACHE_N + (int) i);
        hc->s[kind][i] = s;
    }
    return 1;
}


/* Room for n more bytes in b (out of memory raises: nothing to free). */
static void
hb_reserve(struct headbuf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2;
        char *q;

        while (cap < b->len + n) {
            cap *= 2;
        }
        q = lua_newuserdatauv(b->L, cap, 0);
        memcpy(q, b->p, b->len);
        lua_replace(b->L, b->slot);
        b->p = q;
        b->cap = cap;
    }
}


/* Append to b (out of memory raises: nothing to free). */
static void
hb_add(struct headbuf *b, const char *s, size_t n)
{
    hb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}


/* a and b (n bytes each) equal but for ASCII case */
static int
ci_eq(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char x = (unsigned char) a[i], y = (unsigned char) b[i];

        if (x != y && ((x | 0x20) != (y | 0x20) || (x | 0x20) < 'a'
                       || (x | 0x20) > 'z')) {
            return 0;
        }
    }
    return 1;
}


static int
own_header(const char *k, size_t n)
{
    return (n == 14 && strncasecmp(k, "content-length", 14) == 0)
           || (n == 17 && strncasecmp(k, "transfer-encoding", 17) == 0)
           || (n == 10 && strncasecmp(k, "connection", 10) == 0);
}


/* RFC 9110 5.6.2's tchar: a bitmap of the ASCII bytes */
static const uint64_t tchar_map[2] = {
    0x03ff6cfa00000000ULL, 0x57ffffffc7fffffeULL
};


/* A field name is a token, a value has no control byte but HTAB (RFC 9110
 * 5.1, 5.5): a CR or LF from a handler's header would end the head early
 * and let the rest be read as headers or a body of the attacker's. */
static int
valid_name(const char *k, size_t kn)
{
    size_t i;
    unsigned bad = kn == 0;

    for (i = 0; i < kn; i++) {
        unsigned char ch = (unsigned char) k[i];

        bad |= ch >= 128 || !((tchar_map[ch >> 6 & 1] >> (ch & 63)) & 1);
    }
    return !bad;
}


static int
valid_value(const char *v, size_t vn)
{
    size_t i;
    unsigned bad = 0;

    for (i = 0; i < vn; i++) {
        unsigned char ch = (unsigned char) v[i];

        bad |= (ch < 0x20 && ch != '\t') | (ch == 0x7f);
    }
    return !bad;
}


static int
hb_header(struct headbuf *b, const char *k, size_t kn, int ki, lua_State *L,
          int vi)
{
    size_t vn;
    /* a string as it is (the table keeps it alive); else tostring */
    int str = lua_type(L, vi) == LUA_TSTRING;
    const char *v = str ? lua_tolstring(L, vi, &vn) : luaL_tolstring(L, vi, &vn);

    if (!hc_check(b, 0, k, kn, ki, valid_name)
        || !hc_check(b, 1, v, vn, str ? vi : 0, valid_value)) {
        if (b->invalid == NULL) {
            /* the first one, copied: a later header's __tostring may
             * take k out of the table and collect it before the error
             * is raised (up to 64 bytes: it goes to the log) */
            if (kn <= 64) {
                memcpy(b->bad, k, kn);
                b->bad[kn] = '\0';
            } else {
                memcpy(b->bad, k, 60);
                memcpy(b->bad + 60, "...", 4);
            }
            b->invalid = b->bad;
        }
        if (!str) {
            lua_pop(L, 1);
        }
        return 0;
    }
    {
        char *q;

        hb_reserve(b, kn + vn + 4);
        q = b->p + b->len;
        memcpy(q, k, kn);
        q += kn;
        *q++ = ':';
        *q++ = ' ';
        memcpy(q, v, vn);
        q += vn;
        *q++ = '\r';
        *q++ = '\n';
        b->len = (size_t) (q - b->p);
    }
    if (!str) {
        lua_pop(L, 1);
    }
    return 0;
}


/* Each headers[k] = v of the table at idx (a table value: one line per
 * element), except the ones sendresponse writes itself. 0. */
static int
hb_headers(struct headbuf *b, lua_State *L, int idx)
{
    int bad = 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t kn;
        const char *k;
        int ki;

        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 1);
            continue;
        }
        ki = lua_gettop(L) - 1;
        k = lua_tolstring(L, ki, &kn);
        if (b->scan) {
            /* res:send's send_head: Connection: close from the handler
             * closes; a Date from the handler replaces ours */
            if (b->scan == 1 && kn == 10 && ci_eq(k, "connection", 10)) {
                size_t vn;
                const char *v = luaL_tolstring(L, -1, &vn);

                b->scan = 2;            /* the first one only */
                b->conn_close = vn == 5 && ci_eq(v, "close", 5);
                lua_pop(L, 1);
            } else if (kn == 4 && ci_eq(k, "date", 4)) {
                b->has_date = 1;
            }
        }
        if (!own_header(k, kn)) {
            if (lua_istable(L, -1)) {
                lua_Integer i, m = luaL_len(L, -1);

                for (i = 1; i <= m; i++) {
                    lua_geti(L, -1, i);
                    bad |= hb_header(b, k, kn, ki, L, lua_gettop(L));
                    lua_pop(L, 1);
                }
            } else {
                bad |= hb_header(b, k, kn, ki, L, lua_gettop(L));
            }
        }
        lua_pop(L, 1);
    }
    return bad;
}


/* The kernel took n bytes of head b and body (maybe none): send the rest
 * through conn:send, which waits (yields) as needed. */
static int
send_rest(lua_State *L, struct fdp_conn *c, struct headbuf *b,
          const char *body, size_t bn, ssize_t n)
{
    size_t done = n > 0 ? (size_t) n : 0;
    luaL_Buffer rest;

    c->bytes_out += done;
    luaL_buffinit(L, &rest);
    if (done < b->len) {
        luaL_addlstring(&rest, b->p + done, b->len - done);
        done = 0;
    } else {
        done -= b->len;
    }
    luaL_addlstring(&rest, body + done, bn - done);
    luaL_pushresult(&rest);
    lua_replace(L, 2);
    lua_settop(L, 2);
    return fdp_conn_send(L);
}


/*
 * conn:sendresponse(status_line, headers, date_line, length, chunked,
 *                   connection, body)
 * -> last index of the body sent (as send), or nil, err, n. Builds the
 * HTTP response head in C (no Lua strings per header): status_line
 * ("HTTP/1.1 200 OK\r\n"), each headers[k] = v (a table value: one line
 * per element) except Content-Length, Transfer-Encoding and Connection,
 * date_line if not nil, "Content-Length: length" if length is a number,
 * "Transfer-Encoding: chunked" if chunked, "Connection: <connection>" if
 * not nil. Sends head and body with one writev; what the
 * kernel does not take at once goes through conn:send's waiting path.
 */
/* An empty head in b (its stack buffer; a longer one replaces slot of
 * L's stack). */
static void
head_start(struct headbuf *b, lua_State *L, int slot)
{
    b->L = L;
    b->slot = slot;
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof(b->stack);
    b->invalid = NULL;
    b->scan = b->conn_close = b->has_date = 0;
    b->cache = NULL;
    b->cache_idx = 0;
}


/* Raise: a header refused. */
static void
head_fail(lua_State *L, struct headbuf *b)
{
    luaL_error(L, "invalid response header '%s' (a name must be a token, "
               "a value must hold no CR, LF or other control byte)",
               b->invalid);
}


/* The head's end, after the status line and headers: 0, or not 0 for
 * head_fail. */
static int
head_finish(struct headbuf *b, const char *dl, size_t dn, int has_len,
            lua_Integer v, int chunked, const char *cv, size_t cn)
{
    /* digits from the end: no snprintf on the hot path */
    char num[24];
    char *d = num + sizeof(num), *q;
    size_t nn = 0, need;

    if (has_len) {
        unsigned long long u = v < 0 ? 0 - (unsigned long long) v
                                     : (unsigned long long) v;

        do {
            *--d = (char) ('0' + u % 10);
            u /= 10;
        } while (u > 0);
        if (v < 0) {
            *--d = '-';
        }
        nn = (size_t) (num + sizeof(num) - d);
    }
    need = (dl ? dn : 0) + (has_len ? 18 + nn : 0) + (chunked ? 28 : 0)
           + (cv ? 14 + cn : 0) + 2;
    hb_reserve(b, need);
    q = b->p + b->len;
    if (dl) {
        memcpy(q, dl, dn);
        q += dn;
    }
    if (has_len) {
        memcpy(q, "Content-Length: ", 16);
        memcpy(q + 16, d, nn);
        q += 16 + nn;
        *q++ = '\r';
        *q++ = '\n';
    }
    if (chunked) {
        memcpy(q, "Transfer-Encoding: chunked\r\n", 28);
        q += 28;
    }
    if (cv) {
        memcpy(q, "Connection: ", 12);
        memcpy(q + 12, cv, cn);
        q += 12 + cn;
        *q++ = '\r';
        *q++ = '\n';
    }
    *q++ = '\r';
    *q++ = '\n';
    b->len = (size_t) (q - b->p);
    return b->invalid != NULL;
}


/* The head of a response into b (b->p is b->stack or a userdata at
 * slot of L's stack, kept there while b is used): status line, headers
 * table at hidx, date line (or NULL), "Content-Length: length" when
 * has_len, "Transfer-Encoding: chunked", "Connection: cv" (or NULL).
 * Raises for a header that is not a token/value, or out of memory. */
static void
head_build(lua_State *L, struct headbuf *b, int slot, const char *sl,
           size_t sn, int hidx, const char *dl, size_t dn, int has_len,
           lua_Integer v, int chunked, const char *cv, size_t cn)
{
    int bad;

    head_start(b, L, slot);
    hb_add(b, sl, sn);
    bad = hb_headers(b, L, hidx);
    if (head_finish(b, dl, dn, has_len, v, chunked, cv, cn) || bad) {
        head_fail(L, b);
    }
}


/* One writev of head b and body: the count written, or -errno. */
static ssize_t
head_write(struct fdp_conn *c, struct headbuf *b, const char *body, size_t bn)
{
    struct iovec iov[2];
    ssize_t n = -EBADF;

    if (c->fd >= 0) {
        iov[0].iov_base = b->p;
        iov[0].iov_len = b->len;
        iov[1].iov_base = (void *) body;
        iov[1].iov_len = bn;
        do {
            n = c->tr->writev(c, iov, bn ? 2 : 1);
        } while (n == -EINTR);
    }
    return n;
}


/*
 * conn:sendresponse(status_line, headers, date_line, length, chunked,
 *                   connection, body)
 * -> last index of the body sent (as send), or nil, err, n. Builds the
 * HTTP response head in C (no Lua strings per header): status_line
 * ("HTTP/1.1 200 OK\r\n"), each headers[k] = v (a table value: one line
 * per element) except Content-Length, Transfer-Encoding and Connection,
 * date_line if not nil, "Content-Length: length" if length is a number,
 * "Transfer-Encoding: chunked" if chunked, "Connection: <connection>" if
 * not nil. Sends head and body with one writev; what the
 * kernel does not take at once goes through conn:send's waiting path.
 */
static int
conn_sendresponse(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    size_t sn, dn = 0, bn = 0;
    const char *sl = luaL_checklstring(L, 2, &sn);
    const char *dl = luaL_optlstring(L, 4, NULL, &dn);
    size_t cn = 0;
    const char *conn_v = luaL_optlstring(L, 7, NULL, &cn);
    const char *body = luaL_optlstring(L, 8, "", &bn);
    struct headbuf b;
    ssize_t n;

    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 8);
    lua_pushnil(L);                     /* 9: a head past b's stack */
    head_build(L, &b, 9, sl, sn, 3, dl, dn, lua_isinteger(L, 5),
               lua_tointeger(L, 5), lua_toboolean(L, 6), conn_v, cn);
    n = head_write(c, &b, body, bn);
    if (n == (ssize_t) (b.len + bn)) {
        c->bytes_out += (uint64_t) n;
        lua_pushinteger(L, (lua_Integer) bn);
        return 1;
    }
    if (n < 0 && n != -EAGAIN && n != -EWOULDBLOCK) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushinteger(L, 0);
        return 3;
    }
    return send_rest(L, c, &b, body, bn, n);
}


/* The method (*m, *mn) and version ("1.0" or "1.1", *v) of a head kept as
 * req._head (s, n bytes, a userdata's: it parsed, so its request line is method SP
 * target SP HTTP/1.x CRLF; HTTP/1.2..1.9 read as "1.1"). m or v NULL:
 * not asked for. */
static void
head_method_version(const char *s, size_t n, const char **m, size_t *mn,
                    const char **v)
{
    if (m != NULL) {
        const char *sp = memchr(s, ' ', n);

        *m = s;
        *mn = sp != NULL ? (size_t) (sp - s) : n;
    }
    if (v != NULL) {
        const char *nl = memchr(s, '\n', n);

        *v = nl != NULL && nl - s >= 2 && nl[-2] == '0' ? "1.0" : "1.1";
    }
}


/* ---- res:header and res:send (fdpool.http's Res methods) ------------ */

/*
 * http.lua's Res:header and Res:send in C, the same steps on the same
 * fields (res._headers, started, finished, _bytes, _head_sent;
 * req._close, _broken): the handler's two calls of every plain request
 * without the Lua interpreter. fdpool._httpres(status_lines) makes them:
 * closures whose upvalues are the field names (interned strings, one
 * upvalue each: pushing one is a lua_pushvalue, no table lookup),
 * http.lua's status_lines table, its 200 line and the conn metatable.
 */
enum { R_STARTED = 1, R_FINISHED, R_STATUS, R_REQ, R_HEADERS,
       R_BYTES, R_HEAD_SENT, R_CONN, R_METHOD, R_CLOSE, R_EXPECT_CONTINUE,
       R_BODY, R_LENGTH, R_CHUNKED, R_VERSION, R_BROKEN, R_HEAD, R_END };
static const char *const reskeys[R_END - 1] = {
    "started", "finished", "_status", "_req", "_headers", "_bytes",
    "_head_sent", "_conn", "method", "_close", "_expect_continue", "_body",
    "_length", "_chunked", "version", "_broken", "_head"
};
#define RKEY(k) lua_upvalueindex(k)
#define RSTATUS_LINES lua_upvalueindex(R_END)
#define RLINE200 lua_upvalueindex(R_END + 1)
#define RCONN_MT lua_upvalueindex(R_END + 2)
#define RCTX lua_upvalueindex(R_END + 3)
#define RMT_STARTED lua_upvalueindex(R_END + 4)
#define RMT_SENT lua_upvalueindex(R_END + 5)
#define RMT_RES lua_upvalueindex(R_END + 6)
#define R_NUPVALUES (R_END + 6)

/*
 * The sent state of a res conn:httploop made (metatable Res, no started
 * field of its own) is its metatable, not 3 fields: res:send swaps Res
 * for http.lua's ResStarted (started, finished: true) and, once the head
 * is out, ResSent (and _head_sent), whose __index falls back to Res.
 * Any other res (a raw started field, another metatable or none) gets
 * the fields as before. A raw read of started or finished that finds
 * nothing looks at the metatable (res_mtstate).
 */
enum { RS_OTHER, RS_RES, RS_STARTED, RS_SENT };

/* res:header's and res:send's state (the userdata at RCTX) */
struct resctx {
    struct hcache hc;           /* (its strings: RCTX's user values) */
    const void *conn_mt;        /* RCONN_MT's address, or NULL */
    const void *mt[4];          /* RMT_RES, _STARTED, _SENT by RS_* (or NULL) */
    size_t n200;                /* RLINE200's bytes (0: too long) */
    char line200[64];
};

/* The Date line of the current second, made once per second. Per
 * process: a worker runs its Lua state on one thread. */
static struct {
    time_t t;
    size_t n;
    char line[64];
} date_cache = { (time_t) -1, 0, "" };


static const char *
date_line(size_t *n)
{
    time_t now = time(NULL);

    if (now != date_cache.t) {
        struct tm tm;

        date_cache.n = 0;
        if (gmtime_r(&now, &tm) != NULL) {
            date_cache.n = strftime(date_cache.line, sizeof(date_cache.line),
                                    "Date: %a, %d %b %Y %H:%M:%S GMT\r\n",
                                    &tm);
        }
        date_cache.t = now;
    }
    *n = date_cache.n;
    return date_cache.line;
}


/* pushes t[key k] (raw); its type */
static int
rget(lua_State *L, int t, int k)
{
    lua_pushvalue(L, RKEY(k));
    return lua_rawget(L, t);
}


/* t[key k] = true; t absolute */
static void
rset_true(lua_State *L, int t, int k)
{
    lua_pushvalue(L, RKEY(k));
    lua_pushboolean(L, 1);
    lua_rawset(L, t);
}


static int
rtrue(lua_State *L, int t, int k)
{
    int r = lua_toboolean(L, (rget(L, t, k), -1));

    lua_pop(L, 1);
    return r;
}


/* Which of Res, ResStarted, ResSent the metatable of the value at idx
 * is (RS_*; RS_OTHER: another or none) */
static int
res_mtstate(lua_State *L, int idx, const struct resctx *ctx)
{
    const void *p;

    if (!lua_getmetatable(L, idx)) {
        return RS_OTHER;
    }
    p = lua_topointer(L, -1);
    lua_pop(L, 1);
    return p == ctx->mt[RS_RES] ? RS_RES
           : p == ctx->mt[RS_STARTED] ? RS_STARTED
           : p == ctx->mt[RS_SENT] ? RS_SENT : RS_OTHER;
}


/* Raises as assert(not self.started, "...") for res (at 1) when it has
 * started (its own field, else its metatable). Returns 1 when res's
 * sent state is to go in its metatable (RS_RES without its own field). */
static int
not_started(lua_State *L, const struct resctx *ctx)
{
    int t = rget(L, 1, R_STARTED), on = lua_toboolean(L, -1), mt = RS_OTHER;

    lua_pop(L, 1);
    if (t == LUA_TNIL) {
        mt = res_mtstate(L, 1, ctx);
        on = mt == RS_STARTED || mt == RS_SENT;
    }
    if (on) {
        lua_pushliteral(L, "response already started");
        lua_error(L);
    }
    return mt == RS_RES;
}


/* res (at 1) has sent its head: ResSent (swap, see not_started) or the
 * field _head_sent */
static void
head_sent(lua_State *L, int swap)
{
    if (swap) {
        lua_pushvalue(L, RMT_SENT);
        lua_setmetatable(L, 1);
    } else {
        rset_true(L, 1, R_HEAD_SENT);
    }
}


/* Push the key of the headers table at h (absolute) that is name but for
 * ASCII case, the first in traversal order (http.lua's key_of): 1, or 0
 * and nothing pushed. res._headers holds a handful of names. */
static int
header_key(lua_State *L, int h, const char *name, size_t n)
{
    lua_pushnil(L);
    while (lua_next(L, h) != 0) {
        size_t kn;

        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tolstring(L, -2, &kn);

            if (kn == n && ci_eq(k, name, n)) {
                lua_pop(L, 1);
                return 1;
            }
        }
        lua_pop(L, 1);
    }
    return 0;
}


/* res:header(name, value): set (replace whatever the case of the name),
 * nil removes, a table sends one line each. Returns res. */
static int
res_header(lua_State *L)
{
    size_t n;
    const char *name;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_type(L, 2) != LUA_TSTRING) {
        (void) not_started(L, lua_touserdata(L, RCTX));
        return luaL_typeerror(L, 2, "string");
    }
    lua_settop(L, 3);
    if (rget(L, 1, R_STARTED) != LUA_TNIL ? lua_toboolean(L, 4)
        : res_mtstate(L, 1, lua_touserdata(L, RCTX)) >= RS_STARTED) {
        /* as assert(not self.started, "...") */
        lua_pushliteral(L, "response already started");
        return lua_error(L);
    }
    name = lua_tolstring(L, 2, &n);
    if (rget(L, 1, R_HEADERS) != LUA_TTABLE) {  /* 5 */
        luaL_checktype(L, 5, LUA_TTABLE);
    }
    if (header_key(L, 5, name, n)) {
        lua_pushnil(L);
        lua_rawset(L, 5);
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, 5);
    lua_settop(L, 1);
    return 1;
}


static int conn_sendresponse(lua_State *L);
static int res_write(lua_State *L, struct fdp_conn *c, struct headbuf *b,
                     size_t n1, int set_close, int swap);


/* hb_headers' notes (b->conn_close, has_date) without building: for a
 * conn whose own sendresponse builds the head */
static void
hb_scan(lua_State *L, struct headbuf *b, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t kn;
        const char *k;

        if (lua_type(L, -2) == LUA_TSTRING) {
            k = lua_tolstring(L, -2, &kn);
            if (b->scan == 0 && kn == 10 && ci_eq(k, "connection", 10)) {
                size_t vn;
                const char *v = luaL_tolstring(L, -1, &vn);

                b->scan = 2;
                b->conn_close = vn == 5 && ci_eq(v, "close", 5);
                lua_pop(L, 1);
            } else if (kn == 4 && ci_eq(k, "date", 4)) {
                b->has_date = 1;
            }
        }
        lua_pop(L, 1);
    }
}


/* Whether req (slot 3) has a body the connection cannot go on after:
 * a Content-Length past max_body (max_upload let it in, for
 * req:body_reader) that the handler neither read (_body) nor streamed
 * (_streamed): http.lua's drain will not read it, so the connection
 * closes after the response, which must say so. */
static int
body_undrainable(lua_State *L)
{
    lua_Integer len;
    int r = 0;

    if (rtrue(L, 3, R_BODY)) {
        return 0;
    }
    rget(L, 3, R_LENGTH);
    len = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (len <= 0) {
        return 0;
    }
    if (lua_getfield(L, 3, "_streamed") == LUA_TNIL
        && lua_getfield(L, 3, "_opts") == LUA_TTABLE
        && lua_getfield(L, -1, "max_body") == LUA_TNUMBER) {
        r = (lua_Number) len > lua_tonumber(L, -1);
    }
    lua_settop(L, 10);
    return r;
}


/* after sendresponse: (1 res, 2 body, 3 req, ..., ok, err); ctx: the
 * sent state in res's metatable (not_started's 1) */
static int
res_send_k(lua_State *L, int status, lua_KContext ctx)
{
    int ok;

    (void) status;
    head_sent(L, (int) ctx);
    ok = !lua_isnil(L, -2);
    if (!ok) {
        rset_true(L, 3, R_BROKEN);
    }
    lua_pushboolean(L, ok);
    lua_replace(L, -3);
    return 2;
}


/* The conn at idx when it is a real one (fdpool.conn), else NULL:
 * luaL_testudata without its registry lookup (the metatable compared
 * by address: RCONN_MT keeps it alive). */
static struct fdp_conn *
res_conn(lua_State *L, int idx, const struct resctx *ctx)
{
    struct fdp_conn *c = NULL;

    if (lua_type(L, idx) == LUA_TUSERDATA) {
        if (ctx->conn_mt == NULL) {
            return luaL_testudata(L, idx, FDP_CONN_MT);
        }
        if (lua_getmetatable(L, idx)) {
            if (lua_topointer(L, -1) == ctx->conn_mt) {
                c = lua_touserdata(L, idx);
            }
            lua_pop(L, 1);
        }
    }
    return c;
}


static int res_send_do(lua_State *L, int predrained);

/* res:send again once http.lua's predrain returned */
static int
res_send_again(lua_State *L, int status, lua_KContext ctx)
{
    (void) status;
    (void) ctx;
    lua_settop(L, 2);
    return res_send_do(L, 1);
}


/* res:send(body): the whole response with Content-Length (http.lua's
 * Res:send and send_head). Returns true, or false, err. */
static int
res_send(lua_State *L)
{
    return res_send_do(L, 0);
}


static int
res_send_do(lua_State *L, int predrained)
{
    size_t bn = 0, sn = 0, dn = 0, mn = 0, vn = 0;
    lua_Integer code, st = 0;
    int head_only, has_len, set_close, bad = 0, swap, v10;
    int st_type, st_int = 0, st_stored = 0, has_body;
    struct fdp_conn *c;
    struct headbuf b;
    struct resctx *ctx = lua_touserdata(L, RCTX);
    const char *sl = NULL, *dl, *cv, *m, *v;

    luaL_checktype(L, 1, LUA_TTABLE);
    swap = not_started(L, ctx);
    if (!lua_toboolean(L, 2)) {         /* body or "" */
        lua_settop(L, 1);
        lua_pushliteral(L, "");
    }
    lua_settop(L, 2);
    /* res._status, read once (no Lua runs before its second use below):
     * its type, its integer value (st_int: one), whether it is stored
     * as an integer. A 1xx is no final response (http.lua's
     * final_code): the handler's error, before anything is sent. */
    st_type = rget(L, 1, R_STATUS);
    if (st_type != LUA_TNIL) {
        st = lua_tointegerx(L, 3, &st_int);
        st_stored = st_type == LUA_TNUMBER && lua_isinteger(L, 3);
        if (st_type == LUA_TNUMBER && st_int && st >= 100 && st < 200) {
            return luaL_error(L, "status %d is informational, not a final "
                              "response (101: use res:takeover)", (int) st);
        }
    }
    lua_settop(L, 2);
    if (swap) {
        lua_pushvalue(L, RMT_STARTED);
        lua_setmetatable(L, 1);
    } else {
        rset_true(L, 1, R_STARTED);
        rset_true(L, 1, R_FINISHED);
    }
    if (lua_type(L, 2) != LUA_TSTRING) {
        return luaL_error(L, "attempt to get length of a %s value (local "
                          "'body')", luaL_typename(L, 2));
    }
    (void) lua_tolstring(L, 2, &bn);
    if (rget(L, 1, R_REQ) != LUA_TTABLE) {      /* 3 */
        luaL_checktype(L, 3, LUA_TTABLE);
    }
    lua_pushnil(L);                     /* 4: a head past b's stack */
    rget(L, 1, R_HEADERS);              /* 5 */
    rget(L, 1, R_CONN);                 /* 6 */
    lua_pushnil(L);                     /* 7 */
    /* (nil: Res._status's default; else checked as res:status does) */
    if (st_type == LUA_TNIL) {
        code = 200;
    } else {
        if (!st_int || st < 100 || st > 999) {
            return luaL_error(L, "status must be an integer from 100 to 999");
        }
        code = st;
        if (!st_stored) {
            lua_pushvalue(L, RKEY(R_STATUS));   /* as res:status stores it */
            lua_pushinteger(L, st);
            lua_rawset(L, 1);
        }
    }
    /* req's method and version (8, 9), else (req_index's) from its head
     * (10), read at once (the head's bytes die with the slots) */
    rget(L, 3, R_METHOD);
    rget(L, 3, R_VERSION);
    m = lua_tolstring(L, 8, &mn);
    v = lua_tolstring(L, 9, &vn);
    head_only = m != NULL && mn == 4 && memcmp(m, "HEAD", 4) == 0;
    if ((m == NULL || v == NULL) && rget(L, 3, R_HEAD) == LUA_TUSERDATA) {
        size_t hn = lua_rawlen(L, 10);
        const char *hs = lua_touserdata(L, 10);

        if (m == NULL) {        /* (the head parsed: "HEAD " or another) */
            head_only = hn > 5 && memcmp(hs, "HEAD ", 5) == 0;
        }
        if (v == NULL) {
            head_method_version(hs, hn, NULL, NULL, &v);
            vn = 3;
        }
    }
    v10 = v != NULL && vn == 3 && memcmp(v, "1.0", 3) == 0;
    head_only = head_only || code == 204 || code == 304 || code < 200;
    if (code == 200 && ctx->n200 > 0) {
        sl = ctx->line200;              /* (7 made below if asked for) */
        sn = ctx->n200;
    } else {
        lua_geti(L, RSTATUS_LINES, code);
        lua_replace(L, 7);              /* 7: the status line */
    }
    lua_settop(L, 7);
    if (lua_type(L, 5) != LUA_TTABLE) {
        luaL_checktype(L, 5, LUA_TTABLE);
    }
    c = res_conn(L, 6, ctx);
    /* A chunked request body not read yet (c->hbody: the request has a
     * body; a test conn (c NULL) always looks): http.lua's predrain
     * (Res._predrain, which waits) reads it before the head, so the
     * head can say whether the connection goes on (a body past
     * max_body: close). The sent state undone, res:send starts again
     * once it returned. */
    if (!predrained && (c == NULL || c->hbody) && rtrue(L, 3, R_CHUNKED)) {
        if (lua_getfield(L, 1, "_predrain") == LUA_TFUNCTION) {
            if (swap) {
                lua_pushvalue(L, RMT_RES);
                lua_setmetatable(L, 1);
            } else {
                lua_pushvalue(L, RKEY(R_STARTED));
                lua_pushboolean(L, 0);
                lua_rawset(L, 1);
                lua_pushvalue(L, RKEY(R_FINISHED));
                lua_pushboolean(L, 0);
                lua_rawset(L, 1);
            }
            lua_pushvalue(L, 3);
            lua_callk(L, 1, 0, 0, res_send_again);
            return res_send_again(L, LUA_OK, 0);
        }
        lua_pop(L, 1);                  /* (slots 8, 9 are read below) */
    }
    /* _bytes: for the access log, left out by a serve that keeps none
     * (conn:httploop's c->hnolog) */
    if (!head_only && (c == NULL || !c->hnolog)) {
        lua_pushvalue(L, RKEY(R_BYTES));
        lua_pushinteger(L, (lua_Integer) bn);
        lua_rawset(L, 1);
    }
    head_start(&b, L, 4);
    b.cache = &ctx->hc;
    b.cache_idx = RCTX;
    if (c != NULL) {
        /* the head as far as the headers, noting Connection and Date as
         * it goes */
        if (sl == NULL) {
            sl = luaL_checklstring(L, 7, &sn);
        }
        b.scan = 1;
        hb_add(&b, sl, sn);
        bad = hb_headers(&b, L, 5);
    } else {
        hb_scan(L, &b, 5);
    }
    /* req._close: Connection: close from the handler; a client waiting
     * for 100 Continue whose body was not asked for. Set below, with the
     * head built (before a refused header's error). req's fields read
     * at once (8 _expect_continue, 9 _close). The conn loop's request
     * without a body (!c->hbody) needs no look at _expect_continue (it
     * closes only for a body) nor _broken (set by a body's read, with
     * _close, or by a failed send, after which res:send raises). */
    set_close = b.conn_close;
    has_body = c == NULL || c->hbody;
    if (has_body) {
        rget(L, 3, R_EXPECT_CONTINUE);
    } else {
        lua_pushnil(L);
    }
    rget(L, 3, R_CLOSE);
    if (lua_toboolean(L, 8) && !rtrue(L, 3, R_BODY)) {
        rget(L, 3, R_LENGTH);
        if ((lua_isnumber(L, -1) && lua_tonumber(L, -1) > 0)
            || rtrue(L, 3, R_CHUNKED)) {
            set_close = 1;
        }
        lua_pop(L, 1);
    }
    /* The worker was told to stop (a graceful stop, a reload): this
     * response is the connection's last. A body past max_body left
     * unread: not drained, the connection closes. (c->hbody: the conn
     * loop's request has a body; a test conn (c NULL) always looks.) */
    if (!set_close && !lua_toboolean(L, 9) && (fdp_lthread_stopping
                       || (has_body && body_undrainable(L)))) {
        set_close = 1;
    }
    if (set_close || lua_toboolean(L, 9)
        || (has_body && rtrue(L, 3, R_BROKEN))) {
        cv = "close";                   /* (_broken: a body read in part) */
    } else {
        cv = v10 ? "keep-alive" : NULL;
    }
    has_len = !(code == 204 || code == 304 || code < 200);
    if (c == NULL) {
        /* not a real conn (fdpool.testing's): its own sendresponse,
         * conn:sendresponse(7, 5, date, has_len and bn, false, cv, body) */
        if (set_close) {
            rset_true(L, 3, R_CLOSE);
        }
        if (sl != NULL) {
            lua_pushvalue(L, RLINE200);
            lua_replace(L, 7);
        }
        lua_settop(L, 7);
        if (lua_type(L, 6) == LUA_TUSERDATA) {
            lua_pushcfunction(L, conn_sendresponse);
        } else {
            lua_getfield(L, 6, "sendresponse");
        }
        lua_pushvalue(L, 6);
        lua_pushvalue(L, 7);
        lua_pushvalue(L, 5);
        if (b.has_date) {
            lua_pushnil(L);
        } else {
            dl = date_line(&dn);
            lua_pushlstring(L, dl, dn);
        }
        if (has_len) {
            lua_pushinteger(L, (lua_Integer) bn);
        } else {
            lua_pushnil(L);
        }
        lua_pushboolean(L, 0);
        if (cv) {
            lua_pushstring(L, cv);
        } else {
            lua_pushnil(L);
        }
        if (head_only) {
            lua_pushnil(L);
        } else {
            lua_pushvalue(L, 2);
        }
        lua_callk(L, 8, 2, swap, res_send_k);
        return res_send_k(L, LUA_OK, swap);
    }
    dl = b.has_date ? NULL : date_line(&dn);
    if (head_finish(&b, dl, dn, has_len, (lua_Integer) bn, 0, cv,
                    cv ? strlen(cv) : 0) || bad) {
        if (set_close) {
            rset_true(L, 3, R_CLOSE);
        }
        head_fail(L, &b);
    }
    return res_write(L, c, &b, head_only ? 0 : bn, set_close, swap);
}


/* res_send's write of head b and the body (slot 2, n1 bytes of it) on
 * the real conn c, with one writev; what the kernel does not take at
 * once goes through conn:send, which waits (yields). Sets req._close
 * (slot 3) when set_close. */
static int
res_write(lua_State *L, struct fdp_conn *c, struct headbuf *b, size_t n1,
          int set_close, int swap)
{
    const char *body = n1 ? lua_tostring(L, 2) : "";
    ssize_t n = head_write(c, b, body, n1);

    if (n == (ssize_t) (b->len + n1)) {
        /* all sent (the usual case): as res_send_k after an ok */
        c->bytes_out += (uint64_t) n;
        if (set_close) {
            rset_true(L, 3, R_CLOSE);
        }
        head_sent(L, swap);
        lua_pushboolean(L, 1);
        lua_pushnil(L);
        return 2;
    }
    if (n < 0 && n != -EAGAIN && n != -EWOULDBLOCK) {
        if (set_close) {
            rset_true(L, 3, R_CLOSE);
        }
        lua_settop(L, 3);
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return res_send_k(L, LUA_OK, swap);
    }
    {
        /* the rest through conn:send, which waits (yields) as needed */
        size_t done = n > 0 ? (size_t) n : 0;
        luaL_Buffer rest;

        c->bytes_out += done;
        lua_settop(L, 6);                       /* (4: b's userdata) */
        lua_pushcfunction(L, fdp_conn_send);
        lua_pushvalue(L, 6);
        luaL_buffinit(L, &rest);
        if (done < b->len) {
            luaL_addlstring(&rest, b->p + done, b->len - done);
            done = 0;
        } else {
            done -= b->len;
        }
        luaL_addlstring(&rest, body + done, n1 - done);
        luaL_pushresult(&rest);
        if (set_close) {
            rset_true(L, 3, R_CLOSE);
        }
        lua_callk(L, 2, 2, swap, res_send_k);
        return res_send_k(L, LUA_OK, swap);
    }
}


/* fdpool._httpres(status_lines [, ResStarted, ResSent, Res]) -> header,
 * send (http.lua's Res methods, above; without the three metatables
 * every res gets its sent state as fields) */
int
fdp_lhttp_res(lua_State *L)
{
    int k, f, i;
    struct resctx *ctx;
    size_t n;
    const char *line;

    luaL_checktype(L, 1, LUA_TTABLE);
    for (i = 2; i <= 4; i++) {
        if (!lua_isnoneornil(L, i)) {
            luaL_checktype(L, i, LUA_TTABLE);
        }
    }
    lua_settop(L, 4);
    ctx = lua_newuserdatauv(L, sizeof(*ctx), 2 * HCACHE_N);    /* 5 */
    memset(ctx, 0, sizeof(*ctx));
    luaL_getmetatable(L, FDP_CONN_MT);                          /* 6 */
    ctx->conn_mt = lua_topointer(L, 6);
    lua_geti(L, 1, 200);                                        /* 7 */
    line = lua_tolstring(L, 7, &n);
    if (line != NULL && n <= sizeof(ctx->line200)) {
        memcpy(ctx->line200, line, n);
        ctx->n200 = n;
    }
    ctx->mt[RS_STARTED] = lua_istable(L, 2) ? lua_topointer(L, 2) : NULL;
    ctx->mt[RS_SENT] = lua_istable(L, 3) ? lua_topointer(L, 3) : NULL;
    ctx->mt[RS_RES] = ctx->mt[RS_STARTED] && ctx->mt[RS_SENT]
                      && lua_istable(L, 4) ? lua_topointer(L, 4) : NULL;
    for (f = 0; f < 2; f++) {
        for (k = 1; k < R_END; k++) {
            lua_pushstring(L, reskeys[k - 1]);
        }
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 7);
        lua_pushvalue(L, 6);
        lua_pushvalue(L, 5);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 3);
        lua_pushvalue(L, 4);
        lua_pushcclosure(L, f == 0 ? res_header : res_send, R_NUPVALUES);
    }
    return 2;
}


/* reply's end: after res:send (ctx 0: slot 2 holds the status it
 * returns), or after the Lua reply (ctx 1: its result on top) */
static int
reply_k(lua_State *L, int status, lua_KContext ctx)
{
    (void) status;
    if (ctx == 0) {
        lua_settop(L, 2);
    }
    return 1;
}


/*
 * reply(res, status, headers, body) -> status: http.lua's reply (what a
 * handler returned, sent through res) without the interpreter for the
 * usual values: an integer status from 100 to 999, nil or a table without
 * __pairs as the headers, nil, a string or a number as the body. The
 * same steps in the same order: res.started, res._status (not stored
 * again when it already reads so), res:header for each pair, res:send;
 * each looked up on res as the Lua one does. Anything else (a status as
 * a string or a float, headers or a body of another type: the errors
 * with their texts) goes to the Lua reply, upvalue 1.
 */
static int
res_reply(lua_State *L)
{
    lua_Integer code;
    int tb, tc;

    lua_settop(L, 4);
    if (lua_isnil(L, 2)) {
        return 1;
    }
    code = lua_isinteger(L, 2) ? lua_tointeger(L, 2) : 0;
    tb = lua_type(L, 3);
    tc = lua_type(L, 4);
    if (code < 100 || code > 999
        || (tb != LUA_TNIL && tb != LUA_TTABLE)
        || (tb == LUA_TTABLE && luaL_getmetafield(L, 3, "__pairs") != LUA_TNIL)
        || (tc != LUA_TNIL && tc != LUA_TSTRING && tc != LUA_TNUMBER)) {
        lua_settop(L, 4);
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_callk(L, 4, 1, 1, reply_k);
        return reply_k(L, LUA_OK, 1);
    }
    lua_getfield(L, 1, "started");                      /* 5 */
    if (lua_toboolean(L, 5)) {
        lua_settop(L, 2);
        return 1;
    }
    lua_getfield(L, 1, "_status");                      /* 6 */
    if (!lua_isinteger(L, 6) || lua_tointeger(L, 6) != code) {
        lua_pushvalue(L, 2);
        lua_setfield(L, 1, "_status");
    }
    if (tb == LUA_TTABLE) {
        lua_getfield(L, 1, "header");                   /* 7 */
        lua_pushnil(L);
        while (lua_next(L, 3) != 0) {                   /* 8 key, 9 value */
            lua_pushvalue(L, 7);
            lua_pushvalue(L, 1);
            lua_pushvalue(L, 8);
            lua_pushvalue(L, 9);
            lua_call(L, 3, 0);                          /* (never yields) */
            lua_settop(L, 8);
        }
    }
    lua_settop(L, 4);
    lua_getfield(L, 1, "send");                         /* 5 */
    lua_pushvalue(L, 1);
    if (tc == LUA_TNIL) {
        lua_pushliteral(L, "");
    } else {
        lua_pushvalue(L, 4);
        if (tc == LUA_TNUMBER) {
            (void) lua_tolstring(L, -1, NULL);          /* tostring(c) */
        }
    }
    lua_callk(L, 2, 0, 0, reply_k);
    return reply_k(L, LUA_OK, 0);
}


int
fdp_lhttp_reply(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcclosure(L, res_reply, 1);
    return 1;
}


/* ---- HTTP/1.x request head and chunked body -------------------------- */

/* A request head: 32 KiB in all, as much as nginx takes by default (its
 * 4 large header buffers of 8 KiB); a browser with big cookies sends
 * more than 8 KiB. A response head (sock:readresponse): 8 KiB. */
#define HEAD_MAX_DEFAULT   32768
#define RESPHEAD_MAX_DEFAULT 8192

/*
 * conn:httploop's cfg table (stack slot S_CFG) holds in its array part
 * what the loop pushes per request (C_*). The field names it reads and
 * writes (K_*) are the httploop closure's upvalues, interned strings:
 * pushing one is a lua_pushvalue of an upvalue, where a rawgeti from
 * cfg cost a table lookup (~25 instructions more, ~20 keys a request)
 * and lua_getfield/lua_setfield would look the C string up each time.
 */
/* conn:httploop's stack slots. A handler runs above them (S_MSGH, the
 * handler, req, res, then its own frame), so every slot here is one
 * less for handlers to fit in a coroutine's first stack (40 slots; the
 * first call past it doubles the stack to 80, which every minor
 * collection then clears above the idle loop's top): S_LIMIT, the
 * limit in force before the head's own (nil once the head is read),
 * holds S_OUT0 while the request runs, and whether a body is to be
 * read is c->hbody. */
enum { S_CONN = 1, S_CFG, S_LIMIT, S_SERVED, S_REQ, S_RES,
       S_TOP = S_RES, S_MSGH, S_OUT0 = S_LIMIT };
enum { C_FN = 1, C_REPLY, C_TRACEBACK, C_AFTER, C_REQ, C_RES, C_HEADER_MT,
       C_OPTS, C_PARAMS,
       K_METHOD, K_TARGET, K_PATH, K_QUERY, K_VERSION, K_HEADERS, K_CONN,
       K_OPTS, K_LENGTH, K_CLOSE, K_CHUNKED, K_EXPECT_CONTINUE, K_RCONN,
       K_RREQ, K_STATUS, K_RHEADERS, K_STARTED, K_FINISHED, K_BROKEN,
       K_HOST, K_TE, K_CL, K_EXPECT, K_CONNECTION, K_OUT0, K_HEAD, K_V10,
       K_V11, K_EMPTY, K_END };
#define K_GET K_END     /* "GET", for req.method */
#define K_NUP (K_GET - K_METHOD + 1)    /* httploop's upvalues */
static const char *const keynames[K_END - K_METHOD] = {
    "method", "target", "path", "query", "version", "headers", "conn",
    "_opts", "_length", "_close", "_chunked", "_expect_continue", "_conn",
    "_req", "_status", "_headers", "started", "finished", "_broken",
    "host", "transfer-encoding", "content-length", "expect", "connection",
    "_out0", "_head", "1.0", "1.1", ""
};


/*
 * Setting a field: the key first (KEY: cfg's interned key k), then the
 * value, then lua_rawset (no lua_insert between). keyed 0 (a table
 * without cfg): keyfirst pushes nothing and setkey sets by name.
 */
#define KEY(L, k) lua_pushvalue((L), lua_upvalueindex((k) - K_METHOD + 1))

static void
keyfirst(lua_State *L, int keyed, int k)
{
    if (keyed) {
        KEY(L, k);
    }
}


/* table[-3][key[-2]] = value[-1] (pops both); keyed 0: table[-2][name of
 * k] = value[-1] */
static void
setkey(lua_State *L, int keyed, int k)
{
    if (keyed) {
        lua_rawset(L, -3);
    } else {
        lua_setfield(L, -2, keynames[k - K_METHOD]);
    }
}


/* pushes t[key k] (raw); its type */
static int
kget(lua_State *L, int t, int k)
{
    KEY(L, k);
    return lua_rawget(L, t);
}

/* Where a head's LFs are, noted by head_find for the parser
 * (fdp_http_parse_head_lines): n of them (0: not noted; lf[n] is
 * scratch once n is FDP_HTTP_LINES_MAX). */
struct head_lfs {
    size_t n;
    const char *lf[FDP_HTTP_LINES_MAX + 1];
};


/* What prepare reads of a head, noted while parse_head goes over its
 * fields: each framing header's value in the read buffer when it came
 * once (a repeated one is read back from the headers table, joined). */
enum { SP_TE, SP_CL, SP_HOST, SP_EXPECT, SP_CONN, SP_N };
struct hspec {
    const char *v[SP_N];
    size_t n[SP_N];
    int count[SP_N];
    int v11;
    int eager;                  /* req.headers made (else req._head) */
    const char *method, *target;        /* in the read buffer */
    size_t method_len, target_len;
};


static void
hspec_note(struct hspec *sp, const struct fdp_http_field *f)
{
    int k;

    switch (f->name_len) {
    case 4: k = memcmp(f->name, "host", 4) == 0 ? SP_HOST : -1; break;
    case 6: k = memcmp(f->name, "expect", 6) == 0 ? SP_EXPECT : -1; break;
    case 10: k = memcmp(f->name, "connection", 10) == 0 ? SP_CONN : -1; break;
    case 14: k = memcmp(f->name, "content-length", 14) == 0 ? SP_CL : -1; break;
    case 17: k = memcmp(f->name, "transfer-encoding", 17) == 0 ? SP_TE : -1; break;
    default: k = -1;
    }
    if (k >= 0 && sp->count[k]++ == 0) {
        sp->v[k] = f->value;
        sp->n[k] = f->value_len;
    }
}


/* The head's fields as a table (lower-case names; a repeated field's
 * values joined with ", ", RFC 9110 5.3). */
/* The authority of an absolute-form request-target t (n bytes), "h:1"
 * of "http://h:1/p?q", in *an bytes; NULL for any other form. */
static const char *
target_authority(const char *t, size_t n, size_t *an)
{
    size_t i = 1, j;

    if (n == 0 || (t[0] | 0x20) < 'a' || (t[0] | 0x20) > 'z') {
        return NULL;
    }
    while (i < n && (((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z')
                     || (t[i] >= '0' && t[i] <= '9')
                     || t[i] == '+' || t[i] == '.' || t[i] == '-')) {
        i++;
    }
    if (i + 3 > n || memcmp(t + i, "://", 3) != 0) {
        return NULL;
    }
    i += 3;
    for (j = i; j < n && t[j] != '/' && t[j] != '?' && t[j] != '#'; j++) {
    }
    *an = j - i;
    return t + i;
}


static void
push_fields(lua_State *L, const struct fdp_http_head *h)
{
    size_t i, an;
    const char *a;

    lua_createtable(L, 0, (int) h->nfields);
    for (i = 0; i < h->nfields; i++) {
        const struct fdp_http_field *f = &h->fields[i];
        size_t j;
        int seen = h->nfields > 32;     /* else: an earlier line's name? */

        for (j = 0; j < i && !seen; j++) {
            seen = h->fields[j].name_len == f->name_len
                   && memcmp(h->fields[j].name, f->name, f->name_len) == 0;
        }
        lua_pushlstring(L, f->name, f->name_len);
        if (!seen) {
            lua_pushlstring(L, f->value, f->value_len);
            lua_rawset(L, -3);
            continue;
        }
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            /* Repeated field: combine as a list (RFC 9110 5.3). */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, f->value, f->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, f->value, f->value_len);
        }
        lua_rawset(L, -3);
    }
    /* An absolute-form target's authority is the request's host: the
     * server MUST ignore the Host field it got (RFC 9112 3.2.2; prepare
     * checked that one all the same), so a handler, a router or a
     * virtual host sees one host, never "GET http://a/" with "Host: b". */
    if (h->method != NULL
        && (a = target_authority(h->target, h->target_len, &an)) != NULL) {
        lua_pushliteral(L, "host");
        lua_pushlstring(L, a, an);
        lua_rawset(L, -3);
    }
}



/*
 * The path of request-target t (n bytes; q: its '?', or NULL) in *pn
 * bytes: origin-form's own ("/p?q" -> "/p"); absolute-form's after its
 * authority ("http://h/p?q" -> "/p", "http://h?q" -> "/"), as a server
 * MUST accept the absolute-form (RFC 9112 3.2.2): handlers, routers and
 * http.static see the same path whichever form a client sent.
 */
static const char *
target_path(const char *t, size_t n, const char *q, size_t *pn)
{
    const char *end = q != NULL ? q : t + n, *a, *p;
    size_t an;

    *pn = (size_t) (end - t);
    a = target_authority(t, (size_t) (end - t), &an);
    if (a == NULL) {
        return t;
    }
    p = memchr(a + an, '/', (size_t) (end - (a + an)));
    if (p == NULL) {
        *pn = 1;
        return "/";
    }
    *pn = (size_t) (end - p);
    return p;
}
/*
 * Parse the head in [s, end) (it ends with an empty line; http_parse.c)
 * into a request table on the stack. keyed 0: fields set by name
 * (conn:readrequest); 1: with cfg's interned keys (httploop); 2: as 1,
 * and req.version, headers, target, path, query (and prepare's conn)
 * left for Req's __index (req_index, below) to build from the head, kept
 * as req._head (a userdata, the conn at S_CONN its user value), when a
 * handler first reads them -- unless a framing header came twice
 * (prepare reads it joined from the table). req.method is set at once
 * (a router reads it on every request: made on first read it cost a
 * router ~+650 instructions a request, for ~250 saved where nothing
 * reads it). sp: noted for prepare, or NULL. Returns 1, or
 * 0 with nil, an error string and the method (or nil when the request
 * line did not parse) pushed.
 */
static int
parse_head(lua_State *L, char *s, char *end, int keyed, struct fdp_conn *c,
           struct hspec *sp, const struct head_lfs *lfs)
{
    struct fdp_http_head h;
    const char *q, *path;
    size_t pathn;
    int same;
    int err = fdp_http_parse_head_lines(s, (size_t) (end - s), lfs->lf,
                                        lfs->n, &h);
    int lazy = keyed == 2 && sp != NULL;

    if (err < 0) {
        lua_pushnil(L);
        lua_pushstring(L, fdp_http_strerror(err));
        if (h.method) {
            lua_pushlstring(L, h.method, h.method_len);
        } else {
            lua_pushnil(L);
        }
        return 0;
    }
    if (c != NULL) {
        c->kawait = 1;                  /* a next head is keep-alive */
        /* the request line for --slow's log ("GET /x"), and its clock */
        if (c->wt.s != NULL && c->wt.s->slow > 0
            && (c->req != NULL || (c->req = malloc(FDP_CONN_REQ)) != NULL)) {
            size_t m = h.method_len < FDP_CONN_REQ - 2 ? h.method_len
                       : FDP_CONN_REQ - 2;
            size_t t = h.target_len < FDP_CONN_REQ - 2 - m ? h.target_len
                       : FDP_CONN_REQ - 2 - m;

            memcpy(c->req, h.method, m);
            c->req[m] = ' ';
            memcpy(c->req + m + 1, h.target, t);
            c->req[m + 1 + t] = '\0';
        }
        fdp_task_request(L, 1);         /* --slow counts from here */
    }
    if (sp != NULL) {
        size_t i;

        memset(sp, 0, sizeof(*sp));
        sp->v11 = h.minor != 0;
        sp->method = h.method;
        sp->method_len = h.method_len;
        sp->target = h.target;
        sp->target_len = h.target_len;
        for (i = 0; i < h.nfields; i++) {
            hspec_note(sp, &h.fields[i]);
        }
        for (i = 0; lazy && i < SP_N; i++) {
            lazy = sp->count[i] < 2;
        }
        sp->eager = !lazy;
    }
    /* and prepare's, body()'s fields */
    lua_createtable(L, 0, lazy ? 8 : 12);
    keyfirst(L, keyed, K_METHOD);
    if (keyed && h.method_len == 3 && memcmp(h.method, "GET", 3) == 0) {
        KEY(L, K_GET);                  /* the common one, interned */
    } else {
        lua_pushlstring(L, h.method, h.method_len);
    }
    setkey(L, keyed, K_METHOD);
    if (!lazy) {        /* (else req_index makes target, version, ...) */
        q = memchr(h.target, '?', h.target_len);
        path = target_path(h.target, h.target_len, q, &pathn);
        same = path == h.target && pathn == h.target_len;
        keyfirst(L, keyed, K_TARGET);
        lua_pushlstring(L, h.target, h.target_len);
        if (same && keyed) {
            KEY(L, K_PATH);             /* path: the same string */
            lua_pushvalue(L, -2);
            lua_rawset(L, -5);
        }
        setkey(L, keyed, K_TARGET);
        if (!same || !keyed) {
            keyfirst(L, keyed, K_PATH);
            lua_pushlstring(L, path, pathn);
            setkey(L, keyed, K_PATH);
        }
        keyfirst(L, keyed, K_QUERY);
        if (q) {
            lua_pushlstring(L, q + 1, h.target_len - (size_t) (q - h.target) - 1);
        } else if (keyed) {
            KEY(L, K_EMPTY);
        } else {
            lua_pushliteral(L, "");
        }
        setkey(L, keyed, K_QUERY);
        keyfirst(L, keyed, K_VERSION);
        if (keyed) {
            KEY(L, h.minor ? K_V11 : K_V10);
        } else {
            lua_pushstring(L, h.minor ? "1.1" : "1.0");
        }
        setkey(L, keyed, K_VERSION);
    }
    if (lazy) {
        /* the head's bytes, and the conn as its user value (req.conn
         * for req_index: one field less per request) */
        char *u;

        keyfirst(L, keyed, K_HEAD);
        u = lua_newuserdatauv(L, (size_t) (end - s), 1);
        memcpy(u, s, (size_t) (end - s));
        lua_pushvalue(L, S_CONN);
        lua_setiuservalue(L, -2, 1);
        setkey(L, keyed, K_HEAD);
    } else {
        keyfirst(L, keyed, K_HEADERS);
        push_fields(L, &h);
        setkey(L, keyed, K_HEADERS);
    }
    return 1;
}


/*
 * Req's __index, when fdpool.http installs it (fdpool._httpreq(Req,
 * header_mt)): Req's own methods and fields first; then, for a request
 * whose head httploop kept (req._head: a userdata of its bytes, the conn
 * its user value), version, headers, target, path, query and conn (and
 * method, when assigned nil) built from that head on first use and
 * stored in req as eager parsing and prepare would have set them, so a
 * handler that never reads them does not pay for them (a head's headers
 * table is most of a request's work in Lua).
 * A missing _length reads 0 (httploop sets it only for a body), a
 * missing _opts the serve's options (httploop does not set them).
 * Upvalues: Req, header_mt, "_head", the options (or nil). Every read of
 * a field req lacks comes here: the common case (a method, a missing
 * field) is a rawget and a length test.
 */
enum { Q_REQ = 1, Q_HMT, Q_HEAD, Q_OPTS };


static int
req_index(lua_State *L)
{
    struct fdp_http_head h;
    char stack[2048], *b;
    const char *s, *t, *q, *k;
    size_t n, tn, kn;
    int which;

    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(Q_REQ)) != LUA_TNIL
        || lua_type(L, 2) != LUA_TSTRING) {
        return 1;
    }
    k = lua_tolstring(L, 2, &kn);
    switch (kn) {
    case 4:
        which = memcmp(k, "path", 4) == 0 ? 'p'
                : memcmp(k, "conn", 4) == 0 ? 'c' : 0;
        break;
    case 6:
        which = memcmp(k, "target", 6) == 0 ? 't'
                : memcmp(k, "method", 6) == 0 ? 'm' : 0;
        break;
    case 5:
        which = memcmp(k, "query", 5) == 0 ? 'q'
                : memcmp(k, "_opts", 5) == 0 ? 'o' : 0;
        break;
    case 7:
        which = memcmp(k, "headers", 7) == 0 ? 'h'
                : memcmp(k, "_length", 7) == 0 ? 'l'
                : memcmp(k, "version", 7) == 0 ? 'v' : 0;
        break;
    default: which = 0;
    }
    if (which == 'l') {
        lua_pushinteger(L, 0);
        return 1;
    }
    if (which == 'o') {
        lua_pushvalue(L, lua_upvalueindex(Q_OPTS));
        return 1;
    }
    if (which == 0) {
        return 1;                       /* nil */
    }
    lua_pushvalue(L, lua_upvalueindex(Q_HEAD));
    if (lua_rawget(L, 1) != LUA_TUSERDATA) {
        lua_pushnil(L);
        return 1;
    }
    s = lua_touserdata(L, -1);
    n = lua_rawlen(L, -1);
    if (which == 'c') {
        (void) lua_getiuservalue(L, -1, 1);
    } else if (which == 'h') {
        /* parsed again from a copy (the parser writes: lower-case names) */
        b = n <= sizeof(stack) ? stack : lua_newuserdatauv(L, n, 0);
        memcpy(b, s, n);
        if (fdp_http_parse_head(b, n, &h) < 0) {
            h.nfields = 0;              /* (it parsed once already) */
        }
        push_fields(L, &h);
        lua_pushvalue(L, lua_upvalueindex(Q_HMT));
        lua_setmetatable(L, -2);
    } else if (which == 'm') {
        head_method_version(s, n, &t, &tn, NULL);
        lua_pushlstring(L, t, tn);
    } else if (which == 'v') {
        head_method_version(s, n, NULL, NULL, &t);
        lua_pushstring(L, t);
    } else {
        /* request-line = method SP request-target SP HTTP-version */
        t = memchr(s, ' ', n);
        t = t != NULL ? t + 1 : s + n;
        q = memchr(t, ' ', (size_t) (s + n - t));
        tn = q != NULL ? (size_t) (q - t) : 0;
        q = memchr(t, '?', tn);
        if (which == 't') {
            lua_pushlstring(L, t, tn);
        } else if (which == 'p') {
            size_t pn;
            const char *p = target_path(t, tn, q, &pn);

            lua_pushlstring(L, p, pn);
        } else if (q != NULL) {
            lua_pushlstring(L, q + 1, tn - (size_t) (q - t) - 1);
        } else {
            lua_pushliteral(L, "");
        }
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}


/* next, for req_pairs (the global one may be another) */
static int
req_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1)) {
        return 2;
    }
    lua_pushnil(L);
    return 1;
}


/*
 * Req's __pairs, with req_index: method, version and conn, which an
 * eager parse set as fields, are made from the kept head first when req
 * has none of its own (version and conn; method if assigned nil), so
 * pairs(req) lists them as before; headers, target, path and query stay
 * as they are (made when first read). Upvalue: "_head".
 */
static int
req_pairs(lua_State *L)
{
    size_t n, m;
    const char *s, *x;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    if (lua_rawget(L, 1) == LUA_TUSERDATA) {
        s = lua_touserdata(L, 2);
        n = lua_rawlen(L, 2);
        lua_pushliteral(L, "method");
        if (lua_rawget(L, 1) == LUA_TNIL) {
            head_method_version(s, n, &x, &m, NULL);
            lua_pushliteral(L, "method");
            lua_pushlstring(L, x, m);
            lua_rawset(L, 1);
        }
        lua_pushliteral(L, "version");
        if (lua_rawget(L, 1) == LUA_TNIL) {
            head_method_version(s, n, NULL, NULL, &x);
            lua_pushliteral(L, "version");
            lua_pushstring(L, x);
            lua_rawset(L, 1);
        }
        lua_pushliteral(L, "conn");
        if (lua_rawget(L, 1) == LUA_TNIL) {
            lua_pushliteral(L, "conn");
            (void) lua_getiuservalue(L, 2, 1);
            lua_rawset(L, 1);
        }
    }
    lua_settop(L, 1);
    lua_pushcfunction(L, req_next);
    lua_insert(L, 1);
    lua_pushnil(L);
    return 3;
}


/* fdpool._httpreq(Req, header_mt [, opts]) -> an __index and a __pairs
 * for requests (above) */
int
fdp_lhttp_req(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 3);
    lua_pushliteral(L, "_head");
    lua_insert(L, 3);
    lua_pushcclosure(L, req_index, 4);
    lua_pushliteral(L, "_head");
    lua_pushcclosure(L, req_pairs, 1);
    return 2;
}


/*
 * The whole-head limit of readrequest (and of conn:httploop): armed once
 * the head's first byte is buffered (sec: seconds, or NULL), the conn's
 * own limit kept in stack slot stash (readrequest's 4) and put back when
 * the head is read.
 */
static void
head_limit_arm(lua_State *L, struct fdp_conn *c, const double *sec, int stash)
{
    if (sec != NULL && lua_isnil(L, stash) && c->rend > c->rstart) {
        double lim = (double) fdp_now_ms() + *sec * 1000.0;

        lua_pushnumber(L, c->limit);
        lua_replace(L, stash);
        if (c->limit <= 0 || lim < c->limit) {
            c->limit = lim;
        }
    }
}


/* &(*v = the number at idx), or NULL when that slot holds none */
static const double *
slot_num(lua_State *L, int idx, double *v)
{
    if (!lua_isnumber(L, idx)) {
        return NULL;
    }
    *v = lua_tonumber(L, idx);
    return v;
}


static int readrequest_run(lua_State *L, int status);


static int
readrequest_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    int r;

    (void) ctx;
    r = readrequest_run(L, status);     /* a yield does not come back */
    if (lua_isnumber(L, 4)) {
        c->limit = lua_tonumber(L, 4);
    }
    return r;
}


/*
 * Find a whole head at the start of c's buffer, reading more as needed:
 * returns its length (> 0), or 0 with nil and why pushed (2 values). A
 * peer that closes mid-head gives `truncated` (then the buffer is
 * emptied), or with truncated NULL "closed" and the bytes left buffered
 * for the caller. A wait yields to k with ctx; the head's whole-time
 * limit, sec seconds from its first byte (NULL: none), keeps the limit
 * it replaces in stack slot stash (head_limit_arm; armed while that slot
 * is nil). Empty lines before a head are skipped (RFC 9112 2.2).
 */
/* A head past max: for a request whose first line alone is past it,
 * "uri too long" (414, as nginx and Apache answer), else "header too
 * large" (431); truncated NULL is a response's head. */
static size_t
head_too_large(lua_State *L, const char *s, size_t max, const char *truncated)
{
    lua_pushnil(L);
    if (truncated != NULL && memchr(s, '\n', max) == NULL) {
        lua_pushliteral(L, "uri too long");
    } else {
        lua_pushliteral(L, "header too large");
    }
    return 0;
}


/* head_find's "the wait is registered: return to the root" */
#define HEAD_DORMANT ((size_t) -1)


static size_t
head_find(lua_State *L, struct fdp_conn *c, size_t max, const char *truncated,
          const double *sec, int stash, lua_KContext ctx, lua_KFunction k,
          struct head_lfs *lfs)
{
    ssize_t n;

    if (c->kawait == 2) {
        c->kawait = 1;
    }
    for (;;) {
        const char *s, *end, *p;
        /* the LFs passed, for the parser: noted only when the scan
         * starts at the head's first byte (the usual case: the whole
         * head came in one read), not when it goes on from where the
         * last one stopped (lf[nlf]: scratch once full) */
        const char *scratch[FDP_HTTP_LINES_MAX + 1];
        const char **lf = lfs != NULL ? lfs->lf : scratch;
        size_t nlf = 0;

        if (c->fd < 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "closed");
            return 0;
        }
        while (c->rend > c->rstart && (c->rbuf[c->rstart] == '\r'
                                       || c->rbuf[c->rstart] == '\n')) {
            c->rstart++;
            if (c->op_pos > 0) {
                c->op_pos--;
            }
        }
        s = c->rbuf ? c->rbuf + c->rstart : NULL;
        end = s ? c->rbuf + c->rend : NULL;
        for (p = s ? s + c->op_pos : NULL; p && p < end; p++) {
            p = memchr(p, '\n', (size_t) (end - p));
            if (p == NULL) {
                break;
            }
            lf[nlf] = p;
            nlf += nlf < FDP_HTTP_LINES_MAX;
            if ((p + 1 < end && p[1] == '\n')
                || (p + 2 < end && p[1] == '\r' && p[2] == '\n')) {
                const char *hend = p + (p[1] == '\n' ? 2 : 3);

                if ((size_t) (hend - s) > max) {
                    return head_too_large(L, s, max, truncated);
                }
                if (lfs != NULL) {
                    lf[nlf] = hend - 1;
                    nlf += nlf < FDP_HTTP_LINES_MAX;
                    lfs->n = c->op_pos == 0 ? nlf : 0;
                }
                c->op_pos = 0;
                return (size_t) (hend - s);
            }
        }
        if (s) {
            size_t look = (size_t) (end - s);

            c->op_pos = look > 2 ? look - 2 : 0;
            if (look > max) {
                return head_too_large(L, s, max, truncated);
            }
            /* a request line none could finish: the parser refuses
             * these bytes now (400) rather than at head_timeout */
            if (truncated != NULL
                && fdp_http_line_hopeless(s, look < FDP_HTTP_HOPELESS_LOOK
                                          ? look : FDP_HTTP_HOPELESS_LOOK)) {
                if (lfs != NULL) {
                    lfs->n = 0;
                }
                c->op_pos = 0;
                return look;
            }
        }
        n = fdp_conn_fill(c, 0);
        if (n > 0) {
            continue;
        }
        if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
            lua_pushnil(L);
            if (truncated == NULL) {    /* the caller takes the partial */
                lua_pushliteral(L, "closed");
                return 0;
            }
            lua_pushstring(L, c->rend > c->rstart ? truncated : "closed");
            c->rstart = c->rend = 0;
            return 0;
        }
        if (n != -EAGAIN) {
            lua_pushnil(L);
            lua_pushstring(L, strerror((int) -n));
            return 0;
        }
        if (c->kawait && c->rend == c->rstart) {
            /* idle between requests: once the pool stops, closed now,
             * as the worker closes the ones already waiting */
            if (fdp_lthread_close_idle) {
                lua_pushnil(L);
                lua_pushliteral(L, "closed");
                return 0;
            }
            c->kawait = 2;
        }
        fdp_conn_idle(c);       /* no buffer held while idle */
        head_limit_arm(L, c, sec, stash);
        if (c->ka_served > 0) {
            /* between keep-alive requests: the coroutine may go, at
             * once by returning when the worker holds many (httploop's
             * S_CONN is the root's argument) */
            if (c->rbuf == NULL && fdp_conn_wait_dormant(L, c, 1)) {
                return HEAD_DORMANT;
            }
            fdp_task_may_sleep(L, c->rbuf == NULL ? &c->wt : NULL,
                               c->ka_served == 1);
        }
        if (!fdp_conn_wait(L, c, EPOLLIN, ctx, k)) {
            if (c->ka_served > 0) {
                fdp_task_may_sleep(L, NULL, 0);
            }
            lua_pushnil(L);
            lua_pushliteral(L, "timeout");
            return 0;
        }
    }
}


static int
readrequest_run(lua_State *L, int status)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    size_t max = (size_t) lua_tointeger(L, 2);
    size_t hl;
    double sec;
    struct head_lfs lfs;

    lfs.n = 0;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    hl = head_find(L, c, max, "bad request: truncated", slot_num(L, 3, &sec),
                   4, 0, readrequest_k, &lfs);
    if (hl == 0) {
        return 2;
    }
    if (!parse_head(L, c->rbuf + c->rstart, c->rbuf + c->rstart + hl, 0, c,
                    NULL, &lfs)) {
        return 3;
    }
    c->rstart += hl;
    return 1;
}


/*
 * conn:readrequest([max_head_bytes [, head_seconds]]) -> request table
 * {method, target, path, query, version ("1.0"|"1.1"), headers
 * (lower-case names)}, or nil, "closed"|"timeout"|"uri too long"|"header too large"|
 * "too many headers"|"unsupported HTTP version"|"bad ...", method (when
 * the request line parsed, so a HEAD gets no error body). HTTP/1.2..1.9
 * read as "1.1". head_seconds bounds the whole head from its first byte
 * (waits before that byte keep the conn's timeout). The body, if any,
 * stays buffered for conn:receive()/readchunked(). Parsed in C
 * (http_parse.c): the hot path.
 */
static int
conn_readrequest(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    lua_Integer max = luaL_optinteger(L, 2, HEAD_MAX_DEFAULT);
    lua_Number head = luaL_optnumber(L, 3, -1);

    luaL_argcheck(L, max > 0, 2, "the limit must be positive");
    lua_settop(L, 1);
    lua_pushinteger(L, max);
    if (head > 0) {
        lua_pushnumber(L, head);
    } else {
        lua_pushnil(L);
    }
    lua_pushnil(L);                     /* slot 4: the conn's own limit */
    fdp_conn_op_begin(c);
    fdp_task_request(L, 0);             /* waiting for a request */
    return readrequest_k(L, LUA_OK, 0);
}


/* ---- a client socket's response head --------------------------------- */

static int
readresponse_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    struct fdp_http_head h;
    size_t hl;
    double sec;
    int err;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        hl = 0;
    } else {
        hl = head_find(L, c, (size_t) lua_tointeger(L, 2), NULL,
                       slot_num(L, 3, &sec), 4, 0, readresponse_k, NULL);
    }
    if (hl == 0) {
        /* nil, why, partial: what arrived is handed over (a caller may
         * retry a request on a reused connection that sent nothing) */
        lua_pushlstring(L, c->rbuf ? c->rbuf + c->rstart : "",
                        c->rend - c->rstart);
        c->rstart = c->rend = 0;
        return 3;
    }
    err = fdp_http_parse_response(c->rbuf + c->rstart, hl, &h);
    if (err < 0) {
        lua_pushnil(L);
        lua_pushstring(L, fdp_http_strerror(err));
        lua_pushlstring(L, c->rbuf + c->rstart, hl);
        c->rstart = c->rend = 0;
        return 3;
    }
    /* room for what fdpool.http.client adds (body, reused, url) */
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, h.status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, h.reason, h.reason_len);
    lua_setfield(L, -2, "reason");
    lua_pushstring(L, h.minor ? "1.1" : "1.0");
    lua_setfield(L, -2, "version");
    push_fields(L, &h);
    lua_setfield(L, -2, "headers");
    c->rstart += hl;
    return 1;
}


/*
 * sock:readresponse([max_head_bytes]) -> {status, reason, version
 * ("1.0"|"1.1"), headers (lower-case names, a repeated field's values
 * joined with ", ")}, or nil, err, partial (the bytes of the head that
 * came, handed over): "closed", "timeout", "header too large", "bad
 * status line", "bad header line" (obs-fold included), "bad header
 * value", "too many headers". The response head parsed in C
 * (http_parse.c: lines may end in a bare LF, empty lines before it are
 * skipped); the body stays buffered for receive(n), readchunked,
 * readchunk. A method of fdpool.tcp() sockets (lsock.c registers it).
 */
int
fdp_lhttp_readresponse(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    lua_Integer max = luaL_optinteger(L, 2, RESPHEAD_MAX_DEFAULT);

    luaL_argcheck(L, max > 0, 2, "the limit must be positive");
    if (fdp_conn_busy(L, c, 0)) {
        return 2;
    }
    lua_settop(L, 1);
    lua_pushinteger(L, max);
    lua_pushnil(L);                     /* slots 3, 4: no whole-head limit */
    lua_pushnil(L);
    fdp_conn_op_begin(c);
    return readresponse_k(L, LUA_OK, 0);
}


/* ---- the request loop of fdpool.http ---------------------------------- */

/*
 * conn:httploop(cfg) is http.serve's connection loop in C: read and parse
 * each request head, check its framing (prepare, below), build req and
 * res (tables with http.lua's metatables, so methods added there work on
 * them), and enter Lua once per request, for fn(req, res) under xpcall
 * with traceback (and, when fn returned a status, headers, body and had
 * not started the response, cfg's reply(res, ...) under the same: the
 * second half of http.lua's call). When the request ended the plain way (res
 * finished, no body, keep-alive, no access log, no parking) the next head
 * is read at once; otherwise cfg.after(conn, req, res, ok, a), http.lua's
 * own after-handler logic, decides (true: go on). It returns nothing when
 * the connection is over, "read", served, why, method when a head could
 * not be read, or "refuse", req, status, why when prepare refused one:
 * http.lua answers those. The stack slots below survive yields (waits
 * for a head, a handler that waits).
 */
enum { PH_READ, PH_HANDLER, PH_REPLY, PH_AFTER };

/* C_PARAMS is a userdata the first call makes from cfg's named settings
 * (with the interned keys), so each request reads them from a struct. */

struct httpcfg {
    size_t max_head;
    double head_timeout;        /* <= 0: none */
    double keepalive_timeout;   /* < 0: none */
    double max_body;
    lua_Integer keepalive_requests;
    int plain;                  /* no access log, no parking */
    int lazy;                   /* Req's __index is req_index: parse_head's
                                 * keyed 2 */
    int park;                   /* parking, no access log: park_end */
    int nolog;                  /* no access log (plain, or cfg.park) */
    const struct fdp_sched *crowd; /* cfg.park_auto: park when this
                                 * worker is crowded (crowded_end), or
                                 * NULL */
    const void *res_mt[2];      /* cfg.res_started, res_sent (or NULL): a
                                 * res whose metatable is one of them has
                                 * started and finished (see RS_RES) */
};


static double
cfg_num(lua_State *L, const char *k, double dflt)
{
    double v = dflt;

    if (lua_getfield(L, S_CFG, k) == LUA_TNUMBER) {
        v = fdp_clamp_sec(lua_tonumber(L, -1));
    }
    lua_pop(L, 1);
    return v;
}


/* The last cfg_params answer, by cfg's address: valid while that cfg
 * is at S_CFG of a running conn:httploop. Each call of conn:httploop
 * looks its cfg up afresh (fresh), so a new cfg at a dead one's address
 * replaces it before any of its continuations could look. Per process,
 * as date_cache. */
static struct {
    const void *cfg;
    struct httpcfg *p;
} cfg_last;


static struct httpcfg *
cfg_params(lua_State *L, int fresh)
{
    struct httpcfg *p;

    if (!fresh && lua_topointer(L, S_CFG) == cfg_last.cfg) {
        return cfg_last.p;
    }
    cfg_last.cfg = lua_topointer(L, S_CFG);
    if (lua_rawgeti(L, S_CFG, C_PARAMS) == LUA_TUSERDATA) {
        p = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return cfg_last.p = p;
    }
    lua_pop(L, 1);
    p = lua_newuserdatauv(L, sizeof(*p), 0);
    p->max_head = (size_t) cfg_num(L, "max_head", HEAD_MAX_DEFAULT);
    p->head_timeout = cfg_num(L, "head_timeout", -1);
    p->keepalive_timeout = cfg_num(L, "keepalive_timeout", -1);
    p->max_body = cfg_num(L, "max_body", 0);
    p->keepalive_requests = (lua_Integer) cfg_num(L, "keepalive_requests", 0);
    lua_getfield(L, S_CFG, "plain");
    p->plain = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, S_CFG, "lazy");
    p->lazy = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, S_CFG, "park");
    p->nolog = p->plain || lua_toboolean(L, -1);
    p->park = lua_toboolean(L, -1) && p->keepalive_timeout > 0
              && p->keepalive_timeout < 86400;
    lua_pop(L, 1);
    lua_getfield(L, S_CFG, "park_auto");
    p->crowd = lua_toboolean(L, -1) && p->plain && p->keepalive_timeout > 0
               && p->keepalive_timeout < 86400 ? fdp_sched_of(L) : NULL;
    lua_pop(L, 1);
    /* (cfg keeps them alive) */
    lua_getfield(L, S_CFG, "res_started");
    p->res_mt[0] = lua_istable(L, -1) ? lua_topointer(L, -1) : NULL;
    lua_getfield(L, S_CFG, "res_sent");
    p->res_mt[1] = lua_istable(L, -1) ? lua_topointer(L, -1) : NULL;
    lua_pop(L, 2);
    lua_rawseti(L, S_CFG, C_PARAMS);
    return cfg_last.p = p;
}


/* The value of header k in the headers table at hi, or NULL. */
static const char *
hget(lua_State *L, int hi, int k, size_t *n)
{
    const char *v = NULL;

    if (kget(L, hi, k) == LUA_TSTRING) {
        v = lua_tolstring(L, -1, n);    /* the table keeps it alive */
    }
    lua_pop(L, 1);
    return v;
}


/* Header k's value: from the head when it came once (in the read
 * buffer, n bytes, not NUL-terminated), from the headers table at hi
 * when repeated (joined with ", "), or NULL. */
static const char *
spget(lua_State *L, int hi, const struct hspec *sp, int i, int k, size_t *n)
{
    if (sp->count[i] == 0) {
        return NULL;
    }
    if (sp->count[i] == 1) {
        *n = sp->n[i];
        return sp->v[i];
    }
    return hget(L, hi, k, n);
}


static int
is_alnum(int ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
}


/* Host = uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2), as
 * http.lua's valid_host: an IP-literal in brackets or reg-name/IPv4
 * characters (empty allowed), then nothing or ":" digits. */
static int
valid_host(const char *v, size_t n)
{
    size_t i = 0;

    if (n > 0 && v[0] == '[') {
        for (i = 1; i < n && (is_alnum((unsigned char) v[i])
                              || strchr(":.-_~!$&'()*+,;=", v[i]) != NULL)
             && v[i] != 0; i++) {
        }
        if (i > 1 && i < n && v[i] == ']') {
            i++;
            goto port;
        }
        i = 0;
    }
    /* ('.' and '-' before strchr: a name's usual bytes) */
    while (i < n && v[i] != 0 && (is_alnum((unsigned char) v[i])
                                  || v[i] == '.' || v[i] == '-'
                                  || strchr("_~!$&'()*+,;=%", v[i]) != NULL)) {
        i++;
    }
port:
    if (i == n) {
        return 1;
    }
    if (v[i] != ':') {
        return 0;
    }
    for (i++; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return 0;
        }
    }
    return 1;
}


/* Whether the list v (n bytes: comma-separated, OWS around each
 * element, RFC 9110 5.6.1) has the token w, compared without case
 * ("close" is in "keep-alive, Close", not in "closed"). */
static int
has_token_ci(const char *v, size_t n, const char *w)
{
    size_t m = strlen(w), i = 0, a, b;

    while (i < n) {
        for (a = i; a < n && v[a] != ','; a++) {
        }
        b = a;
        while (i < b && (v[i] == ' ' || v[i] == '\t')) {
            i++;
        }
        while (b > i && (v[b - 1] == ' ' || v[b - 1] == '\t')) {
            b--;
        }
        if (b - i == m && strncasecmp(v + i, w, m) == 0) {
            return 1;
        }
        i = a + 1;
    }
    return 0;
}


/* fdpool._httptoken(v, token): whether the comma-separated list v (a
 * header value, OWS around each element: RFC 9110 5.6.1) holds token,
 * compared without case; false for nil. The one test of http.lua,
 * http/client.lua and http/websocket.lua. */
int
fdp_lhttp_token(lua_State *L)
{
    size_t n;
    const char *v = lua_isnoneornil(L, 1) ? NULL : luaL_checklstring(L, 1, &n);
    const char *w = luaL_checkstring(L, 2);

    lua_pushboolean(L, v != NULL && has_token_ci(v, n, w));
    return 1;
}


/*
 * http.lua's prepare, in C (the same rules, the same answers): the
 * request's framing (RFC 9112 6: anything ambiguous is refused), Host,
 * the target's form, Expect and Connection. Sets req's conn (when
 * parse_head kept no head: else req_index's), _opts (without req_index),
 * _length (with req_index: only when not 0), _chunked, _expect_continue,
 * _close (only when true) and the headers' case-folding metatable (when
 * parse_head made the headers table). Returns 0, or a status with *why set (or NULL).
 */
static int
prepare(lua_State *L, struct fdp_conn *c, const struct httpcfg *cp,
        const struct hspec *sp, const char **why)
{
    int hi, v11 = sp->v11;
    size_t tn = 0, cn = 0, n = 0, mn;
    const char *te, *cl, *v, *t, *m;
    lua_Integer length = 0;

    *why = NULL;
    c->hbody = 0;
    if (sp->eager) {                    /* else req_index's, from _head */
        KEY(L, K_CONN);
        lua_pushvalue(L, S_CONN);
        lua_rawset(L, S_REQ);
    }
    if (!cp->lazy) {                    /* else the __index's upvalue */
        KEY(L, K_OPTS);
        lua_rawgeti(L, S_CFG, C_OPTS);
        lua_rawset(L, S_REQ);
    }
    if (sp->eager) {
        kget(L, S_REQ, K_HEADERS);
    } else {
        lua_pushnil(L);                 /* req._head: nothing came twice */
    }
    hi = lua_gettop(L);
    te = spget(L, hi, sp, SP_TE, K_TE, &tn);
    cl = spget(L, hi, sp, SP_CL, K_CL, &cn);
    if (te) {
        size_t i = 0, ncod = 0, a, b;
        int last_chunked = 0;

        if (cl) {
            *why = "both Transfer-Encoding and Content-Length";
            return 400;
        }
        if (!v11) {
            *why = "Transfer-Encoding in HTTP/1.0";
            return 400;
        }
        /* chunked once and last, with nothing after it, not even an
         * empty list element ("chunked," or a second, empty line: as
         * llhttp) (400 otherwise, RFC 9112 6.3); a value naming no
         * coding at all is 400 too; no other coding is implemented
         * (501, 6.1). */
        while (i <= tn) {
            for (a = i; a < tn && te[a] != ','; a++) {
            }
            if (last_chunked) {
                *why = "chunked is not the final Transfer-Encoding";
                return 400;
            }
            b = a;
            while (i < b && (te[i] == ' ' || te[i] == '\t')) {
                i++;
            }
            while (b > i && (te[b - 1] == ' ' || te[b - 1] == '\t')) {
                b--;
            }
            if (b > i) {
                ncod++;
                last_chunked = b - i == 7 && strncasecmp(te + i, "chunked", 7) == 0;
            }
            i = a + 1;
        }
        if (ncod == 0) {
            *why = "empty Transfer-Encoding";
            return 400;
        }
        if (ncod != 1 || !last_chunked) {
            *why = "unsupported Transfer-Encoding";
            return 501;
        }
        KEY(L, K_CHUNKED);
        lua_pushboolean(L, 1);
        lua_rawset(L, S_REQ);
    } else if (cl) {
        size_t i;

        for (i = 0; i < cn; i++) {
            if (cl[i] < '0' || cl[i] > '9') {
                break;
            }
        }
        if (cn == 0 || i < cn) {
            *why = "bad Content-Length";
            return 400;
        }
        for (i = 0; i < cn && cl[i] == '0'; i++) {
        }
        if (cn - i > 15) {
            return 413;
        }
        for (; i < cn; i++) {
            length = length * 10 + (cl[i] - '0');
        }
        if ((double) length > cp->max_body) {
            return 413;
        }
    }
    if (length > 0 || !cp->lazy) {      /* req_index: a missing one is 0 */
        KEY(L, K_LENGTH);
        lua_pushinteger(L, length);
        lua_rawset(L, S_REQ);
    }
    /* for plain_end: a body to read (chunked or a length) */
    c->hbody = te || length > 0;
    v = spget(L, hi, sp, SP_HOST, K_HOST, &n);
    if (v) {
        if (!valid_host(v, n)) {
            *why = "bad Host";
            return 400;
        }
    } else if (v11) {
        *why = "missing Host";
        return 400;
    }
    /* origin-form, absolute-form, authority-form (CONNECT), "*"
     * (OPTIONS). */
    t = sp->target;
    n = sp->target_len;
    m = sp->method;
    mn = sp->method_len;
    if (mn == 7 && memcmp(m, "CONNECT", 7) == 0) {
        /* CONNECT's is authority-form and nothing else (RFC 9112
         * 3.2.3): uri-host ":" port, the port required */
        const char *colon = n > 0 ? memrchr(t, ':', n) : NULL;

        if (colon == NULL || colon == t || colon == t + n - 1
            || (t[0] == '[' && colon[-1] != ']') || !valid_host(t, n)) {
            *why = "bad request target";
            return 400;
        }
    } else if (n == 0 || t[0] != '/') {
        size_t an;
        const char *a = target_authority(t, n, &an);

        if (a == NULL) {
            if (n != 1 || t[0] != '*' || mn != 7 || memcmp(m, "OPTIONS", 7) != 0) {
                *why = "bad request target";
                return 400;
            }
        } else if (an == 0 || a[0] == ':' || !valid_host(a, an)) {
            /* absolute-form: the authority as Host's, with a host: no
             * userinfo (RFC 9110 4.2.4: an error), no empty host
             * (4.2.1: invalid) */
            *why = "bad request target";
            return 400;
        }
    }
    v = spget(L, hi, sp, SP_EXPECT, K_EXPECT, &n);
    if (v) {
        if (n != 12 || strncasecmp(v, "100-continue", 12) != 0) {
            return 417;
        }
        KEY(L, K_EXPECT_CONTINUE);
        lua_pushboolean(L, v11);
        lua_rawset(L, S_REQ);
    }
    v = spget(L, hi, sp, SP_CONN, K_CONNECTION, &n);
    if (v ? (v11 ? has_token_ci(v, n, "close") : !has_token_ci(v, n, "keep-alive")) : !v11) {
        KEY(L, K_CLOSE);
        lua_pushboolean(L, 1);          /* (absent: false) */
        lua_rawset(L, S_REQ);
    }
    if (sp->eager) {
        lua_rawgeti(L, S_CFG, C_HEADER_MT);
        lua_setmetatable(L, hi);
    }
    lua_settop(L, hi - 1);
    return 0;
}


/* res's started or finished field (k) when it has one (raw: a boolean
 * true), else its metatable's (cfg.res_started, res_sent: true; Res:
 * its default, false) */
static int
res_flag(lua_State *L, const struct httpcfg *cp, int k)
{
    int t = kget(L, S_RES, k), r = t == LUA_TBOOLEAN && lua_toboolean(L, -1);

    lua_pop(L, 1);
    if (t == LUA_TNIL && cp->res_mt[0] != NULL && lua_getmetatable(L, S_RES)) {
        const void *p = lua_topointer(L, -1);

        r = p == cp->res_mt[0] || p == cp->res_mt[1];
        lua_pop(L, 1);
    }
    return r;
}


/* res's response is out: finished with its head sent (its metatable
 * ResSent, else its own fields finished and _head_sent). A res whose
 * send was refused for a bad header has started and sent nothing; when
 * the handler caught the error and returned, cfg.after answers 500
 * (else the client would wait for an answer on a connection the loop
 * keeps for the next request). */
static int
res_done(lua_State *L, const struct httpcfg *cp)
{
    int t = kget(L, S_RES, K_FINISHED), r = lua_toboolean(L, -1);

    lua_pop(L, 1);
    if (t != LUA_TNIL) {
        if (r) {
            lua_pushliteral(L, "_head_sent");
            r = lua_rawget(L, S_RES) != LUA_TNIL && lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        return r;
    }
    if (cp->res_mt[1] != NULL && lua_getmetatable(L, S_RES)) {
        r = lua_topointer(L, -1) == cp->res_mt[1];
        lua_pop(L, 1);
    }
    return r;
}


/* The request ended the plain way: res's response out (res_done), no
 * request body, no close, nothing for cfg.after to do (no access log,
 * no parking). */
static int
plain_end(lua_State *L, const struct fdp_conn *c, const struct httpcfg *cp)
{
    int r;

    if (!cp->plain || !res_done(L, cp)) {
        return 0;
    }
    /* req._chunked and _length as prepare set them (c->hbody) */
    kget(L, S_REQ, K_CLOSE);
    kget(L, S_REQ, K_BROKEN);
    r = !lua_toboolean(L, -2) && !lua_toboolean(L, -1) && !c->hbody;
    lua_pop(L, 2);
    return r;
}


/*
 * Strict prefork's plain end: the request ended the plain way (as
 * plain_end, no access log) and the connection is idle: park it here,
 * as http.lua's after would (conn:park with keepalive_timeout), without
 * entering Lua. 1 when parked (the loop is over), 0 to go the usual way
 * (after decides, and parks or keeps serving).
 */
static int
park_end(lua_State *L, struct fdp_conn *c, const struct httpcfg *cp)
{
    struct httpcfg plain = *cp;
    struct fdp_task *t = fdp_current_task(L);
    int r;

    /* Only where conn:park would work (it raises elsewhere). */
    if (!cp->park || c->rend > c->rstart || c->tr_ctx != NULL || t == NULL
        || t->data != c || t->s->ops->park == NULL) {
        return 0;
    }
    plain.plain = 1;
    if (!plain_end(L, c, &plain)) {
        return 0;
    }
    r = fdp_conn_park(L, c, (uint32_t) (cp->keepalive_timeout * 1000.0));
    r = r == 1 && lua_toboolean(L, -1);
    lua_pop(L, r ? 1 : 2);
    return r;
}


/*
 * The default mode's plain end in a crowded worker (3/4 of its slots
 * taken: fdp_sched_crowded): park the idle connection as strict prefork
 * does (park_end), so that idle keep-alive connections cannot take
 * every slot and leave new clients queued until keepalive_timeout. 1
 * when parked; 0: the loop goes on as ever (not crowded, or the
 * connection cannot be parked: TLS, pipelined bytes).
 */
static int
crowded_end(lua_State *L, struct fdp_conn *c, const struct httpcfg *cp)
{
    struct httpcfg pk;

    if (cp->crowd == NULL || !fdp_sched_crowded(cp->crowd)) {
        return 0;
    }
    pk = *cp;
    pk.park = 1;
    return park_end(L, c, &pk);
}


static int httploop_k(lua_State *L, int status, lua_KContext ctx);


/*
 * Whether the loop's coroutine may go while the connection waits idle
 * for its next head (fdp_task_may_sleep): only when a new call of the
 * task's root function with its argument would do exactly what resuming
 * does, i.e. the root is http.serve's handler itself (cfg.handler) and
 * was called with this conn, it called conn:httploop at once (nothing
 * else on the coroutine's stack), and the task is this coroutine's own.
 * Asked once per connection; a plain socket only (TLS roots differ).
 */
static int
may_sleep(lua_State *L, struct fdp_conn *c)
{
    struct fdp_task *t = fdp_current_task(L);
    lua_Debug ar;
    int r;

    if (t == NULL || t->co != L || c->tr_ctx != NULL
        || lua_getstack(L, 2, &ar) || !lua_getstack(L, 1, &ar)
        || !lua_checkstack(L, 3)) {
        return 0;
    }
    (void) lua_getinfo(L, "f", &ar);
    lua_getfield(L, S_CFG, "handler");
    r = lua_rawequal(L, -1, -2) && fdp_sched_root(L, -1);
    lua_pop(L, 2);
    if (r && lua_getlocal(L, &ar, 1) != NULL) {
        r = lua_rawequal(L, -1, S_CONN);
        lua_pop(L, 1);
    } else {
        r = 0;
    }
    return r;
}


/* res.started (its own, else its metatable's: res_flag) */
static int
res_started(lua_State *L, const struct httpcfg *cp)
{
    int t = kget(L, S_RES, K_STARTED), r = lua_toboolean(L, -1);

    lua_pop(L, 1);
    return t == LUA_TNIL ? res_flag(L, cp, K_STARTED) : r;
}


/* The next request: its head's limits, and the per-wait timeout that
 * keep-alive waits use from the second request on. */
static void
httploop_next(lua_State *L, struct fdp_conn *c, const struct httpcfg *cp)
{
    lua_Integer served = lua_tointeger(L, S_SERVED);

    /* S_REQ, S_RES and S_LIMIT (was S_OUT0) nil */
    lua_settop(L, S_SERVED);
    lua_pushnil(L);                     /* S_REQ */
    lua_copy(L, S_REQ, S_LIMIT);
    lua_pushnil(L);                     /* S_RES */
    if (served == 1) {
        c->timeout = cp->keepalive_timeout;
        c->total = 0;
    }
    if (c->ka_sleep == 0) {
        c->ka_sleep = may_sleep(L, c) ? 1 : -1;
    }
    if (c->ka_sleep > 0) {
        c->ka_served = (int) served;
    }
    fdp_conn_op_begin(c);
    fdp_task_request(L, 0);             /* waiting for a request */
}


static int
httploop_read(lua_State *L, struct fdp_conn *c, const struct httpcfg *cp,
              int status)
{
    size_t hl;
    lua_Integer served;
    int code;
    const char *why;
    struct hspec sp;
    struct head_lfs lfs;

    lfs.n = 0;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        hl = 0;
    } else {
        hl = head_find(L, c, cp->max_head, "bad request: truncated",
                       cp->head_timeout > 0 ? &cp->head_timeout : NULL, S_LIMIT,
                       PH_READ, httploop_k, &lfs);
    }
    if (hl == HEAD_DORMANT) {
        return -1;      /* nothing: the root returns, the task sleeps */
    }
    c->ka_served = 0;
    if (lua_type(L, S_LIMIT) == LUA_TNUMBER) {  /* the head's limit ends */
        c->limit = lua_tonumber(L, S_LIMIT);
        lua_pushnil(L);
        lua_replace(L, S_LIMIT);
    }
    if (hl == 0 || !parse_head(L, c->rbuf + c->rstart, c->rbuf + c->rstart + hl,
                               cp->lazy ? 2 : 1, c, &sp, &lfs)) {
        if (hl == 0) {
            lua_pushnil(L);             /* no method */
        }
        lua_pushliteral(L, "read");
        lua_pushvalue(L, S_SERVED);
        lua_rotate(L, -5, 2);           /* "read", served, nil, why, method */
        lua_remove(L, -3);
        return -5;
    }
    c->rstart += hl;
    c->hnolog = (unsigned char) cp->nolog;      /* (res_send) */
    served = lua_tointeger(L, S_SERVED) + 1;
    lua_pushinteger(L, served);
    lua_replace(L, S_SERVED);
    lua_replace(L, S_REQ);
    code = prepare(L, c, cp, &sp, &why);
    if (code) {
        lua_settop(L, S_TOP);
        /* (req.method for http.lua's answer: req_index's, from the head) */
        lua_rawgeti(L, S_CFG, C_REQ);
        lua_setmetatable(L, S_REQ);
        lua_pushliteral(L, "refuse");
        lua_pushvalue(L, S_REQ);
        lua_pushinteger(L, code);
        if (why) {
            lua_pushstring(L, why);
        } else {
            lua_pushnil(L);
        }
        return -5;
    }
    lua_settop(L, S_REQ);               /* res is made at S_RES */
    if (cp->keepalive_requests > 0 && served >= cp->keepalive_requests) {
        KEY(L, K_CLOSE);
        lua_pushboolean(L, 1);
        lua_rawset(L, S_REQ);
    }
    /* res: _conn, _req, _headers (Res holds the defaults of _status,
     * started, finished; its methods create any other state; res:send
     * swaps its metatable for the sent state); room for what sending
     * adds (_bytes) and a handler's own fields (room for 4 only:
     * more collisions, measured ~+300 instructions a request) */
    lua_createtable(L, 0, 8);
    KEY(L, K_RCONN);
    lua_pushvalue(L, S_CONN);
    lua_rawset(L, -3);
    KEY(L, K_RREQ);
    lua_pushvalue(L, S_REQ);
    lua_rawset(L, -3);
    KEY(L, K_RHEADERS);
    lua_createtable(L, 0, 2);
    lua_rawset(L, -3);
    lua_rawgeti(L, S_CFG, C_RES);
    lua_setmetatable(L, S_RES);
    lua_rawgeti(L, S_CFG, C_REQ);
    lua_setmetatable(L, S_REQ);
    return 0;
}


static int
httploop_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = lua_touserdata(L, S_CONN);
    const struct httpcfg *cp = cfg_params(L, 0);
    int phase = (int) ctx, r;

    for (;;) {
        switch (phase) {
        case PH_READ:
            r = httploop_read(L, c, cp, status);
            if (r < 0) {
                return -r - 1;
            }
            /* http.lua's handed_over: bytes the handler writes past res
             * (a hand-made 101) mean it took the connection over. */
            lua_pushinteger(L, (lua_Integer) c->bytes_out);
            lua_replace(L, S_OUT0);     /* req._out0 for cfg.after */
            lua_rawgeti(L, S_CFG, C_TRACEBACK);         /* S_MSGH */
            lua_rawgeti(L, S_CFG, C_FN);
            lua_pushvalue(L, S_REQ);
            lua_pushvalue(L, S_RES);
            status = lua_pcallk(L, 2, 3, S_MSGH, PH_HANDLER, httploop_k);
            phase = PH_HANDLER;
            break;
        case PH_HANDLER:
        case PH_REPLY:
            r = status == LUA_OK || status == LUA_YIELD;
            if (phase == PH_HANDLER && r && !lua_isnil(L, S_MSGH + 1)
                && !res_started(L, cp)) {
                /* fn returned status, headers, body: cfg's reply(res,
                 * a, b, c) sends them under the same message handler
                 * (a bad one is the handler's error) and returns a */
                lua_rawgeti(L, S_CFG, C_REPLY);
                lua_pushvalue(L, S_RES);
                lua_rotate(L, S_MSGH + 1, 2);
                status = lua_pcallk(L, 4, 1, S_MSGH, PH_REPLY, httploop_k);
                phase = PH_REPLY;
                break;
            }
            if (r && cp->crowd != NULL && crowded_end(L, c, cp)) {
                return 0;
            }
            if (r && plain_end(L, c, cp)) {
                phase = PH_READ;
                status = LUA_OK;
                httploop_next(L, c, cp);
                break;
            }
            if (r && park_end(L, c, cp)) {
                return 0;
            }
            KEY(L, K_OUT0);
            lua_pushvalue(L, S_OUT0);
            lua_rawset(L, S_REQ);
            lua_rawgeti(L, S_CFG, C_AFTER);
            lua_pushvalue(L, S_CONN);
            lua_pushvalue(L, S_REQ);
            lua_pushvalue(L, S_RES);
            lua_pushboolean(L, r);
            lua_pushvalue(L, S_MSGH + 1);       /* the result or error */
            lua_callk(L, 5, 1, PH_AFTER, httploop_k);
            phase = PH_AFTER;
            status = LUA_OK;
            break;
        default:                                /* PH_AFTER */
            if (!lua_toboolean(L, -1)) {
                return 0;
            }
            phase = PH_READ;
            status = LUA_OK;
            httploop_next(L, c, cp);
            break;
        }
    }
}


static int
conn_httploop(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    double head;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, S_CFG);
    head = cfg_params(L, 1)->head_timeout;
    lua_pushnil(L);                     /* S_LIMIT */
    lua_pushinteger(L, 0);              /* S_SERVED */
    lua_pushnil(L);                     /* S_REQ */
    lua_pushnil(L);                     /* S_RES */
    if (c->ka_served > 0) {
        /* The task slept between requests (fdp_task_may_sleep) and this
         * is its root again: go on waiting for the next head, as the
         * resumed wait would (its timeout, if that woke it, included). */
        lua_pushinteger(L, c->ka_served);
        lua_replace(L, S_SERVED);
        fdp_task_request(L, 0);
        return httploop_k(L, LUA_YIELD, PH_READ);
    }
    c->ka_sleep = 0;                    /* asked again for this call */
    if (head > 0) {             /* else the conn's own: --io-timeout */
        c->timeout = head;
    }
    c->total = 0;
    fdp_conn_op_begin(c);
    fdp_task_request(L, 0);             /* waiting for a request */
    return httploop_k(L, LUA_OK, PH_READ);
}


static int
readchunked_fail(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}


/*
 * The body pieces so far are in the table at index 4; the bytes in the
 * read buffer go through the decoder (fdp_http_chunked_next) in place,
 * and the data parts are copied out (or only counted when discarding),
 * so the buffer stays its usual size whatever the body's.
 */
static int
readchunked_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    struct fdp_http_chunked *d = &c->chunked;
    uint64_t max = (uint64_t) lua_tointeger(L, 2);
    int discard = lua_toboolean(L, 3);
    ssize_t n;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        return readchunked_fail(L, "timeout");
    }
    for (;;) {
        if (c->fd < 0) {
            return readchunked_fail(L, "closed");
        }
        while (c->rend > c->rstart) {
            size_t used = 0, k;
            int r = fdp_http_chunked_next(d, c->rbuf + c->rstart,
                                          c->rend - c->rstart, &used);
            luaL_Buffer b;
            lua_Integer i, np;

            c->rstart += used;
            if (r < 0) {
                return readchunked_fail(L, fdp_http_strerror(r));
            }
            if (r == FDP_HTTP_CHUNK_DONE) {
                if (discard) {
                    lua_pushinteger(L, (lua_Integer) d->total);
                    return 1;
                }
                np = (lua_Integer) lua_rawlen(L, 4);
                luaL_buffinit(L, &b);
                for (i = 1; i <= np; i++) {
                    lua_rawgeti(L, 4, i);
                    luaL_addvalue(&b);
                }
                luaL_pushresult(&b);
                return 1;
            }
            if (r == FDP_HTTP_CHUNK_AGAIN) {
                break;
            }
            if (d->left > max || d->total > max - d->left) {
                return readchunked_fail(L, "too large");
            }
            k = c->rend - c->rstart;
            if ((uint64_t) k > d->left) {
                k = (size_t) d->left;
            }
            if (k == 0) {
                break;
            }
            if (!discard) {
                lua_pushlstring(L, c->rbuf + c->rstart, k);
                lua_rawseti(L, 4, (lua_Integer) lua_rawlen(L, 4) + 1);
            }
            fdp_http_chunked_take(d, k);
            c->rstart += k;
        }
        n = fdp_conn_fill(c, 0);
        if (n > 0) {
            continue;
        }
        if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
            return readchunked_fail(L, "closed");
        }
        if (n != -EAGAIN) {
            return readchunked_fail(L, strerror((int) -n));
        }
        if (!fdp_conn_wait(L, c, EPOLLIN, 0, readchunked_k)) {
            return readchunked_fail(L, "timeout");
        }
    }
}


/*
 * conn:readchunked(max_bytes [, discard]) -> body | nil, err: read a
 * chunked request body (RFC 9112 7.1) that follows the head, trailers
 * included (parsed and dropped), decoded in C. With discard true, the
 * data is dropped and its byte count returned (constant memory). err is
 * "too large" (data beyond max_bytes), "bad chunk size", "bad chunk
 * extension", "bad chunk", "bad trailer", "closed" or "timeout"; after
 * an error the stream cannot be resynchronised.
 */
static int
conn_readchunked(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    lua_Integer max = luaL_checkinteger(L, 2);

    luaL_argcheck(L, max >= 0, 2, "the limit must not be negative");
    lua_settop(L, 3);
    lua_newtable(L);
    fdp_http_chunked_init(&c->chunked);
    fdp_conn_op_begin(c);
    return readchunked_k(L, LUA_OK, 0);
}


/*
 * The chunked body piece by piece, for bodies streamed through
 * (conn:readchunk for req:body_reader, sock:readchunk for the client's
 * res:read): the data now buffered or the next to arrive, up to the end
 * of the current chunk and at most the piece limit (stack slot 3); ""
 * once the body (trailers included) is over; nil, err as readchunked.
 * Slot 2 bounds the whole body.
 */
static int
readchunk_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    struct fdp_http_chunked *d = &c->chunked;
    uint64_t max = (uint64_t) lua_tointeger(L, 2);
    uint64_t piece = (uint64_t) lua_tointeger(L, 3);
    ssize_t n;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        return readchunked_fail(L, "timeout");
    }
    for (;;) {
        if (c->fd < 0) {
            return readchunked_fail(L, "closed");
        }
        while (c->rend > c->rstart) {
            size_t used = 0, k;
            int r = fdp_http_chunked_next(d, c->rbuf + c->rstart,
                                          c->rend - c->rstart, &used);

            c->rstart += used;
            if (r < 0) {
                return readchunked_fail(L, fdp_http_strerror(r));
            }
            if (r == FDP_HTTP_CHUNK_DONE) {
                lua_pushliteral(L, "");
                return 1;
            }
            if (r == FDP_HTTP_CHUNK_AGAIN) {
                break;
            }
            if (d->left > max || d->total > max - d->left) {
                return readchunked_fail(L, "too large");
            }
            k = c->rend - c->rstart;
            if ((uint64_t) k > d->left) {
                k = (size_t) d->left;
            }
            if ((uint64_t) k > piece) {
                k = (size_t) piece;
            }
            if (k == 0) {
                break;
            }
            lua_pushlstring(L, c->rbuf + c->rstart, k);
            fdp_http_chunked_take(d, k);
            c->rstart += k;
            return 1;
        }
        n = fdp_conn_fill(c, 0);
        if (n > 0) {
            continue;
        }
        if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
            return readchunked_fail(L, "closed");
        }
        if (n != -EAGAIN) {
            return readchunked_fail(L, strerror((int) -n));
        }
        if (!fdp_conn_wait(L, c, EPOLLIN, 0, readchunk_k)) {
            return readchunked_fail(L, "timeout");
        }
    }
}


/* readchunk_k on the conn (or socket) at 1: max bounds the body, piece
 * each answer; start begins a body. */
int
fdp_lhttp_readchunk(lua_State *L, lua_Integer max, lua_Integer piece,
                    int start)
{
    struct fdp_conn *c = fdp_checkconn(L);

    if (fdp_conn_busy(L, c, 0)) {
        return 2;
    }
    if (start) {
        fdp_http_chunked_init(&c->chunked);
    }
    lua_settop(L, 1);
    lua_pushinteger(L, max);
    lua_pushinteger(L, piece);
    fdp_conn_op_begin(c);
    return readchunk_k(L, LUA_OK, 0);
}


/* conn:readchunk(max_bytes [, start]): max_bytes bounds the whole body;
 * start (true on the first call) begins one. */
static int
conn_readchunk(lua_State *L)
{
    lua_Integer max = luaL_checkinteger(L, 2);

    luaL_argcheck(L, max >= 0, 2, "the limit must not be negative");
    return fdp_lhttp_readchunk(L, max, LUA_MAXINTEGER, lua_toboolean(L, 3));
}


void
fdp_lhttp_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "readrequest", conn_readrequest },
        { "readchunked", conn_readchunked },
        { "readchunk", conn_readchunk },
        { "sendresponse", conn_sendresponse },
        { NULL, NULL }
    };

    fdp_conn_open_meta(L);
    luaL_getmetatable(L, FDP_CONN_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    /* httploop with its field names as upvalues (KEY) */
    luaL_checkstack(L, K_NUP, "httploop's keys");
    for (int k = K_METHOD; k < K_END; k++) {
        lua_pushstring(L, keynames[k - K_METHOD]);
    }
    lua_pushliteral(L, "GET");
    lua_pushcclosure(L, conn_httploop, K_NUP);
    lua_setfield(L, -2, "httploop");
    lua_pop(L, 2);
}
