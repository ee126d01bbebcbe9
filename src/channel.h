/*
 * channel.h - the framed messages between the master and one worker, over
 * one SOCK_SEQPACKET socketpair: a fixed header, a small payload, and the
 * descriptors tied to that message. A per-channel queue holds what the
 * kernel would not take yet (EAGAIN).
 */
#ifndef FDP_CHANNEL_H
#define FDP_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "fdpass.h"

#define FDP_MSG_MAX     4096    /* payload bytes (decoded: NUL after) */
#define FDP_BATCH_MAX   32      /* entries in one CONN or DONE message */
#define FDP_KEY_MAX     32      /* custom status key, with its NUL */
#define FDP_VAL_MAX     96      /* custom status value, with its NUL */
#define FDP_CHAN_QMAX   4096    /* messages a channel may hold back */

enum fdp_msg_type {
    FDP_MSG_CONN = 1,   /* m->w: count x fdp_conn_entry, count fds */
    FDP_MSG_STOP,       /* m->w: fdp_stop_body */
    FDP_MSG_READY,      /* w->m: fdp_ready_body: top level ran, handler
                           found, and what the master's filter needs */
    FDP_MSG_FAIL,       /* w->m: text: why the worker cannot serve */
    FDP_MSG_DONE,       /* w->m: count x fdp_done_entry */
    FDP_MSG_SET,        /* w->m: "key\0value": a custom status field */
    FDP_MSG_PARK,       /* w->m: 1 x fdp_park_entry + the conn's fd */
    FDP_MSG_STATUS_REQ, /* w->m: u32 request id: fdpool.status() */
    FDP_MSG_STATUS_RESP,/* m->w: u32 id + a part of a Lua table
                           constructor; count 1 = more parts follow */
    FDP_MSG_TYPE_END
};

struct fdp_msg_hdr {
    uint16_t type;
    uint16_t count;
    uint32_t len;       /* payload bytes after the header */
};

struct fdp_conn_entry {
    uint64_t id;
    uint32_t listener;
    uint32_t peerlen;           /* > 0: the client's address from a PROXY
                                   header, which conn:getpeername() gives */
    unsigned char peer[28];     /* a sockaddr_in or sockaddr_in6 */
    uint32_t flags;             /* FDP_CONN_KEPT */
};

/* CONN flag: the master keeps its own copy of this socket (a connection
 * parked before), so a PARK of it carries no fd. */
#define FDP_CONN_KEPT   1u
/* CONN flag (strict prefork's prefetch): an offer to a busy worker, with
 * FDP_CONN_KEPT. The worker starts it only after claiming it, when its
 * connection is over: compare-and-swap of its claim word j (flag bits
 * FDP_CONN_WORD(j), j < FDP_CLAIM_WORDS) from the id to 0; the master may
 * take the offer back the same way first (docs/ARCHITECTURE.md, "Strict
 * prefork's prefetch"). */
#define FDP_CONN_OFFER  2u
#define FDP_CONN_WORD(j)    ((uint32_t) (j) << 2)
#define FDP_CONN_WORD_OF(f) (((f) >> 2) & 15u)
#define FDP_CLAIM_WORDS 16
/* Offers a busy worker gets at most while few connections wait in the
 * master's queue; up to FDP_CLAIM_WORDS - 1 while many do (dispatch.c,
 * offer_depth). */
#define FDP_PREFETCH_SHALLOW 3

struct fdp_done_entry {
    uint64_t id;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t usec;
};

/* A connection handed back, idle at a request boundary: the master
 * waits for its next bytes (up to idle_ms) and dispatches it again.
 * With the connection's fd, or without for one handed FDP_CONN_KEPT. */
struct fdp_park_entry {
    uint64_t id;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint32_t usec;
    uint32_t idle_ms;
};

/* Strict prefork: a worker's page shared with the master (MAP_SHARED,
 * mapped before its fork; docs/ARCHITECTURE.md). claim: the offers
 * (prefetch); parks: the PARKs of kept connections the worker holds
 * back while it has more to serve, so that its death does not lose
 * them (the master parks them). */
