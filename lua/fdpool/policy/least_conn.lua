-- least_conn: the worker with the fewest active connections relative to
-- its capacity; ties go to the lowest id.
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
  return best
end
