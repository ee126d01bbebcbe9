/*
 * fuzz_http.c - libFuzzer target for the HTTP request-head parser
 * (conn:readrequest in src/lconn.c: head framing, parse_head). The input
 * is written into one end of a socketpair, that end is closed, and
 * conn:readrequest(max) is called through Lua on a conn wrapping the
 * other end (fdp_conn_new with no worker: waits would use poll, but EOF
 * comes first) until it fails, as fdpool.http's loop does for pipelined
 * requests. Byte 0 picks max_head (64..8192); the rest is the stream.
 * Whatever it returns must be what fdpool.http relies on: a request
 * table whose fields obey the grammar, or one of the documented errors.
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

#include "worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The checks, in Lua: they read like the grammar they check. */
static const char check_src[] =
    "local conn, max, input = ...\n"
    "local tchar = \"^[%w!#$%%&'*+%-.^_`|~]+$\"\n"
    "local errors = { closed = true, ['bad request: truncated'] = true,\n"
    "  ['header too large'] = true, ['bad request line'] = true,\n"
    "  ['bad header line'] = true, ['bad header value'] = true,\n"
    "  ['too many headers'] = true }\n"
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
    "  assert(req.target:sub(1, #req.path) == req.path, 'path')\n"
    "  if req.query ~= '' or req.target:find('?', 1, true) then\n"
    "    assert(req.target == req.path .. '?' .. req.query, 'query')\n"
    "  else\n"
    "    assert(req.target == req.path, 'path = target')\n"
    "  end\n"
    "  local line = req.method .. ' ' .. req.target .. ' HTTP/' .. req.version\n"
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
    "end\n"
    "error('no end of input')\n";

static lua_State *L;
static int check_ref;

static void
init(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    fdp_conn_open_meta(L);
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
    c = fdp_conn_new(L, sv[0], NULL);
    lua_pushinteger(L, max);
    lua_pushlstring(L, (const char *) data, size);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_http: check failed: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pop(L, 1);
    assert(c->fd < 0 && c->rbuf == NULL);  /* closed by the check */
    return 0;
}
