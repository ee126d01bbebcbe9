-- tests/81-statuspage_spec.lua: the status page on the --metrics listener
-- (src/statuspage.c, src/statuspage.html), against the real `pool`
-- binary: GET /status.json is `pool status --json`; GET /status?refresh=N
-- is a page rendered by the master with a meta refresh and everything
-- from the status escaped; the listener refuses what it does not serve;
-- and GET /status opened in headless Chromium, as a person would, shows
-- one live row per worker and follows a worker killed with SIGKILL.
local fdpool = require "fdpool"
local H = require "helpers"

local APP = "tests/fixtures/statuspage_app.lua"
local ASAN = H.BUILD ~= "build"
local HOSTILE = "<script>alert(1)</script>"
local HOSTILE_ESC = "&lt;script&gt;alert(1)&lt;/script&gt;"

-- A pool of n workers listening on a unix socket whose name has markup
-- in it, with --metrics on a free loopback port.
local function start(n)
  local dir = H.tmpdir()
  local p = H.start_pool{ script = APP, workers = n,
    listen = "unix:" .. dir .. [[/<i>&"x'.sock]], extra = { "--metrics", "127.0.0.1:0" } }
  assert(p.addr, "the pool did not start: " .. p:log())
  p.metrics = H.wait_until(function() return p:log():match("metrics on http://([^/%s]+)/metrics") end,
    5, "the metrics listener")
  return p
end

-- One raw request; returns the status code, the head and the body.
local function raw(addr, bytes)
  local r = assert(H.request(addr, bytes))
  local code = tonumber(r:match("^HTTP/1%.1 (%d%d%d) "))
  local head, body = r:match("^(.-\r\n)\r\n(.*)$")
  return code, head or r, body or ""
end

local function get(addr, path, method)
  return raw(addr, ("%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"):format(method or "GET", path))
end

local function header(head, name)
  return head:match("\r\n" .. name .. ": ([^\r]*)")
end

local function keys(t)
  local k = {}
  for name in pairs(t) do k[#k + 1] = name end
  table.sort(k)
  return table.concat(k, " ")
end

-- The workers' rows of a page or a DOM: {id, pid, state, src, html} in
-- table order.
local function rows(html)
  local t = {}
  for tr in html:gmatch("<tr [^>]*data%-id=.-</tr>") do
    t[#t + 1] = { id = tonumber(tr:match('data%-id="(%d+)"')), pid = tonumber(tr:match('data%-pid="(%-?%d+)"')),
      state = tr:match('data%-state="(%a+)"'), src = tr:match('data%-src="(%a+)"'),
      class = tr:match('class="([^"]*)"'), html = tr }
  end
  return t
end

-- The text of a row's cell by its data-label.
local function cell(tr, label)
  for td, text in tr:gmatch("<td([^>]*)>(.-)</td>") do
    if td:find('data-label="' .. label .. '"', 1, true) then return text end
  end
end

local function check_rows(st, html, src)
  local r = rows(html)
  assert.equal(#st.workers, #r)
  for i, w in ipairs(st.workers) do
    assert.equal(w.id, r[i].id)
    assert.equal(w.pid, r[i].pid)
    assert.equal(w.state, r[i].state)
    assert.equal("st-" .. w.state, r[i].class)
    assert.equal(src, r[i].src)
    -- The hostile custom field is shown as text.
    assert.truthy(r[i].html:find(HOSTILE_ESC, 1, true), r[i].html)
  end
  return r
end

describe("the status page on --metrics", function()
  it("serves /status.json: the data of pool status --json, with each worker's RSS", function()
    local p = start(3)
    finally(function() p:stop() end)
    local code, head, body = get(p.metrics, "/status.json")
    assert.equal(200, code)
    assert.equal("application/json", header(head, "Content%-Type"))
    assert.equal(#body, tonumber(header(head, "Content%-Length")))
    local web = assert(H.json.decode(body))
    local ctl = assert(p:status())
    assert.equal(keys(ctl), keys(web))
    assert.equal(ctl.pid, web.pid)
    assert.equal(p.pid, web.pid)
    assert.matches("^%d+%.%d+%.%d+", web.version)
    assert.equal(ctl.policy, web.policy)
    assert.same(ctl.listen, web.listen)
    assert.equal(ctl.generation, web.generation)
    assert.is_true(web.now >= web.started)
    assert.equal(3, #web.workers)
    for i, w in ipairs(web.workers) do
      local c = ctl.workers[i]
      assert.equal(keys(c), keys(w))
      assert.equal(c.id, w.id)
      assert.equal(c.pid, w.pid)
      assert.equal(c.state, w.state)
      assert.equal(c.capacity, w.capacity)
      assert.equal(HOSTILE, w.fields.note)
      -- Resident memory, read by the master from /proc/PID/statm.
      local pages = tonumber(H.readfile("/proc/" .. w.pid .. "/statm"):match("^%d+ (%d+)"))
      assert.is_true(w.rss > 0 and w.rss % 4096 == 0, tostring(w.rss))
      assert.is_true(math.abs(w.rss - pages * 4096) < 64 * 1048576)
    end
    -- A query string changes nothing.
    code, _, body = get(p.metrics, "/status.json?x=1&y")
    assert.equal(200, code)
    assert.equal(3, #H.json.decode(body).workers)
  end)

  it("serves /status?refresh=N without script: a meta refresh, one row per worker, markup escaped", function()
    local p = start(2)
    finally(function() p:stop() end)
    local code, head, body = get(p.metrics, "/status?refresh=2")
    assert.equal(200, code)
    assert.equal("text/html; charset=utf-8", header(head, "Content%-Type"))
    assert.matches("default%-src 'none'", header(head, "Content%-Security%-Policy"))
    assert.truthy(body:find('<meta http-equiv="refresh" content="2">', 1, true))
    assert.truthy(body:find('<meta name="viewport"', 1, true))
    assert.falsy(body:find("<script", 1, true))
    assert.falsy(body:find("<noscript", 1, true))
    check_rows(p:status(), body, "html")
    -- Worker fields and the listener's name are escaped, never markup.
    assert.falsy(body:find("<script>alert", 1, true))
    assert.truthy(body:find("a&amp;b &quot;c&quot; &#39;d&#39; &lt;i&gt;", 1, true))
    assert.truthy(body:find([[/&lt;i&gt;&amp;&quot;x&#39;.sock]], 1, true))
    assert.falsy(body:find([[<i>&"x']], 1, true))
    -- Nothing is loaded from elsewhere.
    assert.falsy(body:find("https?://"))
    assert.falsy(body:find("%ssrc="))
    -- Other parameters are ignored.
    code, _, body = get(p.metrics, "/status?foo=%3Cb%3E&refresh=30;x=1")
    assert.equal(200, code)
    assert.truthy(body:find('<meta http-equiv="refresh" content="30">', 1, true))
    -- The live page: the same rows, our one script, a hint without it.
    code, _, body = get(p.metrics, "/status")
    assert.equal(200, code)
    assert.falsy(body:find('http-equiv="refresh"', 1, true))
    local _, nscript = body:gsub("<script", "")
    assert.equal(1, nscript)
    assert.truthy(body:find('<noscript>.-href="status%?refresh=5"'))
    check_rows(p:status(), body, "html")
  end)

  it("answers HEAD, refuses other methods, bad request lines and unknown paths, and stays up", function()
    local p = start(1)
    finally(function() p:stop() end)
    local m = p.metrics
    for _, path in ipairs { "/status", "/status.json", "/metrics", "/healthz" } do
      local code, head, body = get(m, path, "HEAD")
      assert.equal(200, code, path)
      assert.is_true(tonumber(header(head, "Content%-Length")) > 0, path)
      assert.equal("", body, path)
    end
    local code, head = get(m, "/status", "POST")
    assert.equal(405, code)
    assert.equal("GET, HEAD", header(head, "Allow"))
    assert.equal(405, (get(m, "/metrics", "DELETE")))
    for _, q in ipairs { "refresh=0", "refresh=abc", "refresh=3601", "refresh=99999999999", "refresh=",
      "refresh", "refresh=-1", "refresh=1e3" } do
      assert.equal(400, (get(m, "/status?" .. q)), q)
    end
    assert.equal(404, (get(m, "/")))
    assert.equal(404, (get(m, "/status/")))
    assert.equal(404, (get(m, "/status.json/../metrics")))
    assert.equal(404, (get(m, "/%73tatus")))
    assert.equal(505, (raw(m, "GET /status HTTP/2.0\r\n\r\n")))
    assert.equal(400, (raw(m, "GET status HTTP/1.1\r\n\r\n")))
    assert.equal(400, (raw(m, "GET /status\r\n\r\n")))
    assert.equal(400, (raw(m, "get /status HTTP/1.1\r\n\r\n")))
    assert.equal(400, (raw(m, "GET /sta\1tus HTTP/1.1\r\n\r\n")))
    assert.equal(400, (raw(m, "GET /status HTTP/1.1 extra\r\n\r\n")))
    assert.equal(400, (raw(m, "\22\3\1\0\165\1\0\0\161\3\3\r\n\r\n")))
    -- A head bigger than the listener takes: 431, then closed.
    assert.equal(431, (raw(m, "GET /status HTTP/1.1\r\nX-Big: " .. ("a"):rep(9000) .. "\r\n\r\n")))
    assert.equal(400, (get(m, "/status.json", "GET\32")))
    -- A browser's head with cookies fits.
    code = raw(m, "GET /status.json HTTP/1.1\r\nHost: t\r\nCookie: " .. ("c=1; "):rep(800) .. "\r\n\r\n")
    assert.equal(200, code)
    -- Bare LF line ends and an empty line first are read as HTTP/1.x is.
    assert.equal(200, (raw(m, "\r\nGET /healthz HTTP/1.0\n\n")))
    assert.equal(200, (get(m, "/metrics?name[]=x")))
    -- Still serving, nothing leaked, the worker untouched.
    local st = assert(p:status())
    assert.equal(0, st.workers[1].restarts)
    assert.equal("ok\n", H.request(p.addr, ""))
    assert.equal(0, p:stop())
  end)

  it("in headless Chromium shows one live row per worker, follows a SIGKILLed worker, fits a phone", function()
    if ASAN then
      pending("headless Chromium runs in the normal pass only")
      return
    end
    local ok, _, where = H.run("command -v chromium || command -v chromium-browser")
    assert(ok, "chromium not found: scripts/setup --test installs Debian's chromium")
    local chromium = where:match("[^\n]+")
    local p = start(3)
    local profile = H.tmpdir()
    local wd, session, dpid
    -- (busted keeps one finally per test: this one cleans up everything)
    finally(function()
      if session then pcall(wd, "DELETE", "/session/" .. session) end
      if dpid then os.execute("kill " .. dpid .. " 2>/dev/null") end
      p:stop()
    end)
    local function browser(args, url)
      local ok2, code, out = H.run(("timeout 90 %s --headless --no-sandbox --disable-gpu --disable-quic "
        .. "--no-first-run --disable-background-networking --disable-component-update --disable-sync "
        .. "--user-data-dir=%s %s %s 2>/dev/null"):format(chromium, profile, args, H.quote(url)))
      assert(ok2, "chromium failed (" .. tostring(code) .. "): " .. out:sub(1, 2000))
      return out
    end
    local url = "http://" .. p.metrics .. "/status"
    local function dom()
      local d = browser("--virtual-time-budget=3000 --dump-dom", url)
      -- The script ran and polled /status.json more than once.
      assert.truthy(d:find('data-live="ok"', 1, true), d:sub(1, 3000))
      assert.is_true(tonumber(d:match('data%-polls="(%d+)"')) >= 2)
      -- What the script wrote is text: the hostile field made no element.
      assert.falsy(d:find("<script>alert", 1, true))
      return d
    end

    local st = assert(p:status())
    check_rows(st, dom(), "json")

    -- Then as a person keeps it open: one page, driven through
    -- chromedriver (WebDriver over HTTP on loopback), never reloaded.
    local ok3, _, drv = H.run("command -v chromedriver")
    assert(ok3, "chromedriver not found: scripts/setup --test installs Debian's chromium-driver")
    local dlog = profile .. "/chromedriver.log"
    dpid = H.run(("%s --port=0 >%s 2>&1 & echo $! >%s/driver.pid"):format(
      drv:match("[^\n]+"), dlog, profile)) and tonumber(H.readfile(profile .. "/driver.pid"))
    local dport = H.wait_until(function()
      return (H.readfile(dlog) or ""):match("started successfully on port (%d+)")
    end, 30, "chromedriver to start")
    function wd(method, path, body)
      local data = body and H.json.encode(body) or ""
      local fd = assert(fdpool.connect("127.0.0.1:" .. dport, 60))
      assert(fd:write(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        .. "Content-Length: %d\r\nConnection: close\r\n\r\n%s"):format(method, path, #data, data)))
      -- chromedriver says "Connection: close" and waits for us to close:
      -- read by Content-Length.
      local r, len = "", 0
      repeat
        local line = assert(fd:read("l"))
        r = r .. line .. "\n"
        len = tonumber(line:match("^[Cc]ontent%-[Ll]ength: *(%d+)")) or len
      until line == "" or line == "\r"
      local payload = len > 0 and assert(fd:read(len)) or ""
      fd:close()
      r = r .. payload
      local v = H.json.decode(payload)
      assert(type(v) == "table" and (type(v.value) ~= "table" or not v.value.error),
        method .. " " .. path .. ": " .. r:sub(1, 1000))
      return v.value
    end
    session = wd("POST", "/session", { capabilities = { alwaysMatch = { ["goog:chromeOptions"] = {
      args = { "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--user-data-dir=" .. profile .. "/wd" } } } } }).sessionId
    local s = "/session/" .. session
    wd("POST", s .. "/url", { url = url })
    local function js(script) return wd("POST", s .. "/execute/sync", { script = script, args = {} }) end
    -- The rows the page shows now: "id pid state src restarts lastexit;...".
    local ROWS = [[window.__opened = window.__opened || Date.now();
      return Array.from(document.querySelectorAll("#rows tr")).map(function (tr) {
        var c = function (l) { return tr.querySelector('td[data-label="' + l + '"]').textContent; };
        return [tr.dataset.id, tr.dataset.pid, tr.dataset.state, tr.dataset.src, c("restarts"),
          c("last exit")].join(" ");
      }).join(";")]]
    local function shown(want)
      local text
      local okw = pcall(H.wait_until, function()
        text = js(ROWS)
        return text == want
      end, 15)
      assert(okw, "the page shows " .. tostring(text) .. ", not " .. want)
    end
    local function expect(stt)
      local t = {}
      for _, w in ipairs(stt.workers) do
        t[#t + 1] = ("%d %d %s json %d %s"):format(w.id, w.pid, w.state, w.restarts,
          w.last_exit and (w.last_exit.name or "exit " .. w.last_exit.code) or "-")
      end
      return table.concat(t, ";")
    end
    shown(expect(st))
    local opened = js("return window.__opened")

    local old = st.workers[1].pid
    assert(os.execute("kill -KILL " .. old))
    st = H.wait_status(p, function(x)
      return x.workers[1].pid ~= old and x.workers[1].state == "free"
    end, 15, "worker 1 to be replaced")
    -- The same page (not reloaded) now shows the new pid, 1 restart and
    -- the signal, from its own polling.
    shown(expect(st))
    assert.equal(opened, js("return window.__opened"))
    -- The chart: a line per worker and the total, once it has samples.
    H.wait_until(function()
      return js([[return document.querySelectorAll("#svg polyline").length]]) == 4
    end, 15, "the chart's 4 lines")
    assert.truthy(js([[return document.querySelector('#rows tr[data-id="1"] td[data-label="last exit"]').className]])
      :find("crashed", 1, true))

    -- The hostile field is text in the live DOM: no element came of it.
    assert.equal(1, js([[return document.querySelectorAll("script").length]]))
    assert.equal(HOSTILE, js([[return document.querySelector('#rows td[data-label="fields"]').textContent]])
      :match("note=(.-) q="))

    -- On a phone-sized window the rows are cards, one under the other,
    -- and nothing scrolls sideways; a screenshot comes out (and is not
    -- kept).
    wd("POST", s .. "/window/rect", { width = 390, height = 844 })
    local layout = js([=[var r = document.querySelectorAll("#rows tr");
      return [document.documentElement.scrollWidth, document.documentElement.clientWidth,
        getComputedStyle(document.querySelector("thead")).display,
        r[1].getBoundingClientRect().top > r[0].getBoundingClientRect().bottom - 1]]=])
    assert.equal(layout[2], layout[1], "no horizontal scrolling on a phone")
    assert.equal("none", layout[3])
    assert.is_true(layout[4])
    local b64 = wd("GET", s .. "/screenshot")
    assert.is_true(#b64 > 1000)
    assert.equal("iVBORw0KGgo", b64:sub(1, 11))
  end)
end)
