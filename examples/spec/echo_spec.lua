-- examples/spec/echo_spec.lua: an integration spec for examples/echo.lua.
-- The handler prints fdpool.worker.id, which exists only inside a worker,
-- so this spec starts the real pool (testing.start) and talks to it over a
-- socket. Needs the `pool` binary: $FDPOOL_POOL, ./build/pool, or PATH.
local testing = require "fdpool.testing"

describe("examples/echo.lua in a real pool", function()
  local pool

  setup(function()
    pool = assert(testing.start{ script = "examples/echo.lua", workers = 2 })
  end)

  teardown(function()
    if pool then assert.equal(0, pool:stop()) end
  end)

  it("echoes each line prefixed with the worker id, until quit", function()
    local reply = assert(pool:request("hello\nworld\nquit\n"))
    local id = reply:match("^(%d+): hello\n")
    assert.truthy(id, reply)
    assert.equal(id .. ": hello\n" .. id .. ": world\n", reply)
  end)

  it("ends the conversation when the client closes", function()
    -- request() half-closes after sending: the handler sees "closed".
    assert.matches("^%d: bye\n$", assert(pool:request("bye\n")))
  end)

  it("shows both workers ready and counts what they served", function()
    local before = 0
    for _, w in ipairs(assert(pool:status()).workers) do before = before + w.served end
    assert(pool:request("one\nquit\n"))
    -- The master counts a connection when the worker reports it done:
    -- poll the status with a deadline rather than sleeping.
    testing.wait_until(function()
      local n = 0
      for _, w in ipairs(assert(pool:status()).workers) do
        assert.equal("free", w.state)
        n = n + w.served
      end
      -- (>=: the previous test's connection may be reported after
      -- `before` was read, on a loaded machine)
      return n >= before + 1
    end, 5, "the served count to grow")
  end)

  it("also listens on a unix socket", function()
    local p = assert(testing.start{ script = "examples/echo.lua", workers = 1, listen = "unix" })
    finally(function() p:stop() end)
    assert.matches("^unix:", p.addr)
    assert.equal("1: hi\n", p:request("hi\n"))
    assert.matches("listening on " .. p.addr, p:log(), 1, true)
  end)
end)
