/*
 * acceptf.c - the master's accept filter (as FreeBSD's accf_data and
 * accf_http): a connection waits here, in epoll, until its first bytes
 * (`data`) or a whole request head (`http`) have arrived, looked at with
 * MSG_PEEK so the bytes stay in the kernel; then it is dispatched. Owns
 * the pending set (bounded: when full the oldest is closed), its fds and
 * timers, and the per-address connection counts of --max-conns-per-ip.
 */
#include "fdp.h"
#include "pool.h"
#include "acceptf.h"
#include "proxy.h"
#include "tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define PEEK_CAP    65536       /* bytes looked at, at most */
#define IP_BUCKETS  4096

struct af_conn {
    struct fdp_pending c;
    struct fdp_io io;
    struct fdp_timer timer;
    struct fdp_pool *pool;
    int mode;
    int ready;                      /* has a head, waits for queue room */
    struct af_conn *prev, *next;    /* oldest first */
};

struct ip_node {
    unsigned char addr[16];
    uint32_t count;
    struct ip_node *next;
};

struct fdp_acceptf {
    struct af_conn *head, *tail;
    size_t n;
    size_t nready;
    int http;                       /* from READY: the handler's kind */
    uint32_t max_head;
    uint32_t head_ms;
    char *buf;                      /* PEEK_CAP bytes, for peeking */
    struct ip_node *ip[IP_BUCKETS];
};

enum { AF_WAIT, AF_READY, AF_CLOSED, AF_NOT_TLS };


/* "none", "data", "http" -> the mode (>= 0), or -EINVAL. */
int
fdp_acceptf_parse(const char *s)
{
    if (strcmp(s, "none") == 0) {
        return FDP_AF_NONE;
    }
    if (strcmp(s, "data") == 0) {
        return FDP_AF_DATA;
    }
    if (strcmp(s, "http") == 0) {
        return FDP_AF_HTTP;
    }
    if (strcmp(s, "tls") == 0) {
        return FDP_AF_TLS;
    }
    return -EINVAL;
}


const char *
fdp_acceptf_name(int mode)
{
    return mode == FDP_AF_DATA ? "data" : mode == FDP_AF_HTTP ? "http"
           : mode == FDP_AF_TLS ? "tls" : mode == FDP_AF_NONE ? "none"
           : "auto";
}


static struct fdp_acceptf *
get(struct fdp_pool *p)
{
    if (p->acceptf == NULL) {
        p->acceptf = calloc(1, sizeof(*p->acceptf));
    }
    return p->acceptf;
}


/* The mode for a connection of listener i: its own option, else
 * --accept-filter, else http for an HTTP handler, none otherwise. A tls
 * listener: its own option, else tls (never the pool's: an http filter
 * cannot read encrypted bytes). */
int
fdp_acceptf_mode(struct fdp_pool *p, uint32_t listener)
{
    int m = p->listeners[listener].filter;

    if (p->listeners[listener].tls) {
        return m == FDP_AF_AUTO ? FDP_AF_TLS : m;
    }
    if (m == FDP_AF_AUTO) {
        m = p->accept_filter;
    }
    if (m == FDP_AF_AUTO) {
        m = p->acceptf && p->acceptf->http ? FDP_AF_HTTP : FDP_AF_NONE;
    }
    return m;
}


void
fdp_acceptf_ready(struct fdp_pool *p, const struct fdp_ready_body *b)
{
    struct fdp_acceptf *af = get(p);

    if (af != NULL) {
        af->http = b->http != 0;
        af->max_head = b->max_head;
        af->head_ms = b->head_ms;
    }
    fdp_acceptf_defer(p);
}


/*
 * Deferred accept (TCP_DEFER_ACCEPT, 1 s; nginx's `listen ... deferred`)
 * on every TCP listener whose filter waits for the client's bytes anyway
 * (data, http, tls): the kernel holds a new connection until its first
 * bytes (or 1 s, then it is accepted as ever, and the filter's deadline
 * runs), so the master wakes once per connection instead of twice (the
 * accept, then the bytes), and a silent client costs no fd meanwhile.
 * Off with filter none (a server-first protocol: the worker must have
 * the connection at once). The mode of an `auto` listener is known from
 * the workers' READY, so this runs at start and at every READY, and
 * touches a socket only when its setting changes.
 */
