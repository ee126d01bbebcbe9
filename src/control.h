/* control.h - the control socket and the --metrics listener (control.c):
 * the server, which the pool runs as its service. The client side is
 * ctlclient.h. */
#ifndef FDP_CONTROL_H
#define FDP_CONTROL_H

#include <stddef.h>

#include "ctlclient.h"

struct fdp_pool;
struct fdp_buf;

/* The pool's service (set p->service = &fdp_control_service). */
extern const struct fdp_service fdp_control_service;

/* control.c: the control socket's server. */
int fdp_control_open(struct fdp_pool *p, char *err, size_t errlen);
void fdp_control_close(struct fdp_pool *p, int unlink_path);
void fdp_control_tick(struct fdp_pool *p);
int fdp_control_default_path(struct fdp_pool *p, char *err, size_t errlen);
void fdp_control_reload_done(struct fdp_pool *p, int ok, const char *text);

#endif
