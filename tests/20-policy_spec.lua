-- tests/20-policy_spec.lua: dispatch policies, against the real `pool`
-- binary. The handler (fixtures/policy_whoami.lua) tells the client which
-- worker serves it, so the client sees each policy's choices; custom and
-- broken policy files show that the master survives any policy and keeps
-- serving (falling back to first_free) and says why in its log.
local fdpool = require "fdpool"
local H = require "helpers"

local FIX = "tests/fixtures/"
local WHOAMI = FIX .. "policy_whoami.lua"

-- Connect, read the "<worker id> <ip> <port>" line. Returns the worker id,
-- the peer ip and port the worker saw, and the open fd (the connection is
-- held until the fd is closed).
local function open(addr)
  local fd = assert(fdpool.connect(addr, 10))
  local line, err = fd:read("l")
  assert(line, "no answer from the pool: " .. tostring(err))
  local id, ip, port = line:match("^(%d+) (%S+) (%d+)$")
  assert(id, "unexpected answer: " .. line)
  return tonumber(id), fd, ip, tonumber(port)
end

-- One connection: which worker served it, the peer ip and port it saw.
local function served_by(addr)
  local id, fd, ip, port = open(addr)
  fd:close()
  return id, ip, port
end

-- One connection: which worker served it (one value, for asserts).
local function whoami(addr)
  return (served_by(addr))
end

local function status(p)
  local st, err = p:status()
  assert(st, "pool status failed: " .. tostring(err))
  return st
end

-- Wait until the master has seen every connection end.
local function wait_idle(p)
  H.wait_until(function()
    for _, w in ipairs(status(p).workers) do
      if w.active ~= 0 then return false end
    end
    return true
  end, 10, "all workers idle")
end

local function wait_active(p, id, n)
  H.wait_until(function()
    return status(p).workers[id].active == n
  end, 10, ("worker %d to have %d active connection(s)"):format(id, n))
end

