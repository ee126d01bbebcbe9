-- tests/50-http_spec.lua: fdpool.http under the real build/pool, driven
-- by hand-made bytes (fdpool.connect, raw requests, responses parsed here)
-- and by curl: keep-alive, pipelining, HTTP/1.0, HEAD, request bodies
-- (Content-Length, chunked, 100-continue), streamed responses, the limits
-- (400/408/413/417/431/501), handler errors, http.static (types, refusals,
-- conditional and range requests, resume) and keep-alive parking in the
-- master under --concurrency 1.

package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local FIXTURE = "tests/fixtures/http_echo.lua"
local STATIC = "examples/static.lua"

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sh(fmt, ...)
    local cmd = fmt:format(...)
    local ok, code, out = H.run(cmd)
    assert(ok, ("%s: exit %s: %s"):format(cmd, code, out))
    return out
end

-- curl with a time limit; returns its exit code and stdout+stderr.
local function curl(args)
    local _, code, out = H.run("curl -sS --max-time 15 " .. args)
    return code, out
end

-- ---- a raw HTTP/1.1 client ------------------------------------------------

local Client = {}
Client.__index = Client

local function client(addr, timeout)
    local fd = assert(fdpool.connect(addr, timeout or 5))
    return setmetatable({ fd = fd, buf = "" }, Client)
end

function Client:send(s)
    assert(self.fd:write(s))
    return self
end

function Client:fill()
    local d, err = self.fd:read(65536)
    if not d then
        return nil, err or "closed"
    end
    self.buf = self.buf .. d
    return true
end

