-- tests/85-httpclient-corpus_spec.lua: fdpool.http.client against raw
-- responses, one test per case of tests/client_cases.lua (status lines,
-- header fields, Content-Length forms, close-delimited bodies,
-- Transfer-Encoding forms, chunked bodies, 1xx, HEAD, 204, 304), played
-- by a real pool (tests/fixtures/http_rawreply.lua); the client runs in
-- this process, blocking. After each case one more request through the
-- same keep-alive pool must get its own answer.
local H = require "helpers"
local client = require "fdpool.http.client"
local cases = dofile("tests/client_cases.lua")

describe("fdpool.http.client response framing (tests/client_cases.lua)", function()
  local up, base

  setup(function()
    up = H.start_pool{ script = "tests/fixtures/http_rawreply.lua", workers = 1 }
    assert(up.addr, "pool did not start: " .. up:log())
    base = "http://" .. up.addr
  end)

  teardown(function()
    if up then up:stop() end
  end)

  for i, c in ipairs(cases) do
    local want = c.err and ("nil, " .. c.err) or (c.want[1] .. " " .. ("%q"):format(c.want[2]))
    it(("%d: %s -> %s"):format(i, c[1], want), function()
      local res, err = client.request{ url = base .. "/c" .. i, method = c.method, timeout = 5 }
      if c.err then
        assert.is_nil(res and res.status, "answered " .. tostring(res and res.status))
        assert.equal(c.err, err)
      else
        assert(res, err)
        assert.equal(c.want[1], res.status)
        assert.equal(c.want[2], res.body)
        for k, v in pairs(c.want.headers or {}) do assert.equal(v, res.headers[k]) end
      end
      if c.once then
        local hits = assert(client.request{ url = base .. "/hits/" .. i, timeout = 5 })
        assert.equal("1", hits.body, "the request was sent again")
      end
      local nxt, err2 = client.request{ url = base .. "/ok", timeout = 5 }
      assert(nxt, err2)
      assert.equal(200, nxt.status)
      assert.equal("ok", nxt.body)
      if c.want and c.want.fresh_next then
        assert.equal(0, nxt.reused, "the connection was pooled")
      end
      if c.want and c.want.reused_next then
        assert.is_true(nxt.reused > 0, "the connection was not pooled")
      end
    end)
  end

  it("has at least 60 cases", function()
    assert.is_true(#cases >= 60)
  end)
end)
