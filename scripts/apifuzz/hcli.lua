-- scripts/apifuzz/hcli.lua ADDR PATH...: one HTTP request per PATH (/ws... as an upgrade; "PATH BODY" posts BODY)
local f = require "fdpool"
local addr = arg[1]
for i = 2, #arg do
  local fd = assert(f.connect(addr, 5))
  fd:settimeout(arg[i]:match("^/ws") and 3 or 60)
  local path, body = arg[i]:match("^(%S+) ?(.*)$")
  local extra = ""
  if path:match("^/ws") then extra = "Upgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" end
  if body ~= "" then extra = extra .. "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #body .. "\r\n" end
  fd:write(("%s %s HTTP/1.1\r\nHost: x\r\nCookie: a=b; c=d\r\n%s%s\r\n%s"):format(body ~= "" and "POST" or "GET", path, extra, extra:match("Upgrade") and "" or "Connection: close\r\n", body))
  local out = fd:read("a")
  fd:close()
end
