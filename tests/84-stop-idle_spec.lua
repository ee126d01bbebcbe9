-- tests/84-stop-idle_spec.lua: when the pool stops (gracefully or not)
-- its workers close their idle keep-alive connections at once, as nginx
-- does, instead of holding their exit until the keep-alive timeout; a
-- request in flight is answered whole (saying Connection: close), and a
-- connection whose next request is already there is served. A reload
-- is no stop: the old workers answer an idle connection's next request
-- (saying close) rather than race it with a close.
-- Real build/pool serving tests/fixtures/stop_idle.lua (keep-alive 60 s),
-- plain and over TLS, default and strict prefork, with few idle
-- connections (each waiting in its coroutine) and many (past the
-- worker's dormant threshold: no coroutine while idle).
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local APP = "tests/fixtures/stop_idle.lua"
local REQ = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"

-- n keep-alive connections that each got one answer and now wait.
local function idle_clients(addr, n)
  local fds = {}
  for i = 1, n do
    local fd = assert(fdpool.connect(addr, 10))
    assert(fd:write(REQ))
    assert.equal(200, (H.read_response(fd)))
    fds[i] = fd
  end
  return fds
end

-- Each connection ends with a clean EOF (no reset, no stray bytes)
-- within deadline seconds of t0; returns the latest end.
local function all_closed(fds, t0, deadline)
  local last = 0
  for i, fd in ipairs(fds) do
    fd:settimeout(math.max(0.1, t0 + deadline - H.now()))
    local data, err = fd:read("a")
    assert.equal("", data, ("connection %d: %s"):format(i, tostring(err)))
    last = math.max(last, H.now() - t0)
    fd:close()
  end
  return last
end

for _, mode in ipairs { { name = "default" }, { name = "strict prefork", concurrency = 1 } } do
  describe("stopping with idle keep-alive connections (" .. mode.name .. ")", function()
    for _, n in ipairs { 5, 150 } do
      it(("a graceful stop closes %d idle ones at once and exits"):format(n), function()
        local defer = H.cleanup(finally)
        local p = H.start_pool{ script = APP, workers = 2, concurrency = mode.concurrency }
        defer(function() p:stop("KILL") end)
        local fds = idle_clients(p.addr, n)
        -- one request in flight: answered whole, saying close
        local busy = assert(fdpool.connect(p.addr, 10))
        assert(busy:write("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"))
        H.wait_status(p, function(s) return H.sum_workers(s, "active") >= 1 end, 10,
                      "the slow request in a worker")
        local t0 = H.now()
        p:kill("QUIT")
        local last = all_closed(fds, t0, 10)
        assert.truthy(last < 5, ("idle connections closed after %.1f s"):format(last))
        local status, h, body = H.read_response(busy)
        assert.equal(200, status)
        assert.equal("slow\n", body)
        assert.equal("close", (h.connection or ""):lower())
        busy:close()
        assert.equal(0, p:wait_exit(10))
        assert.truthy(H.now() - t0 < 8, ("exited after %.1f s"):format(H.now() - t0))
      end)
    end

    -- A hand-over is no stop: the old generation's idle connections
    -- stay until their next request, answered (saying close) by it, so
    -- no request sent meanwhile can meet a close; then the worker goes.
    it("a reload answers the old workers' idle connections once more, saying close", function()
      local defer = H.cleanup(finally)
      local p = H.start_pool{ script = APP, workers = 2, concurrency = mode.concurrency }
      defer(function() p:stop("KILL") end)
      local old = p:worker_pids()
      local fds = idle_clients(p.addr, 6)
      p:kill("HUP")
      H.wait_status(p, function(s) return s.generation == 2 end, 10, "generation 2")
      for i, fd in ipairs(fds) do
        assert(fd:write(REQ))
        local status, h = H.read_response(fd)
        assert.equal(200, status, "idle connection " .. i)
        if mode.concurrency ~= 1 then
          -- the old worker's answer, its last
          assert.equal("close", (h.connection or ""):lower(), "idle connection " .. i)
          assert.equal("", fd:read("a"))
        end
        fd:close()
      end
      H.wait_until(function()
        for _, pid in ipairs(old) do if H.alive(pid) then return false end end
        return true
      end, 8, "the old generation's workers to exit")
      assert.matches("hello\n$", H.http_get(p.addr, "/"))
      assert.equal(0, p:stop())
    end)
  end)
end

describe("stopping, a next request that is already there", function()
  it("is served (with Connection: close), not dropped", function()
    local defer = H.cleanup(finally)
    local p = H.start_pool{ script = APP, workers = 1 }
    defer(function() p:stop("KILL") end)
    -- a slow request holds the worker's stop; the same connection's next
    -- request (pipelined) waits in the buffer: it is no idle connection
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write("GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"))
    H.wait_status(p, function(s) return H.sum_workers(s, "active") >= 1 end, 10, "busy")
    p:kill("QUIT")
    local s1, h1, b1 = H.read_response(fd)
    assert.equal(200, s1)
    assert.equal("slow\n", b1)
    local s2, h2, b2 = H.read_response(fd)
    if s2 then
      -- served after all: then it says close
      assert.equal("hello\n", b2)
      assert.equal("close", (h2.connection or ""):lower())
    else
      -- or the first said close and the connection ended there
      assert.equal("close", (h1.connection or ""):lower())
    end
    fd:close()
    assert.equal(0, p:wait_exit(10))
  end)
end)

