-- examples/spec/policy_spec.lua: specs for the custom dispatch policy
-- examples/policy_sticky_busy.lua. Two ways, both without processes:
-- call the policy function directly with plain tables as the workers,
-- and run it through fdpool.sim (the master's own decision code: the
-- sandbox, the instruction budget, the first_free fallback).
local sim = require "fdpool.sim"

local POLICY = "examples/policy_sticky_busy.lua"

describe("examples/policy_sticky_busy.lua", function()
  describe("called directly", function()
    local pick = dofile(POLICY)
    local conn = { peer = "10.0.0.1:5000", ip = "10.0.0.1", port = 5000,
      listener = "127.0.0.1:8080" }

    local function worker(id, fields)
      local w = { id = id, state = "free", active = 0, capacity = 4 }
      for k, v in pairs(fields or {}) do w[k] = v end
      return w
    end

    it("prefers a warm worker even when a cold one is idler", function()
      local workers = { worker(1), worker(2, { warm = "1", active = 3 }) }
      assert.equal(2, pick(workers, conn))
    end)

    it("takes the least loaded warm worker", function()
      local workers = { worker(1, { warm = "1", active = 2 }),
        worker(2, { warm = "1", active = 1 }), worker(3) }
      assert.equal(2, pick(workers, conn))
    end)

    it("ignores warm = \"0\" and falls back to the least loaded", function()
      local workers = { worker(1, { warm = "0", active = 1 }), worker(2, { active = 2 }) }
      assert.equal(1, pick(workers, conn))
    end)

    it("returns nil (keep it queued) when nobody is free", function()
      local workers = { worker(1, { state = "busy", active = 4 }),
        worker(2, { state = "starting" }) }
      assert.is_nil(pick(workers, conn))
    end)
  end)

  describe("in fdpool.sim", function()
    it("sends everything to the warm worker while it has room", function()
      local arrivals = {}
      for i = 1, 4 do arrivals[i] = { at = i, hold = 0.5, peer = "10.0.0." .. i .. ":4000" } end
      local r = sim.run{ policy = POLICY, workers = 3, capacity = 2,
        fields = { [3] = { warm = "1" } }, arrivals = arrivals }
      assert.same({ 3, 3, 3, 3 }, r.choices)
      assert.equal(0, r.fallbacks)   -- it never broke inside the sandbox
    end)

    it("spills to the cold workers when the warm one is full", function()
      -- Three at once, capacity 1: the warm worker 2 takes the first.
      local arrivals = {}
      for i = 1, 3 do arrivals[i] = { at = 0, hold = 1 } end
      local r = sim.run{ policy = POLICY, workers = 3, capacity = 1,
        fields = { [2] = { warm = "1" } }, arrivals = arrivals }
      assert.same({ 2, 1, 3 }, r.choices)
      assert.equal(0, r.queued_max)
    end)

    it("queues when every worker is full, and serves all in the end", function()
      local arrivals = {}
      for i = 1, 5 do arrivals[i] = { at = 0, hold = 1 } end
      local r = sim.run{ policy = POLICY, workers = 2, capacity = 1, arrivals = arrivals }
      assert.equal(3, r.queued_max)
      assert.equal(0, r.unserved)
      assert.equal(5, r.workers[1].served + r.workers[2].served)
    end)
  end)
end)
