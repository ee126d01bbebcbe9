/*
 * listen.c - the master's listeners: bind and listen on --listen addresses
 * (with their options), adopt systemd's sockets, close them (removing our
 * own unix socket files), and tell systemd our state (sd_notify). The
 * pool sets each listener's callback when it starts accepting.
 */
#include "fdp.h"
#include "pool.h"
#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>


/* ADDR[,reuseport][,proxy][,tls][,filter=MODE]: the options into l,
 * ADDR into host (FDP_ADDR_MAX bytes). 0, or -EINVAL with p->error set.
 * filter=tls needs tls; a tls listener takes no filter=http (the bytes
 * are encrypted). */
static int
parse_options(struct fdp_pool *p, struct fdp_listener *l, const char *addr,
              char *host)
{
    char *opt, *tok, *save = NULL;

    if (strlen(addr) >= FDP_ADDR_MAX) {
        snprintf(p->error, sizeof(p->error), "listen address too long");
        return -EINVAL;
    }
    l->proxy = l->reuseport = l->tls = 0;
    l->filter = FDP_AF_AUTO;
    snprintf(host, FDP_ADDR_MAX, "%s", addr);
    opt = strchr(host, ',');
    if (opt == NULL) {
        return 0;
    }
    *opt++ = '\0';
    for (tok = strtok_r(opt, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "reuseport") == 0) {
            l->reuseport = 1;
        } else if (strcmp(tok, "proxy") == 0) {
            l->proxy = 1;
        } else if (strcmp(tok, "tls") == 0) {
            l->tls = 1;
        } else if (strncmp(tok, "filter=", 7) == 0
                   && fdp_acceptf_parse(tok + 7) >= 0) {
            l->filter = fdp_acceptf_parse(tok + 7);
        } else {
            snprintf(p->error, sizeof(p->error), "bad address '%s': "
                     "unknown option '%s' (expected reuseport, proxy, "
                     "tls, filter=none|data|http|tls)", addr, tok);
            return -EINVAL;
        }
    }
    if (l->filter == FDP_AF_TLS && !l->tls) {
        snprintf(p->error, sizeof(p->error), "bad address '%s': filter=tls "
                 "needs the tls option", addr);
        return -EINVAL;
    }
    if (l->filter == FDP_AF_HTTP && l->tls) {
        snprintf(p->error, sizeof(p->error), "bad address '%s': a tls "
                 "listener cannot use filter=http (use filter=tls)", addr);
        return -EINVAL;
    }
    return 0;
}


/* Bind and listen now (before any fork), so a port in use fails the start
 * at once. Returns 0, or -errno with p->error set: -EINVAL for a bad
 * address or option, else the failing call's (-EADDRINUSE, -EACCES...). */
int
fdp_pool_add_listen(struct fdp_pool *p, const char *addr)
{
    struct fdp_listener *l;
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1, r, dirlock = -1;
    const char *what;

    if (p->nlisten == FDP_MAX_LISTEN) {
        snprintf(p->error, sizeof(p->error), "too many listen addresses "
                 "(at most %d)", FDP_MAX_LISTEN);
        return -EINVAL;
    }
    char host[FDP_ADDR_MAX];

    l = &p->listeners[p->nlisten];
    r = parse_options(p, l, addr, host);
    if (r < 0
        || (r = fdp_parse_addr(host, &ss, &len, p->error,
                               sizeof(p->error))) < 0) {
        return r;
    }
    snprintf(l->addr, sizeof(l->addr), "%s", addr);
    l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        what = "socket()";
        goto fail;
    }
    if (ss.ss_family == AF_UNIX) {
        dirlock = fdp_unix_lock_dir(((struct sockaddr_un *) &ss)->sun_path);
        r = fdp_unix_reclaim(((struct sockaddr_un *) &ss)->sun_path);
        if (r < 0) {
            errno = -r;
            what = r == -EEXIST ? "path exists and is not a socket:"
                                : "unix socket path";
            goto fail;
        }
    } else {
        (void) setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (l->reuseport && setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one,
                                       sizeof(one)) < 0) {
            what = "setsockopt(SO_REUSEPORT)";
            goto fail;
        }
        if (ss.ss_family == AF_INET6) {
            (void) setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
                              sizeof(one));
        }
        /* Accepted sockets inherit it (no syscall per connection): with
         * Nagle on, the second of two pipelined responses waited for the
         * ACK of the first, which a client delays by up to 40 ms. A
         * response is one writev (head and body), so nothing is lost. */
        (void) setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (bind(l->fd, (struct sockaddr *) &ss, len) < 0) {
        what = "bind()";
        goto fail;
    }
    if (ss.ss_family == AF_UNIX) {
        l->unix_path = strdup(((struct sockaddr_un *) &ss)->sun_path);
        l->path_dev = l->path_ino = 0;
        if (l->unix_path) {
            (void) fdp_path_identity(l->unix_path, &l->path_dev,
                                     &l->path_ino);
        }
    }
    if (listen(l->fd, 4096) < 0) {
        what = "listen()";
        goto fail;
    }
    fdp_close(&dirlock);
    len = sizeof(ss);
    if (getsockname(l->fd, (struct sockaddr *) &ss, &len) < 0) {
        what = "getsockname()";
        goto fail;
    }
    fdp_format_sockaddr(&ss, l->bound, sizeof(l->bound), 1);
    l->pool = p;
    l->io.fd = l->fd;
    l->io.data = l;
    p->nlisten++;
    return 0;

