-- examples/echo.lua: echoes every line back, prefixed with the worker id.
-- Run: build/pool run examples/echo.lua --listen 127.0.0.1:7000
--      then: nc 127.0.0.1 7000
local fdpool = require "fdpool"

return function(conn)
  conn:settimeout(60)
  while true do
    local line, err = conn:receive("l")
    if not line then return err end
    if line == "quit" then return end
    conn:send(("%d: %s\n"):format(fdpool.worker.id, line))
  end
end
