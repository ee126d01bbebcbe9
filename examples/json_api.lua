-- examples/json_api.lua: a small JSON API with fdpool.http's router.
--   GET /items, POST /items ({"name": ...}), GET/PUT/DELETE /items/:id,
--   GET /search?q=...&tag=a&tag=b (repeated keys arrive as a list).
-- Items live in each worker's memory (run one worker to see one list):
--   build/pool run examples/json_api.lua --listen 127.0.0.1:8080 --workers 1
--   curl -d '{"name":"pen","price":1.5}' localhost:8080/items
local http = require "fdpool.http"

local items, next_id = {}, 1
local r = http.router()

r:get("/items", function(_, res)
  local list = {}
  for id = 1, next_id - 1 do list[#list + 1] = items[id] end
  return res:json(list)
end)

r:post("/items", function(req, res)
  local v, err = req:json()
  if type(v) ~= "table" or type(v.name) ~= "string" then
    return res:json({ error = err or "expected {\"name\": ...}" }, 400)
  end
  local item = { id = next_id, name = v.name, price = v.price }
  items[next_id], next_id = item, next_id + 1
  res:header("Location", "/items/" .. item.id)
  return res:json(item, 201)
end)

local function find(params)
  return items[math.tointeger(tonumber(params.id)) or -1]
end

r:get("/items/:id", function(_, res, params)
  local item = find(params)
  if not item then return res:json({ error = "no such item" }, 404) end
  return res:json(item)
end)

r:put("/items/:id", function(req, res, params)
  local item, v = find(params), req:json()
  if not item then return res:json({ error = "no such item" }, 404) end
  if type(v) ~= "table" then return res:json({ error = "expected an object" }, 400) end
  item.name, item.price = v.name or item.name, v.price or item.price
  return res:json(item)
end)

r:delete("/items/:id", function(_, res, params)
  local item = find(params)
  if not item then return res:json({ error = "no such item" }, 404) end
  items[item.id] = nil
  return 204
end)

r:get("/search", function(req, res)
  local args = req:args()
  local tags = args.tag
  if type(tags) == "string" then tags = { tags } end
  return res:json({ q = args.q or "", tags = tags or {} })
end)

r.not_found = function(_, res) return res:json({ error = "no such route" }, 404) end

return http.serve(r)
