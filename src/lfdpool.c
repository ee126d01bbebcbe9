/*
 * lfdpool.c - the Lua binding: luaopen_fdpool. Userdata types
 * "fdpool.fd" (a descriptor), "fdpool.chan" (one end of a SEQPACKET
 * socketpair that carries descriptors), "fdpool.pool" (a pool made from
 * Lua); the conn type lives in lconn.c. Misuse raises; the world failing
 * returns nil, "what: strerror", errno.
 */
#include "fdp.h"
#include "embed.h"
#include "pool.h"
#include "control.h"
#include "policy.h"
#include "worker.h"

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#define FD_MT       "fdpool.fd"
#define CHAN_MT     "fdpool.chan"
#define POOL_MT     "fdpool.pool"
#define CHAN_DATA_MAX 65536
#define CHAN_MAGIC  'F'

int fdp_pushfd(lua_State *L, int fd);
int fdp_fd_fileno(lua_State *L, int idx);

struct fdp_fd {
    int fd;
};

struct lpool {
    struct fdp_pool *p;
};


/* nil, "what: strerror", errno -- as luaL_fileresult. */
int
fdp_pushfail(lua_State *L, int err, const char *what)
{
    lua_pushnil(L);
    if (what) {
        lua_pushfstring(L, "%s: %s", what, strerror(err));
    } else {
        lua_pushstring(L, strerror(err));
    }
    lua_pushinteger(L, err);
    return 3;
}


/* ---- fdpool.fd ------------------------------------------------------ */

/* Push a new fd object owning fd. Created closed, then opened. */
int
fdp_pushfd(lua_State *L, int fd)
{
    struct fdp_fd *f = lua_newuserdatauv(L, sizeof(*f), 0);

    f->fd = -1;
    luaL_setmetatable(L, FD_MT);
    f->fd = fd;
    return 1;
}


static struct fdp_fd *
checkfd(lua_State *L, int idx)
{
    struct fdp_fd *f = luaL_checkudata(L, idx, FD_MT);

    if (f->fd < 0) {
        luaL_error(L, "attempt to use a closed fd");
    }
    return f;
}


/*
 * The descriptor number behind any fd-like value: an integer, a Lua file,
 * an fdpool fd, chan or conn. Raises for anything else or closed ones.
 */
int
fdp_fd_fileno(lua_State *L, int idx)
{
    void *u;

    if (lua_isinteger(L, idx)) {
        lua_Integer n = lua_tointeger(L, idx);

        luaL_argcheck(L, n >= 0 && n <= 0x7fffffff, idx, "invalid fd");
        return (int) n;
    }
    if ((u = luaL_testudata(L, idx, FD_MT)) != NULL
        || (u = luaL_testudata(L, idx, CHAN_MT)) != NULL) {
        int fd = ((struct fdp_fd *) u)->fd;

        if (fd < 0) {
            luaL_argerror(L, idx, "attempt to use a closed fd");
        }
        return fd;
    }
    if ((u = luaL_testudata(L, idx, "fdpool.conn")) != NULL) {
        int fd = ((struct fdp_conn *) u)->fd;

        if (fd < 0) {
            luaL_argerror(L, idx, "attempt to use a closed connection");
        }
        return fd;
    }
    if ((u = luaL_testudata(L, idx, LUA_FILEHANDLE)) != NULL) {
        luaL_Stream *s = u;

        if (s->closef == NULL || s->f == NULL) {
            luaL_argerror(L, idx, "attempt to use a closed file");
        }
        fflush(s->f);
        return fileno(s->f);
    }
    return luaL_typeerror(L, idx, "fd, file, fdpool.fd, fdpool.chan or "
                          "fdpool.conn");
}


static int
fd_fileno(lua_State *L)
{
    lua_pushinteger(L, checkfd(L, 1)->fd);
    return 1;
}


/* fd:read([n | "a" | "l"]) -> data, or nil at EOF, or nil, err, errno. */
static int
fd_read(lua_State *L)
{
    struct fdp_fd *f = checkfd(L, 1);
    luaL_Buffer b;
    ssize_t n;

    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer want = luaL_checkinteger(L, 2);
        char *p;

        luaL_argcheck(L, want >= 0, 2, "count must not be negative");
        p = luaL_buffinitsize(L, &b, (size_t) want);
        do {
            n = read(f->fd, p, (size_t) want);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            return fdp_pushfail(L, errno, "read");
        }
        if (n == 0 && want > 0) {
            lua_pushnil(L);
            return 1;
        }
        luaL_pushresultsize(&b, (size_t) n);
        return 1;
    } else {
        const char *pat = luaL_optstring(L, 2, "a");

        if (*pat == '*') {
            pat++;
        }
        luaL_argcheck(L, strcmp(pat, "a") == 0 || strcmp(pat, "l") == 0, 2,
                      "invalid format (expected a count, 'a' or 'l')");
        luaL_buffinit(L, &b);
        for (;;) {
            char c;

            if (*pat == 'a') {
                char *p = luaL_prepbuffer(&b);

                do {
                    n = read(f->fd, p, LUAL_BUFFERSIZE);
                } while (n < 0 && errno == EINTR);
                if (n < 0) {
                    return fdp_pushfail(L, errno, "read");
                }
                if (n == 0) {
                    break;
                }
                luaL_addsize(&b, (size_t) n);
                continue;
            }
            do {
                n = read(f->fd, &c, 1);
            } while (n < 0 && errno == EINTR);
            if (n < 0) {
                return fdp_pushfail(L, errno, "read");
            }
            if (n == 0) {
                if (luaL_bufflen(&b) == 0) {
                    lua_pushnil(L);
                    return 1;
                }
                break;
            }
            if (c == '\n') {
                break;
            }
            luaL_addchar(&b, c);
        }
        luaL_pushresult(&b);
        return 1;
    }
}


/* fd:write(s...) -> the fd, or nil, err, errno. */
static int
fd_write(lua_State *L)
{
    struct fdp_fd *f = checkfd(L, 1);
    int i, top = lua_gettop(L);

    for (i = 2; i <= top; i++) {
        size_t len, off = 0;
        const char *s = luaL_checklstring(L, i, &len);

        while (off < len) {
            ssize_t n = write(f->fd, s + off, len - off);

            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return fdp_pushfail(L, errno, "write");
            }
            off += (size_t) n;
        }
    }
    lua_settop(L, 1);
    return 1;
}


