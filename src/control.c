/*
 * control.c - the control socket: a unix stream socket, mode 0600 from
 * birth, peer uid checked, one short text command per connection
 * ("status", "status json", "stop", "stop graceful", "reload", ...),
 * answered and closed ("reload" once its new generation is ready or
 * refused). The server side lives in the master's loop and never blocks
 * it: bounded input, bounded time, bounded clients. The client side is
 * what `pool status` and `pool stop` use.
 */
#include "fdp.h"
#include "pool.h"
#include "control.h"
#include "ctlproto.h"
#include "statuspage.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#define CTL_CLIENTS     8
#define CTL_LINE_MAX    8192    /* a --metrics request head (a browser's
                                 * may have cookies) */
#define CTL_CMD_MAX     128     /* a control command line */
#define CTL_TIMEOUT_MS  2000
#define CTL_EVICT_MS    100     /* a silent client older than this gives
                                 * its slot to a newcomer */

struct ctl_client {
    int fd;
    int http;                   /* a --metrics client, not a control one */
    struct fdp_io io;
    struct fdp_timer timer;
    struct fdp_control *ctl;
    char in[CTL_LINE_MAX];
    size_t nin;
    struct fdp_buf out;
    size_t sent;
    int waiting;                /* for the outcome of its reload */
    uint64_t since;             /* accepted (fdp_now_ms) */
};

struct fdp_control {
    int fd;
    int paused;                 /* EMFILE: not watching until the tick */
    struct fdp_io io;
    int mfd;                    /* --metrics listener, or -1 */
    struct fdp_io mio;
    struct fdp_pool *pool;
    char path[108];
    char upath[108];            /* taken over from an old master: the
                                 * path, owned (path) from READY on */
    int lockfd;                 /* PATH.lock, flock()ed while we run */
    uint64_t path_dev;          /* the socket file we bound, so that */
    uint64_t path_ino;          /* stop unlinks only that one */
    char mpath[108];            /* --metrics unix:PATH we bound (as path) */
    char mupath[108];           /* ... taken over from an old master */
    uint64_t mpath_dev, mpath_ino;
    struct ctl_client clients[CTL_CLIENTS];
};


static void
client_close(struct ctl_client *c)
{
    struct fdp_pool *p = c->ctl->pool;

    if (c->fd < 0) {
        return;
    }
    c->waiting = 0;
    if (p->loop.epfd >= 0) {
        (void) fdp_loop_del(&p->loop, &c->io);
        fdp_timer_stop(&p->loop, &c->timer);
    }
    fdp_close(&c->fd);
    fdp_buf_free(&c->out);
}


