/*
 * lhttp.h - the conn object's HTTP/1.x methods (lhttp.c).
 */
#ifndef FDP_LHTTP_H
#define FDP_LHTTP_H

#include <lua.h>

/* Make the conn metatable (fdp_conn_open_meta) and add readrequest,
 * readchunked and sendresponse to its methods. */
void fdp_lhttp_open(lua_State *L);

/* fdpool._httpres(status_lines) -> header, send: fdpool.http's
 * res:header and res:send in C. */
int fdp_lhttp_res(lua_State *L);

#endif
