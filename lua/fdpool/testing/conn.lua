-- fdpool.testing.conn: the in-memory conn of fdpool.testing (testing.conn,
-- testing.parse_head): the real conn's API and return conventions, with
-- readrequest and readchunked mirroring the C parser in
-- src/http_parse.c, so a handler runs in the test's own process. Pure Lua.
local M = {}

local has_fdpool, fdpool = pcall(require, "fdpool")
if not has_fdpool then fdpool = nil end

-- ---- small helpers ---------------------------------------------------

-- Raise as luaL_argerror does; level 3 blames the caller of the method
-- that called argerror (4 from a helper of that method).
local function argerror(n, fname, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), level or 3)
end

local function optinteger(v, n, fname, default)
  if v == nil then return default end
  local i = math.tointeger(v)
  if i == nil then
    argerror(n, fname, type(v) == "number" and "number has no integer representation"
      or "number expected, got " .. type(v), 4)
  end
  return i
end

-- "ip:port" / "[v6]:port" / "unix" / "unix:PATH" -> ip|path, port, family
local function split_addr(s)
  if s == "unix" then return "", nil, "unix" end
  local path = s:match("^unix:(.*)$")
  if path then return path, nil, "unix" end
  local ip6, p6 = s:match("^%[(.*)%]:(%d+)$")
  if ip6 then return ip6, tonumber(p6), "inet6" end
  local ip, port = s:match("^([^:]*):(%d+)$")
  if ip then return ip, tonumber(port), "inet" end
  error("bad address '" .. tostring(s) .. "' (expected ip:port, [v6]:port or unix:path)", 3)
end

-- ---- the in-memory conn ----------------------------------------------

local LINE_MAX = 1 << 20      -- as LINE_MAX_BYTES in src/lconn.c
local HEAD_MAX_DEFAULT = 32768   -- as src/lhttp.c
local HEADERS_MAX = 100

local Conn = {}
local conn_mt = {
  __index = Conn,
  __name = "fdpool.testing.conn",
  __tostring = function(c)
    return c.closed and "fdpool.testing.conn (closed)" or "fdpool.testing.conn"
  end,
}
conn_mt.__close = function(c) c:close() end

