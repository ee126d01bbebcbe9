-- fdpool.testing.websocket: drive a WebSocket handler in memory
-- (testing.websocket): the client's upgrade request and masked frames
-- in, the 101 response and the server's frames out, decoded. Pure Lua
-- (masking with Lua's bit operators, so the server's C unmasking is
-- checked against an independent implementation).
local tconn = require "fdpool.testing.conn"
local thttp = require "fdpool.testing.http"

local M = {}

local OPCODE = { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 }
local NAME = {}
for k, v in pairs(OPCODE) do NAME[v] = k end

local function xor(data, key)
  local out = {}
  for i = 1, #data do
    out[i] = string.char(data:byte(i) ~ key:byte((i - 1) % 4 + 1))
  end
  return table.concat(out)
end

--- One client frame. kind: "text", "binary", "continuation", "close",
-- "ping", "pong" or an opcode number; opts: fin (default true), mask
-- (default true), key (4 bytes), rsv (bits 1-7 for RSV1-3, default 0),
-- length (claimed payload length, default #data: to lie, e.g. 2^63).
-- For "close", data may be {code, reason}.
function M.frame(kind, data, opts)
  opts = opts or {}
  local op = type(kind) == "number" and kind or OPCODE[kind]
  assert(op, "testing.ws_frame: unknown kind " .. tostring(kind))
  if type(data) == "table" then
    data = string.pack(">I2", data[1]) .. (data[2] or "")
  end
  data = data or ""
  local fin = opts.fin == false and 0 or 0x80
  local mask = opts.mask == false and 0 or 0x80
  local b1 = fin | ((opts.rsv or 0) << 4) | op
  local n = opts.length or #data
  local head
  if math.ult(n, 126) then
    head = string.char(b1, mask | n)
  elseif math.ult(n, 65536) then
    head = string.pack(">BBI2", b1, mask | 126, n)
  else
    head = string.pack(">BBi8", b1, mask | 127, n)
  end
  if mask == 0 then return head .. data end
  local key = opts.key or "\55\250\33\61"
  return head .. key .. xor(data, key)
end

--- Decode server frames: a list of {kind, data, fin, code (close),
-- reason (close), masked}, and the bytes left over (a partial frame).
function M.parse_frames(bytes)
  local frames, i = {}, 1
  while i + 1 <= #bytes do
    local b1, b2 = bytes:byte(i, i + 1)
    local n, j = b2 & 0x7f, i + 2
    if n == 126 then
      if j + 1 > #bytes then break end
      n = string.unpack(">I2", bytes, j)
      j = j + 2
    elseif n == 127 then
      if j + 7 > #bytes then break end
      n = string.unpack(">i8", bytes, j)
      j = j + 8
    end
    local key
    if b2 & 0x80 ~= 0 then key = bytes:sub(j, j + 3) j = j + 4 end
    if j + n - 1 > #bytes then break end
    local data = bytes:sub(j, j + n - 1)
    if key then data = xor(data, key) end
    local f = { kind = NAME[b1 & 0x0f] or (b1 & 0x0f), data = data,
      fin = b1 & 0x80 ~= 0, rsv = (b1 >> 4) & 7, masked = key ~= nil }
    if f.kind == "close" and #data >= 2 then
      f.code, f.reason = string.unpack(">I2", data), data:sub(3)
    end
    frames[#frames + 1] = f
    i = j + n
  end
  return frames, bytes:sub(i)
end

--- Run handler (http.serve's) on an in-memory upgrade to path, with the
-- client's frames after it. opts: frames (a list: strings are raw bytes,
-- tables {kind, data [, opts]} go through frame()), headers (more or
-- replaced request headers; false removes one), key, version, protocols,
-- chunks (split the input into reads of this size), timeout_after_input.
-- Returns a result {status, headers, frames (the server's, decoded),
-- messages (the text and binary frames' data), close (the server's close
-- frame or nil), rest (bytes after the frames), conn}, or nil, err, conn.
function M.websocket(handler, path, opts)
  opts = opts or {}
  local h = { Upgrade = "websocket", Connection = "Upgrade",
    ["Sec-WebSocket-Key"] = opts.key or "dGhlIHNhbXBsZSBub25jZQ==",
    ["Sec-WebSocket-Version"] = opts.version or "13" }
  if opts.protocols then h["Sec-WebSocket-Protocol"] = table.concat(opts.protocols, ", ") end
  for k, v in pairs(opts.headers or {}) do
    for name in pairs(h) do
      if name:lower() == k:lower() then h[name] = nil end
    end
    if v then h[k] = v end
  end
  local bytes = { thttp.build_request("GET", path, { headers = h }) }
  for _, f in ipairs(opts.frames or {}) do
    bytes[#bytes + 1] = type(f) == "string" and f or M.frame(f[1], f[2], f[3])
  end
  -- One read per frame (the head its own), or reads of opts.chunks bytes.
  local input = bytes
  if opts.chunks then
    bytes = table.concat(bytes)
    input = {}
    for i = 1, #bytes, opts.chunks do input[#input + 1] = bytes:sub(i, i + opts.chunks - 1) end
  end
  local c = tconn.conn{ input = input, timeout_after_input = opts.timeout_after_input }
  local fn = type(handler) == "table" and handler.handle or handler
  fn(c)
  local out = c:output()
  local status, headers, body, rest = thttp.parse_response(out, "GET")
  if not status then return nil, headers, c end
  local r = { status = status, headers = headers, body = body, conn = c }
  if status ~= 101 then return r end
  -- parse_response reads a 101 as 1xx (skipped): split by hand.
  local head_end = out:find("\r\n\r\n", 1, true)
  local head = out:sub(1, head_end + 1)
  r.headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do r.headers[k:lower()] = v end
  r.frames, r.rest = M.parse_frames(out:sub(head_end + 4))
  r.messages = {}
  for _, f in ipairs(r.frames) do
    if f.kind == "text" or f.kind == "binary" then r.messages[#r.messages + 1] = f.data end
    if f.kind == "close" then r.close = f end
  end
  local _ = body
  local _ = rest
  return r
end

return M
