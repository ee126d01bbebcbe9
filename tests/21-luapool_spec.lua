-- tests/21-luapool_spec.lua: fdpool.pool{} used from a Lua program. The
-- program (tests/fixtures/luapool_driver.lua) runs as its own lua5.4
-- process in the background, because a pool forks the calling process
-- and blocks signals in it; it reports what it sees on stdout, and this
-- spec talks to its pool over real sockets and asks it to stop through a
-- file (or a signal).
local fdpool = require "fdpool"
local H = require "helpers"

local DRIVER = "tests/fixtures/luapool_driver.lua"

local Driver = {}
Driver.__index = Driver

-- Start the driver in MODE; returns a Driver once it has printed its pid.
local function start_driver(mode)
  local dir = H.tmpdir()
  local d = setmetatable({ dir = dir, out = dir .. "/out", err = dir .. "/err",
                           exit_path = dir .. "/exit", mode = mode }, Driver)
  os.execute(("(lua5.4 %s %s %s %s; echo $? > %s) </dev/null >%s 2>%s &"):format(
    DRIVER, mode, H.quote(H.BUILD), H.quote(dir), d.exit_path, d.out, d.err))
  d.pid = tonumber(d:wait_line("pid")[1])
  return d
end

function Driver:stdout() return H.readfile(self.out) or "" end
function Driver:stderr() return H.readfile(self.err) or "" end

-- Fields of the first stdout line starting with KEY, or nil.
function Driver:line(key)
  for l in self:stdout():gmatch("[^\n]+") do
    local k, rest = l:match("^(%S+) ?(.*)$")
    if k == key then
      local t = {}
      for f in rest:gmatch("%S+") do t[#t + 1] = f end
      return t
    end
  end
end

-- How many stdout lines start with KEY.
function Driver:count(key)
  local n = 0
  for l in self:stdout():gmatch("[^\n]+") do
    if l:match("^(%S+)") == key then n = n + 1 end
  end
  return n
end

function Driver:wait_line(key, timeout)
  return H.wait_until(function()
    local t = self:line(key)
    if t then return t end
    local bad = self:line("timeout") or self:line("error")
    if bad then error("driver gave up: " .. table.concat(bad, " ") .. "\n" .. self:stderr()) end
    if self:exited() then
      -- It may have printed the line after we read its stdout, then exited.
      t = self:line(key)
      if t then return t end
      error(("driver exited (%s) before printing '%s':\n%s%s"):format(
        self:exited(), key, self:stdout(), self:stderr()))
    end
  end, timeout or 10, "the driver's '" .. key .. "' line")
end

function Driver:exited()
  local s = H.readfile(self.exit_path)
  return s and tonumber(s:match("%d+")) or nil
end

function Driver:wait_exit(timeout)
  return H.wait_until(function() return self:exited() end, timeout or 10, "the driver to exit")
end

function Driver:ask_stop() H.writefile(self.dir .. "/stop", "") end

-- Clean up whatever is left: the driver and the workers it reported.
function Driver:cleanup(pids)
  if not self:exited() and self.pid then os.execute("kill -KILL " .. self.pid .. " 2>/dev/null") end
  for _, pid in ipairs(pids or {}) do
    if H.alive(pid) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end
end

-- A process's scheduling policy (/proc/PID/stat's field 41: 0
-- SCHED_OTHER, 3 SCHED_BATCH).
local function policy(pid)
  return tonumber(assert(H.readfile("/proc/" .. pid .. "/stat")):match("%) (.*)$")
    :match(("%S+%s+"):rep(38) .. "(%d+)"))
end

