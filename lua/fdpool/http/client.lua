-- fdpool.http.client: an HTTP/1.1 client for handlers, over fdpool.tcp()
-- (so every wait yields to the worker's loop), with keep-alive through
-- the worker's socket pool, Content-Length, chunked (decoded in C by the
-- socket's readchunked/readchunk) and close-delimited bodies, a
-- streaming reader for large bodies, and redirects off by default.
-- https:// goes through the socket's sslhandshake (certificates verified
-- against the system store by default; ssl_verify = false or a CA file),
-- with TLS keep-alive connections pooled apart from plain ones and the
-- last session per host:port resumed on new connections.
local fdpool = require "fdpool"

local M = {}

--- Defaults for request{} (each may be given per request).
M.defaults = {
  timeout = 60,               -- seconds for the whole request (connect,
                              -- send, head, body; streaming: up to the head)
  max_head = 65536,           -- bytes of status line and header fields
  max_body = 64 << 20,        -- bytes of a body read whole ("too large")
  keepalive_timeout = 60,     -- seconds an idle connection stays pooled
  keepalive_pool = 30,        -- idle connections per host:port
  max_redirects = 5,          -- when follow_redirects is true
  ssl_verify = true,          -- https: true (the system store), false, or
                              -- the path of a PEM CA file to trust instead
}

-- A request's option k: the caller's, else M.defaults' (the numeric
-- ones are read inline: `opts.k or M.defaults.k`).
local function opt(opts, k)
  local v = opts[k]
  if v == nil then return M.defaults[k] end
  return v
end

-- The last TLS session per pool key (host:port, SNI and trust): new
-- connections to the same server resume it.
local sessions = {}

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true,
  OPTIONS = true, TRACE = true }
-- Methods known to be tokens, upper-case already.
local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
  OPTIONS = true, TRACE = true, PATCH = true }

local function tchar_only(s) return s:find("^[A-Za-z0-9!#$%%&'*+%-.^_`|~]+$") ~= nil end

--- Split an http:// or https:// URL: scheme, host, port, target
-- ("/..."), and the Host header value. Returns nil, err for what it
-- cannot send.
function M.parse_url(url)
  if type(url) ~= "string" then return nil, "url must be a string" end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "bad url" end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return nil, "unsupported scheme: " .. scheme end
  local authority, target = rest:match("^([^/?#]*)(.*)$")
  target = target:gsub("#.*$", "")
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  if authority:find("@", 1, true) then return nil, "bad url: userinfo not supported" end
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  local hosthdr
  if host then
    hosthdr = "[" .. host .. "]"
  else
    host, port = authority:match("^([^:]+):?(%d*)$")
    hosthdr = host
  end
  if not host or host == "" then return nil, "bad url: no host" end
  -- RFC 3986 reg-name bytes only: the host goes into the Host line.
  if host:find("[^%w%.%-_~%%!$&'()*+,;=:]") then return nil, "bad url: bad byte in the host" end
  if target:find("[%z\1-\32\127]") then return nil, "bad url: space or control byte in the path" end
  local default = scheme == "https" and 443 or 80
  port = port ~= "" and tonumber(port) or default
  if port < 1 or port > 65535 then return nil, "bad url: port out of range" end
  if port ~= default then hosthdr = hosthdr .. ":" .. port end
  return { scheme = scheme, host = host, port = port, target = target, hosthdr = hosthdr }
end

