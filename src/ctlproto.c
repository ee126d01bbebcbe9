/*
 * ctlproto.c - parse one control command line (without its newline):
 * "status", "status json", "status openmetrics", "status lua", "stop",
 * "stop graceful", "reload", "upgrade", "scale N"
 * (1 <= N <= 256), "ping". Anything else, including embedded NULs or
 * trailing bytes, is FDP_CTL_BAD (-EINVAL); a command is > 0.
 */
#include "ctlproto.h"

#include <string.h>


static int
is(const char *line, size_t n, const char *word)
{
    size_t k = strlen(word);

    return n == k && memcmp(line, word, k) == 0;
}


int
fdp_ctl_parse(const char *line, size_t n, long *arg)
{
    size_t i;
    long v = 0;

    *arg = 0;
    if (n > 0 && line[n - 1] == '\r') {
        n--;
    }
    if (is(line, n, "status")) {
        return FDP_CTL_STATUS;
    }
    if (is(line, n, "status json")) {
        return FDP_CTL_STATUS_JSON;
    }
    if (is(line, n, "status lua")) {
        return FDP_CTL_STATUS_LUA;
    }
    if (is(line, n, "status openmetrics")) {
        return FDP_CTL_STATUS_METRICS;
    }
    if (is(line, n, "stop")) {
        return FDP_CTL_STOP;
    }
    if (is(line, n, "stop graceful")) {
        return FDP_CTL_STOP_GRACEFUL;
    }
    if (is(line, n, "reload")) {
        return FDP_CTL_RELOAD;
    }
    if (is(line, n, "upgrade")) {
        return FDP_CTL_UPGRADE;
    }
    if (is(line, n, "ping")) {
        return FDP_CTL_PING;
    }
    if (n >= 5 && memcmp(line, "scale", 5) == 0 && (n == 5 || line[5] == ' ')) {
        if (n <= 6 || n > 9) {
            return FDP_CTL_BAD_SCALE;
        }
        for (i = 6; i < n; i++) {
            if (line[i] < '0' || line[i] > '9') {
                return FDP_CTL_BAD_SCALE;
            }
            v = v * 10 + (line[i] - '0');
        }
        if (v < 1 || v > 256) {
            return FDP_CTL_BAD_SCALE;
        }
        *arg = v;
        return FDP_CTL_SCALE;
    }
    return FDP_CTL_BAD;
}
