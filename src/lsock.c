/*
 * lsock.c - fdpool.tcp(): client sockets for handlers (userdata
 * "fdpool.tcp"), shaped like OpenResty's ngx.socket.tcp. A socket starts
 * with a conn (lconn.c), so the conn's buffered I/O methods (receive,
 * send, readchunked...) serve it unchanged, through its pluggable
 * transport; this file adds connect (host names through dns.c, without
 * blocking the worker), the HTTP readers of lhttp.c (readresponse: a
 * response head; readchunk: a streaming chunked body), and the per-worker
 * pool of idle keep-alive connections keyed by host:port. Owns each
 * socket's fd (through its conn), the idle fds and the resolver.
 */
#include "fdp.h"
#include "dns.h"
#include "laux.h"
#include "lconn.h"
#include "lhttp.h"
#include "lsock.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>

#define SOCK_MT         FDP_TCP_MT
#define POOL_MT         "fdpool.tcp.pool"
#define DNS_MT          "fdpool.tcp.resolver"
#define KEY_MAX         320
#define DEFAULT_TIMEOUT 60.0        /* seconds, as OpenResty's 60 s */
#define DEFAULT_IDLE    60.0        /* seconds in the pool */
#define DEFAULT_POOL    30          /* idle connections per key */
#define CHUNK_PIECE     65536

enum { STAGE_DNS = 1, STAGE_CONNECT = 2 };

/* An answer awaited by a task; malloc'd because c-ares may answer after
 * the task gave up (or its socket was collected): whoever comes last
 * (the answer, or the socket letting go) frees it. */
struct dnsq {
    struct fdp_waitable wt;     /* wt.waiter: the task waiting */
    int done;
    int abandoned;
    struct fdp_dns_result r;
};

/* The addresses a connect tries in order. */
struct connecting {
    int n, i;
    int err;                    /* errno of the last failed attempt */
    uint64_t deadline;          /* ms, 0: none */
    struct sockaddr_storage addr[FDP_DNS_MAXADDR];
    socklen_t len[FDP_DNS_MAXADDR];
};

struct fdp_sock {
    struct fdp_conn c;          /* first: the conn methods take a socket */
    unsigned reused;            /* times its connection came from the pool */
    struct connecting *cn;      /* a connect in progress */
    struct dnsq *q;             /* its lookup */
    char key[KEY_MAX];          /* pool key of the connection */
};

typedef char sock_conn_first[offsetof(struct fdp_sock, c) == 0 ? 1 : -1];

struct keypool;
struct sockpool;

/* An idle keep-alive connection: its fd, watched for the peer's close
 * (or stray bytes) and its idle time. */
struct idle {
    struct idle *prev, *next;   /* newest first */
    struct keypool *kp;
    int fd;
    const struct fdp_transport *tr;
    void *tr_ctx;               /* its state (a TLS session), kept */
    char *rbuf;                 /* the socket's empty read buffer, kept */
    size_t rcap;
    unsigned reused;
    uint64_t expires;           /* ms, 0: never */
    struct fdp_io io;           /* the socket's registration, moved here */
    fdp_io_cb saved_cb;         /* the waitable's cb, to move back */
    struct fdp_timer timer;
};

struct keypool {
    struct keypool *next;
    struct sockpool *sp;
    struct idle *head, *tail;
    int n;
    char key[KEY_MAX];
};

struct sockpool {
    pid_t pid;
    struct fdp_sched *s;        /* the worker's scheduler it was made for */
    struct fdp_loop *loop;      /* NULL: no watching, expiry checked late */
    struct keypool *list;
    int nkeys;                  /* entries in list */
    struct idle *spare;         /* a freed entry, for the next one */
};

/* Empty keys' entries kept (their connections are out, likely to come
 * back) up to this many keys; past it, making one drops the empty. */
#define KEYS_KEPT       64

struct resolver {
    pid_t pid;
    struct fdp_sched *s;
    struct fdp_dns *d;
};


/* Registry keys of the process's pool and resolver. */
static const char pool_key = 'p';
static const char dns_key = 'd';


static struct fdp_sock *
checksock(lua_State *L)
{
    return luaL_checkudata(L, 1, SOCK_MT);
}


/* ---- per-process objects in the registry ---------------------------- */

