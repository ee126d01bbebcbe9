-- examples/site.lua DIR: a static site from DIR (http.static: Range,
-- ETag, Last-Modified, sendfile), with what a site wants besides: a
-- directory named without its slash redirects (301), index.html or
-- index.htm, and a page of our own for a 404 (on_missing). Run:
--   build/pool run examples/site.lua --listen 127.0.0.1:8080 -- /srv/www
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
