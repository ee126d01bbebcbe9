/*
 * ctlproto.h - the control socket's command line, parsed by a pure
 * function (no fds, no pool) so it can be fuzzed on its own.
 */
#ifndef FDP_CTLPROTO_H
#define FDP_CTLPROTO_H

#include <errno.h>
#include <stddef.h>

/* fdp_ctl_parse returns a command (> 0), FDP_CTL_BAD (-EINVAL), or
 * FDP_CTL_BAD_SCALE (-ERANGE: "scale" without a number from 1 to 256). */
enum fdp_ctl_cmd {
    FDP_CTL_BAD = -EINVAL,
    FDP_CTL_BAD_SCALE = -ERANGE,
    FDP_CTL_STATUS = 1,
    FDP_CTL_STATUS_JSON,
    FDP_CTL_STOP,
    FDP_CTL_STOP_GRACEFUL,
    FDP_CTL_RELOAD,
    FDP_CTL_SCALE,
    FDP_CTL_PING,
    FDP_CTL_STATUS_METRICS,
    FDP_CTL_STATUS_LUA,
    FDP_CTL_UPGRADE,
    FDP_CTL_LAST = FDP_CTL_UPGRADE   /* keep last: the fuzz target's bound */
};

int fdp_ctl_parse(const char *line, size_t n, long *arg);

#endif
