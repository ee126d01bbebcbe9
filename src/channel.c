/*
 * channel.c - framed messages over a SOCK_SEQPACKET socketpair. Owns the
 * channel fd and the descriptors sitting in its send queue. Decoding and
 * checking are separate pure functions so they can be fuzzed.
 */
#include "fdp.h"
#include "channel.h"

#include <stdlib.h>
#include <string.h>

struct fdp_qmsg {
    struct fdp_qmsg *next;
    size_t len;
    int nfds;
    uint32_t keep;              /* bit i: fds[i] stays its owner's */
    int fds[FDP_MAX_FDS];
    unsigned char data[];
};


void
fdp_chan_init(struct fdp_chan *ch, int fd)
{
    ch->fd = fd;
    ch->queued = 0;
    ch->head = ch->tail = NULL;
}


static void
qmsg_free(struct fdp_qmsg *q)
{
    int i;

    for (i = 0; i < q->nfds; i++) {
        if (!(q->keep & (1u << i))) {
            fdp_close(&q->fds[i]);
        }
    }
    free(q);
}


/*
 * Frame and send one message. Returns 0 when the message was sent or
 * queued: the channel then owns fds[] (it closes them once the kernel has
 * them). Returns -errno on failure (-EPIPE: peer gone, -ENOBUFS: queue
 * full): the caller still owns fds[].
 */
int
fdp_chan_send(struct fdp_chan *ch, unsigned type, unsigned count,
              const void *payload, size_t len, const int *fds, int nfds)
{
    return fdp_chan_send_keep(ch, type, count, payload, len, fds, nfds, 0);
}


/*
 * fdp_chan_send, where bit i of keep marks fds[i] as borrowed: the
 * channel sends it but never closes it; its owner keeps it open until
 * the message has left the queue (fdp_chan_flush or fdp_chan_close).
 * The master keeps its copy of a parked connection's socket this way.
 */
int
fdp_chan_send_keep(struct fdp_chan *ch, unsigned type, unsigned count,
                   const void *payload, size_t len, const int *fds,
                   int nfds, uint32_t keep)
{
    union {
        unsigned char bytes[sizeof(struct fdp_msg_hdr) + FDP_MSG_MAX];
        uint64_t align;
    } wire;
    struct fdp_msg_hdr h;
    struct fdp_qmsg *q;
    size_t total;
    ssize_t n;
    int i;

    if (len > FDP_MSG_MAX || nfds < 0 || nfds > FDP_MAX_FDS || ch->fd < 0) {
        return -EINVAL;
    }
    h.type = (uint16_t) type;
    h.count = (uint16_t) count;
    h.len = (uint32_t) len;
    memcpy(wire.bytes, &h, sizeof(h));
    if (len) {
        memcpy(wire.bytes + sizeof(h), payload, len);
    }
    total = sizeof(h) + len;

    if (ch->head == NULL) {
        n = fdp_sendfds(ch->fd, wire.bytes, total, fds, nfds);
        if (n >= 0) {
            for (i = 0; i < nfds; i++) {
                int fd = fds[i];

                if (!(keep & (1u << i))) {
                    fdp_close(&fd);
                }
            }
            return 0;
        }
        if (n != -EAGAIN) {
            return (int) n;
        }
    }
    if (ch->queued >= FDP_CHAN_QMAX) {
        return -ENOBUFS;
    }
    q = malloc(sizeof(*q) + total);
    if (q == NULL) {
        return -ENOMEM;
    }
    q->next = NULL;
    q->len = total;
    q->nfds = nfds;
    q->keep = keep;
    if (nfds > 0) {
        memcpy(q->fds, fds, sizeof(int) * (size_t) nfds);
    }
    memcpy(q->data, wire.bytes, total);
    if (ch->tail) {
        ch->tail->next = q;
    } else {
        ch->head = q;
    }
    ch->tail = q;
    ch->queued++;
    return 0;
}


/* Send what the queue holds. Returns 0 when empty, -EAGAIN when the
 * kernel is full again, or -errno when the channel is broken. */
int
fdp_chan_flush(struct fdp_chan *ch)
{
    struct fdp_qmsg *q;
    ssize_t n;

    while ((q = ch->head) != NULL) {
        n = fdp_sendfds(ch->fd, q->data, q->len, q->fds, q->nfds);
        if (n < 0) {
            return (int) n;
        }
        ch->head = q->next;
        if (ch->head == NULL) {
            ch->tail = NULL;
        }
        ch->queued--;
        qmsg_free(q);
    }
    return 0;
}


/*
 * Decode a wire buffer into m: header and payload length must agree.
 * Returns 0 or -EBADMSG. Does not touch m->fds.
 */
int
fdp_msg_decode(struct fdp_msg *m, const void *buf, size_t n)
{
    if (n < sizeof(m->h)) {
        return -EBADMSG;
    }
    memcpy(&m->h, buf, sizeof(m->h));
    if (m->h.len > FDP_MSG_MAX || m->h.len != n - sizeof(m->h)) {
        return -EBADMSG;
    }
    memcpy(m->u.bytes, (const unsigned char *) buf + sizeof(m->h), m->h.len);
    if (m->h.len < FDP_MSG_MAX) {
        /* Text payloads (FAIL, SET) are then C strings. */
        m->u.bytes[m->h.len] = '\0';
    }
    return 0;
}


