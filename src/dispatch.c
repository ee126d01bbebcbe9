/*
 * dispatch.c - the master's connections on their way to a worker:
 * accept (in bursts) -> the PROXY header wait -> the accept filter
 * (acceptf.c) -> the queue -> the policy's pick -> a worker's batch ->
 * one CONN message per worker per burst. Also the connections the master
 * holds: parked ones a worker handed back (PARK) until their next bytes,
 * and those whose PROXY header is being read. It never reads client
 * bytes but a PROXY header. A worker that breaks the hand-off protocol is
 * faulty (killed here; the pool replaces it when it is reaped).
 */
#include "fdp.h"
#include "pool.h"
#include "policy.h"
#include "proxy.h"
#include "dispatch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define ACCEPT_BURST     256

/*
 * A connection the master holds, not (or no longer) a worker's: one on a
 * `proxy` listener whose PROXY header is being read (the one place the
 * master reads client bytes: bounded size and time), or a parked one a
 * worker handed back, waiting for its next bytes. One type, one list per
 * kind (p->proxywait, p->parked), one free.
 */
enum { HELD_PROXY, HELD_PARKED };

struct fdp_held {
    struct fdp_pending c;           /* fd, listener; peer when proxied */
    int kind;
    int armed;                      /* parked: on p->parked, watched */
    int unwatched;                  /* kept since an offer, never parked:
                                     * not in the loop's epoll yet */
    int edge;                       /* parked kind: an event came while it
                                     * was queued or a worker's */
    int by_peer;                    /* parked: rpeer is the TCP peer it */
    struct sockaddr_in6 rpeer;      /* came from (a dead socket has no
                                     * peer name any more) */
    struct fdp_io io;
    struct fdp_timer timer;         /* parked: lazy (held_arm) */
    uint64_t deadline;              /* parked: idle until (loop ms) */
    struct fdp_pool *pool;
    struct fdp_held *prev, *next;
    struct fdp_held *kprev, *knext; /* parked kind: on p->kept */
};

#define PROXY_TIMEOUT_MS 5000


static struct fdp_held **
held_list(struct fdp_pool *p, const struct fdp_held *h)
{
    return h->kind == HELD_PARKED ? &p->parked : &p->proxywait;
}


/* Close (a parked one gives back its --max-conns-per-ip count by the
 * address it was accepted from: a client that reset has no peer name any
 * more), unlink and free h. */
static void
kept_unlink(struct fdp_pool *p, struct fdp_held *h)
{
    if (h->kprev) {
        h->kprev->knext = h->knext;
    } else if (p->kept == h) {
        p->kept = h->knext;
    }
    if (h->knext) {
        h->knext->kprev = h->kprev;
    }
    h->kprev = h->knext = NULL;
}


