/*
 * fdfetch: download one file from an fdpool file server
 * (examples/fileserver.lua).  Sends "GET NAME [OFFSET]\n", expects
 * "OK SIZE\n" + bytes or "ERR REASON\n"; resumes a partial OUT file.
 */

#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EX_FAIL     1       /* connection, I/O or protocol error */
#define EX_REFUSED  2       /* the server answered ERR */
#define EX_USAGE    64      /* as sysexits.h */
#define LINE_MAX_   128     /* longest reply line we accept */
#define TIMEOUT_S   30      /* default receive/connect timeout */
#define TIMEOUT_MAX 86400   /* longest FDFETCH_TIMEOUT (a day) */
#define NAME_MAX_   1024    /* longest NAME we send */
#define USAGE "usage: fdfetch HOST:PORT|[V6]:PORT|unix:PATH NAME [OUT]\n"

struct fetch {
    const char *addr, *name, *out;
    int sock, outfd;
    int tty, bar_shown;     /* stderr is a terminal; a bar is on screen */
    int timeout;            /* seconds */
    long long offset;       /* bytes OUT had before we started */
    long long size;         /* whole remote file */
    long long got;          /* bytes received in this run */
    double start, last_bar;
};


static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* Print "fdfetch: ..." on stderr, first wiping a progress bar if shown. */
static void __attribute__((format(printf, 2, 3)))
say(struct fetch *f, const char *fmt, ...)
{
    va_list ap;

    if (f->bar_shown) {
        fputs("\r\033[K", stderr);
        f->bar_shown = 0;
    }
    fputs("fdfetch: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}


static void
human(char *buf, size_t n, double v)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    size_t i = 0;

    while (v >= 1024 && i + 1 < sizeof(unit) / sizeof(unit[0])) {
        v /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, unit[i]);
}


/* Redraw the bar in place, at most ten times a second unless forced. */
static void
progress(struct fetch *f, int force)
{
    char done[32], total[32], rate[32], bar[31];
    long long have = f->offset + f->got;
    double t = now(), el = t - f->start;
    int pct, i;

    if (!f->tty || (!force && t - f->last_bar < 0.1)) {
        return;
    }
    f->last_bar = t;
    pct = f->size > 0 ? (int) (have * 100 / f->size) : 100;
    for (i = 0; i < 30; i++) {
        bar[i] = i < pct * 30 / 100 ? '#' : '.';
    }
    bar[30] = '\0';
    human(done, sizeof(done), (double) have);
    human(total, sizeof(total), (double) f->size);
    human(rate, sizeof(rate), el > 0 ? f->got / el : 0);
    fprintf(stderr, "\r\033[K%s [%s] %3d%% %s / %s  %s/s",
            f->name, bar, pct, done, total, rate);
    fflush(stderr);
    f->bar_shown = 1;
}


/*
 * Connect to HOST:PORT, [V6]:PORT or unix:PATH with SO_RCVTIMEO/SO_SNDTIMEO
 * set (on Linux the latter also bounds connect()).  Returns the socket, or
 * -errno; a resolver failure is reported here and returns -EHOSTUNREACH.
 */
static int
dial(struct fetch *f)
{
    struct addrinfo hints, *res = NULL, *ai;
    struct sockaddr_un sa_un;
    struct timeval tv = { f->timeout, 0 };
    struct pollfd pfd;
    socklen_t len;
    char host[256];
    const char *port;
    int fd = -1, rc, err = -EINVAL;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (strncmp(f->addr, "unix:", 5) == 0) {
        /* A one-entry list built by hand (hints.ai_next is NULL). */
        memset(&sa_un, 0, sizeof(sa_un));
        sa_un.sun_family = AF_UNIX;
        if (strlen(f->addr + 5) >= sizeof(sa_un.sun_path)) {
            return -ENAMETOOLONG;
        }
        strcpy(sa_un.sun_path, f->addr + 5);
        hints.ai_family = AF_UNIX;
        hints.ai_addr = (struct sockaddr *) &sa_un;
        hints.ai_addrlen = sizeof(sa_un);
        res = &hints;
    } else {
        port = strrchr(f->addr, ':');       /* main() checked there is one */
        if ((size_t) (port - f->addr) >= sizeof(host)) {
            return -ENAMETOOLONG;
        }
        memcpy(host, f->addr, port - f->addr);
        host[port - f->addr] = '\0';
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
            host[strlen(host) - 1] = '\0';
            memmove(host, host + 1, strlen(host));
        }
        rc = getaddrinfo(host, port + 1, &hints, &res);
        if (rc != 0) {
            say(f, "connect %s: %s", f->addr, gai_strerror(rc));
            return -EHOSTUNREACH;
        }
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd == -1) {
            err = -errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        err = rc == 0 ? 0 : errno == EINPROGRESS ? -ETIMEDOUT : -errno;
        if (err == -EINTR) {
            /* The connect goes on in the background: wait for it. */
            pfd.fd = fd;
            pfd.events = POLLOUT;
            do {
                rc = poll(&pfd, 1, f->timeout * 1000);
            } while (rc == -1 && errno == EINTR);
            len = sizeof(err);
            if (rc == 0) {
                err = -ETIMEDOUT;
            } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0) {
                err = -err;
            }
        }
        if (err == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    if (res != &hints) {
        freeaddrinfo(res);
    }
    return fd != -1 ? fd : err;
}


/* Write all of buf, retrying EINTR and partial writes.  0 or -errno. */
static int
put(int fd, const char *buf, size_t n, int sock)
{
    ssize_t w;

    while (n > 0) {
        w = sock ? send(fd, buf, n, MSG_NOSIGNAL) : write(fd, buf, n);
        if (w == -1) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        }
        buf += w;
        n -= (size_t) w;
    }
    return 0;
}


