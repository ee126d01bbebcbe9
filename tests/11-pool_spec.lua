-- tests/11-pool_spec.lua: the running pool, black-box. Each test starts
-- the real build/pool on a free port (or a unix socket in a temp dir),
-- talks to it over real sockets, reads `pool status --json` through the
-- control socket, stops it in `finally`, and checks the log for
-- unexpected error lines.
local H = require "helpers"
local fdpool = require "fdpool"

local FIX = "tests/fixtures/"
local q = H.quote

-- Stop p with SIGTERM, expect exit 0 and no error lines in its log but
-- those matching `allowed`.
local function finish(p, allowed)
  assert.equals(0, p:stop(), p:log())
  local bad = H.unexpected_errors(p:log(), allowed)
  assert.same({}, bad, "unexpected error lines:\n" .. table.concat(bad, "\n"))
end

local wait_status, all_idle = H.wait_status, H.all_idle

-- Open n client connections at once (connect is blocking, but completes
-- from the listen backlog whether or not the master has accepted yet).
local function connect_n(addr, n)
  local fds = {}
  for i = 1, n do fds[i] = assert(fdpool.connect(addr, 10)) end
  return fds
end

-- Close client fds, already closed ones included (for `finally`).
local function close_all(fds)
  for _, fd in ipairs(fds) do
    if fdpool.type(fd) == "fd" then fd:close() end
  end
end

