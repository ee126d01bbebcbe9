-- tests/40-reliability_spec.lua: what keeps a pool up when handlers,
-- workers, clients, operators and the system misbehave. Every test
-- starts the real build/pool, talks to it over real sockets from this
-- process, checks figures (failed connections, processes, fds, times
-- against deadlines) and the log, and stops the pool in `finally`.
local H = require "helpers"
local fdpool = require "fdpool"

local FIX = "tests/fixtures/"
local TIMEOUT_FIX = FIX .. "rel_timeout.lua"
local q = H.quote

-- finally() is the spec file's own (busted gives it to spec files,
-- not to modules): hand it to H.cleanup.
local function cleanup() return H.cleanup(finally) end

local wait_status, all_idle = H.wait_status, H.all_idle

local function no_unexpected_errors(p, allowed)
  local bad = H.unexpected_errors(p:log(), allowed)
  assert.same({}, bad, "unexpected error lines:\n" .. table.concat(bad, "\n"))
end

-- Stop p with SIGTERM, expect exit 0 and no error lines but `allowed`.
local function finish(p, allowed)
  assert.equals(0, p:stop(), p:log())
  no_unexpected_errors(p, allowed)
end

-- One request to the fixtures' echo: "WORD\n" -> "pid <pid> WORD\n".
-- Returns the worker pid, or nil and why.
local function echo(addr, word)
  local r, err = H.request(addr, word .. "\n", 10)
  if not r then return nil, err end
  local pid, got = r:match("^pid (%d+) (%S+)\n$")
  if got ~= word then return nil, "bad reply: " .. ("%q"):format(r) end
  return tonumber(pid)
end

-- Open a connection, send a command line and read the handler's
-- acknowledgement line (so the handler is known to be running).
local function open_cmd(addr, cmd, ack)
  local fd = assert(fdpool.connect(addr, 10))
  assert(fd:write(cmd .. "\n"))
  assert.equals(ack, fd:read("l"))
  return fd
end

local function close_all(fds)
  for _, fd in ipairs(fds) do
    if fdpool.type(fd) == "fd" then fd:close() end
  end
end

local count = H.count

local set_of = H.set_of

-- Field `name` of /proc/PID/status ("Uid", "Groups", ...), or nil.
local function proc_status(pid, name)
  local s = H.readfile("/proc/" .. pid .. "/status")
  return s and s:match("\n" .. name .. ":\t([^\n]*)")
end

-- CPU seconds (user + system) a process has used so far.
local function cpu_seconds(pid)
  local s = assert(H.readfile("/proc/" .. pid .. "/stat")):match("^%d+ %b() (.*)")
  local f = {}
  for x in s:gmatch("%S+") do f[#f + 1] = x end
  return (tonumber(f[12]) + tonumber(f[13])) / 100     -- USER_HZ is 100
end

-- The numbers of the fds pid has open.
local function open_fds(pid)
  local _, _, out = H.run("ls /proc/" .. pid .. "/fd")
  local t = {}
  for n in out:gmatch("%d+") do t[tonumber(n)] = true end
  return t
end

-- Start a pool whose control socket is `control` (instead of the temp
-- dir's default one), and wait for `workers` ready workers.
local function start_at(control, opts)
  opts.extra = opts.extra or {}
  table.insert(opts.extra, "--control")
  table.insert(opts.extra, control)
  opts.ready = false
  local p = H.start_pool(opts)
  p.control = control
  if p.addr then p:wait_ready(opts.workers or 2) end
  return p
end

describe("--timeout", function()
  it("cancels a handler waiting on I/O or sleeping, alone, with its traceback", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1, extra = { "--timeout", "1" } }
    defer(function() p:stop() end)
    local pid0 = p:worker_pids()[1]
    local t0 = H.clock()
    local waiting = open_cmd(p.addr, "wait", "waiting")
    local sleeping = open_cmd(p.addr, "sleep", "sleeping")
    defer(function() close_all{ waiting, sleeping } end)
    -- Meanwhile the same worker serves others.
    for i = 1, 5 do assert.equals(pid0, echo(p.addr, "during" .. i)) end
    -- Both cancelled handlers' clients see their connection closed
    -- (EOF, no bytes) about 1 s after their handlers started.
    assert.equals("", waiting:read("a"))
    local t1 = H.clock() - t0
    assert.equals("", sleeping:read("a"))
    local t2 = H.clock() - t0
    assert.truthy(t1 >= 0.9 and t1 < 2.0, "waiting handler closed after " .. t1 .. " s")
    assert.truthy(t2 >= 0.9 and t2 < 2.0, "sleeping handler closed after " .. t2 .. " s")
    -- Same worker, never restarted, slots given back.
    local st = wait_status(p, function(s)
      return all_idle(s) and H.sum_workers(s, "served") == 7
    end, 5, "7 connections served and none active")
    assert.equals(pid0, st.workers[1].pid)
    assert.equals(0, st.workers[1].restarts)
    assert.equals(pid0, echo(p.addr, "after"))
    local log = p:log()
    assert.truthy(log:find("handler exceeded --timeout 1s (peer 127.0.0.1:", 1, true), log)
    assert.truthy(log:find("cancelled: handler timed out | stack traceback: | [C]: in method 'receive' | "
      .. TIMEOUT_FIX .. ":13: in function", 1, true), log)
    assert.truthy(log:find("cancelled: handler timed out | stack traceback: | [C]: in function 'fdpool.sleep' | "
      .. TIMEOUT_FIX .. ":17: in function", 1, true), log)
    assert.equals(2, count(log, "handler exceeded --timeout"))
    assert.falsy(log:find("exited", 1, true) or log:find("killed", 1, true), log)
    finish(p, { "handler exceeded %-%-timeout" })
  end)

  it("--io-timeout bounds each wait on a silent client, without an error", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1, extra = { "--io-timeout", "1" } }
    defer(function() p:stop() end)
    local pid0 = p:worker_pids()[1]
    local t0 = H.clock()
    local waiting = open_cmd(p.addr, "wait", "waiting")
    defer(function() close_all{ waiting } end)
    assert.equals("", waiting:read("a"))  -- receive gave nil, "timeout": handler returned
    local dt = H.clock() - t0
    assert.truthy(dt >= 0.9 and dt < 1.8, "silent client closed after " .. dt .. " s")
    local st = wait_status(p, all_idle, 5, "no active connection")
    assert.equals(pid0, st.workers[1].pid)
    assert.falsy(p:log():find("--timeout", 1, true), p:log())
    finish(p)
  end)

  it("interrupts a handler spinning in Lua and keeps its worker", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1, extra = { "--timeout", "1" } }
    defer(function() p:stop() end)
    local pid0 = p:worker_pids()[1]
    local t0 = H.clock()
    local spinning = open_cmd(p.addr, "spin", "spinning")
    defer(function() close_all{ spinning } end)
    assert.equals("", spinning:read("a"))
    local dt = H.clock() - t0
    -- SIGUSR2 at timeout + 1 s (on the master's 100 ms tick).
    assert.truthy(dt >= 1.9 and dt < 3.0, "spinning handler stopped after " .. dt .. " s")
    assert.equals(pid0, echo(p.addr, "next"))
    local st = wait_status(p, all_idle, 5, "no active connection")
    assert.equals(pid0, st.workers[1].pid)
    assert.equals(0, st.workers[1].restarts)
    local log = p:log()
    local line = log:match("[^\n]*handler error %(peer 127%.0%.0%.1:%d+%): handler timed out: "
      .. "held the CPU past %-%-timeout | stack traceback: |[^\n]*")
    assert.truthy(line, log)
    assert.truthy(line:find(TIMEOUT_FIX .. ":21: in function", 1, true), line)
    assert.falsy(log:find("terminating the worker", 1, true), log)
    finish(p, { "handler error %(peer [^)]*%): handler timed out: held the CPU" })
  end)

  it("kills and replaces a worker stuck in a C function", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1, extra = { "--timeout", "1" } }
    defer(function() p:stop() end)
    local pid0 = p:worker_pids()[1]
    local t0 = H.clock()
    local stuck = open_cmd(p.addr, "cstuck", "stuck")
    defer(function() close_all{ stuck } end)
    assert.equals("", stuck:read("a"))
    local dt = H.clock() - t0
    -- SIGUSR2 at + 1 s cannot reach string.find; SIGTERM at + 3 s does.
    assert.truthy(dt >= 3.9 and dt < 5.5, "stuck handler's worker killed after " .. dt .. " s")
    local st = wait_status(p, function(s)
      return s.workers[1].pid ~= pid0 and s.workers[1].state == "free"
    end, 5, "worker 1 replaced")
    assert.equals(1, st.workers[1].restarts)
    assert.same({ how = "signal", code = 15, name = "SIGTERM" }, st.workers[1].last_exit)
    assert.is_false(H.alive(pid0))
    assert.equals(st.workers[1].pid, echo(p.addr, "next"))
    local log = p:log()
    assert.truthy(log:find(("worker 1 (pid %d): a handler holds the CPU past --timeout and does not "
      .. "yield; terminating the worker (its 1 connection(s) are lost)"):format(pid0), 1, true), log)
    assert.truthy(log:find(("worker 1 (pid %d) killed by SIGTERM"):format(pid0), 1, true), log)
    -- A kill the master ordered is no crash: no back-off, no streak.
    assert.falsy(log:find("restarts in", 1, true), log)
    assert.equals(0, st.crash_streak)
    finish(p, { "holds the CPU past %-%-timeout" })
  end)
