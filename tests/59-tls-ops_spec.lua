-- tests/59-tls-ops_spec.lua: operating TLS listeners. Bad --tls-cert/
-- --tls-key (missing, unreadable, not PEM, mismatched pair) fail the start
-- with one line; a reload (pool reload, HUP) reads renewed certificates
-- into the new generation while an old keep-alive connection finishes on
-- its worker, and a reload whose certificate does not load is refused
-- (exit 1, old generation serving); junk, plain HTTP and truncated or
-- trickled handshakes cost only their connection (accept filter tls, and
-- with filter=none in the worker: no error line, no crash); a silent
-- client waits in the kernel (TCP_DEFER_ACCEPT) and is served when it
-- speaks, unless filter=none; a worker under --user nobody serves TLS
-- with a key only root can read.

package.path = "./tests/?.lua;" .. package.path
local fdpool = require "fdpool"
local H = require "helpers"
local certs = dofile("tests/fixtures/tls_certs.lua")

local APP = "tests/fixtures/tls_app.lua"
local PY = "/usr/bin/python3 tests/fixtures/tls_client.py"
local ASAN = H.BUILD ~= "build"

local C

local function port_of(addr) return tonumber(addr:match(":(%d+)$")) end

local function py(args)
  local ok, code, out = H.run(PY .. " " .. args)
  assert(ok, "tls_client.py " .. args .. " exited " .. tostring(code) .. ": " .. out)
  return H.json.decode(out:match("[^\n]*{[^\n]*}"))
end

local function curl_info(port)
  local ok, _, out = H.run(("curl -sS --max-time 10 --cacert %s https://localhost:%d/info"):format(C.ca, port))
  assert(ok, out)
  return out
end

local function cp(from, to)
  H.writefile(to, assert(H.readfile(from)))
end

setup(function()
  C = certs.make(H.tmpdir())
end)

