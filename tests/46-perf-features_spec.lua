-- tests/46-perf-features_spec.lua: the performance features users can
-- see. --cpu-affinity (each worker's Cpus_allowed_list in
-- /proc/PID/status; auto stays inside the CPU set the pool inherited;
-- a bad LIST is a one-line error); conn.cpu and w.cpu in a Lua policy,
-- and least_conn's preference for the worker on the connection's CPU
-- (fdpool.sim); and the HTTP request loop in C (conn:httploop) keeping
-- fdpool.http's behaviours: pipelining, keep-alive, HEAD, 1xx/204/304,
-- a handler error -> 500, a handler that yields. No timing assertions.
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local sim = require "fdpool.sim"
local H = require "helpers"

local APP = "tests/fixtures/perf_app.lua"
local NCPU = fdpool.ncpu()

local function cpus_of(pid)
  local s = H.readfile("/proc/" .. pid .. "/status") or ""
  return s:match("Cpus_allowed_list:%s*(%S+)")
end

-- {worker id = Cpus_allowed_list} of a running pool
local function worker_cpus(p)
  local t = {}
  for _, w in ipairs(assert(p:status()).workers) do t[w.id] = cpus_of(w.pid) end
  return t
end

-- Read responses from a raw connection: {status, headers, body} each.
local function responses(data, methods)
  local out, pos = {}, 1
  for i = 1, #methods do
    local e = data:find("\r\n\r\n", pos, true)
    if not e then break end
    local head = data:sub(pos, e + 1)
    local r = { headers = {} }
    r.status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
    for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r]*)") do r.headers[k:lower()] = v end
    pos = e + 4
    local n = tonumber(r.headers["content-length"] or "0")
    if methods[i] == "HEAD" or r.status < 200 or r.status == 204 or r.status == 304 then n = 0 end
    r.body = data:sub(pos, pos + n - 1)
    pos = pos + n
    out[#out + 1] = r
  end
  return out, data:sub(pos)
end

describe("--cpu-affinity", function()
  local finally_ = H.cleanup

  it("pins worker i to the i-th CPU of a LIST (wrapping)", function()
    finally_(finally)
    local list = NCPU >= 2 and "0,1" or "0"
    local p = H.start_pool{ script = APP, workers = 3, extra = { "--cpu-affinity", list } }
    assert.truthy(p.addr, p:log())
    local c = worker_cpus(p)
    if NCPU >= 2 then
      assert.same({ "0", "1", "0" }, c)
    else
      assert.same({ "0", "0", "0" }, c)
    end
    -- the worker reads the same from inside
    local body = H.http_get(p.addr, "/cpu")
    assert.truthy(body:match("\r\n\r\n[01]$"), body)
    assert.equal(0, p:stop())
  end)

  it("auto maps slot i to the i-th CPU of the set the pool inherited (taskset)", function()
    finally_(finally)
    if NCPU < 2 then
      pending("needs 2 CPUs")
      return
    end
    local p = H.start_pool{ script = APP, workers = 2, shell = "taskset -c 1 env",
      extra = { "--cpu-affinity", "auto" } }
    assert.truthy(p.addr, p:log())
    assert.same({ "1", "1" }, worker_cpus(p))
    assert.equal(0, p:stop())
    p = H.start_pool{ script = APP, workers = 2, shell = "taskset -c 0,1 env",
      extra = { "--cpu-affinity", "auto" } }
    assert.truthy(p.addr, p:log())
    assert.same({ "0", "1" }, worker_cpus(p))
    assert.equal(0, p:stop())
  end)

  it("is a config-file setting too", function()
    finally_(finally)
    local dir = H.tmpdir()
    H.writefile(dir .. "/conf.lua", 'return { cpu_affinity = "0" }')
    local p = H.start_pool{ script = APP, workers = 2, extra = { "--config", dir .. "/conf.lua" } }
    assert.truthy(p.addr, p:log())
    assert.same({ "0", "0" }, worker_cpus(p))
    assert.equal(0, p:stop())
  end)

  it("refuses a bad LIST or a CPU outside the pool's set with one line, exit non-zero", function()
    for _, bad in ipairs { "x", "1-", "0,,1", "3-1", "-1", "100000", "4095" } do
      local code, out, err = H.run_pool(("run %s --cpu-affinity %s --listen 127.0.0.1:0 --no-control"):format(
        APP, H.quote(bad)), 20)
      assert.are_not.equal(0, code, bad)
      assert.equal("", out)
      assert.truthy(err:match("^pool: %-%-cpu%-affinity [^\n]*\n$"), bad .. ": " .. err)
      -- a LIST that is no list is a bad flag value (2); a CPU the pool
      -- may not run on is found at start (1)
      if bad == "x" or bad == "-1" then assert.equal(2, code, bad) end
    end
  end)
end)

describe("conn.cpu and w.cpu", function()
  local finally_ = H.cleanup

  it("a Lua policy reads the CPU that received the connection (conn.cpu)", function()
    finally_(finally)
    local p = H.start_pool{ script = "tests/fixtures/policy_whoami.lua", workers = 2,
      policy = "tests/fixtures/policy_conn_cpu.lua" }
    assert.truthy(p.addr, p:log())
    for _ = 1, 3 do
      local fd = assert(fdpool.connect(p.addr, 5))
      local line = assert(fd:read("l"))
      fd:close()
      assert.equal("1", line:match("^(%d+) "), line)
    end
    assert.equal(0, p:stop())
  end)

  it("a Lua policy sees each worker's pinned CPU (w.cpu)", function()
    finally_(finally)
    if NCPU < 2 then
      pending("needs 2 CPUs")
      return
    end
    local p = H.start_pool{ script = "tests/fixtures/policy_whoami.lua", workers = 2,
      policy = "tests/fixtures/policy_conn_cpu.lua", extra = { "--cpu-affinity", "0,1" } }
    assert.truthy(p.addr, p:log())
    local fd = assert(fdpool.connect(p.addr, 5))
    local line = assert(fd:read("l"))
    fd:close()
    assert.equal("2", line:match("^(%d+) "), line)
    assert.equal(0, p:stop())
  end)

  it("least_conn prefers the worker on the connection's CPU in a near tie (fdpool.sim)", function()
    local function run(cpus, arrivals)
      return sim.run{ policy = "least_conn", workers = 2, capacity = 8, cpus = cpus,
        arrivals = arrivals }.choices
    end
    -- all at once, held: loads 0/8 vs 0/8 -> the CPU decides
    local a = {}
    for i = 1, 4 do a[i] = { at = 0, hold = 10, cpu = 1 } end
    assert.same({ 2, 2, 1, 2 }, run({ 0, 1 }, a))
    -- unpinned workers: plain least_conn, lowest id on ties
    assert.same({ 1, 2, 1, 2 }, run(nil, a))
    -- unknown CPU (nil), or one no worker runs on: plain least_conn
    for i = 1, 4 do a[i].cpu = nil end
    assert.same({ 1, 2, 1, 2 }, run({ 0, 1 }, a))
    for i = 1, 4 do a[i].cpu = 5 end
    assert.same({ 1, 2, 1, 2 }, run({ 0, 1 }, a))
    -- sequential connections from CPU 1 all go to worker 2, from CPU 0 to 1
    local s = {}
    for i = 1, 4 do s[i] = { at = i, hold = 0.5, cpu = i % 2 } end
    assert.same({ 2, 1, 2, 1 }, run({ 0, 1 }, s))
  end)
end)

describe("the built-in policies' C fast paths", function()
  it("choose as their Lua files do (fdpool.sim reference = true), CPUs or not", function()
    -- a fixed pseudo-random mix: bursts, holds, IPv4/IPv6/unix peers, CPUs
    local seed = 12345
    local function rnd(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    local peers = { "10.0.0.1:1000", "10.0.0.2:1000", "192.168.7.9:5", "[::1]:80",
      "[2001:db8::42]:443", "unix", "127.0.0.1:40000" }
    local arrivals, t = {}, 0
    for i = 1, 400 do
      t = t + (rnd(4) == 0 and 0 or rnd(100) / 1000)
      arrivals[i] = { at = t, hold = rnd(300) / 100, peer = peers[rnd(#peers) + 1],
        cpu = rnd(3) == 0 and nil or rnd(3) }
    end
    for _, policy in ipairs { "first_free", "round_robin", "least_conn", "ip_hash" } do
      for _, shape in ipairs { { 2, 4 }, { 3, 8 }, { 5, 2 } } do
        for _, cpus in ipairs { false, { 0, 1 }, { 1, 0, 2, 1, 0 } } do
          local opts = { policy = policy, workers = shape[1], capacity = shape[2],
            cpus = cpus or nil, arrivals = arrivals }
          local c = sim.run(opts)
          opts.reference = true
          local lua = sim.run(opts)
          local what = ("%s, %d workers x %d, cpus %s"):format(policy, shape[1], shape[2],
            cpus and table.concat(cpus, ",") or "none")
          assert.same(lua.choices, c.choices, what)
          assert.same(lua.workers, c.workers, what)
          assert.equal(lua.queued_max, c.queued_max, what)
          assert.equal(0, c.fallbacks, what)
        end
      end
    end
  end)
end)

describe("the HTTP loop in C keeps fdpool.http's behaviours", function()
  local finally_ = H.cleanup
  local p

  local function start()
    p = H.start_pool{ script = APP, workers = 1 }
    assert.truthy(p.addr, p:log())
  end

  -- (a 1xx as the final status is the handler's error: tests/64)
  it("pipelined requests: answered in order, HEAD/204/304 without bodies", function()
    finally_(finally)
    start()
    local req = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
      .. "HEAD /b HTTP/1.1\r\nHost: t\r\n\r\n"
      .. "GET /status?c=204 HTTP/1.1\r\nHost: t\r\n\r\n"
      .. "GET /status?c=304 HTTP/1.1\r\nHost: t\r\n\r\n"
      .. "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde"
      .. "GET /yield HTTP/1.1\r\nHost: t\r\n\r\n"
      .. "GET /c HTTP/1.0\r\n\r\n"
    local data = assert(H.request(p.addr, req))
    local r, rest = responses(data, { "GET", "HEAD", "GET", "GET", "POST", "GET", "GET" })
    assert.equal(7, #r, data)
    assert.equal("", rest)
    assert.same({ 200, "hello GET /a\n" }, { r[1].status, r[1].body })
    assert.same({ 200, "", "14" }, { r[2].status, r[2].body, r[2].headers["content-length"] })
    assert.same({ 204, nil }, { r[3].status, r[3].headers["content-length"] })
    assert.same({ 304, nil }, { r[4].status, r[4].headers["content-length"] })
    assert.same({ 200, "abcde" }, { r[5].status, r[5].body })
    assert.same({ 200, "yielded\n" }, { r[6].status, r[6].body })
    assert.same({ 200, "hello GET /c\n", "close" }, { r[7].status, r[7].body, r[7].headers["connection"] })
    assert.equal(0, p:stop())
  end)

  it("keep-alive: one connection, requests one after the other", function()
    finally_(finally)
    start()
    local fd = assert(fdpool.connect(p.addr, 5))
    for i = 1, 5 do
      assert(fd:write(("GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n"):format(i)))
      local want = ("hello GET /k%d\n"):format(i)
      local buf = ""
      repeat buf = buf .. assert(fd:read(65536)) until buf:sub(-#want) == want
      assert.truthy(buf:match("^HTTP/1%.1 200 OK\r\n"), buf)
    end
    fd:close()
    assert.equal(0, p:stop())
  end)

  it("a handler error answers 500 and closes; the worker serves on", function()
    finally_(finally)
    start()
    local data = assert(H.request(p.addr, "GET /raise HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n"))
    local r, rest = responses(data, { "GET", "GET" })
    assert.equal(1, #r, data)
    assert.equal(500, r[1].status)
    assert.equal("", rest)
    assert.truthy(p:log():find("deliberate failure", 1, true))
    local ok = H.http_get(p.addr, "/again")
    assert.truthy(ok:find("hello GET /again", 1, true), ok)
    assert.equal(0, p:stop())
  end)

  it("framing refusals come from the C loop's checks as from the Lua loop's", function()
    finally_(finally)
    start()
    local cases = {
      { "GET / HTTP/1.1\r\n\r\n", 400, "missing Host" },
      { "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad Host" },
      { "GET x HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad request target" },
      { "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported" },
      { "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "not the final" },
      { "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "both" },
      { "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\n", 400, "bad Content-Length" },
      { "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999\r\n\r\n", 413, nil },
      { "GET / HTTP/1.1\r\nHost: t\r\nExpect: tea\r\n\r\n", 417, nil },
      { "OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200, "hello OPTIONS *" },
      -- absolute-form: req.path is the origin-form's (RFC 9112 3.2.2)
      { "GET http://t/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200, "hello GET /x" },
      { "GET /h HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n", 200, "hello GET /h" },
    }
    -- the Lua loop (fdpool.testing's in-memory conn) on the same bytes
    local testing = require "fdpool.testing"
    local app = dofile(APP)
    for _, c in ipairs(cases) do
      local data = assert(H.request(p.addr, c[1]))
      local r = responses(data, { "GET" })
      assert.equal(c[2], r[1] and r[1].status, c[1] .. " -> " .. data)
      if c[3] then assert.truthy(data:find(c[3], 1, true), c[1] .. " -> " .. data) end
      local lr = responses(testing.run(app, { input = c[1] }), { "GET" })
      assert.equal(c[2], lr[1] and lr[1].status, "Lua loop: " .. c[1])
      assert.equal(r[1].body:gsub("Date: [^\r]*", ""), (lr[1].body:gsub("Date: [^\r]*", "")))
    end
    assert.equal(0, p:stop())
  end)
end)