/* Take an armed held connection off its list (it stays allocated). */
static void
held_unlink(struct fdp_pool *p, struct fdp_held *h)
{
    struct fdp_held **list = held_list(p, h);

    if (h->prev) {
        h->prev->next = h->next;
    } else {
        *list = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
    h->prev = h->next = NULL;
    if (h->kind == HELD_PARKED) {
        p->nparked--;
    }
    h->armed = 0;
}


static void
held_free(struct fdp_pool *p, struct fdp_held *h)
{
    if (h->c.fd >= 0) {
        if (h->kind == HELD_PARKED && h->by_peer) {
            fdp_acceptf_ip_release(p, &h->rpeer, h->c.listener);
        } else if (h->kind == HELD_PARKED) {
            fdp_acceptf_fd_release(p, h->c.fd, h->c.listener);
        }
        if (!h->unwatched) {
            (void) fdp_loop_del(&p->loop, &h->io);
        }
        fdp_close(&h->c.fd);
    }
    fdp_timer_stop(&p->loop, &h->timer);
    if (h->armed) {
        held_unlink(p, h);
    }
    if (h->kind == HELD_PARKED) {
        kept_unlink(p, h);
    }
    free(h);
}


/*
 * The end of the master's copy of a parked connection that is out of
 * its hands (queued, or a worker's: the worker has closed its own copy
 * before DONE, and its registration here is disarmed since the
 * one-shot event that dispatched it): close it, no epoll_ctl. The
 * per-address count is the queue's or the in-flight entry's business.
 */
static void
kept_drop(struct fdp_pool *p, struct fdp_held *h)
{
    fdp_loop_forget(&p->loop, &h->io);
    fdp_timer_stop(&p->loop, &h->timer);
    fdp_close(&h->c.fd);
    kept_unlink(p, h);
    free(h);
}


/* Close a connection that has not reached a worker: its own fd, or the
 * master's kept copy. */
void
fdp_dispatch_pending_close(struct fdp_pool *p, struct fdp_pending *c)
{
    if (c->kept != NULL) {
        kept_drop(p, c->kept);
        c->kept = NULL;
        c->fd = -1;
    } else {
        fdp_close(&c->fd);
    }
}


/* A connection a worker had has ended (DONE, the worker's death): its
 * per-address count, and the master's copy when it kept one. */
void
fdp_dispatch_inflight_end(struct fdp_pool *p, struct fdp_inflight *f)
{
    fdp_acceptf_inflight_done(p, f);
    if (f->kept != NULL) {
        kept_drop(p, f->kept);
        f->kept = NULL;
    }
}


static void
held_timeout(struct fdp_loop *loop, struct fdp_timer *t)
{
    struct fdp_held *h = t->data;

    if (h->kind == HELD_PARKED && !h->armed) {
        return;         /* queued or in a worker: held_arm restarts it */
    }
    if (h->kind == HELD_PARKED && h->deadline > loop->now) {
        /* parked again since this timer was set: the rest of its time */
        (void) fdp_timer_start(loop, &h->timer, h->deadline - loop->now);
        return;
    }
    if (h->kind == HELD_PROXY) {
        fdp_log(FDP_LOG_DEBUG, 0, "no PROXY header within %d ms; closed",
                PROXY_TIMEOUT_MS);
    }
    held_free(h->pool, h);
}


/*
 * Put h on its list with a deadline of ms (its fd watched already). A
 * parked connection's timer is lazy: its dispatch leaves the timer in
 * the loop's heap, and a PARK that finds it pending with a time no
 * later than the new deadline only records the deadline (held_timeout
 * re-arms for the rest): no heap removal and insertion per request.
 */
static void
held_arm(struct fdp_pool *p, struct fdp_held *h, uint64_t ms)
{
    struct fdp_held **list = held_list(p, h);

    h->deadline = p->loop.now + ms;
    if (h->kind != HELD_PARKED || !fdp_timer_active(&h->timer)
        || h->timer.when > h->deadline) {
        (void) fdp_timer_start(&p->loop, &h->timer, ms);
    }
    h->prev = NULL;
    h->next = *list;
    if (*list) {
        (*list)->prev = h;
    }
    *list = h;
    if (h->kind == HELD_PARKED) {
        p->nparked++;
    }
    h->armed = 1;
}


/* Watch h (h->c filled in) for events, with a deadline of ms, and put it
 * on its list. Returns 0, or -errno from fdp_loop_add (h not linked, its
 * fd still open). */
static int
held_start(struct fdp_pool *p, struct fdp_held *h, int kind,
           fdp_io_cb cb, uint32_t events, uint64_t ms)
{
    int r;

    h->kind = kind;
    h->pool = p;
    h->io.fd = h->c.fd;
    h->io.cb = cb;
    h->io.data = h;
    fdp_timer_init(&h->timer, held_timeout, h);
    r = fdp_loop_add(&p->loop, &h->io, events);
    if (r < 0) {
        return r;
    }
    if (kind == HELD_PARKED) {
        h->knext = p->kept;
        if (p->kept) {
            p->kept->kprev = h;
        }
        p->kept = h;
    }
    held_arm(p, h, ms);
    return 0;
}


void
fdp_dispatch_accepting(struct fdp_pool *p, int on)
{
    int i;

    if (p->accepting == on) {
        return;
    }
    p->accepting = on;
    for (i = 0; i < p->nlisten; i++) {
        if (p->listeners[i].fd >= 0) {
            (void) fdp_loop_mod(&p->loop, &p->listeners[i].io,
                                on ? EPOLLIN : 0);
        }
    }
}


/* Is w's connection k an offer it has not claimed (prefetch)? Then a
 * DONE or PARK of it breaks the protocol. */
int
fdp_dispatch_unclaimed(const struct fdp_worker *w, uint32_t k)
{
    const struct fdp_inflight *f = &w->inflight[k];

    return f->offer && w->claim != NULL
           && __atomic_load_n(&w->claim[f->offer - 1], __ATOMIC_SEQ_CST)
              == f->id;
}


/* Connection k of w has ended there (DONE) or come back (PARK): free its
 * in-flight entry and count it as served. */
void
fdp_dispatch_served(struct fdp_worker *w, uint32_t k, uint64_t bytes_in,
                    uint64_t bytes_out)
{
    if (w->inflight[k].offer) {     /* claimed: it was served */
        w->inflight[k].offer = 0;
        w->pool->noffers--;
        w->noffers--;
    }
    w->inflight[k].id = 0;
    w->freeidx[w->nfree++] = k;
    w->slot.active--;
    w->slot.served++;
    w->slot.bytes_in += bytes_in;
    w->slot.bytes_out += bytes_out;
}


void
fdp_dispatch_drop_channel(struct fdp_pool *p, struct fdp_worker *w)
{
    int k;

    if (w->ch.fd >= 0) {
        (void) fdp_loop_del(&p->loop, &w->io);
        fdp_chan_close(&w->ch);
    }
    w->io.fd = -1;
    /* A kept copy stays its record's: the in-flight entry hand() made
     * ends it when the worker is reaped. */
    for (k = 0; k < w->nbatch; k++) {
        if (!(w->batchkeep & (1u << k))) {
            fdp_close(&w->batchfds[k]);
        }
    }
    w->nbatch = 0;
    w->batchkeep = 0;
}


/* A worker broke the protocol: it is replaced, never trusted again. */
void
fdp_dispatch_fault(struct fdp_pool *p, struct fdp_worker *w, const char *why)
{
    fdp_log(FDP_LOG_ERROR, 0, "worker %d (pid %ld) is faulty: %s; killing it",
            w->slot.id, (long) w->slot.pid, why);
    fdp_dispatch_drop_channel(p, w);
    w->slot.state = FDP_W_EXITING;
    w->ordered = 1;
    if (w->slot.pid > 0) {          /* a process this master forked */
        (void) kill(w->slot.pid, SIGKILL);
    }
}


static int
worker_can_take(const struct fdp_worker *w)
{
    return w->slot.state == FDP_W_RUNNING
           && (w->pool->simulated || (w->ch.fd >= 0 && w->nfree > 0))
           && w->slot.active < w->slot.capacity;
}


/* The first worker that can take a connection, or -EAGAIN: none now. */
static int
first_free(struct fdp_pool *p)
{
    int i;

    for (i = 0; i < p->nworkers; i++) {
        if (worker_can_take(&p->workers[i])) {
            return i;
        }
    }
    return -EAGAIN;
}


void
fdp_dispatch_send(struct fdp_pool *p, struct fdp_worker *w)
{
    int r, k;

    if (w->nbatch == 0) {
        return;
    }
    r = fdp_chan_send_keep(&w->ch, FDP_MSG_CONN, (unsigned) w->nbatch,
                           w->batch, (size_t) w->nbatch * sizeof(w->batch[0]),
                           w->batchfds, w->nbatch, w->batchkeep);
    if (r == 0) {
        w->nbatch = 0;
        w->batchkeep = 0;
        if (w->ch.head != NULL) {
            (void) fdp_loop_mod(&p->loop, &w->io, EPOLLIN | EPOLLOUT);
        }
        return;
    }
    /* The worker is gone or stuck: its connections go back to the queue
     * front, to be handed to another worker. */
    fdp_log(FDP_LOG_WARN, -r, "cannot hand %d connection(s) to worker %d",
            w->nbatch, w->slot.id);
    for (k = w->nbatch - 1; k >= 0; k--) {
        uint32_t i = (uint32_t) (w->batch[k].id & 0xffff);

        if (p->qlen < FDP_QUEUE_MAX) {
            struct fdp_pending *q;

            p->qhead = (p->qhead + FDP_QUEUE_MAX - 1) % FDP_QUEUE_MAX;
            q = &p->queue[p->qhead];
            memset(q, 0, sizeof(*q));
            q->fd = w->batchfds[k];
            q->kept = w->inflight[i].kept;
            q->listener = w->batch[k].listener;
            /* Keep what identifies it (a PROXY client, the TCP peer). */
            if (w->inflight[i].peerlen > 0) {
                memcpy(&q->peer, w->inflight[i].peer, w->inflight[i].peerlen);
                q->peerlen = w->inflight[i].peerlen;
                q->proxied = 1;
            } else if (w->inflight[i].by_peer) {
                memcpy(&q->peer, &w->inflight[i].rpeer,
                       sizeof(w->inflight[i].rpeer));
                q->peerlen = w->inflight[i].rpeer.sin6_family == AF_INET
                             ? sizeof(struct sockaddr_in)
                             : sizeof(struct sockaddr_in6);
            }
            p->qlen++;              /* its per-address count with it */
        } else {
            fdp_acceptf_inflight_done(p, &w->inflight[i]);
            if (w->inflight[i].kept != NULL) {
                kept_drop(p, w->inflight[i].kept);
            } else {
                fdp_close(&w->batchfds[k]);
            }
        }
        if (w->inflight[i].offer) {     /* never reached it: no offer */
            __atomic_store_n(&w->claim[w->inflight[i].offer - 1], 0,
                             __ATOMIC_SEQ_CST);
            w->inflight[i].offer = 0;
            p->noffers--;
            w->noffers--;
        }
        w->inflight[i].kept = NULL;
        w->inflight[i].id = 0;
        w->freeidx[w->nfree++] = i;
        w->slot.active--;
    }
    w->nbatch = 0;
    w->batchkeep = 0;
    fdp_dispatch_fault(p, w, "its channel refused a message");
}


void
fdp_dispatch_flush(struct fdp_pool *p)
{
    int i;

    for (i = 0; i < p->nworkers; i++) {
        if (p->workers[i].nbatch > 0) {
            fdp_dispatch_send(p, &p->workers[i]);
        }
    }
}


/* Put c in worker idx's next CONN message. Takes ownership of c->fd. */
static void
hand(struct fdp_pool *p, int idx, const struct fdp_pending *c, int offer)
{
    struct fdp_worker *w = &p->workers[idx];
    uint32_t k = w->freeidx[--w->nfree];
    uint64_t id = (++p->conn_seq << 16) | k;

    w->inflight[k].id = id;
    w->inflight[k].since_us = fdp_now_us();
    if (c->since_us) {
        double lat = (double) (w->inflight[k].since_us - c->since_us) / 1e6;
        int b;

        for (b = 0; b < FDP_LAT_BUCKETS - 1 && lat > fdp_lat_bounds[b]; b++) {
        }
        p->lat_counts[b]++;
        p->lat_sum += lat;
        p->lat_count++;
    }
    w->inflight[k].escalated = 0;
    w->inflight[k].slow_at = 0;
    w->inflight[k].offer = offer;
    w->inflight[k].listener = c->listener;
    w->inflight[k].kept = c->kept;
    /* Remember the socket's identity for a later PARK: a plain TCP
     * connection by the peer address accept4 gave (no syscall on the hot
     * path), anything else by fstat's dev/ino (a kept one comes back
     * without an fd: nothing to check). */
    w->inflight[k].by_peer = 0;
    if (!c->proxied && (c->peer.ss_family == AF_INET
                        || c->peer.ss_family == AF_INET6)
        && c->peerlen <= sizeof(w->inflight[k].rpeer)) {
        memset(&w->inflight[k].rpeer, 0, sizeof(w->inflight[k].rpeer));
        memcpy(&w->inflight[k].rpeer, &c->peer, c->peerlen);
        w->inflight[k].by_peer = 1;
    } else if (c->kept == NULL) {
        struct stat st;

        if (fstat(c->fd, &st) == 0) {
            w->inflight[k].ino = (uint64_t) st.st_ino;
            w->inflight[k].dev = (uint64_t) st.st_dev;
        }
    }
    w->batch[w->nbatch].id = id;
    w->batch[w->nbatch].listener = c->listener;
    w->batch[w->nbatch].flags = c->kept != NULL ? FDP_CONN_KEPT : 0;
    if (offer) {
        /* Its claim word holds the id before the worker can see it. */
        __atomic_store_n(&w->claim[offer - 1], id, __ATOMIC_SEQ_CST);
        w->batch[w->nbatch].flags |= FDP_CONN_OFFER
                                     | FDP_CONN_WORD(offer - 1);
        p->noffers++;
        w->noffers++;
        p->offers++;
    }
    w->batch[w->nbatch].peerlen = 0;
    w->inflight[k].peerlen = 0;
    if (c->proxied && c->peerlen <= sizeof(w->batch[0].peer)) {
        w->batch[w->nbatch].peerlen = c->peerlen;
        memcpy(w->batch[w->nbatch].peer, &c->peer, c->peerlen);
        w->inflight[k].peerlen = c->peerlen;
        memcpy(w->inflight[k].peer, &c->peer, c->peerlen);
    }
    w->batchfds[w->nbatch] = c->fd;
    if (c->kept != NULL) {
        w->batchkeep |= 1u << w->nbatch;
    } else {
        w->batchkeep &= ~(1u << w->nbatch);
    }
    w->nbatch++;
    w->slot.active++;
    fdp_slot_update_busy(&w->slot, fdp_wall());
    if (w->nbatch == FDP_BATCH_MAX) {
        fdp_dispatch_send(p, w);
    }
}


static void
log_fallback(struct fdp_pool *p, const char *why)
{
    uint64_t now = p->loop.now;

    p->fallbacks++;
    if (now - p->fallback_logged_ms >= 1000) {
        fdp_log(FDP_LOG_WARN, 0, "policy %s: %s; using first_free "
                "(%llu more since the last report)", fdp_policy_name(p), why,
                (unsigned long long) p->fallback_unlogged);
        p->fallback_logged_ms = now;
        p->fallback_unlogged = 0;
    } else {
        p->fallback_unlogged++;
    }
}


/*
 * The dispatch decision for c, shared by the master and fdpool.sim: the
 * policy's pick, checked. Returns a worker index, or -EAGAIN to keep c
 * queued. *fallback is set when the policy failed and first_free chose.
 */
int
fdp_pool_choose(struct fdp_pool *p, const struct fdp_pending *c,
                int *fallback)
{
    int idx = fdp_policy_pick(p, c);

    *fallback = 0;
    if (idx == -EAGAIN) {
        return -EAGAIN;
    }
    if (idx >= 0 && !worker_can_take(&p->workers[idx])) {
        /* A full or unready pick when someone else has room is the
         * policy's mistake; when nobody has room, keep it queued. */
        if (first_free(p) < 0) {
            return -EAGAIN;
        }
        log_fallback(p, "picked a worker that cannot take a connection");
        idx = -EINVAL;
    }
    if (idx == -EINVAL) {
        *fallback = 1;
        idx = first_free(p);
    }
    return idx;
}


/* Try to hand c to a worker. Returns 1 when handed, 0 to keep it. */
static int
dispatch_one(struct fdp_pool *p, const struct fdp_pending *c)
{
    int fallback, idx = fdp_pool_choose(p, c, &fallback);

    if (idx < 0) {
        return 0;
    }
    hand(p, idx, c, 0);
    return 1;
}


/*
 * Strict prefork's prefetch (--concurrency 1; docs/ARCHITECTURE.md,
 * "Strict prefork's prefetch"). When no worker is free, the queue's head
 * is offered to a busy worker: a CONN it starts only when its own
 * connection is over, so it does not sleep between the two. The master
 * keeps its copy of the socket (a record on p->kept, as a parked one's)
 * and writes the offer's id in a free one of the worker's claim words
 * (shared memory); the worker claims it with a compare-and-swap of the
 * id to 0 before starting it, and the master takes an offer back the
 * same way: whoever swaps first has it, so the connection is served by
 * one worker or goes back to the queue's front, never both. Taken back:
 * every unclaimed one when a worker is free and nothing else waits; at
 * the tick, one unclaimed for OFFER_WAIT_MS whose worker is in an older
 * connection than another worker with room (offers_take_back); those of
 * a worker that died or is told to stop.
 */
#define OFFER_WAIT_MS 100


/* A claim word of w no offer uses (its number + 1), or 0. */
static int
offer_word(const struct fdp_worker *w)
{
    int used = 0, k;

    for (k = 0; k < w->ncap && w->noffers > 0; k++) {
        if (w->inflight[k].id != 0 && w->inflight[k].offer) {
            used |= 1 << (w->inflight[k].offer - 1);
        }
    }
    for (k = 0; k < FDP_CLAIM_WORDS; k++) {
        if (!(used & (1 << k))) {
            return k + 1;
        }
    }
    return 0;
}


/* w's offers the master has not seen claimed. */
static inline int
offers_waiting(const struct fdp_worker *w)
{
    return w->noffers;
}


/* The offers w may hold now: FDP_PREFETCH_SHALLOW, or its most (up to
 * FDP_CLAIM_WORDS - 1) while more connections wait in the queue than
 * every worker could hold that deep (then the one offered would wait in
 * the queue behind more requests than it does behind a worker's: the
 * deep offers save a CONN and a worker's sleep per cycle of requests,
 * docs/performance.md). */
static inline int
offer_depth(const struct fdp_pool *p, const struct fdp_worker *w)
{
    return w->prefetch > FDP_PREFETCH_SHALLOW
           && p->qlen > p->nworkers * FDP_CLAIM_WORDS
           ? w->prefetch : w->prefetch < FDP_PREFETCH_SHALLOW
           ? w->prefetch : FDP_PREFETCH_SHALLOW;
}


/* The worker to offer a connection to: a busy one with room for an
 * offer (fewer than its prefetch depth waiting), the one with the
 * fewest, then the one handed a connection last (the least likely to be
 * in a long request). -1: none. */
static int
offer_target(struct fdp_pool *p)
{
    int i, k, best = -1, least = 0;
    uint64_t t = 0;

    if (!fdp_policy_any_worker(p)) {
        return -1;
    }
    for (i = 0; p->max_workers > 0 && i < p->nworkers; i++) {
        /* Workers on demand: a connection that waits is what starts a
         * worker; none is offered while a slot could still get one. */
        if (p->workers[i].off || p->workers[i].slot.pid <= 0
            || p->workers[i].slot.state == FDP_W_STARTING) {
            return -1;
        }
    }
    for (i = 0; i < p->nworkers; i++) {
        struct fdp_worker *w = &p->workers[i];

        if (!w->prefetch || w->slot.state != FDP_W_RUNNING || w->ch.fd < 0
            || w->slot.active < 1 || w->slot.active > offer_depth(p, w)
            || w->nfree == 0) {
            continue;
        }
        if (p->offer_batch && w->nbatch == 0 && offers_waiting(w) > 0) {
            continue;               /* topped up all at once, later */
        }
        if (best >= 0 && w->slot.active > least) {
            continue;
        }
        if (best >= 0 && w->slot.active < least) {
            t = 0;
        }
        for (k = 0; k < w->ncap; k++) {
            if (w->inflight[k].id != 0 && w->inflight[k].since_us >= t) {
                t = w->inflight[k].since_us;
                best = i;
                least = w->slot.active;
            }
        }
    }
    return best;
}


/* Offer c to worker idx. Takes ownership of c->fd; 0 when it could not
 * (c unchanged). */
static int
offer(struct fdp_pool *p, int idx, struct fdp_pending *c)
{
    struct fdp_worker *w = &p->workers[idx];
    int j = offer_word(w);

    if (j == 0) {
        return 0;
    }
    if (c->kept == NULL) {
        /* The master's copy stays, in a record as a parked one's; not
         * watched until its first PARK. */
        struct fdp_held *h = calloc(1, sizeof(*h));

        if (h == NULL) {
            return 0;
        }
        h->c = *c;
        h->kind = HELD_PARKED;
        h->pool = p;
        h->unwatched = 1;
        h->io.fd = -1;
        fdp_timer_init(&h->timer, held_timeout, h);
        h->knext = p->kept;
        if (p->kept) {
            p->kept->kprev = h;
        }
        p->kept = h;
        c->kept = h;
    }
    hand(p, idx, c, j);
    return 1;
}


/* w's offer at k: claimed (the worker's now: 0) or taken back (to the
 * queue's front, or closed when !requeue: 1). */
static int
offer_back(struct fdp_pool *p, struct fdp_worker *w, uint32_t k, int requeue)
{
    struct fdp_inflight *f = &w->inflight[k];
    uint64_t want = f->id;
    struct fdp_pending c;

    if (!__atomic_compare_exchange_n(&w->claim[f->offer - 1], &want, 0, 0,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        f->offer = 0;               /* claimed: it starts (or started) */
        f->since_us = fdp_now_us();
        p->noffers--;
        w->noffers--;
        return 0;
    }
    f->offer = 0;
    p->noffers--;
    w->noffers--;
    memset(&c, 0, sizeof(c));
    c.fd = f->kept->c.fd;
    c.kept = f->kept;
    c.listener = f->listener;
    c.cpu = -1;
    if (f->peerlen > 0) {
        memcpy(&c.peer, f->peer, f->peerlen);
        c.peerlen = f->peerlen;
        c.proxied = 1;
    } else if (f->by_peer) {
        memcpy(&c.peer, &f->rpeer, sizeof(f->rpeer));
        c.peerlen = f->rpeer.sin6_family == AF_INET
                    ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    }
    if (requeue && p->qlen < FDP_QUEUE_MAX) {
        p->qhead = (p->qhead + FDP_QUEUE_MAX - 1) % FDP_QUEUE_MAX;
        p->queue[p->qhead] = c;
        p->qlen++;
        p->offers_back++;
    } else {
        fdp_acceptf_inflight_done(p, f);
        kept_drop(p, c.kept);
    }
    f->kept = NULL;
    f->id = 0;
    w->freeidx[w->nfree++] = k;
    w->slot.active--;
    fdp_slot_update_busy(&w->slot, fdp_wall());
    return 1;
}


/* Take back w's offers it has not claimed (its death, its stop): to the
 * queue (requeue) or closed. Each goes to the queue's front, so the
 * newest first (by its hand-off's sequence number, not its slot's
 * number): the oldest ends at the front, they keep their order. */
void
fdp_dispatch_offers_back(struct fdp_pool *p, struct fdp_worker *w,
                         int requeue)
{
    for (;;) {
        uint32_t k, newest = 0;
        uint64_t seq = 0;
        int found = 0;

        for (k = 0; w->inflight != NULL && w->claim != NULL
             && k < (uint32_t) w->ncap; k++) {
            if (w->inflight[k].id != 0 && w->inflight[k].offer
                && (!found || (w->inflight[k].id >> 16) > seq)) {
                newest = k;
                seq = w->inflight[k].id >> 16;
                found = 1;
            }
        }
        if (!found) {
            return;
        }
        (void) offer_back(p, w, newest, requeue);   /* ->offer is 0 now */
    }
}


/* Note the offers w has claimed (after its DONE or PARK): their time
 * runs from now for --timeout and --slow. */
void
fdp_dispatch_offers_settle(struct fdp_pool *p, struct fdp_worker *w)
{
    uint32_t k;

    for (k = 0; k < (uint32_t) w->ncap && w->noffers > 0; k++) {
        struct fdp_inflight *f = &w->inflight[k];

        if (f->id != 0 && f->offer
            && __atomic_load_n(&w->claim[f->offer - 1], __ATOMIC_SEQ_CST)
               != f->id) {
            f->offer = 0;
            f->since_us = fdp_now_us();
            p->noffers--;
            w->noffers--;
        }
    }
}


/* The latest hand-off time of w's connections (offers too: newest) or
 * of those it serves (!offers_too: its current), 0 when none. */
static uint64_t
since_of(const struct fdp_worker *w, int offers_too)
{
    uint64_t t = 0;
    int k;

    for (k = 0; k < w->ncap; k++) {
        if (w->inflight[k].id != 0 && (offers_too || !w->inflight[k].offer)
            && w->inflight[k].since_us > t) {
            t = w->inflight[k].since_us;
        }
    }
    return t;
}


/* Would another worker than w take an offer of w's sooner: one free, or
 * one with room for an offer whose connection came after w's current
 * (the one held up longer is the likelier slow one) and with fewer
 * connections than w (else the offer moves between two busy workers,
 * each holding one, at every tick: a CONN each way, and its turn lost)? */
static int
better_than(struct fdp_pool *p, const struct fdp_worker *w, uint64_t cur)
{
    int i;

    for (i = 0; i < p->nworkers; i++) {
        const struct fdp_worker *v = &p->workers[i];

        if (v == w || !v->prefetch || v->slot.state != FDP_W_RUNNING
            || v->ch.fd < 0 || v->nfree == 0) {
            continue;
        }
        if (worker_can_take(v)
            || (v->slot.active <= offer_depth(p, v)
                && v->slot.active < w->slot.active
                && since_of(v, 1) > cur)) {
            return 1;
        }
    }
    return 0;
}


/* Take back unclaimed offers: one when all is set (a worker is free
 * and the queue empty), else each one older than OFFER_WAIT_MS whose
 * worker is still in an older connection than another worker with room
 * (better_than): a slow handler holds an offer back one tick or two,
 * where another worker would serve it sooner. Never one whose CONN may
 * still sit in the channel's queue (its fd is borrowed from the
 * record). */
static int
offers_take_back(struct fdp_pool *p, int all)
{
    /* all: one at a time, the one offered first (the lowest hand-off
     * sequence number) of every worker's: the free worker serves it now,
     * the younger ones keep their places behind their workers' current
     * connections, so connections start in the order they were offered
     * (the lowest slot could be a younger one: slots are reused) */
    uint64_t now = fdp_now_us(), seq = UINT64_MAX;
    int i, n = 0, oldest = -1;
    uint32_t k, ok = 0;

    for (i = 0; i < FDP_SLOTS && p->noffers > 0; i++) {
        struct fdp_worker *w = &p->workers[i];
        uint64_t cur;

        if (w->inflight == NULL || w->claim == NULL || w->ch.head != NULL
            || w->nbatch > 0) {
            continue;
        }
        cur = since_of(w, 0);
        for (k = 0; k < (uint32_t) w->ncap; k++) {
            struct fdp_inflight *f = &w->inflight[k];

            if (f->id == 0 || !f->offer) {
                continue;
            }
            if (all) {
                if ((f->id >> 16) < seq) {
                    seq = f->id >> 16;
                    oldest = i;
                    ok = k;
                }
            } else if (now - f->since_us >= OFFER_WAIT_MS * 1000 && cur != 0
                       && better_than(p, w, cur)) {
                n += offer_back(p, w, k, 1);
                cur = since_of(w, 0);
            }
        }
    }
    if (oldest >= 0 && !offer_back(p, &p->workers[oldest], ok, 1)) {
        return offers_take_back(p, 1);  /* claimed meanwhile: the next */
    }
    return oldest >= 0 ? 1 : n;
}


/* The tick: offers held back by a slow handler go to the next free
 * worker. */
void
fdp_dispatch_offers_tick(struct fdp_pool *p)
{
    if (p->noffers > 0 && offers_take_back(p, 0) > 0) {
        fdp_dispatch_queue(p);
    }
}


void
fdp_dispatch_queue(struct fdp_pool *p)
{
    int idx;

    for (;;) {
        while (p->qlen > 0 && first_free(p) >= 0) {
            struct fdp_pending *c = &p->queue[p->qhead];

            if (!dispatch_one(p, c)) {
                break;
            }
            c->fd = -1;
            p->qhead = (p->qhead + 1) % FDP_QUEUE_MAX;
            p->qlen--;
        }
        /* A free worker and nothing queued: an offer waiting behind a
         * busy worker's connection goes there instead. */
        if (p->qlen > 0 || p->noffers == 0 || first_free(p) < 0
            || offers_take_back(p, 1) == 0) {
            break;
        }
    }
    while (p->qlen > 0 && p->concurrency == 1
           && (idx = offer_target(p)) >= 0
           && offer(p, idx, &p->queue[p->qhead])) {
        p->queue[p->qhead].fd = -1;
        p->qhead = (p->qhead + 1) % FDP_QUEUE_MAX;
        p->qlen--;
    }
    fdp_dispatch_flush(p);
    if (!p->stopping && !p->accepting && p->qlen < FDP_QUEUE_MAX / 2
        && !p->accept_held && fdp_now_ms() >= p->accept_paused_until) {
        fdp_dispatch_accepting(p, 1);
    }
}


static void
queue_or_dispatch(struct fdp_pool *p, struct fdp_pending *c)
{
    if (p->qlen > 0 || !dispatch_one(p, c)) {
        if (p->qlen == FDP_QUEUE_MAX) {
            /* cannot happen: accept stops first */
            fdp_dispatch_pending_close(p, c);
            return;
        }
        p->queue[(p->qhead + p->qlen) % FDP_QUEUE_MAX] = *c;
        p->qlen++;
        if (p->qlen == FDP_QUEUE_MAX) {
            fdp_dispatch_accepting(p, 0);
        }
    }
}


/* A connection the accept filter found ready: dispatched as if just
 * accepted. Takes ownership of c->fd. */
void
fdp_dispatch_admit(struct fdp_pool *p, struct fdp_pending *c)
{
    if (p->qlen == FDP_QUEUE_MAX) {
        /* Every worker full and the queue too: no room to wait in. */
        p->af_closed[FDP_AF_OVERFLOW]++;
        fdp_acceptf_ip_release(p, &c->peer, c->listener);
        fdp_dispatch_pending_close(p, c);
        return;
    }
    queue_or_dispatch(p, c);
    if (p->qlen > 0) {
        fdp_dispatch_queue(p);
    } else {
        fdp_dispatch_flush(p);
    }
}






/*
 * Bytes on a connection of a `proxy` listener: peek, parse, consume
 * exactly the header, and dispatch with the client's address. A bad
 * header closes the connection.
 */
static void
proxywait_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_held *x = io->data;
    struct fdp_pool *p = x->pool;
    uint8_t buf[FDP_PROXY_MAX];
    struct sockaddr_storage src;
    socklen_t slen;
    ssize_t n;
    int r;

    (void) loop;
    do {
        n = recv(x->c.fd, buf, sizeof(buf), MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
    }
    r = n > 0 ? fdp_proxy_parse(buf, (size_t) n, &src, &slen) : -EINVAL;
    if (r == 0 && (size_t) n < sizeof(buf)
        && !(ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        return;                     /* wait for the rest */
    }
    /* A part of a header and then the peer's FIN: the rest never comes,
     * close now rather than at PROXY_TIMEOUT_MS. */
    if (r <= 0 || recv(x->c.fd, buf, (size_t) r, 0) != r) {
        fdp_log(FDP_LOG_DEBUG, 0, "bad or missing PROXY header on %s; closed",
                p->listeners[x->c.listener].bound);
        held_free(p, x);
        return;
    }
    if (slen > 0) {
        memcpy(&x->c.peer, &src, slen);
        x->c.peerlen = slen;
        x->c.proxied = 1;
    }
    (void) fdp_loop_del(&p->loop, &x->io);
    {
        struct fdp_pending c = x->c;

        x->c.fd = -1;
        held_free(p, x);
        if (!fdp_acceptf_hold(p, &c)) {
            queue_or_dispatch(p, &c);
        }
    }
    fdp_dispatch_flush(p);
}






static void
proxywait_start(struct fdp_pool *p, struct fdp_pending *c)
{
    struct fdp_held *x = calloc(1, sizeof(*x));

    if (x == NULL) {
        fdp_close(&c->fd);
        return;
    }
    x->c = *c;
    /* Edge-triggered: a partial header waits for more bytes instead of
     * waking the master again and again. */
    if (held_start(p, x, HELD_PROXY, proxywait_io,
                   EPOLLIN | EPOLLRDHUP | EPOLLET, PROXY_TIMEOUT_MS) < 0) {
        fdp_close(&x->c.fd);
        free(x);
    }
}


void
fdp_dispatch_listener_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_listener *l = io->data;
    struct fdp_pool *p = l->pool;
    int n;

    (void) loop;
    (void) ev;
    for (n = 0; n < ACCEPT_BURST && p->accepting; n++) {
        struct fdp_pending c;
        int fd;

        c.peerlen = sizeof(c.peer);
        fd = accept4(l->fd, (struct sockaddr *) &c.peer, &c.peerlen,
                     SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a tick rather
                 * than spin on a listener that stays readable. */
                uint64_t now = fdp_now_ms();

                if (now - p->emfile_logged_ms >= 1000) {
                    fdp_log(FDP_LOG_ERROR, errno, "accept4() failed on %s; "
                            "pausing accept for 100 ms", l->bound);
                    p->emfile_logged_ms = now;
                }
                p->accept_paused_until = now + FDP_TICK_MS;
                fdp_dispatch_accepting(p, 0);
                break;
            }
            fdp_log(FDP_LOG_ERROR, errno, "accept4() failed on %s", l->bound);
            break;
        }
        p->accepted++;
        c.fd = fd;
        c.kept = NULL;
        c.listener = (uint32_t) (l - p->listeners);
        c.proxied = 0;
        c.since_us = fdp_now_us();
        if (fdp_acceptf_ip_take(p, &c.peer, c.listener) < 0) {
            fdp_close(&c.fd);
            continue;
        }
        if (l->proxy) {
            proxywait_start(p, &c);
            continue;
        }
        if (fdp_acceptf_hold(p, &c)) {
            continue;
        }
        queue_or_dispatch(p, &c);
    }
    if (p->qlen > 0) {
        fdp_dispatch_queue(p);
    } else {
        fdp_dispatch_flush(p);
    }
}






/* The parked registration: edge-triggered and never changed while the
 * master keeps the socket. An edge (new bytes, a hang-up) while the
 * connection is queued or a worker's is only noted (edge); the PARK
 * that brings it back then looks at once (a one-byte MSG_PEEK), so a
 * request that came before the PARK is not missed, and a round trip
 * costs no epoll_ctl (a one-shot registration needed one per PARK). */
#define PARKED_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLET)


/*
 * A parked connection has bytes (a next request): dispatch it again, as
 * if just accepted. A hang-up without bytes just closes it. The master
 * keeps its copy of the socket and its registration (disarmed by the
 * one-shot event) while a worker serves it: the next PARK carries no fd
 * and costs one epoll_ctl, where passing the fd back cost a check of
 * its identity, an epoll_ctl in and one out, and a close.
 */
static void
parked_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_held *k = io->data;
    struct fdp_pool *p = k->pool;
    struct fdp_pending c;
    int ready = -1;

    (void) loop;
    if (!k->armed) {
        k->edge = 1;                /* queued or a worker's: see the PARK */
        return;
    }
    if (p->stopping) {
        held_free(p, k);
        return;
    }
    if (ev == 0) {
        /* From the PARK, after an edge while it was away: one look. */
        ready = fdp_acceptf_parked_look(p, k->c.fd, k->c.listener);
        if (ready == -EAGAIN) {
            return;
        }
        if (ready < 0) {
            p->closed_by_peer++;
            held_free(p, k);
            return;
        }
    } else if (!(ev & EPOLLIN)
               || (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        /* Bytes and a hang-up together (a last request, then FIN) still
         * go to a worker; a hang-up or a reset alone closes it here. */
        char b;
        ssize_t n = recv(k->c.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

        if (n < 0 && (errno == EAGAIN || errno == EINTR)
            && (ev & EPOLLIN)) {
            return;                 /* nothing yet: the next edge */
        }
        if (n <= 0) {
            p->closed_by_peer++;
            held_free(p, k);
            return;
        }
    }
    c = k->c;
    c.kept = NULL;
    c.since_us = fdp_now_us();
    if (!c.proxied && k->by_peer) {
        /* TCP: the peer address same_socket checked at PARK time (no
         * getpeername per round trip) */
        memset(&c.peer, 0, sizeof(c.peer));
        memcpy(&c.peer, &k->rpeer, sizeof(k->rpeer));
        c.peerlen = k->rpeer.sin6_family == AF_INET
                    ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    } else if (!c.proxied) {
        c.peerlen = sizeof(c.peer);
        if (getpeername(c.fd, (struct sockaddr *) &c.peer, &c.peerlen) < 0) {
            p->closed_by_peer++;
            held_free(p, k);
            return;
        }
    }
    if (ready >= 0 ? ready : fdp_acceptf_dispatchable(p, &c)) {
        /* The common case: a whole request is there. The record goes
         * with the connection (queued, then in flight) and owns fd; its
         * timer stays (lazy: see held_arm). */
        held_unlink(p, k);
        k->edge = 0;
        c.kept = k;
    } else {
        /* A partial head (or a hang-up the filter sees): the accept
         * filter takes the socket as it takes a new one. */
        (void) fdp_loop_del(&p->loop, &k->io);
        k->c.fd = -1;
        held_free(p, k);
        if (fdp_acceptf_hold(p, &c)) {
            return;
        }
    }
    if (p->qlen > 0 || !dispatch_one(p, &c)) {
        if (p->qlen == FDP_QUEUE_MAX) {
            fdp_dispatch_pending_close(p, &c);
            return;
        }
        p->queue[(p->qhead + p->qlen) % FDP_QUEUE_MAX] = c;
        p->qlen++;
        if (p->qlen == FDP_QUEUE_MAX) {
            /* As queue_or_dispatch: no accept until there is room, or a
             * new connection whose request is already there (deferred
             * accept) would find the queue full and be closed unanswered
             * (hostile-mix, strict prefork: 2500 parked keep-alive
             * clients asking at once). */
            fdp_dispatch_accepting(p, 0);
        }
    }
    if (p->qlen > 0) {
        fdp_dispatch_queue(p);      /* offers, in strict prefork */
    } else {
        fdp_dispatch_flush(p);
    }
}




/*
 * Is fd the socket recorded at hand-off? For TCP: the same peer address
 * and a local port of the listener it came in on; else dev/ino. Returns
 * 1 when it is, 0 when it is something else (the worker's fault), and
 * -ENOTCONN when it is a connected-then-dead socket: a client that reset or
 * closed has no peer address any more (getpeername: ENOTCONN), which is
 * no fault of the worker's; such a socket is only ever closed.
 */
static int
same_socket(struct fdp_pool *p, const struct fdp_inflight *f, int fd)
{
    struct sockaddr_storage ss, ls;
    socklen_t len = sizeof(ss), llen = sizeof(ls);
    struct stat st;

    if (!f->by_peer) {
        return fstat(fd, &st) == 0 && (uint64_t) st.st_ino == f->ino
               && (uint64_t) st.st_dev == f->dev;
    }
    if (getpeername(fd, (struct sockaddr *) &ss, &len) < 0) {
        return errno == ENOTCONN ? -ENOTCONN : 0;
    }
    if (getsockname(fd, (struct sockaddr *) &ls, &llen) < 0
        || ss.ss_family != f->rpeer.sin6_family) {
        return 0;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *) &ss;
        const struct sockaddr_in *b = (const struct sockaddr_in *) &f->rpeer;

        if (a->sin_port != b->sin_port
            || a->sin_addr.s_addr != b->sin_addr.s_addr) {
            return 0;
        }
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *) &ss;

        if (a->sin6_port != f->rpeer.sin6_port
            || memcmp(&a->sin6_addr, &f->rpeer.sin6_addr, 16) != 0) {
            return 0;
        }
    }
    /* The local side must be the listener's port (the bound address may
     * be a wildcard). */
    {
        const struct fdp_listener *l = &p->listeners[f->listener];
        const char *colon = strrchr(l->bound, ':');
        unsigned port = ls.ss_family == AF_INET
                        ? ntohs(((struct sockaddr_in *) &ls)->sin_port)
                        : ntohs(((struct sockaddr_in6 *) &ls)->sin6_port);

        if (l->bound[0] != '\0' && colon != NULL
            && strtoul(colon + 1, NULL, 10) != port) {
            return 0;
        }
    }
    return 1;
}


