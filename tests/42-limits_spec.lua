-- tests/42-limits_spec.lua: memory and process edges (issue 8, part 4).
-- --max-memory (the Lua allocator's limit in handler code, the master's
-- RssAnon check), RLIMIT_NOFILE at start, workers' stdin, stray SIGUSR2,
-- and the control socket path (one pool per path, unlinked only while it
-- is the pool's own). Each test starts the real build/pool and talks to
-- it over real sockets.
local H = require "helpers"
local fdpool = require "fdpool"

local APP = "tests/fixtures/limits_app.lua"
local q = H.quote

-- finally() is the spec file's own (busted gives it to spec files,
-- not to modules): hand it to H.cleanup.
local function cleanup() return H.cleanup(finally) end

-- Send an HTTP request on a new connection; returns the fd (the answer
-- is read later with read_response).
local function send_get(addr, path)
  local fd = assert(fdpool.connect(addr, 10))
  assert(fd:write(("GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"):format(path)))
  return fd
end

-- Read a whole response; returns status, body.
local function read_response(fd)
  local r = fd:read("a") or ""
  fd:close()
  local status = tonumber(r:match("^HTTP/1%.1 (%d+)"))
  return status, r:match("\r\n\r\n(.*)$") or ""
end

local function get(addr, path)
  return read_response(send_get(addr, path))
end

local function no_unexpected_errors(p, allowed)
  local bad = H.unexpected_errors(p:log(), allowed)
  assert.same({}, bad, "unexpected error lines:\n" .. table.concat(bad, "\n"))
end

-- Wait until the worker table shows n connections in flight.
local function wait_active(p, n)
  return H.wait_status(p, function(st) return H.sum_workers(st, "active") >= n end,
    10, n .. " connection(s) in flight")
end

