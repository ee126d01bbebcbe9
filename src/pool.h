/*
 * pool.h - the master: listeners, workers (fork, reap, respawn), dispatch
 * through the policy, the control socket, stopping. The pool struct is
 * shared with the worker side (a forked child starts from a copy of it)
 * and with the Lua binding, which creates and configures it.
 */
#ifndef FDP_POOL_H
#define FDP_POOL_H

#include <signal.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "acceptf.h"
#include "addr.h"
#include "channel.h"
#include "loop.h"
#include "status.h"
#include "shzone.h"

#define FDP_MAX_WORKERS     256
/* Process slots: the table (at most FDP_MAX_WORKERS) plus room for a
 * reload's new generation and processes still finishing (retiring). */
#define FDP_SLOTS           (2 * FDP_MAX_WORKERS)
#define FDP_MAX_LISTEN      16
#define FDP_MAX_CONCURRENCY 65535
#define FDP_QUEUE_MAX       1024
#define FDP_TICK_MS         100     /* the master's tick */
#define FDP_SPAWN_RATE_MAX  32      /* on-demand starts per tick, at most */
#define FDP_IDLE_TIMEOUT    10.0    /* --worker-idle-timeout default */
/* The value of the SIGUSR2 the master sends with sigqueue for --slow
 * (task.h's FDP_SIG_SLOW: the worker logs, the handler goes on). */
#define FDP_SIG_SLOW_VALUE  1
#define FDP_SIG_START_VALUE 2       /* past --start-timeout: raise where the
                                     * top level or init runs */

struct lua_State;
struct fdp_pool;
struct fdp_policy;

struct fdp_listener {
    int fd;
    int proxy;                      /* expects a PROXY protocol header */
    int named;                      /* from systemd, addr is its FDNAME */
    int reuseport;
    int filter;                     /* enum fdp_af_mode; AUTO: the pool's */
    int tls;                        /* terminates TLS (the pool's certs) */
    int tcp;                        /* AF_INET or AF_INET6 */
    int defer_set;                  /* deferred is what the socket has */
    int deferred;                   /* TCP_DEFER_ACCEPT on (acceptf.c) */
    char addr[FDP_ADDR_MAX];        /* as given to --listen */
    char bound[FDP_ADDR_MAX];       /* with the real port */
    char *unix_path;                /* to unlink at stop, owner only */
    uint64_t path_dev;              /* unix_path's identity at bind: */
    uint64_t path_ino;              /* unlinked only while it is ours */
    int mode;                       /* unix: ,mode=0660 (-1: umask's) */
    long uid, gid;                  /* unix: ,owner=USER[:GROUP] (-1) */
    struct fdp_io io;
    struct fdp_pool *pool;
};

struct fdp_held;

/* A connection accepted and not yet handed to a worker. */
struct fdp_pending {
    int fd;
    struct fdp_held *kept;          /* a parked connection's record that
                                     * owns fd (dispatch.c), or NULL: fd
                                     * is this entry's own */
    int cpu;                        /* fd -1 (fdpool.sim): the CPU that
                                     * received it, -1: unknown; a real
                                     * one is asked (SO_INCOMING_CPU) */
    uint64_t since_us;              /* accepted (or woke from parking) */
    uint32_t listener;
    int proxied;                    /* peer came from a PROXY header */
    socklen_t peerlen;
    struct sockaddr_storage peer;
};

/* What the master remembers of a connection a worker has. */
struct fdp_inflight {
    uint64_t id;                    /* 0 when the entry is free */
    uint64_t since_us;
    uint64_t ino;                   /* the socket's identity, for PARK: */
    uint64_t dev;                   /* dev/ino (unix, proxied), or */
    struct sockaddr_in6 rpeer;      /* the TCP peer it was accepted from */
    int by_peer;
    uint32_t listener;
    uint32_t peerlen;               /* a PROXY header's client, or 0 */
    unsigned char peer[28];
    struct fdp_held *kept;          /* the master's copy of its socket
                                     * (parked before), or NULL */
    int escalated;                  /* 0, 1 SIGUSR2 sent, 2 SIGTERM sent */
    int offer;                      /* prefetch: j + 1 while an offer in
                                     * claim word j not seen claimed */
    uint64_t slow_at;               /* --slow: ms of the next SIGUSR2 */
};

