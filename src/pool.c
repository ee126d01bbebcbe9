/*
 * pool.c - the master. Owns the listeners, the channel ends of every
 * worker, the queue of accepted-but-not-dispatched connections, the
 * signalfd and the status table. One epoll loop; it never reads client
 * bytes. fds flow one way: accept4 -> queue -> a worker's batch -> the
 * channel (which then owns them) -> the worker.
 */
#include "fdp.h"
#include "pool.h"
#include "policy.h"
#include "listen.h"
#include "dispatch.h"
#include "tls.h"
#include "upgrade.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#define KILL_MARGIN_MS   500
#define BACKOFF_MAX_MS   30000
#define SHM_BYTES        4096   /* a worker's struct fdp_wshared */
_Static_assert(sizeof(struct fdp_wshared) <= SHM_BYTES, "the shared page");
#define CRASH_LIMIT      10
#define POKE_MS 1000             /* a worker past --start-timeout has
                                 * this long to say where it was (its
                                 * FAIL) before it is stopped */


static void worker_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev);
static void sched_master(struct fdp_pool *p, int on);


/* Only ever signal a pid this master forked and has not reaped. */
static void
worker_kill(struct fdp_worker *w, int sig)
{
    if (w->slot.pid > 0) {
        (void) kill(w->slot.pid, sig);
    }
}


static void
service_close(struct fdp_pool *p, int unlink_path)
{
    if (p->service != NULL) {
        p->service->close(p, unlink_path);
    }
}



struct fdp_pool *
fdp_pool_new(void)
{
    struct fdp_pool *p = calloc(1, sizeof(*p));
    int i;

    if (p == NULL) {
        return NULL;
    }
    p->workers = calloc(FDP_SLOTS, sizeof(*p->workers));
    p->queue = calloc(FDP_QUEUE_MAX, sizeof(*p->queue));
    if (p->workers == NULL || p->queue == NULL) {
        free(p->workers);
        free(p->queue);
        free(p);
        return NULL;
    }
    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];

        fdp_slot_reset(&w->slot, i + 1);
        fdp_chan_init(&w->ch, -1);
        w->io.fd = -1;
        w->pool = p;
    }
    for (i = 0; i < FDP_MAX_LISTEN; i++) {
        p->listeners[i].fd = -1;
    }
    p->handler_ref = -2;        /* LUA_NOREF */
    p->policy_ref = -2;
    p->sigfd = -1;
    p->notify_fd = -1;
    p->slow_fd = -1;
    p->upgrade_fd = -1;
    p->ready_fd = -1;
    p->inherit_ctl_fd = -1;
    p->inherit_lock_fd = -1;
    p->inherit_metrics_fd = -1;
    p->loop.epfd = -1;
    p->nworkers = 1;
    p->concurrency = 1024;
    p->grace = 1.0;
    p->graceful_grace = 30.0;
    p->drain_delay = 0.5;
    p->start_timeout = 60.0;
    p->io_timeout = 60.0;
    p->accept_filter = FDP_AF_AUTO;
    p->max_pending = FDP_PENDING_MAX_DEFAULT;
    p->idle_timeout = FDP_IDLE_TIMEOUT;
    p->reconf_ref = -2;         /* LUA_NOREF */
    p->spawn_rate = 1;
    p->owner = getpid();
    p->admit = fdp_dispatch_admit;
    fdp_timer_init(&p->drain_timer, NULL, p);
    return p;
}


static void
worker_free_tables(struct fdp_worker *w)
{
    free(w->inflight);
    free(w->freeidx);
    w->inflight = NULL;
    w->freeidx = NULL;
    w->nfree = 0;
}


/* Frees memory and closes what this process holds. Never signals or
 * unlinks anything: that is fdp_pool_stop's job, in the owner only. */
void
fdp_pool_free(struct fdp_pool *p)
{
    int i;

    if (p == NULL) {
        return;
    }
    sched_master(p, 0);         /* a pool dropped while it ran */
    fdp_pool_close_in_child(p, -1);
    fdp_close(&p->slow_fd);
    fdp_shzone_close(p, 1);
    fdp_acceptf_free(p);
    for (i = 0; i < FDP_SLOTS; i++) {
        worker_free_tables(&p->workers[i]);
        if (p->workers[i].shm != NULL) {
            (void) munmap(p->workers[i].shm, SHM_BYTES);
            p->workers[i].shm = NULL;
            p->workers[i].claim = NULL;
        }
    }
    for (i = 0; i < p->nargs; i++) {
        free(p->args[i]);
    }
    for (i = 0; i < FDP_MAX_LISTEN; i++) {
        free(p->listeners[i].unix_path);
    }
    for (i = 0; p->exec_argv && p->exec_argv[i]; i++) {
        free(p->exec_argv[i]);
    }
    free(p->exec_argv);
    free(p->exe);
    for (i = 0; i < p->ndropped; i++) {
        free(p->dropped[i]);
    }
    free(p->args);
    free(p->script);
    free(p->script_src);
    free(p->reload_src);
    free(p->policy_name);
    free(p->control_path);
    free(p->metrics_addr);
    free(p->user_name);
    for (i = 0; p->tls_cert && p->tls_cert[i]; i++) {
        free(p->tls_cert[i]);       /* NULL-terminated lists */
    }
    for (i = 0; p->tls_key && p->tls_key[i]; i++) {
        free(p->tls_key[i]);
    }
    free(p->tls_cert);
    free(p->tls_key);
    fdp_tls_free(p->tls);
    fdp_tls_free(p->reload_tls);
    free(p->workers);
    free(p->queue);
    free(p);
}


/*
 * Close every fd the master holds except worker `keep`'s channel (-1:
 * none). Used in a fresh child, and by fdp_pool_free. Touches no epoll
 * registration: closing the epoll fd is enough in a child.
 */
void
fdp_pool_close_in_child(struct fdp_pool *p, int keep)
{
    int i;

    for (i = 0; i < FDP_MAX_LISTEN; i++) {
        fdp_close(&p->listeners[i].fd);
    }
    fdp_shzone_close(p, 0);     /* the memfds; the mappings stay */
    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];
        int k;

        if (i != keep) {
            fdp_chan_close(&w->ch);
        }
        for (k = 0; k < w->nbatch; k++) {
            if (!(w->batchkeep & (1u << k))) {  /* kept: closed below */
                fdp_close(&w->batchfds[k]);
            }
        }
        w->nbatch = 0;
    }
    while (p->qlen > 0) {
        if (p->queue[p->qhead].kept == NULL) {  /* kept: closed below */
            fdp_close(&p->queue[p->qhead].fd);
        }
        p->qhead = (p->qhead + 1) % FDP_QUEUE_MAX;
        p->qlen--;
    }
    fdp_dispatch_close_in_child(p);
    fdp_acceptf_close_in_child(p);
    fdp_close(&p->notify_fd);
    fdp_close(&p->sigfd);
    fdp_upgrade_close_in_child(p);
    service_close(p, 0);
    fdp_loop_free(&p->loop);
}


/* Read a whole (script) file into *out (NUL-terminated; the caller
 * frees it). 0, or -errno with err set (-EFBIG: over 1 GiB). */
static int
read_file(const char *path, char **out, size_t *len, char *err,
          size_t errlen)
{
    char *buf = NULL, *nb;
    size_t n = 0, cap = 0;
    struct stat st;
    FILE *f;
    int r, fd;

    /* Not blocking on a FIFO, nor reading /dev/zero for ever: a regular
     * file only (the master must not stop serving to read it). */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "cannot open %s (%s)", path, strerror(-r));
        return r;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fdp_close(&fd);
        snprintf(err, errlen, "cannot read %s (not a regular file)", path);
        return -EINVAL;
    }
    (void) fdp_set_nonblock(fd, 0);
    f = fdopen(fd, "r");
    if (f == NULL) {
        r = -errno;
        fdp_close(&fd);
        snprintf(err, errlen, "cannot open %s (%s)", path, strerror(-r));
        return r;
    }
    for (;;) {
        size_t k;

        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 16384;
            nb = cap > ((size_t) 1 << 30) ? NULL : realloc(buf, cap + 1);
            if (nb == NULL) {
                snprintf(err, errlen, "cannot read %s (too big)", path);
                r = -EFBIG;
                goto fail;
            }
            buf = nb;
        }
        k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) {
            break;
        }
    }
    if (ferror(f)) {
        r = errno ? -errno : -EIO;
        snprintf(err, errlen, "cannot read %s (%s)", path, strerror(-r));
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;

fail:
    fclose(f);
    free(buf);
    return r;
}




static int
worker_alloc_tables(struct fdp_worker *w, int capacity)
{
    int k;

    /* Prefetch: an entry per offer it may hold (capacity is 1). */
    capacity += w->prefetch;

    if (w->inflight != NULL && w->ncap != capacity) {
        /* --concurrency changed by a reload's --config. */
        worker_free_tables(w);
    }
    if (w->inflight == NULL) {
        w->ncap = capacity;
        w->inflight = calloc((size_t) capacity, sizeof(*w->inflight));
        w->freeidx = calloc((size_t) capacity, sizeof(*w->freeidx));
        if (w->inflight == NULL || w->freeidx == NULL) {
            worker_free_tables(w);
            return -ENOMEM;
        }
    }
    memset(w->inflight, 0, (size_t) capacity * sizeof(*w->inflight));
    w->noffers = 0;
    for (k = 0; k < capacity; k++) {
        w->freeidx[k] = (uint32_t) (capacity - 1 - k);
    }
    w->nfree = capacity;
    return 0;
}


/*
 * Fork worker idx. The child gets one end of a fresh SEQPACKET pair and
 * never returns from p->worker_main. Returns 0 or -errno (logged).
 */
/*
 * The pool's scheduling, when it was started as SCHED_OTHER (an
 * operator's chrt is kept): sched = "master" (the default) makes the
 * master SCHED_BATCH and each worker goes back to SCHED_OTHER
 * (sched_child); "batch" lets the workers keep it; "other" changes
 * nothing. A SCHED_BATCH wake-up (a new connection, a DONE; a request's
 * bytes for a batch worker) never preempts a running task on its CPU:
 * the woken process runs on an idle CPU at once, else when that task
 * waits or at the scheduler's tick, and takes what came meanwhile in one
 * turn. Fair share is unchanged. Measured with wrk on the same 2 CPUs
 * (docs/performance.md): the master's wake-ups 0.7 -> 0.3 per new
 * connection; batch workers, keep-alive unpinned: their voluntary
 * switches 0.10-0.25 -> 0.01-0.05 per request and req/s +20-40 %, but a
 * lone client's p99 up to a tick longer when other tasks hold the CPUs,
 * hence not the default. A new master of `pool upgrade` goes back to
 * SCHED_OTHER and chooses its own (upgrade.c). In a Lua program running
 * several pools, the caller stays SCHED_BATCH until the last pool that
 * made it so has stopped (sched_refs).
 */
static int sig_refs;            /* running pools that blocked the
                                 * signals (setup_signals) */
static sigset_t sig_oldmask;    /* the mask from before the first */
static unsigned sigchld_gen;    /* SIGCHLDs read by any pool */
/* The program's signals, read by any pool: TERM/INT, QUIT, HUP, USR1
 * (psig_follow), and the last one of each (its name in the others' log) */
enum { PSIG_STOP, PSIG_QUIT, PSIG_HUP, PSIG_USR1, PSIG_N };
static unsigned psig_gen[PSIG_N];
static int psig_signo[PSIG_N];
_Static_assert(sizeof(((struct fdp_pool *) 0)->psig_seen) == sizeof(psig_gen),
               "pool.h's psig_seen: one per PSIG_*");
static int sched_refs;          /* running pools of this process that
                                 * made it SCHED_BATCH (fdpool.pool{} can
                                 * run several in one program) */

static void
sched_master(struct fdp_pool *p, int on)
{
    struct sched_param sp = { 0 };

    if (on && !p->sched_batch && p->sched != FDP_SCHED_OTHER
        && (sched_refs > 0 || (sched_getscheduler(0) == SCHED_OTHER
                               && sched_setscheduler(0, SCHED_BATCH,
                                                     &sp) == 0))) {
        p->sched_batch = 1;
        sched_refs++;
    } else if (!on && p->sched_batch) {
        p->sched_batch = 0;
        if (--sched_refs == 0) {    /* the last one gives it back */
            (void) sched_setscheduler(0, SCHED_OTHER, &sp);
        }
    }
}


/* In a worker just forked: it keeps SCHED_BATCH only in a sched =
 * "batch" pool, never undoing an operator's chrt (the batch came from
 * this pool, or from another pool of the same program). */
static void
sched_child(struct fdp_pool *p)
{
    struct sched_param sp = { 0 };

    if (p->sched != FDP_SCHED_BATCH && (p->sched_batch || sched_refs > 0)) {
        (void) sched_setscheduler(0, SCHED_OTHER, &sp);
    }
}


/* Strict prefork's prefetch depth, the most: 15 (FDP_CLAIM_WORDS - 1;
 * 3 while few connections wait: dispatch.c, offer_depth) with
 * --concurrency 1 and a built-in policy that lets any worker take any
 * connection, else 0; FDPOOL_PREFETCH=N (0 to FDP_CLAIM_WORDS - 1) sets
 * it, for measuring. */
