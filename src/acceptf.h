/*
 * acceptf.h - the master's accept filter and per-address cap: connections
 * wait in the master (MSG_PEEK, no bytes consumed, no Lua) until they have
 * something to serve, and addresses over --max-conns-per-ip are refused.
 */
#ifndef FDP_ACCEPTF_H
#define FDP_ACCEPTF_H

#include <stddef.h>
#include <stdint.h>

#include "channel.h"

enum fdp_af_mode {
    FDP_AF_AUTO = -1,       /* from the workers' READY: http or none */
    FDP_AF_NONE = 0,        /* hand over at accept */
    FDP_AF_DATA,            /* first bytes arrived */
    FDP_AF_HTTP,            /* a complete request head arrived */
    FDP_AF_TLS              /* a whole TLS ClientHello record arrived */
};

enum fdp_af_reason {
    FDP_AF_DEADLINE = 0,    /* nothing to serve within the deadline */
    FDP_AF_OVERFLOW,        /* the pending set was full: oldest closed */
    FDP_AF_PER_IP,          /* over --max-conns-per-ip at accept */
    FDP_AF_PEER_CLOSED,     /* hung up (or failed) while pending */
    FDP_AF_NOT_TLS,         /* a tls listener's client sent no TLS */
    FDP_AF_NREASONS
};

#define FDP_PENDING_MAX_DEFAULT 4096
#define FDP_AF_DEADLINE_DEFAULT_MS 60000

struct fdp_pool;
struct fdp_pending;
struct fdp_acceptf;
struct sockaddr_storage;

int fdp_acceptf_parse(const char *s);
const char *fdp_acceptf_name(int mode);
int fdp_acceptf_mode(struct fdp_pool *p, uint32_t listener);
int fdp_acceptf_hold(struct fdp_pool *p, struct fdp_pending *c);
int fdp_acceptf_parked_look(struct fdp_pool *p, int fd, uint32_t listener);
int fdp_acceptf_dispatchable(struct fdp_pool *p,
                             const struct fdp_pending *c);
void fdp_acceptf_ready(struct fdp_pool *p, const struct fdp_ready_body *b);
void fdp_acceptf_defer(struct fdp_pool *p);
void fdp_acceptf_retry(struct fdp_pool *p);
void fdp_acceptf_close_all(struct fdp_pool *p);
void fdp_acceptf_admit_all(struct fdp_pool *p);
void fdp_acceptf_close_in_child(struct fdp_pool *p);
void fdp_acceptf_free(struct fdp_pool *p);
int fdp_acceptf_ip_take(struct fdp_pool *p, const struct sockaddr_storage *ss,
                        uint32_t listener);
void fdp_acceptf_ip_release(struct fdp_pool *p, const void *sa,
                            uint32_t listener);
struct fdp_inflight;
void fdp_acceptf_inflight_done(struct fdp_pool *p,
                               const struct fdp_inflight *f);
void fdp_acceptf_fd_release(struct fdp_pool *p, int fd, uint32_t listener);
size_t fdp_acceptf_pending(const struct fdp_pool *p);

#endif
