/*
 * fuzz_proxy.c - libFuzzer target for the PROXY protocol header parser
 * (src/proxy.c): never reads past n, and a header it accepts has a sane
 * length and an address the master can copy into the connection, it
 * is found the same with more bytes after it, and its prefixes ask for
 * more bytes instead of failing. Also the accept filter's HTTP head
 * test, which lives in the same file.
 */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_storage src;
    socklen_t len = 12345;
    uint8_t *buf;
    int r;

    /* An exact-size copy, so ASan sees any read past n. */
    buf = malloc(size ? size : 1);
    assert(buf != NULL);
    if (size) {
        memcpy(buf, data, size);
    }
    /* The accept filter's head test (same file): within n, and a head
     * that is complete stays complete with more bytes after it. */
    if (fdp_http_head_complete((const char *) buf, size) && size > 0) {
        char *more = malloc(size + 1);

        assert(more != NULL);
        memcpy(more, buf, size);
        more[size] = 'x';
        assert(fdp_http_head_complete(more, size + 1));
        free(more);
    }
    memset(&src, 0xAA, sizeof(src));
    r = fdp_proxy_parse(buf, size, &src, &len);
    assert(r >= 0 || r == -EINVAL);
    assert(r <= (int) size);
    assert(r <= FDP_PROXY_MAX);
    /* The master peeks at most FDP_PROXY_MAX bytes and closes on "need
     * more" with a full buffer: a header must fit in it. */
    assert(r != 0 || size < FDP_PROXY_MAX);
    assert(len == 0 || len == sizeof(struct sockaddr_in)
           || len == sizeof(struct sockaddr_in6));
    if (r <= 0) {
        assert(len == 0);
    } else if (len == sizeof(struct sockaddr_in)) {
        assert(src.ss_family == AF_INET);
    } else if (len == sizeof(struct sockaddr_in6)) {
        assert(src.ss_family == AF_INET6);
    }
    if (r > 0) {
        /* A header is a prefix: the same bytes with more after them
         * parse to the same length and address. */
        struct sockaddr_storage src2;
        socklen_t len2 = 0;
        uint8_t *more = malloc((size_t) size + 16);

        assert(more != NULL);
        memcpy(more, data, size);
        memset(more + size, 'x', 16);
        assert(fdp_proxy_parse(more, size + 16, &src2, &len2) == r);
        assert(len2 == len);
        assert(len == 0 || memcmp(&src, &src2, len) == 0);
        free(more);
        /* Every shorter prefix of a header is "need more", never
         * invalid: a header split across TCP segments must not be
         * refused. */
        for (size_t k = 1; k < (size_t) r; k++) {
            uint8_t *pre = malloc(k);

            assert(pre != NULL);
            memcpy(pre, data, k);
            assert(fdp_proxy_parse(pre, k, &src2, &len2) == 0);
            free(pre);
        }
    }
    free(buf);
    return 0;
}