end)

describe("--max-requests", function()
  it("recycles workers without failing a request", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 2, extra = { "--max-requests", "5" } }
    defer(function() p:stop() end)
    local first = p:worker_pids()
    local pids, failures, deadline = {}, {}, H.now() + 30
    for i = 1, 60 do
      local pid, err = echo(p.addr, "r" .. i)
      if pid then pids[pid] = (pids[pid] or 0) + 1 else failures[#failures + 1] = i .. ": " .. err end
      -- The master retires a process once it has counted its DONEs; the
      -- next connection waits until it has (else, with a concurrency
      -- above 1, it may still go to the same process: a worker reports
      -- the connections it finished in one turn of its loop together,
      -- and on a busy machine a client can be served several times
      -- within one turn, see docs/operations.md "Recycling"). A
      -- replacement may still be starting: that is not waited for.
      wait_status(p, function(s) return H.sum_workers(s, "active") == 0 end, 10,
        "the master to count connection " .. i)
      assert.truthy(H.now() < deadline, "60 requests took over 30 s")
    end
    assert.same({}, failures)
    -- 5 (+ 0..10 % of 5, i.e. + 0) connections per process: every
    -- retired one served exactly 5, the two that remain fewer.
    local log = p:log()
    local retired = {}
    for pid, served in log:gmatch("%(pid (%d+)%) retires: served (%d+) connections %(%-%-max%-requests%)") do
      retired[#retired + 1] = tonumber(pid)
      assert.equals("5", served)
      assert.equals(5, pids[tonumber(pid)], "pid " .. pid .. " served " .. tostring(pids[tonumber(pid)]))
    end
    -- 60 = 5 * retired + at most 4 + 4.
    assert.truthy(#retired >= 11, #retired .. " retirements logged")
    local n = 0
    for pid, served in pairs(pids) do
      n = n + 1
      assert.truthy(served <= 5, ("pid %d served %d"):format(pid, served))
    end
    -- Retired processes finish and go; the two that remain have served
    -- fewer than 5. Worker 1 (least_conn: ties go to it) was recycled.
    local st = wait_status(p, function(s)
      return all_idle(s) and #H.children(p.pid) == 2
    end, 5, "retired workers to exit")
    local serving = 0
    for _, w in ipairs(st.workers) do
      assert.truthy(w.served < 5, ("worker %d (pid %d) served %d"):format(w.id, w.pid, w.served))
      assert.equals(w.served, pids[w.pid] or 0)
      if w.served > 0 then serving = serving + 1 end
    end
    assert.equals(#retired + serving, n)
    assert.not_equals(first[1], st.workers[1].pid)
    assert.falsy(log:find("killed by", 1, true), log)
    finish(p)
  end)

  -- docs/operations.md "Recycling": the replacement is forked into the
  -- slot first, then the old process is told to finish. Watched here
  -- while a one-process pool recycles every 2 connections (2 + 0..10 %
  -- of 2 = exactly 2), with a replacement that takes 0.2 s to start.
  it("never leaves the slot of a --workers 1 --concurrency 1 pool without a running process", function()
    local defer = cleanup()
    local p = H.start_pool{ script = FIX .. "rel_slow_start.lua", args = { "0.2" }, workers = 1,
                            concurrency = 1, extra = { "--max-requests", "2" } }
    defer(function() p:stop() end)
    local samples, starting, unsure = 0, 0, 0
    -- One sample: the status table, then the master's children.
    local function sample()
      local st = assert(p:status())
      local w = st.workers[1]
      local what = ("sample %d: slot 1 is %s (pid %d)"):format(samples + 1, w.state, w.pid)
      assert.truthy(w.pid > 0, what)
      assert.truthy(w.state == "starting" or w.state == "free" or w.state == "busy", what)
      -- The process the slot names is running (it was forked before the
      -- status answer; nothing kills it).
      assert.truthy(H.alive(w.pid), what .. ", not a running process")
      -- OS level: some child of the master runs. A child read as dead
      -- may have died after the list was read, its replacement forked
      -- meanwhile: only a second list with no newcomer proves a gap.
      local kids = H.children(p.pid)
      local live = 0
      for _, c in ipairs(kids) do
        if H.alive(c) then live = live + 1 end
      end
      if live == 0 then
        local seen, newcomer = set_of(kids), false
        for _, c in ipairs(H.children(p.pid)) do
          if not seen[c] and H.alive(c) then newcomer = true end
        end
        assert.truthy(newcomer, ("sample %d: no running child of the master (children: %s)")
          :format(samples + 1, table.concat(kids, " ")))
        unsure = unsure + 1
      end
      samples = samples + 1
      if w.state == "starting" then starting = starting + 1 end
      return w, kids
    end
    local served = {}
    for i = 1, 12 do
      local pid = assert(echo(p.addr, "r" .. i))
      served[pid] = (served[pid] or 0) + 1
      if i % 2 == 0 then
        -- This DONE retires pid: sample (without sleeping) until its
        -- replacement is ready and pid has been reaped.
        local deadline = H.now() + 10
        while true do
          local w, kids = sample()
          if w.pid ~= pid and w.state == "free" and #kids == 1 then break end
          assert.truthy(H.now() < deadline, "recycling of pid " .. pid .. " did not finish in 10 s")
        end
      else
        for _ = 1, 3 do sample() end
      end
    end
    -- Concurrency 1: a connection that arrives before the master has
    -- counted the last DONE waits for the replacement, so each process
    -- serves exactly 2.
    local n = 0
    for pid, k in pairs(served) do
      n = n + 1
      assert.equals(2, k, ("pid %d served %d"):format(pid, k))
    end
    assert.equals(6, n)
    -- The samples did look inside the recyclings: the fixture keeps each
    -- replacement starting for 0.2 s.
    assert.truthy(starting >= 6, ("%d of %d samples saw a replacement starting"):format(starting, samples))
    local log = p:log()
    assert.equals(6, count(log, "retires: served 2 connections (--max-requests)"), log)
    assert.falsy(log:find("killed by", 1, true), log)
    finish(p)
  end)
end)

describe("stopping", function()
  it("gracefully (pool stop --graceful) lets 5 slow requests finish and refuses new ones", function()
    local defer = cleanup()
    local p = H.start_pool{ script = FIX .. "pool_slow.lua", args = { "2" }, workers = 2 }
    defer(function() p:stop() end)
    local fds = {}
    defer(function() close_all(fds) end)
    for i = 1, 5 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write("slow" .. i .. "\n"))
    end
    wait_status(p, function(s) return H.sum_workers(s, "active") == 5 end, 5, "5 active connections")
    local code, out, err = H.run_pool("stop --graceful --control " .. q(p.control), 10)
    assert.equals(0, code, err)
    assert.equals("OK stopping gracefully\n", out)
    local t0 = H.clock()
    -- The listener is closed once the drain delay (--drain-delay, 0.5 s
    -- by default: the pool reports stopping but still accepts) is over.
    H.wait_until(function() return p:log():find("drain delay over: listeners closed", 1, true) end,
      5, "the drain delay to end")
    local fd, cerr = fdpool.connect(p.addr, 2)
    if fd then fd:close() end
    assert.is_nil(fd)
    assert.matches("Connection refused", cerr)
    for i = 1, 5 do
      assert.matches("^%d slow" .. i .. "\n$", fds[i]:read("a"))
    end
    assert.equals(0, p:wait_exit(5))
    local dt = H.clock() - t0
    assert.truthy(dt < 3, "graceful stop took " .. dt .. " s")
    assert.truthy(p:log():find("graceful stop requested on the control socket", 1, true))
    no_unexpected_errors(p)
  end)

  it("fast (SIGTERM) with a 10 s handler in flight exits 0 within 2.5 s", function()
    local defer = cleanup()
    local p = H.start_pool{ script = FIX .. "pool_slow.lua", args = { "10" }, workers = 2 }
    defer(function() p:stop("KILL") end)
    local fd = assert(fdpool.connect(p.addr, 10))
    defer(function() close_all{ fd } end)
    assert(fd:write("slow\n"))
    wait_status(p, function(s) return H.sum_workers(s, "active") == 1 end, 5, "1 active connection")
    local pids = p:worker_pids()
    local t0 = H.clock()
    p:kill("TERM")
    assert.equals(0, p:wait_exit(5))
    local dt = H.clock() - t0
    assert.truthy(dt < 2.5, "fast stop took " .. dt .. " s")
    assert.equals("", fd:read("a"))       -- cut off without an answer
    for _, pid in ipairs(pids) do assert.is_false(H.alive(pid)) end
    no_unexpected_errors(p)
  end)
end)

describe("reload", function()
  it("twice under continuous load: no failed request, generation 3, all pids new", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 2 }
    defer(function() p:stop() end)
    local first = set_of(p:worker_pids())
    -- A connection in flight across both reloads, on a first-generation
    -- worker: it must still be answered.
    local held = assert(fdpool.connect(p.addr, 10))
    defer(function() close_all{ held } end)
    wait_status(p, function(s) return H.sum_workers(s, "active") == 1 end, 5, "the held connection")
    local failures, deadline = {}, H.now() + 30
    for i = 1, 200 do
      if i == 60 then
        assert.equals("OK reloaded: generation 2 serving (2 worker(s))\n", fdpool.control(p.control, "reload"))
      elseif i == 130 then
        local code, out, err = H.run_pool("reload --control " .. q(p.control), 10)
        assert.equals(0, code, err)
        assert.equals("OK reloaded: generation 3 serving (2 worker(s))\n", out)
      end
      local pid, err = echo(p.addr, "r" .. i)
      if not pid then failures[#failures + 1] = i .. ": " .. err end
      assert.truthy(H.now() < deadline, "200 requests took over 30 s")
    end
    assert.same({}, failures)
    assert(held:write("held\n"))
    local pid = tonumber((held:read("a") or ""):match("^pid (%d+) held\n$"))
    assert.truthy(pid and first[pid], "the held connection was not answered by its old worker")
    local st = wait_status(p, function(s)
      for _, w in ipairs(s.workers) do
        if w.generation ~= 3 or w.state ~= "free" then return false end
      end
      return #H.children(p.pid) == 2
    end, 10, "generation 3 alone")
    for _, w in ipairs(st.workers) do
      assert.falsy(first[w.pid], "worker " .. w.id .. " kept its first-generation pid")
    end
    local log = p:log()
    assert.equals(4, count(log, "retires: reload"))
    assert.truthy(log:find("reloading: generation 2", 1, true))
    assert.truthy(log:find("reloading: generation 3", 1, true))
    assert.falsy(log:find("killed by", 1, true), log)
    finish(p)
  end)

  it("with a broken script changes nothing, says why, and a fixed one then loads", function()
    local defer = cleanup()
    local dir = H.tmpdir()
    local script = dir .. "/handler.lua"
    H.writefile(script, assert(H.readfile(TIMEOUT_FIX)))
    local p = H.start_pool{ script = script, workers = 2 }
    defer(function() p:stop() end)
    local pids = p:worker_pids()
    local broken = {
      { "return function(conn) conn:send( end\n", "handler.lua:1: unexpected symbol near 'end'" },
      { "error('top level says no')\n", "handler.lua:1: top level says no" },
      { "return 42\n", "handler.lua must return a function(conn)" },
    }
    for _, b in ipairs(broken) do
      H.writefile(script, b[1])
      local code, out, err = H.run_pool("reload --control " .. q(p.control), 10)
      assert.equals(1, code, out .. err)
      assert.equals("", out)
      assert.matches("^pool: reload refused, keeping the running workers: ", err)
      assert.truthy(err:find(b[2], 1, true), err)
      assert.equals(1, #(err:gsub("[^\n]", "")), "one line: " .. err)
      assert.truthy(p:log():find("error pool%[%d+%]: reload refused, keeping the running workers: [^\n]*"
        .. b[2]:gsub("%p", "%%%0")), p:log())
      -- Same workers, same generation, still serving.
      local st = assert(p:status())
      for i, w in ipairs(st.workers) do
        assert.equals(pids[i], w.pid)
        assert.equals(1, w.generation)
      end
      for i = 1, 4 do assert(echo(p.addr, "still" .. i)) end
    end
    -- SIGHUP with a broken script: logged, nothing changes either.
    p:kill("HUP")
    H.wait_until(function() return count(p:log(), "reload refused") == 4 end, 5, "the SIGHUP refusal")
    assert.same(pids, p:worker_pids())
    H.writefile(script, assert(H.readfile(TIMEOUT_FIX)))
    local code, out, err = H.run_pool("reload --control " .. q(p.control), 10)
    assert.equals(0, code, err)
    assert.equals("OK reloaded: generation 2 serving (2 worker(s))\n", out)
    local st = wait_status(p, function(s)
      return s.workers[1].generation == 2 and s.workers[2].generation == 2 and all_idle(s)
    end, 5, "generation 2")
    assert.falsy(st.workers[1].pid == pids[1] or st.workers[2].pid == pids[2])
    assert(echo(p.addr, "fixed"))
    finish(p, { "reload refused, keeping the running workers", "cannot start: " })
  end)
end)

describe("scaling", function()
  it("follows pool scale, SIGTTIN and SIGTTOU", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 2 }
    defer(function() p:stop() end)
    local function workers_are(n)
      return wait_status(p, function(s)
        return #s.workers == n and all_idle(s) and #H.children(p.pid) == n
      end, 5, n .. " workers")
    end
    local code, out, err = H.run_pool("scale 3 --control " .. q(p.control), 10)
    assert.equals(0, code, err)
    assert.equals("OK 3 workers\n", out)
    local st = workers_are(3)
    for i, w in ipairs(st.workers) do assert.equals(i, w.id) end
    local kept = { st.workers[1].pid, st.workers[2].pid }
    p:kill("TTOU")
    st = workers_are(2)
    assert.same(kept, { st.workers[1].pid, st.workers[2].pid })
    p:kill("TTOU")
    st = workers_are(1)
    assert.equals(kept[1], st.workers[1].pid)
    p:kill("TTOU")          -- never below one worker
    H.wait_until(function() return p:log():find("SIGTTOU: keeping at least one worker", 1, true) end,
      5, "the refusal")
    workers_are(1)
    p:kill("TTIN")
    st = workers_are(2)
    assert.equals(kept[1], st.workers[1].pid)
    for i = 1, 10 do assert(echo(p.addr, "s" .. i)) end
    code, out, err = H.run_pool("scale 0 --control " .. q(p.control), 10)
    assert.equals(2, code)
    assert.matches("pool: 'pool scale' needs a number of workers from 1 to 256 %(got '0'%)", err)
    local log = p:log()
    assert.truthy(log:find("now 3 worker(s)", 1, true))
    assert.equals(2, count(log, "retires: scaling down"))
    assert.falsy(log:find("killed by", 1, true), log)
    finish(p)
  end)
end)

describe("a crash loop", function()
  -- Once the pool has served, a crash loop backs off and never gives up:
  -- tests/41-hostile-ops_spec.lua.
  it("does not happen in a first generation that fails: exit 1 at once with the error", function()
    local defer = cleanup()
    local flag = H.writefile(H.tmpdir() .. "/refuse", "")
    local t0 = H.clock()
    local code, out, err = H.run_pool(("run %s --listen 127.0.0.1:0 --workers 3 --no-control -- %s"):format(
      FIX .. "rel_crashloop.lua", q(flag)), 10)
    local dt = H.clock() - t0
    assert.equals(1, code, err)
    assert.equals("", out)
    assert.truthy(dt < 2, "took " .. dt .. " s")
    assert.truthy(err:find("\npool: " .. FIX .. "rel_crashloop.lua:8: flag file present: refusing to start",
      1, true), err)
    assert.falsy(err:find("restarts in", 1, true), err)
    local bad = H.unexpected_errors(err, { "cannot start: ", "pool stopped: " .. FIX })
    assert.same({}, bad)
  end)

  -- A worker's start-up error arrives with Lua's traceback; the log keeps
  -- one line per event and `pool run` ends with one "pool: ..." line.
  it("reports a first-generation start error in one line", function()
    local defer = cleanup()
    local flag = H.writefile(H.tmpdir() .. "/refuse", "")
    local code, _, err = H.run_pool(("run %s --listen 127.0.0.1:0 --workers 1 --no-control -- %s"):format(
      FIX .. "rel_crashloop.lua", q(flag)), 10)
    assert.equals(1, code, err)
    for line in err:gmatch("[^\n]+") do
      assert.truthy(line:match("^%d+%-%d+%-%d+T[%d:]+Z %a+ +[%w ]+%[%d+%]: ") or line:match("^pool: "),
        "not a log line nor the final error: " .. ("%q"):format(line))
    end
    assert.matches("\npool: [^\n]*refusing to start\n$", err)
  end)
end)

describe("processes", function()
  it("SIGUSR1 reopens the --log file in the master and the workers", function()
    local defer = cleanup()
    local dir = H.tmpdir()
    local p = setmetatable({ dir = dir, log_path = dir .. "/pool.log", exit_path = dir .. "/exit",
      control = dir .. "/control.sock" }, { __index = H.Pool })
    os.execute(("(%s run %s --listen 127.0.0.1:0 --workers 1 --control %s --log %s; echo $? > %s) "
      .. "</dev/null >%s/stdout 2>%s/stderr &"):format(H.POOL, FIX .. "pool_boom.lua", q(p.control),
      q(p.log_path), q(p.exit_path), q(dir), q(dir)))
    p.pid = tonumber(H.wait_until(function() return p:log():match("pool%[(%d+)%]") end, 10, "the log"))
    defer(function() p:stop() end)
    p.addr = H.wait_until(function() return p:log():match("listening on (%S+)") end, 5, "listening")
    p:wait_ready(1)
    assert.truthy(os.rename(p.log_path, p.log_path .. ".1"))   -- logrotate
    p:kill("USR1")
    H.wait_until(function() return p:log():find("SIGUSR1: log reopened", 1, true) end, 5, "the new log")
    -- A worker's line after the signal lands in the new file too.
    H.wait_until(function()
      H.request(p.addr, "boom\n", 5)
      return p:log():find("worker 1%[%d+%]: handler error")
    end, 5, "the worker's handler error in the new log")
    local old = H.readfile(p.log_path .. ".1")
    assert.truthy(old:find("listening on", 1, true))
    assert.falsy(old:find("log reopened", 1, true))
    assert.equals("", H.readfile(dir .. "/stderr"))
    assert.equals(0, p:stop())
    assert.truthy(p:log():find("pool stopped", 1, true))
    no_unexpected_errors(p, { "handler error %(peer [^)]*%): " .. FIX .. "pool_boom.lua:12: boom requested" })
  end)

  it("die with a master killed by SIGKILL, even one spinning in Lua", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 2 }
    defer(function() p:stop("KILL") end)
    local pids = p:worker_pids()
    local spinning = open_cmd(p.addr, "spin", "spinning")
    defer(function() close_all{ spinning } end)
    local t0 = H.clock()
    p:kill("KILL")
    H.wait_until(function()
      for _, pid in ipairs(pids) do if H.alive(pid) then return false end end
      return true
    end, 3, "the workers to die")
    local dt = H.clock() - t0
    assert.truthy(dt < 1.0, "workers outlived the master by " .. dt .. " s")
    assert.equals("", spinning:read("a"))
    local fd, err = fdpool.connect(p.addr, 2)
    if fd then fd:close() end
    assert.is_nil(fd)
    assert.matches("Connection refused", err)
    no_unexpected_errors(p)
  end)

  it("--user nobody: workers run as nobody, not dumpable, and still die with the master", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 2, extra = { "--user", "nobody" } }
    defer(function() p:stop("KILL") end)
    assert.truthy(p.addr, p:log())
    assert.matches("^0\t0\t0\t0$", proc_status(p.pid, "Uid"))
    local pids = p:worker_pids()
    for _, pid in ipairs(pids) do
      assert.equals("65534\t65534\t65534\t65534", proc_status(pid, "Uid"))
      assert.equals("65534\t65534\t65534\t65534", proc_status(pid, "Gid"))
      assert.equals("65534", (proc_status(pid, "Groups"):gsub("%s+$", "")))
      assert.equals("0000000000000000", proc_status(pid, "CapEff"))
      -- A non-dumpable process's /proc files belong to root.
      local _, _, owner = H.run("stat -c %u /proc/" .. pid .. "/status")
      assert.equals("0", owner:match("%d+"))
    end
    for i = 1, 6 do
      local pid = echo(p.addr, "u" .. i)
      assert.truthy(pid == pids[1] or pid == pids[2])
    end
    -- PR_SET_PDEATHSIG survives the drop (it is set after it).
    local t0 = H.clock()
    p:kill("KILL")
    H.wait_until(function()
      return not H.alive(pids[1]) and not H.alive(pids[2])
    end, 3, "the workers to die")
    assert.truthy(H.clock() - t0 < 1.0)
    no_unexpected_errors(p)
  end)

  -- Started as root with --user, the pool must not say workers run as root.
  it("--user does not claim that workers run as root", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1, extra = { "--user", "nobody" } }
    defer(function() p:stop() end)
    assert.falsy(p:log():find("workers run as root", 1, true), p:log())
    finish(p)
  end)
