-- bench/return_hello.lua: examples/http_hello.lua's hello with the
-- handler returning status, headers, body instead of calling res (the
-- form bench/proxy.lua uses): `SCRIPT=bench/return_hello.lua bench/instr ka`.
local http = require "fdpool.http"

local HEADERS = { ["Content-Type"] = "text/plain" }

return http.serve(function()
  return 200, HEADERS, "hello\n"
end)
