/*
 * test_core.c - unit tests of the transport layers, no Lua: fd passing
 * (fdpass.c), framed messages and the send queue (channel.c), the event
 * loop and timers (loop.c), the status table and its JSON (status.c),
 * the HTTP head parser and chunked decoder (http_parse.c), the shared
 * dictionary (shdict.c: values, LRU, undo after a death, corruption),
 * WebSocket's SHA-1, base64, handshake, masking and UTF-8 check
 * (wsproto.c).
 * Prints one line per failure and "N passed, N failed"; exits 1 on failure.
 */
#include "fdp.h"
#include "fdpass.h"
#include "channel.h"
#include "loop.h"
#include "status.h"
#include "http_parse.h"
#include "proxy.h"
#include "wsproto.h"
#include "shdict.h"
#include "fcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A ten-line harness in the style of Redis' testhelp.h. */
static int test_passed, test_failed;
#define test_cond(descr, c) do { \
    if (c) { test_passed++; } else { test_failed++; \
        printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, descr); } \
} while (0)
#define test_report() do { \
    printf("%d passed, %d failed\n", test_passed, test_failed); \
    return test_failed ? 1 : 0; \
} while (0)


/* ---- helpers --------------------------------------------------------- */

/* Open descriptors of this process (the DIR's own fd not counted). */
static int
fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1;
}


static int
is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}


static int
is_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);

    return fl >= 0 && (fl & FD_CLOEXEC);
}


/* A SEQPACKET pair; nonblock makes both ends non-blocking. */
static int
seqpair(int sv[2], int nonblock)
{
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC
                      | (nonblock ? SOCK_NONBLOCK : 0), 0, sv);
}


/* Does writing "x" into w come out of r? (Both ends of one pipe.) */
static int
pipe_works(int w, int r)
{
    char c = 0;

    if (write(w, "x", 1) != 1) {
        return 0;
    }
    return read(r, &c, 1) == 1 && c == 'x';
}


/* One byte into a pipe / out of it, counted as a check so no return
 * value goes unused (glibc's warn_unused_result under FORTIFY). */
static void
put1(int fd)
{
    test_cond("write one byte", write(fd, "x", 1) == 1);
}


static void
get1(int fd)
{
    char c;

    test_cond("read one byte", read(fd, &c, 1) == 1);
}


/* Send with a raw sendmsg: n fds (more than FDP_MAX_FDS allowed). */
static ssize_t
raw_sendfds(int sock, const void *data, size_t len, const int *fds, int n)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 250)];
    } cbuf;
    struct msghdr msg;
    struct iovec iov;
    struct cmsghdr *cmsg;

    memset(&msg, 0, sizeof(msg));
    memset(&cbuf, 0, sizeof(cbuf));
    iov.iov_base = (void *) data;
    iov.iov_len = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) n);
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) n);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t) n);
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}


static void
close_all(int *fds, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        fdp_close(&fds[i]);
    }
}


/* ---- fdpass ---------------------------------------------------------- */

static void
test_fdpass_basic(void)
{
    int sv[2], p[2], fds[FDP_MAX_FDS], got[FDP_MAX_FDS], nfds, i, distinct;
    char buf[64];
    ssize_t n;

    if (seqpair(sv, 0) < 0 || pipe2(p, O_CLOEXEC) < 0) {
        test_cond("socketpair/pipe", 0);
        return;
    }

    /* 0 fds: data only. */
    n = fdp_sendfds(sv[0], "abc", 3, NULL, 0);
    test_cond("send 0 fds returns the byte count", n == 3);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("recv 0 fds: bytes", n == 3 && memcmp(buf, "abc", 3) == 0);
    test_cond("recv 0 fds: nfds 0", nfds == 0);

    /* 1 fd: a copy of the pipe's write end. */
    n = fdp_sendfds(sv[0], "one", 3, &p[1], 1);
    test_cond("send 1 fd", n == 3);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("recv 1 fd: bytes and count", n == 3 && nfds == 1);
    if (nfds == 1) {
        test_cond("recv 1 fd: a new descriptor", got[0] != p[1]);
        test_cond("recv 1 fd: CLOEXEC", is_cloexec(got[0]));
        test_cond("recv 1 fd: the same pipe", pipe_works(got[0], p[0]));
        test_cond("sender's copy still open", is_open(p[1]));
        fdp_close(&got[0]);
    }

    /* Many: FDP_MAX_FDS copies in one message, each its own fd. */
    for (i = 0; i < FDP_MAX_FDS; i++) {
        fds[i] = p[1];
    }
    n = fdp_sendfds(sv[0], "m", 1, fds, FDP_MAX_FDS);
    test_cond("send FDP_MAX_FDS fds", n == 1);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("recv FDP_MAX_FDS fds", n == 1 && nfds == FDP_MAX_FDS);
    distinct = 1;
    for (i = 0; i < nfds; i++) {
        int j;

        for (j = 0; j < i; j++) {
            if (got[j] == got[i]) {
                distinct = 0;
            }
        }
        if (!is_cloexec(got[i]) || !pipe_works(got[i], p[0])) {
            distinct = 0;
        }
    }
    test_cond("many fds: distinct, CLOEXEC, usable", distinct);
    close_all(got, nfds);

    /* A receiver asking for exactly as many as were sent is fine. */
    n = fdp_sendfds(sv[0], "3", 1, fds, 3);
    nfds = 3;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("recv with room for exactly 3", n == 1 && nfds == 3);
    close_all(got, nfds);

    /* Non-blocking, nothing there: -EAGAIN. EOF: 0 with no fds. */
    (void) fdp_set_nonblock(sv[1], 1);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("empty non-blocking socket: -EAGAIN", n == -EAGAIN && nfds == 0);
    fdp_close(&sv[0]);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("peer closed: 0 bytes, 0 fds", n == 0 && nfds == 0);

    /* Sending to a closed peer: -EPIPE, no SIGPIPE. */
    {
        int sv2[2];

        if (seqpair(sv2, 0) == 0) {
            fdp_close(&sv2[1]);
            n = fdp_sendfds(sv2[0], "x", 1, &p[1], 1);
            test_cond("send to a closed peer: -EPIPE", n == -EPIPE);
            fdp_close(&sv2[0]);
        }
    }
    fdp_close(&sv[1]);
    fdp_close(&p[0]);
    fdp_close(&p[1]);
}


/*
 * A receiver with room for fewer fds than arrive, a control buffer too
 * small for them (MSG_CTRUNC), truncated data (MSG_TRUNC), foreign
 * control messages: each fails and closes every fd that arrived.
 */
static void
test_fdpass_truncation(void)
{
    int sv[2], p[2], fds[200], got[FDP_MAX_FDS], nfds, i, before;
    char buf[256], small[8];
    ssize_t n;

    if (seqpair(sv, 1) < 0 || pipe2(p, O_CLOEXEC) < 0) {
        test_cond("socketpair/pipe", 0);
        return;
    }
    for (i = 0; i < 200; i++) {
        fds[i] = p[1];
    }
    before = fd_count();

    /* More fds than the caller has room for. */
    n = fdp_sendfds(sv[0], "x", 1, fds, 10);
    test_cond("send 10 fds", n == 1);
    nfds = 3;
    for (i = 0; i < FDP_MAX_FDS; i++) {
        got[i] = -1;
    }
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("room for 3 of 10: -EMSGSIZE", n == -EMSGSIZE);
    test_cond("room for 3 of 10: nfds 0", nfds == 0);
    test_cond("room for 3 of 10: nothing leaked", fd_count() == before);
    test_cond("room for 3 of 10: got[] untouched beyond room",
              got[3] == -1 && got[FDP_MAX_FDS - 1] == -1);

    /* More fds than the control buffer holds: the kernel sets
     * MSG_CTRUNC and installs only what fits. */
    n = raw_sendfds(sv[0], "y", 1, fds, 200);
    test_cond("raw send of 200 fds", n == 1);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("MSG_CTRUNC: -EMSGSIZE", n == -EMSGSIZE && nfds == 0);
    test_cond("MSG_CTRUNC: nothing leaked", fd_count() == before);

    /* Data longer than the buffer: MSG_TRUNC, with fds attached. */
    n = fdp_sendfds(sv[0], "0123456789abcdef", 16, fds, 5);
    test_cond("send 16 bytes + 5 fds", n == 16);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], small, sizeof(small), got, &nfds);
    test_cond("data truncated: -EMSGSIZE", n == -EMSGSIZE && nfds == 0);
    test_cond("data truncated: nothing leaked", fd_count() == before);

    /* The failing messages were consumed whole: the next one is clean. */
    n = fdp_sendfds(sv[0], "ok", 2, fds, 2);
    nfds = FDP_MAX_FDS;
    n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
    test_cond("after errors the next message is intact",
              n == 2 && nfds == 2 && memcmp(buf, "ok", 2) == 0);
    close_all(got, nfds);

    /* Foreign control data: SO_PASSCRED adds SCM_CREDENTIALS. */
    {
        int one = 1;

        if (setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one,
                       sizeof(one)) == 0) {
            n = fdp_sendfds(sv[0], "c", 1, fds, 4);
            nfds = FDP_MAX_FDS;
            n = fdp_recvfds(sv[1], buf, sizeof(buf), got, &nfds);
            test_cond("foreign cmsg: -EBADMSG", n == -EBADMSG && nfds == 0);
            test_cond("foreign cmsg: nothing leaked", fd_count() == before);
        }
    }

    fdp_close(&sv[0]);
    fdp_close(&sv[1]);
    fdp_close(&p[0]);
    fdp_close(&p[1]);
}


/* ---- message decoding and checking ----------------------------------- */

/* Build a wire buffer (header + payload) and decode it into m with nfds
 * fake descriptors (check only looks at the count). */
static int
mk(struct fdp_msg *m, unsigned type, unsigned count, const void *payload,
   size_t len, int nfds)
{
    unsigned char wire[sizeof(struct fdp_msg_hdr) + FDP_MSG_MAX + 16];
    struct fdp_msg_hdr h;
    int r;

    memset(m, 0, sizeof(*m));
    h.type = (uint16_t) type;
    h.count = (uint16_t) count;
    h.len = (uint32_t) len;
    memcpy(wire, &h, sizeof(h));
    if (len) {
        memcpy(wire + sizeof(h), payload, len);
    }
    r = fdp_msg_decode(m, wire, sizeof(h) + len);
    m->nfds = nfds;
    return r;
}


/* Decode and check in one go: 0 when both accept. */
static int
valid(unsigned type, unsigned count, const void *payload, size_t len,
      int nfds, int from_worker)
{
    struct fdp_msg m;

    if (mk(&m, type, count, payload, len, nfds) < 0) {
        return -1;
    }
    return fdp_msg_check(&m, from_worker);
}


static void
test_msg_decode(void)
{
    unsigned char wire[sizeof(struct fdp_msg_hdr) + FDP_MSG_MAX + 16];
    struct fdp_msg m;
    struct fdp_msg_hdr h;

    memset(wire, 0, sizeof(wire));
    test_cond("decode: empty buffer", fdp_msg_decode(&m, wire, 0) == -EBADMSG);
    test_cond("decode: short header",
              fdp_msg_decode(&m, wire, sizeof(h) - 1) == -EBADMSG);

    h.type = FDP_MSG_READY;
    h.count = 0;
    h.len = 0;
    memcpy(wire, &h, sizeof(h));
    test_cond("decode: header only", fdp_msg_decode(&m, wire, sizeof(h)) == 0
              && m.h.type == FDP_MSG_READY && m.h.len == 0);
    test_cond("decode: bytes beyond len",
              fdp_msg_decode(&m, wire, sizeof(h) + 1) == -EBADMSG);

    h.len = 8;
    memcpy(wire, &h, sizeof(h));
    memcpy(wire + sizeof(h), "12345678", 8);
    test_cond("decode: len matches", fdp_msg_decode(&m, wire, sizeof(h) + 8)
              == 0 && memcmp(m.u.bytes, "12345678", 8) == 0);
    test_cond("decode: len larger than the bytes",
              fdp_msg_decode(&m, wire, sizeof(h) + 7) == -EBADMSG);
    test_cond("decode: len smaller than the bytes",
              fdp_msg_decode(&m, wire, sizeof(h) + 9) == -EBADMSG);

    h.len = FDP_MSG_MAX;
    memcpy(wire, &h, sizeof(h));
    test_cond("decode: FDP_MSG_MAX payload",
              fdp_msg_decode(&m, wire, sizeof(h) + FDP_MSG_MAX) == 0);
    h.len = FDP_MSG_MAX + 1;
    memcpy(wire, &h, sizeof(h));
    test_cond("decode: payload over FDP_MSG_MAX",
              fdp_msg_decode(&m, wire, sizeof(h) + FDP_MSG_MAX + 1)
              == -EBADMSG);
    h.len = 0xffffffffu;
    memcpy(wire, &h, sizeof(h));
    test_cond("decode: huge len",
              fdp_msg_decode(&m, wire, sizeof(h)) == -EBADMSG);
}


