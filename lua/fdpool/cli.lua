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
  pool check --config FILE                   validate a config file and its script
  pool status [--control PATH] [--json] [--format table|json|openmetrics]
                                             show the worker table
  pool stop [--control PATH] [--graceful]    stop a running pool
  pool reload [--control PATH]               new generation of workers (reads
                                             --config again); waits until it
                                             serves (or is refused)
  pool top [--control PATH] [--interval S] [-n COUNT]
                                             live view of the workers
  pool scale N [--control PATH]              run N workers from now on
  pool upgrade [--control PATH]              start a new master from the
                                             binary on disk, hand it the
                                             sockets; waits until it serves
                                             (or is refused)
  pool --help | --version

Options for run:
  --config FILE        a Lua file returning a table of settings: the long
                       flags with _ for - (workers = 4, max_requests = 1000,
                       listen = {...}, handler = "app.lua", args = {...});
                       flags given on the command line win
  --listen ADDR        HOST:PORT, [IPV6]:PORT or unix:PATH; repeatable;
                       port 0 picks a free port (default 127.0.0.1:8080,
                       or the sockets systemd passes: LISTEN_FDS);
                       options: ADDR,reuseport (SO_REUSEPORT: several
                       pools share the port), ADDR,proxy (expect a PROXY
                       protocol v1/v2 header: conn:getpeername() is the
                       client behind HAProxy/nginx), ADDR,filter=MODE
                       (this listener's --accept-filter); unix:PATH
                       also ,mode=0660 and ,owner=USER[:GROUP] (the
                       socket file's, set before it listens); ADDR,tls
                       (terminate TLS with --tls-cert/--tls-key; accept
                       filter tls by default: the master waits for the
                       whole ClientHello record)
  --tls-cert FILE      PEM certificate chain for tls listeners; with
  --tls-key FILE       its PEM key (unencrypted), read by the master
                       before forking (workers under --user need not
                       read it) and again on reload; repeat both for
                       more certificates: the first is the default, the
                       others are chosen by the client's SNI name
  --workers N          worker processes (default: online CPUs)
  --workers MIN-MAX    workers on demand: MIN always run; more start (up
                       to MAX, 1, 2, 4 ... 32 per 100 ms) while
                       connections wait and no worker has room
  --worker-idle-timeout S  on demand: a worker above MIN with no
                       connection for S seconds retires (default 10)
  --concurrency N      connections per worker at once (default 1024;
                       1 = strict prefork, one connection per worker)
  --policy P           first_free, round_robin, least_conn (default),
                       ip_hash, or a path to a .lua file returning
                       function(workers, conn) -> index | nil
  --control PATH       control socket (default: DIR/<address>.sock, DIR
                       /run/fdpool as root, else $XDG_RUNTIME_DIR/fdpool
                       or /tmp/fdpool-UID)
  --no-control         no control socket
  --metrics ADDR       also serve GET /metrics (OpenMetrics, for
                       Prometheus), GET /healthz, GET /status (a page
                       for a browser; ?refresh=N: no script, reloads
                       every N s) and GET /status.json on ADDR (keep it
                       on loopback or a private network)
  --grace S            graceful stop limit in seconds (default 30)
  --timeout S          limit for one connection's handler (default: none);
                       past it a waiting handler is cancelled, one that
                       holds the CPU is interrupted, then its worker killed
  --io-timeout S       default conn:settimeout for each wait on a
                       client (default 60; 0 = none): idle or slow
                       clients cannot hold a worker's slot forever
  --max-requests N     recycle a worker after N connections (+0-10 %
                       jitter); its replacement starts first
  --accept-filter M    none, data or http: the master hands a connection
                       to a worker only once its first bytes (data) or a
                       whole request head (http) arrived, closing it at
                       the deadline (head_timeout, else --io-timeout);
                       default http for http.serve handlers, else none;
                       data/http/tls also defer a TCP accept (1 s:
                       a silent client is closed 1 s past the deadline)
  --max-pending N      connections the filter holds at most (default
                       4096); when full the oldest is closed
  --max-conns-per-ip N connections at once from one address (waiting,
                       parked or in a worker; default: no cap); more are
                       closed at accept
  --max-memory MB      per worker: handler code past MB of Lua memory
                       gets "not enough memory" (HTTP: a 500 for that
                       request), and a worker whose RssAnon stays above
                       MB is retired gracefully and replaced
  --slow S             log the Lua traceback of a handler still running
                       S seconds into its request (fdpool.http) or
                       connection, once (where it waits or where it
                       spins); it is not stopped (default: off)
  --slow-log FILE      write those lines to FILE instead of the log
  --drain-delay S      graceful stop (QUIT, pool stop --graceful): report
                       stopping (/healthz 503) but accept and serve for S
                       seconds first, so a balancer's health check sees
                       it go (default 0.5; 0 = none)
  --start-timeout S    a worker whose top level and init have not finished
                       in S seconds is interrupted (a Lua loop: the error
                       names its file and line) and stopped: the start
                       fails (exit 1), a reload is refused (default and
                       most 60; pool check stops its run of the top level
                       then too). os.exit() in the top level or init
                       raises an error instead of exiting
  --shared NAME:SIZE   a dictionary shared by all workers, as
                       fdpool.shared.NAME (SIZE 64k to 1g: 512k, 10m);
                       repeatable; kept across reloads and restarts
  --cpu-affinity A     auto: pin worker i to the i-th CPU of the pool's
                       own CPU set (taskset's, if any); or a LIST such as
                       0,2-3 (worker i on its i-th CPU, wrapping)
  --sched P            who runs SCHED_BATCH (a wake-up that never
                       preempts a running task) when the pool starts as
                       SCHED_OTHER: master (default) the master only;
                       batch the workers too (more req/s when the CPUs
                       are shared with the clients or a proxy, up to a
                       scheduler tick more latency when they are busy);
                       other none. A policy set with chrt is kept
  --user USER[:GROUP]  workers drop to this user (needs root)
  --log FILE           log to FILE instead of stderr (SIGUSR1 reopens)
  --log-level L        error, warn, info (default), debug
  --log-format F       text (default) or json (one object per line:
                       time, level, pid, process, worker, msg)
  -- ARGS...           passed to SCRIPT as ... and arg[1..n]

Signals: TERM/INT stop (1 s grace, then kill), QUIT stops gracefully
(after --drain-delay, up to --grace), HUP reloads (and reads --config
again), USR2 upgrades (as pool upgrade), TTIN/TTOU add/remove a worker
(on demand: raise/lower MIN), USR1 reopens the log file.
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
  ["--grace"] = "value", ["--log-level"] = "value", ["--timeout"] = "value", ["--io-timeout"] = "value", ["--config"] = "value", ["--log-format"] = "value",
  ["--metrics"] = "value", ["--accept-filter"] = "value", ["--max-pending"] = "value",
  ["--max-conns-per-ip"] = "value",
  ["--max-requests"] = "value", ["--user"] = "value", ["--log"] = "value",
  ["--max-memory"] = "value", ["--tls-cert"] = "list", ["--tls-key"] = "list",
  ["--slow"] = "value", ["--slow-log"] = "value", ["--drain-delay"] = "value",
  ["--cpu-affinity"] = "value", ["--sched"] = "value",
  ["--worker-idle-timeout"] = "value",
  ["--shared"] = "list", ["--start-timeout"] = "value",
}

-- io.open's "PATH: reason" -> "reason".
local function open_why(err)
  return tostring(err):match(": ([^:]+)$") or tostring(err)
end

-- A script, config or policy file must be a regular file: a FIFO would
-- block the read, /dev/zero never end. nil, message when it is not (a
-- path that does not exist is left to the open, which says so).
local function not_regular(path, what)
  local kind = fdpool._filekind(path)
  if kind and kind ~= "file" then
    return ("cannot read %s '%s' (it is a %s, not a regular file)"):format(what, path, kind)
  end
end

local function check_script(script)
  local nr = not_regular(script, "script")
  if nr then return nil, nr end
  local f, err = loadfile(script, "t")
  if not f then return nil, err end
  return true
end

-- Config files (--config FILE.lua) return a table with the keys of
-- fdpool.pool{}; flags replace what the file says.
local CONFIG_KEYS = {
  handler = "string", script = "string", args = "table", listen = "any",
  workers = "any", worker_idle_timeout = "number", concurrency = "number", policy = "string",
  control = "any", grace = "number", timeout = "number", io_timeout = "number",
  max_requests = "number", max_memory = "number", user = "string", log = "string", log_level = "string",
  log_format = "string",
  metrics = "string", accept_filter = "string", max_pending = "number",
  max_conns_per_ip = "number", tls_cert = "any", tls_key = "any",
  slow = "number", slow_log = "string", drain_delay = "number",
  start_timeout = "number",
  shared = "table",
  cpu_affinity = "string", sched = "string",
}

-- --workers N or MIN-MAX (config: also {min = MIN, max = MAX}): N, or
-- "MIN-MAX" for fdpool.pool{}; nil, message naming the flag.
local function workers_setting(v)
  local bad = ("--workers must be N or MIN-MAX with 1 <= MIN <= MAX <= 256 (got '%s')")
  local shown = v
  if type(v) == "table" then
    shown = "{min = " .. tostring(v.min) .. ", max = " .. tostring(v.max) .. "}"
    if math.type(v.min) ~= "integer" or math.type(v.max) ~= "integer" then
      return nil, bad:format(shown)
    end
    v = v.min .. "-" .. v.max
  end
  if math.type(v) == "integer" or (type(v) == "string" and v:match("^%d+$")) then
    local n = math.tointeger(tonumber(v))
    if not n or n < 1 or n > 256 then
      return nil, ("--workers must be an integer from 1 to 256 (got '%s')"):format(tostring(v))
    end
    return n
  end
  local lo, hi = tostring(v):match("^(%d+)%-(%d+)$")
  lo, hi = tonumber(lo), tonumber(hi)
  if not lo or lo < 1 or hi < lo or hi > 256 then
    return nil, bad:format(tostring(shown))
  end
  return ("%d-%d"):format(lo, hi)
end

-- A config file runs in the master (at start and at each reload): one
-- that loops is stopped after CONFIG_SECONDS (within the control socket's
-- 2 s for `pool reload`), and os.exit in it raises, instead of hanging or
-- ending the running pool.
local CONFIG_SECONDS = 1
local config_os = setmetatable({
  exit = function() error("os.exit() in a config file", 2) end,
}, { __index = os })

local function load_config(path)
  local nr = not_regular(path, "config file")
  if nr then return nil, nr end
  local env = setmetatable({ os = config_os }, { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then return nil, err end
  local hook, mask, count = debug.gethook()
  local t0 = fdpool.now()
  debug.sethook(function()
    if fdpool.now() - t0 > CONFIG_SECONDS then
      debug.sethook()
      error(("still running after %g s (an endless loop?)"):format(CONFIG_SECONDS), 2)
    end
  end, "", 100000)
  local ok, t = pcall(chunk)
  debug.sethook(hook, mask, count)
  if not ok then return nil, ("%s: %s"):format(path, tostring(t)) end
  if type(t) ~= "table" then
    return nil, ("%s must return a table of settings (got %s)"):format(path, type(t))
  end
  local dir = path:match("^(.*)/[^/]*$")
  for k, v in pairs(t) do
    local want = CONFIG_KEYS[k]
    if not want then
      return nil, ("%s: unknown setting '%s' (settings are the long flags with _ for -)"):format(path, tostring(k))
    end
    if want ~= "any" and type(v) ~= want then
      return nil, ("%s: setting '%s' must be a %s (got %s)"):format(path, k, want, type(v))
    end
  end
  for i, a in ipairs(type(t.args) == "table" and t.args or {}) do
    if type(a) ~= "string" and type(a) ~= "number" then
      return nil, ("%s: setting 'args' must be a list of strings (item %d is a %s)"):format(path, i, type(a))
    end
  end
  local l = t.listen
  if l ~= nil and type(l) ~= "string" then
    local ok = type(l) == "table"
    for _, a in ipairs(ok and l or {}) do ok = ok and type(a) == "string" end
    if not ok then
      return nil, ("%s: setting 'listen' must be an address or a list of addresses (got %s)")
        :format(path, type(l) == "table" and "a table of " .. type(l[1]) or type(l))
    end
  end
  if t.workers ~= nil then
    local _, werr = workers_setting(t.workers)
    if werr then
      return nil, ("%s: setting 'workers' %s"):format(path, (werr:gsub("^%-%-workers ", "")))
    end
  end
  t.handler = t.handler or t.script
  t.script = nil
  -- A relative script path is relative to the config file.
  if type(t.handler) == "string" and t.handler:sub(1, 1) ~= "/" and dir then
    t.handler = dir .. "/" .. t.handler
  end
  if type(t.listen) == "string" then t.listen = { t.listen } end
  return t
end

-- The longest time a setting takes (about 31 years, as src/lconn.h's
-- FDP_SEC_MAX): longer ones mean the same and would overflow the
-- milliseconds the C side counts in.
local SEC_MAX = 1e9

local function num_setting(name, v, lo, hi, integer)
  local n = tonumber(v)
  hi = hi or SEC_MAX
  if not n or n ~= n or n < lo or n > hi or (integer and n ~= math.floor(n)) then
    if integer then
      return nil, ("%s must be an integer from %d to %d (got '%s')"):format(name, lo, hi, tostring(v))
    end
    if n and n > hi then
      return nil, ("%s must be a number of seconds up to %g (got '%s')"):format(name, hi, tostring(v))
    end
    return nil, ("%s must be a number of seconds%s (got '%s')"):format(name,
      hi < 1e6 and (" from %g to %g"):format(lo, hi) or lo > 0 and " above 0" or "",
      tostring(v))
  end
  return integer and math.tointeger(n) or n
end

-- Build the fdpool.pool{} table from a config file and flags.
-- Returns cfg, or nil, exit code, message.
local function build_config(opts, pos, cmd)
  local cfg = {}
  if opts["--config"] then
    local t, err = load_config(opts["--config"])
    if not t then return nil, 1, err end
    cfg = t
  end
  if #pos > 1 then
    return nil, 2, ("'pool %s' takes one SCRIPT, got '%s' too (script arguments go after --)"):format(cmd, pos[2])
  end
  if pos[1] then cfg.handler = pos[1] end
  if opts["--"] then cfg.args = opts["--"] end
  cfg.args = cfg.args or {}
  local flagmap = {
    { "--concurrency", "concurrency", 1, 65535, true },
    { "--worker-idle-timeout", "worker_idle_timeout", 0.001, 1e6 },
    { "--max-requests", "max_requests", 1, 2^31 - 1, true }, { "--grace", "grace", 0 },
    { "--max-memory", "max_memory", 1, 4194304, true },
    { "--timeout", "timeout", 0.001 }, { "--io-timeout", "io_timeout", 0 },
    { "--max-pending", "max_pending", 1, 1048576, true },
    { "--max-conns-per-ip", "max_conns_per_ip", 1, 2^31 - 1, true },
    { "--slow", "slow", 0.001 }, { "--drain-delay", "drain_delay", 0, 3600 },
    { "--start-timeout", "start_timeout", 0.1, 60 },
  }
  for _, f in ipairs(flagmap) do
    local flag, key, lo, hi, int = f[1], f[2], f[3], f[4], f[5]
    local v = opts[flag]
    if v == nil then v = cfg[key] end
    if v ~= nil then
      local n, err = num_setting(flag, v, lo, hi, int)
      if not n then return nil, 2, err end
      cfg[key] = n
    end
  end
  local w = opts["--workers"]
  if w == nil then w = cfg.workers end
  if w ~= nil then
    local werr
    cfg.workers, werr = workers_setting(w)
    if not cfg.workers then return nil, 2, werr end
  end
  cfg.workers = cfg.workers or fdpool.ncpu()
  for _, f in ipairs { { "--user", "user" }, { "--log", "log" }, { "--log-level", "log_level" },
                       { "--policy", "policy" }, { "--metrics", "metrics" },
                       { "--accept-filter", "accept_filter" }, { "--slow-log", "slow_log" },
                       { "--cpu-affinity", "cpu_affinity" }, { "--sched", "sched" } } do
    if opts[f[1]] then cfg[f[2]] = opts[f[1]] end
  end
  -- --shared NAME:SIZE (repeatable), added to the config's shared table;
  -- names and sizes are checked by fdpool.pool{}.
  local seen = {}
  for _, spec in ipairs(opts["--shared"] or {}) do
    local name, size = spec:match("^([^:]*):(.*)$")
    if not name or size == "" then
      return nil, 2, ("--shared needs NAME:SIZE, e.g. cache:10m (got '%s')"):format(spec)
    end
    if seen[name] then
      return nil, 2, ("--shared: '%s' given twice"):format(name)
    end
    seen[name] = true
    cfg.shared = cfg.shared or {}
    cfg.shared[name] = size
  end
  if cfg.accept_filter and not ({ none = 1, data = 1, http = 1 })[cfg.accept_filter] then
    return nil, 2, ("--accept-filter must be none, data or http (got '%s')"):format(cfg.accept_filter)
  end
  if cfg.cpu_affinity and cfg.cpu_affinity ~= "auto"
      and not tostring(cfg.cpu_affinity):find("^%d[%d,%-]*$") then
    -- (a CPU the process may not run on is found by fdpool.pool{}: exit 1)
    return nil, 2, ("--cpu-affinity must be auto or a list of CPUs such as 0,2-3 (got '%s')")
      :format(tostring(cfg.cpu_affinity))
  end
  if cfg.sched and not ({ master = 1, batch = 1, other = 1 })[cfg.sched] then
    return nil, 2, ("--sched must be master, batch or other (got '%s')"):format(cfg.sched)
  end
  if cfg.log_level and not ({ error = 1, warn = 1, info = 1, debug = 1 })[cfg.log_level] then
    return nil, 2, ("--log-level must be error, warn, info or debug (got '%s')"):format(cfg.log_level)
  end
  if cfg.policy then
    if not ({ first_free = 1, round_robin = 1, least_conn = 1, ip_hash = 1 })[cfg.policy] then
      local nr = not_regular(cfg.policy, "policy file")
      if nr then return nil, 2, nr end
    end
    local pok, perr = fdpool.check_policy(cfg.policy)
    if not pok then return nil, 2, perr end
  end
  -- TLS certificate/key pairs: flags replace the file's lists.
  for _, f in ipairs { { "--tls-cert", "tls_cert" }, { "--tls-key", "tls_key" } } do
    if opts[f[1]] then cfg[f[2]] = opts[f[1]] end
    if type(cfg[f[2]]) == "string" then cfg[f[2]] = { cfg[f[2]] } end
    if cfg[f[2]] ~= nil and type(cfg[f[2]]) ~= "table" then
      return nil, 2, ("%s must be a file name or a list of them"):format(f[2])
    end
  end
  if #(cfg.tls_cert or {}) ~= #(cfg.tls_key or {}) then
    return nil, 2, ("--tls-cert and --tls-key come in pairs (got %d certificate(s) and %d key(s))")
      :format(#(cfg.tls_cert or {}), #(cfg.tls_key or {}))
  end
  -- No address at all: 127.0.0.1:8080, unless systemd passed sockets.
  cfg.listen = opts["--listen"] or cfg.listen
  if opts["--no-control"] and opts["--control"] then
    return nil, 2, ("--no-control and --control %s contradict each other: give one"):format(opts["--control"])
  end
  if opts["--no-control"] then
    cfg.control = nil
  elseif opts["--control"] then
    cfg.control = opts["--control"]
  elseif cfg.control == nil then
    cfg.control = true
  elseif cfg.control == false then
    cfg.control = nil
  end
  if cfg.control == "" then
    return nil, 2, "--control must be a socket path (got '')"
  end
  return cfg
end

-- With --config: what a reload (HUP, pool reload) calls in the master to
-- read the file again, with the same flags on top. Log settings apply at
-- once; the rest is checked and applied by the pool (a new listener is
-- refused there). Returns the settings, or nil, a one-line message.
local function rereader(opts, pos)
  return function()
    local c, _, err = build_config(opts, pos, "run")
    if not c then return nil, err end
    local lf = opts["--log-format"] or c.log_format
    if lf and lf ~= "text" and lf ~= "json" then
      return nil, ("--log-format must be text or json (got '%s')"):format(tostring(lf))
    end
    if type(c.handler) == "string" then
      local sok, serr = check_script(c.handler)
      if not sok then return nil, serr end
    elseif c.handler == nil then
      c.handler = require "fdpool.hello"
    end
    if c.log then
      local lok, lerr = fdpool.log_file(c.log)
      if not lok then return nil, "cannot open log file: " .. tostring(lerr) end
    end
    if lf then fdpool.log_format(lf) end
    c.log, c.log_format = nil, nil
    return c
  end
end

local function cmd_run(args)
  local opts, pos = parse(args, 2, RUN_FLAGS, "run")
  if not opts then return die(2, "%s", pos) end
  local cfg, code, err = build_config(opts, pos, "run")
  if not cfg then return die(code, "%s", err) end
  local lf = opts["--log-format"] or cfg.log_format
  if lf then
    if lf ~= "text" and lf ~= "json" then
      return die(2, "--log-format must be text or json (got '%s')", tostring(lf))
    end
    fdpool.log_format(lf)
    cfg.log_format = nil
  end
  if cfg.log then
    local lok, lerr = fdpool.log_file(cfg.log)
    if not lok then return die(1, "cannot open log file: %s", lerr) end
    cfg.log = nil
  end
  local script = cfg.handler
  if type(script) == "string" then
    local nr = not_regular(script, "script")
    if nr then return die(2, "%s", nr) end
    local f, ferr = io.open(script, "r")
    if not f then return die(2, "cannot open script '%s' (%s)", script, open_why(ferr)) end
    f:close()
    local sok, serr = check_script(script)
    if not sok then return die(1, "%s", serr) end
  elseif script == nil then
    cfg.handler = require "fdpool.hello"
  end
  if opts["--config"] then cfg.reconfigure = rereader(opts, pos) end
  -- pool upgrade runs this command line again (docs/operations.md).
  if args[0] then cfg.exec_argv = table.move(args, 0, #args, 1, {}) end
  -- (pool{} raises for misuse the checks above let through, e.g. a
  -- config file's string holding a NUL: one line, not a traceback)
  local pok, pool, perr = pcall(fdpool.pool, cfg)
  if not pok then return die(2, "%s", (tostring(pool):gsub("^[^:\n]*:%d+: ", ""))) end
  if not pool then return die(1, "%s", perr) end
  local rok, rerr = pool:run()
  if not rok then return die(1, "%s", rerr) end
  return 0
end

local function cmd_check(args)
  local opts, pos = parse(args, 2, { ["--policy"] = "value", ["--config"] = "value",
    ["--start-timeout"] = "value" }, "check")
  if not opts then return die(2, "%s", pos) end
  local cfg, code, err = build_config(opts, pos, "check")
  if not cfg then return die(code, "%s", err) end
  local script = cfg.handler
  if script == nil then
    if opts["--config"] then
      io.stdout:write(opts["--config"], ": ok (built-in hello handler)\n")
      return 0
    end
    return die(2, "'pool check' needs a SCRIPT or --config FILE")
  end
  local nr = not_regular(script, "script")
  if nr then return die(2, "%s", nr) end
  local f, ferr = io.open(script, "r")
  if not f then return die(2, "cannot open script '%s' (%s)", script, open_why(ferr)) end
  f:close()
  local chunk, lerr = loadfile(script, "t")
  if not chunk then return die(1, "%s", lerr) end
  -- Run the top level as a worker would, and check what it returns; a
  -- stand-in fdpool.worker (id 0) lets top levels that use it run.
  _G.arg = { [0] = script, table.unpack(cfg.args) }
  fdpool.worker = fdpool.worker or { id = 0, pid = 0, capacity = 1,
    set = function() return true end, exiting = function() return false end,
    on_stop = function() end, crowded = function() return false end }
  -- Timers and threads started by the top level are not run here: inert
  -- stand-ins (the real ones exist only in a worker).
  local inert = setmetatable({}, { __index = function() return function() return true end end })
  fdpool.timer = { at = function() return inert end, every = function() return inert end }
  fdpool.spawn = function() return inert end
  -- As in a worker: os.exit raises, and a top level still running past
  -- --start-timeout (default 60 s) is stopped where it is.
  local exit = os.exit
  os.exit = function()
    error("os.exit() called while the worker starts (its top level or init): raise an error to refuse to start", 2)
  end
  local limit, t0 = cfg.start_timeout or 60, fdpool.now()
  debug.sethook(function()
    if fdpool.now() - t0 > limit then
      debug.sethook()
      error(("still starting after --start-timeout %g s (an endless loop in the top level or init?)"):format(limit), 2)
    end
  end, "", 100000)
  local ok, h = pcall(chunk, table.unpack(cfg.args))
  debug.sethook()
  if os.exit ~= exit then os.exit = exit end
  if not ok then return die(1, "%s", tostring(h)) end
  local handle = type(h) == "table" and h.handle or h
  if type(handle) ~= "function" then
    return die(1, "%s must return a function(conn) or a table {handle = function(conn) ... end} (got %s)",
      script, type(h))
  end
  if type(h) == "table" and h.init ~= nil and type(h.init) ~= "function" then
    return die(1, "%s: 'init' is not a function", script)
  end
  io.stdout:write(opts["--config"] or script, ": ok\n")
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
  local commands = { table = "status", json = "status json", openmetrics = "status openmetrics" }
  if not commands[format] then
    return die(2, "--format must be table, json or openmetrics (got '%s')", format)
  end
  local path, err = find_control(opts)
  if not path then return die(1, "%s", err) end
  local out, rerr = fdpool.control(path, commands[format])
  if not out then return die(1, "%s", rerr) end
  if out:sub(1, 4) == "ERR " then return die(1, "%s", out:sub(5):gsub("\n$", "")) end
  io.stdout:write(out)
  return 0
end

-- The status table through the control socket, as a Lua table.
local function fetch_status(path)
  local out, err = fdpool.control(path, "status lua")
  if not out then return nil, err end
  if out:sub(1, 4) == "ERR " then return nil, (out:sub(5):gsub("\n$", "")) end
  local f, lerr = load("return " .. out, "=status", "t", {})
  if not f then return nil, lerr end
  return f()
end

local function rss_mib(pid)
  local f = io.open("/proc/" .. pid .. "/statm")
  if not f then return nil end
  local _, rss = f:read("n", "n")
  f:close()
  return rss and rss * 4096 / 1048576
end

-- pool top: the workers, refreshed in place like top(1).
local function cmd_top(args)
  local opts, pos = parse(args, 2, { ["--control"] = "value", ["--interval"] = "value",
    ["-n"] = "value" }, "top")
  if not opts then return die(2, "%s", pos) end
  if #pos > 0 then return die(2, "unexpected argument '%s'", pos[1]) end
  local interval = tonumber(opts["--interval"] or "1")
  if not interval or interval < 0.05 then
    return die(2, "--interval must be a number of seconds >= 0.05 (got '%s')", tostring(opts["--interval"]))
  end
  local count = opts["-n"] and math.tointeger(tonumber(opts["-n"]))
  if opts["-n"] and (not count or count < 1) then
    return die(2, "-n must be a positive integer (got '%s')", opts["-n"])
  end
  local path, err = find_control(opts)
  if not path then return die(1, "%s", err) end
  local tty = os.getenv("TERM") ~= nil and os.execute("test -t 1") == true
  local prev, prev_t = {}, nil
  local frame = 0
  while not count or frame < count do
    local st, serr = fetch_status(path)
    if not st then return die(1, "%s", serr) end
    local now = fdpool.now and fdpool.now() or os.time()
    local out = {}
    out[#out + 1] = ("pool %d  policy %s  generation %d  accepted %d  queued %d  parked %d  pending %d  fallbacks %d"):format(
      st.pid, st.policy, st.generation, st.accepted, st.queued, st.parked, st.pending or 0, st.fallbacks)
    out[#out + 1] = "listen " .. table.concat(st.listen, " ")
    out[#out + 1] = ("%4s %8s %-8s %6s %8s %10s %8s %8s %8s"):format("ID", "PID", "STATE", "ACTIVE",
      "CAPACITY", "SERVED", "RATE/s", "RSS MiB", "RESTARTS")
    for _, w in ipairs(st.workers) do
      local rate = ""
      local p = prev[w.id]
      if p and p.pid == w.pid and prev_t and now > prev_t then
        rate = ("%.1f"):format((w.served - p.served) / (now - prev_t))
      end
      -- The master reads it (a pool of another user is readable too).
      local rss = w.rss and w.rss / 1048576 or w.pid > 0 and rss_mib(w.pid)
      out[#out + 1] = ("%4d %8d %-8s %6d %8d %10d %8s %8s %8d"):format(w.id, w.pid, w.state, w.active,
        w.capacity, w.served, rate, rss and ("%.1f"):format(rss) or "-", w.restarts)
      prev[w.id] = { pid = w.pid, served = w.served }
    end
    prev_t = now
    io.stdout:write(tty and "\27[H\27[2J" or (frame > 0 and "\n" or ""), table.concat(out, "\n"), "\n")
    io.stdout:flush()
    frame = frame + 1
    if not count or frame < count then fdpool.sleep(interval) end
  end
  return 0
end

local function cmd_simple(args, name, command)
  local opts, pos = parse(args, 2, { ["--control"] = "value" }, name)
  if not opts then return die(2, "%s", pos) end
  if name == "scale" then
    local n = tonumber(pos[1] or "")
    if not n or n ~= math.floor(n) or n < 1 or n > 256 then
      return die(2, "'pool scale' needs a number of workers from 1 to 256 (got %s)",
        pos[1] and "'" .. pos[1] .. "'" or "none")
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
  elseif cmd == "top" then
    return cmd_top(args)
  elseif cmd == "reload" then
    return cmd_simple(args, "reload", "reload")
  elseif cmd == "scale" then
    return cmd_simple(args, "scale")
  elseif cmd == "upgrade" then
    return cmd_simple(args, "upgrade", "upgrade")
  end
  return die(2, "unknown command '%s' (expected run, check, status, top, stop, reload, scale, upgrade; see pool --help)", cmd)
end

return M
