/*
 * lconn.c - the conn object handed to handlers (userdata "fdpool.conn"),
 * shaped like LuaSocket's TCP client object: receive/send/close/
 * settimeout/getpeername..., plus sendfile. I/O is non-blocking; when the
 * kernel says EAGAIN the call waits through fdp_wait(), which yields the
 * task's coroutine (or polls where yielding is impossible). The conn owns
 * its fd and its read buffer.
 */
#include "fdp.h"
#include "pool.h"
#include "laux.h"
#include "lconn.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <strings.h>

#include <lauxlib.h>
#include <lualib.h>

#define CONN_MT         "fdpool.conn"
#define RBUF_MIN        8192
#define LINE_MAX_BYTES  (1u << 20)

enum { PAT_LINE, PAT_ALL, PAT_COUNT };

struct fdp_fd;


static struct fdp_conn *
checkconn(lua_State *L)
{
    return luaL_checkudata(L, 1, CONN_MT);
}


struct fdp_conn *
fdp_conn_new(lua_State *L, int fd, struct fdp_wctx *w)
{
    struct fdp_conn *c = lua_newuserdatauv(L, sizeof(*c), 0);

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    luaL_setmetatable(L, CONN_MT);
    c->fd = fd;
    c->w = w;
    c->rready = 1;
    c->timeout = w && w->pool->io_timeout > 0 ? w->pool->io_timeout : -1;
    c->io.fd = -1;
    return c;
}


/* The client's address from a PROXY header: getpeername() gives it. */
void
fdp_conn_set_peer(struct fdp_conn *c, const void *peer, uint32_t len)
{
    memcpy(c->peer, peer, len);
    c->peerlen = len;
}


void
fdp_conn_close(struct fdp_conn *c)
{
    if (c->fd >= 0) {
        if (c->w) {
            fdp_conn_forget(c);
        }
        fdp_close(&c->fd);
    }
    free(c->rbuf);
    c->rbuf = NULL;
    c->rstart = c->rend = c->rcap = 0;
}


void
fdp_conn_peer(struct fdp_conn *c, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (c->peerlen > 0) {
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, c->peer, c->peerlen);
    } else if (c->fd < 0
               || getpeername(c->fd, (struct sockaddr *) &ss, &len) < 0) {
        snprintf(out, n, "?");
        return;
    }
    fdp_format_sockaddr(&ss, out, n, 0);
}


/* Start a call. In "t" mode the timeout bounds the whole call; in "b"
 * mode (the default, as LuaSocket) each wait gets the full timeout. */
static void
op_begin(struct fdp_conn *c)
{
    c->deadline = (!c->total || c->timeout < 0) ? 0
                  : fdp_now_ms() + (uint64_t) (c->timeout * 1000.0) + 1;
    c->op_pos = 0;
}


/* Read once into the buffer: >0 bytes, 0 EOF, -errno. */
static ssize_t
fill(struct fdp_conn *c, size_t want)
{
    ssize_t n;

    if (c->rstart == c->rend) {
        c->rstart = c->rend = 0;
    }
    if (c->rcap - c->rend < RBUF_MIN / 2 || c->rcap - c->rstart < want) {
        if (c->rstart > 0) {
            memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
            c->rend -= c->rstart;
            c->rstart = 0;
        }
        if (c->rcap - c->rend < RBUF_MIN / 2 || c->rcap < want) {
            size_t cap = c->rcap ? c->rcap : RBUF_MIN;
            char *b;

            while (cap - c->rend < RBUF_MIN / 2 || cap < want) {
                cap *= 2;
            }
            b = realloc(c->rbuf, cap);
            if (b == NULL) {
                return -ENOMEM;
            }
            c->rbuf = b;
            c->rcap = cap;
        }
    }
    if (!c->rready) {
        return -EAGAIN;     /* drained by a short read: wait for EPOLLIN */
    }
    do {
        n = read(c->fd, c->rbuf + c->rend, c->rcap - c->rend);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN) {
            c->rready = 0;
        }
        return -errno;
    }
    /* A short read drained the socket (nginx does the same): the next
     * read waits for the edge instead of costing a read() for EAGAIN. */
    if (n > 0 && (size_t) n < c->rcap - c->rend && !c->rdhup) {
        c->rready = 0;
    }
    c->rend += (size_t) n;
    c->bytes_in += (uint64_t) n;
    if (c->limit > 0 && c->min_rate > 0) {
        /* mod_reqtimeout's MinRate: each byte buys 1/min_rate s more. */
        c->limit += (double) n * 1000.0 / c->min_rate;
    }
    return n;
}


