/*
 * dns.h - host name resolution that never blocks the worker (dns.c), on
 * c-ares: its sockets are watched by the caller's loop.c loop and its
 * retries run on a loop timer; /etc/hosts is read first ("fb" lookups),
 * answers are cached for their TTL. Without a loop (a plain program, a
 * worker's top level) fdp_dns_wait() polls c-ares's sockets instead.
 * No Lua here.
 */
#ifndef FDP_DNS_H
#define FDP_DNS_H

#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

#define FDP_DNS_MAXADDR 8

struct fdp_dns;

/* The outcome of a lookup: status 0 and n ≥ 1 addresses (port 0), or a
 * negative errno: -ENOENT no such host (also a name under the reserved
 * .invalid TLD, answered at once as RFC 6761 asks), -ETIMEDOUT the
 * servers did not answer, -EIO a server failure or bad answer,
 * -ECONNREFUSED the servers refused, -ENOMEM, -ECANCELED (the resolver
 * was freed), -EINVAL a malformed name. */
struct fdp_dns_result {
    int status;
    int n;
    struct sockaddr_storage addr[FDP_DNS_MAXADDR];
    socklen_t len[FDP_DNS_MAXADDR];
};

typedef void (*fdp_dns_cb)(void *arg, const struct fdp_dns_result *r);

/* A resolver whose sockets and timer live in loop (NULL: none; waits
 * then go through fdp_dns_wait), asking servers ("ip[:port],...", NULL:
 * resolv.conf's). 0 or -errno (-EINVAL: a bad servers list). */
int fdp_dns_new(struct fdp_dns **out, struct fdp_loop *loop,
                const char *servers);
/* Free it: pending lookups are answered with -ECANCELED first. */
void fdp_dns_free(struct fdp_dns *d);

/* Resolve host. cb is called exactly once: before this returns for a
 * cached answer, a .invalid name or a failure to start; else later, from
 * the loop (or from fdp_dns_wait). */
void fdp_dns_lookup(struct fdp_dns *d, const char *host, fdp_dns_cb cb,
                    void *arg);

/* Run the resolver (poll its sockets) until *done is set or deadline_ms
 * (fdp_now_ms time, 0: none) passes: 1 done, 0 timed out. For callers
 * that cannot wait in the loop. */
int fdp_dns_wait(struct fdp_dns *d, const int *done, uint64_t deadline_ms);

#endif
