-- bench/shared-vs-nginx.lua: the shared dictionary's get/set/incr per
-- second with 1 and 2 workers, fdpool (fdpool.shared.bench, --shared
-- bench:64m) beside nginx + lua-nginx-module (ngx.shared.bench,
-- lua_shared_dict bench 64m), and the wake-up cost of a queue waited on
-- by 1000 handlers. Both servers on 127.0.0.1, same Lua loop: each of W
-- connections (W = workers, sent at once, each served by a different
-- worker: a round where one worker took both is run again) asks for N
-- operations on 1000 keys and answers with its loop's time; ops/s =
-- W * N / the slowest loop (so the workers contend for the lock). Both
-- servers run at once and their rounds alternate (fdpool, nginx, fdpool,
-- ...). One warm-up round (LuaJIT), then the median of ROUNDS.
-- Run from the repository root: lua5.4 bench/shared-vs-nginx.lua
-- (scripts/bench runs it; N=1000000 ROUNDS=5 by default; the median round
-- is shown). FDPOOL_BUILD=build by default; nginx listens on PORT_BASE + 20
-- (and up) when PORT_BASE is set, else on a random port.
package.path = "./tests/?.lua;./lua/?.lua;" .. package.path
package.cpath = "./" .. (os.getenv("FDPOOL_BUILD") or "build") .. "/?.so;" .. package.cpath
local H = require "helpers"
local fdpool = require "fdpool"

local N = tonumber(os.getenv("N")) or 1000000
local ROUNDS = tonumber(os.getenv("ROUNDS")) or 5
local WAITERS = tonumber(os.getenv("WAITERS")) or 1000
local OPS = { "get", "set", "incr", "capacity" }

-- The one loop both servers run (dict, op, n) -> seconds, as text.
local LOOP = [[
local function loop(d, op, n, now)
  local keys = {}
  for i = 1, 1000 do keys[i] = "key" .. i end
  if op == "get" then
    for i = 1, 1000 do d:set(keys[i], "value-" .. i) end
  end
  local t0 = now()
  if op == "get" then
    for i = 1, n do local v = d:get(keys[i % 1000 + 1]) end
  elseif op == "set" then
    for i = 1, n do d:set(keys[i % 1000 + 1], "value") end
  elseif op == "capacity" then          -- the floor: a method call, no lock
    for i = 1, n do local c = d:capacity() end
  else                                  -- counters of their own (keys hold strings)
    local nkeys = {}
    for i = 1, 1000 do nkeys[i] = "num" .. i end
    for i = 1, n do d:incr(nkeys[i % 1000 + 1], 1, 0) end
  end
  return now() - t0
end
]]

local NGINX_CONF = [==[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes @WORKERS@;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path tmp;
    proxy_temp_path tmp;
    fastcgi_temp_path tmp;
    uwsgi_temp_path tmp;
    scgi_temp_path tmp;
    lua_shared_dict bench 64m;
    init_by_lua_block {
        -- a microsecond clock (ngx.now() has millisecond steps)
        local ffi = require "ffi"
        ffi.cdef[[
            typedef struct { long tv_sec; long tv_nsec; } bench_ts;
            int clock_gettime(int clk, bench_ts *ts);
        ]]
        local ts = ffi.new("bench_ts")
        function bench_now()
            ffi.C.clock_gettime(1, ts)
            return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
        end
    }
    server {
        listen 127.0.0.1:@PORT@ reuseport;
        location / {
            content_by_lua_block {
]==] .. LOOP .. [==[
                local op, n = ngx.var.uri:match("^/(%a+)/(%d+)")
                local t = loop(ngx.shared.bench, op, tonumber(n), bench_now)
                local s = string.format("%.6f %d\n", t, ngx.worker.pid())
                ngx.header["Content-Length"] = #s
                ngx.print(s)
            }
        }
    }
}
]==]

