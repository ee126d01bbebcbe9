/* ctlclient.h - the control socket's client side (ctlclient.c). Both
 * return 0, or -errno with a one-line reason in err. */
#ifndef FDP_CTLCLIENT_H
#define FDP_CTLCLIENT_H

#include <stddef.h>

struct fdp_buf;

int fdp_control_request(const char *path, const char *cmd,
                        struct fdp_buf *out, char *err, size_t errlen);
int fdp_control_default_dir(char *out, size_t n, int create, char *err,
                            size_t errlen);

#endif