static void
test_msg_check(void)
{
    struct fdp_conn_entry conn[FDP_BATCH_MAX + 1];
    struct fdp_done_entry done[FDP_BATCH_MAX + 1];
    struct fdp_stop_body stop = { 1, 1000 };
    struct fdp_ready_body rb = { 1, 8192, 10000, 0 };
    char kv[FDP_KEY_MAX + FDP_VAL_MAX + 8];
    size_t ce = sizeof(struct fdp_conn_entry);
    size_t de = sizeof(struct fdp_done_entry);
    struct fdp_msg m;
    unsigned t;

    memset(conn, 0, sizeof(conn));
    memset(done, 0, sizeof(done));

    /* Every valid message, in its direction. */
    test_cond("CONN 1", valid(FDP_MSG_CONN, 1, conn, ce, 1, 0) == 0);
    test_cond("CONN batch max", valid(FDP_MSG_CONN, FDP_BATCH_MAX, conn,
              FDP_BATCH_MAX * ce, FDP_BATCH_MAX, 0) == 0);
    test_cond("STOP", valid(FDP_MSG_STOP, 0, &stop, sizeof(stop), 0, 0) == 0);
    test_cond("READY", valid(FDP_MSG_READY, 0, &rb, sizeof(rb), 0, 1) == 0);
    test_cond("FAIL", valid(FDP_MSG_FAIL, 0, "boom", 4, 0, 1) == 0);
    test_cond("DONE 1", valid(FDP_MSG_DONE, 1, done, de, 0, 1) == 0);
    test_cond("DONE batch max", valid(FDP_MSG_DONE, FDP_BATCH_MAX, done,
              FDP_BATCH_MAX * de, 0, 1) == 0);
    test_cond("SET k=v", valid(FDP_MSG_SET, 0, "k\0v", 3, 0, 1) == 0);
    test_cond("SET k=empty", valid(FDP_MSG_SET, 0, "k", 2, 0, 1) == 0);
    memset(kv, 'k', FDP_KEY_MAX - 1);
    kv[FDP_KEY_MAX - 1] = '\0';
    memset(kv + FDP_KEY_MAX, 'v', FDP_VAL_MAX - 1);
    test_cond("SET longest key and value", valid(FDP_MSG_SET, 0, kv,
              FDP_KEY_MAX + FDP_VAL_MAX - 1, 0, 1) == 0);

    /* Wrong direction. */
    test_cond("CONN from a worker", valid(FDP_MSG_CONN, 1, conn, ce, 1, 1)
              == -EBADMSG);
    test_cond("STOP from a worker", valid(FDP_MSG_STOP, 0, &stop,
              sizeof(stop), 0, 1) == -EBADMSG);
    test_cond("READY from the master", valid(FDP_MSG_READY, 0, NULL, 0, 0, 0)
              == -EBADMSG);
    test_cond("FAIL from the master", valid(FDP_MSG_FAIL, 0, "x", 1, 0, 0)
              == -EBADMSG);
    test_cond("DONE from the master", valid(FDP_MSG_DONE, 1, done, de, 0, 0)
              == -EBADMSG);
    test_cond("SET from the master", valid(FDP_MSG_SET, 0, "k\0v", 3, 0, 0)
              == -EBADMSG);

    /* Counts. */
    test_cond("CONN count 0", valid(FDP_MSG_CONN, 0, NULL, 0, 0, 0)
              == -EBADMSG);
    test_cond("CONN count over batch max", valid(FDP_MSG_CONN,
              FDP_BATCH_MAX + 1, conn, (FDP_BATCH_MAX + 1) * ce,
              FDP_BATCH_MAX + 1, 0) == -EBADMSG);
    test_cond("DONE count 0", valid(FDP_MSG_DONE, 0, NULL, 0, 0, 1)
              == -EBADMSG);
    test_cond("DONE count over batch max", valid(FDP_MSG_DONE,
              FDP_BATCH_MAX + 1, done, (FDP_BATCH_MAX + 1) * de, 0, 1)
              == -EBADMSG);
    test_cond("STOP with a count", valid(FDP_MSG_STOP, 1, &stop,
              sizeof(stop), 0, 0) == -EBADMSG);
    test_cond("READY with a count", valid(FDP_MSG_READY, 1, NULL, 0, 0, 1)
              == -EBADMSG);
    test_cond("SET with a count", valid(FDP_MSG_SET, 1, "k\0v", 3, 0, 1)
              == -EBADMSG);

    /* Lengths. */
    test_cond("CONN len short", valid(FDP_MSG_CONN, 2, conn, ce, 2, 0)
              == -EBADMSG);
    test_cond("CONN len long", valid(FDP_MSG_CONN, 1, conn, ce + 1, 1, 0)
              == -EBADMSG);
    test_cond("DONE len short", valid(FDP_MSG_DONE, 2, done, 2 * de - 1,
              0, 1) == -EBADMSG);
    test_cond("STOP len short", valid(FDP_MSG_STOP, 0, &stop,
              sizeof(stop) - 1, 0, 0) == -EBADMSG);
    test_cond("READY with a short payload", valid(FDP_MSG_READY, 0, &rb,
              sizeof(rb) - 1, 0, 1) == -EBADMSG);
    test_cond("READY empty (the old shape)", valid(FDP_MSG_READY, 0, NULL, 0,
              0, 1) == -EBADMSG);
    test_cond("FAIL empty", valid(FDP_MSG_FAIL, 0, NULL, 0, 0, 1)
              == -EBADMSG);

    /* Descriptors. */
    test_cond("CONN nfds < count", valid(FDP_MSG_CONN, 2, conn, 2 * ce, 1, 0)
              == -EBADMSG);
    test_cond("CONN nfds > count", valid(FDP_MSG_CONN, 1, conn, ce, 2, 0)
              == -EBADMSG);
    test_cond("CONN nfds 0", valid(FDP_MSG_CONN, 1, conn, ce, 0, 0)
              == -EBADMSG);
    test_cond("STOP with an fd", valid(FDP_MSG_STOP, 0, &stop, sizeof(stop),
              1, 0) == -EBADMSG);
    test_cond("READY with an fd", valid(FDP_MSG_READY, 0, &rb, sizeof(rb), 1,
              1) == -EBADMSG);
    test_cond("FAIL with an fd", valid(FDP_MSG_FAIL, 0, "x", 1, 1, 1)
              == -EBADMSG);
    test_cond("DONE with an fd", valid(FDP_MSG_DONE, 1, done, de, 1, 1)
              == -EBADMSG);
    test_cond("SET with an fd", valid(FDP_MSG_SET, 0, "k\0v", 3, 1, 1)
              == -EBADMSG);

    /* SET payloads. */
    test_cond("SET without NUL", valid(FDP_MSG_SET, 0, "keyvalue", 8, 0, 1)
              == -EBADMSG);
    test_cond("SET empty key", valid(FDP_MSG_SET, 0, "\0v", 2, 0, 1)
              == -EBADMSG);
    test_cond("SET 1 byte", valid(FDP_MSG_SET, 0, "k", 1, 0, 1)
              == -EBADMSG);
    test_cond("SET empty", valid(FDP_MSG_SET, 0, NULL, 0, 0, 1)
              == -EBADMSG);
    memset(kv, 'k', FDP_KEY_MAX);
    kv[FDP_KEY_MAX] = '\0';
    kv[FDP_KEY_MAX + 1] = 'v';
    test_cond("SET oversized key", valid(FDP_MSG_SET, 0, kv,
              FDP_KEY_MAX + 2, 0, 1) == -EBADMSG);
    kv[0] = 'k';
    kv[1] = '\0';
    memset(kv + 2, 'v', FDP_VAL_MAX);
    test_cond("SET oversized value", valid(FDP_MSG_SET, 0, kv,
              2 + FDP_VAL_MAX, 0, 1) == -EBADMSG);
    test_cond("SET value with NUL", valid(FDP_MSG_SET, 0, "k\0v\0w", 5, 0, 1)
              == -EBADMSG);

    /* Unknown types, in both directions. */
    for (t = 0; t < 70000; t += (t < 16 ? 1 : 4093)) {
        if (t >= FDP_MSG_CONN && t < FDP_MSG_TYPE_END) {
            continue;
        }
        if (mk(&m, t & 0xffff, 0, NULL, 0, 0) == 0
            && (fdp_msg_check(&m, 0) == 0 || fdp_msg_check(&m, 1) == 0)) {
            printf("  type %u accepted\n", t & 0xffff);
            test_cond("unknown type rejected", 0);
            break;
        }
    }
    test_cond("unknown types rejected", t >= 70000);
    test_cond("type 0", valid(0, 0, NULL, 0, 0, 1) == -EBADMSG);
    test_cond("type TYPE_END", valid(FDP_MSG_TYPE_END, 0, NULL, 0, 0, 1)
              == -EBADMSG);
    test_cond("type 0xffff", valid(0xffff, 1, conn, ce, 1, 0) == -EBADMSG);
}


/* ---- channel: send, queue, flush, receive ---------------------------- */

/* Send raw filler messages until the kernel says EAGAIN. */
static int
fill(int fd)
{
    char blob[1024];
    int n = 0;

    memset(blob, 'f', sizeof(blob));
    while (n < 1000000) {
        ssize_t r = fdp_sendfds(fd, blob, sizeof(blob), NULL, 0);

        if (r == -EAGAIN) {
            return n;
        }
        if (r < 0) {
            return -1;
        }
        n++;
    }
    return -1;
}


/* Receive and drop n filler messages. Returns how many it got. */
static int
drain(int fd, int n)
{
    char buf[2048];
    int i;

    for (i = 0; i < n; i++) {
        int nfds = 0;

        if (fdp_recvfds(fd, buf, sizeof(buf), NULL, &nfds) != 1024) {
            break;
        }
    }
    return i;
}


static void
test_chan_roundtrip(void)
{
    struct fdp_chan a, b;
    struct fdp_msg m;
    struct fdp_conn_entry ce[2];
    int sv[2], p[2], fds[2], r, before;

    if (seqpair(sv, 1) < 0 || pipe2(p, O_CLOEXEC) < 0) {
        test_cond("socketpair/pipe", 0);
        return;
    }
    fdp_chan_init(&a, sv[0]);
    fdp_chan_init(&b, sv[1]);

    r = fdp_chan_recv(&b, &m);
    test_cond("chan_recv on empty: -EAGAIN", r == -EAGAIN);

    {
        struct fdp_ready_body rb = { 1, 4096, 1500, 0 };
        const struct fdp_ready_body *got;

        r = fdp_chan_send(&a, FDP_MSG_READY, 0, &rb, sizeof(rb), NULL, 0);
        test_cond("send READY", r == 0 && a.queued == 0);
        r = fdp_chan_recv(&b, &m);
        got = (const struct fdp_ready_body *) m.u.bytes;
        test_cond("recv READY", r == 1 && m.h.type == FDP_MSG_READY
                  && m.h.len == sizeof(rb) && m.nfds == 0
                  && fdp_msg_check(&m, 1) == 0 && got->http == 1
                  && got->max_head == 4096 && got->head_ms == 1500);
    }

    memset(ce, 0, sizeof(ce));
    ce[0].id = 41;
    ce[1].id = 42;
    fds[0] = dup(p[1]);
    fds[1] = dup(p[1]);
    before = fd_count();
    r = fdp_chan_send(&a, FDP_MSG_CONN, 2, ce, sizeof(ce), fds, 2);
    test_cond("send CONN x2", r == 0);
    test_cond("sent fds are closed by the channel",
              !is_open(fds[0]) && !is_open(fds[1])
              && fd_count() == before - 2);
    r = fdp_chan_recv(&b, &m);
    test_cond("recv CONN x2", r == 1 && m.h.type == FDP_MSG_CONN
              && m.h.count == 2 && m.nfds == 2 && m.u.conn[0].id == 41
              && m.u.conn[1].id == 42 && fdp_msg_check(&m, 0) == 0);
    if (r == 1 && m.nfds == 2) {
        test_cond("CONN fds usable", pipe_works(m.fds[0], p[0])
                  && pipe_works(m.fds[1], p[0]));
        fdp_msg_close_fds(&m);
        test_cond("msg_close_fds", m.nfds == 0 && fd_count() == before - 2);
    }

    test_cond("send payload over FDP_MSG_MAX: -EINVAL",
              fdp_chan_send(&a, FDP_MSG_FAIL, 0, "x", FDP_MSG_MAX + 1,
                            NULL, 0) == -EINVAL);
    test_cond("send over FDP_MAX_FDS: -EINVAL",
              fdp_chan_send(&a, FDP_MSG_FAIL, 0, "x", 1, fds,
                            FDP_MAX_FDS + 1) == -EINVAL);

    /* EOF. */
    fdp_chan_close(&a);
    test_cond("chan_close marks the fd closed", a.fd == -1);
    r = fdp_chan_recv(&b, &m);
    test_cond("chan_recv after peer close: 0", r == 0);

    /* Sending on a channel whose peer is gone: -EPIPE, caller keeps fds. */
    {
        int sv2[2], fd;
        struct fdp_chan c;

        if (seqpair(sv2, 1) == 0) {
            fdp_chan_init(&c, sv2[0]);
            fdp_close(&sv2[1]);
            fd = dup(p[1]);
            r = fdp_chan_send(&c, FDP_MSG_CONN, 1, ce, sizeof(ce[0]), &fd, 1);
            test_cond("send to a gone peer: -EPIPE", r == -EPIPE);
            test_cond("caller still owns the fd after failure", is_open(fd));
            fdp_close(&fd);
            fdp_chan_close(&c);
        }
    }
    fdp_chan_close(&b);
    fdp_close(&p[0]);
    fdp_close(&p[1]);
}


static void
test_chan_queue(void)
{
    struct fdp_chan a, b;
    struct fdp_msg m;
    struct fdp_conn_entry ce;
    int sv[2], p[2], fd1, fd2, nfill, r, before, got;
    uint64_t deadline;

    if (seqpair(sv, 1) < 0 || pipe2(p, O_CLOEXEC) < 0) {
        test_cond("socketpair/pipe", 0);
        return;
    }
    fdp_chan_init(&a, sv[0]);
    fdp_chan_init(&b, sv[1]);

    nfill = fill(a.fd);
    test_cond("the socket fills up (EAGAIN)", nfill > 0);
    if (nfill <= 0) {
        return;
    }

    memset(&ce, 0, sizeof(ce));
    ce.id = 7;
    fd1 = dup(p[1]);
    before = fd_count();
    r = fdp_chan_send(&a, FDP_MSG_CONN, 1, &ce, sizeof(ce), &fd1, 1);
    test_cond("send on a full socket queues", r == 0 && a.queued == 1);
    test_cond("the queue holds the fd open", is_open(fd1)
              && fd_count() == before);
    test_cond("flush while still full: -EAGAIN",
              fdp_chan_flush(&a) == -EAGAIN && a.queued == 1);

    /* The reader drains; a new message must still queue behind the
     * first, never overtake it. */
    got = drain(b.fd, nfill);
    test_cond("the reader drains the filler", got == nfill);
    ce.id = 8;
    fd2 = dup(p[1]);
    r = fdp_chan_send(&a, FDP_MSG_CONN, 1, &ce, sizeof(ce), &fd2, 1);
    test_cond("a send behind a queue queues too (order)", r == 0
              && a.queued == 2);

    deadline = fdp_now_ms() + 2000;
    do {
        r = fdp_chan_flush(&a);
    } while (r == -EAGAIN && fdp_now_ms() < deadline);
    test_cond("flush sends the queue once the reader drained", r == 0
              && a.queued == 0 && a.head == NULL && a.tail == NULL);
    test_cond("flushed fds closed on the sender side",
              !is_open(fd1) && !is_open(fd2));

    r = fdp_chan_recv(&b, &m);
    test_cond("first queued message arrives first", r == 1
              && m.h.type == FDP_MSG_CONN && m.u.conn[0].id == 7
              && m.nfds == 1);
    if (r == 1 && m.nfds == 1) {
        test_cond("its fd is delivered and works", pipe_works(m.fds[0], p[0]));
        fdp_msg_close_fds(&m);
    }
    r = fdp_chan_recv(&b, &m);
    test_cond("second queued message arrives second", r == 1
              && m.u.conn[0].id == 8 && m.nfds == 1);
    if (r == 1 && m.nfds == 1) {
        test_cond("its fd is delivered and works", pipe_works(m.fds[0], p[0]));
        fdp_msg_close_fds(&m);
    }
    test_cond("nothing more", fdp_chan_recv(&b, &m) == -EAGAIN);
    test_cond("no fd leaked through the queue", fd_count() == before - 1);

    /* Closing a channel with queued messages closes their fds. */
    nfill = fill(a.fd);
    before = fd_count();
    fd1 = dup(p[1]);
    fd2 = dup(p[1]);
    r = fdp_chan_send(&a, FDP_MSG_CONN, 1, &ce, sizeof(ce), &fd1, 1);
    r |= fdp_chan_send(&a, FDP_MSG_CONN, 1, &ce, sizeof(ce), &fd2, 1);
    test_cond("queued two more", r == 0 && a.queued == 2
              && fd_count() == before + 2);
    fdp_chan_close(&a);
    test_cond("chan_close frees the queue and its fds",
              a.queued == 0 && a.head == NULL
              && fd_count() == before - 1);
    fdp_chan_close(&b);
    fdp_close(&p[0]);
    fdp_close(&p[1]);
}


/* The queue is bounded: FDP_CHAN_QMAX messages, then -ENOBUFS with the
 * caller still owning its fds. */
static void
test_chan_queue_bound(void)
{
    struct fdp_chan a;
    int sv[2], i, r = 0, fd;

    if (seqpair(sv, 1) < 0) {
        test_cond("socketpair", 0);
        return;
    }
    fdp_chan_init(&a, sv[0]);
    test_cond("fill", fill(a.fd) > 0);
    for (i = 0; i < FDP_CHAN_QMAX && r == 0; i++) {
        r = fdp_chan_send(&a, FDP_MSG_READY, 0, NULL, 0, NULL, 0);
    }
    test_cond("FDP_CHAN_QMAX messages queue", r == 0
              && a.queued == FDP_CHAN_QMAX);
    fd = dup(sv[1]);
    r = fdp_chan_send(&a, FDP_MSG_CONN, 0, NULL, 0, &fd, 1);
    test_cond("one more: -ENOBUFS", r == -ENOBUFS);
    test_cond("-ENOBUFS leaves the fd with the caller", is_open(fd));
    fdp_close(&fd);
    fdp_chan_close(&a);
    fdp_close(&sv[1]);
}


/* ---- loop ------------------------------------------------------------ */

struct tlog {
    int order[64];
    int n;
};

struct ttimer {
    struct fdp_timer t;
    int id;
    struct tlog *log;
};


static void
timer_record(struct fdp_loop *loop, struct fdp_timer *t)
{
    struct ttimer *tt = t->data;

    (void) loop;
    if (tt->log->n < 64) {
        tt->log->order[tt->log->n] = tt->id;
    }
    tt->log->n++;
}


/* Run the loop until want callbacks were logged or ms passed. */
static void
run_until(struct fdp_loop *loop, struct tlog *log, int want, int ms)
{
    uint64_t deadline = fdp_now_ms() + (uint64_t) ms;

    while (log->n < want && fdp_now_ms() < deadline) {
        (void) fdp_loop_run_once(loop, 20);
    }
}


