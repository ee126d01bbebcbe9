/*
 * proxy.h - the PROXY protocol header (v1 text, v2 binary) that HAProxy
 * or nginx put in front of a connection, parsed by a pure function so it
 * can be fuzzed.
 */
#ifndef FDP_PROXY_H
#define FDP_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define FDP_PROXY_MAX 232       /* v2: 16 + 216 (unix addresses) */

/* The accept filter's look at an HTTP head (acceptf.c). */
int fdp_http_head_complete(const char *s, size_t n);

int fdp_proxy_parse(const uint8_t *buf, size_t n,
                    struct sockaddr_storage *src, socklen_t *len);

#endif
