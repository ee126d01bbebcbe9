-- tests/66-parkring_spec.lua: strict prefork's PARKs through the worker's
-- shared page (--concurrency 1). A worker leaves the PARK of a kept
-- connection in its page; the master takes it there at every turn of its
-- loop, and the worker sends it as a message only while the master says
-- (a word in the page) that it waits. Offers go to a busy worker three at
-- most, in one CONN. What users, operators and the master's safety rely
-- on: many keep-alive clients all answered, in order, with nothing lost;
-- a worker killed while it holds PARKs loses none of those connections; a
-- worker that writes what it likes in its page (other workers'
-- connections, counts, generations) is killed as faulty, and no
-- connection of another worker is touched.
--
-- The handlers block on files the test creates (no timing): /block?f=X
-- answers once DIR/X exists (waiting), /spin?f=X the same without ever
-- yielding.

package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"

local ASAN = H.BUILD ~= "build"

-- The handler both strict-prefork specs run (tests/helpers.lua).
local APP = H.PREFORK_APP
local get = H.get_head

local function client(addr) return H.raw_client(addr, 30) end

local function start(dir, shell)
  H.writefile(dir .. "/app.lua", APP:format(dir))
  local pool = H.start_pool{ script = dir .. "/app.lua", workers = 2, concurrency = 1,
                             shell = shell }
  assert(pool.addr, pool:log())
  return pool
end

local function actives(s)
  local t = {}
  for _, w in ipairs(s.workers) do t[#t + 1] = w.active end
  table.sort(t)
  return table.concat(t, ",")
end

local function wait_actives(pool, want, what)
  return H.wait_status(pool, function(s) return actives(s) == want end, 20,
                       what .. " (active " .. want .. ")")
end

describe("strict prefork's PARKs through the shared page", function()
  local pool, dir

  setup(function()
    dir = H.tmpdir()
    pool = start(dir)
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  local function release(name) H.writefile(dir .. "/" .. name, "") end

  it("answers 1000 keep-alive clients, every request in order, round after round, 0 errors", function()
    -- every client sends before any reads: the master queues and offers
    -- what the two workers cannot take yet (200 clients under ASan)
    local N, ROUNDS = ASAN and 200 or 1000, 3
    local base = H.fd_count(pool.pid)
    local served0 = H.sum_workers(pool:status(), "served")
    local cs = {}
    finally(function() for _, c in ipairs(cs) do c:close() end end)
    for i = 1, N do cs[i] = client(pool.addr) end
    for r = 1, ROUNDS do
      for i, c in ipairs(cs) do c:send(get("/r" .. r .. "/" .. i)) end
      for i, c in ipairs(cs) do
        local st, body = c:response()
        assert.equal(200, st, body)
        assert.equal("/r" .. r .. "/" .. i, body:match("^(%S+)"))
      end
      H.wait_status(pool, function(s) return s.parked == N end, 20,
                    ("all %d parked after round %d"):format(N, r))
    end
    local st = pool:status()
    assert.equal(N * ROUNDS, H.sum_workers(st, "served") - served0)
    assert.truthy(st.offers > 0, "offers made")
    for _, c in ipairs(cs) do c:close() end
    cs = {}
    H.wait_status(pool, function(s)
      return s.parked == 0 and H.all_idle(s) and H.fd_count(pool.pid) == base
    end, 20, "no parked connection, the master's fds back to " .. base)
    assert.same({}, H.unexpected_errors(pool:log()))
  end)

  it("serves every connection a worker parked when it is killed holding them", function()
    -- a's worker answers a (its PARK held in the page: the master waits,
    -- and the worker has b in hand), claims b, which spins: killed
    -- there, it loses b alone; the master takes a's PARK from the dead
    -- worker's page (or, had the tick come first, from the live one's)
    local defer = H.cleanup(finally)
    local a, b, c = client(pool.addr), client(pool.addr), client(pool.addr)
    defer(function() a:close(); b:close(); c:close() end)
    defer(function() release("ka"); release("kb"); release("kc") end)
    a:send(get("/a0"))                  -- parked once: kept from now on
    assert.equal(200, (a:response()))
    c:send(get("/block?f=kc"))
    wait_actives(pool, "0,1", "c served")
    a:send(get("/block?f=ka"))
    wait_actives(pool, "1,1", "a served")
    b:send(get("/spin?f=kb"))           -- offered to a's worker (the later)
    local st = wait_actives(pool, "1,2", "b offered")
    local victim
    for _, w in ipairs(st.workers) do
      if w.active == 2 then victim = w.pid end
    end
    release("ka")
    local s1, body = a:response()
    assert.equal(200, s1)
    assert.equal(tostring(victim), body:match("^%S+ (%d+)"))
    assert(os.execute("kill -KILL " .. victim))
    assert.is_nil((b:response()))       -- the one it was serving
    a:send(get("/a2"))                  -- parked by the dead worker
    release("kc")
    assert.equal(200, (c:response()))
    s1, body = a:response()
    assert.equal(200, s1)
    assert.equal("/a2", body:match("^(%S+)"))
    assert.not_equal(tostring(victim), body:match("^%S+ (%d+)"))
    local log = pool:log()
    assert.falsy(log:find("is faulty", 1, true), log)
  end)
end)

