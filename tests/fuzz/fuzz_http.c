/*
 * fuzz_http.c - libFuzzer target for the HTTP request parser: heads
 * (conn:readrequest in src/lconn.c over src/http_parse.c) and chunked
 * bodies (conn:readchunked, fdp_http_chunked_next). The input is written
 * into one end of a socketpair, that end is closed, and conn:readrequest
 * (max) is called through Lua on a conn wrapping the other end
 * (fdp_conn_new with no worker: waits would use poll, but EOF comes
 * first) until it fails, as fdpool.http's loop does for pipelined
 * requests; a chunked request's body is read with conn:readchunked, a
 * Content-Length body skipped. Byte 0 picks max_head (64..8192) and the
 * piece size of the split check; the rest is the stream. Whatever it
 * returns must be what fdpool.http relies on: a request table whose
 * fields obey the grammar, a body within its limit, or one of the
 * documented errors. Before that, what follows the first empty line (or
 * the whole input) is also decoded as a chunked body in one piece and in
 * small pieces: the incremental decoder must give the same result and
 * the same data whatever the split. The input is also parsed as a
 * response head (fdp_http_parse_response), whose answer must obey the
 * grammar, and parsed as a request head with its LFs given
 * (fdp_http_parse_head_lines) as without.
 */
#include <assert.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "http_parse.h"
#include "lconn.h"
#include "lhttp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The checks, in Lua: they read like the grammar they check. */
static const char check_src[] =
    "local conn, max, input = ...\n"
    "local tchar = \"^[%w!#$%%&'*+%-.^_`|~]+$\"\n"
    "local errors = { closed = true, ['bad request: truncated'] = true,\n"
    "  ['header too large'] = true, ['bad request line'] = true,\n"
    "  ['uri too long'] = true,\n"
    "  ['bad header line'] = true, ['bad header value'] = true,\n"
    "  ['too many headers'] = true, ['unsupported HTTP version'] = true }\n"
    "local body_errors = { closed = true, ['too large'] = true,\n"
    "  ['bad chunk size'] = true, ['bad chunk extension'] = true,\n"
    "  ['bad chunk'] = true, ['bad trailer'] = true }\n"
    "for n = 1, 10000 do\n"
    "  local req, err = conn:readrequest(max)\n"
    "  if not req then\n"
    "    assert(errors[err], 'unexpected error: ' .. tostring(err))\n"
    "    assert(conn:readrequest(max) == nil)\n"
    "    conn:close()\n"
    "    return n - 1\n"
    "  end\n"
    "  assert(type(req) == 'table')\n"
    "  assert(req.method:match(tchar), 'method')\n"
    "  assert(#req.target > 0 and not req.target:find('[%z\\1- \\127]'), 'target')\n"
    "  assert(req.version == '1.0' or req.version == '1.1', 'version')\n"
    "  -- the path: the target's up to '?'; an absolute-form target's\n"
    "  -- after its authority ('/' when it has none)\n"
    "  local before_q = req.target:match('^[^?]*')\n"
    "  local after_scheme = before_q:match('^%a[%w+.-]*://()')\n"
    "  if after_scheme then\n"
    "    local slash = before_q:find('/', after_scheme, true)\n"
    "    assert(req.path == (slash and before_q:sub(slash) or '/'), 'absolute-form path')\n"
    "  else\n"
    "    assert(req.path == before_q, 'path')\n"
    "  end\n"
    "  if req.target:find('?', 1, true) then\n"
    "    assert(req.query == req.target:match('%?(.*)$'), 'query')\n"
    "  else\n"
    "    assert(req.query == '', 'no query')\n"
    "  end\n"
    "  local line = req.method .. ' ' .. req.target .. ' HTTP/1.'\n"
    "  assert(input:find(line, 1, true), 'request line not in the input')\n"
    "  local count = 0\n"
    "  for k, v in pairs(req.headers) do\n"
    "    count = count + 1\n"
    "    assert(type(k) == 'string' and k:match(tchar) and k == k:lower(), 'name')\n"
    "    assert(type(v) == 'string' and not v:find('[%z\\1-\\8\\10-\\31\\127]'), 'value')\n"
    "    -- trimmed; a repeated field joins with ', ' (an empty one ends so)\n"
    "    assert(not v:find('^[ \\t]') and (not v:find('[ \\t]$') or v:find(', $')),\n"
    "      'value not trimmed')\n"
    "  end\n"
    "  assert(count <= 100, 'more than 100 headers')\n"
    "  local te, cl = req.headers['transfer-encoding'], req.headers['content-length']\n"
    "  if te and te:lower() == 'chunked' then\n"
    "    local body, err = conn:readchunked(max)\n"
    "    if not body then\n"
    "      assert(body_errors[err], 'unexpected body error: ' .. tostring(err))\n"
    "      conn:close()\n"
    "      return n\n"
    "    end\n"
    "    assert(type(body) == 'string' and #body <= max, 'body over the limit')\n"
    "  elseif cl and cl:match('^%d+$') and #cl < 8 then\n"
    "    conn:receive(tonumber(cl))\n"
    "  end\n"
    "end\n"
    "error('no end of input')\n";

