-- least_conn: the worker with the fewest active connections relative to
-- its capacity; ties go to the lowest id. With workers pinned to CPUs
-- (--cpu-affinity), a near tie (loads within 1/8 of the least) goes to
-- the worker on the CPU that received the connection (conn.cpu,
-- SO_INCOMING_CPU), so the connection is served where its packets are.
local SLACK = 1 / 8
return function(workers, conn)
  local best, best_load
  for i = 1, #workers do
    local w = workers[i]
    if w.state == "free" then
      local load = w.active / w.capacity
      if not best or load < best_load then
        best, best_load = i, load
      end
    end
  end
  if best and workers[best].cpu then
    local cpu = conn.cpu
    if cpu and workers[best].cpu ~= cpu then
      for i = 1, #workers do
        local w = workers[i]
        if w.cpu == cpu and w.state == "free"
            and w.active / w.capacity <= best_load + SLACK then
          return i
        end
      end
    end
  end
  return best
end