/*
 * PARK: a worker hands back an idle connection it was given. Accepted
 * only for an id in flight on that worker and the very socket handed
 * (see same_socket); anything else makes the worker faulty. A socket
 * whose client has gone (reset, closed) counts as done and is closed.
 * From its first PARK on, the master keeps its copy of the socket (the
 * CONN entries say FDP_CONN_KEPT): later PARKs of it carry no fd, and
 * it is watched again with one epoll_ctl.
 */
static void park_lost(struct fdp_pool *p, struct fdp_worker *w,
                      const struct fdp_park_entry *e);
static void park_one(struct fdp_pool *p, struct fdp_worker *w,
                     const struct fdp_park_entry *e, int fd);


void
fdp_dispatch_park(struct fdp_pool *p, struct fdp_worker *w, struct fdp_msg *m)
{
    const struct fdp_park_entry *e = (const struct fdp_park_entry *) m->u.bytes;
    int fd = m->nfds == 1 ? m->fds[0] : -1;
    unsigned i;

    m->fds[0] = -1;
    m->nfds = 0;
    if (m->lost && fd < 0) {
        park_lost(p, w, e);
        return;
    }
    /* Several entries (kept connections only: no fd) when the worker
     * held its PARKs back while it had more to serve. */
    for (i = 0; i < m->h.count && w->ch.fd >= 0; i++) {
        park_one(p, w, &e[i], i == 0 ? fd : -1);
    }
}


