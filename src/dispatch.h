/* dispatch.h - accept, queue, policy, hand-off; the held connections
 * (dispatch.c). fdp_pool_choose (pool.h) is its decision, shared with
 * fdpool.sim. */
#ifndef FDP_DISPATCH_H
#define FDP_DISPATCH_H

#include <stdint.h>

struct fdp_pool;
struct fdp_worker;
struct fdp_pending;
struct fdp_msg;
struct fdp_loop;
struct fdp_io;

void fdp_dispatch_listener_io(struct fdp_loop *loop, struct fdp_io *io,
                              uint32_t ev);
void fdp_dispatch_accepting(struct fdp_pool *p, int on);
void fdp_dispatch_admit(struct fdp_pool *p, struct fdp_pending *c);
void fdp_dispatch_queue(struct fdp_pool *p);
void fdp_dispatch_send(struct fdp_pool *p, struct fdp_worker *w);
void fdp_dispatch_flush(struct fdp_pool *p);
void fdp_dispatch_park(struct fdp_pool *p, struct fdp_worker *w,
                       struct fdp_msg *m);
void fdp_dispatch_close_held(struct fdp_pool *p);
void fdp_dispatch_offers_back(struct fdp_pool *p, struct fdp_worker *w,
                              int requeue);
void fdp_dispatch_offers_settle(struct fdp_pool *p, struct fdp_worker *w);
void fdp_dispatch_offers_tick(struct fdp_pool *p);
int fdp_dispatch_unclaimed(const struct fdp_worker *w, uint32_t k);
void fdp_dispatch_parks_take(struct fdp_pool *p, struct fdp_worker *w);
void fdp_dispatch_parks_tick(struct fdp_pool *p);
int fdp_dispatch_rings(struct fdp_pool *p);
int fdp_dispatch_rings_wait(struct fdp_pool *p, int on);
void fdp_dispatch_pending_close(struct fdp_pool *p, struct fdp_pending *c);
void fdp_dispatch_inflight_end(struct fdp_pool *p, struct fdp_inflight *f);
void fdp_dispatch_close_in_child(struct fdp_pool *p);

/* The worker's slot: close its channel end (and a batch not sent); mark
 * it faulty (it broke the protocol: SIGKILLed, replaced when reaped);
 * free the in-flight entry k of a connection that ended or came back. */
void fdp_dispatch_drop_channel(struct fdp_pool *p, struct fdp_worker *w);
void fdp_dispatch_fault(struct fdp_pool *p, struct fdp_worker *w,
                        const char *why);
void fdp_dispatch_served(struct fdp_worker *w, uint32_t k, uint64_t bytes_in,
                         uint64_t bytes_out);

#endif
