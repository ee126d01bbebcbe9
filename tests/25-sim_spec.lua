-- tests/25-sim_spec.lua: fdpool.sim, the policy simulator. It runs a
-- policy through the master's own decision code (sandbox, views, budget,
-- checks, first_free fallback) against simulated arrivals, so what it
-- says must be what the real master does: the built-in policies' choices,
-- queueing when every worker is full, fallbacks for broken policies,
-- custom fields, nil answers retried. The last block replays the same
-- connections against the real `pool` binary and compares the choices.
local fdpool = require "fdpool"
local sim = require "fdpool.sim"
local H = require "helpers"

local FIX = "tests/fixtures/"
local WHOAMI = FIX .. "policy_whoami.lua"

-- n arrivals, one every dt seconds (0: all at once), each held `hold` s.
local function arrivals(n, opts)
  opts = opts or {}
  local t = {}
  for i = 1, n do
    local peer = opts.peer
    if type(peer) == "function" then peer = peer(i) end
    t[i] = { at = (i - 1) * (opts.dt or 1), hold = opts.hold or 0.5, peer = peer }
  end
  return t
end

local function col(r, key)
  local t = {}
  for i, w in ipairs(r.workers) do t[i] = w[key] end
  return t
end

local function sum(t)
  local n = 0
  for _, v in ipairs(t) do n = n + v end
  return n
end

