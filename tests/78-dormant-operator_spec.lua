-- tests/78-dormant-operator_spec.lua: sleep by return (src/task.c's
-- fdp_wait_dormant) under what an operator meets. 120 idle keep-alive
-- connections (the ballast) keep one worker past FDPOOL_DRET_MIN=96, so
-- every connection's task goes dormant between requests, while:
-- (a) the access log's disk is full (access_log = "/dev/full": every
--     write fails with ENOSPC): every request is still answered, the
--     worker keeps serving, the pool's log says so once (not per line);
-- (b) a handler runs into --max-memory: that request gets a 500, the
--     ballast is served after it, the worker's fds and registry
--     references are as before;
-- (c) the worker is killed (SIGKILL): every client, dormant or mid
--     request, sees the close (no hang until its own timeout), the
--     master starts a new worker that serves, and holds no more fds
--     than before.
local H = require "helpers"
local fdpool = require "fdpool"

local ASAN = H.BUILD ~= "build"
local BALLAST = 120

local SCRIPT = [[
local http = require "fdpool.http"
local fdpool = require "fdpool"
local al = os.getenv("ACCESS_LOG")
return http.serve(function(req, res)
  if req.path == "/big" then
    -- one allocation far past --max-memory: refused by the worker's Lua
    -- allocator before any page is touched (tests/42 has a heap that
    -- grows to the limit, and the RssAnon retirement)
    local s = ("x"):rep(512 * 1024 * 1024)
    res:send(#s .. "\n")
    return
  end
  if req.path == "/reg" then
    collectgarbage()
    collectgarbage()
    local n = 0     -- live registry references (tests/77)
    for k, v in pairs(debug.getregistry()) do
      if math.type(k) == "integer" and type(v) ~= "number" then n = n + 1 end
    end
    res:send(tostring(n))
    return
  end
  if req.path == "/wait" then fdpool.sleep(30) end
  res:send(req.path .. " " .. (req.headers["x-n"] or "-") .. "\n")
end, { keepalive_timeout = 30, access_log = al ~= "" and al or nil })
]]

local response = H.read_response
local get = H.get_n

local function start(extra, access_log)
  local dir = H.tmpdir()
  H.writefile(dir .. "/d.lua", SCRIPT)
  return H.start_pool{ script = dir .. "/d.lua", workers = 1, concurrency = 1000, extra = extra,
    shell = "FDPOOL_DRET_MIN=96 ACCESS_LOG=" .. (access_log or "") .. " " }
end

-- BALLAST connections, each served once and then idle (dormant).
local function ballast(p) return H.ballast(p, BALLAST) end

-- Another request on every ballast connection, all sent first.
local function again(fds, path)
  for i = 1, #fds do assert(fds[i]:write(get(path, i))) end
  for i = 1, #fds do
    local st, _, body = response(fds[i])
    assert.equal(200, st)
    assert.equal(path .. " " .. i .. "\n", body)
  end
end

local function close_all(fds) for _, fd in ipairs(fds) do pcall(fd.close, fd) end end

local function one(p, path)
  local fd = assert(fdpool.connect(p.addr, 10))
  assert(fd:write(get(path, 0)))
  local st, _, body = response(fd)
  fd:close()
  return st, body
end

describe("dormant connections and the operator", function()
  it("(a) the access log's disk full: every request answered, one error line, the worker serves on", function()
    local p = start(nil, "/dev/full")
    local bfds = {}
    H.defer(finally, function() close_all(bfds); p:stop() end)
    local pid = p:worker_pids()[1]
    bfds = ballast(p)
    for round = 1, ASAN and 1 or 3 do again(bfds, "/r" .. round) end
    assert.equal(200, (one(p, "/fresh")))
    assert.same({ pid }, p:worker_pids())
    local log = p:log()
    local lines = H.count(log, "access log /dev/full: No space left on device")
    -- the first failure is reported; more only once a minute
    assert.is_true(lines >= 1 and lines <= 2, log)
    assert.truthy(log:find("error worker 1%[" .. pid .. "%]: access log /dev/full: "
      .. "No space left on device; 1 line%(s%) dropped"), log)
    assert.same({}, H.unexpected_errors(log, { "access log /dev/full" }))
    close_all(bfds)
    assert.equal(0, p:stop())
  end)

  it("(b) --max-memory: the request past it gets a 500, the dormant ones are served, nothing leaks", function()
    local p = start{ "--max-memory", "64" }
    local bfds = {}
    H.defer(finally, function() close_all(bfds); p:stop() end)
    local pid = p:worker_pids()[1]
    bfds = ballast(p)
    again(bfds, "/warm")
    local fds0 = H.fd_count(pid)
    local reg0 = tonumber(select(2, one(p, "/reg")))
    for i = 1, ASAN and 2 or 5 do
      -- the hog on a ballast connection (its task woken from dormancy)
      -- and on a new one; each gets a 500 and, its handler failed, a close
      local fd = bfds[i]
      assert(fd:write(get("/big", i)))
      assert.equal(500, (response(fd)))
      assert.equal("", fd:read("a") or "")
      fd:close()
      bfds[i] = assert(fdpool.connect(p.addr, 10))
      assert(bfds[i]:write(get("/b", i)))
      assert.equal("/b " .. i .. "\n", select(3, response(bfds[i])))
      assert.equal(500, (one(p, "/big")))
    end
    again(bfds, "/after")
    assert.same({ pid }, p:worker_pids())
    H.wait_until(function() return H.fd_count(pid) == fds0 end, 10,
      "the worker's fds back to " .. tostring(fds0))
    local reg1 = tonumber(select(2, one(p, "/reg")))
    assert.is_true(reg1 <= reg0 + 8, ("registry references %d -> %d"):format(reg0, reg1))
    local log = p:log()
    assert.truthy(log:find("http handler error (GET /big): not enough memory", 1, true), log)
    assert.falsy(log:find("retires", 1, true), log)
    assert.same({}, H.unexpected_errors(log, { "not enough memory" }))
    close_all(bfds)
    assert.equal(0, p:stop())
  end)

  it("(c) the worker SIGKILLed: dormant and busy clients see the close, a new worker serves", function()
    local p = start()
    local bfds = {}
    H.defer(finally, function() close_all(bfds); p:stop() end)
    local pid = p:worker_pids()[1]
    local master0 = H.fd_count(p.pid)
    bfds = ballast(p)
    -- one request in its handler (sleeping) besides the dormant ones
    local busy = assert(fdpool.connect(p.addr, 10))
    bfds[#bfds + 1] = busy
    assert(busy:write(get("/wait", 0)))
    H.wait_status(p, function(st) return H.sum_workers(st, "active") >= BALLAST + 1 end, 10,
      "the busy request in flight")
    os.execute("kill -KILL " .. pid)
    -- each read gives up after 10 s (fdpool.connect's timeout): a
    -- connection nobody closed would say "timeout"
    for i = 1, #bfds do
      local d, e = bfds[i]:read("a")
      assert.is_true(d == "" or (d == nil and e ~= "timeout"), tostring(d) .. " " .. tostring(e))
    end
    close_all(bfds)
    local st = H.wait_until(function()
      local s = p:status()
      return s and s.workers[1].pid ~= pid and s.workers[1].state == "free" and s
    end, 15, "a new worker")
    assert.equal(1, st.workers[1].restarts)
    assert.equal(0, st.workers[1].active)
    -- it serves, and past 96 again
    bfds = ballast(p)
    again(bfds, "/z")
    close_all(bfds)
    H.wait_status(p, function(s) return H.sum_workers(s, "active") == 0 end, 15,
      "every connection closed")
    H.wait_until(function() return H.fd_count(p.pid) == master0 end, 10,
      "the master's fds back to " .. tostring(master0))
    local log = p:log()
    assert.truthy(log:find("worker 1 (pid " .. pid .. ") killed by SIGKILL", 1, true), log)
    assert.equal(0, p:stop())
  end)
end)
