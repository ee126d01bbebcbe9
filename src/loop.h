/*
 * loop.h - a small epoll loop: fd watchers with callbacks and one-shot
 * timers in a binary heap (millisecond resolution, monotonic clock).
 * Owns the epoll fd only; watched fds belong to their users.
 */
#ifndef FDP_LOOP_H
#define FDP_LOOP_H

#include <stddef.h>
#include <stdint.h>

struct fdp_loop;
struct fdp_io;
struct fdp_timer;

typedef void (*fdp_io_cb)(struct fdp_loop *loop, struct fdp_io *io,
                          uint32_t events);
typedef void (*fdp_timer_cb)(struct fdp_loop *loop, struct fdp_timer *t);

struct fdp_io {
    int fd;
    uint32_t events;
    uint32_t seq;           /* registration number, guards stale events */
    fdp_io_cb cb;
    void *data;
};

struct fdp_timer {
    uint64_t when;          /* monotonic ms */
    size_t slot;            /* index in the heap, or (size_t)-1 */
    fdp_timer_cb cb;
    void *data;
};

struct fdp_loop {
    int epfd;
    int stop;
    uint64_t now;           /* ms, refreshed before timers and callbacks */
    struct fdp_io **ios;    /* indexed by fd: who watches it now */
    size_t nios;
    uint32_t seq;
    struct fdp_timer **heap;
    size_t nheap;
    size_t capheap;
};

int fdp_loop_init(struct fdp_loop *loop);
void fdp_loop_free(struct fdp_loop *loop);
int fdp_loop_add(struct fdp_loop *loop, struct fdp_io *io, uint32_t events);
int fdp_loop_mod(struct fdp_loop *loop, struct fdp_io *io, uint32_t events);
int fdp_loop_del(struct fdp_loop *loop, struct fdp_io *io);
void fdp_loop_forget(struct fdp_loop *loop, struct fdp_io *io);
/* Hand from's registration (fd, events, number) to `to`, whose cb the
 * loop calls from now on; no syscall. from is left unregistered. */
void fdp_loop_move(struct fdp_loop *loop, struct fdp_io *from,
                   struct fdp_io *to);
void fdp_timer_init(struct fdp_timer *t, fdp_timer_cb cb, void *data);
int fdp_timer_start(struct fdp_loop *loop, struct fdp_timer *t, uint64_t ms);
void fdp_timer_stop(struct fdp_loop *loop, struct fdp_timer *t);
int fdp_timer_active(const struct fdp_timer *t);
int fdp_loop_run_once(struct fdp_loop *loop, int max_wait_ms);
int fdp_loop_run(struct fdp_loop *loop);

#endif