static int
fd_seek(lua_State *L)
{
    static const int mode[] = { SEEK_SET, SEEK_CUR, SEEK_END };
    static const char *const modenames[] = { "set", "cur", "end", NULL };
    struct fdp_fd *f = checkfd(L, 1);
    int op = luaL_checkoption(L, 2, "cur", modenames);
    lua_Integer off = luaL_optinteger(L, 3, 0);
    off_t r = lseek(f->fd, (off_t) off, mode[op]);

    if (r < 0) {
        return fdp_pushfail(L, errno, "seek");
    }
    lua_pushinteger(L, (lua_Integer) r);
    return 1;
}


static int
fd_close(lua_State *L)
{
    struct fdp_fd *f = checkfd(L, 1);

    if (close(f->fd) < 0 && errno != EINTR) {
        int err = errno;

        f->fd = -1;
        return fdp_pushfail(L, err, "close");
    }
    f->fd = -1;
    lua_pushboolean(L, 1);
    return 1;
}


/* __gc and __close for fd and chan: idempotent and silent. */
static int
fd_gc(lua_State *L)
{
    struct fdp_fd *f = lua_touserdata(L, 1);

    if (f) {
        fdp_close(&f->fd);
    }
    return 0;
}


static int
fd_tostring(lua_State *L)
{
    struct fdp_fd *f = lua_touserdata(L, 1);
    const char *name = luaL_testudata(L, 1, CHAN_MT) ? CHAN_MT : FD_MT;

    if (f->fd < 0) {
        lua_pushfstring(L, "%s (closed)", name);
    } else {
        lua_pushfstring(L, "%s (%d)", name, f->fd);
    }
    return 1;
}


/* SO_RCVTIMEO and SO_SNDTIMEO to t seconds (0: none). 0 or -1. */
static int
set_timeouts(int fd, lua_Number t)
{
    struct timeval tv;

    if (t < 0) {
        t = 0;
    }
    tv.tv_sec = (time_t) t;
    tv.tv_usec = (suseconds_t) ((t - (lua_Number) tv.tv_sec) * 1e6);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0
        || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
        return -1;
    }
    return 0;
}


static int
fd_settimeout(lua_State *L)
{
    struct fdp_fd *f = checkfd(L, 1);

    if (set_timeouts(f->fd, luaL_optnumber(L, 2, 0)) < 0) {
        return fdp_pushfail(L, errno, "setsockopt");
    }
    lua_pushboolean(L, 1);
    return 1;
}


static int
fd_shutdown(lua_State *L)
{
    struct fdp_fd *f = checkfd(L, 1);
    static const char *const opts[] = { "both", "send", "receive", NULL };
    static const int how[] = { SHUT_RDWR, SHUT_WR, SHUT_RD };
    int o = luaL_checkoption(L, 2, "both", opts);

    if (shutdown(f->fd, how[o]) < 0) {
        return fdp_pushfail(L, errno, "shutdown");
    }
    lua_pushboolean(L, 1);
    return 1;
}


/*
 * fdpool.connect(addr [, timeout]) -> fd, or nil, err, errno: a blocking
 * client socket (CLOEXEC) to HOST:PORT, [V6]:PORT or unix:PATH, with
 * timeout (seconds, default none) on connect, reads and writes.
 */
static int
l_connect(lua_State *L)
{
    const char *addr = luaL_checkstring(L, 1);
    lua_Number t = luaL_optnumber(L, 2, 0);
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    int fd;

    if (fdp_parse_addr(addr, &ss, &len, err, sizeof(err)) < 0) {
        return luaL_argerror(L, 1, err);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return fdp_pushfail(L, errno, "socket");
    }
    fdp_pushfd(L, fd);
    if (t > 0) {
        (void) set_timeouts(fd, t);
    }
    if (connect(fd, (struct sockaddr *) &ss, len) < 0) {
        int e = errno;
        struct fdp_fd *f = lua_touserdata(L, -1);

        fdp_close(&f->fd);
        lua_pushfstring(L, "connect %s", addr);
        return fdp_pushfail(L, e, lua_tostring(L, -1));
    }
    return 1;
}


/* ---- fdpool.chan ---------------------------------------------------- */

static struct fdp_fd *
checkchan(lua_State *L)
{
    struct fdp_fd *f = luaL_checkudata(L, 1, CHAN_MT);

    if (f->fd < 0) {
        luaL_error(L, "attempt to use a closed chan");
    }
    return f;
}


/*
 * fdpool.socketpair() -> chan, chan: a SOCK_SEQPACKET pair, CLOEXEC,
 * blocking, each message carrying a header byte, data and descriptors.
 */
static int
l_socketpair(lua_State *L)
{
    int sv[2];
    struct fdp_fd *a, *b;

    a = lua_newuserdatauv(L, sizeof(*a), 0);
    a->fd = -1;
    luaL_setmetatable(L, CHAN_MT);
    b = lua_newuserdatauv(L, sizeof(*b), 0);
    b->fd = -1;
    luaL_setmetatable(L, CHAN_MT);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        return fdp_pushfail(L, errno, "socketpair");
    }
    a->fd = sv[0];
    b->fd = sv[1];
    return 2;
}


static int
fileno_of(lua_State *L)
{
    lua_pushinteger(L, fdp_fd_fileno(L, 1));
    return 1;
}


/*
 * chan:sendfd(f | {f...} | nil [, data]) -> true, or nil, err, errno.
 * The descriptors are duplicated into the message: the caller keeps its
 * own and may close them.
 */