describe("--max-memory", function()
  it("answers 500 to the request that runs out, while another on the same worker succeeds", function()
    local defer = cleanup()
    local p = H.start_pool{ script = APP, workers = 1, concurrency = 8,
                            extra = { "--max-memory", "64" } }
    defer(function() p:stop() end)
    local pid = tonumber(select(2, get(p.addr, "/pid")))
    -- A request in flight on the only worker, sleeping through the hog.
    local slow = send_get(p.addr, "/slow/2")
    wait_active(p, 1)
    local status = get(p.addr, "/hog")
    assert.equals(500, status)
    local s2, body = read_response(slow)
    assert.equals(200, s2)
    assert.equals("slow done " .. pid, body)
    -- The worker did not die: it served both, then (its heap now large)
    -- may be retired gracefully; either way a new request works.
    assert.equals(200, (get(p.addr, "/pid")))
    local log = p:log()
    assert.truthy(log:find("http handler error (GET /hog): not enough memory", 1, true), log)
    assert.falsy(log:find("killed by", 1, true), log)
    assert.falsy(log:find("exited with code [^0]"), log)
    assert.equals(0, p:stop())
    no_unexpected_errors(p, { "not enough memory" })
  end)

  it("retires a worker whose RssAnon stays above the limit, after its requests finish", function()
    local defer = cleanup()
    local p = H.start_pool{ script = APP, workers = 1, concurrency = 8,
                            extra = { "--max-memory", "32" } }
    defer(function() p:stop() end)
    local old = tonumber(select(2, get(p.addr, "/pid")))
    local slow = send_get(p.addr, "/slow/3")
    wait_active(p, 1)
    -- 24 MiB of small strings under the Lua limit of 32, then mostly
    -- freed: Lua holds little, the process keeps more than 32 MiB.
    local status, body = get(p.addr, "/frag/24")
    assert.equals(200, status)
    assert.equals("fragmented " .. old, body)
    local rss = H.readfile("/proc/" .. old .. "/status")
    local kb = rss and tonumber(rss:match("RssAnon:%s*(%d+)"))
    if kb then assert.truthy(kb > 32 * 1024, "RssAnon " .. kb .. " kB") end
    H.wait_until(function() return p:log():find("retires: RssAnon %d+ MiB stays above %-%-max%-memory 32 MiB") end,
      10, "the retirement")
    -- A new worker takes the slot; the old one finishes its request.
    local st = H.wait_status(p, function(s)
      return s.workers[1].pid ~= old and (s.workers[1].state == "free" or s.workers[1].state == "busy")
    end, 10, "the replacement to be ready")
    local new = st.workers[1].pid
    assert.are_not.equal(old, new)
    local s2, b2 = read_response(slow)
    assert.equals(200, s2)
    assert.equals("slow done " .. old, b2)
    H.wait_until(function()
      return p:log():find("worker 1 (pid " .. old .. ") exited with code 0", 1, true)
    end, 10, "the old worker to exit with code 0")
    assert.equals(200, (get(p.addr, "/pid")))
    assert.equals(0, p:stop())
    no_unexpected_errors(p)
  end)

  it("is an option of the CLI, config files and fdpool.pool{}", function()
    local code, _, err = H.run_pool("run --max-memory 0")
    assert.equals(2, code)
    assert.equals("pool: --max-memory must be an integer from 1 to 4194304 (got '0')\n", err)
    local ok, _, help = H.run(H.POOL .. " --help")
    assert.truthy(ok)
    assert.truthy(help:find("--max-memory MB", 1, true))
    local dir = H.tmpdir()
    H.writefile(dir .. "/c.lua", "return { max_memory = 'lots' }\n")
    code, _, err = H.run_pool("run --config " .. q(dir .. "/c.lua"))
    assert.equals(1, code)
    assert.truthy(err:find("setting 'max_memory' must be a number", 1, true), err)
    local pok, perr = pcall(fdpool.pool, { handler = function() end, listen = "127.0.0.1:0",
                                           max_memory = -1 })
    assert.falsy(pok)
    assert.truthy(tostring(perr):find("bad option 'max_memory'", 1, true), perr)
  end)

  it("holds for a function handler given to fdpool.pool{} (the forked caller's state)", function()
    local defer = cleanup()
    local dir = H.tmpdir()
    os.execute(("(lua5.4 tests/fixtures/limits_fnpool.lua %s; echo $? > %s/exit) </dev/null >%s/out 2>%s/err &")
      :format(q(H.BUILD), dir, dir, dir))
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
    local function ask(line)
      return H.wait_until(function()
        local r = H.request(addr, line .. "\n", 10)
        return r and r ~= "" and r
      end, 10, "an answer to " .. line)
    end
    local pid = ask("hi"):match("^hi (%d+)\n$")
    assert.truthy(pid)
    assert.equals("refused: not enough memory\n", ask("hog"))
    -- The worker keeps serving. Under the ASan build its RssAnon (shadow
    -- memory, the allocator's quarantine) may stay above the limit after
    -- the hog: then it is retired gracefully, never killed.
    local again = ask("again")
    if H.BUILD ~= "build" and again ~= "again " .. pid .. "\n" then
      assert.matches("^again %d+\n$", again)
      local err = H.readfile(dir .. "/err") or ""
      assert.truthy(err:find("retires: RssAnon", 1, true), err)
      assert.falsy(err:find("killed by", 1, true), err)
    else
      assert.equals("again " .. pid .. "\n", again)
    end
    os.execute("kill " .. ppid)
    H.wait_until(function() return H.readfile(dir .. "/exit") end, 10, "the program to exit")
    assert.equals("run true nil\n", (H.readfile(dir .. "/out"):match("run [^\n]*\n")))
  end)

  it("fails the start with a clear reason when the script's top level needs more", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/big.lua", "local t = {} for i = 1, 4e5 do t[i] = i .. '' end\n"
      .. "return function(conn) end\n")
    local code, _, err = H.run_pool("run " .. q(dir .. "/big.lua") .. " --listen 127.0.0.1:0 "
      .. "--workers 1 --no-control --max-memory 8")
    assert.equals(1, code)
    assert.truthy(err:find("not enough memory", 1, true), err)
    -- The same through a config file; without the limit it starts.
    H.writefile(dir .. "/c.lua", "return { handler = 'big.lua', max_memory = 8, control = false,\n"
      .. "  listen = '127.0.0.1:0', workers = 1 }\n")
    code, _, err = H.run_pool("run --config " .. q(dir .. "/c.lua"))
    assert.equals(1, code)
    assert.truthy(err:find("not enough memory", 1, true), err)
    local p = H.start_pool{ script = dir .. "/big.lua", workers = 1 }
    assert.equals(0, p:stop())
  end)
end)