-- All "listening on ADDR" addresses, in log order.
local function addresses(p)
  local t = {}
  for a in p:log():gmatch("listening on (%S+)") do t[#t + 1] = a end
  return t
end

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

local function has_ipv6()
  local s = H.readfile("/proc/net/if_inet6") or ""
  return s:find("00000000000000000000000000000001 ", 1, true) ~= nil
end

describe("dispatch policies", function()

  describe("first_free", function()
    it("sends every sequential connection to worker 1 with --concurrency 1", function()
      local p = H.start_pool{ script = WHOAMI, workers = 3, concurrency = 1,
                              policy = "first_free" }
      finally(function() p:stop() end)
      assert.is_truthy(p.addr, p:log())
      for _ = 1, 8 do
        assert.equals(1, whoami(p.addr))
        wait_idle(p)
      end
      assert.equals(8, status(p).workers[1].served)
      assert.equals(0, p:stop())
    end)

    it("moves to the next worker while worker 1 is busy", function()
      local p = H.start_pool{ script = WHOAMI, workers = 3, concurrency = 1,
                              policy = "first_free" }
      finally(function() p:stop() end)
      local id1, fd1 = open(p.addr)
      local id2, fd2 = open(p.addr)
      assert.same({ 1, 2 }, { id1, id2 })
      fd1:close()
      wait_active(p, 1, 0)
      assert.equals(1, whoami(p.addr))
      fd2:close()
      assert.equals(0, p:stop())
    end)
  end)

  describe("round_robin", function()
    it("cycles 1,2,3,1,2,3 across 3 workers", function()
      local p = H.start_pool{ script = WHOAMI, workers = 3, policy = "round_robin" }
      finally(function() p:stop() end)
      local seen = {}
      for i = 1, 9 do seen[i] = whoami(p.addr) end
      assert.same({ 1, 2, 3, 1, 2, 3, 1, 2, 3 }, seen)
      assert.equals(0, p:stop())
    end)
  end)

  describe("least_conn", function()
    it("sends the next connection to the worker with fewer open ones", function()
      local p = H.start_pool{ script = WHOAMI, workers = 2, concurrency = 4,
                              policy = "least_conn" }
      finally(function() p:stop() end)
      local a, fa = open(p.addr)         -- 1: both idle, lowest id
      local b, fb = open(p.addr)         -- 2: worker 2 has none
      local c, fc = open(p.addr)         -- 3: a tie again, lowest id
      assert.same({ 1, 2, 1 }, { a, b, c })
      -- Worker 1 now holds 2 connections, worker 2 one: the next goes to 2.
      local d, fd = open(p.addr)
      assert.equals(2, d)
      -- Close worker 2's two: it is empty, worker 1 still holds two, so
      -- worker 2 wins although worker 1 has the lower id.
      fb:close(); fd:close()
      wait_active(p, 2, 0)
      local e, fe = open(p.addr)
      assert.equals(2, e)
      local st = status(p)
      assert.equals(2, st.workers[1].active)
      assert.equals(1, st.workers[2].active)
      fa:close(); fc:close(); fe:close()
      assert.equals(0, p:stop())
    end)
  end)

  describe("ip_hash", function()
    it("sends every connection from 127.0.0.1 to the same worker", function()
      local p = H.start_pool{ script = WHOAMI, workers = 3, policy = "ip_hash" }
      finally(function() p:stop() end)
      local first, ip = served_by(p.addr)
      assert.equals("127.0.0.1", ip)
      for _ = 1, 20 do assert.equals(first, whoami(p.addr)) end
      assert.equals(0, p:stop())
    end)

    it("is sticky per client IP (IPv4 and IPv6 loopback)", function()
      if not has_ipv6() then
        pending("no IPv6 loopback here")
        return
      end
      local p = H.start_pool{ script = WHOAMI, workers = 3, policy = "ip_hash",
                              extra = { "--listen", "[::1]:0" } }
      finally(function() p:stop() end)
      local addrs = addresses(p)
      assert.equals(2, #addrs, p:log())
      local v4, v6 = addrs[1], addrs[2]
      local w4 = whoami(v4)
      local w6, ip6 = served_by(v6)
      assert.equals("::1", ip6)
      for _ = 1, 10 do
        assert.equals(w4, whoami(v4))
        assert.equals(w6, whoami(v6))
      end
      assert.equals(0, p:stop())
    end)

    it("spreads different client IPs over the workers, each one sticky", function()
      if not H.run("command -v curl >/dev/null") then
        pending("curl is needed to choose the client's source address")
        return
      end
      local p = H.start_pool{ script = WHOAMI, workers = 3, policy = "ip_hash" }
      finally(function() p:stop() end)
      local url = "http://" .. p.addr .. "/"
      local function from(ip)
        -- The handler answers at once (an HTTP/0.9 style reply).
        local ok, rc, out = H.run(("curl -s --http0.9 -m 5 --interface %s %s"):format(ip, url))
        assert(ok, ("curl from %s failed (%s): %s"):format(ip, tostring(rc), out))
        local id, seen = out:match("^(%d+) (%S+) %d+")
        assert(id, "unexpected answer: " .. out)
        assert.equals(ip, seen)
        return tonumber(id)
      end
      local workers_used, n = {}, 0
      for i = 1, 12 do
        local ip = "127.0.0." .. i
        local w = from(ip)
        assert.equals(w, from(ip))
        assert.equals(w, from(ip))
        if not workers_used[w] then workers_used[w] = true; n = n + 1 end
      end
      assert.is_true(n > 1, "12 client IPs all went to one worker")
      assert.equals(0, p:stop())
    end)
  end)

  describe("a custom policy file", function()
    it("is used when given as a path", function()
      local p = H.start_pool{ script = WHOAMI, workers = 3, policy = FIX .. "policy_last.lua" }
      finally(function() p:stop() end)
      for _ = 1, 6 do assert.equals(3, whoami(p.addr)) end
      local st = status(p)
      assert.equals(FIX .. "policy_last.lua", st.policy)
      assert.equals(0, st.fallbacks)
      assert.equals(0, p:stop())
      assert.same({}, H.unexpected_errors(p:log()))
    end)

    it("sees conn.peer, conn.ip, conn.port and conn.listener as given to --listen", function()
      local p = H.start_pool{ script = WHOAMI, workers = 2, listen = "127.0.0.1:0",
                              policy = FIX .. "policy_report.lua" }
      finally(function() p:stop() end)
      -- The policy raises with what it saw; the connection is still served.
      local id, ip, port = served_by(p.addr)
      assert.equals(1, id)
      assert.equals("127.0.0.1", ip)
      local line = H.wait_until(function()
        return p:log():match("[^\n]*REPORT[^\n]*")
      end, 5, "the policy's report in the log")
      assert.matches("peer=127%.0%.0%.1:" .. port .. " ", line)
      assert.matches(" ip=127%.0%.0%.1 ", line)
      assert.matches(" port=" .. port .. " ", line)
      -- As given, not the bound port.
      assert.matches(" listener=127%.0%.0%.1:0 ", line)
      assert.matches(" nworkers=2 id1=1", line)
      assert.equals(0, p:stop())
    end)

    it("sees peer 'unix' and no ip for a unix-socket client", function()
      local p = H.start_pool{ script = WHOAMI, workers = 2, listen = "unix",
                              policy = FIX .. "policy_report.lua" }
      finally(function() p:stop() end)
      local given = "unix:" .. p.dir .. "/pool.sock"
      local fd = assert(fdpool.connect(given, 10))
      assert.matches("^1 ", fd:read("l"))
      fd:close()
      local line = H.wait_until(function()
        return p:log():match("[^\n]*REPORT[^\n]*")
      end, 5, "the policy's report in the log")
      assert.matches("peer=unix ip=nil port=nil listener=" .. given:gsub("%p", "%%%0") .. " ", line)
      assert.equals(0, p:stop())
    end)

    it("can route by conn.ip", function()
      if not has_ipv6() then
        pending("no IPv6 loopback here")
        return
      end
      local p = H.start_pool{ script = WHOAMI, workers = 3, policy = FIX .. "policy_by_ip.lua",
                              extra = { "--listen", "[::1]:0" } }
      finally(function() p:stop() end)
      local addrs = addresses(p)
      for _ = 1, 3 do
        assert.equals(1, whoami(addrs[1]))
        assert.equals(3, whoami(addrs[2]))
      end
      assert.equals(0, status(p).fallbacks)
      assert.equals(0, p:stop())
    end)

    it("examples/policy_sticky_busy.lua prefers the warm worker, else the least loaded", function()
      local p = H.start_pool{ script = WHOAMI, workers = 3, concurrency = 1,
                              policy = "examples/policy_sticky_busy.lua", args = { "warm" } }
      finally(function() p:stop() end)
      H.wait_until(function() return status(p).workers[2].fields.warm ~= nil end,
                   5, "worker 2 to report its warm field")
      for _ = 1, 4 do
        assert.equals(2, whoami(p.addr))
        wait_idle(p)
      end
      -- The warm worker is busy: the least loaded of the others (a tie:
      -- the lowest id), then the next.
      local a, fa = open(p.addr)
      local b, fb = open(p.addr)
      local c, fc = open(p.addr)
      assert.same({ 2, 1, 3 }, { a, b, c })
      fa:close(); fb:close(); fc:close()
      assert.equals(0, status(p).fallbacks)
      assert.equals(0, p:stop())
      assert.same({}, H.unexpected_errors(p:log()))
    end)
  end)

  -- docs/ARCHITECTURE.md "Dispatch": a pick of a worker that cannot take
  -- a connection falls back to first_free, unless no worker has room, in
  -- which case the connection waits (and is not counted as a fallback).
  describe("a policy that picks a full worker (always 1, --workers 2 --concurrency 1)", function()
    it("falls back while another worker has room, and waits while none has", function()
      local p = H.start_pool{ script = WHOAMI, workers = 2, concurrency = 1,
                              policy = FIX .. "policy_always_1.lua" }
      local held = {}
      finally(function()
        for _, fd in pairs(held) do fd:close() end
        p:stop()
      end)
      -- Finish a held connection: the handler returns on a line.
      local function release(name)
        assert(held[name]:write("bye\n"))
        assert.equals("", held[name]:read("a"))
        held[name]:close()
        held[name] = nil
      end
      local function st_is(what, pred)
        return H.wait_status(p, pred, 10, what)
      end

      -- a: the pick is honoured.
      local id
      id, held.a = open(p.addr)
      assert.equals(1, id)
      st_is("worker 1 full", function(s) return s.workers[1].active == 1 end)
      assert.equals(0, status(p).fallbacks)

      -- b: worker 1 is full, worker 2 has room: first_free, logged.
      id, held.b = open(p.addr)
      assert.equals(2, id)
      local st = status(p)
      assert.equals(1, st.fallbacks)
      assert.same({ 1, 1 }, { st.workers[1].active, st.workers[2].active })
      H.wait_until(function()
        return p:log():find("picked a worker that cannot take a connection; using first_free", 1, true)
      end, 5, "the fallback in the log")

      -- c: nobody has room: it waits in the master's queue, unanswered,
      -- and that is not a fallback.
      held.c = assert(fdpool.connect(p.addr, 10))
      st = st_is("c queued", function(s) return s.accepted == 3 and s.queued == 1 end)
      assert.equals(1, st.fallbacks)
      assert.same({ 1, 1 }, { st.workers[1].active, st.workers[2].active })

      -- Worker 2 gets room (b ends): the pick of full worker 1 falls back
      -- again, and c goes to worker 2.
      release("b")
      local line = assert(held.c:read("l"))
      assert.matches("^2 ", line)
      st = st_is("c on worker 2", function(s) return s.queued == 0 and s.workers[2].active == 1 end)
      assert.equals(2, st.fallbacks)

      -- d: both full again, waits; worker 1 gets room (a ends): the pick
      -- is honoured, no fallback.
      held.d = assert(fdpool.connect(p.addr, 10))
      st_is("d queued", function(s) return s.accepted == 4 and s.queued == 1 end)
      release("a")
      line = assert(held.d:read("l"))
      assert.matches("^1 ", line)
      release("c")
      release("d")
      st = st_is("all idle", function(s) return H.all_idle(s) and s.queued == 0 end)
      assert.equals(2, st.fallbacks)
      assert.same({ 2, 2 }, { st.workers[1].served, st.workers[2].served })
      assert.equals(0, p:stop())
      assert.same({}, H.unexpected_errors(p:log()))
    end)
  end)

  describe("custom status fields", function()
    -- Regression: a field's value used to arrive without its NUL and was
    -- read with "%s", so stale bytes of an earlier, longer message
    -- followed it (set "1", see "1nnnn..."). A longer field is set first
    -- to make that visible.
    it("reach the policy exactly as the worker set them", function()
      local p = H.start_pool{ script = WHOAMI, workers = 3,
                              policy = FIX .. "policy_warm_exact.lua", args = { "warm" } }
      finally(function() p:stop() end)
      H.wait_until(function() return status(p).workers[2].fields.warm ~= nil end,
                   5, "worker 2 to report its warm field")
      local ids = {}
      for i = 1, 3 do ids[i] = whoami(p.addr) end
      local st = status(p)
      assert.equals("1", st.workers[2].fields.warm)
      assert.equals(("n"):rep(60), st.workers[2].fields.note)
      assert.equals(0, st.fallbacks, p:log():match("[^\n]*WARM[^\n]*"))
      assert.same({ 2, 2, 2 }, ids)
      assert.equals(0, p:stop())
    end)
  end)

  describe("a broken policy", function()
    -- Each of these must never take the master down: every connection is
    -- served by first_free instead, and the log names the problem, once
    -- a second or so, not once per connection.
    local cases = {
      { "policy_raises.lua", "policy_raises: deliberate failure" },
      { "policy_loops.lua", "instruction budget" },
      { "policy_bad_index.lua", "returned 99, not a worker index" },
      { "policy_bad_type.lua", "returned a string, not a worker index" },
      { "policy_os_exit.lua", "attempt to index a nil value %(global 'os'%)" },
      { "policy_io_open.lua", "attempt to index a nil value %(global 'io'%)" },
      { "policy_require.lua", "attempt to call a nil value %(global 'require'%)" },
      { "policy_binary_load.lua", "attempt to load a binary chunk" },
      { "policy_writes_status.lua", "read%-only" },
      { "policy_memory.lua", "not enough memory" },
    }
    for _, case in ipairs(cases) do
      local file, problem = case[1], case[2]
      it(file .. " falls back to first_free and is logged, rate-limited", function()
        os.remove("/tmp/fdpool-policy-escaped")
        local p = H.start_pool{ script = WHOAMI, workers = 2, policy = FIX .. file }
        finally(function() p:stop() end)
        local n = 12
        local t0 = H.now()
        for _ = 1, n do assert.equals(1, whoami(p.addr)) end
        local elapsed = H.now() - t0
        local st = status(p)
        assert.equals(n, st.fallbacks)
        assert.equals(n, st.workers[1].served + st.workers[1].active)
        assert.is_true(H.alive(p.pid))
        local log = p:log()
        local lines = count(log, "policy [^\n]*" .. file:gsub("%p", "%%%0")
                                 .. ": [^\n]*" .. problem .. "[^\n]*using first_free")
        assert.is_true(lines >= 1, "no log line naming '" .. problem .. "':\n" .. log)
        -- At most one line a second (plus one).
        assert.is_true(lines <= math.ceil(elapsed) + 1,
                       ("%d log lines for %d connections in %.2f s:\n%s"):format(lines, n, elapsed, log))
        assert.is_nil(io.open("/tmp/fdpool-policy-escaped"))
        assert.equals(0, p:stop())
      end)
    end
  end)

  describe("the rate-limited policy error log", function()
    -- Regression: errors after the first in a second were only counted,
    -- and the count reported with the next logged error; when the errors
    -- stopped it never was, and the log showed one failure for twelve.
    it("eventually accounts for every error it did not show", function()
      local p = H.start_pool{ script = WHOAMI, workers = 2, policy = FIX .. "policy_raises.lua" }
      finally(function() p:stop() end)
      for _ = 1, 12 do assert.equals(1, whoami(p.addr)) end
      assert.equals(12, status(p).fallbacks)
      local function accounted()
        local n = 0
        for line in p:log():gmatch("[^\n]+") do
          if line:find("policy_raises.lua", 1, true) and line:find("using first_free", 1, true) then
            n = n + 1 + tonumber(line:match("(%d+) similar") or line:match("(%d+) more") or 0)
          end
        end
        return n
      end
      local ok = pcall(H.wait_until, function() return accounted() >= 12 end, 3)
      assert.is_true(ok, ("after 3 s the log accounts for %d of 12 policy errors:\n%s")
                         :format(accounted(), p:log()))
      assert.equals(0, p:stop())
    end)
  end)

  describe("a policy returning nil", function()
    it("keeps the connection queued and the master serves it on a later try", function()
      local p = H.start_pool{ script = WHOAMI, workers = 2, policy = FIX .. "policy_nil_first.lua" }
      finally(function() p:stop() end)
      local t0 = H.now()
      local fd = assert(fdpool.connect(p.addr, 10))
      H.wait_until(function()
        local st = status(p)
        return st.accepted == 1 and st.queued == 1
      end, 5, "the connection to be queued")
      local line = fd:read("l")
      fd:close()
      -- 8 nil answers, tried again on the master's tick (100 ms).
      assert.matches("^%d ", line)
      assert.is_true(H.now() - t0 >= 0.3, "served too soon for 8 nil answers")
      local st = status(p)
      assert.equals(0, st.queued)
      assert.equals(0, st.fallbacks)
      -- And later connections go straight through.
      assert.equals(1, whoami(p.addr))
      assert.equals(0, p:stop())
      assert.is_nil(p:log():find("policy [^\n]*using first_free"))
    end)
  end)

  describe("at start", function()
    local function run(args)
      return H.run(H.POOL .. " run " .. WHOAMI .. " --listen 127.0.0.1:0 --workers 1 --no-control " .. args)
    end

    it("fails on an unknown policy name", function()
      local ok, rc, out = run("--policy nope")
      assert.is_false(ok)
      assert.equals(2, rc)
      assert.matches("^pool: unknown policy 'nope'", out)
      assert.is_nil(out:find("listening on"))
    end)

    it("fails on a policy file with a syntax error, naming the file", function()
      local ok, rc, out = run("--policy " .. FIX .. "policy_syntax_error.lua")
      assert.is_false(ok)
      assert.equals(2, rc)
      assert.matches("^pool: [^\n]*policy_syntax_error%.lua:4:", out)
      assert.is_nil(out:find("listening on"))
    end)

    it("fails on a missing policy file, naming it", function()
      local ok, rc, out = run("--policy " .. FIX .. "policy_missing.lua")
      assert.is_false(ok)
      assert.equals(2, rc)
      assert.matches("^pool: [^\n]*policy_missing%.lua", out)
    end)

    it("fails on a policy file whose top level uses os (sandboxed)", function()
      local ok, rc, out = run("--policy " .. FIX .. "policy_toplevel_os.lua")
      assert.is_false(ok)
      assert.equals(2, rc)
      assert.matches("^pool: [^\n]*policy_toplevel_os%.lua[^\n]*attempt to index a nil value %(global 'os'%)", out)
    end)

    it("pool check --policy accepts the example and rejects a broken file", function()
      local ok, rc, out = H.run(H.POOL .. " check " .. WHOAMI .. " --policy examples/policy_sticky_busy.lua")
      assert.is_true(ok, out)
      assert.equals(0, rc)
      ok, rc, out = H.run(H.POOL .. " check " .. WHOAMI .. " --policy " .. FIX .. "policy_syntax_error.lua")
      assert.is_false(ok)
      assert.equals(2, rc)   -- a bad --policy value, as for `pool run`
      assert.matches("^pool: [^\n]*policy_syntax_error%.lua:4:", out)
    end)
  end)
end)
