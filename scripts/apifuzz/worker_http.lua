-- scripts/apifuzz/worker_http.lua: the worker side of scripts/apifuzz/run (http.serve); the path /GROUP[/ARG] picks the case; results go to stderr as "RESULT done ..."
local fdpool = require "fdpool"
local http = require "fdpool.http"
local C = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local call = C.call
local BAD, NB = C.bad("a\r\nb: c", "Content-Length", "Transfer-Encoding", "chunked", 200, 101, 304, 999,
  "Connection", "close", "/etc/passwd", "x-y", 10)
local SMALL, NS = C.small("a\r\nb", 200, "x")
local fuzz = C.fuzzer(BAD, NB, SMALL, NS)
local function methods(obj)
  local t, seen = {}, {}
  local function add(tab) if type(tab) == "table" then for k, v in pairs(tab) do if type(v) == "function" and not seen[k] then seen[k] = true; t[#t+1] = k end end end end
  if type(obj) == "table" then add(obj) end
  local mt = getmetatable(obj)
  local idx = type(mt) == "table" and rawget(mt, "__index")
  if type(idx) == "table" then add(idx); local m2 = getmetatable(idx); if m2 and type(m2.__index) == "table" then add(m2.__index) end end
  if type(mt) == "table" then add(mt) end
  table.sort(t)
  return t
end
local G = {}
local early = { status = true, header = true, cookie = true }
G.res = function(req, res, only)
  local ms = methods(res)
  for _, m in ipairs(ms) do if early[m] and (not only or m == only) then fuzz(res, res[m], nil, true) end end
  -- reentrancy: an argument whose __tostring sends
  local re = setmetatable({}, { __tostring = function() res:send("inner") return "v" end,
    __index = function() res:finish() return "v" end })
  for _, m in ipairs(ms) do if m:sub(1,1) ~= "_" then call(res[m], res, re, re); call(res[m], res, "x-a", re) end end
  for _, m in ipairs(ms) do if (not only or m == only) and m:sub(1,1) ~= "_" and m ~= "takeover" then fuzz(res, res[m], nil, false) end end
  for _, m in ipairs(ms) do if (not only or m == only) then fuzz(res, res[m], nil, false) end end
end
G.reswrite = function(req, res)
  res:write("a")
  for _, m in ipairs(methods(res)) do if m ~= "takeover" then fuzz(res, res[m], nil, false) end end
end
G.takeover = function(req, res, arg)
  local i = tonumber(arg) or 1
  local ok, conn = call(res.takeover, res, BAD[i])
  for _, m in ipairs(methods(res)) do fuzz(res, res[m], nil, false) end
end
G.req = function(req, res)
  local fns = { "args", "cookies", "__index", "__pairs" }
  for _, m in ipairs(fns) do if m ~= "body" and m ~= "body_reader" and m ~= "form" and m ~= "json" then fuzz(req, req[m], nil, true) end end
  for i = 1, NB do call(function() return req[BAD[i]] end) end
  for i = 1, NB do call(function() req[BAD[i] or "x"] = BAD[i] end) end
  for i = 1, NB do call(function() return req.headers[BAD[i]] end) end
  call(function() for k, v in pairs(req) do end end)
  call(function() for k, v in pairs(req.headers) do end end)
  res:send("ok")
end
G.body = function(req, res, arg)
  local i = tonumber(arg) or 1
  local m = ({ "body", "body_reader", "form", "json" })[tonumber(arg:match("^(%d)")) or 1]
  local j = tonumber(arg:match("^%d+ (%d+)")) or 1
  local ok, r = call(req[m], req, BAD[j], SMALL[j % NS + 1])
  if ok and type(r) == "function" then for _ = 1, 10 do if not call(r) then break end end end
  for _, mm in ipairs { "body", "body_reader", "form", "json" } do fuzz(req, req[mm], nil, false) end
  pcall(res.send, res, "ok")
end
G.ws = function(req, res, arg)
  local ws
  if arg then
    local fl, i = arg:match("^(%S+) (%d+)$")
    i = tonumber(i)
    local o = fl == "opts" and BAD[i] or { [fl] = BAD[i] }
    local ok, w = call(http.websocket, req, res, o)
    if not ok then
      io.stderr:write("WSERR ", fl, " ", i, " started=", tostring(res.started), " ", tostring(w), "\n")
      return
    end
    ws = w
    if not ws then return end
    pcall(ws.conn.settimeout, ws.conn, 0.01)
  else
    ws = http.websocket(req, res, { timeout = 0.01 })
  end
  if not ws then res:send("nows") return end
  for _, m in ipairs(methods(ws)) do if m ~= "close" and m:sub(1,1) ~= "_" then fuzz(ws, ws[m], nil, false) end end
  fuzz(ws, ws.close, nil, false)
  for _, m in ipairs(methods(ws)) do fuzz(ws, ws[m], nil, false) end
end
G.router = function(req, res)
  local r = http.router()
  for _, m in ipairs(methods(r)) do fuzz(r, r[m], nil, true) end
  call(r, req, res)
  pcall(res.send, res, "ok")
end
G.list = function(req, res)
  io.stderr:write("LIST res: ", table.concat(methods(res), " "), "\nLIST req: ", table.concat(methods(req), " "), "\n")
end
return http.serve(function(req, res)
  local group, arg = req.path:match("^/(%w+)/?(.*)$")
  arg = http.urldecode(arg or "")
  C.count, C.errs = 0, 0
  local t0 = fdpool.now()
  local ok, e = pcall(G[group] or error, req, res, arg ~= "" and arg or nil)
  io.stderr:write(("RESULT done %s %s %s calls=%d errs=%d t=%.2f %s\n"):format(group, arg, tostring(ok), C.count, C.errs, fdpool.now() - t0, ok and "" or tostring(e)))
  pcall(res.send, res, "done")
end)
