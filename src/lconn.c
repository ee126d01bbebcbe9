/*
 * lconn.c - the conn object handed to handlers (userdata "fdpool.conn"),
 * shaped like LuaSocket's TCP client object: receive/send/close/
 * settimeout/getpeername..., plus sendfile and park. I/O is non-blocking,
 * through the conn's transport; when the kernel says EAGAIN the call
 * waits through task.c's fdp_wait(), which yields the task's coroutine
 * (or polls where yielding is impossible). The conn owns its fd and its
 * read buffer. The HTTP methods are in lhttp.c.
 */
#include "fdp.h"
#include "laux.h"
#include "lconn.h"
#include "pool.h"             /* fdp_format_sockaddr */

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

#define CONN_MT         FDP_CONN_MT
#define RBUF_MIN        8192
/* The buffer grows toward a read's want (a count asked of receive) at
 * once up to RBUF_STEP, past it by doubling as the bytes come: what it
 * holds follows what arrived, not a count a client may have chosen
 * (conn:receive(content_length) with 2^53). */
#define RBUF_STEP       (1u << 20)
#define LINE_MAX_BYTES  (1u << 20)

enum { PAT_LINE, PAT_ALL, PAT_COUNT };

/* fdp_fd_fileno and fdpool.type read a conn's descriptor as the first
 * member of every fd-owning userdata. */
typedef char conn_fd_first[offsetof(struct fdp_conn, fd) == 0 ? 1 : -1];


/* The mark both metatables (the conn's, a client socket's) carry: at
 * integer key 1 (CONN_TAG_KEY), the metatable's own address as a light
 * userdata. Every conn method call reads it with one raw integer lookup
 * (luaL_testudata would look each name up in the registry, and a light
 * userdata key, the mark's place before, costs a generic hash lookup:
 * ~300 instructions more per call). Lua code can read the mark (pairs
 * over getmetatable) and copy it into another userdata's metatable, but
 * a copy there names the wrong table, and Lua cannot make a light
 * userdata of its own. */
#define CONN_TAG_KEY 1


void
fdp_conn_tag_meta(lua_State *L)
{
    lua_pushlightuserdata(L, (void *) lua_topointer(L, -1));
    lua_rawseti(L, -2, CONN_TAG_KEY);
}


/* A conn, or a client socket (lsock.c), which starts with one: the conn
 * methods serve both. */
struct fdp_conn *
fdp_checkconn(lua_State *L)
{
    void *c = lua_touserdata(L, 1);

    if (c != NULL && lua_type(L, 1) == LUA_TUSERDATA
        && lua_getmetatable(L, 1)) {
        int ok = lua_rawgeti(L, -1, CONN_TAG_KEY) == LUA_TLIGHTUSERDATA
                 && lua_touserdata(L, -1) == lua_topointer(L, -2)
                 && lua_rawlen(L, 1) >= sizeof(struct fdp_conn);

        lua_pop(L, 2);
        if (ok) {
            return c;
        }
    }
    return luaL_checkudata(L, 1, CONN_MT);      /* raises */
}



/* ---- the plain-socket transport ------------------------------------ */

/* A system call's result as the transport returns it: a count, or the
 * negative errno. */
static ssize_t
sysret(ssize_t n)
{
    return n < 0 ? -errno : n;
}


static ssize_t
sock_read(struct fdp_conn *c, void *buf, size_t n)
{
    return sysret(read(c->fd, buf, n));
}


static ssize_t
sock_write(struct fdp_conn *c, const void *buf, size_t n)
{
    return sysret(send(c->fd, buf, n, MSG_NOSIGNAL));
}


static ssize_t
sock_writev(struct fdp_conn *c, const struct iovec *iov, int n)
{
    return sysret(writev(c->fd, iov, n));
}


static ssize_t
sock_sendfile(struct fdp_conn *c, int in, off_t *off, size_t n)
{
    return sysret(sendfile(c->fd, in, off, n));
}


static const struct fdp_transport sock_transport = {
    sock_read, sock_write, sock_writev, sock_sendfile, NULL, NULL
};


/* ---- the conn object ------------------------------------------------- */

void
fdp_conn_init(struct fdp_conn *c, int fd, struct fdp_sched *s, double timeout)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->tr = &sock_transport;
    c->wt.s = s;
    c->wt.rready = 1;
    c->timeout = timeout;
    c->wt.io.fd = -1;
}


/*
 * A task's conn (the only kind): the task keeps it reachable (on its
 * coroutine's stack) and closes it when the handler is over (the
 * worker's task_done), so the metatable has no __gc: a finalizer per
 * conn would cost a call and an extra collector cycle per connection
 * (in strict prefork, per request).
 */
