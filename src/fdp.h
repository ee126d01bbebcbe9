/*
 * fdp.h - shared bits of the fdpool C core: fd helpers, logging, clocks.
 * No Lua here: the transport layers (fdpass, channel, loop, status)
 * include only this header.
 */
#ifndef FDP_H
#define FDP_H

#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <errno.h>

#define FDP_VERSION     "0.1.0"
#define FDP_NELEM(a)    (sizeof(a) / sizeof((a)[0]))

enum fdp_log_level {
    FDP_LOG_ERROR = 0,
    FDP_LOG_WARN,
    FDP_LOG_INFO,
    FDP_LOG_DEBUG
};

/* Close *fd if open and mark it closed; errors other than EINTR are
 * not actionable for the caller (the fd is gone either way on Linux). */
static inline void
fdp_close(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        (void) close(*fd);
        *fd = -1;
        errno = saved;
    }
}

/* Seconds as the u32 milliseconds of a channel message: 0 for <= 0 (or
 * NaN), 2^32 - 1 (49.7 days) for anything longer, never a wrapped value
 * (--grace 4294967.8 once told the workers 504 ms). */
static inline uint32_t
fdp_sec_ms32(double s)
{
    return !(s > 0) ? 0 : s >= 4294967.295 ? UINT32_MAX
           : (uint32_t) (s * 1000.0);
}

/* One line per event on the log fd (stderr by default), written with a
 * single write(2) so lines from several processes never interleave.
 * err > 0 appends " (errno: strerror)". */
void fdp_log(int level, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fdp_log_set_tag(const char *tag);
void fdp_log_set_level(int level);
void fdp_log_set_json(int on);
int fdp_log_open(const char *path);
int fdp_log_reopen(void);
void fdp_log_set_owner(long uid);
int fdp_log_enabled(int level);

/* Monotonic clock in milliseconds / microseconds; wall clock seconds. */
uint64_t fdp_now_ms(void);
uint64_t fdp_now_us(void);
double fdp_wall(void);

/* Set O_NONBLOCK (on != 0) or clear it; returns 0 or -errno. */
int fdp_set_nonblock(int fd, int on);

#endif
