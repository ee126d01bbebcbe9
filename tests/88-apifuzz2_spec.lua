-- tests/88-apifuzz2_spec.lua: what fuzzing the Lua API with bad
-- arguments and abuse sequences found (h69). Each case runs inside a
-- worker of the real build/pool serving tests/fixtures/apifuzz2.lua (or
-- in this process, for the plain-Lua parts) and must end in a Lua error
-- or a clean result: never a crash, a sanitizer report, or runaway
-- memory.
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local pool
local function ask(case, timeout)
  local fd = assert(fdpool.connect(pool.addr, 5))
  fd:settimeout(timeout or 20)
  assert(fd:write(case .. "\n"))
  local line = fd:read("l")
  fd:close()
  return line
end

describe("API abuse inside a worker", function()
  setup(function()
    pool = H.start_pool { script = "tests/fixtures/apifuzz2.lua", workers = 1, concurrency = 4 }
    assert(pool.addr, pool:log())
  end)
  teardown(function()
    if pool then
      assert.equals(0, pool:stop())
      local log = pool:log()
      assert.is_nil(log:find("exited with", 1, true) and log:find("exited with code [1-9]") , log)
    end
  end)

  it("conn:receive(2^50) / receiveany(2^50) that time out do not grow the read buffer", function()
    assert.equals("ok", ask("receive-huge"))
  end)
end)

-- A function policy runs in the caller's Lua state, so it can reach its
-- own pool or simulator: closing it there freed the policy under the
-- pick running it (heap-use-after-free), run/step nested the event loop.
describe("a function policy using its own pool or simulator", function()
  it("sim:close() / sim:choose() inside the policy are errors (the pick falls back)", function()
    local s
    s = fdpool.simulator(function() s:close() return 1 end, 2, 4)
    local idx, fallback = s:choose("127.0.0.1:5")
    assert.equals(1, idx)
    assert.is_true(fallback)
    assert.equals(1, s:fallbacks())
    local s2
    s2 = fdpool.simulator(function() return s2:choose("127.0.0.1:6") end, 2, 4)
    idx, fallback = s2:choose("127.0.0.1:5")
    assert.equals(1, idx)
    assert.is_true(fallback)
    -- and they work again once the pick is over
    s2:close()
    assert.has_error(function() s2:choose("127.0.0.1:5") end, "attempt to use a closed simulator")
    assert.equals(2, (fdpool.simulator(function() return 2 end, 2, 4):choose("127.0.0.1:5")))
  end)

  it("pool:close() / pool:run() inside the master's policy are errors, not a crash", function()
    local dir = H.tmpdir()
    H.writefile(dir .. "/drv.lua", [[
      local fdpool = require "fdpool"
      local mode, p = arg[1]
      local policy = function()
        if mode == "close" then p:close() else p:run() end
        return 1
      end
      p = assert(fdpool.pool { handler = function(c) c:send("hi\n") end,
        listen = "127.0.0.1:0", workers = 1, policy = policy })
      assert(p:start())
      local addr = p:addresses()[1]
      local fd = assert(fdpool.connect(addr, 5))
      local got
      for _ = 1, 200 do
        p:step(0.02)
        fd:settimeout(0.01)
        got = fd:read("l")
        if got then break end
      end
      print("got", got, tostring(p), p:status().fallbacks or "")
      p:stop()
      while p:step(0.1) do end
      p:close()
      print("end")
    ]])
    for _, mode in ipairs { "close", "run" } do
      -- (io.popen keeps LD_PRELOAD: the ASan build's runtime)
      local f = io.popen(("LUA_CPATH=%s timeout 30 lua5.4 %s %s 2>&1"):format(
        H.quote("./" .. H.BUILD .. "/?.so"), H.quote(dir .. "/drv.lua"), mode))
      local out = f:read("a")
      assert.is_true(f:close(), out)
      assert.matches("got\thi\tfdpool.pool %(running%)", out)
      assert.matches("pool:" .. mode .. ": not from inside the pool's own policy", out, 1, true)
      assert.matches("\nend\n", out)
      assert.is_nil(out:find("AddressSanitizer", 1, true), out)
    end
  end)
end)