static lua_State *L;
static char whole[1 << 16], split[1 << 16];


/* Decode in[0..n) as a chunked body, piece bytes at a time (0: all at
 * once), copying the data to out; returns the last result. */
static int
decode(const uint8_t *in, size_t n, size_t piece, char *out, size_t *outn,
       uint64_t *total)
{
    struct fdp_http_chunked d;
    size_t off = 0;
    int r = FDP_HTTP_CHUNK_AGAIN;

    fdp_http_chunked_init(&d);
    *outn = 0;
    while (off < n) {
        size_t end = piece == 0 || off + piece > n ? n : off + piece;
        size_t used = 0, k;

        r = fdp_http_chunked_next(&d, (const char *) in + off, end - off,
                                  &used);
        assert(used <= end - off);
        off += used;
        if (r < 0 || r == FDP_HTTP_CHUNK_DONE) {
            break;
        }
        if (r == FDP_HTTP_CHUNK_DATA) {
            assert(d.left > 0);
            k = end - off < d.left ? end - off : (size_t) d.left;
            if (k == 0 && end == n) {
                break;
            }
            memcpy(out + *outn, in + off, k);
            *outn += k;
            fdp_http_chunked_take(&d, k);
            off += k;
        }
    }
    *total = d.total;
    return r;
}


static void
check_chunked(const uint8_t *data, size_t size, size_t piece)
{
    size_t n1, n2;
    uint64_t t1, t2;
    int r1, r2;

    if (size > sizeof(whole)) {
        return;
    }
    r1 = decode(data, size, 0, whole, &n1, &t1);
    r2 = decode(data, size, piece, split, &n2, &t2);
    assert(r1 == r2);
    assert(n1 == n2 && t1 == t2 && n1 == t1);
    assert(memcmp(whole, split, n1) == 0);
}


/* The input as a response head (fdpool.http.client's sock:readresponse):
 * whatever fdp_http_parse_response accepts obeys the grammar. */
