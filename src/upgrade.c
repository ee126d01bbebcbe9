/*
 * upgrade.c - binary upgrade, nginx's way: the master forks and execs its
 * own binary (the path /proc/self/exe named at start) with the same
 * command line, handing the new master its listening sockets, the
 * control socket (and its lock) and the --metrics listener as systemd
 * would (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), plus a pipe to say
 * READY on. The new master adopts them, starts its workers and accepts
 * only once they are READY; then the old one stops accepting, tells
 * systemd MAINPID=, drains its workers and exits without unlinking what
 * it handed over. A new master that fails (exec, exit, no READY in
 * time) is stopped and the old one goes on. Owns the ready pipe's ends.
 */
#include "fdp.h"
#include "pool.h"
#include "listen.h"
#include "dispatch.h"
#include "upgrade.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define UPGRADE_TIMEOUT_MS  60000
#define UP_FD_MAX           (FDP_MAX_LISTEN + 4 + FDP_MAX_SHARED)


/* One line of text: newlines become spaces, none at the end. */
static void
one_line(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'
                     || s[n - 1] == ' ')) {
        s[--n] = '\0';
    }
    for (; *s; s++) {
        if (*s == '\n' || *s == '\r') {
            *s = ' ';
        }
    }
}


/* Still waiting for the new master's word (READY, ERR or its exit). */
static int
starting(const struct fdp_pool *p)
{
    return p->upgrade_pid > 0 && !p->upgraded
           && (p->upgrade_fd >= 0 || p->upgrade_state == FDP_UP_FAILED);
}


/*
 * The new master failed: stop it (SIGTERM, SIGKILL a second later; it
 * never accepted, so nothing is lost), log and answer why, and go on.
 * Its exit is reaped by fdp_upgrade_poll.
 */
static void
up_refuse(struct fdp_pool *p, const char *why)
{
    char text[sizeof(p->error)];

    snprintf(text, sizeof(text), "upgrade refused, this master (pid %ld) "
             "goes on serving: %s", (long) getpid(), why);
    one_line(text);
    if (p->upgrade_fd >= 0) {
        (void) fdp_loop_del(&p->loop, &p->upgrade_io);
        fdp_close(&p->upgrade_fd);
    }
    if (p->upgrade_pid > 0 && p->upgrade_kill_at == 0) {
        (void) kill(p->upgrade_pid, SIGTERM);
        p->upgrade_kill_at = fdp_now_ms() + 1000;
    }
    p->upgrade_state = FDP_UP_NONE;
    fdp_log(FDP_LOG_ERROR, 0, "%s", text);
    fdp_listen_notify(p, "READY=1\nSTATUS=upgrade refused, master pid %ld "
                      "serving", (long) getpid());
    if (p->service != NULL) {
        p->service->reload_done(p, 0, text);
    }
}


/* How a wait status reads in a sentence. */
static void
describe_exit(int st, char *out, size_t n)
{
    if (WIFSIGNALED(st)) {
        snprintf(out, n, "was killed by %s", fdp_signame(WTERMSIG(st)));
    } else {
        snprintf(out, n, "exited with code %d", WEXITSTATUS(st));
    }
}


/* The ready pipe: "READY pid", "ERR why", or EOF (it is exiting: the
 * exit status, reaped on SIGCHLD, says how; a process that closed the
 * pipe and lives on gets 2 s). Returns 1 when the pipe said something
 * or closed, 0 when it had nothing to read. */
static int
up_read(struct fdp_pool *p)
{
    char buf[1100], why[1200];
    ssize_t n;

    n = read(p->upgrade_fd, buf, sizeof(buf) - 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return 0;
    }
    if (n > 0) {
        buf[n] = '\0';
        one_line(buf);
        if (strncmp(buf, "READY", 5) == 0) {
            (void) fdp_loop_del(&p->loop, &p->upgrade_io);
            fdp_close(&p->upgrade_fd);
            p->upgrade_state = FDP_UP_READY;     /* pool.c hands over */
            return 1;
        }
        if (strncmp(buf, "ERR ", 4) == 0) {
            snprintf(why, sizeof(why), "the new master (pid %ld) cannot "
                     "start: %s", (long) p->upgrade_pid, buf + 4);
            up_refuse(p, why);
            return 1;
        }
    }
    (void) fdp_loop_del(&p->loop, &p->upgrade_io);
    fdp_close(&p->upgrade_fd);
    p->upgrade_state = FDP_UP_FAILED;
    p->upgrade_deadline = fdp_now_ms() + 2000;
    return 1;
}