static void
push_with_prefix(lua_State *L, const char *s, size_t n)
{
    if (lua_isstring(L, 3)) {
        lua_pushvalue(L, 3);
        lua_pushlstring(L, s, n);
        lua_concat(L, 2);
    } else {
        lua_pushlstring(L, s, n);
    }
}


/* nil, reason, partial: the partial data is handed over, never lost. */
static int
receive_fail(lua_State *L, struct fdp_conn *c, const char *reason)
{
    lua_pushnil(L);
    lua_pushstring(L, reason);
    push_with_prefix(L, c->rbuf ? c->rbuf + c->rstart : "",
                     c->rend - c->rstart);
    c->rstart = c->rend = 0;
    return 3;
}


static int
pattern_of(lua_State *L, size_t *count)
{
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 2);

        luaL_argcheck(L, n >= 0, 2, "byte count must not be negative");
        *count = (size_t) n;
        return PAT_COUNT;
    } else {
        const char *p = luaL_optstring(L, 2, "l");

        if (*p == '*') {
            p++;
        }
        if (strcmp(p, "l") == 0) {
            return PAT_LINE;
        }
        if (strcmp(p, "a") == 0) {
            return PAT_ALL;
        }
        return luaL_argerror(L, 2, "invalid receive pattern (expected 'l', "
                             "'a' or a byte count)");
    }
}


static int
receive_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = checkconn(L);
    size_t count = 0;
    int pat = pattern_of(L, &count);
    ssize_t n;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        return receive_fail(L, c, "timeout");
    }
    for (;;) {
        size_t avail = c->rend - c->rstart;

        if (c->fd < 0) {
            return receive_fail(L, c, "closed");
        }
        if (pat == PAT_COUNT && avail >= count) {
            push_with_prefix(L, c->rbuf ? c->rbuf + c->rstart : "", count);
            c->rstart += count;
            return 1;
        }
        if (pat == PAT_LINE && avail > c->op_pos) {
            char *s = c->rbuf + c->rstart;
            char *nl = memchr(s + c->op_pos, '\n', avail - c->op_pos);

            if (nl != NULL) {
                size_t len = (size_t) (nl - s);

                c->rstart += len + 1;
                if (len > 0 && s[len - 1] == '\r') {
                    len--;
                }
                push_with_prefix(L, s, len);
                return 1;
            }
            c->op_pos = avail;
            if (avail > LINE_MAX_BYTES) {
                return receive_fail(L, c, "line too long");
            }
        }
        n = fill(c, pat == PAT_COUNT ? count : 0);
        if (n > 0) {
            continue;
        }
        if (n == 0) {
            if (pat == PAT_ALL) {
                push_with_prefix(L, c->rbuf ? c->rbuf + c->rstart : "",
                                 c->rend - c->rstart);
                c->rstart = c->rend = 0;
                return 1;
            }
            return receive_fail(L, c, "closed");
        }
        if (n != -EAGAIN) {
            return receive_fail(L, c, n == -ECONNRESET || n == -EPIPE
                                ? "closed" : strerror((int) -n));
        }
        if (!fdp_wait(L, c, EPOLLIN, 0, receive_k)) {
            return receive_fail(L, c, "timeout");
        }
    }
}


/*
 * conn:receive([pattern [, prefix]]) -> data | nil, "closed"|"timeout",
 * partial. Patterns as LuaSocket: "l" (default), "a", or a byte count.
 */
static int
conn_receive(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    size_t count;

    (void) pattern_of(L, &count);
    luaL_argcheck(L, lua_isnoneornil(L, 3) || lua_isstring(L, 3), 3,
                  "prefix must be a string");
    lua_settop(L, 3);
    op_begin(c);
    return receive_k(L, LUA_OK, 0);
}


static int
send_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = checkconn(L);
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    size_t end = (size_t) lua_tointeger(L, 4);
    ssize_t n;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        goto timeout;
    }
    while (c->op_pos < end) {
        if (c->fd < 0) {
            goto closed;
        }
        n = send(c->fd, s + c->op_pos, end - c->op_pos, MSG_NOSIGNAL);
        if (n > 0) {
            c->op_pos += (size_t) n;
            c->bytes_out += (uint64_t) n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!fdp_wait(L, c, EPOLLOUT, 0, send_k)) {
                goto timeout;
            }
            continue;
        }
        goto closed;
    }
    lua_pushinteger(L, (lua_Integer) end);
    return 1;