/* recv() once, retrying EINTR.  Bytes (0 at EOF) or -errno. */
static ssize_t
get(int fd, char *buf, size_t n)
{
    ssize_t r;

    do {
        r = recv(fd, buf, n, 0);
    } while (r == -1 && errno == EINTR);
    if (r == -1) {
        return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
    }
    return r;
}


/* Explain a get() result of 0 or -errno; buf may hold the text. */
static const char *
why(struct fetch *f, ssize_t r, char *buf, size_t n)
{
    if (r == 0) {
        return "server closed the connection";
    }
    if (r == -ETIMEDOUT) {
        snprintf(buf, n, "nothing received for %d s", f->timeout);
        return buf;
    }
    return strerror((int) -r);
}


/* Store received bytes, creating OUT on the first call.  0 or -errno. */
static int
store(struct fetch *f, const char *buf, size_t n)
{
    if (f->outfd == -1) {
        f->outfd = open(f->out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                        0644);
        if (f->outfd == -1) {
            return -errno;
        }
    }
    f->got += (long long) n;
    return put(f->outfd, buf, n, 0);
}


static int
fetch(struct fetch *f)
{
    char line[LINE_MAX_ + 1], req[NAME_MAX_ + 32], buf[65536], *nl, *p, *end;
    char sz[64], rate[32];
    size_t len = 0, extra;
    long long want;
    ssize_t r;
    int rc = EX_FAIL, err;
    double el;

    f->sock = dial(f);
    if (f->sock < 0) {
        if (f->sock != -EHOSTUNREACH) {
            say(f, "connect %s: %s", f->addr, strerror(-f->sock));
        }
        goto fail;
    }
    snprintf(req, sizeof(req), f->offset ? "GET %s %lld\n" : "GET %s\n",
             f->name, f->offset);
    err = put(f->sock, req, strlen(req), 1);
    if (err < 0) {
        say(f, "send to %s: %s", f->addr, strerror(-err));
        goto fail;
    }

    /* The reply line; bytes read past it are the start of the file. */
    while ((nl = memchr(line, '\n', len)) == NULL) {
        if (len == LINE_MAX_) {
            say(f, "bad reply from %s: line longer than %d bytes",
                f->addr, LINE_MAX_);
            goto fail;
        }
        r = get(f->sock, line + len, LINE_MAX_ - len);
        if (r <= 0) {
            say(f, "no reply from %s: %s", f->addr,
                why(f, r, sz, sizeof(sz)));
            goto fail;
        }
        len += (size_t) r;
    }
    extra = len - (size_t) (nl + 1 - line);
    end = nl > line && nl[-1] == '\r' ? nl - 1 : nl;
    *end = '\0';
    /* Every control byte, NUL included, becomes '?': "OK 3\0junk" is a
     * bad reply, not a size of 3. */
    for (p = line; p < end; p++) {
        *p = (*p < ' ' || *p == 0x7f) ? '?' : *p;
    }
    if (strncmp(line, "ERR", 3) == 0 && (line[3] == ' ' || !line[3])) {
        say(f, "server refused %s: %s", f->name,
            line[3] && line[4] ? line + 4 : "(no reason given)");
        rc = EX_REFUSED;
        goto fail;
    }
    errno = 0;
    p = line + 3;
    if (strncmp(line, "OK ", 3) != 0 || *p < '0' || *p > '9'
        || (f->size = strtoll(p, &p, 10), *p != '\0') || errno == ERANGE) {
        say(f, "bad reply from %s: \"%s\"", f->addr, line);
        goto fail;
    }
    if (f->size < f->offset) {
        say(f, "%s has %lld bytes but %s is only %lld bytes long",
            f->out, f->offset, f->name, f->size);
        goto fail;
    }
    want = f->size - f->offset;
    if (want == 0 && f->offset > 0) {
        say(f, "%s is already complete (%lld bytes)", f->out, f->size);
        rc = 0;
        goto fail;
    }
    if (want == 0 && (err = store(f, "", 0)) < 0) {
        /* An empty file: OUT must still exist afterwards. */
        say(f, "write %s: %s", f->out, strerror(-err));
        goto fail;
    }

    f->start = now();
    p = nl + 1;
    if ((long long) extra > want) {
        extra = (size_t) want;      /* more than announced: ignore it */
    }
    for (r = (ssize_t) extra; f->got < want; p = buf) {
        if (r > 0 && (err = store(f, p, (size_t) r)) < 0) {
            say(f, "write %s: %s", f->out, strerror(-err));
            goto fail;
        }
        progress(f, 0);
        if (f->got == want) {
            break;
        }
        r = get(f->sock, buf, want - f->got < (long long) sizeof(buf)
                ? (size_t) (want - f->got) : sizeof(buf));
        if (r <= 0) {
            say(f, "receive %s: %s: %lld of %lld bytes missing; "
                "partial file kept in %s, rerun to resume", f->name,
                why(f, r, sz, sizeof(sz)),
                want - f->got, f->size, f->out);
            goto fail;
        }
    }
    progress(f, 1);

    el = now() - f->start;
    human(sz, sizeof(sz), (double) f->size);
    human(rate, sizeof(rate), el > 0 ? f->got / el : 0);
    say(f, "%s -> %s: received %lld bytes in %.2f s (%s/s), "
        "resumed at %lld, %lld bytes total (%s)", f->name, f->out,
        f->got, el, rate, f->offset, f->size, sz);
    rc = 0;

fail:
    if (f->outfd != -1 && close(f->outfd) == -1 && rc == 0) {
        say(f, "close %s: %s", f->out, strerror(errno));
        rc = EX_FAIL;
    }
    if (f->sock >= 0) {
        close(f->sock);
    }
    return rc;
}


