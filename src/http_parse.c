/*
 * http_parse.c - HTTP/1.x framing without Lua or I/O: the head parsers
 * (a request line or a response's status line, then the header fields,
 * one field parser for both) and the incremental chunked body decoder.
 * Strict as llhttp without its lenient flags: CRLF only (a response may
 * end its lines in a bare LF), no obs-fold, no whitespace before a
 * colon, chunk sizes of 1 to 16 hex digits, chunk extensions and
 * trailers by the RFC 9112 grammar.
 */
#include "http_parse.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>


/* tchar (RFC 9110 5.6.2): the bytes of a token. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1
};


/* field-vchar, SP and HTAB: what a field value may hold (obs-text too). */
static int
is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}


/* is_field_byte as a table, for field_bytes_ok's byte-by-byte part */
#define FB16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char field_byte[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,     /* HTAB */
    FB16(0),
    FB16(1), FB16(1), FB16(1), FB16(1), FB16(1),        /* 0x20-0x6f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,     /* DEL */
    FB16(1), FB16(1), FB16(1), FB16(1),                 /* obs-text */
    FB16(1), FB16(1), FB16(1), FB16(1)
};
#undef FB16


/* A hex digit's value, or -EINVAL. */
static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -EINVAL;
}


const char *
fdp_http_strerror(int err)
{
    switch (err) {
    case FDP_HTTP_EBADLINE:
        return "bad request line";
    case FDP_HTTP_EVERSION:
        return "unsupported HTTP version";
    case FDP_HTTP_EHEADER:
        return "bad header line";
    case FDP_HTTP_EVALUE:
        return "bad header value";
    case FDP_HTTP_ETOOMANY:
        return "too many headers";
    case FDP_HTTP_ECHUNKSIZE:
        return "bad chunk size";
    case FDP_HTTP_ECHUNKEXT:
        return "bad chunk extension";
    case FDP_HTTP_ECHUNK:
        return "bad chunk";
    case FDP_HTTP_ETRAILER:
        return "bad trailer";
    case FDP_HTTP_ESTATUS:
        return "bad status line";
    default:
        return "bad request";
    }
}


/*
 * The line at s ending in CRLF: its end (at the CR) in *eol and the next
 * line in *next. Returns 0 when the line ends in a bare LF or has no LF.
 */
/* Every byte in [p, e) a field byte (is_field_byte), 8 at a time while
 * none is below 0x20 or 0x7f (per byte, no carry between bytes: low 7
 * bits + 0x60 reach the high bit from 0x20 on; (b ^ 0x7f) is zero only
 * for DEL); from a chunk with one (an HTAB too), byte by byte. */
static int
field_bytes_ok(const char *p, const char *e)
{
    const uint64_t hi = 0x8080808080808080ULL, lo7 = 0x7f7f7f7f7f7f7f7fULL;
    uint64_t x, y;

    for (; e - p >= 8; p += 8) {
        memcpy(&x, p, 8);
        y = x ^ lo7;
        if ((~(((x & lo7) + 0x6060606060606060ULL) | x)
             | ~(((y & lo7) + lo7) | y)) & hi) {
            break;
        }
    }
    for (; p < e; p++) {
        if (!field_byte[(unsigned char) *p]) {
            return 0;
        }
    }
    return 1;
}


/* Lower-case the n bytes of a field name at q (tchars: all below 0x80),
 * 8 (then 4) at a time: a byte's high bit in (x + 0x3f) says >= 'A', in (x +
 * 0x25) >= '[', and no sum carries into the next byte. */
static void
lower_name(char *q, size_t n)
{
    uint64_t x, m;

    for (; n >= 8; q += 8, n -= 8) {
        memcpy(&x, q, 8);
        m = (x + 0x3f3f3f3f3f3f3f3fULL) & ~(x + 0x2525252525252525ULL)
            & 0x8080808080808080ULL;
        x |= m >> 2;
        memcpy(q, &x, 8);
    }
    if (n >= 4) {
        uint32_t y, k;

        memcpy(&y, q, 4);
        k = (y + 0x3f3f3f3fU) & ~(y + 0x25252525U) & 0x80808080U;
        y |= k >> 2;
        memcpy(q, &y, 4);
        q += 4;
        n -= 4;
    }
    for (; n > 0; q++, n--) {
        if (*q >= 'A' && *q <= 'Z') {
            *q = (char) (*q + 32);
        }
    }
}


/* A request head's LFs known to its parser: lf[i..n) are the next ones
 * (fdp_http_parse_head_lines). */
struct lfs {
    const char *const *lf;
    size_t i, n;
};


