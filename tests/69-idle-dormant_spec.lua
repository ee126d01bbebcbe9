-- tests/69-idle-dormant_spec.lua: idle keep-alive connections without a
-- coroutine (src/task.c: fdp_task_may_sleep, the drowsy sweep; lhttp.c's
-- httploop goes on after the requests it served). A connection idle
-- between requests for FDP_SLEEP_MS (50 ms; after its first request
-- FDP_SOON_MS, 5 ms) lets its coroutine go and
-- gets one again when its next bytes come: many connections held idle,
-- then each served again (keepalive_requests still counted across the
-- sleeps), a head that comes in pieces after a sleep, the idle timeout and
-- --timeout still closing a sleeping connection, graceful and fast stops
-- with sleeping connections.
local H = require "helpers"
local fdpool = require "fdpool"

local ASAN = H.BUILD ~= "build"

local SCRIPT = [[
local http = require "fdpool.http"
return http.serve(function(req, res)
  res:header("Content-Type", "text/plain")
  res:send(req.path .. " " .. (req.headers["x-n"] or "-") .. "\n")
end, { keepalive_requests = 3, keepalive_timeout = tonumber(os.getenv("KA_TIMEOUT")) or 20 })
]]

local response = H.read_response

local get = H.get_n

-- The delay is the test's input (several sweeps of 50 ms: the idle
-- connections sleep), not a wait for a state.
local function idle() H.sleep(0.5) end

local function start(env)
  local dir = H.tmpdir()
  H.writefile(dir .. "/ka.lua", SCRIPT)
  return H.start_pool{ script = dir .. "/ka.lua", workers = 1, concurrency = 4000,
    shell = env and ("KA_TIMEOUT=" .. env .. " ") or nil }
end

describe("idle keep-alive connections without a coroutine", function()
  local p
  setup(function() p = start() end)
  teardown(function() if p then p:stop() end end)

  it("holds many idle connections, then serves each again, requests still counted", function()
    local lim = tonumber(io.popen("ulimit -n"):read("l")) or 1024
    local n = math.min(ASAN and 100 or 1500, lim - 200)
    local fds = {}
    for i = 1, n do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write(get("/a" .. i, i)))
      local st, h, body = response(fds[i])
      assert.equal(200, st)
      assert.equal("/a" .. i .. " " .. i .. "\n", body)
      assert.is_nil(h.connection)
    end
    idle()
    for i = 1, n do assert(fds[i]:write(get("/b" .. i, -i))) end
    for i = 1, n do
      local st, h, body = response(fds[i])
      assert.equal(200, st)
      assert.equal("/b" .. i .. " " .. -i .. "\n", body)
      assert.is_nil(h.connection)
    end
    idle()
    -- the third request is the last (keepalive_requests = 3): counted
    -- across both sleeps
    for i = 1, n do
      assert(fds[i]:write(get("/c" .. i, i)))
      local st, h, body = response(fds[i])
      assert.equal(200, st)
      assert.equal("/c" .. i .. " " .. i .. "\n", body)
      assert.equal("close", h.connection)
      assert.is_nil(fds[i]:read(1))
      fds[i]:close()
    end
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("serves pipelined requests and a head in pieces after a sleep", function()
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(get("/1", 1)))
    assert.equal("/1 1\n", select(3, response(fd)))
    idle()
    assert(fd:write("GET /2 HTTP/1.1\r\nHo"))
    idle()          -- a partial head keeps its coroutine; the rest comes
    assert(fd:write("st: t\r\nX-N: 2\r\n\r\n"))
    assert.equal("/2 2\n", select(3, response(fd)))
    fd:close()
    fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(get("/p", 0)))
    assert.equal("/p 0\n", select(3, response(fd)))
    idle()
    assert(fd:write(get("/q", 1) .. get("/r", 2)))
    assert.equal("/q 1\n", select(3, response(fd)))
    local _, h, body = response(fd)
    assert.equal("/r 2\n", body)
    assert.equal("close", h.connection)
    fd:close()
  end)

  it("a client closing a sleeping connection frees it", function()
    local fds = {}
    for i = 1, 50 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write(get("/x", i)))
      assert.equal("/x " .. i .. "\n", select(3, response(fds[i])))
    end
    idle()
    for i = 1, 50 do fds[i]:close() end
    H.wait_status(p, function(st) return H.sum_workers(st, "active") == 0 end, 10,
      "the closed connections to leave the worker")
  end)
end)

