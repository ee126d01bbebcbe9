-- bench/router_hello.lua: examples/http_hello.lua's answer from a handler
-- that reads what a router reads (req.method and req.path), for
-- SCRIPT=bench/router_hello.lua bench/instr ka: what a lazy req field
-- costs a handler that reads it.
local http = require "fdpool.http"

return http.serve(function(req, res)
  if req.method == "GET" and req.path == "/" then
    res:header("Content-Type", "text/plain")
    res:send("hello\n")
  else
    res:status(404):send("not found\n")
  end
end)
