-- tests/58-tls_spec.lua: TLS listeners (--listen ADDR,tls with --tls-cert
-- and --tls-key), against real pools in both modes (default concurrency,
-- and strict prefork: --concurrency 1, where plain keep-alive connections
-- are parked in the master but TLS ones stay with their worker). Clients:
-- curl --cacert, /usr/bin/python3's ssl module (tests/fixtures/
-- tls_client.py) and openssl s_client. Certificates are made in a temp
-- dir by the openssl CLI (tests/fixtures/tls_certs.lua).

package.path = "./tests/?.lua;" .. package.path
local H = require "helpers"
local certs = dofile("tests/fixtures/tls_certs.lua")

local APP = "tests/fixtures/tls_app.lua"
local PY = "/usr/bin/python3 tests/fixtures/tls_client.py"
local ASAN = H.BUILD ~= "build"

local C              -- the certificates, made once

local function port_of(addr) return tonumber(addr:match(":(%d+)$")) end

local function py(args)
  local ok, code, out = H.run(PY .. " " .. args)
  assert(ok, "tls_client.py " .. args .. " exited " .. tostring(code) .. ": " .. out)
  return H.json.decode(out:match("[^\n]*{[^\n]*}"))
end

local function curl(args)
  local ok, code, out = H.run("curl -sS --max-time 10 " .. args)
  return ok, code, out
end