describe("bad certificates and keys", function()
  local function run(flags)
    return H.run_pool(("run %s --listen 127.0.0.1:0,tls --no-control --workers 1 %s"):format(APP, flags))
  end

  it("fail the start with one line and a non-zero exit", function()
    local cases = {
      { ("--tls-cert %s/nope.pem --tls-key %s"):format(C.dir, C.srv_key),
        "^pool: cannot read TLS certificate '.-/nope%.pem': No such file or directory\n$" },
      { ("--tls-cert %s --tls-key %s/nope.key"):format(C.srv, C.dir),
        "^pool: cannot read TLS key '.-/nope%.key': No such file or directory\n$" },
      { ("--tls-cert %s --tls-key %s"):format(C.srv_key, C.srv_key),
        "^pool: bad TLS certificate '.-': no start line %(expected a PEM certificate chain%)\n$" },
      { ("--tls-cert %s --tls-key %s"):format(C.srv, C.srv),
        "^pool: bad TLS key '.-': .- %(expected an unencrypted PEM private key%)\n$" },
      { ("--tls-cert %s --tls-key %s"):format(C.srv, C.alt_key),
        "^pool: TLS key '.-/alt%.key' does not match certificate '.-/srv%.pem'\n$" },
      { ("--tls-cert %s"):format(C.srv),
        "^pool: %-%-tls%-cert and %-%-tls%-key come in pairs %(got 1 certificate%(s%) and 0 key%(s%)%)\n$" },
      { "", "^pool: listener 127%.0%.0%.1:0,tls has the tls option but no certificate was given" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = run(c[1])
      assert.is_true(code ~= 0, c[1])
      assert.equal("", out)
      assert.matches(c[2], err)
    end
    local code, _, err = H.run_pool(("run %s --listen 127.0.0.1:0,tls,filter=http --tls-cert %s --tls-key %s --no-control")
      :format(APP, C.srv, C.srv_key))
    assert.equal(1, code)
    assert.matches("^pool: bad address '127%.0%.0%.1:0,tls,filter=http': a tls listener cannot use filter=http", err)
    code, _, err = H.run_pool(("run %s --listen 127.0.0.1:0,filter=tls --no-control"):format(APP))
    assert.equal(1, code)
    assert.matches("filter=tls needs the tls option\n$", err)
  end)

  it("a key file the starting user cannot read: one line, exit 1", function()
    local key = C.dir .. "/private.key"
    cp(C.srv_key, key)
    assert(H.run("chmod 600 " .. key .. " && chmod 755 " .. C.dir .. " && chmod 644 " .. C.srv))
    local ok, code, out = H.run(("cd %s && setpriv --reuid=65534 --regid=65534 --clear-groups %s/%s run %s " ..
      "--listen 127.0.0.1:0,tls --tls-cert %s --tls-key %s --no-control --workers 1 2>&1 </dev/null")
      :format(os.getenv("PWD"), os.getenv("PWD"), H.POOL, APP, C.srv, key))
    assert.is_false(ok)
    assert.equal(1, code)
    assert.matches("^pool: cannot read TLS key '.-/private%.key': Permission denied\n$", out)
  end)
end)

for _, mode in ipairs { { name = "default concurrency" },
                        { name = "strict prefork", extra = { "--concurrency", "1" } } } do
  describe("renewed certificates (" .. mode.name .. ")", function()
    it("a reload serves the new certificate to new connections while an old keep-alive one finishes; a bad one is refused", function()
      local dir = H.tmpdir()
      local cert, key = dir .. "/cur.pem", dir .. "/cur.key"
      cp(C.srv, cert); cp(C.srv_key, key)
      local extra = { "--tls-cert", cert, "--tls-key", key }
      for _, f in ipairs(mode.extra or {}) do extra[#extra + 1] = f end
      local p = H.start_pool{ script = APP, workers = 2, listen = "127.0.0.1:0,tls", extra = extra }
      local defer = H.cleanup(finally)
      defer(function() p:stop() end)
      assert(p.addr, p:log())
      local port = port_of(p.addr)
      assert.equal("1001", certs.serial(port, C.ca))

      -- An old keep-alive connection: one request now, more after the reload.
      local fifo, out = dir .. "/fifo", dir .. "/hold.out"
      assert(H.run("mkfifo " .. fifo))
      os.execute(("unset LD_PRELOAD; %s hold %d %s %s > %s 2>&1 &"):format(PY, port, C.ca, fifo, out))
      local w = assert(io.open(fifo, "w"))
      defer(function() pcall(w.close, w) end)
      local first = H.json.decode(H.wait_until(function()
        return (H.readfile(out) or ""):match("{.-}") end, 10, "the held connection's first reply"))

      -- Renew: serial 0x2001, same names.
      local npem, nkey = certs.issue(C.dir, "renewed", 0x2001, "localhost", "DNS:localhost,IP:127.0.0.1")
      cp(npem, cert); cp(nkey, key)
      local code, sout = H.run_pool("reload --control " .. H.quote(p.control), 60)
      assert.equal(0, code, sout)
      assert.equal("2001", certs.serial(port, C.ca))
      assert.matches("proto=TLSv1", curl_info(port))

      -- The old connection still works, on its old-generation worker.
      w:write("again\n"); w:flush()
      H.wait_until(function() return H.count(H.readfile(out) or "", "{") == 2 end, 10, "the held connection's second reply")
      local second = H.json.decode((H.readfile(out):match("\n({.-})")))
      assert.equal(first.pid, second.pid)
      assert.equal(first.cert, second.cert)
      local st = assert(p:status())
      for _, wk in ipairs(st.workers) do assert.is_true(wk.pid ~= first.pid) end
      w:write("quit\n"); w:close()

      -- A certificate that does not load: refused, one line, the running
      -- generation (serial 2001) keeps serving.
      cp(C.alt_key, key)
      local err
      code, sout, err = H.run_pool("reload --control " .. H.quote(p.control), 60)
      assert.equal(1, code)
      assert.matches("^pool: reload refused, keeping the running workers: TLS key '.-' does not match certificate '.-'\n$", err)
      H.writefile(cert, "not a certificate\n")
      code, sout, err = H.run_pool("reload --control " .. H.quote(p.control), 60)
      assert.equal(1, code)
      assert.matches("^pool: reload refused, keeping the running workers: bad TLS certificate", err)
      assert.equal("2001", certs.serial(port, C.ca))
      assert.equal(st.generation, assert(p:status()).generation)

      -- HUP with a good pair again: serial 0x1001.
      cp(C.srv, cert); cp(C.srv_key, key)
      p:kill("HUP")
      H.wait_until(function() return certs.serial(port, C.ca) == "1001" end, 20, "the HUP reload's certificate")
      local log = p:log()
      assert.equal(0, p:stop())
      assert.same({}, H.unexpected_errors(log, { "reload refused, keeping the running workers: " }))
    end)
  end)
end

describe("--config", function()
  it("a reload re-reads tls_cert and tls_key from the file", function()
    local dir = H.tmpdir()
    local conf = dir .. "/app.conf.lua"
    local function write_conf(cert, key)
      H.writefile(conf, ("return { handler = %q, listen = '127.0.0.1:0,tls', workers = 1, " ..
        "tls_cert = %q, tls_key = %q }\n"):format(os.getenv("PWD") .. "/" .. APP, cert, key))
    end
    write_conf(C.srv, C.srv_key)
    -- (--listen as in the file: start_pool always gives one.)
    local p = H.start_pool{ listen = "127.0.0.1:0,tls", workers = 1, extra = { "--config", conf } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local port = port_of(p.addr)
    assert.equal("1001", certs.serial(port, C.ca))
    local npem, nkey = certs.issue(C.dir, "viaconf", 0x3001, "localhost", "DNS:localhost,IP:127.0.0.1")
    write_conf(npem, nkey)
    local code, out, err = H.run_pool("reload --control " .. H.quote(p.control), 60)
    assert.equal(0, code, err)
    assert.equal("3001", certs.serial(port, C.ca))
    write_conf(npem, C.alt_key)
    code, out, err = H.run_pool("reload --control " .. H.quote(p.control), 60)
    assert.equal(1, code)
    assert.matches("^pool: reload refused, keeping the running workers: TLS key '.-/alt%.key' does not match", err)
    assert.equal("3001", certs.serial(port, C.ca))
    assert.equal(0, p:stop())
  end)
end)

describe("clients that do not speak TLS", function()
  local function hostile(port)
    local got = {}
    -- Plain HTTP, garbage, one handshake byte then close, a record header
    -- then close.
    for _, bytes in ipairs { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", ("\0\255junk"):rep(50), "\22",
                             "\22\3\1\2\0" } do
      local fd = assert(fdpool.connect("127.0.0.1:" .. port, 5))
      assert(fd:write(bytes))
      if #bytes > 1 and bytes:sub(1, 1) ~= "\22" then
        -- The server closes on us without a byte.
        local data = fd:read("a")
        got[#got + 1] = data or ""
      end
      fd:close()
    end
    return got
  end

  for _, filter in ipairs { "tls (the default)", "none" } do
    it("cost only their connection with filter " .. filter .. ": no error, no crash, still serving", function()
      local listen = "127.0.0.1:0,tls" .. (filter == "none" and ",filter=none" or "")
      local p = H.start_pool{ script = APP, workers = 2, listen = listen,
                              extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key, "--io-timeout", "3" } }
      finally(function() p:stop() end)
      assert(p.addr, p:log())
      local port = port_of(p.addr)
      local pids = p:worker_pids()
      local rounds = ASAN and 2 or 10
      for _ = 1, rounds do
        for _, data in ipairs(hostile(port)) do assert.equal("", data) end
      end
      -- A ClientHello trickled one byte at a time is served.
      local r = py(("trickle %d %s"):format(port, C.ca))
      assert.matches("proto=TLSv1", r.body)
      assert.matches("proto=TLSv1", curl_info(port))
      local st = H.wait_status(p, function(s)
        return H.all_idle(s) and s.pending == 0 and
          (filter == "none" or s.closed.not_tls >= 2 * rounds)
      end, 10, "idle, the hostile connections closed")
      assert.equal(0, st.crash_streak)
      assert.same(pids, p:worker_pids())
      local log = p:log()
      assert.equal(0, p:stop())
      assert.same({}, H.unexpected_errors(log))
      assert.is_nil(log:find(" 500 ", 1, true))
    end)
  end
end)

describe("the handshake deadline", function()
  it("closes a half handshake in the worker (filter=none) within --io-timeout, freeing its slot", function()
    local p = H.start_pool{ script = APP, workers = 1, listen = "127.0.0.1:0,tls,filter=none",
                            extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key, "--io-timeout", "1" } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local fd = assert(fdpool.connect(p.addr, 5))
    -- A record header announcing 512 bytes, and nothing more.
    assert(fd:write("\22\3\1\2\0"))
    H.wait_status(p, function(s) return s.workers[1].active == 1 end, 5, "the worker to hold it")
    fd:settimeout(15)
    local data = fd:read("a")
    assert.equal("", data or "")
    fd:close()
    local st = H.wait_status(p, H.all_idle, 5, "the slot free again")
    assert.equal(0, st.crash_streak)
    assert.matches("proto=TLSv1", curl_info(port_of(p.addr)))
    local log = p:log()
    assert.equal(0, p:stop())
    assert.same({}, H.unexpected_errors(log))
  end)
end)

describe("deferred accept", function()
  local states = H.tcp_states

  it("a silent client waits in the kernel, not the master, and is served when it speaks after the deferral", function()
    local p = H.start_pool{ script = APP, workers = 1, listen = "127.0.0.1:0,tls",
                            extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local port = port_of(p.addr)
    local fd = assert(fdpool.connect(p.addr, 5))
    -- TCP_DEFER_ACCEPT: established for the client, pending in the
    -- kernel on our side (for 1 s, the deferral) until bytes come.
    H.wait_until(function() return states(port)["03"] end, 5, "a deferred (SYN_RECV) connection")
    assert.is_nil(states(port)["01"])
    fd:close()
    -- Silent for longer than the deferral, then a handshake: served (the
    -- kernel hands it over after 1 s, the accept filter waits as before).
    local r = py(("late %d %s 1.5"):format(port, C.ca))
    assert.matches("proto=TLSv1", r.body)
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("is off with filter=none: the worker takes the connection at once", function()
    local p = H.start_pool{ script = APP, workers = 1, listen = "127.0.0.1:0,tls,filter=none",
                            extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local fd = assert(fdpool.connect(p.addr, 5))
    H.wait_status(p, function(s) return s.workers[1].active == 1 end, 5, "the worker to hold it")
    assert.is_nil(states(port_of(p.addr))["03"])
    fd:close()
  end)
end)

describe("pool upgrade", function()
  it("the new master takes over the tls listener with its option and reads the certificates itself", function()
    local p = H.start_pool{ script = APP, workers = 1, listen = "127.0.0.1:0,tls",
                            extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key } }
    local newpid
    finally(function()
      p:stop()
      if newpid and H.alive(newpid) then
        os.execute("kill -TERM " .. newpid)
        pcall(H.wait_until, function() return not H.alive(newpid) end, 10)
      end
    end)
    assert(p.addr, p:log())
    local port = port_of(p.addr)
    local before = curl_info(port):match("pid=(%d+)")
    local code, out, err = H.run_pool("upgrade --control " .. H.quote(p.control), 90)
    assert.equal(0, code, err)
    newpid = tonumber(out:match("master pid (%d+) serving"))
    assert.truthy(newpid, out)
    local after = curl_info(port):match("pid=(%d+)")
    assert.are_not.equal(before, after)
    -- The new master makes itself SCHED_BATCH (not inherited), and its
    -- workers inherit it (/proc/PID/stat's policy field: 3).
    local function policy(pid)
      return tonumber(assert(H.readfile("/proc/" .. pid .. "/stat")):match("%) (.*)$")
        :match(("%S+%s+"):rep(38) .. "(%d+)"))
    end
    assert.equal(3, policy(newpid))
    assert.equal(3, policy(tonumber(after)))
    assert.equal("1001", certs.serial(port, C.ca))
    assert.truthy(p:log():find(("pool[%d]: TLS: 1 certificate(s) loaded"):format(newpid), 1, true))
    -- Still TLS only: plain text is closed by the new master's filter.
    local fd = assert(fdpool.connect(p.addr, 5))
    assert(fd:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.equal("", fd:read("a") or "")
    fd:close()
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)

describe("--user", function()
  it("a worker under --user nobody serves TLS with a key only root can read", function()
    local dir = H.tmpdir()
    local key = dir .. "/root-only.key"
    cp(C.srv_key, key)
    assert(H.run(("chown root:root %s && chmod 600 %s && chmod 755 %s"):format(key, key, dir)))
    local p = H.start_pool{ script = APP, workers = 2, listen = "127.0.0.1:0,tls",
                            extra = { "--tls-cert", C.srv, "--tls-key", key, "--user", "nobody" } }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local out = curl_info(port_of(p.addr))
    local pid = tonumber(out:match("pid=(%d+)"))
    local status = H.readfile("/proc/" .. pid .. "/status")
    assert.matches("\nUid:%s+65534%s", status)
    -- The worker itself cannot read the key.
    local ok = H.run(("setpriv --reuid=65534 --regid=65534 --clear-groups cat %s"):format(key))
    assert.is_false(ok)
    local r = py(("resume %d %s 4"):format(port_of(p.addr), C.ca))
    assert.equal(3, r.reused)
    assert.equal(0, p:stop())
  end)
end)
