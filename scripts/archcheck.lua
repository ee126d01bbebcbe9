#!/usr/bin/env lua5.4
-- scripts/archcheck.lua [-v] [--layers FILE] [builddir]: checks that src/ keeps its layers.
-- Reads which object in builddir (default build/) defines and which uses
-- each global symbol (`nm`), and fails (exit 1, one line per problem) on
--   - an object file not in tests/arch_layers.lua,
--   - a use of a symbol defined in a higher layer,
--   - a loop between files (two or more files that use each other),
--   - a src/ file that includes a header of a higher layer,
-- except the "from>to" pairs in the table's allow list.
-- Prints the file graph with -v.
local B, verbose, layers = "build", false, "tests/arch_layers.lua"
local i = 1
while arg[i] do
  if arg[i] == "-v" then verbose = true
  elseif arg[i] == "--layers" then i = i + 1; layers = arg[i]
  else B = arg[i] end
  i = i + 1
end
local T = dofile(layers)

local layer, order = {}, {}
for i, l in ipairs(T.layers) do
  for _, f in ipairs(l.files) do layer[f] = i; order[#order + 1] = f end
end
local allow = {}
for _, e in ipairs(T.allow or {}) do allow[e] = true end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("a"); p:close()
  return s
end

-- Objects: build/*.o minus the test-only ones (test_*.o, fuzz_*.o).
local objs = {}
for o in sh("ls " .. B .. "/*.o 2>/dev/null"):gmatch("[^\n]+") do
  local name = o:match("([^/]+)%.o$")
  if not name:match("^test_") and not name:match("^fuzz_") then
    objs[#objs + 1] = name
  end
end
table.sort(objs)

local problems = {}
local function problem(s) problems[#problems + 1] = s end
if #objs == 0 then problem("no object files in " .. B .. "/") end

local def, uses = {}, {}
for _, o in ipairs(objs) do
  if not layer[o] then problem(o .. ".o is in no layer of tests/arch_layers.lua") end
  uses[o] = {}
  for line in sh("nm -P " .. B .. "/" .. o .. ".o"):gmatch("[^\n]+") do
    local sym, ty = line:match("^(%S+) (%a)")
    if sym then
      if ty == "U" then uses[o][#uses[o] + 1] = sym
      elseif ty:match("[TDBRC]") then def[sym] = o end
    end
  end
end

-- edges[a][b] = the first symbol a uses from b
local edges = {}
for _, o in ipairs(objs) do
  edges[o] = {}
  for _, s in ipairs(uses[o]) do
    local d = def[s]
    if d and d ~= o and not edges[o][d] then edges[o][d] = s end
  end
end

for _, a in ipairs(objs) do
  local ds = {}
  for b in pairs(edges[a]) do ds[#ds + 1] = b end
  table.sort(ds)
  for _, b in ipairs(ds) do
    if verbose then print(("%s -> %s (%s)"):format(a, b, edges[a][b])) end
    if layer[a] and layer[b] and layer[b] > layer[a] and not allow[a .. ">" .. b] then
      problem(("upward: %s (%s) uses %s of %s (%s)"):format(a,
        T.layers[layer[a]].name, edges[a][b], b, T.layers[layer[b]].name))
    end
  end
end

-- Includes: a file (its .c and .h) includes only headers of its own
-- layer or a lower one (fdp.h is ground). Files outside the table
-- (fdfetch.c, a separate program) are not looked at.
if not T.objects_only then
  layer.fdp = layer.fdp or 1
  for f in sh("ls src/*.c src/*.h 2>/dev/null"):gmatch("[^\n]+") do
    local base = f:match("([^/]+)%.[ch]$")
    if layer[base] then
      for inc in io.lines(f) do
        local h = inc:match('^#%s*include%s+"([%w_]+)%.h"')
        if h and layer[h] and layer[h] > layer[base]
           and not allow[base .. ">" .. h] then
          problem(("upward include: %s (%s) includes %s.h (%s)"):format(f,
            T.layers[layer[base]].name, h, T.layers[layer[h]].name))
        end
      end
    end
  end
end

-- Loops: strongly connected components (Tarjan), ignoring allowed edges.
local index, low, onstack, stack, n = {}, {}, {}, {}, 0
local function strong(v)
  n = n + 1; index[v] = n; low[v] = n
  stack[#stack + 1] = v; onstack[v] = true
  for w in pairs(edges[v]) do
    if not allow[v .. ">" .. w] then
      if not index[w] then strong(w); low[v] = math.min(low[v], low[w])
      elseif onstack[w] then low[v] = math.min(low[v], index[w]) end
    end
  end
  if low[v] == index[v] then
    local comp = {}
    repeat
      local w = table.remove(stack); onstack[w] = nil
      comp[#comp + 1] = w
    until w == v
    if #comp > 1 then
      table.sort(comp)
      local detail = {}
      for _, a in ipairs(comp) do
        for _, b in ipairs(comp) do
          if edges[a][b] and not allow[a .. ">" .. b] then
            detail[#detail + 1] = a .. ">" .. b .. " (" .. edges[a][b] .. ")"
          end
        end
      end
      table.sort(detail)
      problem("loop: " .. table.concat(comp, " ") .. ": " .. table.concat(detail, ", "))
    end
  end
end
for _, o in ipairs(objs) do if not index[o] then strong(o) end end

for _, p in ipairs(problems) do print(p) end
if #problems > 0 then os.exit(1) end
print(("architecture: %d files, every arrow down, no loops"):format(#objs))
