-- bench/drain-rss.lua [MiB [BUILD]]: the worker's peak RSS (VmHWM) after
-- it drains a body its handler did not read, sent with Content-Length
-- and then chunked on one keep-alive connection to /skip of
-- tests/fixtures/http_framing.lua (max_body 2 GiB), followed by a GET
-- that must be served. Default 1024 MiB, BUILD build.
-- Run from the repository root: lua5.4 bench/drain-rss.lua 1024
local mib = tonumber(arg[1]) or 1024
local build = arg[2] or "build"
package.path = "./tests/?.lua;./lua/?.lua;" .. package.path
package.cpath = "./" .. build .. "/?.so;" .. package.cpath
local H = require "helpers"
H.POOL = build .. "/pool"
local fdpool = require "fdpool"

local function hwm(pid)
  local s = H.readfile("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmHWM:%s*(%d+)")) // 1024
end

local pool = H.start_pool({ script = "tests/fixtures/http_framing.lua", workers = 1,
  args = { tostring(2 * 1024 * 1024 * 1024) } })
local wpid = H.children(pool.pid)[1]
local before = hwm(wpid)
local fd = assert(fdpool.connect(pool.addr, 60))
local piece = ("x"):rep(1024 * 1024)
assert(fd:write(("POST /skip HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"):format(mib * 1048576)))
for _ = 1, mib do assert(fd:write(piece)) end
assert(fd:write("POST /skip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"))
local chunk = ("100000\r\n%s\r\n"):format(piece)
for _ = 1, mib do assert(fd:write(chunk)) end
assert(fd:write("0\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
local got = ""
while true do
  local d = fd:read(65536)
  if not d then break end
  got = got .. d
end
local _, n = got:gsub("HTTP/1.1 200", "")
print(("%s: drained 2 x %d MiB (Content-Length, chunked), %d responses, "
  .. "GET /after served: %s; worker VmHWM %d MiB before, %d MiB after"):format(
  build, mib, n, tostring(got:find("GET /after", 1, true) ~= nil), before, hwm(wpid)))
pool:stop()
