-- scripts/apifuzz/cli.lua ADDR LINE...: one connection per LINE ("@" becomes ADDR), read until EOF
local f = require "fdpool"
local addr = arg[1]
for i = 2, #arg do
  local fd = assert(f.connect(addr, 5))
  fd:settimeout(120)
  fd:write(arg[i]:gsub("@", addr, 1) .. "\n")
  local out = fd:read("a")
  print(arg[i], (out or ""):gsub("\n", " | "):sub(1, 300))
  fd:close()
end
