-- tests/47-ondemand_spec.lua: workers on demand (--workers MIN-MAX,
-- --worker-idle-timeout), HUP and `pool reload` reading --config again,
-- and unix listeners' mode= and owner=. Every test starts the real
-- build/pool and talks to it over real sockets; states are polled with
-- deadlines, nothing is timed.
local H = require "helpers"
local fdpool = require "fdpool"

local FIX = "tests/fixtures/"
local q = H.quote
local ASAN = H.BUILD ~= "build"

-- Processes in the table (slots whose state is not "none").
local function live(st)
  local n = 0
  for _, w in ipairs(st.workers) do
    if w.state ~= "none" then n = n + 1 end
  end
  return n
end

-- Start `pool run SCRIPT --workers RANGE ...`; waits for MIN ready.
local function start(script, range, min, extra, args)
  local p = H.start_pool { script = script, workers = range, concurrency = 1,
    extra = extra, args = args, ready = false }
  assert(p.addr, "the pool did not start:\n" .. p:log())
  p:wait_ready(min)
  return p
end

-- Open n connections at once, send each a line, then read every answer.
local function burst(addr, n, line)
  local fds, out = {}, {}
  for i = 1, n do
    fds[i] = assert(fdpool.connect(addr, 20))
    assert(fds[i]:write((line or tostring(i)) .. "\n"))
  end
  for i = 1, n do
    out[i] = fds[i]:read("a") or ""
    fds[i]:close()
  end
  return out
end