/* "ERR busy" (a 503 on the metrics listener) on fd, before its close. */
static void
busy(int fd, int http)
{
    static const char busy503[] = "HTTP/1.1 503 Service Unavailable"
        "\r\nContent-Length: 5\r\nRetry-After: 1\r\n"
        "Connection: close\r\n\r\nbusy\n";

    if (http) {
        (void) send(fd, busy503, sizeof(busy503) - 1,
                    MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
        (void) send(fd, "ERR busy\n", 9, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    /* The request is often here already: unread, the close would send
     * RST and drop the answer before it leaves. */
    fdp_statuspage_drain(fd);
}


static void
client_timeout(struct fdp_loop *loop, struct fdp_timer *t)
{
    (void) loop;
    client_close(t->data);
}


static void
run_command(struct ctl_client *c, const char *line, size_t n)
{
    struct fdp_pool *p = c->ctl->pool;
    long arg;
    int cmd = fdp_ctl_parse(line, n, &arg);

    switch (cmd) {
    case FDP_CTL_STATUS:
    case FDP_CTL_STATUS_JSON:
    case FDP_CTL_STATUS_METRICS:
    case FDP_CTL_STATUS_LUA:
        if (fdp_pool_status(p, &c->out,
                            cmd == FDP_CTL_STATUS_JSON ? FDP_STATUS_JSON
                            : cmd == FDP_CTL_STATUS_LUA ? FDP_STATUS_LUA
                            : cmd == FDP_CTL_STATUS_METRICS
                            ? FDP_STATUS_OPENMETRICS : FDP_STATUS_TABLE,
                            1) < 0) {
            fdp_buf_printf(&c->out, "ERR out of memory\n");
            return;
        }
        if (cmd == FDP_CTL_STATUS_LUA) {
            fdp_buf_printf(&c->out, "\n");
        }
        break;
    case FDP_CTL_STOP:
    case FDP_CTL_STOP_GRACEFUL:
        fdp_log(FDP_LOG_INFO, 0, "%sstop requested on the control socket",
                cmd == FDP_CTL_STOP ? "" : "graceful ");
        fdp_buf_printf(&c->out, cmd == FDP_CTL_STOP ? "OK stopping\n"
                       : "OK stopping gracefully\n");
        fdp_pool_stop(p, cmd == FDP_CTL_STOP_GRACEFUL);
        break;
    case FDP_CTL_RELOAD:
        fdp_log(FDP_LOG_INFO, 0, "reload requested on the control socket");
        if (fdp_pool_reload(p) < 0) {
            fdp_log(FDP_LOG_ERROR, 0, "%s", p->error);
            fdp_buf_printf(&c->out, "ERR %s\n", p->error);
            p->error[0] = '\0';
        } else if (p->reload_gen) {
            /* Answered by fdp_control_reload_done once the new
             * generation is READY or refused. */
            c->waiting = 1;
            fdp_timer_stop(&p->loop, &c->timer);
        }
        break;
    case FDP_CTL_UPGRADE:
        fdp_log(FDP_LOG_INFO, 0, "upgrade requested on the control socket");
        if (fdp_pool_upgrade(p) < 0) {
            fdp_log(FDP_LOG_ERROR, 0, "%s", p->error);
            fdp_buf_printf(&c->out, "ERR %s\n", p->error);
            p->error[0] = '\0';
        } else {
            /* Answered by fdp_control_reload_done once the new master is
             * READY (handed over) or refused. */
            c->waiting = 1;
            fdp_timer_stop(&p->loop, &c->timer);
        }
        break;
    case FDP_CTL_SCALE:
        if (fdp_pool_scale(p, (int) arg) < 0) {
            fdp_buf_printf(&c->out, "ERR cannot scale to %ld workers: %s\n",
                           arg, p->error);
            p->error[0] = '\0';
        } else if (p->max_workers > 0 && arg > p->max_workers) {
            fdp_buf_printf(&c->out, "OK workers %d-%d on demand (%ld is "
                           "above the maximum: the minimum is now the "
                           "maximum; raise MAX with --config and a "
                           "reload)\n", p->min_workers, p->max_workers, arg);
        } else if (p->max_workers > 0) {
            fdp_buf_printf(&c->out, "OK workers %d-%d on demand\n",
                           p->min_workers, p->max_workers);
        } else {
            fdp_buf_printf(&c->out, "OK %ld workers\n", arg);
        }
        break;
    case FDP_CTL_PING:
        fdp_buf_printf(&c->out, "OK pong\n");
        break;
    case FDP_CTL_BAD_SCALE:
        fdp_buf_printf(&c->out, "ERR scale needs a number of workers from "
                       "1 to 256\n");
        break;
    default:
        fdp_buf_printf(&c->out, "ERR unknown command (expected status, "
                       "status json, status openmetrics, stop, "
                       "stop graceful, reload, upgrade, scale N, ping)\n");
        break;
    }
}


/* Run the command in the first len bytes of c->in, then send its answer
 * (or wait for a reload's outcome). */
static void
run_line(struct ctl_client *c, size_t len)
{
    run_command(c, c->in, len);
    if (c->out.oom || c->fd < 0) {
        client_close(c);
        return;
    }
    if (!c->waiting) {
        (void) fdp_loop_mod(&c->ctl->pool->loop, &c->io, EPOLLOUT);
    }
}


/* GET /metrics (OpenMetrics) and GET /healthz (200 while workers run,
 * else 503), HTTP/1.x, one request per connection; the request line,
 * /status and /status.json are src/statuspage.c's. */
static void
run_http(struct ctl_client *c)
{
    struct fdp_pool *p = c->ctl->pool;
    struct fdp_buf body;
    const char *status = "200 OK", *type = "text/plain; charset=utf-8";
    int i, up = 0, head;

    if (fdp_statuspage_http(p, c->in, sizeof(c->in), &c->out, &head)) {
        return;
    }
    memset(&body, 0, sizeof(body));
    if (strncmp(c->in, "GET /metrics ", 13) == 0
        || strncmp(c->in, "GET /metrics?", 13) == 0) {
        if (fdp_pool_status(p, &body, FDP_STATUS_OPENMETRICS, 0) < 0) {
            c->out.oom = 1;
            return;
        }
        type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    } else if (strncmp(c->in, "GET /healthz ", 13) == 0) {
        for (i = 0; i < p->nworkers; i++) {
            up += p->workers[i].slot.state == FDP_W_RUNNING;
        }
        if (up == 0 || p->stopping || p->draining) {
            status = "503 Service Unavailable";
        }
        /* Workers on demand: the table's slots are the maximum, and an
         * idle pool runs its minimum by design, which is not "1/8". */
        if (p->max_workers) {
            fdp_buf_printf(&body, "%s %d workers (on demand, %d-%d)%s",
                           *status == '2' ? "ok" : "unavailable", up,
                           p->min_workers, p->max_workers,
                           p->stopping || p->draining ? ", stopping" : "");
        } else {
            fdp_buf_printf(&body, "%s %d/%d workers%s",
                           *status == '2' ? "ok" : "unavailable", up,
                           p->nworkers, p->stopping || p->draining
                           ? ", stopping" : "");
        }
        if (p->crash_streak > 0 && p->crash_why[0]) {
            fdp_buf_printf(&body, "; crash streak %d (last: %s), "
                           "restarting with back-off", p->crash_streak,
                           p->crash_why);
        }
        fdp_buf_printf(&body, "\n");
    } else {
        status = "404 Not Found";
        fdp_buf_printf(&body, "try /metrics or /healthz\n");
    }
    fdp_buf_printf(&c->out, "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                   status, type, body.len);
    if (body.len) {
        fdp_buf_printf(&c->out, "%.*s", (int) body.len, body.data);
    }
    c->out.oom |= body.oom;
    fdp_buf_free(&body);
    if (head) {
        fdp_statuspage_head_only(&c->out);
    }
}


static void
client_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct ctl_client *c = io->data;
    ssize_t n;

    (void) loop;
    if (c->waiting) {
        /* Only a hang-up matters while the reload goes on. */
        char b[64];

        n = read(c->fd, b, sizeof(b));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            client_close(c);
        }
        return;
    }
    if (c->out.len == 0 && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        char *nl;

        n = read(c->fd, c->in + c->nin, sizeof(c->in) - 1 - c->nin);
        if (n == 0 && !c->http && c->nin > 0 && c->nin < CTL_CMD_MAX) {
            /* the end of a last line without its newline (printf 'ping'
             * | socat ... half-closes): the command all the same (one
             * per connection: the answer sent, it closes) */
            run_line(c, c->nin);
            return;
        }
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                return;
            }
            client_close(c);
            return;
        }
        c->nin += (size_t) n;
        c->in[c->nin] = '\0';
        if (c->http) {
            if (memmem(c->in, c->nin, "\r\n\r\n", 4) == NULL
                && memmem(c->in, c->nin, "\n\n", 2) == NULL) {
                if (c->nin == sizeof(c->in) - 1) {
                    fdp_statuspage_too_large(&c->out);
                    (void) fdp_loop_mod(&c->ctl->pool->loop, &c->io, EPOLLOUT);
                }
                return;
            }
            run_http(c);
            if (c->out.oom) {
                client_close(c);
                return;
            }
            (void) fdp_loop_mod(&c->ctl->pool->loop, &c->io, EPOLLOUT);
            return;
        }
        nl = memchr(c->in, '\n', c->nin);
        if (nl == NULL) {
            if (c->nin >= CTL_CMD_MAX) {
                client_close(c);    /* too long: not one of ours */
            }
            return;
        }
        if (nl - c->in >= CTL_CMD_MAX) {
            client_close(c);
            return;
        }
        run_line(c, (size_t) (nl - c->in));
        return;
    }
    if (ev & EPOLLOUT) {
        while (c->sent < c->out.len) {
            n = send(c->fd, c->out.data + c->sent, c->out.len - c->sent,
                     MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    return;
                }
                break;
            }
            c->sent += (size_t) n;
        }
        if (c->http) {
            fdp_statuspage_drain(c->fd);
        }
        client_close(c);
    }
}