/* An empty key's entry goes (when its last connection closed, or many
 * keys are kept), so a handler reaching many hosts does not grow the
 * list for ever. */
static void
keypool_drop(struct keypool *kp)
{
    struct keypool **pp;

    for (pp = &kp->sp->list; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == kp) {
            *pp = kp->next;
            break;
        }
    }
    kp->sp->nkeys--;
    free(kp);
}


/* Unlink e (closing its fd, or not when its connection was handed to a
 * socket) and free it (or keep it as the spare). A key left empty by a
 * close loses its entry; one whose connection was taken keeps it, as
 * the connection is likely to come back (no malloc per request). */
static void
idle_free(struct idle *e, int close_fd)
{
    struct keypool *kp = e->kp;
    struct fdp_loop *loop = kp->sp->loop;

    if (e->prev) {
        e->prev->next = e->next;
    } else {
        kp->head = e->next;
    }
    if (e->next) {
        e->next->prev = e->prev;
    } else {
        kp->tail = e->prev;
    }
    kp->n--;
    if (loop != NULL) {
        fdp_timer_stop(loop, &e->timer);
        if (close_fd && e->io.seq != 0) {
            fdp_loop_forget(loop, &e->io);
        }
    }
    if (close_fd) {
        fdp_close(&e->fd);
        if (e->tr->release != NULL && e->tr_ctx != NULL) {
            e->tr->release(e->tr_ctx);
        }
    }
    free(e->rbuf);
    if (kp->sp->spare == NULL) {
        kp->sp->spare = e;
    } else {
        free(e);
    }
    if (kp->n == 0 && close_fd) {
        keypool_drop(kp);
    }
}


static int
pool_gc(lua_State *L)
{
    struct sockpool *sp = luaL_checkudata(L, 1, POOL_MT);

    while (sp->list != NULL) {
        if (sp->list->head != NULL) {
            idle_free(sp->list->head, 1);   /* the last one drops the key */
        } else {
            keypool_drop(sp->list);
        }
    }
    free(sp->spare);
    sp->spare = NULL;
    return 0;
}


static int
resolver_gc(lua_State *L)
{
    struct resolver *r = luaL_checkudata(L, 1, DNS_MT);

    fdp_dns_free(r->d);
    r->d = NULL;
    return 0;
}


/* The process's object under key (made on first use, and again in a
 * forked child: the parent's sockets and queries are not its own). */
/* Both structs start so: */
struct owned {
    pid_t pid;
    struct fdp_sched *s;
};


static void *
registry_obj(lua_State *L, const char *mt, const void *key, size_t size,
             pid_t **made)
{
    struct fdp_sched *s = fdp_sched_of(L);
    struct owned *u;

    /* Only this file writes under key: a userdata there is ours. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    u = lua_touserdata(L, -1);
    lua_pop(L, 1);
    /* A worker's scheduler is made after the fork: the same one means
     * the same process, without a getpid() per call. */
    if (u != NULL && u->s == s && (s != NULL || u->pid == getpid())) {
        return u;
    }
    u = lua_newuserdatauv(L, size, 0);
    memset(u, 0, size);
    luaL_setmetatable(L, mt);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
    u->s = s;
    *made = &u->pid;
    **made = getpid();
    return u;
}


static struct sockpool *
sockpool_of(lua_State *L)
{
    pid_t *pid = NULL;
    struct sockpool *sp = registry_obj(L, POOL_MT, &pool_key, sizeof(*sp),
                                       &pid);

    if (pid != NULL) {
        struct fdp_sched *s = fdp_sched_of(L);

        sp->loop = s ? s->loop : NULL;
    }
    return sp;
}


/* The process's resolver, made on first use; NULL with *err (-errno:
 * -EINVAL for a bad FDPOOL_RESOLVER) when it cannot be made. */
static struct fdp_dns *
resolver_of(lua_State *L, int *err)
{
    pid_t *pid = NULL;
    struct resolver *r = registry_obj(L, DNS_MT, &dns_key, sizeof(*r), &pid);

    *err = 0;
    if (r->d == NULL) {
        struct fdp_sched *s = fdp_sched_of(L);

        /* FDPOOL_RESOLVER ("ip[:port],..."): these servers instead of
         * resolv.conf's (tests, or a local cache). */
        *err = fdp_dns_new(&r->d, s ? s->loop : NULL,
                           getenv("FDPOOL_RESOLVER"));
    }
    return r->d;
}


