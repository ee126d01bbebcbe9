-- tests/82-conn-close_spec.lua: a response after which the server closes
-- the connection says "Connection: close" (HTTP/1.1 clients and proxies
-- rely on it not to send the next request on that connection), and one
-- that says nothing is followed by the next request served. Each case
-- sends one request on a fresh keep-alive connection, reads the answer,
-- then sends a second request: the server either answers it (kept
-- alive) or closed the connection (EOF). Real build/pool serving
-- tests/fixtures/http_close.lua (max_body 10, max_upload 1000).
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local FIXTURE = "tests/fixtures/http_close.lua"

-- One answer from fd: its head (lower-cased header names in h) and body;
-- nil at EOF. HEAD answers: no body read.
local function read_answer(fd, head_only)
  local line = fd:read("l")
  if not line then return nil end
  local h = { status = tonumber(line:match("^HTTP/1%.%d (%d+)")) }
  while true do
    local l = fd:read("l")
    if not l then return nil end
    l = l:gsub("\r$", "")
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    h[k:lower()] = v
  end
  local n = tonumber(h["content-length"])
  local body = ""
  if head_only then
    body = ""
  elseif n then
    body = n > 0 and assert(fd:read(n)) or ""
  elseif h["transfer-encoding"] == "chunked" then
    local t = {}
    while true do
      local size = tonumber(assert(fd:read("l")):gsub("\r$", ""), 16)
      if size == 0 then assert(fd:read("l")); break end
      t[#t + 1] = assert(fd:read(size))
      assert(fd:read("l"))
    end
    body = table.concat(t)
  end
  return h, body
end

-- request on a fresh connection; returns the answer's head, its body, and
-- whether the server closed after it (a second request got no answer).
local function exchange(addr, request, head_only)
  local fd = assert(fdpool.connect(addr, 10))
  assert(fd:write(request))
  local h, body = read_answer(fd, head_only)
  assert(h, "no answer to " .. request:match("^[^\r]*"))
  local closed = true
  if fd:write("GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n") then
    local h2 = read_answer(fd)
    closed = h2 == nil
  end
  fd:close()
  return h, body, closed
end

-- The reply says close exactly when the server closes after it.
local function honest(addr, request, head_only, want_closed)
  local h, body, closed = exchange(addr, request, head_only)
  local says = (h.connection or ""):lower() == "close"
  local what = request:match("^[^\r]*")
  assert.equal(closed, says, ("%s: server %s, the reply says Connection: %s"):format(
    what, closed and "closed" or "kept the connection", tostring(h.connection)))
  if want_closed ~= nil then
    assert.equal(want_closed, closed, what .. ": closed after the reply")
  end
  return h, body
end

local function post(path, n, extra)
  return ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s"):format(
    path, n, extra or "", ("x"):rep(n))
end

describe("Connection: close whenever the server closes after the response", function()
  local pool

  setup(function()
    pool = H.start_pool { script = FIXTURE, workers = 1 }
    assert(pool.addr, pool:log())
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  it("an unread body over max_body (let in by max_upload): says close (res:send)", function()
    local h, body = honest(pool.addr, post("/skip", 500), false, true)
    assert.equal(200, h.status)
    assert.equal("ok\n", body)
  end)

  it("an unread body over max_body: says close (res:write, chunked)", function()
    local h, body = honest(pool.addr, post("/stream", 500), false, true)
    assert.equal(200, h.status)
    assert.equal("ok\n", body)
  end)

  it("an unread body over max_body, HEAD: says close", function()
    local h = honest(pool.addr, ("HEAD /skip HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n")
      .. ("x"):rep(500), true, true)
    assert.equal(200, h.status)
  end)

  it("an unread body under max_body: drained, kept alive", function()
    honest(pool.addr, post("/skip", 5), false, false)
    honest(pool.addr, post("/stream", 5), false, false)
  end)

  -- A chunked body's size is known only at its end: discarded before
  -- the head, so the head can say close when it passes max_body (Node's
  -- keep-alive agent sent its next request on the closing connection).
  local function chunked_post(path, n)
    return ("POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n")
      :format(path, n, ("x"):rep(n))
  end

  it("an unread chunked body over max_body: says close (res:send)", function()
    local h, body = honest(pool.addr, chunked_post("/skip", 500), false, true)
    assert.equal(200, h.status)
    assert.equal("ok\n", body)
    h = honest(pool.addr, ("HEAD /skip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "1f4\r\n" .. ("x"):rep(500) .. "\r\n0\r\n\r\n"), true, true)
    assert.equal(200, h.status)
  end)

  it("an unread chunked body under max_body: discarded, kept alive", function()
    honest(pool.addr, chunked_post("/skip", 5), false, false)
    honest(pool.addr, chunked_post("/stream", 5), false, false)
    honest(pool.addr, ("HEAD /skip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "5\r\nxxxxx\r\n0\r\n\r\n"), true, false)
  end)

  it("a body over max_body read whole with body_reader: kept alive", function()
    local _, body = honest(pool.addr, post("/read", 500), false, false)
    assert.equal("read 500\n", body)
  end)

  it("a handler's error: 500 with close", function()
    local h = honest(pool.addr, "GET /boom HTTP/1.1\r\nHost: t\r\n\r\n", false, true)
    assert.equal(500, h.status)
    h = honest(pool.addr, "HEAD /boom HTTP/1.1\r\nHost: t\r\n\r\n", true, true)
    assert.equal(500, h.status)
  end)

  it("a plain GET and HEAD: kept alive", function()
    honest(pool.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", false, false)
    honest(pool.addr, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", true, false)
  end)

  it("Expect: 100-continue with the body never asked for: says close", function()
    honest(pool.addr, "POST /skip HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
      .. "Expect: 100-continue\r\n\r\n", false, true)
  end)
end)

describe("Connection: close on a response the worker sends once told to stop", function()
  for _, how in ipairs { { "graceful stop (QUIT)", "QUIT" }, { "reload (HUP)", "HUP" } } do
    it(how[1] .. ": the in-flight answer says close, then EOF", function()
      local pool = H.start_pool { script = FIXTURE, workers = 1 }
      finally(function() pool:stop() end)
      assert(pool.addr, pool:log())
      local fd = assert(fdpool.connect(pool.addr, 10))
      finally(function() fd:close() end)
      assert(fd:write("GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /wait HTTP/1.1\r\nHost: t\r\n\r\n"))
      local h1 = assert(read_answer(fd))
      assert.is_nil(h1.connection)
      -- the worker is in /wait's handler: tell the pool
      H.wait_status(pool, function(st) return H.sum_workers(st, "active") >= 1 end, 10,
        "the request in the worker")
      pool:kill(how[2])
      local h, body = read_answer(fd)
      assert(h, "no answer to /wait")
      assert.equal("waited\n", body)
      assert.equal("close", h.connection)
      assert.is_nil(fd:read(1), "bytes or no EOF after the close")
    end)
  end
end)
