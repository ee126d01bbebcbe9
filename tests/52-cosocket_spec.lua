-- tests/52-cosocket_spec.lua: handlers that talk to the world (issue 12).
-- A conn usable from any coroutine of its worker: one reader and one
-- writer wait at once, a second gets nil, "busy" (a real pool and
-- fdpool.testing behave the same); fdpool.tcp() client sockets (connect,
-- send/receive, timeouts, errors, DNS, the keep-alive pool, fd hygiene).
local H = require "helpers"
local fdpool = require "fdpool"
local testing = require "fdpool.testing"

local ASAN = H.BUILD ~= "build"

local function line(fd)
  return fd:read("l")
end

describe("a conn used from other handlers of its worker", function()
  it("carries a chat: every handler writes to the others, whole lines, in order", function()
    local p = H.start_pool{ script = "tests/fixtures/cos_chat.lua", workers = 1 }
    finally(function() p:stop() end)
    local c = {}
    for i = 1, 3 do
      c[i] = assert(fdpool.connect(p.addr, 10))
      assert.equals("welcome " .. i, line(c[i]))
    end
    assert(c[1]:write("hello\n"))
    assert.equals("1: hello", line(c[2]))
    assert.equals("1: hello", line(c[3]))
    assert(c[3]:write("hi from 3\n"))
    assert.equals("3: hi from 3", line(c[1]))
    assert.equals("3: hi from 3", line(c[2]))
    -- 2 MB to each other client: handler 1 waits to write client 2's
    -- conn while handler 2 waits to read it; then client 2 speaks.
    local N = 2000
    assert(c[1]:write("/flood " .. N .. "\n"))
    assert(c[2]:write("from 2 during the flood\n"))
    local function drain(fd, who)
      local nextn, extra = 1, {}
      while nextn <= N do
        local l = assert(line(fd))
        local n = tonumber(l:match("^1: flood (%d+) x+$"))
        if n then
          assert.equals(nextn, n, who .. " got flood line " .. n .. " out of order")
          assert.equals(1000, #l:match("x+$"))
          nextn = nextn + 1
        else
          extra[#extra + 1] = l
        end
      end
      return extra
    end
    assert.same({}, drain(c[2], "client 2"))
    local extra3 = drain(c[3], "client 3")
    if #extra3 == 0 then extra3[1] = line(c[3]) end
    assert.same({ "2: from 2 during the flood" }, extra3)
    assert.equals("2: from 2 during the flood", line(c[1]))
    for i = 1, 3 do c[i]:close() end
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("lets one reader and one writer wait; a second of either gets nil, \"busy\"", function()
    local p = H.start_pool{ script = "tests/fixtures/cos_busy.lua", workers = 1 }
    finally(function() p:stop() end)
    local x = assert(fdpool.connect(p.addr, 10))
    assert(x:write("first\n"))
    assert.equals("ok", line(x))
    assert.equals("read: nil busy\n", H.request(p.addr, "read\n"))
    -- The refused reader took nothing: the first one still reads its lines.
    assert(x:write("hello\n"))
    assert.equals("first got hello", line(x))
    local f = assert(fdpool.connect(p.addr, 10))
    assert(f:write("flood\n"))
    assert.equals("flooding", line(f))
    assert.equals("write: nil busy\n", H.request(p.addr, "write\n"))
    x:close()
    assert.matches("^flood: nil closed$", line(f))
    f:close()
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)

describe("fdpool.testing's live conns", function()
  it("carry the same chat and the same busy answer", function()
    local chat = dofile("tests/fixtures/cos_chat.lua")
    local tasks = testing.tasks()
    local c = {}
    for i = 1, 3 do
      c[i] = testing.conn{ live = true }
      tasks:spawn(chat, c[i])
    end
    c[1]:feed("hello\n")
    assert.equals(3, tasks:run())
    assert.equals("welcome 2\n1: hello\n", c[2]:output())
    assert.equals("welcome 3\n1: hello\n", c[3]:output())
    c[3]:feed("hi from 3\n/quit\n")
    assert.equals(2, tasks:run())
    assert.equals("welcome 1\n3: hi from 3\n", c[1]:output())
    -- A second reader while the first waits: nil, "busy", nothing taken.
    assert.same({ nil, "busy" }, { c[1]:receive("l") })
    local got
    tasks:spawn(function() got = { c[2]:receive("l") } end)
    assert.same({ nil, "busy" }, got)
    c[2]:feed("x\n")
    tasks:run()
    assert.equals("welcome 1\n3: hi from 3\n2: x\n", c[1]:output())
    c[1]:hangup(); c[2]:hangup()
    assert.equals(0, tasks:run())
    -- A live conn read outside a coroutine cannot wait: "timeout".
    assert.same({ nil, "timeout", "" }, { testing.conn{ live = true }:receive("l") })
  end)
end)
