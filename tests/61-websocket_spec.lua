-- tests/61-websocket_spec.lua: fdpool.http.websocket. In memory
-- (fdpool.testing.websocket, the client's frames masked by an independent
-- Lua implementation): the handshake and its refusals (400, 426), every
-- protocol error with its close code (1002, 1007, 1009) from hand-made
-- frames, the attacker paths (a 2^63 length, a frame one byte per read,
-- 64 KiB of continuation frames, a client that never answers a close),
-- and a taken-over connection that http.serve never writes to again. In
-- the real build/pool: python3-websockets and node's ws as clients (echo,
-- fragments, ping, subprotocols, close codes, a chat between three
-- clients of one worker), hand-made frames over a socket, a client that
-- never reads (bounded memory), no fd left behind.
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local testing = require "fdpool.testing"
local H = require "helpers"

local APP = "tests/fixtures/ws_app.lua"
local app = dofile(APP)

local function ws(path, frames, opts)
  opts = opts or {}
  opts.frames = frames
  return assert(testing.websocket(app, path, opts))
end

-- The server's close code for these client frames on /echo.
local function close_code(frames, path, opts)
  local r = ws(path or "/echo", frames, opts)
  assert.equal(101, r.status)
  assert.truthy(r.close, "no close frame from the server")
  return r.close.code, r.close.reason, r
end