static int
crlf_line(const char *s, const char *end, const char **eol,
          const char **next, struct lfs *k)
{
    const char *nl;

    if (k->i < k->n) {
        nl = k->lf[k->i++];
    } else {
        nl = memchr(s, '\n', (size_t) (end - s));
    }
    if (nl == NULL || nl == s || nl[-1] != '\r') {
        return 0;
    }
    *eol = nl - 1;
    *next = nl + 1;
    return 1;
}


/*
 * The line at s: its end (at the CR of a CRLF, or at a bare LF) in *eol
 * and the next line in *next; 0 when no LF is left. Responses only: a
 * client MAY take a bare LF as a line end (RFC 9112 2.2), as nginx's
 * upstream parser does; a lone CR stays a bad byte.
 */
static int
lf_line(const char *s, const char *end, const char **eol,
        const char **next)
{
    const char *nl = memchr(s, '\n', (size_t) (end - s));

    if (nl == NULL) {
        return 0;
    }
    *eol = nl > s && nl[-1] == '\r' ? nl - 1 : nl;
    *next = nl + 1;
    return 1;
}


/*
 * The header section after the start line, from next to the empty line,
 * into h->fields: *( field-line CRLF ) CRLF, field-line = name ":" OWS
 * value OWS. lf_ok: a bare LF ends a line too (responses). Names are
 * lower-cased in place only when the whole section parsed.
 */
static int
parse_fields(const char *next, const char *end, struct fdp_http_head *h,
             int lf_ok, struct lfs *k)
{
    const char *eol;
    size_t i;

    for (;;) {
        char *line = (char *) next, *q;
        const char *v, *ve;

        if (!(lf_ok ? lf_line(line, end, &eol, &next)
              : crlf_line(line, end, &eol, &next, k))) {
            return FDP_HTTP_EHEADER;        /* a request's bare LF */
        }
        if (eol == line) {
            break;
        }
        if (lf_ok && (*line == ' ' || *line == '\t') && h->nfields > 0) {
            /* A response's obs-fold: a user agent replaces it with SP
             * (RFC 9112 5.2), in place: this line's text moves back to
             * one SP after the previous value's end (bytes no span
             * holds: its trailing OWS, the line break, the indent). */
            struct fdp_http_field *f = &h->fields[h->nfields - 1];
            char *pe = (char *) f->value + f->value_len;

            v = line;
            ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            if (v == ve) {
                continue;                   /* an empty continuation */
            }
            if (!field_bytes_ok(v, ve)) {
                return FDP_HTTP_EVALUE;
            }
            if (f->value_len == 0) {
                f->value = v;
                f->value_len = (size_t) (ve - v);
            } else {
                *pe = ' ';
                memmove(pe + 1, v, (size_t) (ve - v));
                f->value_len += 1 + (size_t) (ve - v);
            }
            continue;
        }
        if (h->nfields == FDP_HTTP_FIELDS_MAX) {
            return FDP_HTTP_ETOOMANY;
        }
        /* A leading SP/HTAB (a request's obs-fold) or a space before the colon
         * fails here: neither is a tchar. (No bound check: the byte at
         * eol, CR or LF, is not one either.) */
        for (q = line; tchar[(unsigned char) q[0]] && tchar[(unsigned char) q[1]];
             q += 2) {
        }
        q += tchar[(unsigned char) q[0]];
        if (q == line || q == eol || *q != ':') {
            return FDP_HTTP_EHEADER;
        }
        v = q + 1;
        ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
            ve--;
        }
        if (!field_bytes_ok(v, ve)) {
            return FDP_HTTP_EVALUE;
        }
        h->fields[h->nfields].name = line;
        h->fields[h->nfields].name_len = (size_t) (q - line);
        h->fields[h->nfields].value = v;
        h->fields[h->nfields].value_len = (size_t) (ve - v);
        h->nfields++;
    }
    /* Lower-case the names only now: a refused head stays as it came
     * (conn:receive may still read it). */
    for (i = 0; i < h->nfields; i++) {
        lower_name((char *) h->fields[i].name, h->fields[i].name_len);
    }
    return 0;
}


/*
 * [s, s+n) is the start of a request head that has not ended: can no
 * request line fdp_http_parse_head takes begin so? Empty lines before
 * it skipped, then method SP target SP "HTTP/" DIGIT "." DIGIT CRLF,
 * each byte checked where it stands, up to the line's end or n (the
 * caller bounds n: FDP_HTTP_HOPELESS_LOOK). 1 means the parser would
 * refuse the line whatever came next (a TLS hello or binary junk on a
 * plain port, a version that is not HTTP/x.y), so the client is answered
 * at once instead of when head_timeout runs out. Pure.
 */
