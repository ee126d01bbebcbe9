/* listen.h - the master's listeners and sd_notify (listen.c). Bind and
 * adopt return 0 (systemd: the number adopted) or -errno with p->error
 * set. */
#ifndef FDP_LISTEN_H
#define FDP_LISTEN_H

struct fdp_pool;

/* fdp_pool_add_listen, fdp_pool_add_fd, fdp_pool_systemd_fds: pool.h. */
struct fdp_listener;
void fdp_listen_close_all(struct fdp_pool *p);
int fdp_listen_options(struct fdp_pool *p, struct fdp_listener *l,
                       const char *addr);
void fdp_listen_notify_open(struct fdp_pool *p);
void fdp_listen_notify(struct fdp_pool *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
