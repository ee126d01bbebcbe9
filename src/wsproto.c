/*
 * wsproto.c - WebSocket's byte-level pieces (wsproto.h): SHA-1 and base64
 * for the handshake's Sec-WebSocket-Accept, payload masking, incremental
 * UTF-8 validation; and fdpool.http.json's integer marker. Pure
 * functions: unit-tested in tests/c/test_core.c.
 */
#include "wsproto.h"

#include <errno.h>
#include <string.h>


/* ---- SHA-1 (FIPS 180-4 6.1) ----------------------------------------- */

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))


static void
sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80], a, b, c, d, e, f, k, t;
    int i;

    for (i = 0; i < 16; i++) {
        w[i] = (uint32_t) p[4 * i] << 24 | (uint32_t) p[4 * i + 1] << 16
               | (uint32_t) p[4 * i + 2] << 8 | (uint32_t) p[4 * i + 3];
    }
    for (i = 16; i < 80; i++) {
        w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    a = h[0];
    b = h[1];
    c = h[2];
    d = h[3];
    e = h[4];
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        t = ROL(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = ROL(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}


void
fdp_sha1(const void *data, size_t n, unsigned char out[20])
{
    uint32_t h[5] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476,
                      0xc3d2e1f0 };
    const unsigned char *p = data;
    unsigned char last[128];
    uint64_t bits = (uint64_t) n * 8;
    size_t rest, tail, i;

    while (n >= 64) {
        sha1_block(h, p);
        p += 64;
        n -= 64;
    }
    /* The rest, 0x80, zeros, the length in bits: one or two blocks. */
    rest = n;
    memcpy(last, p, rest);
    last[rest] = 0x80;
    tail = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(last + rest + 1, 0, tail - rest - 1);
    for (i = 0; i < 8; i++) {
        last[tail - 1 - i] = (unsigned char) (bits >> (8 * i));
    }
    sha1_block(h, last);
    if (tail == 128) {
        sha1_block(h, last + 64);
    }
    for (i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char) (h[i] >> 24);
        out[4 * i + 1] = (unsigned char) (h[i] >> 16);
        out[4 * i + 2] = (unsigned char) (h[i] >> 8);
        out[4 * i + 3] = (unsigned char) h[i];
    }
}


/* ---- base64 ----------------------------------------------------------- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


size_t
fdp_base64(const unsigned char *in, size_t n, char *out)
{
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8
                     | in[i + 2];

        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t) in[i] << 16
                     | (i + 1 < n ? (uint32_t) in[i + 1] << 8 : 0);

        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}


/* ---- the handshake ---------------------------------------------------- */

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


int
fdp_ws_accept(const char *key, size_t n, char out[29])
{
    char buf[24 + sizeof(WS_GUID)];
    unsigned char digest[20];
    size_t i;

    /* 16 bytes in base64: 21 characters from the alphabet, a 22nd whose
     * low 4 bits are zero (A, Q, g, w), then "==" (RFC 6455 4.1). */
    if (n != 24 || key[22] != '=' || key[23] != '='
        || strchr("AQgw", key[21]) == NULL || key[21] == '\0') {
        return -EINVAL;
    }
    for (i = 0; i < 21; i++) {
        if (key[i] == '\0' || strchr(b64, key[i]) == NULL) {
            return -EINVAL;
        }
    }
    memcpy(buf, key, 24);
    memcpy(buf + 24, WS_GUID, sizeof(WS_GUID) - 1);
    fdp_sha1(buf, 24 + sizeof(WS_GUID) - 1, digest);
    return (int) fdp_base64(digest, 20, out);
}


/* ---- masking ---------------------------------------------------------- */

void
fdp_ws_mask(unsigned char *buf, size_t n, const unsigned char key[4],
            uint64_t offset)
{
    unsigned char k[4];
    size_t i = 0;
    uint32_t k32;

    for (i = 0; i < 4; i++) {
        k[i] = key[(offset + i) & 3];
    }
    i = 0;
    /* Word at a time over the middle (memcpy: no alignment assumed). */
    memcpy(&k32, k, 4);
    for (; i + 4 <= n; i += 4) {
        uint32_t w;

        memcpy(&w, buf + i, 4);
        w ^= k32;
        memcpy(buf + i, &w, 4);
    }
    for (; i < n; i++) {
        buf[i] ^= k[i & 3];
    }
}


/* ---- UTF-8 ------------------------------------------------------------ */

/*
 * state: bits 0-1 the continuation bytes still needed, bits 8-15 and
 * 16-23 the range the next one must fall in (80..BF but for the second
 * byte after E0, ED, F0, F4: Table 3-7).
 */
int
fdp_utf8_check(uint32_t *state, const unsigned char *s, size_t n)
{
    uint32_t need = *state & 3;
    unsigned lo = (*state >> 8) & 0xff, hi = (*state >> 16) & 0xff;
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned c = s[i];

        if (need) {
            if (c < lo || c > hi) {
                return -EILSEQ;
            }
            need--;
            lo = 0x80;
            hi = 0xbf;
            continue;
        }
        if (c < 0x80) {
            continue;
        }
        lo = 0x80;
        hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0) {
                lo = 0xa0;
            } else if (c == 0xed) {
                hi = 0x9f;
            }
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f;
            }
        } else {
            return -EILSEQ;
        }
    }
    *state = need | (uint32_t) lo << 8 | (uint32_t) hi << 16;
    return need ? 1 : 0;
}


/* ---- JSON integer literals -------------------------------------------- */

static int
num_char(char c)
{
    return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E'
           || c == '+' || c == '-';
}


long
fdp_json_mark(const char *in, size_t n, char *out, size_t *count)
{
    size_t i = 0, o = 0, marked = 0;

    while (i < n) {
        char c = in[i];

        if (c == '"') {
            size_t j = i + 1;

            while (j < n && in[j] != '"') {
                j += in[j] == '\\' ? 2 : 1;
            }
            if (j >= n) {
                *count = i;
                return -EINVAL;
            }
            if (out) {
                memcpy(out + o, in + i, j + 1 - i);
            }
            o += j + 1 - i;
            i = j + 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i + (c == '-'), k;
            int integer;

            k = j;
            while (k < n && in[k] >= '0' && in[k] <= '9') {
                k++;
            }
            if (k - j > 1 && in[j] == '0') {
                *count = i;
                return -EINVAL;
            }
            integer = k > j && (k == n || !num_char(in[k]));
            while (k < n && num_char(in[k])) {
                k++;
            }
            if (integer) {
                if (out) {
                    out[o] = '"';
                    out[o + 1] = (char) 0xff;
                    memcpy(out + o + 2, in + i, k - i);
                    out[o + 2 + (k - i)] = '"';
                }
                o += k - i + 3;
                marked++;
            } else {
                if (out) {
                    memcpy(out + o, in + i, k - i);
                }
                o += k - i;
            }
            i = k;
        } else {
            if (out) {
                out[o] = c;
            }
            o++;
            i++;
        }
    }
    *count = marked;
    return (long) o;
}
