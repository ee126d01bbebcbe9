-- tests/62-http-helpers_spec.lua: fdpool.http's helpers for applications,
-- on tests/fixtures/hh_app.lua (a router): req:args (lists, decoding, 10k
-- keys), cookies both ways (no header injection, a 10 KiB Cookie), JSON
-- on lua-cjson with exact numbers (10000 an integer, 2^53 + 1, 0.1),
-- streamed bodies (Content-Length and chunked, past max_body), forms
-- (urlencoded; multipart with files, limits, no final boundary), the
-- router (params, 404, 405 with Allow), http.static (301, index list,
-- on_missing) and handler return values. In memory with fdpool.testing,
-- then in the real build/pool with curl.
package.path = "./tests/?.lua;" .. package.path
local testing = require "fdpool.testing"
local http = require "fdpool.http"
local json = require "fdpool.http.json"
local H = require "helpers"

local APP = "tests/fixtures/hh_app.lua"
local app = dofile(APP)

local function req(method, path, opts)
  local status, headers, body, conn = testing.http_request(app, method, path, opts)
  assert.truthy(status, headers)
  return status, headers, body, conn
end

local function jreq(method, path, opts)
  local status, headers, body = req(method, path, opts)
  if headers["content-type"] == "application/json" then
    return status, assert(json.decode(body)), headers
  end
  return status, body, headers
end

local function jreq2(method, path, opts)
  local status, v = jreq(method, path, opts)
  return status, v
end

describe("req:args", function()
  it("decodes the query, repeated keys as lists", function()
    local status, v = jreq("GET", "/args?a=1&b=%20x+y&a=3&c&a=%E2%82%AC&d=")
    assert.equal(200, status)
    assert.same({ a = { "1", "3", "€" }, b = " x y", c = "", d = "" }, v)
  end)

  it("stops at 1000 keys of 10k and says truncated", function()
    local q = {}
    for i = 1, 10000 do q[i] = "k" .. i .. "=" .. i end
    local status, v = jreq("GET", "/args?" .. table.concat(q, "&"))
    assert.equal(200, status)
    assert.same({ keys = 1000, truncated = "truncated" }, v)
  end)

  it("has public decode and encode helpers", function()
    assert.equal("a b/c€", http.urldecode("a+b%2Fc%E2%82%AC"))
    assert.equal("a+b", http.urldecode("a+b", false))
    assert.equal("a%20b%2F%E2%82%AC~", http.urlencode("a b/€~"))
    assert.equal("x&y=z", http.urldecode(http.urlencode("x&y=z")))
  end)
end)