describe("strict prefork: a worker that scribbles PARKs in its page", function()
  it("is killed as faulty; the other worker's connection stays its own", function()
    -- d is served (blocked) by one worker; then the other worker, given
    -- c, fills its page with PARKs of the connections handed just before
    -- and after c (d among them) under a generation of its own, and
    -- spins. The master takes them at its next turn: none is its, so it
    -- is killed; d is answered by its own worker, untouched.
    local dir = H.tmpdir()
    local flag = dir .. "/scribbled"
    local pool = start(dir, ("FDPOOL_TEST_SHM=ring:%s"):format(flag))
    local d, c = client(pool.addr), client(pool.addr)
    finally(function()
      H.writefile(dir .. "/d", ""); H.writefile(dir .. "/s", "")
      d:close(); c:close(); pool:stop()
    end)
    local master = pool.pid
    d:send(get("/block?f=d"))
    local st = wait_actives(pool, "0,1", "d served")
    local holder
    for _, w in ipairs(st.workers) do
      if w.active == 1 then holder = w.pid end
    end
    H.writefile(flag .. ".go", "")
    c:send(get("/spin?f=s"))
    H.wait_until(function() return pool:log():find("is faulty", 1, true) end, 20,
                 "the scribbling worker called faulty\n" .. pool:log())
    assert.is_nil((c:response()))       -- its connection went with it
    assert.truthy(H.alive(master))
    local log = pool:log()
    assert.truthy(log:find("a held-back PARK of a connection it does not hold", 1, true)
                  or log:find("PARK of a connection it was not given", 1, true), log)
    assert.truthy(H.alive(holder))
    H.writefile(dir .. "/d", "")
    local s1, body = d:response()
    assert.equal(200, s1)
    assert.equal("/block/d " .. holder, body:match("^(.-)\n"))
    d:send(get("/d2"))                  -- parked by its own worker, served on
    s1, body = d:response()
    assert.equal(200, s1)
    assert.equal("/d2", body:match("^(%S+)"))
    pool:wait_ready(2)
    local r = H.http_get(pool.addr, "/after") or ""
    assert.truthy(r:match("^HTTP/1%.1 200"), r)
  end)
end)

describe("strict prefork: a retiring worker's held PARKs", function()
  -- A worker leaves the table (a reload) holding a PARK in its page while
  -- it serves another connection that never yields: the master takes
  -- that PARK at its next turn, as it does for the table's workers, so
  -- the parked client's next request goes to the new generation at once,
  -- not after the other connection (or the 30 s grace). The new worker is
  -- ready only once b's handler runs (a's PARK held by then, b claimed).
  local RAPP = [[
local fdpool = require "fdpool"
local http = require "fdpool.http"
local DIR = %q
local function exists(n)
  local h = io.open(DIR .. "/" .. n)
  if h then h:close() return true end
end
if exists("gate") then              -- the reload's worker: ready after "go"
  while not exists("go") do end
end
return http.serve(function(req, res)
  local q = req.query or ""
  local f, t = q:match("f=(%%w+)"), q:match("then=(%%w+)")
  if t then local h = assert(io.open(DIR .. "/" .. t, "w")); h:close() end
  if req.path == "/block" then
    while not exists(f) do fdpool.sleep(0.01) end
  elseif req.path == "/spin" then
    while not exists(f) do end        -- holds the worker: never yields
  end
  res:send(req.path .. " " .. fdpool.worker.pid .. "\n")
end)
]]

  -- (FDPOOL_PARKWAKE=0: the master looks at the pages only at the tick,
  -- a retiring worker's too.)
  for _, mode in ipairs{ "", "FDPOOL_PARKWAKE=0" } do
  it("are taken while it serves on: the client's next request goes to the new generation"
     .. (mode ~= "" and " (" .. mode .. ")" or ""), function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/app.lua", RAPP:format(dir))
    local pool = H.start_pool{ script = dir .. "/app.lua", workers = 1, concurrency = 1,
                               shell = mode ~= "" and mode or nil }
    assert(pool.addr, pool:log())
    local a, b = H.raw_client(pool.addr, 10), client(pool.addr)
    finally(function()
      H.writefile(dir .. "/go", ""); H.writefile(dir .. "/ka", ""); H.writefile(dir .. "/kb", "")
      a:close(); b:close(); pool:stop()
    end)
    local old = pool:worker_pids()[1]
    a:send(get("/a0"))                  -- parked once: kept from now on
    assert.equal(200, (a:response()))
    a:send(get("/block?f=ka"))
    wait_actives(pool, "1", "a served")
    b:send(get("/spin?f=kb&then=go"))   -- offered to the one worker
    wait_actives(pool, "2", "b offered")
    H.writefile(dir .. "/gate", "")
    pool:kill("HUP")
    H.wait_until(function() return H.count(pool:log(), "started (pid") == 2 end, 10,
                 "the new generation's worker forked")
    H.writefile(dir .. "/ka", "")       -- a answered and parked, b claimed
    local s1, body = a:response()
    assert.equal(200, s1)
    assert.equal("/block " .. old, body:match("^(.-)\n"))
    H.wait_until(function() return pool:log():find("retires: reload", 1, true) end, 10,
                 "the reload's swap\n" .. pool:log())
    a:send(get("/a2"))                  -- b still spins in the old worker
    s1, body = a:response()
    assert.equal(200, s1, "a's next request answered while b runs")
    assert.equal("/a2", body:match("^(%S+)"))
    assert.not_equal(tostring(old), body:match("^%S+ (%d+)"))
    H.writefile(dir .. "/kb", "")
    s1, body = b:response()
    assert.equal(200, s1)
    assert.equal("/spin " .. old, body:match("^(.-)\n"))
    assert.same({}, H.unexpected_errors(pool:log()))
  end)
  end
end)
