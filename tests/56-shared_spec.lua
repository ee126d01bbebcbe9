-- tests/56-shared_spec.lua: the dictionaries shared by all workers
-- (--shared NAME:SIZE, fdpool.shared.NAME), against real pools: values
-- and ngx.shared.DICT's methods, incr from two workers counted exactly,
-- LRU eviction when full, a worker killed inside the lock (no deadlock,
-- no torn entry, the next operation works), the dictionary across a
-- reload, `pool status`, and bad --shared values.
local H = require "helpers"
local fdpool = require "fdpool"

local ASAN = H.BUILD ~= "build"

local function cmd(p, line)
  local out, err = H.request(p.addr, line .. "\n", 30)
  assert(out, err)
  return (out:gsub("\n$", ""))
end

local function start(extra, opts)
  opts = opts or {}
  local args = { "--shared", "cache:1m" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  return H.start_pool{ script = "tests/fixtures/tm_shared.lua", workers = opts.workers or 2,
                       extra = args, shell = opts.shell }
end

describe("fdpool.shared", function()
  local p
  setup(function() p = start({ "--shared", "small:64k" }) end)
  teardown(function() if p then p:stop() end end)

  it("keeps strings, integers, floats and booleans as they were", function()
    assert.equals("integer=42,float=1.5,boolean=false,boolean=true,string=abc,"
      .. "integer=9223372036854775807,43 nil false,2.5 nil false,43.5 nil false,"
      .. "nil not a number false,nil not found false,15 nil false", cmd(p, "types"))
  end)

  it("has ngx.shared.DICT's methods and return shapes", function()
    assert.equals("true nil false,false exists false,true nil false,false not found false,"
      .. "3,true nil false,v 7,0,true,true,nil not found,nil not found,"
      .. "true,nil,true nil false,5,2,1048576,true,nil,true,0", cmd(p, "api"))
  end)

  it("raises for misuse and refuses what cannot fit", function()
    local out = cmd(p, "misuse")
    assert.truthy(out:find("bad argument #1 to 'set' (key must not be empty)", 1, true), out)
    assert.truthy(out:find("key too long", 1, true), out)
    assert.truthy(out:find("bad value type", 1, true), out)
    assert.truthy(out:find("ttl must be", 1, true), out)
    assert.truthy(out:find("number expected, got string", 1, true), out)
    assert.truthy(out:find("fdpool.shdict expected", 1, true), out)
    assert.truthy(out:find("false value too big false; nil", 1, true), out)
  end)

  it("takes a ttl of 1e9, the documented most, and raises past it", function()
    assert.equals("true,true,1,ttl must be,ttl must be,ttl must be,true", cmd(p, "ttledge"))
  end)

  it("is a table of its methods that knows its own kind", function()
    assert.equals("shdict,fdpool.shdict (cache),function,in-small in-cache in-cache in-small,"
      .. "1111,2222,3333,true,true 2 nil 1 2 nil 2 3,true", cmd(p, "object"))
  end)

  it("answers get after its string cache could not be made (--max-memory)", function()
    local q = start({ "--max-memory", "8" }, { workers = 1 })
    local ok, out = pcall(cmd, q, "vcoom")
    q:stop()
    assert(ok, out)
    assert.equals("false,false:not enough memory,short,short", out)
    assert.falsy(q:log():find("killed by", 1, true), q:log())
  end)

  it("is one dictionary for every worker", function()
    assert.equals("true nil false", cmd(p, "set shared-key hello"))
    local seen = {}
    H.wait_until(function()
      local c1 = assert(fdpool.connect(p.addr, 10))
      local c2 = assert(fdpool.connect(p.addr, 10))
      c1:write("wid\n"); c2:write("wid\n")
      seen[c1:read("l")] = true; seen[c2:read("l")] = true
      c1:close(); c2:close()
      return seen["1"] and seen["2"]
    end, 10, "both workers")
    for _ = 1, 4 do assert.equals("string hello nil", cmd(p, "get shared-key")) end
  end)

  it("counts incr from two workers exactly", function()
    -- rounds of 4 connections at once, each n increments of one key, until
    -- a round was served by both workers (the policy decides; usually the
    -- first); every increment is counted
    local n, total, both = ASAN and 500 or 3000, 0, false
    for round = 1, 5 do
      local conns, ids = {}, {}
      for i = 1, 4 do
        conns[i] = assert(fdpool.connect(p.addr, 30))
        assert(conns[i]:write(("bump hits %d %d\n"):format(n, 4 * round)))
      end
      for i = 1, 4 do ids[assert(conns[i]:read("l"))] = true; conns[i]:close() end
      total = total + 4 * n
      if ids["1"] and ids["2"] then both = true; break end
    end
    assert.is_true(both, "both workers took part")
    assert.equals(("integer %d nil"):format(total), cmd(p, "get hits"))
  end)

  it("evicts the least recently used entries when full (set says so)", function()
    local evicted, failed, first_gone, last_there = cmd(p, "fill 1000 200 small"):match("^(%d+) (%d+) (%a+) (%a+)$")
    assert.is_true(tonumber(evicted) > 0)
    assert.equals("0", failed)
    assert.equals("true", first_gone)
    assert.equals("true", last_there)
  end)

  it("shows size and use in pool status", function()
    local st = assert(p:status())
    local byname = {}
    for _, z in ipairs(st.shared) do byname[z.name] = z end
    assert.equals(1048576, byname.cache.size)
    assert.is_true(byname.cache.keys >= 1 and byname.cache.used > 0)
    assert.equals(65536, byname.small.size)
    assert.is_true(byname.small.used <= byname.small.size)
    local ok, _, text = H.run(H.POOL .. " status --control " .. H.quote(p.control))
    assert.is_true(ok)
    assert.truthy(text:find("shared cache  size 1048576  used %d+  keys %d+"))
  end)

  it("logs no errors", function()
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)

describe("a worker killed inside the dictionary's lock", function()
  -- The test knob makes a worker _exit(86) at the N-th journaled write of
  -- an operation on the key "victim", holding the lock.
  -- case: the operation, the write to die at, how victim gets its 10
  -- first, the dying command (a set of the same size is rewritten in
  -- place; a longer value takes a new block and frees the old one); an
  -- incr that keeps the number's type is one 8-byte store, no journal:
  -- killed after it, it counted (get: what victim holds after)
  local long = ("x"):rep(300)
  for _, case in ipairs { { "incr", 1, "set victim 10", "incr victim 5",
                            get = "integer 15 nil", log = "nothing to undo" },
                          { "incr", 2, "set victim 10", "incr victim 0.5" },
                          -- (write 3 of 99 over 10: the flags, unchanged, so
                          -- nothing changed yet; write 6: the number)
                          { "set", 3, "incr victim 10", "set victim 99", log = "nothing to undo" },
                          { "set", 6, "incr victim 10", "set victim 99" },
                          { "set", 12, "incr victim 10", "set victim " .. long },
                          { "set", 20, "incr victim 10", "set victim " .. long },
                          -- a get moves victim to the head of the LRU list (another
                          -- key was set after it): killed inside the move
                          { "get", 3, "incr victim 10", "get victim", "set other 1" } } do
    it(("costs no deadlock and no torn entry (%s, write %d, %s)"):format(case[1], case[2],
        case[1] == "get" and "the LRU move" or #case[4] > 20 and "a new block"
        or case.get and "one store" or "in place"), function()
      local p = start(nil, { shell = ("FDPOOL_TEST_SHARED_DIE=%s:%d:victim"):format(case[1], case[2]) })
      finally(function() p:stop() end)
      assert.equals("ok", cmd(p, "seed 50"))
      assert.truthy(cmd(p, case[3]):find("^t?r?u?e?1?0? nil false$"))
      if case[5] then assert.equals("true nil false", cmd(p, case[5])) end
      local before = p:worker_pids()
      -- the worker dies inside the operation: its client sees the close
      local out = H.request(p.addr, case[4] .. "\n", 10)
      assert.equals("", out)
      H.wait_until(function() return p:log():find("exited with code 86", 1, true) end, 10, "the death")
      -- the next operation (any worker) undoes it, and the dictionary is whole
      -- (every worker has the knob: victim is read by an incr of 0 after a
      -- get died)
      if case[1] == "get" then
        assert.equals("10 nil false", cmd(p, "incr victim 0"))
      else
        assert.equals(case.get or "integer 10 nil", cmd(p, "get victim"))
      end
      H.wait_until(function() return p:log():find(case.log or "its operation was undone", 1, true) end,
                   10, "the repair line")
      assert.equals("0", cmd(p, "check 50"))
      assert.equals("1 nil false", cmd(p, "incr other" .. case[1] .. " 1"))
      assert.equals("true nil false", cmd(p, "set victim2 x"))
      assert.equals("string x nil", cmd(p, "get victim2"))
      p:wait_ready(2)
      assert.are_not.same(before, p:worker_pids())
    end)
  end

  it("flushes (with a log line) when it died inside flush_all", function()
    -- flush_all cannot be undone: the next locker flushes again
    local p = start(nil, { shell = "FDPOOL_TEST_SHARED_DIE=flush:1:x" })
    finally(function() p:stop() end)
    assert.equals("ok", cmd(p, "seed 5"))
    assert.equals("", H.request(p.addr, "api\n", 10))
    H.wait_until(function() return p:log():find("exited with code 86", 1, true) end, 10, "the death")
    assert.equals("nil nil nil", cmd(p, "get keep1"))
    assert.truthy(p:log():find("every entry flushed", 1, true))
    assert.equals("true nil false", cmd(p, "set after yes"))
  end)
end)

describe("the dictionary's lifetime", function()
  it("outlives a reload (HUP) and a worker's restart", function()
    local p = start()
    finally(function() p:stop() end)
    assert.equals("true nil false", cmd(p, "set survivor 1"))
    local gen = p:status().generation
    p:kill("HUP")
    H.wait_status(p, function(st) return st.generation > gen and H.all_idle(st) end, 30, "the new generation")
    assert.equals("integer 1 nil", cmd(p, "get survivor"))
    -- kill a worker: its replacement sees the same dictionary
    local pid = p:worker_pids()[1]
    os.execute("kill -KILL " .. pid)
    H.wait_status(p, function(st)
      for _, w in ipairs(st.workers) do if w.pid == pid then return false end end
      return H.all_idle(st)
    end, 20, "the replacement")
    for _ = 1, 3 do assert.equals("integer 1 nil", cmd(p, "get survivor")) end
    assert.equals(0, p:stop())
  end)

  it("outlives a binary upgrade (pool upgrade hands the memfd over)", function()
    local p = start()
    local new
    finally(function()
      p:stop()
      if new and H.alive(new) then
        os.execute("kill -TERM " .. new)
        pcall(H.wait_until, function() return not H.alive(new) end, 10)
        if H.alive(new) then os.execute("kill -KILL " .. new) end
      end
    end)
    assert.equals("true nil false", cmd(p, "set through-upgrade 42"))
    local code, out, err = H.run_pool("upgrade --control " .. H.quote(p.control), 90)
    assert.equals(0, code, out .. err)
    new = tonumber(out:match("master pid (%d+) serving"))
    assert.truthy(new, out)
    H.wait_until(function()
      local st = p:status()
      return st and st.pid == new and H.all_idle(st) and st
    end, 30, "the new master serving")
    -- served by the new master's workers, from the same memory
    for _ = 1, 3 do assert.equals("integer 42 nil", cmd(p, "get through-upgrade")) end
    assert.truthy(p:log():find("upgrade: shared 'cache' taken over with its entries", 1, true))
  end)

  it("is kept by a reload that re-reads the config file; a changed one is refused", function()
    local dir = H.tmpdir()
    local handler = os.getenv("PWD") .. "/tests/fixtures/tm_shared.lua"
    local conf = dir .. "/conf.lua"
    local function write(size)
      H.writefile(conf, ("return { handler = %q, shared = { cache = %q } }"):format(handler, size))
    end
    write("256k")
    local p = H.start_pool{ workers = 1, extra = { "--config", conf } }
    finally(function() p:stop() end)
    assert.equals("true nil false", cmd(p, "set kept 7"))
    local code, out = H.run_pool("reload --control " .. H.quote(p.control), 60)
    assert.equals(0, code, out)
    assert.equals("integer 7 nil", cmd(p, "get kept"))
    write("512k")
    local code2, out2, err2 = H.run_pool("reload --control " .. H.quote(p.control), 60)
    assert.are_not.equals(0, code2)
    assert.truthy((out2 .. err2):find("the shared dictionaries changed: they need a restart", 1, true), out2 .. err2)
    assert.equals("integer 7 nil", cmd(p, "get kept"))
    assert.equals(262144, p:status().shared[1].size)
  end)

  it("is made from the config file's shared table and fdpool.pool{shared=}", function()
    local dir = H.tmpdir()
    local conf = H.writefile(dir .. "/conf.lua", ([[
      return { handler = %q, shared = { cache = "256k", other = 131072 } }
    ]]):format(os.getenv("PWD") .. "/tests/fixtures/tm_shared.lua"))
    local p = H.start_pool{ workers = 1, extra = { "--config", conf } }
    finally(function() p:stop() end)
    local st = assert(p:status())
    local sizes = {}
    for _, z in ipairs(st.shared) do sizes[z.name] = z.size end
    assert.same({ cache = 262144, other = 131072 }, sizes)
    assert.equals("true nil false", cmd(p, "set a b"))
  end)
end)

describe("a dictionary dropped and collected", function()
  -- The last dictionary called is cached (lshared.c, check): a finalizer
  -- older than its view (an object made before the pool forked, with a
  -- function handler) that calls it after view_gc must not leave the
  -- cache pointing at a table and view about to be freed, or a new table
  -- at that address would be taken for a dictionary.
  it("is never taken for a new table at its address", function()
    local dir = H.tmpdir()
    local out, exit = dir .. "/out", dir .. "/exit"
    os.execute(("(lua5.4 tests/fixtures/shared_gc_driver.lua %s; echo $? > %s)"
      .. " </dev/null >%s 2>%s/err &"):format(H.quote(H.BUILD), exit, out, dir))
    local pid = H.wait_until(function()
      return tonumber(((H.readfile(out) or ""):match("pid (%d+)")))
    end, 10, "the driver to start")
    local line = H.wait_until(function()
      return (H.readfile(out) or ""):match("wrong [^\n]+")
    end, 20, "the worker's init")
    os.execute("kill " .. pid)
    H.wait_until(function() return H.readfile(exit) end, 10, "the driver to stop")
    -- no call with a fresh table as self passed; the finalizer's own call
    -- on the collected dictionary worked (found, not cached)
    assert.equals("wrong 0 final 1,str", line)
  end)
end)

describe("--shared", function()
  for _, case in ipairs {
    { "cache", "needs NAME:SIZE" },
    { "cache:", "needs NAME:SIZE" },
    { "cache:0", "out of range" },
    { "cache:5g", "out of range" },
    { "cache:99999999999999999999", "bad size" },
    { "cache:10x", "bad size" },
    { "1cache:1m", "bad name" },
    { "a-b:1m", "bad name" },
    { ("n"):rep(40) .. ":1m", "bad name" },
  } do
    it(("refuses '%s' with one line"):format(case[1]:sub(1, 20)), function()
      local code, out, err = H.run_pool("run --listen 127.0.0.1:0 --no-control --shared " .. H.quote(case[1]), 10)
      assert.are_not.equals(0, code)
      assert.equals("", out)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.equals(1, H.count(err, "\n"))
    end)
  end

  it("refuses a name given twice", function()
    local code, _, err = H.run_pool("run --listen 127.0.0.1:0 --no-control --shared a:1m --shared a:2m", 10)
    assert.are_not.equals(0, code)
    assert.truthy(err:find("'a' given twice", 1, true), err)
  end)

  it("is refused by fdpool.pool{} with nil, message", function()
    local pool, err = fdpool.pool{ handler = function() end, shared = { ["bad name"] = "1m" } }
    assert.is_nil(pool)
    assert.truthy(err:find("bad name", 1, true))
    pool, err = fdpool.pool{ handler = function() end, shared = { x = true } }
    assert.is_nil(pool)
    assert.truthy(err:find("missing size", 1, true))
  end)

  it("is made by fdpool.pool{shared=} and shown by pool:status()", function()
    local pool = assert(fdpool.pool{ handler = function() end, workers = 1, listen = { "127.0.0.1:0" },
                                     control = false, shared = { a = "64k", b = 131072 } })
    local st = pool:status()
    local sizes = {}
    for _, z in ipairs(st.shared) do sizes[z.name] = z.size; assert.equals(0, z.keys) end
    assert.same({ a = 65536, b = 131072 }, sizes)
  end)

  it("is listed in pool --help", function()
    local _, out = H.run_pool("--help", 10)
    assert.truthy(out:find("--shared NAME:SIZE", 1, true))
  end)
end)
