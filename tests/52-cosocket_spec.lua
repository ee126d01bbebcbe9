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
    H.defer(finally, function() p:stop() end)
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
    H.defer(finally, function() p:stop() end)
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

-- ---- fdpool.tcp() ------------------------------------------------------

local function split(addr)
  local h, p = addr:match("^(.*):(%d+)$")
  return h, tonumber(p)
end

-- A free TCP port on 127.0.0.1 nobody listens on.
local function closed_port()
  local p = H.start_pool{ script = "tests/fixtures/cos_upstream.lua", workers = 1 }
  local _, port = split(p.addr)
  p:stop()
  return port
end

local function ask(fd, line)
  assert(fd:write(line .. "\n"))
  return fd:read("l")
end

describe("a conn method called on a userdata of another kind", function()
  -- The mark that tells a conn's (or socket's) metatable is readable from
  -- Lua (pairs over getmetatable): copied into another userdata's
  -- metatable it must still not make that userdata a conn.
  it("raises, even when the other metatable carries a copy of the mark", function()
    local s = fdpool.tcp()
    local f = assert(io.tmpfile())
    local mt = getmetatable(f)
    local copied = {}
    for k, v in pairs(getmetatable(s)) do
      if type(v) == "userdata" then mt[k] = v; copied[#copied + 1] = k end
    end
    local ok, err = pcall(s.getstats, f)
    local ok2, err2 = pcall(s.getfd, f)
    for _, k in ipairs(copied) do mt[k] = nil end
    f:close()
    assert.equals(1, #copied)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("fdpool.conn expected", 1, true), tostring(err))
    assert.is_false(ok2)
    assert.truthy(tostring(err2):find("fdpool.conn expected", 1, true), tostring(err2))
    -- the real ones still pass
    assert.equals(-1, s:getfd())
  end)
end)

describe("fdpool.tcp()", function()
  local up, cli, uphost, upport
  setup(function()
    up = H.start_pool{ script = "tests/fixtures/cos_upstream.lua", workers = 1 }
    uphost, upport = split(up.addr)
    cli = H.start_pool{ script = "tests/fixtures/cos_client.lua", workers = 1,
                        args = { uphost, tostring(upport) } }
  end)
  teardown(function()
    if cli then cli:stop() end
    if up then up:stop() end
  end)

  it("connects, sends, receives, pools and reuses a keep-alive connection", function()
    local c = assert(fdpool.connect(cli.addr, 10))
    assert.equals("closed tcp fdpool.tcp", ask(c, "type"))
    assert.equals("nil closed", ask(c, "reused"))
    assert.equals("true", ask(c, "connect UP"))
    assert.equals("0", ask(c, "reused"))
    local id = ask(c, "ask id")
    assert.matches("^%d+$", id)
    assert.equals("hello", ask(c, "ask echo hello"))
    assert.equals("true", ask(c, "keepalive"))
    assert.matches("^nil closed", ask(c, "recv"))
    assert.equals("true", ask(c, "connect UP"))
    assert.equals("1", ask(c, "reused"))
    assert.equals(id, ask(c, "ask id"), "the pooled connection was reused")
    -- Unread data refuses the pool; the socket stays usable.
    assert.equals("9", ask(c, "send echo abc"))
    assert.equals("a", ask(c, "recv 1"))
    assert.equals("nil unread data", ask(c, "keepalive"))
    assert.equals("bc", ask(c, "recv"))
    assert.equals("true", ask(c, "close"))
    assert.equals("nil closed", ask(c, "close"))
    c:close()
  end)

  it("fails with nil, message, errno: refused, no such host, timeout, closed", function()
    local c = assert(fdpool.connect(cli.addr, 10))
    local port = closed_port()
    assert.equals("nil connection refused 111", ask(c, "connect 127.0.0.1 " .. port))
    -- A NUL byte in the host: not the name (or address) before it.
    assert.equals("nil bad host name 22", ask(c, "connect " .. uphost .. "\\0x " .. upport))
    assert.equals("nil bad host name 22", ask(c, "connect localhost\\0.invalid " .. upport))
    -- The reserved .invalid TLD fails at once, without asking a server.
    local r = ask(c, "connect nothing.invalid 80 timed")
    assert.matches("^nil no such host 2 ", r)
    assert.is_true(tonumber(r:match("(%S+)$")) < 1.0, r)
    assert.equals("true", ask(c, "connect localhost " .. upport))
    assert.equals("via localhost", ask(c, "ask echo via localhost"))
    assert.equals("nil no such file or directory 2",
      ask(c, "connect unix:" .. H.tmpdir() .. "/none.sock"))
    -- A read timeout leaves the socket usable.
    assert.equals("true", ask(c, "connect UP"))
    assert.equals("true", ask(c, "timeout 0.2"))
    assert.equals("8", ask(c, "send hold t1"))
    assert.equals("nil timeout ", ask(c, "recv"))
    local c2 = assert(fdpool.connect(cli.addr, 10))
    assert.equals("true", ask(c2, "connect UP"))
    assert.equals("released", ask(c2, "ask release t1"))
    assert.equals("true", ask(c, "timeout 5"))
    assert.equals("held t1", ask(c, "recv"))
    -- The upstream closes: "closed", with the partial data.
    assert.equals("bye", ask(c, "ask bye"))
    assert.equals("nil closed ", ask(c, "recv"))
    -- An oversized line (more than 1 MiB without a newline).
    assert.equals("true", ask(c, "connect UP"))
    local long = ask(c, "ask long 1100000")
    assert.matches("^nil line too long x+$", long)
    c:close(); c2:close()
  end)

  it("yields: a call waiting on its upstream does not hold the worker", function()
    -- One client worker: A's upstream call is held until B (served by
    -- the same worker meanwhile) releases it.
    local a = assert(fdpool.connect(cli.addr, 10))
    local b = assert(fdpool.connect(cli.addr, 10))
    assert.equals("true", ask(a, "connect UP"))
    assert.equals("11", ask(a, "send hold yield"))
    assert(a:write("recv\n"))
    assert.equals("true", ask(b, "connect UP"))
    assert.equals("released", ask(b, "ask release yield"))
    assert.equals("held yield", a:read("l"))
    assert.equals("nested", ask(b, "nested"))
    a:close(); b:close()
  end)

  it("never hands out a pooled connection the upstream closed, nor an expired one", function()
    local c = assert(fdpool.connect(cli.addr, 10))
    local c2 = assert(fdpool.connect(cli.addr, 10))
    assert.equals("true", ask(c, "connect UP"))
    local id = ask(c, "ask id")
    -- Pooled while the upstream holds it open; the upstream then closes
    -- it while it is idle in the pool.
    assert.equals("ok", ask(c, "ask closeon idle1"))
    assert.equals("true", ask(c, "keepalive"))
    -- (another pool key: "UP" would take the idle connection itself)
    assert.equals("true", ask(c2, "connect localhost " .. upport))
    assert.equals("released", ask(c2, "ask release idle1"))
    assert.equals("true", ask(c, "connect UP"))
    assert.equals("0", ask(c, "reused"))
    assert.are_not.equal(id, ask(c, "ask id"))
    assert.equals("fresh", ask(c, "ask echo fresh"))
    -- The same when the upstream closes right after its answer (its FIN
    -- may arrive before or after setkeepalive): never a broken socket.
    assert(c:write("send bye\nrecv\nkeepalive\n"))
    assert.equals("4", c:read("l"))
    assert.equals("bye", c:read("l"))
    assert.matches("^true$", (c:read("l"):gsub("^nil closed$", "true")))
    assert.equals("true", ask(c, "connect UP"))
    assert.equals("after bye", ask(c, "ask echo after bye"):gsub("^nil closed.*", "after bye"))
    c2:close()
    -- Idle time: pooled for 0.1 s, asked for after 0.3 s.
    assert.equals("true", ask(c, "connect UP"))
    assert.equals("x", ask(c, "ask echo x"))
    assert.equals("true", ask(c, "keepalive 0.1"))
    assert.equals("slept", ask(c, "sleep 0.3"))
    assert.equals("true", ask(c, "connect UP"))
    assert.equals("0", ask(c, "reused"))
    assert.equals("true", ask(c, "close"))
    c:close()
  end)

  it("blocks at the top level and in init, and hands the top level's connection on", function()
    local p = H.start_pool{ script = "tests/fixtures/cos_toplevel.lua", workers = 1,
                            args = { uphost, tostring(upport) } }
    H.defer(finally, function() p:stop() end)
    assert.equals("top init handler reused=1\n", H.request(p.addr, ""))
    assert.equals("top init handler reused=2\n", H.request(p.addr, ""))
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("keeps at most pool_size idle connections per key, closing the oldest", function()
    local c = assert(fdpool.connect(cli.addr, 10))
    local function opened()       -- not counting this probe
      local fd = assert(fdpool.connect(up.addr, 10))
      local n = tonumber(ask(fd, "opened"))
      fd:close()
      return n - 1
    end
    local before = opened()
    assert.equals("5", ask(c, "fill 5 2"))
    H.wait_until(function() return opened() == before + 2 end, 10,
      "the upstream to see 3 of the 5 closed")
    -- Again: the 2 idle ones are reused, 3 new ones made, 3 closed.
    assert.equals("5", ask(c, "fill 5 2"))
    H.wait_until(function() return opened() == before + 2 end, 10, "2 idle again")
    c:close()
  end)

  it("connects to IPv6 literals", function()
    local up6 = H.start_pool{ script = "tests/fixtures/cos_upstream.lua", workers = 1,
                              listen = "[::1]:0" }
    H.defer(finally, function() up6:stop() end)
    local port6 = up6.addr:match("%]:(%d+)$")
    local c = assert(fdpool.connect(cli.addr, 10))
    assert.equals("true", ask(c, "connect ::1 " .. port6))
    assert.equals("v6", ask(c, "ask echo v6"))
    assert.equals("true", ask(c, "connect [::1] " .. port6))
    assert.equals("v6 again", ask(c, "ask echo v6 again"))
    c:close()
  end)

  it("survives its worker being killed with calls in flight", function()
    local a = assert(fdpool.connect(cli.addr, 10))
    assert.equals("true", ask(a, "connect UP"))
    assert.equals("10", ask(a, "send hold kill"))
    assert(a:write("recv\n"))
    local pid = cli:worker_pids()[1]
    os.execute("kill -KILL " .. pid)
    assert.is_nil(a:read("l"))
    a:close()
    H.wait_until(function()
      local st = cli:status()
      local w = st and st.workers[1]
      return w and w.pid ~= pid and w.state == "free"
    end, 10, "a new client worker")
    local b = assert(fdpool.connect(cli.addr, 10))
    assert.equals("true", ask(b, "connect UP"))
    assert.equals("alive", ask(b, "ask echo alive"))
    assert.equals("released", ask(b, "ask release kill"))
    b:close()
  end)

  it("leaks no fd over connect/close cycles and pool reuse", function()
    local n = ASAN and 200 or 2000
    local c = assert(fdpool.connect(cli.addr, 30))
    local pid = cli:worker_pids()[1]
    assert.equals("20 0", ask(c, "cycle 20"))
    local before = H.fd_count(pid)
    assert.equals(n .. " 0", ask(c, "cycle " .. n))
    local r = ask(c, "cycle " .. n .. " keep")
    assert.equals(tostring(n), r:match("^(%d+)"))
    assert.is_true(tonumber(r:match("(%d+)$")) >= n - 1, r)
    -- One idle pooled connection may remain: at most one fd more.
    local after = H.fd_count(pid)
    assert.is_true(after <= before + 1, ("fds %d -> %d"):format(before, after))
    assert.equals(tostring(n), ask(c, "cycle " .. n):match("^(%d+)"))
    assert.is_true(H.fd_count(pid) <= before + 1)
    c:close()
  end)
end)

describe("fdpool.tcp() name lookups through a DNS server", function()
  it("resolve without blocking the worker, cache for the TTL, and fail cleanly", function()
    local dir = H.tmpdir()
    assert(os.execute(("/usr/bin/python3 tests/fixtures/cos_dns.py %s/port %s/queries >%s/dns.log 2>&1 & echo $! >%s/pid")
      :format(dir, dir, dir, dir)))
    local dpid = tonumber(H.wait_until(function() return H.readfile(dir .. "/pid") end, 5, "dns pid"))
    H.defer(finally, function() os.execute("kill " .. dpid .. " 2>/dev/null") end)
    local dport = tonumber(H.wait_until(function() return H.readfile(dir .. "/port") end, 10, "the DNS server"))
    local up = H.start_pool{ script = "tests/fixtures/cos_upstream.lua", workers = 1 }
    H.defer(finally, function() up:stop() end)
    local uphost, upport = split(up.addr)
    local cli = H.start_pool{ script = "tests/fixtures/cos_client.lua", workers = 1,
                              args = { uphost, tostring(upport) },
                              shell = "export FDPOOL_RESOLVER=127.0.0.1:" .. dport .. ";" }
    H.defer(finally, function() cli:stop() end)
    local a = assert(fdpool.connect(cli.addr, 10))
    local b = assert(fdpool.connect(cli.addr, 10))
    assert.equals("true", ask(a, "connect up.test.example " .. upport))
    assert.equals("by name", ask(a, "ask echo by name"))
    assert.equals("true", ask(a, "connect up.test.example " .. upport))
    local function queries(name)
      local n = 0
      for l in (H.readfile(dir .. "/queries") or ""):gmatch("[^\n]+") do
        if l == name .. " 1" then n = n + 1 end
      end
      return n
    end
    assert.equals(1, queries("up.test.example"), "the answer was cached for its TTL")
    assert.equals("nil no such host 2", ask(a, "connect nx.test.example 80"))
    -- Two addresses, the first refusing: the next one is tried.
    assert.equals("true", ask(a, "connect multi.test.example " .. upport))
    assert.equals("second", ask(a, "ask echo second"))
    -- A lookup the server holds back until another connection of the
    -- same worker asks for release.test.example: the worker must serve
    -- that one meanwhile.
    assert(a:write("connect hold.test.example " .. upport .. "\n"))
    assert.equals("true", ask(b, "connect release.test.example " .. upport))
    assert.equals("true", a:read("l"))
    assert.equals("held", ask(a, "ask echo held"))
    -- Held and never released: the socket's timeout ends the lookup.
    assert.equals("true", ask(a, "timeout 0.3"))
    assert.equals("nil timeout 110", ask(a, "connect hold2.test.example 80"))
    a:close(); b:close()
    assert.equals(0, cli:stop())
    assert.same({}, H.unexpected_errors(cli:log()))
  end)
end)

describe("fdpool.tcp() with a bad FDPOOL_RESOLVER", function()
  it("says so (EINVAL) instead of a resolver that cannot start (ENOMEM)", function()
    local cli = H.start_pool{ script = "tests/fixtures/cos_client.lua", workers = 1,
                              args = { "127.0.0.1", "1" },
                              shell = "export FDPOOL_RESOLVER=garbage;" }
    H.defer(finally, function() cli:stop() end)
    local a = assert(fdpool.connect(cli.addr, 10))
    H.defer(finally, function() a:close() end)
    assert.equals("nil resolver: bad FDPOOL_RESOLVER (want ip[:port],...) 22",
                  ask(a, "connect name.example 80"))
    -- IP literals need no resolver.
    assert.equals("nil connection refused 111", ask(a, "connect 127.0.0.1 " .. closed_port()))
  end)
end)

describe("conn:receive(n) and receiveany(n) with a count a client chose", function()
  -- A handler passing a client's Content-Length to receive(n): the read
  -- buffer grows with the bytes that came, not with n (before, it took n
  -- bytes of address space at once: 1 GiB for a client that sends 100
  -- KiB, and an allocator abort under AddressSanitizer for 2^53).
  local function start()
    local p = H.start_pool{ script = "tests/fixtures/cos_count.lua", workers = 1 }
    H.defer(finally, function() p:stop() end)
    return p
  end

  -- sends "OP N\n", then data (and a half-close when shut); the answer's
  -- words
  local function ask_count(p, op, n, data, shut)
    local c = assert(fdpool.connect(p.addr, 10))
    assert(c:write(op .. " " .. n .. "\n"))
    local chunk = 65536
    for i = 1, #data, chunk do
      assert(c:write(data:sub(i, i + chunk - 1)))
    end
    if shut then c:shutdown("send") end
    local r = line(c)
    c:close()
    local w = {}
    for x in (r or ""):gmatch("%S+") do w[#w + 1] = x end
    return w, r
  end

  it("holds what arrived, not the count: 1 GiB asked, 100 KiB sent", function()
    local p = start()
    local w, r = ask_count(p, "receive", 1 << 30, string.rep("x", 100 * 1024), true)
    assert.same({ "nil", "closed", "102400" }, { w[1], w[2], w[3] }, r)
    -- (a few MiB at most: the buffer's doublings up to 1 MiB, the
    -- partial's string)
    assert.is_true(tonumber(w[4]) < 32 * 1024, "the worker's peak address space grew by " .. w[4] .. " KiB")
  end)

  it("2^53 and 2^62 asked: receive says closed with the bytes sent as its partial, receiveany returns them", function()
    local p = start()
    for _, op in ipairs { "receive", "receiveany" } do
      for _, n in ipairs { 1 << 53, 1 << 62 } do
        local w, r = ask_count(p, op, n, "0123456789", true)
        if op == "receive" then
          assert.same({ "nil", "closed", "10" }, { w[1], w[2], w[3] }, op .. " " .. n .. ": " .. tostring(r))
        else
          assert.same({ "ok", "10" }, { w[1], w[2] }, op .. " " .. n .. ": " .. tostring(r))
        end
      end
    end
  end)

  it("a count past 1 MiB arrives whole (the buffer grown on the way)", function()
    local p = start()
    local n = 3 * 1024 * 1024 + 17
    local w, r = ask_count(p, "receive", n, string.rep("y", n), false)
    assert.same({ "ok", tostring(n) }, { w[1], w[2] }, r)
  end)
end)
