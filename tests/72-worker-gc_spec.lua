-- tests/72-worker-gc_spec.lua: the worker's Lua collector (src/worker.c,
-- open_handler): generational by default (minor collections at +50 %,
-- major at +100 %), a handler's init may choose its own; the garbage of
-- many keep-alive requests is collected as they go (the heap stays a
-- small multiple of what is live), and a worker that held many idle
-- keep-alive connections (their coroutines let go, src/task.c) serves
-- them all again with no more live heap than the first time.
local H = require "helpers"
local fdpool = require "fdpool"

local ASAN = H.BUILD ~= "build"

-- /mode: the collector's mode (collectgarbage(MODE) with no parameters
-- returns the previous mode and changes nothing when it is the same);
-- /mem: the heap as the collector left it, then after a full collection
-- (KiB); any other path: ~16 KiB of garbage (tables and a string), then
-- a short body.
local SCRIPT = [[
local http = require "fdpool.http"
local same = os.getenv("GC_INIT") and "incremental" or "generational"
local handle = http.serve(function(req, res)
  if req.path == "/mode" then
    return 200, nil, collectgarbage(same)
  elseif req.path == "/mem" then
    local before = collectgarbage("count")
    collectgarbage()
    return 200, nil, ("%.0f %.0f"):format(before, collectgarbage("count"))
  end
  local t = {}
  for i = 1, 64 do t[i] = { i, tostring(i) } end
  local s = string.rep("x", 8192)
  return 200, nil, #t .. " " .. #s
end, { keepalive_requests = 0, keepalive_timeout = 30 })
return {
  init = os.getenv("GC_INIT") and function() collectgarbage("incremental", 150) end,
  handle = handle,
}
]]

local function start(env)
  local dir = H.tmpdir()
  H.writefile(dir .. "/gc.lua", SCRIPT)
  return H.start_pool{ script = dir .. "/gc.lua", workers = 1, concurrency = 4000,
    shell = env }
end

-- One response's body (Content-Length framing).
local function body(fd)
  local len
  while true do
    local l = assert(fd:read("l")):gsub("\r$", "")
    if l == "" then break end
    len = tonumber(l:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")) or len
  end
  return assert(fd:read(len))
end

local function get(fd, path)
  assert(fd:write(("GET %s HTTP/1.1\r\nHost: t\r\n\r\n"):format(path)))
  return body(fd)
end

-- The heap (KiB) as the collector left it, and live after a full
-- collection, read on a connection of its own.
local function mem(addr)
  local fd = assert(fdpool.connect(addr, 10))
  local before, live = get(fd, "/mem"):match("^(%d+) (%d+)$")
  fd:close()
  return tonumber(before), tonumber(live)
end

describe("the worker's collector", function()
  it("is generational by default; a handler's init may choose incremental", function()
    local p = start()
    H.defer(finally, function() p:stop() end)
    assert.equal("generational", select(1, H.http_get(p.addr, "/mode")):match("\r\n\r\n(.*)$"))
    local q = start("GC_INIT=1")
    H.defer(finally, function() q:stop() end)
    assert.equal("incremental", select(1, H.http_get(q.addr, "/mode")):match("\r\n\r\n(.*)$"))
  end)

  it("collects the garbage of many keep-alive requests as they come", function()
    local p = start()
    H.defer(finally, function() p:stop() end)
    local n = ASAN and 300 or 3000          -- ~16 KiB of garbage each
    local fd = assert(fdpool.connect(p.addr, 10))
    for i = 1, n do
      assert.equal("64 8192", get(fd, "/x" .. i % 10))
    end
    local before, live = mem(p.addr)
    fd:close()
    -- A minor collection at +50 %, a major one at +100 % of the heap the
    -- last major left: never 3 times what is live (plus a request's own
    -- garbage), where 3000 requests made ~47 MiB of it.
    assert.is_true(before <= 3 * live + 256, ("heap %d KiB, live %d KiB"):format(before, live))
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("serves many idle keep-alive connections again, the live heap no larger", function()
    local p = start()
    H.defer(finally, function() p:stop() end)
    local lim = tonumber(io.popen("ulimit -n"):read("l")) or 1024
    local n = math.min(ASAN and 100 or 1500, lim - 200)
    local fds = {}
    for i = 1, n do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert.equal("64 8192", get(fds[i], "/a"))
    end
    -- The delay is the test's input: several sweeps (50 ms) let the idle
    -- connections' coroutines go.
    H.sleep(0.5)
    local _, live1 = mem(p.addr)
    for round = 1, 3 do
      for i = 1, n do assert(fds[i]:write("GET /b HTTP/1.1\r\nHost: t\r\n\r\n")) end
      for i = 1, n do assert.equal("64 8192", body(fds[i]), "round " .. round) end
      H.sleep(0.5)
    end
    local _, live2 = mem(p.addr)
    -- the same connections, idle again: what is live has not grown (a
    -- few KiB of slack for the spare coroutines and read buffers)
    assert.is_true(live2 <= live1 + 64 + live1 // 10, ("live %d then %d KiB"):format(live1, live2))
    for i = 1, n do
      assert.equal("64 8192", get(fds[i], "/c"))
      fds[i]:close()
    end
    H.wait_status(p, function(st) return H.sum_workers(st, "active") == 0 end, 10,
      "the closed connections to leave the worker")
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)
