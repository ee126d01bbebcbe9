/*
 * dns.c - the worker's resolver (see dns.h): c-ares with its sockets in
 * the caller's epoll loop (level-triggered watchers kept in step by
 * c-ares's socket-state callback) and one loop timer for its retries; a
 * small cache of answers for their TTL. Owns the c-ares channel (and so
 * its sockets, which c-ares opens CLOEXEC) and the cache.
 */
#include "fdp.h"
#include "dns.h"

#include <ares.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

#define DNS_SOCKS       16
#define DNS_CACHE       64
#define DNS_HOSTMAX     256
#define DNS_TTL_MAX     3600            /* seconds: no answer kept longer */

struct dns_sock {
    struct fdp_io io;                   /* io.fd -1: a free slot */
    struct fdp_dns *d;
};

struct dns_entry {
    char host[DNS_HOSTMAX];
    uint64_t expires;                   /* ms; 0: a free entry */
    struct fdp_dns_result r;
};

struct fdp_dns {
    ares_channel ch;
    struct fdp_loop *loop;
    struct fdp_timer timer;             /* c-ares's next timeout */
    struct dns_sock socks[DNS_SOCKS];
    struct dns_entry cache[DNS_CACHE];
};

struct dns_query {
    struct fdp_dns *d;
    fdp_dns_cb cb;
    void *arg;
    char host[DNS_HOSTMAX];
};


/* Start the loop timer for c-ares's next timeout (none: no query). */
static void
resched(struct fdp_dns *d)
{
    struct timeval tv, *tp;

    if (d->loop == NULL) {
        return;
    }
    fdp_timer_stop(d->loop, &d->timer);
    tp = ares_timeout(d->ch, NULL, &tv);
    if (tp != NULL) {
        (void) fdp_timer_start(d->loop, &d->timer,
                               (uint64_t) tp->tv_sec * 1000
                               + (uint64_t) (tp->tv_usec + 999) / 1000);
    }
}


static void
on_timer(struct fdp_loop *loop, struct fdp_timer *t)
{
    struct fdp_dns *d = t->data;

    (void) loop;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    resched(d);
}


static void
on_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct dns_sock *ds = io->data;
    struct fdp_dns *d = ds->d;
    int fd = io->fd;

    (void) loop;
    ares_process_fd(d->ch,
                    ev & (EPOLLIN | EPOLLHUP | EPOLLERR) ? fd : ARES_SOCKET_BAD,
                    ev & EPOLLOUT ? fd : ARES_SOCKET_BAD);
    resched(d);
}


/* c-ares opens, changes interest in, and (with 0, 0) is about to close
 * one of its sockets: keep a watcher in step. */
static void
sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct fdp_dns *d = data;
    struct dns_sock *ds = NULL, *free_slot = NULL;
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    size_t i;

    for (i = 0; i < FDP_NELEM(d->socks); i++) {
        if (d->socks[i].io.fd == fd) {
            ds = &d->socks[i];
        } else if (d->socks[i].io.fd < 0 && free_slot == NULL) {
            free_slot = &d->socks[i];
        }
    }
    if (ds == NULL) {
        if (ev == 0 || free_slot == NULL) {
            return;         /* more sockets than slots: c-ares times out */
        }
        ds = free_slot;
        memset(&ds->io, 0, sizeof(ds->io));
        ds->io.fd = fd;
        ds->io.cb = on_io;
        ds->io.data = ds;
        ds->d = d;
        if (d->loop == NULL || fdp_loop_add(d->loop, &ds->io, ev) < 0) {
            ds->io.seq = 0;
            ds->io.events = ev;     /* fdp_dns_wait polls it */
        }
        return;
    }
    if (ev == 0) {
        if (d->loop != NULL && ds->io.seq != 0) {
            (void) fdp_loop_del(d->loop, &ds->io);
        }
        ds->io.fd = -1;
        ds->io.seq = 0;
        return;
    }
    if (d->loop != NULL && ds->io.seq != 0) {
        (void) fdp_loop_mod(d->loop, &ds->io, ev);
    } else {
        ds->io.events = ev;
    }
}


