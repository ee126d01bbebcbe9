-- fdpool.sim: run a dispatch policy against a simulated pool, in one
-- process, through the master's own decision code (the same sandbox,
-- views, instruction budget, checks and first_free fallback), so a
-- policy can be tested in busted without forking.
--
--   local sim = require "fdpool.sim"
--   local r = sim.run{ policy = "least_conn", workers = 2, capacity = 1,
--     arrivals = { {at = 0, peer = "10.0.0.1:5000", hold = 1}, ... } }
--   r.workers[1].served, r.workers[1].max_active, r.queued_max, r.fallbacks
local fdpool = require "fdpool"

local M = {}

-- The master retries queued connections on every finished connection
-- and on its 100 ms tick; the simulation does the same.
M.tick = 0.1

local function heap_push(h, item)
  h[#h + 1] = item
  local i = #h
  while i > 1 do
    local parent = i // 2
    if h[parent][1] <= h[i][1] then break end
    h[parent], h[i] = h[i], h[parent]
    i = parent
  end
end

local function heap_pop(h)
  local top = h[1]
  h[1] = h[#h]
  h[#h] = nil
  local i, n = 1, #h
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and h[l][1] < h[m][1] then m = l end
    if r <= n and h[r][1] < h[m][1] then m = r end
    if m == i then break end
    h[m], h[i] = h[i], h[m]
    i = m
  end
  return top
end

-- The master's on-demand spawn rate: at most this many new workers per
-- tick, doubling from 1 (as src/pool.c's FDP_SPAWN_RATE_MAX).
M.spawn_rate_max = 32

-- "MIN-MAX", {min = , max = } or n -> min, max (max nil: fixed n).
local function workers_range(w)
  if type(w) == "table" then return w.min, w.max end
  if type(w) == "string" then
    local lo, hi = w:match("^(%d+)%-(%d+)$")
    assert(lo, "workers must be n, \"MIN-MAX\" or {min = , max = }")
    return tonumber(lo), tonumber(hi)
  end
  return w or 2, nil
end

--- Simulate arrivals on a pool.
-- @tparam table opts `policy` (built-in name, path, or function(workers,
-- conn)), `workers` (default 2; "MIN-MAX" or {min = , max = }: workers
-- on demand as the master runs them: a slot without a process has state
-- "none", workers start while connections wait and none has room, at
-- most 1, 2, 4 ... 32 a tick, each taking `spawn_time` seconds (default
-- 0.05) to start, and a worker above MIN idle for `idle_timeout` seconds
-- (default 10) retires), `capacity` (connections per worker,
-- default 1), `listener` (conn.listener, default "127.0.0.1:8080"),
-- `fields` ({[i] = {key = value}}: custom status fields per worker),
-- `cpus` ({[i] = CPU}: worker i pinned to that CPU, as --cpu-affinity
-- does; w.cpu in the policy), `reference` (true: a built-in policy runs
-- its Lua file, not the C fast path the master uses),
-- `arrivals` (list of {at = seconds, peer = "ip:port", hold = seconds,
-- cpu = the CPU that received it (conn.cpu; nil: unknown)}),
-- `limit` (seconds of simulated time after the last arrival, default 3600).
-- @treturn table `{workers = {{served, max_active}...}, queued_max = n,
-- fallbacks = n, unserved = n, choices = {worker index per arrival}}`;
-- on demand also `spawned`, `retired` (counts), `max_live` (processes at
-- once) and `events` ({at = t, spawn = n} and {at = t, retire = slot}).
function M.run(opts)
  local min, max = workers_range(opts.workers)
  local nw, cap = max or min, opts.capacity or 1
  local s = fdpool.simulator(opts.policy or "least_conn", nw, cap, opts.listener, opts.cpus,
    opts.reference)
  for i, fields in pairs(opts.fields or {}) do
    for k, v in pairs(fields) do s:set(i, k, v) end
  end
  local arrivals = {}
  for i, a in ipairs(opts.arrivals or {}) do
    assert(type(a.at) == "number", "arrival " .. i .. ": 'at' must be a number")
    arrivals[#arrivals + 1] = { at = a.at, peer = a.peer or "127.0.0.1:40000",
      hold = a.hold or 0, cpu = a.cpu, n = i }
  end
  table.sort(arrivals, function(a, b)
    if a.at == b.at then return a.n < b.n end
    return a.at < b.at
  end)
  local workers, active = {}, {}
  for i = 1, nw do
    workers[i] = { served = 0, max_active = 0 }
    active[i] = 0
  end
  local departures, queue, qhead, qtail = {}, {}, 1, 0
  local result = { workers = workers, queued_max = 0, choices = {} }
  -- Workers on demand: each slot "running", "starting" (until ready[i])
  -- or "none"; used[i] is when it last had a connection.
  local state, ready, used = {}, {}, {}
  local idle = opts.idle_timeout or 10
  local spawn_time = opts.spawn_time or 0.05
  local rate, next_round = 1, 0
  for i = 1, nw do state[i], used[i] = "running", 0 end
  if max then
    for i = min + 1, nw do
      state[i] = "none"
      s:state(i, "none")
    end
    result.spawned, result.retired, result.max_live, result.events = 0, 0, min, {}
  end
  local last = arrivals[#arrivals] and arrivals[#arrivals].at or 0
  local stop_at = last + (opts.limit or 3600)

  local function try(a, now)
    local w = s:choose(a.peer, a.cpu)
    if not w then return false end
    s:start(w)
    used[w] = now
    active[w] = active[w] + 1
    if active[w] > workers[w].max_active then workers[w].max_active = active[w] end
    result.choices[a.n] = w
    heap_push(departures, { now + a.hold, w })
    return true
  end

  -- As the master: the queue is retried only while some worker has room.
  local function room()
    for i = 1, nw do
      if state[i] == "running" and active[i] < cap then return true end
    end
    return false
  end

  -- The master's on-demand tick (src/pool.c ondemand_tick).
  local function ondemand(now)
    local live, coming = 0, 0
    for i = 1, nw do
      if state[i] == "starting" and now >= ready[i] then
        state[i] = "running"
        s:state(i, "running")
      end
      if state[i] ~= "none" then live = live + 1 end
      if state[i] == "starting" then coming = coming + 1 end
      if active[i] > 0 then used[i] = now end
    end
    local waiting = qtail - qhead + 1
    if waiting > 0 then
      if room() or now < next_round then return end
      local need = math.min((waiting + cap - 1) // cap - coming, rate)
      local n = 0
      for i = 1, nw do
        if n >= need then break end
        if state[i] == "none" then
          state[i], ready[i], used[i] = "starting", now + spawn_time, now
          s:state(i, "starting")
          n, live = n + 1, live + 1
        end
      end
      if n > 0 then
        next_round = now + M.tick
        result.spawned = result.spawned + n
        result.events[#result.events + 1] = { at = now, spawn = n }
        rate = math.min(rate * 2, M.spawn_rate_max)
        if live > result.max_live then result.max_live = live end
      end
      return
    end
    rate = 1
    for i = nw, 1, -1 do
      if live <= min then break end
      if state[i] == "running" and active[i] == 0 and now - used[i] >= idle then
        state[i] = "none"
        s:state(i, "none")
        live = live - 1
        result.retired = result.retired + 1
        result.events[#result.events + 1] = { at = now, retire = i }
      end
    end
  end

  -- Is there anything a tick still has to do (workers on demand)?
  local function busy_slots()
    if not max then return false end
    for i = min + 1, nw do
      if state[i] ~= "none" then return true end
    end
    return false
  end

  local function drain(now)
    while queue[qhead] and room() and try(queue[qhead], now) do
      queue[qhead] = nil
      qhead = qhead + 1
    end
  end

  local ai, now, next_tick = 1, 0, math.huge
  while true do
    local ta = arrivals[ai] and arrivals[ai].at or math.huge
    local td = departures[1] and departures[1][1] or math.huge
    local t = math.min(ta, td, next_tick)
    if t == math.huge or t > stop_at then break end
    now = t
    if td <= ta and td <= next_tick then
      local d = heap_pop(departures)
      s:finish(d[2])
      active[d[2]] = active[d[2]] - 1
      workers[d[2]].served = workers[d[2]].served + 1
      drain(now)
    elseif ta <= next_tick then
      local a = arrivals[ai]
      ai = ai + 1
      if queue[qhead] or not try(a, now) then
        qtail = qtail + 1
        queue[qtail] = a
        -- The master starts workers on demand as soon as one waits.
        if max then ondemand(now) end
      end
    else
      next_tick = math.huge
      if max then ondemand(now) end
      drain(now)
    end
    local waiting = qtail - qhead + 1
    if waiting > result.queued_max then result.queued_max = waiting end
    if (waiting > 0 or busy_slots()) and next_tick == math.huge then
      next_tick = now + M.tick
    end
  end
  result.unserved = qtail - qhead + 1
  result.fallbacks = s:fallbacks()
  s:close()
  return result
end

return M
