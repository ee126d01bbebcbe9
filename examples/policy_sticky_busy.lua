-- examples/policy_sticky_busy.lua: a custom dispatch policy. Prefer the
-- "warm" workers (those that have set the custom status field `warm`,
-- say after filling a cache), least loaded first; when no warm worker has
-- room, take the least loaded worker of all; when nobody has room, return
-- nil and the master keeps the connection queued until one has.
--
-- Run it:
--   build/pool run examples/echo.lua --listen 127.0.0.1:7000 \
--       --policy examples/policy_sticky_busy.lua
-- A handler marks its worker warm with
--   fdpool.worker.set("warm", "1")     -- in init(worker) or in a handler
-- and `build/pool status` shows the field. Check the policy compiles with
--   build/pool check examples/echo.lua --policy examples/policy_sticky_busy.lua
--
-- The policy runs in the master, once per connection, in a sandbox (no
-- os, io, require, print) with an instruction budget: keep it short. If
-- it raises or returns something other than a worker index or nil, the
-- master logs it and uses first_free for that connection.
--
-- workers[i] (read-only) has id, pid, state ("starting", "free", "busy",
-- "exiting"), active, capacity, served, bytes_in, bytes_out, restarts,
-- generation, started, busy_since and the custom fields (strings).
-- conn has peer ("ip:port"), ip, port and listener (as given to --listen).

local function load_of(w)
  return w.active / w.capacity
end

-- The least loaded free worker among those accepted by want(w), or nil.
local function least_loaded(workers, want)
  local best, best_load
  for i = 1, #workers do
    local w = workers[i]
    if w.state == "free" and want(w) then
      local l = load_of(w)
      if best == nil or l < best_load then
        best, best_load = i, l
      end
    end
  end
  return best
end

local function is_warm(w) return w.warm ~= nil and w.warm ~= "0" end
local function any() return true end

return function(workers, conn)
  return least_loaded(workers, is_warm) or least_loaded(workers, any)
end