describe("a running pool", function()
  it("serves 300 connections on 3 workers and its status adds up", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 3 }
    H.defer(finally, function() p:stop() end)
    assert.truthy(p.addr, p:log())
    local N, bytes_in, bytes_out = 300, 0, 0
    local deadline = H.now() + 30
    for i = 1, N do
      local req = "req" .. i
      local r = assert(H.request(p.addr, req .. "\n", 10))
      local id, echo = r:match("^(%d+) (%S+)\n$")
      assert.equals(req, echo, "reply " .. i .. ": " .. r)
      assert.truthy(tonumber(id) >= 1 and tonumber(id) <= 3, r)
      bytes_in, bytes_out = bytes_in + #req + 1, bytes_out + #r
      assert.truthy(H.now() < deadline, "300 requests took over 30 s")
    end
    -- DONE reports reach the master just after the replies: poll.
    local st = wait_status(p, function(s)
      return H.sum_workers(s, "served") >= N and all_idle(s)
    end, 5, "every connection reported served")
    assert.equals(N, H.sum_workers(st, "served"))
    assert.equals(N, st.accepted)      -- status probes use the control socket
    assert.equals(0, st.queued)
    assert.equals(bytes_in, H.sum_workers(st, "bytes_in"))
    assert.equals(bytes_out, H.sum_workers(st, "bytes_out"))
    assert.equals(3, #st.workers)
    for i, w in ipairs(st.workers) do
      assert.equals(i, w.id)
      assert.equals("free", w.state)
      assert.equals(0, w.active)
      assert.equals(0, w.restarts)
      assert.truthy(H.alive(w.pid))
    end
    finish(p)
  end)

  it("spreads held connections over the workers with least_conn", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 2, policy = "least_conn" }
    H.defer(finally, function() p:stop() end)
    local fds = connect_n(p.addr, 6)
    H.defer(finally, function() close_all(fds) end)
    -- The handlers wait for a line we have not sent: all six stay active.
    local st = wait_status(p, function(s) return H.sum_workers(s, "active") == 6 end,
      5, "6 active connections")
    for _, w in ipairs(st.workers) do
      assert.truthy(w.active > 0, "worker " .. w.id .. " got none: " .. H.json.encode(st))
    end
    local ids = {}
    for i, fd in ipairs(fds) do
      assert(fd:write("held" .. i .. "\n"))
      local line = assert(fd:read("l"))
      local id = line:match("^(%d+) held" .. i .. "$")
      assert.truthy(id, line)
      ids[id] = (ids[id] or 0) + 1
    end
    assert.truthy(ids["1"] and ids["2"], "both workers should have answered")
    finish(p)
  end)

  it("replaces a worker killed with SIGKILL and keeps serving", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 2 }
    H.defer(finally, function() p:stop() end)
    local before = assert(p:status())
    local victim, other = before.workers[1].pid, before.workers[2].pid
    assert.truthy(os.execute("kill -KILL " .. victim))
    H.wait_until(function()
      return p:log():find(("worker 1 (pid %d) killed by SIGKILL"):format(victim), 1, true)
    end, 5, "the kill to be logged")
    local st = wait_status(p, function(s)
      local w = s.workers[1]
      return w.pid ~= victim and w.pid > 0 and w.state == "free"
    end, 5, "worker 1 to be replaced")
    local w1, w2 = st.workers[1], st.workers[2]
    assert.equals(1, w1.restarts)
    assert.same({ how = "signal", code = 9, name = "SIGKILL" }, w1.last_exit)
    assert.truthy(H.alive(w1.pid))
    assert.is_false(H.alive(victim))
    assert.equals(other, w2.pid)
    assert.equals(0, w2.restarts)
    assert.matches(("worker 1 started %%(pid %d%%)"):format(w1.pid), p:log())
    for i = 1, 20 do
      assert.equals("r" .. i, (assert(H.request(p.addr, "r" .. i .. "\n", 10)):match("^%d+ (%S+)\n$")))
    end
    finish(p)
  end)

  it("leaks no fd and no process in the master", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 2 }
    H.defer(finally, function() p:stop() end)
    local fds0 = assert(H.fd_count(p.pid))
    assert.equals(2, #H.children(p.pid))
    local N = 2000
    local deadline = H.now() + 40
    for i = 1, N do
      local kind = i % 10
      local fd = assert(fdpool.connect(p.addr, 10))
      if kind == 0 then
        fd:close()                              -- gone before a byte
      elseif kind == 1 then
        fd:write("gone" .. i .. "\n")           -- asks, leaves (may RST)
        fd:close()
      elseif kind == 2 then
        fd:write("half a li")                   -- no newline, then EOF
        fd:shutdown("send")
        assert.equals("", fd:read("a"))
        fd:close()
      else
        assert(fd:write("ok" .. i .. "\n"))
        local r = fd:read("a")
        fd:close()
        assert.truthy(r and r:match("^%d+ ok" .. i .. "\n$"), r)
      end
      assert.truthy(H.now() < deadline, "2000 connections took over 40 s")
    end
    -- A worker killed in the middle of it all.
    local victim = p:worker_pids()[2]
    os.execute("kill -KILL " .. victim)
    local st = wait_status(p, function(s)
      return s.workers[2].pid ~= victim and s.accepted == N and all_idle(s)
    end, 10, "the pool to settle")
    assert.equals(N, st.accepted)
    assert.equals(0, st.queued)
    local fds1 = H.wait_until(function()
      local n = H.fd_count(p.pid)
      return n == fds0 and n
    end, 5, "the master's fd count to come back to " .. fds0
       .. " (now " .. tostring(H.fd_count(p.pid)) .. ")")
    assert.equals(fds0, fds1)
    local kids = H.children(p.pid)
    assert.equals(2, #kids)
    for _, pid in ipairs(kids) do assert.truthy(H.alive(pid), "zombie child " .. pid) end
    local pids = p:worker_pids()
    table.sort(kids)
    table.sort(pids)
    assert.same(kids, pids)
    finish(p)
  end)

  it("overlaps slow connections within a worker (concurrency 100)", function()
    local p = H.start_pool{ script = FIX .. "pool_slow.lua", args = { "0.5" },
                            workers = 2, concurrency = 100 }
    H.defer(finally, function() p:stop() end)
    local fds = connect_n(p.addr, 40)
    H.defer(finally, function() close_all(fds) end)
    local t0 = H.clock()
    for i, fd in ipairs(fds) do assert(fd:write("s" .. i .. "\n")) end
    for i, fd in ipairs(fds) do
      local line = fd:read("l")
      assert.truthy(line and line:match("^%d+ s" .. i .. "$"), tostring(line))
    end
    local dt = H.clock() - t0
    -- In series that would be 40 * 0.5 / 2 = 10 s.
    assert.truthy(dt >= 0.5, "too fast to have slept: " .. dt)
    assert.truthy(dt < 3, ("40 slow connections took %.2f s"):format(dt))
    finish(p)
  end)

  it("queues, never drops, connections beyond capacity (concurrency 1)", function()
    local p = H.start_pool{ script = FIX .. "pool_slow.lua", args = { "0.3" },
                            workers = 2, concurrency = 1 }
    H.defer(finally, function() p:stop() end)
    local fds = connect_n(p.addr, 6)
    H.defer(finally, function() close_all(fds) end)
    local t0 = H.clock()
    for i, fd in ipairs(fds) do assert(fd:write("c" .. i .. "\n")) end
    for i, fd in ipairs(fds) do
      local line = fd:read("l")
      assert.truthy(line and line:match("^%d+ c" .. i .. "$"), tostring(line))
    end
    local dt = H.clock() - t0
    -- 6 connections, 2 at a time, 0.3 s each: 3 rounds.
    assert.truthy(dt >= 0.9, ("6 connections on 2 strict workers took only %.3f s"):format(dt))
    assert.truthy(dt < 3, ("took %.2f s"):format(dt))
    local st = wait_status(p, function(s) return H.sum_workers(s, "served") == 6 end,
      5, "6 served")
    assert.equals(6, st.accepted)
    finish(p)
  end)

  it("logs a handler error with a traceback and closes only that connection", function()
    local script = FIX .. "pool_boom.lua"
    local p = H.start_pool{ script = script, workers = 1 }
    H.defer(finally, function() p:stop() end)
    local a = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() close_all{ a } end)
    assert(a:write("hello\n"))
    local pid = tonumber(assert(a:read("l")):match("^pid (%d+) hello$"))
    assert.truthy(pid)

    local b = assert(fdpool.connect(p.addr, 10))
    assert(b:write("boom\n"))
    assert.equals("", b:read("a"))          -- closed by the pool
    b:close()
    local line = H.wait_until(function()
      return p:log():match("[^\n]*handler error[^\n]*")
    end, 5, "the handler error in the log")
    assert.matches("^%S+ error worker 1%[" .. pid .. "%]: handler error %(peer 127%.0%.0%.1:%d+%): ", line)
    assert.truthy(line:find(script .. ":12: boom requested", 1, true), line)
    assert.truthy(line:find("stack traceback:", 1, true), line)
    -- The traceback points into the fixture again (the frame of the handler).
    local _, n = line:gsub(script:gsub("%p", "%%%0") .. ":12:", "")
    assert.truthy(n >= 2, "traceback should name " .. script .. ":12: " .. line)

    -- The other connection on that worker lives on.
    assert(a:write("again\n"))
    assert.equals("pid " .. pid .. " again", a:read("l"))
    -- And the same worker process serves the next connection.
    local c = assert(fdpool.connect(p.addr, 10))
    assert(c:write("next\n"))
    assert.equals("pid " .. pid .. " next", c:read("l"))
    c:close()
    local st = assert(p:status())
    assert.equals(pid, st.workers[1].pid)
    assert.equals(0, st.workers[1].restarts)
    a:close()
    finish(p, { "handler error" })
  end)

  it("passes the arguments after -- to the script as ... and arg", function()
    local script = FIX .. "pool_args.lua"
    local p = H.start_pool{ script = script, workers = 1, args = { "alpha", "two words", "x=1" } }
    H.defer(finally, function() p:stop() end)
    assert.equals("alpha,two words,x=1|alpha,two words,x=1|3|" .. script .. "\n",
      H.request(p.addr, "", 10))
    finish(p)
  end)
