/*
 * loop.c - epoll wrapper and timer heap. Callbacks may add, modify or
 * delete watchers and timers, including their own, while the loop runs.
 */
#include "fdp.h"
#include "loop.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define NO_SLOT ((size_t) -1)
#define MAX_EVENTS 256


int
fdp_loop_init(struct fdp_loop *loop)
{
    memset(loop, 0, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        return -errno;
    }
    loop->now = fdp_now_ms();
    return 0;
}


void
fdp_loop_free(struct fdp_loop *loop)
{
    fdp_close(&loop->epfd);
    free(loop->ios);
    loop->ios = NULL;
    loop->nios = 0;
    free(loop->heap);
    loop->heap = NULL;
    loop->nheap = loop->capheap = 0;
}


/*
 * Events carry (seq << 32 | fd), not a pointer: a watcher deleted (and
 * maybe freed) by an earlier callback of the same epoll_wait batch is
 * then simply not found, instead of being called through a dangling
 * pointer.
 */
static int
loop_ctl(struct fdp_loop *loop, int op, struct fdp_io *io, uint32_t events)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = ((uint64_t) io->seq << 32) | (uint32_t) io->fd;
    if (epoll_ctl(loop->epfd, op, io->fd, &ev) < 0) {
        return -errno;
    }
    io->events = events;
    return 0;
}


int
fdp_loop_add(struct fdp_loop *loop, struct fdp_io *io, uint32_t events)
{
    int r;

    if (io->fd < 0) {
        return -EBADF;
    }
    if ((size_t) io->fd >= loop->nios) {
        size_t n = loop->nios ? loop->nios : 64;
        struct fdp_io **a;

        while (n <= (size_t) io->fd) {
            n *= 2;
        }
        a = realloc(loop->ios, n * sizeof(*a));
        if (a == NULL) {
            return -ENOMEM;
        }
        memset(a + loop->nios, 0, (n - loop->nios) * sizeof(*a));
        loop->ios = a;
        loop->nios = n;
    }
    io->seq = ++loop->seq;
    r = loop_ctl(loop, EPOLL_CTL_ADD, io, events);
    if (r == 0) {
        loop->ios[io->fd] = io;
    }
    return r;
}


int
fdp_loop_mod(struct fdp_loop *loop, struct fdp_io *io, uint32_t events)
{
    if (io->events == events) {
        return 0;
    }
    return loop_ctl(loop, EPOLL_CTL_MOD, io, events);
}


/* Must be called before the fd is closed: a closed fd leaves the epoll
 * set by itself only if no dup of it (e.g. in another process after
 * fork) remains open, and a stale event would carry a dangling pointer. */
int
fdp_loop_del(struct fdp_loop *loop, struct fdp_io *io)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    if (io->fd >= 0 && (size_t) io->fd < loop->nios
        && loop->ios[io->fd] == io) {
        loop->ios[io->fd] = NULL;
    }
    io->events = 0;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, &ev) < 0) {
        return -errno;
    }
    return 0;
}


/* Forget a watcher whose fd is about to be closed, without a syscall:
 * closing the last reference removes it from the epoll set, and a stale
 * event (the fd was shared) no longer matches its registration number. */
void
fdp_loop_forget(struct fdp_loop *loop, struct fdp_io *io)
{
    if (io->fd >= 0 && (size_t) io->fd < loop->nios
        && loop->ios[io->fd] == io) {
        loop->ios[io->fd] = NULL;
    }
    io->events = 0;
}


/* A keep-alive connection moving between its socket and the idle pool
 * keeps its epoll registration (and edge state): only who is called
 * changes. */
void
fdp_loop_move(struct fdp_loop *loop, struct fdp_io *from, struct fdp_io *to)
{
    to->fd = from->fd;
    to->events = from->events;
    to->seq = from->seq;
    if (from->fd >= 0 && (size_t) from->fd < loop->nios
        && loop->ios[from->fd] == from) {
        loop->ios[from->fd] = to;
    }
    from->seq = 0;
    from->events = 0;
}


void
fdp_timer_init(struct fdp_timer *t, fdp_timer_cb cb, void *data)
{
    t->when = 0;
    t->slot = NO_SLOT;
    t->cb = cb;
    t->data = data;
}