struct fdp_worker {
    struct fdp_slot slot;           /* the public part */
    struct fdp_chan ch;
    struct fdp_io io;
    struct fdp_pool *pool;
    struct fdp_inflight *inflight;  /* capacity entries */
    uint32_t *freeidx;              /* stack of free inflight indexes */
    int nfree;
    int nbatch;                     /* CONN entries waiting to be sent */
    struct fdp_conn_entry batch[FDP_BATCH_MAX];
    int batchfds[FDP_BATCH_MAX];
    uint32_t batchkeep;             /* bit k: batchfds[k] is a kept copy */
    uint64_t spawn_at;              /* ms: respawn not before */
    uint64_t kill_at;               /* ms: SIGKILL after, 0 = no */
    uint64_t started_ms;
    int poked;                      /* told it is past --start-timeout */
    uint64_t retire_after;          /* served count that retires it, 0 no */
    int retiring;                   /* moved out of the table, stopping */
    int pending;                    /* a reload's new generation, not
                                     * in the table until all are READY */
    int ordered;                    /* the master killed it (faulty,
                                     * timeout): its death is no crash */
    int mem_over;                   /* checks in a row above max_memory */
    int ready_seen;                 /* its READY came (whatever its state
                                     * became before it: retired early) */
    int cpu_killed;                 /* terminated for holding the CPU
                                     * past --timeout (once per process) */
    /* Workers on demand (--workers MIN-MAX): a table slot left empty on
     * purpose (state "none", not respawned until demand), and when its
     * process last had a connection (ms) and its served count then. */
    int off;
    uint64_t used_ms;
    uint64_t used_served;
    int ncap;                       /* entries in inflight/freeidx: the
                                     * capacity, + prefetch */
    int prefetch;                   /* strict prefork's prefetch: the
                                     * most offers it may hold */
    struct fdp_wshared *shm;        /* strict prefork: its page shared
                                     * with the process, or NULL */
    uint64_t *claim;                /* shm->claim (prefetch), or NULL */
    int noffers;                    /* its offers not seen claimed */
    uint64_t pstate_seen;           /* shm->pstate at the last tick */
};

struct fdp_control;

/* A forked worker runs this (as ngx_spawn_process takes its proc); it
 * never returns. worker.c's fdp_worker_main. */
typedef void (*fdp_worker_main_fn)(struct fdp_pool *p, int idx);

/* A service the pool opens at start, ticks, tells a reload's outcome and
 * closes (control.c's fdp_control_service: the control socket and the
 * --metrics listener). open: 0, or -errno with err. */
struct fdp_service {
    int (*open)(struct fdp_pool *p, char *err, size_t errlen);
    void (*close)(struct fdp_pool *p, int unlink_path);
    void (*tick)(struct fdp_pool *p);
    void (*reload_done)(struct fdp_pool *p, int ok, const char *text);
    /* pool upgrade (upgrade.c), op FDP_SVC_*: FDS fills fds[3] with the
     * sockets to hand to a new master (control socket, its lock file,
     * --metrics; -1: none); RESUME (the new master, READY) starts
     * accepting on the ones it took over and owns the path; RELEASE
     * (the old master) closes its copies and forgets the path, keeping
     * its clients. */
    void (*upgrade)(struct fdp_pool *p, int op, int *fds);
};

enum { FDP_SVC_FDS, FDP_SVC_RESUME, FDP_SVC_RELEASE };

/* sched: who runs SCHED_BATCH when the pool starts as SCHED_OTHER */
enum { FDP_SCHED_MASTER, FDP_SCHED_BATCH, FDP_SCHED_OTHER };