-- The on-demand starts the master logged ("workers: spawned: K ..."):
-- the first of a wait is 1, each next at most twice the one before
-- (the rate falls back to 1 after a tick without a wait), never above 32.
local function check_spawn_rate(log)
  local prev, list = nil, {}
  for k in log:gmatch("workers: spawned: (%d+)") do
    k = tonumber(k)
    list[#list + 1] = k
    assert.is_true(k <= 32, "more than 32 starts in one tick: " .. k)
    assert.is_true(k <= (prev and math.max(1, 2 * prev) or 1),
      "spawned faster than the doubling rate: " .. table.concat(list, ","))
    prev = k
  end
  return list
end

describe("workers on demand", function()
  it("serves a burst of blocking requests in parallel on --workers 1-8 --concurrency 1, then shrinks back to 1 when idle", function()
    local bar = H.tmpdir()
    local p = start(FIX .. "od_barrier.lua", "1-8", 1,
      { "--worker-idle-timeout", "0.5", "--metrics", "127.0.0.1:0" }, { bar, "8" })
    H.defer(finally, function() p:stop() end)
    -- /healthz counts running workers against the range, not the slots:
    -- an idle pool on its minimum is healthy, not "1/8".
    local metrics = assert(p:log():match("metrics on http://(%S+)/metrics"))
    assert.matches("^HTTP/1.1 200 OK\r\n.*\r\n\r\nok 1 workers %(on demand, 1%-8%)\n$",
      H.http_get(metrics, "/healthz"))
    local st = assert(p:status())
    assert.are.equal(1, st.workers_min)
    assert.are.equal(8, st.workers_max)
    assert.are.equal(8, #st.workers)
    assert.are.equal(1, live(st))
    for i = 2, 8 do
      assert.are.equal("none", st.workers[i].state)
      assert.are.equal(-1, st.workers[i].pid)
    end
    -- Each handler waits until all 8 are in handlers at once: with one
    -- connection per worker, only 8 processes serving together open it.
    local out = burst(p.addr, 8)
    local pids = {}
    for i = 1, 8 do
      local pid = out[i]:match("^ok (%d+)\n$")
      assert(pid, "connection " .. i .. " got " .. ("%q"):format(out[i]))
      pids[pid] = true
    end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.are.equal(8, n)
    st = assert(p:status())
    assert.are.equal(7, st.spawned)
    assert.are.equal(0, st.fallbacks)       -- least_conn skipped "none" slots
    check_spawn_rate(p:log())
    -- Idle for 0.5 s: back to one worker, the others retired gracefully.
    st = H.wait_status(p, function(s) return live(s) == 1 and #s.others == 0 end,
      20, "the pool to shrink back to 1 worker")
    assert.are.equal(7, st.retired_idle)
    assert.matches("^retired idle: slot %d+$", st.scaled)
    assert.is_true(H.count(p:log(), "retires: idle for 0.5 s (on demand)") == 7)
    local text = select(3, H.run(H.POOL .. " status --control " .. q(p.control)))
    assert.matches("workers 1%-8  spawned 7  retired idle 7  last change: retired idle: slot %d", text)
    local _, _, om = H.run(H.POOL .. " status --format openmetrics --control " .. q(p.control))
    assert.matches("\nfdpool_workers_min 1\n", om)
    assert.matches("\nfdpool_workers_max 8\n", om)
    assert.matches("\nfdpool_workers_spawned_total 7\n", om)
    assert.matches("\nfdpool_workers_retired_idle_total 7\n", om)
    assert.matches("\r\n\r\nok 1 workers %(on demand, 1%-8%)\n$", H.http_get(metrics, "/healthz"))
    assert.are.equal(0, p:stop())
  end)

  it("lets a Lua policy see every slot, those with no process as state none with pid -1", function()
    local p = start(FIX .. "od_reply.lua", "1-4", 1,
      { "--policy", FIX .. "od_policy.lua" }, { "x" })
    H.defer(finally, function() p:stop() end)
    assert.matches("^x %d+\n$", H.request(p.addr, ""))
    H.wait_until(function() return p:log():find("SAW ", 1, true) end, 5, "the policy's report")
    assert.truthy(p:log():find("SAW free,none(pid -1),none(pid -1),none(pid -1)", 1, true),
      p:log())
    -- Later picks keep the contract: no more errors, the pool serves.
    for _ = 1, 5 do assert.matches("^x %d+\n$", H.request(p.addr, "")) end
    local st = assert(p:status())
    assert.are.equal(1, st.fallbacks)       -- the one deliberate report
    assert.are.equal(0, p:stop())
  end)

  it("moves MIN with pool scale, TTIN and TTOU, clamped to MAX", function()
    local p = start(FIX .. "od_reply.lua", "1-3", 1, { "--worker-idle-timeout", "0.3" }, { "s" })
    H.defer(finally, function() p:stop() end)
    local ok, _, out = H.run(H.POOL .. " scale 2 --control " .. q(p.control))
    assert.is_true(ok, out)
    assert.matches("OK workers 2%-3 on demand", out)
    H.wait_status(p, function(s) return s.workers_min == 2 and live(s) == 2 end, 10, "min 2")
    ok, _, out = H.run(H.POOL .. " scale 9 --control " .. q(p.control))
    assert.is_true(ok, out)
    assert.matches("OK workers 3%-3 on demand %(9 is above the maximum", out)
    H.wait_status(p, function(s) return s.workers_min == 3 and live(s) == 3 end, 10, "min 3")
    -- two identical pending signals merge into one: wait for the first to land
    p:kill("TTOU")
    H.wait_status(p, function(s) return s.workers_min == 2 end, 10, "first TTOU: min 2")
    p:kill("TTOU")
    local st = H.wait_status(p, function(s) return s.workers_min == 1 and live(s) == 1 end, 20,
      "TTOU twice: min 1 and the idle workers retired")
    assert.are.equal(3, st.workers_max)
    p:kill("TTOU")          -- at 1 already: refused, logged
    H.wait_until(function() return p:log():find("SIGTTOU: keeping at least one worker", 1, true) end,
      5, "the refusal")
    p:kill("TTIN")
    H.wait_status(p, function(s) return s.workers_min == 2 and live(s) == 2 end, 10, "TTIN: min 2")
    assert.are.equal(0, p:stop())
  end)

  it("refuses bad ranges with one line naming the flag (exit 2)", function()
    for _, bad in ipairs { "5-2", "0-0", "-3", "2-x", "1-257", "0", "1-", "x" } do
      local code, out, err = H.run_pool("run --workers " .. q(bad) .. " --listen 127.0.0.1:0 --no-control")
      assert.are.equal(2, code, bad .. ": " .. err)
      assert.are.equal("", out)
      assert.matches("^pool: %-%-workers must be [^\n]*'" .. bad:gsub("%p", "%%%0") .. "'%)\n$", err)
    end
    local code, _, err = H.run_pool("run --workers 1-4 --worker-idle-timeout 0 --listen 127.0.0.1:0 --no-control")
    assert.are.equal(2, code)
    assert.matches("^pool: %-%-worker%-idle%-timeout must be a number of seconds above 0", err)
    local dir = H.tmpdir()
    H.writefile(dir .. "/c.lua", "return { workers = { min = 3, max = 2 } }")
    code, _, err = H.run_pool("run --config " .. q(dir .. "/c.lua") .. " --listen 127.0.0.1:0 --no-control")
    assert.are.equal(1, code)               -- a bad file, as its other settings
    assert.matches("^pool: [^\n]*/c%.lua: setting 'workers' must be N or MIN%-MAX with 1 <= MIN <= MAX "
      .. "<= 256 %(got '{min = 3, max = 2}'%)\n$", err)
    -- fdpool.pool{} takes the same forms, and raises on bad ones.
    local okp, perr = pcall(fdpool.pool, { handler = function() end, workers = "4-2",
      listen = "127.0.0.1:0" })
    assert.is_false(okp)
    assert.matches("bad option 'workers'", perr)
    local pool = assert(fdpool.pool { handler = function() end, workers = { min = 1, max = 3 },
      listen = "127.0.0.1:0", control = false })
    pool:close()
  end)

  it("keeps to MAX and the spawn rate under a burst of connections", function()
    local n = ASAN and 200 or 2000
    local p = start(FIX .. "pool_slow.lua", "1-4", 1, nil, { "0.001" })
    H.defer(finally, function() p:stop() end)
    local served = 0
    for _ = 1, n // 250 do
      for _, r in ipairs(burst(p.addr, 250, "b")) do
        if r:match("^%d b\n$") then served = served + 1 end
      end
    end
    assert.are.equal(n // 250 * 250, served)
    local st = assert(p:status())
    assert.are.equal(4, #st.workers)
    assert.is_true(st.spawned <= 3, "spawned " .. st.spawned)  -- nothing retired: 10 s idle
    check_spawn_rate(p:log())
    for id in p:log():gmatch("worker (%d+) started") do
      assert.is_true(tonumber(id) <= 4)
    end
    assert.are.same({}, H.unexpected_errors(p:log()))
    assert.are.equal(0, p:stop())
  end)

  it("survives a worker killed during the scale-up and shrinks back", function()
    local p = start(FIX .. "pool_slow.lua", "1-4", 1, { "--worker-idle-timeout", "0.5" }, { "1" })
    H.defer(finally, function() p:stop() end)
    local fds = {}
    for i = 1, 8 do
      fds[i] = assert(fdpool.connect(p.addr, 20))
      fds[i]:write("k" .. i .. "\n")
    end
    local st = H.wait_status(p, function(s) return live(s) >= 2 and s.workers[2].pid > 0 end,
      10, "a second worker")
    H.run("kill -KILL " .. st.workers[2].pid)
    local answered = 0
    for i = 1, 8 do
      local r = fds[i]:read("a") or ""
      if r:match("^%d+ k%d\n$") then answered = answered + 1 end
      fds[i]:close()
    end
    assert.is_true(answered >= 7, "answered " .. answered)   -- the killed one's at most
    assert.truthy(p:log():find("killed by SIGKILL", 1, true))
    H.wait_status(p, function(s) return live(s) == 1 and #s.others == 0 end, 20,
      "the pool to shrink back to 1 worker")
    assert.matches("^%d+ again\n$", H.request(p.addr, "again\n"))
    assert.are.equal(0, p:stop())
  end)

  it("reloads while scaled up: each running slot gets a new worker, empty slots stay empty", function()
    local bar = H.tmpdir()
    local p = start(FIX .. "od_barrier.lua", "1-4", 1, { "--worker-idle-timeout", "60" }, { bar, "3" })
    H.defer(finally, function() p:stop() end)
    for _, r in ipairs(burst(p.addr, 3)) do assert.matches("^ok %d+\n$", r) end
    local st = assert(p:status())
    assert.are.equal(3, live(st))
    local ok, _, out = H.run(H.POOL .. " reload --control " .. q(p.control))
    assert.is_true(ok, out)
    assert.matches("OK reloaded: generation 2 serving %(3 worker%(s%)%)", out)
    st = H.wait_status(p, function(s) return #s.others == 0 end, 10, "the old generation gone")
    assert.are.equal(3, live(st))
    for i = 1, 3 do assert.are.equal(2, st.workers[i].generation) end
    assert.are.equal("none", st.workers[4].state)
    assert.are.equal(0, p:stop())
  end)
end)

-- Start `pool run ARGS...` (a list) with a control socket in a temp
-- dir, without H.start_pool's --workers (a config file's would lose to it).
local function start_args(args)
  local dir = H.tmpdir()
  local p = { dir = dir, log_path = dir .. "/pool.log", exit_path = dir .. "/exit",
              control = dir .. "/control.sock" }
  local cmd = { H.POOL, "run" }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  cmd[#cmd + 1] = "--control"; cmd[#cmd + 1] = p.control
  for i, c in ipairs(cmd) do cmd[i] = q(c) end
  local env = ASAN and "ASAN_OPTIONS=detect_leaks=1 " or ""
  os.execute(("(%s%s; echo $? > %s) </dev/null >%s/stdout 2>%s &"):format(
    env, table.concat(cmd, " "), p.exit_path, dir, p.log_path))
  setmetatable(p, { __index = H.Pool })
  p.pid = H.wait_until(function()
    return tonumber(p:log():match("pool%[(%d+)%]")) or (p:exited() and "exited")
  end, 10, "the pool's first log line")
  assert(type(p.pid) == "number", p:log())
  p.addr = H.wait_until(function()
    return p:log():match("listening on (%S+)") or (p:exited() and "exited")
  end, 10, "the pool to listen")
  assert(p.addr ~= "exited", p:log())
  return p
end

describe("pool status lists the processes outside the table", function()
  it("shows an old worker that still finishes a connection after a reload as retiring", function()
    local bar = H.tmpdir()
    local p = H.start_pool { script = FIX .. "od_barrier.lua", workers = 1, concurrency = 1,
      args = { bar, "2" } }
    H.defer(finally, function() p:stop() end)
    local old = p:worker_pids()[1]
    local fd = assert(fdpool.connect(p.addr, 20))
    fd:write("held\n")
    H.wait_status(p, function(s) return s.workers[1].active == 1 end, 10, "the connection in the worker")
    local ok, _, out = H.run(H.POOL .. " reload --control " .. q(p.control))
    assert.is_true(ok, out)
    local st = assert(p:status())
    assert.are.equal(1, #st.others)
    assert.are.same({ id = 1, pid = old, generation = 1, state = "exiting", role = "retiring",
      active = 1 }, st.others[1])
    local _, _, text = H.run(H.POOL .. " status --control " .. q(p.control))
    assert.matches("\nretiring: slot 1 pid " .. old .. " generation 1 exiting active 1\n", text)
    H.writefile(bar .. "/release", "")       -- the barrier opens: it finishes
    assert.are.equal("ok " .. old .. "\n", fd:read("a"))
    fd:close()
    H.wait_status(p, function(s) return #s.others == 0 end, 10, "the old worker gone")
    assert.are.equal(0, p:stop())
  end)
end)

describe("reload reads --config again", function()
  local handler = "handler = " .. ("%q"):format(os.getenv("PWD") .. "/" .. FIX .. "od_reply.lua")

  -- A config file in a temp dir serving on a unix socket there.
  local function setup()
    local dir = H.tmpdir()
    local path, sock = dir .. "/pool.conf.lua", dir .. "/s.sock"
    local function conf(body)
      H.writefile(path, ("return { %s, listen = %q, %s }"):format(handler, "unix:" .. sock, body))
    end
    return path, sock, conf
  end

  local function reload(p)
    return H.run(H.POOL .. " reload --control " .. q(p.control))
  end

  it("applies a changed handler argument and worker count on HUP, then a range on pool reload", function()
    local path, sock, conf = setup()
    conf("args = { 'one' }, workers = 1")
    local p = start_args { "--config", path }
    H.defer(finally, function() p:stop() end)
    p:wait_ready(1)
    assert.matches("^one %d+\n$", H.request("unix:" .. sock, ""))
    conf("args = { 'two' }, workers = 3, timeout = 5, io_timeout = 7, max_requests = 100")
    p:kill("HUP")
    local st = H.wait_status(p, function(s)
      return s.generation == 2 and #s.workers == 3 and live(s) == 3 and #s.others == 0
    end, 15, "generation 2 with 3 workers")
    for _, w in ipairs(st.workers) do
      H.wait_until(function()
        local s = p:status()
        return s and s.workers[w.id].state == "free"
      end, 10, "worker " .. w.id .. " ready")
    end
    for _ = 1, 6 do assert.matches("^two %d+\n$", H.request("unix:" .. sock, "")) end
    assert.truthy(p:log():find("SIGHUP: reloading", 1, true))
    assert.truthy(p:log():find("reload: configuration read again", 1, true))
    -- On demand from a reload: the table becomes MAX slots.
    conf("args = { 'three' }, workers = { min = 1, max = 5 }, worker_idle_timeout = 0.3")
    local ok, _, out = reload(p)
    assert.is_true(ok, out)
    assert.matches("OK reloaded: generation 3", out)
    st = H.wait_status(p, function(s)
      return s.workers_max == 5 and s.workers_min == 1 and live(s) == 1 and #s.others == 0
    end, 20, "workers 1-5, idle ones retired")
    assert.are.equal(5, #st.workers)
    assert.matches("^three %d+\n$", H.request("unix:" .. sock, ""))
    assert.are.equal(0, p:stop())
  end)

  it("refuses a listen change (pointing to pool upgrade) and a file that does not parse; the old configuration serves on", function()
    local path, sock, conf = setup()
    conf("args = { 'old' }, workers = 2")
    local p = start_args { "--config", path }
    H.defer(finally, function() p:stop() end)
    p:wait_ready(2)
    H.writefile(path, ("return { %s, listen = %q, args = { 'new' } }"):format(handler,
      "unix:" .. sock .. ".2"))
    local ok, code, out = reload(p)
    assert.is_false(ok)
    assert.are.equal(1, code)
    assert.matches("^pool: reload refused, keeping the running workers and configuration: the listen "
      .. "addresses changed %(from 'unix:[^']+' to 'unix:[^']+%.2'%): new listeners need `pool "
      .. "upgrade` %(or a restart%)\n$", out)
    assert.matches("^old %d+\n$", H.request("unix:" .. sock, ""))
    H.writefile(path, "return { workers = ")
    ok, code, out = reload(p)
    assert.is_false(ok)
    assert.are.equal(1, code)
    assert.matches("^pool: reload refused, keeping the running workers and configuration: [^\n]*"
      .. "pool%.conf%.lua:1: [^\n]*\n$", out)
    -- A config that loads but whose handler does not compile: refused too.
    local bad = H.writefile(H.tmpdir() .. "/bad.lua", "return function(conn")
    H.writefile(path, ("return { handler = %q, listen = %q }"):format(bad, "unix:" .. sock))
    ok, code, out = reload(p)
    assert.is_false(ok)
    assert.matches("reload refused[^\n]*bad%.lua:1:", out)
    -- SIGHUP with a broken file: logged, nothing changes.
    H.writefile(path, "return 42")
    p:kill("HUP")
    H.wait_until(function() return p:log():find("must return a table of settings", 1, true) end,
      5, "the refusal in the log")
    local st = assert(p:status())
    assert.are.equal(1, st.generation)
    assert.matches("^old %d+\n$", H.request("unix:" .. sock, ""))
    -- Regression (was a bug, now fixed): a file that loops hung the
    -- master (nothing dispatched, ever), one that calls os.exit ended the
    -- running pool. Both are refused in one line; the pool serves on.
    for _, c in ipairs { { "while true do end", "still running after 1 s %(an endless loop%?%)" },
                         { "os.exit(0)", "os%.exit%(%) in a config file" } } do
      H.writefile(path, c[1])
      ok, code, out = reload(p)
      assert.is_false(ok)
      assert.are.equal(1, code)
      assert.matches("^pool: reload refused, keeping the running workers and configuration: [^\n]*"
        .. "pool%.conf%.lua:1: " .. c[2] .. "\n$", out)
      assert.matches("^old %d+\n$", H.request("unix:" .. sock, ""))
    end
    -- A new generation that cannot start (its init raises): refused, the
    -- old settings back (a later reload with a good file still works).
    local boom = H.writefile(H.tmpdir() .. "/boom.lua",
      "return { init = function() error('init says no') end, handle = function() end }")
    H.writefile(path, ("return { handler = %q, listen = %q, workers = 4 }"):format(boom, "unix:" .. sock))
    ok, _, out = reload(p)
    assert.is_false(ok)
    assert.matches("init says no", out)
    st = assert(p:status())
    assert.are.equal(2, #st.workers)
    assert.matches("^old %d+\n$", H.request("unix:" .. sock, ""))
    conf("args = { 'fixed' }, workers = 2")
    ok, _, out = reload(p)
    assert.is_true(ok, out)
    assert.matches("^fixed %d+\n$", H.request("unix:" .. sock, ""))
    assert.are.equal(0, p:stop())
  end)
end)

describe("unix listener mode= and owner=", function()
  local root = select(3, H.run("id -u")):match("^0") ~= nil

  -- As user nobody (group nogroup), GET / over the unix socket path.
  local function curl_as_nobody(path)
    return H.run("setpriv --reuid=nobody --regid=nogroup --clear-groups curl -sS -m 5 --unix-socket "
      .. q(path) .. " http://localhost/")
  end

  it("lets another user in with mode=0660 and a group, and nobody without", function()
    assert(root, "this test needs root (it runs a client as user nobody)")
    local dir = H.tmpdir()
    assert(os.execute("chmod 0711 " .. q(dir)))
    local sock = dir .. "/www.sock"
    local p = start_args { "--listen", "unix:" .. sock .. ",mode=0660,owner=root:nogroup",
      "--workers", "1" }
    H.defer(finally, function() p:stop() end)
    p:wait_ready(1)
    local _, _, ls = H.run("stat -c '%A %U %G' " .. q(sock))
    assert.are.equal("srw-rw---- root nogroup\n", ls)
    local ok, _, out = curl_as_nobody(sock)
    assert.is_true(ok, out)
    assert.are.equal("hello\n", out)
    assert.are.equal(0, p:stop())
    -- The same without the options: the umask's mode, root's group.
    local p2 = start_args { "--listen", "unix:" .. sock, "--workers", "1" }
    H.defer(finally, function() p2:stop() end)
    p2:wait_ready(1)
    local code
    ok, code, out = curl_as_nobody(sock)
    assert.is_false(ok)
    assert.are.equal(7, code, out)          -- could not connect (EACCES)
    ok, _, out = H.run("curl -sS -m 5 --unix-socket " .. q(sock) .. " http://localhost/")
    assert.is_true(ok, out)                 -- while its owner can
    assert.are.equal(0, p2:stop())
    -- mode=0660 with the owner's own group (root): nobody is out.
    local p3 = start_args { "--listen", "unix:" .. sock .. ",mode=0660", "--workers", "1" }
    H.defer(finally, function() p3:stop() end)
    p3:wait_ready(1)
    ok = curl_as_nobody(sock)
    assert.is_false(ok)
    assert.are.equal(0, p3:stop())
  end)

  it("refuses a bad mode, an unknown user or group, and the options on TCP, with one line", function()
    local dir = H.tmpdir()
    local cases = {
      { ",mode=999", "mode= must be octal permissions from 0 to 0777 %(got '999'%)" },
      { ",mode=", "mode= must be octal" },
      { ",mode=0660x", "mode= must be octal" },
      { ",owner=no_such_user_h19", "unknown user 'no_such_user_h19' in owner=" },
      { ",owner=nobody:no_such_group_h19", "unknown group 'no_such_group_h19' in owner=" },
      { ",owner=", "owner= needs USER, USER:GROUP or :GROUP" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = H.run_pool("run --no-control --listen " .. q("unix:" .. dir .. "/s.sock" .. c[1]))
      assert.are.equal(1, code, c[1] .. ": " .. err)
      assert.are.equal("", out)
      assert.matches("^pool: bad address '[^\n]*': " .. c[2] .. "[^\n]*\n$", err)
      assert.is_nil(H.readfile(dir .. "/s.sock"))
    end
    local code, _, err = H.run_pool("run --no-control --listen 127.0.0.1:0,mode=0660")
    assert.are.equal(1, code)
    assert.matches("^pool: bad address '127%.0%.0%.1:0,mode=0660': mode= and owner= are for unix:PATH listeners only\n$", err)
  end)
end)

describe("fdpool.sim with workers on demand", function()
  local sim = require "fdpool.sim"

  it("starts workers at the doubling rate while arrivals wait, and retires idle ones", function()
    local arr = {}
    for i = 1, 40 do arr[i] = { at = 0, hold = 1 } end
    local r = sim.run { workers = "1-8", capacity = 1, arrivals = arr, idle_timeout = 2 }
    assert.are.equal(0, r.unserved)
    assert.are.equal(0, r.fallbacks)
    assert.are.equal(8, r.max_live)
    assert.are.equal(7, r.spawned)
    assert.are.equal(7, r.retired)
    local spawns, last_spawn = {}, 0
    for _, e in ipairs(r.events) do
      if e.spawn then
        spawns[#spawns + 1] = e.spawn
        last_spawn = e.at
      else
        -- Every arrival held 1 s and the last started after the spawns:
        -- nobody retires before 2 s of idleness.
        assert.is_true(e.at >= last_spawn + 2, "retired at " .. e.at)
      end
    end
    assert.are.same({ 1, 2, 4 }, spawns)
    local served = 0
    for _, w in ipairs(r.workers) do served = served + w.served end
    assert.are.equal(40, served)
  end)

  it("shows the policy slots without a process as none, and a pick of one falls back", function()
    local seen
    local r = sim.run { workers = { min = 2, max = 4 }, arrivals = { { at = 0, hold = 1 } },
      policy = function(workers)
        seen = {}
        for i = 1, #workers do seen[i] = workers[i].state .. ":" .. workers[i].pid end
        return 4
      end }
    assert.are.same({ "free:0", "free:0", "none:-1", "none:-1" }, seen)
    assert.are.equal(1, r.fallbacks)
    assert.are.equal(1, r.choices[1])        -- first_free chose for it
  end)

  it("keeps a fixed count as before", function()
    local r = sim.run { workers = 2, arrivals = { { at = 0, hold = 1 }, { at = 0, hold = 1 } } }
    assert.is_nil(r.spawned)
    assert.are.equal(1, r.workers[1].served)
    assert.are.equal(1, r.workers[2].served)
  end)
end)
