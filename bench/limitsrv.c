/*
 * bench/limitsrv.c: the reference C servers the team measures peers against
 * (the same source as the team's published anchor numbers, docs/performance.md
 * holds the figures). scripts/bench compiles it into its temp dir
 * and runs it as "c-single" (limitsrv single PORT): the C epoll "limit" server, one
 * process, no Lua, no HTTP parser worth the name. It is a yardstick, not a peer.
 */
/*
 * limitsrv: a measuring tool, not a product. Answers every HTTP/1.x request
 * with "hello\n" (200, Content-Length: 6), keep-alive unless the request says
 * "Connection: close" (or is HTTP/1.0 without keep-alive).
 *
 *   limitsrv single    PORT        one process, one epoll loop, accepts itself
 *   limitsrv fdpass    PORT [N]    master accept4()s (blocking) and passes each
 *                                  fd round-robin to one of N workers over a
 *                                  SOCK_SEQPACKET socketpair (sendmsg SCM_RIGHTS);
 *                                  each worker serves many conns in its own epoll
 *   limitsrv reuseport PORT [N]    N processes, each with its own SO_REUSEPORT
 *                                  listening socket, each accepting itself
 *
 * Listens on 127.0.0.1 only, backlog 4096. Children die with the parent
 * (PR_SET_PDEATHSIG), so killing the first process by its PID stops everything.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define INBUF 8192
#define OUTBUF 8192
#define MAXFD 65536

static const char RESP_KA[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              "Content-Length: 6\r\n\r\nhello\n";
static const char RESP_CL[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              "Content-Length: 6\r\nConnection: close\r\n\r\nhello\n";

struct conn {
    size_t in_len, out_len, out_off;
    int closing; /* close once out is flushed */
    char in[INBUF];
    char out[OUTBUF];
};

static struct conn *conns[MAXFD];
static int ep;

static void die(const char *what) { perror(what); exit(1); }

static int listen_on(int port, int reuseport, int nonblock) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0), one = 1;
    if (s < 0) die("socket");
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) die("SO_REUSEPORT");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(s, 4096) < 0) die("listen");
    return s;
}

/* case-insensitive search for needle in [h, h+n) */
static const char *memcasemem(const char *h, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (strncasecmp(h + i, needle, m) == 0) return h + i;
    return NULL;
}

/* does the header block [h, h+n) ask to close the connection? */
static int wants_close(const char *h, size_t n) {
    const char *line_end = memchr(h, '\r', n);
    int http10 = line_end && line_end - h >= 8 && memcmp(line_end - 8, "HTTP/1.0", 8) == 0;
    const char *c = memcasemem(h, n, "\nconnection:");
    if (!c) return http10;
    const char *e = memchr(c + 1, '\r', n - (size_t)(c + 1 - h));
    size_t vlen = (size_t)((e ? e : h + n) - c);
    if (memcasemem(c, vlen, "close")) return 1;
    if (memcasemem(c, vlen, "keep-alive")) return 0;
    return http10;
}

static void conn_close(int fd) {
    free(conns[fd]);
    conns[fd] = NULL;
    close(fd); /* also removes it from the epoll set */
}

static void conn_add(int fd) {
    if (fd >= MAXFD) { close(fd); return; }
    struct conn *c = malloc(sizeof *c);
    if (!c) { close(fd); return; }
    c->in_len = c->out_len = c->out_off = 0;
    c->closing = 0;
    conns[fd] = c;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) conn_close(fd);
}

/* returns 0 when all output is flushed, 1 if it must wait for EPOLLOUT, -1 on error */
static int flush_out(int fd, struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) return 1;
            if (errno == EINTR) continue;
            return -1;
        }
        c->out_off += (size_t)w;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