/* ---- the pool of idle connections ------------------------------------ */

static struct keypool *
keypool_find(struct sockpool *sp, const char *key, int create)
{
    struct keypool *kp;

    for (kp = sp->list; kp; kp = kp->next) {
        if (strcmp(kp->key, key) == 0) {
            return kp;
        }
    }
    if (!create) {
        return NULL;
    }
    if (sp->nkeys >= KEYS_KEPT) {
        struct keypool *next;

        for (kp = sp->list; kp; kp = next) {
            next = kp->next;
            if (kp->n == 0) {
                keypool_drop(kp);
            }
        }
    }
    if ((kp = calloc(1, sizeof(*kp))) == NULL) {
        return NULL;
    }
    kp->sp = sp;
    memcpy(kp->key, key, strlen(key) + 1);      /* key: < KEY_MAX */
    kp->next = sp->list;
    sp->list = kp;
    sp->nkeys++;
    return kp;
}


/* The peer closed an idle connection, or sent bytes nobody asked for:
 * either way it can serve no request. */
static void
idle_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    (void) loop;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        idle_free(io->data, 1);
    }
}


static void
idle_timeout(struct fdp_loop *loop, struct fdp_timer *t)
{
    (void) loop;
    idle_free(t->data, 1);
}


/* An idle connection is usable when it has nothing to read and no EOF:
 * checked with a one-byte MSG_PEEK before reuse, however it was watched
 * (an upstream's FIN may be in flight while the loop has not run). */
static int
idle_usable(int fd)
{
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}


/* Take the newest usable idle connection for key into k, closing the
 * stale ones on the way: 1 taken, 0 none. */
static int
pool_take(lua_State *L, struct fdp_sock *k, const char *key)
{
    struct sockpool *sp = sockpool_of(L);
    uint64_t now = fdp_now_ms();
    struct keypool *kp;

    /* (Looked up again after each stale one: freeing the last entry
     * frees the key's.) */
    while ((kp = keypool_find(sp, key, 0)) != NULL && kp->head != NULL) {
        struct idle *e = kp->head;
        struct fdp_conn *c = &k->c;

        if ((e->expires != 0 && e->expires <= now) || !idle_usable(e->fd)) {
            idle_free(e, 1);
            continue;
        }
        c->fd = e->fd;
        c->tr = e->tr;
        c->tr_ctx = e->tr_ctx;
        /* Nothing to read (just checked): the first read waits for the
         * edge instead of costing a read() for EAGAIN. */
        c->wt.rready = 0;
        c->wt.rdhup = 0;
        c->rstart = c->rend = 0;
        if (c->rbuf == NULL) {
            c->rbuf = e->rbuf;
            c->rcap = e->rcap;
            e->rbuf = NULL;
        }
        k->reused = e->reused + 1;
        if (e->io.seq != 0 && sp->loop != NULL) {
            if (e->saved_cb != NULL && c->wt.s != NULL) {
                fdp_loop_move(sp->loop, &e->io, &c->wt.io);
                c->wt.io.cb = e->saved_cb;
                c->wt.io.data = &c->wt;
            } else {
                (void) fdp_loop_del(sp->loop, &e->io);
            }
        }
        e->io.seq = 0;
        idle_free(e, 0);
        return 1;
    }
    return 0;
}


/* ---- connect ----------------------------------------------------------- */

/* The message of errno e as the socket API answers it. */
static void
push_errmsg(lua_State *L, int e)
{
    const char *s;
    char buf[128];

    switch (e) {
    case ETIMEDOUT:
        s = "timeout";
        break;
    case ECONNREFUSED:
        s = "connection refused";
        break;
    case ECONNRESET:
    case EPIPE:
        s = "closed";
        break;
    default:
        snprintf(buf, sizeof(buf), "%s", strerror(e));
        buf[0] = (char) tolower((unsigned char) buf[0]);
        s = buf;
    }
    lua_pushstring(L, s);
}