struct fdp_pool {
    /* Configuration, set before start. Strings are owned by the pool. */
    char *script;                   /* handler file, or NULL */
    char *script_src;               /* its text as the serving generation
                                     * loaded it (read at start, reload) */
    size_t script_len;
    int handler_ref;                /* function in L, or LUA_NOREF */
    char **args;                    /* script arguments */
    int nargs;
    int nworkers;
    int concurrency;
    char *policy_name;              /* "least_conn", a path, or "function" */
    int policy_ref;                 /* function in L, or LUA_NOREF */
    char *control_path;             /* NULL: no control socket */
    int control_default;            /* make control_path at start */
    double timeout;                 /* --timeout per handler, 0: none */
    double io_timeout;              /* default conn timeout, 0: none */
    int max_requests;               /* recycle a worker after ~N, 0: no */
    uint64_t max_memory;            /* bytes per worker (Lua heap and
                                       RssAnon), 0: no limit */
    int mem_tick;                   /* ticks since the last RssAnon check */
    uint32_t user_uid;              /* --user: drop to these in workers */
    uint32_t user_gid;
    char *user_name;                /* NULL: no drop */
    double grace;                   /* seconds for a fast stop */
    double graceful_grace;          /* seconds for a graceful stop */
    int accept_filter;              /* --accept-filter, FDP_AF_AUTO */
    int max_conns_per_ip;           /* 0: no cap */
    int max_pending;                /* size of the filter's pending set */
    char **tls_cert;                /* --tls-cert/--tls-key pairs (the */
    char **tls_key;                 /* first the default, others by SNI) */
    int ntls;
    struct fdp_tls *tls;            /* loaded: the serving generation's */
    int sched_batch;                /* the master runs SCHED_BATCH for
                                     * this pool (its workers inherit it;
                                     * one of pool.c's sched_refs) */
    int sched;                      /* FDP_SCHED_*: sched = "master"
                                     * (the default), "batch", "other" */
    double slow;                    /* --slow: log handlers past it, 0 no */
    int slow_fd;                    /* --slow-log file (O_APPEND), or -1 */
    double drain_delay;             /* graceful stop: report stopping
                                     * but serve for this long first */
    double start_timeout;           /* s: a worker not READY by then is
                                     * told (SIGUSR2), then stopped */

    struct lua_State *L;            /* the state that made the pool */
    pid_t owner;                    /* pid of the master */
    int started;
    int running;
    int stopping;                   /* 0, 1 fast, 2 graceful */
    int draining;                   /* 1: a graceful stop's drain delay
                                     * (stopping reported, still
                                     * accepting), 2: over */
    struct fdp_timer drain_timer;
    int failed;                     /* first generation could not start */
    int simulated;                  /* fdpool.sim: no processes at all */
    int policy_lua;                 /* built-in policies run their Lua
                                     * files, not the C fast paths */
    int ncpus;                      /* --cpu-affinity: slot i runs on
                                     * cpus[i % ncpus]; 0: not pinned */
    int cpus[FDP_MAX_WORKERS];      /* (slots < 256: the first 256 do) */
    char error[1024];
    struct fdp_shzone shared[FDP_MAX_SHARED];   /* --shared (shzone.c) */
    int nshared;
    int ever_ready;
    int fd_room_said;           /* the open-files capacity warning, once */

    struct fdp_loop loop;
    int sigfd;
    struct fdp_io sigio;
    sigset_t oldmask;               /* the process's mask before any
                                     * running pool blocked its signals */
    unsigned sigchld_seen;          /* pool.c's sigchld_gen, reaped at */
    unsigned psig_seen[4];          /* pool.c's psig_gen (the program's
                                     * stop, graceful stop, reload and
                                     * log reopen signals), acted on at */
    struct fdp_timer tick;

    int nlisten;
    struct fdp_listener listeners[FDP_MAX_LISTEN];
    int accepting;
    uint64_t accept_paused_until;   /* ms: EMFILE back-off */
    uint64_t emfile_logged_ms;