int
fdp_dns_new(struct fdp_dns **out, struct fdp_loop *loop, const char *servers)
{
    struct fdp_dns *d;
    struct ares_options o;
    char lookups[] = "fb";          /* /etc/hosts, then DNS */
    size_t i;
    int r;

    *out = NULL;
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        return -ENOMEM;
    }
    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        r = -ENOMEM;
        goto fail;
    }
    for (i = 0; i < FDP_NELEM(d->socks); i++) {
        d->socks[i].io.fd = -1;
    }
    d->loop = loop;
    fdp_timer_init(&d->timer, on_timer, d);
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = d;
    o.timeout = 2000;               /* ms per try, as resolv.conf's */
    o.tries = 2;
    o.lookups = lookups;
    r = ares_init_options(&d->ch, &o, ARES_OPT_SOCK_STATE_CB
                          | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES
                          | ARES_OPT_LOOKUPS);
    if (r != ARES_SUCCESS) {
        r = r == ARES_ENOMEM ? -ENOMEM : -EIO;
        goto fail;
    }
    if (servers != NULL && *servers != '\0'
        && ares_set_servers_ports_csv(d->ch, servers) != ARES_SUCCESS) {
        ares_destroy(d->ch);
        r = -EINVAL;
        goto fail;
    }
    *out = d;
    return 0;

fail:
    free(d);
    ares_library_cleanup();
    return r;
}


void
fdp_dns_free(struct fdp_dns *d)
{
    size_t i;

    if (d == NULL) {
        return;
    }
    ares_destroy(d->ch);            /* answers pending lookups, closes */
    if (d->loop != NULL) {
        fdp_timer_stop(d->loop, &d->timer);
        for (i = 0; i < FDP_NELEM(d->socks); i++) {
            if (d->socks[i].io.fd >= 0 && d->socks[i].io.seq != 0) {
                fdp_loop_forget(d->loop, &d->socks[i].io);
            }
        }
    }
    free(d);
    ares_library_cleanup();
}


static int
status_errno(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return -ENOENT;
    case ARES_ETIMEOUT:
        return -ETIMEDOUT;
    case ARES_ECONNREFUSED:
        return -ECONNREFUSED;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return -ECANCELED;
    case ARES_EBADNAME:
        return -EINVAL;
    default:
        return -EIO;
    }
}


static struct dns_entry *
cache_find(struct fdp_dns *d, const char *host)
{
    uint64_t now = fdp_now_ms();
    size_t i;

    for (i = 0; i < FDP_NELEM(d->cache); i++) {
        struct dns_entry *e = &d->cache[i];

        if (e->expires != 0 && e->expires <= now) {
            e->expires = 0;
        }
        if (e->expires != 0 && strcasecmp(e->host, host) == 0) {
            return e;
        }
    }
    return NULL;
}


static void
cache_put(struct fdp_dns *d, const char *host, const struct fdp_dns_result *r,
          unsigned ttl)
{
    struct dns_entry *e = NULL;
    size_t i;

    if (ttl == 0 || r->status != 0) {
        return;
    }
    if (ttl > DNS_TTL_MAX) {
        ttl = DNS_TTL_MAX;
    }
    for (i = 0; i < FDP_NELEM(d->cache); i++) {
        if (d->cache[i].expires == 0) {
            e = &d->cache[i];
            break;
        }
        if (e == NULL || d->cache[i].expires < e->expires) {
            e = &d->cache[i];       /* else the one expiring first */
        }
    }
    memcpy(e->host, host, strlen(host) + 1);
    e->r = *r;
    e->expires = fdp_now_ms() + (uint64_t) ttl * 1000;
}


