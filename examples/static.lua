-- examples/static.lua DIR: serve the files under DIR over HTTP (Range,
-- ETag, Last-Modified, sendfile; a directory without its slash
-- redirects; index.html or index.htm; a page of our own for a 404). Run:
--   build/pool run examples/static.lua --listen 127.0.0.1:8080 -- /srv/www
local http = require "fdpool.http"
local dir = ... or "."
return http.serve(http.static(dir, {
  index = { "index.html", "index.htm" },
  on_missing = function(req, res)
    res:status(404):header("Content-Type", "text/html; charset=utf-8")
    return res:send(("<!doctype html><title>not found</title><p>No %s here.</p>\n")
      :format(req.path:gsub("[<>&\"]", "")))
  end,
}))
