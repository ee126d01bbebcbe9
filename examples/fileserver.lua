-- examples/fileserver.lua: serve the files under DIR, one per connection,
-- to build/fdfetch.  Run: build/pool run examples/fileserver.lua -- DIR
-- Request "GET <name> [<offset>]\n"; reply "OK <whole size>\n" and the bytes
-- from offset to the end (zero-copy), or "ERR <reason>\n".  Then close.

local fdpool = require "fdpool"

local REQUEST_TIMEOUT = 10      -- seconds for the whole request line
local SEND_TIMEOUT = 60         -- seconds a stalled download may sit idle
local MAX_LINE = 4096           -- longest request line we look at

-- The top level runs once per worker: check DIR so a typo stops the pool.
local dir = ... or "."
if type(dir) ~= "string" or dir == "" then
    error("fileserver: DIR must be a non-empty path", 0)
end
do
    -- "DIR/." opens only if DIR is a directory we may search (ENOTDIR else).
    local f, err = io.open(dir .. "/.", "r")
    if not f then
        error(("fileserver: cannot serve DIR %s: %s")
              :format(dir, err:match(": ([^:]*)$") or err), 0)
    end
    f:close()
end

-- Parse "GET <name> [<offset>]".
-- @treturn[1] string name
-- @treturn[1] integer offset (0 when absent)
-- @return[2] nil
-- @treturn[2] string reason to send back
local function parse(line)
    if #line > MAX_LINE then
        return nil, "bad request: line too long"
    end
    local name, off = line:match("^GET ([^ ]+) ([^ ]+)$")
    if not name then
        name = line:match("^GET ([^ ]+)$")
    end
    if not name then
        return nil, "bad request: expected GET <name> [<offset>]"
    end
    if name:find("%c") then
        return nil, "bad request: control character in name"
    end
    local offset = 0
    if off then
        offset = off:match("^%d+$") and #off <= 19
                 and math.tointeger(tonumber(off))
        if not offset then
            return nil, "bad request: offset must be a non-negative integer"
        end
    end
    return name, offset
end

-- Defence in depth: open_beneath refuses these too, but say so clearly.
local function check_name(name)
    if name:sub(1, 1) == "/" then
        return nil, "absolute path refused"
    end
    if ("/" .. name .. "/"):find("/%.%./") then
        return nil, "name escapes the directory"
    end
    return true
end

local function refuse(conn, reason)
    -- Keep the reply a single line whatever the reason text holds.
    conn:send("ERR " .. reason:gsub("%c", " ") .. "\n")
    conn:close()
end

return function(conn)
    -- Mode "t": the whole line within REQUEST_TIMEOUT, so a client that
    -- trickles a byte now and then cannot hold the connection forever.
    conn:settimeout(REQUEST_TIMEOUT, "t")
    local line, err = conn:receive("l")
    if not line then
        if err == "closed" then
            return conn:close()
        end
        return refuse(conn, err == "timeout" and "request timeout"
                            or "bad request: " .. tostring(err))
    end
    line = line:gsub("\r$", "")

    local name, offset = parse(line)
    if not name then
        return refuse(conn, offset)
    end
    local ok, why = check_name(name)
    if not ok then
        return refuse(conn, why)
    end

    -- fd is closed when this scope ends, whichever way it ends.
    local fd <close>, size = fdpool.open_beneath(dir, name)
    if not fd then
        return refuse(conn, size)       -- on failure: nil, message, errno
    end
    if offset > size then
        return refuse(conn, ("offset beyond the end (size %d)"):format(size))
    end

    conn:settimeout(SEND_TIMEOUT)
    -- The peer's name now: once it has reset, getpeername has none.
    local ip, port = conn:getpeername()
    if conn:send(("OK %d\n"):format(size)) and offset < size then
        local sent, serr, partial = conn:sendfile(fd, offset, size - offset)
        if sent ~= size - offset then
            -- The client sees a short download and can resume; note why.
            local fmt = "fileserver: %s to %s:%s: sent %d of %d bytes%s\n"
            io.stderr:write(fmt:format(name, tostring(ip), tostring(port),
                sent or partial or 0, size - offset,
                serr and (": " .. serr) or ""))
        end
    end
    conn:close()
end