void
fdp_acceptf_defer(struct fdp_pool *p)
{
    int i;

    for (i = 0; i < p->nlisten; i++) {
        struct fdp_listener *l = &p->listeners[i];
        int on = fdp_acceptf_mode(p, (uint32_t) i) != FDP_AF_NONE;

        if (!l->tcp || l->fd < 0 || (l->defer_set && l->deferred == on)) {
            continue;
        }
        (void) setsockopt(l->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &on,
                          sizeof(on));
        l->defer_set = 1;
        l->deferred = on;
    }
}


/* ---- per-address counts ------------------------------------------- */

/* The 16-byte key of an IPv4 (mapped) or IPv6 address; 0 when sa is
 * neither (unix sockets are not counted). */
static int
ip_key(const void *sa, unsigned char key[16])
{
    const struct sockaddr *s = sa;

    if (s->sa_family == AF_INET) {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *) sa)->sin_addr, 4);
        return 1;
    }
    if (s->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16);
        return 1;
    }
    return 0;
}


static struct ip_node **
ip_find(struct fdp_acceptf *af, const unsigned char key[16])
{
    uint32_t h = 2166136261u;
    struct ip_node **np;
    int i;

    for (i = 0; i < 16; i++) {
        h = (h ^ key[i]) * 16777619u;
    }
    for (np = &af->ip[h % IP_BUCKETS]; *np; np = &(*np)->next) {
        if (memcmp((*np)->addr, key, 16) == 0) {
            break;
        }
    }
    return np;
}


static int
ip_counted(struct fdp_pool *p, uint32_t listener)
{
    return p->max_conns_per_ip > 0 && listener < (uint32_t) p->nlisten
           && !p->listeners[listener].proxy;
}


/*
 * A connection from ss accepted on listener: count it. Returns 0, or
 * -EUSERS when the address already has --max-conns-per-ip connections (counted
 * as a per-ip close; the caller closes it). Connections of `proxy`
 * listeners and unix sockets are not counted.
 */
int
fdp_acceptf_ip_take(struct fdp_pool *p, const struct sockaddr_storage *ss,
                    uint32_t listener)
{
    struct fdp_acceptf *af;
    unsigned char key[16];
    struct ip_node **np;

    if (!ip_counted(p, listener) || !ip_key(ss, key)
        || (af = get(p)) == NULL) {
        return 0;
    }
    np = ip_find(af, key);
    if (*np && (*np)->count >= (uint32_t) p->max_conns_per_ip) {
        p->af_closed[FDP_AF_PER_IP]++;
        return -EUSERS;
    }
    if (*np == NULL) {
        *np = calloc(1, sizeof(**np));
        if (*np == NULL) {
            return 0;               /* not counted */
        }
        memcpy((*np)->addr, key, 16);
    }
    (*np)->count++;
    return 0;
}


/* The master let go of a counted connection (closed, or done). */
void
fdp_acceptf_ip_release(struct fdp_pool *p, const void *sa, uint32_t listener)
{
    unsigned char key[16];
    struct ip_node **np, *n;

    if (!ip_counted(p, listener) || p->acceptf == NULL || !ip_key(sa, key)) {
        return;
    }
    np = ip_find(p->acceptf, key);
    if ((n = *np) == NULL) {
        return;
    }
    if (--n->count == 0) {
        *np = n->next;
        free(n);
    }
}


/* A connection a worker had is over (DONE, or the worker died). */
void
fdp_acceptf_inflight_done(struct fdp_pool *p, const struct fdp_inflight *f)
{
    if (f->by_peer) {
        fdp_acceptf_ip_release(p, &f->rpeer, f->listener);
    }
}


/* A connection the master holds (parked) is closed: its address from
 * the socket, only asked when the cap is on. */
void
fdp_acceptf_fd_release(struct fdp_pool *p, int fd, uint32_t listener)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (ip_counted(p, listener)
        && getpeername(fd, (struct sockaddr *) &ss, &len) == 0) {
        fdp_acceptf_ip_release(p, &ss, listener);
    }
}