int
fdp_timer_active(const struct fdp_timer *t)
{
    return t->slot != NO_SLOT;
}


static void
heap_swap(struct fdp_loop *loop, size_t a, size_t b)
{
    struct fdp_timer *t = loop->heap[a];

    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->slot = a;
    loop->heap[b]->slot = b;
}


static void
heap_up(struct fdp_loop *loop, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;

        if (loop->heap[p]->when <= loop->heap[i]->when) {
            break;
        }
        heap_swap(loop, p, i);
        i = p;
    }
}


static void
heap_down(struct fdp_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < loop->nheap && loop->heap[l]->when < loop->heap[m]->when) {
            m = l;
        }
        if (r < loop->nheap && loop->heap[r]->when < loop->heap[m]->when) {
            m = r;
        }
        if (m == i) {
            break;
        }
        heap_swap(loop, m, i);
        i = m;
    }
}


void
fdp_timer_stop(struct fdp_loop *loop, struct fdp_timer *t)
{
    size_t i = t->slot;

    if (i == NO_SLOT) {
        return;
    }
    loop->nheap--;
    if (i != loop->nheap) {
        loop->heap[i] = loop->heap[loop->nheap];
        loop->heap[i]->slot = i;
        heap_down(loop, i);
        heap_up(loop, i);
    }
    t->slot = NO_SLOT;
}


/* (Re)arm t to fire ms milliseconds from the loop's now. 0 or -ENOMEM. */
int
fdp_timer_start(struct fdp_loop *loop, struct fdp_timer *t, uint64_t ms)
{
    fdp_timer_stop(loop, t);
    if (loop->nheap == loop->capheap) {
        size_t cap = loop->capheap ? loop->capheap * 2 : 64;
        struct fdp_timer **h = realloc(loop->heap, cap * sizeof(*h));

        if (h == NULL) {
            return -ENOMEM;
        }
        loop->heap = h;
        loop->capheap = cap;
    }
    t->when = loop->now + ms;
    t->slot = loop->nheap;
    loop->heap[loop->nheap++] = t;
    heap_up(loop, t->slot);
    return 0;
}


static void
run_timers(struct fdp_loop *loop)
{
    while (loop->nheap > 0 && loop->heap[0]->when <= loop->now) {
        struct fdp_timer *t = loop->heap[0];

        fdp_timer_stop(loop, t);
        t->cb(loop, t);
    }
}


/*
 * Wait for events (at most max_wait_ms, -1 = no limit other than the
 * next timer), run their callbacks, then due timers. Returns the number
 * of fd events handled or -errno (EINTR counts as 0).
 */
int
fdp_loop_run_once(struct fdp_loop *loop, int max_wait_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    int i, n, wait = max_wait_ms;

    loop->now = fdp_now_ms();
    if (loop->nheap > 0) {
        uint64_t due = loop->heap[0]->when;
        /* A timer weeks away (a huge head_timeout, --io-timeout 1e9):
         * wait INT_MAX ms at most, never a truncated, maybe negative
         * (= forever) int that would stop the caller's tick. */
        int t = due <= loop->now ? 0 : due - loop->now > INT_MAX ? INT_MAX
                : (int) (due - loop->now);

        if (wait < 0 || t < wait) {
            wait = t;
        }
    }
    n = epoll_wait(loop->epfd, evs, MAX_EVENTS, wait);
    if (n < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    loop->now = fdp_now_ms();
    for (i = 0; i < n && !loop->stop; i++) {
        uint32_t fd = (uint32_t) evs[i].data.u64;
        uint32_t seq = (uint32_t) (evs[i].data.u64 >> 32);
        struct fdp_io *io = fd < loop->nios ? loop->ios[fd] : NULL;

        if (io != NULL && io->seq == seq) {
            io->cb(loop, io, evs[i].events);
        }
    }
    loop->now = fdp_now_ms();
    run_timers(loop);
    return n;
}


int
fdp_loop_run(struct fdp_loop *loop)
{
    int r = 0;

    loop->stop = 0;
    while (!loop->stop) {
        r = fdp_loop_run_once(loop, -1);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}
