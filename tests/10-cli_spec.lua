-- tests/10-cli_spec.lua: the `pool` command line against the real binary.
-- Bad input fails fast with one clear "pool: ..." line on stderr and a
-- non-zero exit (never a hang: every run is under `timeout 20`); help,
-- version, check, status and stop do what they say; the control socket
-- is private while the pool runs and gone after it stops.
local H = require "helpers"

local FIX = "tests/fixtures/"
local q = H.quote

-- A log line: "TIME LEVEL pool[PID]: msg" or "TIME LEVEL worker N[PID]: msg".
local function is_log_line(line)
  return line:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ %a+%s+[%w ]+%[%d+%]: ") ~= nil
end

-- stderr must hold exactly one "pool: ..." line, it must be the last line,
-- it must contain `text` (plain), and every other line must be a one-line
-- log event (no stray tracebacks or continuation lines).
local function assert_one_error_line(err, text)
  local lines = {}
  for line in err:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local msgs = {}
  for _, line in ipairs(lines) do
    if line:sub(1, 6) == "pool: " then msgs[#msgs + 1] = line end
  end
  assert.equals(1, #msgs, "expected one 'pool: ...' line on stderr, got:\n" .. err)
  assert.truthy(msgs[1]:find(text, 1, true),
    ("the error line should mention %q; stderr was:\n%s"):format(text, err))
  assert.equals(msgs[1], lines[#lines], "the error line should be the last one; stderr was:\n" .. err)
  for _, line in ipairs(lines) do
    if line ~= msgs[1] then
      assert.truthy(is_log_line(line), "not a one-line log event: " .. line .. "\nstderr was:\n" .. err)
    end
  end
  return msgs[1]
end

-- `pool run SCRIPT` on a free port with no control socket, plus flags.
local function run_script(script, flags)
  return H.run_pool(("run %s --listen 127.0.0.1:0 --no-control --workers 2 %s"):format(
    q(script), flags or ""))
end

describe("pool run with bad input", function()
  it("refuses a missing script before doing anything", function()
    local code, out, err = run_script(FIX .. "cli_does_not_exist.lua")
    assert.not_equals(0, code)
    assert.not_equals(124, code)
    assert.equals("", out)
    assert_one_error_line(err, "cli_does_not_exist.lua' (No such file or directory)")  -- with the reason
    assert.not_matches("listening on", err)
  end)

  it("reports a syntax error with file:line and forks no worker", function()
    local code, _, err = run_script(FIX .. "cli_syntax.lua")
    assert.not_equals(0, code)
    assert.not_equals(124, code)
    assert_one_error_line(err, FIX .. "cli_syntax.lua:3:")
    assert.not_matches("worker 1 started", err)
    assert.not_matches("listening on", err)
  end)

  it("fails when the script returns no handler, saying why", function()
    local code, _, err = run_script(FIX .. "cli_nohandler.lua")
    assert.not_equals(0, code)
    assert.not_equals(124, code)
    local line = assert_one_error_line(err, "cli_nohandler.lua must return a function(conn)")
    assert.matches("got number", line)
  end)

  -- Regression: a worker sends FAIL and exits; a master that reaped it
  -- (SIGCHLD) before reading its channel dropped the FAIL unread and
  -- exited with "worker 1 exited with code 1 before it was ready" on
  -- about 1 start in 20. 100 starts catch that almost surely.
  it("names the reason on every failed start, not just most (100 starts)", function()
    local _, _, out = H.run(("for i in $(seq 1 100); do timeout 20 %s run %s "
      .. "--listen 127.0.0.1:0 --no-control --workers 4 2>&1 >/dev/null | tail -n 1; done"):format(
      H.POOL, q(FIX .. "cli_nohandler.lua")))
    local n, bad = 0, {}
    for line in out:gmatch("[^\n]+") do
      n = n + 1
      if not line:find("cli_nohandler.lua must return a function(conn)", 1, true) then
        bad[#bad + 1] = line
      end
    end
    assert.equals(100, n, out)
    assert.equals(0, #bad, ("%d of 100 failed starts lost the reason, e.g. %q"):format(
      #bad, bad[1] or ""))
  end)

  it("fails when the script's top level raises, with the message", function()
    local code, _, err = run_script(FIX .. "cli_raise.lua")
    assert.not_equals(0, code)
    assert.not_equals(124, code)
    assert.matches("\npool: " .. (FIX .. "cli_raise.lua:3: cli_raise: cannot configure table"):gsub("%p", "%%%0"),
      "\n" .. err)
  end)

  -- DESIGN.md: "If the first generation fails at start, the pool exits
  -- non-zero with that error in one line."
  -- Regression: the worker's message handler appended a multi-line Lua
  -- traceback to the start failure, in the log and the "pool:" line.
  it("reports a raising top level in one line, and one-line log events", function()
    local code, _, err = run_script(FIX .. "cli_raise.lua")
    assert.not_equals(0, code)
    assert_one_error_line(err, FIX .. "cli_raise.lua:3: cli_raise: cannot configure table")
  end)

  it("refuses --workers 0 and --workers abc", function()
    for _, v in ipairs{ "0", "abc" } do
      local code, _, err = run_script(FIX .. "cli_ok.lua", "--workers " .. v)
      assert.equals(2, code)
      local line = assert_one_error_line(err, "--workers")
      assert.truthy(line:find("'" .. v .. "'", 1, true), line)
      assert.not_matches("listening on", err)
    end
  end)

  it("refuses --concurrency 0", function()
    local code, _, err = run_script(FIX .. "cli_ok.lua", "--concurrency 0")
    assert.equals(2, code)
    local line = assert_one_error_line(err, "--concurrency")
    assert.truthy(line:find("'0'", 1, true), line)
  end)

  it("refuses unparsable listen addresses, naming them", function()
    local cases = {
      { "nonsense", "expected HOST:PORT" },
      { "127.0.0.1:99999", "port must be a number from 0 to 65535" },
      { "[::1", "expected [IPV6]:PORT" },
    }
    for _, c in ipairs(cases) do
      local code, _, err = H.run_pool(("run %s --listen %s --no-control --workers 1"):format(
        q(FIX .. "cli_ok.lua"), q(c[1])))
      assert.not_equals(0, code, c[1])
      assert.not_equals(124, code, c[1])
      local line = assert_one_error_line(err, "'" .. c[1] .. "'")
      assert.truthy(line:find(c[2], 1, true), line)
      assert.not_matches("worker 1 started", err)
    end
  end)

  it("refuses a port already in use, and the first pool keeps serving", function()
    local p = H.start_pool{ script = FIX .. "cli_ok.lua", workers = 1 }
    finally(function() p:stop() end)
    assert.truthy(p.addr, p:log())
    local code, _, err = H.run_pool(("run %s --listen %s --no-control --workers 1"):format(
      q(FIX .. "cli_ok.lua"), p.addr))
    assert.not_equals(0, code)
    assert.not_equals(124, code)
    local line = assert_one_error_line(err, "Address already in use")
    assert.truthy(line:find(p.addr, 1, true), line)
    assert.not_matches("worker 1 started", err)
    assert.equals("ok\n", H.request(p.addr, ""))
    assert.equals(0, p:stop())
    assert.same({}, H.unexpected_errors(p:log()))
  end)

  it("refuses an empty --control and a config file's string holding a NUL, in one line", function()
    local code, _, err = H.run_pool(("run %s --listen 127.0.0.1:0 --workers 1 --control ''"):format(
      q(FIX .. "cli_ok.lua")))
    assert.equals(2, code)
    assert_one_error_line(err, "--control must be a socket path (got '')")
    local conf = H.writefile(H.tmpdir() .. "/nul.lua",
      ('return { handler = %q, listen = "127.0.0.1:0\\0junk", workers = 1 }'):format(
        select(3, H.run("pwd")):match("[^\n]+") .. "/" .. FIX .. "cli_ok.lua"))
    code, _, err = H.run_pool("run --no-control --config " .. q(conf))
    assert.equals(2, code)
    assert_one_error_line(err, "bad option 'listen' (a string holds a NUL byte)")
    assert.not_matches("worker 1 started", err)
  end)

  -- Regression test (was a bug, now fixed): a config file that looped
  -- hung `pool run` (and, at a reload, the running master), one that
  -- called os.exit ended it with code 0 (a reload: the running pool), and
  -- a listen of the wrong type was a Lua error naming fdpool.cli.
  it("refuses a --config file that loops, calls os.exit or has a bad listen, in one line", function()
    local dir = H.tmpdir()
    local cases = {
      { "while true do end", "still running after 1 s (an endless loop?)" },
      { "os.exit(0)", "os.exit() in a config file" },
      { "return { listen = 5 }", "setting 'listen' must be an address or a list of addresses (got number)" },
      { "return { listen = { 5 } }", "setting 'listen' must be an address or a list of addresses (got a table of number)" },
    }
    for i, c in ipairs(cases) do
      local cfg = H.writefile(dir .. "/c" .. i .. ".lua", c[1] .. "\n")
      local t0 = H.clock()
      local code, out, err = H.run_pool("run --config " .. q(cfg) .. " --no-control", 10)
      assert.equals(1, code, c[1] .. ": " .. err)
      assert.equals("", out)
      assert.truthy(H.clock() - t0 < 8, c[1])
      assert.equals("pool: " .. cfg .. ": ", assert_one_error_line(err, c[2]):sub(1, #cfg + 8), err)
    end
    -- os.getenv and the rest of os still work in a config file.
    local cfg = H.writefile(dir .. "/ok.lua", 'return { workers = os.getenv("HOME") and 1 or 2 }\n')
    local code, out, err = H.run_pool("check --config " .. q(cfg))
    assert.equals(0, code, err)
    assert.equals(cfg .. ": ok (built-in hello handler)\n", out)
  end)

  it("refuses an unknown flag and an unknown command", function()
    local code, _, err = run_script(FIX .. "cli_ok.lua", "--bogus")
    assert.equals(2, code)
    assert_one_error_line(err, "unknown option '--bogus'")
    code, _, err = H.run_pool("frobnicate")
    assert.equals(2, code)
    assert_one_error_line(err, "unknown command 'frobnicate'")
  end)
end)

describe("pool help and version", function()
  it("prints usage and exits 2 when run with no arguments", function()
    local code, out, err = H.run_pool("")
    assert.equals(2, code)
    assert.matches("Usage:", out .. err)
    assert.matches("pool run", out .. err)
  end)

  it("--help exits 0 and lists run, check, status and stop", function()
    local code, out = H.run_pool("--help")
    assert.equals(0, code)
    for _, cmd in ipairs{ "run", "check", "status", "stop" } do
      assert.matches("pool " .. cmd, out)
    end
    assert.matches("%-%-workers", out)
    assert.matches("%-%-listen", out)
  end)

  it("--version prints the version and exits 0", function()
    local code, out = H.run_pool("--version")
    assert.equals(0, code)
    assert.matches("^pool %(fdpool%) %d+%.%d+%.%d+", out)
  end)
end)

describe("pool check", function()
  it("accepts a good script", function()
    local code, out, err = H.run_pool("check " .. q(FIX .. "cli_ok.lua"))
    assert.equals(0, code, err)
    assert.equals(FIX .. "cli_ok.lua: ok\n", out)
  end)

  it("reports a syntax error with file:line", function()
    local code, out, err = H.run_pool("check " .. q(FIX .. "cli_syntax.lua"))
    assert.equals(1, code)
    assert.equals("", out)
    assert_one_error_line(err, FIX .. "cli_syntax.lua:3:")
  end)

  it("reports a script that returns no handler", function()
    local code, _, err = H.run_pool("check " .. q(FIX .. "cli_nohandler.lua"))
    assert.equals(1, code)
    assert_one_error_line(err, "must return a function(conn)")
  end)

  it("reports a top level that raises", function()
    local code, _, err = H.run_pool("check " .. q(FIX .. "cli_raise.lua"))
    assert.equals(1, code)
    assert_one_error_line(err, "cli_raise.lua:3: cli_raise: cannot configure")
  end)

  it("refuses a missing script", function()
    local code, _, err = H.run_pool("check " .. q(FIX .. "cli_does_not_exist.lua"))
    assert.not_equals(0, code)
    assert_one_error_line(err, "cli_does_not_exist.lua' (No such file or directory)")
  end)
end)

describe("pool status and stop", function()
  it("status says it cannot reach a pool where none runs", function()
    local dir = H.tmpdir()
    local code, out, err = H.run_pool("status --control " .. q(dir .. "/nothing.sock"))
    assert.equals(1, code)
    assert.equals("", out)
    local line = assert_one_error_line(err, "cannot reach a pool")
    assert.truthy(line:find(dir .. "/nothing.sock", 1, true), line)
  end)

  it("stop says it cannot reach a pool where none runs", function()
    local dir = H.tmpdir()
    local code, _, err = H.run_pool("stop --control " .. q(dir .. "/nothing.sock"))
    assert.equals(1, code)
    assert_one_error_line(err, "cannot reach a pool")
  end)

  it("keeps the control socket 0600 while running, stops by it, removes it", function()
    local p = H.start_pool{ script = FIX .. "cli_ok.lua", workers = 2 }
    finally(function() p:stop() end)
    assert.truthy(p.addr, p:log())
    local ok, _, mode = H.run("stat -c %a " .. q(p.control))
    assert.truthy(ok, mode)
    assert.equals("600", mode:match("%d+"))
    -- The table format names the master and lists every worker.
    local code, out, err = H.run_pool("status --control " .. q(p.control))
    assert.equals(0, code, err)
    assert.matches("master " .. p.pid, out)
    assert.matches("listen " .. p.addr:gsub("%p", "%%%0"), out)
    local rows = 0
    for _ in out:gmatch("\n%s*%d+%s+%d+%s+free") do rows = rows + 1 end
    assert.equals(2, rows, out)

    local pids = p:worker_pids()
    code, out, err = H.run_pool("stop --control " .. q(p.control))
    assert.equals(0, code, err)
    assert.matches("^OK", out)
    assert.equals(0, p:wait_exit(5))
    local left = H.run("test -e " .. q(p.control))
    assert.is_false(left, "control socket left behind")
    for _, pid in ipairs(pids) do assert.is_false(H.alive(pid)) end
    assert.matches("stop requested on the control socket", p:log())
    assert.same({}, H.unexpected_errors(p:log()))
  end)
end)
