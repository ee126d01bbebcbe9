/*
 * shdict.c - the shared dictionary (see shdict.h). One mapping:
 *
 *   header   the lock word (its own cache line), the free lists and the
 *            counters read once; then one "hot" line with what every
 *            operation touches (journal state, the LRU move record, the
 *            LRU ends, use counters, the write sequence)
 *   journal  jcap x {u32 off, u32 old}: the undo record of the one
 *            operation in progress (its first two records in the hot line)
 *   buckets  nbuckets x u32: offset of the first entry of each chain
 *   seen     a bit per 64-byte block: the get marks (seen_mark)
 *   heap     blocks of a buddy allocator (64 B .. 1 MiB), each an 8-byte
 *            tag then, when in use, one entry (48-byte head, key, value)
 *
 * Every link is an offset into the mapping, and every offset read from
 * it is checked before use (an entry whose key or value is read: range,
 * alignment, the block's tag, its lengths; an LRU neighbour whose links
 * alone are written: range and alignment): a bad one makes the operation
 * flush the dictionary and return -EIO instead of following it. The
 * layout is computed from the size by each process, never read back.
 * Every metadata write of an operation goes through w32(), which first
 * appends the old value to the journal (a write that changes nothing is
 * skipped); the journal is emptied when the operation ends. A process
 * that dies holding the lock leaves the journal behind, and the next
 * locker (which takes a dead owner's lock over) writes the old values
 * back in reverse: the
 * dictionary is as it was before that operation. One exception:
 * moving an entry to the head of the LRU list (a locked get) records
 * the entry and its old neighbours in the hot line, then writes the
 * six links directly; a
 * death inside is undone from that record (lru_undo), a death after it
 * leaves the entry at the head of a whole list. Key and value bytes go
 * only into freshly allocated blocks, or through the journal when
 * rewritten in place, so an undo finds them again; a journal that
 * overflowed (a long eviction) or a death inside flush_all flushes.
 * A get first tries without the lock (get_nolock: a seqlock reader),
 * and marks its entry as used (a bit outside the entries, a hint, not
 * journaled) instead of moving it; so does a value rewritten in place
 * (set of the same block size, incr): the eviction gives a marked tail
 * a second chance. A set or incr in place thus writes its entry's
 * changed words and no LRU links (no neighbour's cache line).
 */
#include "fdp.h"
#include "shdict.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHD_MAGIC       0x66647368u     /* "fdsh" */
#define SHD_VERSION     3u      /* 2: the hot header line, the LRU move record;
                                   3: the lock word (no glibc mutex) */
#define TAG             0xb10c0000u
#define TAG_FREE        0x100u
#define MINORD          6               /* 64-byte blocks */
#define MAXORD          20              /* 1 MiB */
#define EVICT_MAX       30              /* entries evicted for one alloc */
#define EVICT_CHANCES   64              /* marked tails moved for one alloc */

/* entry fields, from the entry's offset (block + 8) */
#define E_HNEXT     0
#define E_LPREV     4
#define E_LNEXT     8
#define E_HASH      12
#define E_KLEN      16
#define E_VLEN      20
#define E_TYPE      24
#define E_FLAGS     28
#define E_EXPLO     32
#define E_EXPHI     36
#define E_NUMLO     40
#define E_NUMHI     44
#define E_SIZE      48
/* a free block: tag, next, prev */
#define B_NEXT      8
#define B_PREV      12

struct shd_hdr {
    /* first, alone in its cache line: a worker that scribbles on the
     * mapping elsewhere cannot break the lock */
    union {
        uint64_t word;          /* see "the lock" below */
        char line[64];
    } lock;
    /* read once (attach), or by the allocator */
    uint32_t magic, version, size, pad0;
    uint32_t freelist[MAXORD + 1];  /* written through the journal */
    uint32_t pad1;
    uint64_t flushes, repairs;
    uint32_t pad2[2];
    /* the line every operation touches (offset 192), so a lock handed
     * between workers brings one line of header with it; the journal
     * follows, its first two records in this line too */
    uint32_t jn;                /* journal records of the op in progress */
    uint32_t jover;             /* the journal overflowed: flush on death */
    uint32_t op;                /* FDP_SHD_OP_FLUSH while flushing */
    /* the LRU move in progress (lru_touch): its entry (0: none), and
     * what it was linked to; enough to put it back (recover) */
    uint32_t mv_e, mv_p, mv_n, mv_head;
    /* written through the journal */
    uint32_t used;              /* bytes of blocks holding entries */
    uint32_t nkeys;
    uint32_t lru_head, lru_tail;    /* head: most recently used */
    /* odd while an operation that changes what a lockless get reads
     * (buckets, chains, entries, blocks) holds the lock; each such
     * operation adds 2 (seq_begin, seq_end). Not journaled. */
    uint32_t seq;
};

/* the layout above, checked at compile time */
typedef char shd_hdr_layout[(offsetof(struct shd_hdr, jn) == 192
                             && sizeof(struct shd_hdr) == 240) ? 1 : -1];

struct shd_rec {
    uint32_t off, old;
};

#define HOFF(f)     ((uint32_t) offsetof(struct shd_hdr, f))
#define FL(o)       (HOFF(freelist) + 4u * (uint32_t) (o))

static struct shd_hdr *
hdr(struct fdp_shd *d)
{
    return (struct shd_hdr *) (void *) d->base;
}


static uint32_t
r32(struct fdp_shd *d, uint32_t off)
{
    return *(volatile uint32_t *) (void *) (d->base + off);
}


/* The one way an operation writes metadata: journal the old value, then
 * write (a write that changes nothing is skipped: nothing to undo). The
 * compiler barriers keep the journal record ahead of the write (a
 * process killed between the two leaves a usable record). Once the
 * journal is full, jover says so (a death then flushes). */
static inline void
w32(struct fdp_shd *d, uint32_t off, uint32_t v)
{
    struct shd_hdr *h = hdr(d);
    volatile uint32_t *p = (volatile uint32_t *) (void *) (d->base + off);
    uint32_t n = h->jn, old = *p;

    if (old != v) {
        if (n < d->jcap) {
            volatile struct shd_rec *rec = (volatile struct shd_rec *)
                                           (void *) (d->base + d->journal);

            rec[n].off = off;
            rec[n].old = old;
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
            h->jn = n + 1;
        } else {
            h->jover = 1;
        }
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        *p = v;
    }
    /* the test knob: die holding the lock after this write (counted
     * whether it changed anything or not) */
    if (__builtin_expect(d->die_op != 0, 0) && d->die_op == d->op
        && ++d->nwrites == d->die_at) {
        _exit(86);
    }
}


/* Before the first write a lockless get could read (the lock held):
 * make the sequence odd, then order it before those writes. Already odd
 * (its last writer died) it stays so until seq_end. */
