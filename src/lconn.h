/*
 * lconn.h - the conn object (userdata "fdpool.conn", lconn.c): one
 * connection handed to a worker, read and written by its task.
 */
#ifndef FDP_LCONN_H
#define FDP_LCONN_H

#include <sys/types.h>

#include "worker.h"

/* The conn object (userdata "fdpool.conn"). */
struct fdp_conn {
    int fd;
    struct fdp_io io;
    struct fdp_wctx *w;
    struct fdp_task *waiter;    /* task blocked on this fd */
    uint32_t wait_events;
    double timeout;             /* seconds, < 0: none */
    int total;                  /* timeout per call ("t"), else per wait */
    uint64_t deadline;          /* ms, "t" mode: of the call in progress */
    double limit;               /* ms: no wait goes past it (a whole head,
                                   a whole body), 0: none */
    double min_rate;            /* bytes/s that push limit later, 0: no */
    size_t op_pos;              /* progress of the call in progress */
    char *rbuf;
    size_t rstart, rend, rcap;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint32_t peerlen;           /* > 0: the client from a PROXY header */
    unsigned char peer[28];
    int rready;                 /* no short read since the last EPOLLIN:
                                   worth a read() before waiting */
    int rdhup;                  /* the peer's FIN (or an error) was seen:
                                   a short read no longer means drained */
    struct fdp_http_chunked chunked;    /* conn:readchunked in progress */
};

/* lconn.c */
void fdp_conn_open_meta(lua_State *L);
struct fdp_conn *fdp_checkconn(lua_State *L);
void fdp_conn_op_begin(struct fdp_conn *c);
ssize_t fdp_conn_fill(struct fdp_conn *c, size_t want);
int fdp_conn_send(lua_State *L);
struct fdp_conn *fdp_conn_new(lua_State *L, int fd, struct fdp_wctx *w);
void fdp_conn_set_peer(struct fdp_conn *c, const void *peer, uint32_t len);
void fdp_conn_close(struct fdp_conn *c);
void fdp_conn_peer(struct fdp_conn *c, char *out, size_t n);


#endif
