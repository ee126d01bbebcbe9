-- tests/66-prefetch_spec.lua: strict prefork's prefetch (--concurrency 1).
-- When every worker is busy, the next connection is offered to one of
-- them: it starts there only when that worker's connection is over, and
-- only if the worker claims it first; the master can take it back. What
-- an operator and a client rely on: one connection per worker at a time;
-- an offered connection whose worker dies, or stops, is served by
-- another; a slow handler holds an offer back only while another worker
-- is no likelier to serve it sooner (the master takes it back at its
-- tick); a client that closes or resets while offered costs nothing.
--
-- The handlers block on files the test creates (no timing): /block?f=X
-- answers once DIR/X exists.

package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

-- The handler both strict-prefork specs run (tests/helpers.lua).
local APP = H.PREFORK_APP
local get = H.get_head

-- A raw HTTP client (tests/helpers.lua).
local function client(addr) return H.raw_client(addr, 20) end

describe("strict prefork's prefetch (--concurrency 1)", function()
  local pool, dir

  setup(function()
    dir = H.tmpdir()
    H.writefile(dir .. "/app.lua", APP:format(dir))
    pool = H.start_pool{ script = dir .. "/app.lua", workers = 2, concurrency = 1 }
    assert(pool.addr, pool:log())
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  local function release(name) H.writefile(dir .. "/" .. name, "") end

  local function actives(s)
    local t = {}
    for _, w in ipairs(s.workers) do t[#t + 1] = w.active end
    table.sort(t)
    return table.concat(t, ",")
  end

  -- Wait until the workers' active counts (sorted) are `want`.
  local function wait_actives(want, what)
    return H.wait_status(pool, function(s) return actives(s) == want end, 20,
                         what .. " (active " .. want .. ")")
  end

  local function holder(s)           -- the worker with an offer besides its own
    for _, w in ipairs(s.workers) do
      if w.active == 2 then return w end
    end
  end

  -- Two workers blocked on a and b (b the later), c offered to b's.
  local function two_blocked_one_offered(tag, defer)
    local a, b, c = client(pool.addr), client(pool.addr), client(pool.addr)
    defer(function() a:close(); b:close(); c:close() end)
    defer(function() release(tag .. "a"); release(tag .. "b"); release(tag .. "c") end)
    a:send(get("/block?f=" .. tag .. "a"))
    wait_actives("0,1", "a served")
    b:send(get("/block?f=" .. tag .. "b"))
    wait_actives("1,1", "b served")
    return a, b, c
  end

  it("offers a connection to a busy worker, which serves it when its own is over", function()
    local defer = H.cleanup(finally)
    local offers0 = pool:status().offers
    local a, b, c = two_blocked_one_offered("o", defer)
    c:send(get("/c"))
    local st = wait_actives("1,2", "c offered")
    assert.equal(offers0 + 1, st.offers)
    local pid = holder(st).pid
    -- the worker serving b (the later) holds it; nothing runs before b ends
    release("ob")
    local s1, body = b:response()
    assert.equal(200, s1)
    assert.equal("/block/ob " .. pid, body:match("^(.-)\n"))
    s1, body = c:response()
    assert.equal(200, s1)
    assert.equal("/c " .. pid, body:match("^(.-)\n"))
    release("oa")
    assert.equal(200, (a:response()))
    assert.same({}, H.unexpected_errors(pool:log()))
  end)

  it("gives an offer to a worker that becomes free first (nothing else waits)", function()
    local defer = H.cleanup(finally)
    local a, b, c = two_blocked_one_offered("f", defer)
    c:send(get("/c"))
    local st = wait_actives("1,2", "c offered")
    local other
    for _, w in ipairs(st.workers) do
      if w.active == 1 then other = w.pid end
    end
    -- a's worker is free first: c goes there while b's still blocks
    release("fa")
    assert.equal(200, (a:response()))
    local s1, body = c:response()
    assert.equal(200, s1)
    assert.equal("/c " .. other, body:match("^(.-)\n"))
    assert.truthy(pool:status().offers_back >= 1)
    release("fb")
    assert.equal(200, (b:response()))
  end)

  it("serves an offered connection whose worker is killed; loses only the one it was serving", function()
    local defer = H.cleanup(finally)
    local back0 = pool:status().offers_back
    local a, b, c = two_blocked_one_offered("k", defer)
    c:send(get("/c"))
    local st = wait_actives("1,2", "c offered")
    local victim = holder(st).pid
    assert(os.execute("kill -KILL " .. victim))
    -- b was being served: lost (its client sees the end, no answer)
    assert.is_nil((b:response()))
    -- c goes back to the queue's front: offered to a's worker (or the
    -- new one), served once a is over at the latest
    st = H.wait_status(pool, function(s) return s.offers_back > back0 end, 20,
                       "the offer taken back")
    release("ka")
    assert.equal(200, (a:response()))
    local s1, body = c:response()
    assert.equal(200, s1)
    assert.equal("/c", body:match("^(%S+)"))
    assert.not_equal(tostring(victim), body:match("^%S+ (%d+)"))
    local log = pool:log()
    assert.falsy(log:find("is faulty", 1, true), log)
  end)

  it("takes an offer back from a slow handler when another worker serves later connections", function()
    local defer = H.cleanup(finally)
    local back0 = pool:status().offers_back
    local a, b, c = two_blocked_one_offered("s", defer)
    local d = client(pool.addr)
    defer(function() d:close() end)
    -- c offered to b's worker (the later), then d to a's (the only room)
    c:send(get("/block?f=sc"))
    wait_actives("1,2", "c offered")
    d:send(get("/d"))
    wait_actives("2,2", "d offered")
    -- b ends: its worker starts c (which blocks too); d still waits
    -- behind a, the older: the tick gives it to c's worker instead
    release("sb")
    assert.equal(200, (b:response()))
    H.wait_status(pool, function(s) return s.offers_back > back0 end, 20,
                  "d taken back from a's worker")
    release("sc")
    assert.equal(200, (c:response()))
    local s1, body = d:response()
    assert.equal(200, s1)
    assert.equal("/d", body:match("^(%S+)"))
    -- a still blocks: d did not wait for it
    release("sa")
    assert.equal(200, (a:response()))
  end)

  it("costs nothing when an offered connection's client leaves before it starts", function()
    local defer = H.cleanup(finally)
    local base = H.fd_count(pool.pid)
    local a, b, c = two_blocked_one_offered("l", defer)
    c:send(get("/c"))
    wait_actives("1,2", "c offered")
    c:close()
    release("lb")
    assert.equal(200, (b:response()))
    release("la")
    assert.equal(200, (a:response()))
    a:close(); b:close()
    H.wait_status(pool, function(s)
      return s.parked == 0 and H.all_idle(s) and H.fd_count(pool.pid) == base
    end, 20, "every connection over, the master's fds back to " .. base)
    local e = client(pool.addr)
    defer(function() e:close() end)
    e:send(get("/e"))
    assert.equal(200, (e:response()))
    local log = pool:log()
    assert.falsy(log:find("is faulty", 1, true), log)
  end)

  it("costs nothing when an offered connection's client resets before it starts", function()
    local defer = H.cleanup(finally)
    local base = H.fd_count(pool.pid)
    local a, b = two_blocked_one_offered("x", defer)
    -- a client (python) that sends a request, then resets (SO_LINGER 0)
    -- once told to, while its connection is offered
    local host, port = pool.addr:match("^(.*):(%d+)$")
    local go, done = dir .. "/xgo", dir .. "/xdone"
    os.execute(([[/usr/bin/python3 -c '
import os, socket, struct, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
while not os.path.exists(sys.argv[3]): time.sleep(0.01)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
open(sys.argv[4], "w").close()
' %s %s %s %s >/dev/null 2>&1 &]]):format(host, port, go, done))
    wait_actives("1,2", "the resetting client offered")
    H.writefile(go, "")
    H.wait_until(function()
      local f = io.open(done)
      if f then f:close() end
      return f ~= nil
    end, 20, "the client reset")
    release("xb")
    assert.equal(200, (b:response()))
    release("xa")
    assert.equal(200, (a:response()))
    a:close(); b:close()
    H.wait_status(pool, function(s)
      return s.parked == 0 and H.all_idle(s) and H.fd_count(pool.pid) == base
    end, 20, "every connection over, the master's fds back to " .. base)
    local log = pool:log()
    assert.falsy(log:find("is faulty", 1, true), log)
  end)

  it("does not keep a parked connection behind the next handler of its worker, one that never yields", function()
    -- The worker sends the PARKs of kept connections together while it
    -- has more to serve; one stuck in a handler has them taken by the
    -- master (at its tick), one that dies too.
    local defer = H.cleanup(finally)
    local a, b, c = client(pool.addr), client(pool.addr), client(pool.addr)
    defer(function() a:close(); b:close(); c:close() end)
    defer(function() release("pa"); release("pb"); release("pc") end)
    a:send(get("/a0"))                  -- parked once: kept from now on
    assert.equal(200, (a:response()))
    c:send(get("/block?f=pc"))
    wait_actives("0,1", "c served")
    a:send(get("/block?f=pa"))
    wait_actives("1,1", "a served")
    b:send(get("/spin?f=pb"))           -- offered to a's worker (the later)
    wait_actives("1,2", "b offered")
    release("pa")
    assert.equal(200, (a:response()))   -- then b holds a's worker
    a:send(get("/a2"))
    release("pc")
    assert.equal(200, (c:response()))
    local s1, body = a:response()       -- while b still spins
    assert.equal(200, s1)
    assert.equal("/a2", body:match("^(%S+)"))
    release("pb")
    assert.equal(200, (b:response()))
    local log = pool:log()
    assert.falsy(log:find("is faulty", 1, true), log)
  end)

  it("hands an offer back when its worker is told to stop (reload): served by the new generation", function()
    local defer = H.cleanup(finally)
    local a, b, c = two_blocked_one_offered("r", defer)
    c:send(get("/c"))
    local st = wait_actives("1,2", "c offered")
    local old = {}
    for _, w in ipairs(st.workers) do old[w.pid] = true end
    pool:kill("HUP")
    -- the new generation takes c at once; the old workers finish a and b
    local s1, body = c:response()
    assert.equal(200, s1)
    assert.equal("/c", body:match("^(%S+)"))
    assert.is_nil(old[tonumber(body:match("^%S+ (%d+)"))])
    release("ra"); release("rb")
    assert.equal(200, (a:response()))
    assert.equal(200, (b:response()))
  end)
end)

-- The master never trusts a worker's shared page (issue 13): a worker
-- runs user code and may write anything there. FDPOOL_TEST_SHM makes the
-- first worker given a connection fill its page with hostile values
-- (src/worker.c, test_scribble) and then spin in its handler, so that
-- the master's tick takes the "held-back PARKs": it must survive, log
-- the worker as faulty and kill it, and serve on with a new one.
describe("strict prefork: a worker's hostile shared page", function()
  for _, mode in ipairs({ "count", "ids" }) do
    it("survives " .. mode .. " and kills the worker as faulty", function()
      local dir = H.tmpdir()
      H.writefile(dir .. "/app.lua", APP:format(dir))
      local pool = H.start_pool{ script = dir .. "/app.lua", workers = 2, concurrency = 1,
        shell = ("FDPOOL_TEST_SHM=%s:%s/scribbled"):format(mode, dir) }
      finally(function() H.writefile(dir .. "/s", ""); pool:stop() end)
      assert(pool.addr, pool:log())
      local master = pool.pid
      local c = client(pool.addr)
      finally(function() c:close() end)
      c:send(get("/spin?f=s"))
      H.wait_until(function() return pool:log():find("is faulty", 1, true) end, 20,
                   "the worker called faulty\n" .. pool:log())
      local st = c:response()
      assert.is_nil(st)                 -- its connection went with it
      assert.truthy(H.alive(master))
      pool:wait_ready(2)
      local r = H.http_get(pool.addr, "/after") or ""
      assert.truthy(r:match("^HTTP/1%.1 200"), r)
      local log = pool:log()
      assert.truthy(log:find(mode == "count" and "held-back PARKs past the page's room"
                             or "a held-back PARK of a connection it does not hold", 1, true), log)
    end)
  end
end)

describe("strict prefork: the offers of a worker that dies", function()
  -- One worker serves x (spinning) and holds three offers, o1 to o3 in
  -- their order (FDPOOL_OFFERBATCH=0: one per turn, so the test can
  -- wait for each); killed, it loses x alone, and o1 to o3 go back to the
  -- queue's front in the order they came: the next worker serves o1 first.
  local OAPP = [[
local http = require "fdpool.http"
local DIR = %q
return http.serve(function(req, res)
  local g = req.path == "/spin" and req.query:match("f=(%%w+)")
  while g do                        -- holds the worker: never yields
    local h = io.open(DIR .. "/" .. g)
    if h then h:close() break end
  end
  local h = assert(io.open(DIR .. "/order", "a"))
  h:write(req.path, "\n")
  h:close()
  res:send(req.path .. "\n")
end)
]]

  it("go back to the queue's front in their order", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/app.lua", OAPP:format(dir))
    local pool = H.start_pool{ script = dir .. "/app.lua", workers = 1, concurrency = 1,
                               shell = "FDPOOL_OFFERBATCH=0" }
    assert(pool.addr, pool:log())
    local x, os_ = client(pool.addr), {}
    finally(function()
      H.writefile(dir .. "/kx", "")
      x:close()
      for _, c in ipairs(os_) do c:close() end
      pool:stop()
    end)
    local victim = pool:worker_pids()[1]
    x:send(get("/spin?f=kx"))
    H.wait_status(pool, function(s) return s.workers[1].active == 1 end, 20, "x served")
    for i = 1, 3 do
      os_[i] = client(pool.addr)
      os_[i]:send(get("/o" .. i))
      H.wait_status(pool, function(s) return s.workers[1].active == 1 + i end, 20,
                    "o" .. i .. " offered")
    end
    assert(os.execute("kill -KILL " .. victim))
    assert.is_nil((x:response()))       -- the one it was serving
    for i = 1, 3 do
      local st, body = os_[i]:response()
      assert.equal(200, st)
      assert.equal("/o" .. i .. "\n", body)
    end
    assert.equal("/o1\n/o2\n/o3\n", H.readfile(dir .. "/order"))
    assert.truthy(pool:status().offers_back >= 3)
  end)
end)

describe("a worker that becomes free with offers waiting elsewhere", function()
  -- It takes the offer made first, whichever worker holds it: the
  -- younger one keeps its place behind its worker's connection. Two busy
  -- workers holding one offer each do not pass them to each other.
  it("serves the oldest offer first", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/app.lua", APP:format(dir))
    local pool = H.start_pool{ script = dir .. "/app.lua", workers = 3, concurrency = 1 }
    assert(pool.addr, pool:log())
    local cs = {}
    local function release(name) H.writefile(dir .. "/" .. name, "") end
    finally(function()
      for _, n in ipairs { "qa", "qb", "qc", "qx", "qe" } do release(n) end
      for _, c in pairs(cs) do c:close() end
      pool:stop()
    end)
    local function total(s)
      local n = 0
      for _, w in ipairs(s.workers) do n = n + w.active end
      return n
    end
    -- Send name's request and wait until n connections are in: the
    -- index of the worker (slot order) whose active count rose.
    local function place(name, path, n)
      local before = pool:status().workers
      cs[name] = client(pool.addr)
      cs[name]:send(get(path))
      local st = H.wait_status(pool, function(s) return total(s) == n end, 20, name .. " in")
      for i, w in ipairs(st.workers) do
        if w.active > before[i].active then return i end
      end
    end
    local at = {}
    at.a = place("a", "/block?f=qa", 1)
    at.b = place("b", "/block?f=qb", 2)
    at.c = place("c", "/block?f=qc", 3)
    -- The newest connection on the higher-numbered worker of b's and c's
    -- (where it is not, b's ends and x takes its worker): the offer made
    -- first goes there, the second to the lower-numbered one, which a
    -- scan by worker (or slot) number would take back first.
    if at.b > at.c then
      release("qb")
      assert.equal(200, (cs.b:response()))
      at.b = place("x", "/block?f=qx", 3)
    end
    assert.equal(math.max(at.b, at.c), place("d", "/d", 4))
    place("e", "/block?f=qe", 5)    -- e blocks: it cannot let d by
    local back0 = pool:status().offers_back
    -- neither offer moves while both workers are busy: looked at for
    -- half a second (five of the master's 100 ms ticks), none was taken
    -- back (an observation window, not a timing assertion)
    local until_t = H.clock() + 0.5
    repeat
      assert.equal(back0, pool:status().offers_back)
    until H.clock() > until_t
    -- a's worker is free first, with no offer of its own: it takes d
    -- (taking e, it would block there, and d behind c's)
    release("qa")
    assert.equal(200, (cs.a:response()))
    local st, body = cs.d:response()
    assert.equal(200, st)
    assert.equal("/d", body:match("^(%S+)"))
    for _, n in ipairs { "qb", "qc", "qx", "qe" } do release(n) end
    assert.equal(200, (cs.e:response()))
    assert.same({}, H.unexpected_errors(pool:log()))
  end)
end)

describe("strict prefork: deep offers only while many connections wait", function()
  -- A busy worker holds at most 3 offers while few connections wait in
  -- the master's queue; up to 15 while more wait than every worker could
  -- hold that deep (16 per worker): then an offered connection waits
  -- behind fewer requests than it would in the queue. Each connection is
  -- still served once, one at a time. (FDPOOL_OFFERBATCH=0: an offer
  -- whenever there is room, so the counts do not depend on which turn
  -- of the master's saw which request.)
  it("holds 3 offers with 2 waiting, up to 15 while more than 16 wait", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/app.lua", APP:format(dir))
    local pool = H.start_pool{ script = dir .. "/app.lua", workers = 1, concurrency = 1,
                               shell = "FDPOOL_OFFERBATCH=0" }
    assert(pool.addr, pool:log())
    local cs = {}
    finally(function()
      H.writefile(dir .. "/da", ""); H.writefile(dir .. "/dc", "")
      for _, c in ipairs(cs) do c:close() end
      pool:stop()
    end)
    local function state(active, queued, what)
      return H.wait_status(pool, function(s)
        return s.workers[1].active == active and s.queued == queued
      end, 20, what .. (" (active %d, queued %d)"):format(active, queued))
    end
    local function send(path)
      local c = client(pool.addr)
      cs[#cs + 1] = c
      c:send(get(path))
    end
    send("/block?f=da")
    state(1, 0, "a served")
    for i = 1, 5 do
      send("/block?f=dc")
      state(math.min(1 + i, 4), math.max(0, i - 3), "c" .. i .. " in")
    end
    -- five waiting: three offered, two queued, for half a second (an
    -- observation window, not a timing assertion)
    local until_t = H.clock() + 0.5
    repeat
      local s = pool:status()
      assert.equal(4, s.workers[1].active)
      assert.equal(2, s.queued)
    until H.clock() > until_t
    -- 25 waiting: offered while more than 16 wait, so 9 offered, 16 queued
    for _ = 6, 25 do send("/block?f=dc") end
    state(10, 16, "deep offers")
    H.writefile(dir .. "/da", "")
    H.writefile(dir .. "/dc", "")
    local pid = tostring(pool:worker_pids()[1])
    for i, c in ipairs(cs) do
      local st, body = c:response()
      assert.equal(200, st)
      assert.equal((i == 1 and "/block/da " or "/block/dc ") .. pid .. "\n", body)
    end
    local s = pool:status()
    assert.equal(0, s.offers_back)
    local log = pool:log()
    assert.falsy(log:find("is faulty", 1, true), log)
  end)
end)
