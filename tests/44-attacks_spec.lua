-- tests/44-attacks_spec.lua: what hostile and careless clients and
-- handlers do, against the real build/pool: pipelined requests after
-- responses that must carry no body, a handler whose writes disagree
-- with its own Content-Length, half-closing clients in every mode.

package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"
local fdpool = require "fdpool"

-- Send bytes, half-close (SHUT_WR), read until the server closes.
local function exchange(addr, bytes)
  local fd = assert(fdpool.connect(addr, 10))
  assert(fd:write(bytes))
  assert(fd:shutdown("send"))
  local data, err = fd:read("a")
  fd:close()
  return assert(data, err)
end

-- Split a byte stream into responses as a client reads them: the head,
-- then a body by the RFC 9112 6.3 rules (none after HEAD, 1xx, 204, 304;
-- chunked; Content-Length; else to the end). Returns a list of
-- { status, body } and whatever bytes did not frame.
local function responses(s, methods)
  local out, i = {}, 1
  while i <= #s do
    local hend = s:find("\r\n\r\n", i, true)
    if not hend then break end
    local head = s:sub(i, hend + 1)
    local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d) "))
    if not status then break end
    i = hend + 4
    local body = ""
    local method = methods and methods[#out + 1] or "GET"
    local cl = head:match("\r\n[Cc]ontent%-[Ll]ength: *(%d+)")
    if method == "HEAD" or status == 204 or status == 304 or status < 200 then
      body = ""
    elseif head:lower():find("\r\ntransfer%-encoding: *chunked") then
      while true do
        local e = s:find("\r\n", i, true)
        if not e then return out, s:sub(i) end
        local n = tonumber(s:sub(i, e - 1), 16)
        if not n then return out, s:sub(i) end
        if n == 0 then i = e + 4; break end
        body = body .. s:sub(e + 2, e + 1 + n)
        i = e + 4 + n
      end
    elseif cl then
      body = s:sub(i, i + tonumber(cl) - 1)
      if #body < tonumber(cl) then
        out[#out + 1] = { status = status, body = body, short = true }
        return out, ""
      end
      i = i + tonumber(cl)
    else
      body = s:sub(i); i = #s + 1
    end
    out[#out + 1] = { status = status, body = body }
  end
  return out, s:sub(i)
end

local function get(path, extra)
  return ("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n"):format(path, extra or "")
end

describe("responses without a body keep a pipelined connection in sync", function()
  local pool

  setup(function()
    pool = H.start_pool({ script = "tests/fixtures/attacks.lua", workers = 2 })
    assert(pool.addr, "pool did not start: " .. pool:log())
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  for _, path in ipairs { "/204", "/304", "/204w", "/304w" } do
    it(path .. ": no body bytes, no Transfer-Encoding; the next request is answered", function()
      local raw = exchange(pool.addr, get(path) .. get("/next"))
      local rs, rest = responses(raw)
      assert.equal(2, #rs, raw)
      assert.equal(tonumber(path:match("%d+")), rs[1].status)
      assert.is_nil(raw:lower():find("transfer-encoding", 1, true), raw)
      assert.equal(200, rs[2].status)
      assert.equal("path /next\n", rs[2].body)
      assert.equal("", rest)
    end)
  end

  it("a HEAD between GETs: head only, in order", function()
    local raw = exchange(pool.addr, get("/a") .. ("HEAD /b HTTP/1.1\r\nHost: t\r\n\r\n") .. get("/c"))
    local rs, rest = responses(raw, { "GET", "HEAD", "GET" })
    assert.equal(3, #rs, raw)
    assert.equal("path /a\n", rs[1].body)
    assert.equal("", rs[2].body)
    assert.equal("path /c\n", rs[3].body)
    assert.equal("", rest)
  end)

  it("a handler that writes less than its Content-Length: the connection closes, nothing more is sent", function()
    local raw = exchange(pool.addr, get("/short") .. get("/next"))
    local rs, rest = responses(raw)
    assert.equal(1, #rs, raw)
    assert.is_true(rs[1].short, raw)
    assert.equal("abc", rs[1].body)
    assert.equal("", rest)
  end)

  it("a handler that writes more than its Content-Length: the excess is not sent, the connection closes", function()
    local raw = exchange(pool.addr, get("/long") .. get("/next"))
    local rs, rest = responses(raw)
    assert.equal(1, #rs, raw)
    assert.equal("abc", rs[1].body)
    assert.equal("", rest)
  end)

  it("a handler that fails after write() started: the chunked body is left unterminated and the connection closes", function()
    local raw = exchange(pool.addr, get("/err") .. get("/next"))
    assert.truthy(raw:find("partial", 1, true), raw)
    assert.is_nil(raw:find("0\r\n\r\n", 1, true), raw)
    assert.is_nil(raw:find("path /next", 1, true), raw)
  end)

  it("the pool logged only the handler error it was asked for", function()
    local bad = H.unexpected_errors(pool:log(), { "handler fails after write" })
    assert.same({}, bad)
  end)
end)

describe("an error answer reaches a client still sending (lingering close)", function()
  local pool

  setup(function()
    pool = H.start_pool({ script = "tests/fixtures/attacks.lua", workers = 2 })
    assert(pool.addr, "pool did not start: " .. pool:log())
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  -- Write all of bytes (no half-close), then read the answer: the server
  -- must not reset the connection while bytes it did not read are queued.
  local function send_then_read(bytes)
    local fd = assert(fdpool.connect(pool.addr, 10))
    assert(fd:settimeout(10))
    assert(fd:write(bytes))
    local data, err = fd:read("a")
    fd:close()
    return data, err
  end

  it("2000 header lines (16 KiB past max_head) get 431, not a reset", function()
    local h = {}
    for i = 1, 2000 do h[i] = ("X-%d: v\r\n"):format(i) end
    for _ = 1, 5 do
      local data, err = send_then_read("GET / HTTP/1.1\r\nHost: t\r\n" .. table.concat(h) .. "\r\n")
      assert(data, err)
      assert.equal("HTTP/1.1 431 ", data:sub(1, 13))
    end
  end)

  it("a 512 KiB body over max_body gets 413, not a reset", function()
    local body = ("x"):rep(512 * 1024)
    for _ = 1, 3 do
      local data, err = send_then_read("POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: "
        .. (#body * 4) .. "\r\n\r\n" .. body)
      assert(data, err)
      assert.equal("HTTP/1.1 413 ", data:sub(1, 13))
    end
  end)

  it("a handler that answers without reading a body on a Connection: close request: the answer arrives, not a reset", function()
    local body = ("x"):rep(900 * 1024)
    for _ = 1, 3 do
      local data, err = send_then_read("POST /ignored HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      assert(data, err)
      assert.equal("HTTP/1.1 200 ", data:sub(1, 13))
      assert.truthy(data:find("path /ignored\n", 1, true), data)
    end
  end)

  it("a handler that answers after its body failed to frame: the answer arrives, not a reset", function()
    for _ = 1, 3 do
      local data, err = send_then_read("POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "5;" .. ("e"):rep(100000) .. "\r\nhello\r\n0\r\n\r\n")
      assert(data, err)
      assert.truthy(data:find("got 0\n", 1, true), data)
    end
  end)

  it("a client that keeps sending after the answer is cut off and the worker serves on", function()
    -- A Python client (the test process would die of SIGPIPE): a head past
    -- max_head, then 1 KiB every ms until the server closes, at most 60 s.
    local host, port = pool.addr:match("^(.*):(%d+)$")
    local ok, _, out = H.run(([[timeout 60 python3 -c '
import socket, time
s = socket.create_connection(("%s", %s))
s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
try:
    while True:
        s.send(b"z" * 1024); time.sleep(0.001)
except OSError as e:
    print("server closed:", e.__class__.__name__)
']]):format(host, port))
    assert(ok, out)
    assert.truthy(out:find("server closed", 1, true), out)
    local data = H.http_get(pool.addr, "/after")
    assert.truthy(data and data:find("path /after", 1, true), data)
  end)
end)

describe("Expect: 100-continue", function()
  local pool

  setup(function()
    pool = H.start_pool({ script = "tests/fixtures/attacks.lua", workers = 1 })
    assert(pool.addr, "pool did not start: " .. pool:log())
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  it("a handler that never asks for the body: the answer says Connection: close, and the connection closes", function()
    local fd = assert(fdpool.connect(pool.addr, 10))
    assert(fd:settimeout(10))
    assert(fd:write("POST /nobody HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"))
    local data = assert(fd:read("a"))
    fd:close()
    assert.equal("HTTP/1.1 200 ", data:sub(1, 13))
    assert.is_nil(data:find("100 Continue", 1, true), data)
    assert.truthy(data:find("\r\nConnection: close\r\n", 1, true), data)
    assert.truthy(data:find("path /nobody\n", 1, true), data)
  end)

  it("a handler that reads the body: 100 Continue, then the answer, and the connection stays open", function()
    local fd = assert(fdpool.connect(pool.addr, 10))
    assert(fd:settimeout(10))
    assert(fd:write("POST /body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"))
    assert.equal("HTTP/1.1 100 Continue\r\n\r\n", fd:read(25))
    assert(fd:write("hello" .. get("/next") .. get("/last", "Connection: close\r\n")))
    local data = assert(fd:read("a"))
    fd:close()
    local rs = responses(data)
    assert.equal(3, #rs, data)
    assert.equal("got 5\n", rs[1].body)
    assert.equal("path /next\n", rs[2].body)
  end)
end)

describe("the --metrics listener under slowloris", function()
  local pool, metrics

  setup(function()
    pool = H.start_pool({ script = "tests/fixtures/attacks.lua", workers = 1,
      extra = { "--metrics", "127.0.0.1:0" } })
    assert(pool.addr, "pool did not start: " .. pool:log())
    metrics = H.wait_until(function()
      return pool:log():match("metrics on http://([^/%s]+)/metrics")
    end, 5, "the metrics listener")
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  it("with its 8 slots held by trickling heads, a 9th client reads 503, not a reset; then it serves again", function()
    local held = {}
    for i = 1, 8 do
      held[i] = assert(fdpool.connect(metrics, 10))
      assert(held[i]:write("GET /sta"))
    end
    local function probe()
      local fd = assert(fdpool.connect(metrics, 10))
      fd:settimeout(10)
      assert(fd:write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"))
      local data, err = fd:read("a")
      fd:close()
      return data, err
    end
    -- Once the master has taken all 8 (the first 503), every 9th is told.
    H.wait_until(function()
      local d = probe()
      return d and d:find("^HTTP/1.1 503 ")
    end, 10, "a 503 from the full listener")
    for _ = 1, 10 do
      local data, err = probe()
      assert(data, err)
      assert.matches("^HTTP/1.1 503 ", data)
    end
    for _, fd in ipairs(held) do fd:close() end
    H.wait_until(function()
      local d = probe()
      return d and d:find("^HTTP/1.1 200 ")
    end, 10, "/healthz once the slots are free")
    local st = assert(pool:status())
    assert.equal(0, st.workers[1].restarts)
  end)
end)

describe("a handler's response head cannot be split", function()
  local pool

  setup(function()
    pool = H.start_pool({ script = "tests/fixtures/attacks.lua", workers = 1 })
    assert(pool.addr, "pool did not start: " .. pool:log())
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  for _, path in ipairs { "/crlf", "/lf", "/name", "/ret-crlf", "/status", "/ret-status" } do
    it(path .. ": 500, nothing of the bad head sent, the connection closes", function()
      local raw = exchange(pool.addr, get(path) .. get("/next"))
      assert.matches("^HTTP/1.1 500 ", raw)
      assert.is_nil(raw:find("Injected", 1, true), raw)
      assert.is_nil(raw:find("smuggled", 1, true), raw)
      assert.is_nil(raw:find("path /next", 1, true), raw)
      local rs = responses(raw)
      assert.equal(1, #rs, raw)
    end)
  end

  it("sendfile with a 204 sends no file bytes; the next request is answered", function()
    local raw = exchange(pool.addr, get("/sf204") .. get("/next"))
    local rs, rest = responses(raw)
    assert.equal(2, #rs, raw)
    assert.equal(204, rs[1].status)
    assert.equal("path /next\n", rs[2].body)
    assert.equal("", rest)
  end)

  it("each refused head is logged as the handler's error, and the worker lives on", function()
    local n = select(2, pool:log():gsub("invalid response header", ""))
    assert.equal(4, n)
    n = select(2, pool:log():gsub("status must be an integer from 100 to 999", ""))
    assert.equal(2, n)
    assert.equal(0, assert(pool:status()).workers[1].restarts)
  end)
end)

describe("a worker's custom status fields in the text table", function()
  it("cannot add lines or terminal escapes to `pool status`", function()
    local dir = H.tmpdir()
    local script = H.writefile(dir .. "/setter.lua", [[
local fdpool = require "fdpool"
return {
  init = function()
    fdpool.worker.set("k\nfake", "v\n   9 99999 free  \27[2Jx\127")
  end,
  handle = function(conn) conn:send("x") end,
}
]])
    local p = H.start_pool({ script = script, workers = 1 })
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local st = H.wait_until(function()
      local s = p:status()
      return s and s.workers[1].fields and next(s.workers[1].fields) and s
    end, 5, "the custom field")
    -- JSON keeps the bytes (escaped); the table shows them as '?'.
    assert.equal("v\n   9 99999 free  \27[2Jx\127", st.workers[1].fields["k\nfake"])
    local code, out = H.run_pool("status --control " .. H.quote(p.control))
    assert.equal(0, code, out)
    assert.is_nil(out:find("\27", 1, true), out)
    assert.is_nil(out:find("\127", 1, true), out)
    assert.truthy(out:find(" k?fake=v?   9 99999 free  ?[2Jx?\n", 1, true), out)
    assert.is_nil(out:find("\n   9 ", 1, true), out)
  end)
end)

describe("pipelined responses", function()
  it("go out on TCP_NODELAY sockets (Nagle held each one after the first for the client's delayed ACK)", function()
    local p = H.start_pool({ script = "tests/fixtures/attacks.lua", workers = 1 })
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local host, port = p.addr:match("^(.*):(%d+)$")
    local wpid = assert(p:worker_pids()[1])
    local ok, _, out = H.run(("timeout 20 python3 tests/fixtures/nodelay.py %s %s %d"):format(host, port, wpid))
    assert(ok, out)
    if out:find("^skip:") then
      pending(out)
      return
    end
    assert.equal("nodelay=1\n", out)
  end)
end)

-- Regression test (was a bug, now fixed): bytes no request line could
-- begin with (a TLS hello on the plain port, binary junk, a version that
-- is not HTTP/x.y), with no line end yet, were held until head_timeout
-- (10 s) and then answered 408, as if the client were only slow. They
-- get 400 at once, in the default mode and with the master looking at
-- heads first (strict prefork, --concurrency 1).
describe("a request line none could finish", function()
  for _, mode in ipairs{ { "default", {} }, { "strict prefork", { concurrency = 1 } } } do
    it("is answered 400 at once (" .. mode[1] .. ")", function()
      local opts = { script = "tests/fixtures/attacks.lua", workers = 1 }
      for k, v in pairs(mode[2]) do opts[k] = v end
      local pool = H.start_pool(opts)
      finally(function() pool:stop() end)
      assert(pool.addr, "pool did not start: " .. pool:log())
      for _, junk in ipairs{ "\22\3\1\2\0\1\0\1\252\3\3" .. ("\0"):rep(40), "GET\0 / HTTP/1.1",
                             "GET /a\1b HTTP/1.1", "GET / FTP/1.1", "GET / HTTP/1.1\nHost: t" } do
        local fd = assert(fdpool.connect(pool.addr, 10))
        assert(fd:settimeout(5))     -- head_timeout is 10 s: well before it
        assert(fd:write(junk))
        local data, err = fd:read("a")
        fd:close()
        assert(data, ("%q: %s"):format(junk, tostring(err)))
        assert.equal("HTTP/1.1 400 ", data:sub(1, 13), ("%q"):format(junk))
      end
      -- a line still coming that could be a request is waited for
      local fd = assert(fdpool.connect(pool.addr, 10))
      assert(fd:settimeout(0.3))
      assert(fd:write("GET /a HTTP/1.1\r\nHost: t"))
      local data, err = fd:read("a")
      assert.is_nil(data)
      assert.matches("temporarily unavailable", err)   -- (the socket's timeout)
      assert(fd:write("\r\n\r\n"))
      assert(fd:settimeout(5))
      data = fd:read(12)
      fd:close()
      assert.equal("HTTP/1.1 ", data and data:sub(1, 9))
    end)
  end
end)
