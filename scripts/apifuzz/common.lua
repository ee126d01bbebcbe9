-- scripts/apifuzz/common.lua: what worker_conn.lua and worker_http.lua
-- fuzz with (loaded with dofile from the script's own directory): hostile
-- values (evil raises in every metamethod, yielder yields in them), the
-- argument lists, and call/fuzz, which count calls and Lua errors.
local fdpool = require "fdpool"

local M = { count = 0, errs = 0 }

M.evil = setmetatable({}, { __index = function() error("idx") end,
  __tostring = function() error("ts") end, __len = function() error("len") end,
  __eq = function() error("eq") end, __call = function() error("call") end,
  __name = "evil", __close = function() error("cl") end,
  __lt = function() error("lt") end, __concat = function() error("cc") end,
  __pairs = function() error("pairs") end })
M.yielder = setmetatable({}, { __tostring = function() fdpool.sleep(0.001); return "5" end,
  __index = function() fdpool.sleep(0.001); return 1 end,
  __len = function() fdpool.sleep(0) return 3 end,
  __pairs = function() fdpool.sleep(0) return next, {} end })

-- A list of n values (nil among them: its length is n, not #t).
local function list(n, ...)
  return { ... }, n
end

-- The bad arguments every function gets, then the caller's own; their
-- count second.
function M.bad(...)
  local more = table.pack(...)
  local t, n = list(32, nil, true, false, 0, -1, 1, 2^31, 2^32 + 1, 2^53,
    math.maxinteger, math.mininteger, 0/0, 1/0, -1/0, -0.0, 1.5, -1e300, 2^63,
    "", "\0", "a\0b", ("x"):rep(70000), "-1", "1e400", "0x7fffffffffffffff",
    {}, { 1, 2 }, M.evil, M.yielder, function() end, coroutine.create(print),
    io.stdout)
  for i = 1, more.n do t[n + i] = more[i] end
  return t, n + more.n
end

-- The second arguments of a shallow fuzz, then the caller's own.
function M.small(...)
  local more = table.pack(...)
  local t, n = list(13, nil, -1, 0, 0/0, 1/0, math.mininteger, math.maxinteger,
    "", "\0", {}, M.evil, M.yielder, function() end)
  for i = 1, more.n do t[n + i] = more[i] end
  return t, n + more.n
end

function M.call(fn, ...)
  M.count = M.count + 1
  local ok, e = pcall(fn, ...)
  if not ok then M.errs = M.errs + 1 end
  return ok, e
end

-- fuzz one method, obj:fn(bad...), with BAD (NB values) and SMALL (NS);
-- reset runs before each call; deep: three arguments, not two.
function M.fuzzer(BAD, NB, SMALL, NS)
  local call = M.call
  return function(obj, fn, reset, deep)
    reset = reset or function() end
    reset(); call(fn, obj)
    for i = 1, NB do
      reset(); call(fn, obj, BAD[i])
      for j = 1, (deep and NB or NS) do
        reset(); call(fn, obj, BAD[i], deep and BAD[j] or SMALL[j])
        if deep then for k = 1, NS, 2 do reset(); call(fn, obj, BAD[i], BAD[j], SMALL[k]) end end
      end
    end
    -- the wrong self
    for i = 1, NB do call(fn, BAD[i]); call(fn, BAD[i], 1, 2) end
  end
end

return M
