/*
 * lws.h - the WebSocket helpers of the fdpool module (lws.c over
 * wsproto.c): fdpool.sha1, base64, ws_accept, ws_mask, utf8_check,
 * json_mark.
 */
#ifndef FDP_LWS_H
#define FDP_LWS_H

#include <lua.h>

/* Add the functions to the module table on the top of the stack. */
void fdp_lws_open(lua_State *L);

#endif