local function split(s, sep)
  local t = {}
  for f in s:gmatch("[^" .. sep .. "]+") do t[#t + 1] = tonumber(f) or f end
  return t
end

-- One connection: the handler's line "token id pid served", as fields.
local function ask(addr, hold)
  local fd = assert(fdpool.connect(addr, 10))
  local line, err = fd:read("l")
  assert(line, "no answer: " .. tostring(err))
  local t = split(line, " ")
  if hold then return t, fd end
  fd:close()
  return t
end

describe("fdpool.pool{} from a Lua program", function()

  it("forks workers from the caller: a closure handler serves, start/step/status/stop work", function()
    local d = start_driver("step")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local token = d:wait_line("token")[1]
    local addr = d:wait_line("addr")[1]
    -- Before start: a stopped pool.
    assert.same({ "fdpool.pool", "(stopped)", "false" }, d:wait_line("before"))
    local ready = d:wait_line("ready")
    -- status() shows both workers free, the pool running in the driver.
    assert.same({ "free", "free" }, { ready[1], ready[2] })
    pids = split(ready[3], ",")
    assert.equals(2, #pids)
    assert.equals("true", ready[4])
    assert.equals("true", ready[5])
    for _, pid in ipairs(pids) do
      assert.is_true(H.alive(pid))
      assert.not_equals(d.pid, pid)
    end
    -- The caller is the master: SCHED_BATCH while the pool runs; the
    -- workers it forked go back to SCHED_OTHER (sched = "master").
    assert.same({ "3" }, d:wait_line("sched"))
    for _, pid in ipairs(pids) do assert.equals(0, policy(pid)) end
    -- A second start() fails as the world does: nil, message, EINVAL.
    assert.same({ "nil", "22", "pool", "already", "started" }, d:wait_line("again"))
    -- The handler's upvalue `token` is the driver's own, unique to this run.
    local seen = {}
    for i = 1, 6 do
      local r = ask(addr)
      assert.equals(token, r[1])
      assert.is_truthy(r[2] == 1 or r[2] == 2)
      assert.equals(pids[r[2]], r[3])
      seen[i] = r
    end
    -- `served` counts in each worker's own copy of the driver.
    local per = { 0, 0 }
    for _, r in ipairs(seen) do
      per[r[2]] = per[r[2]] + 1
      assert.equals(per[r[2]], r[4])
    end
    d:ask_stop()
    assert.same({ "6", "6" }, d:wait_line("served"))
    -- stop(), then step() until false: stopped, nothing left running.
    assert.same({ "false", "fdpool.pool", "(stopped)", "false" }, d:wait_line("stopped"))
    assert.same({ "0" }, d:wait_line("sched-after"))  -- back to SCHED_OTHER
    assert.same({ "0" }, d:wait_line("master-served"))
    assert.equals(0, d:wait_exit())
    for _, pid in ipairs(pids) do assert.is_false(H.alive(pid)) end
    -- Only the driver wrote its lines: no worker ran the rest of the
    -- script after the handler loop.
    assert.equals(1, d:count("stopped"))
    assert.equals(1, d:count("ready"))
    assert.equals(1, d:count("pid"))
    assert.same({}, H.unexpected_errors(d:stderr()))
  end)

  it("with sched = \"other\" never changes the caller's policy; its workers stay SCHED_OTHER", function()
    local d = start_driver("sched_other")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    assert.same({ "0" }, d:wait_line("sched-before"))
    pids = split(d:wait_line("ready")[1], ",")
    assert.same({ "0" }, d:wait_line("sched"))
    for _, pid in ipairs(pids) do assert.equals(0, policy(pid)) end
    d:ask_stop()
    assert.same({ "0" }, d:wait_line("sched-after"))
    assert.equals(0, d:wait_exit())
  end)

  it("two pools in one program: each one's workers get its own sched; the caller is SCHED_BATCH while a batch or master pool runs", function()
    local defer = H.cleanup(finally)
    for _, c in ipairs { { "two_other", 0, "0" }, { "two_batch", 3, "3" }, { "two_master", 0, "3" } } do
      local d = start_driver(c[1])
      local pids = {}
      defer(function() d:cleanup(pids) end)
      pids = split(table.concat(d:wait_line("ready"), ","), ",")
      assert.same({ "3" }, d:wait_line("sched"))
      assert.equals(3, policy(pids[1]), c[1])          -- pool A's worker (batch)
      assert.equals(c[2], policy(pids[2]), c[1])       -- pool B's
      d:ask_stop()
      -- A stopped: the caller stays SCHED_BATCH while B (batch, master) runs.
      assert.same({ c[3] }, d:wait_line("sched-a-stopped"), c[1])
      assert.same({ "0" }, d:wait_line("sched-after"))
      assert.equals(0, d:wait_exit())
    end
  end)

  it("two pools in one program: the one that stops first leaves the other its signals (a killed worker replaced, SIGTERM a stop, not a kill)", function()
    local d = start_driver("two_signals")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local first = d:wait_line("a-stopped")[1]
    pids[1] = first
    assert(H.run("kill -KILL " .. first))
    local new = d:wait_line("b-replaced", 10)[1]
    pids[2] = new
    assert.are_not.equal(first, new)
    assert(H.run("kill -TERM " .. d.pid))
    d:wait_line("b-stopped", 10)
    assert.equals(0, d:wait_exit())
    assert.is_false(H.alive(tonumber(new)))
  end)

  -- A stop signal is the program's: whichever pool's signalfd reads it,
  -- every pool stops (src/pool.c's stop generations).
  for _, sig in ipairs { "TERM", "INT", "QUIT" } do
    it("two pools in one program: SIG" .. sig .. " read by either pool stops both, exit 0", function()
      local d = start_driver("two_stop")
      local pids = {}
      finally(function() d:cleanup(pids) end)
      pids = split(d:wait_line("ready")[1] .. "," .. d:line("ready")[2], ",")
      assert(H.run("kill -" .. sig .. " " .. d.pid))
      d:wait_line("a-stopped", 15)
      d:wait_line("b-stopped", 15)
      assert.equals(0, d:wait_exit())
      for _, pid in ipairs(pids) do
        H.wait_until(function() return not H.alive(pid) end, 5, "worker " .. pid .. " gone")
      end
      -- one pool read it, the other followed
      local how = sig == "QUIT" and "stopping gracefully" or "stopping"
      local log = H.readfile(d.dir .. "/pool.log") or ""
      assert.equals(1, H.count(log, "SIG" .. sig .. ": " .. how), log)
      assert.equals(1, H.count(log, "SIG" .. sig .. " (read by another pool of this program): "
        .. how), log)
    end)
  end

  it("two pools in one program: SIGUSR1 has the workers of both reopen the log", function()
    local d = start_driver("two_stop")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local addrs = d:wait_line("addrs")
    pids = split(d:wait_line("ready")[1] .. "," .. d:line("ready")[2], ",")
    local log = d.dir .. "/pool.log"
    assert(os.rename(log, log .. ".1"))
    assert(H.run("kill -USR1 " .. d.pid))
    H.wait_until(function() return H.count(H.readfile(log) or "", "SIGUSR1: log reopened") == 1 end,
      10, "the program's log reopened")
    -- Each worker writes its next line to the new file once it has
    -- reopened (SIGUSR1 is handled in the worker's loop: ask again
    -- until it is there, bounded).
    for i, addr in ipairs(addrs) do
      local want = "handled by pid " .. pids[i]
      H.wait_until(function()
        ask(addr)
        return H.count(H.readfile(log) or "", want) > 0
      end, 10, "pool " .. i .. "'s worker writing to the reopened log")
    end
    assert(H.run("kill -TERM " .. d.pid))
    d:wait_line("a-stopped", 15)
    d:wait_line("b-stopped", 15)
    assert.equals(0, d:wait_exit())
  end)

  it("two pools in one program: SIGHUP reloads both, then SIGTERM stops both", function()
    local d = start_driver("two_stop")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    pids = split(d:wait_line("ready")[1] .. "," .. d:line("ready")[2], ",")
    assert(H.run("kill -HUP " .. d.pid))
    assert.same({ "2" }, d:wait_line("a-generation", 15))
    assert.same({ "2" }, d:wait_line("b-generation", 15))
    assert(H.run("kill -TERM " .. d.pid))
    d:wait_line("a-stopped", 15)
    d:wait_line("b-stopped", 15)
    assert.equals(0, d:wait_exit())
  end)

  it("uses a policy function from the program, run in its own process", function()
    local d = start_driver("policy_last")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local addr = d:wait_line("addr")[1]
    local ready = d:wait_line("ready")
    pids = split(ready[1], ",")
    assert.equals("function", ready[2])
    for _ = 1, 4 do assert.equals(3, ask(addr)[2]) end
    -- The policy printed from the master (the driver itself).
    local pick = d:wait_line("pick")
    assert.equals("1", pick[1])
    assert.matches("^127%.0%.0%.1:%d+$", pick[2])
    assert.equals("127.0.0.1", pick[3])
    assert.equals("127.0.0.1:0", pick[4])   -- the listen string as given
    assert.equals("3", pick[5])
    assert.equals("free", pick[6])
    d:ask_stop()
    assert.same({ "0", "4" }, d:wait_line("status"))
    assert.same({ "4" }, d:wait_line("picks"))
    assert.equals(0, d:wait_exit())
    assert.equals(4, d:count("pick"))
    for _, pid in ipairs(pids) do assert.is_false(H.alive(pid)) end
  end)

  it("falls back to first_free when the program's policy raises", function()
    local d = start_driver("policy_raise")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local addr = d:wait_line("addr")[1]
    pids = split(d:wait_line("ready")[1], ",")
    for _ = 1, 5 do assert.equals(1, ask(addr)[2]) end
    d:ask_stop()
    assert.same({ "5", "5" }, d:wait_line("status"))
    assert.equals(0, d:wait_exit())
    assert.matches("policy function: [^\n]*driver policy failed on purpose[^\n]*using first_free",
                   d:stderr())
  end)

  it("cuts off a program's policy that loops (the budget applies)", function()
    local d = start_driver("policy_loop")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local addr = d:wait_line("addr")[1]
    pids = split(d:wait_line("ready")[1], ",")
    for _ = 1, 3 do assert.equals(1, ask(addr)[2]) end
    d:ask_stop()
    assert.same({ "3", "3" }, d:wait_line("status"))
    assert.equals(0, d:wait_exit())
    assert.matches("policy function: [^\n]*instruction budget[^\n]*using first_free", d:stderr())
  end)

  it("pool:run() returns true after SIGTERM", function()
    local d = start_driver("run")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local addr = d:wait_line("addr")[1]
    -- The listener is bound before run(): this waits in the backlog until
    -- a worker is up.
    local r = ask(addr)
    pids[1] = r[3]
    assert.is_true(H.alive(r[3]))
    assert.is_nil(d:line("run"))
    os.execute("kill -TERM " .. d.pid)
    assert.same({ "true", "nil" }, d:wait_line("run"))
    assert.same({ "false" }, d:wait_line("status"))
    assert.equals(0, d:wait_exit())
    assert.is_false(H.alive(r[3]))
    assert.matches("SIGTERM: stopping", d:stderr())
  end)

  it("pool:run() returns nil and the message when init raises", function()
    local d = start_driver("initfail")
    finally(function() d:cleanup() end)
    local line = d:wait_line("run")
    assert.equals("nil", line[1])
    local msg = table.concat(line, " ", 2)
    assert.matches("init failed on purpose in worker %d", msg)
    assert.equals(0, d:wait_exit())
    assert.matches("init failed on purpose", d:stderr())
  end)

  -- Regression: a worker's start-up error used to carry a raw multi-line
  -- traceback, so the log got a record spanning several lines and run()
  -- returned (and `pool run` printed) a multi-line error; DESIGN.md asks
  -- for one log line per event and "that error in one line".
  it("reports an init failure in one line, in the log and from run()", function()
    local d = start_driver("initfail")
    finally(function() d:cleanup() end)
    d:wait_line("run")
    assert.equals(0, d:wait_exit())
    local log = d:stderr()
    for line in log:gmatch("[^\n]+") do
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT[%d:]+Z %a+ ", line, 1,
                     "not a log line: " .. line)
    end
    local out = d:stdout()
    local run_line = out:match("\nrun [^\n]*\n(.*)$")
    assert.equals("", run_line, "run() returned a multi-line message")
  end)

  it("closes cleanly as a <close> variable", function()
    local d = start_driver("close")
    local pids = {}
    finally(function() d:cleanup(pids) end)
    local addr = d:wait_line("addr")[1]
    pids = split(d:wait_line("ready")[1], ",")
    assert.equals(2, #pids)
    local r = ask(addr)
    assert.is_truthy(r[2] == 1 or r[2] == 2)
    d:ask_stop()
    -- Leaving the block stopped the pool and reaped its workers.
    assert.same({ "fdpool.pool", "(closed)", "0" }, d:wait_line("closed"))
    local after = d:wait_line("after")
    assert.equals("false", after[1])
    assert.matches("attempt to use a closed pool", table.concat(after, " "))
    assert.equals(0, d:wait_exit())
    for _, pid in ipairs(pids) do assert.is_false(H.alive(pid)) end
    assert.equals(1, d:count("closed"))
  end)
end)
