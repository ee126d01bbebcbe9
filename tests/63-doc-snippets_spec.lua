-- tests/63-doc-snippets_spec.lua: every ```lua block of README.md and
-- docs/*.md runs as written. An HTML comment right before a block says
-- how (none: run as a plain chunk, which must not raise; a block that
-- calls describe() registers its tests here, as the spec file it comes
-- from):
--   <!-- snippet: handler -->  a handler script: started in the real pool,
--                              which must become ready and log no error
--   <!-- snippet: policy -->   a dispatch policy: fdpool.sim runs it
--   <!-- snippet: program -->  a Lua program (pool:run()): runs under
--                              lua5.4 for 2 s, then SIGTERM; no error
--   <!-- snippet: config -->   a --config file: returns a table
--   <!-- snippet: skip REASON --> not run; the reason is required
package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"
local sim = require "fdpool.sim"

local FILES = { "README.md" }
do
  local p = io.popen("ls docs/*.md")
  for f in p:lines() do FILES[#FILES + 1] = f end
  p:close()
end

-- {file, line, kind, reason, code}
local snippets = {}
for _, file in ipairs(FILES) do
  local doc = assert(H.readfile(file))
  local pos = 1
  while true do
    local a, b, code = doc:find("\n```lua\n(.-)\n```", pos)
    if not a then break end
    pos = b + 1
    local before = doc:sub(1, a)
    local marker = before:match("<!%-%- snippet: ([^>]-) %-%->%s*$")
    local kind, reason = "plain", nil
    if marker then kind, reason = marker:match("^(%S+)%s*(.*)$") end
    if kind == "plain" and code:find("describe(", 1, true) then kind = "busted" end
    local _, line = before:gsub("\n", "")
    snippets[#snippets + 1] = { file = file, line = line + 2, kind = kind,
      reason = reason, code = code }
  end
end

local function name(s) return ("%s:%d (%s)"):format(s.file, s.line, s.kind) end

local function tmpfile(dir, code)
  local path = dir .. "/snippet.lua"
  H.writefile(path, code .. "\n")
  return path
end

describe("doc snippets", function()
  it("are found, each with a known kind", function()
    assert.is_true(#snippets >= 15, "only " .. #snippets .. " snippets")
    local kinds = { plain = true, busted = true, handler = true, policy = true,
      program = true, config = true, skip = true }
    for _, s in ipairs(snippets) do
      assert.truthy(kinds[s.kind], name(s) .. ": unknown kind")
      if s.kind == "skip" then
        assert.truthy(s.reason ~= "", name(s) .. ": skip needs a reason")
      end
    end
  end)

  for _, s in ipairs(snippets) do
    local fn = assert(load(s.code, "=" .. s.file .. ":" .. s.line, "t",
      setmetatable({}, { __index = _ENV })))
    if s.kind == "busted" then
      -- Registers its describe blocks here.
      describe(name(s), function() fn() end)
    elseif s.kind == "plain" then
      it("runs " .. name(s), function() fn() end)
    elseif s.kind == "config" then
      it("runs " .. name(s), function()
        assert.equal("table", type(fn()))
      end)
    elseif s.kind == "policy" then
      it("runs " .. name(s), function()
        local dir = H.tmpdir()
        local r = sim.run{ policy = tmpfile(dir, s.code), workers = 2, capacity = 2,
          arrivals = { { at = 0, hold = 1 }, { at = 0.5, hold = 1 } } }
        assert.equal(0, r.fallbacks)
      end)
    elseif s.kind == "handler" then
      it("runs " .. name(s), function()
        local dir = H.tmpdir()
        local p = H.start_pool{ script = tmpfile(dir, s.code), workers = 1 }
        finally(function() p:stop() end)
        assert.truthy(p.addr, p:log())
        -- An HTTP request; a raw handler answers what it answers (one
        -- that does not read may reset it): the worker must serve it.
        H.http_get(p.addr, "/")
        H.wait_status(p, function(st) return H.sum_workers(st, "served") >= 1 end, 10,
          "the request served")
        assert.equal(0, p:stop())
        assert.same({}, H.unexpected_errors(p:log()))
      end)
    elseif s.kind == "program" then
      it("runs " .. name(s), function()
        local dir = H.tmpdir()
        local path = tmpfile(dir, s.code)
        -- H.run drops LD_PRELOAD: an ASan-built fdpool.so needs it back.
        local preload = ""
        if H.BUILD ~= "build" then
          local _, _, lib = H.run("gcc -print-file-name=libasan.so")
          preload = "LD_PRELOAD=" .. lib:gsub("%s+$", "") .. " "
        end
        local ok, code, out = H.run(("%sLUA_CPATH='./%s/?.so;;' LUA_PATH='./lua/?.lua;;' "
          .. "timeout -s TERM 2 lua5.4 %s 2>&1"):format(preload, H.BUILD, path))
        assert.truthy(ok or code == 124, ("exit %s: %s"):format(code, out))
        assert.falsy(out:find("lua5.4:", 1, true), out)
        assert.falsy(out:find("traceback", 1, true), out)
      end)
    end
  end
end)
