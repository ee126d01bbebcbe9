-- tests/51-http-framing_spec.lua: RFC 9112 request framing of fdpool.http
-- under the real build/pool, one test per case of tests/framing_cases.lua
-- (raw bytes, the statuses expected in order, whether the connection
-- stays usable: a probe request after them is served or the server has
-- closed; requests smuggled in a bad body must never be answered).
-- bench/framing-vs-nginx.lua plays the same table against nginx.

package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"
local F = require "framing_cases"

describe("fdpool.http framing (tests/fixtures/http_framing.lua)", function()
    local pool

    setup(function()
        pool = H.start_pool({ script = "tests/fixtures/http_framing.lua", workers = 2 })
        assert(pool.addr, "pool did not start: " .. pool:log())
    end)

    teardown(function()
        if pool then pool:stop() end
    end)

    for i, c in ipairs(F.cases) do
        it(("%d: %s -> %s%s"):format(i, c[1], table.concat(c[3], ","),
            c.open and ", stays open" or ", closes"), function()
            local obs = F.run(pool.addr, c)
            local ok, why = F.check(c, obs)
            assert(ok, why)
        end)
    end

    it("has at least 80 cases", function()
        assert.is_true(#F.cases >= 80)
    end)

    it("logs no handler error and no traceback for any case", function()
        local bad = H.unexpected_errors(pool:log(), {})
        assert.same({}, bad)
        assert.is_nil(pool:log():find("traceback", 1, true))
    end)
end)