describe("cookies", function()
  it("reads the Cookie header and writes Set-Cookie lines", function()
    local status, headers, body, conn = req("GET", "/cookies",
      { headers = { Cookie = 'a=1; b="quoted"; a=2;c = 3' } })
    assert.equal(200, status)
    assert.same({ a = "1", b = "quoted", c = "3" }, json.decode(body))
    local out = conn:output()
    assert.truthy(out:find("\r\nSet-Cookie: seen=1; Path=/; Max-Age=60; HttpOnly; SameSite=Lax\r\n", 1, true), out)
    assert.truthy(out:find("\r\nSet-Cookie: theme=dark; Secure\r\n", 1, true), out)
    local _ = headers
  end)

  it("refuses values that would inject a header or an attribute", function()
    for _, v in ipairs { "x%0D%0ASet-Cookie:%20evil=1", "x;%20Domain=evil", "a%0Ab", "a,b", "%22q%22" } do
      local status, _, _, conn = req("GET", "/badcookie?v=" .. v)
      assert.equal(500, status)
      assert.falsy(conn:output():find("evil", 1, true))
      assert.falsy(conn:output():find("Set-Cookie", 1, true))
    end
    assert.has_error(function()
      require("fdpool.http.form").set_cookie("a", "b", { path = "/;x" }, http.date)
    end, "res:cookie: path must not hold ';' or control bytes")
  end)

  it("refuses a value that is not a string or a number (a nil is never sent as \"nil\")", function()
    local form = require "fdpool.http.form"
    for _, v in ipairs { "nil", "true", "table" } do
      local value = v == "true" or (v == "table" and {}) or nil
      assert.has_error(function() form.set_cookie("sid", value, nil, http.date) end,
        "res:cookie: the value must be a string or a number, got " .. (v == "true" and "boolean" or v))
    end
    assert.equal("n=42", form.set_cookie("n", 42, nil, http.date))
    local h = http.serve(function(_, res)
      res:cookie("sid", nil)
      return res:send("x")
    end)
    local status, _, _, conn = testing.http_request(h, "GET", "/")
    assert.equal(500, status)
    assert.falsy(conn:output():find("sid=nil", 1, true))
  end)

  it("is refused by testing.conn as by the real conn when a raw header carries CR LF", function()
    local h = http.serve(function(_, res)
      res:header("X-A", "a\r\nSet-Cookie: evil=1")
      return res:send("x")
    end)
    local status, _, _, conn = testing.http_request(h, "GET", "/")
    assert.equal(500, status)
    assert.falsy(conn:output():find("evil", 1, true))
  end)

  it("parses a 10 KiB Cookie header (the default max_head, 32 KiB), at most 200 cookies", function()
    local parts = {}
    for i = 1, 1000 do parts[i] = ("c%d=%05d"):format(i, i) end
    local cookie = table.concat(parts, "; ")
    assert.is_true(#cookie > 10240)
    -- Over a max_head of 8192: 431.
    local small = http.serve(function() return 200 end, { max_head = 8192 })
    assert.equal(431, (testing.http_request(small, "GET", "/", { headers = { Cookie = cookie } })))
    local handler = http.serve(function(rq) local n = 0
      for _ in pairs(rq:cookies()) do n = n + 1 end
      return 200, {}, tostring(n)
    end)
    local status, _, body = testing.http_request(handler, "GET", "/", { headers = { Cookie = cookie } })
    assert.same({ 200, "200" }, { status, body })
  end)
end)

describe("JSON", function()
  it("decodes integers as integers, exactly, and floats exactly", function()
    local status, v = jreq("POST", "/json",
      { body = '[10000, 9007199254740993, 0.1, -7, 1e3, 12345678901234567890, "10"]' })
    assert.equal(200, status)
    assert.same({ "integer", "integer", "float", "integer", "float", "float", "string" }, v.types)
    assert.equal(10000, v.value[1])
    assert.equal(9007199254740993, v.value[2])
    assert.equal(0.1, v.value[3])
  end)

  it("encodes integers as integers and floats so they read back the same", function()
    local _, _, body = req("GET", "/numbers")
    assert.equal("[10000,9007199254740993,0.1,0.3333333333333333,-0,9223372036854775807]", body)
    local v = json.decode(body)
    assert.equal(1 / 3, v[4])
    assert.equal("integer", math.type(v[2]))
  end)

  it("answers bad JSON with the reason, not an error", function()
    local status, v = jreq("POST", "/json", { body = "[1, 2" })
    assert.equal(400, status)
    assert.matches("^invalid JSON: ", v.error)
    status, v = jreq("POST", "/json", { body = "[01]" })
    assert.equal(400, status)
    assert.matches("bad number", v.error)
    assert.same({ nil, "not UTF-8" }, { json.decode('"\xff"') })
  end)

  it("keeps marker-like and escaped strings as strings", function()
    local v = json.decode('["\\u00ff1", "a\\"1", {"k\\\\": 2}]')
    assert.same({ "\xc3\xbf1", 'a"1', { ["k\\"] = 2 } }, v)
    assert.equal("integer", math.type(v[3]["k\\"]))
    assert.equal('["ÿ1"]', json.encode({ "ÿ1" }))
  end)

  it("writes numbers lua-cjson writes exactly through it, the others exactly too", function()
    assert.equal('[1,2.5,"x",99999999999999]', json.encode({ 1, 2.5, "x", 99999999999999 }))
    assert.equal('[100000000000000,-100000000000000,0.1]',
      json.encode({ 100000000000000, -100000000000000, 0.1 }))
    assert.equal("integer", math.type(json.decode("[100000000000000]")[1]))
    assert.same({ nil, "bad number (a leading zero) at character 5" }, { json.decode('[1, 01]') })
    assert.same({ nil, "unterminated string at character 2" }, { json.decode('["a\\"]') })
  end)

  it("refuses what JSON cannot hold", function()
    local v, err = json.encode({ 0 / 0 })
    assert.is_nil(v)
    assert.matches("^cannot encode %-?nan$", err)
    assert.same({ nil, "cannot encode inf" }, { json.encode(math.huge) })
    assert.same({ nil, "cannot encode a string that is not UTF-8" }, { json.encode("\xff") })
    assert.matches("cannot serialise function", select(2, json.encode({ print })))
  end)
end)

describe("streamed bodies", function()
  local big = ("0123456789abcdef"):rep(200000)   -- 3.2 MB, past max_body 64 KiB

  it("reads a Content-Length body past max_body in pieces", function()
    local status, v = jreq("POST", "/stream", { body = big })
    assert.equal(200, status)
    assert.equal(#big, v.bytes)
    assert.is_true(v.pieces >= #big // 65536)
  end)

  it("reads a chunked body in pieces", function()
    local chunks = {}
    for i = 1, 50 do chunks[i] = ("%x\r\n%s\r\n"):format(1000 + i, ("z"):rep(1000 + i)) end
    local body = table.concat(chunks) .. "0\r\nTrailer-A: x\r\n\r\n"
    local status, v = jreq("POST", "/stream", { body = body,
      headers = { ["Transfer-Encoding"] = "chunked" } })
    assert.equal(200, status)
    assert.equal(50 * 1000 + 50 * 51 // 2, v.bytes)
  end)

  it("refuses past max_upload and keeps req:body() to max_body", function()
    local status = req("POST", "/stream", { body = "x", headers = { ["Content-Length"] = tostring(9 * 1024 * 1024) } })
    assert.equal(413, status)
    local s2, v = jreq("POST", "/body", { body = ("x"):rep(70000) })
    assert.same({ 413, "too large" }, { s2, v.error })
  end)

  it("answers 400 to a bad chunked body", function()
    local status, v = jreq("POST", "/stream", { body = "zz\r\nabc\r\n0\r\n\r\n",
      headers = { ["Transfer-Encoding"] = "chunked" } })
    assert.same({ 400, "bad chunk size" }, { status, v.error })
  end)
end)

local function multipart(parts, boundary)
  boundary = boundary or "XyZ123"
  local t = {}
  for _, p in ipairs(parts) do
    local disp = ('form-data; name="%s"'):format(p.name)
    if p.filename then disp = disp .. ('; filename="%s"'):format(p.filename) end
    t[#t + 1] = "--" .. boundary .. "\r\nContent-Disposition: " .. disp .. "\r\n"
      .. (p.type and "Content-Type: " .. p.type .. "\r\n" or "") .. "\r\n" .. p.data .. "\r\n"
  end
  return table.concat(t) .. "--" .. boundary .. "--\r\n", "multipart/form-data; boundary=" .. boundary
end

describe("req:form", function()
  it("reads urlencoded forms", function()
    local status, v = jreq("POST", "/form", { body = "a=1&b=x+y&a=2",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
    assert.equal(200, status)
    assert.same({ a = { "1", "2" }, b = "x y" }, v)
  end)

  it("streams multipart fields and files (to temp files removed after the handler)", function()
    local file = ("\0\1binary\r\n--XyZ12"):rep(30000)
    local body, ct = multipart {
      { name = "title", data = "hello\r\nworld" },
      { name = "up", filename = "a.bin", type = "application/octet-stream", data = file },
      { name = "tag", data = "x" }, { name = "tag", data = "y" },
    }
    local status, v = jreq("POST", "/form", { body = body, headers = { ["Content-Type"] = ct }, chunks = 1000 })
    assert.equal(200, status)
    assert.equal("hello\r\nworld", v.title)
    assert.same({ "x", "y" }, v.tag)
    assert.same({ "a.bin", #file, "application/octet-stream", "000162696e617279" },
      { v.up.filename, v.up.size, v.up.content_type, v.up.head })
    assert.is_nil(io.open(v.up.path, "rb"))   -- removed when the handler returned
  end)

  it("limits parts, fields and files", function()
    local parts = {}
    for i = 1, 101 do parts[i] = { name = "p" .. i, data = "v" } end
    local body, ct = multipart(parts)
    local status, v = jreq("POST", "/form", { body = body, headers = { ["Content-Type"] = ct } })
    assert.same({ 413, "too many parts" }, { status, v.error })
    body, ct = multipart { { name = "f", data = ("x"):rep(70000) } }
    status, v = jreq("POST", "/form", { body = body, headers = { ["Content-Type"] = ct } })
    assert.same({ 413, "field too large" }, { status, v.error })
    body, ct = multipart { { name = "f", filename = "f", data = ("x"):rep(5000) } }
    status, v = jreq("POST", "/form?max_file=4096", { body = body, headers = { ["Content-Type"] = ct } })
    assert.same({ 413, "file too large" }, { status, v.error })
  end)

  -- Regression test (was a bug, now fixed): a temp file write that failed
  -- (a full disk) was ignored: the handler got the file with its whole
  -- size while the file held less.
  it("fails the form with 500 when a file cannot be stored (a full disk), never a short file", function()
    local real_open, made = io.open, {}
    -- Temp files take 1000 bytes, then say ENOSPC, as a full disk does
    -- (at a write, or at the close that flushes the buffer).
    io.open = function(path, mode)
      local f, err = real_open(path, mode)
      if not f or mode ~= "wb" then return f, err end
      made[#made + 1] = path
      local n = 0
      return setmetatable({}, { __index = {
        write = function(_, s)
          n = n + #s
          if n > 1000 then return nil, "No space left on device", 28 end
          return f:write(s)
        end,
        close = function()
          f:close()
          if n > 1000 then return nil, "No space left on device", 28 end
          return true
        end } })
    end
    local ok, status, v = pcall(function()
      local body, ct = multipart { { name = "f", filename = "f.bin", data = ("x"):rep(5000) } }
      return jreq("POST", "/form", { body = body, headers = { ["Content-Type"] = ct }, chunks = 700 })
    end)
    io.open = real_open
    assert(ok, status)
    assert.same({ 500, "cannot store the upload: No space left on device" }, { status, v.error })
    assert.equal(1, #made)
    assert.is_nil(real_open(made[1], "rb"))   -- removed when the handler returned
  end)

  it("answers 400 to a multipart body without its final boundary", function()
    local body, ct = multipart { { name = "a", data = "1" }, { name = "f", filename = "f", data = "abc" } }
    body = body:sub(1, -(#"--XyZ123--\r\n" + 3))
    local status, v = jreq("POST", "/form", { body = body, headers = { ["Content-Type"] = ct } })
    assert.same({ 400, "no final boundary" }, { status, v.error })
    status, v = jreq("POST", "/form", { body = "no boundary at all",
      headers = { ["Content-Type"] = ct } })
    assert.same({ 400, "no final boundary" }, { status, v.error })
  end)

  it("survives every truncation and a random byte anywhere of a multipart body", function()
    local body, ct = multipart { { name = "a", data = "1" },
      { name = "f", filename = "f.txt", data = "file\r\n--XyZ1" }, { name = "b", data = "" } }
    math.randomseed(62)
    for n = 0, #body do
      local cut = body:sub(1, n)
      if math.random() < 0.5 and n > 0 then
        local i = math.random(1, n)
        cut = cut:sub(1, i - 1) .. string.char(math.random(0, 255)) .. cut:sub(i + 1)
      end
      local status, v = jreq2("POST", "/form", { body = cut, headers = { ["Content-Type"] = ct } })
      assert.truthy(status == 200 or status == 400 or status == 413, tostring(status))
      if status ~= 200 then assert.is_string(v.error) end
    end
  end)

  it("refuses what is not a form", function()
    local status, v = jreq("POST", "/form", { body = "{}", headers = { ["Content-Type"] = "application/json" } })
    assert.same({ 415, "not a form (Content-Type application/json)" }, { status, v.error })
    status, v = jreq("POST", "/form", { body = "x", headers = { ["Content-Type"] = "multipart/form-data" } })
    assert.same({ 400, "multipart without a valid boundary" }, { status, v.error })
  end)
end)

describe("http.router", function()
  it("routes by method and path, with decoded params", function()
    assert.same({ 200, { id = "a b", also = "a b" } }, { jreq2("GET", "/items/a%20b") })
    assert.same({ 201, { posted = "7" } }, { jreq2("POST", "/items/7") })
    assert.same({ 200, { rest = "x/y/z.txt" } }, { jreq2("GET", "/files/x/y/z.txt") })
    assert.same({ 200, { method = "DELETE" } }, { jreq2("DELETE", "/anything") })
  end)

  it("answers HEAD with a GET route's headers", function()
    local status, headers, body = req("HEAD", "/items/1")
    assert.same({ 200, "application/json", "" }, { status, headers["content-type"], body })
  end)

  it("answers 405 with Allow, and 404 through not_found", function()
    local status, _, headers = jreq("DELETE", "/items/1")
    assert.equal(405, status)
    assert.equal("GET, HEAD, POST", headers["allow"])
    assert.same({ 404, { error = "no route" } }, { jreq2("GET", "/items/1/more") })
    assert.same({ 404, { error = "no route" } }, { jreq2("GET", "/items/") })
  end)

  it("makes a plain 404 without not_found", function()
    local r = http.router()
    r:get("/", function() return 200, {}, "root" end)
    local h = http.serve(r)
    local status, _, body = testing.http_request(h, "GET", "/x")
    assert.same({ 404, "not found\n" }, { status, body })
  end)
end)

describe("handler return values", function()
  it("get RFC 9110's reason phrase in the status line (a proxy's 502, 504, 429)", function()
    -- They said "Unknown" for every code outside a short list.
    for code, reason in pairs { [502] = "Bad Gateway", [504] = "Gateway Timeout",
        [429] = "Too Many Requests", [409] = "Conflict", [422] = "Unprocessable Content" } do
      local h = http.serve(function() return code, {}, "x" end)
      local status, _, _, conn = testing.http_request(h, "GET", "/")
      assert.equal(code, status)
      assert.matches("^HTTP/1%.1 " .. code .. " " .. reason .. "\r\n", conn:output())
    end
  end)

  it("accepts a numeric string status", function()
    local status, headers, body = req("GET", "/status-string")
    assert.same({ 404, "b", "nope\n" }, { status, headers["x-a"], body })
  end)

  it("refuses a table body with a clear message (500)", function()
    local logged
    local fdpool = require "fdpool"
    local log = fdpool.log
    fdpool.log = function(_, msg) logged = msg end
    local status = req("GET", "/table-body")
    fdpool.log = log
    assert.equal(500, status)
    assert.matches("handler returned a table as the body: a body is a string", logged, 1, true)
  end)

  it("refuses a string where the headers go (return 200, text) with a clear message (500), not an empty 200", function()
    local logged
    local fdpool = require "fdpool"
    local log = fdpool.log
    fdpool.log = function(_, msg) logged = msg end
    local status, _, body = req("GET", "/string-headers")
    fdpool.log = log
    assert.equal(500, status)
    assert.is_nil(body:find("text meant", 1, true))
    assert.matches("handler returned a string as the headers (expected status, headers, body", logged, 1, true)
  end)
end)

describe("http.static", function()
  local dir, handler

  setup(function()
    dir = H.tmpdir()
    os.execute("mkdir -p " .. dir .. "/sub " .. dir .. "/both " .. dir .. "/empty")
    H.writefile(dir .. "/sub/index.html", "sub index\n")
    H.writefile(dir .. "/both/index.htm", "htm first\n")
    H.writefile(dir .. "/both/index.html", "html second\n")
    H.writefile(dir .. "/a.txt", "a\n")
    handler = http.serve(http.static(dir, { index = { "index.htm", "index.html" },
      on_missing = function(_, res)
        res:status(404):header("Content-Type", "text/html")
        return res:send("<h1>custom 404</h1>\n")
      end }))
  end)

  it("redirects a directory named without its slash (301, query kept)", function()
    local status, headers = testing.http_request(handler, "GET", "/sub?x=1")
    assert.same({ 301, "/sub/?x=1" }, { status, headers["location"] })
    local s2, _, body = testing.http_request(handler, "GET", "/sub/")
    assert.same({ 200, "sub index\n" }, { s2, body })
  end)

  it("redirects a directory without an index too (as nginx), whose slash form is then missing (on_missing); a file with a slash is missing", function()
    local status, headers = testing.http_request(handler, "GET", "/empty")
    assert.same({ 301, "/empty/" }, { status, headers["location"] })
    local s2, _, body = testing.http_request(handler, "GET", "/empty/")
    assert.same({ 404, "<h1>custom 404</h1>\n" }, { s2, body })     -- its on_missing
    assert.equal(404, (testing.http_request(handler, "GET", "/a.txt/")))
  end)

  it("serves the first index file of the list", function()
    local status, _, body = testing.http_request(handler, "GET", "/both/")
    assert.same({ 200, "htm first\n" }, { status, body })
  end)

  it("calls on_missing for a missing file and an empty directory", function()
    for _, path in ipairs { "/nope.txt", "/empty/", "/sub/nope" } do
      local status, headers, body = testing.http_request(handler, "GET", path)
      assert.same({ 404, "text/html", "<h1>custom 404</h1>\n" }, { status, headers["content-type"], body })
    end
    local status, _, body = testing.http_request(handler, "GET", "/a.txt")
    assert.same({ 200, "a\n" }, { status, body })
  end)
end)

-- ---- the real pool ---------------------------------------------------------

describe("the helpers in the real pool", function()
  local p, dir

  setup(function()
    p = H.start_pool{ script = APP, workers = 1 }
    assert.truthy(p.addr, p:log())
    dir = H.tmpdir()
  end)

  teardown(function()
    if p then assert.equal(0, p:stop()) end
  end)

  local function curl(args)
    local ok, code, out = H.run("curl -sS --max-time 30 " .. args)
    assert(ok, ("curl %s: exit %s: %s"):format(args, code, out))
    return out
  end

  it("streams a 5 MB upload sent by curl (Content-Length, then chunked)", function()
    local f = dir .. "/up.bin"
    H.writefile(f, ("u"):rep(5 * 1024 * 1024))
    local v = json.decode(curl(("--data-binary @%s http://%s/stream"):format(f, p.addr)))
    assert.equal(5 * 1024 * 1024, v.bytes)
    v = json.decode(curl(("-H 'Transfer-Encoding: chunked' --data-binary @%s http://%s/stream"):format(f, p.addr)))
    assert.equal(5 * 1024 * 1024, v.bytes)
  end)

  it("takes a multipart upload from curl -F, files to temp files", function()
    local f = dir .. "/photo.jpg"
    H.writefile(f, ("\255\216"):rep(1024 * 1024))
    local v = json.decode(curl(("-F title=hello -F 'up=@%s;type=image/jpeg' http://%s/form"):format(f, p.addr)))
    assert.equal("hello", v.title)
    assert.same({ "photo.jpg", 2 * 1024 * 1024, "image/jpeg" }, { v.up.filename, v.up.size, v.up.content_type })
    -- Removed when the handler returns, just after the response went.
    H.wait_until(function()
      local f = io.open(v.up.path, "rb")
      if f then f:close() end
      return f == nil
    end, 10, "the temp file removed")
  end)

  it("routes, sets cookies and answers JSON to curl", function()
    local out = curl(("-i -b 'a=1' http://%s/cookies"):format(p.addr))
    assert.matches("Set%-Cookie: seen=1; Path=/; Max%-Age=60; HttpOnly; SameSite=Lax\r\n", out)
    assert.matches('{"a":"1"}$', out)
    out = curl(("-i -X PUT http://%s/items/3"):format(p.addr))
    assert.matches("^HTTP/1.1 405 Method Not Allowed\r\n", out)
    assert.matches("\r\nAllow: GET, HEAD, POST\r\n", out)
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)