static int
prefetch_wanted(struct fdp_pool *p)
{
    const char *e = getenv("FDPOOL_PREFETCH");
    char *end = NULL;
    long v = e != NULL ? strtol(e, &end, 10) : -1;
    int n = e != NULL && *e != '\0' && *end == '\0' && v >= 0
            && v < FDP_CLAIM_WORDS ? (int) v : FDP_CLAIM_WORDS - 1;

    return p->concurrency == 1 && !p->simulated
           && fdp_policy_any_worker(p) ? n : 0;
}


static uint64_t backoff_ms(int streak);


static int
spawn_worker(struct fdp_pool *p, int idx)
{
    struct fdp_worker *w = &p->workers[idx];
    int sv[2], r;
    pid_t pid;

    assert(w->slot.pid == -1);
    /* Strict prefork: its page shared with the process: the claim words
     * of the prefetch (dispatch.c, offer()), the PARKs it holds back. */
    w->prefetch = prefetch_wanted(p);
    /* A new page for each process: a page a dead worker had may still be
     * mapped (and written) by a process it forked and left behind; it
     * must not reach its successor's claims and PARKs. */
    if (w->shm != NULL) {
        (void) munmap(w->shm, SHM_BYTES);
        w->shm = NULL;
        w->claim = NULL;
    }
    w->pstate_seen = 0;
    if (p->concurrency == 1 && !p->simulated) {
        void *m = mmap(NULL, SHM_BYTES, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

        w->shm = m == MAP_FAILED ? NULL : m;
    }
    if (w->shm == NULL || p->concurrency != 1) {
        w->prefetch = 0;
        w->claim = NULL;
    } else {
        memset(w->shm, 0, sizeof(*w->shm));
        w->shm->msleep = 1;         /* until the master looks at it */
        w->claim = w->prefetch ? w->shm->claim : NULL;
    }
    r = worker_alloc_tables(w, p->concurrency);
    if (r < 0) {
        fdp_log(FDP_LOG_ERROR, -r, "cannot allocate worker %d", idx + 1);
        return r;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        r = -errno;
        fdp_log(FDP_LOG_ERROR, errno, "socketpair() failed while spawning "
                "worker %d", idx + 1);
        return r;
    }
    pid = fork();
    if (pid < 0) {
        r = -errno;
        if (p->ever_ready && !p->spawn_new && !p->stopping) {
            /* A restart the kernel refuses (RLIMIT_NPROC, memory): a
             * crash for the back-off, so that the tick retries after
             * 100 ms doubling up to 30 s, not every tick with an error
             * line each time; the status and /healthz say why. */
            p->crash_streak++;
            snprintf(p->crash_why, sizeof(p->crash_why), "worker %d "
                     "cannot be forked: %s%s", idx + 1, strerror(-r),
                     r == -EAGAIN ? " (too many processes for this user? "
                     "RLIMIT_NPROC)" : "");
            w->spawn_at = fdp_now_ms() + backoff_ms(p->crash_streak);
            fdp_log(FDP_LOG_ERROR, -r, "fork() failed while spawning worker "
                    "%d; retrying in %llu ms (crash streak %d)", idx + 1,
                    (unsigned long long) (w->spawn_at - fdp_now_ms()),
                    p->crash_streak);
        } else {
            fdp_log(FDP_LOG_ERROR, -r, "fork() failed while spawning worker "
                    "%d", idx + 1);
        }
        fdp_close(&sv[0]);
        fdp_close(&sv[1]);
        return r;
    }
    if (pid == 0) {
        int i;

        sched_child(p);
        fdp_close(&sv[0]);
        fdp_pool_close_in_child(p, -1);
        for (i = 0; i < FDP_SLOTS; i++) {   /* only its own shared page */
            if (i != idx && p->workers[i].shm != NULL) {
                (void) munmap(p->workers[i].shm, SHM_BYTES);
                p->workers[i].shm = NULL;
                p->workers[i].claim = NULL;
            }
        }
        fdp_chan_init(&w->ch, sv[1]);
        if (p->worker_main != NULL) {
            p->worker_main(p, idx);
        }
        _exit(127);
    }
    fdp_close(&sv[1]);
    (void) fdp_set_nonblock(sv[0], 1);
    fdp_chan_init(&w->ch, sv[0]);
    w->slot.pid = pid;
    w->slot.cpu = fdp_pool_cpu_of(p, w->slot.id - 1);
    w->slot.generation = p->generation;
    w->slot.state = FDP_W_STARTING;
    w->slot.active = 0;
    w->slot.capacity = p->concurrency;
    w->slot.started = fdp_wall();
    w->slot.busy_since = 0;
    w->slot.nkv = 0;
    w->started_ms = fdp_now_ms();
    w->poked = 0;
    w->kill_at = 0;
    w->spawn_at = 0;
    w->retiring = 0;
    w->pending = 0;
    w->ordered = 0;
    w->retire_after = 0;
    w->mem_over = 0;
    w->cpu_killed = 0;
    w->ready_seen = 0;
    w->off = 0;
    w->used_ms = w->started_ms;
    w->used_served = 0;
    if (p->max_requests > 0) {
        /* Jitter (up to +10 %) so workers do not all retire at once. */
        w->retire_after = (uint64_t) p->max_requests
                          + (uint64_t) (random() % (p->max_requests / 10 + 1));
    }
    w->io.fd = sv[0];
    w->io.cb = worker_io;
    w->io.data = w;
    r = fdp_loop_add(&p->loop, &w->io, EPOLLIN);
    if (r < 0) {
        fdp_log(FDP_LOG_ERROR, -r, "epoll_ctl() failed for worker %d", idx + 1);
    }
    p->nalive++;
    fdp_log(FDP_LOG_INFO, 0, "worker %d started (pid %ld)", w->slot.id,
            (long) pid);
    return 0;
}










































/*
 * Take worker idx's process out of the table: move it to a spare slot at
 * the top of the array (outside the policy's view) and free slot idx for
 * a new process. *moved is set to the spare slot (NULL when slot idx had
 * no process). The process is not told to stop yet: see retire_stop.
 * Returns 0, or -1 when no spare slot is left.
 */
static int
retire_move(struct fdp_pool *p, int idx, const char *why,
            struct fdp_worker **moved)
{
    struct fdp_worker *a = &p->workers[idx], *b = NULL, tmp;
    int j;

    *moved = NULL;
    if (a->slot.pid <= 0) {
        return 0;
    }
    for (j = FDP_SLOTS - 1; j >= p->nworkers; j--) {
        if (p->workers[j].slot.pid <= 0 && j != idx) {
            b = &p->workers[j];
            break;
        }
    }
    if (b == NULL) {
        return -ENOSPC;
    }
    fdp_dispatch_send(p, a);
    if (a->ch.fd >= 0) {
        (void) fdp_loop_del(&p->loop, &a->io);
    }
    tmp = *b;
    *b = *a;
    *a = tmp;
    a->io.data = a;
    b->io.data = b;
    b->retiring = 1;
    if (b->ch.fd >= 0) {
        b->io.fd = b->ch.fd;
        (void) fdp_loop_add(&p->loop, &b->io,
                            EPOLLIN | (b->ch.head ? EPOLLOUT : 0));
    }
    fdp_slot_reset(&a->slot, idx + 1);
    a->slot.restarts = b->slot.restarts;
    a->slot.last_exit_how = FDP_EXIT_NONE;
    fdp_chan_init(&a->ch, -1);
    a->io.fd = -1;
    a->retiring = 0;
    a->nbatch = 0;

    fdp_log(FDP_LOG_INFO, 0, "worker %d (pid %ld) retires: %s", idx + 1,
            (long) b->slot.pid, why);
    b->slot.state = FDP_W_EXITING;
    *moved = b;
    return 0;
}


/* Tell a moved-out process (retire_move) to finish its connections
 * within the graceful grace, then go. */
static void
retire_stop(struct fdp_pool *p, struct fdp_worker *b)
{
    struct fdp_stop_body body;

    body.graceful = 1;
    body.grace_ms = fdp_sec_ms32(p->graceful_grace);
    /* An offer it has not claimed goes to the workers that stay. */
    if (b->claim != NULL && b->ch.head == NULL && b->nbatch == 0) {
        fdp_dispatch_offers_back(p, b, 1);
    }
    if (b->ch.fd < 0 || fdp_chan_send(&b->ch, FDP_MSG_STOP, 0, &body,
                                      sizeof(body), NULL, 0) < 0) {
        worker_kill(b, SIGKILL);
    } else if (b->ch.head != NULL) {
        (void) fdp_loop_mod(&p->loop, &b->io, EPOLLIN | EPOLLOUT);
    }
    b->kill_at = fdp_now_ms() + body.grace_ms + KILL_MARGIN_MS;
}


/*
 * Take worker idx's process out of the table and tell it to finish its
 * connections within the graceful grace. Returns 0, or -ENOSPC when no
 * spare slot is left.
 */
static int
retire_worker(struct fdp_pool *p, int idx, const char *why)
{
    struct fdp_worker *b;
    int r = retire_move(p, idx, why, &b);

    if (r < 0) {
        return r;
    }
    if (b != NULL) {
        retire_stop(p, b);
    }
    return 0;
}


/*
 * Retire worker idx and start its replacement in the same slot. The
 * replacement is forked before the old process is told to stop, so the
 * slot never goes without a running process (docs/operations.md).
 */
static void
replace_worker(struct fdp_pool *p, int idx, const char *why)
{
    struct fdp_worker *b;

    if (retire_move(p, idx, why, &b) < 0) {
        fdp_log(FDP_LOG_WARN, 0, "cannot retire worker %d now: no spare "
                "slot", idx + 1);
        return;
    }
    (void) spawn_worker(p, idx);
    if (b != NULL) {
        retire_stop(p, b);
    }
}


/* ---- Workers on demand (--workers MIN-MAX) ------------------------- */

/* Table slots meant to have a process: all but the on-demand empty ones
 * (a crashed worker waiting for its back-off counts: it comes back). */
static int
wanted_workers(struct fdp_pool *p)
{
    int i, n = 0;

    for (i = 0; i < p->nworkers; i++) {
        n += !p->workers[i].off;
    }
    return n;
}


/* Why the number of workers changed last (status "scaled"), logged. */
static void
scaled(struct fdp_pool *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
scaled(struct fdp_pool *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(p->scaled_why, sizeof(p->scaled_why), fmt, ap);
    va_end(ap);
    fdp_log(FDP_LOG_INFO, 0, "workers: %s (%d of %d-%d)", p->scaled_why,
            wanted_workers(p), p->min_workers, p->max_workers);
}


/* Start a process in the lowest empty on-demand slot. Returns its index,
 * or -1 (none empty, or the fork failed: logged). */
static int
ondemand_start(struct fdp_pool *p)
{
    int i;

    for (i = 0; i < p->nworkers; i++) {
        struct fdp_worker *w = &p->workers[i];

        if (w->off && w->slot.pid <= 0) {
            w->spawn_at = 0;
            if (spawn_worker(p, i) < 0) {
                w->off = 1;
                return -1;
            }
            return i;
        }
    }
    return -1;
}


/*
 * Workers on demand, up: connections waiting in the queue and no running
 * worker with room start workers in empty slots, as many as the queue
 * needs (less those already starting) but at most spawn_rate, which
 * doubles each round the wait goes on (1, 2, 4 ... 32: Apache's spawn
 * rate; back to 1 on a tick with no wait). A round runs at once when a
 * wait begins (after each turn of the loop) and at most once a tick
 * (FDP_TICK_MS) while it lasts. No scaling while a reload starts its
 * generation. Returns 1 when the queue waits (0: nothing to do).
 */
static int
ondemand_grow(struct fdp_pool *p, uint64_t now)
{
    int i, k, room = 0, coming = 0, need;

    if (p->max_workers == 0 || p->stopping || p->reload_gen
        || p->qlen == 0) {
        return 0;
    }
    if (now < p->spawn_next_ms) {
        return 1;
    }
    for (i = 0; i < p->nworkers; i++) {
        struct fdp_worker *w = &p->workers[i];

        if (w->off) {
            continue;
        }
        if (w->slot.pid <= 0 || w->slot.state == FDP_W_STARTING) {
            coming++;
        } else if (w->slot.state == FDP_W_RUNNING && w->ch.fd >= 0
                   && w->slot.active < w->slot.capacity) {
            room++;
        }
    }
    if (room > 0) {
        return 1;
    }
    need = (p->qlen + p->concurrency - 1) / p->concurrency - coming;
    if (need > p->spawn_rate) {
        need = p->spawn_rate;
    }
    for (k = 0; k < need && ondemand_start(p) >= 0; k++) {
    }
    if (k > 0) {
        p->spawned_demand += (uint64_t) k;
        p->spawn_next_ms = now + FDP_TICK_MS;
        scaled(p, "spawned: %d (%d waiting)", k, p->qlen);
        p->spawn_rate = p->spawn_rate * 2 > FDP_SPAWN_RATE_MAX
                        ? FDP_SPAWN_RATE_MAX : p->spawn_rate * 2;
    }
    return 1;
}


/*
 * Each tick with workers on demand: grow (above) while connections wait;
 * with nothing waiting, the rate falls back to 1 and a worker above
 * min_workers that had no connection for idle_timeout seconds retires
 * gracefully (highest slot first); its slot is left empty.
 */
static void
ondemand_tick(struct fdp_pool *p, uint64_t now)
{
    int i, wanted = 0;
    uint64_t idle_ms = (uint64_t) (p->idle_timeout * 1000);

    if (p->max_workers == 0 || p->stopping || p->reload_gen) {
        return;
    }
    for (i = 0; i < p->nworkers; i++) {
        struct fdp_worker *w = &p->workers[i];

        wanted += !w->off;
        if (w->slot.active > 0 || w->slot.served != w->used_served) {
            w->used_ms = now;
            w->used_served = w->slot.served;
        }
    }
    if (ondemand_grow(p, now)) {
        return;
    }
    p->spawn_rate = 1;
    for (i = p->nworkers - 1; i >= 0 && wanted > p->min_workers; i--) {
        struct fdp_worker *w = &p->workers[i];
        char why[64];

        if (w->off || w->slot.pid <= 0 || w->slot.state != FDP_W_RUNNING
            || w->slot.active > 0 || now - w->used_ms < idle_ms) {
            continue;
        }
        snprintf(why, sizeof(why), "idle for %g s (on demand)",
                 p->idle_timeout);
        if (retire_worker(p, i, why) < 0) {
            break;
        }
        p->workers[i].off = 1;
        wanted--;
        p->retired_idle++;
        scaled(p, "retired idle: slot %d", i + 1);
    }
}


/* Start processes in empty slots until min_workers slots have one. */
static int
ondemand_fill(struct fdp_pool *p)
{
    while (wanted_workers(p) < p->min_workers) {
        if (ondemand_start(p) < 0) {
            return -EAGAIN;
        }
    }
    return 0;
}


/* pool scale N, TTIN, TTOU with workers on demand: N is the new minimum,
 * clamped to the maximum (the reply says so); missing workers start
 * now, those above it retire when idle. */
static int
ondemand_scale(struct fdp_pool *p, int n)
{
    int was = p->min_workers;

    if (n < 1) {
        snprintf(p->error, sizeof(p->error), "the minimum must be at "
                 "least 1");
        return -EINVAL;
    }
    p->min_workers = n > p->max_workers ? p->max_workers : n;
    if (ondemand_fill(p) < 0) {
        snprintf(p->error, sizeof(p->error), "cannot start a worker (see "
                 "the log)");
        return -EAGAIN;
    }
    scaled(p, "min %d -> %d%s", was, p->min_workers,
           n > p->max_workers ? " (clamped to max)" : "");
    return 0;
}


/* Grow or shrink the table to n slots; new slots get a process now
 * (spawn), or are left empty for workers on demand. 0, or -errno with
 * p->error set. */
static int
resize_table(struct fdp_pool *p, int n, int spawn)
{
    int i, r, busy = 0;

    for (i = p->nworkers; i < FDP_SLOTS; i++) {
        busy += p->workers[i].slot.pid > 0;
    }
    if (n + busy > FDP_SLOTS) {
        snprintf(p->error, sizeof(p->error), "%d retiring worker(s) still "
                 "hold slots; try again later", busy);
        return -ENOSPC;
    }
    while (p->nworkers > n) {
        i = p->nworkers - 1;
        p->nworkers--;
        if (p->workers[i].slot.pid > 0) {
            p->workers[i].retiring = 1;
            p->nworkers++;
            (void) retire_worker(p, i, "scaling down");
            p->nworkers--;
        }
        fdp_slot_reset(&p->workers[i].slot, i + 1);
        p->workers[i].slot.restarts = 0;
        p->workers[i].off = 0;
    }
    while (p->nworkers < n) {
        i = p->nworkers;
        /* A retiring process may sit in that slot: move it up. */
        if (p->workers[i].slot.pid > 0) {
            p->nworkers++;
            r = retire_worker(p, i, "moved up");
            if (r < 0) {
                p->nworkers--;
                snprintf(p->error, sizeof(p->error), "no spare slot for "
                         "a retiring worker; try again later");
                return r;
            }
            p->nworkers--;
        }
        p->nworkers++;
        fdp_slot_reset(&p->workers[i].slot, i + 1);
        p->workers[i].slot.restarts = 0;
        p->workers[i].spawn_at = 0;
        p->workers[i].off = !spawn;
        if (spawn) {
            (void) spawn_worker(p, i);
        }
    }
    return 0;
}


/* Grow or shrink the pool to n workers at run time (with workers on
 * demand: n is the new minimum, see ondemand_scale). 0, or -errno with
 * p->error saying why: -EBUSY (stopping, or a reload is starting),
 * -EINVAL (n out of range), -ENOSPC (retiring workers still hold the
 * slots). */
int
fdp_pool_scale(struct fdp_pool *p, int n)
{
    int r, was;

    if (!p->running || p->stopping) {
        snprintf(p->error, sizeof(p->error), "the pool is stopping");
        return -EBUSY;
    }
    if (p->reload_gen) {
        snprintf(p->error, sizeof(p->error), "generation %d is still "
                 "starting (a reload is in progress; try again when it is "
                 "done)", p->reload_gen);
        return -EBUSY;
    }
    if (n < 1 || n > FDP_MAX_WORKERS) {
        snprintf(p->error, sizeof(p->error), "the worker count must be "
                 "1 to %d", FDP_MAX_WORKERS);
        return -EINVAL;
    }
    if (p->max_workers > 0) {
        return ondemand_scale(p, n);
    }
    was = p->nworkers;
    r = resize_table(p, n, 1);
    if (r < 0) {
        return r;
    }
    snprintf(p->scaled_why, sizeof(p->scaled_why), "scaled: %d -> %d", was,
             n);
    fdp_log(FDP_LOG_INFO, 0, "now %d worker(s)", p->nworkers);
    return 0;
}


/*
 * Workers from a reloaded --config: fixed (max 0: min processes) or on
 * demand (a table of max slots, at least min with a process). Returns 0,
 * or -errno with p->error set (as fdp_pool_scale).
 */
int
fdp_pool_set_workers(struct fdp_pool *p, int min, int max)
{
    int i, r;

    if (min < 1 || min > FDP_MAX_WORKERS || max < 0
        || max > FDP_MAX_WORKERS || (max > 0 && min > max)) {
        snprintf(p->error, sizeof(p->error), "workers must be N or "
                 "MIN-MAX with 1 <= MIN <= MAX <= %d", FDP_MAX_WORKERS);
        return -EINVAL;
    }
    if (max == 0) {
        if (p->max_workers > 0) {
            /* Leaving on demand: every slot kept is wanted again. */
            for (i = 0; i < p->nworkers; i++) {
                p->workers[i].off = 0;
            }
            p->max_workers = p->min_workers = 0;
        }
        return fdp_pool_scale(p, min);
    }
    if (p->max_workers == 0) {
        p->spawn_rate = 1;
    }
    r = resize_table(p, max, 0);
    if (r < 0) {
        return r;
    }
    p->max_workers = max;
    p->min_workers = min;
    (void) ondemand_fill(p);
    scaled(p, "set to %d-%d", min, max);
    return 0;
}


/* Close a policy state that is not (or no longer) p->policy. */
static void
policy_close_other(struct fdp_pool *p, struct fdp_policy *other)
{
    struct fdp_policy *cur = p->policy;

    if (other == NULL) {
        return;
    }
    p->policy = other;
    fdp_policy_close(p);
    p->policy = cur;
}


/*
 * The end of a refused reload: the new generation's processes are
 * stopped (they hold no connection), the old generation goes on as if
 * nothing happened, and the refusal is logged and answered.
 */
/* The status's reload_refused: why the last reload was refused (the
 * text after "reload refused, keeping the running workers...: "), on
 * one line, with the time. */
static void
note_refused(struct fdp_pool *p, const char *why)
{
    const char *c = strstr(why, "keeping the running workers");
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    size_t i;

    if (c != NULL && (c = strstr(c, ": ")) != NULL) {
        why = c + 2;
    }
    (void) gmtime_r(&now, &tm);
    (void) strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(p->reload_refused, sizeof(p->reload_refused), "%s: %s", ts,
             why);
    for (i = 0; p->reload_refused[i]; i++) {
        if (p->reload_refused[i] == '\n' || p->reload_refused[i] == '\r') {
            p->reload_refused[i] = ' ';
        }
    }
}


static void
reload_abort(struct fdp_pool *p, const char *why)
{
    char text[sizeof(p->error)];
    size_t i;
    int j;

    if (p->reload_gen == 0) {
        return;
    }
    snprintf(text, sizeof(text), "reload refused, keeping the running "
             "workers: %s", why);
    for (i = 0; text[i]; i++) {
        if (text[i] == '\n' || text[i] == '\r') {
            text[i] = ' ';
        }
    }
    for (j = 0; j < FDP_SLOTS; j++) {
        struct fdp_worker *w = &p->workers[j];

        if (!w->pending) {
            continue;
        }
        w->pending = 0;
        w->retiring = 1;
        w->ordered = 1;
        w->slot.state = FDP_W_EXITING;
        fdp_dispatch_drop_channel(p, w);
        worker_kill(w, SIGTERM);
        w->kill_at = fdp_now_ms() + 1000;
    }
    p->reload_gen = 0;
    p->reload_npending = 0;
    policy_close_other(p, p->reload_policy);
    p->reload_policy = NULL;
    free(p->reload_src);
    p->reload_src = NULL;
    fdp_tls_free(p->reload_tls);
    p->reload_tls = NULL;
    if (p->reconfigure != NULL) {
        char err[64];

        /* The configuration the running generation started with. */
        (void) p->reconfigure(p, 2, err, sizeof(err));
    }
    fdp_log(FDP_LOG_ERROR, 0, "%s", text);
    note_refused(p, why);
    fdp_listen_notify(p, "READY=1\nSTATUS=reload refused, generation %d "
                      "serving", p->generation);
    if (p->service != NULL) {
        p->service->reload_done(p, 0, text);
    }
}


/*
 * Put pending worker j into table slot i. The process that was there (if
 * any) moves to slot j, leaves the table, and finishes its connections
 * within the graceful grace, as a retired worker does.
 */
static void
reload_swap(struct fdp_pool *p, int i, int j)
{
    struct fdp_worker *a = &p->workers[i], *b = &p->workers[j], tmp;
    uint32_t restarts = a->slot.restarts;

    fdp_dispatch_send(p, a);
    if (a->ch.fd >= 0) {
        (void) fdp_loop_del(&p->loop, &a->io);
    }
    if (b->ch.fd >= 0) {
        (void) fdp_loop_del(&p->loop, &b->io);
    }
    tmp = *b;
    *b = *a;
    *a = tmp;
    a->io.data = a;
    b->io.data = b;
    a->pending = 0;
    a->slot.restarts = restarts;
    if (a->ch.fd >= 0) {
        a->io.fd = a->ch.fd;
        (void) fdp_loop_add(&p->loop, &a->io,
                            EPOLLIN | (a->ch.head ? EPOLLOUT : 0));
    }
    if (b->slot.pid <= 0) {
        /* Slot i had no process (a crashed worker waiting for its
         * back-off): nothing to retire. */
        fdp_slot_reset(&b->slot, j + 1);
        b->retiring = 0;
        b->io.fd = -1;
        return;
    }
    b->retiring = 1;
    if (b->ch.fd >= 0) {
        b->io.fd = b->ch.fd;
        (void) fdp_loop_add(&p->loop, &b->io,
                            EPOLLIN | (b->ch.head ? EPOLLOUT : 0));
    }
    fdp_log(FDP_LOG_INFO, 0, "worker %d (pid %ld) retires: reload",
            i + 1, (long) b->slot.pid);
    b->slot.state = FDP_W_EXITING;
    retire_stop(p, b);
}


/* A reload's --config keeps its settings (the binding's phase 1), and
 * its worker count applies now that the new generation has the table. */
static void
reload_workers(struct fdp_pool *p)
{
    char err[64];
    int min = p->reconf_workers[0], max = p->reconf_workers[1];

    if (p->reconfigure == NULL) {
        return;
    }
    (void) p->reconfigure(p, 1, err, sizeof(err));
    p->reconf_workers[0] = p->reconf_workers[1] = 0;
    if (min < 1 || (max == p->max_workers
                    && min == (max ? p->min_workers : p->nworkers))) {
        return;
    }
    if (fdp_pool_set_workers(p, min, max) < 0) {
        fdp_log(FDP_LOG_ERROR, 0, "reload: cannot apply workers %d-%d: %s",
                min, max, p->error);
        p->error[0] = '\0';
    }
}


/* Every worker of the new generation is READY: it takes the table, the
 * old generation retires, the new policy takes over. */
static void
reload_commit(struct fdp_pool *p)
{
    char text[128];
    int i, j;

    p->reload_refused[0] = '\0';
    for (i = 0; i < p->nworkers; i++) {
        for (j = p->nworkers; j < FDP_SLOTS; j++) {
            if (p->workers[j].pending && p->workers[j].slot.id == i + 1) {
                break;
            }
        }
        if (j < FDP_SLOTS) {
            reload_swap(p, i, j);
        }
    }
    p->generation = p->reload_gen;
    p->reload_gen = 0;
    p->reload_npending = 0;
    if (p->reload_src != NULL) {
        /* Workers of this generation restarted later load this text. */
        free(p->script_src);
        p->script_src = p->reload_src;
        p->script_len = p->reload_len;
        p->reload_src = NULL;
    }
    if (p->reload_tls != NULL) {
        /* The old generation's workers keep their own copies. */
        fdp_tls_free(p->tls);
        p->tls = p->reload_tls;
        p->reload_tls = NULL;
    }
    fdp_acceptf_ready(p, &p->reload_ready);
    if (p->reload_policy != NULL) {
        struct fdp_policy *old = p->policy;

        p->policy = p->reload_policy;
        p->reload_policy = NULL;
        policy_close_other(p, old);
    }
    p->crash_streak = 0;
    p->crash_why[0] = '\0';
    reload_workers(p);
    snprintf(text, sizeof(text), "reloaded: generation %d serving "
             "(%d worker(s))", p->generation, wanted_workers(p));
    fdp_log(FDP_LOG_INFO, 0, "%s", text);
    p->notified_ready = 1;
    fdp_listen_notify(p, "READY=1\nSTATUS=%d workers ready, generation %d",
                      p->nworkers, p->generation);
    if (p->service != NULL) {
        p->service->reload_done(p, 1, text);
    }
    if (p->qlen > 0) {
        fdp_dispatch_queue(p);
    }
}


/* --start-timeout in ms. */
static uint64_t
start_ms(const struct fdp_pool *p)
{
    return (uint64_t) (p->start_timeout * 1000.0);
}


/*
 * Reload: check that the script compiles (and that a policy file loads),
 * then start a whole new generation of workers in spare slots, next to
 * the running one, which goes on serving. When every new worker has run
 * the top level and `init` and sent READY, the new generation takes the
 * table and the old one retires gracefully (reload_commit); if one sends
 * FAIL, dies, or is not READY within --start-timeout, the new
 * generation is stopped and the old one stays (reload_abort). Returns 0
 * when the new generation is starting (the outcome is logged and given
 * to p->service->reload_done), or -errno with p->error set when it is
 * refused at once (nothing changed; a fork that fails is logged twice):
 * -ESHUTDOWN stopping, -EBUSY a reload in progress or too few free
 * slots, -EINVAL a script or policy that does not compile, the read's
 * errno for a script that cannot be read, fork()'s errno.
 */
int
fdp_pool_reload(struct fdp_pool *p)
{
    char err[512];
    int i, j, r, nfree = 0;

    if (!p->running || p->stopping) {
        snprintf(p->error, sizeof(p->error), "the pool is stopping");
        return -ESHUTDOWN;
    }
    if (p->reload_gen) {
        snprintf(p->error, sizeof(p->error), "reload refused: generation "
                 "%d is still starting (a reload is in progress; try again "
                 "when it is done)", p->reload_gen);
        return -EBUSY;
    }
    if (p->upgrade_fd >= 0) {
        snprintf(p->error, sizeof(p->error), "reload refused: an upgrade is "
                 "in progress (new master pid %ld)", (long) p->upgrade_pid);
        return -EBUSY;
    }
    if (p->reconfigure != NULL
        && (r = p->reconfigure(p, 0, err, sizeof(err))) < 0) {
        snprintf(p->error, sizeof(p->error), "reload refused, keeping the "
                 "running workers and configuration: %s", err);
        note_refused(p, p->error);
        return r;
    }
    if (p->script
        && ((r = read_file(p->script, &p->reload_src, &p->reload_len, err,
                           sizeof(err))) < 0
            || (r = fdp_script_check(p, p->reload_src, p->reload_len, err,
                                     sizeof(err))) < 0)) {
        snprintf(p->error, sizeof(p->error), "reload refused, keeping the "
                 "running workers: %s", err);
        goto refused;
    }
    if (p->policy_ref == -2 && p->policy_name
        && (r = fdp_policy_check(p->L, p->policy_name, err,
                                 sizeof(err))) < 0) {
        snprintf(p->error, sizeof(p->error), "reload refused, keeping the "
                 "running workers: %s", err);
        goto refused;
    }
    for (i = 0; i < p->nlisten; i++) {
        if (p->listeners[i].tls && p->ntls == 0) {
            snprintf(p->error, sizeof(p->error), "reload refused, keeping "
                     "the running workers: listener %s has the tls option "
                     "but no certificate was given", p->listeners[i].addr);
            r = -EINVAL;
            goto refused;
        }
    }
    /* Renewed certificates: read now, as root, before any fork; one that
     * does not load refuses the reload. */
    if (p->ntls > 0
        && (r = fdp_tls_load(&p->reload_tls, p->tls_cert, p->tls_key,
                             p->ntls, err, sizeof(err))) < 0) {
        snprintf(p->error, sizeof(p->error), "reload refused, keeping the "
                 "running workers: %s", err);
        goto refused;
    }
    if (p->reload_tls != NULL) {
        char serial[80];

        fdp_tls_serial(p->reload_tls, serial, sizeof(serial));
        fdp_log(FDP_LOG_INFO, 0, "TLS: %d certificate(s) read for the new "
                "generation, default %s (serial %s)", p->ntls,
                p->tls_cert[0], serial);
    }
    for (j = p->nworkers; j < FDP_SLOTS; j++) {
        nfree += p->workers[j].slot.pid <= 0;
    }
    if (nfree < wanted_workers(p)) {
        snprintf(p->error, sizeof(p->error), "reload refused: a new "
                 "generation needs %d free worker slots and %d are free "
                 "(workers of an earlier generation are still finishing); "
                 "try again later", wanted_workers(p), nfree);
        r = -EBUSY;
        goto refused;
    }
    if (p->policy_ref == -2) {
        struct fdp_policy *old = p->policy;

        p->policy = NULL;
        r = fdp_policy_open(p, err, sizeof(err));
        if (r < 0) {
            p->policy = old;
            snprintf(p->error, sizeof(p->error), "reload refused: %s", err);
            goto refused;
        }
        p->reload_policy = p->policy;
        p->policy = old;
    }
    p->reload_gen = p->generation + 1;
    p->reload_npending = 0;
    p->reload_deadline = fdp_now_ms() + start_ms(p) + POKE_MS;
    fdp_log(FDP_LOG_INFO, 0, "reloading: generation %d starting next to "
            "generation %d", p->reload_gen, p->generation);
    fdp_listen_notify(p, "RELOADING=1\nMONOTONIC_USEC=%llu",
                      (unsigned long long) fdp_now_us());
    j = FDP_SLOTS;
    p->spawn_new = 1;
    for (i = 0; i < p->nworkers; i++) {
        struct fdp_worker *w;

        if (p->workers[i].off) {
            continue;               /* empty on purpose (on demand) */
        }
        do {
            j--;
        } while (p->workers[j].slot.pid > 0 || p->workers[j].pending);
        w = &p->workers[j];
        fdp_slot_reset(&w->slot, i + 1);
        w->slot.restarts = 0;
        r = spawn_worker(p, j);
        if (r < 0) {
            p->spawn_new = 0;
            fdp_slot_reset(&w->slot, j + 1);
            reload_abort(p, "cannot start a new worker (see the log)");
            snprintf(p->error, sizeof(p->error), "reload refused, keeping "
                     "the running workers: cannot start a new worker (see "
                     "the log)");
            return r;
        }
        w->slot.generation = p->reload_gen;
        w->pending = 1;
        p->reload_npending++;
    }
    p->spawn_new = 0;
    return 0;

refused:
    note_refused(p, p->error);
    free(p->reload_src);
    p->reload_src = NULL;
    fdp_tls_free(p->reload_tls);
    p->reload_tls = NULL;
    if (p->reconfigure != NULL) {
        (void) p->reconfigure(p, 2, err, sizeof(err));
    }
    return r;
}














/* fdpool.status() in a worker: the table as Lua text, in parts. */
static void
on_status_req(struct fdp_pool *p, struct fdp_worker *w,
              const struct fdp_msg *m)
{
    struct fdp_buf b;
    unsigned char part[FDP_MSG_MAX];
    size_t off = 0, chunk = FDP_MSG_MAX - 4;

    memset(&b, 0, sizeof(b));
    if (fdp_pool_status(p, &b, FDP_STATUS_LUA, 0) < 0) {
        return;
    }
    if (b.oom) {
        fdp_buf_free(&b);
        return;
    }
    memcpy(part, m->u.bytes, 4);            /* the request id */
    do {
        size_t n = b.len - off < chunk ? b.len - off : chunk;
        int more = off + n < b.len;

        memcpy(part + 4, b.data + off, n);
        if (fdp_chan_send(&w->ch, FDP_MSG_STATUS_RESP, (unsigned) more, part,
                          n + 4, NULL, 0) < 0) {
            break;
        }
        off += n;
    } while (off < b.len);
    if (w->ch.head != NULL) {
        (void) fdp_loop_mod(&p->loop, &w->io, EPOLLIN | EPOLLOUT);
    }
    fdp_buf_free(&b);
}


static void
on_done(struct fdp_pool *p, struct fdp_worker *w, const struct fdp_msg *m)
{
    int i;

    for (i = 0; i < m->h.count; i++) {
        const struct fdp_done_entry *d = &m->u.done[i];
        uint32_t k = (uint32_t) (d->id & 0xffff);

        if (k >= (uint32_t) w->ncap || w->inflight[k].id != d->id
            || d->id == 0 || fdp_dispatch_unclaimed(w, k)) {
            fdp_dispatch_fault(p, w,
                               "DONE for a connection it was not given");
            return;
        }
        fdp_dispatch_inflight_end(p, &w->inflight[k]);
        fdp_dispatch_served(w, k, d->bytes_in, d->bytes_out);
    }
    fdp_slot_update_busy(&w->slot, fdp_wall());
    if (w->retire_after && w->slot.served >= w->retire_after
        && !w->retiring && !p->stopping
        && (int) (w - p->workers) < p->nworkers) {
        char why[64];

        snprintf(why, sizeof(why), "served %llu connections (--max-requests)",
                 (unsigned long long) w->slot.served);
        replace_worker(p, (int) (w - p->workers), why);
    }
}


static void
on_fail(struct fdp_pool *p, struct fdp_worker *w, const struct fdp_msg *m)
{
    char text[FDP_MSG_MAX + 1];

    memcpy(text, m->u.bytes, m->h.len);
    text[m->h.len] = '\0';
    if (w->pending) {
        char why[sizeof(text) + 64];

        snprintf(why, sizeof(why), "worker %d of generation %d cannot "
                 "start: %s", w->slot.id, w->slot.generation, text);
        reload_abort(p, why);
        return;
    }
    fdp_log(FDP_LOG_ERROR, 0, "worker %d cannot start: %s", w->slot.id, text);
    if (!p->ever_ready && !p->failed) {
        p->failed = 1;
        snprintf(p->error, sizeof(p->error), "%.1000s", text);
        fdp_pool_stop(p, 0);
    }
}


/*
 * READY from w: it serves (a reload's new worker: when the last of its
 * generation is ready, the generation takes over). Returns -ECONNABORTED
 * when the caller must stop reading w's channel (w is faulty, or the
 * table was swapped), else 0.
 */
static int
on_ready(struct fdp_pool *p, struct fdp_worker *w, const struct fdp_msg *m)
{
    const struct fdp_ready_body *b;
    int i, up = 0;

    b = (const struct fdp_ready_body *) m->u.bytes;
    if (w->ready_seen) {
        fdp_dispatch_fault(p, w, "READY twice");
        return -ECONNABORTED;
    }
    w->ready_seen = 1;
    if (w->slot.state != FDP_W_STARTING) {
        /* Retired before it was ready (its generation was replaced by a
         * reload, or it was scaled down while starting): it has been
         * told to stop, and its READY comes late. No fault: it finishes
         * and exits like any retiring worker. */
        return 0;
    }
    w->slot.state = FDP_W_RUNNING;
    if (b->maxconns > 0 && (int) b->maxconns < w->slot.capacity) {
        /* Its open-files limit leaves room for fewer: the rest wait in
         * the queue rather than lose their fd on the way (EMFILE). */
        w->slot.capacity = (int) b->maxconns;
        if (!p->fd_room_said) {
            p->fd_room_said = 1;
            fdp_log(FDP_LOG_WARN, 0, "worker %d takes at most %d "
                    "connection(s) at once, not --concurrency %d: its open "
                    "files limit leaves no room for more (raise it: ulimit "
                    "-n, systemd LimitNOFILE=)", w->slot.id,
                    w->slot.capacity, p->concurrency);
        }
    }
    if (w->pending) {
        fdp_log(FDP_LOG_DEBUG, 0, "worker %d of generation %d ready",
                w->slot.id, w->slot.generation);
        /* Its filter settings apply once its generation serves. */
        p->reload_ready = *b;
        for (i = 0; i < FDP_SLOTS; i++) {
            up += p->workers[i].pending
                  && p->workers[i].slot.state == FDP_W_RUNNING;
        }
        if (up == p->reload_npending) {
            /* Swaps slots, w included: read the rest later. */
            reload_commit(p);
            return -ECONNABORTED;
        }
        return 0;
    }
    p->ever_ready = 1;
    fdp_acceptf_ready(p, b);
    if (!p->notified_ready) {
        for (i = 0; i < p->nworkers; i++) {
            up += p->workers[i].slot.state == FDP_W_RUNNING;
        }
        if (up == wanted_workers(p)) {
            p->notified_ready = 1;
            if (p->ready_fd >= 0) {
                /* An upgrade's new master: the old one tells systemd
                 * (MAINPID=, READY=1) once it has handed over. */
                fdp_upgrade_ready(p);
            } else {
                fdp_listen_notify(p, "READY=1\nSTATUS=%d workers ready, "
                                  "generation %d", up, p->generation);
            }
        }
    }
    fdp_log(FDP_LOG_DEBUG, 0, "worker %d ready", w->slot.id);
    return 0;
}


static void
worker_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_worker *w = io->data;
    struct fdp_pool *p = w->pool;
    struct fdp_msg m;
    int r, n;

    (void) loop;
    if (ev & EPOLLOUT) {
        r = fdp_chan_flush(&w->ch);
        if (r == 0) {
            (void) fdp_loop_mod(&p->loop, &w->io, EPOLLIN);
        } else if (r != -EAGAIN) {
            fdp_dispatch_drop_channel(p, w);
            return;
        }
    }
    for (n = 0; n < 64 && w->ch.fd >= 0; n++) {
        r = fdp_chan_recv(&w->ch, &m);
        if (r == -EAGAIN) {
            break;
        }
        if (r == 0 || r == -ECONNRESET) {
            /* The worker exited or closed its end: reaping follows. */
            fdp_dispatch_drop_channel(p, w);
            if (w->slot.state != FDP_W_NONE
                && w->slot.state != FDP_W_STARTING) {
                /* (Still "starting": its exit is judged as a start.) */
                w->slot.state = FDP_W_EXITING;
            }
            break;
        }
        if (r < 0) {
            fdp_dispatch_fault(p, w, "malformed message on its "
                               "channel");
            break;
        }
        if (fdp_msg_check(&m, 1) < 0) {
            fdp_msg_close_fds(&m);
            fdp_dispatch_fault(p, w, "malformed message on its "
                               "channel");
            break;
        }
        switch (m.h.type) {
        case FDP_MSG_READY:
            if (on_ready(p, w, &m) < 0) {
                return;
            }
            break;
        case FDP_MSG_FAIL:
            on_fail(p, w, &m);
            break;
        case FDP_MSG_DONE:
            on_done(p, w, &m);
            /* One DONE or PARK (the messages of every hand-off) per
             * wake-up: the channel is level-triggered, so a message
             * behind it wakes the next epoll_wait at once, and the
             * recvmsg that would only say EAGAIN -- the common case --
             * is saved. */
            goto out;
        case FDP_MSG_PARK:
            fdp_dispatch_park(p, w, &m);
            goto out;
        case FDP_MSG_STATUS_REQ:
            on_status_req(p, w, &m);
            break;
        case FDP_MSG_SET:
            if (fdp_slot_set_kv(&w->slot, (const char *) m.u.bytes,
                                (const char *) m.u.bytes
                                + strlen((const char *) m.u.bytes) + 1) < 0) {
                fdp_log(FDP_LOG_WARN, 0, "worker %d: too many custom status "
                        "fields (at most %d)", w->slot.id, FDP_KV_MAX);
            }
            break;
        default:
            break;
        }
    }
out:
    if (p->noffers > 0 && w->claim != NULL && w->inflight != NULL) {
        fdp_dispatch_offers_settle(p, w);
    }
    if (p->qlen > 0 || p->noffers > 0) {
        fdp_dispatch_queue(p);
    }
}


static uint64_t
backoff_ms(int streak)
{
    uint64_t ms = 100;

    while (streak-- > 1 && ms < BACKOFF_MAX_MS) {
        ms *= 2;
    }
    return ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms;
}


/* w's process is gone (wait status st): record and log how (into how),
 * close its channel, end its connections' bookkeeping, free the slot. */
static void
worker_gone(struct fdp_pool *p, struct fdp_worker *w, int st, char *how,
            size_t howlen)
{
    int k;

    if (WIFSIGNALED(st)) {
        w->slot.last_exit_how = FDP_EXIT_SIGNAL;
        w->slot.last_exit_code = WTERMSIG(st);
        snprintf(how, howlen, "killed by %s", fdp_signame(WTERMSIG(st)));
    } else {
        w->slot.last_exit_how = FDP_EXIT_CODE;
        w->slot.last_exit_code = WEXITSTATUS(st);
        snprintf(how, howlen, "exited with code %d", WEXITSTATUS(st));
    }
    /* An offer it had not claimed goes to another worker (strict
     * prefork's prefetch): not lost, not counted below. */
    fdp_dispatch_drop_channel(p, w);
    fdp_dispatch_offers_back(p, w, !p->stopping);
    if (!p->stopping) {
        fdp_dispatch_parks_take(p, w);  /* its held-back PARKs */
    }
    /* A SIGTERM the master sent itself (the rest of a refused reload's
     * generation, a handler past --timeout already logged) is no news,
     * nor is a stopping worker that exits or that the master killed at
     * the grace's end (logged then). One killed by anyone else while
     * the pool stops (SIGKILL, a crash) took its connections with it:
     * that is said, as at any other time. (A stop signal sent to the
     * whole process group -- timeout(1), KillMode=control-group -- is
     * part of the stop, not news.) */
    int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    int stray = p->stopping && sig != 0 && !w->ordered && sig != SIGTERM
                && sig != SIGINT && sig != SIGQUIT && sig != SIGHUP;

    fdp_log((p->stopping && !stray) || (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            || (w->ordered && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM)
            ? FDP_LOG_INFO : FDP_LOG_WARN, 0,
            "worker %d (pid %ld) %s%s", w->slot.id, (long) w->slot.pid, how,
            w->slot.active > 0 && (!p->stopping || stray)
            ? "; its connections are lost" : "");
    for (k = 0; k < w->ncap && w->inflight; k++) {
        if (w->inflight[k].id != 0) {
            fdp_dispatch_inflight_end(p, &w->inflight[k]);
        }
        w->inflight[k].id = 0;
    }
    w->slot.pid = -1;
    w->slot.state = FDP_W_NONE;
    w->slot.active = 0;
    w->slot.busy_since = 0;
    p->nalive--;
    if (p->qlen > 0 && !p->stopping) {
        fdp_dispatch_queue(p);      /* a requeued offer, to another */
    }
}


static void
on_exit_status(struct fdp_pool *p, struct fdp_worker *w, int st)
{
    char how[64];
    int was_ready;

    /* Read what it said before it died (READY, DONE, FAIL with its
     * reason) before judging the exit. */
    if (w->ch.fd >= 0) {
        worker_io(&p->loop, &w->io, EPOLLIN);
    }
    if (w->slot.pid <= 0) {
        return;
    }
    was_ready = w->slot.state != FDP_W_STARTING;
    uint64_t lived = fdp_now_ms() - w->started_ms;

    worker_gone(p, w, st, how, sizeof(how));

    if (p->stopping) {
        return;
    }
    if (w->pending) {
        /* A reload's new worker died before READY: the reload fails,
         * the running generation stays. */
        char why[160];

        w->pending = 0;
        fdp_slot_reset(&w->slot, (int) (w - p->workers) + 1);
        snprintf(why, sizeof(why), "a worker of generation %d %s before "
                 "it was ready", p->reload_gen, how);
        reload_abort(p, why);
        return;
    }
    if (w->retiring || (int) (w - p->workers) >= p->nworkers) {
        /* A retired process (recycled, scaled down, old generation). */
        w->retiring = 0;
        fdp_slot_reset(&w->slot, (int) (w - p->workers) + 1);
        w->slot.restarts = 0;
        w->slot.last_exit_how = FDP_EXIT_NONE;
        return;
    }
    if (!p->ever_ready && !was_ready) {
        p->failed = 1;
        if (p->error[0] == '\0') {
            snprintf(p->error, sizeof(p->error), "worker %d %s before it "
                     "was ready", w->slot.id, how);
        }
        fdp_pool_stop(p, 0);
        return;
    }
    w->slot.restarts++;
    if (w->ordered) {
        /* The master killed it (faulty, past --timeout): that is no
         * crash. A new one starts at once, or after a second when this
         * one lived less, so a fault at start cannot make a fork loop. */
        w->spawn_at = lived < 1000 ? fdp_now_ms() + 1000 : 0;
        if (w->spawn_at == 0) {
            (void) spawn_worker(p, (int) (w - p->workers));
        }
        return;
    }
    if (!was_ready || lived < 1000) {
        /* A crash: back off, 100 ms doubling up to 30 s, and keep
         * retrying. The pool has had a READY generation (else it stopped
         * above), so it never gives up: clients are served by the
         * workers that run, and /healthz and `pool status` show why. */
        p->crash_streak++;
        snprintf(p->crash_why, sizeof(p->crash_why), "worker %d %s%s",
                 w->slot.id, how, was_ready ? " within a second of its "
                 "start" : " before it was ready");
        w->spawn_at = fdp_now_ms() + backoff_ms(p->crash_streak);
        fdp_log(p->crash_streak >= CRASH_LIMIT ? FDP_LOG_ERROR
                : FDP_LOG_WARN, 0, "worker %d restarts in %llu ms (crash "
                "streak %d)%s", w->slot.id,
                (unsigned long long) (w->spawn_at - fdp_now_ms()),
                p->crash_streak, p->crash_streak >= CRASH_LIMIT
                ? ": workers keep dying; the pool keeps retrying" : "");
    } else {
        p->crash_streak = 0;
        p->crash_why[0] = '\0';
        w->spawn_at = 0;
        (void) spawn_worker(p, (int) (w - p->workers));
    }
}


static void
reap(struct fdp_pool *p)
{
    int i, st;

    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];
        pid_t r;

        if (w->slot.pid <= 0) {
            continue;
        }
        do {
            r = waitpid(w->slot.pid, &st, WNOHANG);
        } while (r < 0 && errno == EINTR);
        if (r == w->slot.pid) {
            on_exit_status(p, w, st);
        } else if (r < 0 && errno == ECHILD) {
            /* Reaped by someone else (a Lua program's own wait). */
            on_exit_status(p, w, 0);
        }
    }
}