describe("RLIMIT_NOFILE", function()
  it("is raised to the hard limit at start and logged", function()
    local ok, _, hard = H.run("ulimit -Hn")
    hard = ok and tonumber(hard:match("%d+"))
    if not hard or hard <= 256 then
      pending("the hard limit is " .. tostring(hard) .. ", not above 256")
      return
    end
    local defer = cleanup()
    local p = H.start_pool{ script = APP, workers = 1, shell = "ulimit -Sn 256;" }
    defer(function() p:stop() end)
    local limits = H.readfile("/proc/" .. p.pid .. "/limits")
    local soft, h = limits:match("Max open files%s+(%d+)%s+(%d+)")
    assert.equals(hard, tonumber(soft))
    assert.equals(hard, tonumber(h))
    local wpid = p:worker_pids()[1]
    local wl = H.readfile("/proc/" .. wpid .. "/limits")
    assert.equals(hard, tonumber(wl:match("Max open files%s+(%d+)")))
    assert.truthy(p:log():find("open files limit (RLIMIT_NOFILE): " .. hard .. " (raised from 256)", 1, true),
      p:log())
    assert.equals(0, p:stop())
  end)

  it("too few for --workers x --concurrency is a warning at start, and the pool serves", function()
    local defer = cleanup()
    local p = H.start_pool{ script = APP, workers = 2, concurrency = 64, shell = "ulimit -Sn 64; ulimit -Hn 64;" }
    defer(function() p:stop() end)
    local log = p:log()
    assert.truthy(log:find("warn  pool%[%d+%]: open files limit 64 is below the 194 this pool may hold "
      .. "open %(%-%-workers 2 x %-%-concurrency 64 %+ margin%)"), log)
    assert.equals(200, (get(p.addr, "/pid")))
    assert.equals(0, p:stop())
  end)

  -- Regression test (was a bug, now fixed): a worker took connections
  -- past its open-files limit; the kernel dropped their fds on the way
  -- (and before that, the worker exited with all it served).
  it("bounds what a worker takes at once by its open files: 80 connections held at once, all answered", function()
    local defer = cleanup()
    local p = H.start_pool{ script = "tests/fixtures/pool_slow.lua", args = { "1" }, workers = 1,
                            shell = "ulimit -Sn 64; ulimit -Hn 64;" }
    defer(function() p:stop() end)
    local st = assert(p:status())
    local cap = st.workers[1].capacity
    assert.truthy(cap >= 1 and cap < 64 - 16, "capacity " .. cap)
    assert.truthy(p:log():find("warn  pool[" .. p.pid .. "]: worker 1 takes at most " .. cap
      .. " connection(s) at once, not --concurrency 1024: its open files limit", 1, true), p:log())
    local fds = {}
    defer(function() for _, fd in ipairs(fds) do fd:close() end end)
    for i = 1, 80 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write("c" .. i .. "\n"))
    end
    for i = 1, 80 do
      assert.equals("1 c" .. i .. "\n", fds[i]:read("a"))
    end
    assert.falsy(p:log():find("closed unserved", 1, true), p:log())
    assert.equals(0, p:stop())
  end)
end)

describe("workers' stdin", function()
  it("is /dev/null: io.read() in a handler returns nil at once", function()
    local defer = cleanup()
    -- The pool's own stdin is a FIFO nobody writes to (opened read-write,
    -- so it never sees EOF either): a read from it would block forever.
    local dir = H.tmpdir()
    assert(H.run("mkfifo " .. q(dir .. "/in")))
    local p = H.start_pool{ script = APP, workers = 1, stdin = "0<>" .. q(dir .. "/in") }
    defer(function() p:stop() end)
    local status, body = get(p.addr, "/stdin")
    assert.equals(200, status)
    assert.equals("stdin nil", body)
    local wpid = p:worker_pids()[1]
    local ok, _, target = H.run("readlink /proc/" .. wpid .. "/fd/0")
    assert.truthy(ok)
    assert.equals("/dev/null\n", target)
    assert.equals(0, p:stop())
  end)
