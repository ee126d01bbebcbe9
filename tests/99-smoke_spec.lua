local H = require "helpers"
local fdpool = require "fdpool"

describe("smoke", function()
  it("serves hello", function()
    local p = H.start_pool{}
    H.defer(finally, function() p:stop() end)
    local r = H.http_get(p.addr)
    assert.matches("hello", r)
    assert.equals(0, p:stop())
  end)

  -- `pool run` with no script: the embedded default is an http.serve
  -- handler, so it has the strict framing and the master's HTTP accept
  -- filter like any HTTP application.
  it("the embedded default keeps alive, refuses smuggling and holds silent clients in the master", function()
    local p = H.start_pool{ workers = 1 }
    H.defer(finally, function() p:stop() end)
    -- Two requests on one connection.
    local fd = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() fd:close() end)
    assert(fd:write("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    local both = fd:read("a")
    local n = 0
    for _ in both:gmatch("HTTP/1%.1 200 OK\r\n") do n = n + 1 end
    assert.equal(2, n, both)
    -- A chunk size that overflows: the handler does not read the body, so
    -- hello is answered, then the drain refuses the size and closes; the
    -- bytes after it are never served as a second request.
    local r = H.request(p.addr, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "10000000000000000\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    local _, count = r:gsub("HTTP/1%.1 ", "")
    assert.equal(1, count, r)
    -- A Host that is not a host is refused before the handler.
    r = H.request(p.addr, "GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert.truthy(r:find("^HTTP/1%.1 400"), r)
    -- A connection that sends nothing waits in the master, not in the worker.
    local silent = assert(fdpool.connect(p.addr, 10))
    H.defer(finally, function() silent:close() end)
    -- (The earlier connections' DONE reports may lag by their 2 ms batch.)
    local st = H.wait_status(p, function(s)
      return s.pending == 1 and H.sum_workers(s, "active") == 0
    end, 5, "pending 1, no active connection")
    assert.equal(1, st.pending)
    assert.matches("hello", H.http_get(p.addr))
    assert.equals(0, p:stop())
  end)
end)