static void
dnsq_release(struct fdp_sock *k)
{
    struct dnsq *q = k->q;

    if (q == NULL) {
        return;
    }
    k->q = NULL;
    if (q->wt.waiter != NULL) {
        struct fdp_task *t = q->wt.waiter;

        /* Closed under a waiting connect: it resumes now, "closed". */
        t->wobj = NULL;
        q->wt.waiter = NULL;
        fdp_timer_stop(t->s->loop, &t->timer);
        (void) fdp_timer_start(t->s->loop, &t->timer, 0);
    }
    if (q->done) {
        free(q);
    } else {
        q->abandoned = 1;       /* the answer frees it */
    }
}


static void
connect_end(struct fdp_sock *k)
{
    dnsq_release(k);
    free(k->cn);
    k->cn = NULL;
}


/* nil, message, errno; the socket stays closed. */
static int
connect_fail(lua_State *L, struct fdp_sock *k, int e, const char *msg)
{
    connect_end(k);
    fdp_conn_close(&k->c);
    k->key[0] = '\0';
    lua_pushnil(L);
    if (msg != NULL) {
        lua_pushstring(L, msg);
    } else {
        push_errmsg(L, e);
    }
    lua_pushinteger(L, e);
    return 3;
}


static int
connect_ok(lua_State *L, struct fdp_sock *k)
{
    connect_end(k);
    k->reused = 0;
    lua_pushboolean(L, 1);
    return 1;
}


static void
on_dns(void *arg, const struct fdp_dns_result *r)
{
    struct dnsq *q = arg;
    struct fdp_task *t = q->wt.waiter;

    q->r = *r;
    q->done = 1;
    if (q->abandoned) {
        free(q);
        return;
    }
    if (t != NULL && r->status != -ECANCELED) {
        /* Resume the task on the next turn of the loop (not from inside
         * c-ares): its wait timer, run now, finds the answer done. (Not
         * while the resolver is being freed: the process is ending.) */
        q->wt.waiter = NULL;
        t->wobj = NULL;
        fdp_timer_stop(t->s->loop, &t->timer);
        (void) fdp_timer_start(t->s->loop, &t->timer, 0);
    }
}


static int connect_k(lua_State *L, int status, lua_KContext ctx);


static int
so_error(int fd)
{
    int e = 0;
    socklen_t len = sizeof(e);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0) {
        return errno;
    }
    return e;
}


/* Try the addresses from cn->i on: each a non-blocking connect, waited
 * for (yield or poll) until the deadline; the next on failure. */