/*
 * With every slot taken, the client to drop for a newcomer: the oldest
 * one still reading its request (no answer under way, no reload waited
 * for) for CTL_EVICT_MS at least: clients that connect and say nothing
 * cost the operator their slot's timeout no more. A younger one may
 * still have its command unread in this loop pass: kept. NULL: none.
 */
static struct ctl_client *
idle_victim(struct fdp_control *ctl)
{
    struct ctl_client *v = NULL;
    uint64_t now = fdp_now_ms();
    int i;

    for (i = 0; i < CTL_CLIENTS; i++) {
        struct ctl_client *c = &ctl->clients[i];

        if (c->fd >= 0 && !c->waiting && c->out.len == 0
            && now - c->since >= CTL_EVICT_MS
            && (v == NULL || c->since < v->since)) {
            v = c;
        }
    }
    return v;
}


static void
control_accept(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_control *ctl = io->data;
    int http = io == &ctl->mio;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int fd, i;

    (void) ev;
    for (;;) {
        struct ctl_client *c = NULL;

        fd = accept4(io->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM) {
                /* Level-triggered: without a pause this would spin. */
                (void) fdp_loop_mod(loop, &ctl->io, 0);
                if (ctl->mfd >= 0) {
                    (void) fdp_loop_mod(loop, &ctl->mio, 0);
                }
                ctl->paused = 1;
            }
            return;
        }
        if (!http && (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0
                      || (cred.uid != geteuid() && cred.uid != 0))) {
            fdp_log(FDP_LOG_WARN, 0, "control socket: refused uid %ld",
                    (long) cred.uid);
            fdp_close(&fd);
            continue;
        }
        for (i = 0; i < CTL_CLIENTS; i++) {
            if (ctl->clients[i].fd < 0) {
                c = &ctl->clients[i];
                break;
            }
        }
        if (c == NULL) {
            c = idle_victim(ctl);
            if (c != NULL) {
                /* Told so, as a newcomer without a slot is: nothing it
                 * asked was done (fdp_control_request retries on ERR
                 * busy, and only a read-only command on a close without
                 * an answer, which may follow a command that ran). */
                busy(c->fd, c->http);
                client_close(c);
            }
        }
        if (c == NULL) {
            /* All slots taken: say so; fdp_control_request retries. */
            busy(fd, http);
            fdp_close(&fd);
            continue;
        }
        memset(c, 0, sizeof(*c));
        c->fd = fd;
        c->http = http;
        c->ctl = ctl;
        c->io.fd = fd;
        c->io.cb = client_io;
        c->io.data = c;
        c->since = fdp_now_ms();
        fdp_timer_init(&c->timer, client_timeout, c);
        if (fdp_loop_add(loop, &c->io, EPOLLIN) < 0) {
            fdp_close(&c->fd);
            continue;
        }
        (void) fdp_timer_start(loop, &c->timer, CTL_TIMEOUT_MS);
    }
}


