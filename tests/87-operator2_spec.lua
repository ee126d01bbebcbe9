-- tests/87-operator2_spec.lua: operator faults round 2 (what 40, 41, 42,
-- 45, 47, 48, 49, 59, 78 and 84 leave out): a start or a reload whose
-- new code never finishes its top level or init, or calls os.exit there;
-- a fork the user's process limit refuses at start; bad values that must
-- be refused in one line naming what is wrong. Every test starts the
-- real build/pool and talks to it over real sockets.
local H = require "helpers"

local q = H.quote

local function literal(s) return (s:gsub("%p", "%%%0")) end

-- A shell command without LD_PRELOAD: under the ASan run it holds
-- libasan for busted's lua5.4, and tools (pgrep, setpriv...) hang with it.
local function sh(cmd) return os.execute("unset LD_PRELOAD; " .. cmd) end

local GOOD = [[
local gen = ...
return function(conn)
  conn:receive("l")
  conn:send("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n" .. gen .. "\n")
end
]]

local TOP_LOOP = "local n = 0\nwhile true do n = n + 1 end\n"
local INIT_LOOP = [[
local function spin() local n = 0 while true do n = n + 1 end end
return { init = function() spin() end, handle = function(conn) end }
]]
-- stuck in C (a child process): no Lua instruction runs to raise
local INIT_C = [[
return { init = function() os.execute("exec sleep 30 >/dev/null 2>&1 </dev/null") end,
         handle = function(conn) end }
]]
local TOP_EXIT = "os.exit(3)\n"
local TOP_HOG = "local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(100000) .. i end\n"
local INIT_HOG = [[
return { init = function() local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(100000) .. i end end,
         handle = function(conn) end }
]]
local INIT_EXIT = [[
return { init = function() os.exit(0) end, handle = function(conn) end }
]]