describe("websocket handshake (in memory)", function()
  it("answers 101 with RFC 6455's Sec-WebSocket-Accept", function()
    local r = ws("/echo", { { "text", "hello" }, { "close", { 1000 } } })
    assert.equal(101, r.status)
    assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r.headers["sec-websocket-accept"])
    assert.equal("websocket", r.headers["upgrade"])
    assert.equal("Upgrade", r.headers["connection"])
    assert.same({ "hello" }, r.messages)
    assert.equal(1000, r.close.code)
    assert.is_true(r.conn.closed)
  end)

  it("picks the first offered subprotocol the server supports", function()
    local r = ws("/echo", { { "close", { 1000 } } }, { protocols = { "x", "echo.v1", "chat.v1" } })
    assert.equal("echo.v1", r.headers["sec-websocket-protocol"])
    r = ws("/echo", { { "close", { 1000 } } }, { protocols = { "nope" } })
    assert.is_nil(r.headers["sec-websocket-protocol"])
  end)

  it("refuses a bad handshake with 400", function()
    for _, case in ipairs {
      { { ["Sec-WebSocket-Key"] = false }, "bad Sec%-WebSocket%-Key" },
      { { ["Sec-WebSocket-Key"] = "short" }, "bad Sec%-WebSocket%-Key" },
      { { ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZR==" }, "bad Sec%-WebSocket%-Key" },
      { { Upgrade = false }, "Upgrade: websocket missing" },
      { { Upgrade = "h2c" }, "Upgrade: websocket missing" },
      { { Connection = "keep-alive" }, "Connection: Upgrade missing" },
      { { ["Content-Length"] = "3" }, "a request body with the upgrade", { "abc" } },
    } do
      local r = assert(testing.websocket(app, "/echo", { headers = case[1], frames = case[3] }))
      assert.equal(400, r.status)
      assert.matches(case[2], r.body)
    end
  end)

  it("refuses an Origin not in opts.origins with 403 (a page of another site)", function()
    local http = require "fdpool.http"
    local h = http.serve(function(req, res)
      local w = http.websocket(req, res, { origins = { "https://app.example" } })
      if w then w:close() end
    end)
    local function status(origin)
      return assert(testing.websocket(h, "/", { headers = { Origin = origin },
        frames = { { "close", { 1000 } } } })).status
    end
    assert.equal(101, status("https://app.example"))
    assert.equal(101, status("HTTPS://APP.example"))
    assert.equal(403, status("https://evil.example"))
    assert.equal(403, status(false))
    -- Without the option any Origin is let through (the handler's call).
    assert.equal(101, assert(testing.websocket(app, "/echo", { headers = { Origin = "https://x" },
      frames = { { "close", { 1000 } } } })).status)
  end)

  it("names a bad opts.origins (a string, a list with a non-string) in the handler's error", function()
    local http = require "fdpool.http"
    for _, bad in ipairs { "https://app.example", { "https://a", 5 } } do
      local err
      local h = http.serve(function(req, res)
        local ok, e = pcall(http.websocket, req, res, { origins = bad })
        err = not ok and e
        return 500, {}, "x"
      end)
      assert(testing.websocket(h, "/", {}))
      assert.matches("websocket option 'origins' must be a list of strings, got " .. type(bad),
        tostring(err))
    end
  end)

  it("checks the numeric options and protocols before the 101 (a bad timeout raised after it)", function()
    local http = require "fdpool.http"
    for _, case in ipairs {
      { "timeout", "abc" }, { "timeout", true }, { "timeout", 0 / 0 }, { "timeout", -1 },
      { "timeout", {} }, { "max_payload", "1" }, { "close_timeout", -1 / 0 },
      { "frame_timeout", false }, { "frame_min_rate", 0 / 0 }, { "protocols", "chat" },
      { "protocols", { "chat", 5 } },
    } do
      local err, started
      local h = http.serve(function(req, res)
        local ok, e = pcall(http.websocket, req, res, { [case[1]] = case[2] })
        err, started = not ok and e, res.started
        return 500, {}, "x"
      end)
      local r = assert(testing.websocket(h, "/", {}))
      assert.matches("websocket option '" .. case[1] .. "' must be", tostring(err))
      assert.is_falsy(started, case[1])
      assert.equal(500, r.status)
    end
  end)

  it("answers another version with 426 and Sec-WebSocket-Version: 13", function()
    local r = assert(testing.websocket(app, "/echo", { version = "8" }))
    assert.equal(426, r.status)
    assert.equal("13", r.headers["sec-websocket-version"])
    -- RFC 9110 15.5.22: the reason phrase, and Upgrade naming the protocol
    -- (it said "426 Unknown", without Upgrade).
    assert.matches("^HTTP/1%.1 426 Upgrade Required\r\n", r.conn:output())
    assert.equal("websocket", r.headers["upgrade"])
  end)

  it("sends the headers set on res before the upgrade with the 101", function()
    local http = require "fdpool.http"
    local h = http.serve(function(req, res)
      res:header("X-Before", "1"):cookie("sid", "abc", { httponly = true })
      local w = assert(http.websocket(req, res))
      w:close(1000)
    end)
    local r = assert(testing.websocket(h, "/", { frames = { { "close", { 1000 } } } }))
    assert.equal(101, r.status)
    assert.equal("1", r.headers["x-before"])
    assert.equal("sid=abc; HttpOnly", r.headers["set-cookie"])
    assert.equal(1000, r.close.code)
  end)

  it("accepts Upgrade and Connection as token lists in any case", function()
    local r = ws("/echo", { { "close", { 1000 } } },
      { headers = { Connection = "keep-alive, UPGRADE", Upgrade = "WebSocket" } })
    assert.equal(101, r.status)
  end)
end)

describe("websocket messages (in memory)", function()
  it("reassembles fragments, with pings between them answered", function()
    local r = ws("/echo", {
      { "text", "a", { fin = false } }, { "ping", "p1" },
      { "continuation", "b", { fin = false } }, { "continuation", "c" },
      { "binary", "\0\1", { fin = false } }, { "continuation", "\2" },
      { "close", { 1000, "bye" } } })
    assert.same({ "got ping p1", "abc", "\0\1\2" }, r.messages)
    assert.equal("pong", r.frames[1].kind)
    assert.equal("p1", r.frames[1].data)
    assert.equal(1000, r.close.code)
    for _, f in ipairs(r.frames) do
      assert.is_false(f.masked)
      assert.is_true(f.fin)
    end
  end)

  it("accepts a character split across fragments", function()
    local r = ws("/echo", { { "text", "\xe2\x82", { fin = false } },
      { "continuation", "\xac!" }, { "close", { 1000 } } })
    assert.same({ "\xe2\x82\xac!" }, r.messages)
  end)

  it("survives a frame delivered one byte per read", function()
    local r = ws("/echo", { { "text", ("é"):rep(100) }, { "close", { 1000 } } }, { chunks = 1 })
    assert.same({ ("é"):rep(100) }, r.messages)
  end)

  it("handles 64 KiB of one-byte continuation frames", function()
    local frames = { { "binary", "x", { fin = false } } }
    for i = 1, 65535 do
      frames[#frames + 1] = { "continuation", "y", { fin = i == 65535 } }
    end
    frames[#frames + 1] = { "close", { 1000 } }
    local r = ws("/echo", frames)
    assert.equal(1, #r.messages)
    assert.equal("x" .. ("y"):rep(65535), r.messages[1])
  end)

  it("answers the client's close with the same code and closes", function()
    local code, _, r = close_code({ { "close", { 4321, "done" } }, { "text", "after" } })
    assert.equal(4321, code)
    assert.same({}, r.messages)
    code = close_code({ { "close" } })         -- no code: empty close back
    assert.is_nil(code)
    -- The edges of the ranges a peer may send (RFC 6455 7.4, IANA's
    -- registry: 1012-1014 are registered), a 123-byte reason.
    for _, c in ipairs { 1000, 1003, 1007, 1011, 1012, 1014, 3000, 4999 } do
      assert.equal(c, (close_code({ { "close", { c, ("r"):rep(123) } } })))
    end
  end)

  it("closes with the handler's code and reason", function()
    local code, reason = close_code({ { "close", { 4001 } } }, "/close?code=4002")
    assert.same({ 4002, "bye" }, { code, reason })
    -- A reason that is not UTF-8 raises (the client would fail it with
    -- 1007): the handler's error closes with 1011 instead.
    local http = require "fdpool.http"
    local r = assert(testing.websocket(http.serve(function(req, res)
      http.websocket(req, res):close(1000, "caf\xe9")
    end), "/", { frames = {} }))
    assert.equal(1011, r.close.code)
    -- close_all's too, and a reason over 123 bytes (a close frame's
    -- payload is at most 125).
    local wsmod = require "fdpool.http.websocket"
    assert.has_error(function() wsmod.close_all(1001, ("x"):rep(124)) end)
    assert.has_error(function() wsmod.close_all(1001, "\xff") end)
    assert.has_error(function() wsmod.close_all(1005) end)
  end)

  it("closes after the close timeout when the client never answers", function()
    -- The input ends without a close: the server's wait fails at once in
    -- memory ("timeout"), and the conn is closed.
    local r = ws("/echo", { { "text", "close-me" } }, { timeout_after_input = true })
    assert.equal(4000, r.close.code)
    assert.is_true(r.conn.closed)
  end)
end)

describe("websocket protocol errors (in memory)", function()
  local cases = {
    { "an unmasked client frame", { { "text", "hi", { mask = false } } }, 1002 },
    { "a reserved opcode", { { 3, "x" } }, 1002 },
    { "a reserved control opcode", { { 11, "" } }, 1002 },
    { "RSV1 without an extension", { { "text", "x", { rsv = 4 } } }, 1002 },
    { "RSV3", { { "binary", "x", { rsv = 1 } } }, 1002 },
    { "a fragmented ping", { { "ping", "x", { fin = false } } }, 1002 },
    { "a 126-byte ping", { { "ping", ("x"):rep(126) } }, 1002 },
    { "a continuation without a message", { { "continuation", "x" } }, 1002 },
    { "a new message inside a fragmented one",
      { { "text", "a", { fin = false } }, { "text", "b" } }, 1002 },
    { "a close of 1 byte", { { "close", "\3" } }, 1002 },
    { "a close code 1005", { { "close", { 1005 } } }, 1002 },
    { "a close code 999", { { "close", { 999 } } }, 1002 },
    { "a close code 2000", { { "close", { 2000 } } }, 1002 },
    { "a close code 1006 (never on the wire)", { { "close", { 1006 } } }, 1002 },
    { "a close code 1015 (never on the wire)", { { "close", { 1015 } } }, 1002 },
    { "a close code 1004 (reserved)", { { "close", { 1004 } } }, 1002 },
    { "a close code 5000", { { "close", { 5000 } } }, 1002 },
    { "a ping whose 16-bit length says 126", { string.pack(">BBI2", 0x89, 0x80 | 126, 126)
      .. "\1\2\3\4" .. ("x"):rep(126) }, 1002 },
    { "a text message invalid in a fragment before the last",
      { { "text", "ok", { fin = false } }, { "continuation", "\xc3", { fin = false } },
        { "continuation", "(", { fin = false } } }, 1007 },
    { "a 2^63 payload length", { { "binary", "", { length = math.mininteger } } }, 1002 },
    { "invalid UTF-8 in a text message", { { "text", "a\xff" } }, 1007 },
    { "an overlong encoding", { { "text", "\xc0\xaf" } }, 1007 },
    { "a surrogate", { { "text", "\xed\xa0\x80" } }, 1007 },
    { "invalid UTF-8 across fragments",
      { { "text", "\xe2", { fin = false } }, { "continuation", "\x28\xa1" } }, 1007 },
    { "a text message ending inside a character", { { "text", "\xe2\x82" } }, 1007 },
    { "a close reason that is not UTF-8", { { "close", { 1000, "\xff" } } }, 1007 },
    { "a 2^62 payload length", { { "binary", "", { length = 1 << 62 } } }, 1009 },
  }
  for _, case in ipairs(cases) do
    it("closes with " .. case[3] .. " for " .. case[1], function()
      local code, reason, r = close_code(case[2])
      assert.equal(case[3], code)
      assert.truthy(#reason > 0)
      assert.is_true(r.conn.closed)
      assert.same({}, r.messages)
    end)
  end

  it("closes with 1009 past max_payload, fragments counted together", function()
    assert.equal(1009, (close_code({ { "text", ("x"):rep(1001) } }, "/small")))
    assert.equal(1009, (close_code({ { "text", ("x"):rep(600), { fin = false } },
      { "continuation", ("x"):rep(600) } }, "/small")))
    local r = ws("/small", { { "text", ("x"):rep(1000) }, { "close", { 1000 } } })
    assert.equal(1000, #r.messages[1])
  end)

  it("closes a frame cut short without a close frame", function()
    local r = ws("/echo", { testing.ws_frame("text", "hello"):sub(1, 5) })
    assert.is_nil(r.close)
    assert.is_true(r.conn.closed)
  end)
end)

describe("websocket on random bytes (in memory)", function()
  it("ends every time with a close code or a closed connection, never an error", function()
    math.randomseed(16)
    local valid = { [1000] = true, [1002] = true, [1007] = true, [1009] = true }
    for _ = 1, 300 do
      -- Random frames: a plausible first byte half the time.
      local t = {}
      for i = 1, math.random(1, 40) do
        t[i] = string.char(i == 1 and math.random() < 0.5 and 0x81 or math.random(0, 255))
      end
      local r = ws("/echo", { table.concat(t) }, { chunks = math.random(1, 7) })
      assert.equal(101, r.status)
      assert.is_true(r.conn.closed)
      if r.close then assert.truthy(valid[r.close.code], tostring(r.close.code)) end
    end
  end)
end)

describe("a connection taken over (in memory)", function()
  it("gets nothing from http.serve after a hand-written 101", function()
    local out = testing.run(app, { input = "GET /raw101 HTTP/1.1\r\nHost: x\r\n\r\nGET /stats HTTP/1.1\r\nHost: x\r\n\r\n" })
    assert.equal("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw\r\nConnection: Upgrade\r\n\r\nraw!", out)
  end)

  it("closes with 1011 when the handler raises after the upgrade, and sends no 500", function()
    local r = ws("/err", {})
    assert.same({ "about to fail" }, r.messages)
    assert.equal(1011, r.close.code)
    assert.falsy(r.rest:find("HTTP/1.1", 1, true))
  end)

  it("reads no next request after the upgrade", function()
    local r = ws("/echo", { { "close", { 1000 } }, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n" })
    assert.equal("", r.rest)
  end)
end)

-- ---- the real pool ---------------------------------------------------------

local function ws_url(p) return "ws://" .. p.addr end

describe("websocket in the real pool", function()
  local p

  setup(function()
    p = H.start_pool{ script = APP, workers = 1 }
    assert.truthy(p.addr, p:log())
  end)

  teardown(function()
    if p then assert.equal(0, p:stop()) end
  end)

  local function py(scenario)
    local ok, code, out = H.run(("timeout 60 /usr/bin/python3 tests/fixtures/ws_client.py %s %s 2>&1")
      :format(ws_url(p), scenario))
    assert(ok, ("ws_client.py %s: exit %s: %s"):format(scenario, code, out))
    return out
  end

  it("talks with python3-websockets: text, binary, 200 kB, fragments, ping, close", function()
    assert.equal(table.concat({
      "subprotocol echo.v1", "text héllo ✓", "binary 0001ff", "big 200000",
      "fragments frag1-frag2-frag3", "pong ok", "after ping got ping pp",
      "closed 1000 ", "" }, "\n"), py("echo"))
  end)

  it("relays a chat between three clients of one worker", function()
    assert.equal(table.concat({
      "a sent: from a", "b from a", "c from a",
      "c sent: from c", "a from c", "b from c",
      "closed 1000 1000 1000", "" }, "\n"), py("chat"))
  end)

  it("gives python the handler's close code and the 1009 of max_payload", function()
    assert.equal("closed 4001 bye\n", py("close"))
    assert.equal("fits 999\nclosed 1009 message larger than 1000 bytes\n", py("small"))
  end)

  it("lets a handler send on another handler's WebSocket, waiting for room", function()
    assert.equal("a got 256 in order\nflooded 256\n", py("flood"))
  end)

  it("talks with node's ws", function()
    local ok, code, out = H.run(("NODE_PATH=/usr/share/nodejs timeout 60 node tests/fixtures/ws_client.js %s 2>&1")
      :format(ws_url(p)))
    assert(ok, ("ws_client.js: exit %s: %s"):format(code, out))
    assert.equal(table.concat({ "subprotocol echo.v1", "text hi node", "binary 010203",
      "big 70000", "pong x", "text got ping x", "closed 1000 ", "" }, "\n"), out)
  end)

  -- A raw client: the upgrade, then hand-made frames.
  local function raw(path)
    local fd = assert(fdpool.connect(p.addr, 10))
    assert(fd:write(testing.build_request("GET", path, { headers = {
      Upgrade = "websocket", Connection = "Upgrade",
      ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==", ["Sec-WebSocket-Version"] = "13" } })))
    local buf = ""
    while not buf:find("\r\n\r\n", 1, true) do
      buf = buf .. assert(fd:read(4096))
    end
    assert.matches("^HTTP/1.1 101 Switching Protocols\r\n", buf)
    return fd, buf:sub(buf:find("\r\n\r\n", 1, true) + 4)
  end

  -- Everything the server sends until it closes (a read timeout, 10 s
  -- from fdpool.connect, fails the test: the server must close).
  local function read_all(fd, buf)
    while true do
      local d, err = fd:read(65536)
      assert(d or not err, "the server did not close: " .. tostring(err))
      if not d or d == "" then break end
      buf = buf .. d
    end
    fd:close()
    return testing.ws_parse_frames(buf)
  end

  it("closes a hand-made bad frame with its code over a real socket", function()
    for _, case in ipairs {
      { testing.ws_frame("text", "x", { mask = false }), 1002 },
      { testing.ws_frame("binary", "", { length = math.mininteger }), 1002 },
      { testing.ws_frame("text", "\xff"), 1007 },
    } do
      local fd, rest = raw("/echo")
      assert(fd:write(case[1]))
      local frames = read_all(fd, rest)
      assert.equal(1, #frames)
      assert.equal(case[2], frames[1].code)
    end
  end)

  it("stops reading a client that never reads its echoes: the worker's memory stays bounded", function()
    local function hwm()
      local f = assert(io.open("/proc/" .. p:worker_pids()[1] .. "/status"))
      local kb = f:read("a"):match("VmHWM:%s*(%d+)")
      f:close()
      return tonumber(kb)
    end
    local before = hwm()
    local out = py("noread")
    local mib = tonumber(out:match("stalled (%d+)"))
    assert(mib, out)
    -- What the sockets' buffers hold, not the 64 MiB tried.
    assert.is_true(mib < 40, out)
    assert.is_true(hwm() - before < 24 * 1024, "peak RSS grew by " .. (hwm() - before) .. " kB")
    H.wait_until(function()
      return (H.http_get(p.addr, "/stats") or ""):match("\r\n\r\n0$"):match("\r\n\r\n0$")
    end, 10, "the WebSocket closed")
  end)

  it("closes with 1011 and a FIN, not a reset, when the handler raises while the client sends", function()
    -- The handler's end closed the socket with the client's frames
    -- unread: an RST, which can make the client's kernel drop the close
    -- frame (and read_all fail on "connection reset").
    for _ = 1, 3 do
      -- The upgrade and the frames in one write: queued before the
      -- handler ends.
      local fd = assert(fdpool.connect(p.addr, 10))
      assert(fd:write(testing.build_request("GET", "/err", { headers = {
        Upgrade = "websocket", Connection = "Upgrade",
        ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==", ["Sec-WebSocket-Version"] = "13" } })
        .. testing.ws_frame("text", ("x"):rep(1000)):rep(64)))
      local buf = ""
      while not buf:find("\r\n\r\n", 1, true) do
        buf = buf .. assert(fd:read(4096))
      end
      local frames = read_all(fd, buf:sub(buf:find("\r\n\r\n", 1, true) + 4))
      assert.equal("about to fail", frames[1] and frames[1].data)
      assert.equal(1011, frames[#frames].code)
    end
  end)

  it("reads a frame trickled one byte per write", function()
    local fd, rest = raw("/echo")
    local bytes = testing.ws_frame("text", "trickle") .. testing.ws_frame("close", { 1000 })
    for i = 1, #bytes do
      assert(fd:write(bytes:sub(i, i)))
      H.sleep(0.002)
    end
    local frames = read_all(fd, rest)
    assert.equal("trickle", frames[1].data)
    assert.equal(1000, frames[2].code)
  end)

  it("cuts a frame whose bytes stop coming (frame_timeout)", function()
    local fd, rest = raw("/echo")
    assert(fd:write(testing.ws_frame("text", "hello"):sub(1, 4)))
    local frames = read_all(fd, rest)   -- the server closes (3 s in the fixture)
    assert.equal(0, #frames)
  end)

  it("closes the TCP connection when the client never answers its close", function()
    local fd, rest = raw("/close?code=4003")
    local frames = read_all(fd, rest)   -- never writes: EOF after close_timeout
    assert.equal(4003, frames[1].code)
  end)

  -- A client waiting on /echo in the background; its output file.
  local function waiting_client()
    local out = H.tmpdir() .. "/client.out"
    os.execute(("timeout 60 /usr/bin/python3 tests/fixtures/ws_client.py %s stop > %s 2>&1 &")
      :format(ws_url(p), out))
    H.wait_until(function() return (H.readfile(out) or ""):find("open hi\n", 1, true) end,
      20, "the client's echo")
    return out
  end

  it("closes WebSockets with 1001 on a reload (the stop notice)", function()
    local out = waiting_client()
    local ok, code, text = H.run(H.POOL .. " reload --control " .. H.quote(p.control))
    assert(ok, ("reload: exit %s: %s"):format(code, text))
    H.wait_until(function() return (H.readfile(out) or ""):find("closed", 1, true) end,
      20, "the client's close")
    assert.equal("open hi\nclosed 1001 server stopping\n", H.readfile(out))
  end)

  it("closes WebSockets with 1001 on a graceful stop, and the pool exits", function()
    local q = H.start_pool{ script = APP, workers = 1 }
    finally(function() q:stop() end)
    local out = H.tmpdir() .. "/client.out"
    os.execute(("timeout 60 /usr/bin/python3 tests/fixtures/ws_client.py ws://%s stop > %s 2>&1 &")
      :format(q.addr, out))
    H.wait_until(function() return (H.readfile(out) or ""):find("open hi\n", 1, true) end,
      20, "the client's echo")
    q:kill("QUIT")
    H.wait_until(function() return (H.readfile(out) or ""):find("closed", 1, true) end,
      20, "the client's close")
    assert.equal("open hi\nclosed 1001 server stopping\n", H.readfile(out))
    assert.equal(0, q:wait_exit(20))
  end)

  it("speaks wss:// on a TLS listener", function()
    local certs = dofile("tests/fixtures/tls_certs.lua")
    local dir = H.tmpdir()
    local c = certs.make(dir)
    local q = H.start_pool{ script = APP, workers = 1, listen = "127.0.0.1:0,tls",
      extra = { "--tls-cert", c.srv, "--tls-key", c.srv_key } }
    finally(function() q:stop() end)
    assert.truthy(q.addr, q:log())
    local addr = q.addr:gsub(",tls$", "")   -- (the certificate names 127.0.0.1)
    local ok, code, out = H.run(("timeout 60 /usr/bin/python3 tests/fixtures/ws_client.py wss://%s wss %s 2>&1")
      :format(addr, c.ca))
    assert(ok, ("ws_client.py wss: exit %s: %s"):format(code, out))
    assert.equal("text over tls\nbig 300000\nfragments ab\nclosed 1000\n", out)
  end)

  it("leaves no fd and no open WebSocket behind", function()
    local pid = p:worker_pids()[1]
    local before = H.fd_count(pid)
    for _ = 1, 20 do
      local fd, rest = raw("/echo")
      assert(fd:write(testing.ws_frame("text", "x") .. testing.ws_frame("close", { 1000 })))
      read_all(fd, rest)
    end
    H.wait_until(function() return H.fd_count(pid) <= before end, 10, "the worker's fds back")
    local _, _, body = testing.parse_response(assert(H.http_get(p.addr, "/stats")))
    assert.equal("0", body)
    assert.same({}, H.unexpected_errors(p:log(), { "boom after upgrade" }))
  end)
end)