/*
 * A PARK whose fd the kernel dropped on its way here (the master is at
 * its RLIMIT_NOFILE: MSG_CTRUNC). The connection is gone (the worker
 * closed its copy when it sent it): it counts as served and over, its
 * --max-conns-per-ip count is given back, and it is logged at most once
 * a second. Not the worker's fault -- unless the id is not one it holds
 * without a kept copy, which a PARK with an fd never names.
 */
static void
park_lost(struct fdp_pool *p, struct fdp_worker *w,
          const struct fdp_park_entry *e)
{
    static uint64_t last_ms;
    static unsigned long unsaid;
    uint32_t k = (uint32_t) (e->id & 0xffff);
    uint64_t now = fdp_now_ms();
    struct fdp_inflight f;

    if (e->id == 0 || k >= (uint32_t) w->ncap || w->inflight[k].id != e->id
        || w->inflight[k].kept != NULL || fdp_dispatch_unclaimed(w, k)) {
        fdp_dispatch_fault(p, w, "PARK of a connection it was not given");
        return;
    }
    f = w->inflight[k];
    fdp_dispatch_served(w, k, e->bytes_in, e->bytes_out);
    fdp_slot_update_busy(&w->slot, fdp_wall());
    fdp_acceptf_inflight_done(p, &f);
    unsaid++;
    if (last_ms == 0 || now - last_ms >= 1000) {
        fdp_log(FDP_LOG_ERROR, EMFILE, "%lu keep-alive connection(s) "
                "closed: the master is out of file descriptors to park "
                "them", unsaid);
        last_ms = now;
        unsaid = 0;
    }
}