function Client:take(n)
    while #self.buf < n do
        local ok, err = self:fill()
        if not ok then
            error(("short body: wanted %d bytes, have %d (%s)"):format(n, #self.buf, err), 2)
        end
    end
    local s = self.buf:sub(1, n)
    self.buf = self.buf:sub(n + 1)
    return s
end

function Client:line()
    while not self.buf:find("\r\n", 1, true) do
        assert(self:fill())
    end
    local i = self.buf:find("\r\n", 1, true)
    local l = self.buf:sub(1, i - 1)
    self.buf = self.buf:sub(i + 2)
    return l
end

-- One response: {status, reason, version, head, headers (lower-case
-- names), body, chunks}; or nil, error at EOF / timeout.
function Client:response(method)
    while not self.buf:find("\r\n\r\n", 1, true) do
        local ok, err = self:fill()
        if not ok then
            return nil, err .. " (buffered: " .. ("%q"):format(self.buf) .. ")"
        end
    end
    local i = self.buf:find("\r\n\r\n", 1, true)
    local head = self.buf:sub(1, i + 1)
    self.buf = self.buf:sub(i + 4)
    local r = { head = head, headers = {}, count = {} }
    r.version, r.status, r.reason = head:match("^HTTP/(%d%.%d) (%d%d%d) ([^\r]*)\r\n")
    assert(r.status, "bad status line in " .. ("%q"):format(head))
    r.status = tonumber(r.status)
    for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r]*)") do
        local k = name:lower()
        r.headers[k] = value
        r.count[k] = (r.count[k] or 0) + 1
    end
    local h = r.headers
    if method == "HEAD" or r.status < 200 or r.status == 204 or r.status == 304 then
        r.body = ""
    elseif h["transfer-encoding"] == "chunked" then
        local parts = {}
        while true do
            local l = self:line()
            local n = tonumber(l:match("^%x+"), 16)
            if n == 0 then
                repeat l = self:line() until l == ""
                break
            end
            parts[#parts + 1] = self:take(n)
            assert(self:take(2) == "\r\n", "chunk not followed by CRLF")
        end
        r.body, r.chunks = table.concat(parts), #parts
    elseif h["content-length"] then
        r.body = self:take(tonumber(h["content-length"]))
    else
        while self:fill() do end
        r.body, self.buf = self.buf, ""
    end
    return r
end

-- true once the server has closed the connection (EOF) with nothing more
-- sent; false, why otherwise (extra bytes, or the read timed out).
function Client:eof()
    while true do
        local d, err = self.fd:read(65536)
        if not d then
            if err then
                return false, err
            end
            if #self.buf > 0 then
                return false, "unexpected bytes: " .. ("%q"):format(self.buf)
            end
            return true
        end
        self.buf = self.buf .. d
    end
end

function Client:close()
    self.fd:close()
end

local function get(path, extra, version)
    return ("GET %s HTTP/%s\r\nHost: test\r\n%s\r\n"):format(path, version or "1.1", extra or "")
end

-- One request on a fresh connection; the response.
local function once(addr, bytes, method)
    local c = client(addr)
    c:send(bytes)
    local r, err = c:response(method)
    c:close()
    return r, err
end

local function all_bytes()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    return table.concat(t)
end

-- ---------------------------------------------------------------------------

describe("fdpool.http (tests/fixtures/http_echo.lua)", function()
    local pool, url, dir

    setup(function()
        dir = H.tmpdir()
        pool = H.start_pool{ script = FIXTURE, workers = 2 }
        assert(pool.addr, pool:log())
        url = "http://" .. pool.addr
    end)

    teardown(function()
        if pool then
            pool:stop()
        end
    end)

    describe("connections", function()
        it("answers two requests on one keep-alive connection", function()
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(get("/first", "User-Agent: raw\r\n"))
            local r = assert(c:response())
            assert.equal(200, r.status)
            assert.equal("1.1", r.version)
            assert.equal("hello GET /first 1.1 host=test ua=raw\n", r.body)
            assert.is_nil(r.headers.connection)
            assert.truthy(r.headers.date)
            c:send(get("/second?x=1"))
            r = assert(c:response())
            assert.equal("hello GET /second?x=1 1.1 host=test ua=nil\n", r.body)
        end)

        it("lets curl reuse the connection for two URLs", function()
            local code, out = curl("-v " .. url .. "/a " .. url .. "/b")
            assert.equal(0, code, out)
            assert.matches("Re-using existing connection", out, 1, true)
            assert.matches("hello GET /a 1.1", out, 1, true)
            assert.matches("hello GET /b 1.1", out, 1, true)
        end)

        it("answers pipelined requests in order, bodies read or skipped", function()
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            -- One write: a GET, a POST whose body is echoed, a POST whose
            -- body the handler never reads (drained), and a last GET.
            c:send(get("/1")
                .. "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nabcde"
                .. "POST /ignored HTTP/1.1\r\nHost: test\r\nContent-Length: 7\r\n\r\nGET /x "
                .. get("/4", "Connection: close\r\n"))
            local r1 = assert(c:response())
            local r2 = assert(c:response())
            local r3 = assert(c:response())
            local r4 = assert(c:response())
            assert.equal("hello GET /1 1.1 host=test ua=nil\n", r1.body)
            assert.equal("abcde", r2.body)
            assert.equal("hello POST /ignored 1.1 host=test ua=nil\n", r3.body)
            assert.equal("hello GET /4 1.1 host=test ua=nil\n", r4.body)
            assert.equal("close", r4.headers.connection)
            assert.is_true(c:eof())
        end)

        it("closes an HTTP/1.0 connection unless it asks for keep-alive", function()
            local c = client(pool.addr)
            c:send(get("/old", "", "1.0"))
            local r = assert(c:response())
            assert.equal(200, r.status)
            assert.equal("hello GET /old 1.0 host=test ua=nil\n", r.body)
            assert.equal("close", r.headers.connection)
            assert.is_true(c:eof())
            c:close()

            c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(get("/ka1", "Connection: Keep-Alive\r\n", "1.0"))
            r = assert(c:response())
            assert.equal("keep-alive", r.headers.connection)
            assert.equal("hello GET /ka1 1.0 host=test ua=nil\n", r.body)
            c:send(get("/ka2", "", "1.0"))
            r = assert(c:response())
            assert.equal("hello GET /ka2 1.0 host=test ua=nil\n", r.body)
            assert.equal("close", r.headers.connection)
            assert.is_true(c:eof())
        end)

        it("closes after a request with Connection: close", function()
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(get("/bye", "Connection: close\r\n"))
            local r = assert(c:response())
            assert.equal(200, r.status)
            assert.equal("close", r.headers.connection)
            assert.is_true(c:eof())
        end)

        it("answers HEAD with the GET's Content-Length and no body", function()
            local g = assert(once(pool.addr, get("/same")))
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send("HEAD /same HTTP/1.1\r\nHost: test\r\n\r\n")
            local r = assert(c:response("HEAD"))
            assert.equal(200, r.status)
            assert.equal(tostring(#g.body:gsub("GET", "HEAD")), r.headers["content-length"])
            -- No body bytes followed: the next response starts right here.
            c:send(get("/after"))
            r = assert(c:response())
            assert.equal("hello GET /after 1.1 host=test ua=nil\n", r.body)

            local code, out = curl("-I " .. url .. "/same")
            assert.equal(0, code, out)
            assert.matches("^HTTP/1.1 200 OK\r\n", out)
            assert.matches("\r\nContent%-Length: %d+\r\n", out)
            assert.matches("\r\n\r\n$", out)  -- the head, nothing after it

            -- HEAD of a streamed (res:write) response: no chunks follow.
            c:send("HEAD /stream?n=3 HTTP/1.1\r\nHost: test\r\n\r\n")
            r = assert(c:response("HEAD"))
            assert.equal(200, r.status)
            c:send(get("/after2"))
            r = assert(c:response())
            assert.equal("hello GET /after2 1.1 host=test ua=nil\n", r.body)
        end)
    end)

    describe("request bodies", function()
        it("echoes a Content-Length body byte-exact", function()
            local body = all_bytes():rep(400)  -- 100 KiB, every byte value
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n"):format(#body) .. body)
            local r = assert(c:response())
            assert.equal(200, r.status)
            assert.equal(tostring(#body), r.headers["x-body-length"])
            assert.is_true(r.body == body, "echoed body differs")
        end)

        it("decodes a chunked body sent by curl", function()
            local src, out = dir .. "/chunked.bin", dir .. "/chunked.out"
            sh("head -c 300000 /dev/urandom > %s", q(src))
            local code, text = curl(("-H 'Transfer-Encoding: chunked' --data-binary @%s -o %s -D %s -w '%%{http_code}' %s/echo")
                :format(q(src), q(out), q(dir .. "/chunked.h"), url))
            assert.equal(0, code, text)
            assert.equal("200", text)
            assert.matches("X%-Body%-Length: 300000", H.readfile(dir .. "/chunked.h"))
            sh("cmp %s %s", q(src), q(out))
        end)

        it("decodes chunk extensions and trailers, then serves the next request", function()
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send("POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                .. "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .. get("/next"))
            local r = assert(c:response())
            assert.equal("hello world", r.body)
            r = assert(c:response())
            assert.equal("hello GET /next 1.1 host=test ua=nil\n", r.body)
        end)

        it("sends 100 Continue before reading a body (raw)", function()
            local body = ("0123456789abcdef"):rep(128)
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(("POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n")
                :format(#body))
            local interim = assert(c:response())
            assert.equal(100, interim.status)
            assert.equal("Continue", interim.reason)
            c:send(body)
            local r = assert(c:response())
            assert.equal(200, r.status)
            assert.equal(body, r.body)
        end)

        it("sends 100 Continue to curl", function()
            local src, out = dir .. "/expect.bin", dir .. "/expect.out"
            sh("head -c 4096 /dev/urandom > %s", q(src))
            local t0 = H.clock()
            local code, text = curl(("-v -H 'Expect: 100-continue' --expect100-timeout 20 --data-binary @%s -o %s %s/echo")
                :format(q(src), q(out), url))
            assert.equal(0, code, text)
            assert.matches("< HTTP/1.1 100 Continue", text, 1, true)
            assert.is_true(H.clock() - t0 < 10, "curl waited for its expect timeout")
            sh("cmp %s %s", q(src), q(out))
        end)

        it("refuses another Expect with 417", function()
            local r = assert(once(pool.addr, get("/", "Expect: something\r\n")))
            assert.equal(417, r.status)
        end)
    end)

    describe("responses", function()
        it("streams res:write chunks that curl decodes", function()
            local code, text = curl(url .. "/stream?n=50")
            assert.equal(0, code, text)
            local want = {}
            for i = 1, 50 do want[i] = ("part %d\n"):format(i) end
            assert.equal(table.concat(want), text)

            local r = assert(once(pool.addr, get("/stream?n=4")))
            assert.equal("chunked", r.headers["transfer-encoding"])
            assert.is_nil(r.headers["content-length"])
            assert.equal(4, r.chunks)
            assert.equal("part 1\npart 2\npart 3\npart 4\n", r.body)
        end)

        it("keeps the connection after a chunked response", function()
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(get("/stream?n=2") .. get("/then"))
            assert.equal("part 1\npart 2\n", assert(c:response()).body)
            assert.equal("hello GET /then 1.1 host=test ua=nil\n", assert(c:response()).body)
        end)

        -- Regression test (was a bug, now fixed).
        it("sends a handler's own Content-Length once", function()
            local r = assert(once(pool.addr, get("/length?mode=send")))
            assert.equal("hello", r.body)
            assert.equal(1, r.count["content-length"], r.head)
        end)

        it("sends res:write parts unchunked when the handler set Content-Length", function()
            local r = assert(once(pool.addr, get("/length?mode=write")))
            assert.equal("5", r.headers["content-length"])
            assert.is_nil(r.headers["transfer-encoding"])
            assert.equal("hello", r.body)
        end)

        -- Regression test (was a bug, now fixed).
        it("never sends Content-Length with chunked", function()
            local r = assert(once(pool.addr, get("/length?mode=write&name=content-length")))
            assert.is_false(r.headers["content-length"] ~= nil and r.headers["transfer-encoding"] ~= nil,
                r.head)
            assert.equal("hello", r.body)
        end)

        it("streams to an HTTP/1.0 client as a close-delimited body", function()
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(get("/stream?n=3", "", "1.0"))
            local r = assert(c:response())
            assert.is_nil(r.headers["transfer-encoding"])
            assert.equal("close", r.headers.connection)
            assert.equal("part 1\npart 2\npart 3\n", r.body)
        end)

        it("sends what a handler returns as status, headers, body", function()
            local r = assert(once(pool.addr, get("/tuple")))
            assert.equal(201, r.status)
            assert.equal("Created", r.reason)
            assert.equal("yes", r.headers["x-tuple"])
            assert.equal("text/plain", r.headers["content-type"])
            assert.equal("8", r.headers["content-length"])
            assert.equal("created\n", r.body)
        end)

        it("answers a raising handler with 500; the traceback goes to the log only", function()
            local code, text = curl("-w ' %{http_code}' " .. url .. "/raise")
            assert.equal(0, code, text)
            assert.matches(" 500$", text)
            assert.not_matches("SECRET", text)
            assert.not_matches("traceback", text)
            local line = H.wait_until(function()
                return pool:log():match("[^\n]*http handler error %(GET /raise%)[^\n]*")
            end, 5, "the handler error in the log")
            assert.matches("deliberate failure SECRET-123", line, 1, true)
            assert.matches("stack traceback:", line, 1, true)
            assert.matches("http_echo.lua:%d+", line)
            -- The worker survived and serves on.
            local r = assert(once(pool.addr, get("/ok")))
            assert.equal(200, r.status)
        end)
    end)

    describe("limits", function()
        local function refused(bytes, status, text)
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send(bytes)
            local r = assert(c:response())
            assert.equal(status, r.status)
            if text then
                assert.matches(text, r.body, 1, true)
            end
            assert.equal("close", r.headers.connection)
            assert.is_true(c:eof())
            return r
        end

        it("answers a 33 KiB header with 431 (head still arriving)", function()
            refused("GET / HTTP/1.1\r\nHost: test\r\nX-Big: " .. ("a"):rep(33 * 1024) .. "\r\n", 431)
        end)

        -- Regression test (was a bug, now fixed).
        it("answers a 33 KiB request line with 414 (still arriving, and complete)", function()
            refused("GET /" .. ("a"):rep(33 * 1024), 414)
            refused("GET /" .. ("a"):rep(33 * 1024) .. " HTTP/1.1\r\nHost: test\r\n\r\n", 414)
        end)

        it("answers a complete 33 KiB header with 431", function()
            refused("GET / HTTP/1.1\r\nHost: test\r\nX-Big: " .. ("a"):rep(33 * 1024) .. "\r\n\r\n", 431)
        end)

        it("takes a 16 KiB Cookie header by default (a browser's big cookies; nginx takes 32 KiB in all)", function()
            local r = assert(once(pool.addr, "GET /ok HTTP/1.1\r\nHost: test\r\nCookie: " .. ("a=b; "):rep(3200) .. "c=d\r\n\r\n"))
            assert.equal(200, r.status)
        end)

        it("answers a 2 MiB Content-Length with 413 before reading the body", function()
            refused("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2097152\r\n\r\n", 413)
        end)

        it("stops reading a chunked body over max_body (req:body() -> too large)", function()
            local c = client(pool.addr)
            H.defer(finally, function() c:close() end)
            c:send("POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n")
            local r = assert(c:response())
            assert.equal(413, r.status)
            assert.equal("body: too large\n", r.body)
        end)

        it("answers a garbage request line with 400", function()
            refused("HELLO THERE\r\n\r\n", 400, "bad request line")
            refused("GET /x HTTP/2.0\r\nHost: t\r\n\r\n", 505)
            refused("GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400, "bad header line")
        end)

        it("answers HTTP/1.1 without Host with 400", function()
            refused("GET / HTTP/1.1\r\n\r\n", 400, "missing Host")
        end)

        it("answers Transfer-Encoding with Content-Length with 400", function()
            refused("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
                400, "both Transfer-Encoding and Content-Length")
        end)

        it("answers an unknown Transfer-Encoding with 501", function()
            refused("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501)
        end)
    end)

    it("logs no error but the deliberate one", function()
        local bad = H.unexpected_errors(pool:log(), { "http handler error %(GET /raise%)" })
        assert.same({}, bad)
    end)
end)

describe("fdpool.http timeouts (head_timeout 1, keepalive_timeout 1)", function()
    local pool

    setup(function()
        pool = H.start_pool{ script = FIXTURE, workers = 1, args = { "1", "1" } }
        assert(pool.addr, pool:log())
    end)

    teardown(function()
        if pool then
            pool:stop()
        end
    end)

    it("answers a client that sends half a head and stops with 408", function()
        local c = client(pool.addr)
        H.defer(finally, function() c:close() end)
        local t0 = H.clock()
        c:send("GET /slow HTTP/1.1\r\nHost: te")
        local r = assert(c:response())
        local dt = H.clock() - t0
        assert.equal(408, r.status)
        assert.is_true(dt >= 0.9 and dt < 4, "408 after " .. dt .. " s")
        assert.is_true(c:eof())
    end)

    it("answers half a second head on a keep-alive connection with 408", function()
        local c = client(pool.addr)
        H.defer(finally, function() c:close() end)
        c:send(get("/one"))
        assert.equal(200, assert(c:response()).status)
        c:send("GET /two HTTP/1.1\r\n")
        local r = assert(c:response())
        assert.equal(408, r.status)
        assert.is_true(c:eof())
    end)

    it("closes an idle keep-alive connection silently", function()
        local c = client(pool.addr)
        H.defer(finally, function() c:close() end)
        c:send(get("/one"))
        assert.equal(200, assert(c:response()).status)
        local t0 = H.clock()
        assert.is_true(c:eof())  -- no 408 on a connection that said nothing
        assert.is_true(H.clock() - t0 < 4)
    end)
end)

describe("http.static (examples/static.lua)", function()
    local pool, url, root, www, out
    local BIG = 3 * 1024 * 1024

    setup(function()
        root = H.tmpdir()
        www, out = root .. "/www", root .. "/out"
        sh("mkdir -p %s/sub %s/noindex %s", q(www), q(www), q(out))
        H.writefile(root .. "/secret.txt", "outside\n")
        H.writefile(www .. "/hello.txt", "hello static\n")
        H.writefile(www .. "/index.html", "<h1>root</h1>\n")
        H.writefile(www .. "/sub/index.html", "<h1>sub</h1>\n")
        H.writefile(www .. "/noindex/x.css", "p{}\n")
        H.writefile(www .. "/data.bin", all_bytes())
        sh("head -c %d /dev/urandom > %s", BIG, q(www .. "/big.bin"))
        sh("ln -s /etc/passwd %s", q(www .. "/evil"))
        sh("ln -s hello.txt %s", q(www .. "/alias.txt"))
        pool = H.start_pool{ script = STATIC, workers = 2, args = { www } }
        assert(pool.addr, pool:log())
        url = "http://" .. pool.addr
    end)

    teardown(function()
        if pool then
            pool:stop()
        end
    end)

    it("serves files byte-exact with their Content-Type", function()
        for _, t in ipairs{
            { "hello.txt", "text/plain; charset=utf-8" },
            { "index.html", "text/html; charset=utf-8" },
            { "noindex/x.css", "text/css" },
            { "data.bin", "application/octet-stream" },
            { "big.bin", "application/octet-stream" },
        } do
            local dst = out .. "/" .. t[1]:gsub("/", "_")
            local code, text = curl(("-o %s -w '%%{http_code} %%{content_type}' %s/%s"):format(q(dst), url, t[1]))
            assert.equal(0, code, text)
            assert.equal("200 " .. t[2], text)
            sh("cmp %s %s", q(www .. "/" .. t[1]), q(dst))
        end
    end)

    it("answers a missing file with 404", function()
        local r = assert(once(pool.addr, get("/nope.txt")))
        assert.equal(404, r.status)
        assert.equal("not found\n", r.body)
    end)

    it("refuses .., absolute paths and symlinks", function()
        for _, t in ipairs{
            { "/../secret.txt", 403 },
            { "/sub/../../secret.txt", 403 },
            { "/%2e%2e/secret.txt", 403 },
            { "/sub/%2E%2E/%2e%2e/secret.txt", 403 },
            { "//etc/passwd", 404 },           -- stays beneath the root
            { "/" .. root:gsub("^/", "") .. "/secret.txt", 404 },
            { "/evil", 403 },                  -- symlink out
            { "/alias.txt", 403 },             -- symlink in: refused too
        } do
            local r = assert(once(pool.addr, get(t[1])))
            assert.equal(t[2], r.status, t[1])
            assert.not_matches("outside", r.body)
            assert.not_matches("root:", r.body)
        end
    end)

    it("serves index.html for a directory path ending in /", function()
        local r = assert(once(pool.addr, get("/")))
        assert.equal(200, r.status)
        assert.equal("<h1>root</h1>\n", r.body)
        r = assert(once(pool.addr, get("/sub/")))
        assert.equal("<h1>sub</h1>\n", r.body)
        assert.equal("text/html; charset=utf-8", r.headers["content-type"])
        r = assert(once(pool.addr, get("/noindex/")))
        assert.equal(404, r.status)
    end)

    it("answers HEAD with the size and no body; refuses POST with 405", function()
        local c = client(pool.addr)
        H.defer(finally, function() c:close() end)
        c:send("HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        local r = assert(c:response("HEAD"))
        assert.equal(200, r.status)
        assert.equal(tostring(BIG), r.headers["content-length"])
        c:send("POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        r = assert(c:response())
        assert.equal(405, r.status)
        assert.equal("GET, HEAD", r.headers.allow)
    end)

    it("answers If-None-Match with the ETag with 304", function()
        local r = assert(once(pool.addr, get("/hello.txt")))
        local etag = assert(r.headers.etag)
        local c = client(pool.addr)
        H.defer(finally, function() c:close() end)
        c:send(get("/hello.txt", "If-None-Match: " .. etag .. "\r\n"))
        r = assert(c:response())
        assert.equal(304, r.status)
        assert.equal(etag, r.headers.etag)
        -- 304 has no body: the next response follows at once.
        c:send(get("/hello.txt", 'If-None-Match: "other"\r\n'))
        r = assert(c:response())
        assert.equal(200, r.status)
        assert.equal("hello static\n", r.body)
    end)

    it("answers If-Modified-Since (curl -R then -z) with 304", function()
        local dst = out .. "/ims.txt"
        local code, text = curl(("-R -o %s %s/hello.txt"):format(q(dst), url))
        assert.equal(0, code, text)
        code, text = curl(("-z %s -o /dev/null -w '%%{http_code}' %s/hello.txt"):format(q(dst), url))
        assert.equal(0, code, text)
        assert.equal("304", text)

        local r = assert(once(pool.addr, get("/hello.txt")))
        r = assert(once(pool.addr, get("/hello.txt", "If-Modified-Since: " .. r.headers["last-modified"] .. "\r\n")))
        assert.equal(304, r.status)
    end)

    it("serves byte ranges with 206 and refuses unsatisfiable ones with 416", function()
        local data = all_bytes()
        local r = assert(once(pool.addr, get("/data.bin", "Range: bytes=10-19\r\n")))
        assert.equal(206, r.status)
        assert.equal("bytes 10-19/256", r.headers["content-range"])
        assert.equal(data:sub(11, 20), r.body)

        r = assert(once(pool.addr, get("/data.bin", "Range: bytes=-5\r\n")))
        assert.equal(206, r.status)
        assert.equal("bytes 251-255/256", r.headers["content-range"])
        assert.equal(data:sub(-5), r.body)

        r = assert(once(pool.addr, get("/data.bin", "Range: bytes=250-\r\n")))
        assert.equal("bytes 250-255/256", r.headers["content-range"])
        assert.equal(data:sub(251), r.body)

        -- If-Range with another validator: the whole file.
        r = assert(once(pool.addr, get("/data.bin", 'Range: bytes=10-19\r\nIf-Range: "old"\r\n')))
        assert.equal(200, r.status)
        assert.equal(data, r.body)

        r = assert(once(pool.addr, get("/data.bin", "Range: bytes=256-\r\n")))
        assert.equal(416, r.status)
        assert.equal("bytes */256", r.headers["content-range"])
    end)

    -- RFC 9110 §14.1.2-14.4: a last position past the end means the end,
    -- a suffix longer than the file means all of it (still a 206), and a
    -- first position at or past the end cannot be satisfied.
    it("clamps ranges to the file: past the end, suffixes, single bytes (RFC 9110 §14)", function()
        local data = all_bytes()
        for _, t in ipairs{
            -- Range, Content-Range, first and last byte (1-based) of the body
            { "bytes=10-999", "bytes 10-255/256", 11, 256 },
            { "bytes=-10", "bytes 246-255/256", 247, 256 },
            { "bytes=-999", "bytes 0-255/256", 1, 256 },
            { "bytes=-256", "bytes 0-255/256", 1, 256 },
            { "bytes=0-0", "bytes 0-0/256", 1, 1 },
            { "bytes=255-", "bytes 255-255/256", 256, 256 },
            { "bytes=255-255", "bytes 255-255/256", 256, 256 },
            { "bytes=255-9999", "bytes 255-255/256", 256, 256 },
            { "bytes=0-", "bytes 0-255/256", 1, 256 },
        } do
            local r = assert(once(pool.addr, get("/data.bin", "Range: " .. t[1] .. "\r\n")))
            assert.equal(206, r.status, t[1])
            assert.equal(t[2], r.headers["content-range"], t[1])
            local body = data:sub(t[3], t[4])
            assert.equal(tostring(#body), r.headers["content-length"], t[1])
            assert.equal(#body, #r.body, t[1])
            assert.equal(body, r.body, t[1])
        end
        assert.equal(246, #data:sub(11, 256))
        for _, range in ipairs{ "bytes=256-", "bytes=256-300", "bytes=1000-", "bytes=-0" } do
            local r = assert(once(pool.addr, get("/data.bin", "Range: " .. range .. "\r\n")))
            assert.equal(416, r.status, range)
            assert.equal("bytes */256", r.headers["content-range"], range)
            assert.equal("", r.body, range)
        end
    end)

    it("resumes a partial 3 MiB download (curl -C -) byte-exact", function()
        local dst = out .. "/resume.bin"
        sh("head -c 1234567 %s > %s", q(www .. "/big.bin"), q(dst))
        local code, text = curl(("-C - -o %s -w '%%{http_code} %%{size_download}' %s/big.bin"):format(q(dst), url))
        assert.equal(0, code, text)
        assert.equal("206 " .. (BIG - 1234567), text)
        sh("cmp %s %s", q(www .. "/big.bin"), q(dst))
    end)
end)

describe("keep-alive parking (--concurrency 1 --workers 2)", function()
    local pool

    setup(function()
        pool = H.start_pool{ script = FIXTURE, workers = 2, concurrency = 1 }
        assert(pool.addr, pool:log())
    end)

    teardown(function()
        if pool then
            pool:stop()
        end
    end)

    it("holds 50 idle connections in the master and serves their next requests", function()
        local N = 50
        local base = H.fd_count(pool.pid)
        local conns = {}
        H.defer(finally, function()
            for _, c in ipairs(conns) do pcall(c.close, c) end
        end)
        for i = 1, N do
            conns[i] = client(pool.addr)
        end
        local answered = 0
        for i, c in ipairs(conns) do
            c:send(get("/r1/" .. i))
            local r = assert(c:response())
            assert.equal("hello GET /r1/" .. i .. " 1.1 host=test ua=nil\n", r.body)
            answered = answered + 1
        end
        local st = H.wait_until(function()
            local s = pool:status()
            return s and s.parked == N and s
        end, 5, N .. " parked connections")
        assert.equal(N, st.parked)
        for i, c in ipairs(conns) do
            c:send(get("/r2/" .. i))
            local r = assert(c:response())
            assert.equal("hello GET /r2/" .. i .. " 1.1 host=test ua=nil\n", r.body)
            answered = answered + 1
        end
        assert.equal(2 * N, answered)
        for _, c in ipairs(conns) do c:close() end
        conns = {}
        H.wait_until(function()
            local s = pool:status()
            return s and s.parked == 0 and H.fd_count(pool.pid) == base
        end, 5, "the master's fds back to " .. base)
        assert.same({}, H.unexpected_errors(pool:log()))
    end)

    it("closes a parked connection after keepalive_timeout", function()
        local p = H.start_pool{ script = FIXTURE, workers = 1, concurrency = 1, args = { "1", "1" } }
        H.defer(finally, function() p:stop() end)
        local base = H.fd_count(p.pid)
        local c = client(p.addr)
        H.defer(finally, function() c:close() end)
        c:send(get("/once"))
        assert.equal(200, assert(c:response()).status)
        H.wait_until(function()
            local s = p:status()
            return s and s.parked == 1
        end, 5, "a parked connection")
        local t0 = H.clock()
        assert.is_true(c:eof())
        assert.is_true(H.clock() - t0 < 4)
        H.wait_until(function()
            local s = p:status()
            return s and s.parked == 0 and H.fd_count(p.pid) == base
        end, 5, "no parked connection, master fds back to " .. base)
    end)
end)
