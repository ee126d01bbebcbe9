/*
 * wsproto.h - the byte-level pieces of WebSocket (RFC 6455) as pure
 * functions, no Lua and no I/O: SHA-1 (FIPS 180-4) and base64 for the
 * Sec-WebSocket-Accept handshake, payload masking, and an incremental
 * UTF-8 validator (text messages may split a character across frames);
 * and the JSON integer marker fdpool.http.json decodes exactly with.
 * lws.c binds them; fdpool.http.websocket frames in Lua on top.
 */
#ifndef FDP_WSPROTO_H
#define FDP_WSPROTO_H

#include <stddef.h>
#include <stdint.h>

/* The SHA-1 digest of n bytes at data into out. */
void fdp_sha1(const void *data, size_t n, unsigned char out[20]);

/* Base64 (RFC 4648, with padding) of n bytes into out, which holds at
 * least 4 * ((n + 2) / 3) + 1 bytes; NUL-terminated. Returns the length. */
size_t fdp_base64(const unsigned char *in, size_t n, char *out);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2): the key
 * must be 24 base64 characters that decode to 16 bytes. Writes 28
 * characters and a NUL into out; returns 28, or -EINVAL for a bad key. */
int fdp_ws_accept(const char *key, size_t n, char out[29]);

/* XOR n bytes at buf in place with the 4-byte masking key, the first
 * byte being byte `offset` of the payload (a payload unmasked in parts). */
void fdp_ws_mask(unsigned char *buf, size_t n, const unsigned char key[4],
                 uint64_t offset);

/* Validate UTF-8 incrementally (Unicode 15, Table 3-7: no overlongs, no
 * surrogates, nothing above U+10FFFF). *state is 0 at the start of a
 * message and carries a character split across calls. Returns 0 when the
 * bytes so far are valid and end on a character boundary, 1 when valid
 * but inside a character (more must come), -EILSEQ when invalid. */
int fdp_utf8_check(uint32_t *state, const unsigned char *s, size_t n);

/* Copy JSON text in[0..n) to out with every integer literal outside
 * strings (-?(0|[1-9][0-9]*) not followed by '.', 'e' or 'E') written as
 * a string: '"', 0xFF, the literal, '"' -- so a decoder that reads
 * numbers as doubles keeps them exact. out NULL: only measure. Returns
 * the length of the result (*count: the literals marked), or -EINVAL for
 * a number with a leading zero or an unterminated string (*count: the
 * offset where it starts). */
long fdp_json_mark(const char *in, size_t n, char *out, size_t *count);

#endif