static void
up_io(struct fdp_loop *loop, struct fdp_io *io, uint32_t ev)
{
    (void) loop;
    (void) ev;
    (void) up_read(io->data);
}


/*
 * The child, between fork and exec: the handed-over fds go to 3, 4, ...
 * in order (copied above them first, so none is overwritten before it
 * is moved), without CLOEXEC; the environment says what they are; the
 * signal mask is the one the master started with. Never returns.
 */
static void
up_exec(struct fdp_pool *p, const int *fds, int n, const char *names,
        const char *spec)
{
    int hi[UP_FD_MAX], i, moved = 0, e;
    char num[32], msg[600];

    (void) sigprocmask(SIG_SETMASK, &p->oldmask, NULL);
    for (i = 0; i < n; i++) {
        hi[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3 + n);
        if (hi[i] < 0) {
            goto fail;
        }
    }
    for (i = 0; i < n; i++) {
        if (dup2(hi[i], 3 + i) < 0) {     /* dup2 leaves CLOEXEC off */
            goto fail;
        }
    }
    moved = 1;
    snprintf(num, sizeof(num), "%ld", (long) getpid());
    (void) setenv("LISTEN_PID", num, 1);
    snprintf(num, sizeof(num), "%d", n);
    (void) setenv("LISTEN_FDS", num, 1);
    (void) setenv("LISTEN_FDNAMES", names, 1);
    (void) setenv("FDPOOL_UPGRADE", spec, 1);
    if (p->notify_path[0]) {
        (void) setenv("NOTIFY_SOCKET", p->notify_path, 1);
    }
    execv(p->exe, p->exec_argv);

fail:
    e = errno;
    snprintf(msg, sizeof(msg), "ERR cannot execute %s (%s)\n", p->exe,
             strerror(e));
    (void) write(moved ? 3 + n - 1 : fds[n - 1], msg, strlen(msg));
    _exit(127);
}


/*
 * Start a new master (see the top of the file). Returns 0 (the outcome
 * comes later: logged, told to p->service's reload_done, and READY is
 * handled by pool.c), or -errno with p->error set: -EOPNOTSUPP a pool
 * made by fdpool.pool{} (nothing to re-execute), -EBUSY an upgrade or a
 * reload in progress, the failing call's errno (pipe, fork).
 */
