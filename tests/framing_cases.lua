-- tests/framing_cases.lua: HTTP/1.1 request framing cases (RFC 9112), as
-- a table, and a driver that plays one case against a server over TCP.
-- Used by tests/51-http-framing_spec.lua (fdpool) and by
-- bench/framing-vs-nginx.lua (the same table against nginx).
--
-- A case: { name, raw request bytes, expected statuses (one per response,
-- in order), open = the connection stays usable after them, len = the
-- body length the first request's handler saw (when it matters),
-- head = every request of the case is HEAD (responses without body) }.
-- The servers answer "METHOD TARGET VERSION len=N" for every request; a
-- target starting with /skip does not read the body (the server drains
-- it). max_body is 1 MiB. "Smuggled" requests hidden in a bad body are
-- GET /smuggled: the driver sees their response as an extra status.

local fdpool = require "fdpool"

local M = {}

-- Requests are written with "\n" and sent with CRLF; cases about bare LF
-- or bare CR spell their bytes with raw().
local function crlf(s) return (s:gsub("\n", "\r\n")) end
local function raw(s) return { raw = s } end

local SMUGGLED = "GET /smuggled HTTP/1.1\nHost: t\n\n"
local function post(headers, body, target)
  return "POST " .. (target or "/") .. " HTTP/1.1\nHost: t\n" .. headers .. "\n" .. body
end
local function chunked(body, target)
  return crlf(post("Transfer-Encoding: chunked\n", "", target)) .. body
end