static void
check_response(const uint8_t *in, size_t n)
{
    struct fdp_http_head h;
    size_t i, j;
    int r;

    if (n > sizeof(whole)) {
        return;
    }
    memcpy(whole, in, n);
    r = fdp_http_parse_response(whole, n, &h);
    if (r < 0) {
        assert(r == FDP_HTTP_ESTATUS || r == FDP_HTTP_EHEADER
               || r == FDP_HTTP_EVALUE || r == FDP_HTTP_ETOOMANY);
        return;
    }
    assert(r == 0 && h.status >= 100 && h.status <= 999);
    assert(h.reason >= whole && h.reason + h.reason_len <= whole + n);
    assert(h.nfields <= FDP_HTTP_FIELDS_MAX);
    for (j = 0; j < h.reason_len; j++) {
        assert(h.reason[j] == '\t' || (unsigned char) h.reason[j] >= 0x20);
        assert(h.reason[j] != 0x7f);
    }
    for (i = 0; i < h.nfields; i++) {
        const struct fdp_http_field *f = &h.fields[i];

        assert(f->name_len > 0 && f->value + f->value_len <= whole + n);
        for (j = 0; j < f->name_len; j++) {
            unsigned char c = (unsigned char) f->name[j];

            assert(c > 0x20 && c < 0x7f && c != ':' && !(c >= 'A' && c <= 'Z'));
        }
        for (j = 0; j < f->value_len; j++) {
            unsigned char c = (unsigned char) f->value[j];

            assert(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
    }
}


/* The input as a request head both ways: fdp_http_parse_head, which
 * finds each line's end itself, and fdp_http_parse_head_lines given
 * the first LFs as conn:httploop's scan notes them (all of them, or
 * fewer than there are): the same answer, the same spans. */
static char lines_copy[65536];

static void
check_lines(const uint8_t *in, size_t n, size_t max_lf)
{
    static struct fdp_http_head h1, h2;
    const char *lf[FDP_HTTP_LINES_MAX];
    size_t nlf = 0, i;
    int r1, r2;

    if (n > sizeof(whole) || n > sizeof(lines_copy)) {
        return;
    }
    memcpy(whole, in, n);
    memcpy(lines_copy, in, n);
    for (i = 0; i < n && nlf < max_lf && nlf < FDP_HTTP_LINES_MAX; i++) {
        if (lines_copy[i] == '\n') {
            lf[nlf++] = lines_copy + i;
        }
    }
    r1 = fdp_http_parse_head(whole, n, &h1);
    r2 = fdp_http_parse_head_lines(lines_copy, n, lf, nlf, &h2);
    assert(r1 == r2);
    /* what head_find refuses before the head ends, the parser refuses
     * once it has ended */
    if (fdp_http_line_hopeless((const char *) in, n < FDP_HTTP_HOPELESS_LOOK
                               ? n : FDP_HTTP_HOPELESS_LOOK)) {
        assert(r1 == FDP_HTTP_EBADLINE);
    }
    assert((h1.method == NULL) == (h2.method == NULL));
    if (h1.method == NULL) {
        return;
    }
    assert(h1.method - whole == h2.method - lines_copy);
    assert(h1.method_len == h2.method_len && h1.target_len == h2.target_len);
    if (r1 < 0) {
        return;
    }
    assert(h1.minor == h2.minor && h1.nfields == h2.nfields);
    for (i = 0; i < h1.nfields; i++) {
        assert(h1.fields[i].name - whole == h2.fields[i].name - lines_copy);
        assert(h1.fields[i].name_len == h2.fields[i].name_len);
        assert(h1.fields[i].value - whole == h2.fields[i].value - lines_copy);
        assert(h1.fields[i].value_len == h2.fields[i].value_len);
    }
    assert(memcmp(whole, lines_copy, n) == 0);
}


static int check_ref;

static void
init(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    fdp_lhttp_open(L);
    if (luaL_loadbuffer(L, check_src, sizeof(check_src) - 1, "=check") != LUA_OK) {
        fprintf(stderr, "fuzz_http: %s\n", lua_tostring(L, -1));
        abort();
    }
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    size_t off = 0;
    struct fdp_conn *c;
    lua_Integer max;

    if (L == NULL) {
        init();
    }
    if (size < 1) {
        return 0;
    }
    max = 64 + (lua_Integer) data[0] * 32;
    {
        /* The body after the first head if there is one, else it all. */
        const uint8_t *b = memmem(data + 1, size - 1, "\r\n\r\n", 4);

        b = b ? b + 4 : data + 1;
        check_chunked(b, size - (size_t) (b - data),
                      (size_t) (data[0] % 7) + 1);
    }
    check_response(data + 1, size - 1);
    {
        /* the first head, as conn:httploop hands it to the parser */
        const uint8_t *e = memmem(data + 1, size - 1, "\r\n\r\n", 4);
        size_t hn = e ? (size_t) (e + 4 - (data + 1)) : size - 1;

        check_lines(data + 1, hn, data[0] & 1 ? FDP_HTTP_LINES_MAX : data[0] % 5);
    }
    data++;
    size--;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        abort();
    }
    /* The kernel buffer holds far more than -max_len; a short write
     * only shortens the stream. */
    (void) fcntl(sv[1], F_SETFL, O_NONBLOCK);
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);

        if (n <= 0) {
            size = off;
            break;
        }
        off += (size_t) n;
    }
    close(sv[1]);

    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    c = fdp_conn_new(L, sv[0], NULL, -1);
    lua_pushinteger(L, max);
    lua_pushlstring(L, (const char *) data, size);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_http: check failed: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pop(L, 1);
    assert(c->fd < 0 && c->rbuf == NULL);  /* closed by the check */
    /* Free this input's garbage now: libFuzzer scans for leaks (slowly)
     * after every input whose mallocs and frees do not balance. */
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
