/*
 * ltls.c - TLS for conns: a struct fdp_transport over OpenSSL (read,
 * write, writev, sendfile as a copy loop, close), the server handshake a
 * worker runs before the handler (non-blocking: it waits, and so yields,
 * like any conn I/O, within a deadline), and conn:tls(). The SSL_CTX
 * comes from the master (tls.c, loaded before fork); each conn owns its
 * SSL object, freed when the conn closes.
 */
#include "fdp.h"
#include "laux.h"
#include "lconn.h"
#include "ltls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <lauxlib.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define TLS_CHUNK 16384         /* one record's plaintext */


/*
 * Empty the thread's OpenSSL error queue (before an SSL call, so that
 * SSL_get_error reads this call's outcome; after a failure). A queue
 * that is empty already -- every call of a healthy connection -- costs
 * one ERR_peek_error, where ERR_clear_error walks all its slots
 * (~840 instructions, ~6 calls per connection).
 */
static void
tls_clear(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}


/*
 * What an SSL call that did not succeed means, as the transport returns
 * it: -EAGAIN (tr_want says for which readiness), 0 (the peer closed:
 * close_notify, or EOF as SSL_OP_IGNORE_UNEXPECTED_EOF has it), or a
 * negative errno (-EPROTO: a TLS error; the error queue is cleared).
 */
static ssize_t
tls_result(struct fdp_conn *c, int r)
{
    int e = SSL_get_error(c->tr_ctx, r);

    switch (e) {
    case SSL_ERROR_WANT_READ:
        c->tr_want = EPOLLIN;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->tr_want = EPOLLOUT;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        tls_clear();
        return errno != 0 && errno != EAGAIN ? -errno : -ECONNRESET;
    default:
        tls_clear();
        return -EPROTO;
    }
}


/* Reads until n bytes or the socket is drained (WANT_READ), so that a
 * short count means drained, as for a socket: OpenSSL may hold more
 * than one record, which no EPOLLIN edge would announce. */
static ssize_t
tls_read(struct fdp_conn *c, void *buf, size_t n)
{
    size_t got = 0, k;
    ssize_t r;

    c->tr_want = 0;
    while (got < n) {
        tls_clear();
        errno = 0;
        if (SSL_read_ex(c->tr_ctx, (char *) buf + got, n - got, &k) == 1) {
            got += k;
            continue;
        }
        r = tls_result(c, 0);
        return got > 0 ? (ssize_t) got : r;
    }
    return (ssize_t) got;
}


static ssize_t
tls_write(struct fdp_conn *c, const void *buf, size_t n)
{
    size_t k;

    c->tr_want = 0;
    if (n == 0) {
        return 0;
    }
    tls_clear();
    errno = 0;
    if (SSL_write_ex(c->tr_ctx, buf, n, &k) == 1) {
        return (ssize_t) k;
    }
    return tls_result(c, 0);
}


/*
 * One SSL_write per call: a small first piece (an HTTP head) is joined
 * with what follows into one record rather than two; a big one goes as
 * it is. A retry after -EAGAIN starts at the same byte with at least as
 * many bytes, which is what OpenSSL asks of a repeated SSL_write.
 */
static ssize_t
tls_writev(struct fdp_conn *c, const struct iovec *iov, int n)
{
    char buf[TLS_CHUNK];
    size_t len = 0;
    int i;

    while (n > 0 && iov[0].iov_len == 0) {
        iov++;
        n--;
    }
    if (n == 0) {
        return 0;
    }
    if (n == 1 || iov[0].iov_len >= sizeof(buf)) {
        return tls_write(c, iov[0].iov_base, iov[0].iov_len);
    }
    for (i = 0; i < n && len < sizeof(buf); i++) {
        size_t k = iov[i].iov_len;

        if (k > sizeof(buf) - len) {
            k = sizeof(buf) - len;
        }
        memcpy(buf + len, iov[i].iov_base, k);
        len += k;
    }
    return tls_write(c, buf, len);
}


/* No sendfile through TLS without kTLS: read a record's worth and write
 * it. A retry after -EAGAIN reads the same bytes again. */
static ssize_t
tls_sendfile(struct fdp_conn *c, int in, off_t *off, size_t n)
{
    char buf[TLS_CHUNK];
    ssize_t r, w;

    if (n > sizeof(buf)) {
        n = sizeof(buf);
    }
    do {
        r = pread(in, buf, n, *off);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) {
        return r < 0 ? -errno : 0;
    }
    w = tls_write(c, buf, (size_t) r);
    if (w > 0) {
        *off += w;
    }
    return w;
}


/* Before the fd closes: a close_notify if the session was up (one
 * non-blocking try). */