fail:
    r = -errno;
    snprintf(p->error, sizeof(p->error), "cannot listen on %s: %s failed "
             "(%s)", addr, what, strerror(-r));
    fdp_close(&dirlock);
    if (l->unix_path) {
        fdp_unlink_own(l->unix_path, l->path_dev, l->path_ino);
        free(l->unix_path);
        l->unix_path = NULL;
    }
    fdp_close(&l->fd);
    return r;
}


/*
 * Adopt an already listening socket (systemd socket activation): made
 * non-blocking and CLOEXEC; name is its LISTEN_FDNAMES entry or NULL.
 * Returns 0, or -errno with p->error set (-EINVAL: too many, or not a
 * listening stream socket; the failing call's when it is no socket).
 */
int
fdp_pool_add_fd(struct fdp_pool *p, int fd, const char *name)
{
    struct fdp_listener *l;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0, acc = 0;
    socklen_t olen = sizeof(type);

    if (p->nlisten == FDP_MAX_LISTEN) {
        snprintf(p->error, sizeof(p->error), "too many listen sockets");
        return -EINVAL;
    }
    errno = EINVAL;                 /* unless a call below fails */
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) < 0
        || type != SOCK_STREAM
        || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &olen) < 0 || !acc
        || getsockname(fd, (struct sockaddr *) &ss, &len) < 0) {
        snprintf(p->error, sizeof(p->error), "inherited fd %d is not a "
                 "listening stream socket", fd);
        return -errno;
    }
    (void) fdp_set_nonblock(fd, 1);
    (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        int one = 1;            /* as for our own listeners (above) */

        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    l = &p->listeners[p->nlisten];
    memset(l, 0, sizeof(*l));
    l->fd = fd;
    fdp_format_sockaddr(&ss, l->bound, sizeof(l->bound), 1);
    l->named = name && *name;
    if (l->named) {
        snprintf(l->addr, sizeof(l->addr), "%s", name);
    } else {
        memcpy(l->addr, l->bound, sizeof(l->addr));
    }
    l->pool = p;
    l->io.fd = fd;
    l->io.data = l;
    p->nlisten++;
    return 0;
}


/*
 * systemd socket activation: when LISTEN_PID is us, adopt fds 3 ..
 * 3 + LISTEN_FDS - 1 (named by LISTEN_FDNAMES) and unset the variables
 * so workers and children do not see them. Returns the number adopted,
 * or -errno with p->error set (-EINVAL: LISTEN_FDS out of range).
 */
int
fdp_pool_systemd_fds(struct fdp_pool *p)
{
    const char *spid = getenv("LISTEN_PID"), *sfds = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    char buf[1024], *save = NULL, *name;
    long n, i;
    int r;

    if (spid == NULL || sfds == NULL || strtol(spid, NULL, 10) != getpid()) {
        return 0;
    }
    n = strtol(sfds, NULL, 10);
    if (n < 1 || n > FDP_MAX_LISTEN) {
        snprintf(p->error, sizeof(p->error), "LISTEN_FDS=%s out of range",
                 sfds);
        return -EINVAL;
    }
    snprintf(buf, sizeof(buf), "%s", names ? names : "");
    name = strtok_r(buf, ":", &save);
    for (i = 0; i < n; i++) {
        r = fdp_pool_add_fd(p, 3 + (int) i, name);
        if (r < 0) {
            return r;
        }
        name = name ? strtok_r(NULL, ":", &save) : NULL;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return (int) n;
}


/* sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET. */
void
fdp_listen_notify(struct fdp_pool *p, const char *fmt, ...)
{
    struct sockaddr_un un;
    char msg[256];
    va_list ap;
    socklen_t len;

    if (p->notify_fd < 0 || getpid() != p->owner) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, p->notify_path, sizeof(un.sun_path));
    len = (socklen_t) (offsetof(struct sockaddr_un, sun_path)
                       + strlen(p->notify_path + (p->notify_path[0] == '@')) + 1
                       - (p->notify_path[0] == '@'));
    if (un.sun_path[0] == '@') {
        un.sun_path[0] = '\0';         /* abstract namespace */
    }
    (void) sendto(p->notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
                  (struct sockaddr *) &un, len);
}


void
fdp_listen_notify_open(struct fdp_pool *p)
{
    const char *path = getenv("NOTIFY_SOCKET");

    if (path == NULL || (path[0] != '/' && path[0] != '@')
        || strlen(path) >= sizeof(p->notify_path)) {
        return;
    }
    snprintf(p->notify_path, sizeof(p->notify_path), "%s", path);
    p->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    unsetenv("NOTIFY_SOCKET");
}


/* Close every listener; the master that bound a unix socket removes it
 * (only if the path is still the socket it made). */
void
fdp_listen_close_all(struct fdp_pool *p)
{
    int i;

    for (i = 0; i < p->nlisten; i++) {
        struct fdp_listener *l = &p->listeners[i];

        if (l->fd >= 0) {
            if (p->loop.epfd >= 0) {
                (void) fdp_loop_del(&p->loop, &l->io);
            }
            fdp_close(&l->fd);
        }
        if (l->unix_path && getpid() == p->owner) {
            fdp_unlink_own(l->unix_path, l->path_dev, l->path_ino);
        }
        free(l->unix_path);
        l->unix_path = NULL;
    }
}
