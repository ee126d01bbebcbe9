-- tests/86-hostile2_spec.lua: hostile traffic, round 2, on what the
-- framing corpus (tests/framing_cases.lua), the client corpus
-- (tests/client_cases.lua) and the earlier hostile specs (44, 75, 83,
-- 43) leave out. Against the real build/pool serving
-- tests/fixtures/hostile2_app.lua (body readers, http.static and a
-- reverse proxy over fdpool.http.client) in front of a hostile upstream
-- (tests/fixtures/hostile2_up.lua):
-- - an upstream that lies (a Content-Length shorter than its body, a 204
--   with a body, CL and TE, a bare CR in a value, a huge chunk size,
--   10 000 interim answers, silence, a body cut short) never gets a byte
--   of one response into the next, on the client's connection or on the
--   proxy's pooled upstream connection;
-- - a body trickled where nobody reads it, or read by body_reader, a
--   chunked body's trailers trickled, Expect: 100-continue and then no
--   body, a pipelined second request trickled: each ends within
--   body_timeout/head_timeout (2 s here);
-- - http.static: no redirect to another site ("//host"), no escape;
-- - bytes that can never start a request (a TLS ClientHello sent to a
--   plain port) get their 400 at once, not after head_timeout.
-- Loopback only, bounded, a few seconds each.

package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