static inline void
seq_begin(struct fdp_shd *d)
{
    struct shd_hdr *h = hdr(d);
    uint32_t s;

    if (d->wseq) {
        return;
    }
    s = __atomic_load_n(&h->seq, __ATOMIC_RELAXED);
    if (!(s & 1u)) {
        __atomic_store_n(&h->seq, s + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    d->wseq = 1;
}


/* The writes are done (before the unlock): even again, after them. */
static inline void
seq_end(struct fdp_shd *d)
{
    struct shd_hdr *h = hdr(d);

    if (d->wseq) {
        __atomic_store_n(&h->seq, (__atomic_load_n(&h->seq, __ATOMIC_RELAXED)
                                   | 1u) + 1, __ATOMIC_RELEASE);
        d->wseq = 0;
    }
}


/* Copy n bytes to off (4-aligned). Into a block that was never freed in
 * this operation, directly (nothing live was there: a death undoes the
 * allocation); into one that may have been (an evicted or replaced
 * entry's), word by word through the journal, so an undo finds that
 * entry's bytes again. */
static void
wbytes(struct fdp_shd *d, uint32_t off, const char *src, size_t n)
{
    size_t i;

    if (d->nfreed == 0) {
        memcpy(d->base + off, src, n);
        return;
    }
    for (i = 0; i < n; i += 4) {
        uint32_t w;

        memcpy(&w, d->base + off + i, 4);
        memcpy(&w, src + i, n - i < 4 ? n - i : 4);
        w32(d, off + (uint32_t) i, w);
    }
}


/* ---- layout ----------------------------------------------------------- */

static uint32_t
align64(uint32_t x)
{
    return (x + 63u) & ~63u;
}


static void
layout(struct fdp_shd *d, uint32_t size)
{
    uint32_t nb = 16, avail, o;

    while (nb * 2 <= size / 512) {
        nb *= 2;
    }
    d->size = size;
    d->journal = (uint32_t) sizeof(struct shd_hdr);   /* in the hot line */
    d->jcap = size / 64 < 8192 ? size / 64 : 8192;
    d->buckets = align64(d->journal
                         + d->jcap * (uint32_t) sizeof(struct shd_rec));
    d->nbuckets = nb;
    /* a bit per 64-byte block the heap can hold, set by a lockless get */
    d->seen = align64(d->buckets + nb * 4);
    d->seenlen = align64(size / 512 + 1);
    d->heap = align64(d->seen + d->seenlen);
    avail = size - d->heap;
    for (o = MAXORD; o > MINORD && (1u << o) > avail; o--) {
    }
    d->maxorder = o;
    d->heapend = d->heap + (avail & ~63u);
}


/* ---- checks of what the mapping says ----------------------------------- */

static int
bad(struct fdp_shd *d)
{
    d->corrupt = 1;
    return 0;
}


/* A block at blk: aligned, inside the heap, its tag valid. Returns its
 * order (0: not a block). want_free: -1 any, 0 in use, 1 free. */
static inline uint32_t
blk_order(struct fdp_shd *d, uint32_t blk, int want_free)
{
    uint32_t tag, o;

    if (blk < d->heap || blk >= d->heapend || ((blk - d->heap) & 63u)) {
        return bad(d);
    }
    tag = r32(d, blk);
    o = tag & 0xffu;
    if ((tag & 0xfffffe00u) != TAG || o < MINORD || o > d->maxorder
        || (uint64_t) blk + (1u << o) > d->heapend
        || (want_free >= 0 && !!(tag & TAG_FREE) != want_free)) {
        return bad(d);
    }
    return o;
}


/* An entry at e (0 is "none", valid): in a used block, its lengths
 * inside the block. */
static inline int
ent_ok(struct fdp_shd *d, uint32_t e)
{
    uint32_t o;

    if (e == 0) {
        return 1;
    }
    if (e < d->heap + 8 || (o = blk_order(d, e - 8, 0)) == 0) {
        return bad(d);
    }
    if ((uint64_t) 8 + E_SIZE + r32(d, e + E_KLEN) + r32(d, e + E_VLEN)
        > (1u << o)) {
        return bad(d);
    }
    return 1;
}


static int
free_ok(struct fdp_shd *d, uint32_t blk, uint32_t o)
{
    return blk == 0 || blk_order(d, blk, 1) == o || bad(d);
}


/* A link to an entry whose list fields alone are read or written (the
 * LRU neighbours): 0, or where an entry can start (a block's offset + 8)
 * so its head lies inside the heap. What it links is checked when an
 * operation reads the entry itself (ent_ok). */
static inline int
link_ok(struct fdp_shd *d, uint32_t e)
{
    uint32_t rel = e - d->heap - 8;

    return e == 0 || ((rel & 63u) == 0 && rel < d->heapend - d->heap)
           || bad(d);
}


/* ---- the buddy allocator ------------------------------------------------ */

static void
fl_remove(struct fdp_shd *d, uint32_t blk, uint32_t o)
{
    uint32_t next = r32(d, blk + B_NEXT), prev = r32(d, blk + B_PREV);

    if (!free_ok(d, next, o) || !free_ok(d, prev, o)) {
        return;
    }
    if (prev) {
        w32(d, prev + B_NEXT, next);
    } else {
        w32(d, FL(o), next);
    }
    if (next) {
        w32(d, next + B_PREV, prev);
    }
}


static void
fl_push(struct fdp_shd *d, uint32_t blk, uint32_t o)
{
    uint32_t head = r32(d, FL(o));

    if (!free_ok(d, head, o)) {
        return;
    }
    w32(d, blk, TAG | TAG_FREE | o);
    w32(d, blk + B_NEXT, head);
    w32(d, blk + B_PREV, 0);
    if (head) {
        w32(d, head + B_PREV, blk);
    }
    w32(d, FL(o), blk);
}


/* A block of order `order` (its tag written), or 0. */
static uint32_t
blk_alloc(struct fdp_shd *d, uint32_t order)
{
    uint32_t o, blk;

    for (o = order; o <= d->maxorder; o++) {
        blk = r32(d, FL(o));
        if (blk == 0) {
            continue;
        }
        if (!free_ok(d, blk, o)) {
            return 0;
        }
        fl_remove(d, blk, o);
        while (o > order) {
            o--;
            fl_push(d, blk + (1u << o), o);
        }
        w32(d, blk, TAG | order);
        return d->corrupt ? 0 : blk;
    }
    return 0;
}


static void
blk_free(struct fdp_shd *d, uint32_t blk, uint32_t o)
{
    d->nfreed++;
    while (o < d->maxorder) {
        uint32_t rel = blk - d->heap, brel = rel ^ (1u << o);
        uint32_t b = d->heap + brel;

        if ((uint64_t) b + (1u << o) > d->heapend
            || r32(d, b) != (TAG | TAG_FREE | o)) {
            break;
        }
        fl_remove(d, b, o);
        blk = d->heap + (rel < brel ? rel : brel);
        o++;
    }
    fl_push(d, blk, o);
}


/* Lay the heap out as free blocks, empty every list: the flush. Written
 * without the journal, marked by hdr->op (a death inside flushes again). */
static void
format_data(struct fdp_shd *d)
{
    struct shd_hdr *h = hdr(d);
    uint32_t rel, o, avail = d->heapend - d->heap;

    seq_begin(d);
    h->op = FDP_SHD_OP_FLUSH;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    memset(d->base + d->buckets, 0, (size_t) d->nbuckets * 4);
    memset(d->base + d->seen, 0, d->seenlen);
    h->used = 0;
    h->nkeys = 0;
    h->lru_head = 0;
    h->lru_tail = 0;
    memset(h->freelist, 0, sizeof(h->freelist));
    for (rel = 0; avail - rel >= (1u << MINORD); rel += 1u << o) {
        uint32_t blk = d->heap + rel, head;

        for (o = d->maxorder; o > MINORD; o--) {
            if ((rel & ((1u << o) - 1)) == 0 && rel + (1u << o) <= avail) {
                break;
            }
        }
        head = h->freelist[o];
        *(uint32_t *) (void *) (d->base + blk) = TAG | TAG_FREE | o;
        *(uint32_t *) (void *) (d->base + blk + B_NEXT) = head;
        *(uint32_t *) (void *) (d->base + blk + B_PREV) = 0;
        if (head) {
            *(uint32_t *) (void *) (d->base + head + B_PREV) = blk;
        }
        h->freelist[o] = blk;
    }
    h->jn = 0;
    h->jover = 0;
    h->mv_e = 0;
    h->flushes++;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    h->op = 0;
}


/* A journaled write may only have touched the counters and lists of the
 * header, the buckets or the heap. */
static int
journal_off_ok(struct fdp_shd *d, uint32_t off)
{
    if (off & 3u) {
        return 0;
    }
    return (off >= HOFF(used) && off < HOFF(seq))
           || (off >= HOFF(freelist) && off < HOFF(pad1))
           || (off >= d->buckets && off < d->buckets + d->nbuckets * 4)
           || (off >= d->heap && off + 4 <= d->heapend);
}


static int lru_undo(struct fdp_shd *d);

/* The last locker died inside an operation: undo it from the journal (1),
 * or flush when that cannot be trusted (2). */
static void
recover(struct fdp_shd *d)
{
    struct shd_hdr *h = hdr(d);
    struct shd_rec *rec = (struct shd_rec *) (void *) (d->base + d->journal);
    uint32_t n = h->jn, i;

    seq_begin(d);
    d->undone = n + (h->mv_e != 0);
    if (h->op != 0 || h->jover || n > d->jcap
        || (h->mv_e != 0 && lru_undo(d) < 0)) {
        format_data(d);
        d->recovered = 2;
        return;
    }
    for (i = 0; i < n; i++) {
        if (!journal_off_ok(d, rec[i].off)) {
            format_data(d);
            d->recovered = 2;
            return;
        }
    }
    while (n > 0) {
        n--;
        *(volatile uint32_t *) (void *) (d->base + rec[n].off) = rec[n].old;
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    h->jn = 0;
    h->repairs++;
    d->recovered = 1;
}


/* ---- the lock ------------------------------------------------------------
 *
 * One 64-bit word in its own cache line: 0 when free, else its owner: the
 * owner's pid (low 31 bits) with LK_WAIT (bit 31: a waiter may sleep on
 * the futex, the unlock must wake one), and in the high 32 bits a token
 * of that process (its start time from /proc, low bits set), so a pid
 * reused by another process is not mistaken for the owner. Taking it is
 * one compare-and-swap of 0 to this process's word; releasing it is one
 * exchange to 0 (a futex wake when LK_WAIT was set). No kernel robust
 * list: a waiter that finds the lock held checks whether its owner is
 * still there (kill(pid, 0) first, then, after sleeping 10 ms in vain,
 * /proc/PID/stat: gone, a zombie, or another process's start time; a
 * pidfd when /proc hides it: lk_exited), and
 * takes a dead owner's lock over with one compare-and-swap of exactly
 * the word it judged: then it repairs (recover) as the next locker after
 * a death. A process that never meets a dead owner pays no system call.
 * One thread per process may use a dictionary (the workers' Lua is one
 * thread); threads of one process would still exclude each other, but a
 * thread dying inside the lock in a live process is not detected.
 */
#define LK_WAIT     0x80000000u
#define LK_PIDMASK  0x7fffffffu
#define LK_NAP_NS   10000000L       /* a waiter's sleep before a full check */

static uint64_t lk_me;              /* this process's word (0: not yet) */
static pthread_once_t lk_once = PTHREAD_ONCE_INIT;


static void
lk_atfork_child(void)
{
    lk_me = 0;                      /* a new process: a new word */
}


static void
lk_register(void)
{
    (void) pthread_atfork(NULL, NULL, lk_atfork_child);
}


/* The state and start time of process pid from /proc/PID/stat: 1 read,
 * 0 gone (no such process), -1 unknown (no /proc, unreadable). */
static int
proc_stat(pid_t pid, char *state, uint64_t *start)
{
    char path[48], buf[1024], *p;
    ssize_t n;
    int fd, i;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        return errno == ENOENT || errno == ESRCH ? 0 : -1;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    (void) close(fd);
    if (n <= 0) {
        return n == 0 || errno == ESRCH ? 0 : -1;
    }
    buf[n] = '\0';
    /* "pid (comm) S ppid ..."; comm may hold anything: after the last ')' */
    if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ' || p[2] == '\0') {
        return -1;
    }
    *state = p[2];
    p += 3;
    for (i = 4; i <= 22 && p != NULL; i++) {   /* to field 22, starttime */
        p = strchr(p, ' ');
        p = p != NULL ? p + 1 : NULL;
    }
    if (p == NULL) {
        return -1;
    }
    *start = strtoull(p, NULL, 10);
    return 1;
}


static uint32_t
lk_token(uint64_t start)
{
    return (uint32_t) start | 1u;   /* never 0: 0 is "no /proc" */
}


static __attribute__((noinline)) uint64_t
lk_me_slow(void)
{
    pid_t pid = getpid();
    uint64_t start = 0;
    char st;

    (void) pthread_once(&lk_once, lk_register);
    if (proc_stat(pid, &st, &start) != 1) {
        start = 0;
    }
    lk_me = (uint64_t) (uint32_t) pid
            | (uint64_t) (start != 0 ? lk_token(start) : 0) << 32;
    return lk_me;
}


static inline uint64_t
lk_self(void)
{
    return __builtin_expect(lk_me != 0, 1) ? lk_me : lk_me_slow();
}


/* Has process pid ended (a zombie too)? Asked of a pidfd, which polls
 * readable then: no /proc needed, and it sees through hidepid (a worker
 * under --user is not dumpable, its /proc/PID hidden from its peers, a
 * zombie's as well). 0 when it cannot tell. */
static int
lk_exited(pid_t pid)
{
#ifdef SYS_pidfd_open
    struct pollfd pfd;
    int fd = (int) syscall(SYS_pidfd_open, pid, 0), r;  /* (CLOEXEC) */

    if (fd < 0) {               /* (no pidfd: ENOSYS, EMFILE) */
        return errno == ESRCH || (kill(pid, 0) < 0 && errno == ESRCH);
    }
    pfd.fd = fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    r = poll(&pfd, 1, 0);
    (void) close(fd);
    return r == 1 && (pfd.revents & POLLIN) != 0;
#else
    return kill(pid, 0) < 0 && errno == ESRCH;
#endif
}


/* Is the owner recorded in w gone? full: also ask /proc (a zombie, a
 * reused pid) or a pidfd, else kill(pid, 0) alone. */
static int
lk_owner_dead(uint64_t w, int full)
{
    pid_t pid = (pid_t) (w & LK_PIDMASK);
    uint32_t tok = (uint32_t) (w >> 32);
    uint64_t start = 0;
    char st = 0;
    int r;

    if (pid == 0) {
        return 1;                   /* not a word any locker writes */
    }
    if (kill(pid, 0) < 0 && errno == ESRCH) {
        return 1;
    }
    if (!full) {
        return 0;
    }
    r = proc_stat(pid, &st, &start);
    if (r <= 0) {
        /* gone since kill(), hidden from us (hidepid) or unreadable: a
         * pidfd tells an ended process (a zombie too) from a live one,
         * not a reused pid (wait on: until it ends) */
        return lk_exited(pid);
    }
    return st == 'Z' || st == 'X'
           || (tok != 0 && lk_token(start) != tok);
}


static uint32_t *
lk_futex(struct shd_hdr *h)
{
    /* the word's low half, where pid and LK_WAIT are */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint32_t *) (void *) &h->lock.word + 1;
#else
    return (uint32_t *) (void *) &h->lock.word;
#endif
}


/* Wait until the lock is free, or take it from a dead owner. Returns 0
 * (taken), 1 (taken from a dead owner: repair). */
static __attribute__((noinline)) int
lk_slow(struct shd_hdr *h, uint64_t me)
{
    uint64_t cur, checked = 0;
    int i;

    /* Critical sections are short: spin a little before sleeping in the
     * kernel (as ngx_shmtx_lock does), reading the word (it stays in this
     * CPU's cache) and trying again once it looks free */
    for (i = 0; i < 100; i++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        cur = __atomic_load_n(&h->lock.word, __ATOMIC_RELAXED);
        if (cur == 0 && __atomic_compare_exchange_n(&h->lock.word, &cur, me,
                                                    0, __ATOMIC_ACQUIRE,
                                                    __ATOMIC_RELAXED)) {
            return 0;
        }
    }
    for (;;) {
        struct timespec ts = { 0, LK_NAP_NS };
        uint32_t lo;
        long r;

        cur = __atomic_load_n(&h->lock.word, __ATOMIC_RELAXED);
        if (cur == 0) {
            /* taken with LK_WAIT: others may still sleep */
            if (__atomic_compare_exchange_n(&h->lock.word, &cur,
                                            me | LK_WAIT, 0,
                                            __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                return 0;
            }
            continue;
        }
        /* a new owner: the cheap check once; the full one after a nap */
        if ((cur | LK_WAIT) != checked) {
            checked = cur | LK_WAIT;
            if (lk_owner_dead(cur, 0)) {
                goto take;
            }
        }
        if (!(cur & LK_WAIT)) {
            if (!__atomic_compare_exchange_n(&h->lock.word, &cur,
                                             cur | LK_WAIT, 0,
                                             __ATOMIC_RELAXED,
                                             __ATOMIC_RELAXED)) {
                continue;
            }
            cur |= LK_WAIT;
        }
        lo = (uint32_t) cur;
        r = syscall(SYS_futex, lk_futex(h), FUTEX_WAIT, lo, &ts, NULL, 0);
        if (r < 0 && errno == ETIMEDOUT
            && __atomic_load_n(&h->lock.word, __ATOMIC_RELAXED) == cur
            && lk_owner_dead(cur, 1)) {
            goto take;
        }
        continue;
take:
        /* exactly the word judged: two waiters cannot both take it */
        if (__atomic_compare_exchange_n(&h->lock.word, &cur, me | LK_WAIT,
                                        0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
            return 1;
        }
    }
}


static inline __attribute__((always_inline)) int
lk_lock(struct shd_hdr *h)
{
    uint64_t me = lk_self(), cur = 0;

    if (__builtin_expect(__atomic_compare_exchange_n(&h->lock.word, &cur, me,
                                                     0, __ATOMIC_ACQUIRE,
                                                     __ATOMIC_RELAXED), 1)) {
        return 0;
    }
    return lk_slow(h, me);
}


static inline __attribute__((always_inline)) void
lk_unlock(struct shd_hdr *h)
{
    uint64_t old = __atomic_exchange_n(&h->lock.word, 0, __ATOMIC_RELEASE);

    if (__builtin_expect((old & LK_WAIT) != 0, 0)) {
        (void) syscall(SYS_futex, lk_futex(h), FUTEX_WAKE, 1, NULL, NULL, 0);
    }
}


static inline __attribute__((always_inline)) int
lock(struct fdp_shd *d, int op)
{
    struct shd_hdr *h = hdr(d);
    int r = lk_lock(h);

    d->recovered = 0;
    if (r != 0) {
        recover(d);             /* the last owner died holding the lock */
    } else if ((h->jn | h->op | h->jover | h->mv_e) != 0) {
        recover(d);             /* cannot happen but by a scribble */
    }
    d->op = op;
    d->nwrites = 0;
    d->corrupt = 0;
    d->nfreed = 0;
    d->now = 0;
    /* a get-like op: in ent_delete, if any; set and incr: before their
     * first write (ent_delete, ent_insert, a rewrite in place), so one
     * that changes nothing (the same value set again) or only a number
     * (an incr: one 8-byte store) leaves the sequence and its line alone */
    if (op != FDP_SHD_OP_GET && op != FDP_SHD_OP_SET
        && op != FDP_SHD_OP_INCR) {
        seq_begin(d);
    }
    return 0;
}


/* End the operation: commit (empty the journal), or flush when it met a
 * bad offset (-EIO). Returns r, or -EIO. */
static inline __attribute__((always_inline)) int
unlock(struct fdp_shd *d, int r)
{
    struct shd_hdr *h = hdr(d);

    if (d->corrupt) {
        format_data(d);
        d->recovered = 2;
        r = -EIO;
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (h->jn != 0 || h->jover != 0) {
        h->jn = 0;
        h->jover = 0;
    }
    d->op = FDP_SHD_OP_NONE;
    seq_end(d);
    lk_unlock(h);
    return r;
}


/* ---- entries ------------------------------------------------------------ */

/* 8 bytes at a time (the last ones overlapping, or 4+4, or bytes), each
 * word mixed in by a multiply, then the high bits folded down (bucket_of
 * takes the low ones). Keys are short: this is a few instructions where a
 * byte loop was ~6 a byte. */
static inline uint64_t
hash_mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 32);
}


static uint32_t
hash_key(const char *key, size_t klen)
{
    uint64_t h = 0x2545f4914f6cdd1dull ^ klen, w = 0;
    uint32_t a, b;
    size_t i;

    if (klen >= 8) {
        for (i = 0; i + 8 < klen; i += 8) {
            memcpy(&w, key + i, 8);
            h = hash_mix(h, w);
        }
        memcpy(&w, key + klen - 8, 8);  /* the last 8, maybe overlapping */
    } else if (klen >= 4) {
        memcpy(&a, key, 4);
        memcpy(&b, key + klen - 4, 4);
        w = (uint64_t) a << 32 | b;
    } else {
        for (i = 0; i < klen; i++) {
            w = w << 8 | (unsigned char) key[i];
        }
    }
    h = hash_mix(h, w);
    h *= 0xff51afd7ed558ccdull;
    return (uint32_t) (h >> 32) ^ (uint32_t) h;
}


/* a == b for n bytes: short keys and values (most) without a call, by
 * words that may overlap (every load inside both ranges). */
static inline __attribute__((always_inline)) int
eq_bytes(const void *a, const void *b, size_t n)
{
    const char *x = a, *y = b;

    if (n >= 8 && n <= 16) {
        uint64_t p, q, r, t;

        memcpy(&p, x, 8);
        memcpy(&q, y, 8);
        memcpy(&r, x + n - 8, 8);
        memcpy(&t, y + n - 8, 8);
        return ((p ^ q) | (r ^ t)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t p, q, r, t;

        memcpy(&p, x, 4);
        memcpy(&q, y, 4);
        memcpy(&r, x + n - 4, 4);
        memcpy(&t, y + n - 4, 4);
        return ((p ^ q) | (r ^ t)) == 0;
    }
    return memcmp(x, y, n) == 0;
}


static uint32_t
bucket_of(struct fdp_shd *d, uint32_t hash)
{
    return d->buckets + (hash & (d->nbuckets - 1)) * 4;
}


/* The entry of key, or 0 (also when corrupt); *linkp: the offset of the
 * link that points at it. The walk is bounded: a loop is corruption. */
static inline __attribute__((always_inline)) uint32_t
lookup(struct fdp_shd *d, const char *key, size_t klen, uint32_t hash,
       uint32_t *linkp)
{
    uint32_t link = bucket_of(d, hash), e, steps = 0;
    uint32_t maxsteps = (d->heapend - d->heap) >> MINORD;

    while ((e = r32(d, link)) != 0) {
        if (!ent_ok(d, e) || ++steps > maxsteps) {
            return bad(d);
        }
        if (r32(d, e + E_HASH) == hash && r32(d, e + E_KLEN) == klen
            && eq_bytes(d->base + e + E_SIZE, key, klen)) {
            *linkp = link;
            return e;
        }
        link = e + E_HNEXT;
    }
    return 0;
}


static uint64_t
ent_exp(struct fdp_shd *d, uint32_t e)
{
    return (uint64_t) r32(d, e + E_EXPLO)
           | ((uint64_t) r32(d, e + E_EXPHI) << 32);
}


/* The clock, read at most once per operation and only when an entry
 * with a ttl (or a new ttl) needs it: clock_gettime was the biggest cost
 * of a get. */
static uint64_t
now_ms(struct fdp_shd *d)
{
    if (d->now == 0) {
        d->now = fdp_now_ms();
    }
    return d->now;
}


static int
expired(struct fdp_shd *d, uint32_t e, uint64_t now)
{
    uint64_t x = ent_exp(d, e);

    (void) now;
    return x != 0 && now_ms(d) >= x;
}


static inline void
set_exp(struct fdp_shd *d, uint32_t e, double ttl, uint64_t now)
{
    uint64_t x = ttl > 0 ? now_ms(d) + (uint64_t) (ttl * 1000.0 + 0.5) : 0;

    (void) now;

    if (ttl > 0 && x == 0) {
        x = 1;
    }
    w32(d, e + E_EXPLO, (uint32_t) x);
    w32(d, e + E_EXPHI, (uint32_t) (x >> 32));
}


static inline void
lru_remove(struct fdp_shd *d, uint32_t e)
{
    uint32_t p = r32(d, e + E_LPREV), n = r32(d, e + E_LNEXT);

    if (!link_ok(d, p) || !link_ok(d, n)) {
        return;
    }
    w32(d, p ? p + E_LNEXT : HOFF(lru_head), n);
    w32(d, n ? n + E_LPREV : HOFF(lru_tail), p);
}


static inline void
lru_push(struct fdp_shd *d, uint32_t e)
{
    uint32_t head = r32(d, HOFF(lru_head));

    if (!link_ok(d, head)) {
        return;
    }
    w32(d, e + E_LPREV, 0);
    w32(d, e + E_LNEXT, head);
    w32(d, head ? head + E_LPREV : HOFF(lru_tail), e);
    w32(d, HOFF(lru_head), e);
}


/* The test knob's count of a write made outside w32() (lru_touch). */
static inline void
knob(struct fdp_shd *d)
{
    if (__builtin_expect(d->die_op != 0, 0) && d->die_op == d->op
        && ++d->nwrites == d->die_at) {
        _exit(86);
    }
}


static inline void
st32(struct fdp_shd *d, uint32_t off, uint32_t v, int k)
{
    *(volatile uint32_t *) (void *) (d->base + off) = v;
    if (__builtin_expect(k, 0)) {
        knob(d);
    }
}


/*
 * Move e to the head of the LRU list (a locked get). Not through the
 * journal: the header first records e and what
 * it was linked to (its neighbours, the old head), then the six links
 * are written directly; a death in between is undone by lru_undo() from
 * that record alone. Called only where no journaled write of the same
 * operation touched the list before it, so undoing the journal after
 * the move completed still leaves a whole list (e merely at the head).
 */
static inline __attribute__((always_inline)) void
lru_touch(struct fdp_shd *d, uint32_t e)
{
    struct shd_hdr *h = hdr(d);
    uint32_t head = h->lru_head, p, n;
    int k = d->die_op != 0;     /* the test knob counts these writes */

    if (head == e) {
        return;
    }
    p = r32(d, e + E_LPREV);
    n = r32(d, e + E_LNEXT);
    if (p == 0 || !link_ok(d, p) || !link_ok(d, n) || !link_ok(d, head)) {
        bad(d);                 /* not the head, so it has a previous */
        return;
    }
    h->mv_p = p;
    h->mv_n = n;
    h->mv_head = head;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    h->mv_e = e;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    st32(d, p + E_LNEXT, n, k);
    st32(d, n ? n + E_LPREV : HOFF(lru_tail), p, k);
    st32(d, e + E_LPREV, 0, k);
    st32(d, e + E_LNEXT, head, k);
    st32(d, head + E_LPREV, e, k);
    st32(d, HOFF(lru_head), e, k);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    h->mv_e = 0;
}


/* A death inside lru_touch: put e back between its neighbours and the
 * old head back first. 0, or -1 when the record is not believable. */
static int
lru_undo(struct fdp_shd *d)
{
    struct shd_hdr *h = hdr(d);
    uint32_t e = h->mv_e, p = h->mv_p, n = h->mv_n, head = h->mv_head;

    if (e == 0 || p == 0 || head == 0 || !link_ok(d, e) || !link_ok(d, p)
        || !link_ok(d, n) || !link_ok(d, head) || d->corrupt) {
        d->corrupt = 0;
        return -1;
    }
    *(volatile uint32_t *) (void *) (d->base + head + E_LPREV) = 0;
    *(volatile uint32_t *) (void *) (d->base + e + E_LPREV) = p;
    *(volatile uint32_t *) (void *) (d->base + e + E_LNEXT) = n;
    *(volatile uint32_t *) (void *) (d->base + p + E_LNEXT) = e;
    *(volatile uint32_t *) (void *) (d->base + (n ? n + E_LPREV
                                                : HOFF(lru_tail))) = e;
    h->lru_head = head;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    h->mv_e = 0;
    return 0;
}


/* Unlink e (found through link) and free its block. */
static void
ent_delete(struct fdp_shd *d, uint32_t e, uint32_t link)
{
    uint32_t o = blk_order(d, e - 8, 0), used = r32(d, HOFF(used));
    uint32_t nk = r32(d, HOFF(nkeys));

    if (o == 0) {
        return;
    }
    seq_begin(d);
    w32(d, link, r32(d, e + E_HNEXT));
    lru_remove(d, e);
    w32(d, HOFF(used), used >= (1u << o) ? used - (1u << o) : 0);
    w32(d, HOFF(nkeys), nk > 0 ? nk - 1 : 0);
    blk_free(d, e - 8, o);
}


/* The link pointing at e, walking its bucket (0: not found, corrupt). */
static uint32_t
link_of(struct fdp_shd *d, uint32_t e)
{
    uint32_t link = bucket_of(d, r32(d, e + E_HASH)), x, steps = 0;
    uint32_t maxsteps = (d->heapend - d->heap) >> MINORD;

    while ((x = r32(d, link)) != 0) {
        if (x == e) {
            return link;
        }
        if (!ent_ok(d, x) || ++steps > maxsteps) {
            return bad(d);
        }
        link = x + E_HNEXT;
    }
    return bad(d);
}


/* The get marks: a bit per 64-byte block of the heap, set by a get that
 * found the entry at the block's start without the lock (it does not
 * move the entry in the LRU list), read and cleared by the eviction
 * under the lock. Hints only, outside the entries: a mark lost to a race
 * or left on a reused block costs an entry its second chance, or gives
 * one, and nothing else. e is a checked entry (block + 8). */
static inline volatile unsigned char *
seen_byte(struct fdp_shd *d, uint32_t e, unsigned *bit)
{
    uint32_t i = (e - 8 - d->heap) >> MINORD;

    *bit = 1u << (i & 7);
    return (volatile unsigned char *) (d->base + d->seen + (i >> 3));
}


static inline void
seen_mark(struct fdp_shd *d, uint32_t e)
{
    unsigned bit;
    volatile unsigned char *b = seen_byte(d, e, &bit);

    if (!(*b & bit)) {          /* written once: gets stay reads */
        *b = (unsigned char) (*b | bit);
    }
}


/* Was e marked? Clears the mark. */
static inline int
seen_take(struct fdp_shd *d, uint32_t e)
{
    unsigned bit;
    volatile unsigned char *b = seen_byte(d, e, &bit);

    if (*b & bit) {
        *b = (unsigned char) (*b & ~bit);
        return 1;
    }
    return 0;
}


/* Room for an entry of `need` bytes (with its block tag): a block, after
 * evicting up to EVICT_MAX least recently used entries (expired ones do
 * not count as evicted). 0 with *err set: -E2BIG, -ENOMEM. */
static uint32_t
ent_alloc(struct fdp_shd *d, uint64_t need, int *evicted, int *err)
{
    uint32_t order = MINORD, blk, i, chances = 0;
    uint64_t now = 0;

    while (order <= d->maxorder && (1ull << order) < need) {
        order++;
    }
    if (order > d->maxorder) {
        *err = -E2BIG;
        return 0;
    }
    for (i = 0; i <= EVICT_MAX; i++) {
        uint32_t tail, link;

        blk = blk_alloc(d, order);
        if (blk != 0 || d->corrupt || i == EVICT_MAX) {
            break;
        }
        tail = r32(d, HOFF(lru_tail));
        /* a tail a get marked since gets a second chance: to the head,
         * its mark cleared (through the journal: other writes of this
         * operation came before), at most EVICT_CHANCES for one alloc */
        while (chances < EVICT_CHANCES && tail != 0 && ent_ok(d, tail)
               && tail != r32(d, HOFF(lru_head)) && seen_take(d, tail)) {
            lru_remove(d, tail);
            lru_push(d, tail);
            chances++;
            tail = r32(d, HOFF(lru_tail));
        }
        if (tail == 0 || !ent_ok(d, tail) || (link = link_of(d, tail)) == 0) {
            break;
        }
        if (!expired(d, tail, now)) {
            *evicted = 1;
        }
        ent_delete(d, tail, link);
    }
    if (blk == 0) {
        *err = -ENOMEM;
        return 0;
    }
    w32(d, HOFF(used), r32(d, HOFF(used)) + (1u << order));
    w32(d, HOFF(nkeys), r32(d, HOFF(nkeys)) + 1);
    (void) seen_take(d, blk + 8);       /* a mark of an entry gone */
    return blk + 8;
}


/* The number of an entry is one native 8-byte word at E_NUMLO (8-byte
 * aligned), written here as two journaled words that hold its bytes in
 * memory order: an incr's single 8-byte store and a lockless get's
 * single load see the same number on either byte order. */
static inline void
put_num(struct fdp_shd *d, uint32_t e, const struct fdp_shd_val *v)
{
    uint64_t bits = 0;
    uint32_t w[2];

    if (v->type == FDP_SHD_NUMBER) {
        memcpy(&bits, &v->n, 8);
    } else {
        bits = (uint64_t) v->i;
    }
    memcpy(w, &bits, 8);        /* its 8 bytes as they lie in memory */
    w32(d, e + E_TYPE, (uint32_t) v->type);
    w32(d, e + E_NUMLO, w[0]);
    w32(d, e + E_NUMHI, w[1]);
}


static inline uint32_t lookup(struct fdp_shd *d, const char *key, size_t klen,
                       uint32_t hash, uint32_t *linkp);
static void put_value(struct fdp_shd *d, uint32_t e, size_t klen,
                      const struct fdp_shd_val *v, size_t vlen);
static void ent_delete(struct fdp_shd *d, uint32_t e, uint32_t link);

/* A new entry for key = v, linked first in its bucket and the LRU; the
 * old entry of key (if any, and still there after the evictions) is
 * deleted after the new one is filled, so its block is never reused. */
static int
ent_insert(struct fdp_shd *d, const char *key, size_t klen, uint32_t hash,
           const struct fdp_shd_val *v, double ttl, uint64_t now,
           int *evicted, uint32_t old)
{
    size_t vlen = v->type == FDP_SHD_STRING ? v->len : 0;
    int err = 0;
    uint32_t nfreed = d->nfreed, link = 0, e;

    seq_begin(d);
    e = ent_alloc(d, (uint64_t) 8 + E_SIZE + klen + vlen, evicted, &err);

    if (e == 0) {
        return d->corrupt ? -EIO : err;
    }
    if (old != 0) {
        if (d->nfreed != nfreed) {
            old = lookup(d, key, klen, hash, &link);   /* evicted? */
        } else {
            (void) lookup(d, key, klen, hash, &link);
        }
        if (old != 0) {
            ent_delete(d, old, link);
        }
        if (d->corrupt) {
            return -EIO;
        }
    }
    link = bucket_of(d, hash);
    /* Fresh block: the head through the journal (it overwrites the free
     * block's links), key and value bytes directly. */
    w32(d, e + E_HNEXT, r32(d, link));
    w32(d, e + E_HASH, hash);
    w32(d, e + E_KLEN, (uint32_t) klen);
    w32(d, e + E_VLEN, (uint32_t) vlen);
    w32(d, e + E_FLAGS, v->flags);
    put_num(d, e, v);
    set_exp(d, e, ttl, now);
    wbytes(d, e + E_SIZE, key, klen);
    put_value(d, e, klen, v, vlen);
    lru_push(d, e);
    w32(d, link, e);
    return 0;
}


/* The value bytes of e (after its key of klen bytes). */
static void
put_value(struct fdp_shd *d, uint32_t e, size_t klen,
          const struct fdp_shd_val *v, size_t vlen)
{
    if (vlen) {
        /* unaligned after the key: the first bytes share its last word */
        uint32_t at = e + E_SIZE + (uint32_t) klen, head = (4 - (at & 3)) & 3;

        if (head > vlen) {
            head = (uint32_t) vlen;
        }
        if (head > 0) {
            uint32_t w;

            memcpy(&w, d->base + (at & ~3u), 4);
            memcpy((char *) &w + (at & 3), v->s, head);
            if (d->nfreed == 0) {
                memcpy(d->base + (at & ~3u), &w, 4);
            } else {
                w32(d, at & ~3u, w);
            }
        }
        if (vlen > head) {
            wbytes(d, at + head, v->s + head, vlen - head);
        }
    }
}


static inline void
ent_value(struct fdp_shd *d, uint32_t e, struct fdp_shd_val *v)
{
    uint32_t w[2] = { r32(d, e + E_NUMLO), r32(d, e + E_NUMHI) };
    uint64_t bits;

    memcpy(&bits, w, 8);        /* (put_num) */
    v->type = (int) r32(d, e + E_TYPE);
    v->flags = r32(d, e + E_FLAGS);
    v->i = (int64_t) bits;
    memcpy(&v->n, &bits, 8);
    v->s = NULL;
    v->len = 0;
    if (v->type < FDP_SHD_STRING || v->type > FDP_SHD_BOOLEAN) {
        bad(d);
    }
}


static double
ttl_left(struct fdp_shd *d, uint32_t e, uint64_t now)
{
    uint64_t x = ent_exp(d, e);

    if (x != 0) {
        now = now_ms(d);
    }
    return x == 0 ? 0 : x > now ? (double) (x - now) / 1000.0 : 0.001;
}


/* ---- the operations ----------------------------------------------------- */

/*
 * A get without the lock (a seqlock reader): read the sequence (odd, or
 * the lock held: give up), look the key up and copy the value out, then
 * read the sequence again: changed, give up (the caller tries again, then
 * takes the lock). Everything read may be torn by a writer in between:
 * each offset is checked before it is followed (blk_order: a block in the
 * heap; the key and value inside that block, from lengths read once),
 * the walk is bounded, and nothing read is acted on before the second
 * check. An expired entry gives up too (the locked get deletes it). It
 * writes nothing to the mapping but its get mark (seen_mark). 1 found,
 * 0 not found, -1 give up.
 */
static int
get_nolock(struct fdp_shd *d, const char *key, size_t klen, uint32_t hash,
           struct fdp_shd_val *v, double *ttl)
{
    struct shd_hdr *h = hdr(d);
    uint32_t link = bucket_of(d, hash), e, o = 0, steps = 0, vlen = 0;
    uint32_t maxsteps = (d->heapend - d->heap) >> MINORD, type = 0, s1;
    uint32_t flags = 0;
    uint64_t bits = 0, x = 0;

    s1 = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
    if ((s1 & 1u) || __atomic_load_n(&h->lock.word, __ATOMIC_RELAXED) != 0) {
        return -1;
    }
    d->now = 0;
    while ((e = r32(d, link)) != 0) {
        if (++steps > maxsteps || e < d->heap + 8
            || (o = blk_order(d, e - 8, 0)) == 0) {
            goto giveup;
        }
        if (r32(d, e + E_HASH) == hash && r32(d, e + E_KLEN) == klen) {
            if ((uint64_t) 8 + E_SIZE + klen > (1u << o)) {
                goto giveup;
            }
            if (eq_bytes(d->base + e + E_SIZE, key, klen)) {
                break;
            }
        }
        link = e + E_HNEXT;
    }
    if (e != 0) {
        x = ent_exp(d, e);
        if (x != 0 && now_ms(d) >= x) {
            goto giveup;
        }
        type = r32(d, e + E_TYPE);
        flags = r32(d, e + E_FLAGS);
        /* at once: an incr stores it so, without the sequence */
        bits = __atomic_load_n((uint64_t *) (void *) (d->base + e + E_NUMLO),
                               __ATOMIC_RELAXED);
        if (type < FDP_SHD_STRING || type > FDP_SHD_BOOLEAN) {
            goto giveup;
        }
        if (type == FDP_SHD_STRING) {
            vlen = r32(d, e + E_VLEN);
            if ((uint64_t) 8 + E_SIZE + klen + vlen > (1u << o)) {
                goto giveup;
            }
            if (vlen + 1 > d->scratchcap) {
                char *b = realloc(d->scratch, vlen + 1);

                if (b == NULL) {
                    goto giveup;
                }
                d->scratch = b;
                d->scratchcap = vlen + 1;
            }
            memcpy(d->scratch, d->base + e + E_SIZE + klen, vlen);
        }
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&h->seq, __ATOMIC_RELAXED) != s1) {
        goto giveup;
    }
    if (e == 0) {
        return 0;
    }
    v->type = (int) type;
    v->flags = flags;
    v->i = (int64_t) bits;
    memcpy(&v->n, &bits, 8);
    v->s = NULL;
    v->len = 0;
    if (type == FDP_SHD_STRING) {
        v->s = d->scratch;
        v->len = vlen;
        v->at = e;
        v->blkno = (e - 8 - d->heap) >> o;
    }
    if (ttl) {
        *ttl = x == 0 ? 0 : (double) (x - now_ms(d)) / 1000.0;
    }
    seen_mark(d, e);
    return 1;
giveup:
    d->corrupt = 0;             /* (blk_order's verdict: the locked get's) */
    return -1;
}


int
fdp_shd_get(struct fdp_shd *d, const char *key, size_t klen,
            struct fdp_shd_val *v, double *ttl)
{
    uint32_t hash = hash_key(key, klen), link = 0, e;
    uint64_t now = 0;
    int r = 0, i;

    d->recovered = 0;
    /* without the lock, a few times (not with the test knob: it dies
     * inside the locked get's LRU move) */
    for (i = 0; i < 3 && __builtin_expect(d->die_op == 0, 1); i++) {
        if ((r = get_nolock(d, key, klen, hash, v, ttl)) >= 0) {
            return r;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    if ((r = lock(d, FDP_SHD_OP_GET)) < 0) {
        return r;
    }
    e = lookup(d, key, klen, hash, &link);
    if (e != 0 && expired(d, e, now)) {
        ent_delete(d, e, link);
        e = 0;
    }
    if (e != 0) {
        ent_value(d, e, v);
        if (ttl) {
            *ttl = ttl_left(d, e, now);
        }
        if (v->type == FDP_SHD_STRING) {
            size_t n = r32(d, e + E_VLEN);

            if (n + 1 > d->scratchcap) {
                char *b = realloc(d->scratch, n + 1);

                if (b == NULL) {
                    return unlock(d, -ENOMEM);
                }
                d->scratch = b;
                d->scratchcap = n + 1;
            }
            memcpy(d->scratch, d->base + e + E_SIZE + klen, n);
            v->s = d->scratch;
            v->len = n;
            v->at = e;
            v->blkno = (e - 8 - d->heap) >> blk_order(d, e - 8, 0);
        }
        lru_touch(d, e);
        r = 1;
    }
    return unlock(d, r);
}


/* Does key = v need a block of e's size (so it can be rewritten in
 * place)? e was found by lookup() under this lock: its tag is checked. */
static inline int
same_block(struct fdp_shd *d, uint32_t e, size_t klen,
           const struct fdp_shd_val *v)
{
    uint64_t need = (uint64_t) 8 + E_SIZE + klen
                    + (v->type == FDP_SHD_STRING ? v->len : 0);
    uint32_t o = r32(d, e - 8) & 0xffu;

    return need <= (1ull << o) && (o == MINORD || need > (1ull << (o - 1)));
}


int
fdp_shd_set(struct fdp_shd *d, int mode, const char *key, size_t klen,
            const struct fdp_shd_val *v, double ttl, int *evicted)
{
    uint32_t hash = hash_key(key, klen), link = 0, e;
    uint64_t now = 0;
    int r;

    *evicted = 0;
    if ((r = lock(d, FDP_SHD_OP_SET)) < 0) {
        return r;
    }
    e = lookup(d, key, klen, hash, &link);
    if (e != 0 && expired(d, e, now)) {
        ent_delete(d, e, link);
        e = 0;
    }
    if (d->corrupt) {
        return unlock(d, -EIO);
    }
    if (mode == 1 && e != 0) {
        return unlock(d, -EEXIST);
    }
    if (mode == 2 && e == 0) {
        return unlock(d, -ENOENT);
    }
    if (v->type == FDP_SHD_NIL) {
        if (e != 0) {
            ent_delete(d, e, link);
        }
    } else if (e != 0 && same_block(d, e, klen, v)) {
        /* The new value needs a block of the same size: rewrite it in
         * place, every byte through the journal (an undo must find the
         * old value again). */
        size_t vlen = v->type == FDP_SHD_STRING ? v->len : 0;
        uint32_t f[7];          /* the fields E_VLEN .. E_NUMHI as they */
        uint64_t bits = 0, x;   /* will be */

        if (v->type == FDP_SHD_NUMBER) {
            memcpy(&bits, &v->n, 8);
        } else {
            bits = (uint64_t) v->i;
        }
        x = ttl > 0 ? now_ms(d) + (uint64_t) (ttl * 1000.0 + 0.5) : 0;
        f[(E_VLEN - E_VLEN) / 4] = (uint32_t) vlen;
        f[(E_TYPE - E_VLEN) / 4] = (uint32_t) v->type;
        f[(E_FLAGS - E_VLEN) / 4] = v->flags;
        f[(E_EXPLO - E_VLEN) / 4] = (uint32_t) (ttl > 0 && x == 0 ? 1 : x);
        f[(E_EXPHI - E_VLEN) / 4] = (uint32_t) (x >> 32);
        memcpy(&f[(E_NUMLO - E_VLEN) / 4], &bits, 8);     /* (put_num) */
        d->nfreed++;
        /* the same fields (a value of the same type and length): none
         * written, nothing journaled */
        if (memcmp(d->base + e + E_VLEN, f, sizeof(f)) != 0) {
            uint32_t i;

            seq_begin(d);
            for (i = 0; i < 7; i++) {
                w32(d, e + E_VLEN + 4 * i, f[i]);
            }
        }
        if (vlen && !eq_bytes(d->base + e + E_SIZE + klen, v->s, vlen)) {
            seq_begin(d);
            put_value(d, e, klen, v, vlen);
        }
        seen_mark(d, e);        /* used: as a get marks it */
    } else {
        r = ent_insert(d, key, klen, hash, v, ttl, now, evicted, e);
    }
    return unlock(d, r);
}


int
fdp_shd_incr(struct fdp_shd *d, const char *key, size_t klen,
             const struct fdp_shd_val *by, const struct fdp_shd_val *init,
             double init_ttl, struct fdp_shd_val *v, int *evicted)
{
    uint32_t hash = hash_key(key, klen), link = 0, e;
    uint64_t now = 0;
    struct fdp_shd_val cur;
    int r;

    *evicted = 0;
    if ((r = lock(d, FDP_SHD_OP_INCR)) < 0) {
        return r;
    }
    e = lookup(d, key, klen, hash, &link);
    if (e != 0 && expired(d, e, now)) {
        ent_delete(d, e, link);
        e = 0;
    }
    if (d->corrupt) {
        return unlock(d, -EIO);
    }
    if (e == 0) {
        if (init == NULL) {
            return unlock(d, -ENOENT);
        }
        cur = *init;
    } else {
        ent_value(d, e, &cur);
        if (cur.type != FDP_SHD_INTEGER && cur.type != FDP_SHD_NUMBER) {
            return unlock(d, -EINVAL);
        }
    }
    /* integer + integer stays an integer (wrapping, as Lua's +) */
    if (cur.type == FDP_SHD_INTEGER && by->type == FDP_SHD_INTEGER) {
        v->type = FDP_SHD_INTEGER;
        v->i = (int64_t) ((uint64_t) cur.i + (uint64_t) by->i);
    } else {
        v->type = FDP_SHD_NUMBER;
        v->n = (cur.type == FDP_SHD_INTEGER ? (double) cur.i : cur.n)
               + (by->type == FDP_SHD_INTEGER ? (double) by->i : by->n);
    }
    v->flags = 0;
    v->s = NULL;
    v->len = 0;
    if (e == 0) {
        r = ent_insert(d, key, klen, hash, v, init_ttl, now, evicted, 0);
    } else {
        v->flags = cur.flags;
        if (v->type == cur.type) {
            /* the number alone changes: one aligned 8-byte store (a
             * lockless get loads it at once too), nothing to journal or
             * to hide from gets: a death leaves it counted or not. A
             * release store (a plain mov on x86): a get that loads it
             * and then, after its acquire fence, the sequence, sees the
             * sequence of every write made before this lock was taken
             * (an entry deleted and its block reused for this key), so
             * it cannot pair this number with what it read of an older
             * entry in that block and still find the sequence unchanged */
            uint64_t bits = (uint64_t) v->i;

            if (v->type == FDP_SHD_NUMBER) {
                memcpy(&bits, &v->n, 8);
            }
            __atomic_store_n((uint64_t *) (void *) (d->base + e + E_NUMLO),
                             bits, __ATOMIC_RELEASE);
            knob(d);
        } else {
            seq_begin(d);
            put_num(d, e, v);
        }
        seen_mark(d, e);        /* used: as a get marks it */
    }
    return unlock(d, r);
}


int
fdp_shd_ttl(struct fdp_shd *d, const char *key, size_t klen, double *ttl)
{
    uint32_t hash = hash_key(key, klen), link = 0, e;
    uint64_t now = 0;
    int r;

    if ((r = lock(d, FDP_SHD_OP_GET)) < 0) {
        return r;
    }
    e = lookup(d, key, klen, hash, &link);
    if (e != 0 && expired(d, e, now)) {
        ent_delete(d, e, link);
        e = 0;
    }
    if (e != 0) {
        *ttl = ttl_left(d, e, now);
    }
    return unlock(d, e != 0 ? 0 : -ENOENT);
}


int
fdp_shd_expire(struct fdp_shd *d, const char *key, size_t klen, double ttl)
{
    uint32_t hash = hash_key(key, klen), link = 0, e;
    uint64_t now = 0;
    int r;

    if ((r = lock(d, FDP_SHD_OP_EXPIRE)) < 0) {
        return r;
    }
    e = lookup(d, key, klen, hash, &link);
    if (e != 0 && expired(d, e, now)) {
        ent_delete(d, e, link);
        e = 0;
    }
    if (e != 0) {
        set_exp(d, e, ttl, now);
    }
    return unlock(d, e != 0 ? 0 : -ENOENT);
}


int
fdp_shd_flush(struct fdp_shd *d)
{
    int r;

    if ((r = lock(d, FDP_SHD_OP_FLUSH)) < 0) {
        return r;
    }
    if (d->die_op == FDP_SHD_OP_FLUSH && d->die_at > 0) {
        hdr(d)->op = FDP_SHD_OP_FLUSH;      /* the test knob: die inside */
        _exit(86);
    }
    format_data(d);
    return unlock(d, 0);
}


int
fdp_shd_keys(struct fdp_shd *d, size_t max,
             void (*fn)(void *ud, const char *key, size_t klen), void *ud)
{
    uint64_t now = 0;
    uint32_t e, steps = 0, maxsteps = (d->heapend - d->heap) >> MINORD;
    size_t len = 0, n = 0, i;
    int r;

    if ((r = lock(d, FDP_SHD_OP_GET)) < 0) {
        return r;
    }
    for (e = r32(d, HOFF(lru_head)); e != 0 && (max == 0 || n < max);
         e = r32(d, e + E_LNEXT)) {
        uint32_t klen;

        if (!ent_ok(d, e) || ++steps > maxsteps) {
            bad(d);
            break;
        }
        if (expired(d, e, now)) {
            continue;
        }
        klen = r32(d, e + E_KLEN);
        if (len + klen + 4 > d->scratchcap) {
            size_t cap = (len + klen + 4) * 2;
            char *b = realloc(d->scratch, cap);

            if (b == NULL) {
                return unlock(d, -ENOMEM);
            }
            d->scratch = b;
            d->scratchcap = cap;
        }
        memcpy(d->scratch + len, &klen, 4);
        memcpy(d->scratch + len + 4, d->base + e + E_SIZE, klen);
        len += 4 + klen;
        n++;
    }
    r = unlock(d, (int) n);
    /* The keys are in the view's scratch (freed with the view): fn may
     * raise (a Lua error) without leaking them. */
    for (i = 0; r >= 0 && i < len;) {
        uint32_t klen;

        memcpy(&klen, d->scratch + i, 4);
        fn(ud, d->scratch + i + 4, klen);
        i += 4 + klen;
    }
    return r;
}


int64_t
fdp_shd_free_space(struct fdp_shd *d)
{
    uint32_t heap = d->heapend - d->heap, used;
    int r = lock(d, FDP_SHD_OP_GET);

    if (r < 0) {
        return r;
    }
    used = r32(d, HOFF(used));
    (void) unlock(d, 0);
    return used < heap ? (int64_t) (heap - used) : 0;
}


/*
 * Check the whole structure (tests; slow: it walks everything): the heap
 * block by block, every bucket chain, the LRU list both ways and every
 * free list, that the counters agree with them, and that the write
 * sequence is even (a get goes without the lock). 0, or -EIO (nothing
 * is changed or flushed), or the lock's error.
 */
int
fdp_shd_check(struct fdp_shd *d)
{
    uint32_t off, o, nused = 0, used = 0, freeb = 0, n, e, prev, i;
    uint32_t maxsteps = (d->heapend - d->heap) >> MINORD;
    int r, ok = 1;

    if ((r = lock(d, FDP_SHD_OP_GET)) < 0) {
        return r;
    }
    for (off = d->heap; ok && off + (1u << MINORD) <= d->heapend;
         off += 1u << o) {
        uint32_t tag = r32(d, off);

        o = tag & 0xffu;
        if ((tag & 0xfffffe00u) != TAG || o < MINORD || o > d->maxorder
            || ((off - d->heap) & ((1u << o) - 1)) != 0
            || (uint64_t) off + (1u << o) > d->heapend) {
            ok = 0;
            break;
        }
        if (tag & TAG_FREE) {
            freeb += 1u << o;
        } else {
            used += 1u << o;
            nused++;
            ok = ent_ok(d, off + 8);
        }
    }
    ok = ok && used == r32(d, HOFF(used)) && nused == r32(d, HOFF(nkeys));
    for (i = 0, n = 0; ok && i < d->nbuckets; i++) {
        for (e = r32(d, d->buckets + 4 * i); ok && e != 0;
             e = r32(d, e + E_HNEXT)) {
            ok = ent_ok(d, e) && (r32(d, e + E_HASH) & (d->nbuckets - 1)) == i
                 && ++n <= maxsteps;
        }
    }
    ok = ok && n == nused;
    for (prev = 0, n = 0, e = r32(d, HOFF(lru_head)); ok && e != 0;
         prev = e, e = r32(d, e + E_LNEXT)) {
        ok = ent_ok(d, e) && r32(d, e + E_LPREV) == prev && ++n <= maxsteps;
    }
    ok = ok && n == nused && r32(d, HOFF(lru_tail)) == prev;
    for (o = MINORD, n = 0; ok && o <= d->maxorder; o++) {
        for (prev = 0, e = r32(d, FL(o)); ok && e != 0;
             prev = e, e = r32(d, e + B_NEXT)) {
            ok = blk_order(d, e, 1) == o && r32(d, e + B_PREV) == prev
                 && (n += 1u << o) <= d->heapend - d->heap;
        }
    }
    ok = ok && n == freeb && !d->corrupt;
    /* the write sequence is odd only while an operation writes (this
     * one, if its lock repaired a dead owner's): else every get would
     * take the lock */
    ok = ok && (r32(d, HOFF(seq)) & 1u) == (uint32_t) d->wseq;
    d->corrupt = 0;             /* a check never flushes */
    return unlock(d, ok ? 0 : -EIO);
}


/* ---- setting up ---------------------------------------------------------- */

int
fdp_shd_format(void *base, size_t size)
{
    struct fdp_shd d;
    struct shd_hdr *h = base;

    if (size < FDP_SHD_MIN || size > FDP_SHD_MAX) {
        return -EINVAL;
    }
    memset(&d, 0, sizeof(d));
    d.base = base;
    layout(&d, (uint32_t) size);
    memset(base, 0, d.heap);
    h->magic = SHD_MAGIC;
    h->version = SHD_VERSION;
    h->size = (uint32_t) size;
    h->lock.word = 0;
    format_data(&d);
    seq_end(&d);                /* even: gets go without the lock */
    h->flushes = 0;
    return 0;
}


int
fdp_shd_attach(struct fdp_shd *d, void *base, size_t size)
{
    struct shd_hdr *h = base;

    memset(d, 0, sizeof(*d));
    if (size < FDP_SHD_MIN || size > FDP_SHD_MAX || h->magic != SHD_MAGIC
        || h->version != SHD_VERSION) {
        return -EINVAL;
    }
    d->base = base;
    layout(d, (uint32_t) size);
    return 0;
}


int
fdp_shd_compatible(const void *base, size_t size)
{
    const volatile struct shd_hdr *h = base;

    return size >= FDP_SHD_MIN && size <= FDP_SHD_MAX
           && h->magic == SHD_MAGIC && h->version == SHD_VERSION
           && h->size == size;
}


void
fdp_shd_detach(struct fdp_shd *d)
{
    free(d->scratch);
    d->scratch = NULL;
    d->scratchcap = 0;
}


void
fdp_shd_usage(const void *base, size_t size, struct fdp_shd_usage *u)
{
    const volatile struct shd_hdr *h = base;
    uint64_t used = h->used, keys = h->nkeys;

    u->size = size;
    u->used = used > size ? size : used;
    u->keys = keys > size / 64 ? size / 64 : keys;
}


/* "512k", "10m", "1g" or bytes; 0 or -EINVAL with err. */
int
fdp_shd_parse_size(const char *s, uint64_t *out, char *err, size_t errlen)
{
    char *end;
    unsigned long long v;
    uint64_t mul = 1;

    if (s == NULL || *s == '\0') {
        snprintf(err, errlen, "missing size");
        return -EINVAL;
    }
    if (*s < '0' || *s > '9') {
        snprintf(err, errlen, "bad size '%.40s' (a number, k, m or g)", s);
        return -EINVAL;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end == 'k' || *end == 'K') {
        mul = 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        mul = 1024 * 1024;
        end++;
    } else if (*end == 'g' || *end == 'G') {
        mul = 1024 * 1024 * 1024;
        end++;
    }
    if (*end != '\0' || errno != 0) {
        snprintf(err, errlen, "bad size '%.40s' (a number, k, m or g)", s);
        return -EINVAL;
    }
    if (v == 0 || v > FDP_SHD_MAX / mul || v * mul < FDP_SHD_MIN) {
        snprintf(err, errlen, "size '%.40s' out of range (64k to 1g)", s);
        return -EINVAL;
    }
    *out = v * mul;
    return 0;
}


int
fdp_shd_check_name(const char *name, char *err, size_t errlen)
{
    size_t i, n = strlen(name);

    if (n == 0 || n > FDP_SHD_NAME_MAX || (name[0] >= '0' && name[0] <= '9')) {
        snprintf(err, errlen, "bad name '%.40s' (1 to 31 letters, digits, "
                 "_; not starting with a digit)", name);
        return -EINVAL;
    }
    for (i = 0; i < n; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_')) {
            snprintf(err, errlen, "bad name '%.40s' (1 to 31 letters, "
                     "digits, _; not starting with a digit)", name);
            return -EINVAL;
        }
    }
    return 0;
}
