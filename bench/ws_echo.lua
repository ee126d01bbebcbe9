-- bench/ws_echo.lua: a WebSocket echo handler for bench/ws-echo.js
-- (max_payload 32 MiB). build/pool run bench/ws_echo.lua --listen 127.0.0.1:8080 --workers 1
local http = require "fdpool.http"
return http.serve(function(req, res)
  local ws = http.websocket(req, res, { max_payload = 32 * 1024 * 1024 })
  if not ws then return end
  while true do
    local data, kind = ws:receive()
    if not data or kind == "close" then break end
    if kind == "text" or kind == "binary" then ws:send(data, kind) end
  end
end)
