/*
 * upgrade.h - `pool upgrade` and SIGUSR2 (upgrade.c): the master forks
 * and execs its binary, handing the new master its sockets; the old one
 * hands over once the new one is READY, or goes on serving. Functions
 * that can fail return 0 or -errno with p->error set.
 */
#ifndef FDP_UPGRADE_H
#define FDP_UPGRADE_H

struct fdp_pool;

/* The old master. */
int fdp_upgrade_start(struct fdp_pool *p);
void fdp_upgrade_poll(struct fdp_pool *p);
void fdp_upgrade_release(struct fdp_pool *p);
void fdp_upgrade_cancel(struct fdp_pool *p, const char *why);

/* The new master. */
int fdp_upgrade_adopt(struct fdp_pool *p);
void fdp_upgrade_ready(struct fdp_pool *p);
void fdp_upgrade_abandon(struct fdp_pool *p, const char *why);

/* Both: a forked worker closes the upgrade's fds. */
void fdp_upgrade_close_in_child(struct fdp_pool *p);

#endif
