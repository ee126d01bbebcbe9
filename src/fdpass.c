/*
 * fdpass.c - send and receive one message with descriptors attached.
 * The receiver owns every descriptor that arrives: anything it cannot
 * hand to its caller (truncated control data, extra or foreign cmsgs) is
 * closed here, so no error path leaks an fd.
 */
#include "fdp.h"
#include "fdpass.h"

#include <assert.h>
#include <string.h>
#include <sys/socket.h>

/* Control buffer big enough for FDP_MAX_FDS descriptors, aligned for
 * struct cmsghdr as CMSG_* require. */
union fdp_cmsgbuf {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * FDP_MAX_FDS)];
};


/*
 * Send len bytes (len may be 0 only on SOCK_SEQPACKET/DGRAM) with nfds
 * descriptors. Returns bytes sent or -errno (-EAGAIN: try later). The
 * caller keeps ownership of fds[] either way: the kernel duplicated them
 * into the message, so the caller closes its copies after success.
 */
ssize_t
fdp_sendfds(int sock, const void *data, size_t len, const int *fds, int nfds)
{
    union fdp_cmsgbuf cbuf;
    struct msghdr msg;
    struct iovec iov;
    struct cmsghdr *cmsg;
    ssize_t n;

    assert(nfds >= 0 && nfds <= FDP_MAX_FDS);
    memset(&msg, 0, sizeof(msg));
    iov.iov_base = (void *) data;
    iov.iov_len = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;

    if (nfds > 0) {
        memset(&cbuf, 0, sizeof(cbuf));
        msg.msg_control = cbuf.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) nfds);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) nfds);
        /* CMSG_DATA may be unaligned for int: copy, never cast-store. */
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t) nfds);
    }

    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}


static void
close_cmsg_fds(struct msghdr *msg)
{
    struct cmsghdr *cmsg;

    for (cmsg = CMSG_FIRSTHDR(msg); cmsg; cmsg = CMSG_NXTHDR(msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            size_t i, k = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            for (i = 0; i < k; i++) {
                int fd;

                memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
                fdp_close(&fd);
            }
        }
    }
}


/*
 * Receive one message: up to cap bytes into buf and up to *nfds (at most
 * FDP_MAX_FDS) descriptors into fds[], all CLOEXEC. On return *nfds holds
 * how many arrived and the caller owns them. Returns the byte count (0
 * with *nfds == 0 means EOF on a stream; on SEQPACKET a 0-byte message is
 * never used by fdpool), or -errno: -EAGAIN, -EMSGSIZE when the data or
 * the control part was truncated or more fds came than fit (every fd that
 * arrived is closed then), -EBADMSG for foreign control messages.
 */
ssize_t
fdp_recvfds(int sock, void *buf, size_t cap, int *fds, int *nfds)
{
    return fdp_recvfds_lossy(sock, buf, cap, fds, nfds, NULL);
}


/*
 * The same, but with lost non-NULL a message whose descriptors the
 * kernel could not all install (MSG_CTRUNC alone: the receiver is at its
 * RLIMIT_NOFILE, or more came than fit) is no error: its data is whole,
 * *nfds holds the descriptors that did arrive (the first ones sent: the
 * kernel installs them in order and drops the rest, whose sockets are
 * then closed unless the sender kept a copy), and *lost is 1. Else 0.
 */
ssize_t
fdp_recvfds_lossy(int sock, void *buf, size_t cap, int *fds, int *nfds,
                  int *lost)
{
    union fdp_cmsgbuf cbuf;
    struct msghdr msg;
    struct iovec iov;
    struct cmsghdr *cmsg;
    ssize_t n;
    int max = *nfds, got = 0, bad = 0, toomany = 0;

    assert(max >= 0 && max <= FDP_MAX_FDS);
    *nfds = 0;
    memset(&msg, 0, sizeof(msg));
    iov.iov_base = buf;
    iov.iov_len = cap;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = sizeof(cbuf.buf);

    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    if (lost != NULL) {
        *lost = 0;
    }
    if ((msg.msg_flags & MSG_TRUNC)
        || ((msg.msg_flags & MSG_CTRUNC) && lost == NULL)) {
        close_cmsg_fds(&msg);
        return -EMSGSIZE;
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        *lost = 1;
    }
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        size_t k;

        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS
            || cmsg->cmsg_len < CMSG_LEN(0)) {
            bad = 1;
            continue;
        }
        k = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (got + (int) k > max) {
            toomany = 1;
            continue;
        }
        memcpy(fds + got, CMSG_DATA(cmsg), k * sizeof(int));
        got += (int) k;
    }
    if (bad || toomany) {
        close_cmsg_fds(&msg);
        return toomany ? -EMSGSIZE : -EBADMSG;
    }
    *nfds = got;
    return n;
}
