-- tests/02-module_spec.lua: the module API from plain Lua, in one
-- process: open_beneath, connect, fd methods, fdpool.pool{} argument
-- checking (nothing is started: pool{} binds and compiles, forks
-- nothing), check_policy, version.
local fdpool = require "fdpool"
local H = require "helpers"

local PID = tonumber(H.readfile("/proc/self/stat"):match("^(%d+)"))

local function fdcount()
  collectgarbage()
  collectgarbage()
  return H.fd_count(PID)
end

local function fdflags(n)
  local s = assert(H.readfile("/proc/self/fdinfo/" .. n), "fd " .. n .. " not open")
  return tonumber(s:match("flags:%s*(%d+)"), 8)
end

local O_CLOEXEC = tonumber("02000000", 8)
local O_ACCMODE = 3

local function errof(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return tostring(err)
end

local function noop() end


describe("fdpool.open_beneath", function()
  local dir
  setup(function()
    dir = H.tmpdir()
    H.writefile(dir .. "/file.txt", ("0123456789"):rep(123) .. "end")
    assert(os.execute("mkdir " .. dir .. "/sub " .. dir .. "/real"))
    H.writefile(dir .. "/sub/inner.txt", "inner")
    H.writefile(dir .. "/real/f.txt", "real")
    H.writefile(dir .. "/../outside-" .. PID .. ".txt", "outside")
    assert(os.execute("ln -s file.txt " .. dir .. "/link.txt"))
    assert(os.execute("ln -s real " .. dir .. "/linkdir"))
    assert(os.execute("ln -s /etc/passwd " .. dir .. "/abslink"))
    assert(os.execute("mkfifo " .. dir .. "/fifo"))
  end)
  teardown(function() os.remove(dir .. "/../outside-" .. PID .. ".txt") end)

  it("opens a regular file read-only and returns its size", function()
    local fd, size = fdpool.open_beneath(dir, "file.txt")
    assert.equals("fd", fdpool.type(fd))
    assert.equals(1233, size)
    assert.equals(("0123456789"):rep(123) .. "end", fd:read("a"))
    local flags = fdflags(fd:fileno())
    assert.equals(0, flags & O_ACCMODE, "opened O_RDONLY")
    assert.is_true(flags & O_CLOEXEC ~= 0, "opened O_CLOEXEC")
    local ok, err, code = fd:write("x")
    assert.is_nil(ok)
    assert.equals("write: Bad file descriptor", err)
    assert.equals(9, code)
    fd:close()
  end)

  it("opens a file in a subdirectory", function()
    local fd, size = fdpool.open_beneath(dir, "sub/inner.txt")
    assert.equals(5, size)
    assert.equals("inner", fd:read("a"))
    fd:close()
  end)

  it("opens an empty file with size 0", function()
    H.writefile(dir .. "/empty", "")
    local fd, size = fdpool.open_beneath(dir, "empty")
    assert.equals(0, size)
    assert.equals("", fd:read("a"))
    fd:close()
  end)

  it("returns nil, message, ENOENT for a missing file", function()
    local fd, err, code = fdpool.open_beneath(dir, "missing.txt")
    assert.is_nil(fd)
    assert.equals("No such file or directory", err)
    assert.equals(2, code)
  end)

  it("refuses a name or dir with a NUL byte, not the part before it", function()
    for _, args in ipairs({ { dir, "file.txt\0../x" }, { dir .. "\0/sub", "file.txt" } }) do
      local fd, err, code = fdpool.open_beneath(args[1], args[2])
      assert.is_nil(fd)
      assert.equals("name contains a NUL byte", err)
      assert.equals(22, code)
    end
  end)

  it("returns nil, message naming the dir when the dir is missing", function()
    local fd, err, code = fdpool.open_beneath(dir .. "/nodir", "file.txt")
    assert.is_nil(fd)
    assert.equals(dir .. "/nodir: No such file or directory", err)
    assert.equals(2, code)
  end)

  it("refuses names that leave the directory", function()
    for _, name in ipairs({ "../outside-" .. PID .. ".txt", "sub/../../outside-" .. PID .. ".txt",
                            "..", "/etc/passwd", dir .. "/file.txt" }) do
      local fd, err, code = fdpool.open_beneath(dir, name)
      assert.is_nil(fd, name)
      assert.equals("name escapes the directory", err, name)
      assert.equals(18, code, name) -- EXDEV
    end
  end)

  it("refuses symbolic links, even ones that stay inside", function()
    for _, name in ipairs({ "link.txt", "linkdir/f.txt", "abslink" }) do
      local fd, err, code = fdpool.open_beneath(dir, name)
      assert.is_nil(fd, name)
      assert.equals("symbolic link refused", err, name)
      assert.equals(40, code, name) -- ELOOP
    end
  end)

  it("refuses a directory and a fifo as not a regular file (without blocking)", function()
    for _, name in ipairs({ "sub", ".", "fifo" }) do
      local fd, err = fdpool.open_beneath(dir, name)
      assert.is_nil(fd, name)
      assert.equals("not a regular file", err, name)
    end
  end)

  it("leaks no descriptor on any path", function()
    local before = fdcount()
    for _ = 1, 200 do
      for _, name in ipairs({ "file.txt", "missing", "../x", "link.txt", "sub", "fifo" }) do
        local fd = fdpool.open_beneath(dir, name)
        if fd then fd:close() end
      end
    end
    assert.equals(before, fdcount())
  end)

  it("raises on bad argument types", function()
    assert.matches("bad argument #1 to 'fdpool.open_beneath' (string expected, got no value)",
      errof(fdpool.open_beneath), 1, true)
    assert.matches("bad argument #2 to 'fdpool.open_beneath' (string expected, got table)",
      errof(fdpool.open_beneath, dir, {}), 1, true)
  end)
end)

describe("fdpool.fd methods", function()
  local dir
  setup(function() dir = H.tmpdir() end)

  -- A read-write fd object on a fresh file, through a chan.
  local function rwfd(name)
    local f = assert(io.open(dir .. "/" .. name, "w+"))
    local a, b = assert(fdpool.socketpair())
    assert(a:sendfd(f))
    local fd = b:recvfd()
    f:close(); a:close(); b:close()
    return fd
  end

  it("writes, seeks and reads by count, line and all", function()
    local fd = rwfd("rw.txt")
    assert.equals(fd, fd:write("line1\n", "line2\n", 42, "rest"))
    assert.equals(18, fd:seek("end"))
    assert.equals(0, fd:seek("set"))
    assert.equals("line1", fd:read("l"))
    assert.equals("lin", fd:read(3))
    assert.equals(9, fd:seek()) -- "cur", 0
    assert.equals(7, fd:seek("cur", -2))
    assert.equals("ine2", fd:read("*l"))
    assert.equals("", fd:read(0))
    assert.equals("42rest", fd:read("a"))
    -- At end of file: "a" gives "", a count or a line gives nil.
    assert.equals("", fd:read("a"))
    assert.is_nil(fd:read(1))
    assert.is_nil(fd:read("l"))
    assert.equals(2, fd:seek("set", 2))
    assert.equals("ne1\nline2\n42rest", fd:read())
    fd:close()
    assert.equals("line1\nline2\n42rest", H.readfile(dir .. "/rw.txt"))
  end)

  it("reads a last line without a newline, and empty lines", function()
    local fd = rwfd("lines.txt")
    fd:write("\n\nlast")
    fd:seek("set")
    assert.equals("", fd:read("l"))
    assert.equals("", fd:read("l"))
    assert.equals("last", fd:read("l"))
    assert.is_nil(fd:read("l"))
    fd:close()
  end)

  it("raises on misuse", function()
    local fd = rwfd("misuse.txt")
    assert.matches("invalid format", errof(function() fd:read("x") end))
    assert.matches("count must not be negative", errof(function() fd:read(-1) end))
    assert.matches("invalid option 'bogus'", errof(function() fd:seek("bogus") end))
    assert.matches("bad argument #1 to 'write' (string expected, got table)",
      errof(function() fd:write({}) end), 1, true)
    fd:close()
    assert.matches("attempt to use a closed fd", errof(function() fd:seek("set") end))
  end)

  it("returns nil, message, errno when the world fails", function()
    local a, b = assert(fdpool.socketpair())
    assert(a:sendfd(a))
    local sock = b:recvfd()
    local ok, err, code = sock:seek("set", 0)
    assert.is_nil(ok)
    assert.equals("seek: Illegal seek", err)
    assert.equals(29, code)
    sock:close(); a:close(); b:close()
  end)
end)

describe("fdpool.connect", function()
  it("returns nil, 'connect ADDR: Connection refused', ECONNREFUSED", function()
    -- Port 0: nothing can listen there (bind picks another port for 0),
    -- so the refusal is certain. A port freed just before could be taken
    -- meanwhile by any other process on the machine.
    local addr = "127.0.0.1:0"
    local before = fdcount()
    local fd, err, code = fdpool.connect(addr)
    assert.is_nil(fd)
    assert.equals("connect " .. addr .. ": Connection refused", err)
    assert.equals(111, code)
    -- The failed connect keeps no socket.
    assert.equals(before, fdcount())
  end)

  it("connects to a listening socket; reads time out with EAGAIN", function()
    -- A pool that is not started still listens: the kernel completes
    -- the handshake and holds the connection in the backlog.
    local p = assert(fdpool.pool{ handler = noop, listen = "127.0.0.1:0", workers = 1 })
    finally(function() p:close() end)
    local fd = assert(fdpool.connect(p:addresses()[1], 0.2))
    assert.equals("fd", fdpool.type(fd))
    assert.is_true(fdflags(fd:fileno()) & O_CLOEXEC ~= 0)
    assert.equals(fd, fd:write("hello"))
    local t0 = H.now()
    local data, err, code = fd:read(10)
    local took = H.now() - t0
    assert.is_nil(data)
    assert.equals("read: Resource temporarily unavailable", err)
    assert.equals(11, code)
    assert.is_true(took < 2, "read timed out after " .. took .. " s")
    assert.is_true(fd:settimeout(0.05))
    assert.is_nil((fd:read("l")))
    assert.is_true(fd:shutdown("send"))
    fd:close()
  end)

  it("connects to a unix socket", function()
    local dir = H.tmpdir()
    local p = assert(fdpool.pool{ handler = noop, listen = "unix:" .. dir .. "/s.sock", workers = 1 })
    finally(function() p:close() end)
    assert.equals("unix:" .. dir .. "/s.sock", p:addresses()[1])
    local fd = assert(fdpool.connect("unix:" .. dir .. "/s.sock", 1))
    fd:close()
    -- Not the socket named by the part before a NUL byte.
    assert.matches("address contains a NUL byte",
      errof(fdpool.connect, "unix:" .. dir .. "/s.sock\0x"), 1, true)
  end)

  it("raises on a malformed address", function()
    assert.matches("bad address 'nope': expected HOST:PORT, [IPV6]:PORT or unix:PATH",
      errof(fdpool.connect, "nope"), 1, true)
    assert.matches("port must be a number from 0 to 65535",
      errof(fdpool.connect, "127.0.0.1:70000"), 1, true)
    assert.matches("string expected, got no value", errof(fdpool.connect), 1, true)
  end)
end)

describe("fdpool.pool{} argument checking", function()
  local dir
  setup(function() dir = H.tmpdir() end)

  it("builds a stopped pool bound to a real port", function()
    local p = assert(fdpool.pool{ handler = noop, listen = "127.0.0.1:0", workers = 2,
                                  concurrency = 4, policy = "round_robin", grace = 1 })
    assert.equals("pool", fdpool.type(p))
    assert.equals("fdpool.pool (stopped)", tostring(p))
    local addr = p:addresses()[1]
    assert.matches("^127%.0%.0%.1:%d+$", addr)
    assert.are_not.equal("127.0.0.1:0", addr)
    p:close()
    assert.equals("fdpool.pool (closed)", tostring(p))
    assert.matches("attempt to use a closed pool", errof(function() p:status() end))
    -- close() again is harmless.
    p:close()
  end)

  it("raises on an unknown option", function()
    assert.matches("unknown option 'bogus' in fdpool.pool{}",
      errof(fdpool.pool, { handler = noop, bogus = 1 }), 1, true)
    assert.matches("unknown option '1' in fdpool.pool{}",
      errof(fdpool.pool, { handler = noop, "positional" }), 1, true)
  end)

  it("raises on bad workers, concurrency and grace", function()
    assert.matches("bad option 'workers' (an integer from 1 to",
      errof(fdpool.pool, { handler = noop, workers = 0 }), 1, true)
    assert.matches("got 0)", errof(fdpool.pool, { handler = noop, workers = 0 }), 1, true)
    assert.matches("bad option 'workers'", errof(fdpool.pool, { handler = noop, workers = 1.5 }), 1, true)
    assert.matches("bad option 'workers'", errof(fdpool.pool, { handler = noop, workers = "two" }), 1, true)
    assert.matches("bad option 'workers'", errof(fdpool.pool, { handler = noop, workers = 100000 }), 1, true)
    assert.matches("bad option 'concurrency' (an integer from 1 to",
      errof(fdpool.pool, { handler = noop, concurrency = 0 }), 1, true)
    for _, g in ipairs { -1, 0/0, 1e9 + 1, math.huge, -math.huge } do
      assert.matches("grace must be 0 to 1e9 seconds",
        errof(fdpool.pool, { handler = noop, grace = g }), 1, true)
    end
    assert.matches("number expected, got string",
      errof(fdpool.pool, { handler = noop, grace = "soon" }), 1, true)
  end)

  it("raises on a missing or bad handler, policy, listen", function()
    assert.matches("bad option 'handler' (a function, a table or a script path expected, got nil)",
      errof(fdpool.pool, { listen = "127.0.0.1:0" }), 1, true)
    assert.matches("bad option 'handler'", errof(fdpool.pool, { handler = 42 }), 1, true)
    assert.matches("bad option 'policy'", errof(fdpool.pool, { handler = noop, policy = 3 }), 1, true)
    assert.matches("listen must be an address or a list of addresses",
      errof(fdpool.pool, { handler = noop, listen = 3 }), 1, true)
    assert.matches("table expected, got string", errof(fdpool.pool, "x"), 1, true)
  end)

  it("raises on a string with a NUL byte, an empty listen list or control path, a table handler without handle, a slow_log that is not a name", function()
    -- (C read such a string as its part before the NUL: "127.0.0.1:0\0junk"
    -- bound 127.0.0.1:0; an empty list listened nowhere; a number made a
    -- slow log file named after it; a handler table without handle
    -- stopped the pool at start)
    for k, v in pairs { listen = "127.0.0.1:0\0junk", handler = "app.lua\0x",
        policy = "least_conn\0x", user = "root\0x", metrics = "127.0.0.1:0\0x",
        cpu_affinity = "0\0x", sched = "batch\0x", args = { "a\0b" },
        shared = { d = "64k\0x" }, tls_cert = { "a\0b" } } do
      local o = { handler = noop, listen = "127.0.0.1:0" }
      o[k] = v
      assert.matches("bad option '" .. k .. "' (a string holds a NUL byte)",
        errof(fdpool.pool, o), 1, true)
    end
    assert.matches("bad option 'listen' (an address or a list of 1 to 16 addresses expected, got an empty list)",
      errof(fdpool.pool, { handler = noop, listen = {} }), 1, true)
    assert.matches("bad option 'control' (a path or true expected, got an empty string)",
      errof(fdpool.pool, { handler = noop, listen = "127.0.0.1:0", control = "" }), 1, true)
    assert.matches("bad option 'handler' (a table handler needs a function 'handle', got nil)",
      errof(fdpool.pool, { handler = { init = noop }, listen = "127.0.0.1:0" }), 1, true)
    assert.matches("bad option 'slow_log' (a file name expected, got number)",
      errof(fdpool.pool, { handler = noop, listen = "127.0.0.1:0", slow_log = 5 }), 1, true)
    local p = assert(fdpool.pool{ handler = { handle = noop }, listen = "127.0.0.1:0" })
    -- pool:step(NaN): an undefined conversion to milliseconds before
    assert.matches("seconds must not be NaN", errof(p.step, p, 0/0), 1, true)
    p:close()
  end)

  it("module functions taking a path or a name raise for a string holding a NUL byte", function()
    -- (log_file created the file named by the part before the NUL;
    -- control asked the pool at that part; the options matched it)
    local dir = H.tmpdir()
    for name, args in pairs { log_file = { dir .. "/lf\0x" }, control = { dir .. "/c\0x", "status" },
        check_policy = { "least_conn\0x" }, log_format = { "json\0x" }, set_log_level = { "info\0x" } } do
      assert.matches("string contains a NUL byte", errof(fdpool[name], table.unpack(args)), 1, true)
    end
    assert.is_nil(io.open(dir .. "/lf"))
  end)

  it("returns nil, a message naming a bad listen address, EINVAL", function()
    for _, addr in ipairs({ "nope", "127.0.0.1:99999", "127.0.0.1:x", "::1:80",
                            "127.0.0.1:0,bogus" }) do
      local p, err, code = fdpool.pool{ handler = noop, listen = addr }
      assert.is_nil(p, addr)
      assert.matches("bad address '" .. addr .. "'", err, 1, true)
      assert.equals(22, code, addr)   -- EINVAL
    end
  end)

  it("returns nil, 'Address already in use' for a port in use", function()
    local p1 = assert(fdpool.pool{ handler = noop, listen = "127.0.0.1:0", workers = 1 })
    finally(function() p1:close() end)
    local addr = p1:addresses()[1]
    local p2, err, code = fdpool.pool{ handler = noop, listen = addr, workers = 1 }
    assert.is_nil(p2)
    assert.equals("cannot listen on " .. addr .. ": bind() failed (Address already in use)", err)
    assert.equals(98, code)           -- EADDRINUSE
  end)

  it("returns nil for a unix socket path held by a live server", function()
    local path = dir .. "/live.sock"
    local p1 = assert(fdpool.pool{ handler = noop, listen = "unix:" .. path, workers = 1 })
    finally(function() p1:close() end)
    local p2, err, code = fdpool.pool{ handler = noop, listen = "unix:" .. path, workers = 1 }
    assert.is_nil(p2)
    assert.matches("cannot listen on unix:" .. path, err, 1, true)
    assert.matches("Address already in use", err, 1, true)
    assert.equals(98, code)           -- EADDRINUSE
  end)

  it("returns nil, message, errno for a unix path it cannot bind", function()
    -- A regular file where the socket should go: EEXIST, and it stays.
    local file = H.writefile(dir .. "/plain", "x")
    local p, err, code = fdpool.pool{ handler = noop, listen = "unix:" .. file, workers = 1 }
    assert.is_nil(p)
    assert.matches("path exists and is not a socket", err, 1, true)
    assert.equals(17, code)           -- EEXIST
    assert.equals("x", H.readfile(file))
    -- A directory that does not exist: bind() fails with ENOENT.
    p, err, code = fdpool.pool{ handler = noop, listen = "unix:" .. dir .. "/no/such/s.sock",
                                workers = 1 }
    assert.is_nil(p)
    assert.matches("cannot listen on unix:" .. dir .. "/no/such/s.sock", err, 1, true)
    assert.equals(2, code)            -- ENOENT
  end)

  it("returns nil with file:line for a handler script with a syntax error", function()
    local path = H.writefile(dir .. "/bad.lua", "local x = 1\nreturn function(conn)\n  x y\nend\n")
    local p, err, code = fdpool.pool{ handler = path, listen = "127.0.0.1:0", workers = 1 }
    assert.is_nil(p)
    assert.matches(path .. ":3:", err, 1, true)
    assert.matches("near 'y'", err, 1, true)
    assert.equals(22, code)           -- EINVAL
  end)

  it("returns nil, message, ENOENT for a handler script that does not exist", function()
    local p, err, code = fdpool.pool{ handler = dir .. "/none.lua", listen = "127.0.0.1:0", workers = 1 }
    assert.is_nil(p)
    assert.equals("cannot open " .. dir .. "/none.lua: No such file or directory", err)
    assert.equals(2, code)            -- ENOENT
  end)

  it("returns nil, message, EISDIR for a handler script that is a directory", function()
    local p, err, code = fdpool.pool{ handler = dir, listen = "127.0.0.1:0", workers = 1 }
    assert.is_nil(p)
    assert.matches("cannot read " .. dir, err, 1, true)
    assert.equals(21, code)           -- EISDIR
  end)

  it("returns nil, 'unknown policy', EINVAL for policy 'nope'", function()
    local p, err, code = fdpool.pool{ handler = noop, listen = "127.0.0.1:0", policy = "nope", workers = 1 }
    assert.is_nil(p)
    assert.matches("unknown policy 'nope'", err, 1, true)
    assert.equals(22, code)           -- EINVAL
  end)

  it("returns nil, message, ENOENT for a policy file that does not exist", function()
    local p, err, code = fdpool.pool{ handler = noop, listen = "127.0.0.1:0",
                                      policy = dir .. "/missing.lua", workers = 1 }
    assert.is_nil(p)
    assert.equals("cannot load policy: cannot open " .. dir .. "/missing.lua: No such file or directory", err)
    assert.equals(2, code)            -- ENOENT
  end)

  it("frees what a failed pool{} had bound, once collected", function()
    local p1 = assert(fdpool.pool{ handler = noop, listen = "127.0.0.1:0", workers = 1 })
    finally(function() p1:close() end)
    local used = p1:addresses()[1]
    local before = fdcount()
    for _ = 1, 50 do
      -- The first address binds, the second fails: nothing may remain.
      local p = fdpool.pool{ handler = noop, listen = { "127.0.0.1:0", used }, workers = 1 }
      assert.is_nil(p)
    end
    assert.equals(before, fdcount())
  end)
end)

describe("fdpool.check_policy", function()
  local dir
  setup(function() dir = H.tmpdir() end)

  it("accepts the built-in policies", function()
    for _, name in ipairs({ "first_free", "round_robin", "least_conn", "ip_hash" }) do
      assert.is_true(fdpool.check_policy(name), name)
    end
  end)

  it("accepts a file returning a function or {pick = fn}", function()
    assert.is_true(fdpool.check_policy(H.writefile(dir .. "/fn.lua",
      "return function(workers, conn) return 1 end")))
    assert.is_true(fdpool.check_policy(H.writefile(dir .. "/tbl.lua",
      "return { pick = function(workers, conn) return 1 end }")))
  end)

  it("returns nil and the reason otherwise", function()
    local ok, err, errno = fdpool.check_policy("nope")
    assert.is_nil(ok)
    assert.matches("^unknown policy 'nope' %(built in: first_free, round_robin, least_conn, ip_hash", err)
    assert.equals(22, errno)   -- EINVAL

    ok, err, errno = fdpool.check_policy(dir .. "/missing.lua")
    assert.is_nil(ok)
    assert.equals("cannot load policy: cannot open " .. dir .. "/missing.lua: No such file or directory", err)
    assert.equals(2, errno)    -- ENOENT

    local syn = H.writefile(dir .. "/syn.lua", "return function(\n  x y\nend")
    ok, err = fdpool.check_policy(syn)
    assert.is_nil(ok)
    assert.matches("cannot load policy: " .. syn .. ":2:", err, 1, true)

    local num = H.writefile(dir .. "/num.lua", "return 42")
    ok, err = fdpool.check_policy(num)
    assert.is_nil(ok)
    assert.equals("policy " .. num .. " must return a function pick(workers, conn) (got number)", err)

    -- The sandbox: no os at the top level either.
    local os_ = H.writefile(dir .. "/os.lua", "os.exit(1)")
    ok, err = fdpool.check_policy(os_)
    assert.is_nil(ok)
    assert.matches("attempt to index a nil value (global 'os')", err, 1, true)

    -- The instruction budget bounds a top level that loops.
    local loop = H.writefile(dir .. "/loop.lua", "while true do end")
    ok, err = fdpool.check_policy(loop)
    assert.is_nil(ok)
    assert.matches("policy exceeded its instruction budget", err, 1, true)
  end)
end)

describe("fdpool.control", function()
  it("returns nil, the reason and an errno when no pool answers", function()
    local dir = H.tmpdir()
    local ok, err, errno = fdpool.control(dir .. "/none.sock", "status")
    assert.is_nil(ok)
    assert.matches("none.sock", err, 1, true)
    assert.equals(2, errno)    -- ENOENT: no socket at that path
  end)
end)

describe("fdpool module", function()
  it("has a version string", function()
    assert.equals("string", type(fdpool.version))
    assert.matches("^%d+%.%d+%.%d+", fdpool.version)
  end)

  it("ncpu is a positive integer", function()
    assert.is_true(math.type(fdpool.ncpu()) == "integer" and fdpool.ncpu() >= 1)
  end)

  it("fdpool.sleep blocks outside a worker for about the time asked", function()
    local t0 = H.now()
    fdpool.sleep(0.05)
    local took = H.now() - t0
    assert.is_true(took >= 0.03 and took < 1, "slept " .. took .. " s")
  end)
end)