static void
tls_shutdown(struct fdp_conn *c)
{
    /* Once only (conn:shutdown, then the close). */
    if (SSL_is_init_finished(c->tr_ctx)
        && !(SSL_get_shutdown(c->tr_ctx) & SSL_SENT_SHUTDOWN)) {
        tls_clear();
        (void) SSL_shutdown(c->tr_ctx);
        tls_clear();
    }
}


/* The SSL object goes (its fd may be closed already: no I/O). */
static void
tls_release(void *ctx)
{
    SSL_free(ctx);
    tls_clear();
}


static const struct fdp_transport tls_transport = {
    tls_read, tls_write, tls_writev, tls_sendfile, tls_shutdown,
    tls_release
};


int
fdp_tls_accept(struct fdp_conn *c, struct ssl_ctx_st *ctx)
{
    SSL *s = SSL_new(ctx);

    if (s == NULL || SSL_set_fd(s, c->fd) != 1) {
        SSL_free(s);
        tls_clear();
        return -ENOMEM;
    }
    SSL_set_accept_state(s);
    c->tr_ctx = s;
    c->tr = &tls_transport;
    return 0;
}


/* The handshake is over (or failed): the handler runs, or the task ends
 * quietly. */
static int
serve_done(lua_State *L, int status, lua_KContext ctx)
{
    (void) L;
    (void) status;
    (void) ctx;
    return 0;
}


static int
handshake_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = luaL_checkudata(L, 2, FDP_CONN_MT);
    char why[128] = "timed out", peer[80];
    int r, e;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        goto fail;
    }
    for (;;) {
        if (c->fd < 0 || c->tr_ctx == NULL) {
            snprintf(why, sizeof(why), "closed");
            goto fail;
        }
        tls_clear();
        errno = 0;
        r = SSL_do_handshake(c->tr_ctx);
        if (r == 1) {
            break;
        }
        e = SSL_get_error(c->tr_ctx, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            const char *rs = ERR_reason_error_string(ERR_peek_last_error());

            snprintf(why, sizeof(why), "%s", e == SSL_ERROR_SSL && rs ? rs
                     : "the client closed the connection");
            goto fail;
        }
        c->tr_want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        if (!fdp_conn_wait(L, c, c->tr_want, 0, handshake_k)) {
            goto fail;
        }
    }
    c->limit = 0;
    lua_settop(L, 2);
    lua_callk(L, 1, 0, 0, serve_done);
    return 0;

fail:
    /* Not the handler's fault, nor the worker's: a debug line only. */
    tls_clear();
    fdp_conn_peer(c, peer, sizeof(peer));
    fdp_log(FDP_LOG_DEBUG, 0, "TLS handshake with %s failed: %s", peer, why);
    return 0;
}


int
fdp_tls_serve(lua_State *L)
{
    struct fdp_conn *c = luaL_checkudata(L, 2, FDP_CONN_MT);
    lua_Integer ms = luaL_checkinteger(L, 3);

    /* The handshake's deadline caps every wait in it (setdeadline's
     * limit; the handler starts without one). */
    c->limit = (double) fdp_now_ms() + (double) ms;
    c->min_rate = 0;
    return handshake_k(L, LUA_OK, 0);
}


/* ---- outbound: sock:sslhandshake() -------------------------------------- */

#define SESS_MT     "fdpool.ssl_session"
#define CLIENT_MT   "fdpool.tls.client"
#define CLIENTS_KEY "fdpool.tls.clients"

/* A client session, shared by its Lua object and the SSL that made it
 * (TLS 1.3 tickets come after the handshake: the newest one replaces
 * s). Freed by whichever lets go last. */
struct tls_sess {
    int refs;
    SSL_SESSION *s;
};

struct client_ctx {
    SSL_CTX *ctx;
};

static int sess_index = -1;     /* SSL ex_data: its struct tls_sess */


static void
sess_unref(struct tls_sess *ts)
{
    if (ts != NULL && --ts->refs == 0) {
        SSL_SESSION_free(ts->s);
        free(ts);
    }
}


static void
sess_exfree(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
            void *argp)
{
    (void) parent;
    (void) ad;
    (void) idx;
    (void) argl;
    (void) argp;
    sess_unref(ptr);
}


/* A new session (or ticket) for a client SSL: its session object takes
 * it. Returns 0: OpenSSL keeps no other reference. */
static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_sess *ts = SSL_get_ex_data(ssl, sess_index);

    if (ts == NULL) {
        return 0;
    }
    SSL_SESSION_free(ts->s);
    ts->s = sess;
    return 1;                   /* we hold the reference OpenSSL gave */
}


static int
sess_gc(lua_State *L)
{
    struct tls_sess **u = luaL_checkudata(L, 1, SESS_MT);

    sess_unref(*u);
    *u = NULL;
    return 0;
}


static int
client_gc(lua_State *L)
{
    struct client_ctx *cc = luaL_checkudata(L, 1, CLIENT_MT);

    SSL_CTX_free(cc->ctx);
    cc->ctx = NULL;
    return 0;
}


