-- tests/60-ecosystem_spec.lua: fdpool among the tools around it.
-- `make install` / `make uninstall` (DESTDIR and PREFIX), the LuaRocks
-- rockspec, the pool(1) man page, the example systemd units run under
-- Debian's systemd-socket-activate with a stand-in NOTIFY_SOCKET
-- (Type=notify), SO_REUSEPORT pools sharing a port, and HAProxy in front
-- of two pools with the PROXY protocol (v1 and v2), health checks and a
-- graceful drain. Every server listens on loopback; every loop is bounded.
local H = require "helpers"
local free_port, spawn, reap, lines, have = H.free_port, H.spawn, H.reap, H.lines, H.have
local fdpool = require "fdpool"

local q = H.quote
local APP = "tests/fixtures/eco_app.lua"
local NOTIFY = "tests/fixtures/eco_notify.py"
local ROOT = select(3, H.run("pwd")):match("[^\n]+")





-- `pool stop --graceful` for a pool; returns once the master has taken
-- the command (it logs it). The command's own exit code is checked by
-- its own test below ("reports success every time"): it can lose its
-- answer, so the drains here do not depend on it.
local function graceful_stop(p)
  H.run(H.POOL .. " stop --graceful --control " .. q(p.control))
  H.wait_until(function() return p:log():find("graceful stop requested", 1, true) end, 5,
    "the pool to take the graceful stop")
end