local function start(mode, more)
  local extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key,
                  "--tls-cert", C.alt, "--tls-key", C.alt_key }
  for _, f in ipairs(mode.extra or {}) do extra[#extra + 1] = f end
  for _, f in ipairs(more or {}) do extra[#extra + 1] = f end
  local blob = C.dir .. "/blob.bin"
  local p = H.start_pool{ script = APP, args = { blob }, workers = 3, listen = "127.0.0.1:0,tls",
                          policy = "round_robin", extra = extra }
  assert(p.addr, p:log())
  return p
end

setup(function()
  C = certs.make(H.tmpdir())
  -- 300 kB of varied bytes for sendfile over TLS.
  local t = {}
  for i = 1, 300000 // 10 do t[#t + 1] = ("%09d\n"):format(i) end
  H.writefile(C.dir .. "/blob.bin", table.concat(t))
end)

for _, mode in ipairs { { name = "default concurrency" },
                        { name = "strict prefork", extra = { "--concurrency", "1" } } } do
  describe("TLS listener (" .. mode.name .. ")", function()
    local pool, port

    setup(function()
      pool = start(mode)
      port = port_of(pool.addr)
    end)

    teardown(function()
      if pool then
        local log = pool:log()
        assert.equal(0, pool:stop())
        assert.same({}, H.unexpected_errors(log))
      end
    end)

    it("curl --cacert verifies the certificate for localhost; conn:tls() gives protocol, cipher, SNI and ALPN", function()
      local ok, code, out = curl(("--cacert %s https://localhost:%d/info"):format(C.ca, port))
      assert(ok, out)
      assert.matches("proto=TLSv1%.[23] ", out)
      assert.matches("sni=localhost ", out)
      assert.matches("alpn=http/1%.1 ", out)
      assert.matches("cipher=[%w_-]+ ", out)
      assert.matches("resumed=false", out)
      -- Without the test CA the client refuses (60: peer certificate
      -- cannot be authenticated).
      ok, code = curl(("https://localhost:%d/info"):format(port))
      assert.is_false(ok)
      assert.equal(60, code)
    end)

    it("picks the certificate by SNI (openssl s_client, python ssl); an unknown name gets the default", function()
      assert.equal("1002", certs.serial(port, C.ca, "alt.test"))
      assert.equal("1001", certs.serial(port, C.ca, "localhost"))
      assert.equal("1001", certs.serial(port, C.ca, "other.example"))
      local r = py(("verify %d %s alt.test"):format(port, C.ca))
      assert.is_true(r.ok, r.error)
      assert.equal("alt.test", r.subject)
      -- The default certificate does not name other.example: python's
      -- hostname check fails, as it should.
      r = py(("verify %d %s other.example"):format(port, C.ca))
      assert.is_false(r.ok)
      assert.matches("[Hh]ostname mismatch", r.error)
      local ok, _, out = curl(("--cacert %s --resolve alt.test:%d:127.0.0.1 https://alt.test:%d/info")
        :format(C.ca, port, port))
      assert(ok, out)
      assert.matches("sni=alt%.test", out)
    end)

    it("resumes a saved session in every worker (one ticket key per generation)", function()
      local n = ASAN and 6 or 15
      local r = py(("resume %d %s %d"):format(port, C.ca, n))
      assert.equal(n - 1, r.reused)
      -- round_robin over 3 workers: resumed in more than one process.
      assert.is_true(#r.pids >= 2, "resumed only in " .. H.json.encode(r.pids))
    end)

    it("keeps a TLS keep-alive connection on its worker (never parked) and serves others meanwhile", function()
      local r = py(("keepalive %d %s 5"):format(port, C.ca))
      assert.equal(5, #r.pids)
      for i = 2, 5 do assert.equal(r.pids[1], r.pids[i]) end
      local st = assert(pool:status())
      assert.equal(0, st.parked)
      -- A held connection (one request done, idle) counts as active on
      -- its worker; other clients are still served.
      local fifo = C.dir .. "/fifo-" .. mode.name:gsub("%W", "")
      assert(H.run("mkfifo " .. fifo))
      local out = C.dir .. "/hold.out"
      os.execute(("unset LD_PRELOAD; %s hold %d %s %s > %s 2>&1 &"):format(PY, port, C.ca, fifo, out))
      local w = assert(io.open(fifo, "w"))
      local first = H.wait_until(function() return (H.readfile(out) or ""):match("{.-}") end, 10, "hold's first reply")
      local holder = H.json.decode(first).pid
      st = H.wait_status(pool, function(s)
        for _, wk in ipairs(s.workers) do
          if wk.pid == holder then return wk.active == 1 end
        end
      end, 5, "the held connection counted on its worker")
      assert.equal(0, st.parked)
      for _ = 1, 3 do
        local ok, _, body = curl(("--cacert %s https://localhost:%d/info"):format(C.ca, port))
        assert(ok, body)
      end
      w:write("again\n"); w:flush()
      H.wait_until(function() return H.count(H.readfile(out) or "", "{") == 2 end, 10, "hold's second reply")
      local second = H.json.decode((H.readfile(out):match("\n({.-})")))
      assert.equal(holder, second.pid)
      w:write("quit\n"); w:close()
      H.wait_status(pool, H.all_idle, 10, "all idle after the held connection closed")
    end)

    it("serves a file (sendfile over TLS is a copy loop), a 200 kB write and an echoed body intact", function()
      local blob = H.readfile(C.dir .. "/blob.bin")
      local ok, _, out = curl(("--cacert %s -o %s/got.bin https://localhost:%d/file"):format(C.ca, C.dir, port))
      assert(ok, out)
      assert.equal(#blob, #H.readfile(C.dir .. "/got.bin"))
      assert.is_true(H.readfile(C.dir .. "/got.bin") == blob)
      ok, _, out = curl(("--cacert %s https://localhost:%d/raw"):format(C.ca, port))
      assert(ok)
      assert.equal(200000, #out)
      ok, _, out = curl(("--cacert %s --data-binary @%s/blob.bin https://localhost:%d/echo"):format(C.ca, C.dir, port))
      assert(ok)
      assert.is_true(out == blob)
    end)

    it("answers openssl s_client with verification ok and ALPN http/1.1", function()
      local ok, _, out = H.run(("echo | timeout 10 openssl s_client -connect 127.0.0.1:%d -servername localhost " ..
        "-CAfile %s -alpn h2,http/1.1 2>&1"):format(port, C.ca))
      assert(ok, out)
      assert.matches("Verify return code: 0 %(ok%)", out)
      assert.matches("ALPN protocol: http/1%.1", out)
    end)
  end)
end

describe("TLS and plain listeners in one pool", function()
  it("conn:tls() is nil on the plain listener, a table on the tls one", function()
    local extra = { "--tls-cert", C.srv, "--tls-key", C.srv_key, "--listen", "127.0.0.1:0" }
    local p = H.start_pool{ script = APP, workers = 1, listen = "127.0.0.1:0,tls", extra = extra }
    finally(function() p:stop() end)
    assert(p.addr, p:log())
    local addrs = {}
    for a in p:log():gmatch("listening on (%S+)") do addrs[#addrs + 1] = a end
    assert.equal(2, #addrs)
    local ok, _, out = curl(("--cacert %s https://localhost:%d/info"):format(C.ca, port_of(addrs[1])))
    assert(ok, out)
    assert.matches("proto=TLSv1", out)
    ok, _, out = curl(("http://127.0.0.1:%d/info"):format(port_of(addrs[2])))
    assert(ok, out)
    assert.matches("proto=nil", out)
    assert.equal(0, p:stop())
  end)
end)

describe("outbound TLS (fdpool.tcp():sslhandshake, fdpool.http.client https://)", function()
  local up, cli, c
  setup(function()
    up = start({ name = "upstream" })
    cli = H.start_pool{ script = "tests/fixtures/tls_outbound.lua", workers = 1,
                        args = { tostring(port_of(up.addr)), C.ca } }
    assert(cli.addr, cli:log())
    c = assert(require("fdpool").connect(cli.addr, 30))
  end)
  teardown(function()
    if c then c:close() end
    local log = cli and cli:log() or ""
    if cli then assert.equal(0, cli:stop()) end
    if up then assert.equal(0, up:stop()) end
    assert.same({}, H.unexpected_errors(log))
  end)

  local function ask(line)
    assert(c:write(line .. "\n"))
    return c:read("l")
  end

  it("verifies the server against a CA file, sends SNI, and resumes the returned session", function()
    local r = ask("raw localhost ca")
    assert.matches("^ok pid=%d+ proto=TLSv1%.[23] .-sni=localhost .-resumed=false client=TLSv1%.[23] | " ..
                   "pid=%d+ .-sni=localhost .-resumed=true ", r)
    r = ask("raw alt.test ca")
    assert.matches("^ok .-sni=alt%.test .-resumed=false .- | .-sni=alt%.test .-resumed=true ", r)
  end)

  it("refuses a certificate the system store does not trust, or one for another name; verify=false skips both", function()
    assert.equal("nil certificate verify failed: unable to get local issuer certificate", ask("raw localhost system"))
    assert.equal("nil certificate verify failed: hostname mismatch", ask("raw other.example ca"))
    assert.matches("^ok .-sni=other%.example ", ask("raw other.example off"))
  end)

  it("fdpool.http.client speaks https://, keeping TLS connections alive in the pool", function()
    local r = ask("https info")
    assert.matches("^200 reused=%d+ pid=%d+ proto=TLSv1", r)
    local r2 = ask("https info")
    assert.matches("^200 reused=[1-9]%d* pid=%d+ proto=TLSv1", r2)
    -- The same connection: the same upstream worker.
    assert.equal(r:match("pid=(%d+)"), r2:match("pid=(%d+)"))
    local r3 = ask("https file")
    assert.matches("^200 reused=[1-9]", r3)
  end)
end)
