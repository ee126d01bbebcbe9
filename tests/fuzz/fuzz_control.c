/*
 * fuzz_control.c - libFuzzer target for the control socket's command
 * parser: never reads past n, accepts only the documented commands.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "ctlproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long arg;
    int cmd = fdp_ctl_parse((const char *) data, size, &arg);

    if (cmd == FDP_CTL_SCALE) {
        assert(arg >= 1 && arg <= 256);
    } else {
        assert(arg == 0);
    }
    assert(cmd == -EINVAL || cmd == -ERANGE || (cmd >= FDP_CTL_STATUS
                              && cmd <= FDP_CTL_LAST));
    if (cmd == FDP_CTL_BAD_SCALE) {
        assert(size >= 5 && memcmp(data, "scale", 5) == 0);
    }
    if (cmd > 0) {
        assert(memchr(data, '\0', size) == NULL);
    }
    return 0;
}