static int
chan_sendfd(lua_State *L)
{
    struct fdp_fd *ch = checkchan(L);
    int fds[FDP_MAX_FDS], nfds = 0;
    size_t len;
    const char *data = luaL_optlstring(L, 3, "", &len);
    char *msg;
    ssize_t n;

    luaL_argcheck(L, len < CHAN_DATA_MAX, 3, "data too long (at most 65535 "
                  "bytes)");
    if (lua_istable(L, 2)) {
        lua_Integer i, k = luaL_len(L, 2);

        luaL_argcheck(L, k <= FDP_MAX_FDS, 2, "too many fds in one message");
        for (i = 1; i <= k; i++) {
            lua_pushcfunction(L, fileno_of);
            lua_geti(L, 2, i);
            if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
                lua_geti(L, 2, i);
                return luaL_argerror(L, 2, lua_pushfstring(L, "fd list entry "
                                     "%d: an fd, file, fdpool.fd, fdpool.chan "
                                     "or fdpool.conn (open) expected, got %s",
                                     (int) i, luaL_typename(L, -1)));
            }
            fds[nfds++] = (int) lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
    } else if (!lua_isnoneornil(L, 2) && !(lua_isboolean(L, 2)
                                           && !lua_toboolean(L, 2))) {
        fds[nfds++] = fdp_fd_fileno(L, 2);
    }
    msg = lua_newuserdatauv(L, len + 1, 0);
    msg[0] = CHAN_MAGIC;
    memcpy(msg + 1, data, len);
    n = fdp_sendfds(ch->fd, msg, len + 1, fds, nfds);
    if (n < 0) {
        return fdp_pushfail(L, (int) -n, "sendmsg");
    }
    lua_pushboolean(L, 1);
    return 1;
}


/*
 * chan:recvfd() -> fd | false, data, more fds...; nil, "closed" at EOF;
 * nil, err, errno on failure (every fd that came is closed then).
 */
static int
chan_recvfd(lua_State *L)
{
    struct fdp_fd *ch = checkchan(L);
    int fds[FDP_MAX_FDS], nfds = FDP_MAX_FDS, i;
    char *buf = lua_newuserdatauv(L, CHAN_DATA_MAX + 1, 0);
    ssize_t n;

    n = fdp_recvfds(ch->fd, buf, CHAN_DATA_MAX + 1, fds, &nfds);
    if (n < 0) {
        return fdp_pushfail(L, (int) -n, n == -EMSGSIZE
                            ? "recvmsg (message or fds truncated)"
                            : "recvmsg");
    }
    if (n == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (buf[0] != CHAN_MAGIC) {
        for (i = 0; i < nfds; i++) {
            fdp_close(&fds[i]);
        }
        lua_pushnil(L);
        lua_pushliteral(L, "recvmsg: not an fdpool message");
        lua_pushinteger(L, EBADMSG);
        return 3;
    }
    luaL_checkstack(L, nfds + 2, "too many fds");
    if (nfds > 0) {
        fdp_pushfd(L, fds[0]);
    } else {
        lua_pushboolean(L, 0);
    }
    lua_pushlstring(L, buf + 1, (size_t) n - 1);
    for (i = 1; i < nfds; i++) {
        fdp_pushfd(L, fds[i]);
    }
    return 2 + (nfds > 1 ? nfds - 1 : 0);
}


static int
chan_close(lua_State *L)
{
    struct fdp_fd *f = checkchan(L);

    fdp_close(&f->fd);
    lua_pushboolean(L, 1);
    return 1;
}


static int
chan_fileno(lua_State *L)
{
    lua_pushinteger(L, checkchan(L)->fd);
    return 1;
}


/* ---- module functions ----------------------------------------------- */

/*
 * fdpool.open_beneath(dir, name) -> fd, size, mtime, or nil, message,
 * errno.
 * Opens name read-only strictly inside dir: no "..", absolute path or
 * symlink can leave it (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
 * only regular files.
 */
static int
l_open_beneath(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    struct open_how how;
    struct stat st;
    int dfd, fd, err;

    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        return fdp_pushfail(L, errno, dir);
    }
    memset(&how, 0, sizeof(how));
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
                  | RESOLVE_NO_MAGICLINKS;
    fd = (int) syscall(SYS_openat2, dfd, name, &how, sizeof(how));
    err = errno;
    fdp_close(&dfd);
    if (fd < 0) {
        lua_pushnil(L);
        if (err == EXDEV) {
            lua_pushliteral(L, "name escapes the directory");
        } else if (err == ELOOP) {
            lua_pushliteral(L, "symbolic link refused");
        } else {
            lua_pushstring(L, strerror(err));
        }
        lua_pushinteger(L, err);
        return 3;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        err = errno;
        fdp_close(&fd);
        lua_pushnil(L);
        lua_pushliteral(L, "not a regular file");
        lua_pushinteger(L, EISDIR);
        (void) err;
        return 3;
    }
    (void) fdp_set_nonblock(fd, 0);
    fdp_pushfd(L, fd);
    lua_pushinteger(L, (lua_Integer) st.st_size);
    lua_pushinteger(L, (lua_Integer) st.st_mtime);
    return 3;
}


static int
sleep_k(lua_State *L, int status, lua_KContext ctx)
{
    (void) L;
    (void) status;
    (void) ctx;
    return 0;
}


/* fdpool.sleep(seconds): yields the handler's coroutine; blocks outside
 * one. */
static int
l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    struct fdp_task *t = fdp_wait_task(L);

    if (s < 0) {
        s = 0;
    }
    if (t != NULL) {
        t->waiting = FDP_WAIT_SLEEP;
        t->wconn = NULL;
        t->timed_out = 0;
        (void) fdp_timer_start(&t->w->loop, &t->timer,
                               (uint64_t) (s * 1000.0 + 0.5));
        return fdp_task_yield(L, t, 0, sleep_k);
    } else {
        struct timespec ts;

        ts.tv_sec = (time_t) s;
        ts.tv_nsec = (long) ((s - (lua_Number) ts.tv_sec) * 1e9);
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
    }
    return 0;
}


/* fdpool.dup(f) -> a new fd object (CLOEXEC) on the same open file as f
 * (an integer fd, a Lua file, an fdpool fd, chan or conn), or nil, err. */
static int
l_dup(lua_State *L)
{
    int fd = fcntl(fdp_fd_fileno(L, 1), F_DUPFD_CLOEXEC, 3);

    if (fd < 0) {
        return fdp_pushfail(L, errno, "dup");
    }
    return fdp_pushfd(L, fd);
}


/* fdpool.status() -> the pool's status table (asked of the master), in a
 * handler; or nil, why. */
static int
l_status(lua_State *L)
{
    return fdp_worker_status(L);
}


