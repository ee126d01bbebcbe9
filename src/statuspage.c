/*
 * statuspage.c - the status page on the --metrics listener, as Apache's
 * mod_status and PHP-FPM's status page offer:
 *
 *   GET /status              the page: the pool and one row per worker,
 *                            rendered here, then kept live by its script
 *                            (polls /status.json every second, draws the
 *                            requests per second of the last 5 minutes)
 *   GET /status?refresh=N    the same table without any script, with a
 *                            <meta http-equiv="refresh"> every N seconds
 *   GET /status.json         fdp_status_json, what `pool status --json`
 *                            prints
 *
 * The page is src/statuspage.html, embedded at build time; it loads
 * nothing from elsewhere. Everything that comes from the status (custom
 * worker fields, listener names, the policy's path, the last crash) is
 * HTML-escaped here and set as text (never as markup) by the script.
 * The request line is checked before any path is looked at: one request
 * per connection, bounded by the caller's buffer, GET and HEAD only.
 */
#include "fdp.h"
#include "pool.h"
#include "statuspage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#define REFRESH_MAX 3600        /* ?refresh=N: seconds, 1..REFRESH_MAX */

struct req {
    int head;                   /* HEAD, not GET */
    const char *path;           /* NUL-terminated in the caller's buffer */
    const char *query;          /* after '?', or NULL */
};






/* ---- HTML ---- */

static void
esc(struct fdp_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fdp_buf_printf(b, "&amp;");
            break;
        case '<':
            fdp_buf_printf(b, "&lt;");
            break;
        case '>':
            fdp_buf_printf(b, "&gt;");
            break;
        case '"':
            fdp_buf_printf(b, "&quot;");
            break;
        case '\'':
            fdp_buf_printf(b, "&#39;");
            break;
        default:
            fdp_buf_printf(b, "%c", *s);
            break;
        }
    }
}


static void
human_bytes(char *out, size_t n, uint64_t v)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double d = (double) v;
    size_t u = 0;

    while (d >= 1024 && u + 1 < FDP_NELEM(units)) {
        d /= 1024;
        u++;
    }
    if (u == 0) {
        snprintf(out, n, "%llu B", (unsigned long long) v);
    } else {
        snprintf(out, n, "%.1f %s", d, units[u]);
    }
}