#define FDP_PARKS_MAX 16
struct fdp_wshared {
    uint64_t claim[FDP_CLAIM_WORDS];
    /* parks[0 .. pstate & 0xffffffff) are held; the upper half is a
     * generation, + 1 at every emptying: the worker empties it to send
     * them, the master to take them (a worker stuck in a handler, a dead
     * one), each with a compare-and-swap, so each PARK is had once. */
    uint64_t pstate;
    struct fdp_park_entry parks[FDP_PARKS_MAX];
    /* The master's word (it writes it, never reads it back): nonzero
     * while it is about to wait or waiting. A worker that holds a PARK
     * then sends them (the wake-up); else the master takes them from
     * here before it waits again: it publishes the word, then looks at
     * parks once more (io_uring's SQ_NEED_WAKEUP). 1 from the fork on
     * until the master takes the worker's page in hand. */
    uint32_t msleep __attribute__((aligned(64)));
};
#define FDP_PARKS_N(st)     ((uint32_t) ((st) & 0xffffffffu))
#define FDP_PARKS_EMPTY(st) ((((st) >> 32) + 1) << 32)

/* READY: what the accept filter needs to know of the handler. */
struct fdp_ready_body {
    uint32_t http;              /* 1: made by http.serve (speaks HTTP) */
    uint32_t max_head;          /* its max_head in bytes, 0: not HTTP */
    uint32_t head_ms;           /* its head_timeout in ms, 0: none */
    uint32_t maxconns;          /* 0, or the most connections at once
                                   its open-files limit leaves room for
                                   (below --concurrency) */
};

struct fdp_stop_body {
    uint32_t graceful;          /* 1: graceful; | FDP_STOP_IDLE */
    uint32_t grace_ms;
};

/* In a STOP's graceful word: the pool itself stops (no generation or
 * master takes over its clients), so idle keep-alive connections close
 * at once. Without it (a reload's or an upgrade's retiring worker,
 * recycling, scaling down) their next request is still answered, saying
 * Connection: close: nothing a client sends is lost in a hand-over. */
#define FDP_STOP_IDLE 2u

/* A received message. The receiver owns fds[0..nfds). */
struct fdp_msg {
    struct fdp_msg_hdr h;
    union {
        unsigned char bytes[FDP_MSG_MAX];
        uint64_t align;
        struct fdp_conn_entry conn[FDP_BATCH_MAX];
        struct fdp_done_entry done[FDP_BATCH_MAX];
        struct fdp_stop_body stop;
    } u;
    int fds[FDP_MAX_FDS];
    int nfds;
    int lost;       /* 1: the kernel dropped fds past nfds (MSG_CTRUNC:
                       the receiver's RLIMIT_NOFILE); CONN and PARK only */
};

struct fdp_qmsg;

struct fdp_chan {
    int fd;
    int queued;                 /* messages in the queue */
    struct fdp_qmsg *head;
    struct fdp_qmsg *tail;
};

void fdp_chan_init(struct fdp_chan *ch, int fd);
int fdp_chan_send(struct fdp_chan *ch, unsigned type, unsigned count,
                  const void *payload, size_t len, const int *fds, int nfds);
int fdp_chan_send_keep(struct fdp_chan *ch, unsigned type, unsigned count,
                       const void *payload, size_t len, const int *fds,
                       int nfds, uint32_t keep);
int fdp_chan_flush(struct fdp_chan *ch);
int fdp_chan_recv(struct fdp_chan *ch, struct fdp_msg *m);
void fdp_chan_close(struct fdp_chan *ch);
int fdp_msg_decode(struct fdp_msg *m, const void *buf, size_t n);
int fdp_msg_check(const struct fdp_msg *m, int from_worker);
void fdp_msg_close_fds(struct fdp_msg *m);

#endif
