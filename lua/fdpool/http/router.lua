-- fdpool.http.router: routes by method and path for http.serve.
-- r:get/post/put/delete/patch/any(pattern, fn): a pattern's segments are
-- literal, ":name" (one segment, decoded, in req.params.name) or a final
-- "*" (the rest of the path, in req.params["*"]). The first route added
-- that matches wins. No route for the path: 404 (r.not_found(req, res)
-- if set); routes for the path but not the method: 405 with Allow.
-- A router is callable as fn(req, res): http.serve(r).
local form = require "fdpool.http.form"

local M = {}

local Router = {}
Router.__index = Router

local function compile(pattern)
  assert(type(pattern) == "string" and pattern:sub(1, 1) == "/",
    "router: a pattern is a string starting with /")
  local segs = {}
  for seg in pattern:gmatch("[^/]+") do
    if seg == "*" then
      segs[#segs + 1] = { rest = true }
    elseif seg:sub(1, 1) == ":" then
      assert(#seg > 1, "router: a parameter needs a name")
      segs[#segs + 1] = { param = seg:sub(2) }
    else
      segs[#segs + 1] = { lit = seg }
    end
  end
  for i, s in ipairs(segs) do
    assert(not s.rest or i == #segs, "router: * must be the last segment")
  end
  -- "/a/" and "/a" are different paths: keep the final slash.
  return { segs = segs, slash = #pattern > 1 and pattern:sub(-1) == "/" }
end

-- params or nil.
local function match(route, path, parts)
  local segs = route.segs
  local params = {}
  for i, s in ipairs(segs) do
    if s.rest then
      params["*"] = table.concat(parts, "/", i)
      return params
    end
    local p = parts[i]
    if p == nil then return nil end
    if s.lit then
      if s.lit ~= p then return nil end
    else
      params[s.param] = form.urldecode(p, false)
    end
  end
  if #parts ~= #segs then return nil end
  if route.slash ~= (#path > 1 and path:sub(-1) == "/") then return nil end
  return params
end

local function add(self, method, pattern, fn)
  assert(type(fn) == "function" or (type(fn) == "table" and getmetatable(fn)
    and getmetatable(fn).__call), "router: a handler is a function")
  local r = compile(pattern)
  r.method, r.fn, r.pattern = method, fn, pattern
  self.routes[#self.routes + 1] = r
  return self
end

for _, m in ipairs { "get", "post", "put", "delete", "patch", "head", "options" } do
  local M_ = m:upper()
  Router[m] = function(self, pattern, fn) return add(self, M_, pattern, fn) end
end
function Router:any(pattern, fn) return add(self, nil, pattern, fn) end

--- Dispatch req: the matching route's fn(req, res, params) (params also
-- in req.params); returns what it returns.
function Router:__call(req, res)
  local path = req.path
  local parts = {}
  for seg in path:gmatch("[^/]+") do parts[#parts + 1] = seg end
  local allow, seen = {}, {}
  for _, r in ipairs(self.routes) do
    local params = match(r, path, parts)
    if params then
      local m = r.method
      if m == nil or m == req.method or (m == "GET" and req.method == "HEAD") then
        req.params = params
        return r.fn(req, res, params)
      end
      for _, a in ipairs(m == "GET" and { "GET", "HEAD" } or { m }) do
        if not seen[a] then seen[a] = true allow[#allow + 1] = a end
      end
    end
  end
  if #allow > 0 then
    res:status(405):header("Allow", table.concat(allow, ", "))
    return res:send("method not allowed\n")
  end
  if self.not_found then return self.not_found(req, res) end
  res:status(404)
  return res:send("not found\n")
end

--- A new router.
function M.new()
  return setmetatable({ routes = {} }, Router)
end

M.Router = Router

return M
