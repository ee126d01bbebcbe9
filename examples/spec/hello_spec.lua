-- examples/spec/hello_spec.lua: unit specs for two handlers, run in the
-- spec's own process on an in-memory conn (no pool, no sockets):
-- examples/hello.lua (a raw handler reading lines) and
-- examples/http_hello.lua (a handler made with fdpool.http's serve).
-- Run from the project root: busted --lua=lua5.4 examples/spec

local testing = require "fdpool.testing"
describe("examples/hello.lua (a raw handler)", function()
  local handle = dofile("examples/hello.lua")

  it("answers a request and closes on Connection: close", function()
    local conn = testing.conn{
      input = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" }
    handle(conn)
    assert.equal("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
      .. "Content-Length: 6\r\nConnection: close\r\n\r\nhello\n", conn:output())
  end)

  it("serves two keep-alive requests, even split across reads", function()
    -- Each string is one read: the request line arrives in two pieces.
    local conn = testing.conn{ input = {
      "GET / HTT", "P/1.1\r\nHost: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n" } }
    handle(conn)
    local _, n = conn:output():gsub("HTTP/1%.1 200 OK", "")
    assert.equal(2, n)
  end)

  it("gives up quietly when the client goes silent", function()
    -- The client sends half a head and then nothing: receive times out.
    local conn = testing.conn{ input = "GET / HTTP/1.1\r\n", timeout_after_input = true }
    handle(conn)
    assert.equal("", conn:output())
    assert.equal(30, conn.timeout)   -- what the handler asked for
  end)
end)

local testing = require "fdpool.testing"
describe("examples/http_hello.lua (http.serve)", function()
  local handle = dofile("examples/http_hello.lua")

  it("answers GET with 200 and the body", function()
    local status, headers, body = testing.http_request(handle, "GET", "/")
    assert.equal(200, status)
    assert.equal("text/plain", headers["content-type"])
    assert.equal("6", headers["content-length"])
    assert.equal("hello\n", body)
  end)

  it("answers HEAD without a body", function()
    local status, headers, body = testing.http_request(handle, "HEAD", "/")
    assert.equal(200, status)
    assert.equal("6", headers["content-length"])
    assert.equal("", body)
  end)

  it("answers pipelined requests in order, on one conn", function()
    local conn = testing.conn{ input =
      "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" }
    handle(conn)
    local s1, _, b1, rest = testing.parse_response(conn:output())
    local s2, h2, b2 = testing.parse_response(rest)
    assert.same({ 200, "hello\n", 200, "hello\n", "close" }, { s1, b1, s2, b2, h2.connection })
  end)

  it("refuses a malformed request with 400", function()
    local conn = testing.conn{ input = "GET /\r\n\r\n" }
    handle(conn)
    assert.matches("^HTTP/1%.1 400 Bad Request\r\n", conn:output())
    assert.matches("bad request line", conn:output(), 1, true)
  end)

  it("answers 408 to a client that stops in the middle of a head", function()
    local conn = testing.conn{ input = "GET / HTTP/1.1\r\nHost:", timeout_after_input = true }
    handle(conn)
    assert.matches("^HTTP/1%.1 408 Request Timeout\r\n", conn:output())
  end)

  it("sees the peer the conn was made with", function()
    local conn = testing.conn{ input = "", peer = "192.0.2.7:5555" }
    assert.same({ "192.0.2.7", 5555, "inet" }, { conn:getpeername() })
  end)
end)
