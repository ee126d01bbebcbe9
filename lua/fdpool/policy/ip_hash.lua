-- ip_hash: the same client IP goes to the same worker while it has room
-- (sticky sessions); otherwise the next one with room. Unix-socket
-- clients (no IP) hash their peer string.
local function hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff
  end
  return h
end

return function(workers, conn)
  local n = #workers
  local start = hash(conn.ip or conn.peer) % n
  for k = 0, n - 1 do
    local i = (start + k) % n + 1
    if workers[i].state == "free" then return i end
  end
  return nil
end
