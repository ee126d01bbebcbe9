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
#include <grp.h>
#include <pwd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>


/* owner=USER[:GROUP] of a unix listener: its uid and gid (the user's
 * group unless GROUP is given) into l. 0, or -EINVAL with p->error. */
static int
parse_owner(struct fdp_pool *p, struct fdp_listener *l, const char *addr,
            const char *spec)
{
    char name[256], *colon;
    struct passwd *pw;
    struct group *gr;

    snprintf(name, sizeof(name), "%s", spec);
    colon = strchr(name, ':');
    if (colon != NULL) {
        *colon++ = '\0';
    }
    if (name[0] != '\0') {
        pw = getpwnam(name);
        if (pw == NULL) {
            snprintf(p->error, sizeof(p->error), "bad address '%s': "
                     "unknown user '%s' in owner=", addr, name);
            return -EINVAL;
        }
        l->uid = (long) pw->pw_uid;
        l->gid = (long) pw->pw_gid;
    }
    if (colon != NULL && *colon != '\0') {
        gr = getgrnam(colon);
        if (gr == NULL) {
            snprintf(p->error, sizeof(p->error), "bad address '%s': "
                     "unknown group '%s' in owner=", addr, colon);
            return -EINVAL;
        }
        l->gid = (long) gr->gr_gid;
    }
    if (l->uid < 0 && l->gid < 0) {
        snprintf(p->error, sizeof(p->error), "bad address '%s': owner= "
                 "needs USER, USER:GROUP or :GROUP", addr);
        return -EINVAL;
    }
    return 0;
}


/* mode=OCTAL of a unix listener (PHP-FPM's listen.mode): 0 to 0777. */
static int
parse_mode(struct fdp_pool *p, struct fdp_listener *l, const char *addr,
           const char *spec)
{
    char *end;
    long m;

    errno = 0;
    m = strtol(spec, &end, 8);
    if (*spec < '0' || *spec > '7' || *end != '\0' || errno != 0 || m < 0
        || m > 0777) {
        snprintf(p->error, sizeof(p->error), "bad address '%s': mode= "
                 "must be octal permissions from 0 to 0777 (got '%s')",
                 addr, spec);
        return -EINVAL;
    }
    l->mode = (int) m;
    return 0;
}


/* ADDR[,reuseport][,proxy][,tls][,filter=MODE][,mode=0660][,owner=U[:G]]:
 * the options into l, ADDR into host (FDP_ADDR_MAX bytes). 0, or -EINVAL
 * with p->error set. filter=tls needs tls; a tls listener takes no
 * filter=http (the bytes are encrypted). */
static int
parse_options(struct fdp_pool *p, struct fdp_listener *l, const char *addr,
              char *host)
{
    char *opt, *tok, *save = NULL;

    if (strlen(addr) >= FDP_ADDR_MAX) {
        snprintf(p->error, sizeof(p->error), "listen address too long: "
                 "'%.48s...' is %zu bytes (at most %d; a unix socket path "
                 "at most 107)", addr, strlen(addr), FDP_ADDR_MAX - 1);
        return -EINVAL;
    }
    l->proxy = l->reuseport = l->tls = 0;
    l->filter = FDP_AF_AUTO;
    l->mode = -1;
    l->uid = l->gid = -1;
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
        } else if (strncmp(tok, "mode=", 5) == 0) {
            if (parse_mode(p, l, addr, tok + 5) < 0) {
                return -EINVAL;
            }
        } else if (strncmp(tok, "owner=", 6) == 0) {
            if (parse_owner(p, l, addr, tok + 6) < 0) {
                return -EINVAL;
            }
        } else {
            snprintf(p->error, sizeof(p->error), "bad address '%s': "
                     "unknown option '%s' (expected reuseport, proxy, "
                     "tls, filter=none|data|http|tls, and for unix: "
                     "mode=0660, owner=USER[:GROUP])", addr, tok);
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
    if ((l->mode >= 0 || l->uid >= 0 || l->gid >= 0)
        && (strncmp(host, "unix:", 5) != 0 || host[5] == '@')) {
        snprintf(p->error, sizeof(p->error), "bad address '%s': mode= and "
                 "owner= are for unix:PATH listeners only", addr);
        return -EINVAL;
    }
    return 0;
}


/* Set l's options (reuseport, proxy, filter) from an --listen string, as
 * for a listener bound here (a pool upgrade's adopted ones). 0, or
 * -EINVAL with p->error set. */
int
fdp_listen_options(struct fdp_pool *p, struct fdp_listener *l,
                   const char *addr)
{
    char host[FDP_ADDR_MAX];
    int r = parse_options(p, l, addr, host);

    if (r == 0) {
        snprintf(l->addr, sizeof(l->addr), "%s", addr);
    }
    return r;
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
        /* TCP_DEFER_ACCEPT follows the listener's accept filter
         * (fdp_acceptf_defer, at start and at every READY). */
        l->tcp = 1;
        l->defer_set = 0;
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
    /* Before listen(): until then no client can connect, so none does
     * before the socket has its owner and mode (nginx running as
     * www-data must be let in, and nobody else). lchown does not follow
     * a symlink; the mode goes to the very file bound (checked by its
     * identity), never to what another process put at the path. */
    if (ss.ss_family == AF_UNIX && l->unix_path
        && (l->uid >= 0 || l->gid >= 0)
        && lchown(l->unix_path, (uid_t) l->uid, (gid_t) l->gid) < 0) {
        what = "chown() of the socket";
        goto fail;
    }
    if (ss.ss_family == AF_UNIX && l->unix_path && l->mode >= 0) {
        struct stat st;
        int e = lstat(l->unix_path, &st) < 0 ? errno : 0;

        if (e != 0 || !S_ISSOCK(st.st_mode)
            || (uint64_t) st.st_ino != l->path_ino
            || (uint64_t) st.st_dev != l->path_dev) {
            errno = e != 0 ? e : EEXIST;
            what = "stat() of the socket";
            goto fail;
        }
        if (chmod(l->unix_path, (mode_t) l->mode) < 0) {
            what = "chmod() of the socket";
            goto fail;
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
    if (r == -EEXIST && what != NULL && strncmp(what, "path exists", 11) == 0) {
        /* a file that is no socket: never removed; the operator's call */
        snprintf(p->error, sizeof(p->error), "cannot listen on %s: the "
                 "path exists and is not a socket (remove it or choose "
                 "another path)", addr);
    } else {
        snprintf(p->error, sizeof(p->error), "cannot listen on %s: %s "
                 "failed (%s)", addr, what, strerror(-r));
    }
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
    l->tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
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