-- The responses in out (a whole connection's bytes): a list of
-- { status, headers (lower-case names), body, cut = the body did not
-- end }. Content-Length, chunked, or none (1xx/204/304 and HEAD are not
-- asked here).
local function responses(out)
  local list, pos = {}, 1
  while pos <= #out do
    local hend = out:find("\r\n\r\n", pos, true)
    if not hend then
      list[#list + 1] = { junk = out:sub(pos) }
      break
    end
    local head = out:sub(pos, hend + 1)
    local r = { status = tonumber(head:match("^HTTP/1%.1 (%d%d%d) ")), headers = {} }
    for k, v in head:gmatch("\r\n([^:\r\n]+): *([^\r\n]*)") do r.headers[k:lower()] = v end
    pos = hend + 4
    local cl = tonumber(r.headers["content-length"])
    if r.status and (r.status < 200 or r.status == 204 or r.status == 304) then
      r.body = ""
    elseif cl then
      r.body = out:sub(pos, pos + cl - 1)
      r.cut = #r.body < cl
      pos = pos + cl
    elseif (r.headers["transfer-encoding"] or ""):lower() == "chunked" then
      local parts = {}
      while true do
        local size, after = out:match("^(%x+)\r\n()", pos)
        if not size then r.cut = true; pos = #out + 1; break end
        size = tonumber(size, 16)
        if size == 0 then
          pos = (out:find("\r\n\r\n", after - 2, true) or #out) + 4
          break
        end
        parts[#parts + 1] = out:sub(after, after + size - 1)
        if #out < after + size + 1 then r.cut = true; pos = #out + 1; break end
        pos = after + size + 2
      end
      r.body = table.concat(parts)
    else
      r.body = out:sub(pos)
      pos = #out + 1
    end
    list[#list + 1] = r
  end
  return list
end

-- Send bytes on a new connection, read until EOF (bounded): everything
-- read, and the seconds it took.
local function exchange(addr, bytes, timeout)
  local fd = assert(fdpool.connect(addr, 5))
  assert(fd:settimeout(timeout or 10))
  local t0 = H.now()
  assert(fd:write(bytes))
  local out = fd:read("a") or ""
  fd:close()
  return out, H.now() - t0
end

-- Send head, then one byte of trickle every 0.25 s until the server
-- closes (or limit seconds): everything read, the seconds until EOF, and
-- the bytes of trickle sent.
local function trickle(addr, head, byte, limit)
  local fd = assert(fdpool.connect(addr, 5))
  H.defer(finally, function() fd:close() end)
  local t0, out, sent, eof = H.now(), {}, 0, false
  assert(fd:write(head))
  assert(fd:settimeout(0.25))
  while H.now() - t0 < limit do
    local data, err = fd:read(65536)
    if data then
      out[#out + 1] = data
    elseif not err then
      eof = true
      break
    else
      -- nothing within 0.25 s: one more byte
      if not fd:write(byte) then break end
      sent = sent + 1
    end
  end
  if not eof then
    -- (the server closed while we wrote, or the limit passed)
    assert(fd:settimeout(1))
    local rest = fd:read("a")
    out[#out + 1] = rest or ""
    eof = rest ~= nil
  end
  return table.concat(out), H.now() - t0, sent, eof
end

local GET = "GET %s HTTP/1.1\r\nHost: t\r\n\r\n"
local LAST = "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

describe("fdpool.http, hostile round 2", function()
  local up, app, root

  setup(function()
    root = H.tmpdir()
    local www = root .. "/www"
    os.execute(("mkdir -p %s/sub %s/evil.com '%s/\\evil.com'"):format(www, www, www))
    H.writefile(www .. "/a.txt", "hello\n")
    H.writefile(www .. "/sub/index.html", "index\n")
    H.writefile(root .. "/secret.txt", "SECRET\n")
    os.execute(("ln -s %s/secret.txt %s/link.txt"):format(root, www))
    up = H.start_pool{ script = "tests/fixtures/hostile2_up.lua", workers = 1 }
    assert(up.addr, up:log())
    app = H.start_pool{ script = "tests/fixtures/hostile2_app.lua", workers = 2,
      args = { www, "http://" .. up.addr } }
    assert(app.addr, app:log())
  end)

  teardown(function()
    if app then app:stop() end
    if up then up:stop() end
  end)

  describe("a hostile upstream behind fdpool.http.client (a reverse proxy)", function()
    -- name, what the client gets: status, body (nil: any)
    local cases = {
      { "longer", 200, "hi", "a body longer than its Content-Length (the rest a response)" },
      { "body204", 204, "", "a 204 with a body that is a response" },
      { "splitcr", 502, nil, "a bare CR in a value (a second field hidden after it)" },
      { "clte", 502, nil, "Content-Length and Transfer-Encoding" },
      { "hugechunk", 502, nil, "a chunk size of 2^60" },
      { "extflood", 502, nil, "1-byte chunks with 1000-byte extensions (framing no data pays for)" },
      { "flood1xx", 200, "hi", "10 000 interim 100s, then the answer" },
      { "cut", 502, nil, "a body cut short by close" },
      { "cutchunk", 502, nil, "a chunked body cut short by close" },
      { "silent", 502, nil, "no answer at all (the proxy's 2 s timeout)" },
    }
    for _, c in ipairs(cases) do
      it(c[4] .. ": " .. c[2] .. ", and the next requests on both connections get their own answers", function()
        local out, took = exchange(app.addr, GET:format("/proxy/" .. c[1])
          .. GET:format("/proxy/next") .. LAST:format("/"), 10)
        assert.is_nil(out:find("EVIL", 1, true), out)
        assert.is_nil(out:lower():find("set-cookie", 1, true), out)
        local rs = responses(out)
        assert.equal(3, #rs, out)
        assert.equal(c[2], rs[1].status, out)
        if c[3] then assert.equal(c[3], rs[1].body) end
        assert.equal(200, rs[2].status, out)
        assert.equal("ok", rs[2].body, out)
        assert.equal("ok\n", rs[3].body, out)
        assert.is_true(took < 6, "took " .. took .. " s")
      end)
    end

    for _, name in ipairs{ "longer", "body204", "splitcr" } do
      it("streamed (stream = true, res:write): " .. name .. " does not reach the next response", function()
        local out = exchange(app.addr, GET:format("/sproxy/" .. name)
          .. GET:format("/sproxy/next") .. LAST:format("/"), 10)
        assert.is_nil(out:find("EVIL", 1, true), out)
        local rs = responses(out)
        assert.equal(3, #rs, out)
        assert.is_falsy(rs[1].cut)
        assert.equal("ok", rs[2].body, out)
        assert.equal("ok\n", rs[3].body, out)
      end)
    end

    it("streamed: a body cut short leaves the chunked response unterminated and closes (no false end)", function()
      local out, took = exchange(app.addr, GET:format("/sproxy/cut") .. LAST:format("/"), 10)
      local rs = responses(out)
      assert.equal(1, #rs, out)
      assert.equal(200, rs[1].status, out)
      assert.is_true(rs[1].cut, out)
      assert.is_true(took < 5, "took " .. took .. " s")
      -- and the pool serves on
      local r = responses(exchange(app.addr, LAST:format("/proxy/ok")))
      assert.equal("ok", r[1].body)
    end)
  end)

  describe("trickled and stalled bodies (body_timeout 2, body_min_rate 0)", function()
    -- seconds of waiting on timeouts, no work: the normal pass only (CI
    -- time), as the project's rules ask of heavy tests
    if H.BUILD ~= "build" then
      pending("timeout-bound: run in the normal pass only")
      return
    end
    it("a Content-Length body nobody reads, trickled: the connection closes within body_timeout", function()
      -- (the handler answers at once; draining the body after it was
      -- bounded by each wait only: a byte every 0.25 s held it forever)
      local out, took, sent, eof = trickle(app.addr,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n", "x", 8)
      assert.truthy(out:find("^HTTP/1%.1 200 "), out)
      assert.is_true(eof, "still open after " .. took .. " s, " .. sent .. " bytes")
      assert.is_true(took < 4.5, "closed after " .. took .. " s")
      assert.is_true(sent >= 3, "sent " .. sent)
    end)

    it("a Content-Length body read by body_reader, trickled: 408 within body_timeout", function()
      local out, took, _, eof = trickle(app.addr,
        "POST /reader HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n", "x", 8)
      assert.truthy(out:find("^HTTP/1%.1 408 "), out)
      assert.is_true(eof and took < 4.5, "took " .. took .. " s")
    end)

    it("a chunked body whose trailer section trickles: 408 within body_timeout", function()
      local out, took, _, eof = trickle(app.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: ", "a", 8)
      assert.truthy(out:find("^HTTP/1%.1 408 "), out)
      assert.is_true(eof and took < 4.5, "took " .. took .. " s")
    end)

    it("a chunked body trickled to body_reader, a chunk at a time: 408 within body_timeout", function()
      local out, took, _, eof = trickle(app.addr,
        "POST /reader HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", "1\r\nx\r\n", 8)
      assert.truthy(out:find("^HTTP/1%.1 408 "), out)
      assert.is_true(eof and took < 4.5, "took " .. took .. " s")
    end)

    it("Expect: 100-continue, then no body: 100, then 408 within body_timeout", function()
      local out, took = exchange(app.addr,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n", 10)
      assert.truthy(out:find("^HTTP/1%.1 100 Continue\r\n\r\nHTTP/1%.1 408 "), out)
      assert.is_true(took < 4.5, "took " .. took .. " s")
    end)

    it("a pipelined second request whose head trickles: the first answered, then 408 within head_timeout", function()
      local out, took, _, eof = trickle(app.addr, GET:format("/") .. "GET / HTTP/1.1\r\nX-A: ", "a", 8)
      local rs = responses(out)
      assert.equal(200, rs[1].status, out)
      assert.equal(408, rs[2] and rs[2].status, out)
      assert.is_true(eof and took < 4.5, "took " .. took .. " s")
    end)
  end)

  describe("chunk framing that no data pays for", function()
    local function post(chunks)
      return exchange(app.addr, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        .. "Connection: close\r\n\r\n" .. chunks .. "0\r\n\r\n", 10)
    end

    it("1-byte chunks with 1000-byte extensions: 400 once 16 KiB are owed, not 1000 x max_body read", function()
      -- (20 000 of them are 20 MB for 20 KB of data; refused after 17)
      local fd = assert(fdpool.connect(app.addr, 5))
      H.defer(finally, function() fd:close() end)
      assert(fd:settimeout(10))
      assert(fd:write("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. ("1;" .. ("a"):rep(1000) .. "\r\nx\r\n"):rep(64)))
      local out = fd:read("a") or ""
      assert.truthy(out:find("^HTTP/1%.1 400 "), out)
      assert.truthy(out:find("bad chunk extension", 1, true) or out:find("Bad Request", 1, true), out)
    end)

    it("takes what real clients send: many small chunks, short extensions, padded sizes", function()
      for _, c in ipairs{
        { ("1\r\nx\r\n"):rep(100000), 100000 },
        { ("1;a=b\r\nx\r\n"):rep(100000), 100000 },
        { ("00000400\r\n" .. ("y"):rep(1024) .. "\r\n"):rep(100), 102400 },
        { ("5;name=\"a quoted value\"\r\nhello\r\n"):rep(1000), 5000 },
      } do
        local out = post(c[1])
        assert.truthy(out:find("\r\n\r\nlen=" .. c[2] .. "\n$"), out)
      end
    end)
  end)

  describe("http.static under hostile paths", function()
    it("redirects a directory asked with leading slashes to a path, never to another host", function()
      for _, t in ipairs{ "//evil.com", "///evil.com", "//evil.com?x=1" } do
        local out = exchange(app.addr, LAST:format(t))
        local loc = out:match("\r\nLocation: ([^\r\n]*)")
        assert.truthy(out:find("^HTTP/1%.1 301 "), out)
        assert.is_nil(loc:find("^//"), t .. " -> " .. loc)
        assert.is_nil(loc:find("^/\\"), t .. " -> " .. loc)
        assert.truthy(loc:find("^/evil%.com/"), t .. " -> " .. loc)
      end
      -- a backslash (read as a slash by browsers) goes %-encoded
      local out = exchange(app.addr, LAST:format("/\\evil.com"))
      assert.equal("/%5Cevil.com/", out:match("\r\nLocation: ([^\r\n]*)"), out)
      -- and that Location is the same directory
      out = exchange(app.addr, LAST:format("/%5Cevil.com/"))
      assert.truthy(out:find("^HTTP/1%.1 404 "), out)   -- (no index in it)
      out = exchange(app.addr, LAST:format("/sub"))
      assert.equal("/sub/", out:match("\r\nLocation: ([^\r\n]*)"), out)
    end)

    it("leaves a keep-alive connection its keepalive_timeout (5 s) after pipelined files, not body_timeout (2 s)", function()
      -- (res:sendfile set body_timeout for its send and left it: from the
      -- second file on a connection the idle wait was body_timeout)
      local out, took = exchange(app.addr, GET:format("/a.txt") .. GET:format("/a.txt")
        .. GET:format("/a.txt"), 10)
      local rs = responses(out)
      assert.equal(3, #rs, out)
      assert.equal("hello\n", rs[3].body)
      assert.is_true(took >= 4.9 and took < 8, "closed after " .. took .. " s")
    end)

    it("never serves a byte from outside its root", function()
      local paths = { "/..%2fsecret.txt", "/%2e%2e/secret.txt", "/%2e%2e%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt", "/%252e%252e/secret.txt", "/..\\secret.txt",
        "/link.txt", "/a.txt%00.png", "/%2f%2e%2e%2fsecret.txt", "/%c0%ae%c0%ae/secret.txt",
        "//" .. root:sub(2) .. "/secret.txt", "/%2f" .. root:sub(2) .. "/secret.txt",
        "/sub/..%5c..%5csecret.txt", "/.%2e/secret.txt" }
      for _, t in ipairs(paths) do
        local out = exchange(app.addr, LAST:format(t))
        local st = tonumber(out:match("^HTTP/1%.1 (%d%d%d) "))
        assert.is_nil(out:find("SECRET", 1, true), t)
        assert.truthy(st == 400 or st == 403 or st == 404, t .. ": " .. out)
      end
      local out = exchange(app.addr, LAST:format("/./%2e/a.txt"))
      assert.truthy(out:find("\r\n\r\nhello\n$"), out)
    end)
  end)

  describe("bytes that can never start a request", function()
    local hello = "\22\3\1\0\165\1\0\0\161\3\3" .. ("\0"):rep(40)   -- a TLS ClientHello's start

    local function refused_at_once(addr)
      for _, bytes in ipairs{ hello, "\0GET / HTTP/1.1\r\n", " GET / HTTP/1.1\r\n", "G(T / HTTP/1.1" } do
        local out, took = exchange(addr, bytes, 10)
        assert.truthy(out:find("^HTTP/1%.1 400 "), ("%q: %q"):format(bytes, out))
        assert.is_true(took < 1, ("%q: %.2f s"):format(bytes, took))
      end
      -- after a good request on the same connection
      local out, took = exchange(addr, GET:format("/") .. hello, 10)
      local rs = responses(out)
      assert.equal(200, rs[1].status, out)
      assert.equal(400, rs[2] and rs[2].status, out)
      assert.is_true(took < 1, ("%.2f s"):format(took))
      -- and a request line still coming is waited for
      out = exchange(addr, "GET / HTTP/1.1\r\nHost: t\r\n", 10)
      assert.truthy(out:find("^HTTP/1%.1 408 "), out)
    end

    it("get 400 at once, not 408 after head_timeout (the master's accept filter)", function()
      refused_at_once(app.addr)
    end)

    it("get 400 at once with --accept-filter none (the worker's head reader)", function()
      local p = H.start_pool{ script = "tests/fixtures/hostile2_app.lua", workers = 1,
        extra = { "--accept-filter", "none" }, args = { root .. "/www", "http://" .. up.addr } }
      H.defer(finally, function() p:stop() end)
      assert(p.addr, p:log())
      refused_at_once(p.addr)
    end)
  end)

  it("left no handler error but the streamed proxy's, and the same workers", function()
    local log = app:log()
    for line in log:gmatch("[^\n]*error[^\n]*") do
      assert.truthy(line:find("upstream: ", 1, true) or not line:find(" error ", 1, true), line)
    end
    assert.is_nil(log:find("worker %d+ exited"), log)
  end)
end)
