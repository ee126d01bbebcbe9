-- tests/83-access-log_spec.lua: fdpool.http's access log when it cannot
-- write, against the real build/pool serving tests/fixtures/http_close.lua.
-- (a) A full disk that frees up again: a tmpfs of 64 KiB (root only; the
-- spec is pending otherwise) filled, requests answered while lines are
-- dropped (one error line in the pool's log), space freed, then the
-- recovery line and every new line whole in the file. (b) A handler's
-- own access_log function that raises: every request answered and the
-- connection kept, the error logged (rate-limited), the worker the same.
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local FIXTURE = "tests/fixtures/http_close.lua"

-- n requests for path..i on one keep-alive connection, each answered 200
-- "ok" with no Connection: close.
local function serve(addr, path, n)
  local fd = assert(fdpool.connect(addr, 10))
  for i = 1, n do
    assert(fd:write(("GET %s%d HTTP/1.1\r\nHost: t\r\nUser-Agent: ua-%d\r\n\r\n"):format(path, i, i)))
    local st, h, body = H.read_response(fd)
    assert.equal(200, st, path .. i)
    assert.equal("ok\n", body)
    assert.is_nil(h.connection, path .. i .. ": Connection: " .. tostring(h.connection))
  end
  fd:close()
end

-- A combined-format line of this spec's requests, whole.
local LINE = '^%S+ %- %- %[[^%]]+%] "GET (/%a+%d+) HTTP/1%.1" 200 3 "%-" "ua%-%d+"$'

describe("the access log on a full disk", function()
  local is_root = (io.popen("id -u"):read("l")) == "0"

  it("drops lines while full, says so, and writes whole lines again once space is freed", function()
    if not is_root then
      pending("needs root to mount a small tmpfs (mount -t tmpfs -o size=64k)")
      return
    end
    local dir = H.tmpdir() .. "/fs"
    assert(os.execute("mkdir -p " .. H.quote(dir)))
    if not os.execute(("mount -t tmpfs -o size=64k tmpfs %s 2>/dev/null"):format(H.quote(dir))) then
      pending("mount -t tmpfs failed (no CAP_SYS_ADMIN in this container?)")
      return
    end
    H.defer(finally, function()
      os.execute(("umount %s 2>/dev/null || umount -l %s"):format(H.quote(dir), H.quote(dir)))
    end)
    local path = dir .. "/access.log"
    local p = H.start_pool { script = FIXTURE, workers = 1, args = { "alog-path", path } }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    local pid = p:worker_pids()[1]
    serve(p.addr, "/before", 3)
    H.wait_until(function() return H.count(H.readfile(path) or "", "/before3") == 1 end,
      5, "the lines before the disk fills")
    -- Fill the file system (dd stops at ENOSPC; without the ASan run's
    -- LD_PRELOAD, under which dd aborts at its first aligned_alloc).
    os.execute(("unset LD_PRELOAD; dd if=/dev/zero of=%s/fill bs=1024 2>/dev/null"):format(H.quote(dir)))
    serve(p.addr, "/full", 100)
    H.wait_until(function() return p:log():find("access log " .. path .. ": No space left", 1, true) end,
      5, "the error line about dropped lines")
    assert.truthy(p:log():find("access log " .. path
      .. ": No space left on device; 1 line(s) dropped", 1, true), p:log())
    -- Space again.
    assert(os.remove(dir .. "/fill"))
    serve(p.addr, "/after", 20)
    H.wait_until(function() return p:log():find("writing again", 1, true) end, 5,
      "the recovery line")
    local dropped = tonumber(p:log():match("access log " .. path:gsub("%p", "%%%0")
      .. ": writing again, (%d+) line%(s%) dropped"))
    assert(dropped and dropped >= 1, p:log())
    assert.same({ pid }, p:worker_pids())
    -- The file: every line from /after whole, each one once, in order.
    local text = assert(H.readfile(path))
    assert.equal("\n", text:sub(-1), "the file ends with a whole line")
    local after, full = {}, 0
    for l in text:gmatch("[^\n]*\n") do
      l = l:sub(1, -2)
      local target = l:match(LINE)
      if target and target:find("^/after") then
        after[#after + 1] = target
      elseif target and target:find("^/full") then
        full = full + 1
      elseif l:find("/after", 1, true) then
        error("a torn /after line: " .. ("%q"):format(l))
      end
    end
    local want = {}
    for i = 1, 20 do want[i] = "/after" .. i end
    assert.same(want, after)
    -- every /full request was either logged whole or counted as dropped
    -- (one cut short by the full disk is counted as dropped too)
    assert.is_true(full + dropped >= 100, ("%d logged + %d dropped"):format(full, dropped))
    assert.same({}, H.unexpected_errors(p:log(), { "access log " .. path:gsub("%p", "%%%0") }))
    assert.equal(0, p:stop())
  end)
end)

describe("the access log line of a request answered with an error", function()
  -- Regression test (was a bug, now fixed): a handler that raised got
  -- its 500, but the line was written only after the lingering close
  -- (when the client closed, up to 5 s later), with "-" for the address
  -- (the socket closed by then) and 0 for the body bytes.
  it("is written at once, with the client's address and the body's bytes", function()
    local dir = H.tmpdir()
    local path = dir .. "/access.log"
    local p = H.start_pool { script = FIXTURE, workers = 1, args = { "alog-path", path } }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() fd:close() end)
    assert(fd:write("GET /boom HTTP/1.1\r\nHost: t\r\nUser-Agent: ua-1\r\n\r\n"))
    local st, _, body = H.read_response(fd)
    assert.equal(500, st)
    -- The client keeps its end open: the line must not wait for it.
    local line = H.wait_until(function()
      return (H.readfile(path) or ""):match("[^\n]*GET /boom[^\n]*")
    end, 3, "the access log line while the client is still connected")
    assert.equal(('127.0.0.1 - - [%s] "GET /boom HTTP/1.1" 500 %d "-" "ua-1"'):format(
      line:match("%[([^%]]+)%]"), #body), line)
    assert.equal(0, p:stop())
  end)
end)

describe("an access_log function that raises", function()
  it("answers every request, keeps the connection, logs the error rate-limited", function()
    local dir = H.tmpdir()
    local path = dir .. "/lines"
    local p = H.start_pool { script = FIXTURE, workers = 1, args = { "alog-raise", path } }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    local pid = p:worker_pids()[1]
    serve(p.addr, "/ok", 2)
    serve(p.addr, "/raise", 50)   -- (/raise1 .. /raise50 all raise)
    serve(p.addr, "/ok", 1)
    H.wait_until(function() return H.count(H.readfile(path) or "", "\n") == 3 end, 5,
      "the three lines the function did write")
    H.wait_until(function() return p:log():find("access log function", 1, true) end, 5,
      "the error line")
    local log = p:log()
    local n = H.count(log, "access log function")
    assert.is_true(n >= 1 and n <= 2, log)          -- once, then once a minute
    assert.truthy(log:find("access log boom", 1, true), log)
    assert.same({ pid }, p:worker_pids())
    assert.same({}, H.unexpected_errors(log, { "access log function" }))
    assert.equal(0, p:stop())
  end)

  it("with an error value whose __tostring raises too: the same", function()
    local dir = H.tmpdir()
    local path = dir .. "/lines"
    local p = H.start_pool { script = FIXTURE, workers = 1, args = { "alog-obj", path } }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    local pid = p:worker_pids()[1]
    serve(p.addr, "/raise", 5)    -- one connection: each answered, kept
    serve(p.addr, "/ok", 1)
    H.wait_until(function() return p:log():find("access log function", 1, true) end, 5,
      "the error line")
    local log = p:log()
    assert.truthy(log:find("access log function: (an error table); 1 line(s) dropped", 1, true), log)
    assert.same({ pid }, p:worker_pids())
    assert.same({}, H.unexpected_errors(log, { "access log function" }))
    assert.equal(0, p:stop())
  end)

  it("on every request (a function that always raises): the same", function()
    local p = H.start_pool { script = FIXTURE, workers = 1, args = { "alog-all", "/nonexistent" } }
    H.defer(finally, function() p:stop() end)
    assert(p.addr, p:log())
    local pid = p:worker_pids()[1]
    serve(p.addr, "/x", 30)
    -- a handler's error and an unread body: the reply and its log line
    local r = assert(H.http_get(p.addr, "/boom"))
    assert.truthy(r:match("^HTTP/1%.1 500 "), r)
    assert.same({ pid }, p:worker_pids())
    H.wait_until(function() return p:log():find("access log function", 1, true) end, 5,
      "the error line")
    assert.same({}, H.unexpected_errors(p:log(), { "access log function", "http handler error" }))
    assert.equal(0, p:stop())
  end)
end)
