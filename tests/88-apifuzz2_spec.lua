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
