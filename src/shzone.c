/*
 * shzone.c - the master's part of the shared dictionaries (see
 * shzone.h): memfd_create(MFD_CLOEXEC) + ftruncate + mmap(MAP_SHARED),
 * formatted once (shdict.c) before the workers fork. The memfd is kept
 * open in the master alone so a binary upgrade could hand the mapping to
 * a new master; workers close it and keep the mapping they inherited.
 */
#include "fdp.h"
#include "pool.h"
#include "shdict.h"
#include "shzone.h"
#include "status.h"

#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>


int
fdp_shzone_add(struct fdp_pool *p, const char *name, const char *size_s,
               uint64_t size)
{
    struct fdp_shzone *z;
    char err[160], mname[48];
    int i, r;

    if (fdp_shd_check_name(name, err, sizeof(err)) < 0
        || (size_s != NULL
            && fdp_shd_parse_size(size_s, &size, err, sizeof(err)) < 0)) {
        snprintf(p->error, sizeof(p->error), "shared '%.40s': %s", name, err);
        return -EINVAL;
    }
    if (size < FDP_SHD_MIN || size > FDP_SHD_MAX) {
        snprintf(p->error, sizeof(p->error), "shared '%s': size %llu out of "
                 "range (64k to 1g)", name, (unsigned long long) size);
        return -EINVAL;
    }
    for (i = 0; i < p->nshared; i++) {
        if (strcmp(p->shared[i].name, name) == 0) {
            snprintf(p->error, sizeof(p->error), "shared '%s' given twice",
                     name);
            return -EEXIST;
        }
    }
    if (p->nshared == FDP_MAX_SHARED) {
        snprintf(p->error, sizeof(p->error), "shared '%s': at most %d "
                 "dictionaries", name, FDP_MAX_SHARED);
        return -ENOSPC;
    }
    z = &p->shared[p->nshared];
    snprintf(mname, sizeof(mname), "fdpool-shared-%s", name);
    z->fd = memfd_create(mname, MFD_CLOEXEC);
    if (z->fd < 0 || ftruncate(z->fd, (off_t) size) < 0) {
        r = -errno;
        snprintf(p->error, sizeof(p->error), "shared '%s': cannot create "
                 "its memory: %s", name, strerror(-r));
        fdp_close(&z->fd);
        return r;
    }
    z->base = mmap(NULL, (size_t) size, PROT_READ | PROT_WRITE, MAP_SHARED,
                   z->fd, 0);
    if (z->base == MAP_FAILED) {
        r = -errno;
        z->base = NULL;
        snprintf(p->error, sizeof(p->error), "shared '%s': mmap() failed: "
                 "%s", name, strerror(-r));
        fdp_close(&z->fd);
        return r;
    }
    r = fdp_shd_format(z->base, (size_t) size);
    if (r < 0) {
        snprintf(p->error, sizeof(p->error), "shared '%s': cannot set up "
                 "its lock: %s", name, strerror(-r));
        (void) munmap(z->base, (size_t) size);
        z->base = NULL;
        fdp_close(&z->fd);
        return r;
    }
    snprintf(z->name, sizeof(z->name), "%s", name);
    z->size = size;
    p->nshared++;
    return 0;
}


void
fdp_shzone_adopt(struct fdp_pool *p, const char *name, int fd)
{
    struct fdp_shzone *z = NULL;
    struct stat st;
    void *base;
    int i;

    for (i = 0; i < p->nshared; i++) {
        if (strcmp(p->shared[i].name, name) == 0) {
            z = &p->shared[i];
        }
    }
    if (z == NULL || fstat(fd, &st) < 0 || (uint64_t) st.st_size != z->size) {
        fdp_log(FDP_LOG_WARN, 0, "upgrade: shared '%.40s' %s; its entries "
                "are dropped", name, z == NULL ? "is no longer configured"
                : "changed size (or cannot be read)");
        fdp_close(&fd);
        return;
    }
    base = mmap(NULL, (size_t) z->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                fd, 0);
    if (base == MAP_FAILED) {
        fdp_log(FDP_LOG_WARN, errno, "upgrade: shared '%s': mmap() failed; "
                "starting empty", name);
        fdp_close(&fd);
        return;
    }
    if (!fdp_shd_compatible(base, (size_t) z->size)) {
        fdp_log(FDP_LOG_WARN, 0, "upgrade: shared '%s' was made by a binary "
                "with another format; its entries are dropped", name);
        (void) munmap(base, (size_t) z->size);
        fdp_close(&fd);
        return;
    }
    (void) munmap(z->base, (size_t) z->size);
    fdp_close(&z->fd);
    z->base = base;
    z->fd = fd;
    (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
    fdp_log(FDP_LOG_INFO, 0, "upgrade: shared '%s' taken over with its "
            "entries", name);
}


void
fdp_shzone_close(struct fdp_pool *p, int unmap)
{
    int i;

    for (i = 0; i < p->nshared; i++) {
        struct fdp_shzone *z = &p->shared[i];

        fdp_close(&z->fd);
        if (unmap && z->base != NULL) {
            (void) munmap(z->base, (size_t) z->size);
            z->base = NULL;
        }
    }
    if (unmap) {
        p->nshared = 0;
    }
}


void
fdp_shzone_status(struct fdp_pool *p, struct fdp_status_info *info)
{
    int i;

    info->nshared = 0;
    for (i = 0; i < p->nshared && i < FDP_STATUS_SHARED_MAX; i++) {
        struct fdp_shzone *z = &p->shared[i];
        struct fdp_shd_usage u;

        if (z->base == NULL) {
            continue;
        }
        fdp_shd_usage(z->base, (size_t) z->size, &u);
        info->shared[info->nshared].name = z->name;
        info->shared[info->nshared].size = u.size;
        info->shared[info->nshared].used = u.used;
        info->shared[info->nshared].keys = u.keys;
        info->nshared++;
    }
}
