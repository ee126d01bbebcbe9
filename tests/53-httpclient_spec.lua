-- tests/53-httpclient_spec.lua: fdpool.http.client against real pools:
-- a client pool whose handler makes requests (tests/fixtures/
-- cos_httpcli.lua) to an upstream pool that misbehaves on purpose
-- (cos_httpup.lua): framing (Content-Length, chunked, close), keep-alive
-- through the socket pool, the one retry on a reused connection the
-- upstream closed while idle, timeouts, resets, lying lengths, huge
-- chunk sizes, garbage, redirects, streaming, https refused.
local H = require "helpers"
local fdpool = require "fdpool"
local client = require "fdpool.http.client"

local ASAN = H.BUILD ~= "build"

local function ask(fd, line)
  assert(fd:write(line .. "\n"))
  return fd:read("l")
end

describe("fdpool.http.client", function()
  local up, cli, c
  setup(function()
    up = H.start_pool{ script = "tests/fixtures/cos_httpup.lua", workers = 1 }
    local host, port = up.addr:match("^(.*):(%d+)$")
    cli = H.start_pool{ script = "tests/fixtures/cos_httpcli.lua", workers = 1,
                        args = { host, port } }
    c = assert(fdpool.connect(cli.addr, 30))
  end)
  teardown(function()
    if c then c:close() end
    if cli then cli:stop() end
    if up then up:stop() end
  end)

  it("reads Content-Length, chunked and close-delimited bodies, keeping the connection", function()
    local first = ask(c, "GET /id")
    local id = first:match("^200 reused=%d+ len=%d+ body=(%d+)$")
    assert.truthy(id, first)
    assert.equals("200 reused=1 len=" .. #id .. " body=" .. id, ask(c, "GET /id"):gsub("reused=%d+", "reused=1"))
    assert.matches("^200 reused=[1-9]%d* len=%d+ body=" .. id .. "$", ask(c, "GET /id"))
    assert.equals("200 reused=" .. ask(c, "GET /id"):match("reused=(%d+)") + 1 .. " len=5 body=aaaaa",
      ask(c, "GET /len/5"))
    assert.matches("^200 reused=%d+ len=11 body=hello world$", ask(c, "GET /chunked"))
    assert.matches("^200 reused=%d+ len=0 body=$", ask(c, "GET /len/0"))
    assert.matches("^200 reused=%d+ len=8 body=POST ppp$", ask(c, "POST /echo body=3"))
    -- Connection: close is honoured: the next request opens a new one.
    assert.matches("^200 reused=%d+ len=3 body=bye$", ask(c, "GET /close"))
    assert.matches("^200 reused=%d+ len=%d+ body=%d+$", ask(c, "GET /id"))
  end)

  it("retries once an idempotent request on a pooled connection the upstream closed", function()
    local r = ask(c, "GET /dropnext")
    local id = r:match("body=(%d+)$")
    assert.truthy(id, r)
    -- The pooled connection is taken, the upstream reads the request and
    -- closes without an answer: the GET is sent again on a new one.
    local again = ask(c, "GET /id")
    assert.matches("^200 reused=0 len=%d+ body=%d+$", again)
    assert.are_not.equal(id, again:match("body=(%d+)$"))
    -- Closed by the upstream while idle in the pool (its FIN seen): the
    -- next request opens a new connection, no retry needed.
    local function opened()
      return tonumber(H.http_get(up.addr, "/open"):match("\r\n\r\n(%d+)$"))
    end
    local before = opened()
    local idle = ask(c, "GET /idleclose"):match("body=(%d+)$")
    H.wait_until(function() return opened() < before end, 10,
      "the upstream to close the idle connection")
    local fresh = ask(c, "GET /id")
    assert.matches("^200 reused=0 ", fresh)
    assert.are_not.equal(idle, fresh:match("body=(%d+)$"))
    -- A POST is not retried: its error reaches the caller.
    assert.truthy(ask(c, "GET /dropnext"):match("^200"))
    assert.equals("nil closed", ask(c, "POST /echo body=3"))
    assert.matches("^200 ", ask(c, "GET /id"))
  end)

  it("fails with nil, err on timeouts, resets, lies and garbage", function()
    assert.equals("nil timeout", ask(c, "GET /slow timeout=0.3"))
    -- A trickling upstream is cut by the whole-request timeout.
    assert.equals("nil timeout", ask(c, "GET /trickle timeout=0.5"))
    assert.matches("^nil closed$", ask(c, "POST /reset body=200000"))
    assert.equals("nil closed", ask(c, "GET /lie"))
    -- A body longer than its Content-Length: the connection is not
    -- pooled with the stray bytes.
    assert.matches("^200 reused=%d+ len=2 body=he$", ask(c, "GET /lieshort"))
    assert.matches("^200 reused=0 ", ask(c, "GET /id"))
    assert.equals("nil too large", ask(c, "GET /hugechunk"))
    assert.equals("nil bad chunk size", ask(c, "GET /overflow"))
    assert.equals("nil bad status line", ask(c, "GET /garbage"))
    assert.equals("nil header too large", ask(c, "GET /longheader"))
    assert.equals("nil header too large", ask(c, "GET /id max_head=20"))
    assert.equals("nil too large", ask(c, "GET /len/2000 max_body=1000"))
    assert.equals("nil connection refused", ask(c, "GET http://127.0.0.1:1/"))
    assert.equals("nil no such host", ask(c, "GET http://upstream.invalid/"))
    -- https:// is TLS now (tests/58-tls_spec.lua): nothing listens on 443.
    assert.equals("nil connection refused", ask(c, "GET https://127.0.0.1:1/"))
    -- After all that the worker still serves.
    assert.matches("^200 ", ask(c, "GET /id"))
    assert.same({}, H.unexpected_errors(cli:log()))
  end)

  it("parses response heads in C: split across reads, bare LF, 1xx, bad lines refused and not reused", function()
    -- The head comes in four writes (one between CR and LF): parsed
    -- whole, X-A's two values joined, and the connection pooled.
    local r = ask(c, "GET /split show=x-a")
    local id = r:match("^200 reused=%d+ len=%d+ body=(%d+) Fine x%-a=1, 2$")
    assert.truthy(id, r)
    assert.matches("^200 reused=[1-9]%d* len=%d+ body=" .. id .. "$", ask(c, "GET /id"))
    assert.equals("200 reused=1 len=2 body=ok OK x-a=1", ask(c, "GET /barelf show=x-a"):gsub("reused=%d+", "reused=1"))
    assert.matches("^200 reused=%d+ len=2 body=ok$", ask(c, "GET /interim"))
    -- Garbage in a head: a clear error, and that connection is closed,
    -- never pooled (the next request opens a new one).
    -- A header continued on the next line (obs-fold) is one value, the
    -- fold a space (RFC 9112 5.2: what a user agent must do).
    assert.equals("200 reused=1 len=2 body=ok OK x-a=1 folded", ask(c, "GET /obsfold show=x-a"):gsub("reused=%d+", "reused=1"))
    for path, err in pairs{ ["/nocolon"] = "bad header line",
                            ["/ctlbyte"] = "bad header value", ["/garbage"] = "bad status line" } do
      assert.equals("nil " .. err, ask(c, "GET " .. path))
      assert.matches("^200 reused=0 ", ask(c, "GET /id"))
    end
  end)

  it("follows redirects only when asked, within a bound", function()
    assert.matches("^302 reused=%d+ len=0 body=$", ask(c, "GET /redirect/2"))
    assert.matches("^200 reused=%d+ len=10 body=landed GET$", ask(c, "GET /redirect/2 follow=3"))
    assert.equals("nil too many redirects", ask(c, "GET /redirect/4 follow=2"))
    assert.matches("body=landed GET$", ask(c, "POST /redirect/1 follow=1 body=5"))
  end)

  it("streams a large body in pieces", function()
    local size = ASAN and (2 << 20) or (16 << 20)
    assert.equals(("200 pieces=%d len=%d"):format(size // 65536, size),
      ask(c, "GET /bigchunked/" .. size .. " stream=1"):gsub("pieces=%d+", "pieces=" .. size // 65536))
    assert.matches("^200 pieces=%d+ len=" .. size .. "$", ask(c, "GET /len/" .. size .. " stream=1"))
    -- And the connection went back to the pool after the stream ended.
    assert.matches("^200 reused=[1-9]", ask(c, "GET /id"))
  end)

  it("streams a slow body piece by piece as it arrives", function()
    -- Content-Length and close-delimited bodies as chunked ones: each
    -- res.read() returns what has come (it waited for 64 KiB or the end:
    -- one piece, after the last byte).
    assert.equals("200 pieces=4 len=24", ask(c, "GET /drip/4 stream=1"))
    assert.equals("200 pieces=4 len=24", ask(c, "GET /dripclose/4 stream=1"))
  end)

  it("frames a body itself: a caller's Transfer-Encoding or Content-Length cannot smuggle a request", function()
    -- A proxy passing a client's headers on with the decoded body: the
    -- upstream read the body as chunked ("0" CRLF CRLF: empty), or 3
    -- bytes of it, and the rest as a second request, GET /id.
    local n = 5 + #"0\r\n\r\nGET /id HTTP/1.1\r\nHost: x\r\n\r\n"
    local want = " len=" .. n .. " body=POST 0\\13\\10\\13\\10GET /id HTTP/1.1\\13\\10Host: x\\13\\10\\13\\10"
    assert.equals("200 reused=R" .. want, (ask(c, "POST /echo smuggle=te"):gsub("reused=%d+", "reused=R")))
    assert.equals("200 reused=R" .. want, (ask(c, "POST /echo smuggle=cl"):gsub("reused=%d+", "reused=R")))
    assert.matches("^200 reused=%d+ len=%d+ body=%d+$", ask(c, "GET /id"))
  end)

  it("parses URLs and refuses what it cannot send", function()
    assert.same({ scheme = "http", host = "::1", port = 8080, target = "/a?b", hosthdr = "[::1]:8080" },
      client.parse_url("http://[::1]:8080/a?b#frag"))
    assert.equals(443, client.parse_url("https://x/").port)
    assert.equals("x", client.parse_url("https://x:443/").hosthdr)
    assert.same({ nil, "bad url: no host" }, { client.parse_url("http:///x") })
    assert.same({ nil, "bad url: space or control byte in the path" }, { client.parse_url("http://x/a b") })
    -- a host cannot carry a line break (or anything else) into the Host line
    assert.same({ nil, "bad url: bad byte in the host" }, { client.parse_url("http://x\r\nX-Evil/") })
    assert.same({ nil, "bad url: bad byte in the host" }, { client.parse_url("http://a b:80/") })
    assert.equals("my-host.example_1", client.parse_url("http://my-host.example_1:81/").host)
    assert.has_error(function() client.request{ url = "http://x/", headers = { ["X-A"] = "a\r\nB: c" } } end)
  end)

  it("raises for a numeric option that is not a number >= 0, and for a bad ssl_verify or follow_redirects", function()
    -- (a table, a string or NaN there was taken as no limit)
    for _, k in ipairs { "timeout", "max_head", "max_body", "keepalive_timeout", "keepalive_pool" } do
      for _, v in ipairs { "10", {}, -1, 0/0, true } do
        local ok, err = pcall(client.request, { url = "http://127.0.0.1:9/", [k] = v })
        assert.is_false(ok, k)
        assert.matches("request{}: " .. k .. " must be a number >= 0, got ", err, 1, true)
      end
    end
    assert.has_error(function() client.request{ url = "http://x/", ssl_verify = 1 } end,
      "request{}: ssl_verify must be true, false or a CA file name, got number")
    assert.has_error(function() client.request{ url = "http://x/", follow_redirects = "yes" } end,
      "request{}: follow_redirects must be a boolean or a number >= 0, got string")
  end)
end)
