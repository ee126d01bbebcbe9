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

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include <lauxlib.h>


/* ---- HTTP/1.x response head ----------------------------------------- */

/* Append to a growable head buffer; 0 or -1 (out of memory). */
struct headbuf {
    char *p;
    size_t len, cap;
    const char *invalid;        /* the name of a header refused, or NULL */
    char stack[2048];
};


static int
hb_add(struct headbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2;
        char *q;

        while (cap < b->len + n) {
            cap *= 2;
        }
        q = b->p == b->stack ? malloc(cap) : realloc(b->p, cap);
        if (q == NULL) {
            return -ENOMEM;
        }
        if (b->p == b->stack) {
            memcpy(q, b->stack, b->len);
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}


static int
own_header(const char *k, size_t n)
{
    return (n == 14 && strncasecmp(k, "content-length", 14) == 0)
           || (n == 17 && strncasecmp(k, "transfer-encoding", 17) == 0)
           || (n == 10 && strncasecmp(k, "connection", 10) == 0);
}


/* A field name is a token, a value has no control byte but HTAB (RFC 9110
 * 5.1, 5.5): a CR or LF from a handler's header would end the head early
 * and let the rest be read as headers or a body of the attacker's. */
static int
valid_field(const char *k, size_t kn, const char *v, size_t vn)
{
    size_t i;

    if (kn == 0) {
        return 0;
    }
    for (i = 0; i < kn; i++) {
        unsigned char ch = (unsigned char) k[i];

        if (!((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z'))
            && (ch == 0 || strchr("!#$%&'*+-.^_`|~", ch) == NULL)) {
            return 0;
        }
    }
    for (i = 0; i < vn; i++) {
        unsigned char ch = (unsigned char) v[i];

        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return 0;
        }
    }
    return 1;
}


static int
hb_header(struct headbuf *b, const char *k, size_t kn, lua_State *L, int vi)
{
    size_t vn;
    const char *v = luaL_tolstring(L, vi, &vn);
    int r;

    if (!valid_field(k, kn, v, vn)) {
        b->invalid = k;         /* the headers table keeps k alive */
        lua_pop(L, 1);
        return 0;
    }
    r = hb_add(b, k, kn) | hb_add(b, ": ", 2) | hb_add(b, v, vn)
        | hb_add(b, "\r\n", 2);
    lua_pop(L, 1);
    return r;
}


/* Each headers[k] = v of the table at idx (a table value: one line per
 * element), except the ones sendresponse writes itself. 0 or -ENOMEM. */
static int
hb_headers(struct headbuf *b, lua_State *L, int idx)
{
    int bad = 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t kn;
        const char *k;

        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 1);
            continue;
        }
        k = lua_tolstring(L, -2, &kn);
        if (!own_header(k, kn)) {
            if (lua_istable(L, -1)) {
                lua_Integer i, m = luaL_len(L, -1);

                for (i = 1; i <= m; i++) {
                    lua_geti(L, -1, i);
                    bad |= hb_header(b, k, kn, L, lua_gettop(L));
                    lua_pop(L, 1);
                }
            } else {
                bad |= hb_header(b, k, kn, L, lua_gettop(L));
            }
        }
        lua_pop(L, 1);
    }
    return bad;
}


