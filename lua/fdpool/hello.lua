-- fdpool.hello: the embedded default handler of `pool run` with no
-- script: "hello" over HTTP/1.1 through fdpool.http, so the default
-- server has the same strict framing, keep-alive, parking, limits and
-- accept filter (`http`) as any http.serve handler.
local http = require "fdpool.http"

return http.serve(function(_, res)
  res:header("Content-Type", "text/plain")
  res:send("hello\n")
end)