/*
 * Several pools in one Lua program (fdpool.pool{}) share the process's
 * signals, and a signal is read by one signalfd only: whichever pool's.
 * A stop (TERM, INT), graceful stop (QUIT), reload (HUP) or log reopen
 * (USR1) is the program's: the pool that reads it counts it in psig_gen
 * and acts, and every other running pool acts on it at its next step
 * (psig_follow): all of the program's pools stop, reload, or have their
 * workers reopen the log. (TTIN, TTOU and USR2 stay with the pool that
 * reads them: pool:scale() and pool:upgrade() name their pool.)
 */
static void
psig_read(struct fdp_pool *p, int k, int signo)
{
    p->psig_seen[k] = ++psig_gen[k];
    psig_signo[k] = signo;
}


static void
psig_follow(struct fdp_pool *p)
{
    int i;

    if (p->psig_seen[PSIG_QUIT] != psig_gen[PSIG_QUIT]) {
        p->psig_seen[PSIG_QUIT] = psig_gen[PSIG_QUIT];
        fdp_log(FDP_LOG_INFO, 0, "SIGQUIT (read by another pool of this "
                "program): stopping gracefully");
        fdp_pool_stop(p, 1);
    }
    if (p->psig_seen[PSIG_STOP] != psig_gen[PSIG_STOP]) {
        p->psig_seen[PSIG_STOP] = psig_gen[PSIG_STOP];
        fdp_log(FDP_LOG_INFO, 0, "%s (read by another pool of this program):"
                " stopping", fdp_signame(psig_signo[PSIG_STOP]));
        fdp_pool_stop(p, 0);
    }
    if (p->psig_seen[PSIG_HUP] != psig_gen[PSIG_HUP]) {
        p->psig_seen[PSIG_HUP] = psig_gen[PSIG_HUP];
        if (p->running && !p->stopping) {
            fdp_log(FDP_LOG_INFO, 0, "SIGHUP (read by another pool of this "
                    "program): reloading");
            if (fdp_pool_reload(p) < 0) {
                fdp_log(FDP_LOG_ERROR, 0, "%s", p->error);
                p->error[0] = '\0';
            }
        }
    }
    if (p->psig_seen[PSIG_USR1] != psig_gen[PSIG_USR1]) {
        /* the log itself is the process's, reopened by the pool that
         * read the signal: the workers reopen theirs */
        p->psig_seen[PSIG_USR1] = psig_gen[PSIG_USR1];
        for (i = 0; i < FDP_SLOTS; i++) {
            worker_kill(&p->workers[i], SIGUSR1);
        }
    }
}