-- RFC 3986 5.2.4: the path without its "." and ".." segments.
local function remove_dots(path)
  local out = {}
  local absolute = path:sub(1, 1) == "/"
  local segs = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
  if absolute then table.remove(segs, 1) end
  for i, seg in ipairs(segs) do
    if seg == ".." then
      if #out > 0 then out[#out] = nil end
      if i == #segs then out[#out + 1] = "" end
    elseif seg == "." then
      if i == #segs then out[#out + 1] = "" end
    else
      out[#out + 1] = seg
    end
  end
  return "/" .. table.concat(out, "/")
end

--- The absolute URL of reference ref (a Location header's value) seen
-- from base (parse_url's table): RFC 3986 5.2 for a reference that is
-- absolute ("http://h/p"), network-path ("//h/p"), absolute-path
-- ("/p"), relative-path ("p", "../p") or query-only ("?q"); spaces and
-- non-ASCII bytes %-encoded. Returns the URL, or nil for an empty
-- reference or one with a control byte.
function M.resolve(base, ref)
  if type(ref) ~= "string" then return nil end
  ref = ref:match("^[ \t]*(.-)[ \t]*$"):gsub("#.*$", "")
  if ref:find("[%z\1-\31\127]") then return nil end
  -- A space or a non-ASCII byte sent raw (servers do): %XX, as curl and
  -- browsers send them on.
  ref = ref:gsub("[ \128-\255]", function(c) return ("%%%02X"):format(c:byte()) end)
  if ref:find("^%a[%w+.-]*:") then return ref end
  local origin = base.scheme .. "://" .. base.hosthdr
  if ref:sub(1, 2) == "//" then return base.scheme .. ":" .. ref end
  local bpath = base.target:match("^([^?]*)")
  if ref == "" then return nil end   -- (itself: a loop)
  if ref:sub(1, 1) == "?" then return origin .. bpath .. ref end
  local path, query = ref:match("^([^?]*)(.*)$")
  if path:sub(1, 1) ~= "/" then
    path = (bpath:match("^(.*/)") or "/") .. path
  end
  return origin .. remove_dots(path) .. query
end

-- parse_url's answers for the URLs seen lately (a proxy asks for the same
-- few again and again); emptied when it holds 256.
local url_cache, url_cached = {}, 0
local function parse_url_cached(url)
  local u = url_cache[url]
  if u then return u end
  local err
  u, err = M.parse_url(url)
  if not u then return nil, err end
  if url_cached >= 256 then url_cache, url_cached = {}, 0 end
  url_cache[url], url_cached = u, url_cached + 1
  return u
end

local NO_HEADERS = setmetatable({}, { __newindex = function() error("read-only", 2) end })

-- The request head: method, target, Host, the caller's fields, framing.
local function build_head(method, u, headers, body)
  if next(headers) == nil then
    -- No fields of the caller's (a proxy's usual request): one concat.
    local cl = body and "Content-Length: " .. #body .. "\r\n"
      or (method == "POST" or method == "PUT") and "Content-Length: 0\r\n" or ""
    return method .. " " .. u.target .. " HTTP/1.1\r\nHost: " .. u.hosthdr .. "\r\n" .. cl .. "\r\n"
  end
  local t = { method, " ", u.target, " HTTP/1.1\r\n" }
  local has = {}
  local function add(k, v)
    v = tostring(v)
    if not tchar_only(k) then error("bad header name: " .. k, 4) end
    if v:find("[%z\r\n]") then error("bad header value for " .. k, 4) end
    local lk = k:lower()
    -- The body's framing is the client's alone: a Content-Length or
    -- Transfer-Encoding copied from a client's request (a proxy passing
    -- req.headers on with the decoded req:body()) would make the upstream
    -- read the body's bytes as framing, or as a next request (smuggled).
    if lk == "content-length" or lk == "transfer-encoding" then return end
    t[#t + 1] = k .. ": " .. v .. "\r\n"
    has[lk] = true
  end
  for k, v in pairs(headers) do
    if type(k) ~= "string" then error("header names must be strings", 3) end
    if type(v) == "table" then
      for _, x in ipairs(v) do add(k, x) end
    else
      add(k, v)
    end
  end
  if not has.host then t[#t + 1] = "Host: " .. u.hosthdr .. "\r\n" end
  if body then
    t[#t + 1] = "Content-Length: " .. #body .. "\r\n"
  elseif method == "POST" or method == "PUT" then
    t[#t + 1] = "Content-Length: 0\r\n"
  end
  t[#t + 1] = "\r\n"
  return table.concat(t)
end

-- Content-Length values seen lately and their numbers (a proxy sees the
-- same few again and again); emptied when it holds 256.
local lengths, nlengths = {}, 0

-- How the body is framed: "none", "chunked", "length" (n) or "close";
-- or nil, err for a response nobody can frame safely.
local function framing(method, res)
  local s = res.status
  if method == "HEAD" or (s >= 100 and s < 200) or s == 204 or s == 304 then
    return "none"
  end
  local h = res.headers
  local te, cl = h["transfer-encoding"], h["content-length"]
  if cl and not te then
    local n = lengths[cl]
    if n then return "length", n end
  end
  if te then
    if cl then return nil, "bad response: Transfer-Encoding and Content-Length" end
    local last = te:lower():match("([^,%s]+)%s*$")
    if last == "chunked" then return "chunked" end
    -- A value naming no coding at all (an empty line): refused, as
    -- llhttp does; any other without chunked last is read until close
    -- (RFC 9112 6.3).
    if not last and not te:find("[^,%s]") then
      return nil, "bad response: Transfer-Encoding"
    end
    return "close"
  end
  if cl then
    -- 1*DIGIT, leading zeros taken (as llhttp), at most 18 digits after
    -- them (no integer overflow)
    local digits = cl:match("^0*(%d+)$")
    if not digits or #digits > 18 then return nil, "bad response: Content-Length" end
    local n = tonumber(digits)
    if nlengths >= 256 then lengths, nlengths = {}, 0 end
    lengths[cl], nlengths = n, nlengths + 1
    return "length", n
  end
  return "close"
end

-- Whether the list v (comma-separated, OWS around each element) has the
-- token tok, compared without case (src/lhttp.c, as fdpool.http's).
local has_token = fdpool._httptoken

local function keepalive_ok(res)
  local c = res.headers.connection
  if res.version == "1.0" then
    -- Transfer-Encoding in an HTTP/1.0 message is faulty framing: the
    -- connection closes after it (RFC 9112 6.3), whatever it says.
    return c ~= nil and has_token(c, "keep-alive") and not res.headers["transfer-encoding"]
  end
  return not c or not has_token(c, "close")
end

-- A streaming reader for the body: res:read() -> piece, or nil at the
-- end (the connection then goes back to the pool), or nil, err.
local function make_reader(sock, kind, len, keep, opts)
  local left, done = len, false
  local first = true
  local function finish(ok)
    done = true
    if ok and keep then
      local d = M.defaults
      if not sock:setkeepalive(opts.keepalive_timeout or d.keepalive_timeout,
        opts.keepalive_pool or d.keepalive_pool) then
        sock:close()
      end
    else
      sock:close()
    end
  end
  return function()
    if done then return nil end
    if kind == "none" then finish(true); return nil end
    if kind == "length" then
      if left == 0 then finish(true); return nil end
      -- What has come (a slow upstream's body is relayed as it arrives,
      -- not held until 64 KiB are in).
      local data, err = sock:receiveany(math.min(left, 65536))
      if not data then finish(false); return nil, err end
      left = left - #data
      return data
    elseif kind == "chunked" then
      local data, err = sock:readchunk(65536, first)
      first = false
      if not data then finish(false); return nil, err end
      if data == "" then finish(true); return nil end
      return data
    else
      local data, err = sock:receiveany(65536)
      if data then return data end
      finish(false)
      if err == "closed" then return nil end
      return nil, err
    end
  end
end

-- Read a whole body (bounded by max_body).
local function read_body(sock, kind, len, max)
  if kind == "none" then return "" end
  if kind == "length" then
    if len > max then return nil, "too large" end
    if len == 0 then return "" end
    local data, err = sock:receive(len)
    if not data then return nil, err end
    return data
  elseif kind == "chunked" then
    return sock:readchunked(max)
  end
  local parts, n = {}, 0
  while true do
    local data, err, partial = sock:receive(65536)
    data = data or partial
    if data and data ~= "" then
      n = n + #data
      if n > max then return nil, "too large" end
      parts[#parts + 1] = data
    end
    if err == "closed" then return table.concat(parts) end
    if err then return nil, err end
  end
end

-- Closed sockets to make the next exchanges' with (a socket object is
-- reusable once closed or back in the pool: connect starts it afresh);
-- saves a userdata and its finalizer per request.
local spare, nspare = {}, 0

-- One exchange on one connection (no redirect). Returns res, or nil,
-- err, retryable (a reused connection that failed before any byte of a
-- response: the upstream closed it while it was idle).
local function exchange(opts, method, u, head, body, deadline)
  local sock
  if nspare > 0 then
    sock, spare[nspare], nspare = spare[nspare], nil, nspare - 1
  else
    sock = fdpool.tcp()
  end
  local remaining = deadline - fdpool.now()
  if remaining <= 0 then return nil, "timeout" end
  sock:settimeout(remaining)
  -- The whole exchange within the deadline (connect is bounded by the
  -- timeout just set).
  sock:setdeadline(remaining)
  local ok, err, pool
  if u.scheme == "https" then
    -- TLS connections are pooled apart (by name and trust) from plain
    -- ones to the same host:port.
    pool = ("https:%s:%d:%s"):format(u.host, u.port, tostring(opt(opts, "ssl_verify")))
    ok, err = sock:connect(u.host, u.port, { pool = pool })
  else
    ok, err = sock:connect(u.host, u.port)
  end
  if not ok then return nil, err end
  local reused = sock:getreusedtimes()
  if pool then
    local sess
    sess, err = sock:sslhandshake(sessions[pool], u.host, opt(opts, "ssl_verify"))
    if not sess then return nil, err end
    sessions[pool] = sess
  end
  local sent
  sent, err = sock:send(body and head .. body or head)
  if not sent then
    sock:close()
    return nil, err, reused > 0
  end
  local res, partial
  local first = true     -- no interim (1xx) answer read yet
  repeat
    res, err, partial = sock:readresponse(opts.max_head or M.defaults.max_head)
    if not res then
      sock:close()
      -- retryable: nothing at all came back (not even a 1xx)
      return nil, err, first and reused > 0 and err == "closed" and partial == ""
    end
    first = false
  until res.status >= 200 or res.status == 101
  res.reused = reused
  local kind, len = framing(method, res)
  if not kind then sock:close(); return nil, len end
  local keep = kind ~= "close" and res.status ~= 101 and keepalive_ok(res)
  if opts.stream then
    sock:setdeadline(nil)
    sock:settimeout(opts.timeout or M.defaults.timeout)
    local reader = make_reader(sock, kind, len, keep, opts)
    res.read = function() return reader() end
    res.close = function() sock:close() end
    return res
  end
  res.body, err = read_body(sock, kind, len, opts.max_body or M.defaults.max_body)
  if not res.body then sock:close(); return nil, err end
  local d = M.defaults
  if not (keep and sock:setkeepalive(opts.keepalive_timeout or d.keepalive_timeout,
      opts.keepalive_pool or d.keepalive_pool)) then
    sock:close()
  end
  if nspare < 16 then nspare = nspare + 1; spare[nspare] = sock end
  return res
end

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- request{}'s numeric options: a number >= 0 (not NaN) when given (a
-- table or a string there was taken as no limit, or as no pool).
local NUMERIC = { "timeout", "max_head", "max_body", "keepalive_timeout", "keepalive_pool" }
local function check_options(opts)
  for i = 1, #NUMERIC do
    local k = NUMERIC[i]
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or not (v >= 0)) then
      error(("request{}: %s must be a number >= 0, got %s"):format(k,
        type(v) == "number" and tostring(v) or type(v)), 3)
    end
  end
  local sv = opts.ssl_verify
  if sv ~= nil and type(sv) ~= "boolean" and type(sv) ~= "string" then
    error("request{}: ssl_verify must be true, false or a CA file name, got " .. type(sv), 3)
  end
  local fr = opts.follow_redirects
  if fr ~= nil and type(fr) ~= "boolean" and not (type(fr) == "number" and fr >= 0) then
    error("request{}: follow_redirects must be a boolean or a number >= 0, got "
      .. (type(fr) == "number" and tostring(fr) or type(fr)), 3)
  end
end

--- Make a request.
-- @tparam table opts `url` (http://host[:port]/path), `method` ("GET"),
-- `headers` (name = value; a list sends one line each; Content-Length and
-- Transfer-Encoding are dropped: the body is framed here), `body` (a
-- string), `timeout` (seconds, the whole request), `follow_redirects`
-- (false (default), true (up to max_redirects) or a number), `stream`
-- (true: `res.body` is nil; read it with `res:read()`), `max_head`,
-- `max_body`, `keepalive_timeout`, `keepalive_pool` (see M.defaults).
-- `ssl_verify` (https: true, false, or a CA file).
-- @treturn[1] table res: `status`, `reason`, `version`, `headers`
-- (lower-case names, repeated ones joined with ", "), `body`, `reused`
-- (times its connection had been reused from the pool), `url` (the last
-- one, after redirects)
-- @return[2] nil
-- @treturn[2] string "timeout", "connection refused", "no such host",
-- "closed", "too large", "bad status line", "header too large", "bad
-- chunk size"..., "certificate verify failed: ...", "handshake failed:
-- ...", "too many redirects"
function M.request(opts)
  if type(opts) ~= "table" then error("request{} expects a table", 2) end
  -- (the whole check only when a rarely given option is there: a Lua
  -- line costs ~100 instructions, and a proxy gives url, method and
  -- timeout on every request)
  local timeout = opts.timeout
  if (timeout ~= nil and not (type(timeout) == "number" and timeout >= 0))
      or opts.max_body ~= nil or opts.max_head ~= nil or opts.keepalive_timeout ~= nil
      or opts.keepalive_pool ~= nil or opts.ssl_verify ~= nil or opts.follow_redirects ~= nil then
    check_options(opts)
  end
  local method = opts.method or "GET"
  if not METHODS[method] then
    if type(method) ~= "string" then error("bad method", 2) end
    method = method:upper()
    if not tchar_only(method) then error("bad method", 2) end
  end
  local body = opts.body
  if body ~= nil and type(body) ~= "string" then error("body must be a string", 2) end
  local url = opts.url
  local headers = opts.headers or NO_HEADERS
  local follow = opts.follow_redirects
  local max_redirects = follow == true and M.defaults.max_redirects
    or (type(follow) == "number" and follow) or 0
  local deadline = fdpool.now() + (timeout or M.defaults.timeout)
  local hops = 0
  while true do
    local u, err = parse_url_cached(url)
    if not u then return nil, err end
    local head = build_head(method, u, headers, body)
    local res, retry
    res, err, retry = exchange(opts, method, u, head, body, deadline)
    if not res and retry and IDEMPOTENT[method] then
      -- The pooled connection was closed by the upstream while idle
      -- (its FIN still in flight): once more, as nginx does.
      res, err = exchange(opts, method, u, head, body, deadline)
    end
    if not res then return nil, err end
    res.url = url
    local loc = res.headers.location
    if not (REDIRECT[res.status] and loc and max_redirects > 0) or opts.stream then
      return res
    end
    hops = hops + 1
    if hops > max_redirects then return nil, "too many redirects" end
    loc = M.resolve(u, loc)
    if not loc then return nil, "bad redirect location" end
    local nu = M.parse_url(loc)
    if nu and (nu.host ~= u.host or nu.port ~= u.port or nu.scheme ~= u.scheme) then
      local h = {}
      for k, v in pairs(headers) do
        local lk = k:lower()
        if lk ~= "authorization" and lk ~= "cookie" and lk ~= "host" then h[k] = v end
      end
      headers = h
    end
    if res.status == 303 or ((res.status == 301 or res.status == 302) and method == "POST") then
      method, body = method == "HEAD" and "HEAD" or "GET", nil
    end
    url = loc
  end
end

return M
