-- round_robin: the next worker with room after the last one picked.
local last = 0

return function(workers, conn)
  local n = #workers
  for k = 1, n do
    local i = (last + k - 1) % n + 1
    if workers[i].state == "free" then
      last = i
      return i
    end
  end
  return nil
end
