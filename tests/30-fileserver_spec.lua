-- tests/30-fileserver_spec.lua: examples/fileserver.lua under a real pool,
-- driven by build/fdfetch (downloads, resume, refusals) and by raw requests;
-- plus fdfetch's own error handling (usage, connect, short transfer).

package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"
local fdpool = require "fdpool"

local FETCH = "build/fdfetch"
local SCRIPT = "examples/fileserver.lua"
local BIG = 5 * 1024 * 1024
local SMALL = "0123456789abcdef\n"

local function q(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function sh(fmt, ...)
    local ok, code, out = H.run(fmt:format(...))
    assert(ok, ("%s: exit %s: %s"):format(fmt:format(...), code, out))
    return out
end

local function fetch(addr, name, out)
    local _, code, text = H.run(("%s %s %s %s"):format(FETCH, q(addr),
                                                       q(name), q(out)))
    return code, text
end

local function exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

describe("examples/fileserver.lua", function()
    local dir, out, pool

    setup(function()
        dir, out = H.tmpdir(), H.tmpdir()
        sh("head -c %d /dev/urandom > %s", BIG, q(dir .. "/big.bin"))
        local f = assert(io.open(dir .. "/small.txt", "wb"))
        f:write(SMALL)
        f:close()
        sh("mkdir %s", q(dir .. "/sub"))
        sh("ln -s /etc/passwd %s", q(dir .. "/evil"))
        sh("ln -s small.txt %s", q(dir .. "/alias"))
        pool = H.start_pool{ script = SCRIPT, args = { dir }, workers = 2 }
    end)

    teardown(function()
        if pool then
            pool:stop()
        end
    end)

    it("serves a 5 MiB file byte-exact to fdfetch", function()
        local code, text = fetch(pool.addr, "big.bin", out .. "/big.bin")
        assert.equal(0, code, text)
        assert.matches("received " .. BIG .. " bytes", text, 1, true)
        sh("cmp %s %s", q(dir .. "/big.bin"), q(out .. "/big.bin"))
    end)

    it("resumes a partial download from its size", function()
        local part = 1234567
        local dst = out .. "/resume.bin"
        sh("head -c %d %s > %s", part, q(dir .. "/big.bin"), q(dst))
        local code, text = fetch(pool.addr, "big.bin", dst)
        assert.equal(0, code, text)
        -- Fewer bytes crossed the wire: the server honoured the offset.
        assert.matches("received " .. (BIG - part) .. " bytes", text, 1, true)
        assert.matches("resumed at " .. part, text, 1, true)
        sh("cmp %s %s", q(dir .. "/big.bin"), q(dst))

        code, text = fetch(pool.addr, "big.bin", dst)
        assert.equal(0, code, text)
        assert.matches("already complete", text, 1, true)
    end)

    it("resumes after truncating a finished download", function()
        local dst = out .. "/trunc.bin"
        assert.equal(0, (fetch(pool.addr, "big.bin", dst)))
        sh("truncate -s 1000 %s", q(dst))
        local code, text = fetch(pool.addr, "big.bin", dst)
        assert.equal(0, code, text)
        assert.matches("received " .. (BIG - 1000) .. " bytes", text, 1, true)
        sh("cmp %s %s", q(dir .. "/big.bin"), q(dst))
    end)

    local refusals = {
        { "nope.bin", "No such file or directory" },
        { "../etc/passwd", "escapes the directory" },
        { "sub/../small.txt", "escapes the directory" },
        { "/etc/passwd", "absolute path" },
        { "evil", "symbolic link" },
        { "alias", "symbolic link" },
        { "sub", "not a regular file" },
    }
    for _, case in ipairs(refusals) do
        local name, reason = case[1], case[2]
        it("refuses " .. name .. " (" .. reason .. ")", function()
            local dst = out .. "/refused"
            local code, text = fetch(pool.addr, name, dst)
            assert.equal(2, code, text)
            assert.matches("server refused " .. name .. ": ", text, 1, true)
            assert.matches(reason, text, 1, true)
            assert.is_false(exists(dst), "fdfetch created " .. dst)
        end)
    end

    it("answers OK <whole size> and the bytes from the offset", function()
        local reply = H.tcp_request(pool.addr, "GET small.txt 3\n")
        assert.equal("OK " .. #SMALL .. "\n" .. SMALL:sub(4), reply)
        reply = H.tcp_request(pool.addr, "GET small.txt\n")
        assert.equal("OK " .. #SMALL .. "\n" .. SMALL, reply)
        reply = H.tcp_request(pool.addr, "GET small.txt\r\n")
        assert.equal("OK " .. #SMALL .. "\n" .. SMALL, reply)
    end)

    it("accepts an offset at the end and refuses one beyond it", function()
        local reply = H.tcp_request(pool.addr,
                                    ("GET small.txt %d\n"):format(#SMALL))
        assert.equal("OK " .. #SMALL .. "\n", reply)
        reply = H.tcp_request(pool.addr,
                              ("GET small.txt %d\n"):format(#SMALL + 1))
        assert.matches("^ERR offset beyond the end[^\n]*\n$", reply)
    end)

    local garbage = {
        "GET\n", "GET \n", "\n", "PUT small.txt\n", "GET a b c\n",
        "get small.txt\n", "GET small.txt -1\n", "GET small.txt 1x\n",
        "GET small.txt 0x10\n", "GET small.txt 99999999999999999999\n",
        "GET  small.txt\n", "GET small.txt\0\n",
    }
    for _, req in ipairs(garbage) do
        it(("answers ERR to %q"):format(req), function()
            local reply = H.tcp_request(pool.addr, req)
            assert.matches("^ERR [^\n]+\n$", reply)
        end)
    end

    it("answers ERR bad request to an overlong line", function()
        local reply = H.tcp_request(pool.addr,
                                    "GET " .. ("a"):rep(8000) .. "\n")
        assert.matches("^ERR ", reply)
    end)

    it("cuts a request line trickled past 10 s in all", function()
        -- One byte every 0.5 s: each wait is short, the whole line is not.
        local fd = assert(fdpool.connect(pool.addr, 5))
        finally(function() fd:close() end)
        assert(fd:settimeout(0.5))
        local t0, reply = H.now(), nil
        local req = "GET " .. ("a"):rep(100)
        for i = 1, 30 do
            assert(fd:write(req:sub(i, i)))
            local d, _, errno = fd:read(100)
            if d or errno ~= 11 then
                reply = d or "EOF"
                break
            end
        end
        local took = H.now() - t0
        assert.equal("ERR request timeout\n", reply)
        assert.is_true(took > 8 and took < 14, "cut after " .. took .. " s")
    end)

    it("logs the peer and the bytes sent of a download reset midway", function()
        local fd = assert(fdpool.connect(pool.addr, 5))
        assert(fd:write("GET big.bin\n"))
        assert(fd:read(100))
        fd:close()      -- unread data: the close sends a reset
        local line = H.wait_until(function()
            return pool:log():match("fileserver: big%.bin to [^\n]*")
        end, 10, "the fileserver's log line")
        -- Before: "to nil:getpeername: ...: sent 0 of": the name was
        -- asked after the reset, and the partial count was dropped.
        assert.matches("^fileserver: big%.bin to 127%.0%.0%.1:%d+: sent %d+ of "
                       .. BIG .. " bytes: ", line)
        assert.is_nil(line:find("sent 0 of", 1, true), line)
    end)

    it("keeps serving after all that", function()
        local code, text = fetch(pool.addr, "small.txt", out .. "/last.txt")
        assert.equal(0, code, text)
    end)
end)

describe("examples/fileserver.lua DIR check", function()
    it("stops the pool from starting when DIR is not a directory", function()
        local dir = H.tmpdir()
        sh("touch %s", q(dir .. "/file"))
        -- timeout: a pool that wrongly starts would otherwise run forever.
        local ok, code, text = H.run(("timeout 20 build/pool run %s "
            .. "--listen 127.0.0.1:0 --workers 1 -- %s"):format(
            SCRIPT, q(dir .. "/file")))
        assert.is_false(ok, text)
        assert.is_not.equal(124, code, "pool started: " .. text)
        assert.matches("Not a directory", text, 1, true)
    end)
end)

describe("build/fdfetch", function()
    it("prints usage and exits 64 on bad arguments", function()
        local _, code, text = H.run(FETCH)
        assert.equal(64, code)
        assert.matches("usage: fdfetch", text, 1, true)
        _, code = H.run(FETCH .. " 127.0.0.1:1 'a b'")
        assert.equal(64, code)
        _, code, text = H.run(FETCH .. " nocolon x")
        assert.equal(64, code)
        assert.matches("bad address", text, 1, true)
        _, code = H.run(FETCH .. " 127.0.0.1:1 dir/")
        assert.equal(64, code)
    end)

    it("has --help", function()
        local ok, _, text = H.run(FETCH .. " --help")
        assert.is_true(ok)
        assert.matches("usage: fdfetch", text, 1, true)
    end)

    it("reports a failed connect and exits 1", function()
        local path = H.tmpdir() .. "/no.sock"
        local _, code, text = H.run(("%s %s x %s"):format(FETCH,
            q("unix:" .. path), q(H.tmpdir() .. "/x")))
        assert.equal(1, code)
        assert.matches("fdfetch: connect unix:" .. path
                       .. ": No such file or directory", text, 1, true)
    end)

    it("keeps a short download and says how much is missing", function()
        local dir = H.tmpdir()
        local f = assert(io.open(dir .. "/short.lua", "w"))
        f:write([[
return function(conn)
    conn:settimeout(5)
    conn:receive("l")
    conn:send("OK 100\nabc")
    conn:close()
end
]])
        f:close()
        local p = H.start_pool{ script = dir .. "/short.lua", workers = 1 }
        finally(function() p:stop() end)
        local dst = dir .. "/out"
        local code, text = fetch(p.addr, "anything", dst)
        assert.equal(1, code, text)
        assert.matches("97 of 100 bytes missing", text, 1, true)
        local g = assert(io.open(dst, "rb"))
        assert.equal("abc", g:read("a"))
        g:close()
    end)

    it("rejects a malformed OK line", function()
        local dir = H.tmpdir()
        local f = assert(io.open(dir .. "/bad.lua", "w"))
        f:write([[
return function(conn)
    conn:settimeout(5)
    conn:receive("l")
    conn:send("OK -5\n")
    conn:close()
end
]])
        f:close()
        local p = H.start_pool{ script = dir .. "/bad.lua", workers = 1 }
        finally(function() p:stop() end)
        local code, text = fetch(p.addr, "anything", dir .. "/out")
        assert.equal(1, code, text)
        assert.matches("bad reply", text, 1, true)
        assert.is_false(exists(dir .. "/out"))
    end)
    -- A one-connection server (under a real pool) that answers `reply`.
    local function liar(reply)
        local dir = H.tmpdir()
        local f = assert(io.open(dir .. "/liar.lua", "w"))
        f:write(([[
return function(conn)
    conn:settimeout(5)
    conn:receive("l")
    conn:send(%q)
    conn:close()
end
]]):format(reply))
        f:close()
        return dir, H.start_pool{ script = dir .. "/liar.lua", workers = 1 }
    end

    it("creates OUT for an empty file", function()
        local dir, p = liar("OK 0\n")
        finally(function() p:stop() end)
        local code, text = fetch(p.addr, "empty", dir .. "/out")
        assert.equal(0, code, text)
        assert.matches("received 0 bytes", text, 1, true)
        assert.equal("", H.readfile(dir .. "/out"))
    end)

    it("rejects a NUL byte in the reply line", function()
        local dir, p = liar("OK 3\0junk\nabc")
        finally(function() p:stop() end)
        local code, text = fetch(p.addr, "anything", dir .. "/out")
        assert.equal(1, code, text)
        assert.matches('bad reply from [^\n]*"OK 3%?junk"\n$', text)
        assert.is_false(exists(dir .. "/out"))
    end)

    it("fails at once on an OUT that is a FIFO nobody reads", function()
        local dir = H.tmpdir()
        sh("mkfifo %s", q(dir .. "/fifo"))
        -- timeout: before, the open blocked forever.
        local _, code, text = H.run(("timeout 10 %s 127.0.0.1:1 x %s")
            :format(FETCH, q(dir .. "/fifo")))
        assert.equal(1, code, text)
        assert.equal("fdfetch: open " .. dir .. "/fifo: a FIFO with no reader\n",
                     text)
    end)

    it("rejects a bad FDFETCH_TIMEOUT with one line and exit 64", function()
        for _, v in ipairs{ "abc", "0", "-1", "5s", "99999999999",
                            "86401" } do
            local _, code, text = H.run(("FDFETCH_TIMEOUT=%s %s "
                .. "127.0.0.1:1 x %s"):format(q(v), FETCH,
                q(H.tmpdir() .. "/x")))
            assert.equal(64, code, v .. ": " .. text)
            assert.equal("fdfetch: bad FDFETCH_TIMEOUT \"" .. v
                         .. "\": want whole seconds, 1 to 86400\n", text)
        end
    end)
end)
