-- examples/spec/fileserver_spec.lua: the seed's file server
-- (examples/fileserver.lua) on an in-memory conn. Its top level takes
-- the directory as `...`, so the spec loads it with loadfile and passes
-- one; conn:sendfile appends the file's bytes to conn:output().
local testing = require "fdpool.testing"

describe("examples/fileserver.lua", function()
  local dir, handle

  setup(function()
    local p = io.popen("mktemp -d /tmp/fileserver-spec.XXXXXX")
    dir = p:read("l")
    p:close()
    local f = assert(io.open(dir .. "/a.txt", "wb"))
    f:write("0123456789")
    f:close()
    handle = assert(loadfile("examples/fileserver.lua"))(dir)
  end)

  teardown(function()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("sends the whole file after an OK line", function()
    local output = testing.run(handle, { input = "GET a.txt\n" })
    assert.equal("OK 10\n0123456789", output)
  end)

  it("resumes from an offset", function()
    local output, conn = testing.run(handle, { input = "GET a.txt 4\n" })
    assert.equal("OK 10\n456789", output)
    assert.is_true(conn.closed)
  end)

  it("refuses names that escape the directory", function()
    local output = testing.run(handle, { input = "GET ../etc/passwd\n" })
    assert.equal("ERR name escapes the directory\n", output)
  end)

  it("says so when the client sends nothing in time", function()
    local output = testing.run(handle, { input = "", timeout_after_input = true })
    assert.equal("ERR request timeout\n", output)
  end)
end)
