-- bench/apache_hello.lua: mod_lua handler, 200 "hello\n" with Content-Length
-- (the peer's side of the hello scenario).
function handle(r)
    r.content_type = "text/plain"
    r.headers_out["Content-Length"] = "6"
    r:puts("hello\n")
    return apache2.OK
end