int
fdp_http_line_hopeless(const char *s, size_t n)
{
    static const char ver[] = "HTTP/0.0\r\n";      /* 0: a digit */
    const char *p = s, *end = s + n, *f;
    size_t i;

    while (p < end && (*p == '\r' || *p == '\n')) {
        p++;
    }
    for (f = p; p < end && tchar[(unsigned char) *p]; p++) {
    }
    if (p == end) {
        return 0;
    }
    if (p == f || *p != ' ') {
        return 1;                           /* method */
    }
    for (f = ++p; p < end && (unsigned char) *p > 0x20 && *p != 0x7f; p++) {
    }
    if (p == end) {
        return 0;
    }
    if (p == f || *p != ' ') {
        return 1;                           /* target */
    }
    for (p++, i = 0; p < end && i < sizeof(ver) - 1; p++, i++) {
        if (ver[i] == '0' ? *p < '0' || *p > '9' : *p != ver[i]) {
            return 1;                       /* version, line end */
        }
    }
    return 0;
}


/*
 * Parse the head in [s, s+n) (it ends with the empty line) into *h: the
 * spans point into s, and header names are lower-cased in place (only
 * when the whole head parsed). Returns
 * 0 or a FDP_HTTP_E* error; h->method is set once the request line
 * parsed, so an error reply can tell a HEAD request.
 */
int
fdp_http_parse_head(char *s, size_t n, struct fdp_http_head *h)
{
    return fdp_http_parse_head_lines(s, n, NULL, 0, h);
}


int
fdp_http_parse_head_lines(char *s, size_t n, const char *const *lf,
                          size_t nlf, struct fdp_http_head *h)
{
    const char *end = s + n, *eol, *next, *p, *sp1, *sp2;
    struct lfs k = { lf, 0, lf != NULL ? nlf : 0 };

    h->method = NULL;
    h->nfields = 0;
    /* request-line = method SP request-target SP HTTP-version CRLF */
    if (!crlf_line(s, end, &eol, &next, &k)) {
        return FDP_HTTP_EBADLINE;
    }
    for (p = s; p < eol && tchar[(unsigned char) *p]; p++) {
    }
    if (p == s || p == eol || *p != ' ') {
        return FDP_HTTP_EBADLINE;
    }
    sp1 = p;
    for (p = sp1 + 1; p < eol && (unsigned char) *p > 0x20 && *p != 0x7f;
         p++) {
    }
    if (p == sp1 + 1 || p == eol || *p != ' ') {
        return FDP_HTTP_EBADLINE;
    }
    sp2 = p;
    if (eol - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/", 5) != 0
        || sp2[6] < '0' || sp2[6] > '9' || sp2[7] != '.'
        || sp2[8] < '0' || sp2[8] > '9') {
        return FDP_HTTP_EBADLINE;
    }
    h->method = s;
    h->method_len = (size_t) (sp1 - s);
    h->target = sp1 + 1;
    h->target_len = (size_t) (sp2 - sp1 - 1);
    if (sp2[6] != '1') {
        return FDP_HTTP_EVERSION;
    }
    h->minor = sp2[8] == '0' ? 0 : 1;
    return parse_fields(next, end, h, 0, &k);
}


/*
 * Parse a response head in [s, s+n) (it ends with the empty line) into
 * *h: status, reason, minor and the fields, as fdp_http_parse_head does
 * for a request (the same field rules, names lower-cased in place), but
 * lines may end in a bare LF. status-line = HTTP-version SP 3DIGIT
 * [ SP reason-phrase ] (a missing reason is taken, as nginx does).
 * Returns 0 or a FDP_HTTP_E* error (FDP_HTTP_ESTATUS for the status
 * line, a major version other than 1 included).
 */
int
fdp_http_parse_response(char *s, size_t n, struct fdp_http_head *h)
{
    const char *end = s + n, *eol, *next, *p;

    h->method = NULL;
    h->nfields = 0;
    h->status = 0;
    if (!lf_line(s, end, &eol, &next) || eol - s < 12
        || memcmp(s, "HTTP/1.", 7) != 0 || s[7] < '0' || s[7] > '9'
        || s[8] != ' ' || s[9] < '1' || s[9] > '9' || s[10] < '0'
        || s[10] > '9' || s[11] < '0' || s[11] > '9'
        || (eol - s > 12 && s[12] != ' ')) {
        return FDP_HTTP_ESTATUS;
    }
    for (p = s + 12; p < eol; p++) {
        if (!is_field_byte((unsigned char) *p)) {
            return FDP_HTTP_ESTATUS;
        }
    }
    h->minor = s[7] == '0' ? 0 : 1;
    h->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    h->reason = eol - s > 12 ? s + 13 : eol;
    h->reason_len = (size_t) (eol - h->reason);
    return parse_fields(next, end, h, 1, NULL);
}


