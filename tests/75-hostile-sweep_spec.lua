-- tests/75-hostile-sweep_spec.lua: hostile clients against the real
-- build/pool serving examples/http_hello.lua, the cases of the sweep that
-- no other spec covers (the framing cases are tests/framing_cases.lua's,
-- slow and silent clients tests/43-slowclients_spec.lua's): a burst of
-- 1000 pipelined requests in one write, clients that reset in the middle
-- of the answers to such a burst, and a versionless request line
-- ("GET /", HTTP/0.9 style) with a half-close. Each time: the answers a
-- client relies on, the same workers (none crashed), and the workers'
-- fds back to what they were (nothing leaked). Loopback only, bounded.

package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local GET = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"

describe("hostile clients against examples/http_hello.lua", function()
  local pool, pids, fds

  setup(function()
    pool = H.start_pool{ script = "examples/http_hello.lua", workers = 2 }
    assert(pool.addr, pool:log())
    pids = pool:worker_pids()
    fds = {}
    for _, pid in ipairs(pids) do fds[pid] = H.fd_count(pid) end
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  -- The same workers, each with its fds back to where they started.
  local function unharmed(what)
    assert.same(pids, pool:worker_pids(), what .. ": a worker was replaced")
    H.wait_until(function()
      for _, pid in ipairs(pids) do
        if H.fd_count(pid) ~= fds[pid] then return false end
      end
      return true
    end, 20, what .. ": the workers' fds back to where they were")
    local r = assert(H.http_get(pool.addr, "/"))
    assert.truthy(r:match("^HTTP/1%.1 200 "), r)
  end

  it("answers 1000 pipelined requests sent in one write, in order; the 1000th closes", function()
    local out = assert(H.request(pool.addr, GET:rep(1000), 30))
    local n, last = 0, nil
    for head in out:gmatch("(HTTP/1%.1 %d%d%d .-\r\n\r\n)hello\n") do
      assert.truthy(head:match("^HTTP/1%.1 200 "), head)
      n, last = n + 1, head
    end
    assert.equals(1000, n)
    -- keepalive_requests (1000): the last answer says so, then EOF
    assert.truthy(last:lower():find("\r\nconnection: close\r\n", 1, true), last)
    assert.equals(1000, select(2, out:gsub("hello\n", "")))   -- nothing else came
    unharmed("1000 pipelined")
  end)

  it("lives on when clients reset in the middle of the answers to a pipelined burst", function()
    local host, port = pool.addr:match("^(.*):(%d+)$")
    local ok = os.execute(([[/usr/bin/python3 -c '
import socket, struct, sys
for i in range(20):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2000)
    s.recv(100)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
']] .. " %s %s"):format(host, port))
    assert.truthy(ok)
    unharmed("20 resets")
    assert.same({}, H.unexpected_errors(pool:log()))
  end)

  it("answers a versionless request line (HTTP/0.9 style) with 400 once the client half-closes", function()
    local fd = assert(fdpool.connect(pool.addr, 10))
    assert(fd:write("GET /\r\n"))
    assert(fd:shutdown("send"))
    local out = fd:read("a")
    fd:close()
    assert.truthy(out and out:match("^HTTP/1%.1 400 "), tostring(out))
    assert.truthy(out:lower():find("\r\nconnection: close\r\n", 1, true), out)
    unharmed("GET /")
  end)
end)

-- A request body that cannot be read to its end (a bad chunk, a body
-- read only in part) ends the connection after the handler's reply: the
-- reply says `Connection: close`, and a request pipelined behind the bad
-- body is never answered (its bytes are not a request). A handler that
-- returns a string where the headers go gets a 500, not an empty 200.
describe("a body that cannot be read to its end", function()
  local pool, dir

  setup(function()
    dir = H.tmpdir()
    H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
return http.serve(function(req, res)
  if req.path == "/body" then
    local b, err = req:body()
    if not b then return 422, nil, "body: " .. err end
    return 200, nil, "got " .. #b
  elseif req.path == "/part" then
    local next_piece = req:body_reader(nil, 10)
    local piece = next_piece()
    return 200, nil, "first " .. #piece
  elseif req.path == "/string-headers" then
    return 200, "meant as the body"
  end
  return 200, nil, "hello " .. req.path
end)
]])
    pool = H.start_pool{ script = dir .. "/app.lua", workers = 1 }
    assert(pool.addr, pool:log())
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  local SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"

  for name, body in pairs {
    ["an overflowing chunk size"] = "FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    ["a chunk size with a stray byte"] = "5x\r\nhello\r\n0\r\n\r\n",
    ["a chunk longer than its size"] = "3\r\nhello\r\n0\r\n\r\n",
  } do
    it("with " .. name .. ": the reply says Connection: close and what follows is not served", function()
      local out = assert(H.request(pool.addr, "POST /body HTTP/1.1\r\nHost: t\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n" .. body .. SMUGGLED, 10))
      assert.truthy(out:match("^HTTP/1%.1 422 "), out)
      assert.truthy(out:lower():find("\r\nconnection: close\r\n", 1, true), out)
      assert.truthy(out:find("body: bad chunk", 1, true), out)
      assert.is_nil(out:find("smuggled", 1, true), out)
      assert.equals(1, select(2, out:gsub("HTTP/1%.1 ", "")))
    end)
  end

  it("read in part by body_reader: the reply says Connection: close", function()
    local out = assert(H.request(pool.addr, "POST /part HTTP/1.1\r\nHost: t\r\n"
      .. "Content-Length: 100\r\n\r\n" .. ("x"):rep(100) .. SMUGGLED, 10))
    assert.truthy(out:match("^HTTP/1%.1 200 "), out)
    assert.truthy(out:find("first 10", 1, true), out)
    assert.truthy(out:lower():find("\r\nconnection: close\r\n", 1, true), out)
    assert.is_nil(out:find("smuggled", 1, true), out)
  end)

  it("read whole: the connection goes on (the control)", function()
    local out = assert(H.request(pool.addr, "POST /body HTTP/1.1\r\nHost: t\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
      .. "GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 10))
    assert.truthy(out:find("got 5", 1, true), out)
    assert.truthy(out:find("hello /next", 1, true), out)
    assert.equals(1, select(2, out:lower():gsub("\r\nconnection: close\r\n", "")))
  end)

  it("a handler returning a string where the headers go gets a 500, logged", function()
    local out = assert(H.http_get(pool.addr, "/string-headers"))
    assert.truthy(out:match("^HTTP/1%.1 500 "), out)
    assert.is_nil(out:find("meant as the body", 1, true), out)
    H.wait_until(function()
      return pool:log():find("handler returned a string as the headers", 1, true)
    end, 10, "the handler's error in the log")
  end)
end)
