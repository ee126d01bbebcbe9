-- tests/71-res-review_spec.lua: a review of res:header/res:send's fast
-- paths in C (src/lhttp.c): what an attacker or an operator can do to
-- them. The header check remembers strings found valid by address (kept
-- alive meanwhile): a string made per request, freed, and another one
-- made at its place must still be checked. A response the kernel does
-- not take at once (a client that does not read) arrives whole, head
-- past the 2 KiB buffer included; a client resetting mid-response costs
-- the worker nothing. A res whose conn is not a real one is refused, not
-- written through.
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local http = require "fdpool.http"
local H = require "helpers"

local ASAN = H.BUILD ~= "build"

-- The server side's send queue (bytes) of the connections to port.
local function tx_queue(port)
  local max = 0
  for line in io.lines("/proc/net/tcp") do
    local lport, st, txq = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x%x) (%x+):")
    if lport and tonumber(lport, 16) == port and st == "01" then
      max = math.max(max, tonumber(txq, 16))
    end
  end
  return max
end

describe("res:send reviewed", function()
  it("checks strings made per request, however the allocator reuses their memory", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
local function unq(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
return http.serve(function(req, res)
  local q = unq(req.query or "")
  -- long strings (not interned): each a new object, freed after the
  -- request; collected now so the next ones may take their places
  local p = req.path
  if p == "/v" then
    res:header("X-V", q)
    res:header("X-W", q .. "")
    res:header("X-L", { q, q:sub(1) })
  elseif p == "/n" then
    res:header(q, "v")
  elseif p == "/num" then
    res:header("X-N", tonumber(q))
  elseif p == "/ts" then
    -- (a list's element: a table value is a list)
    res:header("X-T", { setmetatable({}, { __tostring = function() return q end }) })
  end
  collectgarbage("collect")
  res:send("ok\n")
end)
]])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    local function ask(target)
      local r = assert(H.request(pool.addr, "GET " .. target
        .. " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
      return r:match("^HTTP/1.1 (%d+)"), r
    end
    local n = ASAN and 20 or 150
    for i = 1, n do
      -- valid and invalid strings of one length (so one size class)
      local len = 41 + i % 88
      local good = ("g"):rep(len - 1) .. (i % 10)
      local bad = ("b"):rep(len - 3) .. "%0d%0a" .. (i % 10)
      local st, r = ask("/v?" .. good)
      assert.equal("200", st, r)
      assert.equal(1, H.count(r, "\r\nX-V: " .. good .. "\r\n"), r)
      assert.equal(2, H.count(r, "X-L: " .. good .. "\r\n"), r)
      st, r = ask("/v?" .. bad)
      assert.equal("500", st, r)
      st = ask("/n?" .. ("N"):rep(len))
      assert.equal("200", st)
      st = ask("/n?" .. ("N"):rep(len - 3) .. "%0d%0aI")
      assert.equal("500", st)
      st, r = ask("/ts?" .. good)
      assert.equal("200", st, r)
      assert.equal(1, H.count(r, "\r\nX-T: " .. good .. "\r\n"), r)
      st, r = ask("/ts?" .. bad)
      assert.equal("500", st, r)
    end
    assert.equal("200", (ask("/num?12")))
    assert.equal(0, assert(pool:status()).workers[1].restarts)
  end)

  -- The head past the 2 KiB buffer (here past the socket buffers too)
  -- and the body: what writev did not take goes out once the client
  -- reads, byte for byte, then the next pipelined response.
  it("sends a whole response to a client that reads only after the server's send queue filled", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
local kb = {}
for i = 1, 64 do kb[i] = ("%04d"):format(i) .. ("h"):rep(1020) end
local body = {}
for i = 1, 4096 do body[i] = ("%08d"):format(i) .. ("b"):rep(1016) end
body = table.concat(body)
return http.serve(function(req, res)
  if req.path == "/bighead" then
    local list = {}
    for i = 1, 3 * 1024 do list[i] = kb[(i - 1) % 64 + 1] end
    res:header("X-Big", list)
    return res:send("tail\n")
  end
  res:header("X-Pad", ("p"):rep(3000))
  res:send(body)
end)
]])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    local port = tonumber(pool.addr:match(":(%d+)$"))
    local body = {}
    for i = 1, 4096 do body[i] = ("%08d"):format(i) .. ("b"):rep(1016) end
    body = table.concat(body)
    local fd = assert(fdpool.connect(pool.addr, 10))
    assert(fd:write("GET /big HTTP/1.1\r\nHost: h\r\n\r\n"
      .. "GET /bighead HTTP/1.1\r\nHost: h\r\n\r\n"
      .. "GET /end HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
    -- the server could not write it all: its send queue holds bytes
    H.wait_until(function() return tx_queue(port) > 0 end, 10, "a full send queue")
    local r = fd:read("a")
    fd:close()
    local answers = {}
    local pos = 1
    while pos <= #r do
      local hs, he = r:find("\r\n\r\n", pos, true)
      assert.truthy(hs, "a head at " .. pos)
      local head = r:sub(pos, he)
      local len = tonumber(head:match("\r\nContent%-Length: (%d+)\r\n"))
      answers[#answers + 1] = { head, r:sub(he + 1, he + len) }
      pos = he + len + 1
    end
    assert.equal(3, #answers)
    assert.equal(body, answers[1][2])
    assert.equal(1, H.count(answers[1][1], "\r\nX-Pad: " .. ("p"):rep(3000) .. "\r\n"))
    assert.equal(3 * 1024, H.count(answers[2][1], "\r\nX-Big: "))
    assert.equal("tail\n", answers[2][2])
    -- in the list's order
    local first = answers[2][1]:find("\r\nX-Big: 0001" .. ("h"):rep(1020) .. "\r\n", 1, true)
    local last = answers[2][1]:find("\r\nX-Big: 0064" .. ("h"):rep(1020) .. "\r\nDate: ", 1, true)
    assert.truthy(first and last and first < last)
    assert.equal(body, answers[3][2])
    assert.equal(0, assert(pool:status()).workers[1].restarts)
  end)

  it("survives clients that reset in the middle of a response", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [[
local http = require "fdpool.http"
local body = ("z"):rep(8 * 1024 * 1024)
return http.serve(function(req, res)
  if req.path == "/small" then return res:send("small\n") end
  local ok, err = res:send(body)
  if req.path == "/check" then
    -- the client is gone: false, "closed" (never raises)
    assert(ok == false and err, tostring(ok) .. " " .. tostring(err))
  end
end)
]])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    for _ = 1, ASAN and 3 or 10 do
      local fd = assert(fdpool.connect(pool.addr, 10))
      assert(fd:write("GET /check HTTP/1.1\r\nHost: h\r\n\r\n"))
      assert(fd:read(4096))
      -- unread bytes in the receive queue: close sends a RST
      fd:close()
    end
    local r = assert(H.http_get(pool.addr, "/small"))
    assert.matches("^HTTP/1.1 200 ", r)
    assert.matches("small\n$", r)
    assert.equal(0, assert(pool:status()).workers[1].restarts)
    assert.falsy(pool:log():find("http handler error", 1, true), pool:log())
  end)

  -- The error names the header refused. The name was kept by address
  -- only (the headers table "keeping it alive"), but a later header's
  -- __tostring (a list element's) may drop it from the table and collect
  -- it: the message then read freed memory (ASan: heap-use-after-free).
  it("names a refused header in its error even when a later header's __tostring freed the name", function()
    local dir = H.tmpdir()
    local app = H.writefile(dir .. "/app.lua", [==[
local http = require "fdpool.http"
return http.serve(function(req, res)
  for i = 1, 1000 do
    local h = {}
    local held = { ("X-Bad\r\nName-"):rep(8) .. i .. "-" .. req.path }  -- a long string
    h[held[1]] = "v"
    h["X-List"] = { setmetatable({}, { __tostring = function()
      h[held[1]] = nil
      held[1] = nil
      collectgarbage()
      collectgarbage()
      return "late"
    end }) }
    if next(h) ~= "X-List" then     -- the bad name first in traversal order
      res._headers = h
      if req.path == "/write" then return res:write("no\n") end  -- conn:sendresponse
      return res:send("no\n")
    end
  end
  res:send("order not found\n")
end)
]==])
    local pool = H.start_pool{ script = app, workers = 1 }
    finally(function() pool:stop() end)
    for _, path in ipairs{ "/send", "/write" } do
      local r = assert(H.request(pool.addr, "GET " .. path .. " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
      assert(r:match("^HTTP/1.1 500 "), path .. ": " .. r .. "\n" .. pool:log())
      H.wait_until(function()
        return pool:log():find("http handler error (GET " .. path .. ")", 1, true)
      end, 10, "the handler error")
    end
    local log = pool:log()
    assert.falsy(log:find("AddressSanitizer", 1, true), log)
    -- the first 60 bytes of a long name (its CR LF as the log shows them)
    assert.equal(2, select(2, log:gsub("invalid response header 'X%-Bad[^']-Name%-X%-Bad[^']-Name%-%.%.%.' %(a name must be a token", "")), log)
    assert.equal(0, assert(pool:status()).workers[1].restarts)
    pool:stop()
    pool:wait_exit()
  end)

  it("refuses a conn that is not fdpool's, without writing through it", function()
    local send = http._c_res.send
    for _, conn in ipairs{ io.stdout, io.stderr, assert(io.tmpfile()) } do
      local req = { method = "GET", version = "1.1" }
      local res = { _conn = conn, _req = req, _headers = {} }
      local ok, err = pcall(send, res, "x")
      assert.falsy(ok)
      assert.matches("fdpool.conn expected", tostring(err))
    end
  end)
end)