struct fdp_conn *
fdp_conn_new(lua_State *L, int fd, struct fdp_sched *s, double timeout)
{
    struct fdp_conn *c = lua_newuserdatauv(L, sizeof(*c), 0);

    fdp_conn_init(c, fd, s, timeout);
    luaL_setmetatable(L, CONN_MT);
    return c;
}


/* The client's address from a PROXY header: getpeername() gives it. */
void
fdp_conn_set_peer(struct fdp_conn *c, const void *peer, uint32_t len)
{
    memcpy(c->peer, peer, len);
    c->peerlen = len;
}


static void rbuf_release(struct fdp_conn *c);


void
fdp_conn_close(struct fdp_conn *c)
{
    if (c->fd >= 0 && c->tr_ctx != NULL && c->tr->shutdown != NULL) {
        c->tr->shutdown(c);
    }
    if (c->fd >= 0) {
        if (c->wt.s) {
            fdp_waitable_forget(&c->wt);
        }
        if (c->shared) {
            (void) shutdown(c->fd, SHUT_RDWR);
            c->shared = 0;
        }
        fdp_close(&c->fd);
    }
    if (c->tr->release != NULL && c->tr_ctx != NULL) {
        c->tr->release(c->tr_ctx);
    }
    c->tr_ctx = NULL;
    c->tr = &sock_transport;
    rbuf_release(c);
    free(c->req);
    c->req = NULL;
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


/*
 * Wait until c's fd is ready for `events`, within the per-wait timeout
 * (or, in "t" mode, the call's deadline) and any conn:setdeadline or
 * whole-head limit: fdp_wait's contract.
 */
static uint64_t conn_wait_dl(struct fdp_conn *c, uint32_t *events);


int
fdp_conn_wait(lua_State *L, struct fdp_conn *c, uint32_t events,
              lua_KContext ctx, lua_KFunction k)
{
    uint64_t dl = conn_wait_dl(c, &events);

    return fdp_wait(L, &c->wt, c->fd, events, dl, ctx, k);
}


/* The same wait to read, registered without the yield when the task may
 * go dormant by returning (fdp_wait_dormant): 1 then. */
int
fdp_conn_wait_dormant(lua_State *L, struct fdp_conn *c, int arg)
{
    uint32_t events = EPOLLIN;

    if (c->tr_want != 0) {
        return 0;
    }
    return fdp_wait_dormant(L, &c->wt, c->fd, EPOLLIN,
                            conn_wait_dl(c, &events), arg);
}


/* A wait's deadline (and its events: TLS may want both). */
static uint64_t
conn_wait_dl(struct fdp_conn *c, uint32_t *ev)
{
    uint32_t events = *ev;
    uint64_t dl, *d = events == EPOLLOUT ? &c->wdeadline : &c->deadline;

    if (!c->total) {
        *d = c->timeout < 0 ? 0
             : fdp_now_ms() + (uint64_t) (c->timeout * 1000.0) + 1;
    }
    /* conn:setdeadline (or readrequest's whole-head limit) caps every
     * wait, whatever the per-wait timeout. */
    dl = *d;
    if (c->tr_want != 0 && c->tr_want != events) {
        /* TLS: a read that must write first (or the reverse) waits for
         * either readiness and retries. */
        events = EPOLLIN | EPOLLOUT;
    }
    c->tr_want = 0;
    if (c->limit > 0 && (dl == 0 || (uint64_t) c->limit < dl)) {
        dl = (uint64_t) c->limit;
    }
    *ev = events;
    return dl;
}


/* Start a call. In "t" mode the timeout bounds the whole call; in "b"
 * mode (the default, as LuaSocket) each wait gets the full timeout. */
void
fdp_conn_op_begin(struct fdp_conn *c)
{
    c->deadline = (!c->total || c->timeout < 0) ? 0
                  : fdp_now_ms() + (uint64_t) (c->timeout * 1000.0) + 1;
    c->op_pos = 0;
}


/*
 * Nothing buffered and about to wait (a keep-alive connection between
 * requests): give the read buffer back, as nginx's keep-alive does, so an
 * idle connection holds none. A buffer of the usual size goes to the
 * scheduler's few spares, which the next fill of any conn takes first.
 */
static void
rbuf_release(struct fdp_conn *c)
{
    struct fdp_sched *s = c->wt.s;

    if (c->rbuf != NULL && s != NULL && c->rcap == RBUF_MIN
        && s->nrbufs < (int) FDP_NELEM(s->rbufs)) {
        s->rbufs[s->nrbufs++] = c->rbuf;
    } else {
        free(c->rbuf);
    }
    c->rbuf = NULL;
    c->rstart = c->rend = c->rcap = 0;
}


void
fdp_conn_idle(struct fdp_conn *c)
{
    if (c->rbuf != NULL && c->rstart == c->rend) {
        rbuf_release(c);
        c->op_pos = 0;
    }
}


/* A write starts: its own deadline and progress, apart from a read's. */
static void
wop_begin(struct fdp_conn *c)
{
    c->wdeadline = (!c->total || c->timeout < 0) ? 0
                   : fdp_now_ms() + (uint64_t) (c->timeout * 1000.0) + 1;
    c->wpos = 0;
}


/* One reader and one writer may wait on a conn at once (a handler's
 * coroutines, or another handler of the worker writing to it); a second
 * of either kind gets nil, "busy", as OpenResty's cosockets answer. */
int
fdp_conn_busy(lua_State *L, struct fdp_conn *c, int write)
{
    if ((write ? c->wt.writer : c->wt.waiter) == NULL) {
        return 0;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "busy");
    return 2;
}


/* Read once into the buffer: >0 bytes, 0 EOF, -errno. */
ssize_t
fdp_conn_fill(struct fdp_conn *c, size_t want)
{
    size_t held = c->rend - c->rstart;
    ssize_t n;

    /* Past RBUF_STEP, at most twice the bytes held: the capacity, which
     * a read that timed out leaves as it was, is no measure of them
     * (with it, each receive(2^40) that timed out doubled the buffer). */
    if (want > RBUF_STEP && want / 2 > held) {
        want = held * 2 > RBUF_STEP ? held * 2 : RBUF_STEP;
    }
    if (c->rstart == c->rend) {
        c->rstart = c->rend = 0;
    }
    if (c->rbuf == NULL && want <= RBUF_MIN && c->wt.s != NULL
        && c->wt.s->nrbufs > 0) {
        c->rbuf = c->wt.s->rbufs[--c->wt.s->nrbufs];
        c->rcap = RBUF_MIN;
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
    if (!c->wt.rready) {
        return -EAGAIN;     /* drained by a short read: wait for EPOLLIN */
    }
    do {
        n = c->tr->read(c, c->rbuf + c->rend, c->rcap - c->rend);
    } while (n == -EINTR);
    if (n < 0) {
        if (n == -EAGAIN || n == -EWOULDBLOCK) {
            c->wt.rready = 0;
        }
        return n;
    }
    /* A short read drained the socket (nginx does the same): the next
     * read waits for the edge instead of costing a read() for EAGAIN. */
    if (n > 0 && (size_t) n < c->rcap - c->rend && !c->wt.rdhup) {
        c->wt.rready = 0;
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
    struct fdp_conn *c = FDP_CONN_AT1(L);
    int pat = (int) ctx;        /* (conn_receive's pattern_of) */
    size_t count = pat == PAT_COUNT ? (size_t) lua_tointeger(L, 2) : 0;
    ssize_t n;

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
        n = fdp_conn_fill(c, pat == PAT_COUNT ? count : 0);
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
        if (!fdp_conn_wait(L, c, EPOLLIN, pat, receive_k)) {
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
    struct fdp_conn *c = fdp_checkconn(L);
    size_t count;
    int pat = pattern_of(L, &count);

    luaL_argcheck(L, lua_isnoneornil(L, 3) || lua_isstring(L, 3), 3,
                  "prefix must be a string");
    if (fdp_conn_busy(L, c, 0)) {
        return 2;
    }
    lua_settop(L, 3);
    fdp_conn_op_begin(c);
    return receive_k(L, LUA_OK, pat);
}


/* conn:receiveany(max): what is buffered, or the next read's bytes, at
 * most max; nil, err, partial as receive. While reads come back full
 * (more is waiting) it reads on up to max without waiting, so a fast
 * stream comes in pieces of max and a slow one as it arrives. */
static int
receiveany_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    size_t max = (size_t) lua_tointeger(L, 2);
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
        if (avail >= max || (avail > 0 && !c->wt.rready)) {
            break;
        }
        n = fdp_conn_fill(c, avail > 0 ? max : 0);
        if (n > 0) {
            continue;
        }
        if (avail > 0) {
            break;              /* the end or an error: the next call's */
        }
        if (n == 0) {
            return receive_fail(L, c, "closed");
        }
        if (n != -EAGAIN) {
            return receive_fail(L, c, n == -ECONNRESET || n == -EPIPE
                                ? "closed" : strerror((int) -n));
        }
        if (!fdp_conn_wait(L, c, EPOLLIN, 0, receiveany_k)) {
            return receive_fail(L, c, "timeout");
        }
    }
    {
        size_t k = c->rend - c->rstart < max ? c->rend - c->rstart : max;

        lua_pushlstring(L, c->rbuf + c->rstart, k);
        c->rstart += k;
        return 1;
    }
}


/*
 * conn:receiveany(max) -> data (1 to max bytes, as soon as any came) |
 * nil, "closed"|"timeout", "" -- OpenResty's tcpsock:receiveany: a body
 * relayed piece by piece as it arrives.
 */
static int
conn_receiveany(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    lua_Integer max = luaL_checkinteger(L, 2);

    luaL_argcheck(L, max > 0, 2, "max must be positive");
    if (fdp_conn_busy(L, c, 0)) {
        return 2;
    }
    lua_settop(L, 2);
    fdp_conn_op_begin(c);
    return receiveany_k(L, LUA_OK, 0);
}


static int
send_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    size_t end = (size_t) lua_tointeger(L, 4);
    ssize_t n;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        goto timeout;
    }
    while (c->wpos < end) {
        if (c->fd < 0) {
            goto closed;
        }
        n = c->tr->write(c, s + c->wpos, end - c->wpos);
        if (n > 0) {
            c->wpos += (size_t) n;
            c->bytes_out += (uint64_t) n;
            continue;
        }
        if (n == -EINTR) {
            continue;
        }
        if (n == -EAGAIN || n == -EWOULDBLOCK) {
            if (!fdp_conn_wait(L, c, EPOLLOUT, 0, send_k)) {
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
    lua_pushinteger(L, (lua_Integer) c->wpos);
    return 3;
timeout:
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    lua_pushinteger(L, (lua_Integer) c->wpos);
    return 3;
}


/* conn:send(data [, i [, j]]) -> index of the last byte sent, or nil,
 * "closed"|"timeout", index of the last byte sent. */
int
fdp_conn_send(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    lua_Integer j = luaL_optinteger(L, 4, -1);

    (void) s;
    if (fdp_conn_busy(L, c, 1)) {
        return 2;
    }
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
    wop_begin(c);
    c->wpos = (size_t) (i - 1);
    return send_k(L, LUA_OK, 0);
}


static int
sendfile_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = FDP_CONN_AT1(L);
    int in = fdp_fd_fileno(L, 2);
    off_t off = (off_t) lua_tointeger(L, 3);
    size_t count = (size_t) lua_tointeger(L, 4);
    ssize_t n;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        lua_pushinteger(L, (lua_Integer) c->wpos);
        return 3;
    }
    while (c->wpos < count) {
        off_t o = off + (off_t) c->wpos;

        if (c->fd < 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "closed");
            lua_pushinteger(L, (lua_Integer) c->wpos);
            return 3;
        }
        n = c->tr->sendfile(c, in, &o, count - c->wpos);
        if (n > 0) {
            c->wpos += (size_t) n;
            c->bytes_out += (uint64_t) n;
            continue;
        }
        if (n == 0) {
            break;          /* the file is shorter than it was */
        }
        if (n == -EINTR) {
            continue;
        }
        if (n == -EAGAIN || n == -EWOULDBLOCK) {
            if (!fdp_conn_wait(L, c, EPOLLOUT, 0, sendfile_k)) {
                lua_pushnil(L);
                lua_pushliteral(L, "timeout");
                lua_pushinteger(L, (lua_Integer) c->wpos);
                return 3;
            }
            continue;
        }
        lua_pushnil(L);
        lua_pushstring(L, n == -EPIPE || n == -ECONNRESET ? "closed"
                       : strerror((int) -n));
        lua_pushinteger(L, (lua_Integer) c->wpos);
        return 3;
    }
    if (lua_toboolean(L, 5)) {
        /* We opened it from a path: close it now, not at GC. */
        lua_getfield(L, 2, "close");
        lua_pushvalue(L, 2);
        lua_call(L, 1, 0);
    }
    lua_pushinteger(L, (lua_Integer) c->wpos);
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
    struct fdp_conn *c = fdp_checkconn(L);
    lua_Integer off = luaL_optinteger(L, 3, 0);
    int opened = 0, fd;
    struct stat st;

    luaL_argcheck(L, off >= 0, 3, "offset must not be negative");
    if (fdp_conn_busy(L, c, 1)) {
        return 2;
    }
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
    wop_begin(c);
    return sendfile_k(L, LUA_OK, 0);
}