end)

describe("the control socket", function()
  it("is 0600, never stolen from a live pool, and replaced when stale", function()
    local defer = cleanup()
    local control = H.tmpdir() .. "/ctl.sock"
    local a = start_at(control, { script = TIMEOUT_FIX, workers = 1 })
    defer(function() a:stop("KILL") end)
    local _, _, mode = H.run("stat -c '%a %F' " .. q(control))
    assert.equals("600 socket\n", mode)
    -- A second pool on the same control path fails at once, exit 1.
    local code, _, err = H.run_pool(("run %s --listen 127.0.0.1:0 --workers 1 --control %s"):format(
      TIMEOUT_FIX, q(control)), 10)
    assert.equals(1, code, err)
    assert.truthy(("\n" .. err):find("\npool: control socket " .. control:gsub("%p", "%%%0")
      .. ": another pool is running there\n$"), err)
    local st = assert(a:status())
    assert.equals(a.pid, st.pid)
    assert(echo(a.addr, "first"))
    -- A killed master leaves its socket file behind: the next pool
    -- replaces it.
    local apids = a:worker_pids()
    a:kill("KILL")
    a:wait_exit(5)
    H.wait_until(function() return not H.alive(apids[1]) end, 3, "a's worker to die")
    assert.truthy(os.execute("test -S " .. q(control)))
    local b = start_at(control, { script = TIMEOUT_FIX, workers = 1 })
    defer(function() b:stop() end)
    assert.truthy(b.addr, b:log())
    st = assert(b:status())
    assert.equals(b.pid, st.pid)
    _, _, mode = H.run("stat -c '%a %F' " .. q(control))
    assert.equals("600 socket\n", mode)
    assert(echo(b.addr, "second"))
    finish(b)
  end)

  it("cuts off garbage, a huge line and an idle client while status and dispatch go on", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 2 }
    defer(function() p:stop() end)
    local path = "unix:" .. p.control
    local fds = {}
    defer(function() close_all(fds) end)
    local t0 = H.clock()
    local idle = assert(fdpool.connect(path, 5))
    fds[#fds + 1] = idle
    -- Garbage without a newline: waits, like the idle one.
    local bytes = {}
    for i = 1, 64 do bytes[i] = string.char((i * 37 + 11) % 256 == 10 and 0 or (i * 37 + 11) % 256) end
    local garbage = assert(fdpool.connect(path, 5))
    fds[#fds + 1] = garbage
    assert(garbage:write(table.concat(bytes)))
    -- Garbage ending in a newline: an error answer, then closed.
    local junk = assert(fdpool.connect(path, 5))
    fds[#fds + 1] = junk
    assert(junk:write(table.concat(bytes) .. "\n"))
    assert.matches("^ERR unknown command", junk:read("a"))
    -- 10 KB without a newline: closed once the 128-byte line is full.
    local huge = assert(fdpool.connect(path, 5))
    fds[#fds + 1] = huge
    local th = H.clock()
    huge:write(("x"):rep(10240))      -- may fail (EPIPE) if already closed
    local r = huge:read("a")
    assert.truthy(r == nil or r == "", "huge line answered: " .. tostring(r))
    assert.truthy(H.clock() - th < 1.5, "huge line held for " .. (H.clock() - th) .. " s")
    -- Meanwhile the pool answers and serves.
    for i = 1, 5 do
      local ts = H.clock()
      assert.truthy(p:status(), "status " .. i)
      assert.truthy(H.clock() - ts < 1, "status took " .. (H.clock() - ts) .. " s")
      assert(echo(p.addr, "c" .. i))
    end
    -- The idle and the garbage clients are cut off after about 2 s.
    assert.equals("", idle:read("a"))
    local dt = H.clock() - t0
    assert.truthy(dt >= 1.8 and dt < 3.5, "idle client cut off after " .. dt .. " s")
    assert.equals("", garbage:read("a"))
    assert.truthy(H.clock() - t0 < 3.5)
    assert.equals("OK pong\n", fdpool.control(p.control, "ping"))
    finish(p)
  end)

  -- A last line without its newline, then the end of the client's
  -- writing (`printf ping | socat - UNIX-CONNECT:...`): the command all
  -- the same, answered before the close. It got no answer.
  it("answers a command whose newline never comes, at the client's half-close", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1 }
    defer(function() p:stop() end)
    for _, cmd in ipairs{ { "ping", "^OK pong\n$" }, { "status", "^master %d+" },
                          { "bogus", "^ERR unknown command" },
                          -- a scale out of range says so, not "unknown command"
                          { "scale 0", "^ERR scale needs a number of workers from 1 to 256\n$" },
                          { "scale", "^ERR scale needs a number" },
                          { "scale x", "^ERR scale needs a number" },
                          { "scale 1000", "^ERR scale needs a number" },
                          { "scalex", "^ERR unknown command" } } do
      local ctl = assert(fdpool.connect("unix:" .. p.control, 10))
      assert(ctl:write(cmd[1]))
      assert(ctl:shutdown("send"))
      local out = ctl:read("a")
      ctl:close()
      assert.matches(cmd[2], out, cmd[1])
    end
    finish(p)
  end)

  -- Regression test (was a bug, now fixed): silent clients holding
  -- every control slot give the oldest one up to a newcomer, so status
  -- answers without waiting for their 2 s timeout (which would close
  -- them all at once: here all but the one given up stay open).
  it("status still answers while 8 idle clients hold every control slot", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1 }
    defer(function() p:stop() end)
    local fds = {}
    defer(function() close_all(fds) end)
    for i = 1, 8 do fds[i] = assert(fdpool.connect("unix:" .. p.control, 5)) end
    local st, out = p:status()          -- one `pool status --json` run
    assert.truthy(st, out)
    local open = 0
    for i = 1, 8 do
      assert(fds[i]:settimeout(0.01))
      local r, _, errno = fds[i]:read(1)
      if r == nil and errno == 11 then open = open + 1 end   -- EAGAIN: still open
    end
    assert.equals(7, open)
    finish(p)
  end)
end)

describe("resources", function()
  it("the master's fd count is unchanged by 3000 dropped connections, a worker kill and a reload", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 2 }
    defer(function() p:stop() end)
    local mfds = assert(H.fd_count(p.pid))
    local pids = p:worker_pids()
    local wfds = { assert(H.fd_count(pids[1])), assert(H.fd_count(pids[2])) }
    local N, checks, deadline = 3000, 0, H.now() + 40
    for i = 1, N do
      local fd = assert(fdpool.connect(p.addr, 10))
      local k = i % 3
      if i % 100 == 0 then
        assert(fd:write("check" .. i .. "\n"))
        assert.matches("^pid %d+ check" .. i .. "\n$", fd:read("a"))
        checks = checks + 1
      elseif k == 1 then
        fd:write("half a line")          -- then gone
      elseif k == 2 then
        fd:write("x\n")                  -- asks, never reads: RST likely
      end                                -- k == 0: gone before a byte
      fd:close()
      assert.truthy(H.now() < deadline, "3000 connections took over 40 s")
    end
    assert.equals(30, checks)
    local st = wait_status(p, function(s)
      return all_idle(s) and H.sum_workers(s, "served") == N
    end, 10, N .. " connections served")
    assert.equals(N, st.accepted)
    assert.equals(mfds, H.fd_count(p.pid))
    assert.same(wfds, { H.fd_count(pids[1]), H.fd_count(pids[2]) })
    os.execute("kill -KILL " .. pids[1])
    wait_status(p, function(s)
      return s.workers[1].pid ~= pids[1] and all_idle(s)
    end, 5, "worker 1 replaced")
    assert.matches("^OK reloaded: generation 2 serving", fdpool.control(p.control, "reload"))
    wait_status(p, function(s)
      return s.workers[1].generation == 2 and s.workers[2].generation == 2 and all_idle(s)
        and #H.children(p.pid) == 2
    end, 5, "generation 2 alone")
    for i = 1, 10 do assert(echo(p.addr, "after" .. i)) end
    wait_status(p, all_idle, 5, "idle")
    assert.equals(mfds, H.fd_count(p.pid))
    finish(p)
  end)

  -- Regression test (was a bug, now fixed):
  it("pauses accepting on EMFILE instead of spinning, and serves everyone", function()
    local defer = cleanup()
    local p = H.start_pool{ script = FIX .. "pool_slow.lua", args = { "0.05" }, workers = 1, concurrency = 1 }
    defer(function() p:stop() end)
    local open, lowest = open_fds(p.pid), 0
    while open[lowest] do lowest = lowest + 1 end
    -- Room for 4 more descriptors: the queue of waiting clients fills it.
    assert.truthy(H.run(("prlimit --pid %d --nofile=%d:%d"):format(p.pid, lowest + 4, 4096)))
    defer(function() H.run(("prlimit --pid %d --nofile=1024:4096"):format(p.pid)) end)
    local fds = {}
    defer(function() close_all(fds) end)
    local cpu0, t0 = cpu_seconds(p.pid), H.clock()
    for i = 1, 30 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write("l" .. i .. "\n"))
    end
    local ok = 0
    for i = 1, 30 do
      if (fds[i]:read("a") or ""):match("^1 l" .. i .. "\n$") then ok = ok + 1 end
    end
    local dt, cpu = H.clock() - t0, cpu_seconds(p.pid) - cpu0
    assert.equals(30, ok)
    local pauses = count(p:log(), "pausing accept")
    assert.truthy(pauses >= 1, "EMFILE never reached")
    assert.truthy(pauses <= dt * 10 + 5, pauses .. " 'pausing accept' lines in " .. dt .. " s")
    assert.truthy(cpu < 0.3, ("master used %.2f s of CPU in %.2f s"):format(cpu, dt))
    finish(p, { "accept4%(%) failed on [^;]*; pausing accept" })
  end)

  -- Regression test (was a bug, now fixed):
  it("does not spin when a control client arrives at EMFILE", function()
    local defer = cleanup()
    local p = H.start_pool{ script = TIMEOUT_FIX, workers = 1 }
    defer(function() p:stop() end)
    local open, lowest = open_fds(p.pid), 0
    while open[lowest] do lowest = lowest + 1 end
    assert.truthy(H.run(("prlimit --pid %d --nofile=%d:4096"):format(p.pid, lowest)))
    local restored = false
    defer(function()
      if not restored then H.run(("prlimit --pid %d --nofile=1024:4096"):format(p.pid)) end
    end)
    local ctl = assert(fdpool.connect("unix:" .. p.control, 10))
    defer(function() close_all{ ctl } end)
    assert(ctl:write("ping\n"))
    local cpu0 = cpu_seconds(p.pid)
    H.sleep(1)      -- measuring CPU over a fixed second, not synchronizing
    local cpu = cpu_seconds(p.pid) - cpu0
    assert.truthy(H.run(("prlimit --pid %d --nofile=1024:4096"):format(p.pid)))
    restored = true
    assert.equals("OK pong\n", ctl:read("a"))
    assert.truthy(cpu < 0.2, ("master used %.2f s of CPU in 1 s at EMFILE"):format(cpu))
    finish(p, { "pausing accept" })
  end)

  -- Regression test (was a bug, now fixed): a worker at its open-files
  -- limit got the hand-off with its fd dropped by the kernel
  -- (MSG_CTRUNC), took it for a bad message and exited, losing every
  -- connection it served.
  it("a worker at its open-files limit loses only the connections it had no fd for, and serves on", function()
    local defer = cleanup()
    local p = H.start_pool{ script = FIX .. "pool_slow.lua", args = { "1" }, workers = 1 }
    defer(function() p:stop() end)
    local victim = p:worker_pids()[1]
    local open, lowest = open_fds(victim), 0
    while open[lowest] do lowest = lowest + 1 end
    local room = 0
    for fd = lowest, lowest + 2 do if not open[fd] then room = room + 1 end end
    -- Room for `room` (3) more descriptors in the worker only.
    assert.truthy(H.run(("prlimit --pid %d --nofile=%d:4096"):format(victim, lowest + 3)))
    local restored = false
    defer(function()
      if not restored then H.run(("prlimit --pid %d --nofile=1024:4096"):format(victim)) end
    end)
    local fds = {}
    defer(function() close_all(fds) end)
    for i = 1, 10 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write("l" .. i .. "\n"))
    end
    local ok, lost = 0, 0
    for i = 1, 10 do
      local r = fds[i]:read("a")
      if r == "1 l" .. i .. "\n" then ok = ok + 1
      elseif r == nil or r == "" then lost = lost + 1 end
    end
    assert.equals(10, ok + lost)
    assert.equals(room, ok)
    assert.truthy(H.run(("prlimit --pid %d --nofile=1024:4096"):format(victim)))
    restored = true
    -- The same worker, nothing left in flight in the master's view.
    local st = H.wait_status(p, H.all_idle, 10, "an idle pool")
    assert.equals(victim, st.workers[1].pid)
    assert.equals(0, st.workers[1].restarts)
    assert.equals("1 after\n", H.request(p.addr, "after\n", 10))
    local log = p:log()
    assert.falsy(log:find("bad message from the master", 1, true), log)
    local said = count(log, "closed unserved: out of file descriptors (open files limit "
                       .. (lowest + 3))
    assert.truthy(said >= 1 and said <= 3, log)      -- at most once a second
    finish(p, { "closed unserved: out of file descriptors" })
  end)

  -- Regression test (was a bug, now fixed): a master at its open-files
  -- limit got a PARK with its fd dropped by the kernel (MSG_CTRUNC) and
  -- killed the worker that sent it as faulty.
  it("a master at its open-files limit closes the keep-alive connection it cannot park, not the worker", function()
    local defer = cleanup()
    local p = H.start_pool{ script = FIX .. "up_slowhttp.lua", workers = 1, concurrency = 1 }
    defer(function() p:stop() end)
    local victim = p:worker_pids()[1]
    local fds = {}
    defer(function() close_all(fds) end)
    -- A: a keep-alive request the worker serves for 1 s, then parks.
    fds[1] = assert(fdpool.connect(p.addr, 10))
    assert(fds[1]:write("GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n"))
    H.wait_status(p, function(st) return st.workers[1].active == 1 end, 5, "A in the worker")
    -- Room for one more descriptor in the master: B's, a head that
    -- never ends, held by the accept filter.
    local open, lowest = open_fds(p.pid), 0
    while open[lowest] do lowest = lowest + 1 end
    assert.truthy(H.run(("prlimit --pid %d --nofile=%d:4096"):format(p.pid, lowest + 1)))
    local restored = false
    defer(function()
      if not restored then H.run(("prlimit --pid %d --nofile=1024:4096"):format(p.pid)) end
    end)
    fds[2] = assert(fdpool.connect(p.addr, 10))
    assert(fds[2]:write("GET / HTTP/1.1\r\nX-"))
    H.wait_until(function() return open_fds(p.pid)[lowest] end, 5, "B accepted")
    -- A's answer comes, then its close: the master had no fd for it.
    local got = fds[1]:read("a")
    assert.matches("^HTTP/1.1 200", got)
    assert.matches("done /sleep\n$", got)
    assert.truthy(H.run(("prlimit --pid %d --nofile=1024:4096"):format(p.pid)))
    restored = true
    close_all(fds)
    -- The same worker serves on.
    local st = H.wait_status(p, function(s) return H.all_idle(s) and s.parked == 0 end, 10, "an idle pool")
    assert.equals(victim, st.workers[1].pid, p:log())
    assert.equals(0, st.workers[1].restarts)
    assert.matches("done /\n$", H.http_get(p.addr, "/"))
    local log = p:log()
    assert.falsy(log:find("is faulty", 1, true), log)
    assert.equals(1, count(log, "1 keep-alive connection(s) closed: the master is out of file descriptors"))
    finish(p, { "pausing accept", "the master is out of file descriptors" })
  end)