/* ---- chunked transfer coding (RFC 9112 7.1) -------------------------- */

enum {
    CH_SIZE,            /* chunk-size hex digits */
    CH_SIZE_WS,         /* BWS after the size: only ";" may follow */
    CH_EXT_NAME0,       /* after ";": BWS, then ext-name */
    CH_EXT_NAME,
    CH_EXT_NAME_WS,     /* BWS after a name: "=" or ";" */
    CH_EXT_VAL0,        /* after "=": BWS, then token or quoted-string */
    CH_EXT_TOKEN,
    CH_EXT_QUOTED,
    CH_EXT_QPAIR,       /* after a backslash in a quoted-string */
    CH_EXT_VAL_END,     /* after a closing quote: ";", CR or BWS */
    CH_EXT_VAL_WS,      /* BWS after a value: only ";" may follow */
    CH_SIZE_LF,         /* CR seen at the end of the size line */
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_LINE,         /* start of a trailer line or the final CRLF */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_END_LF,
    CH_DONE
};


void
fdp_http_chunked_init(struct fdp_http_chunked *d)
{
    memset(d, 0, sizeof(*d));
    d->state = CH_SIZE;
}


void
fdp_http_chunked_take(struct fdp_http_chunked *d, uint64_t k)
{
    d->left -= k;
    d->total += k;
}


/* Where the chunk-ext states end the line, count and bound its bytes. */
#define EXT_BYTE() do { \
    if (++d->ext > FDP_HTTP_EXT_MAX) { \
        goto bad_ext; \
    } \
} while (0)


