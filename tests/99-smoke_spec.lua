local H = require "helpers"
describe("smoke", function()
  it("serves hello", function()
    local p = H.start_pool{}
    finally(function() p:stop() end)
    local r = H.http_get(p.addr)
    assert.matches("hello", r)
    assert.equals(0, p:stop())
  end)
end)