closed:
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    lua_pushinteger(L, (lua_Integer) c->op_pos);
    return 3;
timeout:
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    lua_pushinteger(L, (lua_Integer) c->op_pos);
    return 3;
}


/* conn:send(data [, i [, j]]) -> index of the last byte sent, or nil,
 * "closed"|"timeout", index of the last byte sent. */
static int
conn_send(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    lua_Integer j = luaL_optinteger(L, 4, -1);

    (void) s;
    if (i < 0) {
        i = (lua_Integer) len + i + 1;
    }
    if (i < 1) {
        i = 1;
    }
    if (j < 0) {
        j = (lua_Integer) len + j + 1;
    }
    if (j > (lua_Integer) len) {
        j = (lua_Integer) len;
    }
    lua_settop(L, 2);
    lua_pushinteger(L, i);
    lua_pushinteger(L, j < i ? i - 1 : j);
    op_begin(c);
    c->op_pos = (size_t) (i - 1);
    return send_k(L, LUA_OK, 0);
}


/* Append to a growable head buffer; 0 or -1 (out of memory). */
struct headbuf {
    char *p;
    size_t len, cap;
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
            return -1;
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


static int
hb_header(struct headbuf *b, const char *k, size_t kn, lua_State *L, int vi)
{
    size_t vn;
    const char *v = luaL_tolstring(L, vi, &vn);
    int r = hb_add(b, k, kn) | hb_add(b, ": ", 2) | hb_add(b, v, vn)
            | hb_add(b, "\r\n", 2);

    lua_pop(L, 1);
    return r;
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
    struct fdp_conn *c = checkconn(L);
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
    bad |= hb_add(&b, sl, sn);
    lua_pushnil(L);
    while (lua_next(L, 3) != 0) {
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
                    bad |= hb_header(&b, k, kn, L, lua_gettop(L));
                    lua_pop(L, 1);
                }
            } else {
                bad |= hb_header(&b, k, kn, L, lua_gettop(L));
            }
        }
        lua_pop(L, 1);
    }
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
    if (bad) {
        if (b.p != b.stack) {
            free(b.p);
        }
        return luaL_error(L, "out of memory");
    }
    n = -1;
    errno = EBADF;
    if (c->fd >= 0) {
        iov[0].iov_base = b.p;
        iov[0].iov_len = b.len;
        iov[1].iov_base = (void *) body;
        iov[1].iov_len = bn;
        do {
            n = writev(c->fd, iov, bn ? 2 : 1);
        } while (n < 0 && errno == EINTR);
    }
    if (n == (ssize_t) (b.len + bn)) {
        if (b.p != b.stack) {
            free(b.p);
        }
        c->bytes_out += (uint64_t) n;
        lua_pushinteger(L, (lua_Integer) bn);
        return 1;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        if (b.p != b.stack) {
            free(b.p);
        }
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushinteger(L, 0);
        return 3;
    }
    /* The kernel took part: send the rest through conn:send, which waits
     * (yields) as needed. */
    {
        size_t done = n > 0 ? (size_t) n : 0;
        luaL_Buffer rest;

        c->bytes_out += done;
        luaL_buffinit(L, &rest);
        if (done < b.len) {
            luaL_addlstring(&rest, b.p + done, b.len - done);
            done = 0;
        } else {
            done -= b.len;
        }
        luaL_addlstring(&rest, body + done, bn - done);
        if (b.p != b.stack) {
            free(b.p);
        }
        luaL_pushresult(&rest);
        lua_replace(L, 2);
        lua_settop(L, 2);
        return conn_send(L);
    }
}


static int
sendfile_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = checkconn(L);
    int in = fdp_fd_fileno(L, 2);
    off_t off = (off_t) lua_tointeger(L, 3);
    size_t count = (size_t) lua_tointeger(L, 4);
    ssize_t n;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        lua_pushinteger(L, (lua_Integer) c->op_pos);
        return 3;
    }
    while (c->op_pos < count) {
        off_t o = off + (off_t) c->op_pos;

        if (c->fd < 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "closed");
            lua_pushinteger(L, (lua_Integer) c->op_pos);
            return 3;
        }
        n = sendfile(c->fd, in, &o, count - c->op_pos);
        if (n > 0) {
            c->op_pos += (size_t) n;
            c->bytes_out += (uint64_t) n;
            continue;
        }
        if (n == 0) {
            break;          /* the file is shorter than it was */
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!fdp_wait(L, c, EPOLLOUT, 0, sendfile_k)) {
                lua_pushnil(L);
                lua_pushliteral(L, "timeout");
                lua_pushinteger(L, (lua_Integer) c->op_pos);
                return 3;
            }
            continue;
        }
        lua_pushnil(L);
        lua_pushstring(L, errno == EPIPE || errno == ECONNRESET ? "closed"
                       : strerror(errno));
        lua_pushinteger(L, (lua_Integer) c->op_pos);
        return 3;
    }
    if (lua_toboolean(L, 5)) {
        /* We opened it from a path: close it now, not at GC. */
        lua_getfield(L, 2, "close");
        lua_pushvalue(L, 2);
        lua_call(L, 1, 0);
    }
    lua_pushinteger(L, (lua_Integer) c->op_pos);
    return 1;
}