/* ---- the pending set ---------------------------------------------- */

static void
af_unlink(struct fdp_pool *p, struct af_conn *x)
{
    struct fdp_acceptf *af = p->acceptf;

    if (x->c.fd >= 0 && p->loop.epfd >= 0 && !x->ready) {
        (void) fdp_loop_del(&p->loop, &x->io);
    }
    fdp_timer_stop(&p->loop, &x->timer);
    af->nready -= x->ready ? 1 : 0;
    if (x->prev) {
        x->prev->next = x->next;
    } else {
        af->head = x->next;
    }
    if (x->next) {
        x->next->prev = x->prev;
    } else {
        af->tail = x->prev;
    }
    af->n--;
}


/* Close a pending connection for reason (counted), or -1: not counted. */
static void
af_close(struct fdp_pool *p, struct af_conn *x, int reason)
{
    af_unlink(p, x);
    if (reason >= 0) {
        p->af_closed[reason]++;
    }
    fdp_acceptf_ip_release(p, &x->c.peer, x->c.listener);
    fdp_close(&x->c.fd);
    free(x);
}


/*
 * Look at what fd has received, without taking it. AF_READY: dispatch it
 * (data there, a whole head, a head over max_head - the worker answers
 * 431 -, or a half-closed client whose bytes the worker should judge);
 * AF_CLOSED: nothing and the peer left (or an error); AF_NOT_TLS: a tls
 * listener's client sent something else; AF_WAIT.
 */
