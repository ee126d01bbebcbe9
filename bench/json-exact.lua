-- bench/json-exact.lua: fdpool.http.json (exact numbers) against lua-cjson
-- alone, on 100 000 objects. Run from the root: lua5.4 bench/json-exact.lua
package.cpath = "build/?.so;" .. package.cpath
package.path = "lua/?.lua;" .. package.path
local cjson = require "cjson"
local json = require "fdpool.http.json"
local t = {}
for i = 1, 100000 do t[i] = { id = i, name = "item" .. i, price = i / 7, n = i * 3, ok = true, tags = { "a", "b" } } end
local text = cjson.encode(t)
local function bench(name, f, n)
  local t0 = os.clock()
  for _ = 1, n do f() end
  print(("%-28s %7.1f ms"):format(name, (os.clock() - t0) / n * 1000))
end
print(("%d bytes of JSON, 100000 objects"):format(#text))
bench("cjson.decode", function() cjson.decode(text) end, 5)
bench("fdpool.http.json.decode", function() json.decode(text) end, 5)
bench("cjson.encode", function() cjson.encode(t) end, 5)
bench("fdpool.http.json.encode", function() json.encode(t) end, 5)
local t2 = {}
for i = 1, 100000 do t2[i] = { id = i, name = "item" .. i, price = i / 4, tags = { "a", "b" } } end
bench("cjson.encode (exact floats)", function() cjson.encode(t2) end, 5)
bench("fdpool json.encode (same)", function() json.encode(t2) end, 5)
