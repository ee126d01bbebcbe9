-- tests/65-wait-deadline_spec.lua: a conn's waits keep their own
-- deadlines although the timer behind them is re-armed lazily (src/task.c
-- iot_fire: it is not stopped when a wait ends, and a later wait keeps it
-- while it fires no later than the new deadline). Against a real pool: a
-- short wait then a longer one still waits the longer one (the early
-- firing re-arms, it is no timeout); a long wait then a shorter one times
-- out at the shorter one; waits on many connections in turn, each
-- answered, then each idle one closed by its own timeout.
local H = require "helpers"
local fdpool = require "fdpool"

local SCRIPT = [[
return function(conn)
  local out = {}
  while true do
    local op = conn:receive("l")
    if not op or op == "end" then break end
    if op == "nan" then
      -- a NaN timeout is refused (it would be no number of milliseconds)
      local ok, e = pcall(conn.settimeout, conn, 0/0)
      local ok2, e2 = pcall(conn.setdeadline, conn, 0/0)
      conn:send(("%s %s|%s %s\n"):format(ok, e, ok2, e2))
      goto continue
    end
    -- "t SECONDS": wait for one line with this per-wait timeout
    local secs = tonumber(op:match("^t (%S+)$"))
    conn:settimeout(secs)
    local line, err = conn:receive("l")
    conn:send((line or err) .. "\n")
    if not line then break end
    ::continue::
  end
end
]]

local function line_of(fd)
  local s = assert(fd:read("l"))
  return s
end

describe("a conn's wait deadlines (lazily re-armed timer)", function()
  local p, dir
  setup(function()
    dir = H.tmpdir()
    H.writefile(dir .. "/w.lua", SCRIPT)
    p = H.start_pool{ script = dir .. "/w.lua", workers = 1 }
  end)
  teardown(function() if p then p:stop() end end)

  it("waits the longer deadline after a shorter wait ended early", function()
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write("t 0.2\nfirst\n"))
    assert.equal("first", line_of(fd))
    -- The first wait's timer (0.2 s) is still armed: the second wait
    -- (5 s) must outlive it. The delay is the test's input, not a wait
    -- for a state.
    assert(fd:write("t 5\n"))
    H.sleep(0.8)
    assert(fd:write("second\n"))
    assert.equal("second", line_of(fd))
    assert(fd:write("end\n"))
    fd:close()
  end)

  it("refuses a NaN timeout or deadline and keeps a huge one as no limit", function()
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write("nan\n"))
    local l = line_of(fd)
    local a, b = l:match("^(.*)|(.*)$")
    assert.matches("^false bad argument #2 .*seconds must not be NaN", a)
    assert.matches("^false bad argument #2 .*seconds must not be NaN", b)
    -- 1e300 seconds: longer than the loop's milliseconds can count; it
    -- waits (the test's line comes after a moment) instead of overflowing
    -- into an instant or random deadline
    assert(fd:write("t 1e300\n"))
    H.sleep(0.3)
    assert(fd:write("late\n"))
    assert.equal("late", line_of(fd))
    assert(fd:write("end\n"))
    fd:close()
  end)

  it("times out at a shorter deadline after a longer wait", function()
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write("t 30\nfirst\n"))
    assert.equal("first", line_of(fd))
    assert(fd:write("t 0.3\n"))
    -- (the pool answers "timeout" after 0.3 s, long before the first
    -- wait's 30 s; read's own limit is 10 s)
    assert.equal("timeout", line_of(fd))
    fd:close()
  end)

  it("keeps each of 200 connections' deadlines apart", function()
    local fds = {}
    for i = 1, 200 do
      fds[i] = assert(fdpool.connect(p.addr, 10))
      -- odd ones wait long and get an answer, even ones time out
      assert(fds[i]:write(("t %s\nx%d\nt %s\n"):format(i % 2 == 1 and "20" or "0.2", i,
        i % 2 == 1 and "20" or "0.3")))
    end
    for i = 1, 200 do
      assert.equal("x" .. i, line_of(fds[i]))
    end
    for i = 1, 200, 2 do assert(fds[i]:write("y" .. i .. "\n")) end
    for i = 1, 200 do
      assert.equal(i % 2 == 1 and "y" .. i or "timeout", line_of(fds[i]))
      fds[i]:close()
    end
  end)
end)
