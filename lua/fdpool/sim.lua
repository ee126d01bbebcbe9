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

--- Simulate arrivals on a pool.
-- @tparam table opts `policy` (built-in name, path, or function(workers,
-- conn)), `workers` (default 2), `capacity` (connections per worker,
-- default 1), `listener` (conn.listener, default "127.0.0.1:8080"),
-- `fields` ({[i] = {key = value}}: custom status fields per worker),
-- `cpus` ({[i] = CPU}: worker i pinned to that CPU, as --cpu-affinity
-- does; w.cpu in the policy), `reference` (true: a built-in policy runs
-- its Lua file, not the C fast path the master uses),
-- `arrivals` (list of {at = seconds, peer = "ip:port", hold = seconds,
-- cpu = the CPU that received it (conn.cpu; nil: unknown)}),
-- `limit` (seconds of simulated time after the last arrival, default 3600).
-- @treturn table `{workers = {{served, max_active}...}, queued_max = n,
-- fallbacks = n, unserved = n, choices = {worker index per arrival}}`
function M.run(opts)
  local nw, cap = opts.workers or 2, opts.capacity or 1
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
  local last = arrivals[#arrivals] and arrivals[#arrivals].at or 0
  local stop_at = last + (opts.limit or 3600)

  local function try(a, now)
    local w = s:choose(a.peer, a.cpu)
    if not w then return false end
    s:start(w)
    active[w] = active[w] + 1
    if active[w] > workers[w].max_active then workers[w].max_active = active[w] end
    result.choices[a.n] = w
    heap_push(departures, { now + a.hold, w })
    return true
  end

  -- As the master: the queue is retried only while some worker has room.
  local function room()
    for i = 1, nw do
      if active[i] < cap then return true end
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
      end
    else
      next_tick = math.huge
      drain(now)
    end
    local waiting = qtail - qhead + 1
    if waiting > result.queued_max then result.queued_max = waiting end
    if waiting > 0 and next_tick == math.huge then next_tick = now + M.tick end
  end
  result.unserved = qtail - qhead + 1
  result.fallbacks = s:fallbacks()
  s:close()
  return result
end

return M
