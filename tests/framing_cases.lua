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
  { "a 33 KiB request line is 414", crlf("GET /" .. ("a"):rep(33 * 1024) .. " HTTP/1.1\nHost: t\n\n"), { 414 }, open = false },
  { "a 33 KiB head is 431", crlf("GET / HTTP/1.1\nHost: t\nX: " .. ("a"):rep(33 * 1024) .. "\n\n"), { 431 }, open = false },
  { "a 9 KiB head is taken (32 KiB in all)", crlf("GET / HTTP/1.1\nHost: t\nX: " .. ("a"):rep(9216) .. "\n\n"), { 200 }, open = true },
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

  -- ==== cases read in other parsers' corpora (llhttp's test/request,
  -- picohttpparser's test.c, http-parser's test.c, request-smuggling
  -- write-ups), re-expressed here; strict as llhttp without lenient flags
  -- unless a comment says otherwise ====================================

  -- ---- request line and target ------------------------------------------
  { "a ? inside the query", crlf "GET /test.cgi?foo=bar?baz HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "quotes and | in the target", crlf "GET /with_\"q\"_x?foo=\\\"b\\\"&q=| HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "a fragment in the target (kept as sent)", crlf "GET /forums/1?page=1#posts-17408 HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  -- RFC 3986 has no raw non-ASCII in a target; served as Node's llhttp
  -- build (loose mode), picohttpparser and nginx do (docs/api.md §7)
  { "obs-text (UTF-8) in the target is served", crlf "GET /\xce\xb4\xc2\xb6/x HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "a DEL in the target", crlf "GET /\127hello HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "absolute-form: a query right after the host", crlf "GET http://h.org?hail=all HTTP/1.1\nHost: h.org\n\n", { 200 }, open = true },
  { "absolute-form: host:port and nothing after", crlf "GET http://h.org:1234 HTTP/1.1\nHost: h.org:1234\n\n", { 200 }, open = true },
  { "absolute-form with userinfo (RFC 9110 4.2.4)", crlf "GET http://a%12:b!&*$@h.org:1234/toto HTTP/1.1\nHost: h.org:1234\n\n", { 400 }, open = false },
  { "absolute-form with an empty host (RFC 9110 4.2.1)", crlf "GET http:///x HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "absolute-form: http:// alone", crlf "GET http:// HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "absolute-form: a bad port", crlf "GET http://h:80x/ HTTP/1.1\nHost: h\n\n", { 400 }, open = false },
  { "absolute-form: scheme in capitals", crlf "GET HTTP://h/x HTTP/1.1\nHost: h\n\n", { 200 }, open = true },
  { "absolute-form: an empty port", crlf "GET https://h:/x HTTP/1.1\nHost: h\n\n", { 200 }, open = true },
  { "absolute-form: an IPv6 literal", crlf "GET http://[::1]/ HTTP/1.1\nHost: [::1]\n\n", { 200 }, open = true },
  { "absolute-form: a percent-encoded host", crlf "GET http://a%20b/ HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "OPTIONS in absolute-form", crlf "OPTIONS http://h.org HTTP/1.1\nHost: h.org\n\n", { 200 }, open = true },
  { "* with M-SEARCH (OPTIONS only)", crlf "M-SEARCH * HTTP/1.1\nHost: 239.255.255.250:1900\n\n", { 400 }, open = false },
  { "CONNECT host:port, HTTP/1.0", crlf "CONNECT home_0.example.com:443 HTTP/1.0\nUser-Agent: M\n\n", { 200 }, open = false },
  { "CONNECT [v6]:port", crlf "CONNECT [::1]:443 HTTP/1.1\nHost: [::1]:443\nConnection: close\n\n", { 200 }, open = false },
  -- Go's server takes CONNECT /path (its RPC); RFC 9112 3.2.3 does not
  { "CONNECT with an origin-form target", crlf "CONNECT /x HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "CONNECT without a port", crlf "CONNECT a.example HTTP/1.1\nHost: a.example\n\n", { 400 }, open = false },
  { "CONNECT with an empty port", crlf "CONNECT a.example: HTTP/1.1\nHost: a.example\n\n", { 400 }, open = false },
  { "CONNECT without a host", crlf "CONNECT :443 HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "CONNECT in absolute-form", crlf "CONNECT http://a.example/ HTTP/1.1\nHost: a.example\n\n", { 400 }, open = false },
  { "a path that looks scheme-relative", crlf "GET //user@host/is/a/path/ HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "a relative path", crlf "GET ../../../../etc/passwd HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "* with NOTIFY (OPTIONS only)", crlf "NOTIFY * HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "CONNECT with percent-encoded junk", crlf "CONNECT []%20%48%54%54%50%2f%31%2e%31%0a%4d%79%0a%0a HTTP/1.0\n\n", { 400 }, open = false },
  { "the HTTP/2 preface is 505", crlf "PRI * HTTP/2.0\n\nSM\n\n", { 505 }, open = false },
  { "HTTP/3.0 is 505", crlf "GET / HTTP/3.0\nHost: t\n\n", { 505 }, open = false },
  { "an unknown 6-letter method", crlf "MKCOLA / HTTP/1.1\nHost: t\n\n", { 200 }, open = true },
  { "ANNOUNCE, HTTP/1.0", crlf "ANNOUNCE /m HTTP/1.0\n\n", { 200 }, open = false },
  { "ICE/1.0", crlf "GET /m ICE/1.0\nHost: t\n\n", { 400 }, open = false },
  { "IHTTP/1.0", crlf "GET /m IHTTP/1.0\nHost: t\n\n", { 400 }, open = false },
  { "RTSP/1.0", crlf "PUT /m RTSP/1.0\nHost: t\n\n", { 400 }, open = false },
  { "HTTP/5.6 is 505", crlf "GET / HTTP/5.6\nHost: t\n\n", { 505 }, open = false },
  { "HTTP/11.1", crlf "GET / HTTP/11.1\nHost: t\n\n", { 400 }, open = false },
  { "HTTP/1.1.1", crlf "GET / HTTP/1.1.1\nHost: t\n\n", { 400 }, open = false },
  { "HTTP/1.x", crlf "GET / HTTP/1.x\nHost: t\n\n", { 400 }, open = false },
  { "HTTP/ 1.1", crlf "GET / HTTP/ 1.1\nHost: t\n\n", { 400 }, open = false },
  { "a tab after the version", crlf "GET / HTTP/1.1\t\nHost: t\n\n", { 400 }, open = false },
  { "no target", crlf "GET HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a space before the method", crlf " GET / HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a tab before the method", crlf "\tGET / HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a / in the method", crlf "GE/T / HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  -- CR and LF bytes before a request line are skipped, as llhttp does
  -- (RFC 9112 2.2: at least one empty line SHOULD be ignored)
  { "a lone CR before the request line", raw "\rGET / HTTP/1.1\r\nHost: t\r\n\r\n", { 200 }, open = true },
  { "a lone LF before the request line", raw "\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", { 200 }, open = true },

  -- ---- header fields --------------------------------------------------------
  { "header lines separated by a bare CR", raw "GET / HTTP/1.1\r\nHost: t\r\nFoo: 1\rBar: 2\r\n\r\n", { 400 }, open = false },
  { "a bare LF hides Transfer-Encoding", raw "POST / HTTP/1.1\r\nHost: t\r\nx:x\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n", { 400 }, open = false },
  { "an empty value, then a bare CR", raw "POST / HTTP/1.1\r\nHost: t\r\nx:\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", { 400 }, open = false },
  { "an empty value, then a bare LF", raw "POST / HTTP/1.1\r\nHost: t\r\nx:\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", { 400 }, open = false },
  { "CR and junk where the head ends", raw "GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\n\rZGET /evil: HTTP/1.1\r\nHost: a\r\n\r\n", { 400 }, open = false },
  { "a bare LF hides Content-Length", raw("GET / HTTP/1.1\r\nHost: t\r\nDummy: x\nContent-Length: 23\r\n\r\n"
    .. "GET / HTTP/1.1\r\nDummy: GET /admin HTTP/1.1\r\nHost: t\r\n\r\n"), { 400 }, open = false },
  { "a folded line hides Content-Length", crlf "POST /hello HTTP/1.1\nHost: t\nFoo: bar\n Content-Length: 38\n\nGET /bye HTTP/1.1\nHost: t\n\n", { 400 }, open = false },
  { "a folded Connection list", crlf "GET / HTTP/1.1\nHost: t\nConnection: keep-alive, \n upgrade\nUpgrade: WebSocket\n\n", { 400 }, open = false },
  { "a name followed by a folded colon", crlf "GET / HTTP/1.1\nHost: t\nname\n : value\n\n", { 400 }, open = false },
  { "@ in a name", crlf "GET / HTTP/1.1\nHost: t\nFo@: Failure\n\n", { 400 }, open = false },
  { "a space inside a name", crlf "GET / HTTP/1.1\nHost: t\nX Y: a\n\n", { 400 }, open = false },
  { "a byte over 0x7f in a name", crlf "GET / HTTP/1.1\nHost: t\nX\x80: a\n\n", { 400 }, open = false },
  { "CR and control bytes in a name", raw "GET / HTTP/1.1\r\nHost: t\r\nConnection\r\027\065\213eep-Alive\r\nAccept-Encoding: gzip\r\n\r\n", { 400 }, open = false },
  { "Content\\rLength", raw "POST / HTTP/1.1\r\nHost: t\r\nContent\rLength: 3\r\n\r\nabc", { 400 }, open = false },
  { "a value starting with a colon", crlf "GET / HTTP/1.1\nHost: t\nX:: a\n\n", { 200 }, open = true },
  { "Host: a:1:2", crlf "GET / HTTP/1.1\nHost: a:1:2\n\n", { 400 }, open = false },
  { "Host: ::1 without brackets", crlf "GET / HTTP/1.1\nHost: ::1\n\n", { 400 }, open = false },
  { "a tab inside Host", crlf "GET / HTTP/1.1\nHost: a\tb\n\n", { 400 }, open = false },
  { "absolute-form without Host in HTTP/1.1", crlf "GET http://a/ HTTP/1.1\n\n", { 400 }, open = false },
  { "Host with _ and -", crlf "GET / HTTP/1.1\nHost: foo-bar_baz.com\n\n", { 200 }, open = true },
  { "Host [::1] without a port", crlf "GET / HTTP/1.1\nHost: [::1]\n\n", { 200 }, open = true },
  -- RFC 3986's IP-literal has no zone (RFC 6874's %25 is not in RFC
  -- 9110's uri-host); Go's server takes it
  { "Host [::1%25en0]:80 (an IPv6 zone)", crlf "GET / HTTP/1.1\nHost: [::1%25en0]:80\n\n", { 400 }, open = false },
  { "Host with a control byte", crlf "GET / HTTP/1.1\nHost: \6\n\n", { 400 }, open = false },
  { "Host: \xff", crlf "GET / HTTP/1.1\nHost: \xff\n\n", { 400 }, open = false },
  { "Host: {", crlf "GET / HTTP/1.1\nHost: {\n\n", { 400 }, open = false },
  { "HTTP/1.0 with two Host lines", crlf "GET / HTTP/1.0\nHost: first\nHost: second\n\n", { 400 }, open = false },
  { "HTTP/1.0 with a bad Host", crlf "GET / HTTP/1.0\nHost: \xff\n\n", { 400 }, open = false },
  -- RFC 9112 3.2: every HTTP/1.1 request without Host is 400, CONNECT's
  -- too (Go's server lets CONNECT go without)
  { "CONNECT in HTTP/1.1 without Host", crlf "CONNECT golang.org:443 HTTP/1.1\n\n", { 400 }, open = false },
  { "a byte over 0x7f inside a name", crlf "GET / HTTP/1.1\nHost: t\nfoo\xffbar: foo\n\n", { 400 }, open = false },
  { "a byte over 0x7f in a value", crlf "GET / HTTP/1.1\nHost: t\nfoo: foo\xfffoo\n\n", { 200 }, open = true },
  { "a bad Content-Length with chunked", crlf(post("Content-Length: notdigits\nTransfer-Encoding: chunked\n", "0\n\n")), { 400 }, open = false },
  { "HEAD with two Content-Length lines", crlf "HEAD / HTTP/1.1\nHost: foo\nContent-Length: 4\nContent-Length: 5\n\n1234", { 400 }, open = false, head = true },
  { "absolute-form, Keep-Alive and Proxy-Connection fields, a body", crlf("GET http://www.t.com/ HTTP/1.1\nHost: www.t.com\nKeep-Alive: 300\n"
    .. "Content-Length: 7\nProxy-Connection: keep-alive\n\n") .. "abcdef\n", { 200 }, open = true, len = 7 },
  { "Expect other than 100-continue is 417", crlf(post("Expect: foo\nContent-Length: 0\n", "")), { 417 }, open = false },
  { "Expect: 100-continue", crlf(post("Expect: 100-continue\nContent-Length: 5\n", "hello")), { 200 }, open = true, len = 5 },

  -- ---- Content-Length ---------------------------------------------------------
  { "conTENT-Length (name case)", crlf(post("conTENT-Length: 5\n", "HELLO")), { 200 }, open = true, len = 5 },
  { "Content-Length: 003, then another field", crlf(post("Content-Length: 003\nOhai: world\n", "abc")), { 200 }, open = true, len = 3 },
  { "Content-Length with two spaces before", crlf(post("Content-Length:  5 \n", "hello")), { 200 }, open = true, len = 5 },
  { "GET with a Content-Length body", crlf "GET / HTTP/1.1\nHost: t\nContent-Length: 5\n\nhello", { 200 }, open = true, len = 5 },
  { "HTTP/1.0 GET with a body", crlf "GET / HTTP/1.0\nContent-Length: 5\n\nHELLO", { 200 }, open = false, len = 5 },
  { "HEAD with a Content-Length body", crlf "HEAD / HTTP/1.1\nHost: t\nContent-Length: 5\n\nhello", { 200 }, open = true, head = true },
  { "Content-Length: 0 before a body that is a request", crlf(post("Content-Length: 0\n", SMUGGLED)), { 200, 200 }, open = true, len = 0 },
  { "Content-Length with 20 leading zeros", crlf(post("Content-Length: " .. ("0"):rep(20) .. "5\n", "hello")), { 200 }, open = true, len = 5 },
  { "Content-Length: 13 37", crlf(post("Content-Length: 13 37\n", "")), { 400 }, open = false },
  { "Content-Length: 5.0", crlf(post("Content-Length: 5.0\n", "hello")), { 400 }, open = false },
  { "Content-Length: 1e1", crlf(post("Content-Length: 1e1\n", "helloworld")), { 400 }, open = false },
  { "Content-Length: ,5", crlf(post("Content-Length: ,5\n", "hello")), { 400 }, open = false },
  { "Content-Length with a vertical tab", crlf(post("Content-Length: 5\v\n", "hello")), { 400 }, open = false },
  { "Content-Length with a no-break space", crlf(post("Content-Length: \xa05\n", "hello")), { 400 }, open = false },
  { "Content-Length of 21 digits", crlf(post("Content-Length: 100000000000000000000\n", "")), { 413 }, open = false },
  { "Content-Length and TE: identity", crlf(post("Content-Length: 1\nTransfer-Encoding: identity\n", "a")), { 400 }, open = false },
  { "TE: chunked and Content-Length: 0 on a GET", crlf "GET / HTTP/1.1\nHost: t\nContent-Length: 0\nTransfer-Encoding: chunked\n\n0\n\n", { 400 }, open = false },

  -- ---- Transfer-Encoding ------------------------------------------------------
  { "transfer-encoding (name in lower case)", crlf(post("transfer-encoding: chunked\n", "")) .. "0\r\n\r\n", { 200 }, open = true, len = 0 },
  { "TE: CHUNKED", crlf(post("Transfer-Encoding: CHUNKED\n", "")) .. "0\r\n\r\n", { 200 }, open = true, len = 0 },
  { "TE: chunked with a trailing blank", raw "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  -- an empty list element before chunked is ignored (RFC 9110 5.6.1), as
  -- llhttp does; one after it leaves chunked not last (llhttp: 400)
  { "TE: , chunked", crlf(post("Transfer-Encoding: , chunked\n", "")) .. "0\r\n\r\n", { 200 }, open = true, len = 0 },
  { "TE: chunked,", crlf(post("Transfer-Encoding: chunked,\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunked ,", crlf(post("Transfer-Encoding: chunked ,\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunked, then an empty TE line", crlf(post("Transfer-Encoding: chunked\nTransfer-Encoding:\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "an empty Transfer-Encoding", crlf(post("Transfer-Encoding:\n", "")), { 400 }, open = false },
  { "two empty Transfer-Encoding lines", crlf(post("Transfer-Encoding:\nTransfer-Encoding: \n", "")), { 400 }, open = false },
  { "an empty Transfer-Encoding and Content-Length", crlf(post("Transfer-Encoding:\nContent-Length: 5\n", "hello")), { 400 }, open = false },
  { "Content-Length and three empty TE lines", crlf(post("Content-Length: 10\nTransfer-Encoding:\nTransfer-Encoding:\nTransfer-Encoding:\n", "2\nAA\n0\n")), { 400 }, open = false },
  { "TE: chunked, deflate", crlf(post("Transfer-Encoding: chunked, deflate\n", "World")), { 400 }, open = false },
  { "TE: chunked, then TE: deflate", crlf(post("Transfer-Encoding: chunked\nTransfer-Encoding: deflate\n", "World")), { 400 }, open = false },
  { "TE: deflate, chunked (not decoded)", crlf(post("Transfer-Encoding: deflate, chunked\n", "5\nWorld\n0\n\n")), { 501 }, open = false },
  { "TE: deflate, then TE: chunked", crlf(post("Transfer-Encoding: deflate\nTransfer-Encoding: chunked\n", "5\nWorld\n0\n\n")), { 501 }, open = false },
  { "TE: chunkedchunked", crlf(post("Transfer-Encoding: chunkedchunked\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE: xchunked", crlf(post("Transfer-Encoding: xchunked\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE: pigeons", crlf "PUT /url HTTP/1.1\nHost: t\nTransfer-Encoding: pigeons\n\n", { 501 }, open = false },
  { "TE: \"chunked\" (quoted)", crlf(post("Transfer-Encoding: \"chunked\"\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE: chunked;q=1 (a parameter)", crlf(post("Transfer-Encoding: chunked;q=1\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE: chunked and a NUL", crlf(post("Transfer-Encoding: chunked\0\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunked and a vertical tab", crlf(post("Transfer-Encoding: chunked\v\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "TE: chunked and a form feed", crlf(post("Transfer-Encoding: chunked\f\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  -- smuggling-suite mutations: look-alike names are other fields (no
  -- body), look-alike values are no chunked
  { "Transfer_Encoding (underscore) is another field", raw("POST / HTTP/1.1\r\nHost: t\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n"),
    { 200, 400 }, open = false, len = 0 },
  { "Content-Encoding: chunked is no framing", raw("POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    { 200, 400 }, open = false, len = 0 },
  { "Content_Length (underscore) is another field", crlf(post("Content_Length: 33\n", SMUGGLED)), { 200, 200 }, open = true, len = 0 },
  { "TE: ,,chunked", crlf(post("Transfer-Encoding: ,,chunked\n", "")) .. "0\r\n\r\n", { 200 }, open = true, len = 0 },
  { "TE: chunked; (an empty parameter)", crlf(post("Transfer-Encoding: chunked;\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE: a no-break space, then chunked", crlf(post("Transfer-Encoding: \xa0chunked\n", "")) .. "0\r\n\r\n", { 501 }, open = false },
  { "TE: chunked and an ESC byte", crlf(post("Transfer-Encoding: chunked\27\n", "")) .. "0\r\n\r\n", { 400 }, open = false },
  { "a Transfer-Encoding trailer is no framing", chunked("5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")
    .. crlf "GET /2 HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true, len = 5 },

  -- ---- chunked bodies -----------------------------------------------------------
  { "a 0x1e chunk", chunked "1e\r\nall your base are belong to us\r\n0\r\n\r\n", { 200 }, open = true, len = 30 },
  { "chunk extensions with escapes and ; in quotes", chunked('5;ilovew3="I \\"love\\"; \\\\extensions\\\\";somuchlove="aretheseparametersfor";blah;foo=bar\r\n'
    .. "hello\r\n6;blahblah;blah\r\n world\r\n0\r\n\r\n"), { 200 }, open = true, len = 11 },
  { "obs-text in a quoted extension", chunked "5;a=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "a tab between size and extension", chunked "5\t;a=b\r\nhello\r\n0\r\n\r\n", { 200 }, open = true, len = 5 },
  { "trailers Vary and Content-Type", chunked "5\r\nhello\r\n6\r\n world\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n", { 200 }, open = true, len = 11 },
  { "a tab before the chunk size", chunked "\t5\r\nhello\r\n0\r\n\r\n", { 400 }, open = false },
  -- over 16 hex digits is refused whatever their value, as Go does
  -- (llhttp takes any number of leading zeros)
  { "a chunk size of 20 digits, leading zeros", chunked "00000000000000000005\r\nhello\r\n0\r\n\r\n", { 400 }, open = false },
  { "a blank and a bare LF after the size", chunked "3 \n  \r\nfoo\r\n0\r\n\r\n", { 400 }, open = false },
  { "no last-chunk: an empty line", crlf "PUT /url HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\n\n3\nfoo\n\n", { 400 }, open = false },
  { "no ; before an extension, on the last-chunk too", chunked "2 erfrferferf\r\naa\r\n0 rrrr\r\n\r\n", { 400 }, open = false },
  { "an unterminated quote after a good extension", chunked "5;a=\"abc\";b=\"def; ghi\r\nhello\r\n0\r\n\r\n", { 400 }, open = false },
  { "a space inside an extension token", chunked "5;a=b c\r\nhello\r\n0\r\n\r\n", { 400 }, open = false },
  { "an extension = without a value", chunked "5;a=\r\nhello\r\n0\r\n\r\n", { 400 }, open = false },
  { "a DEL in a quoted extension", chunked "5;a=\"\127\"\r\nhello\r\n0\r\n\r\n", { 400 }, open = false },
  { "CR CR after the size, smuggling", raw("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n"
    .. "GET /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), { 400 }, open = false },
  { "chunk data, then a bare CR", chunked "5\r\nhello\r0\r\n\r\n", { 400 }, open = false },
  { "no final CRLF: the next request read as a trailer", chunked("5\r\nhello\r\n0\r\n" .. crlf "GET /2 HTTP/1.1\nHost: t\n\n"), { 400 }, open = false },
  { "a trailer with an empty name", chunked "0\r\n: x\r\n\r\n", { 400 }, open = false },
  { "a trailer with a NUL", chunked "0\r\nX: a\0b\r\n\r\n", { 400 }, open = false },
  { "whitespace before the first trailer", chunked "0\r\n X: a\r\n\r\n", { 400 }, open = false },
  { "a trailer with a bare CR", chunked "0\r\nX: a\rb\r\n\r\n", { 400 }, open = false },

  -- ---- connections and pipelining --------------------------------------------
  { "a CRLF between a body and the next request", crlf "POST / HTTP/1.1\nHost: t\nContent-Length: 4\n\nq=42\nGET / HTTP/1.1\nHost: t\n\n", { 200, 200 }, open = true, len = 4 },
  { "Connection: close, then a CRLF and a request (not served)", crlf "POST / HTTP/1.1\nHost: t\nContent-Length: 4\nConnection: close\n\nq=42\nGET / HTTP/1.1\nHost: t\n\n", { 200 }, open = false, len = 4 },
  { "HTTP/1.0 without keep-alive, then a request (not served)", crlf "PUT /url HTTP/1.0\n\nPUT /url HTTP/1.1\nHost: t\n\n", { 200 }, open = false },
  { "HTTP/1.0 keep-alive, a body, then a request", crlf "POST / HTTP/1.0\nConnection: keep-alive\nContent-Length: 2\n\nhiGET /2 HTTP/1.0\nConnection: keep-alive\n\n", { 200, 200 }, open = true, len = 2 },
  { "a Connection list with close", crlf "PUT /url HTTP/1.1\nHost: t\nConnection: close, token, upgrade, token, keep-alive\n\n", { 200 }, open = false },
  { "Connection: Close (case)", crlf "GET / HTTP/1.1\nHost: t\nConnection: Close\n\n", { 200 }, open = false },
  -- Connection is a list of tokens (RFC 9110 7.6.1): matched whole
  { "Connection: keep-alive, Close", crlf "GET / HTTP/1.1\nHost: t\nConnection: keep-alive, Close\n\n", { 200 }, open = false },
  { "Connection: closed is not close", crlf "GET / HTTP/1.1\nHost: t\nConnection: closed\n\n", { 200 }, open = true },
  { "HTTP/1.0, Connection: TE, Keep-Alive", crlf "GET / HTTP/1.0\nConnection: TE, Keep-Alive\n\n", { 200 }, open = true },
  { "HTTP/1.0, Connection: keep-alive-x is not keep-alive", crlf "GET / HTTP/1.0\nConnection: keep-alive-x\n\n", { 200 }, open = false },
  { "Connection on two lines, close on the second", crlf "GET / HTTP/1.1\nHost: t\nConnection: keep-alive\nConnection: close\n\n", { 200 }, open = false },
  -- an Upgrade the handler does not take is ignored (RFC 9110 7.8): the
  -- request is served as HTTP, its body read by its Content-Length
  { "an Upgrade the handler ignores, with a body", crlf "POST /demo HTTP/1.1\nHost: t\nConnection: Upgrade\nUpgrade: HTTP/2.0\nContent-Length: 15\n\nsweet post body", { 200 }, open = true, len = 15 },
  { "an Upgrade the handler ignores", crlf "GET /demo HTTP/1.1\nHost: t\nConnection: Upgrade\nUpgrade: WebSocket\n\n", { 200 }, open = true },
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