static int
l_type(lua_State *L)
{
    static const char *const types[] = { FD_MT, CHAN_MT, "fdpool.conn",
                                         POOL_MT, NULL };
    int i;

    luaL_checkany(L, 1);
    for (i = 0; types[i]; i++) {
        void *u = luaL_testudata(L, 1, types[i]);

        if (u) {
            const char *name = types[i] + 7;

            if (i == 2 ? ((struct fdp_conn *) u)->fd < 0
                : i < 2 ? ((struct fdp_fd *) u)->fd < 0 : 0) {
                lua_pushfstring(L, "closed %s", name);
            } else {
                lua_pushstring(L, name);
            }
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}


/* fdpool.control(path, command) -> answer, or nil, message. */
static int
l_control(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *cmd = luaL_checkstring(L, 2);
    struct fdp_buf out;
    char err[256];

    memset(&out, 0, sizeof(out));
    if (fdp_control_request(path, cmd, &out, err, sizeof(err)) < 0) {
        fdp_buf_free(&out);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, out.data, out.len);
    fdp_buf_free(&out);
    return 1;
}


/* fdpool.check_policy(spec) -> true, or nil, message. */
static int
l_check_policy(lua_State *L)
{
    char err[512];

    if (fdp_policy_check(L, luaL_checkstring(L, 1), err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* fdpool.control_sockets() -> dir, {socket paths in it}, or nil, err. */
static int
l_control_sockets(lua_State *L)
{
    char dir[128], err[256];
    DIR *d;
    struct dirent *e;
    int n = 0;

    if (fdp_control_default_dir(dir, sizeof(dir), 0, err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushstring(L, dir);
    lua_newtable(L);
    d = opendir(dir);
    if (d == NULL) {
        return 2;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);

        if (len > 5 && strcmp(e->d_name + len - 5, ".sock") == 0) {
            lua_pushfstring(L, "%s/%s", dir, e->d_name);
            lua_rawseti(L, -2, ++n);
        }
    }
    closedir(d);
    return 2;
}


/* fdpool.now() -> monotonic seconds (for rates and deadlines). */
static int
l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number) fdp_now_us() / 1e6);
    return 1;
}


static int
l_ncpu(lua_State *L)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}


static int
l_log(lua_State *L)
{
    static const char *const levels[] = { "error", "warn", "info", "debug",
                                          NULL };
    int level = luaL_checkoption(L, 1, NULL, levels);

    fdp_log(level, 0, "%s", luaL_checkstring(L, 2));
    return 0;
}


/* fdpool.log_file(path): the log (stderr) goes to path; SIGUSR1 reopens
 * it. Returns true or nil, err, errno. */
static int
l_log_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int r = fdp_log_open(path);

    if (r < 0) {
        return fdp_pushfail(L, -r, path);
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* fdpool.log_format("text" | "json") */
static int
l_log_format(lua_State *L)
{
    static const char *const fmts[] = { "text", "json", NULL };

    fdp_log_set_json(luaL_checkoption(L, 1, NULL, fmts) == 1);
    return 0;
}


static int
l_set_log_level(lua_State *L)
{
    static const char *const levels[] = { "error", "warn", "info", "debug",
                                          NULL };

    fdp_log_set_level(luaL_checkoption(L, 1, NULL, levels));
    return 0;
}


/* ---- fdpool.pool ---------------------------------------------------- */

/* The pool behind a pool (or simulator) object; raises if closed. */
static struct fdp_pool *
checkpoolof(lua_State *L, const char *mt, const char *what)
{
    struct lpool *lp = luaL_checkudata(L, 1, mt);

    if (lp->p == NULL) {
        luaL_error(L, "attempt to use a closed %s", what);
    }
    lp->p->L = L;
    return lp->p;
}


static struct fdp_pool *
checkpool(lua_State *L)
{
    return checkpoolof(L, POOL_MT, "pool");
}


static int
opt_int(lua_State *L, const char *key, int def, int lo, int hi)
{
    int isnum, t = lua_getfield(L, 1, key);
    lua_Integer v;

    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v < lo || v > hi) {
        luaL_error(L, "bad option '%s' (an integer from %d to %d expected, "
                   "got %s)", key, lo, hi, lua_tostring(L, -1)
                   ? lua_tostring(L, -1) : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return (int) v;
}


static char *
xstrdup(lua_State *L, const char *s)
{
    char *d = strdup(s);

    if (d == NULL) {
        luaL_error(L, "out of memory");
    }
    return d;
}


static void
check_keys(lua_State *L)
{
    static const char *const known[] = {
        "handler", "args", "listen", "workers", "concurrency", "policy",
        "control", "grace", "log_level", "timeout", "max_requests", "user",
        "io_timeout", "metrics", "max_memory", "accept_filter",
        "max_conns_per_ip", "max_pending",
        NULL
    };

    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int i, ok = 0;

        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            for (i = 0; known[i]; i++) {
                if (strcmp(lua_tostring(L, -1), known[i]) == 0) {
                    ok = 1;
                }
            }
        }
        if (!ok) {
            luaL_error(L, "unknown option '%s' in fdpool.pool{}",
                       luaL_tolstring(L, -1, NULL));
        }
    }
}


/*
 * fdpool.pool{handler = fn | "file.lua", args = {...}, listen = addr |
 * {addr...}, workers = n, concurrency = n, policy = name | path | fn,
 * control = path, grace = seconds} -> pool, or nil, message.
 * Binds the listeners now (a port in use fails here), compiles a script
 * handler (a syntax error fails here); forks nothing yet.
 */
static int
l_pool(lua_State *L)
{
    struct lpool *lp;
    struct fdp_pool *p;
    int t, i;

    luaL_checktype(L, 1, LUA_TTABLE);
    check_keys(L);
    lp = lua_newuserdatauv(L, sizeof(*lp), 0);
    lp->p = NULL;
    luaL_setmetatable(L, POOL_MT);
    p = fdp_pool_new();
    if (p == NULL) {
        return luaL_error(L, "out of memory");
    }
    lp->p = p;
    p->L = L;
    p->worker_main = fdp_worker_main; p->service = &fdp_control_service;

    p->nworkers = opt_int(L, "workers", (int) sysconf(_SC_NPROCESSORS_ONLN),
                          1, FDP_MAX_WORKERS);
    p->concurrency = opt_int(L, "concurrency", 1024, 1, FDP_MAX_CONCURRENCY);
    if (lua_getfield(L, 1, "grace") != LUA_TNIL) {
        p->graceful_grace = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->graceful_grace >= 0, 1, "grace must not be "
                      "negative");
    }
    lua_pop(L, 1);
    p->max_requests = opt_int(L, "max_requests", 0, 0, 0x7fffffff);
    p->max_conns_per_ip = opt_int(L, "max_conns_per_ip", 0, 0, 0x7fffffff);
    p->max_pending = opt_int(L, "max_pending", FDP_PENDING_MAX_DEFAULT, 1,
                             1 << 20);
    if (lua_getfield(L, 1, "accept_filter") != LUA_TNIL) {
        const char *af = luaL_checkstring(L, -1);

        p->accept_filter = strcmp(af, "auto") == 0 ? FDP_AF_AUTO
                           : fdp_acceptf_parse(af);
        luaL_argcheck(L, p->accept_filter != -1 || strcmp(af, "auto") == 0,
                      1, "accept_filter must be none, data, http or auto");
    }
    lua_pop(L, 1);
    /* MiB per worker: its Lua heap in handler code, and its RssAnon. */
    p->max_memory = (uint64_t) opt_int(L, "max_memory", 0, 0, 4194304) << 20;
    if (lua_getfield(L, 1, "user") != LUA_TNIL) {
        const char *spec = luaL_checkstring(L, -1);
        char name[256], *colon;
        struct passwd *pw;

        snprintf(name, sizeof(name), "%s", spec);
        colon = strchr(name, ':');
        if (colon) {
            *colon++ = '\0';
        }
        pw = getpwnam(name);
        if (pw == NULL) {
            lua_pushnil(L);
            lua_pushfstring(L, "unknown user '%s'", name);
            return 2;
        }
        p->user_uid = pw->pw_uid;
        p->user_gid = pw->pw_gid;
        if (colon && *colon) {
            struct group *gr = getgrnam(colon);

            if (gr == NULL) {
                lua_pushnil(L);
                lua_pushfstring(L, "unknown group '%s'", colon);
                return 2;
            }
            p->user_gid = gr->gr_gid;
        }
        if (geteuid() != 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "user: dropping privileges needs root");
            return 2;
        }
        p->user_name = xstrdup(L, name);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "io_timeout") != LUA_TNIL) {
        p->io_timeout = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->io_timeout >= 0, 1, "io_timeout must not be "
                      "negative");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "timeout") != LUA_TNIL) {
        p->timeout = luaL_checknumber(L, -1);
        luaL_argcheck(L, p->timeout >= 0, 1, "timeout must not be negative");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "log_level") != LUA_TNIL) {
        lua_pushcfunction(L, l_set_log_level);
        lua_insert(L, -2);
        lua_call(L, 1, 0);
    } else {
        lua_pop(L, 1);
    }

    t = lua_getfield(L, 1, "handler");
    if (t == LUA_TFUNCTION || t == LUA_TTABLE) {
        p->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (t == LUA_TSTRING) {
        const char *path = lua_tostring(L, -1);

        p->script = xstrdup(L, path);
        lua_pop(L, 1);
        if (luaL_loadfilex(L, p->script, "t") != LUA_OK) {
            lua_pushnil(L);
            lua_insert(L, -2);
            return 2;
        }
        lua_pop(L, 1);
    } else {
        return luaL_error(L, "bad option 'handler' (a function, a table or "
                          "a script path expected, got %s)",
                          luaL_typename(L, -1));
    }

    if (lua_getfield(L, 1, "args") != LUA_TNIL) {
        lua_Integer k;

        luaL_checktype(L, -1, LUA_TTABLE);
        k = luaL_len(L, -1);
        p->args = calloc((size_t) k + 1, sizeof(char *));
        if (p->args == NULL) {
            return luaL_error(L, "out of memory");
        }
        for (i = 1; i <= k; i++) {
            lua_geti(L, -1, i);
            p->args[p->nargs++] = xstrdup(L, luaL_checkstring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    t = lua_getfield(L, 1, "policy");
    if (t == LUA_TFUNCTION) {
        p->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else if (t == LUA_TSTRING) {
        p->policy_name = xstrdup(L, lua_tostring(L, -1));
        lua_pop(L, 1);
    } else if (t == LUA_TNIL) {
        lua_pop(L, 1);
    } else {
        return luaL_error(L, "bad option 'policy' (a name, a path or a "
                          "function expected)");
    }

    if (lua_getfield(L, 1, "metrics") != LUA_TNIL) {
        p->metrics_addr = xstrdup(L, luaL_checkstring(L, -1));
    }
    lua_pop(L, 1);
    t = lua_getfield(L, 1, "control");
    if (t == LUA_TSTRING) {
        p->control_path = xstrdup(L, lua_tostring(L, -1));
    } else if (t == LUA_TBOOLEAN) {
        p->control_default = lua_toboolean(L, -1);
    } else if (t != LUA_TNIL) {
        return luaL_error(L, "bad option 'control' (a path or true "
                          "expected)");
    }
    lua_pop(L, 1);

    /* Sockets passed by systemd (LISTEN_FDS for this pid) come first;
     * with them, no default address is added. */
    if (fdp_pool_systemd_fds(p) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, p->error);
        return 2;
    }
    t = lua_getfield(L, 1, "listen");
    if (t == LUA_TNIL && p->nlisten > 0) {
        lua_pop(L, 1);
        lua_newtable(L);
        t = LUA_TTABLE;
    } else if (t == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushliteral(L, "127.0.0.1:8080");
        t = LUA_TSTRING;
    }
    if (t == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    }
    luaL_argcheck(L, lua_istable(L, -1), 1, "listen must be an address or "
                  "a list of addresses");
    for (i = 1; i <= luaL_len(L, -1); i++) {
        lua_geti(L, -1, i);
        if (fdp_pool_add_listen(p, luaL_checkstring(L, -1)) < 0) {
            lua_pushnil(L);
            lua_pushstring(L, p->error);
            return 2;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (p->policy_ref == LUA_NOREF) {
        char err[512];

        if (fdp_policy_check(L, p->policy_name ? p->policy_name
                             : "least_conn", err, sizeof(err)) < 0) {
            lua_pushnil(L);
            lua_pushstring(L, err);
            return 2;
        }
    }
    return 1;
}


/* pool:start() -> true, or nil, message: forks the workers. */
/* While a pool runs, the registry keeps its userdata alive: a program
 * (or a forked worker) that drops its last reference must not have the
 * pool collected under the running loop. */
static void
anchor(lua_State *L, struct fdp_pool *p, int on)
{
    if (on) {
        lua_pushvalue(L, 1);
    } else {
        lua_pushnil(L);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, p);
}


static int
pool_start(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);

    anchor(L, p, 1);
    if (fdp_pool_start(p) < 0) {
        anchor(L, p, 0);
        lua_pushnil(L);
        lua_pushstring(L, p->error);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* pool:step([seconds]) -> true while running, false once stopped (then
 * nil-able second value: the start error, if the pool failed). */
static int
pool_step(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    lua_Number s = luaL_optnumber(L, 2, -1);
    int r = fdp_pool_step(p, s < 0 ? -1 : (int) (s * 1000));

    if (!r) {
        anchor(L, p, 0);
    }
    lua_pushboolean(L, r);
    if (!r && p->failed) {
        lua_pushstring(L, p->error);
        return 2;
    }
    return 1;
}


/* pool:run() -> true when it has stopped, or nil, message when the
 * first generation of workers could not start. */
static int
pool_run(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);

    anchor(L, p, 1);
    if (!p->started && fdp_pool_start(p) < 0) {
        anchor(L, p, 0);
        lua_pushnil(L);
        lua_pushstring(L, p->error);
        return 2;
    }
    while (fdp_pool_step(p, -1)) {
        p->L = L;
    }
    anchor(L, p, 0);
    if (p->failed) {
        lua_pushnil(L);
        lua_pushstring(L, p->error);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


static int
pool_stop(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);

    fdp_pool_stop(p, lua_toboolean(L, 2));
    lua_pushboolean(L, 1);
    return 1;
}


/* pool:reload() -> true (a new generation is starting; it replaces the
 * running one once READY, or is stopped and the refusal logged), or nil,
 * why (refused at once: nothing changed). */
static int
pool_reload(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);

    if (fdp_pool_reload(p) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, p->error);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* pool:scale(n) -> true, or nil, why. */
static int
pool_scale(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    lua_Integer n = luaL_checkinteger(L, 2);

    luaL_argcheck(L, n >= 1 && n <= FDP_MAX_WORKERS, 2, "workers must be "
                  "1 to 256");
    if (fdp_pool_scale(p, (int) n) < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "cannot scale now (stopping, or no spare slot)");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}


static void
set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}


static void
set_num(lua_State *L, const char *k, lua_Number v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}


/* pool:status() -> a snapshot table of the pool and its workers. */
static int
pool_status(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    struct fdp_status_info info;
    const char *listen[FDP_MAX_LISTEN];
    int i, k;

    fdp_pool_status_info(p, &info, listen);
    lua_createtable(L, 0, 8);
    set_int(L, "pid", info.pid);
    lua_pushstring(L, info.policy);
    lua_setfield(L, -2, "policy");
    lua_createtable(L, info.nlisten, 0);
    for (i = 0; i < info.nlisten; i++) {
        lua_pushstring(L, listen[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "listen");
    set_int(L, "accepted", (lua_Integer) info.accepted);
    set_int(L, "queued", (lua_Integer) info.queued);
    set_int(L, "parked", (lua_Integer) info.parked);
    set_int(L, "pending", (lua_Integer) info.pending);
    lua_createtable(L, 0, 4);
    set_int(L, "deadline", (lua_Integer) info.closed[0]);
    set_int(L, "overflow", (lua_Integer) info.closed[1]);
    set_int(L, "per_ip", (lua_Integer) info.closed[2]);
    set_int(L, "peer_closed", (lua_Integer) info.closed[3]);
    lua_setfield(L, -2, "closed");
    set_int(L, "closed_by_peer", (lua_Integer) info.closed_by_peer);
    set_int(L, "crash_streak", info.crash_streak);
    if (info.crash_why) {
        lua_pushstring(L, info.crash_why);
        lua_setfield(L, -2, "crash");
    }
    set_int(L, "fallbacks", (lua_Integer) info.fallbacks);
    set_num(L, "started", info.started);
    lua_pushboolean(L, p->running);
    lua_setfield(L, -2, "running");
    lua_createtable(L, p->nworkers, 0);
    for (i = 0; i < p->nworkers; i++) {
        const struct fdp_slot *s = &p->workers[i].slot;

        lua_createtable(L, 0, 16);
        set_int(L, "id", s->id);
        set_int(L, "pid", s->pid);
        set_int(L, "generation", s->generation);
        lua_pushstring(L, fdp_slot_state(s));
        lua_setfield(L, -2, "state");
        set_int(L, "active", s->active);
        set_int(L, "capacity", s->capacity);
        set_int(L, "served", (lua_Integer) s->served);
        set_int(L, "bytes_in", (lua_Integer) s->bytes_in);
        set_int(L, "bytes_out", (lua_Integer) s->bytes_out);
        set_num(L, "started", s->started);
        set_num(L, "busy_since", s->busy_since);
        set_int(L, "restarts", s->restarts);
        if (s->last_exit_how != FDP_EXIT_NONE) {
            lua_createtable(L, 0, 3);
            lua_pushstring(L, s->last_exit_how == FDP_EXIT_CODE ? "exit"
                           : "signal");
            lua_setfield(L, -2, "how");
            set_int(L, "code", s->last_exit_code);
            if (s->last_exit_how == FDP_EXIT_SIGNAL) {
                lua_pushstring(L, fdp_signame(s->last_exit_code));
                lua_setfield(L, -2, "name");
            }
            lua_setfield(L, -2, "last_exit");
        }
        lua_createtable(L, 0, s->nkv);
        for (k = 0; k < s->nkv; k++) {
            lua_pushstring(L, s->kv[k].val);
            lua_setfield(L, -2, s->kv[k].key);
        }
        lua_setfield(L, -2, "fields");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "workers");
    return 1;
}


/* pool:addresses() -> {"127.0.0.1:43123", ...}: where it really listens. */
static int
pool_addresses(lua_State *L)
{
    struct fdp_pool *p = checkpool(L);
    int i;

    lua_createtable(L, p->nlisten, 0);
    for (i = 0; i < p->nlisten; i++) {
        lua_pushstring(L, p->listeners[i].bound);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}


/*
 * __gc/__close: the owner stops a running pool (fast) and waits for its
 * workers; a forked child only frees its copy (never signals, never
 * unlinks).
 */
static int
pool_gc(lua_State *L)
{
    struct lpool *lp = luaL_checkudata(L, 1, POOL_MT);
    struct fdp_pool *p = lp->p;

    if (p == NULL) {
        return 0;
    }
    p->L = L;
    if (getpid() == p->owner && p->running) {
        fdp_pool_stop(p, 0);
        while (fdp_pool_step(p, 100)) {
        }
    }
    if (getpid() == p->owner) {
        int i;

        if (p->handler_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, p->handler_ref);
        }
        if (p->policy_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, p->policy_ref);
        }
        for (i = 0; i < p->nlisten; i++) {
            if (p->listeners[i].unix_path && p->listeners[i].fd >= 0) {
                (void) unlink(p->listeners[i].unix_path);
            }
        }
    }
    fdp_pool_free(p);
    lp->p = NULL;
    return 0;
}


static int
pool_tostring(lua_State *L)
{
    struct lpool *lp = luaL_checkudata(L, 1, POOL_MT);

    if (lp->p == NULL) {
        lua_pushliteral(L, "fdpool.pool (closed)");
    } else {
        lua_pushfstring(L, "fdpool.pool (%s)", lp->p->running ? "running"
                        : "stopped");
    }
    return 1;
}


/* ---- fdpool.sim: the master's dispatch decision without processes ---- */

#define SIM_MT "fdpool.simulator"

static struct fdp_pool *
checksim(lua_State *L)
{
    return checkpoolof(L, SIM_MT, "simulator");
}


/*
 * fdpool.simulator(policy, workers, capacity [, listener]) -> sim: a pool
 * with no processes whose workers are all running, for fdpool.sim. The
 * policy (name, path or function) runs exactly as in the master:
 * sandbox, views, budget, checks, fallback.
 */
static int
l_simulator(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 2), cap = luaL_checkinteger(L, 3);
    const char *listener = luaL_optstring(L, 4, "127.0.0.1:8080");
    struct lpool *lp;
    struct fdp_pool *p;
    int i;

    luaL_argcheck(L, n >= 1 && n <= FDP_MAX_WORKERS, 2, "1 to 256 workers");
    luaL_argcheck(L, cap >= 1 && cap <= FDP_MAX_CONCURRENCY, 3,
                  "capacity out of range");
    lp = lua_newuserdatauv(L, sizeof(*lp), 0);
    lp->p = NULL;
    luaL_setmetatable(L, SIM_MT);
    p = fdp_pool_new();
    if (p == NULL) {
        return luaL_error(L, "out of memory");
    }
    lp->p = p;
    p->L = L;
    p->simulated = 1;
    p->nworkers = (int) n;
    p->concurrency = (int) cap;
    p->nlisten = 1;
    snprintf(p->listeners[0].addr, sizeof(p->listeners[0].addr), "%s",
             listener);
    for (i = 0; i < p->nworkers; i++) {
        struct fdp_slot *sl = &p->workers[i].slot;

        sl->state = FDP_W_RUNNING;
        sl->capacity = (int) cap;
        sl->pid = 0;
        sl->generation = 1;
    }
    if (lua_isfunction(L, 1)) {
        lua_pushvalue(L, 1);
        p->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        p->policy_name = xstrdup(L, luaL_checkstring(L, 1));
    }
    if (fdp_policy_open(p, p->error, sizeof(p->error)) < 0) {
        return luaL_error(L, "%s", p->error);
    }
    return 1;
}


/* sim:choose(peer) -> worker index, or nil (queued); and whether the
 * master would have fallen back to first_free. */
static int
sim_choose(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    const char *peer = luaL_checkstring(L, 2);
    struct fdp_pending c;
    char err[256];
    int fallback, idx;

    memset(&c, 0, sizeof(c));
    c.fd = -1;
    if (strcmp(peer, "unix") == 0) {
        c.peer.ss_family = AF_UNIX;
        c.peerlen = sizeof(sa_family_t);
    } else if (fdp_parse_addr(peer, &c.peer, &c.peerlen, err,
                              sizeof(err)) < 0) {
        return luaL_argerror(L, 2, err);
    }
    idx = fdp_pool_choose(p, &c, &fallback);
    if (idx < 0) {
        lua_pushnil(L);
    } else {
        lua_pushinteger(L, idx + 1);
    }
    lua_pushboolean(L, fallback);
    return 2;
}


/* sim:start(i) / sim:finish(i): a connection begins / ends on worker i. */
static int
sim_start(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    lua_Integer i = luaL_checkinteger(L, 2);

    luaL_argcheck(L, i >= 1 && i <= p->nworkers, 2, "no such worker");
    p->workers[i - 1].slot.active++;
    return 0;
}


static int
sim_finish(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    struct fdp_slot *sl;

    luaL_argcheck(L, i >= 1 && i <= p->nworkers, 2, "no such worker");
    sl = &p->workers[i - 1].slot;
    luaL_argcheck(L, sl->active > 0, 2, "worker has no connection");
    sl->active--;
    sl->served++;
    return 0;
}


/* sim:set(i, key, value): a custom status field, as fdpool.worker.set. */
static int
sim_set(lua_State *L)
{
    struct fdp_pool *p = checksim(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    const char *k = luaL_checkstring(L, 3), *v = luaL_tolstring(L, 4, NULL);

    luaL_argcheck(L, i >= 1 && i <= p->nworkers, 2, "no such worker");
    luaL_argcheck(L, strlen(k) > 0 && strlen(k) < FDP_KEY_MAX, 3,
                  "key must be 1 to 31 bytes");
    luaL_argcheck(L, strlen(v) < FDP_VAL_MAX, 4, "value too long");
    (void) fdp_slot_set_kv(&p->workers[i - 1].slot, k, v);
    return 0;
}


static int
sim_fallbacks(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer) checksim(L)->fallbacks);
    return 1;
}


static int
sim_gc(lua_State *L)
{
    struct lpool *lp = luaL_checkudata(L, 1, SIM_MT);

    if (lp->p) {
        if (lp->p->policy_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, lp->p->policy_ref);
        }
        lp->p->L = L;
        fdp_policy_close(lp->p);
        fdp_pool_free(lp->p);
        lp->p = NULL;
    }
    return 0;
}


/* ---- worker side ---------------------------------------------------- */

/* fdpool.worker.set(key, value): a custom field in this worker's slot of
 * the status table. */
static int
worker_set(lua_State *L)
{
    struct fdp_wctx *w = lua_touserdata(L, lua_upvalueindex(1));
    size_t klen, vlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *val;
    char buf[FDP_KEY_MAX + FDP_VAL_MAX];
    int r;

    luaL_checkany(L, 2);
    val = luaL_tolstring(L, 2, &vlen);
    luaL_argcheck(L, klen > 0 && klen < FDP_KEY_MAX
                  && strlen(key) == klen, 1, "key must be 1 to 31 bytes");
    luaL_argcheck(L, vlen < FDP_VAL_MAX && strlen(val) == vlen, 2,
                  "value must be at most 95 bytes");
    memcpy(buf, key, klen + 1);
    memcpy(buf + klen + 1, val, vlen);
    r = fdp_chan_send(w->ch, FDP_MSG_SET, 0, buf, klen + 1 + vlen, NULL, 0);
    if (r < 0) {
        return fdp_pushfail(L, -r, "worker.set");
    }
    lua_pushboolean(L, 1);
    return 1;
}


/* Make fdpool.worker = {id, pid, set} in L (requiring fdpool if the
 * program had not), and keep it in the registry for init(worker). */
void
fdp_module_set_worker(lua_State *L, struct fdp_wctx *w)
{
    fdp_worker_register(L, w);
    luaL_requiref(L, "fdpool", luaopen_fdpool, 0);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, w->idx + 1);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, getpid());
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, w->pool->concurrency);
    lua_setfield(L, -2, "capacity");
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, worker_set, 1);
    lua_setfield(L, -2, "set");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "fdpool.worker");
    lua_setfield(L, -2, "worker");
    lua_pop(L, 1);
}


