-- fdpool.testing.process: the process harness of fdpool.testing
-- (wait_until, pool_binary, start): the real `pool` binary in the
-- background for integration specs. testing.start (and the polling in
-- wait_until) needs the C module `fdpool`.
local http = require "fdpool.testing.http"
local json = require "fdpool.testing.json"

local has_fdpool, fdpool = pcall(require, "fdpool")
if not has_fdpool then fdpool = nil end

local M = {}

-- ---- waiting -------------------------------------------------------------

local function now()
  if fdpool and fdpool.now then return fdpool.now() end
  local f = io.open("/proc/uptime")
  if f then
    local t = f:read("n")
    f:close()
    if t then return t end
  end
  return os.time()
end

local function pause(s)
  if fdpool then return fdpool.sleep(s) end
  -- Without the C module: a blocking wait through the shell.
  os.execute(("sleep %.3f"):format(s))
end

-- Poll fn() until it returns a truthy value: that value, or nil after
-- timeout seconds. The delay between polls grows from 5 ms to 50 ms.
local function poll(fn, timeout)
  local deadline = now() + (timeout or 5)
  local delay = 0.005
  while true do
    local v = fn()
    if v then return v end
    if now() > deadline then return nil end
    pause(delay)
    delay = math.min(delay * 2, 0.05)
  end
end

--- Poll fn() until it returns a truthy value, with a deadline (never a
-- bare sleep in a spec).
-- @tparam function fn
-- @tparam[opt=5] number timeout seconds
-- @tparam[opt] string what for the error message
-- @return fn's truthy value; raises "timed out waiting for WHAT" after
-- timeout seconds
function M.wait_until(fn, timeout, what)
  local v = poll(fn, timeout)
  if v == nil then error("timed out waiting for " .. (what or "a condition"), 2) end
  return v
end

-- ---- the real pool in the background -------------------------------------

