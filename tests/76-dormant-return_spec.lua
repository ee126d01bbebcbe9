-- tests/76-dormant-return_spec.lua: a keep-alive connection's task goes
-- dormant by returning (src/task.c: fdp_wait_dormant; lhttp.c's head wait)
-- when its worker holds more than FDP_DRET_MIN (96) tasks: the wait is
-- registered, conn:httploop returns, http.serve's handler ends, and the
-- next bytes call it again on a spare coroutine. Each test holds 120 idle
-- connections open (the ballast) on one worker so that the path is taken at
-- once between requests (no 50 ms sweep), and asserts what a client and an
-- operator see: responses and keepalive_requests across sleeps, pipelining,
-- a head in pieces, a reset while dormant (no fd leak), the keep-alive
-- timeout, a handler that waits mid-request, graceful stop, a killed worker.
local H = require "helpers"
local fdpool = require "fdpool"

local BALLAST = 120

local SCRIPT = [[
local http = require "fdpool.http"
local fdpool = require "fdpool"
return http.serve(function(req, res)
  if req.path == "/wait" then fdpool.sleep(0.05) end
  res:header("Content-Type", "text/plain")
  res:send(req.path .. " " .. (req.headers["x-n"] or "-") .. "\n")
end, { keepalive_requests = 4, keepalive_timeout = tonumber(os.getenv("KA_TIMEOUT")) or 20 })
]]

local response = H.read_response

local get = H.get_n

local function start(ka)
  local dir = H.tmpdir()
  H.writefile(dir .. "/d.lua", SCRIPT)
  return H.start_pool{ script = dir .. "/d.lua", workers = 1, concurrency = 1000,
    shell = "FDPOOL_DRET_MIN=96 " .. (ka and ("KA_TIMEOUT=" .. ka .. " ") or "") }
end

-- BALLAST connections, each served once and then idle (dormant).
local function ballast(p) return H.ballast(p, BALLAST) end

local function close_all(fds) for _, fd in ipairs(fds) do fd:close() end end

describe("keep-alive tasks dormant by return", function()
  local p, bfds
  setup(function() p = start(); bfds = ballast(p) end)
  teardown(function()
    if bfds then close_all(bfds) end
    if p then p:stop() end
  end)

  it("serve every connection in turn, keepalive_requests counted across the sleeps", function()
    local n = 40
    local fds = {}
    for i = 1, n do fds[i] = assert(fdpool.connect(p.addr, 10)) end
    for round = 1, 4 do
      for i = 1, n do assert(fds[i]:write(get("/r" .. round, i))) end
      for i = 1, n do
        local st, h, body = response(fds[i])
        assert.equal(200, st)
        assert.equal("/r" .. round .. " " .. i .. "\n", body)
        assert.equal(round == 4 and "close" or nil, h.connection)
      end
    end
    for i = 1, n do
      assert.is_nil(fds[i]:read(1))
      fds[i]:close()
    end
    -- the ballast is still served
    assert(bfds[1]:write(get("/again", 1)))
    assert.equal("/again 1\n", select(3, response(bfds[1])))
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("serves pipelined requests in order, a head in pieces, a handler that waits", function()
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(get("/1", 1)))
    assert.equal("/1 1\n", select(3, response(fd)))
    assert(fd:write(get("/p", 2) .. get("/wait", 3) .. get("/q", 4)))
    assert.equal("/p 2\n", select(3, response(fd)))
    assert.equal("/wait 3\n", select(3, response(fd)))
    local _, h, body = response(fd)
    assert.equal("/q 4\n", body)
    assert.equal("close", h.connection)
    fd:close()
    fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(get("/a", 1)))
    assert.equal("/a 1\n", select(3, response(fd)))
    -- the rest of a head trickles in after the task went dormant
    for _, piece in ipairs{ "GET /tr", "ickle HTTP/1.1\r\nHo", "st: t\r\n", "X-N: 5\r\n", "\r\n" } do
      assert(fd:write(piece))
      H.sleep(0.02)     -- the input's pacing, not a wait for a state
    end
    assert.equal("/trickle 5\n", select(3, response(fd)))
    assert(fd:write(get("/wait", 6)))
    assert.equal("/wait 6\n", select(3, response(fd)))
    fd:close()
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("a client resetting a dormant connection leaves no fd behind", function()
    local pid = p:worker_pids()[1]
    local before = H.fd_count(pid)
    local fds = {}
    for i = 1, 30 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      assert(fds[i]:write(get("/x", i)))
      -- the response's first byte: the task is dormant after it; the
      -- rest stays unread, so the close below sends a reset
      assert.equal("H", fds[i]:read(1))
    end
    for i = 1, 30 do fds[i]:close() end
    H.wait_until(function() return H.fd_count(pid) == before end, 10,
      "the worker's fds back to " .. tostring(before))
    assert.same({ pid }, p:worker_pids())
    assert(bfds[2]:write(get("/after", 2)))
    assert.equal("/after 2\n", select(3, response(bfds[2])))
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)

describe("dormant-by-return connections and the operator", function()
  it("are closed by the keep-alive timeout, then by a graceful stop", function()
    local p = start("1")
    local bfds = ballast(p)
    H.defer(finally, function() close_all(bfds); p:stop() end)
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(get("/t", 1)))
    assert.equal("/t 1\n", select(3, response(fd)))
    local data, err = fd:read("a")
    assert.equal("", data or err)
    fd:close()
    -- the ballast too went after its 1 s; new ones, then a graceful stop
    H.wait_status(p, function(st) return H.sum_workers(st, "active") == 0 end, 15,
      "the idle connections closed by their timeout")
    close_all(bfds)
    bfds = ballast(p)
    p:kill("QUIT")
    for i = 1, #bfds do
      local d, e = bfds[i]:read("a")
      assert.equal("", d or e)
    end
    assert.equal(0, p:wait_exit(15))
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("a worker killed with dormant connections is replaced and serves", function()
    local p = start()
    local bfds = ballast(p)
    H.defer(finally, function() close_all(bfds); p:stop() end)
    local pid = p:worker_pids()[1]
    os.execute("kill -KILL " .. pid)
    for i = 1, #bfds do
      local d, e = bfds[i]:read("a")
      assert.equal("", d or e)
    end
    H.wait_until(function()
      local st = p:status()
      return st and st.workers[1].pid ~= pid and st.workers[1].state == "free"
    end, 15, "a new worker")
    close_all(bfds)
    bfds = ballast(p)
    assert(bfds[1]:write(get("/z", 1)))
    assert.equal("/z 1\n", select(3, response(bfds[1])))
  end)
end)
