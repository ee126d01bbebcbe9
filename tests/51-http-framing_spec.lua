-- tests/51-http-framing_spec.lua: RFC 9112 request framing of fdpool.http
-- under the real build/pool, one test per case of tests/framing_cases.lua
-- (raw bytes, the statuses expected in order, whether the connection
-- stays usable: a probe request after them is served or the server has
-- closed; requests smuggled in a bad body must never be answered).
-- bench/framing-vs-nginx.lua plays the same table against nginx.

package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"
local F = require "framing_cases"
local fdpool = require "fdpool"

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

describe("fdpool.http drain (max_body 256 MiB, one worker)", function()
    local pool

    setup(function()
        pool = H.start_pool({ script = "tests/fixtures/http_framing.lua", workers = 1,
            args = { tostring(256 * 1024 * 1024) } })
        assert(pool.addr, "pool did not start: " .. pool:log())
    end)

    teardown(function()
        if pool then pool:stop() end
    end)

    local function hwm_mib(pid)
        local s = assert(H.readfile("/proc/" .. pid .. "/status"))
        return tonumber(s:match("VmHWM:%s*(%d+)")) / 1024
    end

    -- bench/drain-rss.lua measures the same with 1 GiB.
    it("discards unread 64 MiB bodies (CL, chunked) in constant memory, then serves the next request", function()
        if H.BUILD ~= "build" then
            pending("ASan's allocator quarantine keeps freed memory resident")
            return
        end
        local wpid = assert(H.children(pool.pid)[1], "no worker")
        local before = hwm_mib(wpid)
        local fd = assert(fdpool.connect(pool.addr, 30))
        finally(function() fd:close() end)
        local mib = 64
        local piece = ("x"):rep(1024 * 1024)
        assert(fd:write(("POST /skip HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n")
            :format(mib * 1048576)))
        for _ = 1, mib do assert(fd:write(piece)) end
        assert(fd:write("POST /skip HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"))
        local chunk = "100000\r\n" .. piece .. "\r\n"
        for _ = 1, mib do assert(fd:write(chunk)) end
        assert(fd:write("0\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        local got = {}
        while true do
            local d = fd:read(65536)
            if not d then break end
            got[#got + 1] = d
        end
        got = table.concat(got)
        local _, n = got:gsub("HTTP/1.1 200 OK", "")
        assert.equal(3, n)
        assert.truthy(got:find("GET /after HTTP/1.1 len=0", 1, true))
        -- Buffering either body would add 64 MiB or more.
        local grown = hwm_mib(wpid) - before
        assert(grown < 16, ("worker peak RSS grew by %.1f MiB"):format(grown))
    end)
end)
