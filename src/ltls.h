/*
 * ltls.h - the TLS transport of a conn (ltls.c): the worker's side of an
 * inbound TLS connection (handshake without blocking, then the same conn
 * API through OpenSSL), conn:tls(), and the outbound :sslhandshake().
 */
#ifndef FDP_LTLS_H
#define FDP_LTLS_H

#include <lua.h>

struct fdp_conn;
struct ssl_ctx_st;

/* Make c a TLS server connection on ctx (the handshake has not run).
 * 0, or -ENOMEM. */
int fdp_tls_accept(struct fdp_conn *c, struct ssl_ctx_st *ctx);
/* A task's function for a TLS connection: (handler, conn, deadline_ms)
 * runs the handshake (yielding; within deadline_ms) and then
 * handler(conn). A failed handshake ends it quietly (a debug line). */
int fdp_tls_serve(lua_State *L);
/* Adds conn:tls() to the conn methods. */
void fdp_ltls_open(lua_State *L);

#endif
