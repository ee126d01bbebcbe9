/*
 * proxy.c - parse a PROXY protocol header at the start of a connection.
 * Returns the header's length (> 0) with the client's address in *src
 * (*len = 0 for LOCAL/UNKNOWN: keep the real peer), 0 when more bytes
 * are needed, -EINVAL when it is not a valid header. Never reads past n.
 * Also the accept filter's test for a complete HTTP request head. Both
 * are pure functions over bytes the master peeked at, so they are fuzzed
 * and unit-tested.
 */
#include "proxy.h"
#include "http_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v2sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};


static int
parse_port(const char *s, size_t n, uint16_t *port)
{
    unsigned long v = 0;
    size_t i;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) {
        return -EINVAL;
    }
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -EINVAL;
        }
        v = v * 10 + (unsigned long) (s[i] - '0');
    }
    if (v > 65535) {
        return -EINVAL;
    }
    *port = (uint16_t) v;
    return 0;
}


/* "PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n", at most 107 bytes. */
static int
parse_v1(const uint8_t *buf, size_t n, struct sockaddr_storage *src,
         socklen_t *len)
{
    const char *s = (const char *) buf, *end, *f[7];
    size_t fl[7], i, k = 0;
    char ip[64];
    uint16_t port;

    end = memchr(s, '\n', n < 107 ? n : 107);
    if (end == NULL) {
        return n >= 107 ? -EINVAL : 0;
    }
    /* CR LF ends it; no NUL inside (inet_pton would stop at one and take
     * "1.2.3.4\0junk" for 1.2.3.4), no space before the CR (an empty
     * last field). */
    if (end == s || end[-1] != '\r' || memchr(s, '\0', (size_t) (end - s))
        || (end - s >= 2 && end[-2] == ' ')) {
        return -EINVAL;
    }
    /* Split the line (without CR LF) on single spaces; a seventh field
     * makes k 7 and the header invalid. */
    for (i = 0; s + i < end - 1 && k < 7;) {
        size_t j = i;

        while (s + j < end - 1 && s[j] != ' ') {
            j++;
        }
        f[k] = s + i;
        fl[k++] = j - i;
        i = j + 1;
        if (s + j == end - 1) {
            break;
        }
    }
    if (k < 2 || fl[0] != 5 || memcmp(f[0], "PROXY", 5) != 0) {
        return -EINVAL;
    }
    if (fl[1] == 7 && memcmp(f[1], "UNKNOWN", 7) == 0) {
        *len = 0;
        return (int) (end - s + 1);
    }
    if (k != 6 || fl[1] != 4 || (memcmp(f[1], "TCP4", 4) != 0
                                 && memcmp(f[1], "TCP6", 4) != 0)) {
        return -EINVAL;
    }
    if (fl[2] == 0 || fl[2] >= sizeof(ip) || fl[3] == 0 || fl[3] >= sizeof(ip)
        || parse_port(f[4], fl[4], &port) < 0
        || parse_port(f[5], fl[5], &port) < 0) {
        return -EINVAL;
    }
    /* The destination must be an address of the same family too. */
    {
        unsigned char dst[16];

        memcpy(ip, f[3], fl[3]);
        ip[fl[3]] = '\0';
        if (inet_pton(f[1][3] == '4' ? AF_INET : AF_INET6, ip, dst) != 1) {
            return -EINVAL;
        }
    }
    (void) parse_port(f[4], fl[4], &port);
    memcpy(ip, f[2], fl[2]);
    ip[fl[2]] = '\0';
    memset(src, 0, sizeof(*src));
    if (f[1][3] == '4') {
        struct sockaddr_in *in = (struct sockaddr_in *) src;

        if (inet_pton(AF_INET, ip, &in->sin_addr) != 1) {
            return -EINVAL;
        }
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        *len = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) src;

        if (inet_pton(AF_INET6, ip, &in6->sin6_addr) != 1) {
            return -EINVAL;
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof(*in6);
    }
    return (int) (end - s + 1);
}


static int
parse_v2(const uint8_t *buf, size_t n, struct sockaddr_storage *src,
         socklen_t *len)
{
    size_t total, alen;
    uint8_t ver_cmd, fam;

    if (n < 16) {
        return 0;
    }
    ver_cmd = buf[12];
    fam = buf[13];
    alen = ((size_t) buf[14] << 8) | buf[15];
    total = 16 + alen;
    if ((ver_cmd & 0xF0) != 0x20 || total > FDP_PROXY_MAX) {
        return -EINVAL;
    }
    if (n < total) {
        return 0;
    }
    memset(src, 0, sizeof(*src));
    *len = 0;
    if ((ver_cmd & 0x0F) == 0x00) {         /* LOCAL: health check */
        return (int) total;
    }
    /* PROXY: the family (UNSPEC, INET, INET6, UNIX) and transport
     * (UNSPEC, STREAM, DGRAM) must be ones the spec defines: receivers
     * drop unexpected values. */
    if ((ver_cmd & 0x0F) != 0x01 || (fam >> 4) > 3 || (fam & 0x0F) > 2) {
        return -EINVAL;
    }
    if (fam == 0x11) {                      /* TCP over IPv4 */
        struct sockaddr_in *in = (struct sockaddr_in *) src;

        if (alen < 12) {
            return -EINVAL;
        }
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, buf + 16, 4);
        memcpy(&in->sin_port, buf + 24, 2);
        *len = sizeof(*in);
    } else if (fam == 0x21) {               /* TCP over IPv6 */
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) src;

        if (alen < 36) {
            return -EINVAL;
        }
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, buf + 16, 16);
        memcpy(&in6->sin6_port, buf + 48, 2);
        *len = sizeof(*in6);
    }
    /* Other families (UNSPEC, unix, UDP): keep the real peer. */
    return (int) total;
}


int
fdp_proxy_parse(const uint8_t *buf, size_t n, struct sockaddr_storage *src,
                socklen_t *len)
{
    size_t k = n < sizeof(v2sig) ? n : sizeof(v2sig);

    *len = 0;
    if (n == 0) {
        return 0;
    }
    if (memcmp(buf, v2sig, k) == 0) {
        return n < sizeof(v2sig) ? 0 : parse_v2(buf, n, src, len);
    }
    if (memcmp(buf, "PROXY ", n < 6 ? n : 6) == 0) {
        return n < 6 ? 0 : parse_v1(buf, n, src, len);
    }
    return -EINVAL;
}


/*
 * Does [s, s+n) hold a complete request head, as conn:readrequest reads
 * it: empty lines before the request skipped, then up to an empty line
 * (CRLF CRLF, or bare LFs, which it finds too and then refuses)? Or the
 * start of something that can never be one (fdp_http_line_hopeless: a
 * TLS ClientHello on a plain port), which the worker refuses at once as
 * conn:readrequest does? 1 or 0. Pure.
 */
int
fdp_http_head_complete(const char *s, size_t n)
{
    const char *end = s + n, *p = s;

    while (p < end && (*p == '\r' || *p == '\n')) {
        p++;
    }
    if (fdp_http_line_hopeless(p, (size_t) (end - p) < FDP_HTTP_HOPELESS_LOOK
                               ? (size_t) (end - p) : FDP_HTTP_HOPELESS_LOOK)) {
        return 1;
    }
    while (p < end) {
        p = memchr(p, '\n', (size_t) (end - p));
        if (p == NULL) {
            return 0;
        }
        if ((p + 1 < end && p[1] == '\n')
            || (p + 2 < end && p[1] == '\r' && p[2] == '\n')) {
            return 1;
        }
        p++;
    }
    return 0;
}