static void
test_loop_timers(void)
{
    struct fdp_loop loop;
    struct ttimer tt[40];
    struct tlog log;
    static const int ms[] = { 30, 10, 0, 20, 5 };
    static const int want[] = { 2, 4, 1, 3, 0 };
    int i, ok;
    uint64_t t0;

    if (fdp_loop_init(&loop) < 0) {
        test_cond("loop_init", 0);
        return;
    }
    test_cond("loop fd CLOEXEC", is_cloexec(loop.epfd));

    /* Fire in deadline order, whatever the start order. */
    memset(&log, 0, sizeof(log));
    for (i = 0; i < 5; i++) {
        tt[i].id = i;
        tt[i].log = &log;
        fdp_timer_init(&tt[i].t, timer_record, &tt[i]);
        test_cond("timer not active before start", !fdp_timer_active(&tt[i].t));
        (void) fdp_timer_start(&loop, &tt[i].t, (uint64_t) ms[i]);
        test_cond("timer active after start", fdp_timer_active(&tt[i].t));
    }
    t0 = fdp_now_ms();
    run_until(&loop, &log, 5, 2000);
    ok = log.n == 5;
    for (i = 0; i < 5 && ok; i++) {
        ok = log.order[i] == want[i];
    }
    test_cond("timers fire once each, in deadline order", ok);
    test_cond("not before their time", fdp_now_ms() - t0 >= 28);
    test_cond("inactive after firing", !fdp_timer_active(&tt[0].t)
              && loop.nheap == 0);

    /* Stop: a stopped timer never fires; stopping twice is harmless. */
    memset(&log, 0, sizeof(log));
    (void) fdp_timer_start(&loop, &tt[0].t, 5);
    (void) fdp_timer_start(&loop, &tt[1].t, 10);
    fdp_timer_stop(&loop, &tt[0].t);
    fdp_timer_stop(&loop, &tt[0].t);
    test_cond("stopped timer inactive", !fdp_timer_active(&tt[0].t));
    run_until(&loop, &log, 1, 2000);
    (void) fdp_loop_run_once(&loop, 30);
    test_cond("only the running timer fired", log.n == 1
              && log.order[0] == 1);

    /* Restart moves a timer rather than adding it twice. */
    memset(&log, 0, sizeof(log));
    (void) fdp_timer_start(&loop, &tt[2].t, 1000);
    (void) fdp_timer_start(&loop, &tt[2].t, 5);
    test_cond("restart keeps one heap entry", loop.nheap == 1);
    run_until(&loop, &log, 1, 2000);
    (void) fdp_loop_run_once(&loop, 20);
    test_cond("restarted timer fired once", log.n == 1);

    /* Many timers, some stopped from the middle of the heap: the rest
     * still fire in order. */
    memset(&log, 0, sizeof(log));
    for (i = 0; i < 40; i++) {
        tt[i].id = i;
        tt[i].log = &log;
        fdp_timer_init(&tt[i].t, timer_record, &tt[i]);
        (void) fdp_timer_start(&loop, &tt[i].t,
                               (uint64_t) (((i * 17) % 40) + 1));
    }
    for (i = 0; i < 40; i += 3) {
        fdp_timer_stop(&loop, &tt[i].t);
    }
    run_until(&loop, &log, 26, 2000);
    (void) fdp_loop_run_once(&loop, 20);
    ok = log.n == 26;
    for (i = 0; i < log.n && i < 64 && ok; i++) {
        int id = log.order[i];

        ok = id % 3 != 0;
        if (ok && i > 0) {
            int prev = log.order[i - 1];

            ok = ((prev * 17) % 40) < ((id * 17) % 40);
        }
    }
    test_cond("40 timers, 14 stopped: 26 fire in order", ok);

    /* A timer 2^32 ms or 1e12 ms away (--io-timeout 1e9, a saturated
     * head_timeout) leaves run_once's own bound in force: once its wait
     * was a truncated int, -1 for 2^32 - 1, and epoll_wait blocked for
     * good (SIGALRM ends this test instead of hanging it). */
    memset(&log, 0, sizeof(log));
    (void) fdp_timer_start(&loop, &tt[0].t, UINT64_C(4294967295));
    (void) fdp_timer_start(&loop, &tt[1].t, UINT64_C(1000000000000));
    alarm(20);
    t0 = fdp_now_ms();
    (void) fdp_loop_run_once(&loop, 20);
    (void) fdp_loop_run_once(&loop, 20);
    alarm(0);
    test_cond("far timers: run_once still returns at its bound, none fired",
              fdp_now_ms() - t0 < 15000 && log.n == 0);
    fdp_timer_stop(&loop, &tt[0].t);
    fdp_timer_stop(&loop, &tt[1].t);
    fdp_loop_free(&loop);
}


struct tio {
    struct fdp_io io;
    int calls;
    uint32_t events;
    struct tio *other;      /* deleted by this one's callback */
    struct tio *replace;    /* added on other's fd number */
    int closed_other;
};


static void
io_record(struct fdp_loop *loop, struct fdp_io *io, uint32_t events)
{
    struct tio *t = io->data;

    (void) loop;
    t->calls++;
    t->events = events;
}


/* Delete the other watcher (and close its fd), as a callback that tears
 * down a connection would. */
static void
io_delete_other(struct fdp_loop *loop, struct fdp_io *io, uint32_t events)
{
    struct tio *t = io->data;

    t->calls++;
    t->events = events;
    if (t->other && !t->closed_other) {
        (void) fdp_loop_del(loop, &t->other->io);
        t->closed_other = 1;
        /* Put a new, readable watcher on the same fd number: the stale
         * event of the old one must not reach it either. */
        if (t->replace) {
            int np[2];

            if (pipe2(np, O_CLOEXEC) == 0) {
                put1(np[1]);
                test_cond("dup3", dup3(np[0], t->other->io.fd, O_CLOEXEC)
                          == t->other->io.fd);
                fdp_close(&np[0]);
                fdp_close(&np[1]);
                t->replace->io.fd = t->other->io.fd;
                (void) fdp_loop_add(loop, &t->replace->io, EPOLLIN);
            }
        }
    }
}


static void
io_stop_loop(struct fdp_loop *loop, struct fdp_io *io, uint32_t events)
{
    struct tio *t = io->data;

    t->calls++;
    t->events = events;
    loop->stop = 1;
}


static void
test_loop_io(void)
{
    struct fdp_loop loop;
    struct tio a, b, c;
    int pa[2], pb[2], r, i;

    if (fdp_loop_init(&loop) < 0 || pipe2(pa, O_CLOEXEC) < 0
        || pipe2(pb, O_CLOEXEC) < 0) {
        test_cond("loop_init/pipe", 0);
        return;
    }

    /* A plain watcher. */
    memset(&a, 0, sizeof(a));
    a.io.fd = pa[0];
    a.io.cb = io_record;
    a.io.data = &a;
    r = fdp_loop_add(&loop, &a.io, EPOLLIN);
    test_cond("add a watcher", r == 0);
    r = fdp_loop_run_once(&loop, 0);
    test_cond("nothing ready: 0 events, no call", r == 0 && a.calls == 0);
    put1(pa[1]);
    r = fdp_loop_run_once(&loop, 1000);
    test_cond("readable: callback with EPOLLIN", r == 1 && a.calls == 1
              && (a.events & EPOLLIN));
    test_cond("mod to the same events is a no-op",
              fdp_loop_mod(&loop, &a.io, EPOLLIN) == 0);
    r = fdp_loop_mod(&loop, &a.io, EPOLLOUT);
    (void) fdp_loop_run_once(&loop, 0);
    test_cond("mod to EPOLLOUT on a read end: no call", r == 0
              && a.calls == 1);
    (void) fdp_loop_mod(&loop, &a.io, EPOLLIN);
    r = fdp_loop_del(&loop, &a.io);
    (void) fdp_loop_run_once(&loop, 0);
    test_cond("deleted watcher is not called", r == 0 && a.calls == 1);
    get1(pa[0]);
    {
        struct fdp_io bad;

        memset(&bad, 0, sizeof(bad));
        bad.fd = -1;
        test_cond("add fd -1: -EBADF", fdp_loop_add(&loop, &bad, EPOLLIN)
                  == -EBADF);
    }

    /* Two watchers ready in one batch, each deleting the other: exactly
     * one of them runs. */
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    a.io.fd = pa[0];
    b.io.fd = pb[0];
    a.io.cb = b.io.cb = io_delete_other;
    a.io.data = &a;
    b.io.data = &b;
    a.other = &b;
    b.other = &a;
    (void) fdp_loop_add(&loop, &a.io, EPOLLIN);
    (void) fdp_loop_add(&loop, &b.io, EPOLLIN);
    put1(pa[1]);
    put1(pb[1]);
    r = fdp_loop_run_once(&loop, 1000);
    test_cond("both ready in one batch", r == 2);
    test_cond("the one deleted in the batch is not called",
              a.calls + b.calls == 1);
    if (a.calls) {
        (void) fdp_loop_del(&loop, &a.io);
    } else {
        (void) fdp_loop_del(&loop, &b.io);
    }
    get1(pa[0]);
    get1(pb[0]);

    /* Same, and the deleter puts a new watcher on the deleted one's fd
     * number (ready at once): the stale event must not reach it in this
     * batch; it runs on the next turn. Both deleters point at each other
     * so whichever runs first does it. */
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    a.io.fd = pa[0];
    b.io.fd = pb[0];
    a.io.cb = b.io.cb = io_delete_other;
    c.io.cb = io_record;
    a.io.data = &a;
    b.io.data = &b;
    c.io.data = &c;
    a.other = &b;
    b.other = &a;
    a.replace = b.replace = &c;
    (void) fdp_loop_add(&loop, &a.io, EPOLLIN);
    (void) fdp_loop_add(&loop, &b.io, EPOLLIN);
    put1(pa[1]);
    put1(pb[1]);
    r = fdp_loop_run_once(&loop, 1000);
    test_cond("replace: one deleter ran", r == 2 && a.calls + b.calls == 1);
    test_cond("replace: new watcher not called by the stale event",
              c.calls == 0);
    r = fdp_loop_run_once(&loop, 1000);
    test_cond("replace: new watcher runs on the next turn", c.calls == 1);
    (void) fdp_loop_del(&loop, &c.io);
    (void) fdp_loop_del(&loop, a.calls ? &a.io : &b.io);

    /* loop->stop from a callback ends fdp_loop_run. */
    for (i = 0; i < 2; i++) {
        fdp_close(&pa[i]);
        fdp_close(&pb[i]);
    }
    if (pipe2(pa, O_CLOEXEC) == 0) {
        memset(&a, 0, sizeof(a));
        a.io.fd = pa[0];
        a.io.cb = io_stop_loop;
        a.io.data = &a;
        (void) fdp_loop_add(&loop, &a.io, EPOLLIN);
        put1(pa[1]);
        r = fdp_loop_run(&loop);
        test_cond("stop from a callback ends loop_run", r == 0
                  && a.calls == 1);
        (void) fdp_loop_del(&loop, &a.io);
        fdp_close(&pa[0]);
        fdp_close(&pa[1]);
    }
    fdp_loop_free(&loop);
    test_cond("loop_free closes the epoll fd", loop.epfd == -1);
}


/* ---- status ---------------------------------------------------------- */

static int
has(const struct fdp_buf *b, const char *needle)
{
    if (b->data == NULL || b->oom) {
        return 0;
    }
    if (strstr(b->data, needle) == NULL) {
        printf("  missing: %s\n", needle);
        return 0;
    }
    return 1;
}


static void
test_status(void)
{
    struct fdp_slot s[4];
    struct fdp_status_info info;
    const char *listen[] = { "127.0.0.1:8080", "unix:/tmp/a\"b" };
    struct fdp_buf b;
    int i, r = -1;

    for (i = 0; i < 4; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        fdp_slot_reset(&s[i], i + 1);
    }
    test_cond("reset slot: id, pid -1, state none", s[0].id == 1
              && s[0].pid == -1 && strcmp(fdp_slot_state(&s[0]), "none") == 0);

    s[0].pid = 1234;
    s[0].state = FDP_W_RUNNING;
    s[0].capacity = 4;
    s[0].active = 1;
    s[0].served = 7;
    s[0].bytes_in = 100;
    s[0].bytes_out = 2000;
    s[0].restarts = 2;
    s[0].generation = 3;
    s[0].last_exit_how = FDP_EXIT_SIGNAL;
    s[0].last_exit_code = SIGKILL;
    s[1].pid = 1235;
    s[1].state = FDP_W_RUNNING;
    s[1].capacity = 1;
    s[1].active = 1;
    s[1].last_exit_how = FDP_EXIT_CODE;
    s[1].last_exit_code = 3;
    s[2].pid = 1236;
    s[2].state = FDP_W_STARTING;
    s[3].pid = 1237;
    s[3].state = FDP_W_EXITING;

    test_cond("state free", strcmp(fdp_slot_state(&s[0]), "free") == 0);
    test_cond("state busy when active == capacity",
              strcmp(fdp_slot_state(&s[1]), "busy") == 0);
    test_cond("state starting", strcmp(fdp_slot_state(&s[2]), "starting")
              == 0);
    test_cond("state exiting", strcmp(fdp_slot_state(&s[3]), "exiting")
              == 0);

    fdp_slot_update_busy(&s[1], 1000.5);
    fdp_slot_update_busy(&s[1], 2000.0);
    test_cond("busy_since set once when full", s[1].busy_since == 1000.5);
    fdp_slot_update_busy(&s[0], 1000.5);
    test_cond("busy_since 0 when not full", s[0].busy_since == 0);

    test_cond("set kv", fdp_slot_set_kv(&s[0], "note", "a\"b\\c\n") == 0);
    test_cond("replace kv", fdp_slot_set_kv(&s[0], "k2", "one") == 0
              && fdp_slot_set_kv(&s[0], "k2", "two") == 0 && s[0].nkv == 2
              && strcmp(fdp_slot_get_kv(&s[0], "k2"), "two") == 0);
    test_cond("get missing kv", fdp_slot_get_kv(&s[0], "nope") == NULL);
    for (i = 0; i < FDP_KV_MAX; i++) {
        char k[16];

        snprintf(k, sizeof(k), "f%d", i);
        r = fdp_slot_set_kv(&s[3], k, "v");
    }
    test_cond("FDP_KV_MAX fields fit", r == 0 && s[3].nkv == FDP_KV_MAX);
    test_cond("one more: -ENOSPC", fdp_slot_set_kv(&s[3], "more", "v")
              == -ENOSPC);
    test_cond("an existing one can still change",
              fdp_slot_set_kv(&s[3], "f0", "w") == 0);

    test_cond("signame SIGKILL", strcmp(fdp_signame(SIGKILL), "SIGKILL") == 0);
    test_cond("signame SIGSEGV", strcmp(fdp_signame(SIGSEGV), "SIGSEGV") == 0);
    test_cond("signame unknown", strcmp(fdp_signame(1000), "SIGUNKNOWN") == 0);

    memset(&info, 0, sizeof(info));
    info.pid = 999;
    info.policy = "least_conn";
    info.listen = listen;
    info.nlisten = 2;
    info.accepted = 12;
    info.queued = 1;
    info.fallbacks = 0;
    info.started = 1700000000.25;
    memset(&b, 0, sizeof(b));
    fdp_status_json(&b, &info, s, 4);
    test_cond("json: pool fields", has(&b, "{\"pid\": 999, \"version\": \""
              FDP_VERSION "\", \"now\": ") && has(&b, "\"policy\": "
              "\"least_conn\"") && has(&b, "\"accepted\": 12")
              && has(&b, "\"queued\": 1"));
    test_cond("json: rss unread is null", has(&b, "\"restarts\": 2, "
              "\"rss\": null, \"last_exit\""));
    fdp_buf_free(&b);
    s[0].rss = 40960;
    info.now = 1700000100.5;
    fdp_status_json(&b, &info, s, 4);
    test_cond("json: rss in bytes", has(&b, "\"rss\": 40960, "));
    test_cond("json: the snapshot's now", has(&b, "\"now\": 1700000100.500, "));
    s[0].rss = 0;
    test_cond("json: listen escaped", has(&b, "\"listen\": "
              "[\"127.0.0.1:8080\", \"unix:/tmp/a\\\"b\"]"));
    test_cond("json: worker 1 fields", has(&b, "{\"id\": 1, \"pid\": 1234, "
              "\"generation\": 3, \"state\": \"free\", \"active\": 1, "
              "\"capacity\": 4, \"served\": 7, \"bytes_in\": 100, "
              "\"bytes_out\": 2000"));
    test_cond("json: restarts", has(&b, "\"restarts\": 2"));
    test_cond("json: last_exit signal", has(&b, "\"last_exit\": {\"how\": "
              "\"signal\", \"code\": 9, \"name\": \"SIGKILL\"}"));
    test_cond("json: last_exit code", has(&b, "\"last_exit\": {\"how\": "
              "\"exit\", \"code\": 3}"));
    test_cond("json: last_exit null", has(&b, "\"last_exit\": null"));
    test_cond("json: busy, starting, exiting",
              has(&b, "\"state\": \"busy\"") && has(&b, "\"state\": "
              "\"starting\"") && has(&b, "\"state\": \"exiting\""));
    test_cond("json: custom fields escaped", has(&b, "\"fields\": "
              "{\"note\": \"a\\\"b\\\\c\\u000a\", \"k2\": \"two\"}"));
    test_cond("json: ends with ]}\\n", b.len >= 3
              && strcmp(b.data + b.len - 3, "]}\n") == 0);
    {
        /* Balanced braces and brackets outside strings. */
        int depth = 0, instr = 0, bad = 0;
        size_t k;

        for (k = 0; k < b.len; k++) {
            char ch = b.data[k];

            if (instr) {
                if (ch == '\\') {
                    k++;
                } else if (ch == '"') {
                    instr = 0;
                }
            } else if (ch == '"') {
                instr = 1;
            } else if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (--depth < 0) {
                    bad = 1;
                }
            }
        }
        test_cond("json: balanced", !bad && depth == 0 && !instr);
    }
    fdp_buf_free(&b);
    test_cond("buf_free", b.data == NULL && b.len == 0);

    fdp_status_table(&b, &info, s, 4);
    test_cond("table: header", has(&b, "master 999  policy least_conn")
              && has(&b, "ID") && has(&b, "STATE") && has(&b, "SERVED"));
    test_cond("table: a row with custom fields", has(&b, "1234 free")
              && has(&b, " k2=two"));
    fdp_buf_free(&b);

    /* A long output grows the buffer. */
    for (i = 0; i < 2000; i++) {
        fdp_buf_printf(&b, "%d,", i);
    }
    test_cond("buf grows", !b.oom && b.len > 8000
              && strncmp(b.data + b.len - 5, "1999,", 5) == 0);
    fdp_buf_free(&b);

    /* reset keeps restarts and last_exit (the slot's history). */
    fdp_slot_reset(&s[0], 1);
    test_cond("reset keeps restarts and last_exit", s[0].restarts == 2
              && s[0].last_exit_how == FDP_EXIT_SIGNAL
              && s[0].last_exit_code == SIGKILL && s[0].pid == -1
              && s[0].nkv == 0 && s[0].served == 0);
}

