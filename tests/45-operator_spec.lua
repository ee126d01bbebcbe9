-- tests/45-operator_spec.lua: what an operator does to a running pool
-- (rotates its log, fills its disk, kills its workers at odd moments) and
-- what the pool must keep doing. Every test starts the real build/pool
-- and talks to it over real sockets.
local H = require "helpers"
local fdpool = require "fdpool"

local FIX = "tests/fixtures/"
local q = H.quote

-- Start `pool run` with `--log DIR/app.log` (H.start_pool reads the
-- pool's stderr, which --log replaces). Returns an H.Pool whose log() is
-- the current --log file.
local function start_logged(script, extra, log_path)
  local dir = H.tmpdir()
  local p = { dir = dir, log_path = log_path or dir .. "/app.log", exit_path = dir .. "/exit",
              control = dir .. "/control.sock" }
  local cmd = { H.POOL, "run", script, "--listen", "127.0.0.1:0", "--workers", "2",
                "--control", p.control, "--log", p.log_path }
  for _, f in ipairs(extra or {}) do cmd[#cmd + 1] = f end
  for i, c in ipairs(cmd) do cmd[i] = q(c) end
  local env = H.BUILD ~= "build" and "ASAN_OPTIONS=detect_leaks=1 " or ""
  os.execute(("(%s%s; echo $? > %s) </dev/null >%s/stdout 2>%s/stderr &"):format(
    env, table.concat(cmd, " "), p.exit_path, dir, dir))
  setmetatable(p, { __index = H.Pool })
  p.pid = H.wait_until(function()
    return tonumber(p:log():match("pool%[(%d+)%]"))
  end, 10, "the pool's first log line")
  p.addr = H.wait_until(function() return p:log():match("listening on (%S+)") end,
    10, "the pool to listen")
  local n = 2
  for i, f in ipairs(extra or {}) do
    if f == "--workers" then n = tonumber(extra[i + 1]) end
  end
  p:wait_ready(n)
  H.defer(finally, function()
    if not p:exited() then p:kill("KILL") end
  end)
  return p
end

-- One "boom" line to pool_boom.lua: its worker logs a handler error.
local function boom(addr)
  local r = H.request(addr, "boom\n", 10)
  return r
end

describe("log rotation", function()
  it("SIGUSR1 reopens the --log file every time, in the master and the workers", function()
    local p = start_logged(FIX .. "pool_boom.lua")
    local wpids = p:worker_pids()
    -- logrotate's default (create): move the file, signal, again and again.
    for round = 1, 3 do
      local moved = p.dir .. "/app.log." .. round
      assert(os.rename(p.log_path, moved))
      p:kill("USR1")
      H.wait_until(function()
        return p:log():find("SIGUSR1: log reopened", 1, true)
      end, 5, "round " .. round .. ": the master to write to a new app.log")
      -- Every worker writes to the new file too.
      for _, wpid in ipairs(wpids) do
        H.wait_until(function()
          local ok, _, out = H.run("readlink /proc/" .. wpid .. "/fd/2")
          return ok and out:match("^(.-)%s*$") == p.log_path
        end, 5, "round " .. round .. ": worker " .. wpid .. "'s stderr on the new app.log")
      end
      boom(p.addr)
      H.wait_until(function()
        return p:log():find("boom requested", 1, true)
      end, 5, "round " .. round .. ": a worker's error line in the new app.log")
    end
    assert.equals(0, p:stop())
  end)

  it("--user: the workers reopen the rotated log too (the master gives them the new file)", function()
    if not H.run("[ $(id -u) = 0 ] && id nobody >/dev/null") then
      pending("needs root and the user nobody")
      return
    end
    local p = start_logged(FIX .. "pool_boom.lua", { "--user", "nobody" })
    -- The log's directory is searchable by the workers' user (as
    -- /var/log is); the file was created by the master, as root.
    assert(H.run("chmod 755 " .. q(p.dir)))
    local wpids = p:worker_pids()
    for round = 1, 2 do
      assert(os.rename(p.log_path, p.dir .. "/app.log." .. round))
      p:kill("USR1")
      for _, wpid in ipairs(wpids) do
        H.wait_until(function()
          local ok, _, out = H.run("readlink /proc/" .. wpid .. "/fd/2")
          return ok and out:match("^(.-)%s*$") == p.log_path
        end, 5, "round " .. round .. ": worker " .. wpid .. "'s stderr on the new app.log")
      end
      boom(p.addr)
      H.wait_until(function()
        return p:log():find("boom requested", 1, true)
      end, 5, "round " .. round .. ": a worker's error line in the new app.log")
      assert.falsy(p:log():find("cannot reopen", 1, true), p:log())
    end
    assert.equals(0, p:stop())
  end)

  it("a reopen that fails is logged and the pool logs on to the open file", function()
    local p = start_logged(FIX .. "pool_boom.lua")
    -- The log's directory becomes unwritable for a moment: a path where
    -- a directory stands cannot be opened for writing.
    local moved = p.dir .. "/app.log.1"
    assert(os.rename(p.log_path, moved))
    assert(H.run("mkdir " .. q(p.log_path)))
    p:kill("USR1")
    H.wait_until(function()
      return (H.readfile(moved) or ""):find("cannot reopen the log file", 1, true)
    end, 5, "the failed reopen in the old file")
    assert.truthy(boom(p.addr))
    H.wait_until(function()
      return (H.readfile(moved) or ""):find("boom requested", 1, true)
    end, 5, "the workers to log on to the old file")
    -- Once the path is usable again, the next SIGUSR1 takes it.
    assert(H.run("rmdir " .. q(p.log_path)))
    p:kill("USR1")
    H.wait_until(function()
      return p:log():find("SIGUSR1: log reopened", 1, true)
    end, 5, "the reopen once the path is free")
    assert.equals(0, p:stop())
  end)
end)

local count = H.count

describe("the --log file on a full disk", function()
  local is_root = (io.popen("id -u"):read("l")) == "0"

  -- Regression test (was a bug, now fixed): a line the full disk cut
  -- short had the next line glued to its end once space came back, and
  -- nothing said that lines were missing.
  it("has lines lost said, and every line whole, once space is freed", function()
    if not is_root then
      pending("needs root to mount a small tmpfs (mount -t tmpfs -o size=64k)")
      return
    end
    local dir = H.tmpdir() .. "/fs"
    assert(os.execute("mkdir -p " .. q(dir)))
    if not os.execute(("mount -t tmpfs -o size=64k tmpfs %s 2>/dev/null"):format(q(dir))) then
      pending("mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)")
      return
    end
    H.defer(finally, function()
      os.execute(("umount %s 2>/dev/null || umount -l %s"):format(q(dir), q(dir)))
    end)
    -- One worker: a torn line is followed by a line of the same process
    -- (another process does not know of it: docs/operations.md, Logs).
    local p = start_logged(FIX .. "pool_boom.lua", { "--workers", "1" }, dir .. "/app.log")
    local pids = p:worker_pids()
    os.execute(("unset LD_PRELOAD; dd if=/dev/zero of=%s/fill bs=1024 2>/dev/null"):format(q(dir)))
    for _ = 1, 40 do boom(p.addr) end   -- 40 error lines the disk cannot take (in whole)
    assert(os.remove(dir .. "/fill"))
    H.wait_until(function()
      boom(p.addr)
      return p:log():find("log: %d+ line%(s%) could not be written")
    end, 10, "the lines-lost warning")
    local log = p:log()
    local lost = 0
    for k in log:gmatch("warn  worker %d%[%d+%]: log: (%d+) line%(s%) could not be written") do
      lost = lost + tonumber(k)
    end
    assert.truthy(lost >= 1 and lost <= 40, log)
    -- Every line starts with its time stamp, and holds one.
    for l in log:gmatch("[^\n]+") do
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ ", l)
      local _, stamps = l:gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ ", "")
      assert.equals(1, stamps, "a torn line: " .. l)
    end
    assert.same(pids, p:worker_pids())
    assert.equals(0, p:stop())
  end)
end)

describe("a stopped worker", function()
  it("SIGSTOP with connections in flight: terminated once under --timeout, replaced, the pool serves", function()
    local p = H.start_pool { script = FIX .. "pool_slow.lua", args = { "0" }, workers = 1,
                             concurrency = 4, extra = { "--timeout", "1" } }
    local victim = p:worker_pids()[1]
    assert(H.run("kill -STOP " .. victim))
    -- Three connections in flight in the stopped worker.
    local fds = {}
    for i = 1, 3 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write("held" .. i .. "\n"))
    end
    H.wait_status(p, function(st) return st.workers[1].active == 3 end, 10,
      "three connections in the stopped worker")
    -- The master does not block on it: status answers, and after
    -- --timeout + 3 s it terminates the worker, once, then kills it.
    H.wait_until(function()
      return p:log():find("worker 1 (pid " .. victim .. ") killed by SIGKILL", 1, true)
    end, 20, "the stopped worker killed")
    local log = p:log()
    assert.equals(1, count(log, "does not yield; terminating the worker"), log)
    assert.truthy(log:find("its 3 connection(s) are lost", 1, true), log)
    for i = 1, 3 do
      local got = fds[i]:read("a")
      assert.is_true(got == nil or got == "", "connection " .. i .. " got " .. tostring(got))
      fds[i]:close()
    end
    -- Replaced; the pool serves, nothing in flight is left over.
    local st = p:wait_ready(1)
    assert.are_not.equal(victim, st.workers[1].pid)
    assert.equals("1 after\n", H.request(p.addr, "after\n", 10))
    H.wait_status(p, H.all_idle, 5, "an idle pool")
    assert.equals(0, p:stop())
  end)
end)

-- `pool CMD` on p's control socket: exit code, output.
local function ctl(p, cmd)
  local _, code, out = H.run(H.POOL .. " " .. cmd .. " --control " .. q(p.control))
  return code, out
end

describe("a worker killed during a graceful stop", function()
  -- Regression test (was a bug, now fixed): once the pool was stopping,
  -- a worker killed by someone else (SIGKILL, a crash) was logged at
  -- info, without the connections it took with it, like an exit.
  it("by someone else is logged as a loss (warn, its connections are lost); the stop ends", function()
    local p = H.start_pool { script = FIX .. "pool_slow.lua", args = { "30" }, workers = 1,
                             extra = { "--drain-delay", "0" } }
    H.defer(finally, function() p:stop() end)
    local victim = p:worker_pids()[1]
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() fd:close() end)
    assert(fd:write("held\n"))
    H.wait_status(p, function(st) return st.workers[1].active == 1 end, 10, "one connection in flight")
    local _, code, out = H.run(H.POOL .. " stop --graceful --control " .. q(p.control))
    assert.equals(0, code, out)
    H.wait_until(function() return p:log():find("graceful stop requested", 1, true) end, 10, "the stop begun")
    assert(H.run("kill -KILL " .. victim))
    assert.equals(0, p:wait_exit(10))
    local got = fd:read("a")
    assert.is_true(got == nil or got == "", tostring(got))
    local log = p:log()
    assert.truthy(log:find("warn  pool[" .. p.pid .. "]: worker 1 (pid " .. victim
      .. ") killed by SIGKILL; its connections are lost", 1, true), log)
    -- No new worker for a stopping pool, and no grace-end kill line.
    assert.equals(1, count(log, "worker 1 started"))
    assert.equals(0, count(log, "after the grace period"))
  end)

  it("at the grace's end by the master (a stopped worker) is not logged twice as a loss", function()
    local p = H.start_pool { script = FIX .. "pool_slow.lua", args = { "30" }, workers = 1,
                             extra = { "--drain-delay", "0", "--grace", "0.3" } }
    H.defer(finally, function() p:stop() end)
    local victim = p:worker_pids()[1]
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() fd:close() end)
    assert(fd:write("held\n"))
    H.wait_status(p, function(st) return st.workers[1].active == 1 end, 10, "one connection in flight")
    -- Stopped: it cannot end by itself at the grace, the master kills it.
    assert(H.run("kill -STOP " .. victim))
    H.defer(finally, function() H.run("kill -CONT " .. victim .. " 2>/dev/null") end)
    p:kill("QUIT")
    assert.equals(0, p:wait_exit(10))
    local log = p:log()
    assert.truthy(log:find("worker 1 (pid " .. victim .. ") still running after the grace period; "
      .. "killing it", 1, true), log)
    assert.truthy(log:find("info  pool[" .. p.pid .. "]: worker 1 (pid " .. victim
      .. ") killed by SIGKILL\n", 1, true), log)
    assert.equals(0, count(log, "its connections are lost"))
  end)