static void
park_one(struct fdp_pool *p, struct fdp_worker *w,
         const struct fdp_park_entry *e, int fd)
{
    uint32_t k = (uint32_t) (e->id & 0xffff);
    struct fdp_held *pk;
    struct fdp_inflight f;
    int same = 0, known;
    uint64_t idle = e->idle_ms ? e->idle_ms : 15000;
    known = k < (uint32_t) w->ncap && w->inflight[k].id == e->id
            && e->id != 0;
    if (known && fdp_dispatch_unclaimed(w, k)) {
        fdp_close(&fd);
        fdp_dispatch_fault(p, w, "PARK of an offer it had not claimed");
        return;
    }
    if (known && w->inflight[k].kept != NULL) {
        /* Kept: the id alone; an fd with it breaks the protocol. */
        if (fd >= 0) {
            fdp_close(&fd);
            fdp_dispatch_fault(p, w, "PARK with an fd of a kept connection");
            return;
        }
        f = w->inflight[k];
        pk = f.kept;
        w->inflight[k].kept = NULL;
        fdp_dispatch_served(w, k, e->bytes_in, e->bytes_out);
        fdp_slot_update_busy(&w->slot, fdp_wall());
        if (pk->unwatched && !p->stopping) {
            /* First parked after an offer: watched from now on. */
            pk->by_peer = f.by_peer;
            pk->rpeer = f.rpeer;
            pk->io.fd = pk->c.fd;
            pk->io.cb = parked_io;
            pk->io.data = pk;
            if (fdp_loop_add(&p->loop, &pk->io, PARKED_EVENTS) < 0) {
                fdp_acceptf_inflight_done(p, &f);
                kept_drop(p, pk);
                return;
            }
            pk->unwatched = 0;
        } else if (p->stopping) {
            fdp_acceptf_inflight_done(p, &f);
            kept_drop(p, pk);
            return;
        }
        held_arm(p, pk, idle);
        if (pk->edge) {
            /* Bytes (or a hang-up) came while it was away: look now. */
            pk->edge = 0;
            parked_io(&p->loop, &pk->io, 0);
        }
        return;
    }
    if (known && fd >= 0) {
        same = same_socket(p, &w->inflight[k], fd);
    }
    if (same == 0) {
        fdp_close(&fd);
        fdp_dispatch_fault(p, w, "PARK of a connection it was not given");
        return;
    }
    f = w->inflight[k];
    fdp_dispatch_served(w, k, e->bytes_in, e->bytes_out);
    fdp_slot_update_busy(&w->slot, fdp_wall());
    if (same < 0) {
        p->closed_by_peer++;
    }
    pk = same < 0 || p->stopping ? NULL : calloc(1, sizeof(*pk));
    if (pk == NULL) {
        /* Over here: the connection ends, its per-address count too. */
        fdp_acceptf_inflight_done(p, &f);
        fdp_close(&fd);
        return;
    }
    pk->c.fd = fd;
    pk->c.listener = f.listener;
    if (f.peerlen > 0) {            /* a PROXY header's client */
        memcpy(&pk->c.peer, f.peer, f.peerlen);
        pk->c.peerlen = f.peerlen;
        pk->c.proxied = 1;
    }
    pk->by_peer = f.by_peer;
    pk->rpeer = f.rpeer;
    if (held_start(p, pk, HELD_PARKED, parked_io, PARKED_EVENTS, idle) < 0) {
        fdp_acceptf_inflight_done(p, &f);
        fdp_close(&pk->c.fd);
        free(pk);
    }
}