static void
signal_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    struct fdp_pool *p = io->data;
    struct signalfd_siginfo si;
    ssize_t n;
    int i, r;

    (void) loop;
    (void) ev;
    for (;;) {
        n = read(p->sigfd, &si, sizeof(si));
        if (n != (ssize_t) sizeof(si)) {
            break;
        }
        switch (si.ssi_signo) {
        case SIGCHLD:
            p->sigchld_seen = ++sigchld_gen;
            reap(p);
            fdp_upgrade_poll(p);
            break;
        case SIGUSR2:
            fdp_log(FDP_LOG_INFO, 0, "SIGUSR2: upgrading");
            if (fdp_pool_upgrade(p) < 0) {
                fdp_log(FDP_LOG_ERROR, 0, "%s", p->error);
                p->error[0] = '\0';
            }
            break;
        case SIGTERM:
        case SIGINT:
            psig_read(p, PSIG_STOP, (int) si.ssi_signo);
            fdp_log(FDP_LOG_INFO, 0, "%s: stopping", fdp_signame((int) si.ssi_signo));
            fdp_pool_stop(p, 0);
            break;
        case SIGQUIT:
            psig_read(p, PSIG_QUIT, SIGQUIT);
            fdp_log(FDP_LOG_INFO, 0, "SIGQUIT: stopping gracefully");
            fdp_pool_stop(p, 1);
            break;
        case SIGHUP:
            psig_read(p, PSIG_HUP, SIGHUP);
            fdp_log(FDP_LOG_INFO, 0, "SIGHUP: reloading");
            if (fdp_pool_reload(p) < 0) {
                fdp_log(FDP_LOG_ERROR, 0, "%s", p->error);
                p->error[0] = '\0';
            }
            break;
        case SIGTTIN:
            if (p->max_workers > 0 && p->min_workers >= p->max_workers) {
                fdp_log(FDP_LOG_WARN, 0, "SIGTTIN: the minimum is already "
                        "the maximum (%d)", p->max_workers);
            } else if (fdp_pool_scale(p, (p->max_workers ? p->min_workers
                                          : p->nworkers) + 1) < 0) {
                fdp_log(FDP_LOG_WARN, 0, "SIGTTIN: cannot add a worker: "
                        "%s", p->error);
                p->error[0] = '\0';
            }
            break;
        case SIGTTOU:
            if ((p->max_workers ? p->min_workers : p->nworkers) <= 1) {
                fdp_log(FDP_LOG_WARN, 0, "SIGTTOU: keeping at least one "
                        "worker");
            } else if (fdp_pool_scale(p, (p->max_workers ? p->min_workers
                                          : p->nworkers) - 1) < 0) {
                fdp_log(FDP_LOG_WARN, 0, "SIGTTOU: cannot remove a "
                        "worker: %s", p->error);
                p->error[0] = '\0';
            }
            break;
        case SIGUSR1:
            psig_read(p, PSIG_USR1, SIGUSR1);
            r = fdp_log_reopen();
            if (r < 0) {
                fdp_log(FDP_LOG_WARN, -r, "SIGUSR1: cannot reopen the log "
                        "file; logging on to the one already open");
            } else {
                fdp_log(FDP_LOG_INFO, 0, "SIGUSR1: log reopened");
            }
            for (i = 0; i < FDP_SLOTS; i++) {
                worker_kill(&p->workers[i], SIGUSR1);
            }
            break;
        default:
            break;
        }
    }
    if (p->qlen > 0) {
        fdp_dispatch_queue(p);
    }
}