/*
 * Hand the task's own connection back to the master (its owner's park,
 * see task.h). Only at a request boundary: nothing may be left unread
 * in our buffer. Pushes true, or nil and why.
 */
int
fdp_conn_park(lua_State *L, struct fdp_conn *c, uint32_t idle_ms)
{
    struct fdp_task *t = fdp_current_task(L);
    int r;

    if (t == NULL || t->data != c || t->s->ops->park == NULL) {
        return luaL_error(L, "conn:park() is only for the handler's own "
                          "connection, from its coroutine");
    }
    if (c->fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (c->rend > c->rstart) {
        lua_pushnil(L);
        lua_pushliteral(L, "unread data");
        return 2;
    }
    if (c->tr_ctx != NULL) {
        /* Its TLS state lives in this process (no kTLS): it stays. */
        lua_pushnil(L);
        lua_pushliteral(L, "tls");
        return 2;
    }
    fdp_waitable_unwatch(&c->wt);
    r = t->s->ops->park(t, c->fd, c->bytes_in, c->bytes_out, idle_ms);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "park: %s", strerror(-r));
        return 2;
    }
    c->fd = -1;         /* the channel owns (and closes) it now */
    lua_pushboolean(L, 1);
    return 1;
}


/* conn:park([idle_seconds]) -> true, or nil, "unread data"|"closed"|
 * "tls" (a TLS connection stays with its worker):
 * the master keeps the idle connection (up to idle_seconds, default 15)
 * and dispatches it again when its next bytes arrive. The handler should
 * return right after; the conn is closed for it. */
