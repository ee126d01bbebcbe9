-- fdpool.http.form: what handlers read from a request beyond its head:
-- URL decoding, the query's arguments, cookies (and Set-Cookie lines),
-- the body as a stream (Content-Length or chunked), urlencoded and
-- multipart/form-data forms (streamed, with limits). fdpool.http's req
-- and res methods (args, cookies, body_reader, form, cookie) call these.
local M = {}

--- Decode %XX escapes, and "+" as a space unless plus is false (the
-- query and form rule; false for paths).
function M.urldecode(s, plus)
  if plus ~= false then s = s:gsub("+", " ") end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Encode everything but unreserved characters (RFC 3986 2.3) as %XX.
function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Parse "a=1&b=2&a=3" into {a = {"1", "3"}, b = "2"} (decoded; a key
-- without "=" gets ""). At most max keys (default 1000): the rest is
-- dropped and a second value "truncated" returned.
function M.parse_query(s, max)
  max = max or 1000
  local t, n, truncated = {}, 0, nil
  for pair in s:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = M.urldecode(k)
    if k ~= "" then
      v = M.urldecode(v)
      local old = t[k]
      if old == nil then
        n = n + 1
        if n > max then truncated = "truncated" break end
        t[k] = v
      elseif type(old) == "table" then
        old[#old + 1] = v
      else
        t[k] = { old, v }
      end
    end
  end
  return t, truncated
end

--- Parse a Cookie header ("a=1; b=2") into {a = "1", b = "2"}: values
-- as sent (a quoted value loses its quotes; nothing is decoded), the
-- first of a repeated name kept. At most max cookies (default 200).
function M.parse_cookies(s, max)
  max = max or 200
  local t, n = {}, 0
  if not s then return t end
  for pair in s:gmatch("[^;]+") do
    local k, v = pair:match("^[ \t]*([^=]-)[ \t]*=[ \t]*(.-)[ \t]*$")
    if k and k ~= "" then
      v = v:match('^"(.*)"$') or v
      if t[k] == nil then
        n = n + 1
        if n > max then break end
        t[k] = v
      end
    end
  end
  return t
end

local function token(s)
  return type(s) == "string" and s:find("^[!#$%%&'*+%-.^_`|~%w]+$") ~= nil
end

-- An attribute value of Set-Cookie: no control byte and no ";".
local function attr(name, v)
  v = tostring(v)
  if v:find("[%c;]") then
    error(("res:cookie: %s must not hold ';' or control bytes"):format(name), 3)
  end
  return v
end

local samesites = { strict = "Strict", lax = "Lax", none = "None" }

--- The Set-Cookie line for name=value with opts {path, domain, max_age,
-- expires (epoch seconds), secure, httponly, samesite}. Raises for a
-- name that is not a token or a value outside RFC 6265's cookie-octets
-- (no CR, LF, ";", ",", space, quote or backslash: encode such values
-- first, e.g. with http.urlencode), so no header can be injected.
function M.set_cookie(name, value, opts, date)
  if not token(name) then error("res:cookie: the name must be a token", 3) end
  local vt = type(value)
  if vt ~= "string" and vt ~= "number" then
    -- (a nil from a missing session id would be sent as "name=nil")
    error("res:cookie: the value must be a string or a number, got " .. vt, 3)
  end
  value = tostring(value)
  if value:find('[%c%s",;\\\128-\255]') then
    error("res:cookie: the value holds a byte a cookie cannot carry "
      .. "(CR, LF, ';', ',', space, quote, backslash, control or non-ASCII): "
      .. "encode it first (http.urlencode)", 3)
  end
  local t = { name .. "=" .. value }
  opts = opts or {}
  if opts.path then t[#t + 1] = "Path=" .. attr("path", opts.path) end
  if opts.domain then t[#t + 1] = "Domain=" .. attr("domain", opts.domain) end
  if opts.max_age then
    local n = math.tointeger(opts.max_age)
    if not n then error("res:cookie: max_age must be an integer", 3) end
    t[#t + 1] = "Max-Age=" .. n
  end
  if opts.expires then t[#t + 1] = "Expires=" .. date(opts.expires) end
  if opts.secure then t[#t + 1] = "Secure" end
  if opts.httponly then t[#t + 1] = "HttpOnly" end
  if opts.samesite then
    local s = samesites[tostring(opts.samesite):lower()]
    if not s then error("res:cookie: samesite must be Strict, Lax or None", 3) end
    t[#t + 1] = "SameSite=" .. s
  end
  return table.concat(t, "; ")
end

-- ---- the body as a stream ----------------------------------------------

--- A function returning the body of req piece by piece: a piece (a
-- non-empty string), then nil at the end; nil, err on failure ("too
-- large" past limit, "timeout", "closed", "bad ..."). Limit: bytes of
-- the whole body.
function M.body_reader(req, limit, size)
  local conn, opts = req.conn, req._opts
  size = size or 65536
  if req._body or req._streamed then
    error(req._discarded
      and "the body was discarded: the response was sent before it was read"
      or "the body was read already (req:body or req:body_reader)", 3)
  end
  req._streamed = "started"
  req._broken = true          -- until the whole body is read
  local left = req._length
  local started, done = false, false
  return function()
    if done then return nil end
    if req._body_err then return nil, req._body_err end
    if not started then
      started = true
      if req._expect_continue then
        req._expect_continue = false
        conn:send("HTTP/1.1 100 Continue\r\n\r\n")
        req._sent100 = 25
      end
      conn:settimeout(opts.body_timeout)
      conn:setdeadline(opts.body_timeout, opts.body_min_rate)
    end
    local piece, err
    if req._chunked then
      piece, err = conn:readchunk(limit, left == 0 and not req._chunk_started)
      req._chunk_started = true
      if piece == "" then piece = nil end
    elseif left > 0 then
      if req._length > limit then
        err = "too large"
      else
        piece, err = conn:receive(left < size and left or size)
        if piece then left = left - #piece end
      end
    end
    if err then
      conn:setdeadline(nil)
      req._body_err = err
      req._close = true               -- the reply says Connection: close
      done = true
      return nil, err
    end
    if not piece then
      conn:setdeadline(nil)
      done = true
      req._streamed = "done"
      req._broken = nil
      return nil
    end
    return piece
  end
end

-- ---- forms ---------------------------------------------------------------

M.form_defaults = {
  max_parts = 100,          -- parts of a multipart body
  max_field = 65536,        -- bytes of a field that is not a file
  max_file = nil,           -- bytes of a file (nil: the body's limit)
  max_part_head = 8192,     -- bytes of a part's header lines
}

-- Content-Type's parameter (boundary=...), quoted or not.
local function param(ct, name)
  for k, v in ct:gmatch(";%s*([%w%-_]+)%s*=%s*(\"?[^;\"]*\"?)") do
    if k:lower() == name then return (v:gsub('^"(.*)"$', "%1")) end
  end
end

-- The part's name and filename from Content-Disposition.
local function disposition(v)
  if not v or not v:lower():find("^%s*form%-data") then return nil end
  local name = v:match(';%s*name="([^"]*)"') or v:match(";%s*name=([^;%s]+)")
  local filename = v:match(';%s*filename="([^"]*)"') or v:match(";%s*filename=([^;%s]+)")
  return name, filename
end

-- Add a value to fields: a repeated name becomes a list.
local function add(fields, k, v)
  local old = fields[k]
  if old == nil then fields[k] = v
  elseif type(old) == "table" and old[1] ~= nil and old.filename == nil then old[#old + 1] = v
  else fields[k] = { old, v } end
end

-- Parse a multipart/form-data body from read() (a body_reader).
local function multipart(req, read, boundary, o)
  local delim = "\r\n--" .. boundary
  local buf = "\r\n"          -- so the first delimiter has its CRLF
  local fields, nparts = {}, 0
  local max_file = o.max_file or math.huge
  local function more()
    local piece, err = read()
    if not piece then return nil, err or "no final boundary" end
    buf = buf .. piece
    return true
  end
  -- The preamble: up to the first delimiter.
  while true do
    local i = buf:find(delim, 1, true)
    if i then buf = buf:sub(i + #delim) break end
    if #buf > 65536 + #delim then buf = buf:sub(-#delim) end
    local ok, err = more()
    if not ok then return nil, err end
  end
  while true do
    -- After a delimiter: "--" (the end) or CRLF, then the part's head.
    while #buf < 2 do
      local ok, err = more()
      if not ok then return nil, err end
    end
    if buf:sub(1, 2) == "--" then
      -- The close delimiter; the epilogue is read and dropped.
      repeat local p, err = read() if err then return nil, err end until not p
      return fields
    end
    local hend
    while true do
      hend = buf:find("\r\n\r\n", 1, true)
      if hend then break end
      if #buf > o.max_part_head then return nil, "part header too large" end
      local ok, err = more()
      if not ok then return nil, err end
    end
    if buf:sub(1, 2) ~= "\r\n" then return nil, "bad multipart delimiter" end
    if hend - 1 > o.max_part_head then return nil, "part header too large" end
    local headers = {}
    for line in buf:sub(3, hend + 1):gmatch("([^\r\n]*)\r\n") do
      local k, v = line:match("^([^:]+):%s*(.-)%s*$")
      if not k then return nil, "bad part header" end
      headers[k:lower()] = v
    end
    buf = buf:sub(hend + 4)
    nparts = nparts + 1
    if nparts > o.max_parts then return nil, "too many parts" end
    local name, filename = disposition(headers["content-disposition"])
    if not name then return nil, "part without a form-data name" end
    local part = { name = name, filename = filename,
      content_type = headers["content-type"], headers = headers, size = 0 }
    local sink, f, value, werr
    if filename then
      if o.on_file then
        sink = o.on_file(part)
      else
        -- A temp file that cannot be made or written (a full disk, no
        -- /tmp) fails the form with "cannot store the upload: ..." (500),
        -- never a file shorter than part.size says.
        local ok, path = pcall(os.tmpname)
        if not ok then return nil, "cannot store the upload: " .. tostring(path) end
        part.path = path
        req._tmpfiles = req._tmpfiles or {}
        req._tmpfiles[#req._tmpfiles + 1] = part.path
        local ferr
        f, ferr = io.open(part.path, "wb")
        if not f then return nil, "cannot store the upload: " .. tostring(ferr) end
        sink = function(chunk)
          if werr then return end
          local wok, e
          if chunk then wok, e = f:write(chunk) else wok, e = f:close() end
          if not wok then werr = "cannot store the upload: " .. tostring(e) end
        end
      end
    else
      value = {}
    end
    local limit = filename and max_file or o.max_field
    -- The data: up to the next delimiter. Keep #delim - 1 bytes back in
    -- case a delimiter is split across pieces.
    while true do
      local i = buf:find(delim, 1, true)
      local data = i and buf:sub(1, i - 1) or buf:sub(1, #buf - #delim + 1)
      if #data > 0 then
        part.size = part.size + #data
        if part.size > limit then
          if f then f:close() end
          return nil, filename and "file too large" or "field too large"
        end
        if sink then sink(data) else value[#value + 1] = data end
        if werr then f:close() return nil, werr end
      end
      if i then
        buf = buf:sub(i + #delim)
        break
      end
      buf = buf:sub(#data + 1)
      local ok, err = more()
      if not ok then
        if f then f:close() end
        return nil, err
      end
    end
    if sink then
      sink(nil)
      if werr then return nil, werr end
      add(fields, name, part)
    else
      add(fields, name, table.concat(value))
    end
  end
end

--- The request's form: urlencoded (read with req:body(), max_body) or
-- multipart/form-data (streamed from req:body_reader(); files to temp
-- files removed when the handler returns, or to o.on_file(part) ->
-- sink(chunk), sink(nil) at the end). Returns fields, or nil, err,
-- status (400, 413 or 415; 500 for a temp file that cannot be written).
function M.form(req, o)
  local opts = {}
  for k, v in pairs(M.form_defaults) do opts[k] = v end
  for k, v in pairs(o or {}) do
    if M.form_defaults[k] == nil and k ~= "on_file" and k ~= "max_file" then
      error("unknown form option '" .. tostring(k) .. "'", 3)
    end
    opts[k] = v
  end
  local ct = req.headers["content-type"] or ""
  local mime = ct:match("^%s*([^;%s]+)") or ""
  mime = mime:lower()
  if mime == "application/x-www-form-urlencoded" then
    local body, err = req:body()
    if not body then return nil, err, err == "too large" and 413 or 400 end
    local t = M.parse_query(body, opts.max_parts)
    return t
  elseif mime == "multipart/form-data" then
    local boundary = param(ct, "boundary")
    if not boundary or #boundary == 0 or #boundary > 70 then
      return nil, "multipart without a valid boundary", 400
    end
    local t, err = multipart(req, req:body_reader(), boundary, opts)
    if not t then
      return nil, err, (err == "too large" or err:find("too large$")
        or err == "too many parts") and 413
        or err:find("^cannot store the upload") and 500 or 400
    end
    return t
  end
  return nil, "not a form (Content-Type " .. (mime == "" and "missing" or mime) .. ")", 415
end

return M
