-- scripts/apifuzz/worker_conn.lua: the worker side of scripts/apifuzz/run (raw handler); the first line a client sends is "GROUP ADDR [ARG]"; results go to stderr as "RESULT done GROUP ok calls=N errs=N"
local fdpool = require "fdpool"
local http = require "fdpool.http"
local MYADDR -- set from the first line
local C = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local evil, yielder, call = C.evil, C.yielder, C.call
local BAD, NB = C.bad("a", "l", "*a", "*l", "L", 7, "r", "w", "rw", "binary", "text", "127.0.0.1", 10)
local SMALL, NS = C.small()
local fuzz = C.fuzzer(BAD, NB, SMALL, NS)
local function methods(obj)
  local mt = getmetatable(obj)
  local idx = type(mt) == "table" and mt.__index
  local t = {}
  local function add(tab) if type(tab) == "table" then for k, v in pairs(tab) do if type(v) == "function" then t[#t+1] = k end end end end
  if type(idx) == "table" then add(idx) end
  if type(obj) == "table" then add(obj) end
  table.sort(t)
  return t
end
local G = {}
local function note(conn, s) conn:send(s .. "\n") end

-- conn methods, except the ones that end the conn
G.conn = function(conn, only)
  local skip = { close = true, park = true, httploop = true, tls = true, shutdown = true }
  for _, m in ipairs(methods(conn)) do
    if not skip[m] and (not only or only == m) then
      local reset = function() pcall(conn.settimeout, conn, 0.001); pcall(conn.setdeadline, conn) end
      fuzz(conn, conn[m], reset, m ~= "receive" and m ~= "receiveany" and m ~= "readrequest" and m ~= "readchunked" and m ~= "readchunk")
    end
  end
  conn:settimeout(5); conn:setdeadline()
end
-- conn methods after close
G.connclosed = function(conn)
  local c2 = conn
  local ms = methods(conn)
  conn:settimeout(5)
  conn:send("closing\n")
  conn:close()
  for _, m in ipairs(ms) do fuzz(c2, c2[m], nil, false) end
end
G.connshut = function(conn)
  local ms = methods(conn)
  conn:shutdown("send")
  for _, m in ipairs(ms) do if m ~= "close" and m ~= "park" and m ~= "httploop" and m ~= "tls" then
    fuzz(conn, conn[m], function() pcall(conn.settimeout, conn, 0.001) end, false) end end
end
G.ending = function(conn, which)
  -- each ending method with bad args (one value each, new conn per run from the client)
  local i = tonumber(which:match("%d+"))
  local m = which:match("^(%a+)")
  conn:settimeout(0.01)
  call(conn[m], conn, BAD[i], BAD[(i * 7) % NB + 1])
  pcall(conn.settimeout, conn, 5)
end
G.sock = function(conn)
  local host, port = MYADDR:match("^(.*):(%d+)$")
  local function mk() local s = fdpool.tcp(); s:settimeout(0.5); return s end
  local s = mk()
  local ms = methods(s)
  -- unconnected
  for _, m in ipairs(ms) do if m ~= "connect" and m ~= "sslhandshake" then fuzz(s, s[m], function() pcall(s.settimeout, s, 0.001) end, false) end end
  -- connect with bad args
  for i = 1, NB do for j = 1, NS do local x = mk(); call(x.connect, x, BAD[i], SMALL[j]); pcall(x.close, x) end end
  for i = 1, NB do local x = mk(); call(x.connect, x, host, tonumber(port), BAD[i]); pcall(x.close, x) end
  for i = 1, NB do local x = mk(); call(x.connect, x, host, BAD[i]); pcall(x.close, x) end
  -- connected to our own listener (another worker answers "?")
  local c = mk()
  assert(c:connect(host, tonumber(port)))
  c:send("idle\n")
  for _, m in ipairs(ms) do
    if m ~= "close" and m ~= "connect" and m ~= "setkeepalive" and m ~= "sslhandshake" then
      fuzz(c, c[m], function() pcall(c.settimeout, c, 0.001) end, false)
    end
  end
  for i = 1, NB do for j = 1, NS do local x = mk(); if x:connect(host, tonumber(port)) then call(x.setkeepalive, x, BAD[i], SMALL[j]) end; pcall(x.close, x) end end
  for i = 1, NB do local x = mk(); if x:connect(host, tonumber(port)) then x:settimeout(0.05); call(x.sslhandshake, x, BAD[i], SMALL[i % NS + 1], BAD[(i*5)%NB+1]) end; pcall(x.close, x) end
  c:close()
  for _, m in ipairs(ms) do fuzz(c, c[m], nil, false) end
end
G.shared = function(conn)
  local d = fdpool.shared.d
  for _, m in ipairs(methods(d)) do
    if m ~= "flush_all" then fuzz(d, d[m], nil, true) end
  end
  fuzz(d, d.flush_all, nil, false)
end
G.threads = function(conn)
  local f = fdpool
  local targets = { "spawn", "wait", "kill", "queue", "semaphore", "sleep" }
  for _, n in ipairs(targets) do
    local fn = f[n]
    if n == "sleep" then
      for i = 1, NB do local v = BAD[i]
        if not (type(v) == "number" and (v > 0.01 or v ~= v)) and not (type(v) == "string" and tonumber(v) and tonumber(v) > 0.01) then call(fn, v) end
      end
    else
      for i = 1, NB do call(fn, BAD[i]); for j = 1, NS do call(fn, BAD[i], SMALL[j]) end end
    end
  end
  for _, n in ipairs { "at", "every" } do
    local fn = f.timer[n]
    for i = 1, NB do for j = 1, NB do
      local ok, t = call(fn, BAD[i], BAD[j])
      if ok and t then pcall(t.cancel, t) end
    end end
  end
  call(f.timer.pending); call(f.timer.max_pending, 1)
  for i = 1, NB do call(f.timer.max_pending, BAD[i]) end
  f.timer.max_pending(1000)
  -- objects
  local th = f.spawn(function() f.sleep(0.001) return 1 end)
  local q = f.queue(); local sm = f.semaphore(0)
  local tm = f.timer.at(10, function() end)
  local objs = { thread = th, queue = q, semaphore = sm, timer = tm }
  for name, o in pairs(objs) do
    for _, m in ipairs(methods(o)) do
      local reset
      if name == "queue" and m == "pop" then reset = function() if q:len() == 0 then q:push(1) end end end
      if name == "semaphore" and m == "wait" then reset = function() if sm:count() <= 0 then sm:post(1) end end end
      fuzz(o, o[m], reset, true)
    end
  end
  -- empty queue / semaphore: bounded timeouts only
  local q2, s2 = f.queue(), f.semaphore()
  for _, v in ipairs { 0, -1, 0/0, -1/0, 1e-9, math.mininteger, "0", "", "\0", {}, evil, yielder, true } do
    call(q2.pop, q2, v); call(s2.wait, s2, v)
  end
  call(q2.pop, q2, -0.0)
  -- after finish/cancel
  f.wait(th)
  tm:cancel()
  q:push(1); sm:post(1)
  for name, o in pairs(objs) do for _, m in ipairs(methods(o)) do
    local reset
    if name == "queue" and m == "pop" then reset = function() if q:len() == 0 then q:push(1) end end end
    if name == "semaphore" and m == "wait" then reset = function() if sm:count() <= 0 then sm:post(1) end end end
    fuzz(o, o[m], reset, false) end end
  -- wait/kill on odd threads
  local t2 = f.spawn(function() error("x") end)
  call(f.wait, t2); call(f.wait, t2); call(f.kill, t2); call(f.wait, t2)
  local t3 = f.spawn(function() f.sleep(10) end)
  call(f.kill, t3); call(f.kill, t3); call(f.wait, t3)
  local t4 = f.spawn(function() f.sleep(10) end); t4:detach(); call(f.wait, t4); call(f.kill, t4)
  -- self wait / kill
  local t5; t5 = f.spawn(function() call(f.wait, t5); call(f.kill, t5); return 1 end); call(f.wait, t5)
  -- worker table
  local w = f.worker
  for i = 1, NB do for j = 1, NB do call(w.set, BAD[i], BAD[j]) end end
  for i = 1, NB do call(w.crowded, BAD[i]); call(w.exiting, BAD[i]) end
  for i = 1, NB do if type(BAD[i]) ~= "function" then call(w.on_stop, BAD[i]) end end
end
G.lmods = function(conn)
  local mods = { http = http, json = require "fdpool.http.json", form = require "fdpool.http.form",
    client = require "fdpool.http.client", router = require "fdpool.http.router", ws = require "fdpool.http.websocket" }
  local skipfn = { serve = true, request = false, close_all = true, static = false }
  for mn, M in pairs(mods) do
    for k, fn in pairs(M) do
      if type(fn) == "function" and not skipfn[k] then
        for i = 1, NB do call(fn, BAD[i]); for j = 1, NS do call(fn, BAD[i], SMALL[j]); call(fn, SMALL[j], BAD[i], BAD[(i*3)%NB+1]) end end
      end
    end
  end
  -- http.client.request with table opts containing bad fields
  local client = mods.client
  local fields = { "url", "method", "headers", "body", "timeout", "max_body", "max_head", "keepalive", "redirects", "verify", "host", "port" }
  for _, fl in ipairs(fields) do
    for i = 1, NB do
      local o = { url = "http://" .. MYADDR .. "/", timeout = 0.2 }
      o[fl] = BAD[i]
      call(client.request, o)
    end
  end
  -- json encode odd values
  local J = mods.json
  local cyc = {}; cyc.a = cyc
  for _, v in ipairs { cyc, { [1.5] = 1 }, { [0/0 ~= 0/0 and 1 or 2] = 0/0 }, { 1/0 }, setmetatable({}, getmetatable(evil)), { a = print }, ("\xff"):rep(10) } do call(J.encode, v) end
  local deep = {}; local cur = deep; for i = 1, 100000 do cur[1] = {}; cur = cur[1] end
  call(J.encode, deep)
  call(J.decode, ("["):rep(200000)); call(J.decode, ("{\"a\":"):rep(100000))
  -- sim (Lua)
  local sim = require "fdpool.sim"
  for i = 1, NB do call(sim.run, BAD[i]) end
  for _, fl in ipairs { "policy", "workers", "conns", "steps", "seed", "capacity" } do
    for i = 1, NB do local o = { policy = "least_conn", workers = 2 }; o[fl] = BAD[i]; call(sim.run, o) end
  end
end
G.simulator = function(conn)
  local f = fdpool
  for i = 1, NB do for j = 1, NS do call(f.simulator, BAD[i], SMALL[j], 2); call(f.simulator, "least_conn", 2, 2, BAD[i], SMALL[j]) end end
  local ok, s = pcall(f.simulator, "least_conn", 3, 2)
  if ok and s then
    for _, m in ipairs(methods(s)) do if m ~= "close" then fuzz(s, s[m], nil, true) end end
    s:close()
    for _, m in ipairs(methods(s)) do fuzz(s, s[m], nil, false) end
  else note(conn, "nosim " .. tostring(s)) end
end
G.idle = function(conn) conn:settimeout(3); conn:receive("a") end

return function(conn)
  conn:settimeout(10)
  local line = conn:receive("l")
  if not line then return end
  local group, addr, rest = line:match("^(%S+) (%S+) ?(.*)$")
  if not group then group = line end
  MYADDR = addr
  if group == "idle" then return G.idle(conn) end
  local fn = G[group]
  if not fn then conn:send("nogroup\n") return end
  C.count, C.errs = 0, 0
  local t0 = fdpool.now()
  local ok, e = pcall(fn, conn, rest ~= "" and rest or nil)
  pcall(conn.settimeout, conn, 5)
  io.stderr:write(("RESULT done %s %s calls=%d errs=%d t=%.2f %s\n"):format(group, tostring(ok), C.count, C.errs, fdpool.now() - t0, ok and "" or tostring(e)))
  pcall(conn.send, conn, ("done %s %s calls=%d errs=%d t=%.2f %s\n"):format(group, tostring(ok), C.count, C.errs, fdpool.now() - t0, ok and "" or tostring(e)))
end