    struct fdp_worker *workers;     /* FDP_SLOTS slots */
    int generation;
    int nalive;                     /* processes not yet reaped */

    /* Workers on demand: the table has max_workers slots (nworkers ==
     * max_workers), at least min_workers of them with a process; the
     * others are started while connections wait and no worker has room
     * (at most spawn_rate per tick, doubling to FDP_SPAWN_RATE_MAX) and
     * retired after idle_timeout seconds without a connection. 0: fixed
     * (nworkers processes). */
    int min_workers;
    int max_workers;
    double idle_timeout;
    int spawn_rate;
    uint64_t spawn_next_ms;         /* no start round before (ms) */
    uint64_t spawned_demand;        /* processes started for demand */
    uint64_t retired_idle;          /* processes retired for idleness */
    char scaled_why[96];            /* why the count changed last */
    /* --config re-read by a reload (the binding's): phase 0 reads and
     * applies the file (0, or -errno with err: the reload is refused),
     * 1 the new generation serves (keep), 2 it was refused (restore). */
    int (*reconfigure)(struct fdp_pool *p, int phase, char *err,
                       size_t errlen);
    int reconf_workers[2];          /* min, max to apply at commit */
    void *reconf_saved;             /* the binding's: what phase 2 restores */
    int reconf_ref;                 /* its Lua function, or LUA_NOREF */

    struct fdp_pending *queue;      /* ring of FDP_QUEUE_MAX */
    int qhead;
    int qlen;

    struct fdp_held *proxywait;    /* reading PROXY headers */
    struct fdp_acceptf *acceptf;    /* waiting for something to serve */
    uint64_t af_closed[FDP_AF_NREASONS];
    int notify_fd;                  /* systemd NOTIFY_SOCKET, or -1 */
    char notify_path[108];
    int notified_ready;
    struct fdp_held *parked;        /* idle connections the master holds */
    int nparked;
    int noffers;                    /* prefetch: offers not seen claimed */
    uint64_t offers, offers_back;   /* made; taken back (requeued) */
    int offer_batch;                /* offers given a worker only when
                                     * none waits there, all in one CONN
                                     * (FDPOOL_OFFERBATCH=0: off) */
    int ring_out;                   /* live processes out of the table
                                     * at the last page look (dispatch.c,
                                     * fdp_dispatch_rings) */
    int ring_parks;                 /* strict prefork: PARKs taken from
                                     * the workers' pages every turn
                                     * (FDPOOL_PARKWAKE=0: off) */
    struct fdp_held *kept;          /* every socket the master keeps a
                                     * copy of: parked, queued or served */
    uint64_t lat_counts[FDP_LAT_BUCKETS];
    double lat_sum;
    uint64_t lat_count;
    char *metrics_addr;             /* --metrics ADDR, or NULL */
    uint64_t conn_seq;
    uint64_t accepted;
    uint64_t fallbacks;
    uint64_t fallback_logged_ms;
    uint64_t fallback_unlogged;
    double started_at;
    int crash_streak;
    char crash_why[160];            /* the last crash, while streak > 0 */
    char reload_refused[256];       /* why the last reload was refused,
                                     * "" after one that served */
    uint64_t closed_by_peer;        /* died while the master held them */

    /* A reload in progress: its new generation starts in spare slots and
     * replaces the table only when every new worker is READY. */
    int reload_gen;                 /* 0: none */
    int reload_npending;
    uint64_t reload_deadline;       /* ms */
    struct fdp_policy *reload_policy;   /* the new policy, until then */
    char *reload_src;               /* the new script text, until then */
    size_t reload_len;
    int spawn_new;                  /* forking for the new generation */
    struct fdp_ready_body reload_ready; /* its READY (accept filter) */
    struct fdp_tls *reload_tls;     /* its certificates, until then */

    struct fdp_policy *policy;
    struct fdp_control *control;

