/*
 * tls.h - TLS server contexts (tls.c): certificates and keys loaded by
 * the master before it forks (one SSL_CTX per certificate, picked by
 * SNI), the session-ticket keys of a generation, and the pure check of
 * a TLS ClientHello record the accept filter peeks at. No Lua, no pool.
 */
#ifndef FDP_TLS_H
#define FDP_TLS_H

#include <stddef.h>

#define FDP_TLS_MAX_CERTS 16
/* The handshake's deadline in a worker (ms), unless --io-timeout is
 * shorter. */
#define FDP_TLS_HANDSHAKE_MS 10000

struct ssl_ctx_st;
struct fdp_tls;

/*
 * Load n certificate chains and their keys (PEM files) into *out: the
 * first is the default, the others are chosen by the client's SNI name
 * (matched against each certificate's DNS names and CN, wildcards as
 * X509_check_host). Fresh session-ticket keys are made for it, so every
 * worker forked with it resumes the others' sessions. 0, or -errno with
 * one line in err (-ENOENT/-EACCES: a file cannot be read, -EINVAL: not a
 * certificate or key, or a key that does not match its certificate).
 */
int fdp_tls_load(struct fdp_tls **out, char *const *certs,
                 char *const *keys, int n, char *err, size_t errlen);
void fdp_tls_free(struct fdp_tls *t);
/* The default (first) context, which new server connections start on. */
struct ssl_ctx_st *fdp_tls_ctx(const struct fdp_tls *t);
/* The serial number of the default certificate, as hex (for the log). */
void fdp_tls_serial(const struct fdp_tls *t, char *out, size_t n);

/*
 * Is b[0..n) the start of a TLS handshake record holding a ClientHello?
 * 1: the whole first record has arrived; 0: so far so good, need more;
 * -EINVAL: not TLS (another protocol, garbage, or a record too long).
 */
int fdp_tls_hello_check(const unsigned char *b, size_t n);

#endif
