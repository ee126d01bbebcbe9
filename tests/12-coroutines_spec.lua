-- tests/12-coroutines_spec.lua: a handler's own coroutines. conn I/O and
-- fdpool.sleep inside them yield to the worker's loop (the worker's
-- coroutine.resume/wrap pass the wait up to the task), so one worker
-- still serves many connections at once; where yielding is impossible
-- (a gsub callback) they block instead of failing.
local H = require "helpers"
local fdpool = require "fdpool"

describe("a handler's own coroutines", function()
  it("wait for I/O and sleep without blocking the worker", function()
    local p = H.start_pool{ script = "tests/fixtures/pool_coroutines.lua", workers = 1 }
    finally(function() p:stop() end)
    local t0 = H.clock()
    local conns = {}
    for i = 1, 4 do
      conns[i] = assert(fdpool.connect(p.addr, 10))
      assert(conns[i]:write("line" .. i .. "\n"))
    end
    for i = 1, 4 do
      assert.equals(("got line%d done true nested ok\n"):format(i), conns[i]:read("a"))
      conns[i]:close()
    end
    -- Each connection sleeps 0.7 s inside its coroutines; four at once on
    -- one worker must overlap (sequential would take 2.8 s).
    local elapsed = H.clock() - t0
    assert.is_true(elapsed < 2.0, ("took %.2f s: the nested waits blocked the worker"):format(elapsed))
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("block (and still work) where the handler cannot yield", function()
    local dir = H.tmpdir()
    local script = H.writefile(dir .. "/gsub.lua", [[
      local fdpool = require "fdpool"
      return function(conn)
        local out = ("ab"):gsub(".", function(c) fdpool.sleep(0.01); return c:upper() end)
        conn:send(out .. "\n")
      end
    ]])
    local p = H.start_pool{ script = script, workers = 1 }
    finally(function() p:stop() end)
    assert.equals("AB\n", H.request(p.addr, ""))
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)
