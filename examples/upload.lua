-- examples/upload.lua DIR: uploads into DIR, two ways.
--   GET /          a form (multipart/form-data; req:form streams each
--                  file to DIR through on_file, never whole in memory)
--   PUT /raw/NAME  the body as is (req:body_reader: Content-Length or
--                  chunked, up to max_upload, past max_body)
-- Also sets and reads a cookie (the last uploader's name). Run:
--   build/pool run examples/upload.lua --listen 127.0.0.1:8080 -- /tmp/up
--   curl -T big.iso localhost:8080/raw/big.iso
local http = require "fdpool.http"

local dir = ... or "/tmp"

local FORM = [[<!doctype html><meta charset="utf-8"><title>upload</title>
<p>%s</p><form method="post" action="/" enctype="multipart/form-data">
<input name="who" placeholder="your name"> <input type="file" name="file" multiple>
<button>upload</button></form>
]]

-- A safe file name: the last path segment, [%w._-] only.
local function safe(name)
  name = (name or ""):match("([^/\\]*)$"):gsub("[^%w%._%-]", "_")
  if name == "" or name:find("^%.") then name = "upload" .. name end
  return name
end

local function page(res, text)
  res:header("Content-Type", "text/html; charset=utf-8")
  return res:send(FORM:format(text))
end

return http.serve(function(req, res)
  if req.path == "/" and req.method == "GET" then
    local who = req:cookies().who
    return page(res, who and ("last uploader: " .. http.urldecode(who)) or "no upload yet")
  elseif req.path == "/" and req.method == "POST" then
    local saved = {}
    local fields, err, status = req:form{ max_parts = 20, max_file = 100 * 1024 * 1024,
      on_file = function(part)
        local name = safe(part.filename)
        local f = assert(io.open(dir .. "/" .. name, "wb"))
        saved[#saved + 1] = name
        return function(chunk)
          if chunk then f:write(chunk) else f:close() end
        end
      end }
    if not fields then
      res:status(status)
      return page(res, "upload refused: " .. err)
    end
    if type(fields.who) == "string" and fields.who ~= "" then
      res:cookie("who", http.urlencode(fields.who), { path = "/", max_age = 86400,
        httponly = true, samesite = "lax" })
    end
    return page(res, "saved: " .. table.concat(saved, ", "))
  elseif req.path:find("^/raw/") and req.method == "PUT" then
    local name = safe(req.path:sub(6))
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    local read, n = req:body_reader(), 0
    while true do
      local chunk, err = read()
      if err then                    -- "too large", "timeout", "closed", "bad ..."
        f:close()
        os.remove(dir .. "/" .. name)
        return err == "too large" and 413 or 400, {}, "upload failed: " .. err .. "\n"
      end
      if not chunk then break end    -- the whole body
      f:write(chunk)
      n = n + #chunk
    end
    f:close()
    return 201, { ["Content-Type"] = "text/plain" }, ("%d bytes in %s\n"):format(n, name)
  end
  return 404, {}, "not found\n"
end, { max_upload = 1024 * 1024 * 1024 })