/*
 * Create the control socket at p->control_path: parent directory made
 * with mode 0700 if missing, a stale socket replaced, a live one left
 * alone (error), the socket itself 0600 from its creation (umask around
 * bind). Returns 0, or -errno with err set (-EWOULDBLOCK or -EADDRINUSE:
 * another pool is running there).
 */
/*
 * The --metrics listener: a TCP (or unix) socket answering GET /metrics
 * and GET /healthz. No uid check is possible on TCP: bind it to loopback
 * or a private network. Returns 0, or -errno with err set.
 */
static int
open_metrics(struct fdp_control *ctl, struct fdp_pool *p, char *err,
             size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1, r;

    if (p->inherit_metrics_fd >= 0) {
        /* A pool upgrade handed it over: the same socket, still bound;
         * a unix one's file is ours from READY on (control_upgrade). */
        ctl->mfd = p->inherit_metrics_fd;
        p->inherit_metrics_fd = -1;
        (void) fdp_set_nonblock(ctl->mfd, 1);
        len = sizeof(ss);
        if (getsockname(ctl->mfd, (struct sockaddr *) &ss, &len) == 0
            && ss.ss_family == AF_UNIX) {
            snprintf(ctl->mupath, sizeof(ctl->mupath), "%.107s",
                     ((struct sockaddr_un *) &ss)->sun_path);
        }
        goto bound;
    }
    r = fdp_parse_addr(p->metrics_addr, &ss, &len, err, errlen);
    if (r < 0) {
        return r;
    }
    if (ss.ss_family == AF_UNIX) {
        /* As a unix listener's: a stale file (a pool killed, or one that
         * stopped before these were removed) is replaced, a live socket
         * or another file is not. */
        r = fdp_unix_reclaim(((struct sockaddr_un *) &ss)->sun_path);
        if (r < 0) {
            snprintf(err, errlen, "cannot listen on %s for metrics: %s",
                     p->metrics_addr, r == -EADDRINUSE ? "another pool is "
                     "running there" : r == -EEXIST ? "the path exists and "
                     "is not a socket (remove it or choose another path)"
                     : strerror(-r));
            return r;
        }
    }
    ctl->mfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                      0);
    if (ctl->mfd < 0) {
        r = -errno;
        snprintf(err, errlen, "metrics: socket() failed (%s)", strerror(-r));
        return r;
    }
    (void) setsockopt(ctl->mfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ctl->mfd, (struct sockaddr *) &ss, len) < 0
        || listen(ctl->mfd, 64) < 0) {
        r = -errno;
        snprintf(err, errlen, "cannot listen on %s for metrics: %s",
                 p->metrics_addr, strerror(-r));
        fdp_close(&ctl->mfd);
        return r;
    }
    if (ss.ss_family == AF_UNIX) {
        snprintf(ctl->mpath, sizeof(ctl->mpath), "%.107s",
                 ((struct sockaddr_un *) &ss)->sun_path);
        (void) fdp_path_identity(ctl->mpath, &ctl->mpath_dev,
                                 &ctl->mpath_ino);
    }