/* A worker's anonymous resident memory (RssAnon in /proc/PID/status:
 * private pages, not shared mappings or files), in KiB; -errno if
 * unknown (-ENODATA: no RssAnon line). */
static long
rss_anon_kb(pid_t pid)
{
    char path[64], buf[4096];
    const char *s;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%ld/status", (long) pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    fdp_close(&fd);
    if (n < 0) {
        return -errno;
    }
    if (n == 0) {
        return -ENODATA;
    }
    buf[n] = '\0';
    s = strstr(buf, "\nRssAnon:");
    return s ? strtol(s + 9, NULL, 10) : -ENODATA;
}


/*
 * --max-memory, the process side (the Lua allocator in the worker is the
 * other): every MEM_CHECK_TICKS the master reads each current worker's
 * RssAnon, and a worker above the limit at two checks in a row is retired
 * gracefully (it finishes its connections, takes no new ones) and replaced.
 * The master reads it rather than trusting the worker, so a worker stuck
 * in a handler is measured too. A worker that has served nothing yet is
 * only warned about: a fresh one would be no smaller.
 */
#define MEM_CHECK_TICKS 5

static void
watch_memory(struct fdp_pool *p)
{
    int i;

    for (i = 0; i < p->nworkers; i++) {
        struct fdp_worker *w = &p->workers[i];
        long kb;
        char why[128];

        if (w->slot.pid <= 0 || w->slot.state != FDP_W_RUNNING
            || w->retiring) {
            continue;
        }
        kb = rss_anon_kb(w->slot.pid);
        if (kb < 0 || (uint64_t) kb * 1024 <= p->max_memory) {
            w->mem_over = 0;
            continue;
        }
        if (++w->mem_over < 2) {
            continue;
        }
        if (w->slot.served == 0 && w->slot.active == 0) {
            if (w->mem_over == 2) {
                fdp_log(FDP_LOG_WARN, 0, "worker %d (pid %ld) uses %ld MiB "
                        "(RssAnon) before serving anything, above "
                        "--max-memory %llu MiB; not retiring it", i + 1,
                        (long) w->slot.pid, kb / 1024,
                        (unsigned long long) (p->max_memory >> 20));
            }
            continue;
        }
        snprintf(why, sizeof(why), "RssAnon %ld MiB stays above "
                 "--max-memory %llu MiB", kb / 1024,
                 (unsigned long long) (p->max_memory >> 20));
        replace_worker(p, i, why);
    }
}


