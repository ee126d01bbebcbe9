-- bench/ws-bytes.lua: the C helpers under fdpool.http.websocket against
-- plain Lua: unmasking (fdpool.ws_mask) and UTF-8 checking
-- (fdpool.utf8_check). Run from the root: lua5.4 bench/ws-bytes.lua
package.cpath = "build/?.so;" .. package.cpath
package.path = "lua/?.lua;" .. package.path
local fdpool = require "fdpool"
local data = ("0123456789abcdef"):rep(1 << 20)  -- 16 MiB
local t0 = os.clock()
for _ = 1, 10 do fdpool.ws_mask(data, "\1\2\3\4") end
local c = (os.clock() - t0) / 10
local small = data:sub(1, 1 << 20)
local out = {}
t0 = os.clock()
local key = "\1\2\3\4"
for i = 1, #small do out[i] = string.char(small:byte(i) ~ key:byte((i - 1) % 4 + 1)) end
local _ = table.concat(out)
local l = (os.clock() - t0)
print(("ws_mask (C): %.1f ms per 16 MiB (%.0f MiB/s); Lua byte loop: %.0f ms per 1 MiB (%.1f MiB/s)"):format(c * 1000, 16 / c, l * 1000, 1 / l))
local t = ("é"):rep(8 << 20)
t0 = os.clock()
for _ = 1, 10 do fdpool.utf8_check(t) end
c = (os.clock() - t0) / 10
print(("utf8_check (C): %.1f ms per 16 MiB of 2-byte characters (%.0f MiB/s)"):format(c * 1000, 16 / c))
