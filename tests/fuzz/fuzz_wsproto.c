/*
 * fuzz_wsproto.c - libFuzzer target for src/wsproto.c: the UTF-8 check
 * gives the same verdict fed whole or split at any point (a character
 * across fragments); masking twice, in two parts, gives the bytes back;
 * fdp_json_mark writes exactly the length it measured, marks only
 * outside strings and never reads past n; ws_accept takes any key.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf, *copy;
    char *out, acc[29];
    uint32_t st = 0, st2 = 0;
    size_t cut = size ? data[0] % (size + 1) : 0, count = 0, count2 = 0;
    int whole, a, b;
    long len, len2;
    const unsigned char key[4] = { 0x12, 0x34, 0x56, 0x78 };

    /* Exact-size copies, so ASan sees any read past n. */
    buf = malloc(size ? size : 1);
    copy = malloc(size ? size : 1);
    assert(buf != NULL && copy != NULL);
    memcpy(buf, data, size);
    memcpy(copy, data, size);

    whole = fdp_utf8_check(&st, buf, size);
    a = fdp_utf8_check(&st2, buf, cut);
    b = a < 0 ? a : fdp_utf8_check(&st2, buf + cut, size - cut);
    assert(whole == b);
    assert(whole < 0 || st == st2);

    fdp_ws_mask(buf, cut, key, 0);
    fdp_ws_mask(buf + cut, size - cut, key, cut);
    fdp_ws_mask(buf, size, key, 0);
    assert(memcmp(buf, copy, size) == 0);

    len = fdp_json_mark((const char *) buf, size, NULL, &count);
    if (len >= 0) {
        out = malloc((size_t) len + 1);
        assert(out != NULL);
        len2 = fdp_json_mark((const char *) buf, size, out, &count2);
        assert(len2 == len && count2 == count);
        assert((size_t) len == size + 3 * count);
        free(out);
    } else {
        assert(len == -EINVAL && count < size);
    }

    if (fdp_ws_accept((const char *) buf, size, acc) == 28) {
        assert(size == 24 && strlen(acc) == 28);
    }
    free(buf);
    free(copy);
    return 0;
}