describe("stopping, a next request that comes as the stop does", function()
  -- The worker is held (a handler on its CPU) while an idle keep-alive
  -- connection's next head arrives and the stop notice comes: when the
  -- worker runs again the head is in the socket, not yet read. It is no
  -- idle connection: its request is served whole, its body too (sent
  -- after the head, as a client that waits for 100 Continue does).
  for _, expect in ipairs { true, false } do
    it(("serves it, its body sent after the head%s"):format(
        expect and " (Expect: 100-continue)" or ""), function()
      local defer = H.cleanup(finally)
      local p = H.start_pool{ script = APP, workers = 1 }
      defer(function() p:stop("KILL") end)
      local fd = idle_clients(p.addr, 1)[1]
      local blocker = assert(fdpool.connect(p.addr, 10))
      assert(blocker:write("GET /block HTTP/1.1\r\nHost: t\r\n\r\n"))
      H.wait_status(p, function(s) return H.sum_workers(s, "active") >= 1 end, 10, "busy")
      assert(fd:write("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        .. (expect and "Expect: 100-continue\r\n" or "") .. "\r\n"))
      p:kill("QUIT")
      fd:settimeout(10)
      if expect then
        local line = fd:read("l")
        assert.equal("HTTP/1.1 100 Continue\r", line)
        assert.equal("\r", fd:read("l"))
      else
        -- the worker runs again (the blocker answered), then the body
        local s = H.read_response(blocker)
        assert.equal(200, s)
        fdpool.sleep(0.2)
      end
      assert(fd:write("hello"))
      local status, h, body = H.read_response(fd)
      assert.equal(200, status)
      assert.equal("hello", body)
      assert.equal("close", (h.connection or ""):lower())
      fd:close()
      blocker:close()
      assert.equal(0, p:wait_exit(10))
    end)
  end
end)

describe("stopping with an idle TLS keep-alive connection", function()
  it("closes it at once too", function()
    local defer = H.cleanup(finally)
    local certs = dofile("tests/fixtures/tls_certs.lua")
    local C = certs.make(H.tmpdir())
    local p = H.start_pool{ script = APP, workers = 1, listen = "127.0.0.1:0,tls",
                            extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key } }
    defer(function() p:stop("KILL") end)
    assert(p.addr, p:log())
    local dir = H.tmpdir()
    local client = dir .. "/client.py"
    H.writefile(client, [[
import socket, ssl, sys, time
port, ca, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                    server_hostname="localhost")
t.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
data = b""
while b"hello\n" not in data:
    data += t.recv(4096)
open(ready, "w").write("ready")
t0 = time.time()
try:
    while t.recv(4096):
        pass
    how = "eof"
except ssl.SSLError as e:
    how = "tls end without close_notify"
print("%s after %.2f" % (how, time.time() - t0))
]])
    local out = dir .. "/out"
    os.execute(("unset LD_PRELOAD; /usr/bin/python3 %s %s %s %s/ready > %s 2>&1 &"):format(
      client, p.addr:match(":(%d+)$"), C.ca, dir, out))
    H.wait_until(function() return H.readfile(dir .. "/ready") end, 10, "the TLS client's first answer")
    p:kill("QUIT")
    local line = H.wait_until(function() return (H.readfile(out) or ""):match("after ([%d.]+)") end,
                              10, "the TLS client to see the end")
    assert.truthy(tonumber(line) < 5, H.readfile(out))
    assert.equal(0, p:wait_exit(10))
  end)
end)