bound:
    len = sizeof(ss);
    if (getsockname(ctl->mfd, (struct sockaddr *) &ss, &len) == 0) {
        char where[FDP_ADDR_MAX];

        fdp_format_sockaddr(&ss, where, sizeof(where), 1);
        if (ss.ss_family == AF_UNIX) {
            fdp_log(FDP_LOG_INFO, 0, "metrics on %s (GET /metrics, "
                    "/healthz, /status)", where);
        } else {
            fdp_log(FDP_LOG_INFO, 0, "metrics on http://%s/metrics (and "
                    "/healthz, /status)", where);
        }
    }
    ctl->mio.fd = ctl->mfd;
    ctl->mio.cb = control_accept;
    ctl->mio.data = ctl;
    r = fdp_loop_add(&p->loop, &ctl->mio, p->accept_held ? 0 : EPOLLIN);
    if (r < 0) {
        snprintf(err, errlen, "metrics: epoll_ctl() failed (%s)",
                 strerror(-r));
        fdp_close(&ctl->mfd);
        return r;
    }
    return 0;
}


/*
 * Make the control socket's directory if missing, and take the lock.
 * Two pools starting at once on one path: "is it stale?" then unlink and
 * bind is a race (each may remove the other's fresh socket). An
 * exclusive flock on PATH.lock, held for the pool's life (the kernel
 * drops it when the master exits, however it exits), makes exactly one
 * of them go on. The lock file stays: removing it would reopen the race.
 * 0, or -errno with err set (-EWOULDBLOCK: another pool holds it).
 */