/*
 * The worker enforces --timeout for handlers that wait; one that holds
 * the CPU keeps the worker's loop from running, so the master watches the
 * in-flight ages: at timeout + 1 s it sends SIGUSR2 (the worker raises
 * inside the handler, with a traceback), at + 3 s SIGTERM, at + 4 s
 * SIGKILL. The worker is then replaced; its other connections are lost.
 */
static void
watch_timeouts(struct fdp_pool *p)
{
    uint64_t now = fdp_now_us(), limit = (uint64_t) (p->timeout * 1e6);
    int i, k;

    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];

        /* A worker already being terminated is not terminated again for
         * its next overdue connection: that logged the line once per
         * connection and pushed its SIGKILL back a second each time. */
        if (w->slot.pid <= 0 || w->slot.active == 0 || w->inflight == NULL
            || w->cpu_killed) {
            continue;
        }
        for (k = 0; k < w->ncap; k++) {
            struct fdp_inflight *f = &w->inflight[k];
            uint64_t age;

            if (f->id == 0 || f->offer) {   /* an offer has not started */
                continue;
            }
            age = now - f->since_us;
            if (f->escalated == 0 && age > limit + 1000000) {
                f->escalated = 1;
                worker_kill(w, SIGUSR2);
            } else if (f->escalated == 1 && age > limit + 3000000) {
                f->escalated = 2;
                fdp_log(FDP_LOG_ERROR, 0, "worker %d (pid %ld): a handler "
                        "holds the CPU past --timeout and does not yield; "
                        "terminating the worker (its %d connection(s) are "
                        "lost)", w->slot.id, (long) w->slot.pid,
                        w->slot.active);
                w->ordered = 1;
                w->cpu_killed = 1;
                worker_kill(w, SIGTERM);
                w->kill_at = fdp_now_ms() + 1000;
                break;
            }
        }
    }
}


/*
 * --slow, for handlers that hold the CPU (a waiting one is logged by its
 * worker's own timer): while a connection in flight is older than
 * --slow, its worker gets a SIGUSR2 sent with sigqueue and
 * FDP_SIG_SLOW_VALUE as its value, again every quarter of --slow (100 ms
 * to 1 s), so a spin is seen within that much past --slow; the
 * worker tells apart from --timeout's kill(). The worker knows where its
 * requests start (a keep-alive connection is older than its request):
 * if the handler it runs is past --slow and not logged yet, it logs
 * where it is and lets it go on (task.c's slow_hook); else nothing.
 */
static void
watch_slow(struct fdp_pool *p)
{
    uint64_t now = fdp_now_us(), limit = (uint64_t) (p->slow * 1e6);
    uint64_t ms = now / 1000, every = (uint64_t) (p->slow * 250.0);
    union sigval v;
    int i, k, send;

    v.sival_int = FDP_SIG_SLOW_VALUE;
    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];

        if (w->slot.pid <= 0 || w->slot.active == 0 || w->inflight == NULL) {
            continue;
        }
        send = 0;
        for (k = 0; k < w->ncap; k++) {
            struct fdp_inflight *f = &w->inflight[k];

            if (f->id != 0 && !f->offer && now - f->since_us > limit
                && ms >= f->slow_at) {
                f->slow_at = ms + (every < FDP_TICK_MS ? FDP_TICK_MS
                                   : every > 1000 ? 1000 : every);
                send = 1;
            }
        }
        if (send) {
            (void) sigqueue(w->slot.pid, SIGUSR2, v);
        }
    }
}


/*
 * A worker still starting (its top level or init) past --start-timeout
 * is sent SIGUSR2: one running Lua raises where it is and sends FAIL,
 * which names the file and line (on_fail). One that has not after
 * POKE_MS (stuck in C) is stopped: the first generation fails the
 * start; a reload's new one is refused at its deadline (tick); a
 * restarted worker is killed and restarts with the crash back-off.
 */
static void
start_deadline(struct fdp_pool *p, struct fdp_worker *w, uint64_t now)
{
    uint64_t age = now - w->started_ms;
    union sigval v;

    if (w->poked == 0 && age >= start_ms(p)) {
        w->poked = 1;
        fdp_log(FDP_LOG_WARN, 0, "worker %d (pid %ld) is not ready after "
                "%g s (--start-timeout): interrupting its start",
                w->slot.id, (long) w->slot.pid, p->start_timeout);
        /* sigqueue, with its own value: a worker that turned READY in
         * the meantime ignores it (a kill() would stop its handler) */
        v.sival_int = FDP_SIG_START_VALUE;
        (void) sigqueue(w->slot.pid, SIGUSR2, v);
    } else if (w->poked == 1 && age >= start_ms(p) + POKE_MS
               && !w->pending) {
        w->poked = 2;
        if (!p->ever_ready) {
            if (!p->failed) {
                p->failed = 1;
                snprintf(p->error, sizeof(p->error), "worker %d was not "
                         "ready within %g s (--start-timeout): its top "
                         "level or init did not finish", w->slot.id,
                         p->start_timeout);
                fdp_pool_stop(p, 0);
            }
            return;
        }
        fdp_log(FDP_LOG_ERROR, 0, "worker %d (pid %ld) was not ready "
                "within %g s (--start-timeout); killing it", w->slot.id,
                (long) w->slot.pid, p->start_timeout);
        worker_kill(w, SIGKILL);
    }
}


static void
tick(struct fdp_loop *loop, struct fdp_timer *t)
{
    struct fdp_pool *p = t->data;
    uint64_t now = fdp_now_ms();
    int i;

    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];

        if (w->slot.pid > 0 && w->kill_at && now >= w->kill_at) {
            fdp_log(FDP_LOG_WARN, 0, "worker %d (pid %ld) still running "
                    "after the grace period; killing it", w->slot.id,
                    (long) w->slot.pid);
            w->ordered = 1;     /* its death is the master's: no news */
            worker_kill(w, SIGKILL);
            w->kill_at = 0;
        }
        if (w->slot.pid > 0 && w->slot.state == FDP_W_STARTING
            && !p->stopping) {
            start_deadline(p, w, now);
        }
        if (!p->stopping && i < p->nworkers && w->slot.pid == -1
            && !w->off && now >= w->spawn_at) {
            (void) spawn_worker(p, i);
        }
    }
    if (p->reload_gen && now >= p->reload_deadline) {
        char why[96];

        snprintf(why, sizeof(why), "generation %d was not ready within "
                 "%g s (--start-timeout)", p->reload_gen, p->start_timeout);
        reload_abort(p, why);
    }
    if (p->crash_streak > 0 && !p->stopping) {
        /* Every worker up for a second: the crash streak is over. */
        int up = 0;

        for (i = 0; i < p->nworkers; i++) {
            up += p->workers[i].slot.state == FDP_W_RUNNING
                  && now - p->workers[i].started_ms >= 1000;
        }
        if (up == wanted_workers(p)) {
            fdp_log(FDP_LOG_INFO, 0, "all %d worker(s) running again "
                    "(crash streak of %d over)", up, p->crash_streak);
            p->crash_streak = 0;
            p->crash_why[0] = '\0';
        }
    }
    if (p->concurrency == 1 && !p->stopping) {
        fdp_dispatch_parks_tick(p);
    }
    if (p->noffers > 0 && !p->stopping) {
        /* Prefetch: claimed offers start their clocks; those a slow
         * handler holds back go to the next free worker. */
        for (i = 0; i < FDP_SLOTS; i++) {
            if (p->workers[i].claim != NULL && p->workers[i].inflight) {
                fdp_dispatch_offers_settle(p, &p->workers[i]);
            }
        }
        fdp_dispatch_offers_tick(p);
    }
    if (p->timeout > 0) {
        watch_timeouts(p);
    }
    if (p->slow > 0) {
        watch_slow(p);
    }
    ondemand_tick(p, now);
    if (p->max_memory > 0 && !p->stopping
        && ++p->mem_tick >= MEM_CHECK_TICKS) {
        p->mem_tick = 0;
        watch_memory(p);
    }
    fdp_upgrade_poll(p);
    if (!p->stopping && !p->accepting && p->qlen < FDP_QUEUE_MAX
        && !p->accept_held && now >= p->accept_paused_until) {
        fdp_dispatch_accepting(p, 1);
    }
    if (p->service != NULL) {
        p->service->tick(p);
    }
    if (p->qlen > 0) {
        fdp_dispatch_queue(p);
    }
    fdp_acceptf_retry(p);
    if (p->fallback_unlogged > 0 && now - p->fallback_logged_ms >= 1000) {
        fdp_log(FDP_LOG_WARN, 0, "policy %s: %llu more picks of a worker "
                "that could not take a connection; used first_free",
                fdp_policy_name(p), (unsigned long long) p->fallback_unlogged);
        p->fallback_logged_ms = now;
        p->fallback_unlogged = 0;
    }
    fdp_policy_flush_log(p);
    (void) fdp_timer_start(loop, t, FDP_TICK_MS);
}


/* fs.nr_open: the ceiling for RLIMIT_NOFILE when the hard limit is
 * "unlimited". */