/* The kernel took n bytes of head b and body (maybe none): send the rest
 * through conn:send, which waits (yields) as needed. Frees b. */
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
    if (b->p != b->stack) {
        free(b->p);
    }
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
    struct iovec iov[2];
    ssize_t n;
    int bad = 0;

    luaL_checktype(L, 3, LUA_TTABLE);
    b.p = b.stack;
    b.len = 0;
    b.cap = sizeof(b.stack);
    b.invalid = NULL;
    bad |= hb_add(&b, sl, sn);
    bad |= hb_headers(&b, L, 3);
    if (dl) {
        bad |= hb_add(&b, dl, dn);
    }
    if (lua_isinteger(L, 5)) {
        char num[48];
        int k = snprintf(num, sizeof(num), "Content-Length: %lld\r\n",
                         (long long) lua_tointeger(L, 5));

        bad |= hb_add(&b, num, (size_t) k);
    }
    if (lua_toboolean(L, 6)) {
        bad |= hb_add(&b, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (conn_v) {
        bad |= hb_add(&b, "Connection: ", 12) | hb_add(&b, conn_v, cn)
               | hb_add(&b, "\r\n", 2);
    }
    bad |= hb_add(&b, "\r\n", 2);
    if (bad || b.invalid) {
        if (b.p != b.stack) {
            free(b.p);
        }
        if (b.invalid) {
            return luaL_error(L, "invalid response header '%s' (a name must be "
                              "a token, a value must hold no CR, LF or other "
                              "control byte)", b.invalid);
        }
        return luaL_error(L, "out of memory");
    }
    n = -EBADF;
    if (c->fd >= 0) {
        iov[0].iov_base = b.p;
        iov[0].iov_len = b.len;
        iov[1].iov_base = (void *) body;
        iov[1].iov_len = bn;
        do {
            n = c->tr->writev(c, iov, bn ? 2 : 1);
        } while (n == -EINTR);
    }
    if (n == (ssize_t) (b.len + bn)) {
        if (b.p != b.stack) {
            free(b.p);
        }
        c->bytes_out += (uint64_t) n;
        lua_pushinteger(L, (lua_Integer) bn);
        return 1;
    }
    if (n < 0 && n != -EAGAIN && n != -EWOULDBLOCK) {
        if (b.p != b.stack) {
            free(b.p);
        }
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushinteger(L, 0);
        return 3;
    }
    return send_rest(L, c, &b, body, bn, n);
}


/* ---- HTTP/1.x request head and chunked body -------------------------- */

#define HEAD_MAX_DEFAULT   8192

/*
 * Parse the head in [s, end) (it ends with an empty line; http_parse.c)
 * into a request table on the stack. Returns 1, or 0 with nil, an error
 * string and the method (or nil when the request line did not parse)
 * pushed.
 */
static int
parse_head(lua_State *L, char *s, char *end)
{
    struct fdp_http_head h;
    const char *q;
    size_t i;
    int err = fdp_http_parse_head(s, (size_t) (end - s), &h);

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
    lua_createtable(L, 0, 8);
    lua_pushlstring(L, h.method, h.method_len);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, h.target, h.target_len);
    lua_setfield(L, -2, "target");
    q = memchr(h.target, '?', h.target_len);
    lua_pushlstring(L, h.target, q ? (size_t) (q - h.target) : h.target_len);
    lua_setfield(L, -2, "path");
    if (q) {
        lua_pushlstring(L, q + 1, h.target_len - (size_t) (q - h.target) - 1);
    } else {
        lua_pushliteral(L, "");
    }
    lua_setfield(L, -2, "query");
    lua_pushstring(L, h.minor ? "1.1" : "1.0");
    lua_setfield(L, -2, "version");

    lua_createtable(L, 0, (int) h.nfields);
    for (i = 0; i < h.nfields; i++) {
        struct fdp_http_field *f = &h.fields[i];

        lua_pushlstring(L, f->name, f->name_len);
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
    lua_setfield(L, -2, "headers");
    return 1;
}


/*
 * The whole-head limit of readrequest: armed once the head's first byte
 * is buffered (stack slot 3: seconds, or nil), the conn's own limit kept
 * in slot 4 and put back when the call returns.
 */
static void
head_limit_arm(lua_State *L, struct fdp_conn *c)
{
    if (lua_isnumber(L, 3) && lua_isnil(L, 4) && c->rend > c->rstart) {
        double lim = (double) fdp_now_ms() + lua_tonumber(L, 3) * 1000.0;

        lua_pushnumber(L, c->limit);
        lua_replace(L, 4);
        if (c->limit <= 0 || lim < c->limit) {
            c->limit = lim;
        }
    }
}


static int readrequest_run(lua_State *L, int status);


static int
readrequest_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = fdp_checkconn(L);
    int r;

    (void) ctx;
    r = readrequest_run(L, status);     /* a yield does not come back */
    if (lua_isnumber(L, 4)) {
        c->limit = lua_tonumber(L, 4);
    }
    return r;
}


static int
readrequest_run(lua_State *L, int status)
{
    struct fdp_conn *c = fdp_checkconn(L);
    size_t max = (size_t) lua_tointeger(L, 2);
    ssize_t n;

    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    for (;;) {
        const char *s, *end, *p;

        if (c->fd < 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "closed");
            return 2;
        }
        /* Ignore empty lines before a request (RFC 9112 2.2). */
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
            if ((p + 1 < end && p[1] == '\n')
                || (p + 2 < end && p[1] == '\r' && p[2] == '\n')) {
                const char *hend = p + (p[1] == '\n' ? 2 : 3);

                if ((size_t) (hend - s) > max) {
                    lua_pushnil(L);
                    lua_pushliteral(L, "header too large");
                    return 2;
                }
                if (!parse_head(L, c->rbuf + c->rstart,
                                c->rbuf + c->rstart + (hend - s))) {
                    return 3;
                }
                lua_getfield(L, -1, "method");
                lua_getfield(L, -2, "target");
                snprintf(c->req, sizeof(c->req), "%s %s",
                         lua_tostring(L, -2), lua_tostring(L, -1));
                lua_pop(L, 2);
                fdp_task_request(L, 1);     /* --slow counts from here */
                c->rstart += (size_t) (hend - s);
                c->op_pos = 0;
                return 1;
            }
        }
        if (s) {
            c->op_pos = (size_t) (end - s) > 2 ? (size_t) (end - s) - 2 : 0;
            if ((size_t) (end - s) > max) {
                lua_pushnil(L);
                lua_pushliteral(L, "header too large");
                return 2;
            }
        }
        n = fdp_conn_fill(c, 0);
        if (n > 0) {
            continue;
        }
        if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
            lua_pushnil(L);
            lua_pushstring(L, c->rend > c->rstart ? "bad request: truncated"
                           : "closed");
            c->rstart = c->rend = 0;
            return 2;
        }
        if (n != -EAGAIN) {
            lua_pushnil(L);
            lua_pushstring(L, strerror((int) -n));
            return 2;
        }
        head_limit_arm(L, c);
        if (!fdp_conn_wait(L, c, EPOLLIN, 0, readrequest_k)) {
            lua_pushnil(L);
            lua_pushliteral(L, "timeout");
            return 2;
        }
    }
}


/*
 * conn:readrequest([max_head_bytes [, head_seconds]]) -> request table
 * {method, target, path, query, version ("1.0"|"1.1"), headers
 * (lower-case names)}, or nil, "closed"|"timeout"|"header too large"|
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
    struct fdp_conn *c = fdp_checkconn(L);
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


void
fdp_lhttp_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "readrequest", conn_readrequest },
        { "readchunked", conn_readchunked },
        { "sendresponse", conn_sendresponse },
        { NULL, NULL }
    };

    fdp_conn_open_meta(L);
    luaL_getmetatable(L, FDP_CONN_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
}
