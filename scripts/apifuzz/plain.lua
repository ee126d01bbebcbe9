-- scripts/apifuzz/plain.lua: every function of the fdpool module called with a matrix of bad arguments in plain Lua (no pool). Usage: LUA_CPATH=build/?.so lua5.4 scripts/apifuzz/plain.lua [NAME]
local f = require "fdpool"
local evil_mt = { __index = function() error("idx") end, __tostring = function() error("ts") end,
  __len = function() error("len") end, __eq = function() error("eq") end,
  __call = function() error("call") end, __name = "evil", __close = function() error("cl") end,
  __lt = function() error("lt") end, __concat = function() error("cc") end }
local evil = setmetatable({}, evil_mt)
local strmeta = setmetatable({}, { __tostring = function() return "127.0.0.1:1" end })
local a, b = f.socketpair()
local BAD = { nil, true, false, 0, -1, 1, 2^31, 2^32+1, 2^53, math.maxinteger, math.mininteger,
  0/0, 1/0, -1/0, -0.0, 1.5, -1e300, 2^63, "", "\0", "a\0b", ("x"):rep(70000), "-1", "1e400", "0x7fffffffffffffff",
  {}, { 1, 2 }, evil, strmeta, print, coroutine.create(print), io.stdout, a }
local NB = 35
local only = arg[1]
local skip = { log_file = true, control = true, sleep = true }
local names = {}
for k, v in pairs(f) do if type(v) == "function" then names[#names+1] = k end end
for k, v in pairs(f.timer) do if type(v) == "function" then names[#names+1] = "timer." .. k end end
table.sort(names)
local function get(n) if n:sub(1,6) == "timer." then return f.timer[n:sub(7)] end return f[n] end
local count = 0
for _, n in ipairs(names) do
  if (not only or only == n) and not skip[n] then
    io.stderr:write(n, "\n")
    local fn = get(n)
    -- 0..2 args from the full matrix, 3rd arg from a smaller set
    pcall(fn)
    for i = 1, NB do
      pcall(fn, BAD[i]); count = count + 1
      for j = 1, NB do
        local ok, r = pcall(fn, BAD[i], BAD[j]); count = count + 1
        if ok and type(r) == "userdata" then pcall(function() r:close() end) end
        for k = 1, NB, 3 do
          local ok2, r2 = pcall(fn, BAD[i], BAD[j], BAD[k]); count = count + 1
          if ok2 and type(r2) == "userdata" then pcall(function() r2:close() end) end
        end
      end
    end
    collectgarbage()
  end
end
print("calls", count)
