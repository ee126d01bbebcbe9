-- tests/80-ecosystem2_spec.lua: what an operator plugs fdpool into,
-- against the real `pool` binary: fdpool.status() from a handler, the
-- --metrics listener (/metrics, /healthz) and `pool status --format
-- openmetrics`, --log-format json, --config files, `pool top`, the HTTP
-- access log, and PROXY protocol v1/v2 listeners.
local fdpool = require "fdpool"
local H = require "helpers"

local FIX = "tests/fixtures/"
local PEER = FIX .. "eco2_peer.lua"
local STATUS = FIX .. "eco2_status.lua"
local HTTP = FIX .. "eco2_http.lua"
local CONFIG = FIX .. "eco2_config.lua"

-- `pool run ARGV...` in the background with its log in a temp dir, for
-- the command lines H.start_pool cannot make (no --workers, JSON logs).
-- opts: control (path, for wait_ready), workers (to wait for).
local function launch(argv, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local p = setmetatable({ dir = dir, log_path = dir .. "/pool.log", exit_path = dir .. "/exit",
    control = opts.control }, { __index = H.Pool })
  local cmd = { H.POOL, "run" }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = H.quote(a) end
  os.execute(("(%s; echo $? > %s) </dev/null >%s/stdout 2>%s &"):format(
    table.concat(cmd, " "), p.exit_path, dir, p.log_path))
  p.pid = H.wait_until(function()
    local log = p:log()
    return tonumber(log:match("pool%[(%d+)%]") or log:match('"pid": (%d+), "process": "master"'))
      or p:exited()
  end, 10, "the pool's first log line")
  assert(not p:exited(), "the pool exited at once: " .. p:log())
  p.addr = H.wait_until(function()
    assert(not p:exited(), "the pool exited: " .. p:log())
    return p:log():match('listening on ([^%s"]+)')
  end, 10, "the pool to listen")
  if p.control then p:wait_ready(opts.workers or 2) end
  return p
end

-- Lines of a "key value" answer (eco2_status.lua) as a table.
local function kv(text)
  local t = {}
  for k, v in (text or ""):gmatch("([%w_]+) ?([^\n]*)\n") do t[k] = v end
  return t
end

-- An HTTP GET on the --metrics listener: status code, headers, body.
local function get(addr, path)
  local r = assert(H.request(addr, ("GET %s HTTP/1.0\r\n\r\n"):format(path)))
  local code = tonumber(r:match("^HTTP/1%.%d (%d+)"))
  local head, body = r:match("^(.-\r\n)\r\n(.*)$")
  return code, head, body
end

local function metrics_addr(p)
  return H.wait_until(function() return p:log():match("metrics on http://([^/%s]+)/metrics") end,
    5, "the metrics listener")
end

-- Parse the OpenMetrics text: families {name = type}, samples
-- {{name, labels, value}}; raises on a line that is neither.
local function parse_om(text)
  local fam, samples = {}, {}
  for line in text:gmatch("([^\n]*)\n") do
    local name, typ = line:match("^# TYPE (%S+) (%S+)$")
    if name then
      fam[name] = typ
    elseif not (line:match("^# HELP ") or line == "# EOF") then
      local sname, labels, value = line:match("^([%a_:][%w_:]*)(%b{}) (%S+)$")
      if not sname then
        labels = ""
        sname, value = line:match("^([%a_:][%w_:]*) (%S+)$")
      end
      assert(sname, "not an OpenMetrics line: " .. line)
      local v = value == "+Inf" and math.huge or tonumber(value)
      assert(v, "not a number in: " .. line)
      samples[#samples + 1] = { name = sname, labels = labels, value = v }
    end
  end
  return fam, samples
end

local SUFFIXES = { counter = { "_total", "_created" }, histogram = { "_bucket", "_sum", "_count", "_created" },
  gauge = { "" }, stateset = { "" }, info = { "_info" }, unknown = { "" } }

-- The family a sample belongs to, or nil.
local function family_of(fam, name)
  for f, typ in pairs(fam) do
    for _, suf in ipairs(SUFFIXES[typ] or {}) do
      if name == f .. suf then return f end
    end
  end
end

-- The value of the sample `name` (with labels exactly `labels`).
local function sample(samples, name, labels)
  for _, s in ipairs(samples) do
    if s.name == name and s.labels == (labels or "") then return s.value end
  end
end

local function check_openmetrics(text)
  assert.equal("# EOF\n", text:sub(-6))
  local fam, samples = parse_om(text)
  assert.is_true(#samples > 0)
  -- Every sample belongs to a declared family, and a family's samples
  -- are together (OpenMetrics forbids interleaving).
  local done, cur = {}, nil
  for _, s in ipairs(samples) do
    local f = family_of(fam, s.name)
    assert(f, "sample " .. s.name .. " belongs to no declared family")
    if f ~= cur then
      assert(not done[f], "samples of " .. f .. " are interleaved with others")
      if cur then done[cur] = true end
      cur = f
    end
  end
  for _, f in ipairs { "fdpool_accepted", "fdpool_queued", "fdpool_parked", "fdpool_worker_state",
    "fdpool_worker_active", "fdpool_worker_capacity", "fdpool_worker_pid", "fdpool_worker_served",
    "fdpool_worker_bytes_in", "fdpool_worker_bytes_out", "fdpool_worker_restarts",
    "fdpool_dispatch_latency_seconds" } do
    assert(fam[f], "family " .. f .. " is not declared")
  end
  assert.equal("counter", fam.fdpool_accepted)
  assert.equal("stateset", fam.fdpool_worker_state)
  assert.equal("histogram", fam.fdpool_dispatch_latency_seconds)
  return fam, samples
end

-- Master CPU seconds (utime + stime) from /proc.
local function cpu_seconds(pid)
  local s = assert(H.readfile("/proc/" .. pid .. "/stat"))
  local f = {}
  for x in s:match("%) (.*)$"):gmatch("%S+") do f[#f + 1] = x end
  return (tonumber(f[12]) + tonumber(f[13])) / 100
end

describe("ecosystem, part 2", function()

  describe("fdpool.status() in a handler", function()
    it("returns the pool's table: workers, its own busy slot, fields it set", function()
      local p = H.start_pool{ script = STATUS, workers = 3, concurrency = 1 }
      finally(function() p:stop() end)
      local a = kv(H.request(p.addr, ""))
      assert.equal("3", a.workers)
      assert.equal(tostring(p.pid), a.master)
      assert.equal("least_conn", a.policy)
      assert.equal("1", a.generation)
      -- Its own row: busy (this connection fills its capacity of 1).
      local id, state, active, cap = a.me:match("^(%d+) (%a+) (%d+) (%d+)$")
      assert.equal("busy", state)
      assert.equal("1", active)
      assert.equal("1", cap)
      assert.equal("c" .. id, a.color)       -- set in init
      assert.equal("1", a.hits)              -- set by this handler just before
      local pids = p:worker_pids()
      for i = 1, 3 do
        assert.equal(tostring(pids[i]), a["worker" .. i]:match("%d+$"))
      end
      -- A second connection sees one more accepted and, on the same
      -- worker (least_conn, all idle: worker 1), hits=2.
      local b = kv(H.request(p.addr, ""))
      assert.equal(tonumber(a.accepted) + 1, tonumber(b.accepted))
      if b.me:match("^%d+") == id then assert.equal("2", b.hits) end
    end)

    it("says where it works outside a handler", function()
      local st, err = fdpool.status()
      assert.is_nil(st)
      assert.equal("fdpool.status() works in a handler's coroutine", err)
    end)
  end)

  describe("metrics", function()
    it("serves /metrics whose values move with the traffic, and /healthz", function()
      local d = H.tmpdir()
      local p = H.start_pool{ script = HTTP, args = { d .. "/access.log" }, workers = 2,
        extra = { "--metrics", "127.0.0.1:0" } }
      finally(function() p:stop() end)
      local m = metrics_addr(p)
      local code, head, body = get(m, "/metrics")
      assert.equal(200, code)
      assert.matches("Content%-Type: application/openmetrics%-text", head)
      local _, s0 = check_openmetrics(body)
      local a0 = sample(s0, "fdpool_accepted_total")
      for i = 1, 3 do
        assert.matches("^HTTP/1.1 200", H.http_get(p.addr, "/n" .. i))
      end
      -- Accepted counts the three connections (scrapes are not counted);
      -- served follows when the workers report back.
      local s1
      H.wait_until(function()
        _, _, body = get(m, "/metrics")
        _, s1 = check_openmetrics(body)
        return sample(s1, "fdpool_worker_served_total", '{worker="1"}')
          + sample(s1, "fdpool_worker_served_total", '{worker="2"}') == 3
      end, 5, "served_total to reach 3")
      local acc = sample(s1, "fdpool_accepted_total")
      assert.equal(a0 + 3, acc)
      -- Every accepted connection went through dispatch once.
      assert.equal(acc, sample(s1, "fdpool_dispatch_latency_seconds_count"))
      assert.equal(acc, sample(s1, "fdpool_dispatch_latency_seconds_bucket", '{le="+Inf"}'))
      local prev = 0
      for _, s in ipairs(s1) do
        if s.name == "fdpool_dispatch_latency_seconds_bucket" then
          assert.is_true(s.value >= prev)
          prev = s.value
        end
      end
      assert.is_true(sample(s1, "fdpool_dispatch_latency_seconds_sum") >= 0)
      -- Bytes went in and out; one state per worker is set.
      assert.is_true(sample(s1, "fdpool_worker_bytes_in_total", '{worker="1"}')
        + sample(s1, "fdpool_worker_bytes_in_total", '{worker="2"}') > 0)
      for w = 1, 2 do
        local n = 0
        for _, st in ipairs { "starting", "free", "busy", "exiting" } do
          n = n + sample(s1, "fdpool_worker_state",
            ('{worker="%d",fdpool_worker_state="%s"}'):format(w, st))
        end
        assert.equal(1, n)
        assert.equal(1, sample(s1, "fdpool_worker_state", ('{worker="%d",fdpool_worker_state="free"}'):format(w)))
      end
      assert.equal(p:worker_pids()[2], sample(s1, "fdpool_worker_pid", '{worker="2"}'))
      -- /healthz and anything else.
      code, _, body = get(m, "/healthz")
      assert.equal(200, code)
      assert.equal("ok 2/2 workers\n", body)
      code = get(m, "/nothing")
      assert.equal(404, code)
    end)

    it("pool status --format openmetrics ends with # EOF and declares every family", function()
      local p = H.start_pool{ script = PEER, workers = 2 }
      finally(function() p:stop() end)
      assert.matches("^%S+ %S+ inet", H.request(p.addr, "x\n"))
      local code, out, err = H.run_pool("status --format openmetrics --control " .. H.quote(p.control))
      assert.equal(0, code, err)
      local _, s = check_openmetrics(out)
      assert.equal(1, sample(s, "fdpool_accepted_total"))
      assert.equal(2, sample(s, "fdpool_workers"))
      code, _, err = H.run_pool("status --format yaml --control " .. H.quote(p.control))
      assert.equal(2, code)
      assert.matches("--format must be table, json or openmetrics (got 'yaml')", err, 1, true)
    end)

    it("/healthz answers 503 during a graceful stop", function()
      local p = H.start_pool{ script = PEER, workers = 1, extra = { "--metrics", "127.0.0.1:0" } }
      local held
      finally(function()
        if held then held:close() end
        p:stop()
      end)
      local m = metrics_addr(p)
      assert.equal(200, (get(m, "/healthz")))
      -- A connection in flight keeps the graceful stop going.
      held = assert(fdpool.connect(p.addr, 5))
      assert.matches("^127%.0%.0%.1 %d+ inet$", held:read("l"))
      p:kill("QUIT")
      local body = H.wait_until(function()
        local code, _, b = get(m, "/healthz")
        return code == 503 and b
      end, 5, "/healthz to say 503")
      assert.matches("^unavailable %d/1 workers, stopping\n$", body)
      -- The connection in flight still finishes; then the pool exits 0.
      held:write("bye\n")
      assert.equal("got bye", held:read("l"))
      held:close()
      held = nil
      assert.equal(0, p:wait_exit(10))
    end)
  end)

  describe("--log-format json", function()
    it("writes one JSON object per line with time, level, pid, process, worker, msg", function()
      local d = H.tmpdir()
      local p = launch({ HTTP, "--listen", "127.0.0.1:0", "--workers", "2", "--control",
        d .. "/control.sock", "--log-format", "json", "--", d .. "/access.log" },
        { control = d .. "/control.sock" })
      finally(function() p:stop() end)
      local pids = p:worker_pids()
      assert.matches("^HTTP/1.1 500", H.http_get(p.addr, "/raise"))
      H.wait_until(function() return p:log():find("boom", 1, true) end, 5, "the handler error in the log")
      assert.equal(0, p:stop())
      local n, workers_seen, error_line = 0, 0, nil
      for line in p:log():gmatch("[^\n]+") do
        n = n + 1
        local o = H.json.decode(line)
        assert(type(o) == "table", "not a JSON object: " .. line)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", o.time)
        assert.is_truthy(({ error = 1, warn = 1, info = 1, debug = 1 })[o.level], line)
        assert.is_string(o.msg)
        assert.is_number(o.pid)
        assert.is_number(o.worker)
        if o.process == "master" then
          assert.equal(p.pid, o.pid)
          assert.equal(0, o.worker)
        else
          assert.equal("worker", o.process, line)
          assert.equal(pids[o.worker], o.pid)
          workers_seen = workers_seen + 1
        end
        if o.msg:find("boom", 1, true) then error_line = o end
      end
      assert.is_true(n >= 4)
      assert.is_true(workers_seen >= 1)
      -- Quotes, backslash, tab and UTF-8 survive the escaping.
      assert.equal("error", error_line.level)
      assert.matches('boom "quoted" back\\slash\ttab caf\u{e9}', error_line.msg, 1, true)
      assert.matches("listening on 127.0.0.1:%d+", p:log())
    end)

    -- Regression test (was a bug, now fixed).
    it("stays valid UTF-8 when a message holds bytes that are not", function()
      local d = H.tmpdir()
      local p = launch({ HTTP, "--listen", "127.0.0.1:0", "--workers", "1", "--control",
        d .. "/control.sock", "--log-format", "json", "--", d .. "/access.log" },
        { control = d .. "/control.sock", workers = 1 })
      finally(function() p:stop() end)
      assert.matches("^HTTP/1.1 500", H.http_get(p.addr, "/raise_binary"))
      H.wait_until(function() return p:log():find("bad byte", 1, true) end, 5, "the handler error in the log")
      for line in p:log():gmatch("[^\n]+") do
        assert(utf8.len(line), "a log line is not valid UTF-8: " .. line)
        assert.is_table(H.json.decode(line))
      end
    end)
  end)

  describe("--config", function()
    it("uses the file's settings, with the handler relative to the file", function()
      local p = launch({ "--config", CONFIG })
      finally(function() p:stop() end)
      -- control = false: no socket; the handler reports the settings.
      -- the settings line follows "listening on" in the log: wait for it
      local line = H.wait_until(function()
        return p:log():match("[^\n]*worker%(s%)[^\n]*")
      end, 10, "the pool's settings line")
      assert.matches("3 worker%(s%), concurrency 2, policy round_robin", line)
      assert.not_matches("control /", p:log())
      local a = kv(H.wait_until(function()
        local r = H.request(p.addr, "")
        return r and r:find("\nend\n") and r
      end, 10, "an answer from the handler"))
      assert.equal("3", a.workers)
      assert.equal("round_robin", a.policy)
      assert.matches("^%d+ free 1 2$", a.me)   -- 1 of capacity 2
      assert.equal("from-config two", a.args)
    end)

    it("lets flags on the command line win over the file", function()
      local d = H.tmpdir()
      local ctl = d .. "/control.sock"
      local p = launch({ "--config", CONFIG, "--workers", "1", "--policy", "first_free",
        "--listen", "127.0.0.1:0", "--control", ctl, "--", "from-cli" }, { control = ctl, workers = 1 })
      finally(function() p:stop() end)
      local a = kv(H.request(p.addr, ""))
      assert.equal("1", a.workers)
      assert.equal("first_free", a.policy)
      assert.matches("^1 free 1 2$", a.me)       -- capacity 2: still from the file
      assert.equal("from-cli", a.args)
      local st = assert(p:status())
      assert.equal(1, #st.workers)
    end)

    it("refuses unknown keys and wrong types, naming the file and the key", function()
      local d = H.tmpdir()
      local bad = H.writefile(d .. "/bad.lua", 'return { handler = "app.lua", wrokers = 2 }')
      local code, _, err = H.run_pool("run --config " .. H.quote(bad))
      assert.equal(1, code)
      assert.equal(("pool: %s: unknown setting 'wrokers' (settings are the long flags with _ for -)\n"):format(bad), err)
      local typ = H.writefile(d .. "/type.lua", 'return { workers = "three" }')
      code, _, err = H.run_pool("run --config " .. H.quote(typ))
      assert.equal(1, code)
      assert.matches(typ .. ": setting 'workers' must be N or MIN-MAX with 1 <= MIN <= MAX <= 256 (got 'three')", err, 1, true)
      local nt = H.writefile(d .. "/nt.lua", 'return 42')
      code, _, err = H.run_pool("check --config " .. H.quote(nt))
      assert.equal(1, code)
      assert.matches(nt .. " must return a table of settings (got number)", err, 1, true)
      code, _, err = H.run_pool("check --config " .. H.quote(bad))
      assert.equal(1, code)
      assert.matches("unknown setting 'wrokers'", err, 1, true)
    end)

    it("pool check --config validates the file and its (relative) handler", function()
      local code, out, err = H.run_pool("check --config " .. CONFIG)
      assert.equal(0, code, err)
      assert.equal(CONFIG .. ": ok\n", out)
      -- The handler is looked up next to the file, not in the cwd.
      local d = H.tmpdir()
      local cfg = H.writefile(d .. "/c.lua", 'return { handler = "missing.lua" }')
      code, _, err = H.run_pool("check --config " .. H.quote(cfg))
      assert.equal(2, code)
      assert.equal(("pool: cannot open script '%s/missing.lua' (No such file or directory)\n"):format(d), err)
    end)
  end)

  describe("pool top", function()
    it("prints -n frames of the worker table, with no escape codes when not a tty", function()
      local p = H.start_pool{ script = PEER, workers = 2 }
      finally(function() p:stop() end)
      assert.matches("inet", H.request(p.addr, "x\n"))
      local pids = p:worker_pids()
      local code, out, err = H.run_pool("top -n 2 --interval 0.2 --control " .. H.quote(p.control))
      assert.equal(0, code, err)
      assert.is_nil(out:find("\27", 1, true))
      local frames = {}
      for f in (out .. "\n"):gmatch("(.-\n)\n") do frames[#frames + 1] = f end
      assert.equal(2, #frames, out)
      for k, f in ipairs(frames) do
        assert.matches("^pool " .. p.pid .. "  policy least_conn", f)
        assert.matches("\n%s*ID%s+PID%s+STATE%s+ACTIVE%s+CAPACITY%s+SERVED%s+RATE/s%s+RSS MiB%s+RESTARTS\n", f)
        local rows = 0
        for line in f:gmatch("[^\n]+") do
          local t = {}
          for x in line:gmatch("%S+") do t[#t + 1] = x end
          if tonumber(t[1]) and t[3] and t[3]:match("^%a+$") then
            rows = rows + 1
            local id = tonumber(t[1])
            assert.equal(pids[id], tonumber(t[2]))
            assert.equal("free", t[3])
            -- ACTIVE CAPACITY SERVED, [RATE/s from the 2nd frame], RSS, RESTARTS
            assert.equal(k == 1 and 8 or 9, #t, line)
            for i = 4, #t do assert(tonumber(t[i]), "not a number: " .. t[i] .. " in " .. line) end
            assert.is_true(tonumber(t[#t - 1]) > 0)   -- RSS MiB
          end
        end
        assert.equal(2, rows, f)
      end
      code, _, err = H.run_pool("top --interval 0.01 --control " .. H.quote(p.control))
      assert.equal(2, code)
      assert.matches("--interval must be a number of seconds >= 0.05 (got '0.01')", err, 1, true)
      code, _, err = H.run_pool("top -n 0 --control " .. H.quote(p.control))
      assert.equal(2, code)
      assert.matches("-n must be a positive integer (got '0')", err, 1, true)
    end)
  end)

  describe("http access_log", function()
    it("appends one combined-format line per request, with status and bytes", function()
      local d = H.tmpdir()
      local log = d .. "/access.log"
      local p = H.start_pool{ script = HTTP, args = { log }, workers = 2 }
      finally(function() p:stop() end)
      assert.matches("^HTTP/1.1 200", H.http_get(p.addr, "/small",
        'User-Agent: tester "7"\r\nReferer: http://example.test/from\r\n'))
      assert.matches("^HTTP/1.1 404", H.http_get(p.addr, "/missing"))
      assert.matches("^HTTP/1.1 200", H.http_get(p.addr, "/bytes?n=1000"))
      assert.matches("^HTTP/1.1 200", H.request(p.addr, "HEAD /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
      -- Two requests on one keep-alive connection: two lines.
      local r = H.request(p.addr, "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
      assert.equal(2, select(2, r:gsub("HTTP/1.1 200", "")))
      local text = H.wait_until(function()
        local s = H.readfile(log) or ""
        return select(2, s:gsub("\n", "")) >= 6 and s
      end, 5, "six access log lines")
      local lines = {}
      for line in text:gmatch("[^\n]+") do
        local ip, date, method, target, version, status, bytes, ref, ua = line:match(
          '^(%S+) %- %- %[(%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d %+0000)%] "(%u+) (%S+) HTTP/(1%.%d)" (%d%d%d) (%d+) "(.-)" "(.-)"$')
        assert(ip, "not a combined log line: " .. line)
        assert.equal("127.0.0.1", ip)
        lines[target .. " " .. method] = { status = tonumber(status), bytes = tonumber(bytes),
          ref = ref, ua = ua, version = version, date = date }
      end
      assert.equal(6, select(2, text:gsub("\n", "")))
      assert.same({ status = 200, bytes = 6, ref = "http://example.test/from", ua = 'tester \\"7\\"',
        version = "1.1", date = lines["/small GET"].date }, lines["/small GET"])
      assert.equal(404, lines["/missing GET"].status)
      assert.equal(5, lines["/missing GET"].bytes)
      assert.equal(1000, lines["/bytes?n=1000 GET"].bytes)
      assert.equal(0, lines["/small HEAD"].bytes)
      assert.equal("-", lines["/a GET"].ref)
      assert.equal("-", lines["/a GET"].ua)
      assert.equal("1.0", lines["/b GET"].version)
    end)
  end)

  describe("PROXY protocol listener", function()
    local SIG = "\r\n\r\n\0\r\nQUIT\n"

    local function ip4(s)
      local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
      return string.char(a, b, c, d)
    end
    local DB8_7 = "\32\1\13\184" .. ("\0"):rep(11) .. "\7"    -- 2001:db8::7
    local DB8_1 = "\32\1\13\184" .. ("\0"):rep(11) .. "\1"

    local function v2(cmd, fam, addr)
      return SIG .. string.char(cmd, fam) .. string.pack(">I2", #addr) .. addr
    end

    -- Send header .. "hello\n"; return what the handler saw and echoed.
    local function through(addr, header)
      local fd = assert(fdpool.connect(addr, 5))
      fd:settimeout(5)
      assert(fd:write(header .. "hello\n"))
      local peer, err = fd:read("l")
      local echo = fd:read("l")
      fd:close()
      return peer, echo, err
    end

    -- The connection is closed without reaching a handler (EOF or RST).
    local function refused(fd)
      fd:settimeout(8)
      local data, err = fd:read("a")
      fd:close()
      if data == nil then
        assert.matches("reset", err)
      else
        assert.equal("", data)
      end
    end

    local p
    setup(function()
      p = H.start_pool{ script = PEER, workers = 2, listen = "127.0.0.1:0,proxy" }
    end)
    teardown(function() p:stop() end)

    it("v1 TCP4 and TCP6: getpeername() is the header's source", function()
      local peer, echo = through(p.addr, "PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n")
      assert.equal("203.0.113.7 4242 inet", peer)
      assert.equal("got hello", echo)   -- exactly the header was consumed
      peer, echo = through(p.addr, "PROXY TCP6 2001:db8::7 2001:db8::1 4243 443\r\n")
      assert.equal("2001:db8::7 4243 inet6", peer)
      assert.equal("got hello", echo)
    end)

    it("v2 PROXY IPv4 and IPv6 (with TLVs after the addresses)", function()
      local peer, echo = through(p.addr, v2(0x21, 0x11,
        ip4("198.51.100.9") .. ip4("192.0.2.1") .. string.pack(">I2I2", 5151, 80)))
      assert.equal("198.51.100.9 5151 inet", peer)
      assert.equal("got hello", echo)
      peer, echo = through(p.addr, v2(0x21, 0x21,
        DB8_7 .. DB8_1 .. string.pack(">I2I2", 6161, 443)))
      assert.equal("2001:db8::7 6161 inet6", peer)
      assert.equal("got hello", echo)
      -- A TLV (PP2_TYPE_AUTHORITY "example.test") is skipped with the header.
      peer, echo = through(p.addr, v2(0x21, 0x11, ip4("198.51.100.10") .. ip4("192.0.2.1")
        .. string.pack(">I2I2", 7171, 80) .. "\2" .. string.pack(">s2", "example.test")))
      assert.equal("198.51.100.10 7171 inet", peer)
      assert.equal("got hello", echo)
    end)

    it("v1 UNKNOWN and v2 LOCAL keep the real peer", function()
      for _, h in ipairs { "PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                           v2(0x20, 0x00, ""), v2(0x21, 0x00, "") } do
        local peer, echo = through(p.addr, h)
        assert.matches("^127%.0%.0%.1 %d+ inet$", peer)
        assert.equal("got hello", echo)
      end
    end)

    it("closes a connection with a garbage header, or none within 5 s", function()
      local silent = assert(fdpool.connect(p.addr, 5))
      local t0 = H.clock()
      local served0 = H.sum_workers(assert(p:status()), "served")
      for _, h in ipairs {
        "GET / HTTP/1.0\r\n\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",           -- port out of range
        "PROXY TCP4 1.2.3.400 5.6.7.8 1 80\r\n",             -- not an address
        "PROXY TCP4 " .. ("1"):rep(120) .. "\r\n",           -- over 107 bytes
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",                  -- LF without CR
        SIG .. "\17\17\0\0",                                 -- version 1 in a v2 header
        SIG .. "\33\17\1\0" .. ("\0"):rep(256),              -- longer than 232 bytes
      } do
        local fd = assert(fdpool.connect(p.addr, 5))
        fd:write(h)
        refused(fd)
      end
      -- Nobody was handed to a worker.
      assert.equal(served0, H.sum_workers(assert(p:status()), "served"))
      refused(silent)
      local waited = H.clock() - t0
      assert.is_true(waited >= 4.5 and waited < 7.5, "closed after " .. waited .. " s")
    end)

    -- Regression test (was a bug, now fixed).
    it("waits for the rest of a split header without spinning", function()
      local fd = assert(fdpool.connect(p.addr, 5))
      finally(function() fd:close() end)
      fd:settimeout(5)
      fd:write("PROXY TCP4 203.0.1")
      local c0, t0 = cpu_seconds(p.pid), H.clock()
      H.sleep(0.5)   -- the time the master waits is what is measured
      local used = cpu_seconds(p.pid) - c0
      local wall = H.clock() - t0
      fd:write("13.8 192.0.2.1 4244 80\r\nhello\n")
      assert.equal("203.0.113.8 4244 inet", fd:read("l"))
      assert.equal("got hello", fd:read("l"))
      assert.is_true(used < 0.2 * wall, ("the master used %.2f s of CPU in %.2f s waiting"):format(used, wall))
    end)
  end)
end)
