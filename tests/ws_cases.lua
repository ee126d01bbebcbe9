-- tests/ws_cases.lua: a WebSocket server corpus after the Autobahn|
-- Testsuite's fuzzingclient (sections 1-7, 9, 12/13) and the opening
-- handshake of RFC 6455 4.2, run by tests/89-ws-corpus_spec.lua against
-- build/pool serving tests/fixtures/ws_echo.lua (an echo server).
--
-- frames: each case's client frames, in order. A frame is
--   { kind, data [, opts] }   kind "text", "binary", "continuation",
--   "ping", "pong", "close" or an opcode number; data a string (for
--   "close" also { code [, reason] }); opts as fdpool.testing.ws_frame's:
--   fin (default true), rsv (bits: 4 RSV1, 2 RSV2, 1 RSV3), length (the
--   length claimed, when it lies), mask (default true)
-- or a raw string of bytes. All are written at once, or in writes of
-- `chunk` bytes (1: byte by byte).
-- expect: the server's frames, in order, and then the TCP connection
-- must be closed by the server (a FIN, not a reset), with nothing more:
--   { "text"|"binary"|"pong", data }  an echo / a pong with this payload
--   { "close", code }                 a close frame with this code
--   { "close" }                       a close frame without a payload,
--                                     or with 1000 (the echo of an
--                                     empty close)
-- path: the endpoint (default "/echo": max_payload 1 MiB, the module's
-- default; "/big": 8 MiB). heavy: megabytes sent; the normal pass only.
-- headers: more handshake headers (the 101 is still expected).
-- with_request: the frames go in the same write as the upgrade request.
--
-- Decisions (RFC 6455 and IANA's registry, where Autobahn is older):
-- close codes 1012-1014 are registered (service restart, try again
-- later, bad gateway) and echoed; 1015 (TLS handshake) and 1016 are not
-- to be sent in a frame: 1002. A frame after the client's close is
-- ignored. permessage-deflate is not negotiated (no
-- Sec-WebSocket-Extensions in the 101), so RSV1 is a protocol error.
local M = {}

local function text(n)
  return ("*"):rep(n)
end

local function bin(n)
  local t = {}
  for i = 1, math.min(n, 256) do t[i] = string.char((i - 1) % 256) end
  local block = table.concat(t)
  return block:rep(n // 256) .. block:sub(1, n % 256)
end

local function rep(k, x)
  local t = {}
  for i = 1, k do t[i] = x end
  return t
end

-- The frames of a message cut into pieces of n bytes.
local function fragments(kind, data, n)
  local t, i = {}, 1
  repeat
    local piece = data:sub(i, i + n - 1)
    i = i + n
    t[#t + 1] = { #t == 0 and kind or "continuation", piece, { fin = i > #data } }
  until i > #data
  return t
end

local function concat(...)
  local t = {}
  for _, list in ipairs { ... } do
    for _, x in ipairs(list) do t[#t + 1] = x end
  end
  return t
end

local BYE = { "close", { 1000 } }
local BYE_ECHO = { "close", 1000 }

local cases = {}
M.frames = cases
local function case(t) cases[#cases + 1] = t end

-- An echo case: the frames, then a close 1000, and the echoes expected
-- before the close's echo.
local function echo(section, name, frames, expect, extra)
  local t = { section = section, name = name, frames = concat(frames, { BYE }),
    expect = concat(expect, { BYE_ECHO }) }
  for k, v in pairs(extra or {}) do t[k] = v end
  case(t)
end

local function fail(section, name, frames, expect, code, extra)
  local t = { section = section, name = name, frames = frames,
    expect = concat(expect, { { "close", code } }) }
  for k, v in pairs(extra or {}) do t[k] = v end
  case(t)
end

---- 1 framing: lengths 7-bit, 16-bit and 64-bit, echoed exactly --------
for _, kind in ipairs { "text", "binary" } do
  for _, n in ipairs { 0, 125, 126, 127, 128, 65535, 65536 } do
    local data = kind == "text" and text(n) or bin(n)
    echo(1, ("%s message of %d bytes"):format(kind, n), { { kind, data } }, { { kind, data } })
  end
end
echo(1, "text of 126 bytes in 1-byte TCP chunks", { { "text", text(126) } },
  { { "text", text(126) } }, { chunk = 1 })
echo(1, "binary of 65536 bytes in 1-byte TCP chunks of its head, then 997-byte ones",
  { { "binary", bin(65536) } }, { { "binary", bin(65536) } }, { chunk = 997 })
echo(1, "binary of 127 bytes in 1-byte TCP chunks", { { "binary", bin(127) } },
  { { "binary", bin(127) } }, { chunk = 1 })
echo(1, "three messages in one write", { { "text", "a" }, { "binary", "\0" }, { "text", "" } },
  { { "text", "a" }, { "binary", "\0" }, { "text", "" } })

fail(1, "an unmasked client frame", { { "text", "Hello", { mask = false } } }, {}, 1002)
echo(1, "frames in the same write as the upgrade request", { { "text", "early" }, { "ping", "p" } },
  { { "text", "early" }, { "pong", "p" } }, { with_request = true })

---- 2 ping/pong --------------------------------------------------------
echo(2, "ping without payload", { { "ping", "" } }, { { "pong", "" } })
echo(2, "ping with a text payload", { { "ping", "Hello, world!" } }, { { "pong", "Hello, world!" } })
echo(2, "ping with a binary payload", { { "ping", "\0\255\254\253\252\251\0\255" } },
  { { "pong", "\0\255\254\253\252\251\0\255" } })
echo(2, "ping with 125 bytes", { { "ping", bin(125) } }, { { "pong", bin(125) } })
fail(2, "ping with 126 bytes", { { "ping", bin(126) } }, {}, 1002)
echo(2, "ping with 125 bytes in 1-byte TCP chunks", { { "ping", bin(125) } },
  { { "pong", bin(125) } }, { chunk = 1 })
echo(2, "unsolicited pong without payload: ignored", { { "pong", "" } }, {})
echo(2, "unsolicited pong with payload: ignored", { { "pong", "unsolicited pong payload" } }, {})
echo(2, "unsolicited pong, then a ping: only the ping answered",
  { { "pong", "unsolicited" }, { "ping", "ping payload" } }, { { "pong", "ping payload" } })
do
  local pings, pongs = {}, {}
  for i = 1, 10 do
    pings[i] = { "ping", "payload-" .. i }
    pongs[i] = { "pong", "payload-" .. i }
  end
  echo(2, "10 pings in a row, all answered", pings, pongs)
  echo(2, "10 pings in a row in 1-byte TCP chunks, all answered", pings, pongs, { chunk = 1 })
end

---- 3 reserved bits (no extension negotiated) ---------------------------
fail(3, "text with RSV3", { { "text", "Hello", { rsv = 1 } } }, {}, 1002)
fail(3, "a valid text, then text with RSV2, then a ping: the first echoed",
  { { "text", "Hello" }, { "text", "Hello", { rsv = 2 } }, { "ping", "" } },
  { { "text", "Hello" } }, 1002)
fail(3, "the same in 1-byte TCP chunks",
  { { "text", "Hello" }, { "text", "Hello", { rsv = 3 } }, { "ping", "" } },
  { { "text", "Hello" } }, 1002, { chunk = 1 })
fail(3, "binary with RSV1", { { "binary", "\0\1\2", { rsv = 4 } } }, {}, 1002)
fail(3, "ping with RSV1 and RSV3", { { "ping", "Hello", { rsv = 5 } } }, {}, 1002)
fail(3, "close with RSV1 and RSV2", { { "close", { 1000 }, { rsv = 6 } } }, {}, 1002)
fail(3, "text with all three", { { "text", "Hello", { rsv = 7 } } }, {}, 1002)
fail(3, "an empty continuation with RSV2 inside a message",
  { { "text", "a", { fin = false } }, { "continuation", "", { rsv = 2 } } }, {}, 1002)

---- 4 reserved opcodes ---------------------------------------------------
for _, op in ipairs { 3, 4, 5, 6, 7, 11, 12, 13, 14, 15 } do
  fail(4, ("reserved opcode %d"):format(op), { { op, "" } }, {}, 1002)
  fail(4, ("a valid text, reserved opcode %d with payload, a ping"):format(op),
    { { "text", "reserved" }, { op, "reserved opcode payload" }, { "ping", "" } },
    { { "text", "reserved" } }, 1002)
end

---- 5 fragmentation -------------------------------------------------------
fail(5, "ping with FIN 0", { { "ping", "fragment1", { fin = false } },
  { "continuation", "fragment2" } }, {}, 1002)
fail(5, "pong with FIN 0", { { "pong", "fragment1", { fin = false } },
  { "continuation", "fragment2" } }, {}, 1002)
fail(5, "close with FIN 0", { { "close", { 1000 }, { fin = false } } }, {}, 1002)
echo(5, "text in 2 fragments: one message",
  { { "text", "fragment1", { fin = false } }, { "continuation", "fragment2" } },
  { { "text", "fragment1fragment2" } })
echo(5, "text in 2 fragments in 1-byte TCP chunks",
  { { "text", "fragment1", { fin = false } }, { "continuation", "fragment2" } },
  { { "text", "fragment1fragment2" } }, { chunk = 1 })
echo(5, "binary in 2 fragments",
  { { "binary", "\1\2", { fin = false } }, { "continuation", "\3" } }, { { "binary", "\1\2\3" } })
echo(5, "a ping between fragments: answered, then the message",
  { { "text", "fragment1", { fin = false } }, { "ping", "pong me" }, { "continuation", "fragment2" } },
  { { "pong", "pong me" }, { "text", "fragment1fragment2" } })
echo(5, "a ping between fragments, 1-byte TCP chunks",
  { { "text", "fragment1", { fin = false } }, { "ping", "pong me" }, { "continuation", "fragment2" } },
  { { "pong", "pong me" }, { "text", "fragment1fragment2" } }, { chunk = 1 })
echo(5, "an unsolicited pong between fragments: ignored",
  { { "text", "fragment1", { fin = false } }, { "pong", "x" }, { "continuation", "fragment2" } },
  { { "text", "fragment1fragment2" } })
echo(5, "five fragments with two pings between them",
  { { "text", "f1", { fin = false } }, { "continuation", "f2", { fin = false } }, { "ping", "p1" },
    { "continuation", "f3", { fin = false } }, { "ping", "p2" },
    { "continuation", "f4", { fin = false } }, { "continuation", "f5" } },
  { { "pong", "p1" }, { "pong", "p2" }, { "text", "f1f2f3f4f5" } })
fail(5, "a continuation (FIN 1) without a message",
  { { "continuation", "non-continuation payload" }, { "text", "Hello, world!" } }, {}, 1002)
fail(5, "a continuation (FIN 0) without a message",
  { { "continuation", "fragment1", { fin = false } }, { "continuation", "fragment2" } }, {}, 1002)
fail(5, "a continuation (FIN 1) without a message, then a text",
  { { "continuation", "fragment1" }, { "text", "fragment2", { fin = false } },
    { "continuation", "fragment3" } }, {}, 1002)
fail(5, "a fragmented message, then a continuation (FIN 0) with nothing to continue, then a text",
  { { "text", "fragment1", { fin = false } }, { "continuation", "fragment2" },
    { "continuation", "fragment3", { fin = false } }, { "text", "fragment4" } },
  { { "text", "fragment1fragment2" } }, 1002)
fail(5, "a new text start while a text is open",
  { { "text", "fragment1", { fin = false } }, { "text", "fragment2" } }, {}, 1002)
fail(5, "a new binary start while a text is open",
  { { "text", "fragment1", { fin = false } }, { "binary", "fragment2", { fin = false } },
    { "continuation", "x" } }, {}, 1002)
fail(5, "a complete message, then a continuation",
  { { "text", "whole" }, { "continuation", "more" } }, { { "text", "whole" } }, 1002)
echo(5, "empty fragments: an empty text message",
  { { "text", "", { fin = false } }, { "continuation", "", { fin = false } },
    { "continuation", "" } }, { { "text", "" } })
echo(5, "empty first and last fragments around a payload",
  { { "text", "", { fin = false } }, { "continuation", "middle", { fin = false } },
    { "continuation", "" } }, { { "text", "middle" } })
echo(5, "binary of empty fragments", { { "binary", "", { fin = false } }, { "continuation", "" } },
  { { "binary", "" } })
echo(5, "a text in 1-byte fragments", fragments("text", "Hello-fragments", 1),
  { { "text", "Hello-fragments" } })
case { section = 5, name = "a close between fragments: the close echoed",
  frames = { { "text", "fragment1", { fin = false } }, BYE }, expect = { BYE_ECHO } }

---- 6 UTF-8 ------------------------------------------------------------------
local valid = {
  { "an empty text", "" },
  { "Hello-µ@ßöäüàá-UTF-8!!", "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!" },
  { "κόσμε", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" },
  { "U+0000", "\0" },
  { "U+0080 (first 2-byte)", "\xc2\x80" },
  { "U+0800 (first 3-byte)", "\xe0\xa0\x80" },
  { "U+10000 (first 4-byte)", "\xf0\x90\x80\x80" },
  { "U+007F", "\x7f" },
  { "U+07FF", "\xdf\xbf" },
  { "U+FFFF", "\xef\xbf\xbf" },
  { "U+D7FF (below the surrogates)", "\xed\x9f\xbf" },
  { "U+E000 (above the surrogates)", "\xee\x80\x80" },
  { "U+FFFD", "\xef\xbf\xbd" },
  { "U+10FFFF (the last)", "\xf4\x8f\xbf\xbf" },
  { "U+FFFE and U+FFFF (noncharacters are valid)", "\xef\xbf\xbe\xef\xbf\xbf" },
  { "an emoji", "\xf0\x9f\x98\x80 \xf0\x9f\x91\x8d" },
}
for _, v in ipairs(valid) do
  echo(6, "valid UTF-8: " .. v[1], { { "text", v[2] } }, { { "text", v[2] } })
end
local function split_case(name, s, n, chunk)
  echo(6, name, fragments("text", s, n), { { "text", s } }, { chunk = chunk })
end
split_case("κόσμε in 1-byte fragments (split inside each character)",
  "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 1)
split_case("κόσμε in 2-byte fragments, 1-byte TCP chunks",
  "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 2, 1)
split_case("a 4-byte character in 1-byte fragments", "a\xf0\x90\x80\x80b", 1)
split_case("a 4-byte character cut 3+1 across fragments", "\xf0\x9f\x98\x80", 3)
split_case("Hello-µ@ßöäüàá-UTF-8!! in 3-byte fragments",
  "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!", 3)

local invalid = {
  { "overlong / (2 bytes)", "\xc0\xaf" },
  { "overlong / (3 bytes)", "\xe0\x80\xaf" },
  { "overlong / (4 bytes)", "\xf0\x80\x80\xaf" },
  { "overlong / (5 bytes)", "\xf8\x80\x80\x80\xaf" },
  { "overlong U+007F", "\xc1\xbf" },
  { "overlong U+07FF", "\xe0\x9f\xbf" },
  { "overlong U+FFFF", "\xf0\x8f\xbf\xbf" },
  { "overlong NUL", "\xc0\x80" },
  { "surrogate U+D800", "\xed\xa0\x80" },
  { "surrogate U+DBFF", "\xed\xaf\xbf" },
  { "surrogate U+DC00", "\xed\xb0\x80" },
  { "surrogate U+DFFF", "\xed\xbf\xbf" },
  { "a surrogate pair U+D800 U+DC00", "\xed\xa0\x80\xed\xb0\x80" },
  { "κόσμε then a surrogate then text", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited" },
  { "U+110000 (past U+10FFFF)", "\xf4\x90\x80\x80" },
  { "a 0xF5 lead", "\xf5\x80\x80\x80" },
  { "a 0xF7 lead (U+1FFFFF)", "\xf7\xbf\xbf\xbf" },
  { "a 0xF8 lead", "\xf8\x88\x80\x80\x80" },
  { "a 0xFC lead", "\xfc\x84\x80\x80\x80\x80" },
  { "a lone 0xFE", "\xfe" },
  { "a lone 0xFF", "\xff" },
  { "0xFE 0xFE 0xFF 0xFF", "\xfe\xfe\xff\xff" },
  { "a lone 0xC0", "\xc0" },
  { "a lone 0xC1 in text", "a\xc1b" },
  { "a lone continuation 0x80", "\x80" },
  { "a lone continuation 0xBF", "a\xbfb" },
  { "two continuations", "\x80\xbf" },
  { "a 2-byte lead then a space", "\xc2 " },
  { "a 3-byte lead then a space", "\xe0\xa0 " },
  { "a 4-byte lead then a space", "\xf0\x90\x80 " },
  { "truncated at the end: 2-byte", "abc\xce" },
  { "truncated at the end: 3-byte", "abc\xe1\xbd" },
  { "truncated at the end: 4-byte", "abc\xf0\x9f\x98" },
  { "all 32 2-byte leads then spaces", (function()
      local t = {}
      for c = 0xc0, 0xdf do t[#t + 1] = string.char(c) .. " " end
      return table.concat(t)
    end)() },
}
for _, v in ipairs(invalid) do
  fail(6, "invalid UTF-8: " .. v[1], { { "text", v[2] } }, {}, 1007)
end
fail(6, "invalid UTF-8 in 1-byte fragments (surrogate)",
  fragments("text", "\xce\xba\xed\xa0\x80edited", 1), {}, 1007)
fail(6, "fail fast: invalid UTF-8 in a first fragment, the rest never sent",
  { { "text", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", { fin = false } } }, {}, 1007)
fail(6, "fail fast: a valid fragment, then an invalid one, the rest never sent",
  { { "text", "\xce\xba\xe1\xbd\xb9", { fin = false } },
    { "continuation", "\xcf\x83\xf4\x90\x80\x80", { fin = false } } }, {}, 1007)
fail(6, "fail fast: invalid in the middle of a single frame sent in 1-byte TCP chunks",
  { { "text", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64" } },
  {}, 1007, { chunk = 1 })
fail(6, "fail fast inside a frame: its first 20 bytes (of 100) invalid, the rest never sent",
  { { "text", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited" .. text(80), { cut = 20 } } },
  {}, 1007)
fail(6, "fail fast inside a frame: a 64 KiB frame, invalid at its start, 1 KiB sent",
  { { "text", "\xc0\xaf" .. text(65534), { cut = 1024 } } }, {}, 1007)
fail(6, "a fragmented text ending inside a character",
  { { "text", "ab\xe1", { fin = false } }, { "continuation", "\xbd" } }, {}, 1007)
for _, v in ipairs { invalid[1], invalid[9], invalid[15], invalid[21], invalid[31] } do
  echo(6, "binary is never UTF-8-checked: " .. v[1], { { "binary", v[2] } }, { { "binary", v[2] } })
end
echo(6, "binary in fragments with bytes invalid as UTF-8",
  { { "binary", "\xff\xed", { fin = false } }, { "continuation", "\xa0\x80" } },
  { { "binary", "\xff\xed\xa0\x80" } })

---- 7 close ---------------------------------------------------------------------
echo(7, "a text, then the close", { { "text", "Hello World!" } }, { { "text", "Hello World!" } })
case { section = 7, name = "two closes: one echo", frames = { BYE, BYE }, expect = { BYE_ECHO } }
case { section = 7, name = "a ping after the close: ignored", frames = { BYE, { "ping", "x" } },
  expect = { BYE_ECHO } }
case { section = 7, name = "a text after the close: ignored",
  frames = { BYE, { "text", "after close" } }, expect = { BYE_ECHO } }
case { section = 7, name = "a fragment, the close, the rest: only the close echoed",
  frames = { { "text", "fragment1", { fin = false } }, BYE, { "continuation", "fragment2" } },
  expect = { BYE_ECHO } }
case { section = 7, name = "a 256 KiB text, the close, a ping: the text echoed, then the close",
  frames = { { "text", text(256 * 1024) }, BYE, { "ping", "x" } },
  expect = { { "text", text(256 * 1024) }, BYE_ECHO } }
case { section = 7, name = "a 256 KiB binary after the close: ignored, the close still arrives",
  frames = { BYE, { "binary", bin(256 * 1024) } }, expect = { BYE_ECHO } }
case { section = 7, name = "a close without payload: a close back",
  frames = { { "close", "" } }, expect = { { "close" } } }
fail(7, "a close with 1 byte of payload", { { "close", "a" } }, {}, 1002)
case { section = 7, name = "close 1000 with no reason",
  frames = { { "close", { 1000 } } }, expect = { { "close", 1000 } } }
case { section = 7, name = "close 1000 with a reason",
  frames = { { "close", { 1000, "Hello World!" } } }, expect = { { "close", 1000 } } }
case { section = 7, name = "close 1000 with a 123-byte reason (payload 125)",
  frames = { { "close", { 1000, text(123) } } }, expect = { { "close", 1000 } } }
case { section = 7, name = "close 1000 with a UTF-8 reason",
  frames = { { "close", { 1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" } } },
  expect = { { "close", 1000 } } }
fail(7, "close 1000 with a 124-byte reason (payload 126)", { { "close", { 1000, text(124) } } }, {}, 1002)
fail(7, "a close reason with invalid UTF-8",
  { { "close", { 1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64" } } },
  {}, 1007)
fail(7, "a close reason truncated inside a character", { { "close", { 1000, "ab\xce" } } }, {}, 1007)
M.valid_close_codes = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
  3000, 3999, 4000, 4999 }
for _, code in ipairs(M.valid_close_codes) do
  case { section = 7, name = ("close code %d: echoed"):format(code),
    frames = { { "close", { code, "reason" } } }, expect = { { "close", code } } }
end
M.invalid_close_codes = { 0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535 }
for _, code in ipairs(M.invalid_close_codes) do
  fail(7, ("close code %d: a protocol error"):format(code), { { "close", { code } } }, {}, 1002)
end

---- 9 limits (max_payload: 1 MiB by default) ------------------------------------
local MiB = 1024 * 1024
echo(9, "a text of exactly max_payload (1 MiB)", { { "text", text(MiB) } }, { { "text", text(MiB) } },
  { heavy = true })
fail(9, "a binary of max_payload + 1 bytes", { { "binary", bin(MiB + 1) } }, {}, 1009,
  { heavy = true })
fail(9, "a message of 17 fragments of 64 KiB (max_payload + 64 KiB)",
  fragments("binary", bin(MiB + 65536), 65536), {}, 1009, { heavy = true })
fail(9, "a frame claiming 2^40 bytes (its head only): failed before the payload",
  { { "binary", "", { length = 1 << 40 } } }, {}, 1009)
fail(9, "a frame claiming 2^63 - 1 bytes", { { "text", "", { length = math.maxinteger } } }, {}, 1009)
fail(9, "a 64-bit length with its high bit set", { { "binary", "", { length = math.mininteger } } },
  {}, 1002)
echo(9, "4 MiB of text in 64 KiB fragments (max_payload 8 MiB)",
  fragments("text", text(4 * MiB), 65536), { { "text", text(4 * MiB) } },
  { heavy = true, path = "/big" })
echo(9, "4 MiB of binary in one frame (max_payload 8 MiB)",
  { { "binary", bin(4 * MiB) } }, { { "binary", bin(4 * MiB) } }, { heavy = true, path = "/big" })

do
  local msgs = {}
  for i = 1, 1000 do msgs[i] = { i % 2 == 0 and "text" or "binary", i % 3 == 0 and "" or tostring(i) } end
  echo(9, "1000 small messages in one write, echoed in order", msgs, msgs)
end

---- 12/13 permessage-deflate offered -------------------------------------------
for _, offer in ipairs {
  "permessage-deflate",
  "permessage-deflate; client_max_window_bits",
  "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
  "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=15",
} do
  echo(12, "permessage-deflate offered (" .. offer .. "): not accepted, plain echo",
    { { "text", "Hello" } }, { { "text", "Hello" } },
    { headers = { ["Sec-WebSocket-Extensions"] = offer }, no_extensions = true })
  -- "Hello" compressed as permessage-deflate would (RFC 7692 7.2.3.1).
  fail(12, "permessage-deflate offered (" .. offer .. "), then an RSV1 frame",
    { { "text", "\xf2\x48\xcd\xc9\xc9\x07\x00", { rsv = 4 } } }, {}, 1002,
    { headers = { ["Sec-WebSocket-Extensions"] = offer }, no_extensions = true })
end

---- the opening handshake (RFC 6455 4.2.1, 4.2.2) --------------------------------
-- headers: replaces the client's defaults (Upgrade: websocket,
-- Connection: Upgrade, Sec-WebSocket-Key: the RFC's sample key,
-- Sec-WebSocket-Version: 13); false removes one. status: the answer;
-- 101 is then checked as an echo of one text message.
M.handshakes = {
  { name = "the RFC's sample request", status = 101 },
  { name = "no Sec-WebSocket-Key", headers = { ["Sec-WebSocket-Key"] = false }, status = 400 },
  { name = "an empty Sec-WebSocket-Key", headers = { ["Sec-WebSocket-Key"] = "" }, status = 400 },
  { name = "a Sec-WebSocket-Key not base64", headers = { ["Sec-WebSocket-Key"] = "not base64 at all!!!!!==" },
    status = 400 },
  { name = "a Sec-WebSocket-Key of 15 bytes", headers = { ["Sec-WebSocket-Key"] = "AAECAwQFBgcICQoLDA0O" },
    status = 400 },
  { name = "a Sec-WebSocket-Key of 17 bytes", headers = { ["Sec-WebSocket-Key"] = "AAECAwQFBgcICQoLDA0ODxA=" },
    status = 400 },
  { name = "a Sec-WebSocket-Key of 16 bytes unpadded", headers = { ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ" },
    status = 400 },
  { name = "another valid Sec-WebSocket-Key", headers = { ["Sec-WebSocket-Key"] = "AAECAwQFBgcICQoLDA0ODw==" },
    status = 101, accept = "Bz3qJYTGdOe8gUSpLosEdiLKDrk=" },
  { name = "Sec-WebSocket-Version 8", headers = { ["Sec-WebSocket-Version"] = "8" }, status = 426 },
  { name = "Sec-WebSocket-Version 14", headers = { ["Sec-WebSocket-Version"] = "14" }, status = 426 },
  { name = "no Sec-WebSocket-Version", headers = { ["Sec-WebSocket-Version"] = false }, status = 426 },
  { name = "no Upgrade", headers = { Upgrade = false }, status = 400 },
  { name = "Upgrade: h2c", headers = { Upgrade = "h2c" }, status = 400 },
  { name = "no Connection", headers = { Connection = false }, status = 400 },
  { name = "Connection: keep-alive", headers = { Connection = "keep-alive" }, status = 400 },
  { name = "Connection: keep-alive, Upgrade (a token list)",
    headers = { Connection = "keep-alive, Upgrade" }, status = 101 },
  { name = "Connection: upgrade (any case)", headers = { Connection = "upgrade" }, status = 101 },
  { name = "Upgrade: WebSocket (any case)", headers = { Upgrade = "WebSocket" }, status = 101 },
  { name = "Upgrade: a token list naming websocket", headers = { Upgrade = "foo/1, websocket" },
    status = 101 },
  { name = "POST instead of GET", method = "POST", headers = { ["Content-Length"] = "0" }, status = 400 },
  { name = "HEAD instead of GET", method = "HEAD", status = 400 },
  { name = "HTTP/1.0", version = "1.0", status = 400 },
  { name = "no Host", headers = { Host = false }, status = 400 },
  { name = "two Sec-WebSocket-Key headers",
    headers = { ["Sec-WebSocket-Key"] = { "dGhlIHNhbXBsZSBub25jZQ==", "AAECAwQFBgcICQoLDA0ODw==" } },
    status = 400 },
  { name = "a subprotocol offered to a server that speaks none: none chosen",
    headers = { ["Sec-WebSocket-Protocol"] = "chat, superchat" }, status = 101 },
}

return M
