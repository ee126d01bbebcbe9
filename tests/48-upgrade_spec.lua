-- tests/48-upgrade_spec.lua: pool upgrade (and SIGUSR2): the master
-- re-executes its binary and hands the new master its sockets; under a
-- continuous load no connection fails, a keep-alive connection held
-- across it is answered, the control socket moves to the new master; a
-- new binary that exits at once is refused while the old master serves
-- on; a pool made by fdpool.pool{} refuses; under systemd-socket-activate
-- with a stand-in NOTIFY_SOCKET the new main pid is announced (MAINPID=).
-- Every pool is the real binary; every load is bounded in time.
local H = require "helpers"
local lines, have, free_port, spawn, reap = H.lines, H.have, H.free_port, H.spawn, H.reap
local fdpool = require "fdpool"

local q = H.quote
local APP = "tests/fixtures/eco_app.lua"
local LOAD = "tests/fixtures/up_load.py"
local NOTIFY = "tests/fixtures/eco_notify.py"
local ASAN = H.BUILD ~= "build"

-- Sanitizer reports in a log (the new masters write to the log of the
-- pool the test started, and are not stopped through H.Pool).
local function no_sanitizer_reports(log)
  for _, pat in ipairs { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:" } do
    assert.falsy(log:find(pat, 1, true), log)
  end
end






-- Stop a master that is not our child (a new master outlives the
-- process the test started): TERM, wait for it to go, KILL at worst.
local function stop_pid(pid)
  if not pid or not H.alive(pid) then return end
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  if not pcall(H.wait_until, function() return not H.alive(pid) end, 10) then
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
  end
end

-- `pool upgrade`: exit code, stdout, stderr.
local function upgrade(p)
  return H.run_pool("upgrade --control " .. q(p.control), 90)
end

-- The new master's pid from the answer of `pool upgrade`.
local function new_pid(out)
  return tonumber(out:match("^OK upgraded: master pid (%d+) serving; pid %d+ drains its workers and exits\n$"))
end

-- One HTTP/1.1 request on an open connection; the response's body.
local function roundtrip(fd, path, close)
  assert(fd:write(("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n"):format(path,
    close and "Connection: close\r\n" or "")))
  local status = assert(fd:read("l"))
  local len
  while true do
    local l = assert(fd:read("l"))
    if l == "" or l == "\r" then break end
    len = len or tonumber(l:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)"))
  end
  return status, assert(fd:read(len))
end

-- A continuous load (up_load.py) against addr until stopped; returns an
-- object: progress(), finish() -> ok, fail, text.
local function load(dir, addr, name, threads)
  local host, port = addr:match("^(.*):(%d+)$")
  local out, stop = dir .. "/" .. name .. ".out", dir .. "/" .. name .. ".stop"
  local proc = spawn(dir, name, { "/usr/bin/python3", LOAD, host, port, out, stop, "60",
    tostring(threads) })
  local l = {}
  function l.progress()
    local n = 0
    for v in (H.readfile(out) or ""):gmatch("progress (%d+)") do n = tonumber(v) end
    return n
  end
  function l.wait(n, what) H.wait_until(function() return l.progress() >= n end, 20, what) end
  function l.finish()
    H.writefile(stop, "")
    assert.equals(0, proc:wait_exit(30))
    local text = H.readfile(out)
    local okn, fail = text:match("done ok=(%d+) fail=(%d+)")
    return tonumber(okn), tonumber(fail), text
  end
  function l.kill() H.writefile(stop, ""); reap(proc) end
  return l
end

describe("pool upgrade", function()
  it("hands over under continuous load without a failed connection, twice; a held keep-alive connection is answered", function()
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local p = H.start_pool { script = APP, workers = 2, args = { "A" } }
    local masters = { p.pid }
    defer(function()
      for _, pid in ipairs(masters) do stop_pid(pid) end
    end)
    local keep = assert(fdpool.connect(p.addr, 10))
    defer(function() keep:close() end)
    local status, body = roundtrip(keep, "/first")
    assert.equals("HTTP/1.1 200 OK\r", status)
    assert.matches("^A master=" .. p.pid .. " ", body)

    local ld = load(dir, p.addr, "load", ASAN and 2 or 4)
    defer(ld.kill)
    ld.wait(50, "50 answers before the upgrade")
    for round = 1, 2 do
      local code, out, err = upgrade(p)
      assert.equals(0, code, err)
      local pid = new_pid(out)
      assert.truthy(pid, out)
      masters[#masters + 1] = pid
      -- The control socket is the new master's now.
      local st = H.wait_status(p, function(s) return s.pid == pid end, 10, "the new master's status")
      assert.equals(2, #st.workers)
      assert.equals("running", st.state)
      if round == 1 then
        -- The connection held across the upgrade: the old master's
        -- worker answers its next request.
        status, body = roundtrip(keep, "/second", true)
        assert.equals("HTTP/1.1 200 OK\r", status)
        assert.matches("^A master=" .. p.pid .. " ", body)
        -- The old master drains, then exits 0 (it was the pool we started).
        assert.equals(0, p:wait_exit(30))
      else
        H.wait_until(function() return not H.alive(masters[round]) end, 30, "master " .. round .. " to exit")
      end
      local n = ld.progress()
      ld.wait(n + 50, "50 answers after upgrade " .. round)
    end
    local okn, fail, text = ld.finish()
    assert.equals(0, fail, text)
    assert.truthy(okn > 100, text)
    -- All three masters served some of it.
    for _, pid in ipairs(masters) do
      assert.truthy(text:find("from A master=" .. pid .. " ", 1, true), pid .. "\n" .. text)
    end
    local log = p:log()
    assert.truthy(log:find(("pool[%d]: upgraded: master pid %d serving; pid %d drains its workers and exits")
      :format(masters[1], masters[2], masters[1]), 1, true), log)
    assert.truthy(log:find(("pool[%d]: upgrade: took over 1 listener(s) from master pid %d"):format(
      masters[2], masters[1]), 1, true), log)
    assert.same({}, H.unexpected_errors(log))
    -- The last master still serves and stops as any pool: its socket
    -- files (the control socket) are removed then.
    stop_pid(masters[3])
    assert.is_false(H.run("test -e " .. q(p.control)))
    no_sanitizer_reports(p:log())
  end)

  it("takes over the addresses --config still names, binds new ones, drops the others", function()
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local root = select(3, H.run("pwd")):match("[^\n]+")
    local conf = dir .. "/pool.conf.lua"
    local function config(listen)
      H.writefile(conf, ("return { handler = %q, args = { 'A' }, listen = { %s } }\n"):format(
        root .. "/" .. APP, listen))
    end
    config(("'127.0.0.1:0', 'unix:%s/old.sock'"):format(dir))
    -- (H.start_pool always passes --listen, which would win over the file.)
    local argv = { H.POOL, "run", "--config", conf, "--workers", "1", "--control", dir .. "/control.sock" }
    if ASAN then table.insert(argv, 1, "ASAN_OPTIONS=detect_leaks=1"); table.insert(argv, 1, "env") end
    local p = spawn(dir, "pool", argv, dir .. "/control.sock")
    local masters = { p.pid }
    defer(function() for _, pid in ipairs(masters) do stop_pid(pid) end end)
    p.addr = H.wait_until(function() return p:log():match("listening on (127%S+)") end, 10, "the pool to listen")
    p:wait_ready(1)
    local function via_unix(name)
      local ok, _, out = H.run("curl -s -m 5 --unix-socket " .. q(dir .. "/" .. name) .. " http://x/")
      return ok and out or nil
    end
    assert.matches("^A master=" .. p.pid .. " ", via_unix("old.sock"))
    -- The same TCP address (port 0: the socket already bound), a new
    -- unix socket, and old.sock no more.
    config(("'127.0.0.1:0', 'unix:%s/new.sock'"):format(dir))
    local code, out, err = upgrade(p)
    assert.equals(0, code, err)
    local pid = new_pid(out)
    masters[2] = pid
    assert.matches("^A master=" .. pid .. " ", assert(H.http_get(p.addr, "/")):match("\r\n\r\n(.*)$"))
    assert.matches("^A master=" .. pid .. " ", via_unix("new.sock"))
    assert.equals(0, p:wait_exit(30))
    assert.is_false(H.run("test -e " .. q(dir .. "/old.sock")))
    assert.is_nil(via_unix("old.sock"))
    local st = assert(p:status())
    assert.equals(pid, st.pid)
    assert.same({ p.addr, "unix:" .. dir .. "/new.sock" }, st.listen)
    assert.truthy(p:log():find("upgrade: not taking over unix:" .. dir .. "/old.sock (no longer in the "
      .. "configuration)", 1, true), p:log())
    stop_pid(pid)
    assert.is_false(H.run("test -e " .. q(dir .. "/new.sock")))
    no_sanitizer_reports(p:log())
  end)

  it("refuses a new binary that exits at once or cannot be executed, and serves on", function()
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local bin = dir .. "/pool"
    assert.is_true((H.run(("cp %s %s"):format(q(H.POOL), q(bin)))))
    local saved = H.POOL
    H.POOL = bin
    local ok, p = pcall(H.start_pool, { script = APP, workers = 2, args = { "A" },
      listen = "unix", extra = { "--listen", "127.0.0.1:0" } })
    H.POOL = saved
    assert(ok, p)
    defer(function() p:stop() end)
    local tcp = p:log():match("listening on (127%.0%.0%.1:%d+)")
    assert.truthy(tcp, p:log())
    -- The file is replaced (as a package upgrade does: a new file renamed
    -- over the old one) by a program that exits at once.
    H.writefile(dir .. "/pool.new", "#!/bin/sh\necho 'the new binary is broken' >&2\nexit 1\n")
    assert.is_true((H.run(("chmod +x %s && mv %s %s"):format(q(dir .. "/pool.new"), q(dir .. "/pool.new"), q(bin)))))
    local ld = load(dir, tcp, "load", 2)
    defer(ld.kill)
    ld.wait(20, "20 answers before the upgrade")
    local code, out, err = upgrade(p)
    assert.equals(1, code, out)
    assert.equals("", out)
    assert.equals(("pool: upgrade refused, this master (pid %d) goes on serving: the new master (pid N) "
      .. "exited with code 1 before it was ready\n"):format(p.pid), (err:gsub("master %(pid %d+%) exited",
      "master (pid N) exited")))
    -- Gone: the exec fails.
    os.remove(bin)
    code, out, err = upgrade(p)
    assert.equals(1, code, out)
    assert.matches(("^pool: upgrade refused, this master %%(pid %d%%) goes on serving: the new master "
      .. "%%(pid %%d+%%) cannot start: cannot execute %s %%(No such file or directory%%)\n$"):format(
      p.pid, bin:gsub("%p", "%%%0")), err)
    local n = ld.progress()
    ld.wait(n + 20, "20 answers after the refusals")
    local okn, fail, text = ld.finish()
    assert.equals(0, fail, text)
    assert.truthy(okn > 0)
    -- The same master serves, on both listeners, and its socket files
    -- are still there (the refused masters unlinked nothing).
    local st = assert(p:status())
    assert.equals(p.pid, st.pid)
    assert.equals("running", st.state)
    assert.matches("^A master=" .. p.pid .. " ", select(3, H.run("curl -s -m 5 --unix-socket "
      .. q(p.dir .. "/pool.sock") .. " http://x/")))
    assert.truthy(p:log():find("the new binary is broken", 1, true))
    assert.equals(0, p:stop())
    assert.is_false(H.run("test -e " .. q(p.dir .. "/pool.sock")))
  end)

  it("is refused when the new master's workers cannot start, and says why", function()
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local script = dir .. "/app.lua"
    H.writefile(script, "return function(conn) conn:send('v1\\n') end\n")
    local p = H.start_pool { script = script, workers = 1 }
    defer(function() p:stop() end)
    assert.equals("v1\n", H.request(p.addr, nil, 10))
    -- The script compiles (the new master's command line checks that
    -- much) but its top level raises in every new worker.
    H.writefile(script, "error('broken at start')\nreturn function(conn) end\n")
    local code, out, err = upgrade(p)
    assert.equals(1, code, out)
    assert.equals(("pool: upgrade refused, this master (pid %d) goes on serving: the new master (pid N) "
      .. "cannot start: %s:1: broken at start\n"):format(p.pid, script),
      (err:gsub("master %(pid %d+%) cannot", "master (pid N) cannot")))
    -- The running workers loaded the script's text at start: still v1.
    assert.equals("v1\n", H.request(p.addr, nil, 10))
    local st = assert(p:status())
    assert.equals(p.pid, st.pid)
    assert.equals(0, p:stop())
    assert.is_false(H.run("test -e " .. q(p.control)))
  end)

  -- Regression test (was a bug, now fixed): `pool upgrade` whose old
  -- master died under it (SIGKILL) before it answered sent "upgrade"
  -- again, to the new master now holding the control socket, which
  -- upgraded once more.
  it("is not sent twice when the old master dies before it answers", function()
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local script = dir .. "/app.lua"
    H.writefile(script, "return function(conn) conn:send('v1\\n') end\n")
    local p = H.start_pool { script = script, workers = 1 }
    defer(function() p:stop() end)
    assert.equals("v1\n", H.request(p.addr, nil, 10))
    -- The new master's worker takes 2 s to be ready.
    H.writefile(script, "local fdpool = require 'fdpool'\n"
      .. "return { init = function() fdpool.sleep(2) end,\n"
      .. "  handle = function(conn) conn:send('v2\\n') end }\n")
    os.execute(("(%s upgrade --control %s >%s/out 2>%s/err; echo $? >%s/code) </dev/null &"):format(
      H.POOL, q(p.control), dir, dir, dir))
    local newm = H.wait_until(function()
      return tonumber(p:log():match("upgrading: new master %(pid (%d+)%) starting"))
    end, 10, "the new master")
    defer(function() stop_pid(newm) end)
    H.wait_until(function() return p:log():find("pool[" .. newm .. "]: worker 1 started", 1, true) end,
      10, "the new master's worker")
    assert(H.run("kill -KILL " .. p.pid))
    local code = H.wait_until(function() return tonumber(H.readfile(dir .. "/code") or "") end,
      20, "pool upgrade to exit")
    assert.equals(1, code)
    assert.matches("closed the connection without an answer", H.readfile(dir .. "/err"))
    -- The new master (no longer anyone's child) serves, and was asked once.
    H.wait_until(function() return H.request(p.addr, nil, 10) == "v2\n" end, 10, "v2 served")
    local log = p:log()
    assert.equals(1, H.count(log, "upgrade requested on the control socket"), log)
    assert.is_nil(log:find("pool[" .. newm .. "]: upgrading", 1, true), log)
    no_sanitizer_reports(log)
  end)

  it("is refused by a pool made by fdpool.pool{} (pool upgrade and SIGUSR2), which serves on", function()
    local defer = H.cleanup(finally)
    local dir = H.tmpdir()
    local control = dir .. "/control.sock"
    os.execute(("(lua5.4 tests/fixtures/up_fnpool.lua %s %s; echo $? > %s/exit) </dev/null >%s/out 2>%s/err &")
      :format(q(H.BUILD), q(control), dir, dir, dir))
    local addr = H.wait_until(function()
      return (H.readfile(dir .. "/out") or ""):match("addr (%S+)") or H.readfile(dir .. "/exit")
    end, 10, "the program's pool")
    local ppid = H.wait_until(function()
      return tonumber((H.readfile(dir .. "/err") or ""):match("pool%[(%d+)%]: worker 1 started"))
    end, 10, "the worker")
    defer(function()
      os.execute("kill " .. ppid .. " 2>/dev/null")
      H.wait_until(function() return H.readfile(dir .. "/exit") end, 10, "the program to exit")
    end)
    local msg = "upgrade refused: this pool was made by fdpool.pool{} in a Lua program, which cannot "
      .. "be re-executed; only `pool run` upgrades (restart the program instead)"
    local code, out, err = H.run_pool("upgrade --control " .. q(control), 20)
    assert.equals(1, code, out)
    assert.equals("pool: " .. msg .. "\n", err)
    os.execute("kill -USR2 " .. ppid)
    H.wait_until(function()
      return (H.readfile(dir .. "/err") or ""):find("SIGUSR2: upgrading", 1, true)
    end, 5, "the SIGUSR2")
    assert.matches("^fn %d+\n$", H.request(addr, nil, 10))
    assert.truthy(H.readfile(dir .. "/err"):find(msg, 1, true))
    assert.is_nil(H.readfile(dir .. "/exit"))
  end)

  it("under systemd-socket-activate: SIGUSR2 upgrades, MAINPID= and READY=1 go to NOTIFY_SOCKET", function()
    if not have("systemd-socket-activate") then
      error("systemd-socket-activate is missing (package systemd; scripts/setup --test)")
    end
    local dir = H.tmpdir()
    local port = free_port()
    local nsock, nout = dir .. "/notify.sock", dir .. "/notify.out"
    local rx = spawn(dir, "notify", { "/usr/bin/python3", NOTIFY, nsock, nout, "60" })
    local p, newpid
    finally(function() stop_pid(newpid); reap(p); reap(rx) end)
    H.wait_until(function() return H.run("test -S " .. q(nsock)) end, 10, "the notify socket")
    local cmd = { "systemd-socket-activate", "-l", "127.0.0.1:" .. port, "--fdname=web",
                  "-E", "NOTIFY_SOCKET=" .. nsock }
    if ASAN then
      cmd[#cmd + 1] = "-E"; cmd[#cmd + 1] = "ASAN_OPTIONS=detect_leaks=1"
    end
    for _, w in ipairs { H.POOL, "run", APP, "--workers", "2", "--control", dir .. "/control.sock",
                         "--", "SD" } do
      cmd[#cmd + 1] = w
    end
    p = spawn(dir, "pool", cmd, dir .. "/control.sock")
    H.wait_until(function() return p:log():find("Listening on", 1, true) or p:exited() end, 10,
      "systemd-socket-activate to listen")
    local resp = assert(H.http_get("127.0.0.1:" .. port, "/"))
    assert.matches("\r\n\r\nSD master=" .. p.pid .. " ", resp)
    local function notes()
      local t = {}
      for _, m in ipairs(lines(H.readfile(nout))) do
        if m:find("READY=1", 1, true) or m:find("RELOADING=1", 1, true)
           or m:find("STOPPING=1", 1, true) or m:find("MAINPID=", 1, true) then t[#t + 1] = m end
      end
      return t
    end
    H.wait_until(function() return #notes() >= 1 end, 10, "READY=1")
    p:wait_ready(2)
    p:kill("USR2")
    H.wait_until(function() return #notes() >= 3 end, 30, "RELOADING=1 and MAINPID=")
    local n = notes()
    assert.matches("^RELOADING=1|MONOTONIC_USEC=%d+$", n[2])
    newpid = tonumber(n[3]:match("^MAINPID=(%d+)|READY=1|STATUS=upgraded: master pid %d+ serving$"))
    assert.truthy(newpid, n[3])
    assert.is_not.equals(p.pid, newpid)
    -- The activated socket (named "web") is served by the new master.
    local st = H.wait_status(p, function(s) return s.pid == newpid end, 10, "the new master's status")
    assert.same({ "web" }, st.listen)
    resp = assert(H.http_get("127.0.0.1:" .. port, "/"))
    assert.matches("\r\n\r\nSD master=" .. newpid .. " ", resp)
    -- The old master exits 0 and says nothing more to systemd.
    assert.equals(0, p:wait_exit(30))
    assert.equals(3, #notes(), table.concat(notes(), "\n"))
    -- The new master is the service now: its stop is the service's.
    os.execute("kill -QUIT " .. newpid)
    H.wait_until(function() return rx:exited() end, 15, "the notify receiver to see STOPPING=1")
    n = notes()
    assert.equals("STOPPING=1", n[#n])
    assert.equals(4, #n, table.concat(n, "\n"))
    H.wait_until(function() return not H.alive(newpid) end, 15, "the new master to exit")
    assert.same({}, H.unexpected_errors(p:log()))
    no_sanitizer_reports(p:log())
  end)
end)
