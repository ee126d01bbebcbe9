-- tests/64-http-res_spec.lua: res:header and res:send run in C
-- (src/lhttp.c, fdpool._httpres); http.lua keeps their Lua versions as
-- the reference (http._lua_res). For each case both run on twin req/res
-- tables over a recording conn and must leave the same fields, pass the
-- same arguments to conn:sendresponse, return the same values and raise
-- the same errors. Then the real pool answers through the C versions.
package.path = "./tests/?.lua;" .. package.path
local http = require "fdpool.http"
local H = require "helpers"

local function ser(v, seen)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then return tostring(v) end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local t = {}
  for _, k in ipairs(keys) do
    if k ~= "_conn" and k ~= "_req" and k ~= "conn" then
      t[#t + 1] = tostring(k) .. "=" .. ser(v[k], seen)
    end
  end
  return "{" .. table.concat(t, ",") .. "}"
end

-- A conn recording each sendresponse call; ok: what it answers.
local function recorder(ok)
  local calls = {}
  local conn = { calls = calls }
  function conn.sendresponse(_, ...)
    calls[#calls + 1] = ser({ n = select("#", ...), ... })
    if ok then return select(7, ...) and #select(7, ...) or 0 end
    return nil, "closed", 0
  end
  return conn
end

-- Twin objects, then the same steps on each with one implementation.
-- minimal: req and res as conn:httploop makes them (req without _length
-- and _close, res without _status, started and finished: the defaults
-- Req's __index and Res stand for), fields set after the steps shown.
local function run(impl, reqf, steps, ok, minimal)
  local conn = recorder(ok ~= false)
  local req = { method = "GET", version = "1.1", _length = 0, _close = false }
  local res = { _conn = conn, _req = req, _status = 200, _headers = {},
    started = false, finished = false }
  if minimal then
    req._length, req._close = nil, nil
    res._status, res.started, res.finished = nil, nil, nil
  end
  for k, v in pairs(reqf or {}) do req[k] = v end
  local out = {}
  for _, s in ipairs(steps) do
    local r = table.pack(pcall(impl[s[1]], res, table.unpack(s, 2, 3)))
    if not r[1] then r[2] = tostring(r[2]):gsub("^[^:]+:%d+: ", "") end
    out[#out + 1] = ser(r)
    if r[2] == res then out[#out] = "res" end
  end
  return table.concat(out, "\n") .. "\nres " .. ser(res) .. "\nreq " .. ser(req)
    .. "\ncalls " .. table.concat(conn.calls, "\n")
end

local CASES = {
  { "plain", nil, { { "header", "Content-Type", "text/plain" }, { "send", "hello\n" } } },
  { "replace whatever the case", nil, { { "header", "X-A", "1" }, { "header", "x-a", "2" },
    { "header", "X-B", "3" }, { "header", "X-b", nil }, { "send", "" } } },
  { "a table value, a number value", nil, { { "header", "Set-Cookie", { "a=1", "b=2" } },
    { "header", "X-N", 5 }, { "send", "x" } } },
  { "nil body", nil, { { "send" } } },
  { "false body", nil, { { "send", false } } },
  { "a number body", nil, { { "send", 42 } } },
  { "HEAD", { method = "HEAD" }, { { "send", "body" } } },
  { "204", nil, { { "status", 204 }, { "send", "dropped" } } },
  { "304", nil, { { "status", 304 }, { "send", "" } } },
  { "Connection: close from the handler", nil,
    { { "header", "Connection", "Close" }, { "send", "x" } } },
  { "Connection: keep-alive from the handler", nil,
    { { "header", "connection", "keep-alive" }, { "send", "x" } } },
  { "HTTP/1.0", { version = "1.0" }, { { "send", "x" } } },
  { "HTTP/1.0 closing", { version = "1.0", _close = true }, { { "send", "x" } } },
  { "own Date", nil, { { "header", "DATE", "Thu, 01 Jan 1970 00:00:00 GMT" }, { "send", "x" } } },
  { "100-continue, body not read", { _expect_continue = true, _length = 5 }, { { "send", "x" } } },
  { "100-continue, body read", { _expect_continue = true, _length = 5, _body = "abcde" },
    { { "send", "x" } } },
  { "100-continue, chunked", { _expect_continue = true, _chunked = true }, { { "send", "x" } } },
  -- a Content-Length past max_body (max_upload let it in), not read:
  -- drain will not read it, the reply says close (tests/82)
  { "a body past max_body, not read", { _length = 500, _opts = { max_body = 10 } },
    { { "send", "x" } } },
  { "a body past max_body, read", { _length = 500, _opts = { max_body = 10 }, _body = "b" },
    { { "send", "x" } } },
  { "a body past max_body, streamed", { _length = 500, _opts = { max_body = 10 },
    _streamed = "done" }, { { "send", "x" } } },
  { "a body under max_body, not read", { _length = 5, _opts = { max_body = 10 } },
    { { "send", "x" } } },
  { "send twice", nil, { { "send", "a" }, { "send", "b" } } },
  { "header after send", nil, { { "send", "a" }, { "header", "X", "y" } } },
  { "a 999 status", nil, { { "status", 999 }, { "send", "a" } } },
  -- a handler's own res._status, checked as res:status checks it
  { "a status stored as a string", nil, { { "status", "abc" }, { "send", "a" } } },
  { "a status stored as a numeric string", nil, { { "status", "404" }, { "send", "a" } } },
  { "a status stored as a float", nil, { { "status", 200.5 }, { "send", "a" } } },
  { "a status stored as an integral float", nil, { { "status", 201.0 }, { "send", "a" } } },
  { "a status stored out of range", nil, { { "status", 0 }, { "send", "a" } } },
  { "a status stored as a table", nil, { { "status", {} }, { "send", "a" } } },
  -- a 1xx is no final response: the handler's error, nothing sent
  { "a 103 status", nil, { { "status", 103 }, { "send", "a" } } },
  { "a 100 status", nil, { { "status", 100 }, { "send", "a" } } },
  { "a 199 status", nil, { { "status", 199 }, { "send", "a" } } },
  -- res._status read once by res:send (its 1xx check and its range
  -- check on the same read): a 1xx as an integral float, a float, a
  -- numeric string
  { "a 150 status stored as an integral float", nil, { { "status", 150.0 }, { "send", "a" } } },
  { "a 150.5 status stored", nil, { { "status", 150.5 }, { "send", "a" } } },
  { "a 150 status stored as a numeric string", nil, { { "status", "150" }, { "send", "a" } } },
  { "a 404 status stored as an integral float", nil, { { "status", 404.0 }, { "send", "a" } } },
  { "a 201 after a refused 101", nil, { { "status", 101 }, { "send", "a" },
    { "status", 201 }, { "send", "b" } } },
}

describe("res:header and res:send in C", function()
  it("are the ones http.serve's res uses", function()
    assert.equal("C", debug.getinfo(http._c_res.send).what)
    assert.equal("C", debug.getinfo(http._c_res.header).what)
  end)

  for _, case in ipairs(CASES) do
    it("do what the Lua reference does: " .. case[1], function()
      local status = function(res, code) res._status = code return res end
      local lua = { header = http._lua_res.header, send = http._lua_res.send, status = status }
      local c = { header = http._c_res.header, send = http._c_res.send, status = status }
      -- The Date line is the current second: equal unless the clock
      -- ticks between the two runs; then run both again.
      local a, b
      for _ = 1, 3 do
        a, b = run(lua, case[2], case[3]), run(c, case[2], case[3])
        if a == b then break end
      end
      assert.equal(a, b)
    end)
  end

  it("treat a res without _status, started, finished as one with the defaults", function()
    local c = { header = http._c_res.header, send = http._c_res.send,
      status = function(res, code) res._status = code return res end }
    for _, case in ipairs(CASES) do
      local a, b
      for _ = 1, 3 do
        a, b = run(c, case[2], case[3]), run(c, case[2], case[3], nil, true)
        -- what the full twin holds and the minimal one leaves to defaults
        a = a:gsub("_status=200,", ""):gsub("_close=false,", ""):gsub("_length=0,", "")
          :gsub("finished=false,", ""):gsub(",?started=false([,}])", "%1")
        if a == b then break end
      end
      assert.equal(a, b, case[1])
    end
  end)

  it("mark the request broken when the write fails, as the Lua ones", function()
    local steps = { { "header", "A", "b" }, { "send", "x" } }
    local lua = { header = http._lua_res.header, send = http._lua_res.send }
    local c = { header = http._c_res.header, send = http._c_res.send }
    local a = run(lua, nil, steps, false)
    assert.equal(a, run(c, nil, steps, false))
    assert.truthy(a:find("_broken=true", 1, true))
  end)

  it("answer in the real pool (keep-alive, HEAD, HTTP/1.0)", function()
    local pool = H.start_pool{ script = "examples/http_hello.lua", workers = 1 }
    finally(function() pool:stop() end)
    -- The 1.0 request closes the connection after its answer.
    local reply = assert(H.tcp_request(pool.addr,
      "GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET / HTTP/1.0\r\n\r\n"))
    local answers = {}
    for head, rest in reply:gmatch("(HTTP/1.1 200 OK\r\n.-\r\n\r\n)([^H]*)") do
      answers[#answers + 1] = { head, rest }
    end
    assert.equal(3, #answers)
    for i, a in ipairs(answers) do
      assert.truthy(a[1]:find("Content-Type: text/plain\r\n", 1, true))
      assert.truthy(a[1]:find("Content-Length: 6\r\n", 1, true))
      assert.truthy(a[1]:find("\r\nDate: %a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT\r\n"))
      assert.equal(i == 2 and "" or "hello\n", a[2])
    end
    assert.falsy(answers[1][1]:find("Connection:", 1, true))
    assert.truthy(answers[3][1]:find("Connection: close\r\n", 1, true))
  end)

  -- A handler that stores a bad status itself (res._status, res:status's
  -- field) gets a 500 and a log line naming it, never "HTTP/1.1 0", in
  -- res:send (C) as in res:write (Lua); a numeric string is the status.
  it("answer 500 to a handler's own bad res._status, in send and write", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
return http.serve(function(req, res)
  local v = req.path:match("^/%a+/(.*)$")
  res._status = tonumber(v) or v
  if req.path:find("^/write/") then res:write("w\n"); return res:finish() end
  res:send("s\n")
end)
]])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    for _, how in ipairs{ "send", "write" } do
      for _, bad in ipairs{ "oops", "0", "1000", "200.5" } do
        local r = assert(H.request(pool.addr, "GET /" .. how .. "/" .. bad
          .. " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
        assert.matches("^HTTP/1.1 500 ", r, how .. " " .. bad)
      end
      local r = assert(H.request(pool.addr, "GET /" .. how .. "/404"
        .. " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
      assert.matches("^HTTP/1.1 404 ", r, how)
    end
    assert.matches("status must be an integer from 100 to 999", pool:log())
    assert.equal(1, #pool:worker_pids())
  end)

  -- A 1xx as the response would be read as an interim one: the client
  -- waits on and pairs the next answer it gets (the next pipelined
  -- request's) with this request. It is the handler's error (500), for
  -- a returned status, res:status then res:send, and res:write, and
  -- res:status with nothing sent (the loop finishes the response); the
  -- pipelined request behind it gets its own answer or none.
  it("answer 500 to a 1xx as the final status, never an interim line", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
return http.serve(function(req, res)
  local how, v = req.path:match("^/(%a+)/(%d+)$")
  if not how then return 200, {}, "next\n" end
  if how == "return" then return tonumber(v), {}, "x" end
  res:status(tonumber(v))
  if how == "write" then res:write("w\n"); return res:finish() end
  if how == "none" then return end
  res:send("s\n")
end)
]])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    for _, how in ipairs{ "return", "send", "write", "none" } do
      for _, code in ipairs{ "100", "101", "102", "103", "199" } do
        local r = assert(H.request(pool.addr, "GET /" .. how .. "/" .. code
          .. " HTTP/1.1\r\nHost: h\r\n\r\nGET /n HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
        assert.matches("^HTTP/1.1 500 ", r, how .. " " .. code)
        assert.falsy(r:find("HTTP/1.1 1%d%d"), how .. " " .. code .. ": " .. r)
      end
    end
    assert.matches("status 103 is informational, not a final response", pool:log())
  end)

  -- A head past the 2 KiB stack buffer lives in memory the collector
  -- owns: a header whose __tostring raises after 1 MiB of head was built
  -- (in a list value; as Connection, which res:send notes while building)
  -- is the handler's error (500), and the 1 MiB is not lost. It was
  -- malloc'd and leaked on every such request.
  it("lose no head memory when a header raises while the head is built", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
local boom = setmetatable({}, { __tostring = function() error("boom") end })
local kb = ("v"):rep(1024)
local big, listbad = {}, {}
for i = 1, 1024 do big[i], listbad[i] = kb, kb end
listbad[1025] = boom
return http.serve(function(req, res)
  if req.path == "/conn" then
    -- a big header before Connection in the table's traversal order
    for i = 1, 1000 do
      local h = { ["X-Big" .. i] = big, Connection = boom }
      if next(h) == "X-Big" .. i then res._headers = h; break end
    end
    return res:send("no\n")
  end
  res:header("X-Big", listbad)
  if req.path == "/write" then return res:write("no\n") end   -- conn:sendresponse
  res:send("no\n")
end)
]])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    local pid = pool:worker_pids()[1]
    local function rss()
      return tonumber(H.readfile("/proc/" .. pid .. "/status"):match("VmRSS:%s*(%d+)"))
    end
    -- (ASan's quarantine holds freed memory: its RSS says nothing here)
    local n = H.BUILD == "build" and 40 or 3
    for _, path in ipairs{ "/list", "/conn", "/write" } do
      local before = rss()
      for _ = 1, n do
        local r = assert(H.request(pool.addr, "GET " .. path
          .. " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
        assert.matches("^HTTP/1.1 500 ", r)
      end
      if H.BUILD == "build" then
        -- 40 MiB when each request leaks its head
        assert.truthy(rss() - before < 16 * 1024, path .. ": " .. (rss() - before) .. " KiB more")
      end
    end
    assert.matches("http handler error %(GET /conn%):.*boom", pool:log())
  end)
  -- res:send remembers the header names and values it found valid (by
  -- string, at most four of each): every other one is still checked,
  -- each request, whatever came before on the connection.
  it("check each header of each request on a real conn, remembering only valid ones", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
local function unq(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
return http.serve(function(req, res)
  local p, q = req.path, req.query and unq(req.query)
  for i = 1, 6 do res:header("X-H" .. i, "v" .. i) end  -- more than it keeps
  res:header("Content-Type", "text/plain")
  res:header("content-type", "text/html")               -- replaces
  res:header("X-Gone", "x")
  res:header("x-gone", nil)                             -- removes
  if p == "/value" then res:header("X-Q", q) end
  if p == "/name" then res:header(q, "v") end
  if p == "/list" then res:header("Set-Cookie", { "a=1", q }) end
  if p == "/num" then res:header("X-N", 5) end
  if p == "/big" then res:header("X-Big", ("b"):rep(tonumber(q))) end
  if p == "/404" then res:status(404) end
  if p == "/204" or p == "/304" then res:status(tonumber(p:sub(2))) end
  if p == "/chunked" then
    res:write("ab")
    res:write("c")
    return res:finish()
  end
  res:send("ok\n")
end)
]])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    local function ask(target, method)
      local r = assert(H.request(pool.addr, (method or "GET") .. " " .. target
        .. " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
      local head, body = r:match("^(.-\r\n)\r\n(.*)$")
      return r:match("^HTTP/1.1 (%d+)"), head or r, body
    end
    local function ok(target, method)
      local st, head, body = ask(target, method)
      assert.equal("200", st, target .. ": " .. head)
      for i = 1, 6 do
        assert.equal(1, H.count(head, "\r\nX-H" .. i .. ": v" .. i .. "\r\n"), head)
      end
      assert.equal(1, H.count(head, "\r\ncontent-type: text/html\r\n"), head)
      assert.falsy(head:lower():find("\r\ncontent%-type: text/plain"), head)
      assert.falsy(head:lower():find("x-gone", 1, true), head)
      return head, body
    end
    local function refused(target)
      local st, head = ask(target)
      assert.equal("500", st, target .. ": " .. head)
      assert.falsy(head:find("Injected", 1, true), head)
    end
    for _ = 1, 3 do
      assert.truthy(ok("/value?a%09b"):find("\r\nX-Q: a\tb\r\n", 1, true))  -- HTAB is fine
      refused("/value?a%0d%0aInjected:%20x")
      refused("/value?a%0aInjected:%20x")
      refused("/value?%7f")
      refused("/value?%00")
      refused("/name?Bad%20Name")
      refused("/name?X-%c3%a9")
      refused("/name?X-A%0d%0aInjected")
      refused("/name?:")
      refused("/list?b%0d%0aInjected:%20x")
    end
    refused("/name?")                                       -- an empty name
    assert.equal(1, H.count(ok("/list?b=2"), "\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"))
    assert.equal(1, H.count(ok("/num"), "\r\nX-N: 5\r\n"))
    -- heads around and past the 2 KiB stack buffer
    for _, n in ipairs{ 1900, 1960, 1980, 2000, 2014, 2030, 2048, 5000 } do
      local head, body = ok("/big?" .. n)
      assert.equal(1, H.count(head, "\r\nX-Big: " .. ("b"):rep(n) .. "\r\n"), n)
      assert.equal(1, H.count(head, "\r\nContent-Length: 3\r\n"), n)
      assert.equal("ok\n", body, n)
    end
    local st, head, body = ask("/404")
    assert.equal("404", st)
    assert.truthy(head:find("^HTTP/1.1 404 Not Found\r\n"), head)
    assert.equal("ok\n", body)
    head, body = ok("/", "HEAD")
    assert.equal(1, H.count(head, "\r\nContent-Length: 3\r\n"), head)
    assert.equal("", body)
    for _, code in ipairs{ "204", "304" } do
      st, head, body = ask("/" .. code)
      assert.equal(code, st)
      assert.falsy(head:find("Content-Length", 1, true), head)
      assert.equal("", body)
    end
    head, body = ok("/chunked")
    assert.equal(1, H.count(head, "\r\nTransfer-Encoding: chunked\r\n"), head)
    assert.equal("2\r\nab\r\n1\r\nc\r\n0\r\n\r\n", body)
    assert.equal(0, assert(pool:status()).workers[1].restarts)
  end)
end)