/*
 * conn:sendfile(path | file | fd [, offset [, count]]) -> bytes sent, or
 * nil, error, bytes sent. Zero-copy with sendfile(2). count defaults to
 * the rest of the file from offset.
 */
static int
conn_sendfile(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    lua_Integer off = luaL_optinteger(L, 3, 0);
    int opened = 0, fd;
    struct stat st;

    luaL_argcheck(L, off >= 0, 3, "offset must not be negative");
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *path = lua_tostring(L, 2);

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return fdp_pushfail(L, errno, path);
        }
        fdp_pushfd(L, fd);
        lua_replace(L, 2);
        opened = 1;
    }
    fd = fdp_fd_fileno(L, 2);
    if (fstat(fd, &st) < 0) {
        return fdp_pushfail(L, errno, "fstat");
    }
    if (lua_isnoneornil(L, 4)) {
        lua_Integer rest = (lua_Integer) st.st_size - off;

        lua_settop(L, 3);
        lua_pushinteger(L, rest > 0 ? rest : 0);
    } else {
        luaL_argcheck(L, luaL_checkinteger(L, 4) >= 0, 4,
                      "count must not be negative");
        lua_settop(L, 4);
    }
    lua_pushinteger(L, off);
    lua_replace(L, 3);
    lua_pushboolean(L, opened);
    op_begin(c);
    return sendfile_k(L, LUA_OK, 0);
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
    struct fdp_conn *c = checkconn(L);
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
    struct fdp_conn *c = checkconn(L);
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
        n = fill(c, 0);
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
        if (!fdp_wait(L, c, EPOLLIN, 0, readrequest_k)) {
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
    struct fdp_conn *c = checkconn(L);
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
    op_begin(c);
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
    struct fdp_conn *c = checkconn(L);
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
        n = fill(c, 0);
        if (n > 0) {
            continue;
        }
        if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
            return readchunked_fail(L, "closed");
        }
        if (n != -EAGAIN) {
            return readchunked_fail(L, strerror((int) -n));
        }
        if (!fdp_wait(L, c, EPOLLIN, 0, readchunked_k)) {
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
    struct fdp_conn *c = checkconn(L);
    lua_Integer max = luaL_checkinteger(L, 2);

    luaL_argcheck(L, max >= 0, 2, "the limit must not be negative");
    lua_settop(L, 3);
    lua_newtable(L);
    fdp_http_chunked_init(&c->chunked);
    op_begin(c);
    return readchunked_k(L, LUA_OK, 0);
}


/* conn:park([idle_seconds]) -> true, or nil, "unread data"|"closed":
 * the master keeps the idle connection (up to idle_seconds, default 15)
 * and dispatches it again when its next bytes arrive. The handler should
 * return right after; the conn is closed for it. */
static int
conn_park(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    lua_Number idle = luaL_optnumber(L, 2, 15);

    luaL_argcheck(L, idle > 0 && idle < 86400, 2, "idle seconds out of range");
    return fdp_conn_park(L, c, (uint32_t) (idle * 1000.0));
}


/* conn:buffered() -> bytes received and not yet read by the handler. */
static int
conn_buffered(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);

    lua_pushinteger(L, (lua_Integer) (c->rend - c->rstart));
    return 1;
}


/*
 * conn:setdeadline(seconds | nil [, min_rate]) -> true: no wait (read or
 * write) goes on past seconds from now, whatever conn:settimeout says;
 * with min_rate (bytes/s) each byte received pushes the deadline later by
 * 1/min_rate s, as Apache mod_reqtimeout's MinRate. nil removes it.
 */
