-- fdpool.http.json: JSON for handlers (res:json, req:json) on lua-cjson
-- (Debian's lua-cjson, "Provides: lua5.4-cjson"), wrapped for Lua 5.4:
-- cjson 2.1.0 decodes every number as a float (10000 -> 10000.0,
-- 2^53 + 1 -> 2^53) and encodes with 14 significant digits (1/3 ->
-- 0.33333333333333). Here integer literals decode as integers (exactly,
-- within 64 bits), and numbers encode exactly: integers as integers,
-- floats with the fewest digits (up to 17) that read back the same.
-- Strings must be UTF-8 both ways (JSON text is, RFC 8259 8.1).
local fdpool = require "fdpool"
local cjson = require "cjson"

local M = {}

-- cjson.null, for JSON null inside arrays and objects.
M.null = cjson.null

-- The marker: 0xFF never occurs in UTF-8, and both directions check
-- their strings are UTF-8, so a marked string is always ours.
local MARK = "\255"

local function utf8_ok(s)
  return fdpool.utf8_check(s) == 0
end

-- Copy v with every number replaced by MARK .. its exact text.
local function mark(v, depth)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then return MARK .. ("%d"):format(v) end
    if v ~= v or v == math.huge or v == -math.huge then
      error("json: cannot encode " .. tostring(v), 0)
    end
    local s
    for p = 15, 17 do
      s = ("%." .. p .. "g"):format(v)
      if tonumber(s) == v then break end
    end
    return MARK .. s
  elseif t == "string" then
    if not utf8_ok(v) then error("json: cannot encode a string that is not UTF-8", 0) end
    return v
  elseif t == "table" then
    if depth > 1000 then error("json: nested too deep (a cycle?)", 0) end
    local c = {}
    for k, x in pairs(v) do
      if type(k) == "string" and not utf8_ok(k) then
        error("json: cannot encode a key that is not UTF-8", 0)
      end
      c[k] = mark(x, depth + 1)
    end
    return c
  end
  return v
end

-- An error as "what went wrong": no position prefix, no "json: ".
local function clean(e)
  e = tostring(e):gsub("^[^:]*:%d+: ", ""):gsub("^json: ", "")
  return (e:gsub("^%u", string.lower))
end

-- Does v hold a number lua-cjson would not write exactly (it writes
-- %.14g), or a string that is not UTF-8? Then mark() it; else cjson can
-- take v as it is. (Raises for a cycle, as mark.)
local function needs_mark(v, depth)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then return v >= 1e14 or v <= -1e14 end
    return v ~= v or tonumber(("%.14g"):format(v)) ~= v
  elseif t == "string" then
    return not utf8_ok(v)
  elseif t == "table" then
    if depth > 1000 then error("json: nested too deep (a cycle?)", 0) end
    for k, x in pairs(v) do
      if (type(k) == "string" and not utf8_ok(k)) or needs_mark(x, depth + 1) then
        return true
      end
    end
  end
  return false
end

--- Encode a value (tables, strings, numbers, booleans, json.null).
-- @treturn[1] string the JSON text
-- @return[2] nil
-- @treturn[2] string why (a function, NaN, a string not UTF-8, a cycle...)
function M.encode(v)
  local ok, r, marked = pcall(function()
    if not needs_mark(v, 0) then return cjson.encode(v), false end
    return cjson.encode(mark(v, 0)), true
  end)
  if not ok then return nil, clean(r) end
  if not marked then return r end
  return (r:gsub('"\255([^"]*)"', "%1"))
end

local function unmark(v)
  if type(v) == "string" then
    if v:byte(1) == 255 then
      local d = v:sub(2)
      return math.tointeger(tonumber(d)) or tonumber(d)
    end
  elseif type(v) == "table" then
    for k, x in pairs(v) do v[k] = unmark(x) end
  end
  return v
end

--- Decode JSON text: integers as Lua integers (floats beyond 64 bits),
-- other numbers as floats read exactly, null as json.null.
-- @treturn[1] any the value
-- @return[2] nil
-- @treturn[2] string why
function M.decode(s)
  if type(s) ~= "string" then return nil, "expected a string, got " .. type(s) end
  if not utf8_ok(s) then return nil, "not UTF-8" end
  -- Integer literals outside strings become marked strings (in C).
  local text, n, at = fdpool.json_mark(s)
  if not text then return nil, ("%s at character %d"):format(n, at) end
  local ok, v = pcall(cjson.decode, text)
  if not ok then return nil, clean(v) end
  if n > 0 then v = unmark(v) end
  return v
end

return M
