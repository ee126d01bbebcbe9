/*
 * http_parse.h - HTTP/1.x framing as pure functions, no Lua and no I/O,
 * so they can be fuzzed and unit-tested: the request head and the
 * response head (start line and header fields, RFC 9112 2-5) and an
 * incremental chunked body decoder (RFC 9112 7.1). lhttp.c drives them
 * from a conn's (or a client socket's) read buffer.
 */
#ifndef FDP_HTTP_PARSE_H
#define FDP_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define FDP_HTTP_FIELDS_MAX     100     /* header fields in a head */
#define FDP_HTTP_EXT_MAX        1024    /* bytes of chunk-ext on one line */
#define FDP_HTTP_TRAILERS_MAX   100     /* trailer fields */
#define FDP_HTTP_TRAILER_BYTES  8192    /* bytes of the trailer section */
#define FDP_HTTP_EXCESS_MAX     16384   /* framing bytes past the data's allowance */

/* Results: 0 or a positive state on success, these on a framing error:
 * this parser's own codes naming the rule broken, not errnos (read them
 * with fdp_http_strerror; see ARCHITECTURE.md, Error convention). */
enum {
    FDP_HTTP_EBADLINE = -1,     /* request line */
    FDP_HTTP_EVERSION = -2,     /* HTTP major version other than 1: 505 */
    FDP_HTTP_EHEADER = -3,      /* header line: name, colon, obs-fold, LF */
    FDP_HTTP_EVALUE = -4,       /* header value: control characters */
    FDP_HTTP_ETOOMANY = -5,     /* more than FDP_HTTP_FIELDS_MAX: 431 */
    FDP_HTTP_ECHUNKSIZE = -6,   /* chunk-size: not 1..16 hex digits */
    FDP_HTTP_ECHUNKEXT = -7,    /* chunk-ext: grammar or length */
    FDP_HTTP_ECHUNK = -8,       /* no CRLF where the framing needs one */
    FDP_HTTP_ETRAILER = -9,     /* trailer section: grammar or limits */
    FDP_HTTP_ESTATUS = -10      /* a response's status line, or not 1.x */
};

struct fdp_http_field {
    const char *name;           /* lower-cased in place */
    size_t name_len;
    const char *value;          /* without leading/trailing OWS */
    size_t value_len;
};

struct fdp_http_head {
    const char *method;         /* NULL until the request line parsed */
    size_t method_len;
    const char *target;
    size_t target_len;
    int status;                 /* a response's: 100..999 */
    const char *reason;         /* a response's reason phrase */
    size_t reason_len;
    int minor;                  /* 0 or 1: HTTP/1.2..1.9 read as 1.1 */
    size_t nfields;
    struct fdp_http_field fields[FDP_HTTP_FIELDS_MAX];
};

int fdp_http_parse_head(char *s, size_t n, struct fdp_http_head *h);

/* As fdp_http_parse_head, given where the head's first nnl LFs are (in
 * order: every LF of [s, s+n) up to the nnl-th, as a scan for the head's
 * end finds them), so that its lines need not be searched again. At
 * most FDP_HTTP_LINES_MAX are worth giving. */
#define FDP_HTTP_LINES_MAX      32
int fdp_http_parse_head_lines(char *s, size_t n, const char *const *lf,
                              size_t nlf, struct fdp_http_head *h);
int fdp_http_parse_response(char *s, size_t n, struct fdp_http_head *h);
/* The first bytes of a request head still coming that no request line
 * can begin with: 1 (answer 400 now), else 0 (wait for more). */
#define FDP_HTTP_HOPELESS_LOOK  256     /* bytes it looks at, at most */
int fdp_http_line_hopeless(const char *s, size_t n);
const char *fdp_http_strerror(int err);

/*
 * The chunked decoder: zero it (or fdp_http_chunked_init), then call
 * fdp_http_chunked_next with the bytes at hand. It consumes framing bytes
 * (*used of them) and returns
 *   FDP_HTTP_CHUNK_AGAIN  all of buf was framing: call again with more;
 *   FDP_HTTP_CHUNK_DATA   d->left bytes of chunk data start at buf+*used:
 *                         take k <= d->left of them, fdp_http_chunked_take
 *                         (d, k), and call again after them;
 *   FDP_HTTP_CHUNK_DONE   the body and trailers ended at buf+*used;
 *   or a FDP_HTTP_E* error (the stream cannot be resynchronised).
 */
enum {
    FDP_HTTP_CHUNK_AGAIN = 0,
    FDP_HTTP_CHUNK_DATA = 1,
    FDP_HTTP_CHUNK_DONE = 2
};

struct fdp_http_chunked {
    int state;
    unsigned ndigits;           /* hex digits of the current size */
    size_t ext;                 /* chunk-ext bytes on the current line */
    size_t trailer_bytes;
    unsigned ntrailers;
    uint64_t left;              /* data bytes left in the current chunk */
    uint64_t total;             /* data bytes of the body so far */
    uint64_t excess;            /* framing bytes not paid for by data */
};

void fdp_http_chunked_init(struct fdp_http_chunked *d);
int fdp_http_chunked_next(struct fdp_http_chunked *d, const char *buf,
                          size_t n, size_t *used);
void fdp_http_chunked_take(struct fdp_http_chunked *d, uint64_t k);

#endif