/* package.searchers entry: the embedded lua/fdpool files. */
static int
embed_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t len;
    const char *src = fdp_embed_find(name, &len);

    if (src == NULL) {
        lua_pushfstring(L, "no embedded module '%s'", name);
        return 1;
    }
    lua_pushfstring(L, "=[fdpool] %s", name);
    if (luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t") != LUA_OK) {
        return lua_error(L);
    }
    lua_pushstring(L, name);
    return 2;
}


static void
install_searcher(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "fdpool.searcher") != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "fdpool.searcher");
    if (lua_getglobal(L, "package") != LUA_TTABLE
        || lua_getfield(L, -1, "searchers") != LUA_TTABLE) {
        lua_settop(L, lua_gettop(L) - 2);
        return;
    }
    /* After preload, before the path searchers: the binary uses its own
     * copy of lua/fdpool, wherever it runs from. */
    {
        lua_Integer i, n = luaL_len(L, -1);

        for (i = n; i >= 2; i--) {
            lua_geti(L, -1, i);
            lua_seti(L, -2, i + 1);
        }
        lua_pushcfunction(L, embed_searcher);
        lua_seti(L, -2, 2);
    }
    lua_pop(L, 2);
}


void
fdp_open_module(lua_State *L)
{
    luaL_requiref(L, "fdpool", luaopen_fdpool, 0);
    lua_pop(L, 1);
}