local function quote(s)
  s = tostring(s)
  if s:match("^[%w%./_:=,@%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function alive(pid)
  local s = readfile("/proc/" .. pid .. "/stat")
  if not s then return false end
  local state = s:match("^%d+ %b() (%a)")
  return state ~= "Z" and state ~= "X"
end

--- The pool binary testing.start uses by default: $FDPOOL_POOL, else
-- ./build/pool if it exists, else "pool" (on PATH).
function M.pool_binary()
  local env = os.getenv("FDPOOL_POOL")
  if env and env ~= "" then return env end
  local f = io.open("build/pool", "rb")
  if f then
    f:close()
    return "./build/pool"
  end
  return "pool"
end

local Pool = {}
local pool_mt = { __index = Pool, __name = "fdpool.testing.pool" }

--- The pool's log (its stderr) so far.
function Pool:log()
  return self._log or readfile(self.log_path) or ""
end

--- The pool's exit code once it has exited, else nil.
function Pool:exited()
  if self._code then return self._code end
  local s = readfile(self.exit_path)
  return s and tonumber(s:match("%d+")) or nil
end

--- The status table, from `pool status --json`.
-- @treturn[1] table as `pool status --json` (workers[i].state, .pid, ...)
-- @return[2] nil
-- @treturn[2] string the command's error output
function Pool:status()
  local p = io.popen(("%s status --json --control %s 2>%s"):format(quote(self.pool),
    quote(self.control), quote(self.dir .. "/status.err")))
  local out = p:read("a")
  local ok = p:close()
  if not ok then
    return nil, (readfile(self.dir .. "/status.err") or "") .. out
  end
  local st, err = json.json_decode(out)
  if type(st) ~= "table" then return nil, err or "pool status: no table" end
  for _, w in ipairs(st.workers or {}) do
    if w.pid and w.pid > 0 then self._pids[w.pid] = true end
  end
  return st
end

--- A client socket connected to the pool (an fdpool.fd: write, read,
-- shutdown, close).
-- @tparam[opt=10] number timeout seconds for connect, each read and write
function Pool:connect(timeout)
  return fdpool.connect(self.addr, timeout or 10)
end

--- Send bytes and read everything until the server closes. After
-- sending, the client shuts down its sending side (the handler then sees
-- "closed" at the end of the input, as testing.conn does) unless
-- keep_open is set.
-- @tparam string bytes
-- @tparam[opt] table opts `timeout` (seconds, default 10), `keep_open`
-- @treturn[1] string what the server sent
-- @return[2] nil
-- @treturn[2] string the error
function Pool:request(bytes, opts)
  opts = opts or {}
  local fd, err = fdpool.connect(self.addr, opts.timeout or 10)
  if not fd then return nil, err end
  if bytes and #bytes > 0 then
    local ok, werr = fd:write(bytes)
    if not ok then
      fd:close()
      return nil, werr
    end
  end
  if not opts.keep_open then fd:shutdown("send") end
  local data, rerr = fd:read("a")
  fd:close()
  if not data then return nil, rerr end
  return data
end

--- One HTTP request (with Connection: close) and its parsed response.
-- @tparam string method
-- @tparam string path
-- @tparam[opt] table opts as testing.build_request, plus `timeout`
-- @treturn[1] integer status
-- @treturn[1] table headers (lower-case names)
-- @treturn[1] string body
-- @return[2] nil
-- @treturn[2] string the error
function Pool:http(method, path, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local has_conn = false
  for k in pairs(headers) do if k:lower() == "connection" then has_conn = true end end
  if not has_conn then headers.Connection = "close" end
  local bytes = http.build_request(method, path, { headers = headers, body = opts.body,
    version = opts.version })
  local data, err = self:request(bytes, { timeout = opts.timeout })
  if not data then return nil, err end
  local status, h, body = http.parse_response(data, method)
  if not status then return nil, h end
  return status, h, body
end

--- Stop the pool and wait for it and its workers to exit.
-- @tparam[opt="TERM"] string sig "TERM" (fast stop), "QUIT" (graceful)
-- or "KILL"
-- @treturn integer the pool's exit code
function Pool:stop(sig)
  if self._code then return self._code end
  if self.pid and not self:exited() then
    os.execute("kill -" .. (sig or "TERM") .. " " .. self.pid .. " 2>/dev/null")
  end
  local code = poll(function() return self:exited() end, 15)
  if not code and self.pid then
    os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
    code = poll(function() return self:exited() end, 5)
  end
  -- Workers die with the master (PDEATHSIG, channel EOF): wait for them.
  poll(function()
    for pid in pairs(self._pids) do
      if alive(pid) then return false end
    end
    return true
  end, 5)
  self._log = self:log()
  self._code = code or -1
  os.execute("rm -rf " .. quote(self.dir))
  return self._code
end

pool_mt.__close = function(p) p:stop() end
pool_mt.__gc = function(p)
  if not p._code and p.pid and not p:exited() then
    os.execute("kill -KILL " .. p.pid .. " 2>/dev/null; rm -rf " .. quote(p.dir))
  end
end

--- Start the real `pool run` in the background and wait until it is
-- ready: it logged "listening on ADDR" and all its workers are free or
-- busy in `pool status`.
-- @tparam[opt] table opts `script` (nil: the built-in hello), `args`
-- (list, after `--`), `workers` (default 2), `concurrency`, `policy`,
-- `listen` ("127.0.0.1:0" default: a free port; "unix": a socket in a
-- temp dir; or any --listen address), `flags` (list of more arguments),
-- `pool` (the binary; default testing.pool_binary()), `timeout` (seconds
-- to wait for readiness, default 10)
-- @treturn[1] table the pool: `.addr`, `.pid`, `:request(bytes)`,
-- `:http(method, path, opts)`, `:status()`, `:log()`, `:stop()`,
-- `:connect()`, `:exited()`
-- @return[2] nil
-- @treturn[2] string why it did not start, with its log
function M.start(opts)
  opts = opts or {}
  if not fdpool then error("fdpool.testing.start needs the fdpool C module", 2) end
  local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/fdpool-testing.XXXXXX\"")
  local dir = p:read("l")
  p:close()
  if not dir then return nil, "mktemp failed" end
  local pool = setmetatable({ dir = dir, pool = opts.pool or M.pool_binary(),
    log_path = dir .. "/pool.log", exit_path = dir .. "/exit",
    control = dir .. "/control.sock", _pids = {} }, pool_mt)
  local workers = opts.workers or 2
  local listen = opts.listen or "127.0.0.1:0"
  if listen == "unix" then listen = "unix:" .. dir .. "/pool.sock" end
  local cmd = { pool.pool, "run" }
  local function add(...) for _, a in ipairs{ ... } do cmd[#cmd + 1] = tostring(a) end end
  if opts.script then add(opts.script) end
  add("--listen", listen, "--workers", workers)
  if opts.concurrency then add("--concurrency", opts.concurrency) end
  if opts.policy then add("--policy", opts.policy) end
  add("--control", pool.control)
  for _, f in ipairs(opts.flags or {}) do add(f) end
  if opts.args then
    add("--")
    for _, a in ipairs(opts.args) do add(a) end
  end
  for i, c in ipairs(cmd) do cmd[i] = quote(c) end
  pool.cmd = table.concat(cmd, " ")
  os.execute(("(%s; echo $? >%s) </dev/null >%s 2>%s &"):format(pool.cmd,
    quote(pool.exit_path), quote(dir .. "/stdout"), quote(pool.log_path)))
  local timeout = opts.timeout or 10
  local function failed(why)
    local code = pool:stop("KILL")
    return nil, ("pool did not start (%s; exit code %d): %s"):format(why, code, pool:log())
  end
  -- The master's pid is in every log line: "pool[PID]".
  local r = poll(function()
    return tonumber(pool:log():match("pool%[(%d+)%]")) or pool:exited() and "exited"
  end, timeout)
  if r == "exited" or r == nil then return failed(r or "no log line") end
  pool.pid = r
  r = poll(function()
    return pool:log():match("listening on (%S+)") or pool:exited() and "exited"
  end, timeout)
  if r == "exited" or r == nil then return failed(r or "not listening") end
  pool.addr = r
  r = poll(function()
    if pool:exited() then return "exited" end
    local st = pool:status()
    if not st then return false end
    local n = 0
    for _, w in ipairs(st.workers or {}) do
      if w.state == "free" or w.state == "busy" then n = n + 1 end
    end
    return n >= workers
  end, timeout)
  if r ~= true then return failed(r or "workers not ready") end
  return pool
end

return M