-- systemd-socket-activate starts its command with a fresh environment:
-- under the sanitizer build, give the pool what H.start_pool gives it
-- (leak checks at exit; UBSan settings of the run).
local function sanitizer_env(cmd)
  if H.BUILD == "build" then return end
  cmd[#cmd + 1] = "-E"; cmd[#cmd + 1] = "ASAN_OPTIONS=detect_leaks=1"
  if os.getenv("UBSAN_OPTIONS") then cmd[#cmd + 1] = "-E"; cmd[#cmd + 1] = "UBSAN_OPTIONS" end
end


-- Every file `make install` puts under PREFIX (relative paths), from the
-- source tree: the two commands, the C module, the Lua files, the man
-- page, the docs (with their pictures) and the examples.
local function expected_files()
  local t = { "bin/pool", "bin/fdfetch", "lib/lua/5.4/fdpool.so", "share/man/man1/pool.1",
              "share/doc/fdpool/README.md" }
  local _, _, lua = H.run("cd lua && find fdpool -name '*.lua' | sort")
  for _, f in ipairs(lines(lua)) do t[#t + 1] = "share/lua/5.4/" .. f end
  local _, _, docs = H.run("ls docs/*.md docs/*.png")
  for _, f in ipairs(lines(docs)) do t[#t + 1] = "share/doc/fdpool/" .. f:match("[^/]+$") end
  local _, _, ex = H.run("ls examples/*.lua examples/systemd/*")
  for _, f in ipairs(lines(ex)) do t[#t + 1] = "share/doc/fdpool/" .. f end
  table.sort(t)
  return t
end

local function files_under(dir)
  local _, _, out = H.run(("cd %s && find . -type f -o -type l | sed 's|^\\./||' | sort"):format(q(dir)))
  return lines(out)
end

describe("make install", function()
  -- Installs use the normal build (an ASan fdpool.so cannot load into a
  -- plain lua5.4); make builds it first if it is missing or stale.
  local MAKE = "make -s B=build"

  it("puts exactly the expected files under DESTDIR, and uninstall removes them all", function()
    local dest = H.tmpdir()
    local ok, code, out = H.run(("%s install DESTDIR=%s"):format(MAKE, q(dest)))
    assert.is_true(ok, "make install failed (" .. tostring(code) .. "):\n" .. out)
    local want = expected_files()
    local got = files_under(dest .. "/usr/local")
    assert.same(want, got)
    assert.same({ "usr" }, lines(select(3, H.run("ls " .. q(dest)))))
    -- Modes: commands and the module executable, the rest read-only data.
    local _, _, modes = H.run(("cd %s/usr/local && stat -c '%%a %%n' bin/pool bin/fdfetch "
      .. "lib/lua/5.4/fdpool.so share/lua/5.4/fdpool/http.lua share/man/man1/pool.1"):format(q(dest)))
    assert.same({ "755 bin/pool", "755 bin/fdfetch", "755 lib/lua/5.4/fdpool.so",
      "644 share/lua/5.4/fdpool/http.lua", "644 share/man/man1/pool.1" }, lines(modes))

    ok, code, out = H.run(("%s uninstall DESTDIR=%s"):format(MAKE, q(dest)))
    assert.is_true(ok, "make uninstall failed (" .. tostring(code) .. "):\n" .. out)
    assert.same({}, files_under(dest))
  end)

  it("uses the directories Debian's lua5.4 searches by default (no LUA_PATH needed)", function()
    local _, _, paths = H.run("make -s print")
    local cmod = paths:match("LUA_CMOD=(%S+)")
    local lmod = paths:match("LUA_LMOD=(%S+)")
    assert.equal("/usr/local/lib/lua/5.4", cmod)
    assert.equal("/usr/local/share/lua/5.4", lmod)
    assert.matches("MANDIR=/usr/local/share/man", paths, 1, true)
    assert.matches("DOCDIR=/usr/local/share/doc/fdpool", paths, 1, true)
    local _, _, out = H.run("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
      .. "lua5.4 -e 'print(package.cpath); print(package.path)'")
    local cpath, lpath = out:match("^([^\n]*)\n([^\n]*)")
    assert.truthy(cpath:find(cmod .. "/?.so", 1, true), "lua5.4's cpath lacks " .. cmod .. ": " .. cpath)
    assert.truthy(lpath:find(lmod .. "/?.lua", 1, true), "lua5.4's path lacks " .. lmod .. ": " .. lpath)
  end)

  it("installs a working pool and module under PREFIX, and uninstall leaves nothing", function()
    local prefix = H.tmpdir()
    local ok, code, out = H.run(("%s install PREFIX=%s"):format(MAKE, q(prefix)))
    assert.is_true(ok, "make install failed (" .. tostring(code) .. "):\n" .. out)
    assert.same(expected_files(), files_under(prefix))

    local _, _, want = H.run("build/pool --version")
    ok, code, out = H.run(q(prefix .. "/bin/pool") .. " --version")
    assert.is_true(ok, out)
    assert.equal(want, out)
    assert.matches("^pool %(fdpool%) %d+%.%d+%.%d+ on Lua 5%.4\n$", out)

    -- From another directory, so nothing comes from the source tree.
    local env = ("cd / && LUA_CPATH=%s LUA_PATH=%s lua5.4 -e "):format(
      q(prefix .. "/lib/lua/5.4/?.so;;"), q(prefix .. "/share/lua/5.4/?.lua;;"))
    ok, code, out = H.run(env .. q([[
      local fdpool = require "fdpool"
      local http = require "fdpool.http"
      assert(type(http.serve) == "function")
      local a, b = assert(fdpool.socketpair())
      assert(a:sendfd(nil, "ping"))
      local _, data = b:recvfd()
      print(fdpool.version, data, package.searchpath("fdpool", package.cpath),
            package.searchpath("fdpool.http", package.path))]]))
    assert.is_true(ok, out)
    local v, data, so, lua = out:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)\n$")
    assert.equal(want:match("(%d+%.%d+%.%d+)"), v)
    assert.equal("ping", data)
    assert.equal(prefix .. "/lib/lua/5.4/fdpool.so", so)
    assert.equal(prefix .. "/share/lua/5.4/fdpool/http.lua", lua)

    -- The installed pool checks an installed example; man finds the page.
    ok, code, out = H.run(("%s/bin/pool check %s/share/doc/fdpool/examples/http_hello.lua"):format(
      q(prefix), q(prefix)))
    assert.is_true(ok, out)
    assert.matches("http_hello.lua: ok", out, 1, true)
    ok, code, out = H.run(("MANWIDTH=80 man -M %s/share/man pool | col -b"):format(q(prefix)))
    assert.is_true(ok, out)
    assert.matches("pool%s+%-%s+a%s+Lua%-scriptable%s+prefork%s+process%s+pool", out)

    ok, code, out = H.run(("%s uninstall PREFIX=%s"):format(MAKE, q(prefix)))
    assert.is_true(ok, "make uninstall failed (" .. tostring(code) .. "):\n" .. out)
    assert.same({}, files_under(prefix))
  end)
end)

describe("the LuaRocks rockspec", function()
  it("builds and installs with `luarocks make` into a tree that lua5.4 then loads", function()
    if not have("luarocks") then
      pending("luarocks is not installed (scripts/setup installs it)")
      return
    end
    local dir = H.tmpdir()
    -- luarocks make builds in the source directory: use a copy, so the
    -- checkout's build/ is left alone. It needs no network (no
    -- dependency other than lua itself).
    local ok, code, out = H.run(("mkdir %s/src && cp -r Makefile fdpool-scm-1.rockspec README.md "
      .. "src lua scripts docs examples %s/src/"):format(q(dir), q(dir)))
    assert.is_true(ok, out)
    local tree = dir .. "/tree"
    ok, code, out = H.run(("cd %s/src && timeout 120 luarocks make --lua-version=5.4 --tree %s "
      .. "fdpool-scm-1.rockspec"):format(q(dir), q(tree)))
    assert.is_true(ok, "luarocks make failed (" .. tostring(code) .. "):\n" .. out)
    assert.matches("fdpool scm%-1 is now installed", out)

    ok, code, out = H.run(("cd / && eval \"$(luarocks path --lua-version 5.4 --tree %s)\" && "
      .. "lua5.4 -e %s && pool --version"):format(q(tree), q([[
        local fdpool = require "fdpool"
        assert(type(require("fdpool.http").serve) == "function")
        print(package.searchpath("fdpool", package.cpath))
        print(package.searchpath("fdpool.http", package.path))]])))
    assert.is_true(ok, out)
    local l = lines(out)
    assert.equal(tree .. "/lib/lua/5.4/fdpool.so", l[1])
    assert.equal(tree .. "/share/lua/5.4/fdpool/http.lua", l[2])
    assert.matches("^pool %(fdpool%) ", l[3])

    ok, code, out = H.run(("luarocks list --lua-version 5.4 --tree %s --porcelain"):format(q(tree)))
    assert.is_true(ok, out)
    assert.matches("fdpool\tscm%-1\tinstalled", out)
    ok, code, out = H.run(("luarocks remove --lua-version 5.4 --tree %s fdpool"):format(q(tree)))
    assert.is_true(ok, out)
    local _, _, left = H.run(("ls %s/bin %s/lib/lua/5.4 %s/share/lua/5.4 2>/dev/null"):format(
      q(tree), q(tree), q(tree)))
    assert.not_matches("pool", left)
    assert.not_matches("fdpool", left)
  end)
end)

describe("the pool(1) man page", function()
  it("formats without a groff warning", function()
    local ok, code, out = H.run("groff -man -Tutf8 -ww -z docs/pool.1")
    assert.is_true(ok, "groff exited " .. tostring(code))
    assert.equal("", out)
    ok, code, out = H.run("MANWIDTH=80 man -l docs/pool.1 2>&1 >/dev/null")
    assert.is_true(ok, out)
    assert.equal("", out)
  end)

  it("documents every command and flag of `pool --help`, the signals, exit codes and files", function()
    local _, _, page = H.run("MANWIDTH=200 man -l docs/pool.1 | col -b")
    local _, _, help = H.run(H.POOL .. " --help")
    local cmds, flags = {}, {}
    for c in help:gmatch("\n  pool (%a+)") do cmds[c] = true end
    for f in help:gmatch("%-%-[%a][%w-]*") do flags[f] = true end
    for _, f in ipairs { "-n", "--help", "--version" } do flags[f] = true end
    local missing = {}
    for c in pairs(cmds) do
      if not page:find("pool " .. c, 1, true) then missing[#missing + 1] = "pool " .. c end
    end
    for f in pairs(flags) do
      if not page:find(f, 1, true) then missing[#missing + 1] = f end
    end
    table.sort(missing)
    assert.same({}, missing)
    assert.truthy(next(cmds) and cmds.run and cmds.status and cmds.scale, "parsed no commands from --help")
    for _, s in ipairs { "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR1",
                         "EXIT STATUS", "FILES", "EXAMPLES", "ENVIRONMENT", "LISTEN_FDS",
                         "NOTIFY_SOCKET", "/run/fdpool/", ",reuseport", ",proxy" } do
      assert.truthy(page:find(s, 1, true), "the man page does not mention " .. s)
    end
    local status = page:match("\nEXIT STATUS(\n.-)\n%u")
    for _, c in ipairs { "0", "1", "2" } do
      assert.matches("\n%s+" .. c .. "%s", status)
    end
  end)
end)

describe("systemd", function()
  local unit = H.readfile("examples/systemd/fdpool.service")
  local sock = H.readfile("examples/systemd/fdpool.socket")
  local function key(text, k) return text and text:match("\n" .. k .. "=([^\n]+)") end

  it("the example units pass systemd-analyze verify", function()
    if not have("systemd-analyze") then
      pending("systemd-analyze is not installed (package systemd, scripts/setup)")
      return
    end
    local dir = H.tmpdir()
    -- verify checks that ExecStart's program exists: point it at ours.
    H.writefile(dir .. "/fdpool.service", (unit:gsub("/usr/local/bin/pool", ROOT .. "/" .. H.POOL)))
    H.writefile(dir .. "/fdpool.socket", sock)
    local ok, code, out = H.run(("cd %s && systemd-analyze verify --man=no fdpool.socket fdpool.service"):format(q(dir)))
    assert.is_true(ok, "systemd-analyze exited " .. tostring(code) .. ":\n" .. out)
    assert.equal("", out)
    assert.equal("notify", key(unit, "Type"))
    assert.equal("SIGQUIT", key(unit, "KillSignal"))
    assert.equal("mixed", key(unit, "KillMode"))
    assert.equal("/bin/kill -HUP $MAINPID", key(unit, "ExecReload"))
    assert.truthy(tonumber(key(unit, "TimeoutStopSec")) > 30, "TimeoutStopSec must exceed --grace 30")
  end)

  -- The unit's own ExecStart, ExecReload and KillSignal, with the socket
  -- unit's FileDescriptorName, run the way systemd would: the socket is
  -- passed by systemd-socket-activate (LISTEN_FDS, LISTEN_FDNAMES), the
  -- notifications go to a datagram socket we read.
  -- FAILS under the ASan build as of this writing: with --user the pool
  -- leaks p->user_name (src/lpool.c:209 xstrdup, never freed), and
  -- LeakSanitizer reports it at exit.
  it("the example unit's ExecStart serves the activated socket and notifies READY, RELOADING, STOPPING", function()
    if not have("systemd-socket-activate") or not have("python3") then
      pending("systemd-socket-activate (package systemd) or python3 is missing")
      return
    end
    local dir = H.tmpdir()
    local port = free_port()
    local fdname = key(sock, "FileDescriptorName")
    assert.equal("web", fdname)
    assert.equal("127.0.0.1:8080", key(sock, "ListenStream"))

    local argv = {}
    for w in key(unit, "ExecStart"):gmatch("%S+") do argv[#argv + 1] = w end
    assert.same({ "/usr/local/bin/pool", "run", "/etc/fdpool/app.lua" }, { argv[1], argv[2], argv[3] })
    argv[1], argv[3] = H.POOL, APP
    local user
    for i, w in ipairs(argv) do
      if w == "/run/fdpool/app.sock" then argv[i] = dir .. "/control.sock" end
      if argv[i - 1] == "--user" then user = w end
    end
    assert.equal("www-data", user)
    local root = select(3, H.run("id -u")):match("%d+") == "0"
    local has_user = H.run("id -u www-data")
    if not (root and has_user) then
      -- --user needs root and the user: run the rest without it.
      for i = #argv, 1, -1 do
        if argv[i] == "--user" then table.remove(argv, i); table.remove(argv, i) end
      end
      user = nil
    end
    for _, w in ipairs { "--workers", "2", "--policy", "tests/fixtures/policy_report.lua", "--", "SD" } do
      argv[#argv + 1] = w
    end
    local nsock, nout = dir .. "/notify.sock", dir .. "/notify.out"
    local rx = spawn(dir, "notify", { "python3", NOTIFY, nsock, nout, "40" })
    local p
    finally(function() reap(p); reap(rx) end)
    H.wait_until(function() return H.run("test -S " .. q(nsock)) end, 10, "the notify socket")

    local cmd = { "systemd-socket-activate", "-l", "127.0.0.1:" .. port, "--fdname=" .. fdname,
                  "-E", "NOTIFY_SOCKET=" .. nsock }
    sanitizer_env(cmd)
    for _, w in ipairs(argv) do cmd[#cmd + 1] = w end
    p = spawn(dir, "pool", cmd, dir .. "/control.sock")
    H.wait_until(function() return p:log():find("Listening on", 1, true) or p:exited() end, 10,
      "systemd-socket-activate to listen")
    -- systemd-socket-activate execs the pool on the first connection;
    -- that connection waits in the backlog and is served.
    local resp = H.http_get("127.0.0.1:" .. port, "/")
    assert.matches("^HTTP/1.1 200", resp)
    local master = tonumber(resp:match("SD master=(%d+)"))
    assert.equal(p.pid, master)   -- the same process: exec'd, as under systemd
    local log = p:log()
    assert.matches("pool%[" .. p.pid .. "%]: listening on 127%.0%.0%.1:" .. port, log)
    local _, nlisten = log:gsub("listening on ", "")
    assert.equal(1, nlisten)   -- no default 127.0.0.1:8080 beside the activated socket
    -- The policy's conn.listener is the socket's FileDescriptorName.
    H.wait_until(function() return p:log():find("REPORT peer=", 1, true) end, 5, "the policy report")
    assert.matches("REPORT peer=127%.0%.0%.1:%d+ .* listener=web ", p:log())
    if user then
      -- A worker drops privileges before READY: read uids once both are.
      local st = H.wait_status(p, function(s)
        for _, w in ipairs(s.workers) do
          if w.state ~= "free" and w.state ~= "busy" then return false end
        end
        return #s.workers == 2
      end, 10, "both workers ready")
      for _, w in ipairs(st.workers) do
        local uid = (H.readfile("/proc/" .. w.pid .. "/status") or ""):match("\nUid:%s+(%d+)")
        assert.equal("33", uid)   -- www-data
      end
    end

    -- The state changes sent (messages with only STATUS= are left out:
    -- systemd allows them at any time).
    local function notes()
      local t = {}
      for _, m in ipairs(lines(H.readfile(nout))) do
        if m:find("READY=1", 1, true) or m:find("RELOADING=1", 1, true)
           or m:find("STOPPING=1", 1, true) then t[#t + 1] = m end
      end
      return t
    end
    -- READY=1 once every worker is ready, with a STATUS line.
    H.wait_until(function() return #notes() >= 1 end, 10, "READY=1")
    local n = notes()
    assert.matches("^READY=1|STATUS=2 workers ready", n[1])
    local st = p:wait_ready(2)
    assert.equal(2, #st.workers)

    -- ExecReload: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
    local reload = key(unit, "ExecReload"):gsub("%$MAINPID", tostring(p.pid))
    assert.is_true((H.run(reload)))
    H.wait_until(function() return #notes() >= 3 end, 10, "RELOADING=1 and READY=1")
    n = notes()
    assert.matches("^RELOADING=1|MONOTONIC_USEC=%d+$", n[2])
    assert.matches("^READY=1|STATUS=2 workers ready, generation 2$", n[3])
    resp = H.http_get("127.0.0.1:" .. port, "/")
    assert.matches("^HTTP/1.1 200", resp)

    -- KillSignal=SIGQUIT: a graceful stop, STOPPING=1, exit 0.
    p:kill(key(unit, "KillSignal"):gsub("^SIG", ""))
    assert.equal(0, p:wait_exit(15))
    H.wait_until(function() return rx:exited() end, 10, "the notify receiver to see STOPPING=1")
    n = notes()
    assert.equal("STOPPING=1", n[#n])
    assert.equal(4, #n, table.concat(n, "\n"))
    assert.matches("graceful", p:log())
  end)

  -- FAILS as of this writing: status "listen" shows the bound address
  -- (src/pool.c fdp_pool_status_info uses listeners[i].bound, not .addr).
  it("pool status names a socket-activated listener by its FileDescriptorName", function()
    if not have("systemd-socket-activate") then
      pending("systemd-socket-activate is not installed (package systemd)")
      return
    end
    local dir = H.tmpdir()
    local port = free_port()
    local cmd = { "systemd-socket-activate", "-l", "127.0.0.1:" .. port, "--fdname=web" }
    sanitizer_env(cmd)
    for _, w in ipairs { H.POOL, "run", "examples/http_hello.lua", "--workers", "1",
                         "--control", dir .. "/control.sock" } do cmd[#cmd + 1] = w end
    local p = spawn(dir, "pool", cmd, dir .. "/control.sock")
    finally(function() reap(p) end)
    H.wait_until(function() return p:log():find("Listening on", 1, true) or p:exited() end, 10,
      "systemd-socket-activate to listen")
    assert.equal("hello\n", H.http_get("127.0.0.1:" .. port, "/"):match("\r\n\r\n(.*)$"))
    local st = p:wait_ready(1)
    assert.equal(1, #st.listen)
    assert.truthy(st.listen[1]:find("web", 1, true),
      "status listen should name the socket 'web', got " .. tostring(st.listen[1]))
    local _, _, table_out = H.run(H.POOL .. " status --control " .. q(dir .. "/control.sock"))
    assert.matches("\nlisten [^\n]*web", table_out)
    assert.equal(0, p:stop())
  end)
end)

describe("SO_REUSEPORT", function()
  it("lets a second pool share the port; both serve, and the old one drains (an upgrade)", function()
    local a, b, hold
    finally(function()
      if hold then hold:close() end
      if a then a:stop() end
      if b then b:stop() end
    end)
    a = H.start_pool { script = APP, listen = "127.0.0.1:0,reuseport", workers = 2, args = { "A" } }
    assert.truthy(a.addr, a:log())
    local port = a.addr:match(":(%d+)$")
    -- An in-flight request on the old pool: its body is sent only after
    -- the old pool was told to stop.
    hold = assert(fdpool.connect(a.addr, 10))
    assert(hold:write("POST /hold HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 4\r\n\r\n"))
    H.wait_until(function() return H.sum_workers(assert(a:status()), "active") == 1 end, 5,
      "the held request to reach pool A")

    b = H.start_pool { script = APP, listen = "127.0.0.1:" .. port .. ",reuseport", workers = 2,
      args = { "B" } }
    assert.equal(a.addr, b.addr)
    -- Without reuseport the same port is refused.
    local code, _, err = H.run_pool(("run --listen 127.0.0.1:%s --no-control --workers 1"):format(port), 10)
    assert.equal(1, code)
    assert.matches("pool: cannot listen on 127%.0%.0%.1:" .. port
      .. ": bind%(%) failed %(Address already in use%)", err)

    -- The kernel spreads connections over both pools (by 4-tuple hash):
    -- each answer names its pool and master.
    local seen, n = { A = 0, B = 0 }, 0
    local deadline = H.now() + 15
    while (seen.A < 3 or seen.B < 3) and n < 300 and H.now() < deadline do
      local resp = assert(H.http_get(a.addr, "/"))
      local label, master = resp:match("\r\n\r\n(%u) master=(%d+) ")
      assert.truthy(label, resp)
      assert.equal(label == "A" and a.pid or b.pid, tonumber(master))
      seen[label] = seen[label] + 1
      n = n + 1
    end
    assert.is_true(seen.A >= 3 and seen.B >= 3,
      ("after %d connections: A %d, B %d"):format(n, seen.A, seen.B))

    -- The old pool stops gracefully: once its drain delay is over
    -- (--drain-delay: it still accepts for 0.5 s), every new connection
    -- reaches the new pool, and the held request still completes on the
    -- old one, which then exits 0.
    graceful_stop(a)
    H.wait_until(function() return a:log():find("drain delay over: listeners closed", 1, true) end,
      5, "pool A's drain delay to end")
    for _ = 1, 20 do
      local resp = assert(H.http_get(b.addr, "/"))
      assert.matches("\r\n\r\nB master=" .. b.pid .. " ", resp)
    end
    assert.is_nil(a:exited())
    assert(hold:write("done"))
    local resp = hold:read("a")
    hold:close(); hold = nil
    assert.matches("^HTTP/1.1 200", resp)
    assert.matches("\r\n\r\nA master=" .. a.pid .. " ", resp)
    assert.equal(0, a:wait_exit(10))
    assert.same({}, H.unexpected_errors(a:log() .. b:log()))
  end)
end)

describe("HAProxy in front of two pools (PROXY protocol)", function()
  -- The stats page as rows {pxname, svname, status, check_status, ...}.
  local function stats(port)
    local ok, _, out = H.run(("curl -s -m 2 'http://127.0.0.1:%d/stats;csv'"):format(port))
    if not ok then return nil end
    local l = lines(out)
    if not l[1] or not l[1]:match("^# ") then return nil end
    local cols = {}
    for c in (l[1]:sub(3) .. ","):gmatch("([^,]*),") do cols[#cols + 1] = c end
    local rows = {}
    for i = 2, #l do
      local r, k = {}, 0
      for v in (l[i] .. ","):gmatch("([^,]*),") do k = k + 1; r[cols[k] or k] = v end
      rows[r.pxname .. "/" .. r.svname] = r
    end
    return rows
  end

  it("passes the client's address (v1 and v2), checks /healthz, and drains a pool without losing a request", function()
    if not have("haproxy") then
      pending("haproxy is not installed (scripts/setup installs it)")
      return
    end
    local a, b, hap, client
    finally(function()
      reap(client)
      reap(hap)
      if a then a:stop() end
      if b then b:stop() end
    end)
    a = H.start_pool { script = APP, listen = "127.0.0.1:0,proxy", workers = 2, args = { "A" } }
    b = H.start_pool { script = APP, listen = "127.0.0.1:0,proxy", workers = 2, args = { "B" } }
    assert.truthy(a.addr and b.addr, a:log() .. b:log())
    -- A proxy listener closes a connection that does not start with a
    -- PROXY header, answering nothing (EOF or a reset).
    local resp, rerr = H.http_get(a.addr, "/")
    assert.is_true(resp == "" or (resp == nil and rerr:find("reset", 1, true) ~= nil),
      ("expected no answer, got %q, %q"):format(tostring(resp), tostring(rerr)))

    local dir = H.tmpdir()
    local ports = { STATS = free_port(), FE_V1 = free_port(), FE_V2 = free_port(),
                    A = a.addr:match(":(%d+)$"), B = b.addr:match(":(%d+)$") }
    local cfg = H.readfile("tests/fixtures/eco_haproxy.cfg"):gsub("@(%u[%u_%d]*)@", function(k)
      return tostring(assert(ports[k], k))
    end)
    H.writefile(dir .. "/haproxy.cfg", cfg)
    hap = spawn(dir, "haproxy", { "haproxy", "-db", "-f", dir .. "/haproxy.cfg" })
    -- Up when all four servers passed a health check (GET /healthz, which
    -- carries a PROXY header too: check-send-proxy).
    local rows = H.wait_until(function()
      if hap:exited() then error("haproxy exited:\n" .. hap:log()) end
      local r = stats(ports.STATS)
      if not r then return false end
      for _, s in ipairs { "be_v1/a", "be_v1/b", "be_v2/a", "be_v2/b" } do
        if not r[s] or r[s].status ~= "UP" or r[s].check_status ~= "L7OK" then return false end
      end
      return r
    end, 15, "haproxy's servers to be UP")
    assert.equal("200", rows["be_v1/a"].check_code)
    assert.equal("200", rows["be_v2/b"].check_code)

    -- Handlers see the client: 127.0.0.1 and the client's own port (curl's
    -- local port), not HAProxy's connection to the pool.
    local labels = {}
    for _, fe in ipairs { ports.FE_V1, ports.FE_V2 } do
      for _ = 1, 4 do
        local ok, _, out = H.run(("curl -s -m 5 -w '%%{http_code} %%{local_port}' http://127.0.0.1:%d/who"):format(fe))
        assert.is_true(ok, out)
        local label, ip, pport, http_code, lport = out:match(
          "^(%u) master=%d+ worker=%d+ peer=([%d.]+):(%d+)\n(%d+) (%d+)$")
        assert.truthy(label, out)
        assert.equal("200", http_code)
        assert.equal("127.0.0.1", ip)
        assert.equal(lport, pport)
        labels[fe .. label] = true
      end
    end
    -- Round robin: each frontend reached both pools.
    for _, fe in ipairs { ports.FE_V1, ports.FE_V2 } do
      assert.is_true(labels[fe .. "A"] and labels[fe .. "B"], "not both pools behind " .. fe)
    end

    -- Drain pool A (pool stop --graceful) while a client loop goes
    -- through HAProxy: no request fails; once A is gone, B answers all.
    local N = 200
    client = spawn(dir, "client", { "timeout", "60", "sh", "-c", ("for i in $(seq 1 %d); do "
      .. "curl -sf -m 5 http://127.0.0.1:%d/drain || echo \"FAIL $?\"; done"):format(N, ports.FE_V1) })
    H.wait_until(function() return #lines(client:log()) >= 30 end, 15, "30 answers before the drain")
    graceful_stop(a)
    assert.equal(0, a:wait_exit(10))
    local after = #lines(client:log())
    assert.equal(0, client:wait_exit(60))
    local l = lines(client:log())
    assert.equal(N, #l)
    local fails, from = {}, { A = 0, B = 0 }
    for i, s in ipairs(l) do
      local label = s:match("^(%u) master=")
      if not label then
        fails[#fails + 1] = i .. ": " .. s
      else
        from[label] = from[label] + 1
        if i > after then assert.equal("B", label, "line " .. i .. " after A exited: " .. s) end
      end
    end
    assert.same({}, fails)
    assert.truthy(from.A > 0 and from.B > 0, ("A %d, B %d"):format(from.A, from.B))
    assert.truthy(after < N, "the client loop ended before pool A had stopped")
    assert.matches("graceful stop requested", a:log())
    -- HAProxy's health check sees the drained pool go down.
    H.wait_until(function()
      local r = stats(ports.STATS)
      return r and r["be_v1/a"].status:match("^DOWN") and r["be_v1/b"].status == "UP"
    end, 10, "haproxy to mark the drained pool DOWN")
    assert.same({}, H.unexpected_errors(a:log() .. b:log()))
  end)
end)

describe("pool stop --graceful (draining in scripts)", function()
  -- FAILS as of this writing, about 1 stop in 10: the master queues the
  -- "OK stopping gracefully" answer (src/control.c run_command), stops,
  -- and fdp_control_close() closes the client before the answer is sent;
  -- the client takes the empty answer as "busy" (control_request_once
  -- returns -2), retries, and the socket is gone: exit 1 with "pool:
  -- cannot reach a pool at ... (No such file or directory)" although the
  -- pool did stop. A deploy script doing `pool stop --graceful && ...`
  -- then fails.
  it("reports success every time (150 stops of an idle pool)", function()
    local bad = {}
    for i = 1, 150 do
      -- No drain delay: the stop (and the race with the answer) at once.
      local p = H.start_pool { workers = 1, extra = { "--drain-delay", "0" } }
      local code, out, err = H.run_pool("stop --graceful --control " .. q(p.control), 10)
      local exit = p:wait_exit(10)
      if code ~= 0 or out ~= "OK stopping gracefully\n" or exit ~= 0 then
        bad[#bad + 1] = ("stop %d: exit %s, stdout %q, stderr %q, pool exit %s"):format(
          i, tostring(code), out, err, tostring(exit))
      end
    end
    assert.same({}, bad)
  end)
end)
