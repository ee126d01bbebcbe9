-- tests/01-fdpass_spec.lua: the fd-passing primitives, in one process.
-- fdpool.socketpair() gives two fdpool.chan ends of a SEQPACKET pair;
-- chan:sendfd() attaches descriptors (SCM_RIGHTS) and bytes to one
-- message, chan:recvfd() hands them back as fdpool.fd objects.
local fdpool = require "fdpool"
local H = require "helpers"

-- Our own pid (the lua5.4 running busted), from /proc/self/stat.
local function mypid()
  local s = H.readfile("/proc/self/stat")
  return tonumber(s:match("^(%d+)"))
end

local PID = mypid()

-- Open descriptors of this process, once garbage is collected (H.fd_count
-- leaves out the pipe of the popen that counts them).
local function fdcount()
  collectgarbage()
  collectgarbage()
  return H.fd_count(PID)
end

local function is_open(n)
  return H.readfile("/proc/self/fdinfo/" .. n) ~= nil
end

-- The open(2) flags of descriptor n, from /proc/self/fdinfo (octal).
local function fdflags(n)
  local s = assert(H.readfile("/proc/self/fdinfo/" .. n), "fd " .. n .. " not open")
  return tonumber(s:match("flags:%s*(%d+)"), 8)
end

local O_CLOEXEC = tonumber("02000000", 8)

