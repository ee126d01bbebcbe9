-- fdpool.http: HTTP/1.1 on top of conn. http.serve(function(req, res))
-- returns a handler for `pool run`; http.static(dir) serves files.
-- Keep-alive, pipelining, HEAD, Expect: 100-continue, Content-Length and
-- chunked bodies, and limits answered with 400/408/413/431. The request
-- head and chunked bodies are parsed in C (conn:readrequest,
-- conn:readchunked over src/http_parse.c); the framing rules are here.
local fdpool = require "fdpool"

local M = {}

M.defaults = {
  max_head = 32768,           -- bytes of request line + headers (431)
  max_body = 1024 * 1024,     -- bytes of request body (413)
  max_upload = nil,           -- bytes of a body streamed with
                              -- req:body_reader (nil: max_body)
  head_timeout = 10,          -- seconds for a whole request head, from its
                              -- first byte (408)
  body_timeout = 30,          -- seconds for each wait on the body, and for
                              -- the whole body plus 1 s per body_min_rate
  body_min_rate = 500,        -- bytes/s (mod_reqtimeout's MinRate); 0: the
                              -- whole body within body_timeout
  keepalive_timeout = 15,     -- seconds an idle keep-alive connection waits
  keepalive_requests = 1000,  -- requests per connection, then close
  access_log = nil,           -- nil: none; "-": stderr; a path: appended;
                              -- a function(line): called with each line
                              -- (combined log format)
  park = nil,                 -- hand idle keep-alive connections back to the
                              -- master between requests (default: when the
                              -- worker's concurrency is 1, strict prefork)
}

local reasons = {
  [100] = "Continue", [101] = "Switching Protocols", [200] = "OK",
  [201] = "Created", [202] = "Accepted", [203] = "Non-Authoritative Information",
  [204] = "No Content", [205] = "Reset Content", [206] = "Partial Content",
  [300] = "Multiple Choices", [301] = "Moved Permanently",
  [302] = "Found", [303] = "See Other", [304] = "Not Modified",
  [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [406] = "Not Acceptable", [407] = "Proxy Authentication Required",
  [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [411] = "Length Required", [412] = "Precondition Failed",
  [413] = "Content Too Large", [414] = "URI Too Long",
  [415] = "Unsupported Media Type", [416] = "Range Not Satisfiable",
  [417] = "Expectation Failed", [421] = "Misdirected Request",
  [422] = "Unprocessable Content", [425] = "Too Early",
  [426] = "Upgrade Required", [428] = "Precondition Required",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [451] = "Unavailable For Legal Reasons",
  [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}
M.reasons = reasons

local date_cache, date_time = "", -1
local function http_date(t)
  if t then return os.date("!%a, %d %b %Y %H:%M:%S GMT", t) end
  local now = os.time()
  if now ~= date_time then
    date_time, date_cache = now, os.date("!%a, %d %b %Y %H:%M:%S GMT", now)
  end
  return date_cache
end
M.date = http_date

local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
  Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Seconds since the epoch of an IMF-fixdate ("Sun, 06 Nov 1994
-- 08:49:37 GMT"), or nil. Computed in UTC (no dependence on TZ).
function M.parse_date(s)
  local d, mon, y, hh, mm, ss = s:match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = months[mon or ""]
  if not m then return nil end
  d, y, hh, mm, ss = tonumber(d), tonumber(y), tonumber(hh), tonumber(mm), tonumber(ss)
  -- Days from civil (H. Hinnant's algorithm).
  y = m <= 2 and y - 1 or y
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + hh * 3600 + mm * 60 + ss
end

-- A header table whose lookups ignore case (names are stored lower-case).
local header_mt = {
  __index = function(t, k)
    if type(k) == "string" then return rawget(t, k:lower()) end
  end,
}

-- ---- request -----------------------------------------------------------

local Req = {}
Req.__index = Req

--- The request body (Content-Length or chunked), read once and kept.
-- @treturn[1] string the body ("" when there is none)
-- @return[2] nil
-- @treturn[2] string "too large", "timeout", "closed" or "bad ..." (a
-- framing error: the connection closes after the response)
function Req:body()
  if self._body then return self._body end
  if self._body_err then return nil, self._body_err end
  if self._streamed then
    return nil, self._discarded and "body discarded (past 64 KiB, the response was sent first)"
      or "body already read by body_reader"
  end
  local conn, opts = self.conn, self._opts
  if self._length > opts.max_body then
    -- Allowed in by max_upload, for body_reader only.
    self._body_err = "too large"
    self._close = true                -- not drained: closed after the reply
    return nil, "too large"
  end
  if self._expect_continue then
    self._expect_continue = false
    conn:send("HTTP/1.1 100 Continue\r\n\r\n")
    self._sent100 = 25
  end
  conn:settimeout(opts.body_timeout)
  conn:setdeadline(opts.body_timeout, opts.body_min_rate)
  local body, err
  if self._chunked then
    body, err = conn:readchunked(opts.max_body)
  elseif self._length > 0 then
    body, err = conn:receive(self._length)
  else
    body = ""
  end
  conn:setdeadline(nil)
  if not body then
    self._body_err = err
    self._broken = true
    self._close = true                -- the reply says Connection: close
    return nil, err
  end
  self._body = body
  return body
end

-- ---- response ----------------------------------------------------------

local Res = {}
Res.__index = Res
-- A res conn:httploop makes holds only _conn, _req and _headers: these
-- defaults stand for its other fields until a method sets them. (Its
-- res:send, in C, notes _bytes only for a serve with an access log, the
-- field's one reader.)
Res._status, Res.started, Res.finished = 200, false, false
-- res:send's sent state, for a res whose metatable is Res and that has
-- no started field of its own (as conn:httploop makes them): the
-- metatable swapped for ResStarted (started, finished), then, once the
-- head is out, ResSent (and _head_sent), instead of 3 new fields per
-- response; both fall back to Res. Any other res gets the fields.
local ResStarted = setmetatable({ started = true, finished = true }, Res)
ResStarted.__index = ResStarted
local ResSent = setmetatable({ started = true, finished = true, _head_sent = true }, Res)
ResSent.__index = ResSent

--- Set the status code (before anything is sent).
function Res:status(code)
  assert(not self.started, "response already started")
  code = math.tointeger(code)
  -- A status line has three digits (RFC 9110 15).
  assert(code and code >= 100 and code <= 999, "status must be an integer from 100 to 999")
  self._status = code
  return self
end

--- Set a response header (replaces, whatever the case of the name; nil
-- removes it; a table value sends one line each).
-- Lower-case names of the response headers handlers use (a handful).
local lower = setmetatable({}, { __index = function(t, k)
  local l = k:lower()
  t[k] = l
  return l
end })

-- The name a response header was set with, by lower-case name (or nil):
-- res._headers holds a handful of names, scanned (no second table).
local function key_of(h, l)
  for k in pairs(h) do
    if type(k) == "string" and lower[k] == l then return k end
  end
end

function Res:header(name, value)
  assert(not self.started, "response already started")
  local h = self._headers
  local old = key_of(h, lower[name])
  if old then h[old] = nil end
  h[name] = value
  return self
end

-- A response header by lower-case name.
local function get(self, l)
  local k = key_of(self._headers, l)
  return k and self._headers[k]
end

-- A response that carries no body whatever the handler gives (RFC 9110
-- 6.4.1): to HEAD, and 1xx, 204 and 304. Bytes sent after its head would
-- be read as the next response on a keep-alive connection.
-- The status: res:status's, or one a handler stored in res._status
-- itself, checked as res:status checks it (a bad one is the handler's
-- error, never a status line of 0).
local function code_of(self)
  local code = self._status
  if math.type(code) ~= "integer" or code < 100 or code > 999 then
    code = math.tointeger(code)
    assert(code and code >= 100 and code <= 999, "status must be an integer from 100 to 999")
    self._status = code
  end
  return code
end

-- The status of a response about to start: a final one. A 1xx sent as
-- the response would be read as an interim one (RFC 9110 15.2), the
-- client waiting on for a final answer and pairing the next one it gets
-- with this request; the handler's error (a 500 then), before anything
-- is sent. (100 Continue is the server's own; 101: res:takeover.)
local function final_code(self)
  local code = self._status
  code = type(code) == "number" and math.tointeger(code)
  if code and code >= 100 and code < 200 then
    error(("status %d is informational, not a final response (101: use "
      .. "res:takeover)"):format(code), 3)
  end
end

local function no_body(self)
  local code = code_of(self)
  return self._req.method == "HEAD" or code == 204 or code == 304 or code < 200
end

-- Headers the layer writes itself, from its own knowledge.
local own = { ["content-length"] = true, ["transfer-encoding"] = true,
  ["connection"] = true }

local status_lines = setmetatable({}, { __index = function(t, code)
  local line = ("HTTP/1.1 %d %s\r\n"):format(code, reasons[code] or "Unknown")
  t[code] = line
  return line
end })

local date_line_cache, date_line_time = "", -1
local function date_line()
  local now = os.time()
  if now ~= date_line_time then
    date_line_time, date_line_cache = now, "Date: " .. http_date() .. "\r\n"
  end
  return date_line_cache
end

-- true once the worker was told to stop (false outside a worker)
local function exiting()
  local w = fdpool.worker
  return w ~= nil and w.exiting ~= nil and w.exiting()
end

-- A chunked request body the handler did not read, read (up to
-- max_body) before the head of a whole response (res:send, res:sendfile),
-- so the head can say whether the connection goes on: a body past
-- max_body, bad or cut short closes it, and the head says Connection:
-- close. Read after the head instead, a keep-alive client (Node's agent,
-- python's http.client, a proxy) would send its next request on a
-- connection about to close. The first PREDRAIN_KEEP bytes are kept
-- (req:body() after the response still has a small body); past them it
-- is discarded piece by piece, in constant memory. (A client waiting for
-- 100 Continue sends no body: closed, as before. res:write leaves the
-- body to the handler, which may stream it after the head.) res:send in
-- C calls it as Res._predrain.
local PREDRAIN_KEEP = 65536
local function predrain(req)
  if not req._chunked or req._body or req._streamed or req._broken
      or req._expect_continue or req._body_err then
    return
  end
  req._predrained = true
  local conn, opts = req.conn, req._opts
  conn:settimeout(opts.body_timeout)
  conn:setdeadline(opts.body_timeout, opts.body_min_rate)
  local parts, n, first = {}, 0, true
  while true do
    local piece, err = conn:readchunk(opts.max_body, first)
    first = false
    if not piece then
      conn:setdeadline(nil)
      req._broken, req._body_err = true, err
      return
    end
    if piece == "" then break end
    n = n + #piece
    if parts and n <= PREDRAIN_KEEP then
      parts[#parts + 1] = piece
    else
      parts = nil
    end
  end
  conn:setdeadline(nil)
  if parts then
    req._body = table.concat(parts)
  else
    req._streamed, req._discarded = "done", true
  end
end
Res._predrain = predrain

-- Write the status line and headers (built in C by conn:sendresponse)
-- followed by body (may be nil). length: a Content-Length, or nil.
local function send_head(self, length, chunked, body)
  local req, code = self._req, code_of(self)
  local h = self._headers
  local ck = key_of(h, "connection")
  if ck and tostring(h[ck]):lower() == "close" then req._close = true end
  -- A body read in part (body_reader) or broken: the connection ends
  -- after this response; say so.
  if req._broken then req._close = true end
  -- A client waiting for 100 Continue whose body was not asked for:
  -- the connection cannot go on (drain closes it); say so.
  if req._expect_continue and not req._body and (req._length > 0 or req._chunked) then
    req._close = true
  end
  if not chunked and not length and code ~= 204 and code ~= 304 and code >= 200 then
    req._close = true  -- close-delimited body
  end
  -- A body past max_body (max_upload let it in) neither read nor
  -- streamed: drain will not read it, the connection closes; and a
  -- worker told to stop (graceful stop, reload) sends its last response.
  local len, opts = req._length, req._opts
  if not req._close and ((not req._body and not req._streamed and len and len > 0
      and opts and len > opts.max_body) or exiting()) then
    req._close = true
  end
  if not length or chunked or code == 204 or code == 304 or code < 200 then
    length = nil
  end
  local connection = req._close and "close" or (req.version == "1.0" and "keep-alive") or nil
  local ok, err = self._conn:sendresponse(status_lines[code], h,
    not key_of(h, "date") and date_line() or nil, length, chunked, connection, body)
  -- (sendresponse raises on a bad header: not sent)
  if getmetatable(self) == ResStarted then
    setmetatable(self, ResSent)
  else
    self._head_sent = true
  end
  if not ok then req._broken = true end
  return ok, err
end

--- Send the whole response with this body (Content-Length set).
function Res:send(body)
  assert(not self.started, "response already started")
  final_code(self)
  body = body or ""
  if rawget(self, "started") == nil and getmetatable(self) == Res then
    setmetatable(self, ResStarted)
  else
    self.started = true
    self.finished = true
  end
  local req = self._req
  if req._chunked and not req._predrained then predrain(req) end
  local head_only = no_body(self)
  if not head_only then self._bytes = #body end
  local ok, err = send_head(self, #body, false, not head_only and body or nil)
  return ok ~= nil, err
end

-- Res:header and Res:send above, in C (src/lhttp.c: the same steps on the
-- same fields, without the interpreter: the two calls of every plain
-- request). The Lua ones stay as their reference (M._lua_res).
M._lua_res = { header = Res.header, send = Res.send }
if fdpool._httpres then
  Res.header, Res.send = fdpool._httpres(status_lines, ResStarted, ResSent, Res)
end
M._c_res = { header = Res.header, send = Res.send }

-- A request read by conn:httploop keeps its head (req._head) and gets
-- version, headers, target, path, query and conn only when first read
-- (version and conn by pairs(req) too): Req's __index in C
-- (src/lhttp.c req_index) builds them as prepare and readrequest would
-- have (the same table, case-folding metatable included) and stores
-- them in req. Methods and fields of Req come first, as with
-- Req.__index = Req.
local lazy_req = fdpool._httpreq ~= nil
if lazy_req then
  Req.__index = fdpool._httpreq(Req, header_mt)
end

--- Send a part of the body: chunked for HTTP/1.1 clients when no
-- Content-Length header was set; close-delimited for HTTP/1.0.
function Res:write(chunk)
  local conn, req = self._conn, self._req
  if not self.started then
    final_code(self)
    self.started = true
    local len = tonumber(get(self, "content-length"))
    self._declared = len
    -- A HEAD's head says what the GET's would (chunked); a 1xx, 204 or
    -- 304 has no body to frame.
    local code = code_of(self)
    self._chunked = len == nil and req.version == "1.1"
      and code ~= 204 and code ~= 304 and code >= 200
    if not send_head(self, len, self._chunked) then return false end
  end
  if no_body(self) or chunk == nil or chunk == "" then return true end
  local ok
  if self._chunked then
    ok = conn:send(("%x\r\n"):format(#chunk) .. chunk .. "\r\n")
  else
    local len = self._declared
    if len and (self._bytes or 0) + #chunk > len then
      -- More than the Content-Length said: the excess would be read as
      -- the next response. Send what fits, close after this response.
      req._close = true
      chunk = chunk:sub(1, len - (self._bytes or 0))
      if chunk == "" then return false end
    end
    ok = conn:send(chunk)
  end
  self._bytes = (self._bytes or 0) + #chunk
  if not ok then req._broken = true end
  return ok ~= nil
end

--- End a response begun with write() (or send an empty one).
function Res:finish()
  if self.finished then return true end
  if not self.started then return self:send("") end
  self.finished = true
  if self._chunked and not no_body(self) then
    local ok = self._conn:send("0\r\n\r\n")
    if not ok then self._req._broken = true end
  elseif self._declared and not no_body(self) and (self._bytes or 0) ~= self._declared then
    -- Fewer bytes than the Content-Length said: the client waits for
    -- the rest, and the next response would be read as body. Close.
    self._req._broken = true
    return false, "response shorter than its Content-Length"
  end
  return true
end

--- Send a file (or a part: offset, count) with sendfile(2). path may be
-- an fdpool fd object (then size is required).
function Res:sendfile(path, offset, count, size)
  local fd, mtime
  if type(path) == "string" then
    local f, err = io.open(path, "rb")
    if not f then
      self:status(404)
      return self:send("not found\n")
    end
    size = f:seek("end")
    f:close()
    fd = path
  else
    fd = path
    mtime = nil
  end
  offset = offset or 0
  count = count or (size - offset)
  if not get(self, "content-type") then
    self:header("Content-Type", "application/octet-stream")
  end
  final_code(self)
  self.started = true
  self.finished = true
  local conn, req = self._conn, self._req
  if req._chunked and not req._predrained then predrain(req) end
  if not send_head(self, count, false) then return false end
  if no_body(self) or count == 0 then return true end
  local opts = self._req._opts
  conn:settimeout(opts.body_timeout)
  local sent, err = conn:sendfile(fd, offset, count)
  -- Back to the wait between requests (the C loop sets it after the
  -- first request only: from the second sendfile on, an idle keep-alive
  -- connection waited body_timeout, 30 s by default, not 15).
  conn:settimeout(opts.keepalive_timeout)
  self._bytes = sent or 0
  if sent ~= count then
    self._req._broken = true
    return false, err or "short file"
  end
  return true
end

--- Take the connection over (after a 101, to speak another protocol):
-- http.serve writes nothing more on it, reads no next request, and the
-- worker closes it when the handler returns. Returns the conn.
function Res:takeover(status)
  assert(not self.started, "response already started")
  self.started, self.finished, self._head_sent, self._taken = true, true, true, true
  self._status = status or 101
  self._req._close = true
  return self._conn
end

-- ---- access log ----------------------------------------------------------

-- Lines an access log could not take, reported in the pool's log: at
-- the first failure, then at most once a minute with the count dropped
-- since, and once when lines go through again. what: "access log PATH"
-- or "access log function". Returns failed(err), worked(), and whether
-- lines are being dropped.
local function drop_reporter(what)
  local dropped, told, since = 0, nil, 0
  local function failed(err)
    dropped, since = dropped + 1, since + 1
    local now = os.time()
    if not told or now - told >= 60 then
      -- (an error value whose __tostring raises is named by its type)
      local ok, msg = pcall(tostring, err)
      if not ok or type(msg) ~= "string" then msg = "(an error " .. type(err) .. ")" end
      fdpool.log("error", ("%s: %s; %d line(s) dropped%s"):format(what,
        (msg:gsub("\n%s*", " | ")), since, told and " in the last minute" or ""))
      told, since = now, 0
    end
  end
  local function worked()
    fdpool.log("warn", ("%s: writing again, %d line(s) dropped"):format(what, dropped))
    dropped, told, since = 0, nil, 0
  end
  return failed, worked, function() return dropped > 0 end
end

-- Whether the file f (open for reading, appending) ends inside a line: a
-- write cut short by a full disk (or a crash) left part of one there.
local function ends_torn(f)
  local size = f:seek("end")
  if not size or size == 0 or not f:seek("end", -1) then return false end
  local last = f:read(1)
  f:seek("end")
  return last ~= nil and last ~= "\n"
end

-- A function(req, res) writing one combined-format line per request.
-- Nothing it meets raises into the connection loop: a line that cannot
-- be written, or a handler's own function that raises, drops that line
-- (drop_reporter says so) and the request is answered as ever.
local function access_logger(dest)
  local out, failed, worked, dropping
  if type(dest) == "function" then
    failed, worked, dropping = drop_reporter("access log function")
    out = function(line)
      dest(line)
      if dropping() then worked() end
    end
  else
    local f, seekable
    if dest == "-" or dest == true then
      f = io.stderr
    else
      f = assert(io.open(dest, "a"))
      -- A file (seekable: not a pipe, whose read end this worker must
      -- not hold) is opened for reading too (a+): a line cut short by a
      -- full disk is found at its end, and the next line starts on a
      -- line of its own. One that may only be appended to stays "a".
      if f:seek("end") then
        local rw = io.open(dest, "a+")
        if rw then
          f:close()
          f, seekable = rw, true
        end
      end
      -- unbuffered, one write(2) per line: a line-buffered stream's
      -- failed flush is not reported by the write that caused it (glibc)
      f:setvbuf("no")
    end
    local name = (dest == "-" or dest == true) and "stderr" or dest
    failed, worked, dropping = drop_reporter("access log " .. name)
    -- A write that fails (a full disk: ENOSPC) drops its line; one cut
    -- short leaves part of it, which the next line written ends first.
    local torn = seekable and ends_torn(f)
    out = function(line)
      local data = line .. "\n"
      if torn then data = "\n" .. data end
      local ok, err = f:write(data)
      if ok then
        torn = false
        if dropping() then worked() end
        return
      end
      torn = seekable and ends_torn(f)
      failed(err)
    end
  end
  local function write(req, res)
    local ip = req.conn and req.conn:getpeername() or "-"
    local h = req.headers
    out(('%s - - [%s] "%s %s HTTP/%s" %d %d "%s" "%s"'):format(ip,
      os.date("!%d/%b/%Y:%H:%M:%S +0000"), req.method, req.target, req.version,
      res._status, res._bytes or 0, (h["referer"] or "-"):gsub('"', '\\"'),
      (h["user-agent"] or "-"):gsub('"', '\\"')))
  end
  return function(req, res)
    local ok, err = pcall(write, req, res)
    if not ok then failed(err) end
  end
end

-- ---- the connection loop ------------------------------------------------

-- Lingering close (as nginx's lingering_close, Apache's
-- ap_lingering_close): after an answer sent while the client may still be
-- sending (a head too large, a body refused or left unread), send FIN and
-- discard what arrives until the client closes, for at most
-- LINGER_TOTAL s (LINGER_WAIT s per wait). Closing with unread bytes in
-- the socket would send RST, and an RST makes the client's kernel drop
-- the answer it has not read yet: the client sees "connection reset"
-- instead of the 431 or 413.
local LINGER_WAIT, LINGER_TOTAL = 2, 5
local function linger(conn)
  if not conn:shutdown("send") then return end
  conn:settimeout(LINGER_WAIT)
  conn:setdeadline(LINGER_TOTAL)
  repeat until not conn:receive(65536)
  conn:setdeadline(nil)
end
M._linger = linger

-- An error reply, then the connection closes (lingering). head: the
-- request was HEAD (or nil when unknown): the headers only.
-- With res (a request's, for its access log line): its status and body
-- bytes are set, and the lingering close is the caller's (after the log
-- line, which would else wait for the client's close and find no peer
-- address any more); returns whether to linger.
local function simple(conn, code, text, head, res)
  local body = text or (reasons[code] or "error") .. "\n"
  local ok = conn:send(("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    .. "Connection: close\r\nDate: %s\r\n\r\n%s"):format(code, reasons[code] or "Error",
    #body, http_date(), head and "" or body))
  if res then
    res._status, res._bytes = code, ok and not head and #body or 0
    return ok
  end
  if ok then linger(conn) end
end

-- The status for a request-body error: framing (400), size (413) or a
-- client too slow (408).
local function body_status(err)
  if err == "too large" then return 413 end
  if err == "timeout" then return 408 end
  if type(err) == "string" and err:sub(1, 4) == "bad " then return 400 end
  return nil
end

-- Host = uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2): an
-- IP-literal in brackets, or reg-name/IPv4 characters; empty is allowed.
-- A second Host line arrives joined with ", ", which fails here too.
local function valid_host(v)
  local port = v:match("^%[[%w:.%-_~!$&'()*+,;=]+%](.*)$")
  if not port then port = v:match("^[%w%-._~!$&'()*+,;=%%]*(.*)$") end
  return port == "" or port:find("^:%d*$") ~= nil
end

-- Whether the list v (comma-separated, OWS around each element, RFC
-- 9110 5.6.1) has the token tok, compared without case (in C).
local has_token = fdpool._httptoken

local function prepare(req, conn, opts)
  local h = req.headers
  req.conn = conn
  req._opts = opts
  -- rawget: most of these are absent, and absent keys would go through
  -- the case-folding __index below.
  local v11 = req.version == "1.1"
  -- Framing (RFC 9112 6): anything ambiguous is refused, never guessed.
  local te, cl = rawget(h, "transfer-encoding"), rawget(h, "content-length")
  if te then
    if cl then return 400, "both Transfer-Encoding and Content-Length" end
    if not v11 then return 400, "Transfer-Encoding in HTTP/1.0" end
    -- chunked once and last, with nothing after it, not even an empty
    -- list element ("chunked," or a second, empty line: as llhttp) (400
    -- otherwise, RFC 9112 6.3); a value naming no coding at all is 400
    -- too; no other coding is implemented (501, 6.1).
    local codings = {}
    for c in (te .. ","):gmatch("([^,]*),") do
      if codings[#codings] == "chunked" then
        return 400, "chunked is not the final Transfer-Encoding"
      end
      c = c:match("^[ \t]*(.-)[ \t]*$"):lower()
      if c ~= "" then codings[#codings + 1] = c end
    end
    if #codings == 0 then return 400, "empty Transfer-Encoding" end
    if #codings ~= 1 or codings[1] ~= "chunked" then
      return 501, "unsupported Transfer-Encoding"
    end
    req._chunked = true
    req._length = 0
  elseif cl then
    -- 1*DIGIT: a list ("5, 5" from two lines), a sign or blanks are 400.
    if not cl:find("^%d+$") then return 400, "bad Content-Length" end
    local digits = cl:match("^0*(%d-)$")
    if #digits > 15 or (tonumber(digits) or 0) > (opts.max_upload or opts.max_body) then
      return 413
    end
    req._length = tonumber(digits) or 0
  else
    req._length = 0
  end
  local host = rawget(h, "host")
  if host then
    if not valid_host(host) then return 400, "bad Host" end
  elseif v11 then
    return 400, "missing Host"
  end
  -- origin-form, absolute-form (its authority as Host's, with a host),
  -- authority-form (CONNECT's only form: uri-host ":" port), "*"
  -- (OPTIONS).
  local t = req.target
  if req.method == "CONNECT" then
    local host = t:match("^(.+):%d+$")
    if not host or (host:byte(1) == 91 and host:byte(-1) ~= 93) or not valid_host(t) then
      return 400, "bad request target"
    end
  elseif t:byte(1) ~= 47 then
    local authority = t:match("^%a[%w+.-]*://([^/?#]*)")
    if authority then
      -- the authority as Host's, with a host: no userinfo (RFC 9110
      -- 4.2.4: an error), no empty host (4.2.1: invalid)
      if authority == "" or authority:byte(1) == 58 or not valid_host(authority) then
        return 400, "bad request target"
      end
    elseif t ~= "*" or req.method ~= "OPTIONS" then
      return 400, "bad request target"
    end
  end
  local expect = rawget(h, "expect")
  if expect then
    if expect:lower() ~= "100-continue" then return 417 end
    req._expect_continue = v11
  end
  local c = rawget(h, "connection")
  if c then
    if v11 then
      req._close = has_token(c, "close")
    else
      req._close = not has_token(c, "keep-alive")
    end
  else
    req._close = not v11
  end
  setmetatable(h, header_mt)
  return nil
end

-- Read what is left of the request body, so the next request starts at
-- the right byte: discarded in pieces, memory constant whatever its size
-- (it is at most max_body: a larger Content-Length got 413, a larger
-- chunked body closes the connection instead). Returns false when the
-- connection cannot go on.
local function drain(req)
  if req._broken then return false end
  if req._body or req._streamed == "done" or (req._length == 0 and not req._chunked) then
    return true
  end
  if req._length > req._opts.max_body then return false end
  if req._expect_continue then return false end  -- client waits: just close
  local conn, opts = req.conn, req._opts
  conn:settimeout(opts.body_timeout)
  -- The whole body within body_timeout plus 1 s per body_min_rate bytes,
  -- as when the handler reads it: a client trickling a body nobody reads
  -- (a byte now and then, each within body_timeout) would otherwise hold
  -- its connection, and in strict prefork its worker, for as long as it
  -- likes.
  conn:setdeadline(opts.body_timeout, opts.body_min_rate)
  local ok = true
  if req._chunked then
    ok = conn:readchunked(opts.max_body, true) ~= nil
  else
    local left = req._length
    while left > 0 do
      local got = conn:receive(left < 65536 and left or 65536)
      if not got then ok = false; break end
      left = left - #got
    end
  end
  conn:setdeadline(nil)
  return ok
end

-- A status, headers, body fn(req, res) returned (a, b, c), sent unless
-- the handler started the response itself: under the handler's xpcall
-- (a bad status or header is the handler's error). Returns a.
local function reply(res, a, b, c)
  if a ~= nil and not res.started then
    -- A status as a number or a numeric string ("404").
    local code = math.type(a) == "integer" and a or math.tointeger(tonumber(a))
    if not code then
      error(("handler returned %s as the status (expected status, headers, body)")
        :format(type(a) == "string" and ("%q"):format(a) or type(a)), 0)
    end
    if code >= 100 and code <= 999 then
      res._status = code              -- what res:status checks, inline
    else
      res:status(code)                -- (raises its error)
    end
    if type(b) == "table" then
      for k, v in pairs(b) do res:header(k, v) end
    elseif b then                     -- return 200, "text": a lost body
      error(("handler returned a %s as the headers (expected status, headers, "
        .. "body: return 200, nil, body)"):format(type(b)), 0)
    end
    local tc = type(c)
    if c ~= nil and tc ~= "string" and tc ~= "number" then
      error(("handler returned a %s as the body: a body is a string (use "
        .. "res:json(value) for JSON)"):format(tc), 0)
    end
    res:send(tc == "string" and c or c and tostring(c) or "")
  end
  return a
end

-- reply in C for the usual values (src/lhttp.c res_reply: the same
-- steps), for the conn loop; the Lua one stays its reference (and the
-- in-memory loop's).
local creply = fdpool._httpreply and fdpool._httpreply(reply) or reply

-- Run fn(req, res) and reply with what it returned. Returns the status
-- it returned, or nil. (conn:httploop calls fn, then reply only when fn
-- returned something.)
local function call(fn, req, res)
  return reply(res, fn(req, res))
end

-- After fn(req, res) returned (ok) or raised (not ok, a: the error):
-- remove the request's temp files (req:form), and when the connection
-- was taken over -- res:takeover (http.websocket), or written to by the
-- handler itself past res (a hand-made 101: more bytes out than the
-- 100 Continue since req._out0) -- log, close an open WebSocket, and
-- return true: http.serve writes and reads nothing more on it.
local function handed_over(conn, req, res, ok, a, log)
  if req._tmpfiles then
    for _, f in ipairs(req._tmpfiles) do os.remove(f) end
    req._tmpfiles = nil
  end
  if not res._taken and not res.started and req._out0 then
    local _, out1 = conn:getstats()
    if out1 and out1 - req._out0 > (req._sent100 or 0) then
      res._taken, res._status = true, 101
    end
  end
  if not res._taken then return false end
  if not ok then
    fdpool.log("error", ("http handler error (%s %s): %s"):format(req.method,
      req.path, tostring(a):gsub("\n%s*", " | ")))
  end
  if res._ws then res._ws:_abandon(ok and 1000 or 1011) end
  if log then log(req, res) end
  return true
end
M._handed_over = handed_over

-- serve's numeric options: kind ("int" or "num"), the least value, and
-- whether that least value is allowed. Checked at serve() time, so a bad
-- one stops `pool run` with one line naming it (the C loop reads only
-- numbers: a string "5" would have been no limit there).
local numeric = {
  max_head = { "int", 1, true }, max_body = { "int", 0, true },
  max_upload = { "int", 0, true }, keepalive_requests = { "int", 0, true },
  head_timeout = { "num", 0, true }, keepalive_timeout = { "num", 0, true },
  body_timeout = { "num", 0, false }, body_min_rate = { "num", 0, true },
}

local function check_options(opts)
  for k, spec in pairs(numeric) do
    local v = opts[k]
    if v ~= nil or k ~= "max_upload" then
      local what = spec[1] == "int" and "an integer" or "a finite number"
      local bound = (spec[3] and " >= " or " > ") .. spec[2]
      local bad
      if math.type(v) == nil then
        -- %q keeps a newline as "\" and a raw one: the message would
        -- end there; show it as \n, and at most 40 bytes of the string
        bad = type(v) .. (type(v) == "string"
          and (" %q"):format(#v > 40 and v:sub(1, 40) .. "..." or v):gsub("\\\n", "\\n")
          or "")
      elseif v ~= v then
        bad = "nan"
      elseif v == math.huge or v == -math.huge then
        bad = tostring(v)
      elseif spec[1] == "int" and not math.tointeger(v) then
        bad = tostring(v)
      elseif v < spec[2] or (not spec[3] and v == spec[2]) then
        bad = tostring(v)
      end
      if bad then
        error(("http.serve: option '%s' must be %s%s, got %s"):format(k, what, bound, bad), 3)
      end
    end
  end
  local log = opts.access_log
  if log ~= nil and log ~= false and log ~= true and type(log) ~= "string"
     and type(log) ~= "function" then
    error("http.serve: option 'access_log' must be \"-\", a path or a function, got "
      .. type(log), 3)
  end
  if opts.park ~= nil and type(opts.park) ~= "boolean" then
    error("http.serve: option 'park' must be a boolean, got " .. type(opts.park), 3)
  end
end
M._check_options = check_options

-- Handlers made by serve, with their options: a worker tells the master
-- (READY) that its handler speaks HTTP, so the master's accept filter
-- waits for whole request heads (max_head, head_timeout).
M.handlers = setmetatable({}, { __mode = "k" })

--- A handler for `pool run`: parses requests, calls fn(req, res).
-- fn may use res, or return status, headers, body.
function M.serve(fn, options)
  local opts = {}
  for k, v in pairs(M.defaults) do opts[k] = v end
  for k, v in pairs(options or {}) do
    if M.defaults[k] == nil and k ~= "access_log" and k ~= "park" and k ~= "max_upload" then
      error("unknown http option '" .. tostring(k) .. "'", 2)
    end
    opts[k] = v
  end
  check_options(opts)
  local traceback = debug.traceback
  local log = opts.access_log and access_logger(opts.access_log)
  local readrequest
  local park = opts.park
  if park == nil then
    park = fdpool.worker ~= nil and fdpool.worker.capacity == 1
  end
  -- conn:park takes 0 < idle < 86400: past that the connection stays
  -- in the worker (as lhttp.c's cfg_params decides for the C loop)
  if not (opts.keepalive_timeout > 0 and opts.keepalive_timeout < 86400) then
    park = false
  end
  -- Not asked for either way: park anyway while the worker is crowded
  -- (3/4 of its slots taken), so idle keep-alive connections cannot hold
  -- every slot (lhttp.c's crowded_end for the C loop's plain ends).
  local crowded = opts.park == nil and not park and fdpool.worker ~= nil
    and fdpool.worker.crowded
    and opts.keepalive_timeout > 0 and opts.keepalive_timeout < 86400
    and fdpool.worker.crowded or nil
  -- The connection's end when its next head could not be read.
  local function read_failed(conn, served, err, method)
    local head = method == "HEAD"
    if err == "timeout" then
      if served == 0 or conn:buffered() > 0 then simple(conn, 408) end
    elseif err == "header too large" or err == "too many headers" then
      simple(conn, 431, nil, head)
    elseif err == "uri too long" then
      simple(conn, 414, nil, head)
    elseif err == "unsupported HTTP version" then
      simple(conn, 505, nil, head)
    elseif err ~= "closed" then
      simple(conn, 400, "bad request: " .. err .. "\n", head)
    end
  end
  -- After fn(req, res) returned (ok) or raised (not ok, a: the error):
  -- finish the response, log, read what is left of the body. true: the
  -- connection goes on to its next request.
  local function after(conn, req, res, ok, a)
    if handed_over(conn, req, res, ok, a, log) then return false end
    if ok and res.started and not res._head_sent then
      -- res:send or res:write raised before anything went out (a header
      -- refused) and the handler caught it and went on: the client has
      -- nothing and would wait for it. The handler's error, as if it
      -- had not caught it (500, the connection closed).
      ok, a = false, "the response was started but nothing of it was sent "
        .. "(res:send or res:write raised, and the handler went on)"
    end
    if ok and not res.started then
      -- A 1xx set and nothing sent: the same handler's error as a 1xx
      -- sent (final_code), not one of res:finish here, which would end
      -- the connection unanswered.
      local code = res._status
      if type(code) == "number" and code >= 100 and code < 200 then
        ok, a = false, ("status %d is informational, not a final response (101: "
          .. "use res:takeover)"):format(code)
      end
    end
    if not ok then
      fdpool.log("error", ("http handler error (%s %s): %s"):format(req.method,
        req.path, tostring(a):gsub("\n%s*", " | ")))
      local lingering
      if not res._head_sent then
        -- A body that failed to frame is the client's error, not ours.
        local st = body_status(req._body_err) or 500
        lingering = simple(conn, st, nil, req.method == "HEAD", res)
      end
      if log then log(req, res) end
      if lingering then linger(conn) end
      return false
    end
    local st = not res.started and a == nil and body_status(req._body_err)
    if st then
      local lingering = simple(conn, st, nil, req.method == "HEAD", res)
      if log then log(req, res) end
      if lingering then linger(conn) end
      return false
    end
    if not res.finished then
      res:finish()
    end
    if log then log(req, res) end
    if req._close or not drain(req) then
      -- Bytes of this request may still be on their way (a body not
      -- read or not readable): close without a reset.
      if req._broken or (not req._body and (req._length > 0 or req._chunked)) then
        linger(conn)
      end
      return false
    end
    if opts.body_timeout ~= opts.keepalive_timeout and (req._length > 0 or req._chunked) then
      conn:settimeout(opts.keepalive_timeout)
    end
    -- A TLS connection cannot be parked (park says "tls"): it stays.
    if (park or (crowded and crowded())) and conn:buffered() == 0
        and conn:park(opts.keepalive_timeout) then
      return false
    end
    return true
  end
  -- The loop runs in C (conn:httploop, src/lhttp.c: the same steps as the
  -- Lua loop below, with prepare in C; cfg's order is lhttp.c's C_*) on
  -- a real conn; the Lua loop serves
  -- fdpool.testing's in-memory conn. Both build req and res alike (the C
  -- loop leaves out what its requests' __index and Res's defaults stand
  -- for: req's headers, path, query, _opts, a 0 _length, a false _close;
  -- res's _status, started, finished): res gets no more than the fields
  -- below, so a method needing more state creates it when first called.
  -- The C loop's requests: Req's methods, and this serve's options from
  -- their __index.
  local req_mt = Req
  if lazy_req then
    local index, pairs_ = fdpool._httpreq(Req, header_mt, opts)
    req_mt = { __index = index, __pairs = pairs_ }
  end
  local cfg = { fn, creply, traceback, after, req_mt, Res, header_mt, opts,
    max_head = opts.max_head, head_timeout = opts.head_timeout,
    keepalive_timeout = opts.keepalive_timeout,
    max_body = opts.max_upload or opts.max_body,   -- the framing check (prepare)
    keepalive_requests = opts.keepalive_requests, plain = not log and not park,
    park = park and not log,      -- parking without Lua: lhttp.c's park_end
    park_auto = crowded ~= nil and not log,   -- lhttp.c's crowded_end
    res_started = ResStarted, res_sent = ResSent, -- res's sent state (Res:send)
    lazy = lazy_req }             -- req.headers, target, path, query on first use
  local handler = function(conn)
    if conn.httploop then
      local kind, a, b, c = conn:httploop(cfg)
      if kind == "read" then
        read_failed(conn, a, b, c)
      elseif kind == "refuse" then
        simple(conn, b, c and (c .. "\n"), a.method == "HEAD")
      end
      return
    end
    readrequest = readrequest or conn.readrequest
    local served = 0
    -- head_timeout 0: each wait keeps the conn's own (--io-timeout)
    if opts.head_timeout > 0 then conn:settimeout(opts.head_timeout) end
    while true do
      if served == 1 then conn:settimeout(opts.keepalive_timeout) end
      local req, err, method = readrequest(conn, opts.max_head, opts.head_timeout)
      if not req then
        return read_failed(conn, served, err, method)
      end
      served = served + 1
      local code, why = prepare(req, conn, opts)
      if code then
        simple(conn, code, why and (why .. "\n"), req.method == "HEAD")
        return
      end
      if opts.keepalive_requests > 0 and served >= opts.keepalive_requests then
        req._close = true
      end
      local res = setmetatable({ _conn = conn, _req = req, _status = 200,
        _headers = {}, started = false, finished = false }, Res)
      setmetatable(req, Req)
      req._out0 = select(2, conn:getstats())
      if not after(conn, req, res, xpcall(call, traceback, fn, req, res)) then
        return
      end
    end
  end
  cfg.handler = handler   -- its idle connections may drop their coroutine
  M.handlers[handler] = opts
  return handler
end

-- ---- request and response helpers (fdpool.http.form, json, router,
-- websocket: loaded when first used) --------------------------------------

local function form() return require "fdpool.http.form" end

--- The query's arguments, decoded: {key = value, key = {v1, v2} for a
-- repeated key}; at most max (default 1000) keys, then a second value
-- "truncated".
function Req:args(max)
  if not self._args then self._args, self._args_trunc = form().parse_query(self.query or "", max) end
  return self._args, self._args_trunc
end

--- The Cookie header as {name = value}.
function Req:cookies()
  if not self._cookies then self._cookies = form().parse_cookies(self.headers["cookie"]) end
  return self._cookies
end

--- A function giving the body piece by piece (Content-Length or
-- chunked), for bodies up to max_upload: a string, nil at the end, or
-- nil, err.
function Req:body_reader(size)
  return form().body_reader(self, self._opts.max_upload or self._opts.max_body, size)
end

--- The form (urlencoded or multipart/form-data): fields, or nil, err,
-- status. See fdpool.http.form.
function Req:form(opts)
  return form().form(self, opts)
end

--- The body decoded as JSON: value, or nil, err.
function Req:json()
  local body, err = self:body()
  if not body then return nil, err end
  local v, jerr = require("fdpool.http.json").decode(body)
  if jerr then return nil, "invalid JSON: " .. jerr end
  return v
end

--- Send value as JSON (Content-Type application/json) with status
-- (default: the one set, 200). Raises for a value JSON cannot hold.
function Res:json(value, status)
  local text, err = require("fdpool.http.json").encode(value)
  if not text then error("res:json: " .. err, 2) end
  if status then self:status(status) end
  self:header("Content-Type", "application/json")
  return self:send(text)
end

--- Add a Set-Cookie line (opts: path, domain, max_age, expires, secure,
-- httponly, samesite). Raises for a value that could inject a header.
function Res:cookie(name, value, opts)
  local line = form().set_cookie(name, value, opts, http_date)
  local old = get(self, "set-cookie")
  if old == nil then
    self:header("Set-Cookie", { line })
  else
    if type(old) ~= "table" then old = { old } self:header("Set-Cookie", old) end
    old[#old + 1] = line
  end
  return self
end

--- Answer a WebSocket upgrade: a ws object, or nil, err (400 or 426
-- sent). See fdpool.http.websocket.
function M.websocket(req, res, opts)
  return require("fdpool.http.websocket").upgrade(req, res, opts)
end

--- A router (fdpool.http.router): http.serve(router).
function M.router()
  return require("fdpool.http.router").new()
end

M.urldecode = function(s, plus) return form().urldecode(s, plus) end
M.urlencode = function(s) return form().urlencode(s) end

-- ---- static files -------------------------------------------------------

M.mime = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  txt = "text/plain; charset=utf-8", css = "text/css", js = "text/javascript",
  json = "application/json", xml = "application/xml", svg = "image/svg+xml",
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
  webp = "image/webp", ico = "image/x-icon", pdf = "application/pdf",
  wasm = "application/wasm", mp4 = "video/mp4", mp3 = "audio/mpeg",
  zip = "application/zip", gz = "application/gzip", tar = "application/x-tar",
  woff = "font/woff", woff2 = "font/woff2", md = "text/markdown; charset=utf-8",
}

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Parse a single "bytes=" range against size: offset, count, or nil to
-- ignore the header, or false when it cannot be satisfied.
local function parse_range(h, size)
  local a, b = h:match("^bytes=(%d*)-(%d*)$")
  if not a or (a == "" and b == "") then return nil end
  local first, last
  if a == "" then
    local n = tonumber(b)
    if n == 0 then return false end
    first, last = math.max(size - n, 0), size - 1
  else
    first = tonumber(a)
    last = b == "" and size - 1 or math.min(tonumber(b), size - 1)
    if tonumber(b) and tonumber(b) < first then return nil end
  end
  if first >= size then return false end
  return first, last - first + 1
end

-- If-None-Match's value ("*", or a list of entity-tags, several lines
-- joined with ", ") against our (strong) etag, compared weakly (RFC 9110
-- 13.1.2): W/"x" matches "x". A proxy that compresses (nginx's gzip)
-- turns the ETag weak, and browsers send that one back.
local function etag_matches(list, etag)
  if list:find("^[ \t]*%*[ \t]*$") then return true end
  for tag in list:gmatch('"[^"]*"') do
    if tag == etag then return true end
  end
  return false
end

--- A function(req, res) serving the files under dir: no escape through
-- "..", absolute paths or symlinks (openat2 RESOLVE_BENEATH |
-- RESOLVE_NO_SYMLINKS), Content-Type by extension, Last-Modified and
-- If-Modified-Since, ETag and If-None-Match, single byte Range (206/416),
-- HEAD, sent with sendfile(2). "dir/" paths serve index.html.
function M.static(dir, options)
  options = options or {}
  local index = options.index or "index.html"
  if type(index) == "string" then index = { index } end
  local on_missing = options.on_missing
  local function missing(req, res)
    if on_missing then return on_missing(req, res) end
    res:status(404)
    return res:send("not found\n")
  end
  -- The first index file of directory rel (ending in "/") that opens.
  local function open_index(rel)
    for _, name in ipairs(index) do
      local fd, size, mtime = fdpool.open_beneath(dir, rel .. name)
      if fd then return fd, size, mtime, rel .. name end
    end
    return nil, "No such file or directory"
  end
  return function(req, res)
    if req.method ~= "GET" and req.method ~= "HEAD" then
      res:status(405):header("Allow", "GET, HEAD")
      return res:send("method not allowed\n")
    end
    local path = unescape(req.path)
    if path:find("%z") or path:sub(1, 1) ~= "/" then
      res:status(400)
      return res:send("bad path\n")
    end
    local rel = path:gsub("^/+", "")
    for seg in rel:gmatch("[^/]+") do
      if seg == ".." then
        res:status(403)
        return res:send("forbidden\n")
      end
    end
    local fd, size, mtime
    if rel == "" or rel:sub(-1) == "/" then
      fd, size, mtime, rel = open_index(rel)
    else
      fd, size, mtime = fdpool.open_beneath(dir, rel)
      -- A directory named without its slash: redirect (as nginx and
      -- Apache's mod_dir), so its relative links resolve inside it.
      -- (With or without an index: "dir/" then serves it or is missing.)
      local isdir = not fd and size == "not a regular file"
        and select(2, fdpool.open_beneath(dir, rel .. "/")) == "not a regular file"
      if isdir then
        local q = req.query ~= "" and "?" .. req.query or ""
        -- One leading slash, and a backslash as %5C: "//host/dir" (or
        -- "/\host", which browsers read as "//") would send the client
        -- to another site (a network-path reference, RFC 3986 4.2): an
        -- open redirect.
        local loc = req.path:gsub("^//+", "/"):gsub("\\", "%%5C")
        res:status(301):header("Location", loc .. "/" .. q)
        return res:send("moved\n")
      end
    end
    if not fd then
      if size == "No such file or directory" or size == "Not a directory" then
        return missing(req, res)
      end
      res:status(403)
      return res:send("forbidden\n")
    end
    local lm = http_date(mtime)
    local etag = ('"%x-%x"'):format(size, mtime)
    local h = req.headers
    res:header("Last-Modified", lm):header("ETag", etag):header("Accept-Ranges", "bytes")
    res:header("Content-Type", M.mime[(rel:match("%.([%w]+)$") or ""):lower()]
      or "application/octet-stream")
    local inm, ims = h["if-none-match"], h["if-modified-since"]
    local since = ims and M.parse_date(ims)
    if (inm and etag_matches(inm, etag)) or (not inm and since and mtime <= since) then
      fd:close()
      res:status(304)
      return res:send("")
    end
    local offset, count = 0, size
    local range = h["range"]
    if range and (not h["if-range"] or h["if-range"] == etag or h["if-range"] == lm) then
      local first, n = parse_range(range, size)
      if first == false then
        fd:close()
        res:status(416):header("Content-Range", "bytes */" .. size)
        return res:send("")
      elseif first then
        offset, count = first, n
        res:status(206):header("Content-Range",
          ("bytes %d-%d/%d"):format(first, first + n - 1, size))
      end
    end
    local ok, err = res:sendfile(fd, offset, count, size)
    fd:close()
    return ok, err
  end
end

return M