end)

describe("a hostile worker", function()
  -- The handler writes a forged message on its own channel (fixture
  -- rel_hostile.lua); the master must kill and replace that worker only.
  local cases = {
    { "forge-done", "DONE for a connection it was not given" },
    { "garbage", "malformed message on its channel" },
    { "ready-again", "READY twice" },
  }
  it("is killed and replaced when it forges channel messages", function()
    local defer = cleanup()
    local p = H.start_pool{ script = FIX .. "rel_hostile.lua", workers = 2 }
    defer(function() p:stop() end)
    local master = p.pid
    for n, c in ipairs(cases) do
      local before = assert(p:status())
      local fd = assert(fdpool.connect(p.addr, 10))
      assert(fd:write(c[1] .. "\n"))
      local r = fd:read("a")              -- "sent\n" or cut off: either
      fd:close()
      assert.truthy(r == "" or r == "sent\n" or r == nil, tostring(r))
      local pat = "worker (%d+) %(pid (%d+)%) is faulty: " .. c[2]:gsub("%p", "%%%0") .. "; killing it"
      H.wait_until(function()
        return count(p:log(), "is faulty") == n and p:log():match(pat)
      end, 5, "the fault to be logged")
      local victim_id, victim = p:log():match(pat)
      victim_id, victim = tonumber(victim_id), tonumber(victim)
      assert.equals(before.workers[victim_id].pid, victim)
      local other = 3 - victim_id
      local st = wait_status(p, function(s)
        local w = s.workers[victim_id]
        return w.pid ~= victim and w.state == "free" and all_idle(s)
      end, 5, "the faulty worker replaced")
      assert.is_false(H.alive(victim))
      assert.equals(before.workers[other].pid, st.workers[other].pid)
      assert.equals(master, st.pid)
      -- SIGKILL, or the channel's EOF when the worker sees it first.
      local gone = ("worker %d (pid %d) "):format(victim_id, victim)
      assert.truthy(p:log():find(gone .. "killed by SIGKILL", 1, true)
        or p:log():find(gone .. "exited with code 0", 1, true), p:log())
      for i = 1, 6 do assert(echo(p.addr, c[1] .. i)) end
    end
    finish(p, { "is faulty: " })
  end)
end)