/* ---- http_parse.c ----------------------------------------------------- */

static int
head(const char *in, struct fdp_http_head *h)
{
    static char buf[4096];
    size_t n = strlen(in);

    memcpy(buf, in, n);
    return fdp_http_parse_head(buf, n, h);
}


static void
test_http_head(void)
{
    struct fdp_http_head h;
    char big[600];

    test_cond("head: a GET parses",
              head("GET /a?b HTTP/1.1\r\nHost: t\r\nX-Y:\t v \r\n\r\n", &h) == 0
              && h.method_len == 3 && h.target_len == 4 && h.minor == 1
              && h.nfields == 2 && memcmp(h.fields[1].name, "x-y", 3) == 0
              && h.fields[1].value_len == 1 && h.fields[1].value[0] == 'v');
    test_cond("head: HTTP/1.0", head("GET / HTTP/1.0\r\n\r\n", &h) == 0
              && h.minor == 0 && h.nfields == 0);
    test_cond("head: HTTP/1.2 reads as 1.1",
              head("GET / HTTP/1.2\r\n\r\n", &h) == 0 && h.minor == 1);
    test_cond("head: HTTP/2.0 is EVERSION with the method known",
              head("HEAD / HTTP/2.0\r\n\r\n", &h) == FDP_HTTP_EVERSION
              && h.method != NULL && h.method_len == 4);
    test_cond("head: HTTP/1.10", head("GET / HTTP/1.10\r\n\r\n", &h)
              == FDP_HTTP_EBADLINE);
    test_cond("head: bare LF in the request line",
              head("GET / HTTP/1.1\nHost: t\r\n\r\n", &h) == FDP_HTTP_EBADLINE
              && h.method == NULL);
    test_cond("head: bare LF in a field",
              head("GET / HTTP/1.1\r\nHost: t\n\r\n", &h) == FDP_HTTP_EHEADER);
    test_cond("head: obs-fold",
              head("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", &h)
              == FDP_HTTP_EHEADER);
    test_cond("head: space before the colon",
              head("GET / HTTP/1.1\r\nHost : t\r\n\r\n", &h) == FDP_HTTP_EHEADER);
    test_cond("head: bare CR in a value",
              head("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", &h) == FDP_HTTP_EVALUE);
    test_cond("head: method with a bad byte",
              head("G@T / HTTP/1.1\r\n\r\n", &h) == FDP_HTTP_EBADLINE);
    memset(big, 'N', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\n", 16);
    memcpy(big + 500, ": v\r\n\r\n", 8);
    test_cond("head: a 484-byte name", head(big, &h) == 0
              && h.fields[0].name_len == 484 && h.fields[0].name[0] == 'n');
}


static int
resp(const char *in, struct fdp_http_head *h)
{
    static char buf[4096];
    size_t n = strlen(in);

    memcpy(buf, in, n);
    return fdp_http_parse_response(buf, n, h);
}


static void
test_http_response(void)
{
    struct fdp_http_head h;

    test_cond("response: a 200 parses",
              resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:\t v \r\n"
                   "\r\n", &h) == 0
              && h.status == 200 && h.minor == 1 && h.reason_len == 2
              && memcmp(h.reason, "OK", 2) == 0 && h.nfields == 2
              && memcmp(h.fields[0].name, "content-length", 14) == 0
              && h.fields[1].value_len == 1 && h.fields[1].value[0] == 'v');
    test_cond("response: no reason, HTTP/1.0",
              resp("HTTP/1.0 204\r\n\r\n", &h) == 0 && h.status == 204
              && h.minor == 0 && h.reason_len == 0 && h.nfields == 0);
    test_cond("response: bare LF line ends",
              resp("HTTP/1.1 404 Not Found\nA: b\n\n", &h) == 0
              && h.status == 404 && h.reason_len == 9 && h.nfields == 1
              && h.fields[0].value_len == 1);
    test_cond("response: HTTP/2.0", resp("HTTP/2.0 200 OK\r\n\r\n", &h)
              == FDP_HTTP_ESTATUS);
    test_cond("response: status 099", resp("HTTP/1.1 099 X\r\n\r\n", &h)
              == FDP_HTTP_ESTATUS);
    test_cond("response: 4-digit status",
              resp("HTTP/1.1 2000 X\r\n\r\n", &h) == FDP_HTTP_ESTATUS);
    test_cond("response: not HTTP", resp("HELLO WORLD\r\n\r\n", &h)
              == FDP_HTTP_ESTATUS);
    test_cond("response: control byte in the reason",
              resp("HTTP/1.1 200 O\001K\r\n\r\n", &h) == FDP_HTTP_ESTATUS);
    test_cond("response: obs-fold joined with one space (RFC 9112 5.2)",
              resp("HTTP/1.1 200 OK\r\nA: b \r\n \t c \r\nD: e\r\n\r\n", &h)
              == 0 && h.nfields == 2 && h.fields[0].value_len == 3
              && memcmp(h.fields[0].value, "b c", 3) == 0
              && h.fields[1].value_len == 1 && h.fields[1].value[0] == 'e');
    test_cond("response: a fold before the first field",
              resp("HTTP/1.1 200 OK\r\n A: b\r\n\r\n", &h)
              == FDP_HTTP_EHEADER);
    test_cond("response: no colon",
              resp("HTTP/1.1 200 OK\r\nA b\r\n\r\n", &h) == FDP_HTTP_EHEADER);
    test_cond("response: bare CR in a value",
              resp("HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", &h)
              == FDP_HTTP_EVALUE);
    test_cond("response: its error text",
              strcmp(fdp_http_strerror(FDP_HTTP_ESTATUS), "bad status line")
              == 0);
}


/* Decode in as one piece (step 0) or step bytes at a time; returns the
 * last result and the data in out (*outn bytes). */
static int
chunked(const char *in, size_t n, size_t step, char *out, size_t *outn)
{
    struct fdp_http_chunked d;
    size_t off = 0, end = 0;
    int r = FDP_HTTP_CHUNK_AGAIN;

    fdp_http_chunked_init(&d);
    *outn = 0;
    while (off < n || r == FDP_HTTP_CHUNK_DATA) {
        size_t used = 0, k;

        end = step == 0 || off + step > n ? n : off + step;
        r = fdp_http_chunked_next(&d, in + off, end - off, &used);
        off += used;
        if (r < 0 || r == FDP_HTTP_CHUNK_DONE) {
            return r;
        }
        if (r == FDP_HTTP_CHUNK_DATA) {
            k = end - off < d.left ? end - off : (size_t) d.left;
            if (k == 0 && end == n) {
                return r;
            }
            memcpy(out + *outn, in + off, k);
            *outn += k;
            fdp_http_chunked_take(&d, k);
            off += k;
        }
    }
    return r;
}