-- Run fn and return its error message (fails the test if fn succeeds).
local function errof(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return tostring(err)
end

describe("fdpool.socketpair", function()
  local dir
  setup(function() dir = H.tmpdir() end)

  it("returns two open chans", function()
    local a, b = assert(fdpool.socketpair())
    assert.equals("chan", fdpool.type(a))
    assert.equals("chan", fdpool.type(b))
    assert.is_true(a:fileno() >= 0 and b:fileno() >= 0)
    assert.are_not.equal(a:fileno(), b:fileno())
    -- The pair itself is CLOEXEC: a forked-and-exec'd program never
    -- inherits it.
    assert.is_true(fdflags(a:fileno()) & O_CLOEXEC ~= 0)
    assert.is_true(fdflags(b:fileno()) & O_CLOEXEC ~= 0)
    a:close(); b:close()
  end)

  it("passes the seed's file: hello through the original, world through the copy", function()
    local path = dir .. "/seed.txt"
    local f = assert(io.open(path, "w"))
    local a, b = assert(fdpool.socketpair())
    f:write("hello")
    -- sendfd flushes the Lua file's buffer before the fd leaves.
    assert.is_true(a:sendfd(f))
    local fd, data = b:recvfd()
    assert.equals("fd", fdpool.type(fd))
    assert.equals("", data)
    -- Original and copy share one open file description (one offset).
    assert.equals(fd, fd:write("world"))
    f:close()
    fd:close()
    assert.equals("helloworld", H.readfile(path))
    a:close(); b:close()
  end)

  it("sends data with no fd: recvfd returns false and the data", function()
    local a, b = assert(fdpool.socketpair())
    assert.is_true(a:sendfd(nil, "just bytes"))
    local fd, data, extra = b:recvfd()
    assert.is_false(fd)
    assert.equals("just bytes", data)
    assert.is_nil(extra)
    -- false and {} mean no fd too.
    assert.is_true(a:sendfd(false, "f"))
    assert.is_true(a:sendfd({}, "t"))
    local fd2, d2 = b:recvfd()
    local fd3, d3 = b:recvfd()
    assert.is_false(fd2); assert.equals("f", d2)
    assert.is_false(fd3); assert.equals("t", d3)
    a:close(); b:close()
  end)

  it("sends one fd with data; the sender keeps its own copy", function()
    local path = dir .. "/one.txt"
    H.writefile(path, "")
    local f = assert(io.open(path, "r+"))
    local a, b = assert(fdpool.socketpair())
    assert.is_true(a:sendfd(f, "meta"))
    local fd, data, extra = b:recvfd()
    assert.equals("fd", fdpool.type(fd))
    assert.equals("meta", data)
    assert.is_nil(extra)
    -- Both still work.
    f:write("A"); f:flush()
    fd:write("B")
    assert.equals("AB", H.readfile(path))
    fd:close(); f:close()
    a:close(); b:close()
  end)

  it("sends many fds in one message, in order, all usable", function()
    local a, b = assert(fdpool.socketpair())
    local files, paths = {}, {}
    for i = 1, 10 do
      paths[i] = dir .. "/many" .. i
      files[i] = assert(io.open(paths[i], "w"))
    end
    assert.is_true(a:sendfd(files, "ten"))
    for _, f in ipairs(files) do f:close() end
    local r = table.pack(b:recvfd())
    -- fd1, data, fd2 .. fd10
    assert.equals(11, r.n)
    assert.equals("ten", r[2])
    local got = { r[1] }
    for i = 3, 11 do got[#got + 1] = r[i] end
    for i, fd in ipairs(got) do
      assert.equals("fd", fdpool.type(fd))
      fd:write("file " .. i)
      fd:close()
    end
    for i = 1, 10 do
      assert.equals("file " .. i, H.readfile(paths[i]))
    end
    a:close(); b:close()
  end)

  it("sends the maximum of 64 fds in one message", function()
    local a, b = assert(fdpool.socketpair())
    local fds = {}
    for i = 1, 64 do fds[i] = a end -- the same descriptor 64 times
    assert.is_true(a:sendfd(fds, "x"))
    local r = table.pack(b:recvfd())
    assert.equals(65, r.n)
    local seen = {}
    for i = 1, r.n do
      if i ~= 2 then
        assert.equals("fd", fdpool.type(r[i]))
        assert.is_nil(seen[r[i]:fileno()], "each copy is its own descriptor")
        seen[r[i]:fileno()] = true
        r[i]:close()
      end
    end
    a:close(); b:close()
  end)

  it("round-trips binary and empty data unchanged", function()
    local a, b = assert(fdpool.socketpair())
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local cases = {
      "",
      "\0",
      "a\0b\0\0c",
      table.concat(all),
      ("\255\0\1"):rep(1000),
      ("z"):rep(65535), -- the largest allowed
    }
    for _, s in ipairs(cases) do
      assert.is_true(a:sendfd(nil, s))
      local fd, data = b:recvfd()
      assert.is_false(fd)
      assert.equals(#s, #data)
      assert.equals(s, data)
    end
    -- No data argument is the same as "".
    assert.is_true(a:sendfd(nil))
    local fd, data = b:recvfd()
    assert.is_false(fd)
    assert.equals("", data)
    a:close(); b:close()
  end)

  it("keeps message boundaries (one message per recvfd)", function()
    local a, b = assert(fdpool.socketpair())
    for i = 1, 5 do assert.is_true(a:sendfd(nil, "m" .. i)) end
    for i = 1, 5 do
      local _, data = b:recvfd()
      assert.equals("m" .. i, data)
    end
    a:close(); b:close()
  end)

  it("gives received fds CLOEXEC", function()
    local path = dir .. "/cloexec.txt"
    H.writefile(path, "")
    local f = assert(io.open(path, "r"))
    local a, b = assert(fdpool.socketpair())
    assert.is_true(a:sendfd({ f, f, f }))
    local r = table.pack(b:recvfd())
    for _, i in ipairs({ 1, 3, 4 }) do
      local n = r[i]:fileno()
      assert.is_true(fdflags(n) & O_CLOEXEC ~= 0,
        ("fd %d flags %o lack O_CLOEXEC"):format(n, fdflags(n)))
      r[i]:close()
    end
    f:close()
    a:close(); b:close()
  end)

  it("returns nil, 'closed' once the peer is closed", function()
    local a, b = assert(fdpool.socketpair())
    assert.is_true(a:sendfd(nil, "last"))
    a:close()
    -- What was sent before the close is still delivered, then EOF.
    local fd, data = b:recvfd()
    assert.is_false(fd)
    assert.equals("last", data)
    local r = table.pack(b:recvfd())
    assert.is_nil(r[1])
    assert.equals("closed", r[2])
    -- EOF stays EOF.
    local r2 = table.pack(b:recvfd())
    assert.is_nil(r2[1])
    assert.equals("closed", r2[2])
    b:close()
  end)

  it("returns nil, 'sendmsg: Broken pipe', EPIPE when the peer is gone", function()
    local a, b = assert(fdpool.socketpair())
    b:close()
    local ok, err, code = a:sendfd(nil, "nobody")
    assert.is_nil(ok)
    assert.equals("sendmsg: Broken pipe", err)
    assert.equals(32, code)
    a:close()
  end)

  it("accepts a Lua file, an fdpool.fd, a chan and an integer", function()
    local path = dir .. "/kinds.txt"
    local f = assert(io.open(path, "w"))
    local a, b = assert(fdpool.socketpair())
    -- Lua file handle.
    f:write("1")
    assert.is_true(a:sendfd(f))
    local fd1 = b:recvfd()
    -- fdpool.fd object.
    fd1:write("2")
    assert.is_true(a:sendfd(fd1))
    local fd2 = b:recvfd()
    -- Integer descriptor.
    fd2:write("3")
    assert.is_true(a:sendfd(fd2:fileno()))
    local fd3 = b:recvfd()
    fd3:write("4")
    for _, x in ipairs({ fd1, fd2, fd3 }) do
      assert.equals("fd", fdpool.type(x))
      x:close()
    end
    f:close()
    assert.equals("1234", H.readfile(path))
    -- A chan end: the received copy is a usable socket, shown as an fd.
    local c, d = assert(fdpool.socketpair())
    assert.is_true(a:sendfd(c, "a chan"))
    local cfd, data = b:recvfd()
    assert.equals("a chan", data)
    assert.equals("fd", fdpool.type(cfd))
    c:close()
    -- Our copy of c's socket still talks to d. A fd:write on a
    -- SEQPACKET socket is one message without the chan header, so d
    -- refuses it as foreign and closes nothing it should not.
    assert.equals(cfd, cfd:write("raw"))
    local r = table.pack(d:recvfd())
    assert.is_nil(r[1])
    assert.equals("recvmsg: not an fdpool message", r[2])
    cfd:close(); d:close()
    a:close(); b:close()
  end)

  it("returns nil, message, EBADF for an integer that is not open", function()
    local a, b = assert(fdpool.socketpair())
    local ok, err, code = a:sendfd(1000000)
    assert.is_nil(ok)
    assert.equals("sendmsg: Bad file descriptor", err)
    assert.equals(9, code)
    a:close(); b:close()
  end)

  describe("misuse raises", function()
    local a, b
    before_each(function() a, b = assert(fdpool.socketpair()) end)
    after_each(function()
      if fdpool.type(a) == "chan" then a:close() end
      if fdpool.type(b) == "chan" then b:close() end
    end)

    it("on a closed chan", function()
      a:close()
      assert.matches("attempt to use a closed chan", errof(function() a:sendfd(nil, "x") end))
      assert.matches("attempt to use a closed chan", errof(function() a:recvfd() end))
      assert.matches("attempt to use a closed chan", errof(function() a:fileno() end))
    end)

    it("on a bad fd argument", function()
      local e = errof(function() a:sendfd("3") end)
      assert.matches("bad argument #1 to 'sendfd'", e, 1, true)
      assert.matches("fd, file, fdpool.fd, fdpool.chan or fdpool.conn expected, got string", e, 1, true)
      e = errof(function() a:sendfd(3.5) end)
      assert.matches("expected, got number", e, 1, true)
      e = errof(function() a:sendfd(-1) end)
      assert.matches("bad argument #1 to 'sendfd' (invalid fd)", e, 1, true)
      e = errof(function() a:sendfd({}, {}) end)
      assert.matches("bad argument #2 to 'sendfd' (string expected, got table)", e, 1, true)
    end)

    it("on a closed fd, file or chan given as the fd", function()
      local c, d = assert(fdpool.socketpair())
      c:close(); d:close()
      assert.matches("attempt to use a closed fd", errof(function() a:sendfd(c) end))
      local f = assert(io.tmpfile())
      f:close()
      assert.matches("attempt to use a closed file", errof(function() a:sendfd(f) end))
      assert.is_true(a:sendfd(nil, "x"))
      local fd = b:recvfd()
      assert.is_false(fd)
    end)

    it("on more than 64 fds", function()
      local t = {}
      for i = 1, 65 do t[i] = a end
      assert.matches("too many fds in one message", errof(function() a:sendfd(t) end))
    end)

    it("on data of 64 KiB or more", function()
      assert.matches("data too long (at most 65535 bytes)",
        errof(function() a:sendfd(nil, ("x"):rep(65536)) end), 1, true)
    end)

    it("on a wrong self", function()
      assert.matches("fdpool.chan expected, got string",
        errof(function() a.sendfd("x") end), 1, true)
      local fd = assert(fdpool.open_beneath("/proc/self", "stat"))
      assert.matches("fdpool.chan expected, got fdpool.fd",
        errof(function() a.recvfd(fd) end), 1, true)
      fd:close()
    end)

    it("on a bad entry in the fd list, naming the list argument", function()
      local e = errof(function() a:sendfd({ a, "x" }, "data") end)
      assert.matches("expected, got string", e, 1, true)
      assert.matches("bad argument #1 to 'sendfd'", e, 1, true)
    end)
  end)

  it("does not leak descriptors over 100k send/recv round trips", function()
    local a, b = assert(fdpool.socketpair())
    local f = assert(io.open(dir .. "/leak.txt", "w"))
    -- Warm up (lazy allocations), then count.
    assert.is_true(a:sendfd(f, "w"))
    b:recvfd():close()
    local before = fdcount()
    local N, t0 = 100000, os.clock()
    for i = 1, N do
      local ok = a:sendfd(f, "x")
      if not ok then error("sendfd failed at round " .. i) end
      local fd, data = b:recvfd()
      if not fd or data ~= "x" then error("recvfd failed at round " .. i) end
      fd:close()
      if os.clock() - t0 > 30 then error("too slow: " .. i .. " rounds in 30 s") end
    end
    -- Messages with no fd and with several fds, too.
    for _ = 1, 1000 do
      assert(a:sendfd({ f, f, f }, "3"))
      local r = table.pack(b:recvfd())
      r[1]:close(); r[3]:close(); r[4]:close()
      assert(a:sendfd(nil, "0"))
      assert(b:recvfd() == false)
    end
    local after = fdcount()
    assert.equals(before, after)
    f:close()
    a:close(); b:close()
  end)

  it("closes fds that are never closed explicitly when collected", function()
    local a, b = assert(fdpool.socketpair())
    local f = assert(io.tmpfile())
    local before = fdcount()
    for _ = 1, 200 do
      assert(a:sendfd(f))
      local fd = b:recvfd() -- dropped without close
      assert.equals("fd", fdpool.type(fd))
    end
    assert.equals(before, fdcount())
    f:close()
    a:close(); b:close()
  end)
end)

describe("fdpool.fd and fdpool.chan objects", function()
  it("fdpool.type tells each object and its closed state", function()
    local a, b = assert(fdpool.socketpair())
    assert(a:sendfd(a))
    local fd = b:recvfd()
    assert.equals("chan", fdpool.type(a))
    assert.equals("fd", fdpool.type(fd))
    fd:close()
    a:close()
    assert.equals("closed fd", fdpool.type(fd))
    assert.equals("closed chan", fdpool.type(a))
    assert.equals("chan", fdpool.type(b))
    b:close()
    -- Anything else is not ours.
    assert.is_nil(fdpool.type(io.stdout))
    assert.is_nil(fdpool.type(3))
    assert.is_nil(fdpool.type("fd"))
    assert.is_nil(fdpool.type({}))
    assert.is_nil(fdpool.type(nil))
    assert.matches("bad argument #1 to 'type' (value expected)",
      errof(function() fdpool.type() end), 1, true)
  end)

  it("tostring shows the descriptor, or (closed)", function()
    local a, b = assert(fdpool.socketpair())
    assert(a:sendfd(a))
    local fd = b:recvfd()
    assert.equals("fdpool.fd (" .. fd:fileno() .. ")", tostring(fd))
    assert.equals("fdpool.chan (" .. a:fileno() .. ")", tostring(a))
    fd:close(); a:close()
    assert.equals("fdpool.fd (closed)", tostring(fd))
    assert.equals("fdpool.chan (closed)", tostring(a))
    b:close()
  end)

  it("closes on __close (local x <close>)", function()
    local a, b = assert(fdpool.socketpair())
    assert(a:sendfd(a))
    local keep, n, an
    do
      local fd <close> = b:recvfd()
      local c <close> = a
      keep, n, an = fd, fd:fileno(), a:fileno()
      assert.is_true(is_open(n))
    end
    assert.equals("closed fd", fdpool.type(keep))
    assert.equals("closed chan", fdpool.type(a))
    assert.is_false(is_open(n))
    assert.is_false(is_open(an))
    -- __close after an explicit close is silent.
    do
      local c <close> = b
      c:close()
    end
    assert.equals("closed chan", fdpool.type(b))
  end)

  it("close() on a closed fd raises; close() returns true", function()
    local a, b = assert(fdpool.socketpair())
    assert(a:sendfd(a))
    local fd = b:recvfd()
    assert.is_true(fd:close())
    assert.matches("attempt to use a closed fd", errof(function() fd:close() end))
    assert.matches("attempt to use a closed fd", errof(function() fd:read(1) end))
    assert.matches("attempt to use a closed fd", errof(function() fd:write("x") end))
    assert.is_true(a:close())
    b:close()
  end)
end)
