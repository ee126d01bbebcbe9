/*
 * fuzz_channel.c - libFuzzer target for the channel message decoder and
 * checker (what the master runs on every message a worker sends). Input:
 * byte 0 = direction and the number of fds the message "carried", the
 * rest = the wire bytes. Whatever the checker accepts must be safe to
 * consume the way pool.c and worker.c consume it.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "channel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fdp_msg m;
    int from_worker, i;
    volatile uint64_t sink = 0;

    if (size < 1) {
        return 0;
    }
    from_worker = data[0] & 1;
    memset(&m, 0xAA, sizeof(m));  /* as uninitialised as the stack */
    m.nfds = (data[0] >> 1) % (FDP_MAX_FDS + 1);
    m.lost = data[0] >> 7;          /* fds the kernel dropped (EMFILE) */
    for (i = 0; i < m.nfds; i++) {
        m.fds[i] = -1;
    }
    if (fdp_msg_decode(&m, data + 1, size - 1) < 0) {
        return 0;
    }
    assert(m.h.len <= FDP_MSG_MAX);
    if (fdp_msg_check(&m, from_worker) < 0) {
        return 0;
    }
    switch (m.h.type) {
    case FDP_MSG_CONN:
        assert((m.h.count == m.nfds || (m.lost && m.nfds < m.h.count))
               && m.h.count <= FDP_BATCH_MAX);
        for (i = 0; i < m.h.count; i++) {
            sink += m.u.conn[i].id + m.u.conn[i].listener;
        }
        break;
    case FDP_MSG_DONE:
        assert(m.h.count <= FDP_BATCH_MAX);
        for (i = 0; i < m.h.count; i++) {
            sink += m.u.done[i].id + m.u.done[i].bytes_in;
        }
        break;
    case FDP_MSG_SET: {
        size_t k = strlen((const char *) m.u.bytes);
        const char *v = (const char *) m.u.bytes + k + 1;

        assert(k > 0 && k < FDP_KEY_MAX && k < m.h.len);
        /* The decoder NUL-terminates the payload. */
        assert(strlen(v) < FDP_VAL_MAX);
        break;
    }
    case FDP_MSG_FAIL:
        assert(m.h.len >= 1);
        break;
    default:
        break;
    }
    (void) sink;
    return 0;
}
