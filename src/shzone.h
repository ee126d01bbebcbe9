/*
 * shzone.h - the shared dictionaries' mappings, made by the master
 * (shzone.c): one memfd each, mapped MAP_SHARED and formatted before any
 * worker forks, so every worker (and every later generation) inherits
 * it. The master only makes, maps and frees them; it never locks, walks
 * or acts on what workers wrote there.
 */
#ifndef FDP_SHZONE_H
#define FDP_SHZONE_H

#include <stdint.h>

#define FDP_MAX_SHARED  16

struct fdp_pool;
struct fdp_status_info;

struct fdp_shzone {
    char name[32];
    uint64_t size;
    void *base;                 /* the mapping, or NULL */
    int fd;                     /* the memfd (master only; -1 in workers) */
};

/* Make dictionary `name` of `size` bytes ("512k", "10m" or bytes in
 * size_s, or size when size_s is NULL). 0, or -errno with p->error set. */
int fdp_shzone_add(struct fdp_pool *p, const char *name, const char *size_s,
                   uint64_t size);
/* A new master of `pool upgrade` got the old master's memfd of `name`
 * (takes fd): it maps that one instead of the fresh one (the entries go
 * on) when the sizes agree; else it keeps the fresh one. Logs which. */
void fdp_shzone_adopt(struct fdp_pool *p, const char *name, int fd);
/* A worker drops the memfds (keeps the mappings); the pool's free drops
 * both (unmap != 0). */
void fdp_shzone_close(struct fdp_pool *p, int unmap);
/* Size, use and keys of each, from counters clamped to [0, size]. */
void fdp_shzone_status(struct fdp_pool *p, struct fdp_status_info *info);

#endif
