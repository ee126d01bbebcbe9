/*
 * fcache.h - a Lua allocator keeping freed small blocks for reuse: lists
 * by size (8-byte classes up to FC_MAX), at most FC_CAP bytes on them,
 * everything else malloc's, realloc's and free's. The worker installs it
 * on a script handler's state (worker.c: fcache_install, where the why
 * is); tests/c/test_core.c tortures it. Static: each includer has its
 * own copy.
 */
#ifndef FDP_FCACHE_H
#define FDP_FCACHE_H

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define FC_MAX      512
#define FC_CLASSES  (FC_MAX / 8)
#ifndef FC_CAP
#define FC_CAP      (1024 * 1024)
#endif

struct fcache {
    void *head[FC_CLASSES + 1];
    size_t bytes;
    int exact;              /* malloc's blocks may hold only what was
                             * asked (see FC_HOLDS) */
};


/* Whether malloc's block p holds n bytes (n: its size rounded up to its
 * class). glibc's always does: a chunk is a multiple of 16 bytes, its
 * usable size the chunk less 8, and the chunk of a request for m bytes
 * at least m + 8 rounded up to 16, so its usable size is at least m
 * rounded up to 8 -- no call per freed block. So do jemalloc's,
 * tcmalloc's and mimalloc's (classes of 8 bytes or more). An allocator
 * whose blocks hold exactly what was asked (valgrind's, glibc's with
 * MALLOC_CHECK_) is found by fcache_install's probe and asked each
 * time. */
#define FC_HOLDS(fc, p, n) (!(fc)->exact || malloc_usable_size(p) >= (n))

static void *
fc_get(struct fcache *fc, size_t n)
{
    size_t k = (n + 7) >> 3;
    void *p = fc->head[k];

    if (p != NULL) {
        fc->head[k] = *(void **) p;
        fc->bytes -= k << 3;
        return p;
    }
    return malloc(k << 3);
}


static void
fc_put(struct fcache *fc, void *p, size_t n)
{
    size_t k = (n + 7) >> 3;

    if (fc->bytes + (k << 3) <= FC_CAP && FC_HOLDS(fc, p, k << 3)) {
        *(void **) p = fc->head[k];
        fc->head[k] = p;
        fc->bytes += k << 3;
        return;
    }
    free(p);
}


static void *
fc_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fcache *fc = ud;
    size_t old = ptr != NULL ? osize : 0;   /* else osize is a type tag */
    void *np;

    if (nsize == 0) {
        if (ptr != NULL) {
            if (old > 0 && old <= FC_MAX) {
                fc_put(fc, ptr, old);
            } else {
                free(ptr);
            }
        }
        return NULL;
    }
    if (ptr == NULL) {
        return nsize <= FC_MAX ? fc_get(fc, nsize) : malloc(nsize);
    }
    if (old > FC_MAX && nsize > FC_MAX) {
        return realloc(ptr, nsize);
    }
    if (old > 0 && ((old + 7) >> 3) == ((nsize + 7) >> 3)
        && FC_HOLDS(fc, ptr, nsize)) {
        return ptr;
    }
    np = nsize <= FC_MAX ? fc_get(fc, nsize) : malloc(nsize);
    if (np == NULL) {
        return NULL;            /* Lua keeps ptr */
    }
    memcpy(np, ptr, old < nsize ? old : nsize);
    if (old > 0 && old <= FC_MAX) {
        fc_put(fc, ptr, old);
    } else {
        free(ptr);
    }
    return np;
}

#endif