static int
conn_park(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    lua_Number idle = luaL_optnumber(L, 2, 15);

    luaL_argcheck(L, idle > 0 && idle < 86400, 2, "idle seconds out of range");
    return fdp_conn_park(L, c, (uint32_t) (idle * 1000.0));
}


/* conn:buffered() -> bytes received and not yet read by the handler. */
static int
conn_buffered(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);

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
    struct fdp_conn *c = fdp_checkconn(L);
    lua_Number sec = luaL_optnumber(L, 2, -1);
    lua_Number rate = luaL_optnumber(L, 3, 0);

    luaL_argcheck(L, sec == sec, 2, "seconds must not be NaN");
    luaL_argcheck(L, rate >= 0, 3, "min_rate must not be negative");
    sec = fdp_clamp_sec(sec);
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
    struct fdp_conn *c = fdp_checkconn(L);
    static const char *const modes[] = { "b", "t", "r", NULL };
    lua_Number sec = luaL_optnumber(L, 2, -1);

    luaL_argcheck(L, sec == sec, 2, "seconds must not be NaN");
    c->timeout = fdp_clamp_sec(sec);
    c->total = luaL_checkoption(L, 3, "b", modes) == 1;
    lua_pushboolean(L, 1);
    return 1;
}


static int
conn_close(lua_State *L)
{
    fdp_conn_close(fdp_checkconn(L));
    lua_pushboolean(L, 1);
    return 1;
}