end)

describe("stopping", function()
  it("exits 0 within 3 s on SIGTERM, with every worker gone", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 2 }
    H.defer(finally, function() p:stop("KILL") end)
    local pids = p:worker_pids()
    -- A connection in flight (its handler waits for a line).
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() close_all{ fd } end)
    wait_status(p, function(s) return H.sum_workers(s, "active") == 1 end, 5, "1 active")
    local t0 = H.clock()
    p:kill("TERM")
    local code = p:wait_exit(5)
    local dt = H.clock() - t0
    assert.equals(0, code, p:log())
    assert.truthy(dt < 3, ("SIGTERM took %.2f s"):format(dt))
    for _, pid in ipairs(pids) do assert.is_false(H.alive(pid), "worker " .. pid .. " survived") end
    assert.matches("SIGTERM: stopping", p:log())
    -- The in-flight connection was closed (not left hanging).
    local rest, rerr = fd:read("a")
    assert.truthy(rest == "" or (rerr or ""):match("reset"), tostring(rerr))
    local bad = H.unexpected_errors(p:log())
    assert.same({}, bad, table.concat(bad, "\n"))
  end)

  it("takes every worker down within 1 s when the master is SIGKILLed", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 3 }
    H.defer(finally, function() p:stop("KILL") end)
    local pids = p:worker_pids()
    assert.equals(3, #pids)
    local t0 = H.clock()
    p:kill("KILL")
    H.wait_until(function()
      for _, pid in ipairs(pids) do
        if H.alive(pid) then return false end
      end
      return true
    end, 1.5, "the workers to die with the master")
    local dt = H.clock() - t0
    assert.truthy(dt <= 1.0, ("workers outlived the master by %.2f s"):format(dt))
    assert.equals(137, p:wait_exit(5))
  end)