--- An in-memory conn for running a handler in the test's own process.
-- Same methods and return values as the real conn (docs/api.md section 2).
-- The input is delivered as if each chunk arrived in one read(2):
-- `buffered()` counts what has been read and not consumed. At the end of
-- the input, reads fail with `"closed"` (the client closed or half-closed),
-- or with `"timeout"` when `timeout_after_input` is set (the client keeps
-- the connection open and says nothing more).
-- @tparam[opt] table opts `input` (a string, or a list of strings: the
-- chunks), `peer` ("ip:port", "[v6]:port" or "unix"; default
-- "127.0.0.1:40000"), `sock` (default "127.0.0.1:8080"),
-- `timeout_after_input` (boolean, default false), `live` (boolean: more
-- input may come with `conn:feed`; a read that finds nothing waits, by
-- yielding its coroutine, until `conn:feed` or `conn:hangup`: run such
-- handlers with `testing.tasks()`; outside a coroutine it fails with
-- "timeout").
-- @treturn table the conn; besides the methods, `conn:output()` (all bytes
-- sent), `conn.closed` (closed by the handler or parked), `conn.parked`,
-- `conn.timeout` (as last set by settimeout).
function M.conn(opts)
  opts = opts or {}
  local input = opts.input or ""
  local chunks = {}
  if type(input) == "string" then
    chunks[1] = input
  elseif type(input) == "table" then
    for i, s in ipairs(input) do
      if type(s) ~= "string" then
        error("input chunk " .. i .. " must be a string", 2)
      end
      chunks[#chunks + 1] = s
    end
  else
    error("input must be a string or a list of strings", 2)
  end
  local peer = opts.peer or "127.0.0.1:40000"
  local sock = opts.sock or "127.0.0.1:8080"
  split_addr(peer)
  split_addr(sock)
  return setmetatable({
    closed = false, parked = false, timeout = 60, timeout_mode = "b",
    _chunks = chunks, _next = 1, _buf = "", _out = {},
    _peer = peer, _sock = sock, _eof_timeout = opts.timeout_after_input and true or false,
    _in = 0, _outn = 0, _shut_rd = false, _shut_wr = false,
    _live = opts.live and true or false, _hungup = false, _version = 0,
  }, conn_mt)
end

--- A live conn's client sends more (a string): a reader waiting on it
-- runs at the next `tasks:run()`.
function Conn:feed(data)
  if not self._live then error("feed: not a live conn (testing.conn{live = true})", 2) end
  if type(data) ~= "string" then argerror(1, "feed", "string expected, got " .. type(data)) end
  self._chunks[#self._chunks + 1] = data
  self._version = self._version + 1
end

--- A live conn's client closes: reads see the end of the input.
function Conn:hangup()
  self._hungup = true
  self._version = self._version + 1
end

-- What a waiting read yields to testing.tasks (a handler's own
-- coroutines would take it for theirs: run them through tasks too).
local WAIT = setmetatable({}, { __name = "fdpool.testing.wait" })

-- A live conn with nothing to read: wait (yield) for feed/hangup, one
-- reader at a time as the real conn. "timeout" when it cannot yield.
function Conn:_wait()
  if not coroutine.isyieldable() then return "timeout" end
  self._reader = coroutine.running()
  coroutine.yield(WAIT, self)
  self._reader = nil
  return "again"
end

-- nil, "busy" when another coroutine waits to read this conn.
function Conn:_busy()
  local r = self._reader
  return r ~= nil and r ~= coroutine.running()
end

--- Everything the handler sent, as one string.
function Conn:output()
  return table.concat(self._out)
end

-- One read(2): "data", "eof" or "timeout".
function Conn:_fill()
  if self._shut_rd then return "eof" end
  while self._chunks[self._next] do
    local s = self._chunks[self._next]
    self._next = self._next + 1
    if #s > 0 then
      self._buf = self._buf .. s
      self._in = self._in + #s
      return "data"
    end
  end
  if self._live and not self._hungup and not self.closed then
    return self:_wait() == "again" and self:_fill() or "timeout"
  end
  return self._eof_timeout and "timeout" or "eof"
end

-- nil, reason, partial: the partial data is handed over and dropped.
function Conn:_fail(reason, prefix)
  local partial = (prefix or "") .. self._buf
  self._buf = ""
  return nil, reason, partial
end

local function pattern_of(pat)
  if type(pat) == "number" then
    local n = math.tointeger(pat)
    if n == nil then argerror(1, "receive", "number has no integer representation", 4) end
    if n < 0 then argerror(1, "receive", "byte count must not be negative", 4) end
    return "count", n
  end
  pat = pat == nil and "l" or pat
  if type(pat) ~= "string" then argerror(1, "receive", "string expected, got " .. type(pat), 4) end
  pat = pat:gsub("^%*", "")
  if pat == "l" then return "line" end
  if pat == "a" then return "all" end
  argerror(1, "receive", "invalid receive pattern (expected 'l', 'a' or a byte count)", 4)
end

--- Read by pattern, as LuaSocket: "l"/"*l" (default) a line without its
-- LF and one CR before it, "a"/"*a" all until the end, or n bytes.
-- @treturn[1] string data (with `prefix` in front)
-- @return[2] nil
-- @treturn[2] string "closed", "timeout" or "line too long"
-- @treturn[2] string partial: everything buffered (with `prefix`)
function Conn:receive(pat, prefix)
  local kind, count = pattern_of(pat)
  if prefix ~= nil and type(prefix) ~= "string" and type(prefix) ~= "number" then
    argerror(2, "receive", "prefix must be a string")
  end
  prefix = prefix ~= nil and tostring(prefix) or ""
  if self:_busy() then return nil, "busy" end
  while true do
    if self.closed then return self:_fail("closed", prefix) end
    local buf = self._buf
    if kind == "count" and #buf >= count then
      self._buf = buf:sub(count + 1)
      return prefix .. buf:sub(1, count)
    end
    if kind == "line" then
      local nl = buf:find("\n", 1, true)
      if nl then
        self._buf = buf:sub(nl + 1)
        local line = buf:sub(1, nl - 1)
        if line:sub(-1) == "\r" then line = line:sub(1, -2) end
        return prefix .. line
      end
      if #buf > LINE_MAX then return self:_fail("line too long", prefix) end
    end
    local r = self:_fill()
    if r == "eof" then
      if kind == "all" then
        self._buf = ""
        return prefix .. buf
      end
      return self:_fail("closed", prefix)
    elseif r == "timeout" then
      return self:_fail("timeout", prefix)
    end
  end
end

--- What is buffered, or else the next chunk of input: 1 to max bytes.
-- @treturn[1] string data
-- @return[2] nil
-- @treturn[2] string "closed" or "timeout"
-- @treturn[2] string partial ("")
function Conn:receiveany(max)
  local n = math.tointeger(max)
  if n == nil then
    argerror(1, "receiveany", type(max) == "number" and "number has no integer representation"
      or "number expected, got " .. type(max))
  end
  if n <= 0 then argerror(1, "receiveany", "max must be positive") end
  if self:_busy() then return nil, "busy" end
  while true do
    if self.closed then return self:_fail("closed") end
    local buf = self._buf
    if #buf > 0 then
      self._buf = buf:sub(n + 1)
      return buf:sub(1, n)
    end
    local r = self:_fill()
    if r == "eof" then return self:_fail("closed") end
    if r == "timeout" then return self:_fail("timeout") end
  end
end

-- The line at position i of s (up to LF) without CR LF, the position
-- after the LF, and whether the line ended in CRLF (crlf_line in
-- src/http_parse.c: a bare LF is an error there).
local function line_at(s, i)
  local nl = s:find("\n", i, true)
  local line = s:sub(i, nl - 1)
  if line:sub(-1) == "\r" then return line:sub(1, -2), nl + 1, true end
  return line, nl + 1, false
end

--- Parse one request head (the request line and the header lines up to
-- and including the empty line), with the rules of fdp_http_parse_head()
-- in src/http_parse.c. Exposed for tests of other parsers.
-- @tparam string head the head, ending with an empty line
-- @treturn[1] table {method, target, path, query, version, headers}
-- @return[2] nil
-- @treturn[2] string "bad request line", "unsupported HTTP version", "bad
-- header line", "bad header value" or "too many headers"
-- @treturn[2] string the method, when the request line parsed
function M.parse_head(head)
  local line, nxt, crlf = line_at(head, 1)
  -- request-line = method SP request-target SP HTTP-version CRLF
  local method, target, major, minor = line:match(
    "^([A-Za-z0-9!#$%%&'*+%-.^_`|~]+) ([^%z\1- \127]+) HTTP/(%d)%.(%d)$")
  if not crlf or not method then return nil, "bad request line" end
  if major ~= "1" then return nil, "unsupported HTTP version", method end
  local q = target:find("?", 1, true)
  local path = q and target:sub(1, q - 1) or target
  -- absolute-form ("http://host/p?q"): the path after the authority,
  -- as src/lhttp.c's target_path gives it
  local after = path:match("^%a[%w+.-]*://[^/]*(.*)$")
  if after then path = after ~= "" and after or "/" end
  local req = {
    method = method, target = target,
    path = path,
    query = q and target:sub(q + 1) or "",
    version = minor == "0" and "1.0" or "1.1",
  }
  local headers, nh = {}, 0
  while true do
    line, nxt, crlf = line_at(head, nxt)
    if not crlf then return nil, "bad header line", method end
    if line == "" then break end
    nh = nh + 1
    if nh > HEADERS_MAX then return nil, "too many headers", method end
    local name, rest = line:match("^([A-Za-z0-9!#$%%&'*+%-.^_`|~]+):(.*)$")
    if not name then return nil, "bad header line", method end
    name = name:lower()
    local value = rest:match("^[ \t]*(.-)[ \t]*$")
    if value:find("[%z\1-\8\10-\31\127]") then return nil, "bad header value", method end
    local old = headers[name]
    headers[name] = old and (old .. ", " .. value) or value
  end
  -- an absolute-form target's authority is the host (RFC 9112 3.2.2),
  -- as src/lhttp.c's push_fields sets it
  local authority = target:match("^%a[%w+.-]*://([^/?#]*)")
  if authority then headers.host = authority end
  req.headers = headers
  return req
end

--- Read one HTTP/1.x request head, as the real conn:readrequest: empty
-- lines before it are skipped, the body stays buffered.
-- @tparam[opt=32768] integer max bytes of request line and headers
-- @tparam[opt] number head seconds for the whole head (recorded as
-- `conn.head_timeout`; in memory nothing waits)
-- @treturn[1] table {method, target, path, query, version ("1.0"|"1.1"),
-- headers (lower-case names; repeated ones joined with ", ")}
-- @return[2] nil
-- @treturn[2] string "closed", "timeout", "uri too long", "header too large", "bad request
-- line", "unsupported HTTP version", "bad header line", "bad header
-- value", "too many headers" or "bad request: truncated"
-- @treturn[2] string the method, when the request line parsed
-- A head past max: "uri too long" when its request line alone is past
-- it (414), else "header too large" (431), as the real conn.
local function too_large(s, max)
  if not s:sub(1, max):find("\n", 1, true) then return "uri too long" end
  return "header too large"
end

-- A request line none could finish, judged on the head's first 256
-- bytes (src/http_parse.c fdp_http_line_hopeless): refused at once.
local function hopeless(s)
  s = s:sub(1, 256)
  local method, rest = s:match("^([%w!#$%%&'*+%-.^_`|~]*)(.*)$")
  if rest == "" then return false end
  if method == "" or rest:sub(1, 1) ~= " " then return true end
  local target
  target, rest = rest:sub(2):match("^([^%c ]*)(.*)$")
  if rest == "" then return false end
  if target == "" or rest:sub(1, 1) ~= " " then return true end
  local want = "HTTP/0.0\r\n"
  for i = 2, math.min(#rest, #want + 1) do
    local c, w = rest:sub(i, i), want:sub(i - 1, i - 1)
    if w == "0" then
      if not c:find("^%d$") then return true end
    elseif c ~= w then
      return true
    end
  end
  return false
end

function Conn:readrequest(max, head)
  max = optinteger(max, 1, "readrequest", HEAD_MAX_DEFAULT)
  if max <= 0 then argerror(1, "readrequest", "the limit must be positive") end
  if head ~= nil and type(head) ~= "number" then
    argerror(2, "readrequest", "number expected, got " .. type(head))
  end
  self.head_timeout = head
  while true do
    if self.closed then return nil, "closed" end
    -- Ignore empty lines before a request (RFC 9112 2.2).
    self._buf = self._buf:gsub("^[\r\n]+", "")
    local s = self._buf
    local _, hend = s:find("\n\r?\n")
    if hend then
      if hend > max then return nil, too_large(s, max) end
      local req, err, method = M.parse_head(s:sub(1, hend))
      if not req then return nil, err, method end
      self._buf = s:sub(hend + 1)
      return req
    end
    if #s > max then return nil, too_large(s, max) end
    if hopeless(s) then return nil, "bad request line", nil end
    local r = self:_fill()
    if r == "eof" then
      local truncated = #self._buf > 0
      self._buf = ""
      return nil, truncated and "bad request: truncated" or "closed"
    elseif r == "timeout" then
      return nil, "timeout"
    end
  end
end

-- The chunked decoder of src/http_parse.c (fdp_http_chunked_next), byte
-- by byte with the same states and limits: returns "again", "data" (the
-- chunk's data starts at byte i) or "done" (the body ended before byte i),
-- and the position after what it consumed; or nil, error, the position
-- after the offending byte.
local EXT_MAX, TRAILERS_MAX, TRAILER_BYTES, EXCESS_MAX = 1024, 100, 8192, 16384
local function tchar(c) return c:find("^[A-Za-z0-9!#$%%&'*+%-.^_`|~]$") ~= nil end
local function fieldbyte(c) return c == "\t" or (c >= " " and c ~= "\127") end
local function ows(c) return c == " " or c == "\t" end

local function chunked_next(d, s, i)
  if d.err then return nil, d.err, i end
  local function fail(e) d.err = e; return nil, e, i end
  while true do
    if d.state == "done" then return "done", i end
    if d.state == "data" then
      if d.left > 0 then return "data", i end
      d.state = "data_cr"
    end
    if i > #s then return "again", i end
    local c, st = s:sub(i, i), d.state
    i = i + 1
    if st:sub(1, 3) == "tr_" then
      d.trailer_bytes = d.trailer_bytes + 1
      if d.trailer_bytes > TRAILER_BYTES then return fail("bad trailer") end
    end
    local ext = function()
      d.ext = d.ext + 1
      return d.ext <= EXT_MAX
    end
    if st == "size" then
      local x = tonumber(c, 16)
      if x and c:find("^%x$") then
        d.ndigits = d.ndigits + 1
        if d.ndigits > 16 then return fail("bad chunk size") end
        -- 16 digits may pass 2^63: saturate (over any limit anyway).
        d.left = d.left > (math.maxinteger - x) // 16 and math.maxinteger
          or d.left * 16 + x
      elseif d.ndigits == 0 then return fail("bad chunk size")
      elseif c == ";" then d.state = "ext_name0"; if not ext() then return fail("bad chunk extension") end
      elseif ows(c) then d.state = "size_ws"; if not ext() then return fail("bad chunk extension") end
      elseif c == "\r" then d.state = "size_lf"
      else return fail("bad chunk size") end
    elseif st == "size_ws" then
      if not ext() then return fail("bad chunk extension") end
      if c == ";" then d.state = "ext_name0"
      elseif not ows(c) then return fail("bad chunk size") end
    elseif st == "ext_name0" then
      if not ext() then return fail("bad chunk extension") end
      if tchar(c) then d.state = "ext_name"
      elseif not ows(c) then return fail("bad chunk extension") end
    elseif st == "ext_name" or st == "ext_token" then
      if c == "\r" then d.state = "size_lf"
      else
        if not ext() then return fail("bad chunk extension") end
        if tchar(c) then -- stay
        elseif c == ";" then d.state = "ext_name0"
        elseif ows(c) then d.state = st == "ext_name" and "ext_name_ws" or "ext_val_ws"
        elseif c == "=" and st == "ext_name" then d.state = "ext_val0"
        else return fail("bad chunk extension") end
      end
    elseif st == "ext_name_ws" then
      if not ext() then return fail("bad chunk extension") end
      if c == "=" then d.state = "ext_val0"
      elseif c == ";" then d.state = "ext_name0"
      elseif not ows(c) then return fail("bad chunk extension") end
    elseif st == "ext_val0" then
      if not ext() then return fail("bad chunk extension") end
      if c == '"' then d.state = "ext_quoted"
      elseif tchar(c) then d.state = "ext_token"
      elseif not ows(c) then return fail("bad chunk extension") end
    elseif st == "ext_quoted" then
      if not ext() then return fail("bad chunk extension") end
      if c == '"' then d.state = "ext_val_end"
      elseif c == "\\" then d.state = "ext_qpair"
      elseif not fieldbyte(c) then return fail("bad chunk extension") end
    elseif st == "ext_qpair" then
      if not ext() then return fail("bad chunk extension") end
      if not fieldbyte(c) then return fail("bad chunk extension") end
      d.state = "ext_quoted"
    elseif st == "ext_val_end" then
      if c == "\r" then d.state = "size_lf"
      else
        if not ext() then return fail("bad chunk extension") end
        if c == ";" then d.state = "ext_name0"
        elseif ows(c) then d.state = "ext_val_ws"
        else return fail("bad chunk extension") end
      end
    elseif st == "ext_val_ws" then
      if not ext() then return fail("bad chunk extension") end
      if c == ";" then d.state = "ext_name0"
      elseif not ows(c) then return fail("bad chunk extension") end
    elseif st == "size_lf" then
      if c ~= "\n" then return fail("bad chunk") end
      -- framing against data (16 + 2 x data per chunk, 16 KiB owed at most)
      local credit = d.left >= 1 << 61 and math.maxinteger or 16 + 2 * d.left
      d.excess = (d.excess or 0) + d.ndigits + d.ext + 4
      d.excess = d.excess > credit and d.excess - credit or 0
      if d.excess > EXCESS_MAX then return fail("bad chunk extension") end
      d.state = d.left > 0 and "data" or "tr_line"
    elseif st == "data_cr" then
      if c ~= "\r" then return fail("bad chunk") end
      d.state = "data_lf"
    elseif st == "data_lf" then
      if c ~= "\n" then return fail("bad chunk") end
      d.state, d.ndigits, d.ext, d.left = "size", 0, 0, 0
    elseif st == "tr_line" then
      if c == "\r" then d.state = "end_lf"
      elseif tchar(c) then
        d.ntrailers = d.ntrailers + 1
        if d.ntrailers > TRAILERS_MAX then return fail("bad trailer") end
        d.state = "tr_name"
      else return fail("bad trailer") end
    elseif st == "tr_name" then
      if c == ":" then d.state = "tr_value"
      elseif not tchar(c) then return fail("bad trailer") end
    elseif st == "tr_value" then
      if c == "\r" then d.state = "tr_lf"
      elseif not fieldbyte(c) then return fail("bad trailer") end
    elseif st == "tr_lf" then
      if c ~= "\n" then return fail("bad trailer") end
      d.state = "tr_line"
    elseif st == "end_lf" then
      if c ~= "\n" then return fail("bad chunk") end
      d.state = "done"
    end
  end
end

--- Read a chunked request body, as the real conn:readchunked (the
-- decoder of src/http_parse.c, mirrored byte by byte).
-- @tparam integer max bytes of data at most
-- @tparam[opt] boolean discard drop the data, return its length
-- @treturn[1] string|integer the body (its length with discard)
-- @return[2] nil
-- @treturn[2] string "too large", "bad chunk size", "bad chunk
-- extension", "bad chunk", "bad trailer", "closed" or "timeout"
function Conn:readchunked(max, discard)
  max = optinteger(max, 1, "readchunked")
  if max == nil then argerror(1, "readchunked", "number expected, got no value") end
  if max < 0 then argerror(1, "readchunked", "the limit must not be negative") end
  local parts, total, start = {}, 0, true
  while true do
    local piece, err = self:readchunk(max, start)
    start = false
    if not piece then self._chunk = nil return nil, err end
    if piece == "" then
      self._chunk = nil
      if discard then return total end
      return table.concat(parts)
    end
    total = total + #piece
    if not discard then parts[#parts + 1] = piece end
  end
end

--- The chunked body piece by piece, as the real conn:readchunk: the
-- data up to the end of the current chunk, "" once the body is over,
-- nil, err as readchunked. start (true on the first call) begins a body.
function Conn:readchunk(max, start)
  max = optinteger(max, 1, "readchunk")
  if max == nil then argerror(1, "readchunk", "number expected, got no value") end
  if max < 0 then argerror(1, "readchunk", "the limit must not be negative") end
  if start or not self._chunk then
    self._chunk = { state = "size", ndigits = 0, ext = 0, left = 0, total = 0, excess = 0,
      trailer_bytes = 0, ntrailers = 0 }
  end
  local d = self._chunk
  while true do
    if self.closed then return nil, "closed" end
    local i = 1
    while i <= #self._buf do
      local r, j, at = chunked_next(d, self._buf, i)
      if not r then
        self._buf = self._buf:sub(at)
        return nil, j
      end
      i = j
      if r == "done" then
        self._buf = self._buf:sub(i)
        return ""
      end
      if r == "again" then break end
      if d.left > max - d.total then
        self._buf = self._buf:sub(i)
        return nil, "too large"
      end
      local k = math.min(d.left, #self._buf - i + 1)
      if k == 0 then break end
      local piece = self._buf:sub(i, i + k - 1)
      d.left, d.total = d.left - k, d.total + k
      self._buf = self._buf:sub(i + k)
      return piece
    end
    self._buf = self._buf:sub(i)
    local r = self:_fill()
    if r == "eof" then return nil, "closed" end
    if r == "timeout" then return nil, "timeout" end
  end
end

--- Bytes received and not yet read by the handler.
function Conn:buffered()
  return #self._buf
end

--- Send data:sub(i, j) (defaults 1, -1).
-- @treturn[1] integer the index of the last byte sent
-- @return[2] nil
-- @treturn[2] string "closed"
-- @treturn[2] integer the index of the last byte sent
function Conn:send(data, i, j)
  if type(data) == "number" then data = tostring(data) end
  if type(data) ~= "string" then argerror(1, "send", "string expected, got " .. type(data)) end
  local len = #data
  i = optinteger(i, 2, "send", 1)
  j = optinteger(j, 3, "send", -1)
  if i < 0 then i = len + i + 1 end
  if i < 1 then i = 1 end
  if j < 0 then j = len + j + 1 end
  if j > len then j = len end
  if j < i then return i - 1 end
  if self.closed or self._shut_wr then return nil, "closed", i - 1 end
  self._out[#self._out + 1] = data:sub(i, j)
  self._outn = self._outn + (j - i + 1)
  return j
end

local own_headers = { ["content-length"] = true, ["transfer-encoding"] = true,
  ["connection"] = true }

--- Send an HTTP response head and body, as the real conn:sendresponse
-- (the fast path fdpool.http uses; see src/lhttp.c): status_line, each
-- headers[k] = v (a list value: one line each) but Content-Length,
-- Transfer-Encoding and Connection, date_line, "Content-Length: length"
-- (an integer), "Transfer-Encoding: chunked", "Connection: connection",
-- the empty line, then body.
-- @treturn[1] integer the length of body
-- @return[2] nil
-- @treturn[2] string "closed"
-- @treturn[2] integer 0
function Conn:sendresponse(status_line, headers, date_line, length, chunked, connection, body)
  if type(status_line) ~= "string" then
    argerror(1, "sendresponse", "string expected, got " .. type(status_line))
  end
  if type(headers) ~= "table" then
    argerror(2, "sendresponse", "table expected, got " .. type(headers))
  end
  local t = { status_line }
  -- As the C side (lhttp.c valid_field): a name is a token, a value has
  -- no control byte but HTAB, else nothing is sent and it raises.
  local function line(k, v)
    v = tostring(v)
    if not k:find("^[!#$%%&'*+%-.^_`|~%w]+$") or v:find("[%z\1-\8\10-\31\127]") then
      error(("invalid response header '%s' (a name must be a token, a value must "
        .. "hold no CR, LF or other control byte)"):format(#k > 64 and k:sub(1, 60) .. "..." or k), 3)
    end
    t[#t + 1] = k .. ": " .. v .. "\r\n"
  end
  for k, v in next, headers do
    if type(k) == "string" and not own_headers[k:lower()] then
      if type(v) == "table" then
        for i = 1, #v do line(k, v[i]) end
      else
        line(k, v)
      end
    end
  end
  if date_line then t[#t + 1] = date_line end
  if math.type(length) == "integer" then t[#t + 1] = "Content-Length: " .. length .. "\r\n" end
  if chunked then t[#t + 1] = "Transfer-Encoding: chunked\r\n" end
  if connection then t[#t + 1] = "Connection: " .. connection .. "\r\n" end
  t[#t + 1] = "\r\n"
  body = body or ""
  if self.closed or self._shut_wr then return nil, "closed", 0 end
  local s = table.concat(t) .. body
  self._out[#self._out + 1] = s
  self._outn = self._outn + #s
  return #body
end

--- Append (part of) a file to the output, as conn:sendfile.
-- @param src a path, a Lua file, an fdpool.fd or an integer fd
-- @tparam[opt=0] integer offset
-- @tparam[opt] integer count (default: the rest of the file)
-- @treturn[1] integer bytes sent (fewer than count if the file is shorter)
-- @return[2] nil
-- @treturn[2] string "closed", or "PATH: strerror" when a path cannot be
-- opened
-- @treturn[2] integer bytes sent, or the errno
function Conn:sendfile(src, offset, count)
  offset = optinteger(offset, 2, "sendfile", 0)
  if offset < 0 then argerror(2, "sendfile", "offset must not be negative") end
  local f, opened, restore
  if type(src) == "string" then
    local e, code
    f, e, code = io.open(src, "rb")
    if not f then return nil, e, code end
    opened = true
  elseif io.type(src) == "file" then
    f = src
    f:flush()
    restore = f:seek()
  elseif math.type(src) == "integer" and fdpool then
    f = assert(fdpool.dup(src))
    opened = true
  elseif fdpool and fdpool.type(src) == "fd" then
    f = src
    restore = f:seek()
  else
    local t = fdpool and fdpool.type(src) or io.type(src) or type(src)
    argerror(1, "sendfile", "fd, file, fdpool.fd, fdpool.chan or fdpool.conn expected, got " .. t)
  end
  local size = f:seek("end")
  if count == nil then
    count = math.max(size - offset, 0)
  else
    count = optinteger(count, 3, "sendfile")
    if count < 0 then argerror(3, "sendfile", "count must not be negative") end
  end
  local parts, got = {}, 0
  if count > 0 and not (self.closed or self._shut_wr) then
    f:seek("set", offset)
    while got < count do
      local d = f:read(count - got)
      if not d or d == "" then break end
      parts[#parts + 1] = d
      got = got + #d
    end
  end
  if opened then f:close() elseif restore then f:seek("set", restore) end
  if count > 0 and (self.closed or self._shut_wr) then return nil, "closed", 0 end
  local data = table.concat(parts)
  self._out[#self._out + 1] = data
  self._outn = self._outn + #data
  return got
end

--- Record the timeout (`conn.timeout`, `conn.timeout_mode`). In memory
-- nothing waits: the end of the input is "closed", or "timeout" with
-- timeout_after_input.
-- @treturn boolean true
function Conn:settimeout(seconds, mode)
  if seconds ~= nil and type(seconds) ~= "number" then
    argerror(1, "settimeout", "number expected, got " .. type(seconds))
  end
  mode = mode or "b"
  if mode ~= "b" and mode ~= "t" and mode ~= "r" then
    argerror(2, "settimeout", "invalid option '" .. tostring(mode) .. "'")
  end
  self.timeout = seconds or -1
  self.timeout_mode = mode == "t" and "t" or "b"
  return true
end

--- Record a deadline (`conn.deadline`, `conn.min_rate`; nil clears
-- them), as the real conn:setdeadline. In memory nothing waits.
-- @treturn boolean true
function Conn:setdeadline(seconds, min_rate)
  if seconds ~= nil and type(seconds) ~= "number" then
    argerror(1, "setdeadline", "number expected, got " .. type(seconds))
  end
  if min_rate ~= nil and (type(min_rate) ~= "number" or min_rate < 0) then
    argerror(2, "setdeadline", "min_rate must not be negative")
  end
  self.deadline = seconds
  self.min_rate = seconds and min_rate or nil
  return true
end

--- Close (idempotent). Buffered input is dropped, as the real conn does.
-- @treturn boolean true
function Conn:close()
  self.closed = true
  self._buf = ""
  return true
end

--- Shut down one or both directions: after "send", sends fail with
-- "closed"; after "receive", reads see the end of the input.
-- @treturn[1] boolean true
-- @return[2] nil
-- @treturn[2] string "closed"
function Conn:shutdown(how)
  how = how or "both"
  if how ~= "both" and how ~= "send" and how ~= "receive" then
    argerror(1, "shutdown", "invalid option '" .. tostring(how) .. "'")
  end
  if self.closed then return nil, "closed" end
  if how ~= "receive" then self._shut_wr = true end
  if how ~= "send" then self._shut_rd = true end
  return true
end

--- Keep-alive parking: here it only records `conn.parked = true` and
-- closes the conn for the handler, as the real one does.
-- @treturn[1] boolean true
-- @return[2] nil
-- @treturn[2] string "closed" or "unread data"
function Conn:park(idle)
  if idle ~= nil and (type(idle) ~= "number" or not (idle > 0 and idle < 86400)) then
    argerror(1, "park", "idle seconds out of range")
  end
  if self.closed then return nil, "closed" end
  if #self._buf > 0 then return nil, "unread data" end
  self.parked = true
  self.park_idle = idle or 15
  self.closed = true
  return true
end

--- The client's address.
-- @treturn[1] string ip (the socket path for unix)
-- @treturn[1] integer port (nil for unix)
-- @treturn[1] string "inet", "inet6" or "unix"
-- @return[2] nil
-- @treturn[2] string "closed"
function Conn:getpeername()
  if self.closed then return nil, "closed" end
  return split_addr(self._peer)
end

--- The local address (from `sock`), as getpeername.
function Conn:getsockname()
  if self.closed then return nil, "closed" end
  return split_addr(self._sock)
end

--- Always -1: there is no descriptor.
function Conn:getfd() return -1 end
Conn.fileno = Conn.getfd

--- Bytes read from the input and bytes sent.
-- @treturn integer bytes_in
-- @treturn integer bytes_out
function Conn:getstats() return self._in, self._outn end


--- Whether v is a testing.conn.
function M.is_conn(v)
  return getmetatable(v) == conn_mt
end

--- A tiny scheduler for handlers on live conns, as a worker runs its
-- handlers: `tasks:spawn(fn, ...)` runs fn(...) in a coroutine until it
-- waits; `tasks:run()` resumes every task whose conn got input (or hung
-- up, or was closed) until none can go on, and returns how many still
-- wait. A handler's error is raised by spawn/run with its traceback.
function M.tasks()
  local T = { list = {} }
  local function step(t, ...)
    local r = table.pack(coroutine.resume(t.co, ...))
    if not r[1] then
      error(debug.traceback(t.co, tostring(r[2])), 0)
    end
    if coroutine.status(t.co) == "dead" then
      t.done = true
    elseif r[2] == WAIT then
      t.conn, t.version = r[3], r[3]._version
    else
      t.conn = nil          -- a bare yield: run again next round
    end
  end
  function T:spawn(fn, ...)
    local t = { co = coroutine.create(fn) }
    self.list[#self.list + 1] = t
    step(t, ...)
    return t
  end
  function T:run()
    repeat
      local progress = false
      for _, t in ipairs(self.list) do
        local c = t.conn
        if not t.done and (c == nil or c._version ~= t.version or c.closed) then
          progress = true
          step(t)
        end
      end
    until not progress
    local n = 0
    for _, t in ipairs(self.list) do
      if not t.done then n = n + 1 end
    end
    return n
  end
  return T
end

return M
