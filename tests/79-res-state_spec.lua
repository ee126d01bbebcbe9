-- tests/79-res-state_spec.lua: res:send keeps a res's sent state in its
-- metatable (Res -> ResStarted -> ResSent, lua/fdpool/http.lua) instead
-- of three new fields, for the res conn:httploop makes; any other res
-- gets the fields. What a handler sees must not change: res.started and
-- res.finished before and after res:send, the errors of a second send or
-- a header after it, its own fields on res, a method added to res's
-- metatable, a send refused for a bad header (started, head not sent:
-- a raise then still gets a 500), a raise after a send (no second
-- answer). The same handler runs in the real pool (C loop, the swap) and
-- on fdpool.testing's in-memory conn (Lua loop, fields): equal answers.
local testing = require "fdpool.testing"
local H = require "helpers"

local APP = [=[
local http = require "fdpool.http"

local function state(res)
  return ("started=%s finished=%s head_sent=%s"):format(tostring(res.started),
    tostring(res.finished), tostring(res._head_sent))
end

local last = "none"
return http.serve(function(req, res)
  local p = req.path
  if p == "/state" then
    local before = state(res)
    res.mine = "own"                          -- the handler's own field
    res:header("Content-Type", "text/plain")
    local ok = res:send("x")
    local r1 = table.pack(pcall(res.send, res, "again"))
    local r2 = table.pack(pcall(res.header, res, "X-Late", "1"))
    local r3 = table.pack(pcall(res.status, res, 500))
    res.after = "set after"
    last = table.concat({ "before: " .. before, "after: " .. state(res),
      "ok=" .. tostring(ok), "mine=" .. tostring(res.mine),
      "after=" .. tostring(res.after),
      "send again: " .. tostring(r1[1]) .. " " .. tostring(r1[2]):gsub("^[^:]*:%d+: ", ""),
      "header after: " .. tostring(r2[1]) .. " " .. tostring(r2[2]):gsub("^[^:]*:%d+: ", ""),
      "status after: " .. tostring(r3[1]) .. " " .. tostring(r3[2]):gsub("^[^:]*:%d+: ", ""),
      "method after: " .. tostring(res.probe and res:probe()),
    }, "\n")
  elseif p == "/addmethod" then
    -- a method added to the metatable res has before its send
    getmetatable(res).__index.probe = function() return "probe" end
    res:send("added\n")
  elseif p == "/badheader" then
    res:header("X-Bad", "a\nb")
    local ok, err = pcall(res.send, res, "never")
    last = "bad send: " .. tostring(ok) .. " " .. tostring(err):gsub("^[^:]*:%d+: ", "")
      .. "\n" .. state(res)
    error("raised after a refused send")
  elseif p == "/badheader_caught" then
    -- the refused send's error caught, and the handler returns
    res:header("X-Bad", "a\nb")
    local ok = pcall(res.send, res, "never")
    last = "caught send: " .. tostring(ok) .. " " .. state(res)
  elseif p == "/badwrite_caught" then
    -- the same through res:write, and values returned after it
    res:header("X-Bad", "a\rb")
    local ok = pcall(res.write, res, "never")
    last = "caught write: " .. tostring(ok) .. " started=" .. tostring(res.started)
    return 200, {}, "not sent either\n"
  elseif p:match("^/ret/") then
    -- what a handler returns (conn loop: the C reply; in-memory: Lua's)
    local k = p:sub(6)
    -- (one key per table: pairs' order differs from one Lua state to another)
    if k == "int" then return 404, { ["X-L"] = { "a", "b" } }, "nf\n"
    elseif k == "numbody" then return 200, nil, 3.5
    elseif k == "nilbody" then return 204
    elseif k == "strstatus" then return "201", {}, "s\n"
    elseif k == "floatstatus" then return 202.0, {}, "f\n"
    elseif k == "badfloat" then return 202.5, {}, "x\n"
    elseif k == "pairs" then
      return 200, setmetatable({}, { __pairs = function()
        return next, { ["X-P"] = "via __pairs" }, nil end }), "p\n"
    elseif k == "info" then return 103, {}, "early\n"
    elseif k == "range" then return 1000, {}, "x\n"
    elseif k == "boolbody" then return 200, {}, true
    elseif k == "strheaders" then return 200, "text"
    elseif k == "afterstatus" then res:status(201); return 202, {}, "after status\n"
    elseif k == "started" then res:send("sent first\n"); return 500, {}, "ignored\n"
    elseif k == "headerset" then res:header("X-Mine", "m"); return 200, { ["x-mine"] = "replaced" }, "h\n"
    end
  elseif p == "/raiseafter" then
    res:send("sent\n")
    error("raised after the response")
  elseif p == "/returned" then
    local ok = res:status(201):send("first\n")
    last = "returned: " .. state(res) .. " ok=" .. tostring(ok)
    return 404, {}, "ignored\n"                   -- started: not sent
  elseif p == "/last" then
    return 200, { ["Content-Type"] = "text/plain" }, last .. "\n"
  else
    res:send(state(res) .. "\n")
  end
end)
]=]

describe("res's sent state", function()
  local dir, app, pool

  setup(function()
    dir = H.tmpdir()
    local path = H.writefile(dir .. "/app.lua", APP)
    app = dofile(path)
    pool = assert(testing.start{ script = path, workers = 1, pool = H.POOL })
  end)

  teardown(function()
    if pool then pool:stop() end
  end)

  local function req(path, close)
    return ("GET %s HTTP/1.1\r\nHost: h\r\n%s\r\n"):format(path,
      close and "Connection: close\r\n" or "")
  end

  -- Both answers (in-memory Lua loop, real pool) to bytes, Date lines
  -- removed; the in-memory run first, each on its own app state.
  local function both(bytes)
    local mem = testing.run(app, { input = bytes }):gsub("Date: [^\r\n]*\r\n", "")
    local real = assert(pool:request(bytes)):gsub("Date: [^\r\n]*\r\n", "")
    return mem, real
  end

  it("reads as documented before and after res:send, with the handler's own fields", function()
    -- (the method added on an earlier request of the same process)
    local bytes = req("/addmethod") .. req("/state") .. req("/last", true)
    local mem, real = both(bytes)
    assert.equal(mem, real)
    assert.matches("before: started=false finished=false head_sent=nil\n"
      .. "after: started=true finished=true head_sent=true\nok=true\n"
      .. "mine=own\nafter=set after\n"
      .. "send again: false response already started\n"
      .. "header after: false response already started\n"
      .. "status after: false response already started\n"
      .. "method after: probe\n", real, 1, true)
  end)

  it("is the same for every keep-alive request on a connection", function()
    local bytes = req("/") .. req("/") .. req("/", true)
    local mem, real = both(bytes)
    assert.equal(mem, real)
    local n = 0
    for _ in real:gmatch("started=false finished=false head_sent=nil\n") do n = n + 1 end
    assert.equal(3, n)
  end)

  it("after a send refused for a bad header: started, head not sent, 500 on a raise", function()
    local mem, real = both(req("/badheader"))
    assert.equal(mem, real)
    assert.matches("^HTTP/1.1 500 ", real)
    local _, last = both(req("/last", true))
    assert.matches("bad send: false invalid response header 'X-Bad'", last, 1, true)
    assert.matches("\nstarted=true finished=true head_sent=nil\n", last, 1, true)
  end)

  it("a refused send or write whose error the handler caught: 500, closed, never a silent hang", function()
    -- (before: the loop took the response for sent and waited for the
    -- next request while the client waited for this one's answer)
    for _, path in ipairs { "/badheader_caught", "/badwrite_caught" } do
      local mem, real = both(req(path) .. req("/"))
      assert.equal(mem, real)
      assert.matches("^HTTP/1.1 500 ", real)
      assert.matches("\r\nConnection: close\r\n", real)
      assert.equal(1, select(2, real:gsub("HTTP/1.1 ", "")), real)
      assert.equal(1, select(2, mem:gsub("HTTP/1.1 ", "")), mem)
    end
    local _, last = both(req("/last", true))
    assert.matches("caught write: false started=true", last, 1, true)
    local log = pool:log()
    assert.matches("http handler error (GET /badheader_caught): the response was started but nothing of it was sent", log, 1, true)
  end)

  it("what a handler returns is sent alike by the conn loop (C) and the in-memory loop (Lua)", function()
    local want = {
      int = { "404", "nf\n" }, numbody = { "200", "3.5" }, nilbody = { "204", "" },
      strstatus = { "201", "s\n" }, floatstatus = { "202", "f\n" },
      badfloat = { "500" }, pairs = { "200", "p\n" }, info = { "500" }, range = { "500" },
      boolbody = { "500" }, strheaders = { "500" }, afterstatus = { "202", "after status\n" },
      started = { "200", "sent first\n" }, headerset = { "200", "h\n" },
    }
    for k, w in pairs(want) do
      local mem, real = both(req("/ret/" .. k, true))
      assert.equal(mem, real, k)
      assert.matches("^HTTP/1.1 " .. w[1] .. " ", real, nil, k)
      if w[2] then assert.equal(w[2], real:match("\r\n\r\n(.*)$"), k) end
      assert.equal(1, select(2, real:gsub("HTTP/1.1 ", "")), k)
      if k == "int" then
        assert.matches("\r\nX%-L: a\r\nX%-L: b\r\n", real)
      elseif k == "pairs" then
        assert.matches("\r\nX%-P: via __pairs\r\n", real)
      elseif k == "headerset" then
        assert.matches("\r\nx%-mine: replaced\r\n", real)
        assert.not_matches("X%-Mine: m", real)
      end
    end
    local log = pool:log()
    assert.matches("handler returned number as the status", log, 1, true)
    assert.matches("status 103 is informational", log, 1, true)
    assert.matches("handler returned a boolean as the body", log, 1, true)
    assert.matches("handler returned a string as the headers", log, 1, true)
  end)

  it("a raise after the response sent: no second answer", function()
    local mem, real = both(req("/raiseafter") .. req("/", true))
    assert.equal(mem, real)
    assert.equal("sent\n", real:match("\r\n\r\n(.*)$"))
    local n = select(2, real:gsub("HTTP/1.1 ", ""))
    assert.equal(1, n)
  end)

  it("values returned after the handler sent are not sent", function()
    local mem, real = both(req("/returned") .. req("/last", true))
    assert.equal(mem, real)
    assert.matches("^HTTP/1.1 201 ", real)
    assert.matches("returned: started=true finished=true head_sent=true ok=true", real, 1, true)
    assert.is_nil(real:find("ignored", 1, true))
  end)
end)