/* __close: `local c <close> = conn` closes it (when not waited on). */
static int
conn_tbc(lua_State *L)
{
    struct fdp_conn *c = luaL_checkudata(L, 1, CONN_MT);

    if (c->wt.waiter == NULL && c->wt.writer == NULL) {
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
    struct fdp_conn *c = fdp_checkconn(L);
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
    struct fdp_conn *c = fdp_checkconn(L);
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
    lua_pushinteger(L, fdp_checkconn(L)->fd);
    return 1;
}


static int
conn_getstats(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);

    lua_pushinteger(L, (lua_Integer) c->bytes_in);
    lua_pushinteger(L, (lua_Integer) c->bytes_out);
    return 2;
}


static int
conn_shutdown(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    static const char *const opts[] = { "both", "send", "receive", NULL };
    static const int how[] = { SHUT_RDWR, SHUT_WR, SHUT_RD };
    int o = luaL_checkoption(L, 2, "both", opts);

    if (c->fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (how[o] != SHUT_RD && c->tr_ctx != NULL && c->tr->shutdown != NULL) {
        c->tr->shutdown(c);     /* TLS: close_notify before the FIN */
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
    struct fdp_conn *c = fdp_checkconn(L);

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
        { "receiveany", conn_receiveany },
        { "buffered", conn_buffered },
        { "park", conn_park },
        { "send", fdp_conn_send },
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
        { "__close", conn_tbc },
        { "__tostring", conn_tostring },
        { NULL, NULL }
    };

    fdp_createmeta(L, CONN_MT, meta, methods);
    luaL_getmetatable(L, CONN_MT);
    fdp_conn_tag_meta(L);
    lua_pop(L, 1);
}