describe("a sleeping keep-alive connection", function()
  it("is closed by its idle timeout, without a response", function()
    local p = start("1")
    H.defer(finally, function() p:stop() end)
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(get("/t", 1)))
    assert.equal("/t 1\n", select(3, response(fd)))
    -- keepalive_timeout 1 s: the read ends with the server's close (the
    -- connection's own 10 s limit would say "timeout")
    local data, err = fd:read("a")
    assert.equal("", data or err)
    fd:close()
    H.wait_status(p, function(st) return H.sum_workers(st, "active") == 0 end, 10,
      "the connection to leave the worker")
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("is cancelled by --timeout like a waiting handler", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/ka.lua", SCRIPT)
    local p = H.start_pool{ script = dir .. "/ka.lua", workers = 1, extra = { "--timeout", "1" } }
    H.defer(finally, function() p:stop() end)
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(get("/t", 1)))
    assert.equal("/t 1\n", select(3, response(fd)))
    idle()
    local data, err = fd:read("a")
    assert.equal("", data or err)
    fd:close()
    H.wait_until(function() return p:log():find("exceeded --timeout", 1, true) end, 10,
      "the --timeout line")
  end)

  it("ends with a graceful stop once idle, and at once with a fast stop", function()
    local p = start("1")
    local fds = {}
    for i = 1, 20 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write(get("/s", i)))
      assert.equal("/s " .. i .. "\n", select(3, response(fds[i])))
    end
    idle()
    p:kill("QUIT")
    for i = 1, 20 do
      local data, err = fds[i]:read("a")
      assert.equal("", data or err)
      fds[i]:close()
    end
    assert.equal(0, p:wait_exit(15))
    p = start()
    for i = 1, 20 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write(get("/f", i)))
      assert.equal("/f " .. i .. "\n", select(3, response(fds[i])))
    end
    idle()
    assert.equal(0, p:stop("TERM"))
    for i = 1, 20 do
      local data, err = fds[i]:read("a")
      assert.equal("", data or err)
      fds[i]:close()
    end
  end)
end)

-- The wake-ups test 69 does not reach otherwise: a sleeping connection
-- closed by another connection's handler (its conn escaped into a
-- global), a handler run in a thread (fdpool.spawn) that sleeps and is
-- then killed by its parent, and http.serve's handler tail-called from a
-- wrapper or run in coroutine.wrap (that one keeps its coroutine).
describe("a sleeping keep-alive connection woken another way", function()
  it("ends cleanly when another handler closes it, its thread is killed, or it is wrapped", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/w.lua", [[
local http = require "fdpool.http"
local fdpool = require "fdpool"
saved = {}
local h = http.serve(function(req, res)
  if req.path == "/save" then saved[#saved + 1] = res._conn end
  if req.path == "/closeall" then
    for _, c in ipairs(saved) do c:close() end
    local r = {}
    for _, c in ipairs(saved) do r[#r + 1] = select(2, c:send("x")) end
    saved = {}
    return res:send(table.concat(r, ",") .. "\n")
  end
  res:send(req.path .. "\n")
end, { keepalive_timeout = 20 })
return function(conn)
  local first = conn:receive(1)
  if first == "T" then
    return fdpool.wait(fdpool.spawn(h, conn))
  elseif first == "K" then
    local th = fdpool.spawn(h, conn)
    fdpool.sleep(0.8)
    fdpool.kill(th)
  elseif first == "W" then
    return coroutine.wrap(h)(conn)
  else
    return h(conn)
  end
end
]])
    local p = H.start_pool{ script = dir .. "/w.lua", workers = 1 }
    H.defer(finally, function() p:stop() end)
    local saved = {}
    for i = 1, 5 do
      saved[i] = assert(fdpool.connect(p.addr, 10))
      assert(saved[i]:write("P" .. get("/save", i)))
      assert.equal("/save\n", select(3, response(saved[i])))
    end
    local kinds = { "T", "K", "W", "P" }
    local fds = {}
    for i, k in ipairs(kinds) do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write(k .. get("/1", i)))
      assert.equal("/1\n", select(3, response(fds[i])))
    end
    idle()
    local c = assert(fdpool.connect(p.addr, 10))
    assert(c:write("P" .. get("/closeall", 0)))
    assert.equal("closed,closed,closed,closed,closed\n", select(3, response(c)))
    for i = 1, 5 do
      local data, err = saved[i]:read("a")
      assert.equal("", data or err)
      saved[i]:close()
    end
    for i, k in ipairs(kinds) do
      if k ~= "K" then
        assert(fds[i]:write(get("/2", i)))
        assert.equal("/2\n", select(3, response(fds[i])))
      end
    end
    -- K's thread, asleep since its first request, is killed by its parent
    local data, err = fds[2]:read("a")
    assert.equal("", data or err)
    for i = 1, #kinds do fds[i]:close() end
    c:close()
    H.wait_status(p, function(st) return H.sum_workers(st, "active") == 0 end, 10,
      "every connection to leave the worker")
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)
