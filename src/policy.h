/* policy.h - the dispatch policy in Lua, run by the master (policy.c),
 * and the handler-script loader it shares with the workers. */
#ifndef FDP_POLICY_H
#define FDP_POLICY_H

#include <stddef.h>

struct fdp_pool;
struct fdp_pending;
struct lua_State;

/* policy.c: runs the dispatch policy in Lua. */
int fdp_policy_open(struct fdp_pool *p, char *err, size_t errlen);
int fdp_policy_pick(struct fdp_pool *p, const struct fdp_pending *c);
void fdp_policy_close(struct fdp_pool *p);
void fdp_policy_flush_log(struct fdp_pool *p);
const char *fdp_policy_name(struct fdp_pool *p);
int fdp_policy_any_worker(struct fdp_pool *p);
int fdp_policy_running(const struct fdp_pool *p);
int fdp_script_check(struct fdp_pool *p, const char *src, size_t len,
                     char *err, size_t errlen);
int fdp_script_load(struct lua_State *L, const char *path, const char *src,
                    size_t len);
int fdp_policy_check(struct lua_State *L, const char *spec, char *err,
                     size_t errlen);

#endif
