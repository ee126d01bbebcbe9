-- tests/73-httploop-slots_spec.lua: conn:httploop's per-request state
-- (src/lhttp.c) over one keep-alive connection, through every way a
-- request can end: the loop keeps the head's previous limit and
-- req._out0 (the bytes sent before the handler ran, which tells a
-- hand-made response from a handler's error) in one stack slot, and
-- whether the request has a body to read in the conn (c->hbody). Each
-- request goes out once the previous answer is in, so the worker waits
-- for every head. Asserted: each answer is the one its request asks
-- for (an unread body drained, a handler's error a 500 and not a
-- hand-over, a hand-made response after earlier requests a hand-over
-- with nothing written after it), for the plain loop, with an access
-- log (cfg.after runs for every request), parked between requests
-- (--concurrency 1), and dormant between requests (the coroutine let
-- go). Real pool, real sockets, no timing assertion.
package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"

-- /: "ok"; /sleep: yields (fdpool.sleep) first; /error: raises before
-- anything is sent (/sleeperror after a yield, /bodyerror after reading
-- the body); /body: the body's length; /ignore: leaves the body unread;
-- /raw: a hand-made response written on the conn, res unused.
local SCRIPT = [[
local fdpool = require "fdpool"
local http = require "fdpool.http"
return http.serve(function(req, res)
  local p = req.path
  if p == "/" then
    return 200, nil, "ok\n"
  elseif p == "/sleep" then
    fdpool.sleep(0.001)
    return 200, nil, "slept\n"
  elseif p == "/error" then
    error("boom")
  elseif p == "/sleeperror" then
    fdpool.sleep(0.001)
    error("boom")
  elseif p == "/bodyerror" then
    assert(req:body())
    error("boom")
  elseif p == "/body" then
    local b, err = req:body()
    return 200, nil, b and ("len " .. #b .. "\n") or ("body: " .. err .. "\n")
  elseif p == "/ignore" then
    return 200, nil, "ignored\n"
  elseif p == "/raw" then
    assert(req.conn:send("HTTP/1.1 299 Raw\r\nContent-Length: 4\r\n\r\nraw\n"))
    return
  end
  return 404, nil, "no\n"
end, { access_log = os.getenv("ALOG") and function() end or nil,
       head_timeout = 30, keepalive_timeout = 30 })
]]

-- Send req, read one response: status, body (none for head_only: HEAD).
local function exchange(c, req, head_only)
  if req ~= "" then
    if c.pause then H.sleep(c.pause) end
    c:send(req)
  end
  while true do
    local i = c.buf:find("\r\n\r\n", 1, true)
    if i then
      local head = c.buf:sub(1, i + 3)
      local n = head_only and 0 or tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength: *(%d+)")) or 0
      if #c.buf >= i + 3 + n then
        local body = c.buf:sub(i + 4, i + 3 + n)
        c.buf = c.buf:sub(i + 4 + n)
        return tonumber(head:match("^HTTP/1%.%d (%d%d%d)")), body, head
      end
    end
    local d, err = c.fd:read(65536)
    if not d then return nil, err or "closed" end
    c.buf = c.buf .. d
  end
end
local function GET(path, extra)
  return ("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n"):format(path, extra or "")
end

-- The 100 Continue a request with Expect: 100-continue gets first.
local function continue(c)
  while not c.buf:find("\r\n\r\n", 1, true) do
    c.buf = c.buf .. assert(c.fd:read(65536))
  end
  local ci = "HTTP/1.1 100 Continue\r\n\r\n"
  assert.equal(ci, c.buf:sub(1, #ci))
  c.buf = c.buf:sub(#ci + 1)
end

-- The ways a connection ends (after the keep-alive requests): the
-- handler's error is a 500 (not a hand-over: _out0 is this request's),
-- a hand-made response is a hand-over (nothing written after it).
local ENDINGS = {
  error = function(c, check)
    check(GET("/error"), 500, nil)
  end,
  sleeperror = function(c, check)
    check(GET("/sleeperror"), 500, nil)
  end,
  bodyerror = function(c, check)
    c:send("POST /bodyerror HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
           .. "Expect: 100-continue\r\n\r\n")
    continue(c)
    check("abc", 500, nil)
  end,
  raw = function(c, check)
    check(GET("/raw"), 299, "raw\n")
  end,
}

local function sequence(addr, ending, pause)
  local c = H.raw_client(addr)
  c.pause = pause
  local function check(req, st, body, head_only)
    local s, b = exchange(c, req, head_only)
    assert.equal(st, s, "status of " .. req:match("^[^\r]*") .. ": " .. tostring(b))
    if body then assert.equal(body, b, "body of " .. req:match("^[^\r]*")) end
  end
  check(GET("/"), 200, "ok\n")
  -- a body left unread, by length then chunked: drained, then served on
  check("POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 200, "ignored\n")
  check(GET("/"), 200, "ok\n")
  check("POST /ignore HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "5\r\nhello\r\n0\r\n\r\n", 200, "ignored\n")
  check(GET("/sleep"), 200, "slept\n")
  -- 100 Continue, then the body
  c:send("POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
  continue(c)
  check("abc", 200, "len 3\n")
  check("POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "2\r\nab\r\n0\r\n\r\n", 200, "len 2\n")
  check("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", 200, "", true)
  check("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, "ok\n")
  -- two requests in one write, the first with a body left unread
  c:send("POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nxy" .. GET("/sleep"))
  local s1, b1 = exchange(c, "")
  local s2, b2 = exchange(c, "")
  assert.same({ 200, "ignored\n", 200, "slept\n" }, { s1, b1, s2, b2 })
  check(GET("/body", "Content-Length: 4\r\n") .. "abcd", 200, "len 4\n")
  ENDINGS[ending](c, check)
  assert.is_true(c:eof(), "bytes after the last response: " .. c.buf)
  c:close()
end

for _, mode in ipairs {
  { name = "plain" },
  { name = "access log", shell = "ALOG=1" },
  { name = "parked between requests (--concurrency 1)", concurrency = 1 },
  -- idle 150 ms before each request: the connection's coroutine goes
  -- between requests (src/task.c's drowsy sweep, tests/69) and the loop
  -- starts again from conn:httploop (the pause is the test's input)
  { name = "dormant between requests", pause = 0.15, endings = { "error", "raw" } },
} do
  describe("conn:httploop's per-request state (" .. mode.name .. ")", function()
    it("serves each request of one keep-alive connection as asked, whatever the one before", function()
      local dir = H.tmpdir()
      H.writefile(dir .. "/app.lua", SCRIPT)
      local pool = H.start_pool{ script = dir .. "/app.lua", workers = 1,
                                 concurrency = mode.concurrency, shell = mode.shell }
      H.defer(finally, function() pool:stop() end)
      assert(pool.addr, pool:log())
      local endings = mode.endings or { "error", "raw", "sleeperror", "bodyerror" }
      for _, ending in ipairs(endings) do
        sequence(pool.addr, ending, mode.pause)
      end
      local log = pool:log()
      for _, what in ipairs { "GET /error", "GET /sleeperror", "POST /bodyerror" } do
        local ending = what:match("/(%w+)")
        assert.equal(H.set_of(endings)[ending] and 1 or 0,
                     H.count(log, "http handler error (" .. what .. "): "), log)
      end
    end)
  end)
end