/* The PARKs w holds back in its shared page, taken and handled here:
 * w is dead, or held up in a handler (fdp_dispatch_parks_tick). Those
 * connections are idle, their answers sent: parked, not lost. */
void
fdp_dispatch_parks_take(struct fdp_pool *p, struct fdp_worker *w)
{
    struct fdp_park_entry e[FDP_PARKS_MAX];
    const char *bad = NULL;
    uint64_t st;
    uint32_t i, n;

    if (w->shm == NULL || w->inflight == NULL) {
        return;
    }
    /* The worker writes this page as it likes: the state is read once,
     * the entries copied once, and only the copies are judged (each id
     * one of its kept connections in flight, each had once). */
    st = __atomic_load_n(&w->shm->pstate, __ATOMIC_SEQ_CST);
    n = FDP_PARKS_N(st);
    if (n == 0) {
        return;
    }
    if (n > FDP_PARKS_MAX) {
        bad = "held-back PARKs past the page's room";
        n = 0;
    }
    if (n > 0) {
        memcpy(e, w->shm->parks, n * sizeof(e[0]));
    }
    if (!__atomic_compare_exchange_n(&w->shm->pstate, &st,
                                     FDP_PARKS_EMPTY(st), 0,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        return;                     /* sent meanwhile (or more held: the
                                     * next look takes them) */
    }
    /* An offer it claimed and served since its last message is its own
     * connection now: noted before its PARK is judged. */
    if (p->noffers > 0 && w->claim != NULL) {
        fdp_dispatch_offers_settle(p, w);
    }
    for (i = 0; i < n && !p->stopping; i++) {
        uint32_t k = (uint32_t) (e[i].id & 0xffff);

        if (e[i].id != 0 && k < (uint32_t) w->ncap
            && w->inflight[k].id == e[i].id && w->inflight[k].kept != NULL
            && !w->inflight[k].offer) {
            park_one(p, w, &e[i], -1);
        } else if (bad == NULL) {
            bad = "a held-back PARK of a connection it does not hold";
        }
    }
    if (bad != NULL && w->ch.fd >= 0) {
        fdp_dispatch_fault(p, w, bad);
    } else if (bad != NULL) {           /* dead already */
        fdp_log(FDP_LOG_WARN, 0, "worker %d: %s", w->slot.id, bad);
    }
}


/*
 * Strict prefork: the PARKs the workers hold in their pages, taken at
 * every turn of the master's loop, before it waits (pool.c,
 * fdp_pool_step). A worker sends them as a message only while the
 * master's word in its page says it waits (fdp_dispatch_rings_wait), so
 * under load a PARK costs no system call on either side. The table's
 * workers, and those out of it (a retiring one may hold PARKs from
 * before it left, while it serves on): the master puts those from the
 * top slot down, so they are looked for from there, until p->nalive
 * processes are met (nothing more to look at while none lives out of the
 * table). Returns how many workers had some.
 */
static inline int
ring_out_first(const struct fdp_pool *p, int *left)
{
    *left = p->ring_out;
    return *left > 0 ? FDP_SLOTS - 1 : -1;
}


static inline int
ring_out_next(const struct fdp_pool *p, int i, int *left)
{
    *left -= p->workers[i].slot.pid > 0;
    return *left > 0 && i > p->nworkers ? i - 1 : -1;
}


/* w's held PARKs taken (4 tries: a worker that appends meanwhile makes
 * the swap fail); 1 when it had some. */
static inline int
ring_take(struct fdp_pool *p, struct fdp_worker *w)
{
    int tries;

    /* A worker's page is its input: the count is judged (and a worker
     * faulted) in fdp_dispatch_parks_take, on a copy. (None held by a
     * worker with no connection in flight: each PARK is of one.) */
    for (tries = 0; tries < 4 && w->slot.active > 0 && w->shm != NULL
         && w->ch.fd >= 0
         && FDP_PARKS_N(__atomic_load_n(&w->shm->pstate,
                                        __ATOMIC_SEQ_CST)) > 0;
         tries++) {
        fdp_dispatch_parks_take(p, w);
    }
    return tries > 0;
}


int
fdp_dispatch_rings(struct fdp_pool *p)
{
    int i, n = 0, live = 0, left;

    for (i = 0; i < p->nworkers; i++) {
        live += p->workers[i].slot.pid > 0;
        n += ring_take(p, &p->workers[i]);
    }
    /* Counted at each turn, for fdp_dispatch_rings_wait too (a process
     * that left the table since costs at most a message: its word stays
     * at 1 until the next count). */
    p->ring_out = p->nalive - live;
    for (i = ring_out_first(p, &left); i >= p->nworkers;
         i = ring_out_next(p, i, &left)) {
        n += ring_take(p, &p->workers[i]);
    }
    if (n > 0 && (p->qlen > 0 || p->noffers > 0)) {
        fdp_dispatch_queue(p);
    }
    return n;
}


/* w's word: nonzero while the master waits. Only a worker with a
 * connection can park one: another has none before the master's next
 * turn, which comes here again before it waits (a word left at 1 costs
 * only a message). */
static inline void
ring_word(struct fdp_worker *w, int on)
{
    if (w->shm != NULL && w->slot.active > 0) {
        __atomic_store_n(&w->shm->msleep, (uint32_t) on, __ATOMIC_SEQ_CST);
    }
}


static inline int
ring_held(const struct fdp_worker *w)
{
    return w->shm != NULL && w->ch.fd >= 0 && w->slot.active > 0
           && FDP_PARKS_N(__atomic_load_n(&w->shm->pstate,
                                          __ATOMIC_SEQ_CST)) > 0;
}


/* The master is about to wait (on), or has woken (!on): its word in the
 * pages of the workers fdp_dispatch_rings looks at. After publishing it,
 * one more look: returns 1 when a page holds PARKs (the caller takes
 * them instead of waiting). */
int
fdp_dispatch_rings_wait(struct fdp_pool *p, int on)
{
    int i, left;

    for (i = 0; i < p->nworkers; i++) {
        ring_word(&p->workers[i], on);
    }
    for (i = ring_out_first(p, &left); i >= p->nworkers;
         i = ring_out_next(p, i, &left)) {
        ring_word(&p->workers[i], on);
    }
    if (!on) {
        return 0;
    }
    for (i = 0; i < p->nworkers; i++) {
        if (ring_held(&p->workers[i])) {
            return 1;
        }
    }
    for (i = ring_out_first(p, &left); i >= p->nworkers;
         i = ring_out_next(p, i, &left)) {
        if (ring_held(&p->workers[i])) {
            return 1;
        }
    }
    return 0;
}


/* The tick: a worker whose held-back PARKs did not move since the last
 * tick is in a handler that neither ends nor waits: those connections
 * are parked here, so none waits behind another's handler longer than
 * about two ticks. */
void
fdp_dispatch_parks_tick(struct fdp_pool *p)
{
    int i;

    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];
        uint64_t st;

        /* A retiring worker too (out of the table, serving on); not
         * one faulted (its channel closed: its page is taken when it is
         * reaped). */
        if (w->shm == NULL || w->ch.fd < 0
            || (w->slot.state != FDP_W_RUNNING
                && w->slot.state != FDP_W_EXITING)) {
            continue;
        }
        st = __atomic_load_n(&w->shm->pstate, __ATOMIC_SEQ_CST);
        if (FDP_PARKS_N(st) > 0 && st == w->pstate_seen) {
            fdp_dispatch_parks_take(p, w);
            st = __atomic_load_n(&w->shm->pstate, __ATOMIC_SEQ_CST);
        }
        w->pstate_seen = st;
    }
}


/* Close every connection the master holds (parked or reading a PROXY
 * header): the pool is stopping. */
void
fdp_dispatch_close_held(struct fdp_pool *p)
{
    while (p->parked) {
        held_free(p, p->parked);
    }
    while (p->proxywait) {
        held_free(p, p->proxywait);
    }
}


/* In a new child: close the held connections' fds (nothing else), and
 * the master's kept copies of parked connections (queued or served). */
void
fdp_dispatch_close_in_child(struct fdp_pool *p)
{
    struct fdp_held *h;

    for (h = p->kept; h; h = h->knext) {
        fdp_close(&h->c.fd);
    }
    for (h = p->proxywait; h; h = h->next) {
        fdp_close(&h->c.fd);
    }
}