static int
lock_path(struct fdp_control *ctl, char *err, size_t errlen)
{
    char dir[108], *slash;
    char lock[sizeof(ctl->path) + 8];
    mode_t old;
    int r;

    snprintf(dir, sizeof(dir), "%s", ctl->path);
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            r = -errno;
            snprintf(err, errlen, "cannot create control directory %s (%s)",
                     dir, strerror(-r));
            return r;
        }
    }
    snprintf(lock, sizeof(lock), "%s.lock", ctl->path);
    old = umask(0177);
    ctl->lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                       0600);
    umask(old);
    if (ctl->lockfd < 0) {
        r = -errno;
        snprintf(err, errlen, "control socket %s: cannot open %s (%s)",
                 ctl->path, lock, strerror(-r));
        return r;
    }
    if (flock(ctl->lockfd, LOCK_EX | LOCK_NB) < 0) {
        r = -errno;
        snprintf(err, errlen, "control socket %s: %s", ctl->path,
                 r == -EWOULDBLOCK ? "another pool is running there"
                 : strerror(-r));
        return r;
    }
    return 0;
}


/* The control socket and its lock, handed over by an old master (pool
 * upgrade): used as they are; the path is owned only from READY on
 * (control_upgrade's RESUME), so a new master that fails unlinks
 * nothing. */
static void
adopt_control(struct fdp_control *ctl, struct fdp_pool *p)
{
    struct sockaddr_un un;
    socklen_t len = sizeof(un);

    ctl->fd = p->inherit_ctl_fd;
    ctl->lockfd = p->inherit_lock_fd;
    p->inherit_ctl_fd = -1;
    p->inherit_lock_fd = -1;
    (void) fdp_set_nonblock(ctl->fd, 1);
    memset(&un, 0, sizeof(un));
    if (getsockname(ctl->fd, (struct sockaddr *) &un, &len) == 0
        && un.sun_family == AF_UNIX) {
        un.sun_path[sizeof(un.sun_path) - 1] = '\0';
        snprintf(ctl->upath, sizeof(ctl->upath), "%s", un.sun_path);
        free(p->control_path);
        p->control_path = strdup(ctl->upath);
    }
    ctl->io.fd = ctl->fd;
    ctl->io.cb = control_accept;
    ctl->io.data = ctl;
}


int
fdp_control_open(struct fdp_pool *p, char *err, size_t errlen)
{
    struct fdp_control *ctl;
    struct sockaddr_un un;
    mode_t old;
    int r, i;

    if (p->control_path && strlen(p->control_path) >= sizeof(un.sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s",
                 p->control_path);
        return -ENAMETOOLONG;
    }
    ctl = calloc(1, sizeof(*ctl));
    if (ctl == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ctl->fd = -1;
    ctl->mfd = -1;
    ctl->lockfd = -1;
    ctl->pool = p;
    for (i = 0; i < CTL_CLIENTS; i++) {
        ctl->clients[i].fd = -1;
        ctl->clients[i].ctl = ctl;
    }
    if (p->metrics_addr && (r = open_metrics(ctl, p, err, errlen)) < 0) {
        goto fail;
    }
    if (p->control_path == NULL) {
        p->control = ctl;
        return 0;
    }
    if (p->inherit_ctl_fd >= 0) {
        adopt_control(ctl, p);
        if (fdp_loop_add(&p->loop, &ctl->io, p->accept_held ? 0 : EPOLLIN)
            < 0) {
            r = -EBADF;
            snprintf(err, errlen, "control socket: epoll_ctl() failed");
            goto fail;
        }
        p->control = ctl;
        return 0;
    }
    snprintf(ctl->path, sizeof(ctl->path), "%s", p->control_path);
    r = lock_path(ctl, err, errlen);
    if (r < 0) {
        goto fail;
    }
    r = fdp_unix_reclaim(ctl->path);
    if (r < 0) {
        snprintf(err, errlen, "control socket %s: %s", ctl->path,
                 r == -EADDRINUSE ? "another pool is running there"
                 : r == -EEXIST ? "the path exists and is not a socket "
                 "(remove it or choose another path)" : strerror(-r));
        goto fail;
    }
    ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ctl->fd < 0) {
        r = -errno;
        snprintf(err, errlen, "control socket: socket() failed (%s)",
                 strerror(-r));
        goto fail;
    }
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, ctl->path, strlen(ctl->path) + 1);
    old = umask(0177);
    r = bind(ctl->fd, (struct sockaddr *) &un, sizeof(un));
    umask(old);
    if (r < 0 || listen(ctl->fd, 16) < 0) {
        r = -errno;
        snprintf(err, errlen, "control socket %s: bind() failed (%s)",
                 ctl->path, strerror(-r));
        goto fail;
    }
    (void) fdp_path_identity(ctl->path, &ctl->path_dev, &ctl->path_ino);
    ctl->io.fd = ctl->fd;
    ctl->io.cb = control_accept;
    ctl->io.data = ctl;
    r = fdp_loop_add(&p->loop, &ctl->io, EPOLLIN);
    if (r < 0) {
        snprintf(err, errlen, "control socket: epoll_ctl() failed (%s)",
                 strerror(-r));
        fdp_unlink_own(ctl->path, ctl->path_dev, ctl->path_ino);
        goto fail;
    }
    p->control = ctl;
    return 0;

