-- fdpool.cli: the `pool` command line. main(args) returns the exit code.
-- Usage errors exit 2, runtime failures 1; every error is one line on
-- stderr starting with "pool: ".
local fdpool = require "fdpool"

local M = {}

local USAGE = [[
Usage:
  pool run [SCRIPT] [options] [-- ARGS...]   serve with SCRIPT's handler
                                             (no SCRIPT: built-in hello)
  pool check SCRIPT [--policy P]             compile and validate, no serving
  pool status [--control PATH] [--json]      show the worker table
  pool stop [--control PATH] [--graceful]    stop a running pool
  pool reload [--control PATH]               new generation of workers
  pool scale N [--control PATH]              run N workers from now on
  pool --help | --version

Options for run:
  --listen ADDR        HOST:PORT, [IPV6]:PORT or unix:PATH; repeatable;
                       port 0 picks a free port (default 127.0.0.1:8080)
  --workers N          worker processes (default: online CPUs)
  --concurrency N      connections per worker at once (default 1024;
                       1 = strict prefork, one connection per worker)
  --policy P           first_free, round_robin, least_conn (default),
                       ip_hash, or a path to a .lua file returning
                       function(workers, conn) -> index | nil
  --control PATH       control socket (default: DIR/<address>.sock, DIR
                       /run/fdpool as root, else $XDG_RUNTIME_DIR/fdpool
                       or /tmp/fdpool-UID)
  --no-control         no control socket
  --grace S            graceful stop limit in seconds (default 30)
  --timeout S          limit for one connection's handler (default: none);
                       past it a waiting handler is cancelled, one that
                       holds the CPU is interrupted, then its worker killed
  --io-timeout S       default conn:settimeout for each wait on a
                       client (default 60; 0 = none): idle or slow
                       clients cannot hold a worker's slot forever
  --max-requests N     recycle a worker after N connections (+0-10 %
                       jitter); its replacement starts first
  --user USER[:GROUP]  workers drop to this user (needs root)
  --log FILE           log to FILE instead of stderr (SIGUSR1 reopens)
  --log-level L        error, warn, info (default), debug
  -- ARGS...           passed to SCRIPT as ... and arg[1..n]

Signals: TERM/INT stop (1 s grace, then kill), QUIT stops gracefully
(up to --grace), HUP reloads, TTIN/TTOU add/remove a worker, USR1
reopens the log file.
]]

local function die(code, fmt, ...)
  io.stderr:write("pool: ", fmt:format(...), "\n")
  return code
end

