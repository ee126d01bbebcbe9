-- tests/68-http-lazy-req_spec.lua: a request read by conn:httploop (the
-- real pool) gets req.headers, req.path and req.query (and method,
-- version, target, conn) only when the handler first reads them (built
-- from the kept head by Req's __index, src/lhttp.c req_index). What a handler sees must be what the eager
-- parse gives: the same handler runs in the real pool and on
-- fdpool.testing's in-memory conn (http.serve's Lua loop, which parses
-- every field at once) for the same bytes, and both answers must be
-- equal -- lower-case names, lookups in any case, repeated headers
-- joined, pairs(), a handler's changes and assignments, a req kept after
-- its response and read later. Then a handler's return values: the C
-- loop calls fn itself and http.lua's reply only when fn returned
-- something (after a wait in fn, and with a reply that waits itself).
local testing = require "fdpool.testing"
local H = require "helpers"

local APP = [=[
local http = require "fdpool.http"

local function ser(v)
  if type(v) ~= "table" then return ("%q"):format(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local t = {}
  for _, k in ipairs(keys) do t[#t + 1] = k .. "=" .. ser(v[k]) end
  return "{" .. table.concat(t, ",") .. "}"
end

local function dump(req)
  local h = req.headers
  return table.concat({
    "method=" .. req.method, "target=" .. req.target, "path=" .. req.path,
    "query=" .. req.query, "version=" .. req.version,
    "headers=" .. ser(h),
    "HOST=" .. tostring(h.HOST), "Host=" .. tostring(h["Host"]),
    "x-a=" .. tostring(h["X-A"]), "absent=" .. tostring(h["x-none"]),
    "same=" .. tostring(rawget(req, "headers") == h and req.headers == h),
    "cased=" .. tostring(getmetatable(h) ~= nil),
    "length0=" .. tostring(req._length), "none=" .. tostring(req.nothing),
    "n=" .. tostring(req[1]), "body=" .. tostring(type(req.body)),
  }, "\n") .. "\n"
end

local kept
return http.serve(function(req, res)
  local p = req.target:match("^[^?]*")
  if p == "/modify" then
    req.headers["x-new"] = "v"
    req.headers.host = nil
    req.query = "changed"
  elseif p == "/assign" then
    -- assigned before any read: the handler's values stay
    req.path = "/assigned"
    req.headers = { mine = "1" }
    setmetatable(req.headers, getmetatable(setmetatable({}, {})))
  elseif p == "/keep" then
    kept = req
    return 200, {}, "kept\n"
  elseif p == "/kept" then
    return 200, {}, dump(kept)
  elseif p == "/raw" then
    -- what req holds before any read (not the API: the laziness itself)
    return 200, {}, "raw=" .. type(rawget(req, "headers")) .. ","
      .. type(rawget(req, "path")) .. "," .. type(rawget(req, "query")) .. "\n"
  elseif p == "/ret" then
    -- (one name: a table's order is the hash's, not the same in two processes)
    return 201, { ["X-List"] = { "a", "b" } }, "made\n"
  elseif p == "/ret-num" then
    return "404", nil, 42
  elseif p == "/ret-sent" then
    res:status(202):send("sent\n")
    return 404, {}, "ignored\n"
  elseif p == "/ret-bad" then
    return "abc"
  elseif p == "/ret-table" then
    return 200, {}, {}
  elseif p == "/ret-bad-header" then
    return 200, { ["X-Bad"] = "a\r\nb" }, "x"
  elseif p == "/conn-close" then
    res:header("connection", "Close"):header("X-A", "1"):send("bye\n")
    return
  elseif p == "/own-date" then
    res:header("DATE", "Thu, 01 Jan 1970 00:00:00 GMT"):send("dated\n")
    return
  elseif p == "/big-headers" then
    for i = 1, 200 do res:header("X-H" .. i, ("v"):rep(20)) end
    res:header("Connection", "close")
    res:send("many\n")
    return
  elseif p == "/big-bad" then
    for i = 1, 200 do res:header("X-H" .. i, ("v"):rep(20)) end
    res:header("Connection", "close"):header("X-Bad", "a\nb")
    res:send("never\n")
    return
  elseif p == "/ret-sleep" then
    require("fdpool").sleep(0.01)
    return 203, {}, "slept\n"
  elseif p == "/ret-big" then
    return 200, {}, ("0123456789abcdef"):rep(1 << 18)      -- 4 MiB
  elseif p == "/mv-raw" then
    -- version: made on first read too, then a field of req (method is
    -- set at once)
    local before = tostring(rawget(req, "method")) .. "," .. tostring(rawget(req, "version"))
    local m, v = req.method, req.version
    return 200, {}, "before=" .. before .. " read=" .. m .. "," .. v .. " after="
      .. tostring(rawget(req, "method")) .. "," .. tostring(rawget(req, "version")) .. "\n"
  elseif p == "/conn-lazy" then
    -- req.conn too: from the kept head's user value on a real conn
    local before = type(rawget(req, "conn"))
    return 200, {}, "before=" .. before .. " same=" .. tostring(req.conn == res._conn)
      .. " after=" .. tostring(rawget(req, "conn") == res._conn) .. "\n"
  elseif p == "/conn-set" then
    req.conn = "mine"
    return 200, {}, "conn=" .. tostring(req.conn) .. "\n"
  elseif p == "/mv-pairs" then
    -- pairs(req) lists method, version and conn as the eager parse's
    local seen = {}
    for k, v in pairs(req) do
      if k == "method" or k == "version" or k == "conn" then
        seen[#seen + 1] = k == "conn" and k or k .. "=" .. v
      end
    end
    table.sort(seen)
    return 200, {}, "pairs=" .. table.concat(seen, ",") .. " method=" .. req.method .. "\n"
  elseif p == "/mv-set" then
    -- assigned before any read: the handler's values stay, and res:send
    -- answers by them (a HEAD's head only, a 1.0's keep-alive)
    req.method = "HEAD"
    req.version = "1.0"
    res:send(req.method .. " " .. req.version .. "\n")
    return
  elseif p == "/mv-nil" then
    -- assigned nil after a read
    local _ = req.method .. req.version
    req.method, req.version = nil, nil
    local t = {}
    for k in pairs(req) do t[#t + 1] = k end
    table.sort(t)
    return 200, {}, "keys=" .. table.concat(t, ",") .. " again=" .. req.method .. "\n"
  elseif p == "/post" then
    local body = req:body()
    return 200, {}, dump(req) .. "got=" .. body .. "\n"
  end
  res:send(dump(req))
end)
]=]

describe("req.headers, path and query built on first use", function()
  local dir, app, pool

  setup(function()
    dir = H.tmpdir()
    local path = H.writefile(dir .. "/app.lua", APP)
    app = dofile(path)
    pool = assert(testing.start{ script = path, workers = 1, pool = H.POOL })
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  -- Both answers to bytes, Date lines removed.
  local function both(bytes)
    local mem = testing.run(app, { input = bytes }):gsub("Date: [^\r\n]*\r\n", "")
    local real = assert(pool:request(bytes)):gsub("Date: [^\r\n]*\r\n", "")
    return mem, real
  end

  local cases = {
    plain = "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.org\r\nX-A: one\r\n\r\n",
    repeated = "GET /r HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nAccept: a\r\nx-a: 2\r\nX-a:  3 \r\n\r\n",
    http10 = "GET /ten?q HTTP/1.0\r\nX-A: z\r\n\r\n",
    noquery = "GET /plain HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    emptyquery = "GET /e? HTTP/1.1\r\nHost: h\r\n\r\n",
    absolute = "GET http://h/abs?k=v HTTP/1.1\r\nHost: h\r\n\r\n",
    -- the target's authority is the host, not the Host field (RFC 9112
    -- 3.2.2: a server MUST ignore it)
    abshost = "GET http://a.example:8080/abs HTTP/1.1\r\nHost: other\r\n\r\n",
    abshostdup = "GET HTTP://a.example?q HTTP/1.1\r\nHost: other\r\nConnection: x\r\nConnection: y\r\n\r\n",
    modify = "GET /modify?q HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n",
    assign = "GET /assign?q HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n",
    post = "POST /post?p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
    chunked = "POST /post HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "3\r\nabc\r\n0\r\n\r\n",
    -- odd but valid bytes: empty values, trailing whitespace, any tchar
    -- in a name, "?" alone, "#", percent-encoding, two "?"
    emptyval = "GET /ev HTTP/1.1\r\nHost: h\r\nX-A:\r\nX-B: \t \r\nX-C:  trail \t\r\n\r\n",
    oddnames = "GET /on HTTP/1.1\r\nHost: h\r\nX!#$%&'*+-.^_`|~A: odd\r\nX-A: 1\r\nx-A: \r\n\r\n",
    marks = "GET /p#f?a%20b?c=%26# HTTP/1.1\r\nHost: h\r\n\r\n",
    qonly = "GET /? HTTP/1.1\r\nHost: h\r\n\r\n",
    -- a framing header twice (the headers table made at once instead)
    dupconn = "GET /dc HTTP/1.1\r\nHost: h\r\nConnection: x\r\nConnection: y\r\nX-A: 1\r\n\r\n",
    -- a head past req_index's 2 KiB stack copy, 100 fields
    many = (function()
      local t = { "GET /many HTTP/1.1\r\nHost: h\r\n" }
      for i = 1, 99 do t[#t + 1] = ("X-%d: %s\r\n"):format(i % 7, ("v"):rep(i)) end
      return table.concat(t) .. "\r\n"
    end)(),
    -- a req kept by the handler, read only after two later requests on
    -- the same connection (their heads reuse the read buffer)
    kept = "GET /keep?old HTTP/1.1\r\nHost: old\r\nX-A: kept\r\nX-Only: here\r\n\r\n"
      .. "GET /other?new HTTP/1.1\r\nHost: new\r\nX-A: new\r\n\r\n"
      .. "GET /kept HTTP/1.1\r\nHost: new2\r\nConnection: close\r\n\r\n",
  }

  for name, bytes in pairs(cases) do
    it("gives what the eager parse gives: " .. name, function()
      local mem, real = both(bytes)
      assert.equal(mem, real)
      assert.matches("HTTP/1.%d 200 OK", real)
      if name:match("^abshost") then
        assert.matches("a%.example", real)
        assert.not_matches("other", real)
      end
    end)
  end

  it("really waits for the first read on a real conn (eager on testing's)", function()
    local mem, real = both("GET /raw?q HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.matches("raw=nil,nil,nil\n", real)
    assert.matches("raw=table,string,string\n", mem)
  end)

  it("makes version on first read, for pairs too (method at once)", function()
    local mem, real = both("GET /mv-raw HTTP/1.0\r\n\r\n")
    assert.matches("\r\n\r\nbefore=GET,nil read=GET,1.0 after=GET,1.0\n$", real)
    assert.matches("before=GET,1.0 read=GET,1.0 after=GET,1.0\n", mem)
    real = select(2, both("DELETE /mv-raw HTTP/1.1\r\nHost: h\r\n\r\n"
      .. "OPTIONS /mv-raw HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
    assert.matches("\r\n\r\nbefore=DELETE,nil read=DELETE,1.1 after=DELETE,1.1\n"
      .. "HTTP/1.1 200 OK\r\n.-\r\n\r\nbefore=OPTIONS,nil read=OPTIONS,1.1 after=OPTIONS,1.1\n$", real)
    for _, bytes in ipairs({
      "POST /mv-pairs HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
      "GET /mv-pairs HTTP/1.0\r\n\r\n",
      "GET /mv-set HTTP/1.1\r\nHost: h\r\n\r\nGET /mv-pairs HTTP/1.1\r\nHost: h\r\n\r\n",
    }) do
      mem, real = both(bytes)
      assert.equal(mem, real)
    end
    assert.matches("pairs=conn,method=POST,version=1.1 method=POST\n$",
      select(2, both("POST /mv-pairs HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")))
    -- the handler's HEAD and 1.0: no body, keep-alive, and the next
    -- request still served
    real = select(2, both("GET /mv-set HTTP/1.1\r\nHost: h\r\n\r\nGET /mv-pairs HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert.matches("^HTTP/1.1 200 OK\r\n.-Content%-Length: 9\r\n.-Connection: keep%-alive\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\n.-pairs=conn,method=GET,version=1.1 ", real)
    mem, real = both("GET /mv-nil HTTP/1.1\r\nHost: h\r\n\r\n")
    -- (as target, path, query and headers: a field assigned nil is made
    -- again from the head, by pairs too)
    assert.matches("keys=_head,conn,method,target,version again=GET\n$", real)
  end)

  it("makes req.conn on first read (the conn), keeps an assigned one", function()
    local mem, real = both("GET /conn-lazy HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.matches("\r\n\r\nbefore=nil same=true after=true\n$", real)
    assert.matches("\r\n\r\nbefore=%a+ same=true after=true\n$", mem)
    mem, real = both("GET /conn-set HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.equal(mem, real)
    assert.matches("\r\n\r\nconn=mine\n$", real)
  end)

  it("holds the documented values", function()
    local _, real = both(cases.repeated)
    assert.matches('headers={accept="a",host="h",x%-a="1, 2, 3"}', real)
    assert.matches("HOST=h\nHost=h\nx%-a=1, 2, 3\nabsent=nil\nsame=true\ncased=true", real)
    assert.matches("length0=0\nnone=nil\nn=nil\nbody=function", real)
    _, real = both(cases.plain)
    assert.matches("path=/a/b\nquery=x=1&y=%%20\nversion=1.1\n", real)
    _, real = both(cases.modify)
    assert.matches('query=changed\n.*headers={x%-a="1",x%-new="v"}\nHOST=nil', real)
    _, real = both(cases.assign)
    assert.matches('path=/assigned\n.*headers={mine="1"}\nHOST=nil', real)
    _, real = both(cases.kept)
    assert.matches("path=/keep\nquery=old\n.*headers={host=\"old\",x%-a=\"kept\",x%-only=\"here\"}", real)
    _, real = both(cases.post)
    assert.matches('content%-length="5".*got=hello', real)
  end)

  local rets = {
    "GET /ret HTTP/1.1\r\nHost: h\r\n\r\nGET /ret-num HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /ret-sent HTTP/1.1\r\nHost: h\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    "HEAD /ret HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /ret HTTP/1.0\r\n\r\n",
    "GET /ret-bad HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /ret-table HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /ret-bad-header HTTP/1.1\r\nHost: h\r\n\r\n",
    -- res:send's own Connection and Date handling (on the real conn it
    -- notes them while building the head), a head past 2 KiB
    "GET /conn-close HTTP/1.1\r\nHost: h\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /own-date HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    "POST /conn-close HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    "GET /big-headers HTTP/1.1\r\nHost: h\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /big-bad HTTP/1.1\r\nHost: h\r\n\r\n",
  }

  it("sends what the handler returns as the Lua loop does", function()
    -- the lines of the answers, sorted: a headers table's order is its
    -- hash's, not the same in two processes
    local function lines(out)
      local t = {}
      for l in out:gmatch("[^\n]*") do t[#t + 1] = l end
      table.sort(t)
      return table.concat(t, "\n")
    end
    for _, bytes in ipairs(rets) do
      local mem, real = both(bytes)
      assert.equal(lines(mem), lines(real), bytes)
    end
    local _, real = both(rets[1])
    assert.matches("^HTTP/1.1 201 Created\r\n.*X%-List: a\r\nX%-List: b\r\n.*\r\n\r\nmade\n"
      .. "HTTP/1.1 404 Not Found\r\n.*Content%-Length: 2\r\n.*\r\n42$", real)
    _, real = both(rets[2])
    assert.matches("^HTTP/1.1 202 Accepted\r\n.*\r\n\r\nsent\nHTTP/1.1 200 OK", real)
    for i = 5, 7 do
      _, real = both(rets[i])
      assert.matches("^HTTP/1.1 500 ", real)
    end
    _, real = both(rets[8])      -- closed after bye: no second answer
    assert.matches("^HTTP/1.1 200 OK\r\n.*Connection: close\r\n\r\nbye\n$", real)
    _, real = both(rets[9])
    assert.matches("^HTTP/1.1 200 OK\r\n.*Connection: keep%-alive\r\n\r\ndated\nHTTP/1.1 200 OK", real)
    _, real = both(rets[11])
    assert.matches("^HTTP/1.1 200 OK\r\n.*Connection: close\r\n\r\nmany\n$", real)
    assert.truthy(#real > 2048)
    _, real = both(rets[12])
    assert.matches("^HTTP/1.1 500 ", real)
  end)

  it("replies after a wait in the handler, and when the reply must wait", function()
    local real = assert(pool:request("GET /ret-sleep HTTP/1.1\r\nHost: h\r\n\r\n"
      .. "GET /ret-big HTTP/1.1\r\nHost: h\r\n\r\nGET /ret HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert.matches("^HTTP/1.1 203 [^\r]*\r\n.-\r\n\r\nslept\n", real)
    local big = real:match("HTTP/1.1 200 OK\r\n.-Content%-Length: (%d+)\r\n")
    assert.equal(tostring(16 << 18), big)
    assert.truthy(real:find(("0123456789abcdef"):rep(1 << 18) .. "HTTP/1.1 201 Created", 1, true))
    assert.matches("\r\n\r\nmade\n$", real)
  end)
end)
