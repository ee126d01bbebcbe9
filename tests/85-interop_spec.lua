-- tests/85-interop_spec.lua: fdpool with real clients and servers, as a
-- user meets them: curl and python3's stdlib (http.client, urllib)
-- against build/pool serving tests/fixtures/interop.lua, and
-- fdpool.http.client (tests/fixtures/cos_httpcli.lua) against a python3
-- http.server (tests/fixtures/py_redirects.py). Each case is a
-- divergence found with those clients (and Node, nginx: see the commit)
-- or a behaviour they rely on:
-- - If-None-Match compared weakly, and as a list (RFC 9110 13.1.2): a
--   compressing proxy (nginx's gzip) makes the ETag W/"...", and the
--   browser sends that back;
-- - an absolute-form target (curl -x; RFC 9112 3.2.2: a server MUST
--   accept it) has the origin-form's req.path;
-- - an unread chunked body past max_body: the response says
--   Connection: close (Python's http.client and Node's agent reuse a
--   connection whose response did not);
-- - one python http.client connection through HEAD, 204, chunked,
--   206, 304 and bodies (a framing slip shows in the next response);
-- - curl -Z: parallel keep-alive transfers;
-- - fdpool.http.client following relative Location values (RFC 9110
--   10.2.2, RFC 3986 5.2), as curl, browsers and Node do.
package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"

local q = H.quote

-- curl with a time limit: exit code, stdout..stderr
local function curl(args)
  local _, code, out = H.run("curl -sS --max-time 15 " .. args)
  return code, out
end

-- python3 running a script (a string) with arguments: exit code, output
local function python(dir, script, ...)
  local path = H.writefile(dir .. "/client.py", script)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = q(a) end
  local _, code, out = H.run(("timeout 60 python3 %s %s"):format(q(path), table.concat(args, " ")))
  return code, out
end

describe("fdpool.http with curl and python3", function()
  local pool, dir, url, port

  setup(function()
    dir = H.tmpdir()
    H.writefile(dir .. "/hello.txt", "hello\n")
    os.execute("mkdir -p " .. q(dir .. "/sub"))
    H.writefile(dir .. "/sub/index.html", "<p>sub</p>\n")
    local f = assert(io.open(dir .. "/big.bin", "wb"))
    for i = 0, 255 do f:write(string.char(i):rep(4096)) end   -- 1 MiB
    f:close()
    pool = H.start_pool { script = "tests/fixtures/interop.lua", workers = 1, args = { dir } }
    assert(pool.addr, pool:log())
    url = "http://" .. pool.addr
    port = pool.addr:match(":(%d+)$")
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  it("answers If-None-Match with 304 for its ETag weak (W/, as nginx's gzip sends it back) or in a list", function()
    local code, out = curl("-D - -o /dev/null " .. url .. "/hello.txt")
    assert.equal(0, code, out)
    local etag = assert(out:match("\r\n[Ee][Tt]ag: ([^\r]+)"), out)
    local function status(inm)
      local c, o = curl(("-o /dev/null -w '%%{http_code}' -H %s %s/hello.txt")
        :format(q("If-None-Match: " .. inm), url))
      assert.equal(0, c, o)
      return o
    end
    assert.equal("304", status(etag))
    assert.equal("304", status("W/" .. etag))
    assert.equal("304", status('"other", ' .. etag))
    assert.equal("304", status('W/"other", W/' .. etag))
    assert.equal("304", status("*"))
    assert.equal("200", status('"other"'))
    assert.equal("200", status('W/"other", "' .. etag:sub(2, -3) .. '"'))
  end)

  it("serves an absolute-form request (curl -x) by its path, as origin-form", function()
    local code, out = curl(("-x %s http://example.test/hello.txt"):format(url))
    assert.equal(0, code, out)
    assert.equal("hello\n", out)
    code, out = curl(("-x %s -o /dev/null -w '%%{http_code} %%{redirect_url}' 'http://example.test/sub?a=1'")
      :format(url))
    assert.equal(0, code, out)
    assert.equal("301 http://example.test/sub/?a=1", out)
    code, out = curl(("-x %s http://example.test/sub/"):format(url))
    assert.equal(0, code, out)
    assert.equal("<p>sub</p>\n", out)
  end)

  -- Python's http.client (and Node's agent) send the next request on a
  -- connection whose response did not say close.
  local CHUNKED_SKIP = [[
import http.client, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
def body():
    left = size
    while left > 0:
        n = min(left, 65536)
        left -= n
        yield b"x" * n
c.request("POST", "/skip", body=body(), encode_chunked=True)
r = c.getresponse()
r.read()
first = c.sock
print(r.status, r.getheader("Connection"), r.will_close)
c.request("GET", "/hello.txt")
r = c.getresponse()
print(r.status, r.read().decode().strip(), "same connection" if c.sock is first else "new connection")
]]

  it("says Connection: close when an unread chunked body passes max_body (python http.client)", function()
    local code, out = python(dir, CHUNKED_SKIP, port, 3 * 1024 * 1024)
    assert.equal(0, code, out)
    assert.equal("405 close True\n200 hello new connection\n", out)
  end)

  it("discards an unread chunked body under max_body and keeps the connection (python http.client)", function()
    local code, out = python(dir, CHUNKED_SKIP, port, 100 * 1024)
    assert.equal(0, code, out)
    assert.equal("405 None False\n200 hello same connection\n", out)
  end)

  it("leaves a chunked body to a res:write handler that streams it back after the head (curl)", function()
    local src = H.writefile(dir .. "/up.bin", ("0123456789abcdef"):rep(20000))
    local code, out = curl(("-H 'Transfer-Encoding: chunked' --data-binary @%s -o %s -w '%%{http_code}' %s/duplex")
      :format(q(src), q(dir .. "/down.bin"), url))
    assert.equal(0, code, out)
    assert.equal("200", out)
    assert.is_true(H.readfile(dir .. "/down.bin") == H.readfile(src), "the body came back whole")
  end)

  it("keeps a small chunked body read before a whole response for req:body(), and says why a large one is gone", function()
    local code, out = curl(("-H 'Transfer-Encoding: chunked' --data-binary abc %s/after"):format(url))
    assert.equal(0, code, out)
    assert.equal("sent\n", out)
    H.wait_until(function() return pool:log():find("after: abc nil", 1, true) end, 10,
      "the handler's line for a small body: " .. pool:log())
    local src = H.writefile(dir .. "/up100k.bin", ("z"):rep(100 * 1024))
    code, out = curl(("-H 'Transfer-Encoding: chunked' --data-binary @%s %s/after"):format(q(src), url))
    assert.equal(0, code, out)
    assert.equal("sent\n", out)
    H.wait_until(function()
      return pool:log():find("after: nil body discarded (past 64 KiB, the response was sent first)", 1, true)
    end, 10, "the handler's line for a large body: " .. pool:log())
  end)

  it("keeps one python http.client connection through HEAD, 204, chunked, 206, 304 and bodies", function()
    local code, out = python(dir, [[
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
c.connect()
first = c.sock
def ask(method, path, body=None, headers={}, chunked=False):
    c.request(method, path, body=body, headers=headers, encode_chunked=chunked)
    r = c.getresponse()
    data = r.read()
    return r, data
out = []
r, d = ask("HEAD", "/big.bin"); out.append("HEAD %d %s %d" % (r.status, r.getheader("Content-Length"), len(d)))
r, d = ask("HEAD", "/stream"); out.append("HEAD stream %d %s %d" % (r.status, r.getheader("Transfer-Encoding"), len(d)))
r, d = ask("GET", "/empty"); out.append("204 %d %d" % (r.status, len(d)))
r, d = ask("GET", "/stream"); out.append("stream %d %d" % (r.status, len(d)))
r, d = ask("GET", "/big.bin", headers={"Range": "bytes=4095-4096"}); out.append("range %d %s %r" % (r.status, r.getheader("Content-Range"), d))
etag = r.getheader("ETag")
r, d = ask("GET", "/big.bin", headers={"If-None-Match": etag}); out.append("inm %d %d" % (r.status, len(d)))
r, d = ask("GET", "/big.bin"); out.append("get %d %d %d" % (r.status, len(d), d[-1]))
r, d = ask("POST", "/echo", body=b"abc"); out.append("echo %d %r" % (r.status, d))
r, d = ask("POST", "/echo", body=iter([b"de", b"f"]), chunked=True); out.append("echo chunked %d %r" % (r.status, d))
r, d = ask("POST", "/skip", body=b"y" * 1000); out.append("skip %d" % r.status)
r, d = ask("GET", "/hello.txt"); out.append("last %d %r" % (r.status, d))
out.append("same connection" if c.sock is first else "new connection")
print("\n".join(out))
]], port)
    assert.equal(0, code, out)
    assert.equal(table.concat({
      "HEAD 200 1048576 0",
      "HEAD stream 200 chunked 0",
      "204 204 0",
      "stream 200 35",
      "range 206 bytes 4095-4096/1048576 b'\\x00\\x01'",
      "inm 304 0",
      "get 200 1048576 255",
      "echo 200 b'abc'",
      "echo chunked 200 b'def'",
      "skip 405",
      "last 200 b'hello\\n'",
      "same connection",
    }, "\n") .. "\n", out)
  end)

  it("streams to urllib over HTTP/1.0-style close and follows the directory 301", function()
    local code, out = python(dir, [[
import urllib.request, sys
base = "http://127.0.0.1:%s" % sys.argv[1]
r = urllib.request.urlopen(base + "/sub?x=1", timeout=20)
print(r.status, r.url[len(base):], r.read().decode().strip())
r = urllib.request.urlopen(base + "/stream", timeout=20)
print(r.status, r.read().decode().count("line"))
]], port)
    assert.equal(0, code, out)
    assert.equal("200 /sub/?x=1 <p>sub</p>\n200 5\n", out)
  end)

  it("serves curl -Z: 24 parallel keep-alive transfers byte-exact", function()
    local args = {}
    for i = 1, 24 do
      args[#args + 1] = ("-o %s %s/%s"):format(q(dir .. "/par" .. i), url,
        i % 3 == 0 and "stream" or (i % 3 == 1 and "big.bin" or "hello.txt"))
    end
    local code, out = curl("-Z --parallel-max 6 -w '%{http_code}\\n' " .. table.concat(args, " "))
    assert.equal(0, code, out)
    local _, n = out:gsub("200\n", "")
    assert.equal(24, n, out)
    local big = H.readfile(dir .. "/big.bin")
    for i = 1, 24 do
      local want = i % 3 == 0 and "line 1\nline 2\nline 3\nline 4\nline 5\n"
        or (i % 3 == 1 and big or "hello\n")
      assert.is_true(H.readfile(dir .. "/par" .. i) == want, "transfer " .. i)
    end
  end)

  it("logs no handler error", function()
    assert.is_nil(pool:log():find("handler error", 1, true), pool:log())
  end)
end)

describe("fdpool.http.client against python3's http.server", function()
  local up, cli, c, dir

  local function ask(line)
    assert(c:write(line .. "\n"))
    return c:read("l")
  end

  setup(function()
    dir = H.tmpdir()
    up = H.spawn(dir, "py", { "python3", "tests/fixtures/py_redirects.py", dir .. "/port" })
    local port = H.wait_until(function() return H.readfile(dir .. "/port") end, 10,
      "python3's server to listen")
    cli = H.start_pool { script = "tests/fixtures/cos_httpcli.lua", workers = 1,
                         args = { "127.0.0.1", port } }
    assert(cli.addr, cli:log())
    c = assert(fdpool.connect(cli.addr, 30))
  end)

  teardown(function()
    if c then c:close() end
    if cli then cli:stop() end
    H.reap(up)
  end)

  it("follows relative Location values: path, dot segments, network-path, query, a raw space and UTF-8", function()
    assert.matches("^200 reused=%d+ len=%d+ body=GET /rel/target%?x=1$", ask("GET /rel/start follow=2"))
    assert.matches("^200 reused=%d+ len=%d+ body=GET /a/target$", ask("GET /a/b/up follow=2"))
    assert.matches("^200 reused=%d+ len=%d+ body=GET /target$", ask("GET /net follow=2"))
    assert.matches("^200 reused=%d+ len=%d+ body=GET /q%?page=2$", ask("GET /q follow=2"))
    assert.matches("^200 reused=%d+ len=%d+ body=GET /tar%%20get/%%C3%%A9$", ask("GET /sp follow=2"))
    -- not followed unless asked
    assert.matches("^302 reused=%d+ len=0 body=$", ask("GET /rel/start"))
  end)
end)
