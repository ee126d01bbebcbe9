-- tests/55-timers_spec.lua: work beyond one request, per worker, against
-- real pools: timers (at/every, cancel, a raising callback that goes on),
-- threads (spawn/wait/kill, ending with their handler unless detached),
-- queues and semaphores (1000 waiters), the worker's busy accounting with
-- timers running, and the stop notice (exiting, on_stop) seen by a long
-- handler during a graceful stop.
local H = require "helpers"
local fdpool = require "fdpool"

local ASAN = H.BUILD ~= "build"

local function cmd(p, line)
  local out, err = H.request(p.addr, line .. "\n", 30)
  assert(out, err)
  return (out:gsub("\n$", ""))
end

describe("timers, threads, queues", function()
  local p
  setup(function()
    p = H.start_pool{ script = "tests/fixtures/tm_timers.lua", workers = 1 }
  end)
  teardown(function() if p then p:stop() end end)

  it("keeps firing every-timers started in init, a raising one included", function()
    -- ticks, raises, sleeping callbacks done
    H.wait_until(function()
      local t, r, s = cmd(p, "ticks"):match("^(%d+) (%d+) (%d+)$")
      return tonumber(t) >= 5 and tonumber(r) >= 3 and tonumber(s) >= 2
    end, 20, "timers to fire")
    -- each raise is logged with its traceback, on one line
    local line = p:log():match("[^\n]*timer callback error: [^\n]*")
    assert.truthy(line, "no timer error line")
    assert.truthy(line:find("boom from a timer", 1, true))
    assert.truthy(line:find("stack traceback:", 1, true))
    assert.truthy(line:find("tm_timers.lua:%d+"))
  end)

  it("runs a one-shot timer with its arguments, and a cancelled one never", function()
    assert.equals("5 nil already ended", cmd(p, "at"))
  end)

  it("caps the worker's pending timers: past the cap, nil and a message; ended ones free their place", function()
    assert.equals("nil too many pending timers 5 ran false 1024", cmd(p, "cap"))
  end)

  it("spawns threads and waits for their results or errors", function()
    assert.equals("true 42 two | false thread boom | true 42", cmd(p, "spawn"))
    assert.truthy(p:log():find("thread error: [^\n]*thread boom"))
  end)

  it("passes many arguments to a thread and many results back", function()
    assert.equals("true 300 302 300", cmd(p, "manyargs"))
  end)

  it("kills a waiting thread, running its <close> variables", function()
    assert.equals("true false killed nil already ended true killed", cmd(p, "kill"))
  end)

  it("wakes 1000 waiters of one queue, one item each", function()
    -- 1000 threads wait in pop; 1000 pushes reach each exactly once
    assert.equals("1000 500500", cmd(p, "waiters 1000"))
  end)

  it("wakes 1000 handlers (connections) waiting on the worker's queue", function()
    -- 1000 connections wait in pop() on one worker; one more pushes 1000
    -- items: each waiter gets exactly one (200 under the sanitizers)
    local n, conns = ASAN and 200 or 1000, {}
    for i = 1, n do
      conns[i] = assert(fdpool.connect(p.addr, 30))
      assert(conns[i]:write("qwait\n"))
    end
    H.wait_status(p, function(st) return st.workers[1].active >= n end, 30, n .. " waiting handlers")
    assert.equals("pushed", cmd(p, "qpushn " .. n))
    local got = {}
    for i = 1, n do
      local v = tonumber(assert(conns[i]:read("l")))
      conns[i]:close()
      assert.is_nil(got[v], "item " .. tostring(v) .. " twice")
      got[v] = true
    end
    for i = 1, n do assert.truthy(got[i], "item " .. i .. " lost") end
  end)

  it("bounds a queue and times pops out", function()
    assert.equals("queue semaphore thread true true full a b timeout timeout 0 nil cannot be queued",
      cmd(p, "queue"))
  end)

  it("counts semaphore units and hands them to waiters", function()
    assert.equals("true timeout -1 true 3", cmd(p, "sema"))
  end)

  it("lets a handler wait on the worker's queue until another handler pushes", function()
    local c = assert(fdpool.connect(p.addr, 10))
    assert(c:write("qwait\n"))
    fdpool.sleep(0.05)
    assert.equals("true", cmd(p, "qpush hello"))
    assert.equals("hello\n", c:read("a"))
    c:close()
  end)

  it("lets a thread use its handler's conn (its waits yield too)", function()
    local c = assert(fdpool.connect(p.addr, 10))
    assert(c:write("threadio\n"))
    assert.equals("from thread", c:read("l"))
    assert(c:write("reply to thread\n"))
    assert.equals("true reply to thread", c:read("l"))
    c:close()
  end)

  it("lets a timer callback use fdpool.tcp (the worker serves meanwhile)", function()
    -- one worker: the callback's connection to the pool is served by
    -- the same worker while the callback waits for the answer
    assert.equals("from-timer", cmd(p, "tcptimer " .. p.addr))
  end)

  it("ends a handler's threads with it unless detached", function()
    assert.equals("ok", cmd(p, "orphan"))
    H.wait_until(function() return cmd(p, "orphans") == "0 1" end, 10, "the detached thread to run")
    fdpool.sleep(0.1)
    assert.equals("0 1", cmd(p, "orphans"))
  end)

  it("ends 2000 waiting threads with their handler, memory back", function()
    local _, mem0 = cmd(p, "alive"):match("^(%d+) (%d+)$")
    for _ = 1, 3 do
      assert.equals("2000", cmd(p, "many 2000"))
      assert.equals("0", cmd(p, "alive"):match("^(%d+)"))
    end
    local _, mem1 = cmd(p, "alive"):match("^(%d+) (%d+)$")
    -- the Lua heap (MiB) did not keep 6000 dead threads
    assert.is_true(tonumber(mem1) <= tonumber(mem0) + 2, mem0 .. " -> " .. mem1)
  end)

  it("raises for misuse, naming the argument", function()
    assert.equals("bad argument #1; bad argument #1; bad argument #2; bad argument #1; "
      .. "bad argument #1; bad argument #1", cmd(p, "misuse"))
  end)

  it("never makes the worker look busy: timers run, the worker is free", function()
    local st = H.wait_status(p, H.all_idle, 10, "the worker idle")
    assert.equals(1, #st.workers)
    assert.equals("free", st.workers[1].state)
  end)

  it("logs no other errors", function()
    assert.same({}, H.unexpected_errors(p:log(), { "timer callback error", "thread error" }))
  end)
end)

describe("the worker's busy accounting", function()
  it("counts connections only: --concurrency 1 with timers always running", function()
    -- tm_timers' timers run (and sleep) all the time; the one slot still
    -- takes each new connection and the worker returns to free
    local p = H.start_pool{ script = "tests/fixtures/tm_timers.lua", workers = 1,
                            extra = { "--concurrency", "1" } }
    finally(function() p:stop() end)
    for _ = 1, 20 do assert.equals("ok", cmd(p, "orphan")) end
    local st = H.wait_status(p, function(s)
      return s.workers[1].served >= 20 and H.all_idle(s)
    end, 10, "20 served and idle")
    assert.equals(20, st.workers[1].served)
    assert.equals(0, st.workers[1].restarts)
  end)
end)

describe("timers at a script's top level", function()
  it("run in each worker, and pool check accepts the script", function()
    local dir = H.tmpdir()
    local script = H.writefile(dir .. "/top.lua", [[
      local fdpool = require "fdpool"
      local n = 0
      local t = fdpool.timer.every(0.01, function() n = n + 1 end)
      fdpool.spawn(function() end)
      fdpool.worker.on_stop(function() t:cancel() end)
      return function(conn) conn:send(tostring(n > 0) .. "\n") end
    ]])
    local code, out = H.run_pool("check " .. H.quote(script), 20)
    assert.equals(0, code)
    assert.truthy(out:find(": ok", 1, true))
    local p = H.start_pool{ script = script, workers = 1 }
    finally(function() p:stop() end)
    H.wait_until(function() return H.request(p.addr, "") == "true\n" end, 10, "the timer to tick")
    assert.equals(0, p:stop())
  end)
end)

describe("fdpool.sleep with a NaN or a huge number of seconds", function()
  -- (NaN made the timer's milliseconds undefined: the handler slept for
  -- ~292 million years; inf and past 1e9 seconds now wait 1e9)
  it("raises for NaN in a handler and outside, returns at once for -inf", function()
    local dir = H.tmpdir()
    local script = H.writefile(dir .. "/nan.lua", [[
      local fdpool = require "fdpool"
      return function(conn)
        local ok, err = pcall(fdpool.sleep, 0/0)
        local t0 = fdpool.now()
        fdpool.sleep(-math.huge)
        conn:send(tostring(ok) .. " " .. tostring(err) .. " " .. tostring(fdpool.now() - t0 < 1) .. "\n")
      end
    ]])
    local p = H.start_pool{ script = script, workers = 1 }
    finally(function() p:stop() end)
    assert.equals("false bad argument #1 to 'fdpool.sleep' (seconds must be a number, got nan) true\n",
      H.request(p.addr, ""))
    local ok, err = pcall(fdpool.sleep, 0/0)
    assert.is_false(ok)
    assert.matches("seconds must be a number, got nan", err, 1, true)
  end)
end)

describe("outside a worker", function()
  it("raises: timers and threads need a pool's worker", function()
    local ok, err = pcall(fdpool.timer.at, 1, print)
    assert.is_false(ok)
    assert.truthy(err:find("works only in a pool's worker", 1, true))
    ok, err = pcall(fdpool.spawn, print)
    assert.truthy(err:find("works only in a pool's worker", 1, true))
  end)
end)

describe("the stop notice", function()
  it("stops a worker with only timers at once on a graceful stop", function()
    local p = H.start_pool{ script = "tests/fixtures/tm_timers.lua", workers = 2,
                            extra = { "--grace", "30" } }
    finally(function() p:stop() end)
    local t0 = H.now()
    p:kill("QUIT")
    assert.equals(0, p:wait_exit(20))
    -- the grace is 30 s: the timers did not hold the workers
    assert.is_true(H.now() - t0 < 20)
    assert.falsy(p:log():find("grace period over", 1, true))
  end)

  it("reaches a long handler during SIGQUIT, which finishes its reply", function()
    local p = H.start_pool{ script = "tests/fixtures/tm_stop.lua", workers = 1,
                            extra = { "--grace", "30" } }
    finally(function() p:stop() end)
    local c = assert(fdpool.connect(p.addr, 10))
    assert(c:write("go\n"))
    assert.equals("started\n", c:read("l") .. "\n")
    p:kill("QUIT")
    local rest = c:read("a")
    c:close()
    -- the handler saw exiting() and finished; on_stop ran; the timer
    -- that ticked before stopped firing
    assert.truthy(rest:find("exiting true", 1, true), rest)
    assert.truthy(rest:find("on_stop ran", 1, true), rest)
    assert.truthy(rest:find("end of reply", 1, true), rest)
    assert.equals(0, p:wait_exit(20))
    assert.truthy(p:log():find("on_stop callback done", 1, true))
    assert.falsy(p:log():find("grace period over", 1, true))
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("reaches a long handler on a worker removed by pool scale", function()
    local p = H.start_pool{ script = "tests/fixtures/tm_stop.lua", workers = 2,
                            extra = { "--grace", "30" } }
    finally(function() p:stop() end)
    -- one long handler on each worker
    local conns, seen = {}, {}
    H.wait_until(function()
      local c = assert(fdpool.connect(p.addr, 10))
      assert(c:write("go\n"))
      assert.equals("started", c:read("l"))
      conns[#conns + 1] = c
      local st = p:status()
      seen = {}
      for _, w in ipairs(st.workers) do if w.active > 0 then seen[w.id] = true end end
      return seen[1] and seen[2]
    end, 10, "a long handler on each worker")
    local code, out = H.run_pool("scale 1 --control " .. H.quote(p.control), 30)
    assert.equals(0, code, out)
    -- the removed worker's handler saw the notice and finished its reply
    -- (the other one keeps waiting: poll each in turn)
    for _, c in ipairs(conns) do c:settimeout(0.1) end
    local reply = H.wait_until(function()
      for _, c in ipairs(conns) do
        local first = c:read("l")
        if first then
          c:settimeout(10)
          return first .. "\n" .. (c:read("a") or "")
        end
      end
    end, 20, "the removed worker's handler to answer")
    assert.truthy(reply:find("^exiting true"), reply)
    assert.truthy(reply:find("end of reply", 1, true), reply)
    for _, c in ipairs(conns) do c:close() end
  end)

  it("turns exiting() on in the old generation on a reload", function()
    local p = H.start_pool{ script = "tests/fixtures/tm_stop.lua", workers = 1,
                            extra = { "--grace", "30" } }
    finally(function() p:stop() end)
    local c = assert(fdpool.connect(p.addr, 10))
    assert(c:write("go\n"))
    assert.equals("started", c:read("l"))
    p:kill("HUP")
    local rest = c:read("a")
    c:close()
    assert.truthy(rest:find("exiting true", 1, true), rest)
    assert.truthy(rest:find("end of reply", 1, true), rest)
    -- the new generation serves
    H.wait_until(function() return cmd(p, "ping") == "pong" end, 20, "the new generation")
    assert.equals(0, p:stop())
  end)
end)