    /* pool upgrade (upgrade.c). The old master: */
    char **exec_argv;               /* the command line to re-execute
                                     * (NULL: fdpool.pool{}, refused) */
    char *exe;                      /* /proc/self/exe at start */
    pid_t upgrade_pid;              /* the new master starting, or 0 */
    int upgrade_fd;                 /* its ready pipe, or -1 */
    struct fdp_io upgrade_io;
    uint64_t upgrade_deadline;      /* ms */
    uint64_t upgrade_kill_at;       /* ms: SIGKILL a refused new master */
    int upgrade_state;              /* FDP_UP_*: READY: hand over now;
                                     * FAILED: its pipe closed early */
    int upgraded;                   /* handed over: drains and exits
                                     * without unlinking anything */
    /* The new master (from FDPOOL_UPGRADE, until its first READY): */
    pid_t upgraded_from;            /* the old master, or 0 */
    int ready_fd;                   /* the pipe to say READY on, or -1 */
    int accept_held;                /* not accepting until READY */
    int inherit_ctl_fd;             /* handed-over control socket, -1 */
    int inherit_lock_fd;            /* its PATH.lock (flock held), -1 */
    int inherit_metrics_fd;         /* --metrics listener, -1 */
    int ndropped;                   /* unix socket files of listeners the
                                     * configuration no longer names: */
    char *dropped[FDP_MAX_LISTEN];  /* removed at READY (the old master
                                     * serves on them until then) */
    uint64_t dropped_id[FDP_MAX_LISTEN][2];   /* their dev, ino */

    /* The pool calls up only through these two, set by whoever creates
     * it (the Lua binding); NULL: none. */
    fdp_worker_main_fn worker_main; /* the child's main (never returns) */
    /* Where the accept filter hands a connection that is ready (set by
     * fdp_pool_new to the dispatcher: the filter sits below it). */
    void (*admit)(struct fdp_pool *p, struct fdp_pending *c);
    const struct fdp_service *service;  /* the control socket/metrics */
};

enum { FDP_UP_NONE, FDP_UP_READY, FDP_UP_FAILED };

/* pool.c */
struct fdp_pool *fdp_pool_new(void);
void fdp_pool_free(struct fdp_pool *p);
int fdp_pool_add_listen(struct fdp_pool *p, const char *addr);
int fdp_pool_add_fd(struct fdp_pool *p, int fd, const char *name);
int fdp_pool_systemd_fds(struct fdp_pool *p);
int fdp_pool_start(struct fdp_pool *p);
int fdp_pool_step(struct fdp_pool *p, int timeout_ms);
void fdp_pool_stop(struct fdp_pool *p, int graceful);
int fdp_pool_scale(struct fdp_pool *p, int n);
int fdp_pool_set_workers(struct fdp_pool *p, int min, int max);
int fdp_pool_choose(struct fdp_pool *p, const struct fdp_pending *c,
                    int *fallback);
int fdp_pool_reload(struct fdp_pool *p);
int fdp_pool_upgrade(struct fdp_pool *p);
void fdp_pool_close_in_child(struct fdp_pool *p, int keep);
void fdp_pool_status_info(struct fdp_pool *p, struct fdp_status_info *info,
                          const char **listen);
struct fdp_slot *fdp_pool_snapshot(struct fdp_pool *p,
                                   struct fdp_status_info *info,
                                   const char **listen, int with_rss);
int fdp_pool_status(struct fdp_pool *p, struct fdp_buf *b, int format,
                    int with_rss);

/* --cpu-affinity: "auto" (slot i on the i-th CPU of the mask the pool
 * inherited) or a LIST ("0,2-3"; each CPU in that mask). 0, or -EINVAL
 * with a line in err. The CPU of slot index i (-1: not pinned); pin the
 * calling process to it. */
int fdp_pool_set_affinity(struct fdp_pool *p, const char *spec, char *err,
                          size_t errlen);
int fdp_pool_cpu_of(const struct fdp_pool *p, int i);
int fdp_pool_pin(const struct fdp_pool *p, int i);

#endif
