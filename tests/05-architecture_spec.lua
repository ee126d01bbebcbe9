-- tests/05-architecture_spec.lua: src/ keeps its layers. scripts/archcheck.lua
-- reads, with nm, which object file defines and which uses each symbol and
-- fails on a use that runs up the layer order of tests/arch_layers.lua (the
-- table docs/ARCHITECTURE.md shows) or on a loop between files. The checker
-- is itself checked on small objects built here with a known upward call,
-- a known loop and a file in no layer.
local H = require "helpers"

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

-- Build object files in a temp dir from { name = "C source" }.
local function objects(srcs)
  local dir = H.tmpdir()
  for name, src in pairs(srcs) do
    local f = assert(io.open(dir .. "/" .. name .. ".c", "w"))
    f:write(src); f:close()
    local code, out = run(("cc -c -o %s/%s.o %s/%s.c"):format(dir, name, dir, name))
    assert(code == 0, out)
  end
  return dir
end

local function layers_file(dir, allow)
  local f = assert(io.open(dir .. "/layers.lua", "w"))
  f:write([[return { layers = {
    { name = "ground", files = { "log", "loop" } },
    { name = "master", files = { "pool", "control" } } },
    allow = { ]] .. (allow or "") .. [[ }, objects_only = true }]])
  f:close()
  return dir .. "/layers.lua"
end

describe("architecture", function()
  it("every arrow between the files of " .. H.BUILD .. "/ points down, with no loop", function()
    local code, out = run("lua5.4 scripts/archcheck.lua " .. H.BUILD)
    assert.equal(0, code, out)
    assert.matches("every arrow down, no loops", out)
  end)

  it("the layer table lists exactly the files docs/ARCHITECTURE.md lists", function()
    local T = dofile("tests/arch_layers.lua")
    local doc = H.readfile("docs/ARCHITECTURE.md")
    for _, l in ipairs(T.layers) do
      for _, f in ipairs(l.files) do
        local known = H.readfile("src/" .. f .. ".c") ~= nil or f == "embed"
        if known then
          assert.truthy(doc:find("`src/" .. f .. ".c`", 1, true)
                        or doc:find("`" .. f .. "`", 1, true),
                        f .. " missing from docs/ARCHITECTURE.md")
        end
      end
    end
  end)

  it("the checker fails on an upward use, naming both files", function()
    local dir = objects{
      log = "int fdp_log_x(void); int fdp_pool_x(void);\n"
         .. "int fdp_log_x(void) { return fdp_pool_x(); }\n",
      pool = "int fdp_pool_x(void); int fdp_pool_x(void) { return 1; }\n",
    }
    local code, out = run(("lua5.4 scripts/archcheck.lua --layers %s %s")
                          :format(layers_file(dir), dir))
    assert.is_not.equal(0, code)
    assert.matches("upward: log %(ground%) uses fdp_pool_x of pool %(master%)", out)
  end)

  it("the checker fails on a loop within one layer, and the allow list lifts it", function()
    local dir = objects{
      pool = "int fdp_pool_x(void); int fdp_ctl_x(void);\n"
          .. "int fdp_pool_x(void) { return fdp_ctl_x(); }\n",
      control = "int fdp_pool_x(void); int fdp_ctl_x(void);\n"
             .. "int fdp_ctl_x(void) { return fdp_pool_x(); }\n",
    }
    local code, out = run(("lua5.4 scripts/archcheck.lua --layers %s %s")
                          :format(layers_file(dir), dir))
    assert.is_not.equal(0, code)
    assert.matches("loop: control pool", out)
    code, out = run(("lua5.4 scripts/archcheck.lua --layers %s %s")
                    :format(layers_file(dir, '"pool>control"'), dir))
    assert.equal(0, code, out)
  end)

  it("the checker fails on an object file in no layer", function()
    local dir = objects{ stray = "int fdp_stray(void); int fdp_stray(void) { return 0; }\n" }
    local code, out = run(("lua5.4 scripts/archcheck.lua --layers %s %s")
                          :format(layers_file(dir), dir))
    assert.is_not.equal(0, code)
    assert.matches("stray.o is in no layer", out)
  end)
end)
