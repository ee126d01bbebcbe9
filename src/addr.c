/*
 * addr.c - addresses: parse --listen/--control forms (HOST:PORT, [V6]:PORT,
 * unix:PATH) into a sockaddr, format one back, and the unix-socket path
 * helpers (reclaim a stale socket, lock its directory, remember and
 * unlink only our own file). Ground layer: no pool, no Lua.
 */
#include "fdp.h"
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/*
 * Parse HOST:PORT, [V6]:PORT or unix:PATH into a sockaddr. HOST may be a
 * name (resolved now), "*" or empty for any address. Returns 0, or
 * -EINVAL with a reason in err.
 */
int
fdp_parse_addr(const char *addr, struct sockaddr_storage *ss,
               socklen_t *len, char *err, size_t errlen)
{
    char host[FDP_ADDR_MAX];
    const char *port, *colon;
    struct addrinfo hints, *res = NULL;
    char *end;
    long pn;
    int r;

    memset(ss, 0, sizeof(*ss));
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *) ss;
        size_t n = strlen(addr + 5);

        if (n == 0 || n >= sizeof(un->sun_path)) {
            snprintf(err, errlen, "bad address '%s': unix socket path "
                     "must be 1 to %zu bytes", addr, sizeof(un->sun_path) - 1);
            return -EINVAL;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, addr + 5, n + 1);
        *len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');

        if (rb == NULL || rb[1] != ':' || (size_t) (rb - addr - 1) >= sizeof(host)) {
            snprintf(err, errlen, "bad address '%s': expected [IPV6]:PORT",
                     addr);
            return -EINVAL;
        }
        memcpy(host, addr + 1, (size_t) (rb - addr - 1));
        host[rb - addr - 1] = '\0';
        port = rb + 2;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || (size_t) (colon - addr) >= sizeof(host)) {
            snprintf(err, errlen, "bad address '%s': expected HOST:PORT, "
                     "[IPV6]:PORT or unix:PATH", addr);
            return -EINVAL;
        }
        memcpy(host, addr, (size_t) (colon - addr));
        host[colon - addr] = '\0';
        port = colon + 1;
        if (strchr(host, ':') != NULL) {
            snprintf(err, errlen, "bad address '%s': put IPv6 addresses "
                     "in brackets, as [::1]:8080", addr);
            return -EINVAL;
        }
    }
    errno = 0;
    pn = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || errno || pn < 0 || pn > 65535) {
        snprintf(err, errlen, "bad address '%s': port must be a number "
                 "from 0 to 65535", addr);
        return -EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    r = getaddrinfo((host[0] == '\0' || strcmp(host, "*") == 0) ? NULL : host,
                    port, &hints, &res);
    if (r != 0 || res == NULL) {
        snprintf(err, errlen, "bad address '%s': %s", addr,
                 r ? gai_strerror(r) : "no address");
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}


/* "ip:port", "[v6]:port", and for unix sockets "unix:path" (with_path)
 * or just "unix" (a client's side is unnamed). */
void
fdp_format_sockaddr(const struct sockaddr_storage *ss, char *out, size_t n,
                    int with_path)
{
    char ip[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *) ss;

        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;

        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else if (ss->ss_family == AF_UNIX && with_path) {
        snprintf(out, n, "unix:%s", ((const struct sockaddr_un *) ss)->sun_path);
    } else if (ss->ss_family == AF_UNIX) {
        snprintf(out, n, "unix");
    } else {
        snprintf(out, n, "?");
    }
}


/*
 * A unix socket path already there: a live server keeps it (EADDRINUSE),
 * a stale file from a killed run is removed. Anything not a socket is
 * never touched.
 */
int
fdp_unix_reclaim(const char *path)
{
    struct sockaddr_un un;
    struct stat st;
    int fd, r;

    if (lstat(path, &st) < 0) {
        return errno == ENOENT ? 0 : -errno;
    }
    if (!S_ISSOCK(st.st_mode)) {
        return -EEXIST;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
    r = connect(fd, (struct sockaddr *) &un, sizeof(un));
    fdp_close(&fd);
    if (r == 0) {
        return -EADDRINUSE;
    }
    if (errno == ECONNREFUSED) {
        return unlink(path) < 0 ? -errno : 0;
    }
    return -errno;
}


/*
 * Serialize "is the socket at path stale? unlink it, bind, listen" among
 * processes: two pools starting together on one unix path could each see
 * the stale file, and the second unlink the first's fresh socket. An
 * exclusive flock on the directory holding path, for that short section
 * only, is enough: once listening, a socket answers connect(), so the next
 * reclaim sees it live. Waits up to 5 s for the lock, then goes on
 * without it (as before). Returns the locked directory's fd (close it to
 * unlock), or -errno (-EWOULDBLOCK when the wait ran out).
 */
int
fdp_unix_lock_dir(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *) 0)->sun_path)];
    char *slash;
    int fd, i, r;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    for (i = 0; i < 500; i++) {
        struct timespec ts = { 0, 10 * 1000 * 1000 };

        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            return fd;
        }
        if (errno != EWOULDBLOCK && errno != EINTR) {
            r = -errno;
            fdp_close(&fd);
            return r;
        }
        (void) nanosleep(&ts, NULL);
    }
    fdp_close(&fd);
    return -EWOULDBLOCK;
}


/* The identity (st_dev, st_ino) of the file at path, not following a
 * symlink. 0 or -errno. */
int
fdp_path_identity(const char *path, uint64_t *dev, uint64_t *ino)
{
    struct stat st;

    if (lstat(path, &st) < 0) {
        return -errno;
    }
    *dev = (uint64_t) st.st_dev;
    *ino = (uint64_t) st.st_ino;
    return 0;
}


/*
 * Unlink a socket path this process bound, only if it is still that file:
 * another pool (or anything else) may have taken the path over since, and
 * its file is not ours to remove. dev/ino come from fdp_path_identity()
 * after bind; 0/0 (never recorded) unlinks nothing.
 */
void
fdp_unlink_own(const char *path, uint64_t dev, uint64_t ino)
{
    uint64_t d, i;

    if ((dev == 0 && ino == 0) || fdp_path_identity(path, &d, &i) < 0
        || d != dev || i != ino) {
        return;
    }
    (void) unlink(path);
}
