-- tests/77-dormant-review_spec.lua: sleep by return (src/task.c's
-- fdp_wait_dormant) across many connections that come and go: 120 idle
-- connections (the ballast) keep the worker past FDP_DRET_MIN (96), so each
-- connection's task goes dormant after every response; it is then woken by
-- its next request, by the client's close, or by the keep-alive timeout.
-- The worker's Lua registry (dormant tasks' root argument, t->aref, and
-- their coroutines, t->ref) must not grow with the number of connections
-- served: the live references stay bounded by the connections held.
local H = require "helpers"
local fdpool = require "fdpool"

local ASAN = H.BUILD ~= "build"
local BALLAST = 120

local SCRIPT = [[
local http = require "fdpool.http"
return http.serve(function(req, res)
  if req.path == "/reg" then
    collectgarbage()
    collectgarbage()
    -- live registry references: luaL_unref leaves an integer (the free
    -- list's link) in a freed slot
    local n = 0
    for k, v in pairs(debug.getregistry()) do
      if math.type(k) == "integer" and type(v) ~= "number" then n = n + 1 end
    end
    res:send(tostring(n))
    return
  end
  res:send(req.path .. "\n")
end, { keepalive_timeout = tonumber(os.getenv("KA_TIMEOUT")) or 20 })
]]

local response = H.read_response

local function get(path)
  return ("GET %s HTTP/1.1\r\nHost: t\r\n\r\n"):format(path)
end

local function open(p, n, path)
  local fds = {}
  for i = 1, n do
    fds[i] = assert(fdpool.connect(p.addr, 10))
    assert(fds[i]:write(get(path)))
  end
  for i = 1, n do assert.equal(path .. "\n", select(3, response(fds[i]))) end
  return fds
end

describe("dormant-by-return tasks across many connections", function()
  it("leave the worker's registry as it was: next request, close and timeout wake-ups", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/d.lua", SCRIPT)
    local p = H.start_pool{ script = dir .. "/d.lua", workers = 1, concurrency = 2000,
      shell = "FDPOOL_DRET_MIN=96 KA_TIMEOUT=1 " }
    local ballast = {}
    local function close_ballast()
      for _, fd in ipairs(ballast) do fd:close() end
      ballast = {}
    end
    H.defer(finally, function() close_ballast(); p:stop() end)
    local function registry()
      local fd = assert(fdpool.connect(p.addr, 10))
      assert(fd:write(get("/reg")))
      local st, _, body = response(fd)
      fd:close()
      assert.equal(200, st)
      return tonumber(body)
    end
    local rounds = ASAN and 1 or 4
    local n = ASAN and 60 or 150
    local function round()
      -- a fresh ballast (the 1 s keep-alive timeout ends the last one)
      close_ballast()
      ballast = open(p, BALLAST, "/b")
      -- woken by the next request, then by the client's close
      local fds = open(p, n, "/a")
      for i = 1, n do assert(fds[i]:write(get("/a"))) end
      for i = 1, n do assert.equal("/a\n", select(3, response(fds[i]))) end
      for i = 1, n do fds[i]:close() end
      -- woken by the keep-alive timeout (1 s): the server closes
      local t = open(p, 20, "/t")
      for i = 1, #t do
        local d, e = t[i]:read("a")
        assert.equal("", d or e)
        t[i]:close()
      end
      close_ballast()
      H.wait_status(p, function(st) return H.sum_workers(st, "active") == 0 end, 15,
        "every connection's task ended")
    end
    round()
    local before = registry()
    for _ = 1, rounds do round() end
    local after = registry()
    assert.is_true(after <= before + 8,
      ("registry references %d -> %d after %d connections"):format(before, after, rounds * (n + 20)))
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)
