/*
 * fdpass.h - one message of bytes plus file descriptors over a unix
 * socket (sendmsg/recvmsg with SCM_RIGHTS). No framing, no policy, no logs.
 */
#ifndef FDP_FDPASS_H
#define FDP_FDPASS_H

#include <sys/types.h>

/* The kernel accepts at most SCM_MAX_FD (253) per message; we use fewer. */
#define FDP_MAX_FDS 64

ssize_t fdp_sendfds(int sock, const void *data, size_t len,
                    const int *fds, int nfds);
ssize_t fdp_recvfds(int sock, void *buf, size_t cap, int *fds, int *nfds);
ssize_t fdp_recvfds_lossy(int sock, void *buf, size_t cap, int *fds,
                          int *nfds, int *lost);

#endif