end)

describe("workers retired before they were ready", function()
  -- ops_reload.lua with "slow_init": every worker takes 1 s to be READY.
  local function slow_pool()
    local dir = H.tmpdir()
    H.writefile(dir .. "/slow_init", "1\n")
    return H.start_pool { script = FIX .. "ops_reload.lua", args = { dir }, workers = 2 }
  end

  it("a table worker killed during a reload: its replacement retires without a fault", function()
    local p = slow_pool()
    for round = 1, 2 do
      local victim = p:worker_pids()[1]
      local out = p.dir .. "/reload" .. round
      os.execute(("%s reload --control %s >%s 2>&1 &"):format(H.POOL, q(p.control), q(out)))
      H.wait_until(function()
        return p:log():find("reloading: generation " .. round + 1 .. " starting", 1, true)
      end, 10, "the reload to start")
      assert(H.run("kill -KILL " .. victim))
      -- The old generation's replacement starts (1 s) while the new one does.
      local restarted = H.wait_status(p, function(st)
        return st.workers[1].pid ~= victim and st.workers[1].pid > 0
           and st.workers[1].generation == round
      end, 10, "the killed worker replaced in its generation").workers[1]
      H.wait_until(function()
        return (H.readfile(out) or ""):find("OK reloaded: generation " .. round + 1, 1, true)
      end, 20, "the reload to succeed")
      -- The replacement was retired before it was READY; its late READY
      -- is no fault: it exits by itself.
      H.wait_until(function()
        return p:log():find("(pid " .. restarted.pid .. ") exited with code 0", 1, true)
      end, 10, "the early-retired replacement to exit cleanly")
      assert.falsy(p:log():find("faulty", 1, true), p:log())
    end
    local st = H.wait_status(p, function(s)
      return s.generation == 3 and H.all_idle(s)
    end, 10, "generation 3 idle")
    assert.equals(2, #st.workers)
    assert.equals(2, #H.children(p.pid))
    assert.equals(0, p:stop())
  end)

  it("a worker scaled down while starting exits without a fault", function()
    local p = slow_pool()
    assert.equals(0, (ctl(p, "scale 3")))
    local st = H.wait_status(p, function(s)
      return #s.workers == 3 and s.workers[3].state == "starting"
    end, 5, "worker 3 starting")
    local pid3 = st.workers[3].pid
    assert.equals(0, (ctl(p, "scale 2")))
    H.wait_until(function()
      return p:log():find("(pid " .. pid3 .. ") exited with code 0", 1, true)
    end, 10, "worker 3 to exit cleanly")
    assert.falsy(p:log():find("faulty", 1, true), p:log())
    assert.equals("pid", (H.request(p.addr, "x\n", 10) or ""):match("^pid"))
    assert.equals(0, p:stop())
  end)
end)

describe("scale during a reload", function()
  it("is refused with the reason, on the control socket and for SIGTTIN/SIGTTOU", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/slow_init", "1\n")
    local p = H.start_pool { script = FIX .. "ops_reload.lua", args = { dir }, workers = 2 }
    local out = p.dir .. "/reload.out"
    os.execute(("%s reload --control %s >%s 2>&1 &"):format(H.POOL, q(p.control), q(out)))
    H.wait_until(function()
      return p:log():find("reloading: generation 2 starting", 1, true)
    end, 10, "the reload to start")
    local code, msg = ctl(p, "scale 3")
    assert.equals(1, code)
    assert.truthy(msg:find("cannot scale to 3 workers: generation 2 is still starting", 1, true), msg)
    p:kill("TTIN")
    H.wait_until(function()
      return p:log():find("SIGTTIN: cannot add a worker: generation 2 is still starting", 1, true)
    end, 5, "the SIGTTIN refusal with its reason")
    p:kill("TTOU")
    H.wait_until(function()
      return p:log():find("SIGTTOU: cannot remove a worker: generation 2 is still starting", 1, true)
    end, 5, "the SIGTTOU refusal with its reason")
    H.wait_until(function()
      return (H.readfile(out) or ""):find("OK reloaded: generation 2", 1, true)
    end, 20, "the reload to succeed")
    assert.equals(0, (ctl(p, "scale 3")))
    p:wait_ready(3)
    assert.equals(0, p:stop())
  end)
end)

describe("a reload's new worker killed before READY", function()
  it("refuses the reload, keeps the old generation, and stops the rest quietly", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/slow_init", "1\n")
    local p = H.start_pool { script = FIX .. "ops_reload.lua", args = { dir }, workers = 2 }
    local old = p:worker_pids()
    local fd0 = H.fd_count(p.pid)
    local out = p.dir .. "/reload.out"
    os.execute(("%s reload --control %s >%s 2>&1 &"):format(H.POOL, q(p.control), q(out)))
    -- The new generation's processes: the master's children not in the table.
    local new = H.wait_until(function()
      local t = {}
      for _, c in ipairs(H.children(p.pid)) do
        if c ~= old[1] and c ~= old[2] then t[#t + 1] = c end
      end
      return #t == 2 and t
    end, 10, "the new generation's two processes")
    assert(H.run("kill -KILL " .. new[1]))
    H.wait_until(function()
      return (H.readfile(out) or ""):find("reload refused, keeping the running workers: "
        .. "a worker of generation 2 killed by SIGKILL before it was ready", 1, true)
    end, 20, "the refusal")
    H.wait_until(function() return #H.children(p.pid) == 2 end, 10, "the other new worker to go")
    -- The master logs right after it reaps: poll, the line may trail the reap.
    H.wait_until(function()
      return p:log():find("info  pool%[%d+%]: worker %d %(pid " .. new[2] .. "%) killed by SIGTERM")
    end, 10, "the other new worker's SIGTERM, logged at info")
    assert.same(old, p:worker_pids())
    local st = p:status()
    assert.equals(1, st.generation)
    assert.equals(0, st.crash_streak)
    assert.equals("pid", (H.request(p.addr, "x\n", 10) or ""):match("^pid"))
    assert.equals(fd0, H.fd_count(p.pid))
    assert.equals(0, p:stop())
  end)
end)

describe("the master's scheduling policy", function()
  -- /proc/PID/stat's policy field: 0 SCHED_OTHER, 3 SCHED_BATCH, 5 SCHED_IDLE.
  local function policy(pid)
    local f = {}
    for x in assert(H.readfile("/proc/" .. pid .. "/stat")):match("%) (.*)$"):gmatch("%S+") do
      f[#f + 1] = x
    end
    return tonumber(f[39])
  end
  -- Kill worker i; its successor's pid.
  local function successor(p, i)
    local old = p:worker_pids()[i]
    assert(H.run("kill -KILL " .. old))
    return H.wait_until(function()
      local now = p:worker_pids()
      return now[i] ~= old and now[i] > 0 and now[i]
    end, 10, "the killed worker's successor")
  end

  it("is SCHED_BATCH for the master (its wake-ups do not preempt busy workers); workers, restarted ones too, stay SCHED_OTHER", function()
    for _, extra in ipairs { {}, { "--sched", "master" } } do
      local p = H.start_pool{ workers = 2, extra = extra }
      finally(function() p:stop() end)
      assert(p.addr, p:log())
      assert.equal(3, policy(p.pid))
      local pids = p:worker_pids()
      for _, pid in ipairs(pids) do assert.equal(0, policy(pid)) end
      assert.equal(0, policy(successor(p, 1)))
      assert.equal(0, p:stop())
    end
  end)

  it("--sched batch makes the workers SCHED_BATCH too, restarted ones too", function()
    local p = H.start_pool{ workers = 2, extra = { "--sched", "batch" } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    assert.equal(3, policy(p.pid))
    local pids = p:worker_pids()
    for _, pid in ipairs(pids) do assert.equal(3, policy(pid)) end
    assert.equal(3, policy(successor(p, 1)))
    assert.equal(0, p:stop())
  end)

  it("--sched other leaves the master and the workers SCHED_OTHER, restarted ones too", function()
    local p = H.start_pool{ workers = 2, extra = { "--sched", "other" } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    assert.equal(0, policy(p.pid))
    local pids = p:worker_pids()
    for _, pid in ipairs(pids) do assert.equal(0, policy(pid)) end
    assert.equal(0, policy(successor(p, 2)))
    assert.equal(0, p:stop())
  end)

  it("a bad --sched, config sched or fdpool.pool{sched} is refused with one line", function()
    local code, out, err = H.run_pool("run --sched fifo --no-control --listen 127.0.0.1:0", 10)
    assert.equal(2, code, out)
    assert.equal("pool: --sched must be master, batch or other (got 'fifo')\n", err)
    local dir = H.tmpdir()
    local cfg = dir .. "/c.lua"
    H.writefile(cfg, "return { sched = 3 }\n")
    code, out, err = H.run_pool("run --config " .. H.quote(cfg) .. " --no-control", 10)
    assert.equal(1, code, out)
    assert.truthy(err:find("setting 'sched' must be a string (got number)", 1, true), err)
    assert.equal(1, select(2, err:gsub("\n", "")))
    local fdpool = require "fdpool"
    local ok, msg = pcall(fdpool.pool, { handler = function() end, sched = "idle" })
    assert.is_false(ok)
    assert.truthy(tostring(msg):find("sched must be master, batch or other", 1, true), msg)
  end)

  it("is left alone when the operator chose one (chrt): the pool keeps it for all its processes", function()
    local p = H.start_pool{ workers = 1, shell = "chrt -i 0 env" }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    assert.equal(5, policy(p.pid))
    assert.equal(5, policy(p:worker_pids()[1]))
    assert.equal(0, p:stop())
  end)

  it("--sched other does not undo the operator's chrt (batch or idle): every process keeps it", function()
    for _, c in ipairs { { "-b", 3 }, { "-i", 5 } } do
      local p = H.start_pool{ workers = 1, shell = "chrt " .. c[1] .. " 0 env",
                              extra = { "--sched", "other" } }
      finally(function() p:stop() end)
      assert(p.addr, p:log())
      assert.equal(c[2], policy(p.pid))
      assert.equal(c[2], policy(p:worker_pids()[1]))
      assert.equal(0, p:stop())
    end
  end)

  it("with --sched batch, is the master's for every worker it forks (workers on demand): recycled by --max-requests, scaled up, a reload's", function()
    local p = H.start_pool{ workers = 1, extra = { "--workers", "1-3", "--max-requests", "2", "--sched", "batch" } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local seen = {}
    local function check_all()
      for _, pid in ipairs(p:worker_pids()) do
        if pid > 0 then
          seen[pid] = true
          assert.equal(3, policy(pid), "worker pid " .. pid)
        end
      end
    end
    check_all()
    local first = p:worker_pids()[1]
    -- Recycled: two requests retire worker 1; its successor batch too.
    for _ = 1, 2 do assert.matches("^HTTP/1.1 200", H.http_get(p.addr)) end
    H.wait_until(function()
      local w = p:worker_pids()[1]
      return w ~= first and w > 0
    end, 10, "worker 1 recycled")
    check_all()
    -- Scaled up (slots 2 and 3 forked now), then a reload's generation.
    assert(H.run(H.POOL .. " scale 3 --control " .. q(p.control)))
    H.wait_status(p, function(st) return #st.workers == 3 and st.workers[3].pid > 0 end, 10,
      "3 workers")
    check_all()
    local ok, _, out = H.run(H.POOL .. " reload --control " .. q(p.control))
    assert.is_true(ok, out)
    H.wait_status(p, function(st) return st.generation == 2 end, 10, "generation 2")
    check_all()
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.truthy(n >= 5, n)
    assert.equal(3, policy(p.pid))
    assert.equal(0, p:stop())
  end)

  it("a reload whose config changes sched or cpu_affinity keeps the running ones and says so at warn level", function()
    local dir = H.tmpdir()
    local cfg = dir .. "/c.lua"
    H.writefile(cfg, "return { }\n")
    local p = H.start_pool{ workers = 1, extra = { "--config", cfg } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    H.writefile(cfg, "return { sched = 'batch', cpu_affinity = 'auto' }\n")
    local ok, _, out = H.run(H.POOL .. " reload --control " .. q(p.control))
    assert.is_true(ok, out)
    local st = H.wait_status(p, function(s) return s.generation == 2 and s.workers[1].pid > 0 end,
      10, "generation 2")
    assert.equal(3, policy(p.pid))
    assert.equal(0, policy(st.workers[1].pid))
    assert.is_nil(st.workers[1].cpu)
    local log = p:log()
    assert.truthy(log:find("warn  pool[" .. p.pid .. "]: reload: sched changed to 'batch': read at "
      .. "start only, the pool keeps 'master' (`pool upgrade` or a restart applies it)", 1, true), log)
    assert.truthy(log:find("warn  pool[" .. p.pid .. "]: reload: cpu_affinity changed: read at "
      .. "start only, the workers keep their CPUs (`pool upgrade` or a restart applies it)", 1, true), log)
    -- A configuration that asks for the running ones says nothing.
    H.writefile(cfg, "return { sched = 'master' }\n")
    ok, _, out = H.run(H.POOL .. " reload --control " .. q(p.control))
    assert.is_true(ok, out)
    H.wait_status(p, function(s) return s.generation == 3 end, 10, "generation 3")
    assert.equal(1, H.count(p:log(), "reload: sched changed"))
    assert.equal(1, H.count(p:log(), "reload: cpu_affinity changed"))
    assert.equal(0, p:stop())
  end)

  it("pool upgrade: each new master takes the policy its own configuration asks for, its workers too", function()
    local dir = H.tmpdir()
    local cfg = dir .. "/c.lua"
    H.writefile(cfg, "return { }\n")
    local p = H.start_pool{ workers = 1, extra = { "--config", cfg } }
    local masters = { p.pid }
    finally(function()
      for _, pid in ipairs(masters) do
        if H.alive(pid) then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
      end
      for _, pid in ipairs(masters) do
        pcall(H.wait_until, function() return not H.alive(pid) end, 10)
      end
    end)
    assert(p.addr, p:log())
    assert.equal(3, policy(p.pid))
    for _, want in ipairs { { "other", 0, 0 }, { "batch", 3, 3 }, { "master", 3, 0 } } do
      H.writefile(cfg, ("return { sched = %q }\n"):format(want[1]))
      local code, out, err = H.run_pool("upgrade --control " .. q(p.control), 60)
      assert.equal(0, code, err)
      local pid = tonumber(out:match("master pid (%d+) serving"))
      assert.truthy(pid, out)
      masters[#masters + 1] = pid
      local st = H.wait_status(p, function(s) return s.pid == pid and s.workers[1].pid > 0 end,
        10, "the new master's worker")
      assert.equal(want[2], policy(pid), want[1])
      assert.equal(want[3], policy(st.workers[1].pid), want[1])
      H.wait_until(function() return not H.alive(masters[#masters - 1]) end, 30, "the old master to exit")
    end
    -- The last master stops as any; no sanitizer report from any of them.
    os.execute("kill -TERM " .. masters[#masters])
    H.wait_until(function() return not H.alive(masters[#masters]) end, 15, "the last master to exit")
    for _, pat in ipairs { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:" } do
      assert.falsy(p:log():find(pat, 1, true), p:log())
    end
  end)
end)
