-- bench/framing-vs-nginx.lua: play the framing cases of
-- tests/framing_cases.lua against fdpool (build/pool with
-- tests/fixtures/http_framing.lua) and against nginx (installed by
-- scripts/setup --bench; a Lua handler that reads the body like the
-- fixture, /skip locations that leave it to nginx's discard), both on
-- 127.0.0.1, and print how many cases each answers as the table expects
-- and every case where the two differ. The table is fdpool's spec; nginx
-- is a reference point, not a judge.
-- Run from the repository root: lua5.4 bench/framing-vs-nginx.lua
-- (FDPOOL_BUILD=build by default).
package.path = "./tests/?.lua;./lua/?.lua;" .. package.path
package.cpath = "./" .. (os.getenv("FDPOOL_BUILD") or "build") .. "/?.so;" .. package.cpath
local H = require "helpers"
local F = require "framing_cases"

local NGINX_CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path tmp;
    proxy_temp_path tmp;
    fastcgi_temp_path tmp;
    uwsgi_temp_path tmp;
    scgi_temp_path tmp;
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    keepalive_timeout 5;
    server {
        listen 127.0.0.1:@PORT@;
        location /skip {
            default_type text/plain;
            return 200 "$request_method $request_uri len=0\n";
        }
        location / {
            content_by_lua_block {
                ngx.req.read_body()
                local b = ngx.req.get_body_data() or ""
                local s = ngx.var.request_method .. " " .. ngx.var.request_uri
                    .. " len=" .. #b .. "\n"
                ngx.header["Content-Type"] = "text/plain"
                ngx.header["Content-Length"] = #s
                ngx.print(s)
            }
        }
    }
}
]]

local function start_nginx()
  local dir = H.tmpdir()
  os.execute("mkdir -p " .. dir .. "/tmp")
  for _ = 1, 20 do
    local port = 20000 + math.random(0, 20000)
    H.writefile(dir .. "/nginx.conf", (NGINX_CONF:gsub("@PORT@", port)))
    os.execute(("nginx -p %s -c %s/nginx.conf -e %s/error.log -g 'daemon off;' >%s/log 2>&1 & echo $! > %s/pid")
      :format(dir, dir, dir, dir, dir))
    local pid = tonumber(H.readfile(dir .. "/pid"))
    local up = H.wait_until(function()
      local fd = require("fdpool").connect("127.0.0.1:" .. port, 1)
      if fd then fd:close() return "up" end
      if not H.alive(pid) then return "dead" end
    end, 10, "nginx to listen")
    if up == "up" then return "127.0.0.1:" .. port, pid end
  end
  error("nginx did not start")
end

local function describe(obs)
  return (#obs.statuses > 0 and table.concat(obs.statuses, ",") or "none")
    .. (obs.open and " open" or " closed")
    .. (obs.lens[1] and (" len=" .. obs.lens[1]) or "")
end

math.randomseed(os.time())
local pool = H.start_pool({ script = "tests/fixtures/http_framing.lua", workers = 2 })
assert(pool.addr, "pool did not start")
local naddr, npid = start_nginx()

local ok = { fdpool = 0, nginx = 0 }
local diffs = {}
for i, c in ipairs(F.cases) do
  local fo, no = F.run(pool.addr, c), F.run(naddr, c)
  local fok, nok = F.check(c, fo), F.check(c, no)
  ok.fdpool = ok.fdpool + (fok and 1 or 0)
  ok.nginx = ok.nginx + (nok and 1 or 0)
  if describe(fo) ~= describe(no) or fok ~= nok then
    diffs[#diffs + 1] = ("| %d | %s | %s | %s%s | %s%s |"):format(i, c[1],
      table.concat(c[3], ",") .. (c.open and " open" or " closed"),
      describe(fo), fok and "" or " ✗", describe(no), nok and "" or " ✗")
  end
end
pool:stop()
os.execute("kill " .. npid)

print(("%d cases: fdpool answers %d as expected, nginx %d (%s)"):format(#F.cases,
  ok.fdpool, ok.nginx, (io.popen("nginx -v 2>&1"):read("a"):gsub("%s+$", ""))))
print(("%d cases where they differ (✗: not as the table expects):"):format(#diffs))
print("| # | case | expected | fdpool | nginx |")
print("|---|---|---|---|---|")
for _, d in ipairs(diffs) do print(d) end
