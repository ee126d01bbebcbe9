-- bench/proxy.lua UPSTREAM: the "proxy" scenario of scripts/bench: a
-- reverse proxy written with fdpool.http.client (keep-alive to the
-- upstream through the worker's socket pool), measured against nginx
-- proxy_pass with upstream keepalive (bench/nginx-proxy.conf.in) in front
-- of the same upstream. UPSTREAM: http://127.0.0.1:PORT
local http = require "fdpool.http"
local client = require "fdpool.http.client"

local UP = assert(..., "usage: proxy.lua http://HOST:PORT")

return http.serve(function(req, res)
  local r, err = client.request{
    method = req.method, url = UP .. req.target,
    body = req.method == "POST" and req:body() or nil,
    timeout = 10,
  }
  if not r then
    return 502, { ["Content-Type"] = "text/plain" }, "bad gateway: " .. err .. "\n"
  end
  return r.status, { ["Content-Type"] = r.headers["content-type"] or "text/plain" }, r.body
end)