int
luaopen_fdpool(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "socketpair", l_socketpair },
        { "connect", l_connect },
        { "dup", l_dup },
        { "status", l_status },
        { "simulator", l_simulator },
        { "open_beneath", l_open_beneath },
        { "sleep", l_sleep },
        { "type", l_type },
        { "pool", l_pool },
        { "control", l_control },
        { "check_policy", l_check_policy },
        { "ncpu", l_ncpu },
        { "now", l_now },
        { "control_sockets", l_control_sockets },
        { "log", l_log },
        { "set_log_level", l_set_log_level },
        { "log_file", l_log_file },
        { "log_format", l_log_format },
        { NULL, NULL }
    };
    static const luaL_Reg fd_methods[] = {
        { "fileno", fd_fileno },
        { "read", fd_read },
        { "write", fd_write },
        { "seek", fd_seek },
        { "settimeout", fd_settimeout },
        { "shutdown", fd_shutdown },
        { "close", fd_close },
        { NULL, NULL }
    };
    static const luaL_Reg chan_methods[] = {
        { "sendfd", chan_sendfd },
        { "recvfd", chan_recvfd },
        { "fileno", chan_fileno },
        { "close", chan_close },
        { NULL, NULL }
    };
    static const luaL_Reg pool_methods[] = {
        { "start", pool_start },
        { "step", pool_step },
        { "run", pool_run },
        { "stop", pool_stop },
        { "reload", pool_reload },
        { "scale", pool_scale },
        { "status", pool_status },
        { "addresses", pool_addresses },
        { "close", pool_gc },
        { NULL, NULL }
    };

    if (luaL_newmetatable(L, FD_MT)) {
        lua_pushcfunction(L, fd_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, fd_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, fd_tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, fd_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, CHAN_MT)) {
        lua_pushcfunction(L, fd_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, fd_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, fd_tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, chan_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, POOL_MT)) {
        lua_pushcfunction(L, pool_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, pool_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, pool_tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, pool_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, SIM_MT)) {
        static const luaL_Reg sim_methods[] = {
            { "choose", sim_choose },
            { "start", sim_start },
            { "finish", sim_finish },
            { "set", sim_set },
            { "fallbacks", sim_fallbacks },
            { "close", sim_gc },
            { NULL, NULL }
        };

        lua_pushcfunction(L, sim_gc);
        lua_setfield(L, -2, "__gc");
        luaL_newlib(L, sim_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    fdp_conn_open_meta(L);
    install_searcher(L);

    luaL_newlib(L, funcs);
    lua_pushliteral(L, FDP_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