-- `pool run SCRIPT` that fails at start: its exit code, the last line of
-- its stderr, the whole stderr, the seconds it took.
local function run_failing(dir, script, extra)
  local t0 = H.now()
  local ok, code, out = H.run(("timeout 20 %s run %s --listen 127.0.0.1:0 --workers 2 --no-control %s 2>&1")
    :format(H.POOL, q(script), extra or ""))
  assert.is_false(ok, out)
  local lines = H.lines(out)
  return code, lines[#lines] or "", out, H.now() - t0
end

-- No process of ours runs SCRIPT any more (a worker left behind).
local function none_left(script)
  return H.wait_until(function()
    -- ([p]: not this pgrep's own shell, whose command line holds it)
    local p = io.popen("LD_PRELOAD= pgrep -f -- " .. q("[p]ool run " .. script) .. " 2>/dev/null")
    local s = p:read("a")
    p:close()
    return s == ""
  end, 5, "no process running " .. script)
end

describe("--start-timeout at the first start", function()
  it("a top level or init that loops: exit 1 in about the timeout, the error names file and line", function()
    local dir = H.tmpdir()
    for _, c in ipairs {
      { "top.lua", TOP_LOOP, "/top%.lua:2: still starting after %-%-start%-timeout 1 s" },
      { "init.lua", INIT_LOOP, "init failed: /.*/init%.lua:1: still starting after %-%-start%-timeout 1 s" },
    } do
      local script = H.writefile(dir .. "/" .. c[1], c[2])
      local code, last, out, took = run_failing(dir, script, "--start-timeout 1")
      assert.equals(1, code, out)
      assert.matches("^pool: .*" .. c[3], last)
      assert.is_true(took < 6, ("took %.1f s"):format(took))
      none_left(script)
    end
  end)

  it("an init stuck in C: stopped with one line saying it was not ready, exit 1", function()
    local dir = H.tmpdir()
    local script = H.writefile(dir .. "/stuck.lua", INIT_C)
    local code, last, out, took = run_failing(dir, script, "--start-timeout 0.5")
    assert.equals(1, code, out)
    assert.equals("pool: worker 1 was not ready within 0.5 s (--start-timeout): its top level or init did not finish",
      last:gsub("worker %d", "worker 1"), out)
    assert.is_true(took < 6, ("took %.1f s"):format(took))
    none_left(script)
  end)

  it("is refused out of range, on the command line and in a config file, in one line", function()
    local dir = H.tmpdir()
    for _, c in ipairs {
      { "--start-timeout 0", "pool: --start-timeout must be a number of seconds from 0.1 to 60 (got '0')" },
      { "--start-timeout 61", "pool: --start-timeout must be a number of seconds up to 60 (got '61')" },
      { "--start-timeout soon", "pool: --start-timeout must be a number of seconds from 0.1 to 60 (got 'soon')" },
    } do
      local ok, code, out = H.run(("%s run --listen 127.0.0.1:0 --no-control %s 2>&1"):format(H.POOL, c[1]))
      assert.is_false(ok)
      assert.equals(2, code, out)
      assert.equals(c[2] .. "\n", out)
    end
    local cf = H.writefile(dir .. "/c.lua", "return { start_timeout = 'x' }")
    local ok, code, out = H.run(("%s run --config %s --no-control 2>&1"):format(H.POOL, cf))
    assert.is_false(ok)
    assert.equals(1, code, out)
    assert.equals(("pool: %s: setting 'start_timeout' must be a number (got string)\n"):format(cf), out)
  end)
end)

describe("os.exit while a worker starts", function()
  it("in the top level or init at the first start: exit 1, the error names file and line", function()
    local dir = H.tmpdir()
    for _, c in ipairs {
      { "top.lua", TOP_EXIT, "^pool: /.*/top%.lua:1: os%.exit%(%) called while the worker starts" },
      { "init.lua", INIT_EXIT, "^pool: init failed: /.*/init%.lua:1: os%.exit%(%) called while the worker starts" },
    } do
      local script = H.writefile(dir .. "/" .. c[1], c[2])
      local code, last, out = run_failing(dir, script)
      assert.equals(1, code, out)
      assert.matches(c[3], last)
    end
  end)

  it("is still os.exit in a handler once the worker serves", function()
    local dir = H.tmpdir()
    local script = H.writefile(dir .. "/h.lua", [[
return function(conn) conn:receive("l") conn:send("HTTP/1.0 200 OK\r\n\r\nbye\n") os.exit(0) end
]])
    local p = H.start_pool { script = script, workers = 1 }
    H.defer(finally, function() p:stop() end)
    local pid = p:worker_pids()[1]
    assert.matches("bye", H.http_get(p.addr, "/") or "")
    H.wait_until(function() return not H.alive(pid) end, 5, "the worker's exit")
  end)
end)

describe("the master SIGKILLed during a reload whose init loops", function()
  it("takes every worker with it, old and new; pool reload says the pool is gone", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", GOOD)
    local p = H.start_pool { script = app, workers = 2, args = { "g1" } }
    H.defer(finally, function() p:stop("KILL") end)
    H.writefile(app, INIT_LOOP)
    local out_path = dir .. "/reload.out"
    sh(("(%s reload --control %s > %s 2>&1; echo $? >> %s) &"):format(
      H.POOL, q(p.control), q(out_path), q(out_path)))
    H.wait_until(function()
      return H.count(p:log(), "started (pid") >= 4
    end, 10, "the new generation forked")
    p:kill("KILL")
    local out = H.wait_until(function()
      local s = H.readfile(out_path) or ""
      return s:match("\n%d+\n$") and s
    end, 10, "pool reload's answer")
    assert.matches("^pool: the pool at .* closed the connection without an answer %(it is gone: it died or stopped meanwhile%)\n1\n$", out)
    none_left(app)
  end)
end)

describe("a worker restarted after the pool served", function()
  it("whose init then loops is stopped at --start-timeout and restarted with back-off; the others serve; it serves once init works", function()
    local dir = H.tmpdir()
    local flag = dir .. "/flag"
    local app = H.writefile(dir .. "/app.lua", ([[
return { init = function() if io.open(%q) then while true do end end end,
         handle = function(conn) conn:receive("l") conn:send("HTTP/1.0 200 OK\r\n\r\nok\n") end }
]]):format(flag))
    local p = H.start_pool { script = app, workers = 2, extra = { "--start-timeout", "0.5" } }
    H.defer(finally, function() p:stop() end)
    local pids = p:worker_pids()
    H.writefile(flag, "")
    sh("kill -KILL " .. pids[1])
    H.wait_until(function()
      return p:log():find("cannot start: init failed: " .. app .. ":1: still starting after --start-timeout 0.5 s", 1, true)
    end, 10, "the restarted worker's start interrupted")
    for _ = 1, 5 do assert.matches("ok", H.http_get(p.addr, "/") or "") end
    assert.is_nil(p:exited())
    os.remove(flag)
    H.wait_status(p, function(st)
      local up = 0
      for _, w in ipairs(st.workers) do up = up + (w.state ~= "starting" and w.pid > 0 and 1 or 0) end
      return up == 2
    end, 15, "both workers serving again")
    assert.equals(0, p:stop())
  end)
end)

describe("pool check", function()
  it("reports os.exit and an endless top level instead of exiting or hanging", function()
    local dir = H.tmpdir()
    local ex = H.writefile(dir .. "/ex.lua", TOP_EXIT)
    local ok, code, out = H.run(("timeout 20 %s check %s 2>&1"):format(H.POOL, ex))
    assert.is_false(ok)
    assert.equals(1, code, out)
    assert.matches("^pool: " .. literal(ex) .. ":1: os%.exit%(%) called while the worker starts", out)
    local loop = H.writefile(dir .. "/loop.lua", TOP_LOOP)
    local t0 = H.now()
    ok, code, out = H.run(("timeout 20 %s check %s --start-timeout 0.5 2>&1"):format(H.POOL, loop))
    assert.is_false(ok)
    assert.equals(1, code, out)
    assert.matches(":2: still starting after %-%-start%-timeout 0%.5 s", out)
    assert.is_true(H.now() - t0 < 5)
  end)
end)

describe("a reload whose new code", function()
  it("loops, is stuck in C, calls os.exit, requires a missing module, returns no function or runs out of memory: refused in one line naming the file (and line); the old workers serve; the status says why; a good reload then works", function()
    local dir = H.tmpdir()
    local app = dir .. "/app.lua"
    H.writefile(app, GOOD)
    local p = H.start_pool { script = app, workers = 2, args = { "g1" },
                             extra = { "--start-timeout", "1", "--max-memory", "16" } }
    H.defer(finally, function() p:stop() end)
    local old = p:worker_pids()
    local function reload()
      local t0 = H.now()
      local ok, code, out = H.run(("timeout 30 %s reload --control %s 2>&1"):format(H.POOL, q(p.control)))
      return ok, code, out, H.now() - t0
    end
    for _, c in ipairs {
      { TOP_LOOP, "/app%.lua:2: still starting after %-%-start%-timeout 1 s" },
      { INIT_LOOP, "init failed: /.*/app%.lua:1: still starting after %-%-start%-timeout 1 s" },
      { INIT_C, "generation %d+ was not ready within 1 s %(%-%-start%-timeout%)" },
      { TOP_EXIT, "/app%.lua:1: os%.exit%(%) called while the worker starts" },
      { INIT_EXIT, "init failed: /.*/app%.lua:1: os%.exit%(%) called while the worker starts" },
      { "require 'no_such_module_h68'\n", "/app%.lua:1: module 'no_such_module_h68' not found\n$" },
      { "return 42\n", "/app%.lua must return a function%(conn%) or a table" },
      { TOP_HOG, "/app%.lua: not enough memory in its top level %(%-%-max%-memory 16 MB%)" },
      { INIT_HOG, "init failed: /.*/app%.lua: not enough memory in init %(%-%-max%-memory 16 MB%)" },
    } do
      H.writefile(app, c[1])
      local ok, code, out, took = reload()
      assert.is_false(ok, out)
      assert.equals(1, code, out)
      assert.matches("^pool: reload refused, keeping the running workers: .*" .. c[2], out)
      assert.equals(1, #H.lines(out), out)
      assert.is_true(took < 6, ("took %.1f s"):format(took))
      -- the old generation serves on, same processes
      assert.matches("g1", H.http_get(p.addr, "/") or "")
      assert.same(old, p:worker_pids())
      local st = assert(p:status())
      assert.equals(1, st.generation)
      -- the status says why (JSON and text), with the time
      local sp = c[2]:gsub("\n%$$", "")
      assert.matches("^%d+%-%d+%-%d+T[%d:]+Z: .*" .. sp, st.reload_refused)
      local _, _, text = H.run(("%s status --control %s"):format(H.POOL, q(p.control)))
      assert.matches("\nlast reload refused %(%d+%-.*" .. sp, text)
    end
    H.writefile(app, GOOD)
    local ok, _, out = reload()
    assert.is_true(ok, out)
    assert.matches("generation 2 serving", out)
    assert.is_nil(assert(p:status()).reload_refused)
    assert.matches("g1", H.http_get(p.addr, "/") or "")
    assert.equals(0, p:stop())
    none_left(app)
  end)
end)

describe("the user's process limit (RLIMIT_NPROC)", function()
  it("refusing a worker's fork at start: one line naming it, exit 1, no crash, no worker left", function()
    if not H.have("setpriv") or H.run("test $(id -u) = 0") == false then
      pending("needs root and setpriv")
      return
    end
    -- An unused uid: the limit counts only this test's processes (the
    -- master and 2 workers fit in 3; the third fork fails).
    local dir = H.tmpdir()
    sh("chmod 755 " .. q(dir))
    local rp = io.popen("LD_PRELOAD= realpath " .. q(H.POOL))
    local pool = rp:read("l")
    rp:close()
    local ok, code, out = H.run(("bash -c %s 2>&1"):format(q(("cd %s && ulimit -u 3 && exec timeout 20 setpriv --reuid=64123 --regid=64123 --clear-groups %s run --listen 127.0.0.1:0 --workers 4 --no-control")
      :format(q(dir), q(pool)))))
    assert.is_false(ok)
    assert.equals(1, code, out)
    local lines = H.lines(out)
    assert.equals("pool: cannot start worker 3: Resource temporarily unavailable (too many processes for this user? RLIMIT_NPROC: ulimit -u, systemd LimitNPROC=)",
      lines[#lines], out)
    assert.is_nil(out:find("Segmentation", 1, true))
    H.wait_until(function()
      local p = io.popen("LD_PRELOAD= pgrep -u 64123 2>/dev/null")
      local s = p:read("a")
      p:close()
      return s == ""
    end, 5, "no process of uid 64123")
  end)
end)

describe("the user's process limit reached while the pool serves", function()
  it("a worker's restart the kernel refuses backs off (one line per try), the status says why, and it starts once it can", function()
    if not H.have("setpriv") or H.run("test $(id -u) = 0") == false then
      pending("needs root and setpriv")
      return
    end
    local uid = "64124"     -- unused: the limit counts only this test's processes
    local dir = H.tmpdir()
    sh("chmod 777 " .. q(dir))  -- its control socket and lock
    local rp = io.popen("LD_PRELOAD= realpath " .. q(H.POOL))
    local pool = rp:read("l")
    rp:close()
    local as = ("setpriv --reuid=%s --regid=%s --clear-groups "):format(uid, uid)
    local p = { dir = dir, log_path = dir .. "/pool.log", exit_path = dir .. "/exit",
                control = dir .. "/control.sock" }
    local cmd = ("ulimit -u 3 && exec %s%s run --listen 127.0.0.1:0 --workers 2 --control %s")
      :format(as, q(pool), q(p.control))
    sh(("(bash -c %s; echo $? > %s) </dev/null >%s/stdout 2>%s &"):format(
      q(cmd), q(p.exit_path), q(dir), q(p.log_path)))
    setmetatable(p, { __index = H.Pool })
    p.pid = H.wait_until(function() return tonumber(p:log():match("pool%[(%d+)%]")) end, 10, "the pool's log")
    p.addr = H.wait_until(function() return p:log():match("listening on (%S+)") end, 10, "listening")
    H.defer(finally, function() if not p:exited() then p:kill("KILL") end end)
    p:wait_ready(2)
    -- a third process of that user: the master may not fork again
    local sp = io.popen("LD_PRELOAD= " .. as .. "sh -c 'echo $$; exec sleep 30' </dev/null 2>/dev/null")
    local sleeper = tonumber(sp:read("l"))
    local sleeper_gone = false
    H.defer(finally, function()
      if not sleeper_gone then sh("kill -KILL " .. sleeper) end
      sp:close()
    end)
    local victim = p:worker_pids()[2]
    sh("kill -KILL " .. victim)
    local st = H.wait_status(p, function(s) return s.crash_streak >= 4 and s end, 15, "four refused forks")
    assert.matches("^worker %d cannot be forked: Resource temporarily unavailable %(too many processes for this user%? RLIMIT_NPROC%)$", st.crash)
    -- one error line per try, not one per tick
    local tries = H.count(p:log(), "fork() failed while spawning worker")
    assert.is_true(tries <= st.crash_streak + 1, ("%d lines for a streak of %d"):format(tries, st.crash_streak))
    assert.matches("hello", H.http_get(p.addr, "/") or "")
    sh("kill -KILL " .. sleeper)
    sleeper_gone = true
    H.wait_status(p, function(s)
      local up = 0
      for _, w in ipairs(s.workers) do up = up + (w.state ~= "starting" and w.pid > 0 and 1 or 0) end
      return up == 2
    end, 15, "the worker forked again")
    assert.equals(0, p:stop())
  end)
end)

describe("a script, config or policy that is no regular file", function()
  it("(a FIFO, /dev/zero, a directory) is refused in one line at start and by pool check, never read", function()
    local dir = H.tmpdir()
    local fifo = dir .. "/app.lua"
    assert(sh("mkfifo " .. q(fifo)))
    for _, c in ipairs {
      { "run " .. q(fifo) .. " --listen 127.0.0.1:0 --no-control", 2, "script '" .. fifo .. "' (it is a fifo" },
      { "check " .. q(fifo), 2, "script '" .. fifo .. "' (it is a fifo" },
      { "run /dev/zero --listen 127.0.0.1:0 --no-control", 2, "script '/dev/zero' (it is a character device" },
      { "run " .. q(dir) .. " --listen 127.0.0.1:0 --no-control", 2, "script '" .. dir .. "' (it is a directory" },
      { "run --config " .. q(fifo), 1, "config file '" .. fifo .. "' (it is a fifo" },
      { "run --policy " .. q(fifo) .. " --listen 127.0.0.1:0 --no-control", 2, "policy file '" .. fifo .. "' (it is a fifo" },
    } do
      local ok, code, out = H.run(("timeout 10 %s %s 2>&1"):format(H.POOL, c[1]))
      assert.is_false(ok)
      assert.equals(c[2], code, c[1] .. ": " .. out)
      assert.equals("pool: cannot read " .. c[3] .. ", not a regular file)\n", out)
    end
  end)

  it("replacing the script or the config file at a reload: refused at once, the master serves on", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", GOOD)
    local cf = H.writefile(dir .. "/c.lua", ("return { handler = %q, args = { 'g1' } }"):format(app))
    local p = H.start_pool { script = false, workers = 1, extra = { "--config", cf } }
    H.defer(finally, function() p:stop() end)
    local function reload()
      local t0 = H.now()
      local ok, code, out = H.run(("timeout 20 %s reload --control %s 2>&1"):format(H.POOL, q(p.control)))
      assert.is_false(ok, out)
      assert.equals(1, code, out)
      assert.is_true(H.now() - t0 < 5)
      assert.matches("g1", H.http_get(p.addr, "/") or "")
      return out
    end
    os.remove(app)
    assert(sh("mkfifo " .. q(app)))
    assert.equals(("pool: reload refused, keeping the running workers and configuration: cannot read script '%s' (it is a fifo, not a regular file)\n")
      :format(app), reload())
    os.remove(app)
    assert(sh("ln -s /dev/zero " .. q(app)))
    assert.matches("cannot read script '" .. literal(app) .. "' %(it is a character device, not a regular file%)\n$", reload())
    os.remove(cf)
    assert(sh("mkfifo " .. q(cf)))
    assert.equals(("pool: reload refused, keeping the running workers and configuration: cannot read config file '%s' (it is a fifo, not a regular file)\n")
      :format(cf), reload())
    assert.equals(0, p:stop())
  end)

  it("replacing the script at a reload without --config: the master reads no FIFO", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", GOOD)
    local p = H.start_pool { script = app, workers = 1, args = { "g1" } }
    H.defer(finally, function() p:stop() end)
    os.remove(app)
    assert(sh("mkfifo " .. q(app)))
    local t0 = H.now()
    local ok, code, out = H.run(("timeout 20 %s reload --control %s 2>&1"):format(H.POOL, q(p.control)))
    assert.is_false(ok, out)
    assert.equals(1, code, out)
    assert.equals(("pool: reload refused, keeping the running workers: cannot read %s (not a regular file)\n"):format(app), out)
    assert.is_true(H.now() - t0 < 5)
    assert.matches("g1", H.http_get(p.addr, "/") or "")
    assert.equals(0, p:stop())
  end)
end)

describe("--metrics unix:PATH", function()
  it("is removed at stop, replaced when stale (a killed pool's), never taken from a live pool or a file", function()
    local dir = H.tmpdir()
    local m = dir .. "/m.sock"
    local function healthz()
      local ok, _, out = H.run(("curl -s -m 5 --unix-socket %s http://x/healthz"):format(q(m)))
      return ok and out or nil
    end
    local p = H.start_pool { workers = 1, extra = { "--metrics", "unix:" .. m } }
    H.defer(finally, function() p:stop("KILL") end)
    assert.matches("^ok", healthz())
    -- a second pool on the same path: refused, the first keeps it
    local ok, code, out = H.run(("%s run --listen 127.0.0.1:0 --no-control --metrics unix:%s 2>&1"):format(H.POOL, q(m)))
    assert.is_false(ok)
    assert.equals(1, code)
    assert.equals(("pool: cannot listen on unix:%s for metrics: another pool is running there\n"):format(m), out)
    assert.matches("^ok", healthz())
    assert.equals(0, p:stop())
    assert.is_falsy(sh("test -e " .. q(m)))   -- removed
    -- killed: the file stays; the next pool replaces it
    local p2 = H.start_pool { workers = 1, extra = { "--metrics", "unix:" .. m } }
    H.defer(finally, function() p2:stop("KILL") end)
    p2:kill("KILL")
    p2:wait_exit(10)
    assert.is_truthy(sh("test -S " .. q(m)))   -- left behind
    local p3 = H.start_pool { workers = 1, extra = { "--metrics", "unix:" .. m } }
    H.defer(finally, function() p3:stop() end)
    assert.is_nil(p3:exited())
    assert.matches("^ok", healthz())
    assert.equals(0, p3:stop())
    -- a regular file there, as --metrics, --control and --listen path: kept, one line each
    H.writefile(m, "data")
    for _, c in ipairs {
      { "--listen 127.0.0.1:0 --no-control --metrics unix:" .. q(m), ("cannot listen on unix:%s for metrics: "):format(m) },
      { "--listen 127.0.0.1:0 --control " .. q(m), ("control socket %s: "):format(m) },
      { "--listen unix:" .. q(m) .. " --no-control", ("cannot listen on unix:%s: "):format(m) },
    } do
      ok, code, out = H.run(("%s run %s 2>&1"):format(H.POOL, c[1]))
      assert.is_false(ok)
      assert.equals(1, code, out)
      assert.equals("pool: " .. c[2] .. "the path exists and is not a socket (remove it or choose another path)\n", out)
      assert.equals("data", H.readfile(m))
    end
  end)
end)

describe("bad values", function()
  it("a config file's args holding a table, --no-control with --control, a listen address too long: one line naming them", function()
    local dir = H.tmpdir()
    local cf = H.writefile(dir .. "/c.lua", "return { args = { 'a', {} } }")
    local ok, code, out = H.run(("%s run --config %s --no-control 2>&1"):format(H.POOL, cf))
    assert.is_false(ok)
    assert.equals(1, code, out)
    assert.equals(("pool: %s: setting 'args' must be a list of strings (item 2 is a table)\n"):format(cf), out)
    ok, code, out = H.run(("%s run --listen 127.0.0.1:0 --no-control --control %s 2>&1"):format(H.POOL, q(dir .. "/c.sock")))
    assert.is_false(ok)
    assert.equals(2, code, out)
    assert.equals(("pool: --no-control and --control %s contradict each other: give one\n"):format(dir .. "/c.sock"), out)
    local long = "unix:" .. dir .. "/" .. ("x"):rep(140)
    ok, code, out = H.run(("%s run --listen %s --no-control 2>&1"):format(H.POOL, long))
    assert.is_false(ok)
    assert.equals(1, #H.lines(out), out)
    assert.matches("^pool: listen address too long: 'unix:/tmp/", out)
    assert.matches("is %d+ bytes %(at most 127; a unix socket path at most 107%)\n$", out)
  end)
end)
