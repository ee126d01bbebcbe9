-- examples/ws_chat.lua: a chat room over WebSocket (fdpool.http.websocket).
-- GET / is the page; /ws is the socket. Each message a client sends goes
-- to every client connected to the same worker: a handler sends on the
-- other handlers' WebSockets from its own coroutine. Rooms live in one
-- worker's memory, so run one worker with room for many connections:
--   build/pool run examples/ws_chat.lua --listen 127.0.0.1:8080 --workers 1
-- then open http://127.0.0.1:8080/ in two browser tabs.
local http = require "fdpool.http"

local PAGE = [[<!doctype html>
<html><head><meta charset="utf-8"><title>fdpool chat</title>
<style>body{font:15px sans-serif;margin:2em}#log{border:1px solid #ccc;height:20em;
overflow:auto;padding:.5em;white-space:pre-wrap}</style></head>
<body><h1>fdpool chat</h1><div id="log"></div>
<form id="f"><input id="name" placeholder="name" size="8">
<input id="msg" placeholder="message" size="40" autofocus><button>send</button></form>
<script>
const log = document.getElementById('log');
const say = (t) => { log.textContent += t + '\n'; log.scrollTop = log.scrollHeight; };
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
ws.onopen = () => say('* connected');
ws.onmessage = (e) => say(e.data);
ws.onclose = (e) => say('* closed (' + e.code + (e.reason ? ': ' + e.reason : '') + ')');
document.getElementById('f').onsubmit = (e) => {
  e.preventDefault();
  const m = document.getElementById('msg');
  const n = document.getElementById('name').value || 'anon';
  if (m.value) ws.send(n + ': ' + m.value);
  m.value = '';
};
</script></body></html>
]]

local clients = {}   -- the open WebSockets of this worker

local function broadcast(text)
  for ws in pairs(clients) do
    -- A client that cannot take it is dropped (send gives up its ws).
    if not ws:send(text) then clients[ws] = nil end
  end
end

return http.serve(function(req, res)
  if req.path == "/" then
    res:header("Content-Type", "text/html; charset=utf-8")
    return res:send(PAGE)
  elseif req.path ~= "/ws" then
    return 404, { ["Content-Type"] = "text/plain" }, "not found\n"
  end
  -- timeout: a broadcast waits at most 30 s for a client that does not
  -- read, and a client silent for 30 s gets a ping.
  local ws = http.websocket(req, res, { max_payload = 4096, timeout = 30 })
  if not ws then return end          -- not an upgrade: 400/426 sent
  clients[ws] = true
  broadcast("* someone joined (" .. (function()
    local n = 0
    for _ in pairs(clients) do n = n + 1 end
    return n
  end)() .. " here)")
  local idle = 0
  while true do
    local data, kind = ws:receive()
    if data then idle = 0 end
    if not data and kind == "timeout" then
      -- Silent for 30 s: ping; silent 30 s more (no pong): gone.
      idle = idle + 1
      if idle > 1 or not ws:ping() then break end
    elseif not data or kind == "close" then
      break
    elseif kind == "text" then
      broadcast(data)
    end
  end
  clients[ws] = nil
  broadcast("* someone left")
end)