int
fdp_upgrade_start(struct fdp_pool *p)
{
    char spec[FDP_MAX_LISTEN * (FDP_ADDR_MAX + 4) + 32];
    char names[UP_FD_MAX * 48];
    const char *name[UP_FD_MAX];
    char zname[FDP_MAX_SHARED][48];
    int fds[UP_FD_MAX], svc[3] = { -1, -1, -1 }, pfd[2], nfd = 0, i, r;
    size_t off;
    pid_t pid;

    if (p->exec_argv == NULL || p->exe == NULL) {
        snprintf(p->error, sizeof(p->error), "upgrade refused: this pool "
                 "was made by fdpool.pool{} in a Lua program, which "
                 "cannot be re-executed; only `pool run` upgrades "
                 "(restart the program instead)");
        return -EOPNOTSUPP;
    }
    if (p->ready_fd >= 0) {
        snprintf(p->error, sizeof(p->error), "upgrade refused: this master "
                 "is itself an upgrade still starting (from pid %ld)",
                 (long) p->upgraded_from);
        return -EBUSY;
    }
    if (p->upgrade_pid > 0) {
        snprintf(p->error, sizeof(p->error), "upgrade refused: %s (pid "
                 "%ld)", p->upgraded ? "this master has handed over to a "
                 "new master" : "a new master is still starting or "
                 "stopping", (long) p->upgrade_pid);
        return -EBUSY;
    }
    if (p->reload_gen) {
        snprintf(p->error, sizeof(p->error), "upgrade refused: a reload is "
                 "in progress (generation %d starting); try again when it "
                 "is done", p->reload_gen);
        return -EBUSY;
    }
    off = (size_t) snprintf(spec, sizeof(spec), "%ld\n", (long) getpid());
    for (i = 0; i < p->nlisten; i++) {
        const struct fdp_listener *l = &p->listeners[i];

        if (l->fd < 0) {
            continue;
        }
        off += (size_t) snprintf(spec + off, sizeof(spec) - off, "%d\t%s\n",
                                 l->named, l->addr);
        name[nfd] = "fdpool-listen";
        fds[nfd++] = l->fd;
    }
    if (p->service != NULL && p->service->upgrade != NULL) {
        static const char *const svcname[3] = { "fdpool-control",
                                                "fdpool-lock",
                                                "fdpool-metrics" };

        p->service->upgrade(p, FDP_SVC_FDS, svc);
        for (i = 0; i < 3; i++) {
            if (svc[i] >= 0) {
                name[nfd] = svcname[i];
                fds[nfd++] = svc[i];
            }
        }
    }
    /* The shared dictionaries' memfds: the new master maps them (the
     * entries go on) instead of making fresh ones. */
    for (i = 0; i < p->nshared; i++) {
        if (p->shared[i].fd >= 0) {
            snprintf(zname[i], sizeof(zname[i]), "fdpool-shared-%s",
                     p->shared[i].name);
            name[nfd] = zname[i];
            fds[nfd++] = p->shared[i].fd;
        }
    }
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        r = -errno;
        snprintf(p->error, sizeof(p->error), "upgrade refused: pipe() "
                 "failed (%s)", strerror(-r));
        return r;
    }
    name[nfd] = "fdpool-ready";
    fds[nfd++] = pfd[1];
    names[0] = '\0';
    for (i = 0, off = 0; i < nfd; i++) {
        off += (size_t) snprintf(names + off, sizeof(names) - off, "%s%s",
                                 i ? ":" : "", name[i]);
    }
    pid = fork();
    if (pid < 0) {
        r = -errno;
        snprintf(p->error, sizeof(p->error), "upgrade refused: fork() "
                 "failed (%s)", strerror(-r));
        fdp_close(&pfd[0]);
        fdp_close(&pfd[1]);
        return r;
    }
    if (pid == 0) {
        if (p->sched_batch) {
            struct sched_param sp = { 0 };

            /* The new master chooses its own (pool.c's sched_master). */
            (void) sched_setscheduler(0, SCHED_OTHER, &sp);
        }
        up_exec(p, fds, nfd, names, spec);
    }
    fdp_close(&pfd[1]);
    (void) fdp_set_nonblock(pfd[0], 1);
    p->upgrade_fd = pfd[0];
    p->upgrade_io.fd = pfd[0];
    p->upgrade_io.cb = up_io;
    p->upgrade_io.data = p;
    (void) fdp_loop_add(&p->loop, &p->upgrade_io, EPOLLIN);
    p->upgrade_pid = pid;
    p->upgrade_state = FDP_UP_NONE;
    p->upgrade_kill_at = 0;
    p->upgrade_deadline = fdp_now_ms() + UPGRADE_TIMEOUT_MS;
    fdp_log(FDP_LOG_INFO, 0, "upgrading: new master (pid %ld) starting "
            "from %s", (long) pid, p->exe);
    fdp_listen_notify(p, "RELOADING=1\nMONOTONIC_USEC=%llu",
                      (unsigned long long) fdp_now_us());
    return 0;
}


/* The old master stops (or drains) while a new master is starting: that
 * one is stopped, as a failed one is. */
void
fdp_upgrade_cancel(struct fdp_pool *p, const char *why)
{
    if (starting(p)) {
        up_refuse(p, why);
    }
}


/* The old master, on SIGCHLD and each tick: reap the new master when it
 * exits (a failure while it was starting), its deadline, its SIGKILL. */