fail:
    fdp_close(&ctl->lockfd);
    if (ctl->mfd >= 0) {
        (void) fdp_loop_del(&p->loop, &ctl->mio);
        fdp_close(&ctl->mfd);
        if (ctl->mpath[0]) {
            fdp_unlink_own(ctl->mpath, ctl->mpath_dev, ctl->mpath_ino);
        }
    }
    fdp_close(&ctl->fd);
    free(ctl);
    return r;
}


/*
 * The outcome of a reload started on the control socket: answer the
 * client that waits for it ("OK reloaded: ..." or "ERR reload refused,
 * ..."), on one line. Nothing to do for a reload from SIGHUP or Lua.
 */
void
fdp_control_reload_done(struct fdp_pool *p, int ok, const char *text)
{
    struct fdp_control *ctl = p->control;
    int i;

    if (ctl == NULL) {
        return;
    }
    for (i = 0; i < CTL_CLIENTS; i++) {
        struct ctl_client *c = &ctl->clients[i];

        if (c->fd < 0 || !c->waiting) {
            continue;
        }
        c->waiting = 0;
        fdp_buf_printf(&c->out, "%s %s\n", ok ? "OK" : "ERR", text);
        if (c->out.oom) {
            client_close(c);
            continue;
        }
        (void) fdp_loop_mod(&p->loop, &c->io, EPOLLOUT);
        (void) fdp_timer_start(&p->loop, &c->timer, CTL_TIMEOUT_MS);
    }
}


/* The tick: watch the control sockets again after an EMFILE pause. */
void
fdp_control_tick(struct fdp_pool *p)
{
    struct fdp_control *ctl = p->control;

    if (ctl == NULL || !ctl->paused) {
        return;
    }
    ctl->paused = 0;
    if (ctl->fd >= 0) {
        (void) fdp_loop_mod(&p->loop, &ctl->io, EPOLLIN);
    }
    if (ctl->mfd >= 0) {
        (void) fdp_loop_mod(&p->loop, &ctl->mio, EPOLLIN);
    }
}


/* Close the control socket and its clients; unlink the path only in the
 * process that created it, when asked. */
