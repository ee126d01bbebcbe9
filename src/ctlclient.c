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

#define CTL_RELOAD_WAIT_S 75    /* client: a reload's new generation may
                                 * take up to 60 s to be READY */


/* One attempt; -2 means "try again" (the pool was busy). */
static int
control_request_once(const char *path, const char *cmd,
                     struct fdp_buf *out, char *err, size_t errlen)
{
    struct sockaddr_un un;
    struct timeval tv = { strcmp(cmd, "reload") == 0 ? CTL_RELOAD_WAIT_S : 5,
                          0 };
    char buf[4096];
    ssize_t n;
    int fd;

    if (strlen(path) >= sizeof(un.sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket() failed (%s)", strerror(errno));
        return -1;
    }
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *) &un, sizeof(un)) < 0) {
        snprintf(err, errlen, "cannot reach a pool at %s (%s)", path,
                 strerror(errno));
        fdp_close(&fd);
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s\n", cmd);
    if (send(fd, buf, strlen(buf), MSG_NOSIGNAL) < 0) {
        int e = errno;

        snprintf(err, errlen, "cannot send to %s (%s)", path, strerror(e));
        fdp_close(&fd);
        return e == EPIPE || e == ECONNRESET ? -2 : -1;
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
        int e = errno;

        snprintf(err, errlen, "no answer from %s (%s)", path, strerror(e));
        fdp_close(&fd);
        return e == ECONNRESET ? -2 : -1;
    }
    fdp_close(&fd);
    if (out->len == 0) {
        snprintf(err, errlen, "the pool at %s closed the connection without "
                 "an answer (permission?)", path);
        return -2;
    }
    if (out->len == 9 && memcmp(out->data, "ERR busy\n", 9) == 0) {
        snprintf(err, errlen, "the pool at %s is busy with other control "
                 "clients", path);
        return -2;
    }
    return 0;
}


/*
 * Client side: send cmd, read the whole answer into out. Retries for 3 s
 * while the pool is busy with other control clients. Returns 0, or -1
 * with err set (no pool there, permission, timeout).
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
        if (r != -2 || fdp_now_ms() >= deadline) {
            return r == 0 ? 0 : -1;
        }
        nanosleep(&ts, NULL);
    }
}


/*
 * The default directory for control sockets: /run/fdpool as root, else
 * $XDG_RUNTIME_DIR/fdpool, else /tmp/fdpool-UID. Created 0700 if
 * missing; an existing one must be a directory owned by us that nobody
 * else can write. Returns 0 or -1 with err set.
 */
int
fdp_control_default_dir(char *out, size_t n, int create, char *err,
                        size_t errlen)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;

    if (geteuid() == 0) {
        snprintf(out, n, "/run/fdpool");
    } else if (xdg && xdg[0] == '/') {
        snprintf(out, n, "%s/fdpool", xdg);
    } else {
        snprintf(out, n, "/tmp/fdpool-%ld", (long) geteuid());
    }
    if (create && mkdir(out, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s (%s)", out, strerror(errno));
        return -1;
    }
    if (lstat(out, &st) < 0) {
        snprintf(err, errlen, "%s: %s", out, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()
        || (st.st_mode & 0022)) {
        snprintf(err, errlen, "%s is not a private directory of this user; "
                 "refusing to use it", out);
        return -1;
    }
    return 0;
}
