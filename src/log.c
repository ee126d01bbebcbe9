/*
 * log.c - the one logging function of the core, and the clocks.
 * Lines look like: 2026-11-22T04:33:35Z info  master[123]: message
 */
#include "fdp.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>

static char log_tag[32] = "pool";
static char log_path[4096];
static long log_owner = -1;
static int log_json;
static int log_level = FDP_LOG_INFO;
static const char *level_names[] = { "error", "warn", "info", "debug" };


void
fdp_log_set_tag(const char *tag)
{
    snprintf(log_tag, sizeof(log_tag), "%s", tag);
}


/* --log FILE: stderr becomes FILE (appended), so workers and Lua's
 * io.stderr write there too. Returns 0 or -errno. */
int
fdp_log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        return -errno;
    }
    /* --user: the workers reopen the file too (SIGUSR1), as that user,
     * so a file the master (root) creates or reopens is given to them
     * (as nginx does for its logs). Not root: nothing to give. */
    if (log_owner >= 0 && geteuid() == 0) {
        (void) fchown(fd, (uid_t) log_owner, (gid_t) -1);
    }
    if (dup2(fd, STDERR_FILENO) < 0) {
        int r = -errno;

        close(fd);
        return r;
    }
    close(fd);
    /* Reopening passes log_path itself: copying a string onto itself is
     * undefined (glibc's snprintf emptied it, so every SIGUSR1 after the
     * first was silently ignored and the log stayed on the moved file). */
    if (path != log_path) {
        snprintf(log_path, sizeof(log_path), "%s", path);
    }
    return 0;
}


/* --user: the uid the log file is given to when the master reopens it
 * (-1: none). */
void
fdp_log_set_owner(long uid)
{
    log_owner = uid;
}


/* SIGUSR1: reopen the log file (after logrotate moved it). Returns 0
 * (also when there is no log file) or -errno; on failure the log goes on
 * to the file it had. */
int
fdp_log_reopen(void)
{
    if (log_path[0] != '\0') {
        return fdp_log_open(log_path);
    }
    return 0;
}


/* --log-format json: one JSON object per line instead of text. */
void
fdp_log_set_json(int on)
{
    log_json = on;
}


/* Length of the valid UTF-8 sequence at s, or 0. */
static size_t
utf8_len(const unsigned char *s)
{
    size_t n, i;
    unsigned int c = s[0];

    if (c < 0x80) {
        return 1;
    }
    n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0
        ? 2 : 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return n;
}


/* Append s to buf (at *n, capacity cap) as a JSON string body: valid
 * UTF-8 passes, control characters are escaped, invalid bytes become
 * U+FFFD, so every line is valid JSON. */
static void
json_escape(char *buf, size_t *n, size_t cap, const char *s)
{
    const unsigned char *p = (const unsigned char *) s;

    while (*p && *n + 8 < cap) {
        size_t k;

        if (*p == '"' || *p == '\\') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = (char) *p++;
        } else if (*p < 0x20) {
            *n += (size_t) snprintf(buf + *n, cap - *n, "\\u%04x", *p++);
        } else if ((k = utf8_len(p)) > 0) {
            memcpy(buf + *n, p, k);
            *n += k;
            p += k;
        } else {
            memcpy(buf + *n, "\\ufffd", 6);
            *n += 6;
            p++;
        }
    }
}


void
fdp_log_set_level(int level)
{
    log_level = level;
}


int
fdp_log_enabled(int level)
{
    return level <= log_level;
}


/*
 * One write per line (atomic for pipes up to PIPE_BUF, and for a file
 * opened O_APPEND). A line the file cannot take (a full disk: ENOSPC) is
 * dropped and counted; one the disk cut short (its last bytes of space)
 * stays as a partial line, counted too, and the next line written starts
 * on a line of its own. Once a line goes through again, a warning says
 * how many were lost (this process's: master and workers count their
 * own).
 */
static void
log_write(const char *line, size_t n)
{
    static int torn, lost_err;
    static unsigned long lost;
    struct iovec iov[2];
    ssize_t w;
    size_t want;

    iov[0].iov_base = (void *) "\n";
    iov[0].iov_len = torn ? 1 : 0;
    iov[1].iov_base = (void *) line;
    iov[1].iov_len = n;
    want = iov[0].iov_len + n;
    do {
        w = writev(STDERR_FILENO, iov, 2);
    } while (w < 0 && errno == EINTR);
    if (w < 0 || (size_t) w < want) {
        if (w < 0) {
            lost_err = errno;
        } else if (w > 0) {
            torn = 1;
            lost_err = ENOSPC;
        }
        lost++;
        return;
    }
    torn = 0;
    if (lost > 0) {
        unsigned long k = lost;

        lost = 0;                   /* (this call writes through here) */
        fdp_log(FDP_LOG_WARN, lost_err, "log: %lu line(s) could not be "
                "written (or only in part) and are missing above", k);
    }
}


void
fdp_log(int level, int err, const char *fmt, ...)
{
    char buf[4096];
    size_t n;
    int r;
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (level > log_level) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    r = snprintf(buf + n, sizeof(buf) - n, " %-5s %s[%ld]: ",
                 level_names[level], log_tag, (long) getpid());
    n += (r > 0) ? (size_t) r : 0;

    va_start(ap, fmt);
    r = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    va_end(ap);
    if (r > 0) {
        n += (size_t) r;
    }
    if (n >= sizeof(buf) - 1) {
        n = sizeof(buf) - 2;
    }
    if (err > 0) {
        r = snprintf(buf + n, sizeof(buf) - n, " (%d: %s)", err, strerror(err));
        if (r > 0) {
            n += (size_t) r;
        }
        if (n >= sizeof(buf) - 1) {
            n = sizeof(buf) - 2;
        }
    }
    if (log_json) {
        char msg[4096], js[8192];
        size_t k = 0;
        const char *text = buf;
        int worker = 0;

        /* Re-render: the message starts after "TAG[PID]: ". */
        buf[n] = '\0';
        text = strstr(buf, "]: ");
        text = text ? text + 3 : buf;
        snprintf(msg, sizeof(msg), "%s", text);
        (void) sscanf(log_tag, "worker %d", &worker);
        k = (size_t) snprintf(js, sizeof(js), "{\"time\": \"%.20s\", "
                              "\"level\": \"%s\", \"pid\": %ld, "
                              "\"process\": \"%s\", \"worker\": %d, "
                              "\"msg\": \"", buf, level_names[level],
                              (long) getpid(), worker ? "worker" : "master",
                              worker);
        json_escape(js, &k, sizeof(js) - 3, msg);
        js[k++] = '"';
        js[k++] = '}';
        memcpy(buf, js, k);
        n = k;
    }
    buf[n++] = '\n';
    log_write(buf, n);
}


uint64_t
fdp_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


uint64_t
fdp_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


double
fdp_wall(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


int
fdp_set_nonblock(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0) {
        return -errno;
    }
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, flags) < 0) {
        return -errno;
    }
    return 0;
}
