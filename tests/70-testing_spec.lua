-- tests/70-testing_spec.lua: fdpool.testing, the module users test their
-- handlers with. testing.conn must behave as the real conn: the same
-- recorder handler runs on a testing.conn and in the real build/pool for
-- the same bytes and must produce the same report (receive patterns,
-- prefixes, partial data, timeouts, send ranges, sendfile, readrequest on
-- good and bad heads, readchunked, http.serve responses). Then the HTTP helpers, the
-- JSON decoder, testing.start's lifecycle (no process left behind), the
-- module inside the pool binary, and docs/testing.md's snippets.
local fdpool = require "fdpool"
local testing = require "fdpool.testing"
local H = require "helpers"

-- ---- the recorder: one handler for both sides ------------------------------

-- The first line of the input is a list of operations; the handler runs
-- them on its conn and sends back one line per result (values %q-quoted,
-- tables with sorted keys), then returns.
local RECORDER = [=[
local function ser(v)
  if type(v) == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if type(v) ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local t = {}
  for _, k in ipairs(keys) do t[#t + 1] = k .. "=" .. ser(v[k]) end
  return "{" .. table.concat(t, ",") .. "}"
end

local function pack(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = ser((select(i, ...))) end
  return table.concat(t, " ")
end

return function(conn)
  conn:settimeout(2)
  local ops = conn:receive("l")
  local out = {}
  for op in ops:gmatch("%S+") do
    local name, a, b, c = op:match("^([^:]+):?([^:]*):?([^:]*):?([^:]*)$")
    local r
    if name == "rr" then
      r = pack(conn:readrequest(tonumber(a)))
    elseif name == "rc" then
      r = pack(conn:readchunked(tonumber(a), b == "d"))
    elseif name == "to" then
      r = pack(conn:settimeout(tonumber(a)))
    elseif name == "buf" then
      r = pack(conn:buffered())
    elseif name == "any" then
      r = pack(conn:receiveany(tonumber(a)))
    elseif name == "send" then
      r = pack(conn:send("hello", tonumber(a), tonumber(b)))
    elseif name == "sf" then
      r = pack(conn:sendfile(a, tonumber(b), tonumber(c)))
    elseif name == "fam" then
      r = pack(select(3, conn:getpeername()), select(3, conn:getsockname()))
    elseif name == "bad" then
      r = pack(pcall(function() return conn:receive(a) end))
      r = r:gsub("^false \"[^\"]-:%d+: ", "false \"")
    else
      local pat = tonumber(name) or name
      r = pack(conn:receive(pat, a ~= "" and a or nil))
    end
    out[#out + 1] = op .. " -> " .. r
  end
  conn:send("\n" .. table.concat(out, "\n") .. "\n")
end
]=]

local dir, recorder_path, recorder, pool

-- The recorder's report for ops and input on a testing.conn and on the
-- real pool. timeout: the client keeps the connection open (the handler
-- then times out) instead of half-closing after its bytes.
local function both(ops, input, timeout)
  local bytes = ops .. "\n" .. input
  local mem = testing.run(recorder, { input = bytes, timeout_after_input = timeout })
  local real = assert(pool:request(bytes, { keep_open = timeout }))
  return mem, real
end

local function same(ops, input, timeout)
  local mem, real = both(ops, input, timeout)
  assert.equal(real, mem, "ops: " .. ops .. ", input: " .. ("%q"):format(input))
  return mem
end

setup(function()
  dir = H.tmpdir()
  recorder_path = H.writefile(dir .. "/recorder.lua", RECORDER)
  recorder = dofile(recorder_path)
  H.writefile(dir .. "/ten", "0123456789")
  pool = assert(testing.start{ script = recorder_path, workers = 1, pool = H.POOL })
end)

teardown(function()
  if pool then pool:stop() end
end)

describe("fdpool.testing.conn against the real conn", function()
  it("receive: lines (CR LF, bare LF, the last one without LF)", function()
    local r = same("l l l l", "a\r\nb\nc\r\r\nlast")
    assert.matches('l %-> "a"\nl %-> "b"\nl %-> "c\\13"\nl %-> nil "closed" "last"', r)
  end)

  it("receive: byte counts, 0, and a count past the end", function()
    local r = same("5 0 5 5", "hello world")
    assert.matches('5 %-> nil "closed" "d"', r)
  end)

  it("receive: everything, then \"\" at the end", function()
    local r = same("a *a", "x\ny\r\n")
    assert.matches('a %-> "x\\ny\\13\\n"\n%*a %-> ""', r)
  end)

  it("receive: prefixes on data and on partial data", function()
    local r = same("l:P 3:Q a:R", "ab\ncdef")
    assert.matches('l:P %-> "Pab"\n3:Q %-> "Qcde"\na:R %-> "Rf"', r)
    same("*l:P", "no newline")
  end)

  it("receive: timeouts hand over partial data and drop it", function()
    local r = same("to:0.1 l 10 buf", "abc", true)
    assert.matches('l %-> nil "timeout" "abc"\n10 %-> nil "timeout" ""\nbuf %-> 0', r)
  end)

  it("receiveany: what is buffered, at most max, then closed or timeout", function()
    local r = same("any:4 any:100 any:1", "abcdef")
    assert.matches('any:4 %-> "abcd"\nany:100 %-> "ef"\nany:1 %-> nil "closed" ""', r)
    r = same("to:0.1 any:3 any:3", "ab", true)
    assert.matches('any:3 %-> "ab"\nany:3 %-> nil "timeout" ""', r)
  end)

  it("buffered() counts what was read and not consumed", function()
    same("buf 2 buf a buf", "abcdef")
  end)

  it("raises the same errors for bad patterns", function()
    local r = same("bad:x bad:*x", "")
    assert.matches("invalid receive pattern", r, 1, true)
  end)

  it("send: ranges and negative indexes return the last index", function()
    local r = same("send send:2:4 send:-3 send:4:2 send:0:0 send:9:99", "")
    assert.matches("send:4:2 %-> 3\n", r)
  end)

  it("sendfile: whole, offset, count, short file, missing path", function()
    local f = dir .. "/ten"
    local r = same(("sf:%s sf:%s:4 sf:%s:2:3 sf:%s:8:5 sf:%s/none"):format(f, f, f, f, dir), "")
    assert.matches("0123456789456789234", r, 1, true)
    assert.matches('nil "' .. dir .. '/none: No such file or directory" 2', r, 1, true)
  end)

  -- BUG (src/lconn.c:223-227 today, commit 6e66a81): a short read clears
  -- c->rready, so the next read waits for an EPOLLIN edge; when the
  -- client's FIN came with (or before) the data, no edge follows and the
  -- handler gets "timeout" after its full timeout instead of EOF. Seen
  -- here in about 1 of 10 runs; it also makes the parity cases above
  -- fail now and then. Fix idea (nginx's pending_eof): remember
  -- EPOLLRDHUP in conn_io and keep rready set on a short read after it.
  it("sees the client's half-close after a short read (every time)", function()
    local results = {}
    for _ = 1, 30 do
      local r = assert(pool:request("to:0.5 l a\nline\nrest"))
      results[#results + 1] = r:match("\na %-> (.-)\n$")
    end
    for _, r in ipairs(results) do assert.equal('"rest"', r) end
    assert.equal("\nto:0.5 -> true\nl -> \"line\"\na -> \"rest\"\n",
      testing.run(recorder, { input = "to:0.5 l a\nline\nrest" }))
  end)

  it("getpeername/getsockname give the address family", function()
    assert.matches('fam %-> "inet" "inet"', same("fam", ""))
  end)
end)

describe("fdpool.testing readrequest against the C parser", function()
  local heads = {
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /p/a%20b?x=1&y=?z HTTP/1.0\r\n\r\n",
    "get /lower/é HTTP/1.1\r\n\r\n",
    "POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
    "\r\n\n\r\nGET /after-blank-lines HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\nHost: x\nX-A: 1\n\n",
    "GET / HTTP/1.1\r\nX-Dup: a\r\nx-dup: b\r\nX-DUP:   c  \t\r\n\r\n",
    "GET / HTTP/1.1\r\nEmpty:\r\nTab:\tv\tw\t\r\n\r\n",
    "GET / HTTP/1.1\r\n" .. ("N"):rep(63) .. ": ok\r\n\r\n",
    "GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n",
    -- bad request lines
    "GET /\r\n\r\n",
    "GET / HTTP/2.0\r\n\r\n",
    "GET  / HTTP/1.1\r\n\r\n",
    "G@T / HTTP/1.1\r\n\r\n",
    "GET /a b HTTP/1.1\r\n\r\n",
    "GET /\127 HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\r\n\r\n",
    -- never a request line, refused before the head ends (a TLS
    -- ClientHello on a plain port, a space first, a non-token byte)
    "\22\3\1\0\165\1\0\0\161\3\3",
    " GET / HTTP/1.1\r\n",
    "\r\nG(T / HTTP/1.1\r\nHost: x",
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n\22\3\1",
    -- bad header lines and values
    "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    "GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
    "GET / HTTP/1.1\r\n: no name\r\n\r\n",
    "GET / HTTP/1.1\r\n" .. ("N"):rep(64) .. ": long\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\1b\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\r\r\n\r\n",
    -- limits and ends
    "GET / HTTP/1.1\r\nX: " .. ("y"):rep(300) .. "\r\n\r\n",
    "GET / HTTP/1.1\r\nX: " .. ("y"):rep(300),
    "GET / HTTP/1.1\r\nHost: x\r\n",
    "",
    "\r\n\r\n",
  }

  it("gives the same results on " .. #heads .. " heads, good and bad", function()
    local errors = {}
    for _, head in ipairs(heads) do
      local r = same("rr:256 rr:256 a", head)
      errors[#errors + 1] = r:match("rr:256 %-> nil (%b\"\")")
    end
    -- Every error the parser has was met.
    local seen = table.concat(errors, " ")
    for _, e in ipairs { "bad request line", "bad header line", "bad header value",
        "header too large", "bad request: truncated", "closed" } do
      assert.matches('"' .. e .. '"', seen, 1, true)
    end
  end)

  it("readchunked gives the same results on the framing table's chunked bodies", function()
    package.path = "./tests/?.lua;" .. package.path
    local F = require "framing_cases"
    local n = 0
    for _, c in ipairs(F.cases) do
      local body = c[2]:match("Transfer%-Encoding: chunked\r\n\r\n(.*)$")
      if body then
        -- rc:max, then rc:max:d (discard) on a fresh copy after it.
        same("rc:65536 a", body)
        same("rc:65536:d a", body)
        same("rc:3 a", body)
        n = n + 1
      end
    end
    assert.is_true(n >= 40, n .. " bodies")
    -- Split across reads, byte by byte.
    same("rc:100 a", "2;a=\"b\"\r\nhe\r\n3\r\nllo\r\n0\r\nT: 1\r\n\r\nrest")
    -- Framing not paid for by data (past 16 KiB owed): refused alike;
    -- just under it, and many plain 1-byte chunks, taken alike.
    local r = same("rc:100000 a", ("1;" .. ("a"):rep(1000) .. "\r\nx\r\n"):rep(20) .. "0\r\n\r\n")
    assert.matches('"bad chunk extension"', r, 1, true)
    r = same("rc:100000 a", ("1;" .. ("a"):rep(1000) .. "\r\nx\r\n"):rep(16) .. "0\r\n\r\n")
    assert.matches('"xxxxxxxxxxxxxxxx"', r, 1, true)
    same("rc:100000 a", ("1\r\nx\r\n"):rep(5000) .. "0\r\n\r\n")
  end)

  it("gives the same result for more than 100 headers", function()
    local t = { "GET / HTTP/1.1\r\n" }
    for i = 1, 101 do t[#t + 1] = "X-" .. i .. ": v\r\n" end
    local r = same("rr:8192", table.concat(t) .. "\r\n")
    assert.matches('"too many headers"', r, 1, true)
  end)

  -- Regression test (was a bug, now fixed): a head whose request line no
  -- request could finish (binary junk, a TLS hello on the plain port, a
  -- version that is not HTTP/x.y) is refused at once, not held until the
  -- head's timeout ran out (then 408, as if the client were slow).
  it("refuses at once a request line none could finish, as the real one", function()
    for _, input in ipairs{ "\22\3\1\2\0\1\0\1\252\3\3", "GET\0 / HTTP/1.1", "GE(T / HTTP/1.1",
                            "GET /a\1b HTTP/1.1", "GET / FTP/1.1", "GET / HTTP/1.1\nHost", " GET / HTTP/1.1",
                            "\r\nGET / HTTP/1.1 \r", "GET  /", "GET / HTTP/1.x" } do
      local r = same("to:5 rr", input, true)
      assert.matches('rr %-> nil "bad request line"', r)
    end
    -- what could still be a request waits for more (here: the timeout)
    for _, input in ipairs{ "G", "GET /", "GET / HTTP/1", "\r\nGET / HTTP/1.1\r", "GET / HTTP/1.1\r\nX-A" } do
      local r = same("to:0.1 rr", input, true)
      assert.matches('rr %-> nil "timeout"', r)
    end
  end)

  it("keeps a partial head buffered on timeout, as the real one", function()
    local r = same("to:0.1 rr buf", "GET / HTTP/1.1\r\nHo", true)
    assert.matches('rr %-> nil "timeout"\nbuf %-> 18', r)
  end)

  it("matches the documented request shape", function()
    local c = testing.conn{ input = "PUT /a?b HTTP/1.0\r\nX-Y: 1\r\nx-y: 2\r\n\r\nrest" }
    assert.same({ method = "PUT", target = "/a?b", path = "/a", query = "b",
      version = "1.0", headers = { ["x-y"] = "1, 2" } }, c:readrequest())
    assert.equal(4, c:buffered())
    assert.equal("rest", c:receive(4))
  end)

  it("reads a head split across reads, byte by byte", function()
    local head = "GET /x HTTP/1.1\r\nHost: h\r\n\r\nNEXT"
    local chunks = {}
    for i = 1, #head do chunks[i] = head:sub(i, i) end
    local c = testing.conn{ input = chunks }
    local req = assert(c:readrequest())
    assert.equal("/x", req.path)
    assert.equal(0, c:buffered())     -- the body's bytes have not arrived yet
    assert.equal("NEXT", c:receive("a"))
  end)
end)

describe("fdpool.testing with http.serve, against the real pool", function()
  local FIXTURE = "tests/fixtures/http_echo.lua"
  local http_pool

  setup(function()
    http_pool = assert(testing.start{ script = FIXTURE, workers = 1, pool = H.POOL })
  end)

  teardown(function()
    if http_pool then http_pool:stop() end
  end)

  -- The responses in bytes as a list of {status, headers but Date, body};
  -- methods: the requests' methods, in order (HEAD answers have no body).
  local function responses(bytes, methods)
    local list = {}
    while bytes and #bytes > 0 do
      local status, headers, body, rest = testing.parse_response(bytes, methods[#list + 1])
      assert(status, headers)
      headers.date = nil
      list[#list + 1] = { status, headers, body }
      bytes = rest
    end
    return list
  end

  local cases = {
    "GET /hi?x HTTP/1.1\r\nHost: h\r\nUser-Agent: spec\r\nConnection: close\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /z HTTP/1.1\r\nHost: h\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "GET /stream?n=3 HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /tuple HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.1\r\n\r\n",
    "GET /\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
  }

  it("gives the same responses for " .. #cases .. " request streams", function()
    local app = dofile(FIXTURE)
    for _, bytes in ipairs(cases) do
      local mem = testing.run(app, { input = bytes })
      local real = assert(http_pool:request(bytes))
      local methods = {}
      for m in bytes:gmatch("([A-Z]+) [^ \r\n]+ HTTP/1%.%d\r\n") do methods[#methods + 1] = m end
      assert.same(responses(real, methods), responses(mem, methods), ("%q"):format(bytes))
    end
  end)

  it("http_request gives the status, headers and body", function()
    local app = dofile(FIXTURE)
    local status, headers, body, conn = testing.http_request(app, "POST", "/echo",
      { body = "data", headers = { ["X-Any"] = "1" } })
    assert.equal(200, status)
    assert.equal("4", headers["x-body-length"])
    assert.equal("data", body)
    assert.is_false(conn.parked)
    -- And the same through the real pool.
    local s2, h2, b2 = http_pool:http("POST", "/echo", { body = "data" })
    assert.same({ 200, "4", "data" }, { s2, h2["x-body-length"], b2 })
  end)

  it("park makes http.serve return with conn.parked set", function()
    local http = require "fdpool.http"
    local app = http.serve(function(_, res) res:send("ok") end, { park = true })
    local status, _, body, conn = testing.http_request(app, "GET", "/")
    assert.same({ 200, "ok", true, true }, { status, body, conn.parked, conn.closed })
    -- Bytes still buffered: park refuses, as the real one does.
    local c2 = testing.conn{ input = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET" }
    assert(c2:readrequest())
    assert.same({ nil, "unread data" }, { c2:park() })
  end)
end)

describe("fdpool.testing.conn", function()
  it("hands over partial data on close and drops it", function()
    local c = testing.conn{ input = { "ab", "cd" } }
    assert.equal("a", c:receive(1))
    assert.same({ nil, "closed", "bcd" }, { c:receive(10) })
    assert.same({ nil, "closed", "" }, { c:receive("l") })
  end)

  it("returns \"timeout\" at the end of input with timeout_after_input", function()
    local c = testing.conn{ input = "abc", timeout_after_input = true }
    assert.same({ nil, "timeout", "abc" }, { c:receive("a") })
    assert.same({ nil, "timeout" }, { c:readrequest() })
  end)

  it("fails a line over 1 MiB with \"line too long\"", function()
    -- The newline arrives in a later read than the first 1 MiB + 1.
    local c = testing.conn{ input = { ("x"):rep((1 << 20) + 1), "\n" } }
    local data, err, partial = c:receive("l")
    assert.same({ nil, "line too long", (1 << 20) + 1 }, { data, err, #partial })
  end)

  it("answers nil, \"closed\" once closed, without raising", function()
    local c = testing.conn{ input = "GET / HTTP/1.1\r\n\r\n" }
    assert.is_true(c:close())
    assert.is_true(c:close())
    assert.is_true(c.closed)
    assert.same({ nil, "closed", "" }, { c:receive() })
    assert.same({ nil, "closed" }, { c:readrequest() })
    assert.same({ nil, "closed", 0 }, { c:send("x") })
    assert.equal(0, c:send(""))            -- an empty range sends nothing
    assert.same({ nil, "closed" }, { c:getpeername() })
    assert.same({ nil, "closed" }, { c:park() })
    assert.equal(-1, c:getfd())
  end)

  it("shutdown(\"send\") fails later sends; (\"receive\") ends the input", function()
    local c = testing.conn{ input = "data" }
    assert.is_true(c:shutdown("send"))
    assert.same({ nil, "closed", 0 }, { c:send("x") })
    local c2 = testing.conn{ input = "data" }
    assert.is_true(c2:shutdown("receive"))
    assert.equal("", c2:receive("a"))
  end)

  it("records sends, stats, timeouts and addresses", function()
    local c = testing.conn{ input = "hello", peer = "[::1]:7000", sock = "unix:/run/x.sock" }
    assert.equal(5, c:send("abcdef", 2, -2))
    assert.equal("bcde", c:output())
    assert.equal("hello", c:receive("a"))
    assert.same({ 5, 4 }, { c:getstats() })
    assert.is_true(c:settimeout(2.5, "t"))
    assert.same({ 2.5, "t" }, { c.timeout, c.timeout_mode })
    assert.same({ "::1", 7000, "inet6" }, { c:getpeername() })
    assert.same({ "/run/x.sock", nil, "unix" }, { c:getsockname() })
    local d = testing.conn{}
    assert.same({ "127.0.0.1", 40000, "inet" }, { d:getpeername() })
  end)

  it("sendfile reads Lua files and fdpool fds without moving them", function()
    local path = H.writefile(dir .. "/f", "abcdefgh")
    local c = testing.conn{}
    local f = assert(io.open(path, "rb"))
    f:seek("set", 1)
    assert.equal(3, c:sendfile(f, 2, 3))
    assert.equal(1, f:seek())
    f:close()
    local fd = assert(fdpool.open_beneath(dir, "f"))
    assert.equal(2, c:sendfile(fd, 6))
    fd:close()
    assert.equal("cdegh", c:output())
  end)

  it("raises for misuse, with the real conn's messages", function()
    local c = testing.conn{}
    assert.has_error(function() c:receive(-1) end)
    assert.matches("byte count must not be negative", select(2, pcall(c.receive, c, -1)), 1, true)
    assert.matches("invalid receive pattern", select(2, pcall(c.receive, c, "x")), 1, true)
    assert.matches("prefix must be a string", select(2, pcall(c.receive, c, "l", {})), 1, true)
    assert.matches("the limit must be positive", select(2, pcall(c.readrequest, c, 0)), 1, true)
    assert.matches("idle seconds out of range", select(2, pcall(c.park, c, 0)), 1, true)
    assert.matches("string expected, got nil", select(2, pcall(c.send, c)), 1, true)
    assert.matches("offset must not be negative", select(2, pcall(c.sendfile, c, "x", -1)), 1, true)
    assert.matches("bad address", select(2, pcall(testing.conn, { peer = "nope" })), 1, true)
  end)
end)

describe("fdpool.testing HTTP helpers", function()
  it("build_request adds Host and Content-Length", function()
    assert.equal("POST /x HTTP/1.1\r\nHost: test\r\nA: 1\r\nContent-Length: 2\r\n\r\nhi",
      testing.build_request("POST", "/x", { headers = { A = "1" }, body = "hi" }))
    assert.equal("GET / HTTP/1.0\r\nhost: h\r\n\r\n",
      testing.build_request("GET", "/", { headers = { host = "h" }, version = "1.0" }))
  end)

  it("parse_response handles chunked, 1xx, HEAD and close-delimited bodies", function()
    local s, h, b, rest = testing.parse_response(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
      .. "Set-Cookie: a\r\nset-cookie: b\r\n\r\n3\r\nabc\r\n1;ext\r\nd\r\n0\r\nT: x\r\n\r\nNEXT")
    assert.same({ 200, "a, b", "abcd", "NEXT" }, { s, h["set-cookie"], b, rest })
    s, h, b = testing.parse_response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD")
    assert.same({ 200, "" }, { s, b })
    s, h, b = testing.parse_response("HTTP/1.0 404 Not Found\r\n\r\nall of it")
    assert.same({ 404, "all of it" }, { s, b })
    assert.same({ nil, "no response" }, { testing.parse_response("") })
    assert.same({ nil, "truncated body" },
      { testing.parse_response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab") })
  end)

  it("http_request splits the request into chunks when asked", function()
    local seen = {}
    local function app(conn)
      repeat
        local b = conn:buffered()
        seen[#seen + 1] = b
        local line = conn:receive("l")
      until line == "" or not line
      conn:send("HTTP/1.1 204 No Content\r\n\r\n")
    end
    local status, _, body = testing.http_request(app, "GET", "/", { chunks = 4 })
    assert.same({ 204, "" }, { status, body })
    for _, b in ipairs(seen) do assert.is_true(b <= 4) end
  end)

  it("run accepts a {handle = fn} table", function()
    local out = testing.run({ handle = function(c) c:send(c:receive()) end }, { input = "x\n" })
    assert.equal("x", out)
  end)
end)

describe("fdpool.testing.json_decode", function()
  it("decodes what pool status --json prints", function()
    local st = assert(pool:status())
    assert.equal(pool.pid, st.pid)
    assert.equal(1, #st.workers)
    assert.is_nil(st.workers[1].last_exit)
    assert.same({}, st.workers[1].fields)
  end)

  it("decodes escapes and numbers, and reports errors with a position", function()
    assert.same({ a = { 1, -2.5, 3e2, "é😀\n\"/" }, b = true, c = false },
      testing.json_decode(' {"a": [1, -2.5, 3e2, "\\u00e9\\ud83d\\ude00\\n\\"\\/"], "b": true, "c": false, "d": null} '))
    assert.same({ nil, "json: unexpected end at position 6" }, { testing.json_decode('{"a":') })
    assert.same({ nil, "json: trailing characters at position 3" }, { testing.json_decode('1 x') })
    assert.same({ nil, "json: expected ',' or ']' at position 4" }, { testing.json_decode('[1 2]') })
  end)
end)

describe("fdpool.testing.start", function()
  it("starts, serves and stops, leaving no process behind", function()
    local p = assert(testing.start{ script = "examples/echo.lua", workers = 3, pool = H.POOL,
      concurrency = 1, args = { "x" } })
    local st = assert(p:status())
    assert.equal(3, #st.workers)
    local pids = { p.pid }
    for _, w in ipairs(st.workers) do
      assert.equal("free", w.state)
      pids[#pids + 1] = w.pid
    end
    assert.matches("^127%.0%.0%.1:%d+$", p.addr)
    assert.matches("^%d: ping\n$", p:request("ping\n"))
    local dir_ = p.dir
    assert.equal(0, p:stop())
    assert.equal(0, p:stop())                 -- a second stop just answers
    for _, pid in ipairs(pids) do assert.is_false(H.alive(pid), "pid " .. pid) end
    assert.matches("pool stopped", p:log(), 1, true)  -- the log outlives the temp dir
    assert.is_nil(io.open(dir_ .. "/pool.log"))
  end)

  it("stops at the end of a <close> scope", function()
    local pid
    do
      local p <close> = assert(testing.start{ workers = 1, pool = H.POOL })
      pid = p.pid
      local status, _, body = p:http("GET", "/")   -- the built-in hello
      assert.same({ 200, "hello\n" }, { status, body })
    end
    assert.is_false(H.alive(pid))
  end)

  it("returns nil and the pool's error when it cannot start", function()
    local script = H.writefile(dir .. "/broken.lua", "return function(conn) end end")
    local p, err = testing.start{ script = script, pool = H.POOL }
    assert.is_nil(p)
    assert.matches("pool did not start", err, 1, true)
    assert.matches("expected near 'end'", err, 1, true)
    p, err = testing.start{ pool = dir .. "/no-such-pool" }
    assert.is_nil(p)
    assert.matches("exit code 127", err, 1, true)
  end)

  it("finds the binary through FDPOOL_POOL, then ./build/pool", function()
    -- os.getenv cannot be changed from Lua: check the default it computes.
    local env = os.getenv("FDPOOL_POOL")
    assert.equal(env and env ~= "" and env or "./build/pool", testing.pool_binary())
  end)

  it("works inside the pool binary too (embedded module)", function()
    local script = H.writefile(dir .. "/inside.lua", [[
      local testing = require "fdpool.testing"
      return function(conn)
        local c = testing.conn{ input = "GET /in HTTP/1.1\r\n\r\n" }
        conn:send(c:readrequest().path .. " " .. tostring(testing.json_decode("[7]")[1]))
      end]])
    local p = assert(testing.start{ script = script, workers = 1, pool = H.POOL })
    finally(function() p:stop() end)
    assert.equal("/in 7", p:request(""))
  end)

  it("wait_until polls with a deadline and names what it waited for", function()
    local n = 0
    assert.equal(3, testing.wait_until(function() n = n + 1; return n >= 3 and n end, 2))
    local ok, err = pcall(testing.wait_until, function() return false end, 0.05, "Godot")
    assert.is_false(ok)
    assert.matches("timed out waiting for Godot", err, 1, true)
  end)
end)

describe("docs/testing.md", function()
  it("shows only code that ships in examples/ (and runs in CI)", function()
    local doc = assert(H.readfile("docs/testing.md"))
    local n = 0
    local pos = 1
    while true do
      local a, b, lang, code = doc:find("\n```(%w*)\n(.-)\n```", pos)
      if not a then break end
      pos = b + 1
      if lang == "lua" then
        n = n + 1
        -- The file it comes from is named before it: "from `examples/...`".
        local before = doc:sub(1, a)
        local file = before:match(".*[Ff]rom `(examples/[%w_/%.]+)`")
        assert.truthy(file, "a lua block names no examples/ file: " .. code:sub(1, 60))
        local src = assert(H.readfile(file), file)
        assert.truthy(src:find(code, 1, true), "block not found verbatim in " .. file)
      end
    end
    assert.is_true(n >= 4)
  end)
end)
