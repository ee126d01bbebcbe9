-- bench/proxy-mem.lua [N]: memory per in-flight upstream call, for
-- scripts/bench's proxy scenario (run by it; or alone:
-- LUA_CPATH='build/?.so;;' lua5.4 bench/proxy-mem.lua 1000). One proxy
-- worker (bench/proxy.lua, fdpool.http.client) holds N requests whose
-- upstream calls all wait at once (an fdpool upstream that answers /hold
-- only after /release); the worker's RSS then, minus its RSS after a
-- warm-up, over N. Prints one line; exits 1 if a request failed.
local fdpool = require "fdpool"

local N = tonumber(arg[1]) or 1000
local POOL = os.getenv("FDPOOL_POOL") or "build/pool"

local function sh(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("a")
  f:close()
  return out
end
local function readfile(p)
  local f = io.open(p)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
local function wait(fn, what, secs)
  local t0 = fdpool.now()
  while fdpool.now() - t0 < (secs or 30) do
    local v = fn()
    if v then return v end
    fdpool.sleep(0.05)
  end
  error("timed out waiting for " .. what)
end

local dir = sh("mktemp -d /tmp/fdpool-proxymem.XXXXXX"):gsub("%s+$", "")
local up_script = dir .. "/up.lua"
local f = assert(io.open(up_script, "w"))
f:write([[
local fdpool = require "fdpool"
local http = require "fdpool.http"
local released = false
return http.serve(function(req, res)
  if req.path == "/release" then released = true
  elseif req.path == "/hold" then
    while not released do fdpool.sleep(0.05) end
  end
  res:send("ok\n")
end)
]])
f:close()

local pids = {}
local function start(name, args)
  local log = dir .. "/" .. name .. ".log"
  os.execute(("%s run %s --no-control > %s 2>&1 & echo $! > %s/%s.pid"):format(
    POOL, args, log, dir, name))
  local pid = tonumber(wait(function() return readfile(dir .. "/" .. name .. ".pid") end, name .. " pid"))
  pids[#pids + 1] = pid
  local addr = wait(function() return (readfile(log) or ""):match("listening on (%S+)") end, name)
  return addr, pid
end
local function cleanup()
  for _, p in ipairs(pids) do os.execute("kill " .. p .. " 2>/dev/null") end
  os.execute("sleep 0.5; rm -rf " .. dir)
end

local ok, err = pcall(function()
  local conc = tostring(N + 100)
  local up = start("up", ("%s --listen 127.0.0.1:0 --workers 1 --concurrency %s"):format(up_script, conc))
  local proxy, mpid = start("proxy", ("bench/proxy.lua --listen unix:%s/proxy.sock --workers 1 "
    .. "--concurrency %s -- http://%s"):format(dir, conc, up))
  local wpid = wait(function()
    return tonumber((readfile(("/proc/%d/task/%d/children"):format(mpid, mpid)) or ""):match("%d+"))
  end, "the proxy worker")
  local function rss_kib()
    return tonumber(readfile("/proc/" .. wpid .. "/status"):match("VmRSS:%s*(%d+)"))
  end
  local function get(path)
    local fd = assert(fdpool.connect(proxy, 30))
    assert(fd:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    return fd
  end
  for _ = 1, 50 do
    local fd = get("/quick")
    assert(fd:read("a"):match("^HTTP/1.1 200"))
    fd:close()
  end
  collectgarbage()
  fdpool.sleep(0.2)
  local rss0 = rss_kib()
  local fds = {}
  for i = 1, N do fds[i] = get("/hold") end
  -- Every call is in flight when the upstream's worker holds N of them:
  -- its status line counts them (fdpool.status through a request would
  -- queue behind them, so ask the proxy's worker memory once the
  -- upstream's connections are all open).
  wait(function()
    local n = tonumber(sh("ls /proc/" .. wpid .. "/fd 2>/dev/null | wc -l"))
    return n and n >= 2 * N and n
  end, N .. " calls in flight", 60)
  fdpool.sleep(0.3)
  local rss1 = rss_kib()
  local rel = assert(fdpool.connect(up, 10))
  rel:write("GET /release HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  rel:read("a")
  rel:close()
  local good = 0
  for i = 1, N do
    if (fds[i]:read("a") or ""):match("^HTTP/1.1 200") then good = good + 1 end
    fds[i]:close()
  end
  print(("one proxy worker, %d upstream calls in flight: RSS %d -> %d KiB, %.1f KiB per call "
    .. "(client conn, handler coroutine, upstream socket, client state); %d/%d answered 200")
    :format(N, rss0, rss1, (rss1 - rss0) / N, good, N))
  if good ~= N then error(good .. " of " .. N .. " requests answered 200") end
end)
cleanup()
if not ok then
  io.stderr:write("proxy-mem: ", tostring(err), "\n")
  os.exit(1)
end
