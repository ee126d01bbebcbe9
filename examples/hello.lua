-- examples/hello.lua: the conn API at its barest: "hello" over HTTP/1.1
-- with keep-alive, parsing nothing but the lines it needs. It trusts its
-- clients (no body handling, no limits, no accept filter): for a real
-- HTTP service use fdpool.http, as examples/http_hello.lua and the
-- built-in default handler (`pool run` with no script) do.
-- Run: build/pool run examples/hello.lua   (then curl 127.0.0.1:8080)
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