/* The worker's client context for cafile (NULL: the system store, as
 * OpenSSL's default paths: /etc/ssl/certs), made once and kept in the
 * registry. NULL with an error message pushed when cafile does not
 * load. */
static SSL_CTX *
client_ctx(lua_State *L, const char *cafile)
{
    struct client_ctx *cc;
    SSL_CTX *ctx;

    if (lua_getfield(L, LUA_REGISTRYINDEX, CLIENTS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, CLIENTS_KEY);
    }
    lua_getfield(L, -1, cafile ? cafile : "");
    cc = luaL_testudata(L, -1, CLIENT_MT);
    if (cc != NULL && cc->ctx != NULL) {
        lua_pop(L, 2);
        return cc->ctx;
    }
    lua_pop(L, 1);
    tls_clear();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        lua_pop(L, 1);
        lua_pushliteral(L, "SSL_CTX_new() failed");
        return NULL;
    }
    (void) SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION
                        | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                     | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    (void) SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT
                                          | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    if ((cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL)
                : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        const char *rs = ERR_reason_error_string(ERR_peek_error());

        tls_clear();
        SSL_CTX_free(ctx);
        lua_pop(L, 1);
        lua_pushfstring(L, "cannot load CA file '%s': %s", cafile ? cafile
                        : "(system)", rs ? rs : "unknown error");
        return NULL;
    }
    cc = lua_newuserdatauv(L, sizeof(*cc), 0);
    cc->ctx = ctx;
    luaL_setmetatable(L, CLIENT_MT);
    lua_setfield(L, -2, cafile ? cafile : "");
    lua_pop(L, 1);
    return ctx;
}


/* nil, msg: a failed client handshake also closes the connection (its
 * TLS state is unusable), as a failed connect would. */
static int
client_fail(lua_State *L, struct fdp_conn *c, const char *msg)
{
    fdp_conn_close(c);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}


/* The result: a session object (the SSL's, updated as tickets come), or
 * true when reused_session was false. */
static int
client_done(lua_State *L, struct fdp_conn *c)
{
    struct tls_sess *ts, **u;

    if (lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    ts = SSL_get_ex_data(c->tr_ctx, sess_index);
    if (ts == NULL) {
        ts = calloc(1, sizeof(*ts));
        if (ts == NULL) {
            return luaL_error(L, "not enough memory");
        }
        ts->refs = 1;
        ts->s = SSL_get1_session(c->tr_ctx);
        (void) SSL_set_ex_data(c->tr_ctx, sess_index, ts);
    }
    u = lua_newuserdatauv(L, sizeof(*u), 0);
    *u = ts;
    ts->refs++;
    luaL_setmetatable(L, SESS_MT);
    return 1;
}


static int
client_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_conn *c = luaL_checkudata(L, 1, FDP_TCP_MT);
    char msg[200];
    int r, e;
    long v;

    (void) ctx;
    if (status == LUA_YIELD && fdp_wait_timed_out(L)) {
        return client_fail(L, c, "timeout");
    }
    for (;;) {
        if (c->fd < 0 || c->tr_ctx == NULL) {
            lua_pushnil(L);
            lua_pushliteral(L, "closed");
            return 2;
        }
        tls_clear();
        errno = 0;
        r = SSL_do_handshake(c->tr_ctx);
        if (r == 1) {
            return client_done(L, c);
        }
        e = SSL_get_error(c->tr_ctx, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            c->tr_want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
            if (!fdp_conn_wait(L, c, c->tr_want, 0, client_k)) {
                return client_fail(L, c, "timeout");
            }
            continue;
        }
        v = SSL_get_verify_result(c->tr_ctx);
        if (v != X509_V_OK) {
            snprintf(msg, sizeof(msg), "certificate verify failed: %s",
                     X509_verify_cert_error_string(v));
        } else if (e == SSL_ERROR_SSL) {
            const char *rs = ERR_reason_error_string(ERR_peek_last_error());

            snprintf(msg, sizeof(msg), "handshake failed: %s",
                     rs ? rs : "TLS error");
        } else {
            snprintf(msg, sizeof(msg), "closed");
        }
        tls_clear();
        return client_fail(L, c, msg);
    }
}


/*
 * sock:sslhandshake([reused_session [, server_name [, verify]]]) ->
 * session (true when reused_session is false), or nil, err. As
 * OpenResty's: reused_session is a session an earlier handshake
 * returned (resumed when the server agrees), server_name goes as SNI
 * and is the name the certificate must match; verify is true (the
 * default: the system store), false (no check), or the path of a PEM
 * CA file to verify against instead. Waits (yields) like any socket
 * I/O, within the socket's timeout. A connection reused from the
 * keep-alive pool that is already TLS returns at once. err: "timeout",
 * "closed", "certificate verify failed: ...", "handshake failed: ...";
 * a failed handshake closes the connection.
 */
