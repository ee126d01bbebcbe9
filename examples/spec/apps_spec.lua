-- examples/spec/apps_spec.lua: the application examples on in-memory
-- conns: examples/json_api.lua (router, JSON), examples/ws_chat.lua
-- (WebSocket, through testing.websocket), examples/upload.lua (multipart
-- and streamed bodies, cookies), examples/site.lua (http.static's 301,
-- index list and on_missing).
local testing = require "fdpool.testing"
local json = require "fdpool.http.json"   -- lua-cjson, integers kept

describe("examples/json_api.lua (router and JSON)", function()
  local handle = dofile("examples/json_api.lua")

  it("creates an item and reads it back, ids as integers", function()
    local status, headers, body = testing.http_request(handle, "POST", "/items",
      { body = '{"name": "pen", "price": 1.5}' })
    assert.equal(201, status)
    assert.equal("/items/1", headers["location"])
    assert.same({ id = 1, name = "pen", price = 1.5 }, json.decode(body))
    assert.equal("integer", math.type(json.decode(body).id))
    status, headers, body = testing.http_request(handle, "GET", "/items/1")
    assert.equal(200, status)
    assert.equal("application/json", headers["content-type"])
    assert.same({ id = 1, name = "pen", price = 1.5 }, json.decode(body))
  end)

  it("answers 404 and 405 (with Allow) as JSON or plain text", function()
    assert.equal(404, (testing.http_request(handle, "GET", "/items/99")))
    local status, headers = testing.http_request(handle, "PATCH", "/items/1")
    assert.equal(405, status)
    assert.equal("GET, HEAD, PUT, DELETE", headers["allow"])
  end)

  it("gives repeated query keys as a list", function()
    local _, _, body = testing.http_request(handle, "GET", "/search?q=a+b&tag=x&tag=y")
    assert.same({ q = "a b", tags = { "x", "y" } }, json.decode(body))
  end)
end)

local testing = require "fdpool.testing"
describe("examples/ws_chat.lua (WebSocket)", function()
  local handle = dofile("examples/ws_chat.lua")

  it("serves the page", function()
    local status, headers, body = testing.http_request(handle, "GET", "/")
    assert.equal(200, status)
    assert.equal("text/html; charset=utf-8", headers["content-type"])
    assert.truthy(body:find("new WebSocket", 1, true))
  end)

  it("upgrades /ws and echoes each message to the room", function()
    -- testing.websocket sends the upgrade and the client's (masked)
    -- frames, runs the handler, and decodes what the server sent.
    local r = testing.websocket(handle, "/ws", { frames = {
      { "text", "ann: hello" },
      { "ping", "are you there" },
      { "close", { 1000, "bye" } },
    } })
    assert.equal(101, r.status)
    assert.same({ "* someone joined (1 here)", "ann: hello" }, r.messages)
    assert.equal("pong", r.frames[3].kind)          -- pings are answered
    assert.equal("are you there", r.frames[3].data)
    assert.equal(1000, r.close.code)                -- the close is echoed
  end)

  it("pings a silent client, then drops it", function()
    -- timeout_after_input: after the frames the client stays silent (in
    -- memory each wait times out at once).
    local r = testing.websocket(handle, "/ws", { frames = { { "text", "hi" } },
      timeout_after_input = true })
    assert.same({ "* someone joined (1 here)", "hi" }, r.messages)
    assert.equal("ping", r.frames[3].kind)
    assert.equal(1000, r.close.code)        -- closed when the handler returned
  end)

  it("closes with 1009 a message over max_payload", function()
    local r = testing.websocket(handle, "/ws", { frames = { { "text", ("x"):rep(5000) } } })
    assert.equal(1009, r.close.code)
  end)

  it("refuses a plain GET of /ws with 400", function()
    local status = testing.http_request(handle, "GET", "/ws")
    assert.equal(400, status)
  end)
end)

describe("examples/upload.lua (forms and streamed bodies)", function()
  local dir, handle

  setup(function()
    local p = io.popen("mktemp -d /tmp/upload-spec.XXXXXX")
    dir = p:read("l")
    p:close()
    handle = assert(loadfile("examples/upload.lua"))(dir)
  end)

  teardown(function()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
  end

  it("saves the files of a multipart form and sets a cookie", function()
    local body = "--B\r\nContent-Disposition: form-data; name=\"who\"\r\n\r\nAnn Lee\r\n"
      .. "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../a.txt\"\r\n"
      .. "Content-Type: text/plain\r\n\r\nfile body\r\n--B--\r\n"
    local status, _, page, conn = testing.http_request(handle, "POST", "/", { body = body,
      headers = { ["Content-Type"] = "multipart/form-data; boundary=B" } })
    assert.equal(200, status)
    assert.truthy(page:find("saved: a.txt", 1, true))
    assert.equal("file body", read(dir .. "/a.txt"))
    assert.truthy(conn:output():find("Set-Cookie: who=Ann%20Lee; Path=/", 1, true))
  end)

  it("streams a chunked PUT to a file", function()
    local status, _, body = testing.http_request(handle, "PUT", "/raw/b.bin", {
      headers = { ["Transfer-Encoding"] = "chunked" },
      body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" })
    assert.equal(201, status)
    assert.equal("11 bytes in b.bin\n", body)
    assert.equal("hello world", read(dir .. "/b.bin"))
  end)
end)

describe("examples/site.lua (a static site)", function()
  local dir, handle

  setup(function()
    local p = io.popen("mktemp -d /tmp/site-spec.XXXXXX")
    dir = p:read("l")
    p:close()
    os.execute("mkdir '" .. dir .. "/docs'")
    local f = assert(io.open(dir .. "/docs/index.htm", "wb"))
    f:write("docs\n")
    f:close()
    handle = assert(loadfile("examples/site.lua"))(dir)
  end)

  teardown(function()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("redirects /docs to /docs/ and serves its index.htm", function()
    local status, headers = testing.http_request(handle, "GET", "/docs")
    assert.same({ 301, "/docs/" }, { status, headers["location"] })
    local s2, _, body = testing.http_request(handle, "GET", "/docs/")
    assert.same({ 200, "docs\n" }, { s2, body })
  end)

  it("answers a missing page with its own 404 page", function()
    local status, headers, body = testing.http_request(handle, "GET", "/nope")
    assert.equal(404, status)
    assert.equal("text/html; charset=utf-8", headers["content-type"])
    assert.truthy(body:find("No /nope here.", 1, true))
  end)
end)