static rlim_t
nr_open(void)
{
    char buf[32];
    ssize_t n;
    int fd = open("/proc/sys/fs/nr_open", O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return 1048576;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    fdp_close(&fd);
    if (n <= 0) {
        return 1048576;
    }
    buf[n] = '\0';
    return (rlim_t) strtoull(buf, NULL, 10);
}


/*
 * Raise RLIMIT_NOFILE's soft limit to the hard limit (as nginx's
 * worker_rlimit_nofile; workers inherit it) and log the figure. Warn when
 * it is short of what the configuration may hold open at once: every
 * worker's connections, and the master may hold any of them (queued,
 * parked between keep-alive requests), so workers x concurrency plus a
 * margin for listeners, channels, the control socket and logs.
 */
static void
raise_nofile(struct fdp_pool *p)
{
    struct rlimit rl;
    rlim_t was;
    unsigned long long need;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fdp_log(FDP_LOG_WARN, errno, "getrlimit(RLIMIT_NOFILE) failed");
        return;
    }
    was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            rl.rlim_cur = nr_open();
            if (rl.rlim_cur > rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
            }
            if (rl.rlim_cur <= was || setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                fdp_log(FDP_LOG_WARN, errno, "setrlimit(RLIMIT_NOFILE) "
                        "failed");
                rl.rlim_cur = was;
            }
        }
    }
    if (rl.rlim_cur == was) {
        fdp_log(FDP_LOG_INFO, 0, "open files limit (RLIMIT_NOFILE): %llu",
                (unsigned long long) rl.rlim_cur);
    } else {
        fdp_log(FDP_LOG_INFO, 0, "open files limit (RLIMIT_NOFILE): %llu "
                "(raised from %llu)", (unsigned long long) rl.rlim_cur,
                (unsigned long long) was);
    }
    need = (unsigned long long) p->nworkers * (unsigned long long)
           p->concurrency + (unsigned long long) p->nworkers + 64;
    if (rl.rlim_cur != RLIM_INFINITY
        && (unsigned long long) rl.rlim_cur < need) {
        fdp_log(FDP_LOG_WARN, 0, "open files limit %llu is below the %llu "
                "this pool may hold open (--workers %d x --concurrency %d "
                "+ margin): expect EMFILE under load; raise the hard limit "
                "(ulimit -Hn, systemd LimitNOFILE=)",
                (unsigned long long) rl.rlim_cur, need, p->nworkers,
                p->concurrency);
    }
}


/*
 * Several pools may run in one Lua program (fdpool.pool{}): the first to
 * start blocks the signals and saves the mask, the last to finish gives
 * it back (sig_refs), so a pool that stops first does not unblock the
 * others' SIGCHLD and SIGTERM. SIGCHLD is not queued: whichever pool's
 * signalfd reads it counts it in sigchld_gen, and the others reap on
 * their next turn (at the latest the tick).
 */
static void
release_signals(struct fdp_pool *p)
{
    (void) p;
    if (sig_refs > 0 && --sig_refs == 0) {
        (void) sigprocmask(SIG_SETMASK, &sig_oldmask, NULL);
    }
}


static int
setup_signals(struct fdp_pool *p)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTTIN);
    sigaddset(&set, SIGTTOU);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    if (sig_refs == 0 && sigprocmask(SIG_BLOCK, &set, &sig_oldmask) < 0) {
        return -errno;
    }
    sig_refs++;
    p->oldmask = sig_oldmask;
    p->sigchld_seen = sigchld_gen;
    memcpy(p->psig_seen, psig_gen, sizeof(p->psig_seen));
    p->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (p->sigfd < 0) {
        int r = -errno;

        release_signals(p);
        return r;
    }
    p->sigio.fd = p->sigfd;
    p->sigio.cb = signal_io;
    p->sigio.data = p;
    return fdp_loop_add(&p->loop, &p->sigio, EPOLLIN);
}


/*
 * Start serving: listeners must have been added (default 127.0.0.1:8080
 * is the caller's business). Opens the policy and the control socket,
 * blocks the pool's signals into a signalfd, forks the workers. Returns
 * 0, or -errno with p->error set (nothing left running): -EINVAL for a
 * bad setting (already started, no listener, workers out of range, a
 * policy that does not compile), else the failing call's errno (a
 * script that cannot be read: -ENOENT, -EACCES...).
 */
int
fdp_pool_start(struct fdp_pool *p)
{
    int i, r;

    if (p->started) {
        snprintf(p->error, sizeof(p->error), "pool already started");
        return -EINVAL;
    }
    if (p->nlisten == 0) {
        snprintf(p->error, sizeof(p->error), "no listen address");
        return -EINVAL;
    }
    if (p->nworkers < 1 || p->nworkers > FDP_MAX_WORKERS
        || (p->max_workers > 0 && (p->min_workers < 1
                                   || p->min_workers > p->max_workers
                                   || p->max_workers > FDP_MAX_WORKERS))) {
        snprintf(p->error, sizeof(p->error), "workers must be 1 to %d "
                 "(on demand: 1 <= MIN <= MAX <= %d)", FDP_MAX_WORKERS,
                 FDP_MAX_WORKERS);
        return -EINVAL;
    }
    if (p->max_workers > 0) {
        p->nworkers = p->max_workers;
    }
    p->offer_batch = getenv("FDPOOL_OFFERBATCH") == NULL
                     || strcmp(getenv("FDPOOL_OFFERBATCH"), "0") != 0;
    p->ring_parks = getenv("FDPOOL_PARKWAKE") == NULL
                    || strcmp(getenv("FDPOOL_PARKWAKE"), "0") != 0;
    if (p->script && p->script_src == NULL
        && (r = read_file(p->script, &p->script_src, &p->script_len,
                          p->error, sizeof(p->error))) < 0) {
        return r;
    }
    for (i = 0; i < p->nlisten; i++) {
        if (p->listeners[i].tls && p->ntls == 0) {
            snprintf(p->error, sizeof(p->error), "listener %s has the tls "
                     "option but no certificate was given (--tls-cert and "
                     "--tls-key)", p->listeners[i].addr);
            return -EINVAL;
        }
    }
    /* Certificates and keys are read here, in the master, before any
     * fork: workers under --user never need to read the key file. */
    if (p->ntls > 0 && p->tls == NULL
        && (r = fdp_tls_load(&p->tls, p->tls_cert, p->tls_key, p->ntls,
                             p->error, sizeof(p->error))) < 0) {
        return r;
    }
    if (p->tls != NULL) {
        char serial[80];

        fdp_tls_serial(p->tls, serial, sizeof(serial));
        fdp_log(FDP_LOG_INFO, 0, "TLS: %d certificate(s) loaded, default "
                "%s (serial %s)", p->ntls, p->tls_cert[0], serial);
    }
    p->owner = getpid();
    fdp_listen_notify_open(p);
    r = fdp_loop_init(&p->loop);
    if (r < 0) {
        snprintf(p->error, sizeof(p->error), "epoll_create1() failed (%s)",
                 strerror(-r));
        return r;
    }
    r = fdp_policy_open(p, p->error, sizeof(p->error));
    if (r < 0) {
        goto fail;
    }
    if (p->service != NULL
        && (r = p->service->open(p, p->error, sizeof(p->error))) < 0) {
        goto fail;
    }
    r = setup_signals(p);
    if (r < 0) {
        snprintf(p->error, sizeof(p->error), "signalfd() failed (%s)",
                 strerror(-r));
        goto fail;
    }
    raise_nofile(p);
    /* Before "listening on": a client that reads the port there finds
     * the deferral in place. */
    fdp_acceptf_defer(p);
    for (i = 0; i < p->nlisten; i++) {
        p->listeners[i].io.cb = fdp_dispatch_listener_io;
        /* A pool upgrade's new master accepts from its READY on. */
        r = fdp_loop_add(&p->loop, &p->listeners[i].io,
                         p->accept_held ? 0 : EPOLLIN);
        if (r < 0) {
            snprintf(p->error, sizeof(p->error), "epoll_ctl() failed (%s)",
                     strerror(-r));
            goto fail;
        }
        fdp_log(FDP_LOG_INFO, 0, "listening on %s", p->listeners[i].bound);
    }
    p->accepting = !p->accept_held;
    sched_master(p, 1);
    p->started = 1;
    p->running = 1;
    p->started_at = fdp_wall();
    p->generation = 1;
    fdp_log(FDP_LOG_INFO, 0, "pool %s: %d worker(s), concurrency %d, "
            "policy %s%s%s", FDP_VERSION, p->nworkers, p->concurrency,
            fdp_policy_name(p), p->control_path ? ", control " : "",
            p->control_path ? p->control_path : "");
    if (geteuid() == 0 && p->user_name == NULL) {
        fdp_log(FDP_LOG_WARN, 0, "running as root: workers run as root "
                "(use --user to drop privileges)");
    } else if (p->user_name != NULL) {
        fdp_log(FDP_LOG_INFO, 0, "workers run as user %s (uid %u, gid %u)",
                p->user_name, p->user_uid, p->user_gid);
        /* So that they can reopen --log after a rotation (SIGUSR1). */
        fdp_log_set_owner((long) p->user_uid);
    }
    if (p->max_workers > 0) {
        fdp_log(FDP_LOG_INFO, 0, "workers on demand: %d to %d, idle ones "
                "retire after %g s", p->min_workers, p->max_workers,
                p->idle_timeout);
        snprintf(p->scaled_why, sizeof(p->scaled_why), "started: %d",
                 p->min_workers);
    }
    /* The tick first: a start that fails below stops the pool, whose
     * end stops the tick and whose workers it kills past the grace. */
    fdp_timer_init(&p->tick, tick, p);
    (void) fdp_timer_start(&p->loop, &p->tick, FDP_TICK_MS);
    for (i = 0; i < p->nworkers; i++) {
        if (p->max_workers > 0 && i >= p->min_workers) {
            p->workers[i].off = 1;
            continue;
        }
        if ((r = spawn_worker(p, i)) < 0) {
            snprintf(p->error, sizeof(p->error), "cannot start worker %d: "
                     "%s%s", i + 1, strerror(-r), r == -EAGAIN
                     ? " (too many processes for this user? RLIMIT_NPROC: "
                     "ulimit -u, systemd LimitNPROC=)" : "");
            p->failed = 1;
            fdp_pool_stop(p, 0);
            return 0;
        }
    }
    return 0;

fail:
    fdp_upgrade_abandon(p, p->error);
    if (p->sigfd >= 0) {
        fdp_close(&p->sigfd);
        release_signals(p);
    }
    service_close(p, 1);
    fdp_policy_close(p);
    fdp_loop_free(&p->loop);
    return r;
}


/*
 * --drain-delay, the end: accept what the listeners hold (until EAGAIN,
 * or until the queue is full), then close them in the same turn of the
 * loop (fdp_pool_stop), so that a connection the kernel completed just
 * before is served rather than reset. The queued ones are served by the
 * graceful stop.
 */
static void
drain_end(struct fdp_loop *loop, struct fdp_timer *t)
{
    struct fdp_pool *p = t->data;
    int i, k;

    (void) loop;
    p->draining = 2;
    for (i = 0; i < p->nlisten; i++) {
        struct fdp_listener *l = &p->listeners[i];

        for (k = 0; k < 64 && l->fd >= 0 && p->accepting; k++) {
            struct pollfd pf;

            pf.fd = l->fd;
            pf.events = POLLIN;
            pf.revents = 0;
            if (poll(&pf, 1, 0) <= 0 || !(pf.revents & POLLIN)) {
                break;
            }
            fdp_dispatch_listener_io(&p->loop, &l->io, EPOLLIN);
        }
    }
    fdp_log(FDP_LOG_INFO, 0, "drain delay over: listeners closed");
    fdp_pool_stop(p, 1);
}


/*
 * --drain-delay, the start of a graceful stop: report stopping (systemd
 * STOPPING=1, /healthz 503, status "stopping") but go on accepting and
 * serving for drain_delay seconds, so that a balancer's health check
 * takes the pool out before its listeners close (a connection completed
 * into a listener's queue when it closes is reset). Returns 1 when the
 * stop waits for the drain (started now or already), 0 when it goes on.
 */
static int
drain_begin(struct fdp_pool *p)
{
    if (p->draining == 1) {
        return 1;
    }
    if (p->draining || p->stopping || p->drain_delay <= 0
        || p->upgraded || p->loop.epfd < 0) {
        return 0;
    }
    p->draining = 1;
    reload_abort(p, "the pool is stopping");
    fdp_upgrade_cancel(p, "the pool is stopping");
    fdp_listen_notify(p, "STOPPING=1");
    fdp_log(FDP_LOG_INFO, 0, "stopping gracefully: reporting stopping, "
            "still accepting for %g s (--drain-delay)", p->drain_delay);
    fdp_timer_init(&p->drain_timer, drain_end, p);
    (void) fdp_timer_start(&p->loop, &p->drain_timer,
                           (uint64_t) (p->drain_delay * 1000.0));
    return 1;
}


/*
 * Begin stopping: close the listeners, tell every worker to stop within
 * the grace period, SIGKILL after it. Queued connections are served by a
 * graceful stop and closed by a fast one. Calling it again upgrades a
 * graceful stop to a fast one.
 */
