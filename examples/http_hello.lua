-- examples/http_hello.lua: "hello" through fdpool.http (keep-alive,
-- pipelining, limits). Run: build/pool run examples/http_hello.lua
local http = require "fdpool.http"

return http.serve(function(req, res)
  res:header("Content-Type", "text/plain")
  res:send("hello\n")
end)