static int
try_addrs(lua_State *L, struct fdp_sock *k)
{
    struct connecting *cn = k->cn;
    struct fdp_conn *c = &k->c;

    for (; cn->i < cn->n; cn->i++) {
        int fd = socket(cn->addr[cn->i].ss_family,
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int e;

        if (fd < 0) {
            cn->err = errno;
            continue;
        }
        if (connect(fd, (struct sockaddr *) &cn->addr[cn->i],
                    cn->len[cn->i]) == 0) {
            c->fd = fd;
            return connect_ok(L, k);
        }
        e = errno;
        if (e != EINPROGRESS && e != EAGAIN) {
            cn->err = e;
            close(fd);
            continue;
        }
        c->fd = fd;
        c->wt.rready = 1;
        c->wt.rdhup = 0;
        if (!fdp_wait(L, &c->wt, fd, EPOLLOUT, cn->deadline, STAGE_CONNECT,
                      connect_k)) {
            return connect_fail(L, k, ETIMEDOUT, NULL);
        }
        e = so_error(fd);
        if (e == 0) {
            return connect_ok(L, k);
        }
        cn->err = e;
        fdp_conn_close(c);
    }
    return connect_fail(L, k, cn->err ? cn->err : ECONNREFUSED, NULL);
}


/* The lookup answered: its addresses, with the port, to try. */
static int
dns_answered(lua_State *L, struct fdp_sock *k, int port)
{
    struct dnsq *q = k->q;
    struct connecting *cn = k->cn;
    int i, st = q->r.status;

    if (st < 0) {
        const char *msg = st == -ENOENT ? "no such host"
                          : st == -ETIMEDOUT ? "dns timeout"
                          : st == -ECONNREFUSED ? "dns refused"
                          : st == -EINVAL ? "bad host name"
                          : st == -ENOMEM ? "not enough memory"
                          : "dns server failure";

        return connect_fail(L, k, -st, msg);
    }
    for (i = 0; i < q->r.n; i++) {
        cn->addr[i] = q->r.addr[i];
        cn->len[i] = q->r.len[i];
        if (cn->addr[i].ss_family == AF_INET) {
            ((struct sockaddr_in *) &cn->addr[i])->sin_port =
                htons((uint16_t) port);
        } else {
            ((struct sockaddr_in6 *) &cn->addr[i])->sin6_port =
                htons((uint16_t) port);
        }
    }
    cn->n = q->r.n;
    cn->i = 0;
    dnsq_release(k);
    return try_addrs(L, k);
}


static int
connect_k(lua_State *L, int status, lua_KContext ctx)
{
    struct fdp_sock *k = checksock(L);
    struct connecting *cn = k->cn;
    int e;

    (void) status;
    if (cn == NULL) {           /* closed meanwhile (another coroutine) */
        return connect_fail(L, k, EBADF, "closed");
    }
    if (ctx == STAGE_DNS) {
        if (k->q == NULL || !k->q->done) {
            return connect_fail(L, k, ETIMEDOUT, NULL);
        }
        return dns_answered(L, k, (int) lua_tointeger(L, 3));
    }
    if (fdp_wait_timed_out(L)) {
        return connect_fail(L, k, ETIMEDOUT, NULL);
    }
    if (k->c.fd < 0) {
        return connect_fail(L, k, EBADF, "closed");
    }
    e = so_error(k->c.fd);
    if (e == 0) {
        return connect_ok(L, k);
    }
    cn->err = e;
    fdp_conn_close(&k->c);
    cn->i++;
    return try_addrs(L, k);
}


/* Resolve host (not an IP literal) into k->q, then go on. */
static int
resolve(lua_State *L, struct fdp_sock *k, const char *host, int port)
{
    int err;
    struct fdp_dns *d = resolver_of(L, &err);
    struct fdp_sched *s = fdp_sched_of(L);
    struct fdp_task *t;
    struct dnsq *q;

    if (d == NULL && err == -EINVAL) {
        return connect_fail(L, k, EINVAL, "resolver: bad FDPOOL_RESOLVER "
                            "(want ip[:port],...)");
    }
    if (d == NULL) {
        return connect_fail(L, k, err < 0 ? -err : ENOMEM,
                            "resolver: cannot start");
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return connect_fail(L, k, ENOMEM, NULL);
    }
    q->wt.io.fd = -1;
    q->wt.s = s;
    k->q = q;
    fdp_dns_lookup(d, host, on_dns, q);
    if (q->done) {
        return dns_answered(L, k, port);
    }
    t = s != NULL ? fdp_wait_task(L) : NULL;
    if (t != NULL) {
        uint64_t now = fdp_now_ms();

        fdp_task_suspend(t, k->cn->deadline == 0 ? 86400000u
                         : k->cn->deadline > now ? k->cn->deadline - now : 0);
        q->wt.waiter = t;
        t->wobj = &q->wt;
        return fdp_task_yield(L, t, STAGE_DNS, connect_k);
    }
    if (!fdp_dns_wait(d, &q->done, k->cn->deadline)) {
        return connect_fail(L, k, ETIMEDOUT, NULL);
    }
    return dns_answered(L, k, port);
}


/*
 * sock:connect(host, port [, opts]) / sock:connect("unix:/path" [, opts])
 * -> true, or nil, err, errno. A pooled idle connection for the same key
 * (opts.pool, else "host:port" / "unix:/path") is taken first. The
 * socket's timeout bounds the whole connect (lookup included).
 */
static int
sock_connect(lua_State *L)
{
    struct fdp_sock *k = checksock(L);
    size_t hl;
    const char *host = luaL_checklstring(L, 2, &hl);
    int is_unix = strncmp(host, "unix:", 5) == 0;
    lua_Integer port = 0;
    struct connecting *cn;
    char key[KEY_MAX];
    const char *h = host;
    char lit[INET6_ADDRSTRLEN + 2];

    if (!is_unix) {
        port = luaL_checkinteger(L, 3);
        luaL_argcheck(L, port > 0 && port < 65536, 3, "port out of range");
        luaL_argcheck(L, hl > 0 && hl < 256, 2, "bad host name length");
        if (memchr(host, '\0', hl) != NULL) {
            /* Else "evil\0.example.com" would look up (and pool as)
             * "evil", and "127.0.0.1\0x" reach 127.0.0.1. */
            lua_pushnil(L);
            lua_pushliteral(L, "bad host name");
            lua_pushinteger(L, EINVAL);
            return 3;
        }
    } else {
        luaL_argcheck(L, hl > 5 && hl - 5 < sizeof(((struct sockaddr_un *)
                      0)->sun_path), 2, "unix socket path too long or empty");
        luaL_argcheck(L, memchr(host, '\0', hl) == NULL, 2,
                      "unix socket path contains a NUL byte");
    }
    lua_settop(L, 4);
    if (!is_unix && lua_istable(L, 4)) {
        lua_getfield(L, 4, "pool");
    } else if (is_unix && lua_istable(L, 3)) {
        lua_getfield(L, 3, "pool");
    } else {
        lua_pushnil(L);
    }
    /* (Without snprintf: it was a tenth of a proxied request's cost.) */
    if (!lua_isnil(L, -1)) {
        size_t n;
        const char *p = luaL_checklstring(L, -1, &n);

        n = n < sizeof(key) - 1 ? n : sizeof(key) - 1;
        memcpy(key, p, n);
        key[n] = '\0';
    } else if (is_unix) {
        memcpy(key, host, hl + 1);      /* hl < sizeof(sun_path) */
    } else {
        char digits[8], *d = digits + sizeof(digits);
        unsigned v = (unsigned) port;

        do {
            *--d = (char) ('0' + v % 10);
            v /= 10;
        } while (v != 0);
        memcpy(key, host, hl);          /* hl < 256 */
        key[hl] = ':';
        memcpy(key + hl + 1, d, (size_t) (digits + sizeof(digits) - d));
        key[hl + 1 + (digits + sizeof(digits) - d)] = '\0';
    }
    lua_pop(L, 1);
    if (k->c.wt.waiter != NULL || k->c.wt.writer != NULL || k->cn != NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    }
    /* A connected socket lets its connection go first (as OpenResty).
     * The new connection waits through the scheduler of where it is
     * made (fdpool.http.client reuses closed socket objects, which may
     * have been made at the top level). */
    fdp_conn_close(&k->c);
    k->c.op_pos = k->c.wpos = 0;
    k->c.wt.s = fdp_sched_of(L);
    memcpy(k->key, key, strlen(key) + 1);
    if (pool_take(L, k, key)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    cn = calloc(1, sizeof(*cn));
    if (cn == NULL) {
        return connect_fail(L, k, ENOMEM, NULL);
    }
    k->cn = cn;
    cn->deadline = k->c.timeout < 0 ? 0
                   : fdp_now_ms() + (uint64_t) (k->c.timeout * 1000.0) + 1;
    if (is_unix) {
        struct sockaddr_un *un = (struct sockaddr_un *) &cn->addr[0];

        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, host + 5, hl - 5 + 1);
        cn->len[0] = (socklen_t) (offsetof(struct sockaddr_un, sun_path)
                                  + hl - 5 + 1);
        cn->n = 1;
        return try_addrs(L, k);
    }
    if (host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof(lit)) {
        memcpy(lit, host + 1, hl - 2);
        lit[hl - 2] = '\0';
        h = lit;
    }
    {
        struct sockaddr_in *in = (struct sockaddr_in *) &cn->addr[0];
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &cn->addr[0];

        if (inet_pton(AF_INET, h, &in->sin_addr) == 1) {
            in->sin_family = AF_INET;
            in->sin_port = htons((uint16_t) port);
            cn->len[0] = sizeof(*in);
            cn->n = 1;
            return try_addrs(L, k);
        }
        if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t) port);
            cn->len[0] = sizeof(*in6);
            cn->n = 1;
            return try_addrs(L, k);
        }
    }
    return resolve(L, k, h, (int) port);
}