int
main(int argc, char **argv)
{
    struct fetch f;
    struct stat st;
    const char *e;

    memset(&f, 0, sizeof(f));
    f.sock = -1;
    f.outfd = -1;
    f.timeout = TIMEOUT_S;
    if (argc == 2 && (strcmp(argv[1], "--help") == 0
                      || strcmp(argv[1], "-h") == 0)) {
        printf(USAGE "\nDownload NAME from an fdpool file server into OUT "
               "(default: basename of NAME).\n"
               "If OUT exists and is not empty, resume from its size.\n"
               "Exit: 0 done, 1 connection/transfer error, "
               "2 server refused, 64 usage.\n"
               "FDFETCH_TIMEOUT: receive timeout in seconds (default %d, "
               "at most %d).\n", TIMEOUT_S, TIMEOUT_MAX);
        return 0;
    }
    if (argc < 3 || argc > 4 || argv[2][0] == '\0'
        || strlen(argv[2]) > NAME_MAX_
        || strpbrk(argv[2], " \t\r\n") != NULL) {
        fputs(USAGE, stderr);
        return EX_USAGE;
    }
    f.addr = argv[1];
    f.name = argv[2];
    e = strrchr(f.addr, ':');
    if (strncmp(f.addr, "unix:", 5) != 0
        && (e == NULL || e == f.addr || e[1] == '\0')) {
        say(&f, "bad address \"%s\": want HOST:PORT, [V6]:PORT or unix:PATH",
            f.addr);
        return EX_USAGE;
    }
    if (argc == 4) {
        f.out = argv[3];
    } else {
        f.out = strrchr(f.name, '/') ? strrchr(f.name, '/') + 1 : f.name;
    }
    if (f.out[0] == '\0' || strcmp(f.out, ".") == 0
        || strcmp(f.out, "..") == 0) {
        say(&f, "cannot name the output after \"%s\": give OUT", f.name);
        return EX_USAGE;
    }
    e = getenv("FDFETCH_TIMEOUT");
    if (e != NULL && *e != '\0') {
        char *end;
        long v;

        errno = 0;
        v = strtol(e, &end, 10);
        if (*end != '\0' || errno != 0 || v < 1 || v > TIMEOUT_MAX) {
            say(&f, "bad FDFETCH_TIMEOUT \"%s\": want whole seconds, "
                "1 to %d", e, TIMEOUT_MAX);
            return EX_USAGE;
        }
        f.timeout = (int) v;
    }
    f.tty = isatty(STDERR_FILENO);

    /* Resume from a non-empty OUT; a missing one is created on "OK". */
    /* O_NONBLOCK: a FIFO nobody reads fails (ENXIO) instead of blocking
     * the open forever; writes block again below. */
    f.outfd = open(f.out, O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK);
    if (f.outfd == -1 && errno != ENOENT) {
        say(&f, "open %s: %s", f.out, errno == ENXIO
            ? "a FIFO with no reader" : strerror(errno));
        return EX_FAIL;
    }
    if (f.outfd != -1) {
        int fl = fcntl(f.outfd, F_GETFL);

        if (fl == -1 || fcntl(f.outfd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
            say(&f, "open %s: %s", f.out, strerror(errno));
            return EX_FAIL;
        }
    }
    if (f.outfd != -1 && fstat(f.outfd, &st) == 0 && S_ISREG(st.st_mode)) {
        f.offset = (long long) st.st_size;
    }
    return fetch(&f);
}
