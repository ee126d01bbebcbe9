/*
 * lws.c - the fdpool module's WebSocket helpers over wsproto.c: the
 * handshake digest, payload masking at C speed and incremental UTF-8
 * validation. fdpool.http.websocket (Lua) does the framing with them.
 */
#include "lws.h"
#include "wsproto.h"

#include <stdint.h>
#include <string.h>

#include <lauxlib.h>


/* fdpool.sha1(s) -> the 20-byte digest (raw bytes). */
static int
l_sha1(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char d[20];

    fdp_sha1(s, n, d);
    lua_pushlstring(L, (const char *) d, 20);
    return 1;
}


/* fdpool.base64(s) -> s in base64 (RFC 4648, padded). */
static int
l_base64(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out;

    luaL_argcheck(L, n < ((size_t) 1 << 40), 1, "string too long");
    out = luaL_buffinitsize(L, &b, 4 * ((n + 2) / 3) + 1);
    luaL_pushresultsize(&b, fdp_base64((const unsigned char *) s, n, out));
    return 1;
}


/* fdpool.ws_accept(key) -> the Sec-WebSocket-Accept value, or nil when
 * key is not 16 bytes in base64. */
static int
l_ws_accept(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    char out[29];
    int r = fdp_ws_accept(key, n, out);

    if (r < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, out, (size_t) r);
    return 1;
}


/* fdpool.ws_mask(data, key [, offset]) -> data XORed with the 4-byte key,
 * starting at byte offset of the payload (default 0). */
static int
l_ws_mask(lua_State *L)
{
    size_t n, kn;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *key = luaL_checklstring(L, 2, &kn);
    lua_Integer off = luaL_optinteger(L, 3, 0);
    luaL_Buffer b;
    char *out;

    luaL_argcheck(L, kn == 4, 2, "the key must be 4 bytes");
    luaL_argcheck(L, off >= 0, 3, "the offset must not be negative");
    out = luaL_buffinitsize(L, &b, n);
    memcpy(out, s, n);
    fdp_ws_mask((unsigned char *) out, n, (const unsigned char *) key,
                (uint64_t) off);
    luaL_pushresultsize(&b, n);
    return 1;
}


/* fdpool.utf8_check(s [, state]) -> 0 (valid, complete), a positive
 * state (valid so far, inside a character: pass it with the next piece)
 * or nil (invalid). */
static int
l_utf8_check(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    uint32_t st = (uint32_t) luaL_optinteger(L, 2, 0);

    if (fdp_utf8_check(&st, (const unsigned char *) s, n) < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer) ((st & 3) ? st : 0));
    return 1;
}


/* fdpool.json_mark(text) -> text with its integer literals marked (see
 * fdp_json_mark), count; or nil, "bad number"|"unterminated string",
 * the 1-based position. For fdpool.http.json. */
static int
l_json_mark(lua_State *L)
{
    size_t n, count;
    const char *s = luaL_checklstring(L, 1, &n);
    long len = fdp_json_mark(s, n, NULL, &count);
    luaL_Buffer b;
    char *out;

    if (len < 0) {
        lua_pushnil(L);
        lua_pushstring(L, s[count] == '"' ? "unterminated string"
                       : "bad number (a leading zero)");
        lua_pushinteger(L, (lua_Integer) count + 1);
        return 3;
    }
    if (count == 0) {
        lua_settop(L, 1);
        lua_pushinteger(L, 0);
        return 2;
    }
    out = luaL_buffinitsize(L, &b, (size_t) len);
    (void) fdp_json_mark(s, n, out, &count);
    luaL_pushresultsize(&b, (size_t) len);
    lua_pushinteger(L, (lua_Integer) count);
    return 2;
}


void
fdp_lws_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "sha1", l_sha1 },
        { "base64", l_base64 },
        { "ws_accept", l_ws_accept },
        { "ws_mask", l_ws_mask },
        { "utf8_check", l_utf8_check },
        { "json_mark", l_json_mark },
        { NULL, NULL }
    };

    luaL_setfuncs(L, funcs, 0);
}
