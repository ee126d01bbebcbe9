-- tests/49-drain-slowlog_spec.lua: the slow-request log (--slow,
-- --slow-log) and the graceful stop's drain delay (--drain-delay), the
-- latter behind HAProxy with a continuous request loop. Every test starts
-- the real build/pool; every load is bounded in time and count.
local H = require "helpers"
local lines, have, free_port, spawn, reap = H.lines, H.have, H.free_port, H.spawn, H.reap
local fdpool = require "fdpool"

local q = H.quote
local SLOW = "tests/fixtures/up_slow.lua"
local APP = "tests/fixtures/eco_app.lua"
local LOAD = "tests/fixtures/up_load.py"
local ASAN = H.BUILD ~= "build"






-- One line to up_slow.lua; its answer.
local function ask(addr, what)
  return H.request(addr, what .. "\n", 20)
end

describe("--slow", function()
  it("logs a waiting and a spinning handler once each, with where they are, and lets them finish", function()
    local defer = H.cleanup(finally)
    local p = H.start_pool { script = SLOW, workers = 1, args = { "1.2" },
      extra = { "--slow", "0.3" } }
    defer(function() p:stop() end)
    local wpid = p:worker_pids()[1]
    -- Both answer: they were logged, not stopped.
    assert.equals(("done wait %d\n"):format(wpid), ask(p.addr, "wait"))
    assert.equals(("done spin %d\n"):format(wpid), ask(p.addr, "spin"))
    assert.equals(("done quick %d\n"):format(wpid), ask(p.addr, "quick"))
    local log = H.wait_until(function()
      local l = p:log()
      return H.count(l, "slow handler") >= 2 and l
    end, 5, "two slow lines")
    assert.equals(2, H.count(log, "slow handler"), log)
    local waiting = log:match("[^\n]* warn  worker 1%[" .. wpid .. "%]: slow handler %(peer "
      .. "127%.0%.0%.1:%d+, running [%d.]+ s, waiting%): stack traceback: |[^\n]*")
    assert.truthy(waiting, log)
    assert.truthy(waiting:find("in function 'fdpool.sleep'", 1, true), waiting)
    assert.truthy(waiting:find(SLOW .. ":23: in ", 1, true), waiting)   -- wait_for
    local spinning = log:match("[^\n]* warn  worker 1%[" .. wpid .. "%]: slow handler %(peer "
      .. "127%.0%.0%.1:%d+, running [%d.]+ s, on the CPU%): stack traceback: |[^\n]*")
    assert.truthy(spinning, log)
    assert.truthy(spinning:find(SLOW:gsub("%p", "%%%0") .. ":%d+: in "), spinning)
    assert.truthy(spinning:find("spin_for", 1, true), spinning)
    -- The worker was neither stopped nor replaced.
    local st = assert(p:status())
    assert.equals(wpid, st.workers[1].pid)
    assert.equals(0, st.workers[1].restarts)
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("counts per request for fdpool.http: an idle keep-alive connection is not slow, its requests are", function()
    local defer = H.cleanup(finally)
    local p = H.start_pool { script = "tests/fixtures/up_slowhttp.lua", workers = 1,
      extra = { "--slow", "0.3" } }
    defer(function() p:stop() end)
    local fd = assert(fdpool.connect(p.addr, 10))
    defer(function() fd:close() end)
    local function get(path, close)
      assert(fd:write(("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n"):format(path,
        close and "Connection: close\r\n" or "")))
      local status, len = assert(fd:read("l")), nil
      while true do
        local l = assert(fd:read("l"))
        if l == "" or l == "\r" then break end
        len = len or tonumber(l:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)"))
      end
      return status, fd:read(len)
    end
    assert.equals("done /a\n", select(2, get("/a")))
    -- Idle on the keep-alive connection for longer than --slow (the time
    -- passing is what is tested), then more requests on it.
    H.sleep(0.6)
    assert.equals("done /b\n", select(2, get("/b")))
    assert.equals("done /sleep\n", select(2, get("/sleep?x=1")))
    assert.equals("done /spin\n", select(2, get("/spin", true)))
    local log = H.wait_until(function()
      local l = p:log()
      return H.count(l, "slow handler") >= 2 and l
    end, 5, "two slow lines")
    assert.equals(2, H.count(log, "slow handler"), log)
    assert.matches("slow handler %(peer 127%.0%.0%.1:%d+, GET /sleep%?x=1, running [%d.]+ s, waiting%): "
      .. "stack traceback: | %[C%]: in function 'fdpool.sleep' | tests/fixtures/up_slowhttp.lua:17: in ", log)
    assert.matches("slow handler %(peer 127%.0%.0%.1:%d+, GET /spin, running [%d.]+ s, on the CPU%): "
      .. "stack traceback: | tests/fixtures/up_slowhttp.lua:%d+: in [^|]*spin", log)
    assert.equals(0, p:stop())
  end)

  it("writes to --slow-log FILE instead of the log", function()
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local file = dir .. "/slow.log"
    local p = H.start_pool { script = SLOW, workers = 2, args = { "0.8" },
      extra = { "--slow", "0.2", "--slow-log", file } }
    defer(function() p:stop() end)
    local a = ask(p.addr, "spin")
    local b = ask(p.addr, "wait")
    assert.matches("^done spin %d+\n$", a)
    assert.matches("^done wait %d+\n$", b)
    local slow = H.wait_until(function()
      local s = H.readfile(file) or ""
      return #lines(s) >= 2 and s
    end, 5, "two lines in the slow log")
    local l = lines(slow)
    assert.equals(2, #l, slow)
    for _, line in ipairs(l) do
      -- TIME worker N[PID]: slow handler (...): stack traceback: | ...
      assert.matches("^%d+%-%d+%-%d+T[%d:]+Z worker %d%[%d+%]: slow handler %(peer 127%.0%.0%.1:%d+, "
        .. "running [%d.]+ s, [%a ]+%): stack traceback: | ", line)
    end
    assert.truthy(slow:find("waiting): ", 1, true) and slow:find("on the CPU): ", 1, true), slow)
    -- The worker pids in the lines are the pool's workers.
    local pids = H.set_of(p:worker_pids())
    for pid in slow:gmatch("worker %d%[(%d+)%]") do assert.truthy(pids[tonumber(pid)], slow) end
    assert.falsy(p:log():find("slow handler", 1, true), p:log())
    assert.equals(0, p:stop())
  end)

  it("refuses bad values with one line", function()
    local dir = H.tmpdir()
    local cases = {
      { "--slow 0", 2, "pool: --slow must be a number of seconds above 0 (got '0')\n" },
      { "--slow soon", 2, "pool: --slow must be a number of seconds above 0 (got 'soon')\n" },
      { "--drain-delay -1", 2, "pool: --drain-delay must be a number of seconds from 0 to 3600 (got '-1')\n" },
      { "--drain-delay x", 2, "pool: --drain-delay must be a number of seconds from 0 to 3600 (got 'x')\n" },
      -- seconds past about 31 years would overflow the C side's milliseconds
      { "--io-timeout 1e300", 2, "pool: --io-timeout must be a number of seconds up to 1e+09 (got '1e300')\n" },
      { "--timeout 1e300", 2, "pool: --timeout must be a number of seconds up to 1e+09 (got '1e300')\n" },
      { "--slow 2e9", 2, "pool: --slow must be a number of seconds up to 1e+09 (got '2e9')\n" },
      { "--io-timeout nan", 2, "pool: --io-timeout must be a number of seconds (got 'nan')\n" },
      { "--grace 2e9", 2, "pool: --grace must be a number of seconds up to 1e+09 (got '2e9')\n" },
      { "--grace -1", 2, "pool: --grace must be a number of seconds (got '-1')\n" },
      { "--grace nan", 2, "pool: --grace must be a number of seconds (got 'nan')\n" },
      { "--slow 1 --slow-log " .. dir .. "/no/such/dir/slow.log", 1,
        "pool: cannot open slow log " .. dir .. "/no/such/dir/slow.log (No such file or directory)\n" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = H.run_pool("run --listen 127.0.0.1:0 --no-control --workers 1 " .. c[1], 10)
      assert.equals(c[2], code, c[1] .. ": " .. err)
      assert.equals("", out)
      assert.equals(c[3], err)
    end
    H.writefile(dir .. "/bad.lua", "return { slow = 'x' }\n")
    local code, _, err = H.run_pool("run --config " .. dir .. "/bad.lua --no-control", 10)
    assert.equals(1, code)
    assert.equals("pool: " .. dir .. "/bad.lua: setting 'slow' must be a number (got string)\n", err)
    -- fdpool.pool{}: the same options; a log that cannot be opened is the
    -- world failing (nil, message, errno), a bad number is misuse (raises).
    local pool, msg, errno = fdpool.pool { handler = function() end, listen = "127.0.0.1:0",
      workers = 1, control = false, slow = 1, slow_log = dir .. "/no/such/slow.log" }
    assert.is_nil(pool)
    assert.equals("cannot open slow log " .. dir .. "/no/such/slow.log (No such file or directory)", msg)
    assert.equals(2, errno)
    assert.has_error(function()
      fdpool.pool { handler = function() end, listen = "127.0.0.1:0", control = false, slow = -1 }
    end)
    -- grace: the same bounds as the time flags, through fdpool.pool{} too
    for _, g in ipairs { 2e9, -1, 0/0, math.huge } do
      local ok, e = pcall(fdpool.pool, { handler = function() end, listen = "127.0.0.1:0",
        control = false, grace = g })
      assert.is_false(ok, tostring(g))
      assert.matches("grace must be 0 to 1e9 seconds", e, 1, true)
      assert.falsy(e:find("\n", 1, true), e)
    end
  end)
end)

describe("--grace past 2^32 milliseconds", function()
  -- The grace reaches the workers (and the master's kill deadline) as
  -- 32-bit milliseconds: 4294967.8 s once wrapped to 504 ms and cut a
  -- 2 s handler; now it saturates (49.7 days) and the handler finishes.
  it("lets a graceful stop wait for a running handler", function()
    local p = H.start_pool { script = SLOW, workers = 1, args = { "2" },
      extra = { "--grace", "4294967.8", "--drain-delay", "0" } }
    H.defer(finally, function() p:stop("KILL") end)
    assert(p.addr, p:log())
    local pid = p:worker_pids()[1]
    local fd = assert(fdpool.connect(p.addr, 20))
    H.defer(finally, function() fd:close() end)
    assert(fd:write("wait\n"))
    H.wait_status(p, function(st) return H.sum_workers(st, "active") == 1 end, 5, "the handler running")
    p:kill("QUIT")
    assert.equals("done wait " .. pid .. "\n", fd:read("a"))
    assert.equals(0, p:wait_exit(20))
    assert.falsy(p:log():find("grace period over", 1, true), p:log())
  end)
end)

describe("--drain-delay", function()
  it("reports stopping on /healthz and in the status while it still serves, then stops", function()
    local defer = H.cleanup(finally)
    local mport = free_port()
    local p = H.start_pool { script = APP, workers = 1, args = { "A" },
      extra = { "--metrics", "127.0.0.1:" .. mport, "--drain-delay", "3" } }
    defer(function() p:stop() end)
    local maddr = "127.0.0.1:" .. mport
    assert.matches("^HTTP/1.1 200 OK", H.http_get(maddr, "/healthz"))
    local st = assert(p:status())
    assert.equals("running", st.state)
    p:kill("QUIT")
    H.wait_until(function() return p:log():find("still accepting for 3 s (--drain-delay)", 1, true) end,
      5, "the drain to start")
    -- Stopping is reported, and new connections are still served.
    local hz = H.http_get(maddr, "/healthz")
    assert.matches("^HTTP/1.1 503 Service Unavailable", hz)
    assert.matches("unavailable 1/1 workers, stopping", hz)
    assert.equals("stopping", assert(p:status()).state)
    local ok, _, out = H.run("curl -s -m 5 http://" .. p.addr .. "/during")
    assert.is_true(ok, out)
    assert.matches("^A master=" .. p.pid .. " ", out)
    assert.equals(0, p:wait_exit(15))
    local log = p:log()
    assert.truthy(log:find("drain delay over: listeners closed", 1, true), log)
  end)

  it("drains a pool behind HAProxy without a failed request (3 rounds of SIGQUIT under load)", function()
    if not have("haproxy") then
      error("haproxy is not installed (scripts/setup --test installs it)")
    end
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local ports = { STATS = free_port(), FE = free_port(), A = free_port(), AM = free_port(),
                    B = free_port(), BM = free_port() }
    local function start(label)
      local p = H.start_pool { script = APP, workers = 2, args = { label },
        listen = "127.0.0.1:" .. ports[label],
        extra = { "--metrics", "127.0.0.1:" .. ports[label .. "M"] } }
      assert.truthy(p.addr, p:log())
      return p
    end
    local b = start("B")
    defer(function() b:stop() end)
    local cfg = H.readfile("tests/fixtures/up_haproxy.cfg"):gsub("@(%u+)@", function(k)
      return tostring(assert(ports[k], k))
    end)
    H.writefile(dir .. "/haproxy.cfg", cfg)
    local hap = spawn(dir, "haproxy", { "haproxy", "-db", "-f", dir .. "/haproxy.cfg" })
    defer(function() reap(hap) end)
    local function server_up(name)
      local ok, _, out = H.run(("curl -s -m 2 'http://127.0.0.1:%d/stats;csv'"):format(ports.STATS))
      if hap:exited() then error("haproxy exited:\n" .. hap:log()) end
      return ok and out:find("\nbe," .. name .. ",[^\n]*,UP,") ~= nil
    end
    local rounds = ASAN and 1 or 3
    local total = 0
    for round = 1, rounds do
      local a = start("A")
      defer(function() a:stop() end)
      H.wait_until(function() return server_up("a") and server_up("b") end, 15,
        "round " .. round .. ": haproxy to see both pools UP")
      local out, stop = dir .. "/load" .. round, dir .. "/stop" .. round
      local load = spawn(dir, "load" .. round, { "/usr/bin/python3", LOAD, "127.0.0.1",
        tostring(ports.FE), out, stop, "30", ASAN and "2" or "4" })
      defer(function() H.writefile(stop, ""); reap(load) end)
      local function progress()
        local n = 0
        for v in (H.readfile(out) or ""):gmatch("progress (%d+)") do n = tonumber(v) end
        return n
      end
      H.wait_until(function() return progress() >= 50 end, 15, "50 answers before the stop")
      a:kill("QUIT")
      assert.equals(0, a:wait_exit(20))
      local after = progress()
      H.wait_until(function() return progress() >= after + 50 end, 15, "50 answers after the stop")
      H.writefile(stop, "")
      assert.equals(0, load:wait_exit(20))
      local res = H.readfile(out)
      local okn, fail = res:match("done ok=(%d+) fail=(%d+)")
      assert.truthy(okn, res)
      assert.equals("0", fail, res)
      assert.truthy(res:find("from A master=" .. a.pid, 1, true), res)
      assert.truthy(res:find("from B master=" .. b.pid, 1, true), res)
      total = total + tonumber(okn)
      assert.truthy(a:log():find("still accepting for 0.5 s (--drain-delay)", 1, true), a:log())
      assert.same({}, H.unexpected_errors(a:log()))
    end
    assert.truthy(total > 0)
    assert.same({}, H.unexpected_errors(b:log()))
  end)
end)