/* turn complete requests in c->in into responses in c->out */
static void parse_requests(struct conn *c) {
    size_t pos = 0;
    while (!c->closing) {
        const char *end = memmem(c->in + pos, c->in_len - pos, "\r\n\r\n", 4);
        if (!end) break;
        size_t hlen = (size_t)(end - (c->in + pos)) + 4;
        int cl = wants_close(c->in + pos, hlen);
        const char *r = cl ? RESP_CL : RESP_KA;
        size_t rl = cl ? sizeof RESP_CL - 1 : sizeof RESP_KA - 1;
        if (c->out_len + rl > OUTBUF) break; /* flush first, parse the rest later */
        memcpy(c->out + c->out_len, r, rl);
        c->out_len += rl;
        c->closing = cl;
        pos += hlen;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void set_events(int fd, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void on_conn_event(int fd, uint32_t events) {
    struct conn *c = conns[fd];
    if (!c) return;
    if (c->out_len) { /* we were waiting for EPOLLOUT */
        int f = flush_out(fd, c);
        if (f < 0) { conn_close(fd); return; }
        if (f > 0) return;
        if (c->closing) { conn_close(fd); return; }
        set_events(fd, EPOLLIN);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->in_len == 0) return;
    if (c->in_len == INBUF) { conn_close(fd); return; } /* header too large */
    ssize_t r = recv(fd, c->in + c->in_len, INBUF - c->in_len, 0); /* level-triggered: one read */
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) { conn_close(fd); return; }
    if (r > 0) c->in_len += (size_t)r;
    for (;;) {
        parse_requests(c);
        if (!c->out_len) return;
        int f = flush_out(fd, c);
        if (f < 0) { conn_close(fd); return; }
        if (f > 0) { set_events(fd, EPOLLOUT); return; }
        if (c->closing) { conn_close(fd); return; }
        if (!memmem(c->in, c->in_len, "\r\n\r\n", 4)) return; /* nothing more pipelined */
    }
}

static void accept_all(int ls) {
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return; /* EAGAIN, or EMFILE etc.: try again on the next event */
        }
        conn_add(fd);
    }
}

/* receive passed fds from the master's channel; returns -1 when the master is gone */
static int recv_fds(int ch) {
    for (;;) {
        char byte;
        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * 64)]; } u;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        ssize_t r = recvmsg(ch, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r == 0) return -1;
        if (r < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
            if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
            size_t n = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *fds = (int *)CMSG_DATA(h);
            for (size_t i = 0; i < n; i++) conn_add(fds[i]);
        }
    }
}

/* one epoll loop; ls = listening socket (or -1), ch = fd channel from master (or -1) */
static void serve(int ls, int ch) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int src = ls >= 0 ? ls : ch;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = src};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, src, &ev) < 0) die("epoll_ctl");
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) accept_all(ls);
            else if (fd == ch) { if (recv_fds(ch) < 0) exit(0); }
            else on_conn_event(fd, evs[i].events);
        }
    }
}

static pid_t spawn_child(void) {
    pid_t parent = getpid(), p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) exit(0);
    }
    return p;
}

static void master_fdpass(int ls, int nworkers) {
    int ch[64];
    for (int w = 0; w < nworkers; w++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
        if (spawn_child() == 0) {
            close(ls);
            for (int k = 0; k < w; k++) close(ch[k]);
            close(sv[0]);
            serve(-1, sv[1]);
        }
        close(sv[1]);
        ch[w] = sv[0];
    }
    unsigned next = 0;
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) { usleep(1000); continue; }
            die("accept4");
        }
        char byte = 0;
        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
        memset(&u, 0, sizeof u);
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &fd, sizeof(int));
        int w = (int)(next++ % (unsigned)nworkers);
        while (sendmsg(ch[w], &m, MSG_NOSIGNAL) < 0) {
            if (errno == EINTR) continue;
            die("sendmsg");
        }
        close(fd); /* the worker holds its own reference now */
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s single|fdpass|reuseport PORT [WORKERS]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int port = atoi(argv[2]);
    int nworkers = argc > 3 ? atoi(argv[3]) : 2;
    if (nworkers < 1 || nworkers > 64) nworkers = 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max < MAXFD ? rl.rlim_max : MAXFD;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(mode, "single") == 0) {
        serve(listen_on(port, 0, 1), -1);
    } else if (strcmp(mode, "fdpass") == 0) {
        master_fdpass(listen_on(port, 0, 0), nworkers);
    } else if (strcmp(mode, "reuseport") == 0) {
        for (int w = 0; w < nworkers; w++)
            if (spawn_child() == 0) serve(listen_on(port, 1, 1), -1);
        for (;;) if (wait(NULL) < 0 && errno == ECHILD) return 0;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
