-- fdpool.hello: the embedded default handler of `pool run` with no
-- script: a minimal HTTP/1.1 "hello" with keep-alive.
local function handle(conn)
  conn:settimeout(30)
  while true do
    local line = conn:receive("l")
    if not line then return end
    local close = line:find("HTTP/1%.0$") ~= nil
    -- Skip the headers; honour Connection: close / keep-alive.
    while true do
      local h = conn:receive("l")
      if not h then return end
      if h == "" then break end
      local name, value = h:match("^([^:]+):%s*(.-)%s*$")
      if name and name:lower() == "connection" then
        value = value:lower()
        if value == "close" then close = true
        elseif value == "keep-alive" then close = false end
      end
    end
    local ok = conn:send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
      .. "Content-Length: 6\r\n"
      .. (close and "Connection: close\r\n" or "") .. "\r\nhello\n")
    if not ok or close then return end
  end
end

return handle
