-- fdpool.testing.http: the HTTP helpers of fdpool.testing (run,
-- build_request, parse_response, http_request): drive a handler through
-- an in-memory conn and read what it answered. Pure Lua.
local tconn = require "fdpool.testing.conn"

local M = {}

-- ---- HTTP helpers ----------------------------------------------------

local function handler_fn(handler)
  if type(handler) == "function" then return handler end
  if type(handler) == "table" and type(handler.handle) == "function" then
    return handler.handle
  end
  error("handler must be a function or a table with a handle function", 3)
end

--- Run handler on a testing.conn made from conn_opts (or on a conn).
-- @treturn string the output
-- @treturn table the conn
function M.run(handler, conn_opts)
  local fn = handler_fn(handler)
  local c = tconn.is_conn(conn_opts) and conn_opts or tconn.conn(conn_opts)
  fn(c)
  return c:output(), c
end

--- The bytes of an HTTP/1.1 request. Adds Host (unless given) and
-- Content-Length for a body (unless Content-Length or Transfer-Encoding
-- is given).
-- @tparam string method
-- @tparam string path the request target
-- @tparam[opt] table opts `headers` (name = value; a list value sends one
-- line each), `body` (string), `version` ("1.1" default, or "1.0")
-- @treturn string
function M.build_request(method, path, opts)
  opts = opts or {}
  local lines = { ("%s %s HTTP/%s"):format(method, path, opts.version or "1.1") }
  local seen = {}
  local names = {}
  for k in pairs(opts.headers or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = opts.headers[k]
    seen[k:lower()] = true
    if type(v) == "table" then
      for _, x in ipairs(v) do lines[#lines + 1] = k .. ": " .. tostring(x) end
    else
      lines[#lines + 1] = k .. ": " .. tostring(v)
    end
  end
  if not seen["host"] then table.insert(lines, 2, "Host: test") end
  local body = opts.body
  if body and not seen["content-length"] and not seen["transfer-encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

local function decode_chunked(s, pos)
  local parts = {}
  while true do
    local line_end = s:find("\r\n", pos, true)
    if not line_end then return nil, "truncated chunked body" end
    local size = tonumber(s:sub(pos, line_end - 1):match("^%s*(%x+)"), 16)
    if not size then return nil, "bad chunk size" end
    pos = line_end + 2
    if size == 0 then
      -- Trailers, up to the empty line.
      local tend = s:find("\r\n", pos, true)
      while tend and tend > pos do
        pos = tend + 2
        tend = s:find("\r\n", pos, true)
      end
      return table.concat(parts), tend and tend + 2 or #s + 1
    end
    if #s < pos + size - 1 then return nil, "truncated chunked body" end
    parts[#parts + 1] = s:sub(pos, pos + size - 1)
    pos = pos + size
    if s:sub(pos, pos + 1) ~= "\r\n" then return nil, "bad chunk end" end
    pos = pos + 2
  end
end

--- Parse one HTTP/1.x response from bytes (interim 1xx responses are
-- skipped). The body is delimited by Content-Length, chunked encoding,
-- or the end of the bytes.
-- @tparam string bytes
-- @tparam[opt] string method the request's method ("HEAD": no body)
-- @treturn[1] integer status
-- @treturn[1] table headers (lower-case names; repeated ones joined with ", ")
-- @treturn[1] string body
-- @treturn[1] string the bytes after this response
-- @return[2] nil
-- @treturn[2] string what is wrong
function M.parse_response(bytes, method)
  local pos = 1
  while true do
    local hend = bytes:find("\r\n\r\n", pos, true)
    if not hend then
      return nil, #bytes < pos and "no response" or "truncated response head"
    end
    local head = bytes:sub(pos, hend + 1)
    local status = head:match("^HTTP/1%.[01] (%d%d%d)[^\r\n]*\r\n")
    if not status then return nil, "bad status line: " .. (head:match("^[^\r\n]*")) end
    status = tonumber(status)
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]-)[ \t]*%f[\r]") do
      name = name:lower()
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
    pos = hend + 4
    if status >= 200 or status == 101 then
      if method == "HEAD" or status == 204 or status == 304 or status < 200 then
        return status, headers, "", bytes:sub(pos)
      end
      local te, cl = headers["transfer-encoding"], headers["content-length"]
      if te and te:lower():find("chunked", 1, true) then
        local body, after = decode_chunked(bytes, pos)
        if not body then return nil, after end
        return status, headers, body, bytes:sub(after)
      elseif cl then
        local n = tonumber(cl)
        if not n then return nil, "bad Content-Length: " .. cl end
        if #bytes - pos + 1 < n then return nil, "truncated body" end
        return status, headers, bytes:sub(pos, pos + n - 1), bytes:sub(pos + n)
      end
      return status, headers, bytes:sub(pos), ""
    end
  end
end

--- Run an HTTP handler (a raw one, or one made with http.serve) on a
-- testing.conn holding one request, and parse its response.
-- @tparam function|table handler
-- @tparam string method
-- @tparam string path
-- @tparam[opt] table opts as build_request, plus `peer`, `chunks` (split
-- the request bytes into chunks of this size), `timeout_after_input`
-- @treturn[1] integer status
-- @treturn[1] table headers (lower-case names)
-- @treturn[1] string body
-- @treturn[1] table the conn (output(), parked, closed)
-- @return[2] nil
-- @treturn[2] string what is wrong with the response
-- @treturn[2] table the conn
function M.http_request(handler, method, path, opts)
  opts = opts or {}
  local fn = handler_fn(handler)
  local bytes = M.build_request(method, path, opts)
  local input = bytes
  if opts.chunks then
    input = {}
    for i = 1, #bytes, opts.chunks do input[#input + 1] = bytes:sub(i, i + opts.chunks - 1) end
  end
  local c = tconn.conn{ input = input, peer = opts.peer,
    timeout_after_input = opts.timeout_after_input }
  fn(c)
  local status, headers, body = M.parse_response(c:output(), method)
  if not status then return nil, headers, c end
  return status, headers, body, c
end

return M
