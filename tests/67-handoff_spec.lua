-- tests/67-handoff_spec.lua: the master's hand-off path under the real
-- build/pool. Each side of a channel reads one hand-off message (CONN in
-- the worker, DONE or PARK in the master) per wake-up and leaves the rest
-- to the level-triggered epoll: a burst of connections larger than one
-- CONN batch (32) is still served whole, every DONE counted, in the
-- default mode and in strict prefork with parking. Deferred accept
-- (TCP_DEFER_ACCEPT) on a plain listener whose accept filter waits for
-- bytes: a silent client waits in the kernel (no fd in the master) and is
-- still served when it speaks after the deferral; a listener whose filter
-- is none (filter=none, or a handler that is not HTTP: the server may
-- speak first) hands the connection over at once.

package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local HELLO = "examples/http_hello.lua"
local GREETER = "tests/fixtures/greeter.lua"
local ASAN = H.BUILD ~= "build"
local REQ = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
local REQ_CLOSE = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

-- One response of examples/http_hello.lua (its body ends the response).
local function read_response(fd)
  local buf = ""
  while not buf:find("hello\n", 1, true) do
    local d, err = fd:read(4096)
    if not d then return nil, err or "EOF after " .. #buf .. " bytes" end
    buf = buf .. d
  end
  return buf
end

local function port_of(addr) return tonumber(addr:match(":(%d+)$")) end

local states = H.tcp_states

-- Connects to p and waits until the server's side of it shows; asserts it
-- never sat in SYN_RECV (accept not deferred). Returns the client's fd.
local function connect_undeferred(p)
  local port = port_of(p.addr)
  local fd = assert(fdpool.connect(p.addr, 10))
  local st = H.wait_until(function()
    local s = states(port)
    return (s["01"] or s["03"]) and s
  end, 5, "our side of the connection")
  assert.is_nil(st["03"])
  return fd
end

for _, mode in ipairs {
  { name = "default concurrency", workers = 1 },
  { name = "strict prefork, parking", workers = 2, extra = { "--concurrency", "1" } },
} do
  describe("a burst of hand-offs larger than one batch (" .. mode.name .. ")", function()
    it("serves every connection that queued while the master was stopped, and counts every DONE", function()
      local p = H.start_pool{ script = HELLO, workers = mode.workers, extra = mode.extra }
      H.defer(finally, function() p:stop() end)
      assert(p.addr, p:log())
      local n = ASAN and 70 or 150          -- > 2 CONN batches of 32
      local fds = {}
      H.defer(finally, function() for _, fd in ipairs(fds) do fd:close() end end)
      -- The kernel completes the handshakes and keeps the bytes; the
      -- master finds them all at once when it runs again.
      p:kill("STOP")
      local ok, err = pcall(function()
        for i = 1, n do
          fds[i] = assert(fdpool.connect(p.addr, 10))
          assert(fds[i]:write(REQ))
        end
      end)
      p:kill("CONT")
      assert(ok, err)
      for i, fd in ipairs(fds) do
        local r = assert(read_response(fd))
        assert.matches("^HTTP/1.1 200", r, "connection " .. i)
      end
      -- A second round on the same connections (keep-alive: in strict
      -- prefork each one was parked and comes back through the master).
      for _, fd in ipairs(fds) do assert(fd:write(REQ_CLOSE)) end
      for i, fd in ipairs(fds) do
        local r = assert(read_response(fd))
        assert.matches("^HTTP/1.1 200", r, "connection " .. i .. ", second request")
      end
      local st = H.wait_status(p, function(s)
        return H.sum_workers(s, "active") == 0 and s.accepted == n and s
      end, 10, "every connection reported done")
      assert.equal(n, st.accepted)
      assert.equal(0, st.queued)
      assert.same({}, H.unexpected_errors(p:log()))
    end)
  end)
end

describe("deferred accept on a plain listener", function()
  it("holds a silent client of an http listener in the kernel, not the master, and serves it when it speaks after the deferral", function()
    local p = H.start_pool{ script = HELLO, workers = 1 }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    local port = port_of(p.addr)
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() fd:close() end)
    -- Established for the client, SYN_RECV on our side for the deferral
    -- (1 s): the master has accepted nothing.
    H.wait_until(function() return states(port)["03"] end, 5, "a deferred (SYN_RECV) connection")
    assert.is_nil(states(port)["01"])
    local st = assert(p:status())
    assert.equal(0, st.accepted)
    assert.equal(0, st.pending)
    -- After the deferral the kernel hands it over; the accept filter
    -- holds it (pending) until its request comes, and it is served.
    H.wait_status(p, function(s) return s.pending == 1 end, 10, "the filter to hold it after the deferral")
    assert(fd:write(REQ_CLOSE))
    local r = assert(read_response(fd))
    assert.matches("^HTTP/1.1 200", r)
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("is off with filter=none: the worker takes the connection at once", function()
    local p = H.start_pool{ script = HELLO, workers = 1, listen = "127.0.0.1:0,filter=none" }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    local fd = connect_undeferred(p)
    H.defer(finally, function() fd:close() end)
    H.wait_status(p, function(s) return s.workers[1].active == 1 end, 5, "the worker to hold it")
  end)

  it("is off for a handler that is not HTTP (filter auto: none): a server-first protocol greets at once", function()
    local p = H.start_pool{ script = GREETER, workers = 1 }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    -- Deferred, our side would sit in SYN_RECV for a second first.
    local fd = connect_undeferred(p)
    H.defer(finally, function() fd:close() end)
    assert.equal("220 hello\r", fd:read("l"))
  end)
end)
