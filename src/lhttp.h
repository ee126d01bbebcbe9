/*
 * lhttp.h - the conn object's HTTP/1.x methods (lhttp.c), and a client
 * socket's (its response head, its chunked bodies).
 */
#ifndef FDP_LHTTP_H
#define FDP_LHTTP_H

#include <lua.h>

/* Make the conn metatable (fdp_conn_open_meta) and add readrequest,
 * readchunked and sendresponse to its methods. */
void fdp_lhttp_open(lua_State *L);

/* fdpool.tcp() sockets' HTTP methods (lsock.c registers them): the
 * response head (sock:readresponse), and the streaming chunked reader
 * shared with conn:readchunk (the conn or socket at 1; max bounds the
 * whole body, -1: no bound; piece each answer; start begins a body). */
int fdp_lhttp_readresponse(lua_State *L);
int fdp_lhttp_readchunk(lua_State *L, lua_Integer max, lua_Integer piece,
                        int start);

/* fdpool._httpres(status_lines) -> header, send: fdpool.http's
 * res:header and res:send in C. */
int fdp_lhttp_res(lua_State *L);

/* fdpool._httpreply(reply) -> fdpool.http's reply (a handler's returned
 * status, headers, body sent through res) in C for the usual values,
 * the Lua reply for the rest. */
int fdp_lhttp_reply(lua_State *L);
int fdp_lhttp_token(lua_State *L);

/* fdpool._httpreq(Req, header_mt [, opts]) -> an __index and a __pairs
 * for fdpool.http's requests: req.version, headers, target, path, query
 * and conn built from the kept head on first use (version and conn also
 * by pairs); _opts from opts. */
int fdp_lhttp_req(lua_State *L);

#endif