local FDPOOL_HANDLER = [[
local fdpool = require "fdpool"
]] .. LOOP .. [[
local q, done, sem, t_push = fdpool.queue(), 0, fdpool.semaphore(0), 0
return function(conn)
  local line = conn:receive("l") or ""
  local op, n = line:match("^GET /(%a+)/(%d+)")
  local s
  if op == "wait" then                -- a waiter: pop, count, answer
    conn:receive("l")
    local v = q:pop()
    done = done + 1
    if done == tonumber(n) then sem:post() end
    s = "ok\n"
  elseif op == "wake" then            -- push n items, time until all woke
    done = 0
    local t0 = fdpool.now()
    for i = 1, tonumber(n) do q:push(i) end
    sem:wait()
    s = string.format("%.6f %d\n", fdpool.now() - t0, fdpool.worker.pid)
  elseif op == "threads" then         -- the same with n threads of one handler
    local tq, ts, left = fdpool.queue(), fdpool.semaphore(0), tonumber(n)
    for i = 1, tonumber(n) do
      fdpool.spawn(function() tq:pop(); left = left - 1; if left == 0 then ts:post() end end)
    end
    fdpool.sleep(0.05)
    local t0 = fdpool.now()
    for i = 1, tonumber(n) do tq:push(i) end
    ts:wait()
    s = string.format("%.6f %d\n", fdpool.now() - t0, fdpool.worker.pid)
  else
    local t = loop(fdpool.shared.bench, op, tonumber(n), fdpool.now)
    s = string.format("%.6f %d\n", t, fdpool.worker.pid)
  end
  conn:send("HTTP/1.1 200 OK\r\nContent-Length: " .. #s .. "\r\nConnection: close\r\n\r\n" .. s)
end
]]

local function start_nginx(workers)
  local dir = H.tmpdir()
  os.execute("mkdir -p " .. dir .. "/tmp")
  for try = 1, 20 do
    -- PORT_BASE (scripts/bench passes its own): ports from PORT_BASE + 20
    local base = tonumber(os.getenv("PORT_BASE"))
    local port = base and base + 19 + try or 20000 + math.random(0, 20000)
    H.writefile(dir .. "/nginx.conf", (NGINX_CONF:gsub("@PORT@", port):gsub("@WORKERS@", workers)))
    os.execute(("nginx -p %s -c %s/nginx.conf -e %s/error.log -g 'daemon off;' >%s/log 2>&1 & echo $! > %s/pid")
      :format(dir, dir, dir, dir, dir))
    local pid = tonumber(H.readfile(dir .. "/pid"))
    local up = H.wait_until(function()
      local fd = fdpool.connect("127.0.0.1:" .. port, 1)
      if fd then fd:close() return "up" end
      if not H.alive(pid) then return "dead" end
    end, 10, "nginx to listen")
    if up == "up" then
      H.sleep(0.2)
      return { addr = "127.0.0.1:" .. port, stop = function() os.execute("kill -QUIT " .. pid) end }
    end
  end
  error("nginx did not start")
end

local function start_fdpool(workers)
  local dir = H.tmpdir()
  local script = H.writefile(dir .. "/shared_bench.lua", FDPOOL_HANDLER)
  local p = H.start_pool{ script = script, workers = workers,
                          extra = { "--shared", "bench:64m", "--concurrency", "2048" } }
  assert(p.addr, "pool did not start")
  H.sleep(0.2)
  return { addr = p.addr, stop = function() p:stop() end }
end

-- W requests at once; wall seconds until the last answer, and the
-- handlers' own loop times, and how many distinct worker pids answered.
local function burst(addr, path, w)
  local conns = {}
  local t0 = H.clock()
  for i = 1, w do
    conns[i] = assert(fdpool.connect(addr, 60))
    assert(conns[i]:write("GET " .. path .. " HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"))
  end
  local loops, pids, npids = {}, {}, 0
  for i = 1, w do
    local body = assert(conns[i]:read("a")):match("\r\n\r\n(.*)$")
    conns[i]:close()
    local t, pid = body:match("^(%S+) (%d+)")
    loops[i] = tonumber(t)
    if not pids[pid] then pids[pid] = true; npids = npids + 1 end
  end
  return H.clock() - t0, loops, npids
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Both servers run side by side (one idles while the other is measured)
-- and their rounds alternate, so a change in the machine's load hits both.
local results = {}
for _, w in ipairs { 1, 2 } do
  local srvs = { fdpool = start_fdpool(w), nginx = start_nginx(w) }
  for _, op in ipairs(OPS) do
    local rates, tries = { fdpool = {}, nginx = {} }, 0
    for _, impl in ipairs { "fdpool", "nginx" } do
      burst(srvs[impl].addr, ("/%s/%d"):format(op, N // 10), w)   -- warm-up (LuaJIT)
    end
    while (#rates.fdpool < ROUNDS or #rates.nginx < ROUNDS) and tries < ROUNDS * 10 do
      tries = tries + 1
      for _, impl in ipairs { "fdpool", "nginx" } do
        if #rates[impl] < ROUNDS then
          local _, loops, npids = burst(srvs[impl].addr, ("/%s/%d"):format(op, N), w)
          -- both workers must have taken part (nginx's reuseport may send
          -- both connections to one): else try again
          if npids == w then
            rates[impl][#rates[impl] + 1] = w * N / math.max(table.unpack(loops))
          end
        end
      end
    end
    for _, impl in ipairs { "fdpool", "nginx" } do
      results[impl .. w .. op] = median(rates[impl])
      io.stderr:write(("%s workers=%d %s: %.0f ops/s (%d tries)\n"):format(impl, w, op,
        results[impl .. w .. op], tries))
    end
  end
  srvs.fdpool.stop()
  srvs.nginx.stop()
end

print(("Shared dictionary, ops/s (N=%d per connection, 1000 keys, median of %d; one run on a shared, noisy machine):"):format(N, ROUNDS))
print("| op | workers | fdpool.shared | ngx.shared.DICT | fdpool / nginx |")
print("|---|---|---|---|---|")
for _, op in ipairs(OPS) do
  for _, w in ipairs { 1, 2 } do
    local f, n = results["fdpool" .. w .. op], results["nginx" .. w .. op]
    print(("| %s | %d | %.0f | %.0f | %.2f |"):format(op, w, f, n, f / n))
  end
end

-- The queue: WAITERS connections wait in q:pop() on one worker, one more
-- pushes WAITERS items and answers when the last waiter counted itself.
local srv = start_fdpool(1)
local waits = {}
for i = 1, WAITERS do
  waits[i] = assert(fdpool.connect(srv.addr, 60))
  assert(waits[i]:write(("GET /wait/%d HTTP/1.1\r\n\r\n"):format(WAITERS)))
end
H.sleep(0.5)
local _, wake = burst(srv.addr, "/wake/" .. WAITERS, 1)
for i = 1, WAITERS do waits[i]:read("a"); waits[i]:close() end
local _, th = burst(srv.addr, "/threads/" .. WAITERS, 1)
srv.stop()
print()
print(("Queue wake-up, %d waiters on one worker: %.2f µs per waiter (handlers on connections), %.2f µs per waiter (threads of one handler)")
  :format(WAITERS, wake[1] / WAITERS * 1e6, th[1] / WAITERS * 1e6))
