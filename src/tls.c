/*
 * tls.c - the TLS server contexts: the master loads each --tls-cert and
 * --tls-key pair into an SSL_CTX before it forks (so workers under --user
 * need not read the key), picks one by SNI, offers ALPN http/1.1 and
 * gives every context of a generation the same session-ticket keys (made
 * here, once per load), so a session resumes in any worker. Also the
 * pure ClientHello record check of the `tls` accept filter. Owns the
 * contexts it loads; no Lua, no pool, no I/O but reading the files.
 */
#include "fdp.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define TICKET_KEYS_LEN 80      /* name 16, HMAC 32, AES 32 (OpenSSL 3) */

struct fdp_tls {
    int n;
    SSL_CTX *ctx[FDP_TLS_MAX_CERTS];
    unsigned char ticket[TICKET_KEYS_LEN];
};


/* SNI: the first certificate whose names match (X509_check_host: DNS
 * names, else the CN; wildcards), else the default one. */
static int
sni_cb(SSL *s, int *al, void *arg)
{
    struct fdp_tls *t = arg;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    int i;

    (void) al;
    /* One certificate: nothing to choose (X509_check_host was 0.35 % of
     * a resumed handshake's instructions). */
    if (name == NULL || t->n == 1) {
        return SSL_TLSEXT_ERR_OK;
    }
    for (i = 0; i < t->n; i++) {
        X509 *x = SSL_CTX_get0_certificate(t->ctx[i]);

        if (x != NULL && X509_check_host(x, name, 0, 0, NULL) == 1) {
            if (i > 0) {
                (void) SSL_set_SSL_CTX(s, t->ctx[i]);
            }
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}


/* ALPN: http/1.1 when the client offers it; nothing otherwise. */
static int
alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
        const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *o;

    (void) s;
    (void) arg;
    if (SSL_select_next_proto(&o, outlen, ours, sizeof(ours) - 1, in, inlen)
        != OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}


/* An encrypted key would make OpenSSL prompt on the terminal: refuse. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void) buf;
    (void) size;
    (void) rwflag;
    (void) u;
    return 0;
}


/* OpenSSL's first error as text, the most specific one ("no start
 * line" before "PEM lib"), and the queue cleared. */
static const char *
ssl_reason(unsigned long *code)
{
    unsigned long e = ERR_peek_error();
    const char *s = ERR_reason_error_string(e);

    if (code != NULL) {
        *code = e;
    }
    ERR_clear_error();
    return s ? s : "unknown error";
}


/* The file must be there and readable by us: say so plainly. */
static int
readable(const char *what, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        int e = errno;

        snprintf(err, errlen, "cannot read TLS %s '%s': %s", what, path,
                 strerror(e));
        return -e;
    }
    (void) close(fd);
    return 0;
}


static int
load_one(struct fdp_tls *t, const char *cert, const char *key, char *err,
         size_t errlen)
{
    static const unsigned char sid[] = "fdpool";
    SSL_CTX *ctx;
    unsigned long code;
    int r;

    if ((r = readable("certificate", cert, err, errlen)) < 0
        || (r = readable("key", key, err, errlen)) < 0) {
        return r;
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new() failed: %s", ssl_reason(NULL));
        return -ENOMEM;
    }
    t->ctx[t->n++] = ctx;
    (void) SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION
                        | SSL_OP_IGNORE_UNEXPECTED_EOF
                        | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                     | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                     | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    /* A record's header and body (and what follows) in one read(): a
     * short read still means drained, as ltls.c's read loop needs. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "bad TLS certificate '%s': %s (expected a "
                 "PEM certificate chain)", cert,
                 ssl_reason(NULL));
        return -EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        const char *why = ssl_reason(&code);

        if (ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH
            || ERR_GET_REASON(code) == X509_R_KEY_TYPE_MISMATCH) {
            snprintf(err, errlen, "TLS key '%s' does not match certificate "
                     "'%s'", key, cert);
        } else {
            snprintf(err, errlen, "bad TLS key '%s': %s (expected an "
                     "unencrypted PEM private key)", key, why);
        }
        return -EINVAL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        (void) ssl_reason(NULL);
        snprintf(err, errlen, "TLS key '%s' does not match certificate '%s'",
                 key, cert);
        return -EINVAL;
    }
    (void) SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    /* Stateless tickets only: a worker's own cache would not help the
     * next connection, which another worker may take. */
    (void) SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    (void) SSL_CTX_set_tlsext_ticket_keys(ctx, t->ticket, sizeof(t->ticket));
    (void) SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    (void) SSL_CTX_set_tlsext_servername_arg(ctx, t);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    return 0;
}


int
fdp_tls_load(struct fdp_tls **out, char *const *certs, char *const *keys,
             int n, char *err, size_t errlen)
{
    struct fdp_tls *t;
    int i, r;

    *out = NULL;
    if (n < 1 || n > FDP_TLS_MAX_CERTS) {
        snprintf(err, errlen, "TLS needs 1 to %d certificate/key pairs "
                 "(got %d)", FDP_TLS_MAX_CERTS, n);
        return -EINVAL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ERR_clear_error();
    if (RAND_bytes(t->ticket, sizeof(t->ticket)) != 1) {
        snprintf(err, errlen, "RAND_bytes() failed: %s", ssl_reason(NULL));
        free(t);
        return -EIO;
    }
    for (i = 0; i < n; i++) {
        r = load_one(t, certs[i], keys[i], err, errlen);
        if (r < 0) {
            fdp_tls_free(t);
            return r;
        }
    }
    *out = t;
    return 0;
}


void
fdp_tls_free(struct fdp_tls *t)
{
    int i;

    if (t == NULL) {
        return;
    }
    for (i = 0; i < t->n; i++) {
        SSL_CTX_free(t->ctx[i]);
    }
    OPENSSL_cleanse(t->ticket, sizeof(t->ticket));
    free(t);
}


struct ssl_ctx_st *
fdp_tls_ctx(const struct fdp_tls *t)
{
    return t->ctx[0];
}


void
fdp_tls_serial(const struct fdp_tls *t, char *out, size_t n)
{
    X509 *x = SSL_CTX_get0_certificate(t->ctx[0]);
    BIGNUM *bn = NULL;
    char *hex = NULL;

    snprintf(out, n, "?");
    if (x != NULL
        && (bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) != NULL
        && (hex = BN_bn2hex(bn)) != NULL) {
        snprintf(out, n, "%s", hex);
    }
    OPENSSL_free(hex);
    BN_free(bn);
}


int
fdp_tls_hello_check(const unsigned char *b, size_t n)
{
    size_t len;

    /* ContentType handshake (22), ProtocolVersion major 3. */
    if ((n >= 1 && b[0] != 0x16) || (n >= 2 && b[1] != 0x03)) {
        return -EINVAL;
    }
    if (n < 5) {
        return 0;
    }
    len = ((size_t) b[3] << 8) | b[4];
    /* TLSPlaintext.length is at most 2^14; HandshakeType client_hello. */
    if (len == 0 || len > 16384 || (n >= 6 && b[5] != 0x01)) {
        return -EINVAL;
    }
    return n >= 5 + len ? 1 : 0;
}