end)

describe("strict prefork (concurrency 1)", function()
  it("shows a worker busy while it holds a connection and free after", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 1, concurrency = 1 }
    H.defer(finally, function() p:stop() end)
    local st = assert(p:status())
    assert.equals("free", st.workers[1].state)
    assert.equals(1, st.workers[1].capacity)
    local a = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() close_all{ a } end)
    st = wait_status(p, function(s) return s.workers[1].state == "busy" end, 5, "busy")
    assert.equals(1, st.workers[1].active)
    assert.truthy(st.workers[1].busy_since > 0)
    -- A second client waits in the queue, or offered to the busy worker
    -- (strict prefork's prefetch: started when a is over); not dropped.
    local b = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() close_all{ b } end)
    assert(b:write("second\n"))
    wait_status(p, function(s) return s.queued == 1 or s.workers[1].active == 2 end,
                5, "1 queued or offered")
    assert(a:write("first\n"))
    assert.equals("1 first", a:read("l"))
    assert.equals("1 second", b:read("l"))
    st = wait_status(p, all_idle, 5, "free again")
    assert.equals("free", st.workers[1].state)
    assert.equals(0, st.workers[1].busy_since)
    assert.equals(2, st.workers[1].served)
    finish(p)
  end)
end)

describe("a unix socket listener", function()
  it("serves, and its path is removed after stop", function()
    local p = H.start_pool{ script = FIX .. "pool_reply.lua", workers = 2, listen = "unix" }
    H.defer(finally, function() p:stop() end)
    local path = p.dir .. "/pool.sock"
    assert.equals("unix:" .. path, p.addr, p:log())
    assert.truthy(H.run("test -S " .. q(path)))
    for i = 1, 10 do
      assert.matches("^%d+ u" .. i .. "\n$", assert(H.request(p.addr, "u" .. i .. "\n", 10)))
    end
    finish(p)
    assert.is_false(H.run("test -e " .. q(path)), "socket path left behind")
  end)
end)

