/*
 * ctlclient.c - the client side of the control socket (`pool status`,
 * `pool reload`, ...): send one command line, read the whole answer,
 * retry while the pool is busy; and the default directory where control
 * sockets live (the server makes its path there too).
 */
#include "fdp.h"
#include "ctlclient.h"
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CTL_RELOAD_WAIT_S 75    /* client: a reload's new generation (an
                                 * upgrade's new master) may take up to
                                 * 60 s to be READY */


/* Whether a pool still listens at path: a master killed while a
 * command was out closes that connection first and its listening socket
 * a moment later, so the connect is tried for half a second (a refused
 * uid is let in by connect each time). */
static int
still_there(const char *path)
{
    struct sockaddr_un un;
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    int i, fd, r;

    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, path, strlen(path) + 1);
    for (i = 0; i < 10; i++) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return 1;
        }
        r = connect(fd, (struct sockaddr *) &un, sizeof(un)) == 0 ? 0 : errno;
        fdp_close(&fd);
        if (r == ECONNREFUSED || r == ENOENT) {
            return 0;
        }
        nanosleep(&ts, NULL);
    }
    return 1;
}


/* One attempt: 0, or -errno with err set. The codes that mean "try
 * again" (retryable()): -EBUSY (the pool is busy with other clients),
 * -ECONNABORTED (closed without an answer), -EPIPE, -ECONNRESET. */
static int
control_request_once(const char *path, const char *cmd,
                     struct fdp_buf *out, char *err, size_t errlen)
{
    struct sockaddr_un un;
    struct timeval tv = { strcmp(cmd, "reload") == 0
                          || strcmp(cmd, "upgrade") == 0
                          ? CTL_RELOAD_WAIT_S : 5, 0 };
    char buf[4096];
    ssize_t n;
    int fd, r;

    if (strlen(path) >= sizeof(un.sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "socket() failed (%s)", strerror(-r));
        return r;
    }
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *) &un, sizeof(un)) < 0) {
        r = -errno;
        snprintf(err, errlen, "cannot reach a pool at %s (%s)", path,
                 strerror(-r));
        fdp_close(&fd);
        return r;
    }
    snprintf(buf, sizeof(buf), "%s\n", cmd);
    if (send(fd, buf, strlen(buf), MSG_NOSIGNAL) < 0) {
        r = -errno;
        snprintf(err, errlen, "cannot send to %s (%s)", path, strerror(-r));
        fdp_close(&fd);
        return r;
    }
    for (;;) {
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        fdp_buf_printf(out, "%.*s", (int) n, buf);
    }
    if (n < 0) {
        r = -errno;
        snprintf(err, errlen, "no answer from %s (%s)", path, strerror(-r));
        fdp_close(&fd);
        return r;
    }
    fdp_close(&fd);
    if (out->len == 0) {
        snprintf(err, errlen, "the pool at %s closed the connection without "
                 "an answer (%s)", path, still_there(path) ? "permission?"
                 : "it is gone: it died or stopped meanwhile");
        return -ECONNABORTED;
    }
    if (out->len == 9 && memcmp(out->data, "ERR busy\n", 9) == 0) {
        snprintf(err, errlen, "the pool at %s is busy with other control "
                 "clients", path);
        return -EBUSY;
    }
    return 0;
}


/* ERR busy (nothing done) and a send that failed (nothing delivered)
 * are tried again. A close without an answer after the command went out
 * only for a command that changes nothing: a reload, an upgrade, a stop
 * or a scale may have run before the pool closed (killed, or handed over
 * by an upgrade), and a second one would go to whoever holds the socket
 * now -- a new master upgraded again. */
static int
retryable(int r, const char *cmd)
{
    return r == -EBUSY || r == -EPIPE
           || ((r == -ECONNABORTED || r == -ECONNRESET)
               && (strcmp(cmd, "ping") == 0 || strcmp(cmd, "status") == 0
                   || strncmp(cmd, "status ", 7) == 0));
}


/*
 * Client side: send cmd, read the whole answer into out. Retries for 3 s
 * while the pool is busy with other control clients. Returns 0, or
 * -errno with err set (-ENOENT or -ECONNREFUSED: no pool there;
 * -EACCES: permission; -EAGAIN: no answer in time; -EBUSY: still busy).
 */
int
fdp_control_request(const char *path, const char *cmd, struct fdp_buf *out,
                    char *err, size_t errlen)
{
    uint64_t deadline = fdp_now_ms() + 3000;
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    int r;

    for (;;) {
        out->len = 0;
        r = control_request_once(path, cmd, out, err, errlen);
        if (!retryable(r, cmd) || fdp_now_ms() >= deadline) {
            return r;
        }
        nanosleep(&ts, NULL);
    }
}


/*
 * The default directory for control sockets: /run/fdpool as root, else
 * $XDG_RUNTIME_DIR/fdpool, else /tmp/fdpool-UID. Created 0700 if
 * missing; an existing one must be a directory owned by us that nobody
 * else can write. Returns 0, or -errno with err set (-EPERM: not a
 * private directory).
 */
int
fdp_control_default_dir(char *out, size_t n, int create, char *err,
                        size_t errlen)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    int r;

    if (geteuid() == 0) {
        snprintf(out, n, "/run/fdpool");
    } else if (xdg && xdg[0] == '/') {
        snprintf(out, n, "%s/fdpool", xdg);
    } else {
        snprintf(out, n, "/tmp/fdpool-%ld", (long) geteuid());
    }
    if (create && mkdir(out, 0700) < 0 && errno != EEXIST) {
        r = -errno;
        snprintf(err, errlen, "cannot create %s (%s)", out, strerror(-r));
        return r;
    }
    if (lstat(out, &st) < 0) {
        r = -errno;
        snprintf(err, errlen, "%s: %s", out, strerror(-r));
        return r;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()
        || (st.st_mode & 0022)) {
        snprintf(err, errlen, "%s is not a private directory of this user; "
                 "refusing to use it", out);
        return -EPERM;
    }
    return 0;
}