void
fdp_pool_stop(struct fdp_pool *p, int graceful)
{
    double grace = graceful ? p->graceful_grace : p->grace;
    struct fdp_stop_body body;
    uint64_t now = fdp_now_ms();
    int i;

    if (!p->running || (graceful && drain_begin(p))) {
        return;
    }
    if (p->stopping && (graceful || p->stopping == 1)) {
        return;
    }
    fdp_upgrade_abandon(p, p->failed ? p->error : NULL);
    if (p->draining == 1) {
        /* A fast stop cuts a graceful stop's drain delay short. */
        p->draining = 2;
        fdp_timer_stop(&p->loop, &p->drain_timer);
    }
    reload_abort(p, "the pool is stopping");
    fdp_upgrade_cancel(p, "the pool is stopping");
    p->stopping = graceful ? 2 : 1;
    fdp_listen_close_all(p);
    fdp_dispatch_close_held(p);
    if (graceful) {
        /* Served, not closed: what waits in the accept filter, and the
         * queue, before the workers are told to stop. */
        fdp_acceptf_admit_all(p);
        fdp_dispatch_queue(p);
    }
    fdp_acceptf_close_all(p);
    if (!p->draining && !p->upgraded) {
        fdp_listen_notify(p, "STOPPING=1");
    }
    p->accepting = 0;
    if (!graceful) {
        while (p->qlen > 0) {
            fdp_dispatch_pending_close(p, &p->queue[p->qhead]);
            p->qhead = (p->qhead + 1) % FDP_QUEUE_MAX;
            p->qlen--;
        }
    }
    /* an upgrade's old master hands its clients over: theirs stay */
    body.graceful = (uint32_t) graceful | (p->upgraded ? 0 : FDP_STOP_IDLE);
    body.grace_ms = fdp_sec_ms32(grace);
    for (i = 0; i < FDP_SLOTS; i++) {
        struct fdp_worker *w = &p->workers[i];

        if (w->slot.pid <= 0) {
            continue;
        }
        if (w->ch.fd >= 0) {
            fdp_dispatch_send(p, w);
        }
        if (w->ch.fd < 0
            || fdp_chan_send(&w->ch, FDP_MSG_STOP, 0, &body, sizeof(body),
                             NULL, 0) < 0) {
            w->ordered = 1;
            worker_kill(w, SIGKILL);
        } else if (w->ch.head != NULL) {
            (void) fdp_loop_mod(&p->loop, &w->io, EPOLLIN | EPOLLOUT);
        }
        if (w->slot.state != FDP_W_NONE) {
            w->slot.state = FDP_W_EXITING;
        }
        w->kill_at = now + (uint64_t) body.grace_ms + KILL_MARGIN_MS;
    }
}


static void
pool_finish(struct fdp_pool *p)
{
    int i;

    p->running = 0;
    sched_master(p, 0);         /* pool:run() returns to the caller */
    fdp_timer_stop(&p->loop, &p->tick);
    fdp_dispatch_close_held(p);
    fdp_acceptf_close_all(p);
    for (i = 0; i < FDP_SLOTS; i++) {
        fdp_dispatch_drop_channel(p, &p->workers[i]);
    }
    service_close(p, 1);
    fdp_policy_close(p);
    fdp_close(&p->sigfd);
    release_signals(p);
    fdp_loop_free(&p->loop);
    fdp_log(p->failed ? FDP_LOG_ERROR : FDP_LOG_INFO, 0, "pool stopped%s%s",
            p->failed ? ": " : "", p->failed ? p->error : "");
}


/*
 * pool upgrade (SIGUSR2, the control socket's "upgrade"): start a new
 * master from this binary (upgrade.c). 0 (the outcome comes later), or
 * -errno with p->error set: -ESHUTDOWN stopping, else fdp_upgrade_start's.
 */
int
fdp_pool_upgrade(struct fdp_pool *p)
{
    if (!p->running || p->stopping || p->draining) {
        snprintf(p->error, sizeof(p->error), "upgrade refused: the pool is "
                 "stopping");
        return -ESHUTDOWN;
    }
    return fdp_upgrade_start(p);
}


/* The new master is READY: it accepts on the same sockets, so this one
 * only closes its copies (no connection waits in a listener of its own)
 * and stops gracefully, serving what it holds. */
static void
upgrade_handover(struct fdp_pool *p)
{
    fdp_upgrade_release(p);
    fdp_pool_stop(p, 1);
}


/*
 * Run the loop once, waiting at most timeout_ms (-1: until something
 * happens). Returns 1 while the pool runs, 0 once it has stopped (all
 * workers reaped, everything closed).
 */
int
fdp_pool_step(struct fdp_pool *p, int timeout_ms)
{
    int r;

    if (!p->running) {
        return 0;
    }
    psig_follow(p);                     /* (another pool read them) */
    if (!(p->stopping && p->nalive == 0)) {
        /* Strict prefork: the PARKs in the workers' pages first; then
         * the master says it waits, and looks once more (a worker that
         * held one meanwhile and missed the word would wait for the
         * master's next turn: the look takes it). */
        int rings = p->concurrency == 1 && !p->simulated && !p->stopping
                    && p->ring_parks;

        if (rings) {
            int n;

            for (n = 0; n < 4; n++) {
                (void) fdp_dispatch_rings(p);
                if (!fdp_dispatch_rings_wait(p, 1)) {
                    break;
                }
                (void) fdp_dispatch_rings_wait(p, 0);
            }
            if (n == 4) {
                timeout_ms = 0;
            }
        }
        r = fdp_loop_run_once(&p->loop, timeout_ms);
        if (rings) {
            (void) fdp_dispatch_rings_wait(p, 0);
        }
        if (r < 0) {
            fdp_log(FDP_LOG_ERROR, -r, "epoll_wait() failed");
            fdp_pool_stop(p, 0);
        }
        if (p->qlen > 0) {
            /* Connections wait: workers on demand start now, not at
             * the next tick. */
            (void) ondemand_grow(p, fdp_now_ms());
        }
        psig_follow(p);
        if ((p->stopping && p->nalive > 0) || p->sigchld_seen != sigchld_gen) {
            p->sigchld_seen = sigchld_gen;  /* (another pool read it) */
            reap(p);
            fdp_upgrade_poll(p);
        }
        if (p->upgrade_state == FDP_UP_READY) {
            upgrade_handover(p);
        }
    }
    if (p->stopping && p->nalive == 0) {
        pool_finish(p);
        return 0;
    }
    return 1;
}


void
fdp_pool_status_info(struct fdp_pool *p, struct fdp_status_info *info,
                     const char **listen)
{
    int i;

    memset(info, 0, sizeof(*info));
    info->pid = p->owner;
    info->state = p->stopping || p->draining ? "stopping"
                  : p->upgrade_fd >= 0 ? "upgrading" : "running";
    info->policy = fdp_policy_name(p);
    for (i = 0; i < p->nlisten; i++) {
        /* The real address (port 0 resolved), or a systemd socket's name. */
        listen[i] = p->listeners[i].named ? p->listeners[i].addr
                                          : p->listeners[i].bound;
    }
    info->listen = listen;
    info->nlisten = p->nlisten;
    info->accepted = p->accepted;
    info->queued = (uint64_t) p->qlen;
    info->parked = (uint64_t) p->nparked;
    info->fallbacks = p->fallbacks;
    info->started = p->started_at;
    info->generation = p->generation;
    info->closed_by_peer = p->closed_by_peer;
    info->offers = p->offers;
    info->offers_back = p->offers_back;
    info->crash_streak = p->crash_streak;
    info->crash_why = p->crash_streak > 0 ? p->crash_why : NULL;
    info->reload_refused = p->reload_refused[0] ? p->reload_refused : NULL;
    info->lat_counts = p->lat_counts;
    info->lat_sum = p->lat_sum;
    info->lat_count = p->lat_count;
    info->pending = (uint64_t) fdp_acceptf_pending(p);
    memcpy(info->closed, p->af_closed, sizeof(info->closed));
    info->workers_min = p->max_workers ? p->min_workers : p->nworkers;
    info->workers_max = p->max_workers ? p->max_workers : p->nworkers;
    info->scaled = p->scaled_why[0] ? p->scaled_why : NULL;
    info->spawned = p->spawned_demand;
    info->retired_idle = p->retired_idle;
    fdp_shzone_status(p, info);
}


/* Resident memory of pid in bytes (/proc/PID/statm), 0 if unknown. */
static uint64_t
rss_bytes(pid_t pid)
{
    char path[64], buf[128];
    unsigned long long size, res;
    long page = sysconf(_SC_PAGESIZE);
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%ld/statm", (long) pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    fdp_close(&fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &res) != 2 || page <= 0) {
        return 0;
    }
    return (uint64_t) res * (uint64_t) page;
}


/*
 * The status snapshot, taken in this one place for every rendering: a
 * copy of the worker table (with each worker's resident memory when
 * with_rss) and the pool-wide figures with the time (listen must hold
 * FDP_MAX_LISTEN entries). Returns the copy (p->nworkers slots, free()
 * it) or NULL when out of memory.
 */
struct fdp_slot *
fdp_pool_snapshot(struct fdp_pool *p, struct fdp_status_info *info,
                  const char **listen, int with_rss)
{
    struct fdp_slot *slots;
    int i, n = p->nworkers;

    for (i = p->nworkers; i < FDP_SLOTS; i++) {
        n += p->workers[i].slot.pid > 0;
    }
    slots = calloc(n > 0 ? (size_t) n : 1, sizeof(*slots));
    if (slots == NULL) {
        return NULL;
    }
    for (i = 0; i < p->nworkers; i++) {
        slots[i] = p->workers[i].slot;
        if (with_rss && slots[i].pid > 0 && slots[i].state != FDP_W_NONE) {
            slots[i].rss = rss_bytes(slots[i].pid);
        }
    }
    fdp_pool_status_info(p, info, listen);
    /* After the table: the processes outside it (retiring, pending). */
    info->others = slots + p->nworkers;
    for (i = p->nworkers; i < FDP_SLOTS && info->nothers < n - p->nworkers;
         i++) {
        if (p->workers[i].slot.pid > 0) {
            slots[p->nworkers + info->nothers++] = p->workers[i].slot;
        }
    }
    info->now = fdp_wall();
    return slots;
}


/* The snapshot rendered into b in format (an fdp_status_format). 0, or
 * -ENOMEM when the copy cannot be made (nothing written); b->oom tells
 * of a rendering that ran out. */
int
fdp_pool_status(struct fdp_pool *p, struct fdp_buf *b, int format,
                int with_rss)
{
    struct fdp_status_info info;
    const char *listen[FDP_MAX_LISTEN];
    struct fdp_slot *slots = fdp_pool_snapshot(p, &info, listen, with_rss);

    if (slots == NULL) {
        return -ENOMEM;
    }
    fdp_status_render(b, format, &info, slots, p->nworkers);
    free(slots);
    return 0;
}


/* ---- --cpu-affinity ---------------------------------------------------- */

/*
 * "auto": slot i on the i-th CPU (modulo their number) of the mask the
 * pool inherited, so a pool started under taskset stays inside it; or a
 * LIST of CPUs and ranges ("0,2-3"), each of which must be in that mask.
 */
int
fdp_pool_set_affinity(struct fdp_pool *p, const char *spec, char *err,
                      size_t errlen)
{
    cpu_set_t mask;
    const char *s = spec;
    int n = 0, i;

    p->ncpus = 0;
    if (spec == NULL || strcmp(spec, "none") == 0) {
        return 0;
    }
    if (sched_getaffinity(0, sizeof(mask), &mask) < 0) {
        snprintf(err, errlen, "--cpu-affinity: sched_getaffinity() failed: %s",
                 strerror(errno));
        return -errno;
    }
    if (strcmp(spec, "auto") == 0) {
        for (i = 0; i < CPU_SETSIZE && n < FDP_MAX_WORKERS; i++) {
            if (CPU_ISSET(i, &mask)) {
                p->cpus[n++] = i;
            }
        }
        p->ncpus = n;
        return n > 0 ? 0 : -EINVAL;
    }
    while (*s) {
        char *end;
        long a, b;

        if (*s < '0' || *s > '9') {
            goto bad;
        }
        a = strtol(s, &end, 10);
        b = a;
        if (*end == '-') {
            s = end + 1;
            if (*s < '0' || *s > '9') {
                goto bad;
            }
            b = strtol(s, &end, 10);
        }
        if (a < 0 || b < a || b >= CPU_SETSIZE) {
            goto bad;
        }
        for (i = (int) a; i <= (int) b; i++) {
            if (!CPU_ISSET(i, &mask)) {
                snprintf(err, errlen, "--cpu-affinity '%s': CPU %d is not "
                         "one this process may run on", spec, i);
                return -EINVAL;
            }
            if (n < FDP_MAX_WORKERS) {
                p->cpus[n++] = i;
            }
        }
        s = end;
        if (*s == ',') {
            s++;
            if (*s == '\0') {
                goto bad;
            }
        } else if (*s != '\0') {
            goto bad;
        }
    }
    if (n == 0) {
        goto bad;
    }
    p->ncpus = n;
    return 0;

bad:
    snprintf(err, errlen, "--cpu-affinity must be auto or a list of CPUs "
             "such as 0,2-3 (got '%s')", spec);
    return -EINVAL;
}


int
fdp_pool_cpu_of(const struct fdp_pool *p, int i)
{
    return p->ncpus > 0 && i >= 0 ? p->cpus[i % p->ncpus] : -1;
}


int
fdp_pool_pin(const struct fdp_pool *p, int i)
{
    cpu_set_t set;
    int cpu = fdp_pool_cpu_of(p, i);

    if (cpu < 0) {
        return 0;
    }
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
}