describe("init and custom status fields", function()
  it("runs init once per worker, before it serves", function()
    local dir = H.tmpdir()
    local log = dir .. "/inits"
    local p = H.start_pool{ script = FIX .. "pool_init.lua", workers = 2, args = { log } }
    H.defer(finally, function() p:stop() end)
    local st = assert(p:status())
    local lines = {}
    for id, pid, n in (H.readfile(log) or ""):gmatch("(%d+) (%d+) (%d+)\n") do
      lines[#lines + 1] = { tonumber(id), tonumber(pid), tonumber(n) }
    end
    table.sort(lines, function(x, y) return x[1] < y[1] end)
    assert.equals(2, #lines, H.readfile(log))
    for i, w in ipairs(st.workers) do
      assert.same({ i, w.pid, 1 }, lines[i])     -- id, pid, first and only call
    end
    for _ = 1, 6 do
      assert.matches("^[12] 1\n$", assert(H.request(p.addr, "", 10)))
    end
    -- Serving did not run init again.
    local _, n = (H.readfile(log) or ""):gsub("\n", "")
    assert.equals(2, n)
    finish(p)
  end)

  -- Regression: the master once read a SET value as a C string past the
  -- end of its message, so a short value after a long one came back as
  -- "vxxx..." (fixed by NUL-terminating decoded payloads).
  it("shows fdpool.worker.set(k, v) from init in status --json and the table", function()
    local dir = H.tmpdir()
    local p = H.start_pool{ script = FIX .. "pool_init.lua", workers = 2, args = { dir .. "/inits" } }
    H.defer(finally, function() p:stop() end)
    local st = wait_status(p, function(s)
      for _, w in ipairs(s.workers) do
        if w.fields.k == nil or w.fields.inits == nil then return false end
      end
      return true
    end, 5, "the custom fields")
    for _, w in ipairs(st.workers) do
      assert.same({ a = ("x"):rep(40), k = "v", inits = "1" }, w.fields)
    end
    local code, out = H.run_pool("status --control " .. q(p.control))
    assert.equals(0, code)
    local _, n = out:gsub(" k=v ", "")
    assert.equals(2, n, out)
    finish(p)
  end)
end)

describe("the examples", function()
  it("examples/echo.lua echoes lines prefixed with the worker id", function()
    local p = H.start_pool{ script = "examples/echo.lua", workers = 2 }
    H.defer(finally, function() p:stop() end)
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() close_all{ fd } end)
    assert(fd:write("hello\n"))
    local id = assert(fd:read("l")):match("^([12]): hello$")
    assert.truthy(id)
    assert(fd:write("second line\n"))
    assert.equals(id .. ": second line", fd:read("l"))
    assert(fd:write("quit\n"))
    assert.equals("", fd:read("a"))
    finish(p)
  end)

  it("examples/hello.lua answers HTTP with keep-alive", function()
    local p = H.start_pool{ script = "examples/hello.lua", workers = 2 }
    H.defer(finally, function() p:stop() end)
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() close_all{ fd } end)
    local function response()
      local status = assert(fd:read("l"))
      local headers = {}
      while true do
        local h = assert(fd:read("l"))
        if h == "\r" then break end
        local k, v = h:match("^([^:]+):%s*(.-)\r$")
        headers[k:lower()] = v
      end
      local body = fd:read(tonumber(headers["content-length"]))
      return status, headers, body
    end
    assert(fd:write("GET / HTTP/1.1\r\nHost: test\r\n\r\n"))
    local status, headers, body = response()
    assert.equals("HTTP/1.1 200 OK\r", status)
    assert.equals("6", headers["content-length"])
    assert.is_nil(headers["connection"])
    assert.equals("hello\n", body)
    -- The same connection, a second request, then the server closes.
    assert(fd:write("GET /again HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"))
    status, headers, body = response()
    assert.equals("HTTP/1.1 200 OK\r", status)
    assert.equals("close", headers["connection"])
    assert.equals("hello\n", body)
    assert.equals("", fd:read("a"))
    local st = wait_status(p, function(s) return H.sum_workers(s, "served") == 1 end, 5, "1 served")
    assert.equals(1, st.accepted)
    finish(p)
  end)
end)
