-- bench/shared_instr.lua: the handler bench/shared-instr runs under
-- callgrind. A line "OP N" runs the loop of bench/shared-vs-nginx.lua (N
-- get, set, incr or capacity calls on 1000 keys of fdpool.shared.bench)
-- and answers "done".
local fdpool = require "fdpool"

local function loop(d, op, n)
  local keys, nkeys = {}, {}
  for i = 1, 1000 do keys[i] = "key" .. i; nkeys[i] = "num" .. i end
  for i = 1, 1000 do d:set(keys[i], "value-" .. i) end
  if op == "get" then
    for i = 1, n do local v = d:get(keys[i % 1000 + 1]) end
  elseif op == "set" then
    for i = 1, n do d:set(keys[i % 1000 + 1], "value") end
  elseif op == "capacity" then
    for i = 1, n do local c = d:capacity() end
  elseif op == "incr" then
    for i = 1, n do d:incr(nkeys[i % 1000 + 1], 1, 0) end
  else                                  -- the loop alone
    for i = 1, n do local v = keys[i % 1000 + 1] end
  end
end

return function(conn)
  local op, n = (conn:receive("l") or ""):match("^(%a+) (%d+)")
  loop(fdpool.shared.bench, op, tonumber(n))
  conn:send("done\n")
end