/* ---- keep-alive --------------------------------------------------------- */

/*
 * sock:setkeepalive([idle_seconds [, pool_size]]) -> true, or nil, err:
 * put the connection into the worker's pool for its key (closed there
 * when the peer closes it or idle_seconds pass; 0: no limit) and close
 * the socket object. The pool keeps at most pool_size per key (the
 * oldest goes). err: "closed", "busy", "unread data" (the socket stays
 * as it was).
 */
static int
sock_setkeepalive(lua_State *L)
{
    struct fdp_sock *k = checksock(L);
    struct fdp_conn *c = &k->c;
    lua_Number idle = luaL_optnumber(L, 2, DEFAULT_IDLE);
    lua_Integer size = luaL_optinteger(L, 3, DEFAULT_POOL);
    struct sockpool *sp;
    struct keypool *kp;
    struct idle *e;
    char b;
    ssize_t r;

    luaL_argcheck(L, idle >= 0 && idle < 1e9, 2, "idle seconds out of range");
    luaL_argcheck(L, size >= 1 && size <= 100000, 3,
                  "pool size out of range");
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
    if (c->rend > c->rstart) {
        lua_pushnil(L);
        lua_pushliteral(L, "unread data");
        return 2;
    }
    /* Drained by a short read and no edge since (rready 0, no FIN seen):
     * nothing arrived, no need to ask. */
    r = c->wt.rready || c->wt.rdhup || c->wt.s == NULL
        ? recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) : (errno = EAGAIN, -1);
    if (r > 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "unread data");
        return 2;
    }
    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        fdp_conn_close(c);      /* the peer has closed: nothing to keep */
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    sp = sockpool_of(L);
    kp = keypool_find(sp, k->key, 1);
    if (sp->spare != NULL) {
        e = sp->spare;
        sp->spare = NULL;
        memset(e, 0, sizeof(*e));
    } else {
        e = calloc(1, sizeof(*e));
    }
    if (kp == NULL || e == NULL) {
        free(e);
        if (kp != NULL && kp->n == 0) {
            keypool_drop(kp);
        }
        fdp_conn_close(c);
        lua_pushnil(L);
        lua_pushliteral(L, "not enough memory");
        return 2;
    }
    e->kp = kp;
    e->fd = c->fd;
    e->tr = c->tr;
    e->tr_ctx = c->tr_ctx;
    if (c->rcap <= 16384) {     /* the usual size: reuse it, no malloc */
        e->rbuf = c->rbuf;
        e->rcap = c->rcap;
        c->rbuf = NULL;
    }
    e->reused = k->reused;
    e->expires = idle > 0 ? fdp_now_ms() + (uint64_t) (idle * 1000.0) : 0;
    e->io.fd = -1;
    fdp_timer_init(&e->timer, idle_timeout, e);
    if (sp->loop != NULL) {
        if (c->wt.io.seq != 0 && c->wt.s != NULL) {
            e->saved_cb = c->wt.io.cb;
            fdp_loop_move(sp->loop, &c->wt.io, &e->io);
        } else {
            e->io.fd = c->fd;
            if (fdp_loop_add(sp->loop, &e->io, EPOLLIN | EPOLLRDHUP) < 0) {
                e->io.seq = 0;
            }
        }
        e->io.cb = idle_io;
        e->io.data = e;
        if (idle > 0) {
            (void) fdp_timer_start(sp->loop, &e->timer,
                                   (uint64_t) (idle * 1000.0));
        }
    }
    e->next = kp->head;
    if (kp->head) {
        kp->head->prev = e;
    } else {
        kp->tail = e;
    }
    kp->head = e;
    kp->n++;
    /* Over the size: the oldest go (never e, so the key stays). */
    while (kp->n > size) {
        idle_free(kp->tail, 1);
    }
    /* The socket object lets the connection go (the pool owns it, and
     * its transport's state). */
    c->fd = -1;
    c->tr_ctx = NULL;
    c->wt.io.seq = 0;
    c->wt.io.fd = -1;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rstart = c->rend = c->rcap = 0;
    k->key[0] = '\0';
    lua_pushboolean(L, 1);
    return 1;
}


