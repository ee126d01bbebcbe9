-- tests/helpers.lua: what the specs share. Start the real `pool` binary
-- in the background on a free port or a unix socket, wait for states by
-- polling with deadlines (never bare sleeps), talk to it over real
-- sockets, stop it and read its exit code and log.
local fdpool = require "fdpool"
local json = require "dkjson"

local H = {}

H.BUILD = os.getenv("FDPOOL_BUILD") or "build"
H.POOL = H.BUILD .. "/pool"
H.FDFETCH = H.BUILD .. "/fdfetch"
H.json = json

local tmpdirs, pools = {}, {}
-- When the Lua state closes: kill any pool a failed test left running
-- (busted keeps only the last finally() of a test), remove temp dirs.
H._sentinel = setmetatable({}, { __gc = function()
  for _, p in ipairs(pools) do
    if p.pid and not p:exited() then os.execute("kill -KILL " .. p.pid .. " 2>/dev/null") end
  end
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf '" .. d .. "'") end
end })

function H.quote(s)
  s = tostring(s)
  if s:match("^[%w%./_:=,@%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function H.readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.writefile(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

-- busted keeps only the last function a test gives finally() (each call
-- replaces the one before), so a test that registers two lost the first:
-- a redis-server, a pool or a client leaked. H.defer(finally, fn) stacks
-- them: all run when the test ends, the last registered first, the
-- first error raised after all ran. Pass the test's own finally.
local deferred = setmetatable({}, { __mode = "k" })
function H.defer(finally, fn)
  local list = deferred[finally]
  if not list then
    list = {}
    deferred[finally] = list
    finally(function()
      deferred[finally] = nil
      local err
      for i = #list, 1, -1 do
        local ok, e = pcall(list[i])
        if not ok and err == nil then err = e end
      end
      if err ~= nil then error(err, 0) end
    end)
  end
  list[#list + 1] = fn
end

function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/fdpool-test.XXXXXX")
  local d = p:read("l")
  p:close()
  tmpdirs[#tmpdirs + 1] = d
  return d
end

-- Run a shell command; returns ok, exit code, stdout..stderr.
-- LD_PRELOAD is unset for the command: under the ASan run it holds
-- libasan for the lua5.4 running busted, and tools like curl hang with it.
function H.run(cmd)
  local p = io.popen("unset LD_PRELOAD; (" .. cmd .. ") 2>&1; echo \"__rc=$?\"")
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)__rc=(%d+)%s*$")
  rc = tonumber(rc)
  return rc == 0, rc, body
end

function H.sleep(s) fdpool.sleep(s) end

function H.now()
  local p = io.open("/proc/uptime")
  local t = p:read("n")
  p:close()
  return t
end

-- Poll fn() until it returns a truthy value or timeout (seconds) passes;
-- returns that value, or raises with msg.
-- TCP states of the server's side of the connections to port, from
-- /proc/net/tcp (the kernel lists pending ones too), the listener's own
-- row ("0A") left out: { ["03"] = SYN_RECV count, ["01"] = ESTABLISHED, ... }.
function H.tcp_states(port)
  local out = {}
  for line in io.lines("/proc/net/tcp") do
    local lport, st = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x%x)")
    if lport and tonumber(lport, 16) == port and st ~= "0A" then
      out[st] = (out[st] or 0) + 1
    end
  end
  return out
end

function H.wait_until(fn, timeout, msg)
  local deadline = H.now() + (timeout or 5)
  local delay = 0.005
  while true do
    local v = fn()
    if v then return v end
    if H.now() > deadline then
      error("timed out waiting for " .. (msg or "a condition"), 2)
    end
    fdpool.sleep(delay)
    delay = math.min(delay * 2, 0.05)
  end
end

function H.alive(pid)
  local s = H.readfile("/proc/" .. pid .. "/stat")
  if not s then return false end
  local state = s:match("^%d+ %b() (%a)")
  return state ~= "Z" and state ~= "X"
end

-- The number of fds pid has open, or nil when there is no such process.
-- A shell reads them (through popen), and the popen pipe is left out:
-- the calling process holds its read end, and, for a moment after the
-- spawn, its write end too (until popen closes it in the parent); on a
-- busy machine the shell can get there first, so counting the pipe gave
-- the caller's own count +1 or +2 at random.
function H.fd_count(pid)
  local ok, _, out = H.run(([[
d=/proc/%d/fd; [ -d $d ] || exit 1
me=$(readlink /proc/$$/fd/1)
n=$(LC_ALL=C ls -l $d 2>/dev/null | grep -F -- ' -> ' | grep -cvF -- "-> $me")
echo "fds=$n"]]):format(pid))
  return ok and tonumber(out:match("fds=(%d+)")) or nil
end

-- Child pids of pid (from /proc/PID/task/*/children).
function H.children(pid)
  local s = H.readfile("/proc/" .. pid .. "/task/" .. pid .. "/children") or ""
  local t = {}
  for c in s:gmatch("%d+") do t[#t + 1] = tonumber(c) end
  return t
end

-- Start `pool run`. opts: script (nil: built-in hello), args, workers,
-- concurrency, policy, listen (default 127.0.0.1:0; "unix" = a socket
-- in a temp dir), extra (list of more flags), wait (default true: wait
-- for "listening on"), shell and stdin (see below).
function H.start_pool(opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local p = { dir = dir, log_path = dir .. "/pool.log", exit_path = dir .. "/exit",
              control = dir .. "/control.sock" }
  local cmd = { H.POOL, "run" }
  if opts.script then cmd[#cmd + 1] = opts.script end
  local listen = opts.listen or "127.0.0.1:0"
  if listen == "unix" then listen = "unix:" .. dir .. "/pool.sock" end
  if listen ~= false then
    cmd[#cmd + 1] = "--listen"; cmd[#cmd + 1] = listen
  end
  cmd[#cmd + 1] = "--workers"; cmd[#cmd + 1] = tostring(opts.workers or 2)
  if opts.concurrency then
    cmd[#cmd + 1] = "--concurrency"; cmd[#cmd + 1] = tostring(opts.concurrency)
  end
  if opts.policy then cmd[#cmd + 1] = "--policy"; cmd[#cmd + 1] = opts.policy end
  cmd[#cmd + 1] = "--control"; cmd[#cmd + 1] = p.control
  for _, f in ipairs(opts.extra or {}) do cmd[#cmd + 1] = f end
  if opts.args then
    cmd[#cmd + 1] = "--"
    for _, a in ipairs(opts.args) do cmd[#cmd + 1] = a end
  end
  for i, c in ipairs(cmd) do cmd[i] = H.quote(c) end
  p.cmd = table.concat(cmd, " ")
  -- opts.shell: a shell fragment run first (e.g. "ulimit -Hn 64;");
  -- opts.stdin: a redirection for the pool's stdin (e.g. "0<>FIFO").
  if opts.stdin then p.cmd = p.cmd .. " " .. opts.stdin end
  -- Under the sanitizer build the pool checks for leaks at exit (the
  -- busted process itself runs with detect_leaks=0).
  local env = H.BUILD ~= "build" and "ASAN_OPTIONS=detect_leaks=1 " or ""
  os.execute(("(%s%s%s; echo $? > %s) </dev/null >%s/stdout 2>%s &"):format(
    opts.shell and opts.shell .. " " or "", env, p.cmd, p.exit_path, dir, p.log_path))
  setmetatable(p, { __index = H.Pool })
  pools[#pools + 1] = p
  -- The master's pid is in every log line: "pool[PID]".
  -- (A pool that exits at once may write its log between our reading it
  -- and seeing the exit: read it again then. Never take the exit code
  -- for a pid.)
  local function logged_pid()
    return tonumber((H.readfile(p.log_path) or ""):match("pool%[(%d+)%]"))
  end
  p.pid = H.wait_until(function()
    return logged_pid() or (p:exited() and (logged_pid() or "exited"))
  end, 10, "the pool's first log line")
  if type(p.pid) ~= "number" then p.pid = nil end
  if opts.wait ~= false and p.pid then
    local addr = H.wait_until(function()
      if p:exited() then return "exited" end
      return (p:log():match("listening on (%S+)"))
    end, 10, "the pool to listen")
    if addr ~= "exited" then p.addr = addr end
    if opts.ready ~= false and p.addr then
      p:wait_ready(opts.workers or 2)
    end
  end
  return p
end

H.Pool = {}

function H.Pool:log() return H.readfile(self.log_path) or "" end

-- Exit code once the pool has exited, else nil.
function H.Pool:exited()
  local s = H.readfile(self.exit_path)
  return s and tonumber(s:match("%d+")) or nil
end

-- Sanitizer reports in a pool's log fail the test that stopped it.
local function check_sanitizers(log)
  for _, pat in ipairs { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:" } do
    local i = log:find(pat, 1, true)
    if i then error("sanitizer report in the pool's log:\n" .. log:sub(math.max(1, i - 200), i + 1500), 3) end
  end
end

function H.Pool:wait_exit(timeout)
  local code = H.wait_until(function() return self:exited() end, timeout or 10, "the pool to exit")
  check_sanitizers(self:log())
  return code
end

function H.Pool:kill(sig)
  if self.pid then os.execute("kill -" .. (sig or "TERM") .. " " .. self.pid .. " 2>/dev/null") end
end

-- Stop with SIGTERM (or sig) and return the exit code.
function H.Pool:stop(sig)
  if self:exited() then return self:exited() end
  self:kill(sig or "TERM")
  return self:wait_exit(15)
end

-- The status table as JSON (through `pool status --json`).
function H.Pool:status()
  local ok, code, out = H.run(H.POOL .. " status --json --control " .. H.quote(self.control))
  if not ok then return nil, out, code end
  return json.decode(out)
end

-- Wait until n workers report READY (state free or busy).
function H.Pool:wait_ready(n)
  return H.wait_until(function()
    local st = self:status()
    if not st then return false end
    local k = 0
    for _, w in ipairs(st.workers) do
      if w.state == "free" or w.state == "busy" then k = k + 1 end
    end
    return k >= n and st
  end, 10, n .. " ready workers")
end

function H.Pool:worker_pids()
  local st = assert(self:status())
  local t = {}
  for _, w in ipairs(st.workers) do t[#t + 1] = w.pid end
  return t
end

-- Send bytes, read everything until the server closes.
function H.request(addr, bytes, timeout)
  local fd, err = fdpool.connect(addr, timeout or 10)
  if not fd then return nil, err end
  if bytes and #bytes > 0 then assert(fd:write(bytes)) end
  local data, rerr = fd:read("a")
  fd:close()
  return data, rerr
end
H.tcp_request = H.request

function H.http_get(addr, path, headers)
  return H.request(addr, ("GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n%s\r\n"):format(
    path or "/", headers or ""))
end

-- Count lines of the log at level "error" that do not match any of the
-- allowed patterns.
function H.unexpected_errors(log, allowed)
  local bad = {}
  for line in log:gmatch("[^\n]+") do
    if line:match("^%S+ error ") then
      local ok = false
      for _, pat in ipairs(allowed or {}) do
        if line:find(pat) then ok = true end
      end
      if not ok then bad[#bad + 1] = line end
    end
  end
  return bad
end

-- Wall-clock time in seconds with nanosecond resolution (H.now() reads
-- /proc/uptime, which has 10 ms steps: too coarse to time a few rounds).
-- The sample is taken inside `date`, so an interval measured between two
-- calls is never shorter than the real one.
function H.clock()
  local p = io.popen("date +%s.%N")
  local t = p:read("n")
  p:close()
  return t
end

-- Run `pool ARGS` (a shell fragment) under `timeout`, with stdout and
-- stderr kept apart. Returns the exit code, stdout, stderr.
function H.run_pool(args, timeout)
  local dir = H.tmpdir()
  local _, code = H.run(("timeout %d %s %s >%s/out 2>%s/err </dev/null"):format(
    timeout or 20, H.POOL, args, dir, dir))
  return code, H.readfile(dir .. "/out") or "", H.readfile(dir .. "/err") or ""
end

-- Sum of a field over the workers of a status table.
function H.sum_workers(st, field)
  local n = 0
  for _, w in ipairs(st.workers) do n = n + (w[field] or 0) end
  return n
end

-- A status table once pred(st) holds (polled through the control socket).
function H.wait_status(p, pred, timeout, what)
  return H.wait_until(function()
    local st = p:status()
    return st and pred(st) and st
  end, timeout or 5, what)
end

-- Every worker free with nothing active.
function H.all_idle(st)
  for _, w in ipairs(st.workers) do
    if w.state ~= "free" or w.active ~= 0 then return false end
  end
  return true
end

-- busted keeps only the last finally() of a test, so a test registers
-- one, through this: local defer = H.cleanup(finally); defer(fn) adds a
-- cleanup; they run last-in first-out, each protected, even when the test
-- fails.
function H.cleanup(finally)
  local list = {}
  finally(function()
    for i = #list, 1, -1 do pcall(list[i]) end
  end)
  return function(fn) list[#list + 1] = fn end
end

-- How many times the plain string `plain` occurs in s.
function H.count(s, plain)
  local n, i = 0, 1
  while true do
    local a, b = s:find(plain, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

-- The values of a list as the keys of a set.
function H.set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- Lines of s (no empty ones), as a list.
function H.lines(s)
  local t = {}
  for l in (s or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- Whether a command is on PATH.
function H.have(cmd)
  return (H.run("command -v " .. cmd .. " >/dev/null 2>&1"))
end

-- A free TCP port on 127.0.0.1 (bound, read, released).
function H.free_port()
  local p = assert(fdpool.pool { handler = function() end, listen = "127.0.0.1:0",
    workers = 1, control = false })
  local port = tonumber(p:addresses()[1]:match(":(%d+)$"))
  p:close()
  return port
end

-- Start argv in the background, outside busted's LD_PRELOAD, keeping its
-- pid through exec (sh writes $$, then execs): DIR/NAME.pid, .log (stdout
-- and stderr), .exit (the exit code, once it exits). Returns an object
-- with the H.Pool methods (log, exited, kill, stop, status, wait_ready).
function H.spawn(dir, name, argv, control)
  local words = {}
  for i, a in ipairs(argv) do words[i] = H.quote(a) end
  local base = dir .. "/" .. name
  os.execute(("(unset LD_PRELOAD; sh -c 'echo $$ > %s.pid; exec \"$@\"' sh %s; echo $? > %s.exit)"
    .. " </dev/null >%s.log 2>&1 &"):format(base, table.concat(words, " "), base, base))
  local p = setmetatable({ dir = dir, log_path = base .. ".log", exit_path = base .. ".exit",
    control = control }, { __index = H.Pool })
  p.pid = H.wait_until(function()
    return tonumber((H.readfile(base .. ".pid") or ""):match("%d+"))
  end, 5, name .. " to start")
  return p
end

-- Stop a spawned process (TERM, then KILL after 5 s) if it still runs.
function H.reap(p)
  if not p or p:exited() then return end
  p:kill("TERM")
  local ok = pcall(p.wait_exit, p, 5)
  if not ok then p:kill("KILL"); pcall(p.wait_exit, p, 5) end
end

-- A raw HTTP/1.1 client over fdpool.connect (timeout seconds, default
-- 10): c:send(bytes), c:response() -> status, body of the next response
-- (Content-Length bodies) or nil, why at EOF or timeout; c:eof() -> true
-- at EOF with nothing more sent; c:close().
local RawClient = {}
RawClient.__index = RawClient

-- The handler of the strict-prefork specs (tests/66-*), formatted with
-- its directory: /block?f=X answers once DIR/X exists (waiting in
-- fdpool.sleep), /spin?f=X the same without ever yielding (it holds its
-- worker); every answer is "PATH[/X] PID".
H.PREFORK_APP = [[
local fdpool = require "fdpool"
local http = require "fdpool.http"
local DIR = %q
return http.serve(function(req, res)
  local f = req.path == "/block" and req.query:match("f=(%%w+)")
  if f then
    while true do
      local h = io.open(DIR .. "/" .. f)
      if h then h:close() break end
      fdpool.sleep(0.01)
    end
  end
  local g = req.path == "/spin" and req.query:match("f=(%%w+)")
  while g do                        -- holds the worker: never yields
    local h = io.open(DIR .. "/" .. g)
    if h then h:close() break end
  end
  f = f or g
  res:send(req.path .. (f and ("/" .. f) or "") .. " " .. fdpool.worker.pid .. "\n")
end)
]]

-- A plain keep-alive GET head for PATH.
function H.get_head(path)
  return "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n\r\n"
end

-- A GET with an X-N header (the dormant-connection specs number their
-- requests with it), and one response read from fd: status, headers
-- (lower-case names), body; nil at EOF.
function H.get_n(path, n)
  return ("GET %s HTTP/1.1\r\nHost: t\r\nX-N: %s\r\n\r\n"):format(path, n)
end

function H.read_response(fd)
  local line = fd:read("l")
  if not line then return nil end
  local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
  local h = {}
  while true do
    local l = assert(fd:read("l"))
    l = l:gsub("\r$", "")
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    h[k:lower()] = v
  end
  local body = assert(fd:read(tonumber(h["content-length"])))
  return status, h, body
end

-- n connections to pool p, each served once ("GET /b" with X-N: i,
-- answered "/b i") and then left idle: the dormant specs' ballast, held
-- by the worker when this returns. Returns their fds.
function H.ballast(p, n)
  local fds = {}
  for i = 1, n do
    fds[i] = assert(fdpool.connect(p.addr, 10))
    assert(fds[i]:write(H.get_n("/b", i)))
    local body = select(3, H.read_response(fds[i]))
    if body ~= "/b " .. i .. "\n" then
      error(("ballast connection %d: expected \"/b %d\\n\", got %q"):format(i, i, tostring(body)), 2)
    end
  end
  H.wait_status(p, function(st) return H.sum_workers(st, "active") >= n end, 10,
    "the ballast held by the worker")
  return fds
end

function H.raw_client(addr, timeout)
  return setmetatable({ fd = assert(fdpool.connect(addr, timeout or 10)), buf = "" },
                      RawClient)
end

function RawClient:send(s) assert(self.fd:write(s)); return self end

function RawClient:response()
  while true do
    local i = self.buf:find("\r\n\r\n", 1, true)
    if i then
      local n = tonumber(self.buf:sub(1, i):match("\r\n[Cc]ontent%-[Ll]ength: *(%d+)"))
      if n and #self.buf >= i + 3 + n then
        local st = tonumber(self.buf:match("^HTTP/1%.%d (%d%d%d)"))
        local body = self.buf:sub(i + 4, i + 3 + n)
        self.buf = self.buf:sub(i + 4 + n)
        return st, body
      end
    end
    local d, err = self.fd:read(65536)
    if not d then return nil, err or "closed" end
    self.buf = self.buf .. d
  end
end

function RawClient:eof()
  local d, err = self.fd:read(65536)
  while d do
    self.buf = self.buf .. d
    d, err = self.fd:read(65536)
  end
  return err == nil and self.buf == ""
end

function RawClient:close() pcall(self.fd.close, self.fd) end

return H
