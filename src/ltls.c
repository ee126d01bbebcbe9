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

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <lauxlib.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define TLS_CHUNK 16384         /* one record's plaintext */


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
        ERR_clear_error();
        return errno != 0 && errno != EAGAIN ? -errno : -ECONNRESET;
    default:
        ERR_clear_error();
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

    while (got < n) {
        ERR_clear_error();
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

    if (n == 0) {
        return 0;
    }
    ERR_clear_error();
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
    if (SSL_is_init_finished(c->tr_ctx)) {
        ERR_clear_error();
        (void) SSL_shutdown(c->tr_ctx);
        ERR_clear_error();
    }
}


/* The SSL object goes (its fd may be closed already: no I/O). */
static void
tls_release(void *ctx)
{
    SSL_free(ctx);
    ERR_clear_error();
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
        ERR_clear_error();
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
        ERR_clear_error();
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
    ERR_clear_error();
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


/* conn:tls() -> {protocol, cipher, sni, alpn, resumed}, or nil for a
 * plain connection. */
static int
conn_tls(lua_State *L)
{
    struct fdp_conn *c = luaL_checkudata(L, 1, FDP_CONN_MT);
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

    luaL_getmetatable(L, FDP_CONN_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
}