int
fdp_http_chunked_next(struct fdp_http_chunked *d, const char *buf,
                      size_t n, size_t *used)
{
    size_t i = 0;
    int err;

    if (d->state < 0) {
        *used = 0;
        return d->state;
    }
    while (i < n || d->state == CH_DATA || d->state == CH_DONE) {
        unsigned char c;
        int x;

        if (d->state == CH_DONE) {
            *used = i;
            return FDP_HTTP_CHUNK_DONE;
        }
        if (d->state == CH_DATA) {
            if (d->left > 0) {
                *used = i;
                return FDP_HTTP_CHUNK_DATA;
            }
            d->state = CH_DATA_CR;
            continue;
        }
        c = (unsigned char) buf[i++];
        if (d->state >= CH_TR_LINE && d->state <= CH_TR_LF
            && ++d->trailer_bytes > FDP_HTTP_TRAILER_BYTES) {
            goto bad_trailer;
        }
        switch (d->state) {
        case CH_SIZE:
            x = hexval(c);
            if (x >= 0) {
                if (++d->ndigits > 16) {
                    goto bad_size;
                }
                d->left = d->left * 16 + (uint64_t) x;
            } else if (d->ndigits == 0) {
                goto bad_size;
            } else if (c == ';') {
                d->state = CH_EXT_NAME0;
                EXT_BYTE();
            } else if (c == ' ' || c == '\t') {
                d->state = CH_SIZE_WS;
                EXT_BYTE();
            } else if (c == '\r') {
                d->state = CH_SIZE_LF;
            } else {
                goto bad_size;
            }
            break;
        case CH_SIZE_WS:
            EXT_BYTE();
            if (c == ';') {
                d->state = CH_EXT_NAME0;
            } else if (c != ' ' && c != '\t') {
                goto bad_size;
            }
            break;
        case CH_EXT_NAME0:
            EXT_BYTE();
            if (tchar[c]) {
                d->state = CH_EXT_NAME;
            } else if (c != ' ' && c != '\t') {
                goto bad_ext;
            }
            break;
        case CH_EXT_NAME:
        case CH_EXT_TOKEN:
            if (c == '\r') {
                d->state = CH_SIZE_LF;
                break;
            }
            EXT_BYTE();
            if (tchar[c]) {
                break;
            }
            if (c == ';') {
                d->state = CH_EXT_NAME0;
            } else if (c == ' ' || c == '\t') {
                d->state = d->state == CH_EXT_NAME ? CH_EXT_NAME_WS
                           : CH_EXT_VAL_WS;
            } else if (c == '=' && d->state == CH_EXT_NAME) {
                d->state = CH_EXT_VAL0;
            } else {
                goto bad_ext;
            }
            break;
        case CH_EXT_NAME_WS:
            EXT_BYTE();
            if (c == '=') {
                d->state = CH_EXT_VAL0;
            } else if (c == ';') {
                d->state = CH_EXT_NAME0;
            } else if (c != ' ' && c != '\t') {
                goto bad_ext;
            }
            break;
        case CH_EXT_VAL0:
            EXT_BYTE();
            if (c == '"') {
                d->state = CH_EXT_QUOTED;
            } else if (tchar[c]) {
                d->state = CH_EXT_TOKEN;
            } else if (c != ' ' && c != '\t') {
                goto bad_ext;
            }
            break;
        case CH_EXT_QUOTED:
            EXT_BYTE();
            /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
            if (c == '"') {
                d->state = CH_EXT_VAL_END;
            } else if (c == '\\') {
                d->state = CH_EXT_QPAIR;
            } else if (!is_field_byte(c)) {
                goto bad_ext;
            }
            break;
        case CH_EXT_QPAIR:
            EXT_BYTE();
            if (!is_field_byte(c)) {
                goto bad_ext;
            }
            d->state = CH_EXT_QUOTED;
            break;
        case CH_EXT_VAL_END:
            if (c == '\r') {
                d->state = CH_SIZE_LF;
                break;
            }
            EXT_BYTE();
            if (c == ';') {
                d->state = CH_EXT_NAME0;
            } else if (c == ' ' || c == '\t') {
                d->state = CH_EXT_VAL_WS;
            } else {
                goto bad_ext;
            }
            break;
        case CH_EXT_VAL_WS:
            EXT_BYTE();
            if (c == ';') {
                d->state = CH_EXT_NAME0;
            } else if (c != ' ' && c != '\t') {
                goto bad_ext;
            }
            break;
        case CH_SIZE_LF:
            if (c != '\n') {
                err = FDP_HTTP_ECHUNK;
                goto fail;
            }
            /* Framing against data, as Go's net/http: each chunk's size
             * line and CRLFs may cost 16 bytes plus twice its data; past
             * 16 KiB owed in all, the body is refused. Else a sender of
             * 1-byte chunks with 1 KiB extensions has the reader take
             * 1000 times max_body off the wire (CVE-2023-39326). */
            {
                uint64_t credit = d->left >= (UINT64_C(1) << 62) ? UINT64_MAX
                                  : 16 + 2 * d->left;

                d->excess += (uint64_t) d->ndigits + d->ext + 4;
                d->excess = d->excess > credit ? d->excess - credit : 0;
                if (d->excess > FDP_HTTP_EXCESS_MAX) {
                    goto bad_ext;
                }
            }
            d->state = d->left > 0 ? CH_DATA : CH_TR_LINE;
            break;
        case CH_DATA_CR:
            if (c != '\r') {
                err = FDP_HTTP_ECHUNK;
                goto fail;
            }
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n') {
                err = FDP_HTTP_ECHUNK;
                goto fail;
            }
            d->state = CH_SIZE;
            d->ndigits = 0;
            d->ext = 0;
            d->left = 0;
            break;
        case CH_TR_LINE:
            if (c == '\r') {
                d->state = CH_END_LF;
            } else if (tchar[c]) {
                if (++d->ntrailers > FDP_HTTP_TRAILERS_MAX) {
                    goto bad_trailer;
                }
                d->state = CH_TR_NAME;
            } else {
                goto bad_trailer;       /* obs-fold, bare LF, junk */
            }
            break;
        case CH_TR_NAME:
            if (c == ':') {
                d->state = CH_TR_VALUE;
            } else if (!tchar[c]) {
                goto bad_trailer;
            }
            break;
        case CH_TR_VALUE:
            if (c == '\r') {
                d->state = CH_TR_LF;
            } else if (!is_field_byte(c)) {
                goto bad_trailer;
            }
            break;
        case CH_TR_LF:
            if (c != '\n') {
                goto bad_trailer;
            }
            d->state = CH_TR_LINE;
            break;
        case CH_END_LF:
            if (c != '\n') {
                err = FDP_HTTP_ECHUNK;
                goto fail;
            }
            d->state = CH_DONE;
            break;
        default:
            err = FDP_HTTP_ECHUNK;
            goto fail;
        }
    }
    *used = i;
    return FDP_HTTP_CHUNK_AGAIN;

bad_size:
    err = FDP_HTTP_ECHUNKSIZE;
    goto fail;
bad_ext:
    err = FDP_HTTP_ECHUNKEXT;
    goto fail;
bad_trailer:
    err = FDP_HTTP_ETRAILER;
fail:
    d->state = err;
    *used = i;
    return err;
}
