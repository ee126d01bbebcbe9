/*
 * statuspage.h - the --metrics listener's pages for people and scripts:
 * GET /status (an HTML page, live with JavaScript, or rendered by the
 * master with ?refresh=N), GET /status.json (what `pool status --json`
 * prints), and the request-line checks every request on that listener
 * goes through first (src/control.c answers /metrics and /healthz).
 */
#ifndef FDP_STATUSPAGE_H
#define FDP_STATUSPAGE_H

#include <stddef.h>

#include "status.h"

struct fdp_pool;

/* The page's template (src/statuspage.html, embedded at build time by
 * scripts/embed.lua --blob into build/statuspage_html.c). */
extern const char fdp_statuspage_html[];
extern const size_t fdp_statuspage_html_len;

/* The snapshot every page starts from is pool.h's fdp_pool_snapshot. */

/*
 * One complete request head (NUL-terminated in req, a buffer of size
 * bytes) on the --metrics listener. Answers into out and returns 1 for
 * /status, /status.json, a malformed request line (400), a method other
 * than GET or HEAD (405), an HTTP version other than 1.x (505) and
 * unknown paths (404). Returns 0 for /metrics and /healthz, with req
 * rewritten to "GET /metrics \r\n\r\n" (query dropped) and *head set
 * for a HEAD request: the caller answers, then calls
 * fdp_statuspage_head_only when *head is set.
 */
int fdp_statuspage_http(struct fdp_pool *p, char *req, size_t size,
                        struct fdp_buf *out, int *head);

/* Drop the body of a response in out, keeping its headers (HEAD). */
void fdp_statuspage_head_only(struct fdp_buf *out);

/* A request head that does not fit the listener's buffer: 431. */
void fdp_statuspage_too_large(struct fdp_buf *out);

/* Before closing a --metrics client: drop what it sent that was not
 * read, so that the close is a FIN, not a RST. */
void fdp_statuspage_drain(int fd);

#endif
