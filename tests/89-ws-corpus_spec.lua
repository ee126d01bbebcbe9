-- tests/89-ws-corpus_spec.lua: a WebSocket server corpus after the
-- Autobahn|Testsuite's fuzzingclient (tests/ws_cases.lua: framing,
-- ping/pong, reserved bits and opcodes, fragmentation, UTF-8, close,
-- limits, permessage-deflate offered, the opening handshake) against
-- the real build/pool serving tests/fixtures/ws_echo.lua. Each case
-- writes its raw, masked client frames over a socket, reads everything
-- until the server closes the TCP connection (a FIN: a reset or a
-- server that never closes fails the case), and compares the server's
-- frames with the expected ones; then a fresh connection must still
-- echo and the worker must be the same process. The cases that send
-- megabytes run in the normal pass only (the ASan pass skips them).
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local testing = require "fdpool.testing"
local H = require "helpers"

local CASES = dofile("tests/ws_cases.lua")
local APP = "tests/fixtures/ws_echo.lua"
local ASAN = H.BUILD ~= "build"
local SAMPLE_KEY, SAMPLE_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
local KEY = "\55\250\33\61"

-- One client frame's bytes. Small payloads are masked by
-- fdpool.testing's pure-Lua masking (independent of the server's C);
-- large ones by fdpool.ws_mask (a byte loop in Lua would take seconds).
local function encode(f)
  if type(f) == "string" then return f end
  local kind, data, opts = f[1], f[2], f[3] or {}
  local bytes
  if type(data) ~= "string" or #data <= 4096 then
    bytes = testing.ws_frame(kind, data, opts)
  else
    local o = { length = #data, key = KEY }
    for k, v in pairs(opts) do o[k] = v end
    bytes = testing.ws_frame(kind, "", o) .. fdpool.ws_mask(data, KEY)
  end
  if opts.cut then
    -- the head claims the whole payload; only its first cut bytes go
    bytes = bytes:sub(1, #bytes - #data + opts.cut)
  end
  return bytes
end

local function request(path, opts)
  opts = opts or {}
  local h = { Host = "test", Upgrade = "websocket", Connection = "Upgrade",
    ["Sec-WebSocket-Key"] = SAMPLE_KEY, ["Sec-WebSocket-Version"] = "13" }
  for k, v in pairs(opts.headers or {}) do
    for name in pairs(h) do
      if name:lower() == k:lower() then h[name] = nil end
    end
    if v then h[k] = v end
  end
  local bytes = testing.build_request(opts.method or "GET", path, { headers = h, version = opts.version })
  if not h.Host then
    -- (build_request adds one)
    bytes = bytes:gsub("\r\nHost: [^\r]*", "", 1)
  end
  return bytes
end

-- The response head: status, headers (lower-case names), the bytes after it.
local function read_head(fd)
  local buf = ""
  while not buf:find("\r\n\r\n", 1, true) do
    local d, err = fd:read(4096)
    assert(d and d ~= "", "no response head: " .. tostring(err))
    buf = buf .. d
  end
  local i = buf:find("\r\n\r\n", 1, true)
  local head = buf:sub(1, i + 1)
  local headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do headers[k:lower()] = v end
  return tonumber(head:match("^HTTP/1%.1 (%d%d%d) ")), headers, buf:sub(i + 4), head
end

-- Everything the server sends until it closes; a reset or a read
-- timeout (5 s: the server must close) fails.
local function read_all(fd, buf)
  local parts = { buf }
  while true do
    local d, err = fd:read(65536)
    assert(d or not err, "the server did not close cleanly: " .. tostring(err))
    if not d or d == "" then break end
    parts[#parts + 1] = d
  end
  fd:close()
  local frames, rest = testing.ws_parse_frames(table.concat(parts))
  assert.equal("", rest, "bytes after the server's last whole frame")
  return frames
end

local function write(fd, bytes, chunk)
  if not chunk then
    assert(fd:write(bytes))
    return
  end
  for i = 1, #bytes, chunk do
    assert(fd:write(bytes:sub(i, i + chunk - 1)))
    if chunk == 1 and i % 8 == 0 then H.sleep(0.001) end
  end
end

local function show(data)
  if #data > 40 then return ("<%d bytes>"):format(#data) end
  return ("%q"):format(data)
end

local function describe_frames(frames)
  local t = {}
  for i, f in ipairs(frames) do
    if f.kind == "close" then
      t[i] = "close " .. tostring(f.code or (#f.data == 0 and "(empty)" or "?"))
    else
      t[i] = tostring(f.kind) .. " " .. show(f.data)
    end
  end
  return table.concat(t, ", ")
end

-- The server's frames against a case's expect list.
local function check(expect, got)
  local msg = "expected " .. describe_frames((function()
    local t = {}
    for i, e in ipairs(expect) do
      t[i] = { kind = e[1], data = e[1] == "close" and "" or e[2], code = e[1] == "close" and e[2] or nil }
    end
    return t
  end)()) .. "\n     got " .. describe_frames(got)
  assert(#got == #expect, msg)
  for i, e in ipairs(expect) do
    local f = got[i]
    assert(f.kind == e[1], msg)
    assert(f.fin and f.rsv == 0 and not f.masked, "frame " .. i .. ": FIN, no RSV, unmasked")
    if e[1] == "close" then
      if e[2] then
        assert(f.code == e[2], msg)
        assert(fdpool.utf8_check(f.reason) == 0, "the close reason is UTF-8")
      else
        assert(#f.data == 0 or f.code == 1000, msg)
      end
    else
      assert(f.data == e[2], msg)
    end
  end
end

describe("WebSocket corpus (Autobahn's sections) against build/pool", function()
  local p, pid

  setup(function()
    p = H.start_pool{ script = APP, workers = 1 }
    assert.truthy(p.addr, p:log())
    pid = p:worker_pids()[1]
  end)

  teardown(function()
    if not p then return end
    local pids = p:worker_pids()
    assert.equal(0, p:stop())
    assert.same({ pid }, pids, "the worker was replaced")
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  -- The server still serves: a fresh connection echoes, the worker is
  -- the one from the start.
  local function healthy()
    local fd = assert(fdpool.connect(p.addr, 5))
    assert(fd:write(request("/echo")))
    local status, _, rest = read_head(fd)
    assert.equal(101, status)
    assert(fd:write(encode { "text", "still here" } .. encode { "close", { 1000 } }))
    check({ { "text", "still here" }, { "close", 1000 } }, read_all(fd, rest))
    assert(H.alive(pid), "the worker died")
  end

  for _, c in ipairs(CASES.frames) do
    it(("%d: %s"):format(c.section, c.name), function()
      if c.heavy and ASAN then
        pending("heavy (megabytes): the normal pass only")
        return
      end
      local fd = assert(fdpool.connect(p.addr, 5))
      local bytes = {}
      for i, f in ipairs(c.frames) do bytes[i] = encode(f) end
      bytes = table.concat(bytes)
      local req = request(c.path or "/echo", { headers = c.headers })
      if c.with_request then
        assert(fd:write(req .. bytes))
      else
        assert(fd:write(req))
      end
      local status, headers, rest = read_head(fd)
      assert.equal(101, status)
      assert.equal(SAMPLE_ACCEPT, headers["sec-websocket-accept"])
      if c.no_extensions then
        assert.is_nil(headers["sec-websocket-extensions"], "an extension was accepted")
      end
      if not c.with_request then write(fd, bytes, c.chunk) end
      check(c.expect, read_all(fd, rest))
      healthy()
    end)
  end

  for _, c in ipairs(CASES.handshakes) do
    it("handshake: " .. c.name .. " -> " .. c.status, function()
      local fd = assert(fdpool.connect(p.addr, 5))
      assert(fd:write(request("/echo", c)))
      local status, headers, rest, head = read_head(fd)
      assert.equal(c.status, status, head)
      if status == 101 then
        assert.equal(c.accept or SAMPLE_ACCEPT, headers["sec-websocket-accept"])
        assert.equal("websocket", (headers["upgrade"] or ""):lower())
        assert.equal("upgrade", (headers["connection"] or ""):lower())
        -- the echo server speaks no subprotocol and no extension
        assert.is_nil(headers["sec-websocket-protocol"])
        assert.is_nil(headers["sec-websocket-extensions"])
        assert(fd:write(encode { "text", "hi" } .. encode { "close", { 1000 } }))
        check({ { "text", "hi" }, { "close", 1000 } }, read_all(fd, rest))
      else
        assert.is_nil(headers["sec-websocket-accept"])
        if status == 426 then assert.equal("13", headers["sec-websocket-version"]) end
        fd:close()
      end
      healthy()
    end)
  end
end)