static void
test_http_chunked(void)
{
    static const struct {
        const char *in;
        int want;
        const char *data;
    } t[] = {
        { "5\r\nhello\r\n0\r\n\r\n", FDP_HTTP_CHUNK_DONE, "hello" },
        { "2\r\nhe\r\n3;a=\"x;\\\"y\" ; b\r\nllo\r\n0\r\nT: 1\r\n\r\n",
          FDP_HTTP_CHUNK_DONE, "hello" },
        { "0000000000000005\r\nhello\r\n0\r\n\r\n", FDP_HTTP_CHUNK_DONE,
          "hello" },
        { "00000000000000005\r\nhello\r\n0\r\n\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "10000000000000000\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "0x5\r\nhello\r\n0\r\n\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "-5\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { " 5\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "5 \r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "5 junk\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "5\nhello\r\n", FDP_HTTP_ECHUNKSIZE, "" },
        { "5\rhello\r\n", FDP_HTTP_ECHUNK, "" },
        { "5;\r\n", FDP_HTTP_ECHUNKEXT, "" },
        { "5;a \r\n", FDP_HTTP_ECHUNKEXT, "" },
        { "5;a=\"x\r\n", FDP_HTTP_ECHUNKEXT, "" },
        { "5\r\nhelloX\r\n", FDP_HTTP_ECHUNK, "hello" },
        { "5\r\nhello\n0\r\n\r\n", FDP_HTTP_ECHUNK, "hello" },
        { "0\r\nX: a\r\n b\r\n\r\n", FDP_HTTP_ETRAILER, "" },
        { "0\r\nX : a\r\n\r\n", FDP_HTTP_ETRAILER, "" },
        { "0\r\n\n", FDP_HTTP_ETRAILER, "" },
        { "5\r\nhel", FDP_HTTP_CHUNK_DATA, "hel" },
    };
    char out[64], ext[1200];
    size_t i, step, n;
    struct fdp_http_chunked d;
    const char *rest = "0\r\n\r\nGET / HTTP/1.1\r\n";

    for (i = 0; i < FDP_NELEM(t); i++) {
        for (step = 0; step <= 3; step++) {
            int r = chunked(t[i].in, strlen(t[i].in), step, out, &n);
            char what[128];

            snprintf(what, sizeof(what), "chunked case %zu step %zu: %d",
                     i, step, r);
            test_cond(what, r == t[i].want && n == strlen(t[i].data)
                      && memcmp(out, t[i].data, n) == 0);
        }
    }
    /* DONE stops at the end of the body: the next request is left. */
    fdp_http_chunked_init(&d);
    test_cond("chunked: DONE leaves the next request",
              fdp_http_chunked_next(&d, rest, strlen(rest), &n)
              == FDP_HTTP_CHUNK_DONE && n == 5);
    memset(ext, 'a', sizeof(ext));
    memcpy(ext, "5;", 2);
    memcpy(ext + sizeof(ext) - 2, "\r\n", 2);
    test_cond("chunked: a 1200-byte extension",
              chunked(ext, sizeof(ext), 0, out, &n) == FDP_HTTP_ECHUNKEXT);
    /* A 16-digit size is read whole: the caller bounds it. */
    fdp_http_chunked_init(&d);
    test_cond("chunked: ffffffffffffffff is DATA of 2^64-1",
              fdp_http_chunked_next(&d, "ffffffffffffffff\r\n", 18, &n)
              == FDP_HTTP_CHUNK_DATA && d.left == UINT64_MAX && n == 18);
}


/* The accept filter's look at an HTTP head: what conn:readrequest would
 * take as complete (CRLF CRLF or bare LF LF, empty lines first skipped). */
static void
test_head_filter(void)
{
    static const struct {
        const char *s;
        int want;
    } cases[] = {
        { "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1 },
        { "GET / HTTP/1.1\r\n\r\n", 1 },
        { "GET / HTTP/1.0\n\n", 1 },
        { "GET / HTTP/1.1\nHost: a\n\r\n", 1 },
        { "\r\n\r\nGET / HTTP/1.1\r\n\r\n", 1 },
        { "GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 1 },
        { "", 0 },
        { "G", 0 },
        { "\r\n\r\n", 0 },
        { "\r\n\r\nGET / HTTP/1.1\r\n", 0 },
        { "GET / HTTP/1.1\r\nHost: a\r\n", 0 },
        { "GET / HTTP/1.1\r\nHost: a\r\n\r", 0 },
        { "GET / HTTP/1.1\r\r\n", 1 },    /* a bare CR: never a line end */
        /* never a request line: judged at once (the worker says 400) */
        { "\x16\x03\x01\x02\x00\x01", 1 },
        { "\r\n\x16\x03", 1 },
        { " GET / HTTP/1.1\r\n", 1 },
        { "G(T / HTTP/1.1\r\n", 1 },
        { "GET\t/ HTTP/1.1\r\n", 1 },
        { "GET /\x01", 1 },                 /* a control byte in the target */
        { "GET / FTP/1.1", 1 },             /* not HTTP/x.y */
        { "GET / HTTP/1.1\nHost: a", 1 },   /* a bare LF */
        { "GET  /", 1 },                    /* no target */
        { "ABCDEFGHIJKLMNOPQRSTUVWXYZ\x01", 1 },
        /* what could still be a request line waits */
        { "GE", 0 },
        { "GET ", 0 },
        { "GET /a", 0 },
        { "GET /a HTTP/1", 0 },
        { "GET /a HTTP/2.0\r", 0 },         /* (505 once it ends) */
    };
    size_t i;
    int ok = 1;

    for (i = 0; i < FDP_NELEM(cases); i++) {
        if (fdp_http_head_complete(cases[i].s, strlen(cases[i].s))
            != cases[i].want) {
            printf("  head case %zu: %s\n", i, cases[i].s);
            ok = 0;
        }
    }
    test_cond("http head completeness (accept filter)", ok);
}


/* fdp_proxy_parse's three outcomes: a length, 0 for "need more", and
 * -EINVAL (the errno convention) for anything that is not a header. */
static void
test_proxy_codes(void)
{
    static const char v1[] = "PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n";
    struct sockaddr_storage src;
    socklen_t len;
    char longline[120];

    memset(longline, 'x', sizeof(longline));
    memcpy(longline, "PROXY ", 6);
    test_cond("proxy: a v1 header gives its length",
              fdp_proxy_parse((const uint8_t *) v1, sizeof(v1) - 1, &src, &len)
              == (int) sizeof(v1) - 1 && len == sizeof(struct sockaddr_in));
    test_cond("proxy: a prefix of one needs more (0)",
              fdp_proxy_parse((const uint8_t *) v1, 10, &src, &len) == 0);
    test_cond("proxy: not a header is -EINVAL",
              fdp_proxy_parse((const uint8_t *) "GET / HTTP/1.1\r\n", 16, &src,
                              &len) == -EINVAL && len == 0);
    test_cond("proxy: a bad v1 line is -EINVAL",
              fdp_proxy_parse((const uint8_t *) "PROXY TCP4 x y 1 2\r\n", 20,
                              &src, &len) == -EINVAL);
    test_cond("proxy: 107 bytes without a newline is -EINVAL",
              fdp_proxy_parse((const uint8_t *) longline, sizeof(longline),
                              &src, &len) == -EINVAL);
    {
        static const char nul[] = "PROXY TCP4 1.2.3.4\0x 5.6.7.8 111 222\r\n";
        static const char sp[] = "PROXY TCP4 1.2.3.4 5.6.7.8 111 222 \r\n";
        static const char unk[] = "PROXY UNKNOWN\r\n";
        uint8_t v2[28] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
                           0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12,
                           1, 2, 3, 4, 5, 6, 7, 8, 0, 111, 0, 222 };

        test_cond("proxy: a NUL inside a v1 line is -EINVAL",
                  fdp_proxy_parse((const uint8_t *) nul, sizeof(nul) - 1,
                                  &src, &len) == -EINVAL);
        test_cond("proxy: a space before a v1 line's CR is -EINVAL",
                  fdp_proxy_parse((const uint8_t *) sp, sizeof(sp) - 1,
                                  &src, &len) == -EINVAL);
        test_cond("proxy: PROXY UNKNOWN keeps the peer",
                  fdp_proxy_parse((const uint8_t *) unk, sizeof(unk) - 1,
                                  &src, &len) == (int) sizeof(unk) - 1
                  && len == 0);
        test_cond("proxy: a v2 TCP4 header gives its length",
                  fdp_proxy_parse(v2, sizeof(v2), &src, &len) == 28
                  && len == sizeof(struct sockaddr_in));
        v2[13] = 0x31;      /* UNIX STREAM: kept, the real peer stays */
        test_cond("proxy: a v2 unix family keeps the peer",
                  fdp_proxy_parse(v2, sizeof(v2), &src, &len) == 28
                  && len == 0);
        v2[13] = 0xFF;
        test_cond("proxy: an undefined v2 family is -EINVAL",
                  fdp_proxy_parse(v2, sizeof(v2), &src, &len) == -EINVAL);
        v2[13] = 0x13;
        test_cond("proxy: an undefined v2 transport is -EINVAL",
                  fdp_proxy_parse(v2, sizeof(v2), &src, &len) == -EINVAL);
        v2[12] = 0x20;      /* LOCAL: any family, the real peer stays */
        test_cond("proxy: a v2 LOCAL header keeps the peer",
                  fdp_proxy_parse(v2, sizeof(v2), &src, &len) == 28
                  && len == 0);
    }
}

/* ---- wsproto.c -------------------------------------------------------- */

static int
sha1_is(const char *msg, size_t n, const char *hex)
{
    unsigned char d[20];
    char h[41];
    int i;

    fdp_sha1(msg, n, d);
    for (i = 0; i < 20; i++) {
        snprintf(h + 2 * i, 3, "%02x", d[i]);
    }
    return strcmp(h, hex) == 0;
}


static int
utf8_is(const char *s, int expect)
{
    uint32_t st = 0;

    return fdp_utf8_check(&st, (const unsigned char *) s, strlen(s)) == expect;
}


static void
test_wsproto(void)
{
    static char million[1000000];
    char out[64];
    unsigned char buf[11] = "Hello World", key[4] = { 1, 2, 3, 4 };
    uint32_t st = 0;
    int i;

    /* FIPS 180-2 appendix A and the empty string. */
    test_cond("sha1 abc", sha1_is("abc", 3,
              "a9993e364706816aba3e25717850c26c9cd0d89d"));
    test_cond("sha1 empty", sha1_is("", 0,
              "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
    test_cond("sha1 448 bits (two padding blocks)", sha1_is(
              "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
              "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
    memset(million, 'a', sizeof(million));
    test_cond("sha1 a million a", sha1_is(million, sizeof(million),
              "34aa973cd4c4daa4f61eeb2bdbad27316534016f"));
    test_cond("sha1 55 bytes (padding fits one block)", sha1_is(million, 55,
              "c1c8bbdc22796e28c0e15163d20899b65621d65a"));
    test_cond("sha1 64 bytes", sha1_is(million, 64,
              "0098ba824b5c16427bd7a1122a5a442a25ec644d"));
    /* RFC 4648 10. */
    test_cond("base64 f", fdp_base64((const unsigned char *) "f", 1, out) == 4
              && strcmp(out, "Zg==") == 0);
    test_cond("base64 fo", fdp_base64((const unsigned char *) "fo", 2, out) == 4
              && strcmp(out, "Zm8=") == 0);
    test_cond("base64 foobar",
              fdp_base64((const unsigned char *) "foobar", 6, out) == 8
              && strcmp(out, "Zm9vYmFy") == 0);
    test_cond("base64 empty", fdp_base64((const unsigned char *) "", 0, out) == 0
              && out[0] == '\0');
    /* RFC 6455 1.3's example key. */
    test_cond("ws accept", fdp_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, out) == 28
              && strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    test_cond("ws accept: short key", fdp_ws_accept("abc", 3, out) == -EINVAL);
    test_cond("ws accept: 17 bytes", fdp_ws_accept("dGhlIHNhbXBsZSBub25jZR==",
              24, out) == -EINVAL);
    test_cond("ws accept: not base64", fdp_ws_accept("dGhlIHNhbXBsZSB!b25jZQ==",
              24, out) == -EINVAL);
    /* Masking twice gives the bytes back, from any offset. */
    fdp_ws_mask(buf, 11, key, 0);
    test_cond("ws mask changes", buf[0] == ('H' ^ 1) && buf[5] == (' ' ^ 2));
    fdp_ws_mask(buf, 3, key, 0);
    fdp_ws_mask(buf + 3, 8, key, 3);
    test_cond("ws mask in parts", memcmp(buf, "Hello World", 11) == 0);
    /* UTF-8: Table 3-7's edges. */
    test_cond("utf8 ascii", utf8_is("hello", 0));
    test_cond("utf8 2-4 bytes", utf8_is("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 0));
    test_cond("utf8 max", utf8_is("\xf4\x8f\xbf\xbf", 0));
    test_cond("utf8 above max", utf8_is("\xf4\x90\x80\x80", -EILSEQ));
    test_cond("utf8 overlong 2", utf8_is("\xc0\xaf", -EILSEQ));
    test_cond("utf8 overlong 3", utf8_is("\xe0\x80\xaf", -EILSEQ));
    test_cond("utf8 overlong 4", utf8_is("\xf0\x80\x80\xaf", -EILSEQ));
    test_cond("utf8 surrogate", utf8_is("\xed\xa0\x80", -EILSEQ));
    test_cond("utf8 lone continuation", utf8_is("\x80", -EILSEQ));
    test_cond("utf8 f5", utf8_is("\xf5\x80\x80\x80", -EILSEQ));
    test_cond("utf8 truncated", utf8_is("\xe2\x82", 1));
    /* A character split across pieces (fragments). */
    i = fdp_utf8_check(&st, (const unsigned char *) "a\xf0\x9f", 3);
    test_cond("utf8 split: first part inside", i == 1 && st != 0);
    i = fdp_utf8_check(&st, (const unsigned char *) "\x98", 1);
    test_cond("utf8 split: still inside", i == 1);
    i = fdp_utf8_check(&st, (const unsigned char *) "\x80z", 2);
    test_cond("utf8 split: completed", i == 0 && st == 0x00bf8000);
    st = 0;
    (void) fdp_utf8_check(&st, (const unsigned char *) "\xed", 1);
    {
        static const char text[] = "[1,-20,0.5,\"7\",1e3,\"a\\\"9\",-0]";
        char jbuf[128];
        size_t count = 0;
        long len = fdp_json_mark(text, sizeof(text) - 1, NULL, &count);

        test_cond("json mark: measured", len == (long) sizeof(text) - 1 + 9
                  && count == 3);
        len = fdp_json_mark(text, sizeof(text) - 1, jbuf, &count);
        jbuf[len] = '\0';
        test_cond("json mark: integers only, strings untouched",
                  strcmp(jbuf, "[\"\xff" "1\",\"\xff-20\",0.5,\"7\",1e3,"
                         "\"a\\\"9\",\"\xff-0\"]") == 0);
        test_cond("json mark: leading zero", fdp_json_mark("[01]", 4, NULL,
                  &count) == -EINVAL && count == 1);
        test_cond("json mark: unterminated string",
                  fdp_json_mark("[\"ab\\\"]", 7, NULL, &count) == -EINVAL
                  && count == 1);
    }
    test_cond("utf8 split surrogate refused",
              fdp_utf8_check(&st, (const unsigned char *) "\xa0\x80", 2)
              == -EILSEQ);
}


/* ---- the shared dictionary (shdict.c) -------------------------------- */

static void *
shd_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}


static struct fdp_shd_val
sval(const char *s)
{
    struct fdp_shd_val v;

    memset(&v, 0, sizeof(v));
    v.type = FDP_SHD_STRING;
    v.s = s;
    v.len = strlen(s);
    return v;
}


static struct fdp_shd_val
ival(int64_t i)
{
    struct fdp_shd_val v;

    memset(&v, 0, sizeof(v));
    v.type = FDP_SHD_INTEGER;
    v.i = i;
    return v;
}


static int
shd_get_str(struct fdp_shd *d, const char *key, const char *want)
{
    struct fdp_shd_val v;
    int r = fdp_shd_get(d, key, strlen(key), &v, NULL);

    if (want == NULL) {
        return r == 0;
    }
    return r == 1 && v.type == FDP_SHD_STRING && v.len == strlen(want)
           && memcmp(v.s, want, v.len) == 0;
}


static void
count_key(void *ud, const char *key, size_t klen)
{
    (void) key;
    (void) klen;
    (*(int *) ud)++;
}


static void
test_shdict_values(void)
{
    size_t size = 256 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v, by, init;
    struct fdp_shd_usage u;
    struct timespec ts = { 0, 30 * 1000000 };
    int ev, n = 0;
    double ttl = -1;
    char err[128];
    uint64_t sz;

    test_cond("shdict: map", m != NULL);
    test_cond("shdict: format", fdp_shd_format(m, size) == 0);
    test_cond("shdict: attach", fdp_shd_attach(&d, m, size) == 0);
    v = sval("hello");
    test_cond("shdict: set", fdp_shd_set(&d, 0, "k", 1, &v, 0, &ev) == 0
              && ev == 0);
    test_cond("shdict: get string", shd_get_str(&d, "k", "hello"));
    test_cond("shdict: missing key", shd_get_str(&d, "nope", NULL));
    test_cond("shdict: add refuses an existing key",
              fdp_shd_set(&d, 1, "k", 1, &v, 0, &ev) == -EEXIST);
    test_cond("shdict: replace refuses a missing key",
              fdp_shd_set(&d, 2, "x", 1, &v, 0, &ev) == -ENOENT);
    v = sval("");
    test_cond("shdict: replace to an empty string",
              fdp_shd_set(&d, 2, "k", 1, &v, 0, &ev) == 0
              && shd_get_str(&d, "k", ""));
    v = ival(41);
    v.flags = 7;
    fdp_shd_set(&d, 0, "n", 1, &v, 0, &ev);
    by = ival(1);
    test_cond("shdict: incr keeps an integer",
              fdp_shd_incr(&d, "n", 1, &by, NULL, 0, &v, &ev) == 0
              && v.type == FDP_SHD_INTEGER && v.i == 42);
    test_cond("shdict: get integer with flags",
              fdp_shd_get(&d, "n", 1, &v, NULL) == 1
              && v.type == FDP_SHD_INTEGER && v.i == 42 && v.flags == 7);
    memset(&by, 0, sizeof(by));
    by.type = FDP_SHD_NUMBER;
    by.n = 0.5;
    test_cond("shdict: incr by a float",
              fdp_shd_incr(&d, "n", 1, &by, NULL, 0, &v, &ev) == 0
              && v.type == FDP_SHD_NUMBER && v.n == 42.5);
    by = ival(2);
    init = ival(10);
    test_cond("shdict: incr missing without init",
              fdp_shd_incr(&d, "m", 1, &by, NULL, 0, &v, &ev) == -ENOENT);
    test_cond("shdict: incr missing with init",
              fdp_shd_incr(&d, "m", 1, &by, &init, 0, &v, &ev) == 0
              && v.i == 12);
    test_cond("shdict: incr a string",
              fdp_shd_incr(&d, "k", 1, &by, NULL, 0, &v, &ev) == -EINVAL);
    memset(&v, 0, sizeof(v));
    v.type = FDP_SHD_BOOLEAN;
    v.i = 1;
    fdp_shd_set(&d, 0, "b", 1, &v, 0, &ev);
    test_cond("shdict: boolean",
              fdp_shd_get(&d, "b", 1, &v, NULL) == 1
              && v.type == FDP_SHD_BOOLEAN && v.i == 1);
    v.type = FDP_SHD_NIL;
    test_cond("shdict: set nil deletes",
              fdp_shd_set(&d, 0, "b", 1, &v, 0, &ev) == 0
              && fdp_shd_get(&d, "b", 1, &v, NULL) == 0);
    v = sval("short-lived");
    fdp_shd_set(&d, 0, "t", 1, &v, 0.001, &ev);
    fdp_shd_set(&d, 0, "t2", 2, &v, 100, &ev);
    test_cond("shdict: ttl", fdp_shd_ttl(&d, "t2", 2, &ttl) == 0
              && ttl > 99 && ttl <= 100);
    test_cond("shdict: expire", fdp_shd_expire(&d, "t2", 2, 0) == 0
              && fdp_shd_ttl(&d, "t2", 2, &ttl) == 0 && ttl == 0);
    nanosleep(&ts, NULL);
    test_cond("shdict: an expired key is gone", shd_get_str(&d, "t", NULL)
              && fdp_shd_ttl(&d, "t", 1, &ttl) == -ENOENT);
    test_cond("shdict: keys", fdp_shd_keys(&d, 0, count_key, &n) == 4
              && n == 4);
    n = 0;
    test_cond("shdict: keys with a max", fdp_shd_keys(&d, 2, count_key, &n)
              == 2 && n == 2);
    fdp_shd_usage(m, size, &u);
    test_cond("shdict: usage", u.size == size && u.keys == 4 && u.used > 0);
    test_cond("shdict: compatible", fdp_shd_compatible(m, size)
              && !fdp_shd_compatible(m, size * 2));
    test_cond("shdict: flush", fdp_shd_flush(&d) == 0
              && shd_get_str(&d, "k", NULL));
    fdp_shd_usage(m, size, &u);
    test_cond("shdict: empty after flush", u.keys == 0 && u.used == 0
              && fdp_shd_free_space(&d) > (int64_t) size / 2);
    test_cond("shdict: sizes", fdp_shd_parse_size("512k", &sz, err,
              sizeof(err)) == 0 && sz == 512 * 1024
              && fdp_shd_parse_size("10m", &sz, err, sizeof(err)) == 0
              && sz == 10 * 1024 * 1024
              && fdp_shd_parse_size("0", &sz, err, sizeof(err)) == -EINVAL
              && fdp_shd_parse_size("", &sz, err, sizeof(err)) == -EINVAL
              && fdp_shd_parse_size("2g", &sz, err, sizeof(err)) == -EINVAL
              && fdp_shd_parse_size("99999999999999999999999", &sz, err,
                                    sizeof(err)) == -EINVAL
              && fdp_shd_parse_size("10q", &sz, err, sizeof(err)) == -EINVAL
              && fdp_shd_parse_size("1k", &sz, err, sizeof(err)) == -EINVAL);
    test_cond("shdict: names", fdp_shd_check_name("cache_1", err, sizeof(err))
              == 0 && fdp_shd_check_name("1x", err, sizeof(err)) < 0
              && fdp_shd_check_name("a-b", err, sizeof(err)) < 0
              && fdp_shd_check_name("", err, sizeof(err)) < 0);
    fdp_shd_detach(&d);
    munmap(m, size);
}


static void
test_shdict_lru(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v;
    char key[32], val[200];
    int i, ev = 0, evictions = 0, last = 0, r;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    memset(val, 'v', sizeof(val) - 1);
    val[sizeof(val) - 1] = '\0';
    v = sval(val);
    for (i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "key%d", i);
        r = fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
        if (r != 0) {
            break;
        }
        evictions += ev;
        if (i == 5) {
            /* key0 stays the most recently used */
            test_cond("shdict: get key0", shd_get_str(&d, "key0", val));
        }
        if (i > 5) {
            (void) shd_get_str(&d, "key0", val);
        }
        last = i;
    }
    test_cond("shdict: a full dictionary evicts and keeps setting",
              last == 999 && evictions > 0);
    test_cond("shdict: the oldest keys went first",
              shd_get_str(&d, "key1", NULL) && shd_get_str(&d, "key999", val));
    test_cond("shdict: a recently read key stays", shd_get_str(&d, "key0", val));
    test_cond("shdict: consistent after evictions", fdp_shd_check(&d) == 0);
    v.len = 2 * 1024 * 1024;
    test_cond("shdict: an entry larger than any block",
              fdp_shd_set(&d, 0, "big", 3, &v, 0, &ev) == -E2BIG);
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* A child dies inside op (the test knob) at its write number `at`; the
 * parent's next operation must repair (or flush) and find the value as
 * before the dead operation. */
static const char *shd_new_value = "new-value";
static double shd_incr_by = 5;  /* incr's n: an integer unless fractional */

static int
shd_die_in(struct fdp_shd *d, int op, uint32_t at)
{
    pid_t pid = fork();
    int st = 0;

    if (pid == 0) {
        struct fdp_shd_val v = sval(shd_new_value), by = ival(5), out;
        int ev;

        d->die_op = op;
        d->die_at = at;
        if (op == FDP_SHD_OP_SET) {
            fdp_shd_set(d, 0, "a", 1, &v, 0, &ev);
        } else if (op == FDP_SHD_OP_INCR) {
            if (shd_incr_by != (double) (int64_t) shd_incr_by) {
                by.type = FDP_SHD_NUMBER;
                by.n = shd_incr_by;
            } else {
                by.i = (int64_t) shd_incr_by;
            }
            fdp_shd_incr(d, "n", 1, &by, NULL, 0, &out, &ev);
        } else if (op == FDP_SHD_OP_DELETE || op == FDP_SHD_OP_GET) {
            v.type = FDP_SHD_NIL;
            d->die_op = FDP_SHD_OP_SET;
            fdp_shd_set(d, 0, "a", 1, &v, 0, &ev);
        } else if (op == FDP_SHD_OP_FLUSH) {
            fdp_shd_flush(d);
        }
        _exit(0);
    }
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}


static void
test_shdict_owner_dead(void)
{
    size_t size = 128 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v = sval("old-value"), n = ival(100), out;
    int ev, at, dead = 0, good = 0, i;
    char key[16];

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    for (i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
    }
    /* die at each write of a set, one after another: every time the
     * next op repairs, and "a" is exactly the old value; a value of the
     * same size (rewritten in place), then a longer one (a new block) */
    for (i = 0; i < 2; i++) {
        dead = good = 0;
        /* (unchanged words are not written: a new value that differs in
         * every byte; in place, a longer one of the same block size: its
         * length and ten words of bytes) */
        shd_new_value = i == 0 ? "NEW-VALUE-THAT-STILL-FITS-THE-SAME-BLOCK"
                        : "a-new-value-much-longer-than-"
                        "the-old-one-so-it-needs-another-block";
        for (at = 1; at <= 80; at++) {
            fdp_shd_set(&d, 0, "a", 1, &v, 0, &ev);
            fdp_shd_set(&d, 0, "k0", 2, &v, 0, &ev);
            if (shd_die_in(&d, FDP_SHD_OP_SET, (uint32_t) at) != 86) {
                break;                  /* the set had fewer writes */
            }
            dead++;
            if (shd_get_str(&d, "a", "old-value") && d.recovered == 1) {
                good++;
            }
        }
        test_cond("shdict: a set killed at every write is undone",
                  dead > 5 && good == dead);
    }
    shd_new_value = "new-value";
    test_cond("shdict: the other keys survived", shd_get_str(&d, "k0",
              "old-value") && shd_get_str(&d, "k49", "old-value"));
    fdp_shd_set(&d, 0, "n", 1, &n, 0, &ev);
    fdp_shd_set(&d, 0, "k0", 2, &v, 0, &ev);
    /* an incr that keeps the number's type writes it with one 8-byte
     * store, no journal: killed after it, the incr counted, whole (and
     * it made no other write: a knob at write 2 never fires) */
    test_cond("shdict: an incr is one write, killed after it counted",
              shd_die_in(&d, FDP_SHD_OP_INCR, 1) == 86
              && fdp_shd_get(&d, "n", 1, &out, NULL) == 1
              && d.recovered == 1 && d.undone == 0
              && out.type == FDP_SHD_INTEGER && out.i == 105
              && shd_die_in(&d, FDP_SHD_OP_INCR, 2) == 0
              && fdp_shd_get(&d, "n", 1, &out, NULL) == 1 && out.i == 110
              && fdp_shd_check(&d) == 0);
    /* one that makes it a float (type and number: journaled) is undone */
    shd_incr_by = 0.5;
    test_cond("shdict: an incr killed inside is undone",
              shd_die_in(&d, FDP_SHD_OP_INCR, 2) == 86
              && fdp_shd_get(&d, "n", 1, &out, NULL) == 1
              && d.recovered == 1 && d.undone > 0
              && out.type == FDP_SHD_INTEGER && out.i == 110
              && fdp_shd_check(&d) == 0);
    shd_incr_by = 5;
    fdp_shd_set(&d, 0, "a", 1, &v, 0, &ev);
    i = shd_die_in(&d, FDP_SHD_OP_DELETE, 3);
    test_cond("shdict: a delete killed inside is undone",
              i == 86
              && shd_get_str(&d, "a", "old-value") && d.recovered == 1);
    test_cond("shdict: a flush killed inside flushes",
              shd_die_in(&d, FDP_SHD_OP_FLUSH, 1) == 86
              && shd_get_str(&d, "a", NULL) && d.recovered == 2);
    test_cond("shdict: works after all that",
              fdp_shd_set(&d, 0, "a", 1, &v, 0, &ev) == 0
              && shd_get_str(&d, "a", "old-value"));
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* get_keys' order (most recently used first) as one string. */
static void
cat_key(void *ud, const char *key, size_t klen)
{
    char *b = ud;
    size_t n = strlen(b);

    if (n + klen + 2 < 256) {
        memcpy(b + n, key, klen);
        b[n + klen] = ',';
        b[n + klen + 1] = '\0';
    }
}


/* The lock word (shdict.c, "the lock": the first 8 bytes of the mapping,
 * the owner's pid in the low 31 bits, a token of its start time in the
 * high 32). A dead owner's lock is taken over (the taker repairs) whether
 * the owner was reaped or is still a zombie; a word naming a live process
 * that is not the one that wrote it (a reused pid) is taken over too; a
 * live owner is waited for, never taken over; and two processes
 * incrementing at once count exactly. */
static void
test_shdict_lock(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    volatile uint64_t *word = m;
    struct fdp_shd d;
    struct fdp_shd_val v = sval("value"), v2 = sval("VALUE"), by = ival(1);
    struct fdp_shd_val out;
    siginfo_t si;
    pid_t pid, sleeper, waiter;
    int ev, st = 0, i, ok = 1;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    fdp_shd_set(&d, 0, "a", 1, &v, 0, &ev);

    /* a zombie owner (not reaped yet): found by /proc after a nap */
    if ((pid = fork()) == 0) {
        d.die_op = FDP_SHD_OP_SET;
        d.die_at = 1;
        fdp_shd_set(&d, 0, "a", 1, &v2, 0, &ev);
        _exit(0);
    }
    memset(&si, 0, sizeof(si));
    (void) waitid(P_PID, (id_t) pid, &si, WEXITED | WNOWAIT);
    test_cond("shdict lock: a zombie owner's lock is taken over",
              (*word & 0x7fffffffu) == (uint64_t) pid
              && shd_get_str(&d, "a", "value") && d.recovered == 1);
    waitpid(pid, &st, 0);

    /* a live process's pid with another token (a reused pid) */
    *word = (uint64_t) (uint32_t) getppid() | (uint64_t) 2u << 32;
    test_cond("shdict lock: a word naming another live process is taken "
              "over", shd_get_str(&d, "a", "value") && d.recovered == 1);

    /* a live owner (token 0: judged by kill() alone) is waited for */
    if ((sleeper = fork()) == 0) {
        pause();
        _exit(0);
    }
    *word = (uint64_t) (uint32_t) sleeper;
    if ((waiter = fork()) == 0) {
        alarm(1);                       /* still waiting: killed here */
        (void) fdp_shd_get(&d, "a", 1, &out, NULL);
        _exit(0);
    }
    waitpid(waiter, &st, 0);
    test_cond("shdict lock: a live owner is waited for, not taken over",
              WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM
              && (*word & ~(uint64_t) 0x80000000u)    /* waiters' bit */
                 == (uint64_t) (uint32_t) sleeper);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, &st, 0);
    test_cond("shdict lock: ... and taken over once it is gone",
              shd_get_str(&d, "a", "value") && d.recovered == 1
              && *word == 0);

    /* two processes at once: every increment counted */
    fdp_shd_set(&d, 0, "n", 1, &by, 0, &ev);
    for (i = 0; i < 2; i++) {
        if (fork() == 0) {
            int j;

            for (j = 0; j < 20000; j++) {
                if (fdp_shd_incr(&d, "n", 1, &by, NULL, 0, &out, &ev) != 0) {
                    _exit(1);
                }
            }
            _exit(0);
        }
    }
    for (i = 0; i < 2; i++) {
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            ok = 0;
        }
    }
    test_cond("shdict lock: two processes incrementing count exactly",
              ok && fdp_shd_incr(&d, "n", 1, &by, NULL, 0, &out, &ev) == 0
              && out.i == 40002 && d.recovered == 0 && *word == 0);
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* A worker under --user is not dumpable, and with /proc mounted hidepid=2
 * its peers cannot see its /proc/PID, not even once it is a zombie: an
 * owner that died inside the lock and is not reaped yet (a child forked
 * by a worker that then waits for the lock is never reaped) must still
 * be found dead. Run in a private mount namespace with its own /proc
 * (root only; skipped, with a line, elsewhere). */
static void
test_shdict_lock_hidepid(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v = sval("value"), v2 = sval("VALUE");
    pid_t pid;
    int ev, st = 0;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    fdp_shd_set(&d, 0, "a", 1, &v, 0, &ev);
    if ((pid = fork()) == 0) {
        siginfo_t si;
        pid_t owner, waiter;

        if (getuid() != 0 || unshare(CLONE_NEWNS) < 0
            || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0
            || mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV
                     | MS_NOEXEC, "hidepid=2") < 0
            || setgid(65534) < 0 || setuid(65534) < 0) {
            _exit(77);
        }
        (void) prctl(PR_SET_DUMPABLE, 0);
        if ((owner = fork()) == 0) {
            d.die_op = FDP_SHD_OP_SET;
            d.die_at = 1;
            fdp_shd_set(&d, 0, "a", 1, &v2, 0, &ev);
            _exit(0);
        }
        memset(&si, 0, sizeof(si));
        (void) waitid(P_PID, (id_t) owner, &si, WEXITED | WNOWAIT);
        if ((waiter = fork()) == 0) {
            alarm(5);                   /* still waiting: killed here */
            _exit(shd_get_str(&d, "a", "value") && d.recovered == 1 ? 0 : 1);
        }
        waitpid(waiter, &st, 0);
        waitpid(owner, NULL, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 2);
    }
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        printf("skip: shdict lock under hidepid=2 (needs root and a mount "
               "namespace)\n");
    } else {
        test_cond("shdict lock: a hidden (hidepid=2), not dumpable zombie "
                  "owner's lock is taken over",
                  WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* Gets without the lock under a writer: a child rewrites "a" between a
 * short value (in place) and a long one (a new block, the old one freed)
 * and churns other keys through the same blocks, while the parent gets
 * "a": every answer is one of the two values, whole. Then the get mark:
 * in a full dictionary, a key got (marked) survives the next evictions,
 * one never got since it was set does not. */
static void
test_shdict_lockless(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    const char *shortv = "short-value", *longv = "a-much-longer-value-that-"
                         "needs-a-block-of-its-own-xxxxxxxxxxxxxxxxxxxxxx";
    struct fdp_shd_val v = sval(shortv), out;
    char key[16];
    pid_t pid;
    int ev, i, ok = 1, st = 0, found = 0;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    /* a dictionary just made: its write sequence even (check says so),
     * or every get would give up and take the lock until the first set */
    test_cond("shdict: a dictionary just made is read without the lock",
              fdp_shd_check(&d) == 0);
    fdp_shd_set(&d, 0, "a", 1, &v, 0, &ev);
    if ((pid = fork()) == 0) {
        struct fdp_shd_val s1 = sval(shortv), s2 = sval(longv);

        for (i = 0; i < 20000; i++) {
            snprintf(key, sizeof(key), "k%d", i % 50);
            fdp_shd_set(&d, 0, "a", 1, i & 1 ? &s2 : &s1, 0, &ev);
            fdp_shd_set(&d, 0, key, strlen(key), i & 2 ? &s2 : &s1, 0, &ev);
            if (i % 7 == 0) {
                fdp_shd_set(&d, 0, key, strlen(key), &out, 0, &ev);
            }
        }
        _exit(0);
    }
    for (i = 0; i < 200000 && ok; i++) {
        memset(&out, 0, sizeof(out));
        out.type = FDP_SHD_NIL;         /* (a delete, in the child) */
        if (fdp_shd_get(&d, "a", 1, &out, NULL) != 1
            || out.type != FDP_SHD_STRING
            || !((out.len == strlen(shortv) && memcmp(out.s, shortv,
                                                      out.len) == 0)
                 || (out.len == strlen(longv) && memcmp(out.s, longv,
                                                        out.len) == 0))) {
            ok = 0;
        }
        found++;
        if (i % 1000 == 0 && waitpid(pid, &st, WNOHANG) == pid) {
            pid = 0;
            break;
        }
    }
    if (pid > 0) {
        waitpid(pid, &st, 0);
    }
    test_cond("shdict: gets without the lock under a writer see whole "
              "values", ok && found > 0 && fdp_shd_check(&d) == 0);

    /* an incr stores the number at once: gets without the lock under a
     * child counting across 2^32 never see half of one (each answer
     * inside the range, never going back) */
    {
        int64_t start = 0xffffffffLL - 30000, last = start;
        struct fdp_shd_val c = ival(start);

        fdp_shd_set(&d, 0, "c", 1, &c, 0, &ev);
        if ((pid = fork()) == 0) {
            struct fdp_shd_val one = ival(1);

            for (i = 0; i < 60000; i++) {
                fdp_shd_incr(&d, "c", 1, &one, NULL, 0, &out, &ev);
            }
            _exit(0);
        }
        for (i = 0, ok = 1; i < 400000 && ok; i++) {
            if (fdp_shd_get(&d, "c", 1, &out, NULL) != 1
                || out.type != FDP_SHD_INTEGER || out.i < last
                || out.i > start + 60000) {
                ok = 0;
            }
            last = out.i;
            if (last == start + 60000) {
                break;
            }
        }
        waitpid(pid, &st, 0);
        test_cond("shdict: gets without the lock under incr see whole "
                  "numbers", ok && fdp_shd_get(&d, "c", 1, &out, NULL) == 1
                  && out.i == start + 60000);
    }

    /* the get mark: fill until a set evicts, find the oldest key left
     * (ttl: it does not mark), get it (marked), set 5 more */
    fdp_shd_flush(&d);
    v = sval("value-of-some-length");
    for (i = 0, ev = 0; i < 5000 && !ev; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
    }
    for (i = 0; i < 5000; i++) {
        double t;

        snprintf(key, sizeof(key), "k%d", i);
        if (fdp_shd_ttl(&d, key, strlen(key), &t) == 0) {
            break;
        }
    }
    ok = ev && fdp_shd_get(&d, key, strlen(key), &out, NULL) == 1;
    for (found = 0; found < 5; found++) {
        char nk[16];

        snprintf(nk, sizeof(nk), "new%d", found);
        fdp_shd_set(&d, 0, nk, strlen(nk), &v, 0, &ev);
    }
    {
        char next[16];
        double t;

        snprintf(next, sizeof(next), "k%d", i + 1);
        test_cond("shdict: a key got survives evictions, an older one not",
                  ok && fdp_shd_ttl(&d, key, strlen(key), &t) == 0
                  && fdp_shd_ttl(&d, next, strlen(next), &t) == -ENOENT
                  && fdp_shd_check(&d) == 0);
    }
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* A value rewritten in place (a set of the same block size, an incr) is
 * marked as used, as a get marks it, instead of moved in the LRU list:
 * in a full dictionary the oldest key, rewritten, survives the next
 * evictions (its mark gives it a second chance), the one after it not;
 * get_keys keeps the order of the list (the rewritten key not first). */
static void
test_shdict_inplace_mark(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    char key[16], next[16], nk[16], first[64], want[24];
    int kind, i, n, ev;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    for (kind = 0; kind < 2; kind++) {
        struct fdp_shd_val v = kind == 0 ? sval("value-of-some-length")
                               : ival(1000), w = sval("VALUE-OF-SAME-LENGTH"),
                               by = ival(1), out;
        double t;
        int ok;

        fdp_shd_flush(&d);
        for (i = 0, ev = 0; i < 5000 && !ev; i++) {
            snprintf(key, sizeof(key), "k%d", i);
            fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
        }
        for (i = 0; i < 5000; i++) {
            snprintf(key, sizeof(key), "k%d", i);
            if (fdp_shd_ttl(&d, key, strlen(key), &t) == 0) {
                break;
            }
        }
        snprintf(next, sizeof(next), "k%d", i + 1);
        ok = ev && (kind == 0
                    ? fdp_shd_set(&d, 0, key, strlen(key), &w, 0, &ev) == 0
                    : fdp_shd_incr(&d, key, strlen(key), &by, NULL, 0, &out,
                                   &ev) == 0 && out.i == 1001);
        first[0] = '\0';
        snprintf(want, sizeof(want), "%s,", key);
        ok = ok && fdp_shd_keys(&d, 1, cat_key, first) == 1
             && strcmp(first, want) != 0;
        for (n = 0; n < 5; n++) {
            snprintf(nk, sizeof(nk), "new%d", n);
            fdp_shd_set(&d, 0, nk, strlen(nk), &v, 0, &ev);
        }
        ok = ok && fdp_shd_get(&d, key, strlen(key), &out, NULL) == 1
             && (kind == 0 ? out.len == 20 && memcmp(out.s, "VALUE-OF-SAME-"
                                                     "LENGTH", 20) == 0
                 : out.type == FDP_SHD_INTEGER && out.i == 1001)
             && fdp_shd_ttl(&d, next, strlen(next), &t) == -ENOENT
             && fdp_shd_check(&d) == 0;
        test_cond(kind == 0 ? "shdict: a value set in place is marked, "
                  "not moved (survives evictions)" : "shdict: an incr is "
                  "marked, not moved (survives evictions)", ok);
    }
    {
        /* the write sequence (header offset 236, after the hot line's
         * jn .. lru_tail): a set that changes nothing and an incr (one
         * 8-byte store) leave it alone; a set that changes the value
         * moves it by 2 */
        volatile uint32_t *seq = (volatile uint32_t *) m + 236 / 4;
        struct fdp_shd_val a = sval("same"), b = sval("diff"), one = ival(1),
                           out;
        uint32_t s0;

        fdp_shd_set(&d, 0, "s", 1, &a, 0, &ev);
        fdp_shd_set(&d, 0, "c", 1, &one, 0, &ev);
        s0 = *seq;
        fdp_shd_set(&d, 0, "s", 1, &a, 0, &ev);
        fdp_shd_incr(&d, "c", 1, &one, NULL, 0, &out, &ev);
        test_cond("shdict: a set of the same value and an incr leave the "
                  "write sequence alone", *seq == s0 && out.i == 2
                  && (s0 & 1u) == 0);
        fdp_shd_set(&d, 0, "s", 1, &b, 0, &ev);
        test_cond("shdict: a set that changes the value moves it",
                  *seq == s0 + 2 && shd_get_str(&d, "s", "diff")
                  && fdp_shd_check(&d) == 0);
    }
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* A get moves its entry to the head of the LRU list outside the journal
 * (its own undo record): a child killed after each of the move's writes
 * leaves a list the next locker puts back exactly as it was. */
static void
test_shdict_get_deaths(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v = sval("value"), out;
    char key[16], before[256], after[256];
    int i, ev, at, dead = 0, good = 0;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    for (i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
    }
    for (at = 1; at <= 20; at++) {
        pid_t pid;
        int st = 0;

        before[0] = after[0] = '\0';
        fdp_shd_keys(&d, 0, cat_key, before);
        pid = fork();
        if (pid == 0) {
            d.die_op = FDP_SHD_OP_GET;
            d.die_at = (uint32_t) at;
            (void) fdp_shd_get(&d, at % 2 ? "k3" : "k0", 2, &out, NULL);
            _exit(0);
        }
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 86) {
            break;                      /* the move had fewer writes */
        }
        dead++;
        if (fdp_shd_check(&d) == 0 && d.recovered == 1
            && fdp_shd_keys(&d, 0, cat_key, after) == 10
            && strcmp(before, after) == 0) {
            good++;
        }
    }
    test_cond("shdict: a get killed inside its LRU move is undone",
              dead == 6 && good == dead);
    test_cond("shdict: a get still moves its entry first",
              shd_get_str(&d, "k3", "value")
              && (after[0] = '\0', fdp_shd_keys(&d, 1, cat_key, after) == 1)
              && strcmp(after, "k3,") == 0);
    /* a scribbled move record is not believed: flushed, not followed */
    fdp_shd_set(&d, 0, "k3", 2, &v, 0, &ev);
    if (fork() == 0) {
        d.die_op = FDP_SHD_OP_GET;
        d.die_at = 2;
        (void) fdp_shd_get(&d, "k5", 2, &out, NULL);
        _exit(0);
    }
    wait(NULL);
    /* the header's mv_p (shdict.c: the hot line at 192 holds jn, jover,
     * op, mv_e, mv_p, ...) */
    ((uint32_t *) m)[(192 + 4 * 4) / 4] = 12345;
    test_cond("shdict: a bad move record flushes",
              fdp_shd_get(&d, "k5", 2, &out, NULL) == 0 && d.recovered == 2
              && fdp_shd_check(&d) == 0);
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* Random operations, each in a child killed at a random write (or
 * finishing): after every one the whole structure checks out, and the
 * key holds either its value from before or the new one, whole. */
static void
test_shdict_random_deaths(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    uint32_t seed = 4242;
    int round, bad = 0, deaths = 0, checks_ok = 0, ev;
    char key[16], val[400];

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    for (round = 0; round < 400; round++) {
        int kind, len, st = 0, k;
        uint32_t at;
        pid_t pid;
        struct fdp_shd_val before, after;
        char saved[400];
        size_t savedlen = 0;
        int had;

        seed = seed * 1103515245u + 12345u;
        kind = (int) (seed >> 8) % 4;
        k = (int) (seed >> 12) % 40;
        len = (int) (seed >> 4) % 380;
        seed = seed * 1103515245u + 12345u;
        at = 1 + (seed >> 8) % 40;
        snprintf(key, sizeof(key), "r%d", k);
        memset(val, 'a' + round % 26, sizeof(val));     /* a new value */
        had = fdp_shd_get(&d, key, strlen(key), &before, NULL);
        /* the get may have made it the most recently used: a set to
         * another key first, half the time */
        if (round % 2) {
            struct fdp_shd_val o = ival(round);

            fdp_shd_set(&d, 0, "other", 5, &o, 0, &ev);
        }
        if (had == 1 && before.type == FDP_SHD_STRING) {
            savedlen = before.len;
            memcpy(saved, before.s, savedlen);
        }
        pid = fork();
        if (pid == 0) {
            struct fdp_shd_val v, by = ival(1), out;

            memset(&v, 0, sizeof(v));
            v.type = FDP_SHD_STRING;
            v.s = val;
            v.len = (size_t) len;
            d.die_op = kind == 2 ? FDP_SHD_OP_INCR : FDP_SHD_OP_SET;
            d.die_at = at;
            if (kind == 0 || kind == 1) {
                fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
            } else if (kind == 2) {
                fdp_shd_incr(&d, "counter", 7, &by, &by, 0, &out, &ev);
            } else {
                v.type = FDP_SHD_NIL;
                fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
            }
            _exit(0);
        }
        waitpid(pid, &st, 0);
        deaths += WIFEXITED(st) && WEXITSTATUS(st) == 86;
        if (fdp_shd_check(&d) == 0) {
            checks_ok++;
        }
        if (kind != 2) {
            int r = fdp_shd_get(&d, key, strlen(key), &after, NULL);
            int died = WEXITSTATUS(st) == 86;

            if (died) {
                /* as before */
                if (r != had || (r == 1 && (after.len != savedlen
                    || memcmp(after.s, saved, savedlen) != 0))) {
                    bad++;
                }
            } else if (kind == 3 ? r != 0
                       : r == 1 && (after.len != (size_t) len
                                    || memcmp(after.s, val, (size_t) len))) {
                bad++;
            }
        }
    }
    test_cond("shdict: random deaths: every death found", deaths > 100);
    test_cond("shdict: random deaths: the structure always checks out",
              checks_ok == 400);
    test_cond("shdict: random deaths: values before or after, whole",
              bad == 0);
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* Gets without the lock while one key is rewritten in place between
 * every type (the same 64-byte block each time), its flags, ttl and
 * number changed, counted by incr (one store each) and deleted and set
 * again: each answer is one of the values written, whole, with the flags
 * written with it (integer: flags 1 and both halves equal; float: flags
 * 2, n + 0.5; boolean: flags 3; a string: its own flags, 4 or 5). */
static int
shd_mixed_ok(const struct fdp_shd_val *v)
{
    switch (v->type) {
    case FDP_SHD_INTEGER:
        return v->flags == 1 && (uint32_t) v->i == (uint32_t) (v->i >> 32);
    case FDP_SHD_NUMBER:
        return v->flags == 2 && v->n - (double) (int64_t) v->n == 0.5;
    case FDP_SHD_BOOLEAN:
        return v->flags == 3 && (v->i == 0 || v->i == 1);
    case FDP_SHD_STRING:
        return (v->flags == 4 && v->len == 6 && memcmp(v->s, "ABCDEF", 6) == 0)
               || (v->flags == 5 && v->len == 3 && memcmp(v->s, "xyz", 3)
                   == 0);
    default:
        return 0;
    }
}


static void
test_shdict_lockless_mixed(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v = ival(0), out;
    pid_t pid;
    int ev, i, st = 0, seen[6] = { 0 }, ok = 1, n = 0;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    v.flags = 1;
    fdp_shd_set(&d, 0, "a", 1, &v, 0, &ev);
    if ((pid = fork()) == 0) {
        for (i = 0; i < 30000; i++) {
            struct fdp_shd_val w, by = ival(0x100000001LL);
            int64_t k = i & 0x3fff;

            w = ival(k << 32 | k);
            w.flags = 1;
            fdp_shd_set(&d, 0, "a", 1, &w, i % 3 ? 0 : 100, &ev);
            fdp_shd_incr(&d, "a", 1, &by, NULL, 0, &out, &ev);
            fdp_shd_incr(&d, "a", 1, &by, NULL, 0, &out, &ev);
            w.type = FDP_SHD_NUMBER;
            w.n = (double) i + 0.5;
            w.flags = 2;
            fdp_shd_set(&d, 0, "a", 1, &w, 0, &ev);
            by = ival(1);
            fdp_shd_incr(&d, "a", 1, &by, NULL, 0, &out, &ev);
            w = sval(i & 1 ? "ABCDEF" : "xyz");
            w.flags = i & 1 ? 4 : 5;
            fdp_shd_set(&d, 0, "a", 1, &w, 0, &ev);
            fdp_shd_expire(&d, "a", 1, i % 2 ? 50 : 0);
            w = ival(i & 1);
            w.type = FDP_SHD_BOOLEAN;
            w.flags = 3;
            fdp_shd_set(&d, 0, "a", 1, &w, 0, &ev);
            if (i % 5 == 0) {
                w.type = FDP_SHD_NIL;
                fdp_shd_set(&d, 0, "a", 1, &w, 0, &ev);
                w = ival(k << 32 | k);
                w.flags = 1;
                fdp_shd_set(&d, 0, "a", 1, &w, 0, &ev);
            }
        }
        _exit(0);
    }
    for (i = 0; i < 2000000 && ok; i++) {
        int r;

        memset(&out, 0, sizeof(out));
        r = fdp_shd_get(&d, "a", 1, &out, NULL);
        if (r == 1) {
            ok = shd_mixed_ok(&out);
            seen[out.type]++;
            n++;
        } else if (r != 0) {
            ok = 0;
        }
        if (i % 4096 == 0 && waitpid(pid, &st, WNOHANG) == pid) {
            pid = 0;
            break;
        }
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    if (!ok) {
        printf("# mixed: bad answer type %d flags %u i %lld n %g len %zu\n",
               out.type, out.flags, (long long) out.i, out.n, out.len);
    }
    if (getenv("FDPOOL_TEST_VERBOSE") != NULL) {
        printf("# mixed: %d answers: %d int, %d float, %d bool, %d string\n",
               n, seen[FDP_SHD_INTEGER], seen[FDP_SHD_NUMBER],
               seen[FDP_SHD_BOOLEAN], seen[FDP_SHD_STRING]);
    }
    test_cond("shdict: gets without the lock under in-place rewrites of "
              "every type see whole values with their flags",
              ok && n > 1000 && fdp_shd_check(&d) == 0);
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* The second chance at its edges: a dictionary whose every entry is
 * marked still makes room (set says forcible, and returns: the chances
 * are bounded), a value no 30 evictions can make room for gives "no
 * memory" and leaves a whole dictionary, and the key being set, itself
 * the tail (marked or not), is replaced once, never left twice. */
static void
test_shdict_evict_edges(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v = sval("v"), out;
    char key[16], big[40000];
    int i, n, ev, r, round;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    memset(big, 'B', sizeof(big));
    for (round = 0; round < 2; round++) {
        fdp_shd_flush(&d);
        for (n = 0, ev = 0; n < 5000 && !ev; n++) {
            snprintf(key, sizeof(key), "k%d", n);
            fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
        }
        for (i = 0; i < n; i++) {          /* every entry marked */
            snprintf(key, sizeof(key), "k%d", i);
            (void) fdp_shd_get(&d, key, strlen(key), &out, NULL);
        }
        if (round == 0) {
            struct fdp_shd_val w = sval("a-value-of-a-bigger-block-"
                                        "than-the-others-xxxxxxxxxx");

            ev = 0;
            r = fdp_shd_set(&d, 0, "new", 3, &w, 0, &ev);
            test_cond("shdict: a dictionary of marked entries makes room "
                      "(forcible)", r == 0 && ev == 1
                      && shd_get_str(&d, "new", w.s)
                      && fdp_shd_check(&d) == 0);
            w.s = big;
            w.len = 30000;
            ev = 0;
            r = fdp_shd_set(&d, 0, "huge", 4, &w, 0, &ev);
            test_cond("shdict: a value 30 evictions cannot make room for: "
                      "no memory, forcible, a whole dictionary",
                      r == -ENOMEM && ev == 1 && shd_get_str(&d, "huge", NULL)
                      && fdp_shd_check(&d) == 0);
        } else {
            /* the tail is the oldest key left: set it to a value of
             * another block size, marked (round 1, every entry is) */
            struct fdp_shd_val w = sval("the-oldest-key-set-again-to-a-"
                                        "longer-value-xxxxxxxxxxxxxxxxx");
            double t;

            for (i = 0; i < n; i++) {
                snprintf(key, sizeof(key), "k%d", i);
                if (fdp_shd_ttl(&d, key, strlen(key), &t) == 0) {
                    break;
                }
            }
            r = fdp_shd_set(&d, 0, key, strlen(key), &w, 0, &ev);
            test_cond("shdict: the tail key set to a bigger value is "
                      "there once, with it", r == 0
                      && shd_get_str(&d, key, w.s) && fdp_shd_check(&d) == 0
                      && (w.type = FDP_SHD_NIL, fdp_shd_set(&d, 0, key,
                          strlen(key), &w, 0, &ev) == 0)
                      && shd_get_str(&d, key, NULL));
        }
    }
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* incr at the edges of its numbers, as docs/api.md says: two integers
 * wrap as Lua's + (math.maxinteger + 1 is math.mininteger, an integer),
 * a float stays a float through nan and inf (each one store, the
 * structure whole), a string is "not a number" and left as it was. */
static void
test_shdict_incr_edges(void)
{
    size_t size = 64 * 1024;
    void *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v = ival(INT64_MAX), by = ival(1), out, f;
    int ev;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    fdp_shd_set(&d, 0, "n", 1, &v, 0, &ev);
    test_cond("shdict: incr of math.maxinteger by 1 wraps to "
              "math.mininteger, an integer",
              fdp_shd_incr(&d, "n", 1, &by, NULL, 0, &out, &ev) == 0
              && out.type == FDP_SHD_INTEGER && out.i == INT64_MIN
              && fdp_shd_get(&d, "n", 1, &out, NULL) == 1
              && out.type == FDP_SHD_INTEGER && out.i == INT64_MIN);
    f = ival(0);
    f.type = FDP_SHD_NUMBER;
    f.n = 1.5;
    fdp_shd_set(&d, 0, "f", 1, &f, 0, &ev);
    f.n = HUGE_VAL;
    test_cond("shdict: incr of a float to inf, then nan, stays a float",
              fdp_shd_incr(&d, "f", 1, &f, NULL, 0, &out, &ev) == 0
              && out.type == FDP_SHD_NUMBER && isinf(out.n)
              && (f.n = -HUGE_VAL, fdp_shd_incr(&d, "f", 1, &f, NULL, 0,
                                                &out, &ev) == 0)
              && out.type == FDP_SHD_NUMBER && isnan(out.n)
              && fdp_shd_get(&d, "f", 1, &out, NULL) == 1
              && out.type == FDP_SHD_NUMBER && isnan(out.n)
              && fdp_shd_check(&d) == 0);
    v = sval("text");
    fdp_shd_set(&d, 0, "s", 1, &v, 0, &ev);
    test_cond("shdict: incr of a string: not a number, the string kept",
              fdp_shd_incr(&d, "s", 1, &by, &by, 0, &out, &ev) == -EINVAL
              && shd_get_str(&d, "s", "text") && fdp_shd_check(&d) == 0);
    fdp_shd_detach(&d);
    munmap(m, size);
}


/* A readable dump of a dictionary, taken from a private copy of its
 * mapping (so the gets that read it mark nothing in the real one): the
 * keys in LRU order, each with its value, flags and whether it has a
 * ttl, then the free space. The lock must be free. */
static void
shd_dump(const void *m, size_t size, char *out, size_t cap)
{
    void *copy = malloc(size);
    struct fdp_shd c;
    char keys[4096];
    size_t n = 0, i = 0;

    out[0] = '\0';
    keys[0] = '\0';
    if (copy == NULL) {
        return;
    }
    memcpy(copy, m, size);
    if (fdp_shd_attach(&c, copy, size) < 0) {
        free(copy);
        return;
    }
    (void) fdp_shd_keys(&c, 0, cat_key, keys);
    while (keys[i] != '\0' && n + 200 < cap) {
        char *comma = strchr(keys + i, ',');
        struct fdp_shd_val v;
        double t = 0;
        size_t kl = (size_t) (comma - (keys + i));
        int r = fdp_shd_get(&c, keys + i, kl, &v, &t);

        n += (size_t) snprintf(out + n, cap - n, "%.*s=", (int) kl, keys + i);
        if (r != 1) {
            n += (size_t) snprintf(out + n, cap - n, "?%d", r);
        } else if (v.type == FDP_SHD_STRING) {
            n += (size_t) snprintf(out + n, cap - n, "s:%.*s", (int) (v.len
                                   < 60 ? v.len : 60), v.s);
        } else if (v.type == FDP_SHD_NUMBER) {
            n += (size_t) snprintf(out + n, cap - n, "f:%g", v.n);
        } else {
            n += (size_t) snprintf(out + n, cap - n, "%c:%lld",
                                   v.type == FDP_SHD_INTEGER ? 'i' : 'b',
                                   (long long) v.i);
        }
        n += (size_t) snprintf(out + n, cap - n, "/%u%s,", v.flags,
                               t > 0 ? "/ttl" : "");
        i = (size_t) (comma - keys) + 1;
    }
    snprintf(out + n, cap - n, "free=%lld", (long long) fdp_shd_free_space(&c));
    fdp_shd_detach(&c);
    free(copy);
}


/* One operation of the death matrix, run by the child with the knob. */
static void
shd_matrix_op(struct fdp_shd *d, int which)
{
    struct fdp_shd_val v, by = ival(3), init = ival(10), out;
    char big[3000];
    int ev;

    memset(big, 'B', sizeof(big));
    switch (which) {
    case 0:     /* set of a new key: a fresh block */
        v = sval("brand-new-value");
        fdp_shd_set(d, 0, "new", 3, &v, 0, &ev);
        break;
    case 1:     /* set in place: other bytes, flags and a ttl */
        v = sval("SAME-LENGTH-OTHER-BYTES");
        v.flags = 9;
        fdp_shd_set(d, 0, "s", 1, &v, 100, &ev);
        break;
    case 2:     /* set in place: a string becomes an integer */
        v = ival(0x123456789LL);
        fdp_shd_set(d, 0, "t", 1, &v, 0, &ev);
        break;
    case 3:     /* set in place: an integer becomes a short string */
        v = sval("xyz");
        fdp_shd_set(d, 0, "i", 1, &v, 0, &ev);
        break;
    case 4:     /* set of a longer value: a new block, the old freed */
        v = sval("a-value-long-enough-to-need-a-bigger-block-than-before-"
                 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        fdp_shd_set(d, 0, "s", 1, &v, 0, &ev);
        break;
    case 5:     /* incr of an integer: one store */
        fdp_shd_incr(d, "i", 1, &by, NULL, 0, &out, &ev);
        break;
    case 6:     /* incr of an integer by a float: type and number */
        by.type = FDP_SHD_NUMBER;
        by.n = 0.5;
        fdp_shd_incr(d, "i", 1, &by, NULL, 0, &out, &ev);
        break;
    case 7:     /* incr of a float by an integer: one store */
        fdp_shd_incr(d, "f", 1, &by, NULL, 0, &out, &ev);
        break;
    case 8:     /* incr of a missing key with init and init_ttl */
        fdp_shd_incr(d, "m", 1, &by, &init, 50, &out, &ev);
        break;
    case 9:     /* add of a new key */
        v = sval("added");
        fdp_shd_set(d, 1, "add", 3, &v, 0, &ev);
        break;
    case 14:    /* replace with a value that needs a bigger block */
        v = sval("replaced-by-a-much-longer-value-than-it-had-before-yyyy");
        fdp_shd_set(d, 2, "t", 1, &v, 0, &ev);
        break;
    case 10:    /* delete */
        v.type = FDP_SHD_NIL;
        fdp_shd_set(d, 0, "s", 1, &v, 0, &ev);
        break;
    case 11:    /* expire: a ttl, then none */
        fdp_shd_expire(d, "i", 1, 30);
        break;
    case 12:    /* a big set in a full dictionary: marked tails moved
                 * to the head (second chances), then evictions */
        v = sval("");
        v.s = big;
        v.len = sizeof(big);
        fdp_shd_set(d, 0, "big", 3, &v, 0, &ev);
        break;
    case 13:    /* incr with init in a full dictionary: it evicts */
        fdp_shd_incr(d, "m", 1, &by, &init, 0, &out, &ev);
        break;
    }
}


/* Every operation killed at each of its writes, one after another, from
 * the same starting mapping: the next locker repairs it (never flushes)
 * and the dictionary is exactly as before (keys, LRU order, values,
 * flags, ttls, free space), or, for a death that had nothing to undo,
 * before or after the whole operation (an incr's one store). */
static void
test_shdict_death_matrix(void)
{
    size_t size = 256 * 1024;
    void *m = shd_map(size), *pristine = malloc(size);
    static char before[16384], after[16384], done[16384];
    struct fdp_shd d;
    int which, ev, i;

    for (which = 0; which <= 14; which++) {
        int at, deaths = 0, good = 0, counted = 0, st = 0;
        pid_t pid;
        char name[80];

        fdp_shd_format(m, size);
        fdp_shd_attach(&d, m, size);
        {
            struct fdp_shd_val s = sval("SAME-LENGTH-SAME-BYTES"),
                               t = sval("abc"), i0 = ival(7), f = ival(0),
                               b = ival(1), x = sval("pad");

            f.type = FDP_SHD_NUMBER;
            f.n = 2.5;
            b.type = FDP_SHD_BOOLEAN;
            fdp_shd_set(&d, 0, "s", 1, &s, 0, &ev);
            fdp_shd_set(&d, 0, "t", 1, &t, 0, &ev);
            fdp_shd_set(&d, 0, "i", 1, &i0, 0, &ev);
            fdp_shd_set(&d, 0, "f", 1, &f, 0, &ev);
            fdp_shd_set(&d, 0, "b", 1, &b, 0, &ev);
            fdp_shd_set(&d, 0, "x", 1, &x, 0, &ev);
        }
        if (which == 12 || which == 13) {
            /* full: fill until a set evicts, then mark
             * every other key (gets without the lock) */
            char key[16], val[200];
            struct fdp_shd_val v;

            memset(val, 'v', sizeof(val) - 1);
            val[sizeof(val) - 1] = '\0';
            v = sval(val);
            for (i = 0, ev = 0; i < 5000 && !ev; i++) {
                snprintf(key, sizeof(key), "k%d", i);
                fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
            }
            for (i = 0; i < 5000; i += 2) {
                struct fdp_shd_val o;

                snprintf(key, sizeof(key), "k%d", i);
                (void) fdp_shd_get(&d, key, strlen(key), &o, NULL);
            }
        }
        memcpy(pristine, m, size);
        shd_dump(m, size, before, sizeof(before));
        /* the whole operation, once */
        if ((pid = fork()) == 0) {
            shd_matrix_op(&d, which);
            _exit(0);
        }
        waitpid(pid, &st, 0);
        shd_dump(m, size, done, sizeof(done));
        for (at = 1; at <= 3000; at++) {
            memcpy(m, pristine, size);
            if ((pid = fork()) == 0) {
                d.die_op = which == 5 || which == 6 || which == 7
                           || which == 8 || which == 13 ? FDP_SHD_OP_INCR
                           : which == 11 ? FDP_SHD_OP_EXPIRE
                           : FDP_SHD_OP_SET;
                d.die_at = (uint32_t) at;
                shd_matrix_op(&d, which);
                _exit(0);
            }
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 86) {
                break;
            }
            deaths++;
            if (fdp_shd_check(&d) == 0 && d.recovered == 1) {
                shd_dump(m, size, after, sizeof(after));
                if (strcmp(after, before) == 0) {
                    good++;
                } else if (d.undone == 0 && strcmp(after, done) == 0) {
                    good++;
                    counted++;
                } else if (getenv("FDPOOL_TEST_VERBOSE") != NULL) {
                    printf("# op %d at %d (undone %u):\n# before %s\n"
                           "# after  %s\n# done   %s\n", which, at,
                           d.undone, before, after, done);
                }
            }
        }
        snprintf(name, sizeof(name), "shdict: op %d killed at each of its "
                 "%d writes is repaired exactly", which, deaths);
        if (getenv("FDPOOL_TEST_VERBOSE") != NULL) {
            printf("# %s (counted %d)\n", name, counted);
        }
        test_cond(name, deaths > 0 && good == deaths && strcmp(before, done)
                  != 0 && (which == 5 || which == 7 ? counted == 1
                           : counted == 0));
        fdp_shd_detach(&d);
    }
    free(pristine);
    munmap(m, size);
}


/* Scribbles on the mapping (what a bad worker could do): every operation
 * returns (-EIO at worst, the dictionary flushed), never crashes. */
static void
test_shdict_corrupt(void)
{
    size_t size = 64 * 1024;
    unsigned char *m = shd_map(size);
    struct fdp_shd d;
    struct fdp_shd_val v = sval("value"), out, by = ival(1);
    uint32_t seed = 12345;
    int ev, round, i, ok = 1, eio = 0;
    char key[16];
    double ttl;

    fdp_shd_format(m, size);
    fdp_shd_attach(&d, m, size);
    for (round = 0; round < 300; round++) {
        for (i = 0; i < 20; i++) {
            snprintf(key, sizeof(key), "k%d", i);
            fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
        }
        /* scribble 8 random words past the mutex */
        for (i = 0; i < 8; i++) {
            uint32_t off, val;

            seed = seed * 1103515245u + 12345u;
            off = (128 + seed % (uint32_t) (size - 132)) & ~3u;
            seed = seed * 1103515245u + 12345u;
            val = round % 3 == 0 ? seed : round % 3 == 1 ? 0xffffffffu
                  : seed % (uint32_t) size;
            memcpy(m + off, &val, 4);
        }
        for (i = 0; i < 20; i++) {
            int r;

            snprintf(key, sizeof(key), "k%d", i);
            r = fdp_shd_get(&d, key, strlen(key), &out, &ttl);
            eio += r == -EIO;
            r = fdp_shd_incr(&d, key, strlen(key), &by, &by, 0, &out, &ev);
            eio += r == -EIO;
            if (r < 0 && r != -EIO && r != -EINVAL && r != -ENOMEM) {
                ok = 0;
            }
            eio += fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev) == -EIO;
        }
        (void) fdp_shd_keys(&d, 0, count_key, &i);
        (void) fdp_shd_free_space(&d);
    }
    test_cond("shdict: scribbled mappings never crash an operation", ok);
    test_cond("shdict: and are noticed (-EIO, flushed)", eio > 0);
    test_cond("shdict: consistent after the flush", fdp_shd_flush(&d) == 0
              && fdp_shd_check(&d) == 0);
    test_cond("shdict: still works afterwards", fdp_shd_flush(&d) == 0
              && fdp_shd_set(&d, 0, "z", 1, &v, 0, &ev) == 0
              && shd_get_str(&d, "z", "value"));
    fdp_shd_detach(&d);
    memset(m, 0xff, 128);
    test_cond("shdict: attach refuses a foreign mapping",
              fdp_shd_attach(&d, m, size) == -EINVAL);
    munmap(m, size);
}


/* ---- fcache: the worker's Lua allocator (src/fcache.h) -------------- */

/* Does a block hold its bytes (tag + i)? */
static int
fc_intact(const unsigned char *p, size_t n, unsigned char tag)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (p[i] != (unsigned char) (tag + i)) {
            return 0;
        }
    }
    return 1;
}


/* The bytes on the cache's lists. */
static size_t
fc_listed(const struct fcache *fc)
{
    size_t n = 0;
    int k;

    for (k = 0; k <= FC_CLASSES; k++) {
        void *p;

        for (p = fc->head[k]; p != NULL; p = *(void **) p) {
            n += (size_t) k << 3;
        }
    }
    return n;
}


/* A size for the next block: a class boundary (FC_MAX's among them)
 * one time in three, else anything up to twice FC_MAX. */
static size_t
fc_size(unsigned *r)
{
    static const size_t edge[] = { 1, 7, 8, 9, 16, 17, 255, 256, 257, 503,
                                   504, 505, 511, 512, 513, 519, 520, 521,
                                   1024, 4096 };

    *r = *r * 1103515245u + 12345u;
    if ((*r >> 16) % 3 == 0) {
        return edge[(*r >> 8) % (sizeof(edge) / sizeof(edge[0]))];
    }
    return 1 + (*r >> 8) % (2 * FC_MAX + 76);
}


/* fc_alloc as Lua calls it: new blocks (osize a type tag), reallocs
 * larger, smaller and across FC_MAX, frees; every live block keeps its
 * bytes (no block handed to two owners, no copy short), the cache's
 * count is what its lists hold and never passes FC_CAP. exact: as for an
 * allocator whose blocks hold only what was asked (FC_HOLDS asks). */
static void
fc_torture(int exact, unsigned seed, long ops)
{
    enum { NB = 8000 };         /* more small bytes than FC_CAP */
    static unsigned char *blk[NB];
    static size_t sz[NB];
    static unsigned char tag[NB];
    struct fcache fc;
    unsigned r = seed;
    long op;
    int i, ok = 1, capped = 1, counted = 1, moved = 0;

    memset(&fc, 0, sizeof(fc));
    fc.exact = exact;
    for (op = 0; op < ops && ok; op++) {
        r = r * 1103515245u + 12345u;
        i = (int) ((r >> 10) % NB);
        if (blk[i] != NULL && !fc_intact(blk[i], sz[i], tag[i])) {
            ok = 0;
            break;
        }
        r = r * 1103515245u + 12345u;
        if ((r >> 12) % 4 == 0) {
            if (blk[i] != NULL) {
                (void) fc_alloc(&fc, blk[i], sz[i], 0);
                blk[i] = NULL;
            }
        } else if (blk[i] == NULL) {
            size_t j;

            sz[i] = fc_size(&r);
            blk[i] = fc_alloc(&fc, NULL, 5 /* LUA_TTABLE */, sz[i]);
            if (blk[i] == NULL) {
                ok = 0;
                break;
            }
            tag[i] = (unsigned char) r;
            for (j = 0; j < sz[i]; j++) {
                blk[i][j] = (unsigned char) (tag[i] + j);
            }
        } else {
            size_t n = fc_size(&r), o = sz[i], j;
            unsigned char *p = fc_alloc(&fc, blk[i], o, n);

            if (p == NULL) {
                ok = 0;
                break;
            }
            moved += p != blk[i];
            blk[i] = p;
            sz[i] = n;
            for (j = o; j < n; j++) {
                p[j] = (unsigned char) (tag[i] + j);
            }
            ok = fc_intact(p, n, tag[i]);
        }
        capped = capped && fc.bytes <= FC_CAP;
        if (op % 50000 == 0) {
            counted = counted && fc_listed(&fc) == fc.bytes;
        }
    }
    counted = counted && fc_listed(&fc) == fc.bytes;
    test_cond("fcache: every live block keeps its bytes", ok);
    test_cond("fcache: reallocs moved blocks", moved > 0);
    test_cond("fcache: the cache's count is what its lists hold", counted);
    test_cond("fcache: at most FC_CAP bytes cached", capped);
    for (i = 0; i < NB; i++) {
        if (blk[i] != NULL) {
            (void) fc_alloc(&fc, blk[i], sz[i], 0);
            blk[i] = NULL;
        }
    }
    test_cond("fcache: FC_CAP bytes cached once all are freed",
              fc.bytes > FC_CAP - FC_MAX && fc.bytes <= FC_CAP
              && fc_listed(&fc) == fc.bytes);
    for (i = 0; i <= FC_CLASSES; i++) {
        while (fc.head[i] != NULL) {
            void *p = fc.head[i];

            fc.head[i] = *(void **) p;
            free(p);
        }
    }
}


static void
test_fcache(void)
{
    struct fcache fc;
    unsigned char *p, *q;

    /* the same class: the block stays; across FC_MAX: it moves, its
     * bytes kept; a freed small block comes back for its class */
    memset(&fc, 0, sizeof(fc));
    p = fc_alloc(&fc, NULL, 0, 20);
    memset(p, 'a', 20);
    test_cond("fcache: a realloc within the class keeps the block",
              fc_alloc(&fc, p, 20, 24) == p);
    q = fc_alloc(&fc, p, 24, FC_MAX + 100);
    test_cond("fcache: a realloc past FC_MAX keeps the bytes", q != NULL
              && memcmp(q, "aaaaaaaaaaaaaaaaaaaa", 20) == 0);
    test_cond("fcache: the old block is cached", fc.bytes == 24);
    p = fc_alloc(&fc, q, FC_MAX + 100, 10);
    test_cond("fcache: a realloc below FC_MAX keeps the bytes", p != NULL
              && memcmp(p, "aaaaaaaaaa", 10) == 0);
    q = fc_alloc(&fc, NULL, 3, 17);
    test_cond("fcache: a cached block comes back for its class",
              q != NULL && fc.bytes == 0);
    (void) fc_alloc(&fc, p, 10, 0);
    (void) fc_alloc(&fc, q, 17, 0);
    test_cond("fcache: freed blocks are cached", fc.bytes == 16 + 24);
    free(fc.head[2]);
    free(fc.head[3]);
    fc_torture(0, 1, 400000);
    fc_torture(1, 7, 400000);
}


int
main(void)
{
    int before;

    setvbuf(stdout, NULL, _IOLBF, 0);
    before = fd_count();
    test_fdpass_basic();
    test_fdpass_truncation();
    test_msg_decode();
    test_msg_check();
    test_chan_roundtrip();
    test_chan_queue();
    test_chan_queue_bound();
    test_loop_timers();
    test_loop_io();
    test_status();
    test_http_head();
    test_http_response();
    test_head_filter();
    test_proxy_codes();
    test_http_chunked();
    test_wsproto();
    test_shdict_values();
    test_shdict_lru();
    test_shdict_inplace_mark();
    test_shdict_owner_dead();
    test_shdict_get_deaths();
    test_shdict_lock();
    test_shdict_lock_hidepid();
    test_shdict_lockless();
    test_shdict_random_deaths();
    test_shdict_death_matrix();
    test_shdict_lockless_mixed();
    test_shdict_evict_edges();
    test_shdict_incr_edges();
    test_shdict_corrupt();
    test_fcache();
    test_cond("no fd leaked by the whole run", fd_count() == before);
    test_report();
}
