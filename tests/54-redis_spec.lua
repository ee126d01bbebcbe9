-- tests/54-redis_spec.lua: examples/redis_counter.lua against a real
-- redis-server (scripts/setup --test installs it; the spec fails, not
-- skips, without it): exact counts from concurrent clients over 2
-- workers, few Redis connections thanks to the keep-alive pool, 502 (not
-- a crash) while Redis is down, recovery when it is back.
local H = require "helpers"
local fdpool = require "fdpool"

local ASAN = H.BUILD ~= "build"

-- Start redis-server on a unix socket in dir (no TCP port, no disk).
local function start_redis(dir)
  local sock = dir .. "/redis.sock"
  assert(os.execute(("redis-server --port 0 --unixsocket %s --unixsocketperm 700 --save '' "
    .. "--appendonly no --dir %s --daemonize no >%s/redis.log 2>&1 & echo $! >%s/redis.pid"):format(
    H.quote(sock), H.quote(dir), H.quote(dir), H.quote(dir))))
  local pid = tonumber(H.wait_until(function() return H.readfile(dir .. "/redis.pid") end, 5, "redis pid"))
  return sock, pid
end

-- One command over a blocking fd: the reply line(s) as a string.
local function redis_cmd(sock, ...)
  local fd, err = fdpool.connect("unix:" .. sock, 5)
  if not fd then return nil, err end
  local args = table.pack(...)
  local t = { "*" .. args.n .. "\r\n" }
  for i = 1, args.n do t[#t + 1] = "$" .. #args[i] .. "\r\n" .. args[i] .. "\r\n" end
  fd:write(table.concat(t))
  local line = fd:read("l")
  local out = line
  local n = line and tonumber(line:match("^%$(%-?%d+)"))
  if n and n >= 0 then
    local data = ""
    while #data < n + 2 do
      local more = fd:read(n + 2 - #data)
      if not more then break end
      data = data .. more
    end
    out = data:sub(1, n)
  end
  fd:close()
  return out
end

local function wait_redis(sock)
  H.wait_until(function() return redis_cmd(sock, "PING") == "+PONG\r" end, 10, "redis to answer")
end

-- Send `per` keep-alive requests for path on each of `conns` connections
-- at once, then read every answer: the list of response bodies.
local function hammer(addr, path, conns, per)
  local fds = {}
  for i = 1, conns do
    fds[i] = assert(fdpool.connect(addr, 20))
    local t = {}
    for k = 1, per do
      t[k] = ("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n"):format(path, k == per and "Connection: close\r\n" or "")
    end
    assert(fds[i]:write(table.concat(t)))
  end
  local bodies, statuses = {}, {}
  for i = 1, conns do
    local all = fds[i]:read("a")
    fds[i]:close()
    for status, body in all:gmatch("HTTP/1%.1 (%d+) [^\r]*\r\n.-\r\n\r\n([^\r\n]*)\n") do
      statuses[#statuses + 1] = tonumber(status)
      bodies[#bodies + 1] = body
    end
  end
  return bodies, statuses
end

describe("examples/redis_counter.lua with a real redis-server", function()
  it("counts exactly, with few connections, 502 while Redis is down, and recovers", function()
    local dir = H.tmpdir()
    local sock, rpid = start_redis(dir)
    local p
    -- One finally for both: busted keeps only the last one a test
    -- registers (a second call replaced the redis kill: it leaked).
    finally(function()
      if p then p:stop() end
      os.execute("kill " .. rpid .. " 2>/dev/null")
    end)
    wait_redis(sock)
    p = H.start_pool{ script = "examples/redis_counter.lua", workers = 2,
                      args = { "unix:" .. sock } }
    local pids = p:worker_pids()

    local conns, per = ASAN and 8 or 20, ASAN and 5 or 10
    local n = conns * per
    local bodies, statuses = hammer(p.addr, "/hits", conns, per)
    assert.equals(n, #statuses)
    local seen = {}
    for i, b in ipairs(bodies) do
      assert.equals(200, statuses[i], b)
      local v = tonumber(b:match("^hits (%d+)$"))
      assert.truthy(v, b)
      assert.is_nil(seen[v], "count " .. v .. " given twice")
      seen[v] = true
    end
    for v = 1, n do assert.truthy(seen[v], "count " .. v .. " missing") end
    assert.equals(tostring(n), redis_cmd(sock, "GET", "counter:hits"))
    assert.equals(("200 hits %d"):format(n), (function()
      local r = H.http_get(p.addr, "/count/hits")
      return r:match("^HTTP/1%.1 (%d+)") .. " " .. r:match("\r\n\r\n(.-)\n")
    end)())

    -- Few Redis connections: each worker pools its own (at most 16 per
    -- worker idle); far fewer were opened than requests were served.
    local list = redis_cmd(sock, "CLIENT", "LIST")
    local clients = select(2, list:gsub("\n", "\n")) - 1    -- minus this one
    assert.is_true(clients >= 1 and clients <= 2 * 16, list)
    local info = redis_cmd(sock, "INFO", "stats")
    local opened = tonumber(info:match("total_connections_received:(%d+)"))
    assert.is_true(opened < n / 2, "redis saw " .. opened .. " connections for " .. n .. " requests")

    -- Redis down: 502, the workers live on.
    os.execute("kill " .. rpid)
    H.wait_until(function() return not H.alive(rpid) end, 10, "redis to exit")
    for _ = 1, 4 do
      local r = H.http_get(p.addr, "/hits")
      assert.matches("^HTTP/1%.1 502 ", r)
      assert.matches("redis unavailable: ", r)
    end
    assert.same(pids, p:worker_pids())

    -- Back: served again (a fresh Redis, so counting starts over).
    sock, rpid = start_redis(dir)
    wait_redis(sock)
    H.wait_until(function()
      return H.http_get(p.addr, "/hits"):match("^HTTP/1%.1 200 ")
    end, 10, "the counter to recover")
    local again = hammer(p.addr, "/hits", 4, 5)
    assert.equals(20, #again)
    assert.same(pids, p:worker_pids())
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log(), { "redis unix:" }))
  end)
end)
