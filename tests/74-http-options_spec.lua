-- tests/74-http-options_spec.lua: http.serve's options as an operator
-- sets them. A bad numeric option (a string, a negative, NaN, inf, a
-- fraction where a count is meant) stops `pool run` at start with one
-- line naming it, not a silent default in one loop and a limit in the
-- other. head_timeout = 0 turns the whole-head bound off: the first
-- head's waits then keep the conn's own timeout (--io-timeout), in the C
-- loop (a real conn) and in the Lua loop (fdpool.testing's conn) alike,
-- so a client that connects and sends nothing is still closed.

package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local function script(dir, opts)
  local path = dir .. "/app.lua"
  H.writefile(path, ([[
local http = require "fdpool.http"
return http.serve(function(req, res) res:send("ok\n") end, { %s })
]]):format(opts))
  return path
end

describe("http.serve's options", function()
  local cases = {
    { 'head_timeout = "5"', [[option 'head_timeout' must be a finite number >= 0, got string "5"]] },
    { "keepalive_timeout = -1", "option 'keepalive_timeout' must be a finite number >= 0, got -1" },
    { "body_timeout = 0", "option 'body_timeout' must be a finite number > 0, got 0" },
    { "head_timeout = 0/0", "option 'head_timeout' must be a finite number >= 0, got nan" },
    { "keepalive_timeout = math.huge", "option 'keepalive_timeout' must be a finite number >= 0, got inf" },
    { "max_body = -1", "option 'max_body' must be an integer >= 0, got -1" },
    { "max_head = 100.5", "option 'max_head' must be an integer >= 1, got 100.5" },
    { "max_head = 0", "option 'max_head' must be an integer >= 1, got 0" },
    { 'keepalive_requests = "10"', [[option 'keepalive_requests' must be an integer >= 0, got string "10"]] },
    { "max_upload = -5", "option 'max_upload' must be an integer >= 0, got -5" },
    { "body_min_rate = -1", "option 'body_min_rate' must be a finite number >= 0, got -1" },
    { "park = 1", "option 'park' must be a boolean, got number" },
    -- a string with a newline: still one line, the newline shown as \n
    { 'max_body = "1\\n2"', [[option 'max_body' must be an integer >= 0, got string "1\n2"]] },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1] .. " at start: exit 1, one line naming it", function()
      local path = script(H.tmpdir(), case[1])
      local code, out, err = H.run_pool(("run %s --listen 127.0.0.1:0 --workers 1 --no-control")
        :format(H.quote(path)), 15)
      assert.equals(1, code, err)
      assert.equals("", out)
      local last = err:match("([^\n]*)\n$")
      assert.equals("pool: http.serve: " .. case[2], last)
      assert.falsy(err:find("runtime error", 1, true), err)
    end)
  end

  it("accepts the documented special values (0: no head bound, no request cap)", function()
    local http = require "fdpool.http"
    assert.is_function(http.serve(function() end, { head_timeout = 0, keepalive_timeout = 0,
      keepalive_requests = 0, max_body = 0, body_min_rate = 0, max_head = 1e4 }))
    assert.is_function(http.serve(function() end, { head_timeout = 2.5, body_timeout = 0.5 }))
  end)
end)

describe("head_timeout = 0", function()
  it("keeps --io-timeout for a silent client in the C loop: 408, then closed", function()
    local dir = H.tmpdir()
    local p = H.start_pool{ script = script(dir, "head_timeout = 0"), workers = 1,
      extra = { "--io-timeout", "1", "--accept-filter", "none" } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local pid = p:worker_pids()[1]
    local fd = assert(fdpool.connect(p.addr, 10))
    -- the client's read gives up after 10 s: long past the 1 s io timeout
    local data = fd:read("a")
    fd:close()
    assert.truthy(data and data:match("^HTTP/1%.1 408 "), tostring(data))
    -- the worker is still the same and serves the next client
    local r = assert(H.http_get(p.addr, "/"))
    assert.truthy(r:match("^HTTP/1%.1 200 "), r)
    assert.same({ pid }, p:worker_pids())
  end)

  it("keeps the conn's timeout in the Lua loop (fdpool.testing's conn)", function()
    local http = require "fdpool.http"
    local testing = require "fdpool.testing"
    -- The timeout each head's read starts with (the in-memory conn waits
    -- for nothing: conn.timeout is what a real conn would wait).
    local function first_wait(opts)
      local c = testing.conn{ input = "", timeout_after_input = true }
      local seen, rr = nil, c.readrequest
      c.readrequest = function(self, ...)
        seen = seen or self.timeout
        return rr(self, ...)
      end
      local out = testing.run(http.serve(function(req, res) res:send("ok\n") end, opts), c)
      assert.truthy(out:match("^HTTP/1%.1 408 "), out)
      return seen
    end
    assert.equals(60, testing.conn{}.timeout)       -- the conn's own
    -- not settimeout(0), an instant timeout for every wait
    assert.equals(60, first_wait{ head_timeout = 0 })
    assert.equals(3, first_wait{ head_timeout = 3 })
  end)
end)

-- Strict prefork parks keep-alive connections; with an access_log the
-- parking is Lua's (after), which called conn:park(keepalive_timeout)
-- even where park refuses the value (0 and >= 86400, both valid
-- keepalive_timeouts): every keep-alive answer was followed by a handler
-- error and a reset connection. Those values now keep the connection in
-- the worker, as the C loop's own parking does.
describe("keepalive_timeout park cannot take, with an access_log, strict prefork", function()
  for _, ka in ipairs{ "0", "86400" } do
    it("keepalive_timeout = " .. ka .. ": keep-alive requests answered, no handler error", function()
      local dir = H.tmpdir()
      local p = H.start_pool{ script = script(dir,
        "keepalive_timeout = " .. ka .. ", access_log = function() end"),
        workers = 1, concurrency = 1 }
      finally(function() p:stop() end)
      assert(p.addr, p:log())
      local c = H.raw_client(p.addr)
      finally(function() c:close() end)
      local get = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
      -- pipelined: the second is there at once (keepalive_timeout = 0)
      c:send(get .. get)
      for i = 1, 2 do
        local st, body = c:response()
        assert.equals(200, st, ("answer %d: %s\n%s"):format(i, tostring(body), p:log()))
      end
      assert.same({}, H.unexpected_errors(p:log()))
    end)
  end
end)
