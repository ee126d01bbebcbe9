-- tests/client_cases.lua: HTTP/1.x response framing cases for
-- fdpool.http.client (RFC 9112 4, 6, 7; llhttp's strict answers where
-- RFC 9112 lets a client choose, except bare LF line ends, which a client
-- MAY take and fdpool.http.client does), as a table. Used by
-- tests/85-httpclient-corpus_spec.lua, whose upstream
-- (tests/fixtures/http_rawreply.lua) answers GET /cN with case N's bytes
-- as they are, then closes when the case says close (else it waits for
-- the next request on the connection).
--
-- A case: { name, raw response bytes, close = the upstream closes after
-- them, method = the request's (GET by default), want = { status, body,
-- headers = fields res.headers must hold } (what request() returns) or
-- err = the error it returns }. After each case the spec makes one more
-- request (GET /ok, answered "ok") through the same keep-alive pool: it
-- must get its own answer, never bytes left over from the case (a
-- response paired with the wrong request); with want.fresh_next on a new
-- connection (the case's was not pooled), with want.reused_next on the
-- case's own (it was); once = the request reached the upstream once.
-- Heads are written with "\n" and sent with CRLF; cases about bare LF or
-- bare CR spell their bytes with raw().

local function crlf(s) return (s:gsub("\n", "\r\n")) end
local function raw(s) return { raw = s } end

local OK = "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"

local cases = {
  -- ---- status lines ----------------------------------------------------
  { "a Content-Length response", crlf(OK), want = { 200, "hi" } },
  { "bare LF line ends (RFC 9112 2.2: a client MAY)", raw "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi", want = { 200, "hi" } },
  { "empty lines before the status line are skipped", crlf("\n\n" .. OK), want = { 200, "hi" } },
  { "HTP/1.1: not HTTP", crlf "HTP/1.1 200 OK\n\n", close = true, err = "bad status line" },
  { "HTTP/01.1: two major digits", crlf "HTTP/01.1 200 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "HTTP/11.1: two major digits", crlf "HTTP/11.1 200 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "HTTP/1.01: two minor digits", crlf "HTTP/1.01 200 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "HTTP/5.6: another major version", crlf "HTTP/5.6 200 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "HTTP/2 without a minor", crlf "HTTP/2 200\nContent-Length: 0\n\n", err = "bad status line" },
  { "a tab after the version", crlf "HTTP/1.1\t200 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "a bare CR, then a tab after the version", crlf "\rHTTP/1.1\t200 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "two spaces before the status code", crlf "HTTP/1.1  200 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "two spaces before the reason: taken", crlf "HTTP/1.1 200  OK\nContent-Length: 2\n\nhi", want = { 200, "hi" } },
  { "a one-digit status code", crlf "HTTP/1.1 2 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "a four-digit status code", crlf "HTTP/1.1 2000 OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "a status code with a letter", crlf "HTTP/1.1 20x OK\nContent-Length: 0\n\n", err = "bad status line" },
  { "status 099", crlf "HTTP/1.1 099 X\nContent-Length: 0\n\n", err = "bad status line" },
  { "no reason and no space after the code", crlf "HTTP/1.1 200\nContent-Length: 2\n\nhi", want = { 200, "hi" } },
  { "an empty reason", crlf "HTTP/1.1 200 \nContent-Length: 2\n\nhi", want = { 200, "hi" } },
  { "obs-text in the reason", crlf "HTTP/1.1 200 \xe2\x9c\x93\nContent-Length: 2\n\nhi", want = { 200, "hi" } },
  { "a NUL in the reason", crlf "HTTP/1.1 200 O\0K\nContent-Length: 2\n\nhi", err = "bad status line" },
  { "400.100: a dot after the code", crlf "HTTP/1.1 400.100 Not Ok\n\nText", close = true, err = "bad status line" },
  { "no status line at all", crlf "Invalid status line\n\n", close = true, err = "bad status line" },
  { "a status line of 70 000 bytes", crlf("HTTP/1.1 200 Ok" .. ("k"):rep(70000) .. "\n\n"), close = true, err = "header too large" },
  { "nothing at all, then close", "", close = true, err = "closed" },
  { "a status line without CRLF, then close", "HTTP/1.1 200 Ok", close = true, err = "closed" },
  { "a head cut short by close", crlf "HTTP/1.1 200 OK\n", close = true, err = "closed" },

  -- ---- header fields ---------------------------------------------------
  { "whitespace before the first header", crlf "HTTP/1.1 200 OK\n Host: foo\nContent-Length: 0\n\n", err = "bad header line" },
  { "obs-fold: one value, the fold a space (RFC 9112 5.2)", crlf "HTTP/1.1 200 OK\nX: a \n \t b\t\nContent-Length: 2\n\nhi", want = { 200, "hi", headers = { x = "a b" } } },
  { "obs-fold of an empty value, and an empty fold", crlf "HTTP/1.1 200 OK\nX:\n b\n \nY: c\n  d\n  e\nContent-Length: 2\n\nhi", want = { 200, "hi", headers = { x = "b", y = "c d e" } } },
  { "obs-fold with a control byte", crlf "HTTP/1.1 200 OK\nX: a\n b\1\nContent-Length: 0\n\n", err = "bad header value" },
  { "a fold before any header", crlf "HTTP/1.1 200 OK\n X: a\nContent-Length: 0\n\n", err = "bad header line" },
  { "headers separated by a bare CR", crlf "HTTP/1.1 200 OK\nFoo: 1\rBar: 2\nContent-Length: 0\n\n", err = "bad header value" },
  { "a NUL in a value", crlf "HTTP/1.1 200 OK\nX: a\0b\nContent-Length: 0\n\n", err = "bad header value" },
  { "a space before the colon", crlf "HTTP/1.1 200 OK\nContent-Length : 2\n\nhi", err = "bad header line" },
  { "a line without colon", crlf "HTTP/1.1 200 OK\nNoColon\nContent-Length: 0\n\n", err = "bad header line" },
  { "an empty header name", crlf "HTTP/1.1 200 OK\n: x\nContent-Length: 0\n\n", err = "bad header line" },
  { "a header line of 70 000 bytes", crlf("HTTP/1.1 200 OK\nX-Foo: bar" .. ("r"):rep(70000) .. "\n\n"), close = true, err = "header too large" },
  { "101 header fields", crlf("HTTP/1.1 200 OK\n" .. ("X-H: foo\n"):rep(101) .. "\n"), close = true, err = "too many headers" },
  { "a 1xx followed by lines without colon", crlf("HTTP/1.1 100 OK\n" .. ("r\n"):rep(200) .. "\n"), close = true, err = "bad header line" },
  { "repeated Set-Cookie lines, joined", crlf "HTTP/1.1 200 OK\nSet-Cookie: a=1; Path=/\nSet-Cookie: b=2\nContent-Length: 2\n\nhi",
    want = { 200, "hi", headers = { ["set-cookie"] = "a=1; Path=/, b=2" } } },

  -- ---- Content-Length --------------------------------------------------
  { "Content-Length with tabs around", raw "HTTP/1.1 200 OK\r\nContent-Length:\t2\t\r\n\r\nhi", want = { 200, "hi" } },
  { "Content-Length with leading zeros", crlf "HTTP/1.1 200 OK\nContent-Length: 005\n\nhello", want = { 200, "hello" } },
  { "Content-Length with 24 leading zeros", crlf("HTTP/1.1 200 OK\nContent-Length: " .. ("0"):rep(24) .. "2\n\nhi"), want = { 200, "hi" } },
  { "two equal Content-Length lines", crlf "HTTP/1.1 200 OK\nContent-Length: 2\nContent-Length: 2\n\nhi", err = "bad response: Content-Length" },
  { "Content-Length: 2, 2", crlf "HTTP/1.1 200 OK\nContent-Length: 2, 2\n\nhi", err = "bad response: Content-Length" },
  { "two different Content-Length lines", crlf "HTTP/1.1 200 OK\nContent-Length: 2\nContent-Length: 3\n\nhi!", err = "bad response: Content-Length" },
  { "Content-Length: +2", crlf "HTTP/1.1 200 OK\nContent-Length: +2\n\nhi", err = "bad response: Content-Length" },
  { "Content-Length: -1", crlf "HTTP/1.1 200 OK\nContent-Length: -1\n\nhi", close = true, err = "bad response: Content-Length" },
  { "an empty Content-Length", crlf "HTTP/1.1 200 OK\nContent-Length:\n\nhi", close = true, err = "bad response: Content-Length" },
  { "Content-Length: 0x2", crlf "HTTP/1.1 200 OK\nContent-Length: 0x2\n\nhi", err = "bad response: Content-Length" },
  { "a 21-digit Content-Length", crlf "HTTP/1.1 200 OK\nContent-Length: 100000000000000000000\n\nhi", err = "bad response: Content-Length" },
  { "Content-Length-X is another field", crlf "HTTP/1.1 200 OK\nContent-Length-X: 0\nTransfer-Encoding: chunked\n\n2\nOK\n0\n\n", want = { 200, "OK" } },
  { "a body longer than its Content-Length: the rest never answers the next request",
    crlf("HTTP/1.1 200 OK\nContent-Length: 2\n\nhiHTTP/1.1 200 OK\nContent-Length: 3\n\nbad"), want = { 200, "hi" } },
  { "a body shorter than its Content-Length, then close", crlf "HTTP/1.1 200 OK\nContent-Length: 10\n\nhi", close = true, err = "closed" },

  -- ---- close-delimited ---------------------------------------------------
  { "no length, Connection: close: read until close", crlf "HTTP/1.1 200 OK\nConnection: close\n\n<a>\n</a>", close = true, want = { 200, "<a>\r\n</a>" } },
  { "no length, keep-alive HTTP/1.1: read until close", crlf "HTTP/1.1 200 OK\n\nuntil close", close = true, want = { 200, "until close" } },
  { "HTTP/1.0 without a length: read until close", crlf "HTTP/1.0 200 OK\n\nold", close = true, want = { 200, "old" } },
  { "404 without fields or body, then close", crlf "HTTP/1.1 404 Not Found\n\n", close = true, want = { 404, "" } },
  { "HTTP/0.9 in a status line", crlf "HTTP/0.9 200 OK\n\n", close = true, err = "bad status line" },
  { "HTTP/1.0 204 with keep-alive", crlf "HTTP/1.0 204 No content\nConnection: keep-alive\n\n", want = { 204, "" } },
  { "301 with no reason, then close", crlf "HTTP/1.1 301\n\n", close = true, want = { 301, "" } },
  { "Content-Length: 0", crlf "HTTP/1.1 200 OK\nContent-Length: 0\n\n", want = { 200, "" } },
  { "keep-alive, then close on a second Connection line: not reused", crlf "HTTP/1.1 200 OK\nContent-Length: 2\nConnection: keep-alive\nConnection: close\n\nhi",
    want = { 200, "hi", fresh_next = true } },
  { "Connection: closed is not close: reused", crlf "HTTP/1.1 200 OK\nContent-Length: 2\nConnection: closed\n\nhi", want = { 200, "hi", reused_next = true } },
  { "HTTP/1.0, Connection: keep-alive-x is not keep-alive", crlf "HTTP/1.0 200 OK\nContent-Length: 2\nConnection: keep-alive-x\n\nhi", want = { 200, "hi", fresh_next = true } },
  { "Connection: close and a body longer than Content-Length", crlf "HTTP/1.1 200 OK\nContent-Length: 5\nConnection: close\n\n2ad731e3-4dcd",
    want = { 200, "2ad73", fresh_next = true } },
  { "Connection: upgrade on a 200 without a length: read until close", crlf "HTTP/1.1 200 OK\nConnection: upgrade\nUpgrade: h2c\n\nbody", close = true, want = { 200, "body" } },
  -- Transfer-Encoding in HTTP/1.0 is faulty framing (RFC 9112 6.3): with
  -- a Content-Length too it is refused (Go's client drops the coding and
  -- takes the length); alone, a coding not chunked is read until close
  { "HTTP/1.0, TE: bogus, no length: read until close", crlf "HTTP/1.0 200 OK\nTransfer-Encoding: bogus\n\nBody here\n", close = true, want = { 200, "Body here\r\n" } },
  { "HTTP/1.0, TE: bogus and Content-Length", crlf "HTTP/1.0 200 OK\nTransfer-Encoding: bogus\nContent-Length: 10\n\nBody here\n", err = "bad response: Transfer-Encoding and Content-Length" },
  { "HTTP/1.0 keep-alive with a length", crlf "HTTP/1.0 200 OK\nConnection: keep-alive\nContent-Length: 2\n\nhi", want = { 200, "hi" } },

  -- ---- Transfer-Encoding -------------------------------------------------
  { "Transfer-Encoding and Content-Length", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Length: 2\n\n0\n\n", err = "bad response: Transfer-Encoding and Content-Length" },
  { "an empty Transfer-Encoding and Content-Length", crlf "HTTP/1.1 200 OK\nTransfer-Encoding:\nContent-Length: 5\n\nhello", err = "bad response: Transfer-Encoding and Content-Length" },
  { "an empty Transfer-Encoding alone (as llhttp)", crlf "HTTP/1.1 200 OK\nTransfer-Encoding:\n\nhello", close = true, err = "bad response: Transfer-Encoding" },
  { "chunked, deflate: chunked not last, read until close", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked, deflate\n\nWorld", close = true, want = { 200, "World" } },
  { "chunked, then identity on a second line: read until close", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nTransfer-Encoding: identity\n\nWorld", close = true, want = { 200, "World" } },
  { "chunkedchunked is not chunked: read until close", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunkedchunked\n\n2\nOK\n0\n\n", close = true, want = { 200, "2\r\nOK\r\n0\r\n\r\n" } },
  { "chunked, (an empty element last): read until close", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked,\n\n2\nOK\n0\n\n", close = true, want = { 200, "2\r\nOK\r\n0\r\n\r\n" } },
  { "HTTP/1.0 chunked keep-alive: decoded, the connection not reused (RFC 9112 6.3)",
    crlf "HTTP/1.0 200 OK\nConnection: keep-alive\nTransfer-Encoding: chunked\n\n2\nhi\n0\n\n", want = { 200, "hi", fresh_next = true } },

  -- ---- chunked bodies ------------------------------------------------------
  { "chunk extensions", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5;ilovew3;somuchlove=aretheseparametersfor\nhello\n6;blahblah;blah\n world\n0\n\n", want = { 200, "hello world" } },
  { "a quoted chunk extension with ; inside", crlf 'HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5;a="I love; ext";b=c\nhello\n0\n\n', want = { 200, "hello" } },
  { "trailers", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n0\nX-T: 1\n\n", want = { 200, "hello" } },
  { "junk after the chunk size without ;", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2 erfrferferf\naa\n0 rrrr\n\n", err = "bad chunk size" },
  { "; without an extension", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2;\naa\n0\n\n", err = "bad chunk extension" },
  { "an unterminated quoted extension", crlf 'HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5;a="abc";b="def; ghi\nhello\n0\n\n', err = "bad chunk extension" },
  { "blanks after the chunk size", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5  \nhello\n0\n\n", err = "bad chunk size" },
  { "a 17-digit chunk size", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n10000000000000005\nhello\n0\n\n", err = "bad chunk size" },
  { "bare LF in the chunked body", raw "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", err = "bad chunk size" },
  { "no last chunk, then close", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n", close = true, err = "closed" },
  { "no final CRLF after the last chunk, then close", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n0\n", close = true, err = "closed" },
  -- a 65 537-digit chunk size of leading zeros: over 16 digits is refused
  -- whatever their value (as Go; llhttp takes leading zeros)
  { "65 536 leading zeros in a chunk size", crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n" .. ("0"):rep(65536) .. "a\nhello worl\n0\n\n"), err = "bad chunk size" },
  { "a chunk size that is not hex", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nfoo\n", close = true, err = "bad chunk size" },

  -- ---- bodiless responses, 1xx -------------------------------------------
  -- a 101 ends the HTTP exchange: returned with no body, the connection
  -- never pooled (the bytes after it are another protocol's)
  { "101 with Upgrade and Content-Length", crlf "HTTP/1.1 101 Switching Protocols\nUpgrade: h2c\nConnection: Upgrade\nContent-Length: 4\n\nbody",
    want = { 101, "", fresh_next = true } },
  { "100 Continue, then the 200", crlf("HTTP/1.1 100 Continue\n\n" .. OK), want = { 200, "hi" } },
  { "103 with fields, then the 200", crlf("HTTP/1.1 103 Early Hints\nLink: </s.css>; rel=preload\n\n" .. OK), want = { 200, "hi" } },
  { "three 1xx, then the 200", crlf("HTTP/1.1 100 Continue\n\nHTTP/1.1 102 Processing\n\nHTTP/1.1 103 Early Hints\n\n" .. OK), want = { 200, "hi" } },
  { "a 1xx's Content-Length means no body", crlf("HTTP/1.1 100 Continue\nContent-Length: 5\n\n" .. OK), want = { 200, "hi" } },
  -- a reused connection that fails after an interim answer is no idle
  -- connection the upstream closed: the request is not sent again
  { "100 Continue, then close", crlf "HTTP/1.1 100 Continue\n\n", close = true, err = "closed", once = true },
  { "100 Continue, then a 204", crlf "HTTP/1.1 100 Continue\n\nHTTP/1.1 204 No Content\n\n", want = { 204, "" } },
  { "204 with a Content-Length has no body", crlf "HTTP/1.1 204 No Content\nContent-Length: 5\n\n", want = { 204, "" } },
  { "304 with a Content-Length has no body", crlf "HTTP/1.1 304 Not Modified\nContent-Length: 5\n\n", want = { 304, "" } },
  { "304 with chunked has no body", crlf "HTTP/1.1 304 Not Modified\nTransfer-Encoding: chunked\n\n", want = { 304, "" } },
  { "HEAD: Content-Length but no body", crlf "HTTP/1.1 200 OK\nContent-Length: 5\n\n", method = "HEAD", want = { 200, "" } },
  { "HEAD: chunked but no body", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n", method = "HEAD", want = { 200, "" } },
  -- a server that sends a body where none can be: those bytes are never
  -- read as the next response (the connection is not reused)
  { "HEAD answered with a chunked body anyway", crlf "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\na\nhello worl\n0\n\n", method = "HEAD", want = { 200, "" } },
  { "204 with a body anyway", crlf "HTTP/1.1 204 No Content\nContent-Length: 5\n\nHTTP/1.1 200 OK\nContent-Length: 3\n\nbad", want = { 204, "" } },
}

for _, c in ipairs(cases) do
  if type(c[2]) == "table" then c[2] = c[2].raw end
end

return cases
