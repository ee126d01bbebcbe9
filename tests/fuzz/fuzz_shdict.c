/*
 * fuzz_shdict.c - libFuzzer target: a worker scribbling on the shared
 * dictionary's mapping. The input is a script of 8-byte steps: either a
 * write of 4 bytes at an offset of the mapping (anywhere past the mutex:
 * what a buggy or hostile worker can do), or one operation (get, set,
 * incr, delete, keys, free_space, expire). No operation may crash,
 * hang or read outside the mapping (ASan), whatever was written; -EIO
 * (the dictionary flushed) is a fine answer.
 */
#include "fdp.h"
#include "shdict.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SIZE (64u * 1024)

static void
count(void *ud, const char *key, size_t klen)
{
    (void) key;
    *(size_t *) ud += klen;
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    static unsigned char *m;
    struct fdp_shd d;
    size_t i, n = 0;
    char key[8], val[300];
    int ev;

    if (m == NULL) {
        m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            abort();
        }
    }
    if (fdp_shd_format(m, SIZE) < 0 || fdp_shd_attach(&d, m, SIZE) < 0) {
        abort();
    }
    memset(val, 'v', sizeof(val));
    for (i = 0; i + 8 <= len; i += 8) {
        const uint8_t *s = data + i;
        uint32_t arg;
        struct fdp_shd_val v, out;
        double ttl;

        memcpy(&arg, s + 4, 4);
        memset(&v, 0, sizeof(v));
        snprintf(key, sizeof(key), "k%u", s[1] % 64);
        v.type = FDP_SHD_STRING;
        v.s = val;
        v.len = s[2] % sizeof(val);
        switch (s[0] % 9) {
        case 0:
        case 1: {               /* scribble: offset (past the header's
                                   mutex) in s[1..3], value in arg */
            uint32_t off = ((uint32_t) s[1] | (uint32_t) s[2] << 8
                            | (uint32_t) s[3] << 16) % SIZE;

            if (off >= 64 && off + 4 <= SIZE) {
                memcpy(m + (off & ~3u), &arg, 4);
            }
            break;
        }
        case 2:
            (void) fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
            break;
        case 3:
            (void) fdp_shd_get(&d, key, strlen(key), &out, &ttl);
            break;
        case 4:
            v.type = FDP_SHD_INTEGER;
            v.i = arg;
            (void) fdp_shd_incr(&d, key, strlen(key), &v, &v, 0, &out, &ev);
            break;
        case 5:
            v.type = FDP_SHD_NIL;
            (void) fdp_shd_set(&d, 0, key, strlen(key), &v, 0, &ev);
            break;
        case 6:
            (void) fdp_shd_keys(&d, 0, count, &n);
            break;
        case 7:
            (void) fdp_shd_free_space(&d);
            (void) fdp_shd_ttl(&d, key, strlen(key), &ttl);
            break;
        default:
            (void) fdp_shd_expire(&d, key, strlen(key), (double) (arg % 5));
            break;
        }
    }
    fdp_shd_detach(&d);
    return 0;
}