end)

describe("SIGUSR2", function()
  it("from anyone but the master does not interrupt a handler", function()
    local defer = cleanup()
    local p = H.start_pool{ script = APP, workers = 1, extra = { "--timeout", "30" } }
    defer(function() p:stop() end)
    local wpid = p:worker_pids()[1]
    local fd = send_get(p.addr, "/spin")
    wait_active(p, 1)
    for _ = 1, 3 do
      assert(H.run("kill -USR2 " .. wpid))
      H.sleep(0.05)
    end
    local status, body = read_response(fd)
    assert.equals(200, status)
    assert.equals("spun", body)
    assert.equals(wpid, p:worker_pids()[1])
    assert.equals(0, p:stop())
    no_unexpected_errors(p)
  end)
end)

describe("socket paths", function()
  -- Start `pool run` at control path `ctl` in the background, without
  -- waiting; returns a table with its log and exit files.
  local function launch_cmd(dir, name, ctl)
    local r = { log = dir .. "/" .. name .. ".log", exit = dir .. "/" .. name .. ".exit" }
    r.cmd = ("(%s run %s --listen 127.0.0.1:0 --workers 1 --control %s; echo $? > %s) </dev/null >/dev/null 2>%s &")
      :format(H.POOL, APP, q(ctl), q(r.exit), q(r.log))
    return r
  end

  -- The shell creates the exit file before it writes the status: only a
  -- whole line counts.
  local function exited(r)
    return (H.readfile(r.exit) or ""):match("^%d+\n")
  end

  local function master_pid(r)
    return tonumber((H.readfile(r.log) or ""):match("pool%[(%d+)%]: pool "))
  end

  it("a control path goes to exactly one of two pools started at the same moment", function()
    local defer = cleanup()
    local dir = H.tmpdir()
    local ctl = dir .. "/c.sock"
    local launched = {}
    defer(function()
      -- Whatever happened (both winning is the bug), leave nothing running.
      for _, r in ipairs(launched) do
        local pid = master_pid(r)
        if pid and not exited(r) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      end
    end)
    for round = 1, 4 do
      local a, b = launch_cmd(dir, "a" .. round, ctl), launch_cmd(dir, "b" .. round, ctl)
      launched[#launched + 1] = a
      launched[#launched + 1] = b
      os.execute(a.cmd .. " " .. b.cmd)
      -- One exits 1 with one line; the other runs.
      local loser = H.wait_until(function()
        if exited(a) then return a end
        if exited(b) then return b end
      end, 15, "one pool to give up")
      local winner = loser == a and b or a
      local pid = H.wait_until(function() return master_pid(winner) end, 10, "the winner's start")
      assert.equals("1", H.readfile(loser.exit):match("%d+"))
      assert.equals("pool: control socket " .. ctl .. ": another pool is running there\n",
        H.readfile(loser.log))
      local ok, _, out = H.run(H.POOL .. " status --json --control " .. q(ctl))
      assert.truthy(ok, out)
      assert.equals(pid, H.json.decode(out).pid)
      assert.falsy(exited(winner), H.readfile(winner.log))
      -- Leave a stale socket for the next round: the winner dies hard.
      assert(H.run("kill -KILL " .. pid))
      H.wait_until(function() return exited(winner) end, 10, "the winner to die")
    end
  end)

  it("a control path is not taken from a pool still starting there (stale socket, lock held)", function()
    local defer = cleanup()
    local dir = H.tmpdir()
    local ctl = dir .. "/c.sock"
    -- A stale socket (its pool was killed) ...
    local a = launch_cmd(dir, "a", ctl)
    os.execute(a.cmd)
    local pid = H.wait_until(function() return master_pid(a) end, 10, "the first pool's start")
    assert(H.run("kill -KILL " .. pid))
    H.wait_until(function() return H.readfile(a.exit) end, 10, "the first pool to die")
    -- ... while another pool holds the lock, between its check and its
    -- bind: the socket is not live yet, and must not be replaced.
    local held = dir .. "/held"
    os.execute(("flock -n %s -c 'touch %s; exec sleep 30' >/dev/null 2>&1 & echo $! > %s"):format(
      q(ctl .. ".lock"), q(held), q(dir .. "/holder")))
    local holder = tonumber(H.readfile(dir .. "/holder"))
    defer(function()
      for _, c in ipairs(H.children(holder)) do os.execute("kill " .. c .. " 2>/dev/null") end
      os.execute("kill " .. holder .. " 2>/dev/null")
    end)
    H.wait_until(function() return H.readfile(held) end, 10, "the lock to be held")
    local code, _, err = H.run_pool("run " .. APP .. " --listen 127.0.0.1:0 --workers 1 --control " .. q(ctl))
    assert.equals(1, code)
    assert.equals("pool: control socket " .. ctl .. ": another pool is running there\n", err)
    assert.truthy(H.run("test -S " .. q(ctl)), "the stale socket is left alone")
  end)

  it("a unix listener path: a pool waits for another starting there, and does not take its socket", function()
    local defer = cleanup()
    local dir = H.tmpdir()
    local path = dir .. "/app.sock"
    -- A stale socket file at the path (its server is gone) ...
    assert(H.run(("python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind(%q)'"):format(path)))
    assert.truthy(H.run("test -S " .. q(path)))
    -- ... while "another pool" is between its check and its listen: it
    -- holds the directory's lock, then has a live socket there (python,
    -- listening) and lets go of the lock.
    H.writefile(dir .. "/live.py", ([[
import os, socket, time
os.unlink(%q)
s = socket.socket(socket.AF_UNIX)
s.bind(%q)
s.listen(8)
open(%q, "w").write(str(os.getpid()))
time.sleep(20)
]]):format(path, path, dir .. "/live.pid"))
    os.execute(("flock -o %s sh -c 'touch %s; sleep 0.5; python3 %s & while [ ! -s %s ]; do sleep 0.05; done' "
      .. ">/dev/null 2>&1 &"):format(q(dir), q(dir .. "/held"), q(dir .. "/live.py"), q(dir .. "/live.pid")))
    defer(function()
      local pid = tonumber(H.readfile(dir .. "/live.pid") or "")
      if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    end)
    H.wait_until(function() return H.readfile(dir .. "/held") end, 10, "the lock to be held")
    local code, _, err = H.run_pool("run " .. APP .. " --listen " .. q("unix:" .. path)
      .. " --workers 1 --no-control")
    assert.equals(1, code)
    assert.equals("pool: cannot listen on unix:" .. path .. ": unix socket path failed (Address already in use)\n", err)
    assert.truthy(H.readfile(dir .. "/live.pid"), "the live socket was made while the lock was held")
    -- The live socket is still the one that answers.
    assert.truthy(H.run(("python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(%q)'"):format(path)))
  end)

  it("are not removed at stop once another file has taken them over", function()
    local defer = cleanup()
    local p = H.start_pool{ script = APP, workers = 1, listen = "unix" }
    defer(function() p:stop() end)
    local sock = p.dir .. "/pool.sock"
    assert.equals(200, (get("unix:" .. sock, "/pid")))
    -- Someone replaces both paths with files of their own.
    for _, path in ipairs { p.control, sock } do
      assert(os.remove(path))
      H.writefile(path, "not yours\n")
    end
    assert.equals(0, p:stop())
    assert.equals("not yours\n", H.readfile(p.control))
    assert.equals("not yours\n", H.readfile(sock))
  end)

  it("are removed at stop while they are still the pool's own", function()
    local defer = cleanup()
    local p = H.start_pool{ script = APP, workers = 1, listen = "unix" }
    defer(function() p:stop() end)
    assert.equals(0, p:stop())
    assert.falsy(H.readfile(p.control) or H.run("test -e " .. q(p.control)))
    assert.falsy(H.run("test -e " .. q(p.dir .. "/pool.sock")))
  end)
end)
