-- fdpool.testing.json: the JSON decoder of fdpool.testing (json_decode,
-- for `pool status --json`). Pure Lua.
local M = {}

-- ---- JSON --------------------------------------------------------------

local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
  n = "\n", r = "\r", t = "\t" }

--- Decode a JSON text (for `pool status --json`). `null` becomes nil.
-- @tparam string s
-- @treturn[1] any the value
-- @return[2] nil
-- @treturn[2] string "json: what at position N"
function M.json_decode(s)
  local pos = 1
  local function fail(what) error({ json = ("json: %s at position %d"):format(what, pos) }, 0) end
  local function skip() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    pos = pos + 1
    local parts = {}
    while true do
      local a, b = s:find('^[^"\\\0-\31]+', pos)
      if a then parts[#parts + 1] = s:sub(a, b); pos = b + 1 end
      local c = s:sub(pos, pos)
      if c == '"' then pos = pos + 1; return table.concat(parts) end
      if c ~= "\\" then fail(c == "" and "unterminated string" or "control character in string") end
      local e = s:sub(pos + 1, pos + 1)
      if escapes[e] then
        parts[#parts + 1] = escapes[e]
        pos = pos + 2
      elseif e == "u" then
        local cp = tonumber(s:sub(pos + 2, pos + 5):match("^%x%x%x%x$") or "", 16)
        if not cp then fail("bad \\u escape") end
        pos = pos + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          local lo = s:sub(pos, pos + 1) == "\\u" and tonumber(s:sub(pos + 2, pos + 5):match("^%x%x%x%x$") or "", 16)
          if lo and lo >= 0xDC00 and lo <= 0xDFFF then
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
            pos = pos + 6
          end
        end
        parts[#parts + 1] = utf8.char(cp)
      else
        fail("bad escape")
      end
    end
  end
  function value()
    skip()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      skip()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        skip()
        if s:sub(pos, pos) ~= '"' then fail("expected a string key") end
        local k = str()
        skip()
        if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        t[k] = value()
        skip()
        c = s:sub(pos, pos)
        if c ~= "," and c ~= "}" then fail("expected ',' or '}'") end
        pos = pos + 1
        if c == "}" then return t end
      end
    elseif c == "[" then
      local t, n = {}, 0
      pos = pos + 1
      skip()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        n = n + 1
        t[n] = value()
        skip()
        c = s:sub(pos, pos)
        if c ~= "," and c ~= "]" then fail("expected ',' or ']'") end
        pos = pos + 1
        if c == "]" then return t end
      end
    elseif c == '"' then
      return str()
    elseif s:find("^true", pos) then pos = pos + 4; return true
    elseif s:find("^false", pos) then pos = pos + 5; return false
    elseif s:find("^null", pos) then pos = pos + 4; return nil
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" or num == "-" then fail("unexpected " .. (c == "" and "end" or "'" .. c .. "'")) end
      pos = pos + #num
      local v = tonumber(num)
      if v == nil then fail("bad number") end
      return v
    end
  end
  local ok, v = pcall(function()
    local r = value()
    skip()
    if pos <= #s then fail("trailing characters") end
    return r
  end)
  if ok then return v end
  if type(v) == "table" and v.json then return nil, v.json end
  error(v, 0)
end

return M
