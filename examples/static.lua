-- examples/static.lua DIR: serve the files under DIR over HTTP (Range,
-- ETag, Last-Modified, sendfile). Run:
--   build/pool run examples/static.lua --listen 127.0.0.1:8080 -- /srv/www
local http = require "fdpool.http"
local dir = ... or "."
return http.serve(http.static(dir))
