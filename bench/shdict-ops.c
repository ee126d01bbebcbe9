/*
 * bench/shdict-ops.c: N get / set / incr on the shared dictionary from
 * one process, no Lua, for callgrind's instruction counts per operation
 * (scripts/bench runs it under valgrind --tool=callgrind when valgrind
 * is installed). Usage: shdict-ops get|set|incr N
 */
#include "fdp.h"
#include "shdict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int
main(int argc, char **argv)
{
    size_t size = 64u << 20;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct fdp_shd d;
    struct fdp_shd_val v, by, out;
    char keys[1000][16], nkeys[1000][16];
    long i, n = argc > 2 ? atol(argv[2]) : 100000;
    int ev;

    if (argc < 2 || m == MAP_FAILED || fdp_shd_format(m, size) < 0
        || fdp_shd_attach(&d, m, size) < 0) {
        fprintf(stderr, "usage: shdict-ops get|set|incr N\n");
        return 2;
    }
    memset(&v, 0, sizeof(v));
    v.type = FDP_SHD_STRING;
    v.s = "value";
    v.len = 5;
    memset(&by, 0, sizeof(by));
    by.type = FDP_SHD_INTEGER;
    by.i = 1;
    for (i = 0; i < 1000; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key%ld", i + 1);
        snprintf(nkeys[i], sizeof(nkeys[i]), "num%ld", i + 1);
        fdp_shd_set(&d, 0, keys[i], strlen(keys[i]), &v, 0, &ev);
    }
    for (i = 0; i < n; i++) {
        const char *k = keys[i % 1000];

        if (strcmp(argv[1], "get") == 0) {
            (void) fdp_shd_get(&d, k, strlen(k), &out, NULL);
        } else if (strcmp(argv[1], "set") == 0) {
            (void) fdp_shd_set(&d, 0, k, strlen(k), &v, 0, &ev);
        } else {
            /* counters of their own (an incr of a string value is an
             * error); the first round makes them */
            k = nkeys[i % 1000];
            (void) fdp_shd_incr(&d, k, strlen(k), &by, &by, 0, &out, &ev);
        }
    }
    fdp_shd_detach(&d);
    return 0;
}
