/*
 * lconn.h - the conn object (userdata "fdpool.conn", lconn.c): one
 * connection handed to a worker, read and written by its task through
 * a transport (plain socket calls today; TLS can plug in), waiting
 * through task.c's waitable. The HTTP methods are lhttp.c's.
 */
#ifndef FDP_LCONN_H
#define FDP_LCONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <lua.h>

#include "http_parse.h"
#include "task.h"

struct fdp_conn;

/* How a conn's bytes move: each returns a count (0 from read: EOF; from
 * sendfile: the file ended) or a negative errno (-EAGAIN: wait), as the
 * rest of the C core does. A read shorter than asked means the socket
 * is drained (the conn then waits for the next edge). A transport whose
 * -EAGAIN needs another readiness than the call's (TLS: a read that must
 * write) sets tr_want. close (may be NULL) frees its state before the
 * fd is closed. */
struct fdp_transport {
    ssize_t (*read)(struct fdp_conn *c, void *buf, size_t n);
    ssize_t (*write)(struct fdp_conn *c, const void *buf, size_t n);
    ssize_t (*writev)(struct fdp_conn *c, const struct iovec *iov, int n);
    ssize_t (*sendfile)(struct fdp_conn *c, int in, off_t *off, size_t n);
    /* Optional: before the fd closes, a goodbye that must go out on it
     * (TLS: close_notify; one non-blocking try). */
    void (*shutdown)(struct fdp_conn *c);
    /* Optional: free the connection's state (tr_ctx) when it closes
     * (the fd may be closed already: it must not write). */
    void (*release)(void *tr_ctx);
};

/* The conn object (userdata "fdpool.conn"). */
struct fdp_conn {
    int fd;                     /* first, as every fd-owning userdata */
    uint32_t tr_want;           /* the transport's last -EAGAIN waits for
                                   this (EPOLLIN/EPOLLOUT), 0: the call's */
    struct fdp_waitable wt;     /* its waits (and readiness) */
    const struct fdp_transport *tr;
    void *tr_ctx;               /* the transport's state (a TLS session):
                                   it moves with the connection into and
                                   out of the keep-alive pool */
    double timeout;             /* seconds, < 0: none */
    int total;                  /* timeout per call ("t"), else per wait */
    int ka_served;              /* > 0: conn:httploop waits for its next
                                   head and may let its coroutine go
                                   meanwhile (fdp_task_may_sleep); a new
                                   call goes on after these requests */
    uint64_t deadline;          /* ms, "t" mode: of the read in progress */
    uint64_t wdeadline;         /* ms, "t" mode: of the write in progress */
    double limit;               /* ms: no wait goes past it (a whole head,
                                   a whole body), 0: none */
    double min_rate;            /* bytes/s that push limit later, 0: no */
    size_t op_pos;              /* progress of the read in progress */
    size_t wpos;                /* progress of the write in progress: a
                                   reader and a writer (two coroutines)
                                   may each be in a call at once */
    char *rbuf;
    size_t rstart, rend, rcap;
    uint64_t bytes_in;
    uint64_t bytes_out;
    signed char ka_sleep;       /* that loop's task may sleep: 1 yes,
                                   -1 no, 0 not known yet */
    unsigned char shared;       /* the master holds a copy of fd (a
                                   parked connection): closing shuts the
                                   socket down, so its peer sees the end
                                   now, not when the master lets go */
    unsigned char hbody;        /* conn:httploop: the request has a body
                                   to read (prepare; plain_end reads it) */
    unsigned char kawait : 2;   /* fdpool.http: 1 once a head was read,
                                   2 while waiting for the next with no
                                   byte of it: an idle keep-alive
                                   connection, which a stopping worker
                                   wakes to close (worker.c close_idle) */
    unsigned char hnolog : 1;   /* conn:httploop: its serve keeps no
                                   access log, the one reader of
                                   res._bytes (res:send leaves it out) */
    uint32_t peerlen;           /* > 0: the client from a PROXY header */
    unsigned char peer[28];
    struct fdp_http_chunked chunked;    /* conn:readchunked in progress */
    char *req;                  /* the last request line read ("GET /x"),
                                   for --slow's log line (FDP_CONN_REQ
                                   bytes, made only under --slow: an
                                   idle conn is smaller); NULL: none */
};                              /* (no padding: one per connection) */

#define FDP_CONN_REQ 96

/* The longest timeout or deadline a conn keeps, in seconds (about 31
 * years): longer ones mean the same and would overflow the milliseconds
 * the loop counts in. */
#define FDP_SEC_MAX 1e9

static inline double
fdp_clamp_sec(double sec)
{
    return sec > FDP_SEC_MAX ? FDP_SEC_MAX : sec;
}

void fdp_conn_open_meta(lua_State *L);

/* A new conn owning fd on the stack of L, its waits scheduled by s
 * (NULL: they block in poll()), with timeout seconds per wait (< 0:
 * none). No finalizer: its owner (the worker's task) keeps it reachable
 * and fdp_conn_close's it (a parked one too: that returns its read
 * buffer). */
struct fdp_conn *fdp_conn_new(lua_State *L, int fd, struct fdp_sched *s,
                              double timeout);
/* Fill a conn embedded in another object (a client socket: lsock.c)
 * with fd (-1: none yet) and the plain-socket transport, which
 * fdp_conn_close also restores (after the transport's release). */
void fdp_conn_init(struct fdp_conn *c, int fd, struct fdp_sched *s,
                   double timeout);
void fdp_conn_set_peer(struct fdp_conn *c, const void *peer, uint32_t len);
void fdp_conn_close(struct fdp_conn *c);
void fdp_conn_peer(struct fdp_conn *c, char *out, size_t n);

/* For the methods built on the conn (lhttp.c): the conn or client socket
 * at 1 (raises for anything else); a socket's metatable is marked as one
 * with fdp_conn_tag_meta (the metatable at the top of the stack). */
struct fdp_conn *fdp_checkconn(lua_State *L);
/* The conn at 1 in a method's continuation (NAME_k) and in what only
 * its checked entry and its continuation call: the entry checked it with
 * fdp_checkconn before the first call, and a yielded C call's stack is
 * out of Lua's reach, so a resumed one needs no second check (~200
 * instructions a call). */
#define FDP_CONN_AT1(L) ((struct fdp_conn *) lua_touserdata((L), 1))
void fdp_conn_tag_meta(lua_State *L);
/* Start a read (op_pos, deadline); writes keep their own state. */
void fdp_conn_op_begin(struct fdp_conn *c);
/* Push nil, "busy" when another coroutine waits to read (write) on c:
 * returns 2, else 0. */
int fdp_conn_busy(lua_State *L, struct fdp_conn *c, int write);
ssize_t fdp_conn_fill(struct fdp_conn *c, size_t want);
void fdp_conn_idle(struct fdp_conn *c);
int fdp_conn_wait(lua_State *L, struct fdp_conn *c, uint32_t events,
                  lua_KContext ctx, lua_KFunction k);
int fdp_conn_wait_dormant(lua_State *L, struct fdp_conn *c, int arg);
int fdp_conn_send(lua_State *L);
/* conn:park(idle_ms) for the task's own conn: pushes true, or nil and
 * why (unread data, closed, tls, a channel error); returns 1 or 2. */
int fdp_conn_park(lua_State *L, struct fdp_conn *c, uint32_t idle_ms);

#endif
