-- fdpool.http.websocket: WebSocket (RFC 6455) on a connection taken over
-- from http.serve. http.websocket(req, res [, opts]) answers the upgrade
-- and returns a ws object (receive, send, ping, close). Framing is here;
-- the handshake digest, unmasking and UTF-8 checks are C (src/wsproto.c,
-- through fdpool.ws_accept, ws_mask, utf8_check).
local fdpool = require "fdpool"

local M = {}

M.defaults = {
  max_payload = 1024 * 1024,  -- bytes of a message, fragments together (1009)
  timeout = nil,              -- seconds a wait for the client may last (a
                              -- receive waiting for a message, a send for
                              -- room); nil: no limit
  frame_timeout = 30,         -- seconds for a frame once its first byte
                              -- arrived, plus 1 s per frame_min_rate bytes
  frame_min_rate = 500,       -- bytes/s (a frame trickled slower is cut)
  close_timeout = 5,          -- seconds ws:close() waits for the reply
  protocols = nil,            -- subprotocols offered, in preference order
  origins = nil,              -- Origin values allowed (403 for others, and
                              -- for none); nil: any (check it yourself)
}

-- Close codes a peer may send (RFC 6455 7.4.1, IANA's registry): the
-- others (1004-1006, 1015, 1016-2999, < 1000, >= 5000) are a protocol error.
local function valid_code(c)
  return (c >= 1000 and c <= 1003) or (c >= 1007 and c <= 1014)
    or (c >= 3000 and c <= 4999)
end

local OP = { [0] = "continuation", [1] = "text", [2] = "binary", [8] = "close",
  [9] = "ping", [10] = "pong" }
local OPCODE = { text = 1, binary = 2, close = 8, ping = 9, pong = 10 }

-- One frame, server to client: FIN set, never masked.
local function frame(op, data)
  local n = #data
  if n < 126 then
    return string.char(0x80 | op, n) .. data
  elseif n < 65536 then
    return string.pack(">BBI2", 0x80 | op, 126, n) .. data
  end
  return string.pack(">BBI8", 0x80 | op, 127, n) .. data
end
M.frame = frame

-- Does a comma-separated header value hold this token (any case)?
-- (nil: no; src/lhttp.c, as fdpool.http's)
local has_token = fdpool._httptoken

-- Open WebSockets of this worker (weak), closed with 1001 on a stop.
local open = setmetatable({}, { __mode = "k" })
M.open = open

local WS = {}
WS.__index = WS
M.WS = WS

-- A message buffer that merges as it grows (each part at least twice the
-- next): a message of many small fragments costs O(log n) strings, not n.
local function push(parts, s)
  parts[#parts + 1] = s
  local n = #parts
  while n > 1 and #parts[n] >= #parts[n - 1] do
    parts[n - 1] = parts[n - 1] .. parts[n]
    parts[n] = nil
    n = n - 1
  end
end

-- Send bytes whole, one sender at a time (frames from several coroutines
-- must not interleave). true, or nil, err (the connection is then given
-- up: part of a frame may have gone).
function WS:_write(bytes)
  while self._sending do
    if self.state == "closed" then return nil, "closed" end
    if coroutine.status(self._sending) == "dead" then
      -- The sender was killed mid-frame (--timeout, fdpool.kill): the
      -- stream is broken.
      self:_drop()
      return nil, "closed"
    end
    fdpool.sleep(0.001)
  end
  if self.state == "closed" then return nil, "closed" end
  self._sending = coroutine.running()
  local ok, sent, err = pcall(self.conn.send, self.conn, bytes)
  self._sending = nil
  if not ok then
    -- Raised: e.g. the conn's wait is taken by the coroutine reading it.
    err = tostring(sent)
    sent = nil
  end
  if not sent then
    self:_drop()
    return nil, err or "closed"
  end
  return true
end

-- Close the connection without a close handshake.
function WS:_drop()
  if self.state ~= "closed" then
    self.state = "closed"
    open[self] = nil
    self.conn:close()
  end
end

-- The handler returned (or raised) with the ws open: a close frame
-- (unless one went already), then the TCP close, lingering as _fail
-- does: closing with the client's frames unread would send an RST, and
-- an RST can make the client's kernel drop the close frame.
function WS:_abandon(code)
  if self.state ~= "closed" and not self._sending then
    local ok = true
    if not self._close_sent then
      self._close_sent = true
      ok = self:_write(frame(8, string.pack(">I2", code)))
    end
    if ok and self.state ~= "closed" then
      local http = require "fdpool.http"
      http._linger(self.conn)
    end
  end
  self:_drop()
end

-- Fail the connection (RFC 6455 7.1.7): a close frame with code, then
-- the TCP close, lingering so the frame is not lost to a reset.
function WS:_fail(code, why)
  if self.state ~= "closed" then
    if not self._close_sent then
      self._close_sent = true
      self:_write(frame(8, string.pack(">I2", code) .. why:sub(1, 123)))
    end
    if self.state ~= "closed" then
      local http = require "fdpool.http"
      http._linger(self.conn)
      self:_drop()
    end
  end
  return nil, why, code
end

--- Send a message: text (default; must be valid UTF-8) or binary.
-- @treturn[1] true
-- @return[2] nil
-- @treturn[2] string "closed" or "timeout" (the connection is given up)
function WS:send(data, kind)
  assert(type(data) == "string", "ws:send: data must be a string")
  local op = kind == nil and 1 or OPCODE[kind]
  assert(op == 1 or op == 2, "ws:send: kind must be \"text\" or \"binary\"")
  if op == 1 and fdpool.utf8_check(data) ~= 0 then
    error("ws:send: a text message must be valid UTF-8 (send it as \"binary\")", 2)
  end
  if self.state ~= "open" then return nil, "closed" end
  return self:_write(frame(op, data))
end

--- Send a ping (data: at most 125 bytes); its pong comes through receive.
function WS:ping(data)
  data = data or ""
  assert(#data <= 125, "ws:ping: at most 125 bytes")
  if self.state ~= "open" then return nil, "closed" end
  return self:_write(frame(9, data))
end

--- Send a pong (unsolicited: a heartbeat; pings are answered already).
function WS:pong(data)
  data = data or ""
  assert(#data <= 125, "ws:pong: at most 125 bytes")
  if self.state ~= "open" then return nil, "closed" end
  return self:_write(frame(10, data))
end

-- Read n bytes of the frame in progress; a failure gives up the connection.
local function need(self, n)
  if n == 0 then return "" end
  local d, err = self.conn:receive(n)
  if not d then
    self.conn:setdeadline(nil)
    self:_drop()
    return nil, err
  end
  return d
end

-- One frame: opcode, fin, payload (unmasked), or nil, err [, code].
function WS:_frame()
  local conn = self.conn
  -- The first byte may take as long as the client likes (timeout); from
  -- there the frame has frame_timeout plus 1 s per frame_min_rate bytes.
  local b, err = conn:receive(1)
  if not b then
    if err == "timeout" then return nil, "timeout" end
    self:_drop()
    return nil, err
  end
  conn:setdeadline(self._opts.frame_timeout, self._opts.frame_min_rate)
  local b1 = b:byte()
  local h
  h, err = need(self, 1)
  if not h then return nil, err end
  local b2 = h:byte()
  local fin, op, len = b1 & 0x80 ~= 0, b1 & 0x0f, b2 & 0x7f
  if b1 & 0x70 ~= 0 then
    conn:setdeadline(nil)
    return self:_fail(1002, "reserved bits set")
  end
  if not OP[op] then
    conn:setdeadline(nil)
    return self:_fail(1002, "bad opcode " .. op)
  end
  if op >= 8 and not fin then
    conn:setdeadline(nil)
    return self:_fail(1002, "fragmented control frame")
  end
  if op >= 8 and len > 125 then
    conn:setdeadline(nil)
    return self:_fail(1002, "control frame longer than 125 bytes")
  end
  if b2 & 0x80 == 0 then
    conn:setdeadline(nil)
    return self:_fail(1002, "unmasked client frame")
  end
  if len == 126 then
    h, err = need(self, 2)
    if not h then return nil, err end
    len = string.unpack(">I2", h)
  elseif len == 127 then
    h, err = need(self, 8)
    if not h then return nil, err end
    len = string.unpack(">i8", h)
    if len < 0 then
      conn:setdeadline(nil)
      return self:_fail(1002, "payload length with its high bit set")
    end
  end
  -- A data frame out of sequence is known from its head.
  if op == 0 and not self._op then
    conn:setdeadline(nil)
    return self:_fail(1002, "continuation frame without a message")
  end
  if (op == 1 or op == 2) and self._op then
    conn:setdeadline(nil)
    return self:_fail(1002, "new message inside a fragmented one")
  end
  if op < 8 and len > self._opts.max_payload - (self._size or 0) then
    conn:setdeadline(nil)
    return self:_fail(1009, "message larger than " .. self._opts.max_payload .. " bytes")
  end
  local key
  key, err = need(self, 4)
  if not key then return nil, err end
  if op == 1 or (op == 0 and self._op == 1) then
    -- Text: checked as its bytes come, so that invalid UTF-8 fails the
    -- connection at once (Autobahn's "fail fast"), not once the client
    -- has sent (or stopped sending) the rest of the frame. The state
    -- carries a character split across reads and fragments.
    local st = op == 1 and 0 or self._utf8
    local data, parts, got = "", nil, 0
    while got < len do
      local d
      d, err = conn:receiveany(len - got)
      if not d then
        conn:setdeadline(nil)
        self:_drop()
        return nil, err
      end
      d = fdpool.ws_mask(d, key, got)
      st = fdpool.utf8_check(d, st)
      if not st then
        conn:setdeadline(nil)
        self._op, self._parts, self._size = nil, nil, 0
        return self:_fail(1007, "invalid UTF-8 in a text message")
      end
      got = got + #d
      if got == len and not parts then
        data = d   -- the usual case: the payload was there in one piece
      else
        parts = parts or {}
        parts[#parts + 1] = d
      end
    end
    conn:setdeadline(nil)
    return op, fin, parts and table.concat(parts) or data, st
  end
  local data
  data, err = need(self, len)
  if not data then return nil, err end
  conn:setdeadline(nil)
  return op, fin, fdpool.ws_mask(data, key)
end

-- A close frame's payload: code, reason, or nil, why, code to fail with.
local function parse_close(data)
  if #data == 0 then return 1005, "" end
  if #data == 1 then return nil, "close frame of 1 byte", 1002 end
  local code = string.unpack(">I2", data)
  if not valid_code(code) then return nil, "invalid close code " .. code, 1002 end
  local reason = data:sub(3)
  if fdpool.utf8_check(reason) ~= 0 then
    return nil, "close reason is not UTF-8", 1007
  end
  return code, reason
end

--- The next message or control frame.
-- @treturn[1] string the data (a whole message: fragments joined)
-- @treturn[1] string "text", "binary", "ping" (answered already),
-- "pong" or "close" (answered already; the data is the reason, and a
-- third value the code, 1005 when none was given)
-- @return[2] nil
-- @treturn[2] string "closed" (no close frame: the connection is gone),
-- "timeout" (nothing within the timeout; the ws stays usable), or what
-- was wrong with the client's frames (the connection was failed)
-- @treturn[2] integer the close code sent for a protocol error
function WS:receive()
  if self.state == "closed" then return nil, "closed" end
  self._reading = true
  local r1, r2, r3 = self:_receive()
  self._reading = false
  return r1, r2, r3
end

function WS:_receive()
  while true do
    local op, fin, data, utf8 = self:_frame()
    if not op then return nil, fin, data end
    if op == 8 then
      local code, reason, fcode = parse_close(data)
      if not code then return self:_fail(fcode, reason) end
      if not self._close_sent then
        self._close_sent = true
        self:_write(frame(8, code == 1005 and "" or string.pack(">I2", code)))
      end
      -- The handshake is done: the server closes the TCP connection
      -- first (RFC 6455 7.1.1), lingering as _fail does: what the client
      -- sent after its close (ignored) would else be unread at the
      -- close, and the reset sent for it can make the client's kernel
      -- drop the close frame. A client that closes on the FIN ends the
      -- wait at once.
      if self.state ~= "closed" then
        self.state = "closing"   -- (a send from another coroutine: "closed")
        local http = require "fdpool.http"
        http._linger(self.conn)
      end
      self:_drop()
      return reason, "close", code
    elseif op == 9 then
      if self.state == "open" then self:_write(frame(10, data)) end
      if self._close_sent then goto continue end
      return data, "ping"
    elseif op == 10 then
      if self._close_sent then goto continue end
      return data, "pong"
    end
    -- Data frames (in sequence: _frame checked; a text frame's UTF-8
    -- too, up to its end: utf8 is the state there).
    if op ~= 0 then
      self._op, self._parts, self._size, self._utf8 = op, {}, 0, 0
    end
    if self._op == 1 then
      self._utf8 = utf8
      if fin and utf8 ~= 0 then
        self._op, self._parts, self._size = nil, nil, 0
        return self:_fail(1007, "invalid UTF-8 in a text message")
      end
    end
    if fin then
      local msg_op, parts = self._op, self._parts
      self._op, self._parts, self._size = nil, nil, 0
      if #parts > 0 then
        data = table.concat(parts) .. data
      end
      if not self._close_sent then
        return data, msg_op == 1 and "text" or "binary"
      end
    else
      if #data > 0 then push(self._parts, data) end
      self._size = self._size + #data
    end
    ::continue::
  end
end

-- Send a close frame once; false when the connection is gone.
function WS:_send_close(code, reason)
  if not self._close_sent then
    self._close_sent = true
    if self.state == "open" then self.state = "closing" end
    if not self:_write(frame(8, string.pack(">I2", code) .. (reason or ""))) then return false end
  end
  return self.state ~= "closed"
end

--- Start the closing handshake: send a close frame (code default 1000,
-- reason at most 123 bytes), then, unless another coroutine is reading
-- this ws, read until the client's close (data is dropped) for at most
-- close_timeout s, and close the connection.
-- @treturn boolean true
-- A close code and reason this side may send, or raise (as `who`).
local function check_close(code, reason, who)
  assert(math.type(code) == "integer" and (code == 1000 or code == 1001
    or (code >= 1002 and code <= 1003) or (code >= 1007 and code <= 1014)
    or (code >= 3000 and code <= 4999)), who .. ": invalid close code")
  assert(type(reason) == "string" and #reason <= 123, who .. ": the reason is at most 123 bytes")
  -- (A peer fails a close whose reason is not UTF-8 with 1007.)
  assert(fdpool.utf8_check(reason) == 0, who .. ": the reason must be UTF-8")
end

function WS:close(code, reason)
  code = code or 1000
  reason = reason or ""
  check_close(code, reason, "ws:close")
  if self.state == "closed" then return true end
  if not self:_send_close(code, reason) then return true end
  if self._reading then return true end  -- the reader sees the reply
  local conn = self.conn
  conn:setdeadline(self._opts.close_timeout)
  while self.state ~= "closed" do
    local data, kind = self:_receive()
    if data == nil or kind == "close" then break end
  end
  conn:setdeadline(nil)
  self:_drop()
  return true
end

--- Send every open WebSocket of this worker a close (code default 1001,
-- going away) without waiting: their handlers see the clients' replies
-- in ws:receive(). Returns how many.
function M.close_all(code, reason)
  code, reason = code or 1001, reason or "server stopping"
  check_close(code, reason, "close_all")
  local n = 0
  for ws in pairs(open) do
    if ws.state == "open" then
      ws:_send_close(code, reason)
      n = n + 1
    end
  end
  return n
end

-- The stop notice (reload, graceful stop, recycling): close them all
-- with 1001 instead of letting the stop cut them. Registered once per
-- worker, at the first upgrade.
local registered = false
local function on_stop()
  local w = fdpool.worker
  if registered or not w or type(w.on_stop) ~= "function" then return end
  registered = true
  w.on_stop(function() M.close_all(1001, "server stopping") end)
end

--- Answer a WebSocket upgrade on req/res (inside an http.serve handler).
-- @treturn[1] table the ws object
-- @return[2] nil
-- @treturn[2] string why the handshake was refused (400 sent, or 426
-- with Sec-WebSocket-Version: 13 for another version)
function M.upgrade(req, res, options)
  local opts = {}
  for k, v in pairs(M.defaults) do opts[k] = v end
  for k, v in pairs(options or {}) do
    if M.defaults[k] == nil and k ~= "timeout" and k ~= "protocols" and k ~= "origins" then
      error("unknown websocket option '" .. tostring(k) .. "'", 2)
    end
    if (k == "origins" or k == "protocols") and v ~= nil then
      local ok = type(v) == "table"
      for _, o in ipairs(ok and v or {}) do ok = ok and type(o) == "string" end
      if not ok then
        error("websocket option '" .. k .. "' must be a list of strings, got " .. type(v), 2)
      end
    elseif k ~= "origins" and k ~= "protocols" and (math.type(v) == nil or v ~= v or v < 0) then
      -- (checked here, before the 101: conn:settimeout(opts.timeout)
      -- raised after the handshake was sent)
      error("websocket option '" .. tostring(k) .. "' must be a number >= 0, got "
        .. (type(v) == "number" and tostring(v) or type(v)), 2)
    end
    opts[k] = v
  end
  assert(not res.started, "http.websocket: the response has started")
  local h = req.headers
  local why
  if req.method ~= "GET" then
    why = "method must be GET"
  elseif req.version ~= "1.1" then
    why = "HTTP/1.1 required"
  elseif not has_token(h["upgrade"], "websocket") then
    why = "Upgrade: websocket missing"
  elseif not has_token(h["connection"], "upgrade") then
    why = "Connection: Upgrade missing"
  elseif (req._length or 0) > 0 or req._chunked then
    -- Its bytes would be read as frames.
    why = "a request body with the upgrade"
  end
  if not why and h["sec-websocket-version"] ~= "13" then
    -- (RFC 9110 15.5.22: a 426 names the protocol to upgrade to.)
    res:status(426):header("Sec-WebSocket-Version", "13"):header("Upgrade", "websocket")
    res:send("unsupported WebSocket version (13 only)\n")
    return nil, "unsupported WebSocket version"
  end
  local accept = not why and fdpool.ws_accept(h["sec-websocket-key"] or "")
  if not why and not accept then why = "bad Sec-WebSocket-Key" end
  if why then
    res:status(400)
    res:send("bad WebSocket handshake: " .. why .. "\n")
    return nil, "bad handshake: " .. why
  end
  if opts.origins then
    -- A browser sends the page's Origin with the upgrade, and cookies:
    -- a page of another site could otherwise talk as the user.
    local origin, allowed = (h["origin"] or ""):lower(), false
    for _, o in ipairs(opts.origins) do
      if origin ~= "" and origin == o:lower() then allowed = true break end
    end
    if not allowed then
      res:status(403)
      res:send("WebSocket origin not allowed\n")
      return nil, "origin not allowed"
    end
  end
  local headers = {}
  for k, v in pairs(res._headers or {}) do headers[k] = v end
  headers["Upgrade"] = "websocket"
  headers["Sec-WebSocket-Accept"] = accept
  local protocol
  if opts.protocols and h["sec-websocket-protocol"] then
    for p in h["sec-websocket-protocol"]:gmatch("[^,%s]+") do
      for _, mine in ipairs(opts.protocols) do
        if p == mine then protocol = p break end
      end
      if protocol then break end
    end
  end
  headers["Sec-WebSocket-Protocol"] = protocol
  local conn = res:takeover(101)
  local ok = conn:sendresponse("HTTP/1.1 101 Switching Protocols\r\n", headers,
    nil, nil, false, "Upgrade", nil)
  if not ok then return nil, "closed" end
  conn:settimeout(opts.timeout)
  local ws = setmetatable({ conn = conn, state = "open", protocol = protocol,
    _opts = opts, _size = 0 }, WS)
  open[ws] = true
  res._ws = ws
  on_stop()
  local w = fdpool.worker
  if w and type(w.exiting) == "function" and w.exiting() then
    -- Upgraded after the stop notice: say so at once.
    ws:_send_close(1001, "server stopping")
  end
  return ws
end

return M