M.cases = {
  -- ---- valid heads ------------------------------------------------------
  { "simple GET", crlf "GET / HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "GET with a query", crlf "GET /a/b?c=d&e HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "HTTP/1.0 without Host closes", crlf "GET / HTTP/1.0\n\n", { 200 }, open = false },
  { "HTTP/1.0 keep-alive", crlf "GET / HTTP/1.0\nConnection: keep-alive\n\n", { 200 }, open = true },
  { "empty lines before the request line", crlf "\n\nGET / HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "two pipelined GETs", crlf "GET /1 HTTP/1.1\nHost: t\n\nGET /2 HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true },
  { "HEAD", crlf "HEAD / HTTP/1.1\nHost: t\n\n", { 200 }, open = true, head = true },
  { "OPTIONS *", crlf "OPTIONS * HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "absolute-form target", crlf "GET http://t/x HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "a 64-byte header name", crlf("GET / HTTP/1.1\nHost: t\n" .. ("N"):rep(64) .. ": v\n\n"), { 200 }, open = true },
  { "a 300-byte header name", crlf("GET / HTTP/1.1\nHost: t\n" .. ("N"):rep(300) .. ": v\n\n"), { 200 }, open = true },
  { "no space after the colon", crlf "GET / HTTP/1.1\nHost:t\nX-A:b\n\n", { 200 }, open = true },
  { "tabs around a value", crlf "GET / HTTP/1.1\nHost: t\nX-A:\t b \t\n\n", { 200 }, open = true },
  { "an empty header value", crlf "GET / HTTP/1.1\nHost: t\nX-Empty:\n\n", { 200 }, open = true },
  { "obs-text in a value", crlf "GET / HTTP/1.1\nHost: t\nX-A: caf\xc3\xa9\n\n", { 200 }, open = true },
  { "a repeated list header", crlf "GET / HTTP/1.1\nHost: t\nAccept: a\nAccept: b\n\n", { 200 }, open = true },
  { "HTTP/1.2 is served as 1.1", crlf "GET / HTTP/1.2\nHost: t\n\n", { 200 }, open = true },
  { "HTTP/1.9 is served as 1.1", crlf "GET / HTTP/1.9\nHost: t\n\n", { 200 }, open = true },
  { "Connection: close", crlf "GET / HTTP/1.1\nHost: t\nConnection: close\n\n", { 200 }, open = false },
  { "an extension method", crlf "PURGE / HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "a lower-case method (a token)", crlf "get / HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "Host with a port", crlf "GET / HTTP/1.1\nHost: t:8080\n\n", { 200 }, open = true },
  { "Host as an IPv6 literal", crlf "GET / HTTP/1.1\nHost: [::1]:80\n\n", { 200 }, open = true },
  { "an empty Host", crlf "GET / HTTP/1.1\nHost:\n\n", { 200 }, open = true },
  { "100 header fields", crlf("GET / HTTP/1.1\nHost: t\n" .. ("X-A: b\n"):rep(99) .. "\n"), { 200 }, open = true },

  -- ---- valid bodies -----------------------------------------------------
  { "Content-Length body", crlf(post("Content-Length: 5\n", "")) .. "hello", { 200 }, open = true, len = 5 },
  { "Content-Length: 0", crlf(post("Content-Length: 0\n", "")), { 200 }, open = true, len = 0 },
  { "Content-Length with leading zeros", crlf(post("Content-Length: 005\n", "")) .. "hello", { 200 }, open = true, len = 5 },
  { "Content-Length with trailing blanks", crlf(post("Content-Length: 5 \t\n", "")) .. "hello", { 200 }, open = true, len = 5 },
  { "chunked", chunked "5\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "chunked, three chunks", chunked "2\r\nhe\r\n3\r\nllo\r\n1\r\n!\r\n0\r\n\r\n", { 200 }, open = true, len = 6 },
  { "chunked, upper-case hex", chunked "A\r\n0123456789\r\n0\r\n\r\n", { 200 }, open = true, len = 10 },
  { "chunked, lower-case hex", chunked "a\r\n0123456789\r\n0\r\n\r\n", { 200 }, open = true, len = 10 },
  { "chunked, size with leading zeros", chunked "0005\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "chunked, 16 hex digits", chunked "0000000000000005\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "chunked, empty body", chunked "0\r\n\r\n", { 200 }, open = true, len = 0 },
  { "chunked, last-chunk 000", chunked "000\r\n\r\n", { 200 }, open = true, len = 0 },
  { "chunk extension name=value", chunked "5;foo=bar\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "chunk extension without value", chunked "5;foo\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "chunk extension, quoted value", chunked '5;foo="b a;r"\r\nhello\r\n0\r\n\r\n', { 200 }, open = true, len = 5 },
  { "chunk extension, quoted-pair", chunked '5;foo="a\\"b"\r\nhello\r\n0\r\n\r\n', { 200 }, open = true, len = 5 },
  { "chunk extensions, two", chunked "5;a=1;b\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "chunk extension with BWS", chunked "5 ; a = 1\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "last-chunk with an extension", chunked "5\r\nhello\r\n0;x=y\r\n\r\n", { 200 }, open = true, len = 5 },
  { "trailers", chunked "5\r\nhello\r\n0\r\nX-T: 1\r\nY:2\r\n\r\n", { 200 }, open = true, len = 5 },
  { "Transfer-Encoding: Chunked (case)", crlf(post("Transfer-Encoding: Chunked\n", "")) .. "0\r\n\r\n", { 200 }, open = true, len = 0 },
  { "Transfer-Encoding after a tab", crlf(post("Transfer-Encoding:\tchunked\n", "")) .. "0\r\n\r\n", { 200 }, open = true, len = 0 },
  { "chunked body, then a pipelined GET", chunked("5\r\nhello\r\n0\r\n\r\n") .. crlf "GET /2 HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true, len = 5 },
  { "CL body, then a pipelined GET", crlf(post("Content-Length: 5\n", "hello")) .. crlf "GET /2 HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true, len = 5 },
  { "unread CL body drained, then a GET", crlf(post("Content-Length: 5\n", "hello", "/skip")) .. crlf "GET /2 HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true },
  { "unread chunked body drained, then a GET", chunked("5\r\nhello\r\n0\r\nX: y\r\n\r\n", "/skip") .. crlf "GET /2 HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true },
  { "unread 64 KiB CL body drained", crlf(post("Content-Length: 65536\n", "", "/skip")) .. ("x"):rep(65536) .. crlf "GET /2 HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true },
  { "a body that looks like a request", crlf(post("Content-Length: 33\n", SMUGGLED)), { 200 }, open = true, len = 33 },

  -- ---- bad request lines --------------------------------------------------
  { "bare LF everywhere", raw "GET / HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "bare LF after the request line", raw "GET / HTTP/1.1\nHost: t\r\n\r\n", { 400 }, open = false },
  { "two spaces in the request line", crlf "GET  / HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a tab as separator", crlf "GET\t/ HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "no version", crlf "GET /\nHost: t\n\n", { 400 }, open = false },
  { "lower-case version", crlf "GET / http/1.1\nHost: t\n\n", { 400 }, open = false },
  { "HTTP/1.10", crlf "GET / HTTP/1.10\nHost: t\n\n", { 400 }, open = false },
  { "HTTP/1", crlf "GET / HTTP/1\nHost: t\n\n", { 400 }, open = false },
  { "a space after the version", crlf "GET / HTTP/1.1 \nHost: t\n\n", { 400 }, open = false },
  { "HTTP/2.0 is 505", crlf "GET / HTTP/2.0\nHost: t\n\n", { 505 }, open = false },
  { "HTTP/0.9 is 505", crlf "GET / HTTP/0.9\nHost: t\n\n", { 505 }, open = false },
  { "HTTP/3.1 is 505", crlf "GET / HTTP/3.1\nHost: t\n\n", { 505 }, open = false },
  { "a space in the target", crlf "GET /a b HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a NUL in the target", crlf "GET /a\0b HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a method with a non-token byte", crlf "G(T / HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a target without a slash", crlf "GET foo HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "* with GET", crlf "GET * HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a bare CR in the request line", raw "GET / HTTP/1.1\rHost: t\r\n\r\n", { 400 }, open = false },
  { "a good request, then HTTP/2.0", crlf "GET / HTTP/1.1\nHost: t\n\nGET / HTTP/2.0\nHost: t\n\n", { 200, 505 }, open = false },

  -- ---- bad header fields ------------------------------------------------------
  { "bare LF ending a header line", raw "GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", { 400 }, open = false },
  { "bare LF ending the head", raw "GET / HTTP/1.1\r\nHost: t\r\n\n", { 400 }, open = false },
  { "a bare CR in a value", raw "GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", { 400 }, open = false },
  { "obs-fold", crlf "GET / HTTP/1.1\nHost: t\nX: a\n b\n\n", { 400 }, open = false },
  { "obs-fold with a tab", crlf "GET / HTTP/1.1\nHost: t\nX: a\n\tb\n\n", { 400 }, open = false },
  { "whitespace before the first header", crlf "GET / HTTP/1.1\n Host: t\n\n", { 400 }, open = false },
  { "a space before the colon", crlf "GET / HTTP/1.1\nHost : t\n\n", { 400 }, open = false },
  { "a tab before the colon", crlf "GET / HTTP/1.1\nHost\t: t\n\n", { 400 }, open = false },
  { "a header line without colon", crlf "GET / HTTP/1.1\nHost: t\nNoColon\n\n", { 400 }, open = false },
  { "an empty header name", crlf "GET / HTTP/1.1\nHost: t\n: x\n\n", { 400 }, open = false },
  { "a NUL in a value", crlf "GET / HTTP/1.1\nHost: t\nX: a\0b\n\n", { 400 }, open = false },
  { "a control byte in a name", crlf "GET / HTTP/1.1\nHost: t\nX\1Y: a\n\n", { 400 }, open = false },
  { "a DEL in a value", crlf "GET / HTTP/1.1\nHost: t\nX: a\127b\n\n", { 400 }, open = false },
  { "101 header fields are 431", crlf("GET / HTTP/1.1\nHost: t\n" .. ("X-A: b\n"):rep(100) .. "\n"), { 431 }, open = false },
  { "a 9 KiB request line is 414", crlf("GET /" .. ("a"):rep(9216) .. " HTTP/1.1\nHost: t\n\n"), { 414 }, open = false },
  { "a 9 KiB head is 431", crlf("GET / HTTP/1.1\nHost: t\nX: " .. ("a"):rep(9216) .. "\n\n"), { 431 }, open = false },
  { "HEAD with a bad header: 400 without body", crlf "HEAD / HTTP/1.1\nHost : t\n\n", { 400 }, open = false, head = true },

  -- ---- Host ---------------------------------------------------------------
  { "HTTP/1.1 without Host", crlf "GET / HTTP/1.1\n\n", { 400 }, open = false },
  { "two Host lines", crlf "GET / HTTP/1.1\nHost: a\nHost: b\n\n", { 400 }, open = false },
  { "two identical Host lines", crlf "GET / HTTP/1.1\nHost: a\nHost: a\n\n", { 400 }, open = false },
  { "Host: a b", crlf "GET / HTTP/1.1\nHost: a b\n\n", { 400 }, open = false },
  { "Host with a slash", crlf "GET / HTTP/1.1\nHost: a/b\n\n", { 400 }, open = false },
  { "Host with userinfo", crlf "GET / HTTP/1.1\nHost: u@a\n\n", { 400 }, open = false },
  { "Host with a bad port", crlf "GET / HTTP/1.1\nHost: a:8x\n\n", { 400 }, open = false },
  { "HEAD without Host: 400 without body", crlf "HEAD / HTTP/1.1\n\n", { 400 }, open = false, head = true },

  -- ---- Content-Length / Transfer-Encoding (RFC 9112 6) --------------------
  { "CL and TE", crlf(post("Content-Length: 5\nTransfer-Encoding: chunked\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE and CL", crlf(post("Transfer-Encoding: chunked\nContent-Length: 5\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "CL.TE smuggling", crlf(post("Content-Length: 6\nTransfer-Encoding: chunked\n", "")) .. "0\r\n\r\nG", { 400 }, open = false },
  { "two equal Content-Length lines", crlf(post("Content-Length: 5\nContent-Length: 5\n", "hello")), { 400 }, open = false },
  { "two different Content-Length lines", crlf(post("Content-Length: 5\nContent-Length: 6\n", "hello!")), { 400 }, open = false },
  -- past 32 fields the parser stops matching repeated names line by line
  -- (every field is looked up in the headers table): the same answers
  { "two Content-Length lines among 40 fields", crlf(post(("X-A: b\n"):rep(20) .. "Content-Length: 5\n"
    .. ("X-B: c\n"):rep(20) .. "Content-Length: 5\n", "hello")), { 400 }, open = false },
  { "TE on two lines among 40 fields", crlf(post(("X-A: b\n"):rep(38) .. "Transfer-Encoding: chunked\n"
    .. "Transfer-Encoding: chunked\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "CL and TE among 40 fields", crlf(post(("X-A: b\n"):rep(38) .. "Content-Length: 5\n"
    .. "Transfer-Encoding: chunked\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "one Content-Length after 40 fields", crlf(post(("X-A: b\n"):rep(40) .. "Content-Length: 5\n", "hello")),
    { 200 }, open = true, len = 5 },
  { "Content-Length: 5, 5", crlf(post("Content-Length: 5, 5\n", "hello")), { 400 }, open = false },
  { "Content-Length: +5", crlf(post("Content-Length: +5\n", "hello")), { 400 }, open = false },
  { "Content-Length: -1", crlf(post("Content-Length: -1\n", "")), { 400 }, open = false },
  { "Content-Length: 0x5", crlf(post("Content-Length: 0x5\n", "hello")), { 400 }, open = false },
  { "Content-Length: 5a", crlf(post("Content-Length: 5a\n", "hello")), { 400 }, open = false },
  { "Content-Length: 5 5", crlf(post("Content-Length: 5 5\n", "hello")), { 400 }, open = false },
  { "an empty Content-Length", crlf(post("Content-Length:\n", "")), { 400 }, open = false },
  { "Content-Length of 20 digits", crlf(post("Content-Length: 18446744073709551621\n", "hello")), { 413 }, open = false },
  { "Content-Length over max_body", crlf(post("Content-Length: 2000000\n", "")), { 413 }, open = false },
  { "TE: gzip", crlf(post("Transfer-Encoding: gzip\n", "")), { 501 }, open = false },
  { "TE: identity", crlf(post("Transfer-Encoding: identity\n", "")), { 501 }, open = false },
  { "TE: gzip, chunked", crlf(post("Transfer-Encoding: gzip, chunked\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE: chunked, gzip", crlf(post("Transfer-Encoding: chunked, gzip\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunked, chunked", crlf(post("Transfer-Encoding: chunked, chunked\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunked on two lines", crlf(post("Transfer-Encoding: chunked\nTransfer-Encoding: chunked\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunked then TE: x", crlf(post("Transfer-Encoding: chunked\nTransfer-Encoding: x\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunkedx", crlf(post("Transfer-Encoding: chunkedx\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE with a space before the colon", crlf(post("Transfer-Encoding : chunked\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE with a vertical tab", crlf(post("Transfer-Encoding: \vchunked\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE in HTTP/1.0", crlf "POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n0\n\n", { 400 }, open = false },

  -- ---- bad chunked bodies: 400, closed, the smuggled GET never served -----
  { "chunk size of 17 digits (wraps to 0)", chunked("10000000000000000\r\n\r\n" .. crlf(SMUGGLED)), { 400 }, open = false },
  { "chunk size ffffffffffffffff (too large)", chunked("ffffffffffffffff\r\nx\r\n"), { 413 }, open = false },
  { "chunk size 0x5", chunked("0x5\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "chunk size -5", chunked("-5\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "chunk size +5", chunked("+5\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "an empty chunk size", chunked("\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "a blank before the chunk size", chunked(" 5\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "junk after the chunk size", chunked("5 junk\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "chunk size 6_0", chunked("6_0\r\nhello!\r\n0\r\n\r\n"), { 400 }, open = false },
  { "a blank after the chunk size", chunked("5 \r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "bare LF after the chunk size", chunked("5\nhello\r\n0\r\n\r\n" .. crlf(SMUGGLED)), { 400 }, open = false },
  { "bare CR after the chunk size", chunked("5\rhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "chunk data without CRLF", chunked("5\r\nhelloXX0\r\n\r\n"), { 400 }, open = false },
  { "chunk data then bare LF", chunked("5\r\nhello\n0\r\n\r\n"), { 400 }, open = false },
  { "chunk longer than its size", chunked("3\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "chunk shorter than its size (smuggles)", chunked("8\r\nhello\r\n0\r\n\r\n" .. crlf(SMUGGLED)), { 400 }, open = false },
  { "extension: bare CR", chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "extension: no name", chunked("5;\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "extension: =value only", chunked("5;=x\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "extension: control byte", chunked("5;a=\1\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "extension: unterminated quote", chunked('5;a="x\r\nhello\r\n0\r\n\r\n'), { 400 }, open = false },
  { "extension: a blank before CRLF", chunked("5;a \r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "extension: 2000 bytes", chunked("5;a=" .. ("b"):rep(2000) .. "\r\nhello\r\n0\r\n\r\n"), { 400 }, open = false },
  { "extension: bare LF", chunked("5;a=b\nhello\r\n0\r\n\r\n" .. crlf(SMUGGLED)), { 400 }, open = false },
  { "last-chunk with bare LF", chunked("0\n\r\n"), { 400 }, open = false },
  { "bare LF ending the body", chunked("0\r\n\n" .. crlf(SMUGGLED)), { 400 }, open = false },
  { "trailer obs-fold", chunked("0\r\nX: a\r\n b\r\n\r\n"), { 400 }, open = false },
  { "trailer without colon", chunked("0\r\nNoColon\r\n\r\n"), { 400 }, open = false },
  { "trailer with a space before the colon", chunked("0\r\nX : a\r\n\r\n"), { 400 }, open = false },
  { "trailer with bare LF", chunked("0\r\nX: a\n\r\n" .. crlf(SMUGGLED)), { 400 }, open = false },
  { "trailer section of 9 KiB", chunked("0\r\nX: " .. ("a"):rep(9216) .. "\r\n\r\n"), { 400 }, open = false },
  { "chunked over max_body", chunked("200000\r\n"), { 413 }, open = false },
  { "unread bad chunked body: closes, nothing smuggled", chunked("5\nhello\r\n0\r\n\r\n" .. crlf(SMUGGLED), "/skip"), { 200 }, open = false },
  { "unread chunked body over max_body: closes", chunked("200000\r\n" .. ("x"):rep(1000), "/skip"), { 200 }, open = false },
}

for _, c in ipairs(M.cases) do
  if type(c[2]) == "table" then c[2] = c[2].raw end
end

-- ---- the driver -------------------------------------------------------------

local Client = {}
Client.__index = Client

function Client:fill()
  local d, err = self.fd:read(65536)
  if not d then return nil, err or "closed" end
  self.buf = self.buf .. d
  return true
end

function Client:need(pred)
  while true do
    local r = pred()
    if r then return r end
    local ok, err = self:fill()
    if not ok then return nil, err end
  end
end

-- One response: status, headers, body; nil, why at EOF/timeout/garbage.
function Client:response(head_only)
  local i = self:need(function() return self.buf:find("\r\n\r\n", 1, true) end)
  if not i then return nil, "eof" end
  local head = self.buf:sub(1, i + 1)
  self.buf = self.buf:sub(i + 4)
  local status = tonumber(head:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then return nil, "garbage" end
  local h = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r]*)") do h[k:lower()] = v end
  local body = ""
  if head_only or status < 200 or status == 204 or status == 304 then
    body = ""
  elseif (h["transfer-encoding"] or ""):lower() == "chunked" then
    local parts = {}
    while true do
      local e = self:need(function() return self.buf:find("\r\n", 1, true) end)
      if not e then return nil, "eof in body" end
      local n = tonumber(self.buf:sub(1, e - 1):match("^%x+"), 16) or 0
      self.buf = self.buf:sub(e + 2)
      if n == 0 then
        if not self:need(function() return self.buf:find("\r\n", 1, true) end) then
          return nil, "eof in body"
        end
        self.buf = self.buf:sub(self.buf:find("\r\n", 1, true) + 2)
        break
      end
      if not self:need(function() return #self.buf >= n + 2 end) then return nil, "eof in body" end
      parts[#parts + 1] = self.buf:sub(1, n)
      self.buf = self.buf:sub(n + 3)
    end
    body = table.concat(parts)
  elseif h["content-length"] then
    local n = tonumber(h["content-length"])
    if not self:need(function() return #self.buf >= n end) then return nil, "eof in body" end
    body, self.buf = self.buf:sub(1, n), self.buf:sub(n + 1)
  else
    while self:fill() do end
    body, self.buf = self.buf, ""
  end
  return { status = status, headers = h, body = body }
end

-- Play case c against addr. Returns what was observed: { statuses = {...}
-- (interim 1xx left out), open = whether a probe request sent after the
-- expected responses was served, lens = {body length per response, from
-- "len=N"}, err = why reading stopped early }. timeout: seconds per read.
function M.run(addr, c, timeout)
  local fd = assert(fdpool.connect(addr, timeout or 3))
  local cl = setmetatable({ fd = fd, buf = "" }, Client)
  local obs = { statuses = {}, lens = {}, open = false }
  fd:write(c[2])
  local want, last = #c[3], nil
  while #obs.statuses < want do
    local r, why = cl:response(c.head)
    if not r then obs.err = why; break end
    if r.status >= 200 then
      obs.statuses[#obs.statuses + 1] = r.status
      obs.lens[#obs.lens + 1] = tonumber(r.body:match("len=(%d+)"))
      last = r
    end
  end
  local closing = not last or #obs.statuses < want
    or (last.headers["connection"] or ""):lower():find("close") ~= nil
  if not closing then
    fd:write("GET /probe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
  end
  -- Whatever comes next: the probe's answer, or responses to smuggled
  -- requests (extra statuses), until EOF.
  while true do
    local r = cl:response(false)
    if not r then break end
    if r.status >= 200 then
      if r.body:find("^GET /probe") then
        obs.open = true
        break
      end
      obs.statuses[#obs.statuses + 1] = r.status
    end
  end
  fd:close()
  return obs
end

-- Whether obs is what case c expects; a string saying how not otherwise.
function M.check(c, obs)
  local got = table.concat(obs.statuses, ",")
  local want = table.concat(c[3], ",")
  if got ~= want then
    return false, ("statuses %s, expected %s%s"):format(got == "" and "none" or got, want,
      obs.err and (" (" .. obs.err .. ")") or "")
  end
  if obs.open ~= c.open then
    return false, obs.open and "connection stayed open, expected closed"
      or "connection closed, expected open"
  end
  if c.len and obs.lens[1] ~= c.len then
    return false, ("body length %s, expected %d"):format(tostring(obs.lens[1]), c.len)
  end
  return true
end

return M