-- Parse flags for a command; spec maps flag -> "value" | "list" | "flag".
local function parse(args, i, spec, cmd)
  local opts, pos = {}, {}
  while i <= #args do
    local a = args[i]
    if a == "--" then
      opts["--"] = table.move(args, i + 1, #args, 1, {})
      break
    end
    local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name:sub(1, 1) == "-" and name ~= "-" then
      local kind = spec[name]
      if not kind then
        return nil, ("unknown option '%s' for 'pool %s' (see pool --help)"):format(name, cmd)
      end
      if kind == "flag" then
        if value then return nil, ("option '%s' takes no value"):format(name) end
        opts[name] = true
      else
        if not value then
          i = i + 1
          value = args[i]
          if value == nil then
            return nil, ("option '%s' needs a value"):format(name)
          end
        end
        if kind == "list" then
          opts[name] = opts[name] or {}
          table.insert(opts[name], value)
        else
          opts[name] = value
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

local function int_opt(opts, name, lo, hi)
  local v = opts[name]
  if v == nil then return true, nil end
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < lo or n > hi then
    return false, ("%s must be an integer from %d to %d (got '%s')"):format(name, lo, hi, v)
  end
  return true, math.tointeger(n)
end

local RUN_FLAGS = {
  ["--listen"] = "list", ["--workers"] = "value", ["--concurrency"] = "value",
  ["--policy"] = "value", ["--control"] = "value", ["--no-control"] = "flag",
  ["--grace"] = "value", ["--log-level"] = "value", ["--timeout"] = "value", ["--io-timeout"] = "value",
  ["--max-requests"] = "value", ["--user"] = "value", ["--log"] = "value",
}

local function check_script(script)
  local f, err = loadfile(script, "t")
  if not f then return nil, err end
  return true
end

local function cmd_run(args)
  local opts, pos = parse(args, 2, RUN_FLAGS, "run")
  if not opts then return die(2, "%s", pos) end
  if #pos > 1 then
    return die(2, "'pool run' takes one SCRIPT, got '%s' too (script arguments go after --)", pos[2])
  end
  local cfg = { args = opts["--"] or {} }
  local ok, v = int_opt(opts, "--workers", 1, 256)
  if not ok then return die(2, "%s", v) end
  cfg.workers = v or fdpool.ncpu()
  ok, v = int_opt(opts, "--concurrency", 1, 65535)
  if not ok then return die(2, "%s", v) end
  cfg.concurrency = v
  ok, v = int_opt(opts, "--max-requests", 1, 2^31 - 1)
  if not ok then return die(2, "%s", v) end
  cfg.max_requests = v
  cfg.user = opts["--user"]
  if opts["--log"] then
    local lok, lerr = fdpool.log_file(opts["--log"])
    if not lok then return die(1, "cannot open log file: %s", lerr) end
  end
  if opts["--grace"] then
    local g = tonumber(opts["--grace"])
    if not g or g < 0 then
      return die(2, "--grace must be a number of seconds (got '%s')", opts["--grace"])
    end
    cfg.grace = g
  end
  if opts["--timeout"] then
    local t = tonumber(opts["--timeout"])
    if not t or t <= 0 then
      return die(2, "--timeout must be a positive number of seconds (got '%s')", opts["--timeout"])
    end
    cfg.timeout = t
  end
  if opts["--io-timeout"] then
    local t = tonumber(opts["--io-timeout"])
    if not t or t < 0 then
      return die(2, "--io-timeout must be a number of seconds (got '%s')", opts["--io-timeout"])
    end
    cfg.io_timeout = t
  end
  if opts["--log-level"] then
    local l = opts["--log-level"]
    if l ~= "error" and l ~= "warn" and l ~= "info" and l ~= "debug" then
      return die(2, "--log-level must be error, warn, info or debug (got '%s')", l)
    end
    cfg.log_level = l
  end
  cfg.policy = opts["--policy"]
  if cfg.policy then
    local pok, perr = fdpool.check_policy(cfg.policy)
    if not pok then return die(2, "%s", perr) end
  end
  cfg.listen = opts["--listen"] or { "127.0.0.1:8080" }
  if opts["--no-control"] then
    cfg.control = nil
  else
    cfg.control = opts["--control"] or true
  end
  local script = pos[1]
  if script then
    local f = io.open(script, "r")
    if not f then return die(2, "cannot open script '%s'", script) end
    f:close()
    local sok, serr = check_script(script)
    if not sok then return die(1, "%s", serr) end
    cfg.handler = script
  else
    cfg.handler = require "fdpool.hello"
  end
  local pool, err = fdpool.pool(cfg)
  if not pool then return die(1, "%s", err) end
  local rok, rerr = pool:run()
  if not rok then return die(1, "%s", rerr) end
  return 0
end

local function cmd_check(args)
  local opts, pos = parse(args, 2, { ["--policy"] = "value" }, "check")
  if not opts then return die(2, "%s", pos) end
  local script = pos[1]
  if not script then return die(2, "'pool check' needs a SCRIPT") end
  local f = io.open(script, "r")
  if not f then return die(2, "cannot open script '%s'", script) end
  f:close()
  local chunk, err = loadfile(script, "t")
  if not chunk then return die(1, "%s", err) end
  if opts["--policy"] then
    local pok, perr = fdpool.check_policy(opts["--policy"])
    if not pok then return die(1, "%s", perr) end
  end
  -- Run the top level as a worker would, and check what it returns; a
  -- stand-in fdpool.worker (id 0) lets top levels that use it run.
  _G.arg = { [0] = script, table.unpack(opts["--"] or {}) }
  fdpool.worker = fdpool.worker or { id = 0, pid = 0, capacity = 1,
    set = function() return true end }
  local ok, h = pcall(chunk, table.unpack(opts["--"] or {}))
  if not ok then return die(1, "%s", tostring(h)) end
  local handle = type(h) == "table" and h.handle or h
  if type(handle) ~= "function" then
    return die(1, "%s must return a function(conn) or a table {handle = function(conn) ... end} (got %s)",
      script, type(h))
  end
  if type(h) == "table" and h.init ~= nil and type(h.init) ~= "function" then
    return die(1, "%s: 'init' is not a function", script)
  end
  io.stdout:write(script, ": ok\n")
  return 0
end

local function find_control(opts)
  if opts["--control"] then return opts["--control"] end
  local dir, socks = fdpool.control_sockets()
  if not dir then return nil, socks end
  if #socks == 1 then return socks[1] end
  if #socks == 0 then
    return nil, ("no running pool found in %s (use --control PATH)"):format(dir)
  end
  table.sort(socks)
  return nil, ("several pools are running; pick one with --control: %s"):format(table.concat(socks, " "))
end

local function cmd_status(args)
  local opts, pos = parse(args, 2, { ["--control"] = "value", ["--json"] = "flag",
    ["--format"] = "value" }, "status")
  if not opts then return die(2, "%s", pos) end
  if #pos > 0 then return die(2, "unexpected argument '%s'", pos[1]) end
  local format = opts["--json"] and "json" or opts["--format"] or "table"
  if format ~= "json" and format ~= "table" then
    return die(2, "--format must be table or json (got '%s')", format)
  end
  local path, err = find_control(opts)
  if not path then return die(1, "%s", err) end
  local out, rerr = fdpool.control(path, format == "json" and "status json" or "status")
  if not out then return die(1, "%s", rerr) end
  if out:sub(1, 4) == "ERR " then return die(1, "%s", out:sub(5):gsub("\n$", "")) end
  io.stdout:write(out)
  return 0
end

local function cmd_simple(args, name, command)
  local opts, pos = parse(args, 2, { ["--control"] = "value" }, name)
  if not opts then return die(2, "%s", pos) end
  if name == "scale" then
    local n = tonumber(pos[1] or "")
    if not n or n ~= math.floor(n) or n < 1 or n > 256 then
      return die(2, "'pool scale' needs a number of workers from 1 to 256 (got '%s')", tostring(pos[1]))
    end
    command = "scale " .. math.tointeger(n)
    table.remove(pos, 1)
  end
  if #pos > 0 then return die(2, "unexpected argument '%s'", pos[1]) end
  local path, err = find_control(opts)
  if not path then return die(1, "%s", err) end
  local out, rerr = fdpool.control(path, command)
  if not out then return die(1, "%s", rerr) end
  if out:sub(1, 3) ~= "OK " then return die(1, "%s", (out:gsub("^ERR ", ""):gsub("\n$", ""))) end
  io.stdout:write(out)
  return 0
end

local function cmd_stop(args)
  local opts, pos = parse(args, 2, { ["--control"] = "value", ["--graceful"] = "flag" }, "stop")
  if not opts then return die(2, "%s", pos) end
  if #pos > 0 then return die(2, "unexpected argument '%s'", pos[1]) end
  local path, err = find_control(opts)
  if not path then return die(1, "%s", err) end
  local out, rerr = fdpool.control(path, opts["--graceful"] and "stop graceful" or "stop")
  if not out then return die(1, "%s", rerr) end
  if out:sub(1, 3) ~= "OK " then return die(1, "%s", (out:gsub("\n$", ""))) end
  io.stdout:write(out)
  return 0
end

function M.main(args)
  local cmd = args[1]
  if cmd == nil or cmd == "--help" or cmd == "-h" or cmd == "help" then
    io.stdout:write(USAGE)
    return cmd == nil and 2 or 0
  elseif cmd == "--version" or cmd == "-V" or cmd == "version" then
    io.stdout:write("pool (fdpool) ", fdpool.version, " on ", _VERSION, "\n")
    return 0
  elseif cmd == "run" then
    return cmd_run(args)
  elseif cmd == "check" then
    return cmd_check(args)
  elseif cmd == "status" then
    return cmd_status(args)
  elseif cmd == "stop" then
    return cmd_stop(args)
  elseif cmd == "reload" then
    return cmd_simple(args, "reload", "reload")
  elseif cmd == "scale" then
    return cmd_simple(args, "scale")
  end
  return die(2, "unknown command '%s' (expected run, check, status, stop, reload, scale; see pool --help)", cmd)
end

return M