static int
conn_setdeadline(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    lua_Number sec = luaL_optnumber(L, 2, -1);
    lua_Number rate = luaL_optnumber(L, 3, 0);

    luaL_argcheck(L, rate >= 0, 3, "min_rate must not be negative");
    c->limit = sec >= 0 ? (double) fdp_now_ms() + sec * 1000.0 : 0;
    c->min_rate = sec >= 0 ? rate : 0;
    lua_pushboolean(L, 1);
    return 1;
}


/* conn:settimeout(seconds | nil [, "b" | "t"]): nil or negative means
 * no limit; "b" (default) limits each wait, "t" each whole call. */
static int
conn_settimeout(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    static const char *const modes[] = { "b", "t", "r", NULL };

    c->timeout = luaL_optnumber(L, 2, -1);
    c->total = luaL_checkoption(L, 3, "b", modes) == 1;
    lua_pushboolean(L, 1);
    return 1;
}


static int
conn_close(lua_State *L)
{
    fdp_conn_close(checkconn(L));
    lua_pushboolean(L, 1);
    return 1;
}


static int
conn_gc(lua_State *L)
{
    struct fdp_conn *c = luaL_checkudata(L, 1, CONN_MT);

    if (c->waiter == NULL) {
        fdp_conn_close(c);
    }
    return 0;
}


static int
push_addr(lua_State *L, struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *) ss;

        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        lua_pushstring(L, ip);
        lua_pushinteger(L, ntohs(in->sin_port));
        lua_pushliteral(L, "inet");
        return 3;
    }
    if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;

        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        lua_pushstring(L, ip);
        lua_pushinteger(L, ntohs(in6->sin6_port));
        lua_pushliteral(L, "inet6");
        return 3;
    }
    lua_pushstring(L, ((struct sockaddr_un *) ss)->sun_path);
    lua_pushnil(L);
    lua_pushliteral(L, "unix");
    return 3;
}


static int
conn_getpeername(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    memset(&ss, 0, sizeof(ss));
    if (c->fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (c->peerlen > 0) {
        memcpy(&ss, c->peer, c->peerlen);
        return push_addr(L, &ss);
    }
    if (getpeername(c->fd, (struct sockaddr *) &ss, &len) < 0) {
        return fdp_pushfail(L, errno, "getpeername");
    }
    return push_addr(L, &ss);
}


static int
conn_getsockname(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    memset(&ss, 0, sizeof(ss));
    if (c->fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (getsockname(c->fd, (struct sockaddr *) &ss, &len) < 0) {
        return fdp_pushfail(L, errno, "getsockname");
    }
    return push_addr(L, &ss);
}


static int
conn_getfd(lua_State *L)
{
    lua_pushinteger(L, checkconn(L)->fd);
    return 1;
}


static int
conn_getstats(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);

    lua_pushinteger(L, (lua_Integer) c->bytes_in);
    lua_pushinteger(L, (lua_Integer) c->bytes_out);
    return 2;
}


static int
conn_shutdown(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);
    static const char *const opts[] = { "both", "send", "receive", NULL };
    static const int how[] = { SHUT_RDWR, SHUT_WR, SHUT_RD };
    int o = luaL_checkoption(L, 2, "both", opts);

    if (c->fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (shutdown(c->fd, how[o]) < 0) {
        return fdp_pushfail(L, errno, "shutdown");
    }
    lua_pushboolean(L, 1);
    return 1;
}


static int
conn_tostring(lua_State *L)
{
    struct fdp_conn *c = checkconn(L);

    if (c->fd < 0) {
        lua_pushliteral(L, "fdpool.conn (closed)");
    } else {
        lua_pushfstring(L, "fdpool.conn (%d)", c->fd);
    }
    return 1;
}


void
fdp_conn_open_meta(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "receive", conn_receive },
        { "readrequest", conn_readrequest },
        { "readchunked", conn_readchunked },
        { "buffered", conn_buffered },
        { "park", conn_park },
        { "send", conn_send },
        { "sendresponse", conn_sendresponse },
        { "sendfile", conn_sendfile },
        { "settimeout", conn_settimeout },
        { "setdeadline", conn_setdeadline },
        { "close", conn_close },
        { "getpeername", conn_getpeername },
        { "getsockname", conn_getsockname },
        { "getfd", conn_getfd },
        { "fileno", conn_getfd },
        { "getstats", conn_getstats },
        { "shutdown", conn_shutdown },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", conn_gc },
        { "__close", conn_gc },
        { "__tostring", conn_tostring },
        { "__index", NULL },
        { NULL, NULL }
    };

    if (luaL_newmetatable(L, CONN_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}