static void
on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct dns_query *q = arg;
    struct fdp_dns_result *r;
    struct ares_addrinfo_node *n;
    int ttl = -1;

    (void) timeouts;
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        struct fdp_dns_result oom;

        memset(&oom, 0, sizeof(oom));
        oom.status = -ENOMEM;
        ares_freeaddrinfo(ai);
        q->cb(q->arg, &oom);
        free(q);
        return;
    }
    r->status = status_errno(status);
    for (n = ai ? ai->nodes : NULL; n && r->n < FDP_DNS_MAXADDR;
         n = n->ai_next) {
        if ((n->ai_family != AF_INET && n->ai_family != AF_INET6)
            || n->ai_addrlen > sizeof(r->addr[0])) {
            continue;
        }
        memcpy(&r->addr[r->n], n->ai_addr, n->ai_addrlen);
        r->len[r->n++] = n->ai_addrlen;
        if (ttl < 0 || n->ai_ttl < ttl) {
            ttl = n->ai_ttl;
        }
    }
    if (r->status == 0 && r->n == 0) {
        r->status = -ENOENT;
    }
    ares_freeaddrinfo(ai);
    if (status != ARES_EDESTRUCTION) {
        cache_put(q->d, q->host, r, ttl > 0 ? (unsigned) ttl : 0);
    }
    q->cb(q->arg, r);
    free(r);
    free(q);
}


/* RFC 6761 6.4: "invalid." and names under it never resolve. */
static int
reserved_invalid(const char *host, size_t n)
{
    while (n > 0 && host[n - 1] == '.') {
        n--;
    }
    return (n == 7 && strncasecmp(host, "invalid", 7) == 0)
           || (n > 8 && strncasecmp(host + n - 8, ".invalid", 8) == 0);
}


void
fdp_dns_lookup(struct fdp_dns *d, const char *host, fdp_dns_cb cb, void *arg)
{
    struct ares_addrinfo_hints hints;
    struct dns_query *q;
    struct dns_entry *e;
    struct fdp_dns_result fail;
    size_t n = strlen(host);

    memset(&fail, 0, sizeof(fail));
    if (n == 0 || n >= DNS_HOSTMAX) {
        fail.status = -EINVAL;
        cb(arg, &fail);
        return;
    }
    if (reserved_invalid(host, n)) {
        fail.status = -ENOENT;
        cb(arg, &fail);
        return;
    }
    e = cache_find(d, host);
    if (e != NULL) {
        cb(arg, &e->r);
        return;
    }
    q = malloc(sizeof(*q));
    if (q == NULL) {
        fail.status = -ENOMEM;
        cb(arg, &fail);
        return;
    }
    q->d = d;
    q->cb = cb;
    q->arg = arg;
    memcpy(q->host, host, n + 1);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    ares_getaddrinfo(d->ch, host, NULL, &hints, on_answer, q);
    resched(d);
}


int
fdp_dns_wait(struct fdp_dns *d, const int *done, uint64_t deadline_ms)
{
    while (!*done) {
        struct pollfd pfd[DNS_SOCKS];
        struct timeval tv, *tp;
        uint64_t now = fdp_now_ms();
        int n = 0, ms, r, i;

        if (deadline_ms != 0 && now >= deadline_ms) {
            return 0;
        }
        for (i = 0; i < DNS_SOCKS; i++) {
            if (d->socks[i].io.fd >= 0) {
                pfd[n].fd = d->socks[i].io.fd;
                pfd[n].events = (short) ((d->socks[i].io.events & EPOLLIN
                                          ? POLLIN : 0)
                                         | (d->socks[i].io.events & EPOLLOUT
                                            ? POLLOUT : 0));
                pfd[n++].revents = 0;
            }
        }
        tp = ares_timeout(d->ch, NULL, &tv);
        ms = tp ? (int) (tp->tv_sec * 1000 + (tp->tv_usec + 999) / 1000)
                : 1000;
        if (deadline_ms != 0 && (uint64_t) ms > deadline_ms - now) {
            ms = (int) (deadline_ms - now);
        }
        r = poll(pfd, (nfds_t) n, ms);
        if (r < 0 && errno != EINTR) {
            return 0;
        }
        if (r <= 0) {
            ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        }
        for (i = 0; r > 0 && i < n; i++) {
            if (pfd[i].revents) {
                ares_process_fd(d->ch,
                                pfd[i].revents & (POLLIN | POLLHUP | POLLERR)
                                ? pfd[i].fd : ARES_SOCKET_BAD,
                                pfd[i].revents & POLLOUT
                                ? pfd[i].fd : ARES_SOCKET_BAD);
            }
        }
        resched(d);
    }
    return 1;
}
