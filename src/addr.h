/* addr.h - parse and format addresses; unix-socket path helpers (addr.c). */
#ifndef FDP_ADDR_H
#define FDP_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define FDP_ADDR_MAX        128

int fdp_unix_reclaim(const char *path);
int fdp_unix_lock_dir(const char *path);
int fdp_path_identity(const char *path, uint64_t *dev, uint64_t *ino);
void fdp_unlink_own(const char *path, uint64_t dev, uint64_t ino);
void fdp_format_sockaddr(const struct sockaddr_storage *ss, char *out,
                         size_t n, int with_path);
int fdp_parse_addr(const char *addr, struct sockaddr_storage *ss,
                   socklen_t *len, char *err, size_t errlen);

#endif