-- The built-in ip_hash's hash (FNV-1a), to name the worker an IP maps to.
local function fnv(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return h
end

describe("fdpool.sim", function()

  describe("built-in policies", function()
    it("first_free fills worker 1 first, then the next", function()
      -- Sequential connections: all on worker 1.
      local r = sim.run{ policy = "first_free", workers = 3, capacity = 2,
        arrivals = arrivals(5, { dt = 1, hold = 0.5 }) }
      assert.same({ 1, 1, 1, 1, 1 }, r.choices)
      assert.same({ 5, 0, 0 }, col(r, "served"))
      -- Five at once: worker 1 until full (capacity 2), then 2, then 3.
      r = sim.run{ policy = "first_free", workers = 3, capacity = 2,
        arrivals = arrivals(5, { dt = 0, hold = 1 }) }
      assert.same({ 1, 1, 2, 2, 3 }, r.choices)
      assert.same({ 2, 2, 1 }, col(r, "max_active"))
      assert.equal(0, r.queued_max)
      assert.equal(0, r.fallbacks)
      assert.equal(0, r.unserved)
    end)

    it("round_robin alternates, and skips workers with no room", function()
      local r = sim.run{ policy = "round_robin", workers = 3,
        arrivals = arrivals(7, { dt = 1, hold = 0.5 }) }
      assert.same({ 1, 2, 3, 1, 2, 3, 1 }, r.choices)
      assert.same({ 3, 2, 2 }, col(r, "served"))
      -- Capacity 1: workers 1 and 2 hold long connections, so after 3
      -- the next turn skips them and comes back to 3.
      r = sim.run{ policy = "round_robin", workers = 3, capacity = 1, arrivals = {
        { at = 0, hold = 10 }, { at = 1, hold = 10 }, { at = 2, hold = 0.1 },
        { at = 3, hold = 0.1 } } }
      assert.same({ 1, 2, 3, 3 }, r.choices)
      assert.equal(0, r.fallbacks)
    end)

    it("least_conn balances the active connections", function()
      local r = sim.run{ policy = "least_conn", workers = 3, capacity = 4,
        arrivals = arrivals(6, { dt = 0, hold = 1 }) }
      assert.same({ 1, 2, 3, 1, 2, 3 }, r.choices)
      assert.same({ 2, 2, 2 }, col(r, "max_active"))
      -- The same arrivals under first_free pile up on worker 1.
      local ff = sim.run{ policy = "first_free", workers = 3, capacity = 4,
        arrivals = arrivals(6, { dt = 0, hold = 1 }) }
      assert.same({ 4, 2, 0 }, col(ff, "max_active"))
      -- A worker whose connection ended is the least loaded again.
      r = sim.run{ policy = "least_conn", workers = 2, capacity = 4, arrivals = {
        { at = 0, hold = 10 }, { at = 0, hold = 1 }, { at = 2, hold = 1 },
        { at = 2.5, hold = 1 } } }
      assert.same({ 1, 2, 2, 1 }, r.choices)
    end)

    it("ip_hash sends one peer IP to one worker and spreads several", function()
      -- One IP, many ports, at different times: always the same worker.
      local r = sim.run{ policy = "ip_hash", workers = 4, capacity = 8,
        arrivals = arrivals(10, { dt = 0.3, hold = 1,
          peer = function(i) return "192.0.2.7:" .. (40000 + i) end }) }
      local w = (fnv("192.0.2.7") % 4) + 1
      for i = 1, 10 do assert.equal(w, r.choices[i]) end
      assert.equal(10, r.workers[w].served)
      -- Twelve IPs: spread over all four workers, each IP where its hash
      -- says.
      r = sim.run{ policy = "ip_hash", workers = 4, capacity = 8,
        arrivals = arrivals(12, { dt = 0.1, hold = 0.05,
          peer = function(i) return "10.0.0." .. i .. ":5000" end }) }
      local used = {}
      for i = 1, 12 do
        assert.equal(fnv("10.0.0." .. i) % 4 + 1, r.choices[i])
        used[r.choices[i]] = true
      end
      assert.same({ true, true, true, true }, used)
      -- IPv6 peers are hashed on the address as well.
      r = sim.run{ policy = "ip_hash", workers = 3, arrivals = {
        { at = 0, peer = "[2001:db8::1]:1000" }, { at = 1, peer = "[2001:db8::1]:2000" } } }
      assert.equal(fnv("2001:db8::1") % 3 + 1, r.choices[1])
      assert.equal(r.choices[1], r.choices[2])
    end)
  end)

  describe("queueing", function()
    it("queues arrivals when every worker is full and serves them on departures", function()
      local r = sim.run{ policy = "least_conn", workers = 2, capacity = 1,
        arrivals = arrivals(5, { dt = 0, hold = 1 }) }
      assert.equal(3, r.queued_max)
      assert.equal(0, r.unserved)
      assert.equal(5, sum(col(r, "served")))
      assert.same({ 1, 1 }, col(r, "max_active"))
      assert.equal(0, r.fallbacks)
      for i = 1, 5 do assert.is_number(r.choices[i]) end
    end)

    it("keeps the queue in order: nobody overtakes a queued arrival", function()
      -- Arrival 3 comes while 2 is queued: it waits behind it, even
      -- though the policy is only asked about the head of the queue.
      local seen = {}
      local r = sim.run{ policy = function(workers, conn)
          seen[#seen + 1] = conn.port
          for i = 1, #workers do if workers[i].state == "free" then return i end end
        end, workers = 1, capacity = 1, arrivals = {
          { at = 0, peer = "127.0.0.1:1001", hold = 1 },
          { at = 0.5, peer = "127.0.0.1:1002", hold = 1 },
          { at = 0.6, peer = "127.0.0.1:1003", hold = 1 } } }
      assert.equal(0, r.unserved)
      assert.equal(2, r.queued_max)
      assert.same({ 1, 1, 1 }, r.choices)
      -- The policy saw the ports in arrival order, each at least once.
      for i = 2, #seen do
        assert(seen[i] >= seen[i - 1], "1003 was offered before 1002 was served: " .. table.concat(seen, " "))
      end
      assert.same({ 1001, 1003 }, { seen[1], seen[#seen] })
    end)

    it("retries nil answers: the connection is served later, not lost", function()
      -- policy_nil_first answers nil to its first 8 calls.
      local r = sim.run{ policy = FIX .. "policy_nil_first.lua", workers = 2, capacity = 1,
        arrivals = arrivals(4, { dt = 0.01, hold = 0.05 }) }
      assert.equal(0, r.unserved)
      assert.equal(4, sum(col(r, "served")))
      assert.equal(0, r.fallbacks)
      assert.is_true(r.queued_max >= 1)
      -- A policy that always says nil serves nobody, and says so.
      r = sim.run{ policy = function() return nil end, workers = 2, limit = 2,
        arrivals = arrivals(3, { dt = 0 }) }
      assert.equal(3, r.unserved)
      assert.equal(0, sum(col(r, "served")))
      assert.same({}, r.choices)
    end)
  end)

  describe("broken policies fall back to first_free", function()
    for _, case in ipairs {
      { "returns an index out of range", FIX .. "policy_bad_index.lua" },
      { "returns a non-number", FIX .. "policy_bad_type.lua" },
      { "raises", FIX .. "policy_raises.lua" },
      { "loops past its budget", FIX .. "policy_loops.lua" },
    } do
      it("counts a fallback per arrival when the policy " .. case[1], function()
        local r = sim.run{ policy = case[2], workers = 3,
          arrivals = arrivals(4, { dt = 1, hold = 0.5 }) }
        assert.equal(4, r.fallbacks)
        assert.same({ 1, 1, 1, 1 }, r.choices)
        assert.equal(0, r.unserved)
      end)
    end

    it("a pick of a full worker falls back when another has room, queues when none has", function()
      local r = sim.run{ policy = function() return 1 end, workers = 2, capacity = 1,
        arrivals = arrivals(3, { dt = 0, hold = 1 }) }
      -- 1: worker 1; 2: worker 1 is full, 2 has room: fallback; 3: both
      -- full: queued (no fallback), then worker 1 once it is free.
      assert.same({ 1, 2, 1 }, r.choices)
      assert.equal(1, r.fallbacks)
      assert.equal(1, r.queued_max)
      assert.equal(0, r.unserved)
    end)

    it("a function policy that raises falls back too", function()
      local r = sim.run{ policy = function() error("boom") end, workers = 2,
        arrivals = arrivals(3) }
      assert.equal(3, r.fallbacks)
      assert.same({ 1, 1, 1 }, r.choices)
    end)
  end)

  describe("policies", function()
    it("runs a function policy with the views and conn the master gives", function()
      local seen = {}
      local r = sim.run{ policy = function(workers, conn)
          seen[#seen + 1] = { n = #workers, ip = conn.ip, port = conn.port, peer = conn.peer,
            listener = conn.listener, cap = workers[1].capacity, id = workers[2].id,
            state = workers[1].state }
          return conn.port % 2 + 1      -- even ports to 1, odd to 2
        end, workers = 2, capacity = 3, listener = "127.0.0.1:9999", arrivals = {
          { at = 0, peer = "10.1.2.3:100" }, { at = 1, peer = "10.1.2.3:101" },
          { at = 2, peer = "[::1]:7" } } }
      assert.same({ 1, 2, 2 }, r.choices)
      assert.same({ n = 2, ip = "10.1.2.3", port = 100, peer = "10.1.2.3:100",
        listener = "127.0.0.1:9999", cap = 3, id = 2, state = "free" }, seen[1])
      assert.equal("::1", seen[3].ip)
      assert.equal(0, r.fallbacks)
    end)

    it("loads a policy file into the sandbox", function()
      local r = sim.run{ policy = FIX .. "policy_last.lua", workers = 3,
        arrivals = arrivals(3) }
      assert.same({ 3, 3, 3 }, r.choices)
      -- The sandbox has no os: a policy calling os.exit falls back.
      r = sim.run{ policy = FIX .. "policy_os_exit.lua", workers = 2, arrivals = arrivals(2) }
      assert.equal(2, r.fallbacks)
    end)

    it("shows custom fields to the policy (workers[i][key], as strings)", function()
      -- policy_warm_exact picks the worker whose `warm` field is "1", and
      -- raises when there is none.
      local r = sim.run{ policy = FIX .. "policy_warm_exact.lua", workers = 3,
        fields = { [3] = { warm = 1, note = ("n"):rep(60) } }, arrivals = arrivals(4) }
      assert.same({ 3, 3, 3, 3 }, r.choices)
      assert.equal(0, r.fallbacks)
      r = sim.run{ policy = FIX .. "policy_warm_exact.lua", workers = 3, arrivals = arrivals(2) }
      assert.equal(2, r.fallbacks)
    end)

    it("refuses unknown and broken policies and bad arrivals with the reason", function()
      local ok, err = pcall(sim.run, { policy = "nope" })
      assert.is_false(ok)
      assert.matches("unknown policy 'nope'", err, 1, true)
      ok, err = pcall(sim.run, { policy = FIX .. "policy_syntax_error.lua" })
      assert.is_false(ok)
      assert.matches("cannot load policy: .*policy_syntax_error.lua:%d+:", err)
      ok, err = pcall(sim.run, { policy = "first_free", workers = 0 })
      assert.matches("1 to 256 workers", err, 1, true)
      ok, err = pcall(sim.run, { policy = "first_free", arrivals = { { at = 0, peer = "bogus" } } })
      assert.matches("bad address 'bogus'", err, 1, true)
      ok, err = pcall(sim.run, { policy = "first_free", arrivals = { { peer = "1.2.3.4:5" } } })
      assert.matches("arrival 1: 'at' must be a number", err, 1, true)
    end)
  end)

  describe("agrees with the real master", function()
    -- Connect, read "<worker id> <ip> <port>", keep or close.
    local function open(addr)
      local fd = assert(fdpool.connect(addr, 10))
      local line = assert(fd:read("l"))
      return tonumber(line:match("^(%d+) ")), fd
    end

    local function real_choices(policy, workers, concurrency, n, hold)
      local p = H.start_pool{ script = WHOAMI, workers = workers, policy = policy,
        concurrency = concurrency }
      local choices, fds = {}, {}
      finally(function()
        for _, fd in ipairs(fds) do fd:close() end
        p:stop()
      end)
      assert(p.addr, p:log())
      for i = 1, n do
        local id, fd = open(p.addr)
        choices[i] = id
        if hold then fds[#fds + 1] = fd else fd:close() end
      end
      return choices
    end

    it("round_robin: sequential connections", function()
      local real = real_choices("round_robin", 3, nil, 7)
      local r = sim.run{ policy = "round_robin", workers = 3, capacity = 1024,
        arrivals = arrivals(7, { dt = 1, hold = 0.1, peer = "127.0.0.1:40000" }) }
      assert.same(real, r.choices)
      assert.same({ 1, 2, 3, 1, 2, 3, 1 }, real)
    end)

    it("least_conn: connections held open", function()
      local real = real_choices("least_conn", 2, 2, 4, true)
      local r = sim.run{ policy = "least_conn", workers = 2, capacity = 2,
        arrivals = arrivals(4, { dt = 0.1, hold = 100 }) }
      assert.same(real, r.choices)
      assert.same({ 1, 2, 1, 2 }, real)
    end)

    it("ip_hash: one client IP", function()
      local real = real_choices("ip_hash", 3, nil, 4)
      local r = sim.run{ policy = "ip_hash", workers = 3, capacity = 1024,
        arrivals = arrivals(4, { peer = function(i) return "127.0.0.1:" .. (50000 + i) end }) }
      assert.same(real, r.choices)
    end)

    -- Regression test (was a bug, now fixed).
    it("counts the same fallbacks as the master while a connection waits", function()
      local p = H.start_pool{ script = WHOAMI, workers = 1, concurrency = 1,
        policy = FIX .. "policy_raises.lua" }
      local fds = {}
      finally(function()
        for _, fd in ipairs(fds) do if fd then fd:close() end end
        p:stop()
      end)
      local id, a = open(p.addr)
      fds[1] = a
      assert.equal(1, id)
      local b = assert(fdpool.connect(p.addr, 10))
      fds[2] = b
      H.wait_until(function() return p:status().queued == 1 end, 10, "the second connection queued")
      -- Let the master's 100 ms tick run several times with the queue
      -- non-empty and no worker free (elapsed time is the point here).
      H.sleep(0.6)
      a:close()
      fds[1] = false
      assert.equal("1", (assert(b:read("l")):match("^(%d+) ")))
      local master = p:status().fallbacks
      assert.equal(3, master)
      local r = sim.run{ policy = FIX .. "policy_raises.lua", workers = 1, capacity = 1,
        arrivals = { { at = 0, hold = 1 }, { at = 0.1, hold = 1 } } }
      assert.same({ 1, 1 }, r.choices)
      assert.equal(master, r.fallbacks)
    end)
  end)
end)
