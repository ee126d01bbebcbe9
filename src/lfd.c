/*
 * lfd.c - the descriptor objects of the binding: "fdpool.fd" (a
 * descriptor: read, write, seek, settimeout, shutdown) and "fdpool.chan"
 * (one end of a SEQPACKET socketpair that carries descriptors), and the
 * module functions that make them (socketpair, connect, dup,
 * open_beneath). Misuse raises; the world failing returns nil,
 * "what: strerror", errno.
 */
#include "fdp.h"
#include "fdpass.h"
#include "laux.h"
#include "lfd.h"
#include "pool.h"             /* fdp_parse_addr */

#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <netdb.h>
#include <unistd.h>

#include <lauxlib.h>

#define FD_MT       FDP_FD_MT
#define CHAN_MT     FDP_CHAN_MT
#define CHAN_DATA_MAX 65536
#define CHAN_MAGIC  'F'


/* ---- fdpool.fd ------------------------------------------------------ */

static struct fdp_fd *
checkfd(lua_State *L, int idx)
{
    struct fdp_fd *f = luaL_checkudata(L, idx, FD_MT);

    if (f->fd < 0) {
        luaL_error(L, "attempt to use a closed fd");
    }
    return f;
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
    size_t alen;
    const char *addr = luaL_checklstring(L, 1, &alen);
    lua_Number t = luaL_optnumber(L, 2, 0);
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    int fd;

    luaL_argcheck(L, memchr(addr, '\0', alen) == NULL, 1,
                  "address contains a NUL byte");
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
    size_t dlen, nlen;
    const char *dir = luaL_checklstring(L, 1, &dlen);
    const char *name = luaL_checklstring(L, 2, &nlen);
    struct open_how how;
    struct stat st;
    int dfd, fd, err;

    if (memchr(dir, '\0', dlen) != NULL || memchr(name, '\0', nlen) != NULL) {
        /* Not the file named by the part before the NUL. */
        lua_pushnil(L);
        lua_pushliteral(L, "name contains a NUL byte");
        lua_pushinteger(L, EINVAL);
        return 3;
    }
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



void
fdp_lfd_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "socketpair", l_socketpair },
        { "connect", l_connect },
        { "dup", l_dup },
        { "open_beneath", l_open_beneath },
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
    /* fd and chan share their metamethods: both are a struct fdp_fd. */
    static const luaL_Reg meta[] = {
        { "__gc", fd_gc },
        { "__close", fd_gc },
        { "__tostring", fd_tostring },
        { NULL, NULL }
    };

    fdp_createmeta(L, FD_MT, meta, fd_methods);
    fdp_createmeta(L, CHAN_MT, meta, chan_methods);
    luaL_setfuncs(L, funcs, 0);
}