void
fdp_upgrade_poll(struct fdp_pool *p)
{
    char how[64], why[160];
    uint64_t now;
    pid_t r;
    int st = 0;

    if (p->upgrade_pid <= 0) {
        return;
    }
    do {
        r = waitpid(p->upgrade_pid, &st, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == p->upgrade_pid || (r < 0 && errno == ECHILD)) {
        describe_exit(st, how, sizeof(how));
        if (p->upgrade_fd >= 0 && !p->upgraded) {
            /* Its last word (why it could not start) may still be in
             * the pipe: SIGCHLD can come first. */
            p->upgrade_kill_at = 1;         /* gone: nothing to kill */
            (void) up_read(p);
        }
        if (p->upgrade_state == FDP_UP_READY) {
            snprintf(why, sizeof(why), "the new master (pid %ld) %s just "
                     "after it was ready", (long) p->upgrade_pid, how);
            p->upgrade_kill_at = 1;
            up_refuse(p, why);
        } else if (starting(p)) {
            snprintf(why, sizeof(why), "the new master (pid %ld) %s before "
                     "it was ready", (long) p->upgrade_pid, how);
            p->upgrade_kill_at = 1;         /* gone: nothing to kill */
            up_refuse(p, why);
        } else {
            /* A refused one, or (handed over) the new master stopped. */
            fdp_log(p->upgraded ? FDP_LOG_INFO : FDP_LOG_DEBUG, 0,
                    "%s master (pid %ld) %s", p->upgraded ? "the new"
                    : "the refused", (long) p->upgrade_pid, how);
        }
        p->upgrade_pid = 0;
        p->upgrade_kill_at = 0;
        p->upgrade_state = FDP_UP_NONE;
        return;
    }
    now = fdp_now_ms();
    if (starting(p) && now >= p->upgrade_deadline) {
        snprintf(why, sizeof(why), "the new master (pid %ld) was not ready "
                 "within %d s", (long) p->upgrade_pid,
                 UPGRADE_TIMEOUT_MS / 1000);
        if (p->upgrade_state == FDP_UP_FAILED) {
            snprintf(why, sizeof(why), "the new master (pid %ld) closed its "
                     "ready pipe before it was ready", (long) p->upgrade_pid);
        }
        up_refuse(p, why);
        p->upgrade_deadline = UINT64_MAX;
    }
    if (p->upgrade_kill_at > 1 && now >= p->upgrade_kill_at && !p->upgraded) {
        (void) kill(p->upgrade_pid, SIGKILL);
        p->upgrade_kill_at = 1;
    }
}


/*
 * The new master is READY: hand over. Listeners keep their unix socket
 * files (the new master owns them now; this one only closes its copies,
 * in fdp_pool_stop), the control socket and --metrics too; systemd is
 * told the new main pid; the client of `pool upgrade` is answered. The
 * caller (pool.c) then stops gracefully.
 */
void
fdp_upgrade_release(struct fdp_pool *p)
{
    char text[200];
    int i;

    for (i = 0; i < p->nlisten; i++) {
        free(p->listeners[i].unix_path);
        p->listeners[i].unix_path = NULL;
    }
    if (p->service != NULL && p->service->upgrade != NULL) {
        p->service->upgrade(p, FDP_SVC_RELEASE, NULL);
    }
    p->upgraded = 1;
    p->upgrade_state = FDP_UP_NONE;
    fdp_listen_notify(p, "MAINPID=%ld\nREADY=1\nSTATUS=upgraded: master "
                      "pid %ld serving", (long) p->upgrade_pid,
                      (long) p->upgrade_pid);
    snprintf(text, sizeof(text), "upgraded: master pid %ld serving; pid %ld "
             "drains its workers and exits", (long) p->upgrade_pid,
             (long) getpid());
    fdp_log(FDP_LOG_INFO, 0, "%s", text);
    if (p->service != NULL) {
        p->service->reload_done(p, 1, text);
    }
}


/*
 * The new master, before its listeners: adopt what the old one handed
 * over (FDPOOL_UPGRADE with LISTEN_PID = this pid). Listeners keep the
 * options their --listen string gave them; they are watched only from
 * READY on (p->accept_held). Returns the number of listeners adopted (0:
 * no upgrade), or -errno with p->error set.
 */
int
fdp_upgrade_adopt(struct fdp_pool *p)
{
    const char *env = getenv("FDPOOL_UPGRADE"), *spid = getenv("LISTEN_PID");
    const char *sfds = getenv("LISTEN_FDS"), *snames = getenv("LISTEN_FDNAMES");
    char spec[FDP_MAX_LISTEN * (FDP_ADDR_MAX + 4) + 32], names[UP_FD_MAX * 48];
    char *ssave = NULL, *nsave = NULL, *line, *name;
    long n, i, nl = 0;
    int r = 0;

    if (env == NULL) {
        return 0;
    }
    if (spid == NULL || sfds == NULL || strtol(spid, NULL, 10) != getpid()) {
        (void) unsetenv("FDPOOL_UPGRADE");
        return 0;
    }
    n = strtol(sfds, NULL, 10);
    if (n < 1 || n > UP_FD_MAX) {
        snprintf(p->error, sizeof(p->error), "upgrade: LISTEN_FDS=%s out of "
                 "range", sfds);
        return -EINVAL;
    }
    snprintf(spec, sizeof(spec), "%s", env);
    snprintf(names, sizeof(names), "%s", snames ? snames : "");
    line = strtok_r(spec, "\n", &ssave);
    p->upgraded_from = line ? (pid_t) strtol(line, NULL, 10) : 0;
    name = strtok_r(names, ":", &nsave);
    for (i = 0; i < n && r == 0; i++, name = strtok_r(NULL, ":", &nsave)) {
        int fd = 3 + (int) i;

        (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
        if (name && strcmp(name, "fdpool-listen") == 0
            && (line = strtok_r(NULL, "\n", &ssave)) != NULL
            && (line[0] == '0' || line[0] == '1') && line[1] == '\t') {
            r = fdp_pool_add_fd(p, fd, line[0] == '1' ? line + 2 : NULL);
            if (r == 0 && line[0] == '0') {
                r = fdp_listen_options(p, &p->listeners[p->nlisten - 1],
                                       line + 2);
            }
            nl += r == 0;
        } else if (name && strcmp(name, "fdpool-control") == 0) {
            p->inherit_ctl_fd = fd;
        } else if (name && strcmp(name, "fdpool-lock") == 0) {
            p->inherit_lock_fd = fd;
        } else if (name && strcmp(name, "fdpool-metrics") == 0) {
            p->inherit_metrics_fd = fd;
        } else if (name && strcmp(name, "fdpool-ready") == 0) {
            p->ready_fd = fd;
        } else if (name && strncmp(name, "fdpool-shared-", 14) == 0) {
            fdp_shzone_adopt(p, name + 14, fd);
        } else {
            snprintf(p->error, sizeof(p->error), "upgrade: unexpected fd %d "
                     "(%s)", fd, name ? name : "no name");
            r = -EINVAL;
        }
    }
    (void) unsetenv("LISTEN_PID");
    (void) unsetenv("LISTEN_FDS");
    (void) unsetenv("LISTEN_FDNAMES");
    (void) unsetenv("FDPOOL_UPGRADE");
    if (r < 0) {
        return r;
    }
    if (nl == 0) {
        snprintf(p->error, sizeof(p->error), "upgrade: no listener handed "
                 "over");
        return -EINVAL;
    }
    p->accept_held = 1;
    fdp_log(FDP_LOG_INFO, 0, "upgrade: took over %ld listener(s) from master "
            "pid %ld; accepting once the workers are ready", nl,
            (long) p->upgraded_from);
    return (int) nl;
}


/* The new master's first generation is READY: own the unix socket files
 * from now on, accept, and tell the old master. */
void
fdp_upgrade_ready(struct fdp_pool *p)
{
    char msg[64];
    int i;

    if (p->ready_fd < 0) {
        return;
    }
    for (i = 0; i < p->nlisten; i++) {
        struct fdp_listener *l = &p->listeners[i];
        struct sockaddr_un un;
        socklen_t len = sizeof(un);

        if (l->named || l->unix_path != NULL
            || getsockname(l->fd, (struct sockaddr *) &un, &len) < 0
            || un.sun_family != AF_UNIX || len <= sizeof(sa_family_t)
            || un.sun_path[0] == '\0') {
            continue;
        }
        un.sun_path[sizeof(un.sun_path) - 1] = '\0';
        l->unix_path = strdup(un.sun_path);
        if (l->unix_path != NULL) {
            (void) fdp_path_identity(l->unix_path, &l->path_dev,
                                     &l->path_ino);
        }
    }
    for (i = 0; i < p->ndropped; i++) {
        fdp_unlink_own(p->dropped[i], p->dropped_id[i][0],
                       p->dropped_id[i][1]);
    }
    if (p->service != NULL && p->service->upgrade != NULL) {
        p->service->upgrade(p, FDP_SVC_RESUME, NULL);
    }
    p->accept_held = 0;
    fdp_dispatch_accepting(p, 1);
    snprintf(msg, sizeof(msg), "READY %ld\n", (long) getpid());
    (void) write(p->ready_fd, msg, strlen(msg));
    fdp_close(&p->ready_fd);
    fdp_log(FDP_LOG_INFO, 0, "upgrade: workers ready, accepting; master pid "
            "%ld hands over", (long) p->upgraded_from);
}


/* The new master stops before READY: tell the old one why (it goes on).
 * Nothing to unlink: the files are owned only from READY on. */
void
fdp_upgrade_abandon(struct fdp_pool *p, const char *why)
{
    char msg[1100];

    if (p->ready_fd < 0) {
        return;
    }
    snprintf(msg, sizeof(msg) - 1, "ERR %s", why && *why ? why : "stopped "
             "before it was ready");
    one_line(msg);
    strcat(msg, "\n");
    (void) write(p->ready_fd, msg, strlen(msg));
    fdp_close(&p->ready_fd);
}


void
fdp_upgrade_close_in_child(struct fdp_pool *p)
{
    fdp_close(&p->upgrade_fd);
    fdp_close(&p->ready_fd);
    fdp_close(&p->inherit_ctl_fd);
    fdp_close(&p->inherit_lock_fd);
    fdp_close(&p->inherit_metrics_fd);
}