/*
 * Check a decoded message against its type: direction, payload shape,
 * and the descriptors it may carry. Returns 0 or -EBADMSG.
 */
int
fdp_msg_check(const struct fdp_msg *m, int from_worker)
{
    const struct fdp_msg_hdr *h = &m->h;
    size_t klen, vlen;

    /* fds the kernel dropped (the receiver's RLIMIT_NOFILE): only where
     * fds belong, one a connection (CONN: each its own; PARK: one). */
    if (m->lost && h->type != FDP_MSG_CONN
        && !(h->type == FDP_MSG_PARK && h->count == 1)) {
        return -EBADMSG;
    }
    switch (h->type) {
    case FDP_MSG_CONN:
        return !from_worker && h->count >= 1 && h->count <= FDP_BATCH_MAX
               && h->len == h->count * sizeof(struct fdp_conn_entry)
               && (m->nfds == h->count || (m->lost && m->nfds < h->count))
               ? 0 : -EBADMSG;
    case FDP_MSG_STOP:
        return !from_worker && h->count == 0
               && h->len == sizeof(struct fdp_stop_body)
               && m->nfds == 0 ? 0 : -EBADMSG;
    case FDP_MSG_READY:
        return from_worker && h->count == 0
               && h->len == sizeof(struct fdp_ready_body)
               && m->nfds == 0 ? 0 : -EBADMSG;
    case FDP_MSG_FAIL:
        return from_worker && h->count == 0 && h->len >= 1
               && m->nfds == 0 ? 0 : -EBADMSG;
    case FDP_MSG_DONE:
        return from_worker && h->count >= 1 && h->count <= FDP_BATCH_MAX
               && h->len == h->count * sizeof(struct fdp_done_entry)
               && m->nfds == 0 ? 0 : -EBADMSG;
    case FDP_MSG_PARK:
        /* The fd, or none for a connection the master kept a copy of
         * (FDP_CONN_KEPT); the master checks which. */
        return from_worker && h->count >= 1 && h->count <= FDP_BATCH_MAX
               && h->len == h->count * sizeof(struct fdp_park_entry)
               && m->nfds <= (h->count == 1 ? 1 : 0) ? 0 : -EBADMSG;
    case FDP_MSG_STATUS_REQ:
        return from_worker && h->count == 0 && h->len == 4
               && m->nfds == 0 ? 0 : -EBADMSG;
    case FDP_MSG_STATUS_RESP:
        return !from_worker && h->count <= 1 && h->len >= 4
               && m->nfds == 0 ? 0 : -EBADMSG;
    case FDP_MSG_SET:
        if (!from_worker || h->count != 0 || m->nfds != 0 || h->len < 2) {
            return -EBADMSG;
        }
        klen = strnlen((const char *) m->u.bytes, h->len);
        if (klen == 0 || klen >= FDP_KEY_MAX || klen == h->len) {
            return -EBADMSG;
        }
        vlen = h->len - klen - 1;
        if (vlen >= FDP_VAL_MAX
            || memchr(m->u.bytes + klen + 1, 0, vlen) != NULL) {
            return -EBADMSG;
        }
        return 0;
    default:
        return -EBADMSG;
    }
}


void
fdp_msg_close_fds(struct fdp_msg *m)
{
    int i;

    for (i = 0; i < m->nfds; i++) {
        fdp_close(&m->fds[i]);
    }
    m->nfds = 0;
}


/*
 * Receive one message. Returns 1 with a decoded (not yet checked) message
 * whose fds the caller owns, 0 on EOF, -EAGAIN, -EBADMSG/-EMSGSIZE for a
 * malformed message (its fds already closed), or -errno.
 */
int
fdp_chan_recv(struct fdp_chan *ch, struct fdp_msg *m)
{
    union {
        unsigned char bytes[sizeof(struct fdp_msg_hdr) + FDP_MSG_MAX];
        uint64_t align;
    } wire;
    ssize_t n;
    int r;

    m->nfds = FDP_MAX_FDS;
    n = fdp_recvfds_lossy(ch->fd, wire.bytes, sizeof(wire.bytes), m->fds,
                          &m->nfds, &m->lost);
    if (n < 0) {
        return (int) n;
    }
    if (n == 0 && m->nfds == 0) {
        return 0;
    }
    r = fdp_msg_decode(m, wire.bytes, (size_t) n);
    if (r < 0) {
        fdp_msg_close_fds(m);
        return r;
    }
    return 1;
}


void
fdp_chan_close(struct fdp_chan *ch)
{
    struct fdp_qmsg *q;

    while ((q = ch->head) != NULL) {
        ch->head = q->next;
        qmsg_free(q);
    }
    ch->tail = NULL;
    ch->queued = 0;
    fdp_close(&ch->fd);
}