/* sock:getreusedtimes() -> how many times this connection came from the
 * pool (0: a new one), or nil, "closed". */
static int
sock_getreusedtimes(lua_State *L)
{
    struct fdp_sock *k = checksock(L);

    if (k->c.fd < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushinteger(L, (lua_Integer) k->reused);
    return 1;
}


/* ---- the streaming chunked reader --------------------------------------- */

/*
 * sock:readchunk([max [, first]]) -> data | "" | nil, err: the next piece
 * (at most max bytes, default 65536) of a chunked body, decoded in C;
 * "" once the body (and its trailers) ended. first = true starts a new
 * body. Errors as conn:readchunked (no bound on the body: "too large"
 * only for chunk sizes adding up past 2^64 bytes).
 */
static int
sock_readchunk(lua_State *L)
{
    lua_Integer max = luaL_optinteger(L, 2, CHUNK_PIECE);

    (void) checksock(L);
    luaL_argcheck(L, max > 0, 2, "the piece size must be positive");
    return fdp_lhttp_readchunk(L, -1, max, lua_toboolean(L, 3));
}


/* ---- the object ---------------------------------------------------------- */

/* fdpool.tcp() -> an unconnected socket (timeout 60 s per wait). */
static int
l_tcp(lua_State *L)
{
    struct fdp_sock *k = lua_newuserdatauv(L, sizeof(*k), 0);

    memset(k, 0, sizeof(*k));
    k->c.fd = -1;
    luaL_setmetatable(L, SOCK_MT);
    fdp_conn_init(&k->c, -1, fdp_sched_of(L), DEFAULT_TIMEOUT);
    return 1;
}


/* sock:close() -> true, or nil, "closed" when not connected. */
static int
sock_close(lua_State *L)
{
    struct fdp_sock *k = checksock(L);

    if (k->c.fd < 0 && k->cn == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    connect_end(k);
    fdp_conn_close(&k->c);
    k->key[0] = '\0';
    lua_pushboolean(L, 1);
    return 1;
}


static int
sock_gc(lua_State *L)
{
    struct fdp_sock *k = luaL_checkudata(L, 1, SOCK_MT);

    connect_end(k);
    fdp_conn_close(&k->c);
    return 0;
}


static int
sock_tostring(lua_State *L)
{
    struct fdp_sock *k = checksock(L);

    if (k->c.fd < 0) {
        lua_pushliteral(L, "fdpool.tcp (closed)");
    } else {
        lua_pushfstring(L, "fdpool.tcp (%d)", k->c.fd);
    }
    return 1;
}


/*
 * Make the socket's metatable: its own methods, then the conn's I/O
 * methods (taken from the conn's metatable, made first by lhttp.c's
 * open), which work on a socket because it starts with a conn. Sets
 * fdpool.tcp in the module table at -1.
 */
void
fdp_lsock_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "connect", sock_connect },
        { "setkeepalive", sock_setkeepalive },
        { "getreusedtimes", sock_getreusedtimes },
        { "readchunk", sock_readchunk },
        { "readresponse", fdp_lhttp_readresponse },
        { "close", sock_close },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", sock_gc },
        { "__close", sock_gc },
        { "__tostring", sock_tostring },
        { NULL, NULL }
    };
    static const luaL_Reg pmeta[] = { { "__gc", pool_gc }, { NULL, NULL } };
    static const luaL_Reg rmeta[] = { { "__gc", resolver_gc }, { NULL, NULL } };
    static const char *const shared[] = {
        "receive", "receiveany", "send", "buffered", "settimeout",
        "setdeadline",
        "getpeername", "getsockname", "getfd", "fileno", "getstats",
        "shutdown", "readchunked", "sendfile", NULL
    };
    int i;

    fdp_createmeta(L, POOL_MT, pmeta, NULL);
    fdp_createmeta(L, DNS_MT, rmeta, NULL);
    fdp_createmeta(L, SOCK_MT, meta, methods);
    luaL_getmetatable(L, SOCK_MT);
    fdp_conn_tag_meta(L);
    lua_getfield(L, -1, "__index");
    luaL_getmetatable(L, FDP_CONN_MT);
    lua_getfield(L, -1, "__index");
    for (i = 0; shared[i]; i++) {
        lua_getfield(L, -1, shared[i]);
        if (lua_isfunction(L, -1)) {
            lua_setfield(L, -4, shared[i]);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 4);
    lua_pushcfunction(L, l_tcp);
    lua_setfield(L, -2, "tcp");
}