static void
duration(char *out, size_t n, double s)
{
    long t = s > 0 ? (long) s : 0;

    if (t >= 86400) {
        snprintf(out, n, "%ldd %02ld:%02ld:%02ld", t / 86400,
                 t / 3600 % 24, t / 60 % 60, t % 60);
    } else {
        snprintf(out, n, "%02ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    }
}


/* One "label: value" of the pool summary; the script builds the same. */
static void
item(struct fdp_buf *b, const char *label, const char *value)
{
    fdp_buf_printf(b, "<div><dt>");
    esc(b, label);
    fdp_buf_printf(b, "</dt><dd>");
    esc(b, value);
    fdp_buf_printf(b, "</dd></div>");
}


static void
render_pool(struct fdp_buf *b, const struct fdp_status_info *info)
{
    char v[256];
    struct fdp_buf l;
    int i;

    snprintf(v, sizeof(v), "%ld", (long) info->pid);
    item(b, "master pid", v);
    item(b, "version", FDP_VERSION);
    item(b, "policy", info->policy ? info->policy : "");
    snprintf(v, sizeof(v), "%d", info->generation);
    item(b, "generation", v);
    duration(v, sizeof(v), info->now - info->started);
    item(b, "uptime", v);
    memset(&l, 0, sizeof(l));
    for (i = 0; i < info->nlisten; i++) {
        fdp_buf_printf(&l, "%s%s", i ? " " : "", info->listen[i]);
    }
    item(b, "listen", l.data ? l.data : "");
    b->oom |= l.oom;
    fdp_buf_free(&l);
    snprintf(v, sizeof(v), "%llu", (unsigned long long) info->accepted);
    item(b, "accepted", v);
    snprintf(v, sizeof(v), "%llu queued, %llu parked, %llu pending",
             (unsigned long long) info->queued,
             (unsigned long long) info->parked,
             (unsigned long long) info->pending);
    item(b, "waiting", v);
    snprintf(v, sizeof(v), "deadline %llu, overflow %llu, per-ip %llu, "
             "peer-closed %llu, not-tls %llu",
             (unsigned long long) info->closed[0],
             (unsigned long long) info->closed[1],
             (unsigned long long) info->closed[2],
             (unsigned long long) info->closed[3],
             (unsigned long long) info->closed[4]);
    item(b, "closed waiting", v);
    snprintf(v, sizeof(v), "%llu", (unsigned long long) info->closed_by_peer);
    item(b, "closed by peer", v);
    if (info->crash_streak > 0 && info->crash_why) {
        snprintf(v, sizeof(v), "%d (last: %s)", info->crash_streak,
                 info->crash_why);
    } else {
        snprintf(v, sizeof(v), "%d", info->crash_streak);
    }
    item(b, "crash streak", v);
    if (info->reload_refused) {
        item(b, "last reload refused", info->reload_refused);
    }
    snprintf(v, sizeof(v), "%d-%d%s%s", info->workers_min,
             info->workers_max, info->scaled ? ", last change: " : "",
             info->scaled ? info->scaled : "");
    item(b, "workers", v);
}


static void
cell(struct fdp_buf *b, const char *label, const char *cls, const char *v)
{
    fdp_buf_printf(b, "<td data-label=\"%s\"%s%s%s>", label,
                   cls ? " class=\"" : "", cls ? cls : "", cls ? "\"" : "");
    esc(b, v);
    fdp_buf_printf(b, "</td>");
}


static void
render_rows(struct fdp_buf *b, const struct fdp_status_info *info,
            const struct fdp_slot *slots, int n)
{
    char v[256];
    int i, k;

    for (i = 0; i < n; i++) {
        const struct fdp_slot *s = &slots[i];
        const char *st = fdp_slot_state(s);
        double up = info->now - info->started;

        fdp_buf_printf(b, "<tr class=\"st-%s\" data-id=\"%d\" data-pid=\"%ld\" "
                       "data-state=\"%s\" data-src=\"html\">", st, s->id,
                       (long) s->pid, st);
        snprintf(v, sizeof(v), "%d", s->id);
        cell(b, "id", "num", v);
        snprintf(v, sizeof(v), "%ld", (long) s->pid);
        cell(b, "pid", "num", v);
        cell(b, "state", "state", st);
        snprintf(v, sizeof(v), "%d", s->generation);
        cell(b, "gen", "num", v);
        snprintf(v, sizeof(v), "%d/%d", s->active, s->capacity);
        cell(b, "active", "num", v);
        snprintf(v, sizeof(v), "%llu", (unsigned long long) s->served);
        cell(b, "served", "num", v);
        if (up >= 1) {
            snprintf(v, sizeof(v), "%.1f", (double) s->served / up);
        } else {
            snprintf(v, sizeof(v), "-");
        }
        cell(b, "req/s", "num", v);
        human_bytes(v, sizeof(v), s->bytes_in);
        cell(b, "in", "num", v);
        human_bytes(v, sizeof(v), s->bytes_out);
        cell(b, "out", "num", v);
        if (s->rss) {
            human_bytes(v, sizeof(v), s->rss);
        } else {
            snprintf(v, sizeof(v), "-");
        }
        cell(b, "RSS", "num", v);
        snprintf(v, sizeof(v), "%u", s->restarts);
        cell(b, "restarts", "num", v);
        if (s->last_exit_how == FDP_EXIT_CODE) {
            snprintf(v, sizeof(v), "exit %d", s->last_exit_code);
        } else if (s->last_exit_how == FDP_EXIT_SIGNAL) {
            snprintf(v, sizeof(v), "%s", fdp_signame(s->last_exit_code));
        } else {
            snprintf(v, sizeof(v), "-");
        }
        cell(b, "last exit", NULL, v);
        fdp_buf_printf(b, "<td data-label=\"fields\" class=\"fields\">");
        for (k = 0; k < s->nkv; k++) {
            fdp_buf_printf(b, "%s", k ? " " : "");
            esc(b, s->kv[k].key);
            fdp_buf_printf(b, "=");
            esc(b, s->kv[k].val);
        }
        fdp_buf_printf(b, "</td></tr>\n");
    }
}


/*
 * The template with its markers <!--fdp:NAME--> filled: meta (the
 * refresh), mode (what keeps the page current), pool (the summary), rows
 * (the table's body), js ... /js (the script and its <noscript> hint,
 * left out with ?refresh).
 */
static void
render_page(struct fdp_buf *b, struct fdp_pool *p, int refresh)
{
    struct fdp_status_info info;
    const char *listen[FDP_MAX_LISTEN];
    struct fdp_slot *slots = fdp_pool_snapshot(p, &info, listen, 1);
    const char *t = fdp_statuspage_html, *end = t + fdp_statuspage_html_len;
    int skip = 0;

    if (slots == NULL) {
        b->oom = 1;
        return;
    }
    while (t < end) {
        const char *m = strstr(t, "<!--fdp:"), *name, *close;
        size_t len;

        if (m == NULL) {
            m = end;
        }
        if (!skip) {
            fdp_buf_printf(b, "%.*s", (int) (m - t), t);
        }
        if (m == end) {
            break;
        }
        name = m + 8;
        close = strstr(name, "-->");
        if (close == NULL) {
            break;          /* a broken template: cut short, never loop */
        }
        len = (size_t) (close - name);
        t = close + 3;
        if (len == 3 && memcmp(name, "/js", 3) == 0) {
            skip = 0;
        } else if (skip) {
            continue;
        } else if (len == 2 && memcmp(name, "js", 2) == 0) {
            skip = refresh > 0;
        } else if (len == 4 && memcmp(name, "meta", 4) == 0 && refresh) {
            fdp_buf_printf(b, "<meta http-equiv=\"refresh\" content=\"%d\">",
                           refresh);
        } else if (len == 4 && memcmp(name, "mode", 4) == 0) {
            if (refresh) {
                fdp_buf_printf(b, "reloads every %d s &middot; "
                               "<a href=\"status\">live page</a>", refresh);
            } else {
                fdp_buf_printf(b, "snapshot &middot; <a href=\"status?"
                               "refresh=5\">plain page, reloads every 5 s</a>");
            }
        } else if (len == 4 && memcmp(name, "pool", 4) == 0) {
            render_pool(b, &info);
        } else if (len == 4 && memcmp(name, "rows", 4) == 0) {
            render_rows(b, &info, slots, p->nworkers);
        }
    }
    free(slots);
}


/* ---- HTTP ---- */

static void
respond(struct fdp_buf *out, const char *status, const char *type,
        const char *extra, struct fdp_buf *body, int head)
{
    fdp_buf_printf(out, "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                   "X-Content-Type-Options: nosniff\r\n%s"
                   "Connection: close\r\n\r\n", status, type, body->len,
                   extra ? extra : "");
    if (!head && body->len) {
        fdp_buf_printf(out, "%.*s", (int) body->len, body->data);
    }
    out->oom |= body->oom;
}


static void
respond_text(struct fdp_buf *out, const char *status, const char *extra,
             const char *text, int head)
{
    struct fdp_buf body;

    memset(&body, 0, sizeof(body));
    fdp_buf_printf(&body, "%s\n", text);
    respond(out, status, "text/plain; charset=utf-8", extra, &body, head);
    fdp_buf_free(&body);
}


/*
 * "METHOD SP /target SP HTTP/1.x" after any empty lines, cut in place.
 * Returns 0, or the status line of the refusal.
 */
static const char *
parse_request(char *req, struct req *r)
{
    char *line = req, *eol, *sp, *target, *version, *q;

    while (*line == '\r' || *line == '\n') {
        line++;
    }
    eol = strchr(line, '\n');
    if (eol == NULL) {
        return "400 Bad Request";
    }
    if (eol > line && eol[-1] == '\r') {
        eol--;
    }
    *eol = '\0';
    sp = strchr(line, ' ');
    if (sp == NULL || sp == line || sp - line > 16) {
        return "400 Bad Request";
    }
    for (q = line; q < sp; q++) {
        if (*q < 'A' || *q > 'Z') {
            return "400 Bad Request";
        }
    }
    *sp = '\0';
    target = sp + 1;
    sp = strchr(target, ' ');
    if (sp == NULL || *target != '/') {
        return "400 Bad Request";
    }
    *sp = '\0';
    version = sp + 1;
    for (q = target; *q; q++) {
        if ((unsigned char) *q <= 0x20 || (unsigned char) *q >= 0x7f) {
            return "400 Bad Request";
        }
    }
    if (strncmp(version, "HTTP/", 5) != 0 || version[5] < '0'
        || version[5] > '9' || version[6] != '.' || version[7] < '0'
        || version[7] > '9' || version[8] != '\0') {
        return "400 Bad Request";
    }
    if (version[5] != '1') {
        return "505 HTTP Version Not Supported";
    }
    if (strcmp(line, "GET") == 0) {
        r->head = 0;
    } else if (strcmp(line, "HEAD") == 0) {
        r->head = 1;
    } else {
        return "405 Method Not Allowed";
    }
    r->path = target;
    r->query = NULL;
    q = strchr(target, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }
    q = strchr(target, '#');
    if (q) {
        *q = '\0';
    }
    return NULL;
}


/*
 * ?refresh=N among the query's name=value pairs (& or ; between them);
 * other names are ignored. Returns N, 0 when absent, -EINVAL when
 * malformed or out of 1..REFRESH_MAX.
 */
static int
query_refresh(const char *q)
{
    int refresh = 0;

    while (q && *q) {
        size_t len = strcspn(q, "&;");

        if (len >= 8 && memcmp(q, "refresh=", 8) == 0) {
            const char *d = q + 8;
            long v = 0;
            size_t i, nd = len - 8;

            if (nd == 0 || nd > 5) {
                return -EINVAL;
            }
            for (i = 0; i < nd; i++) {
                if (d[i] < '0' || d[i] > '9') {
                    return -EINVAL;
                }
                v = v * 10 + (d[i] - '0');
            }
            if (v < 1 || v > REFRESH_MAX) {
                return -EINVAL;
            }
            refresh = (int) v;
        } else if (len == 7 && memcmp(q, "refresh", 7) == 0) {
            return -EINVAL;
        }
        q += len;
        if (*q) {
            q++;
        }
    }
    return refresh;
}


#define PAGE_CSP "Content-Security-Policy: default-src 'none'; " \
    "script-src 'unsafe-inline'; style-src 'unsafe-inline'; " \
    "connect-src 'self'; img-src data:; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'\r\n" \
    "Referrer-Policy: no-referrer\r\n"


int
fdp_statuspage_http(struct fdp_pool *p, char *req, size_t size,
                    struct fdp_buf *out, int *head)
{
    struct req r;
    struct fdp_buf body;
    const char *refused = parse_request(req, &r);

    *head = 0;
    if (refused) {
        respond_text(out, refused, strncmp(refused, "405", 3) == 0
                     ? "Allow: GET, HEAD\r\n" : NULL,
                     strncmp(refused, "405", 3) == 0
                     ? "only GET and HEAD here" : refused + 4, 0);
        return 1;
    }
    memset(&body, 0, sizeof(body));
    if (strcmp(r.path, "/status.json") == 0) {
        struct fdp_status_info info;
        const char *listen[FDP_MAX_LISTEN];
        struct fdp_slot *slots = fdp_pool_snapshot(p, &info, listen, 1);

        if (slots == NULL) {
            out->oom = 1;
            return 1;
        }
        fdp_status_json(&body, &info, slots, p->nworkers);
        free(slots);
        respond(out, "200 OK", "application/json", NULL, &body, r.head);
    } else if (strcmp(r.path, "/status") == 0) {
        int refresh = query_refresh(r.query);

        if (refresh < 0) {
            respond_text(out, "400 Bad Request", NULL, "refresh must be a "
                         "whole number of seconds from 1 to 3600", r.head);
            return 1;
        }
        render_page(&body, p, refresh);
        respond(out, "200 OK", "text/html; charset=utf-8", PAGE_CSP, &body,
                r.head);
    } else if (strcmp(r.path, "/metrics") == 0
               || strcmp(r.path, "/healthz") == 0) {
        char path[16];

        /* For the answers in control.c, which look at "GET /path ". */
        snprintf(path, sizeof(path), "%s", r.path);
        *head = r.head;
        snprintf(req, size, "GET %s \r\n\r\n", path);
        return 0;
    } else {
        respond_text(out, "404 Not Found", NULL, "try /status, /status.json, "
                     "/metrics or /healthz", r.head);
    }
    fdp_buf_free(&body);
    return 1;
}


void
fdp_statuspage_head_only(struct fdp_buf *out)
{
    char *end;

    if (out->data == NULL) {
        return;
    }
    end = memmem(out->data, out->len, "\r\n\r\n", 4);
    if (end) {
        out->len = (size_t) (end + 4 - out->data);
    }
}


void
fdp_statuspage_too_large(struct fdp_buf *out)
{
    respond_text(out, "431 Request Header Fields Too Large", NULL,
                 "request head too large", 0);
}


/*
 * Called once the answer is sent, before the close. Send FIN first, then
 * read and drop what the client sent beyond the head (a body, the rest of
 * a head too big), at most 64 KiB and without waiting: closing a socket
 * with unread bytes sends RST, which can destroy the answer before the
 * client has read it. Bytes that arrive after the drain still draw an
 * RST, but it now comes after the FIN, so the client reads the answer
 * and its end.
 */
void
fdp_statuspage_drain(int fd)
{
    char buf[4096];
    int i;

    (void) shutdown(fd, SHUT_WR);

    for (i = 0; i < 16; i++) {
        if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0) {
            break;
        }
    }
}
