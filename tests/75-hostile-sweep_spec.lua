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