static int
sock_sslhandshake(lua_State *L)
{
    struct fdp_conn *c = luaL_checkudata(L, 1, FDP_TCP_MT);
    const char *name = luaL_optstring(L, 3, NULL);
    const char *cafile = NULL;
    int verify = 1;
    SSL_CTX *ctx;
    SSL *s;

    luaL_argcheck(L, lua_isnoneornil(L, 2) || lua_type(L, 2) == LUA_TBOOLEAN
                  || luaL_testudata(L, 2, SESS_MT), 2,
                  "session, false or nil expected");
    if (lua_type(L, 4) == LUA_TSTRING) {
        cafile = lua_tostring(L, 4);
    } else if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TBOOLEAN);
        verify = lua_toboolean(L, 4);
    }
    lua_settop(L, 4);
    if (c->fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (c->wt.waiter != NULL || c->wt.writer != NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    }
    if (c->tr_ctx != NULL) {
        return client_done(L, c);       /* pooled, already TLS */
    }
    if (sess_index < 0) {
        sess_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, sess_exfree);
    }
    ctx = client_ctx(L, cafile);
    if (ctx == NULL) {
        return client_fail(L, c, lua_tostring(L, -1));
    }
    s = SSL_new(ctx);
    if (s == NULL || SSL_set_fd(s, c->fd) != 1) {
        SSL_free(s);
        tls_clear();
        return client_fail(L, c, "not enough memory");
    }
    SSL_set_connect_state(s);
    if (name != NULL) {
        unsigned char ip[16];

        /* SNI only for names, never for address literals (RFC 6066). */
        if (inet_pton(AF_INET, name, ip) != 1
            && inet_pton(AF_INET6, name, ip) != 1) {
            (void) SSL_set_tlsext_host_name(s, name);
        }
        if (verify && SSL_set1_host(s, name) != 1) {
            SSL_free(s);
            return client_fail(L, c, "bad server name");
        }
    }
    SSL_set_verify(s, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (luaL_testudata(L, 2, SESS_MT)) {
        struct tls_sess *ts = *(struct tls_sess **) lua_touserdata(L, 2);

        if (ts != NULL && ts->s != NULL) {
            (void) SSL_set_session(s, ts->s);
        }
    }
    c->tr_ctx = s;
    c->tr = &tls_transport;
    c->rstart = c->rend = 0;
    return client_k(L, LUA_OK, 0);
}


/* conn:tls() (and sock:tls()) -> {protocol, cipher, sni, alpn, resumed},
 * or nil for a plain connection. */
static int
conn_tls(lua_State *L)
{
    struct fdp_conn *c = fdp_checkconn(L);
    const unsigned char *alpn = NULL;
    unsigned int alen = 0;
    const char *sni;

    if (c->tr_ctx == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 5);
    lua_pushstring(L, SSL_get_version(c->tr_ctx));
    lua_setfield(L, -2, "protocol");
    lua_pushstring(L, SSL_get_cipher_name(c->tr_ctx));
    lua_setfield(L, -2, "cipher");
    sni = SSL_get_servername(c->tr_ctx, TLSEXT_NAMETYPE_host_name);
    if (sni != NULL) {
        lua_pushstring(L, sni);
        lua_setfield(L, -2, "sni");
    }
    SSL_get0_alpn_selected(c->tr_ctx, &alpn, &alen);
    if (alpn != NULL && alen > 0) {
        lua_pushlstring(L, (const char *) alpn, alen);
        lua_setfield(L, -2, "alpn");
    }
    lua_pushboolean(L, SSL_session_reused(c->tr_ctx));
    lua_setfield(L, -2, "resumed");
    return 1;
}


void
fdp_ltls_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "tls", conn_tls },
        { NULL, NULL }
    };

    static const luaL_Reg sock_methods[] = {
        { "tls", conn_tls },
        { "sslhandshake", sock_sslhandshake },
        { NULL, NULL }
    };
    static const luaL_Reg sess_meta[] = {
        { "__gc", sess_gc },
        { NULL, NULL }
    };
    static const luaL_Reg client_meta[] = {
        { "__gc", client_gc },
        { NULL, NULL }
    };

    luaL_getmetatable(L, FDP_CONN_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
    /* fdpool.tcp() sockets (their metatable is made first). */
    if (luaL_getmetatable(L, FDP_TCP_MT) == LUA_TTABLE) {
        lua_getfield(L, -1, "__index");
        luaL_setfuncs(L, sock_methods, 0);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    fdp_createmeta(L, SESS_MT, sess_meta, NULL);
    fdp_createmeta(L, CLIENT_MT, client_meta, NULL);
}