void
fdp_control_close(struct fdp_pool *p, int unlink_path)
{
    struct fdp_control *ctl = p->control;
    int i;

    if (ctl == NULL) {
        return;
    }
    for (i = 0; i < CTL_CLIENTS; i++) {
        struct ctl_client *c = &ctl->clients[i];

        if (p->loop.epfd < 0 || getpid() != p->owner) {
            fdp_close(&c->fd);
            fdp_buf_free(&c->out);
        } else {
            /* An answer not sent yet ("OK stopping" when the stop was
             * quick): one last try, without blocking. */
            if (c->fd >= 0 && c->sent < c->out.len) {
                (void) send(c->fd, c->out.data + c->sent,
                            c->out.len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            }
            client_close(c);
        }
    }
    if (ctl->fd >= 0 && p->loop.epfd >= 0 && getpid() == p->owner) {
        (void) fdp_loop_del(&p->loop, &ctl->io);
    }
    if (ctl->mfd >= 0 && p->loop.epfd >= 0 && getpid() == p->owner) {
        (void) fdp_loop_del(&p->loop, &ctl->mio);
    }
    fdp_close(&ctl->fd);
    fdp_close(&ctl->mfd);
    /* Only the socket we bound: the path may be another file by now. */
    if (unlink_path && ctl->path[0] && getpid() == p->owner) {
        fdp_unlink_own(ctl->path, ctl->path_dev, ctl->path_ino);
    }
    if (unlink_path && ctl->mpath[0] && getpid() == p->owner) {
        fdp_unlink_own(ctl->mpath, ctl->mpath_dev, ctl->mpath_ino);
    }
    fdp_close(&ctl->lockfd);
    free(ctl);
    p->control = NULL;
}








/* DIR/<first bound address, made file-safe>.sock. 0, or -errno with
 * err set. */
int
fdp_control_default_path(struct fdp_pool *p, char *err, size_t errlen)
{
    char dir[96], name[FDP_ADDR_MAX], path[256];
    const char *s = p->nlisten ? p->listeners[0].bound : "pool";
    size_t i;
    int r;

    r = fdp_control_default_dir(dir, sizeof(dir), 1, err, errlen);
    if (r < 0) {
        return r;
    }
    for (i = 0; s[i] && i < sizeof(name) - 1; i++) {
        char c = s[i];

        name[i] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9') || c == '.' || c == '-'
                  ? c : '_';
    }
    name[i] = '\0';
    snprintf(path, sizeof(path), "%s/%s.sock", dir, name);
    if (strlen(path) >= 108) {
        snprintf(path, sizeof(path), "%s/pool-%ld.sock", dir, (long) getpid());
    }
    free(p->control_path);
    p->control_path = strdup(path);
    if (p->control_path == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}


/* The pool's service: at start, the default control path (when asked
 * for) and the control socket and --metrics listener when either is set. */
static int
service_open(struct fdp_pool *p, char *err, size_t errlen)
{
    int r;

    if (p->control_default && p->control_path == NULL
        && (r = fdp_control_default_path(p, err, errlen)) < 0) {
        return r;
    }
    if (p->control_path || p->metrics_addr) {
        return fdp_control_open(p, err, errlen);
    }
    return 0;
}


/* pool upgrade: see struct fdp_service in pool.h. */
static void
control_upgrade(struct fdp_pool *p, int op, int *fds)
{
    struct fdp_control *ctl = p->control;

    if (op == FDP_SVC_FDS) {
        fds[0] = ctl ? ctl->fd : -1;
        fds[1] = ctl && ctl->fd >= 0 ? ctl->lockfd : -1;
        fds[2] = ctl ? ctl->mfd : -1;
        return;
    }
    if (ctl == NULL) {
        return;
    }
    if (op == FDP_SVC_RESUME) {
        if (ctl->upath[0] && !ctl->path[0]) {
            memcpy(ctl->path, ctl->upath, sizeof(ctl->path));
            (void) fdp_path_identity(ctl->path, &ctl->path_dev,
                                     &ctl->path_ino);
        }
        if (ctl->mupath[0] && !ctl->mpath[0]) {
            memcpy(ctl->mpath, ctl->mupath, sizeof(ctl->mpath));
            (void) fdp_path_identity(ctl->mpath, &ctl->mpath_dev,
                                     &ctl->mpath_ino);
        }
        if (ctl->fd >= 0) {
            (void) fdp_loop_mod(&p->loop, &ctl->io, EPOLLIN);
        }
        if (ctl->mfd >= 0) {
            (void) fdp_loop_mod(&p->loop, &ctl->mio, EPOLLIN);
        }
    } else if (op == FDP_SVC_RELEASE) {
        /* The new master accepts on the same sockets; the lock stays
         * held through its copy of the same open file. */
        if (ctl->fd >= 0) {
            (void) fdp_loop_del(&p->loop, &ctl->io);
            fdp_close(&ctl->fd);
        }
        if (ctl->mfd >= 0) {
            (void) fdp_loop_del(&p->loop, &ctl->mio);
            fdp_close(&ctl->mfd);
        }
        fdp_close(&ctl->lockfd);
        ctl->path[0] = '\0';
        ctl->mpath[0] = '\0';
    }
}


const struct fdp_service fdp_control_service = {
    service_open,
    fdp_control_close,
    fdp_control_tick,
    fdp_control_reload_done,
    control_upgrade,
};
