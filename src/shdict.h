/*
 * shdict.h - a key/value dictionary in one shared mapping (shdict.c),
 * used by every worker of a pool: a lock word that names its owner (a
 * dead owner's lock is taken over), gets without the lock, hash buckets
 * and an LRU list of offsets (never pointers), a buddy allocator, and an
 * undo journal that repairs the dictionary when a process dies holding
 * the lock. Everything read from the mapping is bounds-checked:
 * any process holding it may have scribbled on it. No Lua, no logging.
 */
#ifndef FDP_SHDICT_H
#define FDP_SHDICT_H

#include <stddef.h>
#include <stdint.h>

#define FDP_SHD_MIN         (64u * 1024)            /* bytes */
#define FDP_SHD_MAX         (1024u * 1024 * 1024)   /* 1 GiB */
#define FDP_SHD_NAME_MAX    31
#define FDP_SHD_KEY_MAX     65535

enum fdp_shd_type {
    FDP_SHD_NIL = 0,
    FDP_SHD_STRING,
    FDP_SHD_INTEGER,
    FDP_SHD_NUMBER,
    FDP_SHD_BOOLEAN
};

/* Operations, for the test-only knob that dies inside one of them. */
enum fdp_shd_op {
    FDP_SHD_OP_NONE = 0,
    FDP_SHD_OP_GET,
    FDP_SHD_OP_SET,
    FDP_SHD_OP_INCR,
    FDP_SHD_OP_DELETE,
    FDP_SHD_OP_EXPIRE,
    FDP_SHD_OP_FLUSH
};

struct fdp_shd_val {
    int type;
    int64_t i;                  /* INTEGER, BOOLEAN */
    double n;                   /* NUMBER */
    const char *s;              /* STRING (get: the view's scratch copy) */
    size_t len;
    uint32_t flags;
    uint32_t at;                /* get: the entry's offset (a cache hint) */
    uint32_t blkno;             /* get: its block's number among the blocks
                                   of its size (neighbours: consecutive) */
};

/* A process's view of one mapping: the layout is computed from the size
 * here, never read back from the mapping. */
struct fdp_shd {
    unsigned char *base;
    uint32_t size;
    uint32_t buckets, nbuckets; /* offset, count (a power of two) */
    uint32_t journal, jcap;     /* offset, records */
    uint32_t seen, seenlen;     /* the get marks: offset, bytes */
    uint32_t heap, heapend;     /* offsets */
    uint32_t maxorder;          /* log2 of the largest block */
    /* the operation in progress (this process, under the lock) */
    int op;
    uint32_t nwrites;
    int die_op;                 /* test knob: _exit at write die_at of op */
    uint32_t die_at;
    int corrupt;                /* a bad offset was met in this op */
    uint64_t now;               /* the clock in this op (0: not read) */
    uint32_t nfreed;            /* blocks freed in this op: reusing one
                                   needs its bytes journaled too */
    int wseq;                   /* this op made the write sequence odd */
    /* what the last lock found: 1 repaired from the journal, 2 flushed */
    int recovered;
    uint32_t undone;            /* 1: the writes undone (0: none made) */
    char *scratch;              /* get's copy of a string value */
    size_t scratchcap;
};

/* What `pool status` shows, from counters clamped to [0, size]. Reads
 * two counters; never locks or walks the mapping. */
struct fdp_shd_usage {
    uint64_t size, used, keys;
};

/* Parse "NAME:SIZE" or a SIZE alone ("512k", "10m", "1g", bytes). 0 or
 * -EINVAL with a one-line reason in err. */
int fdp_shd_parse_size(const char *s, uint64_t *out, char *err,
                       size_t errlen);
int fdp_shd_check_name(const char *name, char *err, size_t errlen);

/* Lay out a fresh dictionary in base[0, size) (the master, once, before
 * forking; size from fdp_shd_parse_size). 0 or -errno. */
int fdp_shd_format(void *base, size_t size);
/* Attach a view (any process): 0 or -EINVAL (not a dictionary). */
int fdp_shd_attach(struct fdp_shd *d, void *base, size_t size);
void fdp_shd_detach(struct fdp_shd *d);
/* Is this a dictionary of this binary's format (a mapping handed over by
 * `pool upgrade` may be an older one)? 1 or 0; reads the header only. */
int fdp_shd_compatible(const void *base, size_t size);
void fdp_shd_usage(const void *base, size_t size, struct fdp_shd_usage *u);

/*
 * The operations. Each takes and releases the lock. Return values:
 * get: 1 found (v filled; a string is copied to d->scratch), 0 not found,
 * -errno. set-like (mode 0 set, 1 add, 2 replace): 0, -EEXIST (add),
 * -ENOENT (replace), -ENOMEM (no room even after evicting), -E2BIG (the
 * entry can never fit), with *evicted set when valid entries were
 * evicted to make room. A value of type NIL deletes. incr: 0 with the
 * new value in *v, -ENOENT, -EINVAL (not a number). ttl/expire: 0 or
 * -ENOENT. -EIO everywhere: the mapping was found corrupted and has been
 * flushed (every entry dropped).
 */
int fdp_shd_get(struct fdp_shd *d, const char *key, size_t klen,
                struct fdp_shd_val *v, double *ttl);
int fdp_shd_set(struct fdp_shd *d, int mode, const char *key, size_t klen,
                const struct fdp_shd_val *v, double ttl, int *evicted);
int fdp_shd_incr(struct fdp_shd *d, const char *key, size_t klen,
                 const struct fdp_shd_val *by, const struct fdp_shd_val *init,
                 double init_ttl, struct fdp_shd_val *v, int *evicted);
int fdp_shd_ttl(struct fdp_shd *d, const char *key, size_t klen, double *ttl);
int fdp_shd_expire(struct fdp_shd *d, const char *key, size_t klen,
                   double ttl);
int fdp_shd_flush(struct fdp_shd *d);
/* Call fn for up to max (0: all) live keys, most recently used first;
 * the keys are copied out before fn runs (after the unlock). Returns the
 * count or -errno. */
int fdp_shd_keys(struct fdp_shd *d, size_t max,
                 void (*fn)(void *ud, const char *key, size_t klen),
                 void *ud);
/* Walk and check everything (tests; the write sequence even too): 0, or
 * -EIO when the structure is inconsistent (nothing changed). */
int fdp_shd_check(struct fdp_shd *d);
/* Free bytes in the allocator (the largest entry may still not fit). */
int64_t fdp_shd_free_space(struct fdp_shd *d);

#endif