static int
af_look_n(struct fdp_acceptf *af, int fd, int mode, int hup, ssize_t *got)
{
    size_t want = 1;
    char one;
    ssize_t n;

    if (mode == FDP_AF_HTTP || mode == FDP_AF_TLS) {
        want = mode == FDP_AF_TLS ? 5 + 16384
               : (size_t) (af->max_head ? af->max_head : 32768) + 64;
        if (want > PEEK_CAP) {
            want = PEEK_CAP;
        }
        if (af->buf == NULL && (af->buf = malloc(PEEK_CAP)) == NULL) {
            return AF_READY;        /* cannot look: let the worker read */
        }
    }
    do {
        n = recv(fd, mode == FDP_AF_DATA || mode == FDP_AF_NONE ? &one
                 : af->buf, want, MSG_PEEK | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (got != NULL) {
        *got = n < 0 && errno != EAGAIN && errno != EWOULDBLOCK ? 0 : n;
    }
    if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK ? (hup ? AF_CLOSED
                                                              : AF_WAIT)
               : AF_CLOSED;
    }
    if (n == 0) {
        return AF_CLOSED;
    }
    if (mode == FDP_AF_TLS) {
        /* Not TLS at all (plain HTTP, garbage): it costs its connection
         * only. A truncated hello whose client hung up: the same. */
        int r = fdp_tls_hello_check((const unsigned char *) af->buf,
                                    (size_t) n);

        return r > 0 ? AF_READY : r < 0 ? AF_NOT_TLS : hup ? AF_CLOSED
               : AF_WAIT;
    }
    if (mode != FDP_AF_HTTP || hup || (size_t) n >= want
        || fdp_http_head_complete(af->buf, (size_t) n)) {
        return AF_READY;
    }
    return AF_WAIT;
}


static int
af_look(struct fdp_acceptf *af, int fd, int mode, int hup)
{
    return af_look_n(af, fd, mode, hup, NULL);
}


static void
af_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct af_conn *x = io->data;
    struct fdp_pool *p = x->pool;
    struct fdp_pending c;
    int r;

    (void) loop;
    r = af_look(p->acceptf, x->c.fd, x->mode,
                (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
    if (r == AF_WAIT) {
        return;
    }
    if (r == AF_CLOSED || r == AF_NOT_TLS) {
        af_close(p, x, r == AF_CLOSED ? FDP_AF_PEER_CLOSED : FDP_AF_NOT_TLS);
        return;
    }
    if (p->qlen == FDP_QUEUE_MAX) {
        /* Every worker full and the queue too: it keeps its place here
         * (out of epoll) until fdp_acceptf_retry finds room. */
        (void) fdp_loop_del(&p->loop, &x->io);
        x->ready = 1;
        p->acceptf->nready++;
        return;
    }
    af_unlink(p, x);
    c = x->c;
    free(x);
    c.since_us = fdp_now_us();
    p->admit(p, &c);
}


/* Called on the master's tick: ready connections that found the queue
 * full go to it now, oldest first, while it has room. */
void
fdp_acceptf_retry(struct fdp_pool *p)
{
    struct fdp_acceptf *af = p->acceptf;
    struct af_conn *x, *nx;

    for (x = af ? af->head : NULL; x && af->nready > 0
         && p->qlen < FDP_QUEUE_MAX; x = nx) {
        nx = x->next;
        if (x->ready) {
            struct fdp_pending c = x->c;

            af_unlink(p, x);
            free(x);
            c.since_us = fdp_now_us();
            p->admit(p, &c);
        }
    }
}


/*
 * The deadline passed without anything to serve. A partial HTTP head is
 * answered 408 (the bytes taken first, so the close sends FIN, not RST);
 * a silent connection is just closed.
 */
static void
af_timeout(struct fdp_loop *loop, struct fdp_timer *t)
{
    static const char r408[] = "HTTP/1.1 408 Request Timeout\r\n"
        "Connection: close\r\nContent-Length: 0\r\n\r\n";
    struct af_conn *x = t->data;
    struct fdp_pool *p = x->pool;
    char buf[4096];
    ssize_t n;
    int i;

    (void) loop;
    if (x->ready) {
        af_close(p, x, FDP_AF_OVERFLOW);    /* no room for it in time */
        return;
    }
    if (x->mode == FDP_AF_HTTP) {
        for (i = 0, n = 1; i < 16 && n > 0; i++) {
            n = recv(x->c.fd, buf, sizeof(buf), MSG_DONTWAIT);
        }
        if (i > 1) {
            (void) send(x->c.fd, r408, sizeof(r408) - 1,
                        MSG_DONTWAIT | MSG_NOSIGNAL);
        }
    }
    af_close(p, x, FDP_AF_DEADLINE);
}


static uint64_t
deadline_ms(struct fdp_pool *p)
{
    struct fdp_acceptf *af = p->acceptf;

    if (af && af->head_ms > 0) {
        return af->head_ms;
    }
    if (p->io_timeout > 0) {
        return (uint64_t) (p->io_timeout * 1000.0);
    }
    return FDP_AF_DEADLINE_DEFAULT_MS;
}


/*
 * A parked connection's next bytes: 1 when it may be dispatched now (no
 * filter, or what the filter waits for is there: one look, as
 * fdp_acceptf_hold's first), 0 when fdp_acceptf_hold would take it. The
 * master keeps its epoll registration of a parked socket for the first
 * case, the common one, and hands the rest to fdp_acceptf_hold.
 */
int
fdp_acceptf_dispatchable(struct fdp_pool *p, const struct fdp_pending *c)
{
    int mode = fdp_acceptf_mode(p, c->listener);
    struct fdp_acceptf *af;

    if (mode == FDP_AF_NONE || p->stopping || (af = get(p)) == NULL) {
        return 1;
    }
    return af_look(af, c->fd, mode, 0) == AF_READY;
}


/*
 * A parked connection back from a worker after an edge came meanwhile:
 * one look (one MSG_PEEK) says what fdp_acceptf_dispatchable would (1
 * ready, 0 not), or -EAGAIN: nothing there (parked on), or -EPIPE: the
 * client hung up or reset without bytes.
 */
int
fdp_acceptf_parked_look(struct fdp_pool *p, int fd, uint32_t listener)
{
    int mode = fdp_acceptf_mode(p, listener), r;
    struct fdp_acceptf *af = NULL;
    ssize_t n = 0;

    if (mode == FDP_AF_NONE || p->stopping || (af = get(p)) == NULL) {
        mode = FDP_AF_DATA;         /* a byte is enough */
    }
    r = af_look_n(af, fd, mode, 0, &n);
    if (n < 0) {
        return -EAGAIN;
    }
    if (n == 0) {
        return -EPIPE;
    }
    return r == AF_READY;
}


/*
 * A connection just accepted (after its PROXY header, if any) or a parked
 * one whose next bytes arrived. Returns 0 when it should be dispatched
 * now (no filter, or it already has what the filter waits for), 1 when
 * this module took it (c->fd is then owned here: pending, or closed).
 */
int
fdp_acceptf_hold(struct fdp_pool *p, struct fdp_pending *c)
{
    int mode = fdp_acceptf_mode(p, c->listener);
    struct fdp_acceptf *af;
    struct af_conn *x;
    int r;

    if (mode == FDP_AF_NONE || p->stopping || (af = get(p)) == NULL) {
        return 0;
    }
    r = af_look(af, c->fd, mode, 0);
    if (r == AF_READY) {
        return 0;
    }
    if (r == AF_CLOSED || r == AF_NOT_TLS) {
        p->af_closed[r == AF_CLOSED ? FDP_AF_PEER_CLOSED
                                    : FDP_AF_NOT_TLS]++;
        fdp_acceptf_ip_release(p, &c->peer, c->listener);
        fdp_close(&c->fd);
        return 1;
    }
    if (af->n >= (size_t) (p->max_pending > 0 ? p->max_pending
                                              : FDP_PENDING_MAX_DEFAULT)) {
        af_close(p, af->head, FDP_AF_OVERFLOW);
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        return 0;
    }
    x->c = *c;
    x->pool = p;
    x->mode = mode;
    x->io.fd = c->fd;
    x->io.cb = af_io;
    x->io.data = x;
    fdp_timer_init(&x->timer, af_timeout, x);
    /* Edge-triggered: a partial head waits for more bytes instead of
     * waking the master again for the same ones. */
    if (fdp_loop_add(&p->loop, &x->io, EPOLLIN | EPOLLRDHUP | EPOLLET) < 0) {
        free(x);
        return 0;
    }
    (void) fdp_timer_start(&p->loop, &x->timer, deadline_ms(p));
    x->prev = af->tail;
    if (af->tail) {
        af->tail->next = x;
    } else {
        af->head = x;
    }
    af->tail = x;
    af->n++;
    c->fd = -1;
    return 1;
}


/* Stop: every pending connection is closed (not counted as a reason). */
void
fdp_acceptf_close_all(struct fdp_pool *p)
{
    while (p->acceptf && p->acceptf->head) {
        af_close(p, p->acceptf->head, -1);
    }
}


/* A graceful stop: what waits here is served rather than closed. Each
 * goes to the dispatcher as if its bytes had come (the worker reads them
 * as it would), while the queue has room; the rest is closed. */
void
fdp_acceptf_admit_all(struct fdp_pool *p)
{
    while (p->acceptf && p->acceptf->head && p->qlen < FDP_QUEUE_MAX) {
        struct af_conn *x = p->acceptf->head;
        struct fdp_pending c = x->c;

        af_unlink(p, x);
        free(x);
        c.since_us = fdp_now_us();
        p->admit(p, &c);
    }
}


/* In a fresh child: close the fds, touch no epoll or timer. */
void
fdp_acceptf_close_in_child(struct fdp_pool *p)
{
    struct af_conn *x;

    for (x = p->acceptf ? p->acceptf->head : NULL; x; x = x->next) {
        fdp_close(&x->c.fd);
    }
}


void
fdp_acceptf_free(struct fdp_pool *p)
{
    struct fdp_acceptf *af = p->acceptf;
    struct af_conn *x, *nx;
    int i;

    if (af == NULL) {
        return;
    }
    for (x = af->head; x; x = nx) {
        nx = x->next;
        fdp_close(&x->c.fd);
        free(x);
    }
    for (i = 0; i < IP_BUCKETS; i++) {
        struct ip_node *n, *nn;

        for (n = af->ip[i]; n; n = nn) {
            nn = n->next;
            free(n);
        }
    }
    free(af->buf);
    free(af);
    p->acceptf = NULL;
}


size_t
fdp_acceptf_pending(const struct fdp_pool *p)
{
    return p->acceptf ? p->acceptf->n : 0;
}
