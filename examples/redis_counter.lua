-- examples/redis_counter.lua ADDR: a page counter in Redis. Each request
-- runs INCR on a key named after the path (and GET /count/NAME reads it)
-- by talking RESP to redis-server over fdpool.tcp(), whose waits yield
-- to the worker's other connections; connections go back to the worker's
-- keep-alive pool after each command, so a busy worker keeps a few Redis
-- connections, not one per request. Redis down: 502, never a crash.
--   redis-server --port 6379 &
--   build/pool run examples/redis_counter.lua -- 127.0.0.1:6379
--   curl localhost:8080/hits        -> hits 1
-- ADDR: HOST:PORT (default 127.0.0.1:6379) or unix:/path/redis.sock
local fdpool = require "fdpool"
local http = require "fdpool.http"

local ADDR = ... or "127.0.0.1:6379"
local HOST, PORT = ADDR:match("^(.*):(%d+)$")
if ADDR:find("^unix:") then HOST, PORT = ADDR, nil end
assert(HOST, "usage: redis_counter.lua HOST:PORT | unix:/path")
PORT = tonumber(PORT)

-- One RESP reply: a value (integer, string, table of them, or
-- ngx.null-like false for nil bulk), or nil, err.
local function read_reply(sock)
  local line, err = sock:receive("l")
  if not line then return nil, err end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == ":" then return math.tointeger(tonumber(rest)) end
  if kind == "+" then return rest end
  if kind == "-" then return nil, "redis: " .. rest end
  if kind == "$" then
    local n = tonumber(rest)
    if not n or n < -1 or n > 512 * 1024 * 1024 then return nil, "redis: bad reply" end
    if n == -1 then return false end
    local data, derr = sock:receive(n + 2)
    if not data then return nil, derr end
    return data:sub(1, n)
  end
  if kind == "*" then
    local n = tonumber(rest)
    if not n or n > 1024 * 1024 then return nil, "redis: bad reply" end
    local t = {}
    for i = 1, n do
      local v, verr = read_reply(sock)
      if v == nil then return nil, verr end
      t[i] = v
    end
    return t
  end
  return nil, "redis: bad reply"
end

-- Run one command: the reply, or nil, err.
local function redis(...)
  local args = table.pack(...)
  local t = { "*" .. args.n .. "\r\n" }
  for i = 1, args.n do
    local a = tostring(args[i])
    t[#t + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  local sock = fdpool.tcp()
  sock:settimeout(2)
  local ok, err = sock:connect(HOST, PORT)
  if not ok then return nil, err end
  ok, err = sock:send(table.concat(t))
  local v
  if ok then v, err = read_reply(sock) end
  if v == nil then
    sock:close()
    return nil, err
  end
  sock:setkeepalive(30, 16)
  return v
end

return http.serve(function(req, res)
  res:header("Content-Type", "text/plain")
  local name = req.path:match("^/count/([%w_.-]+)$")
  local v, err
  if name then
    v, err = redis("GET", "counter:" .. name)
    if v == false then v = 0 end
  else
    name = req.path:match("^/([%w_.-]*)$")
    if not name then return 404, {}, "not found\n" end
    v, err = redis("INCR", "counter:" .. (name == "" and "index" or name))
  end
  if v == nil then
    fdpool.log("warn", "redis " .. ADDR .. ": " .. tostring(err))
    return 502, { ["Content-Type"] = "text/plain" }, "redis unavailable: " .. tostring(err) .. "\n"
  end
  res:send(("%s %s\n"):format(name, tostring(v)))
end)
